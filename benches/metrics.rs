//! What the metrics counters cost an append (issue 12, item 4).
//!
//! ```text
//! cargo bench --bench metrics                       # criterion, then the summary
//! EVLOG_BENCH_ROUNDS=31 cargo bench --bench metrics # more summary rounds (default 15)
//! EVLOG_BENCH_ONLY=summary cargo bench --bench metrics  # the summary only
//! ```
//!
//! The writer thread counts once per commit group (`note_group`: three
//! relaxed additions and a histogram observation), once per fsync
//! (`note_fsync`: a histogram observation) and once per roll, never per
//! event. The log has no switch that turns the counters off (they are too
//! cheap to be worth one), so their cost cannot be read as the difference
//! of two logs; it is measured in two parts, in the same run:
//!
//! - `counters/...`: the writer's exact calls, in isolation, on counters
//!   like the writer's (`evlog::bench_api::WriterCounters`), with group
//!   sizes and fsync times that vary over the histograms' buckets:
//!   `note_group` alone (a group under `Durability::OsBuffered`),
//!   `note_group` and `note_fsync` (a group under `Durability::Always`),
//!   and the same while another thread takes snapshots of them in a loop
//!   (the worst case of a reader pulling their cache lines away; a scrape
//!   normally comes every few seconds);
//! - `log/...`: what a commit group costs with the real log, which counts:
//!   one `append_batch` of 1 000 W1 events (`docs/WORKLOAD.md`), A2's
//!   batches, and one `append` of one event (each a commit group of its
//!   own, where the per-group counting weighs most), both under
//!   `Durability::OsBuffered` so that no fsync hides the CPU work.
//!
//! The summary then times both parts again in plain loops (medians over
//! `ROUNDS` rounds), checks with `Log::metrics` how many commit groups the
//! appends made, and prints the counters' cost per group and per event and
//! as a fraction of a group's time. Secondary indexes are off so that no
//! indexer thread competes for the CPU (a faster group, so a larger
//! fraction: the figure errs high), and duplicate detection is off so that
//! appending the same W1 events again writes them again. Stores live under
//! `target/bench-tmp`.

mod common;

use std::hint::black_box;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput};
use evlog::bench_api::WriterCounters;
use evlog::{Durability, Event, Log, Options};

/// W1 events generated once, appended over and over.
const EVENTS: u64 = 20_000;
/// Events per `append_batch`, as A2.
const BATCH: usize = 1_000;
const ROUNDS_DEFAULT: usize = 15;
/// Counter calls timed per summary round: long enough (tens of
/// milliseconds) that the clock's resolution does not matter.
const COUNTER_CALLS_PER_ROUND: usize = 1_000_000;
/// Batches and single appends timed per summary round.
const BATCHES_PER_ROUND: usize = 20;
const SINGLES_PER_ROUND: usize = 2_000;

/// Group sizes (events) and fsync times (µs) the isolated calls cycle
/// through: over every bucket of the two histograms and past the last,
/// so that the bucket search is not always the shortest.
const GROUP_EVENTS: [u64; 8] = [1, 3, 17, 200, 1_000, 1_000, 5_000, 20_000];
const FSYNC_US: [u64; 8] = [80, 300, 900, 2_000, 4_000, 20_000, 300_000, 2_000_000];

fn options() -> Options {
    Options::default()
        .durability(Durability::OsBuffered)
        .secondary_indexes(false)
        .dedup_window(0)
}

/// The calls of one commit group: `note_group`, and `note_fsync` when
/// `durable`. `i` picks the inputs.
#[inline(always)]
fn one_group(counters: &WriterCounters, i: usize, durable: bool) {
    let events = GROUP_EVENTS[i % GROUP_EVENTS.len()];
    counters.note_group(black_box(events), black_box(events * 350));
    if durable {
        counters.note_fsync(black_box(Duration::from_micros(
            FSYNC_US[i % FSYNC_US.len()],
        )));
    }
}

/// Runs `f` while another thread takes snapshots of `counters` in a loop.
fn with_snapshot_reader<T>(counters: &WriterCounters, f: impl FnOnce() -> T) -> T {
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        let reader = s.spawn(|| {
            let mut snapshots = 0_u64;
            while !stop.load(Ordering::Relaxed) {
                black_box(counters.snapshot());
                snapshots += 1;
            }
            snapshots
        });
        let result = f();
        stop.store(true, Ordering::Relaxed);
        assert!(reader.join().expect("reader thread") > 0);
        result
    })
}

fn counter_benches(c: &mut Criterion) {
    let mut group = c.benchmark_group("counters");
    group.throughput(Throughput::Elements(1));
    for (name, durable) in [("note_group", false), ("note_group_and_fsync", true)] {
        let counters = WriterCounters::default();
        let mut i = 0_usize;
        group.bench_function(name, |b| {
            b.iter(|| {
                i = i.wrapping_add(1);
                one_group(&counters, i, durable)
            })
        });
        assert!(counters.snapshot().commit_groups > 0);
    }
    let counters = WriterCounters::default();
    with_snapshot_reader(&counters, || {
        let mut i = 0_usize;
        group.bench_function("note_group_and_fsync_with_reader", |b| {
            b.iter(|| {
                i = i.wrapping_add(1);
                one_group(&counters, i, true)
            })
        });
    });
    group.finish();
}

fn log_benches(c: &mut Criterion, events: &[Event]) {
    let root = common::bench_root("metrics-");
    let mut group = c.benchmark_group("log");
    let log = Log::open(root.path().join("batch"), options()).expect("open log");
    let mut chunks = events.chunks(BATCH).cycle();
    group.throughput(Throughput::Elements(BATCH as u64));
    group.bench_function("os_buffered_batch_1000", |b| {
        b.iter(|| {
            let chunk = chunks.next().unwrap_or(&[]);
            log.append_batch(chunk).expect("append_batch")
        })
    });
    log.close().expect("close");
    let log = Log::open(root.path().join("single"), options()).expect("open log");
    let mut singles = events.iter().cycle();
    group.throughput(Throughput::Elements(1));
    group.bench_function("os_buffered_single", |b| {
        b.iter(|| {
            let event = singles.next().cloned().unwrap_or_else(|| Event::new("a.b"));
            log.append(event).expect("append")
        })
    });
    log.close().expect("close");
    group.finish();
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// Median nanoseconds per commit group of the isolated calls.
fn counters_ns_per_group(rounds: usize, durable: bool, reader: bool) -> f64 {
    let counters = WriterCounters::default();
    let time_rounds = || {
        let mut samples = Vec::with_capacity(rounds);
        for round in 0..rounds {
            let started = Instant::now();
            for i in 0..COUNTER_CALLS_PER_ROUND {
                one_group(&counters, round + i, durable);
            }
            samples.push(started.elapsed().as_secs_f64() * 1e9 / COUNTER_CALLS_PER_ROUND as f64);
        }
        median(&mut samples)
    };
    let ns = if reader {
        with_snapshot_reader(&counters, time_rounds)
    } else {
        time_rounds()
    };
    // The loop did count: every call reached the counters.
    let expected = (rounds * COUNTER_CALLS_PER_ROUND) as u64;
    assert_eq!(counters.snapshot().commit_groups, expected);
    ns
}

/// Median nanoseconds per commit group of `append` (`batch` 1) or
/// `append_batch` (`batch` > 1) on a real log, and the commit groups per
/// request that `Log::metrics` saw.
fn log_ns_per_group(root: &Path, events: &[Event], rounds: usize, batch: usize) -> (f64, f64) {
    let log = Log::open(root.join(format!("summary-{batch}")), options()).expect("open log");
    let chunks: Vec<&[Event]> = events.chunks(batch).collect();
    let requests_per_round = if batch == 1 {
        SINGLES_PER_ROUND
    } else {
        BATCHES_PER_ROUND
    };
    let groups_before = groups(&log);
    let mut samples = Vec::with_capacity(rounds);
    for round in 0..rounds {
        let started = Instant::now();
        for i in 0..requests_per_round {
            let chunk = chunks[(round * requests_per_round + i) % chunks.len()];
            if batch == 1 {
                log.append(chunk[0].clone()).expect("append");
            } else {
                log.append_batch(chunk).expect("append_batch");
            }
        }
        samples.push(started.elapsed().as_secs_f64() * 1e9 / requests_per_round as f64);
    }
    let requests = (rounds * requests_per_round) as f64;
    let groups_per_request = (groups(&log) - groups_before) as f64 / requests;
    log.close().expect("close");
    // A request is one group here (one appending thread), so a request's
    // time is a group's; divided by the groups seen in case that changes.
    (
        median(&mut samples) / groups_per_request,
        groups_per_request,
    )
}

fn groups(log: &Log) -> u64 {
    log.metrics()
        .expect("metrics")
        .appends
        .expect("an open log counts appends")
        .commit_groups
}

fn summary(events: &[Event]) {
    let rounds = std::env::var("EVLOG_BENCH_ROUNDS")
        .ok()
        .and_then(|text| text.parse().ok())
        .unwrap_or(ROUNDS_DEFAULT)
        .max(1);
    let root = common::bench_root("metrics-");
    let group_ns = counters_ns_per_group(rounds, false, false);
    let group_fsync_ns = counters_ns_per_group(rounds, true, false);
    let contended_ns = counters_ns_per_group(rounds, true, true);
    let (batch_ns, batch_groups) = log_ns_per_group(root.path(), events, rounds, BATCH);
    let (single_ns, single_groups) = log_ns_per_group(root.path(), events, rounds, 1);
    println!(
        "\nMetrics counters, medians of {rounds} rounds (OsBuffered logs, secondary indexes off):"
    );
    println!("  counters per commit group, isolated:");
    println!("    note_group                      {group_ns:>8.2} ns");
    println!("    note_group + note_fsync         {group_fsync_ns:>8.2} ns");
    println!("    the same, a snapshot reader     {contended_ns:>8.2} ns");
    println!(
        "  append_batch of {BATCH} W1 events: {:>8.1} us per commit group ({batch_groups:.2} groups per batch), {:.1} ns per event",
        batch_ns / 1e3,
        batch_ns / BATCH as f64
    );
    println!(
        "    counters: {:.4} ns per event, {:.5} % of the group's time ({:.5} % with note_fsync)",
        group_ns / BATCH as f64,
        100.0 * group_ns / batch_ns,
        100.0 * group_fsync_ns / batch_ns
    );
    println!(
        "  append of 1 W1 event: {:>8.2} us per commit group ({single_groups:.2} groups per append)",
        single_ns / 1e3
    );
    println!(
        "    counters: {group_ns:.2} ns per event, {:.3} % of the group's time ({:.3} % with note_fsync, {:.3} % with a reader)",
        100.0 * group_ns / single_ns,
        100.0 * group_fsync_ns / single_ns,
        100.0 * contended_ns / single_ns
    );
}

fn main() {
    let events = common::workload_events(EVENTS);
    let mut criterion = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3))
        .configure_from_args();
    // `EVLOG_BENCH_ONLY=summary` skips criterion's runs.
    if std::env::var("EVLOG_BENCH_ONLY").as_deref() != Ok("summary") {
        counter_benches(&mut criterion);
        log_benches(&mut criterion, &events);
        criterion.final_summary();
    }
    summary(&events);
}
