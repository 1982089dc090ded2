//! The file operations the log uses, behind a trait, so that tests can run
//! the log on a simulated disk that fails chosen operations and loses
//! unsynced data on a simulated power cut. [`OsStorage`] is the real file
//! system; [`SimStorage`] is the simulation.
//!
//! Only what the log needs is here. Every method is a single system call
//! (or less) on the real file system, so the indirection costs one virtual
//! call per I/O.

use std::any::Any;
use std::io;
use std::path::Path;

mod os;
mod sim;

pub use crate::mmap::SharedMap;
pub(crate) use os::os_file;
pub use os::OsStorage;
pub use sim::{Fault, FaultKind, OpKind, SimStorage};

/// How to open a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpenMode {
    /// Existing file, read only.
    Read,
    /// Existing file, read and write.
    ReadWrite,
    /// Create if missing, keep contents, read and write.
    CreateOrOpen,
    /// Create if missing, truncate to zero, read and write.
    CreateTruncate,
}

/// An open file.
pub trait StorageFile: Send + Sync {
    /// Reads exactly `buf.len()` bytes at `offset`.
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()>;
    /// Writes all of `buf` at `offset`.
    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()>;
    /// Makes the file's data (and its size) durable.
    fn sync_data(&self) -> io::Result<()>;
    /// Asks the operating system to start writing `len` bytes at `offset`
    /// to the device now, without waiting: a hint that spreads a file's
    /// writeback over the time it is written, so that its final sync has
    /// little left to flush at once (and holds the device, and the file
    /// system's journal, for less time). Promises nothing about
    /// durability; storage without such a call does nothing.
    fn start_writeback(&self, _offset: u64, _len: u64) -> io::Result<()> {
        Ok(())
    }
    /// Makes the file's data and metadata durable.
    fn sync_all(&self) -> io::Result<()>;
    /// Sets the file size, cutting or extending with zeros.
    fn set_len(&self, len: u64) -> io::Result<()>;
    /// The file size in bytes.
    fn size_bytes(&self) -> io::Result<u64>;
    /// A read-only shared mapping of the first `len` bytes, if this storage
    /// supports mappings; readers fall back to `read_exact_at` otherwise.
    fn map_read_only(&self, len: u64) -> io::Result<Option<SharedMap>>;
    /// A writable shared mapping, if supported.
    fn map_read_write(&self, len: u64) -> io::Result<Option<SharedMap>>;
}

/// A file system.
pub trait Storage: Send + Sync {
    /// Opens (or, per `mode`, creates) a file.
    fn open(&self, path: &Path, mode: OpenMode) -> io::Result<Box<dyn StorageFile>>;
    /// Atomically replaces `to` with `from`.
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    /// Removes a file.
    fn remove_file(&self, path: &Path) -> io::Result<()>;
    /// Creates a directory and its missing parents.
    fn create_dir_all(&self, path: &Path) -> io::Result<()>;
    /// Makes the directory's entries (creations, renames, removals) durable.
    fn sync_dir(&self, path: &Path) -> io::Result<()>;
    /// Names of the entries of a directory.
    fn list_dir(&self, path: &Path) -> io::Result<Vec<String>>;
    /// Whether a file or directory exists at `path`.
    fn exists(&self, path: &Path) -> bool;
    /// Takes the exclusive lock on a data directory; the lock is held until
    /// the returned guard is dropped.
    fn lock_dir(&self, dir: &Path) -> crate::Result<Box<dyn Any + Send + Sync>>;
    /// Whether the secondary indexes may live beside the log. They sit in
    /// a store that does its own I/O on the real file system, which a
    /// simulated storage does not have: its logs answer queries by
    /// scanning.
    fn hosts_secondary_indexes(&self) -> bool {
        false
    }
}
