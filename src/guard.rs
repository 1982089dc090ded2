//! The storm guard: per type-pattern rate limits at append, and the gate
//! that runs it with the [contracts](crate::contracts) before anything is
//! written.
//!
//! A [`RateLimit`] is a token bucket shared by every event type its
//! pattern matches: it holds at most `burst` tokens, gains `rate_per_s`
//! tokens a second, and each matching event of a request takes one. A
//! request (an `append`, or an `append_batch` as a whole) that finds every
//! bucket it touches full enough takes its tokens and goes on; one that
//! does not is handled by the [`StormPolicy`] of the limit that is short:
//!
//! - `Refuse`: [`Error::RateLimited`], nothing of the request is written
//!   and no token is taken.
//! - `Delay { max_wait_ms }`: the caller sleeps until the tokens are
//!   there, at most `max_wait_ms` from the start of the call; when they
//!   would come later than that, it is refused as above at once (it is not
//!   made to wait for a refusal that can be foreseen). A request that
//!   needs more tokens than `burst` can never be served and is refused.
//! - `Flag`: the request is written; the events beyond the tokens there
//!   were (the last matching ones of the request) carry the metadata
//!   entry [`RATE_LIMITED_KEY`] (`evlog.rate_limited`), whose value is the
//!   limit's pattern. Flagging adds one metadata entry, so an event that
//!   already has [`crate::METADATA_ENTRIES_MAX`] is refused by the usual
//!   check.
//!
//! When several limits apply, every one must have its tokens; a `Refuse`
//! or a hopeless `Delay` wins over the others, and no bucket is touched by
//! a refused request.
//!
//! Storms. A limit's storm starts at the first request that finds it
//! short and ends once no request has found it short for `storm_quiet_ms`
//! (default [`STORM_QUIET_MS_DEFAULT`]); the next shortfall after that
//! starts a new storm. At the start of each storm the log appends exactly
//! one event of type [`STORM_DETECTED_TYPE`] (`evlog.storm.detected`,
//! entity `evlog.storm`/pattern, priority P1, payload
//! `{"pattern","event_type","policy","rate_per_s","burst","storm"}` where
//! `storm` counts the limit's storms since the log was opened), from the
//! thread whose request started it. [`crate::Log::rate_limit_stats`] and
//! the metrics ([`crate::metrics`]) count storms and the events refused,
//! delayed and flagged.
//!
//! Where it runs: in the caller's thread, in `Log::prepare`, before any
//! event is encoded, so the writer thread never waits for it. A request
//! refused by a later check (an invalid event, a version conflict) keeps
//! the tokens it took: the guard counts attempts. With no limit and no
//! contract the gate is one test of two empty lists. Events evlog writes
//! for itself (`evlog.*`: consumer commits, the storm events) are never
//! limited nor checked.

use std::borrow::Cow;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use crate::contracts::{Contract, Contracts};
use crate::error::{Error, Result};
use crate::event::{type_matches, Event, Priority};
use crate::options::Options;
use crate::storage::Storage;

/// The type of the event the log appends when a storm starts.
pub const STORM_DETECTED_TYPE: &str = "evlog.storm.detected";
/// The entity type of storm events; the entity id is the limit's pattern.
pub const STORM_ENTITY_TYPE: &str = "evlog.storm";
/// The metadata key that marks an event accepted over a `Flag` limit.
pub const RATE_LIMITED_KEY: &str = "evlog.rate_limited";
/// Default of [`RateLimit::storm_quiet`]: long enough that a flood which
/// pauses for a few seconds is still one storm, short enough that the
/// next day's flood is another.
pub const STORM_QUIET_MS_DEFAULT: u64 = 10_000;
/// Most rate limits one log takes: the events' matches are kept as bits
/// of one `u64`, and each limit costs a pattern comparison per event.
pub const RATE_LIMITS_MAX: usize = 64;
const _: () = assert!(RATE_LIMITS_MAX <= u64::BITS as usize);

/// What happens to a request over a [`RateLimit`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StormPolicy {
    /// Refuse it with [`Error::RateLimited`].
    Refuse,
    /// Make the caller wait for the tokens, at most `max_wait_ms`
    /// milliseconds; then refuse it.
    Delay {
        /// The longest a caller waits, in milliseconds.
        max_wait_ms: u64,
    },
    /// Accept it and mark the events over the limit (see
    /// [`RATE_LIMITED_KEY`]).
    Flag,
}

impl StormPolicy {
    /// `refuse`, `delay` or `flag`, as in `evlog.toml`.
    pub fn name(&self) -> &'static str {
        match self {
            StormPolicy::Refuse => "refuse",
            StormPolicy::Delay { .. } => "delay",
            StormPolicy::Flag => "flag",
        }
    }
}

/// A rate limit on the event types a pattern matches: a token bucket
/// checked at append, in the caller's thread (see README.md, "Storm guard
/// and contracts").
///
/// ```
/// # fn main() -> evlog::Result<()> {
/// use evlog::{Event, Log, Options, RateLimit};
/// // Two heartbeats at once, then one a second; the rest refused.
/// let log = Log::open_temporary(
///     Options::default().rate_limit(RateLimit::new("agent.heartbeat", 1.0, 2)),
/// )?;
/// log.append(Event::new("agent.heartbeat"))?;
/// log.append(Event::new("agent.heartbeat"))?;
/// let error = log.append(Event::new("agent.heartbeat")).unwrap_err();
/// assert!(matches!(error, evlog::Error::RateLimited { .. }));
/// // Other types pass; the storm was recorded once.
/// log.append(Event::new("task.created"))?;
/// assert_eq!(log.by_type("evlog.storm.detected", ..)?.count(), 1);
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct RateLimit {
    pattern: String,
    rate_per_s: f64,
    burst: u64,
    policy: StormPolicy,
    storm_quiet_ms: u64,
}

impl RateLimit {
    /// `rate_per_s` events a second with bursts of up to `burst`, for the
    /// types `pattern` matches; refused over it (see
    /// [`RateLimit::policy`]). Checked when the log opens: the pattern
    /// must be valid, the rate positive and finite, the burst at least 1.
    pub fn new(pattern: impl Into<String>, rate_per_s: f64, burst: u64) -> RateLimit {
        RateLimit {
            pattern: pattern.into(),
            rate_per_s,
            burst,
            policy: StormPolicy::Refuse,
            storm_quiet_ms: STORM_QUIET_MS_DEFAULT,
        }
    }

    /// What happens over the limit (default [`StormPolicy::Refuse`]).
    pub fn policy(mut self, policy: StormPolicy) -> RateLimit {
        self.policy = policy;
        self
    }

    /// How long the limit must go without a shortfall for its storm to
    /// end (default [`STORM_QUIET_MS_DEFAULT`]); sub-millisecond parts are
    /// dropped.
    pub fn storm_quiet(mut self, quiet: Duration) -> RateLimit {
        self.storm_quiet_ms = u64::try_from(quiet.as_millis()).unwrap_or(u64::MAX);
        self
    }

    /// The type pattern it limits.
    pub fn pattern(&self) -> &str {
        &self.pattern
    }
    /// Its rate, in events per second.
    pub fn rate_per_s(&self) -> f64 {
        self.rate_per_s
    }
    /// Its burst, in events.
    pub fn burst(&self) -> u64 {
        self.burst
    }
    /// What it does to a request over the limit.
    pub fn get_policy(&self) -> StormPolicy {
        self.policy
    }
    /// How long without a shortfall ends a storm, in milliseconds.
    pub fn storm_quiet_ms(&self) -> u64 {
        self.storm_quiet_ms
    }

    /// Checks the limit; the reason names what is wrong.
    pub(crate) fn check(&self) -> std::result::Result<(), String> {
        crate::retention::check_pattern(&self.pattern)?;
        if !(self.rate_per_s.is_finite() && self.rate_per_s > 0.0) {
            return Err(format!(
                "rate_per_s must be a positive number, not {}",
                self.rate_per_s
            ));
        }
        if self.burst == 0 {
            return Err("burst must be at least 1".into());
        }
        Ok(())
    }

    fn invalid(&self, reason: String) -> Error {
        Error::InvalidGuard {
            what: "rate limit",
            pattern: crate::event::shorten_for_message(&self.pattern),
            reason,
        }
    }
}

/// What a rate limit did since the log was opened.
#[derive(Debug, Clone, PartialEq)]
pub struct RateLimitStats {
    /// The limit these figures are of.
    pub limit: RateLimit,
    /// Storms started (one `evlog.storm.detected` event each).
    pub storms: u64,
    /// Whether a storm is going on: a request found the limit short less
    /// than `storm_quiet_ms` ago.
    pub storm_active: bool,
    /// Events of requests refused because of this limit.
    pub refused_events: u64,
    /// Events of requests that waited for this limit's tokens and were
    /// then written.
    pub delayed_events: u64,
    /// Events written with the `evlog.rate_limited` mark of this limit.
    pub flagged_events: u64,
}

/// A type pattern compiled for the append path: a literal type or a
/// `prefix.*` (the common cases) compare bytes, without splitting.
#[derive(Debug, Clone)]
pub(crate) enum TypePattern {
    /// No wildcard: the type itself.
    Exact(Box<str>),
    /// `a.b.*`: held as `a.b.` (any valid type that starts with it has at
    /// least one more segment, which the final `*` stands for).
    Prefix(Box<str>),
    /// `*`: one or more segments, so every valid type.
    Any,
    /// Wildcards elsewhere: [`type_matches`].
    General(Box<str>),
}

impl TypePattern {
    pub(crate) fn new(pattern: &str) -> TypePattern {
        if !pattern.contains('*') {
            return TypePattern::Exact(pattern.into());
        }
        if pattern == "*" {
            return TypePattern::Any;
        }
        match pattern.strip_suffix('*') {
            Some(prefix) if prefix.ends_with('.') && !prefix.contains('*') => {
                TypePattern::Prefix(prefix.into())
            }
            _ => TypePattern::General(pattern.into()),
        }
    }

    /// Whether a valid event type matches (as [`type_matches`] says).
    pub(crate) fn matches(&self, event_type: &str) -> bool {
        // Most comparisons fail: the first and last bytes (cheap, inline)
        // turn most of them away before a `memcmp` is called.
        let same_ends = |literal: &str| {
            let (literal, name) = (literal.as_bytes(), event_type.as_bytes());
            literal.first() == name.first()
                && literal.last() == name.get(literal.len().saturating_sub(1))
        };
        match self {
            TypePattern::Exact(name) => {
                name.len() == event_type.len() && same_ends(name) && **name == *event_type
            }
            TypePattern::Prefix(prefix) => {
                event_type.len() > prefix.len()
                    && same_ends(prefix)
                    && event_type.starts_with(&**prefix)
            }
            TypePattern::Any => true,
            TypePattern::General(pattern) => type_matches(pattern, event_type),
        }
    }
}

/// A limit's bucket and storm state, behind its mutex.
struct Bucket {
    tokens: f64,
    refilled_at: Instant,
    /// When a request last found the bucket short.
    last_short_at: Option<Instant>,
}

impl Bucket {
    fn refill(&mut self, now: Instant, limit: &RateLimit) {
        // Another thread may have refilled with a later `now`.
        let elapsed = now.saturating_duration_since(self.refilled_at);
        self.tokens =
            (self.tokens + elapsed.as_secs_f64() * limit.rate_per_s).min(limit.burst as f64);
        self.refilled_at = self.refilled_at.max(now);
    }

    /// Records a shortfall; returns whether it starts a storm.
    fn note_short(&mut self, now: Instant, quiet: Duration) -> bool {
        let starts = self
            .last_short_at
            .is_none_or(|last| now.saturating_duration_since(last) >= quiet);
        self.last_short_at = Some(now);
        starts
    }
}

struct LimitState {
    limit: RateLimit,
    pattern: TypePattern,
    quiet: Duration,
    bucket: Mutex<Bucket>,
    storms: AtomicU64,
    refused_events: AtomicU64,
    delayed_events: AtomicU64,
    flagged_events: AtomicU64,
}

impl LimitState {
    fn lock(&self) -> MutexGuard<'_, Bucket> {
        // A panic while holding the lock leaves plain numbers behind.
        self.bucket.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A storm that a request started: the event to append for it.
struct StormStart {
    limit_index: usize,
    event_type: String,
    storm: u64,
}

/// The rate limits of one log with their buckets.
pub(crate) struct StormGuard {
    limits: Vec<LimitState>,
}

impl StormGuard {
    pub(crate) fn new(limits: Vec<RateLimit>) -> Result<StormGuard> {
        if limits.len() > RATE_LIMITS_MAX {
            return Err(Error::InvalidGuard {
                what: "rate limit list",
                pattern: String::new(),
                reason: format!(
                    "{} rate limits, over the limit of {RATE_LIMITS_MAX}",
                    limits.len()
                ),
            });
        }
        let now = Instant::now();
        let mut states = Vec::with_capacity(limits.len());
        for limit in limits {
            limit.check().map_err(|reason| limit.invalid(reason))?;
            states.push(LimitState {
                pattern: TypePattern::new(&limit.pattern),
                quiet: Duration::from_millis(limit.storm_quiet_ms),
                bucket: Mutex::new(Bucket {
                    tokens: limit.burst as f64,
                    refilled_at: now,
                    last_short_at: None,
                }),
                storms: AtomicU64::new(0),
                refused_events: AtomicU64::new(0),
                delayed_events: AtomicU64::new(0),
                flagged_events: AtomicU64::new(0),
                limit,
            });
        }
        Ok(StormGuard { limits: states })
    }

    fn is_empty(&self) -> bool {
        self.limits.is_empty()
    }

    /// The limits each event matches, as bits; consecutive events of one
    /// type (common in batches) are matched once.
    fn matches(&self, events: &[Event]) -> Vec<u64> {
        let mut masks = Vec::with_capacity(events.len());
        let mut previous: Option<(&str, u64)> = None;
        for event in events {
            let mask = if event.is_bookkeeping() {
                0
            } else {
                match previous {
                    Some((event_type, mask)) if event_type == event.event_type => mask,
                    _ => {
                        let mut mask = 0u64;
                        for (index, state) in self.limits.iter().enumerate() {
                            if state.pattern.matches(&event.event_type) {
                                mask |= 1 << index;
                            }
                        }
                        previous = Some((&event.event_type, mask));
                        mask
                    }
                }
            };
            masks.push(mask);
        }
        masks
    }

    /// Takes the request's tokens, waiting or refusing as the policies
    /// say. Returns, per event, the limits it is flagged for (empty when
    /// none is). `on_storm` is called, with no lock held, for each storm
    /// the request starts.
    fn admit(
        &self,
        events: &[Event],
        on_storm: &mut dyn FnMut(&RateLimit, &str, u64),
    ) -> Result<Vec<u64>> {
        let masks = self.matches(events);
        self.admit_masks(events, &masks, on_storm)
    }

    /// The limits `event` counts against, one bit per limit.
    fn mask_of(&self, event: &Event) -> u64 {
        if event.is_bookkeeping() {
            return 0;
        }
        let mut mask = 0u64;
        for (index, state) in self.limits.iter().enumerate() {
            if state.pattern.matches(&event.event_type) {
                mask |= 1 << index;
            }
        }
        mask
    }

    /// [`StormGuard::admit`] with the events' masks already computed.
    fn admit_masks(
        &self,
        events: &[Event],
        masks: &[u64],
        on_storm: &mut dyn FnMut(&RateLimit, &str, u64),
    ) -> Result<Vec<u64>> {
        let mut needs = vec![0u64; self.limits.len()];
        // The first event of each limit, to name its type in messages.
        let mut first_event = vec![usize::MAX; self.limits.len()];
        for (event_index, &mask) in masks.iter().enumerate() {
            let mut bits = mask;
            while bits != 0 {
                let index = bits.trailing_zeros() as usize;
                bits &= bits - 1;
                needs[index] += 1;
                if first_event[index] == usize::MAX {
                    first_event[index] = event_index;
                }
            }
        }
        let touched: Vec<usize> = (0..self.limits.len()).filter(|&i| needs[i] > 0).collect();
        if touched.is_empty() {
            return Ok(Vec::new());
        }
        let event_type = |index: usize| events[first_event[index]].event_type.clone();
        let started_at = Instant::now();
        let mut waited_for = 0u64;
        let mut flagged = vec![0u64; self.limits.len()];
        loop {
            let now = Instant::now();
            let mut storms: Vec<StormStart> = Vec::new();
            let mut refuse: Option<usize> = None;
            let mut wait = Duration::ZERO;
            {
                // Locked in index order, so two requests never deadlock.
                let mut buckets: Vec<MutexGuard<'_, Bucket>> =
                    touched.iter().map(|&i| self.limits[i].lock()).collect();
                for (bucket, &index) in buckets.iter_mut().zip(&touched) {
                    let state = &self.limits[index];
                    bucket.refill(now, &state.limit);
                    let need = needs[index] as f64;
                    if bucket.tokens >= need {
                        continue;
                    }
                    if bucket.note_short(now, state.quiet) {
                        let storm = state.storms.fetch_add(1, Ordering::Relaxed) + 1;
                        storms.push(StormStart {
                            limit_index: index,
                            event_type: event_type(index),
                            storm,
                        });
                    }
                    match state.limit.policy {
                        StormPolicy::Refuse => {
                            refuse.get_or_insert(index);
                        }
                        StormPolicy::Delay { max_wait_ms } => {
                            let missing_s = (need - bucket.tokens) / state.limit.rate_per_s;
                            let until_tokens =
                                Duration::try_from_secs_f64(missing_s).unwrap_or(Duration::MAX);
                            let deadline = started_at + Duration::from_millis(max_wait_ms);
                            let in_time = now
                                .checked_add(until_tokens)
                                .is_some_and(|ready| ready <= deadline);
                            if needs[index] > state.limit.burst || !in_time {
                                refuse.get_or_insert(index);
                            } else {
                                wait = wait.max(until_tokens);
                                waited_for |= 1 << index;
                            }
                        }
                        StormPolicy::Flag => {}
                    }
                }
                if refuse.is_none() && wait.is_zero() {
                    for (bucket, &index) in buckets.iter_mut().zip(&touched) {
                        let need = needs[index] as f64;
                        if bucket.tokens >= need {
                            bucket.tokens -= need;
                        } else {
                            // A Flag limit (the others were served above):
                            // the whole tokens there are cover the first
                            // events, the rest are flagged.
                            let available = bucket.tokens.floor();
                            bucket.tokens -= available;
                            flagged[index] = needs[index] - available as u64;
                        }
                    }
                }
            }
            for start in &storms {
                on_storm(
                    &self.limits[start.limit_index].limit,
                    &start.event_type,
                    start.storm,
                );
            }
            if let Some(index) = refuse {
                let state = &self.limits[index];
                state
                    .refused_events
                    .fetch_add(needs[index], Ordering::Relaxed);
                return Err(Error::RateLimited {
                    event_type: event_type(index),
                    pattern: state.limit.pattern.clone(),
                    rate_per_s: state.limit.rate_per_s,
                    burst: state.limit.burst,
                });
            }
            if !wait.is_zero() {
                std::thread::sleep(wait);
                continue;
            }
            break;
        }
        for &index in &touched {
            if waited_for & (1 << index) != 0 {
                self.limits[index]
                    .delayed_events
                    .fetch_add(needs[index], Ordering::Relaxed);
            }
        }
        if flagged.iter().all(|&count| count == 0) {
            return Ok(Vec::new());
        }
        // The last `flagged[i]` events matching limit i carry its mark.
        let mut flags = vec![0u64; events.len()];
        for (index, count) in flagged.iter_mut().enumerate() {
            if *count == 0 {
                continue;
            }
            self.limits[index]
                .flagged_events
                .fetch_add(*count, Ordering::Relaxed);
            for (event_index, mask) in masks.iter().enumerate().rev() {
                if *count == 0 {
                    break;
                }
                if mask & (1 << index) != 0 {
                    flags[event_index] |= 1 << index;
                    *count -= 1;
                }
            }
        }
        Ok(flags)
    }

    fn stats(&self) -> Vec<RateLimitStats> {
        let now = Instant::now();
        self.limits
            .iter()
            .map(|state| {
                let storm_active = state
                    .lock()
                    .last_short_at
                    .is_some_and(|last| now.saturating_duration_since(last) < state.quiet);
                RateLimitStats {
                    limit: state.limit.clone(),
                    storms: state.storms.load(Ordering::Relaxed),
                    storm_active,
                    refused_events: state.refused_events.load(Ordering::Relaxed),
                    delayed_events: state.delayed_events.load(Ordering::Relaxed),
                    flagged_events: state.flagged_events.load(Ordering::Relaxed),
                }
            })
            .collect()
    }
}

/// What every append passes before it is encoded: the contracts, then the
/// storm guard.
pub(crate) struct Gate {
    contracts: Contracts,
    storm: StormGuard,
}

impl Gate {
    /// The gate of a log opened with `options` in `dir`: the limits and
    /// contracts given in the options, each list that is empty there taken
    /// from `DIR/evlog.toml` instead (as the retention policy is).
    pub(crate) fn resolve(options: &Options, dir: &Path, storage: &dyn Storage) -> Result<Gate> {
        let mut limits = options.rate_limits.clone();
        let mut contracts = options.contracts.clone();
        if limits.is_empty() || contracts.is_empty() {
            if let Some(config) = crate::config::load_config_with(storage, dir)? {
                if limits.is_empty() {
                    limits = config.rate_limits;
                }
                if contracts.is_empty() {
                    contracts = config.contracts;
                }
            }
        }
        Gate::new(limits, contracts)
    }

    pub(crate) fn new(limits: Vec<RateLimit>, contracts: Vec<Contract>) -> Result<Gate> {
        Ok(Gate {
            contracts: Contracts::new(contracts)?,
            storm: StormGuard::new(limits)?,
        })
    }

    /// Checks a request in the caller's thread: the events to encode
    /// (copies with the flag added where a `Flag` limit marks them), or
    /// the error that refuses the whole request.
    /// Checks contracts and rate limits on `events` (see the module
    /// docs), calling `on_storm` for each storm started.
    /// Whether any rate limit is configured (the append path then
    /// computes each event's mask while it validates and encodes it).
    pub(crate) fn has_limits(&self) -> bool {
        !self.storm.is_empty()
    }

    /// Checks the contracts of every event (no-op without contracts).
    pub(crate) fn check_contracts(&self, events: &[Event]) -> Result<()> {
        if !self.contracts.is_empty() {
            for event in events {
                self.contracts.check_event(event)?;
            }
        }
        Ok(())
    }

    /// The rate limits `event` counts against, one bit per limit.
    pub(crate) fn limit_mask(&self, event: &Event) -> u64 {
        self.storm.mask_of(event)
    }

    /// Takes the tokens of events whose masks are `masks` (from
    /// [`Gate::limit_mask`]), waiting or refusing as the policies say.
    /// Returns the events marked with [`RATE_LIMITED_KEY`] when the Flag
    /// policy flagged some (they must be encoded again), else `None`.
    pub(crate) fn admit_limits(
        &self,
        events: &[Event],
        masks: &[u64],
        on_storm: &mut dyn FnMut(&RateLimit, &str, u64),
    ) -> Result<Option<Vec<Event>>> {
        let flags = self.storm.admit_masks(events, masks, on_storm)?;
        if flags.is_empty() {
            return Ok(None);
        }
        Ok(Some(self.mark(events, &flags)))
    }

    fn mark(&self, events: &[Event], flags: &[u64]) -> Vec<Event> {
        let mut marked = events.to_vec();
        for (event, &mask) in marked.iter_mut().zip(flags) {
            if mask != 0 {
                let index = mask.trailing_zeros() as usize;
                let pattern = self.storm.limits[index].limit.pattern.clone();
                event.metadata.insert(RATE_LIMITED_KEY.to_string(), pattern);
            }
        }
        marked
    }

    pub(crate) fn admit_with<'e>(
        &self,
        events: &'e [Event],
        on_storm: &mut dyn FnMut(&RateLimit, &str, u64),
    ) -> Result<Cow<'e, [Event]>> {
        if self.contracts.is_empty() && self.storm.is_empty() {
            return Ok(Cow::Borrowed(events));
        }
        if !self.contracts.is_empty() {
            for event in events {
                self.contracts.check_event(event)?;
            }
        }
        if self.storm.is_empty() {
            return Ok(Cow::Borrowed(events));
        }
        let flags = self.storm.admit(events, on_storm)?;
        if flags.is_empty() {
            return Ok(Cow::Borrowed(events));
        }
        Ok(Cow::Owned(self.mark(events, &flags)))
    }
}

/// Appends the event that says a storm started. A failure is logged and
/// does not fail the request that found the storm: that request's own
/// answer is what its caller asked for.
/// Appends, through `append`, the one `evlog.storm.detected` event of a
/// storm that just started.
pub(crate) fn append_storm_event(
    limit: &RateLimit,
    event_type: &str,
    storm: u64,
    append: &mut dyn FnMut(Event) -> Result<()>,
) {
    tracing::warn!(
        pattern = %limit.pattern,
        event_type,
        rate_per_s = limit.rate_per_s,
        burst = limit.burst,
        "event storm: rate limit exceeded"
    );
    let payload = serde_json::json!({
        "pattern": limit.pattern,
        "event_type": event_type,
        "policy": limit.policy.name(),
        "rate_per_s": limit.rate_per_s,
        "burst": limit.burst,
        "storm": storm,
    });
    let event = Event::new(STORM_DETECTED_TYPE)
        .entity(STORM_ENTITY_TYPE, limit.pattern.clone())
        .priority(Priority::P1)
        .json_payload(&payload)
        .map(Event::bookkeeping);
    if let Err(error) = event.and_then(append) {
        tracing::warn!(%error, pattern = %limit.pattern, "the storm event was not appended");
    }
}

impl crate::Log {
    /// What each rate limit of the storm guard did since the log was
    /// opened, in the order the limits were given.
    pub fn rate_limit_stats(&self) -> Vec<RateLimitStats> {
        self.gate.storm.stats()
    }

    /// The contracts appends are checked against.
    pub fn contracts(&self) -> impl Iterator<Item = &Contract> {
        self.gate.contracts.contracts()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guard(limits: Vec<RateLimit>) -> StormGuard {
        StormGuard::new(limits).unwrap()
    }

    fn events(event_type: &str, count: usize) -> Vec<Event> {
        (0..count).map(|_| Event::new(event_type)).collect()
    }

    /// Admits and records the storms started.
    fn admit(guard: &StormGuard, events: &[Event], storms: &mut Vec<u64>) -> Result<Vec<u64>> {
        guard.admit(events, &mut |_, _, storm| storms.push(storm))
    }

    #[test]
    fn guard_patterns_match_as_type_matches() {
        let types = [
            "a", "a.b", "a.b.c", "a.b.c.d", "b.a", "a.c", "x.b.c", "ab", "a.bc",
        ];
        for pattern in ["a", "a.b", "a.*", "a.b.*", "*", "*.b", "*.b.*", "a.*.c"] {
            let compiled = TypePattern::new(pattern);
            for event_type in types {
                assert_eq!(
                    compiled.matches(event_type),
                    type_matches(pattern, event_type),
                    "{pattern} vs {event_type}"
                );
            }
        }
        assert!(matches!(TypePattern::new("a.b.*"), TypePattern::Prefix(_)));
        assert!(matches!(TypePattern::new("a.b"), TypePattern::Exact(_)));
    }

    #[test]
    fn guard_refuse_takes_nothing_and_other_types_pass() {
        let g = guard(vec![RateLimit::new("a.*", 0.001, 3)]);
        let mut storms = Vec::new();
        admit(&g, &events("a.x", 2), &mut storms).unwrap();
        // Two more than the one token left: refused whole, nothing taken.
        match admit(&g, &events("a.y", 2), &mut storms) {
            Err(Error::RateLimited {
                event_type,
                pattern,
                burst,
                ..
            }) => {
                assert_eq!(
                    (event_type.as_str(), pattern.as_str(), burst),
                    ("a.y", "a.*", 3)
                );
            }
            other => panic!("{other:?}"),
        }
        admit(&g, &events("a.y", 1), &mut storms).unwrap();
        assert!(admit(&g, &events("a.z", 1), &mut storms).is_err());
        admit(&g, &events("b.x", 100), &mut storms).unwrap();
        // One storm for both refusals.
        assert_eq!(storms, vec![1]);
        let stats = g.stats();
        assert_eq!(stats[0].refused_events, 3);
        assert_eq!(stats[0].storms, 1);
        assert!(stats[0].storm_active);
    }

    #[test]
    fn guard_a_new_storm_starts_after_the_quiet_time() {
        let g = guard(vec![
            RateLimit::new("a", 0.001, 1).storm_quiet(Duration::from_millis(30))
        ]);
        let mut storms = Vec::new();
        admit(&g, &events("a", 1), &mut storms).unwrap();
        for _ in 0..5 {
            assert!(admit(&g, &events("a", 1), &mut storms).is_err());
        }
        assert_eq!(storms, vec![1]);
        std::thread::sleep(Duration::from_millis(60));
        assert!(!g.stats()[0].storm_active);
        assert!(admit(&g, &events("a", 1), &mut storms).is_err());
        assert_eq!(storms, vec![1, 2]);
    }

    #[test]
    fn guard_flag_marks_the_events_beyond_the_tokens() {
        let g = guard(vec![
            RateLimit::new("a", 0.001, 3).policy(StormPolicy::Flag),
            RateLimit::new("b", 0.001, 100),
        ]);
        let mut storms = Vec::new();
        let batch: Vec<Event> = ["a", "b", "a", "a", "b", "a", "a"]
            .iter()
            .map(|t| Event::new(*t))
            .collect();
        let flags = admit(&g, &batch, &mut storms).unwrap();
        // Five "a", three tokens: the last two "a" are flagged.
        assert_eq!(flags, vec![0, 0, 0, 0, 0, 1, 1]);
        assert_eq!(g.stats()[0].flagged_events, 2);
        assert_eq!(storms, vec![1]);
    }

    #[test]
    fn guard_delay_waits_for_tokens_or_refuses_at_once() {
        // 200 tokens a second: 10 missing tokens are 50 ms away.
        let g = guard(vec![
            RateLimit::new("a", 200.0, 10).policy(StormPolicy::Delay { max_wait_ms: 1_000 })
        ]);
        let mut storms = Vec::new();
        admit(&g, &events("a", 10), &mut storms).unwrap();
        let started = Instant::now();
        admit(&g, &events("a", 10), &mut storms).unwrap();
        assert!(
            started.elapsed() >= Duration::from_millis(45),
            "{:?}",
            started.elapsed()
        );
        assert_eq!(g.stats()[0].delayed_events, 10);
        // More than the burst can never be served: refused without waiting
        // (waiting would take the whole second of max_wait_ms).
        let started = Instant::now();
        assert!(admit(&g, &events("a", 11), &mut storms).is_err());
        assert!(started.elapsed() < Duration::from_millis(500));
        // A wait beyond the bound is refused at once too.
        let g = guard(vec![
            RateLimit::new("a", 1.0, 10).policy(StormPolicy::Delay { max_wait_ms: 100 })
        ]);
        admit(&g, &events("a", 10), &mut storms).unwrap();
        assert!(matches!(
            admit(&g, &events("a", 1), &mut storms),
            Err(Error::RateLimited { .. })
        ));
    }

    #[test]
    fn guard_refuses_bad_limits() {
        for (limit, words) in [
            (RateLimit::new("a..b", 1.0, 1), "type pattern"),
            (RateLimit::new("a", 0.0, 1), "positive"),
            (RateLimit::new("a", f64::NAN, 1), "positive"),
            (RateLimit::new("a", f64::INFINITY, 1), "positive"),
            (RateLimit::new("a", 1.0, 0), "burst"),
        ] {
            match StormGuard::new(vec![limit]) {
                Err(error @ Error::InvalidGuard { .. }) => {
                    assert!(error.to_string().contains(words), "{error}")
                }
                Err(other) => panic!("{words}: {other:?}"),
                Ok(_) => panic!("{words}: accepted"),
            }
        }
        let too_many = (0..=RATE_LIMITS_MAX)
            .map(|i| RateLimit::new(format!("t{i}"), 1.0, 1))
            .collect();
        assert!(StormGuard::new(too_many).is_err());
    }

    #[test]
    fn guard_skips_bookkeeping_events() {
        let g = guard(vec![RateLimit::new("*", 0.001, 1)]);
        let mut storms = Vec::new();
        let own: Vec<Event> = (0..5)
            .map(|_| Event::new("evlog.x").bookkeeping())
            .collect();
        admit(&g, &own, &mut storms).unwrap();
        admit(&g, &events("a", 1), &mut storms).unwrap();
        assert!(storms.is_empty());
    }
}
