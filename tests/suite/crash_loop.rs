//! kill -9 of the real `evlog append` process at random moments, in a loop.
//!
//! Each round spawns `evlog --dir D append`, feeds it JSON lines whose
//! content is a function of (round, line number), collects the
//! acknowledgements it prints, and kills it with SIGKILL after a seeded
//! pseudo-random delay (some within the first milliseconds, so the kill can
//! land during startup and recovery). The log is then opened with the
//! library and checked against a model of everything seen so far.
//!
//! `EVLOG_CRASH_ROUNDS` sets the number of rounds (default 100).

use std::io::{BufRead, BufReader, BufWriter, Read, Write};
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{mpsc, Arc};
use std::time::Duration;

use evlog::{Durability, Log, LoggedEvent, Options, Payload};
use serde_json::{json, Value};
use uuid::Uuid;

use crate::common::{tempdir, Rng, Spec};

const EVENT_TYPE: &str = "crash.test";

fn rounds() -> u64 {
    match std::env::var("EVLOG_CRASH_ROUNDS") {
        Ok(text) => text
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("EVLOG_CRASH_ROUNDS={text:?} is not a number")),
        Err(_) => 100,
    }
}

/// Lines fed per round at most; the feeder then idles with stdin open, so
/// the child is still alive (and idle) when the kill lands. Bounded so the
/// whole-log check after every round stays cheap.
fn lines_per_round_max() -> u64 {
    if cfg!(debug_assertions) {
        2_000
    } else {
        10_000
    }
}

/// Pause after each burst of 32 lines.
fn feed_pause() -> Duration {
    if cfg!(debug_assertions) {
        Duration::from_millis(2)
    } else {
        Duration::from_millis(1)
    }
}

fn payload(round: u64, i: u64) -> Value {
    let pad = "z".repeat(((round * 31 + i * 17) % 150) as usize);
    json!({"round": round, "i": i, "pad": pad})
}

/// One acknowledgement printed by `evlog append`.
#[derive(Debug, Clone, Copy)]
struct Ack {
    seq: u64,
    id: Uuid,
}

struct RoundOutcome {
    acks: Vec<Ack>,
    lines_sent: u64,
}

/// Runs `evlog append` for one round and kills it after `delay`.
fn run_round(dir: &Path, round: u64, delay: Duration) -> RoundOutcome {
    let mut child = crate::common::spawn_cli_append(dir);
    let stdin = child.stdin.take().expect("stdin");
    let stdout = child.stdout.take().expect("stdout");
    let mut stderr = child.stderr.take().expect("stderr");
    let (stop_tx, stop_rx) = mpsc::channel::<()>();
    let max_lines = lines_per_round_max();

    let feeder = std::thread::spawn(move || {
        let mut input = BufWriter::new(stdin);
        let mut sent = 0;
        for i in 0..max_lines {
            let line = json!({"type": EVENT_TYPE, "payload": payload(round, i)});
            if writeln!(input, "{line}").is_err() {
                return sent;
            }
            sent += 1;
            if i % 32 == 31 {
                if input.flush().is_err() {
                    return sent;
                }
                // Spread the input over the round, so most kills land while
                // the child is appending (this pace is not asserted on).
                std::thread::sleep(feed_pause());
            }
        }
        let _ = input.flush();
        // Keep stdin open: end of input would make the child exit cleanly.
        let _ = stop_rx.recv();
        sent
    });
    let acknowledger = std::thread::spawn(move || {
        let mut reader = BufReader::new(stdout);
        let mut acks = Vec::new();
        let mut line = String::new();
        loop {
            line.clear();
            match reader.read_line(&mut line) {
                Ok(0) | Err(_) => break,
                Ok(_) if !line.ends_with('\n') => break, // cut by the kill
                Ok(_) => {
                    let value: Value = serde_json::from_str(&line)
                        .unwrap_or_else(|e| panic!("acknowledgement {line:?} is not JSON: {e}"));
                    let seq = value["seq"].as_u64().expect("seq in acknowledgement");
                    let id = value["id"]
                        .as_str()
                        .and_then(|s| s.parse::<Uuid>().ok())
                        .expect("id in acknowledgement");
                    acks.push(Ack { seq, id });
                }
            }
        }
        acks
    });
    let errors = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });

    std::thread::sleep(delay);
    child.kill().expect("kill");
    let status = child.wait().expect("wait");
    let _ = stop_tx.send(());
    let lines_sent = feeder.join().expect("feeder thread");
    let acks = acknowledger.join().expect("acknowledgement reader");
    let errors = errors.join().expect("stderr reader");
    assert_eq!(
        status.signal(),
        Some(9),
        "round {round}: evlog append ended by itself ({status}) before the kill: {errors}"
    );
    RoundOutcome { acks, lines_sent }
}

/// What the model knows about one stored event.
#[derive(Debug, Clone, Copy)]
struct Known {
    id: Uuid,
    round: u64,
    i: u64,
}

fn assert_event(event: &LoggedEvent, round: u64, i: u64, context: &str) {
    assert_eq!(event.event_type, EVENT_TYPE, "{context}: type");
    let Payload::Json(text) = &event.payload else {
        panic!("{context}: payload is not JSON: {:?}", event.payload);
    };
    let stored: Value = serde_json::from_str(text).expect("stored payload is JSON");
    assert_eq!(stored, payload(round, i), "{context}: payload");
}

/// When to kill a child, in microseconds after its start: one round in five
/// within 3 ms (during startup or recovery), the rest within 100 ms.
fn kill_delay_us(rng: &mut Rng) -> u64 {
    if rng.below(5) == 0 {
        rng.below(3_000)
    } else {
        3_000 + rng.below(97_000)
    }
}

// Proves that after kill -9 at random moments every acknowledged event survives intact, gap-free, round after round.
#[test]
fn crash_loop_kill9_loses_no_acknowledged_event() {
    let dir = tempdir();
    let data = dir.path().join("data");
    let rounds = rounds();
    let mut rng = Rng::new(0xC4A5_0001);
    let mut model: Vec<Known> = Vec::new();
    let mut acknowledged_total = 0u64;

    for round in 0..rounds {
        let delay_us = kill_delay_us(&mut rng);
        let outcome = run_round(&data, round, Duration::from_micros(delay_us));
        let context = format!("round {round} (kill after {delay_us} us)");
        let previous = model.len() as u64;

        for (k, ack) in outcome.acks.iter().enumerate() {
            assert_eq!(
                ack.seq,
                previous + 1 + k as u64,
                "{context}: acknowledgement {k}"
            );
        }

        let log = Log::open(&data, Options::default())
            .unwrap_or_else(|e| panic!("{context}: reopen failed: {e}"));
        let last = log.last_seq().unwrap_or(0);
        assert!(
            last >= previous + outcome.acks.len() as u64,
            "{context}: last_seq {last}, but {previous} events before and {} acknowledged now",
            outcome.acks.len()
        );
        assert!(
            last <= previous + outcome.lines_sent,
            "{context}: last_seq {last} exceeds the {} lines sent",
            outcome.lines_sent
        );

        let mut expected_seq = 1;
        for item in log.iter(..).expect("iter") {
            let event =
                item.unwrap_or_else(|e| panic!("{context}: read of seq {expected_seq}: {e}"));
            assert_eq!(event.seq, expected_seq, "{context}: gap");
            let seq_context = format!("{context}, seq {expected_seq}");
            if expected_seq <= previous {
                let known = model[expected_seq as usize - 1];
                assert_eq!(event.id, known.id, "{seq_context}: id");
                assert_event(&event, known.round, known.i, &seq_context);
            } else {
                let i = expected_seq - previous - 1;
                if let Some(ack) = outcome.acks.get(i as usize) {
                    assert_eq!(event.id, ack.id, "{seq_context}: acknowledged id");
                }
                assert_event(&event, round, i, &seq_context);
                model.push(Known {
                    id: event.id,
                    round,
                    i,
                });
            }
            expected_seq += 1;
        }
        assert_eq!(
            expected_seq,
            last + 1,
            "{context}: iter ended before last_seq"
        );
        for ack in &outcome.acks {
            let event = log
                .get(ack.seq)
                .unwrap_or_else(|e| panic!("{context}: get({}): {e}", ack.seq));
            assert_eq!(event.id, ack.id, "{context}: get({})", ack.seq);
        }
        log.close().expect("close");
        acknowledged_total += outcome.acks.len() as u64;
    }

    assert_eq!(evlog::dump::verify(&data).expect("verify"), None);
    println!(
        "crash_loop: {rounds} rounds, {acknowledged_total} acknowledged events verified, 0 lost"
    );
}

// The second loop kills a child that uses the library directly with small
// segments, so kills also land during segment rolls, under every
// durability setting, with concurrent single appends and atomic batches.
// The child is this test binary itself, re-run in "child mode".

const CHILD_DIR_ENV: &str = "EVLOG_SUITE_CRASH_CHILD_DIR";
const CHILD_ROUND_ENV: &str = "EVLOG_SUITE_CRASH_CHILD_ROUND";
const CHILD_TEST_NAME: &str = "crash_loop::crash_loop_child_process_mode";
const ROLLING_TYPE: &str = "crash.rolling";
/// Batch `b` of the batch thread holds events `b * BATCH_STRIDE + j`.
const BATCH_STRIDE: u64 = 8;
/// Writer thread numbers in the child.
const SINGLES: u64 = 0;
const BATCHES: u64 = 1;

fn batch_size(b: u64) -> u64 {
    1 + b % 5
}

fn rolling_options(round: u64) -> Options {
    let durability = match round % 3 {
        0 => Durability::Always,
        1 => Durability::Interval(Duration::from_millis(5)),
        _ => Durability::OsBuffered,
    };
    Options::default()
        .durability(durability)
        .segment_bytes_max(64 * 1024)
        .preallocate_bytes(16 * 1024)
}

fn rolling_spec(round: u64, t: u64, i: u64) -> Spec {
    Spec {
        id: Uuid::from_u128(
            (0xCC_u128 << 120) | (u128::from(round) << 64) | (u128::from(t) << 48) | u128::from(i),
        ),
        event_type: ROLLING_TYPE.into(),
        entity: ("writer".into(), t.to_string()),
        payload: json!({
            "round": round,
            "t": t,
            "i": i,
            "pad": "r".repeat(((round * 7 + t * 3 + i * 29) % 400) as usize),
        }),
    }
}

// Not a test by itself: the child process of crash_loop_rolling_segments_kill9,
// which runs it with `--ignored --exact`. Ignored so that it is never counted
// as a passing test that checked nothing.
#[test]
#[ignore = "child process of crash_loop_rolling_segments_kill9"]
fn crash_loop_child_process_mode() {
    let Ok(dir) = std::env::var(CHILD_DIR_ENV) else {
        return;
    };
    let round: u64 = std::env::var(CHILD_ROUND_ENV)
        .expect("round")
        .parse()
        .expect("round number");
    let log = Arc::new(Log::open(&dir, rolling_options(round)).expect("child: open"));
    let print = |seq: u64, t: u64, i: u64| {
        let mut out = std::io::stdout().lock();
        writeln!(out, "ACK {seq} {t} {i}").expect("child: stdout");
        out.flush().expect("child: flush");
    };
    let singles = Arc::clone(&log);
    std::thread::spawn(move || {
        for i in 0.. {
            let seq = singles
                .append(rolling_spec(round, SINGLES, i).event())
                .expect("child: append");
            print(seq, SINGLES, i);
        }
    });
    let batches = Arc::clone(&log);
    std::thread::spawn(move || {
        for b in 0.. {
            let specs: Vec<Spec> = (0..batch_size(b))
                .map(|j| rolling_spec(round, BATCHES, b * BATCH_STRIDE + j))
                .collect();
            let events: Vec<_> = specs.iter().map(Spec::event).collect();
            let range = batches.append_batch(&events).expect("child: append_batch");
            for (j, seq) in range.enumerate() {
                print(seq, BATCHES, b * BATCH_STRIDE + j as u64);
            }
        }
    });
    // The parent kills this process; should the parent die instead, its
    // end of stdin closes and the child goes too.
    let _ = std::io::stdin().read_to_end(&mut Vec::new());
    std::process::exit(3);
}

/// Runs one child for `delay`, kills it, returns its acknowledgements as
/// (seq, thread, i).
fn run_rolling_round(dir: &Path, round: u64, delay: Duration) -> Vec<(u64, u64, u64)> {
    let mut child = Command::new(std::env::current_exe().expect("test binary"))
        .args([
            CHILD_TEST_NAME,
            "--ignored",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_DIR_ENV, dir)
        .env(CHILD_ROUND_ENV, round.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn the child");
    let stdin = child.stdin.take().expect("stdin");
    let stdout = child.stdout.take().expect("stdout");
    let mut stderr = child.stderr.take().expect("stderr");
    let acknowledger = std::thread::spawn(move || {
        let mut reader = BufReader::new(stdout);
        let mut acks = Vec::new();
        let mut line = String::new();
        loop {
            line.clear();
            match reader.read_line(&mut line) {
                Ok(0) | Err(_) => break,
                Ok(_) if !line.ends_with('\n') => break,
                Ok(_) => {
                    let Some(rest) = line.trim_end().strip_prefix("ACK ") else {
                        continue; // the test harness talking
                    };
                    let fields: Vec<u64> = rest
                        .split(' ')
                        .map(|f| f.parse().expect("a number in an ACK line"))
                        .collect();
                    assert_eq!(fields.len(), 3, "ACK line {line:?}");
                    acks.push((fields[0], fields[1], fields[2]));
                }
            }
        }
        acks
    });
    let errors = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });
    std::thread::sleep(delay);
    child.kill().expect("kill");
    let status = child.wait().expect("wait");
    drop(stdin);
    let acks = acknowledger.join().expect("acknowledgement reader");
    let errors = errors.join().expect("stderr reader");
    assert_eq!(
        status.signal(),
        Some(9),
        "round {round}: the child ended by itself ({status}): {errors}"
    );
    assert!(
        !errors.contains("panicked"),
        "round {round}: the child failed: {errors}"
    );
    acks
}

// Proves that kill -9 during appends, batches and segment rolls, under every durability setting, loses no acknowledged event and tears no batch.
#[test]
fn crash_loop_rolling_segments_kill9() {
    let dir = tempdir();
    let data = dir.path().join("data");
    let rounds = rounds();
    let mut rng = Rng::new(0xC4A5_0002);
    // (round, thread, i) of every seq, in order.
    let mut model: Vec<(u64, u64, u64)> = Vec::new();
    let mut acknowledged_total = 0u64;

    for round in 0..rounds {
        let delay_us = kill_delay_us(&mut rng);
        let acks = run_rolling_round(&data, round, Duration::from_micros(delay_us));
        let context = format!("rolling round {round} (kill after {delay_us} us)");
        let previous = model.len() as u64;

        let log = Log::open(&data, rolling_options(round))
            .unwrap_or_else(|e| panic!("{context}: reopen failed: {e}"));
        let last = log.last_seq().unwrap_or(0);
        let mut next_single = 0;
        let (mut batch, mut in_batch) = (0, 0);
        let mut expected_seq = 1;
        for item in log.iter(..).expect("iter") {
            let event =
                item.unwrap_or_else(|e| panic!("{context}: read of seq {expected_seq}: {e}"));
            let seq = expected_seq;
            assert_eq!(event.seq, seq, "{context}: gap");
            expected_seq += 1;
            if seq <= previous {
                let (r, t, i) = model[seq as usize - 1];
                rolling_spec(r, t, i).assert_matches(&event, seq);
                continue;
            }
            let Payload::Json(text) = &event.payload else {
                panic!("{context}: seq {seq} has no JSON payload");
            };
            let value: Value = serde_json::from_str(text).expect("JSON payload");
            let (t, i) = (
                value["t"].as_u64().expect("t"),
                value["i"].as_u64().expect("i"),
            );
            rolling_spec(round, t, i).assert_matches(&event, seq);
            if in_batch > 0 {
                assert_eq!(t, BATCHES, "{context}: seq {seq} splits batch {batch}");
            }
            if t == SINGLES {
                assert_eq!(i, next_single, "{context}: seq {seq}: singles out of order");
                next_single += 1;
            } else {
                assert_eq!(
                    i,
                    batch * BATCH_STRIDE + in_batch,
                    "{context}: seq {seq}: batch events out of order"
                );
                in_batch += 1;
                if in_batch == batch_size(batch) {
                    batch += 1;
                    in_batch = 0;
                }
            }
            model.push((round, t, i));
        }
        assert_eq!(expected_seq, last + 1, "{context}: iter ended early");
        assert_eq!(
            in_batch, 0,
            "{context}: batch {batch} is only partly in the log"
        );
        for &(seq, t, i) in &acks {
            assert!(
                seq > previous && seq <= last,
                "{context}: acknowledged seq {seq} is not in {}..={last}",
                previous + 1
            );
            assert_eq!(
                model[seq as usize - 1],
                (round, t, i),
                "{context}: acknowledged seq {seq}"
            );
        }
        log.close().expect("close");
        assert_eq!(
            evlog::dump::verify(&data).expect("verify"),
            None,
            "{context}"
        );
        acknowledged_total += acks.len() as u64;
    }
    let segments = crate::common::segment_files(&data).len();
    assert!(
        segments >= 3,
        "only {segments} segments: no rolls were crashed"
    );
    println!(
        "crash_loop (rolling): {rounds} rounds, {} events in {segments} segments, {acknowledged_total} acknowledged events verified, 0 lost",
        model.len()
    );
}
