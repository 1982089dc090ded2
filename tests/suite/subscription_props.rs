//! Subscriptions against a brute-force model: random appends (single and
//! batched), random filters and starts, readers at random speeds, and
//! close/reopen of the log, checked after every step.
//!
//! The truth is computed from what `log.iter(..)` reads back and a matcher
//! written here from the documented rules (not `Filter::matches`), so a
//! bug shared by the filter and the subscription cannot hide itself.

use std::path::Path;
use std::time::{Duration, Instant};

use evlog::{Durability, Event, Filter, Log, LoggedEvent, Options, Priority, Start, Subscription};
use proptest::prelude::*;
use uuid::Uuid;

use crate::common::tempdir;

const TYPES: &[&str] = &["a.b", "a.b.c", "a.c", "x.y", "x.y.z", "job"];
const PATTERNS: &[&str] = &["a.*", "a.b", "*.y", "x.*", "*.b.*", "job", "*", "a.*.c"];
const ENTITY_TYPES: &[&str] = &["task", "user"];
const PRIORITIES: [Priority; 4] = [Priority::P0, Priority::P1, Priority::P2, Priority::P3];
/// Explicit timestamps are small and unordered, so `Start::Time` has to
/// find the first event in sequence order, not the earliest one; events
/// without one get the wall clock, far above these.
const TS_RANGE: i64 = 50;

#[derive(Debug, Clone)]
struct EventSpec {
    type_ix: usize,
    entity: Option<(usize, u8)>,
    correlation: Option<u8>,
    priority: usize,
    timestamp: Option<i64>,
}

#[derive(Debug, Clone)]
struct FilterSpec {
    patterns: Vec<usize>,
    entity: Option<(usize, u8)>,
    correlation: Option<u8>,
    min_priority: Option<usize>,
}

#[derive(Debug, Clone, Copy)]
enum StartSpec {
    Beginning,
    End,
    Seq(u64),
    Time(i64),
    LatestPerEntity,
}

#[derive(Debug, Clone, Copy)]
enum Read {
    /// `next_timeout(0)` this many times (0: the reader is idle).
    Polls(u8),
    /// Until `next_timeout(0)` says nothing is left.
    Drain,
    /// One `next_timeout` with a long timeout, only when the model says a
    /// matching event is visible (so it must return at once).
    Wait,
}

#[derive(Debug, Clone)]
enum Op {
    Append(EventSpec),
    Batch(Vec<EventSpec>),
    Subscribe(FilterSpec, StartSpec),
    Read(usize, Read),
    Reopen,
    /// Drops a subscription (the dispatcher forgets its slot; a new one
    /// may take its place with another filter).
    Unsubscribe(usize),
}

fn correlation_id(k: u8) -> Uuid {
    Uuid::from_u128(0xC0 + u128::from(k))
}

fn event_strategy() -> impl Strategy<Value = EventSpec> {
    (
        0..TYPES.len(),
        prop::option::of((0..ENTITY_TYPES.len(), 0u8..3)),
        prop::option::of(0u8..3),
        0..4usize,
        prop::option::weighted(0.5, 0..TS_RANGE),
    )
        .prop_map(
            |(type_ix, entity, correlation, priority, timestamp)| EventSpec {
                type_ix,
                entity,
                correlation,
                priority,
                timestamp,
            },
        )
}

fn filter_strategy() -> impl Strategy<Value = FilterSpec> {
    (
        prop::collection::vec(0..PATTERNS.len(), 0..3),
        prop::option::weighted(0.3, (0..ENTITY_TYPES.len(), 0u8..3)),
        prop::option::weighted(0.3, 0u8..3),
        prop::option::weighted(0.3, 0..4usize),
    )
        .prop_map(|(patterns, entity, correlation, min_priority)| FilterSpec {
            patterns,
            entity,
            correlation,
            min_priority,
        })
}

fn start_strategy() -> impl Strategy<Value = StartSpec> {
    prop_oneof![
        Just(StartSpec::Beginning),
        Just(StartSpec::End),
        (0u64..120).prop_map(StartSpec::Seq),
        prop_oneof![(-5..TS_RANGE + 5), Just(i64::MAX / 2)].prop_map(StartSpec::Time),
        Just(StartSpec::LatestPerEntity),
    ]
}

fn op_strategy() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => event_strategy().prop_map(Op::Append),
        3 => prop::collection::vec(event_strategy(), 1..12).prop_map(Op::Batch),
        2 => (filter_strategy(), start_strategy()).prop_map(|(f, s)| Op::Subscribe(f, s)),
        6 => (0usize..6, prop_oneof![
            (0u8..6).prop_map(Read::Polls),
            Just(Read::Drain),
            Just(Read::Wait),
        ]).prop_map(|(i, r)| Op::Read(i, r)),
        1 => Just(Op::Reopen),
        1 => (0usize..6).prop_map(Op::Unsubscribe),
    ]
}

fn build_event(spec: &EventSpec) -> Event {
    let mut event = Event::new(TYPES[spec.type_ix]).priority(PRIORITIES[spec.priority]);
    if let Some((t, id)) = spec.entity {
        event = event.entity(ENTITY_TYPES[t], format!("E-{id}"));
    }
    if let Some(k) = spec.correlation {
        event = event.correlation_id(correlation_id(k));
    }
    if let Some(ts) = spec.timestamp {
        event = event.timestamp_us(ts);
    }
    event
}

fn build_filter(spec: &FilterSpec) -> Filter {
    let mut filter = Filter::all();
    for &p in &spec.patterns {
        filter = filter.event_type(PATTERNS[p]);
    }
    if let Some((t, id)) = spec.entity {
        filter = filter.entity(ENTITY_TYPES[t], format!("E-{id}"));
    }
    if let Some(k) = spec.correlation {
        filter = filter.correlation(correlation_id(k));
    }
    if let Some(p) = spec.min_priority {
        filter = filter.min_priority(PRIORITIES[p]);
    }
    filter
}

fn build_start(spec: StartSpec) -> Start {
    match spec {
        StartSpec::Beginning => Start::Beginning,
        StartSpec::End => Start::End,
        StartSpec::Seq(k) => Start::Seq(k),
        StartSpec::Time(t) => Start::Time(t),
        StartSpec::LatestPerEntity => Start::LatestPerEntity,
    }
}

/// The documented pattern rule: `*` is exactly one segment, except as the
/// last segment, where it is one or more.
fn pattern_matches(pattern: &str, event_type: &str) -> bool {
    let p: Vec<&str> = pattern.split('.').collect();
    let t: Vec<&str> = event_type.split('.').collect();
    let last_is_star = p.last() == Some(&"*");
    let fixed = if last_is_star { p.len() - 1 } else { p.len() };
    if last_is_star {
        if t.len() < p.len() {
            return false;
        }
    } else if t.len() != p.len() {
        return false;
    }
    (0..fixed).all(|i| p[i] == "*" || p[i] == t[i])
}

/// Brute-force filter semantics from the documentation: every condition
/// set must hold, any type pattern may match, and `min_priority(P1)` means
/// P0 or P1. (No bookkeeping events are written in these workloads.)
fn model_matches(spec: &FilterSpec, event: &LoggedEvent) -> bool {
    if !spec.patterns.is_empty()
        && !spec
            .patterns
            .iter()
            .any(|&p| pattern_matches(PATTERNS[p], &event.event_type))
    {
        return false;
    }
    if let Some((t, id)) = spec.entity {
        match &event.entity {
            Some(e) if e.entity_type == ENTITY_TYPES[t] && e.entity_id == format!("E-{id}") => {}
            _ => return false,
        }
    }
    if let Some(k) = spec.correlation {
        if event.correlation_id != Some(correlation_id(k)) {
            return false;
        }
    }
    if let Some(p) = spec.min_priority {
        if event.priority.as_u8() > p as u8 {
            return false;
        }
    }
    true
}

/// A subscriber under test and what the model expects of it.
struct Subscriber {
    filter: FilterSpec,
    sub: Subscription,
    /// Delivered before everything from `live_from` on (the
    /// `LatestPerEntity` history, or what was received before a reopen).
    history: Vec<u64>,
    /// Every matching event from this seq on is expected after `history`.
    live_from: u64,
    received: Vec<u64>,
    last_position: u64,
}

impl Subscriber {
    fn expected(&self, all: &[LoggedEvent]) -> Vec<u64> {
        let mut expected = self.history.clone();
        expected.extend(
            all.iter()
                .filter(|e| e.seq >= self.live_from && model_matches(&self.filter, e))
                .map(|e| e.seq),
        );
        expected
    }
}

/// The truth: what the log holds now, read back.
fn read_all(log: &Log) -> Vec<LoggedEvent> {
    let all: Vec<LoggedEvent> = log.iter(..).unwrap().map(|e| e.unwrap()).collect();
    for (i, e) in all.iter().enumerate() {
        assert_eq!(e.seq, i as u64 + 1, "iter is gap-free from 1");
    }
    all
}

fn plan(filter: &FilterSpec, start: StartSpec, all: &[LoggedEvent]) -> (Vec<u64>, u64) {
    let end = all.len() as u64;
    match start {
        StartSpec::Beginning => (vec![], 1),
        StartSpec::End => (vec![], end + 1),
        StartSpec::Seq(k) => (vec![], k.max(1)),
        StartSpec::Time(t) => {
            let first = all
                .iter()
                .find(|e| e.timestamp_us >= t)
                .map_or(end + 1, |e| e.seq);
            (vec![], first)
        }
        StartSpec::LatestPerEntity => {
            let mut latest = std::collections::BTreeMap::new();
            for e in all.iter().filter(|e| model_matches(filter, e)) {
                if let Some(entity) = &e.entity {
                    latest.insert(
                        (entity.entity_type.clone(), entity.entity_id.clone()),
                        e.seq,
                    );
                }
            }
            let mut seqs: Vec<u64> = latest.into_values().collect();
            seqs.sort_unstable();
            (seqs, end + 1)
        }
    }
}

/// Receives one event (or none) and checks it against the model.
fn receive(s: &mut Subscriber, timeout: Duration, all: &[LoggedEvent], context: &str) -> bool {
    let got = s.sub.next_timeout(timeout).unwrap();
    let expected = s.expected(all);
    let position = s.sub.progress().position;
    assert!(
        position >= s.last_position,
        "{context}: position went back from {} to {position}",
        s.last_position
    );
    s.last_position = position;
    match got {
        Some(event) => {
            let i = s.received.len();
            assert_eq!(
                expected.get(i),
                Some(&event.seq),
                "{context}: delivery #{i} (received so far {:?}, expected {expected:?})",
                s.received
            );
            assert_eq!(
                event,
                all[event.seq as usize - 1],
                "{context}: event content"
            );
            s.received.push(event.seq);
            true
        }
        None => false,
    }
}

fn drain(s: &mut Subscriber, all: &[LoggedEvent], context: &str) {
    while receive(s, Duration::ZERO, all, context) {}
    assert_eq!(
        s.received,
        s.expected(all),
        "{context}: drained subscriber has exactly the matching events"
    );
    let progress = s.sub.progress();
    assert!(progress.caught_up(), "{context}: drained but {progress:?}");
    assert_eq!(progress.log_end, all.len() as u64, "{context}: log_end");
}

fn options(queue_bytes: u64) -> Options {
    Options::default()
        .durability(Durability::OsBuffered)
        .segment_bytes_max(64 * 1024)
        .preallocate_bytes(0)
        .subscription_queue_bytes(queue_bytes)
}

/// Subscribers' queue sizes: none (every subscriber reads the log
/// itself), room for one or a few events (the dispatcher detaches a
/// subscriber after almost every batch, so the switch between the queue
/// and its own reads happens all the time), and the default.
fn queue_bytes_strategy() -> impl Strategy<Value = u64> {
    prop_oneof![Just(0u64), Just(400), Just(2_000), Just(1024 * 1024)]
}

fn run_case(ops: &[Op], queue_bytes: u64) {
    let dir = tempdir();
    let mut log = Some(Log::open(dir.path(), options(queue_bytes)).unwrap());
    let mut subs: Vec<Subscriber> = Vec::new();
    for (step, op) in ops.iter().enumerate() {
        let context = format!("step {step} {op:?}");
        let current = log.as_ref().unwrap();
        match op {
            Op::Append(spec) => {
                current.append(build_event(spec)).unwrap();
            }
            Op::Batch(specs) => {
                let events: Vec<Event> = specs.iter().map(build_event).collect();
                current.append_batch(&events).unwrap();
            }
            Op::Subscribe(filter, start) => {
                if subs.len() < 6 {
                    let all = read_all(current);
                    let sub = current
                        .subscribe(build_filter(filter), build_start(*start))
                        .unwrap();
                    let (history, live_from) = plan(filter, *start, &all);
                    subs.push(Subscriber {
                        filter: filter.clone(),
                        last_position: sub.progress().position,
                        sub,
                        history,
                        live_from,
                        received: Vec::new(),
                    });
                }
            }
            Op::Read(i, read) => {
                if subs.is_empty() {
                    continue;
                }
                let all = read_all(current);
                let count = subs.len();
                let s = &mut subs[i % count];
                match read {
                    Read::Polls(n) => {
                        for _ in 0..*n {
                            receive(s, Duration::ZERO, &all, &context);
                        }
                    }
                    Read::Drain => drain(s, &all, &context),
                    Read::Wait => {
                        if s.expected(&all).len() > s.received.len() {
                            let started = Instant::now();
                            assert!(
                                receive(s, Duration::from_secs(10), &all, &context),
                                "{context}: a visible matching event was not delivered"
                            );
                            assert!(started.elapsed() < Duration::from_secs(5));
                        }
                    }
                }
            }
            Op::Unsubscribe(i) => {
                if !subs.is_empty() {
                    let count = subs.len();
                    drop(subs.remove(i % count));
                }
            }
            Op::Reopen => {
                log.take().unwrap().close().unwrap();
                let reopened = Log::open(dir.path(), options(queue_bytes)).unwrap();
                // Resume every subscriber from where it stood, as an
                // application would; what it had received stays expected
                // as history (a pending LatestPerEntity history is given up).
                for s in subs.iter_mut() {
                    let position = s.sub.progress().position;
                    s.sub = reopened
                        .subscribe(build_filter(&s.filter), Start::Seq(position + 1))
                        .unwrap();
                    s.history = s.received.clone();
                    s.live_from = position + 1;
                    assert_eq!(
                        s.sub.progress().position,
                        position,
                        "{context}: resumed position"
                    );
                }
                log = Some(reopened);
            }
        }
    }
    // Finally every subscriber catches up with everything.
    let current = log.as_ref().unwrap();
    let all = read_all(current);
    for (i, s) in subs.iter_mut().enumerate() {
        drain(s, &all, &format!("final drain of subscriber {i}"));
    }
    log.take().unwrap().close().unwrap();
}

proptest! {
    #![proptest_config(ProptestConfig {
        // A reopen costs tens of milliseconds (index store flush), which
        // dominates a case.
        cases: if cfg!(debug_assertions) { 12 } else { 24 },
        max_shrink_iters: 400,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    // Every subscriber gets exactly the matching events, in order, with no
    // gap or duplicate across history, live and reopens.
    #[test]
    fn subscribers_get_exactly_the_matching_events(
        ops in prop::collection::vec(op_strategy(), 1..120),
        queue_bytes in queue_bytes_strategy(),
    ) {
        run_case(&ops, queue_bytes);
    }
}

#[test]
fn pattern_model_follows_the_documented_examples() {
    // The model's matcher is the test's own; pin it to the documentation
    // so the property above compares against the right semantics.
    assert!(pattern_matches(
        "validation.*",
        "validation.phase.completed"
    ));
    assert!(pattern_matches("*.error.*", "db.error.timeout"));
    assert!(!pattern_matches("*.error.*", "db.error"));
    assert!(!pattern_matches("a.b", "a.b.c"));
    assert!(pattern_matches("*", "job"));
    assert!(!pattern_matches("a.*.c", "a.c"));
}

/// Appends from another thread while subscribers read live; every event a
/// subscriber receives must already be durable (never past `durable_seq`
/// read right after it arrived, which can only be larger than at arrival).
fn durable_delivery_case(durability: Durability, path: &Path, events: u64) {
    let log = Log::open(path, Options::default().durability(durability)).unwrap();
    let mut subs = [
        log.subscribe(Filter::all(), Start::Beginning).unwrap(),
        log.subscribe(Filter::all().event_type("a.*"), Start::End)
            .unwrap(),
    ];
    let started = Instant::now();
    std::thread::scope(|scope| {
        scope.spawn(|| {
            for i in 0..events {
                if i % 10 == 0 {
                    let batch: Vec<Event> = (0..5).map(|_| Event::new("a.batch")).collect();
                    log.append_batch(&batch).unwrap();
                } else {
                    log.append(Event::new(if i % 2 == 0 { "a.b" } else { "x.y" }))
                        .unwrap();
                }
            }
        });
        let mut received = [Vec::new(), Vec::new()];
        let mut early = 0;
        while started.elapsed() < Duration::from_secs(60) {
            for (k, sub) in subs.iter_mut().enumerate() {
                if let Some(event) = sub.next_timeout(Duration::from_millis(1)).unwrap() {
                    let durable = log.durable_seq();
                    if event.seq > durable {
                        early += 1;
                    }
                    assert!(
                        event.seq <= durable,
                        "{durability:?}: delivered seq {} while durable_seq was {durable}",
                        event.seq
                    );
                    let progress = sub.progress();
                    assert!(progress.log_end <= log.durable_seq(), "{progress:?}");
                    received[k].push(event.seq);
                }
            }
            let total = events + events / 10 * 4;
            if received[0].len() as u64 == total {
                break;
            }
        }
        assert_eq!(early, 0);
        let total = events + events / 10 * 4;
        assert_eq!(
            received[0],
            (1..=total).collect::<Vec<_>>(),
            "{durability:?}"
        );
        let all = read_all(&log);
        // The End subscriber saw a suffix of the a.* events, in order.
        let a_seqs: Vec<u64> = all
            .iter()
            .filter(|e| e.event_type.starts_with("a."))
            .map(|e| e.seq)
            .collect();
        assert!(
            a_seqs.ends_with(&received[1]),
            "{durability:?}: {:?}",
            received[1]
        );
    });
    log.close().unwrap();
}

#[test]
fn under_always_and_interval_only_durable_events_are_delivered() {
    for durability in [
        Durability::Always,
        Durability::Interval(Duration::from_millis(1)),
        // A long interval leaves a wide gap between written and durable, so
        // delivering a merely written event would be caught.
        Durability::Interval(Duration::from_millis(100)),
    ] {
        let dir = tempdir();
        durable_delivery_case(durability, dir.path(), 300);
    }
}

#[test]
fn under_interval_a_written_event_waits_for_the_sync() {
    // With a sync interval far longer than the test, an appended event is
    // written but not durable: a subscriber must not see it until sync().
    let dir = tempdir();
    let log = Log::open(
        dir.path(),
        Options::default().durability(Durability::Interval(Duration::from_secs(3600))),
    )
    .unwrap();
    log.append(Event::new("a.b")).unwrap();
    log.sync().unwrap();
    let mut sub = log.subscribe(Filter::all(), Start::Beginning).unwrap();
    assert_eq!(
        sub.next_timeout(Duration::from_secs(5))
            .unwrap()
            .unwrap()
            .seq,
        1
    );
    log.append(Event::new("a.b")).unwrap();
    if log.durable_seq() < 2 {
        assert_eq!(sub.next_timeout(Duration::from_millis(100)).unwrap(), None);
        assert_eq!(sub.progress().log_end, log.durable_seq());
    }
    log.sync().unwrap();
    assert_eq!(
        sub.next_timeout(Duration::from_secs(5))
            .unwrap()
            .unwrap()
            .seq,
        2
    );
    assert!(sub.progress().caught_up());
    log.close().unwrap();
}
