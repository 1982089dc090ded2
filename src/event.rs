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
/// Earliest accepted timestamp: 0001-01-01T00:00:00Z, in microseconds
/// since the Unix epoch. Years 1 to 9999 are what RFC 3339, the JSON form's
/// timestamp format, can write.
pub const TIMESTAMP_US_MIN: i64 = -62_135_596_800_000_000;
/// Latest accepted timestamp: 9999-12-31T23:59:59.999999Z, in microseconds
/// since the Unix epoch.
pub const TIMESTAMP_US_MAX: i64 = 253_402_300_799_999_999;

/// The metadata key that holds an event's schema version (see
/// [`Event::schema_version`]).
pub const SCHEMA_VERSION_KEY: &str = "schema_version";

/// How much an event matters; retention policies act on it. `P0` is the most
/// important.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub enum Priority {
    /// The most important.
    P0,
    /// Important.
    P1,
    /// Ordinary (the default).
    #[default]
    P2,
    /// The least important.
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
    /// The kind of entity, such as `task` or `account`.
    pub entity_type: String,
    /// The entity's id within its type.
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
            name: shorten_for_message(name),
            reason,
        })
    };
    if name.is_empty() {
        return fail("empty");
    }
    if name.len() > EVENT_TYPE_BYTES_MAX {
        return fail("longer than 255 bytes");
    }
    // One pass over the bytes (this runs for every appended event): a dot
    // may not start or end the name or follow another dot.
    let mut previous_was_dot = true;
    for &b in name.as_bytes() {
        if b == b'.' {
            if previous_was_dot {
                return fail("empty segment (leading, trailing or doubled dot)");
            }
            previous_was_dot = true;
        } else if b.is_ascii_alphanumeric() || b == b'_' || b == b'-' {
            previous_was_dot = false;
        } else {
            return fail("segments may only hold A-Z, a-z, 0-9, '_' and '-'");
        }
    }
    if previous_was_dot {
        return fail("empty segment (leading, trailing or doubled dot)");
    }
    Ok(())
}

/// Input echoed in an error message: whole when short, else its start and
/// its length, so that a 100 KB mistake does not flood the terminal.
pub fn shorten_for_message(text: &str) -> String {
    const SHOWN_BYTES_MAX: usize = 64;
    if text.len() <= SHOWN_BYTES_MAX {
        return text.to_string();
    }
    let mut end = SHOWN_BYTES_MAX;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}... ({} bytes)", &text[..end], text.len())
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
    // Checked on every append that carries one: no allocation.
    let mut parts = value.split('-');
    let (Some(version), Some(trace_id), Some(parent_id), Some(flags), None) = (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) else {
        return fail("expected four dash-separated fields");
    };
    let lower_hex = |s: &str, len: usize| {
        s.len() == len
            && s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    if !lower_hex(version, 2) || version == "ff" {
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
///
/// ```
/// use evlog::{Event, Priority, Uuid};
/// # fn main() -> evlog::Result<()> {
/// let request = Uuid::now_v7();
/// let event = Event::new("invoice.paid")
///     .correlation_id(request)
///     .entity("invoice", "INV-7")
///     .actor("billing")
///     .priority(Priority::P1)
///     .metadata("region", "eu")
///     .json_payload(&serde_json::json!({"amount_cents": 1250}))?;
/// let log = evlog::Log::open_temporary(evlog::Options::default())?;
/// let stored = log.get(log.append(event)?)?;
/// assert_eq!(stored.correlation_id, Some(request));
/// assert_eq!(stored.metadata["region"], "eu");
/// # Ok(()) }
/// ```
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
    /// How many events the entity must have before this one; checked by
    /// the writer, never stored.
    pub(crate) expected_version: Option<u64>,
    /// True when the JSON payload is known to parse (written by
    /// `serde_json`, or already parsed when it was set), so `validate` need
    /// not parse it again.
    payload_is_known_json: bool,
    /// Written by evlog itself (a consumer's same-batch commit): the only
    /// events allowed a type under `evlog.`.
    bookkeeping: bool,
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
            expected_version: None,
            payload_is_known_json: false,
            bookkeeping: false,
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
    /// The id of the request or workflow this event belongs to (see [`crate::Log::by_correlation`]).
    pub fn correlation_id(mut self, id: Uuid) -> Event {
        self.correlation_id = Some(id);
        self
    }
    /// The id of the event that caused this one (see [`crate::Log::causation_chain`]).
    pub fn causation_id(mut self, id: Uuid) -> Event {
        self.causation_id = Some(id);
        self
    }
    /// The entity this event is about; [`crate::Log::entity_history`] lists an entity's events.
    pub fn entity(mut self, entity_type: impl Into<String>, entity_id: impl Into<String>) -> Event {
        self.entity = Some(Entity {
            entity_type: entity_type.into(),
            entity_id: entity_id.into(),
        });
        self
    }
    /// Who or what did it (a user, an agent, a service).
    pub fn actor(mut self, actor: impl Into<String>) -> Event {
        self.actor = Some(actor.into());
        self
    }
    /// The session it happened in.
    pub fn session(mut self, session: impl Into<String>) -> Event {
        self.session = Some(session.into());
        self
    }
    /// How much it matters (default [`Priority::P2`]).
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
    /// Says which version of its type's payload schema the event follows,
    /// as the metadata entry [`SCHEMA_VERSION_KEY`] (the number in
    /// decimal): a [`crate::Contract`] made for one version applies only
    /// to events that carry it.
    pub fn schema_version(self, version: u32) -> Event {
        self.metadata(SCHEMA_VERSION_KEY, version.to_string())
    }
    /// Sets the payload to the JSON form of any serializable value.
    pub fn json_payload<T: Serialize + ?Sized>(mut self, value: &T) -> Result<Event> {
        let text = serde_json::to_string(value).map_err(Error::Payload)?;
        self.payload = Payload::Json(text);
        self.payload_is_known_json = true;
        Ok(self)
    }
    /// Sets the payload to JSON text as the caller wrote it: it must be one
    /// JSON value, and is stored without the whitespace between tokens but
    /// otherwise byte for byte, so it reads back with the same value and the
    /// same spelling (numbers of any size or precision, escapes, key order).
    /// The text is checked here, once, rather than on append.
    ///
    /// Fails with [`Error::Payload`] when `text` is not JSON.
    pub fn json_payload_text(self, text: impl Into<String>) -> Result<Event> {
        let text = text.into();
        serde_json::from_str::<&serde_json::value::RawValue>(&text).map_err(Error::Payload)?;
        Ok(self.json_payload_parsed(text))
    }
    /// Sets the payload to a JSON value that `serde_json` has already
    /// parsed as a [`serde_json::value::RawValue`] (a field of a request
    /// body deserialized as `Box<RawValue>`, say): its text is stored as
    /// [`Event::json_payload_text`] stores text, without being parsed a
    /// second time.
    ///
    /// ```
    /// # fn main() -> evlog::Result<()> {
    /// #[derive(serde::Deserialize)]
    /// struct Request<'a> {
    ///     #[serde(borrow)]
    ///     body: &'a serde_json::value::RawValue,
    /// }
    /// let request: Request = serde_json::from_str(r#"{"body": {"amount": 10.50}}"#).unwrap();
    /// let log = evlog::Log::open_temporary(evlog::Options::default())?;
    /// let seq = log.append(evlog::Event::new("payment.received").json_payload_raw(request.body))?;
    /// assert_eq!(log.get(seq)?.payload, evlog::Payload::Json(r#"{"amount":10.50}"#.into()));
    /// # Ok(()) }
    /// ```
    pub fn json_payload_raw(self, value: &serde_json::value::RawValue) -> Event {
        self.json_payload_parsed(value.get().to_string())
    }
    /// Sets the payload to JSON text that has already been parsed as one
    /// JSON value (by `serde_json`, for instance as a `RawValue`), compacted.
    pub(crate) fn json_payload_parsed(mut self, text: String) -> Event {
        let text = crate::compact::compact_json(&text).unwrap_or(text);
        self.payload = Payload::Json(text);
        self.payload_is_known_json = true;
        self
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

    /// Makes the append conditional: it succeeds only if the event's
    /// entity has exactly `count` events in the log before this one (0:
    /// "no events yet"), counting the events before it in the same
    /// request. Otherwise the whole request (the `append`, or the whole
    /// `append_batch`) fails with [`Error::VersionConflict`] naming the
    /// actual version, and nothing of it is written. The check and the
    /// append are one step of the writer thread, so of several threads
    /// that append with the same expected version exactly one succeeds.
    ///
    /// The event must have an [`Event::entity`]. The expected version is
    /// not stored with the event. An append whose caller-set id is already
    /// in the log (see [`crate::Options::dedup_window`]) returns the
    /// existing sequence number without checking the version, so that
    /// retrying a conditional append that succeeded is not a conflict.
    pub fn expected_version(mut self, count: u64) -> Event {
        self.expected_version = Some(count);
        self
    }

    /// The expected version set with [`Event::expected_version`], if any.
    pub fn get_expected_version(&self) -> Option<u64> {
        self.expected_version
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

    /// Checks every field against the limits; called on append, for every
    /// event, so it allocates nothing and parses a JSON payload only when
    /// it is not already known to be JSON.
    /// Marks an event evlog writes for its own bookkeeping.
    pub(crate) fn bookkeeping(mut self) -> Event {
        self.bookkeeping = true;
        self
    }

    /// Whether evlog itself wrote this event ([`Event::bookkeeping`]):
    /// the storm guard and the contracts leave such events alone.
    pub(crate) fn is_bookkeeping(&self) -> bool {
        self.bookkeeping
    }

    pub(crate) fn validate(&self) -> Result<()> {
        validate_event_type(&self.event_type)?;
        if !self.bookkeeping
            && self
                .event_type
                .starts_with(crate::subscribe::BOOKKEEPING_TYPE_PREFIX)
        {
            return Err(Error::InvalidEventType {
                name: shorten_for_message(&self.event_type),
                reason: "types under 'evlog.' are reserved for the log's own bookkeeping",
            });
        }
        if let Some(timestamp_us) = self.timestamp_us {
            if !(TIMESTAMP_US_MIN..=TIMESTAMP_US_MAX).contains(&timestamp_us) {
                return Err(Error::InvalidEvent(format!(
                    "timestamp {timestamp_us} (microseconds since 1970-01-01T00:00:00Z) \
                     is outside years 1 to 9999 UTC"
                )));
            }
        }
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
        } else if let Some(expected) = self.expected_version {
            return Err(Error::InvalidEvent(format!(
                "expected version {expected} given without an entity: a version is the count of an entity's events"
            )));
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
    /// Its sequence number: gap-free, assigned by the log at append.
    pub seq: u64,
    /// Its id (UUID v7 unless the caller set another).
    pub id: Uuid,
    /// Its dotted type name, such as `task.created`.
    pub event_type: String,
    /// Microseconds since the Unix epoch, UTC.
    pub timestamp_us: i64,
    /// The request or workflow it belongs to.
    pub correlation_id: Option<Uuid>,
    /// The id of the event that caused it.
    pub causation_id: Option<Uuid>,
    /// The entity it is about.
    pub entity: Option<Entity>,
    /// Who or what did it.
    pub actor: Option<String>,
    /// The session it happened in.
    pub session: Option<String>,
    /// How much it matters.
    pub priority: Priority,
    /// The W3C trace-context `traceparent` it was appended with, kept as given.
    pub traceparent: Option<String>,
    /// Free-form string pairs.
    pub metadata: BTreeMap<String, String>,
    /// The payload: empty, JSON text, or bytes.
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
        assert!(validate_event_type("A-b_9.x.y-z").is_ok());
        for bad in [
            "", ".", "..", ".a", "a.", "a..b", "a.b.", "a b", "a.ü", "a/b",
        ] {
            assert!(validate_event_type(bad).is_err(), "{bad:?} accepted");
        }
        match validate_event_type(&"a".repeat(100_000)) {
            Err(Error::InvalidEventType { name, .. }) => {
                assert_eq!(name, format!("{}... (100000 bytes)", "a".repeat(64)))
            }
            other => panic!("{other:?}"),
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
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-00",
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

    // What `json_payload` stores reads back as the same value, bit for bit
    // for floats (serde_json writes the shortest exact form and, with
    // `float_roundtrip`, parses it back exactly).
    #[test]
    fn json_payload_round_trips_extreme_numbers() {
        let floats = [
            1.5e-300,
            5e-324,
            1.7976931348623157e308,
            -0.0,
            0.1,
            std::f64::consts::PI,
            2.2250738585072014e-308,
            -123456.78901234567,
        ];
        for float in floats {
            let event = Event::new("a").json_payload(&float).unwrap();
            let Payload::Json(text) = &event.payload else {
                panic!("not JSON")
            };
            let back: f64 = serde_json::from_str(text).unwrap();
            assert_eq!(
                back.to_bits(),
                float.to_bits(),
                "{float:e} stored as {text}"
            );
            assert!(event.validate().is_ok());
        }
        for (value, text) in [
            (serde_json::json!(u64::MAX), "18446744073709551615"),
            (serde_json::json!(i64::MIN), "-9223372036854775808"),
            (serde_json::json!({"f": 1.5e-300}), r#"{"f":1.5e-300}"#),
        ] {
            let event = Event::new("a").json_payload(&value).unwrap();
            assert_eq!(event.payload, Payload::Json(text.into()));
        }
    }

    // Caller text is kept as written, except whitespace between tokens;
    // it is checked once, when set.
    #[test]
    fn json_payload_text_keeps_the_callers_text() {
        let cases = [
            (
                "{\"n\": 123456789012345678901234567890, \"f\": 1.5e-300}",
                r#"{"n":123456789012345678901234567890,"f":1.5e-300}"#,
            ),
            (
                "[5e-324, 1.7976931348623157e308, -0.0, -99999999999999999999999]",
                "[5e-324,1.7976931348623157e308,-0.0,-99999999999999999999999]",
            ),
            (
                "0.1000000000000000000000000000000000000001",
                "0.1000000000000000000000000000000000000001",
            ),
            (
                " { \"z\" : { \"y\" : [ 1 ,\n\t 2 ] } , \"a\" : \"\\u00e9\\ud83d\\ude00 \\\" x\" }\r\n",
                r#"{"z":{"y":[1,2]},"a":"\u00e9\ud83d\ude00 \" x"}"#,
            ),
            ("\"é 😀\"", "\"é 😀\""),
            ("1E+2", "1E+2"),
        ];
        for (given, stored) in cases {
            let event = Event::new("a").json_payload_text(given).unwrap();
            assert_eq!(event.payload, Payload::Json(stored.into()), "{given:?}");
            assert!(event.payload_is_known_json);
            assert!(event.validate().is_ok());
        }
        for bad in [
            "",
            "{not json",
            "[1,]",
            "1 2",
            "{\"a\":1}}",
            "\"\u{1}\"",
            "NaN",
        ] {
            assert!(
                matches!(
                    Event::new("a").json_payload_text(bad),
                    Err(Error::Payload(_))
                ),
                "{bad:?} accepted"
            );
        }
        // Setting another payload afterwards drops the mark.
        let event = Event::new("a")
            .json_payload_text("1")
            .unwrap()
            .payload(Payload::Json("{".into()));
        assert!(event.validate().is_err());
    }

    #[test]
    fn timestamps_outside_years_1_to_9999_are_refused() {
        use time::OffsetDateTime;
        let at =
            |us: i64| OffsetDateTime::from_unix_timestamp_nanos(i128::from(us) * 1000).unwrap();
        assert_eq!(
            at(TIMESTAMP_US_MIN).to_string(),
            "0001-01-01 0:00:00.0 +00:00:00"
        );
        assert_eq!(
            at(TIMESTAMP_US_MAX).to_string(),
            "9999-12-31 23:59:59.999999 +00:00:00"
        );
        for ok in [
            TIMESTAMP_US_MIN,
            -1,
            0,
            1_767_225_600_000_000,
            TIMESTAMP_US_MAX,
        ] {
            assert!(Event::new("a").timestamp_us(ok).validate().is_ok(), "{ok}");
        }
        // Year 0 and year 10000, and the extremes.
        for bad in [
            TIMESTAMP_US_MIN - 1,
            TIMESTAMP_US_MAX + 1,
            i64::MIN,
            i64::MAX,
        ] {
            match Event::new("a").timestamp_us(bad).validate() {
                Err(Error::InvalidEvent(message)) => {
                    assert!(message.contains(&bad.to_string()), "{message}");
                    assert!(message.contains("years 1 to 9999"), "{message}");
                }
                other => panic!("{bad} gave {other:?}"),
            }
        }
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
