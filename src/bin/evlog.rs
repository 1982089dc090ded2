//! `evlog`: the command-line tool over a data directory.
//!
//! Exit codes: 0 success (also when stdout is closed early, so `| head`
//! works), 1 when a requested event does not exist, 2 on any error.

use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use evlog::{Durability, Event, Log, Options};

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
    /// A `timestamp` must be an RFC 3339 string such as 2026-01-01T00:00:00Z
    /// (years 1 to 9999), not a number. A `payload` is stored as written,
    /// numbers included, less the whitespace between its tokens.
    Append,
    /// Print one event as a JSON object.
    Get { seq: u64 },
    /// Print events as JSON lines in sequence order.
    Replay {
        #[arg(long)]
        from: Option<u64>,
        #[arg(long)]
        to: Option<u64>,
    },
    /// Print the sequence range and segment count as JSON.
    Info,
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
            ExitCode::from(2)
        }
    }
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
    // only reports them through `tracing` and the report.
    let report = log.recovery_report();
    if report.torn_tail_bytes > 0 {
        eprintln!(
            "evlog: recovered {}: cut a torn tail of {} bytes ({} records of an incomplete write)",
            dir.display(),
            report.torn_tail_bytes,
            report.unacknowledged_records_dropped
        );
    }
    Ok(log)
}

fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Append => append(&cli.dir),
        Command::Get { seq } => {
            let log = open(&cli.dir)?;
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
            let log = open(&cli.dir)?;
            let mut out = std::io::BufWriter::new(std::io::stdout().lock());
            let start = from.unwrap_or(0);
            let end = to.unwrap_or(u64::MAX);
            for event in log.iter(start..=end)? {
                writeln!(out, "{}", evlog::json::event_to_json(&event?))?;
            }
            out.flush()?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Info => {
            let log = open(&cli.dir)?;
            let info = serde_json::json!({
                "dir": cli.dir.display().to_string(),
                "first_seq": log.first_seq(),
                "last_seq": log.last_seq(),
                "segments": log.segment_count(),
            });
            println!("{info}");
            Ok(ExitCode::SUCCESS)
        }
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
    let mut events: Vec<Event> = Vec::with_capacity(APPEND_LINES_PER_BATCH_MAX);
    let mut ids = Vec::with_capacity(APPEND_LINES_PER_BATCH_MAX);
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
        let mut failure = None;
        for line in lines {
            line_number += 1;
            let line = match line {
                Ok(line) => line,
                Err(e) => {
                    failure =
                        Some(anyhow::Error::new(e).context(format!("reading line {line_number}")));
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
                }
                Err(e) => {
                    failure = Some(anyhow::Error::new(e).context(format!("line {line_number}")));
                    break;
                }
            }
        }
        if !events.is_empty() {
            let seqs = log.append_batch(&events)?;
            for (seq, id) in seqs.zip(&ids) {
                writeln!(out, "{{\"seq\":{seq},\"id\":\"{id}\"}}")?;
            }
            out.flush()?;
        }
        if let Some(failure) = failure {
            return Err(failure);
        }
    }
    log.close()?;
    Ok(ExitCode::SUCCESS)
}

fn demo(dir: &PathBuf, count: u64) -> Result<ExitCode> {
    let log = open(dir)?;
    let before = log.last_seq().unwrap_or(0);
    let started = std::time::Instant::now();
    let workload = evlog::workload::Workload::new(evlog::workload::WorkloadConfig::new(count));
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
    println!(
        "appended {} events (seq {}..={}) of the reference workload in durable batches of {DEMO_BATCH_EVENTS}: {:.2} s, {:.0} events/s",
        last - before,
        before + 1,
        last,
        elapsed,
        (last - before) as f64 / elapsed
    );
    let scan_started = std::time::Instant::now();
    let mut scanned = 0u64;
    let mut by_priority = [0u64; 4];
    for event in log.iter(..)? {
        let event = event?;
        by_priority[usize::from(event.priority.as_u8())] += 1;
        scanned += 1;
    }
    println!(
        "read back all {scanned} events in order, every CRC checked: {:.2} s; P0/P1/P2/P3 = {}/{}/{}/{}",
        scan_started.elapsed().as_secs_f64(),
        by_priority[0],
        by_priority[1],
        by_priority[2],
        by_priority[3]
    );
    if last > 0 {
        println!(
            "the last event: {}",
            evlog::json::event_to_json(&log.get(last)?)
        );
    }
    println!(
        "data directory {} holds {} segment file(s); try: evlog --dir {} replay --from {} | head",
        dir.display(),
        log.segment_count(),
        dir.display(),
        last.saturating_sub(4).max(1)
    );
    log.close()?;
    Ok(ExitCode::SUCCESS)
}
