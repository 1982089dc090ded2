//! Archives of cold sealed segments: seekable zstd files
//! (`DIR/archive/<first seq>.evz`) whose data frames hold whole records in
//! the segment record format, and [`Archive`], the offline reader that
//! needs nothing but those files.
//!
//! The layout is in `format.rs` and FORMAT.md ("Archive file"); `writer.rs`
//! writes one file, `reader.rs` opens and reads one, `cache.rs` keeps
//! decompressed frames for repeated reads.

pub(crate) mod cache;
pub(crate) mod format;
pub(crate) mod frames;
pub(crate) mod reader;
pub(crate) mod writer;

use std::ops::{Bound, RangeBounds};
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub(crate) use cache::FrameCache;
pub use format::DeletionNote;
pub(crate) use format::{archive_file_name, ARCHIVE_SUFFIX, NOTE_RULE_BYTES_MAX};
pub(crate) use reader::ArchiveFile;
pub use reader::ArchiveVerifyReport;
pub(crate) use writer::ArchiveWriter;

use crate::error::{CorruptKind, Error, IoContext, Result};
use crate::event::LoggedEvent;
use crate::record::{decode_body, RECORD_HEADER_BYTES};
use crate::storage::{OsStorage, Storage};
use frames::Frames;
pub(crate) use reader::FrameCursor;

/// Cache of an offline [`Archive`]: the same default as
/// `Options::archive_cache_bytes`.
const OFFLINE_CACHE_BYTES: u64 = crate::options::ARCHIVE_CACHE_BYTES_DEFAULT;

/// One data frame of an archive, as its index describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ArchiveFrameInfo {
    /// Offset of the zstd frame in the file.
    pub offset: u64,
    /// Bytes of the zstd frame in the file.
    pub compressed_bytes: u32,
    /// Bytes of the records once decompressed.
    pub decompressed_bytes: u32,
    /// Sequence number of the frame's first record.
    pub first_seq: u64,
    /// Sequence number of the frame's last record.
    pub last_seq: u64,
    /// Records in the frame.
    pub record_count: u32,
    /// CRC-32 of the decompressed bytes, and of the compressed ones.
    pub crc: u32,
    /// CRC-32 of the compressed frame bytes.
    pub compressed_crc: u32,
}

/// What an archive file's footer, frame index and deletion notes say.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ArchiveInfo {
    /// The archive file.
    pub path: PathBuf,
    /// Its size in bytes.
    pub file_bytes: u64,
    /// The format version its header names.
    pub format_version: u32,
    /// The covered range: every seq in it is present or was deleted.
    pub range_first_seq: u64,
    /// Last sequence number of the covered range (inclusive).
    pub range_last_seq: u64,
    /// Events present in the file.
    pub event_count: u64,
    /// First and last seq present (`None` for an archive of deletions only).
    pub present_seqs: Option<(u64, u64)>,
    /// Smallest and largest event timestamp, µs since the epoch.
    pub timestamps_us: Option<(i64, i64)>,
    /// Bytes of the records uncompressed, and their CRC-32.
    pub content_bytes: u64,
    /// CRC-32 of the uncompressed records (`content_bytes` of them).
    pub content_crc: u32,
    /// The data frames, in sequence order.
    pub frames: Vec<ArchiveFrameInfo>,
    /// What retention deleted from the covered range.
    pub deletions: Vec<DeletionNote>,
}

/// One record of an archive, for inspection (`evlog-dump`).
#[derive(Debug)]
#[non_exhaustive]
pub struct ArchiveRecordInfo {
    /// Number of the data frame holding it, and its offset in the
    /// decompressed frame.
    pub frame: u32,
    /// Offset of the record in the decompressed frame (see `frame`).
    pub offset_in_frame: u64,
    /// The record's sequence number.
    pub seq: u64,
    /// Bytes of the record, header and body.
    pub record_bytes: u64,
    /// Records after this one in its atomic unit (0: the unit's last).
    pub unit_remaining: u32,
    /// The highest seq that was durable when the record was written (its
    /// header's seq minus `synced_delta`).
    pub synced_through: u64,
    /// The decoded event, or why its body does not decode.
    pub event: std::result::Result<LoggedEvent, CorruptKind>,
}

/// Archive files read on their own: one `.evz` file, or a directory of
/// them (such as a copy of `DIR/archive/`), with no segments or indexes.
///
/// ```no_run
/// # fn main() -> evlog::Result<()> {
/// let archive = evlog::Archive::open("backup/archive")?;
/// for event in archive.iter(..)? {
///     let event = event?;
///     println!("{} {}", event.seq, event.event_type);
/// }
/// # Ok(()) }
/// ```
pub struct Archive {
    /// Sorted by range, ranges disjoint. Shared with the read-ahead
    /// thread of an iteration.
    files: Vec<Arc<ArchiveFile>>,
    cache: FrameCache,
}

impl std::fmt::Debug for Archive {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Archive")
            .field(
                "files",
                &self.files.iter().map(|a| a.path()).collect::<Vec<_>>(),
            )
            .finish()
    }
}

/// The archive file names (`<20 digits>.evz`) in `dir`, sorted.
pub(crate) fn archive_paths(storage: &dyn Storage, dir: &Path) -> Result<Vec<(u64, PathBuf)>> {
    let mut found: Vec<(u64, PathBuf)> = storage
        .list_dir(dir)
        .at(dir)?
        .into_iter()
        .filter_map(|name| {
            crate::segment::parse_file_name(&name, ARCHIVE_SUFFIX).map(|seq| (seq, dir.join(name)))
        })
        .collect();
    found.sort();
    Ok(found)
}

/// Opens one archive and checks that a file named like an archive covers
/// the range its name says.
pub(crate) fn open_named(storage: &dyn Storage, path: &Path) -> Result<ArchiveFile> {
    let file = ArchiveFile::open(storage, path)?;
    let named = path
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| crate::segment::parse_file_name(n, ARCHIVE_SUFFIX));
    if named.is_some_and(|seq| seq != file.range_first_seq()) {
        return Err(Error::Corrupt {
            file: path.to_path_buf(),
            offset: file.footer_offset(),
            kind: CorruptKind::BadHeader("range_first_seq differs from the file name"),
        });
    }
    Ok(file)
}

impl Archive {
    /// Opens a `.evz` file, or every `<20 digits>.evz` file of a
    /// directory, checking each file's metadata (see FORMAT.md: a
    /// truncated or altered file fails here) and that no two cover
    /// overlapping ranges.
    pub fn open(path: impl AsRef<Path>) -> Result<Archive> {
        Archive::open_with(&OsStorage, path.as_ref(), OFFLINE_CACHE_BYTES)
    }

    pub(crate) fn open_with(
        storage: &dyn Storage,
        path: &Path,
        cache_bytes: u64,
    ) -> Result<Archive> {
        let metadata = std::fs::metadata(path);
        let is_dir = match &metadata {
            Ok(m) => m.is_dir(),
            // A simulated storage has no std::fs view: ask it.
            Err(_) => storage.list_dir(path).is_ok(),
        };
        let files = if is_dir {
            let paths = archive_paths(storage, path)?;
            if paths.is_empty() {
                return Err(Error::NoDataDirectory {
                    path: path.to_path_buf(),
                });
            }
            let mut files = Vec::with_capacity(paths.len());
            for (_, p) in paths {
                files.push(Arc::new(open_named(storage, &p)?));
            }
            files.sort_by_key(|f| f.range_first_seq());
            for pair in files.windows(2) {
                if pair[0].range_last_seq() >= pair[1].range_first_seq() {
                    return Err(Error::OverlappingArchives {
                        first: pair[0].path().to_path_buf(),
                        second: pair[1].path().to_path_buf(),
                    });
                }
            }
            files
        } else {
            vec![Arc::new(open_named(storage, path)?)]
        };
        Ok(Archive {
            files,
            cache: FrameCache::new(cache_bytes),
        })
    }

    /// First seq of the first covered range.
    pub fn first_seq(&self) -> u64 {
        self.files.first().map_or(0, |f| f.range_first_seq())
    }

    /// Last seq of the last covered range.
    pub fn last_seq(&self) -> u64 {
        self.files.last().map_or(0, |f| f.range_last_seq())
    }

    /// Events present, over all files.
    pub fn event_count(&self) -> u64 {
        self.files.iter().map(|f| f.event_count()).sum()
    }

    /// Every file's footer, frames and deletion notes.
    pub fn info(&self) -> Vec<ArchiveInfo> {
        self.files
            .iter()
            .map(|a| ArchiveInfo {
                path: a.path().to_path_buf(),
                file_bytes: a.file_bytes(),
                format_version: format::ARCHIVE_FORMAT_VERSION,
                range_first_seq: a.range_first_seq(),
                range_last_seq: a.range_last_seq(),
                event_count: a.event_count(),
                present_seqs: a.present_seqs(),
                timestamps_us: a.timestamps_us(),
                content_bytes: a.content_bytes(),
                content_crc: a.content_crc(),
                frames: a
                    .frames()
                    .iter()
                    .map(|e| ArchiveFrameInfo {
                        offset: e.offset,
                        compressed_bytes: e.compressed_bytes,
                        decompressed_bytes: e.decompressed_bytes,
                        first_seq: e.first_seq,
                        last_seq: e.last_seq,
                        record_count: e.record_count,
                        crc: e.crc,
                        compressed_crc: e.compressed_crc,
                    })
                    .collect(),
                deletions: a.deletions().to_vec(),
            })
            .collect()
    }

    /// The deletion notes of every file, in seq order.
    pub fn deletions(&self) -> Vec<DeletionNote> {
        self.files
            .iter()
            .flat_map(|a| a.deletions().iter().cloned())
            .collect()
    }

    fn file_of(&self, seq: u64) -> Option<&ArchiveFile> {
        let i = self.files.partition_point(|a| a.range_last_seq() < seq);
        self.files
            .get(i)
            .filter(|a| a.range_first_seq() <= seq)
            .map(|a| &**a)
    }

    /// The event `seq`: decompresses at most one frame (kept in a bounded
    /// cache for the next reads). [`Error::Deleted`] when a deletion note
    /// of its archive covers it, [`Error::NotFound`] when nothing does.
    pub fn get(&self, seq: u64) -> Result<LoggedEvent> {
        let Some(file) = self.file_of(seq) else {
            return Err(Error::NotFound(seq));
        };
        if let Some(event) = file.read_event(seq, &self.cache)? {
            return Ok(event);
        }
        Err(match file.deletion_of(seq) {
            Some(note) => Error::Deleted {
                seq,
                rule: note.rule.clone(),
                deleted_at_us: note.deleted_at_us,
            },
            None => Error::NotFound(seq),
        })
    }

    /// The events present with seqs in `range`, in order, streaming. A
    /// read-ahead thread (`evlog:archive-read`) decompresses the next
    /// frames (not through the cache) while the caller decodes this one,
    /// and the caller decompresses one too rather than wait for it (see
    /// `frames.rs`), at most four frames ahead, so memory stays bounded
    /// by a few frames and a replay uses a second core. Deleted seqs are
    /// skipped; the first damage found is the last item.
    pub fn iter(&self, range: impl RangeBounds<u64>) -> Result<ArchiveIter<'_>> {
        let from_seq = match range.start_bound() {
            Bound::Included(&s) => s,
            Bound::Excluded(&s) => s.saturating_add(1),
            Bound::Unbounded => 0,
        };
        let through_seq = match range.end_bound() {
            Bound::Included(&s) => s,
            Bound::Excluded(&s) => s.saturating_sub(1),
            Bound::Unbounded => u64::MAX,
        };
        let file_index = self
            .files
            .partition_point(|a| a.range_last_seq() < from_seq);
        let files: Vec<Arc<ArchiveFile>> = self.files[file_index..].to_vec();
        Ok(ArchiveIter {
            archive: std::marker::PhantomData,
            from_seq,
            through_seq,
            frames: Frames::start(files, from_seq, through_seq),
            frame: None,
            cursor: FrameCursor::default(),
            done: from_seq > through_seq,
        })
    }

    /// Decompresses every frame of every file and checks every CRC, every
    /// body, the counts and the content checksums (see
    /// [`ArchiveVerifyReport`] for what is counted).
    pub fn verify(&self) -> Result<ArchiveVerifyReport> {
        let mut report = ArchiveVerifyReport::empty();
        for file in &self.files {
            report.add(&file.verify()?);
        }
        Ok(report)
    }

    /// Calls `each` with every record of every file, in order, with where
    /// it lies; for `evlog-dump`. Damage to a frame ends the walk with its
    /// error; a body that does not decode is reported in the record.
    #[doc(hidden)]
    pub fn inspect_records(
        &self,
        mut each: impl FnMut(&Path, &ArchiveRecordInfo) -> std::io::Result<()>,
    ) -> Result<()> {
        for file in &self.files {
            for (number, entry) in file.frames().iter().enumerate() {
                let bytes = file.read_frame(number, None)?;
                let mut cursor = FrameCursor::default();
                loop {
                    let offset_in_frame = cursor.position() as u64;
                    let found =
                        cursor
                            .next_with_header(&bytes, entry)
                            .map_err(|kind| Error::Corrupt {
                                file: file.path().to_path_buf(),
                                offset: entry.offset,
                                kind,
                            })?;
                    let Some((header, record)) = found else {
                        break;
                    };
                    let info = ArchiveRecordInfo {
                        frame: number as u32,
                        offset_in_frame,
                        seq: header.seq,
                        record_bytes: header.record_bytes(),
                        unit_remaining: header.unit_remaining,
                        synced_through: header.synced_through(),
                        event: decode_body(header.seq, &record[RECORD_HEADER_BYTES..]),
                    };
                    each(file.path(), &info).at(file.path())?;
                }
            }
        }
        Ok(())
    }

    /// Empties the frame cache (benchmarks measure cold reads with it).
    #[doc(hidden)]
    pub fn clear_cache(&self) {
        self.cache.clear();
    }
}

/// The iterator of [`Archive::iter`].
pub struct ArchiveIter<'a> {
    /// Ties the iterator to its `Archive` (the frame pipeline holds its own
    /// references to the files).
    archive: std::marker::PhantomData<&'a Archive>,
    from_seq: u64,
    through_seq: u64,
    /// Frames in the order the iteration reads them, decompressed ahead.
    frames: Frames,
    /// The frame being read.
    frame: Option<(Arc<ArchiveFile>, usize, Arc<Vec<u8>>)>,
    cursor: FrameCursor,
    done: bool,
}

impl ArchiveIter<'_> {
    fn step(&mut self) -> Result<Option<LoggedEvent>> {
        loop {
            if let Some((file, number, bytes)) = &self.frame {
                let entry = &file.frames()[*number];
                let next = self
                    .cursor
                    .next(bytes, entry)
                    .map_err(|kind| Error::Corrupt {
                        file: file.path().to_path_buf(),
                        offset: entry.offset,
                        kind,
                    })?;
                match next {
                    Some((seq, _)) if seq < self.from_seq => continue,
                    Some((seq, _)) if seq > self.through_seq => return Ok(None),
                    Some((seq, record)) => {
                        return decode_body(seq, &record[RECORD_HEADER_BYTES..])
                            .map(Some)
                            .map_err(|kind| Error::Corrupt {
                                file: file.path().to_path_buf(),
                                offset: entry.offset,
                                kind,
                            })
                    }
                    None => {}
                }
            }
            // The next frame, or the end.
            match self.frames.next() {
                Some((file, number, bytes)) => {
                    self.frame = Some((file, number, bytes?));
                    self.cursor = FrameCursor::default();
                }
                None => {
                    self.frame = None;
                    return Ok(None);
                }
            }
        }
    }
}

impl Iterator for ArchiveIter<'_> {
    type Item = Result<LoggedEvent>;

    fn next(&mut self) -> Option<Result<LoggedEvent>> {
        if self.done {
            return None;
        }
        match self.step() {
            Ok(Some(event)) => Some(Ok(event)),
            Ok(None) => {
                self.done = true;
                None
            }
            Err(error) => {
                self.done = true;
                Some(Err(error))
            }
        }
    }
}

/// Opens `bytes` as an archive on a simulated disk, reads every event
/// with `iter` and every present seq with `get`, and verifies it: the
/// whole read surface, for the fuzz target and the no-panic tests.
pub(crate) fn check_archive_bytes(bytes: &[u8]) -> Result<u64> {
    let storage = crate::storage::SimStorage::new();
    let path = Path::new("/fuzz/00000000000000000001.evz");
    storage.write_file(path, bytes);
    let archive = Archive::open_with(&storage, path, 1 << 20)?;
    let mut events = 0;
    for event in archive.iter(..)? {
        let event = event?;
        archive.get(event.seq)?;
        events += 1;
    }
    archive.verify()?;
    Ok(events)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::event::Event;
    use crate::storage::{Fault, FaultKind, OpKind, SimStorage};
    use uuid::Uuid;

    /// The record of `seq`, with a body that varies with it.
    fn record(seq: u64) -> Vec<u8> {
        let event = Event::new("test.archived")
            .entity("task", format!("T-{}", seq % 7))
            .json_payload(&serde_json::json!({"seq": seq, "pad": "x".repeat((seq % 50) as usize)}))
            .unwrap();
        let mut body = Vec::new();
        crate::record::encode_body(
            &event,
            Uuid::from_u128(u128::from(seq)),
            seq as i64 * 10,
            &mut body,
        );
        let mut out = Vec::new();
        crate::record::encode_record(&mut out, seq, 0, 0, &body);
        out
    }

    pub(crate) fn write(
        storage: &SimStorage,
        seqs: &[u64],
        notes: &[DeletionNote],
        range: (u64, u64),
        frame_bytes: usize,
    ) -> Result<writer::ArchiveSummary> {
        let mut writer = ArchiveWriter::with_frame_bytes(
            storage,
            Path::new("/d/archive"),
            range.0,
            3,
            frame_bytes,
        )?;
        for &seq in seqs {
            writer.push_record(&record(seq))?;
        }
        for note in notes {
            writer.note_deletion(note.clone())?;
        }
        writer.finish(range.1)
    }

    #[test]
    fn archive_reads_every_seq_scans_ranges_and_explains_gaps() {
        let storage = SimStorage::new();
        // 100..=300 with every third seq deleted by a rule.
        let seqs: Vec<u64> = (100..=300).filter(|s| s % 3 != 0).collect();
        let deleted = (100..=300).filter(|s| s % 3 == 0).count() as u64;
        let note = DeletionNote::new(102, 300, deleted, "P2 after 1 year", 77);
        let summary = write(
            &storage,
            &seqs,
            std::slice::from_ref(&note),
            (100, 310),
            1024,
        )
        .unwrap();
        assert!(summary.frame_count > 5, "{summary:?}");
        assert_eq!(summary.event_count, seqs.len() as u64);
        let path = Path::new("/d/archive").join(archive_file_name(100));
        assert_eq!(summary.path, path);
        assert!(!storage.exists(&crate::fsutil::tmp_path(&path)));
        let file = ArchiveFile::open(&storage, &path).unwrap();
        assert_eq!(file.present_seqs(), Some((100, 299)));
        assert_eq!(file.timestamps_us(), Some((1000, 2990)));
        assert_eq!(file.deletions(), std::slice::from_ref(&note));
        let cache = FrameCache::new(1 << 20);
        for seq in 90..=320 {
            let event = file.read_event(seq, &cache).unwrap();
            assert_eq!(
                event.map(|e| (e.seq, e.timestamp_us)),
                seqs.contains(&seq).then_some((seq, seq as i64 * 10))
            );
        }
        assert_eq!(
            file.deletion_of(150).map(|n| n.rule.as_str()),
            Some("P2 after 1 year")
        );
        assert_eq!(file.deletion_of(101), None);

        let mut seen = Vec::new();
        file.scan_bodies(150, 170, Some(&cache), &mut |seq, body| {
            assert_eq!(crate::record::body_timestamp_us(body), Ok(seq as i64 * 10));
            seen.push(seq);
            Ok(())
        })
        .unwrap();
        assert_eq!(seen, (150..=170).filter(|s| s % 3 != 0).collect::<Vec<_>>());
        let mut records = Vec::new();
        file.for_each_record(0, u64::MAX, |seq, bytes| {
            assert_eq!(bytes, record(seq));
            records.push(seq);
            Ok(())
        })
        .unwrap();
        assert_eq!(records, seqs);
        // A visitor's error is damage in that body, named at its frame.
        let error = file
            .scan_bodies(200, 200, None, &mut |_, _| {
                Err(CorruptKind::Decode("test".into()))
            })
            .unwrap_err();
        assert!(
            matches!(
                error,
                Error::Corrupt {
                    kind: CorruptKind::Decode(_),
                    ..
                }
            ),
            "{error}"
        );

        let report = file.verify().unwrap();
        assert_eq!(report.events, seqs.len() as u64);
        assert_eq!(report.deleted_events, deleted);
        // 301..=310 are covered but neither present nor noted.
        assert_eq!(report.unexplained_missing, 10);
    }

    #[test]
    fn archive_rewrite_replaces_the_file_and_the_cache_never_serves_the_old_frames() {
        let storage = SimStorage::new();
        write(&storage, &(1..=50).collect::<Vec<_>>(), &[], (1, 50), 1024).unwrap();
        let path = Path::new("/d/archive").join(archive_file_name(1));
        let cache = FrameCache::new(1 << 20);
        let old = ArchiveFile::open(&storage, &path).unwrap();
        assert!(old.read_event(2, &cache).unwrap().is_some());
        // Compaction: keep the odd seqs, note the even ones.
        let kept: Vec<u64> = (1..=50).filter(|s| s % 2 == 1).collect();
        let note = DeletionNote::new(2, 50, 25, "compaction", 5);
        write(&storage, &kept, &[note], (1, 50), 1024).unwrap();
        let new = ArchiveFile::open(&storage, &path).unwrap();
        assert_eq!(new.event_count(), 25);
        assert!(new.read_event(2, &cache).unwrap().is_none());
        assert_eq!(new.read_event(3, &cache).unwrap().unwrap().seq, 3);
        cache.forget_archive(1);
        assert_eq!(cache.bytes(), 0);
    }

    #[test]
    fn tombstone_archive_holds_only_notes() {
        let storage = SimStorage::new();
        let notes = [
            DeletionNote::new(10, 19, 10, "all after 2 years", 1),
            DeletionNote::new(20, 29, 10, "all after 3 years", 2),
        ];
        let summary = write(&storage, &[], &notes, (10, 29), 1024).unwrap();
        assert_eq!((summary.event_count, summary.frame_count), (0, 0));
        let path = Path::new("/d/archive").join(archive_file_name(10));
        let file = ArchiveFile::open(&storage, &path).unwrap();
        assert_eq!(file.present_seqs(), None);
        assert_eq!(file.deletions(), &notes);
        assert!(file.read_event(15, &FrameCache::new(0)).unwrap().is_none());
        let report = file.verify().unwrap();
        assert_eq!(
            (
                report.events,
                report.deleted_events,
                report.unexplained_missing
            ),
            (0, 20, 0)
        );
    }

    #[test]
    fn writer_refuses_bad_input_and_leaves_no_final_file_on_a_failed_sync() {
        let storage = SimStorage::new();
        assert!(
            write(&storage, &[5, 4], &[], (1, 10), 1024).is_err(),
            "decreasing"
        );
        assert!(
            write(&storage, &[5], &[], (6, 10), 1024).is_err(),
            "before the range"
        );
        assert!(
            write(&storage, &[5], &[], (1, 4), 1024).is_err(),
            "after the range"
        );
        let outside = DeletionNote::new(1, 20, 1, "r", 0);
        assert!(write(&storage, &[5], &[outside], (1, 10), 1024).is_err());
        let mut damaged = record(3);
        damaged[30] ^= 1;
        let mut writer =
            ArchiveWriter::with_frame_bytes(&storage, Path::new("/d/archive"), 1, 3, 1024).unwrap();
        assert!(writer.push_record(&damaged).is_err());

        let storage = SimStorage::new();
        storage.set_fault(Some(Fault {
            op: OpKind::Sync,
            nth: 1,
            kind: FaultKind::Io,
            sticky: false,
        }));
        assert!(write(&storage, &[1, 2, 3], &[], (1, 3), 1024).is_err());
        assert!(!storage.exists(&Path::new("/d/archive").join(archive_file_name(1))));
    }

    #[test]
    fn archive_survives_a_power_cut_after_finish() {
        let storage = SimStorage::new();
        write(&storage, &(1..=40).collect::<Vec<_>>(), &[], (1, 40), 512).unwrap();
        let after = storage.crash(Some(7));
        let path = Path::new("/d/archive").join(archive_file_name(1));
        let file = ArchiveFile::open(&after, &path).unwrap();
        assert_eq!(file.verify().unwrap().events, 40);
    }

    // Proves that mutated archives (bytes replaced, inserted, removed,
    // fields set to extreme values) give errors, never a panic or a huge
    // allocation.
    #[test]
    fn archive_mutations_never_panic() {
        let storage = SimStorage::new();
        let summary = write(&storage, &(1..=30).collect::<Vec<_>>(), &[], (1, 30), 512).unwrap();
        let bytes = storage.read_file(&summary.path).unwrap();
        assert_eq!(check_archive_bytes(&bytes).unwrap(), 30);
        let mut rng = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = |n: usize| {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            (rng % n as u64) as usize
        };
        for round in 0..3000 {
            let mut damaged = bytes.clone();
            for _ in 0..1 + next(4) {
                let at = next(damaged.len());
                match next(4) {
                    0 => damaged[at] = next(256) as u8,
                    1 => damaged.insert(at, next(256) as u8),
                    2 => {
                        damaged.remove(at);
                    }
                    _ => {
                        let end = (at + 4).min(damaged.len());
                        damaged[at..end].fill(0xFF);
                    }
                }
            }
            let _ = check_archive_bytes(&damaged).map(|n| assert!(n <= 30, "round {round}"));
        }
        assert!(check_archive_bytes(&[]).is_err());
    }

    #[test]
    fn open_refuses_every_truncation_and_every_flipped_bit_of_the_metadata() {
        let storage = SimStorage::new();
        let summary = write(
            &storage,
            &[1, 2, 3, 5, 8],
            &[DeletionNote::new(4, 4, 1, "r", 0)],
            (1, 9),
            256,
        )
        .unwrap();
        let path = summary.path;
        let bytes = storage.read_file(&path).unwrap();
        let probe = Path::new("/d/archive/probe.evz");
        for len in 0..bytes.len() {
            storage.write_file(probe, &bytes[..len]);
            assert!(ArchiveFile::open(&storage, probe).is_err(), "cut at {len}");
        }
        let data_bytes = ArchiveFile::open(&storage, &path)
            .unwrap()
            .frames()
            .iter()
            .map(|e| u64::from(e.compressed_bytes))
            .sum::<u64>() as usize;
        for bit in data_bytes * 8..bytes.len() * 8 {
            let mut damaged = bytes.clone();
            damaged[bit / 8] ^= 1 << (bit % 8);
            storage.write_file(probe, &damaged);
            assert!(ArchiveFile::open(&storage, probe).is_err(), "bit {bit}");
        }
    }
}
