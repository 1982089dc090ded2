//! The demo's automation section: the shipped orchestration rules react to
//! a small sprint appended for the purpose.

use std::io::Write;

use anyhow::Result;
use evlog::rules::orchestration;
use evlog::{Event, Log, Query, Uuid};
use serde_json::json;

/// How long the demo waits for the rules engine.
const RULES_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

fn change(field: &str, before: serde_json::Value, after: &str) -> serde_json::Value {
    json!({"changes": {field: {"before": before, "after": after}}})
}

/// Registers the orchestration rules (they resume where the last run
/// stopped), appends a sprint whose tasks get blocked, raised to P0 and
/// completed, and prints what the rules appended and why.
pub fn demo_rules(log: &Log, out: &mut impl Write) -> Result<()> {
    for rule in orchestration::all() {
        log.rules().register(rule)?;
    }
    // Ids unique to this run, so a second demo makes a new sprint.
    let run = log.last_seq().unwrap_or(0);
    let sprint = format!("S-demo-{run}");
    let tasks: Vec<String> = (1..=3).map(|n| format!("T-demo-{run}-{n}")).collect();
    let correlation = Uuid::now_v7();
    let task_event = |event_type: &str, task: &str, payload: serde_json::Value| {
        Event::new(event_type)
            .entity("task", task.to_string())
            .metadata("link.sprint", sprint.clone())
            .correlation_id(correlation)
            .json_payload(&payload)
    };
    let mut events = vec![Event::new("orchestration.sprint.status_changed")
        .entity("sprint", sprint.clone())
        .correlation_id(correlation)
        .json_payload(&change("status", json!("planned"), "active"))?];
    for task in &tasks {
        events.push(task_event(
            "orchestration.task.created",
            task,
            change("status", serde_json::Value::Null, "todo"),
        )?);
    }
    events.push(task_event(
        "orchestration.task.status_changed",
        &tasks[1],
        change("status", json!("todo"), "blocked"),
    )?);
    events.push(task_event(
        "orchestration.task.priority_changed",
        &tasks[2],
        change("priority", json!("P2"), "P0"),
    )?);
    log.append_batch(&events)?;
    // One completion per append, as an application would report them.
    for task in &tasks {
        log.append(task_event(
            "orchestration.task.status_changed",
            task,
            change("status", json!("todo"), "completed"),
        )?)?;
    }
    let last = log.last_seq().unwrap_or(0);
    if !log.rules().wait_for(last, RULES_WAIT) {
        writeln!(
            out,
            "automation rules: still evaluating after {RULES_WAIT:?}"
        )?;
        return Ok(());
    }
    writeln!(
        out,
        "automation rules ({}): on sprint {sprint} and its 3 tasks they appended, each caused by the event named:",
        orchestration::all()
            .iter()
            .map(|r| r.name().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    )?;
    for event in log.query(&Query::correlation(correlation))? {
        let event = event?;
        let Some(rule) = event.metadata.get("evlog.rule") else {
            continue;
        };
        let cause = event
            .causation_id
            .and_then(|id| log.find_by_id(id).ok().flatten())
            .map_or_else(String::new, |c| format!("#{} {}", c.seq, c.event_type));
        writeln!(
            out,
            "  #{} {} by {rule}, from {cause}",
            event.seq, event.event_type
        )?;
    }
    Ok(())
}
