//! Recovery from damaged files: torn tails, garbage, bit flips, damaged or
//! missing indexes, torn batches, locking and unreadable headers.

use std::path::Path;

use evlog::{CorruptKind, Durability, Error, Log, Options};

use crate::common::{
    append_bytes, assert_holds, assert_index_matches, edit_header, exact_options, file_len,
    first_seq_of, flip_byte, forget_clean_close, index_file, records, rolling_options,
    segment_files, tempdir, truncate, write_at, write_log, RecordPos, Rng, Snapshot, Spec,
    INDEX_HEADER_BYTES, RECORD_HEADER_BYTES,
};

/// Writes `count` events with small segments (at least three of them) and
/// returns their specs.
fn write_rolled_log(dir: &Path, count: u64) -> Vec<Spec> {
    let specs = Spec::many(count, 500);
    write_log(
        dir,
        rolling_options().durability(Durability::OsBuffered),
        &specs,
    );
    let segments = segment_files(dir);
    assert!(segments.len() >= 3, "only {} segments", segments.len());
    specs
}

fn open_ok(dir: &Path, options: Options) -> Log {
    Log::open(dir, options).unwrap_or_else(|e| panic!("open failed: {e}"))
}

/// How many bytes recovery must report as a torn tail when `tail` follows
/// the last complete commit group: up to its last non-zero byte.
fn nonzero_extent(tail: &[u8]) -> u64 {
    tail.iter()
        .rposition(|&b| b != 0)
        .map_or(0, |p| p as u64 + 1)
}

fn assert_corrupt_at(error: Error, file: &Path, offset: u64, context: &str) -> CorruptKind {
    let message = error.to_string();
    match error {
        Error::Corrupt {
            file: found_file,
            offset: found_offset,
            kind,
        } => {
            assert_eq!(
                found_file.file_name(),
                file.file_name(),
                "{context}: {message}"
            );
            assert_eq!(found_offset, offset, "{context}: {message}");
            let name = file.file_name().and_then(|n| n.to_str()).unwrap_or("?");
            assert!(
                message.contains(name),
                "{context}: message does not name the file: {message}"
            );
            kind
        }
        other => panic!(
            "{context}: expected Corrupt at {}:{offset}, got {other:?}",
            file.display()
        ),
    }
}

// Proves that a last record cut at every byte leaves exactly the earlier events and a usable log.
#[test]
fn torn_tail_every_cut_point_of_last_record_recovers() {
    const K: u64 = 6;
    let dir = tempdir();
    let specs = Spec::many(K, 80);
    write_log(dir.path(), exact_options(), &specs);
    let segment = segment_files(dir.path()).pop().expect("a segment");
    let all = records(&segment);
    assert_eq!(all.len() as u64, K);
    let last = *all.last().expect("records");
    assert_eq!(
        file_len(&segment),
        last.end(),
        "preallocate 0 ends at the record"
    );
    let original = std::fs::read(&segment).expect("read");
    let snapshot = Snapshot::take(dir.path());
    let replacement = Spec::numbered(1000, 10);

    for cut in last.offset..last.end() {
        snapshot.restore(dir.path());
        truncate(&segment, cut);
        let log = open_ok(dir.path(), exact_options());
        let report = log.recovery_report().clone();
        // The cut record's sequence number is reported once its header is
        // whole (it is then readable), and then every byte of it left is
        // kept, zeros included; before that, up to the last non-zero byte.
        let header_whole = cut >= last.offset + 24;
        let expected_torn = if header_whole {
            cut - last.offset
        } else {
            nonzero_extent(&original[last.offset as usize..cut as usize])
        };
        assert_eq!(report.torn_tail_bytes, expected_torn, "cut at {cut}");
        assert_eq!(
            report.records_dropped,
            u64::from(header_whole),
            "cut at {cut}"
        );
        if header_whole {
            assert_eq!(report.dropped_seqs, [K], "cut at {cut}");
        }
        assert_holds(&log, &specs[..K as usize - 1]);
        assert_eq!(
            log.append(replacement.event()).expect("append"),
            K,
            "cut at {cut}"
        );
        replacement.assert_matches(&log.get(K).expect("get"), K);
        log.close().expect("close");
        let log = open_ok(dir.path(), exact_options());
        let mut expected = specs[..K as usize - 1].to_vec();
        expected.push(replacement.clone());
        assert_holds(&log, &expected);
        assert_eq!(log.recovery_report().torn_tail_bytes, 0, "cut at {cut}");
    }
}

// Proves that random non-zero garbage after the last record is cut and reported, keeping every event.
#[test]
fn garbage_tail_is_truncated_and_reported() {
    let dir = tempdir();
    let specs = Spec::many(20, 200);
    write_log(dir.path(), exact_options(), &specs);
    let segment = segment_files(dir.path()).pop().expect("a segment");
    let end = file_len(&segment);
    let snapshot = Snapshot::take(dir.path());
    let mut rng = Rng::new(0xBAD_7A11);

    for garbage_len in [1usize, 7, 23, 24, 25, 100, 4096] {
        snapshot.restore(dir.path());
        append_bytes(&segment, &rng.nonzero_bytes(garbage_len));
        let log = open_ok(dir.path(), exact_options());
        assert_eq!(
            log.recovery_report().torn_tail_bytes,
            garbage_len as u64,
            "garbage of {garbage_len} bytes"
        );
        assert_holds(&log, &specs);
        let extra = Spec::numbered(21, 3);
        assert_eq!(log.append(extra.event()).expect("append"), 21);
        drop(log);
        let log = open_ok(dir.path(), exact_options());
        let mut expected = specs.clone();
        expected.push(extra);
        assert_holds(&log, &expected);
        assert_eq!(log.recovery_report().torn_tail_bytes, 0);
        drop(log);
        assert!(evlog::dump::verify(dir.path()).expect("verify").is_none());
        assert_eq!(
            records(&segment).last().map(|r| r.end()),
            Some(file_len(&segment)),
            "no garbage left after the new record"
        );
    }

    // Garbage after a stretch of zeros (preallocated space) is a torn tail too.
    snapshot.restore(dir.path());
    append_bytes(&segment, &vec![0u8; 1000]);
    append_bytes(&segment, &rng.nonzero_bytes(50));
    let log = open_ok(dir.path(), exact_options());
    assert_eq!(log.recovery_report().torn_tail_bytes, 1050);
    assert_holds(&log, &specs);
    drop(log);
    assert_eq!(file_len(&segment), end);
}

// Proves that a tail of zeros (preallocated space) is no damage: nothing reported, nothing lost.
#[test]
fn zero_tail_keeps_every_event() {
    let dir = tempdir();
    let specs = Spec::many(20, 200);
    write_log(dir.path(), exact_options(), &specs);
    let segment = segment_files(dir.path()).pop().expect("a segment");
    for zeros in [1usize, 23, 24, 4096, 1 << 20] {
        append_bytes(&segment, &vec![0u8; zeros]);
        let log = open_ok(dir.path(), Options::default());
        assert_eq!(log.recovery_report().torn_tail_bytes, 0, "{zeros} zeros");
        assert_holds(&log, &specs);
        drop(log);
    }
    let log = open_ok(dir.path(), exact_options());
    let extra = Spec::numbered(21, 0);
    assert_eq!(log.append(extra.event()).expect("append"), 21);
    drop(log);
    let log = open_ok(dir.path(), exact_options());
    let mut expected = specs;
    expected.push(extra);
    assert_holds(&log, &expected);
}

// Proves that a flipped byte inside a sealed segment fails only the reads of that record, naming file and offset.
#[test]
fn sealed_segment_bit_flip_fails_only_that_record() {
    let dir = tempdir();
    let specs = write_rolled_log(dir.path(), 600);
    let first_segment = segment_files(dir.path())[0].clone();
    let in_first = records(&first_segment);
    let snapshot = Snapshot::take(dir.path());

    type Damage = fn(&Path, RecordPos);
    let damages: [(&str, Damage); 3] = [
        ("body bit flip", |path, record| {
            flip_byte(path, record.body_byte(5), 0x20)
        }),
        ("length 0xFFFFFFFF", |path, record| {
            write_at(path, record.offset, &u32::MAX.to_le_bytes())
        }),
        ("length one more", |path, record| {
            let longer = (record.len - RECORD_HEADER_BYTES + 1) as u32;
            write_at(path, record.offset, &longer.to_le_bytes())
        }),
    ];
    // The first record, one in the middle, and the one before the last.
    let picks = [0, in_first.len() / 2, in_first.len() - 2];
    for ((what, damage), pick) in damages.iter().flat_map(|d| picks.map(|p| (d, p))) {
        snapshot.restore(dir.path());
        let damaged = in_first[pick];
        let seq = damaged.seq;
        damage(&first_segment, damaged);

        let log = open_ok(dir.path(), rolling_options());
        assert_eq!(log.last_seq(), Some(specs.len() as u64));
        let error = log
            .get(seq)
            .expect_err("the damaged record must not be returned");
        assert_corrupt_at(
            error,
            &first_segment,
            damaged.offset,
            &format!("{what}, record {pick}, get"),
        );
        for (i, spec) in specs.iter().enumerate() {
            let other = i as u64 + 1;
            if other != seq {
                spec.assert_matches(&log.get(other).expect("other records stay readable"), other);
            }
        }

        let mut iter = log.iter(1..).expect("iter");
        for (i, spec) in specs.iter().enumerate().take(seq as usize - 1) {
            spec.assert_matches(
                &iter.next().expect("item").expect("before the damage"),
                i as u64 + 1,
            );
        }
        let error = iter
            .next()
            .expect("an item for the damaged record")
            .expect_err("damaged");
        assert_corrupt_at(
            error,
            &first_segment,
            damaged.offset,
            &format!("{what}, record {pick}, iter"),
        );
        assert!(iter.next().is_none(), "the iterator ends after an error");

        let after: Vec<_> = log
            .iter(seq + 1..)
            .expect("iter")
            .collect::<Result<_, _>>()
            .expect("records after the damage");
        assert_eq!(after.len(), specs.len() - seq as usize);
        drop(log);

        let problem = evlog::dump::verify(dir.path())
            .expect("verify runs")
            .unwrap_or_else(|| panic!("{what}, record {pick}: verify found nothing"));
        assert_eq!(
            problem.file.file_name(),
            first_segment.file_name(),
            "{what}: {problem}"
        );
        assert_eq!(problem.offset, damaged.offset, "{what}: {problem}");
    }
}

// Proves that damage to the last record of a sealed segment is also only a read error, not a refusal to open.
#[test]
fn sealed_segment_last_record_bit_flip_fails_only_that_record() {
    let dir = tempdir();
    let specs = write_rolled_log(dir.path(), 600);
    let first_segment = segment_files(dir.path())[0].clone();
    let damaged = *records(&first_segment).last().expect("records");
    flip_byte(&first_segment, damaged.body_byte(5), 0x20);

    let log = open_ok(dir.path(), rolling_options());
    let error = log.get(damaged.seq).expect_err("damaged");
    assert_corrupt_at(
        error,
        &first_segment,
        damaged.offset,
        "last record of a sealed segment",
    );
    for (i, spec) in specs.iter().enumerate() {
        let seq = i as u64 + 1;
        if seq != damaged.seq {
            spec.assert_matches(&log.get(seq).expect("other records stay readable"), seq);
        }
    }
}

/// The ways an index file is damaged in `index_damage_is_rebuilt_on_open`.
#[derive(Debug, Clone, Copy)]
enum IndexDamage {
    Deleted,
    Empty,
    RandomBytes,
    CutInHeader,
    CutInEntries,
    WrongFirstSeq,
    FutureVersion,
    FirstEntryWrong,
}

fn damage_index(path: &Path, damage: IndexDamage, rng: &mut Rng) {
    match damage {
        IndexDamage::Deleted => std::fs::remove_file(path).expect("remove index"),
        IndexDamage::Empty => truncate(path, 0),
        IndexDamage::RandomBytes => {
            let len = file_len(path) as usize;
            std::fs::write(path, rng.bytes(len)).expect("write");
        }
        IndexDamage::CutInHeader => truncate(path, 13),
        IndexDamage::CutInEntries => {
            let entries = (file_len(path) - INDEX_HEADER_BYTES) / 8;
            truncate(path, INDEX_HEADER_BYTES + entries / 2 * 8 + 3);
        }
        IndexDamage::WrongFirstSeq => edit_header(path, |h| {
            let seq = u64::from_le_bytes(h[16..24].try_into().expect("8 bytes"));
            h[16..24].copy_from_slice(&(seq + 1).to_le_bytes());
        }),
        IndexDamage::FutureVersion => {
            edit_header(path, |h| h[8..12].copy_from_slice(&7u32.to_le_bytes()))
        }
        IndexDamage::FirstEntryWrong => write_at(path, INDEX_HEADER_BYTES, &40u64.to_le_bytes()),
    }
}

// Proves that a missing or garbled index, of a sealed or of the active segment, is rebuilt with no change to any event.
#[test]
fn index_damage_is_rebuilt_on_open() {
    let dir = tempdir();
    let specs = write_rolled_log(dir.path(), 600);
    let segments = segment_files(dir.path());
    let snapshot = Snapshot::take(dir.path());
    let mut rng = Rng::new(0x1D3);
    let targets = [
        ("sealed", segments[0].clone()),
        ("sealed, middle", segments[1].clone()),
        ("active", segments.last().expect("segments").clone()),
    ];
    let damages = [
        IndexDamage::Deleted,
        IndexDamage::Empty,
        IndexDamage::RandomBytes,
        IndexDamage::CutInHeader,
        IndexDamage::CutInEntries,
        IndexDamage::WrongFirstSeq,
        IndexDamage::FutureVersion,
        IndexDamage::FirstEntryWrong,
    ];
    for (what, segment) in &targets {
        for damage in damages {
            snapshot.restore(dir.path());
            damage_index(&index_file(segment), damage, &mut rng);
            let log = Log::open(dir.path(), rolling_options())
                .unwrap_or_else(|e| panic!("{what} index {damage:?}: open failed: {e}"));
            assert_holds(&log, &specs);
            log.close().expect("close");
            for segment in segment_files(dir.path()) {
                assert_index_matches(&segment);
            }
            assert_eq!(
                evlog::dump::verify(dir.path()).expect("verify"),
                None,
                "{what} {damage:?}"
            );
        }
    }
}

// Proves that a sealed index whose entry is plausible (increasing) but wrong does not make intact events unreadable.
#[test]
fn index_plausible_wrong_entry_does_not_hide_events() {
    let dir = tempdir();
    let specs = write_rolled_log(dir.path(), 600);
    let segment = segment_files(dir.path())[0].clone();
    let in_first = records(&segment);
    let k = in_first.len() / 2;
    // Still strictly between its neighbours, but not where record k starts.
    write_at(
        &index_file(&segment),
        INDEX_HEADER_BYTES + k as u64 * 8,
        &(in_first[k].offset + 8).to_le_bytes(),
    );
    let log = open_ok(dir.path(), rolling_options());
    assert_holds(&log, &specs);
}

/// Writes 3 single events and then one batch of 5, preallocation off.
fn write_batch_log(dir: &Path) -> (Vec<Spec>, Vec<Spec>) {
    let singles = Spec::many(3, 100);
    let batch: Vec<Spec> = (4..=8)
        .map(|n| Spec::numbered(n, 60 + n as usize))
        .collect();
    let log = open_ok(dir, exact_options());
    for (i, spec) in singles.iter().enumerate() {
        assert_eq!(log.append(spec.event()).expect("append"), i as u64 + 1);
    }
    let events: Vec<_> = batch.iter().map(Spec::event).collect();
    assert_eq!(log.append_batch(&events).expect("batch"), 4..9);
    log.close().expect("close");
    forget_clean_close(dir);
    (singles, batch)
}

// Proves that a batch torn anywhere inside its records (cut or zeroed) disappears entirely, never in part.
#[test]
fn atomic_batch_torn_anywhere_is_all_or_nothing() {
    let dir = tempdir();
    let (singles, batch) = write_batch_log(dir.path());
    let segment = segment_files(dir.path()).pop().expect("segment");
    let all = records(&segment);
    let batch_records = &all[3..];
    assert_eq!(batch_records.len(), 5);
    for (j, record) in batch_records.iter().enumerate() {
        assert_eq!(
            (record.seq, record.group_index, record.group_count),
            (4 + j as u64, j as u32, 5)
        );
    }
    let batch_start = batch_records[0].offset;
    let batch_end = batch_records[4].end();
    let snapshot = Snapshot::take(dir.path());

    let mut cuts = Vec::new();
    for record in batch_records {
        for delta in [0, 1, 4, 8, 23, 24, 25, record.len / 2, record.len - 1] {
            cuts.push(record.offset + delta);
        }
    }
    cuts.retain(|&c| c > batch_start);
    for zero_fill in [false, true] {
        for &cut in &cuts {
            snapshot.restore(dir.path());
            if zero_fill {
                // The file kept its length, but the end of the write never landed.
                write_at(&segment, cut, &vec![0u8; (batch_end - cut) as usize]);
            } else {
                truncate(&segment, cut);
            }
            let whole_records = batch_records.iter().filter(|r| r.end() <= cut).count() as u64;
            let log = open_ok(dir.path(), exact_options());
            let context =
                format!("cut at {cut} (batch {batch_start}..{batch_end}), zero fill {zero_fill}");
            assert_eq!(log.last_seq(), Some(3), "{context}");
            // Every whole record of the torn batch is reported by sequence
            // number, and so may be the cut one if its header survived.
            let report = log.recovery_report();
            let dropped = report.records_dropped;
            assert!(
                (whole_records..=whole_records + 1).contains(&dropped),
                "{context}: {dropped} dropped"
            );
            assert_eq!(
                report.dropped_seqs,
                (4..4 + dropped).collect::<Vec<u64>>(),
                "{context}"
            );
            assert!(log.recovery_report().torn_tail_bytes > 0, "{context}");
            assert_holds(&log, &singles);
            for seq in 4..=8 {
                assert!(
                    matches!(log.get(seq), Err(Error::NotFound(_))),
                    "{context}: seq {seq}"
                );
            }
            let again = log
                .append_batch(&batch.iter().map(Spec::event).collect::<Vec<_>>())
                .expect("batch again");
            assert_eq!(again, 4..9, "{context}");
            drop(log);
            let log = open_ok(dir.path(), exact_options());
            let mut expected = singles.clone();
            expected.extend(batch.iter().cloned());
            assert_holds(&log, &expected);
        }
    }
}

// Proves that damage in the active segment followed by valid later commit groups is refused as MidLog, not truncated away.
#[test]
fn active_segment_damage_before_valid_groups_is_midlog() {
    let dir = tempdir();
    let specs = Spec::many(10, 150);
    write_log(dir.path(), exact_options(), &specs);
    let segment = segment_files(dir.path()).pop().expect("segment");
    let all = records(&segment);
    let snapshot = Snapshot::take(dir.path());

    type Damage = fn(&Path, u64);
    let damages: [(&str, Damage); 3] = [
        ("body bit flip", |path, offset| {
            flip_byte(path, offset + 30, 0x01)
        }),
        ("length 0xFFFFFFFF", |path, offset| {
            write_at(path, offset, &u32::MAX.to_le_bytes())
        }),
        ("sequence number", |path, offset| {
            flip_byte(path, offset + 8, 0x04)
        }),
    ];
    for (what, damage) in damages {
        for pick in [0usize, 4, 8] {
            snapshot.restore(dir.path());
            damage(&segment, all[pick].offset);
            let before = std::fs::read(&segment).expect("read");
            let error = match Log::open(dir.path(), exact_options()) {
                Ok(log) => panic!(
                    "{what} in record {pick}: opened with last_seq {:?}, report {:?}",
                    log.last_seq(),
                    log.recovery_report()
                ),
                Err(e) => e,
            };
            let kind = assert_corrupt_at(
                error,
                &segment,
                all[pick].offset,
                &format!("{what} in record {pick}"),
            );
            assert_eq!(kind, CorruptKind::MidLog, "{what} in record {pick}");
            assert_eq!(
                std::fs::read(&segment).expect("read"),
                before,
                "{what}: file changed"
            );
        }
    }
}

// Proves that a second open of an open directory fails with Locked naming our pid, and succeeds after the first closes.
#[test]
fn lock_second_open_is_refused_until_drop() {
    let dir = tempdir();
    let first = open_ok(dir.path(), Options::default());
    first.append(Spec::numbered(1, 0).event()).expect("append");
    for _ in 0..2 {
        match Log::open(dir.path(), Options::default()) {
            Err(error @ Error::Locked { .. }) => {
                let message = error.to_string();
                assert!(
                    message.contains(&std::process::id().to_string()),
                    "message does not name pid {}: {message}",
                    std::process::id()
                );
                if let Error::Locked { pid, .. } = error {
                    assert_eq!(pid, std::process::id().to_string());
                }
            }
            Err(other) => panic!("expected Locked, got {other}"),
            Ok(_) => panic!("a second open of a locked directory succeeded"),
        }
    }
    drop(first);
    let second = open_ok(dir.path(), Options::default());
    assert_holds(&second, &[Spec::numbered(1, 0)]);
}

// Proves that a segment with wrong magic or a future version is refused with an error naming the file.
#[test]
fn segment_header_bad_magic_or_future_version_is_refused() {
    let dir = tempdir();
    write_rolled_log(dir.path(), 600);
    let segments = segment_files(dir.path());
    let snapshot = Snapshot::take(dir.path());
    for segment in [&segments[0], segments.last().expect("segments")] {
        let name = segment
            .file_name()
            .and_then(|n| n.to_str())
            .expect("name")
            .to_string();

        snapshot.restore(dir.path());
        write_at(segment, 0, b"EVLOGSEX");
        match Log::open(dir.path(), rolling_options()) {
            Err(error) => {
                let kind = assert_corrupt_at(error, segment, 0, &name);
                assert_eq!(kind, CorruptKind::BadMagic, "{name}");
            }
            Ok(_) => panic!("opened with bad magic in {name}"),
        }

        snapshot.restore(dir.path());
        edit_header(segment, |h| {
            h[8..12].copy_from_slice(&crate::common::FUTURE_FORMAT_VERSION.to_le_bytes())
        });
        match Log::open(dir.path(), rolling_options()) {
            Err(error @ Error::UnsupportedVersion { .. }) => {
                let message = error.to_string();
                assert!(
                    message.contains(&name),
                    "message does not name the file: {message}"
                );
                if let Error::UnsupportedVersion { file, found, .. } = error {
                    assert_eq!(file.file_name(), segment.file_name());
                    assert_eq!(found, crate::common::FUTURE_FORMAT_VERSION);
                }
            }
            Err(other) => panic!("expected UnsupportedVersion for {name}, got {other}"),
            Ok(_) => panic!("opened a future version of {name}"),
        }
        // Nothing was modified by the refusals.
        assert_eq!(
            std::fs::read(segment).expect("read")[8..12],
            crate::common::FUTURE_FORMAT_VERSION.to_le_bytes(),
            "{name}"
        );
    }
}

// Proves that a log spanning several segments reopens whole: get, iter and dump::verify agree.
#[test]
fn segment_rolls_reopen_with_every_event() {
    let dir = tempdir();
    let specs = Spec::many(450, 400);
    let log = open_ok(dir.path(), rolling_options());
    for (i, spec) in specs.iter().enumerate() {
        assert_eq!(log.append(spec.event()).expect("append"), i as u64 + 1);
    }
    assert!(log.segment_count() >= 3, "{} segments", log.segment_count());
    assert_holds(&log, &specs);
    log.close().expect("close");

    let segments = segment_files(dir.path());
    assert!(segments.len() >= 3);
    let mut next = 1;
    for segment in &segments {
        assert_eq!(first_seq_of(segment), next, "segments are contiguous");
        let found = records(segment);
        assert_eq!(
            found.last().map(|r| r.end()),
            Some(file_len(segment)),
            "trimmed"
        );
        next += found.len() as u64;
        assert_index_matches(segment);
    }
    assert_eq!(next, 451);

    let log = open_ok(dir.path(), rolling_options());
    assert_eq!(log.segment_count(), segments.len());
    assert_eq!(log.first_seq(), Some(1));
    assert_holds(&log, &specs);
    // A range that crosses segment boundaries.
    let middle: Vec<u64> = log
        .iter(100..=350)
        .expect("iter")
        .map(|e| e.expect("event").seq)
        .collect();
    assert_eq!(middle, (100..=350).collect::<Vec<_>>());
    drop(log);
    assert_eq!(evlog::dump::verify(dir.path()).expect("verify"), None);
}

// Proves that cutting the only record of a freshly rolled active segment at every byte keeps every earlier event.
#[test]
fn torn_tail_only_record_of_new_segment_recovers() {
    let dir = tempdir();
    let mut specs = Vec::new();
    let log = open_ok(dir.path(), rolling_options());
    // Append until a roll has just happened: the new segment holds one record.
    for n in 1.. {
        let spec = Spec::numbered(n, 300);
        assert_eq!(log.append(spec.event()).expect("append"), n);
        specs.push(spec);
        if log.segment_count() == 2 {
            break;
        }
    }
    log.close().expect("close");
    forget_clean_close(dir.path());
    let segment = segment_files(dir.path()).pop().expect("segment");
    let only = records(&segment);
    assert_eq!(only.len(), 1);
    let count = specs.len() as u64;
    let snapshot = Snapshot::take(dir.path());

    for cut in only[0].offset..only[0].end() {
        snapshot.restore(dir.path());
        truncate(&segment, cut);
        let log = open_ok(dir.path(), rolling_options());
        assert_holds(&log, &specs[..count as usize - 1]);
        let again = &specs[count as usize - 1];
        assert_eq!(
            log.append(again.event()).expect("append"),
            count,
            "cut at {cut}"
        );
        drop(log);
        let log = open_ok(dir.path(), rolling_options());
        assert_holds(&log, &specs);
    }
}

// Proves that a crash right after a roll (new segment with only its header, no index) loses nothing and the log goes on.
#[test]
fn segment_roll_crash_empty_active_segment_is_handled() {
    let dir = tempdir();
    let specs = write_rolled_log(dir.path(), 600);
    let last = segment_files(dir.path()).pop().expect("segment");
    let next_seq = first_seq_of(&last) + records(&last).len() as u64;
    assert_eq!(next_seq, 601);
    let new_segment = last.with_file_name(format!("{next_seq:020}.seg"));
    // A valid header as the writer creates it: magic, version, header
    // size 32, first_seq, reserved, CRC.
    std::fs::write(&new_segment, [0u8; 32]).expect("create");
    edit_header(&new_segment, |h| {
        h[..8].copy_from_slice(b"EVLOGSEG");
        h[8..12].copy_from_slice(&crate::common::FORMAT_VERSION.to_le_bytes());
        h[12..16].copy_from_slice(&32u32.to_le_bytes());
        h[16..24].copy_from_slice(&next_seq.to_le_bytes());
    });

    let log = open_ok(dir.path(), rolling_options());
    assert_holds(&log, &specs);
    let extra = Spec::numbered(601, 10);
    assert_eq!(log.append(extra.event()).expect("append"), 601);
    log.close().expect("close");
    forget_clean_close(dir.path());
    assert_eq!(
        records(&new_segment).len(),
        1,
        "appended into the new segment"
    );
    let log = open_ok(dir.path(), rolling_options());
    let mut expected = specs;
    expected.push(extra);
    assert_holds(&log, &expected);
    drop(log);
    assert_eq!(evlog::dump::verify(dir.path()).expect("verify"), None);
}

// Proves that a sealed segment file missing between two others is an error, never a silent gap.
#[test]
fn segment_missing_in_middle_is_an_error() {
    let dir = tempdir();
    write_rolled_log(dir.path(), 600);
    let segments = segment_files(dir.path());
    std::fs::remove_file(&segments[1]).expect("remove segment");
    std::fs::remove_file(index_file(&segments[1])).expect("remove index");
    match Log::open(dir.path(), rolling_options()) {
        Ok(log) => panic!(
            "opened with a missing segment: last_seq {:?}, get({}) = {:?}",
            log.last_seq(),
            first_seq_of(&segments[1]),
            log.get(first_seq_of(&segments[1])).map(|e| e.seq)
        ),
        // The error names the segment after the hole, at its first_seq.
        Err(Error::Corrupt { file, offset, kind }) => {
            assert_eq!(file.file_name(), segments[2].file_name());
            assert_eq!(offset, 16);
            assert_eq!(
                kind,
                CorruptKind::Gap {
                    expected: first_seq_of(&segments[1]),
                    found: first_seq_of(&segments[2]),
                }
            );
        }
        Err(other) => panic!("expected Corrupt, got {other}"),
    }
    assert!(evlog::dump::verify(dir.path())
        .expect("verify")
        .is_some_and(|p| p.what.contains("contiguous")));
}

// Proves that a last record whose length field says 0xFFFFFFFF is a torn tail: cut and reported, no panic.
#[test]
fn torn_tail_huge_length_field_is_cut() {
    let dir = tempdir();
    let specs = Spec::many(10, 100);
    write_log(dir.path(), exact_options(), &specs);
    let segment = segment_files(dir.path()).pop().expect("segment");
    let last = *records(&segment).last().expect("records");
    let snapshot = Snapshot::take(dir.path());
    for body_len in [u32::MAX, 0x7FFF_FFFF, 17 * 1024 * 1024, 1] {
        snapshot.restore(dir.path());
        write_at(&segment, last.offset, &body_len.to_le_bytes());
        let log = open_ok(dir.path(), exact_options());
        assert_eq!(
            log.recovery_report().torn_tail_bytes,
            last.len,
            "length {body_len}"
        );
        assert_holds(&log, &specs[..9]);
        drop(log);
        assert_eq!(file_len(&segment), last.offset);
    }
}

// Proves that an empty log closes and reopens empty, and its first append gets seq 1.
#[test]
fn empty_log_reopens_empty() {
    let dir = tempdir();
    open_ok(dir.path(), Options::default())
        .close()
        .expect("close");
    let log = open_ok(dir.path(), Options::default());
    assert_eq!(log.last_seq(), None);
    assert_eq!(log.first_seq(), None);
    assert_eq!(log.iter(..).expect("iter").count(), 0);
    assert!(matches!(log.get(1), Err(Error::NotFound(1))));
    assert_eq!(
        *log.recovery_report(),
        evlog::RecoveryReport {
            closed_cleanly: true,
            ..evlog::RecoveryReport::default()
        }
    );
    let spec = Spec::numbered(1, 0);
    assert_eq!(log.append(spec.event()).expect("append"), 1);
    drop(log);
    assert_holds(&open_ok(dir.path(), Options::default()), &[spec]);
}

// Proves that closing and reopening a log works while another thread keeps
// spawning processes (a forked child briefly shares the lock descriptor).
#[test]
fn lock_reopen_while_another_thread_spawns_processes() {
    let dir = tempdir();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let spawner = {
        let stop = std::sync::Arc::clone(&stop);
        std::thread::spawn(move || {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let _ = std::process::Command::new("true").status();
            }
        })
    };
    for round in 0..200u64 {
        let log = open_ok(dir.path(), Options::default());
        assert_eq!(log.last_seq().unwrap_or(0), round);
        log.append(evlog::Event::new("lock.round")).expect("append");
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    spawner.join().expect("spawner");
}
