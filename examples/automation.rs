//! Automation rules: the four orchestration rules shipped with evlog, and
//! a rule of your own, on a sprint of three tasks.
//!
//! `cargo run --example automation`

use std::time::Duration;

use evlog::rules::orchestration;
use evlog::{Event, Log, Options, Query, Rule, Trigger, Uuid};
use serde_json::json;

fn status(task: &str, before: &str, after: &str, correlation: Uuid) -> evlog::Result<Event> {
    Event::new("orchestration.task.status_changed")
        .entity("task", task)
        .metadata("link.sprint", "S-1")
        .correlation_id(correlation)
        .json_payload(&json!({"changes": {"status": {"before": before, "after": after}}}))
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let log = Log::open_temporary(Options::default())?;
    for rule in orchestration::all() {
        log.rules().register(rule)?;
    }
    // A rule of your own: every completed task is counted on its sprint.
    log.rules().register(Rule::new(
        "count-completions",
        Trigger::on("orchestration.task.status_changed").when_changed_to("status", "completed"),
        |context| {
            let tasks = context.linked_states("sprint", "S-1", "task")?;
            let done = tasks
                .values()
                .filter(|t| t["status"] == "completed")
                .count();
            Ok(vec![context
                .event("metrics.sprint.progress")
                .entity("sprint-progress", "S-1")
                .json_payload(
                    &json!({"completed": done, "of": tasks.len()}),
                )?])
        },
    ))?;

    let correlation = Uuid::now_v7();
    log.append(
        Event::new("orchestration.sprint.status_changed")
            .entity("sprint", "S-1")
            .correlation_id(correlation)
            .json_payload(
                &json!({"changes": {"status": {"before": "planned", "after": "active"}}}),
            )?,
    )?;
    for task in ["T-1", "T-2", "T-3"] {
        log.append(
            Event::new("orchestration.task.created")
                .entity("task", task)
                .metadata("link.sprint", "S-1")
                .correlation_id(correlation)
                .json_payload(&json!({"changes": {"status": {"before": null, "after": "todo"}}}))?,
        )?;
    }
    log.append(status("T-2", "todo", "blocked", correlation)?)?;
    for task in ["T-1", "T-2", "T-3"] {
        log.append(status(task, "todo", "completed", correlation)?)?;
    }

    let last = log.last_seq().unwrap_or(0);
    if !log.rules().wait_for(last, Duration::from_secs(10)) {
        return Err("the rules did not catch up in 10 s".into());
    }
    println!("what the rules appended, with what caused it:");
    for event in log.query(&Query::correlation(correlation))? {
        let event = event?;
        if let Some(rule) = event.metadata.get("evlog.rule") {
            let cause = event
                .causation_id
                .and_then(|id| log.find_by_id(id).ok().flatten())
                .map(|cause| format!("#{} {}", cause.seq, cause.event_type))
                .unwrap_or_default();
            println!(
                "  #{} {:<42} by {:<26} from {cause}",
                event.seq, event.event_type, rule
            );
        }
    }
    println!("rules:");
    for stats in log.rules().list() {
        println!(
            "  {:<26} evaluations {:>2}  firings {:>2}  failures {}  breaker {:?}",
            stats.rule, stats.evaluations, stats.firings, stats.failures, stats.breaker
        );
    }
    log.close()?;
    Ok(())
}
