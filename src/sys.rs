//! The one operating-system call the crate makes outside the file system
//! and the mappings: lowering a background thread's CPU priority.

#![allow(unsafe_code)]

/// Lowers the calling thread's CPU priority to the lowest "nice" level, so
/// that the scheduler gives it only the CPU time that appending, reading
/// and indexing threads leave idle. For the archiver: compressing a segment
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
        // SAFETY: `gettid` has no preconditions; `setpriority` only reads
        // its integer arguments. Neither touches memory we own.
        let result = unsafe {
            let tid = libc::gettid();
            libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, LOWEST_NICE)
        };
        if result != 0 {
            tracing::debug!(
                error = %std::io::Error::last_os_error(),
                "could not lower the archiver's priority"
            );
        }
    }
}
