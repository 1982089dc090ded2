//! Subscription and consumer tests that need a process of their own: the
//! test binary runs itself again (`current_exe`, `--exact <child>
//! --ignored`) with the data directory in an environment variable.
//!
//! - A paused subscriber's memory, measured alone in its process (the
//!   parent's RSS is shared with every test running in parallel).
//! - A durable consumer killed with SIGKILL at random points, in rounds:
//!   with same-batch commits every job gets exactly one derived event;
//!   with ack + commit after the derived append, at least one, and a
//!   duplicate only for the job a kill interrupted.
//!
//! The child tests are `#[ignore]` and do nothing without the variable, so
//! running the ignored tests wholesale is harmless.

use std::collections::HashMap;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use evlog::{Durability, Event, Filter, Log, LoggedEvent, Options, Start, Uuid};
use serde_json::json;

use crate::common::{tempdir, Rng};

/// The data directory a child works on; unset outside a child.
const CHILD_DIR: &str = "EVLOG_SUBPROCS_CHILD_DIR";
/// `exactly-once` or `at-least-once` for the consumer child.
const CHILD_MODE: &str = "EVLOG_SUBPROCS_CHILD_MODE";
const CHILD_DEADLINE: Duration = Duration::from_secs(180);

/// The test binary running one ignored test alone, output to files.
fn child_command(test: &str, dir: &Path, logs: &Path, tag: &str) -> Command {
    let exe = std::env::current_exe().expect("the test binary's path");
    let mut command = Command::new(exe);
    command
        .args([
            "--exact",
            test,
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_DIR, dir)
        // The child's stdout and stderr go to files: an unread pipe could
        // block it, and the files explain a failure.
        .stdout(Stdio::from(
            std::fs::File::create(logs.join(format!("{tag}.out"))).expect("child stdout file"),
        ))
        .stderr(Stdio::from(
            std::fs::File::create(logs.join(format!("{tag}.err"))).expect("child stderr file"),
        ));
    command
}

fn child_output(logs: &Path, tag: &str) -> String {
    let read = |ext| std::fs::read_to_string(logs.join(format!("{tag}.{ext}"))).unwrap_or_default();
    format!("--- stdout\n{}\n--- stderr\n{}", read("out"), read("err"))
}

fn wait_with_deadline(child: &mut Child, what: &str) -> ExitStatus {
    let deadline = Instant::now() + CHILD_DEADLINE;
    loop {
        if let Some(status) = child.try_wait().expect("wait for the child") {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what}: the child did not finish within {CHILD_DEADLINE:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Runs a child to completion and checks that its one test ran and passed
/// (`--exact` with a wrong name would run nothing and still succeed).
fn run_child_to_end(command: &mut Command, logs: &Path, tag: &str) -> String {
    let mut child = command.spawn().expect("spawn the child");
    let status = wait_with_deadline(&mut child, tag);
    let output = child_output(logs, tag);
    assert!(status.success(), "{tag}: child failed ({status})\n{output}");
    assert!(
        output.contains("1 passed"),
        "{tag}: the child test did not run\n{output}"
    );
    output
}

/// Anonymous resident memory of this process, in bytes: `resident -
/// shared` of /proc/self/statm. File-backed pages (the mmapped segments a
/// reader touches) are excluded: the kernel can drop them at will, and
/// counting them would charge the subscription for the page cache.
fn anon_rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").expect("read /proc/self/statm");
    let fields: Vec<u64> = statm
        .split_whitespace()
        .map(|f| f.parse().expect("a number"))
        .collect();
    // Pages of 4 KiB on the Linux targets this runs on.
    (fields[1] - fields[2]) * 4096
}

const PAUSED_EVENTS: u64 = 100_000;
const PAUSED_BATCH: u64 = 1_000;
const PAUSED_GROWTH_MAX: u64 = 16 * 1024 * 1024;

#[test]
#[ignore = "child process of paused_subscriber_drains_everything_in_bounded_memory"]
fn paused_subscriber_child() {
    let Some(dir) = std::env::var_os(CHILD_DIR) else {
        return;
    };
    // No secondary indexes: the indexer thread would otherwise catch up
    // while the subscriber drains and its allocations would be counted.
    let log = Log::open(
        &dir,
        Options::default()
            .durability(Durability::OsBuffered)
            .secondary_indexes(false),
    )
    .unwrap();
    let mut sub = log.subscribe(Filter::all(), Start::Beginning).unwrap();
    let pad = "p".repeat(300);
    for b in 0..PAUSED_EVENTS / PAUSED_BATCH {
        let batch: Vec<Event> = (0..PAUSED_BATCH)
            .map(|i| {
                Event::new("bulk.item")
                    .entity("bulk", format!("B-{}", i % 7))
                    .json_payload(&json!({"n": b * PAUSED_BATCH + i + 1, "pad": pad}))
                    .unwrap()
            })
            .collect();
        log.append_batch(&batch).unwrap();
    }
    let stored: u64 = std::fs::read_dir(Path::new(&dir).join("segments"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .map(|p| std::fs::metadata(p).unwrap().len())
        .sum();
    // The bound below only means something if buffering the events would
    // blow it by far.
    assert!(stored > 2 * PAUSED_GROWTH_MAX, "only {stored} bytes stored");
    // The subscriber never read while the events came in: it has examined
    // nothing and still starts at the first event.
    assert_eq!(sub.progress().position, 0);
    assert_eq!(sub.progress().log_end, PAUSED_EVENTS);

    let before = anon_rss_bytes();
    let mut peak = before;
    let mut next = 1u64;
    while let Some(event) = sub.next_timeout(Duration::ZERO).unwrap() {
        assert_eq!(event.seq, next, "in order, no gap, no duplicate");
        let payload: serde_json::Value = event.payload_as().unwrap();
        assert_eq!(payload["n"], next);
        next += 1;
        if next.is_multiple_of(2_000) {
            peak = peak.max(anon_rss_bytes());
        }
    }
    peak = peak.max(anon_rss_bytes());
    assert_eq!(next - 1, PAUSED_EVENTS, "every event delivered");
    assert!(sub.progress().caught_up());
    let growth = peak.saturating_sub(before);
    println!("stored {stored} bytes; anonymous RSS {before} before draining, peak {peak}, growth {growth}");
    assert!(
        growth < PAUSED_GROWTH_MAX,
        "draining {stored} bytes grew anonymous memory by {growth} bytes"
    );
    // The probe itself must see growth of this size: hold as much as the
    // bound in fresh, touched memory and look again.
    // `black_box`: in a release build the optimizer would otherwise drop
    // an allocation nothing reads.
    let ballast = std::hint::black_box(vec![1u8; 2 * PAUSED_GROWTH_MAX as usize]);
    let with_ballast = anon_rss_bytes();
    assert!(
        with_ballast >= peak + PAUSED_GROWTH_MAX,
        "the RSS probe misses a {} byte allocation ({peak} -> {with_ballast})",
        ballast.len()
    );
    drop(std::hint::black_box(ballast));
    log.close().unwrap();
}

// A subscriber that reads nothing while 100k events (about 35 MB) are
// appended costs no memory meanwhile and then drains them all in order
// with bounded memory: it is a cursor, not a queue. Measured in a child
// process of its own, since RSS is per process.
#[test]
fn paused_subscriber_drains_everything_in_bounded_memory() {
    let dir = tempdir();
    let logs = tempdir();
    let output = run_child_to_end(
        &mut child_command(
            "subscription_procs::paused_subscriber_child",
            dir.path(),
            logs.path(),
            "paused",
        ),
        logs.path(),
        "paused",
    );
    let line = output
        .lines()
        .find(|l| l.contains("growth"))
        .unwrap_or_else(|| panic!("no measurement in the child's output\n{output}"));
    println!("{line}");
}

const WORKER: &str = "worker";

fn worker_filter() -> Filter {
    Filter::all().event_type("job.*")
}

#[test]
#[ignore = "child process of the durable consumer kill -9 tests"]
fn consumer_worker_child() {
    let Some(dir) = std::env::var_os(CHILD_DIR) else {
        return;
    };
    let exactly_once = match std::env::var(CHILD_MODE).as_deref() {
        Ok("exactly-once") => true,
        Ok("at-least-once") => false,
        other => panic!("{CHILD_MODE}={other:?}"),
    };
    let log = Log::open(&dir, Options::default()).unwrap();
    let mut consumer = log.consumer(WORKER, worker_filter()).unwrap();
    // Ends once nothing has come for a while: the parent appends jobs only
    // while no child runs.
    while let Some(event) = consumer.next_timeout(Duration::from_millis(300)).unwrap() {
        if event.event_type == "job.done" {
            // Its own output matches `job.*` too: not a job. Left
            // unacknowledged, so the position stays at the last job.
            continue;
        }
        let done = Event::new("job.done").causation_id(event.id);
        if exactly_once {
            consumer
                .append_batch_and_commit(&log, &[done], event.seq)
                .unwrap();
        } else {
            log.append(done).unwrap();
            consumer.ack(event.seq).unwrap();
            consumer.commit().unwrap();
        }
    }
    log.close().unwrap();
}

/// The position in `DIR/consumers/<name>.pos`, decoded from FORMAT.md's
/// layout by hand: magic, version 1, reserved, position, CRC-32 of bytes
/// 0..24, reserved; little-endian.
fn read_position_file(dir: &Path, name: &str) -> Option<u64> {
    let path = dir.join("consumers").join(format!("{name}.pos"));
    let bytes = std::fs::read(&path).ok()?;
    assert_eq!(bytes.len(), 32, "{}: length", path.display());
    assert_eq!(&bytes[..8], b"EVLOGPOS", "magic");
    assert_eq!(
        u32::from_le_bytes(bytes[8..12].try_into().unwrap()),
        1,
        "version"
    );
    let crc = u32::from_le_bytes(bytes[24..28].try_into().unwrap());
    assert_eq!(
        crc,
        crc32fast::hash(&bytes[..24]),
        "{}: CRC",
        path.display()
    );
    Some(u64::from_le_bytes(bytes[16..24].try_into().unwrap()))
}

struct Jobs {
    /// Job seqs in order, with their ids.
    jobs: Vec<(u64, Uuid)>,
    /// Derived events per job seq.
    done: HashMap<u64, u64>,
}

fn scan_jobs(log: &Log) -> Jobs {
    let all: Vec<LoggedEvent> = log.iter(..).unwrap().map(|e| e.unwrap()).collect();
    let jobs: Vec<(u64, Uuid)> = all
        .iter()
        .filter(|e| e.event_type.starts_with("job.") && e.event_type != "job.done")
        .map(|e| (e.seq, e.id))
        .collect();
    let by_id: HashMap<Uuid, u64> = jobs.iter().map(|&(seq, id)| (id, seq)).collect();
    let mut done = HashMap::new();
    for e in all.iter().filter(|e| e.event_type == "job.done") {
        let cause = e.causation_id.expect("a derived event names its job");
        let job = by_id
            .get(&cause)
            .unwrap_or_else(|| panic!("job.done {} names no job", e.seq));
        assert!(*job < e.seq, "derived event {} before its job {job}", e.seq);
        *done.entry(*job).or_insert(0) += 1;
    }
    Jobs { jobs, done }
}

fn add_jobs(dir: &Path, rng: &mut Rng) {
    let log = Log::open(dir, Options::default()).unwrap();
    let count = 30 + rng.below(90);
    let batch: Vec<Event> = (0..count)
        .map(|i| Event::new(["job.build", "job.test", "job.deploy"][(i % 3) as usize]))
        .collect();
    log.append_batch(&batch).unwrap();
    log.close().unwrap();
}

struct KillStats {
    rounds: u64,
    killed_mid_work: u64,
    /// Jobs done more than once at the end.
    repeated: usize,
}

fn consumer_kill_rounds(mode: &str, seed: u64) -> KillStats {
    let dir = tempdir();
    let logs = tempdir();
    let mut rng = Rng::new(seed);
    let rounds = 10;
    let mut stats = KillStats {
        rounds,
        killed_mid_work: 0,
        repeated: 0,
    };
    // At-least-once: per job, how many kills may have left it handled but
    // not committed (the first job after the committed position at a kill).
    let mut may_repeat: HashMap<u64, u64> = HashMap::new();
    let mut committed_before = 0;
    for round in 0..=rounds {
        add_jobs(dir.path(), &mut rng);
        let tag = format!("{mode}-{round}");
        let mut command = child_command(
            "subscription_procs::consumer_worker_child",
            dir.path(),
            logs.path(),
            &tag,
        );
        command.env(CHILD_MODE, mode);
        if round == rounds {
            // The last round runs to completion.
            run_child_to_end(&mut command, logs.path(), &tag);
        } else {
            let before = read_position_file(dir.path(), WORKER);
            let mut child = command.spawn().expect("spawn the worker");
            if rng.below(4) == 0 {
                // During start-up and recovery.
                std::thread::sleep(Duration::from_millis(rng.below(40)));
            } else {
                // During work: once the worker has moved its position (its
                // start-up time varies with the machine's load), a little
                // later, so the kill falls between jobs or inside one.
                let deadline = Instant::now() + Duration::from_secs(20);
                while read_position_file(dir.path(), WORKER) == before
                    && child.try_wait().expect("poll the worker").is_none()
                    && Instant::now() < deadline
                {
                    std::thread::sleep(Duration::from_millis(1));
                }
                std::thread::sleep(Duration::from_micros(rng.below(30_000)));
            }
            let _ = child.kill(); // SIGKILL
            let status = wait_with_deadline(&mut child, &tag);
            assert!(
                status.success() || status.signal() == Some(9),
                "{tag}: worker failed ({status})\n{}",
                child_output(logs.path(), &tag)
            );
        }
        let file_position = read_position_file(dir.path(), WORKER);
        let log = Log::open(dir.path(), Options::default()).unwrap();
        let jobs = scan_jobs(&log);
        let committed = log.consumer(WORKER, worker_filter()).unwrap().committed();
        let last_job = jobs.jobs.last().unwrap().0;
        // A kill that fell after some jobs were handled and before the
        // last: the interesting case.
        if committed > committed_before && committed < last_job {
            stats.killed_mid_work += 1;
        }
        println!("{tag}: position {committed_before} -> {committed}, last job {last_job}");
        committed_before = committed;
        if mode == "exactly-once" {
            // The derived event and the position are one atomic batch:
            // jobs up to the position are done once, later ones not at all.
            for &(seq, _) in &jobs.jobs {
                let count = jobs.done.get(&seq).copied().unwrap_or(0);
                let expected = u64::from(seq <= committed);
                assert_eq!(
                    count, expected,
                    "round {round}: job {seq} has {count} job.done with the position at {committed}"
                );
            }
            // The file is only a shortcut written after the batch.
            assert!(file_position.unwrap_or(0) <= committed);
        } else {
            let position = file_position.unwrap_or(0);
            assert_eq!(
                committed, position,
                "round {round}: without bookkeeping events the file is the position"
            );
            for &(seq, _) in jobs.jobs.iter().filter(|(seq, _)| *seq <= position) {
                assert!(
                    jobs.done.get(&seq).copied().unwrap_or(0) >= 1,
                    "round {round}: committed job {seq} has no job.done"
                );
            }
            if let Some(&(next, _)) = jobs.jobs.iter().find(|(seq, _)| *seq > position) {
                *may_repeat.entry(next).or_insert(0) += 1;
            }
            for (&seq, &count) in &jobs.done {
                let allowed = 1 + may_repeat.get(&seq).copied().unwrap_or(0);
                assert!(
                    count <= allowed,
                    "round {round}: job {seq} has {count} job.done, at most {allowed} possible"
                );
            }
        }
        if round == rounds {
            for &(seq, _) in &jobs.jobs {
                let count = jobs.done.get(&seq).copied().unwrap_or(0);
                assert!(count >= 1, "job {seq} never done");
                if mode == "exactly-once" {
                    assert_eq!(count, 1, "job {seq}: exactly-once effects");
                }
            }
            stats.repeated = jobs.done.values().filter(|&&c| c > 1).count();
            assert_eq!(committed, last_job, "the position ends at the last job");
            let infos = log.consumers().unwrap();
            assert_eq!(infos.len(), 1);
            assert_eq!(
                (infos[0].name.as_str(), infos[0].position),
                (WORKER, last_job)
            );
        }
        log.close().unwrap();
    }
    stats
}

// Exactly-once effects through same-batch commits, whatever the moment of
// a kill -9: after every round the derived events agree with the position.
#[test]
fn consumer_killed_with_sigkill_keeps_exactly_once_effects() {
    let stats = consumer_kill_rounds("exactly-once", 0x5eed_0001);
    println!(
        "exactly-once: {} kills, {} while work remained",
        stats.rounds, stats.killed_mid_work
    );
    assert!(
        stats.killed_mid_work > 0,
        "no kill fell in the middle of the work"
    );
}

// At-least-once with ack + commit after the derived append: nothing is
// lost, and a job is repeated only where a kill fell between its derived
// append and the commit.
#[test]
fn consumer_killed_with_sigkill_is_at_least_once_with_plain_commits() {
    let stats = consumer_kill_rounds("at-least-once", 0x5eed_0002);
    println!(
        "at-least-once: {} kills, {} while work remained, {} jobs repeated",
        stats.rounds, stats.killed_mid_work, stats.repeated
    );
    assert!(
        stats.killed_mid_work > 0,
        "no kill fell in the middle of the work"
    );
}
