//! The `evlog` binary on damaged, missing, concurrently written and locked
//! data directories: each CLI append is its own atomic unit, damage to
//! vouched data is refused until `repair`, the read commands write nothing,
//! replay during appends sees exact prefixes, and repair respects the lock.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use evlog::{Event, Log, Options};
use serde_json::{json, Value};

use crate::common::{
    assert_no_data_directory, assert_unchanged, file_len, records, run_cli, run_cli_append, said,
    segment_files, segments_dir, spawn_cli_append, tempdir, text, tree, truncate,
};

fn append(dir: &Path, input: &str) -> Output {
    run_cli_append(dir, input)
}

/// The payload of event `i`. The JSON text is the last field of a record
/// body and longer than the 10 bytes the damage tests cut, so a cut record
/// still ends in non-zero bytes (recovery and repair keep a tail up to its
/// last non-zero byte: zeros there look like preallocated space).
fn payload(i: u64) -> Value {
    json!({"i": i, "text": format!("event number {i}")})
}

/// The input line of event `i`.
fn line(i: u64) -> String {
    json!({"type": "t.e", "payload": payload(i)}).to_string()
}

/// Runs one `evlog append` per event `1..=count`, checking each ack.
fn append_each(dir: &Path, count: u64) {
    for i in 1..=count {
        let output = append(dir, &(line(i) + "\n"));
        assert_eq!(
            output.status.code(),
            Some(0),
            "append {i}: {}",
            said(&output)
        );
        let acks = json_lines(&output.stdout);
        assert_eq!(acks.len(), 1, "append {i}: {}", said(&output));
        assert_eq!(acks[0]["seq"], json!(i), "append {i}: {}", said(&output));
    }
}

fn json_lines(bytes: &[u8]) -> Vec<Value> {
    text(bytes)
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{line:?}: {e}")))
        .collect()
}

/// Panics unless `output` is a successful replay of events `1..=count` as
/// appended by `append_each`.
fn assert_replay_of(output: &Output, count: u64) {
    assert_eq!(output.status.code(), Some(0), "replay: {}", said(output));
    let events = json_lines(&output.stdout);
    let seqs: Vec<u64> = events
        .iter()
        .map(|e| e["seq"].as_u64().expect("seq"))
        .collect();
    assert_eq!(
        seqs,
        (1..=count).collect::<Vec<_>>(),
        "replay: {}",
        said(output)
    );
    for (event, i) in events.iter().zip(1u64..) {
        assert_eq!(event["type"], "t.e", "{event}");
        assert_eq!(event["payload"], payload(i), "{event}");
    }
}

/// `tree` with the contents of `LOCK` blanked: every process that takes the
/// directory lock writes its own pid there.
fn tree_but_lock_pid(root: &Path) -> BTreeMap<PathBuf, Option<Vec<u8>>> {
    let mut found = tree(root);
    if let Some(Some(bytes)) = found.get_mut(Path::new("LOCK")) {
        bytes.clear();
    }
    found
}

/// Names of the files in `DIR/lost+found/`.
fn lost_found_files(dir: &Path) -> Vec<PathBuf> {
    let lost = dir.join("lost+found");
    if !lost.exists() {
        return Vec::new();
    }
    let mut files: Vec<PathBuf> = std::fs::read_dir(lost)
        .expect("read lost+found")
        .map(|e| e.expect("entry").path())
        .collect();
    files.sort();
    files
}

/// Appends 12 events with 12 `evlog append` runs and cuts the last 10
/// bytes of the last record. Returns the segment, its bytes before the cut
/// and the last record's offset and end.
fn twelve_appends_then_cut(dir: &Path) -> (PathBuf, Vec<u8>, u64, u64) {
    append_each(dir, 12);
    let segments = segment_files(dir);
    assert_eq!(segments.len(), 1, "{segments:?}");
    let segment = segments[0].clone();
    let found = records(&segment);
    assert_eq!(
        found.iter().map(|r| r.seq).collect::<Vec<_>>(),
        (1..=12).collect::<Vec<_>>()
    );
    // Each run was its own append request: 12 units of one record each.
    assert!(
        found.iter().all(|r| r.group_count == 1),
        "every record is its own unit: {found:?}"
    );
    let last = found[11];
    assert_eq!(
        file_len(&segment),
        last.end(),
        "a clean close trims the preallocated tail"
    );
    let bytes = std::fs::read(&segment).expect("read segment");
    assert_ne!(
        bytes[(last.end() - 11) as usize],
        0,
        "the cut record must end in a non-zero byte"
    );
    truncate(&segment, last.end() - 10);
    (segment, bytes, last.offset, last.end())
}

// Proves that each `evlog append` run is its own unit: after a crash that tore the 12th of 12 runs, replay (read-only) shows exactly 11 events without changing a byte, and the next append cuts the torn bytes to lost+found and gets seq 12.
#[test]
fn cli_each_append_is_its_own_unit() {
    let root = tempdir();
    let dir = root.path().join("d");
    let marker = segments_dir(&dir).join("CLEAN");
    let (segment, original, last_offset, last_end) = twelve_appends_then_cut(&dir);
    // The marker must exist before it is removed, or this "crash" would be
    // no different from a clean close.
    assert!(marker.exists(), "the last run closed cleanly");
    std::fs::remove_file(&marker).expect("remove CLEAN");

    let before = tree(&dir);
    let segment_before = std::fs::read(&segment).expect("read");
    assert_eq!(segment_before, original[..(last_end - 10) as usize]);
    let replay = run_cli(&dir, &["replay"]);
    assert_replay_of(&replay, 11);
    assert_eq!(
        std::fs::read(&segment).expect("read"),
        segment_before,
        "replay changed the segment"
    );
    let info = run_cli(&dir, &["info"]);
    assert_eq!(info.status.code(), Some(0), "{}", said(&info));
    let info = &json_lines(&info.stdout)[0];
    assert_eq!(info["last_seq"], json!(11), "{info}");
    assert_eq!(info["first_seq"], json!(1), "{info}");
    assert_eq!(info["closed_cleanly"], json!(false), "{info}");
    assert_eq!(tree(&dir), before, "replay/info changed the directory");

    let output = append(&dir, &(line(13) + "\n"));
    assert_eq!(output.status.code(), Some(0), "{}", said(&output));
    let acks = json_lines(&output.stdout);
    assert_eq!(acks.len(), 1, "{}", said(&output));
    assert_eq!(acks[0]["seq"], json!(12), "{}", said(&output));
    let stderr = text(&output.stderr);
    assert!(
        stderr.contains("lost+found"),
        "the cut is not reported: {stderr}"
    );
    assert!(stderr.contains("seq 12"), "dropped seq not named: {stderr}");
    let kept = lost_found_files(&dir);
    assert_eq!(kept.len(), 1, "{kept:?}");
    assert_eq!(
        std::fs::read(&kept[0]).expect("read copy"),
        original[last_offset as usize..(last_end - 10) as usize],
        "lost+found holds exactly the torn record's remaining bytes"
    );

    let replay = run_cli(&dir, &["replay"]);
    assert_eq!(replay.status.code(), Some(0), "{}", said(&replay));
    let events = json_lines(&replay.stdout);
    assert_eq!(events.len(), 12, "{}", said(&replay));
    assert_eq!(events[11]["seq"], json!(12));
    assert_eq!(events[11]["payload"], payload(13));
}

// Proves that a cut into a record a clean close vouched for is refused (replay and append exit 1, damage, naming file and sequence 12, append writes nothing) until `repair`, whose dry run changes nothing and whose real run keeps the cut bytes in lost+found and makes replay work again.
#[test]
fn cli_damage_after_clean_close_is_refused_then_repaired() {
    let root = tempdir();
    let dir = root.path().join("d");
    let (segment, original, last_offset, last_end) = twelve_appends_then_cut(&dir);
    assert!(segments_dir(&dir).join("CLEAN").exists(), "closed cleanly");
    let segment_name = segment
        .file_name()
        .and_then(|n| n.to_str())
        .expect("name")
        .to_string();

    let before = tree_but_lock_pid(&dir);
    let replay = run_cli(&dir, &["replay"]);
    assert_eq!(replay.status.code(), Some(1), "{}", said(&replay));
    let stderr = text(&replay.stderr);
    assert!(stderr.contains(&segment_name), "no file named: {stderr}");
    assert!(
        stderr.contains("sequence 12"),
        "no sequence named: {stderr}"
    );

    let output = append(&dir, &(line(13) + "\n"));
    assert_eq!(output.status.code(), Some(1), "{}", said(&output));
    assert!(output.stdout.is_empty(), "{}", said(&output));
    let stderr = text(&output.stderr);
    assert!(stderr.contains(&segment_name), "no file named: {stderr}");
    assert!(
        stderr.contains("sequence 12"),
        "no sequence named: {stderr}"
    );
    assert_eq!(
        tree_but_lock_pid(&dir),
        before,
        "a refused append changed files"
    );

    let dry = run_cli(&dir, &["repair", "--dry-run"]);
    assert_eq!(dry.status.code(), Some(0), "{}", said(&dry));
    let stdout = text(&dry.stdout);
    assert!(
        stdout.lines().any(|l| l.contains("would drop seq 12")),
        "{}",
        said(&dry)
    );
    assert!(
        stdout.contains(&format!("bytes {last_offset}..{}", last_end - 10)),
        "dry run does not name the byte range: {}",
        said(&dry)
    );
    assert_eq!(
        tree_but_lock_pid(&dir),
        before,
        "repair --dry-run changed files"
    );

    let repair = run_cli(&dir, &["repair"]);
    assert_eq!(repair.status.code(), Some(0), "{}", said(&repair));
    let stdout = text(&repair.stdout);
    assert!(stdout.contains("dropped seq 12"), "{}", said(&repair));
    assert!(
        !stdout.contains("dropped seqs"),
        "only seq 12 may go: {}",
        said(&repair)
    );
    let kept = lost_found_files(&dir);
    assert_eq!(kept.len(), 1, "{kept:?}");
    assert!(
        kept[0]
            .to_string_lossy()
            .ends_with(&format!("{segment_name}.at-{last_offset}")),
        "{kept:?}"
    );
    assert_eq!(
        std::fs::read(&kept[0]).expect("read copy"),
        original[last_offset as usize..(last_end - 10) as usize],
        "lost+found holds exactly the damaged record's remaining bytes"
    );
    assert_eq!(
        file_len(&segment),
        last_offset,
        "the segment ends at seq 11"
    );

    assert_replay_of(&run_cli(&dir, &["replay"]), 11);
    let info = run_cli(&dir, &["info"]);
    assert_eq!(info.status.code(), Some(0), "{}", said(&info));
    assert_eq!(json_lines(&info.stdout)[0]["last_seq"], json!(11));
}

// Proves that get, replay and info create nothing on a missing directory, refuse a regular file, and leave every byte (and the absence of LOCK) of an existing log as it was.
#[test]
fn cli_read_commands_write_nothing() {
    let root = tempdir();
    let missing = root.path().join("missing");
    let file = root.path().join("plain-file");
    std::fs::write(&file, b"not a log").expect("write file");
    let commands: [&[&str]; 3] = [&["get", "1"], &["replay"], &["info"]];
    for args in commands {
        let output = assert_no_data_directory(&missing, args);
        assert!(output.stdout.is_empty(), "{args:?}: {}", said(&output));
        assert!(!missing.exists(), "{args:?} created {}", missing.display());

        let output = run_cli(&file, args);
        assert_eq!(output.status.code(), Some(2), "{args:?}: {}", said(&output));
        assert!(
            text(&output.stderr).contains("not a directory"),
            "{args:?}: {}",
            said(&output)
        );
        assert_eq!(std::fs::read(&file).expect("read"), b"not a log");
    }

    let dir = root.path().join("d");
    let input: String = (1..=5).map(|i| line(i) + "\n").collect();
    let output = append(&dir, &input);
    assert_eq!(output.status.code(), Some(0), "{}", said(&output));
    // The writer leaves its LOCK file; without it, a reader that took the
    // lock would show up as a new file.
    std::fs::remove_file(dir.join("LOCK")).expect("remove LOCK");
    let before = tree(&dir);
    assert!(
        before.contains_key(Path::new("segments/CLEAN")),
        "{before:?}"
    );

    let get = run_cli(&dir, &["get", "3"]);
    assert_eq!(get.status.code(), Some(0), "{}", said(&get));
    assert_eq!(json_lines(&get.stdout)[0]["payload"], payload(3));
    let get = run_cli(&dir, &["get", "6"]);
    assert_eq!(get.status.code(), Some(1), "{}", said(&get));
    assert_replay_of(&run_cli(&dir, &["replay"]), 5);
    let range = run_cli(&dir, &["replay", "--from", "2", "--to", "3"]);
    assert_eq!(range.status.code(), Some(0), "{}", said(&range));
    assert_eq!(json_lines(&range.stdout).len(), 2, "{}", said(&range));
    let info = run_cli(&dir, &["info"]);
    assert_eq!(info.status.code(), Some(0), "{}", said(&info));
    let info = &json_lines(&info.stdout)[0];
    assert_eq!(
        (
            &info["first_seq"],
            &info["last_seq"],
            &info["closed_cleanly"]
        ),
        (&json!(1), &json!(5), &json!(true)),
        "{info}"
    );
    assert_unchanged(&before, &tree(&dir), "the read commands");
}

// Proves that replays run while another process appends 2000 events see exactly seqs 1..=k each time (no gap, duplicate or partial line), every line equal to the final replay's, and that get of the last seq seen succeeds.
#[test]
fn cli_replay_while_appending_sees_prefixes() {
    const EVENTS: u64 = 2000;
    const CHUNK: u64 = 20;
    let root = tempdir();
    let dir = root.path().join("d");
    // An existing (empty) log, so the first replays find a directory.
    Log::open(&dir, Options::default())
        .expect("create")
        .close()
        .expect("close");

    let mut child = spawn_cli_append(&dir);
    let mut stdin = child.stdin.take().expect("stdin");
    let feeder = std::thread::spawn(move || -> std::io::Result<()> {
        for chunk in 0..EVENTS / CHUNK {
            let lines: String = (chunk * CHUNK + 1..=(chunk + 1) * CHUNK)
                .map(|i| line(i) + "\n")
                .collect();
            stdin.write_all(lines.as_bytes())?;
            stdin.flush()?;
            std::thread::sleep(Duration::from_millis(4));
        }
        Ok(())
    });
    let mut stdout = child.stdout.take().expect("stdout");
    let acks = std::thread::spawn(move || {
        let mut acks = String::new();
        stdout.read_to_string(&mut acks).map(|_| acks)
    });
    let mut stderr = child.stderr.take().expect("stderr");
    let errors = std::thread::spawn(move || {
        let mut errors = String::new();
        stderr.read_to_string(&mut errors).map(|_| errors)
    });

    let started = Instant::now();
    let mut seen: Vec<Vec<String>> = Vec::new();
    loop {
        let done = child.try_wait().expect("try_wait").is_some();
        if done && seen.len() >= 20 {
            break;
        }
        assert!(
            seen.len() < 5000 && started.elapsed() < Duration::from_secs(180),
            "gave up after {} replays in {:?}",
            seen.len(),
            started.elapsed()
        );
        let replay = run_cli(&dir, &["replay"]);
        assert_eq!(
            replay.status.code(),
            Some(0),
            "replay {}: {}",
            seen.len(),
            said(&replay)
        );
        let out = text(&replay.stdout);
        assert!(
            out.is_empty() || out.ends_with('\n'),
            "partial last line: {out:?}"
        );
        let lines: Vec<String> = out.lines().map(str::to_string).collect();
        for (i, line) in lines.iter().enumerate() {
            let event: Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("replay {}: {line:?}: {e}", seen.len()));
            assert_eq!(
                event["seq"].as_u64(),
                Some(i as u64 + 1),
                "replay {} line {}: {line}",
                seen.len(),
                i + 1
            );
        }
        if let Some(last) = lines.last() {
            let k = lines.len().to_string();
            let get = run_cli(&dir, &["get", &k]);
            assert_eq!(get.status.code(), Some(0), "get {k}: {}", said(&get));
            assert_eq!(text(&get.stdout).trim_end(), last, "get {k}");
        }
        seen.push(lines);
    }

    feeder
        .join()
        .expect("feeder thread")
        .expect("write to evlog append");
    let status = child.wait().expect("wait");
    let errors = errors.join().expect("stderr thread").expect("read stderr");
    assert!(status.success(), "evlog append: {status}: {errors}");
    let acks = acks.join().expect("stdout thread").expect("read stdout");
    let ack_seqs: Vec<u64> = json_lines(acks.as_bytes())
        .iter()
        .map(|a| a["seq"].as_u64().expect("seq"))
        .collect();
    assert_eq!(ack_seqs, (1..=EVENTS).collect::<Vec<_>>());

    let full = run_cli(&dir, &["replay"]);
    assert_replay_of(&full, EVENTS);
    let full: Vec<String> = text(&full.stdout).lines().map(str::to_string).collect();
    for (n, lines) in seen.iter().enumerate() {
        assert!(
            lines[..] == full[..lines.len()],
            "replay {n} ({} lines) is not a prefix of the final replay",
            lines.len()
        );
    }
    let partial = seen
        .iter()
        .filter(|l| !l.is_empty() && (l.len() as u64) < EVENTS)
        .count();
    eprintln!(
        "{} replays in {:?}, {partial} of them during the appends; lengths {:?}",
        seen.len(),
        started.elapsed(),
        seen.iter().map(Vec::len).collect::<Vec<_>>()
    );
    assert!(
        partial > 0,
        "no replay ran while the appends were in progress"
    );
}

// Proves that `evlog repair` refuses (exit 2, "locked") while a library Log has the directory open, and changes nothing the open Log relies on.
#[test]
fn cli_repair_while_open_is_refused() {
    let root = tempdir();
    let dir = root.path().join("d");
    let log = Log::open(&dir, Options::default()).expect("open");
    assert_eq!(log.append(Event::new("t.e")).expect("append"), 1);
    let segments_before = tree(&segments_dir(&dir));

    let started = Instant::now();
    let output = run_cli(&dir, &["repair"]);
    let took = started.elapsed();
    assert_eq!(output.status.code(), Some(2), "{}", said(&output));
    let stderr = text(&output.stderr);
    assert!(stderr.contains("locked"), "{}", said(&output));
    assert!(output.stdout.is_empty(), "{}", said(&output));
    assert!(
        took < Duration::from_secs(30),
        "repair took {took:?} to give up"
    );
    assert!(lost_found_files(&dir).is_empty());
    assert_eq!(tree(&segments_dir(&dir)), segments_before);

    assert_eq!(log.append(Event::new("t.f")).expect("append"), 2);
    assert_eq!(log.get(1).expect("get").event_type, "t.e");
    log.close().expect("close");
    let replay = run_cli(&dir, &["replay"]);
    assert_eq!(replay.status.code(), Some(0), "{}", said(&replay));
    assert_eq!(json_lines(&replay.stdout).len(), 2, "{}", said(&replay));
}

fn evlog_dump(args: &[&std::ffi::OsStr]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_evlog-dump"))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run evlog-dump")
}

// Proves the fixes of what a new user ran into: an inverted replay range,
// a bad input line (said once, with how many events went in before it), a
// reader of `append` that goes away (exit 2, saying how many were
// appended), a second `demo` run (new ids, never the same again), and
// `evlog-dump` on paths that hold no segment (exit 1 with a reason, or 2
// when the path does not exist) and on an index file (read as one).
#[test]
fn cli_new_user_findings() {
    let root = tempdir();
    let dir = root.path().join("d");

    let out = run_cli(&dir, &["replay", "--from", "10", "--to", "5"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("--from 10 is after --to 5 (both are inclusive)"),
        "{}",
        text(&out.stderr)
    );

    let out = append(&dir, "{\"type\":\"a.b\"}\n{\"type\":\"a.b\",\"bogus\":1}\n");
    assert_eq!(out.status.code(), Some(2));
    let stderr = text(&out.stderr);
    assert!(
        stderr.starts_with("evlog: line 2; 1 event was appended before it: not a valid event object: unknown field `bogus`"),
        "{stderr}"
    );
    assert_eq!(stderr.matches("unknown field").count(), 1, "{stderr}");
    assert_eq!(text(&out.stdout).lines().count(), 1);

    // A reader that stops after the first acknowledgement.
    let lines: String = (0..5000).map(|_| "{\"type\":\"x.y\"}\n").collect();
    let mut child = spawn_cli_append(&dir);
    let mut stdin = child.stdin.take().expect("stdin");
    let feeder = std::thread::spawn(move || {
        let _ = stdin.write_all(lines.as_bytes());
    });
    drop(child.stdout.take()); // the reader is gone before anything is read
    let out = child.wait_with_output().expect("wait");
    feeder.join().expect("feeder");
    assert_eq!(out.status.code(), Some(2));
    let stderr = text(&out.stderr);
    assert!(stderr.contains("events were appended"), "{stderr}");
    assert!(stderr.contains("standard output is closed"), "{stderr}");

    let demo_dir = root.path().join("demo");
    for _ in 0..2 {
        let out = run_cli(&demo_dir, &["demo", "--events", "1500"]);
        assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
        assert!(text(&out.stdout).contains("cargo run --release --"));
    }
    let replay = run_cli(&demo_dir, &["replay"]);
    let ids: Vec<String> = text(&replay.stdout)
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).expect("json")["id"].to_string())
        .collect();
    let unique: std::collections::BTreeSet<&String> = ids.iter().collect();
    // 3000 workload events, plus each run's sprint for the rules section
    // and what the rules appended: all ids distinct.
    assert_eq!(ids.len(), unique.len());
    assert!(ids.len() > 3000, "{}", ids.len());

    let empty = root.path().join("empty");
    std::fs::create_dir(&empty).expect("mkdir");
    let out = evlog_dump(&[empty.as_os_str(), "--verify".as_ref()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stdout).starts_with("nothing to verify"));
    let out = evlog_dump(&[root.path().join("nope").as_os_str()]);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(text(&out.stderr).matches("No such file").count(), 1);
    let index = segment_files(&demo_dir)[0].with_extension("idx");
    let out = evlog_dump(&[index.as_os_str()]);
    assert_eq!(out.status.code(), Some(0));
    assert!(text(&out.stdout).starts_with("sequence index "));
    let empty_file = root.path().join("e.seg");
    std::fs::write(&empty_file, b"").expect("write");
    let out = evlog_dump(&[empty_file.as_os_str(), "--verify".as_ref()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stdout).contains("is an empty file"));
    // A damaged segment: every dump mode exits 1 and says so on stderr.
    let segment = segment_files(&demo_dir)[0].clone();
    let len = file_len(&segment);
    truncate(&segment, len - 5);
    for json in [false, true] {
        let mut args = vec![segment.as_os_str()];
        if json {
            args.push("--json".as_ref());
        }
        let out = evlog_dump(&args);
        assert_eq!(out.status.code(), Some(1), "json {json}");
        assert!(text(&out.stderr).contains("damaged"), "json {json}");
    }
}
