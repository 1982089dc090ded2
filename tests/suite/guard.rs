//! The storm guard and the contracts (issue 11, items 5 and 6): floods of
//! one type refused, delayed or flagged per policy while other types pass,
//! exactly one `evlog.storm.detected` event per storm, malformed events
//! refused with the exact message, nothing written by a refused append,
//! `evlog.toml` errors naming the line, and `evlog check-contracts`.

use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use evlog::{
    Contract, Durability, Error, Event, JsonType, Log, LoggedEvent, Options, RateLimit,
    StormPolicy, RATE_LIMITED_KEY, STORM_DETECTED_TYPE,
};
use serde_json::{json, Value};

use crate::common::{run_cli, tempdir, text};

/// The size of the floods: the issue's "storm of 100 k events".
const STORM_EVENTS: u64 = 100_000;

fn fast() -> Options {
    Options::default().durability(Durability::OsBuffered)
}

fn of_type(log: &Log, pattern: &str) -> Vec<LoggedEvent> {
    log.by_type(pattern, ..)
        .unwrap()
        .map(|event| event.unwrap())
        .collect()
}

fn storm_events(log: &Log) -> Vec<Value> {
    of_type(log, STORM_DETECTED_TYPE)
        .iter()
        .map(|event| event.payload_as::<Value>().unwrap())
        .collect()
}

/// Every sequence number from the first to the last, once: nothing
/// half-written or skipped by a refused request.
fn assert_gap_free(log: &Log) {
    let seqs: Vec<u64> = log.iter(..).unwrap().map(|e| e.unwrap().seq).collect();
    let expected: Vec<u64> = (1..=log.last_seq().unwrap_or(0)).collect();
    assert_eq!(seqs, expected);
}

// Proves that a flood of 100 000 single appends of one type over a Refuse
// limit is refused beyond the bucket (the accepted count is what the rate
// allows), that another type appended all along passes whole, that the
// refused appends write nothing, and that the flood is one storm: one
// evlog.storm.detected event and the counters in the metrics.
#[test]
fn guard_storm_refused_while_other_types_pass() {
    let rate_per_s = 2_000.0;
    let burst = 500;
    let log = Log::open_temporary(fast().rate_limit(RateLimit::new(
        "agent.heartbeat",
        rate_per_s,
        burst,
    )))
    .unwrap();
    let started = Instant::now();
    let (mut accepted, mut refused, mut others) = (0u64, 0u64, 0u64);
    for n in 0..STORM_EVENTS {
        match log.append(Event::new("agent.heartbeat")) {
            Ok(_) => accepted += 1,
            Err(Error::RateLimited {
                event_type,
                pattern,
                burst: limit_burst,
                ..
            }) => {
                assert_eq!(
                    (event_type.as_str(), pattern.as_str()),
                    ("agent.heartbeat", "agent.heartbeat")
                );
                assert_eq!(limit_burst, burst);
                refused += 1;
            }
            Err(other) => panic!("{other}"),
        }
        if n % 100 == 0 {
            log.append(Event::new("task.created")).unwrap();
            others += 1;
        }
    }
    let elapsed_s = started.elapsed().as_secs_f64();
    assert_eq!(accepted + refused, STORM_EVENTS);
    // The bucket gives its burst, then the rate (one token of slack for
    // the refill between the clock reads).
    assert!(accepted >= burst, "{accepted}");
    let allowed = burst as f64 + rate_per_s * elapsed_s + 1.0;
    assert!(
        accepted as f64 <= allowed,
        "{accepted} accepted, at most {allowed} allowed"
    );
    assert!(refused > 0);

    assert_eq!(of_type(&log, "agent.heartbeat").len() as u64, accepted);
    assert_eq!(of_type(&log, "task.created").len() as u64, others);
    let storms = storm_events(&log);
    assert_eq!(storms.len(), 1, "{storms:?}");
    assert_eq!(
        storms[0],
        json!({"pattern": "agent.heartbeat", "event_type": "agent.heartbeat",
               "policy": "refuse", "rate_per_s": rate_per_s, "burst": burst, "storm": 1})
    );
    let storm = &of_type(&log, STORM_DETECTED_TYPE)[0];
    let entity = storm.entity.as_ref().unwrap();
    assert_eq!(
        (entity.entity_type.as_str(), entity.entity_id.as_str()),
        (evlog::STORM_ENTITY_TYPE, "agent.heartbeat")
    );
    assert_eq!(storm.priority, evlog::Priority::P1);
    assert_eq!(log.last_seq(), Some(accepted + others + 1));
    assert_gap_free(&log);

    let stats = &log.rate_limit_stats()[0];
    assert_eq!((stats.storms, stats.refused_events), (1, refused));
    let metrics = evlog::metrics::Metrics::of_log(&log).unwrap().render();
    for line in [
        "evlog_storms_total{pattern=\"agent.heartbeat\"} 1".to_string(),
        format!("evlog_rate_limited_refused_events_total{{pattern=\"agent.heartbeat\"}} {refused}"),
    ] {
        assert!(
            metrics.lines().any(|l| l == line),
            "{line} missing:\n{metrics}"
        );
    }
    log.close().unwrap();
}

// Proves that under Delay a flood of 100 000 events (batches of 100) is
// written whole but no faster than the rate allows, that another type
// appended by another thread meanwhile is never delayed nor refused, and
// that the flood is one storm; and that a wait beyond max_wait_ms is
// refused without writing.
#[test]
fn guard_storm_delayed_while_other_types_pass() {
    let rate_per_s = 50_000.0;
    let burst = 1_000;
    let log = Arc::new(
        Log::open_temporary(
            fast().rate_limit(
                RateLimit::new("agent.*", rate_per_s, burst)
                    .policy(StormPolicy::Delay { max_wait_ms: 5_000 }),
            ),
        )
        .unwrap(),
    );
    let start = Arc::new(Barrier::new(2));
    let other = {
        let log = Arc::clone(&log);
        let start = Arc::clone(&start);
        std::thread::spawn(move || {
            start.wait();
            for _ in 0..500 {
                log.append(Event::new("task.created")).unwrap();
            }
        })
    };
    start.wait();
    let started = Instant::now();
    let batch: Vec<Event> = (0..100).map(|_| Event::new("agent.heartbeat")).collect();
    for _ in 0..STORM_EVENTS / 100 {
        log.append_batch(&batch).unwrap();
    }
    let elapsed = started.elapsed();
    other.join().unwrap();
    // The rate bounds how fast the flood went in.
    let least = Duration::from_secs_f64((STORM_EVENTS - burst) as f64 / rate_per_s);
    assert!(elapsed >= least, "{elapsed:?} < {least:?}");
    assert_eq!(of_type(&log, "agent.heartbeat").len() as u64, STORM_EVENTS);
    assert_eq!(of_type(&log, "task.created").len(), 500);
    let storms = storm_events(&log);
    assert_eq!(storms.len(), 1, "{storms:?}");
    assert_eq!(storms[0]["policy"], "delay");
    let stats = &log.rate_limit_stats()[0];
    assert_eq!(stats.refused_events, 0);
    assert!(stats.delayed_events > 0 && stats.delayed_events <= STORM_EVENTS);

    // A wait the bound does not allow: refused at once, nothing written.
    let log = Log::open_temporary(fast().rate_limit(
        RateLimit::new("agent.*", 100.0, 10).policy(StormPolicy::Delay { max_wait_ms: 10 }),
    ))
    .unwrap();
    let ten: Vec<Event> = (0..10).map(|_| Event::new("agent.x")).collect();
    log.append_batch(&ten).unwrap();
    let before = log.last_seq();
    assert!(matches!(
        log.append_batch(&ten),
        Err(Error::RateLimited { .. })
    ));
    // Only the storm event was added.
    assert_eq!(log.last_seq(), before.map(|seq| seq + 1));
    assert_eq!(log.rate_limit_stats()[0].refused_events, 10);
}

// Proves that Flag accepts every event and marks exactly those beyond the
// bucket with evlog.rate_limited = the limit's pattern.
#[test]
fn guard_flag_policy_marks_events() {
    let log = Log::open_temporary(
        fast().rate_limit(RateLimit::new("signal.*", 0.001, 5).policy(StormPolicy::Flag)),
    )
    .unwrap();
    for _ in 0..20 {
        log.append(Event::new("signal.emitted").metadata("k", "v"))
            .unwrap();
    }
    let signals = of_type(&log, "signal.*");
    assert_eq!(signals.len(), 20);
    for (n, event) in signals.iter().enumerate() {
        let mark = event.metadata.get(RATE_LIMITED_KEY).map(String::as_str);
        assert_eq!(mark, (n >= 5).then_some("signal.*"), "event {n}");
        assert_eq!(event.metadata.get("k").map(String::as_str), Some("v"));
    }
    assert_eq!(storm_events(&log).len(), 1);
    assert_eq!(log.rate_limit_stats()[0].flagged_events, 15);
}

// Proves that threads flooding one limit at once start one storm, and
// that a new storm (a second event, "storm": 2) starts only after the
// limit has been quiet for storm_quiet_ms.
#[test]
fn guard_one_storm_event_per_storm() {
    // Long beside the gaps between attempts of four looping threads, even
    // on a loaded machine.
    let quiet = Duration::from_millis(1_000);
    let log = Arc::new(
        Log::open_temporary(
            fast().rate_limit(RateLimit::new("agent.heartbeat", 1.0, 1).storm_quiet(quiet)),
        )
        .unwrap(),
    );
    let threads = 4;
    let start = Arc::new(Barrier::new(threads));
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let log = Arc::clone(&log);
            let start = Arc::clone(&start);
            std::thread::spawn(move || {
                start.wait();
                for _ in 0..2_000 {
                    let _ = log.append(Event::new("agent.heartbeat"));
                }
            })
        })
        .collect();
    for handle in handles {
        handle.join().unwrap();
    }
    assert_eq!(storm_events(&log).len(), 1);
    std::thread::sleep(quiet * 2);
    for _ in 0..100 {
        let _ = log.append(Event::new("agent.heartbeat"));
    }
    let storms = storm_events(&log);
    assert_eq!(storms.len(), 2, "{storms:?}");
    assert_eq!(storms[1]["storm"], 2);
    assert_eq!(log.rate_limit_stats()[0].storms, 2);
}

fn task_contract() -> Contract {
    Contract::new("orchestration.task.*")
        .field("task_id", JsonType::String)
        .field("/changes/status/after", JsonType::String)
}

// Proves that a contract violation is refused with the exact message, that
// a batch holding one bad event writes none of its events, and that types
// the contract does not name pass.
#[test]
fn guard_contract_violations_refused_with_the_exact_message() {
    let log = Log::open_temporary(fast().contract(task_contract())).unwrap();
    let good = Event::new("orchestration.task.status_changed")
        .json_payload(
            &json!({"task_id": "T-1", "changes": {"status": {"before": "a", "after": "b"}}}),
        )
        .unwrap();
    log.append(good.clone()).unwrap();
    let bad = Event::new("orchestration.task.blocked")
        .json_payload(&json!({"task_id": "T-1", "changes": {"status": {"after": null}}}))
        .unwrap();
    let error = log.append(bad.clone()).unwrap_err();
    assert_eq!(
        error.to_string(),
        "event type \"orchestration.task.blocked\" violates the contract \
         \"orchestration.task.*\": /changes/status/after must be a string, found null"
    );
    match error {
        Error::ContractViolation {
            event_type,
            pattern,
            field,
            expected,
            found,
        } => assert_eq!(
            (event_type, pattern, field, expected, found),
            (
                "orchestration.task.blocked".to_string(),
                "orchestration.task.*".to_string(),
                "/changes/status/after".to_string(),
                "a string".to_string(),
                "null".to_string()
            )
        ),
        other => panic!("{other:?}"),
    }
    let missing = Event::new("orchestration.task.created")
        .json_payload(&json!({"title": "x"}))
        .unwrap();
    assert_eq!(
        log.append(missing).unwrap_err().to_string(),
        "event type \"orchestration.task.created\" violates the contract \
         \"orchestration.task.*\": task_id must be a string, found nothing (the field is missing)"
    );
    assert!(log
        .append_batch(&[good.clone(), good.clone(), bad])
        .is_err());
    assert_eq!(log.last_seq(), Some(1));
    log.append(Event::new("agent.heartbeat")).unwrap();
    log.append(good).unwrap();
    assert_eq!(log.last_seq(), Some(3));
    assert_gap_free(&log);
}

// Proves that a contract for a schema version applies only to events that
// carry it (Event::schema_version), beside an unversioned one.
#[test]
fn guard_contracts_follow_the_schema_version() {
    let log = Log::open_temporary(
        fast().contract(
            Contract::new("sprint.*")
                .schema_version(2)
                .field("goal", JsonType::String),
        ),
    )
    .unwrap();
    let v1 = Event::new("sprint.started")
        .json_payload(&json!({}))
        .unwrap();
    log.append(v1.clone()).unwrap();
    log.append(v1.clone().schema_version(1)).unwrap();
    let error = log.append(v1.schema_version(2)).unwrap_err();
    assert!(
        matches!(&error, Error::ContractViolation { field, .. } if field == "goal"),
        "{error}"
    );
    let v2 = Event::new("sprint.started")
        .json_payload(&json!({"goal": "ship"}))
        .unwrap()
        .schema_version(2);
    let seq = log.append(v2).unwrap();
    let stored = log.get(seq).unwrap();
    assert_eq!(
        stored
            .metadata
            .get(evlog::SCHEMA_VERSION_KEY)
            .map(String::as_str),
        Some("2")
    );
}

#[cfg(feature = "json-schema")]
// Proves that a JSON Schema contract refuses what the schema refuses,
// naming the instance path.
#[test]
fn guard_json_schema_contract() {
    let log = Log::open_temporary(fast().contract(Contract::new("performance.*").json_schema(
        json!({"type": "object", "properties": {"value": {"type": "number", "minimum": 0}}, "required": ["value"]}),
    )))
    .unwrap();
    let event = |payload: Value| {
        Event::new("performance.metric.recorded")
            .json_payload(&payload)
            .unwrap()
    };
    log.append(event(json!({"value": 1.5}))).unwrap();
    match log.append(event(json!({"value": -1}))) {
        Err(Error::ContractViolation { field, .. }) => assert_eq!(field, "/value"),
        other => panic!("{other:?}"),
    }
    assert_eq!(log.last_seq(), Some(1));
}

const GUARD_TOML: &str = r#"[[storm.limit]]
pattern = "agent.heartbeat"
rate_per_s = 0.001
burst = 2

[[contract]]
pattern = "orchestration.task.*"
fields = { task_id = "string" }
"#;

// Proves that evlog.toml's limits and contracts apply when Options gives
// none, that those Options give replace them, and that a bad file stops
// the open with the line at fault.
#[test]
fn guard_config_file_precedence_and_errors() {
    let dir = tempdir();
    std::fs::write(dir.path().join(evlog::CONFIG_FILE), GUARD_TOML).unwrap();
    {
        let log = Log::open(dir.path(), fast()).unwrap();
        assert!(log
            .append(
                Event::new("orchestration.task.created")
                    .json_payload(&json!({}))
                    .unwrap()
            )
            .is_err());
        log.append(Event::new("agent.heartbeat")).unwrap();
        log.append(Event::new("agent.heartbeat")).unwrap();
        assert!(log.append(Event::new("agent.heartbeat")).is_err());
        assert_eq!(log.contracts().count(), 1);
    }
    {
        // Options' own lists win, each kind on its own.
        let log = Log::open(
            dir.path(),
            fast().rate_limit(RateLimit::new("other", 1.0, 1)),
        )
        .unwrap();
        for _ in 0..5 {
            log.append(Event::new("agent.heartbeat")).unwrap();
        }
        assert!(log
            .append(
                Event::new("orchestration.task.created")
                    .json_payload(&json!({}))
                    .unwrap()
            )
            .is_err());
        let log_with_contract = {
            drop(log);
            Log::open(dir.path(), fast().contract(Contract::new("x"))).unwrap()
        };
        log_with_contract
            .append(
                Event::new("orchestration.task.created")
                    .json_payload(&json!({}))
                    .unwrap(),
            )
            .unwrap();
    }
    std::fs::write(
        dir.path().join(evlog::CONFIG_FILE),
        GUARD_TOML.replace("burst = 2", "burst = 2\npolicy = \"throttle\""),
    )
    .unwrap();
    match Log::open(dir.path(), fast()) {
        Err(Error::Config { line, message, .. }) => {
            assert_eq!(line, 5, "{message}");
            assert!(message.contains("unknown variant"), "{message}");
        }
        Err(other) => panic!("{other}"),
        Ok(_) => panic!("a bad evlog.toml was accepted"),
    }
    // A bad limit given in Options: a typed error, before anything opens.
    match Log::open(
        tempdir().path(),
        fast().rate_limit(RateLimit::new("a", -1.0, 1)),
    ) {
        Err(Error::InvalidGuard { .. }) => {}
        Err(other) => panic!("{other}"),
        Ok(_) => panic!("a negative rate was accepted"),
    }
}

// Proves that check-contracts reads the log without changing it, prints
// one line (or JSON object) per violating event with its seq, and exits
// 0 when none violates, 1 when some do, 2 on a bad evlog.toml.
#[test]
fn guard_check_contracts_cli() {
    let dir = tempdir();
    {
        let log = Log::open(dir.path(), fast()).unwrap();
        let task = |payload: Value| {
            Event::new("orchestration.task.created")
                .json_payload(&payload)
                .unwrap()
        };
        log.append(task(json!({"task_id": "T-1"}))).unwrap();
        log.append(task(json!({"title": "no id"}))).unwrap();
        log.append(Event::new("agent.heartbeat")).unwrap();
        log.append(task(json!({"task_id": 4}))).unwrap();
        log.close().unwrap();
    }
    // No contracts: nothing to check.
    let output = run_cli(dir.path(), &["check-contracts"]);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));

    std::fs::write(dir.path().join(evlog::CONFIG_FILE), GUARD_TOML).unwrap();
    let output = run_cli(dir.path(), &["check-contracts"]);
    assert_eq!(output.status.code(), Some(1), "{}", text(&output.stderr));
    assert_eq!(
        text(&output.stdout),
        "seq 2: event type \"orchestration.task.created\" violates the contract \
         \"orchestration.task.*\": task_id must be a string, found nothing (the field is missing)\n\
         seq 4: event type \"orchestration.task.created\" violates the contract \
         \"orchestration.task.*\": task_id must be a string, found an integer (4)\n"
    );
    assert!(
        text(&output.stderr).contains("4 events checked against 1 contracts: 2 violate"),
        "{}",
        text(&output.stderr)
    );
    let output = run_cli(dir.path(), &["check-contracts", "--json"]);
    assert_eq!(output.status.code(), Some(1));
    let lines: Vec<Value> = text(&output.stdout)
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[1]["seq"], 4);
    assert_eq!(lines[1]["field"], "task_id");
    assert_eq!(lines[1]["expected"], "a string");
    assert_eq!(lines[1]["found"], "an integer (4)");

    // Contracts every stored event meets.
    std::fs::write(
        dir.path().join(evlog::CONFIG_FILE),
        "[[contract]]\npattern = \"agent.*\"\n",
    )
    .unwrap();
    let output = run_cli(dir.path(), &["check-contracts"]);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    assert_eq!(text(&output.stdout), "");

    std::fs::write(
        dir.path().join(evlog::CONFIG_FILE),
        "[[contract]]\npattern = \"agent.*\"\nfields = { n = \"float\" }\n",
    )
    .unwrap();
    let output = run_cli(dir.path(), &["check-contracts"]);
    assert_eq!(output.status.code(), Some(2));
    assert!(
        text(&output.stderr).contains("line 3"),
        "{}",
        text(&output.stderr)
    );

    // Read-only: the log is as it was.
    std::fs::remove_file(dir.path().join(evlog::CONFIG_FILE)).unwrap();
    let log = Log::open(dir.path(), fast()).unwrap();
    assert_eq!(log.last_seq(), Some(4));
}
