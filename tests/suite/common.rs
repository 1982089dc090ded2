//! Helpers shared by the test modules: a seeded PRNG, events whose content
//! can be recomputed from a number, and byte-level access to data files
//! that does not go through the library (so the tests do not trust the
//! code under test to describe its own files).

use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use evlog::{Event, Log, LoggedEvent, Options, Payload};
use serde_json::{json, Value};
use uuid::Uuid;

/// The segment and index format version this build writes (FORMAT.md).
pub const FORMAT_VERSION: u32 = 3;
/// The sequence index format version (unchanged when segments went to 3).
pub const INDEX_FORMAT_VERSION: u32 = 2;
/// The segment version of the fixtures in `tests/fixtures/` (written before
/// version 3; they must stay readable).
pub const FIXTURE_FORMAT_VERSION: u32 = 2;
/// A version from the future, which must be refused.
pub const FUTURE_FORMAT_VERSION: u32 = 99;

/// Size of a segment file header.
pub const SEGMENT_HEADER_BYTES: u64 = 32;
/// Size of a record header.
pub const RECORD_HEADER_BYTES: u64 = 24;
/// Size of an index file header.
pub const INDEX_HEADER_BYTES: u64 = 32;

/// A small deterministic PRNG (splitmix64), so every failure replays.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (`n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    pub fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.next_u64() as u8).collect()
    }

    /// Bytes that are never zero (a zero header would read as preallocated
    /// space rather than as garbage).
    pub fn nonzero_bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| 1 + self.below(255) as u8).collect()
    }
}

pub fn tempdir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("evlog-suite-")
        .tempdir()
        .expect("create a temporary directory")
}

/// Options whose active segment ends exactly at its last record.
pub fn exact_options() -> Options {
    Options::default().preallocate_bytes(0)
}

/// Options that roll segments quickly.
pub fn rolling_options() -> Options {
    Options::default()
        .segment_bytes_max(64 * 1024)
        .preallocate_bytes(0)
}

/// What an event was appended with, to compare with what is read back.
#[derive(Debug, Clone, PartialEq)]
pub struct Spec {
    pub id: Uuid,
    pub event_type: String,
    pub entity: (String, String),
    pub payload: Value,
}

impl Spec {
    /// Event number `n` of a test; the padding varies the record size.
    pub fn numbered(n: u64, pad_bytes: usize) -> Spec {
        Spec {
            id: Uuid::from_u128(0x5eed_0000_0000_0000_0000_0000_0000_0000 | u128::from(n)),
            event_type: "test.numbered".into(),
            entity: ("task".into(), format!("T-{n}")),
            payload: json!({"n": n, "pad": "p".repeat(pad_bytes)}),
        }
    }

    /// Events `1..=count`, with record sizes varying between about 100 and
    /// `100 + pad_max` bytes.
    pub fn many(count: u64, pad_max: usize) -> Vec<Spec> {
        (1..=count)
            .map(|n| Spec::numbered(n, (n as usize * 37) % (pad_max + 1)))
            .collect()
    }

    pub fn event(&self) -> Event {
        Event::new(self.event_type.clone())
            .id(self.id)
            .entity(self.entity.0.clone(), self.entity.1.clone())
            .json_payload(&self.payload)
            .expect("a JSON value serializes")
    }

    /// Panics unless `got` is this event stored at `seq`, byte for byte.
    pub fn assert_matches(&self, got: &LoggedEvent, seq: u64) {
        assert_eq!(got.seq, seq, "sequence number");
        assert_eq!(got.id, self.id, "id of seq {seq}");
        assert_eq!(got.event_type, self.event_type, "type of seq {seq}");
        let entity = got
            .entity
            .as_ref()
            .map(|e| (e.entity_type.clone(), e.entity_id.clone()));
        assert_eq!(entity.as_ref(), Some(&self.entity), "entity of seq {seq}");
        let expected = serde_json::to_string(&self.payload).expect("serialize");
        assert_eq!(got.payload, Payload::Json(expected), "payload of seq {seq}");
    }
}

/// Appends every spec in order to a fresh log, checking the sequence
/// numbers (`specs[i]` gets `first + i`), and closes it.
pub fn write_log(dir: &Path, options: Options, specs: &[Spec]) {
    let log = Log::open(dir, options).expect("open");
    let first = log.last_seq().unwrap_or(0) + 1;
    for (i, spec) in specs.iter().enumerate() {
        assert_eq!(log.append(spec.event()).expect("append"), first + i as u64);
    }
    log.close().expect("close");
    forget_clean_close(dir);
}

/// Removes the clean-close marker, leaving the files as a crash right
/// after the last append would (everything synced, nothing vouched for):
/// the recovery tests then damage them as a crash could.
pub fn forget_clean_close(dir: &Path) {
    let marker = segments_dir(dir).join("CLEAN");
    if marker.exists() {
        std::fs::remove_file(marker).expect("remove the clean-close marker");
    }
}

/// Panics unless the log holds exactly `specs` as seqs `1..=specs.len()`,
/// read both by `get` and by `iter`.
pub fn assert_holds(log: &Log, specs: &[Spec]) {
    let count = specs.len() as u64;
    assert_eq!(log.last_seq(), (count > 0).then_some(count), "last_seq");
    for (i, spec) in specs.iter().enumerate() {
        let seq = i as u64 + 1;
        let got = log
            .get(seq)
            .unwrap_or_else(|e| panic!("get({seq}) failed: {e}"));
        spec.assert_matches(&got, seq);
    }
    let mut seen = 0u64;
    for (i, item) in log.iter(..).expect("iter").enumerate() {
        let got = item.unwrap_or_else(|e| panic!("iter item {} failed: {e}", i + 1));
        let spec = specs
            .get(i)
            .unwrap_or_else(|| panic!("iter yields seq {} past the end", got.seq));
        spec.assert_matches(&got, i as u64 + 1);
        seen += 1;
    }
    assert_eq!(seen, count, "iter yielded {seen} of {count} events");
    assert!(matches!(log.get(count + 1), Err(evlog::Error::NotFound(_))));
}

pub fn segments_dir(dir: &Path) -> PathBuf {
    dir.join("segments")
}

/// The segment files of a data directory, in sequence order.
pub fn segment_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(segments_dir(dir))
        .expect("read the segments directory")
        .map(|entry| entry.expect("directory entry").path())
        .filter(|path| path.extension().is_some_and(|e| e == "seg"))
        .collect();
    files.sort();
    files
}

pub fn index_file(segment: &Path) -> PathBuf {
    segment.with_extension("idx")
}

/// The first sequence number in a segment or index file name.
pub fn first_seq_of(path: &Path) -> u64 {
    path.file_stem()
        .and_then(|s| s.to_str())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("{} has no sequence number in its name", path.display()))
}

/// A record as found in a segment file by the test's own parser.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordPos {
    pub offset: u64,
    pub len: u64,
    pub seq: u64,
    /// Records after this one in its commit group (from the header).
    pub group_remaining: u32,
    /// Position in, and size of, its commit group (derived by the parser
    /// from `group_remaining` over consecutive records).
    pub group_index: u32,
    pub group_count: u32,
}

impl RecordPos {
    pub fn end(&self) -> u64 {
        self.offset + self.len
    }
    /// Offset of a byte inside the body.
    pub fn body_byte(&self, at: u64) -> u64 {
        self.offset + RECORD_HEADER_BYTES + at
    }
}

fn u32_at(bytes: &[u8], at: u64) -> u32 {
    let at = at as usize;
    u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes"))
}

fn u64_at(bytes: &[u8], at: u64) -> u64 {
    let at = at as usize;
    u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8 bytes"))
}

/// The records of an intact segment file, found by their length fields
/// (stops at zeros or at the end of the file).
pub fn records(segment: &Path) -> Vec<RecordPos> {
    let bytes = std::fs::read(segment).expect("read segment");
    let mut found = Vec::new();
    let mut offset = SEGMENT_HEADER_BYTES;
    while offset + RECORD_HEADER_BYTES <= bytes.len() as u64 {
        let body_len = u64::from(u32_at(&bytes, offset));
        if body_len == 0 || offset + RECORD_HEADER_BYTES + body_len > bytes.len() as u64 {
            break;
        }
        found.push(RecordPos {
            offset,
            len: RECORD_HEADER_BYTES + body_len,
            seq: u64_at(&bytes, offset + 8),
            group_remaining: u32_at(&bytes, offset + 16),
            group_index: 0,
            group_count: 0,
        });
        offset += RECORD_HEADER_BYTES + body_len;
    }
    // A commit group runs up to and including a record with no remaining.
    let mut start = 0;
    for end in 0..found.len() {
        if found[end].group_remaining == 0 || end + 1 == found.len() {
            let count = (end + 1 - start) as u32;
            for (i, record) in found[start..=end].iter_mut().enumerate() {
                record.group_index = i as u32;
                record.group_count = count;
            }
            start = end + 1;
        }
    }
    found
}

/// Panics unless the index file of `segment` is exactly one entry per
/// record, each the record's offset, after a valid header.
pub fn assert_index_matches(segment: &Path) {
    let index = std::fs::read(index_file(segment))
        .unwrap_or_else(|e| panic!("read the index of {}: {e}", segment.display()));
    let offsets: Vec<u64> = records(segment).iter().map(|r| r.offset).collect();
    assert!(index.len() >= INDEX_HEADER_BYTES as usize, "index header");
    assert_eq!(&index[..8], b"EVLOGIDX", "index magic");
    assert_eq!(u64_at(&index, 16), first_seq_of(segment), "index first_seq");
    assert_eq!(
        crc32fast::hash(&index[..28]),
        u32_at(&index, 28),
        "index header CRC"
    );
    let entries: Vec<u64> = index[INDEX_HEADER_BYTES as usize..]
        .chunks(8)
        .map(|c| u64::from_le_bytes(c.try_into().expect("whole entries")))
        .collect();
    assert_eq!(entries, offsets, "index entries of {}", segment.display());
}

pub fn file_len(path: &Path) -> u64 {
    std::fs::metadata(path).expect("stat").len()
}

/// XORs one byte of a file with `mask`.
pub fn flip_byte(path: &Path, offset: u64, mask: u8) {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .expect("open for flip");
    let mut byte = [0u8; 1];
    file.read_exact_at(&mut byte, offset).expect("read byte");
    byte[0] ^= mask;
    file.write_all_at(&byte, offset).expect("write byte");
}

pub fn write_at(path: &Path, offset: u64, bytes: &[u8]) {
    let file = OpenOptions::new()
        .write(true)
        .open(path)
        .expect("open for write");
    file.write_all_at(bytes, offset).expect("write");
}

pub fn truncate(path: &Path, len: u64) {
    let file = OpenOptions::new()
        .write(true)
        .open(path)
        .expect("open for truncate");
    file.set_len(len).expect("truncate");
}

pub fn append_bytes(path: &Path, bytes: &[u8]) {
    let len = file_len(path);
    write_at(path, len, bytes);
}

/// Rewrites a 32-byte file header (segment or index) with `edit` and fixes
/// its CRC (bytes 28..32 over 0..28), so only the edited field is wrong.
pub fn edit_header(path: &Path, edit: impl FnOnce(&mut [u8; 32])) {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .expect("open header");
    let mut header = [0u8; 32];
    file.read_exact_at(&mut header, 0).expect("read header");
    edit(&mut header);
    let crc = crc32fast::hash(&header[..28]);
    header[28..].copy_from_slice(&crc.to_le_bytes());
    file.write_all_at(&header, 0).expect("write header");
}

/// Every file of the segments directory, to restore between experiments.
pub struct Snapshot {
    files: Vec<(PathBuf, Vec<u8>)>,
}

impl Snapshot {
    pub fn take(dir: &Path) -> Snapshot {
        let mut files = Vec::new();
        for entry in std::fs::read_dir(segments_dir(dir)).expect("read segments") {
            let path = entry.expect("entry").path();
            let bytes = std::fs::read(&path).expect("read file");
            files.push((path, bytes));
        }
        Snapshot { files }
    }

    /// Puts back exactly the files of the snapshot.
    pub fn restore(&self, dir: &Path) {
        let segments = segments_dir(dir);
        std::fs::remove_dir_all(&segments).expect("remove segments");
        std::fs::create_dir(&segments).expect("create segments");
        for (path, bytes) in &self.files {
            std::fs::write(path, bytes).expect("restore file");
        }
    }
}

/// The `evlog` binary with `--dir DIR`.
pub fn evlog_cli(dir: &Path) -> std::process::Command {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_evlog"));
    command.arg("--dir").arg(dir);
    command
}

/// `evlog --dir DIR append` with all three streams piped, started.
pub fn spawn_cli_append(dir: &Path) -> std::process::Child {
    use std::process::Stdio;
    evlog_cli(dir)
        .arg("append")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn evlog append")
}

/// Runs `evlog --dir DIR append` with `input` on stdin, to completion.
pub fn run_cli_append(dir: &Path, input: &str) -> std::process::Output {
    use std::io::Write;
    let mut child = spawn_cli_append(dir);
    let mut stdin = child.stdin.take().expect("stdin");
    // The child may refuse to start (damaged log) or stop reading at a bad
    // line; a broken pipe is expected then.
    let _ = stdin.write_all(input.as_bytes());
    drop(stdin);
    child.wait_with_output().expect("wait for evlog append")
}

/// Output bytes as text, for assertions.
pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Runs `evlog --dir DIR ARGS...` to completion with empty stdin.
pub fn run_cli(dir: &Path, args: &[&str]) -> std::process::Output {
    evlog_cli(dir)
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("run evlog {args:?}: {e}"))
}

/// Everything a command said, for assertion messages.
pub fn said(output: &std::process::Output) -> String {
    format!(
        "exit {:?}\nstdout: {}\nstderr: {}",
        output.status.code(),
        text(&output.stdout),
        text(&output.stderr)
    )
}

/// Stdout of a command that must succeed without a word on stderr.
pub fn cli_ok(dir: &Path, args: &[&str]) -> String {
    let output = run_cli(dir, args);
    assert_eq!(output.status.code(), Some(0), "{args:?}: {}", said(&output));
    assert!(output.stderr.is_empty(), "{args:?}: {}", said(&output));
    text(&output.stdout)
}

/// Every file and directory under `root` (relative path -> bytes, `None`
/// for a directory); empty when `root` does not exist.
pub fn tree(root: &Path) -> std::collections::BTreeMap<PathBuf, Option<Vec<u8>>> {
    let mut found = std::collections::BTreeMap::new();
    if !root.exists() {
        return found;
    }
    let mut pending = vec![root.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).expect("read_dir") {
            let path = entry.expect("entry").path();
            let relative = path.strip_prefix(root).expect("under root").to_path_buf();
            if path.is_dir() {
                found.insert(relative, None);
                pending.push(path);
            } else {
                found.insert(relative, Some(std::fs::read(&path).expect("read file")));
            }
        }
    }
    found
}

/// Asserts that `after` (a `tree`) has the same files with the same bytes
/// as `before`; `who` names what ran between, for the message.
pub fn assert_unchanged(
    before: &std::collections::BTreeMap<PathBuf, Option<Vec<u8>>>,
    after: &std::collections::BTreeMap<PathBuf, Option<Vec<u8>>>,
    who: &str,
) {
    assert_eq!(
        after.keys().collect::<Vec<_>>(),
        before.keys().collect::<Vec<_>>(),
        "{who} added or removed files"
    );
    assert!(after == before, "{who} changed file contents");
}

/// Runs `evlog ARGS` on `missing`, a path that does not exist: it must fail
/// with exit 2 saying there is no data directory. Returns what it said.
pub fn assert_no_data_directory(missing: &Path, args: &[&str]) -> std::process::Output {
    let output = run_cli(missing, args);
    assert_eq!(output.status.code(), Some(2), "{args:?}: {}", said(&output));
    assert!(
        text(&output.stderr).contains("no evlog data directory at"),
        "{args:?}: {}",
        said(&output)
    );
    output
}
