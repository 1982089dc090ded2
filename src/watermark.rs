//! The two positions every consumer of the log follows: the highest
//! published sequence number (`last_seq`: readable now) and the highest
//! durable one (`durable_seq`: synced to stable storage), with a way to
//! wait for either to pass a value without polling.
//!
//! The writer publishes with one atomic store per commit group and takes
//! the lock only when somebody waits, so an append pays nothing for waiters
//! that do not exist. The pairing that makes this safe: a waiter registers
//! (increments `waiters`) before it re-reads the position under the lock,
//! and the writer stores the position before it reads `waiters`; both are
//! `SeqCst`, so either the writer sees the waiter and notifies under the
//! lock, or the waiter sees the new position and does not sleep.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

/// Which position to wait for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Watermark {
    /// The highest sequence number readers can see ([`crate::Log::last_seq`]).
    Published,
    /// The highest sequence number known to be synced to stable storage
    /// ([`crate::Log::durable_seq`]).
    Durable,
}

/// How a wait ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WaitOutcome {
    /// The position reached at least the value waited for; this is it.
    Reached(u64),
    /// The timeout passed first; this is the position then.
    TimedOut(u64),
    /// The log was closed or poisoned while waiting; this is the position
    /// then. No further change will come.
    Stopped(u64),
}

/// Which positions a publish moved.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Changed {
    pub published: bool,
    pub durable: bool,
}

#[derive(Default)]
pub(crate) struct Watermarks {
    last_seq: AtomicU64,
    durable_seq: AtomicU64,
    waiters: AtomicUsize,
    /// Set when no position will change again (closed or poisoned).
    stopped: AtomicBool,
    lock: Mutex<()>,
    /// One condvar per position, so that a new written position does not
    /// wake those who wait for durability (subscribers under `Always`).
    published_changed: Condvar,
    durable_changed: Condvar,
}

impl Watermarks {
    pub fn new(last_seq: u64, durable_seq: u64) -> Watermarks {
        Watermarks {
            last_seq: AtomicU64::new(last_seq),
            durable_seq: AtomicU64::new(durable_seq),
            ..Watermarks::default()
        }
    }

    fn position(&self, which: Watermark) -> &AtomicU64 {
        match which {
            Watermark::Published => &self.last_seq,
            Watermark::Durable => &self.durable_seq,
        }
    }

    /// The current value of `which`.
    pub fn seq(&self, which: Watermark) -> u64 {
        self.position(which).load(Ordering::Acquire)
    }

    pub fn last_seq(&self) -> u64 {
        self.last_seq.load(Ordering::Acquire)
    }

    pub fn durable_seq(&self) -> u64 {
        self.durable_seq.load(Ordering::Acquire)
    }

    /// Publishes new positions (writer thread; they only grow) and wakes
    /// whoever waits.
    pub fn publish(&self, last_seq: u64, durable_seq: u64) {
        let changed = self.publish_quietly(last_seq, durable_seq);
        self.wake(changed);
    }

    /// Publishes new positions without waking anyone yet: the writer
    /// answers its callers first and wakes the waiters after
    /// ([`Watermarks::wake`] with what this returns), so an append does not
    /// pay for waking subscribers.
    pub fn publish_quietly(&self, last_seq: u64, durable_seq: u64) -> Changed {
        debug_assert!(durable_seq <= last_seq);
        let last_before = self.last_seq.swap(last_seq, Ordering::SeqCst);
        let durable_before = self.durable_seq.swap(durable_seq, Ordering::SeqCst);
        Changed {
            published: last_before != last_seq,
            durable: durable_before != durable_seq,
        }
    }

    /// Moves the durable position forward to `durable_seq` (never back:
    /// the syncer thread and the writer both publish it) without waking
    /// anyone; the caller wakes with the result.
    pub fn publish_durable_quietly(&self, durable_seq: u64) -> Changed {
        let before = self.durable_seq.fetch_max(durable_seq, Ordering::SeqCst);
        Changed {
            published: false,
            durable: before < durable_seq,
        }
    }

    /// Publishes `seq` as both readable and durable, never moving either
    /// back (the writer and the syncer thread both publish under
    /// `Durability::Always`); wakes nobody (the caller wakes with the
    /// result).
    pub fn publish_synced_quietly(&self, seq: u64) -> Changed {
        // Readable first: the durable position never names a record that
        // readers cannot read yet.
        let last_before = self.last_seq.fetch_max(seq, Ordering::SeqCst);
        let durable_before = self.durable_seq.fetch_max(seq, Ordering::SeqCst);
        Changed {
            published: last_before < seq,
            durable: durable_before < seq,
        }
    }

    /// Publishes a new durable position only.
    pub fn publish_durable(&self, durable_seq: u64) {
        let changed = self.publish_durable_quietly(durable_seq);
        self.wake(changed);
    }

    /// Whether [`Watermarks::stop`] was called (the log closed or was
    /// poisoned).
    pub fn is_stopped(&self) -> bool {
        self.stopped.load(Ordering::SeqCst)
    }

    /// No position will change again: wakes every waiter for good.
    pub fn stop(&self) {
        self.stopped.store(true, Ordering::SeqCst);
        self.wake(Changed {
            published: true,
            durable: true,
        });
    }

    /// Wakes the waiters of the positions that changed.
    pub fn wake(&self, changed: Changed) {
        if (changed.published || changed.durable) && self.waiters.load(Ordering::SeqCst) > 0 {
            let _guard = self
                .lock
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if changed.published {
                self.published_changed.notify_all();
            }
            if changed.durable {
                self.durable_changed.notify_all();
            }
        }
    }

    /// Waits until `which` is at least `target`, the timeout passes, or
    /// the log stops.
    pub fn wait(&self, which: Watermark, target: u64, timeout: Duration) -> WaitOutcome {
        static NEVER: AtomicBool = AtomicBool::new(false);
        self.wait_interruptible(which, target, timeout, &NEVER)
    }

    /// Like [`Self::wait`], also ending (as `TimedOut`) once `interrupt`
    /// is set and [`Self::wake`] called: a background thread's shutdown.
    pub fn wait_interruptible(
        &self,
        which: Watermark,
        target: u64,
        timeout: Duration,
        interrupt: &AtomicBool,
    ) -> WaitOutcome {
        let position = self.position(which);
        let now = position.load(Ordering::SeqCst);
        if now >= target {
            return WaitOutcome::Reached(now);
        }
        // A timeout too large for `Instant` means "no deadline".
        let deadline = Instant::now().checked_add(timeout);
        self.waiters.fetch_add(1, Ordering::SeqCst);
        let mut guard = self
            .lock
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let outcome = loop {
            let now = position.load(Ordering::SeqCst);
            if now >= target {
                break WaitOutcome::Reached(now);
            }
            if self.stopped.load(Ordering::SeqCst) {
                break WaitOutcome::Stopped(now);
            }
            if interrupt.load(Ordering::SeqCst) {
                break WaitOutcome::TimedOut(now);
            }
            let left = match deadline {
                Some(deadline) => match deadline.checked_duration_since(Instant::now()) {
                    Some(left) if !left.is_zero() => left,
                    _ => break WaitOutcome::TimedOut(now),
                },
                None => Duration::from_secs(3600),
            };
            let condvar = match which {
                Watermark::Published => &self.published_changed,
                Watermark::Durable => &self.durable_changed,
            };
            guard = condvar
                .wait_timeout(guard, left)
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .0;
        };
        drop(guard);
        self.waiters.fetch_sub(1, Ordering::SeqCst);
        outcome
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    // A waiter wakes as soon as the position passes its target, times out
    // when it does not, and is released for good by `stop`.
    #[test]
    fn watermark_wakes_times_out_and_stops() {
        let marks = Arc::new(Watermarks::new(0, 0));
        assert_eq!(
            marks.wait(Watermark::Published, 0, Duration::ZERO),
            WaitOutcome::Reached(0)
        );
        assert_eq!(
            marks.wait(Watermark::Durable, 1, Duration::from_millis(20)),
            WaitOutcome::TimedOut(0)
        );
        let waiter = {
            let marks = Arc::clone(&marks);
            std::thread::spawn(move || marks.wait(Watermark::Durable, 5, Duration::from_secs(60)))
        };
        while marks.waiters.load(Ordering::SeqCst) == 0 {
            std::thread::yield_now();
        }
        marks.publish(7, 3);
        marks.publish_durable(6);
        assert_eq!(waiter.join().unwrap(), WaitOutcome::Reached(6));
        let stopped = {
            let marks = Arc::clone(&marks);
            std::thread::spawn(move || marks.wait(Watermark::Published, 100, Duration::MAX))
        };
        while marks.waiters.load(Ordering::SeqCst) == 0 {
            std::thread::yield_now();
        }
        marks.stop();
        assert_eq!(stopped.join().unwrap(), WaitOutcome::Stopped(7));
    }
}
