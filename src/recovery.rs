//! The open path: lock the directory, find the segments, check or rebuild
//! their indexes, and bring the active segment to its last complete unit:
//! in O(1) after a clean close (the marker vouches for it), by a scan
//! after a crash, cutting a torn tail only after copying it to
//! `lost+found/`. A read-only open takes the same decisions without
//! writing anything.

use std::any::Any;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::archive::ArchiveFile;
use crate::catalog::{Piece, PieceStarts};
use crate::error::{CorruptKind, Error, IoContext, Result};
use crate::fsutil::{sync_dir, TMP_SUFFIX};
use crate::lost_found::{self, LostFoundCopy};
use crate::marker::{self, CleanClose};
use crate::options::Options;
use crate::record::RECORD_BYTES_MIN;
use crate::segment::{
    parse_file_name, Access, Segment, INDEX_SUFFIX, SEGMENT_HEADER_BYTES, SEGMENT_SUFFIX, SEQ_MAX,
};
use crate::storage::Storage;
use crate::writer::GROUP_BYTES_MAX;

pub(crate) const SEGMENTS_DIR: &str = "segments";

/// Bytes that an open cut from the end of the active segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TailCut {
    /// The segment file that was cut.
    pub file: PathBuf,
    /// The byte range cut: from the end of the last complete unit to the
    /// last non-zero byte.
    pub offset_start: u64,
    /// End of the byte range cut (exclusive).
    pub offset_end: u64,
    /// Where the bytes were copied before the cut.
    pub lost_found: LostFoundCopy,
}

/// What opening the log found and repaired.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    /// The last close was clean and its marker checked out: nothing was
    /// scanned, nothing needed repair.
    pub closed_cleanly: bool,
    /// Why a clean-close marker that was present was not used (it named
    /// another segment, or did not decode); the log was scanned instead.
    pub marker_ignored: Option<String>,
    /// Non-zero bytes after the last complete unit of the active segment: a
    /// write that never completed or was never synced. The writer's open
    /// cuts them (see `cut`); a read-only open only counts them.
    pub torn_tail_bytes: u64,
    /// Valid records among those bytes (of units that are incomplete, or
    /// that follow an invalid record). Under `Durability::Always` they were
    /// never acknowledged unless the damage hit the very last write before
    /// a crash (a clean close's marker protects that case).
    pub records_dropped: u64,
    /// Sequence numbers of the records in the cut bytes whose headers are
    /// readable, in order.
    pub dropped_seqs: Vec<u64>,
    /// The cut, with where its bytes were kept.
    pub cut: Option<TailCut>,
    /// Leftover temporary files removed.
    pub temp_files_removed: u64,
    /// Index files without a segment removed.
    pub orphan_indexes_removed: u64,
    /// Sequence indexes of sealed segments rebuilt from their segment.
    pub indexes_rebuilt: u64,
    /// Sealed segments found damaged and opened anyway, as (file, byte
    /// offset, what): their index is intact, so only the damaged records
    /// fail to read (with a `Corrupt` error naming the same file).
    pub damaged_segments: Vec<(PathBuf, u64, String)>,
    /// Sealed segments found beside the archive that replaced them (a
    /// crash between the archive's rename and the segment's removal):
    /// the archive is the authoritative copy, and the writer's open
    /// removes the segment.
    pub superseded_segments_removed: u64,
}

pub(crate) struct Opened {
    /// The directory lock (`None` for a read-only open, which takes none).
    pub lock: Option<Box<dyn Any + Send + Sync>>,
    pub segments_dir: PathBuf,
    /// Every piece of the log in order (archives, sealed segments, the
    /// active segment last; a read-only open of a log whose first segment
    /// was never created has none).
    pub pieces: Vec<Piece>,
    pub first_seq: u64,
    pub next_seq: u64,
    pub active_file_len: u64,
    pub index_capacity: u64,
    /// The clean-close marker is on disk and still true; the writer removes
    /// it before it changes anything.
    pub marker_present: bool,
    pub report: RecoveryReport,
}

/// Most index entries the active segment can need: every record is at
/// least `RECORD_BYTES_MIN` bytes, and a segment holds at most its size
/// limit plus one commit group.
pub(crate) fn index_capacity(options: &Options) -> u64 {
    (options.segment_bytes_max + GROUP_BYTES_MAX) / RECORD_BYTES_MIN as u64 + 1
}

/// How much of the active segment readers map: the writer never lets
/// committed data pass `segment_bytes_max` (a batch must fit a segment), so
/// this covers it; anything past the mapping is read with `pread`.
pub(crate) fn active_map_bytes(options: &Options) -> u64 {
    options.segment_bytes_max
}

/// Checks that `dir` is an existing data directory, for opens that must
/// not create one.
pub(crate) fn check_data_dir(storage: &dyn Storage, dir: &Path) -> Result<PathBuf> {
    match std::fs::metadata(dir) {
        Ok(meta) if !meta.is_dir() => {
            return Err(Error::NotADirectory {
                path: dir.to_path_buf(),
            })
        }
        _ => {}
    }
    let segments_dir = dir.join(SEGMENTS_DIR);
    if !storage.exists(dir) || !storage.exists(&segments_dir) {
        return Err(Error::NoDataDirectory {
            path: dir.to_path_buf(),
        });
    }
    Ok(segments_dir)
}

/// The segment and index file names found, sorted; temporary files and
/// orphan indexes are removed under `ReadWrite`.
pub(crate) fn list_segments(
    storage: &dyn Storage,
    segments_dir: &Path,
    access: Access,
    report: &mut RecoveryReport,
) -> Result<Vec<u64>> {
    let mut segment_seqs = Vec::new();
    let mut index_seqs = Vec::new();
    for name in storage.list_dir(segments_dir).at(segments_dir)? {
        if name.ends_with(TMP_SUFFIX) {
            if access == Access::ReadWrite {
                let path = segments_dir.join(&name);
                storage.remove_file(&path).at(&path)?;
                report.temp_files_removed += 1;
            }
        } else if let Some(seq) = parse_file_name(&name, SEGMENT_SUFFIX) {
            if seq == 0 || seq > SEQ_MAX {
                return Err(Error::Corrupt {
                    file: segments_dir.join(&name),
                    offset: 0,
                    kind: CorruptKind::BadHeader("file name sequence number out of range"),
                });
            }
            segment_seqs.push(seq);
        } else if let Some(seq) = parse_file_name(&name, INDEX_SUFFIX) {
            index_seqs.push(seq);
        }
    }
    segment_seqs.sort_unstable();
    if access == Access::ReadWrite {
        for seq in index_seqs {
            if segment_seqs.binary_search(&seq).is_err() {
                let path = segments_dir.join(crate::segment::index_file_name(seq));
                storage.remove_file(&path).at(&path)?;
                report.orphan_indexes_removed += 1;
            }
        }
    }
    Ok(segment_seqs)
}

/// Opens the sealed segments given as `(first seq, first seq of the next
/// piece)`: a sealed segment's record count comes from its successor.
pub(crate) fn open_sealed_segments(
    storage: &dyn Storage,
    segments_dir: &Path,
    sealed: &[(u64, u64)],
    options: &Options,
    access: Access,
    report: &mut RecoveryReport,
) -> Result<Vec<Arc<Segment>>> {
    let mut segments = Vec::with_capacity(sealed.len());
    for &(first, next) in sealed {
        let path = segments_dir.join(crate::segment::segment_file_name(first));
        // Names are unique, so `next > first` and the count is at least 1.
        let (segment, sealed) = Segment::open_sealed(
            storage,
            &path,
            first,
            next - first,
            options.record_bytes_max,
            access,
        )?;
        report.indexes_rebuilt += u64::from(sealed.index_rebuilt);
        if let Some((offset, kind)) = sealed.damage {
            report
                .damaged_segments
                .push((path.clone(), offset, kind.to_string()));
        }
        segments.push(Arc::new(segment));
    }
    Ok(segments)
}

/// Opens every archive of `DIR/archive/` (removing leftover temporary
/// files under `ReadWrite`), in sequence order.
pub(crate) fn open_archives(
    storage: &dyn Storage,
    dir: &Path,
    access: Access,
    report: &mut RecoveryReport,
) -> Result<Vec<Arc<ArchiveFile>>> {
    let archive_dir = dir.join(crate::archiver::ARCHIVE_DIR);
    if !storage.exists(&archive_dir) {
        return Ok(Vec::new());
    }
    if access == Access::ReadWrite {
        let mut removed = false;
        for name in storage.list_dir(&archive_dir).at(&archive_dir)? {
            if name.ends_with(TMP_SUFFIX) {
                let path = archive_dir.join(&name);
                storage.remove_file(&path).at(&path)?;
                report.temp_files_removed += 1;
                removed = true;
            }
        }
        if removed {
            sync_dir(storage, &archive_dir)?;
        }
    }
    let mut archives = Vec::new();
    for (_, path) in crate::archive::archive_paths(storage, &archive_dir)? {
        archives.push(Arc::new(crate::archive::open_named(storage, &path)?));
    }
    Ok(archives)
}

/// Drops from `segment_seqs` the segments an archive of the same range
/// replaced (removing their files under `ReadWrite`).
fn drop_superseded_segments(
    storage: &dyn Storage,
    segments_dir: &Path,
    segment_seqs: &mut Vec<u64>,
    archives: &[Arc<ArchiveFile>],
    access: Access,
    report: &mut RecoveryReport,
) -> Result<()> {
    let superseded: Vec<u64> = segment_seqs
        .iter()
        .copied()
        .filter(|seq| {
            archives
                .binary_search_by_key(seq, |a| a.range_first_seq())
                .is_ok()
        })
        .collect();
    if superseded.is_empty() {
        return Ok(());
    }
    segment_seqs.retain(|seq| !superseded.contains(seq));
    report.superseded_segments_removed = superseded.len() as u64;
    if access == Access::ReadWrite {
        // The archive's name must be durable before the segment's removal
        // is: the archiver's crash may have come between its rename and
        // the sync of `archive/`.
        sync_dir(
            storage,
            &segments_dir.with_file_name(crate::archiver::ARCHIVE_DIR),
        )?;
        for seq in &superseded {
            for name in [
                crate::segment::segment_file_name(*seq),
                crate::segment::index_file_name(*seq),
            ] {
                let path = segments_dir.join(name);
                if storage.exists(&path) {
                    storage.remove_file(&path).at(&path)?;
                }
            }
        }
        sync_dir(storage, segments_dir)?;
        tracing::info!(segments = ?superseded, "removed segments that archives replaced");
    }
    Ok(())
}

/// The start of every piece, archives and segments merged in order, with
/// the sealed segments' successors; checks that archives come before the
/// last segment (only sealed segments are archived) and that each
/// archive's range ends where the next piece starts.
fn plan_pieces(
    segments_dir: &Path,
    segment_seqs: &[u64],
    archives: &[Arc<ArchiveFile>],
) -> Result<Vec<(u64, u64)>> {
    let pieces = PieceStarts::new(
        segment_seqs.iter().copied(),
        archives.iter().map(|a| a.range_first_seq()),
    );
    for archive in archives {
        let first = archive.range_first_seq();
        if let Some(next) = pieces.successor(first) {
            if archive.range_last_seq() + 1 != next {
                return Err(Error::Corrupt {
                    file: archive.path().to_path_buf(),
                    offset: archive.footer_offset(),
                    kind: CorruptKind::Gap {
                        expected: archive.range_last_seq() + 1,
                        found: next,
                    },
                });
            }
        }
        if segment_seqs.last().is_some_and(|&last| last < first) {
            return Err(Error::Corrupt {
                file: segments_dir.join(crate::segment::segment_file_name(
                    segment_seqs.last().copied().unwrap_or(0),
                )),
                offset: 16,
                kind: CorruptKind::BadHeader("an archive follows the active segment"),
            });
        }
    }
    // Sealed segments: every segment but the last, with the start of the
    // piece that follows it.
    let sealed = segment_seqs
        .windows(2)
        .map(|pair| (pair[0], pieces.successor(pair[0]).unwrap_or(pair[1])))
        .collect();
    Ok(sealed)
}

/// Reads the clean-close marker. One that does not decode, or that names
/// a segment other than the last, is not used (the log is scanned, as
/// after a crash), and the report says why.
fn read_marker(
    storage: &dyn Storage,
    segments_dir: &Path,
    last_segment: Option<u64>,
    report: &mut RecoveryReport,
) -> Option<CleanClose> {
    match marker::read(storage, segments_dir) {
        Ok(Some(marker)) if Some(marker.active_first_seq) == last_segment => Some(marker),
        Ok(Some(marker)) => {
            report.marker_ignored = Some(format!(
                "it names segment {} but the last segment is {}",
                marker.active_first_seq,
                last_segment.unwrap_or(0)
            ));
            None
        }
        Ok(None) => None,
        Err(e) => {
            report.marker_ignored = Some(e.to_string());
            None
        }
    }
}

pub(crate) fn open(
    storage: &dyn Storage,
    dir: &Path,
    options: &Options,
    access: Access,
) -> Result<Opened> {
    let _span = tracing::info_span!("evlog.recovery", dir = %dir.display(), ?access).entered();
    let (lock, segments_dir) = match access {
        Access::ReadOnly | Access::Verify => (None, check_data_dir(storage, dir)?),
        Access::ReadWrite => {
            if let Ok(meta) = std::fs::metadata(dir) {
                if !meta.is_dir() {
                    return Err(Error::NotADirectory {
                        path: dir.to_path_buf(),
                    });
                }
            }
            let dir_existed = storage.exists(dir);
            storage.create_dir_all(dir).at(dir)?;
            let lock = storage.lock_dir(dir)?;
            let segments_dir = dir.join(SEGMENTS_DIR);
            if !storage.exists(&segments_dir) {
                storage.create_dir_all(&segments_dir).at(&segments_dir)?;
                sync_dir(storage, dir)?;
                if !dir_existed {
                    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
                        sync_dir(storage, parent)?;
                    }
                }
            }
            (Some(lock), segments_dir)
        }
    };
    let mut report = RecoveryReport::default();
    let mut segment_seqs = list_segments(storage, &segments_dir, access, &mut report)?;
    let archives = open_archives(storage, dir, access, &mut report)?;
    drop_superseded_segments(
        storage,
        &segments_dir,
        &mut segment_seqs,
        &archives,
        access,
        &mut report,
    )?;
    let sealed_plan = plan_pieces(&segments_dir, &segment_seqs, &archives)?;
    // Where the first segment must start when there is none: after the
    // last archive (a directory holding only archives), else at 1.
    let archives_end = archives.last().map_or(1, |a| a.range_last_seq() + 1);
    let marker = read_marker(
        storage,
        &segments_dir,
        segment_seqs.last().copied(),
        &mut report,
    );
    if access == Access::ReadWrite {
        if report.marker_ignored.is_some() {
            tracing::warn!(reason = ?report.marker_ignored, "clean-close marker not used; scanning the active segment");
            marker::remove(storage, &segments_dir)?;
        }
        // Always, not only after removals, unless a clean close left
        // everything synced: a crash (or a failed directory sync that
        // poisoned the last run) can leave a segment whose name is not yet
        // durable, and appends acknowledged into it would vanish with it.
        if marker.is_none() || report.temp_files_removed + report.orphan_indexes_removed > 0 {
            sync_dir(storage, &segments_dir)?;
        }
    }

    let capacity = index_capacity(options);
    let mut segments = open_sealed_segments(
        storage,
        &segments_dir,
        &sealed_plan,
        options,
        access,
        &mut report,
    )?;
    let mut active_file_len = SEGMENT_HEADER_BYTES;
    let mut marker_present = false;
    match segment_seqs.last() {
        None if access != Access::ReadWrite => {
            // A directory whose first segment was never created: an empty
            // log. Nothing to map.
        }
        None => segments.push(Arc::new(Segment::create(
            storage,
            &segments_dir,
            archives_end,
            capacity,
            active_map_bytes(options),
        )?)),
        Some(&last) => {
            let path = segments_dir.join(crate::segment::segment_file_name(last));
            let mut found = Segment::inspect_active(
                storage,
                &path,
                last,
                marker.as_ref(),
                options.record_bytes_max,
                capacity,
                access,
            )?;
            report.closed_cleanly = found.closed_cleanly;
            marker_present = found.closed_cleanly;
            if let Some(torn) = found.torn.take() {
                report.torn_tail_bytes = torn.bytes.len() as u64;
                report.records_dropped = torn.dropped_seqs.len() as u64;
                report.dropped_seqs = torn.dropped_seqs.clone();
                if access == Access::ReadWrite {
                    report.cut = Some(cut_torn_tail(storage, dir, &path, &found, &torn)?);
                    found.file_len = torn.offset;
                }
            }
            if access == Access::ReadWrite && !found.closed_cleanly {
                // What recovery kept may so far live only in the page cache
                // (after a process crash); make it durable, since records
                // written from now on will claim it is (`synced_delta`).
                found.sync_data(&path)?;
            }
            active_file_len = found.file_len;
            let segment = Segment::active(
                storage,
                &path,
                last,
                found,
                capacity,
                active_map_bytes(options),
                access,
            )?;
            segments.push(Arc::new(segment));
        }
    }
    let next_seq = segments.last().map_or(archives_end, |active| {
        active.first_seq + active.record_count()
    });
    let mut pieces: Vec<Piece> = archives.into_iter().map(Piece::archive).collect();
    pieces.extend(segments.into_iter().map(Piece::segment));
    pieces.sort_by_key(|p| p.first_seq);
    let first_seq = crate::catalog::first_held_seq(&pieces, next_seq);
    Ok(Opened {
        lock,
        segments_dir,
        first_seq,
        next_seq,
        active_file_len,
        index_capacity: capacity,
        pieces,
        marker_present,
        report,
    })
}

/// Copies a torn tail to `lost+found/`, then cuts it and syncs the file.
fn cut_torn_tail(
    storage: &dyn Storage,
    dir: &Path,
    path: &Path,
    found: &crate::segment::ActiveFound,
    torn: &crate::segment::TornTail,
) -> Result<TailCut> {
    let lost_found = lost_found::preserve(storage, dir, path, torn.offset, &torn.bytes)?;
    // Cut rather than zero: the cut needs no free space.
    found.cut(path, torn.offset)?;
    let cut = TailCut {
        file: path.to_path_buf(),
        offset_start: torn.offset,
        offset_end: torn.offset + torn.bytes.len() as u64,
        lost_found,
    };
    tracing::warn!(
        file = %path.display(),
        offset_start = cut.offset_start,
        offset_end = cut.offset_end,
        dropped_seqs = ?torn.dropped_seqs,
        kept_in = ?cut.lost_found.path,
        "cut the torn tail of the active segment"
    );
    Ok(cut)
}
