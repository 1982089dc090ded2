//! Inputs found by the cargo-fuzz targets in `fuzz/` (see fuzz/README.md),
//! kept as plain tests so that a fixed bug stays fixed. Each test is named
//! `regression_<target>_<n>` after the target that found it.

use std::path::{Path, PathBuf};

use evlog::{Event, Log, Options};

/// A segment file header for `first_seq`: the header of a segment the
/// library wrote (so it carries the format version in force), with
/// `first_seq` and the header CRC rewritten as FORMAT.md describes.
fn segment_header(written: &[u8], first_seq: u64) -> Vec<u8> {
    let mut out = written[..32].to_vec();
    out[16..24].copy_from_slice(&first_seq.to_le_bytes());
    let crc = crc32fast::hash(&out[..28]);
    out[28..32].copy_from_slice(&crc.to_le_bytes());
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
    // An empty log: segment 1 and its index, as the library writes them.
    Log::open(dir.path(), Options::default().preallocate_bytes(0))
        .unwrap()
        .close()
        .unwrap();
    let segments = dir.path().join("segments");
    let first = segments.join("00000000000000000001.seg");
    let written = std::fs::read(&first).unwrap();
    let far = (1u64 << 61) + 1;
    std::fs::write(&first, segment_header(&written, 1)).unwrap();
    std::fs::write(
        segments.join(format!("{far:020}.seg")),
        segment_header(&written, far),
    )
    .unwrap();
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

// decode_segment_header found (through its field-by-field check, not a
// panic): a header whose reserved field (bytes 24..28) is not 0 is
// accepted, although FORMAT.md gives the field as 0. This one is format
// version 1 with reserved = 0x00210000; decoding must return Ok or an
// error, never panic.
#[test]
fn regression_decode_segment_header_1() {
    let header: [u8; 32] = [
        0x45, 0x56, 0x4c, 0x4f, 0x47, 0x53, 0x45, 0x47, // "EVLOGSEG"
        0x01, 0x00, 0x00, 0x00, // version 1
        0x20, 0x00, 0x00, 0x00, // header_bytes 32
        0x01, 0x00, 0x00, 0x21, 0x00, 0x00, 0x00, 0x00, // first_seq
        0x00, 0x00, 0x21, 0x00, // reserved, not 0
        0x9a, 0xb7, 0x42, 0xc1, // header CRC
    ];
    assert_eq!(
        crc32fast::hash(&header[..28]).to_le_bytes(),
        header[28..32],
        "the input's CRC is valid, so the decoder looks at every field"
    );
    let _ = evlog::fuzz_api::decode_segment_header(&header);
}
