//! Record framing and the encoding of an event body.
//!
//! A record is a 24-byte header followed by the body (see FORMAT.md):
//!
//! ```text
//! 0   body_len         u32  bytes of body
//! 4   crc32            u32  CRC-32 (IEEE) of bytes 0..4, 8..24 and the body
//! 8   seq              u64  sequence number
//! 16  unit_remaining   u32  records after this one in its atomic unit
//! 20  synced_delta     u32  seq minus the highest seq that was durable
//!                           when this record was written (saturating)
//! 24  body
//! ```
//!
//! An atomic unit is the records of one append request (one `append`, or
//! one `append_batch`). A unit is all-or-nothing on recovery, which is what
//! makes `append_batch` atomic; the writer may put many units into one
//! `write` (a commit group), and damage at the end of that write costs only
//! the units it touches. `synced_delta` lets
//! recovery tell a torn unsynced tail (cut it) from damage to data that was
//! already durable when later records were written (refuse to cut it).

#[cfg(test)]
use serde::Deserialize;
use serde::Serialize;
use uuid::Uuid;

use crate::codec::{put_u32, put_u64, u32_at, u64_at};
use crate::error::CorruptKind;
use crate::event::{Entity, Event, LoggedEvent, Payload, Priority};
use crate::options::RECORD_BYTES_LIMIT;

pub(crate) const RECORD_HEADER_BYTES: usize = 24;
const CRC_AT: usize = 4;
const SEQ_AT: usize = 8;
const UNIT_REMAINING_AT: usize = 16;
const SYNCED_DELTA_AT: usize = 20;
const _: () = assert!(SYNCED_DELTA_AT + 4 == RECORD_HEADER_BYTES);

/// A body can never be shorter than this: 16-byte id, 1-byte timestamp,
/// 2-byte type, 6 absent-option tags, priority, metadata count, payload
/// kind and payload length. Also bounds how many index entries a segment
/// can need.
pub(crate) const BODY_BYTES_MIN: usize = 29;
pub(crate) const RECORD_BYTES_MIN: usize = RECORD_HEADER_BYTES + BODY_BYTES_MIN;

const PAYLOAD_EMPTY: u8 = 0;
const PAYLOAD_JSON: u8 = 1;
const PAYLOAD_BYTES: u8 = 2;

/// The fixed bincode configuration of record bodies: little-endian,
/// variable-length integers, and a hard allocation limit so that a damaged
/// length prefix cannot make the decoder allocate more than a record can hold.
fn bincode_config() -> impl bincode::config::Config {
    bincode::config::standard()
        .with_little_endian()
        .with_variable_int_encoding()
        .with_limit::<{ RECORD_BYTES_LIMIT as usize }>()
}

/// The body as encoded, field by field in FORMAT.md order.
#[derive(Serialize)]
struct BodyRef<'a> {
    id: [u8; 16],
    timestamp_us: i64,
    event_type: &'a str,
    correlation_id: Option<[u8; 16]>,
    causation_id: Option<[u8; 16]>,
    entity: Option<(&'a str, &'a str)>,
    actor: Option<&'a str>,
    session: Option<&'a str>,
    priority: u8,
    traceparent: Option<&'a str>,
    metadata: Vec<(&'a str, &'a str)>,
    payload_kind: u8,
    #[serde(with = "serde_bytes_field")]
    payload: &'a [u8],
}

#[cfg(test)]
#[derive(Deserialize)]
struct BodyOwned {
    id: [u8; 16],
    timestamp_us: i64,
    event_type: String,
    correlation_id: Option<[u8; 16]>,
    causation_id: Option<[u8; 16]>,
    entity: Option<(String, String)>,
    actor: Option<String>,
    session: Option<String>,
    priority: u8,
    traceparent: Option<String>,
    metadata: Vec<(String, String)>,
    payload_kind: u8,
    #[serde(with = "serde_bytes_field")]
    payload: Vec<u8>,
}

/// Serde's default for byte slices is a sequence of `u8`; this makes it one
/// length-prefixed byte string, which bincode writes in one copy.
mod serde_bytes_field {
    use serde::Serializer;

    pub fn serialize<S: Serializer, B: AsRef<[u8]>>(
        bytes: &B,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        serializer.serialize_bytes(bytes.as_ref())
    }

    #[cfg(test)]
    pub fn deserialize<'de, D: serde::Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Vec<u8>, D::Error> {
        use serde::de::{Error, Visitor};
        struct BytesVisitor;
        impl<'de> Visitor<'de> for BytesVisitor {
            type Value = Vec<u8>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a byte string")
            }
            fn visit_bytes<E: Error>(self, v: &[u8]) -> Result<Vec<u8>, E> {
                Ok(v.to_vec())
            }
            fn visit_byte_buf<E: Error>(self, v: Vec<u8>) -> Result<Vec<u8>, E> {
                Ok(v)
            }
        }
        deserializer.deserialize_byte_buf(BytesVisitor)
    }
}

/// Encodes the body of `event` (whose id and timestamp are already
/// assigned) and appends it to `out`.
pub(crate) fn encode_body(event: &Event, id: Uuid, timestamp_us: i64, out: &mut Vec<u8>) {
    let (payload_kind, payload): (u8, &[u8]) = match &event.payload {
        Payload::Empty => (PAYLOAD_EMPTY, &[]),
        Payload::Json(text) => (PAYLOAD_JSON, text.as_bytes()),
        Payload::Bytes(bytes) => (PAYLOAD_BYTES, bytes),
    };
    let body = BodyRef {
        id: *id.as_bytes(),
        timestamp_us,
        event_type: &event.event_type,
        correlation_id: event.correlation_id.map(|u| *u.as_bytes()),
        causation_id: event.causation_id.map(|u| *u.as_bytes()),
        entity: event
            .entity
            .as_ref()
            .map(|e| (e.entity_type.as_str(), e.entity_id.as_str())),
        actor: event.actor.as_deref(),
        session: event.session.as_deref(),
        priority: event.priority.as_u8(),
        traceparent: event.traceparent.as_deref(),
        metadata: event
            .metadata
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect(),
        payload_kind,
        payload,
    };
    // Writing into a Vec cannot fail, and every field type is supported by
    // the bincode serde backend, so an error here is a programming bug.
    #[allow(clippy::expect_used)]
    bincode::serde::encode_into_std_write(&body, out, bincode_config())
        .expect("encoding an event body into memory cannot fail");
}

/// Decodes a body whose CRC has already been checked.
///
/// Bodies are encoded with bincode but read by this hand-written reader,
/// which follows FORMAT.md field by field: it is about twice as fast as
/// bincode's serde path (no per-byte visitor calls for ids), it proves the
/// format description is complete, and it bounds every length by the bytes
/// actually present, so no input can make it allocate more than the body.
pub(crate) fn decode_body(seq: u64, body: &[u8]) -> Result<LoggedEvent, CorruptKind> {
    let mut r = BodyReader {
        bytes: body,
        pos: 0,
    };
    let id = Uuid::from_bytes(r.array16()?);
    let timestamp_us = r.varint_i64()?;
    let event_type = r.string()?;
    let correlation_id = r.option(|r| r.array16())?.map(Uuid::from_bytes);
    let causation_id = r.option(|r| r.array16())?.map(Uuid::from_bytes);
    let entity = r.option(|r| {
        Ok(Entity {
            entity_type: r.string()?,
            entity_id: r.string()?,
        })
    })?;
    let actor = r.option(BodyReader::string)?;
    let session = r.option(BodyReader::string)?;
    let priority_byte = r.u8()?;
    let priority = Priority::from_u8(priority_byte)
        .ok_or_else(|| CorruptKind::Decode(format!("priority {priority_byte}")))?;
    let traceparent = r.option(BodyReader::string)?;
    let metadata_count = r.length()?;
    let mut metadata = std::collections::BTreeMap::new();
    for _ in 0..metadata_count {
        let key = r.string()?;
        let value = r.string()?;
        metadata.insert(key, value);
    }
    let payload_kind = r.u8()?;
    let payload_bytes = r.bytes()?;
    let payload = match payload_kind {
        PAYLOAD_EMPTY if payload_bytes.is_empty() => Payload::Empty,
        PAYLOAD_JSON => Payload::Json(
            std::str::from_utf8(payload_bytes)
                .map_err(|_| CorruptKind::Decode("JSON payload is not UTF-8".into()))?
                .to_owned(),
        ),
        PAYLOAD_BYTES => Payload::Bytes(payload_bytes.to_vec()),
        other => {
            return Err(CorruptKind::Decode(format!(
                "payload kind {other} with {} bytes",
                payload_bytes.len()
            )))
        }
    };
    if r.pos != body.len() {
        return Err(CorruptKind::Decode(format!(
            "{} trailing bytes after the body",
            body.len() - r.pos
        )));
    }
    Ok(LoggedEvent {
        seq,
        id,
        event_type,
        timestamp_us,
        correlation_id,
        causation_id,
        entity,
        actor,
        session,
        priority,
        traceparent,
        metadata,
        payload,
    })
}

/// A bounds-checked reader of the body encoding described in FORMAT.md.
struct BodyReader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> BodyReader<'a> {
    fn take(&mut self, len: usize) -> Result<&'a [u8], CorruptKind> {
        let end = self
            .pos
            .checked_add(len)
            .filter(|&end| end <= self.bytes.len())
            .ok_or_else(|| {
                CorruptKind::Decode(format!("field at body byte {} runs past the end", self.pos))
            })?;
        let field = &self.bytes[self.pos..end];
        self.pos = end;
        Ok(field)
    }

    fn u8(&mut self) -> Result<u8, CorruptKind> {
        Ok(self.take(1)?[0])
    }

    fn array16(&mut self) -> Result<[u8; 16], CorruptKind> {
        let mut out = [0u8; 16];
        out.copy_from_slice(self.take(16)?);
        Ok(out)
    }

    fn varint_u64(&mut self) -> Result<u64, CorruptKind> {
        let le = |bytes: &[u8]| {
            bytes
                .iter()
                .rev()
                .fold(0u64, |acc, &b| (acc << 8) | u64::from(b))
        };
        match self.u8()? {
            small @ 0..=250 => Ok(u64::from(small)),
            251 => Ok(le(self.take(2)?)),
            252 => Ok(le(self.take(4)?)),
            253 => Ok(le(self.take(8)?)),
            tag => Err(CorruptKind::Decode(format!("bad varint tag {tag}"))),
        }
    }

    fn varint_i64(&mut self) -> Result<i64, CorruptKind> {
        let zigzag = self.varint_u64()?;
        Ok(((zigzag >> 1) as i64) ^ -((zigzag & 1) as i64))
    }

    /// A length or count, which can never exceed the bytes left.
    fn length(&mut self) -> Result<usize, CorruptKind> {
        let len = self.varint_u64()?;
        let left = (self.bytes.len() - self.pos) as u64;
        if len > left {
            return Err(CorruptKind::Decode(format!(
                "length {len} exceeds the {left} bytes left"
            )));
        }
        Ok(len as usize)
    }

    fn bytes(&mut self) -> Result<&'a [u8], CorruptKind> {
        let len = self.length()?;
        self.take(len)
    }

    fn string(&mut self) -> Result<String, CorruptKind> {
        let bytes = self.bytes()?;
        std::str::from_utf8(bytes)
            .map(str::to_owned)
            .map_err(|_| CorruptKind::Decode("string is not UTF-8".into()))
    }

    fn option<T>(
        &mut self,
        read: impl FnOnce(&mut Self) -> Result<T, CorruptKind>,
    ) -> Result<Option<T>, CorruptKind> {
        match self.u8()? {
            0 => Ok(None),
            1 => read(self).map(Some),
            tag => Err(CorruptKind::Decode(format!("bad option tag {tag}"))),
        }
    }
}

/// The same decoding done by bincode itself; the tests check that the
/// hand-written reader agrees with it.
#[cfg(test)]
fn decode_body_with_bincode(seq: u64, body: &[u8]) -> Result<LoggedEvent, CorruptKind> {
    let (decoded, used): (BodyOwned, usize) =
        bincode::serde::decode_from_slice(body, bincode_config())
            .map_err(|e| CorruptKind::Decode(e.to_string()))?;
    if used != body.len() {
        return Err(CorruptKind::Decode(format!(
            "{} trailing bytes after the body",
            body.len() - used
        )));
    }
    let priority = Priority::from_u8(decoded.priority)
        .ok_or_else(|| CorruptKind::Decode(format!("priority {}", decoded.priority)))?;
    let payload = match decoded.payload_kind {
        PAYLOAD_EMPTY => Payload::Empty,
        PAYLOAD_JSON => Payload::Json(
            String::from_utf8(decoded.payload)
                .map_err(|_| CorruptKind::Decode("JSON payload is not UTF-8".into()))?,
        ),
        PAYLOAD_BYTES => Payload::Bytes(decoded.payload),
        other => return Err(CorruptKind::Decode(format!("payload kind {other}"))),
    };
    Ok(LoggedEvent {
        seq,
        id: Uuid::from_bytes(decoded.id),
        event_type: decoded.event_type,
        timestamp_us: decoded.timestamp_us,
        correlation_id: decoded.correlation_id.map(Uuid::from_bytes),
        causation_id: decoded.causation_id.map(Uuid::from_bytes),
        entity: decoded.entity.map(|(entity_type, entity_id)| Entity {
            entity_type,
            entity_id,
        }),
        actor: decoded.actor,
        session: decoded.session,
        priority,
        traceparent: decoded.traceparent,
        metadata: decoded.metadata.into_iter().collect(),
        payload,
    })
}

/// The parsed fixed-size header of a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RecordHeader {
    pub body_len: u32,
    pub crc: u32,
    pub seq: u64,
    pub unit_remaining: u32,
    pub synced_delta: u32,
}

impl RecordHeader {
    pub fn record_bytes(&self) -> u64 {
        RECORD_HEADER_BYTES as u64 + u64::from(self.body_len)
    }
    /// The highest sequence number that was durable when this record was
    /// written (a lower bound when `synced_delta` saturated).
    pub fn synced_through(&self) -> u64 {
        self.seq.saturating_sub(u64::from(self.synced_delta))
    }
}

/// Parses a header without checking the CRC. `None` if `bytes` is short.
pub(crate) fn parse_header(bytes: &[u8]) -> Option<RecordHeader> {
    Some(RecordHeader {
        body_len: u32_at(bytes, 0)?,
        crc: u32_at(bytes, CRC_AT)?,
        seq: u64_at(bytes, SEQ_AT)?,
        unit_remaining: u32_at(bytes, UNIT_REMAINING_AT)?,
        synced_delta: u32_at(bytes, SYNCED_DELTA_AT)?,
    })
}

/// Checks the plausibility of a header's fields, before reading the body.
pub(crate) fn check_header(
    header: &RecordHeader,
    record_bytes_max: u64,
) -> Result<(), CorruptKind> {
    let body_len = u64::from(header.body_len);
    if body_len < BODY_BYTES_MIN as u64
        || body_len + RECORD_HEADER_BYTES as u64 > record_bytes_max.max(RECORD_BYTES_LIMIT)
    {
        return Err(CorruptKind::RecordLength(header.body_len));
    }
    if header.seq == 0 || header.seq > crate::segment::SEQ_MAX {
        return Err(CorruptKind::Sequence {
            expected: 1,
            found: header.seq,
        });
    }
    Ok(())
}

fn record_crc(record: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&record[..CRC_AT]);
    hasher.update(&record[SEQ_AT..]);
    hasher.finalize()
}

/// Appends one framed record (header, then `body`) to `out`.
pub(crate) fn encode_record(
    out: &mut Vec<u8>,
    seq: u64,
    unit_remaining: u32,
    synced_delta: u32,
    body: &[u8],
) {
    let start = out.len();
    // body_len fits: bodies are checked against RECORD_BYTES_LIMIT (< 4 GiB).
    put_u32(out, body.len() as u32);
    put_u32(out, 0);
    put_u64(out, seq);
    put_u32(out, unit_remaining);
    put_u32(out, synced_delta);
    out.extend_from_slice(body);
    let crc = record_crc(&out[start..]);
    out[start + CRC_AT..start + CRC_AT + 4].copy_from_slice(&crc.to_le_bytes());
}

/// Verifies a complete record (`record.len()` must equal the header's
/// `record_bytes()`): plausible header and matching CRC.
pub(crate) fn verify_record(
    record: &[u8],
    record_bytes_max: u64,
) -> Result<RecordHeader, CorruptKind> {
    let header = parse_header(record).ok_or(CorruptKind::Truncated)?;
    check_header(&header, record_bytes_max)?;
    if record.len() as u64 != header.record_bytes() {
        return Err(CorruptKind::Truncated);
    }
    let computed = record_crc(record);
    if computed != header.crc {
        return Err(CorruptKind::RecordChecksum {
            stored: header.crc,
            computed,
        });
    }
    Ok(header)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Event {
        Event::new("task.status_changed")
            .correlation_id(Uuid::from_u128(7))
            .entity("task", "T-1")
            .actor("agent-7")
            .metadata("k", "v")
            .json_payload(&serde_json::json!({"a": 1}))
            .unwrap()
    }

    #[test]
    fn record_round_trips_and_detects_every_flipped_bit() {
        let mut body = Vec::new();
        encode_body(
            &sample(),
            Uuid::from_u128(1),
            1_700_000_000_000_000,
            &mut body,
        );
        let mut record = Vec::new();
        encode_record(&mut record, 42, 0, 3, &body);
        let header = verify_record(&record, RECORD_BYTES_LIMIT).unwrap();
        assert_eq!(header.seq, 42);
        let event = decode_body(42, &record[RECORD_HEADER_BYTES..]).unwrap();
        assert_eq!(event.event_type, "task.status_changed");
        assert_eq!(event.payload, Payload::Json("{\"a\":1}".into()));
        for bit in 0..record.len() * 8 {
            let mut damaged = record.clone();
            damaged[bit / 8] ^= 1 << (bit % 8);
            let len = damaged.len();
            let result = parse_header(&damaged)
                .filter(|h| h.record_bytes() == len as u64)
                .map(|_| verify_record(&damaged, RECORD_BYTES_LIMIT));
            assert!(
                !matches!(result, Some(Ok(_))),
                "flip of bit {bit} went undetected"
            );
        }
    }

    // The hand-written reader and bincode's own decoder agree on every
    // field, for events with and without each optional field.
    #[test]
    fn body_reader_agrees_with_bincode() {
        let mut events = vec![Event::new("a"), sample()];
        for (i, generated) in
            crate::workload::Workload::new(crate::workload::WorkloadConfig::new(200)).enumerate()
        {
            let mut event = generated
                .event()
                .traceparent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
            if i % 3 == 0 {
                event = event.bytes_payload(vec![i as u8; i * 7]);
            }
            events.push(event);
        }
        for (i, event) in events.iter().enumerate() {
            let mut body = Vec::new();
            let ts = (i as i64 - 100) * 1_234_567_891;
            encode_body(
                event,
                Uuid::from_u128(i as u128 * 0x1234_5678_9abc),
                ts,
                &mut body,
            );
            let by_hand = decode_body(9, &body).unwrap();
            assert_eq!(by_hand, decode_body_with_bincode(9, &body).unwrap());
            assert_eq!(by_hand.timestamp_us, ts);
            for cut in 0..body.len() {
                assert!(decode_body(9, &body[..cut]).is_err());
            }
        }
    }

    #[test]
    fn minimal_body_is_at_least_the_minimum() {
        let mut body = Vec::new();
        encode_body(&Event::new("a"), Uuid::nil(), 0, &mut body);
        assert_eq!(body.len(), BODY_BYTES_MIN);
    }

    #[test]
    fn decode_never_panics_on_garbage() {
        let mut state = 0x9E37_79B9_7F4A_7C15u64;
        for len in 0..400 {
            let bytes: Vec<u8> = (0..len)
                .map(|_| {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    state as u8
                })
                .collect();
            let by_hand = decode_body(1, &bytes);
            let by_bincode = decode_body_with_bincode(1, &bytes);
            assert_eq!(by_hand.is_ok(), by_bincode.is_ok(), "{bytes:?}");
        }
    }
}
