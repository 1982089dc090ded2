//! What the storm guard and the contracts cost an append (issue 11, item
//! 8), on A2: the reference workload W1 (`docs/WORKLOAD.md`) appended in
//! batches of 1 000, durable per batch.
//!
//! ```text
//! cargo bench --bench guard                       # criterion, then the interleaved A2 table
//! EVLOG_BENCH_ROUNDS=31 cargo bench --bench guard # more interleaved rounds (default 15)
//! EVLOG_BENCH_ONLY=interleaved cargo bench --bench guard  # the interleaved A2 table only
//! ```
//!
//! Settings compared, each on a fresh log:
//!
//! - `no_limits`: no rate limit, no contract (the gate is one test of two
//!   empty lists);
//! - `10_limits`: ten rate limits on the ten type families of W1
//!   (`orchestration.*`, `performance.*`, ...), so that every event
//!   matches one and takes a token, with rates and bursts too high to
//!   trigger;
//! - `contracts`: contracts on the four most common families requiring
//!   the fields of W1's payload (`/changes/status/after` a string, `note`
//!   a string, `progress` an integer): about 60 % of the events are
//!   parsed and checked;
//! - `limits_and_contracts`: both.
//!
//! Criterion measures the checks alone on batches of 1 000 events
//! (`gate/...`: contracts and token buckets, no I/O), then one
//! `append_batch` of 1 000 events, durable
//! (`a2/...`, the fsync included, as A2) and under
//! `Durability::OsBuffered` (`cpu/...`, where the CPU work of the append
//! path is most of the time, so the guard's share is largest). Then,
//! because a shared machine drifts between criterion's sequential runs,
//! the A2 settings are measured again interleaved: `ROUNDS` rounds, each
//! timing the same `BATCHES_PER_ROUND` durable batches on every setting
//! in turn (each round starting with the next setting), with secondary
//! indexes off so that no log's indexer runs while another is timed;
//! the medians and their ratios to `no_limits` are printed. Duplicate
//! detection is off (`dedup_window(0)`) so that appending the same W1
//! events again writes them again. Stores live under `target/bench-tmp`.

mod common;

use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput};
use evlog::{Contract, Durability, Event, JsonType, Log, Options, RateLimit};

const EVENTS: u64 = 20_000;
const BATCH: usize = 1_000;
const ROUNDS_DEFAULT: usize = 15;
const BATCHES_PER_ROUND: usize = 10;

/// The ten type families of W1 (`evlog::workload::EVENT_TYPES`).
const FAMILIES: [&str; 10] = [
    "orchestration.*",
    "performance.*",
    "validation.*",
    "agent.*",
    "session.*",
    "contract.*",
    "signal.*",
    "sprint.*",
    "task.*",
    "audit.*",
];

#[derive(Clone, Copy)]
enum Setting {
    NoLimits,
    TenLimits,
    Contracts,
    LimitsAndContracts,
}

const SETTINGS: [Setting; 4] = [
    Setting::NoLimits,
    Setting::TenLimits,
    Setting::Contracts,
    Setting::LimitsAndContracts,
];

impl Setting {
    fn name(self) -> &'static str {
        match self {
            Setting::NoLimits => "no_limits",
            Setting::TenLimits => "10_limits",
            Setting::Contracts => "contracts",
            Setting::LimitsAndContracts => "limits_and_contracts",
        }
    }

    fn options(self, durability: Durability) -> Options {
        let mut options = Options::default().durability(durability).dedup_window(0);
        if matches!(self, Setting::TenLimits | Setting::LimitsAndContracts) {
            for family in FAMILIES {
                // Never short: a billion tokens, a billion a second.
                options = options.rate_limit(RateLimit::new(family, 1e9, 1_000_000_000));
            }
        }
        if matches!(self, Setting::Contracts | Setting::LimitsAndContracts) {
            for family in &FAMILIES[..4] {
                options = options.contract(
                    Contract::new(*family)
                        .field("/changes/status/after", JsonType::String)
                        .field("note", JsonType::String)
                        .field("progress", JsonType::Integer),
                );
            }
        }
        options
    }
}

fn criterion_benches(c: &mut Criterion, events: &[Event]) {
    let root = common::bench_root("guard-");
    for (group_name, durability) in [("a2", Durability::Always), ("cpu", Durability::OsBuffered)] {
        let mut group = c.benchmark_group(group_name);
        group.throughput(Throughput::Elements(BATCH as u64));
        for setting in SETTINGS {
            let dir = root.path().join(format!("{group_name}-{}", setting.name()));
            let log = Log::open(&dir, setting.options(durability)).expect("open log");
            let mut chunks = events.chunks(BATCH).cycle();
            group.bench_function(setting.name(), |b| {
                b.iter(|| {
                    let chunk = chunks.next().unwrap_or(&[]);
                    log.append_batch(chunk).expect("append_batch")
                })
            });
            log.close().expect("close");
            std::fs::remove_dir_all(&dir).expect("remove the bench log");
        }
        group.finish();
    }
}

/// The gate alone (no I/O): the CPU cost per event of the checks, which
/// the loaded machine's noise does not hide as it hides a few percent of
/// A2.
fn gate_benches(c: &mut Criterion, events: &[Event]) {
    let mut group = c.benchmark_group("gate");
    group.throughput(Throughput::Elements(BATCH as u64));
    for setting in SETTINGS {
        let options = setting.options(Durability::Always);
        let gate = evlog::bench_api::Gate::new(
            options.get_rate_limits().to_vec(),
            options.get_contracts().to_vec(),
        )
        .expect("gate");
        let mut chunks = events.chunks(BATCH).cycle();
        group.bench_function(setting.name(), |b| {
            b.iter(|| {
                let chunk = chunks.next().unwrap_or(&[]);
                gate.admit(chunk).expect("admit")
            })
        });
    }
    group.finish();
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// The A2 settings interleaved round by round; prints the medians.
fn interleaved_a2(events: &[Event]) {
    let rounds = std::env::var("EVLOG_BENCH_ROUNDS")
        .ok()
        .and_then(|text| text.parse().ok())
        .unwrap_or(ROUNDS_DEFAULT)
        .max(1);
    let root = common::bench_root("guard-");
    // Secondary indexes off: with four logs open, each one's indexer would
    // still be catching up while the next setting is timed, and the
    // settings would measure each other's indexing instead of the checks.
    let logs: Vec<Log> = SETTINGS
        .iter()
        .map(|setting| {
            Log::open(
                root.path().join(setting.name()),
                setting.options(Durability::Always).secondary_indexes(false),
            )
            .expect("open log")
        })
        .collect();
    let mut per_event_us: Vec<Vec<f64>> = vec![Vec::new(); SETTINGS.len()];
    let chunks: Vec<&[Event]> = events.chunks(BATCH).collect();
    for round in 0..rounds {
        // The same batches for every setting of a round.
        let round_chunks: Vec<&[Event]> = (0..BATCHES_PER_ROUND)
            .map(|i| chunks[(round * BATCHES_PER_ROUND + i) % chunks.len()])
            .collect();
        // Each round starts with the next setting, so that none is always
        // first (after the previous round's last fsync) or last.
        for step in 0..logs.len() {
            let index = (round + step) % logs.len();
            let log = &logs[index];
            let started = Instant::now();
            for chunk in &round_chunks {
                log.append_batch(chunk).expect("append_batch");
            }
            let elapsed: Duration = started.elapsed();
            per_event_us[index]
                .push(elapsed.as_secs_f64() * 1e6 / (BATCHES_PER_ROUND * BATCH) as f64);
        }
    }
    for log in logs {
        log.close().expect("close");
    }
    println!(
        "\nA2 interleaved: {rounds} rounds x {BATCHES_PER_ROUND} durable batches of {BATCH} W1 events per setting"
    );
    let base = median(&mut per_event_us[0].clone());
    for (setting, samples) in SETTINGS.iter().zip(per_event_us.iter_mut()) {
        let m = median(samples);
        println!(
            "  {:<22} median {:>7.3} us/event  {:>7.0} events/s  ratio {:.3}",
            setting.name(),
            m,
            1e6 / m,
            m / base
        );
    }
}

fn main() {
    let events = common::workload_events(EVENTS);
    let mut criterion = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3))
        .configure_from_args();
    // `EVLOG_BENCH_ONLY=interleaved` skips criterion's runs.
    if std::env::var("EVLOG_BENCH_ONLY").as_deref() != Ok("interleaved") {
        gate_benches(&mut criterion, &events);
        criterion_benches(&mut criterion, &events);
        criterion.final_summary();
    }
    interleaved_a2(&events);
}
