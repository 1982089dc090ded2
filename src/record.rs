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
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::codec::{set_u32_at, set_u64_at, u32_at, u64_at};
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

/// Largest varint written as its own single byte; 251..=253 are the tags of
/// the 2-, 4- and 8-byte forms.
const VARINT_ONE_BYTE_MAX: u64 = 250;
const VARINT_TAG_U16: u8 = 251;
const VARINT_TAG_U32: u8 = 252;
const VARINT_TAG_U64: u8 = 253;

/// Encodes the body of `event` (whose id and timestamp are already
/// assigned) and appends it to `out`.
///
/// Written by hand, field by field in FORMAT.md order, as the mirror of
/// [`decode_body`]. It produces exactly the bytes of the bincode 2
/// configuration FORMAT.md describes (the tests compare the two on many
/// events), without serde's per-field calls or the temporary list of
/// metadata pairs, and with a single reservation of the exact size.
pub(crate) fn encode_body(event: &Event, id: Uuid, timestamp_us: i64, out: &mut Vec<u8>) {
    encode_body_with_traceparent(event, id, timestamp_us, event.traceparent.as_deref(), out);
}

/// [`encode_body`] storing `traceparent` as the event's traceparent: the
/// log passes the event's own, or, for an event that has none, the one it
/// took from the OpenTelemetry context (feature `opentelemetry`), so that
/// the event itself is neither cloned nor changed.
pub(crate) fn encode_body_with_traceparent(
    event: &Event,
    id: Uuid,
    timestamp_us: i64,
    traceparent: Option<&str>,
    out: &mut Vec<u8>,
) {
    let timestamp = zigzag(timestamp_us);
    out.reserve(body_len(event, traceparent, timestamp));
    out.extend_from_slice(id.as_bytes());
    put_varint(out, timestamp);
    put_str(out, &event.event_type);
    put_option(out, event.correlation_id.as_ref(), |out, id| {
        out.extend_from_slice(id.as_bytes())
    });
    put_option(out, event.causation_id.as_ref(), |out, id| {
        out.extend_from_slice(id.as_bytes())
    });
    put_option(out, event.entity.as_ref(), |out, entity| {
        put_str(out, &entity.entity_type);
        put_str(out, &entity.entity_id);
    });
    put_option(out, event.actor.as_deref(), put_str);
    put_option(out, event.session.as_deref(), put_str);
    out.push(event.priority.as_u8());
    put_option(out, traceparent, put_str);
    put_varint(out, event.metadata.len() as u64);
    for (key, value) in &event.metadata {
        put_str(out, key);
        put_str(out, value);
    }
    let (kind, payload) = payload_parts(&event.payload);
    out.push(kind);
    put_bytes(out, payload);
}

/// The payload kind byte and the stored payload bytes.
fn payload_parts(payload: &Payload) -> (u8, &[u8]) {
    match payload {
        Payload::Empty => (PAYLOAD_EMPTY, &[]),
        Payload::Json(text) => (PAYLOAD_JSON, text.as_bytes()),
        Payload::Bytes(bytes) => (PAYLOAD_BYTES, bytes),
    }
}

/// The exact length of the body [`encode_body_with_traceparent`] writes,
/// given the traceparent it stores and the zigzag form of the timestamp.
fn body_len(event: &Event, traceparent: Option<&str>, timestamp_zigzag: u64) -> usize {
    let str_len = |s: &str| varint_len(s.len() as u64) + s.len();
    // An absent option is its tag byte; a present one adds the value.
    let option_len = |s: Option<&str>| 1 + s.map_or(0, str_len);
    let uuid_option_len = |id: Option<Uuid>| 1 + id.map_or(0, |_| 16);
    let entity_len = 1 + event
        .entity
        .as_ref()
        .map_or(0, |e| str_len(&e.entity_type) + str_len(&e.entity_id));
    let metadata_len = varint_len(event.metadata.len() as u64)
        + event
            .metadata
            .iter()
            .map(|(k, v)| str_len(k) + str_len(v))
            .sum::<usize>();
    let payload = payload_parts(&event.payload).1;
    16 + varint_len(timestamp_zigzag)
        + str_len(&event.event_type)
        + uuid_option_len(event.correlation_id)
        + uuid_option_len(event.causation_id)
        + entity_len
        + option_len(event.actor.as_deref())
        + option_len(event.session.as_deref())
        + 1
        + option_len(traceparent)
        + metadata_len
        + 1
        + varint_len(payload.len() as u64)
        + payload.len()
}

/// Zigzag form of a signed integer: 0, -1, 1, -2, ... map to 0, 1, 2, 3, ...
/// so that small magnitudes of either sign get short varints.
fn zigzag(value: i64) -> u64 {
    ((value << 1) ^ (value >> 63)) as u64
}

fn varint_len(value: u64) -> usize {
    if value <= VARINT_ONE_BYTE_MAX {
        1
    } else if value <= u64::from(u16::MAX) {
        3
    } else if value <= u64::from(u32::MAX) {
        5
    } else {
        9
    }
}

fn put_varint(out: &mut Vec<u8>, value: u64) {
    // Each `as` below is guarded by the comparison before it.
    if value <= VARINT_ONE_BYTE_MAX {
        out.push(value as u8);
    } else if value <= u64::from(u16::MAX) {
        out.push(VARINT_TAG_U16);
        out.extend_from_slice(&(value as u16).to_le_bytes());
    } else if value <= u64::from(u32::MAX) {
        out.push(VARINT_TAG_U32);
        out.extend_from_slice(&(value as u32).to_le_bytes());
    } else {
        out.push(VARINT_TAG_U64);
        out.extend_from_slice(&value.to_le_bytes());
    }
}

fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    put_varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

fn put_str(out: &mut Vec<u8>, text: &str) {
    put_bytes(out, text.as_bytes());
}

fn put_option<T>(out: &mut Vec<u8>, value: Option<T>, put: impl FnOnce(&mut Vec<u8>, T)) {
    match value {
        None => out.push(0),
        Some(value) => {
            out.push(1);
            put(out, value);
        }
    }
}

/// The fixed bincode configuration FORMAT.md describes: little-endian,
/// variable-length integers, and a hard allocation limit so that a damaged
/// length prefix cannot make the decoder allocate more than a record can
/// hold. Only the tests use bincode, as the reference the hand-written
/// encoder and decoder must agree with.
#[cfg(test)]
fn bincode_config() -> impl bincode::config::Config {
    bincode::config::standard()
        .with_little_endian()
        .with_variable_int_encoding()
        .with_limit::<{ RECORD_BYTES_LIMIT as usize }>()
}

/// The body as bincode encodes it, field by field in FORMAT.md order.
#[cfg(test)]
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
/// length-prefixed byte string, as FORMAT.md's `bytes`.
#[cfg(test)]
mod serde_bytes_field {
    use serde::de::{Error, Visitor};
    use serde::{Deserializer, Serializer};

    pub fn serialize<S: Serializer, B: AsRef<[u8]>>(
        bytes: &B,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        serializer.serialize_bytes(bytes.as_ref())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<u8>, D::Error> {
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

/// The encoding as bincode itself does it: the reference the hand-written
/// [`encode_body`] must match byte for byte.
#[cfg(test)]
fn encode_body_with_bincode(event: &Event, id: Uuid, timestamp_us: i64, out: &mut Vec<u8>) {
    let (payload_kind, payload) = payload_parts(&event.payload);
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
    bincode::serde::encode_into_std_write(&body, out, bincode_config())
        .expect("encoding an event body into memory cannot fail");
}

/// Decodes a body whose CRC has already been checked.
///
/// A hand-written reader that follows FORMAT.md field by field: it is about
/// twice as fast as bincode's serde path (no per-byte visitor calls for
/// ids), it proves the format description is complete, and it bounds every
/// length by the bytes actually present, so no input can make it allocate
/// more than the body.
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

/// The entity `(type, id)` of an encoded body, read without decoding (or
/// allocating) the rest: the writer needs it for every event it writes
/// while conditional appends are in use, and scans of the log need it for
/// every event they pass.
pub(crate) fn body_entity(body: &[u8]) -> Result<Option<(&str, &str)>, CorruptKind> {
    let mut r = BodyReader {
        bytes: body,
        pos: 0,
    };
    r.take(16)?; // id
    r.varint_u64()?; // timestamp
    r.bytes()?; // event type
    r.option(|r| r.take(16))?; // correlation id
    r.option(|r| r.take(16))?; // causation id
    r.option(|r| Ok((r.str()?, r.str()?)))
}

/// The timestamp (µs) of an encoded body, read without decoding the rest:
/// an archive's footer keeps the smallest and largest of its events.
pub(crate) fn body_timestamp_us(body: &[u8]) -> Result<i64, CorruptKind> {
    let mut r = BodyReader {
        bytes: body,
        pos: 0,
    };
    r.take(16)?; // id
    r.varint_i64()
}

/// Every field of an encoded body but the payload, borrowed from the body
/// (no allocation): the indexer reads this for every event it indexes, a
/// subscriber's filter and the dispatcher for every event they pass, the
/// archiver for every event of a piece it summarises or rewrites; decoding
/// a [`LoggedEvent`] would allocate each string, the metadata map and the
/// payload only to drop them again.
pub(crate) struct BodyView<'a> {
    pub id: Uuid,
    pub timestamp_us: i64,
    pub event_type: &'a str,
    pub correlation_id: Option<Uuid>,
    pub causation_id: Option<Uuid>,
    pub entity: Option<(&'a str, &'a str)>,
    pub actor: Option<&'a str>,
    pub session: Option<&'a str>,
    pub priority: crate::event::Priority,
    pub metadata: MetadataView<'a>,
}

/// The metadata pairs of an encoded body, read on demand.
pub(crate) struct MetadataView<'a> {
    count: usize,
    /// The body from its first metadata pair on.
    reader: BodyReader<'a>,
}

impl<'a> MetadataView<'a> {
    /// The `(key, value)` pairs in stored order; an error ends them.
    pub(crate) fn pairs(&self) -> impl Iterator<Item = Result<(&'a str, &'a str), CorruptKind>> {
        let mut reader = BodyReader {
            bytes: self.reader.bytes,
            pos: self.reader.pos,
        };
        let mut left = self.count;
        std::iter::from_fn(move || {
            if left == 0 {
                return None;
            }
            left -= 1;
            let pair = reader.str().and_then(|key| Ok((key, reader.str()?)));
            if pair.is_err() {
                left = 0;
            }
            Some(pair)
        })
    }
}

/// Reads the fields of a [`BodyView`]; the metadata pairs and the payload
/// are checked only when read.
pub(crate) fn body_view(body: &[u8]) -> Result<BodyView<'_>, CorruptKind> {
    let mut r = BodyReader {
        bytes: body,
        pos: 0,
    };
    let id = Uuid::from_bytes(r.array16()?);
    let timestamp_us = r.varint_i64()?;
    let event_type = r.str()?;
    let correlation_id = r.option(BodyReader::array16)?.map(Uuid::from_bytes);
    let causation_id = r.option(BodyReader::array16)?.map(Uuid::from_bytes);
    let entity = r.option(|r| Ok((r.str()?, r.str()?)))?;
    let actor = r.option(BodyReader::str)?;
    let session = r.option(BodyReader::str)?;
    let priority_byte = r.u8()?;
    let priority = crate::event::Priority::from_u8(priority_byte)
        .ok_or_else(|| CorruptKind::Decode(format!("priority {priority_byte}")))?;
    r.option(BodyReader::bytes)?; // traceparent
    let count = r.length()?;
    Ok(BodyView {
        id,
        timestamp_us,
        event_type,
        correlation_id,
        causation_id,
        entity,
        actor,
        session,
        priority,
        metadata: MetadataView { count, reader: r },
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

    fn str(&mut self) -> Result<&'a str, CorruptKind> {
        std::str::from_utf8(self.bytes()?)
            .map_err(|_| CorruptKind::Decode("string is not UTF-8".into()))
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
    out.resize(start + RECORD_HEADER_BYTES, 0);
    out.extend_from_slice(body);
    frame_record_in_place(&mut out[start..], seq, unit_remaining, synced_delta);
}

/// An upper bound on the body length of `event`, stored with
/// `traceparent`, whatever its timestamp: lets a caller size one buffer
/// for a whole batch.
pub(crate) fn body_bytes_max(event: &Event, traceparent: Option<&str>) -> usize {
    body_len(event, traceparent, u64::MAX)
}

/// Fills in the header of `record`, whose first `RECORD_HEADER_BYTES` are
/// room for it and whose rest is the body: the writer frames the caller's
/// buffer where it lies instead of copying every body once more.
pub(crate) fn frame_record_in_place(
    record: &mut [u8],
    seq: u64,
    unit_remaining: u32,
    synced_delta: u32,
) {
    // body_len fits: bodies are checked against RECORD_BYTES_LIMIT (< 4 GiB).
    let body_len = (record.len() - RECORD_HEADER_BYTES) as u32;
    set_u32_at(record, 0, body_len);
    set_u64_at(record, SEQ_AT, seq);
    set_u32_at(record, UNIT_REMAINING_AT, unit_remaining);
    set_u32_at(record, SYNCED_DELTA_AT, synced_delta);
    let crc = record_crc(record);
    set_u32_at(record, CRC_AT, crc);
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
    // `body_entity` finds the entity that the full decoder finds, with
    // and without the optional fields before it.
    #[test]
    fn body_timestamp_agrees_with_decode() {
        for timestamp_us in [
            0,
            1,
            -1,
            250,
            251,
            i64::MAX,
            i64::MIN,
            1_767_225_600_000_000,
        ] {
            let mut body = Vec::new();
            encode_body(&sample(), Uuid::from_u128(1), timestamp_us, &mut body);
            assert_eq!(body_timestamp_us(&body), Ok(timestamp_us));
            assert_eq!(decode_body(1, &body).unwrap().timestamp_us, timestamp_us);
        }
        assert!(body_timestamp_us(&[0; 16]).is_err());
    }

    #[test]
    fn body_view_agrees_with_decode_and_refuses_cut_bodies() {
        let full = sample()
            .correlation_id(Uuid::from_u128(7))
            .causation_id(Uuid::from_u128(9))
            .actor("robot")
            .session("s-1")
            .priority(crate::event::Priority::P0);
        for event in [sample(), full, Event::new("bare.type")] {
            let mut body = Vec::new();
            encode_body(&event, Uuid::from_u128(1), -42, &mut body);
            let decoded = decode_body(1, &body).unwrap();
            let fields = body_view(&body).unwrap();
            assert_eq!(fields.timestamp_us, -42);
            assert_eq!(fields.event_type, decoded.event_type);
            assert_eq!(fields.correlation_id, decoded.correlation_id);
            assert_eq!(
                fields.entity,
                decoded
                    .entity
                    .as_ref()
                    .map(|e| (e.entity_type.as_str(), e.entity_id.as_str()))
            );
            assert_eq!(fields.priority, decoded.priority);
            // A body cut anywhere before the metadata count is an error,
            // never a panic; from there on the fields read the same (the
            // pairs and the payload are read only on demand).
            let first_ok = (0..=body.len())
                .find(|&cut| body_view(&body[..cut]).is_ok())
                .unwrap();
            assert!(first_ok > 16 + event.event_type().len());
            assert!((first_ok..=body.len())
                .all(|cut| body_view(&body[..cut]).is_ok_and(|f| f.priority == decoded.priority)));
        }
    }

    #[test]
    fn body_entity_agrees_with_decode() {
        let with_causation = sample().causation_id(Uuid::from_u128(9));
        for event in [Event::new("a"), sample(), with_causation] {
            let mut body = Vec::new();
            encode_body(&event, Uuid::from_u128(1), -5, &mut body);
            let decoded = decode_body(1, &body).unwrap();
            let expected = decoded
                .entity
                .as_ref()
                .map(|e| (e.entity_type.as_str(), e.entity_id.as_str()));
            assert_eq!(body_entity(&body).unwrap(), expected);
        }
        assert!(body_entity(&[0u8; 10]).is_err());
    }

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
            encode_body_with_bincode(
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

    // The traceparent the log passes for an event that has none (taken
    // from the OpenTelemetry context) is stored exactly as if the event
    // had been given it, and the batch buffer's size bound counts it.
    #[test]
    fn traceparent_passed_in_is_stored_as_the_events_own() {
        const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let bare = sample();
        let mut passed = Vec::new();
        encode_body_with_traceparent(&bare, Uuid::from_u128(1), 9, Some(TRACEPARENT), &mut passed);
        let mut own = Vec::new();
        encode_body(
            &sample().traceparent(TRACEPARENT),
            Uuid::from_u128(1),
            9,
            &mut own,
        );
        assert_eq!(passed, own);
        assert!(passed.len() <= body_bytes_max(&bare, Some(TRACEPARENT)));
        assert!(passed.len() > body_bytes_max(&bare, None));
        let decoded = decode_body(1, &passed).unwrap();
        assert_eq!(decoded.traceparent.as_deref(), Some(TRACEPARENT));
    }

    /// Encodes `event` with both encoders after a non-empty prefix (bodies
    /// are appended to a batch buffer) and checks they agree byte for byte,
    /// that the reserved length was exact, and that the body decodes back.
    fn assert_encoders_agree(event: &Event, id: Uuid, timestamp_us: i64) {
        let prefix = [0xAB_u8; 3];
        let mut by_hand = prefix.to_vec();
        encode_body(event, id, timestamp_us, &mut by_hand);
        let mut by_bincode = prefix.to_vec();
        encode_body_with_bincode(event, id, timestamp_us, &mut by_bincode);
        assert!(
            by_hand == by_bincode,
            "encoders disagree for {event:?} at timestamp {timestamp_us}"
        );
        let body = &by_hand[prefix.len()..];
        assert_eq!(
            body.len(),
            body_len(event, event.traceparent.as_deref(), zigzag(timestamp_us))
        );
        let decoded = decode_body(5, body).unwrap();
        assert_eq!(decoded.id, id);
        assert_eq!(decoded.timestamp_us, timestamp_us);
        assert_eq!(decoded.event_type, event.event_type);
        assert_eq!(decoded.metadata, event.metadata);
        assert_eq!(decoded.payload, event.payload);
    }

    const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn encoder_matches_bincode_on_the_workload() {
        let events = crate::workload::Workload::new(crate::workload::WorkloadConfig::new(2_000));
        for (i, generated) in events.enumerate() {
            let mut event = generated.event();
            if i % 5 == 0 {
                event = event.traceparent(TRACEPARENT).metadata("k", i.to_string());
            }
            assert_encoders_agree(&event, generated.id, generated.timestamp_us);
        }
    }

    // Each of the eight optional parts (six options, metadata, payload)
    // present or absent, in every combination, with each payload kind.
    #[test]
    fn encoder_matches_bincode_with_every_field_present_or_absent() {
        for mask in 0u32..(1 << 7) {
            for payload in [
                Payload::Empty,
                Payload::Json(r#"{"a":[1,2.5,"\u00e9"]}"#.into()),
                Payload::Bytes(vec![0, 255, 7]),
            ] {
                let mut event = Event::new("p.q").priority(Priority::P3).payload(payload);
                let has = |bit: u32| mask & (1 << bit) != 0;
                if has(0) {
                    event = event.correlation_id(Uuid::from_u128(u128::MAX - 1));
                }
                if has(1) {
                    event = event.causation_id(Uuid::from_u128(3));
                }
                if has(2) {
                    event = event.entity("task", "");
                }
                if has(3) {
                    event = event.actor("agent-\u{1F600}");
                }
                if has(4) {
                    event = event.session("s");
                }
                if has(5) {
                    event = event.traceparent(TRACEPARENT);
                }
                if has(6) {
                    event = event.metadata("b", "2").metadata("a", "").metadata("", "x");
                }
                assert_encoders_agree(&event, Uuid::from_u128(u128::from(mask)), i64::from(mask));
            }
        }
    }

    // Lengths and timestamps on both sides of each varint size boundary.
    #[test]
    fn encoder_matches_bincode_at_varint_boundaries() {
        for len in [0usize, 1, 250, 251, 252, 65_535, 65_536, 65_537, 300_000] {
            let text = "x".repeat(len);
            let event = Event::new("a")
                .actor(text.clone())
                .metadata(text.clone(), text.clone())
                .bytes_payload(vec![7u8; len]);
            assert_encoders_agree(&event, Uuid::nil(), 0);
            let json = format!("\"{}\"", "y".repeat(len));
            assert_encoders_agree(
                &Event::new("a").payload(Payload::Json(json)),
                Uuid::nil(),
                1,
            );
        }
        let mut many = Event::new("a");
        for i in 0..251 {
            many = many.metadata(format!("{i:03}"), "");
        }
        assert_encoders_agree(&many, Uuid::nil(), 0);
        let boundaries = [
            0i64,
            1,
            -1,
            125,
            -125,
            126,
            -126,
            32_767,
            -32_768,
            32_768,
            -32_769,
            i64::from(i32::MAX),
            i64::from(i32::MIN),
            i64::from(i32::MAX) + 1,
            i64::from(i32::MIN) - 1,
            -62_135_596_800_000_000,
            253_402_300_799_999_999,
            i64::MAX,
            i64::MIN,
        ];
        for ts in boundaries {
            assert_encoders_agree(&sample(), Uuid::from_u128(9), ts);
        }
    }

    // Lengths of 2^32 - 1 and 2^32 bytes cannot be built cheaply in a test,
    // so the varint writer is compared with bincode's on those values.
    #[test]
    fn varint_writer_matches_bincode() {
        let values = [
            0u64,
            250,
            251,
            65_535,
            65_536,
            u64::from(u32::MAX),
            u64::from(u32::MAX) + 1,
            u64::MAX,
        ];
        for value in values {
            let mut by_hand = Vec::new();
            put_varint(&mut by_hand, value);
            let by_bincode = bincode::encode_to_vec(value, bincode_config()).unwrap();
            assert_eq!(by_hand, by_bincode, "{value}");
            assert_eq!(by_hand.len(), varint_len(value));
            let mut reader = BodyReader {
                bytes: &by_hand,
                pos: 0,
            };
            assert_eq!(reader.varint_u64().unwrap(), value);
        }
    }

    fn arbitrary_event() -> impl proptest::strategy::Strategy<Value = (Event, u128, i64)> {
        use proptest::collection::{btree_map, vec};
        use proptest::option::of;
        use proptest::prelude::*;
        let text = || ".{0,40}";
        let payload = prop_oneof![
            Just(Payload::Empty),
            ".{0,300}".prop_map(|t| Payload::Json(format!("{t:?}"))),
            vec(any::<u8>(), 0..600).prop_map(Payload::Bytes),
        ];
        (
            (
                text(),
                of(any::<u128>()),
                of(any::<u128>()),
                of((text(), text())),
                of(text()),
                of(text()),
                0u8..4,
                of(text()),
            ),
            btree_map(text(), text(), 0..8),
            payload,
            any::<u128>(),
            any::<i64>(),
        )
            .prop_map(
                |(
                    (event_type, correlation, causation, entity, actor, session, priority, trace),
                    metadata,
                    payload,
                    id,
                    timestamp_us,
                )| {
                    let mut event = Event::new(event_type).payload(payload);
                    event.correlation_id = correlation.map(Uuid::from_u128);
                    event.causation_id = causation.map(Uuid::from_u128);
                    event.entity = entity.map(|(entity_type, entity_id)| Entity {
                        entity_type,
                        entity_id,
                    });
                    event.actor = actor;
                    event.session = session;
                    event.priority = Priority::from_u8(priority).unwrap();
                    event.traceparent = trace;
                    event.metadata = metadata;
                    (event, id, timestamp_us)
                },
            )
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(2_000))]
        #[test]
        fn encoder_matches_bincode_on_random_events((event, id, ts) in arbitrary_event()) {
            assert_encoders_agree(&event, Uuid::from_u128(id), ts);
        }

        // The borrowed view the indexer reads sees every field the full
        // decoder sees, metadata pairs in order included.
        #[test]
        fn body_view_agrees_with_decode((event, id, ts) in arbitrary_event()) {
            let mut body = Vec::new();
            encode_body(&event, Uuid::from_u128(id), ts, &mut body);
            let decoded = decode_body(3, &body).unwrap();
            let view = body_view(&body).unwrap();
            proptest::prop_assert_eq!(view.id, decoded.id);
            proptest::prop_assert_eq!(view.timestamp_us, decoded.timestamp_us);
            proptest::prop_assert_eq!(view.event_type, decoded.event_type.as_str());
            proptest::prop_assert_eq!(view.correlation_id, decoded.correlation_id);
            proptest::prop_assert_eq!(view.causation_id, decoded.causation_id);
            proptest::prop_assert_eq!(
                view.entity,
                decoded.entity.as_ref().map(|e| (e.entity_type.as_str(), e.entity_id.as_str()))
            );
            proptest::prop_assert_eq!(view.actor, decoded.actor.as_deref());
            proptest::prop_assert_eq!(view.session, decoded.session.as_deref());
            proptest::prop_assert_eq!(view.priority, decoded.priority);
            let pairs: Vec<(&str, &str)> = view.metadata.pairs().map(Result::unwrap).collect();
            let expected: Vec<(&str, &str)> = decoded
                .metadata
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            proptest::prop_assert_eq!(pairs, expected);
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
            // The borrowed view reads no further than the metadata, so it
            // accepts whatever the full decoder accepts, and more.
            let view = body_view(&bytes);
            if by_hand.is_ok() {
                let view = view.unwrap();
                assert!(view.metadata.pairs().all(|pair| pair.is_ok()));
            } else if let Ok(view) = view {
                // Reading the pairs of a damaged body ends, error or not.
                assert!(view.metadata.pairs().count() <= bytes.len());
            }
        }
    }
}
