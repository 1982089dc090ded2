//! The `Log` handle: open, append, read, close.

use std::ops::{Bound, Range, RangeBounds};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crossbeam_channel::{Receiver, Sender};
use uuid::Uuid;

use crate::error::{Error, Result};
use crate::event::{Event, LoggedEvent};
use crate::options::Options;
use crate::record::{encode_body, RECORD_HEADER_BYTES};
use crate::recovery::{self, RecoveryReport};
use crate::segment::{Cursor, Segment, Step, SEGMENT_HEADER_BYTES};
use crate::storage::{OsStorage, Storage};
use crate::writer::{PreparedBatch, Request};

/// How long `close` waits for the writer to finish its last sync before
/// giving up on it (the data it has not synced is then not promised).
const WRITER_SHUTDOWN_DEADLINE: Duration = Duration::from_secs(30);

/// State shared by the handle, the readers and the writer thread.
pub(crate) struct Shared {
    pub storage: Arc<dyn Storage>,
    pub dir: PathBuf,
    pub segments_dir: PathBuf,
    pub options: Options,
    /// All segments in sequence order; the last one is active.
    segments: RwLock<Vec<Arc<Segment>>>,
    /// Highest published sequence number; 0 while the log is empty.
    pub last_seq: AtomicU64,
    /// Lowest sequence number still in the log.
    pub first_seq: AtomicU64,
    poison: OnceLock<String>,
}

impl Shared {
    pub fn poison(&self, reason: String) {
        tracing::error!(reason = %reason, "evlog poisoned");
        let _ = self.poison.set(reason);
    }

    pub fn is_poisoned(&self) -> bool {
        self.poison.get().is_some()
    }

    pub fn poisoned_error(&self) -> Error {
        Error::Poisoned(
            self.poison
                .get()
                .cloned()
                .unwrap_or_else(|| "the writer thread stopped".into()),
        )
    }

    fn check_poison(&self) -> Result<()> {
        match self.poison.get() {
            Some(reason) => Err(Error::Poisoned(reason.clone())),
            None => Ok(()),
        }
    }

    pub fn push_segment(&self, segment: Arc<Segment>) {
        let mut segments = self
            .segments
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        segments.push(segment);
    }

    /// The segment that holds `seq`, which the caller knows is published.
    fn segment_for(&self, seq: u64) -> Result<Arc<Segment>> {
        let segments = self
            .segments
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let after = segments.partition_point(|s| s.first_seq <= seq);
        match after.checked_sub(1).and_then(|i| segments.get(i)) {
            Some(segment) => Ok(Arc::clone(segment)),
            None => Err(Error::NotFound(seq)),
        }
    }

    pub fn segments(&self) -> Vec<Arc<Segment>> {
        self.segments
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
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
    shared: Arc<Shared>,
    tx: Option<Sender<Request>>,
    writer: Option<JoinHandle<()>>,
    writer_exited: Receiver<()>,
    recovery: RecoveryReport,
    /// Holds the directory lock for as long as the log is open.
    _lock: Box<dyn std::any::Any + Send + Sync>,
}

impl Log {
    /// Opens (creating if needed) the log in `dir`, recovering from any
    /// crash: see ARCHITECTURE.md for what recovery checks.
    pub fn open(dir: impl AsRef<Path>, options: Options) -> Result<Log> {
        Log::open_with_storage(dir, options, Arc::new(OsStorage))
    }

    /// Opens the log on another [`Storage`], such as the simulated disk
    /// the crash tests use.
    pub fn open_with_storage(
        dir: impl AsRef<Path>,
        options: Options,
        storage: Arc<dyn Storage>,
    ) -> Result<Log> {
        let dir = dir.as_ref().to_path_buf();
        let opened = recovery::open(&*storage, &dir, &options)?;
        let shared = Arc::new(Shared {
            storage,
            segments_dir: opened.segments_dir.clone(),
            dir,
            options,
            segments: RwLock::new(opened.segments.clone()),
            last_seq: AtomicU64::new(opened.next_seq - 1),
            first_seq: AtomicU64::new(opened.first_seq),
            poison: OnceLock::new(),
        });
        let (tx, rx) = crossbeam_channel::bounded(crate::writer::CHANNEL_CAPACITY);
        let (exited_tx, writer_exited) = crossbeam_channel::bounded(1);
        let active = opened
            .segments
            .last()
            .cloned()
            .ok_or_else(|| Error::InvalidEvent("recovery returned no segment".into()))?;
        let writer = crate::writer::Writer {
            shared: Arc::clone(&shared),
            rx,
            data_len: active.committed_bytes(),
            allocated_len: opened.active_file_len,
            active,
            next_seq: opened.next_seq,
            // Recovery synced the active segment, so all of it is durable.
            written_seq: opened.next_seq - 1,
            durable_seq: opened.next_seq - 1,
            index_capacity: opened.index_capacity,
            record_buf: Vec::new(),
            offsets: Vec::new(),
            unsynced: false,
            last_sync: std::time::Instant::now(),
            last_sync_duration: Duration::ZERO,
            appenders: Vec::new(),
            carry: None,
        };
        let thread_shared = Arc::clone(&shared);
        // Kept outside the writer so that requests can still be answered
        // after the writer stopped, even by a panic.
        let reject_rx = writer.rx.clone();
        let handle = std::thread::Builder::new()
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
                    thread_shared.poison(format!("the writer thread panicked: {message}"));
                }
                // A poisoned log keeps answering, with the poisoning error,
                // every request queued or still to come, until it is closed:
                // no caller may wait forever on a writer that stopped.
                for request in reject_rx.iter() {
                    crate::writer::reject(request, thread_shared.poisoned_error());
                }
                let _ = exited_tx.send(());
            })
            .map_err(|e| Error::Io {
                path: shared.dir.clone(),
                source: e,
            })?;
        Ok(Log {
            shared,
            tx: Some(tx),
            writer: Some(handle),
            writer_exited,
            recovery: opened.report,
            _lock: opened.lock,
        })
    }

    /// Appends one event; returns its sequence number once it is as durable
    /// as the options say.
    pub fn append(&self, event: Event) -> Result<u64> {
        let batch = self.prepare(std::slice::from_ref(&event))?;
        self.submit(batch)
    }

    /// Appends events atomically: after a crash either all of them are in
    /// the log or none is. Returns their sequence numbers.
    pub fn append_batch(&self, events: &[Event]) -> Result<Range<u64>> {
        if events.is_empty() {
            let next = self.shared.last_seq.load(Ordering::Acquire) + 1;
            return Ok(next..next);
        }
        let batch = self.prepare(events)?;
        let count = batch.len();
        let first = self.submit(batch)?;
        Ok(first..first + count)
    }

    /// Syncs everything appended so far, whatever the durability setting.
    pub fn sync(&self) -> Result<()> {
        self.shared.check_poison()?;
        let tx = self.tx.as_ref().ok_or(Error::Closed)?;
        let (reply, answer) = crossbeam_channel::bounded(1);
        tx.send(Request::Sync { reply })
            .map_err(|_| self.shared.poisoned_error())?;
        answer.recv().map_err(|_| self.shared.poisoned_error())?
    }

    /// Validates, stamps and encodes events in the caller's thread, so the
    /// writer thread only frames and writes.
    fn prepare(&self, events: &[Event]) -> Result<PreparedBatch> {
        let options = &self.shared.options;
        let mut batch = PreparedBatch {
            bodies: Vec::with_capacity(events.len() * 256),
            body_ends: Vec::with_capacity(events.len()),
        };
        let now_us = now_micros();
        for event in events {
            event.validate()?;
            let start = batch.bodies.len();
            encode_body(
                event,
                event.id.unwrap_or_else(Uuid::now_v7),
                event.timestamp_us.unwrap_or(now_us),
                &mut batch.bodies,
            );
            let record_bytes = (batch.bodies.len() - start + RECORD_HEADER_BYTES) as u64;
            if record_bytes > options.record_bytes_max {
                return Err(Error::RecordTooLarge {
                    size_bytes: record_bytes,
                    max_bytes: options.record_bytes_max,
                });
            }
            batch.body_ends.push(batch.bodies.len());
        }
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

    fn submit(&self, batch: PreparedBatch) -> Result<u64> {
        self.shared.check_poison()?;
        let tx = self.tx.as_ref().ok_or(Error::Closed)?;
        let (reply, answer) = crossbeam_channel::bounded(1);
        tx.send(Request::Append {
            batch,
            caller: std::thread::current().id(),
            reply,
        })
        .map_err(|_| self.shared.poisoned_error())?;
        answer.recv().map_err(|_| self.shared.poisoned_error())?
    }

    /// Reads the event with sequence number `seq`, checking its CRC.
    pub fn get(&self, seq: u64) -> Result<LoggedEvent> {
        self.shared.check_poison()?;
        let last = self.shared.last_seq.load(Ordering::Acquire);
        if seq == 0 || seq > last || seq < self.shared.first_seq.load(Ordering::Acquire) {
            return Err(Error::NotFound(seq));
        }
        let segment = self.shared.segment_for(seq)?;
        segment.read_event(seq, self.shared.options.record_bytes_max)
    }

    /// Iterates over the events in `range` (clamped to what the log holds
    /// when the call is made), in sequence order.
    pub fn iter(&self, range: impl RangeBounds<u64>) -> Result<Iter> {
        self.shared.check_poison()?;
        let last = self.shared.last_seq.load(Ordering::Acquire);
        let first = self.shared.first_seq.load(Ordering::Acquire);
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
            shared: Arc::clone(&self.shared),
            next_seq: start,
            last_seq: end,
            segment: None,
            end_bytes: 0,
            cursor: Cursor::new(0, 0, 0),
            failed: false,
        })
    }

    /// The lowest sequence number in the log, if any event is.
    pub fn first_seq(&self) -> Option<u64> {
        let first = self.shared.first_seq.load(Ordering::Acquire);
        (self.last_seq()? >= first).then_some(first)
    }

    /// The highest acknowledged sequence number, if any event is.
    pub fn last_seq(&self) -> Option<u64> {
        let last = self.shared.last_seq.load(Ordering::Acquire);
        (last > 0).then_some(last)
    }

    /// What recovery found and repaired when this log was opened.
    pub fn recovery_report(&self) -> &RecoveryReport {
        &self.recovery
    }

    pub fn dir(&self) -> &Path {
        &self.shared.dir
    }

    /// Number of segment files.
    pub fn segment_count(&self) -> usize {
        self.shared.segments().len()
    }

    /// Stops the writer after it has synced everything, and releases the
    /// directory. Returns the poisoning error, if the log was poisoned.
    pub fn close(mut self) -> Result<()> {
        self.shutdown();
        self.shared.check_poison()
    }

    fn shutdown(&mut self) {
        // Dropping the only sender tells the writer to finish.
        drop(self.tx.take());
        if let Some(handle) = self.writer.take() {
            match self.writer_exited.recv_timeout(WRITER_SHUTDOWN_DEADLINE) {
                Ok(()) | Err(crossbeam_channel::RecvTimeoutError::Disconnected) => {
                    let _ = handle.join();
                }
                Err(crossbeam_channel::RecvTimeoutError::Timeout) => {
                    tracing::error!("evlog:writer did not stop within the deadline; detaching it");
                }
            }
        }
    }
}

impl Drop for Log {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Iterator over a range of events; see [`Log::iter`]. Each item is checked
/// (CRC, sequence number) before it is decoded; after an error the iterator
/// ends.
pub struct Iter {
    shared: Arc<Shared>,
    next_seq: u64,
    last_seq: u64,
    segment: Option<Arc<Segment>>,
    /// Committed length of `segment` when the cursor was placed.
    end_bytes: u64,
    cursor: Cursor,
    failed: bool,
}

impl Iter {
    fn step(&mut self) -> Result<Option<LoggedEvent>> {
        loop {
            if self.next_seq > self.last_seq {
                return Ok(None);
            }
            if let Some(segment) = &self.segment {
                // A sealed segment's records end at its count; never read on
                // into whatever follows them in the file.
                if self.next_seq >= segment.first_seq + segment.record_count() {
                    self.segment = None;
                }
            }
            let segment = match &self.segment {
                Some(segment) => Arc::clone(segment),
                None => {
                    let segment = self.shared.segment_for(self.next_seq)?;
                    let offset = segment.index.entry(self.next_seq - segment.first_seq);
                    self.end_bytes = segment.committed_bytes();
                    self.cursor =
                        Cursor::new(offset, self.end_bytes, self.shared.options.record_bytes_max);
                    self.segment = Some(Arc::clone(&segment));
                    segment
                }
            };
            let corrupt = |offset, kind| Error::Corrupt {
                file: segment.path.clone(),
                offset,
                kind,
            };
            let end = self.end_bytes;
            match self
                .cursor
                .next_step(segment.source(end))
                .map_err(|source| Error::Io {
                    path: segment.path.clone(),
                    source,
                })? {
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
                    let event =
                        crate::record::decode_body(header.seq, &bytes[RECORD_HEADER_BYTES..])
                            .map_err(|kind| corrupt(offset + RECORD_HEADER_BYTES as u64, kind))?;
                    self.next_seq += 1;
                    return Ok(Some(event));
                }
                Step::End { offset } => {
                    if self.next_seq < segment.first_seq + segment.record_count() {
                        return Err(corrupt(offset, crate::error::CorruptKind::Truncated));
                    }
                    self.segment = None;
                }
                Step::Invalid { offset, kind } => return Err(corrupt(offset, kind)),
            }
        }
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

    // A panic in the writer thread poisons the log: later calls fail with
    // `Poisoned` naming the panic, and a reopen recovers what was durable.
    #[test]
    fn log_writer_panic_poisons_until_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let log = Log::open(dir.path(), Options::default()).unwrap();
        let seq = log.append(Event::new("before.panic")).unwrap();
        log.tx.as_ref().unwrap().send(Request::Panic).unwrap();
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
                Err(Error::Poisoned(reason)) => {
                    assert!(reason.contains("injected writer panic"), "{reason}")
                }
                other => panic!("expected Poisoned, got {other:?}"),
            }
        }
        assert!(matches!(log.close(), Err(Error::Poisoned(_))));
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
