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
    /// An operating-system call on `path` failed. (The display names the
    /// file; the operating system's words are in `source`, so that a
    /// report that walks the chain does not print them twice.)
    #[error("I/O error on {}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// What the operating system said.
        #[source]
        source: std::io::Error,
    },

    /// The file system holding `path` has no space (or quota) left. Nothing
    /// of the failed append became visible; once space is freed the same
    /// `Log` accepts appends again.
    #[error("disk full: no space left for {}", path.display())]
    DiskFull {
        /// The file that could not grow.
        path: PathBuf,
        /// What the operating system said (ENOSPC or EDQUOT).
        #[source]
        source: std::io::Error,
    },

    /// Bytes on disk are not what the format says they must be.
    #[error("corrupt data in {} at byte offset {offset}: {kind}", file.display())]
    Corrupt {
        /// The damaged file.
        file: PathBuf,
        /// Byte offset of the damage in it.
        offset: u64,
        /// What is wrong there.
        kind: CorruptKind,
    },

    /// A file was written by a newer (or unknown) format version.
    #[error("{} has format version {found}; this build reads version {supported}", file.display())]
    UnsupportedVersion {
        /// The file.
        file: PathBuf,
        /// The version it has.
        found: u32,
        /// The version this build reads.
        supported: u32,
    },

    /// A subscription handler panicked; its subscription ended (the log
    /// goes on).
    #[error("subscription handler panicked: {0}")]
    HandlerPanicked(String),

    /// A durable consumer's position is below the first event the log
    /// still holds: the events between were removed, and delivering from
    /// the first one would skip them silently.
    #[error("consumer {name} is at seq {position} but the log starts at {first_seq}")]
    ConsumerBehindLog {
        /// The consumer's name.
        name: String,
        /// Its committed position.
        position: u64,
        /// The first seq the log holds.
        first_seq: u64,
    },

    /// The archiver stopped after an I/O error or a panic; appends and
    /// reads go on, and archiving resumes at the next open.
    #[error("archiving stopped: {0}")]
    ArchiverStopped(String),

    /// The rules engine stopped on an error (named here); rules can be
    /// registered again after the log is reopened.
    #[error("the rules engine stopped: {0}")]
    RulesStopped(String),

    /// No event in the log has this id.
    #[error("no event with id {0}")]
    UnknownEventId(uuid::Uuid),

    /// The secondary indexes under `path` failed; they are derived data,
    /// so the cure is a rebuild (`Log::reindex`, `evlog reindex`), never a
    /// loss of events.
    #[error("index error in {}: {message}", path.display())]
    Index {
        /// The index directory.
        path: PathBuf,
        /// What failed.
        message: String,
    },

    /// A read-only open found no data directory (or no `segments/` in it).
    #[error("no evlog data directory at {}", path.display())]
    NoDataDirectory {
        /// The path given.
        path: PathBuf,
    },

    /// The path given as a data directory is a file.
    #[error("{} is not a directory", path.display())]
    NotADirectory {
        /// The path given.
        path: PathBuf,
    },

    /// Another process (or another `Log` in this process) holds the directory.
    #[error("data directory {} is locked by pid {pid}", dir.display())]
    Locked {
        /// The data directory.
        dir: PathBuf,
        /// The process holding it, as written in its lock file.
        pid: String,
    },

    /// An earlier failure (a failed fsync, a panicked writer thread) made the
    /// in-memory state untrustworthy. Reopen the log to recover from disk.
    /// `source` is that first failure, shared by every later error.
    #[error("the log is poisoned and must be reopened")]
    Poisoned {
        /// The first failure.
        #[source]
        source: std::sync::Arc<Error>,
    },

    /// The writer thread panicked (the cause of a `Poisoned` error).
    #[error("the writer thread panicked: {0}")]
    WriterPanicked(String),

    /// A broken internal invariant: a bug in evlog, never caused by input.
    #[error("internal error: {0}")]
    Internal(&'static str),

    /// The event type is not a valid dotted name.
    #[error("invalid event type {name:?}: {reason}")]
    InvalidEventType {
        /// The name given (cut to a readable length in the message).
        name: String,
        /// What is wrong with it.
        reason: &'static str,
    },

    /// The event is not acceptable for a reason other than its type.
    #[error("invalid event: {0}")]
    InvalidEvent(String),

    /// An encoded event is larger than `Options::record_bytes_max`.
    #[error("event encodes to {size_bytes} bytes, over the limit of {max_bytes} bytes")]
    RecordTooLarge {
        /// Bytes the event encodes to.
        size_bytes: u64,
        /// The limit, in bytes.
        max_bytes: u64,
    },

    /// An atomic batch does not fit into one segment.
    #[error("batch of {count} events ({size_bytes} bytes) exceeds the atomic batch limit of {max_bytes} bytes / {max_count} events")]
    BatchTooLarge {
        /// Events in the batch.
        count: u64,
        /// Bytes the batch encodes to.
        size_bytes: u64,
        /// The most events one batch may hold.
        max_count: u64,
        /// The most bytes one batch may encode to.
        max_bytes: u64,
    },

    /// No event with this sequence number is in the log.
    #[error("sequence number {0} is not in the log")]
    NotFound(u64),

    /// The event with this sequence number was deleted by retention: the
    /// archive that covered it records which rule removed it and when
    /// (microseconds since the Unix epoch), so it is told apart from
    /// lost data.
    #[error("sequence number {seq} was deleted by retention rule {rule:?} at {deleted_at_us} µs since the epoch")]
    Deleted {
        /// The sequence number asked for.
        seq: u64,
        /// The rule that deleted it.
        rule: String,
        /// When, in microseconds since the Unix epoch.
        deleted_at_us: i64,
    },

    /// Two archive files cover overlapping sequence ranges, so neither can
    /// be trusted to be the one authoritative copy.
    #[error("archives {} and {} cover overlapping sequence ranges", first.display(), second.display())]
    OverlappingArchives {
        /// One of the two archives.
        first: PathBuf,
        /// The other.
        second: PathBuf,
    },

    /// A line of JSON is not an event object (syntax, an unknown field, a
    /// field of the wrong kind). The message says which and at what column
    /// (and line, for text of several lines), with any input it quotes cut
    /// to a readable length; the parser's own error is kept in the
    /// variant (not as a `source`, whose message would repeat it whole).
    #[error("not a valid event object: {}", describe_json_error(.0))]
    EventJson(serde_json::Error),

    /// A payload could not be converted to or from JSON.
    #[error("payload is not valid JSON for this type")]
    Payload(#[source] serde_json::Error),

    /// The log has been closed.
    #[error("the log is closed")]
    Closed,

    /// A batch holds an event whose caller-set id is already in the log
    /// (within the duplicate window, see [`crate::Options::dedup_window`])
    /// while other events of the batch are new, or the duplicates are not
    /// the same events in the same order: the batch is neither a clean
    /// retry nor new, so nothing of it was written.
    #[error("event id {id} is already in the log at sequence number {existing_seq}, but the rest of the batch is not that same earlier batch")]
    DuplicateInBatch {
        /// The id already in the log.
        id: uuid::Uuid,
        /// Where it is.
        existing_seq: u64,
    },

    /// A retention policy is refused (see
    /// [`crate::RetentionPolicyBuilder::build`]); `rule` is the name of the
    /// rule at fault, empty for a setting of the whole policy.
    #[error(
        "invalid retention policy: {}",
        describe_retention_problem(rule, reason)
    )]
    InvalidRetention {
        /// The rule at fault (empty for the whole policy).
        rule: String,
        /// What is wrong.
        reason: String,
    },

    /// A legal hold is refused: a field too long, or too many holds.
    #[error("invalid hold: {reason}")]
    InvalidHold {
        /// What is wrong.
        reason: String,
    },

    /// A configuration file (`DIR/evlog.toml`) is not valid: bad TOML, an
    /// unknown key, a bad value. `line` is 1-based.
    #[error("invalid configuration in {} line {line}: {message}", path.display())]
    Config {
        /// The configuration file.
        path: PathBuf,
        /// The line at fault, 1-based.
        line: u64,
        /// What is wrong there.
        message: String,
    },

    /// A conditional append (see [`crate::Event::expected_version`]) found
    /// its entity at another version than expected: another event got
    /// there first. Nothing of the request was written. `actual` is the
    /// number of events the entity had, counting the events before the
    /// conditional one in the same request.
    #[error("version conflict on entity {entity_type}/{entity_id}: expected version {expected}, but it is at version {actual}")]
    VersionConflict {
        /// The entity's type.
        entity_type: String,
        /// The entity's id.
        entity_id: String,
        /// The version the append expected.
        expected: u64,
        /// The version it found.
        actual: u64,
    },

    /// Talking to a NATS server or JetStream stream failed, or what the
    /// stream holds contradicts the local log (feature `nats`).
    #[error("NATS: {0}")]
    Nats(String),

    /// The storm guard refused the request: events of `event_type` came
    /// faster than the rate limit of `pattern` allows (see
    /// [`crate::RateLimit`]), and its policy refuses (or it delayed the
    /// caller as long as it may). Nothing of the request was written.
    #[error("event type {event_type:?} is over the rate limit {pattern:?} of {rate_per_s} events/s with a burst of {burst}: refused, nothing of the request was written")]
    RateLimited {
        /// The type of the first event of the request the limit matched.
        event_type: String,
        /// The limit's type pattern.
        pattern: String,
        /// The limit's rate, in events per second.
        rate_per_s: f64,
        /// The limit's burst, in events.
        burst: u64,
    },

    /// An event does not satisfy the contract of `pattern` (see
    /// [`crate::Contract`]): `field` (a top-level payload field, a JSON
    /// pointer, `payload` for the payload as a whole or
    /// `metadata.schema_version`) is not `expected`; `found` says what it
    /// is. Nothing of the request was written.
    #[error("event type {event_type:?} violates the contract {pattern:?}: {field} must be {expected}, found {found}")]
    ContractViolation {
        /// The violating event's type.
        event_type: String,
        /// The contract's type pattern.
        pattern: String,
        /// The field at fault (name, JSON pointer, `payload` or
        /// `metadata.schema_version`).
        field: String,
        /// What the contract requires of it.
        expected: String,
        /// What the event has instead.
        found: String,
    },

    /// A rate limit or a contract given to [`crate::Options`] is not
    /// valid (a bad pattern, a rate that is not positive, an unknown JSON
    /// type, a JSON Schema that does not compile).
    #[error("invalid {what} for {pattern:?}: {reason}")]
    InvalidGuard {
        /// `rate limit` or `contract`.
        what: &'static str,
        /// Its type pattern.
        pattern: String,
        /// What is wrong with it.
        reason: String,
    },
}

/// A `serde_json` error with the input it quotes cut short (an unknown
/// field or a string of the wrong kind is echoed between quotes) and its
/// position as a column alone when the text was one line, since the
/// callers' own line numbers (of stdin, of a file) are the ones that mean
/// something to a reader.
fn describe_json_error(error: &serde_json::Error) -> String {
    let text = error.to_string();
    let position = format!(" at line {} column {}", error.line(), error.column());
    let message = match text.strip_suffix(&position) {
        Some(message) => message,
        None => return shorten_quoted(&text),
    };
    if error.line() == 1 {
        format!("{} at column {}", shorten_quoted(message), error.column())
    } else {
        format!("{}{position}", shorten_quoted(message))
    }
}

/// `text` with every span between backticks or double quotes that is too
/// long to read cut down by [`crate::event::shorten_for_message`].
pub(crate) fn shorten_quoted(text: &str) -> String {
    let mut out = String::with_capacity(text.len().min(1024));
    let mut rest = text;
    while let Some(open) = rest.find(['`', '"']) {
        let quote = &rest[open..open + 1];
        let Some(len) = rest[open + 1..].find(quote) else {
            break;
        };
        out.push_str(&rest[..=open]);
        out.push_str(&crate::event::shorten_for_message(
            &rest[open + 1..open + 1 + len],
        ));
        out.push_str(quote);
        rest = &rest[open + 1 + len + 1..];
    }
    out.push_str(rest);
    out
}

fn describe_retention_problem(rule: &str, reason: &str) -> String {
    if rule.is_empty() {
        reason.to_string()
    } else {
        format!("rule {rule:?}: {reason}")
    }
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
    RecordChecksum {
        /// The CRC stored in the header.
        stored: u32,
        /// The CRC of the bytes read.
        computed: u32,
    },
    /// A record's length field is zero or over the limit.
    RecordLength(u32),
    /// The file ends in the middle of a record or header.
    Truncated,
    /// A record carries a different sequence number than its position implies.
    Sequence {
        /// The seq the position implies.
        expected: u64,
        /// The seq the record carries.
        found: u64,
    },
    /// A record's commit-group fields are inconsistent.
    CommitGroup,
    /// The record body passed its checksum but does not decode.
    Decode(String),
    /// A JSON file (a marker, a rule's statistics) is not the JSON its
    /// format describes; the text names the line and column.
    Json(String),
    /// A sequence-index file disagrees with its segment.
    Index(&'static str),
    /// Valid records follow an invalid one, so the damage is not a torn tail.
    MidLog,
    /// Segment files do not form one gap-free sequence range.
    Gap {
        /// The first seq the next segment should have.
        expected: u64,
        /// The first seq it has.
        found: u64,
    },
    /// A segment's records end inside an atomic unit (one append request):
    /// in a sealed segment, or in data a clean close vouched for.
    IncompleteUnit,
    /// Bytes follow the last record of a sealed segment.
    TrailingBytes,
    /// Damage to a record that a clean close vouched for (so it was
    /// acknowledged and durable): reported, never cut away on open. `seq`
    /// is the sequence number that record should have.
    Vouched {
        /// The sequence number the damaged record should have.
        seq: u64,
        /// What is wrong with it.
        damage: Box<CorruptKind>,
    },
    /// An archive file (`.evz`) is not what FORMAT.md says: a metadata
    /// frame disagrees with another, a data frame does not decompress to
    /// what its index entry promises.
    Archive(&'static str),
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
            CorruptKind::Json(msg) => write!(f, "not the JSON its format describes: {msg}"),
            CorruptKind::Index(what) => write!(f, "sequence index: {what}"),
            CorruptKind::MidLog => write!(
                f,
                "invalid record followed by valid later records (damage, not a torn tail)"
            ),
            CorruptKind::Gap { expected, found } => write!(
                f,
                "segments are not contiguous: expected first sequence {expected}, found {found}"
            ),
            CorruptKind::IncompleteUnit => {
                write!(f, "the records end inside an atomic unit (append request)")
            }
            CorruptKind::TrailingBytes => {
                write!(f, "bytes follow the last record of a sealed segment")
            }
            CorruptKind::Vouched { seq, damage } => write!(
                f,
                "sequence {seq}, which a clean close recorded as durable, is damaged ({damage}); \
                 `evlog repair` moves it and what follows to lost+found"
            ),
            CorruptKind::Archive(what) => write!(f, "archive: {what}"),
        }
    }
}

/// For callers that work in `std::io` terms: full disks keep their kind,
/// every other error is `Other` with this error as its source.
impl From<Error> for std::io::Error {
    fn from(error: Error) -> std::io::Error {
        let kind = match &error {
            Error::Io { source, .. } | Error::DiskFull { source, .. } => source.kind(),
            Error::NotFound(_) | Error::Deleted { .. } | Error::NoDataDirectory { .. } => {
                std::io::ErrorKind::NotFound
            }
            Error::Corrupt { .. } | Error::UnsupportedVersion { .. } => {
                std::io::ErrorKind::InvalidData
            }
            Error::InvalidEventType { .. }
            | Error::InvalidEvent(_)
            | Error::RecordTooLarge { .. }
            | Error::BatchTooLarge { .. }
            | Error::EventJson(_)
            | Error::Payload(_)
            | Error::InvalidRetention { .. }
            | Error::InvalidHold { .. }
            | Error::Config { .. }
            | Error::ContractViolation { .. }
            | Error::InvalidGuard { .. } => std::io::ErrorKind::InvalidInput,
            Error::RateLimited { .. } => std::io::ErrorKind::WouldBlock,
            Error::DuplicateInBatch { .. } => std::io::ErrorKind::AlreadyExists,
            _ => std::io::ErrorKind::Other,
        };
        std::io::Error::new(kind, error)
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
        self.map_err(|source| io_error(path, source))
    }
}

/// The error for a failed operation on `path`: `DiskFull` when the file
/// system is out of space or quota, `Io` otherwise.
pub(crate) fn io_error(path: &std::path::Path, source: std::io::Error) -> Error {
    if is_disk_full(&source) {
        Error::DiskFull {
            path: path.to_path_buf(),
            source,
        }
    } else {
        Error::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

pub(crate) fn is_disk_full(error: &std::io::Error) -> bool {
    matches!(
        error.kind(),
        std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded
    )
}

/// A copy of an `io::Error` (which cannot be cloned): the same OS error
/// code where there is one, else the same kind and message.
fn copy_io_error(error: &std::io::Error) -> std::io::Error {
    match error.raw_os_error() {
        Some(code) => std::io::Error::from_raw_os_error(code),
        None => std::io::Error::new(error.kind(), error.to_string()),
    }
}

impl Error {
    /// The same failure again, for each caller of a commit group that
    /// failed as a whole (`Error` cannot be `Clone` because `io::Error`
    /// is not). Errors that cannot occur there become `Internal`.
    pub(crate) fn duplicate(&self) -> Error {
        match self {
            Error::Io { path, source } => Error::Io {
                path: path.clone(),
                source: copy_io_error(source),
            },
            Error::DiskFull { path, source } => Error::DiskFull {
                path: path.clone(),
                source: copy_io_error(source),
            },
            Error::Poisoned { source } => Error::Poisoned {
                source: std::sync::Arc::clone(source),
            },
            Error::Internal(what) => Error::Internal(what),
            Error::Closed => Error::Closed,
            // Reading the log back (to rebuild the duplicate window or
            // count an entity's events) can meet damage.
            Error::Corrupt { file, offset, kind } => Error::Corrupt {
                file: file.clone(),
                offset: *offset,
                kind: kind.clone(),
            },
            _ => Error::Internal("an unexpected error failed a commit group"),
        }
    }

    /// Whether this is (or was poisoned by) a full disk.
    pub fn is_disk_full(&self) -> bool {
        match self {
            Error::DiskFull { .. } => true,
            Error::Poisoned { source } => source.is_disk_full(),
            _ => false,
        }
    }
}
