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
use crate::marker::CleanClose;
use crate::mmap::SharedMap;
use crate::record::{
    check_header, decode_body, parse_header, verify_record, RecordHeader, RECORD_BYTES_MIN,
    RECORD_HEADER_BYTES,
};
use crate::storage::{OpenMode, Storage, StorageFile};

pub(crate) const SEGMENT_MAGIC: &[u8; 8] = b"EVLOGSEG";
/// Version written into new segments. Version 3 made the atomic unit one
/// append request (field `unit_remaining`); in version 2 the same field
/// counted the records left in the whole commit group. The rule a reader
/// applies is the same for both (a unit ends at a record whose field is 0),
/// so version 2 segments are read, and appended to, unchanged. Version 1
/// existed only during development and is refused.
pub(crate) const SEGMENT_FORMAT_VERSION: u32 = 3;
/// Oldest segment version this build reads.
pub(crate) const SEGMENT_FORMAT_VERSION_OLDEST: u32 = 2;
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

/// A checked segment header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SegmentHeader {
    pub first_seq: u64,
    pub version: u32,
}

/// Checks a segment header.
pub(crate) fn decode_segment_header(bytes: &[u8], path: &Path) -> Result<SegmentHeader> {
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
    if !(SEGMENT_FORMAT_VERSION_OLDEST..=SEGMENT_FORMAT_VERSION).contains(&version) {
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
    Ok(SegmentHeader { first_seq, version })
}

/// Reads and checks the header of an open segment file.
pub(crate) fn read_segment_header(file: &dyn StorageFile, path: &Path) -> Result<SegmentHeader> {
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
    if read_segment_header(&*file, path)?.first_seq != first_seq {
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
    /// Bytes read ahead per `pread` where the file is not mapped.
    read_chunk_bytes: u64,
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
            read_chunk_bytes: READ_CHUNK_BYTES as u64,
            pending_advance: 0,
        }
    }

    /// Reads ahead at most `bytes` per `pread` (a record longer than that
    /// is still read whole): what bounds an iterator's buffer.
    pub fn with_read_chunk_bytes(mut self, bytes: u64) -> Cursor {
        self.read_chunk_bytes = bytes;
        self
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
                let read_len = want.max(self.read_chunk_bytes).min(self.end - self.pos);
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

/// What `Segment::scan_bodies` calls with each record's sequence number and
/// body; an error is damage found in the body.
pub(crate) type BodyVisitor<'a> =
    dyn FnMut(u64, &[u8]) -> std::result::Result<(), CorruptKind> + 'a;

/// Cache lines of a record a query prefetches (the reference workload's
/// records average about 350 bytes).
const PREFETCH_LINES: usize = 6;

/// A segment file with its sequence index, shared by the writer and readers.
pub(crate) struct Segment {
    pub first_seq: u64,
    pub path: PathBuf,
    pub file: Box<dyn StorageFile>,
    pub index: SeqIndex,
    /// Read-only mapping used by readers (when the storage maps files and
    /// the file cannot be cut under it); may extend past the file's end.
    map: Option<SharedMap>,
    /// End of the last published record; readers never look past it.
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

/// Whether an open may change files: the writer's open repairs, a
/// read-only view never writes, locks or maps what a writer may cut.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Access {
    ReadWrite,
    ReadOnly,
    /// `evlog-dump --verify`: the writer's judgement of every byte, with
    /// the read-only view's promise to change nothing.
    Verify,
}

/// Bytes after the last complete unit of the active segment that are
/// neither zeros nor provably durable data: the remains of a write that
/// was never synced (or never completed), which the writer's open cuts.
#[derive(Debug, Clone)]
pub(crate) struct TornTail {
    /// Where the cut starts: the end of the last complete unit.
    pub offset: u64,
    /// The bytes from `offset` through the last non-zero byte or the end of
    /// the last readable record, whichever is further (zeros after both are
    /// preallocation).
    pub bytes: Vec<u8>,
    /// Sequence numbers of the records in those bytes whose headers are
    /// readable.
    pub dropped_seqs: Vec<u64>,
    /// What the first invalid record there was (`None` when the bytes are
    /// valid records of an incomplete unit).
    pub reason: Option<CorruptKind>,
}

/// What inspecting the active segment found, before anything is changed.
pub(crate) struct ActiveFound {
    file: Box<dyn StorageFile>,
    pub file_len: u64,
    /// Offsets of the records of complete units, in sequence order.
    pub offsets: Vec<u64>,
    /// End of the last complete unit.
    pub complete_end: u64,
    pub torn: Option<TornTail>,
    /// The clean-close marker vouched for this state, so nothing was
    /// scanned and everything in it is known durable.
    pub closed_cleanly: bool,
    /// The active index as the clean close left it, when it checked out.
    clean_index: Option<SeqIndex>,
}

impl ActiveFound {
    /// Cuts the file at `offset` (the end of its last complete unit) and
    /// syncs it. Writer's open and `repair` only.
    pub fn cut(&self, path: &Path, offset: u64) -> Result<()> {
        debug_assert_eq!(offset, self.complete_end);
        self.file.set_len(offset).at(path)?;
        self.file.sync_all().at(path)
    }

    pub fn sync_data(&self, path: &Path) -> Result<()> {
        self.file.sync_data().at(path)
    }
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

    /// Starts loading the first bytes of the record of `seq` (published here)
    /// into the CPU cache, when the segment is mapped.
    pub fn prefetch_record(&self, seq: u64) {
        let i = seq - self.first_seq;
        if i >= self.index.valid_count() {
            return;
        }
        let offset = self.index.entry(i);
        let end = self.committed_bytes();
        if let Source::Mapped(region) = self.source(end) {
            // A typical record spans a few cache lines; ask for those.
            for line in 0..PREFETCH_LINES {
                if let Some(byte) = region.get(offset as usize + line * 64) {
                    crate::mmap::prefetch(byte);
                }
            }
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

    /// Calls `each` with the sequence number and body of every published
    /// record of this segment in `from_seq..=through_seq`, in order, each
    /// checked (CRC, sequence number) as `Log::iter` checks it. For the
    /// writer's own scans of the log (the duplicate window, entity
    /// versions), which need a field or two, not decoded events.
    pub fn scan_bodies(
        &self,
        from_seq: u64,
        through_seq: u64,
        record_bytes_max: u64,
        each: &mut BodyVisitor<'_>,
    ) -> Result<()> {
        self.for_each_record(
            from_seq,
            through_seq,
            record_bytes_max,
            &mut |seq, record| each(seq, &record[RECORD_HEADER_BYTES..]),
        )
    }

    /// Calls `each` with the sequence number and the whole record (header
    /// and body, as on disk) of every published record of this segment in
    /// `from_seq..=through_seq`, in order, each checked (CRC, sequence
    /// number). The archiver copies records this way, so that an archive
    /// keeps every record's own CRC. An error from `each` is damage in the
    /// body, reported at the body's offset.
    pub fn for_each_record(
        &self,
        from_seq: u64,
        through_seq: u64,
        record_bytes_max: u64,
        each: &mut BodyVisitor<'_>,
    ) -> Result<()> {
        let count = self.record_count();
        let from_seq = from_seq.max(self.first_seq);
        let through_seq = through_seq.min((self.first_seq + count).saturating_sub(1));
        if count == 0 || from_seq > through_seq {
            return Ok(());
        }
        let end = self.committed_bytes();
        let source = self.source(end);
        let start = self.index.entry(from_seq - self.first_seq);
        let mut cursor = Cursor::new(start, end, record_bytes_max);
        let mut seq = from_seq;
        while seq <= through_seq {
            match cursor.next_step(source).at(&self.path)? {
                Step::Record {
                    offset,
                    header,
                    bytes,
                } => {
                    if header.seq != seq {
                        return Err(self.corrupt(
                            offset,
                            CorruptKind::Sequence {
                                expected: seq,
                                found: header.seq,
                            },
                        ));
                    }
                    each(seq, bytes)
                        .map_err(|kind| self.corrupt(offset + RECORD_HEADER_BYTES as u64, kind))?;
                    seq += 1;
                }
                // The index promised more records than the bytes hold.
                Step::End { offset } => return Err(self.corrupt(offset, CorruptKind::Truncated)),
                Step::Invalid { offset, kind } => return Err(self.corrupt(offset, kind)),
            }
        }
        Ok(())
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

    /// Opens a sealed segment holding exactly `count` records. Never writes
    /// under `Access::ReadOnly`.
    ///
    /// Its index is trusted when its entries match the checksum recorded at
    /// seal time and its last entry points at a record (header checked, not
    /// the body: a damaged body is reported when read, not here) that ends
    /// the file and its atomic unit. Otherwise a scan decides: if the
    /// segment is intact, the index is rebuilt from it (in memory only,
    /// under `ReadOnly`); if the segment is damaged and the index passed its
    /// checksum, the index is kept, so that only the damaged records fail
    /// to read. Only damage with no trustworthy index fails the open.
    pub fn open_sealed(
        storage: &dyn Storage,
        path: &Path,
        first_seq: u64,
        count: u64,
        record_bytes_max: u64,
        access: Access,
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
        if let Some(index) = checked_index {
            if last_record_ends_file(
                &*file,
                path,
                index.entry(count - 1),
                last_seq,
                file_len,
                record_bytes_max,
            )? {
                let segment = Segment::sealed(path, first_seq, file, index, file_len)?;
                return Ok((segment, SealedOpen::default()));
            }
            let scan = scan_records(&*file, path, first_seq, file_len, record_bytes_max)?;
            return match sealed_damage(&scan, first_seq, count, file_len) {
                Some((offset, kind)) => {
                    tracing::error!(file = %path.display(), offset, %kind, "sealed segment is damaged; its index is intact, so only the damaged records will fail to read");
                    let segment = Segment::sealed(path, first_seq, file, index, file_len)?;
                    let report = SealedOpen {
                        index_rebuilt: false,
                        damage: Some((offset, kind)),
                    };
                    Ok((segment, report))
                }
                // Intact, yet the last entry did not check out: the index
                // cannot be right, whatever its checksum says.
                None => {
                    Segment::sealed_rebuilt(storage, path, first_seq, file, file_len, &scan, access)
                }
            };
        }
        let scan = scan_records(&*file, path, first_seq, file_len, record_bytes_max)?;
        if let Some(error) = sealed_error(path, &scan, first_seq, count, file_len) {
            return Err(error);
        }
        Segment::sealed_rebuilt(storage, path, first_seq, file, file_len, &scan, access)
    }

    /// A sealed segment whose index is rebuilt from an intact scan: written
    /// durably under `ReadWrite`, held in memory under `ReadOnly`.
    fn sealed_rebuilt(
        storage: &dyn Storage,
        path: &Path,
        first_seq: u64,
        file: Box<dyn StorageFile>,
        file_len: u64,
        scan: &Scan,
        access: Access,
    ) -> Result<(Segment, SealedOpen)> {
        let index_path = path.with_extension(&INDEX_SUFFIX[1..]);
        let count = scan.offsets.len() as u64;
        let index = match access {
            Access::ReadOnly | Access::Verify => {
                SeqIndex::in_memory(&index_path, first_seq, &scan.offsets)
            }
            Access::ReadWrite => {
                tracing::warn!(index = %index_path.display(), records = count, "rebuilt the sequence index from the segment");
                let mut entries = Vec::with_capacity(scan.offsets.len() * 8);
                for offset in &scan.offsets {
                    put_u64(&mut entries, *offset);
                }
                let mut bytes = encode_index_header(first_seq, Some(crc32fast::hash(&entries)));
                bytes.extend_from_slice(&entries);
                write_file_durably(storage, &index_path, &bytes)?;
                SeqIndex::open_sealed(storage, &index_path, first_seq, count, SEGMENT_HEADER_BYTES)?
            }
        };
        let segment = Segment::sealed(path, first_seq, file, index, file_len)?;
        let report = SealedOpen {
            index_rebuilt: access == Access::ReadWrite,
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
        // A sealed segment is never cut (only unlinked whole), so mapping
        // it is safe in any process.
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

    /// Looks at the last segment without changing anything: with a
    /// clean-close `marker` naming it, checks in O(1) that the file is
    /// exactly as the marker vouches (length, last record, its checksum)
    /// and trusts it; otherwise scans every record, keeps complete units,
    /// and classifies what follows them: zeros (preallocation), a torn tail
    /// (returned in `torn`, for the writer to cut), or damage that later
    /// records prove was durable data (their `synced_delta`), which is
    /// `Corrupt { kind: MidLog }`. Damage inside what a marker vouched for
    /// is `Corrupt { kind: Vouched }`, never a torn tail.
    pub fn inspect_active(
        storage: &dyn Storage,
        path: &Path,
        first_seq: u64,
        marker: Option<&CleanClose>,
        record_bytes_max: u64,
        index_capacity: u64,
        access: Access,
    ) -> Result<ActiveFound> {
        let mode = match access {
            Access::ReadWrite => OpenMode::ReadWrite,
            Access::ReadOnly | Access::Verify => OpenMode::Read,
        };
        let (file, file_len) = open_segment_file(storage, path, mode, first_seq)?;
        let marker = marker.filter(|m| m.active_first_seq == first_seq);
        if let Some(marker) = marker {
            if let Some(found) = trust_clean_close(
                storage,
                path,
                file,
                file_len,
                marker,
                record_bytes_max,
                index_capacity,
                access,
            )? {
                return Ok(found);
            }
            // The cheap check failed; reopen to scan (the file was consumed).
            let (file, file_len) = open_segment_file(storage, path, mode, first_seq)?;
            return inspect_scanned(
                path,
                file,
                file_len,
                first_seq,
                Some(marker),
                record_bytes_max,
                access,
            );
        }
        inspect_scanned(
            path,
            file,
            file_len,
            first_seq,
            None,
            record_bytes_max,
            access,
        )
    }

    /// Builds the active segment from what `inspect_active` found (after
    /// the writer cut any torn tail). `ReadWrite`: the index is the one
    /// the clean close left, or is rewritten from the scan; the file is
    /// mapped for readers. `ReadOnly`: the index is held in memory and the
    /// file is read with `pread` only, since its writer may cut its
    /// preallocated tail at any moment.
    pub fn active(
        storage: &dyn Storage,
        path: &Path,
        first_seq: u64,
        found: ActiveFound,
        index_capacity: u64,
        map_bytes: u64,
        access: Access,
    ) -> Result<Segment> {
        let index_path = path.with_extension(&INDEX_SUFFIX[1..]);
        let (index, map) = match access {
            Access::ReadOnly | Access::Verify => {
                let index = match found.clean_index {
                    Some(index) => index,
                    None => SeqIndex::in_memory(&index_path, first_seq, &found.offsets),
                };
                (index, None)
            }
            Access::ReadWrite => {
                let index = match found.clean_index {
                    Some(index) => index,
                    None => SeqIndex::create(
                        storage,
                        &index_path,
                        first_seq,
                        &found.offsets,
                        index_capacity,
                    )?,
                };
                let map = found
                    .file
                    .map_read_only(map_bytes.max(found.complete_end))
                    .at(path)?;
                (index, map)
            }
        };
        Ok(Segment {
            first_seq,
            path: path.to_path_buf(),
            file: found.file,
            index,
            map,
            committed_bytes: AtomicU64::new(found.complete_end),
        })
    }

    /// Read-only views: reads records appended since the view last looked
    /// (complete units only) and publishes them. Returns how many.
    pub fn refresh_read_only(&self, record_bytes_max: u64) -> Result<u64> {
        let file_len = self.file.size_bytes().at(&self.path)?;
        let start = self.committed_bytes();
        let next_seq = self.first_seq + self.record_count();
        let scan = scan_records_from(
            &*self.file,
            &self.path,
            start,
            next_seq,
            file_len,
            record_bytes_max,
            &mut |_, _, _| {},
        )?;
        let complete = &scan.offsets[..scan.complete_records as usize];
        if !complete.is_empty() {
            self.index.extend_in_memory(complete);
            self.publish(scan.complete_end);
        }
        Ok(complete.len() as u64)
    }
}

/// The O(1) open after a clean close: the file has exactly the length the
/// marker recorded and its last record is intact with the recorded
/// checksum and sequence number. `None` when any check fails.
// The arguments are the two halves of one open (the file and what it is
// checked against); a struct for them would only rename them.
#[allow(clippy::too_many_arguments)]
fn trust_clean_close(
    storage: &dyn Storage,
    path: &Path,
    file: Box<dyn StorageFile>,
    file_len: u64,
    marker: &CleanClose,
    record_bytes_max: u64,
    index_capacity: u64,
    access: Access,
) -> Result<Option<ActiveFound>> {
    if file_len != marker.active_bytes {
        return Ok(None);
    }
    let count = (marker.last_seq + 1).saturating_sub(marker.active_first_seq);
    let mut tail = vec![0u8; (marker.active_bytes - marker.tail_offset) as usize];
    file.read_exact_at(&mut tail, marker.tail_offset).at(path)?;
    if crc32fast::hash(&tail) != marker.tail_crc {
        return Ok(None);
    }
    if count == 0 {
        if marker.tail_offset != SEGMENT_HEADER_BYTES || !tail.is_empty() {
            return Ok(None);
        }
    } else {
        match verify_record(&tail, record_bytes_max) {
            Ok(header) if header.seq == marker.last_seq && header.unit_remaining == 0 => {}
            _ => return Ok(None),
        }
    }
    let index_path = path.with_extension(&INDEX_SUFFIX[1..]);
    // The writer continues with the index the clean close left; a
    // read-only view reads its entries into memory (the writer of another
    // process may grow or replace the file).
    let index = if count == 0 {
        None
    } else {
        SeqIndex::open_active_clean(
            storage,
            &index_path,
            marker.active_first_seq,
            count,
            marker.index_entries_crc,
            index_capacity,
            access,
        )
        .ok()
    };
    let offsets = match &index {
        Some(index) if index.entry(count - 1) == marker.tail_offset => Vec::new(),
        _ => {
            // The index is derived data: rebuild its entries from the
            // segment (a scan, but no repair: the data checked out).
            let scan = scan_records(
                &*file,
                path,
                marker.active_first_seq,
                file_len,
                record_bytes_max,
            )?;
            if scan.complete_records != count || scan.complete_end != file_len {
                return Ok(None);
            }
            scan.offsets
        }
    };
    let clean_index = index.filter(|_| offsets.is_empty() && count > 0);
    Ok(Some(ActiveFound {
        file,
        file_len,
        offsets,
        complete_end: file_len,
        torn: None,
        closed_cleanly: true,
        clean_index,
    }))
}

/// Scans the active segment and classifies what follows its complete
/// units (see `Segment::inspect_active`).
fn inspect_scanned(
    path: &Path,
    file: Box<dyn StorageFile>,
    file_len: u64,
    first_seq: u64,
    marker: Option<&CleanClose>,
    record_bytes_max: u64,
    access: Access,
) -> Result<ActiveFound> {
    let scan = scan_records(&*file, path, first_seq, file_len, record_bytes_max)?;
    let complete = scan.complete_records as usize;
    let next_seq = first_seq + scan.complete_records;
    if let Some(marker) = marker {
        if next_seq <= marker.last_seq {
            // The clean close vouched for records this scan cannot keep:
            // that is damage to acknowledged data, never a torn tail. The
            // error names the first record that fails a check.
            let seq = first_seq + scan.offsets.len() as u64;
            let (offset, damage) = scan
                .stopped_by
                .clone()
                .unwrap_or((scan.end, CorruptKind::Truncated));
            return Err(Error::Corrupt {
                file: path.to_path_buf(),
                offset,
                kind: CorruptKind::Vouched {
                    seq,
                    damage: Box::new(damage),
                },
            });
        }
    }
    let mut torn = None;
    // A read-only view does not judge the bytes after the last complete
    // unit: with a writer running they may be a write in progress, and a
    // second read of them could even see later records that seem to prove
    // damage. It shows the complete units and leaves the rest alone.
    if scan.complete_end < file_len && access != Access::ReadOnly {
        let mut tail = vec![0u8; (file_len - scan.complete_end) as usize];
        file.read_exact_at(&mut tail, scan.complete_end).at(path)?;
        if let Some(nonzero_end) = tail.iter().rposition(|&b| b != 0).map(|p| p + 1) {
            if let Some(at) = find_proof_of_damage(&tail, next_seq, record_bytes_max) {
                let offset = scan.stopped_by.as_ref().map_or(scan.complete_end, |s| s.0);
                tracing::error!(file = %path.display(), offset, valid_record_at = scan.complete_end + at as u64,
                    "damage before valid records in the active segment");
                return Err(Error::Corrupt {
                    file: path.to_path_buf(),
                    offset,
                    kind: CorruptKind::MidLog,
                });
            }
            // Records may end in zero bytes: the copy reaches the end of
            // the last readable record, or the last non-zero byte if that
            // is further; only zeros after both are preallocation.
            let (dropped_seqs, records_end) = readable_records(&tail, next_seq, record_bytes_max);
            tail.truncate(nonzero_end.max(records_end));
            torn = Some(TornTail {
                offset: scan.complete_end,
                bytes: tail,
                dropped_seqs,
                reason: scan.stopped_by.clone().map(|(_, kind)| kind),
            });
        }
    }
    let mut offsets = scan.offsets;
    offsets.truncate(complete);
    Ok(ActiveFound {
        file,
        file_len,
        offsets,
        complete_end: scan.complete_end,
        torn,
        closed_cleanly: false,
        clean_index: None,
    })
}

/// The sequence numbers of consecutive records from the start of `tail`
/// whose headers are plausible (length in bounds, sequence number the next
/// one), whether or not their checksums match: what a cut drops; and where
/// in `tail` those records end (at most its length): a copy of a cut must
/// reach that far even where a record's last bytes are zeros.
pub(crate) fn readable_records(
    tail: &[u8],
    first_seq: u64,
    record_bytes_max: u64,
) -> (Vec<u64>, usize) {
    let mut seqs = Vec::new();
    let mut at = 0usize;
    let mut expected = first_seq;
    while let Some(header) = tail.get(at..).and_then(parse_header) {
        if check_header(&header, record_bytes_max).is_err() || header.seq != expected {
            break;
        }
        seqs.push(header.seq);
        expected += 1;
        at = at.saturating_add(header.record_bytes() as usize);
    }
    (seqs, at.min(tail.len()))
}

/// The first rule a sealed segment breaks, as (offset, what): a record
/// that is not valid, records that end inside an atomic unit, bytes after
/// the last record, or fewer records than the next segment's name implies
/// (`Gap`). `None` when the segment is exactly as FORMAT.md requires.
pub(crate) fn sealed_damage(
    scan: &Scan,
    first_seq: u64,
    count: u64,
    file_len: u64,
) -> Option<(u64, CorruptKind)> {
    if let Some(stopped) = &scan.stopped_by {
        return Some(stopped.clone());
    }
    if scan.complete_records < scan.offsets.len() as u64 {
        return Some((scan.complete_end, CorruptKind::IncompleteUnit));
    }
    if scan.complete_end < file_len {
        return Some((scan.complete_end, CorruptKind::TrailingBytes));
    }
    let found = scan.offsets.len() as u64;
    (found != count).then_some((
        scan.complete_end,
        CorruptKind::Gap {
            expected: first_seq + count,
            found: first_seq + found,
        },
    ))
}

/// The error for a sealed segment that breaks a rule, naming the file and
/// offset the way open and `verify` both report it: a segment whose
/// records are intact but too few is a missing successor, named at the
/// segment after the hole.
pub(crate) fn sealed_error(
    path: &Path,
    scan: &Scan,
    first_seq: u64,
    count: u64,
    file_len: u64,
) -> Option<Error> {
    let (offset, kind) = sealed_damage(scan, first_seq, count, file_len)?;
    if let CorruptKind::Gap { .. } = kind {
        let found = first_seq + scan.offsets.len() as u64;
        let next = first_seq + count;
        return Some(Error::Corrupt {
            file: path.with_file_name(segment_file_name(next)),
            offset: FIRST_SEQ_AT as u64,
            kind: CorruptKind::Gap {
                expected: found,
                found: next,
            },
        });
    }
    Some(Error::Corrupt {
        file: path.to_path_buf(),
        offset,
        kind,
    })
}

/// Whether the record at `offset` has a plausible header for `seq`, ends
/// its atomic unit, and ends exactly at `file_len`. The body is not checked.
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
                && h.unit_remaining == 0
                && offset + h.record_bytes() == file_len
        }
        None => false,
    })
}

/// The result of scanning a segment.
pub(crate) struct Scan {
    /// Offsets of every valid record in sequence, including an incomplete
    /// atomic unit at the end.
    pub offsets: Vec<u64>,
    /// How many leading records form complete units.
    pub complete_records: u64,
    /// End of the last record of the last complete unit.
    pub complete_end: u64,
    /// End of the last valid record.
    pub end: u64,
    /// Where and why the scan stopped, unless it reached zeros or the end.
    pub stopped_by: Option<(u64, CorruptKind)>,
}

/// Scans the records of a segment from its first record.
pub(crate) fn scan_records(
    file: &dyn StorageFile,
    path: &Path,
    first_seq: u64,
    file_len: u64,
    record_bytes_max: u64,
) -> Result<Scan> {
    scan_records_from(
        file,
        path,
        SEGMENT_HEADER_BYTES,
        first_seq,
        file_len,
        record_bytes_max,
        &mut |_, _, _| {},
    )
}

/// The one read loop over a segment's records: from `start` (where record
/// `start_seq` begins, at a unit boundary) up to `end`, checking CRCs,
/// sequence continuity and unit structure, calling `visit` with each valid
/// record (offset, header, bytes). Open, refresh, verify and the dump all
/// use it, so they cannot disagree about what is valid.
pub(crate) fn scan_records_from(
    file: &dyn StorageFile,
    path: &Path,
    start: u64,
    start_seq: u64,
    end: u64,
    record_bytes_max: u64,
    visit: &mut dyn FnMut(u64, &RecordHeader, &[u8]),
) -> Result<Scan> {
    let mut cursor = Cursor::new(start, end, record_bytes_max);
    let mut scan = Scan {
        offsets: Vec::new(),
        complete_records: 0,
        complete_end: start,
        end: start,
        stopped_by: None,
    };
    // `unit_remaining` of the previous record while inside a unit.
    let mut open_unit: Option<u32> = None;
    let mut expected = start_seq;
    loop {
        match cursor.next_step(Source::File(file)).at(path)? {
            Step::End { .. } => break,
            Step::Invalid { offset, kind } => {
                scan.stopped_by = Some((offset, kind));
                break;
            }
            Step::Record {
                offset,
                header,
                bytes,
            } => {
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
                let consistent = match open_unit {
                    Some(previous) => header.unit_remaining.checked_add(1) == Some(previous),
                    None => true,
                };
                if !consistent {
                    scan.stopped_by = Some((offset, CorruptKind::CommitGroup));
                    break;
                }
                visit(offset, &header, bytes);
                scan.offsets.push(offset);
                scan.end = offset + header.record_bytes();
                expected += 1;
                if header.unit_remaining == 0 {
                    open_unit = None;
                    scan.complete_records = scan.offsets.len() as u64;
                    scan.complete_end = scan.end;
                } else {
                    open_unit = Some(header.unit_remaining);
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
