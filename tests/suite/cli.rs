//! The command-line contract of `evlog` and `evlog-dump`: exit codes,
//! messages and JSON field names that scripts rely on.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Output, Stdio};

use evlog::{Durability, Log, Options};
use serde_json::{json, Value};

use crate::common::{flip_byte, records, segment_files, tempdir, Spec};

fn evlog(dir: &Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_evlog"));
    command.arg("--dir").arg(dir);
    command
}

/// Runs `evlog --dir DIR append` with `input` on stdin.
fn append(dir: &Path, input: &str) -> Output {
    let mut child = evlog(dir)
        .arg("append")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn evlog append");
    let mut stdin = child.stdin.take().expect("stdin");
    // The child may stop reading at a bad line; a broken pipe is expected then.
    let _ = stdin.write_all(input.as_bytes());
    drop(stdin);
    child.wait_with_output().expect("wait for evlog append")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn json_lines(bytes: &[u8]) -> Vec<Value> {
    text(bytes)
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{line:?}: {e}")))
        .collect()
}

fn line(n: u64) -> String {
    json!({
        "type": "cli.test",
        "entity": {"type": "task", "id": format!("T-{n}")},
        "payload": {"n": n, "tags": ["a", "b"]},
    })
    .to_string()
}

// Proves that a malformed line stops append with exit 2 naming the line, after appending exactly the lines before it.
#[test]
fn cli_append_malformed_line_appends_prefix_and_exits_2() {
    let dir = tempdir();
    let input = [
        line(1),
        line(2),
        line(3),
        "{\"type\": \"cli.test\", ".into(),
        line(5),
        line(6),
    ]
    .join("\n")
        + "\n";
    let output = append(dir.path(), &input);
    assert_eq!(
        output.status.code(),
        Some(2),
        "stderr: {}",
        text(&output.stderr)
    );
    let stderr = text(&output.stderr);
    assert!(
        stderr.contains("line 4"),
        "stderr does not name line 4: {stderr}"
    );
    let acks = json_lines(&output.stdout);
    let seqs: Vec<u64> = acks
        .iter()
        .map(|a| a["seq"].as_u64().expect("seq"))
        .collect();
    assert_eq!(
        seqs,
        vec![1, 2, 3],
        "acknowledgements: {}",
        text(&output.stdout)
    );

    let log = Log::open(dir.path(), Options::default()).expect("open");
    assert_eq!(
        log.last_seq(),
        Some(3),
        "nothing after the bad line is appended"
    );
    for (n, ack) in (1..=3).zip(&acks) {
        let event = log.get(n).expect("get");
        assert_eq!(ack["id"].as_str(), Some(event.id.to_string().as_str()));
        assert_eq!(event.entity.expect("entity").entity_id, format!("T-{n}"));
    }
}

// Proves that get of a missing seq exits 1 and get of a present one prints it and exits 0.
#[test]
fn cli_get_missing_seq_exits_1() {
    let dir = tempdir();
    let output = append(dir.path(), &format!("{}\n{}\n", line(1), line(2)));
    assert!(output.status.success(), "{}", text(&output.stderr));
    for missing in ["3", "99", "0"] {
        let output = evlog(dir.path())
            .args(["get", missing])
            .output()
            .expect("run get");
        assert_eq!(
            output.status.code(),
            Some(1),
            "get {missing}: {}",
            text(&output.stderr)
        );
        assert!(
            output.stdout.is_empty(),
            "get {missing} printed {}",
            text(&output.stdout)
        );
    }
    let output = evlog(dir.path())
        .args(["get", "2"])
        .output()
        .expect("run get");
    assert!(output.status.success(), "{}", text(&output.stderr));
    let event = &json_lines(&output.stdout)[0];
    assert_eq!(event["seq"], 2);
    assert_eq!(event["payload"], json!({"n": 2, "tags": ["a", "b"]}));
}

// Proves that replay --from 2 --to 3 prints exactly those events with the contract field names and formats.
#[test]
fn cli_replay_range_prints_contract_json() {
    let dir = tempdir();
    let input: String = (1..=5).map(|n| line(n) + "\n").collect();
    let output = append(dir.path(), &input);
    assert!(output.status.success(), "{}", text(&output.stderr));
    let acks = json_lines(&output.stdout);
    assert_eq!(acks.len(), 5);

    let output = evlog(dir.path())
        .args(["replay", "--from", "2", "--to", "3"])
        .output()
        .expect("run replay");
    assert!(output.status.success(), "{}", text(&output.stderr));
    let events = json_lines(&output.stdout);
    assert_eq!(events.len(), 2, "{}", text(&output.stdout));
    for (event, n) in events.iter().zip(2u64..) {
        let object = event.as_object().expect("an object");
        assert_eq!(object["seq"], json!(n));
        assert_eq!(object["id"], acks[n as usize - 1]["id"]);
        assert_eq!(object["type"], "cli.test");
        assert_eq!(object["priority"], "P2");
        assert_eq!(
            object["entity"],
            json!({"type": "task", "id": format!("T-{n}")})
        );
        assert_eq!(object["payload"], json!({"n": n, "tags": ["a", "b"]}));
        let timestamp = object["timestamp"].as_str().expect("timestamp is a string");
        assert!(timestamp.ends_with('Z'), "{timestamp}");
        let parsed =
            time::OffsetDateTime::parse(timestamp, &time::format_description::well_known::Rfc3339)
                .unwrap_or_else(|e| panic!("{timestamp} is not RFC 3339: {e}"));
        assert!(parsed.year() >= 2024, "{timestamp}");
        for key in object.keys() {
            assert!(
                [
                    "seq",
                    "id",
                    "type",
                    "timestamp",
                    "priority",
                    "entity",
                    "payload"
                ]
                .contains(&key.as_str()),
                "unexpected field {key} in {event}"
            );
        }
    }
}

// Proves that evlog-dump --verify exits 0 on an intact directory and 1 naming file and offset of a flipped byte.
#[test]
fn cli_dump_verify_reports_flipped_byte() {
    let dir = tempdir();
    let input: String = (1..=10).map(|n| line(n) + "\n").collect();
    assert!(append(dir.path(), &input).status.success());

    let verify = || {
        Command::new(env!("CARGO_BIN_EXE_evlog-dump"))
            .arg(dir.path())
            .arg("--verify")
            .output()
            .expect("run evlog-dump")
    };
    let output = verify();
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}{}",
        text(&output.stdout),
        text(&output.stderr)
    );

    let segment = segment_files(dir.path()).pop().expect("segment");
    let damaged = records(&segment)[6];
    flip_byte(&segment, damaged.body_byte(3), 0x80);
    let output = verify();
    let stdout = text(&output.stdout);
    assert_eq!(
        output.status.code(),
        Some(1),
        "{stdout}{}",
        text(&output.stderr)
    );
    let name = segment.file_name().and_then(|n| n.to_str()).expect("name");
    assert!(stdout.contains(name), "does not name {name}: {stdout}");
    assert!(
        stdout.contains(&format!("offset {}", damaged.offset)),
        "does not name offset {}: {stdout}",
        damaged.offset
    );
}

// Proves that replay whose reader goes away after one line (like `| head -1`) still exits 0.
#[test]
fn cli_replay_closed_stdout_exits_0() {
    let dir = tempdir();
    let specs = Spec::many(20_000, 100);
    let log = Log::open(
        dir.path(),
        Options::default().durability(Durability::OsBuffered),
    )
    .expect("open");
    for chunk in specs.chunks(1000) {
        let events: Vec<_> = chunk.iter().map(Spec::event).collect();
        log.append_batch(&events).expect("append_batch");
    }
    log.close().expect("close");

    let mut child = evlog(dir.path())
        .arg("replay")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn replay");
    let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
    let mut first = String::new();
    stdout.read_line(&mut first).expect("read one line");
    let first: Value = serde_json::from_str(&first).expect("a JSON line");
    assert_eq!(first["seq"], 1);
    drop(stdout);
    let output = child.wait_with_output().expect("wait");
    assert!(
        output.status.success(),
        "replay into a closed pipe exited with {}: {}",
        output.status,
        text(&output.stderr)
    );
}
