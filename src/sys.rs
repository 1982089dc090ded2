//! The operating-system calls the crate makes outside `std` and the
//! mappings: lowering a background thread's CPU priority (two strengths),
//! and starting a file range's writeback early.

#![allow(unsafe_code)]

/// Lowers the calling thread's CPU priority to the lowest "nice" level, so
/// that the scheduler gives it mostly the CPU time that appending, reading
/// and indexing threads leave idle, yet never starves it for good (as
/// `SCHED_IDLE` could on a busy machine). For the archiver (compressing a
/// segment takes a whole core for a while, and on a small machine that
/// core is the one the writer and the callers need; archiving is never
/// urgent, but nothing else does it if the archiver starves).
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
                "could not lower a background thread's priority"
            );
        }
    }
}

/// Puts the calling thread in the idle scheduling class (`SCHED_IDLE` on
/// Linux): it runs on a core nothing else wants, and any normal thread
/// that wakes up takes that core from it at once and is placed on it as
/// if the core were idle. For the subscription dispatcher, whose work
/// follows each commit: at nice 19 the scheduler could let it finish a
/// time slice before a caller, the writer or the syncer woken on its core
/// got the core back, and on two cores those waits came out of the
/// appends.
///
/// A busy machine can starve such a thread for as long as it stays busy;
/// only a thread whose work others can take over may use it (a
/// subscriber that waits a second for the dispatcher reads the log
/// itself). Not undoable without privileges. Falls back to
/// [`lower_this_thread_priority`] where the class is missing or refused.
pub(crate) fn make_this_thread_idle_class() {
    #[cfg(target_os = "linux")]
    {
        let param = libc::sched_param { sched_priority: 0 };
        // SAFETY: pid 0 is the calling thread; `param` is a valid
        // `sched_param` that the call only reads.
        let result = unsafe { libc::sched_setscheduler(0, libc::SCHED_IDLE, &param) };
        if result == 0 {
            return;
        }
        tracing::debug!(
            error = %std::io::Error::last_os_error(),
            "no idle scheduling class for a background thread; lowering its nice value instead"
        );
    }
    lower_this_thread_priority();
}

/// Starts writeback of `len` bytes of `file` at `offset` without waiting
/// (`sync_file_range` with `SYNC_FILE_RANGE_WRITE` on Linux; nothing
/// elsewhere). For the archiver: an archive written in one go and synced
/// at the end makes that sync flush megabytes at once, and the log's own
/// fdatasyncs wait behind it on the same device; started frame by frame,
/// the writeback trickles out while the archive is written.
pub(crate) fn start_writeback(file: &std::fs::File, offset: u64, len: u64) -> std::io::Result<()> {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        let (Ok(offset), Ok(len)) = (
            libc::off64_t::try_from(offset),
            libc::off64_t::try_from(len),
        ) else {
            return Ok(()); // beyond what the call takes: only a hint is lost
        };
        // SAFETY: `sync_file_range` reads its integer arguments only, and
        // the descriptor stays open for the call (borrowed from `file`).
        let result = unsafe {
            libc::sync_file_range(file.as_raw_fd(), offset, len, libc::SYNC_FILE_RANGE_WRITE)
        };
        if result != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = (file, offset, len);
    Ok(())
}
