//! The log's state as Prometheus text (exposition format 0.0.4), built
//! from the public accessors of [`Log`] and [`LogReader`] only, so that any
//! server (the `http` feature's `/metrics`, or an application's own) can
//! publish it.
//!
//! ```
//! # fn main() -> evlog::Result<()> {
//! # let dir = tempfile::tempdir().unwrap();
//! let log = evlog::Log::open(dir.path(), evlog::Options::default())?;
//! log.append(evlog::Event::new("a.b"))?;
//! let text = evlog::metrics::Metrics::of_log(&log)?.render();
//! assert!(text.contains("evlog_last_seq 1\n"));
//! # Ok(()) }
//! ```

use std::fmt::Write;

use crate::{ConsumerInfo, IndexStatus, Log, LogReader, RateLimitStats, Result};

/// The content type of [`Metrics::render`]'s text.
pub const PROMETHEUS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// One reading of the log's gauges.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Metrics {
    /// Lowest readable seq, 0 when the log is empty.
    pub first_seq: u64,
    /// Highest readable seq, 0 when the log is empty.
    pub last_seq: u64,
    /// Highest seq synced to stable storage; `None` for a read-only view,
    /// which cannot know it.
    pub durable_seq: Option<u64>,
    pub segment_count: usize,
    /// Archive files (`archive/*.evz`) the log reads.
    pub archive_count: usize,
    pub index: IndexStatus,
    /// Published events the indexes have not reached.
    pub index_lag_events: u64,
    pub consumers: Vec<ConsumerInfo>,
    /// The storm guard's rate limits (none for a read-only view, which
    /// appends nothing).
    pub rate_limits: Vec<RateLimitStats>,
}

impl Metrics {
    /// Reads the gauges of an open log.
    pub fn of_log(log: &Log) -> Result<Metrics> {
        Ok(Metrics {
            first_seq: log.first_seq().unwrap_or(0),
            last_seq: log.last_seq().unwrap_or(0),
            durable_seq: Some(log.durable_seq()),
            segment_count: log.segment_count(),
            archive_count: log.archive_count(),
            index: log.index_status(),
            index_lag_events: log.index_lag(),
            consumers: log.consumers()?,
            rate_limits: log.rate_limit_stats(),
        })
    }

    /// Reads the gauges of a read-only view (as of its last refresh).
    pub fn of_reader(reader: &LogReader) -> Result<Metrics> {
        Ok(Metrics {
            first_seq: reader.first_seq().unwrap_or(0),
            last_seq: reader.last_seq().unwrap_or(0),
            durable_seq: None,
            segment_count: reader.segment_count(),
            archive_count: reader.archive_count(),
            index: reader.index_status(),
            index_lag_events: reader.index_lag(),
            consumers: reader.consumers()?,
            rate_limits: Vec::new(),
        })
    }

    /// The exposition text: every metric with its HELP and TYPE lines.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let events = if self.last_seq >= self.first_seq && self.last_seq > 0 {
            self.last_seq - self.first_seq + 1
        } else {
            0
        };
        gauge(
            &mut out,
            "evlog_first_seq",
            "Lowest readable sequence number (0 when the log is empty).",
            self.first_seq,
        );
        gauge(
            &mut out,
            "evlog_last_seq",
            "Highest readable sequence number (0 when the log is empty).",
            self.last_seq,
        );
        if let Some(durable) = self.durable_seq {
            gauge(
                &mut out,
                "evlog_durable_seq",
                "Highest sequence number synced to stable storage.",
                durable,
            );
        }
        gauge(
            &mut out,
            "evlog_events",
            "Events readable in the log.",
            events,
        );
        gauge(
            &mut out,
            "evlog_segments",
            "Segment files of the log.",
            self.segment_count as u64,
        );
        gauge(
            &mut out,
            "evlog_archive_files",
            "Archive files of the log (sealed segments archived).",
            self.archive_count as u64,
        );
        gauge(
            &mut out,
            "evlog_index_available",
            "1 when queries use the secondary indexes, 0 when they scan the log.",
            u64::from(self.index.available),
        );
        gauge(
            &mut out,
            "evlog_index_indexed_through_seq",
            "Every event up to this sequence number is indexed.",
            self.index.indexed_through,
        );
        gauge(
            &mut out,
            "evlog_index_lag_events",
            "Readable events the secondary indexes have not reached.",
            self.index_lag_events,
        );
        gauge(
            &mut out,
            "evlog_index_stopped",
            "1 when the indexer stopped on an error of its store.",
            u64::from(self.index.stopped_because.is_some()),
        );
        header(
            &mut out,
            "evlog_consumer_position_seq",
            "Every matching event up to this sequence number was handled by the durable consumer.",
        );
        for consumer in &self.consumers {
            sample(
                &mut out,
                "evlog_consumer_position_seq",
                &consumer.name,
                consumer.position,
            );
        }
        header(
            &mut out,
            "evlog_consumer_lag_events",
            "Events after the durable consumer's position.",
        );
        for consumer in &self.consumers {
            sample(
                &mut out,
                "evlog_consumer_lag_events",
                &consumer.name,
                consumer.lag,
            );
        }
        self.render_rate_limits(&mut out);
        out
    }

    /// The storm guard's families, one sample per rate limit labelled
    /// with its pattern; written only when the log has rate limits.
    fn render_rate_limits(&self, out: &mut String) {
        if self.rate_limits.is_empty() {
            return;
        }
        type Read = fn(&RateLimitStats) -> u64;
        let families: [(&str, &str, &str, Read); 5] = [
            (
                "evlog_storms_total",
                "counter",
                "Storms started (one evlog.storm.detected event each) since the log was opened.",
                |stats| stats.storms,
            ),
            (
                "evlog_storm_active",
                "gauge",
                "1 while a request found the rate limit short less than its storm_quiet_ms ago.",
                |stats| u64::from(stats.storm_active),
            ),
            (
                "evlog_rate_limited_refused_events_total",
                "counter",
                "Events of requests the rate limit refused.",
                |stats| stats.refused_events,
            ),
            (
                "evlog_rate_limited_delayed_events_total",
                "counter",
                "Events of requests that waited for the rate limit's tokens, then were written.",
                |stats| stats.delayed_events,
            ),
            (
                "evlog_rate_limited_flagged_events_total",
                "counter",
                "Events written over the rate limit with the evlog.rate_limited mark.",
                |stats| stats.flagged_events,
            ),
        ];
        for (name, kind, help, read) in families {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for stats in &self.rate_limits {
                let _ = writeln!(
                    out,
                    "{name}{{pattern=\"{}\"}} {}",
                    escape_label(stats.limit.pattern()),
                    read(stats)
                );
            }
        }
    }
}

fn header(out: &mut String, name: &str, help: &str) {
    // Writing to a String cannot fail.
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
}

fn gauge(out: &mut String, name: &str, help: &str, value: u64) {
    header(out, name, help);
    let _ = writeln!(out, "{name} {value}");
}

fn sample(out: &mut String, name: &str, consumer: &str, value: u64) {
    let _ = writeln!(
        out,
        "{name}{{consumer=\"{}\"}} {value}",
        escape_label(consumer)
    );
}

/// A label value as the exposition format wants it: backslash, double
/// quote and newline escaped (consumer names allow none of them today;
/// this keeps the output valid should that change).
fn escape_label(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_render_every_family_with_help_and_type() {
        let metrics = Metrics {
            first_seq: 3,
            last_seq: 10,
            durable_seq: Some(9),
            segment_count: 2,
            archive_count: 4,
            index: IndexStatus {
                available: true,
                indexed_through: 7,
                ..IndexStatus::default()
            },
            index_lag_events: 3,
            consumers: vec![ConsumerInfo {
                name: "mailer".into(),
                position: 5,
                lag: 5,
            }],
            rate_limits: vec![RateLimitStats {
                limit: crate::RateLimit::new("agent.*", 10.0, 20),
                storms: 2,
                storm_active: true,
                refused_events: 7,
                delayed_events: 0,
                flagged_events: 1,
            }],
        };
        let text = metrics.render();
        for line in [
            "evlog_first_seq 3",
            "evlog_last_seq 10",
            "evlog_durable_seq 9",
            "evlog_events 8",
            "evlog_segments 2",
            "evlog_archive_files 4",
            "evlog_index_available 1",
            "evlog_index_indexed_through_seq 7",
            "evlog_index_lag_events 3",
            "evlog_consumer_position_seq{consumer=\"mailer\"} 5",
            "evlog_consumer_lag_events{consumer=\"mailer\"} 5",
            "evlog_storms_total{pattern=\"agent.*\"} 2",
            "evlog_storm_active{pattern=\"agent.*\"} 1",
            "evlog_rate_limited_refused_events_total{pattern=\"agent.*\"} 7",
            "evlog_rate_limited_delayed_events_total{pattern=\"agent.*\"} 0",
            "evlog_rate_limited_flagged_events_total{pattern=\"agent.*\"} 1",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing:\n{text}");
        }
        // Every sample's family has a HELP and a TYPE line before it.
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let family = line.split(['{', ' ']).next().unwrap();
            assert!(text.contains(&format!("# HELP {family} ")), "{family}");
            let kind = if family.ends_with("_total") {
                "counter"
            } else {
                "gauge"
            };
            assert!(
                text.contains(&format!("# TYPE {family} {kind}")),
                "{family}"
            );
        }
    }

    #[test]
    fn metrics_escape_label_values() {
        assert_eq!(escape_label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
