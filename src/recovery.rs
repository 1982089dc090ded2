//! The open path: lock the directory, find the segments, check or rebuild
//! their indexes, repair the torn tail of the active segment.

use std::any::Any;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::error::{CorruptKind, Error, IoContext, Result};
use crate::fsutil::{sync_dir, TMP_SUFFIX};
use crate::options::Options;
use crate::record::RECORD_BYTES_MIN;
use crate::segment::{parse_file_name, Segment, INDEX_SUFFIX, SEGMENT_SUFFIX, SEQ_MAX};
use crate::storage::Storage;
use crate::writer::GROUP_BYTES_MAX;

pub(crate) const SEGMENTS_DIR: &str = "segments";

/// What opening the log found and repaired.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    /// Non-zero bytes cut from the end of the active segment (a torn write).
    pub torn_tail_bytes: u64,
    /// Valid records cut with the torn tail because their commit group was
    /// incomplete. Under `Durability::Always` they were never acknowledged;
    /// under the other settings a power loss may cut acknowledged ones.
    pub unacknowledged_records_dropped: u64,
    /// Leftover temporary files removed.
    pub temp_files_removed: u64,
    /// Index files without a segment removed.
    pub orphan_indexes_removed: u64,
    /// Sequence indexes of sealed segments rebuilt from their segment
    /// (the active segment's index is rebuilt on every open).
    pub indexes_rebuilt: u64,
    /// Sealed segments found damaged and opened anyway, as (file, byte
    /// offset, what): their index is intact, so only the damaged records
    /// fail to read (with a `Corrupt` error naming the same file).
    pub damaged_segments: Vec<(PathBuf, u64, String)>,
}

pub(crate) struct Opened {
    pub lock: Box<dyn Any + Send + Sync>,
    pub segments_dir: PathBuf,
    pub segments: Vec<Arc<Segment>>,
    pub first_seq: u64,
    pub next_seq: u64,
    pub active_file_len: u64,
    pub index_capacity: u64,
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

pub(crate) fn open(storage: &dyn Storage, dir: &Path, options: &Options) -> Result<Opened> {
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
    let mut report = RecoveryReport::default();

    let mut segment_seqs = Vec::new();
    let mut index_seqs = Vec::new();
    for name in storage.list_dir(&segments_dir).at(&segments_dir)? {
        if name.ends_with(TMP_SUFFIX) {
            let path = segments_dir.join(&name);
            storage.remove_file(&path).at(&path)?;
            report.temp_files_removed += 1;
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
    for seq in index_seqs {
        if segment_seqs.binary_search(&seq).is_err() {
            let path = segments_dir.join(crate::segment::index_file_name(seq));
            storage.remove_file(&path).at(&path)?;
            report.orphan_indexes_removed += 1;
        }
    }
    // Always, not only after removals: a crash (or a failed directory sync
    // that poisoned the last run) can leave a segment whose name is not yet
    // durable, and appends acknowledged into it would vanish with it.
    sync_dir(storage, &segments_dir)?;

    let capacity = index_capacity(options);
    let record_bytes_max = options.record_bytes_max;
    let mut segments = Vec::with_capacity(segment_seqs.len().max(1));
    if segment_seqs.is_empty() {
        segments.push(Arc::new(Segment::create(
            storage,
            &segments_dir,
            1,
            capacity,
            active_map_bytes(options),
        )?));
    }
    for pair in segment_seqs.windows(2) {
        let (first, next) = (pair[0], pair[1]);
        let path = segments_dir.join(crate::segment::segment_file_name(first));
        // Names are unique, so `next > first` and the count is at least 1.
        let (segment, sealed) =
            Segment::open_sealed(storage, &path, first, next - first, record_bytes_max)?;
        report.indexes_rebuilt += u64::from(sealed.index_rebuilt);
        if let Some((offset, kind)) = sealed.damage {
            report
                .damaged_segments
                .push((path.clone(), offset, kind.to_string()));
        }
        segments.push(Arc::new(segment));
    }
    let mut active_file_len = crate::segment::SEGMENT_HEADER_BYTES;
    if let Some(&last) = segment_seqs.last() {
        let path = segments_dir.join(crate::segment::segment_file_name(last));
        let (segment, repair) = Segment::recover_active(
            storage,
            &path,
            last,
            capacity,
            active_map_bytes(options),
            record_bytes_max,
        )?;
        report.torn_tail_bytes = repair.dropped_bytes;
        report.unacknowledged_records_dropped = repair.dropped_records;
        active_file_len = segment.file.size_bytes().at(&path)?;
        segments.push(Arc::new(segment));
    }
    let first_seq = segments.first().map_or(1, |s| s.first_seq);
    let active = segments.last().ok_or_else(|| Error::Corrupt {
        file: segments_dir.clone(),
        offset: 0,
        kind: CorruptKind::BadHeader("no segment"),
    })?;
    let next_seq = active.first_seq + active.record_count();
    Ok(Opened {
        lock,
        segments_dir,
        first_seq,
        next_seq,
        active_file_len,
        index_capacity: capacity,
        segments,
        report,
    })
}
