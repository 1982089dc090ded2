//! `evlog rules` and `evlog replay --correlation C --dry-run-rules`.

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context, Result};
use evlog::rules::{orchestration, RuleStats, DEPTH_LIMIT_DEFAULT};
use evlog::Uuid;

/// Lists the rules' counts as their engine last stored them.
pub fn list(dir: &Path, as_json: bool) -> Result<ExitCode> {
    let view = crate::open_read_only(&dir.to_path_buf())?;
    let stats = view.rule_stats()?;
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    if as_json {
        for rule in &stats {
            writeln!(out, "{}", serde_json::to_string(rule)?)?;
        }
    } else if stats.is_empty() {
        writeln!(
            out,
            "no rule has run on this log (an application registers rules with Log::rules())"
        )?;
    } else {
        writeln!(
            out,
            "{:<28} {:>10} {:>11} {:>8} {:>8} {:>7} {:<9} {:>12}",
            "rule",
            "position",
            "evaluations",
            "firings",
            "failures",
            "skipped",
            "breaker",
            "depth stops"
        )?;
        for rule in &stats {
            writeln!(out, "{}", table_row(rule))?;
            if let Some(error) = &rule.last_error {
                writeln!(out, "    last error: {error}")?;
            }
        }
    }
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

fn table_row(rule: &RuleStats) -> String {
    let breaker = match rule.breaker {
        evlog::rules::BreakerState::Closed => "closed",
        evlog::rules::BreakerState::Open => "open",
        evlog::rules::BreakerState::HalfOpen => "half-open",
    };
    format!(
        "{:<28} {:>10} {:>11} {:>8} {:>8} {:>7} {:<9} {:>12}{}",
        rule.rule,
        rule.position,
        rule.evaluations,
        rule.firings,
        rule.failures,
        rule.skipped,
        breaker,
        rule.depth_stops,
        if rule.dry_run { "  (dry run)" } else { "" }
    )
}

/// Re-evaluates the rules shipped with evlog over a correlation's events
/// and prints, as JSON lines, what each would do; writes nothing.
pub fn replay_dry_run(dir: &Path, correlation: Uuid) -> Result<ExitCode> {
    let view = crate::open_read_only(&dir.to_path_buf())?;
    let triggers: Vec<_> = view
        .by_correlation(correlation)?
        .collect::<evlog::Result<_>>()
        .with_context(|| format!("reading correlation {correlation}"))?;
    let reports = view.dry_run_rules(&orchestration::all(), &triggers, DEPTH_LIMIT_DEFAULT)?;
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    for report in &reports {
        writeln!(out, "{}", report.to_json())?;
    }
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}
