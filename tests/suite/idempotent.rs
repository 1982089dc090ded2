//! Idempotent appends (the duplicate window) and conditional appends
//! (expected versions), through the library and the command line.

use std::sync::{Arc, Barrier, Mutex};

use evlog::{Error, Event, Log, Options, Uuid};
use serde_json::{json, Value};

use crate::common::{run_cli_append, tempdir, text};

fn with_id(n: u128) -> Event {
    Event::new("idem.test").id(Uuid::from_u128(0x1de0_0000 << 64 | n))
}

fn task(id: &str) -> Event {
    Event::new("task.changed").entity("task", id)
}

// Proves that appending an event whose id is in the log returns the
// existing seq and writes nothing, for caller-set ids and for an id evlog
// generated that the caller learned.
#[test]
fn idempotent_duplicate_append_returns_existing_seq() {
    let dir = tempdir();
    let log = Log::open(dir.path(), Options::default()).unwrap();
    assert_eq!(log.append(with_id(1)).unwrap(), 1);
    assert_eq!(log.append(with_id(2)).unwrap(), 2);
    let generated = log.append(Event::new("idem.generated")).unwrap();
    assert_eq!(log.append(with_id(1)).unwrap(), 1);
    assert_eq!(log.append(with_id(2)).unwrap(), 2);
    let learned = log.get(generated).unwrap().id;
    assert_eq!(
        log.append(Event::new("idem.generated").id(learned))
            .unwrap(),
        generated
    );
    assert_eq!(log.last_seq(), Some(3));
}

// Proves that the window is rebuilt after close and reopen (and after a
// reopen without a clean close), so a retry across restarts is recognized.
#[test]
fn idempotent_window_rebuilt_after_reopen() {
    let dir = tempdir();
    let log = Log::open(dir.path(), Options::default()).unwrap();
    let events: Vec<Event> = (1..=10).map(with_id).collect();
    assert_eq!(log.append_batch(&events).unwrap(), 1..11);
    log.append(Event::new("idem.generated")).unwrap();
    log.close().unwrap();

    let log = Log::open(dir.path(), Options::default()).unwrap();
    assert_eq!(log.append(with_id(3)).unwrap(), 3);
    let generated_id = log.get(11).unwrap().id;
    assert_eq!(log.append(Event::new("x").id(generated_id)).unwrap(), 11);
    // Events appended after the reopen, before and after the rebuild.
    assert_eq!(log.append(with_id(20)).unwrap(), 12);
    assert_eq!(log.append(with_id(20)).unwrap(), 12);
    assert_eq!(log.last_seq(), Some(12));
    drop(log);
    crate::common::forget_clean_close(dir.path());

    let log = Log::open(dir.path(), Options::default()).unwrap();
    assert_eq!(log.append(with_id(20)).unwrap(), 12);
    assert_eq!(log.append_batch(&events).unwrap(), 1..11);
    assert_eq!(log.last_seq(), Some(12));
}

// Proves the window's size: an id among the last N events is recognized,
// an older one is appended again as a new event (the defined behaviour
// beyond the window), also after a reopen; a window of 0 detects nothing.
#[test]
fn idempotent_window_size_is_respected() {
    let dir = tempdir();
    let options = Options::default().dedup_window(5);
    let log = Log::open(dir.path(), options.clone()).unwrap();
    for n in 1..=10 {
        assert_eq!(log.append(with_id(n)).unwrap(), n as u64);
    }
    assert_eq!(log.append(with_id(6)).unwrap(), 6);
    assert_eq!(log.append(with_id(5)).unwrap(), 11, "older than the window");
    // Now 5 is in the window again, at its new seq; 6 left it.
    assert_eq!(log.append(with_id(5)).unwrap(), 11);
    assert_eq!(log.append(with_id(6)).unwrap(), 12);
    log.close().unwrap();

    let log = Log::open(dir.path(), options).unwrap();
    assert_eq!(log.append(with_id(10)).unwrap(), 10);
    assert_eq!(log.append(with_id(5)).unwrap(), 11);
    assert_eq!(log.append(with_id(7)).unwrap(), 13, "older than the window");
    log.close().unwrap();

    let log = Log::open(dir.path(), Options::default().dedup_window(0)).unwrap();
    assert_eq!(log.append(with_id(7)).unwrap(), 14, "no window");
    assert_eq!(log.append(with_id(7)).unwrap(), 15, "no window");
}

// Proves the batch rules: a batch appended again returns its range; a
// batch of which only some events are in the log, or whose duplicates are
// not that same run of events, fails with DuplicateInBatch and writes
// nothing; one id twice in a batch is refused before anything is sent.
#[test]
fn idempotent_batch_rules() {
    let dir = tempdir();
    let log = Log::open(dir.path(), Options::default()).unwrap();
    log.append(Event::new("idem.first")).unwrap();
    let batch: Vec<Event> = (1..=4).map(with_id).collect();
    assert_eq!(log.append_batch(&batch).unwrap(), 2..6);
    assert_eq!(log.append_batch(&batch).unwrap(), 2..6);
    assert_eq!(log.append_batch(&batch[1..3]).unwrap(), 3..5);

    let partial = vec![with_id(9), with_id(3)];
    match log.append_batch(&partial) {
        Err(Error::DuplicateInBatch { id, existing_seq }) => {
            assert_eq!(id, Uuid::from_u128(0x1de0_0000 << 64 | 3));
            assert_eq!(existing_seq, 4);
        }
        other => panic!("expected DuplicateInBatch, got {other:?}"),
    }
    let with_generated = vec![with_id(1), Event::new("idem.generated")];
    assert!(matches!(
        log.append_batch(&with_generated),
        Err(Error::DuplicateInBatch {
            existing_seq: 2,
            ..
        })
    ));
    let reordered = vec![with_id(2), with_id(1)];
    assert!(matches!(
        log.append_batch(&reordered),
        Err(Error::DuplicateInBatch {
            existing_seq: 3,
            ..
        })
    ));
    let gap = vec![with_id(1), with_id(3)];
    assert!(matches!(
        log.append_batch(&gap),
        Err(Error::DuplicateInBatch { .. })
    ));
    assert_eq!(
        log.last_seq(),
        Some(5),
        "nothing of a refused batch written"
    );

    let twice = vec![with_id(7), Event::new("x"), with_id(7)];
    assert!(matches!(
        log.append_batch(&twice),
        Err(Error::InvalidEvent(m)) if m.contains("more than one event")
    ));
    assert_eq!(log.last_seq(), Some(5));
    // The new id of the partial batch was not taken by the refusal.
    assert_eq!(log.append(with_id(9)).unwrap(), 6);
}

// Proves that concurrent appends of one id (so within one commit group,
// too) all get the same seq and write one event.
#[test]
fn idempotent_concurrent_retries_write_once() {
    let dir = tempdir();
    let log = Arc::new(Log::open(dir.path(), Options::default()).unwrap());
    log.append(Event::new("idem.first")).unwrap();
    for round in 0..20u128 {
        let barrier = Arc::new(Barrier::new(8));
        let seqs: Vec<u64> = (0..8)
            .map(|_| {
                let (log, barrier) = (Arc::clone(&log), Arc::clone(&barrier));
                std::thread::spawn(move || {
                    barrier.wait();
                    log.append(with_id(100 + round)).unwrap()
                })
            })
            .collect::<Vec<_>>()
            .into_iter()
            .map(|t| t.join().unwrap())
            .collect();
        assert!(seqs.iter().all(|&s| s == seqs[0]), "{seqs:?}");
        assert_eq!(log.last_seq(), Some(2 + round as u64));
    }
}

// Proves that conditional appends from 8 threads on one entity are
// atomic: for each version every thread tries it, exactly one wins, every
// loser is told the actual version, and the log holds exactly the winners'
// events in version order.
#[test]
fn conditional_appends_from_8_threads_one_winner_per_version() {
    const THREADS: usize = 8;
    const VERSIONS: u64 = 200;
    let dir = tempdir();
    let log = Arc::new(Log::open(dir.path(), Options::default()).unwrap());
    let barrier = Arc::new(Barrier::new(THREADS));
    let winners = Arc::new(Mutex::new(vec![Vec::new(); VERSIONS as usize]));
    let threads: Vec<_> = (0..THREADS)
        .map(|thread| {
            let (log, barrier, winners) =
                (Arc::clone(&log), Arc::clone(&barrier), Arc::clone(&winners));
            std::thread::spawn(move || {
                for version in 0..VERSIONS {
                    barrier.wait();
                    let event = task("T-race")
                        .expected_version(version)
                        .json_payload(&json!({"version": version, "thread": thread}))
                        .unwrap();
                    match log.append(event) {
                        Ok(_) => winners.lock().unwrap()[version as usize].push(thread),
                        Err(Error::VersionConflict {
                            entity_type,
                            entity_id,
                            expected,
                            actual,
                        }) => {
                            assert_eq!(
                                (entity_type.as_str(), entity_id.as_str()),
                                ("task", "T-race")
                            );
                            assert_eq!((expected, actual), (version, version + 1));
                        }
                        Err(e) => panic!("thread {thread}, version {version}: {e}"),
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let winners = winners.lock().unwrap().clone();
    for (version, won) in winners.iter().enumerate() {
        assert_eq!(won.len(), 1, "version {version} won by {won:?}");
    }
    assert_eq!(log.entity_version("task", "T-race").unwrap(), VERSIONS);
    let events: Vec<Value> = log
        .iter(..)
        .unwrap()
        .map(|e| e.unwrap().payload_as::<Value>().unwrap())
        .collect();
    assert_eq!(events.len(), VERSIONS as usize);
    for (version, (payload, won)) in events.iter().zip(&winners).enumerate() {
        assert_eq!(payload, &json!({"version": version, "thread": won[0]}));
    }
}

// Proves that a conflict names the entity and its actual version and
// writes nothing, that 0 means "no events yet", and that an expected
// version needs an entity.
#[test]
fn conditional_conflict_names_actual_version() {
    let dir = tempdir();
    let log = Log::open(dir.path(), Options::default()).unwrap();
    assert_eq!(log.append(task("T-1").expected_version(0)).unwrap(), 1);
    log.append(Event::new("other")).unwrap();
    log.append(task("T-1")).unwrap();
    log.append(task("T-2")).unwrap();
    log.append(task("T-1")).unwrap();
    match log.append(task("T-1").expected_version(1)) {
        Err(e @ Error::VersionConflict { .. }) => {
            let Error::VersionConflict {
                entity_type,
                entity_id,
                expected,
                actual,
            } = &e
            else {
                unreachable!()
            };
            assert_eq!((entity_type.as_str(), entity_id.as_str()), ("task", "T-1"));
            assert_eq!((*expected, *actual), (1, 3));
            assert!(e.to_string().contains("at version 3"), "{e}");
        }
        other => panic!("expected VersionConflict, got {other:?}"),
    }
    assert!(matches!(
        log.append(task("T-3").expected_version(1)),
        Err(Error::VersionConflict {
            expected: 1,
            actual: 0,
            ..
        })
    ));
    assert_eq!(log.last_seq(), Some(5));
    assert!(matches!(
        log.append(Event::new("no.entity").expected_version(0)),
        Err(Error::InvalidEvent(_))
    ));
    assert_eq!(log.append(task("T-1").expected_version(3)).unwrap(), 6);
    assert_eq!(log.entity_version("task", "T-1").unwrap(), 4);
    assert_eq!(log.entity_version("task", "T-9").unwrap(), 0);
}

// Proves that versions count events appended without an expected version
// after the entity was first asked about (the writer's cache follows them),
// and that versions written before a reopen count after it.
#[test]
fn conditional_appends_see_every_event_and_survive_reopen() {
    let dir = tempdir();
    let log = Log::open(dir.path(), Options::default()).unwrap();
    log.append_batch(&[task("T-1"), task("T-1"), task("T-2")])
        .unwrap();
    assert_eq!(log.append(task("T-1").expected_version(2)).unwrap(), 4);
    log.append(task("T-1")).unwrap();
    log.append_batch(&[task("T-2"), task("T-1")]).unwrap();
    assert!(matches!(
        log.append(task("T-1").expected_version(3)),
        Err(Error::VersionConflict { actual: 5, .. })
    ));
    assert_eq!(log.append(task("T-1").expected_version(5)).unwrap(), 8);
    log.close().unwrap();

    let log = Log::open(dir.path(), Options::default()).unwrap();
    assert_eq!(log.entity_version("task", "T-1").unwrap(), 6);
    assert!(matches!(
        log.append(task("T-1").expected_version(5)),
        Err(Error::VersionConflict { actual: 6, .. })
    ));
    assert_eq!(log.append(task("T-2").expected_version(2)).unwrap(), 9);
    assert_eq!(log.append(task("T-1").expected_version(6)).unwrap(), 10);
}

// Proves that in a batch, events before a conditional one count toward
// its entity's version, and that a conflict anywhere refuses the whole
// batch while other requests go on.
#[test]
fn conditional_batch_touching_entity_twice() {
    let dir = tempdir();
    let log = Log::open(dir.path(), Options::default()).unwrap();
    log.append_batch(&[task("T-1"), task("T-1")]).unwrap();
    let both = [
        task("T-1").expected_version(2),
        task("T-2"),
        task("T-1").expected_version(3),
    ];
    assert_eq!(log.append_batch(&both).unwrap(), 3..6);
    let plain_then_conditional = [task("T-1"), task("T-1").expected_version(5)];
    assert_eq!(log.append_batch(&plain_then_conditional).unwrap(), 6..8);
    // The second event's expectation ignores the first event of the batch.
    let stale = [
        task("T-1").expected_version(6),
        task("T-1").expected_version(6),
    ];
    assert!(matches!(
        log.append_batch(&stale),
        Err(Error::VersionConflict {
            expected: 6,
            actual: 7,
            ..
        })
    ));
    assert_eq!(log.last_seq(), Some(7), "nothing of the batch written");
    assert_eq!(log.entity_version("task", "T-1").unwrap(), 6);
    assert_eq!(log.entity_version("task", "T-2").unwrap(), 1);
}

// Proves that a retried conditional append that succeeded returns its seq
// rather than a conflict with itself: duplicates are checked first.
#[test]
fn conditional_retry_with_same_id_returns_seq() {
    let dir = tempdir();
    let log = Log::open(dir.path(), Options::default()).unwrap();
    let id = Uuid::from_u128(42);
    let event = task("T-1").id(id).expected_version(0);
    assert_eq!(log.append(event.clone()).unwrap(), 1);
    assert_eq!(log.append(event).unwrap(), 1);
    assert!(matches!(
        log.append(task("T-1").expected_version(0)),
        Err(Error::VersionConflict { actual: 1, .. })
    ));
    assert_eq!(log.last_seq(), Some(1));
}

fn cli_line(entity: &str, expected: Option<u64>, id: Option<u128>) -> String {
    let mut line = json!({"type": "cli.cond", "entity": {"type": "task", "id": entity}});
    if let Some(expected) = expected {
        line["expected_version"] = json!(expected);
    }
    if let Some(id) = id {
        line["id"] = json!(Uuid::from_u128(id).to_string());
    }
    line.to_string() + "\n"
}

fn acked_seqs(stdout: &[u8]) -> Vec<u64> {
    text(stdout)
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["seq"]
                .as_u64()
                .unwrap()
        })
        .collect()
}

// Proves that `evlog append` honours `expected_version`: on a conflict it
// stops at that line, keeps the lines before it, names the line, the count
// and the actual version, and exits 1; and that appending the same lines
// with ids again acknowledges the existing seqs without appending.
#[test]
fn cli_append_expected_version_conflict_exits_1() {
    let dir = tempdir();
    let input = [
        cli_line("T-1", Some(0), Some(1)),
        cli_line("T-1", Some(1), Some(2)),
        cli_line("T-2", None, Some(3)),
    ]
    .concat();
    let output = run_cli_append(dir.path(), &input);
    assert!(output.status.success(), "{}", text(&output.stderr));
    assert_eq!(acked_seqs(&output.stdout), [1, 2, 3]);
    let again = run_cli_append(dir.path(), &input);
    assert!(again.status.success(), "{}", text(&again.stderr));
    assert_eq!(
        acked_seqs(&again.stdout),
        [1, 2, 3],
        "retry appends nothing"
    );

    let input = [
        cli_line("T-2", Some(1), None),
        cli_line("T-1", Some(2), None),
        cli_line("T-1", Some(2), None),
        cli_line("T-3", None, None),
    ]
    .concat();
    let output = run_cli_append(dir.path(), &input);
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "stderr: {stderr}");
    assert!(stderr.contains("line 3"), "{stderr}");
    assert!(stderr.contains("2 events were appended"), "{stderr}");
    assert!(
        stderr.contains("expected version 2, but it is at version 3"),
        "{stderr}"
    );
    assert_eq!(acked_seqs(&output.stdout), [4, 5]);
    let log = Log::open(dir.path(), Options::default()).unwrap();
    assert_eq!(log.last_seq(), Some(5));
    assert_eq!(log.entity_version("task", "T-1").unwrap(), 3);
}
