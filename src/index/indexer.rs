//! The `evlog:indexer` thread: follows the log (the published watermark
//! is its commit notification) and turns every new range of events into
//! one atomic store batch: posting lists grouped per key, one id run, the
//! touched time blocks and counters, and the new "indexed through" mark.
//! Appends never wait for it; queries cover what it has not reached yet by
//! scanning the log from its mark (`crate::query`).

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::Sender;

use super::ids::{push_and_merge, IdRun};
use super::keys::{self, PostingKind, StatDim};
use super::store::{OpenFailure, StoreBatch};
use super::{IndexSlot, IndexState, Opened};
use crate::error::CorruptKind;
use crate::error::{Error, Result};
use crate::log::Shared;
use crate::record::BodyView;
use crate::watermark::{WaitOutcome, Watermark};
use uuid::Uuid;

/// Most events indexed in one store batch: bounds the indexer's memory
/// and how long a batch holds the store.
pub(crate) const BATCH_EVENTS_MAX: u64 = 32 * 1024;
/// A posting chunk grows (rewritten whole) until it holds this many seqs;
/// then the key gets a new chunk. Bounds the rewrite cost per batch and
/// keeps the chunks of a busy key few.
const CHUNK_SEQS_MAX: usize = 256;
/// Most keys whose last chunk the indexer remembers, and most counters it
/// caches; past this the memory is dropped (chunks then start afresh,
/// counters are read back from the store).
const REMEMBERED_KEYS_MAX: usize = 200_000;
/// Below this many unindexed events the indexer waits up to
/// `GATHER_DELAY` for more before it writes a batch.
const GATHER_EVENTS_MIN: u64 = 1024;
const GATHER_DELAY: Duration = Duration::from_millis(5);
/// The dispatcher this far behind the visible end makes the indexer rest
/// before its next batch (one dispatcher batch reads up to 4096).
const DISPATCH_BEHIND_EVENTS_MAX: u64 = 4096;
/// The longest rest before the indexer writes a batch anyway, and how
/// often a resting indexer looks again.
const REST_MAX: Duration = Duration::from_millis(500);
const REST_STEP: Duration = Duration::from_millis(2);
/// How often an idle indexer looks for commands.
const IDLE_POLL: Duration = Duration::from_millis(100);
/// Metadata keys that link an event to another entity:
/// `link.<entity type>` = `<entity id>`.
pub const LINK_METADATA_PREFIX: &str = "link.";
/// At close the indexer catches up when at most this many events are
/// left; more is left for the next open, so a close stays short.
const CLOSE_CATCH_UP_MAX: u64 = 200_000;

/// A request to rebuild the indexes from the log.
pub(crate) struct Reindex {
    /// Told `(done, total)` as the rebuild goes, then `Ok` or the failure.
    pub progress: Sender<std::result::Result<(u64, u64), Error>>,
}

/// The indexer thread as the `Log` sees it.
pub(crate) struct IndexerHandle {
    stop: Arc<AtomicBool>,
    commands: Arc<Mutex<Vec<Reindex>>>,
    thread: Option<JoinHandle<()>>,
}

impl IndexerHandle {
    pub fn request_reindex(&self, request: Reindex) {
        self.commands
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(request);
    }

    /// Stops the thread (after a short catch-up and a flush) and waits.
    pub fn shutdown(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

pub(crate) fn spawn(shared: Arc<Shared>) -> Result<IndexerHandle> {
    let stop = Arc::new(AtomicBool::new(false));
    let commands = Arc::clone(&shared.index_commands);
    let thread = {
        let (stop, commands) = (Arc::clone(&stop), Arc::clone(&commands));
        let dir = shared.dir.clone();
        std::thread::Builder::new()
            .name("evlog:indexer".into())
            .spawn(move || run(shared, stop, commands))
            .map_err(|source| Error::Io { path: dir, source })?
    };
    Ok(IndexerHandle {
        stop,
        commands,
        thread: Some(thread),
    })
}

fn event_id_at(shared: &Shared, seq: u64) -> Result<[u8; 16]> {
    Ok(*shared.get(seq)?.id.as_bytes())
}

fn run(shared: Arc<Shared>, stop: Arc<AtomicBool>, commands: Arc<Mutex<Vec<Reindex>>>) {
    let slot: &IndexSlot = &shared.index;
    // Open, waiting while another process (a read-only view) holds the
    // store's lock: its queries are cheap to wait for, a rebuild is not.
    let state = loop {
        let last = shared.marks.last_seq();
        match super::open_for_writing(&shared.dir, last, &|seq| event_id_at(&shared, seq)) {
            Ok(Opened::Ready(state)) => break state,
            Ok(Opened::Rebuilt(state, reason)) => {
                tracing::warn!(%reason, "rebuilding the indexes from the log");
                slot.set_rebuilt_because(reason);
                break state;
            }
            Err(OpenFailure::Locked(why)) => {
                slot.set_unavailable(format!(
                    "the index directory is locked by another process ({why}); queries scan the log"
                ));
                if stop.load(Ordering::Acquire) {
                    return;
                }
                std::thread::sleep(IDLE_POLL * 5);
            }
            Err(OpenFailure::Unusable(why)) => {
                tracing::error!(%why, "the indexes cannot be opened; queries scan the log");
                slot.set_unavailable(why);
                return;
            }
        }
    };
    slot.set_ready(Arc::clone(&state));
    let mut indexer = Indexer::new(Arc::clone(&shared), state);
    // sled may panic instead of returning an error (on some I/O failures):
    // either way the indexer stops visibly, and queries scan past its mark.
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        indexer.follow(&stop, &commands)
    }));
    let failure = match outcome {
        Ok(Ok(())) => None,
        Ok(Err(e)) => Some(e.to_string()),
        Err(panic) => Some(format!(
            "the index store panicked: {}",
            crate::subscribe::panic_message(&*panic)
        )),
    };
    if let Some(reason) = failure {
        tracing::error!(%reason, "the indexer stopped; queries scan the log past its mark");
        slot.set_stopped_because(reason);
    }
    // Whoever waits for the indexes to reach a seq stops waiting.
    indexer.state.indexed.stop();
    if let Err(e) = indexer.state.store.flush() {
        tracing::warn!(error = %e, "could not flush the indexes; the next open catches up");
    }
}

/// A key's newest chunk, kept so that the next batch extends it instead
/// of starting a new one.
struct OpenChunk {
    first_seq: u64,
    seqs: Vec<u64>,
}

/// A causation-link chunk's first child seq and its `(parent, child)` links.
type OpenLinkChunk = (u64, Vec<(u64, u64)>);

/// The indexer's maps hash short byte keys millions of times a second:
/// foldhash (seeded per process) rather than SipHash, which was a fifth of
/// the indexer's instructions. Keys come from the log, but a map's memory
/// is bounded by the batch or by `REMEMBERED_KEYS_MAX`, never by how keys
/// collide.
type FastMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;
type FastSet<K> = HashSet<K, foldhash::fast::RandomState>;

/// What one batch gathers before it writes: kept from batch to batch so
/// that its tables and buffers are allocated once, not per batch.
#[derive(Default)]
struct Gathered {
    postings: FastMap<Vec<u8>, Vec<u64>>,
    links: FastMap<Vec<u8>, Vec<(u64, u64)>>,
    id_pairs: Vec<([u8; 16], u64)>,
    batch_ids: FastMap<[u8; 16], u64>,
    blocks: FastMap<u64, (i64, i64)>,
    stat_deltas: FastMap<Vec<u8>, u64>,
    new_links: Vec<Vec<u8>>,
    new_types: Vec<String>,
    /// Scratch for the key being looked up: a map allocates a key only
    /// when it first sees it in the batch.
    key: Vec<u8>,
    entity_key: Vec<u8>,
}

impl Gathered {
    fn clear(&mut self) {
        // The maps were drained by the last batch's write; these are what
        // a failed batch may have left.
        self.postings.clear();
        self.links.clear();
        self.id_pairs.clear();
        self.batch_ids.clear();
        self.blocks.clear();
        self.stat_deltas.clear();
        self.new_links.clear();
        self.new_types.clear();
    }

    /// Appends `seq` to the posting list of `(kind, key)`.
    fn post(&mut self, kind: PostingKind, key: &[u8], seq: u64) {
        self.key.clear();
        keys::posting_prefix_into(&mut self.key, kind, key);
        match self.postings.get_mut(self.key.as_slice()) {
            Some(seqs) => seqs.push(seq),
            None => {
                self.postings.insert(self.key.clone(), vec![seq]);
            }
        }
    }

    /// Counts one event for the counter `(dim, minute, value)`.
    fn count(&mut self, dim: StatDim, minute: i64, value: &[u8]) {
        self.key.clear();
        keys::stat_key_into(&mut self.key, dim, minute, value);
        match self.stat_deltas.get_mut(self.key.as_slice()) {
            Some(delta) => *delta += 1,
            None => {
                self.stat_deltas.insert(self.key.clone(), 1);
            }
        }
    }
}

pub(crate) struct Indexer {
    shared: Arc<Shared>,
    pub(crate) state: Arc<IndexState>,
    open_chunks: FastMap<Vec<u8>, OpenChunk>,
    /// The same for causation-link chunks: first child seq and links.
    open_link_chunks: FastMap<Vec<u8>, OpenLinkChunk>,
    counters: FastMap<Vec<u8>, u64>,
    known_links: FastSet<Vec<u8>>,
    known_types: FastSet<String>,
    gathered: Gathered,
}

impl Indexer {
    pub fn new(shared: Arc<Shared>, state: Arc<IndexState>) -> Indexer {
        Indexer {
            shared,
            state,
            open_chunks: FastMap::default(),
            open_link_chunks: FastMap::default(),
            counters: FastMap::default(),
            known_links: FastSet::default(),
            known_types: FastSet::default(),
            gathered: Gathered::default(),
        }
    }

    fn follow(&mut self, stop: &AtomicBool, commands: &Mutex<Vec<Reindex>>) -> Result<()> {
        // When the first of the events waiting to be indexed was seen.
        let mut gathering: Option<Instant> = None;
        // Since when the indexer has been resting for the dispatcher.
        let mut resting: Option<Instant> = None;
        loop {
            let pending: Vec<Reindex> = std::mem::take(
                &mut *commands
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner),
            );
            for request in pending {
                let outcome = self.rebuild(&request);
                let _ = request.progress.send(outcome.map(|total| (total, total)));
            }
            let last = self.shared.marks.last_seq();
            let mark = self.state.mark();
            if stop.load(Ordering::Acquire) {
                if last > mark && last - mark <= CLOSE_CATCH_UP_MAX {
                    self.catch_up(last, &|_, _| {})?;
                }
                return Ok(());
            }
            if mark < last {
                // A few events: let more gather first (queries scan what is
                // not indexed, so nothing is missed). One sled batch per
                // single append would cost the appenders a wake-up and
                // tens of microseconds of CPU each.
                if last - mark < GATHER_EVENTS_MIN {
                    let since = *gathering.get_or_insert_with(Instant::now);
                    if let Some(left) = GATHER_DELAY.checked_sub(since.elapsed()) {
                        std::thread::sleep(left);
                        continue;
                    }
                }
                gathering = None;
                // Deliveries to live subscribers come before the indexes
                // (queries cover what is not indexed yet by scanning):
                // while the dispatcher is behind, the indexer rests, so
                // that a dispatcher in the idle class finds a core. A
                // dispatcher starved by other processes would keep it
                // resting for good: it rests at most `REST_MAX` at a time.
                let visible = crate::subscribe::visible_watermark(&self.shared.options);
                let visible_end = self.shared.marks.seq(visible);
                if self.shared.dispatch.behind(visible_end) > DISPATCH_BEHIND_EVENTS_MAX {
                    let since = *resting.get_or_insert_with(Instant::now);
                    if since.elapsed() < REST_MAX {
                        std::thread::sleep(REST_STEP);
                        continue;
                    }
                }
                resting = None;
                let through = last.min(mark + BATCH_EVENTS_MAX);
                self.index_range(mark + 1, through)?;
                continue;
            }
            if let WaitOutcome::Stopped(_) =
                self.shared
                    .marks
                    .wait(Watermark::Published, mark + 1, IDLE_POLL)
            {
                // The writer stopped (closed or poisoned): wait for our own
                // stop, polling commands, without spinning.
                std::thread::sleep(IDLE_POLL / 10);
            }
        }
    }

    fn catch_up(&mut self, through: u64, progress: &dyn Fn(u64, u64)) -> Result<()> {
        while self.state.mark() < through {
            let mark = self.state.mark();
            let end = through.min(mark + BATCH_EVENTS_MAX);
            self.index_range(mark + 1, end)?;
            progress(end, through);
        }
        Ok(())
    }

    fn rebuild(&mut self, request: &Reindex) -> Result<u64> {
        super::reset_store(&self.state)?;
        self.open_chunks.clear();
        self.open_link_chunks.clear();
        self.counters.clear();
        self.known_links.clear();
        self.known_types.clear();
        let through = self.shared.marks.last_seq();
        let progress = request.progress.clone();
        self.catch_up(through, &move |done, total| {
            let _ = progress.send(Ok((done, total)));
        })?;
        self.state.store.flush()?;
        Ok(through)
    }

    /// Indexes events `from..=through` in one atomic store batch.
    pub fn index_range(&mut self, from: u64, through: u64) -> Result<()> {
        // One span per store batch (up to 32 768 events), on the indexer's
        // thread, never the writer's.
        let _span =
            tracing::debug_span!("evlog.index_batch", from_seq = from, through_seq = through)
                .entered();
        let mut gathered = std::mem::take(&mut self.gathered);
        gathered.clear();
        let outcome = self.gather_and_write(from, through, &mut gathered);
        self.gathered = gathered;
        outcome
    }

    /// `index_range` with the batch's tables lent out of `self`.
    fn gather_and_write(&mut self, from: u64, through: u64, gathered: &mut Gathered) -> Result<()> {
        let mut last_id = [0u8; 16];
        let mut next = from;
        self.shared
            .iter(from..=through)?
            .visit_bodies(&mut |seq, body| {
                if seq != next {
                    // Reported where the log skipped it.
                    return Err(CorruptKind::Sequence {
                        expected: next,
                        found: seq,
                    });
                }
                next += 1;
                let view = crate::record::body_view(body)?;
                last_id = *view.id.as_bytes();
                self.add_event(seq, &view, gathered)?;
                gathered.id_pairs.push((*view.id.as_bytes(), seq));
                Ok(())
            })?;
        if next != through + 1 {
            return Err(Error::Internal("the log ended before the published seq"));
        }
        let mut batch = StoreBatch::default();
        self.write_postings(&mut gathered.postings, &mut batch);
        self.write_links(&mut gathered.links, &mut batch);
        // The id run of this batch, merged into the runs before it.
        let mut runs: Vec<IdRun> = self.state.id_runs().as_ref().clone();
        let id_pairs = std::mem::take(&mut gathered.id_pairs);
        let gone = push_and_merge(&mut runs, IdRun::from_pairs(from, through, id_pairs));
        for lo in gone {
            batch.delete(keys::with_seq(&[keys::ID_RUN], lo));
        }
        if let Some(newest) = runs.last() {
            batch.put(keys::with_seq(&[keys::ID_RUN], newest.lo), newest.encode());
        }
        // Time blocks, widened by what is already stored for them.
        let mut block_updates = Vec::with_capacity(gathered.blocks.len());
        {
            let known = self.state.time_blocks();
            for (block, (min, max)) in gathered.blocks.drain() {
                let (min, max) = match known.get(block as usize).copied().flatten() {
                    Some((old_min, old_max)) => (min.min(old_min), max.max(old_max)),
                    None => (min, max),
                };
                let mut value = Vec::with_capacity(16);
                value.extend_from_slice(&min.to_le_bytes());
                value.extend_from_slice(&max.to_le_bytes());
                batch.put(keys::with_seq(&[keys::TIME_BLOCK], block), value);
                block_updates.push((block, (min, max)));
            }
        }
        // Counters: read (cache, else store), add, write.
        if self.counters.len() > REMEMBERED_KEYS_MAX {
            self.counters.clear();
        }
        for (key, delta) in gathered.stat_deltas.drain() {
            let current = match self.counters.get(&key) {
                Some(&count) => count,
                None => match self.state.store.get(&key)? {
                    Some(v) if v.len() == 8 => {
                        u64::from_le_bytes(v[..8].try_into().unwrap_or_default())
                    }
                    _ => 0,
                },
            };
            let count = current + delta;
            batch.put(key.clone(), count.to_le_bytes().to_vec());
            self.counters.insert(key, count);
        }
        for key in gathered.new_links.drain(..) {
            batch.put(key, Vec::new());
        }
        for name in gathered.new_types.drain(..) {
            let mut key = vec![keys::TYPE_REGISTRY];
            key.extend_from_slice(name.as_bytes());
            batch.put(key, Vec::new());
        }
        let mut mark = Vec::with_capacity(24);
        mark.extend_from_slice(&through.to_le_bytes());
        mark.extend_from_slice(&last_id);
        batch.put(keys::META_MARK.to_vec(), mark);
        let _gate = self.state.apply_gate.write();
        self.state.store.apply(batch)?;
        // Published after the store holds it all: a query that reads the
        // mark finds at least this much.
        self.state.set_id_runs(runs);
        self.state.update_time_blocks(&block_updates);
        self.state.set_mark(through);
        Ok(())
    }

    fn add_event(
        &mut self,
        seq: u64,
        event: &BodyView<'_>,
        gathered: &mut Gathered,
    ) -> std::result::Result<(), CorruptKind> {
        if let Some(id) = &event.correlation_id {
            gathered.post(PostingKind::Correlation, id.as_bytes(), seq);
        }
        let mut entity_key = std::mem::take(&mut gathered.entity_key);
        entity_key.clear();
        if let Some((entity_type, entity_id)) = event.entity {
            keys::entity_key_into(&mut entity_key, entity_type, entity_id);
            gathered.post(PostingKind::Entity, &entity_key, seq);
        }
        if let Some(session) = event.session {
            gathered.post(PostingKind::Session, session.as_bytes(), seq);
        }
        if let Some(actor) = event.actor {
            gathered.post(PostingKind::Actor, actor.as_bytes(), seq);
        }
        gathered.post(PostingKind::Type, event.event_type.as_bytes(), seq);
        if let Some(cause) = event.causation_id.as_ref().map(Uuid::as_bytes) {
            // The first event with that id, as `lookup_id` resolves it.
            let parent = self
                .state
                .lookup_id(cause)
                .or_else(|| gathered.batch_ids.get(cause).copied());
            // A cause the log does not hold (yet) has no children list;
            // `verify` reports it.
            if let Some(parent) = parent.filter(|&p| p < seq) {
                let block = parent / keys::CHILDREN_BLOCK_PARENTS;
                gathered.key.clear();
                keys::posting_prefix_into(
                    &mut gathered.key,
                    PostingKind::Children,
                    &block.to_be_bytes(),
                );
                match gathered.links.get_mut(gathered.key.as_slice()) {
                    Some(pairs) => pairs.push((parent, seq)),
                    None => {
                        gathered
                            .links
                            .insert(gathered.key.clone(), vec![(parent, seq)]);
                    }
                }
            }
        }
        gathered
            .batch_ids
            .entry(*event.id.as_bytes())
            .or_insert(seq);

        if !self.known_types.contains(event.event_type) {
            self.known_types.insert(event.event_type.to_owned());
            gathered.new_types.push(event.event_type.to_owned());
        }
        let block = seq / keys::TIME_BLOCK_EVENTS;
        let ts = event.timestamp_us;
        gathered
            .blocks
            .entry(block)
            .and_modify(|(min, max)| {
                *min = (*min).min(ts);
                *max = (*max).max(ts);
            })
            .or_insert((ts, ts));

        let minute = keys::minute_of(ts);
        gathered.count(StatDim::All, minute, &[]);
        gathered.count(StatDim::Type, minute, event.event_type.as_bytes());
        if let Some(actor) = event.actor {
            gathered.count(StatDim::Actor, minute, actor.as_bytes());
        }
        gathered.count(StatDim::Priority, minute, &[event.priority.as_u8()]);

        if event.entity.is_some() {
            for pair in event.metadata.pairs() {
                let (name, value) = pair?;
                let Some(linked_type) = name.strip_prefix(LINK_METADATA_PREFIX) else {
                    continue;
                };
                let to = keys::entity_key_parts(linked_type, value);
                if to == entity_key {
                    continue;
                }
                if self.known_links.len() > REMEMBERED_KEYS_MAX {
                    self.known_links.clear();
                }
                for key in [
                    keys::link_key(&entity_key, &to),
                    keys::link_key(&to, &entity_key),
                ] {
                    if !self.known_links.contains(&key) {
                        self.known_links.insert(key.clone());
                        gathered.new_links.push(key);
                    }
                }
            }
        }
        gathered.entity_key = entity_key;
        Ok(())
    }

    fn write_links(
        &mut self,
        links: &mut FastMap<Vec<u8>, Vec<(u64, u64)>>,
        batch: &mut StoreBatch,
    ) {
        if self.open_link_chunks.len() > REMEMBERED_KEYS_MAX {
            self.open_link_chunks.clear();
        }
        for (prefix, pairs) in links.drain() {
            let block_start =
                keys::trailing_seq(&prefix).unwrap_or(0) * keys::CHILDREN_BLOCK_PARENTS;
            let (first_seq, pairs) = match self.open_link_chunks.remove(&prefix) {
                Some((first, mut open)) if open.len() + pairs.len() <= CHUNK_SEQS_MAX => {
                    open.extend_from_slice(&pairs);
                    (first, open)
                }
                _ => (pairs[0].1, pairs),
            };
            let mut value = Vec::new();
            keys::encode_links(first_seq, block_start, &pairs, &mut value);
            batch.put(keys::with_seq(&prefix, first_seq), value);
            if pairs.len() < CHUNK_SEQS_MAX {
                self.open_link_chunks.insert(prefix, (first_seq, pairs));
            }
        }
    }

    fn write_postings(
        &mut self,
        postings: &mut FastMap<Vec<u8>, Vec<u64>>,
        batch: &mut StoreBatch,
    ) {
        if self.open_chunks.len() > REMEMBERED_KEYS_MAX {
            self.open_chunks.clear();
        }
        for (prefix, seqs) in postings.drain() {
            let chunk = match self.open_chunks.remove(&prefix) {
                Some(mut open) if open.seqs.len() + seqs.len() <= CHUNK_SEQS_MAX => {
                    open.seqs.extend_from_slice(&seqs);
                    open
                }
                _ => OpenChunk {
                    first_seq: seqs[0],
                    seqs,
                },
            };
            let mut value = Vec::new();
            keys::encode_chunk(chunk.first_seq, &chunk.seqs, &mut value);
            batch.put(keys::with_seq(&prefix, chunk.first_seq), value);
            if chunk.seqs.len() < CHUNK_SEQS_MAX {
                self.open_chunks.insert(prefix, chunk);
            }
        }
    }
}
