//! Retention: which events are archived, compacted away or deleted, and
//! when. This module only *decides*; the archiver *acts* (as lsm-tree's
//! compaction strategies choose and a separate worker carries out).
//!
//! A [`RetentionPolicy`] is an ordered list of [`RetentionRule`]s, a total
//! size cap and a check interval. Each event belongs to the **first** rule
//! that matches its priority and type ([`RetentionPolicy::classify`]); an
//! event no rule matches is kept live forever (only the size cap can
//! remove it). The decision, [`decide`], is a pure function of the policy,
//! the time, a summary of every piece of the log ([`PieceSummary`]: one
//! sealed segment, archive or the active segment) and the lowest durable
//! consumer position. It reads no clock and no file, so tests call it with
//! a fake clock, and a dry run ([`render_dry_run`]) shows exactly what the
//! archiver would do.
//!
//! The rules of the decision (README-ready; [`decide`] repeats them):
//!
//! - **Archive.** A sealed segment (never the active one) is archived
//!   whole, losslessly, once every event of it whose rule has
//!   `archive_after` is that old (the newest such event's timestamp plus
//!   `archive_after` is at or before now), and at least one such event
//!   exists. Events of other rules ride along: archived events answer
//!   every read as before.
//! - **Delete by age.** In a sealed segment or an archive, the events of a
//!   rule with `delete_after` are due once the newest of them is that old;
//!   due events are dropped except those under a legal hold. A rule with
//!   `keep_until_consumed` waits (listed as "waiting for consumers") while
//!   the lowest durable consumer position is below the piece's last
//!   sequence number; with no durable consumer nothing waits. If the piece
//!   keeps events it is **compacted** (rewritten as an archive holding the
//!   rest, with their original sequence numbers); if it keeps none it is
//!   **deleted** and its range becomes a recorded hole. A sealed segment
//!   due for deletion is rewritten directly, without archiving it first.
//! - **Size cap.** While the stored bytes of all pieces exceed the cap,
//!   the oldest pieces (lowest sequence numbers first, never the active
//!   segment) lose every event that no `keep_forever` rule, legal hold or
//!   consumer pin protects, events that no rule matches included, until
//!   the estimate is at or under the cap. These actions name the rule
//!   `size_cap`.
//! - **Key compaction.** For a rule with `keep_latest_per_entity`, an
//!   event whose entity has a later event of the same rule is
//!   *superseded*. Superseded events are dropped from a sealed segment or
//!   archive when it is rewritten anyway (deleted from, archived, or cut
//!   for the size cap), or on their own once they are at least half of its
//!   events (so a piece is not rewritten for a few of them). Holds and
//!   `keep_until_consumed` protect them as above.
//! - `keep_forever` events and held events are never dropped, and the
//!   active segment is never touched.

use std::time::Duration;

use serde::Serialize;

use crate::error::{Error, Result};
use crate::event::{type_matches, Priority};

/// Default [`RetentionPolicyBuilder::check_interval`]: often enough that
/// nothing waits long past its due time, rarely enough that the scan of
/// the catalog costs nothing measurable.
pub const CHECK_INTERVAL_DEFAULT: Duration = Duration::from_secs(10 * 60);
/// Shortest check interval accepted: each check walks the whole catalog.
pub const CHECK_INTERVAL_MIN: Duration = Duration::from_secs(1);
/// Most rules in a policy: every piece summary holds one slot per rule, so
/// this bounds the memory of the cached summaries.
pub const RETENTION_RULES_MAX: usize = 64;
/// Longest rule name, in bytes.
pub const RULE_NAME_BYTES_MAX: usize = 64;
/// Key compaction alone rewrites a piece once at least this percentage of
/// its events are superseded: below it, the rewrite would cost more than
/// it frees (as Kafka's `min.cleanable.dirty.ratio` of 0.5).
pub const KEY_COMPACTION_SUPERSEDED_PERCENT_MIN: u64 = 50;
/// The rule name reported for actions the size cap causes; no rule may be
/// called this.
pub const SIZE_CAP_RULE: &str = "size_cap";

/// One rule of a [`RetentionPolicy`]: which events it matches and what
/// happens to them.
///
/// ```
/// use std::time::Duration;
/// use evlog::{Priority, RetentionPolicy, RetentionRule};
///
/// let day = Duration::from_secs(86_400);
/// let policy = RetentionPolicy::builder()
///     .rule(RetentionRule::new("p0-forever").priority(Priority::P0).keep_forever())
///     .rule(
///         RetentionRule::new("default")
///             .archive_after(90 * day)
///             .delete_after(365 * day)
///             .keep_until_consumed(),
///     )
///     .build()?;
/// assert_eq!(policy.rules().len(), 2);
/// # Ok::<(), evlog::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RetentionRule {
    /// Unique within the policy; reported with every action it causes.
    pub name: String,
    /// The priorities this rule matches; `None` matches every priority.
    pub priorities: Option<Vec<Priority>>,
    /// Dotted type patterns (see [`crate::type_matches`]); the rule
    /// matches an event whose type matches any of them. Empty matches
    /// every type.
    pub type_patterns: Vec<String>,
    /// Archive (losslessly) sealed segments whose events of this rule are
    /// at least this old.
    pub archive_after: Option<Duration>,
    /// Drop this rule's events once they are at least this old.
    pub delete_after: Option<Duration>,
    /// Never drop this rule's events, not even for the size cap.
    pub keep_forever: bool,
    /// Drop this rule's events only once every durable consumer has read
    /// past them.
    pub keep_until_consumed: bool,
    /// Key compaction: drop an event of this rule once its entity has a
    /// later event of this rule (events without an entity are kept).
    pub keep_latest_per_entity: bool,
}

impl RetentionRule {
    /// A rule named `name` that matches every event and does nothing to
    /// it (events it matches are kept live; later rules do not see them).
    pub fn new(name: impl Into<String>) -> RetentionRule {
        RetentionRule {
            name: name.into(),
            priorities: None,
            type_patterns: Vec::new(),
            archive_after: None,
            delete_after: None,
            keep_forever: false,
            keep_until_consumed: false,
            keep_latest_per_entity: false,
        }
    }

    /// Also match events of this priority (the first call restricts the
    /// rule to it).
    pub fn priority(mut self, priority: Priority) -> RetentionRule {
        let priorities = self.priorities.get_or_insert_with(Vec::new);
        if !priorities.contains(&priority) {
            priorities.push(priority);
        }
        self
    }

    /// Also match events whose type matches this dotted pattern (the
    /// first call restricts the rule to it).
    pub fn type_pattern(mut self, pattern: impl Into<String>) -> RetentionRule {
        self.type_patterns.push(pattern.into());
        self
    }

    /// Archive (compress into `archive/`) sealed segments once this rule's newest event in them is older than `age`.
    pub fn archive_after(mut self, age: Duration) -> RetentionRule {
        self.archive_after = Some(age);
        self
    }

    /// Delete this rule's events once they are older than `age` (the rest of a piece stays; holds are kept).
    pub fn delete_after(mut self, age: Duration) -> RetentionRule {
        self.delete_after = Some(age);
        self
    }

    /// Never delete this rule's events, whatever a later rule or the size cap says.
    pub fn keep_forever(mut self) -> RetentionRule {
        self.keep_forever = true;
        self
    }

    /// Delete this rule's events only once every durable consumer has passed them.
    pub fn keep_until_consumed(mut self) -> RetentionRule {
        self.keep_until_consumed = true;
        self
    }

    /// Key compaction: keep only the latest event of each entity (see the
    /// module docs of `retention`).
    pub fn keep_latest_per_entity(mut self) -> RetentionRule {
        self.keep_latest_per_entity = true;
        self
    }

    /// Whether this rule matches an event of this type and priority.
    pub fn matches(&self, event_type: &str, priority: Priority) -> bool {
        let priority_matches = self
            .priorities
            .as_ref()
            .is_none_or(|priorities| priorities.contains(&priority));
        priority_matches
            && (self.type_patterns.is_empty()
                || self
                    .type_patterns
                    .iter()
                    .any(|pattern| type_matches(pattern, event_type)))
    }
}

/// Which field of a rule a problem is in (so that the configuration file
/// can name its line).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RuleField {
    Name,
    Priorities,
    /// The pattern at this index of `type_patterns`.
    TypePattern(usize),
    DeleteAfter,
    KeepLatestPerEntity,
}

/// Why a rule is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RuleProblem {
    /// Index of the rule in the policy.
    pub(crate) rule_index: usize,
    pub(crate) field: RuleField,
    pub(crate) reason: String,
}

/// Checks a type pattern as queries do; the reason without the
/// "invalid event" of the query error, since a pattern in a policy is not
/// an event.
pub(crate) fn check_pattern(pattern: &str) -> std::result::Result<(), String> {
    match crate::query::validate_pattern(pattern) {
        Ok(()) => Ok(()),
        Err(Error::InvalidEvent(reason)) => Err(reason),
        Err(other) => Err(other.to_string()),
    }
}

/// Checks the rules of a policy: names valid and unique, priority lists
/// not empty, patterns valid, no `keep_forever` rule with `delete_after`.
pub(crate) fn check_rules(rules: &[RetentionRule]) -> std::result::Result<(), RuleProblem> {
    if rules.len() > RETENTION_RULES_MAX {
        return Err(RuleProblem {
            rule_index: RETENTION_RULES_MAX,
            field: RuleField::Name,
            reason: format!("a policy holds at most {RETENTION_RULES_MAX} rules"),
        });
    }
    for (rule_index, rule) in rules.iter().enumerate() {
        let problem = |field, reason: String| RuleProblem {
            rule_index,
            field,
            reason,
        };
        let name_ok = !rule.name.is_empty()
            && rule.name.len() <= RULE_NAME_BYTES_MAX
            && rule
                .name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
        if !name_ok {
            return Err(problem(
                RuleField::Name,
                format!(
                    "rule name {:?} must be 1 to {RULE_NAME_BYTES_MAX} bytes of A-Z a-z 0-9 _ - .",
                    rule.name
                ),
            ));
        }
        if rule.name == SIZE_CAP_RULE {
            return Err(problem(
                RuleField::Name,
                format!("the rule name {SIZE_CAP_RULE:?} is reserved for the size cap"),
            ));
        }
        if rules[..rule_index].iter().any(|r| r.name == rule.name) {
            return Err(problem(
                RuleField::Name,
                format!("two rules are named {:?}", rule.name),
            ));
        }
        if rule.priorities.as_ref().is_some_and(Vec::is_empty) {
            return Err(problem(
                RuleField::Priorities,
                "the priority list is empty (leave it out to match every priority)".into(),
            ));
        }
        for (pattern_index, pattern) in rule.type_patterns.iter().enumerate() {
            if let Err(reason) = check_pattern(pattern) {
                return Err(problem(RuleField::TypePattern(pattern_index), reason));
            }
        }
        if rule.keep_forever && rule.keep_latest_per_entity {
            return Err(problem(
                RuleField::KeepLatestPerEntity,
                format!(
                    "rule {:?} has both keep_forever and keep_latest_per_entity",
                    rule.name
                ),
            ));
        }
        if rule.keep_forever && rule.delete_after.is_some() {
            return Err(problem(
                RuleField::DeleteAfter,
                format!(
                    "rule {:?} has both keep_forever and delete_after",
                    rule.name
                ),
            ));
        }
    }
    Ok(())
}

/// What the log keeps, archives and deletes: see the module docs of
/// `retention` and [`decide`]. Build it with [`RetentionPolicy::builder`].
///
/// A policy given in [`crate::Options::retention`] wins over the one in
/// `DIR/evlog.toml` ([`crate::load_config`]); with neither, nothing is
/// archived or deleted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetentionPolicy {
    rules: Vec<RetentionRule>,
    size_cap_bytes: Option<u64>,
    check_interval: Duration,
}

/// Builds a [`RetentionPolicy`]; [`RetentionPolicyBuilder::build`] checks it.
#[derive(Debug, Clone)]
pub struct RetentionPolicyBuilder {
    rules: Vec<RetentionRule>,
    size_cap_bytes: Option<u64>,
    check_interval: Duration,
}

impl RetentionPolicyBuilder {
    /// Appends a rule; earlier rules take precedence (first match wins).
    pub fn rule(mut self, rule: RetentionRule) -> RetentionPolicyBuilder {
        self.rules.push(rule);
        self
    }

    /// Cap on the bytes the log's pieces take on disk (segments and
    /// archives; not the secondary indexes).
    pub fn size_cap_bytes(mut self, bytes: u64) -> RetentionPolicyBuilder {
        self.size_cap_bytes = Some(bytes);
        self
    }

    /// How often the archiver applies the policy. Default
    /// [`CHECK_INTERVAL_DEFAULT`]; at least [`CHECK_INTERVAL_MIN`].
    pub fn check_interval(mut self, interval: Duration) -> RetentionPolicyBuilder {
        self.check_interval = interval;
        self
    }

    /// The policy, or `InvalidRetention` naming the first problem.
    pub fn build(self) -> Result<RetentionPolicy> {
        if let Err(problem) = check_rules(&self.rules) {
            let rule = self
                .rules
                .get(problem.rule_index)
                .map_or_else(String::new, |rule| rule.name.clone());
            return Err(Error::InvalidRetention {
                rule,
                reason: problem.reason,
            });
        }
        if self.check_interval < CHECK_INTERVAL_MIN {
            return Err(Error::InvalidRetention {
                rule: String::new(),
                reason: format!(
                    "check_interval must be at least {} s",
                    CHECK_INTERVAL_MIN.as_secs()
                ),
            });
        }
        Ok(RetentionPolicy {
            rules: self.rules,
            size_cap_bytes: self.size_cap_bytes,
            check_interval: self.check_interval,
        })
    }
}

impl RetentionPolicy {
    /// A builder for a policy, with no rules, no size cap and the default check interval.
    pub fn builder() -> RetentionPolicyBuilder {
        RetentionPolicyBuilder {
            rules: Vec::new(),
            size_cap_bytes: None,
            check_interval: CHECK_INTERVAL_DEFAULT,
        }
    }

    /// The rules, in precedence order.
    pub fn rules(&self) -> &[RetentionRule] {
        &self.rules
    }

    /// The size cap on the stored bytes of the log, if any.
    pub fn size_cap_bytes(&self) -> Option<u64> {
        self.size_cap_bytes
    }

    /// How often the archiver applies the policy.
    pub fn check_interval(&self) -> Duration {
        self.check_interval
    }

    /// The index of the first rule that matches an event of this type and
    /// priority; `None` when no rule does (the event is kept live).
    pub fn classify(&self, event_type: &str, priority: Priority) -> Option<usize> {
        self.rules
            .iter()
            .position(|rule| rule.matches(event_type, priority))
    }

    /// The slot of [`PieceSummary::per_rule`] for a classification: the
    /// rule's index, or the last slot for "no rule".
    pub fn class_slot(&self, class: Option<usize>) -> usize {
        class.unwrap_or(self.rules.len())
    }

    /// Slots per piece summary: one per rule plus one for "no rule".
    pub fn class_slot_count(&self) -> usize {
        self.rules.len() + 1
    }

    fn slot_name(&self, slot: usize) -> &str {
        self.rules.get(slot).map_or("(no rule)", |rule| &rule.name)
    }

    fn slot_keeps_forever(&self, slot: usize) -> bool {
        self.rules.get(slot).is_some_and(|rule| rule.keep_forever)
    }

    /// Whether durable consumers still pin this slot's events in `piece`.
    fn slot_pinned(&self, slot: usize, piece: &PieceSummary, consumers: Option<u64>) -> bool {
        self.rules
            .get(slot)
            .is_some_and(|rule| rule.keep_until_consumed)
            && consumers.is_some_and(|position| position < piece.last_seq)
    }
}

/// What a piece of the log is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PieceKind {
    /// A sealed segment (`segments/*.seg`).
    Sealed,
    /// An archive (`archive/*.evz`), possibly compacted.
    Archived,
    /// The active segment: never acted on.
    Active,
}

/// Counts of one class (the events of one rule, or of no rule) in a piece.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ClassStats {
    /// Events of the class in the piece.
    pub events: u64,
    /// Events under a legal hold (never dropped); at most `events`.
    pub held_events: u64,
    /// Encoded record bytes (header and body) of all `events`.
    pub encoded_bytes: u64,
    /// Encoded record bytes of the `held_events`.
    pub held_encoded_bytes: u64,
    /// Smallest and largest event timestamp; meaningless when `events`
    /// is 0 (`i64::MAX` and `i64::MIN` then).
    pub min_timestamp_us: i64,
    /// Largest event timestamp (see `min_timestamp_us`).
    pub max_timestamp_us: i64,
    /// Rules with `keep_latest_per_entity` only: events not held whose
    /// entity has a later event of the same rule (anywhere in the log),
    /// and their encoded bytes. 0 for other rules.
    pub superseded_events: u64,
    /// Encoded bytes of the `superseded_events`.
    pub superseded_encoded_bytes: u64,
}

impl Default for ClassStats {
    fn default() -> ClassStats {
        ClassStats {
            events: 0,
            held_events: 0,
            encoded_bytes: 0,
            held_encoded_bytes: 0,
            min_timestamp_us: i64::MAX,
            max_timestamp_us: i64::MIN,
            superseded_events: 0,
            superseded_encoded_bytes: 0,
        }
    }
}

impl ClassStats {
    fn droppable_events(&self) -> u64 {
        self.events.saturating_sub(self.held_events)
    }

    fn droppable_bytes(&self) -> u64 {
        self.encoded_bytes.saturating_sub(self.held_encoded_bytes)
    }
}

/// What [`decide`] needs to know about one piece of the log. The archiver
/// computes it with one scan of an immutable piece (classifying each
/// event and checking it against the holds) and caches it; a change of
/// the policy or of the holds invalidates the cache.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PieceSummary {
    /// The first sequence number of the piece's range.
    pub first_seq: u64,
    /// The last sequence number of the piece's range (a compacted archive
    /// holds fewer events than its range).
    pub last_seq: u64,
    /// Live segment, archive, or the active segment.
    pub kind: PieceKind,
    /// Bytes of the piece's files on disk.
    pub stored_bytes: u64,
    /// One entry per rule of the policy, by rule index, then one for the
    /// events no rule matches ([`RetentionPolicy::class_slot`]).
    pub per_rule: Vec<ClassStats>,
}

impl PieceSummary {
    /// An empty summary with one slot per class of `policy`.
    pub fn new(
        first_seq: u64,
        last_seq: u64,
        kind: PieceKind,
        stored_bytes: u64,
        policy: &RetentionPolicy,
    ) -> PieceSummary {
        PieceSummary {
            first_seq,
            last_seq,
            kind,
            stored_bytes,
            per_rule: vec![ClassStats::default(); policy.class_slot_count()],
        }
    }

    /// Counts one event of the given slot. Out-of-range slots are ignored
    /// (the caller passes [`RetentionPolicy::class_slot`]).
    pub fn count_event(&mut self, slot: usize, held: bool, encoded_bytes: u64, timestamp_us: i64) {
        let Some(stats) = self.per_rule.get_mut(slot) else {
            return;
        };
        stats.events += 1;
        stats.encoded_bytes = stats.encoded_bytes.saturating_add(encoded_bytes);
        if held {
            stats.held_events += 1;
            stats.held_encoded_bytes = stats.held_encoded_bytes.saturating_add(encoded_bytes);
        }
        stats.min_timestamp_us = stats.min_timestamp_us.min(timestamp_us);
        stats.max_timestamp_us = stats.max_timestamp_us.max(timestamp_us);
    }

    /// Counts an event already counted by [`PieceSummary::count_event`]
    /// as superseded: not held, of a rule with `keep_latest_per_entity`,
    /// and its entity has a later event of that rule. Unlike the other
    /// counts this one grows as the log does, so the cached summaries of
    /// such rules need refreshing.
    pub fn count_superseded(&mut self, slot: usize, encoded_bytes: u64) {
        if let Some(stats) = self.per_rule.get_mut(slot) {
            stats.superseded_events += 1;
            stats.superseded_encoded_bytes =
                stats.superseded_encoded_bytes.saturating_add(encoded_bytes);
        }
    }

    fn events(&self) -> u64 {
        self.per_rule.iter().map(|s| s.events).sum()
    }

    fn encoded_bytes(&self) -> u64 {
        self.per_rule
            .iter()
            .fold(0u64, |sum, s| sum.saturating_add(s.encoded_bytes))
    }
}

/// The class slot of a logged event and whether a hold covers it: what
/// the archiver computes from a record's body (`crate::archiver`), for the
/// tests that replay a plan event by event.
#[cfg(test)]
pub(crate) fn class_of(
    policy: &RetentionPolicy,
    holds: &crate::holds::HoldSet,
    event: &crate::event::LoggedEvent,
) -> (usize, bool) {
    let slot = policy.class_slot(policy.classify(&event.event_type, event.priority));
    let held = !holds.is_empty()
        && holds.holds_event(
            event.correlation_id.as_ref(),
            event
                .entity
                .as_ref()
                .map(|e| (e.entity_type.as_str(), e.entity_id.as_str())),
        );
    (slot, held)
}

/// What an action does to its piece.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RetentionActionKind {
    /// Move a sealed segment, whole, into an archive.
    Archive,
    /// Rewrite the piece as an archive without the dropped events (the
    /// others keep their sequence numbers).
    Compact,
    /// Remove the piece; its range becomes a recorded hole.
    Delete,
}

impl RetentionActionKind {
    fn as_str(self) -> &'static str {
        match self {
            RetentionActionKind::Archive => "archive",
            RetentionActionKind::Compact => "compact",
            RetentionActionKind::Delete => "delete",
        }
    }
}

/// One thing the archiver is to do to one piece.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RetentionAction {
    /// First sequence number of the piece acted on.
    pub piece_first_seq: u64,
    /// Last sequence number of the piece acted on.
    pub piece_last_seq: u64,
    /// Archive, compact or delete.
    pub kind: RetentionActionKind,
    /// The rule that caused it ([`SIZE_CAP_RULE`] for the size cap).
    pub rule: String,
    /// The class slots whose events are dropped, ascending (rule indexes;
    /// the rule count means "no rule"). The executor classifies each event
    /// again and drops it when its slot is listed and it is not held, so
    /// it does exactly what was decided. Empty for `Archive`.
    pub drop_rules: Vec<usize>,
    /// Class slots (not in `drop_rules`) whose *superseded* events are
    /// dropped: key compaction. Ascending; empty for `Archive`.
    pub compact_rules: Vec<usize>,
    /// The names of the rules of `drop_rules` then `compact_rules`
    /// ("(no rule)" for the last slot), for people and `--json` readers
    /// who do not have the policy at hand.
    pub dropped_from: Vec<String>,
    /// Events the action drops.
    pub events_dropped: u64,
    /// Encoded record bytes of the dropped events.
    pub bytes_dropped: u64,
    /// Estimate of the stored bytes freed: the whole piece for `Delete`,
    /// its stored bytes in proportion to the encoded bytes dropped for
    /// `Compact`, 0 for `Archive` (whose compression is not guessed).
    pub stored_bytes_freed: u64,
    /// Events the piece keeps.
    pub events_kept: u64,
    /// Why, in words, for people.
    pub reason: String,
}

impl RetentionAction {
    /// Whether the executor drops an event of this class slot; `held`
    /// from the holds, `superseded` whether its entity has a later event
    /// of the same rule (only asked for the slots of `compact_rules`).
    pub fn drops(&self, slot: usize, held: bool, superseded: bool) -> bool {
        !held
            && (self.drop_rules.binary_search(&slot).is_ok()
                || (superseded && self.compact_rules.binary_search(&slot).is_ok()))
    }
}

/// Events that are due for deletion but wait for durable consumers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WaitingForConsumers {
    /// First sequence number of the piece.
    pub piece_first_seq: u64,
    /// Last sequence number of the piece.
    pub piece_last_seq: u64,
    /// The rule whose events wait (the class's rule, also when the size
    /// cap wants them).
    pub rule: String,
    /// The rule or cap that wants them gone.
    pub wanted_by: String,
    /// Events that wait.
    pub events: u64,
    /// The slowest durable consumer's position: they go once it passes them.
    pub consumers_min_position: u64,
}

/// The outcome of [`decide`]: the actions, in sequence order, and what
/// waits for consumers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RetentionPlan {
    /// The time the plan was made for, in microseconds since the Unix epoch.
    pub now_us: i64,
    /// What to do, in sequence order.
    pub actions: Vec<RetentionAction>,
    /// Events due for deletion that wait for durable consumers.
    pub waiting: Vec<WaitingForConsumers>,
    /// Stored bytes of all pieces before, and estimated after, the actions.
    pub stored_bytes_before: u64,
    /// Stored bytes estimated after the actions.
    pub stored_bytes_after_estimate: u64,
}

/// A `Duration` as microseconds, saturating (a rule of 300 000 years is
/// "never").
fn duration_us(duration: Duration) -> i64 {
    i64::try_from(duration.as_micros()).unwrap_or(i64::MAX)
}

/// Applies `policy` at `now_us` to the pieces of a log. Pure: no clock,
/// no I/O; the same inputs give the same plan.
///
/// `consumers_min_position` is the lowest committed position of the
/// durable consumers (`None` when there are none): a rule with
/// `keep_until_consumed` drops nothing from a piece whose `last_seq` is
/// above it.
///
/// The rules are in the module docs of `retention`: archive a sealed
/// segment once all its events that have `archive_after` are that old;
/// drop a class from a sealed segment or archive once its newest event is
/// `delete_after` old (compact when events remain, delete when none do);
/// then, over the size cap, drop every unprotected event of the oldest
/// pieces until the estimate is under it. Never an action on the active
/// segment, never a `keep_forever` or held event dropped.
///
/// An error only when a summary does not have one slot per class of this
/// policy (it was computed for another policy: a bug in the caller).
pub fn decide(
    policy: &RetentionPolicy,
    now_us: i64,
    pieces: &[PieceSummary],
    consumers_min_position: Option<u64>,
) -> Result<RetentionPlan> {
    let slots = policy.class_slot_count();
    if pieces.iter().any(|piece| piece.per_rule.len() != slots) {
        return Err(Error::Internal(
            "a piece summary was computed for another retention policy",
        ));
    }
    let mut order: Vec<&PieceSummary> = pieces.iter().collect();
    order.sort_by_key(|piece| (piece.first_seq, piece.last_seq));

    let mut actions: Vec<RetentionAction> = Vec::new();
    let mut waiting = Vec::new();
    for piece in &order {
        if piece.kind == PieceKind::Active {
            continue;
        }
        let action = decide_piece(policy, now_us, piece, consumers_min_position, &mut waiting);
        actions.extend(action);
    }

    let stored_bytes_before = order
        .iter()
        .fold(0u64, |sum, piece| sum.saturating_add(piece.stored_bytes));
    let freed: u64 = actions.iter().map(|a| a.stored_bytes_freed).sum();
    let mut stored_bytes_after = stored_bytes_before.saturating_sub(freed);
    if let Some(cap) = policy.size_cap_bytes {
        if stored_bytes_after > cap {
            stored_bytes_after = apply_size_cap(
                policy,
                &order,
                consumers_min_position,
                cap,
                stored_bytes_after,
                &mut actions,
                &mut waiting,
            );
        }
    }
    actions.sort_by_key(|action| action.piece_first_seq);
    Ok(RetentionPlan {
        now_us,
        actions,
        waiting,
        stored_bytes_before,
        stored_bytes_after_estimate: stored_bytes_after,
    })
}

/// What age and key compaction make due in one sealed segment or archive.
fn decide_piece(
    policy: &RetentionPolicy,
    now_us: i64,
    piece: &PieceSummary,
    consumers: Option<u64>,
    waiting: &mut Vec<WaitingForConsumers>,
) -> Option<RetentionAction> {
    let (drop_slots, age_cause) = due_by_age(policy, now_us, piece, consumers, waiting);
    let compact_slots = superseded_slots(policy, piece, consumers, waiting, &drop_slots);
    if let Some((cause_slot, delete_after)) = age_cause {
        let reason = format!(
            "delete_after {} passed for the newest event of rule {} here ({})",
            crate::config::format_duration(delete_after),
            policy.slot_name(cause_slot),
            crate::json::format_timestamp(piece.per_rule[cause_slot].max_timestamp_us),
        );
        let rule = policy.slot_name(cause_slot).to_string();
        return Some(drop_action(
            policy,
            piece,
            drop_slots,
            compact_slots,
            rule,
            reason,
        ));
    }
    let superseded: u64 = compact_slots
        .iter()
        .map(|&slot| piece.per_rule[slot].superseded_events)
        .sum();
    let events = piece.events();
    let worth_alone = superseded > 0
        && superseded.saturating_mul(100)
            >= events.saturating_mul(KEY_COMPACTION_SUPERSEDED_PERCENT_MIN);
    if worth_alone {
        // The rule with the most superseded events here names the action.
        let slot = compact_slots.iter().copied().max_by_key(|&slot| {
            (
                piece.per_rule[slot].superseded_events,
                std::cmp::Reverse(slot),
            )
        })?;
        let reason = format!(
            "keep_latest_per_entity: {superseded} of {events} events here have a later event of their entity"
        );
        let rule = policy.slot_name(slot).to_string();
        return Some(drop_action(
            policy,
            piece,
            Vec::new(),
            compact_slots,
            rule,
            reason,
        ));
    }
    let archive = decide_archive(policy, now_us, piece)?;
    if compact_slots.is_empty() {
        return Some(archive);
    }
    // The segment is rewritten into an archive anyway: leave the
    // superseded events out of it.
    let reason = format!(
        "{}; keep_latest_per_entity leaves out {superseded} superseded events",
        archive.reason
    );
    Some(drop_action(
        policy,
        piece,
        Vec::new(),
        compact_slots,
        archive.rule,
        reason,
    ))
}

/// The slots whose `delete_after` is due in `piece` (pinned ones go to
/// `waiting`), and the one that came due last (it made the action due now).
fn due_by_age(
    policy: &RetentionPolicy,
    now_us: i64,
    piece: &PieceSummary,
    consumers: Option<u64>,
    waiting: &mut Vec<WaitingForConsumers>,
) -> (Vec<usize>, Option<(usize, Duration)>) {
    let mut drop_slots = Vec::new();
    let mut cause: Option<(i64, usize, Duration)> = None;
    for (slot, rule) in policy.rules.iter().enumerate() {
        let stats = &piece.per_rule[slot];
        let Some(delete_after) = rule.delete_after else {
            continue;
        };
        if stats.droppable_events() == 0 {
            continue;
        }
        let due_us = stats
            .max_timestamp_us
            .saturating_add(duration_us(delete_after));
        if due_us > now_us {
            continue;
        }
        if let (true, Some(position)) = (policy.slot_pinned(slot, piece, consumers), consumers) {
            waiting.push(WaitingForConsumers {
                piece_first_seq: piece.first_seq,
                piece_last_seq: piece.last_seq,
                rule: rule.name.clone(),
                wanted_by: rule.name.clone(),
                events: stats.droppable_events(),
                consumers_min_position: position,
            });
            continue;
        }
        drop_slots.push(slot);
        if cause.is_none_or(|(latest, _, _)| due_us > latest) {
            cause = Some((due_us, slot, delete_after));
        }
    }
    (drop_slots, cause.map(|(_, slot, after)| (slot, after)))
}

/// The slots of `keep_latest_per_entity` rules with superseded events in
/// `piece` that are not dropped whole already (pinned ones go to
/// `waiting`).
fn superseded_slots(
    policy: &RetentionPolicy,
    piece: &PieceSummary,
    consumers: Option<u64>,
    waiting: &mut Vec<WaitingForConsumers>,
    drop_slots: &[usize],
) -> Vec<usize> {
    let mut slots = Vec::new();
    for (slot, rule) in policy.rules.iter().enumerate() {
        let superseded = piece.per_rule[slot].superseded_events;
        if !rule.keep_latest_per_entity || superseded == 0 || drop_slots.contains(&slot) {
            continue;
        }
        if let (true, Some(position)) = (policy.slot_pinned(slot, piece, consumers), consumers) {
            waiting.push(WaitingForConsumers {
                piece_first_seq: piece.first_seq,
                piece_last_seq: piece.last_seq,
                rule: rule.name.clone(),
                wanted_by: rule.name.clone(),
                events: superseded,
                consumers_min_position: position,
            });
            continue;
        }
        slots.push(slot);
    }
    slots
}

/// The archiving of a sealed segment, if every class with `archive_after`
/// is due.
fn decide_archive(
    policy: &RetentionPolicy,
    now_us: i64,
    piece: &PieceSummary,
) -> Option<RetentionAction> {
    if piece.kind != PieceKind::Sealed {
        return None;
    }
    let mut cause: Option<(i64, usize, Duration)> = None;
    for (slot, rule) in policy.rules.iter().enumerate() {
        let stats = &piece.per_rule[slot];
        let Some(archive_after) = rule.archive_after else {
            continue;
        };
        if stats.events == 0 {
            continue;
        }
        let due_us = stats
            .max_timestamp_us
            .saturating_add(duration_us(archive_after));
        if due_us > now_us {
            return None;
        }
        if cause.is_none_or(|(latest, _, _)| due_us > latest) {
            cause = Some((due_us, slot, archive_after));
        }
    }
    let (_, slot, archive_after) = cause?;
    Some(RetentionAction {
        piece_first_seq: piece.first_seq,
        piece_last_seq: piece.last_seq,
        kind: RetentionActionKind::Archive,
        rule: policy.slot_name(slot).to_string(),
        drop_rules: Vec::new(),
        compact_rules: Vec::new(),
        dropped_from: Vec::new(),
        events_dropped: 0,
        bytes_dropped: 0,
        stored_bytes_freed: 0,
        events_kept: piece.events(),
        reason: format!(
            "archive_after {} passed for the newest event of rule {} here ({})",
            crate::config::format_duration(archive_after),
            policy.slot_name(slot),
            crate::json::format_timestamp(piece.per_rule[slot].max_timestamp_us),
        ),
    })
}

/// A `Compact` or `Delete` action dropping from `piece` the unheld events
/// of `drop_slots` and the superseded events of `compact_slots` (any
/// order; a slot in both is dropped whole).
fn drop_action(
    policy: &RetentionPolicy,
    piece: &PieceSummary,
    mut drop_slots: Vec<usize>,
    mut compact_slots: Vec<usize>,
    rule: String,
    reason: String,
) -> RetentionAction {
    drop_slots.sort_unstable();
    drop_slots.dedup();
    compact_slots.sort_unstable();
    compact_slots.dedup();
    compact_slots.retain(|slot| drop_slots.binary_search(slot).is_err());
    debug_assert!(drop_slots
        .iter()
        .chain(&compact_slots)
        .all(|&s| !policy.slot_keeps_forever(s)));
    let whole = drop_slots.iter().map(|&slot| {
        let stats = &piece.per_rule[slot];
        (stats.droppable_events(), stats.droppable_bytes())
    });
    let superseded = compact_slots.iter().map(|&slot| {
        let stats = &piece.per_rule[slot];
        (stats.superseded_events, stats.superseded_encoded_bytes)
    });
    let (events_dropped, bytes_dropped) = whole
        .chain(superseded)
        .fold((0u64, 0u64), |(events, bytes), (e, b)| {
            (events + e, bytes.saturating_add(b))
        });
    let events_kept = piece.events().saturating_sub(events_dropped);
    let (kind, stored_bytes_freed) = if events_kept == 0 {
        (RetentionActionKind::Delete, piece.stored_bytes)
    } else {
        let encoded = piece.encoded_bytes();
        let freed = if encoded == 0 {
            0
        } else {
            (u128::from(piece.stored_bytes) * u128::from(bytes_dropped) / u128::from(encoded))
                as u64
        };
        (RetentionActionKind::Compact, freed)
    };
    let dropped_from = drop_slots
        .iter()
        .chain(&compact_slots)
        .map(|&slot| policy.slot_name(slot).to_string())
        .collect();
    RetentionAction {
        piece_first_seq: piece.first_seq,
        piece_last_seq: piece.last_seq,
        kind,
        rule,
        drop_rules: drop_slots,
        compact_rules: compact_slots,
        dropped_from,
        events_dropped,
        bytes_dropped,
        stored_bytes_freed,
        events_kept,
        reason,
    }
}

/// Drops the unprotected events of the oldest pieces until the estimate
/// `stored_bytes` is at most `cap`; returns the new estimate.
fn apply_size_cap(
    policy: &RetentionPolicy,
    order: &[&PieceSummary],
    consumers: Option<u64>,
    cap: u64,
    mut stored_bytes: u64,
    actions: &mut Vec<RetentionAction>,
    waiting: &mut Vec<WaitingForConsumers>,
) -> u64 {
    for piece in order {
        if stored_bytes <= cap {
            break;
        }
        if piece.kind == PieceKind::Active {
            continue;
        }
        let existing = actions
            .iter()
            .position(|a| a.piece_first_seq == piece.first_seq);
        let already: &[usize] = match existing.map(|i| &actions[i]) {
            Some(action) if action.kind == RetentionActionKind::Delete => continue,
            Some(action) => &action.drop_rules,
            None => &[],
        };
        let mut extra = Vec::new();
        for slot in 0..policy.class_slot_count() {
            let stats = &piece.per_rule[slot];
            if stats.droppable_events() == 0
                || already.contains(&slot)
                || policy.slot_keeps_forever(slot)
            {
                continue;
            }
            if let (true, Some(position)) = (policy.slot_pinned(slot, piece, consumers), consumers)
            {
                waiting.push(WaitingForConsumers {
                    piece_first_seq: piece.first_seq,
                    piece_last_seq: piece.last_seq,
                    rule: policy.slot_name(slot).to_string(),
                    wanted_by: SIZE_CAP_RULE.to_string(),
                    events: stats.droppable_events(),
                    consumers_min_position: position,
                });
                continue;
            }
            extra.push(slot);
        }
        if extra.is_empty() {
            continue;
        }
        let cap_reason = format!(
            "size cap {cap} bytes: stored {stored_bytes} bytes (estimated) before this piece"
        );
        let replaced = match existing.map(|index| actions.swap_remove(index)) {
            // An age or key compaction the cap extends: it keeps its rule.
            Some(old) if old.kind == RetentionActionKind::Compact => {
                let mut slots = old.drop_rules;
                slots.extend(&extra);
                let reason = format!("{}; also {cap_reason}", old.reason);
                stored_bytes = stored_bytes.saturating_add(old.stored_bytes_freed);
                drop_action(policy, piece, slots, old.compact_rules, old.rule, reason)
            }
            // An archive the cap overtakes is rewritten directly.
            _ => drop_action(
                policy,
                piece,
                extra,
                Vec::new(),
                SIZE_CAP_RULE.into(),
                cap_reason,
            ),
        };
        stored_bytes = stored_bytes.saturating_sub(replaced.stored_bytes_freed);
        actions.push(replaced);
    }
    stored_bytes
}

/// The dry run as a table for people: one line per action, then the
/// events waiting for consumers.
pub fn render_dry_run(plan: &RetentionPlan) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    if plan.actions.is_empty() && plan.waiting.is_empty() {
        out.push_str("nothing to archive, compact or delete\n");
    } else {
        let _ = writeln!(
            out,
            "{:<8} {:<44} {:>12} {:>12} {:>14}  {:<16} reason",
            "action", "seqs", "dropped", "kept", "bytes dropped", "rule"
        );
        for action in &plan.actions {
            let _ = writeln!(
                out,
                "{:<8} {:<44} {:>12} {:>12} {:>14}  {:<16} {}",
                action.kind.as_str(),
                format!("{}..={}", action.piece_first_seq, action.piece_last_seq),
                action.events_dropped,
                action.events_kept,
                action.bytes_dropped,
                action.rule,
                action.reason
            );
        }
        for wait in &plan.waiting {
            let _ = writeln!(
                out,
                "{:<8} {:<44} {:>12} {:>12} {:>14}  {:<16} waiting for consumers: due for {}, lowest consumer position {}",
                "wait",
                format!("{}..={}", wait.piece_first_seq, wait.piece_last_seq),
                wait.events,
                "-",
                "-",
                wait.rule,
                wait.wanted_by,
                wait.consumers_min_position
            );
        }
    }
    let _ = writeln!(
        out,
        "stored bytes: {} now, about {} after",
        plan.stored_bytes_before, plan.stored_bytes_after_estimate
    );
    out
}

/// The dry run as one JSON object (the fields of [`RetentionPlan`]; their
/// names are a contract of `evlog retention --dry-run --json`).
pub fn render_dry_run_json(plan: &RetentionPlan) -> String {
    // Serializing these plain structs cannot fail; an empty object would
    // only hide a bug, so say so in the output instead.
    serde_json::to_string(plan)
        .unwrap_or_else(|error| format!("{{\"error\":{:?}}}", error.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY_US: i64 = 86_400_000_000;
    const DAY: Duration = Duration::from_secs(86_400);
    /// The fake clock: day 1000 after the epoch.
    const NOW_US: i64 = 1000 * DAY_US;

    /// Rule 0 keeps P0 forever (and archives it), rule 1 archives the
    /// rest after 90 days and deletes it after 365 once consumed.
    fn standard_policy() -> RetentionPolicy {
        RetentionPolicy::builder()
            .rule(
                RetentionRule::new("p0-forever")
                    .priority(Priority::P0)
                    .archive_after(90 * DAY)
                    .keep_forever(),
            )
            .rule(
                RetentionRule::new("default")
                    .archive_after(90 * DAY)
                    .delete_after(365 * DAY)
                    .keep_until_consumed(),
            )
            .build()
            .unwrap()
    }

    /// A test event: its class slot, whether held, its encoded bytes and
    /// its age in days at `NOW_US`.
    #[derive(Clone, Copy)]
    struct TestEvent {
        slot: usize,
        held: bool,
        bytes: u64,
        age_days: i64,
    }

    fn ev(slot: usize, age_days: i64) -> TestEvent {
        TestEvent {
            slot,
            held: false,
            bytes: 100,
            age_days,
        }
    }

    fn held(slot: usize, age_days: i64) -> TestEvent {
        TestEvent {
            held: true,
            ..ev(slot, age_days)
        }
    }

    /// A piece holding `events` from `first_seq` on, stored in as many
    /// bytes as they encode to.
    fn piece(
        policy: &RetentionPolicy,
        first_seq: u64,
        kind: PieceKind,
        events: &[TestEvent],
    ) -> PieceSummary {
        let last_seq = first_seq + events.len() as u64 - 1;
        let stored: u64 = events.iter().map(|e| e.bytes).sum();
        let mut summary = PieceSummary::new(first_seq, last_seq, kind, stored, policy);
        for e in events {
            summary.count_event(e.slot, e.held, e.bytes, NOW_US - e.age_days * DAY_US);
        }
        summary
    }

    fn repeat(event: TestEvent, count: usize) -> Vec<TestEvent> {
        vec![event; count]
    }

    fn only_action(plan: &RetentionPlan) -> &RetentionAction {
        assert_eq!(plan.actions.len(), 1, "{plan:#?}");
        &plan.actions[0]
    }

    #[test]
    fn retention_nothing_due_decides_nothing() {
        // Events 10 days old are neither 90 days (archive) nor 365 (delete).
        let policy = standard_policy();
        let pieces = [
            piece(&policy, 1, PieceKind::Sealed, &[ev(0, 10), ev(1, 10)]),
            piece(&policy, 3, PieceKind::Archived, &[ev(1, 10)]),
        ];
        let plan = decide(&policy, NOW_US, &pieces, None).unwrap();
        assert!(
            plan.actions.is_empty() && plan.waiting.is_empty(),
            "{plan:#?}"
        );
        assert_eq!(plan.stored_bytes_before, 300);
        assert_eq!(plan.stored_bytes_after_estimate, 300);
    }

    #[test]
    fn retention_archive_due_archives_sealed_segments_only() {
        // 100 days: archive due, deletion not. The archive is whole
        // (nothing dropped); an archive and the active segment are left.
        let policy = standard_policy();
        let events = [ev(0, 120), ev(1, 100), ev(1, 100)];
        let pieces = [
            piece(&policy, 1, PieceKind::Sealed, &events),
            piece(&policy, 4, PieceKind::Archived, &events),
            piece(&policy, 7, PieceKind::Active, &events),
        ];
        let plan = decide(&policy, NOW_US, &pieces, None).unwrap();
        let action = only_action(&plan);
        assert_eq!(action.kind, RetentionActionKind::Archive);
        assert_eq!((action.piece_first_seq, action.piece_last_seq), (1, 3));
        // The rule whose archive came due last: "default" (100 days old
        // is due later than 120 days old).
        assert_eq!(action.rule, "default");
        assert_eq!((action.events_dropped, action.events_kept), (0, 3));
        assert!(action.drop_rules.is_empty());
    }

    #[test]
    fn retention_archive_waits_for_the_newest_event_of_every_archiving_rule() {
        let policy = standard_policy();
        // The P0 event is 10 days old: not yet due, so the segment waits.
        let pieces = [piece(
            &policy,
            1,
            PieceKind::Sealed,
            &[ev(0, 10), ev(1, 200)],
        )];
        let plan = decide(&policy, NOW_US, &pieces, None).unwrap();
        assert!(plan.actions.is_empty(), "{plan:#?}");
        // Exactly at its due time it is archived (due <= now).
        let pieces = [piece(
            &policy,
            1,
            PieceKind::Sealed,
            &[ev(0, 90), ev(1, 200)],
        )];
        let plan = decide(&policy, NOW_US, &pieces, None).unwrap();
        assert_eq!(only_action(&plan).kind, RetentionActionKind::Archive);
        assert_eq!(only_action(&plan).rule, "p0-forever");
    }

    #[test]
    fn retention_p0_survives_the_deletion_of_its_archive() {
        // An archive mixing P0 and other events reaches deletion age: the
        // P0 events are kept in a compacted archive, the rest dropped.
        let policy = standard_policy();
        let mut events = repeat(ev(1, 400), 7);
        events.extend(repeat(ev(0, 400), 3));
        let pieces = [piece(&policy, 11, PieceKind::Archived, &events)];
        let plan = decide(&policy, NOW_US, &pieces, None).unwrap();
        let action = only_action(&plan);
        assert_eq!(action.kind, RetentionActionKind::Compact);
        assert_eq!(action.rule, "default");
        assert_eq!(action.drop_rules, vec![1]);
        assert_eq!((action.events_dropped, action.events_kept), (7, 3));
        assert_eq!(action.bytes_dropped, 700);
        assert_eq!(action.stored_bytes_freed, 700);
        assert!(
            action.drops(1, false, false)
                && !action.drops(0, false, true)
                && !action.drops(1, true, false)
        );
    }

    #[test]
    fn retention_everything_deleted_becomes_a_tombstone() {
        let policy = standard_policy();
        let pieces = [
            piece(&policy, 1, PieceKind::Archived, &repeat(ev(1, 500), 4)),
            // A sealed segment due for deletion is rewritten directly,
            // without being archived first.
            piece(&policy, 5, PieceKind::Sealed, &repeat(ev(1, 400), 2)),
        ];
        let plan = decide(&policy, NOW_US, &pieces, None).unwrap();
        assert_eq!(plan.actions.len(), 2, "{plan:#?}");
        for (action, (first, last, events)) in plan.actions.iter().zip([(1, 4, 4), (5, 6, 2)]) {
            assert_eq!(action.kind, RetentionActionKind::Delete);
            assert_eq!(
                (action.piece_first_seq, action.piece_last_seq),
                (first, last)
            );
            assert_eq!((action.events_dropped, action.events_kept), (events, 0));
            assert_eq!(action.stored_bytes_freed, events * 100);
        }
        assert_eq!(plan.stored_bytes_after_estimate, 0);
    }

    #[test]
    fn retention_held_events_are_kept() {
        let policy = standard_policy();
        let mut events = repeat(ev(1, 400), 7);
        events.extend(repeat(held(1, 400), 3));
        let pieces = [piece(&policy, 1, PieceKind::Archived, &events)];
        let plan = decide(&policy, NOW_US, &pieces, None).unwrap();
        let action = only_action(&plan);
        assert_eq!(action.kind, RetentionActionKind::Compact);
        assert_eq!((action.events_dropped, action.events_kept), (7, 3));
        assert_eq!(action.bytes_dropped, 700);

        // Everything held: nothing to do at all.
        let pieces = [piece(
            &policy,
            1,
            PieceKind::Archived,
            &repeat(held(1, 400), 3),
        )];
        let plan = decide(&policy, NOW_US, &pieces, None).unwrap();
        assert!(plan.actions.is_empty(), "{plan:#?}");
    }

    #[test]
    fn retention_keep_until_consumed_waits_then_proceeds() {
        let policy = standard_policy();
        let pieces = [piece(
            &policy,
            1,
            PieceKind::Archived,
            &repeat(ev(1, 400), 10),
        )];
        // The slowest consumer is at 5, inside the piece (1..=10): wait.
        let plan = decide(&policy, NOW_US, &pieces, Some(5)).unwrap();
        assert!(plan.actions.is_empty(), "{plan:#?}");
        assert_eq!(
            plan.waiting,
            vec![WaitingForConsumers {
                piece_first_seq: 1,
                piece_last_seq: 10,
                rule: "default".into(),
                wanted_by: "default".into(),
                events: 10,
                consumers_min_position: 5,
            }]
        );
        assert!(render_dry_run(&plan).contains("waiting for consumers"));
        // Once every consumer has read the piece, or there is none, go.
        for consumers in [Some(10), Some(99), None] {
            let plan = decide(&policy, NOW_US, &pieces, consumers).unwrap();
            assert_eq!(only_action(&plan).kind, RetentionActionKind::Delete);
            assert!(plan.waiting.is_empty());
        }
    }

    #[test]
    fn retention_size_cap_takes_the_oldest_pieces_first_never_the_active_one() {
        // No age rule is due; four pieces of 1000 bytes, cap 2500: the two
        // oldest sealed pieces go, the third and the active one stay.
        let policy = RetentionPolicy::builder()
            .rule(
                RetentionRule::new("p0")
                    .priority(Priority::P0)
                    .keep_forever(),
            )
            .rule(RetentionRule::new("rest").delete_after(365 * DAY))
            .size_cap_bytes(2500)
            .build()
            .unwrap();
        let ten = repeat(ev(1, 1), 10);
        // Given out of order: the decision sorts by seq.
        let pieces = [
            piece(&policy, 31, PieceKind::Active, &ten),
            piece(&policy, 11, PieceKind::Archived, &ten),
            piece(&policy, 1, PieceKind::Sealed, &ten),
            piece(&policy, 21, PieceKind::Sealed, &ten),
        ];
        let plan = decide(&policy, NOW_US, &pieces, None).unwrap();
        let seqs: Vec<_> = plan
            .actions
            .iter()
            .map(|a| (a.piece_first_seq, a.kind, a.rule.as_str()))
            .collect();
        assert_eq!(
            seqs,
            vec![
                (1, RetentionActionKind::Delete, SIZE_CAP_RULE),
                (11, RetentionActionKind::Delete, SIZE_CAP_RULE)
            ]
        );
        assert_eq!(plan.stored_bytes_before, 4000);
        assert_eq!(plan.stored_bytes_after_estimate, 2000);

        // With a cap the pieces cannot get under, everything deletable
        // goes, keep_forever events stay, and the active piece is left.
        let policy = RetentionPolicy::builder()
            .rule(
                RetentionRule::new("p0")
                    .priority(Priority::P0)
                    .keep_forever(),
            )
            .rule(RetentionRule::new("rest").delete_after(365 * DAY))
            .size_cap_bytes(10)
            .build()
            .unwrap();
        let mut mixed = repeat(ev(1, 1), 8);
        mixed.extend(repeat(ev(0, 1), 2));
        let pieces = [
            piece(&policy, 1, PieceKind::Sealed, &mixed),
            piece(&policy, 11, PieceKind::Active, &ten),
        ];
        let plan = decide(&policy, NOW_US, &pieces, None).unwrap();
        let action = only_action(&plan);
        assert_eq!(action.kind, RetentionActionKind::Compact);
        assert_eq!((action.events_dropped, action.events_kept), (8, 2));
        assert_eq!(action.drop_rules, vec![1]);
        assert_eq!(plan.stored_bytes_after_estimate, 1200);
    }

    #[test]
    fn retention_size_cap_respects_consumers_and_extends_age_compactions() {
        let policy = RetentionPolicy::builder()
            .rule(
                RetentionRule::new("audit")
                    .type_pattern("audit.*")
                    .delete_after(30 * DAY),
            )
            .rule(
                RetentionRule::new("pinned")
                    .priority(Priority::P1)
                    .keep_until_consumed(),
            )
            .size_cap_bytes(100)
            .build()
            .unwrap();
        // Slot 0 due by age; slot 1 pinned by a consumer at 2; slot 2 (no
        // rule) only the cap can take.
        let events = [ev(0, 40), ev(1, 1), ev(2, 1), ev(2, 1)];
        let pieces = [piece(&policy, 1, PieceKind::Archived, &events)];
        let plan = decide(&policy, NOW_US, &pieces, Some(2)).unwrap();
        let action = only_action(&plan);
        assert_eq!(action.kind, RetentionActionKind::Compact);
        assert_eq!(action.rule, "audit");
        assert_eq!(action.drop_rules, vec![0, 2]);
        assert_eq!((action.events_dropped, action.events_kept), (3, 1));
        assert!(action.reason.contains("size cap"), "{}", action.reason);
        assert_eq!(plan.waiting.len(), 1);
        assert_eq!(plan.waiting[0].rule, "pinned");
        assert_eq!(plan.waiting[0].wanted_by, SIZE_CAP_RULE);
    }

    #[test]
    fn retention_first_matching_rule_wins() {
        // "keep-p0" does nothing but claims P0 events, so the later
        // "short" rule never deletes them.
        let policy = RetentionPolicy::builder()
            .rule(RetentionRule::new("keep-p0").priority(Priority::P0))
            .rule(
                RetentionRule::new("short")
                    .type_pattern("task.*")
                    .type_pattern("order.created")
                    .delete_after(DAY),
            )
            .build()
            .unwrap();
        assert_eq!(policy.classify("task.created", Priority::P0), Some(0));
        assert_eq!(policy.classify("task.created", Priority::P1), Some(1));
        assert_eq!(policy.classify("task.a.b", Priority::P3), Some(1));
        assert_eq!(policy.classify("order.created", Priority::P2), Some(1));
        assert_eq!(policy.classify("order.paid", Priority::P2), None);
        assert_eq!(policy.class_slot(None), 2);

        let pieces = [piece(
            &policy,
            1,
            PieceKind::Archived,
            &[ev(0, 9), ev(1, 9), ev(1, 9)],
        )];
        let plan = decide(&policy, NOW_US, &pieces, None).unwrap();
        let action = only_action(&plan);
        assert_eq!(action.drop_rules, vec![1]);
        assert_eq!((action.events_dropped, action.events_kept), (2, 1));
    }

    #[test]
    fn retention_events_no_rule_matches_are_untouched() {
        let policy = RetentionPolicy::builder()
            .rule(
                RetentionRule::new("audit")
                    .type_pattern("audit.*")
                    .archive_after(DAY)
                    .delete_after(DAY),
            )
            .build()
            .unwrap();
        // Slot 1 is "no rule": years old, never archived nor deleted.
        let pieces = [
            piece(&policy, 1, PieceKind::Sealed, &repeat(ev(1, 3000), 5)),
            piece(&policy, 6, PieceKind::Archived, &repeat(ev(1, 3000), 5)),
        ];
        let plan = decide(&policy, NOW_US, &pieces, None).unwrap();
        assert!(plan.actions.is_empty(), "{plan:#?}");
        // Mixed with due audit events: only those go.
        let pieces = [piece(
            &policy,
            1,
            PieceKind::Sealed,
            &[ev(0, 5), ev(1, 3000)],
        )];
        let plan = decide(&policy, NOW_US, &pieces, None).unwrap();
        assert_eq!(only_action(&plan).drop_rules, vec![0]);
        assert_eq!(only_action(&plan).events_kept, 1);
    }

    /// Rule 0 compacts `task.state` events by entity; rule 1 keeps the
    /// rest; superseded events are counted as the archiver's scan would.
    fn keyed_policy(keep_until_consumed: bool) -> RetentionPolicy {
        let mut state = RetentionRule::new("state")
            .type_pattern("task.state")
            .keep_latest_per_entity()
            .archive_after(90 * DAY);
        state.keep_until_consumed = keep_until_consumed;
        RetentionPolicy::builder()
            .rule(state)
            .rule(RetentionRule::new("rest").archive_after(90 * DAY))
            .build()
            .unwrap()
    }

    /// A piece of `events` whose first `superseded` events of slot 0 have
    /// a later event of their entity.
    fn keyed_piece(
        policy: &RetentionPolicy,
        kind: PieceKind,
        events: &[TestEvent],
        superseded: usize,
    ) -> PieceSummary {
        let mut summary = piece(policy, 1, kind, events);
        for e in events
            .iter()
            .filter(|e| e.slot == 0 && !e.held)
            .take(superseded)
        {
            summary.count_superseded(e.slot, e.bytes);
        }
        summary
    }

    #[test]
    fn retention_key_compaction_rewrites_a_piece_once_half_is_superseded() {
        let policy = keyed_policy(false);
        let mut events = repeat(ev(0, 10), 8);
        events.extend(repeat(ev(1, 10), 2));
        // 4 of 10 superseded: not worth a rewrite on its own.
        let pieces = [keyed_piece(&policy, PieceKind::Archived, &events, 4)];
        assert!(decide(&policy, NOW_US, &pieces, None)
            .unwrap()
            .actions
            .is_empty());
        // 5 of 10: compacted, only the superseded events of rule 0 go.
        let pieces = [keyed_piece(&policy, PieceKind::Archived, &events, 5)];
        let plan = decide(&policy, NOW_US, &pieces, None).unwrap();
        let action = only_action(&plan);
        assert_eq!(action.kind, RetentionActionKind::Compact);
        assert_eq!(action.rule, "state");
        assert!(action.drop_rules.is_empty());
        assert_eq!(action.compact_rules, vec![0]);
        assert_eq!((action.events_dropped, action.events_kept), (5, 5));
        assert!(action.drops(0, false, true));
        assert!(!action.drops(0, false, false) && !action.drops(0, true, true));
        assert!(!action.drops(1, false, true));
    }

    #[test]
    fn retention_key_compaction_rides_along_an_archive_and_waits_for_consumers() {
        let policy = keyed_policy(false);
        let mut events = repeat(ev(0, 100), 8);
        events.extend(repeat(held(0, 100), 2));
        // 2 superseded of 10 (the held ones are never counted): the
        // sealed segment is due for archiving, so it is rewritten into
        // the archive without them.
        let pieces = [keyed_piece(&policy, PieceKind::Sealed, &events, 2)];
        let plan = decide(&policy, NOW_US, &pieces, None).unwrap();
        let action = only_action(&plan);
        assert_eq!(action.kind, RetentionActionKind::Compact);
        assert_eq!(action.rule, "state");
        assert!(action.reason.contains("archive_after") && action.reason.contains("superseded"));
        assert_eq!((action.events_dropped, action.events_kept), (2, 8));
        // Pinned by a consumer: the plain archive goes ahead, the
        // superseded events wait.
        let policy = keyed_policy(true);
        let pieces = [keyed_piece(&policy, PieceKind::Sealed, &events, 2)];
        let plan = decide(&policy, NOW_US, &pieces, Some(3)).unwrap();
        assert_eq!(only_action(&plan).kind, RetentionActionKind::Archive);
        assert_eq!(plan.waiting.len(), 1);
        assert_eq!(
            (plan.waiting[0].rule.as_str(), plan.waiting[0].events),
            ("state", 2)
        );
    }

    #[test]
    fn retention_rejects_a_summary_of_another_policy() {
        let policy = standard_policy();
        let other = RetentionPolicy::builder().build().unwrap();
        let pieces = [piece(&other, 1, PieceKind::Sealed, &[ev(0, 1)])];
        assert!(matches!(
            decide(&policy, NOW_US, &pieces, None),
            Err(Error::Internal(_))
        ));
    }

    #[test]
    fn retention_policy_validation_names_the_rule() {
        let refused =
            |builder: RetentionPolicyBuilder, rule: &str, words: &str| match builder.build() {
                Err(Error::InvalidRetention {
                    rule: found,
                    reason,
                }) => {
                    assert_eq!(found, rule);
                    assert!(reason.contains(words), "{reason}");
                }
                other => panic!("expected InvalidRetention, got {other:?}"),
            };
        let b = RetentionPolicy::builder;
        refused(
            b().rule(RetentionRule::new("p0").keep_forever().delete_after(DAY)),
            "p0",
            "keep_forever and delete_after",
        );
        refused(
            b().rule(RetentionRule::new("a"))
                .rule(RetentionRule::new("a")),
            "a",
            "two rules",
        );
        refused(
            b().rule(RetentionRule::new("x").type_pattern("task..x")),
            "x",
            "type pattern",
        );
        refused(
            b().rule(
                RetentionRule::new("k")
                    .keep_forever()
                    .keep_latest_per_entity(),
            ),
            "k",
            "keep_forever and keep_latest_per_entity",
        );
        refused(b().rule(RetentionRule::new("")), "", "rule name");
        refused(
            b().rule(RetentionRule::new("has space")),
            "has space",
            "rule name",
        );
        refused(
            b().rule(RetentionRule::new(SIZE_CAP_RULE)),
            SIZE_CAP_RULE,
            "reserved",
        );
        let mut empty = RetentionRule::new("e");
        empty.priorities = Some(Vec::new());
        refused(b().rule(empty), "e", "priority list is empty");
        refused(
            b().check_interval(Duration::from_millis(10)),
            "",
            "check_interval",
        );
        let mut many = b();
        for i in 0..=RETENTION_RULES_MAX {
            many = many.rule(RetentionRule::new(format!("r{i}")));
        }
        assert!(many.build().is_err());
        assert_eq!(
            b().build().unwrap().check_interval(),
            CHECK_INTERVAL_DEFAULT
        );
    }

    #[test]
    fn retention_dry_run_lists_every_action_as_text_and_json() {
        let policy = standard_policy();
        let pieces = [
            piece(&policy, 1, PieceKind::Archived, &[ev(1, 400), ev(0, 400)]),
            piece(&policy, 3, PieceKind::Sealed, &[ev(1, 100)]),
        ];
        let plan = decide(&policy, NOW_US, &pieces, None).unwrap();
        let text = render_dry_run(&plan);
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].starts_with("action"), "{text}");
        assert!(lines[1].starts_with("compact  1..=2 "), "{text}");
        assert!(lines[1].contains("default") && lines[1].contains("delete_after 365d"));
        assert!(lines[2].starts_with("archive  3..=3 "), "{text}");
        let json: serde_json::Value = serde_json::from_str(&render_dry_run_json(&plan)).unwrap();
        assert_eq!(json["actions"][0]["kind"], "compact");
        assert_eq!(json["actions"][0]["events_dropped"], 1);
        assert_eq!(json["actions"][0]["drop_rules"], serde_json::json!([1]));
        assert_eq!(
            json["actions"][0]["dropped_from"],
            serde_json::json!(["default"])
        );
        assert_eq!(json["actions"][1]["kind"], "archive");
        assert_eq!(json["actions"][1]["rule"], "default");
        assert_eq!(json["now_us"], NOW_US);
        let empty = decide(&policy, NOW_US, &[], None).unwrap();
        assert!(render_dry_run(&empty).starts_with("nothing to archive"));
    }

    #[test]
    fn retention_real_events_classified_and_held_are_dropped_exactly_as_decided() {
        // The mixed-priority case on a real log: P0 events and the events
        // of a held entity survive the deletion of their piece; the scan
        // (summary) and the executor (drop check) share `class_of`.
        use crate::holds::{Hold, HoldSet, HoldTarget};
        use crate::{Event, Log, Options};
        let dir = tempfile::tempdir().unwrap();
        let log = Log::open(dir.path(), Options::default().secondary_indexes(false)).unwrap();
        for i in 0..40u64 {
            let priority = if i % 5 == 0 {
                Priority::P0
            } else {
                Priority::P2
            };
            let event = Event::new(if i % 2 == 0 {
                "task.created"
            } else {
                "task.done"
            })
            .entity("task", format!("T-{}", i % 4))
            .priority(priority)
            .timestamp_us(NOW_US - 400 * DAY_US + i as i64);
            log.append(event).unwrap();
        }
        let holds = HoldSet::new(&[Hold {
            target: HoldTarget::Entity {
                entity_type: "task".into(),
                entity_id: "T-1".into(),
            },
            reason: "case".into(),
            placed_at_us: 0,
        }]);
        let policy = standard_policy();
        let events: Vec<_> = log.iter(1..).unwrap().map(|e| e.unwrap()).collect();
        let mut summary = PieceSummary::new(1, 40, PieceKind::Archived, 4000, &policy);
        for event in &events {
            let (slot, held) = class_of(&policy, &holds, event);
            summary.count_event(slot, held, 100, event.timestamp_us);
        }
        let plan = decide(&policy, NOW_US, &[summary], None).unwrap();
        let action = only_action(&plan);
        assert_eq!(action.kind, RetentionActionKind::Compact);
        let kept: Vec<u64> = events
            .iter()
            .filter(|event| {
                let (slot, held) = class_of(&policy, &holds, event);
                !action.drops(slot, held, false)
            })
            .map(|event| event.seq)
            .collect();
        let expected: Vec<u64> = events
            .iter()
            .filter(|e| {
                e.priority == Priority::P0
                    || e.entity.as_ref().is_some_and(|x| x.entity_id == "T-1")
            })
            .map(|e| e.seq)
            .collect();
        assert_eq!(kept, expected);
        assert_eq!(action.events_kept, expected.len() as u64);
        assert_eq!(action.events_dropped, 40 - expected.len() as u64);
        log.close().unwrap();
    }

    mod model {
        use super::*;
        use proptest::prelude::*;

        const TYPES: [&str; 3] = ["task.created", "task.done", "audit.login"];
        const PATTERNS: [&str; 3] = ["task.*", "audit.*", "task.done"];
        const PRIORITIES: [Priority; 4] = [Priority::P0, Priority::P1, Priority::P2, Priority::P3];

        #[derive(Debug, Clone)]
        struct Spec {
            priority_mask: u8,
            pattern: Option<usize>,
            archive_days: Option<u64>,
            delete_days: Option<u64>,
            keep_forever: bool,
            keep_until_consumed: bool,
            keep_latest_per_entity: bool,
        }

        fn spec() -> impl Strategy<Value = Spec> {
            (
                0u8..16,
                proptest::option::of(0usize..3),
                proptest::option::of(0u64..600),
                proptest::option::of(0u64..600),
                any::<bool>(),
                any::<bool>(),
                any::<bool>(),
            )
                .prop_map(
                    |(
                        priority_mask,
                        pattern,
                        archive_days,
                        delete_days,
                        keep_forever,
                        keep_until_consumed,
                        keep_latest,
                    )| Spec {
                        priority_mask,
                        pattern,
                        archive_days,
                        // keep_forever with delete_after or with key
                        // compaction is refused.
                        delete_days: if keep_forever { None } else { delete_days },
                        keep_forever,
                        keep_until_consumed,
                        keep_latest_per_entity: keep_latest && !keep_forever,
                    },
                )
        }

        /// (type, priority, age in days, held, encoded bytes, whether a
        /// later event of its entity exists)
        type Ev = (usize, usize, i64, bool, u64, bool);

        fn events() -> impl Strategy<Value = Vec<Ev>> {
            proptest::collection::vec(
                (
                    0usize..3,
                    0usize..4,
                    0i64..800,
                    any::<bool>(),
                    30u64..300,
                    any::<bool>(),
                ),
                1..20,
            )
        }

        /// Whether the event counts as superseded: a later event of its
        /// entity exists, it is not held, and its rule compacts by key.
        fn superseded(policy: &RetentionPolicy, slot: usize, held: bool, later: bool) -> bool {
            later
                && !held
                && policy
                    .rules()
                    .get(slot)
                    .is_some_and(|r| r.keep_latest_per_entity)
        }

        fn build(specs: &[Spec], cap: Option<u64>) -> RetentionPolicy {
            let mut builder = RetentionPolicy::builder();
            for (i, s) in specs.iter().enumerate() {
                let mut rule = RetentionRule::new(format!("r{i}"));
                for (bit, p) in PRIORITIES.iter().enumerate() {
                    if s.priority_mask & (1 << bit) != 0 {
                        rule = rule.priority(*p);
                    }
                }
                if let Some(p) = s.pattern {
                    rule = rule.type_pattern(PATTERNS[p]);
                }
                rule.archive_after = s.archive_days.map(|d| DAY * d as u32);
                rule.delete_after = s.delete_days.map(|d| DAY * d as u32);
                rule.keep_forever = s.keep_forever;
                rule.keep_until_consumed = s.keep_until_consumed;
                rule.keep_latest_per_entity = s.keep_latest_per_entity;
                builder = builder.rule(rule);
            }
            if let Some(cap) = cap {
                builder = builder.size_cap_bytes(cap);
            }
            builder.build().unwrap()
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(500))]

            /// Executing the plan event by event (classify, holds, drop
            /// list) drops exactly what the plan counts, never a
            /// keep_forever or held event, never one a consumer pins, and
            /// never touches the active piece.
            #[test]
            fn retention_plan_never_drops_protected_events(
                specs in proptest::collection::vec(spec(), 0..5),
                pieces in proptest::collection::vec((events(), 0u8..2), 1..6),
                active_last in any::<bool>(),
                cap in proptest::option::of(0u64..20_000),
                consumers in proptest::option::of(0u64..120),
            ) {
                let policy = build(&specs, cap);
                let mut summaries = Vec::new();
                let mut all_events = Vec::new();
                let mut next_seq = 1u64;
                let piece_count = pieces.len();
                for (index, (events, kind)) in pieces.into_iter().enumerate() {
                    let kind = if active_last && index + 1 == piece_count {
                        PieceKind::Active
                    } else if kind == 0 {
                        PieceKind::Sealed
                    } else {
                        PieceKind::Archived
                    };
                    let first = next_seq;
                    let last = first + events.len() as u64 - 1;
                    next_seq = last + 1;
                    let stored = events.iter().map(|e| e.4).sum();
                    let mut summary = PieceSummary::new(first, last, kind, stored, &policy);
                    for &(t, p, age, is_held, bytes, later) in &events {
                        let slot = policy.class_slot(policy.classify(TYPES[t], PRIORITIES[p]));
                        summary.count_event(slot, is_held, bytes, NOW_US - age * DAY_US);
                        if superseded(&policy, slot, is_held, later) {
                            summary.count_superseded(slot, bytes);
                        }
                    }
                    summaries.push(summary);
                    all_events.push(events);
                }
                let plan = decide(&policy, NOW_US, &summaries, consumers).unwrap();
                let mut seen = std::collections::BTreeSet::new();
                for action in &plan.actions {
                    prop_assert!(seen.insert(action.piece_first_seq), "two actions on one piece");
                    let index = summaries.iter().position(|s| s.first_seq == action.piece_first_seq).unwrap();
                    let summary = &summaries[index];
                    prop_assert_ne!(summary.kind, PieceKind::Active);
                    prop_assert!(action.drop_rules.windows(2).all(|w| w[0] < w[1]));
                    prop_assert!(action.compact_rules.windows(2).all(|w| w[0] < w[1]));
                    prop_assert!(action.compact_rules.iter().all(|s| !action.drop_rules.contains(s)));
                    let (mut dropped, mut kept) = (0u64, 0u64);
                    for &(t, p, _, is_held, _, later) in &all_events[index] {
                        let slot = policy.class_slot(policy.classify(TYPES[t], PRIORITIES[p]));
                        let is_superseded = superseded(&policy, slot, is_held, later);
                        if action.drops(slot, is_held, is_superseded) {
                            dropped += 1;
                            prop_assert!(!is_held);
                            // Dropped whole, or superseded by key compaction.
                            prop_assert!(action.drop_rules.contains(&slot) || is_superseded);
                            let rule = policy.rules().get(slot);
                            prop_assert!(!rule.is_some_and(|r| r.keep_forever));
                            if rule.is_some_and(|r| r.keep_until_consumed) {
                                prop_assert!(consumers.is_none_or(|c| c >= summary.last_seq));
                            }
                        } else {
                            kept += 1;
                        }
                    }
                    prop_assert_eq!(dropped, action.events_dropped);
                    prop_assert_eq!(kept, action.events_kept);
                    match action.kind {
                        RetentionActionKind::Archive => {
                            prop_assert_eq!(summary.kind, PieceKind::Sealed);
                            prop_assert_eq!(dropped, 0);
                            prop_assert!(action.compact_rules.is_empty() && action.drop_rules.is_empty());
                        }
                        RetentionActionKind::Compact => prop_assert!(dropped > 0 && kept > 0),
                        RetentionActionKind::Delete => prop_assert!(dropped > 0 && kept == 0),
                    }
                }
                prop_assert!(plan.actions.windows(2).all(|w| w[0].piece_first_seq < w[1].piece_first_seq));
                // Without a cap, an archive-only or untouched piece frees
                // nothing, so the estimate only moves by the drops.
                let freed: u64 = plan.actions.iter().map(|a| a.stored_bytes_freed).sum();
                prop_assert_eq!(plan.stored_bytes_after_estimate, plan.stored_bytes_before - freed);
            }
        }
    }
}
