//! The writer thread: the only code that appends to the log.
//!
//! Appends from any number of threads arrive on one bounded channel. The
//! writer takes the first waiting request, then every request already
//! queued behind it (up to `GROUP_BYTES_MAX`), frames them as one commit
//! group, writes the group with one `pwrite`, publishes the new records to
//! readers, and has the group synced and answered: under
//! `Durability::Always` by the syncer thread (`crate::syncer`), whose fsync
//! overlaps this thread's work on the next group, otherwise here, when the
//! durability asks for a sync. Concurrent appends therefore share one fsync
//! (group commit), and a caller's `Ok` always means its events are as
//! durable as `Durability` promises.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread::{JoinHandle, ThreadId};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use uuid::Uuid;

use crate::admission::{Admission, Verdict};
use crate::error::{Error, IoContext, Result};
use crate::log::Shared;
use crate::marker::CleanClose;
use crate::options::Durability;
use crate::record::{frame_record_in_place, RECORD_HEADER_BYTES};
use crate::segment::{Segment, SEGMENT_HEADER_BYTES};
use crate::syncer::{SyncJob, Syncer};

/// Most bytes one commit group carries (unless one batch alone is larger):
/// bounds the write buffer and how long early callers wait for late ones.
pub(crate) const GROUP_BYTES_MAX: u64 = 4 * 1024 * 1024;
/// Requests waiting for the writer; a full channel makes callers wait
/// (backpressure) instead of growing memory without bound.
pub(crate) const CHANNEL_CAPACITY: usize = 4096;
/// How long the writer polls for the next request before it parks: about
/// the gap between an answer and the same caller's next request, bounded
/// so an idle log burns at most this much CPU after each commit.
const WRITER_SPIN: Duration = Duration::from_micros(50);
/// How long the writer idles when it has nothing to sync.
const IDLE_WAKE: Duration = Duration::from_secs(3600);
/// A thread that appended within this window counts as an active appender
/// whose next append a commit group may wait for.
const APPENDER_ACTIVE_WINDOW: Duration = Duration::from_millis(20);
/// Most appender threads tracked; beyond this the oldest are forgotten.
const APPENDERS_TRACKED_MAX: usize = 64;
/// Upper bound on how long a commit group waits for active appenders, and
/// the share of the last fsync's duration it may wait (1/2): waiting longer
/// than an fsync would cost more than it saves.
const LINGER_MAX: Duration = Duration::from_millis(2);
const LINGER_FSYNC_DIVISOR: u32 = 2;
/// Commit groups at least this large are written without zeroing space
/// ahead of them (see `Writer::preallocate`).
const PREALLOCATE_SKIP_GROUP_BYTES: u64 = 64 * 1024;
/// Under `Durability::Always`, a commit group at least this large (or any
/// group while the syncer is busy) is synced by the syncer thread while
/// this one writes the next; a smaller one is synced here.
const HAND_OVER_GROUP_BYTES: u64 = 64 * 1024;
/// Below this step, a preallocation that does not fit is dropped rather
/// than shrunk further.
const PREALLOCATE_STEP_MIN_BYTES: u64 = 64 * 1024;

/// Record buffers kept for reuse: at most this many.
const RECORD_BUFFERS_KEPT_MAX: usize = 4;
/// A buffer larger than this is freed rather than kept, so the pool holds
/// at most `RECORD_BUFFERS_KEPT_MAX` times this much memory.
const RECORD_BUFFER_KEPT_BYTES_MAX: usize = 2 * 1024 * 1024;

/// Record buffers that the writer hands back once a batch is written, for
/// the next batch to encode into. A batch of a thousand events needs a
/// buffer of several hundred KiB: freshly allocated, the allocator maps it
/// (page faults as the caller encodes into it), and freed in the writer
/// thread it is unmapped (a TLB shootdown across cores), once per batch.
#[derive(Default)]
pub(crate) struct RecordBuffers {
    free: std::sync::Mutex<Vec<Vec<u8>>>,
}

impl RecordBuffers {
    /// An empty buffer with room for at least `capacity_bytes`.
    pub fn take(&self, capacity_bytes: usize) -> Vec<u8> {
        let reused = match self.free.lock() {
            Ok(mut free) => free.pop(),
            Err(_) => None,
        };
        match reused {
            Some(mut buffer) => {
                buffer.clear();
                buffer.reserve(capacity_bytes);
                buffer
            }
            None => Vec::with_capacity(capacity_bytes),
        }
    }

    /// Keeps `buffer` for a later `take`, unless the pool is full or the
    /// buffer too large.
    pub fn give_back(&self, buffer: Vec<u8>) {
        if buffer.capacity() > RECORD_BUFFER_KEPT_BYTES_MAX {
            return;
        }
        if let Ok(mut free) = self.free.lock() {
            if free.len() < RECORD_BUFFERS_KEPT_MAX {
                free.push(buffer);
            }
        }
    }
}

/// The records of one `append` or `append_batch` call, encoded by the
/// caller: each is `RECORD_HEADER_BYTES` of room for its header (filled in
/// by the writer, which alone knows the sequence numbers) and its body.
pub(crate) struct PreparedBatch {
    pub records: Vec<u8>,
    /// End offset in `records` of each record.
    pub record_ends: Vec<usize>,
    /// Each event's id (as encoded in its body), for the duplicate window.
    pub ids: Vec<Uuid>,
    /// Whether the caller set each id: only those can be duplicates.
    pub id_set_by_caller: Vec<bool>,
    /// `(event index, expected version)` of the conditional events, in
    /// index order; empty (and unallocated) for ordinary appends.
    pub expected_versions: Vec<(usize, u64)>,
}

impl PreparedBatch {
    pub fn has_caller_set_ids(&self) -> bool {
        self.id_set_by_caller.contains(&true)
    }

    /// The body of event `index` (after the room for its header).
    pub fn body(&self, index: usize) -> &[u8] {
        let start = match index.checked_sub(1) {
            Some(previous) => self.record_ends[previous],
            None => 0,
        };
        &self.records[start + RECORD_HEADER_BYTES..self.record_ends[index]]
    }

    /// Refuses a batch that gives one id to two events: it cannot be
    /// appended (ids identify events) nor be a retry of anything.
    pub fn check_ids_unique(&self) -> Result<()> {
        if self.ids.len() < 2 || !self.has_caller_set_ids() {
            return Ok(());
        }
        let mut ids: Vec<Uuid> = self
            .ids
            .iter()
            .zip(&self.id_set_by_caller)
            .filter(|(_, &set_by_caller)| set_by_caller)
            .map(|(&id, _)| id)
            .collect();
        ids.sort_unstable();
        match ids.windows(2).find(|pair| pair[0] == pair[1]) {
            Some(pair) => Err(Error::InvalidEvent(format!(
                "id {} is given to more than one event of the batch",
                pair[0]
            ))),
            None => Ok(()),
        }
    }

    pub fn len(&self) -> u64 {
        self.record_ends.len() as u64
    }
    pub fn record_bytes(&self) -> u64 {
        self.records.len() as u64
    }
}

/// Answers a request with `error` without doing it.
fn reject(request: Request, error: Error) {
    match request {
        Request::Append { reply, .. } => {
            let _ = reply.send(Err(error));
        }
        Request::Sync { reply } => {
            let _ = reply.send(Err(error));
        }
        #[cfg(test)]
        Request::Panic | Request::PanicSyncer => {}
    }
}

pub(crate) enum Request {
    /// Answered with the sequence number of the batch's first event.
    Append {
        batch: PreparedBatch,
        caller: ThreadId,
        reply: Sender<Result<u64>>,
    },
    /// Answered once everything written so far is synced.
    Sync { reply: Sender<Result<()>> },
    /// Makes the writer panic, to test poisoning.
    #[cfg(test)]
    Panic,
    /// Makes the syncer thread panic on the next group handed to it.
    #[cfg(test)]
    PanicSyncer,
}

/// What the writer starts from: the state recovery left.
pub(crate) struct WriterStart {
    pub active: Arc<Segment>,
    /// File length of the active segment (preallocation included).
    pub active_file_len: u64,
    pub next_seq: u64,
    pub index_capacity: u64,
    /// A clean-close marker vouches for the files as they are.
    pub marker_present: bool,
}

/// The running writer thread, as the `Log` handle sees it.
pub(crate) struct WriterHandle {
    tx: Option<Sender<Request>>,
    thread: Option<JoinHandle<()>>,
    exited: Receiver<()>,
}

impl WriterHandle {
    /// The channel to the writer, until shutdown.
    pub fn sender(&self) -> Option<&Sender<Request>> {
        self.tx.as_ref()
    }

    /// Tells the writer to finish (final sync, clean close) and waits for
    /// it up to `deadline`.
    pub fn shutdown(&mut self, deadline: Duration) {
        // Dropping the only sender tells the writer to finish.
        drop(self.tx.take());
        if let Some(thread) = self.thread.take() {
            match self.exited.recv_timeout(deadline) {
                Ok(()) | Err(RecvTimeoutError::Disconnected) => {
                    let _ = thread.join();
                }
                Err(RecvTimeoutError::Timeout) => {
                    tracing::error!("evlog:writer did not stop within the deadline; detaching it");
                }
            }
        }
    }
}

pub(crate) struct Writer {
    shared: Arc<Shared>,
    rx: Receiver<Request>,
    active: Arc<Segment>,
    /// End of the last committed record in the active segment.
    data_bytes: u64,
    /// File length of the active segment, including zeroed preallocation.
    allocated_bytes: u64,
    next_seq: u64,
    /// Highest sequence number written to the file.
    written_seq: u64,
    /// Highest sequence number known to be durable (synced).
    durable_seq: u64,
    index_capacity: u64,
    record_buf: Vec<u8>,
    offsets: Vec<u64>,
    unsynced: bool,
    last_sync: Instant,
    last_sync_duration: Duration,
    /// Threads that appended recently, with when they last did.
    appenders: Vec<(ThreadId, Instant)>,
    carry: Option<Request>,
    /// The clean-close marker on disk names the active segment.
    marker_present: bool,
    /// Positions published by the last group whose waiters are woken once
    /// its callers are answered.
    wake_after_reply: crate::watermark::Changed,
    /// How far ahead to zero the active segment now: shrinks when the disk
    /// is too full for the configured step, restored at the next roll.
    preallocate_bytes: u64,
    /// The duplicate window and the entity versions of conditional appends.
    admission: Admission,
    /// Under `Durability::Always`, the thread that syncs and answers while
    /// this one writes the next group.
    syncer: Option<Syncer>,
    /// The next group handed to the syncer makes it panic (tests).
    #[cfg(test)]
    panic_syncer_next: bool,
}

pub(crate) type Group = Vec<(PreparedBatch, ThreadId, Sender<Result<u64>>)>;

impl Writer {
    /// Starts the `evlog:writer` thread.
    pub fn spawn(shared: Arc<Shared>, start: WriterStart) -> Result<WriterHandle> {
        let (tx, rx) = crossbeam_channel::bounded(CHANNEL_CAPACITY);
        let (exited_tx, exited) = crossbeam_channel::bounded(1);
        // Recovery synced the active segment (or a clean close had), so
        // all of it is durable.
        let last_seq = start.next_seq - 1;
        let writer = Writer {
            shared: Arc::clone(&shared),
            rx: rx.clone(),
            data_bytes: start.active.committed_bytes(),
            allocated_bytes: start.active_file_len,
            active: start.active,
            next_seq: start.next_seq,
            written_seq: last_seq,
            durable_seq: last_seq,
            index_capacity: start.index_capacity,
            record_buf: Vec::new(),
            offsets: Vec::new(),
            unsynced: false,
            last_sync: Instant::now(),
            last_sync_duration: Duration::ZERO,
            appenders: Vec::new(),
            carry: None,
            marker_present: start.marker_present,
            preallocate_bytes: shared.options.preallocate_bytes,
            wake_after_reply: crate::watermark::Changed::default(),
            admission: Admission::new(shared.options.dedup_window_ids),
            syncer: match shared.options.durability {
                Durability::Always => Some(Syncer::spawn(Arc::clone(&shared), last_seq)?),
                Durability::Interval(_) | Durability::OsBuffered => None,
            },
            #[cfg(test)]
            panic_syncer_next: false,
        };
        let dir = shared.dir.clone();
        let thread = std::thread::Builder::new()
            .name("evlog:writer".into())
            .spawn(move || {
                let outcome =
                    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| writer.run()));
                if let Err(panic) = outcome {
                    let message = panic
                        .downcast_ref::<&str>()
                        .map(|s| s.to_string())
                        .or_else(|| panic.downcast_ref::<String>().cloned())
                        .unwrap_or_else(|| "unknown panic".into());
                    shared.poison(Error::WriterPanicked(message));
                }
                // A poisoned log keeps answering, with the poisoning error,
                // every request queued or still to come, until it is closed:
                // no caller may wait forever on a writer that stopped. The
                // receiver is kept outside the writer so that this works
                // after a panic too.
                for request in rx.iter() {
                    reject(request, shared.poisoned_error());
                }
                shared.marks.stop();
                let _ = exited_tx.send(());
            })
            .map_err(|e| Error::Io {
                path: dir,
                source: e,
            })?;
        Ok(WriterHandle {
            tx: Some(tx),
            thread: Some(thread),
            exited,
        })
    }

    /// Runs until every sender is gone, then closes cleanly.
    fn run(mut self) {
        while let Some(request) = self.next_request() {
            let outcome = match request {
                Request::Sync { reply } => {
                    let result = self.sync();
                    let failed = result.is_err();
                    let _ = reply.send(result);
                    if failed {
                        Err(())
                    } else {
                        Ok(())
                    }
                }
                Request::Append {
                    batch,
                    caller,
                    reply,
                } => self.commit(batch, caller, reply),
                #[cfg(test)]
                Request::Panic => panic!("injected writer panic"),
                #[cfg(test)]
                Request::PanicSyncer => {
                    self.panic_syncer_next = true;
                    Ok(())
                }
            };
            if outcome.is_err() {
                self.shared.marks.stop();
                return; // poisoned: stop accepting work
            }
        }
        if let Err(e) = self.close_cleanly() {
            // The data is durable (or the log is poisoned); without the
            // marker the next open scans the active segment, as after a
            // crash.
            tracing::warn!(error = %e, "could not close cleanly; the next open will scan the active segment");
        }
        self.shared.marks.stop();
    }

    /// The clean close: everything synced, the preallocated tails of the
    /// active segment and its index cut, then the marker that lets the next
    /// open trust all of it without a scan, written last.
    fn close_cleanly(&mut self) -> Result<()> {
        self.sync()?;
        let active = Arc::clone(&self.active);
        active.file.set_len(self.data_bytes).at(&active.path)?;
        active.file.sync_all().at(&active.path)?;
        self.allocated_bytes = self.data_bytes;
        active.index.flush()?;
        active.index.trim()?;
        let count = active.record_count();
        let tail_offset = if count == 0 {
            SEGMENT_HEADER_BYTES
        } else {
            active.index.entry(count - 1)
        };
        // Checksum what is on disk, read back, not what was meant to be.
        let mut tail = vec![0u8; (self.data_bytes - tail_offset) as usize];
        active
            .file
            .read_exact_at(&mut tail, tail_offset)
            .at(&active.path)?;
        let marker = CleanClose {
            active_first_seq: active.first_seq,
            last_seq: self.next_seq - 1,
            active_bytes: self.data_bytes,
            tail_offset,
            tail_crc: crc32fast::hash(&tail),
            index_entries_crc: active.index.entries_crc(),
        };
        marker.write(&*self.shared.storage, &self.shared.segments_dir)?;
        self.marker_present = true;
        Ok(())
    }

    fn next_request(&mut self) -> Option<Request> {
        if let Some(request) = self.carry.take() {
            return Some(request);
        }
        // A caller that was just answered usually sends its next request
        // within microseconds; waiting for it awake saves the wake-up of a
        // parked thread (tens of microseconds on a VM) on every append.
        let spin_until = Instant::now() + WRITER_SPIN;
        while Instant::now() < spin_until {
            match self.rx.try_recv() {
                Ok(request) => return Some(request),
                Err(crossbeam_channel::TryRecvError::Disconnected) => return None,
                Err(crossbeam_channel::TryRecvError::Empty) => std::hint::spin_loop(),
            }
        }
        loop {
            let wait = match self.shared.options.durability {
                Durability::Interval(interval) if self.unsynced => {
                    interval.saturating_sub(self.last_sync.elapsed())
                }
                _ => IDLE_WAKE,
            };
            match self.rx.recv_timeout(wait) {
                Ok(request) => return Some(request),
                Err(RecvTimeoutError::Disconnected) => return None,
                Err(RecvTimeoutError::Timeout) => {
                    if self.unsynced && self.sync().is_err() {
                        return None;
                    }
                }
            }
        }
    }

    /// Syncs the active segment and publishes the durable position. A
    /// failure poisons the log: after a failed fsync the kernel may have
    /// dropped the dirty pages, so a retry that "succeeds" would prove
    /// nothing (fsyncgate).
    fn sync(&mut self) -> Result<()> {
        self.sync_unpublished()?;
        self.shared.marks.publish_durable(self.durable_seq);
        Ok(())
    }

    /// `sync` without publishing the durable position (the caller does).
    fn sync_unpublished(&mut self) -> Result<()> {
        self.settle_syncer();
        self.shared.check_poison()?;
        if !self.unsynced {
            return Ok(());
        }
        let span = tracing::trace_span!("evlog.fsync", through_seq = self.written_seq).entered();
        let started = Instant::now();
        if let Err(e) = self.active.file.sync_data() {
            return Err(self.poison(crate::error::io_error(&self.active.path, e)));
        }
        self.unsynced = false;
        self.durable_seq = self.written_seq;
        self.last_sync = Instant::now();
        self.last_sync_duration = self.last_sync - started;
        self.shared.counters.note_fsync(self.last_sync_duration);
        drop(span);
        Ok(())
    }

    /// Waits until the syncer thread has synced and answered every group
    /// handed to it, so that this thread can sync, roll or close by itself.
    fn settle_syncer(&mut self) {
        if let Some(syncer) = &self.syncer {
            self.durable_seq = self.durable_seq.max(syncer.settle());
        }
    }

    /// Poisons the log with `cause` and returns the error callers get.
    fn poison(&self, cause: Error) -> Error {
        self.shared.poison(cause);
        self.shared.poisoned_error()
    }

    /// Collects a commit group starting with `batch`, writes it, answers.
    /// `Err` only when the log is poisoned.
    fn commit(
        &mut self,
        batch: PreparedBatch,
        caller: ThreadId,
        reply: Sender<Result<u64>>,
    ) -> Result<(), ()> {
        let segment_bytes_max = self.shared.options.segment_bytes_max;
        if self.active.record_count() > 0
            && self.data_bytes + batch.record_bytes() > segment_bytes_max
        {
            if let Err(e) = self.roll() {
                let _ = reply.send(Err(e));
                return if self.shared.is_poisoned() {
                    Err(())
                } else {
                    Ok(())
                };
            }
        }
        let mut group_bytes = batch.record_bytes();
        let mut group: Group = vec![(batch, caller, reply)];
        let linger_deadline = self.linger_deadline();
        loop {
            let next = if self.group_waits_for_more(&group, linger_deadline) {
                self.rx
                    .recv_deadline(linger_deadline.unwrap_or_else(Instant::now))
                    .ok()
            } else {
                self.rx.try_recv().ok()
            };
            match next {
                Some(Request::Append {
                    batch,
                    caller,
                    reply,
                }) => {
                    let bytes = batch.record_bytes();
                    if group_bytes + bytes > GROUP_BYTES_MAX
                        || self.data_bytes + group_bytes + bytes > segment_bytes_max
                    {
                        self.carry = Some(Request::Append {
                            batch,
                            caller,
                            reply,
                        });
                        break;
                    }
                    group_bytes += bytes;
                    group.push((batch, caller, reply));
                }
                Some(other) => {
                    self.carry = Some(other);
                    break;
                }
                None => break,
            }
        }
        self.note_appenders(&group);
        // Duplicates and version conflicts are decided here, in the only
        // thread that appends, so no other append can come between a check
        // and the write it allows.
        let verdicts = self.admission.screen(&self.shared, &group, self.next_seq);
        let (mut writes, decided) = match verdicts {
            None => (group, Vec::new()),
            Some(verdicts) => {
                let mut writes = Vec::with_capacity(group.len());
                let mut decided = Vec::new();
                for (request, verdict) in group.into_iter().zip(verdicts) {
                    match verdict {
                        Verdict::Write => writes.push(request),
                        other => decided.push((request.2, other)),
                    }
                }
                group_bytes = writes.iter().map(|(b, _, _)| b.record_bytes()).sum();
                (writes, decided)
            }
        };
        let written = if writes.is_empty() {
            Ok(Vec::new())
        } else {
            self.write_group(&mut writes, group_bytes)
        };
        // Requests decided without a write are answered only now: one may
        // be a retry of a request written in this very group, and its `Ok`
        // must not come before that write's.
        match written {
            Ok(first_seqs) => {
                let mut answers = Vec::with_capacity(writes.len() + decided.len());
                for ((batch, _, reply), first_seq) in writes.into_iter().zip(first_seqs) {
                    answers.push((reply, Ok(first_seq)));
                    // Its records are in the page cache now.
                    self.shared.record_buffers.give_back(batch.records);
                }
                for (reply, verdict) in decided {
                    answers.push((reply, verdict.answer()));
                }
                let mut wake = std::mem::take(&mut self.wake_after_reply);
                match &self.syncer {
                    // Answered once synced, retries of earlier groups
                    // included (those may not be durable yet either).
                    Some(syncer) if group_bytes >= HAND_OVER_GROUP_BYTES || syncer.is_busy() => {
                        syncer.submit(SyncJob {
                            segment: Arc::clone(&self.active),
                            through_seq: self.written_seq,
                            answers,
                            #[cfg(test)]
                            panic: std::mem::take(&mut self.panic_syncer_next),
                        });
                        self.unsynced = false;
                    }
                    // A small group while the syncer is idle is synced
                    // here: handing it over adds a thread wake-up to every
                    // append's latency, and its fsync has little writing
                    // to overlap (A3, 4 threads appending one event at a
                    // time, was slower when every group was handed over).
                    Some(_) => {
                        let synced = self.sync_unpublished();
                        if synced.is_ok() {
                            let published =
                                self.shared.marks.publish_synced_quietly(self.durable_seq);
                            wake.published |= published.published;
                            wake.durable |= published.durable;
                        }
                        for (reply, answer) in answers {
                            let answer = match &synced {
                                Ok(()) => answer,
                                Err(e) => Err(e.duplicate()),
                            };
                            let _ = reply.send(answer);
                        }
                        if synced.is_err() {
                            self.shared.marks.wake(wake);
                            return Err(());
                        }
                    }
                    None => {
                        for (reply, answer) in answers {
                            let _ = reply.send(answer);
                        }
                    }
                }
                // Waiters (subscribers, the indexer) after the callers.
                self.shared.marks.wake(wake);
                Ok(())
            }
            Err(e) => {
                // What the group's requests were judged against assumed
                // the group written; it was not.
                self.admission.forget();
                let replies = writes.into_iter().map(|(_, _, reply)| reply);
                for reply in replies.chain(decided.into_iter().map(|(reply, _)| reply)) {
                    let _ = reply.send(Err(e.duplicate()));
                }
                if self.shared.is_poisoned() {
                    Err(())
                } else {
                    Ok(())
                }
            }
        }
    }

    /// Group commit with a short linger, like PostgreSQL's `commit_delay`:
    /// under `Always`, when other threads appended recently, a group waits
    /// (at most half an fsync) for their next append instead of leaving
    /// them to the next fsync. Without it, callers that arrive during an
    /// fsync split into alternating half-size groups.
    fn linger_deadline(&self) -> Option<Instant> {
        if self.shared.options.durability != Durability::Always {
            return None;
        }
        // The latest fsync's duration, whichever thread ran it.
        let last_sync_duration = match self.syncer.as_ref().and_then(Syncer::last_sync) {
            Some((took, ended)) if ended > self.last_sync => took,
            _ => self.last_sync_duration,
        };
        let linger = (last_sync_duration / LINGER_FSYNC_DIVISOR).min(LINGER_MAX);
        Some(Instant::now() + linger)
    }

    fn group_waits_for_more(&self, group: &Group, deadline: Option<Instant>) -> bool {
        let Some(deadline) = deadline else {
            return false;
        };
        if Instant::now() >= deadline || !self.rx.is_empty() {
            return false;
        }
        let now = Instant::now();
        self.appenders.iter().any(|(thread, seen)| {
            now.duration_since(*seen) < APPENDER_ACTIVE_WINDOW
                && !group.iter().any(|(_, caller, _)| caller == thread)
        })
    }

    fn note_appenders(&mut self, group: &Group) {
        let now = Instant::now();
        for (_, caller, _) in group {
            match self
                .appenders
                .iter_mut()
                .find(|(thread, _)| thread == caller)
            {
                Some(entry) => entry.1 = now,
                None => self.appenders.push((*caller, now)),
            }
        }
        self.appenders
            .retain(|(_, seen)| now.duration_since(*seen) < APPENDER_ACTIVE_WINDOW);
        if self.appenders.len() > APPENDERS_TRACKED_MAX {
            self.appenders
                .sort_by_key(|(_, seen)| std::cmp::Reverse(*seen));
            self.appenders.truncate(APPENDERS_TRACKED_MAX);
        }
    }

    /// Frames, writes and (per durability) syncs one commit group, then
    /// publishes it. Returns the first sequence number of each batch.
    fn write_group(&mut self, group: &mut Group, group_bytes: u64) -> Result<Vec<u64>> {
        self.shared.check_poison()?;
        let count: u64 = group.iter().map(|(b, _, _)| b.len()).sum();
        // One span per group (never per event); free without a subscriber.
        let _span = tracing::trace_span!(
            "evlog.commit_group",
            first_seq = self.next_seq,
            events = count,
            bytes = group_bytes,
            requests = group.len()
        )
        .entered();
        // Index entries and segment space come first, so that a full disk
        // fails the append before any record is written.
        if !self.active.index.reserve(count)? {
            // Unreachable with the computed capacity, but a full index must
            // roll rather than overflow.
            self.roll()?;
            if !self.active.index.reserve(count)? {
                return Err(Error::Internal(
                    "a commit group does not fit in one segment",
                ));
            }
        }
        self.preallocate(self.data_bytes + group_bytes)?;

        // What the syncer thread made durable since (a lower bound either
        // way, as `synced_delta` needs).
        self.durable_seq = self.durable_seq.max(self.shared.marks.durable_seq());
        self.offsets.clear();
        let mut seq = self.next_seq;
        let mut first_seqs = Vec::with_capacity(group.len());
        let mut at = self.data_bytes;
        for (batch, _, _) in group.iter_mut() {
            first_seqs.push(seq);
            // Each request is its own atomic unit: recovery keeps every
            // complete unit, so damage to one request's records never costs
            // another request sharing the same write. `prepare` bounds a
            // batch to `u32::MAX` events.
            let mut unit_remaining = u32::try_from(batch.len()).unwrap_or(u32::MAX);
            let mut start = 0;
            for &end in &batch.record_ends {
                self.offsets.push(at + start as u64);
                unit_remaining = unit_remaining.saturating_sub(1);
                let synced_delta = u32::try_from(seq - self.durable_seq).unwrap_or(u32::MAX);
                frame_record_in_place(
                    &mut batch.records[start..end],
                    seq,
                    unit_remaining,
                    synced_delta,
                );
                seq += 1;
                start = end;
            }
            at += batch.record_bytes();
        }
        debug_assert_eq!(at - self.data_bytes, group_bytes);
        // One request (a batch, or a lone append) is written from the
        // caller's buffer as it is; several are gathered into one write.
        let bytes: &[u8] = if let [(batch, _, _)] = group.as_slice() {
            &batch.records
        } else {
            self.record_buf.clear();
            for (batch, _, _) in group.iter() {
                self.record_buf.extend_from_slice(&batch.records);
            }
            &self.record_buf
        };
        if let Err(e) = self.active.file.write_all_at(bytes, self.data_bytes) {
            // Cut whatever part was written so no stray bytes follow the
            // committed end; cutting needs no free space.
            if let Err(cut) = self.active.file.set_len(self.data_bytes) {
                return Err(self.poison(crate::error::io_error(&self.active.path, cut)));
            }
            self.allocated_bytes = self.data_bytes;
            return Err(crate::error::io_error(&self.active.path, e));
        }
        self.unsynced = true;
        self.written_seq = seq - 1;
        self.allocated_bytes = self.allocated_bytes.max(self.data_bytes + group_bytes);
        // The durable position is published below together with the new
        // records: published earlier, it would name records readers cannot
        // read yet.
        match self.shared.options.durability {
            // The syncer thread syncs this group (see `commit`).
            Durability::Always if self.syncer.is_some() => {}
            Durability::Always => self.sync_unpublished()?,
            Durability::Interval(interval) => {
                if self.last_sync.elapsed() >= interval {
                    self.sync_unpublished()?;
                }
            }
            Durability::OsBuffered => {}
        }
        if let Err(e) = self.active.index.push(&self.offsets) {
            // The records are written but cannot be indexed: the in-memory
            // state no longer matches the files.
            return Err(self.poison(e));
        }
        self.data_bytes += group_bytes;
        self.active.publish(self.data_bytes);
        self.next_seq = seq;
        self.shared.written_seq.store(seq - 1, Ordering::Release);
        // Under `Always` the group is published once synced (by the syncer
        // thread or in `commit`), so no reader sees an event a power cut
        // could still take back.
        if self.syncer.is_none() {
            let changed = self.shared.marks.publish_quietly(seq - 1, self.durable_seq);
            self.wake_after_reply = changed;
        }
        self.shared.counters.note_group(count, group_bytes);
        Ok(first_seqs)
    }

    /// Fills the file with zeros past `end` so that the syncs of the small
    /// writes that follow only flush data, not a new file size and newly
    /// allocated blocks. A large group skips it: zeroing first would write
    /// every byte twice, and one size change per large write costs little.
    /// When the disk is too full for the step, the step shrinks (down to
    /// nothing) and the append goes on: preallocation is an optimization,
    /// never a reason to refuse an event that fits.
    fn preallocate(&mut self, end: u64) -> Result<()> {
        if end <= self.allocated_bytes || end - self.data_bytes >= PREALLOCATE_SKIP_GROUP_BYTES {
            return Ok(());
        }
        while self.preallocate_bytes > 0 {
            let new_len = end + self.preallocate_bytes;
            match crate::index::seq::allocate_with_zeros(
                &*self.active.file,
                self.allocated_bytes,
                new_len,
            ) {
                Ok(()) => {
                    self.allocated_bytes = new_len;
                    if self.shared.options.durability != Durability::OsBuffered {
                        // Like every fsync, a failed one here poisons the log.
                        self.unsynced = true;
                        self.sync()?;
                    }
                    return Ok(());
                }
                Err(e) => {
                    // Give the space back; no record was written.
                    if let Err(cut) = self.active.file.set_len(self.allocated_bytes) {
                        return Err(self.poison(crate::error::io_error(&self.active.path, cut)));
                    }
                    if !crate::error::is_disk_full(&e) {
                        return Err(crate::error::io_error(&self.active.path, e));
                    }
                    self.preallocate_bytes = if self.preallocate_bytes > PREALLOCATE_STEP_MIN_BYTES
                    {
                        self.preallocate_bytes / 4
                    } else {
                        0
                    };
                    tracing::warn!(
                        file = %self.active.path.display(),
                        preallocate_bytes = self.preallocate_bytes,
                        "disk nearly full: preallocating less"
                    );
                }
            }
        }
        Ok(())
    }

    /// Seals the active segment and starts the next one. Steps that cannot
    /// be undone come after the one most likely to fail on a full disk
    /// (creating the next segment), and that one is undone when it fails,
    /// so the same log can retry the roll once space is freed.
    fn roll(&mut self) -> Result<()> {
        let sealed = Arc::clone(&self.active);
        let _span = tracing::debug_span!(
            "evlog.roll",
            sealed_first_seq = sealed.first_seq,
            sealed_bytes = self.data_bytes,
            next_seq = self.next_seq
        )
        .entered();
        // 1. Everything in the old segment durable (a failure poisons).
        self.unsynced = true;
        self.sync()?;
        // 2. Its preallocated tail cut: never below the published length,
        //    so readers' mappings stay valid.
        if let Err(e) = sealed
            .file
            .set_len(self.data_bytes)
            .and_then(|()| sealed.file.sync_all())
        {
            return Err(self.poison(crate::error::io_error(&sealed.path, e)));
        }
        self.allocated_bytes = self.data_bytes;
        // 3. A clean-close marker names the active segment; once another
        //    segment follows, it could only be ignored, so it goes now.
        if self.marker_present {
            crate::marker::remove(&*self.shared.storage, &self.shared.segments_dir)?;
            self.marker_present = false;
        }
        // 4. The next segment, created durably; undone on failure, since a
        //    segment file after the active one would make recovery take the
        //    active one as sealed.
        let created = Segment::create(
            &*self.shared.storage,
            &self.shared.segments_dir,
            self.next_seq,
            self.index_capacity,
            crate::recovery::active_map_bytes(&self.shared.options),
        );
        let segment = match created {
            Ok(segment) => Arc::new(segment),
            Err(e) => {
                if let Err(undo) = self.remove_unused_segment(self.next_seq) {
                    return Err(self.poison(undo));
                }
                return Err(e);
            }
        };
        // 5. The old index sealed (entries' checksum in its header), cut to
        //    its entries and synced. A crash before this leaves an index
        //    that fails its checks, which the next open rebuilds.
        if let Err(e) = sealed
            .index
            .seal(sealed.first_seq)
            .and_then(|()| sealed.index.trim())
        {
            return Err(self.poison(e));
        }
        self.shared.push_segment(Arc::clone(&segment));
        self.active = segment;
        self.data_bytes = SEGMENT_HEADER_BYTES;
        self.allocated_bytes = SEGMENT_HEADER_BYTES;
        self.unsynced = false;
        self.preallocate_bytes = self.shared.options.preallocate_bytes;
        self.shared.counters.note_roll();
        Ok(())
    }

    /// Removes the files of a segment whose creation failed half way.
    fn remove_unused_segment(&self, first_seq: u64) -> Result<()> {
        let storage = &*self.shared.storage;
        let dir = &self.shared.segments_dir;
        for name in [
            crate::segment::segment_file_name(first_seq),
            crate::segment::index_file_name(first_seq),
        ] {
            let path = dir.join(name);
            if storage.exists(&path) {
                storage.remove_file(&path).at(&path)?;
            }
        }
        crate::fsutil::sync_dir(storage, dir)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // A buffer given back is reused (its allocation, emptied); the pool
    // keeps at most RECORD_BUFFERS_KEPT_MAX and none over the size cap.
    #[test]
    fn record_buffers_reuse_and_stay_bounded() {
        let pool = RecordBuffers::default();
        let mut buffer = pool.take(1000);
        buffer.extend_from_slice(b"records");
        let address = buffer.as_ptr();
        pool.give_back(buffer);
        let reused = pool.take(500);
        assert!(reused.is_empty());
        assert_eq!(reused.as_ptr(), address);
        assert!(reused.capacity() >= 1000);

        pool.give_back(Vec::with_capacity(RECORD_BUFFER_KEPT_BYTES_MAX + 1));
        assert_eq!(pool.free.lock().map(|free| free.len()).ok(), Some(0));
        for _ in 0..RECORD_BUFFERS_KEPT_MAX + 3 {
            pool.give_back(Vec::with_capacity(64));
        }
        assert_eq!(
            pool.free.lock().map(|free| free.len()).ok(),
            Some(RECORD_BUFFERS_KEPT_MAX)
        );
        // A kept buffer smaller than asked for grows to the request.
        assert!(pool.take(4096).capacity() >= 4096);
    }
}
