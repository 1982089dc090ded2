//! The web page in a real browser: headless Chromium driven through
//! chromedriver's WebDriver protocol (plain HTTP and JSON). `evlog serve`
//! serves a generated log read-only as a child process; the test searches
//! a correlation, opens an event's causation tree, picks an entity's state
//! at a time, and sees a live event appear after `evlog append`, another
//! process, appended it. Screenshots of each step are saved under
//! `target/browser-screenshots/` for people to look at.
//!
//! Needs Debian's `chromium` and `chromium-driver` at `/usr/bin/chromium`
//! and `/usr/bin/chromedriver` (`.ci/run` installs them).

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use evlog::workload::{Workload, WorkloadConfig};
use evlog::{Event, Log, Options};
use serde_json::{json, Value};

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
/// Events of the served log.
const EVENTS: u64 = 5_000;
/// Longest wait for the page to show something (a loaded machine may be
/// slow to start a browser).
const UI_WAIT: Duration = Duration::from_secs(30);
const POLL_INTERVAL: Duration = Duration::from_millis(100);
/// The W3C WebDriver name of an element reference.
const ELEMENT_KEY: &str = "element-6066-11e4-a52e-4f735466cecf";

/// A child process killed (by its own handle) when the test ends, passed
/// or not.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A WebDriver session of headless Chromium.
struct Browser {
    agent: ureq::Agent,
    session: String,
    _driver: KillOnDrop,
}

impl Browser {
    fn start() -> Browser {
        for tool in [CHROMIUM, CHROMEDRIVER] {
            assert!(
                Path::new(tool).exists(),
                "{tool} is missing: apt-get install chromium chromium-driver (.ci/run does)"
            );
        }
        let port = free_port();
        let driver = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let driver = KillOnDrop(driver);
        let agent = ureq::AgentBuilder::new()
            .timeout(Duration::from_secs(60))
            .build();
        let base = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + UI_WAIT;
        loop {
            let ready = agent
                .get(&format!("{base}/status"))
                .call()
                .ok()
                .and_then(|r| r.into_json::<Value>().ok())
                .is_some_and(|v| v["value"]["ready"] == true);
            if ready {
                break;
            }
            assert!(Instant::now() < deadline, "chromedriver did not start");
            std::thread::sleep(POLL_INTERVAL);
        }
        let created: Value = agent
            .post(&format!("{base}/session"))
            .send_json(json!({"capabilities": {"alwaysMatch": {
                "browserName": "chrome",
                "goog:chromeOptions": {
                    "binary": CHROMIUM,
                    "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                             "--disable-dev-shm-usage", "--window-size=1400,1600"]
                }
            }}}))
            .unwrap_or_else(|e| panic!("new session: {}", describe(e)))
            .into_json()
            .unwrap();
        let session = created["value"]["sessionId"].as_str().unwrap().to_string();
        Browser {
            agent,
            session: format!("{base}/session/{session}"),
            _driver: driver,
        }
    }

    fn post(&self, path: &str, body: Value) -> Value {
        let response = self
            .agent
            .post(&format!("{}{path}", self.session))
            .send_json(body)
            .unwrap_or_else(|e| panic!("POST {path}: {}", describe(e)));
        response.into_json::<Value>().unwrap()["value"].take()
    }

    fn goto(&self, url: &str) {
        self.post("/url", json!({ "url": url }));
    }

    fn find(&self, css: &str) -> String {
        let found = self.post("/element", json!({"using": "css selector", "value": css}));
        match found[ELEMENT_KEY].as_str() {
            Some(element) => element.to_string(),
            None => panic!("no element {css}: {found}"),
        }
    }

    fn click(&self, css: &str) {
        let element = self.find(css);
        self.post(&format!("/element/{element}/click"), json!({}));
    }

    fn type_into(&self, css: &str, text: &str) {
        let element = self.find(css);
        self.post(&format!("/element/{element}/clear"), json!({}));
        self.post(
            &format!("/element/{element}/value"),
            json!({ "text": text }),
        );
    }

    fn script(&self, script: &str) -> Value {
        self.post("/execute/sync", json!({"script": script, "args": []}))
    }

    /// Waits until `script` returns something truthy (not null, false, 0
    /// or empty); returns it.
    fn wait_for(&self, what: &str, script: &str) -> Value {
        let deadline = Instant::now() + UI_WAIT;
        loop {
            let value = self.script(script);
            let truthy = match &value {
                Value::Null | Value::Bool(false) => false,
                Value::Number(n) => n.as_f64() != Some(0.0),
                Value::String(s) => !s.is_empty(),
                _ => true,
            };
            if truthy {
                return value;
            }
            if Instant::now() >= deadline {
                let shot = self.screenshot("timeout");
                panic!(
                    "waited {UI_WAIT:?} for {what}; last: {value}; see {}",
                    shot.display()
                );
            }
            std::thread::sleep(POLL_INTERVAL);
        }
    }

    /// Scrolls the element `id` into view and saves a screenshot.
    fn show(&self, id: &str, name: &str) -> PathBuf {
        self.script(&format!("document.getElementById('{id}').scrollIntoView()"));
        self.screenshot(name)
    }

    fn screenshot(&self, name: &str) -> PathBuf {
        let encoded = self
            .agent
            .get(&format!("{}/screenshot", self.session))
            .call()
            .unwrap()
            .into_json::<Value>()
            .unwrap();
        let png = base64_decode(encoded["value"].as_str().unwrap());
        assert!(png.starts_with(b"\x89PNG"), "a screenshot is a PNG");
        let dir = screenshot_dir();
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(format!("{name}.png"));
        std::fs::write(&path, png).unwrap();
        path
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.agent.delete(&self.session).call();
    }
}

fn describe(error: ureq::Error) -> String {
    match error {
        ureq::Error::Status(code, r) => format!("{code}: {}", r.into_string().unwrap_or_default()),
        e => e.to_string(),
    }
}

/// `target/browser-screenshots/`, wherever the target directory is.
fn screenshot_dir() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .unwrap()
        .join("browser-screenshots")
}

/// Standard base64 (WebDriver's screenshot encoding).
fn base64_decode(text: &str) -> Vec<u8> {
    let value = |c: u8| -> u32 {
        match c {
            b'A'..=b'Z' => u32::from(c - b'A'),
            b'a'..=b'z' => u32::from(c - b'a') + 26,
            b'0'..=b'9' => u32::from(c - b'0') + 52,
            b'+' => 62,
            b'/' => 63,
            _ => panic!("not base64: {c}"),
        }
    };
    let bytes: Vec<u8> = text.bytes().filter(|&c| c != b'=' && c != b'\n').collect();
    let mut out = Vec::with_capacity(bytes.len() * 3 / 4);
    for chunk in bytes.chunks(4) {
        let mut n = 0u32;
        for (i, &c) in chunk.iter().enumerate() {
            n |= value(c) << (18 - 6 * i);
        }
        out.extend_from_slice(&n.to_be_bytes()[1..chunk.len()]);
    }
    out
}

/// `evlog serve --dir DIR --listen 127.0.0.1:0`, and the page's address.
fn serve_child(dir: &Path) -> (KillOnDrop, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_evlog"))
        .arg("--dir")
        .arg(dir)
        .args(["serve", "--listen", "127.0.0.1:0"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let child = KillOnDrop(child);
    assert!(line.starts_with("http://127.0.0.1:"), "serve said {line:?}");
    (child, line.trim().to_string())
}

/// Appends one JSON line through `evlog append`, a process of its own;
/// returns the seq it printed.
fn append_from_another_process(dir: &Path, line: &str) -> u64 {
    let mut child = Command::new(env!("CARGO_BIN_EXE_evlog"))
        .arg("--dir")
        .arg(dir)
        .arg("append")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(format!("{line}\n").as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success(), "{output:?}");
    let printed: Value = serde_json::from_slice(&output.stdout).unwrap();
    printed["seq"].as_u64().unwrap()
}

#[test]
fn browser_searches_opens_a_tree_picks_a_state_and_sees_a_live_event() {
    let dir = crate::common::tempdir();
    // The log, written and closed: the server only reads it, and the live
    // event comes from yet another process.
    let (correlation, picked, picked_tree, entity, at_us, state) = {
        let log = Log::open(dir.path(), Options::default()).unwrap();
        let events: Vec<Event> = Workload::new(WorkloadConfig::new(EVENTS))
            .map(|g| g.event())
            .collect();
        log.append_batch(&events).unwrap();
        let event = log.get(2_500).unwrap();
        let correlation = event.correlation_id.unwrap();
        // The correlation's third event: it has a cause and effects.
        let members: Vec<u64> = log
            .by_correlation(correlation)
            .unwrap()
            .map(|e| e.unwrap().seq)
            .collect();
        let picked = log.get(members[2]).unwrap();
        let tree = log.descendants(picked.id).unwrap().len();
        let entity = picked.entity.clone().unwrap();
        let at_us = picked.timestamp_us;
        let state = log
            .state_at(&entity.entity_type, &entity.entity_id, at_us)
            .unwrap();
        log.close().unwrap();
        (correlation, picked, tree, entity, at_us, state)
    };
    let (_server, url) = serve_child(dir.path());
    let browser = Browser::start();
    browser.goto(&url);
    browser.wait_for(
        "the first screen",
        "return document.body.getAttribute('data-ready')",
    );
    // Everything the first screen fetched, in bytes (the 1 MB budget).
    let transferred = browser.script(
        "return performance.getEntriesByType('navigation').concat(performance.getEntriesByType('resource'))
            .reduce((s, e) => s + (e.encodedBodySize || 0), 0)",
    );
    assert!(
        transferred.as_u64().unwrap() < 1_000_000,
        "first load: {transferred} bytes"
    );
    browser.wait_for(
        "the timeline's bars",
        "return document.querySelectorAll('#timeline rect').length",
    );
    browser.screenshot("01-first-load");

    // Search a correlation: exactly its events.
    browser.type_into("#q-correlation", &correlation.to_string());
    browser.click("#search-btn");
    let shown = browser.wait_for(
        "the correlation's events",
        &format!(
            "const rows = [...document.querySelectorAll('#results tbody tr')];
             return rows.length > 0 && rows.every(r => r.cells[6].textContent === '{correlation}')
                 && rows.map(r => Number(r.dataset.seq))"
        ),
    );
    let shown: Vec<u64> = serde_json::from_value(shown).unwrap();
    assert!(shown.contains(&picked.seq), "{shown:?}");
    browser.show("search-section", "02-correlation");

    // Open an event: its chain ends with it, its tree has every descendant.
    browser.click(&format!("#results tbody tr[data-seq='{}']", picked.seq));
    let drawn = browser.wait_for(
        "the causation tree",
        &format!(
            "const n = document.querySelectorAll('#tree li').length;
             const chain = [...document.querySelectorAll('#chain li')];
             return n === {picked_tree} && chain.length > 1
                 && chain[chain.length - 1].textContent.startsWith('#{} ') && n",
            picked.seq
        ),
    );
    assert_eq!(drawn, picked_tree);
    browser.show("detail-section", "03-causation-tree");

    // The event's entity, and its state at the event's time.
    browser.click("#entity-link");
    browser.wait_for(
        "the entity's history",
        "return document.querySelectorAll('#history tbody tr').length",
    );
    browser.type_into("#at-input", &evlog::json::format_timestamp(at_us));
    browser.click("#at-btn");
    let text = browser.wait_for(
        "the state at the time",
        &format!(
            "const t = document.getElementById('state').textContent;
             return t.includes('{}') && t",
            evlog::json::format_timestamp(at_us)
        ),
    );
    let text = text.as_str().unwrap();
    let shown_state: Value = serde_json::from_str(&text[text.find('\n').unwrap()..]).unwrap();
    assert_eq!(shown_state, state, "state of {entity:?}");
    browser.show("entity-section", "04-state-at");

    // A live event from another process appears without a reload.
    let seq = append_from_another_process(
        dir.path(),
        r#"{"type":"browser.live.check","entity":{"type":"task","id":"LIVE-1"},"actor":"test"}"#,
    );
    let live = browser.wait_for(
        "the live event",
        &format!("const li = document.querySelector(\"#live li[data-seq='{seq}']\"); return li && li.textContent"),
    );
    assert!(
        live.as_str().unwrap().contains("browser.live.check"),
        "{live}"
    );
    browser.show("live-section", "05-live-event");
}
