//! The command line's answers to bad input, word for word, with their
//! exit codes (0 success, 1 not found or damaged, 2 any other error):
//! what a new user trying `evlog` meets first.

use evlog::{Event, Log, Options};
use serde_json::Value;

use crate::common::*;

/// Stderr of a command that must exit with `code`.
fn fails(output: &std::process::Output, code: i32) -> String {
    assert_eq!(output.status.code(), Some(code), "{}", said(output));
    text(&output.stderr)
}

// Proves that `append` names the input line, says how many events went in
// before it, quotes no misleading "payload" prefix, and gives the column
// (not serde's "line 1") of a line-level JSON error.
#[test]
fn cli_append_bad_lines_exact_messages() {
    let root = tempdir();
    let dir = root.path().join("d");
    let out = run_cli_append(&dir, "{\"type\":\"a.b\"}\n{\"type\":\"a.b\",\"bogus\":1}\n");
    assert_eq!(
        fails(&out, 2),
        "evlog: line 2; 1 event was appended before it: not a valid event object: \
         unknown field `bogus`, expected one of `seq`, `id`, `type`, `timestamp`, \
         `correlation_id`, `causation_id`, `entity`, `actor`, `session`, `priority`, \
         `traceparent`, `metadata`, `payload`, `payload_hex`, `expected_version` at column 21\n"
    );
    assert_eq!(text(&out.stdout).lines().count(), 1);

    let out = run_cli_append(&dir, "{\"type\":\"a.b\"} junk\n");
    assert_eq!(
        fails(&out, 2),
        "evlog: line 1; no event was appended: not a valid event object: trailing characters at column 16\n"
    );
    let out = run_cli_append(&dir, "{\"type\":\"a.b\"}\n\n{\"type\":\"a.b\",\n");
    assert_eq!(
        fails(&out, 2),
        "evlog: line 3; 1 event was appended before it: not a valid event object: EOF while parsing a value at column 14\n"
    );
    let out = run_cli_append(&dir, "{\"type\":\"a.b\",\"timestamp\":1700000000}\n");
    assert_eq!(
        fails(&out, 2),
        "evlog: line 1; no event was appended: invalid event: timestamp must be an RFC 3339 string such as 2026-01-01T00:00:00Z, not a number\n"
    );
    let out = run_cli_append(&dir, "{\"type\":\"a.b\",\"payload\":{\"a\":}}\n");
    let stderr = fails(&out, 2);
    assert!(!stderr.contains("payload is not valid JSON"), "{stderr}");
    assert_eq!(
        stderr,
        "evlog: line 1; no event was appended: not a valid event object: expected value at column 30\n"
    );

    // A "seq" is accepted and ignored: the log numbers events.
    let out = run_cli_append(&dir, "{\"type\":\"a.b\",\"seq\":99}\n");
    assert_eq!(out.status.code(), Some(0), "{}", said(&out));
    let ack: Value = serde_json::from_slice(&out.stdout).expect("ack");
    let seq = ack["seq"].as_u64().expect("seq");
    assert!(seq < 10, "{ack}");
}

// Proves that a 100 000-byte mistake is echoed as its first 64 bytes and
// its length, wherever it is in the line.
#[test]
fn cli_append_long_input_is_cut_in_messages() {
    let root = tempdir();
    let dir = root.path().join("d");
    let long = "a".repeat(100_000);
    let out = run_cli_append(&dir, &format!("{{\"type\":\"{long}\"}}\n"));
    assert_eq!(
        fails(&out, 2),
        format!(
            "evlog: line 1; no event was appended: invalid event type \"{}... (100000 bytes)\": longer than 255 bytes\n",
            &long[..64]
        )
    );
    for line in [
        format!("{{\"type\":\"a.b\",\"{long}\":1}}"),
        format!("{{\"type\":\"a.b\",\"timestamp\":\"{long}\"}}"),
        format!("{{\"type\":\"a.b\",\"entity\":{{\"type\":\"t\",\"id\":\"x\"}},\"expected_version\":\"{long}\"}}"),
    ] {
        let out = run_cli_append(&dir, &(line + "\n"));
        let stderr = fails(&out, 2);
        assert!(stderr.len() < 500, "{} bytes", stderr.len());
        assert!(stderr.contains("... (100000 bytes)"), "{stderr}");
    }
}

// Proves the usage errors of the read commands: reversed bounds, a data
// directory that is a file (said once, as "not a directory"), a malformed
// TYPE/ID, each exit 2; and that missing things exit 1.
#[test]
fn cli_usage_errors_and_missing_things() {
    let root = tempdir();
    let dir = root.path().join("d");
    let out = run_cli_append(&dir, "{\"type\":\"a.b\"}\n");
    assert_eq!(out.status.code(), Some(0), "{}", said(&out));

    assert_eq!(
        fails(&run_cli(&dir, &["replay", "--from", "10", "--to", "5"]), 2),
        "evlog: --from 10 is after --to 5 (both are inclusive)\n"
    );
    assert_eq!(
        fails(&run_cli(&dir, &["get", "100"]), 1),
        "evlog: no event with sequence number 100\n"
    );
    assert_eq!(
        fails(&run_cli(&dir, &["latest", "task/T-9"]), 1),
        "evlog: entity task/T-9 has no events\n"
    );
    let unknown = "019b76da-a8e0-72c3-9e5c-3a760a948f5c";
    assert_eq!(
        fails(&run_cli(&dir, &["chain", unknown]), 1),
        format!("evlog: no event with id {unknown}\n")
    );
    let stderr = fails(&run_cli(&dir, &["latest", "no-slash"]), 2);
    assert!(
        stderr.starts_with(
            "error: invalid value 'no-slash' for '<TYPE/ID>': not TYPE/ID (for example task/T-1): it has no '/'"
        ),
        "{stderr}"
    );
    assert_eq!(stderr.matches("no-slash").count(), 1, "{stderr}");

    let file = root.path().join("a-file");
    std::fs::write(&file, b"not a log").expect("write");
    let shown = file.display().to_string();
    for (args, verb) in [
        (&["info"][..], "reading"),
        (&["get", "1"][..], "reading"),
        (&["replay"][..], "reading"),
        (&["metrics"][..], "reading"),
        (&["append"][..], "opening"),
    ] {
        let out = run_cli(&file, args);
        assert_eq!(
            fails(&out, 2),
            format!("evlog: {verb} {shown}: {shown} is not a directory\n"),
            "{args:?}"
        );
    }
    assert_eq!(std::fs::read(&file).expect("read"), b"not a log");
}

// Proves that the help says what a new user needs: the input fields of
// `append`, and that `replay`'s bounds are inclusive.
#[test]
fn cli_help_lists_fields_and_inclusive_bounds() {
    let root = tempdir();
    let help = cli_ok(root.path(), &["append", "--help"]);
    for field in [
        "\"type\"",
        "\"id\"",
        "\"timestamp\"",
        "\"correlation_id\"",
        "\"causation_id\"",
        "\"entity\"",
        "\"actor\"",
        "\"session\"",
        "\"priority\"",
        "\"traceparent\"",
        "\"metadata\"",
        "\"payload\"",
        "\"payload_hex\"",
        "\"seq\"",
        "\"expected_version\"",
    ] {
        assert!(help.contains(field), "append --help lacks {field}");
    }
    assert!(help.contains("RFC 3339"), "{help}");
    let help = cli_ok(root.path(), &["replay", "--help"]);
    assert!(
        help.contains("First sequence number to print (inclusive")
            && help.contains("Last sequence number to print (inclusive"),
        "{help}"
    );
    assert!(!root.path().join("evlog-data").exists());
}

// Proves `repair --json` on a sound log and on a torn one: one object
// naming the cut, its seqs and where the bytes were kept.
#[test]
fn cli_repair_json() {
    let root = tempdir();
    let dir = root.path().join("d");
    let out = run_cli_append(&dir, "{\"type\":\"a.b\"}\n{\"type\":\"a.b\"}\n");
    assert_eq!(out.status.code(), Some(0), "{}", said(&out));
    let report: Value =
        serde_json::from_str(&cli_ok(&dir, &["repair", "--dry-run", "--json"])).expect("json");
    assert_eq!(
        report,
        serde_json::json!({"dry_run": true, "cuts": [], "left_alone": []})
    );
    // A flipped byte in the first record, which a clean close vouched
    // for: the open refuses (exit 1: damage), repair cuts from there.
    let segment = segment_files(&dir)[0].clone();
    let first = records(&segment)[0];
    flip_byte(&segment, first.body_byte(0), 0x01);
    let out = run_cli(&dir, &["replay"]);
    let stderr = fails(&out, 1);
    assert!(
        stderr.starts_with(&format!(
            "evlog: corrupt data in {} at byte offset {}: record checksum mismatch",
            segment.display(),
            first.offset
        )),
        "{stderr}"
    );
    let report: Value = serde_json::from_str(&cli_ok(&dir, &["repair", "--json"])).expect("json");
    assert_eq!(report["dry_run"], false, "{report}");
    let cut = &report["cuts"][0];
    assert_eq!(cut["dropped_seqs"], serde_json::json!([[1, 2]]), "{report}");
    assert_eq!(cut["file"], segment.display().to_string(), "{report}");
    assert!(
        cut["kept_in"]
            .as_str()
            .is_some_and(|p| p.contains("lost+found")),
        "{report}"
    );
    assert_eq!(cut["bytes_not_kept"], 0, "{report}");
    let out = run_cli(&dir, &["replay"]);
    assert_eq!(out.status.code(), Some(0), "{}", said(&out));
    assert!(out.stdout.is_empty());
}

/// clap's error for a 100 000-byte argument: exit 2, the value echoed as
/// its first 64 bytes and its length, the flag named, clap's hint kept,
/// and the whole message short.
fn assert_long_argument_refused(output: &std::process::Output, names: &str) {
    let stderr = fails(output, 2);
    assert!(stderr.len() < 300, "{} bytes: {stderr}", stderr.len());
    assert!(stderr.starts_with("error: "), "{stderr}");
    assert!(stderr.contains(names), "{stderr}");
    assert!(stderr.contains("... (100000 bytes)"), "{stderr}");
    assert!(
        stderr.ends_with("For more information, try '--help'.\n"),
        "{stderr}"
    );
    assert!(output.stdout.is_empty(), "{}", said(output));
}

// Proves that a 100 000-byte invalid argument, rejected by clap or by a
// value parser, in `--flag VALUE`, `--flag=VALUE` or positional form, or
// as an unknown flag, gives exit 2 and a message of a few lines that
// still names the flag, in `evlog` and in `evlog-dump`.
#[test]
fn cli_long_invalid_argument_is_cut_in_clap_errors() {
    let root = tempdir();
    let dir = root.path().join("d");
    let pattern = "a".repeat(100_000);
    let number = "x".repeat(100_000);
    let output = run_cli(&dir, &["tail", "--type", &pattern]);
    assert_long_argument_refused(&output, "'--type <PATTERN>'");
    assert_eq!(
        fails(&output, 2),
        format!(
            "error: invalid value '{}... (100000 bytes)' for '--type <PATTERN>': \
             longer than 255 bytes, the longest type name, so it can match nothing\n\n\
             For more information, try '--help'.\n",
            &pattern[..64]
        )
    );
    let output = run_cli(&dir, &["tail", &format!("--type={pattern}")]);
    assert_long_argument_refused(&output, "'--type <PATTERN>'");
    let output = run_cli(&dir, &["replay", "--from", &number]);
    assert_long_argument_refused(&output, "'--from <FROM>'");
    let output = run_cli(&dir, &["get", &number]);
    assert_long_argument_refused(&output, "'<SEQ>'");
    let output = run_cli(&dir, &["latest", &pattern]);
    assert_long_argument_refused(&output, "'<TYPE/ID>'");
    // An unknown flag: clap's usage line is kept too.
    let output = run_cli(&dir, &[&format!("--{}", &pattern[2..])]);
    assert_long_argument_refused(&output, "unexpected argument '--aaaa");
    assert!(
        fails(&output, 2).contains("Usage: evlog"),
        "{}",
        said(&output)
    );
    assert!(!dir.exists(), "a refused command created {}", dir.display());

    let dump = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_evlog-dump"))
            .args(args)
            .output()
            .expect("run evlog-dump")
    };
    let shown = dir.display().to_string();
    let output = dump(&["--from-seq", &number, &shown]);
    assert_long_argument_refused(&output, "'--from-seq <SEQ>'");
    let output = dump(&["--filter-type", &pattern, &shown]);
    assert_long_argument_refused(&output, "'--filter-type <PATTERN>'");
    // The value once: the parser's reason does not quote it again.
    assert_eq!(fails(&output, 2).matches(&pattern[..64]).count(), 1);
}

// Proves that errors after parsing cut a long argument too: a 100 000-byte
// path is named in a few lines by `evlog` and `evlog-dump`.
#[test]
fn cli_long_path_is_cut_in_errors() {
    let root = tempdir();
    let long = root.path().join("p".repeat(100_000));
    let output = run_cli(&long, &["info"]);
    let stderr = fails(&output, 2);
    assert!(stderr.len() < 400, "{} bytes: {stderr}", stderr.len());
    assert!(stderr.starts_with("evlog: reading "), "{stderr}");
    assert!(stderr.contains(" bytes)"), "{stderr}");
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_evlog-dump"))
        .arg("--verify")
        .arg(&long)
        .output()
        .expect("run evlog-dump");
    let stderr = fails(&output, 2);
    assert!(stderr.len() < 300, "{} bytes: {stderr}", stderr.len());
    assert!(stderr.starts_with("evlog-dump: cannot read "), "{stderr}");
    assert!(stderr.contains(" bytes)"), "{stderr}");
}

/// Stderr of a command that must succeed, checked to hold no progress
/// bar: no carriage return and no escape sequence.
fn stderr_without_bar(output: &std::process::Output, what: &str) -> String {
    assert_eq!(output.status.code(), Some(0), "{what}: {}", said(output));
    let stderr = text(&output.stderr);
    assert!(!stderr.contains('\r'), "{what} drew on a pipe: {stderr:?}");
    assert!(
        !stderr.contains('\x1b'),
        "{what} drew on a pipe: {stderr:?}"
    );
    stderr
}

// Proves that the long commands draw no progress bar when stderr is a
// pipe: `verify`, `reindex`, `archive --all`, `replay` and `evlog-dump
// --verify`, on a log large enough that each would report progress many
// times, leave stderr empty.
#[test]
fn cli_long_commands_draw_no_bar_on_a_pipe() {
    let root = tempdir();
    let dir = root.path().join("d");
    let specs = Spec::many(20_000, 100);
    let log = Log::open(
        &dir,
        rolling_options().durability(evlog::Durability::OsBuffered),
    )
    .expect("open");
    // A batch fits in one 64 KiB segment.
    for chunk in specs.chunks(200) {
        let events: Vec<Event> = chunk.iter().map(Spec::event).collect();
        log.append_batch(&events).expect("append");
    }
    log.close().expect("close");
    assert!(segment_files(&dir).len() > 10);
    for args in [
        &["verify"][..],
        &["reindex"],
        &["archive", "--all"],
        &["replay"],
    ] {
        let stderr = stderr_without_bar(&run_cli(&dir, args), &args.join(" "));
        assert_eq!(stderr, "", "{args:?}");
    }
    let report: Value = serde_json::from_str(&cli_ok(&dir, &["verify"])).expect("json");
    assert_eq!(report["events_checked"], 20_000, "{report}");
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_evlog-dump"))
        .arg("--verify")
        .arg(&dir)
        .output()
        .expect("run evlog-dump");
    assert_eq!(stderr_without_bar(&output, "evlog-dump --verify"), "");
}

// Proves the other half: on a terminal (a pseudo-terminal made by
// util-linux's `script`, in Debian's essential packages), `verify` draws
// its bar on stderr, ends at 100% and ends the bar's line, while its
// report still goes to stdout alone.
#[test]
fn cli_verify_draws_a_bar_on_a_terminal() {
    let root = tempdir();
    let dir = root.path().join("d");
    let log = Log::open(
        &dir,
        Options::default().durability(evlog::Durability::OsBuffered),
    )
    .expect("open");
    let events: Vec<Event> = Spec::many(10_000, 50).iter().map(Spec::event).collect();
    log.append_batch(&events).expect("append");
    log.close().expect("close");
    let report = root.path().join("report.json");
    let shell = format!(
        "stty cols 120 2>/dev/null; '{}' --dir '{}' verify > '{}'",
        env!("CARGO_BIN_EXE_evlog"),
        dir.display(),
        report.display()
    );
    let output = std::process::Command::new("script")
        .args(["-qec", &shell, "/dev/null"])
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run script(1) from util-linux");
    assert_eq!(output.status.code(), Some(0), "{}", said(&output));
    let terminal = text(&output.stdout);
    assert!(terminal.contains("verifying ["), "{terminal:?}");
    assert!(terminal.contains("100% (check "), "{terminal:?}");
    assert!(terminal.ends_with("\r\n"), "{terminal:?}");
    let report: Value =
        serde_json::from_slice(&std::fs::read(&report).expect("read the report")).expect("json");
    assert_eq!(report["ok"], true, "{report}");
    assert_eq!(report["events_checked"], 10_000, "{report}");
}
