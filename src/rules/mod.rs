//! Automation rules: the log reacting to its own events.
//!
//! A [`Rule`] has a name, a [`Trigger`] (type patterns plus predicates on
//! the event) and an action that returns the events to append. Rules run
//! on the engine thread `evlog:rules`, one per log, started by the first
//! [`Rules::register`]. Each rule is a durable consumer named
//! `rule.<name>` (its position in `DIR/consumers/rule.<name>.pos`), so
//! every triggering event is evaluated once, in order, across restarts and
//! crashes:
//!
//! - When an action returns events, they are appended in one atomic batch
//!   together with the rule's new position (the same-batch commit of
//!   durable consumers): after any crash either both are in the log or
//!   neither is, and the trigger is evaluated again.
//! - Events produced by a rule carry the trigger's correlation id, have the
//!   trigger as their causation, name the rule in their metadata
//!   ([`RULE_KEY`], [`DEPTH_KEY`], [`TRIGGER_SEQ_KEY`]) and get
//!   deterministic ids (a UUID v5 of [`RULE_ID_NAMESPACE`] and
//!   `<rule>/<trigger id>/<index>`), so a re-run or a replay never appends
//!   them twice.
//! - Positions that move without output (the trigger did not match, or the
//!   action returned nothing) are stored at most once a second and at
//!   close; after a crash such events are evaluated again, which appends
//!   nothing new.
//!
//! **What an action sees.** Through [`RuleContext`] an action queries the
//! log *as if every rule had fired the moment its trigger was appended*:
//! the events up to its trigger, plus the output of every rule whose
//! trigger came before. So the answer does not depend on how far the
//! engine lags behind the appenders, and a dry-run replay sees what the
//! live evaluation saw.
//!
//! **Safety.** Chains of rule-produced events stop at a depth limit
//! ([`Rules::set_depth_limit`], default [`DEPTH_LIMIT_DEFAULT`]) with an
//! `evlog.rule.depth_exceeded` event instead of the output. A rule whose
//! action fails (an error or a panic) has the trigger parked in its
//! consumer's parked list and moves on; a per-rule circuit breaker
//! ([`BreakerPolicy`]) opens after too many failures (an
//! `evlog.rule.breaker_opened` event says so), skips the rule's triggers
//! while open, and lets one trigger through after the cool-down: success
//! closes it (`evlog.rule.breaker_closed`), failure opens it again.
//! [`Rules::close_breaker`] closes it by command. Events of types under
//! `evlog.` never trigger rules.
//!
//! **Dry run.** A rule registered with [`Rule::dry_run`], or every rule
//! after [`Rules::set_dry_run_all`], is evaluated but writes nothing: no
//! event, no position, no statistics file. What it would have appended is
//! kept in memory ([`Rules::take_dry_run_reports`]). A dry-run rule's
//! position lives in memory only: it starts from its stored position (or
//! the end) at every open.
//!
//! **Statistics.** Each rule that is not in dry run keeps counts of
//! evaluations, firings, failures and its breaker state in
//! `DIR/rules/<name>.json` (FORMAT.md), written with the position, so that
//! `evlog --dir DIR rules` can list them from another process.

pub mod orchestration;

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::consumer::{self, ParkedEvent};
use crate::error::{Error, IoContext, Result};
use crate::event::{Entity, Event, LoggedEvent};
use crate::log::{Appender, Shared};
use crate::query::{apply_changes, validate_pattern, Query};
use crate::storage::OpenMode;
use crate::subscribe::{Filter, Start, Subscription, BOOKKEEPING_TYPE_PREFIX};
use crate::sync::lock;

/// Metadata key naming the rule that produced an event.
pub const RULE_KEY: &str = "evlog.rule";
/// Metadata key with the length of the chain of rules that produced an
/// event (1 for an event produced from an application's event).
pub const DEPTH_KEY: &str = "evlog.rule.depth";
/// Metadata key with the sequence number of the event that triggered the
/// rule that produced an event.
pub const TRIGGER_SEQ_KEY: &str = "evlog.rule.trigger_seq";
/// Longest chain of rule-produced events, by default.
pub const DEPTH_LIMIT_DEFAULT: u32 = 8;
/// The namespace of the UUID v5 ids of rule-produced events.
pub const RULE_ID_NAMESPACE: Uuid = Uuid::from_u128(0x6a1c_52e4_8d0b_4f6b_9c1e_2f7a_e1d4_b3c5);
/// Prefix of the durable consumer that holds a rule's position.
pub const RULE_CONSUMER_PREFIX: &str = "rule.";
/// Directory of the rules' statistics files.
pub const RULES_DIR: &str = "rules";
/// Longest rule name, in bytes (the consumer name adds the prefix).
pub const RULE_NAME_BYTES_MAX: usize =
    consumer::CONSUMER_NAME_BYTES_MAX - RULE_CONSUMER_PREFIX.len();
/// Type of the event appended instead of the output of a rule whose
/// output would be deeper than the depth limit.
pub const DEPTH_EXCEEDED_TYPE: &str = "evlog.rule.depth_exceeded";
/// Type of the event appended when a rule's breaker opens.
pub const BREAKER_OPENED_TYPE: &str = "evlog.rule.breaker_opened";
/// Type of the event appended when a rule's breaker closes.
pub const BREAKER_CLOSED_TYPE: &str = "evlog.rule.breaker_closed";
/// Dry-run reports kept in memory for [`Rules::take_dry_run_reports`];
/// older ones are dropped first.
pub const DRY_RUN_REPORTS_MAX: usize = 10_000;
/// How often positions and statistics that changed are stored.
const PERSIST_INTERVAL: Duration = Duration::from_secs(1);
/// How often, at most, the engine shows its progress to `Rules::list` and
/// `Rules::wait_for` while busy (at once when it is idle).
const PUBLISH_INTERVAL: Duration = Duration::from_millis(5);
/// How long the engine waits for an event before looking at commands.
const POLL_INTERVAL: Duration = Duration::from_millis(50);
/// Version of the statistics file.
const STATS_FORMAT_VERSION: u32 = 1;

/// What an action may fail with: any error.
pub type RuleError = Box<dyn std::error::Error + Send + Sync>;
type Action = dyn Fn(&RuleContext<'_>) -> std::result::Result<Vec<Event>, RuleError> + Send + Sync;
type Predicate = dyn Fn(&LoggedEvent) -> bool + Send + Sync;

/// Which events a rule is evaluated on: any of its type patterns, and
/// every predicate.
#[derive(Clone)]
pub struct Trigger {
    patterns: Vec<String>,
    predicates: Vec<Arc<Predicate>>,
}

impl std::fmt::Debug for Trigger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Trigger")
            .field("patterns", &self.patterns)
            .field("predicates", &self.predicates.len())
            .finish()
    }
}

impl Trigger {
    /// Events whose type matches a dotted pattern (`orchestration.task.*`).
    pub fn on(pattern: impl Into<String>) -> Trigger {
        Trigger {
            patterns: vec![pattern.into()],
            predicates: Vec::new(),
        }
    }

    /// Also events of this pattern.
    pub fn or_on(mut self, pattern: impl Into<String>) -> Trigger {
        self.patterns.push(pattern.into());
        self
    }

    /// Only events for which `predicate` holds.
    pub fn when(
        mut self,
        predicate: impl Fn(&LoggedEvent) -> bool + Send + Sync + 'static,
    ) -> Trigger {
        self.predicates.push(Arc::new(predicate));
        self
    }

    /// Only events whose payload says that `field` changed to `value`, in
    /// the shape `{"changes": {field: {"before": x, "after": value}}}`.
    pub fn when_changed_to(
        self,
        field: impl Into<String>,
        value: impl Into<serde_json::Value>,
    ) -> Trigger {
        let field = field.into();
        let value = value.into();
        self.when(move |event| changed_to(event, &field, &value))
    }

    /// Whether `event` triggers the rule. Types under `evlog.` never do.
    pub fn matches(&self, event: &LoggedEvent) -> bool {
        !event.event_type.starts_with(BOOKKEEPING_TYPE_PREFIX)
            && self.patterns.iter().any(|p| event.matches(p))
            && self.predicates.iter().all(|p| p(event))
    }
}

/// The `(before, after)` of `field` in a payload of the shape
/// `{"changes": {field: {"before": x, "after": y}}}` (`Null` for a side
/// that is absent), or `None` when the payload does not change `field`.
pub fn change(event: &LoggedEvent, field: &str) -> Option<(serde_json::Value, serde_json::Value)> {
    let payload: serde_json::Value = event.payload_as().ok()?;
    let change = payload.get("changes")?.get(field)?;
    let side = |name| change.get(name).cloned().unwrap_or(serde_json::Value::Null);
    Some((side("before"), side("after")))
}

/// Whether `event`'s payload says that `field` changed to `value` (and was
/// not that already).
pub fn changed_to(event: &LoggedEvent, field: &str, value: &serde_json::Value) -> bool {
    change(event, field).is_some_and(|(before, after)| &after == value && &before != value)
}

/// Where a rule registered for the first time starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RuleStart {
    /// With the events appended after its registration (the default: a
    /// new rule does not fire on old history).
    #[default]
    End,
    /// With the first event of the log.
    Beginning,
}

/// When a rule's circuit breaker opens, and for how long.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BreakerPolicy {
    /// Opens after this many failures in a row (0: never for this reason).
    pub consecutive_failures: u32,
    /// Opens when, over the last `window_evaluations` evaluations, the
    /// share that failed reaches `ratio` (0.0 to 1.0).
    pub failure_rate: Option<FailureRate>,
    /// After this long open, one trigger is let through: success closes
    /// the breaker, failure opens it again.
    pub cool_down: Duration,
}

/// A failure ratio over a window of evaluations.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FailureRate {
    /// The share of failed evaluations (0 to 1) that opens the breaker.
    pub ratio: f64,
    /// How many of the last evaluations the ratio is taken over.
    pub window_evaluations: u32,
}

impl Default for BreakerPolicy {
    fn default() -> BreakerPolicy {
        BreakerPolicy {
            consecutive_failures: 5,
            failure_rate: None,
            cool_down: Duration::from_secs(60),
        }
    }
}

/// An automation rule; see the module docs.
#[derive(Clone)]
pub struct Rule {
    name: String,
    trigger: Trigger,
    action: Arc<Action>,
    dry_run: bool,
    start: RuleStart,
    breaker: BreakerPolicy,
}

impl std::fmt::Debug for Rule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rule")
            .field("name", &self.name)
            .field("trigger", &self.trigger)
            .field("dry_run", &self.dry_run)
            .field("start", &self.start)
            .field("breaker", &self.breaker)
            .finish()
    }
}

impl Rule {
    /// A rule named `name` (1 to 59 bytes of `[A-Za-z0-9_.-]`), evaluated
    /// on the events that pass `trigger`: `action` returns the events to
    /// append (none to do nothing).
    pub fn new(
        name: impl Into<String>,
        trigger: Trigger,
        action: impl Fn(&RuleContext<'_>) -> std::result::Result<Vec<Event>, RuleError>
            + Send
            + Sync
            + 'static,
    ) -> Rule {
        Rule {
            name: name.into(),
            trigger,
            action: Arc::new(action),
            dry_run: false,
            start: RuleStart::default(),
            breaker: BreakerPolicy::default(),
        }
    }

    /// Evaluates the rule without writing anything (see the module docs).
    pub fn dry_run(mut self, dry_run: bool) -> Rule {
        self.dry_run = dry_run;
        self
    }

    /// Where the rule starts the first time it is registered.
    pub fn start(mut self, start: RuleStart) -> Rule {
        self.start = start;
        self
    }

    /// The rule's circuit breaker.
    pub fn breaker(mut self, policy: BreakerPolicy) -> Rule {
        self.breaker = policy;
        self
    }

    /// The rule's name (its consumer is `rule.<name>`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// What the rule reacts to.
    pub fn trigger(&self) -> &Trigger {
        &self.trigger
    }

    fn validate(&self) -> Result<()> {
        let valid = !self.name.is_empty()
            && self.name.len() <= RULE_NAME_BYTES_MAX
            && self
                .name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.');
        if !valid {
            return Err(Error::InvalidEvent(format!(
                "rule name {:?}: 1 to {RULE_NAME_BYTES_MAX} bytes of A-Z, a-z, 0-9, '_', '-', '.'",
                crate::event::shorten_for_message(&self.name)
            )));
        }
        if self.trigger.patterns.is_empty() {
            return Err(Error::InvalidEvent(format!(
                "rule {}: the trigger has no type pattern",
                self.name
            )));
        }
        for pattern in &self.trigger.patterns {
            validate_pattern(pattern)?;
        }
        if let Some(rate) = self.breaker.failure_rate {
            if !(rate.ratio > 0.0 && rate.ratio <= 1.0) || rate.window_evaluations == 0 {
                return Err(Error::InvalidEvent(format!(
                    "rule {}: a failure rate is a ratio in (0, 1] over at least one evaluation",
                    self.name
                )));
            }
        }
        Ok(())
    }

    fn consumer_name(&self) -> String {
        format!("{RULE_CONSUMER_PREFIX}{}", self.name)
    }
}

/// What an action gets: its trigger, and the log as it was right after the
/// trigger (see the module docs).
pub struct RuleContext<'a> {
    shared: &'a Arc<Shared>,
    trigger: &'a LoggedEvent,
    rule: &'a str,
}

impl RuleContext<'_> {
    /// The event that triggered the rule.
    pub fn trigger(&self) -> &LoggedEvent {
        self.trigger
    }

    /// The rule being evaluated.
    pub fn rule_name(&self) -> &str {
        self.rule
    }

    /// A new event caused by the trigger: its correlation id and causation
    /// are filled in (the engine sets them again on every output anyway).
    pub fn event(&self, event_type: impl Into<String>) -> Event {
        let mut event = Event::new(event_type).causation_id(self.trigger.id);
        if let Some(correlation) = self.trigger.correlation_id {
            event = event.correlation_id(correlation);
        }
        event
    }

    /// Whether the action sees `event`: it was appended up to the trigger,
    /// or a rule produced it from an earlier trigger.
    fn sees(&self, event: &LoggedEvent) -> bool {
        event.seq <= self.trigger.seq
            || event
                .metadata
                .get(TRIGGER_SEQ_KEY)
                .and_then(|s| s.parse::<u64>().ok())
                .is_some_and(|trigger_seq| trigger_seq < self.trigger.seq)
    }

    /// The events that answer `query`, as the log was after the trigger.
    pub fn query(&self, query: &Query) -> Result<Vec<LoggedEvent>> {
        let mut seen = Vec::new();
        for event in self.shared.query(query)? {
            let event = event?;
            if self.sees(&event) {
                seen.push(event);
            }
        }
        Ok(seen)
    }

    /// The last event of an entity, as the log was after the trigger.
    pub fn latest(&self, entity_type: &str, entity_id: &str) -> Result<Option<LoggedEvent>> {
        let entity = Entity {
            entity_type: entity_type.to_string(),
            entity_id: entity_id.to_string(),
        };
        // The common case: the latest event is visible, one index lookup.
        if let Some(latest) = self.shared.latest(&entity)? {
            if self.sees(&latest) {
                return Ok(Some(latest));
            }
        } else {
            return Ok(None);
        }
        Ok(self
            .query(&Query::entity(entity_type, entity_id))?
            .into_iter()
            .last())
    }

    /// An entity's state: its events' `changes` applied in order
    /// ([`crate::apply_changes`]), as the log was after the trigger.
    pub fn state(&self, entity_type: &str, entity_id: &str) -> Result<serde_json::Value> {
        Ok(self
            .query(&Query::entity(entity_type, entity_id))?
            .iter()
            .fold(serde_json::Value::Null, apply_changes))
    }

    /// The state of every entity of type `linked_type` linked to the given
    /// entity (by `link.<type>` metadata, see
    /// [`crate::Log::entity_chain`]), by entity id, as the log was after
    /// the trigger. For example every task of a sprint.
    pub fn linked_states(
        &self,
        entity_type: &str,
        entity_id: &str,
        linked_type: &str,
    ) -> Result<BTreeMap<String, serde_json::Value>> {
        let mut states = BTreeMap::new();
        let chain = self.query(&Query::entity(entity_type, entity_id).with_linked_entities())?;
        for event in &chain {
            let Some(entity) = &event.entity else {
                continue;
            };
            if entity.entity_type != linked_type {
                continue;
            }
            let state = states
                .remove(&entity.entity_id)
                .unwrap_or(serde_json::Value::Null);
            states.insert(entity.entity_id.clone(), apply_changes(state, event));
        }
        Ok(states)
    }
}

/// A circuit breaker's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum BreakerState {
    /// Triggers are evaluated (the normal state).
    #[default]
    Closed,
    /// Triggers are skipped until the cool-down ends.
    Open,
    /// The cool-down ended: the next trigger decides.
    HalfOpen,
}

/// A rule's counts, as [`Rules::list`] and `evlog rules` show them, and
/// as `DIR/rules/<name>.json` stores them (FORMAT.md).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RuleStats {
    /// The file's format version (1).
    pub format: u32,
    /// The rule's name.
    pub rule: String,
    /// Every trigger up to this seq was handled.
    pub position: u64,
    /// Triggers the action was run on.
    pub evaluations: u64,
    /// Evaluations that produced events.
    pub firings: u64,
    /// Evaluations that failed (an error, a panic, or an output the log
    /// refused).
    pub failures: u64,
    /// Triggers skipped while the breaker was open.
    pub skipped: u64,
    /// Outputs replaced by a depth-exceeded event.
    pub depth_stops: u64,
    /// The circuit breaker's state.
    pub breaker: BreakerState,
    /// Times the breaker opened.
    pub breaker_opens: u64,
    /// When it last opened, microseconds since the Unix epoch.
    pub breaker_opened_at_us: Option<i64>,
    /// Whether the rule runs in dry run (evaluates, appends nothing).
    pub dry_run: bool,
    /// The last failure's message (at most 1 KiB).
    pub last_error: Option<String>,
    /// When these counts were taken, microseconds since the Unix epoch.
    pub updated_at_us: i64,
}

/// An event a dry-run evaluation would have appended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WouldAppend {
    /// The id the event would get (UUID v5 of rule and trigger).
    pub id: Uuid,
    /// Its type.
    pub event_type: String,
    /// Its entity.
    pub entity: Option<Entity>,
    /// The payload as JSON text (`null` when it has none, a string of
    /// hex digits for bytes).
    pub payload: String,
    /// The seq of the event with the same id, when the log already holds
    /// it (the rule fired on this trigger before).
    pub already_in_log: Option<u64>,
}

/// What a dry-run evaluation of one rule on one trigger found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DryRunOutcome {
    /// The action returned no event.
    Nothing,
    /// The action returned these events.
    WouldAppend(Vec<WouldAppend>),
    /// The output would be deeper than the depth limit.
    DepthExceeded {
        /// How deep the output would be.
        depth: u32,
        /// The limit it passes.
        limit: u32,
    },
    /// The action failed.
    Failed(String),
    /// The rule's breaker is open: it would not be evaluated.
    BreakerOpen,
}

/// One rule evaluated on one trigger in dry run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DryRunReport {
    /// The rule evaluated.
    pub rule: String,
    /// The trigger's sequence number.
    pub trigger_seq: u64,
    /// The trigger's id.
    pub trigger_id: Uuid,
    /// The trigger's type.
    pub trigger_type: String,
    /// What the evaluation found.
    pub outcome: DryRunOutcome,
}

impl DryRunReport {
    /// The report as one JSON object, as `evlog replay --dry-run-rules`
    /// prints it and `POST /api/replay` returns it: `rule`, `trigger_seq`,
    /// `trigger_id`, `trigger_type`, `outcome` (`nothing`,
    /// `would_append`, `depth_exceeded`, `failed` or `breaker_open`), and
    /// with `would_append` the `events` (`id`, `type`, `entity` as
    /// `TYPE/ID`, `payload`, `already_in_log`), with `depth_exceeded`
    /// `depth` and `limit`, with `failed` the `error`.
    pub fn to_json(&self) -> serde_json::Value {
        let mut line = serde_json::json!({
            "rule": self.rule,
            "trigger_seq": self.trigger_seq,
            "trigger_id": self.trigger_id.to_string(),
            "trigger_type": self.trigger_type,
        });
        let outcome = match &self.outcome {
            DryRunOutcome::Nothing => "nothing",
            DryRunOutcome::WouldAppend(events) => {
                let events: Vec<_> = events
                    .iter()
                    .map(|event| {
                        serde_json::json!({
                            "id": event.id.to_string(),
                            "type": event.event_type,
                            "entity": event
                                .entity
                                .as_ref()
                                .map(|e| format!("{}/{}", e.entity_type, e.entity_id)),
                            "payload": serde_json::from_str::<serde_json::Value>(&event.payload)
                                .unwrap_or_else(|_| serde_json::Value::String(event.payload.clone())),
                            "already_in_log": event.already_in_log,
                        })
                    })
                    .collect();
                line["events"] = serde_json::Value::Array(events);
                "would_append"
            }
            DryRunOutcome::DepthExceeded { depth, limit } => {
                line["depth"] = (*depth).into();
                line["limit"] = (*limit).into();
                "depth_exceeded"
            }
            DryRunOutcome::Failed(message) => {
                line["error"] = message.clone().into();
                "failed"
            }
            DryRunOutcome::BreakerOpen => "breaker_open",
        };
        line["outcome"] = outcome.into();
        line
    }
}

/// What one evaluation produced, before anything is written.
enum Evaluation {
    Nothing,
    Output(Vec<Event>),
    DepthExceeded { depth: u32, output: Box<Event> },
    Failed(String),
}

fn trigger_depth(trigger: &LoggedEvent) -> u32 {
    trigger
        .metadata
        .get(DEPTH_KEY)
        .and_then(|d| d.parse().ok())
        .unwrap_or(0)
}

fn output_id(rule: &str, trigger: &LoggedEvent, what: &str) -> Uuid {
    Uuid::new_v5(
        &RULE_ID_NAMESPACE,
        format!("{rule}/{}/{what}", trigger.id).as_bytes(),
    )
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    if let Some(text) = panic.downcast_ref::<&str>() {
        (*text).to_string()
    } else if let Some(text) = panic.downcast_ref::<String>() {
        text.clone()
    } else {
        "a panic without a message".to_string()
    }
}

/// A bookkeeping event about `rule`, caused by `trigger`.
fn rule_event(
    event_type: &str,
    rule: &str,
    trigger: &LoggedEvent,
    what: &str,
    payload: serde_json::Value,
) -> Result<Event> {
    let mut event = Event::new(event_type)
        .id(output_id(rule, trigger, what))
        .causation_id(trigger.id)
        .metadata(RULE_KEY, rule)
        .metadata(TRIGGER_SEQ_KEY, trigger.seq.to_string())
        .json_payload(&payload)?
        .bookkeeping();
    if let Some(correlation) = trigger.correlation_id {
        event = event.correlation_id(correlation);
    }
    Ok(event)
}

/// Runs `rule`'s action on `trigger` and stamps what it returns.
fn evaluate(
    shared: &Arc<Shared>,
    rule: &Rule,
    trigger: &LoggedEvent,
    depth_limit: u32,
) -> Evaluation {
    let context = RuleContext {
        shared,
        trigger,
        rule: &rule.name,
    };
    let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| (rule.action)(&context)));
    let events = match outcome {
        Ok(Ok(events)) => events,
        Ok(Err(error)) => {
            return Evaluation::Failed(crate::event::shorten_for_message(&error.to_string()))
        }
        Err(panic) => {
            return Evaluation::Failed(format!("the action panicked: {}", panic_message(&*panic)))
        }
    };
    if events.is_empty() {
        return Evaluation::Nothing;
    }
    let depth = trigger_depth(trigger).saturating_add(1);
    if depth > depth_limit {
        let payload = serde_json::json!({
            "rule": rule.name,
            "trigger_seq": trigger.seq,
            "depth": depth,
            "limit": depth_limit,
            "events_not_appended": events.len(),
        });
        return match rule_event(DEPTH_EXCEEDED_TYPE, &rule.name, trigger, "depth", payload) {
            Ok(output) => Evaluation::DepthExceeded {
                depth,
                output: Box::new(output),
            },
            Err(e) => Evaluation::Failed(e.to_string()),
        };
    }
    let stamped = events
        .into_iter()
        .enumerate()
        .map(|(index, mut event)| {
            event.id = Some(output_id(&rule.name, trigger, &index.to_string()));
            event.causation_id = Some(trigger.id);
            if trigger.correlation_id.is_some() {
                event.correlation_id = trigger.correlation_id;
            }
            event.metadata.insert(RULE_KEY.into(), rule.name.clone());
            event.metadata.insert(DEPTH_KEY.into(), depth.to_string());
            event
                .metadata
                .insert(TRIGGER_SEQ_KEY.into(), trigger.seq.to_string());
            event
        })
        .collect();
    Evaluation::Output(stamped)
}

fn payload_text(event: &Event) -> String {
    match &event.payload {
        crate::event::Payload::Empty => "null".into(),
        crate::event::Payload::Json(text) => text.clone(),
        crate::event::Payload::Bytes(bytes) => {
            let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
            serde_json::Value::String(hex).to_string()
        }
    }
}

fn would_append(shared: &Arc<Shared>, events: &[Event]) -> Result<Vec<WouldAppend>> {
    let mut out = Vec::with_capacity(events.len());
    for event in events {
        let id = event.id.unwrap_or_default();
        out.push(WouldAppend {
            id,
            event_type: event.event_type.clone(),
            entity: event.entity.clone(),
            payload: payload_text(event),
            already_in_log: shared.find_by_id(id)?.map(|found| found.seq),
        });
    }
    Ok(out)
}

/// Evaluates `rules` on `triggers` (in the order given) without writing
/// anything: the engine of [`crate::Log::dry_run_rules`] and
/// [`crate::LogReader::dry_run_rules`].
pub(crate) fn dry_run(
    shared: &Arc<Shared>,
    rules: &[Rule],
    triggers: &[LoggedEvent],
    depth_limit: u32,
) -> Result<Vec<DryRunReport>> {
    for rule in rules {
        rule.validate()?;
    }
    let mut reports = Vec::new();
    for trigger in triggers {
        for rule in rules.iter().filter(|r| r.trigger.matches(trigger)) {
            let outcome = match evaluate(shared, rule, trigger, depth_limit) {
                Evaluation::Nothing => DryRunOutcome::Nothing,
                Evaluation::Output(events) => {
                    DryRunOutcome::WouldAppend(would_append(shared, &events)?)
                }
                Evaluation::DepthExceeded { depth, .. } => DryRunOutcome::DepthExceeded {
                    depth,
                    limit: depth_limit,
                },
                Evaluation::Failed(message) => DryRunOutcome::Failed(message),
            };
            reports.push(DryRunReport {
                rule: rule.name.clone(),
                trigger_seq: trigger.seq,
                trigger_id: trigger.id,
                trigger_type: trigger.event_type.clone(),
                outcome,
            });
        }
    }
    Ok(reports)
}

fn rules_dir(data_dir: &Path) -> PathBuf {
    data_dir.join(RULES_DIR)
}

fn stats_path(data_dir: &Path, rule: &str) -> PathBuf {
    rules_dir(data_dir).join(format!("{rule}.json"))
}

fn store_stats(shared: &Shared, stats: &RuleStats) -> Result<()> {
    let dir = rules_dir(&shared.dir);
    if !shared.storage.exists(&dir) {
        shared.storage.create_dir_all(&dir).at(&dir)?;
        crate::fsutil::sync_dir(&*shared.storage, &shared.dir)?;
    }
    let mut text = serde_json::to_vec_pretty(stats).map_err(Error::EventJson)?;
    text.push(b'\n');
    crate::fsutil::write_file_durably(
        &*shared.storage,
        &stats_path(&shared.dir, &stats.rule),
        &text,
    )
}

/// Largest statistics file read.
const STATS_FILE_BYTES_MAX: u64 = 64 * 1024;

/// The statistics files in `DIR/rules/`, sorted by rule name.
pub(crate) fn read_stats(shared: &Shared) -> Result<Vec<RuleStats>> {
    let dir = rules_dir(&shared.dir);
    if !shared.storage.exists(&dir) {
        return Ok(Vec::new());
    }
    let mut names = shared.storage.list_dir(&dir).at(&dir)?;
    names.sort();
    let mut all = Vec::new();
    for name in names {
        if !name.ends_with(".json") {
            continue; // a temporary file of a write in progress
        }
        if let Some(stats) = read_stats_file(&*shared.storage, &dir.join(&name))? {
            all.push(stats);
        }
    }
    Ok(all)
}

/// Reads one rule's statistics file (`DIR/rules/<rule>.json`, FORMAT.md)
/// without a log: what `evlog-dump` shows.
pub fn read_stats_path(path: &Path) -> Result<RuleStats> {
    match read_stats_file(&crate::storage::OsStorage, path)? {
        Some(stats) => Ok(stats),
        None => Err(Error::Io {
            path: path.to_path_buf(),
            source: std::io::Error::from(std::io::ErrorKind::NotFound),
        }),
    }
}

/// One statistics file; `None` when it does not exist.
fn read_stats_file(
    storage: &dyn crate::storage::Storage,
    path: &Path,
) -> Result<Option<RuleStats>> {
    if !storage.exists(path) {
        return Ok(None);
    }
    let path = path.to_path_buf();
    let file = storage.open(&path, OpenMode::Read).at(&path)?;
    let len = file.size_bytes().at(&path)?;
    if len > STATS_FILE_BYTES_MAX {
        return Err(Error::Corrupt {
            file: path,
            offset: 0,
            kind: crate::error::CorruptKind::BadHeader("a rule statistics file is at most 64 KiB"),
        });
    }
    let mut bytes = vec![0u8; len as usize];
    file.read_exact_at(&mut bytes, 0).at(&path)?;
    let stats: RuleStats = serde_json::from_slice(&bytes).map_err(|e| Error::Corrupt {
        file: path.clone(),
        offset: line_offset(&bytes, e.line()),
        kind: crate::error::CorruptKind::Json(e.to_string()),
    })?;
    if stats.format != STATS_FORMAT_VERSION {
        return Err(Error::UnsupportedVersion {
            file: path,
            found: stats.format,
            supported: STATS_FORMAT_VERSION,
        });
    }
    Ok(Some(stats))
}

/// Byte offset of the start of 1-based `line` in `bytes`.
fn line_offset(bytes: &[u8], line: usize) -> u64 {
    if line <= 1 {
        return 0;
    }
    bytes
        .iter()
        .enumerate()
        .filter(|(_, &b)| b == b'\n')
        .nth(line - 2)
        .map_or(bytes.len() as u64, |(at, _)| at as u64 + 1)
}

/// A registered rule in the engine.
struct Running {
    rule: Rule,
    consumer: String,
    stats: RuleStats,
    /// The position last stored (file or log).
    stored_position: u64,
    /// Statistics changed since they were last stored.
    stats_dirty: bool,
    consecutive_failures: u32,
    /// Outcomes of the last evaluations, `true` for a failure.
    window: VecDeque<bool>,
    open_until: Option<Instant>,
    /// A command asked to close the breaker.
    close_requested: bool,
}

/// What the handle sends the engine thread: a rule just registered.
type Command = Box<Running>;

/// The state the engine thread shares with the [`Rules`] handle.
struct EngineShared {
    stop: AtomicBool,
    dry_run_all: AtomicBool,
    depth_limit: AtomicU32,
    /// Every registered rule's latest counts, by name.
    stats: Mutex<BTreeMap<String, RuleStats>>,
    /// Signalled when `stats` changed, for [`Rules::wait_for`].
    stats_changed: Condvar,
    /// Rules whose breaker [`Rules::close_breaker`] closes, and whether
    /// there are any (read before each evaluation, so it is an atomic).
    close_requests: Mutex<Vec<String>>,
    close_requested: AtomicBool,
    reports: Mutex<VecDeque<DryRunReport>>,
    /// Why the engine stopped on its own, if it did.
    stopped_because: Mutex<Option<String>>,
}

/// The rules of one log: [`crate::Log::rules`].
pub struct Rules {
    shared: Arc<Shared>,
    engine: Arc<EngineShared>,
    /// Until the first registration: the appender the engine will own.
    appender: Mutex<Option<Appender>>,
    commands: Mutex<Option<Sender<Command>>>,
    thread: Mutex<Option<JoinHandle<()>>>,
    /// Names registered, so that a name is used once.
    names: Mutex<HashSet<String>>,
}

impl Rules {
    pub(crate) fn new(shared: Arc<Shared>, appender: Appender) -> Rules {
        Rules {
            shared,
            engine: Arc::new(EngineShared {
                stop: AtomicBool::new(false),
                dry_run_all: AtomicBool::new(false),
                depth_limit: AtomicU32::new(DEPTH_LIMIT_DEFAULT),
                stats: Mutex::new(BTreeMap::new()),
                stats_changed: Condvar::new(),
                close_requests: Mutex::new(Vec::new()),
                close_requested: AtomicBool::new(false),
                reports: Mutex::new(VecDeque::new()),
                stopped_because: Mutex::new(None),
            }),
            appender: Mutex::new(Some(appender)),
            commands: Mutex::new(None),
            thread: Mutex::new(None),
            names: Mutex::new(HashSet::new()),
        }
    }

    /// Registers `rule` and starts evaluating it on the engine thread
    /// (started on first use). A rule registered before resumes after its
    /// stored position; a new one starts per [`Rule::start`].
    pub fn register(&self, rule: Rule) -> Result<()> {
        rule.validate()?;
        self.shared.check_poison()?;
        if let Some(reason) = lock(&self.engine.stopped_because).clone() {
            return Err(Error::RulesStopped(reason));
        }
        {
            let mut names = lock(&self.names);
            if names.contains(&rule.name) {
                return Err(Error::InvalidEvent(format!(
                    "rule {} is already registered",
                    rule.name
                )));
            }
            names.insert(rule.name.clone());
        }
        let dry_run = rule.dry_run || self.engine.dry_run_all.load(Ordering::Acquire);
        let consumer = rule.consumer_name();
        let new_position = match rule.start {
            RuleStart::End => self.shared.marks.last_seq(),
            RuleStart::Beginning => self.shared.first_seq.load(Ordering::Acquire).max(1) - 1,
        };
        // As any durable consumer: a new rule exists from now on (a
        // restart resumes here), a position past the end after a power cut
        // goes back to the end, one behind retention's deletions is
        // `ConsumerBehindLog`. A dry-run rule stores nothing.
        let position =
            match consumer::resume_position(&self.shared, &consumer, new_position, !dry_run) {
                Ok((position, _)) => position,
                Err(e) => {
                    lock(&self.names).remove(&rule.name);
                    return Err(e);
                }
            };
        // Counts go on from the last run's; the breaker starts closed (its
        // cool-down was a moment of the process that stopped).
        let earlier = match read_stats_file(
            &*self.shared.storage,
            &stats_path(&self.shared.dir, &rule.name),
        ) {
            Ok(earlier) => earlier,
            Err(e) => {
                // The counts are informative (positions are authoritative
                // elsewhere): a damaged file must not stop automation.
                tracing::warn!(rule = %rule.name, error = %e, "rule statistics unreadable; counting from zero");
                None
            }
        };
        let stats = RuleStats {
            format: STATS_FORMAT_VERSION,
            rule: rule.name.clone(),
            position,
            dry_run,
            updated_at_us: crate::log::now_micros(),
            breaker: BreakerState::Closed,
            ..earlier.unwrap_or_default()
        };
        lock(&self.engine.stats).insert(rule.name.clone(), stats.clone());
        let running = Running {
            rule,
            consumer,
            stored_position: position,
            stats,
            stats_dirty: !dry_run,
            consecutive_failures: 0,
            window: VecDeque::new(),
            open_until: None,
            close_requested: false,
        };
        self.send(Box::new(running))
    }

    fn send(&self, command: Command) -> Result<()> {
        let mut commands = lock(&self.commands);
        if commands.is_none() {
            let appender = lock(&self.appender).take().ok_or(Error::Closed)?;
            let (tx, rx) = crossbeam_channel::unbounded();
            let engine = Arc::clone(&self.engine);
            let thread = std::thread::Builder::new()
                .name("evlog:rules".into())
                .spawn(move || run(engine, appender, rx))
                .map_err(|e| Error::Io {
                    path: self.shared.dir.clone(),
                    source: e,
                })?;
            *lock(&self.thread) = Some(thread);
            *commands = Some(tx);
        }
        match commands.as_ref() {
            Some(tx) => tx.send(command).map_err(|_| Error::Closed),
            None => Err(Error::Closed),
        }
    }

    /// Closes a rule's breaker now (by command, before its cool-down).
    pub fn close_breaker(&self, rule: &str) -> Result<()> {
        if !lock(&self.names).contains(rule) {
            return Err(Error::InvalidEvent(format!(
                "no rule named {rule} is registered"
            )));
        }
        // Not through the command queue: the engine may be waiting for an
        // event already, and the next trigger must see the request.
        lock(&self.engine.close_requests).push(rule.to_string());
        self.engine.close_requested.store(true, Ordering::Release);
        Ok(())
    }

    /// Puts every rule, registered or to come, in dry run (`true`), or
    /// back to what each rule says (`false`).
    pub fn set_dry_run_all(&self, dry_run: bool) {
        self.engine.dry_run_all.store(dry_run, Ordering::Release);
    }

    /// The longest chain of rule-produced events (at least 1).
    pub fn set_depth_limit(&self, depth: u32) {
        self.engine
            .depth_limit
            .store(depth.max(1), Ordering::Release);
    }

    /// Every registered rule's counts, by name (as of the engine's last
    /// step).
    pub fn list(&self) -> Vec<RuleStats> {
        lock(&self.engine.stats).values().cloned().collect()
    }

    /// What dry-run rules would have appended since the last call, oldest
    /// first (at most [`DRY_RUN_REPORTS_MAX`]).
    pub fn take_dry_run_reports(&self) -> Vec<DryRunReport> {
        lock(&self.engine.reports).drain(..).collect()
    }

    /// Waits until every registered rule has handled every event up to
    /// `seq`, or `timeout` passed; returns whether they have.
    pub fn wait_for(&self, seq: u64, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut stats = lock(&self.engine.stats);
        loop {
            if stats.values().all(|s| s.position >= seq) {
                return true;
            }
            let now = Instant::now();
            if now >= deadline || lock(&self.engine.stopped_because).is_some() {
                return false;
            }
            // Bounded, so that an engine that stopped is noticed.
            let step = (deadline - now).min(POLL_INTERVAL);
            stats = self
                .engine
                .stats_changed
                .wait_timeout(stats, step)
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .0;
        }
    }

    /// Stops the engine (storing positions and counts) and waits for it.
    pub(crate) fn shutdown(&self) {
        self.engine.stop.store(true, Ordering::Release);
        drop(lock(&self.commands).take());
        if let Some(thread) = lock(&self.thread).take() {
            if thread.join().is_err() {
                tracing::error!("the rules engine thread panicked");
            }
        }
        drop(lock(&self.appender).take());
    }
}

/// The engine thread.
fn run(engine: Arc<EngineShared>, appender: Appender, commands: Receiver<Command>) {
    let mut state = Engine {
        engine,
        appender,
        rules: Vec::new(),
        subscription: None,
        last_persist: Instant::now(),
        last_publish: Instant::now(),
    };
    if let Err(error) = state.run(&commands) {
        tracing::error!(error = %error, "the rules engine stopped");
        *lock(&state.engine.stopped_because) = Some(error.to_string());
    }
    // Rules registered just before the stop: their position and counts
    // are stored like the others'.
    for running in commands.try_iter() {
        state.rules.push(*running);
    }
    state.persist(true);
}

struct Engine {
    engine: Arc<EngineShared>,
    appender: Appender,
    rules: Vec<Running>,
    subscription: Option<Subscription>,
    last_persist: Instant,
    last_publish: Instant,
}

impl Engine {
    fn shared(&self) -> &Arc<Shared> {
        &self.appender.shared
    }

    fn run(&mut self, commands: &Receiver<Command>) -> Result<()> {
        loop {
            if self.engine.stop.load(Ordering::Acquire) {
                return Ok(());
            }
            loop {
                match commands.try_recv() {
                    Ok(command) => self.apply(command)?,
                    Err(crossbeam_channel::TryRecvError::Empty) => break,
                    Err(crossbeam_channel::TryRecvError::Disconnected) => return Ok(()),
                }
            }
            let Some(subscription) = self.subscription.as_mut() else {
                match commands.recv_timeout(POLL_INTERVAL) {
                    Ok(command) => self.apply(command)?,
                    Err(crossbeam_channel::RecvTimeoutError::Timeout) => {}
                    Err(crossbeam_channel::RecvTimeoutError::Disconnected) => return Ok(()),
                }
                continue;
            };
            let next = subscription.next_timeout(POLL_INTERVAL);
            let examined = subscription.progress().position;
            let idle = match next {
                Ok(Some(event)) => {
                    self.handle(&event)?;
                    false
                }
                Ok(None) => true,
                Err(Error::Closed) => return Ok(()),
                Err(e) => return Err(e),
            };
            // Every rule has handled every delivered event up to what the
            // subscription examined (a rewind only goes back to a rule's
            // own position), and the rest were not triggers.
            for running in &mut self.rules {
                if running.stats.position < examined {
                    running.stats.position = examined;
                }
            }
            if self.last_persist.elapsed() >= PERSIST_INTERVAL {
                self.persist(false);
            } else if idle || self.last_publish.elapsed() >= PUBLISH_INTERVAL {
                self.publish();
            }
        }
    }

    /// Shows the rules' positions and counts to [`Rules::list`] and
    /// [`Rules::wait_for`].
    fn publish(&mut self) {
        self.last_publish = Instant::now();
        let dry_run_all = self.engine.dry_run_all.load(Ordering::Acquire);
        let mut published = lock(&self.engine.stats);
        for running in &mut self.rules {
            running.stats.updated_at_us = crate::log::now_micros();
            running.stats.dry_run = running.rule.dry_run || dry_run_all;
            published.insert(running.rule.name.clone(), running.stats.clone());
        }
        drop(published);
        self.engine.stats_changed.notify_all();
    }

    /// Adds a rule just registered; the subscription goes back to its
    /// position if it is past it (the other rules skip what they handled).
    fn apply(&mut self, running: Command) -> Result<()> {
        let from = running.stats.position + 1;
        match self.subscription.as_mut() {
            None => {
                self.subscription = Some(Subscription::new(
                    Arc::clone(self.shared()),
                    Filter::all(),
                    Start::Seq(from),
                )?)
            }
            Some(subscription) => {
                if subscription.progress().position >= from {
                    subscription.rewind_to(from);
                }
            }
        }
        self.rules.push(*running);
        Ok(())
    }

    fn dry_run(&self, running: &Running) -> bool {
        running.rule.dry_run || self.engine.dry_run_all.load(Ordering::Acquire)
    }

    fn handle(&mut self, event: &LoggedEvent) -> Result<()> {
        for index in 0..self.rules.len() {
            if self.rules[index].stats.position >= event.seq {
                continue;
            }
            if self.rules[index].rule.trigger.matches(event) {
                self.evaluate(index, event)?;
            }
            let running = &mut self.rules[index];
            running.stats.position = running.stats.position.max(event.seq);
        }
        Ok(())
    }

    fn evaluate(&mut self, index: usize, trigger: &LoggedEvent) -> Result<()> {
        let dry_run = self.dry_run(&self.rules[index]);
        let depth_limit = self.engine.depth_limit.load(Ordering::Acquire);
        let mut closing = false;
        if self.engine.close_requested.swap(false, Ordering::AcqRel) {
            for name in lock(&self.engine.close_requests).drain(..) {
                if let Some(running) = self.rules.iter_mut().find(|r| r.rule.name == name) {
                    running.close_requested = true;
                }
            }
        }
        {
            let running = &mut self.rules[index];
            if running.close_requested {
                running.close_requested = false;
                running.open_until = None;
                running.consecutive_failures = 0;
                running.window.clear();
                if running.stats.breaker != BreakerState::Closed {
                    closing = true;
                }
            }
            if let Some(until) = running.open_until {
                if Instant::now() < until {
                    running.stats.skipped += 1;
                    running.stats_dirty = true;
                    if dry_run {
                        let report = DryRunReport {
                            rule: running.rule.name.clone(),
                            trigger_seq: trigger.seq,
                            trigger_id: trigger.id,
                            trigger_type: trigger.event_type.clone(),
                            outcome: DryRunOutcome::BreakerOpen,
                        };
                        self.report(report);
                    }
                    return Ok(());
                }
                running.open_until = None;
                running.stats.breaker = BreakerState::HalfOpen;
            }
            running.stats.evaluations += 1;
            running.stats_dirty = true;
        }
        let evaluation = evaluate(self.shared(), &self.rules[index].rule, trigger, depth_limit);
        let name = self.rules[index].rule.name.clone();
        let (mut batch, failure) = match evaluation {
            Evaluation::Nothing => (Vec::new(), None),
            Evaluation::Output(events) => {
                self.rules[index].stats.firings += 1;
                (events, None)
            }
            Evaluation::DepthExceeded { output, .. } => {
                self.rules[index].stats.depth_stops += 1;
                (vec![*output], None)
            }
            Evaluation::Failed(message) => (Vec::new(), Some(message)),
        };
        let half_open = self.rules[index].stats.breaker == BreakerState::HalfOpen;
        if failure.is_none() && (half_open || closing) {
            batch.push(rule_event(
                BREAKER_CLOSED_TYPE,
                &name,
                trigger,
                "breaker-closed",
                serde_json::json!({"rule": name, "trigger_seq": trigger.seq}),
            )?);
            let running = &mut self.rules[index];
            running.stats.breaker = BreakerState::Closed;
        }
        if dry_run {
            let outcome = match &failure {
                Some(message) => DryRunOutcome::Failed(message.clone()),
                None if batch.is_empty() => DryRunOutcome::Nothing,
                None => DryRunOutcome::WouldAppend(would_append(self.shared(), &batch)?),
            };
            self.report(DryRunReport {
                rule: name,
                trigger_seq: trigger.seq,
                trigger_id: trigger.id,
                trigger_type: trigger.event_type.clone(),
                outcome,
            });
            self.record_outcome(index, trigger, failure, true)?;
            return Ok(());
        }
        if let Some(message) = failure {
            return self.record_outcome(index, trigger, Some(message), false);
        }
        if batch.is_empty() {
            return self.record_outcome(index, trigger, None, false);
        }
        let consumer = self.rules[index].consumer.clone();
        let mut commit = consumer::commit_event(&consumer, trigger.seq)?;
        commit.id = Some(output_id(&name, trigger, "commit"));
        batch.push(commit);
        match self.appender.append_batch(&batch) {
            Ok(_) => {
                let running = &mut self.rules[index];
                running.stored_position = running.stored_position.max(trigger.seq);
                running.stats.position = running.stats.position.max(trigger.seq);
                self.record_outcome(index, trigger, None, false)
            }
            Err(e @ (Error::Closed | Error::Poisoned { .. } | Error::WriterPanicked(_))) => Err(e),
            Err(e) => {
                let message = format!("the log refused the rule's output: {e}");
                self.record_outcome(index, trigger, Some(message), false)
            }
        }
    }

    fn report(&self, report: DryRunReport) {
        tracing::info!(rule = %report.rule, trigger_seq = report.trigger_seq, outcome = ?report.outcome, "dry-run rule evaluated");
        let mut reports = lock(&self.engine.reports);
        if reports.len() >= DRY_RUN_REPORTS_MAX {
            reports.pop_front();
        }
        reports.push_back(report);
    }

    /// Counts a success or a failure, parks a failed trigger and opens the
    /// breaker when the policy says so.
    fn record_outcome(
        &mut self,
        index: usize,
        trigger: &LoggedEvent,
        failure: Option<String>,
        dry_run: bool,
    ) -> Result<()> {
        let shared = Arc::clone(self.shared());
        let running = &mut self.rules[index];
        let policy = running.rule.breaker;
        if let Some(rate) = policy.failure_rate {
            running.window.push_back(failure.is_some());
            while running.window.len() > rate.window_evaluations as usize {
                running.window.pop_front();
            }
        }
        let Some(message) = failure else {
            running.consecutive_failures = 0;
            return Ok(());
        };
        running.stats.failures += 1;
        running.consecutive_failures += 1;
        running.stats.last_error = Some(message.clone());
        tracing::warn!(rule = %running.rule.name, trigger_seq = trigger.seq, error = %message, "rule failed");
        if !dry_run {
            consumer::park(
                &shared,
                &running.consumer,
                &ParkedEvent {
                    seq: trigger.seq,
                    attempts: 1,
                    reason: message.clone(),
                },
            )?;
        }
        let by_count = policy.consecutive_failures > 0
            && running.consecutive_failures >= policy.consecutive_failures;
        let by_rate = policy.failure_rate.is_some_and(|rate| {
            running.window.len() >= rate.window_evaluations as usize
                && running.window.iter().filter(|&&failed| failed).count() as f64
                    >= rate.ratio * running.window.len() as f64
        });
        let half_open = running.stats.breaker == BreakerState::HalfOpen;
        if !(by_count || by_rate || half_open) {
            return Ok(());
        }
        let reason = if half_open {
            "the trigger let through after the cool-down failed"
        } else if by_count {
            "consecutive failures"
        } else {
            "failure rate"
        };
        running.open_until = Some(Instant::now() + policy.cool_down);
        running.stats.breaker = BreakerState::Open;
        running.stats.breaker_opens += 1;
        running.stats.breaker_opened_at_us = Some(crate::log::now_micros());
        running.consecutive_failures = 0;
        running.window.clear();
        let name = running.rule.name.clone();
        let consumer_name = running.consumer.clone();
        tracing::warn!(rule = %name, reason, "rule breaker opened");
        if dry_run {
            return Ok(());
        }
        let opened = rule_event(
            BREAKER_OPENED_TYPE,
            &name,
            trigger,
            "breaker-opened",
            serde_json::json!({
                "rule": name,
                "trigger_seq": trigger.seq,
                "reason": reason,
                "last_error": message,
                "cool_down_ms": policy.cool_down.as_millis() as u64,
            }),
        )?;
        let mut commit = consumer::commit_event(&consumer_name, trigger.seq)?;
        commit.id = Some(output_id(&name, trigger, "breaker-commit"));
        match self.appender.append_batch(&[opened, commit]) {
            Ok(_) => {
                let running = &mut self.rules[index];
                running.stored_position = running.stored_position.max(trigger.seq);
                Ok(())
            }
            Err(e @ (Error::Closed | Error::Poisoned { .. } | Error::WriterPanicked(_))) => Err(e),
            Err(e) => {
                tracing::error!(rule = %name, error = %e, "could not append the breaker event");
                Ok(())
            }
        }
    }

    /// Stores positions and counts that changed (not those of dry-run
    /// rules), and publishes the counts to [`Rules::list`].
    fn persist(&mut self, closing: bool) {
        self.last_persist = Instant::now();
        self.publish();
        let shared = Arc::clone(self.shared());
        for running in &mut self.rules {
            if running.stats.dry_run || shared.is_poisoned() {
                continue;
            }
            if running.stats.position > running.stored_position {
                match consumer::store_position(&shared, &running.consumer, running.stats.position) {
                    Ok(()) => {
                        running.stored_position = running.stats.position;
                        running.stats_dirty = true;
                    }
                    Err(e) => {
                        tracing::error!(rule = %running.rule.name, error = %e, "rule position not stored")
                    }
                }
            }
            if running.stats_dirty || closing {
                match store_stats(&shared, &running.stats) {
                    Ok(()) => running.stats_dirty = false,
                    Err(e) => {
                        tracing::error!(rule = %running.rule.name, error = %e, "rule statistics not stored")
                    }
                }
            }
        }
    }
}

impl Rules {
    /// The depth limit in force.
    pub fn depth_limit(&self) -> u32 {
        self.engine.depth_limit.load(Ordering::Acquire)
    }
}

impl crate::log::Log {
    /// Evaluates `rules` on `triggers` as the engine would, writing
    /// nothing: what each would append (and whether the log already holds
    /// it), for example over a past correlation. Uses this log's depth
    /// limit.
    pub fn dry_run_rules(
        &self,
        rules: &[Rule],
        triggers: &[LoggedEvent],
    ) -> Result<Vec<DryRunReport>> {
        dry_run(&self.shared, rules, triggers, self.rules().depth_limit())
    }
}

impl crate::log::LogReader {
    /// [`crate::Log::dry_run_rules`] on a read-only view, with the depth
    /// limit `depth_limit`.
    pub fn dry_run_rules(
        &self,
        rules: &[Rule],
        triggers: &[LoggedEvent],
        depth_limit: u32,
    ) -> Result<Vec<DryRunReport>> {
        dry_run(&self.shared, rules, triggers, depth_limit.max(1))
    }

    /// The rules' counts as their engine last stored them
    /// (`DIR/rules/*.json`), by rule name.
    pub fn rule_stats(&self) -> Result<Vec<RuleStats>> {
        read_stats(&self.shared)
    }
}
