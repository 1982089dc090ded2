//! Writing one archive file: records in, independent zstd frames out, then
//! the metadata frames, then an atomic rename over the final name.
//!
//! The frames are written with the plain `zstd` bulk API and the index is
//! our own rather than through zstd's contrib seekable library (the
//! `zstd-safe` `seekable` feature) or `zeekstd`: a frame must end at a
//! record boundary (so that every frame holds whole records with their
//! CRCs, and one event costs one frame), which a byte-stream seekable
//! writer does not know about; and the index has to carry seq ranges and
//! CRC-32s that the seekable seek table has no room for. The file still
//! ends with a seek table in zstd's seekable format, so seekable readers
//! work on it too.

use std::path::{Path, PathBuf};

use super::format::{
    archive_file_name, check_note, encode_footer_frame, encode_index_frame, encode_notes_frame,
    encode_seek_table, DeletionNote, Footer, FrameEntry, FRAMES_MAX, FRAME_DECOMPRESSED_BYTES_MAX,
    FRAME_RECORD_BYTES_DEFAULT, NOTES_MAX,
};
use crate::error::{CorruptKind, Error, IoContext, Result};
use crate::fsutil::{sync_dir, tmp_path};
use crate::options::RECORD_BYTES_LIMIT;
use crate::record::{body_timestamp_us, verify_record, RECORD_HEADER_BYTES};
use crate::storage::{OpenMode, Storage, StorageFile};

/// What writing an archive produced and cost.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ArchiveSummary {
    pub path: PathBuf,
    pub range_first_seq: u64,
    pub range_last_seq: u64,
    pub event_count: u64,
    pub frame_count: u32,
    /// Bytes of the records pushed (their size in a segment).
    pub input_bytes: u64,
    /// Bytes of the archive file.
    pub output_bytes: u64,
}

/// Writes one archive as `<name>.evz.tmp`, renamed over `<name>.evz` by
/// [`ArchiveWriter::finish`]. Dropped without `finish`, it leaves the temp
/// file, which the owner of the archive directory removes (a crash leaves
/// it too).
pub(crate) struct ArchiveWriter<'s> {
    storage: &'s dyn Storage,
    archive_dir: PathBuf,
    tmp: PathBuf,
    path: PathBuf,
    file: Box<dyn StorageFile>,
    compressor: zstd::bulk::Compressor<'static>,
    /// Records of the frame being filled.
    frame: Vec<u8>,
    frame_first_seq: u64,
    frame_last_seq: u64,
    frame_records: u32,
    frame_record_bytes_max: usize,
    /// Compressed bytes, reused between frames.
    compressed: Vec<u8>,
    entries: Vec<FrameEntry>,
    notes: Vec<DeletionNote>,
    /// File offset of the next frame.
    offset: u64,
    range_first_seq: u64,
    last_seq: Option<u64>,
    first_seq: Option<u64>,
    event_count: u64,
    timestamp_min_us: i64,
    timestamp_max_us: i64,
    content_crc: crc32fast::Hasher,
    input_bytes: u64,
}

impl<'s> ArchiveWriter<'s> {
    /// Starts `archive_dir/<range_first_seq>.evz.tmp` (replacing a leftover
    /// one) with frames compressed at zstd `level`.
    pub fn create(
        storage: &'s dyn Storage,
        archive_dir: &Path,
        range_first_seq: u64,
        level: i32,
    ) -> Result<ArchiveWriter<'s>> {
        ArchiveWriter::with_frame_bytes(
            storage,
            archive_dir,
            range_first_seq,
            level,
            FRAME_RECORD_BYTES_DEFAULT,
        )
    }

    /// As `create`, with frames of at most `frame_record_bytes_max` bytes
    /// of records (a larger record gets a frame of its own): for the
    /// measurements that chose the default, and for tests of many frames.
    pub fn with_frame_bytes(
        storage: &'s dyn Storage,
        archive_dir: &Path,
        range_first_seq: u64,
        level: i32,
        frame_record_bytes_max: usize,
    ) -> Result<ArchiveWriter<'s>> {
        if range_first_seq == 0 || range_first_seq > crate::segment::SEQ_MAX {
            return Err(Error::Internal("archive range starts outside 1..=2^62"));
        }
        if !storage.exists(archive_dir) {
            storage.create_dir_all(archive_dir).at(archive_dir)?;
            if let Some(parent) = archive_dir.parent() {
                sync_dir(storage, parent)?;
            }
        }
        let path = archive_dir.join(archive_file_name(range_first_seq));
        let tmp = tmp_path(&path);
        let file = storage.open(&tmp, OpenMode::CreateTruncate).at(&tmp)?;
        let compressor = zstd::bulk::Compressor::new(level).at(&tmp)?;
        Ok(ArchiveWriter {
            storage,
            archive_dir: archive_dir.to_path_buf(),
            tmp,
            path,
            file,
            compressor,
            frame: Vec::with_capacity(frame_record_bytes_max),
            frame_first_seq: 0,
            frame_last_seq: 0,
            frame_records: 0,
            frame_record_bytes_max: frame_record_bytes_max.clamp(
                crate::record::RECORD_BYTES_MIN,
                FRAME_DECOMPRESSED_BYTES_MAX as usize,
            ),
            compressed: Vec::new(),
            entries: Vec::new(),
            notes: Vec::new(),
            offset: 0,
            range_first_seq,
            last_seq: None,
            first_seq: None,
            event_count: 0,
            timestamp_min_us: i64::MAX,
            timestamp_max_us: i64::MIN,
            content_crc: crc32fast::Hasher::new(),
            input_bytes: 0,
        })
    }

    /// Adds one whole record, exactly as in a segment. Seqs must increase
    /// (gaps are allowed: a compacted archive) and start inside the range.
    /// The record is checked (CRC) before it is written: an archive never
    /// copies damage.
    pub fn push_record(&mut self, record: &[u8]) -> Result<()> {
        let header =
            verify_record(record, RECORD_BYTES_LIMIT).map_err(|kind| self.bad_input(kind))?;
        if header.seq < self.range_first_seq || self.last_seq.is_some_and(|last| header.seq <= last)
        {
            return Err(Error::Internal(
                "archive records must have increasing seqs inside the covered range",
            ));
        }
        let timestamp_us = body_timestamp_us(&record[RECORD_HEADER_BYTES..])
            .map_err(|kind| self.bad_input(kind))?;
        if !self.frame.is_empty() && self.frame.len() + record.len() > self.frame_record_bytes_max {
            self.flush_frame()?;
        }
        if self.frame.is_empty() {
            self.frame_first_seq = header.seq;
        }
        self.frame.extend_from_slice(record);
        self.frame_last_seq = header.seq;
        self.frame_records += 1;
        self.first_seq.get_or_insert(header.seq);
        self.last_seq = Some(header.seq);
        self.event_count += 1;
        self.timestamp_min_us = self.timestamp_min_us.min(timestamp_us);
        self.timestamp_max_us = self.timestamp_max_us.max(timestamp_us);
        self.content_crc.update(record);
        self.input_bytes += record.len() as u64;
        Ok(())
    }

    /// Records that retention removed events of the covered range. Notes
    /// must come in seq order and not overlap; checked again at `finish`
    /// against the final range.
    pub fn note_deletion(&mut self, note: DeletionNote) -> Result<()> {
        if self.notes.len() >= NOTES_MAX {
            return Err(Error::InvalidEvent(format!(
                "an archive holds at most {NOTES_MAX} deletion notes"
            )));
        }
        check_note(
            &note,
            self.notes.last(),
            self.range_first_seq,
            crate::segment::SEQ_MAX,
        )
        .map_err(|what| Error::InvalidEvent(format!("deletion note {note:?}: {what}")))?;
        self.notes.push(note);
        Ok(())
    }

    /// Writes the last frame and the metadata frames, makes the file
    /// durable and renames it over `<name>.evz` (replacing an older
    /// version atomically), then makes the rename durable.
    pub fn finish(mut self, range_last_seq: u64) -> Result<ArchiveSummary> {
        if range_last_seq < self.range_first_seq
            || range_last_seq > crate::segment::SEQ_MAX
            || self.last_seq.is_some_and(|last| last > range_last_seq)
        {
            return Err(Error::Internal("archive range ends before its last record"));
        }
        for (i, note) in self.notes.iter().enumerate() {
            let previous = i.checked_sub(1).map(|p| &self.notes[p]);
            check_note(note, previous, self.range_first_seq, range_last_seq)
                .map_err(|what| Error::InvalidEvent(format!("deletion note {note:?}: {what}")))?;
        }
        if !self.frame.is_empty() {
            self.flush_frame()?;
        }
        let notes_frame = encode_notes_frame(&self.notes);
        let index_frame = encode_index_frame(&self.entries);
        let empty = self.event_count == 0;
        let footer = Footer {
            frame_count: self.entries.len() as u32,
            range_first_seq: self.range_first_seq,
            range_last_seq,
            event_count: self.event_count,
            first_present_seq: self.first_seq.unwrap_or(0),
            last_present_seq: self.last_seq.unwrap_or(0),
            timestamp_min_us: if empty { 0 } else { self.timestamp_min_us },
            timestamp_max_us: if empty { 0 } else { self.timestamp_max_us },
            content_bytes: self.input_bytes,
            data_bytes: self.offset,
            notes_frame_bytes: notes_frame.len() as u32,
            index_frame_bytes: index_frame.len() as u32,
            content_crc: self.content_crc.clone().finalize(),
            footer_crc: 0,
        };
        let footer_frame = encode_footer_frame(&footer);
        let mut sizes: Vec<(u32, u32)> = self
            .entries
            .iter()
            .map(|e| (e.compressed_bytes, e.decompressed_bytes))
            .collect();
        for frame in [&notes_frame, &index_frame, &footer_frame] {
            sizes.push((frame.len() as u32, 0));
        }
        let mut tail = notes_frame;
        tail.extend_from_slice(&index_frame);
        tail.extend_from_slice(&footer_frame);
        tail.extend_from_slice(&encode_seek_table(&sizes));
        self.file.write_all_at(&tail, self.offset).at(&self.tmp)?;
        let output_bytes = self.offset + tail.len() as u64;
        self.file.sync_data().at(&self.tmp)?;
        drop(self.file);
        self.storage.rename(&self.tmp, &self.path).at(&self.path)?;
        sync_dir(self.storage, &self.archive_dir)?;
        Ok(ArchiveSummary {
            path: self.path,
            range_first_seq: self.range_first_seq,
            range_last_seq,
            event_count: self.event_count,
            frame_count: footer.frame_count,
            input_bytes: self.input_bytes,
            output_bytes,
        })
    }

    fn flush_frame(&mut self) -> Result<()> {
        if self.entries.len() >= FRAMES_MAX as usize {
            return Err(Error::InvalidEvent(format!(
                "an archive holds at most {FRAMES_MAX} frames"
            )));
        }
        self.compressed.clear();
        self.compressed
            .reserve(zstd::zstd_safe::compress_bound(self.frame.len()));
        self.compressor
            .compress_to_buffer(&self.frame[..], &mut self.compressed)
            .at(&self.tmp)?;
        self.file
            .write_all_at(&self.compressed, self.offset)
            .at(&self.tmp)?;
        // Written back now, frame by frame, rather than all at the final
        // sync, where it would hold the device while the log's writer
        // waits for its own fdatasync. Only a hint: a failure costs
        // nothing but the smoothing.
        if let Err(e) = self
            .file
            .start_writeback(self.offset, self.compressed.len() as u64)
        {
            tracing::debug!(error = %e, file = %self.tmp.display(), "could not start writeback");
        }
        // Both fit in u32: a frame holds at most 16 MiB of records.
        self.entries.push(FrameEntry {
            offset: self.offset,
            compressed_bytes: self.compressed.len() as u32,
            decompressed_bytes: self.frame.len() as u32,
            first_seq: self.frame_first_seq,
            last_seq: self.frame_last_seq,
            record_count: self.frame_records,
            crc: crc32fast::hash(&self.frame),
            compressed_crc: crc32fast::hash(&self.compressed),
        });
        self.offset += self.compressed.len() as u64;
        self.frame.clear();
        self.frame_records = 0;
        Ok(())
    }

    /// A record handed to the writer that is not a valid record: the
    /// caller read it from a segment that its own checks should have
    /// refused, so it names the seq it was after.
    fn bad_input(&self, kind: CorruptKind) -> Error {
        Error::InvalidEvent(format!(
            "archive {}: a record pushed after seq {:?} is not valid: {kind}",
            self.path.display(),
            self.last_seq
        ))
    }
}
