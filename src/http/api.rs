//! The routes: JSON answers, JSON errors, the page's assets.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize};
use std::sync::Arc;

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query as UrlQuery, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde::Serialize;
use serde_json::value::RawValue;
use uuid::Uuid;

use super::View;
use crate::json::{event_to_json, format_timestamp, parse_timestamp};
use crate::{validate_pattern, Error, LoggedEvent, Query};

/// Events a list answers when `limit` is not given.
const LIST_LIMIT_DEFAULT: usize = 100;
/// Most events one list answers: a page of the viewer is far smaller, and
/// a larger `limit` is clamped to this (the answer says the limit it used)
/// so that no request can ask for the whole log at once.
const LIST_LIMIT_MAX: usize = 1000;
/// Most events of a causation chain or tree one answer holds (the nearest
/// ones: a chain keeps its end, a tree its top).
const TREE_EVENTS_MAX: usize = 1000;
/// Most buckets one timeline answers (a day of minutes): wider ranges take
/// a coarser bucket.
const TIMELINE_BUCKETS_MAX: i64 = 1440;
/// Most keys of each breakdown of `/api/stats` (the largest counts).
const STATS_KEYS_DEFAULT: usize = 20;
const STATS_KEYS_MAX: usize = 1000;

const MICROS_PER_MINUTE: i64 = 60_000_000;
const MICROS_PER_HOUR: i64 = 60 * MICROS_PER_MINUTE;
const MICROS_PER_DAY: i64 = 24 * MICROS_PER_HOUR;

const PAGE_HTML: &str = include_str!("page/index.html");
const PAGE_JS: &str = include_str!("page/app.js");
const PAGE_CSS: &str = include_str!("page/app.css");

/// The server's shared state.
#[derive(Clone)]
pub(super) struct App {
    pub(super) view: Arc<dyn View>,
    pub(super) bearer_token: Option<Arc<str>>,
    /// Set at shutdown: live tails end.
    pub(super) stop_streams: Arc<AtomicBool>,
    /// Live tails open now (bounded by `stream::STREAMS_MAX`).
    pub(super) streams_open: Arc<AtomicUsize>,
}

pub(super) fn router(app: App) -> Router {
    let api = Router::new()
        .route("/api/info", get(info))
        .route("/api/events", get(events))
        .route("/api/events/{key}", get(event))
        .route("/api/events/{key}/chain", get(chain))
        .route("/api/events/{key}/descendants", get(descendants))
        .route("/api/events/correlation/{id}", get(by_correlation))
        .route("/api/events/session/{key}", get(by_session))
        .route("/api/events/actor/{id}", get(by_actor))
        .route("/api/events/entity/{type}/{id}", get(by_entity))
        .route(
            "/api/events/entity/{type}/{id}/history",
            get(entity_history),
        )
        .route("/api/events/type/{pattern}", get(by_type))
        .route("/api/timeline", get(timeline))
        .route("/api/stats", get(stats))
        .route("/api/verify", get(verify))
        .route("/api/replay", post(replay))
        .route("/api/stream", get(super::stream::stream))
        .route("/metrics", get(metrics))
        .route_layer(axum::middleware::from_fn_with_state(app.clone(), authorize));
    Router::new()
        .route(
            "/",
            get(|| async { asset("text/html; charset=utf-8", PAGE_HTML) }),
        )
        .route(
            "/app.js",
            get(|| async { asset("text/javascript; charset=utf-8", PAGE_JS) }),
        )
        .route(
            "/app.css",
            get(|| async { asset("text/css; charset=utf-8", PAGE_CSS) }),
        )
        .merge(api)
        .fallback(no_route)
        .method_not_allowed_fallback(wrong_method)
        .with_state(app)
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

async fn no_route(method: Method, uri: Uri) -> Response {
    ApiError::new(
        StatusCode::NOT_FOUND,
        format!("no route for {method} {}", uri.path()),
    )
    .into_response()
}

async fn wrong_method(method: Method, uri: Uri) -> Response {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        format!("{} does not answer {method}", uri.path()),
    )
    .into_response()
}

/// Checks the bearer token, when the server has one.
async fn authorize(State(app): State<App>, request: Request, next: Next) -> Response {
    let Some(token) = &app.bearer_token else {
        return next.run(request).await;
    };
    let from_header = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let from_query = request.uri().query().and_then(|q| {
        url_pairs(q)
            .into_iter()
            .find(|(k, _)| k == ACCESS_TOKEN_PARAM)
            .map(|(_, v)| v)
    });
    let given = from_header.map(str::to_owned).or(from_query);
    match given {
        Some(given) if same_secret(given.as_bytes(), token.as_bytes()) => next.run(request).await,
        _ => {
            let mut response = ApiError::new(
                StatusCode::UNAUTHORIZED,
                "this server needs a bearer token: Authorization: Bearer <token>".to_string(),
            )
            .into_response();
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            response
        }
    }
}

/// Compares in time independent of where the inputs first differ, so the
/// response time does not tell how much of a guess was right.
fn same_secret(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn url_pairs(query: &str) -> Vec<(String, String)> {
    UrlQuery::<Vec<(String, String)>>::try_from_uri(
        &format!("/?{query}").parse().unwrap_or_default(),
    )
    .map(|q| q.0)
    .unwrap_or_default()
}

/// The query parameter that may carry the bearer token.
pub(super) const ACCESS_TOKEN_PARAM: &str = "access_token";

/// An error answer: `{"error": message}` with its status code.
#[derive(Debug)]
pub(super) struct ApiError {
    status: StatusCode,
    message: String,
}

impl ApiError {
    pub(super) fn new(status: StatusCode, message: String) -> ApiError {
        ApiError { status, message }
    }

    pub(super) fn bad_request(message: String) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, message)
    }

    fn not_found(message: String) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        #[derive(Serialize)]
        struct Body<'a> {
            error: &'a str,
            status: u16,
        }
        json_response(
            self.status,
            &Body {
                error: &self.message,
                status: self.status.as_u16(),
            },
        )
    }
}

impl From<Error> for ApiError {
    fn from(error: Error) -> ApiError {
        let status = match &error {
            Error::UnknownEventId(_) | Error::NotFound(_) => StatusCode::NOT_FOUND,
            Error::InvalidEvent(_) | Error::InvalidEventType { .. } => StatusCode::BAD_REQUEST,
            Error::NoDataDirectory { .. } | Error::NotADirectory { .. } | Error::Closed => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            Error::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        ApiError::new(status, error.to_string())
    }
}

pub(super) fn json_response<T: Serialize>(status: StatusCode, body: &T) -> Response {
    match serde_json::to_vec(body) {
        Ok(bytes) => (status, [(header::CONTENT_TYPE, "application/json")], bytes).into_response(),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            [(header::CONTENT_TYPE, "application/json")],
            format!(r#"{{"error":"encoding the answer failed: {e}","status":500}}"#),
        )
            .into_response(),
    }
}

type Answer = std::result::Result<Response, ApiError>;

/// Runs `answer` on the blocking pool after refreshing the view.
async fn blocking(
    app: &App,
    answer: impl FnOnce(&dyn View) -> Answer + Send + 'static,
) -> Response {
    let view = Arc::clone(&app.view);
    let outcome = tokio::task::spawn_blocking(move || {
        view.refresh()?;
        answer(&*view)
    })
    .await;
    match outcome {
        Ok(Ok(response)) => response,
        Ok(Err(error)) => error.into_response(),
        Err(_) => ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "the query's thread panicked".into(),
        )
        .into_response(),
    }
}

/// The query string, checked against the names a route takes.
pub(super) struct Params(Vec<(String, String)>);

impl Params {
    pub(super) fn from(
        query: std::result::Result<UrlQuery<Vec<(String, String)>>, QueryRejection>,
        allowed: &[&str],
    ) -> std::result::Result<Params, ApiError> {
        let pairs = query
            .map_err(|e| ApiError::bad_request(format!("bad query string: {e}")))?
            .0;
        for (name, _) in &pairs {
            if name != ACCESS_TOKEN_PARAM && !allowed.contains(&name.as_str()) {
                return Err(ApiError::bad_request(format!(
                    "unknown parameter {name:?}; this route takes {}",
                    if allowed.is_empty() {
                        "none".to_string()
                    } else {
                        allowed.join(", ")
                    }
                )));
            }
        }
        Ok(Params(pairs))
    }

    pub(super) fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .filter(|v| !v.is_empty())
    }

    pub(super) fn seq(&self, name: &str) -> std::result::Result<Option<u64>, ApiError> {
        self.get(name)
            .map(|v| {
                v.parse::<u64>().map_err(|_| {
                    ApiError::bad_request(format!(
                        "{name}={v:?} is not a sequence number (a non-negative integer)"
                    ))
                })
            })
            .transpose()
    }

    /// A time: RFC 3339 (`2026-01-01T00:00:00Z`) or integer microseconds
    /// since the Unix epoch.
    pub(super) fn time(&self, name: &str) -> std::result::Result<Option<i64>, ApiError> {
        self.get(name).map(|v| parse_time(name, v)).transpose()
    }

    fn limit(&self, default: usize, max: usize) -> std::result::Result<usize, ApiError> {
        match self.get("limit") {
            None => Ok(default),
            Some(v) => match v.parse::<u64>() {
                Ok(0) => Err(ApiError::bad_request("limit must be at least 1".into())),
                Ok(n) => Ok(usize::try_from(n).unwrap_or(usize::MAX).min(max)),
                // Digits too many for a u64 are still a (huge) limit.
                Err(_) if !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()) => Ok(max),
                Err(_) => Err(ApiError::bad_request(format!(
                    "limit={v:?} is not a positive integer"
                ))),
            },
        }
    }

    pub(super) fn type_pattern(&self) -> std::result::Result<Option<String>, ApiError> {
        self.get("type")
            .map(|p| {
                validate_pattern(p)
                    .map(|()| p.to_string())
                    .map_err(|e| ApiError::bad_request(e.to_string()))
            })
            .transpose()
    }

    /// `TYPE/ID` of an entity.
    pub(super) fn entity(&self) -> std::result::Result<Option<(String, String)>, ApiError> {
        self.get("entity")
            .map(|v| match v.split_once('/') {
                Some((t, id)) if !t.is_empty() && !id.is_empty() => {
                    Ok((t.to_string(), id.to_string()))
                }
                _ => Err(ApiError::bad_request(format!(
                    "entity={v:?} is not TYPE/ID (for example task/T-1)"
                ))),
            })
            .transpose()
    }
}

fn parse_time(name: &str, value: &str) -> std::result::Result<i64, ApiError> {
    if let Ok(micros) = value.parse::<i64>() {
        return Ok(micros);
    }
    parse_timestamp(value).map_err(|_| {
        ApiError::bad_request(format!(
            "{name}={value:?} is neither an RFC 3339 time (2026-01-01T00:00:00Z) nor microseconds since the Unix epoch"
        ))
    })
}

fn parse_uuid(what: &str, value: &str) -> std::result::Result<Uuid, ApiError> {
    Uuid::parse_str(value)
        .map_err(|_| ApiError::bad_request(format!("{what} {value:?} is not a UUID")))
}

fn path<T>(path: std::result::Result<Path<T>, PathRejection>) -> std::result::Result<T, ApiError> {
    path.map(|p| p.0)
        .map_err(|e| ApiError::bad_request(format!("bad path: {e}")))
}

type QueryString = std::result::Result<UrlQuery<Vec<(String, String)>>, QueryRejection>;

/// A page of events: `next_after` is the cursor of the next page (pass it
/// as `after`), `null` on the last page.
#[derive(Serialize)]
struct EventPage {
    events: Vec<Box<RawValue>>,
    limit: usize,
    next_after: Option<u64>,
}

fn page(events: Vec<LoggedEvent>, limit: usize) -> Response {
    let more = events.len() > limit;
    let events = &events[..events.len().min(limit)];
    let next_after = if more {
        events.last().map(|e| e.seq)
    } else {
        None
    };
    json_response(
        StatusCode::OK,
        &EventPage {
            events: events.iter().map(event_to_json).collect(),
            limit,
            next_after,
        },
    )
}

/// The filters every list takes as parameters, beyond its path's key.
const FILTER_PARAMS: &[&str] = &[
    "type",
    "since",
    "until",
    "entity",
    "actor",
    "session",
    "correlation",
    "after",
    "limit",
];

/// Which key the route's path fixes (its parameter is then refused).
#[derive(Clone, Copy, PartialEq)]
enum Key {
    None,
    Correlation,
    Session,
    Actor,
    Entity,
    Type,
}

fn filters(params: &Params, mut query: Query, key: Key) -> std::result::Result<Query, ApiError> {
    if key != Key::Type {
        if let Some(pattern) = params.type_pattern()? {
            query = query.event_type(pattern);
        }
    }
    if key != Key::Entity {
        if let Some((entity_type, entity_id)) = params.entity()? {
            query = query.and_entity(entity_type, entity_id);
        }
    }
    if key != Key::Actor {
        if let Some(actor) = params.get("actor") {
            query = query.and_actor(actor);
        }
    }
    if key != Key::Session {
        if let Some(session) = params.get("session") {
            query = query.and_session(session);
        }
    }
    if key != Key::Correlation {
        if let Some(id) = params.get("correlation") {
            query = query.and_correlation(parse_uuid("correlation", id)?);
        }
    }
    if let Some(since) = params.time("since")? {
        query = query.since(since);
    }
    if let Some(until) = params.time("until")? {
        query = query.until(until);
    }
    if let Some(after) = params.seq("after")? {
        query = query.after_seq(after);
    }
    Ok(query)
}

fn allowed_without(key: &str) -> Vec<&'static str> {
    FILTER_PARAMS
        .iter()
        .copied()
        .filter(|p| *p != key)
        .collect()
}

/// Runs a list query: `limit + 1` events, to know whether there are more.
fn list(view: &dyn View, query: Query, limit: usize) -> Answer {
    let events = view
        .query(&query.limit(limit + 1))?
        .collect::<crate::Result<Vec<_>>>()?;
    Ok(page(events, limit))
}

async fn list_route(
    app: App,
    query: QueryString,
    base: Query,
    key: Key,
    key_name: &str,
) -> Response {
    let allowed = allowed_without(key_name);
    let params = match Params::from(query, &allowed) {
        Ok(p) => p,
        Err(e) => return e.into_response(),
    };
    let prepared = params
        .limit(LIST_LIMIT_DEFAULT, LIST_LIMIT_MAX)
        .and_then(|limit| Ok((filters(&params, base, key)?, limit)));
    let (query, limit) = match prepared {
        Ok(p) => p,
        Err(e) => return e.into_response(),
    };
    blocking(&app, move |view| list(view, query, limit)).await
}

#[derive(Serialize)]
struct Info<'a> {
    version: &'a str,
    dir: String,
    read_only: bool,
    first_seq: Option<u64>,
    last_seq: Option<u64>,
    first_timestamp: Option<String>,
    last_timestamp: Option<String>,
    index_available: bool,
    indexed_through: u64,
    live_tail: &'a str,
}

async fn info(State(app): State<App>, query: QueryString) -> Response {
    if let Err(e) = Params::from(query, &[]) {
        return e.into_response();
    }
    blocking(&app, |view| {
        let first = view.first_seq();
        let last = view.last_seq();
        let time_of = |seq: Option<u64>| -> crate::Result<Option<String>> {
            seq.map(|s| view.get(s).map(|e| format_timestamp(e.timestamp_us)))
                .transpose()
        };
        let index = view.index_status();
        let read_only = view.read_only();
        Ok(json_response(
            StatusCode::OK,
            &Info {
                version: crate::VERSION,
                dir: view.dir().display().to_string(),
                read_only,
                first_seq: first,
                last_seq: last,
                first_timestamp: time_of(first)?,
                last_timestamp: time_of(last)?,
                index_available: index.available,
                indexed_through: index.indexed_through,
                live_tail: if read_only { "polling" } else { "subscription" },
            },
        ))
    })
    .await
}

/// `/api/events`: with a filter parameter, the events that pass it; else
/// the sequence range `from..=to`.
async fn events(State(app): State<App>, query: QueryString) -> Response {
    let mut allowed = FILTER_PARAMS.to_vec();
    allowed.extend(["from", "to"]);
    let params = match Params::from(query, &allowed) {
        Ok(p) => p,
        Err(e) => return e.into_response(),
    };
    let filtered = [
        "type",
        "since",
        "until",
        "entity",
        "actor",
        "session",
        "correlation",
    ]
    .iter()
    .any(|p| params.get(p).is_some());
    let prepared = (|| {
        let limit = params.limit(LIST_LIMIT_DEFAULT, LIST_LIMIT_MAX)?;
        let from = params.seq("from")?;
        let to = params.seq("to")?;
        let after = params.seq("after")?;
        let mut query = filters(&params, Query::all(), Key::None)?;
        if filtered {
            if let Some(from) = from {
                query = query.after_seq(from.saturating_sub(1).max(after.unwrap_or(0)));
            }
        }
        Ok::<_, ApiError>((limit, from, to, after, query))
    })();
    let (limit, from, to, after, query) = match prepared {
        Ok(p) => p,
        Err(e) => return e.into_response(),
    };
    blocking(&app, move |view| {
        if filtered {
            let mut events = Vec::new();
            for event in view.query(&query)? {
                let event = event?;
                if to.is_some_and(|to| event.seq > to) {
                    break;
                }
                events.push(event);
                if events.len() > limit {
                    break;
                }
            }
            return Ok(page(events, limit));
        }
        let (Some(first), Some(last)) = (view.first_seq(), view.last_seq()) else {
            return Ok(page(Vec::new(), limit));
        };
        let start = from
            .unwrap_or(first)
            .max(after.map_or(0, |a| a.saturating_add(1)))
            .max(first);
        let end = to.unwrap_or(last).min(last);
        if start > end {
            return Ok(page(Vec::new(), limit));
        }
        let events = view
            .iter_range(start, end)?
            .take(limit + 1)
            .collect::<crate::Result<Vec<_>>>()?;
        Ok(page(events, limit))
    })
    .await
}

/// An event named by its sequence number or its id.
enum EventKey {
    Seq(u64),
    Id(Uuid),
}

fn event_key(key: &str) -> std::result::Result<EventKey, ApiError> {
    if let Ok(seq) = key.parse::<u64>() {
        return Ok(EventKey::Seq(seq));
    }
    Uuid::parse_str(key).map(EventKey::Id).map_err(|_| {
        ApiError::bad_request(format!(
            "{key:?} is neither a sequence number nor an event id (UUID)"
        ))
    })
}

fn find_event(view: &dyn View, key: &EventKey) -> std::result::Result<LoggedEvent, ApiError> {
    match key {
        EventKey::Seq(seq) => match view.get(*seq) {
            Ok(event) => Ok(event),
            Err(Error::NotFound(_)) => Err(ApiError::not_found(format!("no event {seq}"))),
            Err(e) => Err(e.into()),
        },
        EventKey::Id(id) => view
            .find_by_id(*id)?
            .ok_or_else(|| ApiError::not_found(format!("no event with id {id}"))),
    }
}

fn raw_json(event: &LoggedEvent) -> Response {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        event_to_json(event).get().to_owned(),
    )
        .into_response()
}

async fn event(
    State(app): State<App>,
    key: std::result::Result<Path<String>, PathRejection>,
    query: QueryString,
) -> Response {
    let key = match Params::from(query, &[]).and_then(|_| event_key(&path(key)?)) {
        Ok(k) => k,
        Err(e) => return e.into_response(),
    };
    blocking(&app, move |view| Ok(raw_json(&find_event(view, &key)?))).await
}

#[derive(Serialize)]
struct Chain {
    /// Root cause first, the event last.
    events: Vec<Box<RawValue>>,
    /// Whether causes further up were left out (the answer keeps the
    /// `limit` nearest the event).
    truncated: bool,
}

async fn chain(
    State(app): State<App>,
    key: std::result::Result<Path<String>, PathRejection>,
    query: QueryString,
) -> Response {
    let prepared = Params::from(query, &["limit"]).and_then(|params| {
        Ok((
            event_key(&path(key)?)?,
            params.limit(TREE_EVENTS_MAX, TREE_EVENTS_MAX)?,
        ))
    });
    let (key, limit) = match prepared {
        Ok(p) => p,
        Err(e) => return e.into_response(),
    };
    blocking(&app, move |view| {
        let event = find_event(view, &key)?;
        let chain = view.causation_chain(event.id)?;
        let skip = chain.len().saturating_sub(limit);
        Ok(json_response(
            StatusCode::OK,
            &Chain {
                events: chain[skip..].iter().map(event_to_json).collect(),
                truncated: skip > 0,
            },
        ))
    })
    .await
}

#[derive(Serialize)]
struct TreeNode {
    depth: usize,
    /// The cause's seq (`null` for the root).
    parent_seq: Option<u64>,
    event: Box<RawValue>,
}

#[derive(Serialize)]
struct Tree {
    /// Depth first, parents before children, children in seq order.
    nodes: Vec<TreeNode>,
    /// Events in the whole tree.
    total: usize,
    truncated: bool,
}

async fn descendants(
    State(app): State<App>,
    key: std::result::Result<Path<String>, PathRejection>,
    query: QueryString,
) -> Response {
    let prepared = Params::from(query, &["limit"]).and_then(|params| {
        Ok((
            event_key(&path(key)?)?,
            params.limit(TREE_EVENTS_MAX, TREE_EVENTS_MAX)?,
        ))
    });
    let (key, limit) = match prepared {
        Ok(p) => p,
        Err(e) => return e.into_response(),
    };
    blocking(&app, move |view| {
        let event = find_event(view, &key)?;
        let tree = view.descendants(event.id)?;
        let mut nodes = Vec::new();
        // Depth first without recursion (a chain may be deep).
        let mut stack = vec![(0usize, None, &tree)];
        while let Some((depth, parent_seq, node)) = stack.pop() {
            if nodes.len() == limit {
                break;
            }
            nodes.push(TreeNode {
                depth,
                parent_seq,
                event: event_to_json(&node.event),
            });
            for child in node.children.iter().rev() {
                stack.push((depth + 1, Some(node.event.seq), child));
            }
        }
        let total = tree.len();
        Ok(json_response(
            StatusCode::OK,
            &Tree {
                truncated: nodes.len() < total,
                nodes,
                total,
            },
        ))
    })
    .await
}

async fn by_correlation(
    State(app): State<App>,
    id: std::result::Result<Path<String>, PathRejection>,
    query: QueryString,
) -> Response {
    match path(id).and_then(|id| parse_uuid("correlation", &id)) {
        Ok(id) => {
            list_route(
                app,
                query,
                Query::correlation(id),
                Key::Correlation,
                "correlation",
            )
            .await
        }
        Err(e) => e.into_response(),
    }
}

async fn by_session(
    State(app): State<App>,
    key: std::result::Result<Path<String>, PathRejection>,
    query: QueryString,
) -> Response {
    match path(key) {
        Ok(key) => list_route(app, query, Query::session(key), Key::Session, "session").await,
        Err(e) => e.into_response(),
    }
}

async fn by_actor(
    State(app): State<App>,
    id: std::result::Result<Path<String>, PathRejection>,
    query: QueryString,
) -> Response {
    match path(id) {
        Ok(id) => list_route(app, query, Query::actor(id), Key::Actor, "actor").await,
        Err(e) => e.into_response(),
    }
}

async fn by_type(
    State(app): State<App>,
    pattern: std::result::Result<Path<String>, PathRejection>,
    query: QueryString,
) -> Response {
    let pattern = path(pattern).and_then(|p| {
        validate_pattern(&p)
            .map(|()| p)
            .map_err(|e| ApiError::bad_request(e.to_string()))
    });
    match pattern {
        Ok(p) => list_route(app, query, Query::all().event_type(p), Key::Type, "type").await,
        Err(e) => e.into_response(),
    }
}

#[derive(Serialize)]
struct EntityState {
    entity: EntityRef,
    at: String,
    at_us: i64,
    /// The entity's fields after applying its events' `changes` up to and
    /// including `at`.
    state: serde_json::Value,
}

#[derive(Serialize)]
struct EntityRef {
    #[serde(rename = "type")]
    entity_type: String,
    id: String,
}

/// `/api/events/entity/{type}/{id}`: its events, or with `at` its state
/// at that time.
async fn by_entity(
    State(app): State<App>,
    entity: std::result::Result<Path<(String, String)>, PathRejection>,
    query: QueryString,
) -> Response {
    let (entity_type, entity_id) = match path(entity) {
        Ok(e) => e,
        Err(e) => return e.into_response(),
    };
    let at = match &query {
        Ok(q) => {
            q.0.iter()
                .rev()
                .find(|(k, _)| k == "at")
                .map(|(_, v)| v.clone())
        }
        Err(_) => None,
    };
    let Some(at) = at else {
        let base = Query::entity(entity_type, entity_id);
        return list_route(app, query, base, Key::Entity, "entity").await;
    };
    if let Err(e) = Params::from(query, &["at"]) {
        return e.into_response();
    }
    let at_us = match parse_time("at", &at) {
        Ok(t) => t,
        Err(e) => return e.into_response(),
    };
    blocking(&app, move |view| {
        let state = view.state_at(&entity_type, &entity_id, at_us)?;
        Ok(json_response(
            StatusCode::OK,
            &EntityState {
                entity: EntityRef {
                    entity_type,
                    id: entity_id,
                },
                at: format_timestamp(at_us),
                at_us,
                state,
            },
        ))
    })
    .await
}

#[derive(Serialize)]
struct Change {
    seq: u64,
    timestamp: String,
    actor: Option<String>,
    event_type: String,
    field: String,
    before: serde_json::Value,
    after: serde_json::Value,
}

#[derive(Serialize)]
struct History {
    /// Each field change of the page's events, in sequence order.
    changes: Vec<Change>,
    /// Events (not changes) per page.
    limit: usize,
    next_after: Option<u64>,
}

async fn entity_history(
    State(app): State<App>,
    entity: std::result::Result<Path<(String, String)>, PathRejection>,
    query: QueryString,
) -> Response {
    let prepared = Params::from(query, &["after", "limit", "since", "until"]).and_then(|params| {
        let (entity_type, entity_id) = path(entity)?;
        let mut query = Query::entity(entity_type, entity_id);
        if let Some(after) = params.seq("after")? {
            query = query.after_seq(after);
        }
        if let Some(since) = params.time("since")? {
            query = query.since(since);
        }
        if let Some(until) = params.time("until")? {
            query = query.until(until);
        }
        Ok((query, params.limit(LIST_LIMIT_DEFAULT, LIST_LIMIT_MAX)?))
    });
    let (query, limit) = match prepared {
        Ok(p) => p,
        Err(e) => return e.into_response(),
    };
    blocking(&app, move |view| {
        let events = view
            .query(&query.limit(limit + 1))?
            .collect::<crate::Result<Vec<_>>>()?;
        let more = events.len() > limit;
        let events = &events[..events.len().min(limit)];
        let mut changes = Vec::new();
        for event in events {
            let Ok(payload) = event.payload_as::<serde_json::Value>() else {
                continue;
            };
            let Some(fields) = payload.get("changes").and_then(|c| c.as_object()) else {
                continue;
            };
            for (field, change) in fields {
                changes.push(Change {
                    seq: event.seq,
                    timestamp: format_timestamp(event.timestamp_us),
                    actor: event.actor.clone(),
                    event_type: event.event_type.clone(),
                    field: field.clone(),
                    before: change.get("before").cloned().unwrap_or_default(),
                    after: change.get("after").cloned().unwrap_or_default(),
                });
            }
        }
        Ok(json_response(
            StatusCode::OK,
            &History {
                changes,
                limit,
                next_after: if more {
                    events.last().map(|e| e.seq)
                } else {
                    None
                },
            },
        ))
    })
    .await
}

/// The time window of `since`/`until`, defaulting to the log's first and
/// last events' timestamps (so that the page opens on "everything").
fn window_or_log_span(
    view: &dyn View,
    since: Option<i64>,
    until: Option<i64>,
) -> crate::Result<(i64, i64)> {
    let first = match (since, view.first_seq()) {
        (Some(since), _) => since,
        (None, Some(seq)) => view.get(seq)?.timestamp_us,
        (None, None) => 0,
    };
    let end = match (until, view.last_seq()) {
        (Some(until), _) => until,
        (None, Some(seq)) => view.get(seq)?.timestamp_us.saturating_add(1),
        (None, None) => first,
    };
    Ok((first, end.max(first)))
}

#[derive(Serialize)]
struct Bucket {
    start: String,
    start_us: i64,
    total: u64,
    by_type: BTreeMap<String, u64>,
}

#[derive(Serialize)]
struct Timeline {
    bucket: &'static str,
    since_us: i64,
    until_us: i64,
    buckets: Vec<Bucket>,
}

async fn timeline(State(app): State<App>, query: QueryString) -> Response {
    let prepared = Params::from(query, &["since", "until", "bucket"]).and_then(|params| {
        let bucket = match params.get("bucket").unwrap_or("minute") {
            "minute" => ("minute", MICROS_PER_MINUTE),
            "hour" => ("hour", MICROS_PER_HOUR),
            "day" => ("day", MICROS_PER_DAY),
            other => {
                return Err(ApiError::bad_request(format!(
                    "bucket={other:?}: use minute, hour or day"
                )))
            }
        };
        Ok((params.time("since")?, params.time("until")?, bucket))
    });
    let (since, until, (bucket_name, bucket_us)) = match prepared {
        Ok(p) => p,
        Err(e) => return e.into_response(),
    };
    blocking(&app, move |view| {
        let (since, until) = window_or_log_span(view, since, until)?;
        let first_bucket = since.div_euclid(bucket_us);
        let end_bucket = until.saturating_sub(1).div_euclid(bucket_us) + 1;
        let count = if until > since { end_bucket - first_bucket } else { 0 };
        if count > TIMELINE_BUCKETS_MAX {
            return Err(ApiError::bad_request(format!(
                "{count} buckets of a {bucket_name} are more than {TIMELINE_BUCKETS_MAX}: narrow since/until or take a larger bucket"
            )));
        }
        let mut buckets = Vec::new();
        for b in first_bucket..first_bucket + count {
            let start = (b * bucket_us).max(since);
            let end = ((b + 1) * bucket_us).min(until);
            let stats = view.stats_window(Some(start), Some(end))?;
            buckets.push(Bucket {
                start: format_timestamp(b * bucket_us),
                start_us: b * bucket_us,
                total: stats.total,
                by_type: stats.by_type,
            });
        }
        Ok(json_response(
            StatusCode::OK,
            &Timeline {
                bucket: bucket_name,
                since_us: since,
                until_us: until,
                buckets,
            },
        ))
    })
    .await
}

#[derive(Serialize)]
struct Count {
    key: String,
    count: u64,
}

#[derive(Serialize)]
struct StatsAnswer {
    since_us: Option<i64>,
    until_us: Option<i64>,
    total: u64,
    /// Largest counts first, at most `top` of them.
    by_type: Vec<Count>,
    by_actor: Vec<Count>,
    by_priority: Vec<Count>,
    /// How many distinct types and actors there were (beyond `top`).
    types: usize,
    actors: usize,
}

fn top(map: BTreeMap<String, u64>, keep: usize) -> Vec<Count> {
    let mut counts: Vec<Count> = map
        .into_iter()
        .map(|(key, count)| Count { key, count })
        .collect();
    counts.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.key.cmp(&b.key)));
    counts.truncate(keep);
    counts
}

async fn stats(State(app): State<App>, query: QueryString) -> Response {
    let prepared = Params::from(query, &["since", "until", "top"]).and_then(|params| {
        let keep = match params.get("top") {
            None => STATS_KEYS_DEFAULT,
            Some(v) => match v.parse::<u64>() {
                Ok(n) if n > 0 => usize::try_from(n).unwrap_or(usize::MAX).min(STATS_KEYS_MAX),
                _ => {
                    return Err(ApiError::bad_request(format!(
                        "top={v:?} is not a positive integer"
                    )))
                }
            },
        };
        Ok((params.time("since")?, params.time("until")?, keep))
    });
    let (since, until, keep) = match prepared {
        Ok(p) => p,
        Err(e) => return e.into_response(),
    };
    blocking(&app, move |view| {
        let stats = view.stats_window(since, until)?;
        let (types, actors) = (stats.by_type.len(), stats.by_actor.len());
        Ok(json_response(
            StatusCode::OK,
            &StatsAnswer {
                since_us: since,
                until_us: until,
                total: stats.total,
                by_type: top(stats.by_type, keep),
                by_actor: top(stats.by_actor, keep),
                by_priority: stats
                    .by_priority
                    .into_iter()
                    .map(|(p, count)| Count {
                        key: p.to_string(),
                        count,
                    })
                    .collect(),
                types,
                actors,
            },
        ))
    })
    .await
}

#[derive(Serialize)]
struct Verify {
    ok: bool,
    events_checked: u64,
    deleted_events: u64,
    deletions: Vec<String>,
    causes_not_found: u64,
    index_entries_checked: u64,
    index_available: bool,
    problems: Vec<String>,
}

async fn verify(State(app): State<App>, query: QueryString) -> Response {
    if let Err(e) = Params::from(query, &[]) {
        return e.into_response();
    }
    blocking(&app, |view| {
        let report = view.verify()?;
        Ok(json_response(
            StatusCode::OK,
            &Verify {
                ok: report.is_ok(),
                events_checked: report.events_checked,
                deleted_events: report.deleted_events,
                deletions: report.deletions,
                causes_not_found: report.causes_not_found,
                index_entries_checked: report.index_entries_checked,
                index_available: report.index_available,
                problems: report.problems,
            },
        ))
    })
    .await
}

/// The body of `POST /api/replay`.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct ReplayRequest {
    correlation_id: String,
    /// Must be true: the API writes nothing.
    dry_run: bool,
}

/// Re-evaluates the rules shipped with evlog
/// ([`crate::rules::orchestration`]) over a correlation's events and says
/// what each would do ([`crate::rules::DryRunReport::to_json`]); writes
/// nothing.
async fn replay(State(app): State<App>, body: axum::body::Bytes) -> Response {
    let request: ReplayRequest = match serde_json::from_slice(&body) {
        Ok(request) => request,
        Err(e) => {
            return ApiError::bad_request(format!(
                "the body must be {{\"correlation_id\": UUID, \"dry_run\": true}}: {e}"
            ))
            .into_response()
        }
    };
    if !request.dry_run {
        return ApiError::bad_request(
            "replay only re-evaluates rules in dry run (\"dry_run\": true): the API writes nothing"
                .into(),
        )
        .into_response();
    }
    let correlation = match parse_uuid("correlation_id", &request.correlation_id) {
        Ok(id) => id,
        Err(e) => return e.into_response(),
    };
    blocking(&app, move |view| {
        let triggers: Vec<LoggedEvent> = view
            .query(&Query::correlation(correlation))?
            .collect::<crate::Result<_>>()?;
        let reports = view.dry_run_rules(&crate::rules::orchestration::all(), &triggers)?;
        let reports: Vec<serde_json::Value> = reports.iter().map(|r| r.to_json()).collect();
        Ok(json_response(
            StatusCode::OK,
            &serde_json::json!({
                "correlation_id": correlation.to_string(),
                "events": triggers.len(),
                "reports": reports,
            }),
        ))
    })
    .await
}

async fn metrics(State(app): State<App>, query: QueryString) -> Response {
    if let Err(e) = Params::from(query, &[]) {
        return e.into_response();
    }
    blocking(&app, |view| {
        let text = view.metrics()?.render();
        Ok((
            StatusCode::OK,
            [(
                header::CONTENT_TYPE,
                crate::metrics::PROMETHEUS_CONTENT_TYPE,
            )],
            text,
        )
            .into_response())
    })
    .await
}

/// The `Last-Event-ID` header, when a client resumes a stream.
pub(super) fn last_event_id(headers: &HeaderMap) -> std::result::Result<Option<u64>, ApiError> {
    headers
        .get("last-event-id")
        .map(|v| {
            v.to_str()
                .ok()
                .and_then(|s| s.trim().parse::<u64>().ok())
                .ok_or_else(|| {
                    ApiError::bad_request(
                        "Last-Event-ID must be the sequence number of the last event received"
                            .into(),
                    )
                })
        })
        .transpose()
}
