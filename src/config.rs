//! The configuration file `DIR/evlog.toml`: the retention policy, the
//! storm guard's rate limits and the contracts.
//!
//! ```toml
//! [retention]
//! size_cap = "50 GiB"          # or an integer number of bytes
//! check_interval = "10m"
//!
//! [[retention.rule]]
//! name = "p0-forever"
//! priority = ["P0"]
//! keep_forever = true
//!
//! [[retention.rule]]
//! name = "default"
//! types = ["*"]                # optional: every type
//! archive_after = "90d"
//! delete_after = "365d"
//! keep_until_consumed = true
//! ```
//!
//! A rule may also say `keep_latest_per_entity = true` (key compaction:
//! keep only the latest event of each entity).
//!
//! Durations are a whole number and a unit: `s`, `m`, `h`, `d` or `w`
//! ("90d", "12h"). Sizes are a whole number of bytes, as an integer or a
//! string with a unit: `B`, `KB`, `MB`, `GB`, `TB` (powers of 1000) or
//! `KiB`, `MiB`, `GiB`, `TiB` (powers of 1024), with or without a space.
//! Unknown keys are errors, so a misspelt key is not silently ignored.
//! Any problem is [`Error::Config`] naming the file and line.
//!
//! Precedence: a policy given in [`crate::Options::retention`] wins; else
//! the file's; with neither, nothing is archived or deleted.
//!
//! The storm guard's rate limits ([`crate::RateLimit`]) and the contracts
//! ([`crate::Contract`]), checked at append:
//!
//! ```toml
//! [[storm.limit]]
//! pattern = "agent.heartbeat"  # a type pattern; one bucket for all it matches
//! rate_per_s = 50              # tokens gained a second (a number > 0)
//! burst = 200                  # most tokens held (at least 1)
//! policy = "delay"             # "refuse" (the default), "delay" or "flag"
//! max_wait_ms = 250            # with "delay" only, and required by it
//! storm_quiet_ms = 10000       # optional: how long without a shortfall ends a storm
//!
//! [[contract]]
//! pattern = "orchestration.task.*"
//! schema_version = 2           # optional: only events that carry this version
//! fields = { task_id = "string", "/changes/status/after" = "string" }
//! schema = { type = "object", required = ["task_id"] }  # optional JSON Schema
//! ```
//!
//! Field types are `string`, `number`, `integer`, `boolean`, `object`,
//! `array` and `null`; a field name that starts with `/` is a JSON pointer.
//! `schema` is a JSON Schema written as TOML (a table, or any TOML value)
//! and needs the `json-schema` feature. Precedence, per kind: limits (or
//! contracts) given in [`crate::Options::rate_limit`]
//! ([`crate::Options::contract`]) replace the file's; with none given
//! there, the file's apply.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;
use toml::Spanned;

use crate::contracts::{Contract, JsonType, CONTRACTS_MAX, CONTRACT_FIELDS_MAX};
use crate::error::{Error, IoContext, Result};
use crate::event::Priority;
use crate::guard::{RateLimit, StormPolicy, RATE_LIMITS_MAX};
use crate::retention::{
    check_rules, RetentionPolicy, RetentionRule, RuleField, CHECK_INTERVAL_MIN,
};
use crate::storage::{OpenMode, OsStorage, Storage};

/// The configuration file's name in the data directory.
pub const CONFIG_FILE: &str = "evlog.toml";
/// Largest configuration file read: a policy is a few hundred bytes, and
/// a bound keeps a wrong file (a log copied over it) from being read whole.
pub const CONFIG_FILE_BYTES_MAX: u64 = 1024 * 1024;

/// What `DIR/evlog.toml` configures.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Config {
    /// The `[retention]` table, if the file has one.
    pub retention: Option<RetentionPolicy>,
    /// The `[[storm.limit]]` tables, in order.
    pub rate_limits: Vec<RateLimit>,
    /// The `[[contract]]` tables, in order.
    pub contracts: Vec<Contract>,
}

/// Reads `dir/evlog.toml`: `None` when the file does not exist, an
/// [`Error::Config`] naming the line when it is not valid.
pub fn load_config(dir: &Path) -> Result<Option<Config>> {
    load_config_with(&OsStorage, dir)
}

/// [`load_config`] through a `Storage` (the simulated disk in tests).
pub(crate) fn load_config_with(storage: &dyn Storage, dir: &Path) -> Result<Option<Config>> {
    let path = dir.join(CONFIG_FILE);
    if !storage.exists(&path) {
        return Ok(None);
    }
    let file = storage.open(&path, OpenMode::Read).at(&path)?;
    let len = file.size_bytes().at(&path)?;
    if len > CONFIG_FILE_BYTES_MAX {
        return Err(config_error(
            &path,
            1,
            format!("the file is {len} bytes, over the limit of {CONFIG_FILE_BYTES_MAX}"),
        ));
    }
    // `len` is at most CONFIG_FILE_BYTES_MAX, so it fits a usize.
    let mut bytes = vec![0u8; len as usize];
    file.read_exact_at(&mut bytes, 0).at(&path)?;
    let text = match String::from_utf8(bytes) {
        Ok(text) => text,
        Err(error) => {
            let offset = error.utf8_error().valid_up_to();
            let line = line_at(error.as_bytes(), offset);
            return Err(config_error(&path, line, "the file is not UTF-8".into()));
        }
    };
    parse_config(&text, &path).map(Some)
}

/// Parses the text of a configuration file; `path` is only for errors.
pub fn parse_config(text: &str, path: &Path) -> Result<Config> {
    let file: FileConfig = toml::from_str(text).map_err(|error| {
        let line = error
            .span()
            .map_or(1, |span| line_at(text.as_bytes(), span.start));
        config_error(path, line, error.message().trim_end().to_string())
    })?;
    let retention = match &file.retention {
        Some(retention) => Some(parse_retention(retention, text, path)?),
        None => None,
    };
    let rate_limits = match &file.storm {
        Some(storm) => parse_rate_limits(storm, text, path)?,
        None => Vec::new(),
    };
    let contracts = parse_contracts(&file.contract, text, path)?;
    Ok(Config {
        retention,
        rate_limits,
        contracts,
    })
}

/// The error for the configuration at byte `span.start` of `text`.
fn error_at(text: &str, path: &Path, span: std::ops::Range<usize>, message: String) -> Error {
    config_error(path, line_at(text.as_bytes(), span.start), message)
}

/// The `[[storm.limit]]` tables.
fn parse_rate_limits(storm: &FileStorm, text: &str, path: &Path) -> Result<Vec<RateLimit>> {
    let at = |span, message| error_at(text, path, span, message);
    if let Some(over) = storm.limit.get(RATE_LIMITS_MAX) {
        return Err(at(
            over.span(),
            format!("at most {RATE_LIMITS_MAX} [[storm.limit]] tables"),
        ));
    }
    let mut limits = Vec::with_capacity(storm.limit.len());
    for table in &storm.limit {
        let limit = table.get_ref();
        let rate_per_s = *limit.rate_per_s.get_ref();
        if !(rate_per_s.is_finite() && rate_per_s > 0.0) {
            return Err(at(
                limit.rate_per_s.span(),
                format!("rate_per_s must be a positive number, not {rate_per_s}"),
            ));
        }
        if *limit.burst.get_ref() == 0 {
            return Err(at(limit.burst.span(), "burst must be at least 1".into()));
        }
        let policy = match (
            limit.policy.as_ref().map(|p| p.get_ref()),
            &limit.max_wait_ms,
        ) {
            (None | Some(PolicyName::Refuse), None) => StormPolicy::Refuse,
            (Some(PolicyName::Flag), None) => StormPolicy::Flag,
            (Some(PolicyName::Delay), Some(max_wait_ms)) => StormPolicy::Delay {
                max_wait_ms: *max_wait_ms.get_ref(),
            },
            (Some(PolicyName::Delay), None) => {
                let span = limit
                    .policy
                    .as_ref()
                    .map_or_else(|| table.span(), Spanned::span);
                return Err(at(
                    span,
                    "policy \"delay\" needs max_wait_ms, the longest a caller waits".into(),
                ));
            }
            (_, Some(max_wait_ms)) => {
                return Err(at(
                    max_wait_ms.span(),
                    "max_wait_ms applies only to policy = \"delay\"".into(),
                ))
            }
        };
        let mut built = RateLimit::new(
            limit.pattern.get_ref().0.clone(),
            rate_per_s,
            *limit.burst.get_ref(),
        )
        .policy(policy);
        if let Some(quiet_ms) = limit.storm_quiet_ms {
            built = built.storm_quiet(Duration::from_millis(quiet_ms));
        }
        limits.push(built);
    }
    Ok(limits)
}

/// The `[[contract]]` tables.
fn parse_contracts(
    tables: &[Spanned<FileContract>],
    text: &str,
    path: &Path,
) -> Result<Vec<Contract>> {
    let at = |span, message| error_at(text, path, span, message);
    if let Some(over) = tables.get(CONTRACTS_MAX) {
        return Err(at(
            over.span(),
            format!("at most {CONTRACTS_MAX} [[contract]] tables"),
        ));
    }
    let mut contracts = Vec::with_capacity(tables.len());
    for table in tables {
        let contract = table.get_ref();
        let mut built = Contract::new(contract.pattern.get_ref().0.clone());
        if let Some(version) = contract.schema_version {
            built = built.schema_version(version);
        }
        if let Some(fields) = &contract.fields {
            if fields.get_ref().0.len() > CONTRACT_FIELDS_MAX {
                return Err(at(
                    fields.span(),
                    format!("at most {CONTRACT_FIELDS_MAX} fields in a contract"),
                ));
            }
            for (name, json_type) in &fields.get_ref().0 {
                if let Err(reason) = crate::contracts::check_field_name(name) {
                    return Err(at(json_type.span(), reason));
                }
                built = built.field(name.clone(), json_type.get_ref().0);
            }
        }
        if let Some(schema) = &contract.schema {
            if let Err(reason) = crate::contracts::check_schema(schema.get_ref()) {
                return Err(at(schema.span(), reason));
            }
            built = built.json_schema(schema.get_ref().clone());
        }
        contracts.push(built);
    }
    Ok(contracts)
}

/// The `[retention]` table.
fn parse_retention(retention: &FileRetention, text: &str, path: &Path) -> Result<RetentionPolicy> {
    let at = |span: std::ops::Range<usize>, message: String| error_at(text, path, span, message);

    let rules: Vec<RetentionRule> = retention
        .rule
        .iter()
        .map(|rule| {
            let rule = rule.get_ref();
            let mut built = RetentionRule::new(rule.name.get_ref().clone());
            built.priorities = rule
                .priority
                .as_ref()
                .map(|list| list.get_ref().iter().map(|p| p.0).collect());
            built.type_patterns = rule
                .types
                .iter()
                .flatten()
                .map(|pattern| pattern.get_ref().0.clone())
                .collect();
            built.archive_after = rule.archive_after.map(|d| d.0);
            built.delete_after = rule.delete_after.as_ref().map(|d| d.get_ref().0);
            built.keep_forever = rule.keep_forever;
            built.keep_until_consumed = rule.keep_until_consumed;
            built.keep_latest_per_entity = rule
                .keep_latest_per_entity
                .as_ref()
                .is_some_and(|flag| *flag.get_ref());
            built
        })
        .collect();
    if let Err(problem) = check_rules(&rules) {
        // A problem past the last rule (too many rules) is named at the
        // first rule over the limit, which exists.
        let rule = retention
            .rule
            .get(problem.rule_index)
            .or(retention.rule.last());
        let span = match (rule, problem.field) {
            (None, _) => 0..0,
            (Some(rule), RuleField::Name) => rule.get_ref().name.span(),
            (Some(rule), RuleField::Priorities) => rule
                .get_ref()
                .priority
                .as_ref()
                .map_or_else(|| rule.span(), Spanned::span),
            (Some(rule), RuleField::TypePattern(index)) => rule
                .get_ref()
                .types
                .as_ref()
                .and_then(|types| types.get(index))
                .map_or_else(|| rule.span(), Spanned::span),
            (Some(rule), RuleField::KeepLatestPerEntity) => rule
                .get_ref()
                .keep_latest_per_entity
                .as_ref()
                .map_or_else(|| rule.span(), Spanned::span),
            (Some(rule), RuleField::DeleteAfter) => rule
                .get_ref()
                .delete_after
                .as_ref()
                .map_or_else(|| rule.span(), Spanned::span),
        };
        return Err(at(span, problem.reason));
    }

    let mut builder = RetentionPolicy::builder();
    for rule in rules {
        builder = builder.rule(rule);
    }
    if let Some(cap) = &retention.size_cap {
        builder = builder.size_cap_bytes(cap.0);
    }
    if let Some(interval) = &retention.check_interval {
        if interval.get_ref().0 < CHECK_INTERVAL_MIN {
            return Err(at(
                interval.span(),
                format!(
                    "check_interval must be at least {}",
                    format_duration(CHECK_INTERVAL_MIN)
                ),
            ));
        }
        builder = builder.check_interval(interval.get_ref().0);
    }
    // Everything `build` checks was checked above with a line to name;
    // should it still refuse, name the table.
    builder
        .build()
        .map_err(|error| config_error(path, 1, format!("[retention]: {error}")))
}

fn config_error(path: &Path, line: u64, message: String) -> Error {
    Error::Config {
        path: PathBuf::from(path),
        line,
        message,
    }
}

/// The 1-based line holding byte `offset` of `text`.
fn line_at(text: &[u8], offset: usize) -> u64 {
    let end = offset.min(text.len());
    text[..end].iter().filter(|&&b| b == b'\n').count() as u64 + 1
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    retention: Option<FileRetention>,
    storm: Option<FileStorm>,
    #[serde(default)]
    contract: Vec<Spanned<FileContract>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileStorm {
    #[serde(default)]
    limit: Vec<Spanned<FileLimit>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileLimit {
    pattern: Spanned<PatternValue>,
    rate_per_s: Spanned<f64>,
    burst: Spanned<u64>,
    policy: Option<Spanned<PolicyName>>,
    max_wait_ms: Option<Spanned<u64>>,
    storm_quiet_ms: Option<u64>,
}

#[derive(Deserialize)]
#[serde(rename_all = "lowercase")]
enum PolicyName {
    Refuse,
    Delay,
    Flag,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileContract {
    pattern: Spanned<PatternValue>,
    schema_version: Option<u32>,
    fields: Option<Spanned<FieldList>>,
    schema: Option<Spanned<serde_json::Value>>,
}

/// The `fields` table of a contract, in the file's order (the order in
/// which fields are checked, so the first missing one is named).
struct FieldList(Vec<(String, Spanned<JsonTypeValue>)>);

impl<'de> Deserialize<'de> for FieldList {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        struct FieldsVisitor;
        impl<'de> Visitor<'de> for FieldsVisitor {
            type Value = FieldList;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a table of field names and JSON types")
            }
            fn visit_map<A: de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> std::result::Result<FieldList, A::Error> {
                let mut fields = Vec::new();
                while let Some((name, json_type)) = map.next_entry()? {
                    fields.push((name, json_type));
                }
                Ok(FieldList(fields))
            }
        }
        deserializer.deserialize_map(FieldsVisitor)
    }
}

struct JsonTypeValue(JsonType);

impl<'de> Deserialize<'de> for JsonTypeValue {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        JsonType::from_name(&text).map(JsonTypeValue).ok_or_else(|| {
            de::Error::custom(format!(
                "a field's type must be one of string, number, integer, boolean, object, array, null, not {text:?}"
            ))
        })
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileRetention {
    size_cap: Option<SizeValue>,
    check_interval: Option<Spanned<DurationValue>>,
    #[serde(default)]
    rule: Vec<Spanned<FileRule>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileRule {
    name: Spanned<String>,
    priority: Option<Spanned<Vec<PriorityValue>>>,
    types: Option<Vec<Spanned<PatternValue>>>,
    archive_after: Option<DurationValue>,
    delete_after: Option<Spanned<DurationValue>>,
    #[serde(default)]
    keep_forever: bool,
    #[serde(default)]
    keep_until_consumed: bool,
    keep_latest_per_entity: Option<Spanned<bool>>,
}

/// A duration written as "90d"; a bad one is an error at its own span.
#[derive(Clone, Copy)]
struct DurationValue(Duration);

impl<'de> Deserialize<'de> for DurationValue {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        parse_duration(&text)
            .map(DurationValue)
            .map_err(de::Error::custom)
    }
}

struct PriorityValue(Priority);

impl<'de> Deserialize<'de> for PriorityValue {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse::<Priority>().map(PriorityValue).map_err(|_| {
            de::Error::custom(format!(
                "priority must be one of P0, P1, P2, P3, not {text:?}"
            ))
        })
    }
}

struct PatternValue(String);

impl<'de> Deserialize<'de> for PatternValue {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        match crate::retention::check_pattern(&text) {
            Ok(()) => Ok(PatternValue(text)),
            Err(reason) => Err(de::Error::custom(reason)),
        }
    }
}

/// A size: an integer number of bytes or a string such as "50 GiB".
struct SizeValue(u64);

impl<'de> Deserialize<'de> for SizeValue {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        struct SizeVisitor;
        impl Visitor<'_> for SizeVisitor {
            type Value = SizeValue;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a number of bytes or a size such as \"50 GiB\"")
            }
            fn visit_i64<E: de::Error>(self, value: i64) -> std::result::Result<SizeValue, E> {
                u64::try_from(value)
                    .map(SizeValue)
                    .map_err(|_| E::custom(format!("a size cannot be negative ({value})")))
            }
            fn visit_u64<E: de::Error>(self, value: u64) -> std::result::Result<SizeValue, E> {
                Ok(SizeValue(value))
            }
            fn visit_str<E: de::Error>(self, text: &str) -> std::result::Result<SizeValue, E> {
                parse_size(text).map(SizeValue).map_err(E::custom)
            }
        }
        deserializer.deserialize_any(SizeVisitor)
    }
}

/// Parses "90d", "12h", "10m", "30s", "2w" (a whole number and a unit).
pub(crate) fn parse_duration(text: &str) -> std::result::Result<Duration, String> {
    let bad = || {
        format!(
            "{text:?} is not a duration: a whole number and one of s, m, h, d, w, such as \"90d\""
        )
    };
    let digits_end = text.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
    let (number, unit) = text.split_at(digits_end);
    let number: u64 = number.parse().map_err(|_| bad())?;
    let unit_secs: u64 = match unit.trim_start() {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        "w" => 7 * 86_400,
        _ => return Err(bad()),
    };
    number
        .checked_mul(unit_secs)
        .map(Duration::from_secs)
        .ok_or_else(|| format!("{text:?} is too long a duration"))
}

/// The shortest text `parse_duration` reads back as `duration` (whole
/// seconds; finer durations are printed as Rust does).
pub fn format_duration(duration: Duration) -> String {
    if duration.subsec_nanos() != 0 {
        return format!("{duration:?}");
    }
    let secs = duration.as_secs();
    for (unit, unit_secs) in [("w", 7 * 86_400), ("d", 86_400), ("h", 3600), ("m", 60)] {
        if secs != 0 && secs.is_multiple_of(unit_secs) {
            return format!("{}{unit}", secs / unit_secs);
        }
    }
    format!("{secs}s")
}

/// Parses "50 GiB", "10MB", "4096" (bytes).
pub(crate) fn parse_size(text: &str) -> std::result::Result<u64, String> {
    let bad = || {
        format!("{text:?} is not a size: a whole number and optionally B, KB, MB, GB, TB, KiB, MiB, GiB or TiB, such as \"50 GiB\"")
    };
    let trimmed = text.trim();
    let digits_end = trimmed
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(trimmed.len());
    let (number, unit) = trimmed.split_at(digits_end);
    let number: u64 = number.parse().map_err(|_| bad())?;
    let multiplier: u64 = match unit.trim_start() {
        "" | "B" => 1,
        "KB" | "kB" => 1000,
        "MB" => 1000_u64.pow(2),
        "GB" => 1000_u64.pow(3),
        "TB" => 1000_u64.pow(4),
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        "TiB" => 1 << 40,
        _ => return Err(bad()),
    };
    number
        .checked_mul(multiplier)
        .ok_or_else(|| format!("{text:?} is too large a size"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: Duration = Duration::from_secs(86_400);

    const GOOD: &str = r#"# retention for the test
[retention]
size_cap = "50 GiB"
check_interval = "10m"

[[retention.rule]]
name = "p0-forever"
priority = ["P0"]
keep_forever = true

[[retention.rule]]
name = "default"
types = ["*"]
archive_after = "90d"
delete_after = "365d"
keep_until_consumed = true
"#;

    fn parse(text: &str) -> Result<Config> {
        parse_config(text, Path::new("/data/evlog.toml"))
    }

    /// The line and message of the error `text` gives.
    fn error_line(text: &str) -> (u64, String) {
        match parse(text) {
            Err(Error::Config {
                path,
                line,
                message,
            }) => {
                assert_eq!(path, Path::new("/data/evlog.toml"));
                (line, message)
            }
            other => panic!("expected a Config error, got {other:?}"),
        }
    }

    #[test]
    fn config_good_file_gives_the_same_policy_as_the_builder() {
        let expected = RetentionPolicy::builder()
            .rule(
                RetentionRule::new("p0-forever")
                    .priority(Priority::P0)
                    .keep_forever(),
            )
            .rule(
                RetentionRule::new("default")
                    .type_pattern("*")
                    .archive_after(90 * DAY)
                    .delete_after(365 * DAY)
                    .keep_until_consumed(),
            )
            .size_cap_bytes(50 << 30)
            .check_interval(Duration::from_secs(600))
            .build()
            .unwrap();
        assert_eq!(parse(GOOD).unwrap().retention, Some(expected));
        // No [retention] table: no policy; an empty one: no rules.
        assert_eq!(parse("").unwrap().retention, None);
        let empty = parse("[retention]\n").unwrap().retention.unwrap();
        assert!(empty.rules().is_empty() && empty.size_cap_bytes().is_none());
        let keyed = "[[retention.rule]]\nname = \"state\"\nkeep_latest_per_entity = true\n";
        let keyed = parse(&format!("[retention]\n{keyed}"))
            .unwrap()
            .retention
            .unwrap();
        assert!(keyed.rules()[0].keep_latest_per_entity);
        let bytes = parse("[retention]\nsize_cap = 1048576\n").unwrap();
        assert_eq!(bytes.retention.unwrap().size_cap_bytes(), Some(1 << 20));
    }

    #[test]
    fn config_errors_name_the_line() {
        let with = |line: &str| GOOD.replace("keep_until_consumed = true", line);
        // The replaced line is line 16 of GOOD.
        assert_eq!(GOOD.lines().nth(15), Some("keep_until_consumed = true"));
        let cases = [
            (with("keep_until_consumed = tru"), 16, "TOML syntax"),
            (with("keep_untill_consumed = true"), 16, "unknown field"),
            (GOOD.replace("\"365d\"", "\"1 year\""), 15, "not a duration"),
            (GOOD.replace("\"90d\"", "\"90\""), 14, "not a duration"),
            (
                GOOD.replace("[\"P0\"]", "[\"P0\", \"P7\"]"),
                8,
                "priority must be",
            ),
            (GOOD.replace("[\"*\"]", "[\"task..x\"]"), 13, "type pattern"),
            (
                GOOD.replace("\"50 GiB\"", "\"50 parsecs\""),
                3,
                "not a size",
            ),
            (GOOD.replace("\"50 GiB\"", "-5"), 3, "negative"),
            (GOOD.replace("\"10m\"", "\"0s\""), 4, "at least"),
            (
                GOOD.replace(
                    "keep_forever = true",
                    "keep_forever = true\ndelete_after = \"1d\"",
                ),
                10,
                "keep_forever and delete_after",
            ),
            (
                GOOD.replace("\"default\"", "\"p0-forever\""),
                12,
                "two rules",
            ),
            (GOOD.replace("\"default\"", "\"size_cap\""), 12, "reserved"),
            (
                GOOD.replace(
                    "keep_forever = true",
                    "keep_forever = true\nkeep_latest_per_entity = true",
                ),
                10,
                "keep_forever and keep_latest_per_entity",
            ),
            (
                GOOD.replace("priority = [\"P0\"]", "priority = []"),
                8,
                "empty",
            ),
            (
                GOOD.replace("[retention]", "[retention]\ncolour = 1"),
                3,
                "unknown field",
            ),
            ("[retentoin]\n".into(), 1, "unknown field"),
        ];
        let mut wrong = Vec::new();
        for (text, line, words) in cases {
            let (found, message) = error_line(&text);
            if found != line || (words != "TOML syntax" && !message.contains(words)) {
                wrong.push(format!(
                    "line {found} (expected {line}): {message:?} (expected {words:?})"
                ));
            }
        }
        assert!(wrong.is_empty(), "{wrong:#?}");
    }

    const GUARD: &str = r#"[[storm.limit]]
pattern = "agent.heartbeat"
rate_per_s = 50
burst = 200
policy = "delay"
max_wait_ms = 250

[[storm.limit]]
pattern = "signal.*"
rate_per_s = 0.5
burst = 1
policy = "flag"
storm_quiet_ms = 2000

[[contract]]
pattern = "orchestration.task.*"
schema_version = 2
fields = { task_id = "string", "/changes/status/after" = "string", sprint = "integer" }
"#;

    #[test]
    fn config_storm_limits_and_contracts_give_the_same_as_the_builders() {
        let config = parse(GUARD).unwrap();
        assert_eq!(
            config.rate_limits,
            vec![
                RateLimit::new("agent.heartbeat", 50.0, 200)
                    .policy(StormPolicy::Delay { max_wait_ms: 250 }),
                RateLimit::new("signal.*", 0.5, 1)
                    .policy(StormPolicy::Flag)
                    .storm_quiet(Duration::from_secs(2)),
            ]
        );
        // Fields in the file's order.
        assert_eq!(
            config.contracts,
            vec![Contract::new("orchestration.task.*")
                .schema_version(2)
                .field("task_id", JsonType::String)
                .field("/changes/status/after", JsonType::String)
                .field("sprint", JsonType::Integer)]
        );
        assert_eq!(config.retention, None);
        let plain = parse("[[storm.limit]]\npattern = \"a\"\nrate_per_s = 1\nburst = 1\n").unwrap();
        assert_eq!(plain.rate_limits[0].get_policy(), StormPolicy::Refuse);
        assert!(parse("[storm]\n").unwrap().rate_limits.is_empty());
    }

    #[test]
    fn config_storm_and_contract_errors_name_the_line() {
        let cases = [
            (GUARD.replace("burst = 200", "burst = 0"), 4, "at least 1"),
            (GUARD.replace("burst = 200", "burst = -3"), 4, ""),
            (
                GUARD.replace("rate_per_s = 50", "rate_per_s = 0"),
                3,
                "positive",
            ),
            (
                GUARD.replace("rate_per_s = 50", "rate_per_s = -inf"),
                3,
                "positive",
            ),
            (GUARD.replace("\"delay\"", "\"drop\""), 5, "unknown variant"),
            (
                GUARD.replace("max_wait_ms = 250", ""),
                5,
                "needs max_wait_ms",
            ),
            (
                GUARD.replace("storm_quiet_ms = 2000", "max_wait_ms = 9"),
                13,
                "only to policy",
            ),
            (
                GUARD.replace("\"signal.*\"", "\"signal..x\""),
                9,
                "type pattern",
            ),
            (
                GUARD.replace("burst = 1\n", "burst = 1\nbrust = 1\n"),
                12,
                "unknown field",
            ),
            (
                GUARD.replace("sprint = \"integer\"", "sprint = \"int\""),
                18,
                "one of string, number",
            ),
            (
                GUARD.replace("\"/changes/status/after\"", "\"/a~2\""),
                18,
                "JSON pointer",
            ),
            (
                GUARD.replace("schema_version = 2", "schema_version = -2"),
                17,
                "",
            ),
            (
                GUARD.replace("schema_version = 2", "schema_versoin = 2"),
                17,
                "unknown field",
            ),
            (
                GUARD.replace("[[contract]]", "[[contracts]]"),
                15,
                "unknown field",
            ),
        ];
        let mut wrong = Vec::new();
        for (text, line, words) in cases {
            let (found, message) = error_line(&text);
            if found != line || !message.contains(words) {
                wrong.push(format!(
                    "line {found} (expected {line}): {message:?} (expected {words:?})"
                ));
            }
        }
        assert!(wrong.is_empty(), "{wrong:#?}");
        let schema = format!("{GUARD}schema = {{ type = 5 }}\n");
        let (line, message) = error_line(&schema);
        assert_eq!(line, 19, "{message}");
        let expected = if cfg!(feature = "json-schema") {
            "not valid"
        } else {
            "json-schema"
        };
        assert!(message.contains(expected), "{message}");
    }

    #[test]
    fn config_load_reads_the_data_directory() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(load_config(dir.path()).unwrap(), None);
        std::fs::write(dir.path().join(CONFIG_FILE), GOOD).unwrap();
        let config = load_config(dir.path()).unwrap().unwrap();
        assert_eq!(config.retention.unwrap().rules().len(), 2);
        // Not UTF-8 on line 2: named, with the file.
        std::fs::write(dir.path().join(CONFIG_FILE), b"[retention]\n\xff\n").unwrap();
        match load_config(dir.path()) {
            Err(Error::Config { path, line, .. }) => {
                assert_eq!(path, dir.path().join(CONFIG_FILE));
                assert_eq!(line, 2);
            }
            other => panic!("expected a Config error, got {other:?}"),
        }
        let error = load_config(dir.path()).unwrap_err().to_string();
        assert!(error.contains("evlog.toml line 2"), "{error}");
    }

    #[test]
    fn config_durations_and_sizes_parse_and_print() {
        for (text, secs) in [
            ("30s", 30),
            ("10m", 600),
            ("12h", 43_200),
            ("90d", 7_776_000),
            ("2w", 1_209_600),
            ("0s", 0),
        ] {
            assert_eq!(
                parse_duration(text),
                Ok(Duration::from_secs(secs)),
                "{text}"
            );
            assert_eq!(format_duration(Duration::from_secs(secs)), text);
        }
        for bad in ["", "d", "10", "10x", "-1d", "1.5h", "99999999999999999999d"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
        for (text, bytes) in [
            ("4096", 4096),
            ("10 MB", 10_000_000),
            ("10MB", 10_000_000),
            ("50 GiB", 50 << 30),
            ("1 KiB", 1024),
            ("7B", 7),
        ] {
            assert_eq!(parse_size(text), Ok(bytes), "{text}");
        }
        for bad in ["", "GiB", "1 gib", "1.5 GB", "-1", "99999999999 TiB"] {
            assert!(parse_size(bad).is_err(), "{bad}");
        }
    }
}
