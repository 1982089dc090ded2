//! Mirror the log to a NATS JetStream stream, import a stream back into a
//! fresh data directory, and prove the two equal (feature `nats`).
//!
//! The API is synchronous like the rest of evlog: each call runs its own
//! tokio runtime (the mirror on a thread named `evlog:nats-mirror`), so the
//! core library never depends on an async runtime.
//!
//! One message per event, in sequence order, on subject
//! `<prefix>.<event type>`. The body is the event's JSON object exactly as
//! `evlog replay` prints it ([`crate::json::event_to_json`]), with header
//! `Content-Type: application/json`; the headers `Evlog-Seq`, `Evlog-Id`,
//! and when the event has them `Evlog-Correlation-Id`,
//! `Evlog-Causation-Id` and `traceparent` let a NATS consumer route on them
//! without parsing the body. `Nats-Msg-Id` is the event id (JetStream's
//! duplicate window drops a repeat) and `Nats-Expected-Last-Sequence` the
//! stream sequence the mirror believes is last (JetStream refuses the
//! message if anything else got in first), so a restarted or retried
//! mirror never stores an event twice.
//!
//! ```no_run
//! use std::sync::Arc;
//! use evlog::nats::{Mirror, MirrorConfig};
//! # fn main() -> evlog::Result<()> {
//! let log = Arc::new(evlog::Log::open("events", evlog::Options::default())?);
//! let mirror = Mirror::start(&log, MirrorConfig::new("nats://127.0.0.1:4222", "EVENTS"))?;
//! log.append(evlog::Event::new("task.created"))?;
//! println!("lag: {}", mirror.status().lag);
//! mirror.stop()?;
//! # Ok(()) }
//! ```

mod import;
mod mirror;
mod verify;

use std::time::Duration;

use async_nats::jetstream;
use async_nats::HeaderMap;

use crate::error::{Error, Result};
use crate::event::LoggedEvent;

pub use import::{
    import, ImportConfig, ImportReport, IMPORT_BATCH_EVENTS_DEFAULT, IMPORT_MARKER_FILE,
};
pub use mirror::{
    Mirror, MirrorConfig, MirrorHandle, MirrorStatus, MIRROR_CONSUMER_DEFAULT,
    PUBLISH_WINDOW_DEFAULT,
};
pub use verify::{verify, RangeDifference, VerifyConfig, VerifyReport, RANGE_EVENTS_DEFAULT};

/// Header carrying the event's sequence number in the source log.
pub const HEADER_SEQ: &str = "Evlog-Seq";
/// Header carrying the event id (a UUID, hyphenated lowercase).
pub const HEADER_ID: &str = "Evlog-Id";
/// Header carrying the correlation id, when the event has one.
pub const HEADER_CORRELATION_ID: &str = "Evlog-Correlation-Id";
/// Header carrying the causation id, when the event has one.
pub const HEADER_CAUSATION_ID: &str = "Evlog-Causation-Id";
/// Header carrying the W3C trace context, when the event has one (the
/// standard header name, so that tracing-aware NATS consumers pick it up).
pub const HEADER_TRACEPARENT: &str = "traceparent";
/// The body's media type, in header `Content-Type`.
pub const BODY_CONTENT_TYPE: &str = "application/json";
/// Subject prefix used when none is configured.
pub const SUBJECT_PREFIX_DEFAULT: &str = "evlog";

/// How long one JetStream API request or publish acknowledgement may take
/// before it counts as failed: long enough for a server busy syncing to
/// disk, short enough that a dead server is noticed and retried promptly.
const REQUEST_TIMEOUT_MS: u64 = 5_000;
/// How long connecting to a server may take before it counts as down.
const CONNECT_TIMEOUT_MS: u64 = 2_000;
/// How long a stream read waits for its next message before giving up: a
/// stream read only asks for messages the stream said it holds, so a long
/// silence means the server went away.
const READ_IDLE_TIMEOUT_MS: u64 = 10_000;

fn nats_error(what: impl std::fmt::Display, error: impl std::fmt::Display) -> Error {
    Error::Nats(format!("{what}: {error}"))
}

/// A multi-threaded runtime with one worker: the client's connection task
/// runs on the worker while the caller's future (which may block briefly
/// on the log) runs on the calling thread.
fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("evlog:nats-io")
        .enable_all()
        .build()
        .map_err(|e| nats_error("starting the NATS runtime", e))
}

async fn connect(server: &str) -> Result<async_nats::Client> {
    async_nats::ConnectOptions::new()
        .connection_timeout(Duration::from_millis(CONNECT_TIMEOUT_MS))
        .request_timeout(Some(Duration::from_millis(REQUEST_TIMEOUT_MS)))
        .connect(server)
        .await
        .map_err(|e| nats_error(format_args!("connecting to {server}"), e))
}

fn jetstream_context(client: async_nats::Client, ack_inflight_max: usize) -> jetstream::Context {
    jetstream::ContextBuilder::new()
        .timeout(Duration::from_millis(REQUEST_TIMEOUT_MS))
        .max_ack_inflight(ack_inflight_max)
        .backpressure_on_inflight(true)
        .build(client)
}

/// Reads the stream `name`, or `None` when the server has no such stream.
async fn find_stream(
    context: &jetstream::Context,
    name: &str,
) -> Result<Option<jetstream::stream::Stream>> {
    match context.get_stream(name).await {
        Ok(stream) => Ok(Some(stream)),
        Err(e) => match e.kind() {
            jetstream::context::GetStreamErrorKind::JetStream(js)
                if js.code() == 404
                    || js.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND =>
            {
                Ok(None)
            }
            _ => Err(nats_error(format_args!("reading stream {name}"), e)),
        },
    }
}

/// Connects to `server` and reads the stream `name` and its information,
/// for the calls that need it to exist (import, verify).
async fn existing_stream(
    server: &str,
    name: &str,
) -> Result<(jetstream::stream::Stream, jetstream::stream::Info)> {
    let client = connect(server).await?;
    let context = jetstream_context(client, 1);
    let stream = find_stream(&context, name)
        .await?
        .ok_or_else(|| Error::Nats(format!("the server has no stream {name}")))?;
    let info = stream
        .get_info()
        .await
        .map_err(|e| nats_error(format_args!("reading stream {name}"), e))?;
    Ok((stream, info))
}

/// The last message of a stream, as the mirror and import need it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct StreamTail {
    /// JetStream's sequence number of the last message (0: empty stream).
    stream_seq: u64,
    /// The evlog sequence number in that message's header (0: empty).
    evlog_seq: u64,
    /// That message's event id (nil when empty).
    evlog_id: uuid::Uuid,
}

/// Asks JetStream for the stream's last message and reads its evlog
/// headers. A stream whose last message is gone (purged) or was not
/// written by a mirror is an error: what was shipped cannot be known.
async fn stream_tail(stream: &jetstream::stream::Stream, name: &str) -> Result<StreamTail> {
    let info = stream
        .get_info()
        .await
        .map_err(|e| nats_error(format_args!("reading stream {name}"), e))?;
    let last = info.state.last_sequence;
    if last == 0 {
        return Ok(StreamTail {
            stream_seq: 0,
            evlog_seq: 0,
            evlog_id: uuid::Uuid::nil(),
        });
    }
    let message = stream.get_raw_message(last).await.map_err(|e| {
        nats_error(
            format_args!(
                "reading the last message (stream sequence {last}) of stream {name}; \
                 a purged stream cannot tell what was shipped"
            ),
            e,
        )
    })?;
    let (evlog_seq, evlog_id) = evlog_headers(&message.headers, name, last)?;
    Ok(StreamTail {
        stream_seq: last,
        evlog_seq,
        evlog_id,
    })
}

/// The `Evlog-Seq` and `Evlog-Id` headers of the message at `stream_seq`.
fn evlog_headers(headers: &HeaderMap, stream: &str, stream_seq: u64) -> Result<(u64, uuid::Uuid)> {
    let header = |name: &str| {
        headers.get(name).map(|v| v.as_str()).ok_or_else(|| {
            Error::Nats(format!(
                "message {stream_seq} of stream {stream} has no {name} header: \
                 it was not published by an evlog mirror"
            ))
        })
    };
    let seq = header(HEADER_SEQ)?;
    let seq = seq.parse::<u64>().map_err(|_| {
        Error::Nats(format!(
            "message {stream_seq} of stream {stream}: {HEADER_SEQ} {seq:?} is not a sequence number"
        ))
    })?;
    let id = header(HEADER_ID)?;
    let id = uuid::Uuid::parse_str(id).map_err(|_| {
        Error::Nats(format!(
            "message {stream_seq} of stream {stream}: {HEADER_ID} {id:?} is not a UUID"
        ))
    })?;
    Ok((seq, id))
}

/// One message read back from a stream.
struct StreamMessage {
    stream_seq: u64,
    evlog_seq: u64,
    evlog_id: uuid::Uuid,
    body: bytes::Bytes,
}

/// Reads a stream's messages in order, from `start_seq` through the last
/// message the stream held when the reader was opened, through an ordered
/// (ephemeral, flow-controlled) JetStream consumer.
struct StreamReader {
    name: String,
    messages: Option<jetstream::consumer::pull::Ordered>,
    /// The stream's last sequence when the reader opened: the reader ends
    /// after it.
    end_seq: u64,
}

impl StreamReader {
    async fn open(
        stream: &jetstream::stream::Stream,
        name: &str,
        start_seq: u64,
        end_seq: u64,
    ) -> Result<StreamReader> {
        if start_seq > end_seq {
            return Ok(StreamReader {
                name: name.to_string(),
                messages: None,
                end_seq,
            });
        }
        let consumer = stream
            .create_consumer(jetstream::consumer::pull::OrderedConfig {
                deliver_policy: jetstream::consumer::DeliverPolicy::ByStartSequence {
                    start_sequence: start_seq,
                },
                ..Default::default()
            })
            .await
            .map_err(|e| nats_error(format_args!("reading stream {name}"), e))?;
        let messages = consumer
            .messages()
            .await
            .map_err(|e| nats_error(format_args!("reading stream {name}"), e))?;
        Ok(StreamReader {
            name: name.to_string(),
            messages: Some(messages),
            end_seq,
        })
    }

    /// The next message, or `None` after the end.
    async fn next(&mut self) -> Result<Option<StreamMessage>> {
        use futures_util::StreamExt;
        let Some(messages) = self.messages.as_mut() else {
            return Ok(None);
        };
        let name = &self.name;
        let next =
            tokio::time::timeout(Duration::from_millis(READ_IDLE_TIMEOUT_MS), messages.next())
                .await
                .map_err(|_| {
                    Error::Nats(format!(
                        "reading stream {name}: no message for {READ_IDLE_TIMEOUT_MS} ms"
                    ))
                })?;
        let message = match next {
            Some(Ok(message)) => message,
            Some(Err(e)) => return Err(nats_error(format_args!("reading stream {name}"), e)),
            None => {
                return Err(Error::Nats(format!(
                    "reading stream {name}: it ended early"
                )))
            }
        };
        let stream_seq = message
            .info()
            .map_err(|e| nats_error(format_args!("reading stream {name}"), e))?
            .stream_sequence;
        let empty = HeaderMap::new();
        let headers = message.message.headers.as_ref().unwrap_or(&empty);
        let (evlog_seq, evlog_id) = evlog_headers(headers, name, stream_seq)?;
        if stream_seq >= self.end_seq {
            self.messages = None;
        }
        Ok(Some(StreamMessage {
            stream_seq,
            evlog_seq,
            evlog_id,
            body: message.message.payload.clone(),
        }))
    }
}

/// The subject of an event: `<prefix>.<event type>`.
fn subject(prefix: &str, event: &LoggedEvent) -> String {
    let mut subject = String::with_capacity(prefix.len() + 1 + event.event_type.len());
    subject.push_str(prefix);
    subject.push('.');
    subject.push_str(&event.event_type);
    subject
}

/// The headers of an event's message (without the publish-control ones).
fn event_headers(event: &LoggedEvent) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert("Content-Type", BODY_CONTENT_TYPE);
    headers.insert(HEADER_SEQ, event.seq.to_string());
    headers.insert(HEADER_ID, event.id.to_string());
    if let Some(id) = event.correlation_id {
        headers.insert(HEADER_CORRELATION_ID, id.to_string());
    }
    if let Some(id) = event.causation_id {
        headers.insert(HEADER_CAUSATION_ID, id.to_string());
    }
    if let Some(traceparent) = &event.traceparent {
        headers.insert(HEADER_TRACEPARENT, traceparent.as_str());
    }
    headers
}

/// The body of an event's message: its `evlog replay` JSON line.
fn event_body(event: &LoggedEvent) -> bytes::Bytes {
    bytes::Bytes::from(crate::json::event_to_json(event).get().to_owned())
}

/// Checks that a subject prefix is one or more valid NATS subject tokens
/// without wildcards (it is also the stream's subject filter `<prefix>.>`).
fn validate_subject_prefix(prefix: &str) -> Result<()> {
    let valid = !prefix.is_empty()
        && prefix.split('.').all(|token| {
            !token.is_empty()
                && token != "*"
                && token != ">"
                && token
                    .bytes()
                    .all(|b| b.is_ascii_graphic() && b != b'*' && b != b'>')
        });
    if valid {
        Ok(())
    } else {
        Err(Error::InvalidEvent(format!(
            "subject prefix {prefix:?}: dot-separated non-empty tokens of printable ASCII without '*' or '>'"
        )))
    }
}

/// What the server and stream promise about an acknowledged write.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ServerDurability {
    /// The server fsyncs every message before acknowledging it
    /// (`jetstream { sync_interval: always }`) and the stream stores to
    /// file with synchronous persistence.
    SyncAlways,
    /// An acknowledged write may be lost in a power cut; the text says
    /// why and how to fix it.
    Unsynced(String),
    /// The stream's own settings are fine but the server's sync setting
    /// could not be read (no monitoring URL given, or it did not answer).
    Unknown(String),
}

/// How to make acknowledgements durable, for the warnings.
const SYNC_ALWAYS_ADVICE: &str = "set `jetstream { sync_interval: always }` in the nats-server \
     configuration file (the default syncs every 2 minutes, so a power cut loses acknowledged events)";

/// Reads the stream's configuration and, when `monitor_url` is given, the
/// server's JetStream settings from its monitoring endpoint (`/varz`), and
/// says whether an acknowledged message is on disk.
async fn check_durability(
    info: &jetstream::stream::Info,
    monitor_url: Option<&str>,
) -> ServerDurability {
    use jetstream::stream::{PersistenceMode, StorageType};
    let name = &info.config.name;
    if info.config.storage == StorageType::Memory {
        return ServerDurability::Unsynced(format!(
            "stream {name} stores in memory: a server restart loses it; create it with file storage"
        ));
    }
    if info.config.persist_mode == Some(PersistenceMode::Async) {
        return ServerDurability::Unsynced(format!(
            "stream {name} has persist_mode async: the server acknowledges before it writes; \
             use the default persist mode"
        ));
    }
    let Some(url) = monitor_url else {
        return ServerDurability::Unknown(format!(
            "cannot tell whether the server syncs each write (give its monitoring URL to check); \
             unless it does, {SYNC_ALWAYS_ADVICE}"
        ));
    };
    match read_varz(url).await {
        Ok(varz) => {
            let config = varz.get("jetstream").and_then(|j| j.get("config"));
            let sync_always = config
                .and_then(|c| c.get("sync_always"))
                .and_then(|v| v.as_bool())
                .unwrap_or(false);
            if sync_always {
                ServerDurability::SyncAlways
            } else {
                let interval_s = config
                    .and_then(|c| c.get("sync_interval"))
                    .and_then(|v| v.as_u64())
                    .map(|ns| ns / 1_000_000_000);
                ServerDurability::Unsynced(format!(
                    "the server acknowledges writes it has not synced (sync interval {}); \
                     {SYNC_ALWAYS_ADVICE}",
                    interval_s.map_or("default".to_string(), |s| format!("{s} s"))
                ))
            }
        }
        Err(e) => ServerDurability::Unknown(format!(
            "could not read the server's settings from {url}: {e}; unless the server syncs each \
             write, {SYNC_ALWAYS_ADVICE}"
        )),
    }
}

/// Longest `/varz` answer read: the document is a few kilobytes.
const VARZ_BYTES_MAX: u64 = 1 << 20;

/// GET `<url>/varz` over plain HTTP/1.0 (the monitoring port speaks it;
/// no HTTP client dependency for one request).
async fn read_varz(url: &str) -> std::result::Result<serde_json::Value, String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| "only http:// monitoring URLs are supported".to_string())?;
    let authority = rest.split('/').next().unwrap_or(rest);
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(authority)
            .await
            .map_err(|e| e.to_string())?;
        let request = format!("GET /varz HTTP/1.0\r\nHost: {authority}\r\n\r\n");
        stream
            .write_all(request.as_bytes())
            .await
            .map_err(|e| e.to_string())?;
        let mut response = Vec::new();
        stream
            .take(VARZ_BYTES_MAX)
            .read_to_end(&mut response)
            .await
            .map_err(|e| e.to_string())?;
        Ok::<_, String>(response)
    };
    let response = tokio::time::timeout(Duration::from_millis(REQUEST_TIMEOUT_MS), exchange)
        .await
        .map_err(|_| "timed out".to_string())??;
    let split = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| "not an HTTP response".to_string())?;
    if !response.starts_with(b"HTTP/1.") || !response[..split].windows(5).any(|w| w == b" 200 ") {
        return Err("the monitoring endpoint did not answer 200".to_string());
    }
    serde_json::from_slice(&response[split + 4..]).map_err(|e| format!("bad /varz JSON: {e}"))
}

/// What a stream holds, from [`stream_status`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct StreamStatus {
    /// Messages in the stream.
    pub messages: u64,
    /// JetStream's sequence of its last message (0: empty).
    pub last_stream_seq: u64,
    /// The evlog seq of its last message (0: empty): the mirror has
    /// shipped every event up to it.
    pub last_evlog_seq: u64,
    /// What the stream and server promise about acknowledged messages.
    pub durability: ServerDurability,
}

/// Reads what stream `stream` on `server` holds (for `evlog nats status`),
/// and checks its durability (the server's too, given its monitoring URL).
pub fn stream_status(
    server: &str,
    stream: &str,
    monitor_url: Option<&str>,
) -> Result<StreamStatus> {
    let runtime = runtime()?;
    runtime.block_on(async {
        let client = connect(server).await?;
        let context = jetstream_context(client, 1);
        let handle = find_stream(&context, stream)
            .await?
            .ok_or_else(|| Error::Nats(format!("the server has no stream {stream}")))?;
        let info = handle
            .get_info()
            .await
            .map_err(|e| nats_error(format_args!("reading stream {stream}"), e))?;
        let tail = stream_tail(&handle, stream).await?;
        Ok(StreamStatus {
            messages: info.state.messages,
            last_stream_seq: tail.stream_seq,
            last_evlog_seq: tail.evlog_seq,
            durability: check_durability(&info, monitor_url).await,
        })
    })
}

/// FNV-1a, 64 bits: a stable hash (the same in every build and process)
/// for verify's range summaries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Fnv64(u64);

impl Fnv64 {
    const OFFSET_BASIS: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;

    fn new() -> Fnv64 {
        Fnv64(Self::OFFSET_BASIS)
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 ^= u64::from(b);
            self.0 = self.0.wrapping_mul(Self::PRIME);
        }
    }
}

/// The hash of one message in verify: its evlog seq and body.
fn message_hash(seq: u64, body: &[u8]) -> u64 {
    let mut hash = Fnv64::new();
    hash.write(&seq.to_le_bytes());
    hash.write(&(body.len() as u64).to_le_bytes());
    hash.write(body);
    hash.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subject_prefix_validation_rejects_wildcards_and_empty_tokens() {
        assert!(validate_subject_prefix("evlog").is_ok());
        assert!(validate_subject_prefix("a.b-c_d").is_ok());
        for bad in ["", ".", "a.", ".a", "a..b", "a.*", "a.>", "a b", "a*b"] {
            assert!(validate_subject_prefix(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn fnv_matches_the_published_test_vectors() {
        let hash = |bytes: &[u8]| {
            let mut h = Fnv64::new();
            h.write(bytes);
            h.0
        };
        assert_eq!(hash(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(hash(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(hash(b"foobar"), 0x8594_4171_f739_67e8);
    }

    #[test]
    fn message_hash_depends_on_seq_and_body() {
        assert_ne!(message_hash(1, b"x"), message_hash(2, b"x"));
        assert_ne!(message_hash(1, b"x"), message_hash(1, b"y"));
        assert_eq!(message_hash(7, b"xyz"), message_hash(7, b"xyz"));
    }

    #[test]
    fn headers_carry_the_event_identity() {
        let event = LoggedEvent {
            seq: 42,
            id: uuid::Uuid::from_u128(1),
            event_type: "task.created".into(),
            timestamp_us: 0,
            correlation_id: Some(uuid::Uuid::from_u128(2)),
            causation_id: None,
            entity: None,
            actor: None,
            session: None,
            priority: crate::Priority::default(),
            traceparent: Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into()),
            metadata: Default::default(),
            payload: crate::Payload::Empty,
        };
        let headers = event_headers(&event);
        assert_eq!(
            evlog_headers(&headers, "S", 1).unwrap(),
            (42, uuid::Uuid::from_u128(1))
        );
        assert_eq!(
            headers.get(HEADER_CORRELATION_ID).unwrap().as_str(),
            uuid::Uuid::from_u128(2).to_string()
        );
        assert!(headers.get(HEADER_CAUSATION_ID).is_none());
        assert_eq!(subject("p.q", &event), "p.q.task.created");
        let body: serde_json::Value = serde_json::from_slice(&event_body(&event)).unwrap();
        assert_eq!(body["seq"], 42);
    }
}
