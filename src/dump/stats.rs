//! `evlog-dump --stats`: what each file holds (records, bytes, sequence
//! and time ranges) and counts by type and priority, over the records a
//! selection admits.

use std::collections::BTreeMap;
use std::path::PathBuf;

use crate::event::{LoggedEvent, Priority};

/// The figures of one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileStats {
    /// The file (empty in a total).
    pub path: PathBuf,
    /// What the file is ("segment", "archive", ...).
    pub kind: &'static str,
    /// Length of the file in bytes.
    pub file_bytes: u64,
    /// Records counted (those the selection admits).
    pub records: u64,
    /// Bytes of those records as framed (header and body).
    pub record_bytes: u64,
    /// Lowest and highest sequence number counted.
    pub seqs: Option<(u64, u64)>,
    /// Earliest and latest timestamp counted, µs since the epoch.
    pub timestamps_us: Option<(i64, i64)>,
    /// Records whose body does not decode (counted in `records`).
    pub undecodable: u64,
}

impl FileStats {
    /// The figures of a file before any record is counted.
    pub fn new(path: PathBuf, kind: &'static str, file_bytes: u64) -> FileStats {
        FileStats {
            path,
            kind,
            file_bytes,
            records: 0,
            record_bytes: 0,
            seqs: None,
            timestamps_us: None,
            undecodable: 0,
        }
    }

    fn add(&mut self, seq: u64, record_bytes: u64, timestamp_us: Option<i64>) {
        self.records += 1;
        self.record_bytes += record_bytes;
        self.seqs = Some(match self.seqs {
            None => (seq, seq),
            Some((low, high)) => (low.min(seq), high.max(seq)),
        });
        match timestamp_us {
            Some(t) => {
                self.timestamps_us = Some(match self.timestamps_us {
                    None => (t, t),
                    Some((low, high)) => (low.min(t), high.max(t)),
                })
            }
            None => self.undecodable += 1,
        }
    }
}

/// The figures of a whole dump: per file, and counts over all of them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DumpStats {
    /// One entry per file, in the order walked.
    pub files: Vec<FileStats>,
    /// Records counted by event type.
    pub by_type: BTreeMap<String, u64>,
    /// Records counted by priority.
    pub by_priority: BTreeMap<Priority, u64>,
}

impl DumpStats {
    /// Starts the figures of a new file; the records added next count
    /// for it.
    pub fn begin_file(&mut self, path: PathBuf, kind: &'static str, file_bytes: u64) {
        self.files.push(FileStats::new(path, kind, file_bytes));
    }

    /// Counts one record of the current file: its event, or `None` when
    /// the body does not decode.
    pub fn add_record(&mut self, seq: u64, record_bytes: u64, event: Option<&LoggedEvent>) {
        if let Some(event) = event {
            *self.by_type.entry(event.event_type.clone()).or_default() += 1;
            *self.by_priority.entry(event.priority).or_default() += 1;
        }
        if let Some(file) = self.files.last_mut() {
            file.add(seq, record_bytes, event.map(|e| e.timestamp_us));
        }
    }

    /// The figures of every file together.
    pub fn total(&self) -> FileStats {
        let mut total = FileStats::new(PathBuf::new(), "total", 0);
        for file in &self.files {
            total.file_bytes += file.file_bytes;
            total.records += file.records;
            total.record_bytes += file.record_bytes;
            total.undecodable += file.undecodable;
            if let Some((low, high)) = file.seqs {
                total.seqs = Some(
                    total
                        .seqs
                        .map_or((low, high), |(a, b)| (a.min(low), b.max(high))),
                );
            }
            if let Some((low, high)) = file.timestamps_us {
                total.timestamps_us = Some(
                    total
                        .timestamps_us
                        .map_or((low, high), |(a, b)| (a.min(low), b.max(high))),
                );
            }
        }
        total
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Payload;

    fn event(seq: u64, event_type: &str, priority: Priority, timestamp_us: i64) -> LoggedEvent {
        LoggedEvent {
            seq,
            id: uuid::Uuid::from_u128(u128::from(seq)),
            event_type: event_type.into(),
            timestamp_us,
            correlation_id: None,
            causation_id: None,
            entity: None,
            actor: None,
            session: None,
            priority,
            traceparent: None,
            metadata: Default::default(),
            payload: Payload::Empty,
        }
    }

    #[test]
    fn stats_count_per_file_and_in_total() {
        let mut stats = DumpStats::default();
        stats.begin_file("a.seg".into(), "segment", 1000);
        stats.add_record(1, 100, Some(&event(1, "a.b", Priority::P1, 50)));
        stats.add_record(2, 120, Some(&event(2, "a.c", Priority::P1, 40)));
        stats.begin_file("b.seg".into(), "segment", 500);
        stats.add_record(3, 90, None);
        stats.add_record(4, 80, Some(&event(4, "a.b", Priority::P3, 70)));
        assert_eq!(stats.files[0].seqs, Some((1, 2)));
        assert_eq!(stats.files[0].timestamps_us, Some((40, 50)));
        assert_eq!(stats.files[1].undecodable, 1);
        let total = stats.total();
        assert_eq!(
            (total.records, total.record_bytes, total.file_bytes),
            (4, 390, 1500)
        );
        assert_eq!(total.seqs, Some((1, 4)));
        assert_eq!(total.timestamps_us, Some((40, 70)));
        assert_eq!(stats.by_type.get("a.b"), Some(&2));
        assert_eq!(stats.by_priority.get(&Priority::P1), Some(&2));
        assert_eq!(stats.by_priority.get(&Priority::P3), Some(&1));
    }
}
