//! How a log is opened: durability and size limits.

use std::time::Duration;

/// Hard ceiling for `record_bytes_max`: bounds what a decoder may allocate
/// for one record, whatever a damaged length field claims.
pub const RECORD_BYTES_LIMIT: u64 = 16 * 1024 * 1024;
/// Smallest segment size accepted: below this, per-segment overhead (two
/// files, a directory fsync per roll) dominates.
pub const SEGMENT_BYTES_MIN: u64 = 64 * 1024;

/// Default of [`Options::dedup_window`]: at most about 7 MB of memory once
/// the window is in use (a hash table of ids and sequence numbers that
/// holds up to twice the window before it drops the stale entries).
pub const DEDUP_WINDOW_IDS_DEFAULT: usize = 100_000;

/// Default of [`Options::archive_cache_bytes`].
pub const ARCHIVE_CACHE_BYTES_DEFAULT: u64 = 32 * 1024 * 1024;

/// When an append counts as done.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// `append` returns only after the event is on stable storage
    /// (`fdatasync`). Concurrent appends share one fsync (group commit).
    Always,
    /// `append` returns once the event is written to the OS; the writer
    /// syncs at least this often, so a power loss loses at most about this
    /// much time of acknowledged events. A process crash loses nothing.
    Interval(Duration),
    /// `append` returns once written to the OS; syncs happen only when a
    /// segment is sealed and on close. A process crash loses nothing; a power
    /// loss may lose acknowledged events.
    OsBuffered,
}

/// Options for [`crate::Log::open`].
///
/// ```
/// use std::time::Duration;
/// use evlog::{Durability, Options};
/// # fn main() -> evlog::Result<()> {
/// // Sync at least every 10 ms instead of before every acknowledgement,
/// // in segments of 64 MiB, with a duplicate window of 10 000 ids.
/// let options = Options::default()
///     .durability(Durability::Interval(Duration::from_millis(10)))
///     .segment_bytes_max(64 * 1024 * 1024)
///     .dedup_window(10_000);
/// assert_eq!(options.get_segment_bytes_max(), 64 * 1024 * 1024);
/// let log = evlog::Log::open_temporary(options)?;
/// log.append(evlog::Event::new("app.started"))?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct Options {
    pub(crate) durability: Durability,
    pub(crate) segment_bytes_max: u64,
    pub(crate) record_bytes_max: u64,
    pub(crate) preallocate_bytes: u64,
    pub(crate) secondary_indexes: bool,
    pub(crate) read_buffer_bytes: u64,
    pub(crate) subscription_queue_bytes: u64,
    pub(crate) dedup_window_ids: usize,
    pub(crate) retention: Option<crate::retention::RetentionPolicy>,
    pub(crate) archive_cache_bytes: u64,
    pub(crate) rate_limits: Vec<crate::guard::RateLimit>,
    pub(crate) contracts: Vec<crate::contracts::Contract>,
    #[cfg(feature = "opentelemetry")]
    pub(crate) traceparent_from_context: bool,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            durability: Durability::Always,
            segment_bytes_max: 64 * 1024 * 1024,
            record_bytes_max: 1024 * 1024,
            preallocate_bytes: 4 * 1024 * 1024,
            secondary_indexes: true,
            read_buffer_bytes: 256 * 1024,
            subscription_queue_bytes: 1024 * 1024,
            dedup_window_ids: DEDUP_WINDOW_IDS_DEFAULT,
            retention: None,
            archive_cache_bytes: ARCHIVE_CACHE_BYTES_DEFAULT,
            rate_limits: Vec::new(),
            contracts: Vec::new(),
            #[cfg(feature = "opentelemetry")]
            traceparent_from_context: false,
        }
    }
}

impl Options {
    /// The defaults, as [`Options::default`].
    pub fn new() -> Options {
        Options::default()
    }

    /// When appends are acknowledged. Default: [`Durability::Always`].
    pub fn durability(mut self, durability: Durability) -> Options {
        self.durability = durability;
        self
    }

    /// Size at which the active segment is sealed and a new one started.
    /// Default 64 MiB; at least [`SEGMENT_BYTES_MIN`]. An atomic batch is
    /// never split, so it must fit in one segment.
    pub fn segment_bytes_max(mut self, bytes: u64) -> Options {
        self.segment_bytes_max = bytes.max(SEGMENT_BYTES_MIN);
        self
    }

    /// Largest accepted encoded record. Default 1 MiB; at most
    /// [`RECORD_BYTES_LIMIT`].
    pub fn record_bytes_max(mut self, bytes: u64) -> Options {
        self.record_bytes_max = bytes.clamp(1024, RECORD_BYTES_LIMIT);
        self
    }

    /// How far ahead of the write position the active segment is filled
    /// with zeros, so that an fsync does not also have to persist a new file
    /// size and block allocation. 0 disables it. Default 4 MiB.
    pub fn preallocate_bytes(mut self, bytes: u64) -> Options {
        self.preallocate_bytes = bytes;
        self
    }

    /// Most bytes an iterator, and so a subscription or a durable consumer,
    /// reads ahead where a segment is read with `pread` rather than mapped
    /// (default 256 KiB, at least 4 KiB). With one record, this bounds the
    /// memory of a subscriber that is behind; a caught-up one also has its
    /// share of the dispatcher's window
    /// ([`Self::subscription_queue_bytes`]).
    pub fn read_buffer_bytes(mut self, bytes: u64) -> Options {
        self.read_buffer_bytes = bytes.max(4096);
        self
    }

    /// Most bytes of decoded events the `evlog:dispatch` thread keeps for
    /// each caught-up subscriber it serves (default 1 MiB, counted as each
    /// event's encoded size plus the decoded event's fixed part). The
    /// dispatcher keeps the newest events it read in one window shared by
    /// all of them, of this many bytes times their number, each event
    /// once however many subscribers want it, and kept full (the oldest
    /// events go only to make room); a subscriber also holds the events
    /// of the one chunk (a quarter of this at most) it is taking.
    /// A subscriber that falls behind the window is not dropped and does
    /// not slow appends: it reads the log itself (within
    /// [`Self::read_buffer_bytes`]) until it reaches the window again.
    /// 0 makes every subscriber read the log itself, as does a log with a
    /// single subscription.
    pub fn subscription_queue_bytes(mut self, bytes: u64) -> Options {
        self.subscription_queue_bytes = bytes;
        self
    }

    /// Whether the `evlog:indexer` thread keeps the secondary indexes
    /// under `DIR/index/` (default `true`). Without them every query scans
    /// the log: the same answers, slower.
    pub fn secondary_indexes(mut self, enabled: bool) -> Options {
        self.secondary_indexes = enabled;
        self
    }

    /// How many of the most recently appended events' ids the writer
    /// remembers to recognize a retried append: appending an event whose
    /// caller-set id ([`crate::Event::id`]) is among them writes nothing
    /// and returns the sequence number it already has. Default
    /// [`DEDUP_WINDOW_IDS_DEFAULT`]; 0 turns duplicate detection off.
    ///
    /// Beyond the window a duplicate is not detected: an id older than the
    /// last `ids` events is appended again as a new event (as in NATS
    /// JetStream's duplicate window). Ids evlog generates count too, since
    /// a caller may learn one and retry with it. The window is rebuilt from
    /// the log after a reopen, the first time an append carries a
    /// caller-set id, so opening stays as fast without it.
    pub fn dedup_window(mut self, ids: usize) -> Options {
        self.dedup_window_ids = ids;
        self
    }

    /// What the archiver keeps, archives and deletes (see
    /// [`crate::RetentionPolicy`]). Precedence: a policy given here wins
    /// over the `[retention]` table of `DIR/evlog.toml`
    /// ([`crate::load_config`]), which applies only when none is given
    /// here; with neither, nothing is archived or deleted.
    pub fn retention(mut self, policy: crate::retention::RetentionPolicy) -> Options {
        self.retention = Some(policy);
        self
    }

    /// The policy given with [`Options::retention`], if any.
    pub fn get_retention(&self) -> Option<&crate::retention::RetentionPolicy> {
        self.retention.as_ref()
    }

    /// Most bytes of decompressed archive frames kept in memory for
    /// repeated reads of archived events (default
    /// [`ARCHIVE_CACHE_BYTES_DEFAULT`], 32 MiB). A frame the archiver writes holds at most 256 KiB of records
    /// unless one event is larger; 0 turns the cache off, so that every
    /// archived read decompresses its frame.
    pub fn archive_cache_bytes(mut self, bytes: u64) -> Options {
        self.archive_cache_bytes = bytes;
        self
    }

    /// Adds a rate limit of the storm guard (see [`crate::RateLimit`]),
    /// checked at append in the caller's thread. Precedence: when any
    /// limit is given here, the `[[storm.limit]]` tables of
    /// `DIR/evlog.toml` are ignored; with none given here, the file's
    /// apply. A bad limit fails [`crate::Log::open`] with
    /// [`crate::Error::InvalidGuard`].
    pub fn rate_limit(mut self, limit: crate::guard::RateLimit) -> Options {
        self.rate_limits.push(limit);
        self
    }

    /// Adds a contract (see [`crate::Contract`]), checked at append in the
    /// caller's thread. Precedence: when any contract is given here, the
    /// `[[contract]]` tables of `DIR/evlog.toml` are ignored; with none
    /// given here, the file's apply. A bad contract fails
    /// [`crate::Log::open`] with [`crate::Error::InvalidGuard`].
    pub fn contract(mut self, contract: crate::contracts::Contract) -> Options {
        self.contracts.push(contract);
        self
    }

    /// Whether an event appended without a traceparent
    /// ([`crate::Event::traceparent`]) takes the W3C `traceparent` of the
    /// current OpenTelemetry span (feature `opentelemetry`; default
    /// `false`). The span is the appending thread's current one
    /// (`opentelemetry::Context::current()`), read in that thread when
    /// the batch is encoded; outside any span, or when its span context is
    /// invalid, the event has none. An event's own traceparent is never
    /// replaced, and the events evlog appends in that thread for a call
    /// (a storm's notice, a consumer's same-batch commit) take it too.
    ///
    /// It is a switch of the log, not the mere presence of the feature,
    /// because cargo unifies features: another crate of the build may turn
    /// `opentelemetry` on, and that alone must not change what this log
    /// stores (56 bytes more per event).
    ///
    /// ```
    /// # fn main() -> evlog::Result<()> {
    /// use opentelemetry::trace::{SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState};
    /// let log = evlog::Log::open_temporary(evlog::Options::default().traceparent_from_context(true))?;
    /// // What a propagator attaches for an incoming request (an
    /// // application's own spans work the same way).
    /// let parent = SpanContext::new(
    ///     TraceId::from(0x4bf9_2f35_77b3_4da6_a3ce_929d_0e0e_4736),
    ///     SpanId::from(0x00f0_67aa_0ba9_02b7),
    ///     TraceFlags::SAMPLED,
    ///     true,
    ///     TraceState::default(),
    /// );
    /// let _attached = opentelemetry::Context::new().with_remote_span_context(parent).attach();
    /// let seq = log.append(evlog::Event::new("invoice.paid"))?;
    /// assert_eq!(
    ///     log.get(seq)?.traceparent.as_deref(),
    ///     Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
    /// );
    /// # Ok(()) }
    /// ```
    #[cfg(feature = "opentelemetry")]
    pub fn traceparent_from_context(mut self, enabled: bool) -> Options {
        self.traceparent_from_context = enabled;
        self
    }

    /// Whether [`Options::traceparent_from_context`] is on.
    #[cfg(feature = "opentelemetry")]
    pub fn get_traceparent_from_context(&self) -> bool {
        self.traceparent_from_context
    }

    /// The rate limits given with [`Options::rate_limit`].
    pub fn get_rate_limits(&self) -> &[crate::guard::RateLimit] {
        &self.rate_limits
    }

    /// The contracts given with [`Options::contract`].
    pub fn get_contracts(&self) -> &[crate::contracts::Contract] {
        &self.contracts
    }

    /// The duplicate window, in event ids (see [`Options::dedup_window`]).
    pub fn get_dedup_window(&self) -> usize {
        self.dedup_window_ids
    }
    /// The durability setting.
    pub fn get_durability(&self) -> Durability {
        self.durability
    }
    /// The size at which a segment rolls, in bytes.
    pub fn get_segment_bytes_max(&self) -> u64 {
        self.segment_bytes_max
    }
    /// The largest encoded event accepted, in bytes.
    pub fn get_record_bytes_max(&self) -> u64 {
        self.record_bytes_max
    }
}
