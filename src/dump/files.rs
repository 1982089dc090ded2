//! What a path given to `evlog-dump` is, and the readers of the file kinds
//! that have no reader of their own elsewhere: lost+found copies, the
//! clean-close marker, a sequence index on its own, the secondary index
//! directory. Everything here only reads; nothing takes a lock the writer
//! takes (the secondary index is copied under sled's own lock, as a
//! read-only view does).

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use crate::codec::{u32_at, u64_at};
use crate::error::{CorruptKind, Error, IoContext, Result};
use crate::index::seq::{INDEX_ENTRY_BYTES, INDEX_HEADER_BYTES};
use crate::options::RECORD_BYTES_LIMIT;
use crate::record::{decode_body, RECORD_HEADER_BYTES};
use crate::recovery::SEGMENTS_DIR;
use crate::segment::{parse_file_name, scan_records_from, SEGMENT_SUFFIX};

use super::RecordInfo;

/// What a path given to `evlog-dump` holds, judged by its content (magic
/// bytes) first and its name only where a file kind has no magic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathKind {
    /// A data directory (or a copy of its `segments/` or `archive/`).
    DataDir,
    /// The secondary index directory (`DIR/index/`, a sled database).
    SecondaryIndex,
    /// A segment file (`.seg`, magic `EVLOGSEG`).
    Segment,
    /// A sequence index file (`.idx`, magic `EVLOGIDX`).
    SequenceIndex,
    /// An archive file (`.evz`).
    Archive,
    /// The clean-close marker (`segments/CLEAN`, magic `EVLOGCLN`).
    CleanMarker,
    /// A durable consumer's position file (`.pos`, magic `EVLOGPOS`).
    ConsumerPosition,
    /// A durable consumer's parked list (`.parked`).
    ParkedList,
    /// The legal holds file (`DIR/holds`, magic `EVLOGHLD`).
    Holds,
    /// Bytes cut from a segment (`DIR/lost+found/<segment>.at-<offset>`).
    LostFound,
    /// `DIR/LOCK`: the pid of the writer that last opened the directory.
    Lock,
    /// `DIR/evlog.toml`, written by people.
    Config,
    /// `DIR/rules/<rule>.json`: an automation rule's counts.
    RuleStats,
}

impl PathKind {
    /// How the dump names it.
    pub fn name(self) -> &'static str {
        match self {
            PathKind::DataDir => "data directory",
            PathKind::SecondaryIndex => "secondary index directory",
            PathKind::Segment => "segment",
            PathKind::SequenceIndex => "sequence index",
            PathKind::Archive => "archive",
            PathKind::CleanMarker => "clean-close marker",
            PathKind::ConsumerPosition => "consumer position file",
            PathKind::ParkedList => "parked list",
            PathKind::Holds => "legal holds file",
            PathKind::LostFound => "lost+found copy",
            PathKind::Lock => "lock file",
            PathKind::Config => "configuration file",
            PathKind::RuleStats => "rule statistics file",
        }
    }
}

/// The first bytes of a zstd frame, as an archive file starts.
const ZSTD_FRAME_MAGIC: [u8; 4] = 0xFD2F_B528u32.to_le_bytes();
/// An archive of deletions only may start with a skippable frame
/// (magic 0x184D2A50..=0x184D2A5F, low nibble free).
const SKIPPABLE_MAGIC_HIGH: u32 = 0x184D_2A50;

/// What `path` is, or why `evlog-dump` has nothing to read there
/// (`Ok(Err(reason))`: an empty file, a directory with no evlog file, a
/// file of another kind). `Err` is an I/O error (a missing path).
pub fn identify(path: &Path) -> Result<std::result::Result<PathKind, String>> {
    let metadata = std::fs::metadata(path).at(path)?;
    if metadata.is_dir() {
        return identify_dir(path);
    }
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    if metadata.len() == 0 {
        return Ok(Err(format!(
            "{} is an empty file, not an evlog file",
            path.display()
        )));
    }
    let mut head = [0u8; 8];
    let mut file = File::open(path).at(path)?;
    let mut read = 0;
    while read < head.len() {
        match file.read(&mut head[read..]).at(path)? {
            0 => break,
            n => read += n,
        }
    }
    let head = &head[..read];
    let kind = match head {
        b"EVLOGSEG" => Some(PathKind::Segment),
        b"EVLOGIDX" => Some(PathKind::SequenceIndex),
        b"EVLOGCLN" => Some(PathKind::CleanMarker),
        b"EVLOGPOS" => Some(PathKind::ConsumerPosition),
        b"EVLOGHLD" => Some(PathKind::Holds),
        _ => None,
    };
    if let Some(kind) = kind {
        return Ok(Ok(kind));
    }
    let first_u32 = u32_at(head, 0).unwrap_or(0);
    let is_archive_start =
        head.starts_with(&ZSTD_FRAME_MAGIC) || first_u32 & !0xF == SKIPPABLE_MAGIC_HIGH;
    if is_archive_start && name.ends_with(".evz") {
        return Ok(Ok(PathKind::Archive));
    }
    if lost_found_offset(path).is_some() {
        return Ok(Ok(PathKind::LostFound));
    }
    // Files without magic bytes are known by name.
    if name.ends_with(".parked") {
        return Ok(Ok(PathKind::ParkedList));
    }
    // A damaged file of a known kind is still that kind: the reader of
    // that kind says what is wrong with it.
    let by_name = if name.ends_with(SEGMENT_SUFFIX) {
        Some(PathKind::Segment)
    } else if name.ends_with(".idx") {
        Some(PathKind::SequenceIndex)
    } else if name.ends_with(".evz") {
        Some(PathKind::Archive)
    } else if name.ends_with(".pos") {
        Some(PathKind::ConsumerPosition)
    } else if name == crate::marker::MARKER_FILE_NAME {
        Some(PathKind::CleanMarker)
    } else if name == crate::holds::HOLDS_FILE {
        Some(PathKind::Holds)
    } else if name == "LOCK" {
        // The name of `DIR/LOCK` (FORMAT.md, "Directory layout").
        Some(PathKind::Lock)
    } else if name == crate::config::CONFIG_FILE {
        Some(PathKind::Config)
    } else if name.ends_with(".json")
        && path
            .parent()
            .and_then(|dir| dir.file_name())
            .is_some_and(|dir| dir == crate::rules::RULES_DIR)
    {
        Some(PathKind::RuleStats)
    } else {
        None
    };
    Ok(by_name.ok_or_else(|| {
        format!(
            "{} is not an evlog file (it starts with {}; evlog files start with EVLOG..., a zstd frame, or are named *.parked or lost+found/*.seg.at-N)",
            path.display(),
            printable(head)
        )
    }))
}

fn identify_dir(path: &Path) -> Result<std::result::Result<PathKind, String>> {
    if path.join("db").is_file() && path.join("conf").is_file() {
        return Ok(Ok(PathKind::SecondaryIndex));
    }
    let has = |sub: &str| path.join(sub).is_dir();
    if has(SEGMENTS_DIR) || has(crate::archiver::ARCHIVE_DIR) {
        return Ok(Ok(PathKind::DataDir));
    }
    // A copy of `segments/` or `archive/` on its own.
    for entry in std::fs::read_dir(path).at(path)? {
        let name = entry.at(path)?.file_name();
        let name = name.to_string_lossy();
        if parse_file_name(&name, SEGMENT_SUFFIX).is_some()
            || parse_file_name(&name, crate::archive::ARCHIVE_SUFFIX).is_some()
        {
            return Ok(Ok(PathKind::DataDir));
        }
    }
    Ok(Err(format!(
        "{} holds no evlog files (no segments/ or archive/, no <20 digits>.seg or .evz file, and it is not an index/ directory)",
        path.display()
    )))
}

/// At most this many bytes of an unknown file's start are shown.
const SHOWN_HEAD_BYTES: usize = 8;

/// Bytes as text when they are printable ASCII, else as hex.
fn printable(bytes: &[u8]) -> String {
    let bytes = &bytes[..bytes.len().min(SHOWN_HEAD_BYTES)];
    if bytes.iter().all(|b| b.is_ascii_graphic() || *b == b' ') {
        format!("{:?}", String::from_utf8_lossy(bytes))
    } else {
        let hex: Vec<String> = bytes.iter().map(|b| format!("{b:02x}")).collect();
        format!("bytes {}", hex.join(" "))
    }
}

/// The offset in its segment where a lost+found copy's bytes were cut
/// (from its name, `<segment file name>.at-<offset>`), when `path` is one.
pub fn lost_found_offset(path: &Path) -> Option<u64> {
    let name = path.file_name()?.to_str()?;
    let (segment, offset) = name.rsplit_once(".at-")?;
    parse_file_name(segment, SEGMENT_SUFFIX)?;
    offset.parse().ok()
}

/// What a lost+found copy holds: the valid records at its start, then
/// the bytes that are not one.
#[derive(Debug)]
pub struct LostFoundReport {
    /// The copy.
    pub path: PathBuf,
    /// Offset in the segment the bytes were cut from (from the name).
    pub cut_at: u64,
    /// Length of the copy.
    pub file_bytes: u64,
    /// Valid records at the start of the copy.
    pub records: u64,
    /// End of the last valid record, as an offset in the copy.
    pub valid_end: u64,
    /// Why the bytes after `valid_end` are not a record (`None`: the rest
    /// is zeros or nothing).
    pub stopped_by: Option<(u64, CorruptKind)>,
}

/// Reads a lost+found copy: its valid records (each given to `on_record`
/// with its offset in the copy), then why the rest is not one. Nothing in
/// such a copy is part of the log; it is kept for a person to look at.
pub fn inspect_lost_found(
    path: &Path,
    mut on_record: impl FnMut(&RecordInfo),
) -> Result<LostFoundReport> {
    let file = crate::storage::os_file(File::open(path).at(path)?);
    let file_bytes = file.size_bytes().at(path)?;
    let mut header = [0u8; RECORD_HEADER_BYTES];
    let head_bytes = file_bytes.min(RECORD_HEADER_BYTES as u64) as usize;
    file.read_exact_at(&mut header[..head_bytes], 0).at(path)?;
    // The copy starts where a unit started: its first record names the
    // seq the scan expects.
    let first_seq = u64_at(&header, 8).unwrap_or(0).max(1);
    let scan = scan_records_from(
        &*file,
        path,
        0,
        first_seq,
        file_bytes,
        RECORD_BYTES_LIMIT,
        &mut |offset, header, bytes| {
            on_record(&RecordInfo {
                offset,
                seq: header.seq,
                record_bytes: header.record_bytes(),
                unit_remaining: header.unit_remaining,
                synced_through: header.synced_through(),
                event: decode_body(header.seq, &bytes[RECORD_HEADER_BYTES..]),
            })
        },
    )?;
    Ok(LostFoundReport {
        path: path.to_path_buf(),
        cut_at: lost_found_offset(path).unwrap_or(0),
        file_bytes,
        records: scan.offsets.len() as u64,
        valid_end: scan.end,
        stopped_by: scan.stopped_by,
    })
}

/// The fields of a clean-close marker, checked alone (the dump of a data
/// directory checks it against the active segment).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MarkerInfo {
    /// The marker's format version.
    pub format_version: u32,
    /// First seq of the segment the marker vouches for.
    pub active_first_seq: u64,
    /// Highest seq at the clean close.
    pub last_seq: u64,
    /// Length of the active segment at the clean close.
    pub active_bytes: u64,
    /// Offset of its last record (32 when it had none).
    pub tail_offset: u64,
    /// CRC-32 of the segment's bytes from `tail_offset` to its end.
    pub tail_crc: u32,
    /// CRC-32 of the active index's entries.
    pub index_entries_crc: u32,
}

/// Reads and checks a clean-close marker file (`segments/CLEAN`).
pub fn read_marker(path: &Path) -> Result<MarkerInfo> {
    let bytes = std::fs::read(path).at(path)?;
    let marker = crate::marker::CleanClose::decode(&bytes, path)?;
    Ok(MarkerInfo {
        format_version: crate::marker::MARKER_FORMAT_VERSION,
        active_first_seq: marker.active_first_seq,
        last_seq: marker.last_seq,
        active_bytes: marker.active_bytes,
        tail_offset: marker.tail_offset,
        tail_crc: marker.tail_crc,
        index_entries_crc: marker.index_entries_crc,
    })
}

/// A sequence index file read on its own (without its segment).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeqIndexInfo {
    /// The index file.
    pub path: PathBuf,
    /// Its length.
    pub file_bytes: u64,
    /// The format version in its header.
    pub format_version: u32,
    /// Whether its segment is sealed (the header's `sealed` flag).
    pub sealed: bool,
    /// The first seq of its segment.
    pub first_seq: u64,
    /// The CRC of the entries recorded at seal (`None` while active).
    pub entries_crc: Option<u32>,
    /// Entries up to the last non-zero one (the rest is preallocation).
    pub entries: Vec<u64>,
    /// Whether `entries_crc` matches the entries (sealed only).
    pub entries_crc_ok: Option<bool>,
}

/// Reads a sequence index file: header checked as open checks it, then
/// its entries. `Corrupt`/`UnsupportedVersion` name the file and offset.
pub fn read_seq_index(path: &Path) -> Result<SeqIndexInfo> {
    let bytes = std::fs::read(path).at(path)?;
    let header = crate::index::seq::decode_index_header(&bytes, path)?;
    let body = bytes.get(INDEX_HEADER_BYTES as usize..).unwrap_or(&[]);
    let mut entries: Vec<u64> = body
        .chunks_exact(INDEX_ENTRY_BYTES as usize)
        .map(|chunk| u64_at(chunk, 0).unwrap_or(0))
        .collect();
    while entries.last() == Some(&0) {
        entries.pop();
    }
    let entries_crc_ok = header.entries_crc.map(|expected| {
        let end = entries.len() * INDEX_ENTRY_BYTES as usize;
        body.get(..end).map(crc32fast::hash) == Some(expected)
    });
    if let Some(position) = entries.windows(2).position(|pair| pair[1] <= pair[0]) {
        return Err(Error::Corrupt {
            file: path.to_path_buf(),
            offset: INDEX_HEADER_BYTES + (position as u64 + 1) * INDEX_ENTRY_BYTES,
            kind: CorruptKind::Index("entries do not strictly increase"),
        });
    }
    Ok(SeqIndexInfo {
        path: path.to_path_buf(),
        file_bytes: bytes.len() as u64,
        format_version: u32_at(&bytes, 8).unwrap_or(0),
        sealed: header.entries_crc.is_some(),
        first_seq: header.first_seq,
        entries_crc: header.entries_crc,
        entries,
        entries_crc_ok,
    })
}

/// Reads and checks a legal holds file (`DIR/holds`) at any path.
pub fn read_holds_file(path: &Path) -> Result<Vec<crate::holds::Hold>> {
    let bytes = std::fs::read(path).at(path)?;
    crate::holds::decode_holds(&bytes, path)
}

/// The pid a `LOCK` file names (decimal ASCII and a newline, FORMAT.md):
/// the writer that last opened the directory. Whether that process still
/// runs, or still holds the lock, is not checked: testing the lock would
/// take it.
pub fn read_lock_pid(path: &Path) -> Result<u32> {
    let bytes = std::fs::read(path).at(path)?;
    std::str::from_utf8(&bytes)
        .ok()
        .and_then(|text| text.trim_end_matches('\n').parse().ok())
        .ok_or_else(|| Error::Corrupt {
            file: path.to_path_buf(),
            offset: 0,
            kind: CorruptKind::BadHeader("a lock file holds a pid in decimal and a newline"),
        })
}

/// The pid of the process that holds the writer's lock on the data
/// directory `dir` right now, if one does, found without touching the
/// lock: Linux lists every `flock` in `/proc/locks` with the locker's pid
/// and the file's inode, and `DIR/LOCK` names its owner. `None` when no
/// process holds it, or where this cannot be known (other systems).
pub fn lock_holder(dir: &Path) -> Option<u32> {
    #[cfg(target_os = "linux")]
    {
        use std::os::unix::fs::MetadataExt;
        let lock = dir.join("LOCK");
        let inode = std::fs::metadata(&lock).ok()?.ino();
        let owner = read_lock_pid(&lock).ok()?;
        let locks = std::fs::read_to_string("/proc/locks").ok()?;
        // "1: FLOCK  ADVISORY  WRITE 21090 fe:00:10027473 0 EOF"
        let held = locks.lines().any(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            fields.get(1) == Some(&"FLOCK")
                && fields.get(4).and_then(|pid| pid.parse::<u32>().ok()) == Some(owner)
                && fields
                    .get(5)
                    .and_then(|id| id.rsplit(':').next())
                    .and_then(|ino| ino.parse::<u64>().ok())
                    == Some(inode)
        });
        held.then_some(owner)
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = dir;
        None
    }
}

/// What the secondary index directory holds, read from a private copy.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SecondaryIndexInfo {
    /// `Mversion` (the layout version), when present and 4 bytes.
    pub layout_version: Option<u32>,
    /// `Mmark`: indexed through this seq, and the id of that event.
    pub mark: Option<(u64, uuid::Uuid)>,
    /// Number of entries by family (posting chunks by kind, id runs, ...).
    pub entries: BTreeMap<String, u64>,
    /// Bytes of keys and values together.
    pub bytes: u64,
}

/// Reads the secondary index directory (`DIR/index/`) without opening it
/// in place: sled writes when it opens a database, so its files are
/// copied (under sled's own lock, which the writer's process holds while
/// the log is open: then this fails saying so) and the copy is read.
pub fn read_secondary_index(index_dir: &Path) -> Result<SecondaryIndexInfo> {
    let copy = crate::index::copy_locked_store(index_dir).map_err(|message| Error::Index {
        path: index_dir.to_path_buf(),
        message,
    })?;
    let store = crate::index::store::SledStore::open(copy.path()).map_err(|failure| {
        let (crate::index::store::OpenFailure::Locked(message)
        | crate::index::store::OpenFailure::Unusable(message)) = failure;
        Error::Index {
            path: index_dir.to_path_buf(),
            message,
        }
    })?;
    use crate::index::keys;
    use crate::index::store::IndexStore;
    let mut info = SecondaryIndexInfo::default();
    store.visit(&[], &[0xFF; 9], &mut |key, value| {
        info.bytes += (key.len() + value.len()) as u64;
        let family = match key.first() {
            Some(&keys::POSTING) => match key.get(1) {
                Some(1) => "posting: correlation",
                Some(2) => "posting: entity",
                Some(3) => "posting: session",
                Some(4) => "posting: actor",
                Some(5) => "posting: type",
                Some(6) => "posting: causation links",
                _ => "posting: unknown kind",
            },
            Some(&keys::ID_RUN) => "id runs",
            Some(&keys::TIME_BLOCK) => "time blocks",
            Some(&keys::STAT) => "counters",
            Some(&keys::LINK) => "entity links",
            Some(&keys::TYPE_REGISTRY) => "type registry",
            Some(b'M') => {
                if key == keys::META_VERSION {
                    info.layout_version = u32_at(value, 0).filter(|_| value.len() == 4);
                } else if key == keys::META_MARK && value.len() == 24 {
                    let mut id = [0u8; 16];
                    id.copy_from_slice(&value[8..24]);
                    info.mark = u64_at(value, 0).map(|seq| (seq, uuid::Uuid::from_bytes(id)));
                }
                "meta"
            }
            _ => "unknown",
        };
        *info.entries.entry(family.to_string()).or_default() += 1;
        Ok(true)
    })?;
    Ok(info)
}

/// Bytes shown on each side of a damaged offset by `--hex`.
pub const HEX_CONTEXT_BYTES: u64 = 64;
/// Bytes per line of a hex dump.
const HEX_LINE_BYTES: u64 = 16;

/// A hex dump (offset, 16 bytes in hex, the printable ones as text) of
/// the bytes of `path` from `HEX_CONTEXT_BYTES` before `offset` to as many
/// after it, lines aligned to 16; the line holding `offset` is marked
/// with `>` and the byte itself bracketed.
pub fn hex_around(path: &Path, offset: u64) -> Result<String> {
    let file = crate::storage::os_file(File::open(path).at(path)?);
    let file_bytes = file.size_bytes().at(path)?;
    let start = offset.saturating_sub(HEX_CONTEXT_BYTES) / HEX_LINE_BYTES * HEX_LINE_BYTES;
    let end = offset
        .saturating_add(HEX_CONTEXT_BYTES)
        .div_ceil(HEX_LINE_BYTES)
        .saturating_mul(HEX_LINE_BYTES)
        .min(file_bytes);
    if start >= end {
        return Ok(format!(
            "  (offset {offset} is at or past the end of the file, {file_bytes} bytes)\n"
        ));
    }
    let mut bytes = vec![0u8; (end - start) as usize];
    file.read_exact_at(&mut bytes, start).at(path)?;
    let mut out = String::new();
    for (line_number, line) in bytes.chunks(HEX_LINE_BYTES as usize).enumerate() {
        let line_start = start + line_number as u64 * HEX_LINE_BYTES;
        let holds_offset = (line_start..line_start + HEX_LINE_BYTES).contains(&offset);
        out.push_str(if holds_offset { "> " } else { "  " });
        out.push_str(&format!("{line_start:08x} "));
        for (i, byte) in line.iter().enumerate() {
            let at = line_start + i as u64;
            if at == offset {
                out.push_str(&format!("[{byte:02x}]"));
            } else if at == offset + 1 {
                out.push_str(&format!("{byte:02x}"));
            } else {
                out.push_str(&format!(" {byte:02x}"));
            }
        }
        for _ in line.len()..HEX_LINE_BYTES as usize {
            out.push_str("   ");
        }
        out.push_str("  |");
        for byte in line {
            out.push(if byte.is_ascii_graphic() || *byte == b' ' {
                *byte as char
            } else {
                '.'
            });
        }
        out.push_str("|\n");
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_dump_marks_the_offset() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let bytes: Vec<u8> = (0..=255u8).collect();
        std::fs::write(&path, &bytes).unwrap();
        let dump = hex_around(&path, 100).unwrap();
        let lines: Vec<&str> = dump.lines().collect();
        // From 32 (100 - 64 rounded down to 16) to 176 (164 rounded up).
        assert_eq!(lines.len(), 9, "{dump}");
        assert!(lines[0].starts_with("  00000020  20 21"), "{dump}");
        let marked: Vec<&&str> = lines.iter().filter(|l| l.starts_with('>')).collect();
        assert_eq!(marked.len(), 1);
        assert!(marked[0].starts_with("> 00000060 "), "{dump}");
        assert!(marked[0].contains(" 63[64]65 "), "{dump}");
        assert!(hex_around(&path, 5000).unwrap().contains("past the end"));
    }

    #[test]
    fn identify_tells_kinds_by_magic_then_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let file = |name: &str, bytes: &[u8]| {
            let path = dir.path().join(name);
            std::fs::write(&path, bytes).unwrap();
            identify(&path).unwrap()
        };
        // Magic wins over the name.
        assert_eq!(file("renamed.txt", b"EVLOGSEG rest"), Ok(PathKind::Segment));
        assert_eq!(file("x.seg", b"EVLOGIDX rest"), Ok(PathKind::SequenceIndex));
        assert_eq!(file("m", b"EVLOGCLN"), Ok(PathKind::CleanMarker));
        assert_eq!(file("p", b"EVLOGPOS"), Ok(PathKind::ConsumerPosition));
        assert_eq!(file("h", b"EVLOGHLD"), Ok(PathKind::Holds));
        assert_eq!(
            file("1.evz", &0xFD2F_B528u32.to_le_bytes()),
            Ok(PathKind::Archive)
        );
        // A damaged file of a known kind is that kind, by name.
        assert_eq!(
            file("00000000000000000001.seg", b"XVLOGSEG"),
            Ok(PathKind::Segment)
        );
        assert_eq!(file("w.parked", b"\x10\0\0\0"), Ok(PathKind::ParkedList));
        assert_eq!(
            file("00000000000000000001.seg.at-32", b"\x40\0\0\0"),
            Ok(PathKind::LostFound)
        );
        assert_eq!(file("LOCK", b"123\n"), Ok(PathKind::Lock));
        assert_eq!(file("evlog.toml", b"[retention]"), Ok(PathKind::Config));
        // Nothing evlog wrote.
        let empty = file("e", b"");
        assert!(empty
            .unwrap_err()
            .ends_with("is an empty file, not an evlog file"));
        let other = file("notes", b"\x01\x02hello");
        assert!(other
            .unwrap_err()
            .contains("(it starts with bytes 01 02 68 65 6c 6c 6f;"));
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        assert!(identify(&dir.path().join("sub")).unwrap().is_err());
        std::fs::create_dir(dir.path().join("sub/segments")).unwrap();
        assert_eq!(
            identify(&dir.path().join("sub")).unwrap(),
            Ok(PathKind::DataDir)
        );
        assert!(identify(&dir.path().join("missing")).is_err());
    }

    #[test]
    fn lost_found_names_are_recognised() {
        let name = "00000000000000000001.seg.at-5190";
        assert_eq!(lost_found_offset(Path::new(name)), Some(5190));
        assert_eq!(lost_found_offset(Path::new("x.seg.at-5")), None);
        assert_eq!(
            lost_found_offset(Path::new("00000000000000000001.seg")),
            None
        );
    }
}
