//! `evlog check-contracts`: which stored events would violate the
//! contracts of `DIR/evlog.toml` (read-only; works while an application
//! has the log open).

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context, Result};
use evlog::{Contracts, Log};

#[derive(clap::Args)]
pub struct CheckContractsArgs {
    /// One JSON object per violation ({"seq","id","event_type","pattern",
    /// "field","expected","found"}) instead of a line of text.
    #[arg(long)]
    json: bool,
}

/// Prints one line per stored event that violates a contract (the first
/// violation of each event), then a count on stderr. Exit 0 when none
/// does, 1 when some do; errors (a bad evlog.toml, a damaged log) are
/// returned and end in exit 2.
pub fn run(dir: &Path, args: &CheckContractsArgs) -> Result<ExitCode> {
    let config = evlog::load_config(dir)
        .with_context(|| format!("reading the contracts of {}", dir.display()))?;
    let contracts = config.map(|config| config.contracts).unwrap_or_default();
    let contract_count = contracts.len();
    let contracts =
        Contracts::new(contracts).with_context(|| format!("the contracts of {}", dir.display()))?;
    if contracts.is_empty() {
        eprintln!(
            "evlog: no [[contract]] in {}: nothing to check",
            dir.join(evlog::CONFIG_FILE).display()
        );
        return Ok(ExitCode::SUCCESS);
    }
    let view = Log::open_read_only(dir).with_context(|| format!("reading {}", dir.display()))?;
    let mut out = std::io::stdout().lock();
    let mut checked = 0u64;
    let mut violating = 0u64;
    for event in view.iter(..)? {
        let event = event?;
        checked += 1;
        let error = match contracts.check(&event) {
            Ok(()) => continue,
            Err(error) => error,
        };
        violating += 1;
        if !args.json {
            writeln!(out, "seq {}: {error}", event.seq)?;
            continue;
        }
        let line = match &error {
            evlog::Error::ContractViolation {
                event_type,
                pattern,
                field,
                expected,
                found,
            } => serde_json::json!({
                "seq": event.seq,
                "id": event.id,
                "event_type": event_type,
                "pattern": pattern,
                "field": field,
                "expected": expected,
                "found": found,
            }),
            // Not a violation: a failure to check at all.
            _ => return Err(error.into()),
        };
        writeln!(out, "{line}")?;
    }
    out.flush()?;
    eprintln!(
        "evlog: {checked} events checked against {contract_count} contracts: {violating} violate"
    );
    Ok(if violating == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
