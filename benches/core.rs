//! Criterion micro-benchmarks of evlog's core paths through the public API,
//! next to the raw-disk operations they are built on, in the same run:
//!
//! - `append/durable`: one `append` with `Durability::Always` (one
//!   `fdatasync` per call when nothing else is appending);
//! - `append/os_buffered`: one `append` with `Durability::OsBuffered`;
//! - `append/batch_1000_durable`: one `append_batch` of 1 000 events;
//! - `append/durable_4_threads`: 4 threads each appending single durable
//!   events (group commit), per event;
//! - `read/get_random`: `get` of a random sequence number in a 20 000-event
//!   log;
//! - `read/scan_10000`: iterating over 10 000 events;
//! - `raw/l1_write_fdatasync`: `write` of one encoded-size record (~350
//!   bytes) + `fdatasync`, appending to a file;
//! - `raw/l2_write_fdatasync_1000`: `write` of 1 000 such records +
//!   `fdatasync`;
//! - `raw/l3_read_10000`: sequential `read` of 10 000 such records from the
//!   page cache.
//!
//! - `record/encode_body`, `record/decode_body`, `record/frame_crc`,
//!   `record/verify_crc`: the per-event CPU work of an append and a read,
//!   in isolation.
//!
//! Events come from the reference workload W1 (`evlog::workload`). Stores
//! live under `target/bench-tmp`. Sample counts are small so that
//! `cargo bench --bench core` takes well under three minutes.

mod common;

use std::fs::File;
use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use evlog::workload::Rng;
use evlog::{Durability, Event, Log, Options};

/// Events generated once, appended over and over.
const EVENTS: u64 = 20_000;
const BATCH: usize = 1_000;
const SCAN: u64 = 10_000;
const THREADS: u64 = 4;
/// Size of one raw record: about the mean encoded W1 event.
const RAW_RECORD_BYTES: usize = 350;

fn open(dir: PathBuf, durability: Durability) -> Log {
    Log::open(dir, Options::default().durability(durability)).expect("open log")
}

fn appends(c: &mut Criterion) {
    let root = common::bench_root("core-");
    let events = common::workload_events(EVENTS);
    let mut group = c.benchmark_group("append");
    group.throughput(Throughput::Elements(1));
    for (name, durability) in [
        ("durable", Durability::Always),
        ("os_buffered", Durability::OsBuffered),
    ] {
        let log = open(root.path().join(name), durability);
        let mut next = events.iter().cycle();
        group.bench_function(name, |b| {
            b.iter_batched(
                || next.next().cloned().unwrap_or_else(|| Event::new("x")),
                |event| log.append(event).expect("append"),
                BatchSize::SmallInput,
            )
        });
        log.close().expect("close");
    }

    let log = open(root.path().join("batch"), Durability::Always);
    let mut chunks = events.chunks(BATCH).cycle();
    group.throughput(Throughput::Elements(BATCH as u64));
    group.bench_function("batch_1000_durable", |b| {
        b.iter(|| {
            let chunk = chunks.next().unwrap_or(&[]);
            log.append_batch(chunk).expect("append_batch")
        })
    });
    log.close().expect("close");

    // Each iteration is one event; the 4 threads split the iterations.
    let log = std::sync::Arc::new(open(root.path().join("threads"), Durability::Always));
    group.throughput(Throughput::Elements(1));
    group.bench_function("durable_4_threads", |b| {
        b.iter_custom(|iterations| {
            let per_thread = iterations.div_ceil(THREADS);
            let started = std::time::Instant::now();
            std::thread::scope(|scope| {
                for t in 0..THREADS {
                    let log = &log;
                    let events = &events;
                    scope.spawn(move || {
                        for i in 0..per_thread {
                            let event = events[((t * per_thread + i) % EVENTS) as usize].clone();
                            log.append(event).expect("append");
                        }
                    });
                }
            });
            started.elapsed() * iterations as u32 / (per_thread * THREADS) as u32
        })
    });
    group.finish();
}

fn reads(c: &mut Criterion) {
    let root = common::bench_root("core-");
    let log = open(root.path().join("reads"), Durability::OsBuffered);
    for chunk in common::workload_events(EVENTS).chunks(BATCH) {
        log.append_batch(chunk).expect("fill");
    }
    let mut group = c.benchmark_group("read");
    let mut rng = Rng::new(7);
    group.throughput(Throughput::Elements(1));
    group.bench_function("get_random", |b| {
        b.iter(|| log.get(1 + rng.below(EVENTS)).expect("get"))
    });
    group.throughput(Throughput::Elements(SCAN));
    group.bench_function("scan_10000", |b| {
        b.iter(|| {
            let mut count = 0u64;
            for event in log.iter(1..=SCAN).expect("iter") {
                count += event.expect("event").seq;
            }
            count
        })
    });
    group.finish();
    log.close().expect("close");
}

fn raw(c: &mut Criterion) {
    let root = common::bench_root("core-");
    let record = vec![0x5a_u8; RAW_RECORD_BYTES];
    let chunk = record.repeat(BATCH);
    let mut group = c.benchmark_group("raw");

    let mut file = File::create(root.path().join("l1.bin")).expect("create");
    group.throughput(Throughput::Elements(1));
    group.bench_function("l1_write_fdatasync", |b| {
        b.iter(|| {
            file.write_all(&record).expect("write");
            file.sync_data().expect("fdatasync");
        })
    });

    let mut file = File::create(root.path().join("l2.bin")).expect("create");
    group.throughput(Throughput::Elements(BATCH as u64));
    group.bench_function("l2_write_fdatasync_1000", |b| {
        b.iter(|| {
            file.write_all(&chunk).expect("write");
            file.sync_data().expect("fdatasync");
        })
    });

    // L2 with the CPU time evlog's caller spends on a batch (validating and
    // encoding 1 000 events, about 160 us here) spent before each write:
    // how far work that one thread cannot overlap with its fsync alone
    // moves a loop from the raw limit.
    let mut file = File::create(root.path().join("l2cpu.bin")).expect("create");
    group.bench_function("l2_after_160us_cpu_1000", |b| {
        b.iter(|| {
            let until = std::time::Instant::now() + std::time::Duration::from_micros(160);
            while std::time::Instant::now() < until {
                std::hint::spin_loop();
            }
            file.write_all(&chunk).expect("write");
            file.sync_data().expect("fdatasync");
        })
    });

    let path = root.path().join("l3.bin");
    std::fs::write(&path, record.repeat(SCAN as usize)).expect("write l3");
    let mut buf = vec![0u8; 256 * 1024];
    group.throughput(Throughput::Elements(SCAN));
    group.bench_function("l3_read_10000", |b| {
        b.iter(|| {
            let mut file = File::open(&path).expect("open");
            let mut total = 0usize;
            loop {
                let n = std::io::Read::read(&mut file, &mut buf).expect("read");
                if n == 0 {
                    break total;
                }
                total += n;
            }
        })
    });
    group.finish();
}

fn records(c: &mut Criterion) {
    let events = common::workload_events(EVENTS);
    let mut group = c.benchmark_group("record");
    group.throughput(Throughput::Elements(1));
    let mut body = Vec::new();
    let mut next = events.iter().cycle();
    group.bench_function("encode_body", |b| {
        b.iter(|| {
            body.clear();
            let event = next.next().expect("events");
            evlog::bench_api::encode_body(event, &mut body);
            body.len()
        })
    });
    let bodies: Vec<Vec<u8>> = events
        .iter()
        .map(|event| {
            let mut body = Vec::new();
            evlog::bench_api::encode_body(event, &mut body);
            body
        })
        .collect();
    let mut next_body = bodies.iter().cycle();
    group.bench_function("decode_body", |b| {
        b.iter(|| evlog::bench_api::decode_body(next_body.next().expect("bodies")).expect("decode"))
    });
    let mut record = Vec::new();
    group.bench_function("frame_crc", |b| {
        b.iter(|| {
            record.clear();
            evlog::bench_api::frame_record(next_body.next().expect("bodies"), &mut record);
            record.len()
        })
    });
    let records: Vec<Vec<u8>> = bodies
        .iter()
        .map(|body| {
            let mut record = Vec::new();
            evlog::bench_api::frame_record(body, &mut record);
            record
        })
        .collect();
    let mut next_record = records.iter().cycle();
    group.bench_function("verify_crc", |b| {
        b.iter(|| evlog::bench_api::verify_record(next_record.next().expect("records")))
    });
    group.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3))
}

criterion_group! {
    name = core;
    config = config();
    targets = records, appends, reads, raw
}
criterion_main!(core);
