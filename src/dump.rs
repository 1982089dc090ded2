//! Inspection and verification of data files without opening the log (no
//! lock is taken, nothing is written), for `evlog-dump`.

use std::fs::File;
use std::path::{Path, PathBuf};

use crate::error::{CorruptKind, Error, IoContext, Result};
use crate::event::LoggedEvent;
use crate::index::seq::{decode_index_header, INDEX_ENTRY_BYTES, INDEX_HEADER_BYTES};
use crate::options::RECORD_BYTES_LIMIT;
use crate::record::{decode_body, RECORD_HEADER_BYTES};
use crate::recovery::SEGMENTS_DIR;
use crate::segment::{
    parse_file_name, read_segment_header, Cursor, Source, Step, INDEX_SUFFIX, SEGMENT_HEADER_BYTES,
    SEGMENT_SUFFIX,
};

/// One record as found on disk.
#[derive(Debug)]
pub struct RecordInfo {
    pub offset: u64,
    pub seq: u64,
    pub record_bytes: u64,
    /// Records after this one in its commit group.
    pub group_remaining: u32,
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

/// The first thing wrong in a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub file: PathBuf,
    pub offset: u64,
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
    pub path: PathBuf,
    pub first_seq: u64,
    pub file_bytes: u64,
    pub records: u64,
    /// End of the last valid record.
    pub end_offset: u64,
    /// Zero bytes after the last record (preallocated space).
    pub zero_tail_bytes: u64,
    pub problem: Option<Problem>,
}

/// Reads every record of one segment file, calling `on_record` for each
/// valid one, and stops at the first problem.
pub fn inspect_segment(
    path: &Path,
    mut on_record: impl FnMut(&RecordInfo),
) -> Result<SegmentReport> {
    let file = crate::storage::os_file(File::open(path).at(path)?);
    let first_seq = read_segment_header(&*file, path)?;
    let file_bytes = file.size_bytes().at(path)?;
    let mut report = SegmentReport {
        path: path.to_path_buf(),
        first_seq,
        file_bytes,
        records: 0,
        end_offset: SEGMENT_HEADER_BYTES,
        zero_tail_bytes: 0,
        problem: None,
    };
    let problem = |offset, what: String| Problem {
        file: path.to_path_buf(),
        offset,
        what,
    };
    let mut cursor = Cursor::new(SEGMENT_HEADER_BYTES, file_bytes, RECORD_BYTES_LIMIT);
    let mut expected = first_seq;
    loop {
        match cursor.next_step(Source::File(&*file)).at(path)? {
            Step::Record {
                offset,
                header,
                bytes,
            } => {
                if header.seq != expected {
                    let kind = CorruptKind::Sequence {
                        expected,
                        found: header.seq,
                    };
                    report.problem = Some(problem(offset, kind.to_string()));
                    break;
                }
                let info = RecordInfo {
                    offset,
                    seq: header.seq,
                    record_bytes: header.record_bytes(),
                    group_remaining: header.group_remaining,
                    synced_through: header.synced_through(),
                    event: decode_body(header.seq, &bytes[RECORD_HEADER_BYTES..]),
                };
                if let Err(kind) = &info.event {
                    report.problem = Some(problem(
                        offset + RECORD_HEADER_BYTES as u64,
                        kind.to_string(),
                    ));
                }
                on_record(&info);
                if report.problem.is_some() {
                    break;
                }
                report.records += 1;
                report.end_offset = offset + header.record_bytes();
                expected += 1;
            }
            Step::End { offset } => {
                // Only zeros may follow the last record.
                let mut rest = vec![0u8; (file_bytes - offset) as usize];
                file.read_exact_at(&mut rest, offset).at(path)?;
                match rest.iter().position(|&b| b != 0) {
                    None => report.zero_tail_bytes = rest.len() as u64,
                    Some(at) => {
                        report.problem = Some(problem(
                            offset + at as u64,
                            "non-zero bytes after a zeroed record header".into(),
                        ))
                    }
                }
                break;
            }
            Step::Invalid { offset, kind } => {
                report.problem = Some(problem(offset, kind.to_string()));
                break;
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

/// Verifies a segment file or a whole data directory: every header, every
/// record's CRC, sequence continuity within and across segments, and the
/// sequence indexes of sealed segments. Returns the first problem.
pub fn verify(path: &Path) -> Result<Option<Problem>> {
    let (paths, whole_dir) = if path.is_dir() {
        (segment_paths(path)?, true)
    } else {
        (vec![path.to_path_buf()], false)
    };
    let mut expected_first: Option<u64> = None;
    for (i, segment_path) in paths.iter().enumerate() {
        let mut offsets = Vec::new();
        let report = match inspect_segment(segment_path, |r| offsets.push(r.offset)) {
            Ok(report) => report,
            Err(Error::Corrupt { file, offset, kind }) => {
                return Ok(Some(Problem {
                    file,
                    offset,
                    what: kind.to_string(),
                }))
            }
            Err(Error::UnsupportedVersion { file, found, .. }) => {
                return Ok(Some(Problem {
                    file,
                    offset: 8,
                    what: format!("unsupported segment format version {found}"),
                }))
            }
            Err(e) => return Err(e),
        };
        if let Some(problem) = report.problem {
            return Ok(Some(problem));
        }
        if let Some(expected) = expected_first {
            if report.first_seq != expected {
                return Ok(Some(Problem {
                    file: segment_path.clone(),
                    offset: 16,
                    what: CorruptKind::Gap {
                        expected,
                        found: report.first_seq,
                    }
                    .to_string(),
                }));
            }
        }
        expected_first = Some(report.first_seq + report.records);
        let sealed = whole_dir && i + 1 < paths.len();
        let index_path = segment_path.with_extension(&INDEX_SUFFIX[1..]);
        if sealed && index_path.exists() {
            if let Some(problem) = check_index(&index_path, &report, &offsets, false)? {
                return Ok(Some(problem));
            }
        }
    }
    Ok(None)
}
