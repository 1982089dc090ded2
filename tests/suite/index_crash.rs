//! kill -9 of the real `evlog` binary while its indexer is busy (a big
//! `append` on stdin, or `demo`), round after round on one directory;
//! after each kill the library reopens the log, waits for the indexer,
//! and every query must equal a brute-force scan, with `verify` clean.
//!
//! `EVLOG_INDEX_CRASH_ROUNDS` sets the number of rounds (default 8).

use std::io::{BufWriter, Write};
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::Duration;

use evlog::{Log, Uuid};
use serde_json::json;

use crate::common::{evlog_cli, tempdir, Rng};
use crate::index_props::{check_view, options, wait_indexed};

/// Enough that the indexer is still behind when most kills land (it
/// indexes a few tens of thousands of events a second), few enough that
/// the brute-force checks of the growing log stay quick.
const EVENTS_PER_ROUND: u64 = 20_000;

fn rounds() -> u64 {
    match std::env::var("EVLOG_INDEX_CRASH_ROUNDS") {
        Ok(text) => text
            .trim()
            .parse()
            .expect("EVLOG_INDEX_CRASH_ROUNDS is a number"),
        Err(_) => 8,
    }
}

/// `evlog append` fed `lines` JSON lines at full speed: correlations,
/// entities with links, actors, sessions, causes pointing back within the
/// round, timestamps out of order. Ids are explicit so causes resolve.
fn spawn_append(dir: &Path, round: u64, lines: u64) -> (Child, std::thread::JoinHandle<()>) {
    let mut child = evlog_cli(dir)
        .arg("append")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn evlog append");
    let stdin = child.stdin.take().unwrap();
    let feeder = std::thread::spawn(move || {
        let mut rng = Rng::new(0xFEED_0000 + round);
        let id =
            |i: u64| Uuid::from_u128((u128::from(round) << 64) | u128::from(i) | (0xC4A5 << 112));
        let mut out = BufWriter::new(stdin);
        const TYPES: [&str; 4] = ["job.started", "job.step.done", "job.failed", "audit"];
        for i in 0..lines {
            let event_type = TYPES[rng.below(4) as usize];
            let mut line = json!({
                "type": event_type,
                "id": id(i).to_string(),
                "correlation_id": Uuid::from_u128(0xC0 + u128::from(rng.below(5))).to_string(),
                "entity": {"type": "job", "id": format!("J-{}", rng.below(7))},
                "actor": format!("actor-{}", rng.below(4)),
                "session": format!("s-{}", rng.below(3)),
                "priority": format!("P{}", rng.below(4)),
                // Years 2000..2029, in no order.
                "timestamp": format!(
                    "20{:02}-0{}-1{}T0{}:{:02}:{:02}Z",
                    rng.below(30), 1 + rng.below(9), rng.below(10), rng.below(10), rng.below(60), rng.below(60)
                ),
                "payload": {"round": round, "i": i},
            });
            if i > 0 && rng.below(3) == 0 {
                line["causation_id"] = json!(id(rng.below(i)).to_string());
            }
            if rng.below(10) == 0 {
                line["metadata"] = json!({"link.pipeline": format!("P-{}", rng.below(2))});
            }
            if writeln!(out, "{line}").is_err() {
                return; // killed
            }
        }
        let _ = out.flush();
        // Stdin stays open until the kill: end of input would close the
        // log cleanly.
        std::thread::sleep(Duration::from_secs(3600));
    });
    (child, feeder)
}

fn spawn_demo(dir: &Path, events: u64) -> Child {
    evlog_cli(dir)
        .args(["demo", "--events", &events.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn evlog demo")
}

// Every round kills the process while it appends and indexes; the
// library must then find an index it can trust or rebuild, and answer
// every query like a scan of the log.
#[test]
fn queries_equal_a_scan_after_kill9_during_indexing() {
    let dir = tempdir();
    let data = dir.path().join("data");
    let mut rng = Rng::new(0x1DC8_A5E5);
    let mut last = 0u64;
    for round in 0..rounds() {
        // One kill in four within 30 ms: during recovery and the index
        // open (or its rebuild); the rest while appending and indexing.
        let delay = Duration::from_millis(if rng.below(4) == 0 {
            rng.below(30)
        } else {
            30 + rng.below(450)
        });
        let mut child = if round % 2 == 0 {
            spawn_demo(&data, EVENTS_PER_ROUND)
        } else {
            let (child, feeder) = spawn_append(&data, round, EVENTS_PER_ROUND);
            drop(feeder); // detached: it ends when the pipe breaks
            child
        };
        std::thread::sleep(delay);
        let ended_by_itself = child.try_wait().unwrap().is_some();
        child.kill().ok();
        let status = child.wait().unwrap();
        let context = format!("round {round} (kill after {delay:?}, {status})");
        assert!(
            ended_by_itself || status.signal() == Some(9),
            "{context}: not killed"
        );
        let started = std::time::Instant::now();
        let log = Log::open(&data, options()).unwrap_or_else(|e| panic!("{context}: open: {e}"));
        let now = log.last_seq().unwrap_or(0);
        let before = last;
        assert!(
            now >= last,
            "{context}: the log shrank from {last} to {now}"
        );
        last = now;
        // Mid catch-up (or rebuild).
        check_view(&log, &format!("{context}, catching up"), round, 6, 1);
        wait_indexed(&log);
        let caught_up = started.elapsed();
        check_view(&log, &context, round ^ 0xFF, 6, 2);
        eprintln!(
            "{context}: {} events (+{}), {:?} to catch up, {:?} in all, {:?}",
            log.last_seq().unwrap_or(0),
            log.last_seq().unwrap_or(0) - before,
            caught_up,
            started.elapsed(),
            log.index_status().rebuilt_because
        );
        log.close().unwrap();
    }
    assert!(last > 0, "no round appended anything");
}
