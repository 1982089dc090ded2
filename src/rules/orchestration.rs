//! The four rules of the orchestration applications this log serves,
//! shipped as tested examples, on events of these shapes (tasks name their
//! sprint with the metadata entry `link.sprint`):
//!
//! | type | entity | payload |
//! |---|---|---|
//! | `orchestration.sprint.created` | `sprint`/S | anything |
//! | `orchestration.task.created` | `task`/T, `link.sprint` = S | anything |
//! | `orchestration.task.status_changed` | `task`/T, `link.sprint` = S | `{"changes": {"status": {"before": .., "after": ..}}}` |
//! | `orchestration.task.blocked` | `task`/T | `{"reason": ..}` (optional) |
//! | `orchestration.task.priority_changed` | `task`/T | `{"changes": {"priority": {"before": .., "after": "P0"}}}` |
//! | `orchestration.sprint.status_changed` | `sprint`/S | `{"changes": {"status": {"before": .., "after": ..}}}` |
//!
//! The `evlog` command line knows these rules (`replay --dry-run-rules`).

use serde_json::json;

use super::{changed_to, Rule, RuleContext, RuleError, Trigger};
use crate::event::{Event, LoggedEvent, Priority};

/// Name of [`sprint_completion`].
pub const SPRINT_COMPLETION: &str = "sprint-completion";
/// Name of [`blocked_notification`].
pub const BLOCKED_NOTIFICATION: &str = "task-blocked-notification";
/// Name of [`p0_alert`].
pub const P0_ALERT: &str = "task-p0-alert";
/// Name of [`session_on_sprint_start`].
pub const SESSION_ON_SPRINT_START: &str = "sprint-session-start";

/// The four rules.
pub fn all() -> Vec<Rule> {
    vec![
        sprint_completion(),
        blocked_notification(),
        p0_alert(),
        session_on_sprint_start(),
    ]
}

fn entity_id(event: &LoggedEvent) -> Option<&str> {
    event.entity.as_ref().map(|e| e.entity_id.as_str())
}

fn sprint_of(context: &RuleContext<'_>) -> Result<Option<String>, RuleError> {
    if let Some(sprint) = context.trigger().metadata.get("link.sprint") {
        return Ok(Some(sprint.clone()));
    }
    // A task event that does not name its sprint: the task's latest event
    // that did.
    let Some(task) = entity_id(context.trigger()) else {
        return Ok(None);
    };
    let history = context.query(&crate::Query::entity("task", task))?;
    Ok(history
        .iter()
        .rev()
        .find_map(|event| event.metadata.get("link.sprint").cloned()))
}

/// When every task of a sprint is completed, sets the sprint to
/// completed (once: not when it already is).
pub fn sprint_completion() -> Rule {
    Rule::new(
        SPRINT_COMPLETION,
        Trigger::on("orchestration.task.status_changed").when_changed_to("status", "completed"),
        |context| {
            let Some(sprint) = sprint_of(context)? else {
                return Ok(Vec::new());
            };
            let tasks = context.linked_states("sprint", &sprint, "task")?;
            let all_completed = !tasks.is_empty()
                && tasks
                    .values()
                    .all(|state| state.get("status").and_then(|s| s.as_str()) == Some("completed"));
            if !all_completed {
                return Ok(Vec::new());
            }
            let sprint_state = context.state("sprint", &sprint)?;
            let status = sprint_state
                .get("status")
                .cloned()
                .unwrap_or(serde_json::Value::Null);
            if status == "completed" {
                return Ok(Vec::new());
            }
            Ok(vec![context
                .event("orchestration.sprint.status_changed")
                .entity("sprint", sprint.clone())
                .json_payload(&json!({
                    "changes": {"status": {"before": status, "after": "completed"}},
                    "reason": format!("all {} tasks completed", tasks.len()),
                }))?])
        },
    )
}

/// When a task becomes blocked, emits a notification.
pub fn blocked_notification() -> Rule {
    Rule::new(
        BLOCKED_NOTIFICATION,
        Trigger::on("orchestration.task.blocked")
            .or_on("orchestration.task.status_changed")
            .when(|event| {
                event.event_type == "orchestration.task.blocked"
                    || changed_to(event, "status", &json!("blocked"))
            }),
        |context| {
            let trigger = context.trigger();
            let reason = trigger
                .payload_as::<serde_json::Value>()
                .ok()
                .and_then(|p| p.get("reason").cloned())
                .unwrap_or(serde_json::Value::Null);
            let mut event = context
                .event("orchestration.notification.task_blocked")
                .json_payload(&json!({
                    "task": entity_id(trigger),
                    "reason": reason,
                }))?;
            if let Some(task) = entity_id(trigger) {
                event = event.entity("task", task.to_string());
            }
            Ok(vec![event])
        },
    )
}

/// When a task's priority becomes P0, emits an alert (itself P0).
pub fn p0_alert() -> Rule {
    Rule::new(
        P0_ALERT,
        Trigger::on("orchestration.task.priority_changed").when_changed_to("priority", "P0"),
        |context| {
            let trigger = context.trigger();
            let mut event: Event = context
                .event("orchestration.alert.p0_task")
                .priority(Priority::P0)
                .json_payload(&json!({"task": entity_id(trigger)}))?;
            if let Some(task) = entity_id(trigger) {
                event = event.entity("task", task.to_string());
            }
            Ok(vec![event])
        },
    )
}

/// When a sprint becomes active, emits a session-initialisation event.
pub fn session_on_sprint_start() -> Rule {
    Rule::new(
        SESSION_ON_SPRINT_START,
        Trigger::on("orchestration.sprint.status_changed").when_changed_to("status", "active"),
        |context| {
            let trigger = context.trigger();
            let Some(sprint) = entity_id(trigger) else {
                return Ok(Vec::new());
            };
            let session = format!("sprint-{sprint}");
            Ok(vec![context
                .event("orchestration.session.started")
                .entity("session", session.clone())
                .session(session)
                .json_payload(&json!({"sprint": sprint}))?])
        },
    )
}
