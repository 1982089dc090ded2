//! The JSON form of events used by the command-line tools: one object per
//! event with the field names `seq, id, type, timestamp, correlation_id,
//! causation_id, entity {type, id}, actor, session, priority, traceparent,
//! metadata, payload` (plus `payload_hex` for byte payloads), and on input
//! only `expected_version` (a conditional append; not stored). Other
//! programs rely on these names; extend, never rename.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::compact::compact_json;
use crate::error::{Error, Result};
use crate::event::{Event, LoggedEvent, Payload, Priority};

#[derive(Deserialize)]
struct EntityJson {
    #[serde(rename = "type")]
    entity_type: String,
    id: String,
}

/// The wire form read by `event_from_json`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EventJsonIn {
    #[serde(default)]
    #[allow(dead_code)] // accepted so that `replay` output can be appended
    seq: Option<u64>,
    #[serde(default)]
    id: Option<Uuid>,
    #[serde(rename = "type")]
    event_type: String,
    #[serde(default)]
    timestamp: Option<serde_json::Value>,
    #[serde(default)]
    correlation_id: Option<Uuid>,
    #[serde(default)]
    causation_id: Option<Uuid>,
    #[serde(default)]
    entity: Option<EntityJson>,
    #[serde(default)]
    actor: Option<String>,
    #[serde(default)]
    session: Option<String>,
    #[serde(default)]
    priority: Option<String>,
    #[serde(default)]
    traceparent: Option<String>,
    #[serde(default)]
    metadata: BTreeMap<String, String>,
    /// The payload's own text: parsing it into a `serde_json::Value` would
    /// turn big integers into floats and respell numbers.
    #[serde(default)]
    payload: Option<Box<RawValue>>,
    #[serde(default)]
    payload_hex: Option<String>,
    /// Makes the append conditional (never stored, so never written out).
    #[serde(default)]
    expected_version: Option<u64>,
}

#[derive(Serialize)]
struct EntityJsonOut<'a> {
    #[serde(rename = "type")]
    entity_type: &'a str,
    id: &'a str,
}

/// The wire form written for a stored event, fields in output order;
/// optional fields are omitted when absent.
#[derive(Serialize)]
struct EventJsonOut<'a> {
    seq: u64,
    id: Uuid,
    #[serde(rename = "type")]
    event_type: &'a str,
    timestamp: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    correlation_id: Option<Uuid>,
    #[serde(skip_serializing_if = "Option::is_none")]
    causation_id: Option<Uuid>,
    #[serde(skip_serializing_if = "Option::is_none")]
    entity: Option<EntityJsonOut<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    actor: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    session: Option<&'a str>,
    priority: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    traceparent: Option<&'a str>,
    #[serde(skip_serializing_if = "no_metadata")]
    metadata: &'a BTreeMap<String, String>,
    /// The stored JSON text, written as it is.
    #[serde(skip_serializing_if = "Option::is_none")]
    payload: Option<Box<RawValue>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    payload_hex: Option<String>,
    /// Only in `evlog-dump --json` lines: the record's offset in its file.
    #[serde(rename = "_offset", skip_serializing_if = "Option::is_none")]
    offset: Option<u64>,
}

fn no_metadata(metadata: &&BTreeMap<String, String>) -> bool {
    metadata.is_empty()
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
    let t = OffsetDateTime::parse(text, &Rfc3339).map_err(|e| {
        Error::InvalidEvent(format!(
            "timestamp {:?} is not RFC 3339: {e}",
            crate::event::shorten_for_message(text)
        ))
    })?;
    Ok((t.unix_timestamp_nanos() / 1000) as i64)
}

/// The JSON object of a stored event, as one line of compact JSON text
/// (print it with `{}`, or embed it in other serialized JSON as it is).
///
/// The `payload` is the stored JSON text itself, so numbers and strings
/// come out exactly as they were appended: `123456789012345678901234567890`
/// or `1.5e-300` stay as written, which a `serde_json::Value` could not
/// hold.
pub fn event_to_json(event: &LoggedEvent) -> Box<RawValue> {
    event_json(event, None)
}

/// [`event_to_json`], with an `_offset` field last when `offset` is given.
pub(crate) fn event_json(event: &LoggedEvent, offset: Option<u64>) -> Box<RawValue> {
    let (payload, payload_hex) = match &event.payload {
        Payload::Empty => (None, None),
        Payload::Json(text) => (Some(stored_json(text)), None),
        Payload::Bytes(bytes) => (None, Some(hex(bytes))),
    };
    let wire = EventJsonOut {
        seq: event.seq,
        id: event.id,
        event_type: &event.event_type,
        timestamp: format_timestamp(event.timestamp_us),
        correlation_id: event.correlation_id,
        causation_id: event.causation_id,
        entity: event.entity.as_ref().map(|e| EntityJsonOut {
            entity_type: &e.entity_type,
            id: &e.entity_id,
        }),
        actor: event.actor.as_deref(),
        session: event.session.as_deref(),
        priority: event.priority.to_string(),
        traceparent: event.traceparent.as_deref(),
        metadata: &event.metadata,
        payload,
        payload_hex,
        offset,
    };
    // Cannot fail: every map key is a string and there are no floats.
    serde_json::value::to_raw_value(&wire).unwrap_or_else(|_| RawValue::NULL.to_owned())
}

/// A stored JSON payload as a raw JSON value. The library stores only text
/// that parses, but a payload appended through `Payload::Json` may still
/// hold whitespace (and newlines, which would split a JSON line): it is
/// compacted. Text that does not parse is written as a JSON string rather
/// than dropped.
fn stored_json(text: &str) -> Box<RawValue> {
    let compacted = compact_json(text).unwrap_or_else(|| text.to_owned());
    RawValue::from_string(compacted).unwrap_or_else(|_| {
        serde_json::value::to_raw_value(text).unwrap_or_else(|_| RawValue::NULL.to_owned())
    })
}

/// Parses one JSON object into an event to append. `type` is required;
/// `seq` is ignored (the log assigns it), so `replay` output can be
/// appended to another log. `timestamp`, when given, must be an RFC 3339
/// string (any offset); a number is refused rather than guessed at (seconds?
/// microseconds?). `payload` is kept as written, without the whitespace
/// between its tokens. `expected_version`, a non-negative integer, makes
/// the append conditional (see [`Event::expected_version`]).
pub fn event_from_json(text: &str) -> Result<Event> {
    let event = event_from_json_unchecked(text)?;
    event.validate()?;
    Ok(event)
}

/// [`event_from_json`] without the final checks of the event (the append
/// makes them anyway), for a caller that must first mark a copied
/// bookkeeping event as such.
pub(crate) fn event_from_json_unchecked(text: &str) -> Result<Event> {
    let wire: EventJsonIn = serde_json::from_str(text).map_err(Error::EventJson)?;
    let mut event = Event::new(wire.event_type);
    if let Some(id) = wire.id {
        event = event.id(id);
    }
    match wire.timestamp {
        None | Some(serde_json::Value::Null) => {}
        Some(serde_json::Value::String(s)) => event = event.timestamp_us(parse_timestamp(&s)?),
        Some(serde_json::Value::Number(_)) => {
            return Err(Error::InvalidEvent(
                "timestamp must be an RFC 3339 string such as 2026-01-01T00:00:00Z, not a number"
                    .into(),
            ))
        }
        Some(other) => {
            return Err(Error::InvalidEvent(format!(
                "timestamp must be an RFC 3339 string such as 2026-01-01T00:00:00Z, not {}",
                crate::event::shorten_for_message(&other.to_string())
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
        // Parsing the line parsed the payload: it is JSON.
        (Some(raw), None) => event = event.json_payload_parsed(Box::<str>::from(raw).into()),
        (None, Some(hex_text)) => event = event.bytes_payload(unhex(&hex_text)?),
        (None, None) => {}
    }
    if let Some(expected) = wire.expected_version {
        event = event.expected_version(expected);
    }
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

    // `expected_version` is read as a count and needs an entity; a
    // negative or fractional one is refused like any ill-typed field.
    #[test]
    fn json_expected_version_is_a_count_with_an_entity() {
        let event = event_from_json(
            r#"{"type":"a.b","entity":{"type":"task","id":"T-1"},"expected_version":3}"#,
        )
        .unwrap();
        assert_eq!(event.get_expected_version(), Some(3));
        assert_eq!(
            event_from_json(r#"{"type":"a.b"}"#)
                .unwrap()
                .get_expected_version(),
            None
        );
        for bad in [
            r#"{"type":"a.b","entity":{"type":"task","id":"T-1"},"expected_version":-1}"#,
            r#"{"type":"a.b","entity":{"type":"task","id":"T-1"},"expected_version":1.5}"#,
            r#"{"type":"a.b","entity":{"type":"task","id":"T-1"},"expected_version":"1"}"#,
        ] {
            assert!(
                matches!(event_from_json(bad), Err(Error::EventJson(_))),
                "{bad} accepted"
            );
        }
        assert!(matches!(
            event_from_json(r#"{"type":"a.b","expected_version":0}"#),
            Err(Error::InvalidEvent(m)) if m.contains("without an entity")
        ));
    }

    // A 100 KB mistake is quoted in the message by its start and its
    // length, wherever it is, and a one-line input's position is a column.
    #[test]
    fn json_errors_cut_long_input_and_give_the_column() {
        let long = "z".repeat(100_000);
        for line in [
            format!(r#"{{"type":"{long}"}}"#),
            format!(r#"{{"type":"a.b","{long}":1}}"#),
            format!(r#"{{"type":"a.b","timestamp":"{long}"}}"#),
            format!(r#"{{"type":"a.b","timestamp":["{long}"]}}"#),
            format!(
                r#"{{"type":"a.b","entity":{{"type":"t","id":"x"}},"expected_version":"{long}"}}"#
            ),
        ] {
            let message = event_from_json(&line).unwrap_err().to_string();
            assert!(
                message.len() < 400,
                "{} bytes: {}",
                message.len(),
                &message[..400]
            );
            assert!(message.contains("... (1000"), "{message}");
        }
        let message = event_from_json(r#"{"type":"a.b"} junk"#)
            .unwrap_err()
            .to_string();
        assert_eq!(
            message,
            "not a valid event object: trailing characters at column 16"
        );
        let message = event_from_json("{\"type\":\n\"a.b\",,}")
            .unwrap_err()
            .to_string();
        assert!(message.ends_with(" at line 2 column 7"), "{message}");
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

    fn logged(payload: Payload) -> LoggedEvent {
        LoggedEvent {
            seq: 7,
            id: Uuid::from_u128(1),
            event_type: "a.b".into(),
            timestamp_us: 1_767_225_600_000_001,
            correlation_id: None,
            causation_id: None,
            entity: None,
            actor: None,
            session: None,
            priority: Priority::P2,
            traceparent: None,
            metadata: BTreeMap::new(),
            payload,
        }
    }

    // The field names and their order are a contract.
    #[test]
    fn output_has_the_contract_fields_in_order() {
        let mut event = logged(Payload::Json(r#"{"x":[1,2]}"#.into()));
        event.correlation_id = Some(Uuid::from_u128(2));
        event.causation_id = Some(Uuid::from_u128(3));
        event.entity = Some(crate::event::Entity {
            entity_type: "task".into(),
            entity_id: "T-1".into(),
        });
        event.actor = Some("agent".into());
        event.session = Some("s".into());
        event.traceparent = Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into());
        event.metadata.insert("k".into(), "v".into());
        assert_eq!(
            event_to_json(&event).get(),
            concat!(
                r#"{"seq":7,"id":"00000000-0000-0000-0000-000000000001","type":"a.b","#,
                r#""timestamp":"2026-01-01T00:00:00.000001Z","#,
                r#""correlation_id":"00000000-0000-0000-0000-000000000002","#,
                r#""causation_id":"00000000-0000-0000-0000-000000000003","#,
                r#""entity":{"type":"task","id":"T-1"},"actor":"agent","session":"s","#,
                r#""priority":"P2","#,
                r#""traceparent":"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01","#,
                r#""metadata":{"k":"v"},"payload":{"x":[1,2]}}"#
            )
        );
        assert_eq!(
            event_to_json(&logged(Payload::Bytes(vec![0, 255]))).get(),
            concat!(
                r#"{"seq":7,"id":"00000000-0000-0000-0000-000000000001","type":"a.b","#,
                r#""timestamp":"2026-01-01T00:00:00.000001Z","priority":"P2","payload_hex":"00ff"}"#
            )
        );
        assert_eq!(
            event_json(&logged(Payload::Empty), Some(42)).get(),
            concat!(
                r#"{"seq":7,"id":"00000000-0000-0000-0000-000000000001","type":"a.b","#,
                r#""timestamp":"2026-01-01T00:00:00.000001Z","priority":"P2","_offset":42}"#
            )
        );
    }

    // Payload text goes in and comes out as written (less whitespace
    // between tokens), which a `serde_json::Value` could not do.
    #[test]
    fn payload_text_round_trips_exactly() {
        let cases = [
            (
                r#"{"n":123456789012345678901234567890,"f":1.5e-300}"#,
                r#"{"n":123456789012345678901234567890,"f":1.5e-300}"#,
            ),
            (
                "[ 5e-324 , 1.7976931348623157e308 , -0.0 , -9223372036854775809 ]",
                "[5e-324,1.7976931348623157e308,-0.0,-9223372036854775809]",
            ),
            (
                "{ \"long\" : 3.14159265358979323846264338327950288419716939937510 }",
                r#"{"long":3.14159265358979323846264338327950288419716939937510}"#,
            ),
            (
                "{\"s\": \"\\u00e9\\ud83d\\ude00\\n \\\" \", \"t\" : \"é\"}",
                r#"{"s":"\u00e9\ud83d\ude00\n \" ","t":"é"}"#,
            ),
            (
                "{ \"b\" : { \"a\" : [ [ ] , { } , null ] } , \"a\" : true }",
                r#"{"b":{"a":[[],{},null]},"a":true}"#,
            ),
        ];
        for (given, stored) in cases {
            let line = format!(r#"{{"type":"a.b", "payload" : {given} }}"#);
            let event = event_from_json(&line).unwrap();
            assert_eq!(event.payload, Payload::Json(stored.into()), "{given}");
            let out = event_to_json(&logged(event.payload.clone()));
            assert!(
                out.get().ends_with(&format!(r#","payload":{stored}}}"#)),
                "{out}"
            );
            // What `replay` prints can be appended again, unchanged.
            let again = event_from_json(out.get()).unwrap();
            assert_eq!(again.payload, event.payload);
        }
        // `null` is no payload, as before.
        let event = event_from_json(r#"{"type":"a","payload":null}"#).unwrap();
        assert_eq!(event.payload, Payload::Empty);
    }

    // A payload set through `Payload::Json` may hold whitespace: output is
    // still one line. Text that does not parse (not written by this
    // library) comes out as a JSON string.
    #[test]
    fn stored_payloads_print_as_one_line() {
        let out = event_to_json(&logged(Payload::Json("{\n  \"a\": 1\n}".into())));
        assert!(out.get().ends_with(r#""payload":{"a":1}}"#), "{out}");
        let out = event_to_json(&logged(Payload::Json("{\"a\":\n".into())));
        assert!(out.get().ends_with(r#""payload":"{\"a\":\n"}"#), "{out}");
        assert!(!out.get().contains('\n'));
    }

    #[test]
    fn numeric_and_out_of_range_timestamps_are_refused() {
        for line in [
            r#"{"type":"a","timestamp":1767225600000000}"#,
            r#"{"type":"a","timestamp":0}"#,
            r#"{"type":"a","timestamp":1.5}"#,
        ] {
            match event_from_json(line) {
                Err(Error::InvalidEvent(message)) => assert_eq!(
                    message,
                    "timestamp must be an RFC 3339 string such as 2026-01-01T00:00:00Z, not a number"
                ),
                other => panic!("{line}: {other:?}"),
            }
        }
        assert!(event_from_json(r#"{"type":"a","timestamp":true}"#).is_err());
        assert!(event_from_json(r#"{"type":"a","timestamp":"0000-12-31T23:59:59Z"}"#).is_err());
        assert!(event_from_json(r#"{"type":"a","timestamp":"0001-01-01T00:00:00Z"}"#).is_ok());
        assert!(
            event_from_json(r#"{"type":"a","timestamp":"9999-12-31T23:59:59.999999Z"}"#).is_ok()
        );
        // An offset can move a year-9999 local time past the end in UTC.
        assert!(
            event_from_json(r#"{"type":"a","timestamp":"9999-12-31T23:00:00-01:00"}"#).is_err()
        );
        assert!(event_from_json(r#"{"type":"a","timestamp":null}"#).is_ok());
    }

    #[test]
    fn hex_round_trips() {
        let bytes: Vec<u8> = (0..=255).collect();
        assert_eq!(unhex(&hex(&bytes)).unwrap(), bytes);
    }
}
