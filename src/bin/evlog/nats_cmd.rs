//! `evlog nats ...`: mirror a data directory to NATS JetStream, import a
//! stream back, compare the two, and show the mirror's lag (feature
//! `nats`).

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use evlog::nats::{
    ImportConfig, Mirror, MirrorConfig, MirrorStatus, ServerDurability, VerifyConfig,
};
use evlog::{Log, Options};

/// How often `mirror` looks at its status (to print it, or to see whether
/// it caught up).
const MIRROR_STATUS_POLL_MS: u64 = 20;

#[derive(clap::Subcommand)]
pub enum NatsCommand {
    /// Publish every event of DIR to a JetStream stream, in order and
    /// exactly once, then follow new events (until interrupted).
    ///
    /// Subjects are PREFIX.<event type>; the body is the event's JSON line
    /// as `replay` prints it; headers Evlog-Seq, Evlog-Id,
    /// Evlog-Correlation-Id, Evlog-Causation-Id, traceparent. The stream
    /// is created (file storage, subjects PREFIX.>) if missing. Resumes
    /// after the stream's last message, so a restart (or a kill) never
    /// publishes an event twice nor skips one. Opens DIR for writing (it
    /// is a durable consumer of the log): to mirror while an application
    /// has the log open, run `evlog::nats::Mirror` inside it.
    Mirror(MirrorArgs),
    /// Build a fresh data directory (DIR) from a stream a mirror wrote,
    /// keeping every event's seq, id, timestamp, correlation and
    /// causation; run again to go on where it stopped. Prints
    /// {"imported":N,"last_seq":N}.
    Import(TargetArgs),
    /// Compare DIR with the stream range by range (count and hash per
    /// range of seqs); prints a JSON report naming the first differing
    /// seq; exit 0 when equal, 1 when they differ.
    Verify(VerifyArgs),
    /// Print {"log_last_seq":..,"stream_last_evlog_seq":..,"lag":..,..}:
    /// how far the stream is behind DIR. Only reads DIR.
    Status(StatusArgs),
}

#[derive(clap::Args)]
pub struct TargetArgs {
    /// The NATS server, as nats://HOST:PORT.
    #[arg(long, env = "EVLOG_NATS_SERVER")]
    server: String,
    /// The JetStream stream's name.
    #[arg(long)]
    stream: String,
}

#[derive(clap::Args)]
pub struct MirrorArgs {
    #[command(flatten)]
    target: TargetArgs,
    /// Subjects are PREFIX.<event type>.
    #[arg(long, default_value = evlog::nats::SUBJECT_PREFIX_DEFAULT)]
    subject_prefix: String,
    /// Only events whose type matches this dotted pattern; may be
    /// repeated (any). A filtered stream cannot be imported.
    #[arg(long = "filter", value_name = "PATTERN")]
    filters: Vec<String>,
    /// The durable consumer's name (its position is DIR/consumers/NAME.pos).
    #[arg(long, default_value = evlog::nats::MIRROR_CONSUMER_DEFAULT)]
    consumer: String,
    /// The server's HTTP monitoring URL (http://HOST:8222), to check that it
    /// syncs every write before acknowledging it.
    #[arg(long, value_name = "URL")]
    monitor: Option<String>,
    /// Publishes awaiting acknowledgement at once.
    #[arg(long, default_value_t = evlog::nats::PUBLISH_WINDOW_DEFAULT)]
    publish_window: usize,
    /// Stop once every event DIR held at the start is in the stream, and
    /// print the final status.
    #[arg(long)]
    exit_when_caught_up: bool,
    /// Print the status as a JSON line on stderr this often (0: never).
    #[arg(long, default_value_t = 10)]
    status_every_s: u64,
}

#[derive(clap::Args)]
pub struct VerifyArgs {
    #[command(flatten)]
    target: TargetArgs,
    /// The mirror's --filter patterns, if it had any.
    #[arg(long = "filter", value_name = "PATTERN")]
    filters: Vec<String>,
    /// Seqs per compared range.
    #[arg(long, default_value_t = evlog::nats::RANGE_EVENTS_DEFAULT)]
    range_events: u64,
    /// Compare only up to this seq (a mirror still running has not shipped
    /// the newest events).
    #[arg(long, value_name = "SEQ")]
    through: Option<u64>,
}

#[derive(clap::Args)]
pub struct StatusArgs {
    #[command(flatten)]
    target: TargetArgs,
    /// The mirror's consumer name.
    #[arg(long, default_value = evlog::nats::MIRROR_CONSUMER_DEFAULT)]
    consumer: String,
    /// The server's HTTP monitoring URL, to check its sync setting.
    #[arg(long, value_name = "URL")]
    monitor: Option<String>,
}

pub fn run(dir: &Path, command: NatsCommand) -> Result<ExitCode> {
    match command {
        NatsCommand::Mirror(args) => mirror(dir, args),
        NatsCommand::Import(args) => {
            let report = evlog::nats::import(dir, &ImportConfig::new(&args.server, &args.stream))
                .with_context(|| {
                format!("importing stream {} into {}", args.stream, dir.display())
            })?;
            println!(
                "{}",
                serde_json::json!({"imported": report.imported, "last_seq": report.last_seq})
            );
            Ok(ExitCode::SUCCESS)
        }
        NatsCommand::Verify(args) => verify(dir, args),
        NatsCommand::Status(args) => status(dir, args),
    }
}

fn durability_json(durability: &ServerDurability) -> serde_json::Value {
    match durability {
        ServerDurability::SyncAlways => serde_json::json!({"synced": true}),
        ServerDurability::Unsynced(why) => serde_json::json!({"synced": false, "why": why}),
        ServerDurability::Unknown(why) => serde_json::json!({"synced": null, "why": why}),
        _ => serde_json::json!({"synced": null}),
    }
}

fn status_json(status: &MirrorStatus) -> serde_json::Value {
    serde_json::json!({
        "connected": status.connected,
        "shipped_seq": status.shipped_seq,
        "log_last_seq": status.log_last_seq,
        "lag": status.lag,
        "stream_last_seq": status.stream_last_seq,
        "published": status.published,
        "retries": status.retries,
        "last_error": status.last_error,
    })
}

fn mirror(dir: &Path, args: MirrorArgs) -> Result<ExitCode> {
    let log = Arc::new(
        Log::open(dir, Options::default()).with_context(|| format!("opening {}", dir.display()))?,
    );
    let mut config = MirrorConfig::new(&args.target.server, &args.target.stream)
        .subject_prefix(&args.subject_prefix)
        .consumer_name(&args.consumer)
        .publish_window(args.publish_window);
    for pattern in &args.filters {
        config = config.filter(pattern);
    }
    if let Some(url) = &args.monitor {
        config = config.monitor_url(url);
    }
    let handle = Mirror::start(&log, config)?;
    let target = log.last_seq().unwrap_or(0);
    let mut warned = false;
    let mut last_print = Instant::now();
    loop {
        std::thread::sleep(Duration::from_millis(MIRROR_STATUS_POLL_MS));
        let status = handle.status();
        if !warned {
            if let Some(durability) = &status.durability {
                warned = true;
                match durability {
                    ServerDurability::Unsynced(why) | ServerDurability::Unknown(why) => {
                        eprintln!("evlog: warning: {why}");
                    }
                    _ => {}
                }
            }
        }
        if handle.is_finished() {
            // Only an unrecoverable failure ends it on its own.
            handle.stop()?;
            anyhow::bail!("the mirror stopped");
        }
        if args.exit_when_caught_up && status.shipped_seq >= target {
            let status = handle.stop()?;
            println!("{}", status_json(&status));
            return Ok(ExitCode::SUCCESS);
        }
        if args.status_every_s > 0
            && last_print.elapsed() >= Duration::from_secs(args.status_every_s)
        {
            eprintln!("{}", status_json(&status));
            last_print = Instant::now();
        }
    }
}

fn verify(dir: &Path, args: VerifyArgs) -> Result<ExitCode> {
    let mut config =
        VerifyConfig::new(&args.target.server, &args.target.stream).range_events(args.range_events);
    for pattern in &args.filters {
        config = config.filter(pattern);
    }
    if let Some(seq) = args.through {
        config = config.through_seq(seq);
    }
    let report = evlog::nats::verify(dir, &config).with_context(|| {
        format!(
            "comparing {} with stream {}",
            dir.display(),
            args.target.stream
        )
    })?;
    let ranges: Vec<serde_json::Value> = report
        .differing_ranges
        .iter()
        .map(|r| {
            serde_json::json!({
                "first_seq": r.first_seq, "last_seq": r.last_seq,
                "local_count": r.local_count, "stream_count": r.stream_count,
                "local_hash": format!("{:016x}", r.local_hash),
                "stream_hash": format!("{:016x}", r.stream_hash),
            })
        })
        .collect();
    println!(
        "{}",
        serde_json::json!({
            "equal": report.equal,
            "local_last_seq": report.local_last_seq,
            "stream_last_evlog_seq": report.stream_last_evlog_seq,
            "local_events": report.local_events,
            "stream_messages": report.stream_messages,
            "ranges": report.ranges,
            "first_difference": report.first_difference,
            "reason": report.reason,
            "differing_ranges": ranges,
        })
    );
    Ok(if report.equal {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn status(dir: &Path, args: StatusArgs) -> Result<ExitCode> {
    let log = Log::open_read_only(dir).with_context(|| format!("reading {}", dir.display()))?;
    let log_last_seq = log.last_seq().unwrap_or(0);
    let consumer_position = log
        .consumers()?
        .into_iter()
        .find(|c| c.name == args.consumer)
        .map(|c| c.position);
    let stream = evlog::nats::stream_status(
        &args.target.server,
        &args.target.stream,
        args.monitor.as_deref(),
    )?;
    println!(
        "{}",
        serde_json::json!({
            "log_last_seq": log_last_seq,
            "stream": args.target.stream,
            "stream_messages": stream.messages,
            "stream_last_seq": stream.last_stream_seq,
            "stream_last_evlog_seq": stream.last_evlog_seq,
            "lag": log_last_seq.saturating_sub(stream.last_evlog_seq),
            "consumer_position": consumer_position,
            "durability": durability_json(&stream.durability),
        })
    );
    Ok(ExitCode::SUCCESS)
}
