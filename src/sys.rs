//! The one operating-system call the crate makes outside the file system
//! and the mappings: lowering a background thread's CPU priority.

#![allow(unsafe_code)]

/// Lowers the calling thread's CPU priority (Linux's `SCHED_IDLE` policy,
/// and the lowest "nice" level), so that the scheduler gives it only the
/// CPU time that appending, reading and indexing threads leave idle. For the archiver: compressing a segment
/// takes a whole core for a while, and on a small machine that core is the
/// one the writer and the callers need; archiving is never urgent.
///
/// On Linux a nice value belongs to a thread (`setpriority` with the
/// thread's id); elsewhere this does nothing. Failure is harmless (the
/// thread keeps the normal priority) and only logged.
pub(crate) fn lower_this_thread_priority() {
    #[cfg(target_os = "linux")]
    {
        const LOWEST_NICE: libc::c_int = 19;
        // SAFETY: `gettid` has no preconditions; `sched_setscheduler` and
        // `setpriority` read their integer arguments and the parameter
        // struct we own for the duration of the call.
        let (idle, niced) = unsafe {
            let tid = libc::gettid();
            let param = libc::sched_param { sched_priority: 0 };
            // SCHED_IDLE: the thread runs only on CPU time no other thread
            // wants, and a waking writer preempts it at once (a low nice
            // value alone still lets it hold a core for a scheduler slice).
            let idle = libc::sched_setscheduler(tid, libc::SCHED_IDLE, &param);
            let niced = libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, LOWEST_NICE);
            (idle, niced)
        };
        if idle != 0 || niced != 0 {
            tracing::debug!(
                error = %std::io::Error::last_os_error(),
                "could not lower the archiver's priority"
            );
        }
    }
}
