//! Segment files: a header, then records, in sequence order.
//!
//! ```text
//! 0   magic        8 bytes "EVLOGSEG"
//! 8   version      u32 (2)
//! 12  header_bytes u32 (32)
//! 16  first_seq    u64
//! 24  reserved     u32 (0)
//! 28  header_crc   u32 CRC-32 of bytes 0..28
//! 32  records...   then, in the active segment, zeros up to the file end
//! ```
//!
//! Only the writer appends, and only to the last (active) segment. A sealed
//! segment is never written again; it is trimmed to its last record at seal
//! time, which is safe because segments are read with `pread`, never mapped.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::codec::{put_u32, put_u64, u32_at, u64_at};
use crate::error::{CorruptKind, Error, IoContext, Result};
use crate::event::LoggedEvent;
use crate::fsutil::write_file_durably;
use crate::index::seq::{encode_index_header, SeqIndex};
use crate::mmap::SharedMap;
use crate::record::{
    check_header, decode_body, parse_header, verify_record, RecordHeader, RECORD_BYTES_MIN,
    RECORD_HEADER_BYTES,
};
use crate::storage::{OpenMode, Storage, StorageFile};

pub(crate) const SEGMENT_MAGIC: &[u8; 8] = b"EVLOGSEG";
/// Version 1 (group_index/group_count in the record header) existed only
/// during development and was never released; it is refused.
pub(crate) const SEGMENT_FORMAT_VERSION: u32 = 2;
pub(crate) const SEGMENT_HEADER_BYTES: u64 = 32;
const HEADER_BYTES_AT: usize = 12;
const FIRST_SEQ_AT: usize = 16;
const RESERVED_AT: usize = 24;
const HEADER_CRC_AT: usize = 28;
const _: () = assert!(HEADER_CRC_AT + 4 == SEGMENT_HEADER_BYTES as usize);
/// Sequential reads fetch this much at a time: large enough to amortize the
/// system call, small enough to stay in L2.
const READ_CHUNK_BYTES: usize = 256 * 1024;

/// Highest sequence number a header or file name may carry. Far beyond
/// any real log (2^62 events), and low enough that sequence arithmetic
/// (`first + count`, `seq + 1`) on values read from disk cannot overflow.
pub(crate) const SEQ_MAX: u64 = 1 << 62;

pub(crate) const SEGMENT_SUFFIX: &str = ".seg";
pub(crate) const INDEX_SUFFIX: &str = ".idx";

pub(crate) fn segment_file_name(first_seq: u64) -> String {
    format!("{first_seq:020}{SEGMENT_SUFFIX}")
}

pub(crate) fn index_file_name(first_seq: u64) -> String {
    format!("{first_seq:020}{INDEX_SUFFIX}")
}

/// The first sequence number encoded in a segment or index file name.
pub(crate) fn parse_file_name(name: &str, suffix: &str) -> Option<u64> {
    let digits = name.strip_suffix(suffix)?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

pub(crate) fn encode_segment_header(first_seq: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(SEGMENT_HEADER_BYTES as usize);
    out.extend_from_slice(SEGMENT_MAGIC);
    put_u32(&mut out, SEGMENT_FORMAT_VERSION);
    put_u32(&mut out, SEGMENT_HEADER_BYTES as u32);
    put_u64(&mut out, first_seq);
    put_u32(&mut out, 0);
    let crc = crc32fast::hash(&out);
    put_u32(&mut out, crc);
    out
}

/// Checks a segment header and returns its first sequence number.
pub(crate) fn decode_segment_header(bytes: &[u8], path: &Path) -> Result<u64> {
    let corrupt = |offset, kind| Error::Corrupt {
        file: path.to_path_buf(),
        offset,
        kind,
    };
    if bytes.len() < SEGMENT_HEADER_BYTES as usize {
        return Err(corrupt(bytes.len() as u64, CorruptKind::Truncated));
    }
    if &bytes[..8] != SEGMENT_MAGIC {
        return Err(corrupt(0, CorruptKind::BadMagic));
    }
    let stored_crc = u32_at(bytes, HEADER_CRC_AT).unwrap_or(0);
    if crc32fast::hash(&bytes[..HEADER_CRC_AT]) != stored_crc {
        return Err(corrupt(HEADER_CRC_AT as u64, CorruptKind::HeaderChecksum));
    }
    let version = u32_at(bytes, 8).unwrap_or(0);
    if version != SEGMENT_FORMAT_VERSION {
        return Err(Error::UnsupportedVersion {
            file: path.to_path_buf(),
            found: version,
            supported: SEGMENT_FORMAT_VERSION,
        });
    }
    if u32_at(bytes, HEADER_BYTES_AT) != Some(SEGMENT_HEADER_BYTES as u32) {
        return Err(corrupt(
            HEADER_BYTES_AT as u64,
            CorruptKind::BadHeader("header_bytes is not 32"),
        ));
    }
    if u32_at(bytes, RESERVED_AT) != Some(0) {
        return Err(corrupt(
            RESERVED_AT as u64,
            CorruptKind::BadHeader("reserved field is not 0"),
        ));
    }
    let first_seq = u64_at(bytes, FIRST_SEQ_AT).unwrap_or(0);
    if first_seq == 0 || first_seq > SEQ_MAX {
        return Err(corrupt(
            FIRST_SEQ_AT as u64,
            CorruptKind::BadHeader("first_seq is 0 or out of range"),
        ));
    }
    Ok(first_seq)
}

/// Reads and checks the header of an open segment file.
pub(crate) fn read_segment_header(file: &dyn StorageFile, path: &Path) -> Result<u64> {
    let mut header = [0u8; SEGMENT_HEADER_BYTES as usize];
    let file_len = file.size_bytes().at(path)?;
    if file_len < SEGMENT_HEADER_BYTES {
        return Err(Error::Corrupt {
            file: path.to_path_buf(),
            offset: file_len,
            kind: CorruptKind::Truncated,
        });
    }
    file.read_exact_at(&mut header, 0).at(path)?;
    decode_segment_header(&header, path)
}

/// Opens a segment file and checks that its header names `first_seq`;
/// returns the file and its length.
fn open_segment_file(
    storage: &dyn Storage,
    path: &Path,
    mode: OpenMode,
    first_seq: u64,
) -> Result<(Box<dyn StorageFile>, u64)> {
    let file = storage.open(path, mode).at(path)?;
    if read_segment_header(&*file, path)? != first_seq {
        return Err(Error::Corrupt {
            file: path.to_path_buf(),
            offset: FIRST_SEQ_AT as u64,
            kind: CorruptKind::BadHeader("first_seq differs from the file name"),
        });
    }
    let file_len = file.size_bytes().at(path)?;
    Ok((file, file_len))
}

/// One step of a sequential scan.
pub(crate) enum Step<'a> {
    /// A record whose header is plausible and whose CRC matches.
    Record {
        offset: u64,
        header: RecordHeader,
        bytes: &'a [u8],
    },
    /// The scan reached its end bound, or a zeroed header (preallocated
    /// space) at `offset`.
    End { offset: u64 },
    /// Something at `offset` is not a valid record.
    Invalid { offset: u64, kind: CorruptKind },
}

/// Where a cursor reads from: the file (recovery, dump) or a mapping of
/// the segment's first `end` bytes (readers of an open log).
#[derive(Clone, Copy)]
pub(crate) enum Source<'a> {
    File(&'a dyn StorageFile),
    Mapped(&'a [u8]),
}

/// Reads records one after another, from a mapping or in large chunks from
/// the file. Owns no file, so an iterator can keep one next to the segment
/// it reads.
pub(crate) struct Cursor {
    pos: u64,
    end: u64,
    buf: Vec<u8>,
    buf_start: u64,
    record_bytes_max: u64,
    /// Length of the record last returned; the next call moves past it
    /// (the returned slice borrows the cursor, so it cannot move earlier).
    pending_advance: u64,
}

impl Cursor {
    pub fn new(pos: u64, end: u64, record_bytes_max: u64) -> Cursor {
        Cursor {
            pos,
            end,
            buf: Vec::new(),
            buf_start: pos,
            record_bytes_max,
            pending_advance: 0,
        }
    }

    /// Makes up to `need` bytes from `pos` available (clamped to `end`) and
    /// returns how many are.
    fn ensure(&mut self, source: Source<'_>, need: u64) -> std::io::Result<u64> {
        let want = need.min(self.end - self.pos);
        match source {
            Source::Mapped(region) => Ok(want.min((region.len() as u64).saturating_sub(self.pos))),
            Source::File(file) => {
                let have_end = self.buf_start + self.buf.len() as u64;
                if self.pos >= self.buf_start && self.pos + want <= have_end {
                    return Ok(want);
                }
                let read_len = want.max(READ_CHUNK_BYTES as u64).min(self.end - self.pos);
                self.buf.resize(read_len as usize, 0);
                file.read_exact_at(&mut self.buf, self.pos)?;
                self.buf_start = self.pos;
                Ok(want)
            }
        }
    }

    /// `len` bytes from `pos`, which `ensure` made available.
    fn view<'v>(&'v self, source: Source<'v>, len: u64) -> &'v [u8] {
        match source {
            Source::Mapped(region) => &region[self.pos as usize..(self.pos + len) as usize],
            Source::File(_) => {
                let rel = (self.pos - self.buf_start) as usize;
                &self.buf[rel..rel + len as usize]
            }
        }
    }

    /// The next step. I/O errors are returned as `Err`; damage is a step.
    pub fn next_step<'s>(&'s mut self, source: Source<'s>) -> std::io::Result<Step<'s>> {
        self.pos += std::mem::take(&mut self.pending_advance);
        let offset = self.pos;
        if offset >= self.end {
            return Ok(Step::End { offset });
        }
        let available = self.ensure(source, RECORD_HEADER_BYTES as u64)?;
        if available < RECORD_HEADER_BYTES as u64 {
            let rest_is_zero = self.view(source, available).iter().all(|&b| b == 0);
            return Ok(if rest_is_zero {
                Step::End { offset }
            } else {
                Step::Invalid {
                    offset,
                    kind: CorruptKind::Truncated,
                }
            });
        }
        let header_bytes = self.view(source, RECORD_HEADER_BYTES as u64);
        if header_bytes.iter().all(|&b| b == 0) {
            return Ok(Step::End { offset });
        }
        let Some(header) = parse_header(header_bytes) else {
            return Ok(Step::Invalid {
                offset,
                kind: CorruptKind::Truncated,
            });
        };
        if let Err(kind) = check_header(&header, self.record_bytes_max) {
            return Ok(Step::Invalid { offset, kind });
        }
        let record_bytes = header.record_bytes();
        if self.ensure(source, record_bytes)? < record_bytes {
            return Ok(Step::Invalid {
                offset,
                kind: CorruptKind::Truncated,
            });
        }
        if let Err(kind) = verify_record(self.view(source, record_bytes), self.record_bytes_max) {
            return Ok(Step::Invalid { offset, kind });
        }
        self.pending_advance = record_bytes;
        let bytes = self.view(source, record_bytes);
        Ok(Step::Record {
            offset,
            header,
            bytes,
        })
    }
}

/// A segment file with its sequence index, shared by the writer and readers.
pub(crate) struct Segment {
    pub first_seq: u64,
    pub path: PathBuf,
    pub file: Box<dyn StorageFile>,
    pub index: SeqIndex,
    /// Read-only mapping used by readers (when the storage maps files); may
    /// extend past the file's end.
    map: Option<SharedMap>,
    /// End of the last committed record; readers never look past it.
    committed_bytes: AtomicU64,
}

/// What opening a sealed segment found.
#[derive(Debug, Default)]
pub(crate) struct SealedOpen {
    pub index_rebuilt: bool,
    /// Damage in the segment (offset, what), opened anyway because its
    /// index is intact.
    pub damage: Option<(u64, CorruptKind)>,
}

/// What recovery found in the active segment.
#[derive(Debug, Default, Clone)]
pub(crate) struct TailRepair {
    /// Bytes after the last complete commit group that were not zeros.
    pub dropped_bytes: u64,
    /// Valid records cut with the tail: an incomplete commit group, or
    /// groups written after an unsynced hole.
    pub dropped_records: u64,
}

impl Segment {
    pub fn committed_bytes(&self) -> u64 {
        self.committed_bytes.load(Ordering::Acquire)
    }

    /// Number of records published in this segment.
    pub fn record_count(&self) -> u64 {
        self.index.valid_count()
    }

    /// Called by the writer after the index entries are pushed.
    pub fn publish(&self, committed_bytes: u64) {
        self.committed_bytes
            .store(committed_bytes, Ordering::Release);
    }

    fn corrupt(&self, offset: u64, kind: CorruptKind) -> Error {
        Error::Corrupt {
            file: self.path.clone(),
            offset,
            kind,
        }
    }

    /// How readers should read the first `end` bytes: through the mapping
    /// when it covers them, else with `pread`. `end` must not exceed the
    /// committed length.
    pub fn source(&self, end: u64) -> Source<'_> {
        debug_assert!(end <= self.committed_bytes());
        // SAFETY: `[0, end)` is below the committed length, which is inside
        // the file (files are never cut below it) and is never rewritten.
        #[allow(unsafe_code)]
        match self
            .map
            .as_ref()
            .and_then(|map| unsafe { map.bytes(0, end) })
        {
            Some(region) => Source::Mapped(region),
            None => Source::File(&*self.file),
        }
    }

    /// Reads the record of `seq`, which the caller knows is published here.
    pub fn read_event(&self, seq: u64, record_bytes_max: u64) -> Result<LoggedEvent> {
        let i = seq - self.first_seq;
        let offset = self.index.entry(i);
        // Any later published offset, or the committed end, bounds the record.
        let end = if i + 1 < self.index.valid_count() {
            self.index.entry(i + 1)
        } else {
            self.committed_bytes()
        };
        if end > self.committed_bytes() {
            // The index (checked when opened) places the record past the end
            // of the segment: the segment lost bytes.
            return Err(self.corrupt(offset, CorruptKind::Truncated));
        }
        if end <= offset + RECORD_HEADER_BYTES as u64 {
            return Err(self.corrupt(offset, CorruptKind::Index("entry out of order")));
        }
        let mut cursor = Cursor::new(offset, end, record_bytes_max);
        let step = cursor.next_step(self.source(end)).at(&self.path)?;
        match step {
            Step::Record { header, bytes, .. } if header.seq == seq => {
                decode_body(seq, &bytes[RECORD_HEADER_BYTES..])
                    .map_err(|kind| self.corrupt(offset + RECORD_HEADER_BYTES as u64, kind))
            }
            Step::Record { header, .. } => Err(self.corrupt(
                offset,
                CorruptKind::Sequence {
                    expected: seq,
                    found: header.seq,
                },
            )),
            Step::End { .. } => {
                // Zeros where the index says a record starts: the segment
                // was zeroed there.
                Err(self.corrupt(offset, CorruptKind::RecordLength(0)))
            }
            Step::Invalid { kind, .. } => Err(self.corrupt(offset, kind)),
        }
    }

    /// Creates a new empty segment durably (temp file, fsync, rename, fsync
    /// of the directory), with an empty index.
    pub fn create(
        storage: &dyn Storage,
        dir: &Path,
        first_seq: u64,
        index_capacity: u64,
        map_bytes: u64,
    ) -> Result<Segment> {
        let path = dir.join(segment_file_name(first_seq));
        write_file_durably(storage, &path, &encode_segment_header(first_seq))?;
        let file = storage.open(&path, OpenMode::ReadWrite).at(&path)?;
        let index = SeqIndex::create(
            storage,
            &dir.join(index_file_name(first_seq)),
            first_seq,
            &[],
            index_capacity,
        )?;
        let map = file.map_read_only(map_bytes).at(&path)?;
        Ok(Segment {
            first_seq,
            path,
            file,
            index,
            map,
            committed_bytes: AtomicU64::new(SEGMENT_HEADER_BYTES),
        })
    }

    /// Opens a sealed segment holding exactly `count` records.
    ///
    /// Its index is trusted when its entries match the checksum recorded at
    /// seal time and its last entry points at a record (header checked, not
    /// the body: a damaged body is reported when read, not here) that ends
    /// the file. Otherwise a scan decides: if the segment is intact, the
    /// index is rebuilt from it; if the segment is damaged and the index
    /// passed its checksum, the index is kept, so that only the damaged
    /// records fail to read. Only damage with no trustworthy index fails
    /// the open.
    pub fn open_sealed(
        storage: &dyn Storage,
        path: &Path,
        first_seq: u64,
        count: u64,
        record_bytes_max: u64,
    ) -> Result<(Segment, SealedOpen)> {
        let (file, file_len) = open_segment_file(storage, path, OpenMode::Read, first_seq)?;
        let index_path = path.with_extension(&INDEX_SUFFIX[1..]);
        // A file can hold at most this many records; a larger count means
        // the segments that should follow it are missing, which the scan
        // below reports.
        let count_possible = count <= file_len / RECORD_BYTES_MIN as u64;
        let checked_index = match SeqIndex::open_sealed(
            storage,
            &index_path,
            first_seq,
            count,
            SEGMENT_HEADER_BYTES,
        ) {
            Ok(index) if count_possible => Some(index),
            Ok(_) => None,
            Err(e) => {
                tracing::warn!(index = %index_path.display(), error = %e, "sequence index failed its checks");
                None
            }
        };
        let last_seq = first_seq + count - 1;
        if let Some(index) = &checked_index {
            if last_record_ends_file(
                &*file,
                path,
                index.entry(count - 1),
                last_seq,
                file_len,
                record_bytes_max,
            )? {
                let index = checked_index.ok_or(Error::Closed)?;
                let segment = Segment::sealed(path, first_seq, file, index, file_len)?;
                return Ok((segment, SealedOpen::default()));
            }
        }
        let scan = scan_records(&*file, path, first_seq, file_len, record_bytes_max)?;
        let intact =
            scan.stopped_by.is_none() && scan.offsets.len() as u64 == count && scan.end == file_len;
        if !intact {
            if let Some(index) = checked_index {
                let (offset, kind) = scan
                    .stopped_by
                    .unwrap_or((scan.end, CorruptKind::Truncated));
                tracing::error!(file = %path.display(), offset, %kind, "sealed segment is damaged; its index is intact, so only the damaged records will fail to read");
                let segment = Segment::sealed(path, first_seq, file, index, file_len)?;
                let report = SealedOpen {
                    index_rebuilt: false,
                    damage: Some((offset, kind)),
                };
                return Ok((segment, report));
            }
            let found = first_seq + scan.offsets.len() as u64;
            if scan.stopped_by.is_none() && scan.end == file_len && found < first_seq + count {
                // Every record here is intact and the file ends cleanly:
                // the segment files that held `found..` are missing.
                let next = first_seq + count;
                return Err(Error::Corrupt {
                    file: path.with_file_name(segment_file_name(next)),
                    offset: FIRST_SEQ_AT as u64,
                    kind: CorruptKind::Gap {
                        expected: found,
                        found: next,
                    },
                });
            }
            let (offset, kind) = scan.stopped_by.unwrap_or((
                scan.end,
                CorruptKind::Gap {
                    expected: first_seq + count,
                    found: first_seq + scan.offsets.len() as u64,
                },
            ));
            return Err(Error::Corrupt {
                file: path.to_path_buf(),
                offset,
                kind,
            });
        }
        tracing::warn!(index = %index_path.display(), records = count, "rebuilt the sequence index from the segment");
        let mut entries = Vec::with_capacity(scan.offsets.len() * 8);
        for offset in &scan.offsets {
            put_u64(&mut entries, *offset);
        }
        let mut bytes = encode_index_header(first_seq, Some(crc32fast::hash(&entries)));
        bytes.extend_from_slice(&entries);
        write_file_durably(storage, &index_path, &bytes)?;
        let index =
            SeqIndex::open_sealed(storage, &index_path, first_seq, count, SEGMENT_HEADER_BYTES)?;
        let segment = Segment::sealed(path, first_seq, file, index, file_len)?;
        let report = SealedOpen {
            index_rebuilt: true,
            damage: None,
        };
        Ok((segment, report))
    }

    fn sealed(
        path: &Path,
        first_seq: u64,
        file: Box<dyn StorageFile>,
        index: SeqIndex,
        file_len: u64,
    ) -> Result<Segment> {
        // Readers stop at the end of the last record, not at the end of the
        // file: bytes appended to a sealed segment are not records.
        let last_offset = index.entry(index.valid_count().saturating_sub(1));
        let mut header = [0u8; RECORD_HEADER_BYTES];
        let records_end = match file.read_exact_at(&mut header, last_offset) {
            Ok(()) => parse_header(&header)
                .map_or(file_len, |h| (last_offset + h.record_bytes()).min(file_len)),
            Err(_) => file_len,
        };
        let map = file.map_read_only(file_len).at(path)?;
        Ok(Segment {
            first_seq,
            path: path.to_path_buf(),
            file,
            index,
            map,
            committed_bytes: AtomicU64::new(records_end),
        })
    }

    /// Opens the last segment after a clean or unclean shutdown: scans every
    /// record, keeps complete commit groups, cuts a torn unsynced tail,
    /// refuses to cut damage that later records prove was durable data
    /// (their `synced_delta`), syncs what it keeps and rebuilds the index.
    pub fn recover_active(
        storage: &dyn Storage,
        path: &Path,
        first_seq: u64,
        index_capacity: u64,
        map_bytes: u64,
        record_bytes_max: u64,
    ) -> Result<(Segment, TailRepair)> {
        let (file, file_len) = open_segment_file(storage, path, OpenMode::ReadWrite, first_seq)?;
        let scan = scan_records(&*file, path, first_seq, file_len, record_bytes_max)?;
        let committed = scan.committed_records as usize;
        let committed_end = scan.committed_end;
        let mut repair = TailRepair {
            dropped_records: (scan.offsets.len() - committed) as u64,
            ..TailRepair::default()
        };
        if committed_end < file_len {
            let mut tail = vec![0u8; (file_len - committed_end) as usize];
            file.read_exact_at(&mut tail, committed_end).at(path)?;
            let nonzero_end = tail.iter().rposition(|&b| b != 0).map(|p| p + 1);
            if let Some(nonzero_end) = nonzero_end {
                let next_seq = first_seq + committed as u64;
                if let Some(at) = find_proof_of_damage(&tail, next_seq, record_bytes_max) {
                    let offset = scan.stopped_by.as_ref().map_or(committed_end, |s| s.0);
                    tracing::error!(file = %path.display(), offset, valid_record_at = committed_end + at as u64,
                        "damage before valid records in the active segment");
                    return Err(Error::Corrupt {
                        file: path.to_path_buf(),
                        offset,
                        kind: CorruptKind::MidLog,
                    });
                }
                repair.dropped_bytes = nonzero_end as u64;
                // Cut rather than zero: the cut needs no free space.
                file.set_len(committed_end).at(path)?;
                file.sync_all().at(path)?;
                tracing::warn!(
                    file = %path.display(),
                    offset = committed_end,
                    dropped_bytes = repair.dropped_bytes,
                    dropped_records = repair.dropped_records,
                    "truncated the torn tail of the active segment"
                );
            }
        }
        // What recovery kept may so far live only in the page cache (after a
        // process crash); make it durable, since records written from now
        // on will claim it is (`synced_delta`).
        file.sync_data().at(path)?;
        let index_path = path.with_extension(&INDEX_SUFFIX[1..]);
        let index = SeqIndex::create(
            storage,
            &index_path,
            first_seq,
            &scan.offsets[..committed],
            index_capacity,
        )?;
        let map = file.map_read_only(map_bytes.max(committed_end)).at(path)?;
        Ok((
            Segment {
                first_seq,
                path: path.to_path_buf(),
                file,
                index,
                map,
                committed_bytes: AtomicU64::new(committed_end),
            },
            repair,
        ))
    }
}

/// Whether the record at `offset` has a plausible header for `seq` and ends
/// exactly at `file_len`. The body is not checked.
fn last_record_ends_file(
    file: &dyn StorageFile,
    path: &Path,
    offset: u64,
    seq: u64,
    file_len: u64,
    record_bytes_max: u64,
) -> Result<bool> {
    if offset + RECORD_HEADER_BYTES as u64 > file_len {
        return Ok(false);
    }
    let mut header = [0u8; RECORD_HEADER_BYTES];
    file.read_exact_at(&mut header, offset).at(path)?;
    Ok(match parse_header(&header) {
        Some(h) => {
            check_header(&h, record_bytes_max).is_ok()
                && h.seq == seq
                && offset + h.record_bytes() == file_len
        }
        None => false,
    })
}

/// The result of scanning a segment from its first record.
pub(crate) struct Scan {
    /// Offsets of every valid record in sequence, including an incomplete
    /// commit group at the end.
    pub offsets: Vec<u64>,
    /// How many leading records form complete commit groups.
    pub committed_records: u64,
    /// End of the last record of the last complete commit group.
    pub committed_end: u64,
    /// End of the last valid record.
    pub end: u64,
    /// Where and why the scan stopped, unless it reached zeros or the end.
    pub stopped_by: Option<(u64, CorruptKind)>,
}

/// Scans the records of a segment in order, checking CRCs, sequence
/// continuity and commit-group structure.
pub(crate) fn scan_records(
    file: &dyn StorageFile,
    path: &Path,
    first_seq: u64,
    file_len: u64,
    record_bytes_max: u64,
) -> Result<Scan> {
    let mut cursor = Cursor::new(SEGMENT_HEADER_BYTES, file_len, record_bytes_max);
    let mut scan = Scan {
        offsets: Vec::new(),
        committed_records: 0,
        committed_end: SEGMENT_HEADER_BYTES,
        end: SEGMENT_HEADER_BYTES,
        stopped_by: None,
    };
    // `group_remaining` of the previous record while inside a commit group.
    let mut open_group: Option<u32> = None;
    let mut expected = first_seq;
    loop {
        match cursor.next_step(Source::File(file)).at(path)? {
            Step::End { .. } => break,
            Step::Invalid { offset, kind } => {
                scan.stopped_by = Some((offset, kind));
                break;
            }
            Step::Record { offset, header, .. } => {
                if header.seq != expected {
                    scan.stopped_by = Some((
                        offset,
                        CorruptKind::Sequence {
                            expected,
                            found: header.seq,
                        },
                    ));
                    break;
                }
                let consistent = match open_group {
                    Some(previous) => header.group_remaining.checked_add(1) == Some(previous),
                    None => true,
                };
                if !consistent {
                    scan.stopped_by = Some((offset, CorruptKind::CommitGroup));
                    break;
                }
                scan.offsets.push(offset);
                scan.end = offset + header.record_bytes();
                expected += 1;
                if header.group_remaining == 0 {
                    open_group = None;
                    scan.committed_records = scan.offsets.len() as u64;
                    scan.committed_end = scan.end;
                } else {
                    open_group = Some(header.group_remaining);
                }
            }
        }
    }
    Ok(scan)
}

/// Looks for a valid record in `tail` that was written when `next_seq` was
/// already durable: proof that the bytes where `next_seq` should be were
/// synced data, so they are damage, not a torn unsynced tail. Returns its
/// offset in `tail`.
fn find_proof_of_damage(tail: &[u8], next_seq: u64, record_bytes_max: u64) -> Option<usize> {
    let last_start = tail.len().checked_sub(RECORD_BYTES_MIN)?;
    (0..=last_start).find(|&at| {
        let Some(header) = parse_header(&tail[at..]) else {
            return false;
        };
        if check_header(&header, record_bytes_max).is_err()
            || header.seq <= next_seq
            || header.synced_through() < next_seq
        {
            return false;
        }
        let end = at as u64 + header.record_bytes();
        end <= tail.len() as u64 && verify_record(&tail[at..end as usize], record_bytes_max).is_ok()
    })
}
