//! The HTTP benchmark (issue 14, item 5): requests per second and latency
//! of the correlation and entity routes, the live tail's delivery latency,
//! and the web page's first load, over the reference workload W1
//! (`docs/WORKLOAD.md`).
//!
//! ```text
//! cargo bench --features http --bench http                 # N = 1 000 000
//! EVLOG_BENCH_N=100000 cargo bench --features http --bench http
//! EVLOG_HTTP_BENCH_SECS=5 EVLOG_HTTP_BENCH_CLIENTS=4 ...   # per route; connections
//! ```
//!
//! What is measured, with `std::time::Instant`:
//!
//! - Routes: N events appended (batches of 1 000), the log closed and
//!   opened again under `Durability::Always` with its indexes current, and
//!   served in-process by `evlog::http::serve` on 127.0.0.1 (default
//!   options: one worker thread per core). CLIENTS threads on the same
//!   machine, each with its own kept-alive connection, send requests back
//!   to back for SECS seconds after one second of warm-up: `GET
//!   /api/events/correlation/{id}` for uniformly drawn correlations (about
//!   100 events each, all in one page of the default limit 100), `GET
//!   /api/events/entity/{type}/{id}` for uniformly drawn entities, and the
//!   same for the 10 hottest entities (thousands of events each: one
//!   page of 100). Latency is from sending the request to having read the
//!   whole body; the client shares the 2 cores with the server.
//! - SSE: a client follows `/api/stream`; one thread appends 200 single
//!   events, 5 ms apart. Latency is the instant the client parsed the
//!   event minus the instant `append` was called (so it includes the
//!   fsync of `Durability::Always`: the stream delivers durable events);
//!   then the same through a `LogReader` (what `evlog serve --dir` does),
//!   which polls the directory every 50 ms.
//! - First load: the bytes and time of the requests the page makes before
//!   its first screen is drawn; and, when `/usr/bin/chromedriver` is
//!   there, the time headless Chromium takes from navigation to the first
//!   screen drawn (`performance.now()` when the page marks itself ready).
//!
//! Stores live under `target/bench-tmp`.

mod common;

use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use evlog::http::{serve, ServeOptions};
use evlog::workload::{Workload, WorkloadConfig};
use evlog::{Durability, Event, Log, LogReader, Options, Uuid};
use serde_json::{json, Value};

/// Events per durable batch while the log is built.
const BATCH_EVENTS: usize = 1000;
/// Live events whose delivery is timed.
const SSE_SAMPLES: usize = 200;
const SSE_PAUSE: Duration = Duration::from_millis(5);
const WARM_UP: Duration = Duration::from_secs(1);
/// The targets of issue 14.
const TARGET_RPS: f64 = 2000.0;
const TARGET_P99_MS: f64 = 20.0;
const TARGET_FIRST_LOAD_BYTES: usize = 1_000_000;
const TARGET_FIRST_SCREEN_MS: f64 = 1000.0;

fn env_number(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(text) => text
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("{name} must be a number")),
        Err(_) => default,
    }
}

/// A small xorshift: which key each request asks for.
struct Draw(u64);

impl Draw {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n as u64) as usize
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

struct RouteFigures {
    requests: usize,
    per_second: f64,
    p50: Duration,
    p99: Duration,
    max: Duration,
    mean_bytes: usize,
}

/// CLIENTS threads asking for `paths` (drawn uniformly) for `secs`.
fn load(base: &str, paths: Arc<Vec<String>>, clients: usize, secs: u64) -> RouteFigures {
    let stop = Arc::new(AtomicBool::new(false));
    let measuring = Arc::new(AtomicBool::new(false));
    let mut threads = Vec::new();
    for client in 0..clients {
        let (base, paths, stop, measuring) = (
            base.to_string(),
            Arc::clone(&paths),
            Arc::clone(&stop),
            Arc::clone(&measuring),
        );
        threads.push(std::thread::spawn(move || {
            let agent = ureq::AgentBuilder::new()
                .timeout(Duration::from_secs(30))
                .build();
            let mut draw = Draw(0x9e37_79b9_7f4a_7c15 ^ (client as u64 + 1));
            let mut latencies = Vec::new();
            let mut bytes = 0usize;
            while !stop.load(Ordering::Relaxed) {
                let path = &paths[draw.below(paths.len())];
                let started = Instant::now();
                let response = agent
                    .get(&format!("{base}{path}"))
                    .call()
                    .unwrap_or_else(|e| panic!("{path}: {e}"));
                // Bytes, not a String: the client checks no UTF-8, to
                // leave the shared cores to the server.
                let mut body = Vec::new();
                response
                    .into_reader()
                    .read_to_end(&mut body)
                    .expect("read body");
                let took = started.elapsed();
                if measuring.load(Ordering::Relaxed) {
                    latencies.push(took);
                    bytes += body.len();
                } else {
                    // Checked once per request of the warm-up, outside the
                    // measured part: the answer is a non-empty page.
                    let page: Value = serde_json::from_slice(&body).expect("JSON");
                    assert!(
                        !page["events"].as_array().expect("events").is_empty(),
                        "{path}"
                    );
                }
            }
            (latencies, bytes)
        }));
    }
    std::thread::sleep(WARM_UP);
    measuring.store(true, Ordering::Relaxed);
    let started = Instant::now();
    std::thread::sleep(Duration::from_secs(secs));
    stop.store(true, Ordering::Relaxed);
    let elapsed = started.elapsed();
    let mut all = Vec::new();
    let mut bytes = 0;
    for thread in threads {
        let (latencies, b) = thread.join().expect("client thread");
        all.extend(latencies);
        bytes += b;
    }
    all.sort_unstable();
    RouteFigures {
        requests: all.len(),
        per_second: all.len() as f64 / elapsed.as_secs_f64(),
        p50: percentile(&all, 0.50),
        p99: percentile(&all, 0.99),
        max: all.last().copied().unwrap_or_default(),
        mean_bytes: bytes / all.len().max(1),
    }
}

/// Delivery latency of `/api/stream` on `base` for events appended to
/// `log`: (p50, p99, max).
fn sse_latency(base: &str, log: &Log) -> (Duration, Duration, Duration) {
    let (tx, rx) = mpsc::channel::<(u64, Instant)>();
    let url = format!("{base}/api/stream?type=bench.live");
    let response = ureq::get(&url).call().expect("open the stream");
    std::thread::spawn(move || {
        let mut reader = BufReader::new(response.into_reader());
        let mut line = String::new();
        while reader.read_line(&mut line).map(|n| n > 0).unwrap_or(false) {
            if let Some(data) = line.trim_end().strip_prefix("data: ") {
                let event: Value = serde_json::from_str(data).expect("event JSON");
                let now = Instant::now();
                if tx.send((event["seq"].as_u64().expect("seq"), now)).is_err() {
                    return;
                }
            }
            line.clear();
        }
    });
    let mut latencies = Vec::with_capacity(SSE_SAMPLES);
    for _ in 0..SSE_SAMPLES {
        let started = Instant::now();
        let seq = log.append(Event::new("bench.live")).expect("append");
        let (got, at) = rx
            .recv_timeout(Duration::from_secs(10))
            .expect("the live event");
        assert_eq!(got, seq, "the stream delivers in order without a gap");
        latencies.push(at.duration_since(started));
        std::thread::sleep(SSE_PAUSE);
    }
    latencies.sort_unstable();
    (
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.99),
        latencies.last().copied().unwrap_or_default(),
    )
}

/// The requests of the page's first screen (as app.js makes them):
/// total bytes and the time to make them one after another.
fn first_load(base: &str, log: &Log) -> (usize, Duration) {
    let first = log.get(log.first_seq().expect("events")).expect("first");
    let last_seq = log.last_seq().expect("events");
    let last = log.get(last_seq).expect("last");
    let minutes = (last.timestamp_us - first.timestamp_us) / 60_000_000;
    let bucket = if minutes <= 1440 {
        "minute"
    } else if minutes / 60 <= 1440 {
        "hour"
    } else {
        "day"
    };
    let paths = [
        "/".to_string(),
        "/app.js".to_string(),
        "/app.css".to_string(),
        "/api/info".to_string(),
        format!("/api/timeline?bucket={bucket}"),
        format!(
            "/api/events?limit=50&from={}",
            last_seq.saturating_sub(49).max(1)
        ),
        "/api/stats?top=10".to_string(),
    ];
    let agent = ureq::agent();
    let started = Instant::now();
    let mut bytes = 0;
    for path in &paths {
        let body = agent
            .get(&format!("{base}{path}"))
            .call()
            .unwrap_or_else(|e| panic!("{path}: {e}"))
            .into_string()
            .expect("body");
        bytes += body.len();
    }
    (bytes, started.elapsed())
}

/// Headless Chromium's time from navigation to the first screen drawn,
/// in ms; `None` without chromedriver.
fn browser_first_screen(url: &str) -> Option<f64> {
    const DRIVER: &str = "/usr/bin/chromedriver";
    if !Path::new(DRIVER).exists() {
        return None;
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .ok()?
        .local_addr()
        .ok()?
        .port();
    let mut driver = std::process::Command::new(DRIVER)
        .arg(format!("--port={port}"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .ok()?;
    let base = format!("http://127.0.0.1:{port}");
    let agent = ureq::agent();
    let outcome = (|| {
        let deadline = Instant::now() + Duration::from_secs(30);
        while agent.get(&format!("{base}/status")).call().is_err() {
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let created: Value = agent
            .post(&format!("{base}/session"))
            .send_json(json!({"capabilities": {"alwaysMatch": {"goog:chromeOptions": {
                "binary": "/usr/bin/chromium",
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"]
            }}}}))
            .ok()?
            .into_json()
            .ok()?;
        let session = format!("{base}/session/{}", created["value"]["sessionId"].as_str()?);
        agent
            .post(&format!("{session}/url"))
            .send_json(json!({ "url": url }))
            .ok()?;
        let deadline = Instant::now() + Duration::from_secs(60);
        let ready = loop {
            let value: Value = agent
                .post(&format!("{session}/execute/sync"))
                .send_json(json!({"script": "return window.evlogReadyMs || null", "args": []}))
                .ok()?
                .into_json()
                .ok()?;
            if let Some(ms) = value["value"].as_f64() {
                break Some(ms);
            }
            if Instant::now() > deadline {
                break None;
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        let _ = agent.delete(&session).call();
        ready
    })();
    let _ = driver.kill();
    let _ = driver.wait();
    outcome
}

fn main() {
    let n = env_number("EVLOG_BENCH_N", 1_000_000);
    let secs = env_number("EVLOG_HTTP_BENCH_SECS", 5);
    let clients = env_number("EVLOG_HTTP_BENCH_CLIENTS", 4) as usize;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let tmp = common::bench_root("http-");
    let dir = tmp.path().join("log");

    let started = Instant::now();
    let mut correlations: Vec<Uuid> = Vec::new();
    {
        let log =
            Log::open(&dir, Options::default().durability(Durability::OsBuffered)).expect("open");
        let mut batch = Vec::with_capacity(BATCH_EVENTS);
        for generated in Workload::new(WorkloadConfig::new(n)) {
            if generated.causation_id.is_none() {
                correlations.push(generated.correlation_id);
            }
            batch.push(generated.event());
            if batch.len() == BATCH_EVENTS {
                log.append_batch(&batch).expect("append");
                batch.clear();
            }
        }
        if !batch.is_empty() {
            log.append_batch(&batch).expect("append");
        }
        let last = log.last_seq().expect("events");
        log.wait_for_index(last, Duration::from_secs(3600));
        log.close().expect("close");
    }
    let log = Arc::new(Log::open(&dir, Options::default()).expect("reopen"));
    let last = log.last_seq().expect("events");
    log.wait_for_index(last, Duration::from_secs(3600));
    eprintln!(
        "built a log of {n} events ({} correlations) in {:.1} s; {cores} cores, {clients} clients, {secs} s per route",
        correlations.len(),
        started.elapsed().as_secs_f64()
    );

    let server = serve(
        Arc::clone(&log),
        "127.0.0.1:0".parse().expect("address"),
        ServeOptions::default(),
    )
    .expect("serve");
    let base = format!("http://{}", server.local_addr());

    let entity_count = WorkloadConfig::new(n).entity_count();
    let entity_path = |rank: u64| {
        let (entity_type, entity_id) = Workload::entity_of_rank(rank);
        format!("/api/events/entity/{entity_type}/{entity_id}")
    };
    let routes: Vec<(&str, Vec<String>)> = vec![
        (
            "correlation",
            correlations
                .iter()
                .map(|c| format!("/api/events/correlation/{c}"))
                .collect(),
        ),
        ("entity", (0..entity_count).map(entity_path).collect()),
        (
            "entity (10 hottest)",
            (0..10.min(entity_count)).map(entity_path).collect(),
        ),
    ];
    println!("\nHTTP routes at N = {n} (limit 100 per page; {clients} clients on 127.0.0.1, same machine)");
    println!(
        "{:<22} {:>9} {:>10} {:>9} {:>9} {:>9} {:>10}",
        "route", "requests", "req/s", "p50 ms", "p99 ms", "max ms", "bytes/req"
    );
    let mut verdicts = Vec::new();
    for (name, paths) in routes {
        let f = load(&base, Arc::new(paths), clients, secs);
        println!(
            "{:<22} {:>9} {:>10.0} {:>9.2} {:>9.2} {:>9.2} {:>10}",
            name,
            f.requests,
            f.per_second,
            ms(f.p50),
            ms(f.p99),
            ms(f.max),
            f.mean_bytes
        );
        let met = f.per_second >= TARGET_RPS && ms(f.p99) <= TARGET_P99_MS;
        verdicts.push(format!("{name}: {}", if met { "met" } else { "NOT met" }));
    }
    println!(
        "Target (≥ {TARGET_RPS} req/s, p99 ≤ {TARGET_P99_MS} ms): {}",
        verdicts.join("; ")
    );

    let (p50, p99, max) = sse_latency(&base, &log);
    println!(
        "\nSSE delivery, Log (subscription), from append call to client: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms ({SSE_SAMPLES} events, Durability::Always)",
        ms(p50),
        ms(p99),
        ms(max)
    );
    let reader = Arc::new(LogReader::open(&dir).expect("open a reader"));
    let reader_server = serve(
        reader,
        "127.0.0.1:0".parse().expect("address"),
        ServeOptions::default(),
    )
    .expect("serve the reader");
    let (p50, p99, max) = sse_latency(&format!("http://{}", reader_server.local_addr()), &log);
    println!(
        "SSE delivery, LogReader (evlog serve --dir, polls every 50 ms): p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        ms(p50),
        ms(p99),
        ms(max)
    );
    reader_server.shutdown().expect("stop the reader's server");

    let (bytes, took) = first_load(&base, &log);
    println!(
        "\nFirst load: {bytes} bytes in the first screen's requests, {:.1} ms one after another (target ≤ {TARGET_FIRST_LOAD_BYTES} bytes: {})",
        ms(took),
        if bytes <= TARGET_FIRST_LOAD_BYTES { "met" } else { "NOT met" }
    );
    match browser_first_screen(&format!("{base}/")) {
        Some(ms) => println!(
            "Headless Chromium, navigation to first screen drawn: {ms:.0} ms (target ≤ {TARGET_FIRST_SCREEN_MS} ms: {})",
            if ms <= TARGET_FIRST_SCREEN_MS { "met" } else { "NOT met" }
        ),
        None => println!("Headless Chromium: skipped (no /usr/bin/chromedriver)"),
    }
    server.shutdown().expect("stop the server");
}
