//! Inputs found by the cargo-fuzz targets in `fuzz/` (see fuzz/README.md),
//! kept as plain tests so that a fixed bug stays fixed. Each test is named
//! `regression_<target>_<n>` after the target that found it.

use std::path::{Path, PathBuf};

use evlog::{Event, Log, Options};

/// A segment file header as FORMAT.md describes it.
fn segment_header(first_seq: u64) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(b"EVLOGSEG");
    out.extend_from_slice(&crate::common::FORMAT_VERSION.to_le_bytes());
    out.extend_from_slice(&32u32.to_le_bytes());
    out.extend_from_slice(&first_seq.to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes());
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

fn segment_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir.join("segments"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .collect();
    files.sort();
    files
}

// open_dir found: two segment files whose names are 2^61 apart make the
// first one a sealed segment of 2^61 records, and
// `SeqIndex::open_sealed` computes `INDEX_HEADER_BYTES + count *
// INDEX_ENTRY_BYTES` unchecked: "attempt to multiply with overflow"
// (src/index/seq.rs, `let exact_len = ...`) in builds with overflow
// checks; in release builds the length wraps and the index file is
// trimmed to the wrapped length. Opening must fail with an error instead.
#[test]
fn regression_open_dir_1() {
    let dir = tempfile::tempdir().unwrap();
    let segments = dir.path().join("segments");
    std::fs::create_dir_all(&segments).unwrap();
    let far = (1u64 << 61) + 1;
    std::fs::write(segments.join("00000000000000000001.seg"), segment_header(1)).unwrap();
    std::fs::write(segments.join(format!("{far:020}.seg")), segment_header(far)).unwrap();
    // The index only has to exist for the multiplication to be reached.
    std::fs::write(segments.join("00000000000000000001.idx"), [0u8; 64]).unwrap();
    let opened = std::panic::catch_unwind(|| {
        Log::open(dir.path(), Options::default().preallocate_bytes(0)).map(drop)
    });
    assert!(
        opened.is_ok(),
        "Log::open panicked instead of returning an error"
    );
    assert!(
        opened.unwrap().is_err(),
        "a 2^61-record segment of 32 bytes opened"
    );
}

// open_dir found: `get` and `iter` disagree when a sealed segment holds
// bytes after its last indexed record. `Segment::open_sealed` keeps a
// sealed segment whose scan failed when its index passes its checks, so
// the log opens and `get` serves every event through the index, but
// `Iter::step` reads a segment until the end of its file, not until its
// record count: past the last record it reads the extra bytes as the
// next sequence number's record instead of moving on to the next
// segment. With junk there, `iter` fails where `get` succeeds (below);
// with valid records there whose sequence numbers belong to the next
// segment (the fuzzer's input), `iter` returns those records while `get`
// returns the next segment's, different events for the same number.
#[test]
fn regression_open_dir_2() {
    let dir = tempfile::tempdir().unwrap();
    let options = Options::default()
        .preallocate_bytes(0)
        .segment_bytes_max(evlog::SEGMENT_BYTES_MIN);
    let log = Log::open(dir.path(), options.clone()).unwrap();
    for i in 0..60u8 {
        log.append(Event::new("roll.test").bytes_payload(vec![i; 1500]))
            .unwrap();
    }
    log.close().unwrap();
    let files = segment_files(dir.path());
    assert!(files.len() >= 2, "the log did not roll");
    let mut sealed = std::fs::read(&files[0]).unwrap();
    sealed.extend_from_slice(&[0xA5; 100]);
    std::fs::write(&files[0], &sealed).unwrap();

    let log = match Log::open(dir.path(), options) {
        Ok(log) => log,
        // Refusing the damaged directory is also consistent.
        Err(_) => return,
    };
    let (first, last) = (log.first_seq().unwrap(), log.last_seq().unwrap());
    let by_get: Vec<_> = (first..=last).map(|seq| log.get(seq).ok()).collect();
    for (seq, item) in (first..).zip(log.iter(..).unwrap()) {
        match item {
            Ok(event) => {
                assert_eq!(event.seq, seq);
                if let Some(got) = &by_get[(seq - first) as usize] {
                    assert_eq!(got, &event, "get and iter disagree on {seq}");
                }
            }
            Err(e) => assert!(
                by_get[(seq - first) as usize].is_none(),
                "iter fails at {seq} ({e}) where get succeeds"
            ),
        }
    }
}
