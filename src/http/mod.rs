//! The log's queries over HTTP, a web page that shows them, and a live
//! tail as Server-Sent Events (cargo feature `http`).
//!
//! [`serve`] answers from an open [`Log`] (inside the application that
//! appends; the live tail then follows its subscriptions) or from a
//! [`LogReader`] (a second process over the data directory, as
//! `evlog serve --dir DIR` does; it looks at the directory again before
//! each request and polls it for the live tail). The server runs on its own
//! threads (a tokio runtime named `evlog:http`), so the log's API stays
//! synchronous; queries run on the runtime's blocking pool.
//!
//! ```
//! # fn main() -> evlog::Result<()> {
//! # let dir = tempfile::tempdir().unwrap();
//! use std::sync::Arc;
//! let log = Arc::new(evlog::Log::open(dir.path(), evlog::Options::default())?);
//! let server = evlog::http::serve(
//!     Arc::clone(&log),
//!     "127.0.0.1:0".parse().unwrap(),
//!     evlog::http::ServeOptions::default(),
//! )?;
//! println!("see http://{}/", server.local_addr());
//! server.shutdown()?;
//! # Ok(()) }
//! ```
//!
//! The routes are listed in README.md ("HTTP API and web viewer").

mod api;
mod stream;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use uuid::Uuid;

use crate::metrics::Metrics;
use crate::{
    CausationTree, Error, Events, Filter, IndexStatus, Iter, Log, LogReader, LoggedEvent, Query,
    Result, Start, Stats, Subscription, VerifyReport,
};

/// How long [`Server::shutdown`] waits for open requests (and live tails)
/// to end before it gives up on them.
const SHUTDOWN_WAIT_MS: u64 = 5_000;

/// Most queries running at once; further requests wait for one of these
/// threads. Bounded so that a burst of slow queries (a `verify` of a large
/// log) cannot spawn a thread per request.
const BLOCKING_THREADS_MAX: usize = 16;

/// How [`serve`] serves.
#[derive(Clone, Default)]
pub struct ServeOptions {
    bearer_token: Option<String>,
    worker_threads: Option<usize>,
}

impl std::fmt::Debug for ServeOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The token is a secret: never printed.
        f.debug_struct("ServeOptions")
            .field("bearer_token", &self.bearer_token.as_ref().map(|_| "<set>"))
            .field("worker_threads", &self.worker_threads)
            .finish()
    }
}

impl ServeOptions {
    /// Requires `Authorization: Bearer <token>` (or `?access_token=<token>`,
    /// for the browser's EventSource, which cannot set headers) on every
    /// `/api/` route and `/metrics`. The page itself holds no data and is
    /// served without it.
    pub fn bearer_token(mut self, token: impl Into<String>) -> ServeOptions {
        self.bearer_token = Some(token.into());
        self
    }

    /// Threads that accept and answer connections (default: one per core).
    pub fn worker_threads(mut self, count: usize) -> ServeOptions {
        self.worker_threads = Some(count.max(1));
        self
    }
}

/// What the server answers from.
#[derive(Clone)]
pub struct Source(Arc<dyn View>);

impl From<Arc<Log>> for Source {
    fn from(log: Arc<Log>) -> Source {
        Source(log)
    }
}

impl From<Arc<LogReader>> for Source {
    fn from(reader: Arc<LogReader>) -> Source {
        Source(reader)
    }
}

/// A running server; [`Server::shutdown`] stops it. Dropping it asks it
/// to stop without waiting.
pub struct Server {
    local_addr: SocketAddr,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    stop_streams: Arc<AtomicBool>,
    thread: Option<JoinHandle<std::io::Result<()>>>,
}

impl Server {
    /// The address it listens on (with the port the system chose for
    /// port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Stops accepting, ends the live tails, and waits (up to 5 s) for the
    /// requests in flight.
    pub fn shutdown(mut self) -> Result<()> {
        self.signal_stop();
        let Some(thread) = self.thread.take() else {
            return Ok(());
        };
        let deadline = Instant::now() + Duration::from_millis(SHUTDOWN_WAIT_MS);
        while !thread.is_finished() {
            if Instant::now() >= deadline {
                return Err(Error::Internal(
                    "the HTTP server did not stop within 5 s; its threads are left to end",
                ));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        self.join(thread)
    }

    /// Blocks until the server stops (it stops only on an error of its
    /// listener, or after [`Server::shutdown`] from elsewhere: this is
    /// for a process whose only job is serving).
    pub fn wait(mut self) -> Result<()> {
        match self.thread.take() {
            Some(thread) => self.join(thread),
            None => Ok(()),
        }
    }

    fn join(&self, thread: JoinHandle<std::io::Result<()>>) -> Result<()> {
        match thread.join() {
            Ok(Ok(())) => Ok(()),
            Ok(Err(source)) => Err(Error::Io {
                path: PathBuf::from(self.local_addr.to_string()),
                source,
            }),
            Err(_) => Err(Error::Internal("the HTTP server thread panicked")),
        }
    }

    fn signal_stop(&mut self) {
        self.stop_streams.store(true, Ordering::Release);
        if let Some(shutdown) = self.shutdown.take() {
            // Err: the server already stopped; nothing to tell it.
            let _ = shutdown.send(());
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.signal_stop();
    }
}

/// Serves `source` on `listen` (bind `127.0.0.1:0` for a free port, read
/// it back from [`Server::local_addr`]). Returns once the socket is bound;
/// the server runs on its own threads until [`Server::shutdown`].
pub fn serve(
    source: impl Into<Source>,
    listen: SocketAddr,
    options: ServeOptions,
) -> Result<Server> {
    let Source(view) = source.into();
    let io_error = |source| Error::Io {
        path: PathBuf::from(listen.to_string()),
        source,
    };
    let listener = std::net::TcpListener::bind(listen).map_err(io_error)?;
    listener.set_nonblocking(true).map_err(io_error)?;
    let local_addr = listener.local_addr().map_err(io_error)?;
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    if let Some(threads) = options.worker_threads {
        runtime.worker_threads(threads);
    }
    let runtime = runtime
        .max_blocking_threads(BLOCKING_THREADS_MAX)
        .thread_name("evlog:http")
        .enable_io()
        .enable_time()
        .build()
        .map_err(io_error)?;
    let stop_streams = Arc::new(AtomicBool::new(false));
    let state = api::App {
        view,
        bearer_token: options.bearer_token.map(Arc::from),
        stop_streams: Arc::clone(&stop_streams),
        streams_open: Arc::new(AtomicUsize::new(0)),
    };
    let router = api::router(state);
    let (shutdown_tx, shutdown_rx) = tokio::sync::oneshot::channel::<()>();
    let thread = std::thread::Builder::new()
        .name("evlog:http-server".into())
        .spawn(move || {
            runtime.block_on(async move {
                use axum::serve::ListenerExt;
                let listener = tokio::net::TcpListener::from_std(listener)?.tap_io(|tcp| {
                    // Small JSON answers on kept-alive connections would
                    // otherwise wait for the peer's delayed ACK (40 ms).
                    let _ = tcp.set_nodelay(true);
                });
                axum::serve(listener, router)
                    .with_graceful_shutdown(async move {
                        // Err: the `Server` was dropped; stop too.
                        let _ = shutdown_rx.await;
                    })
                    .await
            })
        })
        .map_err(io_error)?;
    Ok(Server {
        local_addr,
        shutdown: Some(shutdown_tx),
        stop_streams,
        thread: Some(thread),
    })
}

/// What the routes need of a log, the same for a [`Log`] and a
/// [`LogReader`].
trait View: Send + Sync + 'static {
    /// Makes what was appended since visible (a reader looks at the
    /// directory again; an open log sees its appends already).
    fn refresh(&self) -> Result<()>;
    fn query(&self, query: &Query) -> Result<Events>;
    fn get(&self, seq: u64) -> Result<LoggedEvent>;
    fn iter_range(&self, from: u64, through: u64) -> Result<Iter>;
    fn first_seq(&self) -> Option<u64>;
    fn last_seq(&self) -> Option<u64>;
    fn find_by_id(&self, id: Uuid) -> Result<Option<LoggedEvent>>;
    fn causation_chain(&self, id: Uuid) -> Result<Vec<LoggedEvent>>;
    fn descendants(&self, id: Uuid) -> Result<CausationTree>;
    fn stats_window(&self, since_us: Option<i64>, until_us: Option<i64>) -> Result<Stats>;
    fn state_at(&self, entity_type: &str, entity_id: &str, at_us: i64)
        -> Result<serde_json::Value>;
    fn verify(&self) -> Result<VerifyReport>;
    /// [`crate::Log::dry_run_rules`]: evaluates rules, writes nothing.
    fn dry_run_rules(
        &self,
        rules: &[crate::Rule],
        triggers: &[LoggedEvent],
    ) -> Result<Vec<crate::rules::DryRunReport>>;
    fn metrics(&self) -> Result<Metrics>;
    fn index_status(&self) -> IndexStatus;
    fn dir(&self) -> &Path;
    /// A live subscription, when this view can subscribe (an open log);
    /// `None` for a reader, which polls instead.
    fn subscribe(&self, filter: Filter, start: Start) -> Option<Result<Subscription>>;
    /// A reader over a directory another process may append to.
    fn read_only(&self) -> bool;
}

macro_rules! view_common {
    () => {
        fn query(&self, query: &Query) -> Result<Events> {
            self.query(query)
        }
        fn get(&self, seq: u64) -> Result<LoggedEvent> {
            self.get(seq)
        }
        fn iter_range(&self, from: u64, through: u64) -> Result<Iter> {
            self.iter(from..=through)
        }
        fn first_seq(&self) -> Option<u64> {
            self.first_seq()
        }
        fn last_seq(&self) -> Option<u64> {
            self.last_seq()
        }
        fn find_by_id(&self, id: Uuid) -> Result<Option<LoggedEvent>> {
            self.find_by_id(id)
        }
        fn causation_chain(&self, id: Uuid) -> Result<Vec<LoggedEvent>> {
            self.causation_chain(id)
        }
        fn descendants(&self, id: Uuid) -> Result<CausationTree> {
            self.descendants(id)
        }
        fn stats_window(&self, since_us: Option<i64>, until_us: Option<i64>) -> Result<Stats> {
            match (since_us, until_us) {
                (Some(since), Some(until)) => self.stats(since..until),
                (Some(since), None) => self.stats(since..),
                (None, Some(until)) => self.stats(..until),
                (None, None) => self.stats(..),
            }
        }
        fn state_at(
            &self,
            entity_type: &str,
            entity_id: &str,
            at_us: i64,
        ) -> Result<serde_json::Value> {
            self.state_at(entity_type, entity_id, at_us)
        }
        fn verify(&self) -> Result<VerifyReport> {
            self.verify()
        }
        fn index_status(&self) -> IndexStatus {
            self.index_status()
        }
        fn dir(&self) -> &Path {
            self.dir()
        }
    };
}

impl View for Log {
    fn refresh(&self) -> Result<()> {
        Ok(())
    }
    fn dry_run_rules(
        &self,
        rules: &[crate::Rule],
        triggers: &[LoggedEvent],
    ) -> Result<Vec<crate::rules::DryRunReport>> {
        self.dry_run_rules(rules, triggers)
    }
    fn metrics(&self) -> Result<Metrics> {
        Metrics::of_log(self)
    }
    fn subscribe(&self, filter: Filter, start: Start) -> Option<Result<Subscription>> {
        Some(self.subscribe(filter, start))
    }
    fn read_only(&self) -> bool {
        false
    }
    view_common!();
}

impl View for LogReader {
    fn refresh(&self) -> Result<()> {
        // A data directory that disappeared under the reader: say so
        // rather than keep answering from the files still mapped.
        let dir = self.dir();
        if !dir.is_dir() {
            return Err(Error::NoDataDirectory {
                path: dir.to_path_buf(),
            });
        }
        self.refresh().map(|_| ())
    }
    fn metrics(&self) -> Result<Metrics> {
        Metrics::of_reader(self)
    }
    fn dry_run_rules(
        &self,
        rules: &[crate::Rule],
        triggers: &[LoggedEvent],
    ) -> Result<Vec<crate::rules::DryRunReport>> {
        self.dry_run_rules(rules, triggers, crate::rules::DEPTH_LIMIT_DEFAULT)
    }
    fn subscribe(&self, _filter: Filter, _start: Start) -> Option<Result<Subscription>> {
        None
    }
    fn read_only(&self) -> bool {
        true
    }
    view_common!();
}
