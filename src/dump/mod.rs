//! Inspection and verification of data files without opening the log (no
//! lock is taken, nothing is written), for `evlog-dump`.
//!
//! - `mod.rs`: segments (records, headers, the first problem), the
//!   pieces of a data directory, what recovery would keep, `verify`;
//! - `files`: what a path is, and the readers of the other file kinds
//!   (lost+found copies, the marker, an index alone, `index/`), `--hex`;
//! - `select`: the filter flags; `stats`: `--stats`.

mod files;
mod select;
mod stats;

pub use files::{
    hex_around, identify, inspect_lost_found, lock_holder, lost_found_offset, read_holds_file,
    read_lock_pid, read_marker, read_secondary_index, read_seq_index, LostFoundReport, MarkerInfo,
    PathKind, SecondaryIndexInfo, SeqIndexInfo, HEX_CONTEXT_BYTES,
};
pub use select::Selection;
pub use stats::{DumpStats, FileStats};

use std::fs::File;
use std::path::{Path, PathBuf};

use crate::error::{CorruptKind, Error, IoContext, Result};
use crate::event::LoggedEvent;
use crate::index::seq::{decode_index_header, INDEX_ENTRY_BYTES, INDEX_HEADER_BYTES};
use crate::options::RECORD_BYTES_LIMIT;
use crate::record::{decode_body, RECORD_HEADER_BYTES};
use crate::recovery::SEGMENTS_DIR;
use crate::segment::{
    parse_file_name, read_segment_header, scan_records, scan_records_from, sealed_error, Access,
    Segment, INDEX_SUFFIX, SEGMENT_HEADER_BYTES, SEGMENT_SUFFIX,
};
use crate::storage::OsStorage;

/// One record as found on disk.
#[derive(Debug)]
pub struct RecordInfo {
    /// Byte offset of the record in its file.
    pub offset: u64,
    /// Its sequence number.
    pub seq: u64,
    /// Its length, header and body.
    pub record_bytes: u64,
    /// Records after this one in its atomic unit (its append request).
    pub unit_remaining: u32,
    /// Highest sequence number durable when this record was written.
    pub synced_through: u64,
    /// The decoded event, or why its body does not decode.
    pub event: std::result::Result<LoggedEvent, CorruptKind>,
}

impl RecordInfo {
    /// The `evlog-dump --json` line of this record: the event's JSON form
    /// ([`crate::json::event_to_json`]) with the record's byte offset in
    /// its file as a last field, `_offset`; `None` when the body does not
    /// decode.
    pub fn to_json(&self) -> Option<Box<serde_json::value::RawValue>> {
        self.event
            .as_ref()
            .ok()
            .map(|event| crate::json::event_json(event, Some(self.offset)))
    }
}

/// The `evlog-dump --json` line of an event found at byte `offset` of a
/// file: [`crate::json::event_to_json`] with `_offset` as a last field.
pub fn event_json_at(event: &LoggedEvent, offset: u64) -> Box<serde_json::value::RawValue> {
    crate::json::event_json(event, Some(offset))
}

/// The first thing wrong in a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The file it is in.
    pub file: PathBuf,
    /// The byte offset where it starts.
    pub offset: u64,
    /// What is wrong there.
    pub what: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} at byte offset {}: {}",
            self.file.display(),
            self.offset,
            self.what
        )
    }
}

/// What a segment file holds.
#[derive(Debug)]
pub struct SegmentReport {
    /// The segment file.
    pub path: PathBuf,
    /// The first seq in its header.
    pub first_seq: u64,
    /// The segment format version in its header.
    pub format_version: u32,
    /// Its length.
    pub file_bytes: u64,
    /// Valid records (including those of an incomplete last unit).
    pub records: u64,
    /// End of the last valid record.
    pub end_offset: u64,
    /// Zero bytes after the last record (preallocated space).
    pub zero_tail_bytes: u64,
    /// The first thing wrong, if anything is.
    pub problem: Option<Problem>,
}

/// The format version and first sequence number in a segment's header.
pub fn segment_header(path: &Path) -> Result<(u32, u64)> {
    let file = crate::storage::os_file(File::open(path).at(path)?);
    let header = read_segment_header(&*file, path)?;
    Ok((header.version, header.first_seq))
}

/// Reads every record of one segment file, calling `on_record` for each
/// valid one, and stops at the first problem. Uses the same read loop as
/// opening the log.
pub fn inspect_segment(
    path: &Path,
    mut on_record: impl FnMut(&RecordInfo),
) -> Result<SegmentReport> {
    let file = crate::storage::os_file(File::open(path).at(path)?);
    let header = read_segment_header(&*file, path)?;
    let first_seq = header.first_seq;
    let file_bytes = file.size_bytes().at(path)?;
    let mut decode_problem: Option<Problem> = None;
    let scan = scan_records_from(
        &*file,
        path,
        SEGMENT_HEADER_BYTES,
        first_seq,
        file_bytes,
        RECORD_BYTES_LIMIT,
        &mut |offset, header, bytes| {
            if decode_problem.is_some() {
                return;
            }
            let info = RecordInfo {
                offset,
                seq: header.seq,
                record_bytes: header.record_bytes(),
                unit_remaining: header.unit_remaining,
                synced_through: header.synced_through(),
                event: decode_body(header.seq, &bytes[RECORD_HEADER_BYTES..]),
            };
            if let Err(kind) = &info.event {
                decode_problem = Some(Problem {
                    file: path.to_path_buf(),
                    offset: offset + RECORD_HEADER_BYTES as u64,
                    what: kind.to_string(),
                });
            }
            on_record(&info);
        },
    )?;
    let mut report = SegmentReport {
        path: path.to_path_buf(),
        first_seq,
        format_version: header.version,
        file_bytes,
        records: scan.complete_records,
        end_offset: scan.complete_end,
        zero_tail_bytes: 0,
        problem: decode_problem,
    };
    if report.problem.is_none() {
        if let Some((offset, kind)) = scan.stopped_by {
            report.problem = Some(Problem {
                file: path.to_path_buf(),
                offset,
                what: kind.to_string(),
            });
        } else if scan.complete_records < scan.offsets.len() as u64 {
            report.problem = Some(Problem {
                file: path.to_path_buf(),
                offset: scan.complete_end,
                what: CorruptKind::IncompleteUnit.to_string(),
            });
        } else {
            let mut rest = vec![0u8; (file_bytes - scan.complete_end) as usize];
            file.read_exact_at(&mut rest, scan.complete_end).at(path)?;
            if rest.iter().all(|&b| b == 0) {
                report.zero_tail_bytes = rest.len() as u64;
            } else {
                report.problem = Some(Problem {
                    file: path.to_path_buf(),
                    offset: scan.complete_end,
                    what: "non-zero bytes after the last complete unit".into(),
                });
            }
        }
    }
    Ok(report)
}

/// Checks that an index file agrees with its segment: header, first
/// sequence number, and one entry per record with the record's offset.
/// `complete` requires exactly one entry per record (sealed segments).
pub fn check_index(
    index_path: &Path,
    segment: &SegmentReport,
    offsets: &[u64],
    complete: bool,
) -> Result<Option<Problem>> {
    let bytes = std::fs::read(index_path).at(index_path)?;
    let problem = |offset, what: &str| {
        Ok(Some(Problem {
            file: index_path.to_path_buf(),
            offset,
            what: what.to_string(),
        }))
    };
    let entries_crc = match decode_index_header(&bytes, index_path) {
        Ok(header) if header.first_seq == segment.first_seq => header.entries_crc,
        Ok(_) => return problem(16, "first_seq differs from the segment"),
        Err(Error::Corrupt { offset, kind, .. }) => return problem(offset, &kind.to_string()),
        // Indexes are derived: an unreadable one is a problem to report
        // (open rebuilds it), not a reason to stop verifying.
        Err(Error::UnsupportedVersion { found, .. }) => {
            return problem(8, &format!("unsupported index format version {found}"))
        }
        Err(e) => return Err(e),
    };
    let entries = (bytes.len() as u64 - INDEX_HEADER_BYTES) / INDEX_ENTRY_BYTES;
    for (i, &expected) in offsets.iter().enumerate() {
        let at = (INDEX_HEADER_BYTES + i as u64 * INDEX_ENTRY_BYTES) as usize;
        match crate::codec::u64_at(&bytes, at) {
            Some(found) if found == expected => {}
            Some(_) => return problem(at as u64, "entry does not match the record offset"),
            None if complete => return problem(at as u64, "fewer entries than records"),
            None => break,
        }
    }
    if complete && entries > offsets.len() as u64 {
        let at = INDEX_HEADER_BYTES + offsets.len() as u64 * INDEX_ENTRY_BYTES;
        return problem(at, "more entries than records");
    }
    if let Some(expected) = entries_crc {
        let start = INDEX_HEADER_BYTES as usize;
        let end = start + offsets.len() * INDEX_ENTRY_BYTES as usize;
        if bytes.get(start..end).map(crc32fast::hash) != Some(expected) {
            return problem(24, "entries do not match the checksum recorded at seal");
        }
    }
    Ok(None)
}

/// The segment files of a data directory (or the directory of segments
/// itself), in sequence order.
pub fn segment_paths(dir: &Path) -> Result<Vec<PathBuf>> {
    let segments_dir = if dir.join(SEGMENTS_DIR).is_dir() {
        dir.join(SEGMENTS_DIR)
    } else {
        dir.to_path_buf()
    };
    let mut found = Vec::new();
    for entry in std::fs::read_dir(&segments_dir).at(&segments_dir)? {
        let entry = entry.at(&segments_dir)?;
        if let Some(seq) = entry
            .file_name()
            .to_str()
            .and_then(|n| parse_file_name(n, SEGMENT_SUFFIX))
        {
            found.push((seq, entry.path()));
        }
    }
    found.sort();
    Ok(found.into_iter().map(|(_, p)| p).collect())
}

/// One piece of a data directory's log: a live segment or an archive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Piece {
    /// The first seq of its range (from its file name).
    pub first_seq: u64,
    /// The segment or archive file.
    pub path: PathBuf,
    /// An archive (`.evz`) rather than a live segment.
    pub is_archive: bool,
}

/// The pieces of a data directory in sequence order, by the catalog's
/// rule (FORMAT.md, "The catalog"): every archive, and every segment no
/// archive with the same first seq replaced (that segment is a leftover
/// of a crash, which the writer's next open removes).
pub fn pieces(dir: &Path) -> Result<Vec<Piece>> {
    let storage = OsStorage;
    let archive_dir = if dir.join(crate::archiver::ARCHIVE_DIR).is_dir() {
        Some(dir.join(crate::archiver::ARCHIVE_DIR))
    } else if segment_paths(dir)?.is_empty() {
        // A copy of `archive/` on its own.
        Some(dir.to_path_buf())
    } else {
        None
    };
    let mut pieces = Vec::new();
    if let Some(archive_dir) = archive_dir {
        for (first_seq, path) in crate::archive::archive_paths(&storage, &archive_dir)? {
            pieces.push(Piece {
                first_seq,
                path,
                is_archive: true,
            });
        }
    }
    let archived: Vec<u64> = pieces.iter().map(|p| p.first_seq).collect();
    for path in segment_paths(dir)? {
        let Some(first_seq) = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| parse_file_name(n, SEGMENT_SUFFIX))
        else {
            continue;
        };
        if archived.binary_search(&first_seq).is_err() {
            pieces.push(Piece {
                first_seq,
                path,
                is_archive: false,
            });
        }
    }
    pieces.sort_by_key(|p| p.first_seq);
    Ok(pieces)
}

/// What the writer's next open would do to the active segment of a data
/// directory whose writer stopped (crashed or was killed): keep every
/// complete unit, cut the rest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecoveryPreview {
    /// The active segment.
    pub segment: PathBuf,
    /// A clean close vouched for the segment (nothing would be scanned).
    pub closed_cleanly: bool,
    /// Records kept.
    pub kept_records: u64,
    /// The end of the last record kept.
    pub kept_end: u64,
    /// The torn tail, if any: where it starts, how many bytes, the seqs
    /// of the readable records in it, and why it is not kept.
    pub cut: Option<PreviewCut>,
}

/// The bytes the next open would cut (and copy to `lost+found/`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreviewCut {
    /// Where the cut starts: the end of the last complete unit.
    pub offset: u64,
    /// How many bytes it removes (up to the last non-zero byte).
    pub bytes: u64,
    /// The seqs of the readable records among them.
    pub dropped_seqs: Vec<u64>,
    /// Why they are not kept.
    pub reason: String,
}

impl std::fmt::Display for PreviewCut {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: a torn tail of {} bytes at byte offset {} that the next open cuts (copying it to lost+found)",
            self.reason, self.bytes, self.offset
        )?;
        match (self.dropped_seqs.first(), self.dropped_seqs.last()) {
            (Some(first), Some(last)) => write!(
                f,
                ", dropping {} record(s), seq {first}..={last}",
                self.dropped_seqs.len()
            ),
            _ => write!(f, ", dropping no readable record"),
        }
    }
}

/// Judges the active (last) segment of a data directory as the writer's
/// next open would, with the same code, without changing a byte.
/// `None` when the directory has no segment.
pub fn recovery_preview(dir: &Path) -> Result<Option<RecoveryPreview>> {
    let storage = OsStorage;
    let Some(path) = segment_paths(dir)?.pop() else {
        return Ok(None);
    };
    let Some(first_seq) = path
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| parse_file_name(n, SEGMENT_SUFFIX))
    else {
        return Ok(None);
    };
    let segments_dir = path.parent().unwrap_or(dir).to_path_buf();
    let marker = match crate::marker::read(&storage, &segments_dir) {
        Ok(Some(marker)) if marker.active_first_seq == first_seq => Some(marker),
        _ => None,
    };
    let found = Segment::inspect_active(
        &storage,
        &path,
        first_seq,
        marker.as_ref(),
        RECORD_BYTES_LIMIT,
        0,
        Access::Verify,
    )?;
    Ok(Some(RecoveryPreview {
        segment: path,
        closed_cleanly: found.closed_cleanly,
        // A clean close's segment is trusted without a scan: the marker
        // says how many records it holds.
        kept_records: match &marker {
            Some(marker) if found.closed_cleanly && found.offsets.is_empty() => {
                (marker.last_seq + 1).saturating_sub(first_seq)
            }
            _ => found.offsets.len() as u64,
        },
        kept_end: found.complete_end,
        cut: found.torn.as_ref().map(|torn| PreviewCut {
            offset: torn.offset,
            bytes: torn.bytes.len() as u64,
            dropped_seqs: torn.dropped_seqs.clone(),
            reason: torn
                .reason
                .as_ref()
                .map_or("an incomplete append".to_string(), ToString::to_string),
        }),
    }))
}

/// Verifies a segment file or a whole data directory and returns the
/// first problem. A directory is judged by the same code as opening it
/// (the same rules, files and offsets), plus what opening leaves to reads:
/// every body decoded, every record of the active segment checked even
/// when a clean close vouched for it, and every sealed index compared
/// with its segment. Nothing is written.
pub fn verify(path: &Path) -> Result<Option<Problem>> {
    if !path.is_dir() {
        return inspect_segment(path, |_| {}).map_or_else(problem_of, |r| Ok(r.problem));
    }
    match verify_dir(path) {
        Ok(problem) => Ok(problem),
        Err(e) => problem_of(e),
    }
}

/// An error about bytes on disk as a problem; other errors stay errors.
fn problem_of(error: Error) -> Result<Option<Problem>> {
    match error {
        Error::Corrupt { file, offset, kind } => Ok(Some(Problem {
            file,
            offset,
            what: kind.to_string(),
        })),
        Error::UnsupportedVersion { file, found, .. } => {
            let what = if file.extension().is_some_and(|e| e == "idx") {
                format!("unsupported index format version {found}")
            } else {
                format!("unsupported segment format version {found}")
            };
            Ok(Some(Problem {
                file,
                offset: 8,
                what,
            }))
        }
        other => Err(other),
    }
}

fn verify_dir(dir: &Path) -> Result<Option<Problem>> {
    let storage = OsStorage;
    let segments_dir = if dir.join(SEGMENTS_DIR).is_dir() {
        dir.join(SEGMENTS_DIR)
    } else {
        dir.to_path_buf()
    };
    // The archives first (FORMAT.md, "The catalog"): each is checked
    // whole (every frame, record and count; a hole no deletion note
    // explains is damage), and a segment an archive replaced is not part
    // of the log.
    let archive_dir = dir.join(crate::archiver::ARCHIVE_DIR);
    let mut archive_starts = Vec::new();
    if archive_dir.is_dir() {
        for (first, path) in crate::archive::archive_paths(&storage, &archive_dir)? {
            let archive = crate::archive::open_named(&storage, &path)?;
            let report = archive.verify()?;
            if report.unexplained_missing > 0 {
                return Ok(Some(Problem {
                    file: path,
                    offset: 0,
                    what: format!(
                        "{} sequence numbers of the archive's range are neither held nor deleted by retention",
                        report.unexplained_missing
                    ),
                }));
            }
            archive_starts.push(first);
        }
    }
    let segment_seqs: Vec<u64> = segment_paths(dir)?
        .iter()
        .filter_map(|p| {
            p.file_name()?
                .to_str()
                .and_then(|n| parse_file_name(n, SEGMENT_SUFFIX))
        })
        .collect();
    let pieces = crate::catalog::PieceStarts::new(segment_seqs, archive_starts.iter().copied());
    let seqs = pieces.segments();
    for (i, &first_seq) in seqs.iter().enumerate() {
        let path = segments_dir.join(crate::segment::segment_file_name(first_seq));
        let mut offsets = Vec::new();
        let report = inspect_segment(&path, |r| offsets.push(r.offset))?;
        // A sealed segment's successor is the next piece, live or archived.
        let successor = (i + 1 < seqs.len())
            .then(|| pieces.successor(first_seq))
            .flatten();
        match successor {
            Some(next) => {
                // Sealed: the rules open applies, then what reads would find.
                let file = crate::storage::os_file(File::open(&path).at(&path)?);
                let scan = scan_records(
                    &*file,
                    &path,
                    first_seq,
                    report.file_bytes,
                    RECORD_BYTES_LIMIT,
                )?;
                if let Some(error) =
                    sealed_error(&path, &scan, first_seq, next - first_seq, report.file_bytes)
                {
                    return problem_of(error);
                }
                if let Some(problem) = report.problem {
                    return Ok(Some(problem));
                }
                let index_path = path.with_extension(&INDEX_SUFFIX[1..]);
                if index_path.exists() {
                    if let Some(problem) = check_index(&index_path, &report, &offsets, false)? {
                        return Ok(Some(problem));
                    }
                }
            }
            None => {
                let marker = match crate::marker::read(&storage, &segments_dir) {
                    Ok(Some(marker)) if marker.active_first_seq == first_seq => Some(marker),
                    _ => None,
                };
                let found = Segment::inspect_active(
                    &storage,
                    &path,
                    first_seq,
                    marker.as_ref(),
                    RECORD_BYTES_LIMIT,
                    0,
                    Access::Verify,
                )?;
                if let Some(torn) = &found.torn {
                    let why = torn
                        .reason
                        .as_ref()
                        .map_or("an incomplete append".to_string(), ToString::to_string);
                    return Ok(Some(Problem {
                        file: path,
                        offset: torn.offset,
                        what: format!(
                            "{why}: a torn tail of {} bytes that the next open cuts (copying it to lost+found)",
                            torn.bytes.len()
                        ),
                    }));
                }
                // What a clean close vouched for is checked record by record.
                if let Some(problem) = report
                    .problem
                    .clone()
                    .filter(|p| p.offset < found.complete_end)
                {
                    return Ok(Some(problem));
                }
                // So is the index it vouched for: every entry it holds names
                // its record (a writer that reopened may have grown it with
                // zero entries, which are not checked).
                let index_path = path.with_extension(&INDEX_SUFFIX[1..]);
                if found.closed_cleanly && index_path.exists() {
                    if let Some(problem) = check_index(&index_path, &report, &offsets, false)? {
                        return Ok(Some(problem));
                    }
                }
            }
        }
    }
    Ok(None)
}

/// The deletions retention recorded in the archives of a data directory,
/// one line each (range, count, rule, time), for `evlog-dump --verify`.
pub fn deletions(dir: &Path) -> Result<Vec<String>> {
    let storage = OsStorage;
    let archive_dir = dir.join(crate::archiver::ARCHIVE_DIR);
    let mut lines = Vec::new();
    if !archive_dir.is_dir() {
        return Ok(lines);
    }
    for (_, path) in crate::archive::archive_paths(&storage, &archive_dir)? {
        let archive = crate::archive::open_named(&storage, &path)?;
        for note in archive.deletions() {
            lines.push(format!("{note} ({})", path.display()));
        }
    }
    Ok(lines)
}

/// Reads a durable consumer's position file (`DIR/consumers/<name>.pos`,
/// FORMAT.md) without changing it; `Corrupt` names the file and offset.
pub fn read_consumer_position(path: &Path) -> Result<u64> {
    let bytes = std::fs::read(path).map_err(|e| crate::error::io_error(path, e))?;
    crate::consumer::decode_position(&bytes, path)
}

/// Reads a durable consumer's parked list (`DIR/consumers/<name>.parked`);
/// a last record cut short by a crash is left out, as the log does.
pub fn read_parked_list(path: &Path) -> Result<Vec<crate::ParkedEvent>> {
    let bytes = std::fs::read(path).map_err(|e| crate::error::io_error(path, e))?;
    crate::consumer::decode_parked(&bytes, path).map(|(parked, _)| parked)
}
