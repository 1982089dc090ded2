//! The crate's memory mappings, and with them almost all of its `unsafe`.
//!
//! A mapping may extend past the end of its file (so the active segment and
//! its index can grow without remapping); touching a page wholly past the
//! end would raise SIGBUS. The rule that keeps every access safe:
//! **callers only touch bytes below a length they know is inside the file,
//! and no file is ever cut below a length published to readers.** Segments
//! and indexes only ever lose bytes past their published length (zeroed
//! preallocation), and whole files are removed by unlinking, which leaves
//! existing mappings valid.
#![allow(unsafe_code)]

use std::fs::File;

use memmap2::{MmapOptions, MmapRaw};

/// A shared (`MAP_SHARED`) mapping of the first `len` bytes of a file.
/// Only evlog creates these; another `StorageFile` returns `None` instead.
pub struct SharedMap {
    map: MmapRaw,
}

impl SharedMap {
    pub(crate) fn read_only(file: &File, len: u64) -> std::io::Result<SharedMap> {
        let map = MmapOptions::new()
            .len(usize::try_from(len.max(1)).map_err(std::io::Error::other)?)
            .map_raw_read_only(file)?;
        Ok(SharedMap { map })
    }

    pub(crate) fn read_write(file: &File, len: u64) -> std::io::Result<SharedMap> {
        let map = MmapOptions::new()
            .len(usize::try_from(len.max(1)).map_err(std::io::Error::other)?)
            .map_raw(file)?;
        Ok(SharedMap { map })
    }

    pub(crate) fn len(&self) -> u64 {
        self.map.len() as u64
    }

    /// The bytes `[offset, offset + len)`, or `None` if the range is not
    /// inside the mapping.
    ///
    /// # Safety
    /// The range must lie inside the file, and no thread may write it while
    /// the returned slice lives (in evlog: it is below a published length).
    pub(crate) unsafe fn bytes(&self, offset: u64, len: u64) -> Option<&[u8]> {
        let end = offset.checked_add(len)?;
        if end > self.len() {
            return None;
        }
        // SAFETY: in bounds of the mapping (checked above); the caller
        // guarantees the pages are backed by the file and not being written.
        Some(unsafe {
            std::slice::from_raw_parts(self.map.as_ptr().add(offset as usize), len as usize)
        })
    }

    /// Writes `bytes` at `offset`.
    ///
    /// # Safety
    /// The mapping must be writable, the range inside the file, and no
    /// thread may read or write the range concurrently.
    pub(crate) unsafe fn write(&self, offset: u64, bytes: &[u8]) {
        let end = offset as usize + bytes.len();
        assert!(end <= self.map.len(), "write past the mapping");
        // SAFETY: in bounds (asserted); exclusivity and file backing are
        // the caller's guarantee.
        unsafe {
            std::ptr::copy_nonoverlapping(
                bytes.as_ptr(),
                self.map.as_mut_ptr().add(offset as usize),
                bytes.len(),
            )
        };
    }

    pub(crate) fn flush(&self) -> std::io::Result<()> {
        self.map.flush()
    }
}

/// Asks the CPU to start loading the cache line that holds `byte`, without
/// waiting for it: a query that knows which records it reads next overlaps
/// their cache and TLB misses with decoding the current one.
#[inline]
pub(crate) fn prefetch(byte: &u8) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch is a hint with no architectural effect: it cannot
    // fault or change memory, and `byte` is a valid reference anyway. The
    // `sse` feature it needs is part of the x86_64 baseline.
    unsafe {
        core::arch::x86_64::_mm_prefetch::<{ core::arch::x86_64::_MM_HINT_T0 }>(
            (byte as *const u8).cast(),
        );
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = byte;
}
