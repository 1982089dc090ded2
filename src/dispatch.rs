//! The `evlog:dispatch` thread: reads each newly visible record once for
//! every live subscriber of a log, instead of once per subscriber.
//!
//! A subscription is still a cursor over sequence numbers (see
//! `subscribe.rs`); the dispatcher only spares caught-up subscribers from
//! reading the log themselves. Each subscription has a [`Slot`]. While the
//! slot is *attached*, the dispatcher extends its *coverage*, a contiguous
//! range `from..=through` of sequence numbers for which the slot's queue
//! holds every matching event not yet taken, in order. A subscriber whose
//! next seq lies inside the coverage takes events from the queue; one
//! below it reads the log itself up to `from - 1`. Because the coverage is
//! contiguous and a subscriber discards queued events below its next seq,
//! switching between the queue and its own reads can neither skip nor
//! repeat an event.
//!
//! Backpressure: a slot's queue is bounded in bytes
//! (`Options::subscription_queue_bytes`). When a batch's matches do not
//! all fit, the dispatcher queues those that do, ends the coverage before
//! the first that does not, and detaches the slot instead of waiting: the
//! subscriber drains what is queued, reads the log itself from there
//! (like any subscriber that is behind), and asks to be attached again
//! once it has caught up. Appends never wait for a subscriber, and no
//! subscriber is dropped.
//!
//! A subscription alone reads the log itself: sharing a read with nobody
//! gains nothing and adds a thread's hop to every delivery. Only while two
//! or more are registered does a caught-up one ask to be attached.
//!
//! Attaching happens only at the start of a dispatcher batch, under the
//! slot's lock, so a batch is dispatched to exactly the slots attached
//! when it began.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::event::LoggedEvent;
use crate::log::Shared;
use crate::record::body_view;
use crate::subscribe::Filter;
use crate::watermark::WaitOutcome;

/// Most events one dispatcher batch reads before it hands them out: bounds
/// the dispatcher's own memory (its batch holds the decoded matches).
const BATCH_EVENTS_MAX: u64 = 4096;

/// How long the dispatcher waits for new events before it looks at its
/// stop flag again (a stop also wakes it at once).
const IDLE_WAIT: Duration = Duration::from_secs(1);

/// One subscription's place in the dispatcher.
pub(crate) struct Slot {
    /// Unique among the slots of the process: the type cache's answers are
    /// for a set of slots, and an address may be reused by a later slot.
    id: u64,
    filter: Filter,
    state: Mutex<SlotState>,
    changed: Condvar,
}

#[derive(Default)]
struct SlotState {
    /// The dispatcher extends the coverage batch by batch.
    attached: bool,
    /// The subscriber caught up: attach at the next batch.
    attach_requested: bool,
    /// The subscriber's next seq when it asked: what its own reads
    /// examined below this is not queued again (the dispatcher may still
    /// be behind it when it grants the request).
    skip_below: u64,
    /// `(from, through)`: every matching event of `from..=through` that
    /// the subscriber has not taken is in `queue`, in order. `through` is
    /// `from - 1` while nothing has been dispatched yet.
    coverage: Option<(u64, u64)>,
    /// Each event with the bytes it counts for: its encoded body plus the
    /// decoded event's fixed size, an estimate of its memory.
    queue: VecDeque<(Arc<LoggedEvent>, u64)>,
    /// What the queued events count for together.
    queued_bytes: u64,
    /// Batches the dispatcher has handed this slot (each extends the
    /// coverage): a subscriber tells a slow dispatcher from a stuck one.
    batches: u64,
    /// The subscriber waits on `changed`: the dispatcher notifies only then.
    waiting: bool,
    /// The dispatcher stopped (the log closed or a read failed): the
    /// subscriber reads the log itself from now on.
    gone: bool,
}

/// What the subscriber should do next, decided under the slot's lock.
pub(crate) enum Next {
    /// The queued events, all moved to the subscriber at once (one lock
    /// per batch, not per event), in order, every one at or past its next
    /// seq.
    Events(VecDeque<Arc<LoggedEvent>>),
    /// Read the log itself up to this seq (inclusive), then ask again.
    ReadUpTo(u64),
    /// Read the log itself to its end, or wait on the watermark there
    /// (no coverage applies).
    ReadItself,
    /// Attached and caught up with the dispatcher: wait on the slot.
    Wait,
}

impl Slot {
    fn lock(&self) -> MutexGuard<'_, SlotState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The subscriber's step: `next_seq` is the next seq it would examine
    /// (moved forward past covered seqs that hold no queued match). The
    /// subscriber asks only once it has delivered every event it took.
    /// `share`: other subscriptions are live, so a caught-up subscriber
    /// asks to be attached (one alone gains nothing from a shared read and
    /// would only add a thread's hop to each delivery).
    pub(crate) fn next(&self, next_seq: &mut u64, log_end: u64, share: bool) -> Next {
        let mut state = self.lock();
        // Queued events below the subscriber's position were examined by
        // its own reads already.
        while state.queue.front().is_some_and(|(e, _)| e.seq < *next_seq) {
            state.pop();
        }
        if let Some((from, through)) = state.coverage {
            if from > *next_seq {
                return Next::ReadUpTo(from - 1);
            }
            if !state.queue.is_empty() {
                state.queued_bytes = 0;
                let events = state.queue.drain(..).map(|(event, _)| event).collect();
                return Next::Events(events);
            }
            *next_seq = (*next_seq).max(through + 1);
            if state.attached {
                return Next::Wait;
            }
            // Detached and drained: the coverage ends here.
            state.coverage = None;
        }
        if state.gone {
            return Next::ReadItself;
        }
        if *next_seq > log_end && share {
            // Caught up by its own reads: let the dispatcher take over.
            state.attach_requested = true;
            state.skip_below = *next_seq;
            return Next::Wait;
        }
        Next::ReadItself
    }

    /// Waits until the dispatcher changes the slot or `timeout` passes.
    pub(crate) fn wait(&self, timeout: Duration) {
        let mut state = self.lock();
        if state.gone || !(state.attached || state.attach_requested) || !state.queue.is_empty() {
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
    /// redelivery): forget the queue; it reads the log itself again.
    pub(crate) fn reset(&self) {
        let mut state = self.lock();
        state.attached = false;
        state.attach_requested = false;
        state.coverage = None;
        state.queue.clear();
        state.queued_bytes = 0;
    }

    /// Whether the dispatcher has stopped serving this slot.
    pub(crate) fn is_gone(&self) -> bool {
        self.lock().gone
    }

    /// How many batches the dispatcher has handed this slot.
    pub(crate) fn batches(&self) -> u64 {
        self.lock().batches
    }

    /// The bytes queued and whether the slot is attached.
    #[cfg(test)]
    pub(crate) fn queue_state(&self) -> (u64, bool) {
        let state = self.lock();
        (state.queued_bytes, state.attached)
    }
}

impl SlotState {
    fn pop(&mut self) -> Option<Arc<LoggedEvent>> {
        let (event, bytes) = self.queue.pop_front()?;
        self.queued_bytes = self.queued_bytes.saturating_sub(bytes);
        Some(event)
    }
}

/// The dispatcher of one log: its slots and its thread, started with the
/// first live subscription.
#[derive(Default)]
pub(crate) struct Dispatch {
    registry: Mutex<Registry>,
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
            stop: AtomicBool::new(false),
            live_slots: AtomicUsize::new(0),
            serving_from: AtomicU64::new(0),
            #[cfg(test)]
            panic_next_batch: AtomicBool::new(false),
            #[cfg(test)]
            stall: AtomicBool::new(false),
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

    fn lock(&self) -> MutexGuard<'_, Registry> {
        self.registry.lock().unwrap_or_else(PoisonError::into_inner)
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
        static NEXT_SLOT_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let slot = Arc::new(Slot {
            id: NEXT_SLOT_ID.fetch_add(1, Ordering::Relaxed),
            filter,
            state: Mutex::new(SlotState {
                attach_requested: attach_from.is_some(),
                skip_below: attach_from.unwrap_or(0),
                ..SlotState::default()
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

    /// Marks every slot gone and wakes its subscriber.
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
    }
}

/// One matching event of a batch.
struct Dispatched {
    /// Moved to the last slot that queues it, cloned (as an `Arc`) for
    /// the others: when one subscriber alone holds the event, taking it
    /// as an owned event (`next_timeout`) copies nothing.
    event: Option<Arc<LoggedEvent>>,
    /// The slots that may still queue it.
    recipients_left: usize,
    /// Its seq (also once the event has been moved out).
    seq: u64,
    /// What it counts for in a queue.
    bytes: u64,
}

/// A batch read once for the attached slots.
#[derive(Default)]
struct Batch {
    events: Vec<Dispatched>,
    /// Per attached slot, the indexes into `events` it receives.
    per_slot: Vec<Vec<usize>>,
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
    fn align(&mut self, attached: &[Arc<Slot>]) {
        let same = self.slots.len() == attached.len()
            && self
                .slots
                .iter()
                .zip(attached)
                .all(|(&id, slot)| id == slot.id);
        if !same {
            self.slots = attached.iter().map(|slot| slot.id).collect();
            self.by_type.clear();
        }
    }

    fn slots_for(&mut self, event_type: &str, attached: &[Arc<Slot>]) -> &[u32] {
        if !self.by_type.contains_key(event_type) {
            if self.by_type.len() >= TYPE_CACHE_TYPES_MAX {
                self.by_type.clear();
            }
            let slots: Box<[u32]> = attached
                .iter()
                .enumerate()
                .filter(|(_, slot)| slot.filter.matches_type(event_type))
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
    // dispatcher work (a batch, a detach, a panic) keep it at normal
    // priority, so that a loaded test machine cannot starve them.
    if !cfg!(test) {
        crate::sys::make_this_thread_idle_class();
    }
    let dispatch = &shared.dispatch;
    let visible = crate::subscribe::visible_watermark(&shared.options);
    let queue_bytes_max = shared.options.subscription_queue_bytes;
    let mut attached: Vec<Arc<Slot>> = Vec::new();
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
        // The slots this batch goes to: attached ones, and those whose
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
                    state.coverage = Some((cursor, cursor - 1));
                }
                if state.attached {
                    attached.push(Arc::clone(slot));
                }
            }
        }
        if attached.is_empty() {
            dispatch.serving_from.store(0, Ordering::Relaxed);
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
        let batch_bytes_max = queue_bytes_max / 4;
        let read = read_batch(
            shared,
            cursor,
            end,
            &attached,
            &mut types,
            &mut batch,
            batch_bytes_max,
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
        for (slot, indexes) in attached.iter().zip(&batch.per_slot) {
            let mut state = slot.lock();
            if !state.attached {
                continue; // reset by its subscriber meanwhile
            }
            let mut through = end;
            for &i in indexes {
                let dispatched = &mut batch.events[i];
                dispatched.recipients_left -= 1;
                if dispatched.seq < state.skip_below {
                    continue;
                }
                if state.queued_bytes + dispatched.bytes > queue_bytes_max {
                    // Full: the coverage ends before this event, and the
                    // subscriber reads on from the log itself.
                    through = dispatched.seq - 1;
                    state.attached = false;
                    break;
                }
                let event = if dispatched.recipients_left == 0 {
                    dispatched.event.take()
                } else {
                    dispatched.event.clone()
                };
                let Some(event) = event else {
                    // Cannot happen (a slot lists an event once, so only
                    // its last recipient takes it); were it to, the
                    // coverage ends here and the subscriber reads the
                    // event from the log rather than miss it.
                    through = dispatched.seq - 1;
                    state.attached = false;
                    break;
                };
                state.queued_bytes += dispatched.bytes;
                state.queue.push_back((event, dispatched.bytes));
            }
            if let Some((_, covered)) = state.coverage.as_mut() {
                *covered = (*covered).max(through);
            }
            state.batches += 1;
            // A subscriber is woken for events or to read the log itself;
            // one whose coverage only grew has nothing to do yet.
            let wake = state.waiting && (!state.queue.is_empty() || !state.attached);
            drop(state);
            if wake {
                slot.changed.notify_all();
            }
        }
        batch.events.clear();
        cursor = end + 1;
        dispatch.serving_from.store(cursor, Ordering::Relaxed);
    }
    dispatch.release_all();
}

/// Reads `cursor..=end` once, decoding each event that some attached slot
/// wants, into `batch`; stops early once the decoded events count for
/// `bytes_max` (a quarter of a queue, so that a subscriber keeping up is
/// never detached by one large batch). Returns the last seq examined.
fn read_batch(
    shared: &Arc<Shared>,
    cursor: u64,
    end: u64,
    attached: &[Arc<Slot>],
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
    let mut wanted = |_seq: u64, body: &[u8]| {
        let fields = body_view(body)?;
        let mut matched = matched.borrow_mut();
        matched.clear();
        for &index in types.slots_for(fields.event_type, attached) {
            if attached[index as usize].filter.matches_besides_type(
                fields.entity,
                fields.correlation_id,
                fields.priority,
            ) {
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
        let at = batch.events.len();
        let recipients = matched.borrow();
        for &index in recipients.iter() {
            batch.per_slot[index as usize].push(at);
        }
        let bytes = body_bytes.get() + std::mem::size_of::<LoggedEvent>() as u64;
        batch.events.push(Dispatched {
            event: Some(Arc::new(event)),
            recipients_left: recipients.len(),
            seq,
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
