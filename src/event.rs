//! The event model: what callers append and what reads give back.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::de::DeserializeOwned;
use serde::Serialize;
use uuid::Uuid;

use crate::error::{Error, Result};

/// Longest accepted event type, in bytes. Long enough for any sensible
/// dotted name, short enough that type indexes stay small.
pub const EVENT_TYPE_BYTES_MAX: usize = 255;
/// Longest accepted actor, session, entity type/id, traceparent or metadata
/// key, in bytes.
pub const FIELD_BYTES_MAX: usize = 1024;
/// Most metadata entries on one event: metadata is for small tags, the
/// payload is for data.
pub const METADATA_ENTRIES_MAX: usize = 64;

/// How much an event matters; retention policies act on it. `P0` is the most
/// important.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub enum Priority {
    P0,
    P1,
    #[default]
    P2,
    P3,
}

impl Priority {
    /// The byte stored on disk (0..=3).
    pub fn as_u8(self) -> u8 {
        match self {
            Priority::P0 => 0,
            Priority::P1 => 1,
            Priority::P2 => 2,
            Priority::P3 => 3,
        }
    }

    /// Inverse of [`Priority::as_u8`].
    pub fn from_u8(value: u8) -> Option<Priority> {
        match value {
            0 => Some(Priority::P0),
            1 => Some(Priority::P1),
            2 => Some(Priority::P2),
            3 => Some(Priority::P3),
            _ => None,
        }
    }
}

impl fmt::Display for Priority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "P{}", self.as_u8())
    }
}

impl FromStr for Priority {
    type Err = Error;
    fn from_str(s: &str) -> Result<Priority> {
        match s {
            "P0" => Ok(Priority::P0),
            "P1" => Ok(Priority::P1),
            "P2" => Ok(Priority::P2),
            "P3" => Ok(Priority::P3),
            other => Err(Error::InvalidEvent(format!(
                "priority must be one of P0, P1, P2, P3, not {other:?}"
            ))),
        }
    }
}

/// The business object an event is about, such as `("task", "T-1")`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Entity {
    pub entity_type: String,
    pub entity_id: String,
}

/// The body of an event.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Payload {
    /// No payload.
    #[default]
    Empty,
    /// Compact JSON text; guaranteed to parse as JSON.
    Json(String),
    /// Opaque bytes.
    Bytes(Vec<u8>),
}

impl Payload {
    /// The stored bytes of the payload.
    pub fn as_bytes(&self) -> &[u8] {
        match self {
            Payload::Empty => &[],
            Payload::Json(text) => text.as_bytes(),
            Payload::Bytes(bytes) => bytes,
        }
    }
}

/// Checks that `name` is a dotted event type: one or more segments of
/// `[A-Za-z0-9_-]`, separated by single dots.
pub fn validate_event_type(name: &str) -> Result<()> {
    let fail = |reason| {
        Err(Error::InvalidEventType {
            name: name.to_string(),
            reason,
        })
    };
    if name.is_empty() {
        return fail("empty");
    }
    if name.len() > EVENT_TYPE_BYTES_MAX {
        return fail("longer than 255 bytes");
    }
    for segment in name.split('.') {
        if segment.is_empty() {
            return fail("empty segment (leading, trailing or doubled dot)");
        }
        if !segment
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        {
            return fail("segments may only hold A-Z, a-z, 0-9, '_' and '-'");
        }
    }
    Ok(())
}

/// Checks a W3C trace-context `traceparent` value:
/// `version-traceid-parentid-flags` as 2, 32, 16 and 2 lowercase hex digits,
/// version not `ff`, and neither id all zeros.
pub fn validate_traceparent(value: &str) -> Result<()> {
    let fail = |why: &str| {
        Err(Error::InvalidEvent(format!(
            "traceparent {value:?} is not W3C trace context: {why}"
        )))
    };
    let parts: Vec<&str> = value.split('-').collect();
    let [version, trace_id, parent_id, flags] = parts.as_slice() else {
        return fail("expected four dash-separated fields");
    };
    let lower_hex = |s: &str, len: usize| {
        s.len() == len
            && s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    if !lower_hex(version, 2) || *version == "ff" {
        return fail("version must be two lowercase hex digits, not ff");
    }
    if !lower_hex(trace_id, 32) || trace_id.bytes().all(|b| b == b'0') {
        return fail("trace-id must be 32 lowercase hex digits, not all zero");
    }
    if !lower_hex(parent_id, 16) || parent_id.bytes().all(|b| b == b'0') {
        return fail("parent-id must be 16 lowercase hex digits, not all zero");
    }
    if !lower_hex(flags, 2) {
        return fail("flags must be two lowercase hex digits");
    }
    Ok(())
}

/// Whether a dotted `event_type` matches a dotted `pattern`.
///
/// In a pattern, `*` stands for exactly one segment, except as the last
/// segment, where it stands for one or more: `validation.*` matches
/// `validation.phase.completed`, and `*.error.*` matches `db.error.timeout`.
pub fn type_matches(pattern: &str, event_type: &str) -> bool {
    let mut pattern_segments = pattern.split('.').peekable();
    let mut type_segments = event_type.split('.');
    while let Some(p) = pattern_segments.next() {
        let is_last = pattern_segments.peek().is_none();
        match type_segments.next() {
            None => return false,
            Some(t) => {
                if p == "*" {
                    if is_last {
                        return true;
                    }
                } else if p != t {
                    return false;
                }
            }
        }
    }
    type_segments.next().is_none()
}

/// An event to append. Build it with [`Event::new`] and the setters; the log
/// assigns the id (UUID v7) and timestamp when they are not set.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub(crate) id: Option<Uuid>,
    pub(crate) event_type: String,
    pub(crate) timestamp_us: Option<i64>,
    pub(crate) correlation_id: Option<Uuid>,
    pub(crate) causation_id: Option<Uuid>,
    pub(crate) entity: Option<Entity>,
    pub(crate) actor: Option<String>,
    pub(crate) session: Option<String>,
    pub(crate) priority: Priority,
    pub(crate) traceparent: Option<String>,
    pub(crate) metadata: BTreeMap<String, String>,
    pub(crate) payload: Payload,
    /// True when the JSON payload was produced by `serde_json` here, so
    /// `validate` need not parse it again.
    payload_is_known_json: bool,
}

impl Event {
    /// A new event of a dotted type such as `task.status_changed`. The type
    /// is checked when the event is appended.
    pub fn new(event_type: impl Into<String>) -> Event {
        Event {
            id: None,
            event_type: event_type.into(),
            timestamp_us: None,
            correlation_id: None,
            causation_id: None,
            entity: None,
            actor: None,
            session: None,
            priority: Priority::default(),
            traceparent: None,
            metadata: BTreeMap::new(),
            payload: Payload::Empty,
            payload_is_known_json: false,
        }
    }

    /// Sets the id; by default the log assigns a fresh UUID v7.
    pub fn id(mut self, id: Uuid) -> Event {
        self.id = Some(id);
        self
    }
    /// Sets the timestamp in microseconds since the Unix epoch (UTC); by
    /// default the log uses the time of the append.
    pub fn timestamp_us(mut self, timestamp_us: i64) -> Event {
        self.timestamp_us = Some(timestamp_us);
        self
    }
    pub fn correlation_id(mut self, id: Uuid) -> Event {
        self.correlation_id = Some(id);
        self
    }
    pub fn causation_id(mut self, id: Uuid) -> Event {
        self.causation_id = Some(id);
        self
    }
    pub fn entity(mut self, entity_type: impl Into<String>, entity_id: impl Into<String>) -> Event {
        self.entity = Some(Entity {
            entity_type: entity_type.into(),
            entity_id: entity_id.into(),
        });
        self
    }
    pub fn actor(mut self, actor: impl Into<String>) -> Event {
        self.actor = Some(actor.into());
        self
    }
    pub fn session(mut self, session: impl Into<String>) -> Event {
        self.session = Some(session.into());
        self
    }
    pub fn priority(mut self, priority: Priority) -> Event {
        self.priority = priority;
        self
    }
    /// Sets a W3C trace context `traceparent` header value.
    pub fn traceparent(mut self, traceparent: impl Into<String>) -> Event {
        self.traceparent = Some(traceparent.into());
        self
    }
    /// Adds one string metadata entry.
    pub fn metadata(mut self, key: impl Into<String>, value: impl Into<String>) -> Event {
        self.metadata.insert(key.into(), value.into());
        self
    }
    /// Sets the payload to the JSON form of any serializable value.
    pub fn json_payload<T: Serialize + ?Sized>(mut self, value: &T) -> Result<Event> {
        let text = serde_json::to_string(value).map_err(Error::Payload)?;
        self.payload = Payload::Json(text);
        self.payload_is_known_json = true;
        Ok(self)
    }
    /// Sets the payload to opaque bytes.
    pub fn bytes_payload(mut self, bytes: impl Into<Vec<u8>>) -> Event {
        self.payload = Payload::Bytes(bytes.into());
        self.payload_is_known_json = false;
        self
    }
    /// Sets the payload directly; JSON text is checked on append.
    pub fn payload(mut self, payload: Payload) -> Event {
        self.payload = payload;
        self.payload_is_known_json = false;
        self
    }

    /// The id set on this event, or a fresh UUID v7 (not stored: pass it
    /// back with [`Event::id`] to use it).
    pub fn id_or_new(&self) -> Uuid {
        self.id.unwrap_or_else(Uuid::now_v7)
    }

    /// The event type as given.
    pub fn event_type(&self) -> &str {
        &self.event_type
    }

    /// Checks every field against the limits; called on append.
    pub(crate) fn validate(&self) -> Result<()> {
        validate_event_type(&self.event_type)?;
        let check = |what: &str, value: &str| {
            if value.len() > FIELD_BYTES_MAX {
                Err(Error::InvalidEvent(format!(
                    "{what} is {} bytes, over the limit of {FIELD_BYTES_MAX}",
                    value.len()
                )))
            } else {
                Ok(())
            }
        };
        if let Some(entity) = &self.entity {
            check("entity type", &entity.entity_type)?;
            check("entity id", &entity.entity_id)?;
        }
        for (what, value) in [
            ("actor", &self.actor),
            ("session", &self.session),
            ("traceparent", &self.traceparent),
        ] {
            if let Some(value) = value {
                check(what, value)?;
            }
        }
        if self.metadata.len() > METADATA_ENTRIES_MAX {
            return Err(Error::InvalidEvent(format!(
                "{} metadata entries, over the limit of {METADATA_ENTRIES_MAX}",
                self.metadata.len()
            )));
        }
        for key in self.metadata.keys() {
            check("metadata key", key)?;
        }
        if let Some(traceparent) = &self.traceparent {
            validate_traceparent(traceparent)?;
        }
        if let Payload::Json(text) = &self.payload {
            if !self.payload_is_known_json {
                serde_json::from_str::<serde::de::IgnoredAny>(text).map_err(Error::Payload)?;
            }
        }
        Ok(())
    }
}

/// An event as stored in the log, with its sequence number.
#[derive(Debug, Clone, PartialEq)]
pub struct LoggedEvent {
    pub seq: u64,
    pub id: Uuid,
    pub event_type: String,
    /// Microseconds since the Unix epoch, UTC.
    pub timestamp_us: i64,
    pub correlation_id: Option<Uuid>,
    pub causation_id: Option<Uuid>,
    pub entity: Option<Entity>,
    pub actor: Option<String>,
    pub session: Option<String>,
    pub priority: Priority,
    pub traceparent: Option<String>,
    pub metadata: BTreeMap<String, String>,
    pub payload: Payload,
}

impl LoggedEvent {
    /// Reads a JSON payload back into any deserializable type.
    pub fn payload_as<T: DeserializeOwned>(&self) -> Result<T> {
        match &self.payload {
            Payload::Json(text) => serde_json::from_str(text).map_err(Error::Payload),
            Payload::Empty => serde_json::from_str("null").map_err(Error::Payload),
            Payload::Bytes(bytes) => serde_json::from_slice(bytes).map_err(Error::Payload),
        }
    }

    /// Whether the event type matches a dotted wildcard pattern (see
    /// [`type_matches`]).
    pub fn matches(&self, pattern: &str) -> bool {
        type_matches(pattern, &self.event_type)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_type_validation_rejects_bad_names() {
        assert!(validate_event_type("task.status_changed").is_ok());
        assert!(validate_event_type("a").is_ok());
        for bad in ["", ".a", "a.", "a..b", "a b", "a.ü", "a/b"] {
            assert!(validate_event_type(bad).is_err(), "{bad:?} accepted");
        }
        assert!(validate_event_type(&"a".repeat(256)).is_err());
        assert!(validate_event_type(&"a".repeat(255)).is_ok());
    }

    #[test]
    fn type_pattern_wildcards() {
        assert!(type_matches("validation.*", "validation.phase.completed"));
        assert!(type_matches("validation.*", "validation.x"));
        assert!(!type_matches("validation.*", "validation"));
        assert!(!type_matches("validation.*", "performance.metric"));
        assert!(type_matches("*.error.*", "db.error.timeout"));
        assert!(!type_matches("*.error.*", "db.warn.timeout"));
        assert!(type_matches("a.b", "a.b"));
        assert!(!type_matches("a.b", "a.b.c"));
        assert!(type_matches("*.b", "a.b"));
        assert!(!type_matches("*.b", "a.b.c"));
    }

    #[test]
    fn traceparent_validation_follows_w3c() {
        assert!(
            validate_traceparent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").is_ok()
        );
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
        ] {
            assert!(validate_traceparent(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn invalid_json_payload_is_refused_unless_built_here() {
        let raw = Event::new("a").payload(Payload::Json("{not json".into()));
        assert!(raw.validate().is_err());
        let built = Event::new("a")
            .json_payload(&serde_json::json!({"k": [1, 2]}))
            .unwrap();
        assert!(built.validate().is_ok());
    }

    #[test]
    fn priority_round_trips() {
        for p in [Priority::P0, Priority::P1, Priority::P2, Priority::P3] {
            assert_eq!(Priority::from_u8(p.as_u8()), Some(p));
            assert_eq!(p.to_string().parse::<Priority>().unwrap(), p);
        }
        assert_eq!(Priority::from_u8(4), None);
    }
}
