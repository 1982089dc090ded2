//! `evlog`: the command-line tool over a data directory.
//!
//! Exit codes: 0 success (also when stdout is closed early, so `| head`
//! works); 1 when what was asked for does not exist (an event, an
//! entity's events), the log or a file it reads is damaged (`Corrupt`,
//! whatever the command), `verify` finds a problem, or a conditional line
//! of `append` meets another version of its entity; 2 on any other error
//! (usage, I/O, a lock held by another process).

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use evlog::{Durability, Event, Log, LogReader, Options};

// In a folder of its own: a file directly in src/bin/ would be taken for
// another binary.
#[path = "evlog/contracts_cmd.rs"]
mod contracts_cmd;
#[path = "evlog/demo_archive.rs"]
mod demo_archive;
#[path = "evlog/demo_rules.rs"]
mod demo_rules;
#[path = "evlog/echo.rs"]
mod echo;
#[path = "evlog/metrics_cmd.rs"]
mod metrics_cmd;
#[cfg(feature = "nats")]
#[path = "evlog/nats_cmd.rs"]
mod nats_cmd;
#[path = "evlog/progress.rs"]
mod progress;
#[path = "evlog/rules_cmd.rs"]
mod rules_cmd;

use progress::ProgressBar;

/// Where `evlog` keeps its data when neither `--dir` nor `EVLOG_DIR` says.
const DEFAULT_DATA_DIR: &str = "evlog-data";
/// Most lines `append` groups into one durable batch: enough to amortize
/// the fsync, few enough that acknowledgements stream steadily.
const APPEND_LINES_PER_BATCH_MAX: usize = 1000;
/// Events per durable batch in `demo`, as in benchmark operation A2.
const DEMO_BATCH_EVENTS: usize = 1000;
/// How long `tail` sleeps when the log had nothing new before it looks at
/// the directory again: short enough that a follower sees events about as
/// soon as a person would notice, long enough to cost no measurable CPU.
const TAIL_POLL_INTERVAL_MS: u64 = 50;

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
    /// Print shell completions for evlog (bash, elvish, fish, powershell,
    /// zsh): for example `evlog completions bash > /etc/bash_completion.d/evlog`.
    /// Touches no data directory.
    Completions { shell: clap_complete::Shell },
    /// Print events as JSON lines in sequence order.
    Replay {
        /// First sequence number to print (inclusive; default: the first).
        #[arg(long)]
        from: Option<u64>,
        /// Last sequence number to print (inclusive; default: the last).
        #[arg(long)]
        to: Option<u64>,
        /// Read archive files instead of a data directory: one `.evz` file
        /// or a directory of them (such as a copy of DIR/archive/); nothing
        /// else needs to be present. Deleted events are skipped.
        #[arg(long, value_name = "DIR_OR_FILE")]
        archive: Option<PathBuf>,
        /// Only the events of this correlation (a UUID).
        #[arg(long, value_name = "UUID")]
        correlation: Option<evlog::Uuid>,
        /// With --correlation: instead of the events, print as JSON lines
        /// what the rules shipped with evlog (evlog::rules::orchestration)
        /// would do on each of them, and whether the log already holds
        /// their output. Writes nothing.
        #[arg(long, requires = "correlation")]
        dry_run_rules: bool,
    },
    /// List the automation rules that ran on this log, with their counts
    /// of evaluations, firings, failures and skipped triggers, and their
    /// circuit breaker's state, as their engine last stored them
    /// (DIR/rules/*.json). Read-only.
    Rules {
        /// JSON lines, one per rule, with the fields of DIR/rules/*.json.
        #[arg(long)]
        json: bool,
    },
    /// Print the sequence range and the segment and archive counts as JSON.
    Info,
    /// Make a log that refuses to open because of damage open again: keep
    /// the longest intact prefix, move everything after it to
    /// DIR/lost+found/, and print exactly which sequence numbers and bytes
    /// are dropped.
    Repair {
        /// Only print what would be dropped.
        #[arg(long)]
        dry_run: bool,
        /// One JSON object instead of the lines: {"dry_run":bool,
        /// "cuts":[{"file":..,"offset_start":N,"offset_end":N,
        /// "dropped_seqs":[[first,last],..],"reason":..,"kept_in":PATH|null,
        /// "bytes_not_kept":N}],"left_alone":[{"file":..,"offset":N,"what":..}]}.
        #[arg(long)]
        json: bool,
    },
    /// Append a generated sample workload and show what the log holds.
    Demo {
        /// Number of events to generate.
        #[arg(long, default_value_t = 20_000)]
        events: u64,
    },
    /// Print the events that answer a query as JSON lines (the fields of
    /// `replay`), in sequence order.
    ///
    /// Every condition given must hold, so the keys combine (for example
    /// `--entity task/T-1 --type 'validation.*' --since 2026-01-01T00:00:00Z`).
    /// At least one condition or time bound is required. Times are the
    /// events' own timestamps.
    Query(QueryArgs),
    /// Print the causation chain of an event, its root cause first.
    ///
    /// On a terminal: one indented line per event (seq, type, id, time).
    /// Piped, or with --json: JSON lines with the fields of `replay`.
    /// Exit 1 if the log holds no event with that id.
    Chain {
        /// The id (UUID) of the event.
        event_id: evlog::Uuid,
        /// Print everything the event caused instead, as a tree: the event
        /// first, each event before the ones it caused. In JSON each object
        /// gets a "depth" field (0 for the given event).
        #[arg(long)]
        descendants: bool,
        /// JSON lines even on a terminal.
        #[arg(long)]
        json: bool,
    },
    /// Print the last event of an entity as a JSON object (exit 1 if the
    /// entity has no events).
    Latest {
        /// The entity as TYPE/ID, split at the first '/' (the id may hold
        /// more).
        #[arg(value_name = "TYPE/ID", value_parser = parse_entity)]
        entity: EntityArg,
    },
    /// Count events by type, actor, priority, hour and day.
    ///
    /// Prints a table, or with --json one JSON object:
    /// {"total":N,"by_type":{..},"by_actor":{..},"by_priority":{"P0":n,..},
    /// "by_hour":{"2026-01-01T00:00:00Z":n,..},"by_day":{..}} (hours and
    /// days keyed by their start, UTC). The table is printed also when
    /// standard output is not a terminal: JSON only with --json.
    Stats {
        #[command(flatten)]
        window: WindowArgs,
        /// Only this breakdown (and the total).
        #[arg(long, value_enum)]
        by: Option<Breakdown>,
        /// One JSON object instead of the table.
        #[arg(long)]
        json: bool,
    },
    /// Print the state of an entity at a time as JSON: the "changes" of
    /// its events with timestamps at or before TIME applied in order to
    /// an empty object. Exit 1 if the entity has no event by then.
    At {
        /// The entity as TYPE/ID, split at the first '/'.
        #[arg(value_name = "TYPE/ID", value_parser = parse_entity)]
        entity: EntityArg,
        /// An RFC 3339 time such as 2026-01-01T00:00:00Z (inclusive).
        #[arg(value_name = "TIME", value_parser = parse_time)]
        time: i64,
    },
    /// Check the whole log and its indexes; print {"ok":bool,
    /// "events_checked":N,"index_available":bool,"index_entries_checked":N,
    /// "deleted_events":N,"deletions":[..],"problems":[..]}, where
    /// deleted_events are the holes retention made (each deletion listed
    /// with its range, count, rule and date), not problems. Exit 0 when
    /// sound, 1 on a problem, 2 on an error.
    Verify,
    /// Rebuild the secondary indexes from the log (opens the log for
    /// writing, so not while an application has it open). Shows progress
    /// on a terminal; prints {"reindexed_through":SEQ} at the end.
    Reindex,
    /// Follow the log like `tail -f`: print the events that pass the
    /// filters as JSON lines (the fields of `replay`) as they are
    /// appended, until interrupted or standard output closes (exit 0).
    ///
    /// Only reads (creates, locks and changes nothing), so it runs beside
    /// the application that appends; it looks for new events every
    /// 50 ms. By default it prints only events appended after it started;
    /// --from or --since print history first, then go on with new events
    /// without a gap or a repeat. Filters combine like `query`'s (all must
    /// hold; several --type match when any does). The log's own
    /// bookkeeping events (types `evlog.*`, such as consumers' commits)
    /// are shown only when a --type pattern names them. A closed standard
    /// output is noticed when the next event is printed.
    Tail(TailArgs),
    /// List the legal holds as JSON lines, oldest first:
    /// {"correlation_id":UUID,..} or {"entity":{"type":..,"id":..},..}, with
    /// "reason" and "placed_at" (RFC 3339). Events under a hold are never
    /// deleted by retention. Only reads; prints nothing when there is none.
    ///
    /// `holds add` and `holds release` change the list; they take the
    /// directory's lock, so they refuse while an application has the log
    /// open (place holds through its `Log` then).
    Holds {
        #[command(subcommand)]
        change: Option<HoldsChange>,
    },
    /// List the durable consumers as JSON lines sorted by name:
    /// {"name":..,"position":N,"lag":N}, where position is the last seq the
    /// consumer committed and lag the number of events after it. Only
    /// reads; prints nothing when there is no consumer.
    Consumers,
    /// Print the log's figures: events, files, index, archive and
    /// consumer lags, disk usage by kind, what the last open recovered.
    /// A table, or with --json one JSON object, or with --prometheus the
    /// Prometheus text format (metrics `evlog_*`). Only reads (works while
    /// an application has the log open); what the writer thread counts
    /// (appends, fsync latency, commit groups) is in that application's
    /// `Log::metrics`.
    Metrics(metrics_cmd::MetricsArgs),
    /// Run the archiver once now (opens the log for writing, so not while
    /// an application has it open: use `Log::archive_now` there). Applies
    /// the retention policy of DIR/evlog.toml: archives the sealed segments
    /// it says are cold, compacts or deletes what it says must go. Prints
    /// one JSON object: {"segments_archived":N,"pieces_compacted":N,
    /// "events_deleted":N,"stored_bytes_before":N,"stored_bytes_after":N,
    /// "actions":[{"action":..,"first_seq":..,"last_seq":..,"rule":..},..]}.
    Archive {
        /// Archive every sealed segment, whatever the policy says
        /// (archiving loses nothing).
        #[arg(long)]
        all: bool,
    },
    /// Show what the retention policy of DIR/evlog.toml would archive,
    /// compact and delete now, with counts, bytes and the rule for each;
    /// with --dry-run nothing changes and only reads are done (works while
    /// an application has the log open). Without --dry-run, does it (as
    /// `archive`).
    Retention {
        /// Only list the actions.
        #[arg(long)]
        dry_run: bool,
        /// One JSON object instead of the table.
        #[arg(long)]
        json: bool,
    },
    /// Check every stored event against the contracts of DIR/evlog.toml
    /// ([[contract]] tables); prints "seq N: <violation>" for each event
    /// that violates one (its first violation). Only reads DIR. Exit 0 when
    /// none does, 1 when some do, 2 on an error.
    CheckContracts(contracts_cmd::CheckContractsArgs),
    /// Serve the log's queries over HTTP, with a web page at / and a live
    /// tail (Server-Sent Events), from a read-only view: works while an
    /// application has the log open. Prints the page's address on stdout,
    /// then serves until killed. Binds 127.0.0.1 (this machine only)
    /// unless --listen says otherwise; then protect it with --token-file.
    #[cfg(feature = "http")]
    Serve {
        /// Address and port to listen on (port 0: any free port).
        #[arg(long, value_name = "ADDR:PORT", default_value = "127.0.0.1:8080")]
        listen: std::net::SocketAddr,
        /// A file holding a bearer token (surrounding whitespace ignored)
        /// that every /api/ route and /metrics then require, as
        /// `Authorization: Bearer <token>` or `?access_token=<token>`.
        #[arg(long, value_name = "FILE")]
        token_file: Option<PathBuf>,
    },
    /// Mirror the log to NATS JetStream, import a stream back, compare
    /// them, show the lag (built with the `nats` feature).
    #[cfg(feature = "nats")]
    #[command(subcommand)]
    Nats(nats_cmd::NatsCommand),
}

#[derive(Subcommand)]
enum HoldsChange {
    /// Place a hold; prints {"placed":true} (false when the target was
    /// already held: the first hold keeps its reason).
    Add {
        #[command(flatten)]
        target: HoldTargetArgs,
        /// Why (a case or ticket number): at most 1024 bytes.
        #[arg(long)]
        reason: String,
    },
    /// Release a hold; prints {"released":true} (false when there was
    /// none on that target).
    Release {
        #[command(flatten)]
        target: HoldTargetArgs,
    },
}

/// Exactly one of a correlation id or an entity.
#[derive(clap::Args)]
#[group(required = true, multiple = false)]
struct HoldTargetArgs {
    /// Hold every event of this correlation id.
    #[arg(long, value_name = "UUID")]
    correlation: Option<evlog::Uuid>,
    /// Hold every event of this entity, as TYPE/ID (split at the first '/').
    #[arg(long, value_name = "TYPE/ID", value_parser = parse_entity)]
    entity: Option<EntityArg>,
}

impl HoldTargetArgs {
    fn target(&self) -> Result<evlog::HoldTarget> {
        match (&self.correlation, &self.entity) {
            (Some(id), None) => Ok(evlog::HoldTarget::Correlation(*id)),
            (None, Some(entity)) => Ok(evlog::HoldTarget::Entity {
                entity_type: entity.entity_type.clone(),
                entity_id: entity.entity_id.clone(),
            }),
            // clap's group makes this unreachable; say so if it is not.
            _ => anyhow::bail!("give exactly one of --correlation or --entity"),
        }
    }
}

#[derive(clap::Args)]
struct TailArgs {
    /// Events whose type matches this dotted pattern (`*` is one segment,
    /// or as the last one or more); may be repeated: any of them.
    #[arg(long = "type", value_name = "PATTERN", value_parser = echo::parse_pattern)]
    event_types: Vec<String>,
    /// Events of this entity, as TYPE/ID (split at the first '/').
    #[arg(long, value_name = "TYPE/ID", value_parser = parse_entity)]
    entity: Option<EntityArg>,
    /// Events of this correlation id (UUID).
    #[arg(long, value_name = "UUID")]
    correlation: Option<evlog::Uuid>,
    /// Events at least this important: P0 (most) to P3 (P1: P0 and P1).
    #[arg(long, value_name = "P0..P3", value_parser = parse_priority)]
    min_priority: Option<evlog::Priority>,
    /// Start at this sequence number (history from there, then new events).
    #[arg(long, value_name = "SEQ", conflicts_with = "since")]
    from: Option<u64>,
    /// Start at the first event (in sequence order) whose timestamp is at
    /// or after this RFC 3339 time; every matching event after it is
    /// printed, whatever its own timestamp.
    #[arg(long, value_name = "TIME", value_parser = parse_time)]
    since: Option<i64>,
    /// Print what matches up to the current end of the log and exit.
    #[arg(long)]
    no_follow: bool,
}

impl TailArgs {
    /// The library's filter, so that `tail` selects exactly what a
    /// subscription with the same conditions delivers.
    fn filter(&self) -> evlog::Filter {
        let mut filter = evlog::Filter::all();
        for pattern in &self.event_types {
            filter = filter.event_type(pattern.clone());
        }
        if let Some(entity) = &self.entity {
            filter = filter.entity(entity.entity_type.clone(), entity.entity_id.clone());
        }
        if let Some(id) = self.correlation {
            filter = filter.correlation(id);
        }
        if let Some(priority) = self.min_priority {
            filter = filter.min_priority(priority);
        }
        filter
    }
}

#[derive(clap::Args)]
#[command(group(
    clap::ArgGroup::new("condition")
        .required(true)
        .multiple(true)
        .args(["correlation", "entity", "session", "actor", "event_type", "since", "until"])
))]
struct QueryArgs {
    /// Events of this correlation id (UUID).
    #[arg(long)]
    correlation: Option<evlog::Uuid>,
    /// Events of this entity, as TYPE/ID (split at the first '/').
    #[arg(long, value_name = "TYPE/ID", value_parser = parse_entity)]
    entity: Option<EntityArg>,
    /// Events of this session.
    #[arg(long)]
    session: Option<String>,
    /// Events of this actor.
    #[arg(long)]
    actor: Option<String>,
    /// Events whose type matches a dotted pattern: `*` stands for one
    /// segment, or as the last segment for one or more (`validation.*`).
    #[arg(long = "type", value_name = "PATTERN", value_parser = echo::parse_pattern)]
    event_type: Option<String>,
    #[command(flatten)]
    window: WindowArgs,
    /// At most N events (the first N in sequence order).
    #[arg(long, value_name = "N")]
    limit: Option<usize>,
}

#[derive(clap::Args)]
struct WindowArgs {
    /// Only events at or after this RFC 3339 time (e.g. 2026-01-01T00:00:00Z).
    #[arg(long, value_name = "TIME", value_parser = parse_time)]
    since: Option<i64>,
    /// Only events before this RFC 3339 time (exclusive).
    #[arg(long, value_name = "TIME", value_parser = parse_time)]
    until: Option<i64>,
}

impl WindowArgs {
    fn range(&self) -> (std::ops::Bound<i64>, std::ops::Bound<i64>) {
        use std::ops::Bound;
        (
            self.since.map_or(Bound::Unbounded, Bound::Included),
            self.until.map_or(Bound::Unbounded, Bound::Excluded),
        )
    }
}

/// An entity named on the command line as TYPE/ID.
#[derive(Clone)]
struct EntityArg {
    entity_type: String,
    entity_id: String,
}

impl std::fmt::Display for EntityArg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.entity_type, self.entity_id)
    }
}

/// Splits at the first '/', so that ids may themselves hold slashes.
fn parse_entity(text: &str) -> std::result::Result<EntityArg, String> {
    match text.split_once('/') {
        Some((entity_type, entity_id)) => Ok(EntityArg {
            entity_type: entity_type.to_string(),
            entity_id: entity_id.to_string(),
        }),
        // clap quotes the value itself: not again here.
        None => Err("not TYPE/ID (for example task/T-1): it has no '/'".into()),
    }
}

/// RFC 3339 only, as `append` takes timestamps: a bare number is refused
/// rather than guessed at (seconds? microseconds?).
fn parse_time(text: &str) -> std::result::Result<i64, String> {
    evlog::json::parse_timestamp(text)
        .map_err(|_| "not an RFC 3339 time such as 2026-01-01T00:00:00Z".to_string())
}

fn parse_priority(text: &str) -> std::result::Result<evlog::Priority, String> {
    text.parse().map_err(|e: evlog::Error| e.to_string())
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Breakdown {
    Type,
    Actor,
    Priority,
    Hour,
    Day,
}

fn main() -> ExitCode {
    let cli = match echo::parse_args::<Cli>() {
        Ok(cli) => cli,
        Err(code) => return code,
    };
    match run(cli) {
        Ok(code) => code,
        Err(error) => {
            if is_broken_pipe(&error) {
                return ExitCode::SUCCESS;
            }
            let args: Vec<std::ffi::OsString> = std::env::args_os().skip(1).collect();
            eprintln!(
                "evlog: {}",
                echo::shorten_echoed(&format!("{error:#}"), &args)
            );
            if is_version_conflict(&error) || is_not_found_or_damage(&error) {
                // Not a failure of the tool: the input's expectation no
                // longer holds (as `get` of a missing event), or the data
                // is damaged, which a script must tell from a usage error.
                return ExitCode::from(1);
            }
            ExitCode::from(2)
        }
    }
}

/// Exit 1 rather than 2: what was asked for is not there, or the bytes
/// read are not what the format says.
fn is_not_found_or_damage(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| {
        cause.is::<DamagedLog>()
            || matches!(
                cause.downcast_ref::<evlog::Error>(),
                Some(
                    evlog::Error::Corrupt { .. }
                        | evlog::Error::NotFound(_)
                        | evlog::Error::Deleted { .. }
                        | evlog::Error::UnknownEventId(_)
                )
            )
    })
}

/// Everything readable was printed, but the open found damaged segments
/// (and warned about each): exit 1, as for damage met while reading.
#[derive(Debug)]
struct DamagedLog;

impl std::fmt::Display for DamagedLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "the log has damaged segments (see the warnings above)")
    }
}

impl std::error::Error for DamagedLog {}

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
    open_with(dir, Options::default().durability(Durability::Always))
}

fn open_with(dir: &PathBuf, options: Options) -> Result<Log> {
    let log = Log::open(dir, options).with_context(|| format!("opening {}", dir.display()))?;
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

fn repair(dir: &Path, dry_run: bool, json: bool) -> Result<ExitCode> {
    let mode = if dry_run {
        evlog::RepairMode::DryRun
    } else {
        evlog::RepairMode::Apply
    };
    let report =
        evlog::repair(dir, mode).with_context(|| format!("repairing {}", dir.display()))?;
    if json {
        let cuts: Vec<serde_json::Value> = report
            .cuts
            .iter()
            .map(|cut| {
                let (kept_in, bytes_not_kept) = match &cut.lost_found {
                    Some(copy) => (
                        copy.path.as_ref().map(|p| p.display().to_string()),
                        copy.bytes_not_kept,
                    ),
                    None => (None, 0),
                };
                serde_json::json!({
                    "file": cut.file.display().to_string(),
                    "offset_start": cut.offset_start,
                    "offset_end": cut.offset_end,
                    "dropped_seqs": cut.dropped_seqs,
                    "reason": cut.reason,
                    "kept_in": kept_in,
                    "bytes_not_kept": bytes_not_kept,
                })
            })
            .collect();
        let left_alone: Vec<serde_json::Value> = report
            .left_alone
            .iter()
            .map(|(file, offset, what)| {
                serde_json::json!({"file": file.display().to_string(), "offset": offset, "what": what})
            })
            .collect();
        let line = serde_json::json!({"dry_run": dry_run, "cuts": cuts, "left_alone": left_alone});
        writeln!(std::io::stdout().lock(), "{line}")?;
        return Ok(ExitCode::SUCCESS);
    }
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
        Command::Rules { json } => rules_cmd::list(&cli.dir, json),
        Command::Replay {
            from,
            to,
            archive,
            correlation,
            dry_run_rules,
        } => {
            if let (Some(from), Some(to)) = (from, to) {
                if from > to {
                    anyhow::bail!("--from {from} is after --to {to} (both are inclusive)");
                }
            }
            if let Some(correlation) = correlation {
                if archive.is_some() {
                    anyhow::bail!("--correlation reads a data directory, not --archive");
                }
                if dry_run_rules {
                    return rules_cmd::replay_dry_run(&cli.dir, correlation);
                }
                let log = open_read_only(&cli.dir)?;
                let range = from.unwrap_or(0)..=to.unwrap_or(u64::MAX);
                print_events(
                    log.by_correlation(correlation)?
                        .filter(|e| e.as_ref().map_or(true, |e| range.contains(&e.seq))),
                )?;
                return Ok(ExitCode::SUCCESS);
            }
            if let Some(path) = archive {
                let archive = evlog::Archive::open(&path)
                    .with_context(|| format!("opening archive {}", path.display()))?;
                let range = from.unwrap_or(0)..=to.unwrap_or(u64::MAX);
                print_events(archive.iter(range)?)?;
                return Ok(ExitCode::SUCCESS);
            }
            let log = open_read_only(&cli.dir)?;
            let mut out = std::io::BufWriter::new(std::io::stdout().lock());
            let start = from.unwrap_or(0);
            let end = to.unwrap_or(u64::MAX);
            // A bar only when the events go to a file or a pipe: on a
            // terminal it would be drawn between them.
            let mut bar = ProgressBar::unless_stdout_is_terminal("replaying", "event");
            let first_shown = start.max(log.first_seq().unwrap_or(1));
            let total = end
                .min(log.last_seq().unwrap_or(0))
                .saturating_add(1)
                .saturating_sub(first_shown);
            for (done, event) in (1u64..).zip(log.iter(start..=end)?) {
                writeln!(out, "{}", evlog::json::event_to_json(&event?))?;
                if done % REPLAY_PROGRESS_EVENTS == 0 {
                    bar.update(done, total);
                }
            }
            out.flush()?;
            bar.update(total, total);
            bar.finish();
            if !log.open_report().damaged_segments.is_empty() {
                // Every event in range was printed, but the files are not
                // what the format requires: say so in the exit code too.
                return Err(DamagedLog.into());
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Completions { shell } => {
            let mut command = <Cli as clap::CommandFactory>::command();
            let mut out = Vec::new();
            clap_complete::generate(shell, &mut command, "evlog", &mut out);
            std::io::stdout().lock().write_all(&out)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Info => {
            let log = open_read_only(&cli.dir)?;
            let info = serde_json::json!({
                "dir": cli.dir.display().to_string(),
                "first_seq": log.first_seq(),
                "last_seq": log.last_seq(),
                "segments": log.segment_count(),
                "archives": log.archive_count(),
                "closed_cleanly": log.open_report().closed_cleanly,
                // What this read-only view could use: while the writer's
                // process holds the indexes, nothing (its queries scan).
                "index": {
                    "available": log.index_status().available,
                    "indexed_through": log.index_status().indexed_through,
                    "unavailable_because": log.index_status().unavailable_because,
                },
            });
            println!("{info}");
            Ok(ExitCode::SUCCESS)
        }
        Command::Repair { dry_run, json } => repair(&cli.dir, dry_run, json),
        Command::Demo { events } => demo(&cli.dir, events),
        Command::Query(args) => query(&cli.dir, &args),
        Command::Chain {
            event_id,
            descendants,
            json,
        } => chain(&cli.dir, event_id, descendants, json),
        Command::Latest { entity } => latest(&cli.dir, &entity),
        Command::Stats { window, by, json } => stats(&cli.dir, &window, by, json),
        Command::At { entity, time } => state_at(&cli.dir, &entity, time),
        Command::Verify => verify(&cli.dir),
        Command::Reindex => reindex(&cli.dir),
        Command::Tail(args) => tail(&cli.dir, &args),
        Command::Consumers => consumers(&cli.dir),
        Command::Metrics(args) => metrics_cmd::run(&open_read_only(&cli.dir)?, &args),
        Command::Holds { change } => holds(&cli.dir, change.as_ref()),
        Command::Archive { all } => archive(&cli.dir, all),
        Command::Retention { dry_run, json } => retention(&cli.dir, dry_run, json),
        Command::CheckContracts(args) => contracts_cmd::run(&cli.dir, &args),
        #[cfg(feature = "http")]
        Command::Serve { listen, token_file } => serve(&cli.dir, listen, token_file.as_deref()),
        #[cfg(feature = "nats")]
        Command::Nats(command) => nats_cmd::run(&cli.dir, command),
    }
}

#[cfg(feature = "http")]
fn serve(
    dir: &PathBuf,
    listen: std::net::SocketAddr,
    token_file: Option<&Path>,
) -> Result<ExitCode> {
    let mut options = evlog::http::ServeOptions::default();
    if let Some(file) = token_file {
        let token = std::fs::read_to_string(file)
            .with_context(|| format!("reading the token file {}", file.display()))?;
        let token = token.trim();
        anyhow::ensure!(
            !token.is_empty(),
            "the token file {} is empty",
            file.display()
        );
        options = options.bearer_token(token);
    }
    let view = std::sync::Arc::new(open_read_only(dir)?);
    let server = evlog::http::serve(view, listen, options)
        .with_context(|| format!("listening on {listen}"))?;
    let addr = server.local_addr();
    println!("http://{addr}/");
    std::io::stdout().flush()?;
    let reach = if addr.ip().is_loopback() {
        "only this machine can connect"
    } else if token_file.is_some() {
        "other machines can connect; the API requires the token"
    } else {
        "WARNING: other machines can connect and nothing protects it (see --token-file)"
    };
    eprintln!(
        "evlog: serving {} read-only on http://{addr}/ ({reach})",
        dir.display()
    );
    server.wait()?;
    Ok(ExitCode::SUCCESS)
}

/// The first seq `tail` examines, as `evlog::Start` places a subscription:
/// after the visible end by default, at `--from` (not before the log's
/// first event), or at the first event stamped at or after `--since`.
fn tail_start_seq(log: &LogReader, args: &TailArgs) -> Result<u64> {
    let first = log.first_seq().unwrap_or(1);
    let end = log.last_seq().unwrap_or(0);
    if let Some(from) = args.from {
        return Ok(from.max(first));
    }
    let Some(since_us) = args.since else {
        return Ok(end + 1);
    };
    let first_at_or_after = log
        .query(&evlog::Query::all().since(since_us).limit(1))?
        .next()
        .transpose()?
        .map(|event| event.seq)
        // The indexes may know events this view does not show yet.
        .filter(|&seq| seq <= end);
    Ok(first_at_or_after.unwrap_or(end + 1))
}

fn tail(dir: &PathBuf, args: &TailArgs) -> Result<ExitCode> {
    // `--since` asks the indexes where to start: say so when they cannot
    // answer and the start comes from a scan.
    let log = if args.since.is_some() {
        open_for_queries(dir)?
    } else {
        open_read_only(dir)?
    };
    let filter = args.filter();
    let mut next_seq = tail_start_seq(&log, args)?;
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let poll_interval = std::time::Duration::from_millis(TAIL_POLL_INTERVAL_MS);
    loop {
        let end = log.last_seq().unwrap_or(0);
        if next_seq <= end {
            for event in log.iter(next_seq..=end)? {
                let event = event?;
                next_seq = event.seq + 1;
                if filter.matches(&event) {
                    writeln!(out, "{}", evlog::json::event_to_json(&event))?;
                }
            }
            // Per batch, not per event: a pipe reader sees each batch as
            // soon as it is read, without a write call for every line.
            out.flush()?;
        }
        if args.no_follow {
            break;
        }
        if log.refresh()? == 0 {
            std::thread::sleep(poll_interval);
        }
    }
    if !log.open_report().damaged_segments.is_empty() {
        // As `replay`: everything readable was printed, but the files are
        // not what the format requires.
        return Err(DamagedLog.into());
    }
    Ok(ExitCode::SUCCESS)
}

fn consumers(dir: &PathBuf) -> Result<ExitCode> {
    let log = open_read_only(dir)?;
    let mut infos = log.consumers()?;
    // By name, not by file name: "a-b.pos" sorts before "a.pos", but "a"
    // before "a-b".
    infos.sort_by(|a, b| a.name.cmp(&b.name));
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    for info in infos {
        let line = serde_json::json!({
            "name": info.name,
            "position": info.position,
            "lag": info.lag,
        });
        writeln!(out, "{line}")?;
    }
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

fn holds(dir: &Path, change: Option<&HoldsChange>) -> Result<ExitCode> {
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    match change {
        None => {
            let holds =
                evlog::holds_in_dir(dir).with_context(|| format!("reading {}", dir.display()))?;
            for hold in holds {
                let mut line = match &hold.target {
                    evlog::HoldTarget::Correlation(id) => serde_json::json!({"correlation_id": id}),
                    evlog::HoldTarget::Entity {
                        entity_type,
                        entity_id,
                    } => serde_json::json!({"entity": {"type": entity_type, "id": entity_id}}),
                };
                line["reason"] = hold.reason.into();
                line["placed_at"] = evlog::json::format_timestamp(hold.placed_at_us).into();
                writeln!(out, "{line}")?;
            }
        }
        Some(HoldsChange::Add { target, reason }) => {
            let placed_at_us = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |since| {
                    i64::try_from(since.as_micros()).unwrap_or(i64::MAX)
                });
            let hold = evlog::Hold {
                target: target.target()?,
                reason: reason.clone(),
                placed_at_us,
            };
            let placed = evlog::place_hold_in_dir(dir, hold)
                .with_context(|| format!("placing a hold in {}", dir.display()))?;
            writeln!(out, "{}", serde_json::json!({ "placed": placed }))?;
        }
        Some(HoldsChange::Release { target }) => {
            let released = evlog::release_hold_in_dir(dir, &target.target()?)
                .with_context(|| format!("releasing a hold in {}", dir.display()))?;
            writeln!(
                out,
                "{}",
                serde_json::json!({ "released": released.is_some() })
            )?;
        }
    }
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

fn archive(dir: &PathBuf, all: bool) -> Result<ExitCode> {
    let log = open(dir)?;
    let mut bar = ProgressBar::new("archiving", "piece");
    let report = if all {
        log.archive_all_sealed_with_progress(|done, total| bar.update(done, total))
    } else {
        log.archive_now_with_progress(|done, total| bar.update(done, total))
    }
    .with_context(|| format!("archiving {}", dir.display()))?;
    bar.finish();
    log.close()?;
    let actions: Vec<serde_json::Value> = report
        .actions
        .iter()
        .map(|a| {
            serde_json::json!({
                "action": a.kind,
                "first_seq": a.piece_first_seq,
                "last_seq": a.piece_last_seq,
                "rule": a.rule,
                "events_dropped": a.events_dropped,
            })
        })
        .collect();
    let line = serde_json::json!({
        "segments_archived": report.segments_archived,
        "pieces_compacted": report.pieces_compacted,
        "events_deleted": report.events_deleted,
        "stored_bytes_before": report.stored_bytes_before,
        "stored_bytes_after": report.stored_bytes_after,
        "actions": actions,
    });
    writeln!(std::io::stdout().lock(), "{line}")?;
    Ok(ExitCode::SUCCESS)
}

fn retention(dir: &PathBuf, dry_run: bool, json: bool) -> Result<ExitCode> {
    if !dry_run {
        return archive(dir, false);
    }
    let view = open_read_only(dir)?;
    let plan = view
        .retention_plan(None)
        .with_context(|| format!("planning retention for {}", dir.display()))?;
    let text = if json {
        evlog::render_dry_run_json(&plan)
    } else {
        evlog::render_dry_run(&plan)
    };
    let mut out = std::io::stdout().lock();
    write!(out, "{text}")?;
    if !text.ends_with('\n') {
        writeln!(out)?;
    }
    Ok(ExitCode::SUCCESS)
}

/// [`open_read_only`] for the commands that query: says once on stderr
/// when the answer will come from a scan of the log instead of the
/// indexes (typically because the application that has the log open
/// holds the index store's lock), so a slow answer is not a mystery.
fn open_for_queries(dir: &PathBuf) -> Result<LogReader> {
    let view = open_read_only(dir)?;
    let status = view.index_status();
    if !status.available {
        let reason = status
            .unavailable_because
            .unwrap_or_else(|| "no reason given".into());
        // The library's reason already ends by saying what it does about it.
        let reason = reason
            .strip_suffix("; queries scan the log")
            .unwrap_or(&reason);
        eprintln!(
            "evlog: note: the indexes cannot be used ({reason}); the answer comes from a scan of the log (correct, slower)"
        );
    }
    Ok(view)
}

/// Prints events as JSON lines, the same objects as `replay`.
fn print_events(events: impl Iterator<Item = evlog::Result<evlog::LoggedEvent>>) -> Result<u64> {
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let mut printed = 0u64;
    for event in events {
        writeln!(out, "{}", evlog::json::event_to_json(&event?))?;
        printed += 1;
    }
    out.flush()?;
    Ok(printed)
}

fn query(dir: &PathBuf, args: &QueryArgs) -> Result<ExitCode> {
    let mut query = evlog::Query::all();
    if let Some(id) = args.correlation {
        query = query.and_correlation(id);
    }
    if let Some(entity) = &args.entity {
        query = query.and_entity(entity.entity_type.clone(), entity.entity_id.clone());
    }
    if let Some(session) = &args.session {
        query = query.and_session(session.clone());
    }
    if let Some(actor) = &args.actor {
        query = query.and_actor(actor.clone());
    }
    if let Some(pattern) = &args.event_type {
        query = query.event_type(pattern.clone());
    }
    query = query.during(args.window.range());
    if let Some(limit) = args.limit {
        query = query.limit(limit);
    }
    let log = open_for_queries(dir)?;
    print_events(log.query(&query)?)?;
    Ok(ExitCode::SUCCESS)
}

/// `{...}` with `"depth":N` added as its last field. The event's JSON is
/// kept as text, not parsed and rebuilt, so payloads stay exactly as
/// `replay` prints them.
fn with_depth(event_json: &str, depth: usize) -> String {
    match event_json.strip_suffix('}') {
        Some(open) => format!("{open},\"depth\":{depth}}}"),
        // Not an object (cannot happen for an event): leave it whole.
        None => event_json.to_string(),
    }
}

/// Deepest indentation of the human view of `chain`, in levels of two
/// spaces: workload chains run a hundred events deep.
const INDENT_LEVELS_MAX: usize = 30;

/// One line of the human view of a chain or tree.
fn describe_event(event: &evlog::LoggedEvent) -> String {
    format!(
        "#{} {} {} {}",
        event.seq,
        event.event_type,
        event.id,
        evlog::json::format_timestamp(event.timestamp_us)
    )
}

fn chain(dir: &PathBuf, event_id: evlog::Uuid, descendants: bool, json: bool) -> Result<ExitCode> {
    use std::io::IsTerminal;
    let as_json = json || !std::io::stdout().is_terminal();
    let log = open_for_queries(dir)?;
    // Both walks give (depth, event), parents before what they caused; a
    // causation chain is a tree in which each event has one child.
    let events: Vec<(usize, evlog::LoggedEvent)> = if descendants {
        match log.descendants(event_id) {
            Ok(tree) => tree
                .walk()
                .into_iter()
                .map(|(depth, event)| (depth, event.clone()))
                .collect(),
            Err(evlog::Error::UnknownEventId(_)) => return unknown_event(event_id),
            Err(e) => return Err(e.into()),
        }
    } else {
        match log.causation_chain(event_id) {
            Ok(chain) => chain.into_iter().enumerate().collect(),
            Err(evlog::Error::UnknownEventId(_)) => return unknown_event(event_id),
            Err(e) => return Err(e.into()),
        }
    };
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    for (depth, event) in &events {
        if !as_json {
            // Past a screenful of indentation, the depth is written out.
            let indent = "  ".repeat((*depth).min(INDENT_LEVELS_MAX));
            let deeper = if *depth > INDENT_LEVELS_MAX {
                format!("[depth {depth}] ")
            } else {
                String::new()
            };
            writeln!(out, "{indent}{deeper}{}", describe_event(event))?;
        } else if descendants {
            let event_json = evlog::json::event_to_json(event);
            writeln!(out, "{}", with_depth(event_json.get(), *depth))?;
        } else {
            writeln!(out, "{}", evlog::json::event_to_json(event))?;
        }
    }
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

fn unknown_event(event_id: evlog::Uuid) -> Result<ExitCode> {
    eprintln!("evlog: no event with id {event_id}");
    Ok(ExitCode::from(1))
}

fn latest(dir: &PathBuf, entity: &EntityArg) -> Result<ExitCode> {
    let log = open_for_queries(dir)?;
    match log.latest(&entity.entity_type, &entity.entity_id)? {
        Some(event) => {
            let mut out = std::io::stdout().lock();
            writeln!(out, "{}", evlog::json::event_to_json(&event))?;
            Ok(ExitCode::SUCCESS)
        }
        None => {
            eprintln!("evlog: entity {entity} has no events");
            Ok(ExitCode::from(1))
        }
    }
}

/// An hour's or day's start as RFC 3339 without the fraction, which is
/// always zero there (`2026-01-01T00:00:00Z`).
fn period_key(start_us: i64) -> String {
    let text = evlog::json::format_timestamp(start_us);
    match text.strip_suffix(".000000Z") {
        Some(whole_seconds) => format!("{whole_seconds}Z"),
        None => text,
    }
}

/// The breakdowns of `stats`, in the order printed, with their JSON keys.
const BREAKDOWNS: [(Breakdown, &str); 5] = [
    (Breakdown::Type, "by_type"),
    (Breakdown::Actor, "by_actor"),
    (Breakdown::Priority, "by_priority"),
    (Breakdown::Hour, "by_hour"),
    (Breakdown::Day, "by_day"),
];

/// One breakdown of `stats` as (name, count) in key order: priorities as
/// "P0".., hours and days by their start.
fn breakdown(stats: &evlog::Stats, which: Breakdown) -> Vec<(String, u64)> {
    let named = |map: &std::collections::BTreeMap<String, u64>| {
        map.iter().map(|(k, n)| (k.clone(), *n)).collect()
    };
    let periods = |map: &std::collections::BTreeMap<i64, u64>| {
        map.iter().map(|(t, n)| (period_key(*t), *n)).collect()
    };
    match which {
        Breakdown::Type => named(&stats.by_type),
        Breakdown::Actor => named(&stats.by_actor),
        Breakdown::Priority => stats
            .by_priority
            .iter()
            .map(|(p, n)| (p.to_string(), *n))
            .collect(),
        Breakdown::Hour => periods(&stats.by_hour),
        Breakdown::Day => periods(&stats.by_day),
    }
}

fn stats(
    dir: &PathBuf,
    window: &WindowArgs,
    by: Option<Breakdown>,
    json: bool,
) -> Result<ExitCode> {
    let log = open_for_queries(dir)?;
    let stats = log.stats(window.range())?;
    let shown = BREAKDOWNS
        .iter()
        .filter(|(which, _)| by.is_none_or(|by| by == *which))
        .map(|&(which, key)| (key, breakdown(&stats, which)));
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    if json {
        let mut object = serde_json::Map::new();
        object.insert("total".into(), stats.total.into());
        for (key, counts) in shown {
            let counts = counts.into_iter().map(|(k, n)| (k, n.into())).collect();
            object.insert(key.into(), serde_json::Value::Object(counts));
        }
        writeln!(out, "{}", serde_json::Value::Object(object))?;
    } else {
        writeln!(out, "total {}", stats.total)?;
        for (key, counts) in shown {
            writeln!(out, "{key}:")?;
            let width = counts.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
            for (name, count) in counts {
                writeln!(out, "  {name:<width$}  {count:>10}")?;
            }
        }
    }
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

fn state_at(dir: &PathBuf, entity: &EntityArg, at_us: i64) -> Result<ExitCode> {
    let log = open_for_queries(dir)?;
    // `state_at`'s fold, counting the events too: an entity with none by
    // then is "not found", not an empty state.
    let (state, events) = log.reconstruct(
        &entity.entity_type,
        &entity.entity_id,
        at_us,
        (serde_json::Value::Object(serde_json::Map::new()), 0u64),
        |(state, events), event| (evlog::apply_changes(state, event), events + 1),
    )?;
    if events == 0 {
        eprintln!(
            "evlog: entity {entity} has no events at or before {}",
            evlog::json::format_timestamp(at_us)
        );
        return Ok(ExitCode::from(1));
    }
    let mut out = std::io::stdout().lock();
    writeln!(out, "{state}")?;
    Ok(ExitCode::SUCCESS)
}

fn verify(dir: &PathBuf) -> Result<ExitCode> {
    let log = open_for_queries(dir)?;
    let mut bar = ProgressBar::new("verifying", "check");
    let report = log.verify_with_progress(|done, total| bar.update(done, total))?;
    bar.finish();
    let mut problems = report.problems.clone();
    // Damage that the open itself found (and warned about) is a problem
    // even where reading the events did not run into it.
    for (file, offset, what) in &log.open_report().damaged_segments {
        problems.push(format!(
            "damaged sealed segment {} at byte offset {offset}: {what}",
            file.display()
        ));
    }
    let ok = problems.is_empty();
    let printed = serde_json::json!({
        "ok": ok,
        "events_checked": report.events_checked,
        "index_available": report.index_available,
        "index_entries_checked": report.index_entries_checked,
        "deleted_events": report.deleted_events,
        "deletions": report.deletions,
        "problems": problems,
    });
    let mut out = std::io::stdout().lock();
    writeln!(out, "{printed}")?;
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// Events `replay` prints between two looks at its progress bar: a
/// redraw per event would cost more than printing it.
const REPLAY_PROGRESS_EVENTS: u64 = 4096;

fn reindex(dir: &PathBuf) -> Result<ExitCode> {
    let log = open(dir)?;
    let mut bar = ProgressBar::new("reindexing", "seq");
    let through = log
        .reindex_with_progress(|done_seqs, total_seqs| bar.update(done_seqs, total_seqs))
        .with_context(|| format!("reindexing {}", dir.display()))?;
    bar.finish();
    log.close()?;
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "{}",
        serde_json::json!({ "reindexed_through": through })
    )?;
    Ok(ExitCode::SUCCESS)
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
    let demo_dir = demo_archive::prepare(dir)?;
    let log = open_with(dir, demo_dir.options.clone())?;
    // Written through a handle, not `println!`, so that a closed pipe
    // (`evlog demo | head`) ends the demo quietly instead of panicking.
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "evlog: an embedded, durable event log. Appends are group-committed and acknowledged once on disk;\n\
         the log is indexed in the background and answers queries, subscriptions and checks. A tour:"
    )?;
    let before = log.last_seq().unwrap_or(0);
    // A live subscriber, started before the appends: it must see every
    // matching event exactly once, while they are being written.
    let delivered = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let subscriber = {
        let delivered = std::sync::Arc::clone(&delivered);
        log.subscribe_with(
            "demo",
            evlog::Filter::all().event_type("validation.*"),
            evlog::Start::End,
            move |_| {
                delivered.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            },
        )?
    };
    let started = std::time::Instant::now();
    // A log that already holds events continues with a workload of another
    // seed, so a second run appends new events, never the same ids again.
    let mut config = evlog::workload::WorkloadConfig::new(count);
    config.seed = config.seed.wrapping_add(before);
    let workload = evlog::workload::Workload::new(config);
    let mut batch = Vec::with_capacity(DEMO_BATCH_EVENTS);
    let mut validations = 0u64;
    let mut bar = ProgressBar::new("appending", "event");
    let mut appended = 0u64;
    for generated in workload {
        validations += u64::from(generated.event_type.starts_with("validation."));
        batch.push(generated.event());
        if batch.len() == DEMO_BATCH_EVENTS {
            log.append_batch(&batch)?;
            appended += batch.len() as u64;
            bar.update(appended, count);
            batch.clear();
        }
    }
    log.append_batch(&batch)?;
    bar.update(count, count);
    let elapsed = started.elapsed().as_secs_f64().max(1e-9);
    bar.finish();
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
    let index_started = std::time::Instant::now();
    let indexed = matches!(
        log.wait_for_index(last, DEMO_WAIT),
        evlog::WaitOutcome::Reached(_)
    );
    writeln!(
        out,
        "secondary indexes {} {:.0} ms after the last append (queries never wait: they scan what is not indexed yet)",
        if indexed { "current" } else { "still catching up" },
        index_started.elapsed().as_secs_f64() * 1000.0
    )?;
    let deadline = std::time::Instant::now() + DEMO_WAIT;
    while delivered.load(std::sync::atomic::Ordering::Relaxed) < validations
        && std::time::Instant::now() < deadline
    {
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    subscriber.unsubscribe()?;
    writeln!(
        out,
        "a live subscriber to validation.* received {} of the {validations} matching events, in order, while they were appended",
        delivered.load(std::sync::atomic::Ordering::Relaxed)
    )?;
    if last > before {
        demo_queries(&log, &mut out, last)?;
    }
    demo_rules::demo_rules(&log, &mut out)?;
    let archive = demo_archive::demo_retention_and_archive(&log, &demo_dir, &mut out)?;
    let mut bar = ProgressBar::new("verifying", "check");
    let report = log.verify_with_progress(|done, total| bar.update(done, total))?;
    bar.finish();
    writeln!(
        out,
        "verify: {} events, {} index entries checked: {}",
        report.events_checked,
        report.index_entries_checked,
        if report.is_ok() {
            "sound".to_string()
        } else {
            format!(
                "{} problem(s), first: {}",
                report.problems.len(),
                report.problems[0]
            )
        }
    )?;
    let last_seq = log.last_seq().unwrap_or(0);
    // The summary measures the files once the log is closed, without the
    // active segment's preallocated tail.
    log.close()?;
    demo_archive::demo_summary(
        &demo_archive::Summary {
            dir,
            events_appended: last - before,
            append_events_per_s: (last - before) as f64 / elapsed,
            batch_events: DEMO_BATCH_EVENTS,
            events_present: report.events_checked,
            archive,
            last_seq,
        },
        &mut out,
    )?;
    Ok(ExitCode::SUCCESS)
}

/// How long the demo waits for the indexer or its subscriber.
const DEMO_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

/// The demo's query section: a correlation, a causation tree, an entity's
/// history and past state, stats, each in a few lines.
fn demo_queries(log: &Log, out: &mut impl Write, last: u64) -> Result<()> {
    let last_event = log.get(last)?;
    if let Some(correlation) = last_event.correlation_id {
        let events: Vec<_> = log
            .by_correlation(correlation)?
            .collect::<evlog::Result<_>>()?;
        writeln!(
            out,
            "correlation {correlation}: {} events, from {} to {}",
            events.len(),
            events.first().map_or("-", |e| e.event_type.as_str()),
            events.last().map_or("-", |e| e.event_type.as_str())
        )?;
        if let Some(root) = events.first() {
            let tree = log.descendants(root.id)?;
            writeln!(
                out,
                "what its first event caused ({} events; the first levels):",
                tree.len()
            )?;
            for (depth, event) in tree.walk().into_iter().take(4) {
                writeln!(
                    out,
                    "  {}#{} {}",
                    "  ".repeat(depth),
                    event.seq,
                    event.event_type
                )?;
            }
        }
    }
    if let Some(entity) = &last_event.entity {
        let history = log.history(&entity.entity_type, &entity.entity_id)?;
        let first_us = log
            .entity_history(&entity.entity_type, &entity.entity_id, ..)?
            .next()
            .transpose()?
            .map_or(last_event.timestamp_us, |e| e.timestamp_us);
        let middle_us = first_us + (last_event.timestamp_us - first_us) / 2;
        writeln!(
            out,
            "entity {}/{}: {} field changes; its state at {}: {}",
            entity.entity_type,
            entity.entity_id,
            history.len(),
            evlog::json::format_timestamp(middle_us),
            log.state_at(&entity.entity_type, &entity.entity_id, middle_us)?
        )?;
    }
    let stats = log.stats(..)?;
    let top = |counts: &std::collections::BTreeMap<String, u64>| {
        let mut sorted: Vec<_> = counts.iter().collect();
        sorted.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
        sorted
            .into_iter()
            .take(3)
            .map(|(name, count)| format!("{name} {count}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    writeln!(
        out,
        "stats of all {} events: top types {}; top actors {}",
        stats.total,
        top(&stats.by_type),
        top(&stats.by_actor)
    )?;
    Ok(())
}

/// Bytes of the files under `dir` (0 when it is missing).
fn dir_bytes(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|entry| match entry.file_type() {
            Ok(kind) if kind.is_dir() => dir_bytes(&entry.path()),
            _ => entry.metadata().map_or(0, |m| m.len()),
        })
        .sum()
}
