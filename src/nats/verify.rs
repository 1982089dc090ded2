//! Verify: compare a local log with the stream a mirror wrote, range of
//! seqs by range (count and hash of each), and name the first seq where
//! they differ.
//!
//! Both sides are read once, in seq order, side by side: the local events
//! the mirror's filter passes, as the JSON body the mirror would publish,
//! and the stream's messages with their `Evlog-Seq` header. Each message
//! is hashed with its seq (`message_hash`); a range's hash folds its
//! messages' hashes in order, so a missing, extra, repeated, reordered or
//! changed message changes the count or the hash of its range.

use std::path::Path;

use super::{message_hash, Fnv64, StreamReader};
use crate::error::Result;
use crate::subscribe::{Filter, BOOKKEEPING_TYPE_PREFIX};
use crate::LogReader;

/// Seqs per compared range, by default.
pub const RANGE_EVENTS_DEFAULT: u64 = 10_000;
/// Differing ranges listed in a report at most (the first ones).
const DIFFERING_RANGES_LISTED_MAX: usize = 10;

/// What to compare. Build with [`VerifyConfig::new`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyConfig {
    pub(crate) server: String,
    pub(crate) stream: String,
    pub(crate) filter_patterns: Vec<String>,
    pub(crate) range_events: u64,
    pub(crate) through_seq: Option<u64>,
}

impl VerifyConfig {
    /// Compare with `stream` on the NATS server at `server`, with the other settings at their defaults.
    pub fn new(server: impl Into<String>, stream: impl Into<String>) -> VerifyConfig {
        VerifyConfig {
            server: server.into(),
            stream: stream.into(),
            filter_patterns: Vec::new(),
            range_events: RANGE_EVENTS_DEFAULT,
            through_seq: None,
        }
    }

    /// The mirror's type filter, when it had one (see
    /// [`super::MirrorConfig::filter`]).
    pub fn filter(mut self, pattern: impl Into<String>) -> VerifyConfig {
        self.filter_patterns.push(pattern.into());
        self
    }

    /// Seqs per range (at least 1; default 10 000).
    pub fn range_events(mut self, events: u64) -> VerifyConfig {
        self.range_events = events.max(1);
        self
    }

    /// Compares only seqs up to this one (a mirror that is still running
    /// has not shipped the newest events).
    pub fn through_seq(mut self, seq: u64) -> VerifyConfig {
        self.through_seq = Some(seq);
        self
    }

    fn log_filter(&self) -> Filter {
        if self.filter_patterns.is_empty() {
            return Filter::all()
                .event_type("*")
                .event_type(format!("{BOOKKEEPING_TYPE_PREFIX}*"));
        }
        self.filter_patterns
            .iter()
            .fold(Filter::all(), |filter, p| filter.event_type(p.clone()))
    }
}

/// One range whose count or hash differs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RangeDifference {
    /// The range's seqs, both inclusive.
    pub first_seq: u64,
    /// Last seq of the range (inclusive).
    pub last_seq: u64,
    /// Events of the range in the local log.
    pub local_count: u64,
    /// Messages of the range in the stream.
    pub stream_count: u64,
    /// Hash of the local events of the range.
    pub local_hash: u64,
    /// Hash of the stream's messages of the range.
    pub stream_hash: u64,
}

/// The outcome of [`verify`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct VerifyReport {
    /// Every compared seq is the same on both sides.
    pub equal: bool,
    /// The log's last seq (0: empty).
    pub local_last_seq: u64,
    /// The highest `Evlog-Seq` the stream holds (0: empty).
    pub stream_last_evlog_seq: u64,
    /// Local events and stream messages compared.
    pub local_events: u64,
    /// Stream messages compared.
    pub stream_messages: u64,
    /// Ranges compared.
    pub ranges: u64,
    /// The first seq where the two differ.
    pub first_difference: Option<u64>,
    /// What differs there.
    pub reason: Option<String>,
    /// The first differing ranges (at most 10).
    pub differing_ranges: Vec<RangeDifference>,
}

/// Count and hash of one side of one range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Summary {
    count: u64,
    hash: Fnv64,
}

impl Summary {
    fn new() -> Summary {
        Summary {
            count: 0,
            hash: Fnv64::new(),
        }
    }

    fn add(&mut self, item_hash: u64) {
        self.count += 1;
        self.hash.write(&item_hash.to_le_bytes());
    }
}

/// The range-by-range comparison as the walk goes.
struct Ranges {
    range_events: u64,
    current: u64,
    local: Summary,
    stream: Summary,
    compared: u64,
    differing: Vec<RangeDifference>,
    differing_count: u64,
}

impl Ranges {
    fn index(&self, seq: u64) -> u64 {
        seq.saturating_sub(1) / self.range_events
    }

    /// Moves to the range of `seq` (never back: a repeated or reordered
    /// message counts in the range being summed).
    fn advance_to(&mut self, seq: u64) {
        let index = self.index(seq);
        if index > self.current {
            self.flush();
            self.current = index;
        }
    }

    fn flush(&mut self) {
        if self.local.count == 0 && self.stream.count == 0 {
            return;
        }
        self.compared += 1;
        if self.local != self.stream {
            self.differing_count += 1;
            if self.differing.len() < DIFFERING_RANGES_LISTED_MAX {
                self.differing.push(RangeDifference {
                    first_seq: self.current * self.range_events + 1,
                    last_seq: (self.current + 1) * self.range_events,
                    local_count: self.local.count,
                    stream_count: self.stream.count,
                    local_hash: self.local.hash.0,
                    stream_hash: self.stream.hash.0,
                });
            }
        }
        self.local = Summary::new();
        self.stream = Summary::new();
    }
}

/// The stream's next message with an evlog seq up to `bound`.
async fn next_bounded(
    reader: &mut StreamReader,
    bound: u64,
) -> Result<Option<super::StreamMessage>> {
    Ok(reader.next().await?.filter(|m| m.evlog_seq <= bound))
}

/// Compares the data directory `dir` (opened read-only, so an application
/// may have it open) with the stream `config.stream`.
pub fn verify(dir: impl AsRef<Path>, config: &VerifyConfig) -> Result<VerifyReport> {
    let dir = dir.as_ref();
    let log = LogReader::open(dir)?;
    let runtime = super::runtime()?;
    runtime.block_on(verify_async(&log, config))
}

async fn verify_async(log: &LogReader, config: &VerifyConfig) -> Result<VerifyReport> {
    let name = &config.stream;
    let (stream, info) = super::existing_stream(&config.server, name).await?;
    let local_last_seq = log.last_seq().unwrap_or(0);
    let bound = config.through_seq.unwrap_or(u64::MAX);
    let filter = config.log_filter();
    let mut local = log
        .iter(1..=local_last_seq.min(bound))?
        .filter(|event| event.as_ref().map_or(true, |e| filter.matches(e)));
    let mut reader = if info.state.messages == 0 {
        StreamReader::open(&stream, name, 1, 0).await?
    } else {
        StreamReader::open(
            &stream,
            name,
            info.state.first_sequence,
            info.state.last_sequence,
        )
        .await?
    };

    let mut ranges = Ranges {
        range_events: config.range_events,
        current: 0,
        local: Summary::new(),
        stream: Summary::new(),
        compared: 0,
        differing: Vec::new(),
        differing_count: 0,
    };
    let mut first_difference: Option<(u64, String)> = None;
    let mut differ = |seq: u64, why: &str| {
        if first_difference.is_none() {
            first_difference = Some((seq, why.to_string()));
        }
    };
    let mut local_events = 0u64;
    let mut stream_messages = 0u64;
    let mut stream_last_evlog_seq = 0u64;
    let mut previous_stream_seq = 0u64;

    let mut local_next = local.next().transpose()?;
    let mut stream_next = next_bounded(&mut reader, bound).await?;
    loop {
        let take_local = match (&local_next, &stream_next) {
            (None, None) => break,
            (Some(_), None) => true,
            (None, Some(_)) => false,
            (Some(event), Some(message)) => {
                if message.evlog_seq <= previous_stream_seq {
                    false
                } else {
                    event.seq <= message.evlog_seq
                }
            }
        };
        let same_seq = matches!((&local_next, &stream_next),
            (Some(event), Some(message)) if event.seq == message.evlog_seq && message.evlog_seq > previous_stream_seq);
        if take_local {
            let Some(event) = local_next.take() else {
                break;
            };
            let body = crate::json::event_to_json(&event);
            let local_hash = message_hash(event.seq, body.get().as_bytes());
            ranges.advance_to(event.seq);
            ranges.local.add(local_hash);
            local_events += 1;
            if same_seq {
                if let Some(message) = stream_next.take() {
                    let stream_hash = message_hash(message.evlog_seq, &message.body);
                    ranges.stream.add(stream_hash);
                    stream_messages += 1;
                    previous_stream_seq = message.evlog_seq;
                    stream_last_evlog_seq = stream_last_evlog_seq.max(message.evlog_seq);
                    if stream_hash != local_hash {
                        differ(
                            event.seq,
                            "the stream's message differs from the log's event",
                        );
                    }
                    stream_next = next_bounded(&mut reader, bound).await?;
                }
            } else {
                differ(event.seq, "the stream lacks this event");
            }
            local_next = local.next().transpose()?;
        } else {
            let Some(message) = stream_next.take() else {
                break;
            };
            ranges.advance_to(message.evlog_seq);
            ranges
                .stream
                .add(message_hash(message.evlog_seq, &message.body));
            stream_messages += 1;
            if message.evlog_seq <= previous_stream_seq {
                differ(
                    message.evlog_seq,
                    "the stream holds this seq again, or out of order",
                );
            } else {
                differ(message.evlog_seq, "the stream holds an event the log lacks");
            }
            previous_stream_seq = previous_stream_seq.max(message.evlog_seq);
            stream_last_evlog_seq = stream_last_evlog_seq.max(message.evlog_seq);
            stream_next = next_bounded(&mut reader, bound).await?;
        }
    }
    ranges.flush();
    let (first_difference, reason) = match first_difference {
        Some((seq, why)) => (Some(seq), Some(why)),
        None => (None, None),
    };
    Ok(VerifyReport {
        equal: first_difference.is_none() && ranges.differing_count == 0,
        local_last_seq,
        stream_last_evlog_seq,
        local_events,
        stream_messages,
        ranges: ranges.compared,
        first_difference,
        reason,
        differing_ranges: ranges.differing,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ranges() -> Ranges {
        Ranges {
            range_events: 10,
            current: 0,
            local: Summary::new(),
            stream: Summary::new(),
            compared: 0,
            differing: Vec::new(),
            differing_count: 0,
        }
    }

    #[test]
    fn ranges_report_only_the_ranges_that_differ() {
        let mut r = ranges();
        for seq in 1..=30 {
            r.advance_to(seq);
            r.local.add(message_hash(seq, b"x"));
            // Seq 15 differs on the stream side; seq 27 is missing there.
            match seq {
                15 => r.stream.add(message_hash(seq, b"y")),
                27 => {}
                _ => r.stream.add(message_hash(seq, b"x")),
            }
        }
        r.flush();
        assert_eq!(r.compared, 3);
        let differing: Vec<(u64, u64, u64, u64)> = r
            .differing
            .iter()
            .map(|d| (d.first_seq, d.last_seq, d.local_count, d.stream_count))
            .collect();
        assert_eq!(differing, vec![(11, 20, 10, 10), (21, 30, 10, 9)]);
    }

    #[test]
    fn a_range_hash_depends_on_order() {
        let mut a = Summary::new();
        a.add(1);
        a.add(2);
        let mut b = Summary::new();
        b.add(2);
        b.add(1);
        assert_eq!(a.count, b.count);
        assert_ne!(a, b);
    }
}
