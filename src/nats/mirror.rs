//! The mirror: a durable consumer of the log that publishes every event to
//! a JetStream stream exactly once, in order.
//!
//! JetStream is the source of truth for what was shipped: on every
//! (re)connection the mirror reads the stream's last message and resumes
//! after the evlog seq in its header. The local consumer position
//! (`DIR/consumers/<name>.pos`) only trails it, so that retention keeps
//! what the stream does not have yet. Each publish carries the expected
//! last stream sequence, so JetStream refuses any message that would land
//! after another than the mirror believes: a retry after a lost
//! acknowledgement, a stale publish flushed after a reconnection, or a
//! second mirror can never store an event twice. Several publishes are in
//! flight at once (each expecting the sequence of the one before it); the
//! first refusal or timeout drops the rest and the mirror reads the
//! stream's tail again.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use async_nats::jetstream;
use async_nats::HeaderMap;

use super::{ServerDurability, StreamTail};
use crate::error::{Error, Result};
use crate::event::LoggedEvent;
use crate::subscribe::{Filter, BOOKKEEPING_TYPE_PREFIX};
use crate::{Consumer, Log};

/// Durable consumer name the mirror uses when none is configured.
pub const MIRROR_CONSUMER_DEFAULT: &str = "nats-mirror";
/// Publishes awaiting their acknowledgement, by default: enough to keep
/// the connection busy while acknowledgements come back (a loopback round
/// trip is tens of microseconds, a publish a few), few enough that a
/// refusal wastes little work.
pub const PUBLISH_WINDOW_DEFAULT: usize = 256;
/// Upper bound of the publish window: every in-flight message is also held
/// in memory for a retransmission.
const PUBLISH_WINDOW_MAX: usize = 65_536;
const _: () = assert!(PUBLISH_WINDOW_DEFAULT <= PUBLISH_WINDOW_MAX);
/// How long the mirror waits for a new event when it has nothing in
/// flight, before it looks at the stop flag again.
const IDLE_POLL_MS: u64 = 50;
/// How often the consumer position is stored (an fsync): it only pins
/// retention, since JetStream says where to resume.
const COMMIT_INTERVAL_MS: u64 = 1_000;
/// First and longest pause between attempts while the server is down.
const BACKOFF_MIN_MS: u64 = 100;
const BACKOFF_MAX_MS: u64 = 5_000;
/// How long `stop` waits for the mirror thread: its last acknowledgements
/// and a publish timeout, then it gives up on the thread.
const STOP_DEADLINE_MS: u64 = 3 * super::REQUEST_TIMEOUT_MS;

/// What to mirror where. Build with [`MirrorConfig::new`] and the setters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MirrorConfig {
    pub(crate) server: String,
    pub(crate) stream: String,
    pub(crate) subject_prefix: String,
    pub(crate) filter_patterns: Vec<String>,
    pub(crate) consumer_name: String,
    pub(crate) monitor_url: Option<String>,
    pub(crate) publish_window: usize,
}

impl MirrorConfig {
    /// Mirror every event (the log's `evlog.*` bookkeeping included, so
    /// that an import reproduces the log seq for seq) to stream `stream`
    /// on the server at `server` (`nats://host:port`), on subjects
    /// `evlog.<event type>`. The stream is created (file storage, subjects
    /// `<prefix>.>`) if it does not exist.
    pub fn new(server: impl Into<String>, stream: impl Into<String>) -> MirrorConfig {
        MirrorConfig {
            server: server.into(),
            stream: stream.into(),
            subject_prefix: super::SUBJECT_PREFIX_DEFAULT.to_string(),
            filter_patterns: Vec::new(),
            consumer_name: MIRROR_CONSUMER_DEFAULT.to_string(),
            monitor_url: None,
            publish_window: PUBLISH_WINDOW_DEFAULT,
        }
    }

    /// Subjects are `<prefix>.<event type>` (default `evlog`).
    pub fn subject_prefix(mut self, prefix: impl Into<String>) -> MirrorConfig {
        self.subject_prefix = prefix.into();
        self
    }

    /// Mirrors only events whose type matches one of the patterns given
    /// (the rules of [`crate::type_matches`]). A filtered stream cannot be
    /// imported (its evlog seqs have gaps).
    pub fn filter(mut self, pattern: impl Into<String>) -> MirrorConfig {
        self.filter_patterns.push(pattern.into());
        self
    }

    /// The durable consumer's name (default `nats-mirror`); two mirrors of
    /// one log to two streams need two names.
    pub fn consumer_name(mut self, name: impl Into<String>) -> MirrorConfig {
        self.consumer_name = name.into();
        self
    }

    /// The server's HTTP monitoring URL (`http://host:8222`), read once per
    /// connection to check that it syncs every write.
    pub fn monitor_url(mut self, url: impl Into<String>) -> MirrorConfig {
        self.monitor_url = Some(url.into());
        self
    }

    /// Publishes in flight at once (1 to 65 536, default 256).
    pub fn publish_window(mut self, publishes: usize) -> MirrorConfig {
        self.publish_window = publishes.clamp(1, PUBLISH_WINDOW_MAX);
        self
    }

    pub(crate) fn log_filter(&self) -> Filter {
        if self.filter_patterns.is_empty() {
            // Every type: `*` alone matches any dotted name, and the
            // bookkeeping namespace must be named to be delivered.
            return Filter::all()
                .event_type("*")
                .event_type(format!("{BOOKKEEPING_TYPE_PREFIX}*"));
        }
        self.filter_patterns
            .iter()
            .fold(Filter::all(), |filter, p| filter.event_type(p.clone()))
    }

    pub(crate) fn validate(&self) -> Result<()> {
        super::validate_subject_prefix(&self.subject_prefix)?;
        crate::validate_consumer_name(&self.consumer_name)?;
        self.filter_patterns
            .iter()
            .try_for_each(|p| crate::validate_pattern(p))?;
        if self.stream.is_empty()
            || self
                .stream
                .bytes()
                .any(|b| !b.is_ascii_graphic() || b == b'.' || b == b'*' || b == b'>')
        {
            return Err(Error::InvalidEvent(format!(
                "stream name {:?}: printable ASCII without '.', '*' or '>'",
                self.stream
            )));
        }
        Ok(())
    }
}

/// Where the mirror stands, from [`MirrorHandle::status`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct MirrorStatus {
    /// Connected to the server and caught up with the stream's tail.
    pub connected: bool,
    /// Every event up to this seq is in the stream (or filtered out).
    pub shipped_seq: u64,
    /// The log's last seq when the status was taken.
    pub log_last_seq: u64,
    /// Events in the log not yet known to be in the stream:
    /// `log_last_seq - shipped_seq`.
    pub lag: u64,
    /// JetStream's sequence of the last message the mirror knows of.
    pub stream_last_seq: u64,
    /// Messages JetStream acknowledged since the mirror started.
    pub published: u64,
    /// Failed attempts (connection, publish, refusal) since the start.
    pub retries: u64,
    /// The latest failure, until the next success.
    pub last_error: Option<String>,
    /// What the stream and server promise about acknowledged messages
    /// (`None` before the first connection).
    pub durability: Option<ServerDurability>,
}

/// State shared by the mirror thread and its handle.
struct Shared {
    status: Mutex<MirrorStatus>,
    stop: AtomicBool,
}

impl Shared {
    fn update(&self, change: impl FnOnce(&mut MirrorStatus)) {
        // A poisoned lock only means a panic elsewhere mid-update; the
        // numbers are still the best there are.
        let mut status = self.status.lock().unwrap_or_else(|p| p.into_inner());
        change(&mut status);
    }

    fn published(&self) -> u64 {
        self.status
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .published
    }

    fn stopping(&self) -> bool {
        self.stop.load(Ordering::Acquire)
    }
}

/// Starts mirrors; see [`Mirror::start`].
pub struct Mirror;

impl Mirror {
    /// Starts mirroring `log` in the background, on a thread named
    /// `evlog:nats-mirror`. It returns at once (the server may be down: the
    /// mirror retries with backoff while the log keeps accepting appends);
    /// an invalid configuration or an unusable consumer position is an
    /// error here. Stop it with [`MirrorHandle::stop`] before closing the
    /// log.
    pub fn start(log: &Arc<Log>, config: MirrorConfig) -> Result<MirrorHandle> {
        config.validate()?;
        let consumer = log.consumer(&config.consumer_name, config.log_filter())?;
        let shared = Arc::new(Shared {
            status: Mutex::new(MirrorStatus {
                connected: false,
                // Nothing is known shipped before the stream says so.
                shipped_seq: 0,
                log_last_seq: 0,
                lag: 0,
                stream_last_seq: 0,
                published: 0,
                retries: 0,
                last_error: None,
                durability: None,
            }),
            stop: AtomicBool::new(false),
        });
        let (done_tx, done_rx) = crossbeam_channel::bounded(1);
        let thread = {
            let log = Arc::clone(log);
            let shared = Arc::clone(&shared);
            std::thread::Builder::new()
                .name("evlog:nats-mirror".into())
                .spawn(move || {
                    let result = run(&log, consumer, &config, &shared);
                    if let Err(e) = &result {
                        tracing::error!(error = %e, "the NATS mirror stopped");
                        shared.update(|s| {
                            s.connected = false;
                            s.last_error = Some(e.to_string());
                        });
                    }
                    let _ = done_tx.send(());
                    result
                })
                .map_err(|e| super::nats_error("starting the mirror thread", e))?
        };
        Ok(MirrorHandle {
            log: Arc::clone(log),
            shared,
            thread: Some(thread),
            done: done_rx,
        })
    }
}

/// A running mirror. Dropping it stops the mirror too (errors are then
/// only logged).
pub struct MirrorHandle {
    log: Arc<Log>,
    shared: Arc<Shared>,
    thread: Option<JoinHandle<Result<()>>>,
    done: crossbeam_channel::Receiver<()>,
}

impl MirrorHandle {
    /// Where the mirror stands now, lag included.
    pub fn status(&self) -> MirrorStatus {
        let mut status = self
            .shared
            .status
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        status.log_last_seq = self.log.last_seq().unwrap_or(0);
        status.lag = status.log_last_seq.saturating_sub(status.shipped_seq);
        status
    }

    /// Events in the log not yet in the stream.
    pub fn lag(&self) -> u64 {
        self.status().lag
    }

    /// Whether the mirror thread ended (stopped or failed).
    pub fn is_finished(&self) -> bool {
        self.thread.as_ref().is_none_or(|t| t.is_finished())
    }

    /// Waits until every event the log holds now is in the stream, up to
    /// `timeout`; returns whether it got there. Fails when the mirror
    /// stopped on an error.
    pub fn wait_caught_up(&self, timeout: Duration) -> Result<bool> {
        let target = self.log.last_seq().unwrap_or(0);
        let deadline = Instant::now() + timeout;
        loop {
            let status = self.status();
            if status.shipped_seq >= target {
                return Ok(true);
            }
            if self.is_finished() {
                return Err(Error::Nats(format!(
                    "the mirror stopped at seq {}: {}",
                    status.shipped_seq,
                    status.last_error.unwrap_or_default()
                )));
            }
            if Instant::now() >= deadline {
                return Ok(false);
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Stops the mirror: it waits for the acknowledgements of what is in
    /// flight, stores the consumer position and ends. Returns the final
    /// status, or the error that had stopped the mirror.
    pub fn stop(mut self) -> Result<MirrorStatus> {
        self.shutdown()?;
        Ok(self.status())
    }

    fn shutdown(&mut self) -> Result<()> {
        self.shared.stop.store(true, Ordering::Release);
        let Some(thread) = self.thread.take() else {
            return Ok(());
        };
        if self
            .done
            .recv_timeout(Duration::from_millis(STOP_DEADLINE_MS))
            .is_err()
            && !thread.is_finished()
        {
            // Not joined: joining could hang the caller on a stuck server.
            return Err(Error::Nats(format!(
                "the mirror thread did not stop within {STOP_DEADLINE_MS} ms"
            )));
        }
        match thread.join() {
            Ok(result) => result,
            Err(_) => Err(Error::Nats("the mirror thread panicked".into())),
        }
    }
}

impl Drop for MirrorHandle {
    fn drop(&mut self) {
        if let Err(e) = self.shutdown() {
            tracing::warn!(error = %e, "stopping the NATS mirror");
        }
    }
}

/// An event delivered by the consumer and not yet known to be in the
/// stream, encoded once and kept for retransmission.
struct Outgoing {
    seq: u64,
    subject: String,
    headers: HeaderMap,
    body: bytes::Bytes,
    message_id: String,
}

impl Outgoing {
    fn new(prefix: &str, event: &LoggedEvent) -> Outgoing {
        Outgoing {
            seq: event.seq,
            subject: super::subject(prefix, event),
            headers: super::event_headers(event),
            body: super::event_body(event),
            message_id: event.id.to_string(),
        }
    }
}

/// Why a session with the server ended.
enum SessionEnd {
    /// Asked to stop, and nothing is in flight.
    Stopped,
    /// A failure worth retrying after a pause (server down, timeout,
    /// refusal).
    Retry(Error),
}

/// The mirror's state across sessions.
struct State<'a> {
    log: &'a Arc<Log>,
    config: &'a MirrorConfig,
    shared: &'a Shared,
    consumer: Consumer,
    /// Delivered by the consumer, not yet acknowledged by JetStream, in
    /// seq order.
    pending: VecDeque<Outgoing>,
    /// Events up to this seq are in the stream or filtered out: skip them
    /// when delivered.
    shipped_seq: u64,
    /// The evlog seq of the last message known to be in the stream (`None`
    /// before the first look at it).
    stream_has_seq: Option<u64>,
    last_commit: Instant,
}

fn run(log: &Arc<Log>, consumer: Consumer, config: &MirrorConfig, shared: &Shared) -> Result<()> {
    let runtime = super::runtime()?;
    let mut state = State {
        log,
        config,
        shared,
        shipped_seq: consumer.committed(),
        stream_has_seq: None,
        consumer,
        pending: VecDeque::new(),
        last_commit: Instant::now(),
    };
    let result = runtime.block_on(mirror_loop(&mut state));
    // Stored whatever happened: everything acknowledged so far is shipped.
    let committed = state.consumer.commit();
    result.and(committed.map(|_| ()))
}

async fn mirror_loop(state: &mut State<'_>) -> Result<()> {
    let mut backoff_ms = BACKOFF_MIN_MS;
    let mut connection: Option<(async_nats::Client, jetstream::Context)> = None;
    loop {
        if state.shared.stopping() && state.pending.is_empty() {
            return Ok(());
        }
        let published_before = state.shared.published();
        let end = match &connection {
            Some((_, context)) => session(state, context).await?,
            None => match super::connect(&state.config.server).await {
                Ok(client) => {
                    let context =
                        super::jetstream_context(client.clone(), state.config.publish_window);
                    connection = Some((client, context));
                    continue;
                }
                Err(e) => SessionEnd::Retry(e),
            },
        };
        match end {
            SessionEnd::Stopped => return Ok(()),
            SessionEnd::Retry(e) => {
                if state.shared.published() > published_before {
                    // The session shipped something: this is a new
                    // failure, not the same one again.
                    backoff_ms = BACKOFF_MIN_MS;
                }
                tracing::warn!(error = %e, retry_in_ms = backoff_ms, "NATS mirror: will retry");
                state.shared.update(|s| {
                    s.connected = false;
                    s.retries += 1;
                    s.last_error = Some(e.to_string());
                });
                if state.shared.stopping() {
                    // Nothing more can be shipped; what is in flight was
                    // not acknowledged and the next start resumes there.
                    return Ok(());
                }
                sleep_unless_stopped(state.shared, backoff_ms).await;
                backoff_ms = (backoff_ms * 2).min(BACKOFF_MAX_MS);
            }
        }
    }
}

async fn sleep_unless_stopped(shared: &Shared, ms: u64) {
    let deadline = Instant::now() + Duration::from_millis(ms);
    while !shared.stopping() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(IDLE_POLL_MS.min(ms))).await;
    }
}

/// Finds or creates the stream.
async fn open_stream(
    context: &jetstream::Context,
    config: &MirrorConfig,
) -> std::result::Result<jetstream::stream::Stream, Refused> {
    if let Some(stream) = super::find_stream(context, &config.stream)
        .await
        .map_err(Refused::Transient)?
    {
        return Ok(stream);
    }
    context
        .get_or_create_stream(jetstream::stream::Config {
            name: config.stream.clone(),
            subjects: vec![format!("{}.>", config.subject_prefix)],
            storage: jetstream::stream::StorageType::File,
            ..Default::default()
        })
        .await
        .map_err(|e| {
            let permanent = matches!(
                e.kind(),
                jetstream::context::CreateStreamErrorKind::JetStream(_)
                    | jetstream::context::CreateStreamErrorKind::InvalidStreamName
                    | jetstream::context::CreateStreamErrorKind::EmptyStreamName
            );
            let error = super::nats_error(format_args!("creating stream {}", config.stream), e);
            if permanent {
                // The server refused the configuration (for example
                // subjects another stream already takes): retrying cannot help.
                Refused::Permanent(error)
            } else {
                Refused::Transient(error)
            }
        })
}

/// Why the stream could not be opened.
enum Refused {
    Permanent(Error),
    Transient(Error),
}

/// One connection's worth of mirroring: check the stream, read its tail,
/// then publish until a failure or a stop. Returns `Err` only for failures
/// that retrying cannot cure.
async fn session(state: &mut State<'_>, context: &jetstream::Context) -> Result<SessionEnd> {
    let stream = match open_stream(context, state.config).await {
        Ok(stream) => stream,
        Err(Refused::Transient(e)) => return Ok(SessionEnd::Retry(e)),
        Err(Refused::Permanent(e)) => return Err(e),
    };
    let info = stream.cached_info().clone();
    let durability = super::check_durability(&info, state.config.monitor_url.as_deref()).await;
    match &durability {
        ServerDurability::SyncAlways => {}
        ServerDurability::Unsynced(why) | ServerDurability::Unknown(why) => {
            tracing::warn!(stream = %state.config.stream, "NATS mirror: {why}");
        }
    }
    state.shared.update(|s| s.durability = Some(durability));
    let tail = match super::stream_tail(&stream, &state.config.stream).await {
        Ok(tail) => tail,
        Err(e) => return Ok(SessionEnd::Retry(e)),
    };
    resume_after(state, tail)?;
    state.shared.update(|s| {
        s.connected = true;
        s.last_error = None;
        s.stream_last_seq = tail.stream_seq;
        s.shipped_seq = state.shipped_seq;
    });
    publish_loop(state, context, tail.stream_seq).await
}

/// Lines the local state up with the stream's tail: what the stream holds
/// is shipped; a stream that holds more than the log, or another log's
/// events, is refused; a stream that lost messages the mirror had shipped
/// (recreated, or a server that acknowledged unsynced writes and crashed)
/// is filled again from the log.
fn resume_after(state: &mut State<'_>, tail: StreamTail) -> Result<()> {
    let stream = &state.config.stream;
    let log_last = state.log.last_seq().unwrap_or(0);
    if tail.evlog_seq > log_last {
        return Err(Error::Nats(format!(
            "stream {stream} holds events up to seq {} but the log ends at {log_last}: \
             it mirrors another log, or this log lost events",
            tail.evlog_seq
        )));
    }
    if tail.evlog_seq > 0 && state.log.first_seq().is_some_and(|f| f <= tail.evlog_seq) {
        let local = state.log.get(tail.evlog_seq)?;
        if local.id != tail.evlog_id {
            return Err(Error::Nats(format!(
                "stream {stream}'s last message is seq {} with id {}, but this log's event {} has id {}: \
                 the stream mirrors another log",
                tail.evlog_seq, tail.evlog_id, tail.evlog_seq, local.id
            )));
        }
    }
    // What the stream held last time the mirror looked; before the first
    // look, the consumer's position says what an earlier run shipped.
    let known_seq = state
        .stream_has_seq
        .unwrap_or_else(|| state.consumer.committed());
    if tail.evlog_seq < known_seq && tail.evlog_seq < state.shipped_seq {
        tracing::warn!(
            stream = %stream,
            stream_has = tail.evlog_seq,
            shipped = state.shipped_seq,
            "NATS mirror: the stream lacks messages the mirror had shipped \
             (recreated, or its server lost acknowledged writes); shipping them again"
        );
        // The consumer has moved past them: read them from the log and
        // send them before what is pending.
        let filter = state.config.log_filter();
        let mut backfill = VecDeque::new();
        for event in state.log.iter(tail.evlog_seq + 1..=state.shipped_seq)? {
            let event = event?;
            if filter.matches(&event) {
                backfill.push_back(Outgoing::new(&state.config.subject_prefix, &event));
            }
        }
        backfill.append(&mut state.pending);
        state.pending = backfill;
        state.shipped_seq = tail.evlog_seq;
    }
    state.shipped_seq = state.shipped_seq.max(tail.evlog_seq);
    state.stream_has_seq = Some(tail.evlog_seq);
    while state
        .pending
        .front()
        .is_some_and(|o| o.seq <= tail.evlog_seq)
    {
        state.pending.pop_front();
    }
    Ok(())
}

/// A publish awaiting its acknowledgement.
struct InFlight {
    seq: u64,
    /// The stream sequence JetStream must give it.
    stream_seq: u64,
    ack: jetstream::context::PublishAckFuture,
}

async fn publish_loop(
    state: &mut State<'_>,
    context: &jetstream::Context,
    stream_last_seq: u64,
) -> Result<SessionEnd> {
    let window = state.config.publish_window;
    let mut in_flight: VecDeque<InFlight> = VecDeque::with_capacity(window);
    // `pending[..sent]` are in flight.
    let mut sent = 0usize;
    let mut last_stream_seq = stream_last_seq;
    loop {
        // Fill the window: retransmissions first, then new events.
        while in_flight.len() < window && !state.shared.stopping() {
            if sent == state.pending.len() {
                let wait = if in_flight.is_empty() {
                    Duration::from_millis(IDLE_POLL_MS)
                } else {
                    Duration::ZERO
                };
                let Some(event) = state.consumer.next_timeout(wait)? else {
                    break;
                };
                if event.seq <= state.shipped_seq {
                    state.consumer.ack(event.seq)?;
                    continue;
                }
                state
                    .pending
                    .push_back(Outgoing::new(&state.config.subject_prefix, &event));
            }
            let Some(outgoing) = state.pending.get(sent) else {
                break;
            };
            let publish = jetstream::message::PublishMessage::build()
                .payload(outgoing.body.clone())
                .headers(outgoing.headers.clone())
                .message_id(&outgoing.message_id)
                .expected_last_sequence(last_stream_seq);
            match context
                .send_publish(outgoing.subject.clone(), publish)
                .await
            {
                Ok(ack) => {
                    last_stream_seq += 1;
                    in_flight.push_back(InFlight {
                        seq: outgoing.seq,
                        stream_seq: last_stream_seq,
                        ack,
                    });
                    sent += 1;
                }
                Err(e) => {
                    return Ok(SessionEnd::Retry(super::nats_error(
                        format_args!("publishing seq {}", outgoing.seq),
                        e,
                    )))
                }
            }
        }
        let Some(oldest) = in_flight.pop_front() else {
            // Nothing in flight: caught up (or stopping).
            let position = state.consumer.progress().position;
            state.shipped_seq = state.shipped_seq.max(position);
            let shipped = state.shipped_seq;
            state.shared.update(|s| s.shipped_seq = shipped);
            commit_if_due(state, true)?;
            if state.shared.stopping() {
                return Ok(SessionEnd::Stopped);
            }
            continue;
        };
        match oldest.ack.await {
            Ok(ack) if !ack.duplicate && ack.sequence == oldest.stream_seq => {
                let shipped = state.pending.pop_front();
                debug_assert_eq!(shipped.map(|o| o.seq), Some(oldest.seq));
                sent -= 1;
                state.shipped_seq = state.shipped_seq.max(oldest.seq);
                state.stream_has_seq = Some(oldest.seq);
                state.consumer.ack(oldest.seq)?;
                let shipped = state.shipped_seq;
                state.shared.update(|s| {
                    s.shipped_seq = shipped;
                    s.stream_last_seq = ack.sequence;
                    s.published += 1;
                });
                commit_if_due(state, false)?;
            }
            Ok(ack) => {
                // Already stored (a retry of a publish whose acknowledgement
                // was lost) or stored elsewhere than expected: read the
                // tail again rather than guess.
                return Ok(SessionEnd::Retry(Error::Nats(format!(
                    "seq {} was acknowledged as stream sequence {} (duplicate: {}), expected {}; resynchronizing",
                    oldest.seq, ack.sequence, ack.duplicate, oldest.stream_seq
                ))));
            }
            Err(e) => {
                return Ok(SessionEnd::Retry(super::nats_error(
                    format_args!("acknowledgement of seq {}", oldest.seq),
                    e,
                )))
            }
        }
    }
}

/// Stores the consumer position when the interval has passed (or `force`
/// and it moved).
fn commit_if_due(state: &mut State<'_>, force: bool) -> Result<()> {
    let due = state.last_commit.elapsed() >= Duration::from_millis(COMMIT_INTERVAL_MS);
    if due || (force && state.consumer.committed() < state.shipped_seq) {
        state.consumer.commit()?;
        state.last_commit = Instant::now();
    }
    Ok(())
}
