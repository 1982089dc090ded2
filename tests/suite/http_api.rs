//! The HTTP API (feature `http`) over a generated log: every route's answer
//! checked against the library's own answer to the same question, paging
//! through cursors without a gap or a repeat, bad parameters and unknown
//! ids as JSON errors with the right status, huge limits clamped, the live
//! tail resumed by `Last-Event-ID`, the bearer token, and a served
//! directory that disappears.

use std::io::{BufRead, BufReader, Read};
use std::sync::Arc;
use std::time::{Duration, Instant};

use evlog::http::{serve, ServeOptions, Server};
use evlog::workload::{Workload, WorkloadConfig};
use evlog::{Event, Log, LogReader, LoggedEvent, Options, Query, Uuid};
use serde_json::Value;

use crate::common::tempdir;

/// Events of the generated log: enough for several correlations, pages
/// and minutes of timeline, few enough to build in well under a second.
const EVENTS: u64 = 3_000;
/// The page size the paging tests ask for: small, so that every list
/// takes several pages.
const PAGE_EVENTS: usize = 7;
/// Longest wait for a live event over SSE.
const STREAM_WAIT: Duration = Duration::from_secs(20);

pub fn agent() -> ureq::Agent {
    ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(60))
        .build()
}

/// `GET url` as (status, JSON body); 4xx and 5xx answers too.
pub fn get_json(agent: &ureq::Agent, url: &str) -> (u16, Value) {
    answer(agent.get(url).call(), url)
}

fn answer(result: Result<ureq::Response, ureq::Error>, url: &str) -> (u16, Value) {
    let response = match result {
        Ok(r) => r,
        Err(ureq::Error::Status(_, r)) => r,
        Err(e) => panic!("{url}: {e}"),
    };
    let status = response.status();
    let content_type = response.content_type().to_string();
    let body = response
        .into_string()
        .unwrap_or_else(|e| panic!("{url}: {e}"));
    assert_eq!(content_type, "application/json", "{url}: {body}");
    let value = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{url}: {e}: {body}"));
    (status, value)
}

fn ok_json(agent: &ureq::Agent, url: &str) -> Value {
    let (status, body) = get_json(agent, url);
    assert_eq!(status, 200, "{url}: {body}");
    body
}

/// Asserts a JSON error: the status and a message.
fn assert_error(agent: &ureq::Agent, url: &str, status: u16) -> String {
    let (got, body) = get_json(agent, url);
    assert_eq!(got, status, "{url}: {body}");
    assert_eq!(body["status"], status, "{url}: {body}");
    let message = body["error"].as_str().unwrap_or_default().to_string();
    assert!(!message.is_empty(), "{url}: {body}");
    message
}

fn generated_log(dir: &std::path::Path) -> Log {
    let log = Log::open(dir, Options::default()).unwrap();
    let events: Vec<Event> = Workload::new(WorkloadConfig::new(EVENTS))
        .map(|g| g.event())
        .collect();
    for batch in events.chunks(500) {
        log.append_batch(batch).unwrap();
    }
    log
}

struct Served {
    _dir: tempfile::TempDir,
    log: Arc<Log>,
    server: Server,
    base: String,
}

fn served() -> Served {
    let dir = tempdir();
    let log = Arc::new(generated_log(dir.path()));
    let server = serve(
        Arc::clone(&log),
        "127.0.0.1:0".parse().unwrap(),
        ServeOptions::default(),
    )
    .unwrap();
    let base = format!("http://{}", server.local_addr());
    Served {
        _dir: dir,
        log,
        server,
        base,
    }
}

fn seqs(events: &[LoggedEvent]) -> Vec<u64> {
    events.iter().map(|e| e.seq).collect()
}

fn library(log: &Log, query: &Query) -> Vec<u64> {
    seqs(
        &log.query(query)
            .unwrap()
            .collect::<evlog::Result<Vec<_>>>()
            .unwrap(),
    )
}

/// Follows `next_after` from `url` (which has a `?`) to the end; checks
/// every page's size and returns the seqs in order.
fn all_pages(agent: &ureq::Agent, url: &str) -> Vec<u64> {
    let mut out = Vec::new();
    let mut after: Option<u64> = None;
    loop {
        let page_url = match after {
            Some(a) => format!("{url}&limit={PAGE_EVENTS}&after={a}"),
            None => format!("{url}&limit={PAGE_EVENTS}"),
        };
        let page = ok_json(agent, &page_url);
        let events = page["events"].as_array().unwrap();
        assert!(events.len() <= PAGE_EVENTS, "{page_url}");
        out.extend(events.iter().map(|e| e["seq"].as_u64().unwrap()));
        match page["next_after"].as_u64() {
            Some(next) => {
                assert_eq!(
                    events.len(),
                    PAGE_EVENTS,
                    "{page_url}: a short page with more"
                );
                assert_eq!(Some(next), out.last().copied(), "{page_url}");
                assert!(
                    after.is_none_or(|a| next > a),
                    "{page_url}: the cursor went back"
                );
                after = Some(next);
            }
            None => return out,
        }
    }
}

#[test]
fn http_lists_page_through_every_key_as_the_library_answers() {
    let s = served();
    let agent = agent();
    let event = s.log.get(1234).unwrap();
    let correlation = event.correlation_id.unwrap();
    let entity = event.entity.clone().unwrap();
    let actor = event.actor.clone().unwrap();
    let session = event.session.clone().unwrap();
    let since = event.timestamp_us - 500_000;
    let until = event.timestamp_us + 500_000;
    let cases: Vec<(String, Query)> = vec![
        (
            format!("/api/events/correlation/{correlation}?"),
            Query::correlation(correlation),
        ),
        (
            format!(
                "/api/events/entity/{}/{}?",
                entity.entity_type, entity.entity_id
            ),
            Query::entity(&entity.entity_type, &entity.entity_id),
        ),
        (format!("/api/events/actor/{actor}?"), Query::actor(&actor)),
        (
            format!("/api/events/session/{session}?"),
            Query::session(&session),
        ),
        (
            format!("/api/events/type/validation.*?since={since}&until={until}"),
            Query::all()
                .event_type("validation.*")
                .since(since)
                .until(until),
        ),
        (
            // Several filters at once, times as RFC 3339.
            format!(
                "/api/events/actor/{actor}?type=*&since={}&until={}",
                evlog::json::format_timestamp(since),
                evlog::json::format_timestamp(until)
            ),
            Query::actor(&actor)
                .event_type("*")
                .since(since)
                .until(until),
        ),
        (
            format!("/api/events?correlation={correlation}&type=orchestration.*"),
            Query::correlation(correlation).event_type("orchestration.*"),
        ),
    ];
    for (url, query) in cases {
        let want = library(&s.log, &query);
        assert!(want.len() > PAGE_EVENTS, "{url}: too few events to page");
        assert_eq!(
            all_pages(&agent, &format!("{}{url}", s.base)),
            want,
            "{url}"
        );
    }
    // The plain sequence range, from..=to.
    let got = all_pages(&agent, &format!("{}/api/events?from=100&to=130", s.base));
    assert_eq!(got, (100..=130).collect::<Vec<_>>());
    // An event's JSON is the library's JSON text of it.
    let page = ok_json(&agent, &format!("{}/api/events?from=1234&limit=1", s.base));
    let want: Value = serde_json::from_str(evlog::json::event_to_json(&event).get()).unwrap();
    assert_eq!(page["events"][0], want);
    assert_eq!(page["next_after"], 1234);
    s.server.shutdown().unwrap();
}

#[test]
fn http_events_by_seq_or_id_and_unknown_ids_are_404() {
    let s = served();
    let agent = agent();
    let event = s.log.get(42).unwrap();
    let by_seq = ok_json(&agent, &format!("{}/api/events/42", s.base));
    let by_id = ok_json(&agent, &format!("{}/api/events/{}", s.base, event.id));
    assert_eq!(by_seq["seq"], 42);
    assert_eq!(by_seq, by_id);
    let unknown = Uuid::from_u128(7);
    for path in [
        format!("/api/events/{}", EVENTS + 1),
        "/api/events/0".to_string(),
        format!("/api/events/{unknown}"),
        format!("/api/events/{unknown}/chain"),
        format!("/api/events/{unknown}/descendants"),
        format!("/api/events/{}/chain", EVENTS + 10),
        "/api/nothing/here".to_string(),
    ] {
        assert_error(&agent, &format!("{}{path}", s.base), 404);
    }
    // Unknown keys of lists are empty lists, not errors.
    for path in [
        format!("/api/events/correlation/{unknown}"),
        "/api/events/entity/task/NOPE".to_string(),
        "/api/events/actor/nobody".to_string(),
    ] {
        let page = ok_json(&agent, &format!("{}{path}", s.base));
        assert_eq!(page["events"], serde_json::json!([]), "{path}");
        assert_eq!(page["next_after"], Value::Null, "{path}");
    }
    s.server.shutdown().unwrap();
}

#[test]
fn http_chain_and_descendants_match_the_library() {
    let s = served();
    let agent = agent();
    let event = s.log.get(2000).unwrap();
    let chain = ok_json(&agent, &format!("{}/api/events/2000/chain", s.base));
    let want = seqs(&s.log.causation_chain(event.id).unwrap());
    let got: Vec<u64> = chain["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["seq"].as_u64().unwrap())
        .collect();
    assert!(want.len() > 2, "a chain of one or two proves little");
    assert_eq!(got, want);
    assert_eq!(chain["truncated"], false);
    // A limit keeps the causes nearest the event.
    let short = ok_json(&agent, &format!("{}/api/events/2000/chain?limit=2", s.base));
    assert_eq!(short["truncated"], true);
    assert_eq!(short["events"][1]["seq"], 2000);

    let root = want[0];
    let root_id = s.log.get(root).unwrap().id;
    let tree = ok_json(
        &agent,
        &format!("{}/api/events/{root_id}/descendants", s.base),
    );
    let library_tree = s.log.descendants(root_id).unwrap();
    let want: Vec<(u64, u64)> = library_tree
        .walk()
        .iter()
        .map(|(depth, e)| (*depth as u64, e.seq))
        .collect();
    let got: Vec<(u64, u64)> = tree["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| {
            (
                n["depth"].as_u64().unwrap(),
                n["event"]["seq"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(got, want);
    assert_eq!(tree["total"], library_tree.len());
    // Each node names its cause.
    for node in tree["nodes"].as_array().unwrap().iter().skip(1) {
        let parent = node["parent_seq"].as_u64().unwrap();
        let cause = node["event"]["causation_id"].as_str().unwrap();
        assert_eq!(s.log.get(parent).unwrap().id.to_string(), cause);
    }
    let cut = ok_json(
        &agent,
        &format!("{}/api/events/{root}/descendants?limit=3", s.base),
    );
    assert_eq!(cut["nodes"].as_array().unwrap().len(), 3);
    assert_eq!(cut["truncated"], true);
    s.server.shutdown().unwrap();
}

#[test]
fn http_entity_state_at_and_history_match_the_library() {
    let s = served();
    let agent = agent();
    let (entity_type, entity_id) = Workload::entity_of_rank(0);
    let events: Vec<LoggedEvent> = s
        .log
        .entity_history(entity_type, &entity_id, ..)
        .unwrap()
        .collect::<evlog::Result<_>>()
        .unwrap();
    assert!(events.len() > 3 * PAGE_EVENTS);
    let middle = &events[events.len() / 2];
    let at = evlog::json::format_timestamp(middle.timestamp_us);
    let url = format!(
        "{}/api/events/entity/{entity_type}/{entity_id}?at={at}",
        s.base
    );
    let state = ok_json(&agent, &url);
    assert_eq!(
        state["state"],
        s.log
            .state_at(entity_type, &entity_id, middle.timestamp_us)
            .unwrap()
    );
    assert_eq!(state["at_us"], middle.timestamp_us);
    // History: every change of every page, in order.
    let mut got = Vec::new();
    let mut after = String::new();
    loop {
        let page = ok_json(
            &agent,
            &format!(
                "{}/api/events/entity/{entity_type}/{entity_id}/history?limit={PAGE_EVENTS}{after}",
                s.base
            ),
        );
        for c in page["changes"].as_array().unwrap() {
            got.push((
                c["seq"].as_u64().unwrap(),
                c["field"].as_str().unwrap().to_string(),
                c["before"].clone(),
                c["after"].clone(),
            ));
        }
        match page["next_after"].as_u64() {
            Some(next) => after = format!("&after={next}"),
            None => break,
        }
    }
    let want: Vec<_> = s
        .log
        .history(entity_type, &entity_id)
        .unwrap()
        .into_iter()
        .map(|c| (c.seq, c.field, c.before, c.after))
        .collect();
    assert_eq!(got, want);
    assert_error(
        &agent,
        &format!(
            "{}/api/events/entity/{entity_type}/{entity_id}?at=yesterday",
            s.base
        ),
        400,
    );
    s.server.shutdown().unwrap();
}

#[test]
fn http_timeline_and_stats_match_the_library() {
    let s = served();
    let agent = agent();
    let stats = ok_json(&agent, &format!("{}/api/stats?top=1000", s.base));
    let want = s.log.stats(..).unwrap();
    assert_eq!(stats["total"], want.total);
    for (key, count) in &want.by_type {
        let found = stats["by_type"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["key"] == key.as_str())
            .unwrap_or_else(|| panic!("{key} missing"));
        assert_eq!(found["count"], *count);
    }
    assert_eq!(stats["types"], want.by_type.len());
    assert_eq!(stats["actors"], want.by_actor.len());
    let top = ok_json(&agent, &format!("{}/api/stats?top=3", s.base));
    let counts: Vec<u64> = top["by_type"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["count"].as_u64().unwrap())
        .collect();
    assert_eq!(counts.len(), 3);
    assert!(counts.windows(2).all(|w| w[0] >= w[1]), "{counts:?}");

    // The workload spans 3 s; a window of seconds in minute buckets.
    let first = s.log.get(1).unwrap().timestamp_us;
    let since = first + 1_000_000;
    let until = first + 2_500_000;
    let timeline = ok_json(
        &agent,
        &format!(
            "{}/api/timeline?since={since}&until={until}&bucket=minute",
            s.base
        ),
    );
    let in_window = s.log.stats(since..until).unwrap();
    let buckets = timeline["buckets"].as_array().unwrap();
    assert!(!buckets.is_empty());
    let total: u64 = buckets.iter().map(|b| b["total"].as_u64().unwrap()).sum();
    assert_eq!(total, in_window.total);
    let per_type: u64 = buckets
        .iter()
        .flat_map(|b| b["by_type"].as_object().unwrap().values())
        .map(|v| v.as_u64().unwrap())
        .sum();
    assert_eq!(per_type, in_window.total);
    // Whole log, every bucket size.
    for bucket in ["minute", "hour", "day"] {
        let t = ok_json(&agent, &format!("{}/api/timeline?bucket={bucket}", s.base));
        let total: u64 = t["buckets"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| b["total"].as_u64().unwrap())
            .sum();
        assert_eq!(total, EVENTS, "{bucket}");
    }
    s.server.shutdown().unwrap();
}

#[test]
fn http_bad_parameters_are_json_errors_with_their_status() {
    let s = served();
    let agent = agent();
    for (path, status) in [
        ("/api/events?limit=0", 400),
        ("/api/events?limit=-3", 400),
        ("/api/events?limit=ten", 400),
        ("/api/events?from=x", 400),
        ("/api/events?after=-1", 400),
        ("/api/events?lmit=3", 400),
        ("/api/events?since=yesterday", 400),
        ("/api/events?entity=task", 400),
        ("/api/events?correlation=not-a-uuid", 400),
        ("/api/events/correlation/not-a-uuid", 400),
        ("/api/events/type/a..b", 400),
        ("/api/events/type/*?type=x", 400),
        ("/api/events?type=bad%20pattern", 400),
        ("/api/events/abc", 400),
        ("/api/events/abc/chain", 400),
        ("/api/events/1/chain?depth=3", 400),
        ("/api/timeline?bucket=week", 400),
        // More than a day of minutes.
        ("/api/timeline?since=0&until=86400000001&bucket=minute", 400),
        ("/api/stats?top=0", 400),
        ("/api/verify?fast=1", 400),
        ("/api/stream?type=..", 400),
        ("/api/nothing", 404),
    ] {
        assert_error(&agent, &format!("{}{path}", s.base), status);
    }
    // The wrong method.
    let url = format!("{}/api/events", s.base);
    let (status, body) = answer(agent.post(&url).call(), &url);
    assert_eq!(status, 405, "{body}");
    let url = format!("{}/api/replay", s.base);
    let (status, body) = answer(agent.get(&url).call(), &url);
    assert_eq!(status, 405, "{body}");
    // Replay re-evaluates the shipped rules in dry run only.
    let (status, body) = answer(
        agent
            .post(&url)
            .send_json(serde_json::json!({"correlation_id": Uuid::from_u128(1), "dry_run": false})),
        &url,
    );
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("dry run"),
        "{body}"
    );
    let (status, body) = answer(
        agent
            .post(&url)
            .send_json(serde_json::json!({"correlation": "x"})),
        &url,
    );
    assert_eq!(status, 400, "{body}");
    let (status, body) = answer(
        agent
            .post(&url)
            .send_json(serde_json::json!({"correlation_id": Uuid::from_u128(1), "dry_run": true})),
        &url,
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["events"], 0, "{body}");
    assert_eq!(body["reports"], serde_json::json!([]), "{body}");
    s.server.shutdown().unwrap();
}

#[test]
fn http_huge_limits_are_clamped() {
    let s = served();
    let agent = agent();
    for limit in ["5000", "18446744073709551615", "99999999999999999999999999"] {
        let page = ok_json(&agent, &format!("{}/api/events?limit={limit}", s.base));
        assert_eq!(page["limit"], 1000, "{limit}");
        assert_eq!(page["events"].as_array().unwrap().len(), 1000, "{limit}");
        assert_eq!(page["next_after"], 1000, "{limit}");
        let page = ok_json(
            &agent,
            &format!("{}/api/events/type/*?limit={limit}", s.base),
        );
        assert_eq!(page["events"].as_array().unwrap().len(), 1000, "{limit}");
    }
    s.server.shutdown().unwrap();
}

#[test]
fn http_info_verify_metrics_and_page() {
    let s = served();
    let agent = agent();
    let info = ok_json(&agent, &format!("{}/api/info", s.base));
    assert_eq!(info["last_seq"], EVENTS);
    assert_eq!(info["read_only"], false);
    let verify = ok_json(&agent, &format!("{}/api/verify", s.base));
    assert_eq!(verify["ok"], true, "{verify}");
    assert_eq!(verify["events_checked"], EVENTS);
    let metrics = agent.get(&format!("{}/metrics", s.base)).call().unwrap();
    assert!(metrics.content_type().starts_with("text/plain"));
    let text = metrics.into_string().unwrap();
    assert!(
        text.lines()
            .any(|l| l == format!("evlog_last_seq {EVENTS}")),
        "{text}"
    );
    assert!(
        text.contains("# TYPE evlog_index_lag_events gauge"),
        "{text}"
    );
    // The page and its assets: embedded, small, no address outside.
    let mut bytes = 0;
    for (path, kind) in [
        ("/", "text/html"),
        ("/app.js", "text/javascript"),
        ("/app.css", "text/css"),
    ] {
        let response = agent.get(&format!("{}{path}", s.base)).call().unwrap();
        assert!(response.content_type().starts_with(kind), "{path}");
        let body = response.into_string().unwrap();
        assert!(!body.contains("http://") && !body.contains("https://") || path == "/app.js");
        bytes += body.len();
    }
    assert!(bytes < 64 * 1024, "the page's assets are {bytes} bytes");
    s.server.shutdown().unwrap();
}

/// Reads SSE events (`id`, `data`) from a stream until `count` came.
fn read_sse(reader: &mut impl BufRead, count: usize) -> Vec<(u64, Value)> {
    let mut out = Vec::new();
    let mut id = None;
    let mut line = String::new();
    let deadline = Instant::now() + STREAM_WAIT;
    while out.len() < count {
        assert!(
            Instant::now() < deadline,
            "only {} events of {count}",
            out.len()
        );
        line.clear();
        if reader.read_line(&mut line).unwrap() == 0 {
            panic!("the stream ended after {} events", out.len());
        }
        let line = line.trim_end();
        if let Some(v) = line.strip_prefix("id: ") {
            id = Some(v.parse::<u64>().unwrap());
        } else if let Some(v) = line.strip_prefix("data: ") {
            let value: Value = serde_json::from_str(v).unwrap();
            let id = id.take().expect("an id before the data");
            assert_eq!(value["seq"], id);
            out.push((id, value));
        }
    }
    out
}

fn open_stream(agent: &ureq::Agent, url: &str, last_event_id: Option<u64>) -> impl BufRead {
    let mut request = agent.get(url);
    if let Some(id) = last_event_id {
        request = request.set("Last-Event-ID", &id.to_string());
    }
    let response = request.call().unwrap();
    assert_eq!(response.content_type(), "text/event-stream");
    BufReader::new(response.into_reader())
}

#[test]
fn http_stream_delivers_live_events_and_resumes_without_gap_or_repeat() {
    let s = served();
    let agent = agent();
    let url = format!("{}/api/stream?type=live.*&entity=task/L-1", s.base);
    let mut stream = open_stream(&agent, &url, None);
    let live = |n: u64, entity: &str| {
        Event::new(if n.is_multiple_of(3) {
            "other.thing"
        } else {
            "live.tick"
        })
        .entity("task", entity)
        .json_payload(&serde_json::json!({ "n": n }))
        .unwrap()
    };
    // Matching and non-matching events interleaved.
    let mut matching = Vec::new();
    for n in 0..30u64 {
        let entity = if n.is_multiple_of(2) { "L-1" } else { "L-2" };
        let seq = s.log.append(live(n, entity)).unwrap();
        if !n.is_multiple_of(3) && entity == "L-1" {
            matching.push(seq);
        }
    }
    let first = read_sse(&mut stream, 5);
    assert_eq!(first.iter().map(|e| e.0).collect::<Vec<_>>(), matching[..5]);
    drop(stream);
    // Reconnect as a browser does, after the last received event: the
    // rest, once each, and then new ones.
    let mut resumed = open_stream(&agent, &url, Some(first[4].0));
    for n in 30..40u64 {
        let seq = s.log.append(live(n, "L-1")).unwrap();
        if !n.is_multiple_of(3) {
            matching.push(seq);
        }
    }
    let rest = read_sse(&mut resumed, matching.len() - 5);
    assert_eq!(rest.iter().map(|e| e.0).collect::<Vec<_>>(), matching[5..]);
    // `after` does the same on a first connect.
    let mut from_param = open_stream(&agent, &format!("{url}&after={}", matching[0]), None);
    let again = read_sse(&mut from_param, matching.len() - 1);
    assert_eq!(again.iter().map(|e| e.0).collect::<Vec<_>>(), matching[1..]);
    drop(resumed);
    // Shutting down ends the streams still open, and does not wait for
    // their clients.
    s.server.shutdown().unwrap();
    let mut rest = String::new();
    let ended = from_param.read_to_string(&mut rest);
    assert!(
        ended.is_ok() && !rest.contains("data: "),
        "{ended:?} {rest}"
    );
}

#[test]
fn http_bearer_token_guards_the_api_not_the_page() {
    let dir = tempdir();
    let log = Arc::new(generated_log(dir.path()));
    let server = serve(
        Arc::clone(&log),
        "127.0.0.1:0".parse().unwrap(),
        ServeOptions::default().bearer_token("s3cret"),
    )
    .unwrap();
    let base = format!("http://{}", server.local_addr());
    let agent = agent();
    for path in ["/api/info", "/api/events/1", "/metrics", "/api/stream"] {
        assert_error(&agent, &format!("{base}{path}"), 401);
        let url = format!("{base}{path}");
        let (status, _) = answer(
            agent.get(&url).set("Authorization", "Bearer wrong!").call(),
            &url,
        );
        assert_eq!(status, 401, "{path}");
    }
    let url = format!("{base}/api/info");
    let (status, body) = answer(
        agent.get(&url).set("Authorization", "Bearer s3cret").call(),
        &url,
    );
    assert_eq!(status, 200, "{body}");
    ok_json(&agent, &format!("{base}/api/events/1?access_token=s3cret"));
    let page = agent.get(&format!("{base}/")).call().unwrap();
    assert_eq!(page.status(), 200);
    server.shutdown().unwrap();
}

#[test]
fn http_reader_sees_appends_and_reports_a_directory_that_disappears() {
    let dir = tempdir();
    let data = dir.path().join("data");
    let log = generated_log(&data);
    let reader = Arc::new(LogReader::open(&data).unwrap());
    let server = serve(
        Arc::clone(&reader),
        "127.0.0.1:0".parse().unwrap(),
        ServeOptions::default(),
    )
    .unwrap();
    let base = format!("http://{}", server.local_addr());
    let agent = agent();
    let info = ok_json(&agent, &format!("{base}/api/info"));
    assert_eq!(info["read_only"], true);
    assert_eq!(info["last_seq"], EVENTS);
    // Appended after the reader opened: visible at the next request.
    let seq = log
        .append(Event::new("late.arrival").entity("task", "LATE"))
        .unwrap();
    let event = ok_json(&agent, &format!("{base}/api/events/{seq}"));
    assert_eq!(event["type"], "late.arrival");
    let page = ok_json(&agent, &format!("{base}/api/events/entity/task/LATE"));
    assert_eq!(page["events"][0]["seq"], seq);
    // The live tail of a reader polls the directory.
    let mut stream = open_stream(&agent, &format!("{base}/api/stream?type=late.*"), Some(seq));
    let next = log.append(Event::new("late.again")).unwrap();
    assert_eq!(read_sse(&mut stream, 1)[0].0, next);
    drop(stream);
    log.close().unwrap();
    std::fs::remove_dir_all(&data).unwrap();
    for path in [
        "/api/info",
        "/api/events?limit=5",
        "/api/events/1",
        "/api/stats",
        "/metrics",
    ] {
        let message = assert_error(&agent, &format!("{base}{path}"), 503);
        assert!(message.contains("data"), "{path}: {message}");
    }
    server.shutdown().unwrap();
}

#[test]
fn http_answers_archived_events_as_live_ones() {
    let dir = tempdir();
    let log = Log::open(
        dir.path(),
        Options::default()
            .segment_bytes_max(evlog::SEGMENT_BYTES_MIN)
            .preallocate_bytes(0),
    )
    .unwrap();
    let events: Vec<Event> = Workload::new(WorkloadConfig::new(EVENTS))
        .map(|g| g.event())
        .collect();
    // Small batches: a batch must fit one (small) segment.
    for batch in events.chunks(50) {
        log.append_batch(batch).unwrap();
    }
    log.archive_all_sealed().unwrap();
    assert!(log.archive_count() > 0, "nothing was archived");
    let log = Arc::new(log);
    let server = serve(
        Arc::clone(&log),
        "127.0.0.1:0".parse().unwrap(),
        ServeOptions::default(),
    )
    .unwrap();
    let base = format!("http://{}", server.local_addr());
    let agent = agent();
    let got = all_pages(&agent, &format!("{base}/api/events?from=1&to=40"));
    assert_eq!(got, (1..=40).collect::<Vec<_>>());
    let first = log.get(1).unwrap();
    let correlation = first.correlation_id.unwrap();
    assert_eq!(
        all_pages(
            &agent,
            &format!("{base}/api/events/correlation/{correlation}?")
        ),
        library(&log, &Query::correlation(correlation))
    );
    let chain = ok_json(
        &agent,
        &format!("{base}/api/events/{}/descendants", first.id),
    );
    assert_eq!(chain["total"], log.descendants(first.id).unwrap().len());
    let text = agent
        .get(&format!("{base}/metrics"))
        .call()
        .unwrap()
        .into_string()
        .unwrap();
    let archives = format!("evlog_archive_files {}", log.archive_count());
    assert!(text.lines().any(|l| l == archives), "{text}");
    server.shutdown().unwrap();
}
