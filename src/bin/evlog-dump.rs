//! `evlog-dump PATH [--verify]`: prints the header and records of one
//! segment file or of every segment of a data directory, without taking
//! the directory lock. With `--verify` it checks every CRC, the sequence
//! continuity and the sealed indexes, and exits 1 naming the file and byte
//! offset of the first problem, 0 when intact (2 on other errors).

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::Parser;

#[derive(Parser)]
#[command(name = "evlog-dump", version, about = "Inspect evlog data files")]
struct Args {
    /// A segment file (`*.seg`) or a data directory.
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
    let result = if args.verify {
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

fn verify(args: &Args) -> Result<ExitCode> {
    match evlog::dump::verify(&args.path)? {
        None => {
            println!("ok: {} is intact", args.path.display());
            Ok(ExitCode::SUCCESS)
        }
        Some(problem) => {
            println!("corrupt: {problem}");
            Ok(ExitCode::from(1))
        }
    }
}

fn dump(args: &Args) -> Result<ExitCode> {
    let paths = if args.path.is_dir() {
        evlog::dump::segment_paths(&args.path)?
    } else {
        vec![args.path.clone()]
    };
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
    }
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}
