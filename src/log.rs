//! The `Log` handle: open, append, read, close.

use std::ops::{Bound, Range, RangeBounds};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use uuid::Uuid;

use crate::archive::{ArchiveFile, FrameCache, FrameCursor};
use crate::archiver::{ArchiveRunReport, ArchiverHandle, ArchiverStatus};
use crate::catalog::{Catalog, Holder, Piece};
use crate::error::{Error, Result};
use crate::event::{Entity, Event, LoggedEvent};
use crate::holds::{Hold, HoldTarget};
use crate::options::Options;
use crate::record::{body_bytes_max, encode_body_with_traceparent, RECORD_HEADER_BYTES};
use crate::recovery::{self, Opened, RecoveryReport};
use crate::retention::RetentionPlan;
use crate::segment::{Access, Cursor, Segment, Step, SEGMENT_HEADER_BYTES};
use crate::storage::{OsStorage, Storage};
use crate::watermark::{WaitOutcome, Watermark, Watermarks};
use crate::writer::{PreparedBatch, Request, Writer, WriterHandle, WriterStart};
use crossbeam_channel::{Receiver, Sender};

/// How long `close` waits for the writer to finish its last sync before
/// giving up on it (the data it has not synced is then not promised).
const WRITER_SHUTDOWN_DEADLINE: Duration = Duration::from_secs(30);

/// State shared by the handle, the readers and the writer thread.
pub(crate) struct Shared {
    pub storage: Arc<dyn Storage>,
    pub dir: PathBuf,
    pub segments_dir: PathBuf,
    pub options: Options,
    /// What holds each sequence range, in order; the last piece is the
    /// active segment.
    pub catalog: Catalog,
    /// The published and durable positions (0 while the log is empty).
    pub marks: Watermarks,
    /// Lowest sequence number still in the log.
    pub first_seq: AtomicU64,
    poison: OnceLock<Arc<Error>>,
    /// Held shared by every read that touches the files, and exclusively
    /// by `close`, which sets it to `false`: once a log is closed (and its
    /// directory lock released), nothing that outlived it (an `Iter`) reads
    /// a mapping that a new owner of the directory may cut or replace.
    open: RwLock<bool>,
    /// The secondary indexes (opening, ready, or unavailable).
    pub index: crate::index::IndexSlot,
    /// Decompressed archive frames of recent point reads, bounded by
    /// `Options::archive_cache_bytes`.
    pub frame_cache: FrameCache,
    /// Requests for the indexer thread (rebuilds), shared so that the
    /// archiver can ask for one after retention deleted events.
    pub index_commands: Arc<std::sync::Mutex<Vec<crate::index::indexer::Reindex>>>,
    /// Serializes edits of the holds file.
    pub holds_lock: std::sync::Mutex<()>,
    /// What the writer counts for `Log::metrics` (per commit group, never
    /// per event).
    pub counters: crate::metrics::WriterCounters,
    /// Record buffers the writer hands back for the next batches.
    pub record_buffers: crate::writer::RecordBuffers,
    /// The last sequence number the writer wrote to a segment and indexed
    /// (at or past `marks.last_seq()`: under `Always` a group is published
    /// once synced). Only `scan_bodies` reads it.
    pub written_seq: AtomicU64,
    /// The `evlog:dispatch` thread's slots: live subscribers of a `Log`
    /// share one read of each new record (a `LogReader` has none).
    pub dispatch: crate::dispatch::Dispatch,
}

impl Shared {
    fn new(
        storage: Arc<dyn Storage>,
        dir: PathBuf,
        options: Options,
        opened: &Opened,
        index: crate::index::IndexSlot,
    ) -> Shared {
        let last_seq = opened.next_seq - 1;
        Shared {
            frame_cache: FrameCache::new(options.archive_cache_bytes),
            storage,
            segments_dir: opened.segments_dir.clone(),
            dir,
            options,
            index_commands: Arc::new(std::sync::Mutex::new(Vec::new())),
            holds_lock: std::sync::Mutex::new(()),
            catalog: Catalog::new(opened.pieces.clone()),
            // Recovery left every kept record durable.
            marks: Watermarks::new(last_seq, last_seq),
            first_seq: AtomicU64::new(opened.first_seq),
            poison: OnceLock::new(),
            open: RwLock::new(true),
            index,
            counters: crate::metrics::WriterCounters::default(),
            record_buffers: crate::writer::RecordBuffers::default(),
            written_seq: AtomicU64::new(last_seq),
            dispatch: crate::dispatch::Dispatch::disabled(),
        }
    }

    /// Records the first failure that makes the in-memory state
    /// untrustworthy; later ones are only logged.
    pub fn poison(&self, cause: Error) {
        tracing::error!(error = %cause, "evlog poisoned");
        let _ = self.poison.set(Arc::new(cause));
        self.marks.stop();
    }

    pub fn is_poisoned(&self) -> bool {
        self.poison.get().is_some()
    }

    pub fn poisoned_error(&self) -> Error {
        Error::Poisoned {
            source: self
                .poison
                .get()
                .cloned()
                .unwrap_or_else(|| Arc::new(Error::Internal("the writer thread stopped"))),
        }
    }

    pub fn check_poison(&self) -> Result<()> {
        match self.poison.get() {
            Some(cause) => Err(Error::Poisoned {
                source: Arc::clone(cause),
            }),
            None => Ok(()),
        }
    }

    /// The catalog's pieces changed (an archive replaced a piece): the
    /// first event still held may have moved forward.
    pub fn catalog_changed(&self) {
        let next = self.marks.last_seq() + 1;
        self.first_seq
            .store(self.catalog.first_held_seq(next), Ordering::Release);
    }

    /// Retention deleted events: their index entries must go. The
    /// indexes are rebuilt from the log (which no longer holds them) by
    /// the indexer thread; meanwhile queries scan the log past the reset
    /// mark, so no answer includes a deleted event or misses a kept one.
    /// Returns once the rebuild is done, or at once when this log has no
    /// running indexer.
    pub fn forget_deleted(&self) {
        if self.index.get().is_none() {
            return;
        }
        let (progress, done) = crossbeam_channel::unbounded();
        self.index_commands
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(crate::index::indexer::Reindex { progress });
        loop {
            match done.recv_timeout(std::time::Duration::from_millis(500)) {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "rebuilding the indexes after a deletion failed");
                    return;
                }
                // The indexer dropped the request: the rebuild is over.
                Err(crossbeam_channel::RecvTimeoutError::Disconnected) => return,
                Err(crossbeam_channel::RecvTimeoutError::Timeout) => {
                    if self.index.status().stopped_because.is_some() || self.marks.is_stopped() {
                        return;
                    }
                }
            }
        }
    }

    pub fn push_segment(&self, segment: Arc<Segment>) {
        self.catalog.push(Piece::segment(segment));
    }

    /// The piece that holds `seq`, which the caller knows is published.
    fn piece_for(&self, seq: u64) -> Result<Piece> {
        self.catalog.locate(seq).ok_or(Error::NotFound(seq))
    }

    pub fn segments(&self) -> Vec<Arc<Segment>> {
        self.catalog.segments()
    }

    /// Runs `read` while the log is open, so that `close` waits for it and
    /// nothing reads the files after.
    fn while_open<T>(&self, read: impl FnOnce() -> Result<T>) -> Result<T> {
        let open = self
            .open
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if !*open {
            return Err(Error::Closed);
        }
        read()
    }

    /// Marks the log closed once no read is in progress.
    fn close_readers(&self) {
        *self
            .open
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = false;
    }

    pub(crate) fn get(&self, seq: u64) -> Result<LoggedEvent> {
        self.check_poison()?;
        let last = self.marks.last_seq();
        if seq == 0 || seq > last {
            return Err(Error::NotFound(seq));
        }
        self.while_open(|| match self.piece_for(seq)?.holder {
            Holder::Segment(segment) => segment.read_event(seq, self.options.record_bytes_max),
            Holder::Archive(archive) => match archive.read_event(seq, &self.frame_cache)? {
                Some(event) => Ok(event),
                None => Err(missing_from_archive(&archive, seq)),
            },
        })
    }

    /// Starts loading the record of `seq` into the CPU cache, if it is
    /// published and live (a hint: errors are ignored, nothing is read).
    pub(crate) fn prefetch(&self, seq: u64) {
        if seq == 0 || seq > self.marks.last_seq() {
            return;
        }
        let _ = self.while_open(|| {
            if let Holder::Segment(segment) = self.piece_for(seq)?.holder {
                segment.prefetch_record(seq);
            }
            Ok(())
        });
    }

    pub(crate) fn iter(self: &Arc<Self>, range: impl RangeBounds<u64>) -> Result<Iter> {
        self.check_poison()?;
        let last = self.marks.last_seq();
        let first = self.first_seq.load(Ordering::Acquire);
        let start = match range.start_bound() {
            Bound::Included(&s) => s,
            Bound::Excluded(&s) => s.saturating_add(1),
            Bound::Unbounded => first,
        }
        .max(first);
        let end = match range.end_bound() {
            Bound::Included(&e) => e,
            Bound::Excluded(&e) => e.saturating_sub(1),
            Bound::Unbounded => last,
        }
        .min(last);
        Ok(Iter {
            shared: Arc::clone(self),
            next_seq: start,
            last_seq: end,
            place: Place::Unplaced,
            failed: false,
        })
    }

    /// Calls `each` with the sequence number and body of every written
    /// event in `from_seq..=through_seq`, in order, every CRC checked.
    /// Written, not only published: under `Durability::Always` a group
    /// whose fsync is in flight is published only once synced, and the
    /// writer's own reads (its duplicate window, entity versions) must see
    /// it; other callers bound `through_seq` by `last_seq` themselves.
    pub(crate) fn scan_bodies(
        &self,
        from_seq: u64,
        through_seq: u64,
        each: &mut crate::segment::BodyVisitor<'_>,
    ) -> Result<()> {
        self.check_poison()?;
        let from_seq = from_seq.max(self.first_seq.load(Ordering::Acquire));
        let written = self
            .written_seq
            .load(Ordering::Acquire)
            .max(self.marks.last_seq());
        let through_seq = through_seq.min(written);
        if from_seq > through_seq {
            return Ok(());
        }
        self.while_open(|| {
            for piece in self.catalog.pieces() {
                if piece.first_seq > through_seq {
                    break;
                }
                match &piece.holder {
                    Holder::Segment(segment) => segment.scan_bodies(
                        from_seq,
                        through_seq,
                        self.options.record_bytes_max,
                        each,
                    )?,
                    Holder::Archive(archive) => {
                        if archive.range_last_seq() >= from_seq {
                            archive.scan_bodies(from_seq, through_seq, None, each)?;
                        }
                    }
                }
            }
            Ok(())
        })
    }

    /// The version of `entity` as of `through_seq`: how many of its events
    /// have sequence numbers up to it. Counted in the entity index up to
    /// its mark, then by a scan of the bodies after it (the writer asks
    /// only on a miss of its own cache).
    pub(crate) fn entity_version(&self, entity: &Entity, through_seq: u64) -> Result<u64> {
        let (mut version, from) = match self.index.get() {
            Some(index) => {
                let mark = index.mark().min(through_seq);
                let key = crate::index::keys::entity_key(entity);
                let indexed =
                    index.count_postings(crate::index::keys::PostingKind::Entity, &key, mark)?;
                (indexed, mark + 1)
            }
            None => (0, 1),
        };
        if from <= through_seq {
            self.scan_bodies(from, through_seq, &mut |_, body| {
                if let Some((entity_type, entity_id)) = crate::record::body_entity(body)? {
                    if entity_type == entity.entity_type && entity_id == entity.entity_id {
                        version += 1;
                    }
                }
                Ok(())
            })?;
        }
        Ok(version)
    }

    fn first_seq(&self) -> Option<u64> {
        let first = self.first_seq.load(Ordering::Acquire);
        let last = self.marks.last_seq();
        (last > 0 && last >= first).then_some(first)
    }

    fn last_seq(&self) -> Option<u64> {
        let last = self.marks.last_seq();
        (last > 0).then_some(last)
    }
}

/// Validates, stamps and encodes events in the caller's thread, so the
/// writer thread only frames and writes.
fn prepare(
    shared: &Arc<Shared>,
    gate: &crate::guard::Gate,
    tx: Option<&Sender<Request>>,
    events: &[Event],
) -> Result<PreparedBatch> {
    // Contracts first: a malformed event takes no token.
    gate.check_contracts(events)?;
    if !gate.has_limits() {
        return encode_batch(shared, events, None);
    }
    // Each event's rate-limit mask is computed in the encoding pass, while
    // its type is in cache (a pass of its own, over types not in cache,
    // made 10 limits cost A2 about 15 %; in this pass the cost did not
    // show in benches/guard.rs), and
    // the tokens are taken once the whole batch proved valid, so an
    // invalid batch takes none. Nothing reaches the writer before that.
    let mut masks = Vec::with_capacity(events.len());
    let batch = encode_batch(shared, events, Some((gate, &mut masks)))?;
    // A storm's one `evlog.storm.detected` event goes through the same
    // writer (types under `evlog.` take no token, so this does not recurse).
    let marked = gate.admit_limits(events, &masks, &mut |limit, event_type, storm| {
        crate::guard::append_storm_event(limit, event_type, storm, &mut |event| {
            append_batch(shared, gate, tx, std::slice::from_ref(&event)).map(|_| ())
        })
    })?;
    match marked {
        None => Ok(batch),
        // The Flag policy marked some events: encode them again.
        Some(marked) => encode_batch(shared, &marked, None),
    }
}

/// Validates, stamps and encodes `events`; with `masks`, also pushes each
/// event's rate-limit mask.
fn encode_batch(
    shared: &Shared,
    events: &[Event],
    mut masks: Option<(&crate::guard::Gate, &mut Vec<u64>)>,
) -> Result<PreparedBatch> {
    let options = &shared.options;
    // What the events without a traceparent store instead (feature
    // `opentelemetry`): read here, in the caller's thread, where the
    // thread-local context is; `None` without the feature.
    let context_traceparent = crate::otel::context_traceparent(options, events);
    let context_traceparent = context_traceparent.as_deref();
    // An event's own traceparent is never replaced.
    fn stored_traceparent<'a>(event: &'a Event, from_context: Option<&'a str>) -> Option<&'a str> {
        event.traceparent.as_deref().or(from_context)
    }
    // One buffer for the whole batch, sized once: growing it would copy
    // every body again.
    let capacity: usize = events
        .iter()
        .map(|e| {
            RECORD_HEADER_BYTES + body_bytes_max(e, stored_traceparent(e, context_traceparent))
        })
        .sum();
    let mut batch = PreparedBatch {
        records: shared.record_buffers.take(capacity),
        record_ends: Vec::with_capacity(events.len()),
        ids: Vec::with_capacity(events.len()),
        id_set_by_caller: Vec::with_capacity(events.len()),
        expected_versions: Vec::new(),
    };
    let now_us = now_micros();
    for (index, event) in events.iter().enumerate() {
        event.validate()?;
        if let Some((gate, masks)) = masks.as_mut() {
            masks.push(gate.limit_mask(event));
        }
        let start = batch.records.len();
        // Room for the header, which the writer fills in.
        batch.records.resize(start + RECORD_HEADER_BYTES, 0);
        let id = event.id.unwrap_or_else(Uuid::now_v7);
        batch.ids.push(id);
        batch.id_set_by_caller.push(event.id.is_some());
        if let Some(expected) = event.expected_version {
            batch.expected_versions.push((index, expected));
        }
        encode_body_with_traceparent(
            event,
            id,
            event.timestamp_us.unwrap_or(now_us),
            stored_traceparent(event, context_traceparent),
            &mut batch.records,
        );
        let record_bytes = (batch.records.len() - start) as u64;
        if record_bytes > options.record_bytes_max {
            return Err(Error::RecordTooLarge {
                size_bytes: record_bytes,
                max_bytes: options.record_bytes_max,
            });
        }
        batch.record_ends.push(batch.records.len());
    }
    batch.check_ids_unique()?;
    let batch_bytes_max = options.segment_bytes_max - SEGMENT_HEADER_BYTES;
    if batch.record_bytes() > batch_bytes_max || batch.len() > u64::from(u32::MAX) {
        return Err(Error::BatchTooLarge {
            count: batch.len(),
            size_bytes: batch.record_bytes(),
            max_count: u64::from(u32::MAX),
            max_bytes: batch_bytes_max,
        });
    }
    Ok(batch)
}

/// Hands a prepared batch to the writer; the answer (the batch's first
/// seq, once durable as the options say) comes on the returned channel.
fn hand_over(
    shared: &Shared,
    tx: Option<&Sender<Request>>,
    batch: PreparedBatch,
) -> Result<Receiver<Result<u64>>> {
    shared.check_poison()?;
    let tx = tx.ok_or(Error::Closed)?;
    let (reply, answer) = crossbeam_channel::bounded(1);
    tx.send(Request::Append {
        batch,
        caller: std::thread::current().id(),
        reply,
    })
    .map_err(|_| shared.poisoned_error())?;
    Ok(answer)
}

/// An `append_batch` handed to the writer whose outcome is not known yet,
/// from [`Log::submit_batch`]. [`PendingAppend::wait`] returns what
/// `append_batch` would have: the batch's sequence numbers once it is as
/// durable as the options say.
///
/// Dropping it without waiting does not cancel the append: the batch is
/// written (or refused) all the same; only its outcome is not learnt. An
/// event counts as acknowledged only once `wait` returned `Ok`.
#[must_use = "the outcome of the append, and its durability, is only known through wait()"]
pub struct PendingAppend {
    state: PendingState,
}

enum PendingState {
    /// An empty batch: nothing was sent.
    Ready(Range<u64>),
    Sent {
        answer: Receiver<Result<u64>>,
        count: u64,
        shared: Arc<Shared>,
    },
}

impl PendingAppend {
    /// Waits until the batch is durable as the options say (or refused)
    /// and returns its sequence numbers, as [`Log::append_batch`] does.
    pub fn wait(self) -> Result<Range<u64>> {
        match self.state {
            PendingState::Ready(range) => Ok(range),
            PendingState::Sent {
                answer,
                count,
                shared,
            } => {
                let first = answer.recv().map_err(|_| shared.poisoned_error())??;
                Ok(first..first + count)
            }
        }
    }
}

impl std::fmt::Debug for PendingAppend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.state {
            PendingState::Ready(range) => {
                f.debug_tuple("PendingAppend::Ready").field(range).finish()
            }
            PendingState::Sent { count, .. } => f
                .debug_struct("PendingAppend::Sent")
                .field("count", count)
                .finish(),
        }
    }
}

/// Validates and encodes `events` in this thread and hands them to the
/// writer as one atomic unit; the outcome comes through the returned
/// [`PendingAppend`]. Every append goes through here.
fn submit_batch(
    shared: &Arc<Shared>,
    gate: &crate::guard::Gate,
    tx: Option<&Sender<Request>>,
    events: &[Event],
) -> Result<PendingAppend> {
    if events.is_empty() {
        let next = shared.marks.last_seq() + 1;
        return Ok(PendingAppend {
            state: PendingState::Ready(next..next),
        });
    }
    let batch = prepare(shared, gate, tx, events)?;
    let count = batch.len();
    let answer = hand_over(shared, tx, batch)?;
    Ok(PendingAppend {
        state: PendingState::Sent {
            answer,
            count,
            shared: Arc::clone(shared),
        },
    })
}

fn append_batch(
    shared: &Arc<Shared>,
    gate: &crate::guard::Gate,
    tx: Option<&Sender<Request>>,
    events: &[Event],
) -> Result<Range<u64>> {
    submit_batch(shared, gate, tx, events)?.wait()
}

/// Appends through the writer of a log from a thread of the log's own.
pub(crate) struct Appender {
    pub shared: Arc<Shared>,
    gate: Arc<crate::guard::Gate>,
    tx: Sender<Request>,
}

impl Appender {
    /// [`Log::append_batch`]: through the same contracts and rate limits.
    pub fn append_batch(&self, events: &[Event]) -> Result<Range<u64>> {
        append_batch(&self.shared, &self.gate, Some(&self.tx), events)
    }
}

/// An open event log. `Log` is `Send + Sync`: share it (`Arc<Log>` or
/// `&Log`) between threads; appends from all of them are group-committed.
///
/// ```
/// # fn main() -> evlog::Result<()> {
/// let dir = tempfile::tempdir().unwrap();
/// let log = evlog::Log::open(dir.path(), evlog::Options::default())?;
/// let seq = log.append(
///     evlog::Event::new("task.status_changed")
///         .entity("task", "T-1")
///         .json_payload(&serde_json::json!({"status": "done"}))?,
/// )?;
/// assert_eq!(log.get(seq)?.event_type, "task.status_changed");
/// # Ok(()) }
/// ```
pub struct Log {
    pub(crate) shared: Arc<Shared>,
    writer: WriterHandle,
    indexer: Option<crate::index::indexer::IndexerHandle>,
    archiver: ArchiverHandle,
    /// The automation rules; their engine thread appends through the
    /// writer, so it stops first.
    rules: crate::rules::Rules,
    recovery: RecoveryReport,
    /// Holds the directory lock for as long as the log is open.
    lock: Option<Box<dyn std::any::Any + Send + Sync>>,
    /// The directory of a log opened with [`Log::open_temporary`], removed
    /// once the log is closed (after the lock is released).
    temporary: Option<tempfile::TempDir>,
    /// The contracts and rate limits appends pass (src/guard.rs).
    pub(crate) gate: Arc<crate::guard::Gate>,
}

impl Log {
    /// Opens (creating if needed) the log in `dir` for appending,
    /// recovering from any crash: see ARCHITECTURE.md for what recovery
    /// checks. Takes the directory's lock: one writer at a time.
    pub fn open(dir: impl AsRef<Path>, options: Options) -> Result<Log> {
        Log::open_with_storage(dir, options, Arc::new(OsStorage))
    }

    /// Opens a new, empty log in a temporary directory that is deleted when
    /// the log is closed or dropped: the whole behaviour of a log (group
    /// commit, indexes, queries, subscriptions, consumers) for tests that
    /// should leave no files behind.
    ///
    /// ```
    /// # fn main() -> evlog::Result<()> {
    /// let log = evlog::Log::open_temporary(evlog::Options::default())?;
    /// let dir = log.dir().to_path_buf();
    /// log.append(evlog::Event::new("test.ran"))?;
    /// assert_eq!(log.by_type("test.*", ..)?.count(), 1);
    /// log.close()?;
    /// assert!(!dir.exists());
    /// # Ok(()) }
    /// ```
    pub fn open_temporary(options: Options) -> Result<Log> {
        let temporary = tempfile::Builder::new()
            .prefix("evlog-temporary-")
            .tempdir()
            .map_err(|source| Error::Io {
                path: std::env::temp_dir(),
                source,
            })?;
        let mut log = Log::open(temporary.path(), options)?;
        log.temporary = Some(temporary);
        Ok(log)
    }

    /// Opens an existing log for reading only, without writing, creating,
    /// locking or repairing anything: works while another process (or
    /// `Log`) appends to it. See [`LogReader`].
    pub fn open_read_only(dir: impl AsRef<Path>) -> Result<LogReader> {
        LogReader::open(dir)
    }

    /// Opens the log on another [`Storage`], such as the simulated disk
    /// the crash tests use.
    pub fn open_with_storage(
        dir: impl AsRef<Path>,
        options: Options,
        storage: Arc<dyn Storage>,
    ) -> Result<Log> {
        let dir = dir.as_ref().to_path_buf();
        // Before anything changes on disk: a bad configuration file stops
        // the open with the line at fault.
        let policy = crate::archiver::resolve_policy(&options, &dir)?;
        let open_started = std::time::Instant::now();
        let gate = Arc::new(crate::guard::Gate::resolve(&options, &dir, &*storage)?);
        let mut opened = recovery::open(&*storage, &dir, &options, Access::ReadWrite)?;
        let with_indexes = options.secondary_indexes && storage.hosts_secondary_indexes();
        let slot = if with_indexes {
            crate::index::IndexSlot::opening()
        } else {
            crate::index::IndexSlot::unavailable("secondary indexes are off for this log".into())
        };
        let mut shared = Shared::new(storage, dir, options, &opened, slot);
        shared.dispatch = crate::dispatch::Dispatch::default();
        let shared = Arc::new(shared);
        shared.counters.note_open(open_started.elapsed());
        let active = opened
            .pieces
            .last()
            .and_then(|piece| piece.as_segment().cloned())
            .ok_or(Error::Internal("recovery returned no active segment"))?;
        let writer = Writer::spawn(
            Arc::clone(&shared),
            WriterStart {
                active,
                active_file_len: opened.active_file_len,
                next_seq: opened.next_seq,
                index_capacity: opened.index_capacity,
                marker_present: opened.marker_present,
            },
        )?;
        let indexer = if with_indexes {
            Some(crate::index::indexer::spawn(Arc::clone(&shared))?)
        } else {
            None
        };
        let archiver = crate::archiver::spawn(Arc::clone(&shared), policy)?;
        let rules = crate::rules::Rules::new(
            Arc::clone(&shared),
            Appender {
                shared: Arc::clone(&shared),
                gate: Arc::clone(&gate),
                tx: writer.sender().ok_or(Error::Closed)?.clone(),
            },
        );
        Ok(Log {
            shared,
            writer,
            indexer,
            archiver,
            rules,
            recovery: std::mem::take(&mut opened.report),
            lock: opened.lock.take(),
            temporary: None,
            gate,
        })
    }

    /// Appends one event; returns its sequence number once it is as durable
    /// as the options say. The event is its own atomic unit: after a crash
    /// it is in the log whole or not at all, whatever happened to events
    /// appended beside it.
    ///
    /// If the event's caller-set id ([`Event::id`]) is already among the
    /// last [`Options::dedup_window`] events, nothing is written and the
    /// existing event's sequence number is returned: a retry after a lost
    /// answer is safe. An id older than that window is not detected, and
    /// the event is appended again. With [`Event::expected_version`] the
    /// append fails with [`Error::VersionConflict`] unless its entity has
    /// exactly that many events.
    pub fn append(&self, event: Event) -> Result<u64> {
        let seqs = self.append_batch(std::slice::from_ref(&event))?;
        Ok(seqs.start)
    }

    /// Appends events atomically: after a crash either all of them are in
    /// the log or none is. Returns their sequence numbers.
    ///
    /// Duplicates (see [`Log::append`]): a batch whose events are all in
    /// the duplicate window, at consecutive sequence numbers in the same
    /// order, returns that existing range and writes nothing; a batch of
    /// which only some events are there (or not as that same run) fails
    /// with [`Error::DuplicateInBatch`] and writes nothing. One id given
    /// to two events of the batch is [`Error::InvalidEvent`]. Expected
    /// versions count the batch's earlier events, and one conflict
    /// refuses the whole batch.
    pub fn append_batch(&self, events: &[Event]) -> Result<Range<u64>> {
        append_batch(&self.shared, &self.gate, self.writer.sender(), events)
    }

    /// [`Log::append_batch`] without waiting for the write: validates and
    /// encodes `events` in this thread, hands them to the writer and
    /// returns; [`PendingAppend::wait`] then gives the outcome. The batch
    /// is the same atomic unit, with the same duplicate, version and
    /// contract checks (a batch refused before it reaches the writer is
    /// refused here, as an `Err`).
    ///
    /// This lets one thread prepare its next batch while the previous one
    /// is written and synced, instead of leaving the disk idle while it
    /// encodes: batches submitted from one thread get increasing sequence
    /// numbers in submission order, and the writer may commit several of
    /// them with one fsync. Keep a bounded number in flight: each holds
    /// its encoded records until the writer takes them.
    ///
    /// ```
    /// # fn main() -> evlog::Result<()> {
    /// let dir = tempfile::tempdir().unwrap();
    /// let log = evlog::Log::open(dir.path(), evlog::Options::default())?;
    /// let batches: Vec<Vec<evlog::Event>> = (0..4)
    ///     .map(|_| vec![evlog::Event::new("sensor.read"); 10])
    ///     .collect();
    /// let mut in_flight = std::collections::VecDeque::new();
    /// for batch in &batches {
    ///     if in_flight.len() == 2 {
    ///         let pending: evlog::PendingAppend = in_flight.pop_front().unwrap();
    ///         pending.wait()?;
    ///     }
    ///     in_flight.push_back(log.submit_batch(batch)?);
    /// }
    /// for pending in in_flight {
    ///     pending.wait()?;
    /// }
    /// assert_eq!(log.last_seq(), Some(40));
    /// # Ok(()) }
    /// ```
    pub fn submit_batch(&self, events: &[Event]) -> Result<PendingAppend> {
        submit_batch(&self.shared, &self.gate, self.writer.sender(), events)
    }

    /// The log's automation rules: register them here. See
    /// [`crate::rules`].
    pub fn rules(&self) -> &crate::rules::Rules {
        &self.rules
    }

    /// Syncs everything appended so far, whatever the durability setting.
    pub fn sync(&self) -> Result<()> {
        self.shared.check_poison()?;
        let tx = self.writer.sender().ok_or(Error::Closed)?;
        let (reply, answer) = crossbeam_channel::bounded(1);
        tx.send(Request::Sync { reply })
            .map_err(|_| self.shared.poisoned_error())?;
        answer.recv().map_err(|_| self.shared.poisoned_error())?
    }

    /// Reads the event with sequence number `seq`, checking its CRC.
    ///
    /// A sequence number the log does not hold is `Err(Error::NotFound)`,
    /// not `Ok(None)`: in a gap-free log, asking for a number outside
    /// `first_seq..=last_seq` is a caller's mistake rather than an ordinary
    /// miss, and one error path keeps `?` simple.
    pub fn get(&self, seq: u64) -> Result<LoggedEvent> {
        self.shared.get(seq)
    }

    /// Iterates over the events in `range` (clamped to what the log holds
    /// when the call is made), in sequence order. The iterator may outlive
    /// the `Log`; after `close` it returns `Error::Closed`.
    pub fn iter(&self, range: impl RangeBounds<u64>) -> Result<Iter> {
        self.shared.iter(range)
    }

    /// The version of an entity: how many of its events the log holds, as
    /// of the last published event. This is the value to pass to
    /// [`Event::expected_version`] for the entity's next event. (Counted in
    /// the entity index, plus a scan of what it has not reached.)
    pub fn entity_version(&self, entity_type: &str, entity_id: &str) -> Result<u64> {
        let entity = Entity {
            entity_type: entity_type.to_owned(),
            entity_id: entity_id.to_owned(),
        };
        self.shared
            .entity_version(&entity, self.shared.marks.last_seq())
    }

    /// The lowest sequence number in the log, if any event is.
    pub fn first_seq(&self) -> Option<u64> {
        self.shared.first_seq()
    }

    /// The highest published sequence number (readable now), if any event
    /// is. Under `Durability::Always` every published event is durable.
    pub fn last_seq(&self) -> Option<u64> {
        self.shared.last_seq()
    }

    /// The highest sequence number known to be synced to stable storage
    /// (0 while nothing is): equal to `last_seq` under `Always`, behind it
    /// by what is not yet synced under `Interval` and `OsBuffered`.
    pub fn durable_seq(&self) -> u64 {
        self.shared.marks.durable_seq()
    }

    /// Waits without polling until the `which` position reaches `seq`, the
    /// timeout passes, or the log is closed or poisoned. Any thread may
    /// wait; the writer wakes waiters after each commit group and sync.
    pub fn wait_for(&self, which: Watermark, seq: u64, timeout: Duration) -> WaitOutcome {
        self.shared.marks.wait(which, seq, timeout)
    }

    /// What recovery found and repaired when this log was opened.
    pub fn recovery_report(&self) -> &RecoveryReport {
        &self.recovery
    }

    /// The data directory.
    pub fn dir(&self) -> &Path {
        &self.shared.dir
    }

    /// Requests waiting on the writer's channel now (for metrics).
    pub(crate) fn writer_queue_requests(&self) -> usize {
        self.writer.sender().map_or(0, |tx| tx.len())
    }

    pub(crate) fn indexer_handle(&self) -> Option<&crate::index::indexer::IndexerHandle> {
        self.indexer.as_ref()
    }

    /// Number of segment files.
    pub fn segment_count(&self) -> usize {
        self.shared.segments().len()
    }

    /// Number of archive files (`archive/*.evz`) the log reads.
    pub fn archive_count(&self) -> usize {
        self.shared.catalog.pieces().len() - self.shared.segments().len()
    }

    /// Runs the retention policy now on the archiver thread, and waits:
    /// archives the sealed segments it says are cold, compacts or deletes
    /// what it says must go. Also runs by itself every
    /// `check_interval`. An error stops archiving (appends and reads go
    /// on) and is returned by every later call and shown by
    /// [`Log::archiver_status`].
    pub fn archive_now(&self) -> Result<ArchiveRunReport> {
        self.shared.check_poison()?;
        self.archiver.run_now(None)
    }

    /// [`Log::archive_now`], calling `progress(pieces done, pieces to do)`
    /// before each piece (for a progress bar).
    pub fn archive_now_with_progress(
        &self,
        mut progress: impl FnMut(u64, u64),
    ) -> Result<ArchiveRunReport> {
        self.shared.check_poison()?;
        self.archiver.run_now(Some(&mut progress))
    }

    /// Archives every sealed segment now, whatever the policy says
    /// (archiving loses nothing: archived events read as live ones do).
    pub fn archive_all_sealed(&self) -> Result<ArchiveRunReport> {
        self.shared.check_poison()?;
        self.archiver.archive_all_sealed(None)
    }

    /// [`Log::archive_all_sealed`] with progress, as
    /// [`Log::archive_now_with_progress`].
    pub fn archive_all_sealed_with_progress(
        &self,
        mut progress: impl FnMut(u64, u64),
    ) -> Result<ArchiveRunReport> {
        self.shared.check_poison()?;
        self.archiver.archive_all_sealed(Some(&mut progress))
    }

    /// Whether the archiver runs, and why it stopped if it did.
    pub fn archiver_status(&self) -> ArchiverStatus {
        self.archiver.status()
    }

    /// What the retention policy would do now (a dry run: nothing
    /// changes). Reads every piece of the log once.
    pub fn retention_plan(&self) -> Result<RetentionPlan> {
        let policy = crate::archiver::resolve_policy(&self.shared.options, &self.shared.dir)?;
        crate::archiver::Archiver::new(Arc::clone(&self.shared), policy).plan(now_micros())
    }

    /// Places a legal hold: the events of that correlation or entity are
    /// never deleted by retention while it stands. Returns `false` when
    /// the same hold was already placed.
    pub fn place_hold(&self, target: HoldTarget, reason: impl Into<String>) -> Result<bool> {
        let hold = Hold {
            target,
            reason: reason.into(),
            placed_at_us: now_micros(),
        };
        self.change_holds(|holds| crate::holds::add_hold(holds, hold))
    }

    /// Releases a legal hold; returns whether it existed.
    pub fn release_hold(&self, target: &HoldTarget) -> Result<bool> {
        self.change_holds(|holds| Ok(crate::holds::remove_hold(holds, target).is_some()))
    }

    /// Edits the holds file (one edit at a time; the file is replaced
    /// whole, atomically) when `change` changed the list.
    fn change_holds<T>(&self, change: impl FnOnce(&mut Vec<Hold>) -> Result<T>) -> Result<T> {
        self.shared.check_poison()?;
        let _one_at_a_time = self
            .shared
            .holds_lock
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let storage = &*self.shared.storage;
        let mut holds = crate::holds::read_holds(storage, &self.shared.dir)?;
        let before = holds.clone();
        let answer = change(&mut holds)?;
        if holds != before {
            crate::holds::write_holds(storage, &self.shared.dir, &holds)?;
        }
        Ok(answer)
    }

    /// The legal holds in force.
    pub fn holds(&self) -> Result<Vec<Hold>> {
        crate::holds::read_holds(&*self.shared.storage, &self.shared.dir)
    }

    /// Stops the writer after it has synced everything and written the
    /// clean-close marker, ends every iterator of this log (they return
    /// `Error::Closed`), and releases the directory. Returns the poisoning
    /// error, if the log was poisoned.
    pub fn close(mut self) -> Result<()> {
        self.shutdown();
        self.shared.check_poison()
    }

    fn shutdown(&mut self) {
        // The rules engine appends through the writer and holds a sender
        // of its channel: it stops before the writer is told to finish.
        self.rules.shutdown();
        // The archiver first: it reads sealed segments and swaps pieces of
        // the catalog, and finishes the action in progress.
        self.archiver.shutdown();
        self.writer.shutdown(WRITER_SHUTDOWN_DEADLINE);
        // The indexer reads the log to catch up: it stops before the
        // readers do, and releases the index store before the lock goes.
        if let Some(indexer) = self.indexer.as_mut() {
            indexer.shutdown();
        }
        // The dispatcher stops after its batch in progress; subscribers
        // then read the log themselves, until the readers close below.
        self.shared.dispatch.shutdown(&self.shared);
        // Wait for reads in progress, and refuse later ones, before the
        // lock goes: after that another `Log` may own the files.
        self.shared.close_readers();
        self.shared.marks.stop();
        drop(self.lock.take());
        // Nothing reads the files any more (the gate is shut): a temporary
        // log's directory goes with it.
        drop(self.temporary.take());
    }
}

impl Drop for Log {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// A read-only view of a log directory: reads every event that a writer
/// had completed when the view was opened or last refreshed, never a
/// partial append, while that writer (in this or another process) goes on.
/// It creates, locks, truncates and rewrites nothing, and reads the active
/// segment with `pread` only, so a writer trimming its preallocated tail
/// cannot fault it.
///
/// ```
/// # fn main() -> evlog::Result<()> {
/// # let dir = tempfile::tempdir().unwrap();
/// let log = evlog::Log::open(dir.path(), evlog::Options::default())?;
/// log.append(evlog::Event::new("a.b"))?;
/// let view = evlog::Log::open_read_only(dir.path())?;
/// assert_eq!(view.last_seq(), Some(1));
/// log.append(evlog::Event::new("a.c"))?;
/// assert_eq!(view.refresh()?, 1);
/// assert_eq!(view.get(2)?.event_type, "a.c");
/// # Ok(()) }
/// ```
pub struct LogReader {
    pub(crate) shared: Arc<Shared>,
    report: RecoveryReport,
    /// Serializes refreshes (each extends the segment list).
    refreshing: std::sync::Mutex<()>,
    /// When `archive/` last changed, as seen by the last refresh that
    /// looked at every archive: a rewrite is a rename, which changes the
    /// directory's modification time, so an unchanged time (old enough
    /// not to hide a second change within the clock's tick) spares a
    /// refresh from opening every archive again.
    archives_seen: std::sync::Mutex<Option<SystemTime>>,
}

impl LogReader {
    /// Opens the log in `dir` read-only. A missing directory is
    /// `Error::NoDataDirectory`, a file `Error::NotADirectory`.
    pub fn open(dir: impl AsRef<Path>) -> Result<LogReader> {
        LogReader::open_with_storage(dir, Options::default(), Arc::new(OsStorage))
    }

    /// Opens read-only on another [`Storage`]. `options` only matter for
    /// `record_bytes_max` (records up to the hard limit are read anyway).
    pub fn open_with_storage(
        dir: impl AsRef<Path>,
        options: Options,
        storage: Arc<dyn Storage>,
    ) -> Result<LogReader> {
        let dir = dir.as_ref().to_path_buf();
        // A reader accepts any record the format allows, whatever limit
        // the writer was configured with.
        let options = options.record_bytes_max(crate::options::RECORD_BYTES_LIMIT);
        let opened = recovery::open(&*storage, &dir, &options, Access::ReadOnly)?;
        let last_seq = opened.next_seq - 1;
        let slot = if storage.hosts_secondary_indexes() {
            let shared_for_ids = Shared::new(
                Arc::clone(&storage),
                dir.clone(),
                options.clone(),
                &opened,
                crate::index::IndexSlot::unavailable(String::new()),
            );
            match crate::index::open_for_reading(&dir, last_seq, &|seq| {
                Ok(*shared_for_ids.get(seq)?.id.as_bytes())
            }) {
                Ok(state) => crate::index::IndexSlot::ready(state),
                Err(reason) => {
                    crate::index::IndexSlot::unavailable(format!("{reason}; queries scan the log"))
                }
            }
        } else {
            crate::index::IndexSlot::unavailable("no secondary indexes on this storage".into())
        };
        let shared = Arc::new(Shared::new(storage, dir, options, &opened, slot));
        Ok(LogReader {
            shared,
            report: opened.report,
            refreshing: std::sync::Mutex::new(()),
            archives_seen: std::sync::Mutex::new(None),
        })
    }

    /// Looks again at the directory and makes every unit completed since
    /// visible. Returns how many events became visible.
    pub fn refresh(&self) -> Result<u64> {
        let _one_at_a_time = self
            .refreshing
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let before = self.shared.marks.last_seq();
        // The writer may archive or rewrite a file between our listing and
        // our open of it: list again, a few times, before giving up.
        let mut attempt = 0;
        loop {
            match self.refresh_once() {
                Err(Error::Io { source, .. })
                    if source.kind() == std::io::ErrorKind::NotFound && attempt < 3 =>
                {
                    attempt += 1;
                }
                result => break result?,
            }
        }
        Ok(self.shared.marks.last_seq() - before)
    }

    fn refresh_once(&self) -> Result<()> {
        let shared = &self.shared;
        let storage = &*shared.storage;
        let record_bytes_max = shared.options.record_bytes_max;
        let mut report = RecoveryReport::default();
        let segment_seqs =
            recovery::list_segments(storage, &shared.segments_dir, Access::ReadOnly, &mut report)?;
        let archive_dir = shared.dir.join(crate::archiver::ARCHIVE_DIR);
        let archive_names = if storage.exists(&archive_dir) {
            crate::archive::archive_paths(storage, &archive_dir)?
        } else {
            Vec::new()
        };
        let known = shared.catalog.pieces();
        let last_known = known.last().map(|p| p.first_seq);
        // Pieces this view knows that an archive replaced (archived, or
        // rewritten by retention) since: read them from the archive, and
        // let go of the old file so that its space can be freed.
        let archives_changed = std::fs::metadata(&archive_dir)
            .and_then(|m| m.modified())
            .ok();
        let mut archives_seen = self
            .archives_seen
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let settled = archives_changed.is_some_and(|changed| {
            changed
                .elapsed()
                .is_ok_and(|age| age > Duration::from_secs(1))
        });
        let unchanged = settled && *archives_seen == archives_changed;
        for (first, path) in archive_names.iter().filter(|_| !unchanged) {
            let Some(piece) = known.iter().find(|p| p.first_seq == *first) else {
                continue;
            };
            let stale = match &piece.holder {
                Holder::Segment(_) => true,
                Holder::Archive(archive) => !archive.is_current(storage)?,
            };
            if stale {
                let archive = Arc::new(crate::archive::open_named(storage, path)?);
                shared.frame_cache.forget_archive(*first);
                shared
                    .catalog
                    .replace_in_view(*first, Holder::Archive(archive))?;
            }
        }
        if settled {
            *archives_seen = archives_changed;
        }
        drop(archives_seen);
        if let Some(Piece {
            holder: Holder::Segment(active),
            ..
        }) = known.last()
        {
            // The last segment this view knows: read what was appended to
            // it (all of it, when a newer piece shows it was sealed; its
            // open file still reads after an archiver unlinked it).
            active.refresh_read_only(record_bytes_max)?;
        }
        let next = shared
            .catalog
            .last()
            .map_or(1, |piece| crate::archiver::piece_last_seq(&piece) + 1);
        // New pieces after the last known one: archives win over a segment
        // of the same start (the writer has not removed it yet).
        let is_new = |seq: &u64| last_known.is_none_or(|last| *seq > last);
        let newer_archives: Vec<&(u64, PathBuf)> = archive_names
            .iter()
            .filter(|(seq, _)| is_new(seq))
            .collect();
        let pieces = crate::catalog::PieceStarts::new(
            segment_seqs.iter().copied().filter(is_new),
            newer_archives.iter().map(|(seq, _)| *seq),
        );
        if let Some(&first_new) = pieces.starts().first() {
            if known.last().is_some() && first_new != next {
                return Err(Error::Corrupt {
                    file: shared
                        .segments_dir
                        .join(crate::segment::segment_file_name(first_new)),
                    offset: 16,
                    kind: crate::error::CorruptKind::Gap {
                        expected: next,
                        found: first_new,
                    },
                });
            }
        }
        let active_seq = pieces.segments().last().copied();
        for &first in pieces.starts() {
            if let Some((_, path)) = newer_archives.iter().find(|(seq, _)| *seq == first) {
                let archive = Arc::new(crate::archive::open_named(storage, path)?);
                shared.catalog.push(Piece::archive(archive));
            } else if Some(first) == active_seq {
                let path = shared
                    .segments_dir
                    .join(crate::segment::segment_file_name(first));
                let found = Segment::inspect_active(
                    storage,
                    &path,
                    first,
                    None,
                    record_bytes_max,
                    0,
                    Access::ReadOnly,
                )?;
                let segment =
                    Segment::active(storage, &path, first, found, 0, 0, Access::ReadOnly)?;
                shared.push_segment(Arc::new(segment));
            } else {
                // A sealed segment: its record count comes from the start
                // of the piece after it.
                let successor = pieces.successor(first).unwrap_or(first + 1);
                let sealed = recovery::open_sealed_segments(
                    storage,
                    &shared.segments_dir,
                    &[(first, successor)],
                    &shared.options,
                    Access::ReadOnly,
                    &mut report,
                )?;
                for segment in sealed {
                    shared.push_segment(segment);
                }
            }
        }
        if let Some(piece) = shared.catalog.last() {
            let last = crate::archiver::piece_last_seq(&piece);
            shared.marks.publish(last, last);
        }
        let next = shared.marks.last_seq() + 1;
        shared
            .first_seq
            .store(shared.catalog.first_held_seq(next), Ordering::Release);
        Ok(())
    }

    /// Reads the event with sequence number `seq`, checking its CRC.
    pub fn get(&self, seq: u64) -> Result<LoggedEvent> {
        self.shared.get(seq)
    }

    /// Iterates over the events in `range` that this view can see.
    pub fn iter(&self, range: impl RangeBounds<u64>) -> Result<Iter> {
        self.shared.iter(range)
    }

    /// The lowest sequence number in the log, if any event is.
    pub fn first_seq(&self) -> Option<u64> {
        self.shared.first_seq()
    }

    /// The highest sequence number this view can see.
    pub fn last_seq(&self) -> Option<u64> {
        self.shared.last_seq()
    }

    /// What opening found (a read-only open repairs nothing; damaged
    /// sealed segments are listed here as for [`Log::open`]).
    pub fn open_report(&self) -> &RecoveryReport {
        &self.report
    }

    /// The data directory.
    pub fn dir(&self) -> &Path {
        &self.shared.dir
    }

    /// Number of segment files this view knows.
    pub fn segment_count(&self) -> usize {
        self.shared.segments().len()
    }

    /// Number of archive files this view reads.
    pub fn archive_count(&self) -> usize {
        self.shared.catalog.pieces().len() - self.shared.segments().len()
    }

    /// What the retention policy of the directory's `evlog.toml` (or
    /// `policy`, when given) would do now: a dry run, nothing changes.
    pub fn retention_plan(&self, policy: Option<crate::RetentionPolicy>) -> Result<RetentionPlan> {
        let policy = match policy {
            Some(policy) => policy,
            None => crate::archiver::resolve_policy(&self.shared.options, &self.shared.dir)?,
        };
        crate::archiver::Archiver::new(Arc::clone(&self.shared), policy).plan(now_micros())
    }

    /// The legal holds in force.
    pub fn holds(&self) -> Result<Vec<Hold>> {
        crate::holds::read_holds(&*self.shared.storage, &self.shared.dir)
    }
}

/// Iterator over a range of events; see [`Log::iter`]. Each item is checked
/// (CRC, sequence number) before it is decoded; after an error the iterator
/// ends. It may outlive its `Log`: once the log is closed it returns
/// `Error::Closed` and ends, and dropping it writes nothing. Archived
/// events come as live ones do; events retention deleted are skipped (the
/// archive's deletion notes account for them).
pub struct Iter {
    shared: Arc<Shared>,
    next_seq: u64,
    last_seq: u64,
    place: Place,
    failed: bool,
}

/// Where an [`Iter`] is reading.
enum Place {
    /// Between pieces: the next step asks the catalog.
    Unplaced,
    Segment {
        segment: Arc<Segment>,
        /// Committed length of the segment when the cursor was placed.
        end_bytes: u64,
        cursor: Cursor,
    },
    Archive {
        archive: Arc<ArchiveFile>,
        /// The frame being read, and its bytes once decompressed. A scan
        /// reads each frame once, so it bypasses the frame cache (which is
        /// for point reads).
        frame: usize,
        bytes: Option<Arc<Vec<u8>>>,
        cursor: FrameCursor,
    },
}

/// Which records an [`Iter`] step decodes, given each record's seq and
/// encoded body: `Ok(false)` skips one undecoded.
pub(crate) type BodyFilter<'a> =
    dyn FnMut(u64, &[u8]) -> std::result::Result<bool, crate::error::CorruptKind> + 'a;

/// What [`Iter::visit_bodies`] hands each record's seq and encoded body to.
pub(crate) type BodyVisitor<'a> =
    dyn FnMut(u64, &[u8]) -> std::result::Result<(), crate::error::CorruptKind> + 'a;

impl Iter {
    fn step(&mut self) -> Result<Option<LoggedEvent>> {
        let shared = Arc::clone(&self.shared);
        shared.while_open(|| self.step_open(&mut |_, _| Ok(true)))
    }

    /// Hands every remaining record's seq and encoded body to `visit`,
    /// decoding none: for a reader that needs a few fields of each event
    /// (the indexer), not the event. An error from `visit` is reported
    /// as damage at that record.
    pub(crate) fn visit_bodies(&mut self, visit: &mut BodyVisitor<'_>) -> Result<()> {
        // Every record is refused after its visit, so the loop ends only
        // at the end of the range or on an error.
        match self.next_matching(&mut |seq, body| visit(seq, body).map(|()| false)) {
            None => Ok(()),
            Some(Err(e)) => Err(e),
            Some(Ok(_)) => Err(Error::Internal(
                "a record refused by its visitor was decoded",
            )),
        }
    }

    /// The next event whose encoded body `wanted` accepts; the others are
    /// passed without being decoded (a subscriber's filter looks at the
    /// type, entity, correlation and priority, never at the payload).
    pub(crate) fn next_matching(
        &mut self,
        wanted: &mut BodyFilter<'_>,
    ) -> Option<Result<LoggedEvent>> {
        if self.failed {
            return None;
        }
        let shared = Arc::clone(&self.shared);
        match shared.while_open(|| self.step_open(wanted)) {
            Ok(Some(event)) => Some(Ok(event)),
            Ok(None) => None,
            Err(e) => {
                self.failed = true;
                Some(Err(e))
            }
        }
    }

    /// The next sequence number this iterator would examine.
    pub(crate) fn next_seq_to_examine(&self) -> u64 {
        self.next_seq
    }

    fn place(&mut self) -> Result<()> {
        let piece = self.shared.piece_for(self.next_seq)?;
        self.place = match piece.holder {
            Holder::Segment(segment) => {
                let offset = segment.index.entry(self.next_seq - segment.first_seq);
                let end_bytes = segment.committed_bytes();
                let cursor = Cursor::new(offset, end_bytes, self.shared.options.record_bytes_max)
                    .with_read_chunk_bytes(self.shared.options.read_buffer_bytes);
                Place::Segment {
                    segment,
                    end_bytes,
                    cursor,
                }
            }
            Holder::Archive(archive) => {
                let next = self.next_seq;
                let frame = archive.frames().partition_point(|e| e.last_seq < next);
                Place::Archive {
                    archive,
                    frame,
                    bytes: None,
                    cursor: FrameCursor::default(),
                }
            }
        };
        Ok(())
    }

    fn step_open(&mut self, wanted: &mut BodyFilter<'_>) -> Result<Option<LoggedEvent>> {
        loop {
            if self.next_seq > self.last_seq {
                return Ok(None);
            }
            if let Place::Unplaced = self.place {
                self.place()?;
            }
            match &mut self.place {
                Place::Unplaced => {}
                Place::Segment {
                    segment,
                    end_bytes,
                    cursor,
                } => {
                    // A sealed segment's records end at its count; never
                    // read on into whatever follows them in the file.
                    if self.next_seq >= segment.first_seq + segment.record_count() {
                        self.place = Place::Unplaced;
                        continue;
                    }
                    let corrupt = |offset, kind| Error::Corrupt {
                        file: segment.path.clone(),
                        offset,
                        kind,
                    };
                    match cursor
                        .next_step(segment.source(*end_bytes))
                        .map_err(|source| crate::error::io_error(&segment.path, source))?
                    {
                        Step::Record {
                            offset,
                            header,
                            bytes,
                        } => {
                            if header.seq != self.next_seq {
                                return Err(corrupt(
                                    offset,
                                    crate::error::CorruptKind::Sequence {
                                        expected: self.next_seq,
                                        found: header.seq,
                                    },
                                ));
                            }
                            let body = &bytes[RECORD_HEADER_BYTES..];
                            let body_corrupt =
                                |kind| corrupt(offset + RECORD_HEADER_BYTES as u64, kind);
                            self.next_seq += 1;
                            if !wanted(header.seq, body).map_err(body_corrupt)? {
                                continue;
                            }
                            let event = crate::record::decode_body(header.seq, body)
                                .map_err(body_corrupt)?;
                            return Ok(Some(event));
                        }
                        Step::End { offset } => {
                            if self.next_seq < segment.first_seq + segment.record_count() {
                                return Err(corrupt(offset, crate::error::CorruptKind::Truncated));
                            }
                            self.place = Place::Unplaced;
                        }
                        Step::Invalid { offset, kind } => return Err(corrupt(offset, kind)),
                    }
                }
                Place::Archive {
                    archive,
                    frame,
                    bytes,
                    cursor,
                } => {
                    let Some(&entry) = archive.frames().get(*frame) else {
                        // Past the last frame: the rest of the range was
                        // deleted by retention.
                        self.next_seq = archive.range_last_seq() + 1;
                        self.place = Place::Unplaced;
                        continue;
                    };
                    if entry.first_seq > self.last_seq {
                        self.next_seq = self.last_seq + 1;
                        continue;
                    }
                    let frame_bytes = match bytes {
                        Some(b) => Arc::clone(b),
                        None => {
                            let b = archive.read_frame(*frame, None)?;
                            *bytes = Some(Arc::clone(&b));
                            b
                        }
                    };
                    let corrupt = |kind| Error::Corrupt {
                        file: archive.path().to_path_buf(),
                        offset: entry.offset,
                        kind,
                    };
                    match cursor.next(&frame_bytes, &entry).map_err(corrupt)? {
                        Some((seq, record)) => {
                            if seq < self.next_seq {
                                continue;
                            }
                            let body = &record[RECORD_HEADER_BYTES..];
                            self.next_seq = seq + 1;
                            if !wanted(seq, body).map_err(corrupt)? {
                                continue;
                            }
                            let event = crate::record::decode_body(seq, body).map_err(corrupt)?;
                            return Ok(Some(event));
                        }
                        None => {
                            *frame += 1;
                            *bytes = None;
                            *cursor = FrameCursor::default();
                        }
                    }
                }
            }
        }
    }
}

/// The error for a `seq` inside an archive's range that it does not hold:
/// deleted by retention (and by which rule, when), or missing, which is
/// damage.
pub(crate) fn missing_from_archive(archive: &ArchiveFile, seq: u64) -> Error {
    match archive.deletion_of(seq) {
        Some(note) => Error::Deleted {
            seq,
            rule: note.rule.clone(),
            deleted_at_us: note.deleted_at_us,
        },
        None => Error::Corrupt {
            file: archive.path().to_path_buf(),
            offset: 0,
            kind: crate::error::CorruptKind::Archive(
                "a sequence number of the archive's range is neither held nor deleted",
            ),
        },
    }
}

impl Iterator for Iter {
    type Item = Result<LoggedEvent>;

    fn next(&mut self) -> Option<Result<LoggedEvent>> {
        if self.failed {
            return None;
        }
        match self.step() {
            Ok(Some(event)) => Some(Ok(event)),
            Ok(None) => None,
            Err(e) => {
                self.failed = true;
                Some(Err(e))
            }
        }
    }
}

/// Microseconds since the Unix epoch; 0 if the clock is before 1970.
pub(crate) fn now_micros() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    // A panic in the syncer thread poisons the log like one in the writer:
    // the batch it was syncing is answered with `Poisoned`, never `Ok`, no
    // caller hangs, later calls fail, close returns, and a reopen keeps
    // what was durable.
    #[test]
    fn log_syncer_panic_poisons_until_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let log = Log::open(dir.path(), Options::default()).unwrap();
        let seq = log.append(Event::new("before.panic")).unwrap();
        log.writer
            .sender()
            .unwrap()
            .send(Request::PanicSyncer)
            .unwrap();
        // Over 64 KiB, so that the writer hands it to the syncer.
        let batch: Vec<Event> = (0..40)
            .map(|_| Event::new("handed.over").payload(crate::Payload::Bytes(vec![7; 4096])))
            .collect();
        match log.append_batch(&batch) {
            Err(Error::Poisoned { source }) => assert!(
                matches!(&*source, Error::WriterPanicked(m) if m.contains("injected syncer panic")),
                "{source:?}"
            ),
            other => panic!("expected Poisoned, got {other:?}"),
        }
        assert!(log.shared.is_poisoned());
        assert!(matches!(
            log.append(Event::new("after.panic")),
            Err(Error::Poisoned { .. })
        ));
        assert!(matches!(log.close(), Err(Error::Poisoned { .. })));
        let reopened = Log::open(dir.path(), Options::default()).unwrap();
        assert_eq!(reopened.get(seq).unwrap().event_type, "before.panic");
    }

    // A panic in the writer thread poisons the log: later calls fail with
    // `Poisoned` naming the panic, and a reopen recovers what was durable.
    #[test]
    fn log_writer_panic_poisons_until_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let log = Log::open(dir.path(), Options::default()).unwrap();
        let seq = log.append(Event::new("before.panic")).unwrap();
        log.writer.sender().unwrap().send(Request::Panic).unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !log.shared.is_poisoned() {
            assert!(
                std::time::Instant::now() < deadline,
                "writer never poisoned the log"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        for result in [
            log.append(Event::new("after.panic")).map(|_| ()),
            log.get(seq).map(|_| ()),
            log.sync(),
            log.iter(..).map(|_| ()),
        ] {
            match result {
                Err(Error::Poisoned { source }) => {
                    assert!(
                        matches!(&*source, Error::WriterPanicked(m) if m.contains("injected writer panic")),
                        "{source:?}"
                    )
                }
                other => panic!("expected Poisoned, got {other:?}"),
            }
        }
        assert!(matches!(log.close(), Err(Error::Poisoned { .. })));
        let reopened = Log::open(dir.path(), Options::default()).unwrap();
        assert_eq!(reopened.last_seq(), Some(seq));
        assert_eq!(reopened.get(seq).unwrap().event_type, "before.panic");
    }

    // A batch's sequence numbers are contiguous and an empty batch writes
    // nothing.
    #[test]
    fn log_batch_is_contiguous_and_empty_batch_is_noop() {
        let dir = tempfile::tempdir().unwrap();
        let log = Log::open(dir.path(), Options::default()).unwrap();
        assert_eq!(log.first_seq(), None);
        let events: Vec<Event> = (0..10).map(|i| Event::new(format!("t.e{i}"))).collect();
        assert_eq!(log.append_batch(&events).unwrap(), 1..11);
        assert_eq!(log.append_batch(&[]).unwrap(), 11..11);
        assert_eq!((log.first_seq(), log.last_seq()), (Some(1), Some(10)));
        let types: Vec<String> = log
            .iter(3..=5)
            .unwrap()
            .map(|e| e.unwrap().event_type)
            .collect();
        assert_eq!(types, ["t.e2", "t.e3", "t.e4"]);
    }

    // Oversized records and batches are refused before anything is written.
    #[test]
    fn log_refuses_oversized_record_and_batch() {
        let dir = tempfile::tempdir().unwrap();
        let options = Options::default()
            .segment_bytes_max(crate::options::SEGMENT_BYTES_MIN)
            .record_bytes_max(4096);
        let log = Log::open(dir.path(), options).unwrap();
        let big = Event::new("big").bytes_payload(vec![1u8; 5000]);
        assert!(matches!(log.append(big), Err(Error::RecordTooLarge { .. })));
        let many: Vec<Event> = (0..100)
            .map(|_| Event::new("m").bytes_payload(vec![2u8; 1000]))
            .collect();
        assert!(matches!(
            log.append_batch(&many),
            Err(Error::BatchTooLarge { .. })
        ));
        assert_eq!(log.last_seq(), None);
        assert_eq!(log.append(Event::new("small")).unwrap(), 1);
    }
}
