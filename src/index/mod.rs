//! Indexes over the log. Every index is derived data: it can be rebuilt
//! from the segments, so losing one never loses an event.
//!
//! - `seq`: the per-segment sequence index (seq -> byte offset), owned by
//!   the segment files.
//! - the secondary indexes (correlation, entity, session, actor, type,
//!   causation children, event id, time blocks, statistics, entity links)
//!   live in one key-value store under `DIR/index/`, behind the
//!   [`store::IndexStore`] trait, written only by the `evlog:indexer`
//!   thread ([`indexer`]), read by queries (`crate::query`).

pub(crate) mod ids;
pub(crate) mod indexer;
pub(crate) mod keys;
pub(crate) mod seq;
pub(crate) mod store;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, RwLock};
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use ids::IdRun;
use keys::{PostingKind, INDEX_STORE_VERSION, META_MARK, META_VERSION};
use store::{IndexStore, OpenFailure, SledStore};

/// Name of the index directory inside the data directory.
pub(crate) const INDEX_DIR: &str = "index";

/// The opened secondary indexes, shared by the indexer (the only writer)
/// and every query.
pub(crate) struct IndexState {
    pub store: Box<dyn IndexStore>,
    pub path: PathBuf,
    /// Every entry for every seq <= mark is in the store. Stored after the
    /// batch that reaches it is applied, so a query that reads the mark
    /// first finds at least that much in the store.
    mark: AtomicU64,
    /// Held by the indexer while it applies a batch and moves the mark;
    /// readers that need the store and the mark to agree exactly (the
    /// counters of `stats`) hold it shared.
    pub apply_gate: Gate,
    /// The mark again, for waiters (`Log::wait_for_index`).
    pub indexed: crate::watermark::Watermarks,
    /// The id runs, oldest first; replaced whole by the indexer.
    id_runs: RwLock<Arc<Vec<IdRun>>>,
    /// Min and max timestamp of each block of `TIME_BLOCK_EVENTS` seqs,
    /// indexed by block number (`seq / TIME_BLOCK_EVENTS`).
    time_blocks: RwLock<Vec<Option<(i64, i64)>>>,
    /// A read-only view's private copy of the store, removed with it.
    private_copy: Option<tempfile::TempDir>,
}

impl IndexState {
    pub fn mark(&self) -> u64 {
        self.mark.load(Ordering::Acquire)
    }

    pub(crate) fn set_mark(&self, mark: u64) {
        self.mark.store(mark, Ordering::Release);
        self.indexed.publish(mark, mark);
    }

    pub fn id_runs(&self) -> Arc<Vec<IdRun>> {
        Arc::clone(
            &self
                .id_runs
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        )
    }

    pub(crate) fn set_id_runs(&self, runs: Vec<IdRun>) {
        *self
            .id_runs
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(runs);
    }

    /// The seq of the first event with `id`, if indexed. (An id is held by
    /// several events only when it was appended again after it left the
    /// duplicate window; it then names its first event.)
    pub fn lookup_id(&self, id: &[u8; 16]) -> Option<u64> {
        self.id_runs().iter().find_map(|run| run.lookup(id))
    }

    pub fn time_blocks(&self) -> std::sync::RwLockReadGuard<'_, Vec<Option<(i64, i64)>>> {
        self.time_blocks
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub(crate) fn update_time_blocks(&self, updates: &[(u64, (i64, i64))]) {
        let mut blocks = self
            .time_blocks
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for &(block, range) in updates {
            let block = block as usize;
            if blocks.len() <= block {
                blocks.resize(block + 1, None);
            }
            blocks[block] = Some(range);
        }
    }

    /// An index entry of `what` (posting chunk, id run...) that does not
    /// decode.
    fn damaged(&self, what: &str, kind: crate::error::CorruptKind) -> Error {
        // The decoders' `CorruptKind::Index` would print as the sequence
        // index's; only its text is meant here.
        let detail = match kind {
            crate::error::CorruptKind::Index(text) => text.to_string(),
            other => other.to_string(),
        };
        Error::Index {
            path: self.path.clone(),
            message: format!("{what}: {detail}"),
        }
    }

    fn corrupt(&self, what: &'static str) -> Error {
        Error::Index {
            path: self.path.clone(),
            message: what.to_string(),
        }
    }

    /// Reads the stored mark: `(seq, id of the event at seq)`.
    fn stored_mark(&self) -> Result<Option<(u64, [u8; 16])>> {
        let Some(value) = self.store.get(META_MARK)? else {
            return Ok(None);
        };
        if value.len() != 24 {
            return Err(self.corrupt("mark entry is not 24 bytes"));
        }
        let seq = u64::from_le_bytes(value[..8].try_into().unwrap_or_default());
        let mut id = [0u8; 16];
        id.copy_from_slice(&value[8..24]);
        Ok(Some((seq, id)))
    }

    /// Loads the id-run directory and the time blocks from the store.
    fn load(&self) -> Result<()> {
        let mut runs = Vec::new();
        let mut failure = None;
        self.store
            .visit(&[keys::ID_RUN], &[keys::ID_RUN + 1], &mut |key, value| {
                let lo = keys::trailing_seq(key).unwrap_or(0);
                match IdRun::decode(lo, value) {
                    Ok(run) => runs.push(run),
                    Err(kind) => failure = Some(kind),
                }
                Ok(failure.is_none())
            })?;
        if let Some(kind) = failure {
            return Err(self.damaged("id run", kind));
        }
        for pair in runs.windows(2) {
            if pair[0].hi + 1 != pair[1].lo {
                return Err(self.corrupt("id runs are not adjacent"));
            }
        }
        let mut blocks = Vec::new();
        self.store.visit(
            &[keys::TIME_BLOCK],
            &[keys::TIME_BLOCK + 1],
            &mut |key, value| {
                let block = keys::trailing_seq(key).unwrap_or(0) as usize;
                if value.len() == 16 {
                    let min = i64::from_le_bytes(value[..8].try_into().unwrap_or_default());
                    let max = i64::from_le_bytes(value[8..].try_into().unwrap_or_default());
                    if blocks.len() <= block {
                        blocks.resize(block + 1, None);
                    }
                    blocks[block] = Some((min, max));
                }
                Ok(true)
            },
        )?;
        self.set_id_runs(runs);
        *self
            .time_blocks
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = blocks;
        Ok(())
    }

    /// Every distinct key of posting lists of `kind` (types, actors...):
    /// read from the small registry the indexer keeps for kinds whose
    /// queries enumerate keys.
    pub fn registered_types(&self) -> Result<Vec<String>> {
        let mut types = Vec::new();
        self.store.visit(
            &[keys::TYPE_REGISTRY],
            &[keys::TYPE_REGISTRY + 1],
            &mut |key, _| {
                if let Ok(name) = std::str::from_utf8(&key[1..]) {
                    types.push(name.to_string());
                }
                Ok(true)
            },
        )?;
        Ok(types)
    }

    /// The seqs of posting list (`kind`, `key`) in `from..=through`,
    /// appended to `out` in order; at most `max` of them. Returns the seq
    /// to continue from, if the list goes on.
    pub fn postings(
        &self,
        kind: PostingKind,
        key: &[u8],
        from: u64,
        through: u64,
        max: usize,
        out: &mut Vec<u64>,
    ) -> Result<Option<u64>> {
        let prefix = keys::posting_prefix(kind, key);
        let end = keys::prefix_end(&prefix);
        // The chunk holding `from` starts at or before it.
        let mut start = match self
            .store
            .last_in(&prefix, &keys::with_seq(&prefix, from.saturating_add(1)))?
        {
            Some((chunk_key, _)) => chunk_key,
            None => keys::with_seq(&prefix, from),
        };
        let mut chunk = Vec::new();
        loop {
            let Some((chunk_key, value)) = self.store.first_in(&start, &end)? else {
                return Ok(None);
            };
            let first = keys::trailing_seq(&chunk_key).unwrap_or(0);
            if first > through {
                return Ok(None);
            }
            chunk.clear();
            keys::decode_chunk(first, &value, &mut chunk)
                .map_err(|kind| self.damaged("posting chunk", kind))?;
            for &seq in &chunk {
                if seq < from {
                    continue;
                }
                if seq > through {
                    return Ok(None);
                }
                if out.len() >= max {
                    return Ok(Some(seq));
                }
                out.push(seq);
            }
            start = chunk_key;
            start.push(0); // the next key after this chunk
        }
    }

    /// The seqs of the events caused by the event at `parent` (children
    /// <= `through`), in order.
    pub fn children(&self, parent: u64, through: u64) -> Result<Vec<u64>> {
        let block = parent / keys::CHILDREN_BLOCK_PARENTS;
        let prefix = keys::posting_prefix(PostingKind::Children, &block.to_be_bytes());
        let mut children = Vec::new();
        let mut links = Vec::new();
        let mut failure = None;
        self.store
            .visit(&prefix, &keys::prefix_end(&prefix), &mut |key, value| {
                let first = keys::trailing_seq(key).unwrap_or(0);
                if first > through {
                    return Ok(false);
                }
                links.clear();
                if let Err(kind) = keys::decode_links(
                    first,
                    block * keys::CHILDREN_BLOCK_PARENTS,
                    value,
                    &mut links,
                ) {
                    failure = Some(kind);
                    return Ok(false);
                }
                children.extend(
                    links
                        .iter()
                        .filter(|&&(p, child)| p == parent && child <= through)
                        .map(|&(_, child)| child),
                );
                Ok(true)
            })?;
        if let Some(kind) = failure {
            return Err(self.damaged("causation links", kind));
        }
        Ok(children)
    }

    /// How many seqs <= `through` a posting list holds.
    pub fn count_postings(&self, kind: PostingKind, key: &[u8], through: u64) -> Result<u64> {
        let prefix = keys::posting_prefix(kind, key);
        let below = keys::with_seq(&prefix, through.saturating_add(1));
        let mut count = 0u64;
        let mut seqs = Vec::new();
        let mut failure = None;
        self.store.visit(&prefix, &below, &mut |chunk_key, value| {
            let first = keys::trailing_seq(chunk_key).unwrap_or(0);
            seqs.clear();
            if let Err(kind) = keys::decode_chunk(first, value, &mut seqs) {
                failure = Some(kind);
                return Ok(false);
            }
            count += seqs.iter().filter(|&&seq| seq <= through).count() as u64;
            Ok(true)
        })?;
        if let Some(kind) = failure {
            return Err(self.damaged("posting chunk", kind));
        }
        Ok(count)
    }

    /// The last seq of a posting list that is <= `through`.
    pub fn last_posting(&self, kind: PostingKind, key: &[u8], through: u64) -> Result<Option<u64>> {
        let prefix = keys::posting_prefix(kind, key);
        let mut below = keys::with_seq(&prefix, through.saturating_add(1));
        loop {
            let Some((chunk_key, value)) = self.store.last_in(&prefix, &below)? else {
                return Ok(None);
            };
            let first = keys::trailing_seq(&chunk_key).unwrap_or(0);
            let mut chunk = Vec::new();
            keys::decode_chunk(first, &value, &mut chunk)
                .map_err(|kind| self.damaged("posting chunk", kind))?;
            if let Some(&seq) = chunk.iter().rev().find(|&&s| s <= through) {
                return Ok(Some(seq));
            }
            below = chunk_key;
        }
    }
}

/// A lock that guards no data, only an interval of time.
pub(crate) struct Gate(RwLock<()>);

impl Gate {
    pub fn read(&self) -> std::sync::RwLockReadGuard<'_, ()> {
        self.0
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
    pub fn write(&self) -> std::sync::RwLockWriteGuard<'_, ()> {
        self.0
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Where the indexes stand, as [`crate::Log::index_status`] reports it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IndexStatus {
    /// Queries use the indexes (else they scan the log).
    pub available: bool,
    /// Every event up to this seq is indexed.
    pub indexed_through: u64,
    /// Why the indexes were rebuilt from the log at open, if they were.
    pub rebuilt_because: Option<String>,
    /// Why queries scan the log instead, if they do.
    pub unavailable_because: Option<String>,
    /// Why the indexer stopped, if it did (an error of the index store):
    /// queries then answer from the indexes up to `indexed_through` and
    /// scan the rest; the next open catches up or rebuilds.
    pub stopped_because: Option<String>,
}

enum Slot {
    Opening,
    Ready(Arc<IndexState>),
    Unavailable(String),
}

/// The indexes as the rest of the log sees them: still opening, ready, or
/// unavailable (queries then scan the log).
pub(crate) struct IndexSlot {
    /// The state, why it was rebuilt, why the indexer stopped.
    slot: Mutex<(Slot, Option<String>, Option<String>)>,
    changed: Condvar,
}

/// How long a query waits for the indexes to open before it scans.
const OPEN_WAIT: Duration = Duration::from_secs(30);

impl IndexSlot {
    pub fn opening() -> IndexSlot {
        IndexSlot {
            slot: Mutex::new((Slot::Opening, None, None)),
            changed: Condvar::new(),
        }
    }

    pub fn unavailable(reason: String) -> IndexSlot {
        IndexSlot {
            slot: Mutex::new((Slot::Unavailable(reason), None, None)),
            changed: Condvar::new(),
        }
    }

    pub fn ready(state: Arc<IndexState>) -> IndexSlot {
        IndexSlot {
            slot: Mutex::new((Slot::Ready(state), None, None)),
            changed: Condvar::new(),
        }
    }

    fn set(&self, slot: Slot) {
        self.slot
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .0 = slot;
        self.changed.notify_all();
    }

    pub fn set_ready(&self, state: Arc<IndexState>) {
        self.set(Slot::Ready(state));
    }

    pub fn set_unavailable(&self, reason: String) {
        self.set(Slot::Unavailable(reason));
    }

    pub fn set_stopped_because(&self, reason: String) {
        self.slot
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .2 = Some(reason);
    }

    pub fn set_rebuilt_because(&self, reason: String) {
        self.slot
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .1 = Some(reason);
    }

    /// The indexes, once opened; `None` when queries must scan.
    pub fn get(&self) -> Option<Arc<IndexState>> {
        let deadline = Instant::now() + OPEN_WAIT;
        let mut guard = self
            .slot
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        loop {
            match &guard.0 {
                Slot::Ready(state) => return Some(Arc::clone(state)),
                Slot::Unavailable(_) => return None,
                Slot::Opening => {
                    let now = Instant::now();
                    if now >= deadline {
                        return None;
                    }
                    guard = self
                        .changed
                        .wait_timeout(guard, deadline - now)
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .0;
                }
            }
        }
    }

    pub fn status(&self) -> IndexStatus {
        let guard = self
            .slot
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let rebuilt_because = guard.1.clone();
        let stopped_because = guard.2.clone();
        match &guard.0 {
            Slot::Opening => IndexStatus {
                available: false,
                indexed_through: 0,
                rebuilt_because,
                unavailable_because: Some("the indexes are still opening".into()),
                stopped_because,
            },
            Slot::Ready(state) => IndexStatus {
                available: true,
                indexed_through: state.mark(),
                rebuilt_because,
                unavailable_because: None,
                stopped_because,
            },
            Slot::Unavailable(reason) => IndexStatus {
                available: false,
                indexed_through: 0,
                rebuilt_because,
                unavailable_because: Some(reason.clone()),
                stopped_because,
            },
        }
    }
}

/// What opening the store found.
pub(crate) enum Opened {
    Ready(Arc<IndexState>),
    /// Ready, but emptied first; the reason says why.
    Rebuilt(Arc<IndexState>, String),
}

fn new_state(store: Box<dyn IndexStore>, path: PathBuf) -> IndexState {
    IndexState {
        store,
        path,
        mark: AtomicU64::new(0),
        indexed: crate::watermark::Watermarks::new(0, 0),
        apply_gate: Gate(RwLock::new(())),
        id_runs: RwLock::new(Arc::new(Vec::new())),
        time_blocks: RwLock::new(Vec::new()),
        private_copy: None,
    }
}

/// Largest index a read-only view copies; past this its queries scan.
const READER_COPY_BYTES_MAX: u64 = 512 * 1024 * 1024;

/// Copies the store at `path` into a temporary directory while holding the
/// lock its engine takes (an exclusive `flock` on its `db` file).
/// Tries of sled's lock before a reader decides a writer holds it.
const LOCK_TRIES: u32 = 5;
/// Pause between two of those tries.
const LOCK_RETRY_PAUSE: std::time::Duration = std::time::Duration::from_millis(10);

pub(crate) fn copy_locked_store(path: &Path) -> std::result::Result<tempfile::TempDir, String> {
    let db = std::fs::File::open(path.join("db"))
        .map_err(|e| format!("{}: {e}", path.join("db").display()))?;
    // A lock can be held for an instant by a process that does not own
    // the store (for example a child forked by the writer's process,
    // which shares the open file, and its lock, until its exec closes
    // it). A few short tries tell that from a writer that has the log
    // open, at the cost of 50 ms for a reader beside a live writer.
    let mut tries_left = LOCK_TRIES;
    loop {
        match db.try_lock() {
            Ok(()) => break,
            Err(std::fs::TryLockError::WouldBlock) if tries_left > 1 => {
                tries_left -= 1;
                std::thread::sleep(LOCK_RETRY_PAUSE);
            }
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(format!(
                    "{} is in use by the process that has the log open",
                    path.display()
                ))
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(format!("{}: {e}", path.display())),
        }
    }
    let mut files = Vec::new();
    let mut total_bytes = 0u64;
    let mut pending = vec![PathBuf::new()];
    while let Some(relative) = pending.pop() {
        let entries = std::fs::read_dir(path.join(&relative))
            .map_err(|e| format!("{}: {e}", path.join(&relative).display()))?;
        for entry in entries {
            let entry = entry.map_err(|e| format!("{}: {e}", path.display()))?;
            let kind = entry
                .file_type()
                .map_err(|e| format!("{}: {e}", entry.path().display()))?;
            let name = relative.join(entry.file_name());
            if kind.is_dir() {
                pending.push(name);
            } else if kind.is_file() {
                total_bytes += entry.metadata().map(|m| m.len()).unwrap_or(0);
                files.push(name);
            }
        }
    }
    if total_bytes > READER_COPY_BYTES_MAX {
        return Err(format!(
            "{} holds {total_bytes} bytes, more than a read-only view copies ({READER_COPY_BYTES_MAX})",
            path.display()
        ));
    }
    let copy = tempfile::Builder::new()
        .prefix("evlog-index-view-")
        .tempdir()
        .map_err(|e| format!("a temporary directory for the index copy: {e}"))?;
    for name in files {
        let target = copy.path().join(&name);
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent).map_err(|e| format!("{}: {e}", parent.display()))?;
        }
        std::fs::copy(path.join(&name), &target)
            .map_err(|e| format!("{}: {e}", path.join(&name).display()))?;
    }
    drop(db); // releases the lock
    Ok(copy)
}

/// Checks an opened store against the log: layout version, and that its
/// mark names an event the log holds. `event_id_at(seq)` reads the log.
/// `Ok(Err(reason))`: the store must be rebuilt.
fn check_store(
    state: &IndexState,
    last_seq: u64,
    event_id_at: &dyn Fn(u64) -> Result<[u8; 16]>,
) -> Result<std::result::Result<(), String>> {
    match state.store.get(META_VERSION)? {
        Some(v)
            if v.len() == 4
                && u32::from_le_bytes([v[0], v[1], v[2], v[3]]) == INDEX_STORE_VERSION => {}
        Some(v) => {
            return Ok(Err(format!(
                "index layout version {:?} is not this build's ({INDEX_STORE_VERSION})",
                v
            )))
        }
        None => {
            let mut any = false;
            state.store.visit(&[], &[0xff], &mut |_, _| {
                any = true;
                Ok(false)
            })?;
            return Ok(if any {
                Err("the index has no layout version".into())
            } else if last_seq > 0 {
                // Deleted, emptied, or so damaged that sled found nothing
                // in it: the log has events the index never saw.
                Err(format!(
                    "{} is missing or empty while the log holds {last_seq} events",
                    state.path.display()
                ))
            } else {
                Err(String::new()) // a new log: a new index, no message
            });
        }
    }
    let Some((mark, id)) = state.stored_mark()? else {
        return Ok(Err("the index has no indexed-through mark".into()));
    };
    if mark > last_seq {
        return Ok(Err(format!(
            "the index covers events through seq {mark} but the log ends at {last_seq} \
             (events not yet synced were lost, for example in a power cut)"
        )));
    }
    if mark > 0 {
        match event_id_at(mark) {
            Ok(found) if found == id => {}
            Ok(_) => {
                return Ok(Err(format!(
                    "the event at seq {mark} is not the one the index was built from \
                     (the index belongs to another log)"
                )))
            }
            Err(e) => {
                return Ok(Err(format!(
                    "cannot read the event at the index mark {mark}: {e}"
                )))
            }
        }
    }
    state.set_mark(mark);
    if let Err(e) = state.load() {
        return Ok(Err(e.to_string()));
    }
    Ok(Ok(()))
}

/// Empties the store and writes a fresh version and mark.
pub(crate) fn reset_store(state: &IndexState) -> Result<()> {
    state.store.clear()?;
    let mut batch = store::StoreBatch::default();
    batch.put(
        META_VERSION.to_vec(),
        INDEX_STORE_VERSION.to_le_bytes().to_vec(),
    );
    batch.put(META_MARK.to_vec(), [0u8; 24].to_vec());
    state.store.apply(batch)?;
    state.store.flush()?;
    state.set_mark(0);
    state.set_id_runs(Vec::new());
    *state
        .time_blocks
        .write()
        .unwrap_or_else(std::sync::PoisonError::into_inner) = Vec::new();
    Ok(())
}

/// Opens (or creates, or rebuilds) the indexes of a log opened for
/// writing. A damaged or unopenable directory is moved aside and rebuilt;
/// `Err(OpenFailure::Locked)` means another process holds it.
pub(crate) fn open_for_writing(
    data_dir: &Path,
    last_seq: u64,
    event_id_at: &dyn Fn(u64) -> Result<[u8; 16]>,
) -> std::result::Result<Opened, OpenFailure> {
    let path = data_dir.join(INDEX_DIR);
    let mut rebuilt_because = None;
    let store = match SledStore::open(&path) {
        Ok(store) => store,
        Err(OpenFailure::Locked(why)) => return Err(OpenFailure::Locked(why)),
        Err(OpenFailure::Unusable(why)) => {
            let reason = format!("{} could not be opened ({why})", path.display());
            let aside = data_dir.join(format!("{INDEX_DIR}.damaged"));
            let _ = std::fs::remove_dir_all(&aside);
            if std::fs::rename(&path, &aside).is_err() {
                let _ = std::fs::remove_dir_all(&path);
            }
            rebuilt_because = Some(reason);
            SledStore::open(&path)?
        }
    };
    let state = Arc::new(new_state(Box::new(store), path));
    let checked = check_store(&state, last_seq, event_id_at)
        .map_err(|e| OpenFailure::Unusable(e.to_string()))?;
    if let Err(reason) = checked {
        reset_store(&state).map_err(|e| OpenFailure::Unusable(e.to_string()))?;
        if !reason.is_empty() {
            rebuilt_because = Some(reason);
        }
    }
    Ok(match rebuilt_because {
        Some(reason) => Opened::Rebuilt(state, reason),
        None => Opened::Ready(state),
    })
}

/// Opens the indexes for a read-only view: used as they are (never caught
/// up, never rebuilt); `Err(reason)` when they cannot be used, and the
/// view's queries then scan the log.
pub(crate) fn open_for_reading(
    data_dir: &Path,
    last_seq: u64,
    event_id_at: &dyn Fn(u64) -> Result<[u8; 16]>,
) -> std::result::Result<Arc<IndexState>, String> {
    let path = data_dir.join(INDEX_DIR);
    // sled creates a missing directory: look first, so that a reader
    // creates nothing.
    if !path.join("db").is_file() && !path.join("conf").is_file() {
        return Err(format!("{} does not exist", path.display()));
    }
    // Opening sled writes (it recovers and snapshots its files), and a
    // reader writes nothing: it opens a private copy, taken while it holds
    // the store's lock so that no writer changes the files mid-copy.
    let copy = copy_locked_store(&path)?;
    let store = match SledStore::open(copy.path()) {
        Ok(store) => store,
        Err(OpenFailure::Locked(why)) | Err(OpenFailure::Unusable(why)) => {
            return Err(format!("{}: {why}", path.display()))
        }
    };
    let mut state = new_state(Box::new(store), path);
    state.private_copy = Some(copy);
    match check_store(&state, last_seq, event_id_at) {
        Ok(Ok(())) => {
            // A view's copy never grows: waiting for more ends at once.
            state.indexed.stop();
            Ok(Arc::new(state))
        }
        Ok(Err(reason)) if reason.is_empty() => Err("the index is empty".into()),
        Ok(Err(reason)) => Err(reason),
        Err(e) => Err(e.to_string()),
    }
}
