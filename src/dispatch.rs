//! The `evlog:dispatch` thread: reads each newly visible record once for
//! every live subscriber of a log, instead of once per subscriber.
//!
//! A subscription is still a cursor over sequence numbers (see
//! `subscribe.rs`); the dispatcher only spares caught-up subscribers from
//! reading the log themselves. It reads the log in batches and keeps the
//! newest ones in one *window* shared by every subscriber, as [`Chunk`]s:
//! a chunk covers a contiguous range `from..=through` of sequence numbers,
//! holds each event of the range that some attached subscriber wants,
//! decoded once, and lists for each subscriber it was read for which of
//! them it wants. For a subscriber listed in a chunk, the chunk holds
//! every matching event of its range. A subscriber whose next seq lies in
//! such a chunk takes its events from there (those at or past its next
//! seq) and moves to the chunk's end; one whose next seq lies below the
//! window, or in a chunk that does not list it, reads the log itself up to
//! there. Because a listed chunk is complete for its range and a
//! subscriber takes nothing below its next seq, switching between the
//! window and its own reads can neither skip nor repeat an event.
//!
//! Backpressure: the window is bounded in bytes, by
//! `Options::subscription_queue_bytes` for each subscriber it serves, and
//! the dispatcher drops its oldest chunks to make room instead of waiting.
//! A subscriber that fell behind the window reads the log itself (like any
//! subscriber that is behind) until it reaches the window again. Appends
//! never wait for a subscriber, no subscriber is dropped, and since the
//! window is shared, the subscribers that keep up leave its room to the
//! ones that lag: sixteen subscribers of every event hold one copy of each,
//! and any of them may lag by the whole window.
//!
//! A subscription alone reads the log itself: sharing a read with nobody
//! gains nothing and adds a thread's hop to every delivery. Only while two
//! or more are registered does a caught-up one ask to be attached.
//!
//! Attaching happens only at the start of a dispatcher batch, under the
//! slot's lock, so a batch is read for exactly the slots attached when it
//! began, and every chunk from then on lists the slot while it stays
//! attached.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::event::LoggedEvent;
use crate::log::Shared;
use crate::record::body_view;
use crate::subscribe::Filter;
use crate::sync::lock;
use crate::watermark::WaitOutcome;

/// Most events one dispatcher batch reads before it hands them out: bounds
/// the size of a chunk.
const BATCH_EVENTS_MAX: u64 = 4096;

/// How long the dispatcher waits for new events before it looks at its
/// stop flag again (a stop also wakes it at once).
const IDLE_WAIT: Duration = Duration::from_secs(1);

/// Slot ids: unique among the slots of the process, and a slot takes a
/// new one when its subscriber moves backwards, so that the chunks read
/// for its old position no longer count as complete for it.
fn next_slot_id() -> u64 {
    static NEXT_SLOT_ID: AtomicU64 = AtomicU64::new(1);
    NEXT_SLOT_ID.fetch_add(1, Ordering::Relaxed)
}

/// One subscription's place in the dispatcher.
pub(crate) struct Slot {
    filter: Filter,
    state: Mutex<SlotState>,
    changed: Condvar,
}

struct SlotState {
    /// The id the chunks list this slot by.
    id: u64,
    /// Every chunk the dispatcher reads lists this slot.
    attached: bool,
    /// The subscriber caught up: attach at the next batch.
    attach_requested: bool,
    /// The subscriber's next seq when it asked: what its own reads
    /// examined below this is not listed for it (the dispatcher may still
    /// be behind it when it grants the request).
    skip_below: u64,
    /// The highest seq listed for this slot in a chunk: a subscriber whose
    /// next seq is at or below it has something to take (or to read, if
    /// the chunk is gone).
    listed_through: u64,
    /// Batches the dispatcher has read for this slot: a subscriber tells a
    /// slow dispatcher from a stuck one.
    batches: u64,
    /// The subscriber waits on `changed`: the dispatcher notifies only then.
    waiting: bool,
    /// The dispatcher stopped (the log closed or a read failed): the
    /// subscriber reads the log itself from now on.
    gone: bool,
}

/// What the subscriber should do next.
pub(crate) enum Next {
    /// Its events of one chunk, all moved to the subscriber at once (one
    /// lock per chunk, not per event), in order, every one at or past its
    /// next seq.
    Events(VecDeque<Arc<LoggedEvent>>),
    /// Read the log itself up to this seq (inclusive), then ask again.
    ReadUpTo(u64),
    /// Read the log itself to its end, or wait on the watermark there
    /// (the dispatcher does not serve it).
    ReadItself,
    /// Attached and caught up with the dispatcher: wait on the slot.
    Wait,
}

/// One dispatcher batch, as the window holds it.
struct Chunk {
    /// The range it covers: every record of `from..=through` was examined.
    from: u64,
    through: u64,
    /// What it counts for in the window: its events' estimated memory
    /// and its lists.
    bytes: u64,
    /// The slots it was read for, by id, each with the events it wants.
    listed: Vec<(u64, Listing)>,
    /// The decoded events some listed slot wants, in seq order.
    held: Mutex<Vec<Held>>,
}

enum Listing {
    /// Every event of the chunk (a subscriber of every event, or one whose
    /// filter happens to match them all).
    All,
    /// These indexes into the chunk's events, ascending.
    Some(Box<[u32]>),
}

/// One decoded event of a chunk.
struct Held {
    seq: u64,
    /// Cloned (as an `Arc`) for each listed slot that takes it, moved to
    /// the last: when one subscriber alone wants an event, taking it as
    /// an owned event (`next_timeout`) copies nothing.
    event: Option<Arc<LoggedEvent>>,
    /// The listed slots that have not taken it yet.
    recipients_left: u32,
}

impl Chunk {
    fn listing(&self, slot_id: u64) -> Option<&Listing> {
        self.listed
            .iter()
            .find(|(id, _)| *id == slot_id)
            .map(|(_, listing)| listing)
    }
}

/// The newest chunks, oldest first, contiguous while some slot stays
/// attached.
#[derive(Default)]
struct Window {
    chunks: VecDeque<Arc<Chunk>>,
    /// What the chunks count for together.
    bytes: u64,
    /// The last seq the dispatcher has examined, in a chunk or not (no
    /// slot attached, or dropped from the window since).
    examined_through: u64,
}

/// What the window holds, for tests.
#[cfg(test)]
#[derive(Debug)]
pub(crate) struct WindowState {
    pub(crate) bytes: u64,
    pub(crate) chunks: usize,
    /// The first seq of its oldest chunk (0: none).
    pub(crate) first_from: u64,
    pub(crate) examined_through: u64,
}

impl Slot {
    fn lock(&self) -> MutexGuard<'_, SlotState> {
        lock(&self.state)
    }

    /// The subscriber's step: `next_seq` is the next seq it would examine
    /// (moved forward past chunk ranges that hold nothing for it). The
    /// subscriber asks only once it has delivered every event it took.
    /// `share`: other subscriptions are live, so a caught-up subscriber
    /// asks to be attached (one alone gains nothing from a shared read and
    /// would only add a thread's hop to each delivery).
    pub(crate) fn next(
        &self,
        dispatch: &Dispatch,
        next_seq: &mut u64,
        log_end: u64,
        share: bool,
    ) -> Next {
        let id = self.lock().id;
        loop {
            let (chunk, examined_through) = {
                let window = lock(&dispatch.window);
                let at = window.chunks.partition_point(|c| c.through < *next_seq);
                (window.chunks.get(at).cloned(), window.examined_through)
            };
            let Some(chunk) = chunk else {
                if *next_seq <= examined_through {
                    // The dispatcher has been past it: its chunk left the
                    // window, or was read for other slots only.
                    return Next::ReadUpTo(examined_through);
                }
                break;
            };
            if chunk.from > *next_seq {
                return Next::ReadUpTo(chunk.from - 1);
            }
            let Some(listing) = chunk.listing(id) else {
                return Next::ReadUpTo(chunk.through);
            };
            match take(&chunk, listing, *next_seq) {
                Some(events) if events.is_empty() => *next_seq = chunk.through + 1,
                Some(events) => return Next::Events(events),
                // Cannot happen (an event is taken once by each listed
                // slot, and moved only to the last); were it to, the
                // subscriber reads the chunk's range from the log rather
                // than miss an event.
                None => return Next::ReadUpTo(chunk.through),
            }
        }
        let mut state = self.lock();
        if state.gone {
            return Next::ReadItself;
        }
        if state.attached || state.attach_requested {
            return Next::Wait;
        }
        if *next_seq > log_end && share {
            // Caught up by its own reads: let the dispatcher take over.
            state.attach_requested = true;
            state.skip_below = *next_seq;
            return Next::Wait;
        }
        Next::ReadItself
    }

    /// Waits until the dispatcher lists an event at or past `next_seq` for
    /// this slot, stops, or `timeout` passes.
    pub(crate) fn wait(&self, next_seq: u64, timeout: Duration) {
        let mut state = self.lock();
        if state.gone
            || !(state.attached || state.attach_requested)
            || state.listed_through >= next_seq
        {
            return;
        }
        state.waiting = true;
        let (mut state, _) = self
            .changed
            .wait_timeout(state, timeout)
            .unwrap_or_else(PoisonError::into_inner);
        state.waiting = false;
    }

    /// The subscriber moved its position backwards (a consumer's
    /// redelivery): it reads the log itself again, and the chunks read so
    /// far no longer list it (it took some of their events already).
    pub(crate) fn reset(&self) {
        let mut state = self.lock();
        state.id = next_slot_id();
        state.attached = false;
        state.attach_requested = false;
        state.listed_through = 0;
    }

    /// Whether the dispatcher has stopped serving this slot.
    pub(crate) fn is_gone(&self) -> bool {
        self.lock().gone
    }

    /// How many batches the dispatcher has read for this slot.
    pub(crate) fn batches(&self) -> u64 {
        self.lock().batches
    }

    /// Whether every chunk the dispatcher reads lists this slot.
    #[cfg(test)]
    pub(crate) fn is_attached(&self) -> bool {
        self.lock().attached
    }
}

/// The events of `chunk` listed for a slot at or past `next_seq`, each
/// taken once; `None` if one of them is missing.
fn take(chunk: &Chunk, listing: &Listing, next_seq: u64) -> Option<VecDeque<Arc<LoggedEvent>>> {
    let mut held = lock(&chunk.held);
    // Past the listed events below `next_seq`, which the subscriber has
    // taken or examined itself already.
    let first = held.partition_point(|h| h.seq < next_seq);
    let mut events = VecDeque::new();
    let mut take_one = |h: &mut Held| -> Option<()> {
        h.recipients_left = h.recipients_left.saturating_sub(1);
        let event = if h.recipients_left == 0 {
            h.event.take()
        } else {
            h.event.clone()
        };
        events.push_back(event?);
        Some(())
    };
    match listing {
        Listing::All => {
            for h in &mut held[first..] {
                take_one(h)?;
            }
        }
        Listing::Some(indexes) => {
            let start = indexes.partition_point(|&i| (i as usize) < first);
            for &i in &indexes[start..] {
                take_one(&mut held[i as usize])?;
            }
        }
    }
    Some(events)
}

/// The dispatcher of one log: its slots, its window and its thread,
/// started with the first live subscription.
#[derive(Default)]
pub(crate) struct Dispatch {
    registry: Mutex<Registry>,
    window: Mutex<Window>,
    stop: AtomicBool,
    /// Registered slots, as of the last registration or batch (a dropped
    /// subscription's slot is counted until the next batch).
    live_slots: AtomicUsize,
    /// The next seq the dispatcher reads while it serves attached slots;
    /// 0 while it serves none (see [`Dispatch::behind`]).
    serving_from: AtomicU64,
    /// Tests: the next batch panics.
    #[cfg(test)]
    pub(crate) panic_next_batch: AtomicBool,
    /// Tests: the dispatcher stands still before its next batch while
    /// this is set, as one starved of CPU does.
    #[cfg(test)]
    pub(crate) stall: AtomicBool,
}

#[derive(Default)]
struct Registry {
    slots: Vec<Arc<Slot>>,
    thread: Option<JoinHandle<()>>,
    /// The dispatcher has stopped for good (or could not start).
    stopped: bool,
}

impl Dispatch {
    /// A dispatcher that never starts: every subscription reads the log
    /// itself.
    pub(crate) fn disabled() -> Dispatch {
        Dispatch {
            registry: Mutex::new(Registry {
                stopped: true,
                ..Registry::default()
            }),
            ..Dispatch::default()
        }
    }

    /// How many events up to `visible_end` the dispatcher has yet to read
    /// for the subscribers it serves; 0 when it serves none.
    pub(crate) fn behind(&self, visible_end: u64) -> u64 {
        match self.serving_from.load(Ordering::Relaxed) {
            0 => 0,
            next => (visible_end + 1).saturating_sub(next),
        }
    }

    /// Whether more than one subscription is registered: only then does a
    /// caught-up subscriber hand its reading to the dispatcher.
    pub(crate) fn shares(&self) -> bool {
        self.live_slots.load(Ordering::Relaxed) >= 2
    }

    /// What the window holds.
    #[cfg(test)]
    pub(crate) fn window_state(&self) -> WindowState {
        let window = lock(&self.window);
        WindowState {
            bytes: window.bytes,
            chunks: window.chunks.len(),
            first_from: window.chunks.front().map_or(0, |c| c.from),
            examined_through: window.examined_through,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Registry> {
        lock(&self.registry)
    }

    /// A slot for a new subscription, starting the dispatcher if needed,
    /// asking at once to be attached when `attach_from` (at most the
    /// subscription's first seq) is given;
    /// `None` when the dispatcher has stopped (the subscription then reads
    /// the log itself, as it always may).
    pub(crate) fn register(
        shared: &Arc<Shared>,
        filter: Filter,
        attach_from: Option<u64>,
    ) -> Option<Arc<Slot>> {
        let dispatch = &shared.dispatch;
        let mut registry = dispatch.lock();
        if registry.stopped
            || dispatch.stop.load(Ordering::Acquire)
            || shared.options.subscription_queue_bytes == 0
        {
            return None;
        }
        if registry.thread.is_none() {
            let thread_shared = Arc::clone(shared);
            // From the end as it is now, not as the new thread first sees
            // it: every event appended after this subscription exists can
            // be dispatched.
            let visible = crate::subscribe::visible_watermark(&shared.options);
            let cursor = shared.marks.seq(visible) + 1;
            lock(&dispatch.window).examined_through = cursor - 1;
            let spawned = std::thread::Builder::new()
                .name("evlog:dispatch".into())
                .spawn(move || {
                    // A panic here must not leave subscribers waiting on a
                    // thread that is gone: they go back to their own reads.
                    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        run(&thread_shared, cursor)
                    }));
                    if let Err(panic) = outcome {
                        tracing::error!(
                            panic = %crate::subscribe::panic_message(&*panic),
                            "the dispatcher panicked; subscribers read the log themselves"
                        );
                        thread_shared.dispatch.release_all();
                    }
                });
            match spawned {
                Ok(thread) => registry.thread = Some(thread),
                Err(e) => {
                    tracing::warn!(error = %e, "could not start the dispatcher; subscribers read the log themselves");
                    registry.stopped = true;
                    return None;
                }
            }
        }
        // Alone, a subscription reads the log itself.
        let attach_from = attach_from.filter(|_| !registry.slots.is_empty());
        let slot = Arc::new(Slot {
            filter,
            state: Mutex::new(SlotState {
                id: next_slot_id(),
                attached: false,
                attach_requested: attach_from.is_some(),
                skip_below: attach_from.unwrap_or(0),
                listed_through: 0,
                batches: 0,
                waiting: false,
                gone: false,
            }),
            changed: Condvar::new(),
        });
        registry.slots.push(Arc::clone(&slot));
        dispatch
            .live_slots
            .store(registry.slots.len(), Ordering::Relaxed);
        Some(slot)
    }

    /// Stops the thread after the batch in progress and waits for it;
    /// every slot falls back to reading the log.
    pub(crate) fn shutdown(&self, shared: &Shared) {
        self.stop.store(true, Ordering::SeqCst);
        shared.marks.wake(crate::watermark::Changed {
            published: true,
            durable: true,
        });
        let thread = self.lock().thread.take();
        if let Some(thread) = thread {
            // Its panics are caught and reported inside.
            let _ = thread.join();
        }
        self.release_all();
    }

    /// Marks every slot gone, wakes its subscriber and empties the window.
    fn release_all(&self) {
        // Serving nobody, it is behind nobody (the indexer rests while it
        // is behind).
        self.serving_from.store(0, Ordering::Relaxed);
        let slots = {
            let mut registry = self.lock();
            registry.stopped = true;
            std::mem::take(&mut registry.slots)
        };
        for slot in slots {
            let mut state = slot.lock();
            state.gone = true;
            state.attached = false;
            state.attach_requested = false;
            drop(state);
            slot.changed.notify_all();
        }
        let mut window = lock(&self.window);
        window.chunks.clear();
        window.bytes = 0;
    }
}

/// A slot a batch is read for, as it was when the batch began.
struct Attached {
    slot: Arc<Slot>,
    id: u64,
    skip_below: u64,
}

/// One matching event of a batch.
struct Dispatched {
    event: Arc<LoggedEvent>,
    /// The slots that want it.
    recipients: u32,
    /// What it counts for in the window.
    bytes: u64,
}

/// A batch read once for the attached slots.
#[derive(Default)]
struct Batch {
    events: Vec<Dispatched>,
    /// Per attached slot, the indexes into `events` it wants.
    per_slot: Vec<Vec<u32>>,
}

/// Event types seen lately, each with the attached slots whose type
/// patterns accept it: a subscriber's patterns are matched once per type,
/// not once per event.
#[derive(Default)]
struct TypeCache {
    /// The attached slots the answers are for, by id.
    slots: Vec<u64>,
    by_type: HashMap<Box<str>, Box<[u32]>, foldhash::fast::RandomState>,
}

/// Distinct types the cache holds at most before it starts over.
const TYPE_CACHE_TYPES_MAX: usize = 4096;

impl TypeCache {
    /// Forgets every answer unless `attached` is the set they were for.
    fn align(&mut self, attached: &[Attached]) {
        let same = self.slots.len() == attached.len()
            && self.slots.iter().zip(attached).all(|(&id, a)| id == a.id);
        if !same {
            self.slots = attached.iter().map(|a| a.id).collect();
            self.by_type.clear();
        }
    }

    fn slots_for(&mut self, event_type: &str, attached: &[Attached]) -> &[u32] {
        if !self.by_type.contains_key(event_type) {
            if self.by_type.len() >= TYPE_CACHE_TYPES_MAX {
                self.by_type.clear();
            }
            let slots: Box<[u32]> = attached
                .iter()
                .enumerate()
                .filter(|(_, a)| a.slot.filter.matches_type(event_type))
                .map(|(index, _)| index as u32)
                .collect();
            self.by_type.insert(event_type.into(), slots);
        }
        self.by_type.get(event_type).map_or(&[], |slots| slots)
    }
}

fn run(shared: &Arc<Shared>, mut cursor: u64) {
    // The idle class leaves the CPU to the appends (see `sys`); a
    // subscriber that waits `DISPATCH_PATIENCE` for a starved dispatcher
    // reads the log itself. The crate's unit tests that watch the
    // dispatcher work (a batch, the window, a panic) keep it at normal
    // priority, so that a loaded test machine cannot starve them.
    if !cfg!(test) {
        crate::sys::make_this_thread_idle_class();
    }
    let dispatch = &shared.dispatch;
    let visible = crate::subscribe::visible_watermark(&shared.options);
    let queue_bytes_max = shared.options.subscription_queue_bytes;
    let mut attached: Vec<Attached> = Vec::new();
    let mut batch = Batch::default();
    let mut types = TypeCache::default();
    loop {
        if dispatch.stop.load(Ordering::Acquire) {
            break;
        }
        let mut end = shared.marks.seq(visible);
        if end < cursor {
            match shared
                .marks
                .wait_interruptible(visible, cursor, IDLE_WAIT, &dispatch.stop)
            {
                WaitOutcome::Reached(_) | WaitOutcome::TimedOut(_) => continue,
                WaitOutcome::Stopped(_) => {
                    end = shared.marks.seq(visible);
                    if end < cursor {
                        break;
                    }
                }
            }
        }
        let end = end.min(cursor + BATCH_EVENTS_MAX - 1);
        // The slots this batch is read for: attached ones, and those whose
        // subscriber asked, which start at this batch.
        attached.clear();
        {
            let mut registry = dispatch.lock();
            // A slot only the registry holds belongs to a dropped
            // subscription.
            registry.slots.retain(|slot| Arc::strong_count(slot) > 1);
            dispatch
                .live_slots
                .store(registry.slots.len(), Ordering::Relaxed);
            for slot in &registry.slots {
                let mut state = slot.lock();
                if state.attach_requested {
                    state.attach_requested = false;
                    state.attached = true;
                }
                if state.attached {
                    attached.push(Attached {
                        slot: Arc::clone(slot),
                        id: state.id,
                        skip_below: state.skip_below,
                    });
                }
            }
        }
        if attached.is_empty() {
            dispatch.serving_from.store(0, Ordering::Relaxed);
            let mut window = lock(&dispatch.window);
            // Nobody to keep them for.
            window.chunks.clear();
            window.bytes = 0;
            window.examined_through = end;
            drop(window);
            cursor = end + 1;
            continue;
        }
        dispatch.serving_from.store(cursor, Ordering::Relaxed);
        #[cfg(test)]
        if dispatch.panic_next_batch.swap(false, Ordering::SeqCst) {
            panic!("injected dispatcher panic");
        }
        #[cfg(test)]
        while dispatch.stall.load(Ordering::SeqCst) && !dispatch.stop.load(Ordering::Acquire) {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        types.align(&attached);
        // A chunk is at most a quarter of one subscriber's share of the
        // window, so that the window always holds several.
        let chunk_bytes_max = queue_bytes_max / 4;
        let read = read_batch(
            shared,
            cursor,
            end,
            &attached,
            &mut types,
            &mut batch,
            chunk_bytes_max,
        );
        let end = match read {
            Ok(end) => end,
            Err(e) => {
                // The subscribers meet the same error when they read the
                // log themselves, and report it to their callers.
                tracing::warn!(error = %e, "the dispatcher could not read the log; subscribers read it themselves");
                break;
            }
        };
        let (chunk, listed_through) = chunk_of(cursor, end, &attached, &mut batch);
        let chunk = Arc::new(chunk);
        {
            let window_bytes_max = queue_bytes_max.saturating_mul(attached.len() as u64);
            let mut window = lock(&dispatch.window);
            while window.bytes + chunk.bytes > window_bytes_max {
                let Some(oldest) = window.chunks.pop_front() else {
                    break;
                };
                window.bytes -= oldest.bytes;
            }
            window.bytes += chunk.bytes;
            window.chunks.push_back(chunk);
            window.examined_through = end;
        }
        // The chunk is in the window before any subscriber hears of it.
        for (a, listed_through) in attached.iter().zip(listed_through) {
            let mut state = a.slot.lock();
            if !state.attached || state.id != a.id {
                continue; // reset by its subscriber meanwhile
            }
            state.batches += 1;
            state.listed_through = state.listed_through.max(listed_through);
            // A subscriber is woken for events; one whose range only grew
            // has nothing to do yet.
            let wake = state.waiting && listed_through > 0;
            drop(state);
            if wake {
                a.slot.changed.notify_all();
            }
        }
        cursor = end + 1;
        dispatch.serving_from.store(cursor, Ordering::Relaxed);
    }
    dispatch.release_all();
}

/// The chunk of the batch just read for `cursor..=end`, and for each
/// attached slot the last seq listed for it (0: none).
fn chunk_of(cursor: u64, end: u64, attached: &[Attached], batch: &mut Batch) -> (Chunk, Vec<u64>) {
    let mut bytes = std::mem::size_of::<Chunk>() as u64;
    let held: Vec<Held> = batch
        .events
        .drain(..)
        .map(|d| {
            bytes += d.bytes + std::mem::size_of::<Held>() as u64;
            Held {
                seq: d.event.seq,
                event: Some(d.event),
                recipients_left: d.recipients,
            }
        })
        .collect();
    let mut listed = Vec::with_capacity(attached.len());
    let mut listed_through = Vec::with_capacity(attached.len());
    for (a, indexes) in attached.iter().zip(&mut batch.per_slot) {
        listed_through.push(indexes.last().map_or(0, |&i| held[i as usize].seq));
        let listing = if indexes.len() == held.len() {
            indexes.clear();
            Listing::All
        } else {
            bytes += 4 * indexes.len() as u64;
            Listing::Some(std::mem::take(indexes).into_boxed_slice())
        };
        listed.push((a.id, listing));
    }
    let chunk = Chunk {
        from: cursor,
        through: end,
        bytes,
        listed,
        held: Mutex::new(held),
    };
    (chunk, listed_through)
}

/// Reads `cursor..=end` once, decoding each event that some attached slot
/// wants, into `batch`; stops early once the decoded events count for
/// `bytes_max`. Returns the last seq examined.
fn read_batch(
    shared: &Arc<Shared>,
    cursor: u64,
    end: u64,
    attached: &[Attached],
    types: &mut TypeCache,
    batch: &mut Batch,
    bytes_max: u64,
) -> crate::Result<u64> {
    batch.events.clear();
    batch.per_slot.resize_with(attached.len(), Vec::new);
    batch.per_slot.truncate(attached.len());
    batch.per_slot.iter_mut().for_each(Vec::clear);
    let mut iter = shared.iter(cursor..=end)?;
    // The filter step records which slots the record goes to; the event it
    // then decodes is that record.
    let matched = std::cell::RefCell::new(Vec::<u32>::new());
    let body_bytes = std::cell::Cell::new(0u64);
    let mut wanted = |seq: u64, body: &[u8]| {
        let fields = body_view(body)?;
        let mut matched = matched.borrow_mut();
        matched.clear();
        for &index in types.slots_for(fields.event_type, attached) {
            let a = &attached[index as usize];
            if seq >= a.skip_below
                && a.slot.filter.matches_besides_type(
                    fields.entity,
                    fields.correlation_id,
                    fields.priority,
                )
            {
                matched.push(index);
            }
        }
        body_bytes.set(body.len() as u64);
        Ok(!matched.is_empty())
    };
    let mut decoded_bytes = 0u64;
    while let Some(event) = iter.next_matching(&mut wanted) {
        let event = event?;
        let seq = event.seq;
        let at = batch.events.len() as u32;
        let recipients = matched.borrow();
        for &index in recipients.iter() {
            batch.per_slot[index as usize].push(at);
        }
        let bytes = body_bytes.get() + std::mem::size_of::<LoggedEvent>() as u64;
        batch.events.push(Dispatched {
            event: Arc::new(event),
            recipients: recipients.len() as u32,
            bytes,
        });
        decoded_bytes += bytes;
        if decoded_bytes >= bytes_max && seq < end {
            // Every record up to this one was examined.
            return Ok(seq);
        }
    }
    Ok(end)
}
