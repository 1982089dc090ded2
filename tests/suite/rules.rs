//! Automation rules: the four shipped orchestration rules end to end,
//! exactly-once across restarts and SIGKILL, the depth limit, the circuit
//! breaker, dry runs that write nothing, and the `rules` and
//! `replay --dry-run-rules` commands.

use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use evlog::rules::{
    orchestration, BreakerPolicy, BreakerState, DryRunOutcome, RuleStart, DEPTH_EXCEEDED_TYPE,
};
use evlog::{Event, Log, LoggedEvent, Options, Query, Rule, Trigger, Uuid};
use serde_json::json;

use crate::common::{assert_unchanged, run_cli, said, tempdir, text, tree, Rng};

const WAIT: Duration = Duration::from_secs(20);

fn open(dir: &Path) -> Log {
    Log::open(dir, Options::default()).expect("open")
}

fn of_type(log: &Log, pattern: &str) -> Vec<LoggedEvent> {
    log.query(&Query::all().event_type(pattern))
        .expect("query")
        .map(|e| e.expect("event"))
        .collect()
}

fn wait_rules(log: &Log) {
    let last = log.last_seq().unwrap_or(0);
    assert!(
        log.rules().wait_for(last, WAIT),
        "rules did not catch up to {last}: {:?}",
        log.rules().list()
    );
}

fn sprint_created(correlation: Uuid, sprint: &str) -> Event {
    Event::new("orchestration.sprint.created")
        .entity("sprint", sprint)
        .correlation_id(correlation)
}

fn task_created(correlation: Uuid, sprint: &str, task: &str) -> Event {
    Event::new("orchestration.task.created")
        .entity("task", task)
        .metadata("link.sprint", sprint)
        .correlation_id(correlation)
        .json_payload(&json!({"changes": {"status": {"before": null, "after": "todo"}}}))
        .expect("payload")
}

fn task_status(correlation: Uuid, sprint: &str, task: &str, before: &str, after: &str) -> Event {
    Event::new("orchestration.task.status_changed")
        .entity("task", task)
        .metadata("link.sprint", sprint)
        .correlation_id(correlation)
        .json_payload(&json!({"changes": {"status": {"before": before, "after": after}}}))
        .expect("payload")
}

fn sprint_completions(log: &Log, sprint: &str) -> Vec<LoggedEvent> {
    of_type(log, "orchestration.sprint.status_changed")
        .into_iter()
        .filter(|e| e.entity.as_ref().is_some_and(|en| en.entity_id == sprint))
        .filter(|e| {
            e.payload_as::<serde_json::Value>().expect("json")["changes"]["status"]["after"]
                == "completed"
        })
        .collect()
}

#[test]
fn sprint_rule_completes_the_sprint_exactly_once_with_causation_and_metadata() {
    let dir = tempdir();
    let log = open(dir.path());
    for rule in orchestration::all() {
        log.rules().register(rule).expect("register");
    }
    let correlation = Uuid::now_v7();
    log.append(sprint_created(correlation, "S-1"))
        .expect("append");
    for task in ["T-1", "T-2", "T-3"] {
        log.append(task_created(correlation, "S-1", task))
            .expect("append");
    }
    let mut last_trigger = 0;
    for (index, task) in ["T-1", "T-2", "T-3"].iter().enumerate() {
        last_trigger = log
            .append(task_status(correlation, "S-1", task, "todo", "completed"))
            .expect("append");
        wait_rules(&log);
        let done = sprint_completions(&log, "S-1");
        assert_eq!(
            done.len(),
            usize::from(index == 2),
            "after completing {task}: {done:?}"
        );
    }
    // A task completed again (a retry of the application) fires nothing more.
    log.append(task_status(
        correlation,
        "S-1",
        "T-3",
        "completed",
        "completed",
    ))
    .expect("append");
    wait_rules(&log);
    let done = sprint_completions(&log, "S-1");
    assert_eq!(done.len(), 1);
    let output = &done[0];
    let trigger = log.get(last_trigger).expect("trigger");
    assert_eq!(output.causation_id, Some(trigger.id));
    assert_eq!(output.correlation_id, Some(correlation));
    assert_eq!(
        output.metadata.get("evlog.rule").map(String::as_str),
        Some(orchestration::SPRINT_COMPLETION)
    );
    assert_eq!(
        output.metadata.get("evlog.rule.depth").map(String::as_str),
        Some("1")
    );
    assert_eq!(
        output.metadata.get("evlog.rule.trigger_seq"),
        Some(&last_trigger.to_string())
    );
    let expected_id = Uuid::new_v5(
        &evlog::rules::RULE_ID_NAMESPACE,
        format!("{}/{}/0", orchestration::SPRINT_COMPLETION, trigger.id).as_bytes(),
    );
    assert_eq!(output.id, expected_id, "deterministic id");
    let stats = log.rules().list();
    let sprint = stats
        .iter()
        .find(|s| s.rule == orchestration::SPRINT_COMPLETION)
        .expect("stats");
    // The retry changed nothing ("completed" to "completed"): no trigger.
    assert_eq!(
        (sprint.evaluations, sprint.firings, sprint.failures),
        (3, 1, 0),
        "{sprint:?}"
    );
    log.close().expect("close");
}

#[test]
fn the_other_shipped_rules_fire_on_their_triggers() {
    let dir = tempdir();
    let log = open(dir.path());
    for rule in orchestration::all() {
        log.rules().register(rule).expect("register");
    }
    let correlation = Uuid::now_v7();
    log.append(task_status(correlation, "S-1", "T-1", "todo", "blocked"))
        .expect("append");
    log.append(
        Event::new("orchestration.task.blocked")
            .entity("task", "T-2")
            .json_payload(&json!({"reason": "waiting for review"}))
            .expect("payload"),
    )
    .expect("append");
    log.append(
        Event::new("orchestration.task.priority_changed")
            .entity("task", "T-3")
            .json_payload(&json!({"changes": {"priority": {"before": "P2", "after": "P0"}}}))
            .expect("payload"),
    )
    .expect("append");
    log.append(
        Event::new("orchestration.task.priority_changed")
            .entity("task", "T-4")
            .json_payload(&json!({"changes": {"priority": {"before": "P0", "after": "P1"}}}))
            .expect("payload"),
    )
    .expect("append");
    log.append(
        Event::new("orchestration.sprint.status_changed")
            .entity("sprint", "S-9")
            .json_payload(&json!({"changes": {"status": {"before": "planned", "after": "active"}}}))
            .expect("payload"),
    )
    .expect("append");
    wait_rules(&log);
    let notifications = of_type(&log, "orchestration.notification.task_blocked");
    let tasks: Vec<_> = notifications
        .iter()
        .map(|e| e.entity.as_ref().expect("entity").entity_id.clone())
        .collect();
    assert_eq!(tasks, ["T-1", "T-2"]);
    assert_eq!(notifications[0].correlation_id, Some(correlation));
    assert_eq!(
        notifications[1]
            .payload_as::<serde_json::Value>()
            .expect("json")["reason"],
        "waiting for review"
    );
    let alerts = of_type(&log, "orchestration.alert.p0_task");
    assert_eq!(alerts.len(), 1, "only the change to P0 alerts");
    assert_eq!(alerts[0].entity.as_ref().expect("entity").entity_id, "T-3");
    assert_eq!(alerts[0].priority, evlog::Priority::P0);
    let sessions = of_type(&log, "orchestration.session.started");
    assert_eq!(sessions.len(), 1);
    assert_eq!(sessions[0].session.as_deref(), Some("sprint-S-9"));
    log.close().expect("close");
}

#[test]
fn positions_survive_restarts_so_nothing_fires_twice_and_nothing_is_missed() {
    let dir = tempdir();
    let correlation = Uuid::now_v7();
    {
        let log = open(dir.path());
        log.rules()
            .register(orchestration::p0_alert())
            .expect("register");
        for task in ["A", "B"] {
            log.append(
                Event::new("orchestration.task.priority_changed")
                    .entity("task", task)
                    .correlation_id(correlation)
                    .json_payload(
                        &json!({"changes": {"priority": {"before": "P3", "after": "P0"}}}),
                    )
                    .expect("payload"),
            )
            .expect("append");
        }
        wait_rules(&log);
        log.close().expect("close");
    }
    {
        // Appended while no rule runs: evaluated at the next registration.
        let log = open(dir.path());
        log.append(
            Event::new("orchestration.task.priority_changed")
                .entity("task", "C")
                .json_payload(&json!({"changes": {"priority": {"before": "P3", "after": "P0"}}}))
                .expect("payload"),
        )
        .expect("append");
        log.close().expect("close");
    }
    let log = open(dir.path());
    log.rules()
        .register(orchestration::p0_alert())
        .expect("register");
    wait_rules(&log);
    let alerted: Vec<_> = of_type(&log, "orchestration.alert.p0_task")
        .iter()
        .map(|e| e.entity.as_ref().expect("entity").entity_id.clone())
        .collect();
    assert_eq!(alerted, ["A", "B", "C"]);
    let stats = evlog::Log::open_read_only(dir.path())
        .expect("view")
        .rule_stats()
        .expect("stats");
    log.close().expect("close");
    let stats = evlog::Log::open_read_only(dir.path())
        .expect("view")
        .rule_stats()
        .expect("stats after close")
        .into_iter()
        .chain(stats)
        .find(|s| s.rule == orchestration::P0_ALERT)
        .expect("stats file");
    assert_eq!(
        stats.firings, 3,
        "A and B in the first run, C in the third: {stats:?}"
    );
    assert_eq!(stats.evaluations, 3, "nothing evaluated twice: {stats:?}");
}

#[test]
fn a_new_rule_starts_at_the_end_unless_told_to_start_at_the_beginning() {
    let dir = tempdir();
    let log = open(dir.path());
    let p0 = |task: &str| {
        Event::new("orchestration.task.priority_changed")
            .entity("task", task)
            .json_payload(&json!({"changes": {"priority": {"before": "P3", "after": "P0"}}}))
            .expect("payload")
    };
    log.append(p0("old")).expect("append");
    log.rules()
        .register(orchestration::p0_alert())
        .expect("register");
    // The same trigger under another name, from the start of the log.
    log.rules()
        .register(
            Rule::new(
                "from-the-start",
                orchestration::p0_alert().trigger().clone(),
                |context| {
                    let task = context.trigger().entity.clone().expect("task");
                    Ok(vec![context
                        .event("history.alert")
                        .entity("task", task.entity_id)])
                },
            )
            .start(RuleStart::Beginning),
        )
        .expect("register");
    log.append(p0("new")).expect("append");
    wait_rules(&log);
    let default_start: Vec<_> = of_type(&log, "orchestration.alert.p0_task")
        .iter()
        .map(|e| e.entity.as_ref().expect("entity").entity_id.clone())
        .collect();
    assert_eq!(default_start, ["new"]);
    let from_start: Vec<_> = of_type(&log, "history.alert")
        .iter()
        .map(|e| e.entity.as_ref().expect("entity").entity_id.clone())
        .collect();
    assert_eq!(from_start, ["old", "new"]);
    assert!(
        log.rules().register(orchestration::p0_alert()).is_err(),
        "a name is registered once"
    );
    log.close().expect("close");
}

#[test]
fn a_self_triggering_rule_stops_at_the_depth_limit_with_an_error_event() {
    let dir = tempdir();
    let log = open(dir.path());
    log.rules().set_depth_limit(5);
    log.rules()
        .register(Rule::new("echo", Trigger::on("loop.*"), |context| {
            Ok(vec![context.event("loop.tick")])
        }))
        .expect("register");
    let correlation = Uuid::now_v7();
    log.append(Event::new("loop.start").correlation_id(correlation))
        .expect("append");
    // The chain: start, 5 ticks, then the depth-exceeded event.
    let deadline = Instant::now() + WAIT;
    while of_type(&log, DEPTH_EXCEEDED_TYPE).is_empty() {
        assert!(Instant::now() < deadline, "no depth-exceeded event");
        std::thread::sleep(Duration::from_millis(5));
    }
    wait_rules(&log);
    let ticks = of_type(&log, "loop.tick");
    assert_eq!(ticks.len(), 5);
    let depths: Vec<_> = ticks
        .iter()
        .map(|e| e.metadata["evlog.rule.depth"].clone())
        .collect();
    assert_eq!(depths, ["1", "2", "3", "4", "5"]);
    let stops = of_type(&log, DEPTH_EXCEEDED_TYPE);
    assert_eq!(stops.len(), 1);
    assert_eq!(stops[0].causation_id, Some(ticks[4].id));
    assert_eq!(stops[0].correlation_id, Some(correlation));
    let payload: serde_json::Value = stops[0].payload_as().expect("json");
    assert_eq!(
        (payload["depth"].as_u64(), payload["limit"].as_u64()),
        (Some(6), Some(5))
    );
    // Every event of the chain is in the correlation, linked by causation.
    let chain = log.causation_chain(stops[0].id).expect("chain");
    assert_eq!(chain.len(), 7, "start, 5 ticks, the stop");
    // Nothing more comes.
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(of_type(&log, "loop.tick").len(), 5);
    assert_eq!(log.rules().list()[0].depth_stops, 1);
    log.close().expect("close");
}

#[test]
fn the_breaker_opens_after_consecutive_failures_skips_and_closes_after_the_cool_down() {
    let dir = tempdir();
    let log = open(dir.path());
    let failing = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let fail = std::sync::Arc::clone(&failing);
    log.rules()
        .register(
            Rule::new("flaky", Trigger::on("job.*"), move |context| {
                if fail.load(std::sync::atomic::Ordering::SeqCst) {
                    return Err(format!("job {} failed", context.trigger().seq).into());
                }
                Ok(vec![context.event("result.done")])
            })
            .breaker(BreakerPolicy {
                consecutive_failures: 3,
                failure_rate: None,
                cool_down: Duration::from_millis(300),
            }),
        )
        .expect("register");
    for _ in 0..5 {
        log.append(Event::new("job.run")).expect("append");
    }
    wait_rules(&log);
    let opened = of_type(&log, "evlog.rule.breaker_opened");
    assert_eq!(opened.len(), 1, "one event per opening");
    let payload: serde_json::Value = opened[0].payload_as().expect("json");
    assert_eq!(payload["reason"], "consecutive failures");
    assert_eq!(payload["last_error"], "job 3 failed");
    let stats = &log.rules().list()[0];
    assert_eq!(
        (stats.evaluations, stats.failures, stats.skipped),
        (3, 3, 2),
        "{stats:?}"
    );
    assert_eq!(stats.breaker, BreakerState::Open);
    // Failed triggers are parked in the rule's consumer.
    let parked = log
        .consumer("rule.flaky", evlog::Filter::all())
        .expect("consumer")
        .parked()
        .expect("parked");
    assert_eq!(parked.iter().map(|p| p.seq).collect::<Vec<_>>(), [1, 2, 3]);
    // After the cool-down one trigger goes through; success closes it.
    std::thread::sleep(Duration::from_millis(350));
    failing.store(false, std::sync::atomic::Ordering::SeqCst);
    log.append(Event::new("job.run")).expect("append");
    wait_rules(&log);
    assert_eq!(of_type(&log, "evlog.rule.breaker_closed").len(), 1);
    assert_eq!(of_type(&log, "result.done").len(), 1);
    assert_eq!(log.rules().list()[0].breaker, BreakerState::Closed);
    // A failure in half-open state opens it again at once; a command closes it.
    failing.store(true, std::sync::atomic::Ordering::SeqCst);
    for _ in 0..3 {
        log.append(Event::new("job.run")).expect("append");
    }
    wait_rules(&log);
    assert_eq!(of_type(&log, "evlog.rule.breaker_opened").len(), 2);
    log.rules().close_breaker("flaky").expect("close breaker");
    failing.store(false, std::sync::atomic::Ordering::SeqCst);
    log.append(Event::new("job.run")).expect("append");
    wait_rules(&log);
    assert_eq!(of_type(&log, "evlog.rule.breaker_closed").len(), 2);
    assert_eq!(of_type(&log, "result.done").len(), 2);
    log.close().expect("close");
}

#[test]
fn the_breaker_opens_on_a_failure_rate_over_its_window() {
    let dir = tempdir();
    let log = open(dir.path());
    log.rules()
        .register(
            Rule::new("half-fails", Trigger::on("work.*"), |context| {
                if context.trigger().event_type == "work.bad" {
                    return Err("bad work".into());
                }
                Ok(Vec::new())
            })
            .breaker(BreakerPolicy {
                consecutive_failures: 0,
                failure_rate: Some(evlog::rules::FailureRate {
                    ratio: 0.5,
                    window_evaluations: 4,
                }),
                cool_down: Duration::from_secs(60),
            }),
        )
        .expect("register");
    // Never two failures in a row, but half of the last four failed.
    for event_type in ["work.good", "work.bad", "work.good"] {
        log.append(Event::new(event_type)).expect("append");
    }
    wait_rules(&log);
    assert_eq!(
        log.rules().list()[0].breaker,
        BreakerState::Closed,
        "window not full yet"
    );
    for event_type in ["work.bad", "work.good", "work.good"] {
        log.append(Event::new(event_type)).expect("append");
    }
    wait_rules(&log);
    let opened = of_type(&log, "evlog.rule.breaker_opened");
    assert_eq!(opened.len(), 1);
    let payload: serde_json::Value = opened[0].payload_as().expect("json");
    assert_eq!(payload["reason"], "failure rate");
    assert_eq!(payload["trigger_seq"], 4);
    let stats = &log.rules().list()[0];
    assert_eq!(
        (stats.evaluations, stats.failures, stats.skipped),
        (4, 2, 2),
        "{stats:?}"
    );
    log.close().expect("close");
}

#[test]
fn a_panicking_action_counts_as_a_failure_and_the_log_goes_on() {
    let dir = tempdir();
    let log = open(dir.path());
    log.rules()
        .register(Rule::new("panics", Trigger::on("x.*"), |_| panic!("boom")))
        .expect("register");
    log.rules()
        .register(Rule::new("works", Trigger::on("x.*"), |context| {
            Ok(vec![context.event("y.done")])
        }))
        .expect("register");
    log.append(Event::new("x.a")).expect("append");
    wait_rules(&log);
    let stats = log.rules().list();
    let panics = stats.iter().find(|s| s.rule == "panics").expect("stats");
    assert_eq!(panics.failures, 1);
    assert!(
        panics.last_error.as_deref().unwrap_or("").contains("boom"),
        "{panics:?}"
    );
    assert_eq!(of_type(&log, "y.done").len(), 1);
    log.append(Event::new("plain.event"))
        .expect("the log still appends");
    log.close().expect("close");
}

/// Fills a log with a finished sprint whose completion the rule appended.
fn finished_sprint(dir: &Path) -> Uuid {
    let log = open(dir);
    log.rules()
        .register(orchestration::sprint_completion())
        .expect("register");
    let correlation = Uuid::now_v7();
    log.append(sprint_created(correlation, "S-1"))
        .expect("append");
    for task in ["T-1", "T-2"] {
        log.append(task_created(correlation, "S-1", task))
            .expect("append");
    }
    for task in ["T-1", "T-2"] {
        log.append(task_status(correlation, "S-1", task, "todo", "completed"))
            .expect("append");
    }
    wait_rules(&log);
    assert_eq!(sprint_completions(&log, "S-1").len(), 1);
    log.close().expect("close");
    correlation
}

#[test]
fn dry_run_evaluates_and_reports_but_writes_nothing() {
    let dir = tempdir();
    let correlation = finished_sprint(dir.path());
    let before = tree(dir.path());
    // A read-only view replaying the chain: the rule would fire on the last
    // completion, and the log already holds that output.
    let view = Log::open_read_only(dir.path()).expect("view");
    let chain: Vec<_> = view
        .by_correlation(correlation)
        .expect("query")
        .map(|e| e.expect("event"))
        .collect();
    let reports = view
        .dry_run_rules(&orchestration::all(), &chain, 8)
        .expect("dry run");
    drop(view);
    let fired: Vec<_> = reports
        .iter()
        .filter_map(|r| match &r.outcome {
            DryRunOutcome::WouldAppend(events) => Some((r.trigger_seq, events.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(fired.len(), 1, "{reports:?}");
    // Seqs: the sprint 1, its tasks 2 and 3, their completions 4 and 5,
    // the rule's output 6.
    assert_eq!(fired[0].0, 5, "the second completion");
    assert_eq!(
        fired[0].1[0].event_type,
        "orchestration.sprint.status_changed"
    );
    assert_eq!(fired[0].1[0].already_in_log, Some(6));
    assert_unchanged(
        &before,
        &tree(dir.path()),
        "a dry-run replay on a read-only view",
    );

    // The engine in dry-run mode: nothing in segments, consumers or rules
    // changes (sled rewrites its own files at every open, so the index
    // directory is left out).
    let watched = |root: &Path| {
        let mut all = tree(&root.join("segments"));
        all.extend(
            tree(&root.join("consumers"))
                .into_iter()
                .map(|(k, v)| (Path::new("consumers").join(k), v)),
        );
        all.extend(
            tree(&root.join("rules"))
                .into_iter()
                .map(|(k, v)| (Path::new("rules").join(k), v)),
        );
        all
    };
    let log = open(dir.path());
    let watched_before = watched(dir.path());
    log.rules().set_dry_run_all(true);
    log.rules()
        .register(orchestration::sprint_completion().start(RuleStart::Beginning))
        .expect("register");
    log.rules()
        .register(
            Rule::new("would-echo", Trigger::on("orchestration.*"), |c| {
                Ok(vec![c.event("echo.x")])
            })
            .start(RuleStart::Beginning),
        )
        .expect("register");
    assert!(log.rules().wait_for(log.last_seq().expect("events"), WAIT));
    let reports = log.rules().take_dry_run_reports();
    assert!(
        reports
            .iter()
            .any(|r| r.rule == "would-echo" && matches!(r.outcome, DryRunOutcome::WouldAppend(_))),
        "{reports:?}"
    );
    assert_eq!(of_type(&log, "echo.*").len(), 0);
    assert_unchanged(&watched_before, &watched(dir.path()), "rules in dry run");
    log.close().expect("close");
}

#[test]
fn cli_lists_rules_and_replays_a_correlation_with_dry_run_rules() {
    let dir = tempdir();
    let correlation = finished_sprint(dir.path());
    let before = tree(dir.path());
    let output = run_cli(dir.path(), &["rules"]);
    assert_eq!(output.status.code(), Some(0), "{}", said(&output));
    let listing = text(&output.stdout);
    assert!(
        listing.contains(orchestration::SPRINT_COMPLETION),
        "{listing}"
    );
    assert!(listing.contains("closed"), "{listing}");
    let output = run_cli(dir.path(), &["rules", "--json"]);
    assert_eq!(output.status.code(), Some(0), "{}", said(&output));
    let line: serde_json::Value =
        serde_json::from_str(text(&output.stdout).lines().next().expect("a line")).expect("json");
    assert_eq!(line["rule"], orchestration::SPRINT_COMPLETION);
    assert_eq!(line["evaluations"], 2);
    assert_eq!(line["firings"], 1);
    assert_eq!(line["breaker"], "closed");

    let correlation = correlation.to_string();
    let output = run_cli(
        dir.path(),
        &["replay", "--correlation", &correlation, "--dry-run-rules"],
    );
    assert_eq!(output.status.code(), Some(0), "{}", said(&output));
    let reports: Vec<serde_json::Value> = text(&output.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("json line"))
        .collect();
    let fired: Vec<_> = reports
        .iter()
        .filter(|r| r["outcome"] == "would_append")
        .collect();
    assert_eq!(fired.len(), 1, "{reports:?}");
    assert_eq!(fired[0]["rule"], orchestration::SPRINT_COMPLETION);
    assert_eq!(fired[0]["trigger_seq"], 5);
    assert_eq!(fired[0]["events"][0]["already_in_log"], 6);
    assert_unchanged(
        &before,
        &tree(dir.path()),
        "evlog rules and replay --dry-run-rules",
    );

    // evlog-dump reads a statistics file, and the data directory holding it.
    let stats_file = dir
        .path()
        .join("rules")
        .join(format!("{}.json", orchestration::SPRINT_COMPLETION));
    let dump = |args: &[&std::ffi::OsStr]| {
        Command::new(env!("CARGO_BIN_EXE_evlog-dump"))
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run evlog-dump")
    };
    let output = dump(&[stats_file.as_os_str()]);
    assert_eq!(output.status.code(), Some(0), "{}", said(&output));
    let printed = text(&output.stdout);
    assert!(
        printed.contains("rule sprint-completion") && printed.contains("1 firings"),
        "{printed}"
    );
    let output = dump(&[stats_file.as_os_str(), "--verify".as_ref()]);
    assert_eq!(output.status.code(), Some(0), "{}", said(&output));
    let output = dump(&[dir.path().as_os_str(), "--verify".as_ref()]);
    assert_eq!(output.status.code(), Some(0), "{}", said(&output));
    assert_unchanged(&before, &tree(dir.path()), "evlog-dump");

    // A damaged statistics file: `rules` names it and the line's offset;
    // the engine counts from zero and runs on.
    std::fs::write(&stats_file, "{\n  \"format\": 1,\n  oops\n}\n").expect("garble");
    let output = run_cli(dir.path(), &["rules"]);
    assert_eq!(output.status.code(), Some(1), "{}", said(&output));
    let message = text(&output.stderr);
    assert!(
        message.contains("sprint-completion.json") && message.contains("offset 17"),
        "{message}"
    );
    let log = open(dir.path());
    log.rules()
        .register(orchestration::sprint_completion())
        .expect("register despite the file");
    log.close().expect("close");
    let output = run_cli(dir.path(), &["rules", "--json"]);
    assert_eq!(output.status.code(), Some(0), "{}", said(&output));

    let output = run_cli(dir.path(), &["replay", "--dry-run-rules"]);
    assert_eq!(output.status.code(), Some(2), "{}", said(&output));
    assert!(
        text(&output.stderr).contains("--correlation"),
        "{}",
        said(&output)
    );
}

/// The data directory of the killed child; unset outside it.
const CHILD_DIR: &str = "EVLOG_RULES_CHILD_DIR";
/// Set in the child that kills itself right after the last completion.
const CHILD_ABORTS: &str = "EVLOG_RULES_CHILD_ABORTS";

/// Child: registers the rules and completes a sprint's three tasks, then
/// waits to be killed.
#[test]
#[ignore = "run by rules_survive_sigkill_between_trigger_and_output as a child process"]
fn rules_sigkill_child() {
    let Some(dir) = std::env::var_os(CHILD_DIR) else {
        return;
    };
    let log = open(Path::new(&dir));
    log.rules()
        .register(orchestration::sprint_completion())
        .expect("register");
    let correlation = Uuid::now_v7();
    if log.last_seq().is_none() {
        log.append(sprint_created(correlation, "S-1"))
            .expect("append");
        for task in ["T-1", "T-2", "T-3"] {
            log.append(task_created(correlation, "S-1", task))
                .expect("append");
        }
    }
    for task in ["T-1", "T-2", "T-3"] {
        log.append(task_status(correlation, "S-1", task, "todo", "completed"))
            .expect("append");
    }
    if std::env::var_os(CHILD_ABORTS).is_some() {
        // Dies like a SIGKILL, before the engine thread (woken by the
        // append) has evaluated or committed anything, most of the time.
        std::process::abort();
    }
    std::thread::sleep(Duration::from_secs(60));
}

#[test]
fn rules_survive_sigkill_between_trigger_and_output() {
    let mut rng = Rng::new(0x5eed_0011);
    let rounds = 16;
    let mut fired_by_child = 0;
    let mut completed_by_child = 0;
    for round in 0..rounds {
        let dir = tempdir();
        let exe = std::env::current_exe().expect("test binary");
        let aborts = round % 2 == 0;
        let mut command = Command::new(exe);
        command
            .args([
                "--exact",
                "rules::rules_sigkill_child",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_DIR, dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if aborts {
            command.env(CHILD_ABORTS, "1");
        }
        let mut child = command.spawn().expect("spawn");
        let status = if aborts {
            child.wait().expect("wait")
        } else {
            // Killed at a random moment of the appends and the rule's
            // evaluation.
            std::thread::sleep(Duration::from_micros(rng.below(150_000)));
            child.kill().expect("kill");
            child.wait().expect("wait")
        };
        let expected_signal = if aborts { 6 } else { 9 };
        assert_eq!(
            status.signal(),
            Some(expected_signal),
            "round {round}: {status:?}"
        );
        let log = open(dir.path());
        if !sprint_completions(&log, "S-1").is_empty() {
            fired_by_child += 1;
        }
        let completions = of_type(&log, "orchestration.task.status_changed").len();
        if completions == 3 {
            completed_by_child += 1;
        }
        log.rules()
            .register(orchestration::sprint_completion())
            .expect("register");
        // The application goes on: tasks not completed yet are completed now.
        let correlation = Uuid::now_v7();
        if log.last_seq().is_none() {
            log.append(sprint_created(correlation, "S-1"))
                .expect("append");
        }
        for task in ["T-1", "T-2", "T-3"] {
            let state = log.state_at("task", task, i64::MAX).expect("state");
            if state.get("status").and_then(|s| s.as_str()).is_none() {
                log.append(task_created(correlation, "S-1", task))
                    .expect("append");
            }
        }
        for task in ["T-1", "T-2", "T-3"] {
            let state = log.state_at("task", task, i64::MAX).expect("state");
            if state.get("status").and_then(|s| s.as_str()) != Some("completed") {
                log.append(task_status(correlation, "S-1", task, "todo", "completed"))
                    .expect("append");
            }
        }
        wait_rules(&log);
        let done = sprint_completions(&log, "S-1");
        assert_eq!(done.len(), 1, "round {round}: {done:?}");
        log.close().expect("close");
    }
    eprintln!(
        "rules under kills: {rounds} rounds; the child had appended all three completions in \
         {completed_by_child} and its engine had fired in {fired_by_child}"
    );
    assert!(
        completed_by_child > fired_by_child,
        "no round was killed between the last completion and the rule's output"
    );
}

#[cfg(feature = "http")]
#[test]
fn http_replay_reports_what_the_shipped_rules_would_do_and_writes_nothing() {
    let dir = tempdir();
    let correlation = finished_sprint(dir.path());
    let view = std::sync::Arc::new(Log::open_read_only(dir.path()).expect("view"));
    let before = tree(dir.path());
    let server = evlog::http::serve(
        view,
        "127.0.0.1:0".parse().expect("address"),
        evlog::http::ServeOptions::default(),
    )
    .expect("serve");
    let url = format!("http://{}/api/replay", server.local_addr());
    let response = ureq::post(&url)
        .send_json(json!({"correlation_id": correlation.to_string(), "dry_run": true}))
        .expect("replay");
    let body: serde_json::Value = response.into_json().expect("json");
    assert_eq!(body["events"], 6, "{body}");
    let fired: Vec<_> = body["reports"]
        .as_array()
        .expect("reports")
        .iter()
        .filter(|r| r["outcome"] == "would_append")
        .collect();
    assert_eq!(fired.len(), 1, "{body}");
    assert_eq!(fired[0]["rule"], orchestration::SPRINT_COMPLETION);
    assert_eq!(fired[0]["trigger_seq"], 5);
    assert_eq!(fired[0]["events"][0]["entity"], "sprint/S-1");
    assert_eq!(fired[0]["events"][0]["already_in_log"], 6);
    server.shutdown().expect("shutdown");
    assert_unchanged(&before, &tree(dir.path()), "POST /api/replay");
}

// A rule is a durable consumer: a stored position past the end of the log
// (a power cut under `OsBuffered` lost events it had read; here the
// position file of a longer log) goes back to the end, so the next
// triggers are evaluated, not skipped until the log grows past it.
#[test]
fn a_rule_position_past_the_end_of_the_log_goes_back_to_the_end() {
    let rule = || {
        Rule::new("counts", Trigger::on("x.*"), |context| {
            Ok(vec![context.event("counted.x")])
        })
    };
    let longer = tempdir();
    {
        let log = open(longer.path());
        for _ in 0..10 {
            log.append(Event::new("warmup.a")).expect("append");
        }
        log.rules().register(rule()).expect("register");
        log.close().expect("close");
    }
    let shorter = tempdir();
    {
        let log = open(shorter.path());
        for _ in 0..3 {
            log.append(Event::new("warmup.a")).expect("append");
        }
        log.close().expect("close");
    }
    std::fs::create_dir_all(shorter.path().join("consumers")).expect("mkdir");
    std::fs::copy(
        longer.path().join("consumers/rule.counts.pos"),
        shorter.path().join("consumers/rule.counts.pos"),
    )
    .expect("copy the position file");
    let log = open(shorter.path());
    log.rules().register(rule()).expect("register");
    log.append(Event::new("x.first")).expect("append");
    wait_rules(&log);
    assert_eq!(
        of_type(&log, "counted.x").len(),
        1,
        "the trigger at seq 4 fired"
    );
    log.close().expect("close");
}
