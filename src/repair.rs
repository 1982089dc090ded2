//! `repair`: the explicit way out when opening refuses damaged data (a
//! record a clean close vouched for, damage before later durable records,
//! a sealed segment with no trustworthy index). It keeps the longest
//! intact prefix of the log, moves everything after it to `lost+found/`,
//! and says exactly which sequence numbers and bytes it dropped. Damage
//! that opening tolerates (a damaged record in a sealed segment whose index
//! is intact) is reported and left alone: cutting there would drop every
//! intact event after it.

use std::path::{Path, PathBuf};

use crate::error::{CorruptKind, Error, IoContext, Result};
use crate::fsutil::sync_dir;
use crate::lost_found::{self, LostFoundCopy};
use crate::options::RECORD_BYTES_LIMIT;
use crate::recovery::{check_data_dir, SEGMENTS_DIR};
use crate::segment::{
    index_file_name, parse_file_name, scan_records, segment_file_name, Access, Segment,
    SEGMENT_SUFFIX,
};
use crate::storage::{OpenMode, OsStorage, Storage};

/// Whether `repair` changes anything.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RepairMode {
    /// Only say what would be done.
    DryRun,
    /// Do it.
    Apply,
}

/// One cut: bytes of one file that leave the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepairCut {
    /// The file the bytes are cut from (or that is moved away whole).
    pub file: PathBuf,
    /// The byte range dropped (the whole file when `offset_start` is 0).
    pub offset_start: u64,
    /// End of the byte range dropped (exclusive).
    pub offset_end: u64,
    /// The sequence numbers dropped with it, as inclusive ranges (records
    /// whose headers are unreadable are counted in the range they belong to).
    pub dropped_seqs: Vec<(u64, u64)>,
    /// Why.
    pub reason: String,
    /// Where the bytes were kept (`None` in a dry run).
    pub lost_found: Option<LostFoundCopy>,
}

/// What `repair` did (or would do).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RepairReport {
    /// The cuts, in log order.
    pub cuts: Vec<RepairCut>,
    /// Damage left as it is, as (file, offset, what).
    pub left_alone: Vec<(PathBuf, u64, String)>,
}

impl RepairReport {
    /// Every sequence range dropped.
    pub fn dropped_seqs(&self) -> Vec<(u64, u64)> {
        self.cuts
            .iter()
            .flat_map(|c| c.dropped_seqs.iter().copied())
            .collect()
    }
}

/// Repairs the data directory `dir` (see the module docs). Takes the
/// directory lock, so it fails with `Locked` while a `Log` has it open.
pub fn repair(dir: impl AsRef<Path>, mode: RepairMode) -> Result<RepairReport> {
    repair_with_storage(dir.as_ref(), mode, &OsStorage)
}

pub(crate) fn repair_with_storage(
    dir: &Path,
    mode: RepairMode,
    storage: &dyn Storage,
) -> Result<RepairReport> {
    let segments_dir = check_data_dir(storage, dir)?;
    let _lock = storage.lock_dir(dir)?;
    let mut seqs = Vec::new();
    for name in storage.list_dir(&segments_dir).at(&segments_dir)? {
        if let Some(seq) = parse_file_name(&name, SEGMENT_SUFFIX) {
            seqs.push(seq);
        }
    }
    // Segments an archive replaced are not part of the log (FORMAT.md,
    // "The catalog"); a sealed segment's successor may be an archive.
    let archive_dir = dir.join(crate::archiver::ARCHIVE_DIR);
    let archive_starts: Vec<u64> = if storage.exists(&archive_dir) {
        crate::archive::archive_paths(storage, &archive_dir)?
            .into_iter()
            .map(|(first, _)| first)
            .collect()
    } else {
        Vec::new()
    };
    let pieces = crate::catalog::PieceStarts::new(seqs, archive_starts);
    let seqs = pieces.segments();
    let successor = |first_seq: u64| pieces.successor(first_seq);
    let mut report = RepairReport::default();
    // The first segment whose records end before its successor's name says
    // (damage cut there, or a missing segment): everything after it goes.
    let mut cut_log_at: Option<usize> = None;
    for (i, &first_seq) in seqs.iter().enumerate() {
        let path = segments_dir.join(segment_file_name(first_seq));
        let next = seqs.get(i + 1).and(successor(first_seq));
        let file = storage.open(&path, OpenMode::Read).at(&path)?;
        let file_len = file.size_bytes().at(&path)?;
        if let Some(next) = next {
            match Segment::open_sealed(
                storage,
                &path,
                first_seq,
                next - first_seq,
                RECORD_BYTES_LIMIT,
                Access::ReadOnly,
            ) {
                Ok((_, opened)) => match opened.damage {
                    None => continue,
                    Some((offset, CorruptKind::TrailingBytes)) => {
                        report.cuts.push(RepairCut {
                            file: path.clone(),
                            offset_start: offset,
                            offset_end: file_len,
                            dropped_seqs: Vec::new(),
                            reason: CorruptKind::TrailingBytes.to_string(),
                            lost_found: None,
                        });
                        continue;
                    }
                    Some((offset, kind)) => {
                        report
                            .left_alone
                            .push((path.clone(), offset, kind.to_string()));
                        continue;
                    }
                },
                Err(Error::Corrupt { file, kind, .. })
                    if file == path || matches!(kind, CorruptKind::Gap { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        // The active segment, or a sealed one that cannot be opened: keep
        // its complete units, cut the rest.
        let scan = scan_records(&*file, &path, first_seq, file_len, RECORD_BYTES_LIMIT)?;
        let kept_next = first_seq + scan.complete_records;
        let reason = match &scan.stopped_by {
            Some((offset, kind)) => format!("{kind} at byte offset {offset}"),
            None if scan.complete_end < file_len => "bytes after the last complete unit".into(),
            None => "the records end before the next segment starts".into(),
        };
        let mut tail = vec![0u8; (file_len - scan.complete_end) as usize];
        file.read_exact_at(&mut tail, scan.complete_end).at(&path)?;
        let nonzero_end = tail.iter().rposition(|&b| b != 0).map_or(0, |p| p + 1);
        // The records there may end in zeros: keep through their end too.
        let (readable, records_end) =
            crate::segment::readable_records(&tail, kept_next, RECORD_BYTES_LIMIT);
        let nonzero_end = nonzero_end.max(records_end);
        // A sealed segment drops up to its successor's first seq; the
        // active one, the records whose headers are readable.
        let seq_end = next.unwrap_or(kept_next + readable.len() as u64);
        if nonzero_end > 0 || seq_end > kept_next {
            report.cuts.push(RepairCut {
                file: path.clone(),
                offset_start: scan.complete_end,
                offset_end: scan.complete_end + nonzero_end as u64,
                dropped_seqs: (seq_end > kept_next)
                    .then_some((kept_next, seq_end - 1))
                    .into_iter()
                    .collect(),
                reason,
                lost_found: None,
            });
        }
        if next.is_some() {
            cut_log_at = Some(i);
        }
        break;
    }
    if let Some(i) = cut_log_at {
        for (j, &first_seq) in seqs.iter().enumerate().skip(i + 1) {
            let path = segments_dir.join(segment_file_name(first_seq));
            let file = storage.open(&path, OpenMode::Read).at(&path)?;
            let file_len = file.size_bytes().at(&path)?;
            let last = seqs.get(j + 1).and(successor(first_seq)).map(|n| n - 1);
            let scan = scan_records(&*file, &path, first_seq, file_len, RECORD_BYTES_LIMIT)?;
            let last = last.unwrap_or(first_seq + scan.offsets.len() as u64 - 1);
            report.cuts.push(RepairCut {
                file: path,
                offset_start: 0,
                offset_end: file_len,
                dropped_seqs: (last >= first_seq)
                    .then_some((first_seq, last))
                    .into_iter()
                    .collect(),
                reason: "follows a segment cut short by the repair".into(),
                lost_found: None,
            });
        }
    }
    if mode == RepairMode::Apply && !report.cuts.is_empty() {
        apply(
            storage,
            dir,
            &segments_dir,
            &mut report,
            cut_log_at.map(|i| seqs[i]),
        )?;
    }
    Ok(report)
}

/// Carries out the cuts: each one copied to `lost+found/` first, then cut
/// (or, for a whole file, removed with its index); the segment that became
/// the last one loses its index (the next open rebuilds it from the
/// segment) and the clean-close marker goes.
fn apply(
    storage: &dyn Storage,
    dir: &Path,
    segments_dir: &Path,
    report: &mut RepairReport,
    new_active: Option<u64>,
) -> Result<()> {
    crate::marker::remove(storage, segments_dir)?;
    for cut in &mut report.cuts {
        let file = storage.open(&cut.file, OpenMode::ReadWrite).at(&cut.file)?;
        let mut bytes = vec![0u8; (cut.offset_end - cut.offset_start) as usize];
        file.read_exact_at(&mut bytes, cut.offset_start)
            .at(&cut.file)?;
        cut.lost_found = Some(lost_found::preserve(
            storage,
            dir,
            &cut.file,
            cut.offset_start,
            &bytes,
        )?);
        if cut.offset_start == 0 {
            drop(file);
            let index = cut.file.with_extension(&crate::segment::INDEX_SUFFIX[1..]);
            if storage.exists(&index) {
                storage.remove_file(&index).at(&index)?;
            }
            storage.remove_file(&cut.file).at(&cut.file)?;
        } else {
            file.set_len(cut.offset_start).at(&cut.file)?;
            file.sync_all().at(&cut.file)?;
        }
    }
    if let Some(first_seq) = new_active {
        // Its index describes the records it had; the open rebuilds the
        // active index from the segment anyway.
        let index = segments_dir.join(index_file_name(first_seq));
        if storage.exists(&index) {
            storage.remove_file(&index).at(&index)?;
        }
    }
    sync_dir(storage, segments_dir)?;
    tracing::warn!(dir = %dir.join(SEGMENTS_DIR).display(), cuts = report.cuts.len(), "repaired the log");
    Ok(())
}
