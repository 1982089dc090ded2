//! A real full disk: a small tmpfs (mounting one needs root; without it
//! the tests say so and pass without checking anything). Appends that fit
//! succeed although the preallocation does not, a full disk is the typed
//! `Error::DiskFull` naming a file of the log, a failed append changes
//! nothing, and the same `Log` appends again once space is freed.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use evlog::{Error, Event, Log, Options, Payload};
use serde_json::{json, Value};

/// The default preallocation step of the active segment.
const PREALLOCATE_DEFAULT_BYTES: u64 = 4 * 1024 * 1024;

/// A tmpfs mounted on a temporary directory, unmounted on drop (also when
/// the test panics).
struct Tmpfs {
    path: PathBuf,
    // Dropped after `drop` has unmounted it: removes the empty mount point.
    _dir: tempfile::TempDir,
}

impl Tmpfs {
    /// `None` (after saying why) when the mount is not permitted.
    fn mount(size: &str) -> Option<Tmpfs> {
        let dir = tempfile::Builder::new()
            .prefix("evlog-tmpfs-")
            .tempdir()
            .expect("create a mount point");
        let path = dir.path().to_path_buf();
        let output = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&path)
            .output();
        match output {
            Ok(output) if output.status.success() => Some(Tmpfs { path, _dir: dir }),
            Ok(output) => {
                eprintln!(
                    "skipped: cannot mount a tmpfs (needs root): {}: {}",
                    output.status,
                    String::from_utf8_lossy(&output.stderr).trim()
                );
                None
            }
            Err(e) => {
                eprintln!("skipped: cannot mount a tmpfs (needs root): {e}");
                None
            }
        }
    }

    /// Bytes free, as `df` reports them.
    fn available_bytes(&self) -> u64 {
        let output = Command::new("df")
            .args(["-B1", "--output=avail"])
            .arg(&self.path)
            .output()
            .expect("run df");
        assert!(output.status.success(), "df: {output:?}");
        String::from_utf8_lossy(&output.stdout)
            .lines()
            .nth(1)
            .and_then(|l| l.trim().parse().ok())
            .unwrap_or_else(|| panic!("df output: {output:?}"))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let unmounted = Command::new("umount")
            .arg(&self.path)
            .status()
            .is_ok_and(|s| s.success());
        if !unmounted {
            // Something still holds a file there: detach it anyway, so no
            // mount outlives the test.
            let _ = Command::new("umount").arg("-l").arg(&self.path).status();
        }
    }
}

/// Event `i` of a test, with `pad` bytes of padding (same size for every
/// `i` below a million, so that retries need exactly as much space).
fn event(i: u64, pad: usize) -> Event {
    Event::new("disk.full")
        .entity("task", format!("T-{i:06}"))
        .json_payload(&payload(i, pad))
        .expect("a JSON payload")
}

fn payload(i: u64, pad: usize) -> Value {
    json!({"i": format!("{i:06}"), "pad": "x".repeat(pad)})
}

/// Panics unless `log` holds exactly events `1..=count` (by `get` and by
/// `iter`).
fn assert_holds(log: &Log, count: u64, pad: usize) {
    assert_eq!(log.last_seq(), Some(count), "last_seq");
    for seq in 1..=count {
        let got = log
            .get(seq)
            .unwrap_or_else(|e| panic!("get({seq}) failed: {e}"));
        assert_eq!(got.seq, seq);
        assert_eq!(
            got.payload,
            Payload::Json(payload(seq, pad).to_string()),
            "payload of seq {seq}"
        );
    }
    let mut seen = 0u64;
    for item in log.iter(..).expect("iter") {
        let got = item.unwrap_or_else(|e| panic!("iter failed after {seen} events: {e}"));
        seen += 1;
        assert_eq!(got.seq, seen);
    }
    assert_eq!(seen, count, "iter yielded {seen} of {count}");
}

/// Panics unless `error` is `Error::DiskFull` naming a file under `dir`.
fn assert_disk_full_in(error: &Error, dir: &Path) {
    assert!(error.is_disk_full(), "{error:?}");
    match error {
        Error::DiskFull { path, .. } => assert!(
            path.starts_with(dir),
            "DiskFull names {} outside {}",
            path.display(),
            dir.display()
        ),
        other => panic!("expected Error::DiskFull, got {other:?}"),
    }
}

/// Writes zeros to `path` until the file system is full.
fn fill_until_full(path: &Path) -> u64 {
    let mut file = File::create(path).expect("create filler");
    let chunk = vec![0u8; 64 * 1024];
    let mut written = 0u64;
    loop {
        match file.write(&chunk) {
            Ok(0) => break,
            Ok(n) => written += n as u64,
            Err(e) => {
                assert_eq!(e.kind(), std::io::ErrorKind::StorageFull, "{e}");
                break;
            }
        }
    }
    written
}

fn verify_with_dump(dir: &Path) {
    let output = Command::new(env!("CARGO_BIN_EXE_evlog-dump"))
        .arg(dir)
        .arg("--verify")
        .output()
        .expect("run evlog-dump");
    assert_eq!(
        output.status.code(),
        Some(0),
        "evlog-dump --verify: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

// Proves that on a disk with less room than the 4 MiB preallocation, appends that fit succeed until the space is used up, then fail with DiskFull naming a file of the log and change nothing, and the same Log appends again once space is freed; everything acknowledged survives a reopen.
#[test]
fn disk_full_tmpfs_appends_fit_then_recover() {
    const PAD: usize = 1000;
    let Some(mount) = Tmpfs::mount("4m") else {
        return;
    };
    let dir = mount.path.join("d");
    let filler = mount.path.join("filler");
    std::fs::write(&filler, vec![0u8; 4 * 1024 * 1024 - 1536 * 1024]).expect("write filler");

    let log = Log::open(&dir, Options::default()).expect("open");
    let free_at_start = mount.available_bytes();
    assert!(
        free_at_start < PREALLOCATE_DEFAULT_BYTES && free_at_start > 300 * 1024,
        "{free_at_start} bytes free"
    );
    let mut acked = 0u64;
    let error = loop {
        assert!(acked < 10_000, "the disk never filled up");
        match log.append(event(acked + 1, PAD)) {
            Ok(seq) => {
                acked += 1;
                assert_eq!(seq, acked);
            }
            Err(e) => break e,
        }
    };
    let free_at_failure = mount.available_bytes();
    eprintln!(
        "{acked} appends of about {PAD} bytes fit into {free_at_start} free bytes; \
         {free_at_failure} bytes free at the failure: {error}"
    );
    assert!(acked >= 1, "no append succeeded: {error:?}");
    assert_disk_full_in(&error, &dir);
    // Appends stop only when the space is used up, not when the
    // preallocation does not fit.
    assert!(
        free_at_failure < 16 * 1024,
        "appends failed with {free_at_failure} bytes still free"
    );
    assert_holds(&log, acked, PAD);

    for attempt in 0..3 {
        match log.append(event(acked + 1, PAD)) {
            Ok(seq) => panic!("retry {attempt} on a full disk appended seq {seq}"),
            Err(e) => assert_disk_full_in(&e, &dir),
        }
        assert_eq!(log.last_seq(), Some(acked), "retry {attempt}");
    }
    assert_holds(&log, acked, PAD);

    std::fs::remove_file(&filler).expect("remove filler");
    assert_eq!(
        log.append(event(acked + 1, PAD))
            .expect("append after freeing space"),
        acked + 1
    );
    acked += 1;
    assert_eq!(
        log.append(event(acked + 1, PAD)).expect("append"),
        acked + 1
    );
    acked += 1;
    assert_holds(&log, acked, PAD);
    // The indexer shared the full disk: it either caught up once space was
    // back, or it stopped and says why; it never stops silently.
    let indexed = log.wait_for_index(acked, std::time::Duration::from_secs(30));
    let status = log.index_status();
    assert!(
        matches!(indexed, evlog::WaitOutcome::Reached(_)) || status.stopped_because.is_some(),
        "the indexer neither caught up nor said why: {indexed:?} {status:?}"
    );
    eprintln!("indexer after the full disk: {indexed:?}, {status:?}");
    log.close().expect("close");

    let log = Log::open(&dir, Options::default()).expect("reopen");
    assert!(
        log.recovery_report().closed_cleanly,
        "{:?}",
        log.recovery_report()
    );
    assert_holds(&log, acked, PAD);
    log.close().expect("close");
    verify_with_dump(&dir);
}

// Proves that with the disk filled completely after the log was opened, an append fails with DiskFull naming a file of the log and appends nothing (also when retried), and the same Log appends from seq 1 once space is freed.
#[test]
fn disk_full_tmpfs_nothing_fits_gives_typed_error() {
    // More than the rest of the segment's first 4 KiB page, so the append
    // needs a new page of the full tmpfs.
    const PAD: usize = 5000;
    let Some(mount) = Tmpfs::mount("4m") else {
        return;
    };
    let dir = mount.path.join("d");
    let filler = mount.path.join("filler");
    let log = Log::open(&dir, Options::default()).expect("open");
    let written = fill_until_full(&filler);
    let free = mount.available_bytes();
    eprintln!("filler of {written} bytes leaves {free} bytes free");
    assert_eq!(free, 0, "the filler left space");

    for attempt in 0..4 {
        match log.append(event(1, PAD)) {
            Ok(seq) => panic!("append {attempt} on a full disk got seq {seq}"),
            Err(e) => {
                if attempt == 0 {
                    eprintln!("append on a full disk: {e}");
                }
                assert_disk_full_in(&e, &dir);
            }
        }
        assert_eq!(log.last_seq(), None, "attempt {attempt}");
        assert!(
            matches!(log.get(1), Err(Error::NotFound(1))),
            "attempt {attempt}"
        );
    }
    assert_eq!(log.iter(..).expect("iter").count(), 0);

    std::fs::remove_file(&filler).expect("remove filler");
    for seq in 1..=3 {
        assert_eq!(
            log.append(event(seq, PAD)).expect("append after freeing"),
            seq
        );
    }
    assert_holds(&log, 3, PAD);
    log.close().expect("close");

    let log = Log::open(&dir, Options::default()).expect("reopen");
    assert_holds(&log, 3, PAD);
    log.close().expect("close");
    verify_with_dump(&dir);
}
