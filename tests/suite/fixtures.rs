//! The corrupt-file corpus: small damaged data directories checked in
//! under `tests/fixtures/<name>/`, each with the exact outcome expected
//! (error variant, file and byte offset, or the repair and its report, and
//! what `evlog::dump::verify` says). `tests/fixtures/README.md` lists them.
//!
//! Every test opens a copy in a temporary directory, because opening may
//! repair files. The expected offsets are written out as numbers, not
//! recomputed from the files, so that a change of the on-disk format fails
//! here instead of being absorbed.
//!
//! The corpus is made by `regenerate_fixtures` (ignored):
//!
//! ```text
//! cargo test --release --test suite -- --ignored regenerate
//! ```
//!
//! It appends 60 events with fixed ids and timestamps through the library
//! (singles and three atomic batches) into one segment, splits that segment
//! at commit-group boundaries into two sealed segments and an active one
//! (segments 1..=30, 31..=45, 46..=60), lets the library write their
//! indexes, and damages copies. The split keeps each fixture near 20 KB: a
//! segment written by the library is sealed only near
//! `SEGMENT_BYTES_MIN` (64 KiB), so two sealed segments would cost over
//! 128 KB per fixture.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use evlog::{CorruptKind, Error, Event, Log, LoggedEvent, Options, Payload, Priority};
use evlog::{Entity, RecoveryReport};
use serde_json::json;
use uuid::Uuid;

use crate::common::{
    edit_header, file_len, flip_byte, records, tempdir, truncate, write_at, RecordPos, Rng,
    INDEX_HEADER_BYTES, RECORD_HEADER_BYTES, SEGMENT_HEADER_BYTES,
};

/// Events in the base log.
const EVENT_COUNT: u64 = 60;
/// Atomic batches of the base log (first and last seq); all other events
/// are appended one at a time.
const BATCHES: [(u64, u64); 3] = [(5, 8), (36, 38), (50, 54)];
/// First sequence numbers of the segments of the base log.
const SEGMENT_FIRST_SEQS: [u64; 3] = [1, 31, 46];

const SEALED_1: &str = "00000000000000000001.seg";
const SEALED_1_INDEX: &str = "00000000000000000001.idx";
const SEALED_2: &str = "00000000000000000031.seg";
const SEALED_2_INDEX: &str = "00000000000000000031.idx";
const ACTIVE: &str = "00000000000000000046.seg";
const ACTIVE_INDEX: &str = "00000000000000000046.idx";

/// Every fixture directory, in the order of the README.
const FIXTURES: [&str; 15] = [
    "truncated_last_record",
    "truncated_sealed_segment",
    "truncated_sealed_segment_no_index",
    "bitflip_sealed_record_body",
    "bitflip_active_before_valid_groups",
    "zeroed_page_sealed_segment",
    "bad_magic_sealed_segment",
    "future_version_active_segment",
    "header_crc_sealed_segment",
    "missing_middle_segment",
    "missing_index_files",
    "garbled_index_files",
    "future_version_index",
    "stray_tmp_files",
    "orphan_index_file",
];

/// The whole corpus must stay small: it lives in the repository.
const CORPUS_BYTES_MAX: u64 = 1024 * 1024;
const FIXTURE_BYTES_MAX: u64 = 50 * 1024;

fn fixture_options() -> Options {
    Options::default()
        .preallocate_bytes(0)
        .segment_bytes_max(65536)
}

fn fixtures_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

// ---------------------------------------------------------------------------
// The events of the base log.

fn event_id(seq: u64) -> Uuid {
    Uuid::from_u128(0x0190_f1c5_0000_7000_8000_0000_0000_0000 | u128::from(seq))
}

/// Event `seq` of the base log exactly as it must read back: every field
/// kind of the format is used by some of them.
fn expected_event(seq: u64) -> LoggedEvent {
    const TYPES: [&str; 4] = [
        "task.created",
        "task.status_changed",
        "agent.heartbeat",
        "task.comment_added",
    ];
    let payload = if seq % 15 == 7 {
        // Raw bytes, zeros included.
        Payload::Bytes((0..seq * 5).map(|b| (b * 37 % 256) as u8).collect())
    } else if seq % 20 == 11 {
        Payload::Empty
    } else {
        let note = "x".repeat(40 + (seq * 53 % 360) as usize);
        Payload::Json(json!({"n": seq, "note": note}).to_string())
    };
    let mut metadata = BTreeMap::new();
    if seq.is_multiple_of(3) {
        metadata.insert("host".to_string(), format!("h{}", seq % 2));
        metadata.insert("region".to_string(), "eu-west".to_string());
    }
    LoggedEvent {
        seq,
        id: event_id(seq),
        event_type: TYPES[(seq % 4) as usize].to_string(),
        // From 2026-01-01T00:00:00Z, 1.25 s apart, odd microseconds.
        timestamp_us: 1_767_225_600_000_000 + seq as i64 * 1_250_000 + (seq % 7) as i64,
        correlation_id: (seq % 4 == 1).then(|| Uuid::from_u128((0xc0 << 120) | u128::from(seq))),
        causation_id: (seq % 4 == 2).then(|| event_id(seq - 1)),
        entity: Some(Entity {
            entity_type: "task".into(),
            entity_id: format!("T-{}", seq % 7 + 1),
        }),
        actor: seq.is_multiple_of(2).then(|| format!("agent-{}", seq % 3)),
        session: seq
            .is_multiple_of(5)
            .then(|| format!("session-{}", seq / 5)),
        priority: Priority::from_u8((seq % 4) as u8).expect("0..=3"),
        traceparent: (seq % 10 == 3).then(|| {
            format!(
                "00-{:032x}-{:016x}-01",
                0xabc0_0000_u128 + u128::from(seq),
                0x1234 + seq
            )
        }),
        metadata,
        payload,
    }
}

/// The event to append to get `expected_event(seq)`.
fn event_to_append(seq: u64) -> Event {
    let e = expected_event(seq);
    let mut event = Event::new(e.event_type)
        .id(e.id)
        .timestamp_us(e.timestamp_us)
        .priority(e.priority)
        .payload(e.payload);
    if let Some(id) = e.correlation_id {
        event = event.correlation_id(id);
    }
    if let Some(id) = e.causation_id {
        event = event.causation_id(id);
    }
    if let Some(entity) = e.entity {
        event = event.entity(entity.entity_type, entity.entity_id);
    }
    if let Some(actor) = e.actor {
        event = event.actor(actor);
    }
    if let Some(session) = e.session {
        event = event.session(session);
    }
    if let Some(traceparent) = e.traceparent {
        event = event.traceparent(traceparent);
    }
    for (key, value) in e.metadata {
        event = event.metadata(key, value);
    }
    event
}

// ---------------------------------------------------------------------------
// Helpers of the tests.

/// A copy of fixture `name` in a fresh temporary directory: the guard and
/// the data directory.
fn copy_fixture(name: &str) -> (tempfile::TempDir, PathBuf) {
    let source = fixtures_root().join(name).join("segments");
    assert!(
        source.is_dir(),
        "fixture {name} is missing: {}",
        source.display()
    );
    let tmp = tempdir();
    let dir = tmp.path().join(name);
    let segments = dir.join("segments");
    std::fs::create_dir_all(&segments).expect("create the copy");
    for entry in std::fs::read_dir(&source).expect("read the fixture") {
        let entry = entry.expect("directory entry");
        std::fs::copy(entry.path(), segments.join(entry.file_name())).expect("copy a file");
    }
    (tmp, dir)
}

fn seg_path(dir: &Path, name: &str) -> PathBuf {
    dir.join("segments").join(name)
}

/// Every file of the segments directory with its bytes.
fn read_tree(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut files = BTreeMap::new();
    for entry in std::fs::read_dir(dir.join("segments")).expect("read segments") {
        let entry = entry.expect("directory entry");
        let name = entry.file_name().into_string().expect("a UTF-8 name");
        // The clean-close marker is written by every clean close; the
        // tests below are about the segments and indexes.
        if name == "CLEAN" {
            continue;
        }
        files.insert(name, std::fs::read(entry.path()).expect("read a file"));
    }
    files
}

fn open_ok(dir: &Path, context: &str) -> Log {
    Log::open(dir, fixture_options()).unwrap_or_else(|e| panic!("{context}: open failed: {e}"))
}

fn open_err(dir: &Path, context: &str) -> Error {
    match Log::open(dir, fixture_options()) {
        Ok(log) => panic!(
            "{context}: opened, last_seq {:?}, report {:?}",
            log.last_seq(),
            log.recovery_report()
        ),
        Err(e) => e,
    }
}

/// Panics unless `error` is exactly `Corrupt { file, offset, kind }` and
/// its message names the file and the offset.
fn assert_corrupt(error: Error, file: &Path, offset: u64, kind: CorruptKind, context: &str) {
    let message = error.to_string();
    match error {
        Error::Corrupt {
            file: found_file,
            offset: found_offset,
            kind: found_kind,
        } => {
            assert_eq!(found_file, file, "{context}: file; {message}");
            assert_eq!(found_offset, offset, "{context}: offset; {message}");
            assert_eq!(found_kind, kind, "{context}: kind; {message}");
            assert_eq!(
                message,
                format!(
                    "corrupt data in {} at byte offset {offset}: {kind}",
                    file.display()
                ),
                "{context}: message"
            );
        }
        other => panic!("{context}: expected Corrupt at {offset}, got {other:?}"),
    }
}

/// Panics unless `verify` reports exactly this first problem.
fn assert_verify_problem(dir: &Path, file: &Path, offset: u64, what: &str, context: &str) {
    let problem = evlog::dump::verify(dir)
        .unwrap_or_else(|e| panic!("{context}: verify failed to run: {e}"))
        .unwrap_or_else(|| panic!("{context}: verify found nothing"));
    assert_eq!(problem.file, file, "{context}: verify file; {problem}");
    assert_eq!(
        problem.offset, offset,
        "{context}: verify offset; {problem}"
    );
    // A torn tail is reported with what the next open will do about it.
    assert!(
        problem.what == what || problem.what.starts_with(&format!("{what}: a torn tail")),
        "{context}: verify what; {problem}"
    );
}

fn assert_verify_clean(dir: &Path, context: &str) {
    assert_eq!(
        evlog::dump::verify(dir).unwrap_or_else(|e| panic!("{context}: verify: {e}")),
        None,
        "{context}: verify"
    );
}

fn assert_event(got: &LoggedEvent, seq: u64, context: &str) {
    assert_eq!(got, &expected_event(seq), "{context}: seq {seq}");
}

/// Panics unless each of `seqs` reads back by `get` exactly as written.
fn assert_gets(log: &Log, seqs: impl IntoIterator<Item = u64>, context: &str) {
    for seq in seqs {
        let event = log
            .get(seq)
            .unwrap_or_else(|e| panic!("{context}: get({seq}): {e}"));
        assert_event(&event, seq, context);
    }
}

/// Panics unless the log holds exactly events `1..=last`, by `get` and by
/// `iter`.
fn assert_whole(log: &Log, last: u64, context: &str) {
    assert_eq!(log.first_seq(), Some(1), "{context}: first_seq");
    assert_eq!(log.last_seq(), Some(last), "{context}: last_seq");
    assert_gets(log, 1..=last, context);
    let mut expected = 1;
    for item in log.iter(..).expect("iter") {
        let event = item.unwrap_or_else(|e| panic!("{context}: iter at {expected}: {e}"));
        assert_event(&event, expected, context);
        expected += 1;
    }
    assert_eq!(expected, last + 1, "{context}: iter ended early");
    assert!(
        matches!(log.get(last + 1), Err(Error::NotFound(n)) if n == last + 1),
        "{context}: get past the end"
    );
}

/// Panics unless `iter(..)` yields events `1..first_bad` and then exactly
/// `Corrupt { file, offset, kind }`, and then ends.
fn assert_iter_stops_at(
    log: &Log,
    first_bad: u64,
    file: &Path,
    offset: u64,
    kind: CorruptKind,
    context: &str,
) {
    let mut iter = log.iter(..).expect("iter");
    for seq in 1..first_bad {
        let event = iter
            .next()
            .unwrap_or_else(|| panic!("{context}: iter ended at {seq}"))
            .unwrap_or_else(|e| panic!("{context}: iter at {seq}: {e}"));
        assert_event(&event, seq, context);
    }
    let error = match iter.next() {
        Some(Err(e)) => e,
        Some(Ok(event)) => panic!("{context}: iter returned damaged seq {}", event.seq),
        None => panic!("{context}: iter ended before the damage"),
    };
    assert_corrupt(error, file, offset, kind, &format!("{context}, iter"));
    assert!(
        iter.next().is_none(),
        "{context}: iter goes on after an error"
    );
}

fn u32_le(bytes: &[u8], at: u64) -> u32 {
    let at = at as usize;
    u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes"))
}

fn u64_le(bytes: &[u8], at: u64) -> u64 {
    let at = at as usize;
    u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8 bytes"))
}

/// The `RecordChecksum` kind of the record at `offset` of `segment`, with
/// the CRC computed here as FORMAT.md says (bytes 0..4, 8..24, body).
fn checksum_kind(segment: &Path, offset: u64) -> CorruptKind {
    let bytes = std::fs::read(segment).expect("read segment");
    let body_len = u64::from(u32_le(&bytes, offset));
    let end = (offset + RECORD_HEADER_BYTES + body_len) as usize;
    let at = offset as usize;
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&bytes[at..at + 4]);
    hasher.update(&bytes[at + 8..end]);
    CorruptKind::RecordChecksum {
        stored: u32_le(&bytes, offset + 4),
        computed: hasher.finalize(),
    }
}

/// Opens the fixture, expects exactly `report` from recovery and all events
/// intact, closes it, and checks the indexes are exact and a second open has
/// nothing left to repair.
fn assert_opens_whole(dir: &Path, report: &RecoveryReport, context: &str) {
    let log = open_ok(dir, context);
    assert_eq!(log.recovery_report(), report, "{context}: recovery report");
    assert_whole(&log, EVENT_COUNT, context);
    log.close().expect("close");
    assert_all_indexes_exact(dir);
    assert_reopens_clean(dir, EVENT_COUNT, context);
}

/// Panics unless the index of `segment` is a current-version index with exactly
/// one entry per record, each the record's offset, marked sealed (with the
/// CRC of its entries) or not.
fn assert_index_exact(segment: &Path, sealed: bool) {
    let index = std::fs::read(segment.with_extension("idx"))
        .unwrap_or_else(|e| panic!("read the index of {}: {e}", segment.display()));
    let context = segment.display();
    assert!(index.len() >= INDEX_HEADER_BYTES as usize, "{context}");
    assert_eq!(&index[..8], b"EVLOGIDX", "{context}: magic");
    assert_eq!(
        u32_le(&index, 8),
        crate::common::INDEX_FORMAT_VERSION,
        "{context}: version"
    );
    assert_eq!(u32_le(&index, 12), u32::from(sealed), "{context}: sealed");
    let first_seq: u64 = segment
        .file_stem()
        .and_then(|s| s.to_str())
        .and_then(|s| s.parse().ok())
        .expect("a numbered segment");
    assert_eq!(u64_le(&index, 16), first_seq, "{context}: first_seq");
    assert_eq!(
        crc32fast::hash(&index[..28]),
        u32_le(&index, 28),
        "{context}: header CRC"
    );
    let entries = &index[INDEX_HEADER_BYTES as usize..];
    let expected_crc = if sealed { crc32fast::hash(entries) } else { 0 };
    assert_eq!(u32_le(&index, 24), expected_crc, "{context}: entries CRC");
    let offsets: Vec<u64> = entries
        .chunks(8)
        .map(|c| u64::from_le_bytes(c.try_into().expect("whole entries")))
        .collect();
    let records: Vec<u64> = records(segment).iter().map(|r| r.offset).collect();
    assert_eq!(offsets, records, "{context}: entries");
}

fn assert_all_indexes_exact(dir: &Path) {
    assert_index_exact(&seg_path(dir, SEALED_1), true);
    assert_index_exact(&seg_path(dir, SEALED_2), true);
    assert_index_exact(&seg_path(dir, ACTIVE), false);
}

/// Reopens a repaired log: nothing more to repair, every event there.
fn assert_reopens_clean(dir: &Path, last: u64, context: &str) {
    let log = open_ok(dir, context);
    assert_eq!(
        log.recovery_report(),
        &RecoveryReport {
            closed_cleanly: true,
            ..RecoveryReport::default()
        },
        "{context}: second open"
    );
    assert_whole(&log, last, context);
    log.close().expect("close");
    assert_verify_clean(dir, context);
}

// ---------------------------------------------------------------------------
// The fixtures, one test each.

/// Byte layout of the base log, as `regenerate_fixtures` prints it: where
/// the records that the fixtures damage lie.
mod base {
    /// Segment 1 (seqs 1..=30) ends here.
    /// Record 12, segment 1, a single event with a JSON payload.
    pub const SEQ_12: u64 = 3271;
    /// Record 13, segment 1: the one that straddles byte 4096.
    pub const SEQ_13: u64 = 3719;
    /// Records 14..=25, segment 1, all starting inside bytes 4096..8192.
    pub const SEQS_14_TO_25: [u64; 12] = [
        4268, 4456, 4709, 4984, 5327, 5752, 6186, 6685, 6903, 7121, 7461, 7823,
    ];
    /// Record 20, segment 1, 499 bytes.
    pub const SEQ_20: u64 = 6186;
    pub const SEQ_20_LEN: u64 = 499;
    /// Record 21, segment 1 (the one after 20).
    pub const SEQ_21: u64 = 6685;
    /// Record 47, active segment, a single event followed by others.
    pub const SEQ_47: u64 = 478;
    /// Record 60, the last of the active segment, 483 bytes.
    pub const SEQ_60: u64 = 4707;
    pub const SEQ_60_LEN: u64 = 483;
}

// Proves that a last record cut short is a torn tail: cut on open, its bytes reported, every earlier event kept, and the log appends again.
#[test]
fn truncated_last_record() {
    let context = "truncated_last_record";
    let (_tmp, dir) = copy_fixture(context);
    let active = seg_path(&dir, ACTIVE);
    let cut = base::SEQ_60 + base::SEQ_60_LEN - 7;
    assert_eq!(file_len(&active), cut);
    // Before recovery the torn record is a problem for `verify`.
    assert_verify_problem(
        &dir,
        &active,
        base::SEQ_60,
        &CorruptKind::Truncated.to_string(),
        context,
    );

    let log = open_ok(&dir, context);
    assert_eq!(
        log.recovery_report(),
        &RecoveryReport {
            torn_tail_bytes: base::SEQ_60_LEN - 7,
            records_dropped: 1,
            dropped_seqs: vec![60],
            cut: Some(evlog::TailCut {
                file: active.clone(),
                offset_start: base::SEQ_60,
                offset_end: base::SEQ_60 + base::SEQ_60_LEN - 7,
                lost_found: evlog::LostFoundCopy {
                    path: Some(dir.join("lost+found/00000000000000000046.seg.at-4707")),
                    bytes_not_kept: 0,
                },
            }),
            ..RecoveryReport::default()
        }
    );
    // The cut bytes were kept, byte for byte.
    let kept = std::fs::read(dir.join("lost+found/00000000000000000046.seg.at-4707"))
        .expect("the copy in lost+found");
    assert_eq!(kept.len() as u64, base::SEQ_60_LEN - 7);
    assert_whole(&log, EVENT_COUNT - 1, context);
    // The slot of the lost event is free again.
    assert_eq!(log.append(event_to_append(60)).expect("append"), 60);
    log.close().expect("close");
    assert_eq!(file_len(&active), base::SEQ_60 + base::SEQ_60_LEN);
    assert_all_indexes_exact(&dir);
    assert_reopens_clean(&dir, EVENT_COUNT, context);
}

// Proves that a sealed segment cut inside record 20 still opens (its index passed its checksum) and fails exactly the reads of records 20..=30, naming the file and offset.
#[test]
fn truncated_sealed_segment() {
    let context = "truncated_sealed_segment";
    let (_tmp, dir) = copy_fixture(context);
    let sealed = seg_path(&dir, SEALED_1);
    assert_eq!(file_len(&sealed), base::SEQ_20 + base::SEQ_20_LEN / 2);
    assert_verify_problem(
        &dir,
        &sealed,
        base::SEQ_20,
        &CorruptKind::Truncated.to_string(),
        context,
    );
    let files = read_tree(&dir);

    let log = open_ok(&dir, context);
    assert_eq!(
        log.recovery_report(),
        &RecoveryReport {
            damaged_segments: vec![(
                sealed.clone(),
                base::SEQ_20,
                CorruptKind::Truncated.to_string()
            )],
            ..RecoveryReport::default()
        }
    );
    assert_eq!(log.last_seq(), Some(EVENT_COUNT));
    assert_gets(&log, (1..=19).chain(31..=EVENT_COUNT), context);
    // `get` finds the index entry past the end of the cut file: the
    // segment is short, at the record's offset.
    let past_end = CorruptKind::Truncated;
    for (seq, offset) in [
        (20, base::SEQ_20),
        (21, base::SEQ_21),
        (25, base::SEQS_14_TO_25[11]),
    ] {
        let error = log.get(seq).expect_err("a record past the cut");
        assert_corrupt(
            error,
            &sealed,
            offset,
            past_end.clone(),
            &format!("{context}, get({seq})"),
        );
    }
    assert_iter_stops_at(
        &log,
        20,
        &sealed,
        base::SEQ_20,
        CorruptKind::Truncated,
        context,
    );
    let after: Vec<_> = log
        .iter(31..)
        .expect("iter")
        .collect::<Result<_, _>>()
        .expect("the segments after the damage");
    assert_eq!(after.len(), 30);
    log.close().expect("close");
    // Nothing was repaired away: the damage is still there to see.
    let mut after_open = read_tree(&dir);
    after_open.remove(ACTIVE_INDEX);
    let mut before = files;
    before.remove(ACTIVE_INDEX);
    assert_eq!(after_open, before, "{context}: files changed");
}

// Proves that the same cut sealed segment without an index (so nothing vouches for records 20..=30) refuses to open with Corrupt Truncated at record 20.
#[test]
fn truncated_sealed_segment_no_index() {
    let context = "truncated_sealed_segment_no_index";
    let (_tmp, dir) = copy_fixture(context);
    let sealed = seg_path(&dir, SEALED_1);
    assert_verify_problem(
        &dir,
        &sealed,
        base::SEQ_20,
        &CorruptKind::Truncated.to_string(),
        context,
    );
    let files = read_tree(&dir);
    let error = open_err(&dir, context);
    assert_corrupt(
        error,
        &sealed,
        base::SEQ_20,
        CorruptKind::Truncated,
        context,
    );
    assert_eq!(read_tree(&dir), files, "{context}: files changed");
}

// Proves that one flipped bit in a sealed record's body (still valid JSON) fails only that record, with RecordChecksum at its offset, and verify reports the same place.
#[test]
fn bitflip_sealed_record_body() {
    let context = "bitflip_sealed_record_body";
    let (_tmp, dir) = copy_fixture(context);
    let sealed = seg_path(&dir, SEALED_1);
    let kind = checksum_kind(&sealed, base::SEQ_12);
    assert_verify_problem(&dir, &sealed, base::SEQ_12, &kind.to_string(), context);

    let log = open_ok(&dir, context);
    assert_eq!(log.recovery_report(), &RecoveryReport::default());
    assert_eq!(log.last_seq(), Some(EVENT_COUNT));
    let error = log.get(12).expect_err("the damaged record");
    assert_corrupt(
        error,
        &sealed,
        base::SEQ_12,
        kind.clone(),
        &format!("{context}, get(12)"),
    );
    assert_gets(&log, (1..=11).chain(13..=EVENT_COUNT), context);
    assert_iter_stops_at(&log, 12, &sealed, base::SEQ_12, kind, context);
    let after: Vec<_> = log
        .iter(13..)
        .expect("iter")
        .collect::<Result<_, _>>()
        .expect("the records after the damage");
    assert_eq!(after.len() as u64, EVENT_COUNT - 12);
}

// Proves that a flipped bit in the active segment followed by valid commit groups is refused as MidLog at the damaged record, and the file is not truncated.
#[test]
fn bitflip_active_before_valid_groups() {
    let context = "bitflip_active_before_valid_groups";
    let (_tmp, dir) = copy_fixture(context);
    let active = seg_path(&dir, ACTIVE);
    // `verify` and open judge by the same code: the same file, offset and kind.
    assert_verify_problem(
        &dir,
        &active,
        base::SEQ_47,
        &CorruptKind::MidLog.to_string(),
        context,
    );
    let files = read_tree(&dir);
    let error = open_err(&dir, context);
    assert_corrupt(error, &active, base::SEQ_47, CorruptKind::MidLog, context);
    assert_eq!(read_tree(&dir), files, "{context}: files changed");
}

// Proves that a zeroed 4 KiB page in a sealed segment fails exactly the records it touches (13 by checksum, 14..=25 whose headers are zeros) and no other.
#[test]
fn zeroed_page_sealed_segment() {
    let context = "zeroed_page_sealed_segment";
    let (_tmp, dir) = copy_fixture(context);
    let sealed = seg_path(&dir, SEALED_1);
    let straddling = checksum_kind(&sealed, base::SEQ_13);
    assert_verify_problem(
        &dir,
        &sealed,
        base::SEQ_13,
        &straddling.to_string(),
        context,
    );

    let log = open_ok(&dir, context);
    assert_eq!(log.recovery_report(), &RecoveryReport::default());
    assert_eq!(log.last_seq(), Some(EVENT_COUNT));
    assert_gets(&log, (1..=12).chain(26..=EVENT_COUNT), context);
    let error = log.get(13).expect_err("record 13 ends inside the page");
    assert_corrupt(
        error,
        &sealed,
        base::SEQ_13,
        straddling.clone(),
        &format!("{context}, get(13)"),
    );
    // A zeroed record header reads as a record of length 0: the segment
    // lost the bytes.
    for (seq, offset) in (14..=25).zip(base::SEQS_14_TO_25) {
        let error = log.get(seq).expect_err("a record inside the page");
        assert_corrupt(
            error,
            &sealed,
            offset,
            CorruptKind::RecordLength(0),
            &format!("{context}, get({seq})"),
        );
    }
    assert_iter_stops_at(&log, 13, &sealed, base::SEQ_13, straddling, context);
    let after: Vec<_> = log
        .iter(26..)
        .expect("iter")
        .collect::<Result<_, _>>()
        .expect("the records after the page");
    assert_eq!(after.len() as u64, EVENT_COUNT - 25);
}

// Proves that a sealed segment whose magic is wrong refuses the open with Corrupt BadMagic at offset 0 of that file (the second one, not the first).
#[test]
fn bad_magic_sealed_segment() {
    let context = "bad_magic_sealed_segment";
    let (_tmp, dir) = copy_fixture(context);
    let sealed = seg_path(&dir, SEALED_2);
    assert_verify_problem(
        &dir,
        &sealed,
        0,
        &CorruptKind::BadMagic.to_string(),
        context,
    );
    let files = read_tree(&dir);
    let error = open_err(&dir, context);
    assert_corrupt(error, &sealed, 0, CorruptKind::BadMagic, context);
    assert_eq!(read_tree(&dir), files, "{context}: files changed");
}

// Proves that an active segment of a future format version (header CRC valid) is refused with UnsupportedVersion, not read as the current one and not repaired.
#[test]
fn future_version_active_segment() {
    let context = "future_version_active_segment";
    let (_tmp, dir) = copy_fixture(context);
    let active = seg_path(&dir, ACTIVE);
    let files = read_tree(&dir);
    match open_err(&dir, context) {
        Error::UnsupportedVersion {
            file,
            found,
            supported,
        } => {
            assert_eq!(file, active);
            assert_eq!(
                (found, supported),
                (
                    crate::common::FUTURE_FORMAT_VERSION,
                    crate::common::FORMAT_VERSION
                )
            );
        }
        other => panic!("{context}: expected UnsupportedVersion, got {other:?}"),
    }
    assert_eq!(read_tree(&dir), files, "{context}: files changed");
    // `verify` reports it as the problem, at the version field.
    match evlog::dump::verify(&dir) {
        Ok(Some(problem)) => {
            assert_eq!((problem.file, problem.offset), (active, 8));
            assert!(problem.what.contains("version"), "{}", problem.what);
        }
        other => panic!("{context}: verify gave {other:?}"),
    }
}

// Proves that a sealed segment header whose CRC does not match refuses the open with Corrupt HeaderChecksum at offset 28 (the CRC field).
#[test]
fn header_crc_sealed_segment() {
    let context = "header_crc_sealed_segment";
    let (_tmp, dir) = copy_fixture(context);
    let sealed = seg_path(&dir, SEALED_1);
    assert_verify_problem(
        &dir,
        &sealed,
        28,
        &CorruptKind::HeaderChecksum.to_string(),
        context,
    );
    let files = read_tree(&dir);
    let error = open_err(&dir, context);
    assert_corrupt(error, &sealed, 28, CorruptKind::HeaderChecksum, context);
    assert_eq!(read_tree(&dir), files, "{context}: files changed");
}

// Proves that a missing middle segment (31..=45) refuses the open with Corrupt Gap, never a silent gap; records what open and verify each report.
#[test]
fn missing_middle_segment() {
    let context = "missing_middle_segment";
    let (_tmp, dir) = copy_fixture(context);
    let active = seg_path(&dir, ACTIVE);
    // `verify` names the segment after the hole, at its first_seq field.
    assert_verify_problem(
        &dir,
        &active,
        16,
        &CorruptKind::Gap {
            expected: 31,
            found: 46,
        }
        .to_string(),
        context,
    );
    let files = read_tree(&dir);
    // Open names it the same way: segment 1 is intact and ends cleanly at
    // 30, so the segment that held 31..=45 is missing.
    let error = open_err(&dir, context);
    assert_corrupt(
        error,
        &active,
        16,
        CorruptKind::Gap {
            expected: 31,
            found: 46,
        },
        context,
    );
    assert_eq!(read_tree(&dir), files, "{context}: files changed");
}

// Proves that a data directory with no index files opens with every event and gets exact indexes back.
#[test]
fn missing_index_files() {
    let context = "missing_index_files";
    let (_tmp, dir) = copy_fixture(context);
    // `verify` checks the indexes that exist; none do.
    assert_verify_clean(&dir, context);
    assert_opens_whole(
        &dir,
        &RecoveryReport {
            indexes_rebuilt: 2,
            ..RecoveryReport::default()
        },
        context,
    );
}

// Proves that garbled indexes (garbage entries under a valid header, or garbage from byte 0) are rebuilt exactly, with every event readable.
#[test]
fn garbled_index_files() {
    let context = "garbled_index_files";
    let (_tmp, dir) = copy_fixture(context);
    assert_verify_problem(
        &dir,
        &seg_path(&dir, SEALED_1_INDEX),
        INDEX_HEADER_BYTES,
        "entry does not match the record offset",
        context,
    );
    assert_opens_whole(
        &dir,
        &RecoveryReport {
            indexes_rebuilt: 2,
            ..RecoveryReport::default()
        },
        context,
    );
}

// Proves that a sealed index of a future version is rebuilt in the current version (an index is derived data), while verify reports it at the version field.
#[test]
fn future_version_index() {
    let context = "future_version_index";
    let (_tmp, dir) = copy_fixture(context);
    let index = seg_path(&dir, SEALED_1_INDEX);
    match evlog::dump::verify(&dir) {
        Ok(Some(problem)) => {
            assert_eq!((problem.file, problem.offset), (index.clone(), 8));
            assert!(problem.what.contains("version"), "{}", problem.what);
        }
        other => panic!("{context}: verify gave {other:?}"),
    }
    assert_opens_whole(
        &dir,
        &RecoveryReport {
            indexes_rebuilt: 1,
            ..RecoveryReport::default()
        },
        context,
    );
}

// Proves that leftover *.tmp files are removed on open and counted in temp_files_removed, with nothing else changed.
#[test]
fn stray_tmp_files() {
    let context = "stray_tmp_files";
    let (_tmp, dir) = copy_fixture(context);
    let tmp_files = [
        "00000000000000000001.idx.tmp",
        "00000000000000000061.seg.tmp",
    ];
    for name in tmp_files {
        assert!(seg_path(&dir, name).exists(), "{context}: {name}");
    }
    // `verify` ignores files that are not segments.
    assert_verify_clean(&dir, context);
    let log = open_ok(&dir, context);
    assert_eq!(
        log.recovery_report(),
        &RecoveryReport {
            temp_files_removed: 2,
            ..RecoveryReport::default()
        }
    );
    assert_whole(&log, EVENT_COUNT, context);
    log.close().expect("close");
    for name in tmp_files {
        assert!(!seg_path(&dir, name).exists(), "{context}: {name} left");
    }
    assert_eq!(log_segment_names(&dir), base_file_names());
    assert_all_indexes_exact(&dir);
    assert_reopens_clean(&dir, EVENT_COUNT, context);
}

// Proves that an index file without its segment is removed on open and counted in orphan_indexes_removed.
#[test]
fn orphan_index_file() {
    let context = "orphan_index_file";
    let (_tmp, dir) = copy_fixture(context);
    let orphan = seg_path(&dir, "00000000000000000061.idx");
    assert!(orphan.exists());
    assert_verify_clean(&dir, context);
    let log = open_ok(&dir, context);
    assert_eq!(
        log.recovery_report(),
        &RecoveryReport {
            orphan_indexes_removed: 1,
            ..RecoveryReport::default()
        }
    );
    assert_whole(&log, EVENT_COUNT, context);
    log.close().expect("close");
    assert!(!orphan.exists(), "{context}: the orphan is still there");
    assert_eq!(log_segment_names(&dir), base_file_names());
    assert_reopens_clean(&dir, EVENT_COUNT, context);
}

fn log_segment_names(dir: &Path) -> Vec<String> {
    read_tree(dir).into_keys().collect()
}

fn base_file_names() -> Vec<String> {
    let mut names: Vec<String> = [
        SEALED_1,
        SEALED_1_INDEX,
        SEALED_2,
        SEALED_2_INDEX,
        ACTIVE,
        ACTIVE_INDEX,
    ]
    .map(String::from)
    .to_vec();
    names.sort();
    names
}

// Proves that the corpus is what the README and the tests say: exactly the listed fixtures, each a small data directory with no LOCK (or, for archive_v1, archive files only), under 1 MB in all.
#[test]
fn corpus_is_complete_and_small() {
    let root = fixtures_root();
    let readme = std::fs::read_to_string(root.join("README.md")).expect("tests/fixtures/README.md");
    let mut found = Vec::new();
    let mut total = 0;
    for entry in std::fs::read_dir(&root).expect("read tests/fixtures") {
        let entry = entry.expect("directory entry");
        let name = entry.file_name().into_string().expect("a UTF-8 name");
        if !entry.path().is_dir() {
            total += file_len(&entry.path());
            continue;
        }
        let top: Vec<String> = std::fs::read_dir(entry.path())
            .expect("read a fixture")
            .map(|e| e.expect("entry").file_name().into_string().expect("UTF-8"))
            .collect();
        if name.starts_with("archive_") {
            // Archive fixtures (tests/suite/archive_file.rs) are archive
            // files alone, as in a copied DIR/archive/.
            assert!(
                !top.is_empty() && top.iter().all(|f| f.ends_with(".evz")),
                "{name}: only .evz files"
            );
        } else {
            assert_eq!(top, ["segments"], "{name}: only a segments directory");
        }
        let bytes: u64 = if name.starts_with("archive_") {
            top.iter().map(|f| file_len(&entry.path().join(f))).sum()
        } else {
            read_tree(&entry.path())
                .values()
                .map(|b| b.len() as u64)
                .sum()
        };
        assert!(bytes <= FIXTURE_BYTES_MAX, "{name} is {bytes} bytes");
        assert!(
            readme.contains(&format!("`{name}`")),
            "README.md does not list {name}"
        );
        total += bytes;
        found.push(name);
    }
    found.sort();
    let mut listed = FIXTURES.map(String::from).to_vec();
    listed.push("archive_v1".into());
    listed.sort();
    assert_eq!(found, listed, "fixture directories");
    assert!(total < CORPUS_BYTES_MAX, "the corpus is {total} bytes");
}

// ---------------------------------------------------------------------------
// The generator.

/// The records of the base log: (segment file name, record).
struct Layout {
    records: Vec<(&'static str, RecordPos)>,
}

impl Layout {
    fn record(&self, seq: u64) -> (&'static str, RecordPos) {
        let (name, record) = self.records[seq as usize - 1];
        assert_eq!(record.seq, seq);
        (name, record)
    }

    /// A single-event record (its own commit group).
    fn single(&self, seq: u64) -> (&'static str, RecordPos) {
        let (name, record) = self.record(seq);
        assert_eq!(
            (record.group_index, record.group_count),
            (0, 1),
            "seq {seq}"
        );
        (name, record)
    }
}

/// A segment header as FORMAT.md describes it.
fn segment_header(first_seq: u64) -> Vec<u8> {
    let mut header = Vec::with_capacity(SEGMENT_HEADER_BYTES as usize);
    header.extend_from_slice(b"EVLOGSEG");
    header.extend_from_slice(&crate::common::FIXTURE_FORMAT_VERSION.to_le_bytes());
    header.extend_from_slice(&32u32.to_le_bytes());
    header.extend_from_slice(&first_seq.to_le_bytes());
    header.extend_from_slice(&0u32.to_le_bytes());
    let crc = crc32fast::hash(&header);
    header.extend_from_slice(&crc.to_le_bytes());
    header
}

/// Writes the base log into `dir` and returns its layout.
fn write_base(dir: &Path) -> Layout {
    let log = Log::open(dir, fixture_options()).expect("open the base");
    let mut seq = 1;
    while seq <= EVENT_COUNT {
        match BATCHES.iter().find(|(first, _)| *first == seq) {
            Some(&(first, last)) => {
                let events: Vec<Event> = (first..=last).map(event_to_append).collect();
                let seqs = log.append_batch(&events).expect("append a batch");
                assert_eq!(seqs, first..last + 1);
                seq = last + 1;
            }
            None => {
                assert_eq!(log.append(event_to_append(seq)).expect("append"), seq);
                seq += 1;
            }
        }
    }
    log.close().expect("close the base");

    // Split the one segment at commit-group boundaries.
    let whole_path = seg_path(dir, SEALED_1);
    let whole = std::fs::read(&whole_path).expect("read the segment");
    let all = records(&whole_path);
    assert_eq!(all.len() as u64, EVENT_COUNT);
    assert_eq!(all.last().map(RecordPos::end), Some(whole.len() as u64));
    std::fs::remove_file(seg_path(dir, SEALED_1_INDEX)).expect("remove the index");
    let names = [SEALED_1, SEALED_2, ACTIVE];
    let mut layout = Layout {
        records: Vec::new(),
    };
    for (k, &first) in SEGMENT_FIRST_SEQS.iter().enumerate() {
        let start = all[first as usize - 1];
        assert_eq!(start.group_index, 0, "segment {first} starts a group");
        let stop = SEGMENT_FIRST_SEQS
            .get(k + 1)
            .map_or(whole.len() as u64, |&next| all[next as usize - 1].offset);
        let mut bytes = segment_header(first);
        bytes.extend_from_slice(&whole[start.offset as usize..stop as usize]);
        std::fs::write(seg_path(dir, names[k]), &bytes).expect("write a segment");
        for record in records(&seg_path(dir, names[k])) {
            layout.records.push((names[k], record));
        }
    }
    assert_eq!(layout.records.len() as u64, EVENT_COUNT);

    // The library writes the indexes: sealed ones are rebuilt from a scan.
    let log = open_ok(dir, "base, first open");
    assert_eq!(
        log.recovery_report(),
        &RecoveryReport {
            indexes_rebuilt: 2,
            ..RecoveryReport::default()
        }
    );
    assert_eq!(log.segment_count(), 3);
    assert_whole(&log, EVENT_COUNT, "base");
    log.close().expect("close");
    std::fs::remove_file(dir.join("LOCK")).expect("remove LOCK");
    assert_all_indexes_exact(dir);
    assert_verify_clean(dir, "base");
    // A second open changes no byte.
    let files = read_tree(dir);
    assert_reopens_clean(dir, EVENT_COUNT, "base, second open");
    std::fs::remove_file(dir.join("LOCK")).expect("remove LOCK");
    assert_eq!(read_tree(dir), files, "base changed on reopen");
    layout
}

type Damage = fn(&Path, &Layout);

/// How each fixture is made from a copy of the base (`segments` is the
/// fixture's segments directory).
fn damage_of(name: &str) -> Damage {
    match name {
        "truncated_last_record" => |segments, layout| {
            // The last 7 bytes of the last record never reached the disk.
            let (file, last) = layout.single(EVENT_COUNT);
            truncate(&segments.join(file), last.end() - 7);
        },
        "truncated_sealed_segment" => |segments, layout| {
            let (file, record) = layout.single(20);
            truncate(&segments.join(file), record.offset + record.len / 2);
        },
        "truncated_sealed_segment_no_index" => |segments, layout| {
            let (file, record) = layout.single(20);
            truncate(&segments.join(file), record.offset + record.len / 2);
            std::fs::remove_file(segments.join(SEALED_1_INDEX)).expect("remove");
        },
        "bitflip_sealed_record_body" => |segments, layout| {
            // 'x' becomes 'y' inside the JSON payload: still valid JSON, so
            // only the CRC can tell.
            let (file, record) = layout.single(12);
            flip_byte(&segments.join(file), record.end() - 4, 0x01);
        },
        "bitflip_active_before_valid_groups" => |segments, layout| {
            let (file, record) = layout.single(47);
            flip_byte(&segments.join(file), record.end() - 4, 0x01);
        },
        "zeroed_page_sealed_segment" => |segments, _| {
            write_at(&segments.join(SEALED_1), 4096, &[0u8; 4096]);
        },
        "bad_magic_sealed_segment" => |segments, _| {
            write_at(&segments.join(SEALED_2), 0, b"XVLOGSEG");
        },
        "future_version_active_segment" => |segments, _| {
            edit_header(&segments.join(ACTIVE), |h| {
                h[8..12].copy_from_slice(&crate::common::FUTURE_FORMAT_VERSION.to_le_bytes())
            });
        },
        "header_crc_sealed_segment" => |segments, _| {
            flip_byte(&segments.join(SEALED_1), 28, 0xFF);
        },
        "missing_middle_segment" => |segments, _| {
            std::fs::remove_file(segments.join(SEALED_2)).expect("remove");
            std::fs::remove_file(segments.join(SEALED_2_INDEX)).expect("remove");
        },
        "missing_index_files" => |segments, _| {
            for index in [SEALED_1_INDEX, SEALED_2_INDEX, ACTIVE_INDEX] {
                std::fs::remove_file(segments.join(index)).expect("remove");
            }
        },
        "garbled_index_files" => |segments, _| {
            let mut rng = Rng::new(0xF1C5_0001);
            // Sealed 1: valid header, garbage entries.
            let path = segments.join(SEALED_1_INDEX);
            let entries = (file_len(&path) - INDEX_HEADER_BYTES) as usize;
            write_at(&path, INDEX_HEADER_BYTES, &rng.bytes(entries));
            // Sealed 2: garbage from the first byte.
            let path = segments.join(SEALED_2_INDEX);
            std::fs::write(&path, rng.bytes(file_len(&path) as usize)).expect("write");
            // Active: valid header, garbage entries.
            let path = segments.join(ACTIVE_INDEX);
            let entries = (file_len(&path) - INDEX_HEADER_BYTES) as usize;
            write_at(&path, INDEX_HEADER_BYTES, &rng.bytes(entries));
        },
        "future_version_index" => |segments, _| {
            edit_header(&segments.join(SEALED_1_INDEX), |h| {
                h[8..12].copy_from_slice(&crate::common::FUTURE_FORMAT_VERSION.to_le_bytes())
            });
        },
        "stray_tmp_files" => |segments, _| {
            // A crash while creating segment 61 (its header written, not yet
            // renamed) and while rewriting an index (half written).
            std::fs::write(
                segments.join("00000000000000000061.seg.tmp"),
                segment_header(61),
            )
            .expect("write");
            let index = std::fs::read(segments.join(SEALED_1_INDEX)).expect("read");
            std::fs::write(
                segments.join("00000000000000000001.idx.tmp"),
                &index[..index.len() / 2],
            )
            .expect("write");
        },
        "orphan_index_file" => |segments, _| {
            // The index of an active segment 61 whose segment file is gone.
            let mut index = std::fs::read(segments.join(ACTIVE_INDEX)).expect("read");
            index.truncate(INDEX_HEADER_BYTES as usize);
            index[16..24].copy_from_slice(&61u64.to_le_bytes());
            let crc = crc32fast::hash(&index[..28]);
            index[28..32].copy_from_slice(&crc.to_le_bytes());
            std::fs::write(segments.join("00000000000000000061.idx"), &index).expect("write");
        },
        other => panic!("no damage for fixture {other}"),
    }
}

// Proves nothing by itself: it rewrites tests/fixtures (run it with
// `cargo test --release --test suite -- --ignored regenerate`).
#[test]
#[ignore = "rewrites the checked-in corpus under tests/fixtures"]
fn regenerate_fixtures() {
    let work = tempdir();
    let base = work.path().join("base");
    let layout = write_base(&base);
    println!("base layout (segment, seq, offset, length, group):");
    for (name, r) in &layout.records {
        println!(
            "  {name} seq {:2} @{:5} len {:3} group {}/{}",
            r.seq, r.offset, r.len, r.group_index, r.group_count
        );
    }
    for (name, bytes) in read_tree(&base) {
        println!("  {name}: {} bytes", bytes.len());
    }
    let root = fixtures_root();
    for name in FIXTURES {
        let dest = root.join(name);
        if dest.exists() {
            std::fs::remove_dir_all(&dest).expect("remove the old fixture");
        }
        let segments = dest.join("segments");
        std::fs::create_dir_all(&segments).expect("create the fixture");
        for (file, bytes) in read_tree(&base) {
            std::fs::write(segments.join(file), bytes).expect("write a file");
        }
        damage_of(name)(&segments, &layout);
        println!("wrote {}", dest.display());
    }
}
