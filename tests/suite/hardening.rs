//! The hardening guarantees: each append request is its own atomic unit,
//! a clean close vouches for what it leaves (damage there is `Corrupt`,
//! `repair` is the way out), nothing cut leaves without a copy, read-only
//! views write nothing, iterators end at close, and the durable watermark
//! can be waited for.

use std::path::Path;
use std::time::Duration;

use evlog::{CorruptKind, Error, Event, Log, Options, RepairMode, WaitOutcome, Watermark};

use crate::common::{
    exact_options, flip_byte, forget_clean_close, records, segment_files, segments_dir, tempdir,
    truncate, Snapshot,
};

const APPENDS: u64 = 8;

/// A log of `APPENDS` independent single-event appends, cleanly closed.
fn write_single_appends(dir: &Path) {
    let log = Log::open(dir, exact_options()).expect("open");
    for i in 1..=APPENDS {
        let event = Event::new("unit.single")
            .json_payload(&serde_json::json!({"i": i, "pad": "x".repeat(40)}))
            .expect("payload");
        assert_eq!(log.append(event).expect("append"), i);
    }
    log.close().expect("close");
}

fn seqs_of(log: &Log) -> Vec<u64> {
    log.iter(..)
        .expect("iter")
        .map(|e| e.expect("read").seq)
        .collect()
}

fn tree(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut files = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(at) = stack.pop() {
        for entry in std::fs::read_dir(&at).expect("read_dir") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                stack.push(path);
            } else {
                let name = path
                    .strip_prefix(dir)
                    .expect("prefix")
                    .display()
                    .to_string();
                files.push((name, std::fs::read(&path).expect("read")));
            }
        }
    }
    files.sort();
    files
}

// Proves that after a crash (no clean-close marker) damage to the last
// record, cut at every byte or any one bit flipped, loses exactly that
// record's own append: the other N-1 appends, written in the same commit
// groups or not, all come back.
#[test]
fn unit_damage_to_last_record_loses_only_its_append() {
    let dir = tempdir();
    write_single_appends(dir.path());
    forget_clean_close(dir.path());
    let segment = segment_files(dir.path()).pop().expect("segment");
    let last = *records(&segment).last().expect("records");
    let snapshot = Snapshot::take(dir.path());
    let expected: Vec<u64> = (1..APPENDS).collect();
    for cut in last.offset..last.end() {
        snapshot.restore(dir.path());
        truncate(&segment, cut);
        let log = Log::open(dir.path(), exact_options()).expect("open");
        assert_eq!(seqs_of(&log), expected, "cut at {cut}");
    }
    for bit in 0..last.len * 8 {
        snapshot.restore(dir.path());
        flip_byte(&segment, last.offset + bit / 8, 1 << (bit % 8));
        let log = Log::open(dir.path(), exact_options()).expect("open");
        assert_eq!(seqs_of(&log), expected, "bit {bit}");
        let cut = log.recovery_report().cut.clone().expect("a cut");
        assert_eq!(cut.offset_start, last.offset, "bit {bit}");
        let kept = cut.lost_found.path.expect("kept in lost+found");
        assert!(kept.starts_with(dir.path().join("lost+found")), "{kept:?}");
    }
}

// Proves that damage to a record that a clean close vouched for is
// refused as `Corrupt { Vouched }` naming the file, the offset and the
// sequence number, and the file is not changed; `repair --dry-run` changes
// nothing, `repair` drops exactly that append (copied to lost+found) and
// the log opens with the other N-1.
#[test]
fn clean_close_damage_is_corrupt_until_repair() {
    let dir = tempdir();
    write_single_appends(dir.path());
    let segment = segment_files(dir.path()).pop().expect("segment");
    let last = *records(&segment).last().expect("records");
    truncate(&segment, last.end() - 10);
    let before = tree(dir.path());
    match Log::open(dir.path(), exact_options()).map(|_| ()) {
        Err(Error::Corrupt { file, offset, kind }) => {
            assert_eq!((file, offset), (segment.clone(), last.offset));
            match kind {
                CorruptKind::Vouched { seq, damage } => {
                    assert_eq!(seq, APPENDS);
                    assert_eq!(*damage, CorruptKind::Truncated);
                }
                other => panic!("expected Vouched, got {other:?}"),
            }
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }
    // A read-only view refuses the same way.
    assert!(matches!(
        Log::open_read_only(dir.path()).map(|_| ()),
        Err(Error::Corrupt {
            kind: CorruptKind::Vouched { .. },
            ..
        })
    ));
    let after_refusals = tree(dir.path());
    // The writer's failed open created the lock file only.
    let without_lock: Vec<_> = after_refusals
        .iter()
        .filter(|(name, _)| name != "LOCK")
        .cloned()
        .collect();
    assert_eq!(
        without_lock,
        before
            .iter()
            .filter(|(name, _)| name != "LOCK")
            .cloned()
            .collect::<Vec<_>>()
    );
    let plan = evlog::repair(dir.path(), RepairMode::DryRun).expect("dry run");
    assert_eq!(plan.dropped_seqs(), [(APPENDS, APPENDS)]);
    assert_eq!(tree(dir.path()), after_refusals, "a dry run changed files");
    let done = evlog::repair(dir.path(), RepairMode::Apply).expect("repair");
    assert_eq!(done.dropped_seqs(), [(APPENDS, APPENDS)]);
    let cut = &done.cuts[0];
    assert_eq!(
        (cut.offset_start, cut.offset_end),
        (last.offset, last.end() - 10)
    );
    let kept = cut
        .lost_found
        .as_ref()
        .and_then(|c| c.path.clone())
        .expect("kept");
    assert_eq!(
        std::fs::read(kept).expect("read").len() as u64,
        last.len - 10
    );
    let log = Log::open(dir.path(), exact_options()).expect("open after repair");
    assert_eq!(seqs_of(&log), (1..APPENDS).collect::<Vec<_>>());
    assert_eq!(
        log.append(Event::new("after.repair")).expect("append"),
        APPENDS
    );
}

// Proves that a reopen after a clean close trusts the marker (reports it,
// scans nothing: the marker alone lets it find the end), and that a bit
// flip earlier in the active segment is then reported when that record is
// read, naming the file and offset, never silently cut.
#[test]
fn clean_close_reopen_trusts_marker_and_reads_check_crc() {
    let dir = tempdir();
    write_single_appends(dir.path());
    let log = Log::open(dir.path(), exact_options()).expect("open");
    assert!(log.recovery_report().closed_cleanly);
    assert_eq!(log.last_seq(), Some(APPENDS));
    drop(log);
    let segment = segment_files(dir.path()).pop().expect("segment");
    let second = records(&segment)[1];
    flip_byte(&segment, second.offset + 30, 0x04);
    let log = Log::open(dir.path(), exact_options()).expect("open");
    assert!(log.recovery_report().closed_cleanly);
    match log.get(2) {
        Err(Error::Corrupt { file, offset, .. }) => {
            assert_eq!((file, offset), (segment.clone(), second.offset))
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }
    assert_eq!(log.get(3).expect("seq 3").seq, 3);
}

// Proves that a batch is one unit even when the damage hits its first
// record after a crash: the batch is gone whole, the appends before it stay.
#[test]
fn unit_batch_is_whole_or_absent() {
    let dir = tempdir();
    let log = Log::open(dir.path(), exact_options()).expect("open");
    log.append(Event::new("before.one")).expect("append");
    log.append(Event::new("before.two")).expect("append");
    let batch: Vec<Event> = (0..5).map(|i| Event::new(format!("batch.e{i}"))).collect();
    assert_eq!(log.append_batch(&batch).expect("batch"), 3..8);
    log.close().expect("close");
    forget_clean_close(dir.path());
    let segment = segment_files(dir.path()).pop().expect("segment");
    let found = records(&segment);
    let snapshot = Snapshot::take(dir.path());
    for victim in &found[2..] {
        snapshot.restore(dir.path());
        flip_byte(&segment, victim.offset + 26, 0x10);
        let log = Log::open(dir.path(), exact_options()).expect("open");
        assert_eq!(seqs_of(&log), [1, 2], "damage in seq {}", victim.seq);
    }
}

// Proves that an iterator kept across close, a reopen and further appends
// (the real file system, the real mappings) ends with `Closed`, writes
// nothing when dropped, and the new log keeps working and reads all.
#[test]
fn iter_outliving_its_log_ends_and_harms_nothing() {
    let dir = tempdir();
    let log = Log::open(dir.path(), exact_options()).expect("open");
    for i in 0..50 {
        log.append(Event::new(format!("old.e{i}"))).expect("append");
    }
    let mut stale = log.iter(..).expect("iter");
    assert_eq!(stale.next().expect("first").expect("ok").seq, 1);
    log.close().expect("close");
    let log = Log::open(dir.path(), exact_options()).expect("reopen");
    for i in 0..200 {
        log.append(Event::new(format!("new.e{i}"))).expect("append");
    }
    assert!(matches!(stale.next(), Some(Err(Error::Closed))));
    assert!(stale.next().is_none());
    drop(stale);
    for i in 0..200 {
        log.append(Event::new(format!("more.e{i}")))
            .expect("append");
    }
    assert_eq!(seqs_of(&log), (1..=450).collect::<Vec<_>>());
    log.close().expect("close");
    let log = Log::open(dir.path(), exact_options()).expect("reopen");
    assert_eq!(log.last_seq(), Some(450));
}

// Proves that a read-only view opens while the writer holds the lock,
// sees what was appended when it looked, sees more after `refresh`, and
// creates nothing on a missing directory.
#[test]
fn read_only_view_beside_a_writer() {
    let dir = tempdir();
    let missing = dir.path().join("nope");
    assert!(matches!(
        Log::open_read_only(&missing).map(|_| ()),
        Err(Error::NoDataDirectory { path }) if path == missing
    ));
    assert!(!missing.exists(), "a read-only open created the directory");
    let file = dir.path().join("file");
    std::fs::write(&file, b"x").expect("write");
    assert!(matches!(
        Log::open_read_only(&file).map(|_| ()),
        Err(Error::NotADirectory { .. })
    ));
    let data = dir.path().join("data");
    let options = exact_options().segment_bytes_max(64 * 1024);
    let log = Log::open(&data, options).expect("open");
    for i in 0..100 {
        log.append(Event::new(format!("a.e{i}"))).expect("append");
    }
    let view = Log::open_read_only(&data).expect("read-only open");
    assert_eq!(view.last_seq(), Some(100));
    assert_eq!(view.get(100).expect("get").event_type, "a.e99");
    // Enough to roll a few segments under the view.
    for i in 0..2000 {
        log.append(
            Event::new("b.e")
                .json_payload(&serde_json::json!({"i": i, "pad": "y".repeat(60)}))
                .expect("payload"),
        )
        .expect("append");
    }
    assert!(log.segment_count() >= 3, "{} segments", log.segment_count());
    assert_eq!(view.refresh().expect("refresh"), 2000);
    let seen: Vec<u64> = view
        .iter(..)
        .expect("iter")
        .map(|e| e.expect("read").seq)
        .collect();
    assert_eq!(seen, (1..=2100).collect::<Vec<_>>());
    assert_eq!(view.segment_count(), log.segment_count());
    log.close().expect("close");
    drop(view);
    // Nothing read-only touches the files.
    let before = tree(&data);
    let view = Log::open_read_only(&data).expect("read-only open");
    // After a clean close the view trusts the marker and the index file.
    assert!(view.open_report().closed_cleanly);
    assert_eq!(view.get(2100).expect("get").seq, 2100);
    assert_eq!(view.iter(..).expect("iter").count(), 2100);
    drop(view);
    assert_eq!(tree(&data), before);
}

// Proves that `durable_seq` follows `last_seq` under `Always`, lags it
// under `OsBuffered` until a sync, and that a waiter on another thread is
// woken by the append it waits for, without polling.
#[test]
fn watermark_durable_and_waiting() {
    let dir = tempdir();
    let log = std::sync::Arc::new(Log::open(dir.path(), exact_options()).expect("open"));
    assert_eq!(log.durable_seq(), 0);
    log.append(Event::new("w.a")).expect("append");
    assert_eq!(log.durable_seq(), 1);
    let waiter = {
        let log = std::sync::Arc::clone(&log);
        std::thread::spawn(move || log.wait_for(Watermark::Durable, 3, Duration::from_secs(30)))
    };
    log.append(Event::new("w.b")).expect("append");
    log.append(Event::new("w.c")).expect("append");
    assert_eq!(waiter.join().expect("join"), WaitOutcome::Reached(3));
    assert_eq!(
        log.wait_for(Watermark::Published, 4, Duration::from_millis(10)),
        WaitOutcome::TimedOut(3)
    );
    drop(log);

    let dir = tempdir();
    let options = Options::default().durability(evlog::Durability::OsBuffered);
    let log = Log::open(dir.path(), options).expect("open");
    log.append(Event::new("w.a")).expect("append");
    log.append(Event::new("w.b")).expect("append");
    assert_eq!(log.last_seq(), Some(2));
    assert_eq!(log.durable_seq(), 0, "nothing synced yet under OsBuffered");
    log.sync().expect("sync");
    assert_eq!(log.durable_seq(), 2);
}

// Proves that `segments/CLEAN`, the marker, is exactly 64 bytes as
// FORMAT.md describes and names the active segment and the last seq.
#[test]
fn clean_close_marker_layout() {
    let dir = tempdir();
    write_single_appends(dir.path());
    let marker = std::fs::read(segments_dir(dir.path()).join("CLEAN")).expect("marker");
    assert_eq!(marker.len(), 64);
    assert_eq!(&marker[..8], b"EVLOGCLN");
    let u64_at = |at: usize| u64::from_le_bytes(marker[at..at + 8].try_into().expect("8"));
    let u32_at = |at: usize| u32::from_le_bytes(marker[at..at + 4].try_into().expect("4"));
    assert_eq!(u32_at(8), 1, "version");
    assert_eq!(u64_at(16), 1, "active_first_seq");
    assert_eq!(u64_at(24), APPENDS, "last_seq");
    let segment = segment_files(dir.path()).pop().expect("segment");
    let last = *records(&segment).last().expect("records");
    assert_eq!(u64_at(32), last.end(), "active_bytes");
    assert_eq!(u64_at(40), last.offset, "tail_offset");
    let bytes = std::fs::read(&segment).expect("segment");
    assert_eq!(
        u32_at(48),
        crc32fast::hash(&bytes[last.offset as usize..last.end() as usize])
    );
    assert_eq!(u32_at(60), crc32fast::hash(&marker[..60]));
}

// Proves that a sealed segment with zero bytes after its last record (or
// ending inside an append) is judged the same by `verify` and by open:
// the same file, offset and kind, and the events still read back.
#[test]
fn sealed_segment_rules_agree_between_verify_and_open() {
    let dir = tempdir();
    let options = exact_options().segment_bytes_max(64 * 1024);
    let log = Log::open(dir.path(), options.clone()).expect("open");
    for i in 0..1500 {
        log.append(
            Event::new("s.e")
                .json_payload(&serde_json::json!({"i": i, "pad": "z".repeat(50)}))
                .expect("payload"),
        )
        .expect("append");
    }
    log.close().expect("close");
    let sealed = segment_files(dir.path())[0].clone();
    let end = std::fs::metadata(&sealed).expect("stat").len();
    crate::common::append_bytes(&sealed, &[0u8; 100]);
    let problem = evlog::dump::verify(dir.path())
        .expect("verify")
        .expect("a problem");
    assert_eq!(
        (problem.file.clone(), problem.offset),
        (sealed.clone(), end)
    );
    assert_eq!(problem.what, CorruptKind::TrailingBytes.to_string());
    let log = Log::open(dir.path(), options).expect("open");
    assert_eq!(
        log.recovery_report().damaged_segments,
        [(sealed, end, CorruptKind::TrailingBytes.to_string())]
    );
    assert_eq!(log.iter(..).expect("iter").count(), 1500);
}
