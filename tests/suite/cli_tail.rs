//! `evlog tail` and `evlog consumers`: `tail --no-follow` checked against
//! a scan of the log through the library for every filter and start,
//! `tail` following a `Log` that this test process appends to (read-only
//! beside the writer, history then live with no gap or repeat), exit 0
//! when its standard output closes, the consumers listing against the
//! library's, the usage errors, and that neither command changes a file.

use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Child, ExitStatus, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use evlog::{Event, Filter, Log, LogReader, LoggedEvent, Options, Priority, Uuid};

use crate::common::{assert_unchanged, cli_ok, evlog_cli, run_cli, said, tempdir, text, tree};

/// Longest wait for one line from a following `tail`, or for it to exit:
/// generous, since a loaded test machine may be slow to schedule it.
const LINE_WAIT: Duration = Duration::from_secs(30);
/// How long a following `tail` is given to print something it must not.
const QUIET_WAIT: Duration = Duration::from_millis(400);
/// Pause between probe events while waiting for `tail` to start following.
const PROBE_INTERVAL: Duration = Duration::from_millis(100);

/// Timestamps of the test events: from 2026-01-01T00:00:00Z, in minutes.
const START_US: i64 = 1_767_225_600_000_000;
const MICROS_PER_MINUTE: i64 = 60_000_000;

/// Small segments, so that following crosses segment boundaries.
fn options() -> Options {
    Options::default()
        .durability(evlog::Durability::OsBuffered)
        .segment_bytes_max(evlog::SEGMENT_BYTES_MIN)
        .preallocate_bytes(0)
}

fn correlation(n: u128) -> Uuid {
    Uuid::from_u128(0x7a11_0000_0000_0000_0000_0000_0000_0000 | n)
}

const TYPES: [&str; 5] = [
    "job.started",
    "job.done",
    "task.created",
    "task.status.changed",
    "other.thing",
];

/// Event `i` of the mixed test log: types, entities, correlations and
/// priorities cycle at different rates, and timestamps are not in
/// sequence order (so `--since` starting at a seq differs from a time
/// filter).
fn mixed_event(i: u64) -> Event {
    let minute = ((i * 7) % 40) as i64;
    let priority = Priority::from_u8((i % 4) as u8).unwrap_or_default();
    let mut event = Event::new(TYPES[(i % 5) as usize])
        .timestamp_us(START_US + minute * MICROS_PER_MINUTE)
        .priority(priority)
        .correlation_id(correlation(u128::from(i % 3)));
    if i % 4 != 3 {
        // Ids with a '/', to check the split at the first one.
        event = event.entity("task", format!("T/{}", i % 2));
    }
    event
        .json_payload(&serde_json::json!({"i": i, "pad": "x".repeat((i % 50) as usize)}))
        .expect("payload")
}

/// A closed log of `count` mixed events and one durable consumer that
/// committed through the log (so it holds a bookkeeping event).
fn build_mixed_log(dir: &Path, count: u64) {
    let log = Log::open(dir, options()).expect("open");
    let events: Vec<Event> = (0..count).map(mixed_event).collect();
    for chunk in events.chunks(20) {
        log.append_batch(chunk).expect("append");
    }
    let mut consumer = log.consumer("indexer", Filter::all()).expect("consumer");
    let first = consumer
        .next_timeout(LINE_WAIT)
        .expect("deliver")
        .expect("an event");
    consumer
        .append_batch_and_commit(&log, &[Event::new("job.derived")], first.seq)
        .expect("commit through the log");
    log.close().expect("close");
}

/// What `tail` prints for one event: `replay`'s line.
fn line_of(event: &LoggedEvent) -> String {
    format!("{}\n", evlog::json::event_to_json(event))
}

/// Where `tail --no-follow` should start, worked out by a scan rather than
/// the way the tool does it (a query).
enum Start {
    End,
    Seq(u64),
    Time(i64),
}

/// The expected output of `tail --no-follow`, from a scan of the log.
fn expected(dir: &Path, filter: &Filter, start: Start) -> String {
    let view = LogReader::open(dir).expect("open read-only");
    let events: Vec<LoggedEvent> = view
        .iter(..)
        .expect("iter")
        .map(|e| e.expect("event"))
        .collect();
    let from_seq = match start {
        Start::End => u64::MAX,
        Start::Seq(seq) => seq,
        Start::Time(at_us) => events
            .iter()
            .find(|e| e.timestamp_us >= at_us)
            .map_or(u64::MAX, |e| e.seq),
    };
    events
        .iter()
        .filter(|e| e.seq >= from_seq && filter.matches(e))
        .map(line_of)
        .collect()
}

fn rfc3339(at_us: i64) -> String {
    evlog::json::format_timestamp(at_us)
}

// Proves that tail --no-follow prints, byte for byte, replay's lines of exactly the events a scan through the library selects, for every filter (repeated --type, --entity with a '/' in the id, --correlation, --min-priority, combined) and every start (end, --from, --since).
#[test]
fn cli_tail_no_follow_equals_a_library_scan() {
    let root = tempdir();
    let dir = root.path().join("log");
    build_mixed_log(&dir, 400);
    let minute = |m: i64| rfc3339(START_US + m * MICROS_PER_MINUTE);
    let since_13 = minute(13);
    let since_late = minute(1000);
    let corr = correlation(1).to_string();
    let cases: Vec<(Vec<&str>, Filter, Start)> = vec![
        (vec![], Filter::all(), Start::End),
        (vec!["--type", "job.*"], Filter::all(), Start::End),
        (vec!["--from", "1"], Filter::all(), Start::Seq(1)),
        (vec!["--from", "0"], Filter::all(), Start::Seq(1)),
        (vec!["--from", "137"], Filter::all(), Start::Seq(137)),
        (vec!["--from", "100000"], Filter::all(), Start::Seq(100_000)),
        (
            vec!["--from", "5", "--type", "job.*"],
            Filter::all().event_type("job.*"),
            Start::Seq(5),
        ),
        (
            vec!["--from", "1", "--type", "job.done", "--type", "task.*"],
            Filter::all().event_type("job.done").event_type("task.*"),
            Start::Seq(1),
        ),
        (
            vec!["--from", "1", "--entity", "task/T/1"],
            Filter::all().entity("task", "T/1"),
            Start::Seq(1),
        ),
        (
            vec!["--from", "1", "--correlation", &corr],
            Filter::all().correlation(correlation(1)),
            Start::Seq(1),
        ),
        (
            vec!["--from", "1", "--min-priority", "P1"],
            Filter::all().min_priority(Priority::P1),
            Start::Seq(1),
        ),
        (
            vec![
                "--from",
                "50",
                "--type",
                "task.*",
                "--entity",
                "task/T/0",
                "--correlation",
                &corr,
                "--min-priority",
                "P2",
            ],
            Filter::all()
                .event_type("task.*")
                .entity("task", "T/0")
                .correlation(correlation(1))
                .min_priority(Priority::P2),
            Start::Seq(50),
        ),
        (
            vec!["--since", &since_13],
            Filter::all(),
            Start::Time(START_US + 13 * MICROS_PER_MINUTE),
        ),
        (
            vec!["--since", &since_13, "--type", "job.*"],
            Filter::all().event_type("job.*"),
            Start::Time(START_US + 13 * MICROS_PER_MINUTE),
        ),
        (
            vec!["--since", &since_late],
            Filter::all(),
            Start::Time(START_US + 1000 * MICROS_PER_MINUTE),
        ),
        // The log's bookkeeping shows only when a pattern names it.
        (
            vec!["--from", "1", "--type", "evlog.*"],
            Filter::all().event_type("evlog.*"),
            Start::Seq(1),
        ),
    ];
    for (args, filter, start) in cases {
        let want = expected(&dir, &filter, start);
        let mut full = vec!["tail", "--no-follow"];
        full.extend(&args);
        let got = cli_ok(&dir, &full);
        assert_eq!(got, want, "{args:?}");
        // The options may come in any order, `--no-follow` last too.
        let mut reordered = vec!["tail"];
        reordered.extend(&args);
        reordered.push("--no-follow");
        assert_eq!(cli_ok(&dir, &reordered), want, "{args:?} (reordered)");
    }
    // The cases above select something wherever they should.
    let all = cli_ok(&dir, &["tail", "--no-follow", "--from", "1"]);
    assert_eq!(all.lines().count(), 401, "400 events and job.derived");
    assert!(!all.contains("evlog.consumer"), "bookkeeping is hidden");
    let since = cli_ok(&dir, &["tail", "--no-follow", "--since", &since_13]);
    assert!(since.lines().count() > 300, "{since}");
    assert_eq!(
        cli_ok(&dir, &["tail", "--no-follow", "--from", "1"]),
        cli_ok(&dir, &["replay"])
            .lines()
            .filter(|l| !l.contains("\"type\":\"evlog."))
            .map(|l| format!("{l}\n"))
            .collect::<String>(),
        "tail prints replay's lines"
    );
}

/// A running `evlog tail` with its stdout read line by line on a thread.
struct Follower {
    child: Child,
    lines: Receiver<String>,
}

impl Follower {
    fn spawn(dir: &Path, args: &[&str]) -> Follower {
        let mut child = evlog_cli(dir)
            .arg("tail")
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn evlog tail");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Follower { child, lines }
    }

    /// The next line, failing the test (with the child's stderr) after
    /// [`LINE_WAIT`].
    fn next_line(&mut self, waiting_for: &str) -> String {
        match self.lines.recv_timeout(LINE_WAIT) {
            Ok(line) => line,
            Err(e) => {
                let _ = self.child.kill();
                let mut stderr = String::new();
                if let Some(mut err) = self.child.stderr.take() {
                    let _ = err.read_to_string(&mut stderr);
                }
                panic!(
                    "no line from evlog tail ({e:?}) waiting for {waiting_for}; stderr: {stderr}"
                );
            }
        }
    }

    /// Asserts that nothing more is printed for a while.
    fn assert_quiet(&self) {
        match self.lines.recv_timeout(QUIET_WAIT) {
            Err(RecvTimeoutError::Timeout) => {}
            Ok(line) => panic!("unexpected line from evlog tail: {line}"),
            Err(RecvTimeoutError::Disconnected) => panic!("evlog tail stopped printing"),
        }
    }

    /// Asserts that the child is still following, then stops it.
    fn stop(mut self) {
        let status = self.child.try_wait().expect("try_wait");
        assert!(status.is_none(), "evlog tail ended: {status:?}");
        self.child.kill().expect("kill evlog tail");
        self.child.wait().expect("reap evlog tail");
    }
}

impl Drop for Follower {
    fn drop(&mut self) {
        // A failed test must not leave the child running.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn seq_of(line: &str) -> u64 {
    let value: serde_json::Value = serde_json::from_str(line).expect("a JSON line");
    value["seq"].as_u64().expect("a seq")
}

// Proves that a following tail --type 'job.*' (default start: new events only) prints, in order and once each, exactly the matching events that a Log in this process appends while tail reads beside it read-only, across segment rolls, and none of the history before it started.
#[test]
fn cli_tail_follows_a_writer_in_another_process() {
    let root = tempdir();
    let dir = root.path().join("log");
    let log = Log::open(&dir, options()).expect("open");
    for i in 0..30 {
        log.append(Event::new("job.history").entity("job", format!("H-{i}")))
            .expect("append history");
    }
    let mut follower = Follower::spawn(&dir, &["--type", "job.*"]);
    // `tail` starts at the end it sees when it opens, which this process
    // cannot observe: append probes until one shows up.
    let first_probe = loop {
        let seq = log.append(Event::new("job.probe")).expect("append probe");
        match follower.lines.recv_timeout(PROBE_INTERVAL) {
            Ok(line) => break (seq, line),
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => panic!("evlog tail exited"),
        }
    };
    let (probes_end, line) = first_probe;
    let mut next_expected = seq_of(&line);
    assert!(line.contains("\"type\":\"job.probe\""), "{line}");
    // The probes after the first one shown follow it, then the live events.
    while next_expected < probes_end {
        next_expected += 1;
        let line = follower.next_line("the remaining probes");
        assert_eq!(
            line,
            line_of(&log.get(next_expected).expect("get")).trim_end()
        );
    }
    let mut want = Vec::new();
    for round in 0..40u64 {
        let events: Vec<Event> = (0..10)
            .map(|k| {
                Event::new(TYPES[((round + k) % 5) as usize])
                    .json_payload(&serde_json::json!({"pad": "y".repeat(300)}))
                    .expect("payload")
            })
            .collect();
        let seqs = log.append_batch(&events).expect("append batch");
        for seq in seqs {
            let event = log.get(seq).expect("get");
            if event.event_type.starts_with("job.") {
                want.push(line_of(&event).trim_end().to_string());
            }
        }
        if round % 10 == 0 {
            std::thread::sleep(Duration::from_millis(60));
        }
    }
    assert!(log.segment_count() > 2, "the events span segments");
    for (n, expected) in want.iter().enumerate() {
        let line = follower.next_line(&format!("live matching event {n}"));
        assert_eq!(&line, expected);
    }
    follower.assert_quiet();
    follower.stop();
    log.close().expect("close");
}

// Proves that tail --from 1 prints the history and then the events appended meanwhile, every event exactly once in sequence order with no gap at the switch, while the writer keeps appending.
#[test]
fn cli_tail_from_history_then_live_without_gap_or_repeat() {
    let root = tempdir();
    let dir = root.path().join("log");
    let log = Log::open(&dir, options()).expect("open");
    for i in 0..500u64 {
        log.append(mixed_event(i)).expect("append history");
    }
    let mut follower = Follower::spawn(&dir, &["--from", "1"]);
    std::thread::scope(|scope| {
        scope.spawn(|| {
            for i in 500..800u64 {
                log.append(mixed_event(i)).expect("append live");
                if i % 50 == 0 {
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
        });
        for seq in 1..=800u64 {
            let line = follower.next_line(&format!("seq {seq}"));
            assert_eq!(seq_of(&line), seq, "{line}");
        }
    });
    follower.assert_quiet();
    log.append(Event::new("job.late")).expect("append");
    let late = follower.next_line("seq 801");
    assert_eq!(late, line_of(&log.get(801).expect("get")).trim_end());
    follower.stop();
    log.close().expect("close");
}

/// Waits for `child` to exit, up to [`LINE_WAIT`], calling `nudge` between
/// looks.
fn wait_exit(child: &mut Child, mut nudge: impl FnMut()) -> ExitStatus {
    let deadline = Instant::now() + LINE_WAIT;
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("evlog tail did not exit after its stdout closed");
        }
        nudge();
        std::thread::sleep(Duration::from_millis(50));
    }
}

// Proves that tail exits 0 quietly when its standard output closes, like `evlog tail | head`: while printing a long history, and while following (noticed at the next event it prints).
#[test]
fn cli_tail_exits_0_when_stdout_closes() {
    let root = tempdir();
    let dir = root.path().join("log");
    let log = Log::open(&dir, options()).expect("open");
    // More history than a pipe holds (64 KiB on Linux).
    let events: Vec<Event> = (0..3000).map(mixed_event).collect();
    for chunk in events.chunks(20) {
        log.append_batch(chunk).expect("append");
    }
    let spawn = |args: &[&str]| {
        evlog_cli(&dir)
            .arg("tail")
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn evlog tail")
    };
    // `head -n 5` on the history.
    let mut child = spawn(&["--from", "1"]);
    let mut reader = BufReader::new(child.stdout.take().expect("stdout"));
    for seq in 1..=5u64 {
        let mut line = String::new();
        reader.read_line(&mut line).expect("read a line");
        assert_eq!(seq_of(&line), seq);
    }
    drop(reader);
    let status = wait_exit(&mut child, || {});
    let mut stderr = String::new();
    if let Some(mut err) = child.stderr.take() {
        err.read_to_string(&mut stderr).expect("stderr");
    }
    assert_eq!(status.code(), Some(0), "stderr: {stderr}");
    assert!(stderr.is_empty(), "{stderr}");

    // Following: closed while waiting for new events.
    let mut child = spawn(&["--type", "job.*", "--from", "2990"]);
    let mut reader = BufReader::new(child.stdout.take().expect("stdout"));
    let mut line = String::new();
    reader.read_line(&mut line).expect("read a line");
    assert!(seq_of(&line) >= 2990, "{line}");
    drop(reader);
    let status = wait_exit(&mut child, || {
        log.append(Event::new("job.after_close")).expect("append");
    });
    let mut stderr = String::new();
    if let Some(mut err) = child.stderr.take() {
        err.read_to_string(&mut stderr).expect("stderr");
    }
    assert_eq!(status.code(), Some(0), "stderr: {stderr}");
    assert!(stderr.is_empty(), "{stderr}");
    log.close().expect("close");
}

// Proves that consumers prints one {"name","position","lag"} line per durable consumer sorted by name (not by file name: "a" before "a-b"), the same as Log::consumers, while the application has the log open and after, and nothing (exit 0) when there is none.
#[test]
fn cli_consumers_lists_positions_and_lag() {
    let root = tempdir();
    let dir = root.path().join("log");
    let log = Log::open(&dir, options()).expect("open");
    for i in 0..20 {
        log.append(mixed_event(i)).expect("append");
    }
    assert_eq!(cli_ok(&dir, &["consumers"]), "", "no consumer yet");
    // "a-b" commits through its position file, at 5.
    let mut a_b = log.consumer("a-b", Filter::all()).expect("consumer a-b");
    for _ in 0..5 {
        a_b.next_timeout(LINE_WAIT)
            .expect("deliver")
            .expect("event");
    }
    a_b.ack(5).expect("ack");
    assert_eq!(a_b.commit().expect("commit"), 5);
    // "a" commits through the log with a derived event, at 12.
    let mut a = log
        .consumer("a", Filter::all().event_type("job.*"))
        .expect("consumer a");
    let mut last_job = 0;
    while let Some(event) = a.next_timeout(Duration::from_millis(100)).expect("deliver") {
        if event.seq <= 12 {
            last_job = event.seq;
        }
        if event.seq >= 12 {
            break;
        }
    }
    assert!(last_job > 0);
    a.append_batch_and_commit(&log, &[Event::new("job.derived")], last_job)
        .expect("commit through the log");
    let last = log.last_seq().expect("last seq");
    let want = |listed: Vec<evlog::ConsumerInfo>| -> String {
        listed
            .iter()
            .map(|c| {
                format!(
                    "{{\"name\":\"{}\",\"position\":{},\"lag\":{}}}\n",
                    c.name, c.position, c.lag
                )
            })
            .collect()
    };
    let listed = log.consumers().expect("list");
    let mut names: Vec<&str> = listed.iter().map(|c| c.name.as_str()).collect();
    names.sort_unstable();
    assert_eq!(names, ["a", "a-b"]);
    let mut by_name = listed.clone();
    by_name.sort_by(|x, y| x.name.cmp(&y.name));
    let while_open = cli_ok(&dir, &["consumers"]);
    assert_eq!(while_open, want(by_name.clone()));
    let first: serde_json::Value =
        serde_json::from_str(while_open.lines().next().expect("a line")).expect("JSON");
    assert_eq!(first["name"], "a");
    let second: serde_json::Value =
        serde_json::from_str(while_open.lines().nth(1).expect("a line")).expect("JSON");
    assert_eq!(
        second,
        serde_json::json!({"name": "a-b", "position": 5, "lag": last - 5})
    );
    log.close().expect("close");
    assert_eq!(cli_ok(&dir, &["consumers"]), want(by_name));
}

// Proves that tail (with --no-follow, and following until killed) and consumers leave every byte of a log with consumers and indexes as it was, and create nothing on a missing directory (exit 2).
#[test]
fn cli_tail_and_consumers_write_nothing() {
    let root = tempdir();
    let dir = root.path().join("log");
    build_mixed_log(&dir, 300);
    let since = rfc3339(START_US);
    let before = tree(&dir);
    assert!(before.keys().any(|p| p.starts_with("consumers")));
    assert!(before.keys().any(|p| p.starts_with("index")));
    let commands: [&[&str]; 4] = [
        &["tail", "--no-follow", "--from", "1"],
        &["tail", "--no-follow", "--since", &since, "--type", "job.*"],
        &["tail", "--no-follow"],
        &["consumers"],
    ];
    for args in commands {
        let output = run_cli(&dir, args);
        assert_eq!(output.status.code(), Some(0), "{args:?}: {}", said(&output));
    }
    let mut follower = Follower::spawn(&dir, &["--from", "290"]);
    for _ in 290..=301 {
        follower.next_line("history");
    }
    follower.assert_quiet();
    follower.stop();
    assert!(tree(&dir) == before, "a read command changed DIR");

    let missing = root.path().join("missing");
    for args in [&["tail"][..], &["tail", "--no-follow"], &["consumers"]] {
        let output = run_cli(&missing, args);
        assert_eq!(output.status.code(), Some(2), "{args:?}: {}", said(&output));
        assert!(output.stdout.is_empty(), "{args:?}: {}", said(&output));
        assert!(
            text(&output.stderr).contains("no evlog data directory"),
            "{args:?}: {}",
            said(&output)
        );
        assert!(!missing.exists(), "{args:?} created {}", missing.display());
    }
}

// Proves that tail's usage errors exit 2 with a message and no output: --from with --since, a bad type pattern, TYPE/ID without '/', a bad priority, correlation or time.
#[test]
fn cli_tail_usage_errors_exit_2() {
    let root = tempdir();
    let dir = root.path().join("log");
    build_mixed_log(&dir, 10);
    let cases: [(&[&str], &str); 7] = [
        (
            &["--from", "1", "--since", "2026-01-01T00:00:00Z"],
            "cannot be used with",
        ),
        (&["--type", "job..x"], "--type"),
        (&["--type", "job.*", "--type", "bad pattern"], "--type"),
        (&["--entity", "task"], "TYPE/ID"),
        (&["--min-priority", "P4"], "--min-priority"),
        (&["--correlation", "not-a-uuid"], "--correlation"),
        (&["--since", "1767225600"], "RFC 3339"),
    ];
    for (args, message) in cases {
        let mut full = vec!["tail", "--no-follow"];
        full.extend(args);
        let output = run_cli(&dir, &full);
        assert_eq!(output.status.code(), Some(2), "{args:?}: {}", said(&output));
        assert!(output.stdout.is_empty(), "{args:?}: {}", said(&output));
        assert!(
            text(&output.stderr).contains(message),
            "{args:?}: {}",
            said(&output)
        );
    }
}

// Proves that evlog-dump reads a consumer's position file and parked list
// (plain, --json, --verify), changes neither, and reports a damaged one on
// stderr with exit 1.
#[test]
fn evlog_dump_reads_consumer_files() {
    let dump = |args: &[&std::ffi::OsStr]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_evlog-dump"))
            .args(args)
            .output()
            .expect("run evlog-dump")
    };
    let root = tempdir();
    let dir = root.path();
    {
        let log = evlog::Log::open(dir, evlog::Options::default()).unwrap();
        for _ in 0..3 {
            log.append(evlog::Event::new("job.run")).unwrap();
        }
        let mut consumer = log
            .consumer("worker", evlog::Filter::all())
            .unwrap()
            .max_deliveries(1);
        let first = consumer
            .next_timeout(std::time::Duration::from_secs(5))
            .unwrap()
            .unwrap();
        assert_eq!(
            consumer.fail(first.seq, "bad input").unwrap(),
            evlog::FailOutcome::Parked
        );
        consumer.commit().unwrap();
        log.close().unwrap();
    }
    let pos = dir.join("consumers").join("worker.pos");
    let parked = dir.join("consumers").join("worker.parked");
    let before = tree(dir);
    let out = dump(&[pos.as_os_str()]);
    assert_eq!(out.status.code(), Some(0), "{}", said(&out));
    assert!(
        text(&out.stdout).contains("consumer worker, format 1, position 1"),
        "{}",
        said(&out)
    );
    let out = dump(&[pos.as_os_str(), "--json".as_ref()]);
    assert_eq!(
        text(&out.stdout).trim(),
        r#"{"consumer":"worker","position":1}"#
    );
    let out = dump(&[parked.as_os_str(), "--json".as_ref()]);
    assert_eq!(
        text(&out.stdout).trim(),
        r#"{"consumer":"worker","seq":1,"attempts":1,"reason":"bad input"}"#
    );
    for path in [&pos, &parked] {
        let out = dump(&[path.as_os_str(), "--verify".as_ref()]);
        assert_eq!(out.status.code(), Some(0), "{}", said(&out));
        assert!(text(&out.stdout).starts_with("ok: "), "{}", said(&out));
    }
    assert_unchanged(&before, &tree(dir), "evlog-dump");
    // One flipped bit: a CRC mismatch naming the file, exit 1, on stderr.
    let mut bytes = std::fs::read(&pos).unwrap();
    bytes[16] ^= 1;
    std::fs::write(&pos, &bytes).unwrap();
    for verify in [false, true] {
        let mut args = vec![pos.as_os_str()];
        if verify {
            args.push("--verify".as_ref());
        }
        let out = dump(&args);
        assert_eq!(out.status.code(), Some(1), "{}", said(&out));
        assert!(text(&out.stderr).contains("worker.pos"), "{}", said(&out));
    }
}

// Proves that `tail --since` beside an application that holds the indexes
// says on stderr that its start comes from a scan, and still starts right.
#[test]
fn cli_tail_since_notes_a_scan_while_the_indexes_are_held() {
    let root = tempdir();
    let dir = root.path().join("log");
    build_mixed_log(&dir, 50);
    let closed = cli_ok(
        &dir,
        &["tail", "--no-follow", "--since", &rfc3339(START_US)],
    );
    let log = evlog::Log::open(&dir, evlog::Options::default()).unwrap();
    // The application opens its index store on the indexer's thread; the
    // CLI must start after it holds the store's lock, or it opens the
    // indexes itself and has nothing to note.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !log.index_status().available {
        assert!(
            std::time::Instant::now() < deadline,
            "{:?}",
            log.index_status()
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    let output = run_cli(
        &dir,
        &["tail", "--no-follow", "--since", &rfc3339(START_US)],
    );
    assert_eq!(output.status.code(), Some(0), "{}", said(&output));
    assert!(
        text(&output.stderr).contains("scan of the log"),
        "{}",
        said(&output)
    );
    assert_eq!(text(&output.stdout), closed);
    log.close().unwrap();
}
