//! Import: build a local data directory from a stream a mirror wrote,
//! event for event (same seqs, ids, timestamps, correlation, causation).
//!
//! Resumable: a second run goes on after the directory's last event, whose
//! id must be the id the stream holds at that seq. The directory records
//! its source in `DIR/nats-import.json` (FORMAT.md) before the first event
//! goes in, and an import from any other stream is refused.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{nats_error, StreamReader};
use crate::error::{CorruptKind, Error, Result};
use crate::{Log, Options};

/// The marker file naming a directory's import source.
pub const IMPORT_MARKER_FILE: &str = "nats-import.json";
const MARKER_FORMAT: &str = "evlog-nats-import";
const MARKER_VERSION: u32 = 1;
/// Longest marker file read: a few hundred bytes in practice.
const MARKER_BYTES_MAX: u64 = 64 * 1024;
/// Events appended per atomic batch: large enough to amortize the fsync,
/// small enough that a batch stays far below the batch size limit.
pub const IMPORT_BATCH_EVENTS_DEFAULT: usize = 1_000;

/// Where to import from. Build with [`ImportConfig::new`].
#[derive(Debug, Clone)]
pub struct ImportConfig {
    pub(crate) server: String,
    pub(crate) stream: String,
    pub(crate) options: Options,
    pub(crate) batch_events: usize,
}

impl ImportConfig {
    /// Import from `stream` on the NATS server at `server` (such as `nats://127.0.0.1:4222`), with the other settings at their defaults.
    pub fn new(server: impl Into<String>, stream: impl Into<String>) -> ImportConfig {
        ImportConfig {
            server: server.into(),
            stream: stream.into(),
            options: Options::default(),
            batch_events: IMPORT_BATCH_EVENTS_DEFAULT,
        }
    }

    /// Options the directory is opened with.
    pub fn options(mut self, options: Options) -> ImportConfig {
        self.options = options;
        self
    }

    /// Events per atomic batch (at least 1; default 1 000).
    pub fn batch_events(mut self, events: usize) -> ImportConfig {
        self.batch_events = events.max(1);
        self
    }
}

/// What an import did.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ImportReport {
    /// Events appended by this run.
    pub imported: u64,
    /// The directory's last seq afterwards (0: empty).
    pub last_seq: u64,
}

/// The content of `DIR/nats-import.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Marker {
    format: String,
    version: u32,
    /// The server URL of the first import (informative: a stream may be
    /// reached under several URLs).
    server: String,
    stream: String,
    /// When JetStream created the stream (RFC 3339): tells a stream from
    /// another of the same name created after the first was deleted.
    stream_created: String,
}

fn marker_path(dir: &Path) -> PathBuf {
    dir.join(IMPORT_MARKER_FILE)
}

fn read_marker(dir: &Path) -> Result<Option<Marker>> {
    use std::io::Read;
    let path = marker_path(dir);
    let file = match std::fs::File::open(&path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(Error::Io { path, source }),
    };
    let mut text = String::new();
    if let Err(source) = file.take(MARKER_BYTES_MAX).read_to_string(&mut text) {
        return Err(Error::Io { path, source });
    }
    let marker: Marker = serde_json::from_str(&text).map_err(|e| Error::Corrupt {
        file: path.clone(),
        offset: 0,
        kind: CorruptKind::Json(e.to_string()),
    })?;
    if marker.format != MARKER_FORMAT {
        return Err(Error::Corrupt {
            file: path,
            offset: 0,
            kind: CorruptKind::Json(format!(
                "format is {:?}, not {MARKER_FORMAT:?}",
                marker.format
            )),
        });
    }
    if marker.version != MARKER_VERSION {
        return Err(Error::UnsupportedVersion {
            file: path,
            found: marker.version,
            supported: MARKER_VERSION,
        });
    }
    Ok(Some(marker))
}

/// Writes the marker durably: a temporary file, fsync, rename, fsync of
/// the directory, so a crash leaves the old state or the whole new file.
fn write_marker(dir: &Path, marker: &Marker) -> Result<()> {
    use std::io::Write;
    let path = marker_path(dir);
    let temporary = dir.join(format!("{IMPORT_MARKER_FILE}.tmp"));
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| Error::Io { path, source }
    };
    let mut text = serde_json::to_string(marker).map_err(Error::Payload)?;
    text.push('\n');
    let mut file = std::fs::File::create(&temporary).map_err(io(&temporary))?;
    file.write_all(text.as_bytes()).map_err(io(&temporary))?;
    file.sync_all().map_err(io(&temporary))?;
    drop(file);
    std::fs::rename(&temporary, &path).map_err(io(&path))?;
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io(dir))
}

/// Imports stream `config.stream` into the data directory `dir` (created
/// if missing): appends, in order, every message after the directory's
/// last event, through the last message the stream holds when the import
/// starts. The stream must hold the log whole from seq 1 (an unfiltered
/// mirror), since each event keeps its seq.
pub fn import(dir: impl AsRef<Path>, config: &ImportConfig) -> Result<ImportReport> {
    let dir = dir.as_ref();
    let runtime = super::runtime()?;
    runtime.block_on(import_async(dir, config))
}

async fn import_async(dir: &Path, config: &ImportConfig) -> Result<ImportReport> {
    let name = &config.stream;
    let (stream, info) = super::existing_stream(&config.server, name).await?;
    let created = info
        .created
        .format(&time::format_description::well_known::Rfc3339)
        .map_err(|e| nats_error(format_args!("stream {name}'s creation time"), e))?;
    let source = Marker {
        format: MARKER_FORMAT.to_string(),
        version: MARKER_VERSION,
        server: config.server.clone(),
        stream: name.clone(),
        stream_created: created,
    };

    let log = Log::open(dir, config.options.clone())?;
    let local_last = log.last_seq().unwrap_or(0);
    match read_marker(dir)? {
        Some(marker) => {
            if marker.stream != source.stream || marker.stream_created != source.stream_created {
                return Err(Error::Nats(format!(
                    "{} was imported from stream {} (created {}); refusing to mix in stream {} (created {})",
                    dir.display(),
                    marker.stream,
                    marker.stream_created,
                    source.stream,
                    source.stream_created
                )));
            }
        }
        None if local_last > 0 => {
            return Err(Error::Nats(format!(
                "{} already holds events that were not imported from NATS (no {IMPORT_MARKER_FILE}); \
                 import into a fresh directory",
                dir.display()
            )));
        }
        None => write_marker(dir, &source)?,
    }

    let first = info.state.first_sequence;
    let last = info.state.last_sequence;
    if info.state.messages > 0 && first > local_last + 1 {
        return Err(Error::Nats(format!(
            "stream {name} starts at sequence {first}, but the directory needs {} next: \
             an import needs the stream whole from the log's first event",
            local_last + 1
        )));
    }
    if local_last > 0 {
        // The directory's last event must be the stream's at that seq.
        let message = stream.get_raw_message(local_last).await.map_err(|e| {
            nats_error(
                format_args!("reading message {local_last} of stream {name} to resume after it"),
                e,
            )
        })?;
        let (seq, id) = super::evlog_headers(&message.headers, name, local_last)?;
        let local = log.get(local_last)?;
        if seq != local_last || id != local.id {
            return Err(Error::Nats(format!(
                "{}'s last event is seq {local_last} with id {}, but stream {name} has seq {seq} \
                 with id {id} there: they are not the same log",
                dir.display(),
                local.id
            )));
        }
    }

    let mut reader = StreamReader::open(&stream, name, local_last + 1, last).await?;
    let mut batch = Vec::with_capacity(config.batch_events);
    let mut batch_first = local_last + 1;
    let mut next_seq = local_last + 1;
    let mut imported = 0u64;
    while let Some(message) = reader.next().await? {
        if message.evlog_seq != next_seq || message.stream_seq != next_seq {
            return Err(Error::Nats(format!(
                "stream {name}: message {} carries evlog seq {} where seq {next_seq} was due; \
                 only a stream with every event from seq 1 in order (an unfiltered mirror) imports",
                message.stream_seq, message.evlog_seq
            )));
        }
        let text = std::str::from_utf8(&message.body).map_err(|_| {
            Error::Nats(format!(
                "stream {name}: message {} is not UTF-8 JSON",
                message.stream_seq
            ))
        })?;
        let mut event = crate::json::event_from_json_unchecked(text).map_err(|e| {
            Error::Nats(format!(
                "stream {name}: message {} is not an event: {e}",
                message.stream_seq
            ))
        })?;
        if event.id != Some(message.evlog_id) {
            return Err(Error::Nats(format!(
                "stream {name}: message {}'s body and {} header disagree on the event id",
                message.stream_seq,
                super::HEADER_ID
            )));
        }
        if event
            .event_type()
            .starts_with(crate::subscribe::BOOKKEEPING_TYPE_PREFIX)
        {
            // The source log wrote it for its own bookkeeping; the copy
            // keeps it, so that seqs and consumer positions carry over.
            event = event.bookkeeping();
        }
        batch.push(event);
        next_seq += 1;
        if batch.len() >= config.batch_events {
            imported += append_batch(&log, &mut batch, batch_first)?;
            batch_first = next_seq;
        }
    }
    imported += append_batch(&log, &mut batch, batch_first)?;
    let last_seq = log.last_seq().unwrap_or(0);
    log.close()?;
    Ok(ImportReport { imported, last_seq })
}

/// Appends a batch that must land at `first_seq`.
fn append_batch(log: &Log, batch: &mut Vec<crate::Event>, first_seq: u64) -> Result<u64> {
    if batch.is_empty() {
        return Ok(0);
    }
    let range = log.append_batch(batch)?;
    if range.start != first_seq || range.end - range.start != batch.len() as u64 {
        return Err(Error::Nats(format!(
            "imported events landed at seqs {}..{} instead of from {first_seq} \
             (an id repeated within the log's duplicate window?)",
            range.start, range.end
        )));
    }
    let count = batch.len() as u64;
    batch.clear();
    Ok(count)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marker_round_trips_and_refuses_damage() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(read_marker(dir.path()).unwrap(), None);
        let marker = Marker {
            format: MARKER_FORMAT.into(),
            version: MARKER_VERSION,
            server: "nats://127.0.0.1:4222".into(),
            stream: "EVENTS".into(),
            stream_created: "2026-01-01T00:00:00Z".into(),
        };
        write_marker(dir.path(), &marker).unwrap();
        assert_eq!(read_marker(dir.path()).unwrap(), Some(marker));
        std::fs::write(marker_path(dir.path()), b"{\"format\":").unwrap();
        match read_marker(dir.path()) {
            Err(Error::Corrupt { file, .. }) => assert_eq!(file, marker_path(dir.path())),
            other => panic!("expected Corrupt, got {other:?}"),
        }
        std::fs::write(
            marker_path(dir.path()),
            br#"{"format":"evlog-nats-import","version":2,"server":"","stream":"","stream_created":""}"#,
        )
        .unwrap();
        assert!(matches!(
            read_marker(dir.path()),
            Err(Error::UnsupportedVersion { found: 2, .. })
        ));
    }
}
