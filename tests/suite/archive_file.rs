//! Archive files (`.evz`) on their own: written from the records of real
//! sealed segments, read back by point reads, range scans and `zstd -d`,
//! and refused when cut or altered; the offline `Archive` over a
//! directory; `evlog replay --archive` and `evlog-dump FILE.evz`; and the
//! committed version-1 fixture.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use evlog::bench_api::{archive_file_name, deletion_note, sealed_records, write_archive};
use evlog::{Archive, DeletionNote, Error, Log, Options};

use crate::common::{rolling_options, run_cli, tempdir, text, write_log, Spec};

/// Frames this small give a few records each, so that every test crosses
/// frame boundaries.
const SMALL_FRAME_BYTES: usize = 2048;

/// The seq of a whole record (bytes 8..16 of its header).
fn seq_of(record: &[u8]) -> u64 {
    u64::from_le_bytes(record[8..16].try_into().unwrap())
}

/// A log of 700 events in 64 KiB segments under `root/log`, and the
/// records of its sealed segments.
fn sealed_log(root: &Path) -> (PathBuf, Vec<Vec<Vec<u8>>>) {
    let log_dir = root.join("log");
    write_log(&log_dir, rolling_options(), &Spec::many(700, 600));
    let segments = sealed_records(&log_dir).unwrap();
    assert!(segments.len() >= 3, "{} sealed segments", segments.len());
    (log_dir, segments)
}

/// One archive per segment, covering exactly its records.
fn archive_segments(segments: &[Vec<Vec<u8>>], archive_dir: &Path) {
    for records in segments {
        let first = seq_of(&records[0]);
        let last = seq_of(records.last().unwrap());
        write_archive(archive_dir, first, last, records, &[], 3, SMALL_FRAME_BYTES).unwrap();
    }
}

fn decompress_all(path: &Path) -> Vec<u8> {
    let mut decoder = zstd::stream::Decoder::new(std::fs::File::open(path).unwrap()).unwrap();
    let mut out = Vec::new();
    decoder.read_to_end(&mut out).unwrap();
    out
}

// Proves that every record pushed is read back: point reads of every seq,
// whole and partial range scans across frames and files, and `zstd -d`
// yields exactly the concatenated records.
#[test]
fn archive_round_trip_matches_the_live_log() {
    let root = tempdir();
    let (log_dir, segments) = sealed_log(root.path());
    let archive_dir = root.path().join("archive");
    archive_segments(&segments, &archive_dir);
    let first = seq_of(&segments[0][0]);
    let last = seq_of(segments.last().unwrap().last().unwrap());
    let count = last - first + 1;

    let archive = Archive::open(&archive_dir).unwrap();
    assert_eq!((archive.first_seq(), archive.last_seq()), (first, last));
    assert_eq!(archive.event_count(), count);
    let info = archive.info();
    assert_eq!(info.len(), segments.len());
    assert!(info.iter().all(|a| a.frames.len() > 3));

    let log = Log::open(&log_dir, Options::default()).unwrap();
    for seq in first..=last {
        assert_eq!(
            archive.get(seq).unwrap(),
            log.get(seq).unwrap(),
            "seq {seq}"
        );
    }
    assert!(matches!(archive.get(last + 1), Err(Error::NotFound(s)) if s == last + 1));
    assert!(matches!(archive.get(0), Err(Error::NotFound(0))));

    let all: Vec<_> = archive.iter(..).unwrap().map(Result::unwrap).collect();
    let live: Vec<_> = log
        .iter(first..=last)
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(all, live);
    // Ranges starting and ending inside frames and files, and empty ones.
    let boundary = info[1].range_first_seq;
    for (from, to) in [
        (first + 3, first + 17),
        (boundary - 5, boundary + 5),
        (boundary, boundary),
        (last - 2, last + 100),
        (last + 1, last + 5),
        (10, 9),
    ] {
        let got: Vec<u64> = archive
            .iter(from..=to)
            .unwrap()
            .map(|e| e.unwrap().seq)
            .collect();
        let want: Vec<u64> = (from.max(first)..=to.min(last)).collect();
        assert_eq!(got, want, "{from}..={to}");
    }
    assert_eq!(archive.iter(first..first + 4).unwrap().count(), 4);

    for (records, info) in segments.iter().zip(&info) {
        assert_eq!(decompress_all(&info.path), records.concat());
    }
    let report = archive.verify().unwrap();
    assert_eq!((report.events, report.unexplained_missing), (count, 0));
    assert_eq!(report.files, segments.len() as u64);
}

// Proves that a compacted archive keeps the original seqs of the events it
// holds, that a deleted seq reads as `Deleted` with its rule and date, and
// that an archive of notes only (a tombstone) reads as no events.
#[test]
fn archive_compacted_and_tombstone_explain_their_holes() {
    let root = tempdir();
    let (log_dir, segments) = sealed_log(root.path());
    let dir = root.path().join("archive");
    let records = &segments[0];
    let (first, last) = (seq_of(&records[0]), seq_of(records.last().unwrap()));
    let kept: Vec<Vec<u8>> = records
        .iter()
        .filter(|r| seq_of(r) % 4 == 1)
        .cloned()
        .collect();
    let deleted = records.len() as u64 - kept.len() as u64;
    let note = deletion_note(
        first,
        last,
        deleted,
        "P2 after 365 days",
        1_780_000_000_000_000,
    );
    write_archive(
        &dir,
        first,
        last,
        &kept,
        std::slice::from_ref(&note),
        3,
        SMALL_FRAME_BYTES,
    )
    .unwrap();
    // The next segment's range was deleted whole.
    let next = &segments[1];
    let (next_first, next_last) = (seq_of(&next[0]), seq_of(next.last().unwrap()));
    let tombstone = deletion_note(
        next_first,
        next_last,
        next.len() as u64,
        "all after 2 years",
        7,
    );
    write_archive(
        &dir,
        next_first,
        next_last,
        &[],
        std::slice::from_ref(&tombstone),
        3,
        0,
    )
    .unwrap();

    let archive = Archive::open(&dir).unwrap();
    assert_eq!(archive.event_count(), kept.len() as u64);
    assert_eq!(archive.deletions(), vec![note, tombstone]);
    let log = Log::open(&log_dir, Options::default()).unwrap();
    for seq in first..=next_last {
        match archive.get(seq) {
            Ok(event) => {
                assert_eq!(seq % 4, 1);
                assert_eq!(event, log.get(seq).unwrap());
            }
            Err(Error::Deleted {
                seq: s,
                rule,
                deleted_at_us,
            }) => {
                assert_eq!(s, seq);
                if seq <= last {
                    assert_ne!(seq % 4, 1);
                    assert_eq!(
                        (rule.as_str(), deleted_at_us),
                        ("P2 after 365 days", 1_780_000_000_000_000)
                    );
                } else {
                    assert_eq!((rule.as_str(), deleted_at_us), ("all after 2 years", 7));
                }
            }
            Err(other) => panic!("seq {seq}: {other}"),
        }
    }
    let seqs: Vec<u64> = archive.iter(..).unwrap().map(|e| e.unwrap().seq).collect();
    assert_eq!(seqs, kept.iter().map(|r| seq_of(r)).collect::<Vec<_>>());
    let report = archive.verify().unwrap();
    assert_eq!(report.deleted_events, deleted + next.len() as u64);
    assert_eq!(report.unexplained_missing, 0);

    let tomb_path = dir.join(archive_file_name(next_first));
    assert!(decompress_all(&tomb_path).is_empty());
    let tomb = Archive::open(&tomb_path).unwrap();
    assert_eq!((tomb.event_count(), tomb.iter(..).unwrap().count()), (0, 0));
}

/// A small archive: 3 frames of 12 records with a gap and a note.
fn small_archive(dir: &Path) -> (PathBuf, Vec<Vec<u8>>) {
    let (_, segments) = sealed_log(dir);
    let records: Vec<Vec<u8>> = segments[0][..12]
        .iter()
        .filter(|r| seq_of(r) != 5)
        .cloned()
        .collect();
    let archive_dir = dir.join("archive");
    write_archive(
        &archive_dir,
        1,
        12,
        &records,
        &[deletion_note(5, 5, 1, "r", 0)],
        3,
        1500,
    )
    .unwrap();
    let path = archive_dir.join(archive_file_name(1));
    assert!(Archive::open(&path).unwrap().info()[0].frames.len() >= 3);
    (path, records)
}

/// Whether a damaged copy is detected: refused at open, or by reading
/// every event, or by `verify`; never read as fewer (or other) events.
fn detected(path: &Path, records: &[Vec<u8>]) -> bool {
    let Ok(archive) = Archive::open(path) else {
        return true;
    };
    let events: Result<Vec<_>, _> = archive.iter(..).and_then(|events| events.collect());
    match events {
        Err(_) => true,
        Ok(events) => {
            assert_eq!(events.len(), records.len(), "fewer events read silently");
            archive.verify().is_err()
        }
    }
}

// Proves that an archive cut at every byte offset is refused at open, so
// that a truncated archive never reads as fewer events.
#[test]
fn archive_truncated_at_every_offset_is_refused_at_open() {
    let root = tempdir();
    let (path, _) = small_archive(root.path());
    let bytes = std::fs::read(&path).unwrap();
    let probe = root.path().join("probe.evz");
    for len in 0..bytes.len() {
        std::fs::write(&probe, &bytes[..len]).unwrap();
        match Archive::open(&probe) {
            Err(Error::Corrupt { file, .. }) => assert_eq!(file, probe),
            other => panic!("cut at {len} of {}: {other:?}", bytes.len()),
        }
    }
}

// Proves that every single flipped bit of an archive, data frames
// included, is detected at open, while reading, or by verify.
#[test]
fn archive_bit_flips_are_detected() {
    let root = tempdir();
    let (path, records) = small_archive(root.path());
    let bytes = std::fs::read(&path).unwrap();
    let probe = root.path().join("probe.evz");
    for bit in 0..bytes.len() * 8 {
        let mut damaged = bytes.clone();
        damaged[bit / 8] ^= 1 << (bit % 8);
        std::fs::write(&probe, &damaged).unwrap();
        assert!(detected(&probe, &records), "bit {bit} (byte {})", bit / 8);
    }
}

// Proves that a directory with archives covering overlapping ranges is
// refused naming both files, and that other files are ignored.
#[test]
fn archive_directory_refuses_overlaps_and_ignores_other_files() {
    let root = tempdir();
    let (_, segments) = sealed_log(root.path());
    let dir = root.path().join("archive");
    archive_segments(&segments[..2], &dir);
    std::fs::write(dir.join("notes.txt"), b"x").unwrap();
    std::fs::write(dir.join(format!("{}.tmp", archive_file_name(999))), b"x").unwrap();
    assert_eq!(Archive::open(&dir).unwrap().info().len(), 2);

    let second_first = seq_of(&segments[1][0]);
    let overlap = &segments[0][segments[0].len() - 1..];
    let overlap_first = seq_of(&overlap[0]);
    write_archive(&dir, overlap_first, second_first, overlap, &[], 3, 0).unwrap();
    match Archive::open(&dir) {
        Err(Error::OverlappingArchives { first, second }) => {
            assert_eq!(first, dir.join(archive_file_name(seq_of(&segments[0][0]))));
            assert_eq!(second, dir.join(archive_file_name(overlap_first)));
        }
        other => panic!("{other:?}"),
    }
    // A file renamed to another range's name is refused.
    let empty = root.path().join("renamed");
    std::fs::create_dir_all(&empty).unwrap();
    std::fs::copy(
        dir.join(archive_file_name(overlap_first)),
        empty.join(archive_file_name(overlap_first + 1)),
    )
    .unwrap();
    assert!(matches!(Archive::open(&empty), Err(Error::Corrupt { .. })));
}

// Proves that `evlog replay --archive` prints exactly what `evlog replay`
// prints for the same events, from a directory holding only archives.
#[test]
fn archive_cli_replay_matches_live_replay() {
    let root = tempdir();
    let (log_dir, segments) = sealed_log(root.path());
    let copied = root.path().join("copied");
    archive_segments(&segments, &copied);
    let last = seq_of(segments.last().unwrap().last().unwrap());
    for range in [vec![], vec!["--from", "7", "--to", "150"]] {
        let to = last.to_string();
        let mut live_args = vec!["replay", "--to", to.as_str()];
        if !range.is_empty() {
            live_args = [vec!["replay"], range.clone()].concat();
        }
        let live = run_cli(&log_dir, &live_args);
        assert!(live.status.success(), "{}", text(&live.stderr));
        let archive_arg = copied.to_str().unwrap();
        let archived = run_cli(
            &root.path().join("nowhere"),
            &[vec!["replay", "--archive", archive_arg], range].concat(),
        );
        assert!(archived.status.success(), "{}", text(&archived.stderr));
        assert_eq!(text(&archived.stdout), text(&live.stdout));
        assert!(!text(&live.stdout).is_empty());
    }
    assert!(
        !root.path().join("nowhere").exists(),
        "replay --archive created a directory"
    );
    let missing = run_cli(root.path(), &["replay", "--archive", "/nonexistent/x.evz"]);
    assert_eq!(missing.status.code(), Some(2));
}

fn evlog_dump(args: &[&std::ffi::OsStr]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_evlog-dump"))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

// Proves that `evlog-dump x.evz` shows footer, frames, notes and records,
// and that `--verify` says ok (exit 0) on an intact archive and corrupt
// (exit 1) on a damaged one.
#[test]
fn archive_dump_shows_and_verifies() {
    let root = tempdir();
    let (path, records) = small_archive(root.path());
    let p = path.as_os_str();
    let out = evlog_dump(&[p, "--verify".as_ref()]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).starts_with("ok: "),
        "{}",
        text(&out.stdout)
    );
    assert!(text(&out.stdout).contains("seq 5..=5: 1 deleted by rule \"r\""));

    let out = evlog_dump(&[p]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("covers seq 1..=12; 11 events (seq 1..=12)"),
        "{stdout}"
    );
    assert!(stdout.contains("  frame 0 @0 compressed="), "{stdout}");
    assert!(
        stdout.contains("  deleted seq 5..=5: 1 events by rule \"r\""),
        "{stdout}"
    );
    assert_eq!(
        stdout.lines().filter(|l| l.contains(" seq=")).count(),
        records.len()
    );

    let out = evlog_dump(&[p, "--json".as_ref()]);
    let seqs: Vec<u64> = text(&out.stdout)
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["seq"]
                .as_u64()
                .unwrap()
        })
        .collect();
    assert_eq!(seqs, records.iter().map(|r| seq_of(r)).collect::<Vec<_>>());

    // A flipped byte inside the first data frame.
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[20] ^= 0x40;
    std::fs::write(&path, &bytes).unwrap();
    let out = evlog_dump(&[p, "--verify".as_ref()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stdout).starts_with("corrupt: "),
        "{}",
        text(&out.stdout)
    );
    // Cut short: refused at open.
    std::fs::write(&path, &bytes[..bytes.len() - 1]).unwrap();
    let out = evlog_dump(&[p]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("damaged"),
        "{}",
        text(&out.stderr)
    );
}

/// The committed version-1 fixture: 24 covered seqs, 18 events.
fn fixture_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/archive_v1")
        .join(archive_file_name(1))
}

/// The fixture's events: seq `s` has id `...00ss`, timestamp 2026-01-01
/// plus `s` seconds, type `fixture.archived`, entity task/T-`s % 3`.
fn fixture_event(seq: u64) -> evlog::Event {
    evlog::Event::new("fixture.archived")
        .id(evlog::Uuid::from_u128(
            0x0190_f1c5_0000_7000_8000_0000_0000_0000 | u128::from(seq),
        ))
        .timestamp_us(1_767_225_600_000_000 + seq as i64 * 1_000_000)
        .entity("task", format!("T-{}", seq % 3))
        .json_payload(&serde_json::json!({"seq": seq, "words": "lorem ipsum dolor"}))
        .unwrap()
}

fn fixture_notes() -> Vec<DeletionNote> {
    vec![
        deletion_note(7, 8, 2, "P2 after 90 days", 1_775_000_000_000_000),
        deletion_note(21, 24, 4, "all after 1 year", 1_800_000_000_000_000),
    ]
}

fn fixture_seqs() -> Vec<u64> {
    (1..=20).filter(|s| !(7..=8).contains(s)).collect()
}

// Writes tests/fixtures/archive_v1 (run by hand when the fixture must be
// made again; a format change keeps the old one and adds a new one).
#[test]
#[ignore]
fn regenerate_archive_fixture() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/archive_v1");
    let records: Vec<Vec<u8>> = fixture_seqs()
        .into_iter()
        .map(|seq| {
            let mut body = Vec::new();
            evlog::bench_api::encode_body(&fixture_event(seq), &mut body);
            evlog::bench_api::record_with_seq(seq, &body)
        })
        .collect();
    write_archive(&dir, 1, 24, &records, &fixture_notes(), 3, 1024).unwrap();
}

// Proves that this build reads the committed version-1 archive: every
// event, the notes, and a clean verify (formats are a promise).
#[test]
fn archive_fixture_v1_still_reads() {
    let archive = Archive::open(fixture_path()).unwrap();
    let info = &archive.info()[0];
    assert_eq!(
        (
            info.format_version,
            info.range_first_seq,
            info.range_last_seq
        ),
        (1, 1, 24)
    );
    assert!(info.frames.len() >= 2, "{info:?}");
    assert_eq!(archive.deletions(), fixture_notes());
    let events: Vec<_> = archive.iter(..).unwrap().map(Result::unwrap).collect();
    assert_eq!(
        events.iter().map(|e| e.seq).collect::<Vec<_>>(),
        fixture_seqs()
    );
    for event in &events {
        let seq = event.seq;
        let id =
            evlog::Uuid::from_u128(0x0190_f1c5_0000_7000_8000_0000_0000_0000 | u128::from(seq));
        assert_eq!(event.id, id);
        assert_eq!(
            event.timestamp_us,
            1_767_225_600_000_000 + seq as i64 * 1_000_000
        );
        assert_eq!(event.event_type, "fixture.archived");
        assert_eq!(
            event.entity.as_ref().unwrap().entity_id,
            format!("T-{}", seq % 3)
        );
    }
    assert!(
        matches!(archive.get(8), Err(Error::Deleted { rule, .. }) if rule == "P2 after 90 days")
    );
    let report = archive.verify().unwrap();
    assert_eq!(
        (
            report.events,
            report.deleted_events,
            report.unexplained_missing
        ),
        (18, 6, 0)
    );
}
