//! Contracts: what the payload of an event type must hold, checked at
//! append in the caller's thread, before anything is written.
//!
//! A [`Contract`] names a type pattern (the dotted wildcards of
//! [`crate::type_matches`]), the payload fields events of those types must
//! have with their JSON types, and optionally a JSON Schema (feature
//! `json-schema`). Every contract whose pattern matches an event's type
//! applies to it; the first field that does not satisfy one refuses the
//! whole request with [`Error::ContractViolation`].
//!
//! Fields: a name such as `task_id` is a key of the top-level object; a
//! name that starts with `/` is a JSON pointer (RFC 6901) into the
//! payload, such as `/changes/status/after`. A required field must be
//! present and of its type; `null` is a type of its own, so a field that
//! may be null is better left to a JSON Schema. `integer` accepts any
//! number without a fractional part (`3` and `3.0`), as JSON Schema does.
//!
//! Schema versions: an event says which version of its type's schema it
//! follows with the metadata entry [`crate::SCHEMA_VERSION_KEY`]
//! (`schema_version`, a decimal number; set it with
//! [`crate::Event::schema_version`]). A contract made for one version
//! ([`Contract::schema_version`]) applies only to events that carry that
//! version; a contract without a version applies to every event of its
//! types, with or without one.
//!
//! Cost: a payload is parsed only when a contract matches the event's
//! type, once whatever the number of contracts that match; an event whose
//! type no contract names costs one pattern comparison per contract.
//! Events evlog writes for itself (types under `evlog.`) are not checked.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;

use serde_json::value::RawValue;
use serde_json::Value;

use crate::error::{Error, Result};
use crate::event::{Event, LoggedEvent, Payload, SCHEMA_VERSION_KEY};
use crate::guard::TypePattern;

/// Most contracts one log takes: each costs a pattern comparison on every
/// append, so a list this long is a mistake rather than a design.
pub const CONTRACTS_MAX: usize = 256;
/// Most required fields one contract lists.
pub const CONTRACT_FIELDS_MAX: usize = 256;

/// A JSON type a required field must have.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum JsonType {
    /// A JSON string.
    String,
    /// Any number.
    Number,
    /// A number without a fractional part.
    Integer,
    /// `true` or `false`.
    Boolean,
    /// A JSON object.
    Object,
    /// A JSON array.
    Array,
    /// `null`.
    Null,
}

impl JsonType {
    /// The name used in `evlog.toml` and in messages: `string`, `number`,
    /// `integer`, `boolean`, `object`, `array` or `null`.
    pub fn name(self) -> &'static str {
        match self {
            JsonType::String => "string",
            JsonType::Number => "number",
            JsonType::Integer => "integer",
            JsonType::Boolean => "boolean",
            JsonType::Object => "object",
            JsonType::Array => "array",
            JsonType::Null => "null",
        }
    }

    /// Inverse of [`JsonType::name`].
    pub fn from_name(name: &str) -> Option<JsonType> {
        Some(match name {
            "string" => JsonType::String,
            "number" => JsonType::Number,
            "integer" => JsonType::Integer,
            "boolean" => JsonType::Boolean,
            "object" => JsonType::Object,
            "array" => JsonType::Array,
            "null" => JsonType::Null,
            _ => return None,
        })
    }

    /// Whether a parsed value is of this type (the reference the checks on
    /// text are tested against).
    #[cfg(test)]
    fn accepts(self, value: &Value) -> bool {
        match self {
            JsonType::String => value.is_string(),
            JsonType::Number => value.is_number(),
            JsonType::Integer => is_integer(value),
            JsonType::Boolean => value.is_boolean(),
            JsonType::Object => value.is_object(),
            JsonType::Array => value.is_array(),
            JsonType::Null => value.is_null(),
        }
    }

    /// The type with its article, for messages: "a string", "an integer".
    fn with_article(self) -> String {
        let name = self.name();
        match self {
            JsonType::Integer | JsonType::Object | JsonType::Array => format!("an {name}"),
            JsonType::Null => name.to_string(),
            _ => format!("a {name}"),
        }
    }
}

impl fmt::Display for JsonType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

fn is_integer(value: &Value) -> bool {
    match value {
        Value::Number(number) => {
            number.is_i64()
                || number.is_u64()
                || number.as_f64().is_some_and(|float| float.fract() == 0.0)
        }
        _ => false,
    }
}

/// What a value is, for messages: its JSON type (and a short string).
fn describe(value: &Value) -> String {
    match value {
        Value::Null => "null".into(),
        Value::Bool(flag) => format!("a boolean ({flag})"),
        Value::Number(number) if is_integer(value) => format!("an integer ({number})"),
        Value::Number(number) => format!("a number ({number})"),
        Value::String(text) => format!("a string ({:?})", crate::event::shorten_for_message(text)),
        Value::Array(_) => "an array".into(),
        Value::Object(_) => "an object".into(),
    }
}

/// What the events of some types must hold: checked at append, in the
/// caller's thread, before anything is written (see README.md, "Storm
/// guard and contracts").
///
/// ```
/// # fn main() -> evlog::Result<()> {
/// use evlog::{Contract, Event, JsonType, Log, Options};
/// let log = Log::open_temporary(Options::default().contract(
///     Contract::new("orchestration.task.*")
///         .field("task_id", JsonType::String)
///         .field("/changes/status/after", JsonType::String),
/// ))?;
/// let bad = Event::new("orchestration.task.blocked")
///     .json_payload(&serde_json::json!({"task_id": 7}))?;
/// let error = log.append(bad).unwrap_err();
/// assert_eq!(
///     error.to_string(),
///     "event type \"orchestration.task.blocked\" violates the contract \
///      \"orchestration.task.*\": task_id must be a string, found an integer (7)"
/// );
/// assert_eq!(log.last_seq(), None);
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Contract {
    pattern: String,
    schema_version: Option<u32>,
    fields: Vec<(String, JsonType)>,
    json_schema: Option<Value>,
}

impl Contract {
    /// A contract for the event types `pattern` matches, requiring
    /// nothing yet. The pattern is checked when the log opens.
    pub fn new(pattern: impl Into<String>) -> Contract {
        Contract {
            pattern: pattern.into(),
            schema_version: None,
            fields: Vec::new(),
            json_schema: None,
        }
    }

    /// Applies the contract only to events of schema version `version`
    /// (see [`crate::Event::schema_version`]).
    pub fn schema_version(mut self, version: u32) -> Contract {
        self.schema_version = Some(version);
        self
    }

    /// Requires `field` (a top-level key, or a JSON pointer starting with
    /// `/`) to be present with the type `json_type`.
    pub fn field(mut self, field: impl Into<String>, json_type: JsonType) -> Contract {
        self.fields.push((field.into(), json_type));
        self
    }

    /// Requires the payload to be valid against a JSON Schema (drafts 4 to
    /// 2020-12, the draft taken from `$schema`, else 2020-12). Needs the
    /// `json-schema` feature; without it the log refuses to open with
    /// [`Error::InvalidGuard`]. `$ref`s are resolved only within the
    /// schema: nothing is fetched.
    pub fn json_schema(mut self, schema: Value) -> Contract {
        self.json_schema = Some(schema);
        self
    }

    /// The type pattern.
    pub fn pattern(&self) -> &str {
        &self.pattern
    }
    /// The schema version the contract is limited to, if any.
    pub fn get_schema_version(&self) -> Option<u32> {
        self.schema_version
    }
    /// The required fields with their types, in the order given.
    pub fn fields(&self) -> &[(String, JsonType)] {
        &self.fields
    }
    /// The JSON Schema, if any.
    pub fn get_json_schema(&self) -> Option<&Value> {
        self.json_schema.as_ref()
    }

    fn invalid(&self, reason: String) -> Error {
        Error::InvalidGuard {
            what: "contract",
            pattern: crate::event::shorten_for_message(&self.pattern),
            reason,
        }
    }

    /// Checks the pattern and fields (not the schema, which compiling
    /// checks).
    pub(crate) fn check(&self) -> Result<()> {
        crate::retention::check_pattern(&self.pattern).map_err(|reason| self.invalid(reason))?;
        if self.fields.len() > CONTRACT_FIELDS_MAX {
            return Err(self.invalid(format!(
                "{} required fields, over the limit of {CONTRACT_FIELDS_MAX}",
                self.fields.len()
            )));
        }
        for (index, (field, json_type)) in self.fields.iter().enumerate() {
            check_field_name(field).map_err(|reason| self.invalid(reason))?;
            if let Some((_, other)) = self.fields[..index].iter().find(|(f, _)| f == field) {
                if other != json_type {
                    return Err(self.invalid(format!(
                        "field {field:?} is required both as {other} and as {json_type}"
                    )));
                }
            }
        }
        Ok(())
    }
}

/// Checks a required field's name: not empty, and a pointer's `~` escapes
/// are `~0` or `~1`.
pub(crate) fn check_field_name(field: &str) -> std::result::Result<(), String> {
    if field.is_empty() {
        return Err("a required field name is empty".into());
    }
    if field.len() > crate::event::FIELD_BYTES_MAX {
        return Err(format!(
            "a required field name is {} bytes, over the limit of {}",
            field.len(),
            crate::event::FIELD_BYTES_MAX
        ));
    }
    if field.starts_with('/') {
        let mut bytes = field.bytes().peekable();
        while let Some(b) = bytes.next() {
            if b == b'~' && !matches!(bytes.next(), Some(b'0' | b'1')) {
                return Err(format!(
                    "{field:?} is not a JSON pointer: '~' must be followed by 0 or 1"
                ));
            }
        }
    }
    Ok(())
}

/// One contract ready to check: its pattern compiled, its schema too.
struct Entry {
    contract: Contract,
    pattern: TypePattern,
    #[cfg(feature = "json-schema")]
    validator: Option<jsonschema::Validator>,
}

/// A set of contracts ready to check events against (built once, when
/// the log opens; `evlog check-contracts` builds one from `evlog.toml`).
#[derive(Default)]
pub struct Contracts {
    entries: Vec<Entry>,
}

impl fmt::Debug for Contracts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.entries.iter().map(|entry| &entry.contract))
            .finish()
    }
}

impl Contracts {
    /// Checks and compiles `contracts`; [`Error::InvalidGuard`] names the
    /// first that is not valid.
    pub fn new(contracts: Vec<Contract>) -> Result<Contracts> {
        if contracts.len() > CONTRACTS_MAX {
            return Err(Error::InvalidGuard {
                what: "contract list",
                pattern: String::new(),
                reason: format!(
                    "{} contracts, over the limit of {CONTRACTS_MAX}",
                    contracts.len()
                ),
            });
        }
        let mut entries = Vec::with_capacity(contracts.len());
        for contract in contracts {
            contract.check()?;
            #[cfg(not(feature = "json-schema"))]
            if contract.json_schema.is_some() {
                return Err(contract.invalid(SCHEMA_FEATURE_OFF.into()));
            }
            entries.push(Entry {
                pattern: TypePattern::new(&contract.pattern),
                #[cfg(feature = "json-schema")]
                validator: match &contract.json_schema {
                    Some(schema) => {
                        Some(compile_schema(schema).map_err(|reason| contract.invalid(reason))?)
                    }
                    None => None,
                },
                contract,
            });
        }
        Ok(Contracts { entries })
    }

    /// Whether there is no contract (appends then check nothing).
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The contracts, in the order given.
    pub fn contracts(&self) -> impl Iterator<Item = &Contract> {
        self.entries.iter().map(|entry| &entry.contract)
    }

    /// Checks a stored event against the contracts: `Ok` when it satisfies
    /// every one that applies, else [`Error::ContractViolation`] for the
    /// first field at fault. Events under `evlog.` are not checked.
    pub fn check(&self, event: &LoggedEvent) -> Result<()> {
        if event
            .event_type
            .starts_with(crate::subscribe::BOOKKEEPING_TYPE_PREFIX)
        {
            return Ok(());
        }
        self.check_parts(&event.event_type, &event.metadata, &event.payload)
    }

    /// Checks an event about to be appended.
    pub(crate) fn check_event(&self, event: &Event) -> Result<()> {
        if event.is_bookkeeping() {
            return Ok(());
        }
        self.check_parts(&event.event_type, &event.metadata, &event.payload)
    }

    fn check_parts(
        &self,
        event_type: &str,
        metadata: &BTreeMap<String, String>,
        payload: &Payload,
    ) -> Result<()> {
        // Read on the first contract that applies, then shared: the
        // top-level fields as slices of the payload's text (no value is
        // built), and the whole payload as a value only for a JSON Schema.
        let mut top: Option<RawObject<'_>> = None;
        #[cfg(feature = "json-schema")]
        let mut parsed: Option<Value> = None;
        let mut version: Option<Option<u32>> = None;
        for entry in &self.entries {
            if !entry.pattern.matches(event_type) {
                continue;
            }
            let contract = &entry.contract;
            let violation =
                |field: &str, expected: String, found: String| Error::ContractViolation {
                    event_type: crate::event::shorten_for_message(event_type),
                    pattern: contract.pattern.clone(),
                    field: field.to_string(),
                    expected,
                    found,
                };
            if let Some(wanted) = contract.schema_version {
                let carried = match version {
                    Some(carried) => carried,
                    None => {
                        let carried = match metadata.get(SCHEMA_VERSION_KEY) {
                            None => None,
                            Some(text) => Some(text.parse::<u32>().map_err(|_| {
                                violation(
                                    &format!("metadata.{SCHEMA_VERSION_KEY}"),
                                    "a whole number".into(),
                                    format!("{:?}", crate::event::shorten_for_message(text)),
                                )
                            })?),
                        };
                        version = Some(carried);
                        carried
                    }
                };
                if carried != Some(wanted) {
                    continue;
                }
            }
            if !contract.fields.is_empty() {
                let object = match &top {
                    Some(object) => object,
                    None => {
                        let object = RawObject::of_payload(payload)
                            .map_err(|found| violation("payload", "a JSON object".into(), found))?;
                        top.insert(object)
                    }
                };
                for (field, json_type) in &contract.fields {
                    match object.lookup(field) {
                        Some(found) if raw_is(*json_type, found) => {}
                        Some(found) => {
                            return Err(violation(
                                field,
                                json_type.with_article(),
                                describe_raw(found),
                            ))
                        }
                        None => {
                            return Err(violation(
                                field,
                                json_type.with_article(),
                                "nothing (the field is missing)".into(),
                            ))
                        }
                    }
                }
            }
            #[cfg(feature = "json-schema")]
            if let Some(validator) = &entry.validator {
                let value = match &mut parsed {
                    Some(value) => &*value,
                    None => {
                        let value = parse_payload(payload)
                            .map_err(|found| violation("payload", "JSON".into(), found))?;
                        &*parsed.insert(value)
                    }
                };
                if let Err(error) = validator.validate(value) {
                    let path = error.instance_path().as_str();
                    let field = if path.is_empty() { "payload" } else { path };
                    return Err(violation(
                        field,
                        "valid against the contract's JSON Schema".into(),
                        error.to_string(),
                    ));
                }
            }
        }
        Ok(())
    }
}

/// The members of a JSON object as slices of its text: a contract's
/// fields are found without building a value of the whole payload.
struct RawObject<'a> {
    members: Vec<(Cow<'a, str>, &'a RawValue)>,
}

impl<'a> RawObject<'a> {
    /// The payload's top-level object, or what the payload is instead.
    fn of_payload(payload: &'a Payload) -> std::result::Result<RawObject<'a>, String> {
        let text = match payload {
            Payload::Empty => return Err("no payload".into()),
            Payload::Json(text) => text.as_str(),
            Payload::Bytes(bytes) => std::str::from_utf8(bytes)
                .map_err(|_| format!("{} bytes that are not JSON", bytes.len()))?,
        };
        match RawObject::parse(text) {
            Some(object) => Ok(object),
            None => Err(match serde_json::from_str::<Value>(text) {
                Ok(value) => describe(&value),
                Err(error) => format!("text that does not parse as JSON ({error})"),
            }),
        }
    }

    /// `None` when `text` is not one JSON object.
    fn parse(text: &'a str) -> Option<RawObject<'a>> {
        let mut deserializer = serde_json::Deserializer::from_str(text);
        let members =
            serde::Deserializer::deserialize_map(&mut deserializer, MembersVisitor).ok()?;
        deserializer.end().ok()?;
        Some(RawObject { members })
    }

    /// A member by name; of duplicate names the last counts, as when the
    /// text is parsed into a `serde_json::Value`.
    fn get(&self, name: &str) -> Option<&'a RawValue> {
        self.members
            .iter()
            .rev()
            .find(|(key, _)| key == name)
            .map(|(_, value)| *value)
    }

    /// A required field: a member's name, or a JSON pointer.
    fn lookup(&self, field: &str) -> Option<&'a RawValue> {
        let Some(pointer) = field.strip_prefix('/') else {
            return self.get(field);
        };
        let mut segments = pointer.split('/').map(unescape_pointer_segment);
        let first = segments.next()?;
        let mut current = self.get(&first)?;
        for segment in segments {
            current = raw_child(current, &segment)?;
        }
        Some(current)
    }
}

/// A JSON pointer segment with `~1` and `~0` undone (RFC 6901, in that
/// order).
fn unescape_pointer_segment(segment: &str) -> Cow<'_, str> {
    if segment.contains('~') {
        Cow::Owned(segment.replace("~1", "/").replace("~0", "~"))
    } else {
        Cow::Borrowed(segment)
    }
}

/// The member or element `segment` names inside an object or array.
fn raw_child<'a>(raw: &'a RawValue, segment: &str) -> Option<&'a RawValue> {
    let text = raw.get().trim_start();
    match text.as_bytes().first() {
        Some(b'{') => RawObject::parse(text)?.get(segment),
        Some(b'[') => {
            // RFC 6901: a decimal index without leading zeros.
            if segment.len() > 1 && segment.starts_with('0') {
                return None;
            }
            let index: usize = segment.parse().ok()?;
            let items: Vec<&'a RawValue> = serde_json::from_str(text).ok()?;
            items.get(index).copied()
        }
        _ => None,
    }
}

/// Whether a value's text is of a JSON type (its first byte says which,
/// but for integers, which are numbers without a fractional part).
fn raw_is(json_type: JsonType, raw: &RawValue) -> bool {
    let text = raw.get().trim();
    let is_number = || {
        text.as_bytes()
            .first()
            .is_some_and(|b| *b == b'-' || b.is_ascii_digit())
    };
    match json_type {
        JsonType::String => text.starts_with('"'),
        JsonType::Object => text.starts_with('{'),
        JsonType::Array => text.starts_with('['),
        JsonType::Boolean => text == "true" || text == "false",
        JsonType::Null => text == "null",
        JsonType::Number => is_number(),
        JsonType::Integer => {
            is_number()
                && (!text.contains(['.', 'e', 'E'])
                    || text.parse::<f64>().is_ok_and(|float| float.fract() == 0.0))
        }
    }
}

/// [`describe`] of a value's text (only on a violation).
fn describe_raw(raw: &RawValue) -> String {
    serde_json::from_str::<Value>(raw.get())
        .map_or_else(|_| raw.get().to_string(), |value| describe(&value))
}

/// Collects an object's members, borrowing names and values from the text
/// (a name with escapes is the one copy).
struct MembersVisitor;

impl<'de> serde::de::Visitor<'de> for MembersVisitor {
    type Value = Vec<(Cow<'de, str>, &'de RawValue)>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(
        self,
        mut map: A,
    ) -> std::result::Result<Self::Value, A::Error> {
        let mut members = Vec::with_capacity(map.size_hint().unwrap_or(8));
        while let Some(MemberName(name)) = map.next_key()? {
            members.push((name, map.next_value::<&'de RawValue>()?));
        }
        Ok(members)
    }
}

struct MemberName<'a>(Cow<'a, str>);

impl<'de> serde::Deserialize<'de> for MemberName<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(
        deserializer: D,
    ) -> std::result::Result<Self, D::Error> {
        struct NameVisitor;
        impl<'de> serde::de::Visitor<'de> for NameVisitor {
            type Value = MemberName<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a member name")
            }
            fn visit_borrowed_str<E>(self, name: &'de str) -> std::result::Result<Self::Value, E> {
                Ok(MemberName(Cow::Borrowed(name)))
            }
            fn visit_str<E>(self, name: &str) -> std::result::Result<Self::Value, E> {
                Ok(MemberName(Cow::Owned(name.to_owned())))
            }
        }
        deserializer.deserialize_str(NameVisitor)
    }
}

#[cfg(not(feature = "json-schema"))]
const SCHEMA_FEATURE_OFF: &str = "a JSON Schema needs evlog built with the `json-schema` feature";

/// Compiles a JSON Schema, or says why it is not one.
#[cfg(feature = "json-schema")]
pub(crate) fn compile_schema(schema: &Value) -> std::result::Result<jsonschema::Validator, String> {
    jsonschema::validator_for(schema)
        .map_err(|error| format!("the JSON Schema is not valid: {error}"))
}

/// Checks that a JSON Schema compiles (for `evlog.toml`, to name the line).
pub(crate) fn check_schema(schema: &Value) -> std::result::Result<(), String> {
    #[cfg(feature = "json-schema")]
    {
        compile_schema(schema).map(|_| ())
    }
    #[cfg(not(feature = "json-schema"))]
    {
        let _ = schema;
        Err(SCHEMA_FEATURE_OFF.into())
    }
}

/// The payload as a JSON value, or what it is when it is not JSON.
#[cfg(feature = "json-schema")]
fn parse_payload(payload: &Payload) -> std::result::Result<Value, String> {
    match payload {
        Payload::Empty => Err("no payload".into()),
        Payload::Json(text) => serde_json::from_str(text)
            .map_err(|error| format!("text that does not parse ({error})")),
        Payload::Bytes(bytes) => serde_json::from_slice(bytes)
            .map_err(|_| format!("{} bytes that are not JSON", bytes.len())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn task(payload: Value) -> Event {
        Event::new("orchestration.task.blocked")
            .json_payload(&payload)
            .unwrap()
    }

    fn contracts() -> Contracts {
        Contracts::new(vec![
            Contract::new("orchestration.task.*")
                .field("task_id", JsonType::String)
                .field("/changes/status/after", JsonType::String),
            Contract::new("orchestration.*").field("sprint", JsonType::Integer),
        ])
        .unwrap()
    }

    /// The message of the violation `event` gives.
    fn violation(contracts: &Contracts, event: &Event) -> String {
        match contracts.check_event(event) {
            Err(error @ Error::ContractViolation { .. }) => error.to_string(),
            other => panic!("expected a violation, got {other:?}"),
        }
    }

    #[test]
    fn contracts_accept_events_that_hold_every_field() {
        let good = json!({"task_id": "T-1", "sprint": 3,
                          "changes": {"status": {"before": "a", "after": "blocked"}}});
        contracts().check_event(&task(good)).unwrap();
        // 3.0 is an integer, as in JSON Schema.
        let float = json!({"task_id": "T-1", "sprint": 3.0,
                           "changes": {"status": {"after": "x"}}});
        contracts().check_event(&task(float)).unwrap();
        // Types no contract names are not looked at, payload or not.
        contracts()
            .check_event(&Event::new("other.thing").bytes_payload(vec![0xff]))
            .unwrap();
        // Bookkeeping is never checked.
        contracts()
            .check_event(&Event::new("orchestration.task.x").bookkeeping())
            .unwrap();
    }

    #[test]
    fn contracts_name_the_type_the_field_and_what_was_expected() {
        let c = contracts();
        let prefix = "event type \"orchestration.task.blocked\" violates the contract";
        let cases = [
            (
                json!({"sprint": 1, "changes": {"status": {"after": "x"}}}),
                "\"orchestration.task.*\": task_id must be a string, found nothing (the field is missing)",
            ),
            (
                json!({"task_id": true, "sprint": 1}),
                "\"orchestration.task.*\": task_id must be a string, found a boolean (true)",
            ),
            (
                json!({"task_id": "T", "changes": {"status": {"after": 5}}}),
                "\"orchestration.task.*\": /changes/status/after must be a string, found an integer (5)",
            ),
            (
                json!({"task_id": "T", "changes": {"status": {"after": "x"}}, "sprint": 1.5}),
                "\"orchestration.*\": sprint must be an integer, found a number (1.5)",
            ),
            (
                json!([1, 2]),
                "\"orchestration.task.*\": payload must be a JSON object, found an array",
            ),
        ];
        for (payload, message) in cases {
            assert_eq!(violation(&c, &task(payload)), format!("{prefix} {message}"));
        }
        let empty = Event::new("orchestration.task.blocked");
        assert_eq!(
            violation(&c, &empty),
            format!(
                "{prefix} \"orchestration.task.*\": payload must be a JSON object, found no payload"
            )
        );
    }

    #[test]
    fn contracts_read_fields_from_the_text_as_a_parsed_value_would() {
        let payload = r#"{"s":"x","i":-3,"f":2.5,"e":1e2,"z":3.0,"big":123456789012345678901234567890,
            "b":false,"n":null,"o":{"a/b":{"~k":[10,{"deep":"yes"}]}},"a":[1],"dup":1,"dup":"two",
            "esc\u0061ped":true}"#;
        let value: Value = serde_json::from_str(payload).unwrap();
        let payload = Payload::Json(payload.to_string());
        let object = RawObject::of_payload(&payload).unwrap();
        let fields = [
            "s",
            "i",
            "f",
            "e",
            "z",
            "big",
            "b",
            "n",
            "o",
            "a",
            "dup",
            "escaped",
            "missing",
            "/o/a~1b/~0k/1/deep",
            "/o/a~1b/~0k/0",
            "/o/a~1b/~0k/2",
            "/o/a~1b/~0k/01",
            "/a/0",
            "/s/0",
            "/o/missing",
            "/dup",
        ];
        let types = [
            JsonType::String,
            JsonType::Number,
            JsonType::Integer,
            JsonType::Boolean,
            JsonType::Object,
            JsonType::Array,
            JsonType::Null,
        ];
        for field in fields {
            let reference = if field.starts_with('/') {
                value.pointer(field)
            } else {
                value.get(field)
            };
            let found = object.lookup(field);
            assert_eq!(found.is_some(), reference.is_some(), "{field}");
            if let (Some(found), Some(reference)) = (found, reference) {
                assert_eq!(describe_raw(found), describe(reference), "{field}");
                for json_type in types {
                    assert_eq!(
                        raw_is(json_type, found),
                        json_type.accepts(reference),
                        "{field} as {json_type}"
                    );
                }
            }
        }
        for (bad, found) in [
            (Payload::Json("[1]".into()), "an array"),
            (
                Payload::Json("{\"a\":".into()),
                "text that does not parse as JSON",
            ),
            (Payload::Bytes(vec![0xff]), "1 bytes that are not JSON"),
            (Payload::Empty, "no payload"),
        ] {
            match RawObject::of_payload(&bad) {
                Err(message) => assert!(message.starts_with(found), "{message}"),
                Ok(_) => panic!("{bad:?} read as an object"),
            }
        }
        assert!(RawObject::of_payload(&Payload::Bytes(b"{\"k\":1}".to_vec())).is_ok());
    }

    #[test]
    fn contracts_for_a_version_apply_only_to_it() {
        let c = Contracts::new(vec![
            Contract::new("a.b").field("v1", JsonType::Null),
            Contract::new("a.b")
                .schema_version(2)
                .field("v2", JsonType::Array),
        ])
        .unwrap();
        let event = |payload: Value| Event::new("a.b").json_payload(&payload).unwrap();
        // No version: only the unversioned contract.
        c.check_event(&event(json!({"v1": null}))).unwrap();
        c.check_event(&event(json!({"v1": null})).schema_version(1))
            .unwrap();
        assert!(violation(&c, &event(json!({"v1": null})).schema_version(2))
            .ends_with("v2 must be an array, found nothing (the field is missing)"));
        c.check_event(&event(json!({"v1": null, "v2": []})).schema_version(2))
            .unwrap();
        let bad = event(json!({"v1": null})).metadata(SCHEMA_VERSION_KEY, "two");
        assert!(violation(&c, &bad)
            .ends_with("metadata.schema_version must be a whole number, found \"two\""));
    }

    #[test]
    fn contracts_refuse_bad_definitions() {
        for (contract, words) in [
            (Contract::new("a..b"), "type pattern"),
            (Contract::new("a").field("", JsonType::Null), "empty"),
            (Contract::new("a").field("/x~2", JsonType::Null), "'~'"),
            (
                Contract::new("a")
                    .field("x", JsonType::Null)
                    .field("x", JsonType::Array),
                "both as null and as array",
            ),
        ] {
            match Contracts::new(vec![contract]) {
                Err(error @ Error::InvalidGuard { .. }) => {
                    assert!(error.to_string().contains(words), "{error}")
                }
                other => panic!("{words}: {other:?}"),
            }
        }
        for name in [
            "string", "number", "integer", "boolean", "object", "array", "null",
        ] {
            assert_eq!(JsonType::from_name(name).map(JsonType::name), Some(name));
        }
        assert_eq!(JsonType::from_name("float"), None);
    }

    #[cfg(feature = "json-schema")]
    #[test]
    fn contracts_check_a_json_schema() {
        let c = Contracts::new(vec![Contract::new("a.*").json_schema(json!({
            "type": "object",
            "properties": {"n": {"type": "integer", "minimum": 0}},
            "required": ["n"]
        }))])
        .unwrap();
        let event = |payload: Value| Event::new("a.b").json_payload(&payload).unwrap();
        c.check_event(&event(json!({"n": 3}))).unwrap();
        let message = violation(&c, &event(json!({"n": -1})));
        assert!(
            message.starts_with("event type \"a.b\" violates the contract \"a.*\": /n must be valid against the contract's JSON Schema, found -1"),
            "{message}"
        );
        let message = violation(&c, &event(json!({})));
        assert!(message.contains(": payload must be valid"), "{message}");
        assert!(Contracts::new(vec![Contract::new("a").json_schema(json!({"type": 5}))]).is_err());
    }

    #[cfg(not(feature = "json-schema"))]
    #[test]
    fn contracts_without_the_feature_refuse_a_json_schema() {
        let error = Contracts::new(vec![Contract::new("a").json_schema(json!({}))]).unwrap_err();
        assert!(error.to_string().contains("json-schema"), "{error}");
    }
}
