//! The writer thread: the only code that appends to the log.
//!
//! Appends from any number of threads arrive on one bounded channel. The
//! writer takes the first waiting request, then every request already
//! queued behind it (up to `GROUP_BYTES_MAX`), frames them as one commit
//! group, writes the group with one `pwrite`, syncs once, publishes the new
//! records to readers, and only then answers each caller. Concurrent appends
//! therefore share one fsync (group commit), and a caller's `Ok` always
//! means its events are as durable as `Durability` promises.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread::ThreadId;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};

use crate::error::{Error, IoContext, Result};
use crate::log::Shared;
use crate::options::Durability;
use crate::record::{encode_record, RECORD_HEADER_BYTES};
use crate::segment::{Segment, SEGMENT_HEADER_BYTES};

/// Most bytes one commit group carries (unless one batch alone is larger):
/// bounds the write buffer and how long early callers wait for late ones.
pub(crate) const GROUP_BYTES_MAX: u64 = 4 * 1024 * 1024;
/// Requests waiting for the writer; a full channel makes callers wait
/// (backpressure) instead of growing memory without bound.
pub(crate) const CHANNEL_CAPACITY: usize = 4096;
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

/// Encoded event bodies of one `append` or `append_batch` call.
pub(crate) struct PreparedBatch {
    pub bodies: Vec<u8>,
    /// End offset in `bodies` of each body.
    pub body_ends: Vec<usize>,
}

impl PreparedBatch {
    pub fn len(&self) -> u64 {
        self.body_ends.len() as u64
    }
    pub fn record_bytes(&self) -> u64 {
        self.bodies.len() as u64 + self.len() * RECORD_HEADER_BYTES as u64
    }
    fn bodies(&self) -> impl Iterator<Item = &[u8]> {
        let mut start = 0;
        self.body_ends.iter().map(move |&end| {
            let body = &self.bodies[start..end];
            start = end;
            body
        })
    }
}

/// The same failure for every caller of a commit group (`Error` cannot be
/// cloned because `io::Error` cannot).
fn same_error(error: &Error) -> Error {
    match error {
        Error::Io { path, source } => Error::Io {
            path: path.clone(),
            source: std::io::Error::new(source.kind(), source.to_string()),
        },
        other => Error::InvalidEvent(other.to_string()),
    }
}

/// Answers a request with `error` without doing it.
pub(crate) fn reject(request: Request, error: Error) {
    match request {
        Request::Append { reply, .. } => {
            let _ = reply.send(Err(error));
        }
        Request::Sync { reply } => {
            let _ = reply.send(Err(error));
        }
        #[cfg(test)]
        Request::Panic => {}
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
}

pub(crate) struct Writer {
    pub shared: Arc<Shared>,
    pub rx: Receiver<Request>,
    pub active: Arc<Segment>,
    /// End of the last committed record in the active segment.
    pub data_len: u64,
    /// File length of the active segment, including zeroed preallocation.
    pub allocated_len: u64,
    pub next_seq: u64,
    /// Highest sequence number written to the file.
    pub written_seq: u64,
    /// Highest sequence number known to be durable (synced).
    pub durable_seq: u64,
    pub index_capacity: u64,
    pub record_buf: Vec<u8>,
    pub offsets: Vec<u64>,
    pub unsynced: bool,
    pub last_sync: Instant,
    pub last_sync_duration: Duration,
    /// Threads that appended recently, with when they last did.
    pub appenders: Vec<(ThreadId, Instant)>,
    pub carry: Option<Request>,
}

type Group = Vec<(PreparedBatch, ThreadId, Sender<Result<u64>>)>;

impl Writer {
    /// Runs until every sender is gone, then syncs and returns.
    pub fn run(mut self) {
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
            };
            if outcome.is_err() {
                return; // poisoned: stop accepting work
            }
        }
        if self.sync().is_ok() {
            if let Err(e) = self.active.index.flush() {
                tracing::warn!(error = %e, "could not flush the sequence index at close");
            }
            // Close cuts the preallocated tails once nothing maps them.
            self.active.index.trim_when_unmapped();
            if let Err(e) = self
                .active
                .file
                .set_len(self.data_len)
                .and_then(|()| self.active.file.sync_all())
            {
                tracing::warn!(error = %e, "could not trim the active segment at close");
            }
        }
    }

    fn next_request(&mut self) -> Option<Request> {
        if let Some(request) = self.carry.take() {
            return Some(request);
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

    /// Syncs the active segment. A failure poisons the log: after a failed
    /// fsync the kernel may have dropped the dirty pages, so a retry that
    /// "succeeds" would prove nothing (fsyncgate).
    fn sync(&mut self) -> Result<()> {
        if !self.unsynced {
            return Ok(());
        }
        let started = Instant::now();
        if let Err(e) = self.active.file.sync_data() {
            let error = Error::Io {
                path: self.active.path.clone(),
                source: e,
            };
            self.shared.poison(format!("fsync failed: {error}"));
            return Err(self.shared.poisoned_error());
        }
        self.unsynced = false;
        self.durable_seq = self.written_seq;
        self.last_sync = Instant::now();
        self.last_sync_duration = self.last_sync - started;
        Ok(())
    }

    /// Collects a commit group starting with `batch`, writes it, answers.
    fn commit(
        &mut self,
        batch: PreparedBatch,
        caller: ThreadId,
        reply: Sender<Result<u64>>,
    ) -> Result<(), ()> {
        let segment_bytes_max = self.shared.options.segment_bytes_max;
        if self.active.record_count() > 0
            && self.data_len + batch.record_bytes() > segment_bytes_max
        {
            if let Err(e) = self.roll() {
                self.shared
                    .poison(format!("could not start a new segment: {e}"));
                let _ = reply.send(Err(self.shared.poisoned_error()));
                return Err(());
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
                        || self.data_len + group_bytes + bytes > segment_bytes_max
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
        match self.write_group(&group, group_bytes) {
            Ok(first_seqs) => {
                for ((_, _, reply), first_seq) in group.into_iter().zip(first_seqs) {
                    let _ = reply.send(Ok(first_seq));
                }
                Ok(())
            }
            Err(e) => {
                let poisoned = self.shared.is_poisoned();
                for (_, _, reply) in group {
                    let answer = if poisoned {
                        self.shared.poisoned_error()
                    } else {
                        same_error(&e)
                    };
                    let _ = reply.send(Err(answer));
                }
                if poisoned {
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
        let linger = (self.last_sync_duration / LINGER_FSYNC_DIVISOR).min(LINGER_MAX);
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
    fn write_group(&mut self, group: &Group, group_bytes: u64) -> Result<Vec<u64>> {
        let count: u64 = group.iter().map(|(b, _, _)| b.len()).sum();
        let mut group_remaining = u32::try_from(count)
            .map_err(|_| Error::InvalidEvent("commit group too large".into()))?;
        if !self.active.index.reserve(count)? {
            // Unreachable with the computed capacity, but a full index must
            // roll rather than overflow.
            if let Err(e) = self.roll() {
                self.shared
                    .poison(format!("could not start a new segment: {e}"));
                return Err(self.shared.poisoned_error());
            }
            if !self.active.index.reserve(count)? {
                return Err(Error::InvalidEvent(
                    "batch does not fit in one segment".into(),
                ));
            }
        }
        self.preallocate(self.data_len + group_bytes)?;

        self.record_buf.clear();
        self.offsets.clear();
        let mut seq = self.next_seq;
        let mut first_seqs = Vec::with_capacity(group.len());
        for (batch, _, _) in group {
            first_seqs.push(seq);
            for body in batch.bodies() {
                self.offsets
                    .push(self.data_len + self.record_buf.len() as u64);
                group_remaining -= 1;
                let synced_delta = u32::try_from(seq - self.durable_seq).unwrap_or(u32::MAX);
                encode_record(
                    &mut self.record_buf,
                    seq,
                    group_remaining,
                    synced_delta,
                    body,
                );
                seq += 1;
            }
        }
        debug_assert_eq!(self.record_buf.len() as u64, group_bytes);

        if let Err(e) = self
            .active
            .file
            .write_all_at(&self.record_buf, self.data_len)
        {
            // Cut whatever part was written so no stray bytes follow the
            // committed end; cutting needs no free space.
            if let Err(cut) = self.active.file.set_len(self.data_len) {
                self.shared
                    .poison(format!("could not undo a failed write: {cut}"));
            }
            self.allocated_len = self.data_len;
            return Err(Error::Io {
                path: self.active.path.clone(),
                source: e,
            });
        }
        self.unsynced = true;
        self.written_seq = seq - 1;
        self.allocated_len = self.allocated_len.max(self.data_len + group_bytes);
        match self.shared.options.durability {
            Durability::Always => self.sync()?,
            Durability::Interval(interval) => {
                if self.last_sync.elapsed() >= interval {
                    self.sync()?;
                }
            }
            Durability::OsBuffered => {}
        }
        if let Err(e) = self.active.index.push(&self.offsets) {
            // The records are written but cannot be indexed: the in-memory
            // state no longer matches the files.
            self.shared
                .poison(format!("could not update the sequence index: {e}"));
            return Err(self.shared.poisoned_error());
        }
        self.data_len += group_bytes;
        self.active.publish(self.data_len);
        self.next_seq = seq;
        self.shared.last_seq.store(seq - 1, Ordering::Release);
        Ok(first_seqs)
    }

    /// Fills the file with zeros past `end` so that the syncs of the small
    /// writes that follow only flush data, not a new file size and newly
    /// allocated blocks. A large group skips it: zeroing first would write
    /// every byte twice, and one size change per large write costs little.
    fn preallocate(&mut self, end: u64) -> Result<()> {
        let chunk = self.shared.options.preallocate_bytes;
        if chunk == 0
            || end <= self.allocated_len
            || end - self.data_len >= PREALLOCATE_SKIP_GROUP_BYTES
        {
            return Ok(());
        }
        let new_len = end + chunk;
        let zeros = vec![0u8; (new_len - self.allocated_len) as usize];
        if let Err(e) = self.active.file.write_all_at(&zeros, self.allocated_len) {
            // Give the space back; no record was written. A full disk is
            // an error for this append, not a reason to poison the log.
            let _ = self.active.file.set_len(self.allocated_len);
            return Err(e).at(&self.active.path);
        }
        self.allocated_len = new_len;
        if self.shared.options.durability != Durability::OsBuffered {
            // Like every fsync, a failed one here poisons the log.
            self.unsynced = true;
            self.sync()?;
        }
        Ok(())
    }

    /// Seals the active segment and starts the next one.
    fn roll(&mut self) -> Result<()> {
        let sealed = Arc::clone(&self.active);
        sealed.file.sync_data().at(&sealed.path)?;
        self.durable_seq = self.written_seq;
        // Readers use pread, never mmap, on segments: cutting is safe.
        sealed.file.set_len(self.data_len).at(&sealed.path)?;
        sealed.file.sync_all().at(&sealed.path)?;
        sealed.index.seal(sealed.first_seq)?;
        sealed.index.trim_when_unmapped();
        let segment = Arc::new(Segment::create(
            &*self.shared.storage,
            &self.shared.segments_dir,
            self.next_seq,
            self.index_capacity,
            crate::recovery::active_map_bytes(&self.shared.options),
        )?);
        self.shared.push_segment(Arc::clone(&segment));
        self.active = segment;
        self.data_len = SEGMENT_HEADER_BYTES;
        self.allocated_len = SEGMENT_HEADER_BYTES;
        self.unsynced = false;
        Ok(())
    }
}
