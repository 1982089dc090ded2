//! `evlog`: an embedded, durable event log.
//!
//! Events are appended to CRC-checked segment files by one writer thread
//! that group-commits concurrent appends; an `Ok` from [`Log::append`] means
//! the event is as durable as [`Durability`] says, and after any crash
//! [`Log::open`] gives back every acknowledged event and never a corrupt one.
//!
//! ```
//! use evlog::{Event, Log, Options, Priority};
//!
//! # fn main() -> evlog::Result<()> {
//! # let dir = tempfile::tempdir().unwrap();
//! let log = Log::open(dir.path(), Options::default())?;
//! let seq = log.append(
//!     Event::new("task.status_changed")
//!         .entity("task", "T-1")
//!         .actor("agent-7")
//!         .priority(Priority::P1)
//!         .json_payload(&serde_json::json!({"changes": {"status": {"before": "pending", "after": "done"}}}))?,
//! )?;
//! let event = log.get(seq)?;
//! assert_eq!(event.entity.unwrap().entity_id, "T-1");
//! for event in log.iter(1..)? {
//!     println!("{} {}", event?.seq, "…");
//! }
//! # Ok(()) }
//! ```
//!
//! Appends can be checked at the door, in the caller's thread, before
//! anything is written: [`RateLimit`]s per type pattern refuse, delay or
//! flag floods (one `evlog.storm.detected` event per storm), and
//! [`Contract`]s refuse events without the payload fields (or, with the
//! `json-schema` feature, the JSON Schema) their type requires. Both come
//! from [`Options`] or `DIR/evlog.toml` ([`load_config`]).
//!
//! The on-disk format is described byte by byte in `FORMAT.md`; the
//! threads, data flow and invariants in `ARCHITECTURE.md`.
#![deny(unsafe_code)]
#![warn(missing_docs)]
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

mod admission;
mod archive;
mod archiver;
mod catalog;
mod codec;
mod compact;
mod config;
mod consumer;
mod contracts;
mod dispatch;
/// What the command-line tools share with the library's own messages, so
/// that input echoed in an error is cut the same way everywhere. For
/// `evlog` and `evlog-dump`; not part of the API.
#[doc(hidden)]
pub mod cli_support {
    pub use crate::config::format_duration;
    pub use crate::event::shorten_for_message;
}
// Inspection for `evlog-dump`; not part of the API.
#[doc(hidden)]
pub mod dump;
mod error;
mod event;
mod fsutil;
mod guard;
mod holds;
#[cfg(feature = "http")]
pub mod http;
mod index;
pub mod json;
mod log;
mod lost_found;
mod marker;
pub mod metrics;
mod mmap;
#[cfg(feature = "nats")]
pub mod nats;
mod options;
mod otel;
mod query;
mod record;
mod recovery;
mod repair;
mod retention;
pub mod rules;
mod segment;
pub mod storage;
mod subscribe;
mod sync;
mod syncer;
mod sys;
mod watermark;
// The reference workload W1 for the benchmarks, the demo and the tests;
// not part of the API.
#[doc(hidden)]
pub mod workload;
mod writer;

pub use archive::{
    Archive, ArchiveFrameInfo, ArchiveInfo, ArchiveIter, ArchiveRecordInfo, ArchiveVerifyReport,
    DeletionNote,
};
pub use error::{CorruptKind, Error, Result};
/// The UUID type of event ids, re-exported so that callers use the same
/// major version of `uuid` as evlog.
pub use uuid::Uuid;

/// This crate's version, as in `Cargo.toml`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Every code block of README.md, compiled and run as a test, so that the
/// README's example cannot rot.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;

/// Internal hot paths exposed for the criterion micro-benchmarks only; not
/// part of the API and free to change.
#[doc(hidden)]
pub mod bench_api {
    use crate::{Event, LoggedEvent};

    /// The contracts and rate limits an append passes (benches/guard.rs).
    pub struct Gate(crate::guard::Gate);

    impl Gate {
        pub fn new(
            limits: Vec<crate::RateLimit>,
            contracts: Vec<crate::Contract>,
        ) -> crate::Result<Gate> {
            crate::guard::Gate::new(limits, contracts).map(Gate)
        }

        /// Checks a request as `append_batch` does; storms are ignored.
        /// Returns how many events it would encode.
        pub fn admit(&self, events: &[Event]) -> crate::Result<usize> {
            self.0
                .admit_with(events, &mut |_, _, _| {})
                .map(|events| events.len())
        }
    }

    /// Counters like the writer's (benches/metrics.rs): the same calls it
    /// makes per commit group, fsync and roll, on counters of their own.
    #[derive(Default)]
    pub struct WriterCounters(crate::metrics::WriterCounters);

    impl WriterCounters {
        /// What the writer calls once per commit group.
        pub fn note_group(&self, events: u64, record_bytes: u64) {
            self.0.note_group(events, record_bytes)
        }

        /// What the writer calls once per fsync of the active segment.
        pub fn note_fsync(&self, took: std::time::Duration) {
            self.0.note_fsync(took)
        }

        /// What `Log::metrics` reads of them.
        pub fn snapshot(&self) -> crate::metrics::AppendMetrics {
            self.0.snapshot(0)
        }
    }

    /// Encodes an event body (id and timestamp as given or zero).
    pub fn encode_body(event: &Event, out: &mut Vec<u8>) {
        crate::record::encode_body(
            event,
            event.id.unwrap_or_default(),
            event.timestamp_us.unwrap_or(0),
            out,
        );
    }

    /// Decodes a body produced by `encode_body`.
    pub fn decode_body(body: &[u8]) -> Option<LoggedEvent> {
        crate::record::decode_body(1, body).ok()
    }

    /// Frames a body as a record (header and CRC) into `out`.
    pub fn frame_record(body: &[u8], out: &mut Vec<u8>) {
        crate::record::encode_record(out, 1, 0, 1, body);
    }

    /// Checks a framed record's header and CRC.
    pub fn verify_record(record: &[u8]) -> bool {
        crate::record::verify_record(record, crate::options::RECORD_BYTES_LIMIT).is_ok()
    }

    /// Frames a body as the record of `seq` (a unit of its own).
    pub fn record_with_seq(seq: u64, body: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        crate::record::encode_record(&mut out, seq, 0, 0, body);
        out
    }

    /// The whole records of every sealed segment (all but the last) of
    /// the data directory `dir`, in order, one list per segment, as an
    /// archiver reads them.
    pub fn sealed_records(dir: &std::path::Path) -> crate::Result<Vec<Vec<Vec<u8>>>> {
        use crate::error::IoContext;
        use crate::storage::{OpenMode, OsStorage, Storage};
        let paths = crate::dump::segment_paths(dir)?;
        let mut segments = Vec::new();
        for path in &paths[..paths.len().saturating_sub(1)] {
            let mut records = Vec::new();
            let file = OsStorage.open(path, OpenMode::Read).at(path)?;
            let header = crate::segment::read_segment_header(&*file, path)?;
            let file_bytes = file.size_bytes().at(path)?;
            let scan = crate::segment::scan_records_from(
                &*file,
                path,
                crate::segment::SEGMENT_HEADER_BYTES,
                header.first_seq,
                file_bytes,
                crate::options::RECORD_BYTES_LIMIT,
                &mut |_, _, bytes| records.push(bytes.to_vec()),
            )?;
            if let Some((offset, kind)) = scan.stopped_by {
                return Err(crate::Error::Corrupt {
                    file: path.clone(),
                    offset,
                    kind,
                });
            }
            segments.push(records);
        }
        Ok(segments)
    }

    /// A deletion note (what retention will write).
    pub fn deletion_note(
        first_seq: u64,
        last_seq: u64,
        count: u64,
        rule: &str,
        deleted_at_us: i64,
    ) -> crate::DeletionNote {
        crate::DeletionNote::new(first_seq, last_seq, count, rule, deleted_at_us)
    }

    /// What writing an archive cost.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub struct ArchiveCost {
        pub input_bytes: u64,
        pub output_bytes: u64,
        pub frame_count: u32,
    }

    /// Writes `archive_dir/<range_first_seq>.evz` from whole records (seqs
    /// increasing, inside the range) and deletion notes, at zstd `level`,
    /// with frames of at most `frame_record_bytes_max` bytes of records (0:
    /// the default), on the real file system.
    pub fn write_archive(
        archive_dir: &std::path::Path,
        range_first_seq: u64,
        range_last_seq: u64,
        records: &[Vec<u8>],
        notes: &[crate::DeletionNote],
        level: i32,
        frame_record_bytes_max: usize,
    ) -> crate::Result<ArchiveCost> {
        let frame_record_bytes_max = match frame_record_bytes_max {
            0 => crate::archive::format::FRAME_RECORD_BYTES_DEFAULT,
            bytes => bytes,
        };
        let mut writer = crate::archive::ArchiveWriter::with_frame_bytes(
            &crate::storage::OsStorage,
            archive_dir,
            range_first_seq,
            level,
            frame_record_bytes_max,
        )?;
        for record in records {
            writer.push_record(record)?;
        }
        for note in notes {
            writer.note_deletion(note.clone())?;
        }
        let summary = writer.finish(range_last_seq)?;
        Ok(ArchiveCost {
            input_bytes: summary.input_bytes,
            output_bytes: summary.output_bytes,
            frame_count: summary.frame_count,
        })
    }

    /// The archive file name of a range starting at `range_first_seq`.
    pub fn archive_file_name(range_first_seq: u64) -> String {
        crate::archive::archive_file_name(range_first_seq)
    }
}

/// The decoders of every on-disk structure, exposed for fuzz targets only;
/// not part of the API. Each must return an error, never panic, on any
/// input, and never allocate more than its input justifies.
#[doc(hidden)]
pub mod fuzz_api {
    use std::path::Path;

    /// Decodes a record body.
    pub fn decode_body(bytes: &[u8]) -> Result<crate::LoggedEvent, crate::CorruptKind> {
        crate::record::decode_body(1, bytes)
    }

    /// Checks a whole framed record (header plausibility, length, CRC) and
    /// decodes its body when valid.
    pub fn decode_record(bytes: &[u8]) -> Result<crate::LoggedEvent, crate::CorruptKind> {
        let header = crate::record::verify_record(bytes, crate::options::RECORD_BYTES_LIMIT)?;
        crate::record::decode_body(header.seq, &bytes[crate::record::RECORD_HEADER_BYTES..])
    }

    /// Decodes a segment file header; returns its first sequence number.
    pub fn decode_segment_header(bytes: &[u8]) -> crate::Result<u64> {
        crate::segment::decode_segment_header(bytes, Path::new("fuzz.seg")).map(|h| h.first_seq)
    }

    /// Opens `bytes` as an archive file (on a simulated disk), reads every
    /// event and verifies it; returns the number of events read.
    pub fn open_archive(bytes: &[u8]) -> crate::Result<u64> {
        crate::archive::check_archive_bytes(bytes)
    }

    /// Decodes a sequence index header; returns its first sequence number.
    pub fn decode_index_header(bytes: &[u8]) -> crate::Result<u64> {
        crate::index::seq::decode_index_header(bytes, Path::new("fuzz.idx")).map(|h| h.first_seq)
    }
}
pub use archiver::{ArchiveRunReport, ArchiverStatus};
pub use config::{load_config, parse_config, Config, CONFIG_FILE, CONFIG_FILE_BYTES_MAX};
pub use consumer::{
    validate_consumer_name, Consumer, ConsumerInfo, FailOutcome, ParkedEvent, CONSUMER_COMMIT_TYPE,
    CONSUMER_ENTITY_TYPE, CONSUMER_NAME_BYTES_MAX, MAX_DELIVERIES_DEFAULT,
};
pub use contracts::{Contract, Contracts, JsonType, CONTRACTS_MAX, CONTRACT_FIELDS_MAX};
pub use event::{
    type_matches, validate_event_type, validate_traceparent, Entity, Event, LoggedEvent, Payload,
    Priority, EVENT_TYPE_BYTES_MAX, FIELD_BYTES_MAX, METADATA_ENTRIES_MAX, SCHEMA_VERSION_KEY,
    TIMESTAMP_US_MAX, TIMESTAMP_US_MIN,
};
pub use guard::{
    RateLimit, RateLimitStats, StormPolicy, RATE_LIMITED_KEY, RATE_LIMITS_MAX, STORM_DETECTED_TYPE,
    STORM_ENTITY_TYPE, STORM_QUIET_MS_DEFAULT,
};
pub use holds::{
    holds_in_dir, place_hold_in_dir, release_hold_in_dir, Hold, HoldTarget, HOLDS_FILE, HOLDS_MAX,
    HOLD_REASON_BYTES_MAX,
};
pub use index::indexer::LINK_METADATA_PREFIX;
pub use index::IndexStatus;
pub use log::{Iter, Log, LogReader, PendingAppend};
pub use lost_found::{LostFoundCopy, LOST_FOUND_BYTES_MAX};
pub use options::{
    Durability, Options, ARCHIVE_CACHE_BYTES_DEFAULT, DEDUP_WINDOW_IDS_DEFAULT, RECORD_BYTES_LIMIT,
    SEGMENT_BYTES_MIN,
};
pub use query::{
    apply_changes, validate_pattern, CausationTree, ChainReport, Events, Query, StateChange, Stats,
    VerifyReport,
};
pub use recovery::RecoveryReport;
pub use recovery::TailCut;
pub use repair::{repair, RepairCut, RepairMode, RepairReport};
pub use retention::{
    decide, render_dry_run, render_dry_run_json, ClassStats, PieceKind, PieceSummary,
    RetentionAction, RetentionActionKind, RetentionPlan, RetentionPolicy, RetentionPolicyBuilder,
    RetentionRule, WaitingForConsumers, CHECK_INTERVAL_DEFAULT, CHECK_INTERVAL_MIN,
    KEY_COMPACTION_SUPERSEDED_PERCENT_MIN, RETENTION_RULES_MAX, RULE_NAME_BYTES_MAX, SIZE_CAP_RULE,
};
pub use rules::{Rule, RuleContext, Rules, Trigger};
pub use subscribe::{
    Filter, Progress, Start, Subscription, SubscriptionHandle, BOOKKEEPING_TYPE_PREFIX,
};
pub use watermark::{WaitOutcome, Watermark};
