//! The demo's retention and archive sections and its closing summary: the
//! rules in force and their dry run, an archive run with its measured
//! compression, an archived event read back, then the run's figures and
//! the commands to try next.
//!
//! Segments are 64 MiB by default, so the demo's few megabytes would all
//! stay in the active segment and there would be nothing to archive. A
//! directory the demo makes itself therefore gets an `evlog.toml` that
//! says so on its first line and sets one retention rule, and the demo
//! opens such a directory (this run and every later one) with segments of
//! [`DEMO_SEGMENT_BYTES_MAX`]. Any other directory keeps the library's
//! defaults, and the demo says when nothing is sealed.

use std::io::Write;
use std::path::Path;
use std::time::Instant;

use anyhow::{Context, Result};
use evlog::{Log, Options, RetentionActionKind, RetentionPlan, RetentionPolicy, RetentionRule};

use super::ProgressBar;

/// Segment size of a directory the demo made: small enough that the
/// default 20 000 events (about 7 MB) fill a dozen segments and the test's
/// 5 000 fill three, so the archive run has sealed segments to work on.
pub const DEMO_SEGMENT_BYTES_MAX: u64 = 512 * 1024;
const _: () = assert!(DEMO_SEGMENT_BYTES_MAX >= evlog::SEGMENT_BYTES_MIN);

/// First line of the `evlog.toml` the demo writes: how a later run knows
/// the directory is the demo's (and may keep its small segments).
const DEMO_CONFIG_MARKER: &str = "# evlog demo:";

/// The configuration the demo writes into a directory it makes. The
/// reference workload's events are dated from 2026-01-01, so its sealed
/// segments are due at once; the rule archives, never deletes.
fn demo_config() -> String {
    format!(
        "\
{DEMO_CONFIG_MARKER} `evlog demo` made this directory. It opens it with segments of
# {} KiB (the library's default is 64 MiB) so that its tour has sealed
# segments to archive. Other commands use the default size. Edit this file as
# you like; once it no longer starts with \"{DEMO_CONFIG_MARKER}\", the demo treats the
# directory as any other.
#
# The retention policy, applied by the log's archiver every 10 minutes and by
# `evlog archive`; `evlog retention --dry-run` shows what it would do now.
# Archiving is lossless: archived events read as live ones do.
[retention]

[[retention.rule]]
name = \"archive-after-30d\"
archive_after = \"30d\"
",
        DEMO_SEGMENT_BYTES_MAX / 1024
    )
}

/// What [`prepare`] found out about the demo's directory.
pub struct DemoDir {
    /// The directory has the demo's `evlog.toml` (this run or an earlier
    /// one made it).
    pub made_by_demo: bool,
    /// The options to open it with.
    pub options: Options,
}

/// Makes the directory when it does not exist or is empty (and writes the
/// demo's `evlog.toml` into it), and says how to open it.
pub fn prepare(dir: &Path) -> Result<DemoDir> {
    let fresh = match std::fs::read_dir(dir) {
        Ok(mut entries) => entries.next().is_none(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => true,
        // Not a directory, or unreadable: the open says what is wrong.
        Err(_) => false,
    };
    let config_path = dir.join(evlog::CONFIG_FILE);
    if fresh {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        // Whole or not at all: a torn file would stop every later open
        // with a configuration error.
        let temporary = dir.join(format!("{}.tmp", evlog::CONFIG_FILE));
        std::fs::write(&temporary, demo_config())
            .and_then(|()| std::fs::rename(&temporary, &config_path))
            .with_context(|| format!("writing {}", config_path.display()))?;
    }
    // Only the first line is compared: a person may edit the rest.
    let made_by_demo = std::fs::read_to_string(&config_path)
        .is_ok_and(|text| text.starts_with(DEMO_CONFIG_MARKER));
    let mut options = Options::default().durability(evlog::Durability::Always);
    if made_by_demo {
        options = options.segment_bytes_max(DEMO_SEGMENT_BYTES_MAX);
    }
    Ok(DemoDir {
        made_by_demo,
        options,
    })
}

/// What the archive run measured, for the summary.
pub struct ArchiveFigures {
    /// Archive bytes over the live bytes they replaced, when this run
    /// archived anything.
    pub compression_ratio: Option<f64>,
}

/// Prints the retention rules in force and their dry run, archives every
/// sealed segment (as `evlog archive --all`), and reads an archived event
/// back, by sequence number and through a query.
pub fn demo_retention_and_archive(
    log: &Log,
    demo_dir: &DemoDir,
    out: &mut impl Write,
) -> Result<ArchiveFigures> {
    let dir = log.dir();
    let config_path = dir.join(evlog::CONFIG_FILE);
    // The policy the log resolved at open: the demo sets none in Options,
    // so it is the file's.
    let policy = evlog::load_config(dir)?.and_then(|config| config.retention);
    match &policy {
        Some(policy) => print_rules(out, policy, &config_path, demo_dir.made_by_demo)?,
        None => writeln!(
            out,
            "retention rules in force: none (no [retention] in {}): every event stays live until `evlog archive --all`",
            config_path.display()
        )?,
    }
    let plan = log.retention_plan()?;
    writeln!(
        out,
        "retention dry run (nothing changes): {}",
        describe_plan(&plan)
    )?;

    let mut bar = ProgressBar::new("archiving", "piece");
    let started = Instant::now();
    let report = log
        .archive_all_sealed_with_progress(|done, total| bar.update(done, total))
        .with_context(|| format!("archiving {}", dir.display()))?;
    let elapsed = started.elapsed();
    bar.finish();
    let mut figures = ArchiveFigures {
        compression_ratio: None,
    };
    if report.segments_archived == 0 {
        writeln!(
            out,
            "archive run (as `evlog archive --all`): no sealed segment to archive: the only live segment is the active one{}",
            if demo_dir.made_by_demo {
                ""
            } else {
                " (this directory was not made by the demo, so its segments have the default size of 64 MiB)"
            }
        )?;
    } else {
        let live_bytes = report.stored_bytes_before;
        let archive_bytes = report.stored_bytes_after;
        let ratio = archive_bytes as f64 / live_bytes.max(1) as f64;
        figures.compression_ratio = Some(ratio);
        let planned = plan
            .actions
            .iter()
            .filter(|a| a.kind == RetentionActionKind::Archive)
            .count() as u64;
        let beyond_plan = report.segments_archived.saturating_sub(planned);
        writeln!(
            out,
            "archive run (as `evlog archive --all`: every sealed segment, whatever the rules; lossless): archived {} pieces{}, {live_bytes} live bytes (segments and their sequence indexes) into {archive_bytes} archive bytes: compression ratio {ratio:.3} (archive/live), in {:.3} s, {:.1} MB/s",
            report.segments_archived,
            if beyond_plan > 0 {
                format!(" ({beyond_plan} that the dry run does not archive yet)")
            } else {
                String::new()
            },
            elapsed.as_secs_f64(),
            live_bytes as f64 / 1e6 / elapsed.as_secs_f64().max(1e-9)
        )?;
    }
    read_back(log, out)?;
    Ok(figures)
}

/// One line per rule: what it matches and what it does.
fn print_rules(
    out: &mut impl Write,
    policy: &RetentionPolicy,
    config_path: &Path,
    made_by_demo: bool,
) -> Result<()> {
    writeln!(
        out,
        "retention rules in force, from {}{}:",
        config_path.display(),
        if made_by_demo {
            " (the demo wrote it when it made this directory)"
        } else {
            ""
        }
    )?;
    if policy.rules().is_empty() {
        writeln!(out, "  no rules: every event stays live")?;
    }
    for rule in policy.rules() {
        writeln!(out, "  {}: {}", rule.name, describe_rule(rule))?;
    }
    if let Some(cap) = policy.size_cap_bytes() {
        writeln!(
            out,
            "  size cap {cap} bytes: past it the oldest unprotected events go"
        )?;
    }
    Ok(())
}

fn describe_rule(rule: &RetentionRule) -> String {
    let priorities = rule.priorities.as_ref().map(|priorities| {
        priorities
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(" ")
    });
    let matches = match (priorities, rule.type_patterns.is_empty()) {
        (None, true) => "every event".to_string(),
        (None, false) => format!("types {}", rule.type_patterns.join(", ")),
        (Some(p), true) => format!("priority {p}"),
        (Some(p), false) => format!("priority {p} of types {}", rule.type_patterns.join(", ")),
    };
    let mut does = Vec::new();
    if let Some(age) = rule.archive_after {
        does.push(format!(
            "archive a sealed segment once its newest such event is {} old",
            evlog::cli_support::format_duration(age)
        ));
    }
    if let Some(age) = rule.delete_after {
        does.push(format!(
            "delete once {} old",
            evlog::cli_support::format_duration(age)
        ));
    }
    if rule.keep_forever {
        does.push("never delete".into());
    }
    if rule.keep_until_consumed {
        does.push("only once every durable consumer has read it".into());
    }
    if rule.keep_latest_per_entity {
        does.push("keep only the latest event of each entity".into());
    }
    if does.is_empty() {
        does.push("keep live".into());
    }
    format!("{matches}; {}", does.join("; "))
}

/// The plan in one line: per kind of action, how many pieces, which
/// sequence numbers, events and bytes, and which rules.
fn describe_plan(plan: &RetentionPlan) -> String {
    let mut parts = Vec::new();
    for (kind, name) in [
        (RetentionActionKind::Archive, "archive"),
        (RetentionActionKind::Compact, "compact"),
        (RetentionActionKind::Delete, "delete"),
    ] {
        let actions: Vec<_> = plan.actions.iter().filter(|a| a.kind == kind).collect();
        if actions.is_empty() {
            parts.push(format!("{name} 0 pieces"));
            continue;
        }
        let first = actions.iter().map(|a| a.piece_first_seq).min().unwrap_or(0);
        let last = actions.iter().map(|a| a.piece_last_seq).max().unwrap_or(0);
        let kept: u64 = actions.iter().map(|a| a.events_kept).sum();
        let dropped: u64 = actions.iter().map(|a| a.events_dropped).sum();
        let bytes_dropped: u64 = actions.iter().map(|a| a.bytes_dropped).sum();
        let mut rules: Vec<&str> = actions.iter().map(|a| a.rule.as_str()).collect();
        rules.sort_unstable();
        rules.dedup();
        let events = if kind == RetentionActionKind::Archive {
            format!("{kept} events")
        } else {
            format!("{dropped} events and {bytes_dropped} bytes dropped, {kept} kept")
        };
        parts.push(format!(
            "{name} {} pieces (seq {first}..={last}, {events}) by rule {}",
            actions.len(),
            rules.join(", ")
        ));
    }
    if !plan.waiting.is_empty() {
        let events: u64 = plan.waiting.iter().map(|w| w.events).sum();
        parts.push(format!(
            "{events} events due but waiting for durable consumers"
        ));
    }
    format!(
        "{}; the pieces' files hold {} bytes now (the active segment's preallocated tail included)",
        parts.join("; "),
        plan.stored_bytes_before
    )
}

/// Reads back an event of the newest archive by its sequence number, and
/// the events of its correlation (or entity) through a query, counting how
/// many of the answers come from archives.
fn read_back(log: &Log, out: &mut impl Write) -> Result<()> {
    if log.archive_count() == 0 {
        return Ok(());
    }
    let archive_dir = log.dir().join("archive");
    // Opened separately from the log: archives are immutable once named,
    // and the footers say which sequence numbers each one holds.
    let archives = evlog::Archive::open(&archive_dir)
        .with_context(|| format!("reading {}", archive_dir.display()))?;
    let infos = archives.info();
    // After `archive --all` every piece but the active segment is an
    // archive, so everything through the last archive's range is archived.
    let archived_through = infos.iter().map(|i| i.range_last_seq).max().unwrap_or(0);
    let Some(newest) = infos
        .iter()
        .filter(|info| info.present_seqs.is_some())
        .max_by_key(|info| info.range_first_seq)
    else {
        return Ok(());
    };
    let Some((first_present, last_present)) = newest.present_seqs else {
        return Ok(());
    };
    // An application event of the newest archive, preferably one with a
    // correlation to query; the log's own bookkeeping (consumers' commits)
    // says little.
    let mut chosen = None;
    for event in log.iter(first_present..=last_present)? {
        let event = event?;
        if event.event_type.starts_with(evlog::BOOKKEEPING_TYPE_PREFIX) {
            continue;
        }
        let has_correlation = event.correlation_id.is_some();
        chosen.get_or_insert(event.seq);
        if has_correlation {
            chosen = Some(event.seq);
            break;
        }
    }
    let seq = chosen.unwrap_or(first_present);
    let event = log.get(seq)?;
    let source = newest
        .path
        .file_name()
        .map_or_else(String::new, |name| name.to_string_lossy().into_owned());
    write!(
        out,
        "an archived event reads back: get({seq}) is {}, from archive/{source}",
        event.event_type
    )?;
    let answer: Vec<u64> = if let Some(correlation) = event.correlation_id {
        write!(out, "; query by correlation {correlation}: ")?;
        log.by_correlation(correlation)?
            .map(|e| e.map(|e| e.seq))
            .collect::<evlog::Result<_>>()?
    } else if let Some(entity) = &event.entity {
        write!(
            out,
            "; query of entity {}/{}: ",
            entity.entity_type, entity.entity_id
        )?;
        log.entity_history(&entity.entity_type, &entity.entity_id, ..)?
            .map(|e| e.map(|e| e.seq))
            .collect::<evlog::Result<_>>()?
    } else {
        writeln!(out)?;
        return Ok(());
    };
    let from_archives = answer.iter().filter(|&&s| s <= archived_through).count();
    writeln!(
        out,
        "{} events, {from_archives} of them from archives",
        answer.len()
    )?;
    Ok(())
}

/// The figures measured in this run and the commands to try next; the
/// sizes are taken after the log is closed, when the active segment no
/// longer carries its preallocated tail.
pub struct Summary<'a> {
    pub dir: &'a Path,
    pub events_appended: u64,
    pub append_events_per_s: f64,
    pub batch_events: usize,
    /// Events the verify section read (present in the log).
    pub events_present: u64,
    pub archive: ArchiveFigures,
    pub last_seq: u64,
}

pub fn demo_summary(summary: &Summary<'_>, out: &mut impl Write) -> Result<()> {
    let dir = summary.dir;
    let segment_bytes = super::dir_bytes(&dir.join("segments"));
    let archive_bytes = super::dir_bytes(&dir.join("archive"));
    let index_bytes = super::dir_bytes(&dir.join("index"));
    let total_bytes = segment_bytes + archive_bytes + index_bytes;
    let events = summary.events_present.max(1) as f64;
    writeln!(out, "summary of what this run measured:")?;
    writeln!(
        out,
        "  append: {:.0} events/s ({} events in durable batches of {}, each acknowledged once on disk)",
        summary.append_events_per_s, summary.events_appended, summary.batch_events
    )?;
    writeln!(
        out,
        "  on disk after close: {:.0} bytes per event ({} events; live segments and their sequence indexes {segment_bytes} bytes, archives {archive_bytes} bytes, secondary indexes {index_bytes} bytes: {total_bytes} bytes)",
        total_bytes as f64 / events,
        summary.events_present
    )?;
    match summary.archive.compression_ratio {
        Some(ratio) => writeln!(
            out,
            "  compression ratio of this run's archive run: {ratio:.3} (archive bytes / live bytes)"
        )?,
        None => writeln!(
            out,
            "  compression ratio: no segment was archived in this run"
        )?,
    }
    writeln!(
        out,
        "try: cargo run --release -- --dir {0} replay --from {1} | head; ... stats; ... tail --type 'validation.*';\n\
         \x20    ... retention --dry-run; ... archive; cargo run --release --bin evlog-dump -- {0} --verify\n\
         (or `cargo install --path .` and run `evlog --dir {0} ...`, `evlog-dump {0} --verify`)",
        dir.display(),
        summary.last_seq.saturating_sub(4).max(1)
    )?;
    Ok(())
}
