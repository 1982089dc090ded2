//! `evlog`: the command-line tool over a data directory.
//!
//! Exit codes: 0 success (also when stdout is closed early, so `| head`
//! works), 1 when a requested event does not exist or a conditional line
//! of `append` meets another version of its entity, 2 on any error.

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use evlog::{Durability, Event, Log, LogReader, Options};

/// Where `evlog` keeps its data when neither `--dir` nor `EVLOG_DIR` says.
const DEFAULT_DATA_DIR: &str = "evlog-data";
/// Most lines `append` groups into one durable batch: enough to amortize
/// the fsync, few enough that acknowledgements stream steadily.
const APPEND_LINES_PER_BATCH_MAX: usize = 1000;
/// Events per durable batch in `demo`, as in benchmark operation A2.
const DEMO_BATCH_EVENTS: usize = 1000;

#[derive(Parser)]
#[command(name = "evlog", version, about = "An embedded, durable event log")]
struct Cli {
    /// Data directory (default: $EVLOG_DIR, else ./evlog-data).
    #[arg(long, global = true, env = "EVLOG_DIR", default_value = DEFAULT_DATA_DIR)]
    dir: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Append events read as JSON lines on stdin; prints {"seq":N,"id":"..."}
    /// for each once it is durable.
    ///
    /// Each line is an object with "type" (required, a dotted name) and
    /// optionally "id" (UUID), "timestamp", "correlation_id",
    /// "causation_id" (UUIDs), "entity" ({"type":..,"id":..}), "actor",
    /// "session", "priority" ("P0".."P3"), "traceparent", "metadata"
    /// (object of strings), "payload" (any JSON) or "payload_hex". A "seq"
    /// is accepted and ignored (the log numbers events), so `replay` output
    /// can be appended to another log; any other field is refused. Lines
    /// are appended in durable batches; on a bad line, the lines before it
    /// stay appended and the error says how many.
    ///
    /// A `timestamp` must be an RFC 3339 string such as 2026-01-01T00:00:00Z
    /// (years 1 to 9999), not a number. A `payload` is stored as written,
    /// numbers included, less the whitespace between its tokens.
    ///
    /// "expected_version" (a count, with an "entity") makes a line
    /// conditional: it is appended only if its entity has exactly that many
    /// events before it; otherwise append stops there (the lines before it
    /// stay appended), names the line and the entity's actual version, and
    /// exits 1. A line whose "id" is already among the log's recent events
    /// is not appended again: its acknowledgement gives the existing seq.
    Append,
    /// Print one event as a JSON object.
    Get { seq: u64 },
    /// Print events as JSON lines in sequence order.
    Replay {
        /// First sequence number to print (inclusive; default: the first).
        #[arg(long)]
        from: Option<u64>,
        /// Last sequence number to print (inclusive; default: the last).
        #[arg(long)]
        to: Option<u64>,
    },
    /// Print the sequence range and segment count as JSON.
    Info,
    /// Make a log that refuses to open because of damage open again: keep
    /// the longest intact prefix, move everything after it to
    /// DIR/lost+found/, and print exactly which sequence numbers and bytes
    /// are dropped.
    Repair {
        /// Only print what would be dropped.
        #[arg(long)]
        dry_run: bool,
    },
    /// Append a generated sample workload and show what the log holds.
    Demo {
        /// Number of events to generate.
        #[arg(long, default_value_t = 20_000)]
        events: u64,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(error) => {
            if is_broken_pipe(&error) {
                return ExitCode::SUCCESS;
            }
            eprintln!("evlog: {error:#}");
            if is_version_conflict(&error) {
                // Not a failure of the tool: the input's expectation no
                // longer holds, as `get` of a missing event.
                return ExitCode::from(1);
            }
            ExitCode::from(2)
        }
    }
}

fn is_version_conflict(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| {
        matches!(
            cause.downcast_ref::<evlog::Error>(),
            Some(evlog::Error::VersionConflict { .. })
        )
    })
}

fn is_broken_pipe(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

fn open(dir: &PathBuf) -> Result<Log> {
    let log = Log::open(dir, Options::default().durability(Durability::Always))
        .with_context(|| format!("opening {}", dir.display()))?;
    // Recovery repairs are worth telling the operator about; the library
    // reports them through `tracing` and the report.
    let report = log.recovery_report();
    if let Some(cut) = &report.cut {
        let kept = match &cut.lost_found.path {
            Some(path) => format!("copied to {}", path.display()),
            None => "NOT copied: lost+found is full".to_string(),
        };
        eprintln!(
            "evlog: recovered {}: cut bytes {}..{} of {} (an incomplete or unsynced write; {}), dropping {}",
            dir.display(),
            cut.offset_start,
            cut.offset_end,
            cut.file.display(),
            kept,
            describe_seqs(&report.dropped_seqs),
        );
    }
    warn_damage(&report.damaged_segments);
    Ok(log)
}

/// Opens for the commands that only read: creates, locks and repairs
/// nothing, and works while another process appends.
fn open_read_only(dir: &PathBuf) -> Result<LogReader> {
    let view = Log::open_read_only(dir).with_context(|| format!("reading {}", dir.display()))?;
    warn_damage(&view.open_report().damaged_segments);
    Ok(view)
}

fn warn_damage(damaged: &[(PathBuf, u64, String)]) {
    for (file, offset, what) in damaged {
        eprintln!(
            "evlog: warning: damaged sealed segment {} at byte offset {offset}: {what} (the records there fail to read; see evlog-dump --verify)",
            file.display()
        );
    }
}

/// "no records", "seq 7", "seqs 7, 8, 9".
fn describe_seqs(seqs: &[u64]) -> String {
    match seqs {
        [] => "no readable records".into(),
        [one] => format!("seq {one}"),
        many => format!(
            "seqs {}",
            many.iter()
                .map(u64::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

fn describe_ranges(ranges: &[(u64, u64)]) -> String {
    if ranges.is_empty() {
        return "no sequence numbers".into();
    }
    ranges
        .iter()
        .map(|&(a, b)| {
            if a == b {
                format!("seq {a}")
            } else {
                format!("seqs {a}..={b}")
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn repair(dir: &Path, dry_run: bool) -> Result<ExitCode> {
    let mode = if dry_run {
        evlog::RepairMode::DryRun
    } else {
        evlog::RepairMode::Apply
    };
    let report =
        evlog::repair(dir, mode).with_context(|| format!("repairing {}", dir.display()))?;
    let verb = if dry_run { "would drop" } else { "dropped" };
    for cut in &report.cuts {
        let kept = match cut.lost_found.as_ref().map(|c| (&c.path, c.bytes_not_kept)) {
            None => String::new(),
            Some((Some(path), 0)) => format!("; kept in {}", path.display()),
            Some((Some(path), lost)) => format!(
                "; kept in {} except the last {lost} bytes (lost+found is full)",
                path.display()
            ),
            Some((None, _)) => "; NOT kept: lost+found is full".into(),
        };
        println!(
            "{verb} {}: bytes {}..{} of {} ({}){kept}",
            describe_ranges(&cut.dropped_seqs),
            cut.offset_start,
            cut.offset_end,
            cut.file.display(),
            cut.reason,
        );
    }
    for (file, offset, what) in &report.left_alone {
        println!(
            "left alone: {} at byte offset {offset}: {what} (the log opens; only the damaged records fail to read)",
            file.display()
        );
    }
    if report.cuts.is_empty() {
        println!("nothing to repair in {}", dir.display());
    }
    Ok(ExitCode::SUCCESS)
}

fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Append => append(&cli.dir),
        Command::Get { seq } => {
            let log = open_read_only(&cli.dir)?;
            match log.get(seq) {
                Ok(event) => {
                    let mut out = std::io::stdout().lock();
                    writeln!(out, "{}", evlog::json::event_to_json(&event))?;
                    Ok(ExitCode::SUCCESS)
                }
                Err(evlog::Error::NotFound(_)) => {
                    eprintln!("evlog: no event with sequence number {seq}");
                    Ok(ExitCode::from(1))
                }
                Err(e) => Err(e.into()),
            }
        }
        Command::Replay { from, to } => {
            if let (Some(from), Some(to)) = (from, to) {
                if from > to {
                    anyhow::bail!("--from {from} is after --to {to} (both are inclusive)");
                }
            }
            let log = open_read_only(&cli.dir)?;
            let mut out = std::io::BufWriter::new(std::io::stdout().lock());
            let start = from.unwrap_or(0);
            let end = to.unwrap_or(u64::MAX);
            for event in log.iter(start..=end)? {
                writeln!(out, "{}", evlog::json::event_to_json(&event?))?;
            }
            out.flush()?;
            if !log.open_report().damaged_segments.is_empty() {
                // Every event in range was printed, but the files are not
                // what the format requires: say so in the exit code too.
                anyhow::bail!("the log has damaged segments (see the warnings above)");
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Info => {
            let log = open_read_only(&cli.dir)?;
            let info = serde_json::json!({
                "dir": cli.dir.display().to_string(),
                "first_seq": log.first_seq(),
                "last_seq": log.last_seq(),
                "segments": log.segment_count(),
                "closed_cleanly": log.open_report().closed_cleanly,
            });
            println!("{info}");
            Ok(ExitCode::SUCCESS)
        }
        Command::Repair { dry_run } => repair(&cli.dir, dry_run),
        Command::Demo { events } => demo(&cli.dir, events),
    }
}

/// Reads JSON lines on a separate thread so that lines already waiting can
/// be appended as one durable batch while the next ones arrive.
fn append(dir: &PathBuf) -> Result<ExitCode> {
    let log = open(dir)?;
    let (tx, rx) =
        crossbeam_channel::bounded::<std::io::Result<String>>(APPEND_LINES_PER_BATCH_MAX);
    std::thread::Builder::new()
        .name("evlog:stdin".into())
        .spawn(move || {
            for line in std::io::stdin().lock().lines() {
                let stop = line.is_err();
                if tx.send(line).is_err() || stop {
                    break;
                }
            }
        })?;
    let mut out = std::io::stdout().lock();
    let mut line_number = 0u64;
    let mut appended = 0u64;
    let mut events: Vec<Event> = Vec::with_capacity(APPEND_LINES_PER_BATCH_MAX);
    let mut ids = Vec::with_capacity(APPEND_LINES_PER_BATCH_MAX);
    let mut line_numbers = Vec::with_capacity(APPEND_LINES_PER_BATCH_MAX);
    // Says how far the input got, so that a failure is never mistaken for
    // "nothing was appended" or "everything was".
    let progress = |appended: u64| match appended {
        0 => "no event was appended".to_string(),
        1 => "1 event was appended before it".to_string(),
        n => format!("{n} events were appended before it"),
    };
    while let Ok(first) = rx.recv() {
        let mut lines = vec![first];
        while lines.len() < APPEND_LINES_PER_BATCH_MAX {
            match rx.try_recv() {
                Ok(line) => lines.push(line),
                Err(_) => break,
            }
        }
        events.clear();
        ids.clear();
        line_numbers.clear();
        let mut failure = None;
        for line in lines {
            line_number += 1;
            let line = match line {
                Ok(line) => line,
                Err(e) => {
                    failure = Some((anyhow::Error::new(e), format!("reading line {line_number}")));
                    break;
                }
            };
            if line.trim().is_empty() {
                continue;
            }
            match evlog::json::event_from_json(&line) {
                Ok(event) => {
                    // Assign the id here so it can be echoed back.
                    let id = event.id_or_new();
                    events.push(event.id(id));
                    ids.push(id);
                    line_numbers.push(line_number);
                }
                Err(e) => {
                    failure = Some((anyhow::Error::new(e), format!("line {line_number}")));
                    break;
                }
            }
        }
        if !events.is_empty() {
            let (seqs, refused) = append_lines(&log, &events, &line_numbers);
            appended += seqs.len() as u64;
            let written = seqs
                .into_iter()
                .zip(&ids)
                .try_for_each(|(seq, id)| writeln!(out, "{{\"seq\":{seq},\"id\":\"{id}\"}}"))
                .and_then(|()| out.flush());
            if let Err(e) = written {
                // Whoever reads the acknowledgements is gone: stop rather
                // than append what nobody will see acknowledged.
                log.close()?;
                return Err(anyhow::Error::new(StdoutClosed(e)).context(format!(
                    "stopped at line {line_number}: {appended} events were appended (the last batch durably, but its acknowledgements could not be written)"
                )));
            }
            if let Some((refused_line, e)) = refused {
                let at = match refused_line {
                    Some(line) => format!("line {line}"),
                    None => format!("appending up to line {line_number}"),
                };
                return Err(anyhow::Error::new(e).context(format!("{at}; {}", progress(appended))));
            }
        }
        if let Some((error, at)) = failure {
            return Err(error.context(format!("{at}; {}", progress(appended))));
        }
    }
    log.close()?;
    Ok(ExitCode::SUCCESS)
}

/// Appends the events of one group of lines as one atomic batch. If the
/// batch is refused because of one of its events (a version conflict, or
/// a retry that repeats only part of an earlier batch), nothing of it was
/// written: the events are then appended one by one, so that every line
/// before the refused one goes in (a repeated one answered with its
/// existing seq) and the error names the refused line. Returns the seqs
/// of the events appended, and the failure with its line when the error
/// concerns one line (`None` when it concerns the whole batch).
fn append_lines(
    log: &Log,
    events: &[Event],
    line_numbers: &[u64],
) -> (Vec<u64>, Option<(Option<u64>, evlog::Error)>) {
    match log.append_batch(events) {
        Ok(seqs) => (seqs.collect(), None),
        Err(evlog::Error::VersionConflict { .. } | evlog::Error::DuplicateInBatch { .. }) => {
            let mut seqs = Vec::with_capacity(events.len());
            for (event, &line) in events.iter().zip(line_numbers) {
                match log.append(event.clone()) {
                    Ok(seq) => seqs.push(seq),
                    Err(e) => return (seqs, Some((Some(line), e))),
                }
            }
            (seqs, None)
        }
        Err(e) => (Vec::new(), Some((None, e))),
    }
}

/// Standard output closed under `append`: unlike a read command, this is
/// an error (exit 2), since input was left unread.
#[derive(Debug)]
struct StdoutClosed(std::io::Error);

impl std::fmt::Display for StdoutClosed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "standard output is closed ({})", self.0.kind())
    }
}

impl std::error::Error for StdoutClosed {}

fn demo(dir: &PathBuf, count: u64) -> Result<ExitCode> {
    let log = open(dir)?;
    // Written through a handle, not `println!`, so that a closed pipe
    // (`evlog demo | head`) ends the demo quietly instead of panicking.
    let mut out = std::io::stdout().lock();
    let before = log.last_seq().unwrap_or(0);
    let started = std::time::Instant::now();
    // A log that already holds events continues with a workload of another
    // seed, so a second run appends new events, never the same ids again.
    let mut config = evlog::workload::WorkloadConfig::new(count);
    config.seed = config.seed.wrapping_add(before);
    let workload = evlog::workload::Workload::new(config);
    let mut batch = Vec::with_capacity(DEMO_BATCH_EVENTS);
    for generated in workload {
        batch.push(generated.event());
        if batch.len() == DEMO_BATCH_EVENTS {
            log.append_batch(&batch)?;
            batch.clear();
        }
    }
    log.append_batch(&batch)?;
    let elapsed = started.elapsed().as_secs_f64().max(1e-9);
    let last = log.last_seq().unwrap_or(0);
    writeln!(
        out,
        "appended {} events (seq {}..={}) of the reference workload in durable batches of {DEMO_BATCH_EVENTS}: {:.2} s, {:.0} events/s",
        last - before,
        before + 1,
        last,
        elapsed,
        (last - before) as f64 / elapsed
    )?;
    let scan_started = std::time::Instant::now();
    let mut scanned = 0u64;
    let mut by_priority = [0u64; 4];
    for event in log.iter(..)? {
        let event = event?;
        by_priority[usize::from(event.priority.as_u8())] += 1;
        scanned += 1;
    }
    writeln!(
        out,
        "read back all {scanned} events in order, every CRC checked: {:.2} s; P0/P1/P2/P3 = {}/{}/{}/{}",
        scan_started.elapsed().as_secs_f64(),
        by_priority[0],
        by_priority[1],
        by_priority[2],
        by_priority[3]
    )?;
    if last > 0 {
        writeln!(
            out,
            "the last event: {}",
            evlog::json::event_to_json(&log.get(last)?)
        )?;
    }
    writeln!(
        out,
        "data directory {} holds {} segment file(s); try: cargo run --release -- --dir {} replay --from {} | head  (or `cargo install --path .` and run `evlog`)",
        dir.display(),
        log.segment_count(),
        dir.display(),
        last.saturating_sub(4).max(1)
    )?;
    log.close()?;
    Ok(ExitCode::SUCCESS)
}
