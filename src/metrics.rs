//! The log's figures: [`Log::metrics`] (or [`Metrics::of_log`],
//! [`Metrics::of_reader`]) takes a snapshot, and [`Metrics::render`] writes
//! it as Prometheus text (exposition format 0.0.4), so that any server (the
//! `http` feature's `/metrics`, `evlog metrics --prometheus`, or an
//! application's own) can publish it.
//!
//! The writer thread counts what it does with relaxed atomic additions once
//! per commit group, fsync or roll (never per event), so counting costs the
//! appends nothing measurable (benches/metrics.rs: about 20 ns per commit
//! group, against a millisecond for a group of 1 000 events); everything
//! else is read when the snapshot is taken.
//!
//! ```
//! # fn main() -> evlog::Result<()> {
//! # let dir = tempfile::tempdir().unwrap();
//! let log = evlog::Log::open(dir.path(), evlog::Options::default())?;
//! log.append(evlog::Event::new("a.b"))?;
//! let text = evlog::metrics::Metrics::of_log(&log)?.render();
//! assert!(text.contains("evlog_last_seq 1\n"));
//! # Ok(()) }
//! ```

use std::fmt::Write;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::storage::{OpenMode, Storage};
use crate::{ConsumerInfo, IndexStatus, Log, LogReader, RateLimitStats, RecoveryReport, Result};

/// Upper bounds (inclusive) of the fsync latency buckets, in microseconds:
/// from a battery-backed cache (100 µs) to a stalled disk (1 s).
const FSYNC_BUCKET_BOUNDS_US: [u64; 12] = [
    100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 1_000_000,
];
/// Upper bounds (inclusive) of the commit group size buckets, in events:
/// powers of two up to a full group of small events.
const GROUP_BUCKET_BOUNDS_EVENTS: [u64; 13] =
    [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096, 16384];

/// A histogram with fixed buckets that any thread adds to with relaxed
/// atomics (no lock): one bucket add, one sum add per observation.
pub(crate) struct AtomicHistogram<const N: usize> {
    bounds: [u64; N],
    buckets: [AtomicU64; N],
    /// Observations above the last bound.
    over: AtomicU64,
    sum: AtomicU64,
}

impl<const N: usize> AtomicHistogram<N> {
    const fn new(bounds: [u64; N]) -> AtomicHistogram<N> {
        AtomicHistogram {
            bounds,
            buckets: [const { AtomicU64::new(0) }; N],
            over: AtomicU64::new(0),
            sum: AtomicU64::new(0),
        }
    }

    fn observe(&self, value: u64) {
        let bucket = match self.bounds.iter().position(|&bound| value <= bound) {
            Some(index) => &self.buckets[index],
            None => &self.over,
        };
        bucket.fetch_add(1, Ordering::Relaxed);
        self.sum.fetch_add(value, Ordering::Relaxed);
    }

    fn snapshot(&self) -> Histogram {
        let mut counts: Vec<u64> = self
            .buckets
            .iter()
            .map(|b| b.load(Ordering::Relaxed))
            .collect();
        counts.push(self.over.load(Ordering::Relaxed));
        Histogram {
            bounds: self.bounds.to_vec(),
            // The count is the buckets' total, so that the two always
            // agree, as Prometheus requires of `+Inf` and `_count`.
            count: counts.iter().sum(),
            counts,
            sum: self.sum.load(Ordering::Relaxed),
        }
    }
}

/// What the writer thread counts, in the log's shared state.
pub(crate) struct WriterCounters {
    events: AtomicU64,
    record_bytes: AtomicU64,
    commit_groups: AtomicU64,
    group_events: AtomicHistogram<{ GROUP_BUCKET_BOUNDS_EVENTS.len() }>,
    fsync_us: AtomicHistogram<{ FSYNC_BUCKET_BOUNDS_US.len() }>,
    rolls: AtomicU64,
    /// How long the writer's open took, recovery included; 0 until known.
    open_us: AtomicU64,
}

impl Default for WriterCounters {
    fn default() -> WriterCounters {
        WriterCounters {
            events: AtomicU64::new(0),
            record_bytes: AtomicU64::new(0),
            commit_groups: AtomicU64::new(0),
            group_events: AtomicHistogram::new(GROUP_BUCKET_BOUNDS_EVENTS),
            fsync_us: AtomicHistogram::new(FSYNC_BUCKET_BOUNDS_US),
            rolls: AtomicU64::new(0),
            open_us: AtomicU64::new(0),
        }
    }
}

impl WriterCounters {
    /// One commit group written: `events` records, `record_bytes` bytes.
    pub(crate) fn note_group(&self, events: u64, record_bytes: u64) {
        self.events.fetch_add(events, Ordering::Relaxed);
        self.record_bytes.fetch_add(record_bytes, Ordering::Relaxed);
        self.commit_groups.fetch_add(1, Ordering::Relaxed);
        self.group_events.observe(events);
    }

    /// One fsync of the active segment, which took `took`.
    pub(crate) fn note_fsync(&self, took: Duration) {
        self.fsync_us
            .observe(u64::try_from(took.as_micros()).unwrap_or(u64::MAX));
    }

    /// One segment roll.
    pub(crate) fn note_roll(&self) {
        self.rolls.fetch_add(1, Ordering::Relaxed);
    }

    /// How long the open took.
    pub(crate) fn note_open(&self, took: Duration) {
        let us = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        self.open_us.store(us, Ordering::Relaxed);
    }

    pub(crate) fn snapshot(&self, queue_requests: usize) -> AppendMetrics {
        AppendMetrics {
            events_appended: self.events.load(Ordering::Relaxed),
            bytes_appended: self.record_bytes.load(Ordering::Relaxed),
            commit_groups: self.commit_groups.load(Ordering::Relaxed),
            commit_group_events: self.group_events.snapshot(),
            fsync_duration_us: self.fsync_us.snapshot(),
            segment_rolls: self.rolls.load(Ordering::Relaxed),
            queue_requests: queue_requests as u64,
            queue_capacity_requests: crate::writer::CHANNEL_CAPACITY as u64,
        }
    }
}

/// A histogram read at one moment: `counts[i]` observations were at most
/// `bounds[i]` (and above `bounds[i - 1]`); the last count, one more than
/// there are bounds, is of observations above every bound.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Histogram {
    /// Inclusive upper bounds of the buckets, increasing, in the unit the
    /// field's name says.
    pub bounds: Vec<u64>,
    /// Observations per bucket (not cumulative): `bounds.len() + 1` of them.
    pub counts: Vec<u64>,
    /// The sum of all observations, in the same unit.
    pub sum: u64,
    /// The number of observations (the total of `counts`).
    pub count: u64,
}

/// What the writer thread did since the log was opened (only an open
/// [`Log`] knows: a read-only view has no writer).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AppendMetrics {
    /// Events written (duplicates answered without a write not counted).
    pub events_appended: u64,
    /// Bytes of records written (headers and bodies).
    pub bytes_appended: u64,
    /// Commit groups written: each one write (and under
    /// `Durability::Always` one fsync) shared by its appends.
    pub commit_groups: u64,
    /// Events per commit group.
    pub commit_group_events: Histogram,
    /// Duration of each fsync of the active segment, in microseconds
    /// (`count` is the number of fsyncs).
    pub fsync_duration_us: Histogram,
    /// Segment rolls (a sealed segment and a new active one).
    pub segment_rolls: u64,
    /// Append and sync requests waiting on the writer's channel now.
    pub queue_requests: u64,
    /// Capacity of that channel: a full channel makes appenders wait.
    pub queue_capacity_requests: u64,
}

/// Bytes on disk under the data directory, by kind of file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DiskUsage {
    /// Segment files (`segments/*.seg`), preallocated space included.
    pub segment_bytes: u64,
    /// Sequence index files (`segments/*.idx`).
    pub sequence_index_bytes: u64,
    /// Archive files (`archive/*.evz`).
    pub archive_bytes: u64,
    /// The secondary indexes (`index/`).
    pub secondary_index_bytes: u64,
    /// Bytes cut by recoveries and repairs, kept in `lost+found/`.
    pub lost_found_bytes: u64,
    /// Durable consumers' position and parked files (`consumers/`).
    pub consumer_bytes: u64,
}

impl DiskUsage {
    /// The total of every kind.
    pub fn total_bytes(&self) -> u64 {
        self.segment_bytes
            + self.sequence_index_bytes
            + self.archive_bytes
            + self.secondary_index_bytes
            + self.lost_found_bytes
            + self.consumer_bytes
    }
}

/// What the open found and did (see [`RecoveryReport`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecoveryMetrics {
    /// The last close was clean and its marker checked out.
    pub closed_cleanly: bool,
    /// How long the open took, recovery included (a writer's open only).
    pub open_duration_us: Option<u64>,
    /// Bytes after the last complete unit of the active segment.
    pub torn_tail_bytes: u64,
    /// Valid records among those bytes, cut (copied to `lost+found/`).
    pub records_dropped: u64,
    /// Sequence indexes rebuilt from their segment.
    pub indexes_rebuilt: u64,
    /// Sealed segments found damaged and opened anyway.
    pub damaged_segments: u64,
    /// Leftover temporary files removed.
    pub temp_files_removed: u64,
}

impl RecoveryMetrics {
    fn of(report: &RecoveryReport, open_duration_us: Option<u64>) -> RecoveryMetrics {
        RecoveryMetrics {
            closed_cleanly: report.closed_cleanly,
            open_duration_us,
            torn_tail_bytes: report.torn_tail_bytes,
            records_dropped: report.records_dropped,
            indexes_rebuilt: report.indexes_rebuilt,
            damaged_segments: report.damaged_segments.len() as u64,
            temp_files_removed: report.temp_files_removed,
        }
    }
}

impl Log {
    /// A snapshot of the log's figures: positions, what the writer did
    /// (events, bytes, commit groups and their sizes, fsyncs and their
    /// latency, rolls, its queue), the index, archive and consumer lags,
    /// disk usage by kind and what the open recovered. Costs a listing of
    /// the data directory, never a wait for the writer.
    ///
    /// ```
    /// # fn main() -> evlog::Result<()> {
    /// let log = evlog::Log::open_temporary(evlog::Options::default())?;
    /// log.append_batch(&[evlog::Event::new("a.b"), evlog::Event::new("a.c")])?;
    /// let metrics = log.metrics()?;
    /// let appends = metrics.appends.as_ref().unwrap();
    /// assert_eq!(appends.events_appended, 2);
    /// assert_eq!(appends.commit_groups, 1);
    /// assert!(appends.fsync_duration_us.count >= 1);
    /// assert!(metrics.render().contains("evlog_appended_events_total 2\n"));
    /// # Ok(()) }
    /// ```
    pub fn metrics(&self) -> Result<Metrics> {
        Metrics::of_log(self)
    }
}

impl LogReader {
    /// A snapshot of what a read-only view can know of the log's figures
    /// (as of its last refresh): everything of [`Log::metrics`] but what
    /// the writer counts.
    pub fn metrics(&self) -> Result<Metrics> {
        Metrics::of_reader(self)
    }
}

/// Live sealed segments (not archived yet) and their bytes: what the
/// archiver has still to take, when the policy archives.
fn sealed_live_segments(shared: &crate::log::Shared) -> (u64, u64) {
    let segments = shared.segments();
    let sealed = &segments[..segments.len().saturating_sub(1)];
    let bytes = sealed.iter().map(|s| s.committed_bytes()).sum();
    (sealed.len() as u64, bytes)
}

/// Bytes of the files directly in `dir` whose name passes `keep`, through
/// the log's storage (0 when `dir` is missing).
fn storage_dir_bytes(storage: &dyn Storage, dir: &Path, keep: impl Fn(&str) -> bool) -> u64 {
    let Ok(names) = storage.list_dir(dir) else {
        return 0;
    };
    names
        .iter()
        .filter(|name| keep(name))
        .filter_map(|name| storage.open(&dir.join(name), OpenMode::Read).ok())
        .filter_map(|file| file.size_bytes().ok())
        .sum()
}

/// Bytes of every file under `dir` on the real file system (sled's
/// directory is only ever there).
fn os_tree_bytes(dir: &Path, depth_max: u32) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|entry| match entry.file_type() {
            Ok(kind) if kind.is_dir() && depth_max > 0 => {
                os_tree_bytes(&entry.path(), depth_max - 1)
            }
            Ok(kind) if kind.is_file() => entry.metadata().map_or(0, |m| m.len()),
            _ => 0,
        })
        .sum()
}

/// How deep `os_tree_bytes` goes into the index directory: sled keeps
/// its files at most two levels down.
const INDEX_DIR_DEPTH_MAX: u32 = 4;

fn disk_usage(shared: &crate::log::Shared) -> DiskUsage {
    let storage = &*shared.storage;
    let dir = &shared.dir;
    let segments = &shared.segments_dir;
    let secondary_index_bytes = if storage.hosts_secondary_indexes() {
        os_tree_bytes(&dir.join(crate::index::INDEX_DIR), INDEX_DIR_DEPTH_MAX)
    } else {
        0
    };
    DiskUsage {
        segment_bytes: storage_dir_bytes(storage, segments, |n| {
            n.ends_with(crate::segment::SEGMENT_SUFFIX)
        }),
        sequence_index_bytes: storage_dir_bytes(storage, segments, |n| {
            n.ends_with(crate::segment::INDEX_SUFFIX)
        }),
        archive_bytes: storage_dir_bytes(storage, &dir.join(crate::archiver::ARCHIVE_DIR), |n| {
            n.ends_with(crate::archive::ARCHIVE_SUFFIX)
        }),
        secondary_index_bytes,
        lost_found_bytes: storage_dir_bytes(
            storage,
            &dir.join(crate::lost_found::LOST_FOUND_DIR),
            |_| true,
        ),
        consumer_bytes: storage_dir_bytes(
            storage,
            &dir.join(crate::consumer::CONSUMERS_DIR),
            |_| true,
        ),
    }
}

/// The content type of [`Metrics::render`]'s text.
pub const PROMETHEUS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// One snapshot of the log's figures (see [`Log::metrics`]).
#[derive(Debug, Clone, Default, PartialEq)]
#[non_exhaustive]
pub struct Metrics {
    /// Lowest readable seq, 0 when the log is empty.
    pub first_seq: u64,
    /// Highest readable seq, 0 when the log is empty.
    pub last_seq: u64,
    /// Highest seq synced to stable storage; `None` for a read-only view,
    /// which cannot know it.
    pub durable_seq: Option<u64>,
    /// Segment files (the active one included).
    pub segment_count: usize,
    /// Archive files (`archive/*.evz`) the log reads.
    pub archive_count: usize,
    /// The secondary indexes' state.
    pub index: IndexStatus,
    /// Published events the indexes have not reached.
    pub index_lag_events: u64,
    /// Sealed segments not archived yet: what the archiver has still to
    /// take when the retention policy archives.
    pub archive_lag_segments: u64,
    /// Bytes of records in those segments.
    pub archive_lag_bytes: u64,
    /// Archiver runs since the log was opened (`None` for a read-only
    /// view, which runs none).
    pub archiver_runs: Option<u64>,
    /// Whether the archiver stopped on an error.
    pub archiver_stopped: bool,
    /// Durable consumers, with their positions and lags.
    pub consumers: Vec<ConsumerInfo>,
    /// The storm guard's rate limits (none for a read-only view, which
    /// appends nothing).
    pub rate_limits: Vec<RateLimitStats>,
    /// What the writer did since the open (`None` for a read-only view).
    pub appends: Option<AppendMetrics>,
    /// Bytes on disk by kind of file.
    pub disk: DiskUsage,
    /// What the open found and did.
    pub recovery: RecoveryMetrics,
}

impl Metrics {
    /// Reads the gauges of an open log.
    pub fn of_log(log: &Log) -> Result<Metrics> {
        let shared = &log.shared;
        let (archive_lag_segments, archive_lag_bytes) = sealed_live_segments(shared);
        let archiver = log.archiver_status();
        let open_us = shared.counters.open_us.load(Ordering::Relaxed);
        Ok(Metrics {
            first_seq: log.first_seq().unwrap_or(0),
            last_seq: log.last_seq().unwrap_or(0),
            durable_seq: Some(log.durable_seq()),
            segment_count: log.segment_count(),
            archive_count: log.archive_count(),
            index: log.index_status(),
            index_lag_events: log.index_lag(),
            archive_lag_segments,
            archive_lag_bytes,
            archiver_runs: Some(archiver.runs),
            archiver_stopped: archiver.stopped_because.is_some(),
            consumers: log.consumers()?,
            rate_limits: log.rate_limit_stats(),
            appends: Some(shared.counters.snapshot(log.writer_queue_requests())),
            disk: disk_usage(shared),
            recovery: RecoveryMetrics::of(log.recovery_report(), Some(open_us)),
        })
    }

    /// Reads the gauges of a read-only view (as of its last refresh).
    pub fn of_reader(reader: &LogReader) -> Result<Metrics> {
        let shared = &reader.shared;
        let (archive_lag_segments, archive_lag_bytes) = sealed_live_segments(shared);
        Ok(Metrics {
            first_seq: reader.first_seq().unwrap_or(0),
            last_seq: reader.last_seq().unwrap_or(0),
            durable_seq: None,
            segment_count: reader.segment_count(),
            archive_count: reader.archive_count(),
            index: reader.index_status(),
            index_lag_events: reader.index_lag(),
            archive_lag_segments,
            archive_lag_bytes,
            archiver_runs: None,
            archiver_stopped: false,
            consumers: reader.consumers()?,
            rate_limits: Vec::new(),
            appends: None,
            disk: disk_usage(shared),
            recovery: RecoveryMetrics::of(reader.open_report(), None),
        })
    }

    /// The exposition text: every metric with its HELP and TYPE lines.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let events = if self.last_seq >= self.first_seq && self.last_seq > 0 {
            self.last_seq - self.first_seq + 1
        } else {
            0
        };
        gauge(
            &mut out,
            "evlog_first_seq",
            "Lowest readable sequence number (0 when the log is empty).",
            self.first_seq,
        );
        gauge(
            &mut out,
            "evlog_last_seq",
            "Highest readable sequence number (0 when the log is empty).",
            self.last_seq,
        );
        if let Some(durable) = self.durable_seq {
            gauge(
                &mut out,
                "evlog_durable_seq",
                "Highest sequence number synced to stable storage.",
                durable,
            );
        }
        gauge(
            &mut out,
            "evlog_events",
            "Events readable in the log.",
            events,
        );
        gauge(
            &mut out,
            "evlog_segments",
            "Segment files of the log.",
            self.segment_count as u64,
        );
        gauge(
            &mut out,
            "evlog_archive_files",
            "Archive files of the log (sealed segments archived).",
            self.archive_count as u64,
        );
        gauge(
            &mut out,
            "evlog_index_available",
            "1 when queries use the secondary indexes, 0 when they scan the log.",
            u64::from(self.index.available),
        );
        gauge(
            &mut out,
            "evlog_index_indexed_through_seq",
            "Every event up to this sequence number is indexed.",
            self.index.indexed_through,
        );
        gauge(
            &mut out,
            "evlog_index_lag_events",
            "Readable events the secondary indexes have not reached.",
            self.index_lag_events,
        );
        gauge(
            &mut out,
            "evlog_index_stopped",
            "1 when the indexer stopped on an error of its store.",
            u64::from(self.index.stopped_because.is_some()),
        );
        gauge(
            &mut out,
            "evlog_archive_lag_segments",
            "Sealed segments not archived yet (what the archiver has still to take when the policy archives).",
            self.archive_lag_segments,
        );
        gauge(
            &mut out,
            "evlog_archive_lag_bytes",
            "Bytes of records in the sealed segments not archived yet.",
            self.archive_lag_bytes,
        );
        if let Some(runs) = self.archiver_runs {
            counter(
                &mut out,
                "evlog_archiver_runs_total",
                "Archiver runs since the log was opened.",
                runs,
            );
            gauge(
                &mut out,
                "evlog_archiver_stopped",
                "1 when the archiver stopped on an error (archiving resumes at the next open).",
                u64::from(self.archiver_stopped),
            );
        }
        if let Some(appends) = &self.appends {
            render_appends(&mut out, appends);
        }
        header(
            &mut out,
            "evlog_disk_usage_bytes",
            "gauge",
            "Bytes on disk under the data directory, by kind of file.",
        );
        for (kind, bytes) in [
            ("segments", self.disk.segment_bytes),
            ("sequence_indexes", self.disk.sequence_index_bytes),
            ("archives", self.disk.archive_bytes),
            ("secondary_indexes", self.disk.secondary_index_bytes),
            ("lost_found", self.disk.lost_found_bytes),
            ("consumers", self.disk.consumer_bytes),
        ] {
            let _ = writeln!(out, "evlog_disk_usage_bytes{{kind=\"{kind}\"}} {bytes}");
        }
        render_recovery(&mut out, &self.recovery);
        header(
            &mut out,
            "evlog_consumer_position_seq",
            "gauge",
            "Every matching event up to this sequence number was handled by the durable consumer.",
        );
        for consumer in &self.consumers {
            sample(
                &mut out,
                "evlog_consumer_position_seq",
                &consumer.name,
                consumer.position,
            );
        }
        header(
            &mut out,
            "evlog_consumer_lag_events",
            "gauge",
            "Events after the durable consumer's position.",
        );
        for consumer in &self.consumers {
            sample(
                &mut out,
                "evlog_consumer_lag_events",
                &consumer.name,
                consumer.lag,
            );
        }
        self.render_rate_limits(&mut out);
        out
    }

    /// The storm guard's families, one sample per rate limit labelled
    /// with its pattern; written only when the log has rate limits.
    fn render_rate_limits(&self, out: &mut String) {
        if self.rate_limits.is_empty() {
            return;
        }
        type Read = fn(&RateLimitStats) -> u64;
        let families: [(&str, &str, &str, Read); 5] = [
            (
                "evlog_storms_total",
                "counter",
                "Storms started (one evlog.storm.detected event each) since the log was opened.",
                |stats| stats.storms,
            ),
            (
                "evlog_storm_active",
                "gauge",
                "1 while a request found the rate limit short less than its storm_quiet_ms ago.",
                |stats| u64::from(stats.storm_active),
            ),
            (
                "evlog_rate_limited_refused_events_total",
                "counter",
                "Events of requests the rate limit refused.",
                |stats| stats.refused_events,
            ),
            (
                "evlog_rate_limited_delayed_events_total",
                "counter",
                "Events of requests that waited for the rate limit's tokens, then were written.",
                |stats| stats.delayed_events,
            ),
            (
                "evlog_rate_limited_flagged_events_total",
                "counter",
                "Events written over the rate limit with the evlog.rate_limited mark.",
                |stats| stats.flagged_events,
            ),
        ];
        for (name, kind, help, read) in families {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for stats in &self.rate_limits {
                let _ = writeln!(
                    out,
                    "{name}{{pattern=\"{}\"}} {}",
                    escape_label(stats.limit.pattern()),
                    read(stats)
                );
            }
        }
    }
}

fn render_appends(out: &mut String, appends: &AppendMetrics) {
    counter(
        out,
        "evlog_appended_events_total",
        "Events written since the log was opened.",
        appends.events_appended,
    );
    counter(
        out,
        "evlog_appended_bytes_total",
        "Bytes of records (headers and bodies) written since the log was opened.",
        appends.bytes_appended,
    );
    counter(
        out,
        "evlog_commit_groups_total",
        "Commit groups written (one write, and under Always one fsync, each).",
        appends.commit_groups,
    );
    histogram(
        out,
        "evlog_commit_group_events",
        "Events per commit group.",
        &appends.commit_group_events,
        &|events| events.to_string(),
    );
    histogram(
        out,
        "evlog_fsync_duration_seconds",
        "Duration of each fsync of the active segment.",
        &appends.fsync_duration_us,
        &seconds_of_us,
    );
    counter(
        out,
        "evlog_segment_rolls_total",
        "Segment rolls since the log was opened.",
        appends.segment_rolls,
    );
    gauge(
        out,
        "evlog_writer_queue_requests",
        "Append and sync requests waiting for the writer thread.",
        appends.queue_requests,
    );
    gauge(
        out,
        "evlog_writer_queue_capacity_requests",
        "Capacity of the writer's queue: a full queue makes appenders wait.",
        appends.queue_capacity_requests,
    );
}

fn render_recovery(out: &mut String, recovery: &RecoveryMetrics) {
    gauge(
        out,
        "evlog_recovery_closed_cleanly",
        "1 when the last close was clean and the open scanned nothing.",
        u64::from(recovery.closed_cleanly),
    );
    if let Some(us) = recovery.open_duration_us {
        header(
            out,
            "evlog_recovery_duration_seconds",
            "gauge",
            "How long the open took, recovery included.",
        );
        let _ = writeln!(out, "evlog_recovery_duration_seconds {}", seconds_of_us(us));
    }
    gauge(
        out,
        "evlog_recovery_torn_tail_bytes",
        "Bytes after the last complete unit of the active segment at the open.",
        recovery.torn_tail_bytes,
    );
    gauge(
        out,
        "evlog_recovery_dropped_records",
        "Valid records among the torn tail, cut at the open (copied to lost+found).",
        recovery.records_dropped,
    );
    gauge(
        out,
        "evlog_recovery_rebuilt_indexes",
        "Sequence indexes rebuilt from their segment at the open.",
        recovery.indexes_rebuilt,
    );
    gauge(
        out,
        "evlog_recovery_damaged_segments",
        "Sealed segments found damaged and opened anyway.",
        recovery.damaged_segments,
    );
}

/// Microseconds as a decimal number of seconds (`2500` is `0.0025`).
fn seconds_of_us(us: u64) -> String {
    let whole = us / 1_000_000;
    let fraction = us % 1_000_000;
    if fraction == 0 {
        whole.to_string()
    } else {
        let digits = format!("{fraction:06}");
        format!("{whole}.{}", digits.trim_end_matches('0'))
    }
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    // Writing to a String cannot fail.
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

fn gauge(out: &mut String, name: &str, help: &str, value: u64) {
    header(out, name, "gauge", help);
    let _ = writeln!(out, "{name} {value}");
}

fn counter(out: &mut String, name: &str, help: &str, value: u64) {
    header(out, name, "counter", help);
    let _ = writeln!(out, "{name} {value}");
}

/// A Prometheus histogram: cumulative `_bucket` lines with `le` written
/// by `bound` (in the metric's unit), `+Inf`, `_sum` and `_count`.
fn histogram(
    out: &mut String,
    name: &str,
    help: &str,
    histogram: &Histogram,
    bound: &dyn Fn(u64) -> String,
) {
    header(out, name, "histogram", help);
    let mut cumulative = 0u64;
    for (index, upper) in histogram.bounds.iter().enumerate() {
        cumulative += histogram.counts.get(index).copied().unwrap_or(0);
        let _ = writeln!(
            out,
            "{name}_bucket{{le=\"{}\"}} {cumulative}",
            bound(*upper)
        );
    }
    let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {}", histogram.count);
    let _ = writeln!(out, "{name}_sum {}", bound(histogram.sum));
    let _ = writeln!(out, "{name}_count {}", histogram.count);
}

fn sample(out: &mut String, name: &str, consumer: &str, value: u64) {
    let _ = writeln!(
        out,
        "{name}{{consumer=\"{}\"}} {value}",
        escape_label(consumer)
    );
}

/// A label value as the exposition format wants it: backslash, double
/// quote and newline escaped (consumer names allow none of them today;
/// this keeps the output valid should that change).
fn escape_label(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_render_every_family_with_help_and_type() {
        let metrics = Metrics {
            first_seq: 3,
            last_seq: 10,
            durable_seq: Some(9),
            segment_count: 2,
            archive_count: 4,
            index: IndexStatus {
                available: true,
                indexed_through: 7,
                ..IndexStatus::default()
            },
            index_lag_events: 3,
            consumers: vec![ConsumerInfo {
                name: "mailer".into(),
                position: 5,
                lag: 5,
            }],
            rate_limits: vec![RateLimitStats {
                limit: crate::RateLimit::new("agent.*", 10.0, 20),
                storms: 2,
                storm_active: true,
                refused_events: 7,
                delayed_events: 0,
                flagged_events: 1,
            }],
            ..Metrics::default()
        };
        let text = metrics.render();
        for line in [
            "evlog_first_seq 3",
            "evlog_last_seq 10",
            "evlog_durable_seq 9",
            "evlog_events 8",
            "evlog_segments 2",
            "evlog_archive_files 4",
            "evlog_index_available 1",
            "evlog_index_indexed_through_seq 7",
            "evlog_index_lag_events 3",
            "evlog_consumer_position_seq{consumer=\"mailer\"} 5",
            "evlog_consumer_lag_events{consumer=\"mailer\"} 5",
            "evlog_storms_total{pattern=\"agent.*\"} 2",
            "evlog_storm_active{pattern=\"agent.*\"} 1",
            "evlog_rate_limited_refused_events_total{pattern=\"agent.*\"} 7",
            "evlog_rate_limited_delayed_events_total{pattern=\"agent.*\"} 0",
            "evlog_rate_limited_flagged_events_total{pattern=\"agent.*\"} 1",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing:\n{text}");
        }
        // Every sample's family has a HELP and a TYPE line before it.
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let family = line.split(['{', ' ']).next().unwrap();
            assert!(text.contains(&format!("# HELP {family} ")), "{family}");
            let kind = if family.ends_with("_total") {
                "counter"
            } else {
                "gauge"
            };
            assert!(
                text.contains(&format!("# TYPE {family} {kind}")),
                "{family}"
            );
        }
    }

    // Counters and histograms follow the exposition format: `_total`
    // counters, cumulative buckets in the metric's unit with `+Inf` equal
    // to `_count`, and the `_sum` in that unit too.
    #[test]
    fn metrics_render_counters_and_histograms() {
        let counters = WriterCounters::default();
        counters.note_group(1, 100);
        counters.note_group(3, 300);
        counters.note_group(20_000, 2_000_000);
        counters.note_fsync(Duration::from_micros(80));
        counters.note_fsync(Duration::from_micros(2_400));
        counters.note_roll();
        let metrics = Metrics {
            appends: Some(counters.snapshot(7)),
            ..Metrics::default()
        };
        let appends = metrics.appends.as_ref().unwrap();
        assert_eq!(appends.commit_group_events.count, 3);
        assert_eq!(
            appends.commit_group_events.counts.len(),
            GROUP_BUCKET_BOUNDS_EVENTS.len() + 1
        );
        let text = metrics.render();
        for line in [
            "# TYPE evlog_appended_events_total counter",
            "evlog_appended_events_total 20004",
            "evlog_appended_bytes_total 2000400",
            "evlog_commit_groups_total 3",
            "# TYPE evlog_commit_group_events histogram",
            "evlog_commit_group_events_bucket{le=\"1\"} 1",
            "evlog_commit_group_events_bucket{le=\"2\"} 1",
            "evlog_commit_group_events_bucket{le=\"4\"} 2",
            "evlog_commit_group_events_bucket{le=\"16384\"} 2",
            "evlog_commit_group_events_bucket{le=\"+Inf\"} 3",
            "evlog_commit_group_events_sum 20004",
            "evlog_commit_group_events_count 3",
            "evlog_fsync_duration_seconds_bucket{le=\"0.0001\"} 1",
            "evlog_fsync_duration_seconds_bucket{le=\"0.001\"} 1",
            "evlog_fsync_duration_seconds_bucket{le=\"0.0025\"} 2",
            "evlog_fsync_duration_seconds_bucket{le=\"1\"} 2",
            "evlog_fsync_duration_seconds_sum 0.00248",
            "evlog_fsync_duration_seconds_count 2",
            "evlog_segment_rolls_total 1",
            "evlog_writer_queue_requests 7",
            "evlog_disk_usage_bytes{kind=\"segments\"} 0",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing:\n{text}");
        }
    }

    #[test]
    fn metrics_seconds_of_us() {
        assert_eq!(seconds_of_us(0), "0");
        assert_eq!(seconds_of_us(100), "0.0001");
        assert_eq!(seconds_of_us(1_000_000), "1");
        assert_eq!(seconds_of_us(2_500_001), "2.500001");
    }

    #[test]
    fn metrics_escape_label_values() {
        assert_eq!(escape_label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
