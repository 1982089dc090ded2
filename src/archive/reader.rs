//! Reading one archive file: open checks every metadata frame against the
//! others and against the file's length, so that a truncated or altered
//! archive fails at open instead of reading as fewer events; a read
//! decompresses one frame, bounded by what the index declares, and checks
//! its CRC-32 and every record's own CRC.

use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::cache::{FrameCache, FrameKey};
use super::format::{
    decode_footer, decode_index, decode_notes, decode_seek_table, decode_seek_table_footer,
    seek_table_frame_bytes, skippable_content, DeletionNote, Footer, FooterError, FrameEntry,
    ARCHIVE_FORMAT_VERSION, FOOTER_FRAME_BYTES_MAX, FOOTER_FRAME_MAGIC, INDEX_ENTRY_BYTES,
    INDEX_FRAME_MAGIC, METADATA_FRAME_COUNT, NOTES_BYTES_MAX, NOTES_FRAME_MAGIC,
    SEEK_TABLE_FOOTER_BYTES, SKIPPABLE_HEADER_BYTES,
};
use crate::error::{CorruptKind, Error, IoContext, Result};
use crate::event::LoggedEvent;
use crate::options::RECORD_BYTES_LIMIT;
use crate::record::{
    body_timestamp_us, check_header, decode_body, parse_header, verify_record, RecordHeader,
    RECORD_HEADER_BYTES,
};
use crate::segment::BodyVisitor;
use crate::storage::{OpenMode, Storage, StorageFile};

thread_local! {
    /// One decompression context per thread: creating one allocates about
    /// 100 KiB, which would dominate a cold point read.
    static DECOMPRESSOR: RefCell<Option<zstd::bulk::Decompressor<'static>>> =
        const { RefCell::new(None) };
}

/// What `ArchiveFile::verify` found: everything in it was checked.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ArchiveVerifyReport {
    /// Archive files checked.
    pub files: u64,
    /// Data frames checked (decompressed, CRCs compared with the index).
    pub frames: u64,
    /// Events read and decoded.
    pub events: u64,
    /// Uncompressed bytes of the records.
    pub content_bytes: u64,
    /// Events that deletion notes account for.
    pub deleted_events: u64,
    /// Seqs of the covered ranges that are neither present nor explained
    /// by a deletion note: lost data.
    pub unexplained_missing: u64,
}

impl ArchiveVerifyReport {
    pub(crate) fn empty() -> ArchiveVerifyReport {
        ArchiveVerifyReport {
            files: 0,
            frames: 0,
            events: 0,
            content_bytes: 0,
            deleted_events: 0,
            unexplained_missing: 0,
        }
    }

    pub(crate) fn add(&mut self, other: &ArchiveVerifyReport) {
        self.files += other.files;
        self.frames += other.frames;
        self.events += other.events;
        self.content_bytes += other.content_bytes;
        self.deleted_events += other.deleted_events;
        self.unexplained_missing += other.unexplained_missing;
    }
}

/// One opened and checked archive file.
pub(crate) struct ArchiveFile {
    path: PathBuf,
    file: Box<dyn StorageFile>,
    file_bytes: u64,
    footer: Footer,
    /// Offset of the footer frame (errors about footer fields name it).
    footer_offset: u64,
    frames: Vec<FrameEntry>,
    notes: Vec<DeletionNote>,
}

/// Reads `len` bytes at `offset` of a file whose length the caller has
/// checked covers them.
fn read_at(file: &dyn StorageFile, path: &Path, offset: u64, len: u64) -> Result<Vec<u8>> {
    let mut bytes = vec![0; len as usize];
    file.read_exact_at(&mut bytes, offset).at(path)?;
    Ok(bytes)
}

impl ArchiveFile {
    /// Opens `path` and checks the seek table, footer, frame index and
    /// deletion notes: their magics, CRCs, the version, that they agree
    /// with each other, that the data frames are contiguous from offset 0,
    /// and that the file is exactly as long as they say.
    pub fn open(storage: &dyn Storage, path: &Path) -> Result<ArchiveFile> {
        let file = storage.open(path, OpenMode::Read).at(path)?;
        let file_bytes = file.size_bytes().at(path)?;
        let corrupt = |offset: u64, kind| Error::Corrupt {
            file: path.to_path_buf(),
            offset,
            kind,
        };
        let smallest = seek_table_frame_bytes(METADATA_FRAME_COUNT);
        if file_bytes < smallest {
            return Err(corrupt(file_bytes, CorruptKind::Truncated));
        }
        let tail_at = file_bytes - SEEK_TABLE_FOOTER_BYTES as u64;
        let tail = read_at(&*file, path, tail_at, SEEK_TABLE_FOOTER_BYTES as u64)?;
        let count = decode_seek_table_footer(&tail).map_err(|kind| corrupt(tail_at, kind))?;
        let seek_table_bytes = seek_table_frame_bytes(count);
        let Some(seek_table_at) = file_bytes.checked_sub(seek_table_bytes) else {
            return Err(corrupt(tail_at, CorruptKind::Truncated));
        };
        let seek_table = read_at(&*file, path, seek_table_at, seek_table_bytes)?;
        let sizes =
            decode_seek_table(&seek_table, count).map_err(|kind| corrupt(seek_table_at, kind))?;
        let data_frames = (count - METADATA_FRAME_COUNT) as usize;
        let (notes_bytes, index_bytes, footer_bytes) = (
            u64::from(sizes[data_frames].0),
            u64::from(sizes[data_frames + 1].0),
            u64::from(sizes[data_frames + 2].0),
        );
        if sizes[data_frames..].iter().any(|&(_, d)| d != 0) {
            return Err(corrupt(
                seek_table_at,
                CorruptKind::Archive("metadata frames with a decompressed size"),
            ));
        }
        if !(SKIPPABLE_HEADER_BYTES as u64..=FOOTER_FRAME_BYTES_MAX).contains(&footer_bytes) {
            return Err(corrupt(
                seek_table_at,
                CorruptKind::Archive("impossible footer frame size"),
            ));
        }
        let Some(footer_offset) = seek_table_at.checked_sub(footer_bytes) else {
            return Err(corrupt(seek_table_at, CorruptKind::Truncated));
        };
        let footer_frame = read_at(&*file, path, footer_offset, footer_bytes)?;
        let footer_content = skippable_content(&footer_frame, FOOTER_FRAME_MAGIC)
            .map_err(|kind| corrupt(footer_offset, kind))?;
        let footer_content_at = footer_offset + SKIPPABLE_HEADER_BYTES as u64;
        let footer = decode_footer(footer_content).map_err(|e| match e {
            FooterError::Corrupt(at, kind) => corrupt(footer_content_at + at as u64, kind),
            FooterError::Version(found) => Error::UnsupportedVersion {
                file: path.to_path_buf(),
                found,
                supported: ARCHIVE_FORMAT_VERSION,
            },
        })?;
        // The footer, the seek table and the file's length must tell one
        // story: a cut anywhere shows here.
        let expected_bytes = footer
            .data_bytes
            .checked_add(u64::from(footer.notes_frame_bytes))
            .and_then(|n| n.checked_add(u64::from(footer.index_frame_bytes)))
            .and_then(|n| n.checked_add(footer_bytes + seek_table_bytes));
        if footer.frame_count as usize != data_frames
            || u64::from(footer.notes_frame_bytes) != notes_bytes
            || u64::from(footer.index_frame_bytes) != index_bytes
            || expected_bytes != Some(file_bytes)
        {
            return Err(corrupt(
                footer_content_at,
                CorruptKind::Archive("the footer, the seek table and the file length disagree"),
            ));
        }
        let notes_at = footer.data_bytes;
        let index_at = notes_at + notes_bytes;
        if notes_bytes > (NOTES_BYTES_MAX + SKIPPABLE_HEADER_BYTES) as u64 {
            return Err(corrupt(
                notes_at,
                CorruptKind::Archive("notes frame too large"),
            ));
        }
        // Checked before reading, so that the allocation is what the frame
        // count (at most FRAMES_MAX) justifies.
        if index_bytes != (SKIPPABLE_HEADER_BYTES + INDEX_ENTRY_BYTES * data_frames + 4) as u64 {
            return Err(corrupt(
                index_at,
                CorruptKind::Archive("frame index length disagrees with the frame count"),
            ));
        }
        let index_frame = read_at(&*file, path, index_at, index_bytes)?;
        let index_content = skippable_content(&index_frame, INDEX_FRAME_MAGIC)
            .map_err(|kind| corrupt(index_at, kind))?;
        let frames = decode_index(index_content, &footer).map_err(|(at, kind)| {
            corrupt(index_at + SKIPPABLE_HEADER_BYTES as u64 + at as u64, kind)
        })?;
        for (i, entry) in frames.iter().enumerate() {
            if (entry.compressed_bytes, entry.decompressed_bytes) != sizes[i] {
                return Err(corrupt(
                    seek_table_at,
                    CorruptKind::Archive("the seek table and the frame index disagree"),
                ));
            }
        }
        let notes_frame = read_at(&*file, path, notes_at, notes_bytes)?;
        let notes_content = skippable_content(&notes_frame, NOTES_FRAME_MAGIC)
            .map_err(|kind| corrupt(notes_at, kind))?;
        let notes = decode_notes(notes_content, footer.range_first_seq, footer.range_last_seq)
            .map_err(|(at, kind)| {
                corrupt(notes_at + SKIPPABLE_HEADER_BYTES as u64 + at as u64, kind)
            })?;
        Ok(ArchiveFile {
            path: path.to_path_buf(),
            file,
            file_bytes,
            footer,
            footer_offset,
            frames,
            notes,
        })
    }

    /// Whether the file now at this archive's path is the one this handle
    /// reads: same length and same footer bytes (a rewrite by retention
    /// replaces the file, and its footer's counts and checksums differ).
    /// A read-only view asks before it trusts what it opened earlier.
    pub fn is_current(&self, storage: &dyn Storage) -> Result<bool> {
        let now = storage.open(&self.path, OpenMode::Read).at(&self.path)?;
        if now.size_bytes().at(&self.path)? != self.file_bytes {
            return Ok(false);
        }
        let len = self.file_bytes - self.footer_offset;
        let on_disk = read_at(&*now, &self.path, self.footer_offset, len)?;
        let ours = read_at(&*self.file, &self.path, self.footer_offset, len)?;
        Ok(on_disk == ours)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
    pub fn file_bytes(&self) -> u64 {
        self.file_bytes
    }
    pub fn footer_offset(&self) -> u64 {
        self.footer_offset
    }
    pub fn range_first_seq(&self) -> u64 {
        self.footer.range_first_seq
    }
    pub fn range_last_seq(&self) -> u64 {
        self.footer.range_last_seq
    }
    pub fn event_count(&self) -> u64 {
        self.footer.event_count
    }
    /// First and last seq present (`None` for a tombstone archive).
    pub fn present_seqs(&self) -> Option<(u64, u64)> {
        (self.footer.event_count > 0)
            .then_some((self.footer.first_present_seq, self.footer.last_present_seq))
    }
    /// Smallest and largest event timestamp, µs (`None` when empty).
    pub fn timestamps_us(&self) -> Option<(i64, i64)> {
        (self.footer.event_count > 0)
            .then_some((self.footer.timestamp_min_us, self.footer.timestamp_max_us))
    }
    pub fn content_bytes(&self) -> u64 {
        self.footer.content_bytes
    }
    pub fn content_crc(&self) -> u32 {
        self.footer.content_crc
    }
    pub fn frames(&self) -> &[FrameEntry] {
        &self.frames
    }
    pub fn deletions(&self) -> &[DeletionNote] {
        &self.notes
    }
    /// The note that explains a missing `seq`, if any.
    pub fn deletion_of(&self, seq: u64) -> Option<&DeletionNote> {
        let i = self.notes.partition_point(|n| n.last_seq < seq);
        self.notes.get(i).filter(|n| n.covers(seq))
    }

    fn corrupt(&self, offset: u64, kind: CorruptKind) -> Error {
        Error::Corrupt {
            file: self.path.clone(),
            offset,
            kind,
        }
    }

    /// The decompressed bytes of frame `number`, checked against its index
    /// entry (one zstd frame of exactly the indexed size, declaring and
    /// producing exactly the indexed decompressed size, with the indexed
    /// CRC-32). Never allocates more than the entry declares, which open
    /// bounded by `FRAME_DECOMPRESSED_BYTES_MAX`.
    pub fn read_frame(&self, number: usize, cache: Option<&FrameCache>) -> Result<Arc<Vec<u8>>> {
        let entry = self.frames[number];
        let key = FrameKey {
            range_first_seq: self.footer.range_first_seq,
            footer_crc: self.footer.footer_crc,
            frame: number as u32,
        };
        if let Some(bytes) = cache.and_then(|c| c.get(&key)) {
            return Ok(bytes);
        }
        let compressed = read_at(
            &*self.file,
            &self.path,
            entry.offset,
            u64::from(entry.compressed_bytes),
        )?;
        let bad = |what| self.corrupt(entry.offset, CorruptKind::Archive(what));
        let computed = crc32fast::hash(&compressed);
        if computed != entry.compressed_crc {
            return Err(self.corrupt(
                entry.offset,
                CorruptKind::RecordChecksum {
                    stored: entry.compressed_crc,
                    computed,
                },
            ));
        }
        if zstd::zstd_safe::find_frame_compressed_size(&compressed).ok() != Some(compressed.len()) {
            return Err(bad("data frame is not one zstd frame of the indexed size"));
        }
        let declared = u64::from(entry.decompressed_bytes);
        if zstd::zstd_safe::get_frame_content_size(&compressed).ok() != Some(Some(declared)) {
            return Err(bad("data frame declares another size than the index"));
        }
        let mut bytes = Vec::with_capacity(declared as usize);
        let produced = DECOMPRESSOR.with(|slot| -> std::io::Result<usize> {
            let mut slot = slot.borrow_mut();
            let decompressor = match slot.as_mut() {
                Some(d) => d,
                None => slot.insert(zstd::bulk::Decompressor::new()?),
            };
            decompressor.decompress_to_buffer(&compressed[..], &mut bytes)
        });
        match produced {
            Ok(n) if n as u64 == declared && bytes.len() as u64 == declared => {}
            _ => return Err(bad("data frame does not decompress to its indexed size")),
        }
        let computed = crc32fast::hash(&bytes);
        if computed != entry.crc {
            return Err(self.corrupt(
                entry.offset,
                CorruptKind::RecordChecksum {
                    stored: entry.crc,
                    computed,
                },
            ));
        }
        let bytes = Arc::new(bytes);
        if let Some(cache) = cache {
            cache.insert(key, Arc::clone(&bytes));
        }
        Ok(bytes)
    }

    /// Offset in the file of the frame that would hold `seq` (0 when
    /// none does): where an error about that record points.
    pub fn frame_offset_of(&self, seq: u64) -> u64 {
        self.frame_of(seq).map_or(0, |n| self.frames[n].offset)
    }

    /// The frame that would hold `seq`, if any frame's range contains it.
    fn frame_of(&self, seq: u64) -> Option<usize> {
        let i = self.frames.partition_point(|e| e.last_seq < seq);
        (i < self.frames.len() && self.frames[i].first_seq <= seq).then_some(i)
    }

    /// The event `seq`, decompressing at most one frame; `None` when the
    /// archive does not hold it (deleted, or outside its range).
    pub fn read_event(&self, seq: u64, cache: &FrameCache) -> Result<Option<LoggedEvent>> {
        let Some(number) = self.frame_of(seq) else {
            return Ok(None);
        };
        let entry = self.frames[number];
        let bytes = self.read_frame(number, Some(cache))?;
        let mut cursor = FrameCursor::default();
        while let Some((found, record)) = cursor
            .next(&bytes, &entry)
            .map_err(|kind| self.corrupt(entry.offset, kind))?
        {
            if found == seq {
                return decode_body(seq, &record[RECORD_HEADER_BYTES..])
                    .map(Some)
                    .map_err(|kind| self.corrupt(entry.offset, kind));
            }
            if found > seq {
                break;
            }
        }
        Ok(None)
    }

    /// Calls `each` with every whole record with a seq in
    /// `from_seq..=through_seq`, in order, every frame and record checked
    /// (frame CRC, record CRC, seqs increasing inside the frame's declared
    /// range, record count). Frames come from and go to `cache` if given.
    pub fn for_each_record_cached(
        &self,
        from_seq: u64,
        through_seq: u64,
        cache: Option<&FrameCache>,
        each: &mut dyn FnMut(u64, &[u8]) -> Result<()>,
    ) -> Result<()> {
        if from_seq > through_seq {
            return Ok(());
        }
        let start = self.frames.partition_point(|e| e.last_seq < from_seq);
        for number in start..self.frames.len() {
            let entry = self.frames[number];
            if entry.first_seq > through_seq {
                break;
            }
            let bytes = self.read_frame(number, cache)?;
            let mut cursor = FrameCursor::default();
            while let Some((seq, record)) = cursor
                .next(&bytes, &entry)
                .map_err(|kind| self.corrupt(entry.offset, kind))?
            {
                if seq > through_seq {
                    break;
                }
                if seq >= from_seq {
                    each(seq, record)?;
                }
            }
        }
        Ok(())
    }

    /// As [`Self::for_each_record_cached`] without the cache: for
    /// rewriting an archive (a compaction), which reads each frame once.
    pub fn for_each_record(
        &self,
        from_seq: u64,
        through_seq: u64,
        mut each: impl FnMut(u64, &[u8]) -> Result<()>,
    ) -> Result<()> {
        self.for_each_record_cached(from_seq, through_seq, None, &mut each)
    }

    /// The same contract as `Segment::scan_bodies`: `each` gets the seq
    /// and body of every record in range, in order, each checked; an
    /// error from `each` is damage in that body.
    pub fn scan_bodies(
        &self,
        from_seq: u64,
        through_seq: u64,
        cache: Option<&FrameCache>,
        each: &mut BodyVisitor<'_>,
    ) -> Result<()> {
        let frame_offset_of = |seq: u64| {
            self.frame_of(seq)
                .map(|n| self.frames[n].offset)
                .unwrap_or(0)
        };
        self.for_each_record_cached(from_seq, through_seq, cache, &mut |seq, record| {
            each(seq, &record[RECORD_HEADER_BYTES..])
                .map_err(|kind| self.corrupt(frame_offset_of(seq), kind))
        })
    }

    /// Decompresses everything and checks every frame and record CRC,
    /// every body, the counts, the timestamps and the content checksum
    /// against the footer, and that every missing seq of the covered
    /// range is accounted for by a deletion note (or counts it as
    /// unexplained).
    pub fn verify(&self) -> Result<ArchiveVerifyReport> {
        let mut content_crc = crc32fast::Hasher::new();
        let mut events = 0u64;
        let mut content_bytes = 0u64;
        let mut timestamps: Option<(i64, i64)> = None;
        let mut note_index = 0usize;
        let mut present_in_notes = vec![0u64; self.notes.len()];
        for (number, entry) in self.frames.iter().enumerate() {
            let bytes = self.read_frame(number, None)?;
            let mut cursor = FrameCursor::default();
            while let Some((seq, record)) = cursor
                .next(&bytes, entry)
                .map_err(|kind| self.corrupt(entry.offset, kind))?
            {
                let body = &record[RECORD_HEADER_BYTES..];
                decode_body(seq, body).map_err(|kind| self.corrupt(entry.offset, kind))?;
                let ts =
                    body_timestamp_us(body).map_err(|kind| self.corrupt(entry.offset, kind))?;
                timestamps = Some(match timestamps {
                    None => (ts, ts),
                    Some((lo, hi)) => (lo.min(ts), hi.max(ts)),
                });
                while note_index < self.notes.len() && self.notes[note_index].last_seq < seq {
                    note_index += 1;
                }
                if self.notes.get(note_index).is_some_and(|n| n.covers(seq)) {
                    present_in_notes[note_index] += 1;
                }
                content_crc.update(record);
                content_bytes += record.len() as u64;
                events += 1;
            }
        }
        let at = self.footer_offset + SKIPPABLE_HEADER_BYTES as u64;
        if events != self.footer.event_count
            || content_bytes != self.footer.content_bytes
            || content_crc.finalize() != self.footer.content_crc
        {
            return Err(self.corrupt(
                at,
                CorruptKind::Archive("the records disagree with the footer's count or checksum"),
            ));
        }
        if timestamps != self.timestamps_us() {
            return Err(self.corrupt(
                at,
                CorruptKind::Archive("the records' timestamps disagree with the footer"),
            ));
        }
        let mut deleted_events = 0u64;
        for (note, present) in self.notes.iter().zip(&present_in_notes) {
            if note.count + present > note.last_seq - note.first_seq + 1 {
                return Err(self.corrupt(
                    self.footer.data_bytes,
                    CorruptKind::Archive("a deletion note counts events that are present"),
                ));
            }
            deleted_events += note.count;
        }
        let range = self.footer.range_last_seq - self.footer.range_first_seq + 1;
        Ok(ArchiveVerifyReport {
            files: 1,
            frames: self.frames.len() as u64,
            events,
            content_bytes,
            deleted_events,
            unexplained_missing: range - events - deleted_events,
        })
    }
}

/// Walks the records of one decompressed frame, checking each (header,
/// length, CRC, seq increasing inside the frame's range) and, at the end,
/// that the frame held exactly its indexed records.
#[derive(Default)]
pub(crate) struct FrameCursor {
    pos: usize,
    previous: Option<u64>,
    seen: u32,
}

impl FrameCursor {
    /// Offset in the decompressed frame of the next record.
    pub fn position(&self) -> usize {
        self.pos
    }

    pub fn next<'b>(
        &mut self,
        bytes: &'b [u8],
        entry: &FrameEntry,
    ) -> std::result::Result<Option<(u64, &'b [u8])>, CorruptKind> {
        self.next_with_header(bytes, entry)
            .map(|found| found.map(|(header, record)| (header.seq, record)))
    }

    pub fn next_with_header<'b>(
        &mut self,
        bytes: &'b [u8],
        entry: &FrameEntry,
    ) -> std::result::Result<Option<(RecordHeader, &'b [u8])>, CorruptKind> {
        if self.pos >= bytes.len() {
            if self.seen != entry.record_count || self.previous != Some(entry.last_seq) {
                return Err(CorruptKind::Archive(
                    "a frame holds other records than its index entry says",
                ));
            }
            return Ok(None);
        }
        let rest = &bytes[self.pos..];
        let header = parse_header(rest).ok_or(CorruptKind::Truncated)?;
        check_header(&header, RECORD_BYTES_LIMIT)?;
        let len = header.record_bytes() as usize;
        let record = rest.get(..len).ok_or(CorruptKind::Truncated)?;
        verify_record(record, RECORD_BYTES_LIMIT)?;
        let expected_first = self.previous.map_or(entry.first_seq, |p| p + 1);
        let in_order = match self.previous {
            None => header.seq == entry.first_seq,
            Some(p) => header.seq > p,
        };
        if !in_order || header.seq > entry.last_seq {
            return Err(CorruptKind::Sequence {
                expected: expected_first,
                found: header.seq,
            });
        }
        self.pos += len;
        self.previous = Some(header.seq);
        self.seen += 1;
        Ok(Some((header, record)))
    }
}
