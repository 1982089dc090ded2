//! `evlog-dump` as a user runs it: every kind of path (data directory,
//! segment, sequence index, archive, secondary index directory, lost+found
//! copy, consumer files, marker, holds) in every mode, the bad inputs a new
//! user tries, with their exact messages and exit codes, the filters,
//! `--stats`, `--verify`'s log-wide checks, `--hex`, `--follow`, and a
//! directory whose writer was killed; and proof that no run changes a
//! byte of what it reads.

use std::ffi::OsStr;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use evlog::{Event, Filter, HoldTarget, Log, Options, Priority};
use serde_json::Value;
use uuid::Uuid;

use crate::common::{assert_unchanged, file_len, flip_byte, said, tempdir, text, tree, truncate};

const EVENTS: u64 = 3000;
/// 2026-01-01T00:00:00Z in µs; event `i` is stamped `i` seconds later.
const T0_US: i64 = 1_767_225_600_000_000;

fn dump(args: &[&OsStr]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_evlog-dump"))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run evlog-dump")
}

/// Runs evlog-dump on `path` with string flags.
fn dump_path(path: &Path, flags: &[&str]) -> Output {
    let mut args: Vec<&OsStr> = vec![path.as_os_str()];
    args.extend(flags.iter().map(OsStr::new));
    dump(&args)
}

fn json_lines(output: &Output) -> Vec<Value> {
    text(&output.stdout)
        .lines()
        .map(|line| serde_json::from_str(line).expect("a JSON line"))
        .collect()
}

fn id(i: u64) -> Uuid {
    Uuid::from_u128(0xD000_0000 + u128::from(i))
}

/// Event `i` (1-based, = its seq): one of three types, P0 for alerts,
/// correlation `i % 4`, entity task/T-(i % 5), caused by event i - 4 (the
/// previous event of its correlation).
fn event(i: u64) -> Event {
    let event_type = match i % 3 {
        0 => "alert.raised",
        1 => "task.created",
        _ => "task.updated",
    };
    let mut event = Event::new(event_type)
        .id(id(i))
        .timestamp_us(T0_US + i as i64 * 1_000_000)
        .correlation_id(Uuid::from_u128(u128::from(i % 4) + 1))
        .entity("task", format!("T-{}", i % 5))
        .priority(if i.is_multiple_of(3) {
            Priority::P0
        } else {
            Priority::P2
        })
        .json_payload(&serde_json::json!({"i": i, "note": "n".repeat((i % 40) as usize)}))
        .expect("payload");
    if i > 4 {
        event = event.causation_id(id(i - 4));
    }
    event
}

/// A closed data directory with several sealed segments (the first ones
/// archived), an active one, secondary indexes, a consumer with a parked
/// event, and a legal hold.
fn rich_dir(dir: &Path) {
    let options = Options::default()
        .segment_bytes_max(evlog::SEGMENT_BYTES_MIN)
        .preallocate_bytes(16 * 1024);
    let log = Log::open(dir, options).expect("open");
    for i in 1..=EVENTS {
        assert_eq!(log.append(event(i)).expect("append"), i);
    }
    assert!(log.segment_count() >= 4, "{} segments", log.segment_count());
    let report = log.archive_all_sealed().expect("archive");
    assert!(report.segments_archived >= 3, "{report:?}");
    let mut consumer = log
        .consumer("worker", Filter::all())
        .expect("consumer")
        .max_deliveries(1);
    let first = consumer
        .next_timeout(Duration::from_secs(5))
        .expect("next")
        .expect("an event");
    consumer.fail(first.seq, "bad input").expect("fail");
    consumer.commit().expect("commit");
    log.place_hold(HoldTarget::Correlation(Uuid::from_u128(2)), "case 7")
        .expect("hold");
    log.close().expect("close");
    // Written after the log is closed, so that no policy acted on it.
    std::fs::write(
        dir.join("evlog.toml"),
        "[retention]\nsize_cap = \"1 GiB\"\n",
    )
    .expect("write evlog.toml");
}

fn file_named(dir: &Path, suffix: &str) -> PathBuf {
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("read_dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.to_string_lossy().ends_with(suffix))
        .collect();
    found.sort();
    found
        .pop()
        .unwrap_or_else(|| panic!("no *{suffix} in {}", dir.display()))
}

/// A copy of `dir` whose writer was killed mid-append: the clean-close
/// marker gone, the last record cut in half. Returns the active segment.
fn killed_copy(from: &Path, to: &Path) -> PathBuf {
    copy_dir(from, to);
    std::fs::remove_file(to.join("segments/CLEAN")).expect("remove CLEAN");
    let segment = file_named(&to.join("segments"), ".seg");
    let offsets: Vec<u64> = crate::common::records(&segment)
        .iter()
        .map(|r| r.offset)
        .collect();
    let last = *offsets.last().expect("records");
    truncate(&segment, last + 30);
    segment
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("read_dir") {
        let entry = entry.expect("entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("type").is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("copy");
        }
    }
}

// Proves that evlog-dump reads every kind of path evlog writes, in every
// mode that applies, with the exit code of an intact file, and that no
// run adds, removes or changes a byte of anything under the directory
// (file contents compared before and after every run).
#[test]
fn dump_reads_every_kind_of_path_and_changes_no_byte() {
    let root = tempdir();
    let dir = root.path().join("d");
    rich_dir(&dir);
    let killed = root.path().join("killed");
    killed_copy(&dir, &killed);
    // A writer's open of another copy cuts the torn tail into lost+found.
    let recovered = root.path().join("recovered");
    killed_copy(&dir, &recovered);
    Log::open(&recovered, Options::default())
        .expect("open")
        .close()
        .expect("close");
    let lost = file_named(&recovered.join("lost+found"), "");

    let segments = dir.join("segments");
    let kinds: Vec<(PathBuf, &str)> = vec![
        (dir.clone(), "archive "),
        (file_named(&segments, ".seg"), "segment "),
        (file_named(&segments, ".idx"), "sequence index "),
        (file_named(&dir.join("archive"), ".evz"), "archive "),
        (dir.join("index"), "secondary index "),
        (dir.join("consumers/worker.pos"), "consumer position file "),
        (dir.join("consumers/worker.parked"), "parked list "),
        (dir.join("holds"), "legal holds "),
        (segments.join("CLEAN"), "clean-close marker "),
        (dir.join("LOCK"), "lock file "),
        (dir.join("evlog.toml"), "configuration file "),
        (lost.clone(), "lost+found copy "),
    ];
    let before = tree(root.path());
    for (path, starts) in &kinds {
        let out = dump_path(path, &[]);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}: {}",
            path.display(),
            said(&out)
        );
        assert!(
            text(&out.stdout).starts_with(starts),
            "{}: {}",
            path.display(),
            said(&out)
        );
        assert!(out.stderr.is_empty(), "{}: {}", path.display(), said(&out));
        let out = dump_path(path, &["--json"]);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}: {}",
            path.display(),
            said(&out)
        );
        // A torn tail holds no complete record to print.
        assert_eq!(
            json_lines(&out).is_empty(),
            path == &lost,
            "{}",
            path.display()
        );
        let out = dump_path(path, &["--verify"]);
        let expected = if path == &lost { 1 } else { 0 };
        assert_eq!(
            out.status.code(),
            Some(expected),
            "{}: {}",
            path.display(),
            said(&out)
        );
        let first_word = if path == &lost {
            "nothing to verify: "
        } else {
            "ok: "
        };
        assert!(
            text(&out.stdout).starts_with(first_word),
            "{}: {}",
            path.display(),
            said(&out)
        );
    }
    for path in [&dir, &kinds[1].0, &kinds[3].0, &lost] {
        let out = dump_path(path, &["--stats", "--json"]);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}: {}",
            path.display(),
            said(&out)
        );
    }
    // The killed writer's directory: every mode reads it and says what
    // recovery would drop, changing nothing.
    for flags in [
        &[][..],
        &["--json"],
        &["--verify"],
        &["--stats"],
        &["--hex"],
    ] {
        let out = dump_path(&killed, flags);
        assert_eq!(out.status.code(), Some(1), "{flags:?}: {}", said(&out));
    }
    assert_unchanged(&before, &tree(root.path()), "evlog-dump");
}

// Proves the bad inputs a new user tries each get one clear message and
// the documented exit code: a directory without evlog files (/etc and an
// empty one), a missing path (said once), an empty file, a file of
// another kind, an index file (read as one, not called corrupt), empty
// ranges and flags that do not apply.
#[test]
fn dump_bad_inputs_say_why_with_exit_codes() {
    let root = tempdir();
    let empty = root.path().join("empty");
    std::fs::create_dir(&empty).expect("mkdir");
    let other = root.path().join("notes.txt");
    std::fs::write(&other, "hello world\n").expect("write");
    let empty_file = root.path().join("x.seg");
    std::fs::write(&empty_file, b"").expect("write");
    let missing = root.path().join("nope");

    for dir in [Path::new("/etc"), empty.as_path()] {
        let out = dump_path(dir, &["--verify"]);
        assert_eq!(out.status.code(), Some(1), "{}", said(&out));
        assert_eq!(
            text(&out.stdout),
            format!(
                "nothing to verify: {} holds no evlog files (no segments/ or archive/, no <20 digits>.seg or .evz file, and it is not an index/ directory)\n",
                dir.display()
            )
        );
        let out = dump_path(dir, &[]);
        assert_eq!(out.status.code(), Some(1), "{}", said(&out));
        assert!(out.stdout.is_empty());
        assert!(
            text(&out.stderr).starts_with("evlog-dump: nothing to read: "),
            "{}",
            said(&out)
        );
    }
    let out = dump_path(&missing, &["--verify"]);
    assert_eq!(out.status.code(), Some(2), "{}", said(&out));
    assert_eq!(
        text(&out.stderr),
        format!(
            "evlog-dump: cannot read {}: No such file or directory (os error 2)\n",
            missing.display()
        )
    );
    let out = dump_path(&empty_file, &[]);
    assert_eq!(out.status.code(), Some(1), "{}", said(&out));
    assert_eq!(
        text(&out.stderr),
        format!(
            "evlog-dump: nothing to read: {} is an empty file, not an evlog file\n",
            empty_file.display()
        )
    );
    let out = dump_path(&other, &[]);
    assert_eq!(out.status.code(), Some(1), "{}", said(&out));
    assert!(
        text(&out.stderr).contains("is not an evlog file (it starts with \"hello wo\""),
        "{}",
        said(&out)
    );

    let dir = root.path().join("d");
    let log = Log::open(&dir, Options::default()).expect("open");
    for i in 1..=5 {
        log.append(event(i)).expect("append");
    }
    log.close().expect("close");
    let segment = file_named(&dir.join("segments"), ".seg");
    let index = segment.with_extension("idx");
    let out = dump_path(&index, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", said(&out));
    assert_eq!(
        text(&out.stdout).lines().next(),
        Some(
            format!(
                "sequence index {}: format 2, active, first_seq 1, {} bytes, 5 entries",
                index.display(),
                file_len(&index)
            )
            .as_str()
        )
    );
    let out = dump_path(&segment, &[]);
    assert!(
        text(&out.stdout).starts_with(&format!(
            "segment {}: format 3, first_seq 1, ",
            segment.display()
        )),
        "{}",
        said(&out)
    );
    let usage = [
        (
            &["--from-seq", "9", "--to-seq", "3"][..],
            "evlog-dump: --from-seq 9 is after --to-seq 3 (both are inclusive)\n",
        ),
        (&["--limit", "0"], "evlog-dump: --limit 0 selects nothing\n"),
        (
            &[
                "--since",
                "2026-01-02T00:00:00Z",
                "--until",
                "2026-01-01T00:00:00Z",
            ],
            "evlog-dump: --since is not before --until (--until is exclusive)\n",
        ),
    ];
    for (flags, message) in usage {
        let out = dump_path(&dir, flags);
        assert_eq!(out.status.code(), Some(2), "{flags:?}: {}", said(&out));
        assert_eq!(text(&out.stderr), message);
    }
    let out = dump_path(&index, &["--limit", "3"]);
    assert_eq!(out.status.code(), Some(2), "{}", said(&out));
    assert_eq!(
        text(&out.stderr),
        format!(
            "evlog-dump: filters, --limit and --stats apply to records; {} is a sequence index\n",
            index.display()
        )
    );
    let out = dump_path(&segment, &["--follow"]);
    assert_eq!(out.status.code(), Some(2), "{}", said(&out));
    assert_eq!(
        text(&out.stderr),
        format!(
            "evlog-dump: --follow follows a data directory; {} is a segment\n",
            segment.display()
        )
    );
    let out = dump_path(&dir, &["--since", "1700000000"]);
    assert_eq!(out.status.code(), Some(2), "{}", said(&out));
    assert!(
        text(&out.stderr).contains("is not an RFC 3339 time"),
        "{}",
        said(&out)
    );
    for flags in [
        &["--verify", "--stats"][..],
        &["--verify", "--json"],
        &["--verify", "--limit", "1"],
    ] {
        let out = dump_path(&dir, flags);
        assert_eq!(out.status.code(), Some(2), "{flags:?}: {}", said(&out));
        assert!(
            text(&out.stderr).contains("cannot be used with"),
            "{}",
            said(&out)
        );
    }
    // A configuration file that does not parse is named with its line.
    let config = dir.join("evlog.toml");
    std::fs::write(&config, "[retention]\nsize_cap = 1.5\n").expect("write");
    let out = dump_path(&config, &["--verify"]);
    assert_eq!(out.status.code(), Some(1), "{}", said(&out));
    assert!(
        text(&out.stdout).starts_with(&format!(
            "corrupt: invalid configuration in {} line 2: ",
            config.display()
        )),
        "{}",
        said(&out)
    );
}

// Proves that each filter selects exactly the records it names, in table
// and JSON output, over archives and segments alike, and that --limit
// stops after N.
#[test]
fn dump_filters_select_exactly_what_they_name() {
    let root = tempdir();
    let dir = root.path().join("d");
    rich_dir(&dir);
    let seqs = |flags: &[&str]| -> Vec<u64> {
        let mut all = vec!["--json"];
        all.extend_from_slice(flags);
        let out = dump_path(&dir, &all);
        assert_eq!(out.status.code(), Some(0), "{flags:?}: {}", said(&out));
        json_lines(&out)
            .iter()
            .map(|v| v["seq"].as_u64().expect("seq"))
            .collect()
    };
    let expect =
        |keep: &dyn Fn(u64) -> bool| -> Vec<u64> { (1..=EVENTS).filter(|&i| keep(i)).collect() };
    assert_eq!(seqs(&[]), expect(&|_| true));
    assert_eq!(
        seqs(&["--filter-type", "alert.*"]),
        expect(&|i| i.is_multiple_of(3))
    );
    assert_eq!(
        seqs(&[
            "--filter-type",
            "task.created",
            "--filter-type",
            "alert.raised"
        ]),
        expect(&|i| i % 3 != 2)
    );
    let correlation = Uuid::from_u128(3).to_string();
    assert_eq!(
        seqs(&["--correlation", &correlation]),
        expect(&|i| i % 4 == 2)
    );
    assert_eq!(seqs(&["--entity", "task/T-4"]), expect(&|i| i % 5 == 4));
    assert_eq!(
        seqs(&[
            "--since",
            "2026-01-01T00:10:00Z",
            "--until",
            "2026-01-01T00:10:05Z"
        ]),
        vec![600, 601, 602, 603, 604]
    );
    assert_eq!(seqs(&["--from-seq", "7", "--to-seq", "9"]), vec![7, 8, 9]);
    assert_eq!(
        seqs(&["--entity", "task/T-1", "--from-seq", "100", "--limit", "3"]),
        vec![101, 106, 111]
    );
    // The table shows the same records.
    let out = dump_path(&dir, &["--filter-type", "alert.raised", "--limit", "2"]);
    let records: Vec<String> = text(&out.stdout)
        .lines()
        .filter(|l| l.contains(" seq="))
        .map(str::to_string)
        .collect();
    assert_eq!(records.len(), 2, "{}", said(&out));
    assert!(records[0].contains(" seq=3 ") && records[0].contains(" type=alert.raised "));
    assert!(records[1].contains(" seq=6 ") && records[1].contains(" entity=task/T-1 "));
}

// Proves that --stats counts per file and in total what the log holds:
// records, sequence and time ranges, and counts by type and priority,
// also under a filter.
#[test]
fn dump_stats_count_files_types_and_priorities() {
    let root = tempdir();
    let dir = root.path().join("d");
    rich_dir(&dir);
    let out = dump_path(&dir, &["--stats", "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", said(&out));
    let stats: Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
    let total = &stats["total"];
    assert_eq!(total["records"], EVENTS);
    assert_eq!(total["first_seq"], 1);
    assert_eq!(total["last_seq"], EVENTS);
    assert_eq!(total["first_time"], "2026-01-01T00:00:01.000000Z");
    assert_eq!(total["last_time"], "2026-01-01T00:50:00.000000Z");
    assert_eq!(stats["by_type"]["alert.raised"], EVENTS / 3);
    assert_eq!(stats["by_priority"]["P0"], EVENTS / 3);
    assert_eq!(stats["by_priority"]["P2"], EVENTS - EVENTS / 3);
    let files = stats["files"].as_array().expect("files");
    let kinds: Vec<&str> = files.iter().map(|f| f["kind"].as_str().unwrap()).collect();
    assert!(
        kinds.contains(&"archive") && kinds.contains(&"segment"),
        "{kinds:?}"
    );
    // The files tile the log: each starts one after the previous ends.
    let mut next = 1;
    for file in files {
        assert_eq!(file["first_seq"], next, "{file}");
        next = file["last_seq"].as_u64().unwrap() + 1;
        let on_disk = std::fs::metadata(file["path"].as_str().unwrap())
            .unwrap()
            .len();
        assert_eq!(file["file_bytes"], on_disk);
    }
    assert_eq!(next, EVENTS + 1);
    let out = dump_path(&dir, &["--stats", "--filter-type", "alert.*"]);
    let table = text(&out.stdout);
    assert!(
        table.contains("total: ") && table.contains(&format!("; {} records, ", EVENTS / 3)),
        "{table}"
    );
    assert!(
        table.contains(&format!("{:>10}  alert.raised\n", EVENTS / 3)),
        "{table}"
    );
    assert!(!table.contains("task.created"), "{table}");
}

// Proves that damage is reported in every mode: a flipped byte in an
// archived-over sealed segment's record makes print, --json, --stats and
// --verify exit 1 with the file, byte offset (and for --verify the
// sequence number) on stderr, and --hex shows the bytes around it.
#[test]
fn dump_reports_damage_in_every_mode() {
    let root = tempdir();
    let dir = root.path().join("d");
    let options = Options::default()
        .segment_bytes_max(evlog::SEGMENT_BYTES_MIN)
        .preallocate_bytes(0);
    let log = Log::open(&dir, options).expect("open");
    for i in 1..=600 {
        log.append(event(i)).expect("append");
    }
    log.close().expect("close");
    let segment = crate::common::segment_files(&dir)[0].clone();
    let records = crate::common::records(&segment);
    let damaged = &records[10];
    let at = damaged.offset + 40;
    flip_byte(&segment, at, 0x10);
    for flags in [&[][..], &["--json"], &["--stats"], &["--json", "--stats"]] {
        let out = dump_path(&dir, flags);
        assert_eq!(out.status.code(), Some(1), "{flags:?}: {}", said(&out));
        let stderr = text(&out.stderr);
        assert!(
            stderr.starts_with(&format!(
                "evlog-dump: damaged: {} at byte offset {}: ",
                segment.display(),
                damaged.offset
            )),
            "{flags:?}: {stderr}"
        );
    }
    let out = dump_path(&dir, &["--verify", "--hex"]);
    assert_eq!(out.status.code(), Some(1), "{}", said(&out));
    let stdout = text(&out.stdout);
    assert!(
        stdout.starts_with(&format!(
            "corrupt: {} at byte offset {}: ",
            segment.display(),
            damaged.offset
        )),
        "{stdout}"
    );
    assert!(
        stdout.lines().next().unwrap().ends_with(" (seq 11)"),
        "{stdout}"
    );
    assert!(
        text(&out.stderr).starts_with("evlog-dump: damaged: "),
        "{}",
        said(&out)
    );
    let marked: Vec<&str> = stdout.lines().filter(|l| l.starts_with("> ")).collect();
    assert_eq!(marked.len(), 1, "{stdout}");
    assert!(
        marked[0].starts_with(&format!("> {:08x} ", damaged.offset / 16 * 16)),
        "{stdout}"
    );
    // Damage in the active segment that a clean close vouched for: the
    // same in every mode (exit 1, never 2).
    let active = crate::common::segment_files(&dir).pop().expect("segments");
    assert_ne!(active, segment);
    let vouched = &crate::common::records(&active)[1];
    flip_byte(&active, vouched.offset + 30, 0x01);
    for flags in [&[][..], &["--json"], &["--stats"], &["--verify"]] {
        let out = dump_path(&dir, flags);
        assert_eq!(out.status.code(), Some(1), "{flags:?}: {}", said(&out));
        assert!(
            text(&out.stderr).starts_with("evlog-dump: damaged: "),
            "{flags:?}: {}",
            said(&out)
        );
    }
    // --hex with --json: the dump goes to stderr, stdout stays JSON lines.
    let out = dump_path(&segment, &["--json", "--hex"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(json_lines(&out).len(), 10);
    assert!(text(&out.stderr).contains("> "), "{}", said(&out));
}

// Proves that on a directory whose writer was killed mid-append evlog-dump
// says what the next open keeps and what it cuts, and that the open then
// does exactly that.
#[test]
fn dump_says_what_recovery_keeps_after_a_kill() {
    let root = tempdir();
    let dir = root.path().join("d");
    let log = Log::open(&dir, Options::default()).expect("open");
    for i in 1..=50 {
        log.append(event(i)).expect("append");
    }
    log.close().expect("close");
    let killed = root.path().join("killed");
    let segment = killed_copy(&dir, &killed);
    let cut_at =
        crate::common::records(&dir.join("segments").join(segment.file_name().unwrap()))[49].offset;
    let out = dump_path(&killed, &[]);
    assert_eq!(out.status.code(), Some(1), "{}", said(&out));
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains(&format!(
            "recovery: the next open keeps 49 record(s) of {} (through byte {cut_at}) and cuts the rest",
            segment.display()
        )),
        "{stdout}"
    );
    assert_eq!(
        text(&out.stderr),
        format!(
            "evlog-dump: damaged: {}: file ends inside a record: a torn tail of 30 bytes at byte offset {cut_at} that the next open cuts (copying it to lost+found), dropping 1 record(s), seq 50..=50\n",
            segment.display()
        )
    );
    let out = dump_path(&killed, &["--verify"]);
    assert_eq!(out.status.code(), Some(1), "{}", said(&out));
    assert!(
        text(&out.stdout).contains("a torn tail of 30 bytes"),
        "{}",
        said(&out)
    );
    let log = Log::open(&killed, Options::default()).expect("open");
    assert_eq!(log.last_seq(), Some(49));
    log.close().expect("close");
    let out = dump_path(&killed, &["--verify"]);
    assert_eq!(out.status.code(), Some(0), "{}", said(&out));
}

// Proves that --verify checks causation references across the log: an
// event whose cause is in no file is a problem naming its seq and the
// missing id, with exit 1 (the files themselves are intact).
#[test]
fn dump_verify_reports_a_cause_not_in_the_log() {
    let root = tempdir();
    let dir = root.path().join("d");
    let log = Log::open(&dir, Options::default()).expect("open");
    log.append(event(1)).expect("append");
    let stranger = Uuid::from_u128(0xBAD);
    log.append(Event::new("task.updated").causation_id(stranger))
        .expect("append");
    log.close().expect("close");
    let out = dump_path(&dir, &["--verify"]);
    assert_eq!(out.status.code(), Some(1), "{}", said(&out));
    let expected = format!(
        "corrupt: {}: seq 2: its cause {stranger} is not in the log\n",
        dir.display()
    );
    assert_eq!(text(&out.stdout), expected);
    assert_eq!(
        text(&out.stderr),
        expected.replace("corrupt: ", "evlog-dump: damaged: ")
    );
}

// Proves that --follow prints the records appended to a live directory
// while it runs (and only those, without --from-seq), stops at --limit,
// and stops by itself when the directory disappears.
#[test]
fn dump_follow_tails_a_live_directory() {
    let root = tempdir();
    let dir = root.path().join("d");
    let log = Log::open(&dir, Options::default()).expect("open");
    for i in 1..=3 {
        log.append(event(i)).expect("append");
    }
    let child = Command::new(env!("CARGO_BIN_EXE_evlog-dump"))
        .args([dir.as_os_str(), "--follow".as_ref(), "--json".as_ref()])
        .args(["--filter-type", "task.*", "--limit", "2"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    // Give it time to open the view at the current end (seq 3).
    std::thread::sleep(Duration::from_millis(500));
    for i in 4..=9 {
        log.append(event(i)).expect("append");
    }
    let out = child.wait_with_output().expect("wait");
    assert_eq!(out.status.code(), Some(0), "{}", said(&out));
    let seqs: Vec<u64> = json_lines(&out)
        .iter()
        .map(|v| v["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs, vec![4, 5], "{}", said(&out));
    log.close().expect("close");

    let mut child = Command::new(env!("CARGO_BIN_EXE_evlog-dump"))
        .args([
            dir.as_os_str(),
            "--follow".as_ref(),
            "--from-seq".as_ref(),
            "8".as_ref(),
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let first = lines.next().expect("a line").expect("read");
    assert!(first.starts_with("  seq=8 type=task.updated "), "{first}");
    std::fs::remove_dir_all(&dir).expect("remove the directory");
    let status = child.wait().expect("wait");
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    assert_eq!(status.code(), Some(0), "{stderr}");
    assert_eq!(
        stderr,
        format!("evlog-dump: {} is gone; stopped following\n", dir.display())
    );
}

// Proves that while a writer has the directory open (its lock held, seen
// in /proc/locks without touching the lock), bytes after the active
// segment's last complete unit are an append that may be in flight: not
// damage in the dump or in --verify; and that once the writer is gone
// the same bytes are a torn tail.
#[cfg(target_os = "linux")]
#[test]
fn dump_does_not_call_a_live_writers_tail_damage() {
    let root = tempdir();
    let dir = root.path().join("d");
    let log = Log::open(&dir, Options::default().preallocate_bytes(64 * 1024)).expect("open");
    for i in 1..=3 {
        log.append(event(i)).expect("append");
    }
    let segment = crate::common::segment_files(&dir)[0].clone();
    let end = crate::common::records(&segment)[2].end();
    // Half a record header, as a pwrite in progress leaves it: it claims a
    // body of 64 bytes, so the tail runs 24 + 64 = 88 bytes.
    crate::common::write_at(&segment, end, &[0x40, 0, 0, 0, 9, 9, 9, 9, 4, 0, 0]);
    let pid = std::process::id();
    let out = dump_path(&dir, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", said(&out));
    assert!(
        text(&out.stdout).contains(&format!(
            "live: a writer (pid {pid}) has the directory open: the 88 bytes after the last complete unit (byte {end}) may be an append in flight, so they are not judged"
        )),
        "{}",
        said(&out)
    );
    let out = dump_path(&dir, &["--verify"]);
    assert_eq!(out.status.code(), Some(0), "{}", said(&out));
    assert!(
        text(&out.stdout).ends_with(&format!(
            "; a writer (pid {pid}) has it open: the bytes after byte {end} of its active segment may be an append in flight and were not judged)\n"
        )),
        "{}",
        said(&out)
    );
    // The same bytes in a copy no process has open: a torn tail.
    let copy = root.path().join("copy");
    copy_dir(&dir, &copy);
    let out = dump_path(&copy, &["--verify"]);
    assert_eq!(out.status.code(), Some(1), "{}", said(&out));
    assert!(
        text(&out.stdout).contains("a torn tail of 88 bytes"),
        "{}",
        said(&out)
    );
    log.close().expect("close");
}

// Proves over the whole damaged-file corpus (tests/fixtures) that every
// mode agrees with --verify: print, --json and --stats exit 1 exactly
// when --verify does, saying so on stderr, and 0 in silence otherwise;
// and that none of them changes a byte of the fixture.
#[test]
fn dump_modes_agree_with_verify_on_every_fixture() {
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let root = tempdir();
    let mut names: Vec<PathBuf> = std::fs::read_dir(&fixtures)
        .expect("read fixtures")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.is_dir())
        .collect();
    names.sort();
    assert!(names.len() >= 10, "{names:?}");
    let mut damaged = 0;
    for fixture in names {
        let dir = root.path().join(fixture.file_name().expect("name"));
        copy_dir(&fixture, &dir);
        let before = tree(&dir);
        let verdict = dump_path(&dir, &["--verify"]);
        let code = verdict.status.code();
        assert!(
            matches!(code, Some(0 | 1)),
            "{}: {}",
            dir.display(),
            said(&verdict)
        );
        damaged += usize::from(code == Some(1));
        for flags in [&[][..], &["--json"], &["--stats"], &["--stats", "--json"]] {
            let out = dump_path(&dir, flags);
            assert_eq!(
                out.status.code(),
                code,
                "{} {flags:?}: {}",
                dir.display(),
                said(&out)
            );
            assert_eq!(
                out.stderr.is_empty(),
                code == Some(0),
                "{} {flags:?}: {}",
                dir.display(),
                said(&out)
            );
        }
        assert_unchanged(&before, &tree(&dir), "evlog-dump");
    }
    assert!(damaged >= 10, "{damaged} fixtures found damaged");
}

// Proves that --verify compares the secondary indexes with the log: the
// index of another log with the same event ids (so it passes open's
// mark check) but other types is reported, from the data directory and
// from the index directory itself, with exit 1.
#[test]
fn dump_verify_finds_secondary_indexes_that_disagree() {
    let root = tempdir();
    let write = |dir: &Path, event_type: &str| {
        let log = Log::open(dir, Options::default()).expect("open");
        for i in 1..=20 {
            log.append(Event::new(event_type).id(id(i)))
                .expect("append");
        }
        log.close().expect("close");
    };
    let dir = root.path().join("d");
    let other = root.path().join("other");
    write(&dir, "task.created");
    write(&other, "alert.raised");
    let out = dump_path(&dir, &["--verify"]);
    assert_eq!(out.status.code(), Some(0), "{}", said(&out));
    std::fs::remove_dir_all(dir.join("index")).expect("remove index");
    copy_dir(&other.join("index"), &dir.join("index"));
    let before = tree(root.path());
    for path in [dir.clone(), dir.join("index")] {
        let out = dump_path(&path, &["--verify"]);
        assert_eq!(
            out.status.code(),
            Some(1),
            "{}: {}",
            path.display(),
            said(&out)
        );
        let stdout = text(&out.stdout);
        // (The library names the posting kind by its number.)
        let first = stdout.lines().next().unwrap_or_default();
        assert!(
            first.starts_with(&format!(
                "corrupt: {}: index lists seq 1 under a ",
                path.display()
            )) && first.ends_with(" key the event does not have"),
            "{stdout}"
        );
        assert!(
            text(&out.stderr).starts_with("evlog-dump: damaged: "),
            "{}",
            said(&out)
        );
    }
    assert_unchanged(&before, &tree(root.path()), "evlog-dump");
}

// Proves that damage inside an archive's data frame is located to the
// frame and the seqs it holds, in the directory's --verify and the
// archive's own, and exits 1 in every mode.
#[test]
fn dump_locates_archive_damage_to_its_frame() {
    let root = tempdir();
    let dir = root.path().join("d");
    rich_dir(&dir);
    let archive = file_named(&dir.join("archive"), ".evz");
    let first_seq = crate::common::first_seq_of(&archive);
    flip_byte(&archive, 100, 0x20);
    for path in [&dir, &archive] {
        let out = dump_path(path, &["--verify"]);
        assert_eq!(out.status.code(), Some(1), "{}", said(&out));
        let stdout = text(&out.stdout);
        assert!(
            stdout.starts_with("corrupt: ")
                && stdout.contains(&format!("{} at byte offset ", archive.display()))
                && stdout.contains(&format!(" (data frame 0, seq {first_seq}..=")),
            "{stdout}"
        );
    }
    for flags in [&[][..], &["--json"], &["--stats"]] {
        let out = dump_path(&archive, flags);
        assert_eq!(out.status.code(), Some(1), "{flags:?}: {}", said(&out));
        assert!(
            text(&out.stderr).contains(" (data frame 0, seq "),
            "{}",
            said(&out)
        );
    }
}
