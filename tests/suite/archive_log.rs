//! Archiving and retention inside a live log: archived events read as live
//! ones through every path (get, iter, queries, read-only views, reopen,
//! the offline reader); retention compacts mixed-priority pieces (P0
//! survives the deletion of its archive), explains its holes, frees space
//! even while a reader holds the old file; a crash at every operation of
//! an archive run or a deletion loses nothing still within retention and
//! duplicates nothing.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use evlog::storage::{Fault, FaultKind, OpKind, SimStorage};
use evlog::{
    Archive, Error, Event, HoldTarget, Log, LoggedEvent, Options, Priority, RetentionPolicy,
    RetentionRule,
};
use uuid::Uuid;

const DAY: Duration = Duration::from_secs(24 * 3600);

fn small_segments() -> Options {
    Options::default()
        .segment_bytes_max(evlog::SEGMENT_BYTES_MIN)
        .preallocate_bytes(16 * 1024)
}

/// Event `i`: P0 every fourth, else P2; `age_days` old; in one of three
/// correlations; a payload that compresses like real JSON.
fn event(i: u64, age_days: u64) -> Event {
    let now_us = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_micros() as i64;
    let priority = if i.is_multiple_of(4) {
        Priority::P0
    } else {
        Priority::P2
    };
    Event::new(if i.is_multiple_of(4) { "alert.raised" } else { "task.updated" })
        .id(Uuid::from_u128(0xA000_0000 + u128::from(i)))
        .timestamp_us(now_us - (age_days * DAY.as_micros() as u64) as i64 + i as i64)
        .correlation_id(Uuid::from_u128(u128::from(i % 3) + 1))
        .entity("task", format!("T-{}", i % 17))
        .priority(priority)
        .json_payload(&serde_json::json!({"i": i, "status": "in_progress", "note": "x".repeat((i % 50) as usize)}))
        .unwrap()
}

fn all(log: &Log) -> Vec<LoggedEvent> {
    log.iter(..).unwrap().map(|e| e.unwrap()).collect()
}

fn archive_files(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir.join("archive"))
        .map(|d| {
            d.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

fn segment_files(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir.join("segments"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".seg"))
        .collect();
    names.sort();
    names
}

// Archiving every sealed segment changes no answer: get, iter, queries,
// a read-only view, a reopen and the offline reader see the same events.
#[test]
fn archived_events_read_as_live_ones() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), small_segments()).unwrap();
    for i in 0..3000 {
        log.append(event(i, 1)).unwrap();
    }
    let before = all(&log);
    let by_correlation: Vec<u64> = log
        .by_correlation(Uuid::from_u128(2))
        .unwrap()
        .map(|e| e.unwrap().seq)
        .collect();
    let view = Log::open_read_only(dir.path()).unwrap();
    let mut held_iter = view.iter(..).unwrap();
    let first_from_view = held_iter.next().unwrap().unwrap();
    let segments_before = segment_files(dir.path()).len();
    assert!(
        segments_before > 3,
        "the workload must seal several segments"
    );

    let report = log.archive_all_sealed().unwrap();
    assert_eq!(report.segments_archived as usize, segments_before - 1);
    assert_eq!(
        segment_files(dir.path()).len(),
        1,
        "only the active segment stays"
    );
    assert_eq!(archive_files(dir.path()).len(), segments_before - 1);
    assert_eq!(log.archive_count(), segments_before - 1);
    assert!(report.stored_bytes_after < report.stored_bytes_before / 2);

    assert_eq!(all(&log), before);
    for e in before.iter().step_by(7) {
        assert_eq!(&log.get(e.seq).unwrap(), e);
    }
    let after: Vec<u64> = log
        .by_correlation(Uuid::from_u128(2))
        .unwrap()
        .map(|e| e.unwrap().seq)
        .collect();
    assert_eq!(after, by_correlation);

    // A view opened before the archive run finishes its iteration on the
    // files it had, then sees the archives after a refresh.
    let mut from_view = vec![first_from_view];
    from_view.extend(held_iter.map(|e| e.unwrap()));
    assert_eq!(from_view, before);
    view.refresh().unwrap();
    assert_eq!(view.archive_count(), segments_before - 1);
    let viewed: Vec<LoggedEvent> = view.iter(..).unwrap().map(|e| e.unwrap()).collect();
    assert_eq!(viewed, before);
    drop(view);

    // More events, a close and a reopen.
    for i in 3000..3100 {
        log.append(event(i, 1)).unwrap();
    }
    let before = all(&log);
    log.close().unwrap();
    let log = Log::open(dir.path(), small_segments()).unwrap();
    assert_eq!(all(&log), before);
    let fresh_view = Log::open_read_only(dir.path()).unwrap();
    assert_eq!(
        fresh_view
            .iter(..)
            .unwrap()
            .map(|e| e.unwrap())
            .collect::<Vec<_>>(),
        before
    );
    log.close().unwrap();

    // The archive directory alone replays the archived prefix.
    let copy = tempfile::tempdir().unwrap();
    for name in archive_files(dir.path()) {
        std::fs::copy(
            dir.path().join("archive").join(&name),
            copy.path().join(&name),
        )
        .unwrap();
    }
    let offline = Archive::open(copy.path()).unwrap();
    assert_eq!(offline.first_seq(), 1);
    let replayed: Vec<LoggedEvent> = offline.iter(..).unwrap().map(|e| e.unwrap()).collect();
    assert_eq!(replayed.len() as u64, offline.last_seq());
    assert_eq!(replayed, before[..offline.last_seq() as usize].to_vec());
}

/// Keep P0 forever; archive the rest after 90 days, delete it after a year.
fn policy() -> RetentionPolicy {
    RetentionPolicy::builder()
        .rule(
            RetentionRule::new("p0-forever")
                .priority(Priority::P0)
                .keep_forever(),
        )
        .rule(
            RetentionRule::new("default")
                .archive_after(90 * DAY)
                .delete_after(365 * DAY),
        )
        .build()
        .unwrap()
}

// Old P2 events are deleted with their holes explained, P0 events of the
// same pieces survive with their sequence numbers, recent events are
// archived but kept, and a hold keeps its events.
#[test]
fn retention_keeps_p0_through_the_deletion_of_its_archive() {
    let dir = tempfile::tempdir().unwrap();
    let options = small_segments().retention(policy());
    let log = Log::open(dir.path(), options.clone()).unwrap();
    // 2000 events 400 days old, 1000 events 100 days old, 500 recent.
    let mut expected = BTreeMap::new();
    let held_entity = "T-5";
    for i in 0..3500u64 {
        let age = if i < 2000 {
            400
        } else if i < 3000 {
            100
        } else {
            1
        };
        let e = event(i, age);
        let seq = log.append(e.clone()).unwrap();
        let entity_id = format!("T-{}", i % 17);
        let kept = age < 365 || i % 4 == 0 || entity_id == held_entity;
        expected.insert(seq, kept);
    }
    assert!(log
        .place_hold(
            HoldTarget::Entity {
                entity_type: "task".into(),
                entity_id: held_entity.into()
            },
            "case 42"
        )
        .unwrap());
    let before: BTreeMap<u64, LoggedEvent> = all(&log).into_iter().map(|e| (e.seq, e)).collect();

    let plan = log.retention_plan().unwrap();
    assert!(!plan.actions.is_empty());
    let report = log.archive_now().unwrap();
    assert!(report.events_deleted > 0);
    assert!(
        report.segments_archived > 0,
        "the 100-day-old segments are archived"
    );

    // An old event may survive when its segment also holds newer events
    // of its class (a piece's class is due when its newest event is); the
    // boundary segment is the only such one.
    let deletable = expected.values().filter(|kept| !**kept).count();
    let check = |log: &Log| {
        let now: BTreeMap<u64, LoggedEvent> = all(log).into_iter().map(|e| (e.seq, e)).collect();
        let mut deleted = 0;
        for (seq, kept) in &expected {
            match (kept, now.get(seq)) {
                (_, Some(e)) => assert_eq!(e, &before[seq]),
                (true, None) => panic!("seq {seq} should have been kept"),
                (false, None) => match log.get(*seq) {
                    Err(Error::Deleted { rule, .. }) => {
                        assert!(rule.contains("default"));
                        deleted += 1;
                    }
                    other => panic!("get({seq}) of a deleted event: {other:?}"),
                },
            }
        }
        assert!(
            deleted * 10 >= deletable * 8,
            "only {deleted} of {deletable} deletable events went"
        );
        let p0: Vec<u64> = log
            .by_type("alert.*", ..)
            .unwrap()
            .map(|e| e.unwrap().seq)
            .collect();
        let expected_p0: Vec<u64> = before
            .values()
            .filter(|e| e.priority == Priority::P0)
            .map(|e| e.seq)
            .collect();
        assert_eq!(p0, expected_p0);
        let report = log.verify().unwrap();
        assert!(report.is_ok(), "{report:?}");
    };
    check(&log);
    // A second run has nothing left to do.
    let again = log.archive_now().unwrap();
    assert_eq!(again.events_deleted, 0);
    log.close().unwrap();
    let log = Log::open(dir.path(), options).unwrap();
    check(&log);
    log.close().unwrap();
}

// A durable consumer that had not read what retention deleted is told so,
// naming both positions, rather than skipping silently.
#[test]
fn consumer_behind_a_deletion_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let options = small_segments().retention(policy());
    let log = Log::open(dir.path(), options).unwrap();
    let mut consumer = log.consumer("slow", evlog::Filter::all()).unwrap();
    for i in 0..2000u64 {
        log.append(event(i, 400)).unwrap();
    }
    for i in 0..10u64 {
        log.append(event(5000 + i, 1)).unwrap();
    }
    let first = consumer
        .next_timeout(Duration::from_secs(5))
        .unwrap()
        .unwrap();
    consumer.ack(first.seq).unwrap();
    consumer.commit().unwrap();
    drop(consumer);
    log.archive_now().unwrap();
    match log.consumer("slow", evlog::Filter::all()) {
        Err(Error::ConsumerBehindLog {
            position,
            first_seq,
            ..
        }) => {
            assert_eq!(position, first.seq);
            assert!(first_seq > position + 1);
        }
        Err(other) => panic!("expected ConsumerBehindLog, got {other}"),
        Ok(_) => panic!("expected ConsumerBehindLog, the consumer opened"),
    }
}

// A rule is a durable consumer: one whose triggers retention deleted
// before it evaluated them is refused with both positions, not resumed
// past them.
#[test]
fn rule_behind_a_deletion_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let options = small_segments().retention(policy());
    let rule = || evlog::Rule::new("slow", evlog::Trigger::on("*"), |_| Ok(Vec::new()));
    {
        let log = Log::open(dir.path(), options.clone()).unwrap();
        log.rules().register(rule()).unwrap();
        log.close().unwrap();
    }
    let log = Log::open(dir.path(), options).unwrap();
    for i in 0..2000u64 {
        log.append(event(i, 400)).unwrap();
    }
    for i in 0..10u64 {
        log.append(event(5000 + i, 1)).unwrap();
    }
    log.archive_now().unwrap();
    match log.rules().register(rule()) {
        Err(Error::ConsumerBehindLog {
            name,
            position,
            first_seq,
        }) => {
            assert_eq!((name.as_str(), position), ("rule.slow", 0));
            assert!(first_seq > 1, "{first_seq}");
        }
        Err(other) => panic!("expected ConsumerBehindLog, got {other}"),
        Ok(()) => panic!("expected ConsumerBehindLog, the rule was registered"),
    }
}

// With `keep_until_consumed`, retention waits for the slowest consumer.
#[test]
fn keep_until_consumed_waits_for_the_slowest_consumer() {
    let dir = tempfile::tempdir().unwrap();
    let policy = RetentionPolicy::builder()
        .rule(
            RetentionRule::new("consumed")
                .delete_after(30 * DAY)
                .keep_until_consumed(),
        )
        .build()
        .unwrap();
    let log = Log::open(dir.path(), small_segments().retention(policy)).unwrap();
    let consumer = log.consumer("reader", evlog::Filter::all()).unwrap();
    drop(consumer);
    for i in 0..2000u64 {
        log.append(event(i, 40)).unwrap();
    }
    let report = log.archive_now().unwrap();
    assert_eq!(report.events_deleted, 0, "the consumer has read nothing");
    let mut consumer = log.consumer("reader", evlog::Filter::all()).unwrap();
    while let Some(e) = consumer.next_timeout(Duration::from_millis(50)).unwrap() {
        consumer.ack(e.seq).unwrap();
    }
    consumer.commit().unwrap();
    drop(consumer);
    let report = log.archive_now().unwrap();
    assert!(report.events_deleted > 0);
    // The consumer resumes at the end with nothing missed.
    let mut consumer = log.consumer("reader", evlog::Filter::all()).unwrap();
    assert!(consumer
        .next_timeout(Duration::from_millis(50))
        .unwrap()
        .is_none());
}

const SIM_DIR: &str = "/sim/archive";

fn sim_open(disk: &SimStorage, options: &Options) -> evlog::Result<Log> {
    Log::open_with_storage(Path::new(SIM_DIR), options.clone(), Arc::new(disk.clone()))
}

/// Fails (or cuts the power at) operation N of an archive run, then a
/// retention run, for every N until both complete; after each fault the
/// log is reopened (on the same disk, and on rebooted images) and must
/// hold exactly the expected events: every one still within retention,
/// none twice, deleted ones either still there (the deletion did not
/// finish) or reported deleted.
fn crash_at_every_step(kind: FaultKind) -> u64 {
    let options = small_segments().retention(policy());
    // The base log, built once without faults.
    let base = SimStorage::new();
    let log = sim_open(&base, &options).unwrap();
    let mut appended = BTreeMap::new();
    // About three segments: the first all old (compacted: its P0 events
    // stay), the second mixed (archived), the active one.
    for i in 0..900u64 {
        let age = if i < 450 { 400 } else { 100 };
        let seq = log.append(event(i, age)).unwrap();
        appended.insert(seq, (event(i, age).id_or_new(), age < 365 || i % 4 == 0));
    }
    log.close().unwrap();
    let check = |log: &Log, context: &str| {
        let mut seen = BTreeMap::new();
        for e in log.iter(..).unwrap() {
            let e = e.unwrap_or_else(|e| panic!("{context}: {e}"));
            let (id, _) = appended
                .get(&e.seq)
                .unwrap_or_else(|| panic!("{context}: seq {}", e.seq));
            assert_eq!(e.id, *id, "{context}: seq {} holds another event", e.seq);
            assert!(seen.insert(e.seq, ()).is_none(), "{context}: duplicate");
        }
        for (seq, (_, kept)) in &appended {
            if *kept {
                assert!(seen.contains_key(seq), "{context}: kept seq {seq} lost");
            } else if !seen.contains_key(seq) {
                assert!(
                    matches!(log.get(*seq), Err(Error::Deleted { .. })),
                    "{context}: seq {seq} neither present nor reported deleted"
                );
            }
        }
    };
    let mut n = 1;
    loop {
        let disk = base.crash(None);
        disk.set_fault(Some(Fault {
            op: OpKind::Any,
            nth: n,
            kind,
            sticky: kind == FaultKind::PowerCut,
        }));
        let outcome = sim_open(&disk, &options).and_then(|log| {
            log.archive_now()?;
            log.close()
        });
        let fired = disk.fault_fired();
        if !fired {
            outcome.unwrap_or_else(|e| panic!("{kind:?}: fault-free run failed: {e}"));
        }
        let context = format!("{kind:?} at operation {n}");
        disk.set_fault(None);
        if kind != FaultKind::PowerCut {
            let log = sim_open(&disk, &options).unwrap_or_else(|e| panic!("{context}: {e}"));
            check(&log, &format!("{context}, restart"));
            log.close().unwrap();
        }
        for seed in [None, Some(11)] {
            let rebooted = disk.crash(seed);
            let log = sim_open(&rebooted, &options).unwrap_or_else(|e| panic!("{context}: {e}"));
            check(&log, &format!("{context}, reboot {seed:?}"));
            // Leftovers are cleaned up: no temporary file survives an open.
            log.close().unwrap();
        }
        if !fired {
            // The fault-free run did both kinds of step: a segment
            // archived whole, and one compacted (its P0 events kept).
            let log = sim_open(&disk, &options).unwrap();
            assert!(log.archive_count() >= 2, "{} archives", log.archive_count());
            let deleted = appended
                .keys()
                .filter(|&&seq| matches!(log.get(seq), Err(Error::Deleted { .. })))
                .count();
            assert!(deleted > 100, "only {deleted} events deleted");
            log.close().unwrap();
            return n - 1;
        }
        n += 1;
    }
}

#[test]
fn archive_and_deletion_survive_an_io_error_at_every_operation() {
    let covered = crash_at_every_step(FaultKind::Io);
    assert!(covered > 20, "only {covered} operations");
}

#[test]
fn archive_and_deletion_survive_a_power_cut_at_every_operation() {
    let covered = crash_at_every_step(FaultKind::PowerCut);
    assert!(covered > 20, "only {covered} operations");
}

const POLICY_TOML: &str = r#"
[retention]
[[retention.rule]]
name = "p0-forever"
priority = ["P0"]
keep_forever = true

[[retention.rule]]
name = "default"
archive_after = "90d"
delete_after = "365d"
"#;

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// `evlog archive` (the policy of `evlog.toml`) killed with SIGKILL after
/// a random delay, round after round on a fresh copy of the same log; the
/// reopened log holds every event still within retention exactly once,
/// reports the others deleted, leaves no temporary file, and a second run
/// finishes the job.
#[test]
fn archive_and_deletion_survive_sigkill_at_random_points() {
    let rounds: u64 = std::env::var("EVLOG_ARCHIVE_KILL_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(30);
    let template = tempfile::tempdir().unwrap();
    let log = Log::open(template.path(), small_segments()).unwrap();
    let mut expected = BTreeMap::new();
    for i in 0..3000u64 {
        let age = if i < 2000 { 400 } else { 100 };
        let e = event(i, age);
        let id = e.id_or_new();
        expected.insert(log.append(e).unwrap(), (id, age < 365 || i % 4 == 0));
    }
    log.close().unwrap();
    std::fs::write(template.path().join("evlog.toml"), POLICY_TOML).unwrap();

    let check = |dir: &Path, context: &str| -> usize {
        let log = Log::open(dir, small_segments()).unwrap_or_else(|e| panic!("{context}: {e}"));
        let mut seen = BTreeMap::new();
        for e in log.iter(..).unwrap() {
            let e = e.unwrap_or_else(|e| panic!("{context}: {e}"));
            assert_eq!(
                Some(&e.id),
                expected.get(&e.seq).map(|(id, _)| id),
                "{context}"
            );
            assert!(seen.insert(e.seq, ()).is_none(), "{context}: duplicate");
        }
        let mut deleted = 0;
        for (seq, (_, kept)) in &expected {
            if seen.contains_key(seq) {
                continue;
            }
            assert!(!kept, "{context}: kept seq {seq} lost");
            assert!(
                matches!(log.get(*seq), Err(Error::Deleted { .. })),
                "{context}: seq {seq} neither present nor reported deleted"
            );
            deleted += 1;
        }
        log.close().unwrap();
        let leftovers: Vec<String> = archive_files(dir)
            .into_iter()
            .filter(|n| n.ends_with(".tmp"))
            .collect();
        assert!(leftovers.is_empty(), "{context}: {leftovers:?}");
        deleted
    };

    let mut rng = crate::common::Rng::new(0xA7C);
    let mut interrupted = 0;
    for round in 0..rounds {
        let work = tempfile::tempdir().unwrap();
        copy_dir(template.path(), work.path());
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_evlog"))
            .arg("--dir")
            .arg(work.path())
            .arg("archive")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_micros(rng.below(150_000)));
        let _ = child.kill();
        let status = child.wait().unwrap();
        interrupted += u64::from(!status.success());
        let context = format!("round {round}");
        check(work.path(), &format!("{context}, after the kill"));
        // Run to completion: everything due goes.
        let log = Log::open(work.path(), small_segments()).unwrap();
        log.archive_now().unwrap();
        log.close().unwrap();
        let deleted = check(work.path(), &format!("{context}, after a full run"));
        assert!(deleted > 1000, "{context}: only {deleted} deleted");
    }
    // The delays must interrupt some runs, or the test shows nothing.
    assert!(
        interrupted * 3 >= rounds,
        "only {interrupted} of {rounds} runs were killed"
    );
}

/// A tmpfs mounted on a temporary directory, unmounted on drop.
struct Tmpfs {
    path: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(size: &str) -> Option<Tmpfs> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().to_path_buf();
        let status = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&path)
            .stderr(std::process::Stdio::null())
            .status();
        match status {
            Ok(s) if s.success() => Some(Tmpfs { path, _dir: dir }),
            _ => {
                eprintln!("skipped: cannot mount a tmpfs (needs root)");
                None
            }
        }
    }

    fn used_bytes(&self) -> u64 {
        let output = std::process::Command::new("df")
            .args(["-B1", "--output=used"])
            .arg(&self.path)
            .output()
            .unwrap();
        String::from_utf8_lossy(&output.stdout)
            .lines()
            .nth(1)
            .and_then(|l| l.trim().parse().ok())
            .unwrap()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let ok = std::process::Command::new("umount")
            .arg(&self.path)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            let _ = std::process::Command::new("umount")
                .arg("-l")
                .arg(&self.path)
                .status();
        }
    }
}

/// Archiving frees the segments' space, measured as the file system's
/// used bytes; while a read-only view still holds a segment the archiver
/// unlinked, that segment's space stays used, and it is freed when the
/// view lets go.
#[test]
fn archived_segments_free_their_space_when_the_last_reader_lets_go() {
    let Some(fs) = Tmpfs::mount("64m") else {
        return;
    };
    let dir = fs.path.join("log");
    let options = small_segments().secondary_indexes(false);
    let log = Log::open(&dir, options).unwrap();
    for i in 0..6000 {
        log.append(event(i, 1)).unwrap();
    }
    let view = Log::open_read_only(&dir).unwrap();
    let mut iter = view.iter(..).unwrap();
    assert_eq!(iter.next().unwrap().unwrap().seq, 1);
    let used_before = fs.used_bytes();
    let report = log.archive_all_sealed().unwrap();
    assert!(report.segments_archived > 5);
    // The view maps every sealed segment: their space is still used.
    let used_while_held = fs.used_bytes();
    // The iterator reads on through the unlinked files.
    assert_eq!(iter.count(), 5999);
    drop(view);
    let used_after = fs.used_bytes();
    let freed = used_before.saturating_sub(used_after);
    let segments_bytes = report.stored_bytes_before;
    assert!(
        freed * 2 > segments_bytes,
        "freed {freed} of {segments_bytes} bytes (used: {used_before} before, {used_while_held} while held, {used_after} after)"
    );
    assert!(
        used_while_held > used_after + segments_bytes / 2,
        "the held segments' space was freed while the view held them ({used_while_held} vs {used_after})"
    );
    log.close().unwrap();
}

/// `repair` of a log whose sealed segments were partly archived: a
/// segment's successor may be an archive, and the archived events stay.
#[test]
fn repair_counts_archives_as_pieces() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), small_segments()).unwrap();
    for i in 0..3000 {
        log.append(event(i, 1)).unwrap();
    }
    log.archive_all_sealed().unwrap();
    // Sealed segments again after the archives.
    for i in 3000..6000 {
        log.append(event(i, 1)).unwrap();
    }
    let before = all(&log);
    log.close().unwrap();
    // Damage the last record of the active segment.
    let active = segment_files(dir.path()).pop().unwrap();
    let path = dir.path().join("segments").join(&active);
    let last = *crate::common::records(&path).last().unwrap();
    assert_eq!(last.seq, before.len() as u64);
    crate::common::flip_byte(&path, last.body_byte(3), 0xFF);
    let report = evlog::repair(dir.path(), evlog::RepairMode::Apply).unwrap();
    let n = before.len() as u64;
    assert_eq!(
        report.dropped_seqs(),
        vec![(n, n)],
        "only the damaged event goes"
    );
    let log = Log::open(dir.path(), small_segments()).unwrap();
    assert_eq!(all(&log), before[..before.len() - 1].to_vec());
    log.close().unwrap();
}

/// The command line: `retention --dry-run` only reads and lists what the
/// policy would do; `archive` does it and reports; `info` counts the
/// archives; `replay` reads archived events; `verify` and
/// `evlog-dump --verify` tell the deletions apart from damage.
#[test]
fn cli_retention_dry_run_archive_and_verify() {
    use crate::common::{cli_ok, tree};
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), small_segments()).unwrap();
    for i in 0..3000u64 {
        log.append(event(i, if i < 2000 { 400 } else { 100 }))
            .unwrap();
    }
    log.close().unwrap();
    std::fs::write(dir.path().join("evlog.toml"), POLICY_TOML).unwrap();
    let replay_before = cli_ok(dir.path(), &["replay"]);

    let files_before = tree(dir.path());
    let plan: serde_json::Value =
        serde_json::from_str(&cli_ok(dir.path(), &["retention", "--dry-run", "--json"])).unwrap();
    assert_eq!(tree(dir.path()), files_before, "a dry run changes nothing");
    let planned = plan["actions"].as_array().unwrap();
    assert!(planned
        .iter()
        .any(|a| a["kind"] == "compact" && a["rule"] == "default"));
    assert!(planned.iter().any(|a| a["kind"] == "archive"));
    let table = cli_ok(dir.path(), &["retention", "--dry-run"]);
    assert!(
        table.contains("compact") && table.contains("default"),
        "{table}"
    );

    let report: serde_json::Value =
        serde_json::from_str(&cli_ok(dir.path(), &["archive"])).unwrap();
    assert_eq!(report["actions"].as_array().unwrap().len(), planned.len());
    assert!(report["events_deleted"].as_u64().unwrap() > 1000);
    let info: serde_json::Value = serde_json::from_str(&cli_ok(dir.path(), &["info"])).unwrap();
    assert_eq!(info["archives"].as_u64().unwrap() as usize, planned.len());

    // Replay prints every P0 event as before, and fewer events in all.
    let after = cli_ok(dir.path(), &["replay"]);
    for line in replay_before.lines() {
        let e: serde_json::Value = serde_json::from_str(line).unwrap();
        if e["priority"] == "P0" {
            assert!(after.contains(line), "a P0 event went: {line}");
        }
    }
    assert!(after.lines().count() + 1000 < replay_before.lines().count());

    let verify: serde_json::Value = serde_json::from_str(&cli_ok(dir.path(), &["verify"])).unwrap();
    assert_eq!(verify["ok"], true, "{verify}");
    assert!(
        verify["deleted_events"].as_u64().unwrap() > 1000,
        "{verify}"
    );
    let dump = std::process::Command::new(env!("CARGO_BIN_EXE_evlog-dump"))
        .arg(dir.path())
        .arg("--verify")
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&dump.stdout);
    assert!(dump.status.success(), "{said}");
    assert!(said.contains("deleted by retention rule default"), "{said}");
}

/// Key compaction: a rule with `keep_latest_per_entity` keeps, in the
/// sealed pieces it rewrites, only each entity's latest event of that
/// rule; other rules' events and the latest events stay.
#[test]
fn key_compaction_keeps_the_latest_event_per_entity() {
    let dir = tempfile::tempdir().unwrap();
    let policy = RetentionPolicy::builder()
        .rule(
            RetentionRule::new("state")
                .type_pattern("task.updated")
                .keep_latest_per_entity(),
        )
        .build()
        .unwrap();
    let log = Log::open(dir.path(), small_segments().retention(policy)).unwrap();
    for i in 0..3000 {
        log.append(event(i, 1)).unwrap();
    }
    let before = all(&log);
    let report = log.archive_now().unwrap();
    assert!(report.events_deleted > 1000, "{report:?}");
    let after: BTreeMap<u64, LoggedEvent> = all(&log).into_iter().map(|e| (e.seq, e)).collect();
    // The latest task.updated event of each entity, over the whole log.
    let mut latest = BTreeMap::new();
    for e in before.iter().filter(|e| e.event_type == "task.updated") {
        latest.insert(e.entity.clone().unwrap().entity_id, e.seq);
    }
    for e in &before {
        let is_latest = latest.values().any(|&seq| seq == e.seq);
        if e.event_type != "task.updated" || is_latest {
            assert_eq!(after.get(&e.seq), Some(e), "seq {} must stay", e.seq);
        } else if !after.contains_key(&e.seq) {
            assert!(matches!(log.get(e.seq), Err(Error::Deleted { .. })));
        }
    }
    log.close().unwrap();
}
