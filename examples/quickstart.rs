//! The first ten minutes with evlog: append events, read them back, ask
//! the log a few questions.
//!
//! `cargo run --example quickstart`

use evlog::{Event, Log, Options, Priority, Query, Uuid};

fn main() -> evlog::Result<()> {
    // A log in a temporary directory, removed on close; use `Log::open(dir,
    // ...)` for one that stays.
    let log = Log::open_temporary(Options::default())?;

    // One request of the application: a correlation id ties its events
    // together, causation ids say which event led to which.
    let request = Uuid::now_v7();
    let created = log.append(
        Event::new("task.created")
            .correlation_id(request)
            .entity("task", "T-1")
            .actor("user-42")
            .json_payload(
                &serde_json::json!({"changes": {"status": {"before": null, "after": "pending"}}}),
            )?,
    )?;
    let created_id = log.get(created)?.id;
    log.append(
        Event::new("task.status_changed")
            .correlation_id(request)
            .causation_id(created_id)
            .entity("task", "T-1")
            .actor("agent-7")
            .priority(Priority::P1)
            .json_payload(
                &serde_json::json!({"changes": {"status": {"before": "pending", "after": "done"}}}),
            )?,
    )?;
    // Appends from many threads share one fsync; a batch is atomic.
    log.append_batch(&[
        Event::new("validation.schema.passed").correlation_id(request),
        Event::new("audit.access.granted").actor("user-42"),
    ])?;

    println!(
        "the log holds seq {:?}..={:?}",
        log.first_seq(),
        log.last_seq()
    );
    for event in log.iter(..)? {
        let event = event?;
        println!("  #{} {} by {:?}", event.seq, event.event_type, event.actor);
    }
    println!(
        "events of the request: {}",
        log.by_correlation(request)?.count()
    );
    println!(
        "task T-1 now: {}",
        log.state_at("task", "T-1", i64::MAX - 1)?
    );
    let user_events = log
        .query(&Query::actor("user-42").limit(10))?
        .collect::<evlog::Result<Vec<_>>>()?;
    println!("user-42 did {} things", user_events.len());
    let stats = log.stats(..)?;
    println!("by type: {:?}", stats.by_type);
    log.close()
}
