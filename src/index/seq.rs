//! The memory-mapped sequence index: one file per segment, mapping
//! `seq - first_seq` to the byte offset of the record in the segment, so a
//! read by sequence number costs one array lookup and one `pread`.
//!
//! File layout (all integers little-endian, see FORMAT.md):
//!
//! ```text
//! 0   magic        8 bytes "EVLOGIDX"
//! 8   version      u32 (2)
//! 12  sealed       u32 (0 while the segment is active, 1 once sealed)
//! 16  first_seq    u64
//! 24  entries_crc  u32 (sealed: CRC-32 of all entries; active: 0)
//! 28  header_crc   u32 CRC-32 of bytes 0..28
//! 32  entries      u64 per record: its byte offset in the segment file
//! ```
//!
//! Concurrency: the writer thread only writes entries at positions >= the
//! published count and publishes a new count (Release) after writing them;
//! readers only read entries below a count they loaded (Acquire). Reader and
//! writer therefore never touch the same bytes at the same time.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::RwLock;

use crate::codec::{put_u32, put_u64, u32_at, u64_at};
use crate::error::{CorruptKind, Error, IoContext, Result};
use crate::mmap::SharedMap;
use crate::segment::Access;
use crate::storage::{OpenMode, Storage, StorageFile};

pub(crate) const INDEX_MAGIC: &[u8; 8] = b"EVLOGIDX";
/// Version 1 (no seal checksum) existed only during development.
pub(crate) const INDEX_FORMAT_VERSION: u32 = 2;
pub(crate) const INDEX_HEADER_BYTES: u64 = 32;
pub(crate) const INDEX_ENTRY_BYTES: u64 = 8;
const SEALED_AT: usize = 12;
const FIRST_SEQ_AT: usize = 16;
const ENTRIES_CRC_AT: usize = 24;
const HEADER_CRC_AT: usize = 28;
const _: () = assert!(HEADER_CRC_AT + 4 == INDEX_HEADER_BYTES as usize);
/// The index file of the active segment grows by this many entries at a
/// time (512 KiB), so that growth is rare and never on every append.
const GROWTH_ENTRIES: u64 = 64 * 1024;

/// The header of an index; `entries_crc` is `Some` for a sealed segment.
pub(crate) fn encode_index_header(first_seq: u64, entries_crc: Option<u32>) -> Vec<u8> {
    let mut out = Vec::with_capacity(INDEX_HEADER_BYTES as usize);
    out.extend_from_slice(INDEX_MAGIC);
    put_u32(&mut out, INDEX_FORMAT_VERSION);
    put_u32(&mut out, u32::from(entries_crc.is_some()));
    put_u64(&mut out, first_seq);
    put_u32(&mut out, entries_crc.unwrap_or(0));
    let crc = crc32fast::hash(&out);
    put_u32(&mut out, crc);
    out
}

/// A decoded index header.
pub(crate) struct IndexHeader {
    pub first_seq: u64,
    /// `Some` when the index belongs to a sealed segment.
    pub entries_crc: Option<u32>,
}

/// Checks an index header.
pub(crate) fn decode_index_header(bytes: &[u8], path: &Path) -> Result<IndexHeader> {
    let corrupt = |kind| Error::Corrupt {
        file: path.to_path_buf(),
        offset: 0,
        kind,
    };
    if bytes.len() < INDEX_HEADER_BYTES as usize {
        return Err(corrupt(CorruptKind::Truncated));
    }
    if &bytes[..8] != INDEX_MAGIC {
        return Err(corrupt(CorruptKind::BadMagic));
    }
    let stored_crc = u32_at(bytes, HEADER_CRC_AT).ok_or(corrupt(CorruptKind::Truncated))?;
    if crc32fast::hash(&bytes[..HEADER_CRC_AT]) != stored_crc {
        return Err(corrupt(CorruptKind::HeaderChecksum));
    }
    let version = u32_at(bytes, 8).ok_or(corrupt(CorruptKind::Truncated))?;
    if version != INDEX_FORMAT_VERSION {
        return Err(Error::UnsupportedVersion {
            file: path.to_path_buf(),
            found: version,
            supported: INDEX_FORMAT_VERSION,
        });
    }
    let first_seq = u64_at(bytes, FIRST_SEQ_AT).ok_or(corrupt(CorruptKind::Truncated))?;
    let entries_crc = u32_at(bytes, ENTRIES_CRC_AT).ok_or(corrupt(CorruptKind::Truncated))?;
    let entries_crc = match u32_at(bytes, SEALED_AT) {
        Some(0) => None,
        Some(1) => Some(entries_crc),
        _ => {
            return Err(corrupt(CorruptKind::BadHeader(
                "sealed flag is neither 0 nor 1",
            )))
        }
    };
    Ok(IndexHeader {
        first_seq,
        entries_crc,
    })
}

/// Where the entries are read from: a shared mapping of the file, or, on
/// storage that cannot map files, a copy in memory kept in step with the
/// file (every write goes to both).
enum Backing {
    Mapped(SharedMap),
    Buffered(RwLock<Vec<u8>>),
}

/// A sequence index file and its entries.
pub(crate) struct SeqIndex {
    path: PathBuf,
    /// `None` for an index held only in memory (a read-only view of the
    /// active segment, which must not write or map a file the writer of
    /// another process may replace).
    file: Option<Box<dyn StorageFile>>,
    backing: Backing,
    /// How many entries the backing covers (a mapping may extend past the
    /// end of the file; only entries inside the file are ever touched).
    capacity_entries: u64,
    /// How many entries the file currently has room for (allocated with
    /// real writes, so a store through the mapping never meets a hole).
    file_entries: AtomicU64,
    /// How many entries hold valid offsets. Written only by the writer.
    valid_entries: AtomicU64,
    writable: bool,
}

/// Zero bytes written at a time when the index file grows.
const ZERO_CHUNK_BYTES: usize = 64 * 1024;

/// Grows `file` from `from` to `to` bytes by writing zeros, so that every
/// byte up to `to` has real storage behind it: a store through a mapping
/// into a hole of a sparse file on a full disk raises SIGBUS, which no
/// `Result` can report, while a write here fails with ENOSPC.
pub(crate) fn allocate_with_zeros(
    file: &dyn StorageFile,
    from: u64,
    to: u64,
) -> std::io::Result<()> {
    let zeros = [0u8; ZERO_CHUNK_BYTES];
    let mut at = from;
    while at < to {
        let len = (to - at).min(ZERO_CHUNK_BYTES as u64);
        file.write_all_at(&zeros[..len as usize], at)?;
        at += len;
    }
    Ok(())
}

/// Entries per 4 KiB page: the smallest growth step when space is short.
const PAGE_ENTRIES: u64 = 4096 / INDEX_ENTRY_BYTES;

impl SeqIndex {
    /// Writes a fresh index for an active segment from `offsets` (possibly
    /// empty), replacing any file at `path`.
    pub fn create(
        storage: &dyn Storage,
        path: &Path,
        first_seq: u64,
        offsets: &[u64],
        capacity_entries: u64,
    ) -> Result<SeqIndex> {
        let capacity_entries = capacity_entries.max(offsets.len() as u64).max(1);
        let file = storage.open(path, OpenMode::CreateTruncate).at(path)?;
        let mut bytes = encode_index_header(first_seq, None);
        for &offset in offsets {
            put_u64(&mut bytes, offset);
        }
        file.write_all_at(&bytes, 0).at(path)?;
        let index = SeqIndex::writable(path, file, bytes, offsets.len() as u64, capacity_entries)?;
        index.reserve(GROWTH_ENTRIES.min(capacity_entries - offsets.len() as u64))?;
        Ok(index)
    }

    /// Opens the index of the active segment as a clean close left it:
    /// exactly `count` entries after the header, unsealed, matching
    /// `entries_crc`. An error means "rebuild this index". The writer
    /// continues with the file (mapped); a read-only view keeps a copy in
    /// memory, since another process's writer may grow or replace it.
    pub fn open_active_clean(
        storage: &dyn Storage,
        path: &Path,
        first_seq: u64,
        count: u64,
        entries_crc: u32,
        capacity_entries: u64,
        access: Access,
    ) -> Result<SeqIndex> {
        let mode = match access {
            Access::ReadWrite => OpenMode::ReadWrite,
            Access::ReadOnly | Access::Verify => OpenMode::Read,
        };
        let file = storage.open(path, mode).at(path)?;
        let corrupt = |offset, what| Error::Corrupt {
            file: path.to_path_buf(),
            offset,
            kind: CorruptKind::Index(what),
        };
        let exact_len = INDEX_HEADER_BYTES + count * INDEX_ENTRY_BYTES;
        if file.size_bytes().at(path)? != exact_len || count > capacity_entries {
            return Err(corrupt(0, "length differs from the clean-close marker"));
        }
        let mut bytes = vec![0u8; exact_len as usize];
        file.read_exact_at(&mut bytes, 0).at(path)?;
        let header = decode_index_header(&bytes, path)?;
        if header.first_seq != first_seq || header.entries_crc.is_some() {
            return Err(corrupt(0, "header differs from the active segment"));
        }
        if crc32fast::hash(&bytes[INDEX_HEADER_BYTES as usize..]) != entries_crc {
            return Err(corrupt(
                INDEX_HEADER_BYTES,
                "entries do not match the clean-close marker",
            ));
        }
        match access {
            Access::ReadWrite => SeqIndex::writable(path, file, bytes, count, capacity_entries),
            Access::ReadOnly | Access::Verify => {
                Ok(SeqIndex::in_memory_from_bytes(path, bytes, count))
            }
        }
    }

    /// An index the writer appends to: mapped where the storage maps
    /// files, else kept in memory beside the file. `bytes` are the file's
    /// current contents (header and `count` entries).
    fn writable(
        path: &Path,
        file: Box<dyn StorageFile>,
        bytes: Vec<u8>,
        count: u64,
        capacity_entries: u64,
    ) -> Result<SeqIndex> {
        let backing = match file
            .map_read_write(INDEX_HEADER_BYTES + capacity_entries * INDEX_ENTRY_BYTES)
            .at(path)?
        {
            Some(map) => Backing::Mapped(map),
            None => Backing::Buffered(RwLock::new(bytes)),
        };
        Ok(SeqIndex {
            path: path.to_path_buf(),
            file: Some(file),
            backing,
            capacity_entries,
            file_entries: AtomicU64::new(count),
            valid_entries: AtomicU64::new(count),
            writable: true,
        })
    }

    /// An index held only in memory, for a read-only view: nothing is
    /// written or mapped. `extend` adds entries as the view refreshes.
    pub fn in_memory(path: &Path, first_seq: u64, offsets: &[u64]) -> SeqIndex {
        let mut bytes = encode_index_header(first_seq, None);
        for &offset in offsets {
            put_u64(&mut bytes, offset);
        }
        SeqIndex::in_memory_from_bytes(path, bytes, offsets.len() as u64)
    }

    /// An in-memory index from an index file's bytes (header and `count`
    /// entries).
    fn in_memory_from_bytes(path: &Path, bytes: Vec<u8>, count: u64) -> SeqIndex {
        SeqIndex {
            path: path.to_path_buf(),
            file: None,
            backing: Backing::Buffered(RwLock::new(bytes)),
            capacity_entries: u64::MAX,
            file_entries: AtomicU64::new(u64::MAX),
            valid_entries: AtomicU64::new(count),
            writable: false,
        }
    }

    /// Adds entries to an in-memory index and publishes them.
    pub fn extend_in_memory(&self, offsets: &[u64]) {
        if let Backing::Buffered(copy) = &self.backing {
            if self.file.is_none() {
                let mut copy = copy
                    .write()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                for &offset in offsets {
                    put_u64(&mut copy, offset);
                }
                let count = self.valid_entries.load(Ordering::Relaxed) + offsets.len() as u64;
                self.valid_entries.store(count, Ordering::Release);
            }
        }
    }

    /// Opens the index of a sealed segment that must hold exactly
    /// `count` entries, trimming any preallocated tail first. Checks the
    /// header, the CRC of the entries recorded at seal time, and that the
    /// entries are strictly increasing from right after the segment header;
    /// the caller checks the last entry against the segment. An error means
    /// "rebuild this index".
    pub fn open_sealed(
        storage: &dyn Storage,
        path: &Path,
        first_seq: u64,
        count: u64,
        first_record_offset: u64,
    ) -> Result<SeqIndex> {
        let file = storage.open(path, OpenMode::Read).at(path)?;
        let file_len = file.size_bytes().at(path)?;
        let corrupt = |offset, what| Error::Corrupt {
            file: path.to_path_buf(),
            offset,
            kind: CorruptKind::Index(what),
        };
        let Some(exact_len) = count
            .checked_mul(INDEX_ENTRY_BYTES)
            .and_then(|entries| entries.checked_add(INDEX_HEADER_BYTES))
        else {
            return Err(corrupt(0, "entry count out of range"));
        };
        if file_len < exact_len {
            return Err(corrupt(file_len, "file is shorter than its entry count"));
        }
        // A longer file is an index whose seal was cut short by a crash
        // before its trim: the entries past `count` are zeros that no
        // reader looks at. It is left as it is (opening never writes).
        let mut header = [0u8; INDEX_HEADER_BYTES as usize];
        file.read_exact_at(&mut header, 0).at(path)?;
        let decoded = decode_index_header(&header, path)?;
        if decoded.first_seq != first_seq {
            return Err(corrupt(
                FIRST_SEQ_AT as u64,
                "first sequence differs from segment",
            ));
        }
        let Some(entries_crc) = decoded.entries_crc else {
            return Err(corrupt(SEALED_AT as u64, "not marked sealed"));
        };
        let backing = match file.map_read_only(exact_len).at(path)? {
            Some(map) => Backing::Mapped(map),
            None => {
                let mut bytes = vec![0u8; exact_len as usize];
                file.read_exact_at(&mut bytes, 0).at(path)?;
                Backing::Buffered(RwLock::new(bytes))
            }
        };
        let index = SeqIndex {
            path: path.to_path_buf(),
            file: Some(file),
            backing,
            capacity_entries: count,
            file_entries: AtomicU64::new(count),
            valid_entries: AtomicU64::new(count),
            writable: false,
        };
        let mut previous = 0u64;
        for i in 0..count {
            let offset = index.entry(i);
            let ok = if i == 0 {
                offset == first_record_offset
            } else {
                offset > previous
            };
            if !ok {
                return Err(corrupt(
                    INDEX_HEADER_BYTES + i * INDEX_ENTRY_BYTES,
                    "entries are not strictly increasing from the first record",
                ));
            }
            previous = offset;
        }
        if index.entries_crc() != entries_crc {
            return Err(corrupt(
                ENTRIES_CRC_AT as u64,
                "entries do not match the checksum recorded at seal",
            ));
        }
        Ok(index)
    }

    /// Calls `read` with the published bytes `[offset, offset + len)`.
    fn with_bytes<T>(&self, offset: u64, len: u64, read: impl FnOnce(&[u8]) -> T) -> Option<T> {
        match &self.backing {
            // SAFETY: callers only ask for the header (written by the writer
            // thread alone, which is also the only caller that reads it) or
            // for published entries, which lie inside the file (a file is
            // only ever cut to its published entries, never below them, and
            // allocated with real writes before entries are stored) and are
            // never written again.
            #[allow(unsafe_code)]
            Backing::Mapped(map) => unsafe { map.bytes(offset, len) }.map(read),
            Backing::Buffered(bytes) => {
                let bytes = bytes
                    .read()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                let end = usize::try_from(offset + len).ok()?;
                bytes.get(offset as usize..end).map(read)
            }
        }
    }

    /// Writes `bytes` at `offset` of the index. Writer thread only, and only
    /// at unpublished entries or the header.
    fn write_bytes(&self, offset: u64, bytes: &[u8]) -> Result<()> {
        let Some(file) = self.file.as_ref().filter(|_| self.writable) else {
            return Err(Error::Internal("write to a read-only sequence index"));
        };
        match &self.backing {
            // SAFETY: the mapping is writable, the range is inside the file
            // and allocated (callers reserve entries first, which writes
            // zeros), and no reader reads entries at or beyond
            // `valid_entries` until they are published.
            #[allow(unsafe_code)]
            Backing::Mapped(map) => unsafe { map.write(offset, bytes) },
            Backing::Buffered(copy) => {
                file.write_all_at(bytes, offset).at(&self.path)?;
                let mut copy = copy
                    .write()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                let end = offset as usize + bytes.len();
                if copy.len() < end {
                    copy.resize(end, 0);
                }
                copy[offset as usize..end].copy_from_slice(bytes);
            }
        }
        Ok(())
    }

    /// Number of published entries.
    /// Bytes of the index file on disk (0 for an index held in memory,
    /// or a file that cannot be measured): for the archiver's accounts.
    pub fn file_bytes(&self) -> u64 {
        self.file
            .as_ref()
            .and_then(|f| f.size_bytes().ok())
            .unwrap_or(0)
    }

    pub fn valid_count(&self) -> u64 {
        self.valid_entries.load(Ordering::Acquire)
    }

    /// Entry `i`. The caller guarantees `i` is below a published count.
    pub fn entry(&self, i: u64) -> u64 {
        assert!(i < self.valid_entries.load(Ordering::Acquire));
        self.with_bytes(
            INDEX_HEADER_BYTES + i * INDEX_ENTRY_BYTES,
            INDEX_ENTRY_BYTES,
            |b| crate::codec::u64_at(b, 0),
        )
        .flatten()
        .unwrap_or(0)
    }

    /// CRC-32 of the published entries.
    pub fn entries_crc(&self) -> u32 {
        let len = self.valid_count() * INDEX_ENTRY_BYTES;
        self.with_bytes(INDEX_HEADER_BYTES, len, crc32fast::hash)
            .unwrap_or(0)
    }

    /// Makes room for `count` more entries, growing the file if needed.
    /// Called by the writer before it writes the records, so that a full
    /// disk fails the append before any record is written.
    pub fn reserve(&self, count: u64) -> Result<bool> {
        let needed = self.valid_entries.load(Ordering::Relaxed) + count;
        if needed > self.capacity_entries {
            return Ok(false);
        }
        let file_entries = self.file_entries.load(Ordering::Relaxed);
        if needed > file_entries {
            let Some(file) = self.file.as_ref().filter(|_| self.writable) else {
                return Err(Error::Internal("reserve on a read-only sequence index"));
            };
            let bytes_at = |entries: u64| INDEX_HEADER_BYTES + entries * INDEX_ENTRY_BYTES;
            // Prefer a large step (growth stays rare); when the disk is too
            // full for it, take just the pages this append needs.
            let generous = (needed + GROWTH_ENTRIES).min(self.capacity_entries);
            let minimal = needed.div_ceil(PAGE_ENTRIES).saturating_mul(PAGE_ENTRIES);
            let minimal = minimal.min(self.capacity_entries).max(needed);
            let mut grown = generous;
            if let Err(e) = allocate_with_zeros(&**file, bytes_at(file_entries), bytes_at(generous))
            {
                if !crate::error::is_disk_full(&e) || minimal >= generous {
                    let _ = file.set_len(bytes_at(file_entries));
                    return Err(e).at(&self.path);
                }
                let _ = file.set_len(bytes_at(file_entries));
                if let Err(e) =
                    allocate_with_zeros(&**file, bytes_at(file_entries), bytes_at(minimal))
                {
                    let _ = file.set_len(bytes_at(file_entries));
                    return Err(e).at(&self.path);
                }
                grown = minimal;
            }
            self.file_entries.store(grown, Ordering::Relaxed);
        }
        Ok(true)
    }

    /// Writes the offsets of newly written records and publishes them.
    /// Writer thread only, after a successful `reserve`.
    pub fn push(&self, offsets: &[u64]) -> Result<()> {
        let start = self.valid_entries.load(Ordering::Relaxed);
        assert!(start + offsets.len() as u64 <= self.file_entries.load(Ordering::Relaxed));
        let mut bytes = Vec::with_capacity(offsets.len() * INDEX_ENTRY_BYTES as usize);
        for &offset in offsets {
            put_u64(&mut bytes, offset);
        }
        self.write_bytes(INDEX_HEADER_BYTES + start * INDEX_ENTRY_BYTES, &bytes)?;
        self.valid_entries
            .store(start + offsets.len() as u64, Ordering::Release);
        Ok(())
    }

    /// Marks the index sealed (records the CRC of its entries in the
    /// header) and flushes it. Writer thread only, once no more entries
    /// will be pushed.
    pub fn seal(&self, first_seq: u64) -> Result<()> {
        let header = encode_index_header(first_seq, Some(self.entries_crc()));
        self.write_bytes(0, &header)?;
        self.flush()
    }

    /// Makes the index durable (at seal and close).
    pub fn flush(&self) -> Result<()> {
        let Some(file) = self.file.as_ref().filter(|_| self.writable) else {
            return Ok(());
        };
        match &self.backing {
            Backing::Mapped(map) => map.flush().at(&self.path),
            Backing::Buffered(_) => file.sync_data().at(&self.path),
        }
    }

    /// Cuts the zeroed entries past the published ones and syncs the file.
    /// Writer thread only, once no more entries will be pushed (at seal and
    /// close). Safe while mapped: readers only touch the header and
    /// published entries, which stay inside the file.
    pub fn trim(&self) -> Result<()> {
        let Some(file) = self.file.as_ref().filter(|_| self.writable) else {
            return Ok(());
        };
        let len = INDEX_HEADER_BYTES + self.valid_count() * INDEX_ENTRY_BYTES;
        file.set_len(len).at(&self.path)?;
        self.file_entries
            .store(self.valid_count(), Ordering::Relaxed);
        file.sync_all().at(&self.path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::OsStorage;

    #[test]
    fn index_push_read_reopen_sealed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("1.idx");
        {
            let index = SeqIndex::create(&OsStorage, &path, 1, &[32], 1_000_000).unwrap();
            assert!(index.reserve(100_000).unwrap());
            let offsets: Vec<u64> = (1..100_000u64).map(|i| 32 + i * 60).collect();
            index.push(&offsets).unwrap();
            assert_eq!(index.entry(0), 32);
            assert_eq!(index.entry(99_999), 32 + 99_999 * 60);
            index.seal(1).unwrap();
            index.trim().unwrap();
        }
        assert_eq!(
            std::fs::metadata(&path).unwrap().len(),
            INDEX_HEADER_BYTES + 100_000 * 8
        );
        let sealed = SeqIndex::open_sealed(&OsStorage, &path, 1, 100_000, 32).unwrap();
        assert_eq!(sealed.entry(5), 32 + 5 * 60);
        assert!(SeqIndex::open_sealed(&OsStorage, &path, 2, 100_000, 32).is_err());
        assert!(SeqIndex::open_sealed(&OsStorage, &path, 1, 100_001, 32).is_err());
        drop(sealed);
        // A plausible but wrong entry (still increasing) fails the CRC.
        let mut bytes = std::fs::read(&path).unwrap();
        let at = (INDEX_HEADER_BYTES + 5 * 8) as usize;
        bytes[at] += 8;
        std::fs::write(&path, &bytes).unwrap();
        assert!(SeqIndex::open_sealed(&OsStorage, &path, 1, 100_000, 32).is_err());
    }

    #[test]
    fn reserve_refuses_past_capacity() {
        let dir = tempfile::tempdir().unwrap();
        let index = SeqIndex::create(&OsStorage, &dir.path().join("x.idx"), 1, &[], 10).unwrap();
        assert!(index.reserve(10).unwrap());
        assert!(!index.reserve(11).unwrap());
    }
}
