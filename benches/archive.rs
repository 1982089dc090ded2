//! Archive benchmarks (issue 9, docs/WORKLOAD.md) on the reference
//! workload W1, `N` events (default 100 000; `EVLOG_BENCH_N` overrides),
//! appended in batches of 1 000 to a log with 4 MiB segments, so that all
//! but the last segment are sealed:
//!
//! - **Z1**: compress the records of every sealed segment into one archive
//!   per segment at the archiver's zstd level (5), on one core, written
//!   and synced: MB/s of input, and archived bytes per event against the
//!   live encoded bytes per event (target: at least 80 MB/s, at most
//!   0.25x);
//! - **frame size**: the same for frame bounds of 16 KiB to 512 KiB, with
//!   the cold point read each gives: the measurement behind the default
//!   (256 KiB);
//! - **levels**: zstd levels 1 to 12 at the default frame bound: the
//!   measurement behind the archiver's level;
//! - **point reads**: `Archive::get` of 10 000 random archived seqs with
//!   the frame cache emptied before each (the file is in the page cache):
//!   p50 and p99 (target p50 at most 0.5 ms);
//! - **Z2**: replay every archived event with `Archive::iter`, next to the
//!   live scan R2 (`Log::iter` over the same events) in the same run
//!   (target: at least 0.5x).
//!
//! Then criterion runs `archive/point_read_cold` and
//! `archive/z1_one_segment` for its own statistics. Files live under
//! `target/bench-tmp`.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput};
use evlog::bench_api::{archive_file_name, sealed_records, write_archive};
use evlog::workload::{Rng, Workload, WorkloadConfig};
use evlog::{Archive, Durability, Event, Log, Options};

const BATCH: usize = 1_000;
const SEGMENT_BYTES: u64 = 4 * 1024 * 1024;
/// The archiver's level (src/archiver.rs, `ARCHIVE_ZSTD_LEVEL`).
const LEVEL_DEFAULT: i32 = 5;
const LEVELS: [i32; 6] = [1, 3, 5, 7, 9, 12];
const POINT_READS: usize = 10_000;
const FRAME_BOUNDS: [usize; 6] = [
    16 << 10,
    32 << 10,
    64 << 10,
    128 << 10,
    256 << 10,
    512 << 10,
];

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// Writes one archive per sealed segment into `dir`; returns (input
/// bytes, output bytes, seconds).
fn archive_all(
    segments: &[Vec<Vec<u8>>],
    dir: &Path,
    level: i32,
    frame_bytes: usize,
) -> (u64, u64, f64) {
    let started = Instant::now();
    let (mut input, mut output) = (0, 0);
    for records in segments {
        let first = seq_of(&records[0]);
        let last = seq_of(&records[records.len() - 1]);
        let cost = write_archive(dir, first, last, records, &[], level, frame_bytes)
            .expect("write archive");
        input += cost.input_bytes;
        output += cost.output_bytes;
    }
    (input, output, started.elapsed().as_secs_f64())
}

/// The seq of a whole record (bytes 8..16 of its header).
fn seq_of(record: &[u8]) -> u64 {
    u64::from_le_bytes(record[8..16].try_into().expect("record header"))
}

/// p50 and p99 of cold `get`s of random seqs in `first..=last`.
fn cold_point_reads(archive: &Archive, first: u64, last: u64) -> (Duration, Duration) {
    let mut rng = Rng::new(7);
    let mut times: Vec<Duration> = (0..POINT_READS)
        .map(|_| {
            let seq = first + rng.below(last - first + 1);
            archive.clear_cache();
            let started = Instant::now();
            let event = archive.get(seq).expect("archived get");
            let elapsed = started.elapsed();
            assert_eq!(event.seq, seq);
            elapsed
        })
        .collect();
    times.sort();
    (percentile(&times, 0.5), percentile(&times, 0.99))
}

fn main() {
    let n: u64 = std::env::var("EVLOG_BENCH_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let root = common::bench_root("archive-");
    let log_dir = root.path().join("log");
    eprintln!(
        "appending {n} W1 events (seed 42) in batches of {BATCH}, {SEGMENT_BYTES}-byte segments"
    );
    let events: Vec<Event> = Workload::new(WorkloadConfig::new(n))
        .map(|g| g.event())
        .collect();
    let log = Log::open(
        &log_dir,
        Options::default()
            .durability(Durability::OsBuffered)
            .segment_bytes_max(SEGMENT_BYTES)
            .secondary_indexes(false),
    )
    .expect("open log");
    for chunk in events.chunks(BATCH) {
        log.append_batch(chunk).expect("append");
    }
    log.sync().expect("sync");
    drop(events);

    let segments = sealed_records(&log_dir).expect("read sealed segments");
    let archived_events: u64 = segments.iter().map(|s| s.len() as u64).sum();
    let first = seq_of(&segments[0][0]);
    let last = first + archived_events - 1;
    println!(
        "machine: {} cores; N = {n}; {} sealed segments, {archived_events} events (seq {first}..={last})",
        std::thread::available_parallelism().map_or(0, |c| c.get()),
        segments.len()
    );

    // Z1 at the default frame bound, then the sweep.
    let z1_dir = root.path().join("archive");
    let (input, output, seconds) = archive_all(&segments, &z1_dir, LEVEL_DEFAULT, 0);
    let live_per_event = input as f64 / archived_events as f64;
    let archived_per_event = output as f64 / archived_events as f64;
    println!(
        "Z1 (level {LEVEL_DEFAULT}, frames <= 256 KiB, one core, written + synced): {:.1} MB/s of input; \
         {:.1} archived bytes/event vs {:.1} live bytes/event = {:.3}x",
        input as f64 / seconds / 1e6,
        archived_per_event,
        live_per_event,
        archived_per_event / live_per_event
    );
    let archive = Archive::open(&z1_dir).expect("open archives");
    let (p50, p99) = cold_point_reads(&archive, first, last);
    println!(
        "archived point read, cold frame cache (file in page cache), {POINT_READS} random seqs: p50 {:.1} us, p99 {:.1} us",
        p50.as_secs_f64() * 1e6,
        p99.as_secs_f64() * 1e6
    );

    // Z2 vs R2 in the same run.
    let started = Instant::now();
    let mut replayed = 0u64;
    for event in archive.iter(..).expect("iter") {
        event.expect("archived event");
        replayed += 1;
    }
    let z2 = replayed as f64 / started.elapsed().as_secs_f64();
    let started = Instant::now();
    let mut scanned = 0u64;
    for event in log.iter(first..=last).expect("iter") {
        event.expect("live event");
        scanned += 1;
    }
    let r2 = scanned as f64 / started.elapsed().as_secs_f64();
    assert_eq!(replayed, scanned);
    println!(
        "Z2 replay from archives: {:.0} events/s; R2 live scan of the same events: {:.0} events/s; Z2/R2 = {:.2}",
        z2,
        r2,
        z2 / r2
    );

    println!("frame bound sweep (level {LEVEL_DEFAULT}):");
    for bound in FRAME_BOUNDS {
        let dir = root.path().join(format!("sweep-{bound}"));
        let (input, output, seconds) = archive_all(&segments, &dir, LEVEL_DEFAULT, bound);
        let archive = Archive::open(&dir).expect("open archives");
        let (p50, p99) = cold_point_reads(&archive, first, last);
        println!(
            "  {:>4} KiB: {:.1} MB/s, {:.1} bytes/event ({:.3}x live), cold read p50 {:.1} us p99 {:.1} us",
            bound >> 10,
            input as f64 / seconds / 1e6,
            output as f64 / archived_events as f64,
            output as f64 / input as f64,
            p50.as_secs_f64() * 1e6,
            p99.as_secs_f64() * 1e6
        );
    }

    println!("level sweep (frames <= 256 KiB):");
    for level in LEVELS {
        let dir = root.path().join(format!("level-{level}"));
        let (input, output, seconds) = archive_all(&segments, &dir, level, 0);
        println!(
            "  level {level:>2}: {:.1} MB/s, {:.1} bytes/event ({:.3}x live)",
            input as f64 / seconds / 1e6,
            output as f64 / archived_events as f64,
            output as f64 / input as f64,
        );
    }

    let mut criterion = Criterion::default()
        .sample_size(20)
        .measurement_time(Duration::from_secs(3))
        .configure_from_args();
    let mut group = criterion.benchmark_group("archive");
    let mut rng = Rng::new(11);
    group.throughput(Throughput::Elements(1));
    group.bench_function("point_read_cold", |b| {
        b.iter(|| {
            let seq = first + rng.below(last - first + 1);
            archive.clear_cache();
            archive.get(seq).expect("archived get")
        })
    });
    let one = &segments[0];
    let one_bytes: u64 = one.iter().map(|r| r.len() as u64).sum();
    let one_dir = root.path().join("one");
    group.throughput(Throughput::Bytes(one_bytes));
    group.bench_function("z1_one_segment", |b| {
        b.iter(|| {
            write_archive(
                &one_dir,
                seq_of(&one[0]),
                seq_of(&one[one.len() - 1]),
                one,
                &[],
                LEVEL_DEFAULT,
                0,
            )
            .expect("write archive")
        })
    });
    group.finish();
    assert!(one_dir.join(archive_file_name(seq_of(&one[0]))).exists());
    criterion.final_summary();
    log.close().expect("close");
}
