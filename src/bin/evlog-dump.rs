//! `evlog-dump PATH [--verify] [--json]`: prints the header and records of
//! one segment file or of every segment of a data directory (or a durable
//! consumer's position file or parked list, or an archive file `.evz`:
//! its footer, frames, deletion notes and records), without
//! taking the directory lock or changing a byte. With `--verify` it checks
//! every CRC, the sequence continuity and the sealed indexes with the same
//! code as opening the log. Exit codes: 0 intact, 1 damaged or nothing to
//! read (an index file, an empty file, a directory without segments;
//! damage is also reported on stderr), 2 on other errors.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::Parser;

#[derive(Parser)]
#[command(name = "evlog-dump", version, about = "Inspect evlog data files")]
struct Args {
    /// A segment file (`*.seg`), a data directory, a durable consumer's
    /// position file (`consumers/<name>.pos`) or parked list (`.parked`),
    /// or an archive file (`archive/*.evz`).
    path: PathBuf,
    /// Check everything and report the first problem instead of printing.
    #[arg(long)]
    verify: bool,
    /// Print each record's event as a JSON line (with its offset).
    #[arg(long)]
    json: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    if let Err(e) = std::fs::metadata(&args.path) {
        eprintln!("evlog-dump: cannot read {}: {e}", args.path.display());
        return ExitCode::from(2);
    }
    let is = |ext: &str| args.path.extension().is_some_and(|e| e == ext);
    let result = if is("pos") || is("parked") {
        consumer_file(&args)
    } else if is("evz") {
        archive_file(&args)
    } else if args.verify {
        verify(&args)
    } else {
        dump(&args)
    };
    match result {
        Ok(code) => code,
        Err(error) => {
            let broken_pipe = error.chain().any(|c| {
                c.downcast_ref::<std::io::Error>()
                    .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
            });
            if broken_pipe {
                return ExitCode::SUCCESS;
            }
            eprintln!("evlog-dump: {error:#}");
            ExitCode::from(2)
        }
    }
}

/// The segment files a path names, or why there are none: a directory
/// without evlog segments, an index file, an empty file.
fn segments_of(path: &std::path::Path) -> Result<Vec<PathBuf>, String> {
    if path.is_dir() {
        let paths = evlog::dump::segment_paths(path).map_err(|e| format!("{e:#}"))?;
        if paths.is_empty() {
            return Err(format!(
                "nothing to verify: {} holds no evlog segment files",
                path.display()
            ));
        }
        return Ok(paths);
    }
    if path.extension().is_some_and(|e| e == "idx") {
        return Err(format!(
            "{} is a sequence index file; give its segment (.seg) or the data directory, whose check includes the index",
            path.display()
        ));
    }
    if std::fs::metadata(path).map(|m| m.len()).unwrap_or(0) == 0 {
        return Err(format!(
            "{} is an empty file, not an evlog segment",
            path.display()
        ));
    }
    Ok(vec![path.to_path_buf()])
}

/// A durable consumer's position file or parked list: printed (or with
/// `--verify` checked); damage is reported on stderr and exits 1.
fn consumer_file(args: &Args) -> Result<ExitCode> {
    let path = &args.path;
    let name = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut out = std::io::stdout().lock();
    if path.extension().is_some_and(|e| e == "pos") {
        match evlog::dump::read_consumer_position(path) {
            Ok(position) if args.verify => writeln!(
                out,
                "ok: {} is intact (consumer {name}, position {position})",
                path.display()
            )?,
            Ok(position) if args.json => writeln!(
                out,
                "{}",
                serde_json::json!({"consumer": name, "position": position})
            )?,
            Ok(position) => writeln!(
                out,
                "consumer position file {}: consumer {name}, format 1, position {position}",
                path.display()
            )?,
            Err(e) => {
                if args.verify {
                    writeln!(out, "corrupt: {e}")?;
                }
                eprintln!("evlog-dump: damaged: {e}");
                return Ok(ExitCode::from(1));
            }
        }
        return Ok(ExitCode::SUCCESS);
    }
    match evlog::dump::read_parked_list(path) {
        Ok(parked) if args.verify => writeln!(
            out,
            "ok: {} is intact (consumer {name}, {} parked events)",
            path.display(),
            parked.len()
        )?,
        Ok(parked) => {
            if !args.json {
                writeln!(
                    out,
                    "parked list {}: consumer {name}, {} events",
                    path.display(),
                    parked.len()
                )?;
            }
            for event in parked {
                if args.json {
                    writeln!(
                        out,
                        "{}",
                        serde_json::json!({"consumer": name, "seq": event.seq, "attempts": event.attempts, "reason": event.reason})
                    )?;
                } else {
                    writeln!(
                        out,
                        "  seq={} attempts={} reason={:?}",
                        event.seq, event.attempts, event.reason
                    )?;
                }
            }
        }
        Err(e) => {
            if args.verify {
                writeln!(out, "corrupt: {e}")?;
            }
            eprintln!("evlog-dump: damaged: {e}");
            return Ok(ExitCode::from(1));
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn verify(args: &Args) -> Result<ExitCode> {
    if let Err(why) = segments_of(&args.path) {
        println!("{why}");
        return Ok(ExitCode::from(1));
    }
    match evlog::dump::verify(&args.path)? {
        None => {
            println!("ok: {} is intact", args.path.display());
            // Holes retention made are not damage: say what they are.
            if args.path.is_dir() {
                for line in evlog::dump::deletions(&args.path)? {
                    println!("deleted: {line}");
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Some(problem) => {
            println!("corrupt: {problem}");
            Ok(ExitCode::from(1))
        }
    }
}

fn dump(args: &Args) -> Result<ExitCode> {
    let paths = match segments_of(&args.path) {
        Ok(paths) => paths,
        Err(why) => {
            eprintln!("evlog-dump: {why}");
            return Ok(ExitCode::from(1));
        }
    };
    let mut damaged = false;
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let mut write_error = None;
    for path in paths {
        if !args.json {
            writeln!(out, "segment {}", path.display())?;
        }
        let report = evlog::dump::inspect_segment(&path, |record| {
            if write_error.is_some() {
                return;
            }
            let line = match (&record.event, args.json) {
                (Ok(_), true) => record.to_json().map(|json| json.to_string()).unwrap_or_default(),
                (Ok(event), false) => format!(
                    "  @{} seq={} bytes={} unit_remaining={} synced_through={} type={} id={} time={}",
                    record.offset,
                    record.seq,
                    record.record_bytes,
                    record.unit_remaining,
                    record.synced_through,
                    event.event_type,
                    event.id,
                    evlog::json::format_timestamp(event.timestamp_us)
                ),
                (Err(kind), _) => format!(
                    "  @{} seq={} bytes={} body does not decode: {kind}",
                    record.offset, record.seq, record.record_bytes
                ),
            };
            if let Err(e) = writeln!(out, "{line}") {
                write_error = Some(e);
            }
        })?;
        if let Some(e) = write_error.take() {
            return Err(e.into());
        }
        if !args.json {
            writeln!(
                out,
                "  header: format {}, first_seq {}, {} bytes; {} records{}, last record ends at {}, {} zero bytes after",
                report.format_version,
                report.first_seq,
                report.file_bytes,
                report.records,
                if report.records > 0 {
                    format!(" (seq {}..={})", report.first_seq, report.first_seq + report.records - 1)
                } else {
                    String::new()
                },
                report.end_offset,
                report.zero_tail_bytes
            )?;
            if let Some(problem) = &report.problem {
                writeln!(out, "  problem: {problem}")?;
            }
        }
        if let Some(problem) = &report.problem {
            // Damage is reported on stderr in every mode, and in the exit
            // code, so that `--json` consumers and scripts see it too.
            eprintln!("evlog-dump: damaged: {problem}");
            damaged = true;
        }
    }
    out.flush()?;
    Ok(if damaged {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

/// Whether an archive error is about the file's bytes (exit 1) rather than
/// the system (exit 2).
fn is_damage(error: &evlog::Error) -> bool {
    matches!(
        error,
        evlog::Error::Corrupt { .. } | evlog::Error::UnsupportedVersion { .. }
    )
}

/// An archive file: footer, frames, deletion notes and records (or with
/// `--verify`, every CRC, count and checksum). Damage is reported on
/// stderr and exits 1.
fn archive_file(args: &Args) -> Result<ExitCode> {
    let path = &args.path;
    let archive = match evlog::Archive::open(path) {
        Ok(archive) => archive,
        Err(e) if is_damage(&e) => {
            if args.verify {
                println!("corrupt: {e}");
            }
            eprintln!("evlog-dump: damaged: {e}");
            return Ok(ExitCode::from(1));
        }
        Err(e) => return Err(e.into()),
    };
    if args.verify {
        return match archive.verify() {
            Ok(report) if report.unexplained_missing > 0 => {
                let problem = format!(
                    "{}: {} sequence numbers of the covered range are neither present nor explained by a deletion note",
                    path.display(),
                    report.unexplained_missing
                );
                println!("corrupt: {problem}");
                eprintln!("evlog-dump: damaged: {problem}");
                Ok(ExitCode::from(1))
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
                Ok(ExitCode::SUCCESS)
            }
            Err(e) if is_damage(&e) => {
                println!("corrupt: {e}");
                eprintln!("evlog-dump: damaged: {e}");
                Ok(ExitCode::from(1))
            }
            Err(e) => Err(e.into()),
        };
    }
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    if !args.json {
        for info in archive.info() {
            let time = |us: i64| evlog::json::format_timestamp(us);
            writeln!(
                out,
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
            )?;
            for (number, frame) in info.frames.iter().enumerate() {
                writeln!(
                    out,
                    "  frame {number} @{} compressed={} decompressed={} seq {}..={} records={} crc={:#010x} compressed_crc={:#010x}",
                    frame.offset,
                    frame.compressed_bytes,
                    frame.decompressed_bytes,
                    frame.first_seq,
                    frame.last_seq,
                    frame.record_count,
                    frame.crc,
                    frame.compressed_crc
                )?;
            }
            for note in &info.deletions {
                writeln!(
                    out,
                    "  deleted seq {}..={}: {} events by rule {:?} on {}",
                    note.first_seq,
                    note.last_seq,
                    note.count,
                    note.rule,
                    time(note.deleted_at_us)
                )?;
            }
        }
    }
    let mut damaged = false;
    let walked = archive.inspect_records(|_, record| {
        let line = match (&record.event, args.json) {
            (Ok(event), true) => evlog::json::event_to_json(event).to_string(),
            (Ok(event), false) => format!(
                "  frame {} +{} seq={} bytes={} unit_remaining={} synced_through={} type={} id={} time={}",
                record.frame,
                record.offset_in_frame,
                record.seq,
                record.record_bytes,
                record.unit_remaining,
                record.synced_through,
                event.event_type,
                event.id,
                evlog::json::format_timestamp(event.timestamp_us)
            ),
            (Err(kind), _) => {
                damaged = true;
                eprintln!(
                    "evlog-dump: damaged: frame {} +{} seq={}: body does not decode: {kind}",
                    record.frame, record.offset_in_frame, record.seq
                );
                format!(
                    "  frame {} +{} seq={} bytes={} body does not decode: {kind}",
                    record.frame, record.offset_in_frame, record.seq, record.record_bytes
                )
            }
        };
        writeln!(out, "{line}")
    });
    match walked {
        Ok(()) => {}
        Err(e) if is_damage(&e) => {
            if !args.json {
                writeln!(out, "  problem: {e}")?;
            }
            eprintln!("evlog-dump: damaged: {e}");
            damaged = true;
        }
        Err(e) => return Err(e.into()),
    }
    out.flush()?;
    Ok(if damaged {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}
