//! `Log::metrics` and `evlog metrics`: what the writer counts matches what
//! was appended, and the Prometheus text passes an independent parser
//! (`prometheus-parse`) with every family typed and every histogram
//! consistent.

use std::collections::BTreeMap;

use evlog::{Event, Log};
use prometheus_parse::{Scrape, Value};

use crate::common::*;

/// Parses exposition text; panics with the text when it does not parse.
fn parse(text: &str) -> Scrape {
    Scrape::parse(text.lines().map(|l| Ok(l.to_string())))
        .unwrap_or_else(|e| panic!("not Prometheus text ({e}):\n{text}"))
}

/// Every sample without labels, by name: counters and gauges only.
fn plain_values(scrape: &Scrape) -> BTreeMap<String, f64> {
    scrape
        .samples
        .iter()
        .filter(|s| s.labels.is_empty())
        .filter_map(|s| match s.value {
            Value::Counter(v) | Value::Gauge(v) => Some((s.metric.clone(), v)),
            _ => None,
        })
        .collect()
}

/// The cumulative buckets of a histogram, checked: increasing bounds,
/// non-decreasing counts, ending with +Inf.
fn buckets(scrape: &Scrape, name: &str) -> Vec<(f64, f64)> {
    let sample = scrape
        .samples
        .iter()
        .find(|s| s.metric == name)
        .unwrap_or_else(|| panic!("no histogram {name}"));
    let Value::Histogram(counts) = &sample.value else {
        panic!("{name} is not a histogram: {:?}", sample.value);
    };
    let pairs: Vec<(f64, f64)> = counts.iter().map(|c| (c.less_than, c.count)).collect();
    for pair in pairs.windows(2) {
        assert!(
            pair[0].0 < pair[1].0,
            "{name}: bounds not increasing {pairs:?}"
        );
        assert!(
            pair[0].1 <= pair[1].1,
            "{name}: counts not cumulative {pairs:?}"
        );
    }
    assert_eq!(pairs.last().map(|p| p.0), Some(f64::INFINITY), "{name}");
    pairs
}

#[test]
fn metrics_count_appends_groups_fsyncs_and_rolls() {
    let dir = tempdir();
    let log = Log::open(dir.path(), rolling_options()).expect("open");
    // 40 lone appends (40 groups of 1 event) and 10 batches of 100
    // events (10 groups of 100: a batch is never split), enough to roll
    // 64 KiB segments.
    for i in 0..40 {
        log.append(Event::new("m.one").entity("e", i.to_string()))
            .expect("append");
    }
    let batch: Vec<Event> = (0..100)
        .map(|i| Event::new("m.batch").actor(format!("a{i}")))
        .collect();
    for _ in 0..10 {
        log.append_batch(&batch).expect("batch");
    }
    let metrics = log.metrics().expect("metrics");
    let appends = metrics.appends.as_ref().expect("a writer counts appends");
    assert_eq!(appends.events_appended, 1040);
    assert_eq!(appends.commit_groups, 50);
    assert_eq!(appends.commit_group_events.count, 50);
    assert_eq!(appends.commit_group_events.sum, 1040);
    // Under Always, at least one fsync per group.
    assert!(appends.fsync_duration_us.count >= 50, "{appends:?}");
    let segments = log.segment_count() as u64;
    assert!(segments >= 2, "the test must roll");
    assert_eq!(appends.segment_rolls, segments - 1);
    assert_eq!(appends.queue_requests, 0);
    let segment_bytes: u64 = segment_files(dir.path()).iter().map(|p| file_len(p)).sum();
    assert_eq!(metrics.disk.segment_bytes, segment_bytes);
    // Each record is a 24-byte header and its body, all in the segments.
    assert!(appends.bytes_appended > 1040 * 24 && appends.bytes_appended < segment_bytes);
    assert_eq!(metrics.archive_lag_segments, segments - 1);
    assert!(metrics.recovery.open_duration_us.is_some());

    let text = metrics.render();
    let scrape = parse(&text);
    let values = plain_values(&scrape);
    assert_eq!(values["evlog_appended_events_total"], 1040.0);
    assert_eq!(values["evlog_commit_groups_total"], 50.0);
    assert_eq!(values["evlog_segment_rolls_total"], (segments - 1) as f64);
    assert_eq!(values["evlog_last_seq"], 1040.0);
    let groups = buckets(&scrape, "evlog_commit_group_events");
    let at_most = |bound: f64| {
        groups
            .iter()
            .find(|(le, _)| *le == bound)
            .map(|p| p.1)
            .expect("bucket")
    };
    assert_eq!(at_most(1.0), 40.0);
    assert_eq!(at_most(64.0), 40.0);
    assert_eq!(at_most(128.0), 50.0);
    assert_eq!(at_most(f64::INFINITY), 50.0);
    let fsyncs = buckets(&scrape, "evlog_fsync_duration_seconds");
    assert_eq!(
        fsyncs.last().map(|p| p.1),
        Some(appends.fsync_duration_us.count as f64)
    );
    // Every family is typed: the parser keeps a sample's declared type,
    // and an undeclared one comes back untyped (as this parser also
    // returns a histogram's `_sum` and `_count`).
    for sample in &scrape.samples {
        let family = sample
            .metric
            .strip_suffix("_sum")
            .or_else(|| sample.metric.strip_suffix("_count"))
            .unwrap_or(&sample.metric);
        let typed = !matches!(sample.value, Value::Untyped(_))
            || text.contains(&format!("# TYPE {family} histogram\n"));
        assert!(typed, "{} has no TYPE line", sample.metric);
        assert!(sample.metric.starts_with("evlog_"), "{}", sample.metric);
    }
    log.close().expect("close");
}

#[test]
fn cli_metrics_table_json_and_prometheus() {
    let dir = tempdir();
    {
        let log = Log::open(dir.path(), rolling_options()).expect("open");
        let batch: Vec<Event> = (0..300).map(|_| Event::new("m.x")).collect();
        for _ in 0..5 {
            log.append_batch(&batch).expect("batch");
        }
        log.close().expect("close");
    }
    let table = cli_ok(dir.path(), &["metrics"]);
    assert!(
        table.starts_with("events             1500 (seq 1..=1500)\n"),
        "{table}"
    );
    assert!(table.contains("disk bytes "), "{table}");

    let json: serde_json::Value =
        serde_json::from_str(&cli_ok(dir.path(), &["metrics", "--json"])).expect("one object");
    assert_eq!(json["last_seq"], 1500);
    assert_eq!(json["appends"], serde_json::Value::Null);
    let segment_bytes: u64 = segment_files(dir.path()).iter().map(|p| file_len(p)).sum();
    assert_eq!(json["disk_bytes"]["segments"], segment_bytes);
    assert_eq!(json["recovery"]["closed_cleanly"], true);

    let text = cli_ok(dir.path(), &["metrics", "--prometheus"]);
    let scrape = parse(&text);
    let values = plain_values(&scrape);
    assert_eq!(values["evlog_events"], 1500.0);
    assert_eq!(values["evlog_recovery_closed_cleanly"], 1.0);
    let disk: BTreeMap<String, f64> = scrape
        .samples
        .iter()
        .filter(|s| s.metric == "evlog_disk_usage_bytes")
        .filter_map(|s| match s.value {
            Value::Gauge(v) => Some((s.labels.get("kind").unwrap_or("?").to_string(), v)),
            _ => None,
        })
        .collect();
    assert_eq!(disk["segments"], segment_bytes as f64);
    assert_eq!(disk.len(), 6, "{disk:?}");

    let out = run_cli(dir.path(), &["metrics", "--json", "--prometheus"]);
    assert_eq!(out.status.code(), Some(2), "{}", said(&out));
    let missing = dir.path().join("nope");
    let out = run_cli(&missing, &["metrics"]);
    assert_eq!(out.status.code(), Some(2), "{}", said(&out));
    assert!(
        text_of(&out.stderr).contains("no evlog data directory at"),
        "{}",
        said(&out)
    );
}

fn text_of(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}
