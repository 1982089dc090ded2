//! The byte layout of an archive file (`DIR/archive/<first seq>.evz`) and
//! the pure encoders and decoders of its metadata frames; no I/O here.
//!
//! An archive is a sequence of zstd frames that is at the same time:
//! - a valid zstd stream: `zstd -d` skips the skippable frames and prints
//!   the data frames' records, back to back;
//! - a file of zstd's seekable format (contrib/seekable_format): its last
//!   frame is the seek table, with one entry per frame before it (the
//!   evlog metadata frames are entries of decompressed size 0, as that
//!   format prescribes for skippable frames), no checksums;
//! - an evlog archive: the footer frame (located through the seek table's
//!   last entry) and the frame index say which sequence numbers each data
//!   frame holds, with a CRC-32 of its decompressed bytes.
//!
//! ```text
//! data frame 0 .. data frame n-1   zstd frames, each whole records
//! notes frame     skippable 0x184D2A5B  deletion notes + CRC
//! index frame     skippable 0x184D2A5C  n entries of 44 bytes + CRC
//! footer frame    skippable 0x184D2A5D  104 bytes
//! seek table      skippable 0x184D2A5E  zstd seekable format, n + 3 entries
//! ```
//!
//! FORMAT.md describes every byte; the constants below are its offsets.

use crate::codec::{put_u32, put_u64, u32_at, u64_at};
use crate::error::CorruptKind;
use crate::segment::SEQ_MAX;

/// File name suffix of an archive.
pub(crate) const ARCHIVE_SUFFIX: &str = ".evz";

/// `<first seq of the covered range, 20 digits>.evz`, as segment names.
pub(crate) fn archive_file_name(range_first_seq: u64) -> String {
    format!("{range_first_seq:020}{ARCHIVE_SUFFIX}")
}

/// The version this build writes and the only one it reads.
pub(crate) const ARCHIVE_FORMAT_VERSION: u32 = 1;

/// Every skippable frame starts with a magic in 0x184D2A50..=0x184D2A5F and
/// the byte length of its content; zstd decoders skip the content.
pub(crate) const SKIPPABLE_HEADER_BYTES: usize = 8;
pub(crate) const NOTES_FRAME_MAGIC: u32 = 0x184D_2A5B;
pub(crate) const INDEX_FRAME_MAGIC: u32 = 0x184D_2A5C;
pub(crate) const FOOTER_FRAME_MAGIC: u32 = 0x184D_2A5D;
/// zstd's seekable format: the seek table's skippable magic, the magic of
/// its last 4 bytes, and the size of its trailing footer.
pub(crate) const SEEK_TABLE_FRAME_MAGIC: u32 = 0x184D_2A5E;
pub(crate) const SEEKABLE_MAGIC: u32 = 0x8F92_EAB1;
pub(crate) const SEEK_TABLE_FOOTER_BYTES: usize = 9;
pub(crate) const SEEK_TABLE_ENTRY_BYTES: usize = 8;
/// The notes, index and footer frames: always present, always in this order.
pub(crate) const METADATA_FRAME_COUNT: u32 = 3;

/// Most data frames in one archive. A 64 MiB segment in frames of 256 KiB
/// needs about two hundred and fifty; the bound keeps the index a reader allocates at
/// open (44 bytes a frame) under 44 MiB whatever a damaged count claims,
/// and is far below the seekable format's own limit (0x8000000 frames).
pub(crate) const FRAMES_MAX: u32 = 1 << 20;
/// Most decompressed bytes one data frame may declare: a record may be up
/// to `RECORD_BYTES_LIMIT` (16 MiB) and gets a frame of its own; a reader
/// refuses to allocate more than this for one frame, whatever the index
/// says.
pub(crate) const FRAME_DECOMPRESSED_BYTES_MAX: u64 = crate::options::RECORD_BYTES_LIMIT;
/// The default bound on the records of one frame (a larger record gets a
/// frame of its own). Measured with benches/archive.rs on the reference
/// workload: each frame pays again for the first occurrence of every type
/// name, key and word, so larger frames compress better (at level 3:
/// 0.332x the live size with 16 KiB frames, 0.265x at 128 KiB, 0.256x at
/// 256 KiB), and a cold point read decompresses a whole frame (p50 21 µs
/// at 16 KiB, 111 µs at 128 KiB, 220 µs at 256 KiB, under load). At level
/// 5, 128 KiB frames give 0.263x, 256 KiB 0.244x and 512 KiB 0.253x (zstd
/// picks other parameters for inputs over 256 KiB); the cold read's p50
/// is 119, 207 and 447 µs: 256 KiB brings the archive under 0.25x the
/// live bytes with the read under half its 0.5 ms budget.
pub(crate) const FRAME_RECORD_BYTES_DEFAULT: usize = 256 * 1024;

// ---- footer: content of the footer frame (after its 8-byte header) ----
pub(crate) const FOOTER_MAGIC: &[u8; 8] = b"EVLOGARC";
const FOOTER_VERSION_AT: usize = 8;
const FOOTER_FRAME_COUNT_AT: usize = 12;
const FOOTER_RANGE_FIRST_AT: usize = 16;
const FOOTER_RANGE_LAST_AT: usize = 24;
const FOOTER_EVENT_COUNT_AT: usize = 32;
const FOOTER_FIRST_PRESENT_AT: usize = 40;
const FOOTER_LAST_PRESENT_AT: usize = 48;
const FOOTER_TIMESTAMP_MIN_AT: usize = 56;
const FOOTER_TIMESTAMP_MAX_AT: usize = 64;
const FOOTER_CONTENT_BYTES_AT: usize = 72;
const FOOTER_DATA_BYTES_AT: usize = 80;
const FOOTER_NOTES_FRAME_BYTES_AT: usize = 88;
const FOOTER_INDEX_FRAME_BYTES_AT: usize = 92;
const FOOTER_CONTENT_CRC_AT: usize = 96;
const FOOTER_CRC_AT: usize = 100;
pub(crate) const FOOTER_BYTES: usize = 104;
const _: () = assert!(FOOTER_CRC_AT + 4 == FOOTER_BYTES);
/// The footer frame: skippable header and footer.
pub(crate) const FOOTER_FRAME_BYTES: usize = SKIPPABLE_HEADER_BYTES + FOOTER_BYTES;
/// Most bytes a reader reads as a footer frame before knowing its version:
/// room for later versions to grow, a bound for a damaged seek table.
pub(crate) const FOOTER_FRAME_BYTES_MAX: u64 = 4096;

// ---- frame index: content of the index frame ----
const ENTRY_OFFSET_AT: usize = 0;
const ENTRY_COMPRESSED_AT: usize = 8;
const ENTRY_DECOMPRESSED_AT: usize = 12;
const ENTRY_FIRST_SEQ_AT: usize = 16;
const ENTRY_LAST_SEQ_AT: usize = 24;
const ENTRY_RECORD_COUNT_AT: usize = 32;
const ENTRY_CRC_AT: usize = 36;
const ENTRY_COMPRESSED_CRC_AT: usize = 40;
pub(crate) const INDEX_ENTRY_BYTES: usize = 44;
const _: () = assert!(ENTRY_COMPRESSED_CRC_AT + 4 == INDEX_ENTRY_BYTES);

// ---- deletion notes: content of the notes frame ----
/// Most notes in one archive: each compaction of an archive adds a handful
/// (one per rule that removed events), so this is many rewrites' worth.
pub(crate) const NOTES_MAX: usize = 4096;
/// Longest rule name kept in a note (bytes of UTF-8); longer names are
/// refused by the writer.
pub(crate) const NOTE_RULE_BYTES_MAX: usize = 255;
/// Fixed part of a note: first, last, count, deleted_at, rule length.
const NOTE_FIXED_BYTES: usize = 8 + 8 + 8 + 8 + 2;
/// Most bytes of a notes frame's content: count, notes, CRC.
pub(crate) const NOTES_BYTES_MAX: usize =
    4 + NOTES_MAX * (NOTE_FIXED_BYTES + NOTE_RULE_BYTES_MAX) + 4;

/// What retention removed from the covered range: `count` events with seqs
/// in `first_seq..=last_seq` were deleted by `rule` at `deleted_at_us`
/// (microseconds since the Unix epoch). Other events of that range may
/// still be present in the archive (a compaction keeps P0 events, say).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct DeletionNote {
    /// First sequence number of the range the note covers.
    pub first_seq: u64,
    /// Last sequence number of the range the note covers (inclusive).
    pub last_seq: u64,
    /// Events deleted from that range.
    pub count: u64,
    /// The retention rule that deleted them (several, merged, separated by commas).
    pub rule: String,
    /// When they were deleted, in microseconds since the Unix epoch.
    pub deleted_at_us: i64,
}

impl std::fmt::Display for DeletionNote {
    /// One line for people: range, count, rule and date.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "seqs {}..={}: {} events deleted by retention rule {} on {}",
            self.first_seq,
            self.last_seq,
            self.count,
            self.rule,
            crate::json::format_timestamp(self.deleted_at_us)
        )
    }
}

impl DeletionNote {
    pub(crate) fn new(
        first_seq: u64,
        last_seq: u64,
        count: u64,
        rule: impl Into<String>,
        deleted_at_us: i64,
    ) -> DeletionNote {
        DeletionNote {
            first_seq,
            last_seq,
            count,
            rule: rule.into(),
            deleted_at_us,
        }
    }

    pub(crate) fn covers(&self, seq: u64) -> bool {
        (self.first_seq..=self.last_seq).contains(&seq)
    }
}

/// The footer's fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Footer {
    pub frame_count: u32,
    pub range_first_seq: u64,
    pub range_last_seq: u64,
    pub event_count: u64,
    /// First and last seq present; 0 when `event_count` is 0.
    pub first_present_seq: u64,
    pub last_present_seq: u64,
    /// Smallest and largest event timestamp (µs); 0 when empty.
    pub timestamp_min_us: i64,
    pub timestamp_max_us: i64,
    /// Uncompressed bytes of all records (what `zstd -d` prints).
    pub content_bytes: u64,
    /// Bytes of the data frames: the offset of the notes frame.
    pub data_bytes: u64,
    pub notes_frame_bytes: u32,
    pub index_frame_bytes: u32,
    /// CRC-32 of the concatenated records.
    pub content_crc: u32,
    /// CRC-32 of the footer's first 100 bytes (filled by `encode`, read by
    /// `decode`): it also tells two versions of one archive apart.
    pub footer_crc: u32,
}

/// One data frame as the index describes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FrameEntry {
    /// Offset of the frame in the file.
    pub offset: u64,
    pub compressed_bytes: u32,
    pub decompressed_bytes: u32,
    /// Seqs of its first and last record.
    pub first_seq: u64,
    pub last_seq: u64,
    pub record_count: u32,
    /// CRC-32 of the decompressed bytes.
    pub crc: u32,
    /// CRC-32 of the compressed bytes: catches a change that zstd itself
    /// would ignore (its header has bits a decoder must not interpret)
    /// and refuses damage before it reaches the decompressor.
    pub compressed_crc: u32,
}

fn skippable_header(out: &mut Vec<u8>, magic: u32, content_bytes: usize) {
    put_u32(out, magic);
    // Bounded by NOTES_BYTES_MAX and FRAMES_MAX entries: far below 4 GiB.
    put_u32(out, content_bytes as u32);
}

/// Checks a skippable frame's header and returns its content.
pub(crate) fn skippable_content(frame: &[u8], magic: u32) -> Result<&[u8], CorruptKind> {
    if u32_at(frame, 0) != Some(magic) {
        return Err(CorruptKind::BadMagic);
    }
    let size = u32_at(frame, 4).ok_or(CorruptKind::Truncated)? as usize;
    if SKIPPABLE_HEADER_BYTES + size != frame.len() {
        return Err(CorruptKind::Archive(
            "skippable frame size disagrees with the seek table",
        ));
    }
    Ok(&frame[SKIPPABLE_HEADER_BYTES..])
}

/// The footer frame (header included).
pub(crate) fn encode_footer_frame(footer: &Footer) -> Vec<u8> {
    let mut out = Vec::with_capacity(FOOTER_FRAME_BYTES);
    skippable_header(&mut out, FOOTER_FRAME_MAGIC, FOOTER_BYTES);
    let start = out.len();
    out.extend_from_slice(FOOTER_MAGIC);
    put_u32(&mut out, ARCHIVE_FORMAT_VERSION);
    put_u32(&mut out, footer.frame_count);
    put_u64(&mut out, footer.range_first_seq);
    put_u64(&mut out, footer.range_last_seq);
    put_u64(&mut out, footer.event_count);
    put_u64(&mut out, footer.first_present_seq);
    put_u64(&mut out, footer.last_present_seq);
    put_u64(&mut out, footer.timestamp_min_us as u64);
    put_u64(&mut out, footer.timestamp_max_us as u64);
    put_u64(&mut out, footer.content_bytes);
    put_u64(&mut out, footer.data_bytes);
    put_u32(&mut out, footer.notes_frame_bytes);
    put_u32(&mut out, footer.index_frame_bytes);
    put_u32(&mut out, footer.content_crc);
    debug_assert_eq!(out.len() - start, FOOTER_CRC_AT);
    let crc = crc32fast::hash(&out[start..]);
    put_u32(&mut out, crc);
    debug_assert_eq!(out.len(), FOOTER_FRAME_BYTES);
    out
}

/// Why a footer does not decode.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum FooterError {
    /// At this offset in the footer content.
    Corrupt(usize, CorruptKind),
    Version(u32),
}

/// Decodes the footer content (after the skippable header). The magic and
/// version are checked first, so that a future version is told apart from
/// damage; then the length, the CRC and every field's plausibility.
pub(crate) fn decode_footer(bytes: &[u8]) -> Result<Footer, FooterError> {
    let corrupt = |at: usize, kind| FooterError::Corrupt(at, kind);
    if bytes.get(..FOOTER_MAGIC.len()) != Some(&FOOTER_MAGIC[..]) {
        return Err(corrupt(0, CorruptKind::BadMagic));
    }
    let version = u32_at(bytes, FOOTER_VERSION_AT)
        .ok_or(corrupt(FOOTER_VERSION_AT, CorruptKind::Truncated))?;
    if version != ARCHIVE_FORMAT_VERSION {
        return Err(FooterError::Version(version));
    }
    if bytes.len() != FOOTER_BYTES {
        return Err(corrupt(
            0,
            CorruptKind::Archive("footer length is not 104 bytes"),
        ));
    }
    let stored_crc = u32_at(bytes, FOOTER_CRC_AT).unwrap_or(0);
    if crc32fast::hash(&bytes[..FOOTER_CRC_AT]) != stored_crc {
        return Err(corrupt(FOOTER_CRC_AT, CorruptKind::HeaderChecksum));
    }
    let u64f = |at| u64_at(bytes, at).unwrap_or(0);
    let u32f = |at| u32_at(bytes, at).unwrap_or(0);
    let footer = Footer {
        frame_count: u32f(FOOTER_FRAME_COUNT_AT),
        range_first_seq: u64f(FOOTER_RANGE_FIRST_AT),
        range_last_seq: u64f(FOOTER_RANGE_LAST_AT),
        event_count: u64f(FOOTER_EVENT_COUNT_AT),
        first_present_seq: u64f(FOOTER_FIRST_PRESENT_AT),
        last_present_seq: u64f(FOOTER_LAST_PRESENT_AT),
        timestamp_min_us: u64f(FOOTER_TIMESTAMP_MIN_AT) as i64,
        timestamp_max_us: u64f(FOOTER_TIMESTAMP_MAX_AT) as i64,
        content_bytes: u64f(FOOTER_CONTENT_BYTES_AT),
        data_bytes: u64f(FOOTER_DATA_BYTES_AT),
        notes_frame_bytes: u32f(FOOTER_NOTES_FRAME_BYTES_AT),
        index_frame_bytes: u32f(FOOTER_INDEX_FRAME_BYTES_AT),
        content_crc: u32f(FOOTER_CONTENT_CRC_AT),
        footer_crc: stored_crc,
    };
    check_footer(&footer).map_err(|(at, what)| corrupt(at, CorruptKind::Archive(what)))?;
    Ok(footer)
}

/// The footer's own consistency (what can be checked without the rest).
fn check_footer(f: &Footer) -> Result<(), (usize, &'static str)> {
    if f.range_first_seq == 0 || f.range_first_seq > f.range_last_seq || f.range_last_seq > SEQ_MAX
    {
        return Err((FOOTER_RANGE_FIRST_AT, "impossible covered range"));
    }
    if f.frame_count > FRAMES_MAX {
        return Err((FOOTER_FRAME_COUNT_AT, "too many frames"));
    }
    if f.event_count > f.range_last_seq - f.range_first_seq + 1 {
        return Err((FOOTER_EVENT_COUNT_AT, "more events than the covered range"));
    }
    if f.event_count == 0 {
        if f.frame_count != 0
            || f.first_present_seq != 0
            || f.last_present_seq != 0
            || f.content_bytes != 0
            || f.data_bytes != 0
        {
            return Err((FOOTER_EVENT_COUNT_AT, "an empty archive with content"));
        }
        return Ok(());
    }
    if f.frame_count == 0 {
        return Err((FOOTER_FRAME_COUNT_AT, "events but no frames"));
    }
    if f.first_present_seq < f.range_first_seq
        || f.last_present_seq > f.range_last_seq
        || f.first_present_seq > f.last_present_seq
        || f.event_count > f.last_present_seq - f.first_present_seq + 1
    {
        return Err((
            FOOTER_FIRST_PRESENT_AT,
            "present seqs outside the covered range",
        ));
    }
    if f.timestamp_min_us > f.timestamp_max_us {
        return Err((
            FOOTER_TIMESTAMP_MIN_AT,
            "minimum timestamp after the maximum",
        ));
    }
    Ok(())
}

/// The index frame (header included).
pub(crate) fn encode_index_frame(entries: &[FrameEntry]) -> Vec<u8> {
    let content_bytes = entries.len() * INDEX_ENTRY_BYTES + 4;
    let mut out = Vec::with_capacity(SKIPPABLE_HEADER_BYTES + content_bytes);
    skippable_header(&mut out, INDEX_FRAME_MAGIC, content_bytes);
    let start = out.len();
    for e in entries {
        put_u64(&mut out, e.offset);
        put_u32(&mut out, e.compressed_bytes);
        put_u32(&mut out, e.decompressed_bytes);
        put_u64(&mut out, e.first_seq);
        put_u64(&mut out, e.last_seq);
        put_u32(&mut out, e.record_count);
        put_u32(&mut out, e.crc);
        put_u32(&mut out, e.compressed_crc);
    }
    let crc = crc32fast::hash(&out[start..]);
    put_u32(&mut out, crc);
    out
}

/// Decodes the index content (after the skippable header) for an archive
/// whose footer is `footer`, checking every entry against the others and
/// against the footer: frames contiguous from offset 0 up to
/// `data_bytes`, seqs increasing inside the covered range, counts and
/// sizes adding up. Errors carry the offset in the content.
pub(crate) fn decode_index(
    bytes: &[u8],
    footer: &Footer,
) -> Result<Vec<FrameEntry>, (usize, CorruptKind)> {
    let count = footer.frame_count as usize;
    if bytes.len() != count * INDEX_ENTRY_BYTES + 4 {
        return Err((
            0,
            CorruptKind::Archive("frame index length disagrees with the frame count"),
        ));
    }
    let crc_at = count * INDEX_ENTRY_BYTES;
    let stored = u32_at(bytes, crc_at).unwrap_or(0);
    if crc32fast::hash(&bytes[..crc_at]) != stored {
        return Err((crc_at, CorruptKind::HeaderChecksum));
    }
    let mut entries = Vec::with_capacity(count);
    let mut next_offset = 0u64;
    let mut previous_last: Option<u64> = None;
    let mut records = 0u64;
    let mut content = 0u64;
    for i in 0..count {
        let at = i * INDEX_ENTRY_BYTES;
        let e = FrameEntry {
            offset: u64_at(bytes, at + ENTRY_OFFSET_AT).unwrap_or(0),
            compressed_bytes: u32_at(bytes, at + ENTRY_COMPRESSED_AT).unwrap_or(0),
            decompressed_bytes: u32_at(bytes, at + ENTRY_DECOMPRESSED_AT).unwrap_or(0),
            first_seq: u64_at(bytes, at + ENTRY_FIRST_SEQ_AT).unwrap_or(0),
            last_seq: u64_at(bytes, at + ENTRY_LAST_SEQ_AT).unwrap_or(0),
            record_count: u32_at(bytes, at + ENTRY_RECORD_COUNT_AT).unwrap_or(0),
            crc: u32_at(bytes, at + ENTRY_CRC_AT).unwrap_or(0),
            compressed_crc: u32_at(bytes, at + ENTRY_COMPRESSED_CRC_AT).unwrap_or(0),
        };
        let bad = |what| Err((at, CorruptKind::Archive(what)));
        if e.offset != next_offset {
            return bad("data frames are not contiguous");
        }
        if e.compressed_bytes == 0 || u64::from(e.decompressed_bytes) > FRAME_DECOMPRESSED_BYTES_MAX
        {
            return bad("impossible frame size");
        }
        if e.first_seq > e.last_seq
            || e.record_count == 0
            || u64::from(e.record_count) > e.last_seq - e.first_seq + 1
            || (u64::from(e.record_count) * crate::record::RECORD_BYTES_MIN as u64)
                > u64::from(e.decompressed_bytes)
        {
            return bad("impossible frame seq range or record count");
        }
        if e.first_seq < footer.first_present_seq
            || e.last_seq > footer.last_present_seq
            || previous_last.is_some_and(|p| e.first_seq <= p)
        {
            return bad("frame seqs not increasing inside the archive's range");
        }
        if i == 0 && e.first_seq != footer.first_present_seq {
            return bad("first frame does not start at the first present seq");
        }
        if i + 1 == count && e.last_seq != footer.last_present_seq {
            return bad("last frame does not end at the last present seq");
        }
        next_offset += u64::from(e.compressed_bytes);
        previous_last = Some(e.last_seq);
        records += u64::from(e.record_count);
        content += u64::from(e.decompressed_bytes);
        entries.push(e);
    }
    if next_offset != footer.data_bytes {
        return Err((
            0,
            CorruptKind::Archive("data frames do not end where the footer says"),
        ));
    }
    if records != footer.event_count || content != footer.content_bytes {
        return Err((
            0,
            CorruptKind::Archive("frame record counts or sizes disagree with the footer"),
        ));
    }
    Ok(entries)
}

/// The notes frame (header included). The caller keeps within
/// `NOTES_MAX` notes of at most `NOTE_RULE_BYTES_MAX` bytes of rule.
pub(crate) fn encode_notes_frame(notes: &[DeletionNote]) -> Vec<u8> {
    let content_bytes = 4
        + notes
            .iter()
            .map(|n| NOTE_FIXED_BYTES + n.rule.len())
            .sum::<usize>()
        + 4;
    let mut out = Vec::with_capacity(SKIPPABLE_HEADER_BYTES + content_bytes);
    skippable_header(&mut out, NOTES_FRAME_MAGIC, content_bytes);
    let start = out.len();
    put_u32(&mut out, notes.len() as u32);
    for n in notes {
        put_u64(&mut out, n.first_seq);
        put_u64(&mut out, n.last_seq);
        put_u64(&mut out, n.count);
        put_u64(&mut out, n.deleted_at_us as u64);
        out.extend_from_slice(&(n.rule.len() as u16).to_le_bytes());
        out.extend_from_slice(n.rule.as_bytes());
    }
    let crc = crc32fast::hash(&out[start..]);
    put_u32(&mut out, crc);
    out
}

/// Checks one note against the archive's range and the note before it:
/// what the writer refuses and the reader calls damage.
pub(crate) fn check_note(
    note: &DeletionNote,
    previous: Option<&DeletionNote>,
    range_first_seq: u64,
    range_last_seq: u64,
) -> Result<(), &'static str> {
    if note.first_seq < range_first_seq
        || note.last_seq > range_last_seq
        || note.first_seq > note.last_seq
    {
        return Err("deletion note outside the covered range");
    }
    if note.count == 0 || note.count > note.last_seq - note.first_seq + 1 {
        return Err("deletion note count does not fit its range");
    }
    if note.rule.is_empty() || note.rule.len() > NOTE_RULE_BYTES_MAX {
        return Err("deletion note rule name empty or too long");
    }
    if previous.is_some_and(|p| note.first_seq <= p.last_seq) {
        return Err("deletion notes overlap or are out of order");
    }
    Ok(())
}

/// Decodes the notes content (after the skippable header).
pub(crate) fn decode_notes(
    bytes: &[u8],
    range_first_seq: u64,
    range_last_seq: u64,
) -> Result<Vec<DeletionNote>, (usize, CorruptKind)> {
    if bytes.len() < 8 || bytes.len() > NOTES_BYTES_MAX {
        return Err((0, CorruptKind::Archive("impossible notes frame length")));
    }
    let crc_at = bytes.len() - 4;
    let stored = u32_at(bytes, crc_at).unwrap_or(0);
    if crc32fast::hash(&bytes[..crc_at]) != stored {
        return Err((crc_at, CorruptKind::HeaderChecksum));
    }
    let count = u32_at(bytes, 0).unwrap_or(0) as usize;
    if count > NOTES_MAX {
        return Err((0, CorruptKind::Archive("too many deletion notes")));
    }
    let mut notes: Vec<DeletionNote> = Vec::with_capacity(count);
    let mut at = 4;
    for _ in 0..count {
        let fixed = bytes
            .get(at..at + NOTE_FIXED_BYTES)
            .filter(|_| at + NOTE_FIXED_BYTES <= crc_at)
            .ok_or((at, CorruptKind::Truncated))?;
        let rule_len = usize::from(u16::from_le_bytes([fixed[32], fixed[33]]));
        let rule_at = at + NOTE_FIXED_BYTES;
        if rule_at + rule_len > crc_at {
            return Err((at, CorruptKind::Truncated));
        }
        let rule = std::str::from_utf8(&bytes[rule_at..rule_at + rule_len])
            .map_err(|_| (at, CorruptKind::Archive("deletion note rule is not UTF-8")))?;
        let note = DeletionNote {
            first_seq: u64_at(fixed, 0).unwrap_or(0),
            last_seq: u64_at(fixed, 8).unwrap_or(0),
            count: u64_at(fixed, 16).unwrap_or(0),
            deleted_at_us: u64_at(fixed, 24).unwrap_or(0) as i64,
            rule: rule.to_owned(),
        };
        check_note(&note, notes.last(), range_first_seq, range_last_seq)
            .map_err(|what| (at, CorruptKind::Archive(what)))?;
        notes.push(note);
        at = rule_at + rule_len;
    }
    if at != crc_at {
        return Err((
            at,
            CorruptKind::Archive("bytes after the last deletion note"),
        ));
    }
    Ok(notes)
}

/// The seek table frame of zstd's seekable format for frames of these
/// (compressed, decompressed) sizes; no checksums (descriptor 0).
pub(crate) fn encode_seek_table(sizes: &[(u32, u32)]) -> Vec<u8> {
    let content_bytes = sizes.len() * SEEK_TABLE_ENTRY_BYTES + SEEK_TABLE_FOOTER_BYTES;
    let mut out = Vec::with_capacity(SKIPPABLE_HEADER_BYTES + content_bytes);
    skippable_header(&mut out, SEEK_TABLE_FRAME_MAGIC, content_bytes);
    for &(compressed, decompressed) in sizes {
        put_u32(&mut out, compressed);
        put_u32(&mut out, decompressed);
    }
    put_u32(&mut out, sizes.len() as u32);
    out.push(0);
    put_u32(&mut out, SEEKABLE_MAGIC);
    out
}

/// The number of entries a seek table has, from the last
/// `SEEK_TABLE_FOOTER_BYTES` of the file.
pub(crate) fn decode_seek_table_footer(tail: &[u8]) -> Result<u32, CorruptKind> {
    if u32_at(tail, 5) != Some(SEEKABLE_MAGIC) {
        return Err(CorruptKind::BadMagic);
    }
    if tail.get(4) != Some(&0) {
        return Err(CorruptKind::Archive("seek table descriptor is not 0"));
    }
    let count = u32_at(tail, 0).ok_or(CorruptKind::Truncated)?;
    if !(METADATA_FRAME_COUNT..=FRAMES_MAX + METADATA_FRAME_COUNT).contains(&count) {
        return Err(CorruptKind::Archive("impossible seek table frame count"));
    }
    Ok(count)
}

/// Bytes of a seek table frame with `count` entries.
pub(crate) fn seek_table_frame_bytes(count: u32) -> u64 {
    (SKIPPABLE_HEADER_BYTES + SEEK_TABLE_FOOTER_BYTES) as u64
        + u64::from(count) * SEEK_TABLE_ENTRY_BYTES as u64
}

/// The (compressed, decompressed) sizes of a whole seek table frame.
pub(crate) fn decode_seek_table(frame: &[u8], count: u32) -> Result<Vec<(u32, u32)>, CorruptKind> {
    let content = skippable_content(frame, SEEK_TABLE_FRAME_MAGIC)?;
    if content.len() as u64 + SKIPPABLE_HEADER_BYTES as u64 != seek_table_frame_bytes(count) {
        return Err(CorruptKind::Archive(
            "seek table size disagrees with its frame count",
        ));
    }
    Ok((0..count as usize)
        .map(|i| {
            let at = i * SEEK_TABLE_ENTRY_BYTES;
            (
                u32_at(content, at).unwrap_or(0),
                u32_at(content, at + 4).unwrap_or(0),
            )
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn footer() -> Footer {
        Footer {
            frame_count: 2,
            range_first_seq: 10,
            range_last_seq: 40,
            event_count: 5,
            first_present_seq: 10,
            last_present_seq: 30,
            timestamp_min_us: -5,
            timestamp_max_us: 1_000,
            content_bytes: 5 * 60,
            data_bytes: 300,
            notes_frame_bytes: 16,
            index_frame_bytes: 100,
            content_crc: 0xABCD,
            footer_crc: 0,
        }
    }

    fn entries() -> Vec<FrameEntry> {
        vec![
            FrameEntry {
                offset: 0,
                compressed_bytes: 100,
                decompressed_bytes: 180,
                first_seq: 10,
                last_seq: 12,
                record_count: 3,
                crc: 1,
                compressed_crc: 3,
            },
            FrameEntry {
                offset: 100,
                compressed_bytes: 200,
                decompressed_bytes: 120,
                first_seq: 20,
                last_seq: 30,
                record_count: 2,
                crc: 2,
                compressed_crc: 4,
            },
        ]
    }

    #[test]
    fn footer_round_trips_and_detects_every_flipped_bit() {
        let frame = encode_footer_frame(&footer());
        assert_eq!(frame.len(), FOOTER_FRAME_BYTES);
        let content = skippable_content(&frame, FOOTER_FRAME_MAGIC).unwrap();
        let decoded = decode_footer(content).unwrap();
        assert_eq!(
            decoded,
            Footer {
                footer_crc: decoded.footer_crc,
                ..footer()
            }
        );
        for bit in 0..content.len() * 8 {
            let mut damaged = content.to_vec();
            damaged[bit / 8] ^= 1 << (bit % 8);
            assert!(decode_footer(&damaged).is_err(), "bit {bit}");
        }
        let mut future = content.to_vec();
        future[FOOTER_VERSION_AT] = 2;
        assert_eq!(decode_footer(&future), Err(FooterError::Version(2)));
        assert!(decode_footer(&content[..50]).is_err());
    }

    #[test]
    fn index_round_trips_and_refuses_inconsistent_entries() {
        let frame = encode_index_frame(&entries());
        let content = skippable_content(&frame, INDEX_FRAME_MAGIC).unwrap();
        assert_eq!(decode_index(content, &footer()).unwrap(), entries());
        for bit in 0..content.len() * 8 {
            let mut damaged = content.to_vec();
            damaged[bit / 8] ^= 1 << (bit % 8);
            assert!(decode_index(&damaged, &footer()).is_err(), "bit {bit}");
        }
        // Consistent CRC but a hole between frames.
        let mut gap = entries();
        gap[1].offset = 101;
        let frame = encode_index_frame(&gap);
        let content = skippable_content(&frame, INDEX_FRAME_MAGIC).unwrap();
        assert!(decode_index(content, &footer()).is_err());
        // A frame claiming more than a reader may allocate.
        let mut huge = entries();
        huge[1].decompressed_bytes = u32::MAX;
        let frame = encode_index_frame(&huge);
        let content = skippable_content(&frame, INDEX_FRAME_MAGIC).unwrap();
        assert!(decode_index(content, &footer()).is_err());
    }

    #[test]
    fn notes_round_trip_and_are_checked() {
        let notes = vec![
            DeletionNote::new(10, 19, 7, "P2 after 1 year", 1_700_000_000_000_000),
            DeletionNote::new(31, 40, 10, "all after 2 years", -1),
        ];
        let frame = encode_notes_frame(&notes);
        let content = skippable_content(&frame, NOTES_FRAME_MAGIC).unwrap();
        assert_eq!(decode_notes(content, 10, 40).unwrap(), notes);
        assert!(decode_notes(content, 11, 40).is_err(), "outside the range");
        for bit in 0..content.len() * 8 {
            let mut damaged = content.to_vec();
            damaged[bit / 8] ^= 1 << (bit % 8);
            assert!(decode_notes(&damaged, 10, 40).is_err(), "bit {bit}");
        }
        let overlapping = [notes[0].clone(), DeletionNote::new(19, 20, 1, "x", 0)];
        let frame = encode_notes_frame(&overlapping);
        assert!(decode_notes(&frame[SKIPPABLE_HEADER_BYTES..], 10, 40).is_err());
        let empty = encode_notes_frame(&[]);
        assert_eq!(
            decode_notes(&empty[SKIPPABLE_HEADER_BYTES..], 1, 1).unwrap(),
            vec![]
        );
    }

    #[test]
    fn seek_table_is_zstd_seekable_layout() {
        let table = encode_seek_table(&[(100, 180), (200, 120), (16, 0)]);
        assert_eq!(table.len() as u64, seek_table_frame_bytes(3));
        assert_eq!(&table[..4], &0x184D_2A5Eu32.to_le_bytes());
        assert_eq!(&table[table.len() - 4..], &0x8F92_EAB1u32.to_le_bytes());
        let count =
            decode_seek_table_footer(&table[table.len() - SEEK_TABLE_FOOTER_BYTES..]).unwrap();
        assert_eq!(count, 3);
        assert_eq!(
            decode_seek_table(&table, count).unwrap(),
            vec![(100, 180), (200, 120), (16, 0)]
        );
        assert!(decode_seek_table(&table, 4).is_err());
    }
}
