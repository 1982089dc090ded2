//! Reacting to events: a live monitor on a handler thread, and a durable
//! consumer that writes derived events exactly once, committing its
//! position in the same atomic batch.
//!
//! `cargo run --example subscriber`

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use evlog::{Event, Filter, Log, Options, Start};

fn main() -> evlog::Result<()> {
    let log = Log::open_temporary(Options::default())?;

    // A monitor of failures, on its own thread: history first, then live.
    let failures = Arc::new(AtomicU64::new(0));
    let monitor = {
        let failures = Arc::clone(&failures);
        log.subscribe_with(
            "failure-monitor",
            Filter::all()
                .event_type("*.error.*")
                .event_type("validation.*.failed"),
            Start::Beginning,
            move |event| {
                failures.fetch_add(1, Ordering::Relaxed);
                println!("monitor: #{} {}", event.seq, event.event_type);
            },
        )?
    };

    for i in 0..5 {
        log.append(Event::new("order.placed").entity("order", format!("O-{i}")))?;
    }
    log.append(Event::new("db.error.timeout"))?;
    log.append(Event::new("validation.schema.failed"))?;

    // A durable consumer: billing. Each order gets exactly one invoice,
    // even if this process is killed between any two steps, because the
    // invoice and the consumer's position go into the log together.
    let mut billing = log.consumer("billing", Filter::all().event_type("order.*"))?;
    while let Some(order) = billing.next_timeout(Duration::from_millis(100))? {
        let invoice = Event::new("invoice.created")
            .causation_id(order.id)
            .entity("invoice", format!("I-{}", order.seq));
        billing.append_batch_and_commit(&log, &[invoice], order.seq)?;
    }
    // Nothing left to handle: a commit moves the position past the events
    // the filter skipped (its own invoices among them).
    billing.commit()?;
    for info in log.consumers()? {
        println!(
            "consumer {}: position {}, lag {}",
            info.name, info.position, info.lag
        );
    }

    // Let the monitor see the two failures, then stop it.
    while failures.load(Ordering::Relaxed) < 2 {
        std::thread::sleep(Duration::from_millis(1));
    }
    monitor.unsubscribe()?;
    println!("invoices: {}", log.by_type("invoice.*", ..)?.count());
    log.close()
}
