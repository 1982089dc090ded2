//! One error type for the whole library.
//!
//! Errors about bytes on disk always say *where*: the file and the byte
//! offset, so that an operator can look at the damage with `evlog-dump`.

use std::fmt;
use std::path::PathBuf;

/// Everything that can go wrong in `evlog`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An operating-system call on `path` failed.
    #[error("I/O error on {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// Bytes on disk are not what the format says they must be.
    #[error("corrupt data in {} at byte offset {offset}: {kind}", file.display())]
    Corrupt {
        file: PathBuf,
        offset: u64,
        kind: CorruptKind,
    },

    /// A file was written by a newer (or unknown) format version.
    #[error("{} has format version {found}; this build reads version {supported}", file.display())]
    UnsupportedVersion {
        file: PathBuf,
        found: u32,
        supported: u32,
    },

    /// Another process (or another `Log` in this process) holds the directory.
    #[error("data directory {} is locked by pid {pid}", dir.display())]
    Locked { dir: PathBuf, pid: String },

    /// An earlier failure (a failed fsync, a panicked writer thread) made the
    /// in-memory state untrustworthy. Reopen the log to recover from disk.
    #[error("the log is poisoned and must be reopened: {0}")]
    Poisoned(String),

    /// The event type is not a valid dotted name.
    #[error("invalid event type {name:?}: {reason}")]
    InvalidEventType { name: String, reason: &'static str },

    /// The event is not acceptable for a reason other than its type.
    #[error("invalid event: {0}")]
    InvalidEvent(String),

    /// An encoded event is larger than `Options::record_bytes_max`.
    #[error("event encodes to {size_bytes} bytes, over the limit of {max_bytes} bytes")]
    RecordTooLarge { size_bytes: u64, max_bytes: u64 },

    /// An atomic batch does not fit into one segment.
    #[error("batch of {count} events ({size_bytes} bytes) exceeds the atomic batch limit of {max_bytes} bytes / {max_count} events")]
    BatchTooLarge {
        count: u64,
        size_bytes: u64,
        max_count: u64,
        max_bytes: u64,
    },

    /// No event with this sequence number is in the log.
    #[error("sequence number {0} is not in the log")]
    NotFound(u64),

    /// A payload could not be converted to or from JSON.
    #[error("payload is not valid JSON for this type: {0}")]
    Payload(#[source] serde_json::Error),

    /// The log has been closed.
    #[error("the log is closed")]
    Closed,
}

/// What exactly is wrong with corrupt bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum CorruptKind {
    /// The file does not start with the expected magic bytes.
    BadMagic,
    /// A header's checksum does not match its contents.
    HeaderChecksum,
    /// A header field holds an impossible value.
    BadHeader(&'static str),
    /// A record's stored CRC does not match its bytes.
    RecordChecksum { stored: u32, computed: u32 },
    /// A record's length field is zero or over the limit.
    RecordLength(u32),
    /// The file ends in the middle of a record or header.
    Truncated,
    /// A record carries a different sequence number than its position implies.
    Sequence { expected: u64, found: u64 },
    /// A record's commit-group fields are inconsistent.
    CommitGroup,
    /// The record body passed its checksum but does not decode.
    Decode(String),
    /// A sequence-index file disagrees with its segment.
    Index(&'static str),
    /// Valid records follow an invalid one, so the damage is not a torn tail.
    MidLog,
    /// Segment files do not form one gap-free sequence range.
    Gap { expected: u64, found: u64 },
}

impl fmt::Display for CorruptKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CorruptKind::BadMagic => write!(f, "bad magic bytes"),
            CorruptKind::HeaderChecksum => write!(f, "header checksum mismatch"),
            CorruptKind::BadHeader(what) => write!(f, "bad header: {what}"),
            CorruptKind::RecordChecksum { stored, computed } => write!(
                f,
                "record checksum mismatch (stored {stored:#010x}, computed {computed:#010x})"
            ),
            CorruptKind::RecordLength(len) => write!(f, "impossible record length {len}"),
            CorruptKind::Truncated => write!(f, "file ends inside a record"),
            CorruptKind::Sequence { expected, found } => {
                write!(f, "expected sequence {expected}, found {found}")
            }
            CorruptKind::CommitGroup => write!(f, "inconsistent commit group fields"),
            CorruptKind::Decode(msg) => write!(f, "record body does not decode: {msg}"),
            CorruptKind::Index(what) => write!(f, "sequence index: {what}"),
            CorruptKind::MidLog => write!(
                f,
                "invalid record followed by valid later records (damage, not a torn tail)"
            ),
            CorruptKind::Gap { expected, found } => write!(
                f,
                "segments are not contiguous: expected first sequence {expected}, found {found}"
            ),
        }
    }
}

/// The result type of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Attaches a path to an `io::Error`.
pub(crate) trait IoContext<T> {
    fn at(self, path: &std::path::Path) -> Result<T>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn at(self, path: &std::path::Path) -> Result<T> {
        self.map_err(|source| Error::Io {
            path: path.to_path_buf(),
            source,
        })
    }
}
