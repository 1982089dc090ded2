//! The operating-system calls the crate makes outside `std` and the
//! mappings: lowering a background thread's CPU priority, and starting a
//! file range's writeback early.

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
                "could not lower a background thread's priority"
            );
        }
    }
}

/// Puts the calling thread in Linux's `SCHED_IDLE` class: it runs only
/// when no normal thread wants the CPU, and a waking normal thread takes
/// the CPU from it at once (a thread at nice 19 may keep it for up to a
/// scheduler tick first). For the subscription dispatcher, whose work can
/// always wait for appends. Elsewhere, or if the call fails, the thread
/// is only lowered to the lowest nice level.
pub(crate) fn make_this_thread_idle_class() {
    #[cfg(target_os = "linux")]
    {
        let param = libc::sched_param { sched_priority: 0 };
        // SAFETY: `sched_setscheduler` with pid 0 changes the calling
        // thread only, and reads `param`, which lives across the call.
        let result = unsafe { libc::sched_setscheduler(0, libc::SCHED_IDLE, &param) };
        if result == 0 {
            return;
        }
        tracing::debug!(
            error = %std::io::Error::last_os_error(),
            "could not put a background thread in SCHED_IDLE"
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
