//! Subscriptions and durable consumers: history then live, exactly once.

use std::time::Duration;

use evlog::{Event, Filter, Log, Options, Start};

use crate::common::tempdir;

const WAIT: Duration = Duration::from_secs(10);

fn types(log: &Log, count: u64, event_type: &str) {
    for i in 0..count {
        log.append(Event::new(event_type).entity("task", format!("T-{}", i % 3)))
            .unwrap();
    }
}

#[test]
fn history_then_live_exactly_once_in_order() {
    let dir = tempdir();
    let log = Log::open(dir.path(), Options::default()).unwrap();
    types(&log, 50, "validation.phase.done");
    types(&log, 50, "task.created");
    let mut sub = log
        .subscribe(Filter::all().event_type("validation.*"), Start::Beginning)
        .unwrap();
    let mut seen = Vec::new();
    while let Some(event) = sub.next_timeout(Duration::from_millis(50)).unwrap() {
        seen.push(event.seq);
    }
    assert_eq!(seen, (1..=50).collect::<Vec<_>>());
    assert!(sub.progress().caught_up());
    assert_eq!(sub.progress().position, 100);
    // Live: appended from another thread while the subscriber waits.
    std::thread::scope(|scope| {
        scope.spawn(|| {
            for i in 0..200u64 {
                let t = if i % 2 == 0 {
                    "validation.x"
                } else {
                    "other.y"
                };
                log.append(Event::new(t)).unwrap();
            }
        });
        for expected in (101..=300).step_by(2) {
            let event = sub.next_timeout(WAIT).unwrap().expect("live event");
            assert_eq!(event.seq, expected);
        }
    });
    assert_eq!(sub.try_next().unwrap(), None);
}

#[test]
fn starts_end_seq_time_and_latest_per_entity() {
    let dir = tempdir();
    let log = Log::open(dir.path(), Options::default()).unwrap();
    for i in 0..30i64 {
        log.append(
            Event::new("task.changed")
                .entity("task", format!("T-{}", i % 3))
                .timestamp_us(1_000 * i),
        )
        .unwrap();
    }
    let mut end = log.subscribe(Filter::all(), Start::End).unwrap();
    assert_eq!(end.try_next().unwrap(), None);
    log.append(Event::new("task.changed")).unwrap();
    assert_eq!(end.next_timeout(WAIT).unwrap().unwrap().seq, 31);

    let mut from_seq = log.subscribe(Filter::all(), Start::Seq(29)).unwrap();
    assert_eq!(from_seq.next_timeout(WAIT).unwrap().unwrap().seq, 29);

    let mut from_time = log.subscribe(Filter::all(), Start::Time(10_500)).unwrap();
    assert_eq!(from_time.next_timeout(WAIT).unwrap().unwrap().seq, 12);

    let mut latest = log
        .subscribe(Filter::all().entity("task", "T-1"), Start::LatestPerEntity)
        .unwrap();
    assert_eq!(latest.next_timeout(WAIT).unwrap().unwrap().seq, 29);
    assert_eq!(latest.try_next().unwrap(), None);
    let mut all_latest = log
        .subscribe(Filter::all(), Start::LatestPerEntity)
        .unwrap();
    let seqs: Vec<u64> =
        std::iter::from_fn(|| all_latest.try_next().unwrap().map(|e| e.seq)).collect();
    assert_eq!(seqs, vec![28, 29, 30]);
}

#[test]
fn handler_thread_delivers_and_may_append_to_the_same_log() {
    let dir = tempdir();
    let log = std::sync::Arc::new(Log::open(dir.path(), Options::default()).unwrap());
    let (tx, rx) = std::sync::mpsc::channel();
    let writer = std::sync::Arc::clone(&log);
    let handle = log
        .subscribe_with(
            "echo",
            Filter::all().event_type("ping"),
            Start::Beginning,
            move |event| {
                writer
                    .append(Event::new("pong").causation_id(event.id))
                    .unwrap();
                tx.send(event.seq).unwrap();
            },
        )
        .unwrap();
    types(&log, 10, "ping");
    let got: Vec<u64> = (0..10).map(|_| rx.recv_timeout(WAIT).unwrap()).collect();
    assert_eq!(got.len(), 10);
    handle.unsubscribe().unwrap();
    let pongs = log
        .iter(..)
        .unwrap()
        .filter(|e| e.as_ref().unwrap().event_type == "pong")
        .count();
    assert_eq!(pongs, 10);
}

#[test]
fn a_panicking_handler_ends_its_subscription_not_the_log() {
    let dir = tempdir();
    let log = Log::open(dir.path(), Options::default()).unwrap();
    let handle = log
        .subscribe_with("boom", Filter::all(), Start::Beginning, |_| {
            panic!("handler bug")
        })
        .unwrap();
    log.append(Event::new("a.b")).unwrap();
    let deadline = std::time::Instant::now() + WAIT;
    while !handle.is_finished() {
        assert!(std::time::Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(5));
    }
    match handle.unsubscribe() {
        Err(evlog::Error::HandlerPanicked(message)) => assert!(message.contains("handler bug")),
        other => panic!("{other:?}"),
    }
    assert_eq!(log.append(Event::new("a.b")).unwrap(), 2);
}

#[test]
fn subscription_ends_when_the_log_closes() {
    let dir = tempdir();
    let log = Log::open(dir.path(), Options::default()).unwrap();
    types(&log, 3, "a.b");
    let mut sub = log.subscribe(Filter::all(), Start::Beginning).unwrap();
    log.close().unwrap();
    // A closed log reads no file: the subscription ends.
    let outcome = sub.next_timeout(WAIT);
    assert!(matches!(outcome, Err(evlog::Error::Closed)), "{outcome:?}");
}

#[test]
fn durable_consumer_resumes_after_its_commit() {
    let dir = tempdir();
    {
        let log = Log::open(dir.path(), Options::default()).unwrap();
        types(&log, 10, "job.queued");
        types(&log, 5, "noise.x");
        let mut consumer = log
            .consumer("worker", Filter::all().event_type("job.*"))
            .unwrap();
        for _ in 0..4 {
            let event = consumer.next_timeout(WAIT).unwrap().unwrap();
            consumer.ack(event.seq).unwrap();
        }
        assert_eq!(consumer.commit().unwrap(), 4);
        // Delivered but not acknowledged: delivered again after a restart.
        consumer.next_timeout(WAIT).unwrap().unwrap();
        log.close().unwrap();
    }
    let log = Log::open(dir.path(), Options::default()).unwrap();
    let infos = log.consumers().unwrap();
    assert_eq!(infos.len(), 1);
    assert_eq!((infos[0].position, infos[0].lag), (4, 11));
    let mut consumer = log
        .consumer("worker", Filter::all().event_type("job.*"))
        .unwrap();
    let mut seen = Vec::new();
    while let Some(event) = consumer.next_timeout(Duration::from_millis(50)).unwrap() {
        consumer.ack(event.seq).unwrap();
        seen.push(event.seq);
    }
    assert_eq!(seen, (5..=10).collect::<Vec<_>>());
    // Every delivered event acknowledged: the position moves past the
    // non-matching tail too.
    assert_eq!(consumer.commit().unwrap(), 15);
    assert!(log.delete_consumer("worker").unwrap());
    assert!(log.consumers().unwrap().is_empty());
    assert!(log.consumer("../etc", Filter::all()).is_err());
}

#[test]
fn same_batch_commit_keeps_events_and_position_together() {
    let dir = tempdir();
    let log = Log::open(dir.path(), Options::default()).unwrap();
    types(&log, 6, "order.placed");
    let mut consumer = log
        .consumer("billing", Filter::all().event_type("order.*"))
        .unwrap();
    let first = consumer.next_timeout(WAIT).unwrap().unwrap();
    let range = consumer
        .append_batch_and_commit(
            &log,
            &[Event::new("invoice.created").causation_id(first.id)],
            first.seq,
        )
        .unwrap();
    assert_eq!(range, 7..8);
    // The position is in the log: delete the file, it is still known.
    std::fs::remove_file(dir.path().join("consumers").join("billing.pos")).unwrap();
    drop(consumer);
    let consumer = log
        .consumer("billing", Filter::all().event_type("order.*"))
        .unwrap();
    assert_eq!(consumer.committed(), 1);
    // Users cannot forge bookkeeping events.
    assert!(log.append(Event::new("evlog.consumer.committed")).is_err());
}

#[test]
fn failing_events_are_redelivered_then_parked_and_the_consumer_moves_on() {
    let dir = tempdir();
    let log = Log::open(dir.path(), Options::default()).unwrap();
    types(&log, 4, "job.run");
    let mut consumer = log
        .consumer("jobs", Filter::all().event_type("job.*"))
        .unwrap()
        .max_deliveries(3);
    let mut deliveries = Vec::new();
    while let Some(event) = consumer.next_timeout(Duration::from_millis(50)).unwrap() {
        deliveries.push(event.seq);
        if event.seq == 2 {
            // The handler keeps failing on seq 2.
            let outcome = consumer.fail(event.seq, "poison pill").unwrap();
            assert_eq!(
                outcome,
                if deliveries.iter().filter(|&&s| s == 2).count() < 3 {
                    evlog::FailOutcome::Redeliver {
                        attempt: deliveries.iter().filter(|&&s| s == 2).count() as u32,
                    }
                } else {
                    evlog::FailOutcome::Parked
                }
            );
        } else {
            consumer.ack(event.seq).unwrap();
        }
    }
    assert_eq!(deliveries, vec![1, 2, 2, 2, 3, 4]);
    assert_eq!(consumer.commit().unwrap(), 4);
    let parked = consumer.parked().unwrap();
    assert_eq!(parked.len(), 1);
    assert_eq!(
        (parked[0].seq, parked[0].attempts, parked[0].reason.as_str()),
        (2, 3, "poison pill")
    );
    // A failure of an event that was not the last delivered is refused.
    assert!(consumer.fail(3, "late").is_err());
    drop(consumer);
    // The parked list survives a reopen and can be cleared.
    log.close().unwrap();
    let log = Log::open(dir.path(), Options::default()).unwrap();
    let mut consumer = log
        .consumer("jobs", Filter::all().event_type("job.*"))
        .unwrap();
    assert_eq!(consumer.parked().unwrap().len(), 1);
    assert!(consumer.unpark(2).unwrap());
    assert!(!consumer.unpark(2).unwrap());
    assert!(consumer.parked().unwrap().is_empty());
}

/// The consumer workload of the power-cut test: handle every `job.*`
/// event by appending its `done.*` event with the position in the same
/// batch. Stops at the first error, as an application would.
fn run_jobs(log: &Log) -> evlog::Result<()> {
    let mut consumer = log.consumer("worker", Filter::all().event_type("job.*"))?;
    while let Some(job) = consumer.next_timeout(Duration::ZERO)? {
        let done = Event::new("done.job").causation_id(job.id);
        consumer.append_batch_and_commit(log, &[done], job.seq)?;
    }
    Ok(())
}

/// Each job's `done` events, and the consumer's position, as the log holds
/// them; checks that they agree: one `done` per job up to the position,
/// none after it.
fn check_jobs(log: &Log, context: &str) -> u64 {
    let events: Vec<_> = log.iter(..).unwrap().map(|e| e.unwrap()).collect();
    let position = log
        .consumer("worker", Filter::all().event_type("job.*"))
        .unwrap_or_else(|e| panic!("{context}: consumer: {e}"))
        .committed();
    for job in events.iter().filter(|e| e.event_type.starts_with("job.")) {
        let done = events
            .iter()
            .filter(|e| e.causation_id == Some(job.id))
            .count();
        let expected = usize::from(job.seq <= position);
        assert_eq!(
            done, expected,
            "{context}: job {} with position {position}",
            job.seq
        );
    }
    position
}

// A power cut at every I/O operation of a consumer that commits in the same
// batch as its effects: after each, the rebooted log's effects and position
// agree (exactly one effect per committed job, none for the others), and
// running the consumer again completes every job exactly once.
#[test]
fn same_batch_commits_survive_a_power_cut_at_every_operation() {
    use evlog::storage::{Fault, FaultKind, OpKind, SimStorage};
    const JOBS: u64 = 12;
    let open = |disk: &SimStorage| {
        Log::open_with_storage(
            std::path::Path::new("/sim/consumer"),
            Options::default(),
            std::sync::Arc::new(disk.clone()),
        )
    };
    let mut n = 1;
    loop {
        let disk = SimStorage::new();
        {
            let log = open(&disk).unwrap();
            for _ in 0..JOBS {
                log.append(Event::new("job.run")).unwrap();
            }
            log.close().unwrap();
        }
        disk.set_fault(Some(Fault {
            op: OpKind::Any,
            nth: n,
            kind: FaultKind::PowerCut,
            sticky: false,
        }));
        let outcome = open(&disk).and_then(|log| {
            run_jobs(&log)?;
            log.close()
        });
        if !disk.fault_fired() {
            outcome.unwrap();
            assert!(n > 20, "the workload did only {} operations", n - 1);
            break;
        }
        for seed in [None, Some(5)] {
            let context = format!("power cut at operation {n}, reboot {seed:?}");
            let rebooted = disk.crash(seed);
            let log = open(&rebooted).unwrap_or_else(|e| panic!("{context}: reopen: {e}"));
            check_jobs(&log, &context);
            run_jobs(&log).unwrap_or_else(|e| panic!("{context}: rerun: {e}"));
            assert_eq!(
                check_jobs(&log, &context),
                JOBS,
                "{context}: after the rerun"
            );
            log.close().unwrap();
        }
        n += 1;
    }
}

// With segments read by `pread` (the simulated disk maps nothing), a small
// read buffer still delivers every event, records larger than the buffer
// included: the buffer bounds memory, not what can be read.
#[test]
fn a_small_read_buffer_bounds_memory_not_delivery() {
    let disk = evlog::storage::SimStorage::new();
    let log = Log::open_with_storage(
        std::path::Path::new("/sim/read-buffer"),
        Options::default().read_buffer_bytes(4096),
        std::sync::Arc::new(disk),
    )
    .unwrap();
    for i in 0..200usize {
        log.append(Event::new("blob.stored").bytes_payload(vec![b'x'; (i * 37) % 9000]))
            .unwrap();
    }
    let mut sub = log.subscribe(Filter::all(), Start::Beginning).unwrap();
    for seq in 1..=200u64 {
        let event = sub.next_timeout(WAIT).unwrap().unwrap();
        assert_eq!(event.seq, seq);
        assert_eq!(
            event.payload.as_bytes().len(),
            ((seq as usize - 1) * 37) % 9000
        );
    }
}
