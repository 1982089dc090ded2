//! Edges of subscriptions and durable consumers: a panicking handler among
//! busy writers and other handlers, and consumer position files that are
//! past the end of the log or damaged.

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use evlog::{Durability, Error, Event, Filter, Log, Options, Start};

use crate::common::tempdir;

const WAIT: Duration = Duration::from_secs(10);

fn wait_finished(handle: &evlog::SubscriptionHandle) {
    let deadline = Instant::now() + WAIT;
    while !handle.is_finished() {
        assert!(Instant::now() < deadline, "the handler thread did not end");
        std::thread::sleep(Duration::from_millis(2));
    }
}

// A handler that panics mid-stream, while four threads append, ends only
// its own subscription: the appends all succeed, the other handlers get
// every event in order, a new subscription works, and the log closes clean.
#[test]
fn a_panicking_handler_leaves_writers_and_other_subscribers_running() {
    let dir = tempdir();
    let log = Arc::new(
        Log::open(
            dir.path(),
            Options::default().durability(Durability::OsBuffered),
        )
        .unwrap(),
    );
    const WRITERS: u64 = 4;
    const PER_WRITER: u64 = 250;
    const TOTAL: u64 = WRITERS * PER_WRITER;

    let (seen_tx, seen_rx) = mpsc::channel();
    let boom = log
        .subscribe_with("boom", Filter::all(), Start::Beginning, move |event| {
            if event.seq == 50 {
                panic!("handler bug at {}", event.seq);
            }
            seen_tx.send(event.seq).unwrap();
        })
        .unwrap();
    // Panics with a payload that is not a string.
    let odd = log
        .subscribe_with("odd", Filter::all(), Start::Beginning, |event| {
            if event.seq == 10 {
                std::panic::panic_any(42u32);
            }
        })
        .unwrap();
    let mut others = Vec::new();
    for (name, pattern) in [("all", "w.*"), ("even", "w.even")] {
        let (tx, rx) = mpsc::channel();
        let handle = log
            .subscribe_with(
                name,
                Filter::all().event_type(pattern),
                Start::Beginning,
                move |e| {
                    tx.send(e.seq).unwrap();
                },
            )
            .unwrap();
        others.push((name, handle, rx));
    }

    std::thread::scope(|scope| {
        for w in 0..WRITERS {
            let log = Arc::clone(&log);
            scope.spawn(move || {
                for i in 0..PER_WRITER {
                    let kind = if i % 2 == 0 { "w.even" } else { "w.odd" };
                    log.append(Event::new(kind).entity("writer", w.to_string()))
                        .unwrap();
                }
            });
        }
    });
    assert_eq!(log.last_seq(), Some(TOTAL));

    wait_finished(&boom);
    match boom.unsubscribe() {
        Err(Error::HandlerPanicked(message)) => {
            assert!(message.contains("handler bug at 50"), "{message}")
        }
        other => panic!("{other:?}"),
    }
    // Exactly the events before the panicking one were handled.
    assert_eq!(
        seen_rx.try_iter().collect::<Vec<_>>(),
        (1..50).collect::<Vec<_>>()
    );
    wait_finished(&odd);
    match odd.unsubscribe() {
        Err(Error::HandlerPanicked(message)) => assert!(!message.is_empty()),
        other => panic!("{other:?}"),
    }

    let all: Vec<_> = log.iter(..).unwrap().map(|e| e.unwrap()).collect();
    for (name, handle, rx) in others {
        let expected: Vec<u64> = all
            .iter()
            .filter(|e| name == "all" || e.event_type == "w.even")
            .map(|e| e.seq)
            .collect();
        let mut got = Vec::new();
        while got.len() < expected.len() {
            got.push(
                rx.recv_timeout(WAIT)
                    .unwrap_or_else(|_| panic!("{name} stalled at {got:?}")),
            );
        }
        assert_eq!(got, expected, "{name}");
        assert!(!handle.is_finished(), "{name} ended with the panicking one");
        handle.unsubscribe().unwrap();
    }
    // The log still appends and subscribes after the panics.
    assert_eq!(log.append(Event::new("w.after")).unwrap(), TOTAL + 1);
    let mut sub = log.subscribe(Filter::all(), Start::Seq(TOTAL)).unwrap();
    assert_eq!(sub.next_timeout(WAIT).unwrap().unwrap().seq, TOTAL);
    assert_eq!(sub.next_timeout(WAIT).unwrap().unwrap().seq, TOTAL + 1);
    drop(sub);
    Arc::try_unwrap(log)
        .ok()
        .expect("no other owner")
        .close()
        .unwrap();
}

fn position_path(dir: &Path, name: &str) -> PathBuf {
    dir.join("consumers").join(format!("{name}.pos"))
}

/// A position file laid out as FORMAT.md says, built by hand: magic
/// `EVLOGPOS`, version u32, reserved u32, position u64, CRC-32 of bytes
/// 0..24 u32, reserved u32, little-endian.
fn position_file_bytes(version: u32, position: u64) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(32);
    bytes.extend_from_slice(b"EVLOGPOS");
    bytes.extend_from_slice(&version.to_le_bytes());
    bytes.extend_from_slice(&0u32.to_le_bytes());
    bytes.extend_from_slice(&position.to_le_bytes());
    let crc = crc32fast::hash(&bytes);
    bytes.extend_from_slice(&crc.to_le_bytes());
    bytes.extend_from_slice(&0u32.to_le_bytes());
    bytes
}

fn write_position(dir: &Path, name: &str, bytes: &[u8]) {
    std::fs::create_dir_all(dir.join("consumers")).unwrap();
    std::fs::write(position_path(dir, name), bytes).unwrap();
}

fn log_with(dir: &Path, count: u64) -> Log {
    let log = Log::open(dir, Options::default()).unwrap();
    for _ in 0..count {
        log.append(Event::new("job.queued")).unwrap();
    }
    log
}

// A position past the end (the events it had read were lost) restarts the
// consumer at the end, says where it was, and delivers new events.
#[test]
fn consumer_position_beyond_the_end_restarts_at_the_end() {
    let dir = tempdir();
    log_with(dir.path(), 10).close().unwrap();
    // The hand-made file is read as the library's own: a position inside
    // the log is taken as is.
    write_position(dir.path(), "worker", &position_file_bytes(1, 7));
    let log = Log::open(dir.path(), Options::default()).unwrap();
    let consumer = log.consumer("worker", Filter::all()).unwrap();
    assert_eq!((consumer.committed(), consumer.reset_from()), (7, None));
    drop(consumer);
    log.close().unwrap();

    write_position(dir.path(), "worker", &position_file_bytes(1, 50));
    let log = Log::open(dir.path(), Options::default()).unwrap();
    let mut consumer = log.consumer("worker", Filter::all()).unwrap();
    assert_eq!(consumer.reset_from(), Some(50));
    assert_eq!(consumer.committed(), 10);
    assert_eq!(consumer.progress().position, 10);
    assert_eq!(
        consumer.next_timeout(Duration::from_millis(20)).unwrap(),
        None
    );
    assert_eq!(log.append(Event::new("job.queued")).unwrap(), 11);
    let event = consumer.next_timeout(WAIT).unwrap().expect("the new event");
    assert_eq!(event.seq, 11);
    consumer.ack(11).unwrap();
    assert_eq!(consumer.commit().unwrap(), 11);
    drop(consumer);
    log.close().unwrap();
    // The commit replaced the stale position.
    let log = Log::open(dir.path(), Options::default()).unwrap();
    let consumer = log.consumer("worker", Filter::all()).unwrap();
    assert_eq!((consumer.committed(), consumer.reset_from()), (11, None));
    drop(consumer);
    log.close().unwrap();
}

// After a reset, the consumer's own `commit` says the position is the end
// of the log; that must hold after a restart too, or the events appended
// after the reset and before the stale position are skipped unseen.
#[test]
fn consumer_reset_is_kept_across_a_restart() {
    let dir = tempdir();
    log_with(dir.path(), 10).close().unwrap();
    write_position(dir.path(), "worker", &position_file_bytes(1, 50));
    let log = Log::open(dir.path(), Options::default()).unwrap();
    let mut consumer = log.consumer("worker", Filter::all()).unwrap();
    assert_eq!(consumer.reset_from(), Some(50));
    assert_eq!(consumer.commit().unwrap(), 10, "commit reports the end");
    drop(consumer);
    // 45 events come in; the consumer has not run since its commit.
    for _ in 0..45 {
        log.append(Event::new("job.queued")).unwrap();
    }
    log.close().unwrap();
    let log = Log::open(dir.path(), Options::default()).unwrap();
    let mut consumer = log.consumer("worker", Filter::all()).unwrap();
    let first = consumer.next_timeout(WAIT).unwrap().unwrap().seq;
    assert_eq!(
        (first, consumer.committed()),
        (11, 10),
        "first delivery and committed position after the restart"
    );
    drop(consumer);
    let infos = log.consumers().unwrap();
    assert_eq!(infos[0].position, 10, "listed position");
    log.close().unwrap();
}

fn expect_corrupt_naming(dir: &Path, name: &str, what: &str) {
    let log = Log::open(dir, Options::default()).unwrap();
    let path = position_path(dir, name);
    match log.consumer(name, Filter::all()) {
        Err(Error::Corrupt { file, .. }) => assert_eq!(file, path, "{what}"),
        Err(other) => panic!("{what}: {other:?}"),
        Ok(_) => panic!("{what}: a damaged position file was accepted"),
    }
    let err = log.consumers().expect_err(what);
    assert!(
        err.to_string().contains(&path.display().to_string()),
        "{what}: {err}"
    );
    log.close().unwrap();
}

// A damaged position file is a clear error naming the file, never a
// silent restart from 0 or from a garbage position.
#[test]
fn garbled_consumer_position_files_are_corrupt_errors() {
    let dir = tempdir();
    log_with(dir.path(), 3).close().unwrap();
    let good = position_file_bytes(1, 2);

    let mut flipped = good.clone();
    flipped[17] ^= 0x01; // in the position: the CRC no longer matches
    write_position(dir.path(), "worker", &flipped);
    expect_corrupt_naming(dir.path(), "worker", "position bit flip");

    let mut bad_magic = good.clone();
    bad_magic[0] = b'X';
    write_position(dir.path(), "worker", &bad_magic);
    expect_corrupt_naming(dir.path(), "worker", "bad magic");

    write_position(dir.path(), "worker", &good[..31]);
    expect_corrupt_naming(dir.path(), "worker", "short file");

    write_position(dir.path(), "worker", &[0x5a; 32]);
    expect_corrupt_naming(dir.path(), "worker", "garbage");

    write_position(dir.path(), "worker", b"");
    expect_corrupt_naming(dir.path(), "worker", "empty file");

    // A well-formed file of another version is refused as such.
    write_position(dir.path(), "worker", &position_file_bytes(2, 2));
    let log = Log::open(dir.path(), Options::default()).unwrap();
    match log.consumer("worker", Filter::all()) {
        Err(Error::UnsupportedVersion { file, found, .. }) => {
            assert_eq!((file, found), (position_path(dir.path(), "worker"), 2));
        }
        Err(other) => panic!("{other:?}"),
        Ok(_) => panic!("a version 2 position file was accepted"),
    }
    log.close().unwrap();

    // Put right, the consumer resumes after the stored position.
    write_position(dir.path(), "worker", &good);
    let log = Log::open(dir.path(), Options::default()).unwrap();
    let mut consumer = log.consumer("worker", Filter::all()).unwrap();
    assert_eq!(consumer.next_timeout(WAIT).unwrap().unwrap().seq, 3);
    drop(consumer);
    log.close().unwrap();
}
