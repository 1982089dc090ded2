//! Event sourcing with evlog: an aggregate (a bank account) is rebuilt from
//! its history, and a command is only accepted against the version it was
//! decided on (optimistic concurrency), so two writers cannot both spend
//! the same money.
//!
//! `cargo run --example event_sourcing`

use evlog::{Error, Event, Log, LoggedEvent, Options};

/// The aggregate, as its events left it.
#[derive(Debug, Default)]
struct Account {
    balance_cents: i64,
    /// How many events the account has: the version a command expects.
    version: u64,
}

impl Account {
    /// Applies one event (the fold of `Log::reconstruct`).
    fn apply(mut self, event: &LoggedEvent) -> Account {
        let amount = event
            .payload_as::<serde_json::Value>()
            .ok()
            .and_then(|p| p["amount_cents"].as_i64())
            .unwrap_or(0);
        match event.event_type.as_str() {
            "account.deposited" => self.balance_cents += amount,
            "account.withdrawn" => self.balance_cents -= amount,
            _ => {}
        }
        self.version += 1;
        self
    }

    fn load(log: &Log, id: &str) -> evlog::Result<Account> {
        log.reconstruct(
            "account",
            id,
            i64::MAX - 1,
            Account::default(),
            Account::apply,
        )
    }
}

/// A command: withdraw if the balance allows, as of the version it read.
fn withdraw(log: &Log, id: &str, amount_cents: i64) -> evlog::Result<bool> {
    loop {
        let account = Account::load(log, id)?;
        if account.balance_cents < amount_cents {
            return Ok(false);
        }
        let event = Event::new("account.withdrawn")
            .entity("account", id)
            .expected_version(account.version)
            .json_payload(&serde_json::json!({"amount_cents": amount_cents}))?;
        match log.append(event) {
            Ok(_) => return Ok(true),
            // Another writer got there first: decide again on fresh state.
            Err(Error::VersionConflict { .. }) => continue,
            Err(e) => return Err(e),
        }
    }
}

fn main() -> evlog::Result<()> {
    let log = Log::open_temporary(Options::default())?;
    log.append(
        Event::new("account.deposited")
            .entity("account", "A-1")
            .expected_version(0)
            .json_payload(&serde_json::json!({"amount_cents": 10_000}))?,
    )?;
    // Eight threads try to withdraw 30.00 each from 100.00: exactly three
    // succeed, whatever the interleaving.
    let successes = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..8)
            .map(|_| scope.spawn(|| withdraw(&log, "A-1", 3_000)))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("thread"))
            .collect::<evlog::Result<Vec<bool>>>()
    })?;
    let account = Account::load(&log, "A-1")?;
    println!(
        "{} of 8 withdrawals succeeded; balance {}.{:02}, version {}",
        successes.iter().filter(|&&ok| ok).count(),
        account.balance_cents / 100,
        account.balance_cents % 100,
        account.version
    );
    assert_eq!(account.balance_cents, 1_000);
    for change in log.entity_history("account", "A-1", ..)? {
        let change = change?;
        println!("  #{} {}", change.seq, change.event_type);
    }
    log.close()
}
