//! Live subscriptions: history first, then live events, in sequence
//! order, each matching event exactly once, with no gap at the switch.
//!
//! A subscription is a cursor over sequence numbers: "the next seq after
//! the last one examined" is its whole state, and since sequence numbers
//! are gap-free and assigned by the writer alone, no event can be skipped
//! or seen twice as long as every delivery goes through that number. While
//! it is behind, it reads the log itself, in order like `iter`. Once it
//! has caught up, and another subscription is live, the `evlog:dispatch`
//! thread (`dispatch.rs`) reads new records once for all of them and keeps
//! the newest in a window shared by all, listing for each subscriber the
//! events it wants; a subscriber takes from there only events at or past
//! its next seq, and the window drops its oldest events instead of waiting
//! for anyone: a subscriber that fell behind it reads the log itself
//! again. So there is nobody to drop, appends never wait for a subscriber,
//! and its memory is bounded by its share of the window
//! (`Options::subscription_queue_bytes`) and one chunk of it, plus one
//! record and the iterator's read buffer.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use uuid::Uuid;

use crate::dispatch::{Dispatch, Next, Slot};
use crate::error::{CorruptKind, Error, Result};
use crate::event::{type_matches, Entity, LoggedEvent, Priority};
use crate::log::{Iter, Shared};
use crate::options::Durability;
use crate::query::{validate_pattern, Query};
use crate::record::body_view;
use crate::watermark::{WaitOutcome, Watermark};

/// How long a caught-up subscriber waits for the dispatcher to move while
/// events are visible before it reads them itself: a dispatcher that is
/// stuck (or starved of CPU) delays delivery by at most this much. The
/// dispatcher runs in the idle scheduling class, which a machine whose
/// cores are all busy starves for as long as they stay busy. Not shorter:
/// under heavy appends on two cores the dispatcher also goes tens of
/// milliseconds without a core, and sixteen subscribers that then read
/// the log themselves cost the appends far more than the wait (with 50 ms,
/// A2 with 16 filtered subscribers fell to 0.5x of A2 alone in the rounds
/// where that happened).
const DISPATCH_PATIENCE: Duration = Duration::from_secs(1);

/// After the dispatcher kept it waiting a whole `DISPATCH_PATIENCE` with
/// events visible, a subscriber reads the log itself (waking on the
/// watermark like a lone subscription) for this long before it waits on
/// the dispatcher again. A machine whose cores are all busy starves the
/// dispatcher for as long as it stays busy; without this, every new event
/// would wait a whole patience there.
const STALLED_DISPATCHER_BYPASS: Duration = Duration::from_secs(10);

/// Event types under this prefix are the log's own bookkeeping (durable
/// consumers' commits); a filter delivers them only when one of its
/// patterns names this namespace explicitly.
pub const BOOKKEEPING_TYPE_PREFIX: &str = "evlog.";

/// Which events a subscription delivers. Every condition set must hold;
/// several type patterns match when any of them does.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Filter {
    patterns: Vec<String>,
    entity: Option<Entity>,
    correlation: Option<Uuid>,
    min_priority: Option<Priority>,
}

impl Filter {
    /// Every event (but the log's bookkeeping).
    pub fn all() -> Filter {
        Filter::default()
    }

    /// Adds a dotted type pattern (the rules of [`crate::type_matches`]).
    pub fn event_type(mut self, pattern: impl Into<String>) -> Filter {
        self.patterns.push(pattern.into());
        self
    }

    /// Only events of this entity.
    pub fn entity(
        mut self,
        entity_type: impl Into<String>,
        entity_id: impl Into<String>,
    ) -> Filter {
        self.entity = Some(Entity {
            entity_type: entity_type.into(),
            entity_id: entity_id.into(),
        });
        self
    }

    /// Only events of this correlation id.
    pub fn correlation(mut self, id: Uuid) -> Filter {
        self.correlation = Some(id);
        self
    }

    /// Only events at least this important (`P1`: `P0` and `P1`).
    pub fn min_priority(mut self, priority: Priority) -> Filter {
        self.min_priority = Some(priority);
        self
    }

    pub(crate) fn validate(&self) -> Result<()> {
        self.patterns.iter().try_for_each(|p| validate_pattern(p))
    }

    /// Whether `event` passes the filter.
    pub fn matches(&self, event: &LoggedEvent) -> bool {
        self.matches_fields(
            &event.event_type,
            event
                .entity
                .as_ref()
                .map(|e| (e.entity_type.as_str(), e.entity_id.as_str())),
            event.correlation_id,
            event.priority,
        )
    }

    /// Whether the event encoded in `body` passes the filter, read without
    /// decoding (or allocating) its payload: a subscriber examines every
    /// event of the log and decodes only those it delivers.
    pub(crate) fn matches_body(&self, body: &[u8]) -> std::result::Result<bool, CorruptKind> {
        let view = body_view(body)?;
        Ok(self.matches_fields(
            view.event_type,
            view.entity,
            view.correlation_id,
            view.priority,
        ))
    }

    fn matches_fields(
        &self,
        event_type: &str,
        entity: Option<(&str, &str)>,
        correlation_id: Option<Uuid>,
        priority: Priority,
    ) -> bool {
        self.matches_type(event_type) && self.matches_besides_type(entity, correlation_id, priority)
    }

    /// The part of the filter that depends on the event type alone (the
    /// dispatcher remembers it per type).
    pub(crate) fn matches_type(&self, event_type: &str) -> bool {
        if event_type.starts_with(BOOKKEEPING_TYPE_PREFIX)
            && !self
                .patterns
                .iter()
                .any(|p| p.starts_with(BOOKKEEPING_TYPE_PREFIX))
        {
            return false;
        }
        self.patterns.is_empty() || self.patterns.iter().any(|p| type_matches(p, event_type))
    }

    /// The rest of the filter: entity, correlation and priority.
    pub(crate) fn matches_besides_type(
        &self,
        entity: Option<(&str, &str)>,
        correlation_id: Option<Uuid>,
        priority: Priority,
    ) -> bool {
        if let Some(wanted) = &self.entity {
            if entity != Some((wanted.entity_type.as_str(), wanted.entity_id.as_str())) {
                return false;
            }
        }
        if self.correlation.is_some() && correlation_id != self.correlation {
            return false;
        }
        self.min_priority.is_none_or(|min| priority <= min)
    }
}

/// Where a subscription starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// The first event of the log.
    Beginning,
    /// After the last event visible now: new events only.
    End,
    /// At this sequence number (clamped to the log's first).
    Seq(u64),
    /// At the first event, in sequence order, whose timestamp is at or
    /// after this one (microseconds since the Unix epoch); every matching
    /// event from there on is delivered, whatever its own timestamp.
    Time(i64),
    /// The last matching event of each entity (in sequence order), then
    /// live events. Events without an entity are left out of the history.
    LatestPerEntity,
}

/// Where a subscriber stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    /// Every event up to this seq has been examined (delivered when it
    /// matched). 0 before the first.
    pub position: u64,
    /// The last event it may deliver now (the durable end of the log, or
    /// under `OsBuffered` the written end).
    pub log_end: u64,
}

impl Progress {
    /// Nothing visible is left to examine.
    pub fn caught_up(&self) -> bool {
        self.position >= self.log_end
    }
}

/// A subscription: call [`Subscription::next_timeout`] (or iterate, which
/// blocks until an event comes or the log closes).
pub struct Subscription {
    shared: Arc<Shared>,
    filter: Filter,
    /// Next seq to examine.
    next_seq: u64,
    /// The watermark that bounds delivery.
    visible: Watermark,
    iter: Option<Iter>,
    /// `LatestPerEntity`: the history still to deliver.
    history: VecDeque<u64>,
    /// Its place in the log's dispatcher, which reads new records once for
    /// every caught-up subscriber; `None`: it always reads the log itself.
    slot: Option<Arc<Slot>>,
    /// Events taken from the dispatcher's window in one go, still to
    /// deliver.
    taken: VecDeque<Arc<LoggedEvent>>,
    /// When the dispatcher last kept it waiting a whole patience with
    /// events visible (see `STALLED_DISPATCHER_BYPASS`).
    dispatcher_stalled_at: Option<Instant>,
}

/// What is left until `deadline`; `None` (a timeout too large for
/// `Instant`) waits in steps of an hour.
fn time_left(deadline: Option<Instant>) -> Duration {
    match deadline {
        Some(deadline) => deadline.saturating_duration_since(Instant::now()),
        None => Duration::from_secs(3600),
    }
}

/// The watermark that bounds what subscribers see, by durability: what a
/// subscriber saw must stay true after a power cut, so under `Always` and
/// `Interval` only durable events are delivered. Under `OsBuffered`,
/// which accepts losing recent events to a power cut, delivery follows the
/// written end.
pub(crate) fn visible_watermark(options: &crate::options::Options) -> Watermark {
    match options.get_durability() {
        Durability::OsBuffered => Watermark::Published,
        Durability::Always | Durability::Interval(_) => Watermark::Durable,
    }
}

impl Subscription {
    pub(crate) fn new(shared: Arc<Shared>, filter: Filter, start: Start) -> Result<Subscription> {
        filter.validate()?;
        shared.check_poison()?;
        let visible = visible_watermark(&shared.options);
        // A subscription that starts at the end joins the dispatcher at
        // once; the others when their own reads have caught up.
        let attach_from = match start {
            Start::End | Start::LatestPerEntity => Some(shared.marks.seq(visible) + 1),
            Start::Beginning | Start::Seq(_) | Start::Time(_) => None,
        };
        let slot = Dispatch::register(&shared, filter.clone(), attach_from);
        let mut subscription = Subscription {
            shared,
            filter,
            next_seq: 1,
            visible,
            iter: None,
            history: VecDeque::new(),
            slot,
            taken: VecDeque::new(),
            dispatcher_stalled_at: None,
        };
        subscription.next_seq = subscription.first_seq();
        match start {
            Start::Beginning => {}
            Start::End => subscription.next_seq = subscription.log_end() + 1,
            Start::Seq(seq) => subscription.next_seq = seq.max(subscription.first_seq()),
            Start::Time(timestamp_us) => {
                let end = subscription.log_end();
                let first_at_or_after = subscription
                    .shared
                    .query(&Query::all().since(timestamp_us).limit(1))?
                    .next()
                    .transpose()?
                    .map(|event| event.seq)
                    .filter(|&seq| seq <= end);
                subscription.next_seq = first_at_or_after.unwrap_or(end + 1);
            }
            Start::LatestPerEntity => {
                let end = subscription.log_end();
                let first = subscription.first_seq();
                let mut latest: HashMap<Entity, u64> = HashMap::new();
                if first <= end {
                    for event in subscription.shared.iter(first..=end)? {
                        let event = event?;
                        if let Some(entity) = &event.entity {
                            if subscription.filter.matches(&event) {
                                latest.insert(entity.clone(), event.seq);
                            }
                        }
                    }
                }
                let mut seqs: Vec<u64> = latest.into_values().collect();
                seqs.sort_unstable();
                subscription.history = seqs.into();
                subscription.next_seq = end + 1;
            }
        }
        Ok(subscription)
    }

    fn first_seq(&self) -> u64 {
        self.shared.first_seq.load(Ordering::Acquire).max(1)
    }

    fn log_end(&self) -> u64 {
        self.shared.marks.seq(self.visible)
    }

    /// Where the subscriber stands.
    pub fn progress(&self) -> Progress {
        // A `LatestPerEntity` history still to deliver is not examined yet.
        let position = match self.history.front() {
            Some(&seq) => seq - 1,
            None => self.next_seq - 1,
        };
        Progress {
            position,
            log_end: self.log_end(),
        }
    }

    /// The next matching event, waiting up to `timeout` for one;
    /// `Ok(None)` when the timeout passed first. `Err(Error::Closed)` once
    /// the log is closed and every visible event was examined.
    ///
    /// A caught-up subscriber receives new events from the `evlog:dispatch`
    /// thread, which runs in the idle scheduling class so that appending
    /// keeps the processor: on a saturated machine an event may be visible
    /// (`progress().log_end` past it) yet still on its way when the timeout
    /// passes. A subscriber that waits a whole second while events are
    /// visible and the dispatcher does not move reads the log itself, and
    /// goes on doing so for ten seconds before it relies on the dispatcher
    /// again. A zero timeout ([`Self::try_next`]) always returns a visible
    /// matching event.
    pub fn next_timeout(&mut self, timeout: Duration) -> Result<Option<LoggedEvent>> {
        Ok(self
            .next_shared_timeout(timeout)?
            .map(|event| Arc::try_unwrap(event).unwrap_or_else(|shared| (*shared).clone())))
    }

    /// Like [`Self::next_timeout`], without copying an event that other
    /// subscribers also receive: the log decodes each new event once for
    /// every caught-up subscriber, and this hands out that one copy.
    pub fn next_shared_timeout(&mut self, timeout: Duration) -> Result<Option<Arc<LoggedEvent>>> {
        if let Some(event) = self.next_taken() {
            return Ok(Some(event));
        }
        let deadline = Instant::now().checked_add(timeout);
        // Whether the dispatcher served this slot during the last wait.
        let mut last_wait_progressed: Option<bool> = None;
        loop {
            if let Some(seq) = self.history.pop_front() {
                return self.shared.get(seq).map(|event| Some(Arc::new(event)));
            }
            if let Some(iter) = self.iter.as_mut() {
                let filter = &self.filter;
                match iter.next_matching(&mut |_, body| filter.matches_body(body)) {
                    Some(Ok(event)) => {
                        self.next_seq = event.seq + 1;
                        return Ok(Some(Arc::new(event)));
                    }
                    Some(Err(e)) => {
                        self.iter = None;
                        return Err(e);
                    }
                    None => {
                        // Past every event it examined, matching or not.
                        self.next_seq = self.next_seq.max(iter.next_seq_to_examine());
                        self.iter = None;
                    }
                }
            }
            if let Some(event) = self.next_taken() {
                return Ok(Some(event));
            }
            let mut end = self.log_end();
            let bypass = self
                .dispatcher_stalled_at
                .is_some_and(|at| at.elapsed() < STALLED_DISPATCHER_BYPASS);
            if let (Some(slot), false) = (&self.slot, bypass) {
                match slot.next(
                    &self.shared.dispatch,
                    &mut self.next_seq,
                    end,
                    self.shared.dispatch.shares(),
                ) {
                    Next::Events(events) => {
                        self.taken = events;
                        continue;
                    }
                    Next::ReadUpTo(seq) => end = end.min(seq),
                    Next::ReadItself => {}
                    Next::Wait => {
                        let left = time_left(deadline);
                        if left.is_zero() {
                            if self.next_seq > end {
                                return Ok(None);
                            }
                            // Out of time with events visible that the
                            // dispatcher has not reached. It runs in the
                            // idle scheduling class, so on a busy machine it
                            // trails the appends: if it moved during the
                            // last wait, they are on their way. A call that
                            // did not wait (`try_next`) reads them itself
                            // (it later skips them in the window).
                            if last_wait_progressed == Some(true) {
                                return Ok(None);
                            }
                        } else {
                            let before = slot.batches();
                            slot.wait(self.next_seq, left.min(DISPATCH_PATIENCE));
                            if slot.is_gone() {
                                // The dispatcher stopped: the log closed, or
                                // its read failed. Read the log itself from
                                // here, which reports either.
                                self.slot = None;
                                continue;
                            }
                            let progressed = slot.batches() != before;
                            last_wait_progressed = Some(progressed);
                            end = self.log_end();
                            if progressed || self.next_seq > end {
                                continue;
                            }
                            // Visible events, and the dispatcher did not
                            // move for a whole step: read them itself, and
                            // for a while on.
                            self.dispatcher_stalled_at = Some(Instant::now());
                        }
                    }
                }
            }
            if self.next_seq <= end {
                self.iter = Some(self.shared.iter(self.next_seq..=end)?);
                continue;
            }
            let left = time_left(deadline);
            if left.is_zero() {
                return Ok(None);
            }
            match self.shared.marks.wait(self.visible, self.next_seq, left) {
                WaitOutcome::Reached(_) => {}
                WaitOutcome::TimedOut(_) => return Ok(None),
                WaitOutcome::Stopped(_) => {
                    if self.next_seq <= self.log_end() {
                        continue;
                    }
                    self.shared.check_poison()?;
                    return Err(Error::Closed);
                }
            }
        }
    }

    /// The next event taken from the dispatcher's window, skipping those
    /// its own reads examined already.
    fn next_taken(&mut self) -> Option<Arc<LoggedEvent>> {
        while let Some(event) = self.taken.pop_front() {
            if event.seq >= self.next_seq {
                self.next_seq = event.seq + 1;
                return Some(event);
            }
        }
        None
    }

    /// Makes `seq` the next seq to examine again (a durable consumer's
    /// redelivery of an event its handler failed).
    pub(crate) fn rewind_to(&mut self, seq: u64) {
        self.next_seq = seq;
        self.iter = None;
        self.taken.clear();
        if let Some(slot) = &self.slot {
            slot.reset();
        }
    }

    /// The next matching event if one is visible now, without waiting.
    pub fn try_next(&mut self) -> Result<Option<LoggedEvent>> {
        self.next_timeout(Duration::ZERO)
    }
}

impl Iterator for Subscription {
    type Item = Result<LoggedEvent>;

    /// Blocks until the next matching event; ends when the log closes.
    fn next(&mut self) -> Option<Result<LoggedEvent>> {
        loop {
            match self.next_timeout(Duration::from_secs(3600)) {
                Ok(Some(event)) => return Some(Ok(event)),
                Ok(None) => continue,
                Err(Error::Closed) => return None,
                Err(e) => return Some(Err(e)),
            }
        }
    }
}

/// A subscription whose events a handler receives on its own thread
/// (`evlog:sub:<name>`), from [`crate::Log::subscribe_with`].
pub struct SubscriptionHandle {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<Result<()>>>,
}

/// How often a handler thread looks at its stop flag while it waits.
const HANDLER_POLL: Duration = Duration::from_millis(50);

impl SubscriptionHandle {
    pub(crate) fn spawn(
        name: &str,
        mut subscription: Subscription,
        mut handler: impl FnMut(LoggedEvent) + Send + 'static,
    ) -> Result<SubscriptionHandle> {
        let stop = Arc::new(AtomicBool::new(false));
        let thread_stop = Arc::clone(&stop);
        let dir = subscription.shared.dir.clone();
        let thread = std::thread::Builder::new()
            .name(format!("evlog:sub:{name}"))
            .spawn(move || {
                while !thread_stop.load(Ordering::Acquire) {
                    match subscription.next_timeout(HANDLER_POLL) {
                        Ok(Some(event)) => {
                            // A handler that panics ends its subscription,
                            // not the log, and `unsubscribe` reports it.
                            let outcome =
                                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                                    handler(event)
                                }));
                            if let Err(panic) = outcome {
                                return Err(Error::HandlerPanicked(panic_message(&*panic)));
                            }
                        }
                        Ok(None) => {}
                        Err(Error::Closed) => return Ok(()),
                        Err(e) => return Err(e),
                    }
                }
                Ok(())
            })
            .map_err(|source| Error::Io { path: dir, source })?;
        Ok(SubscriptionHandle {
            stop,
            thread: Some(thread),
        })
    }

    /// Whether the handler thread has ended (the log closed, the handler
    /// panicked, or a read failed).
    pub fn is_finished(&self) -> bool {
        self.thread.as_ref().is_none_or(|t| t.is_finished())
    }

    /// Stops delivery (after the event being handled, if any) and waits for
    /// the thread; returns why it ended if that was an error or a panic.
    pub fn unsubscribe(mut self) -> Result<()> {
        self.stop.store(true, Ordering::Release);
        match self.thread.take() {
            Some(thread) => thread
                .join()
                .unwrap_or_else(|panic| Err(Error::HandlerPanicked(panic_message(&*panic)))),
            None => Ok(()),
        }
    }
}

impl Drop for SubscriptionHandle {
    /// Asks the thread to stop; does not wait (a handler may be slow).
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
    }
}

pub(crate) fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Event;
    use proptest::prelude::*;

    const TYPES: [&str; 5] = [
        "validation.check.failed",
        "agent.error.raised",
        "evlog.consumer.commit",
        "session.opened",
        "a",
    ];
    const PATTERNS: [&str; 6] = [
        "validation.*",
        "*.error.*",
        "evlog.*",
        "session.opened",
        "a",
        "*",
    ];

    // A live subscriber that reads nothing while far more than its share
    // of the window is appended: the dispatcher keeps at most
    // `subscription_queue_bytes` per attached subscriber, drops its oldest
    // chunks instead of growing or waiting, and the subscriber then gets
    // every event exactly once, in order, part from its own reads and the
    // rest from the window.
    #[test]
    fn a_paused_live_subscriber_falls_behind_the_window_and_misses_nothing() {
        const QUEUE_BYTES: u64 = 64 * 1024;
        const EVENTS: u64 = 4_000;
        let log = crate::Log::open_temporary(
            crate::Options::default()
                .durability(Durability::OsBuffered)
                .secondary_indexes(false)
                .subscription_queue_bytes(QUEUE_BYTES),
        )
        .unwrap();
        // A second subscription: one alone reads the log itself.
        let _other = log
            .subscribe(Filter::all().event_type("other.*"), Start::End)
            .unwrap();
        let mut sub = log.subscribe(Filter::all(), Start::End).unwrap();
        let slot = Arc::clone(sub.slot.as_ref().expect("a log's subscription has a slot"));
        let dispatch = &log.shared.dispatch;
        // Two attached subscribers; a chunk may pass the bound only when
        // it alone is the window.
        let window_bytes_max = 2 * QUEUE_BYTES;
        let pad = "p".repeat(300);
        for batch in 0..EVENTS / 500 {
            let events: Vec<Event> = (0..500)
                .map(|i| {
                    Event::new("bulk.item")
                        .metadata("n", (batch * 500 + i + 1).to_string())
                        .metadata("pad", pad.clone())
                })
                .collect();
            log.append_batch(&events).unwrap();
            let window = dispatch.window_state();
            assert!(window.bytes <= window_bytes_max, "{window:?}");
        }
        // The dispatcher gets there on its own time.
        let deadline = Instant::now() + Duration::from_secs(30);
        while dispatch.window_state().examined_through < EVENTS {
            assert!(Instant::now() < deadline, "{:?}", dispatch.window_state());
            std::thread::sleep(Duration::from_millis(5));
        }
        let window = dispatch.window_state();
        assert!(slot.is_attached());
        assert!(window.bytes <= window_bytes_max, "{window:?}");
        // 1.4 MB of events: most chunks were dropped, the newest kept.
        assert!(window.chunks > 0 && window.first_from > 1, "{window:?}");
        for seq in 1..=EVENTS {
            let event = sub.try_next().unwrap().expect("every event delivered");
            assert_eq!(event.seq, seq);
            assert_eq!(event.metadata["n"], seq.to_string());
        }
        assert_eq!(sub.try_next().unwrap(), None);
        assert!(sub.progress().caught_up());
        // Still attached: new events come from the window.
        for (seq, event_type) in [(EVENTS + 1, "bulk.after"), (EVENTS + 2, "bulk.last")] {
            log.append(Event::new(event_type)).unwrap();
            let event = sub.next_timeout(Duration::from_secs(10)).unwrap().unwrap();
            assert_eq!((event.seq, event.event_type.as_str()), (seq, event_type));
        }
        assert!(slot.is_attached());
        log.close().unwrap();
    }

    /// A log (`OsBuffered`, with or without its indexes) with two
    /// subscriptions from its end, both caught up and served one event
    /// ("a.served") by the dispatcher.
    fn two_served_subscribers(secondary_indexes: bool) -> (crate::Log, [Subscription; 2]) {
        let log = crate::Log::open_temporary(
            crate::Options::default()
                .durability(Durability::OsBuffered)
                .secondary_indexes(secondary_indexes),
        )
        .unwrap();
        let mut subs = [(); 2].map(|()| log.subscribe(Filter::all(), Start::End).unwrap());
        for sub in &mut subs {
            assert_eq!(sub.try_next().unwrap(), None);
        }
        log.append(Event::new("a.served")).unwrap();
        for sub in &mut subs {
            let event = sub.next_timeout(Duration::from_secs(10)).unwrap().unwrap();
            assert_eq!(event.event_type, "a.served");
        }
        (log, subs)
    }

    // A dispatcher that stands still (in the idle scheduling class, on a
    // machine whose cores are all busy) delays its subscribers once by
    // about `DISPATCH_PATIENCE`; then they read the log themselves and wait
    // on the watermark, not on the dispatcher, for a while.
    #[test]
    fn a_stalled_dispatcher_delays_delivery_once_by_its_patience() {
        let (log, mut subs) = two_served_subscribers(false);
        let dispatch = &log.shared.dispatch;
        dispatch.stall.store(true, Ordering::SeqCst);
        let stalled_at = Instant::now();
        for round in 0..4u64 {
            log.append(Event::new("a.stalled")).unwrap();
            for sub in &mut subs {
                // Without the patience the wait ends empty after 20 s.
                let event = sub.next_timeout(Duration::from_secs(20)).unwrap().unwrap();
                assert_eq!(
                    (event.seq, event.event_type.as_str()),
                    (round + 2, "a.stalled")
                );
            }
        }
        // One patience per subscriber in the first round, the next rounds
        // at once: about 2 s, with room for a loaded machine; a patience
        // per subscriber and round would be 8 s, and a wait for the
        // stalled dispatcher 20 s.
        assert!(
            stalled_at.elapsed() < Duration::from_secs(5),
            "{:?}",
            stalled_at.elapsed()
        );
        dispatch.stall.store(false, Ordering::SeqCst);
        log.append(Event::new("a.resumed")).unwrap();
        for sub in &mut subs {
            let event = sub.next_timeout(Duration::from_secs(10)).unwrap().unwrap();
            assert_eq!((event.seq, event.event_type.as_str()), (6, "a.resumed"));
            assert_eq!(sub.try_next().unwrap(), None);
        }
        log.close().unwrap();
    }

    // While the dispatcher is behind, the indexer leaves it the core, but
    // for `REST_MAX` at most at a time: a dispatcher that never moves (one
    // starved by other processes) delays the indexes, never stops them.
    #[test]
    fn the_indexer_rests_while_the_dispatcher_is_behind_but_not_for_good() {
        let (log, mut subs) = two_served_subscribers(true);
        let dispatch = &log.shared.dispatch;
        let indexed_all = |log: &crate::Log| log.index_status().available && log.index_lag() == 0;
        let deadline = Instant::now() + Duration::from_secs(20);
        while !indexed_all(&log) {
            assert!(
                Instant::now() < deadline,
                "the first event was never indexed"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        dispatch.stall.store(true, Ordering::SeqCst);
        // The dispatcher wakes for this one and stands still at its batch.
        log.append(Event::new("a.first")).unwrap();
        std::thread::sleep(Duration::from_millis(50));
        let many: Vec<Event> = (0..5_000).map(|_| Event::new("a.many")).collect();
        log.append_batch(&many).unwrap();
        let appended_at = Instant::now();
        assert!(dispatch.behind(log.shared.marks.last_seq()) > 5_000);
        std::thread::sleep(Duration::from_millis(200));
        assert!(
            log.index_lag() >= 5_000,
            "the indexer did not rest: lag {}",
            log.index_lag()
        );
        while !indexed_all(&log) {
            assert!(
                appended_at.elapsed() < Duration::from_secs(10),
                "the indexer rested for good: lag {}",
                log.index_lag()
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(appended_at.elapsed() >= Duration::from_millis(400));
        dispatch.stall.store(false, Ordering::SeqCst);
        for sub in &mut subs {
            let seqs: Vec<u64> = (0..5_001)
                .map(|_| {
                    sub.next_timeout(Duration::from_secs(10))
                        .unwrap()
                        .unwrap()
                        .seq
                })
                .collect();
            assert_eq!(seqs, (2..=5_002).collect::<Vec<u64>>());
        }
        log.close().unwrap();
    }

    // A panic in the dispatcher does not strand its subscribers: they go
    // back to reading the log themselves and miss nothing.
    #[test]
    fn subscribers_outlive_a_dispatcher_panic() {
        // Both caught up and attached, after one batch of the dispatcher's.
        let (log, mut subs) = two_served_subscribers(false);
        let slot = Arc::clone(subs[1].slot.as_ref().unwrap());
        log.shared
            .dispatch
            .panic_next_batch
            .store(true, Ordering::SeqCst);
        log.append_batch(&[Event::new("a.during"), Event::new("a.after")])
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        while !slot.is_gone() {
            assert!(Instant::now() < deadline, "the panic was not caught");
            std::thread::sleep(Duration::from_millis(5));
        }
        // A dispatcher that is gone holds the indexer back no more.
        assert_eq!(log.shared.dispatch.behind(1_000_000), 0);
        for sub in &mut subs {
            for expected in ["a.during", "a.after"] {
                let event = sub.next_timeout(Duration::from_secs(10)).unwrap().unwrap();
                assert_eq!(event.event_type, expected);
            }
            assert_eq!(sub.try_next().unwrap(), None);
        }
        log.close().unwrap();
    }

    fn priority(index: u8) -> Priority {
        [Priority::P0, Priority::P1, Priority::P2, Priority::P3][usize::from(index % 4)]
    }

    // A subscriber decides on the encoded body what it would decide on the
    // decoded event, for every kind of condition and their mixes.
    proptest! {
        #[test]
        fn matches_body_agrees_with_matches(
            type_index in 0usize..TYPES.len(),
            entity in proptest::option::of((0u8..2, 0u8..2)),
            correlation in proptest::option::of(0u8..2),
            event_priority in 0u8..4,
            patterns in proptest::collection::vec(0usize..PATTERNS.len(), 0..3),
            wanted_entity in proptest::option::of((0u8..2, 0u8..2)),
            wanted_correlation in proptest::option::of(0u8..2),
            min_priority in proptest::option::of(0u8..4),
        ) {
            let mut event = Event::new(TYPES[type_index]).priority(priority(event_priority));
            if let Some((kind, id)) = entity {
                event = event.entity(format!("kind{kind}"), format!("id{id}"));
            }
            if let Some(c) = correlation {
                event = event.correlation_id(Uuid::from_u128(u128::from(c) + 1));
            }
            let mut filter = Filter::all();
            for p in patterns {
                filter = filter.event_type(PATTERNS[p]);
            }
            if let Some((kind, id)) = wanted_entity {
                filter = filter.entity(format!("kind{kind}"), format!("id{id}"));
            }
            if let Some(c) = wanted_correlation {
                filter = filter.correlation(Uuid::from_u128(u128::from(c) + 1));
            }
            if let Some(p) = min_priority {
                filter = filter.min_priority(priority(p));
            }
            let mut body = Vec::new();
            crate::record::encode_body(&event, Uuid::from_u128(7), 1_000, &mut body);
            let decoded = crate::record::decode_body(1, &body).expect("decode");
            prop_assert_eq!(filter.matches_body(&body).expect("fields"), filter.matches(&decoded));
        }
    }

    // A damaged body is an error, never a silent "no match".
    #[test]
    fn matches_body_refuses_a_truncated_body() {
        let mut body = Vec::new();
        crate::record::encode_body(&Event::new("a.b"), Uuid::from_u128(7), 1, &mut body);
        assert!(Filter::all().matches_body(&body[..10]).is_err());
    }
}
