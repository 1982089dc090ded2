//! Queries against the secondary indexes, compared with a scan of the log.

use std::collections::HashSet;
use std::time::Duration;

use evlog::workload::{Workload, WorkloadConfig};
use evlog::{Event, Log, LoggedEvent, Options};

use crate::common::tempdir;

fn options() -> Options {
    Options::default().durability(evlog::Durability::OsBuffered)
}

fn seqs(events: evlog::Result<evlog::Events>) -> Vec<u64> {
    events.unwrap().map(|e| e.unwrap().seq).collect()
}

fn wait_indexed(log: &Log) {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while log.index_lag() > 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "indexer stuck: {:?}",
            log.index_status()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn all_events(log: &Log) -> Vec<LoggedEvent> {
    log.iter(..).unwrap().map(|e| e.unwrap()).collect()
}

fn brute(events: &[LoggedEvent], keep: impl Fn(&LoggedEvent) -> bool) -> Vec<u64> {
    events.iter().filter(|e| keep(e)).map(|e| e.seq).collect()
}

#[test]
fn workload_queries_agree_with_a_scan_before_and_after_indexing() {
    let dir = tempdir();
    let log = Log::open(dir.path(), options()).unwrap();
    let generated: Vec<_> = Workload::new(WorkloadConfig::new(5_000)).collect();
    for chunk in generated.chunks(700) {
        let events: Vec<Event> = chunk.iter().map(|g| g.event()).collect();
        log.append_batch(&events).unwrap();
    }
    let events = all_events(&log);
    let check = |log: &Log| {
        for g in generated.iter().step_by(97) {
            assert_eq!(
                seqs(log.by_correlation(g.correlation_id)),
                brute(&events, |e| e.correlation_id == Some(g.correlation_id))
            );
            assert_eq!(
                seqs(log.entity_history(g.entity_type, &g.entity_id, ..)),
                brute(&events, |e| e
                    .entity
                    .as_ref()
                    .is_some_and(
                        |x| x.entity_type == g.entity_type && x.entity_id == g.entity_id
                    ))
            );
            assert_eq!(
                seqs(log.by_session(&g.session)),
                brute(&events, |e| e.session.as_deref() == Some(&g.session))
            );
            assert_eq!(
                seqs(log.by_actor(&g.actor)),
                brute(&events, |e| e.actor.as_deref() == Some(&g.actor))
            );
            let chain: Vec<u64> = log
                .causation_chain(g.id)
                .unwrap()
                .iter()
                .map(|e| e.seq)
                .collect();
            assert_eq!(*chain.last().unwrap(), g.index + 1);
            assert!(log.get(chain[0]).unwrap().causation_id.is_none());
            let t0 = g.timestamp_us;
            let t1 = t0 + 60_000;
            assert_eq!(
                seqs(log.by_type("validation.*", t0..t1)),
                brute(&events, |e| e.event_type.starts_with("validation.")
                    && e.timestamp_us >= t0
                    && e.timestamp_us < t1)
            );
            assert_eq!(
                seqs(log.between(t0..t1)),
                brute(&events, |e| e.timestamp_us >= t0 && e.timestamp_us < t1)
            );
            let tree = log.descendants(g.id).unwrap();
            let in_tree: HashSet<u64> = tree.walk().iter().map(|(_, e)| e.seq).collect();
            let expected: HashSet<u64> = brute(&events, |e| {
                e.correlation_id == Some(g.correlation_id) && e.seq > g.index
            })
            .into_iter()
            .collect();
            assert_eq!(in_tree, expected);
        }
        let stats = log.stats(..).unwrap();
        assert_eq!(stats.total, events.len() as u64);
        let t0 = events[1234].timestamp_us + 17;
        let t1 = events[3456].timestamp_us + 5;
        let window = log.stats(t0..t1).unwrap();
        assert_eq!(
            window.total,
            brute(&events, |e| e.timestamp_us >= t0 && e.timestamp_us < t1).len() as u64
        );
    };
    // Whatever the indexer has reached, answers are the same.
    check(&log);
    wait_indexed(&log);
    assert!(log.index_status().available);
    check(&log);
    let report = log.verify().unwrap();
    assert!(report.is_ok(), "{:?}", report.problems);
    assert!(report.index_entries_checked > 0);
    log.close().unwrap();
    // Reopened: the mark is trusted, nothing to catch up.
    let log = Log::open(dir.path(), options()).unwrap();
    wait_indexed(&log);
    assert_eq!(log.index_status().rebuilt_because, None);
    check(&log);
    log.close().unwrap();
    // Deleted index: rebuilt, same answers.
    std::fs::remove_dir_all(dir.path().join("index")).unwrap();
    let log = Log::open(dir.path(), options()).unwrap();
    check(&log);
    wait_indexed(&log);
    check(&log);
    log.close().unwrap();
}

#[test]
fn a_query_sees_an_event_as_soon_as_append_returns() {
    let dir = tempdir();
    let log = Log::open(dir.path(), options()).unwrap();
    let correlation = evlog::Uuid::now_v7();
    for i in 0..2_000u64 {
        log.append(
            Event::new("a.b")
                .correlation_id(correlation)
                .entity("task", format!("T-{}", i % 3)),
        )
        .unwrap();
        if i % 97 == 0 {
            assert_eq!(
                log.by_correlation(correlation).unwrap().count() as u64,
                i + 1
            );
            assert_eq!(
                log.latest("task", &format!("T-{}", i % 3))
                    .unwrap()
                    .unwrap()
                    .seq,
                i + 1
            );
        }
    }
}

#[test]
fn latest_state_at_and_history_follow_changes() {
    let dir = tempdir();
    let log = Log::open(dir.path(), options()).unwrap();
    let change = |field: &str, before: &str, after: &str, t: i64| {
        Event::new("task.status_changed")
            .entity("task", "T-1")
            .actor("agent-1")
            .timestamp_us(t)
            .json_payload(
                &serde_json::json!({"changes": {field: {"before": before, "after": after}}}),
            )
            .unwrap()
    };
    log.append(change("status", "", "pending", 100)).unwrap();
    log.append(change("status", "pending", "in_progress", 200))
        .unwrap();
    log.append(change("owner", "", "ann", 250)).unwrap();
    log.append(change("status", "in_progress", "done", 300))
        .unwrap();
    assert_eq!(
        log.state_at("task", "T-1", 99).unwrap(),
        serde_json::json!({})
    );
    assert_eq!(
        log.state_at("task", "T-1", 260).unwrap(),
        serde_json::json!({"status": "in_progress", "owner": "ann"})
    );
    assert_eq!(
        log.state_at("task", "T-1", 300).unwrap(),
        serde_json::json!({"status": "done", "owner": "ann"})
    );
    assert_eq!(log.latest("task", "T-1").unwrap().unwrap().seq, 4);
    assert_eq!(log.latest("task", "T-2").unwrap(), None);
    let history = log.history("task", "T-1").unwrap();
    assert_eq!(history.len(), 4);
    assert_eq!(history[3].after, serde_json::json!("done"));
    wait_indexed(&log);
    assert_eq!(
        log.state_at("task", "T-1", 260).unwrap(),
        serde_json::json!({"status": "in_progress", "owner": "ann"})
    );
}

#[test]
fn entity_chain_follows_links_both_ways() {
    let dir = tempdir();
    let log = Log::open(dir.path(), options()).unwrap();
    log.append(Event::new("sprint.created").entity("sprint", "S-1"))
        .unwrap();
    log.append(
        Event::new("task.created")
            .entity("task", "T-1")
            .metadata("link.sprint", "S-1"),
    )
    .unwrap();
    log.append(
        Event::new("task.created")
            .entity("task", "T-2")
            .metadata("link.sprint", "S-1"),
    )
    .unwrap();
    log.append(Event::new("task.created").entity("task", "T-3"))
        .unwrap();
    log.append(Event::new("task.done").entity("task", "T-1"))
        .unwrap();
    let check = |log: &Log| {
        assert_eq!(seqs(log.entity_chain("sprint", "S-1")), vec![1, 2, 3, 5]);
        assert_eq!(seqs(log.entity_chain("task", "T-1")), vec![1, 2, 5]);
        assert_eq!(seqs(log.entity_chain("task", "T-3")), vec![4]);
    };
    check(&log);
    wait_indexed(&log);
    check(&log);
}

#[test]
fn type_patterns_follow_the_written_rules() {
    let dir = tempdir();
    let log = Log::open(dir.path(), options()).unwrap();
    for t in [
        "validation",
        "validation.x",
        "validation.phase.completed",
        "db.error.timeout",
        "db.error",
        "a.db.error.x",
        "orchestration.task.status_changed",
    ] {
        log.append(Event::new(t)).unwrap();
    }
    let check = |log: &Log| {
        assert_eq!(seqs(log.by_type("validation.*", ..)), vec![2, 3]);
        assert_eq!(seqs(log.by_type("*.error.*", ..)), vec![4]);
        assert_eq!(seqs(log.by_type("*", ..)), vec![1, 2, 3, 4, 5, 6, 7]);
        assert_eq!(
            seqs(log.by_type("orchestration.task.status_changed", ..)),
            vec![7]
        );
        assert_eq!(
            seqs(log.by_type("validation.phase.completed.more", ..)),
            Vec::<u64>::new()
        );
        assert_eq!(seqs(log.by_type("*.error", ..)), vec![5]);
        assert!(log.by_type("a..b", ..).is_err());
        assert!(log.by_type("", ..).is_err());
    };
    check(&log);
    wait_indexed(&log);
    check(&log);
}

#[test]
fn queries_work_read_only_while_the_log_is_open() {
    let dir = tempdir();
    let log = Log::open(dir.path(), options()).unwrap();
    let correlation = evlog::Uuid::now_v7();
    for _ in 0..10 {
        log.append(Event::new("a.b").correlation_id(correlation))
            .unwrap();
    }
    wait_indexed(&log);
    let view = Log::open_read_only(dir.path()).unwrap();
    // The writer's process holds the index: the view scans.
    assert!(!view.index_status().available);
    assert_eq!(view.by_correlation(correlation).unwrap().count(), 10);
    log.close().unwrap();
    let view = Log::open_read_only(dir.path()).unwrap();
    assert!(view.index_status().available, "{:?}", view.index_status());
    assert_eq!(view.by_correlation(correlation).unwrap().count(), 10);
}

// A temporary log behaves like any other and leaves nothing behind, also
// when it is dropped rather than closed; an iterator that outlives it
// reports Closed instead of reading deleted files.
#[test]
fn a_temporary_log_is_removed_with_it() {
    let log = Log::open_temporary(options()).unwrap();
    let dir = log.dir().to_path_buf();
    let correlation = evlog::Uuid::now_v7();
    for _ in 0..5 {
        log.append(Event::new("a.b").correlation_id(correlation))
            .unwrap();
    }
    assert_eq!(log.by_correlation(correlation).unwrap().count(), 5);
    let mut iter = log.iter(..).unwrap();
    assert!(dir.join("segments").is_dir());
    drop(log);
    assert!(!dir.exists(), "{} survived its log", dir.display());
    assert!(matches!(iter.next(), Some(Err(evlog::Error::Closed))));
}

/// `Query::after_seq` pages an answer: with the indexes (the second half
/// of the log queried at once, so mostly still scanned) and without them,
/// every query's pages put together are its whole answer, each event once,
/// and a cursor past the end is empty.
#[test]
fn after_seq_pages_every_query_without_gap_or_repeat() {
    const PAGE: usize = 13;
    for indexes in [true, false] {
        let dir = tempdir();
        let log = Log::open(dir.path(), options().secondary_indexes(indexes)).unwrap();
        let events: Vec<Event> = Workload::new(WorkloadConfig::new(4_000))
            .map(|g| g.event())
            .collect();
        log.append_batch(&events[..2_000]).unwrap();
        if indexes {
            wait_indexed(&log);
        }
        log.append_batch(&events[2_000..]).unwrap();
        let sample = log.get(1_999).unwrap();
        let entity = sample.entity.clone().unwrap();
        let since = sample.timestamp_us - 400_000;
        let queries = [
            evlog::Query::all(),
            evlog::Query::correlation(sample.correlation_id.unwrap()),
            evlog::Query::entity(&entity.entity_type, &entity.entity_id),
            evlog::Query::all().event_type("validation.*"),
            evlog::Query::actor(sample.actor.as_deref().unwrap()).since(since),
            evlog::Query::all().since(since).until(since + 800_000),
        ];
        for query in queries {
            let whole = seqs(log.query(&query));
            assert!(whole.len() > 2 * PAGE, "{query:?}: too few to page");
            let mut paged: Vec<u64> = Vec::new();
            let mut after = 0;
            loop {
                let page = seqs(log.query(&query.clone().after_seq(after).limit(PAGE)));
                assert!(page.iter().all(|&seq| seq > after), "{query:?}");
                paged.extend(&page);
                match page.last() {
                    Some(&last) if page.len() == PAGE => after = last,
                    _ => break,
                }
            }
            assert_eq!(paged, whole, "{query:?}, indexes {indexes}");
            assert!(seqs(log.query(&query.clone().after_seq(4_000))).is_empty());
        }
    }
}

/// The calls `verify_with_progress` made, checked against its contract:
/// 0 first, then `done` never decreasing and never past a `total` that
/// stays the same, the last call at `total`, and no call per event.
fn check_verify_progress(calls: &[(u64, u64)], events: u64) {
    assert!(calls.len() >= 3, "{calls:?}");
    let total = calls[0].1;
    assert!(total >= events, "{total} checks for {events} events");
    assert_eq!(calls[0].0, 0, "{calls:?}");
    assert_eq!(*calls.last().unwrap(), (total, total));
    for pair in calls.windows(2) {
        assert_eq!(pair[1].1, total, "{calls:?}");
        assert!(pair[0].0 <= pair[1].0, "done went back: {pair:?}");
    }
    // Rate-limited: far fewer calls than checks.
    assert!(
        (calls.len() as u64) <= total / 1000 + 2,
        "{} calls for {total} checks",
        calls.len()
    );
}

// Proves that `verify_with_progress`, on `Log` and on `LogReader`, reports
// a monotonic count of checks that ends at its total, a few thousand
// checks apart rather than per event, and returns the same report as
// `verify`.
#[test]
fn verify_progress_is_monotonic_and_ends_at_total() {
    let dir = tempdir();
    let log = Log::open(dir.path(), options()).unwrap();
    let generated: Vec<_> = Workload::new(WorkloadConfig::new(20_000)).collect();
    for chunk in generated.chunks(1000) {
        let events: Vec<Event> = chunk.iter().map(|g| g.event()).collect();
        log.append_batch(&events).unwrap();
    }
    wait_indexed(&log);
    let mut calls = Vec::new();
    let report = log
        .verify_with_progress(|done, total| calls.push((done, total)))
        .unwrap();
    assert!(report.is_ok(), "{:?}", report.problems);
    assert!(report.index_available);
    assert_eq!(report, log.verify().unwrap());
    check_verify_progress(&calls, 20_000);
    // The indexes are checked too: their share of the work is counted.
    assert!(calls[0].1 > 20_000, "{calls:?}");
    log.close().unwrap();

    let reader = Log::open_read_only(dir.path()).unwrap();
    let mut calls = Vec::new();
    let report = reader
        .verify_with_progress(|done, total| calls.push((done, total)))
        .unwrap();
    assert!(report.is_ok(), "{:?}", report.problems);
    assert_eq!(report.events_checked, 20_000);
    check_verify_progress(&calls, 20_000);

    // An empty log: one call at 0 of 0 and one at the end, both 0 of 0.
    let empty = tempdir();
    let log = Log::open(empty.path(), options()).unwrap();
    let mut calls = Vec::new();
    log.verify_with_progress(|done, total| calls.push((done, total)))
        .unwrap();
    assert_eq!(calls, [(0, 0), (0, 0)]);
    log.close().unwrap();
}
