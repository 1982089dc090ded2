//! Shared code of the `evlog` fuzz targets: the few format facts the
//! targets need to repair checksums (so that mutations get past the CRCs
//! and reach the decoders behind them), the whole-directory open harness,
//! the oracles the targets check, and the seed corpus generator.
//!
//! The format facts here are written from FORMAT.md, independently of the
//! crate's own encoders, so that a seed built here also checks that the
//! description and the code agree.

use std::path::{Path, PathBuf};

use evlog::{Event, LoggedEvent};

/// Segment file header: magic, version, header_bytes, first_seq, reserved, CRC.
pub const SEGMENT_MAGIC: &[u8; 8] = b"EVLOGSEG";
/// Index file header: magic, version, sealed, first_seq, entries_crc, CRC.
pub const INDEX_MAGIC: &[u8; 8] = b"EVLOGIDX";
pub const HEADER_BYTES: usize = 32;
pub const HEADER_CRC_AT: usize = 28;
pub const RECORD_HEADER_BYTES: usize = 24;
pub const BODY_BYTES_MIN: usize = 29;

/// Separates the files packed into one `open_dir` input. Chosen to be
/// unlikely inside real data, and listed in `open_dir.dict` so the fuzzer
/// can insert it.
pub const SPLIT: &[u8] = b"#EVLOG-FUZZ-SPLIT#";

/// Leading mode byte of the targets that take one: repair checksums first.
pub const MODE_FIX_CRCS: u8 = 1;
/// `decode_record` only: also set `body_len` to the bytes present.
pub const MODE_FIX_LENGTH: u8 = 2;

fn u32_le(bytes: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(bytes.get(at..at + 4)?.try_into().ok()?))
}

fn u64_le(bytes: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(bytes.get(at..at + 8)?.try_into().ok()?))
}

/// Rewrites the CRC of a 32-byte file header (segment or index): bytes
/// 28..32 hold the CRC-32 of bytes 0..28.
pub fn fix_header_crc(bytes: &mut [u8]) {
    if bytes.len() >= HEADER_BYTES {
        let crc = crc32fast::hash(&bytes[..HEADER_CRC_AT]);
        bytes[HEADER_CRC_AT..HEADER_BYTES].copy_from_slice(&crc.to_le_bytes());
    }
}

/// Rewrites the CRC of one framed record: bytes 4..8 hold the CRC-32 of
/// bytes 0..4 and 8..end (the rest of the header and the body).
pub fn fix_record_crc(record: &mut [u8]) {
    if record.len() >= RECORD_HEADER_BYTES {
        let mut hasher = crc32fast::Hasher::new();
        hasher.update(&record[..4]);
        hasher.update(&record[8..]);
        let crc = hasher.finalize();
        record[4..8].copy_from_slice(&crc.to_le_bytes());
    }
}

/// Repairs the header CRC of a segment and the CRC of every record that
/// its length field frames, from the first record until a length does not
/// fit or a zeroed header.
pub fn fix_segment_crcs(bytes: &mut [u8]) {
    fix_header_crc(bytes);
    let mut pos = HEADER_BYTES;
    while pos + RECORD_HEADER_BYTES <= bytes.len() {
        if bytes[pos..pos + RECORD_HEADER_BYTES]
            .iter()
            .all(|&b| b == 0)
        {
            break;
        }
        let body_len = u32_le(bytes, pos).unwrap_or(0) as usize;
        let end = pos + RECORD_HEADER_BYTES + body_len;
        if body_len < BODY_BYTES_MIN || end > bytes.len() {
            break;
        }
        fix_record_crc(&mut bytes[pos..end]);
        pos = end;
    }
}

/// Repairs an index: the entries CRC of a sealed index (over every whole
/// entry present), then the header CRC.
pub fn fix_index_crcs(bytes: &mut [u8]) {
    if bytes.len() < HEADER_BYTES {
        return;
    }
    if u32_le(bytes, 12) == Some(1) {
        let entries_end = HEADER_BYTES + (bytes.len() - HEADER_BYTES) / 8 * 8;
        let crc = crc32fast::hash(&bytes[HEADER_BYTES..entries_end]);
        bytes[24..28].copy_from_slice(&crc.to_le_bytes());
    }
    fix_header_crc(bytes);
}

/// The format version in a file header written by the library (bytes
/// 8..12), so that the headers built here follow the version in force.
pub fn header_version(header: &[u8]) -> u32 {
    u32_le(header, 8).unwrap_or(0)
}

/// A segment header as FORMAT.md describes it.
pub fn segment_header(version: u32, first_seq: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_BYTES);
    out.extend_from_slice(SEGMENT_MAGIC);
    out.extend_from_slice(&version.to_le_bytes());
    out.extend_from_slice(&32u32.to_le_bytes());
    out.extend_from_slice(&first_seq.to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes());
    out.extend_from_slice(&[0; 4]);
    fix_header_crc(&mut out);
    out
}

/// An index file as FORMAT.md describes it: sealed (with the entries CRC)
/// or active.
pub fn index_file(version: u32, first_seq: u64, offsets: &[u64], sealed: bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_BYTES + offsets.len() * 8);
    out.extend_from_slice(INDEX_MAGIC);
    out.extend_from_slice(&version.to_le_bytes());
    out.extend_from_slice(&u32::from(sealed).to_le_bytes());
    out.extend_from_slice(&first_seq.to_le_bytes());
    out.extend_from_slice(&[0; 8]);
    for offset in offsets {
        out.extend_from_slice(&offset.to_le_bytes());
    }
    fix_index_crcs(&mut out);
    out
}

/// Splits an input on [`SPLIT`] into at most `max` parts.
pub fn split_parts(data: &[u8], max: usize) -> Vec<&[u8]> {
    let mut parts = Vec::new();
    let mut rest = data;
    while parts.len() + 1 < max {
        match rest.windows(SPLIT.len()).position(|w| w == SPLIT) {
            Some(at) => {
                parts.push(&rest[..at]);
                rest = &rest[at + SPLIT.len()..];
            }
            None => break,
        }
    }
    parts.push(rest);
    parts
}

/// Builds an event carrying every field of `event`, for re-encoding.
pub fn to_event(event: &LoggedEvent) -> Event {
    let mut e = Event::new(event.event_type.clone())
        .id(event.id)
        .timestamp_us(event.timestamp_us)
        .priority(event.priority)
        .payload(event.payload.clone());
    if let Some(id) = event.correlation_id {
        e = e.correlation_id(id);
    }
    if let Some(id) = event.causation_id {
        e = e.causation_id(id);
    }
    if let Some(entity) = &event.entity {
        e = e.entity(entity.entity_type.clone(), entity.entity_id.clone());
    }
    if let Some(actor) = &event.actor {
        e = e.actor(actor.clone());
    }
    if let Some(session) = &event.session {
        e = e.session(session.clone());
    }
    if let Some(traceparent) = &event.traceparent {
        e = e.traceparent(traceparent.clone());
    }
    for (k, v) in &event.metadata {
        e = e.metadata(k.clone(), v.clone());
    }
    e
}

/// Oracle: a decoded body re-encoded by the crate's encoder decodes to the
/// same event (the hand-written decoder and encoder agree).
pub fn check_round_trip(event: &LoggedEvent) {
    let mut body = Vec::new();
    evlog::bench_api::encode_body(&to_event(event), &mut body);
    match evlog::fuzz_api::decode_body(&body) {
        Ok(mut again) => {
            again.seq = event.seq;
            assert_eq!(&again, event, "re-encoded body decodes differently");
        }
        Err(e) => panic!("re-encoded body of a decoded event does not decode: {e}"),
    }
}

/// Where `open_dir` makes its directories: `EVLOG_FUZZ_TMPDIR`, else
/// /dev/shm when present (no disk I/O, and fsync is free), else the
/// system temporary directory.
pub fn scratch_base() -> PathBuf {
    if let Some(dir) = std::env::var_os("EVLOG_FUZZ_TMPDIR") {
        return PathBuf::from(dir);
    }
    let shm = Path::new("/dev/shm");
    if shm.is_dir() {
        shm.to_path_buf()
    } else {
        std::env::temp_dir()
    }
}

pub mod open_dir;
pub mod seeds;
