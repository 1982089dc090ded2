//! The command-line contract of `evlog` and `evlog-dump`: exit codes,
//! messages and JSON field names that scripts rely on.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Output, Stdio};

use evlog::{Durability, Log, Options};
use serde_json::{json, Value};

use crate::common::{
    evlog_cli, flip_byte, records, run_cli_append, segment_files, tempdir, text, Spec,
};

fn evlog(dir: &Path) -> Command {
    evlog_cli(dir)
}

fn append(dir: &Path, input: &str) -> Output {
    run_cli_append(dir, input)
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

/// Payloads whose numbers or escapes a parse into `serde_json::Value` and
/// back would change, as (line on stdin, payload text stored and printed).
const EXACT_PAYLOADS: [(&str, &str); 7] = [
    (
        r#"{"n":123456789012345678901234567890,"f":1.5e-300}"#,
        r#"{"n":123456789012345678901234567890,"f":1.5e-300}"#,
    ),
    ("5e-324", "5e-324"),
    ("1.7976931348623157e308", "1.7976931348623157e308"),
    ("[-0.0, 0.0, -0]", "[-0.0,0.0,-0]"),
    (
        "[18446744073709551616, -9223372036854775809, 0.30000000000000000000000000000000000004]",
        "[18446744073709551616,-9223372036854775809,0.30000000000000000000000000000000000004]",
    ),
    (
        r#"{ "s" : "\u00e9\ud83d\ude00\/\" \\", "t" : "é 😀" }"#,
        r#"{"s":"\u00e9\ud83d\ude00\/\" \\","t":"é 😀"}"#,
    ),
    (
        "{ \"b\" :\t{ \"a\" : [ [ ] , { } , null , true ] } ,  \"a\" : 1E+2 }",
        r#"{"b":{"a":[[],{},null,true]},"a":1E+2}"#,
    ),
];

/// The payload text of one printed event line: the event is compact JSON
/// with `payload` last when there is no `payload_hex`.
fn printed_payload(line: &str) -> &str {
    let start = line.find(",\"payload\":").expect("a payload field") + ",\"payload\":".len();
    line[start..]
        .strip_suffix('}')
        .expect("payload is the last field")
}

// Proves that JSON payloads come back from get and replay exactly as appended (less whitespace between tokens), numbers and escapes included, and that replay output appends unchanged into another log.
#[test]
fn cli_payload_text_round_trips_exactly() {
    let dir = tempdir();
    let input: String = EXACT_PAYLOADS
        .iter()
        .map(|(payload, _)| format!("{{\"type\":\"cli.exact\",\"payload\": {payload} }}\n"))
        .collect();
    let output = append(dir.path(), &input);
    assert!(output.status.success(), "{}", text(&output.stderr));
    assert_eq!(json_lines(&output.stdout).len(), EXACT_PAYLOADS.len());

    let replay = |dir: &Path| {
        let output = evlog(dir).arg("replay").output().expect("run replay");
        assert!(output.status.success(), "{}", text(&output.stderr));
        text(&output.stdout)
    };
    let replayed = replay(dir.path());
    let lines: Vec<&str> = replayed.lines().collect();
    assert_eq!(lines.len(), EXACT_PAYLOADS.len(), "{replayed}");
    for (n, (line, (_, stored))) in lines.iter().zip(&EXACT_PAYLOADS).enumerate() {
        assert_eq!(printed_payload(line), *stored, "replay line {line}");
        let output = evlog(dir.path())
            .args(["get", &(n + 1).to_string()])
            .output()
            .expect("run get");
        assert!(output.status.success(), "{}", text(&output.stderr));
        assert_eq!(printed_payload(text(&output.stdout).trim_end()), *stored);
    }

    // The library reads the same text.
    let log = Log::open(dir.path(), Options::default()).expect("open");
    for (seq, (_, stored)) in (1..).zip(&EXACT_PAYLOADS) {
        let event = log.get(seq).expect("get");
        assert_eq!(event.payload, evlog::Payload::Json((*stored).into()));
    }
    log.close().expect("close");

    // Replay output is valid append input and survives a second trip.
    let copy = tempdir();
    let output = append(copy.path(), &replayed);
    assert!(output.status.success(), "{}", text(&output.stderr));
    let copied = replay(copy.path());
    for (original, copied) in replayed.lines().zip(copied.lines()) {
        assert_eq!(printed_payload(original), printed_payload(copied));
    }
}

// Proves that payloads built with Event::json_payload and Event::json_payload_text read back value-identical through the library and through evlog get.
#[test]
fn cli_library_payloads_read_back_identical() {
    let dir = tempdir();
    let floats: [f64; 5] = [1.5e-300, 5e-324, 1.7976931348623157e308, -0.0, 0.1];
    let log = Log::open(dir.path(), Options::default()).expect("open");
    for float in floats {
        log.append(
            evlog::Event::new("lib.float")
                .json_payload(&float)
                .expect("json"),
        )
        .expect("append");
    }
    for (given, _) in &EXACT_PAYLOADS {
        log.append(
            evlog::Event::new("lib.text")
                .json_payload_text(*given)
                .expect("valid JSON"),
        )
        .expect("append");
    }
    for (seq, float) in (1..).zip(floats) {
        let back: f64 = log.get(seq).expect("get").payload_as().expect("f64");
        assert_eq!(back.to_bits(), float.to_bits(), "{float:e}");
    }
    let first_text = floats.len() as u64 + 1;
    for (seq, (_, stored)) in (first_text..).zip(&EXACT_PAYLOADS) {
        let event = log.get(seq).expect("get");
        assert_eq!(event.payload, evlog::Payload::Json((*stored).into()));
    }
    log.close().expect("close");
    for (seq, (_, stored)) in (first_text..).zip(&EXACT_PAYLOADS) {
        let output = evlog(dir.path())
            .args(["get", &seq.to_string()])
            .output()
            .expect("run get");
        assert!(output.status.success(), "{}", text(&output.stderr));
        assert_eq!(printed_payload(text(&output.stdout).trim_end()), *stored);
    }
}

// Proves that a numeric timestamp or one outside years 1 to 9999 stops append with exit 2 and a message naming the problem, appending nothing of that batch's line or after.
#[test]
fn cli_append_refuses_numeric_and_out_of_range_timestamps() {
    for (timestamp, message) in [
        (
            "1767225600000000",
            "timestamp must be an RFC 3339 string such as 2026-01-01T00:00:00Z, not a number",
        ),
        ("1.5", "not a number"),
        ("\"0000-12-31T23:59:59Z\"", "outside years 1 to 9999"),
        ("\"9999-12-31T23:30:00-01:00\"", "outside years 1 to 9999"),
    ] {
        let dir = tempdir();
        let input = format!(
            "{{\"type\":\"cli.time\",\"timestamp\":{timestamp}}}\n{}\n",
            line(2)
        );
        let output = append(dir.path(), &input);
        let stderr = text(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{timestamp}: {stderr}");
        assert!(stderr.contains("line 1"), "{timestamp}: {stderr}");
        assert!(stderr.contains(message), "{timestamp}: {stderr}");
        assert!(output.stdout.is_empty(), "{}", text(&output.stdout));
        let log = Log::open(dir.path(), Options::default()).expect("open");
        assert_eq!(log.last_seq(), None, "{timestamp}: something was appended");
        log.close().expect("close");
    }
    // The first and last accepted instants.
    let dir = tempdir();
    let input = concat!(
        r#"{"type":"cli.time","timestamp":"0001-01-01T00:00:00Z"}"#,
        "\n",
        r#"{"type":"cli.time","timestamp":"9999-12-31T23:59:59.999999Z"}"#,
        "\n"
    );
    let output = append(dir.path(), input);
    assert!(output.status.success(), "{}", text(&output.stderr));
    let output = evlog(dir.path())
        .arg("replay")
        .output()
        .expect("run replay");
    let events = json_lines(&output.stdout);
    assert_eq!(events[0]["timestamp"], "0001-01-01T00:00:00.000000Z");
    assert_eq!(events[1]["timestamp"], "9999-12-31T23:59:59.999999Z");
}

// Proves that evlog-dump --json prints each record as the event's JSON form with its byte offset last, payload text exact.
#[test]
fn cli_dump_json_prints_offset_and_exact_payload() {
    let dir = tempdir();
    let (given, stored) = EXACT_PAYLOADS[0];
    let input = format!(
        "{}\n{{\"type\":\"cli.exact\",\"payload\":{given}}}\n",
        line(1)
    );
    assert!(append(dir.path(), &input).status.success());
    let output = Command::new(env!("CARGO_BIN_EXE_evlog-dump"))
        .arg(dir.path())
        .arg("--json")
        .output()
        .expect("run evlog-dump");
    assert!(output.status.success(), "{}", text(&output.stderr));
    let stdout = text(&output.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{stdout}");
    let segment = segment_files(dir.path()).pop().expect("segment");
    for (line, record) in lines.iter().zip(records(&segment)) {
        let value: Value = serde_json::from_str(line).expect("a JSON line");
        assert_eq!(value["_offset"], json!(record.offset), "{line}");
        assert!(line.ends_with(&format!(",\"_offset\":{}}}", record.offset)));
    }
    assert!(
        lines[1].contains(&format!(",\"payload\":{stored},\"_offset\":")),
        "{}",
        lines[1]
    );
}
