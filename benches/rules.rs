//! The automation-rules benchmark (issue 11, item 8): how many events per
//! second the rules engine gets through with 10 registered rules of which
//! one fires, on the reference workload W1 (`docs/WORKLOAD.md`), against a
//! plain subscription reading the same events in the same run.
//!
//! ```text
//! cargo bench --bench rules                      # N = 100 000
//! EVLOG_BENCH_N=20000 cargo bench --bench rules  # any N
//! ```
//!
//! Setup: N events of W1 appended to a fresh log (`OsBuffered`), the log
//! closed and opened again (indexes current). Then, `ROUNDS` times,
//! interleaved, median reported:
//!
//! - **delivery**: a subscription (`Filter::all()`, from the beginning)
//!   drained with `try_next` until caught up: the rate at which the engine
//!   could at best be fed;
//! - **rules**: 10 rules registered from the beginning under fresh names
//!   (so each round evaluates every event again); the clock runs from the
//!   first registration until every rule has handled every event
//!   (`Rules::wait_for`). Nine rules watch type families of W1
//!   (`validation.*`, `session.*`, ...) and their actions return nothing
//!   (evaluated, no output); the tenth fires on `agent.error.raised`
//!   (about 1 % of W1) and appends one event per trigger, committed with
//!   its position in one batch as in production.
//!
//! The counts of evaluations and firings are checked against W1.

mod common;

use std::time::{Duration, Instant};

use evlog::rules::RuleStart;
use evlog::workload::{Workload, WorkloadConfig};
use evlog::{Durability, Event, Filter, Log, Options, Rule, Start, Trigger};

const ROUNDS: usize = 3;
const BATCH_EVENTS: usize = 1_000;
const DEADLINE: Duration = Duration::from_secs(600);
/// The nine families that are evaluated but never fire.
const QUIET_PATTERNS: [&str; 9] = [
    "validation.*",
    "performance.*",
    "session.*",
    "contract.*",
    "signal.*",
    "sprint.*",
    "task.*",
    "audit.*",
    "system.*",
];
const FIRING_TYPE: &str = "agent.error.raised";

fn options() -> Options {
    Options::default().durability(Durability::OsBuffered)
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn delivery_rate(log: &Log, n: u64) -> f64 {
    let mut subscription = log
        .subscribe(Filter::all(), Start::Beginning)
        .expect("subscribe");
    let started = Instant::now();
    let mut delivered = 0u64;
    while let Some(event) = subscription.try_next().expect("try_next") {
        delivered += 1;
        std::hint::black_box(&event);
    }
    let seconds = started.elapsed().as_secs_f64();
    assert!(delivered >= n, "delivered {delivered} of {n}");
    delivered as f64 / seconds
}

/// Registers the 10 rules under names of `round`; returns the events per
/// second from the first registration until they handled `last_seq`.
fn rules_rate(log: &Log, round: usize, n: u64, expected: (u64, u64)) -> f64 {
    let last_seq = log.last_seq().expect("events");
    let started = Instant::now();
    for (index, pattern) in QUIET_PATTERNS.iter().enumerate() {
        log.rules()
            .register(
                Rule::new(
                    format!("quiet-{index}-round-{round}"),
                    Trigger::on(*pattern),
                    |_| Ok(Vec::new()),
                )
                .start(RuleStart::Beginning),
            )
            .expect("register");
    }
    log.rules()
        .register(
            Rule::new(
                format!("fires-round-{round}"),
                Trigger::on(FIRING_TYPE),
                |context| {
                    Ok(vec![context
                        .event(format!(
                            "alerts.round{}.agent_error",
                            context.rule_name().len()
                        ))
                        .json_payload(
                            &serde_json::json!({"seq": context.trigger().seq}),
                        )?])
                },
            )
            .start(RuleStart::Beginning),
        )
        .expect("register");
    assert!(
        log.rules().wait_for(last_seq, DEADLINE),
        "rules did not catch up"
    );
    let seconds = started.elapsed().as_secs_f64();
    let stats = log.rules().list();
    let round_suffix = format!("-round-{round}");
    let evaluations: u64 = stats
        .iter()
        .filter(|s| s.rule.ends_with(&round_suffix))
        .map(|s| s.evaluations)
        .sum();
    let firings: u64 = stats
        .iter()
        .filter(|s| s.rule.ends_with(&round_suffix))
        .map(|s| s.firings)
        .sum();
    // Earlier rounds' outputs (alerts.*) trigger none of these patterns.
    assert_eq!((evaluations, firings), expected, "round {round}");
    n as f64 / seconds
}

fn main() {
    let n: u64 = match std::env::var("EVLOG_BENCH_N") {
        Ok(text) => text.trim().parse().expect("EVLOG_BENCH_N must be a number"),
        Err(_) => 100_000,
    };
    let tmp = common::bench_root("rules-");
    let generated: Vec<_> = Workload::new(WorkloadConfig::new(n)).collect();
    let quiet_matches = generated
        .iter()
        .map(|g| {
            QUIET_PATTERNS
                .iter()
                .filter(|p| evlog::type_matches(p, g.event_type))
                .count() as u64
        })
        .sum::<u64>();
    let firing = generated
        .iter()
        .filter(|g| g.event_type == FIRING_TYPE)
        .count() as u64;
    let events: Vec<Event> = generated.iter().map(|g| g.event()).collect();
    drop(generated);
    {
        let log = Log::open(tmp.path(), options()).expect("open");
        for batch in events.chunks(BATCH_EVENTS) {
            log.append_batch(batch).expect("append");
        }
        log.close().expect("close");
    }
    let log = Log::open(tmp.path(), options()).expect("reopen");
    log.wait_for_index(n, Duration::from_secs(600));
    let mut delivery = Vec::new();
    let mut rules = Vec::new();
    for round in 0..ROUNDS {
        delivery.push(delivery_rate(&log, n));
        rules.push(rules_rate(&log, round, n, (quiet_matches + firing, firing)));
    }
    let delivery = median(delivery);
    let rules = median(rules);
    println!("rules benchmark, N = {n} (W1), {ROUNDS} interleaved rounds, medians");
    println!(
        "  10 rules ({} evaluations, {firing} firings per round)",
        quiet_matches + firing
    );
    println!("  plain subscription delivery   {delivery:>12.0} events/s");
    println!(
        "  rules engine, 10 rules, 1 fires {rules:>10.0} events/s  ({:.2}x delivery)",
        rules / delivery
    );
    log.close().expect("close");
}
