//! `evlog-dump PATH`: looks inside any file or directory evlog writes,
//! offline and read-only: it never takes the writer's lock and never
//! changes a byte (the secondary index is read from a copy).
//!
//! PATH is a data directory, a segment (`.seg`), a sequence index
//! (`.idx`), an archive (`.evz`), the secondary index directory
//! (`index/`), a `lost+found/` copy, a consumer's `.pos` or `.parked`
//! file, the clean-close marker (`segments/CLEAN`), the `holds` file,
//! `LOCK` or `evlog.toml`;
//! the kind is told by the file's magic bytes (by its name for the kinds
//! that have none).
//!
//! Modes: print (headers, then records as a table or `--json` lines, with
//! filters), `--stats`, `--verify`, `--follow`; `--hex` adds a hex dump
//! around the first problem. Exit codes: 0 intact, 1 damaged or nothing
//! to read (damage is always also said on stderr), 2 usage or I/O error.
//! A closed standard output (`| head`) ends it quietly with 0.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Result;
use clap::Parser;
use evlog::dump::{PathKind, Selection};

// Shared with `evlog` (whose folder they live in): the same bar and the
// same cutting of echoed input in both tools.
#[path = "evlog/echo.rs"]
mod echo;
// evlog-dump's one bar is on stderr: `unless_stdout_is_terminal` is `replay`'s.
#[allow(dead_code)]
#[path = "evlog/progress.rs"]
mod progress;

#[derive(Parser)]
#[command(
    name = "evlog-dump",
    version,
    about = "Inspect evlog data files offline, read-only",
    after_help = "Exit codes: 0 intact, 1 damaged or nothing to read (damage is also said on stderr), 2 usage or I/O error."
)]
struct Args {
    /// A data directory, a segment (.seg), a sequence index (.idx), an
    /// archive (.evz), the secondary index directory (DIR/index), a
    /// lost+found copy, a consumer's .pos or .parked file, segments/CLEAN,
    /// DIR/holds, DIR/LOCK or DIR/evlog.toml.
    path: PathBuf,
    /// Check everything (every CRC, sequence continuity, sequence and
    /// secondary indexes, archive frames, causation references) and
    /// report the first problems with file, byte offset and sequence
    /// number instead of printing records. While a writer has the
    /// directory open, an append in flight at the end is not damage.
    #[arg(long, conflicts_with_all = [
        "stats", "follow", "json", "filter_type", "correlation", "entity",
        "since", "until", "from_seq", "to_seq", "limit",
    ])]
    verify: bool,
    /// Print counts, bytes, sequence and time ranges per file, and counts
    /// by type and priority, of the records the filters select.
    #[arg(long, conflicts_with = "follow")]
    stats: bool,
    /// Print each record's event as a JSON line (with its byte offset as
    /// `_offset`); with --stats, one JSON object.
    #[arg(long)]
    json: bool,
    /// With a problem found: a hex dump of 64 bytes on each side of its
    /// offset (on stderr with --json).
    #[arg(long)]
    hex: bool,
    /// Data directory only: print the records appended from now on (or
    /// from --from-seq) as they come, until interrupted, --limit or
    /// --to-seq is reached, or the directory disappears.
    #[arg(long)]
    follow: bool,
    /// Records whose type matches this dotted pattern (`*` is one
    /// segment, or as the last one or more); may be repeated: any of them.
    #[arg(long, value_name = "PATTERN", value_parser = echo::parse_pattern)]
    filter_type: Vec<String>,
    /// Records of this correlation id (UUID).
    #[arg(long, value_name = "UUID")]
    correlation: Option<evlog::Uuid>,
    /// Records of this entity, as TYPE/ID (split at the first '/').
    #[arg(long, value_name = "TYPE/ID", value_parser = parse_entity)]
    entity: Option<(String, String)>,
    /// Records with a timestamp at or after this RFC 3339 time.
    #[arg(long, value_name = "TIME", value_parser = parse_time)]
    since: Option<i64>,
    /// Records with a timestamp before this RFC 3339 time (exclusive).
    #[arg(long, value_name = "TIME", value_parser = parse_time)]
    until: Option<i64>,
    /// Records from this sequence number (inclusive).
    #[arg(long, value_name = "SEQ")]
    from_seq: Option<u64>,
    /// Records up to this sequence number (inclusive).
    #[arg(long, value_name = "SEQ")]
    to_seq: Option<u64>,
    /// At most N records (the first N that pass the filters).
    #[arg(long, value_name = "N")]
    limit: Option<u64>,
}

/// Splits at the first '/', so that ids may themselves hold slashes.
fn parse_entity(text: &str) -> std::result::Result<(String, String), String> {
    match text.split_once('/') {
        Some((entity_type, entity_id)) => Ok((entity_type.to_string(), entity_id.to_string())),
        None => Err(format!(
            "{text:?} is not TYPE/ID (for example task/T-1): it has no '/'"
        )),
    }
}

/// RFC 3339 only, as the `evlog` CLI takes times: a bare number is refused
/// rather than guessed at (seconds? microseconds?).
fn parse_time(text: &str) -> std::result::Result<i64, String> {
    evlog::json::parse_timestamp(text)
        .map_err(|_| format!("{text:?} is not an RFC 3339 time such as 2026-01-01T00:00:00Z"))
}

/// How often `--follow` looks for new records.
const FOLLOW_POLL_MS: u64 = 200;
/// `--verify` lists at most this many problems of the log-wide checks.
const PROBLEMS_SHOWN_MAX: usize = 10;

/// What a run found, as its exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Intact,
    /// Damage found, or nothing to read.
    Damaged,
}

impl Args {
    fn selection(&self) -> Selection {
        Selection {
            type_patterns: self.filter_type.clone(),
            correlation_id: self.correlation,
            entity: self.entity.clone(),
            since_us: self.since,
            until_us: self.until,
            from_seq: self.from_seq,
            to_seq: self.to_seq,
        }
    }

    /// Usage errors clap cannot see: ranges that are empty.
    fn check(&self) -> std::result::Result<(), String> {
        if let (Some(from), Some(to)) = (self.from_seq, self.to_seq) {
            if from > to {
                return Err(format!(
                    "--from-seq {from} is after --to-seq {to} (both are inclusive)"
                ));
            }
        }
        if let (Some(since), Some(until)) = (self.since, self.until) {
            if since >= until {
                return Err("--since is not before --until (--until is exclusive)".into());
            }
        }
        if self.limit == Some(0) {
            return Err("--limit 0 selects nothing".into());
        }
        Ok(())
    }

    /// Whether a flag that selects or counts records is given.
    fn works_on_records(&self) -> bool {
        !self.selection().is_everything() || self.limit.is_some() || self.stats
    }
}

fn main() -> ExitCode {
    let args: Args = match echo::parse_args() {
        Ok(args) => args,
        Err(code) => return code,
    };
    // Messages that quote the command line (its PATH, a filter) cut what
    // they echo of it to a readable length.
    let command_line: Vec<std::ffi::OsString> = std::env::args_os().skip(1).collect();
    let shorten = |message: String| echo::shorten_echoed(&message, &command_line);
    if let Err(usage) = args.check() {
        eprintln!("evlog-dump: {}", shorten(usage));
        return ExitCode::from(2);
    }
    let kind = match evlog::dump::identify(&args.path) {
        Ok(Ok(kind)) => kind,
        Ok(Err(why)) => {
            if args.verify {
                println!("nothing to verify: {}", shorten(why));
            } else {
                eprintln!("evlog-dump: nothing to read: {}", shorten(why));
            }
            return ExitCode::from(1);
        }
        Err(evlog::Error::Io { path, source }) => {
            eprintln!(
                "evlog-dump: {}",
                shorten(format!("cannot read {}: {source}", path.display()))
            );
            return ExitCode::from(2);
        }
        Err(error) => {
            eprintln!("evlog-dump: {}", shorten(error.to_string()));
            return ExitCode::from(2);
        }
    };
    let has_records = matches!(
        kind,
        PathKind::DataDir | PathKind::Segment | PathKind::Archive | PathKind::LostFound
    );
    if args.works_on_records() && !has_records {
        eprintln!(
            "evlog-dump: {}",
            shorten(format!(
                "filters, --limit and --stats apply to records; {} is a {}",
                args.path.display(),
                kind.name()
            ))
        );
        return ExitCode::from(2);
    }
    if args.follow && kind != PathKind::DataDir {
        eprintln!(
            "evlog-dump: {}",
            shorten(format!(
                "--follow follows a data directory; {} is a {}",
                args.path.display(),
                kind.name()
            ))
        );
        return ExitCode::from(2);
    }
    let mut dumper = Dumper::new(&args);
    let result = if args.follow {
        dumper.follow()
    } else if args.verify {
        dumper.verify(kind)
    } else {
        dumper.print(kind)
    };
    let result = result.and_then(|outcome| {
        dumper.out.flush()?;
        Ok(outcome)
    });
    match result {
        Ok(Outcome::Intact) => ExitCode::SUCCESS,
        Ok(Outcome::Damaged) => ExitCode::from(1),
        Err(error) => {
            let broken_pipe = error.chain().any(|c| {
                c.downcast_ref::<std::io::Error>()
                    .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
            });
            if broken_pipe {
                return ExitCode::SUCCESS;
            }
            eprintln!("evlog-dump: {}", shorten(format!("{error:#}")));
            ExitCode::from(2)
        }
    }
}

/// Where a record lies, for the table's first column.
enum Location {
    /// Byte offset in a segment or lost+found copy.
    Offset(u64),
    /// Data frame of an archive and offset in its decompressed bytes.
    Frame(u32, u64),
    /// Read through the log (`--follow`): no file position.
    Log,
}

/// One record to print or count.
struct Found<'a> {
    location: Location,
    seq: u64,
    record_bytes: u64,
    unit_remaining: u32,
    synced_through: u64,
    event: &'a std::result::Result<evlog::LoggedEvent, evlog::CorruptKind>,
}

/// Whether a walk goes on after a record.
#[derive(PartialEq, Eq)]
enum Walk {
    Continue,
    Stop,
}

struct Dumper<'a> {
    args: &'a Args,
    selection: Selection,
    out: std::io::BufWriter<std::io::Stdout>,
    stats: evlog::dump::DumpStats,
    /// Records printed or counted so far (for --limit).
    selected: u64,
    damaged: bool,
    /// Whether the first problem got its hex dump (--hex).
    hex_shown: bool,
    /// The seq the next piece of a directory must start at, from the
    /// piece just walked (`None`: unknown, its header did not read).
    next_seq: Option<u64>,
}

impl<'a> Dumper<'a> {
    fn new(args: &'a Args) -> Dumper<'a> {
        Dumper {
            args,
            selection: args.selection(),
            out: std::io::BufWriter::new(std::io::stdout()),
            stats: Default::default(),
            selected: 0,
            damaged: false,
            hex_shown: false,
            next_seq: None,
        }
    }

    fn outcome(&self) -> Outcome {
        if self.damaged {
            Outcome::Damaged
        } else {
            Outcome::Intact
        }
    }

    /// A header or summary line (not in --json or --stats output).
    fn say(&mut self, line: std::fmt::Arguments<'_>) -> std::io::Result<()> {
        // --verify prints its verdict lines itself.
        if self.args.json || self.args.stats || self.args.verify {
            return Ok(());
        }
        writeln!(self.out, "{line}")
    }

    /// Damage: said on stderr in every mode (and as a `problem:` line in
    /// the table), counted in the exit code; the first one gets a hex
    /// dump with --hex.
    fn damage(&mut self, problem: &str, at: Option<(&Path, u64)>) -> Result<()> {
        let problem = with_frame(problem, at);
        self.damage_said(&problem, at)
    }

    /// [`Dumper::damage`] of a problem already located.
    fn damage_said(&mut self, problem: &str, at: Option<(&Path, u64)>) -> Result<()> {
        self.say(format_args!("  problem: {problem}"))?;
        self.out.flush()?;
        eprintln!("evlog-dump: damaged: {problem}");
        self.damaged = true;
        if let (true, false, Some((file, offset))) = (self.args.hex, self.hex_shown, at) {
            self.hex_shown = true;
            let dump = evlog::dump::hex_around(file, offset)?;
            let heading = format!("bytes of {} around offset {offset}:", file.display());
            if self.args.json {
                eprint!("{heading}\n{dump}");
            } else {
                write!(self.out, "{heading}\n{dump}")?;
            }
        }
        Ok(())
    }

    /// Prints or counts one record if the filters select it.
    fn record(&mut self, found: &Found<'_>) -> Result<Walk> {
        if self.selection.is_past(found.seq) || self.args.limit == Some(self.selected) {
            return Ok(Walk::Stop);
        }
        if !self.selection.admits_seq(found.seq) {
            return Ok(Walk::Continue);
        }
        match found.event {
            Ok(event) if !self.selection.admits(event) => return Ok(Walk::Continue),
            // A body that does not decode cannot be judged by its fields:
            // shown unless a field is asked for.
            Err(_) if self.selection.needs_event() => return Ok(Walk::Continue),
            _ => {}
        }
        self.selected += 1;
        if self.args.stats {
            self.stats
                .add_record(found.seq, found.record_bytes, found.event.as_ref().ok());
            return Ok(Walk::Continue);
        }
        let location = match found.location {
            Location::Offset(offset) => format!("@{offset} "),
            Location::Frame(frame, offset) => format!("frame {frame} +{offset} "),
            Location::Log => String::new(),
        };
        match (found.event, self.args.json) {
            (Ok(event), true) => {
                match found.location {
                    // The event's JSON with the record's offset last.
                    Location::Offset(offset) => {
                        writeln!(self.out, "{}", evlog::dump::event_json_at(event, offset))?
                    }
                    _ => writeln!(self.out, "{}", evlog::json::event_to_json(event))?,
                }
            }
            (Ok(event), false) => {
                let mut line = format!(
                    "  {location}seq={} bytes={} unit_remaining={} synced_through={} type={} id={} time={}",
                    found.seq,
                    found.record_bytes,
                    found.unit_remaining,
                    found.synced_through,
                    event.event_type,
                    event.id,
                    evlog::json::format_timestamp(event.timestamp_us)
                );
                if let Some(entity) = &event.entity {
                    line.push_str(&format!(
                        " entity={}/{}",
                        entity.entity_type, entity.entity_id
                    ));
                }
                if let Some(correlation) = event.correlation_id {
                    line.push_str(&format!(" correlation={correlation}"));
                }
                writeln!(self.out, "{line}")?;
            }
            (Err(kind), json) => {
                if !json {
                    writeln!(
                        self.out,
                        "  {location}seq={} bytes={} body does not decode: {kind}",
                        found.seq, found.record_bytes
                    )?;
                }
            }
        }
        Ok(Walk::Continue)
    }

    fn print(&mut self, kind: PathKind) -> Result<Outcome> {
        match kind {
            PathKind::DataDir => self.data_dir()?,
            PathKind::Segment => {
                self.segment(&self.args.path.clone(), false)?;
            }
            PathKind::Archive => {
                self.archive(&self.args.path.clone())?;
            }
            PathKind::LostFound => self.lost_found()?,
            PathKind::SequenceIndex => self.seq_index(false)?,
            PathKind::CleanMarker => self.marker(false)?,
            PathKind::ConsumerPosition => self.consumer_position(false)?,
            PathKind::ParkedList => self.parked_list(false)?,
            PathKind::Holds => self.holds(false)?,
            PathKind::SecondaryIndex => self.secondary_index()?,
            PathKind::Lock => self.lock(false)?,
            PathKind::Config => self.config(false)?,
            PathKind::RuleStats => self.rule_stats(false)?,
        }
        if self.args.stats {
            self.print_stats()?;
        }
        Ok(self.outcome())
    }

    /// Every piece of a data directory in sequence order, then what the
    /// writer's next open would keep and drop of the active segment.
    fn data_dir(&mut self) -> Result<()> {
        let dir = self.args.path.clone();
        let pieces = evlog::dump::pieces(&dir)?;
        // The open's verdict on the active segment: what it keeps and
        // cuts, or why it refuses (damage a clean close vouched for, or
        // followed by valid records), said after the walk in its words.
        let (preview, refusal) = match evlog::dump::recovery_preview(&dir) {
            Ok(preview) => (preview, None),
            Err(e) if is_damage(&e) => (None, Some(e)),
            Err(e) => return Err(e.into()),
        };
        let active = pieces
            .last()
            .filter(|piece| !piece.is_archive)
            .map(|piece| piece.path.clone());
        let mut previous: Option<&evlog::dump::Piece> = None;
        for piece in &pieces {
            // The pieces must tile the log (FORMAT.md, "The catalog").
            if let (Some(before), Some(expected)) = (previous, self.next_seq) {
                if piece.first_seq != expected {
                    let what = if piece.first_seq > expected {
                        format!(
                            "seq {expected}..={} cannot be read: {} holds none from seq {expected} on and {} starts at seq {}",
                            piece.first_seq - 1,
                            before.path.display(),
                            piece.path.display(),
                            piece.first_seq
                        )
                    } else {
                        format!(
                            "{} starts at seq {}, inside {} (which reaches seq {})",
                            piece.path.display(),
                            piece.first_seq,
                            before.path.display(),
                            expected - 1
                        )
                    };
                    self.damage(&what, None)?;
                }
            }
            previous = Some(piece);
            self.next_seq = None;
            let walk = if piece.is_archive {
                self.archive(&piece.path)?
            } else {
                self.segment(&piece.path, active.as_ref() == Some(&piece.path))?
            };
            if walk == Walk::Stop {
                return Ok(());
            }
        }
        if let Some(error) = refusal {
            let at = corrupt_offset(&error);
            let file = match &error {
                evlog::Error::Corrupt { file, .. } => file.clone(),
                _ => dir.clone(),
            };
            self.damage(
                &error.to_string(),
                at.map(|offset| (file.as_path(), offset)),
            )?;
        }
        if let Some(preview) = preview {
            let writer = evlog::dump::lock_holder(&dir);
            match &preview.cut {
                Some(cut) if writer.is_some() => self.say(format_args!(
                    "live: a writer (pid {}) has the directory open: the {} bytes after the last complete unit (byte {}) may be an append in flight, so they are not judged",
                    writer.unwrap_or_default(),
                    cut.bytes,
                    preview.kept_end
                ))?,
                Some(cut) => {
                    let problem = format!("{}: {cut}", preview.segment.display());
                    self.say(format_args!(
                        "recovery: the next open keeps {} record(s) of {} (through byte {}) and cuts the rest",
                        preview.kept_records,
                        preview.segment.display(),
                        preview.kept_end
                    ))?;
                    self.damage(&problem, Some((&preview.segment, cut.offset)))?;
                }
                None if preview.closed_cleanly => self.say(format_args!(
                    "recovery: closed cleanly; the next open keeps everything"
                ))?,
                None => match writer {
                    Some(pid) => self.say(format_args!(
                        "live: a writer (pid {pid}) has the directory open; every record written so far is complete"
                    ))?,
                    None => self.say(format_args!(
                        "recovery: not closed cleanly (its writer stopped without closing); the next open keeps every record and cuts nothing"
                    ))?,
                },
            }
        }
        Ok(())
    }

    /// One segment: records, then its header line and first problem. In a
    /// data directory the active segment's torn tail is left to the
    /// recovery preview (`is_active`).
    fn segment(&mut self, path: &Path, is_active: bool) -> Result<Walk> {
        let file_bytes = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
        match evlog::dump::segment_header(path) {
            Ok((version, first_seq)) => self.say(format_args!(
                "segment {}: format {version}, first_seq {first_seq}, {file_bytes} bytes",
                path.display()
            ))?,
            Err(error) if is_damage(&error) => {
                self.say(format_args!(
                    "segment {}: {file_bytes} bytes",
                    path.display()
                ))?;
                let at = corrupt_offset(&error);
                self.damage(&error.to_string(), at.map(|offset| (path, offset)))?;
                return Ok(Walk::Continue);
            }
            Err(error) => return Err(error.into()),
        }
        let mut walk = Walk::Continue;
        let mut failure = None;
        self.stats
            .begin_file(path.to_path_buf(), "segment", file_bytes);
        let mut offsets = Vec::new();
        let report = match evlog::dump::inspect_segment(path, |record| {
            offsets.push(record.offset);
            if walk == Walk::Stop || failure.is_some() {
                return;
            }
            let found = Found {
                location: Location::Offset(record.offset),
                seq: record.seq,
                record_bytes: record.record_bytes,
                unit_remaining: record.unit_remaining,
                synced_through: record.synced_through,
                event: &record.event,
            };
            match self.record(&found) {
                Ok(next) => walk = next,
                Err(e) => failure = Some(e),
            }
        }) {
            Ok(report) => report,
            Err(error) if is_damage(&error) => {
                let at = corrupt_offset(&error);
                self.damage(&error.to_string(), at.map(|offset| (path, offset)))?;
                return Ok(Walk::Continue);
            }
            Err(error) => return Err(error.into()),
        };
        if let Some(error) = failure {
            return Err(error);
        }
        self.say(format_args!(
            "  end: {} records{}, last record ends at {}, {} zero bytes after",
            report.records,
            if report.records > 0 {
                format!(
                    " (seq {}..={})",
                    report.first_seq,
                    report.first_seq + report.records - 1
                )
            } else {
                String::new()
            },
            report.end_offset,
            report.zero_tail_bytes
        ))?;
        self.next_seq = Some(report.first_seq + report.records);
        // A sealed segment's index must agree with it, as open checks.
        let index = path.with_extension("idx");
        if !is_active && walk == Walk::Continue && report.problem.is_none() && index.is_file() {
            if let Some(problem) = evlog::dump::check_index(&index, &report, &offsets, false)? {
                self.damage(&problem.to_string(), Some((&index, problem.offset)))?;
            }
        }
        if let Some(problem) = &report.problem {
            let torn_tail = is_active && problem.offset >= report.end_offset;
            if !torn_tail {
                self.damage(&problem.to_string(), Some((path, problem.offset)))?;
            }
        }
        Ok(walk)
    }

    /// An archive file: footer, frames, deletion notes, records.
    fn archive(&mut self, path: &Path) -> Result<Walk> {
        let archive = match evlog::Archive::open(path) {
            Ok(archive) => archive,
            Err(e) if is_damage(&e) => {
                let at = corrupt_offset(&e);
                self.damage(&e.to_string(), at.map(|offset| (path, offset)))?;
                return Ok(Walk::Continue);
            }
            Err(e) => return Err(e.into()),
        };
        for info in archive.info() {
            self.next_seq = Some(info.range_last_seq + 1);
            self.stats
                .begin_file(info.path.clone(), "archive", info.file_bytes);
            let time = |us: i64| evlog::json::format_timestamp(us);
            self.say(format_args!(
                "archive {}: format {}, {} bytes; covers seq {}..={}; {} events{}{}; {} record bytes (CRC-32 {:#010x}); {} frames; {} deletion notes",
                info.path.display(),
                info.format_version,
                info.file_bytes,
                info.range_first_seq,
                info.range_last_seq,
                info.event_count,
                info.present_seqs
                    .map(|(a, b)| format!(" (seq {a}..={b})"))
                    .unwrap_or_default(),
                info.timestamps_us
                    .map(|(a, b)| format!(", time {}..{}", time(a), time(b)))
                    .unwrap_or_default(),
                info.content_bytes,
                info.content_crc,
                info.frames.len(),
                info.deletions.len()
            ))?;
            for (number, frame) in info.frames.iter().enumerate() {
                self.say(format_args!(
                    "  frame {number} @{} compressed={} decompressed={} seq {}..={} records={} crc={:#010x} compressed_crc={:#010x}",
                    frame.offset,
                    frame.compressed_bytes,
                    frame.decompressed_bytes,
                    frame.first_seq,
                    frame.last_seq,
                    frame.record_count,
                    frame.crc,
                    frame.compressed_crc
                ))?;
            }
            for note in &info.deletions {
                self.say(format_args!(
                    "  deleted seq {}..={}: {} events by rule {:?} on {}",
                    note.first_seq,
                    note.last_seq,
                    note.count,
                    note.rule,
                    time(note.deleted_at_us)
                ))?;
            }
        }
        let mut walk = Walk::Continue;
        let mut failure = None;
        let mut undecodable = Vec::new();
        let walked = archive.inspect_records(|_, record| {
            if walk == Walk::Stop || failure.is_some() {
                return Ok(());
            }
            if let Err(kind) = &record.event {
                undecodable.push(format!(
                    "{}: frame {} +{} seq={}: body does not decode: {kind}",
                    path.display(),
                    record.frame,
                    record.offset_in_frame,
                    record.seq
                ));
            }
            let found = Found {
                location: Location::Frame(record.frame, record.offset_in_frame),
                seq: record.seq,
                record_bytes: record.record_bytes,
                unit_remaining: record.unit_remaining,
                synced_through: record.synced_through,
                event: &record.event,
            };
            match self.record(&found) {
                Ok(next) => walk = next,
                Err(e) => failure = Some(e),
            }
            Ok(())
        });
        if let Some(error) = failure {
            return Err(error);
        }
        for problem in undecodable {
            self.damage(&problem, None)?;
        }
        match walked {
            Ok(()) => {}
            Err(e) if is_damage(&e) => {
                let at = corrupt_offset(&e);
                self.damage(&e.to_string(), at.map(|offset| (path, offset)))?;
            }
            Err(e) => return Err(e.into()),
        }
        Ok(walk)
    }

    /// A lost+found copy: the records in it, then what is not a record.
    /// Nothing in it is part of the log, so what does not read is not
    /// damage: it is why the bytes were cut.
    fn lost_found(&mut self) -> Result<()> {
        let path = self.args.path.clone();
        let file_bytes = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        self.stats
            .begin_file(path.clone(), "lost+found copy", file_bytes);
        self.say(format_args!(
            "lost+found copy {}: {file_bytes} bytes cut from its segment at byte offset {} (offsets below are in this file: add that for the segment's)",
            path.display(),
            evlog::dump::lost_found_offset(&path).unwrap_or(0)
        ))?;
        let mut failure = None;
        let mut walk = Walk::Continue;
        let report = evlog::dump::inspect_lost_found(&path, |record| {
            if walk == Walk::Stop || failure.is_some() {
                return;
            }
            let found = Found {
                location: Location::Offset(record.offset),
                seq: record.seq,
                record_bytes: record.record_bytes,
                unit_remaining: record.unit_remaining,
                synced_through: record.synced_through,
                event: &record.event,
            };
            match self.record(&found) {
                Ok(next) => walk = next,
                Err(e) => failure = Some(e),
            }
        });
        if let Some(error) = failure {
            return Err(error);
        }
        let report = match report {
            Ok(report) => report,
            Err(e) if is_damage(&e) => {
                self.damage(&e.to_string(), None)?;
                return Ok(());
            }
            Err(e) => return Err(e.into()),
        };
        self.say(format_args!(
            "  end: {} valid record(s) through byte {}",
            report.records, report.valid_end
        ))?;
        if let Some((offset, kind)) = &report.stopped_by {
            self.say(format_args!(
                "  then not a record at byte {offset}: {kind} ({} bytes to the end)",
                report.file_bytes.saturating_sub(*offset)
            ))?;
            if self.args.hex && !self.args.stats {
                let dump = evlog::dump::hex_around(&path, *offset)?;
                if self.args.json {
                    eprint!("{dump}");
                } else {
                    write!(self.out, "{dump}")?;
                }
            }
        }
        Ok(())
    }

    fn seq_index(&mut self, verify: bool) -> Result<()> {
        let path = self.args.path.clone();
        let Some(info) = self.read_or_fail(verify, evlog::dump::read_seq_index)? else {
            return Ok(());
        };
        if info.entries_crc_ok == Some(false) {
            let problem = format!(
                "{} at byte offset 24: entries do not match the checksum recorded at seal",
                path.display()
            );
            return self.fail(verify, &problem, Some((&path, 24)));
        }
        // Beside its segment, the index must also agree with it.
        let segment = path.with_extension("seg");
        if segment.is_file() {
            let mut offsets = Vec::new();
            let report = evlog::dump::inspect_segment(&segment, |r| offsets.push(r.offset));
            if let Ok(report) = report {
                if let Some(problem) =
                    evlog::dump::check_index(&path, &report, &offsets, info.sealed)?
                {
                    let at = problem.offset;
                    return self.fail(verify, &problem.to_string(), Some((&path, at)));
                }
            }
        }
        if verify {
            println!(
                "ok: {} is intact (sequence index, {}, first_seq {}, {} entries{})",
                path.display(),
                if info.sealed { "sealed" } else { "active" },
                info.first_seq,
                info.entries.len(),
                if segment.is_file() {
                    ", agreeing with its segment"
                } else {
                    "; its segment is not beside it"
                }
            );
            return Ok(());
        }
        if self.args.json {
            writeln!(
                self.out,
                "{}",
                serde_json::json!({
                    "kind": "sequence index", "format": info.format_version,
                    "sealed": info.sealed, "first_seq": info.first_seq,
                    "entries_crc": info.entries_crc, "file_bytes": info.file_bytes,
                    "entries": info.entries.len()
                })
            )?;
            for (i, offset) in info.entries.iter().enumerate() {
                writeln!(
                    self.out,
                    "{}",
                    serde_json::json!({"seq": info.first_seq + i as u64, "offset": offset})
                )?;
            }
            return Ok(());
        }
        writeln!(
            self.out,
            "sequence index {}: format {}, {}, first_seq {}, {} bytes, {} entries{}",
            path.display(),
            info.format_version,
            if info.sealed { "sealed" } else { "active" },
            info.first_seq,
            info.file_bytes,
            info.entries.len(),
            info.entries_crc
                .map(|crc| format!(", entries CRC-32 {crc:#010x} (matches)"))
                .unwrap_or_default()
        )?;
        for (i, offset) in info.entries.iter().enumerate() {
            writeln!(self.out, "  seq={} @{offset}", info.first_seq + i as u64)?;
        }
        Ok(())
    }

    /// A file that is not intact: `corrupt:` on stdout in --verify, and
    /// damage on stderr in every mode.
    /// Reads the file at the dumped path with `read`. Damage is reported
    /// as [`Self::fail`] does and gives `None`; other errors are errors.
    fn read_or_fail<T>(
        &mut self,
        verify: bool,
        read: impl FnOnce(&Path) -> evlog::Result<T>,
    ) -> Result<Option<T>> {
        let path = self.args.path.clone();
        match read(&path) {
            Ok(value) => Ok(Some(value)),
            Err(e) if is_damage(&e) => {
                let at = corrupt_offset(&e);
                self.fail(verify, &e.to_string(), at.map(|o| (path.as_path(), o)))?;
                Ok(None)
            }
            Err(e) => Err(e.into()),
        }
    }

    fn fail(&mut self, verify: bool, problem: &str, at: Option<(&Path, u64)>) -> Result<()> {
        let problem = with_frame(problem, at);
        if verify {
            println!("corrupt: {problem}");
        }
        self.damage_said(&problem, at)
    }

    fn marker(&mut self, verify: bool) -> Result<()> {
        let path = self.args.path.clone();
        let Some(marker) = self.read_or_fail(verify, evlog::dump::read_marker)? else {
            return Ok(());
        };
        if verify {
            println!(
                "ok: {} is intact (clean-close marker of the segment starting at seq {}; last seq {})",
                path.display(),
                marker.active_first_seq,
                marker.last_seq
            );
        } else if self.args.json {
            writeln!(
                self.out,
                "{}",
                serde_json::json!({
                    "kind": "clean-close marker", "format": marker.format_version,
                    "active_first_seq": marker.active_first_seq, "last_seq": marker.last_seq,
                    "active_bytes": marker.active_bytes, "tail_offset": marker.tail_offset,
                    "tail_crc": marker.tail_crc, "index_entries_crc": marker.index_entries_crc
                })
            )?;
        } else {
            writeln!(
                self.out,
                "clean-close marker {}: format {}, active segment starts at seq {}, last seq {}, segment {} bytes, last record at byte {} (CRC-32 {:#010x}), index entries CRC-32 {:#010x}",
                path.display(),
                marker.format_version,
                marker.active_first_seq,
                marker.last_seq,
                marker.active_bytes,
                marker.tail_offset,
                marker.tail_crc,
                marker.index_entries_crc
            )?;
        }
        Ok(())
    }

    fn consumer_position(&mut self, verify: bool) -> Result<()> {
        let path = self.args.path.clone();
        let name = file_stem(&path);
        match evlog::dump::read_consumer_position(&path) {
            Ok(position) if verify => println!(
                "ok: {} is intact (consumer {name}, position {position})",
                path.display()
            ),
            Ok(position) if self.args.json => writeln!(
                self.out,
                "{}",
                serde_json::json!({"consumer": name, "position": position})
            )?,
            Ok(position) => writeln!(
                self.out,
                "consumer position file {}: consumer {name}, format 1, position {position}",
                path.display()
            )?,
            Err(e) if is_damage(&e) => {
                let at = corrupt_offset(&e);
                self.fail(verify, &e.to_string(), at.map(|o| (path.as_path(), o)))?
            }
            Err(e) => return Err(e.into()),
        }
        Ok(())
    }

    fn parked_list(&mut self, verify: bool) -> Result<()> {
        let path = self.args.path.clone();
        let name = file_stem(&path);
        let Some(parked) = self.read_or_fail(verify, evlog::dump::read_parked_list)? else {
            return Ok(());
        };
        if verify {
            println!(
                "ok: {} is intact (consumer {name}, {} parked events)",
                path.display(),
                parked.len()
            );
            return Ok(());
        }
        if !self.args.json {
            writeln!(
                self.out,
                "parked list {}: consumer {name}, {} events",
                path.display(),
                parked.len()
            )?;
        }
        for event in parked {
            if self.args.json {
                writeln!(
                    self.out,
                    "{}",
                    serde_json::json!({"consumer": name, "seq": event.seq, "attempts": event.attempts, "reason": event.reason})
                )?;
            } else {
                writeln!(
                    self.out,
                    "  seq={} attempts={} reason={:?}",
                    event.seq, event.attempts, event.reason
                )?;
            }
        }
        Ok(())
    }

    fn holds(&mut self, verify: bool) -> Result<()> {
        let path = self.args.path.clone();
        let Some(holds) = self.read_or_fail(verify, evlog::dump::read_holds_file)? else {
            return Ok(());
        };
        if verify {
            println!("ok: {} is intact ({} holds)", path.display(), holds.len());
            return Ok(());
        }
        if !self.args.json {
            writeln!(
                self.out,
                "legal holds {}: format 1, {} holds",
                path.display(),
                holds.len()
            )?;
        }
        for hold in holds {
            let placed_at = evlog::json::format_timestamp(hold.placed_at_us);
            let target = match &hold.target {
                evlog::HoldTarget::Correlation(id) => serde_json::json!({"correlation_id": id}),
                evlog::HoldTarget::Entity {
                    entity_type,
                    entity_id,
                } => serde_json::json!({"entity": {"type": entity_type, "id": entity_id}}),
            };
            if self.args.json {
                writeln!(
                    self.out,
                    "{}",
                    serde_json::json!({"target": target, "reason": hold.reason, "placed_at": placed_at})
                )?;
            } else {
                writeln!(
                    self.out,
                    "  {target} reason={:?} placed_at={placed_at}",
                    hold.reason
                )?;
            }
        }
        Ok(())
    }

    fn lock(&mut self, verify: bool) -> Result<()> {
        let path = self.args.path.clone();
        let Some(pid) = self.read_or_fail(verify, evlog::dump::read_lock_pid)? else {
            return Ok(());
        };
        if verify {
            println!("ok: {} is intact (pid {pid})", path.display());
        } else if self.args.json {
            writeln!(
                self.out,
                "{}",
                serde_json::json!({"kind": "lock file", "pid": pid})
            )?;
        } else {
            writeln!(
                self.out,
                "lock file {}: pid {pid}, the writer that last opened the directory (evlog-dump neither takes nor tests the lock)",
                path.display()
            )?;
        }
        Ok(())
    }

    fn config(&mut self, verify: bool) -> Result<()> {
        let path = self.args.path.clone();
        let text = std::fs::read_to_string(&path)?;
        let config = match evlog::parse_config(&text, &path) {
            Ok(config) => config,
            Err(e) => return self.fail(verify, &e.to_string(), None),
        };
        let rules = config.retention.as_ref().map_or(0, |p| p.rules().len());
        let size_cap = config.retention.as_ref().and_then(|p| p.size_cap_bytes());
        if verify {
            println!("ok: {} is valid ({rules} retention rules)", path.display());
        } else if self.args.json {
            writeln!(
                self.out,
                "{}",
                serde_json::json!({"kind": "configuration file", "retention_rules": rules, "size_cap_bytes": size_cap})
            )?;
        } else {
            writeln!(
                self.out,
                "configuration file {}: valid; {rules} retention rules{}",
                path.display(),
                size_cap
                    .map(|bytes| format!(", size cap {bytes} bytes"))
                    .unwrap_or_default()
            )?;
        }
        Ok(())
    }

    fn rule_stats(&mut self, verify: bool) -> Result<()> {
        let path = self.args.path.clone();
        let Some(stats) = self.read_or_fail(verify, evlog::rules::read_stats_path)? else {
            return Ok(());
        };
        if verify {
            println!("ok: {} is valid (rule {})", path.display(), stats.rule);
        } else if self.args.json {
            writeln!(self.out, "{}", serde_json::to_string(&stats)?)?;
        } else {
            writeln!(
                self.out,
                "rule statistics file {} (format {}): rule {}, position {}, {} evaluations, {} firings, {} failures, {} skipped, {} depth stops, breaker {:?} (opened {} times)",
                path.display(),
                stats.format,
                stats.rule,
                stats.position,
                stats.evaluations,
                stats.firings,
                stats.failures,
                stats.skipped,
                stats.depth_stops,
                stats.breaker,
                stats.breaker_opens
            )?;
            if let Some(error) = &stats.last_error {
                writeln!(self.out, "  last error: {error}")?;
            }
        }
        Ok(())
    }

    fn secondary_index(&mut self) -> Result<()> {
        let path = self.args.path.clone();
        let info = match evlog::dump::read_secondary_index(&path) {
            Ok(info) => info,
            Err(e) => {
                // Unreadable (in use by the writer's process, or not a
                // sled database): nothing to read here.
                eprintln!("evlog-dump: nothing to read: {e}");
                self.damaged = true;
                return Ok(());
            }
        };
        if self.args.json {
            writeln!(
                self.out,
                "{}",
                serde_json::json!({
                    "kind": "secondary index", "layout_version": info.layout_version,
                    "mark": info.mark.map(|(seq, id)| serde_json::json!({"seq": seq, "id": id})),
                    "entries": info.entries, "bytes": info.bytes
                })
            )?;
            return Ok(());
        }
        writeln!(
            self.out,
            "secondary index {}: layout version {}, indexed through {}; {} bytes of keys and values",
            path.display(),
            info.layout_version
                .map_or("missing".to_string(), |v| v.to_string()),
            info.mark
                .map_or("(no mark)".to_string(), |(seq, id)| format!("seq {seq} (event {id})")),
            info.bytes
        )?;
        for (family, count) in &info.entries {
            writeln!(self.out, "  {family}: {count} entries")?;
        }
        Ok(())
    }

    fn print_stats(&mut self) -> Result<()> {
        let total = self.stats.total();
        let time = |range: Option<(i64, i64)>| {
            range.map(|(a, b)| {
                (
                    evlog::json::format_timestamp(a),
                    evlog::json::format_timestamp(b),
                )
            })
        };
        if self.args.json {
            let file_json = |file: &evlog::dump::FileStats| {
                let times = time(file.timestamps_us);
                serde_json::json!({
                    "path": file.path, "kind": file.kind, "file_bytes": file.file_bytes,
                    "records": file.records, "record_bytes": file.record_bytes,
                    "first_seq": file.seqs.map(|s| s.0), "last_seq": file.seqs.map(|s| s.1),
                    "first_time": times.as_ref().map(|t| t.0.clone()),
                    "last_time": times.as_ref().map(|t| t.1.clone()),
                    "undecodable": file.undecodable,
                })
            };
            let by_priority: serde_json::Map<String, serde_json::Value> = self
                .stats
                .by_priority
                .iter()
                .map(|(p, n)| (p.to_string(), (*n).into()))
                .collect();
            let mut total_json = file_json(&total);
            if let Some(object) = total_json.as_object_mut() {
                object.remove("path");
                object.remove("kind");
            }
            writeln!(
                self.out,
                "{}",
                serde_json::json!({
                    "files": self.stats.files.iter().map(file_json).collect::<Vec<_>>(),
                    "total": total_json,
                    "by_type": self.stats.by_type,
                    "by_priority": by_priority,
                })
            )?;
            return Ok(());
        }
        let line = |file: &evlog::dump::FileStats, name: String| {
            let seqs = file
                .seqs
                .map_or("-".to_string(), |(a, b)| format!("{a}..={b}"));
            let times =
                time(file.timestamps_us).map_or("-".to_string(), |(a, b)| format!("{a}..{b}"));
            let undecodable = if file.undecodable > 0 {
                format!(" ({} undecodable)", file.undecodable)
            } else {
                String::new()
            };
            format!(
                "{name}: {} bytes; {} records{undecodable}, {} record bytes; seq {seqs}; time {times}",
                file.file_bytes, file.records, file.record_bytes
            )
        };
        for file in &self.stats.files {
            let name = format!("{} {}", file.kind, file.path.display());
            writeln!(self.out, "{}", line(file, name))?;
        }
        writeln!(self.out, "{}", line(&total, "total".into()))?;
        writeln!(self.out, "by type:")?;
        let mut by_type: Vec<(&String, &u64)> = self.stats.by_type.iter().collect();
        by_type.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
        for (event_type, count) in by_type {
            writeln!(self.out, "  {count:>10}  {event_type}")?;
        }
        writeln!(self.out, "by priority:")?;
        for (priority, count) in &self.stats.by_priority {
            writeln!(self.out, "  {count:>10}  {priority}")?;
        }
        Ok(())
    }

    fn verify(&mut self, kind: PathKind) -> Result<Outcome> {
        match kind {
            PathKind::DataDir => self.verify_dir()?,
            PathKind::Segment => self.verify_segment()?,
            PathKind::Archive => self.verify_archive()?,
            PathKind::SequenceIndex => self.seq_index(true)?,
            PathKind::CleanMarker => self.marker(true)?,
            PathKind::ConsumerPosition => self.consumer_position(true)?,
            PathKind::ParkedList => self.parked_list(true)?,
            PathKind::Holds => self.holds(true)?,
            PathKind::SecondaryIndex => self.verify_secondary_index()?,
            PathKind::Lock => self.lock(true)?,
            PathKind::Config => self.config(true)?,
            PathKind::RuleStats => self.rule_stats(true)?,
            PathKind::LostFound => {
                let path = self.args.path.clone();
                println!(
                    "nothing to verify: {} is a lost+found copy of bytes cut from a segment, not part of the log (print it to see what it holds)",
                    path.display()
                );
                self.damaged = true;
            }
        }
        Ok(self.outcome())
    }

    fn verify_segment(&mut self) -> Result<()> {
        let path = self.args.path.clone();
        match evlog::dump::verify(&path)? {
            None => println!("ok: {} is intact", path.display()),
            Some(problem) => {
                let at = (problem.file.clone(), problem.offset);
                let mut text = problem.to_string();
                if let Some(seq) = seq_at(&problem) {
                    text.push_str(&format!(" (seq {seq})"));
                }
                self.fail(true, &text, Some((&at.0, at.1)))?;
            }
        }
        Ok(())
    }

    fn verify_archive(&mut self) -> Result<()> {
        let path = self.args.path.clone();
        let Some(archive) = self.read_or_fail(true, |path| evlog::Archive::open(path))? else {
            return Ok(());
        };
        match archive.verify() {
            Ok(report) if report.unexplained_missing > 0 => {
                let problem = format!(
                    "{}: {} sequence numbers of the covered range are neither present nor explained by a deletion note",
                    path.display(),
                    report.unexplained_missing
                );
                self.fail(true, &problem, None)
            }
            Ok(report) => {
                let mut line = format!(
                    "ok: {} is intact ({} events in {} frames",
                    path.display(),
                    report.events,
                    report.frames
                );
                for note in archive.deletions() {
                    line.push_str(&format!(
                        "; seq {}..={}: {} deleted by rule {:?} on {}",
                        note.first_seq,
                        note.last_seq,
                        note.count,
                        note.rule,
                        evlog::json::format_timestamp(note.deleted_at_us)
                    ));
                }
                println!("{line})");
                Ok(())
            }
            Err(e) if is_damage(&e) => {
                let at = corrupt_offset(&e);
                self.fail(true, &e.to_string(), at.map(|o| (path.as_path(), o)))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// The files first (every CRC, continuity, sealed indexes, archives,
    /// the torn tail), with the same code as opening; then, through a
    /// read-only view, what spans files: causation references and the
    /// secondary indexes against the log.
    fn verify_dir(&mut self) -> Result<()> {
        let dir = self.args.path.clone();
        if !dir.join("segments").is_dir() && !dir.join("archive").is_dir() {
            let has_segments = evlog::dump::pieces(&dir)?.iter().any(|p| !p.is_archive);
            if !has_segments {
                // A copy of `archive/` on its own: every archive in it.
                return self.verify_archive();
            }
        }
        let mut in_flight = String::new();
        if let Some(problem) = evlog::dump::verify(&dir)? {
            // While a writer has the directory open, what follows the
            // active segment's last complete unit may be an append in
            // flight: not damage.
            let writer = evlog::dump::lock_holder(&dir);
            let preview = match writer {
                Some(_) => evlog::dump::recovery_preview(&dir).ok().flatten(),
                None => None,
            };
            let live_tail = match (writer, preview) {
                (Some(pid), Some(preview))
                    if preview.segment == problem.file && problem.offset >= preview.kept_end =>
                {
                    Some((pid, preview.kept_end))
                }
                _ => None,
            };
            let Some((pid, kept_end)) = live_tail else {
                let at = (problem.file.clone(), problem.offset);
                let mut text = problem.to_string();
                if let Some(seq) = seq_at(&problem) {
                    text.push_str(&format!(" (seq {seq})"));
                }
                return self.fail(true, &text, Some((&at.0, at.1)));
            };
            in_flight = format!(
                "; a writer (pid {pid}) has it open: the bytes after byte {kept_end} of its active segment may be an append in flight and were not judged"
            );
        }
        if !dir.join("segments").is_dir() {
            println!(
                "ok: {} is intact (a copy of segments/ without its data directory: causation references and secondary indexes not checked{in_flight})",
                dir.display()
            );
            return Ok(());
        }
        let reader = match evlog::Log::open_read_only(&dir) {
            Ok(reader) => reader,
            Err(e) if is_damage(&e) => return self.fail(true, &e.to_string(), None),
            Err(e) => return Err(e.into()),
        };
        let mut bar = progress::ProgressBar::new("verifying", "check");
        let report = reader.verify_with_progress(|done, total| bar.update(done, total))?;
        bar.finish();
        let status = reader.index_status();
        if !report.is_ok() {
            for problem in report.problems.iter().take(PROBLEMS_SHOWN_MAX) {
                println!("corrupt: {}: {problem}", dir.display());
                eprintln!("evlog-dump: damaged: {}: {problem}", dir.display());
            }
            if report.problems.len() > PROBLEMS_SHOWN_MAX {
                println!(
                    "... and {} more problems",
                    report.problems.len() - PROBLEMS_SHOWN_MAX
                );
            }
            self.damaged = true;
            return Ok(());
        }
        let indexes = if report.index_available {
            format!(
                "secondary indexes agree ({} entries checked, through seq {})",
                report.index_entries_checked, status.indexed_through
            )
        } else {
            format!(
                "secondary indexes not checked: {}",
                status
                    .unavailable_because
                    .unwrap_or_else(|| "not available".into())
            )
        };
        let causes = if report.causes_not_found > 0 {
            format!(
                "; {} causation references name events retention deleted",
                report.causes_not_found
            )
        } else {
            String::new()
        };
        println!(
            "ok: {} is intact ({} events checked; {indexes}{causes}{in_flight})",
            dir.display(),
            report.events_checked
        );
        // Holes retention made are not damage: say what they are.
        for line in evlog::dump::deletions(&dir)? {
            println!("deleted: {line}");
        }
        Ok(())
    }

    /// The secondary index directory, checked against the log of the data
    /// directory it is in.
    fn verify_secondary_index(&mut self) -> Result<()> {
        let index_dir = self.args.path.clone();
        let Some(dir) = index_dir.canonicalize()?.parent().map(Path::to_path_buf) else {
            println!(
                "nothing to verify: {} has no data directory around it",
                index_dir.display()
            );
            self.damaged = true;
            return Ok(());
        };
        let reader = match evlog::Log::open_read_only(&dir) {
            Ok(reader) => reader,
            Err(e) => {
                println!(
                    "nothing to verify: the log of {} cannot be read to compare with: {e}",
                    index_dir.display()
                );
                self.damaged = true;
                return Ok(());
            }
        };
        let status = reader.index_status();
        if !status.available {
            let why = status
                .unavailable_because
                .unwrap_or_else(|| "not available".into());
            let problem = format!("{}: cannot be used: {why}", index_dir.display());
            return self.fail(true, &problem, None);
        }
        let report = reader.verify()?;
        let problems: Vec<&String> = report
            .problems
            .iter()
            .filter(|p| !p.starts_with("log:"))
            .collect();
        if problems.is_empty() {
            println!(
                "ok: {} is intact ({} entries agree with the log through seq {})",
                index_dir.display(),
                report.index_entries_checked,
                status.indexed_through
            );
            return Ok(());
        }
        for problem in problems.iter().take(PROBLEMS_SHOWN_MAX) {
            println!("corrupt: {}: {problem}", index_dir.display());
            eprintln!("evlog-dump: damaged: {}: {problem}", index_dir.display());
        }
        self.damaged = true;
        Ok(())
    }

    /// Tails a live data directory through a read-only view.
    fn follow(&mut self) -> Result<Outcome> {
        let dir = self.args.path.clone();
        let reader = match evlog::Log::open_read_only(&dir) {
            Ok(reader) => reader,
            Err(e) if is_damage(&e) => {
                self.damage(&e.to_string(), None)?;
                return Ok(Outcome::Damaged);
            }
            Err(e) => return Err(e.into()),
        };
        let mut next = match self.selection.from_seq {
            Some(from) => from,
            None => reader.last_seq().map_or(1, |last| last + 1),
        };
        loop {
            if let Some(last) = reader.last_seq() {
                if next <= last {
                    for event in reader.iter(next.max(reader.first_seq().unwrap_or(1))..=last)? {
                        let event = match event {
                            Ok(event) => event,
                            Err(evlog::Error::Deleted { .. }) => continue,
                            Err(e) if is_damage(&e) => {
                                self.damage(&e.to_string(), None)?;
                                return Ok(Outcome::Damaged);
                            }
                            Err(e) => return Err(e.into()),
                        };
                        let seq = event.seq;
                        let found = Found {
                            location: Location::Log,
                            seq,
                            record_bytes: 0,
                            unit_remaining: 0,
                            synced_through: 0,
                            event: &Ok(event),
                        };
                        if self.record_followed(&found)? == Walk::Stop {
                            return Ok(Outcome::Intact);
                        }
                    }
                    next = last + 1;
                }
            }
            self.out.flush()?;
            std::thread::sleep(Duration::from_millis(FOLLOW_POLL_MS));
            if !dir.is_dir() {
                eprintln!("evlog-dump: {} is gone; stopped following", dir.display());
                return Ok(Outcome::Intact);
            }
            if let Err(e) = reader.refresh() {
                if !dir.is_dir() {
                    eprintln!("evlog-dump: {} is gone; stopped following", dir.display());
                    return Ok(Outcome::Intact);
                }
                if is_damage(&e) {
                    self.damage(&e.to_string(), None)?;
                    return Ok(Outcome::Damaged);
                }
                return Err(e.into());
            }
        }
    }

    /// A record read through the log: the table line has no file
    /// position or framing fields.
    fn record_followed(&mut self, found: &Found<'_>) -> Result<Walk> {
        if self.selection.is_past(found.seq) || self.args.limit == Some(self.selected) {
            return Ok(Walk::Stop);
        }
        let Ok(event) = found.event else {
            return Ok(Walk::Continue);
        };
        if !self.selection.admits(event) {
            return Ok(Walk::Continue);
        }
        self.selected += 1;
        if self.args.json {
            writeln!(self.out, "{}", evlog::json::event_to_json(event))?;
        } else {
            let mut line = format!(
                "  seq={} type={} id={} time={}",
                event.seq,
                event.event_type,
                event.id,
                evlog::json::format_timestamp(event.timestamp_us)
            );
            if let Some(entity) = &event.entity {
                line.push_str(&format!(
                    " entity={}/{}",
                    entity.entity_type, entity.entity_id
                ));
            }
            if let Some(correlation) = event.correlation_id {
                line.push_str(&format!(" correlation={correlation}"));
            }
            writeln!(self.out, "{line}")?;
        }
        if self.args.limit == Some(self.selected) || self.selection.to_seq == Some(found.seq) {
            return Ok(Walk::Stop);
        }
        Ok(Walk::Continue)
    }
}

/// Whether an error is about the bytes of a file (exit 1) rather than the
/// system (exit 2).
fn is_damage(error: &evlog::Error) -> bool {
    matches!(
        error,
        evlog::Error::Corrupt { .. } | evlog::Error::UnsupportedVersion { .. }
    )
}

/// The byte offset an error about a file's bytes names.
fn corrupt_offset(error: &evlog::Error) -> Option<u64> {
    match error {
        evlog::Error::Corrupt { offset, .. } => Some(*offset),
        evlog::Error::UnsupportedVersion { .. } => Some(8),
        _ => None,
    }
}

/// A problem at an offset of an archive, with the data frame there and
/// the seqs it holds, when the archive's index still reads.
fn with_frame(problem: &str, at: Option<(&Path, u64)>) -> String {
    let located = at
        .filter(|(file, _)| file.extension().is_some_and(|e| e == "evz"))
        .and_then(|(file, offset)| {
            let archive = evlog::Archive::open(file).ok()?;
            let info = archive.info().into_iter().next()?;
            info.frames.iter().enumerate().find_map(|(number, frame)| {
                let end = frame.offset + u64::from(frame.compressed_bytes);
                (frame.offset..end).contains(&offset).then(|| {
                    format!(
                        " (data frame {number}, seq {}..={})",
                        frame.first_seq, frame.last_seq
                    )
                })
            })
        });
    format!("{problem}{}", located.unwrap_or_default())
}

/// The sequence number a segment problem's offset holds (or should
/// hold): the segment's first seq plus the records wholly before it.
fn seq_at(problem: &evlog::dump::Problem) -> Option<u64> {
    // Below the 32-byte segment header a problem is about the header,
    // not a record.
    if problem.file.extension().is_none_or(|e| e != "seg") || problem.offset < 32 {
        return None;
    }
    let mut before = 0u64;
    let report = evlog::dump::inspect_segment(&problem.file, |record| {
        if record.offset + record.record_bytes <= problem.offset {
            before += 1;
        }
    })
    .ok()?;
    Some(report.first_seq + before)
}

fn file_stem(path: &Path) -> String {
    path.file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default()
}
