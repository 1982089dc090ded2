//! Seed corpora made from real files: logs written by `evlog` itself, then
//! cut into the inputs of each target.

use std::path::{Path, PathBuf};

use evlog::{Event, Log, Options, Payload, Priority};

use crate::open_dir::pack;
use crate::{
    fix_segment_crcs, index_file, segment_header, HEADER_BYTES, MODE_FIX_CRCS, MODE_FIX_LENGTH,
    RECORD_HEADER_BYTES,
};

const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

/// Events covering every field, every payload kind and every varint width.
pub fn sample_events() -> Vec<Event> {
    let uuid = |n: u128| uuid::Uuid::from_u128(0x0190_0000_0000_7000_8000_0000_0000_0000 | n);
    vec![
        Event::new("a"),
        Event::new("task.created")
            .entity("task", "T-1")
            .actor("agent-7")
            .json_payload(&serde_json_value())
            .expect("serializable"),
        Event::new("task.status_changed")
            .id(uuid(1))
            .timestamp_us(-1)
            .correlation_id(uuid(2))
            .causation_id(uuid(3))
            .entity("task", "T-1")
            .actor("agent-7")
            .session("s-42")
            .priority(Priority::P0)
            .traceparent(TRACEPARENT)
            .metadata("k1", "v1")
            .metadata("k2", "")
            .metadata("ключ", "значение")
            .payload(Payload::Json("{\"status\":\"done\"}".into())),
        // The extremes append accepts (years 1 and 9999): 8-byte varints.
        Event::new("blob.stored")
            .timestamp_us(evlog::TIMESTAMP_US_MAX)
            .priority(Priority::P3)
            .bytes_payload((0..=255u8).chain(0..=60).collect::<Vec<u8>>()),
        Event::new("negative.time").timestamp_us(evlog::TIMESTAMP_US_MIN),
        Event::new("user.signed_up").session("é").metadata("x", "y"),
    ]
}

fn serde_json_value() -> std::collections::BTreeMap<&'static str, i64> {
    [("a", 1), ("b", -2)].into_iter().collect()
}

/// A data directory written by the library, and the segment/index files
/// in it (read back after close).
pub struct WrittenLog {
    pub dir: tempfile::TempDir,
    pub segments: Vec<(PathBuf, Vec<u8>)>,
    pub indexes: Vec<(PathBuf, Vec<u8>)>,
}

fn read_files(dir: &Path, suffix: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let mut files: Vec<_> = std::fs::read_dir(dir.join("segments"))
        .expect("read segments dir")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.to_string_lossy().ends_with(suffix))
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|p| {
            let bytes = std::fs::read(&p).expect("read data file");
            (p, bytes)
        })
        .collect()
}

/// Writes `batches` (each an atomic batch; single-event batches are plain
/// appends) into a new log and closes it.
pub fn write_log(options: Options, batches: &[Vec<Event>]) -> WrittenLog {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = Log::open(dir.path(), options).expect("open a fresh log");
    for batch in batches {
        if let [one] = batch.as_slice() {
            log.append(one.clone()).expect("append");
        } else {
            log.append_batch(batch).expect("append_batch");
        }
    }
    log.close().expect("close");
    let segments = read_files(dir.path(), ".seg");
    let indexes = read_files(dir.path(), ".idx");
    WrittenLog {
        dir,
        segments,
        indexes,
    }
}

/// One record found by walking a segment.
pub struct Found {
    pub offset: usize,
    pub seq: u64,
    pub bytes: Vec<u8>,
}

/// Walks the records of a well-formed segment (no CRC checks: the files
/// are the library's own).
pub fn records(segment: &[u8]) -> Vec<Found> {
    let mut out = Vec::new();
    let mut pos = HEADER_BYTES;
    while pos + RECORD_HEADER_BYTES <= segment.len() {
        let field = |at: usize, n: usize| {
            segment[pos + at..pos + at + n]
                .iter()
                .rev()
                .fold(0u64, |acc, &b| (acc << 8) | u64::from(b))
        };
        let body_len = field(0, 4) as usize;
        if body_len == 0 {
            break;
        }
        let end = pos + RECORD_HEADER_BYTES + body_len;
        assert!(end <= segment.len(), "seed segment has a torn record");
        out.push(Found {
            offset: pos,
            seq: field(8, 8),
            bytes: segment[pos..end].to_vec(),
        });
        pos = end;
    }
    out
}

/// All seed inputs, by target name.
pub fn all_seeds() -> Vec<(&'static str, Vec<Vec<u8>>)> {
    let events = sample_events();
    // One plain append per event, then two batches (commit groups > 1).
    let small = events;
    let mut batches: Vec<Vec<Event>> = small.iter().map(|e| vec![e.clone()]).collect();
    batches.push(small[..3].to_vec());
    batches.push(vec![small[0].clone(), small[4].clone()]);
    let one_segment = write_log(Options::default().preallocate_bytes(0), &batches);
    let (_, seg) = &one_segment.segments[0];
    let recs = records(seg);
    let seg_version = crate::header_version(seg);
    let idx_version = crate::header_version(&one_segment.indexes[0].1);
    assert_eq!(recs.len(), small.len() + 5, "seed log record count");

    // decode_body: every body the library wrote.
    let bodies: Vec<Vec<u8>> = recs
        .iter()
        .map(|r| r.bytes[RECORD_HEADER_BYTES..].to_vec())
        .collect();

    // decode_record: framed records, raw and with the repair modes.
    let mut record_inputs = Vec::new();
    for r in &recs {
        for mode in [0, MODE_FIX_CRCS, MODE_FIX_CRCS | MODE_FIX_LENGTH] {
            let mut input = vec![mode];
            input.extend_from_slice(&r.bytes);
            record_inputs.push(input);
        }
    }

    // Header targets: the library's segment header and indexes.
    let with_modes = |bytes: &[u8]| -> Vec<Vec<u8>> {
        [0, MODE_FIX_CRCS]
            .iter()
            .map(|&m| {
                let mut input = vec![m];
                input.extend_from_slice(bytes);
                input
            })
            .collect()
    };
    let mut segment_headers = with_modes(&seg[..HEADER_BYTES]);
    segment_headers.extend(with_modes(&segment_header(seg_version, 1 << 62)));
    let mut index_headers = Vec::new();
    for (_, idx) in &one_segment.indexes {
        index_headers.extend(with_modes(&idx[..HEADER_BYTES.min(idx.len())]));
    }
    let offsets: Vec<u64> = recs.iter().map(|r| r.offset as u64).collect();
    index_headers.extend(with_modes(&index_file(idx_version, 1, &offsets, true)));
    index_headers.extend(with_modes(&index_file(idx_version, 7, &[], false)));

    // open_dir: whole directories.
    let mut dirs = Vec::new();
    // The log as written, and with zeros after it (preallocation).
    dirs.push(pack(0, seg, &[], &[], &[]));
    let mut zero_tail = seg.clone();
    zero_tail.extend_from_slice(&[0; 300]);
    dirs.push(pack(0, &zero_tail, &[], &[], &[]));
    // An empty log: only a header.
    dirs.push(pack(0, &seg[..HEADER_BYTES], &[], &[], &[]));
    // A torn tail: cut inside the last record; and an incomplete commit
    // group: cut after the first record of the last batch.
    let last = recs.last().expect("records");
    dirs.push(pack(MODE_FIX_CRCS, &seg[..last.offset + 30], &[], &[], &[]));
    dirs.push(pack(0, &seg[..last.offset], &[], &[], &[]));
    // Two segments, split at a commit-group boundary (records 1..=6 are
    // single appends), with the first sealed (with and without its index)
    // and the second active.
    let split = &recs[3];
    let seg_a = &seg[..split.offset];
    let mut seg_b = segment_header(seg_version, split.seq);
    seg_b.extend_from_slice(&seg[split.offset..]);
    let offsets_a: Vec<u64> = recs
        .iter()
        .take_while(|r| r.offset < split.offset)
        .map(|r| r.offset as u64)
        .collect();
    let idx_a = index_file(idx_version, 1, &offsets_a, true);
    let idx_b_active = index_file(idx_version, split.seq, &[HEADER_BYTES as u64], false);
    dirs.push(pack(0, seg_a, &seg_b, &idx_a, &[]));
    dirs.push(pack(0, seg_a, &seg_b, &[], &[]));
    dirs.push(pack(0, seg_a, &seg_b, &idx_a, &idx_b_active));
    // A sealed segment whose data is damaged but whose index is intact.
    let mut damaged_a = seg_a.to_vec();
    damaged_a[HEADER_BYTES + 30] ^= 0x40;
    dirs.push(pack(0, &damaged_a, &seg_b, &idx_a, &[]));
    // A log that starts late (first_seq of 1000), named from its header.
    let mut late = segment_header(seg_version, 1000);
    for (i, r) in recs.iter().take(3).enumerate() {
        let mut bytes = r.bytes.clone();
        bytes[8..16].copy_from_slice(&(1000 + i as u64).to_le_bytes());
        late.extend_from_slice(&bytes);
    }
    fix_segment_crcs(&mut late);
    dirs.push(pack(
        crate::open_dir::MODE_NAME_FROM_HEADER,
        &late,
        &[],
        &[],
        &[],
    ));

    // A log rolled by the library itself: small segments, records big
    // enough to fill one in a few appends.
    let rolled_events: Vec<Vec<Event>> = (0..60)
        .map(|i| {
            vec![Event::new("roll.test")
                .id(uuid::Uuid::from_u128(i))
                .timestamp_us(i as i64)
                .bytes_payload(vec![i as u8; 1500])]
        })
        .collect();
    let rolled = write_log(
        Options::default()
            .preallocate_bytes(0)
            .segment_bytes_max(evlog::SEGMENT_BYTES_MIN),
        &rolled_events,
    );
    assert!(
        rolled.segments.len() >= 2,
        "the rolled seed log did not roll"
    );
    let index_of = |seg_path: &Path| {
        rolled
            .indexes
            .iter()
            .find(|(p, _)| p == &seg_path.with_extension("idx"))
            .map(|(_, b)| b.clone())
            .unwrap_or_default()
    };
    let (p0, s0) = &rolled.segments[0];
    let (p1, s1) = &rolled.segments[1];
    dirs.push(pack(0, s0, s1, &index_of(p0), &index_of(p1)));
    for (_, s) in &rolled.segments {
        segment_headers.extend(with_modes(&s[..HEADER_BYTES]));
    }
    for (_, i) in &rolled.indexes {
        index_headers.extend(with_modes(&i[..HEADER_BYTES.min(i.len())]));
    }

    vec![
        ("decode_body", bodies),
        ("decode_record", record_inputs),
        ("decode_segment_header", segment_headers),
        ("decode_index_header", index_headers),
        ("open_dir", dirs),
    ]
}

/// Writes the seeds into `corpus_root/<target>/seed-<n>`.
pub fn write_seeds(corpus_root: &Path) -> std::io::Result<Vec<(&'static str, usize)>> {
    let mut written = Vec::new();
    for (target, inputs) in all_seeds() {
        let dir = corpus_root.join(target);
        std::fs::create_dir_all(&dir)?;
        for (n, input) in inputs.iter().enumerate() {
            std::fs::write(dir.join(format!("seed-{n:03}")), input)?;
        }
        written.push((target, inputs.len()));
    }
    Ok(written)
}
