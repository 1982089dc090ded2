//! The query commands of `evlog` (`query`, `chain`, `latest`, `stats`,
//! `at`, `verify`, `reindex`): every answer checked against a scan of the
//! log or the library's own answer, the exit codes of the contract, the
//! scan fallback while an application holds the indexes, and that the
//! read commands change no file.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Output;
use std::time::{Duration, Instant};

use evlog::workload::{Workload, WorkloadConfig};
use evlog::{Event, Log, LogReader, LoggedEvent, Options, Uuid};
use serde_json::{json, Value};

use crate::common::{
    assert_no_data_directory, assert_unchanged, cli_ok, flip_byte, records, run_cli, said,
    segment_files, tempdir, text, tree,
};

/// Events of the reference workload in the test log (several segments of
/// 64 KiB, so that one can be damaged while sealed).
const WORKLOAD_EVENTS: u64 = 3_000;

/// Timestamps of the hand-made events: 2026-03-01T00:00:00Z, after the
/// whole workload, in microseconds.
const HAND_MADE_START_US: i64 = 1_772_323_200_000_000;
const MICROS_PER_MINUTE: i64 = 60_000_000;

/// The hand-made events: a causation tree in one correlation, and an
/// entity whose id holds a '/', changed three times a minute apart.
struct HandMade {
    correlation: Uuid,
    /// root -> (b -> d), (c)
    root: Uuid,
    b: Uuid,
    c: Uuid,
    d: Uuid,
}

fn id(n: u128) -> Uuid {
    Uuid::from_u128(0xc11_0000_0000_0000_0000_0000_0000_0000 | n)
}

fn options() -> Options {
    Options::default()
        .durability(evlog::Durability::OsBuffered)
        .segment_bytes_max(64 * 1024)
        .preallocate_bytes(0)
}

fn wait_indexed(log: &Log) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while log.index_lag() > 0 {
        assert!(
            Instant::now() < deadline,
            "indexer stuck: {:?}",
            log.index_status()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// A closed, fully indexed log: the workload, then the hand-made events.
fn build_log(dir: &Path) -> HandMade {
    let log = Log::open(dir, options()).expect("open");
    let generated: Vec<Event> = Workload::new(WorkloadConfig::new(WORKLOAD_EVENTS))
        .map(|g| g.event())
        .collect();
    // A batch must fit in one 64 KiB segment.
    for chunk in generated.chunks(100) {
        log.append_batch(chunk).expect("append workload");
    }
    let made = HandMade {
        correlation: id(100),
        root: id(1),
        b: id(2),
        c: id(3),
        d: id(4),
    };
    let at = |minute: i64| HAND_MADE_START_US + minute * MICROS_PER_MINUTE;
    let event = |n: Uuid, kind: &str, minute: i64| {
        Event::new(kind)
            .id(n)
            .correlation_id(made.correlation)
            .timestamp_us(at(minute))
            .actor("cli-tester")
            .session("cli-session")
    };
    let changes = |status: &str, owner: &str| json!({"changes": {"status": {"after": status}, "owner": {"after": owner}}});
    let hand_made = [
        event(made.root, "task.created", 0)
            .entity("task", "T/1")
            .json_payload(&changes("new", "ann"))
            .expect("payload"),
        event(made.b, "validation.phase.started", 1)
            .causation_id(made.root)
            .entity("task", "T/1")
            .metadata("link.sprint", "S-1")
            .json_payload(&changes("checking", "ann"))
            .expect("payload"),
        event(made.c, "validation.phase.failed", 2)
            .causation_id(made.root)
            .entity("task", "T-2"),
        event(made.d, "task.status_changed", 3)
            .causation_id(made.b)
            .entity("task", "T/1")
            .json_payload(&changes("done", "bob"))
            .expect("payload"),
    ];
    for event in hand_made {
        log.append(event).expect("append hand-made");
    }
    wait_indexed(&log);
    log.close().expect("close");
    made
}

fn json_lines(out: &str) -> Vec<Value> {
    out.lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{line:?}: {e}")))
        .collect()
}

fn all_events(dir: &Path) -> Vec<LoggedEvent> {
    let view = LogReader::open(dir).expect("open read-only");
    view.iter(..)
        .expect("iter")
        .map(|e| e.expect("event"))
        .collect()
}

/// What `query` must print for the events a scan keeps: `replay`'s lines.
fn lines_of<'a>(events: impl IntoIterator<Item = &'a LoggedEvent>) -> String {
    events
        .into_iter()
        .map(|e| format!("{}\n", evlog::json::event_to_json(e)))
        .collect()
}

fn rfc3339(timestamp_us: i64) -> String {
    evlog::json::format_timestamp(timestamp_us)
}

fn is_task_t1(e: &LoggedEvent) -> bool {
    e.entity
        .as_ref()
        .is_some_and(|x| x.entity_type == "task" && x.entity_id == "T/1")
}

// Proves that query by correlation, entity, session, actor and type pattern, alone and combined with a time window and a limit, prints exactly the replay lines of the events a scan of the log selects.
#[test]
fn cli_query_by_each_key_matches_a_scan() {
    let root = tempdir();
    let dir = root.path();
    let made = build_log(dir);
    let events = all_events(dir);
    let scan = |keep: &dyn Fn(&LoggedEvent) -> bool| lines_of(events.iter().filter(|e| keep(e)));
    for sample in events.iter().step_by(431) {
        let correlation = sample.correlation_id.expect("workload events have one");
        assert_eq!(
            cli_ok(dir, &["query", "--correlation", &correlation.to_string()]),
            scan(&|e| e.correlation_id == Some(correlation))
        );
        let entity = sample.entity.clone().expect("entity");
        let entity_arg = format!("{}/{}", entity.entity_type, entity.entity_id);
        assert_eq!(
            cli_ok(dir, &["query", "--entity", &entity_arg]),
            scan(&|e| e.entity.as_ref() == Some(&entity))
        );
        let session = sample.session.clone().expect("session");
        assert_eq!(
            cli_ok(dir, &["query", "--session", &session]),
            scan(&|e| e.session.as_ref() == Some(&session))
        );
        let actor = sample.actor.clone().expect("actor");
        assert_eq!(
            cli_ok(dir, &["query", "--actor", &actor]),
            scan(&|e| e.actor.as_ref() == Some(&actor))
        );
        // A type pattern in a window of 200 ms (since inclusive, until
        // exclusive, both on an event's exact timestamp).
        let since = sample.timestamp_us;
        let until = since + 200_000;
        let windowed = cli_ok(
            dir,
            &[
                "query",
                "--type",
                "validation.*",
                "--since",
                &rfc3339(since),
                "--until",
                &rfc3339(until),
            ],
        );
        assert_eq!(
            windowed,
            scan(&|e| e.event_type.starts_with("validation.")
                && e.timestamp_us >= since
                && e.timestamp_us < until)
        );
        // A time window alone is a query too.
        assert_eq!(
            cli_ok(
                dir,
                &[
                    "query",
                    "--since",
                    &rfc3339(since),
                    "--until",
                    &rfc3339(until)
                ]
            ),
            scan(&|e| e.timestamp_us >= since && e.timestamp_us < until)
        );
    }
    // The until bound is exclusive: an event exactly at it is left out.
    let last = events.last().expect("events");
    let before_last = cli_ok(dir, &["query", "--until", &rfc3339(last.timestamp_us)]);
    assert_eq!(
        before_last,
        scan(&|e| e.timestamp_us < last.timestamp_us),
        "--until is exclusive"
    );
    // Keys combine: entity (an id with a '/') and type pattern and since.
    let combined = cli_ok(
        dir,
        &[
            "query",
            "--entity",
            "task/T/1",
            "--type",
            "validation.*",
            "--since",
            &rfc3339(HAND_MADE_START_US),
        ],
    );
    let expected = scan(&|e| {
        is_task_t1(e)
            && e.event_type.starts_with("validation.")
            && e.timestamp_us >= HAND_MADE_START_US
    });
    assert_eq!(combined, expected);
    assert_eq!(json_lines(&combined).len(), 1, "{combined}");
    assert_eq!(json_lines(&combined)[0]["id"], json!(made.b.to_string()));
    let t1 = cli_ok(dir, &["query", "--entity", "task/T/1"]);
    assert_eq!(t1, scan(&is_task_t1));
    assert_eq!(json_lines(&t1).len(), 3);
    // --limit: the first N in sequence order.
    let limited = cli_ok(dir, &["query", "--type", "validation.*", "--limit", "3"]);
    let all_validation: Vec<&LoggedEvent> = events
        .iter()
        .filter(|e| e.event_type.starts_with("validation."))
        .collect();
    assert!(all_validation.len() > 3);
    assert_eq!(limited, lines_of(all_validation.iter().take(3).copied()));
    // Nothing found is an empty answer, not an error.
    assert_eq!(cli_ok(dir, &["query", "--actor", "nobody-at-all"]), "");
}

// Proves that chain prints the causation chain root first as replay lines when piped (and with --json), that --descendants prints the tree parents first with a depth field, and that an unknown id exits 1.
#[test]
fn cli_chain_and_descendants() {
    let root = tempdir();
    let dir = root.path();
    let made = build_log(dir);
    let events = all_events(dir);
    let by_id = |id: Uuid| events.iter().find(|e| e.id == id).expect("hand-made event");
    let chain = cli_ok(dir, &["chain", &made.d.to_string()]);
    assert_eq!(
        chain,
        lines_of([by_id(made.root), by_id(made.b), by_id(made.d)])
    );
    assert_eq!(
        cli_ok(dir, &["chain", "--json", &made.d.to_string()]),
        chain
    );
    assert_eq!(
        cli_ok(dir, &["chain", &made.root.to_string()]),
        lines_of([by_id(made.root)])
    );

    let tree = json_lines(&cli_ok(
        dir,
        &["chain", "--descendants", &made.root.to_string()],
    ));
    let expected = [(made.root, 0), (made.b, 1), (made.d, 2), (made.c, 1)];
    assert_eq!(tree.len(), expected.len(), "{tree:?}");
    for (object, (id, depth)) in tree.iter().zip(expected) {
        let mut without_depth = object.clone();
        let removed = without_depth
            .as_object_mut()
            .expect("an object")
            .remove("depth");
        assert_eq!(removed, Some(json!(depth)), "{object}");
        let replayed: Value =
            serde_json::from_str(evlog::json::event_to_json(by_id(id)).get()).expect("json");
        assert_eq!(without_depth, replayed, "the fields of replay");
    }
    // The library's tree of a workload event, through the CLI.
    let view = LogReader::open(dir).expect("open read-only");
    let sample = &events[100];
    let library: Vec<(usize, u64)> = view
        .descendants(sample.id)
        .expect("descendants")
        .walk()
        .iter()
        .map(|(depth, e)| (*depth, e.seq))
        .collect();
    let printed: Vec<(usize, u64)> = json_lines(&cli_ok(
        dir,
        &["chain", "--descendants", "--json", &sample.id.to_string()],
    ))
    .iter()
    .map(|o| {
        (
            o["depth"].as_u64().expect("depth") as usize,
            o["seq"].as_u64().expect("seq"),
        )
    })
    .collect();
    assert_eq!(printed, library);
    assert!(printed.len() > 1, "a workload event causes the next");

    let unknown = id(999).to_string();
    for args in [
        vec!["chain", unknown.as_str()],
        vec!["chain", "--descendants", unknown.as_str()],
    ] {
        let output = run_cli(dir, &args);
        assert_eq!(output.status.code(), Some(1), "{args:?}: {}", said(&output));
        assert!(output.stdout.is_empty(), "{}", said(&output));
        assert!(text(&output.stderr).contains(&unknown), "{}", said(&output));
    }
}

// Proves that latest prints the last event of an entity (ids may hold '/'), that at prints the library's reconstructed state at a time, and that an entity without events (by then) exits 1.
#[test]
fn cli_latest_and_at() {
    let root = tempdir();
    let dir = root.path();
    let made = build_log(dir);
    let events = all_events(dir);
    let last_t1 = events
        .iter()
        .rev()
        .find(|e| is_task_t1(e))
        .expect("T/1 has events");
    assert_eq!(last_t1.id, made.d);
    assert_eq!(cli_ok(dir, &["latest", "task/T/1"]), lines_of([last_t1]));
    let sample = &events[1234];
    let entity = sample.entity.clone().expect("entity");
    let last_of_sample = events
        .iter()
        .rev()
        .find(|e| e.entity.as_ref() == Some(&entity))
        .expect("the sample's entity");
    assert_eq!(
        cli_ok(
            dir,
            &[
                "latest",
                &format!("{}/{}", entity.entity_type, entity.entity_id)
            ]
        ),
        lines_of([last_of_sample])
    );

    let view = LogReader::open(dir).expect("open read-only");
    let at =
        |minute: i64, extra_us: i64| HAND_MADE_START_US + minute * MICROS_PER_MINUTE + extra_us;
    for (time_us, state) in [
        (at(0, 0), json!({"status": "new", "owner": "ann"})),
        (
            at(1, 30_000_000),
            json!({"status": "checking", "owner": "ann"}),
        ),
        (at(3, 0), json!({"status": "done", "owner": "bob"})),
    ] {
        let printed = cli_ok(dir, &["at", "task/T/1", &rfc3339(time_us)]);
        let printed: Value = serde_json::from_str(printed.trim()).expect("one JSON value");
        assert_eq!(printed, state, "at {}", rfc3339(time_us));
        assert_eq!(
            printed,
            view.state_at("task", "T/1", time_us).expect("state_at")
        );
    }
    // Any RFC 3339 offset names the same instant.
    let printed = cli_ok(dir, &["at", "task/T/1", "2026-03-01T01:01:00+01:00"]);
    assert_eq!(
        serde_json::from_str::<Value>(printed.trim()).expect("json"),
        json!({"status": "checking", "owner": "ann"})
    );

    for args in [
        vec!["latest", "task/nobody"],
        vec!["at", "task/nobody", "2026-03-01T00:00:00Z"],
        // Its first event is at 2026-03-01T00:00:00Z.
        vec!["at", "task/T/1", "2026-02-28T23:59:59.999999Z"],
    ] {
        let output = run_cli(dir, &args);
        assert_eq!(output.status.code(), Some(1), "{args:?}: {}", said(&output));
        assert!(output.stdout.is_empty(), "{args:?}: {}", said(&output));
        assert!(
            text(&output.stderr).contains("has no events"),
            "{args:?}: {}",
            said(&output)
        );
    }
}

fn count_sum(object: &Value) -> u64 {
    object
        .as_object()
        .expect("an object of counts")
        .values()
        .map(|n| n.as_u64().expect("a count"))
        .sum()
}

// Proves that stats --json totals the events, that each breakdown sums to the total and equals the library's stats, that a window counts what a scan counts, that --by keeps only total and that key, and that the table is printed without --json.
#[test]
fn cli_stats() {
    let root = tempdir();
    let dir = root.path();
    build_log(dir);
    let events = all_events(dir);
    let stats: Value =
        serde_json::from_str(cli_ok(dir, &["stats", "--json"]).trim()).expect("one JSON object");
    let keys: Vec<&str> = stats
        .as_object()
        .expect("object")
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        keys,
        [
            "total",
            "by_type",
            "by_actor",
            "by_priority",
            "by_hour",
            "by_day"
        ]
    );
    let total = events.len() as u64;
    assert_eq!(stats["total"], json!(total));
    for key in ["by_type", "by_priority", "by_hour", "by_day"] {
        assert_eq!(count_sum(&stats[key]), total, "{key} sums to the total");
    }
    // Every event of this log has an actor.
    assert_eq!(count_sum(&stats["by_actor"]), total);
    let mut by_type: BTreeMap<String, u64> = BTreeMap::new();
    for event in &events {
        *by_type.entry(event.event_type.clone()).or_default() += 1;
    }
    assert_eq!(stats["by_type"], json!(by_type));
    let library = LogReader::open(dir)
        .expect("open read-only")
        .stats(..)
        .expect("stats");
    assert_eq!(stats["by_actor"], json!(library.by_actor));
    let priorities: BTreeMap<String, u64> = library
        .by_priority
        .iter()
        .map(|(p, n)| (p.to_string(), *n))
        .collect();
    assert_eq!(stats["by_priority"], json!(priorities));
    assert_eq!(
        stats["by_day"],
        json!({"2026-01-01T00:00:00Z": WORKLOAD_EVENTS, "2026-03-01T00:00:00Z": 4})
    );
    assert_eq!(stats["by_hour"]["2026-03-01T00:00:00Z"], json!(4));

    // A window that cuts minutes in the middle.
    let since = events[700].timestamp_us + 17;
    let until = events[2600].timestamp_us + 5;
    let windowed: Value = serde_json::from_str(
        cli_ok(
            dir,
            &[
                "stats",
                "--json",
                "--since",
                &rfc3339(since),
                "--until",
                &rfc3339(until),
            ],
        )
        .trim(),
    )
    .expect("json");
    let in_window = events
        .iter()
        .filter(|e| e.timestamp_us >= since && e.timestamp_us < until)
        .count() as u64;
    assert_eq!(windowed["total"], json!(in_window));
    assert_eq!(count_sum(&windowed["by_type"]), in_window);

    for (by, key) in [
        ("type", "by_type"),
        ("actor", "by_actor"),
        ("priority", "by_priority"),
        ("hour", "by_hour"),
        ("day", "by_day"),
    ] {
        let only: Value =
            serde_json::from_str(cli_ok(dir, &["stats", "--json", "--by", by]).trim())
                .expect("json");
        let keys: Vec<&String> = only.as_object().expect("object").keys().collect();
        assert_eq!(keys, ["total", key], "--by {by}");
        assert_eq!(only[key], stats[key], "--by {by}");
    }

    let table = cli_ok(dir, &["stats"]);
    assert!(table.starts_with(&format!("total {total}\n")), "{table}");
    for key in [
        "by_type:",
        "by_actor:",
        "by_priority:",
        "by_hour:",
        "by_day:",
    ] {
        assert!(table.lines().any(|l| l == key), "{key} in {table}");
    }
    let table = cli_ok(dir, &["stats", "--by", "priority"]);
    assert_eq!(table.lines().nth(1), Some("by_priority:"), "{table}");
    assert_eq!(table.lines().count(), 2 + priorities.len(), "{table}");
}

fn verify_report(output: &Output) -> Value {
    serde_json::from_str(text(&output.stdout).trim())
        .unwrap_or_else(|e| panic!("verify prints one JSON object ({e}): {}", said(output)))
}

// Proves that verify exits 0 with ok true on a sound log (index entries checked), and exits 1 with ok false and a problem after a byte in the middle of a sealed segment is flipped.
#[test]
fn cli_verify_sound_then_damaged() {
    let root = tempdir();
    let dir = root.path();
    build_log(dir);
    let output = run_cli(dir, &["verify"]);
    assert_eq!(output.status.code(), Some(0), "{}", said(&output));
    let report = verify_report(&output);
    let total = WORKLOAD_EVENTS + 4;
    assert_eq!(report["ok"], json!(true), "{report}");
    assert_eq!(report["events_checked"], json!(total), "{report}");
    assert_eq!(report["index_available"], json!(true), "{report}");
    assert!(
        report["index_entries_checked"].as_u64() > Some(total),
        "{report}"
    );
    assert_eq!(report["problems"], json!([]), "{report}");

    let segments = segment_files(dir);
    assert!(segments.len() > 3, "{segments:?}");
    let sealed = &segments[1];
    let in_sealed = records(sealed);
    let middle = in_sealed[in_sealed.len() / 2];
    flip_byte(sealed, middle.body_byte(20), 0x40);
    let output = run_cli(dir, &["verify"]);
    assert_eq!(output.status.code(), Some(1), "{}", said(&output));
    let report = verify_report(&output);
    assert_eq!(report["ok"], json!(false), "{report}");
    let problems = report["problems"].as_array().expect("problems");
    assert!(!problems.is_empty(), "{report}");
    assert!(
        report["events_checked"].as_u64() < Some(total),
        "stops at the damaged record: {report}"
    );
}

// Proves that reindex prints the seq it rebuilt through, that queries answer the same after it, and that it exits 2 while an application holds the log.
#[test]
fn cli_reindex() {
    let root = tempdir();
    let dir = root.path();
    let made = build_log(dir);
    let before = cli_ok(
        dir,
        &["query", "--correlation", &made.correlation.to_string()],
    );
    let stats_before = cli_ok(dir, &["stats", "--json"]);
    let output = run_cli(dir, &["reindex"]);
    assert_eq!(output.status.code(), Some(0), "{}", said(&output));
    assert_eq!(
        json_lines(&text(&output.stdout)),
        [json!({"reindexed_through": WORKLOAD_EVENTS + 4})],
        "{}",
        said(&output)
    );
    // Not a terminal: no progress bar on stderr.
    assert!(output.stderr.is_empty(), "{}", said(&output));
    assert_eq!(
        cli_ok(
            dir,
            &["query", "--correlation", &made.correlation.to_string()]
        ),
        before
    );
    assert_eq!(cli_ok(dir, &["stats", "--json"]), stats_before);
    assert_eq!(verify_report(&run_cli(dir, &["verify"]))["ok"], json!(true));
    let info = json_lines(&cli_ok(dir, &["info"])).remove(0);
    assert_eq!(
        info["index"],
        json!({"available": true, "indexed_through": WORKLOAD_EVENTS + 4, "unavailable_because": null}),
        "{info}"
    );

    let log = Log::open(dir, options()).expect("open");
    // The writer's process holds the indexes: a view says it cannot use them.
    let info = json_lines(&cli_ok(dir, &["info"])).remove(0);
    assert_eq!(info["index"]["available"], json!(false), "{info}");
    assert!(info["index"]["unavailable_because"].is_string(), "{info}");
    let output = run_cli(dir, &["reindex"]);
    assert_eq!(output.status.code(), Some(2), "{}", said(&output));
    assert!(output.stdout.is_empty(), "{}", said(&output));
    assert!(
        text(&output.stderr).contains("lock"),
        "names the lock: {}",
        said(&output)
    );
    log.close().expect("close");
}

// Proves that while this process has the log open (and so holds the index store's lock), every read command gives the same answer as with the log closed, with a note on stderr that it comes from a scan of the log.
#[test]
fn cli_read_commands_while_the_log_is_open() {
    let root = tempdir();
    let dir = root.path();
    let made = build_log(dir);
    let events = all_events(dir);
    let sample = &events[2222];
    let entity = sample.entity.clone().expect("entity");
    let entity_arg = format!("{}/{}", entity.entity_type, entity.entity_id);
    let correlation = made.correlation.to_string();
    let root_id = made.root.to_string();
    let d_id = made.d.to_string();
    let since = rfc3339(events[500].timestamp_us);
    let until = rfc3339(events[1500].timestamp_us + 7);
    let commands: Vec<Vec<&str>> = vec![
        vec!["query", "--correlation", &correlation],
        vec!["query", "--entity", &entity_arg],
        vec![
            "query",
            "--type",
            "validation.*",
            "--since",
            &since,
            "--until",
            &until,
        ],
        vec!["chain", &d_id],
        vec!["chain", "--descendants", &root_id],
        vec!["latest", &entity_arg],
        vec!["at", "task/T/1", "2026-03-02T00:00:00Z"],
        vec!["stats", "--json", "--since", &since, "--until", &until],
        vec!["stats", "--json"],
    ];
    let closed: Vec<String> = commands.iter().map(|args| cli_ok(dir, args)).collect();
    let verified = verify_report(&run_cli(dir, &["verify"]));
    assert_eq!(verified["index_available"], json!(true));

    let log = Log::open(dir, options()).expect("open");
    // The application appends meanwhile; the answers above do not change
    // (a new event with another correlation, entity and time).
    log.append(
        Event::new("other.thing")
            .timestamp_us(HAND_MADE_START_US + 86_400_000_000)
            .entity("task", "elsewhere"),
    )
    .expect("append");
    log.sync().expect("sync");
    // The indexer has the store open (and locked) once it has caught up.
    wait_indexed(&log);
    assert!(log.index_status().available, "{:?}", log.index_status());
    for (args, expected) in commands.iter().zip(&closed) {
        let output = run_cli(dir, args);
        assert_eq!(output.status.code(), Some(0), "{args:?}: {}", said(&output));
        let stdout = text(&output.stdout);
        if args[..2] == ["stats", "--json"] && args.len() == 2 {
            // All-time stats count the new event too.
            let stats: Value = serde_json::from_str(stdout.trim()).expect("json");
            assert_eq!(stats["total"], json!(WORKLOAD_EVENTS + 5), "{args:?}");
            assert_eq!(stats["by_type"]["other.thing"], json!(1), "{args:?}");
        } else {
            assert_eq!(&stdout, expected, "{args:?}");
        }
        let stderr = text(&output.stderr);
        assert_eq!(stderr.lines().count(), 1, "one note: {}", said(&output));
        assert!(
            stderr.contains("note") && stderr.contains("scan of the log"),
            "{args:?}: {}",
            said(&output)
        );
    }
    let output = run_cli(dir, &["verify"]);
    assert_eq!(output.status.code(), Some(0), "{}", said(&output));
    let report = verify_report(&output);
    assert_eq!(report["ok"], json!(true), "{report}");
    assert_eq!(report["index_available"], json!(false), "{report}");
    assert_eq!(report["events_checked"], json!(WORKLOAD_EVENTS + 5));
    assert!(text(&output.stderr).contains("scan of the log"));
    log.close().expect("close");
}

// Proves that query, chain, latest, stats, at and verify create nothing on a missing directory and leave every byte of an existing log (index included) as it was, found or not found.
#[test]
fn cli_query_commands_write_nothing() {
    let root = tempdir();
    let missing = root.path().join("missing");
    let unknown = id(999).to_string();
    let commands: [&[&str]; 8] = [
        &["query", "--actor", "cli-tester"],
        &["chain", &unknown],
        &["chain", "--descendants", &unknown],
        &["latest", "task/T/1"],
        &["stats", "--json"],
        &["stats"],
        &["at", "task/T/1", "2026-03-02T00:00:00Z"],
        &["verify"],
    ];
    for args in commands {
        assert_no_data_directory(&missing, args);
        assert!(!missing.exists(), "{args:?} created {}", missing.display());
    }

    let dir = root.path().join("d");
    let made = build_log(&dir);
    // A writer's LOCK stays behind; without it, a reader that took the
    // lock would show up as a new file.
    std::fs::remove_file(dir.join("LOCK")).expect("remove LOCK");
    let before = tree(&dir);
    assert!(before.keys().any(|p| p.starts_with("index")), "{before:?}");
    for args in commands {
        let output = run_cli(&dir, args);
        assert!(
            matches!(output.status.code(), Some(0 | 1)),
            "{args:?}: {}",
            said(&output)
        );
    }
    let root_id = made.root.to_string();
    for args in [
        vec!["chain", "--descendants", root_id.as_str()],
        vec!["chain", root_id.as_str()],
    ] {
        assert!(!cli_ok(&dir, &args).is_empty());
    }
    assert_unchanged(&before, &tree(&dir), "the read commands");
}

// Proves that usage errors exit 2 with nothing on stdout: a query without any condition, numeric or malformed times, TYPE/ID without '/', a bad type pattern, a malformed UUID, an unknown --by.
#[test]
fn cli_query_usage_errors_exit_2() {
    let root = tempdir();
    let dir = root.path();
    build_log(dir);
    let cases: [&[&str]; 12] = [
        &["query"],
        &["query", "--limit", "5"],
        &["query", "--since", "1767225600"],
        &["query", "--until", "2026-13-01T00:00:00Z"],
        &["query", "--entity", "task"],
        &["query", "--type", "validation..x"],
        &["query", "--correlation", "not-a-uuid"],
        &["latest", "T-1"],
        &["at", "task/T/1", "1767225600000000"],
        &["chain", "not-a-uuid"],
        &["stats", "--by", "week"],
        &["stats", "--since", "yesterday"],
    ];
    for args in cases {
        let output = run_cli(dir, args);
        assert_eq!(output.status.code(), Some(2), "{args:?}: {}", said(&output));
        assert!(output.stdout.is_empty(), "{args:?}: {}", said(&output));
        assert!(!output.stderr.is_empty(), "{args:?}: {}", said(&output));
    }
    // The message names what is wrong.
    let output = run_cli(dir, &["query", "--entity", "task"]);
    assert!(
        text(&output.stderr).contains("TYPE/ID"),
        "{}",
        said(&output)
    );
    let output = run_cli(dir, &["query", "--since", "1767225600"]);
    assert!(
        text(&output.stderr).contains("RFC 3339"),
        "{}",
        said(&output)
    );
}

/// The number that follows `before` in `line` (digits and a dot).
fn number_after(line: &str, before: &str) -> f64 {
    line.split(before)
        .nth(1)
        .map(|rest| {
            rest.chars()
                .take_while(|c| c.is_ascii_digit() || *c == '.')
                .collect::<String>()
        })
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no number after {before:?} in {line}"))
}

// Proves that the demo shows every capability that has landed, each with
// figures that hold: the live subscriber got every matching event, the
// indexes caught up, the retention rules the demo wrote are in force and
// their dry run plans archives, the archive run archived sealed segments
// at a ratio below 1 and an archived event reads back as `replay` shows
// it, verify (the demo's and evlog-dump's) found the log sound, the
// summary repeats the measured figures, and a second run goes on with new
// sequence numbers and ids and archives again.
#[test]
fn cli_demo_tours_queries_subscriptions_rules_and_verify() {
    let root = tempdir();
    let dir = root.path().join("demo");
    let mut last_seq_before = 0u64;
    for round in 0..2 {
        let out = cli_ok(&dir, &["demo", "--events", "5000"]);
        let line = |prefix: &str| {
            out.lines()
                .find(|l| l.starts_with(prefix))
                .unwrap_or_else(|| panic!("round {round}: no line starting {prefix:?}:\n{out}"))
                .to_string()
        };
        let appended = line("appended 5000 events");
        if round == 0 {
            assert!(appended.contains("seq 1..=5000"), "{appended}");
        } else {
            // After the first run's events and what its rules appended.
            let first: u64 = appended
                .split("seq ")
                .nth(1)
                .and_then(|rest| rest.split("..").next())
                .and_then(|n| n.parse().ok())
                .unwrap_or_else(|| panic!("{appended}"));
            assert!(first > 5001, "{appended}");
        }
        assert!(line("secondary indexes current").contains("ms after the last append"));
        let subscriber = line("a live subscriber to validation.* received ");
        let counts: Vec<&str> = subscriber
            .split_whitespace()
            .filter(|w| w.chars().all(|c| c.is_ascii_digit()))
            .collect();
        assert_eq!(counts.len(), 2, "{subscriber}");
        assert_eq!(counts[0], counts[1], "{subscriber}");
        assert!(line("correlation ").contains(" events, from "));
        assert!(line("entity ").contains("its state at"));
        let stats = line("stats of all ");
        let total: usize = stats["stats of all ".len()..]
            .split(' ')
            .next()
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("{stats}"));
        assert!(total >= (round + 1) * 5000, "{stats}");
        assert!(
            line("automation rules (").contains("sprint-completion"),
            "{out}"
        );
        // Each shipped rule fired once on this run's sprint.
        for (output, rule) in [
            ("orchestration.session.started", "sprint-session-start"),
            (
                "orchestration.notification.task_blocked",
                "task-blocked-notification",
            ),
            ("orchestration.alert.p0_task", "task-p0-alert"),
            ("orchestration.sprint.status_changed", "sprint-completion"),
        ] {
            let by = format!(" {output} by {rule}, from #");
            assert_eq!(
                out.lines().filter(|l| l.contains(&by)).count(),
                1,
                "{by}:\n{out}"
            );
        }
        assert!(line("verify: ").ends_with("sound"), "{out}");

        // Retention: the rule of the evlog.toml the demo wrote, and a plan.
        assert!(
            line("retention rules in force, from ").contains("(the demo wrote it"),
            "{out}"
        );
        assert!(line("  archive-after-30d: ").contains("30d old"), "{out}");
        let plan = line("retention dry run (nothing changes): archive ");
        assert!(number_after(&plan, "archive ") >= 1.0, "{plan}");
        assert!(plan.contains("by rule archive-after-30d"), "{plan}");
        // The archive run, with figures that hold together.
        let run = line("archive run (");
        let pieces = number_after(&run, "archived ");
        assert!(pieces >= 1.0, "{run}");
        let live_bytes: f64 = run
            .split(" live bytes")
            .next()
            .and_then(|before| before.split_whitespace().last())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("{run}"));
        let archive_bytes = number_after(&run, " into ");
        let ratio = number_after(&run, "compression ratio ");
        assert!(ratio > 0.0 && ratio < 1.0, "{run}");
        assert!(
            (archive_bytes / live_bytes - ratio).abs() < 0.001,
            "ratio {ratio} is not {archive_bytes} / {live_bytes}: {run}"
        );
        assert!(number_after(&run, " s, ") > 0.0, "{run}");
        // The archived event the demo read back is the one replay reads.
        let read_back = line("an archived event reads back: get(");
        let seq = number_after(&read_back, "get(") as u64;
        let event_type = read_back
            .split(") is ")
            .nth(1)
            .and_then(|rest| rest.split(',').next())
            .unwrap_or_else(|| panic!("{read_back}"));
        let seq_text = seq.to_string();
        let replayed = cli_ok(&dir, &["replay", "--from", &seq_text, "--to", &seq_text]);
        let replayed: Value = serde_json::from_str(replayed.trim()).expect("one event");
        assert_eq!(replayed["seq"], json!(seq), "{read_back}");
        assert_eq!(replayed["type"], json!(event_type), "{read_back}");
        let archive_name = format!("{:020}.evz", seq);
        let archived_files: Vec<String> = std::fs::read_dir(dir.join("archive"))
            .expect("archive dir")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        let source = read_back
            .split("from archive/")
            .nth(1)
            .and_then(|rest| rest.split(';').next())
            .unwrap_or_else(|| panic!("{read_back}"));
        assert!(
            archived_files.iter().any(|f| f == source) && source <= archive_name.as_str(),
            "{read_back}: {archived_files:?}"
        );
        assert!(
            number_after(&read_back, "events, ") >= 1.0,
            "the event itself answers its query from an archive: {read_back}"
        );
        // The summary repeats what the run measured.
        assert!(number_after(&line("  append: "), "append: ") > 0.0, "{out}");
        let on_disk = line("  on disk after close: ");
        assert!(number_after(&on_disk, "close: ") > 0.0, "{on_disk}");
        if round == 0 {
            // Every archive was written by this run.
            let archives = format!("archives {} bytes", archive_bytes as u64);
            assert!(on_disk.contains(&archives), "{on_disk}");
        }
        let summary_ratio = number_after(
            &line("  compression ratio of this run's archive run: "),
            "run: ",
        );
        assert_eq!(format!("{summary_ratio:.3}"), format!("{ratio:.3}"));
        assert!(line("try: ").contains("replay --from"), "{out}");
        assert!(out.contains("retention --dry-run") && out.contains("--verify"));

        // The directory is sound for the offline inspector too.
        let dump = std::process::Command::new(env!("CARGO_BIN_EXE_evlog-dump"))
            .arg(&dir)
            .arg("--verify")
            .output()
            .expect("run evlog-dump");
        assert_eq!(dump.status.code(), Some(0), "{}", said(&dump));
        // Every event of the log once: ids unique, this run's seqs new.
        let replayed = cli_ok(&dir, &["replay"]);
        let mut ids = std::collections::HashSet::new();
        let mut last_seq = 0u64;
        for event_line in replayed.lines() {
            let event: Value = serde_json::from_str(event_line).expect("event json");
            let id = event["id"].as_str().expect("id").to_string();
            assert!(ids.insert(id.clone()), "round {round}: id {id} twice");
            last_seq = event["seq"].as_u64().expect("seq");
        }
        assert!(last_seq > last_seq_before, "round {round}");
        if round == 1 {
            assert!(
                appended.contains(&format!("seq {}..=", last_seq_before + 1)),
                "the second run starts after the first: {appended}"
            );
        }
        last_seq_before = last_seq;
    }
}

// Proves that `evlog completions SHELL` prints completions naming the
// subcommands for every supported shell, touches no data directory, and
// refuses an unknown shell with exit 2.
#[test]
fn cli_completions_for_every_shell() {
    let root = tempdir();
    let dir = root.path().join("never-created");
    for shell in ["bash", "elvish", "fish", "powershell", "zsh"] {
        let out = cli_ok(&dir, &["completions", shell]);
        for subcommand in ["append", "replay", "query", "tail", "consumers", "reindex"] {
            assert!(out.contains(subcommand), "{shell}: no {subcommand}");
        }
    }
    assert!(!dir.exists(), "completions created the data directory");
    let out = run_cli(&dir, &["completions", "tcsh"]);
    assert_eq!(out.status.code(), Some(2), "{}", said(&out));
}
