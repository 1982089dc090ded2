//! Locking shared by the threads of a log.

use std::sync::{Mutex, MutexGuard, PoisonError};

/// Locks `mutex` even if a thread panicked while holding it. The callers'
/// critical sections only move whole values (push, take, swap a field),
/// so a panic elsewhere cannot leave the state half changed, and the
/// threads that share it (subscribers, the dispatcher, an archive's frame
/// helper, the rules engine) go on rather than panic in turn.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}
