//! The `open_dir` harness: lays the input out as a data directory, checks
//! it with `evlog::dump`, opens it with `Log::open`, reads every event with
//! `get` and `iter`, closes it, checks it again, and opens it a second time.
//!
//! Input: one mode byte, then up to four files separated by [`SPLIT`]:
//!
//! ```text
//! mode | segment A | SPLIT | segment B | SPLIT | index of A | SPLIT | index of B
//! ```
//!
//! An empty or absent part writes no file. Segment A is named
//! `00000000000000000001.seg`, or after the `first_seq` in its header when
//! the mode has [`MODE_NAME_FROM_HEADER`]; segment B is named after the
//! `first_seq` in its header (next to A's name when that is unusable).
//! With [`MODE_FIX_CRCS`] every header, record and index checksum that can
//! be located is recomputed first, so mutations reach the checks behind
//! the CRCs.

use std::path::{Path, PathBuf};

use evlog::{Log, LoggedEvent, Options};

use crate::{fix_index_crcs, fix_segment_crcs, split_parts, u64_le, MODE_FIX_CRCS, SPLIT};

/// Mode bit: name segment A after its header's `first_seq`, not 1.
pub const MODE_NAME_FROM_HEADER: u8 = 2;

/// The data files of one input.
pub struct Layout {
    /// (name's sequence number, bytes) of each segment to write.
    pub segments: Vec<(u64, Vec<u8>)>,
    /// (name's sequence number, bytes) of each index to write.
    pub indexes: Vec<(u64, Vec<u8>)>,
}

fn header_first_seq(segment: &[u8]) -> Option<u64> {
    u64_le(segment, 16).filter(|&s| s != 0)
}

/// Decodes an input into the files to write; `None` for an empty input.
pub fn layout(data: &[u8]) -> Option<Layout> {
    let (&mode, rest) = data.split_first()?;
    let mut parts: Vec<Vec<u8>> = split_parts(rest, 4)
        .into_iter()
        .map(<[u8]>::to_vec)
        .collect();
    parts.resize(4, Vec::new());
    if mode & MODE_FIX_CRCS != 0 {
        for (i, part) in parts.iter_mut().enumerate() {
            if i < 2 {
                fix_segment_crcs(part);
            } else {
                fix_index_crcs(part);
            }
        }
    }
    let [seg_a, seg_b, idx_a, idx_b]: [Vec<u8>; 4] = parts.try_into().ok()?;
    let name_a = if mode & MODE_NAME_FROM_HEADER != 0 {
        header_first_seq(&seg_a).unwrap_or(1)
    } else {
        1
    };
    let name_b = header_first_seq(&seg_b)
        .filter(|&s| s != name_a)
        .or_else(|| name_a.checked_add(1));
    let mut layout = Layout {
        segments: Vec::new(),
        indexes: Vec::new(),
    };
    // Segment A is always written (even empty: a zero-length segment file
    // is an input too); the other files only when their part is non-empty.
    layout.segments.push((name_a, seg_a));
    if !idx_a.is_empty() {
        layout.indexes.push((name_a, idx_a));
    }
    if let Some(name_b) = name_b {
        if !seg_b.is_empty() {
            layout.segments.push((name_b, seg_b));
        }
        if !idx_b.is_empty() {
            layout.indexes.push((name_b, idx_b));
        }
    }
    Some(layout)
}

/// Packs files into one `open_dir` input (the inverse of [`layout`] for
/// inputs without mode bits that rename or repair).
pub fn pack(mode: u8, seg_a: &[u8], seg_b: &[u8], idx_a: &[u8], idx_b: &[u8]) -> Vec<u8> {
    let mut out = vec![mode];
    out.extend_from_slice(seg_a);
    let rest: [&[u8]; 3] = [seg_b, idx_a, idx_b];
    let used = rest
        .iter()
        .rposition(|p| !p.is_empty())
        .map_or(0, |i| i + 1);
    for part in &rest[..used] {
        out.extend_from_slice(SPLIT);
        out.extend_from_slice(part);
    }
    out
}

/// Writes the files of `layout` into `dir/segments`; returns the segment
/// and index paths written.
pub fn write_layout(layout: &Layout, dir: &Path) -> (Vec<PathBuf>, Vec<PathBuf>) {
    let segments_dir = dir.join("segments");
    std::fs::create_dir_all(&segments_dir).expect("create the segments directory");
    let write = |seq: u64, suffix: &str, bytes: &[u8]| {
        let path = segments_dir.join(format!("{seq:020}{suffix}"));
        std::fs::write(&path, bytes).expect("write a data file");
        path
    };
    let segments = layout
        .segments
        .iter()
        .map(|(seq, bytes)| write(*seq, ".seg", bytes))
        .collect();
    let indexes = layout
        .indexes
        .iter()
        .map(|(seq, bytes)| write(*seq, ".idx", bytes))
        .collect();
    (segments, indexes)
}

/// Runs `evlog::dump` over the directory: `verify`, `inspect_segment` on
/// every segment, and `check_index` on every index next to its segment.
pub fn run_dump(dir: &Path, segments: &[PathBuf], indexes: &[PathBuf]) {
    let _ = evlog::dump::verify(dir);
    let _ = evlog::dump::segment_paths(dir);
    for path in segments {
        let _ = evlog::dump::verify(path);
        let mut offsets = Vec::new();
        let report = evlog::dump::inspect_segment(path, |info| {
            offsets.push(info.offset);
            if let Ok(event) = &info.event {
                assert_eq!(event.seq, info.seq, "inspect_segment: event seq");
            }
        });
        let Ok(report) = report else { continue };
        assert!(
            report.end_offset <= report.file_bytes || report.records == 0,
            "inspect_segment: end {} past the file's {} bytes",
            report.end_offset,
            report.file_bytes
        );
        let index = path.with_extension("idx");
        if indexes.contains(&index) && index.exists() {
            let _ = evlog::dump::check_index(&index, &report, &offsets, false);
            let _ = evlog::dump::check_index(&index, &report, &offsets, true);
        }
    }
}

/// What one open of the log served.
#[derive(Debug, PartialEq)]
pub struct Served {
    pub first: Option<u64>,
    pub last: Option<u64>,
    /// `get` of every sequence number from first to last: the event, or
    /// `None` for an error.
    pub events: Vec<Option<LoggedEvent>>,
}

/// Reads everything an open log claims to hold, checking that `get` and
/// `iter` agree where both succeed. `input_len` bounds how many events the
/// files can account for (an index entry is 8 bytes, a record at least 53).
/// `segment_starts` are the sequence numbers in the segment file names:
/// besides the whole log, each segment's range is iterated on its own.
pub fn read_all(log: &Log, input_len: usize, segment_starts: &[u64]) -> Served {
    let first = log.first_seq();
    let last = log.last_seq();
    let mut served = Served {
        first,
        last,
        events: Vec::new(),
    };
    for seq in [0, u64::MAX, last.unwrap_or(0).saturating_add(1)] {
        if Some(seq) != last {
            assert!(
                log.get(seq).is_err(),
                "get({seq}) outside the log succeeded"
            );
        }
    }
    let (Some(first), Some(last)) = (first, last) else {
        // An empty log still iterates (to nothing).
        if let Ok(iter) = log.iter(..) {
            assert!(
                iter.take(4).all(|e| e.is_err()),
                "empty log yielded an event"
            );
        }
        return served;
    };
    assert!(first <= last, "first_seq {first} > last_seq {last}");
    let count = last - first + 1;
    assert!(
        count <= input_len as u64 / 8 + 1,
        "the log claims {count} events from {input_len} input bytes"
    );
    if first > 1 {
        assert!(log.get(first - 1).is_err(), "get(first - 1) succeeded");
    }
    for seq in first..=last {
        let got = log.get(seq).ok();
        if let Some(event) = &got {
            assert_eq!(event.seq, seq, "get({seq}) returned another seq");
        }
        served.events.push(got);
    }
    // Iterator ranges: the whole log, from its middle and from its end,
    // and each segment's range on its own (bounded by the next name).
    let mut ranges: Vec<(u64, u64)> = [first, first + count / 2, last]
        .iter()
        .map(|&start| (start, last))
        .collect();
    let mut starts: Vec<u64> = segment_starts.to_vec();
    starts.sort_unstable();
    for (i, &start) in starts.iter().enumerate() {
        let end = starts.get(i + 1).map_or(last, |next| next - 1).min(last);
        let start = start.max(first);
        if start <= end {
            ranges.push((start, end));
        }
    }
    for (start, end) in ranges {
        let Ok(iter) = log.iter(start..=end) else {
            continue;
        };
        let mut expected = start;
        let mut failed = false;
        for item in iter.take((end - start) as usize + 2) {
            assert!(!failed, "iter went on after an error");
            match item {
                Ok(event) => {
                    assert_eq!(event.seq, expected, "iter skipped or repeated");
                    assert!(event.seq <= end, "iter went past its range");
                    if let Some(Some(got)) = served.events.get((event.seq - first) as usize) {
                        assert_eq!(got, &event, "get and iter disagree on {}", event.seq);
                    }
                    expected += 1;
                }
                Err(_) => failed = true,
            }
        }
        if !failed {
            assert_eq!(expected, end + 1, "iter ended early without an error");
        }
    }
    served
}

/// The whole harness; see the module documentation.
pub fn run(data: &[u8]) {
    let Some(layout) = layout(data) else { return };
    let dir = tempfile::Builder::new()
        .prefix("evlog-fuzz-")
        .tempdir_in(crate::scratch_base())
        .expect("create a scratch directory");
    let (segments, indexes) = write_layout(&layout, dir.path());
    run_dump(dir.path(), &segments, &indexes);

    let options = Options::default().preallocate_bytes(0);
    let Ok(log) = Log::open(dir.path(), options.clone()) else {
        return;
    };
    let starts: Vec<u64> = layout.segments.iter().map(|(seq, _)| *seq).collect();
    let served = read_all(&log, data.len(), &starts);
    let _ = log.close();
    run_dump(dir.path(), &segments, &indexes);

    // Recovery is idempotent: a log that opened once reopens, and serves
    // the same events.
    match Log::open(dir.path(), options) {
        Ok(log) => {
            let again = read_all(&log, data.len(), &starts);
            assert_eq!(served, again, "a second open serves different events");
            let _ = log.close();
        }
        Err(e) => panic!("a log that opened once does not reopen: {e}"),
    }
}
