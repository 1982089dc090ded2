//! The operating-system calls the crate makes outside `std` and the
//! mappings: lowering a background thread's CPU priority, and starting a
//! file range's writeback early.

#![allow(unsafe_code)]

/// Lowers the calling thread's CPU priority to the lowest "nice" level, so
/// that the scheduler gives it mostly the CPU time that appending, reading
/// and indexing threads leave idle, yet never starves it for good (as
/// `SCHED_IDLE` could on a busy machine). For the archiver (compressing a
/// segment takes a whole core for a while, and on a small machine that
/// core is the one the writer and the callers need; archiving is never
/// urgent) and the subscription dispatcher (delivery trails appends).
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
