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
//! The on-disk format is described byte by byte in `FORMAT.md`; the
//! threads, data flow and invariants in `ARCHITECTURE.md`.
#![deny(unsafe_code)]
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

mod admission;
mod codec;
mod compact;
mod consumer;
pub mod dump;
mod error;
mod event;
mod fsutil;
mod index;
pub mod json;
mod log;
mod lost_found;
mod marker;
mod mmap;
#[cfg(feature = "nats")]
pub mod nats;
mod options;
mod query;
mod record;
mod recovery;
mod repair;
mod segment;
pub mod storage;
mod subscribe;
mod watermark;
pub mod workload;
mod writer;

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

    /// Decodes a sequence index header; returns its first sequence number.
    pub fn decode_index_header(bytes: &[u8]) -> crate::Result<u64> {
        crate::index::seq::decode_index_header(bytes, Path::new("fuzz.idx")).map(|h| h.first_seq)
    }
}
pub use consumer::{
    validate_consumer_name, Consumer, ConsumerInfo, FailOutcome, ParkedEvent, CONSUMER_COMMIT_TYPE,
    CONSUMER_ENTITY_TYPE, CONSUMER_NAME_BYTES_MAX, MAX_DELIVERIES_DEFAULT,
};
pub use event::{
    type_matches, validate_event_type, validate_traceparent, Entity, Event, LoggedEvent, Payload,
    Priority, EVENT_TYPE_BYTES_MAX, FIELD_BYTES_MAX, METADATA_ENTRIES_MAX, TIMESTAMP_US_MAX,
    TIMESTAMP_US_MIN,
};
pub use index::indexer::LINK_METADATA_PREFIX;
pub use index::IndexStatus;
pub use log::{Iter, Log, LogReader};
pub use lost_found::{LostFoundCopy, LOST_FOUND_BYTES_MAX};
pub use options::{
    Durability, Options, DEDUP_WINDOW_IDS_DEFAULT, RECORD_BYTES_LIMIT, SEGMENT_BYTES_MIN,
};
pub use query::{
    apply_changes, validate_pattern, CausationTree, ChainReport, Events, Query, StateChange, Stats,
    VerifyReport,
};
pub use recovery::RecoveryReport;
pub use recovery::TailCut;
pub use repair::{repair, RepairCut, RepairMode, RepairReport};
pub use subscribe::{
    Filter, Progress, Start, Subscription, SubscriptionHandle, BOOKKEEPING_TYPE_PREFIX,
};
pub use watermark::{WaitOutcome, Watermark};
