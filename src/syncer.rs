//! The `evlog:syncer` thread: under `Durability::Always` it syncs the
//! active segment and answers the callers, while the writer thread frames
//! and writes the next commit group.
//!
//! With the writer syncing inline, everything it does between two fsyncs
//! (the duplicate window, framing and checksums, the `pwrite`, the answers)
//! came on top of the disk's own time for every durable batch. Handed to
//! this thread, an fsync overlaps the writer's work on the next group, and
//! one fsync covers every group written while the one before it ran (group
//! commit across writes, not only within one).
//!
//! What must hold:
//! - an answer is sent only after an fsync that began after its records
//!   were written (`submit` comes after the `pwrite`);
//! - a handed-over group becomes readable (`last_seq`) and durable
//!   together, once synced, as a group the writer syncs itself does: no
//!   reader sees an event that a power cut could still take back; both
//!   positions only move forward;
//! - every job submitted is answered, also after a failed fsync or a
//!   panic in this thread (with the poisoning error) and when the writer
//!   stops (the queue is finished before the thread exits);
//! - all jobs waiting at one time belong to one segment: the writer
//!   settles the syncer before it rolls or syncs by itself.

use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::Sender;

use crate::error::{Error, Result};
use crate::log::Shared;
use crate::segment::Segment;

/// One commit group's answers, to send once it is durable.
pub(crate) struct SyncJob {
    /// The segment its records were written to.
    pub segment: Arc<Segment>,
    /// Its last sequence number: durable once the fsync returns.
    pub through_seq: u64,
    /// Each caller's answer, sent once `through_seq` is durable.
    pub answers: Vec<(Sender<Result<u64>>, Result<u64>)>,
    /// Makes the syncer thread panic on this job, to test poisoning.
    #[cfg(test)]
    pub panic: bool,
}

#[derive(Default)]
struct State {
    jobs: Vec<SyncJob>,
    /// A batch of jobs is being synced or answered.
    busy: bool,
    /// Highest sequence number this thread synced.
    synced_through: u64,
    /// The last fsync's duration and when it ended.
    last_sync: Option<(Duration, Instant)>,
    stop: bool,
    /// The thread panicked (the log is poisoned): jobs are answered with
    /// the poisoning error as they come, and nothing waits for it.
    dead: bool,
}

struct Inner {
    state: Mutex<State>,
    /// Signals both ways: a job came (or stop), a batch was finished.
    changed: Condvar,
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, State> {
        // The state is plain data that no panic leaves half-changed.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The writer's handle on the syncer thread; stopping it (also by drop,
/// when the writer unwinds) finishes the queue first.
pub(crate) struct Syncer {
    shared: Arc<Shared>,
    inner: Arc<Inner>,
    thread: Option<JoinHandle<()>>,
}

impl Syncer {
    /// Starts the thread; `durable_seq` is what is durable already.
    pub fn spawn(shared: Arc<Shared>, durable_seq: u64) -> Result<Syncer> {
        let inner = Arc::new(Inner {
            state: Mutex::new(State {
                synced_through: durable_seq,
                ..State::default()
            }),
            changed: Condvar::new(),
        });
        let thread_inner = Arc::clone(&inner);
        let thread_shared = Arc::clone(&shared);
        let dir = shared.dir.clone();
        let thread = std::thread::Builder::new()
            .name("evlog:syncer".into())
            .spawn(move || {
                let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    run(&shared, &thread_inner)
                }));
                if let Err(panic) = outcome {
                    // Like a panic in the writer: the log is poisoned and
                    // no caller waits forever on an answer that will not
                    // come.
                    let message = crate::subscribe::panic_message(&*panic);
                    shared.poison(Error::WriterPanicked(format!("evlog:syncer: {message}")));
                    let jobs = {
                        let mut state = thread_inner.lock();
                        state.dead = true;
                        state.busy = false;
                        std::mem::take(&mut state.jobs)
                    };
                    thread_inner.changed.notify_all();
                    answer_poisoned(&shared, jobs);
                }
            })
            .map_err(|e| Error::Io {
                path: dir,
                source: e,
            })?;
        Ok(Syncer {
            shared: thread_shared,
            inner,
            thread: Some(thread),
        })
    }

    /// Queues `job`: its records are written (not yet synced).
    pub fn submit(&self, job: SyncJob) {
        let mut state = self.inner.lock();
        if state.dead {
            drop(state);
            answer_poisoned(&self.shared, vec![job]);
            return;
        }
        state.jobs.push(job);
        drop(state);
        self.inner.changed.notify_all();
    }

    /// Waits until every job submitted is synced and answered; returns the
    /// highest sequence number synced (the log is poisoned if an fsync
    /// failed: the caller checks).
    pub fn settle(&self) -> u64 {
        let mut state = self.inner.lock();
        while !state.dead && (state.busy || !state.jobs.is_empty()) {
            state = self
                .inner
                .changed
                .wait(state)
                .unwrap_or_else(PoisonError::into_inner);
        }
        state.synced_through
    }

    /// Whether a job is waiting or being synced. Only the writer submits,
    /// so an idle syncer stays idle until the writer's next `submit`.
    pub fn is_busy(&self) -> bool {
        let state = self.inner.lock();
        state.busy || !state.jobs.is_empty()
    }

    /// How long this thread's last fsync took, and when it ended.
    pub fn last_sync(&self) -> Option<(Duration, Instant)> {
        self.inner.lock().last_sync
    }

    fn stop(&mut self) {
        self.inner.lock().stop = true;
        self.inner.changed.notify_all();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for Syncer {
    fn drop(&mut self) {
        self.stop();
    }
}

fn run(shared: &Shared, inner: &Inner) {
    loop {
        let (jobs, synced_through) = {
            let mut state = inner.lock();
            while state.jobs.is_empty() {
                if state.stop {
                    return;
                }
                state = inner
                    .changed
                    .wait(state)
                    .unwrap_or_else(PoisonError::into_inner);
            }
            state.busy = true;
            (std::mem::take(&mut state.jobs), state.synced_through)
        };
        #[cfg(test)]
        if jobs.iter().any(|job| job.panic) {
            // The jobs go back to the queue, as if taken by a thread that
            // panicked before answering; the handler answers them.
            inner.lock().jobs.extend(jobs);
            panic!("injected syncer panic");
        }
        let through_seq = jobs.iter().map(|job| job.through_seq).max().unwrap_or(0);
        let mut took = None;
        let outcome = if shared.is_poisoned() {
            Err(())
        } else if through_seq <= synced_through {
            Ok(())
        } else if let Some(job) = jobs.last() {
            let segment = &job.segment;
            let _span = tracing::trace_span!("evlog.fsync", through_seq).entered();
            let started = Instant::now();
            match segment.file.sync_data() {
                Ok(()) => {
                    took = Some(started.elapsed());
                    Ok(())
                }
                Err(e) => {
                    // After a failed fsync the kernel may have dropped the
                    // dirty pages: nothing written since can be trusted
                    // (fsyncgate), so the log is poisoned.
                    shared.poison(crate::error::io_error(&segment.path, e));
                    Err(())
                }
            }
        } else {
            Ok(())
        };
        let changed = match outcome {
            Ok(()) => {
                if let Some(took) = took {
                    shared.counters.note_fsync(took);
                }
                shared.marks.publish_synced_quietly(through_seq)
            }
            Err(()) => Default::default(),
        };
        for job in jobs {
            for (reply, answer) in job.answers {
                let answer = match outcome {
                    Ok(()) => answer,
                    Err(()) => Err(shared.poisoned_error()),
                };
                let _ = reply.send(answer);
            }
        }
        // Waiters (subscribers, the indexer) after the callers.
        shared.marks.wake(changed);
        let mut state = inner.lock();
        state.busy = false;
        if outcome.is_ok() {
            state.synced_through = state.synced_through.max(through_seq);
        }
        if let Some(took) = took {
            state.last_sync = Some((took, Instant::now()));
        }
        drop(state);
        inner.changed.notify_all();
    }
}

/// Answers every caller of `jobs` with the poisoning error.
fn answer_poisoned(shared: &Shared, jobs: Vec<SyncJob>) {
    for job in jobs {
        for (reply, _) in job.answers {
            let _ = reply.send(Err(shared.poisoned_error()));
        }
    }
}
