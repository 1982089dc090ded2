//! The clean-close marker: `segments/CLEAN`, written by a clean close and
//! vouching for the exact state of the active segment then, so that the
//! next open can skip scanning it (see FORMAT.md).
//!
//! ```text
//! 0   magic              8 bytes "EVLOGCLN"
//! 8   version            u32 (1)
//! 12  reserved           u32 (0)
//! 16  active_first_seq   u64  first_seq of the active segment
//! 24  last_seq           u64  highest sequence number in the log (0: empty)
//! 32  active_bytes       u64  length of the active segment file
//! 40  tail_offset        u64  offset of its last record (32 if it has none)
//! 48  tail_crc           u32  CRC-32 of bytes tail_offset..active_bytes
//! 52  index_entries_crc  u32  CRC-32 of the active index's entries
//! 56  reserved           u32 (0)
//! 60  marker_crc         u32  CRC-32 of bytes 0..60
//! ```

use std::path::{Path, PathBuf};

use crate::codec::{put_u32, put_u64, u32_at, u64_at};
use crate::error::{CorruptKind, Error, IoContext, Result};
use crate::fsutil::{sync_dir, write_file_durably};
use crate::storage::{OpenMode, Storage};

pub(crate) const MARKER_FILE_NAME: &str = "CLEAN";
const MARKER_MAGIC: &[u8; 8] = b"EVLOGCLN";
pub(crate) const MARKER_FORMAT_VERSION: u32 = 1;
pub(crate) const MARKER_BYTES: usize = 64;
const ACTIVE_FIRST_SEQ_AT: usize = 16;
const LAST_SEQ_AT: usize = 24;
const ACTIVE_BYTES_AT: usize = 32;
const TAIL_OFFSET_AT: usize = 40;
const TAIL_CRC_AT: usize = 48;
const INDEX_ENTRIES_CRC_AT: usize = 52;
const RESERVED_2_AT: usize = 56;
const MARKER_CRC_AT: usize = 60;
const _: () = assert!(MARKER_CRC_AT + 4 == MARKER_BYTES);

/// What a clean close vouches for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct CleanClose {
    pub active_first_seq: u64,
    pub last_seq: u64,
    pub active_bytes: u64,
    pub tail_offset: u64,
    pub tail_crc: u32,
    pub index_entries_crc: u32,
}

pub(crate) fn marker_path(segments_dir: &Path) -> PathBuf {
    segments_dir.join(MARKER_FILE_NAME)
}

impl CleanClose {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(MARKER_BYTES);
        out.extend_from_slice(MARKER_MAGIC);
        put_u32(&mut out, MARKER_FORMAT_VERSION);
        put_u32(&mut out, 0);
        put_u64(&mut out, self.active_first_seq);
        put_u64(&mut out, self.last_seq);
        put_u64(&mut out, self.active_bytes);
        put_u64(&mut out, self.tail_offset);
        put_u32(&mut out, self.tail_crc);
        put_u32(&mut out, self.index_entries_crc);
        put_u32(&mut out, 0);
        let crc = crc32fast::hash(&out);
        put_u32(&mut out, crc);
        out
    }

    /// Decodes a marker. Every field is checked that can be checked alone;
    /// the caller checks it against the files.
    pub fn decode(bytes: &[u8], path: &Path) -> Result<CleanClose> {
        let corrupt = |offset: usize, kind| Error::Corrupt {
            file: path.to_path_buf(),
            offset: offset as u64,
            kind,
        };
        if bytes.len() != MARKER_BYTES {
            return Err(corrupt(
                bytes.len().min(MARKER_BYTES),
                CorruptKind::Truncated,
            ));
        }
        if &bytes[..8] != MARKER_MAGIC {
            return Err(corrupt(0, CorruptKind::BadMagic));
        }
        if u32_at(bytes, MARKER_CRC_AT) != Some(crc32fast::hash(&bytes[..MARKER_CRC_AT])) {
            return Err(corrupt(MARKER_CRC_AT, CorruptKind::HeaderChecksum));
        }
        let version = u32_at(bytes, 8).unwrap_or(0);
        if version != MARKER_FORMAT_VERSION {
            return Err(Error::UnsupportedVersion {
                file: path.to_path_buf(),
                found: version,
                supported: MARKER_FORMAT_VERSION,
            });
        }
        if u32_at(bytes, 12) != Some(0) || u32_at(bytes, RESERVED_2_AT) != Some(0) {
            return Err(corrupt(
                12,
                CorruptKind::BadHeader("reserved field is not 0"),
            ));
        }
        let field = |at| u64_at(bytes, at).unwrap_or(0);
        let marker = CleanClose {
            active_first_seq: field(ACTIVE_FIRST_SEQ_AT),
            last_seq: field(LAST_SEQ_AT),
            active_bytes: field(ACTIVE_BYTES_AT),
            tail_offset: field(TAIL_OFFSET_AT),
            tail_crc: u32_at(bytes, TAIL_CRC_AT).unwrap_or(0),
            index_entries_crc: u32_at(bytes, INDEX_ENTRIES_CRC_AT).unwrap_or(0),
        };
        let seq_max = crate::segment::SEQ_MAX;
        let plausible = (1..=seq_max).contains(&marker.active_first_seq)
            && marker.last_seq <= seq_max
            && marker.last_seq + 1 >= marker.active_first_seq
            && marker.tail_offset >= crate::segment::SEGMENT_HEADER_BYTES
            && marker.tail_offset <= marker.active_bytes;
        if !plausible {
            return Err(corrupt(
                ACTIVE_FIRST_SEQ_AT,
                CorruptKind::BadHeader("clean-close marker fields are inconsistent"),
            ));
        }
        Ok(marker)
    }

    /// Writes the marker durably (temporary file, fsync, rename, fsync of
    /// the directory).
    pub fn write(&self, storage: &dyn Storage, segments_dir: &Path) -> Result<()> {
        write_file_durably(storage, &marker_path(segments_dir), &self.encode())
    }
}

/// Reads the marker, if there is one. A marker that does not decode is
/// reported (`Err`), so that the caller can say why it scans.
pub(crate) fn read(storage: &dyn Storage, segments_dir: &Path) -> Result<Option<CleanClose>> {
    let path = marker_path(segments_dir);
    if !storage.exists(&path) {
        return Ok(None);
    }
    let file = storage.open(&path, OpenMode::Read).at(&path)?;
    let len = file.size_bytes().at(&path)?;
    let mut bytes = vec![0u8; len.min(MARKER_BYTES as u64 + 1) as usize];
    file.read_exact_at(&mut bytes, 0).at(&path)?;
    CleanClose::decode(&bytes, &path).map(Some)
}

/// Removes the marker durably: done before anything changes the state it
/// vouches for.
pub(crate) fn remove(storage: &dyn Storage, segments_dir: &Path) -> Result<()> {
    let path = marker_path(segments_dir);
    if storage.exists(&path) {
        storage.remove_file(&path).at(&path)?;
        sync_dir(storage, segments_dir)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marker_round_trips_and_refuses_every_flipped_bit() {
        let marker = CleanClose {
            active_first_seq: 41,
            last_seq: 99,
            active_bytes: 12_345,
            tail_offset: 12_000,
            tail_crc: 0xDEAD_BEEF,
            index_entries_crc: 7,
        };
        let bytes = marker.encode();
        assert_eq!(bytes.len(), MARKER_BYTES);
        let path = Path::new("CLEAN");
        assert_eq!(CleanClose::decode(&bytes, path).unwrap(), marker);
        for bit in 0..bytes.len() * 8 {
            let mut damaged = bytes.clone();
            damaged[bit / 8] ^= 1 << (bit % 8);
            assert!(CleanClose::decode(&damaged, path).is_err(), "bit {bit}");
        }
        assert!(CleanClose::decode(&bytes[..63], path).is_err());
    }
}
