//! The JSON form of events used by the command-line tools: one object per
//! event with the field names `seq, id, type, timestamp, correlation_id,
//! causation_id, entity {type, id}, actor, session, priority, traceparent,
//! metadata, payload` (plus `payload_hex` for byte payloads). Other
//! programs rely on these names; extend, never rename.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::error::{Error, Result};
use crate::event::{Event, LoggedEvent, Payload, Priority};

#[derive(Serialize, Deserialize)]
struct EntityJson {
    #[serde(rename = "type")]
    entity_type: String,
    id: String,
}

/// The wire form; optional fields are omitted on output when absent.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct EventJson {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    seq: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    id: Option<Uuid>,
    #[serde(rename = "type")]
    event_type: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    timestamp: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    correlation_id: Option<Uuid>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    causation_id: Option<Uuid>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    entity: Option<EntityJson>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    actor: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    session: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    priority: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    traceparent: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    metadata: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    payload: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    payload_hex: Option<String>,
}

/// Formats microseconds since the epoch as RFC 3339 UTC with microsecond
/// precision, e.g. `2026-01-01T00:00:00.000001Z`.
pub fn format_timestamp(timestamp_us: i64) -> String {
    let seconds = timestamp_us.div_euclid(1_000_000);
    let micros = timestamp_us.rem_euclid(1_000_000);
    match OffsetDateTime::from_unix_timestamp(seconds) {
        Ok(t) => format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:06}Z",
            t.year(),
            u8::from(t.month()),
            t.day(),
            t.hour(),
            t.minute(),
            t.second(),
            micros
        ),
        // Out of the representable range: still print something exact.
        Err(_) => format!("@{timestamp_us}us"),
    }
}

/// Parses an RFC 3339 timestamp (any offset) into microseconds since the
/// epoch, UTC.
pub fn parse_timestamp(text: &str) -> Result<i64> {
    let t = OffsetDateTime::parse(text, &Rfc3339)
        .map_err(|e| Error::InvalidEvent(format!("timestamp {text:?} is not RFC 3339: {e}")))?;
    Ok((t.unix_timestamp_nanos() / 1000) as i64)
}

/// The JSON object of a stored event.
pub fn event_to_json(event: &LoggedEvent) -> serde_json::Value {
    let (payload, payload_hex) = match &event.payload {
        Payload::Empty => (None, None),
        Payload::Json(text) => (
            Some(serde_json::from_str(text).unwrap_or(serde_json::Value::String(text.clone()))),
            None,
        ),
        Payload::Bytes(bytes) => (None, Some(hex(bytes))),
    };
    let wire = EventJson {
        seq: Some(event.seq),
        id: Some(event.id),
        event_type: event.event_type.clone(),
        timestamp: Some(serde_json::Value::String(format_timestamp(
            event.timestamp_us,
        ))),
        correlation_id: event.correlation_id,
        causation_id: event.causation_id,
        entity: event.entity.as_ref().map(|e| EntityJson {
            entity_type: e.entity_type.clone(),
            id: e.entity_id.clone(),
        }),
        actor: event.actor.clone(),
        session: event.session.clone(),
        priority: Some(event.priority.to_string()),
        traceparent: event.traceparent.clone(),
        metadata: event.metadata.clone(),
        payload,
        payload_hex,
    };
    serde_json::to_value(wire).unwrap_or(serde_json::Value::Null)
}

/// Parses one JSON object into an event to append. `type` is required;
/// `seq` is ignored (the log assigns it), so `replay` output can be
/// appended to another log. `timestamp` is RFC 3339 or integer
/// microseconds since the epoch.
pub fn event_from_json(text: &str) -> Result<Event> {
    let wire: EventJson = serde_json::from_str(text).map_err(Error::Payload)?;
    let mut event = Event::new(wire.event_type);
    if let Some(id) = wire.id {
        event = event.id(id);
    }
    match wire.timestamp {
        None | Some(serde_json::Value::Null) => {}
        Some(serde_json::Value::String(s)) => event = event.timestamp_us(parse_timestamp(&s)?),
        Some(serde_json::Value::Number(n)) => {
            let us = n.as_i64().ok_or_else(|| {
                Error::InvalidEvent(format!("timestamp {n} is not an integer of microseconds"))
            })?;
            event = event.timestamp_us(us);
        }
        Some(other) => {
            return Err(Error::InvalidEvent(format!(
                "timestamp must be an RFC 3339 string or microseconds, not {other}"
            )))
        }
    }
    if let Some(id) = wire.correlation_id {
        event = event.correlation_id(id);
    }
    if let Some(id) = wire.causation_id {
        event = event.causation_id(id);
    }
    if let Some(entity) = wire.entity {
        event = event.entity(entity.entity_type, entity.id);
    }
    if let Some(actor) = wire.actor {
        event = event.actor(actor);
    }
    if let Some(session) = wire.session {
        event = event.session(session);
    }
    if let Some(priority) = wire.priority {
        event = event.priority(priority.parse::<Priority>()?);
    }
    if let Some(traceparent) = wire.traceparent {
        event = event.traceparent(traceparent);
    }
    for (key, value) in wire.metadata {
        event = event.metadata(key, value);
    }
    match (wire.payload, wire.payload_hex) {
        (Some(_), Some(_)) => {
            return Err(Error::InvalidEvent(
                "give either payload or payload_hex, not both".into(),
            ))
        }
        (Some(value), None) => event = event.json_payload(&value)?,
        (None, Some(hex_text)) => event = event.bytes_payload(unhex(&hex_text)?),
        (None, None) => {}
    }
    event.validate()?;
    Ok(event)
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for &b in bytes {
        out.push(DIGITS[usize::from(b >> 4)] as char);
        out.push(DIGITS[usize::from(b & 15)] as char);
    }
    out
}

fn unhex(text: &str) -> Result<Vec<u8>> {
    let bad = || Error::InvalidEvent("payload_hex must be an even number of hex digits".into());
    if !text.len().is_multiple_of(2) {
        return Err(bad());
    }
    text.as_bytes()
        .chunks(2)
        .map(|pair| {
            let digit = |c: u8| (c as char).to_digit(16).ok_or_else(bad);
            Ok((digit(pair[0])? * 16 + digit(pair[1])?) as u8)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_round_trip_at_microsecond_precision() {
        for us in [0i64, 1, 1_767_225_600_000_001, 1_767_225_600_123_456] {
            assert_eq!(parse_timestamp(&format_timestamp(us)).unwrap(), us);
        }
        assert_eq!(
            format_timestamp(1_767_225_600_000_000),
            "2026-01-01T00:00:00.000000Z"
        );
        assert_eq!(
            parse_timestamp("2026-01-01T01:00:00+01:00").unwrap(),
            1_767_225_600_000_000
        );
    }

    #[test]
    fn json_rejects_unknown_fields_and_bad_values() {
        assert!(event_from_json(r#"{"type":"a.b","colour":"red"}"#).is_err());
        assert!(event_from_json(r#"{"type":"a..b"}"#).is_err());
        assert!(event_from_json(r#"{"type":"a","priority":"P9"}"#).is_err());
        assert!(event_from_json(r#"{"type":"a","payload_hex":"zz"}"#).is_err());
        assert!(event_from_json(r#"{"type":"a""#).is_err());
        let event = event_from_json(
            r#"{"type":"a.b","entity":{"type":"task","id":"T-1"},"priority":"P0","payload":{"x":1},"metadata":{"k":"v"}}"#,
        )
        .unwrap();
        assert_eq!(event.priority, Priority::P0);
        assert_eq!(event.payload, Payload::Json("{\"x\":1}".into()));
    }

    #[test]
    fn hex_round_trips() {
        let bytes: Vec<u8> = (0..=255).collect();
        assert_eq!(unhex(&hex(&bytes)).unwrap(), bytes);
    }
}
