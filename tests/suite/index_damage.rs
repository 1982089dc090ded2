//! The index directory deleted, garbled, truncated, taken from another
//! log, or ahead of the log: opening never fails, the index is rebuilt
//! (with a reason when the damage was detected), and every answer equals
//! a brute-force scan. The same for read-only views of the damaged
//! directory.

use std::path::{Path, PathBuf};

use evlog::{Event, Log};

use crate::common::{tempdir, write_at, Rng};
use crate::index_props::{append_all, check_view, fixed_events, options, wait_indexed, View};

fn index_dir(dir: &Path) -> PathBuf {
    dir.join("index")
}

/// A closed log of `events`, appended in uneven batches, fully indexed.
fn write_log(dir: &Path, events: &[Event]) {
    let log = Log::open(dir, options()).unwrap();
    let tagged: Vec<(Event, bool)> = events.iter().map(|e| (e.clone(), false)).collect();
    append_all(&log, &tagged, &[7, 1, 33, 120]);
    wait_indexed(&log);
    assert_eq!(log.index_status().indexed_through, events.len() as u64);
    log.close().unwrap();
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// Every regular file under the index directory (sled's `db`, `conf`,
/// snapshots, blobs).
fn index_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut pending = vec![index_dir(dir)];
    while let Some(d) = pending.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let entry = entry.unwrap();
            if entry.file_type().unwrap().is_dir() {
                pending.push(entry.path());
            } else {
                out.push(entry.path());
            }
        }
    }
    out.sort();
    out
}

/// Opens the damaged log: it must open, answer like a scan before and
/// after the indexer caught up, and end with a usable index. Returns why
/// it was rebuilt, if it says.
fn reopen_and_check(dir: &Path, context: &str) -> Option<String> {
    // A read-only view first: it must open and answer (scanning when the
    // index cannot be used), and it must not repair anything.
    let view =
        Log::open_read_only(dir).unwrap_or_else(|e| panic!("{context}: read-only open: {e}"));
    check_view(&view, &format!("{context}: read-only view"), 1, 4, 2);
    drop(view);
    let log = Log::open(dir, options()).unwrap_or_else(|e| panic!("{context}: open: {e}"));
    wait_indexed(&log);
    let status = log.index_status();
    assert!(status.available, "{context}: {status:?}");
    check_view(&log, context, 2, 4, 2);
    log.close().unwrap();
    // And the rebuilt index is trusted at the next open.
    let log = Log::open(dir, options()).unwrap();
    wait_indexed(&log);
    assert_eq!(
        log.index_status().rebuilt_because,
        None,
        "{context}: rebuilt twice"
    );
    check_view(&log, &format!("{context}: reopened"), 3, 4, 2);
    log.close().unwrap();
    status.rebuilt_because
}

// A deleted index directory is recreated and rebuilt from the log, and
// the open says why.
#[test]
fn a_deleted_index_is_rebuilt_with_a_message() {
    let dir = tempdir();
    write_log(dir.path(), &fixed_events(400, 1));
    std::fs::remove_dir_all(index_dir(dir.path())).unwrap();
    let view = Log::open_read_only(dir.path()).unwrap();
    assert!(!view.index_status().available);
    assert!(
        !index_dir(dir.path()).exists(),
        "a read-only view created the index directory"
    );
    drop(view);
    let why = reopen_and_check(dir.path(), "deleted index");
    let why = why.expect("a deleted index is rebuilt with a message");
    assert!(why.contains("missing or empty"), "{why}");
    assert!(index_dir(dir.path()).join("db").is_file());
}

// Garbage over sled's files, truncations and deletions: the log opens, and
// whatever sled makes of its files, answers equal a scan. A damage that is
// detected is reported in `rebuilt_because`.
#[test]
fn a_garbled_index_never_stops_the_log_from_opening() {
    let pristine = tempdir();
    write_log(pristine.path(), &fixed_events(1_500, 2));
    let files = index_files(pristine.path());
    assert!(files.iter().any(|f| f.ends_with("db")), "{files:?}");
    let mut rng = Rng::new(0xDA3A6E);
    let mut detected = Vec::new();
    for case in 0..14u64 {
        let dir = tempdir();
        copy_dir(pristine.path(), dir.path());
        let files = index_files(dir.path());
        let db = index_dir(dir.path()).join("db");
        let len = std::fs::metadata(&db).unwrap().len();
        let what = match case {
            0 => {
                std::fs::write(&db, rng.bytes(len as usize)).unwrap();
                "db replaced by random bytes".to_string()
            }
            1 => {
                std::fs::write(&db, vec![0u8; len as usize]).unwrap();
                "db zeroed".to_string()
            }
            2 => {
                std::fs::OpenOptions::new()
                    .write(true)
                    .open(&db)
                    .unwrap()
                    .set_len(len / 2)
                    .unwrap();
                "db truncated to half".to_string()
            }
            3 => {
                std::fs::OpenOptions::new()
                    .write(true)
                    .open(&db)
                    .unwrap()
                    .set_len(0)
                    .unwrap();
                "db truncated to 0".to_string()
            }
            4 => {
                std::fs::remove_file(&db).unwrap();
                "db deleted".to_string()
            }
            5 => {
                let conf = index_dir(dir.path()).join("conf");
                std::fs::write(&conf, b"garbage = ").unwrap();
                "conf garbled".to_string()
            }
            6 => {
                let conf = index_dir(dir.path()).join("conf");
                std::fs::remove_file(&conf).unwrap();
                "conf deleted".to_string()
            }
            7 => {
                for f in files.iter().filter(|f| {
                    f.file_name()
                        .unwrap()
                        .to_string_lossy()
                        .starts_with("snap.")
                }) {
                    std::fs::remove_file(f).unwrap();
                }
                "snapshots deleted".to_string()
            }
            8 => {
                for f in files
                    .iter()
                    .filter(|f| !f.ends_with("db") && !f.ends_with("conf"))
                {
                    let flen = std::fs::metadata(f).unwrap().len();
                    std::fs::write(f, rng.bytes(flen.max(16) as usize)).unwrap();
                }
                "every file but db and conf garbled".to_string()
            }
            _ => {
                // Small runs of garbage at random places of db.
                let mut spots = Vec::new();
                for _ in 0..1 + rng.below(6) {
                    let at = rng.below(len.max(1));
                    let n = 1 + rng.below(512);
                    write_at(&db, at, &rng.nonzero_bytes(n as usize));
                    spots.push((at, n));
                }
                format!("db garbled at {spots:?} of {len} bytes")
            }
        };
        let why = reopen_and_check(dir.path(), &what);
        if let Some(why) = why {
            assert!(!why.is_empty(), "{what}: an empty reason");
            detected.push((what, why));
        }
    }
    // What sled makes of each damage: an open failure (moved aside, the
    // reason says so) or an empty store (the reason says the index is
    // missing or empty). Either way the answers above were right; a damage
    // sled reads as an intact store would have no reason, and the answers
    // were still checked.
    for (what, why) in &detected {
        assert!(
            why.contains("could not be opened") || why.contains("missing or empty"),
            "{what}: {why}"
        );
    }
    eprintln!("index damages reported: {detected:?}");
}

/// Rebuilds with `index` (the directory of another log) in `dir`, and
/// returns the reason given.
fn with_foreign_index(dir: &Path, foreign: &Path, context: &str) -> Option<String> {
    std::fs::remove_dir_all(index_dir(dir)).unwrap();
    copy_dir(&index_dir(foreign), &index_dir(dir));
    reopen_and_check(dir, context)
}

// The index of another log is recognised by its mark: the event it names
// is not at that seq here, or the log ends before it.
#[test]
fn an_index_from_another_log_is_detected_and_rebuilt() {
    let log_b = tempdir();
    write_log(log_b.path(), &fixed_events(600, 3));
    for (other_len, wants) in [
        (250, "another log"),
        (600, "another log"),
        (900, "ends at 600"),
    ] {
        let other = tempdir();
        write_log(other.path(), &fixed_events(other_len, 4));
        let dir = tempdir();
        copy_dir(log_b.path(), dir.path());
        let why = with_foreign_index(
            dir.path(),
            other.path(),
            &format!("index of a log of {other_len}"),
        );
        let why =
            why.unwrap_or_else(|| panic!("the index of a log of {other_len} events was used"));
        assert!(why.contains(wants), "{other_len}: {why}");
    }
}

// The log has lost its tail (as after a power cut before a sync) while the
// index covers it: A holds 100 events, B the same first 50 (same ids and
// timestamps), and B gets A's index.
#[test]
fn an_index_ahead_of_the_log_is_detected_and_rebuilt() {
    let events = fixed_events(100, 5);
    let a = tempdir();
    write_log(a.path(), &events);
    let b = tempdir();
    write_log(b.path(), &events[..50]);
    let why =
        with_foreign_index(b.path(), a.path(), "index ahead of the log").expect("not detected");
    assert!(why.contains("ends at 50"), "{why}");
    assert!(why.contains("100"), "{why}");
    let log = Log::open(b.path(), options()).unwrap();
    assert_eq!(log.last_seq(), Some(50));
    let stats = log.stats(..).unwrap();
    assert_eq!(stats.total, 50);
    log.close().unwrap();

    // The same first 50 events, then 50 others: the mark's seq exists but
    // holds another event.
    let c = tempdir();
    let mut diverged = events[..50].to_vec();
    diverged.extend(fixed_events(50, 6));
    write_log(c.path(), &diverged);
    let why = with_foreign_index(c.path(), a.path(), "diverged log").expect("not detected");
    assert!(why.contains("another log"), "{why}");
    let log = Log::open(c.path(), options()).unwrap();
    assert_eq!(log.all().len(), 100);
    log.close().unwrap();
}
