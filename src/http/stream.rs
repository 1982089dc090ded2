//! `/api/stream`: the live tail as Server-Sent Events.
//!
//! Each event is sent with `id: <seq>`, so a client that reconnects with
//! `Last-Event-ID` resumes right after the last event it received: the
//! feed is a cursor over sequence numbers (a subscription of the open log,
//! or a poll of a reader's directory), so nothing is skipped or repeated.
//! One thread per stream feeds a bounded channel; a slow client slows its
//! own thread only.

use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Query as UrlQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use tokio::sync::mpsc;

use super::api::{last_event_id, ApiError, App, Params};
use super::View;
use crate::json::event_to_json;
use crate::{Error, Filter, LoggedEvent, Start, Subscription};

/// Most live tails open at once; one more is refused with 503 (each holds
/// a thread).
pub(super) const STREAMS_MAX: usize = 64;
/// Events queued for one client before its feeding thread waits.
const STREAM_QUEUE_EVENTS: usize = 256;
/// How long a feeding thread waits for an event before it looks whether
/// its client left or the server stops.
const FEED_WAIT_MS: u64 = 100;
/// How often a reader's feed looks at the directory for new events: the
/// live tail's delay over a directory another process appends to.
const READER_POLL_INTERVAL_MS: u64 = 50;
/// A comment line this often keeps proxies from closing an idle stream and
/// lets the server notice a client that left.
const KEEP_ALIVE_MS: u64 = 5_000;

pub(super) async fn stream(
    State(app): State<App>,
    headers: HeaderMap,
    query: Result<UrlQuery<Vec<(String, String)>>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let prepared = Params::from(query, &["type", "entity", "after"]).and_then(|params| {
        let mut filter = Filter::all();
        if let Some(pattern) = params.type_pattern()? {
            filter = filter.event_type(pattern);
        }
        if let Some((entity_type, entity_id)) = params.entity()? {
            filter = filter.entity(entity_type, entity_id);
        }
        // The header (a browser's reconnect) wins over the parameter (the
        // first connect of a client that knows where it stopped).
        let after = match last_event_id(&headers)? {
            Some(seq) => Some(seq),
            None => params.seq("after")?,
        };
        Ok((filter, after))
    });
    let (filter, after) = match prepared {
        Ok(p) => p,
        Err(e) => return e.into_response(),
    };
    let open = app.streams_open.fetch_add(1, Ordering::AcqRel);
    let guard = StreamSlot(Arc::clone(&app.streams_open));
    if open >= STREAMS_MAX {
        return ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("{STREAMS_MAX} live tails are open; try again later"),
        )
        .into_response();
    }
    let view = Arc::clone(&app.view);
    // Where the feed starts is settled before the answer begins, so that
    // an event appended right after the client connected is delivered.
    let start = tokio::task::spawn_blocking(move || -> crate::Result<_> {
        view.refresh()?;
        let start = match after {
            Some(after) => Start::Seq(after.saturating_add(1)),
            None => Start::End,
        };
        let source = match view.subscribe(filter.clone(), start) {
            Some(subscription) => Source::Subscription(Box::new(subscription?)),
            None => Source::Poll {
                next_seq: match after {
                    Some(after) => after.saturating_add(1),
                    None => view.last_seq().unwrap_or(0) + 1,
                },
                filter,
            },
        };
        Ok((view, source))
    })
    .await;
    let (view, source) = match start {
        Ok(Ok(started)) => started,
        Ok(Err(e)) => return ApiError::from(e).into_response(),
        Err(_) => {
            return ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "the stream's thread panicked".into(),
            )
            .into_response()
        }
    };
    let (tx, rx) = mpsc::channel(STREAM_QUEUE_EVENTS);
    let stop = Arc::clone(&app.stop_streams);
    let spawned = std::thread::Builder::new()
        .name("evlog:http-sse".into())
        .spawn(move || {
            let _slot = guard;
            let feed = Feed { tx, stop };
            if let Err(e) = feed.run(&*view, source) {
                feed.send(SseEvent::default().event("error").data(e.to_string()));
            }
        });
    if let Err(e) = spawned {
        return ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("cannot start the stream's thread: {e}"),
        )
        .into_response();
    }
    let events = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|event| (Ok::<_, Infallible>(event), rx))
    });
    Sse::new(events)
        .keep_alive(KeepAlive::new().interval(Duration::from_millis(KEEP_ALIVE_MS)))
        .into_response()
}

/// Counts an open stream until dropped.
struct StreamSlot(Arc<AtomicUsize>);

impl Drop for StreamSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Where a stream's events come from.
enum Source {
    /// An open log's subscription (it delivers durable events).
    Subscription(Box<Subscription>),
    /// A reader's directory, looked at again from `next_seq`.
    Poll { next_seq: u64, filter: Filter },
}

struct Feed {
    tx: mpsc::Sender<SseEvent>,
    stop: Arc<AtomicBool>,
}

impl Feed {
    /// Whether the feed should end: the client left or the server stops.
    fn over(&self) -> bool {
        self.tx.is_closed() || self.stop.load(Ordering::Acquire)
    }

    /// Queues `event`, waiting while the client's queue is full; false
    /// once the client left or the server stops.
    fn send(&self, mut event: SseEvent) -> bool {
        loop {
            match self.tx.try_send(event) {
                Ok(()) => return true,
                Err(mpsc::error::TrySendError::Closed(_)) => return false,
                Err(mpsc::error::TrySendError::Full(back)) => {
                    if self.stop.load(Ordering::Acquire) {
                        return false;
                    }
                    event = back;
                    std::thread::sleep(Duration::from_millis(10));
                }
            }
        }
    }

    fn send_event(&self, event: &LoggedEvent) -> bool {
        self.send(
            SseEvent::default()
                .id(event.seq.to_string())
                .data(event_to_json(event).get()),
        )
    }

    fn run(&self, view: &dyn View, source: Source) -> crate::Result<()> {
        match source {
            Source::Subscription(mut subscription) => {
                while !self.over() {
                    match subscription.next_timeout(Duration::from_millis(FEED_WAIT_MS)) {
                        Ok(Some(event)) => {
                            if !self.send_event(&event) {
                                return Ok(());
                            }
                        }
                        Ok(None) => {}
                        Err(Error::Closed) => return Ok(()),
                        Err(e) => return Err(e),
                    }
                }
                Ok(())
            }
            Source::Poll { next_seq, filter } => self.poll(view, &filter, next_seq),
        }
    }

    /// A reader cannot subscribe: it looks at the directory again every
    /// `READER_POLL_INTERVAL_MS` and sends what appeared.
    fn poll(&self, view: &dyn View, filter: &Filter, mut next_seq: u64) -> crate::Result<()> {
        while !self.over() {
            view.refresh()?;
            let last = view.last_seq().unwrap_or(0);
            if next_seq <= last {
                for event in view.iter_range(next_seq, last)? {
                    let event = event?;
                    next_seq = event.seq + 1;
                    if filter.matches(&event) && !self.send_event(&event) {
                        return Ok(());
                    }
                }
            } else {
                std::thread::sleep(Duration::from_millis(READER_POLL_INTERVAL_MS));
            }
        }
        Ok(())
    }
}
