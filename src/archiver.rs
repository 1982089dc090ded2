//! The `evlog:archiver` thread and the executor of retention actions.
//!
//! The decision of what to archive, compact and delete is a pure function
//! ([`crate::retention::decide`]); this module gathers its inputs (one
//! summary per piece of the catalog, computed once per immutable piece and
//! cached), carries the actions out, and keeps the catalog and the files in
//! step. Every action follows the same crash-safe sequence:
//!
//! 1. write `archive/<first>.evz.tmp`, fsync it;
//! 2. rename it to `archive/<first>.evz` (replacing an older archive of the
//!    same range atomically) and fsync the directory: from here on the
//!    archive is the authoritative copy of its range (the catalog rule in
//!    FORMAT.md), whatever else is still on disk;
//! 3. swap the piece in the in-memory catalog, so that new reads go to the
//!    archive;
//! 4. unlink the segment (and its sequence index) that held the range, if
//!    one did, and fsync `segments/`. Readers that still hold the segment
//!    (mapped or open) finish on the unlinked inode; its space is freed
//!    when the last of them lets go. Nothing is ever truncated in place.
//!
//! A crash between 2 and 4 leaves both copies; the next open keeps the
//! archive and removes the segment. A crash before 2 leaves a `.tmp`, which
//! the next open removes.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};

use crate::archive::{ArchiveFile, ArchiveWriter, DeletionNote};
use crate::catalog::{Holder, Piece};
use crate::error::{Error, IoContext, Result};
use crate::fsutil::sync_dir;
use crate::holds::{Hold, HoldSet};
use crate::log::Shared;
use crate::retention::{
    decide, PieceKind, PieceSummary, RetentionAction, RetentionActionKind, RetentionPlan,
    RetentionPolicy,
};
use crate::segment::Segment;

/// Name of the archive directory under the data directory.
pub(crate) const ARCHIVE_DIR: &str = "archive";
/// The zstd level of archives. Measured with benches/archive.rs on the
/// reference workload, 256 KiB frames, 2-core AMD EPYC, one core, written
/// and synced: level 3 compresses 304 MB/s of input to 0.256x the live
/// bytes, level 5 116 MB/s to 0.244x, level 7 82 MB/s to 0.246x, level 9
/// 54 MB/s to 0.240x. Level 5 is the fastest under the 0.25x target, and
/// 1.45x the 80 MB/s one (FORMAT.md, Archive file).
pub(crate) const ARCHIVE_ZSTD_LEVEL: i32 = 5;

/// What one run of the archiver did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ArchiveRunReport {
    /// The actions carried out, in order, each with the rule behind it.
    pub actions: Vec<RetentionAction>,
    /// Sealed segments moved into archives, whole.
    pub segments_archived: u64,
    /// Pieces rewritten without the events retention removed.
    pub pieces_compacted: u64,
    /// Events removed by retention.
    pub events_deleted: u64,
    /// File bytes of the pieces before and after the run (segments count
    /// their sequence index too).
    pub stored_bytes_before: u64,
    /// File bytes of the pieces after the run.
    pub stored_bytes_after: u64,
}

/// The archiver as others see it: whether it stopped, and why.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ArchiverStatus {
    /// Runs completed since the log was opened.
    pub runs: u64,
    /// Why archiving stopped (an I/O error or a panic in the archiver).
    /// Appends and reads go on; archiving resumes at the next open.
    pub stopped_because: Option<String>,
}

/// `(pieces done, pieces to do)` as a run goes.
type ProgressSender = Option<Sender<(u64, u64)>>;

enum Command {
    /// Run now and answer.
    RunNow(Sender<Result<ArchiveRunReport>>, ProgressSender),
    /// Archive every sealed segment now, whatever the policy.
    ArchiveAllSealed(Sender<Result<ArchiveRunReport>>, ProgressSender),
}

/// The `evlog:archiver` thread as the `Log` sees it.
pub(crate) struct ArchiverHandle {
    commands: Sender<Command>,
    stop: Arc<AtomicBool>,
    status: Arc<Mutex<ArchiverStatus>>,
    thread: Option<JoinHandle<()>>,
}

impl ArchiverHandle {
    pub fn status(&self) -> ArchiverStatus {
        self.status
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn ask(
        &self,
        make: impl FnOnce(Sender<Result<ArchiveRunReport>>, ProgressSender) -> Command,
        mut progress: Option<&mut dyn FnMut(u64, u64)>,
    ) -> Result<ArchiveRunReport> {
        if let Some(reason) = self.status().stopped_because {
            return Err(Error::ArchiverStopped(reason));
        }
        let (reply, answer) = crossbeam_channel::bounded(1);
        let (progress_sender, progress_reports) = crossbeam_channel::unbounded();
        self.commands
            .send(make(reply, progress.is_some().then_some(progress_sender)))
            .map_err(|_| Error::ArchiverStopped("the archiver thread ended".into()))?;
        if let Some(report) = progress.as_mut() {
            // Until the run drops its progress sender (it is over).
            for (done, total) in progress_reports.iter() {
                report(done, total);
            }
        }
        answer.recv().unwrap_or_else(|_| {
            Err(Error::ArchiverStopped(
                self.status()
                    .stopped_because
                    .unwrap_or_else(|| "the archiver thread ended".into()),
            ))
        })
    }

    /// Runs the retention policy now and waits for the result, telling
    /// `progress` (pieces done, pieces to do) as it goes.
    pub fn run_now(&self, progress: Option<&mut dyn FnMut(u64, u64)>) -> Result<ArchiveRunReport> {
        self.ask(Command::RunNow, progress)
    }

    /// Archives every sealed segment now and waits.
    pub fn archive_all_sealed(
        &self,
        progress: Option<&mut dyn FnMut(u64, u64)>,
    ) -> Result<ArchiveRunReport> {
        self.ask(Command::ArchiveAllSealed, progress)
    }

    /// Stops the thread (after the action in progress) and waits.
    pub fn shutdown(&mut self) {
        self.stop.store(true, Ordering::Release);
        // Wakes the thread from its sleep: dropping our sender is not
        // possible while `self` lives, so send a no-op it ignores.
        let (reply, _) = crossbeam_channel::bounded(1);
        let _ = self.commands.send(Command::RunNow(reply, None));
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The policy of a log: the one in `Options` wins, else the `[retention]`
/// table of `DIR/evlog.toml`, else none (nothing is archived or deleted).
/// A bad configuration file is an error naming its line.
pub(crate) fn resolve_policy(
    options: &crate::options::Options,
    dir: &Path,
) -> Result<RetentionPolicy> {
    if let Some(policy) = options.get_retention() {
        return Ok(policy.clone());
    }
    match crate::config::load_config(dir)?.and_then(|config| config.retention) {
        Some(policy) => Ok(policy),
        None => RetentionPolicy::builder().build(),
    }
}

pub(crate) fn spawn(shared: Arc<Shared>, policy: RetentionPolicy) -> Result<ArchiverHandle> {
    let (commands, receiver) = crossbeam_channel::unbounded();
    let stop = Arc::new(AtomicBool::new(false));
    let status = Arc::new(Mutex::new(ArchiverStatus::default()));
    let thread = {
        let stop = Arc::clone(&stop);
        let status = Arc::clone(&status);
        std::thread::Builder::new()
            .name("evlog:archiver".into())
            .spawn(move || run(shared, policy, receiver, stop, status))
            .map_err(|e| Error::Io {
                path: PathBuf::from("evlog:archiver"),
                source: e,
            })?
    };
    Ok(ArchiverHandle {
        commands,
        stop,
        status,
        thread: Some(thread),
    })
}

fn run(
    shared: Arc<Shared>,
    policy: RetentionPolicy,
    commands: Receiver<Command>,
    stop: Arc<AtomicBool>,
    status: Arc<Mutex<ArchiverStatus>>,
) {
    crate::sys::lower_this_thread_priority();
    let mut archiver = Archiver::stoppable(shared, policy, Arc::clone(&stop));
    let interval = archiver.policy.check_interval();
    loop {
        let command = match commands.recv_timeout(interval) {
            Ok(command) => Some(command),
            Err(RecvTimeoutError::Timeout) => None,
            Err(RecvTimeoutError::Disconnected) => return,
        };
        if stop.load(Ordering::Acquire) {
            return;
        }
        let (result, reply) = {
            let archiver = &mut archiver;
            let outcome =
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| match command {
                    None => (archiver.run_policy(crate::log::now_micros(), None), None),
                    Some(Command::RunNow(reply, progress)) => (
                        archiver.run_policy(crate::log::now_micros(), progress),
                        Some(reply),
                    ),
                    Some(Command::ArchiveAllSealed(reply, progress)) => {
                        (archiver.archive_all_sealed(progress), Some(reply))
                    }
                }));
            match outcome {
                Ok(pair) => pair,
                Err(panic) => {
                    let message = crate::subscribe::panic_message(&panic);
                    (
                        Err(Error::ArchiverStopped(format!(
                            "the archiver panicked: {message}"
                        ))),
                        None,
                    )
                }
            }
        };
        let stopped = {
            let mut status = status.lock().unwrap_or_else(PoisonError::into_inner);
            match &result {
                Ok(_) => status.runs += 1,
                Err(e) => {
                    tracing::error!(error = %e, "archiving stopped");
                    status.stopped_because = Some(e.to_string());
                }
            }
            status.stopped_because.is_some()
        };
        if let Some(reply) = reply {
            let _ = reply.send(result);
        }
        if stopped {
            // Refuse later requests with the reason (ArchiverHandle::ask).
            return;
        }
    }
}

/// The archiver's state: the policy and the cached piece summaries.
pub(crate) struct Archiver {
    shared: Arc<Shared>,
    pub policy: RetentionPolicy,
    /// Summaries of immutable pieces, by (first seq, stored bytes): a
    /// piece rewritten by retention gets a new size, so a stale entry is
    /// never used (and is dropped at the next run).
    summaries: HashMap<(u64, u64), PieceSummary>,
    /// The holds the cached summaries counted.
    summarised_holds: Vec<Hold>,
    /// Set when the log closes: ends a wait for the indexes early.
    stop: Arc<AtomicBool>,
}

impl Archiver {
    pub fn new(shared: Arc<Shared>, policy: RetentionPolicy) -> Archiver {
        Archiver::stoppable(shared, policy, Arc::new(AtomicBool::new(false)))
    }

    fn stoppable(shared: Arc<Shared>, policy: RetentionPolicy, stop: Arc<AtomicBool>) -> Archiver {
        Archiver {
            shared,
            policy,
            summaries: HashMap::new(),
            summarised_holds: Vec::new(),
            stop,
        }
    }

    /// Waits, up to `INDEX_WAIT_MAX`, until the secondary indexes cover
    /// `last_seq`. The indexer reads what it indexes through the catalog,
    /// so a segment archived before the indexer reached it would be read
    /// back by decompressing its frames, on the second core the appenders
    /// need (with every segment archived once sealed, that cost A2 about a
    /// fifth). Past the bound (indexes stopped, or far behind) it goes on:
    /// reads through archives stay correct, only slower. Returns early
    /// when the log closes.
    fn wait_for_indexes(&self, last_seq: u64) {
        let Some(index) = self.shared.index.get() else {
            return;
        };
        let deadline = std::time::Instant::now() + INDEX_WAIT_MAX;
        while !self.stop.load(Ordering::Acquire) {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                tracing::debug!(last_seq, "archiving a segment the indexes have not reached");
                return;
            }
            match index.indexed.wait(
                crate::Watermark::Published,
                last_seq,
                left.min(INDEX_WAIT_SLICE),
            ) {
                crate::WaitOutcome::TimedOut(_) => continue,
                crate::WaitOutcome::Reached(_) | crate::WaitOutcome::Stopped(_) => return,
            }
        }
    }

    fn archive_dir(&self) -> PathBuf {
        self.shared.dir.join(ARCHIVE_DIR)
    }

    /// The actions the policy asks for at `now_us` (the dry run).
    pub fn plan(&mut self, now_us: i64) -> Result<RetentionPlan> {
        let holds = crate::holds::read_holds(&*self.shared.storage, &self.shared.dir)?;
        let pieces = self.shared.catalog.pieces();
        let summaries = self.summaries(&pieces, &holds)?;
        let consumers_min = crate::consumer::min_position(&self.shared)?;
        decide(&self.policy, now_us, &summaries, consumers_min)
    }

    /// One run of the policy: plan, then carry out every action.
    pub fn run_policy(
        &mut self,
        now_us: i64,
        progress: ProgressSender,
    ) -> Result<ArchiveRunReport> {
        let _span = tracing::info_span!("evlog.archive_run").entered();
        self.shared.check_poison()?;
        let holds = crate::holds::read_holds(&*self.shared.storage, &self.shared.dir)?;
        let hold_set = HoldSet::new(&holds);
        let pieces = self.shared.catalog.pieces();
        let summaries = self.summaries(&pieces, &holds)?;
        let consumers_min = crate::consumer::min_position(&self.shared)?;
        let plan = decide(&self.policy, now_us, &summaries, consumers_min)?;
        let mut report = ArchiveRunReport {
            stored_bytes_before: summaries.iter().map(|s| s.stored_bytes).sum(),
            ..ArchiveRunReport::default()
        };
        if plan
            .actions
            .iter()
            .any(|a| a.kind != RetentionActionKind::Archive)
        {
            // Positions carried only by bookkeeping events must not go
            // with them.
            crate::consumer::persist_positions(&self.shared)?;
        }
        let total = plan.actions.len() as u64;
        for (done, action) in plan.actions.into_iter().enumerate() {
            if let Some(progress) = &progress {
                let _ = progress.send((done as u64, total));
            }
            let Some(piece) = self.shared.catalog.locate(action.piece_first_seq) else {
                continue;
            };
            if piece.first_seq != action.piece_first_seq {
                continue;
            }
            match action.kind {
                RetentionActionKind::Archive => {
                    if let Holder::Segment(segment) = &piece.holder {
                        self.archive_segment(segment)?;
                        report.segments_archived += 1;
                    }
                }
                RetentionActionKind::Compact | RetentionActionKind::Delete => {
                    let dropped = self.rewrite(&piece, &action, &hold_set, now_us)?;
                    report.events_deleted += dropped;
                    report.pieces_compacted += 1;
                }
            }
            report.actions.push(action);
        }
        if let Some(progress) = &progress {
            let _ = progress.send((total, total));
        }
        if report.events_deleted > 0 {
            self.shared.forget_deleted();
        }
        report.stored_bytes_after = self
            .shared
            .catalog
            .pieces()
            .iter()
            .map(piece_stored_bytes)
            .sum();
        Ok(report)
    }

    /// Archives every sealed segment, whatever the policy says (the
    /// benchmarks and `evlog archive --all`).
    pub fn archive_all_sealed(&mut self, progress: ProgressSender) -> Result<ArchiveRunReport> {
        let _span = tracing::info_span!("evlog.archive_run", all_sealed = true).entered();
        self.shared.check_poison()?;
        let pieces = self.shared.catalog.pieces();
        let mut report = ArchiveRunReport::default();
        // Every piece but the last (the active segment).
        let sealed = pieces.len().saturating_sub(1);
        for (done, piece) in pieces.iter().take(sealed).enumerate() {
            if let Some(progress) = &progress {
                let _ = progress.send((done as u64, sealed as u64));
            }
            if let Holder::Segment(segment) = &piece.holder {
                report.stored_bytes_before += segment_stored_bytes(segment);
                let archive = self.archive_segment(segment)?;
                report.stored_bytes_after += archive.file_bytes();
                report.segments_archived += 1;
            }
        }
        if let Some(progress) = &progress {
            let _ = progress.send((sealed as u64, sealed as u64));
        }
        Ok(report)
    }

    /// Summaries of every piece, from the cache or by reading the piece.
    fn summaries(&mut self, pieces: &[Piece], holds: &[Hold]) -> Result<Vec<PieceSummary>> {
        if holds != self.summarised_holds.as_slice() {
            self.summaries.clear();
            self.summarised_holds = holds.to_vec();
        }
        let hold_set = HoldSet::new(holds);
        let last_index = pieces.len().saturating_sub(1);
        let mut out = Vec::with_capacity(pieces.len());
        let mut live_keys = Vec::with_capacity(pieces.len());
        for (i, piece) in pieces.iter().enumerate() {
            let active = i == last_index && matches!(piece.holder, Holder::Segment(_));
            if active {
                // The active segment changes all the time: summarised for
                // the size cap only (it is never acted on).
                out.push(self.summarise(piece, &hold_set, PieceKind::Active)?);
                continue;
            }
            let kind = match piece.holder {
                Holder::Segment(_) => PieceKind::Sealed,
                Holder::Archive(_) => PieceKind::Archived,
            };
            let key = (piece.first_seq, piece_stored_bytes(piece));
            live_keys.push(key);
            if let Some(summary) = self.summaries.get(&key) {
                out.push(summary.clone());
                continue;
            }
            let summary = self.summarise(piece, &hold_set, kind)?;
            self.summaries.insert(key, summary.clone());
            out.push(summary);
        }
        self.summaries.retain(|key, _| live_keys.contains(key));
        Ok(out)
    }

    /// Reads a piece once to count its events per rule class.
    fn summarise(&self, piece: &Piece, holds: &HoldSet, kind: PieceKind) -> Result<PieceSummary> {
        let last_seq = piece_last_seq(piece);
        let mut summary = PieceSummary::new(
            piece.first_seq,
            last_seq,
            kind,
            piece_stored_bytes(piece),
            &self.policy,
        );
        let policy = &self.policy;
        let mut latest = LatestOfEntity::new(&self.shared, policy);
        let mut failed = None;
        let mut visit = |seq: u64, record: &[u8]| {
            let body = &record[crate::record::RECORD_HEADER_BYTES..];
            let fields = crate::record::body_view(body)?;
            let slot = policy.class_slot(policy.classify(fields.event_type, fields.priority));
            let held = holds.holds_event(fields.correlation_id.as_ref(), fields.entity);
            summary.count_event(slot, held, record.len() as u64, fields.timestamp_us);
            match latest.superseded(slot, seq, fields.entity) {
                Ok(true) if !held => summary.count_superseded(slot, record.len() as u64),
                Ok(_) => {}
                Err(e) => {
                    failed = Some(e);
                    return Err(crate::error::CorruptKind::Decode("lookup failed".into()));
                }
            }
            Ok(())
        };
        let scanned =
            for_each_record_of(&self.shared, piece, piece.first_seq, last_seq, &mut visit);
        if let Some(e) = failed {
            return Err(e);
        }
        scanned?;
        Ok(summary)
    }

    /// Moves a sealed segment, whole, into its archive (the sequence in
    /// the module comment).
    fn archive_segment(&self, segment: &Arc<Segment>) -> Result<Arc<ArchiveFile>> {
        let storage = &*self.shared.storage;
        let archive_dir = self.archive_dir();
        ensure_dir(storage, &self.shared.dir, &archive_dir)?;
        let last_seq = segment.first_seq + segment.record_count() - 1;
        self.wait_for_indexes(last_seq);
        let _span = tracing::info_span!(
            "evlog.archive_segment",
            first_seq = segment.first_seq,
            last_seq,
            bytes = segment.committed_bytes()
        )
        .entered();
        let mut writer =
            ArchiveWriter::create(storage, &archive_dir, segment.first_seq, ARCHIVE_ZSTD_LEVEL)?;
        let mut yielder = YieldToAppends::new(&self.shared);
        let mut failed = None;
        segment
            .for_each_record(
                segment.first_seq,
                last_seq,
                self.shared.options.record_bytes_max,
                &mut |_, record| {
                    yielder.after(record.len());
                    if let Err(e) = writer.push_record(record) {
                        failed = Some(e);
                        return Err(crate::error::CorruptKind::Decode(
                            "archive write failed".into(),
                        ));
                    }
                    Ok(())
                },
            )
            // A write error of the archive, not damage in the segment.
            .map_err(|e| failed.take().unwrap_or(e))?;
        writer.finish(last_seq)?;
        let path = archive_dir.join(crate::archive::archive_file_name(segment.first_seq));
        let archive = Arc::new(ArchiveFile::open(storage, &path)?);
        self.shared
            .catalog
            .replace(segment.first_seq, Holder::Archive(Arc::clone(&archive)))?;
        self.shared.catalog_changed();
        remove_segment_files(storage, &self.shared.segments_dir, segment.first_seq)?;
        tracing::info!(
            first_seq = segment.first_seq,
            last_seq,
            archive = %path.display(),
            "archived a sealed segment"
        );
        Ok(archive)
    }

    /// Rewrites a piece without the events of `action.drop_rules` that no
    /// hold keeps; returns how many events went. The rewritten archive
    /// carries a deletion note per rule, so the holes stay explained.
    fn rewrite(
        &self,
        piece: &Piece,
        action: &RetentionAction,
        holds: &HoldSet,
        now_us: i64,
    ) -> Result<u64> {
        let _span = tracing::info_span!(
            "evlog.archive_rewrite",
            first_seq = piece.first_seq,
            rule = %action.rule
        )
        .entered();
        let storage = &*self.shared.storage;
        let archive_dir = self.archive_dir();
        ensure_dir(storage, &self.shared.dir, &archive_dir)?;
        let last_seq = piece_last_seq(piece);
        let policy = &self.policy;
        let mut writer =
            ArchiveWriter::create(storage, &archive_dir, piece.first_seq, ARCHIVE_ZSTD_LEVEL)?;
        // The dropped events' range and count; one note for this action.
        let mut dropped: Option<(u64, u64, u64)> = None;
        let mut failed = None;
        let mut yielder = YieldToAppends::new(&self.shared);
        let mut latest = LatestOfEntity::new(&self.shared, policy);
        let mut visit = |seq: u64, record: &[u8]| {
            let body = &record[crate::record::RECORD_HEADER_BYTES..];
            let fields = crate::record::body_view(body)?;
            let class = policy.class_slot(policy.classify(fields.event_type, fields.priority));
            let held = holds.holds_event(fields.correlation_id.as_ref(), fields.entity);
            let superseded = match latest.superseded(class, seq, fields.entity) {
                Ok(superseded) => superseded,
                Err(e) => {
                    failed = Some(e);
                    return Err(crate::error::CorruptKind::Decode("lookup failed".into()));
                }
            };
            if action.drops(class, held, superseded) {
                let entry = dropped.get_or_insert((seq, seq, 0));
                entry.1 = seq;
                entry.2 += 1;
                return Ok(());
            }
            yielder.after(record.len());
            if let Err(e) = writer.push_record(record) {
                failed = Some(e);
                return Err(crate::error::CorruptKind::Decode(
                    "archive write failed".into(),
                ));
            }
            Ok(())
        };
        let scanned =
            for_each_record_of(&self.shared, piece, piece.first_seq, last_seq, &mut visit);
        if let Some(write_error) = failed.take() {
            return Err(write_error);
        }
        scanned?;
        let mut notes: Vec<DeletionNote> = match &piece.holder {
            Holder::Archive(archive) => archive.deletions().to_vec(),
            Holder::Segment(_) => Vec::new(),
        };
        let total = dropped.map_or(0, |(_, _, count)| count);
        if let Some((first, last, count)) = dropped {
            notes.push(DeletionNote::new(
                first,
                last,
                count,
                action.rule.clone(),
                now_us,
            ));
        }
        for note in merge_notes(notes) {
            writer.note_deletion(note)?;
        }
        writer.finish(last_seq)?;
        let path = archive_dir.join(crate::archive::archive_file_name(piece.first_seq));
        let archive = Arc::new(ArchiveFile::open(storage, &path)?);
        self.shared
            .catalog
            .replace(piece.first_seq, Holder::Archive(Arc::clone(&archive)))?;
        self.shared.frame_cache.forget_archive(piece.first_seq);
        self.shared.catalog_changed();
        if let Holder::Segment(segment) = &piece.holder {
            remove_segment_files(storage, &self.shared.segments_dir, segment.first_seq)?;
        }
        tracing::info!(
            first_seq = piece.first_seq,
            last_seq,
            events_deleted = total,
            rule = %action.rule,
            "retention rewrote a piece"
        );
        Ok(total)
    }
}

/// Bytes of records the archiver rewrites between two looks at the log:
/// about one frame, about 2 ms of compression.
const YIELD_EVERY_BYTES: usize = 256 * 1024;
/// While appends are flowing, the archiver sleeps this many times as long
/// as its last stretch of work took (wall time), so it takes at most
/// about a twentieth of one core and the writer and the callers the rest;
/// archiving is never urgent, and with no appends it runs at full speed.
/// Measured in wall time, a stretch the scheduler slowed (the cores were
/// busy) earns a longer pause: the busier the machine, the more it yields.
/// At a tenth (9), A2 beside the archiver measured 0.82-0.96x of A2
/// without on two cores (compare bench, medians of 9 rounds, four runs),
/// at a twentieth 0.89-1.08x, median 0.98 (six runs). What it costs:
/// while appends never pause, the archiver rewrites about a twentieth of
/// what it does at full speed (Z1: 111-115 MB/s there), so about 5 MB/s
/// of records, some 400 GB a day (estimated, not measured).
const PAUSE_PER_WORK: u32 = 19;
/// How long the archiver waits for the secondary indexes to cover a
/// segment before it archives the segment anyway.
const INDEX_WAIT_MAX: std::time::Duration = std::time::Duration::from_secs(30);
/// Slices of that wait, between looks at whether the log is closing.
const INDEX_WAIT_SLICE: std::time::Duration = std::time::Duration::from_millis(50);
/// The longest single pause, so a stretch stalled for another reason (a
/// slow disk) does not park archiving for long.
const PAUSE_MAX: std::time::Duration = std::time::Duration::from_millis(50);

/// Paces the archiver's rewriting behind the appenders: every
/// `YIELD_EVERY_BYTES`, if the log's end moved since the last look, it
/// sleeps `PAUSE_PER_WORK` times the time the stretch took. A lower CPU
/// priority alone does not do this: the archiver still holds a core for a
/// scheduler slice whenever the writer waits for its fsync. The pause
/// follows the work's time rather than being fixed, so it holds for any
/// compression speed.
struct YieldToAppends<'a> {
    shared: &'a Shared,
    bytes_since: usize,
    last_seen: u64,
    stretch_started: std::time::Instant,
}

impl<'a> YieldToAppends<'a> {
    fn new(shared: &'a Shared) -> YieldToAppends<'a> {
        YieldToAppends {
            shared,
            bytes_since: 0,
            last_seen: shared.marks.last_seq(),
            stretch_started: std::time::Instant::now(),
        }
    }

    fn after(&mut self, bytes: usize) {
        self.bytes_since += bytes;
        if self.bytes_since < YIELD_EVERY_BYTES {
            return;
        }
        self.bytes_since = 0;
        let now = self.shared.marks.last_seq();
        if now != self.last_seen {
            self.last_seen = now;
            let worked = self.stretch_started.elapsed();
            std::thread::sleep((worked * PAUSE_PER_WORK).min(PAUSE_MAX));
        }
        self.stretch_started = std::time::Instant::now();
    }
}

/// Whether an event is superseded for key compaction: its rule keeps only
/// the latest event per entity, and the entity's latest event in the log
/// is a later one of the same rule. (When the entity's latest event is of
/// another rule the event counts as not superseded: key compaction keeps
/// more, never less.) Lookups are cached for one scan.
struct LatestOfEntity<'a> {
    shared: &'a Arc<Shared>,
    policy: &'a RetentionPolicy,
    /// The entity's latest event: (seq, class slot).
    latest: HashMap<(String, String), Option<(u64, usize)>>,
}

impl<'a> LatestOfEntity<'a> {
    fn new(shared: &'a Arc<Shared>, policy: &'a RetentionPolicy) -> LatestOfEntity<'a> {
        LatestOfEntity {
            shared,
            policy,
            latest: HashMap::new(),
        }
    }

    fn superseded(&mut self, slot: usize, seq: u64, entity: Option<(&str, &str)>) -> Result<bool> {
        let compacts = self
            .policy
            .rules()
            .get(slot)
            .is_some_and(|rule| rule.keep_latest_per_entity);
        let Some((entity_type, entity_id)) = entity.filter(|_| compacts) else {
            return Ok(false);
        };
        let key = (entity_type.to_string(), entity_id.to_string());
        let latest = match self.latest.get(&key) {
            Some(latest) => *latest,
            None => {
                let entity = crate::event::Entity {
                    entity_type: key.0.clone(),
                    entity_id: key.1.clone(),
                };
                let latest = self.shared.latest(&entity)?.map(|event| {
                    let class = self.policy.classify(&event.event_type, event.priority);
                    (event.seq, self.policy.class_slot(class))
                });
                self.latest.insert(key, latest);
                latest
            }
        };
        Ok(latest.is_some_and(|(latest_seq, latest_slot)| latest_seq > seq && latest_slot == slot))
    }
}

/// Deletion notes sorted and made disjoint, as an archive holds them: a
/// later deletion whose range overlaps an earlier one's (another rule
/// reaching the same piece) merges with it into one note counting both,
/// naming both rules, dated by the later. The count stays exact, so every
/// missing sequence number of the range is still accounted for.
pub(crate) fn merge_notes(mut notes: Vec<DeletionNote>) -> Vec<DeletionNote> {
    notes.sort_by_key(|n| n.first_seq);
    let mut merged: Vec<DeletionNote> = Vec::with_capacity(notes.len());
    for note in notes {
        match merged.last_mut() {
            Some(last) if note.first_seq <= last.last_seq => {
                last.last_seq = last.last_seq.max(note.last_seq);
                last.count += note.count;
                if !last.rule.split(RULES_SEPARATOR).any(|r| r == note.rule) {
                    let joined = format!("{}{RULES_SEPARATOR}{}", last.rule, note.rule);
                    if joined.len() <= crate::archive::NOTE_RULE_BYTES_MAX {
                        last.rule = joined;
                    }
                }
                last.deleted_at_us = last.deleted_at_us.max(note.deleted_at_us);
            }
            _ => merged.push(note),
        }
    }
    merged
}

/// Between the rule names of a merged deletion note.
const RULES_SEPARATOR: &str = ", ";

/// The last sequence number of a piece's range.
pub(crate) fn piece_last_seq(piece: &Piece) -> u64 {
    match &piece.holder {
        Holder::Segment(segment) => segment.first_seq + segment.record_count() - 1,
        Holder::Archive(archive) => archive.range_last_seq(),
    }
}

/// Bytes a piece takes on disk (a segment with its sequence index; a
/// file that cannot be measured counts 0: the figure feeds the size cap
/// and reports, never a decision to drop data).
pub(crate) fn piece_stored_bytes(piece: &Piece) -> u64 {
    match &piece.holder {
        Holder::Segment(segment) => segment_stored_bytes(segment),
        Holder::Archive(archive) => archive.file_bytes(),
    }
}

fn segment_stored_bytes(segment: &Segment) -> u64 {
    segment.file.size_bytes().unwrap_or(0) + segment.index.file_bytes()
}

/// Calls `each` with every record (whole, CRC checked) of a piece in
/// `from..=through`.
pub(crate) fn for_each_record_of(
    shared: &Shared,
    piece: &Piece,
    from: u64,
    through: u64,
    each: &mut crate::segment::BodyVisitor<'_>,
) -> Result<()> {
    match &piece.holder {
        Holder::Segment(segment) => {
            segment.for_each_record(from, through, shared.options.record_bytes_max, each)
        }
        Holder::Archive(archive) => archive.for_each_record(from, through, |seq, record| {
            each(seq, record).map_err(|kind| Error::Corrupt {
                file: archive.path().to_path_buf(),
                offset: archive.frame_offset_of(seq),
                kind,
            })
        }),
    }
}

/// Unlinks a segment and its sequence index, then syncs the directory.
/// Never truncates: a reader may still map the file.
fn remove_segment_files(
    storage: &dyn crate::storage::Storage,
    segments_dir: &Path,
    first_seq: u64,
) -> Result<()> {
    for name in [
        crate::segment::segment_file_name(first_seq),
        crate::segment::index_file_name(first_seq),
    ] {
        let path = segments_dir.join(name);
        if storage.exists(&path) {
            storage.remove_file(&path).at(&path)?;
        }
    }
    sync_dir(storage, segments_dir)
}

/// Creates `archive/` durably the first time.
fn ensure_dir(storage: &dyn crate::storage::Storage, parent: &Path, dir: &Path) -> Result<()> {
    if !storage.exists(dir) {
        storage.create_dir_all(dir).at(dir)?;
        sync_dir(storage, parent)?;
    }
    Ok(())
}
