//! Queries: which events answer a question, in sequence order.
//!
//! Every query reads the indexes up to their "indexed through" mark `M`
//! and then scans the log from `M + 1` to the last published event with
//! the same predicate, so an event is found as soon as `append` returned,
//! whether or not the indexer has reached it (read-your-writes). Index
//! answers are checked against the event itself before they are returned,
//! and they stream: memory stays bounded by one posting chunk per key.

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::ops::{Bound, RangeBounds};
use std::sync::Arc;

use uuid::Uuid;

use crate::error::{Error, Result};
use crate::event::{
    type_matches, Entity, LoggedEvent, Priority, TIMESTAMP_US_MAX, TIMESTAMP_US_MIN,
};
use crate::index::indexer::LINK_METADATA_PREFIX;
use crate::index::keys::{self, PostingKind, StatDim, MICROS_PER_MINUTE, TIME_BLOCK_EVENTS};
use crate::index::IndexState;
use crate::log::{Iter, Shared};

/// What to look for. Every condition set must hold; the time window is
/// `since` (inclusive) to `until` (exclusive), in microseconds since the
/// Unix epoch, on the events' own timestamps (which callers may set, so
/// they need not grow with the sequence number).
///
/// ```
/// # fn main() -> evlog::Result<()> {
/// # let dir = tempfile::tempdir().unwrap();
/// use evlog::{Event, Log, Options, Query};
/// let log = Log::open(dir.path(), Options::default())?;
/// log.append(Event::new("validation.phase.failed").entity("task", "T-1").timestamp_us(10))?;
/// log.append(Event::new("task.created").entity("task", "T-1").timestamp_us(20))?;
/// let found: Vec<_> = log
///     .query(&Query::entity("task", "T-1").event_type("validation.*").until(15))?
///     .collect::<evlog::Result<_>>()?;
/// assert_eq!(found.len(), 1);
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Query {
    pub(crate) correlation: Option<Uuid>,
    pub(crate) entity: Option<Entity>,
    /// With `entity`: also the events of the entities linked to it.
    pub(crate) linked: bool,
    pub(crate) session: Option<String>,
    pub(crate) actor: Option<String>,
    pub(crate) type_pattern: Option<String>,
    pub(crate) since_us: Option<i64>,
    pub(crate) until_us: Option<i64>,
    pub(crate) limit: Option<usize>,
    /// Only events with a greater seq: the cursor of a paged answer.
    pub(crate) after_seq: Option<u64>,
}

impl Query {
    /// Every event (narrow it with the other methods).
    pub fn all() -> Query {
        Query::default()
    }
    /// Events of this correlation id.
    pub fn correlation(id: Uuid) -> Query {
        Query::all().and_correlation(id)
    }
    /// Events of this entity.
    pub fn entity(entity_type: impl Into<String>, entity_id: impl Into<String>) -> Query {
        Query::all().and_entity(entity_type, entity_id)
    }
    /// Events of this session.
    pub fn session(session: impl Into<String>) -> Query {
        Query::all().and_session(session)
    }
    /// Events of this actor.
    pub fn actor(actor: impl Into<String>) -> Query {
        Query::all().and_actor(actor)
    }
    /// Events whose type matches a dotted pattern (see [`crate::type_matches`]).
    pub fn event_type(self, pattern: impl Into<String>) -> Query {
        Query {
            type_pattern: Some(pattern.into()),
            ..self
        }
    }
    /// Also require this correlation id.
    pub fn and_correlation(self, id: Uuid) -> Query {
        Query {
            correlation: Some(id),
            ..self
        }
    }
    /// Also require this entity.
    pub fn and_entity(self, entity_type: impl Into<String>, entity_id: impl Into<String>) -> Query {
        Query {
            entity: Some(Entity {
                entity_type: entity_type.into(),
                entity_id: entity_id.into(),
            }),
            ..self
        }
    }
    /// Also require this session.
    pub fn and_session(self, session: impl Into<String>) -> Query {
        Query {
            session: Some(session.into()),
            ..self
        }
    }
    /// Also require this actor.
    pub fn and_actor(self, actor: impl Into<String>) -> Query {
        Query {
            actor: Some(actor.into()),
            ..self
        }
    }
    /// With an entity: its events and those of every entity linked to it
    /// (see [`crate::Log::entity_chain`]).
    pub fn with_linked_entities(self) -> Query {
        Query {
            linked: true,
            ..self
        }
    }
    /// Only events at or after `timestamp_us`.
    pub fn since(self, timestamp_us: i64) -> Query {
        Query {
            since_us: Some(timestamp_us),
            ..self
        }
    }
    /// Only events before `timestamp_us`.
    pub fn until(self, timestamp_us: i64) -> Query {
        Query {
            until_us: Some(timestamp_us),
            ..self
        }
    }
    /// A time window from any range of microseconds (`a..b`, `a..`, `..=b`).
    pub fn during(self, range: impl RangeBounds<i64>) -> Query {
        let (since_us, until_us) = window(range);
        Query {
            since_us,
            until_us,
            ..self
        }
    }
    /// Only events with a sequence number above `seq`: the next page of an
    /// answer after its last event. The indexes are read from there, so a
    /// late page costs no more than the first.
    pub fn after_seq(self, seq: u64) -> Query {
        Query {
            after_seq: Some(seq),
            ..self
        }
    }
    /// At most `count` events.
    pub fn limit(self, count: usize) -> Query {
        Query {
            limit: Some(count),
            ..self
        }
    }

    fn in_window(&self, timestamp_us: i64) -> bool {
        self.since_us.is_none_or(|since| timestamp_us >= since)
            && self.until_us.is_none_or(|until| timestamp_us < until)
    }

    /// Whether `event` answers the query (`entities`: the entity and its
    /// linked ones, for a linked query).
    fn matches(&self, event: &LoggedEvent, entities: Option<&HashSet<Entity>>) -> bool {
        if let Some(id) = self.correlation {
            if event.correlation_id != Some(id) {
                return false;
            }
        }
        match (entities, &self.entity) {
            (Some(set), _) => match &event.entity {
                Some(entity) if set.contains(entity) => {}
                _ => return false,
            },
            (None, Some(entity)) => {
                if event.entity.as_ref() != Some(entity) {
                    return false;
                }
            }
            (None, None) => {}
        }
        if self.session.is_some() && event.session != self.session {
            return false;
        }
        if self.actor.is_some() && event.actor != self.actor {
            return false;
        }
        if let Some(pattern) = &self.type_pattern {
            if !type_matches(pattern, &event.event_type) {
                return false;
            }
        }
        self.in_window(event.timestamp_us)
    }
}

/// `(since inclusive, until exclusive)` of a range of microseconds.
pub(crate) fn window(range: impl RangeBounds<i64>) -> (Option<i64>, Option<i64>) {
    let since = match range.start_bound() {
        Bound::Included(&t) => Some(t),
        Bound::Excluded(&t) => Some(t.saturating_add(1)),
        Bound::Unbounded => None,
    };
    let until = match range.end_bound() {
        Bound::Included(&t) => Some(t.saturating_add(1)),
        Bound::Excluded(&t) => Some(t),
        Bound::Unbounded => None,
    };
    (since, until)
}

/// Seqs read from the indexes, in order, a chunk at a time.
struct PostingStream {
    kind: PostingKind,
    key: Vec<u8>,
    buffer: VecDeque<u64>,
    /// Where the next read starts; `None` once the list is exhausted.
    next_from: Option<u64>,
}

/// How many records an answer asks the CPU to load ahead of the one it
/// decodes: enough to cover a miss to memory during one decode.
const PREFETCH_AHEAD: usize = 4;

/// How many seqs a stream reads from the store at once.
const STREAM_READ_SEQS: usize = 512;

impl PostingStream {
    fn peek(&mut self, index: &IndexState, through: u64) -> Result<Option<u64>> {
        if self.buffer.is_empty() {
            if let Some(from) = self.next_from {
                let mut out = Vec::with_capacity(STREAM_READ_SEQS);
                self.next_from = index.postings(
                    self.kind,
                    &self.key,
                    from,
                    through,
                    STREAM_READ_SEQS,
                    &mut out,
                )?;
                self.buffer.extend(out);
            }
        }
        Ok(self.buffer.front().copied())
    }
}

/// Where the indexed part of an answer comes from.
enum Source {
    /// The union of posting lists (deduplicated: an event is in a linked
    /// query's lists once per entity it names).
    Postings(Vec<PostingStream>),
    /// Every seq of the blocks whose time range meets the window.
    Blocks {
        blocks: Vec<(u64, u64)>,
        at: usize,
        next: u64,
    },
    Nothing,
}

/// The answer to a query: the matching events in sequence order. Reads
/// lazily; holds the log's shared state, so it may outlive the borrow of
/// the `Log` (after `close` it returns `Error::Closed`).
pub struct Events {
    shared: Arc<Shared>,
    index: Option<Arc<IndexState>>,
    query: Query,
    entities: Option<HashSet<Entity>>,
    source: Source,
    /// Indexed through here; the rest comes from `tail`.
    mark: u64,
    /// Lowest seq the source may give (the window's first candidate).
    min_seq: u64,
    allowed_blocks: Option<Vec<bool>>,
    /// Highest seq taken from the source (streams of a union may repeat it).
    last_returned: u64,
    /// Seqs taken from the source and prefetched, not yet read.
    ahead: VecDeque<u64>,
    tail: Option<Iter>,
    tail_range: (u64, u64),
    returned: usize,
    finished: bool,
}

impl Events {
    fn next_indexed_seq(&mut self) -> Result<Option<u64>> {
        let Some(index) = self.index.clone() else {
            return Ok(None);
        };
        loop {
            let seq = match &mut self.source {
                Source::Nothing => return Ok(None),
                Source::Blocks { blocks, at, next } => loop {
                    let Some(&(lo, hi)) = blocks.get(*at) else {
                        return Ok(None);
                    };
                    let candidate = (*next).max(lo);
                    if candidate > hi {
                        *at += 1;
                        continue;
                    }
                    *next = candidate + 1;
                    break candidate;
                },
                Source::Postings(streams) => {
                    let mut lowest: Option<u64> = None;
                    for stream in streams.iter_mut() {
                        if let Some(seq) = stream.peek(&index, self.mark)? {
                            lowest = Some(lowest.map_or(seq, |l: u64| l.min(seq)));
                        }
                    }
                    let Some(seq) = lowest else {
                        return Ok(None);
                    };
                    for stream in streams.iter_mut() {
                        if stream.buffer.front() == Some(&seq) {
                            stream.buffer.pop_front();
                        }
                    }
                    seq
                }
            };
            if seq <= self.last_returned || seq < self.min_seq || seq > self.mark {
                continue;
            }
            if let Some(allowed) = &self.allowed_blocks {
                if !allowed
                    .get((seq / TIME_BLOCK_EVENTS) as usize)
                    .copied()
                    .unwrap_or(true)
                {
                    continue;
                }
            }
            self.last_returned = seq;
            return Ok(Some(seq));
        }
    }

    /// The next seq from the indexes, keeping `PREFETCH_AHEAD` more
    /// queued whose records are being loaded into the cache meanwhile.
    fn next_prefetched_seq(&mut self) -> Result<Option<u64>> {
        while self.ahead.len() <= PREFETCH_AHEAD {
            match self.next_indexed_seq()? {
                Some(seq) => {
                    self.shared.prefetch(seq);
                    self.ahead.push_back(seq);
                }
                None => break,
            }
        }
        Ok(self.ahead.pop_front())
    }

    fn step(&mut self) -> Result<Option<LoggedEvent>> {
        while let Some(seq) = self.next_prefetched_seq()? {
            let event = match self.shared.get(seq) {
                // Deleted by retention after the indexes listed it (they
                // are being rebuilt without it).
                Err(Error::Deleted { .. }) => continue,
                other => other?,
            };
            if self.query.matches(&event, self.entities.as_ref()) {
                return Ok(Some(event));
            }
        }
        if self.tail.is_none() {
            let (from, to) = self.tail_range;
            if from > to {
                return Ok(None);
            }
            self.tail = Some(self.shared.iter(from..=to)?);
        }
        let Some(tail) = self.tail.as_mut() else {
            return Ok(None);
        };
        for event in tail.by_ref() {
            let event = event?;
            if self.query.matches(&event, self.entities.as_ref()) {
                return Ok(Some(event));
            }
        }
        Ok(None)
    }
}

impl Iterator for Events {
    type Item = Result<LoggedEvent>;

    fn next(&mut self) -> Option<Result<LoggedEvent>> {
        if self.finished || self.query.limit.is_some_and(|limit| self.returned >= limit) {
            return None;
        }
        match self.step() {
            Ok(Some(event)) => {
                self.returned += 1;
                Some(Ok(event))
            }
            Ok(None) => {
                self.finished = true;
                None
            }
            Err(e) => {
                self.finished = true;
                Some(Err(e))
            }
        }
    }
}

/// An event and everything it caused, as a tree: `children` are the events
/// whose causation id is this event's id, in sequence order.
#[derive(Debug, Clone, PartialEq)]
pub struct CausationTree {
    /// The event at this node.
    pub event: LoggedEvent,
    /// What it caused, each with what that caused.
    pub children: Vec<CausationTree>,
}

impl CausationTree {
    /// Number of events in the tree.
    pub fn len(&self) -> usize {
        1 + self.children.iter().map(CausationTree::len).sum::<usize>()
    }

    /// Always false: a tree holds at least its root.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// The events depth first (parents before children), with depths.
    pub fn walk(&self) -> Vec<(usize, &LoggedEvent)> {
        let mut out = Vec::new();
        let mut stack = vec![(0usize, self)];
        while let Some((depth, node)) = stack.pop() {
            out.push((depth, &node.event));
            for child in node.children.iter().rev() {
                stack.push((depth + 1, child));
            }
        }
        out
    }
}

/// Event counts over a time window, answered from counters the indexer
/// keeps per minute (edges of a window that do not fall on whole minutes,
/// and events not yet indexed, are counted from the events themselves).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    /// Events in the window.
    pub total: u64,
    /// Events per type name.
    pub by_type: BTreeMap<String, u64>,
    /// Events per actor (events without one are not counted here).
    pub by_actor: BTreeMap<String, u64>,
    /// Events per priority.
    pub by_priority: BTreeMap<Priority, u64>,
    /// Events per hour, keyed by the hour's start (microseconds, UTC).
    pub by_hour: BTreeMap<i64, u64>,
    /// Events per day, keyed by the day's start (microseconds, UTC).
    pub by_day: BTreeMap<i64, u64>,
}

const MICROS_PER_HOUR: i64 = 3_600_000_000;
const MICROS_PER_DAY: i64 = 86_400_000_000;

impl Stats {
    fn add_event(&mut self, event: &LoggedEvent) {
        self.total += 1;
        *self.by_type.entry(event.event_type.clone()).or_default() += 1;
        if let Some(actor) = &event.actor {
            *self.by_actor.entry(actor.clone()).or_default() += 1;
        }
        *self.by_priority.entry(event.priority).or_default() += 1;
        self.add_time(event.timestamp_us, 1);
    }

    fn add_time(&mut self, timestamp_us: i64, count: u64) {
        let hour = timestamp_us.div_euclid(MICROS_PER_HOUR) * MICROS_PER_HOUR;
        let day = timestamp_us.div_euclid(MICROS_PER_DAY) * MICROS_PER_DAY;
        *self.by_hour.entry(hour).or_default() += count;
        *self.by_day.entry(day).or_default() += count;
    }
}

/// One field change of an entity, from a payload of the form
/// `{"changes": {field: {"before": x, "after": y}}}`.
#[derive(Debug, Clone, PartialEq)]
pub struct StateChange {
    /// The event that made the change.
    pub seq: u64,
    /// Its timestamp, in microseconds since the Unix epoch.
    pub timestamp_us: i64,
    /// Its actor.
    pub actor: Option<String>,
    /// Its type.
    pub event_type: String,
    /// The field that changed.
    pub field: String,
    /// Its value before (`null` when it had none).
    pub before: serde_json::Value,
    /// Its value after.
    pub after: serde_json::Value,
}

/// The ready-made fold of [`crate::Log::reconstruct`]: applies a payload's
/// `changes` (`{field: {"before": x, "after": y}}`) to a JSON object,
/// setting each field to its `after` value (a change without `after`
/// removes the field). Events without `changes` leave the state alone.
pub fn apply_changes(mut state: serde_json::Value, event: &LoggedEvent) -> serde_json::Value {
    let Ok(payload) = event.payload_as::<serde_json::Value>() else {
        return state;
    };
    let Some(changes) = payload.get("changes").and_then(|c| c.as_object()) else {
        return state;
    };
    if !state.is_object() {
        state = serde_json::Value::Object(serde_json::Map::new());
    }
    if let Some(object) = state.as_object_mut() {
        for (field, change) in changes {
            match change.get("after") {
                Some(after) => {
                    object.insert(field.clone(), after.clone());
                }
                None => {
                    object.remove(field);
                }
            }
        }
    }
    state
}

/// What [`crate::Log::verify`] found. `problems` is empty for a sound log.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VerifyReport {
    /// Events read and checked (CRC, sequence continuity, causes before effects).
    pub events_checked: u64,
    /// Events inside the checked range that retention deleted (accounted
    /// for by its deletion notes: holes that are not lost data).
    pub deleted_events: u64,
    /// Retention's deletions, one line each: range, count, rule and date.
    pub deletions: Vec<String>,
    /// Causes not found in a log from which retention deleted events (the
    /// cause may be among them; without deletions a missing cause is a
    /// problem).
    pub causes_not_found: u64,
    /// Index entries compared with the log (0 when no index was available).
    pub index_entries_checked: u64,
    /// Whether the secondary indexes could be checked too.
    pub index_available: bool,
    /// What is wrong, one sentence each naming where.
    pub problems: Vec<String>,
}

impl VerifyReport {
    /// Whether no problem was found.
    pub fn is_ok(&self) -> bool {
        self.problems.is_empty()
    }
}

/// What [`crate::Log::verify_chain`] found for one correlation.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChainReport {
    /// Events of the correlation.
    pub events: u64,
    /// Events without a causation id.
    pub roots: Vec<u64>,
    /// `(seq, causation id)` of events whose cause is not an earlier event
    /// of the same correlation.
    pub dangling: Vec<(u64, Uuid)>,
    /// What is wrong, one sentence each.
    pub problems: Vec<String>,
}

impl ChainReport {
    /// One root, nothing dangling.
    pub fn is_tree(&self) -> bool {
        self.roots.len() == 1 && self.dangling.is_empty() && self.problems.is_empty()
    }
}

/// Most problems a report lists; past this it says how many more.
const PROBLEMS_LISTED_MAX: usize = 100;

/// Checks `verify` does between two calls of its progress callback: a call
/// per event would cost a progress bar more than the check itself, and
/// this is still many calls a second.
const VERIFY_PROGRESS_INTERVAL_CHECKS: u64 = 4096;

/// The progress callback of `verify`, called with 0 first, then at most
/// once every [`VERIFY_PROGRESS_INTERVAL_CHECKS`], then with `total`;
/// `done` never decreases and never passes `total`.
struct VerifyProgress<'a> {
    report: &'a mut dyn FnMut(u64, u64),
    total: u64,
    reported: u64,
}

impl<'a> VerifyProgress<'a> {
    fn start(report: &'a mut dyn FnMut(u64, u64), total: u64) -> VerifyProgress<'a> {
        report(0, total);
        VerifyProgress {
            report,
            total,
            reported: 0,
        }
    }

    fn advance(&mut self, done: u64) {
        let done = done.min(self.total);
        if done >= self.reported + VERIFY_PROGRESS_INTERVAL_CHECKS {
            self.reported = done;
            (self.report)(done, self.total);
        }
    }

    fn finish(self) {
        (self.report)(self.total, self.total);
    }
}

fn note(problems: &mut Vec<String>, extra: &mut u64, problem: String) {
    if problems.len() < PROBLEMS_LISTED_MAX {
        problems.push(problem);
    } else {
        *extra += 1;
    }
}

impl Shared {
    fn index_and_mark(&self) -> (Option<Arc<IndexState>>, u64) {
        match self.index.get() {
            Some(index) => {
                let mark = index.mark();
                (Some(index), mark)
            }
            None => (None, 0),
        }
    }

    /// How many of `from..=through` retention deleted, if its deletion
    /// notes account for every one of them; else the first that no note
    /// explains.
    fn deleted_in(&self, from: u64, through: u64) -> std::result::Result<u64, u64> {
        let mut seq = from;
        while seq <= through {
            let Some(crate::catalog::Piece {
                holder: crate::catalog::Holder::Archive(archive),
                ..
            }) = self.catalog.locate(seq)
            else {
                return Err(seq);
            };
            let Some(note) = archive.deletion_of(seq) else {
                return Err(seq);
            };
            // A note's range may hold kept events too, which the scan
            // saw; the seqs it skipped up to the range's end are deleted.
            seq = note.last_seq.min(through) + 1;
        }
        Ok(through - from + 1)
    }

    /// Every deletion note of the log's archives, for people.
    fn deletion_notes(&self) -> Vec<String> {
        let mut lines = Vec::new();
        for piece in self.catalog.pieces() {
            if let crate::catalog::Holder::Archive(archive) = &piece.holder {
                lines.extend(archive.deletions().iter().map(ToString::to_string));
            }
        }
        lines
    }

    fn first_readable(&self) -> u64 {
        self.first_seq
            .load(std::sync::atomic::Ordering::Acquire)
            .max(1)
    }

    pub(crate) fn query(self: &Arc<Self>, query: &Query) -> Result<Events> {
        self.query_through(query, None)
    }

    /// `query`; with `indexed_only = Some(m)`, only the events the indexes
    /// hold through seq `m`, and no scan of the log after it (`stats`
    /// counts that part itself, once).
    fn query_through(self: &Arc<Self>, query: &Query, indexed_only: Option<u64>) -> Result<Events> {
        self.check_poison()?;
        if let Some(pattern) = &query.type_pattern {
            validate_pattern(pattern)?;
        }
        let last = self.marks.last_seq();
        let (index, mark) = self.index_and_mark();
        let mark = mark.min(last).min(indexed_only.unwrap_or(u64::MAX));
        let mut entities = None;
        if let (true, Some(entity)) = (query.linked, &query.entity) {
            entities = Some(self.linked_entities(index.as_deref(), mark, last, entity)?);
        }
        let mut min_seq = self
            .first_readable()
            .max(query.after_seq.map_or(0, |after| after.saturating_add(1)));
        let mut allowed_blocks = None;
        let source = match &index {
            None => Source::Nothing,
            Some(index) => {
                if query.since_us.is_some() || query.until_us.is_some() {
                    let blocks = index.time_blocks();
                    let allowed: Vec<bool> = blocks
                        .iter()
                        .map(|range| match range {
                            Some((min, max)) => {
                                query.since_us.is_none_or(|since| *max >= since)
                                    && query.until_us.is_none_or(|until| *min < until)
                            }
                            None => true,
                        })
                        .collect();
                    if let Some(first) = allowed.iter().position(|&a| a) {
                        min_seq = min_seq.max(first as u64 * TIME_BLOCK_EVENTS);
                    } else {
                        min_seq = mark.saturating_add(1);
                    }
                    allowed_blocks = Some(allowed);
                }
                self.plan(
                    index,
                    query,
                    entities.as_ref(),
                    allowed_blocks.as_deref(),
                    (min_seq, mark),
                )?
            }
        };
        Ok(Events {
            shared: Arc::clone(self),
            index,
            query: query.clone(),
            entities,
            source,
            mark,
            min_seq,
            allowed_blocks,
            last_returned: 0,
            ahead: VecDeque::new(),
            tail: None,
            tail_range: match indexed_only {
                Some(_) => (1, 0),
                None => ((mark + 1).max(min_seq), last),
            },
            returned: 0,
            finished: false,
        })
    }

    fn plan(
        &self,
        index: &IndexState,
        query: &Query,
        entities: Option<&HashSet<Entity>>,
        allowed_blocks: Option<&[bool]>,
        (min_seq, mark): (u64, u64),
    ) -> Result<Source> {
        let stream = |kind: PostingKind, key: Vec<u8>| PostingStream {
            kind,
            key,
            buffer: VecDeque::new(),
            next_from: Some(min_seq.max(1)),
        };
        let streams = if let Some(id) = query.correlation {
            vec![stream(PostingKind::Correlation, id.as_bytes().to_vec())]
        } else if let Some(set) = entities {
            set.iter()
                .map(|e| stream(PostingKind::Entity, keys::entity_key(e)))
                .collect()
        } else if let Some(entity) = &query.entity {
            vec![stream(PostingKind::Entity, keys::entity_key(entity))]
        } else if let Some(session) = &query.session {
            vec![stream(PostingKind::Session, session.as_bytes().to_vec())]
        } else if let Some(actor) = &query.actor {
            vec![stream(PostingKind::Actor, actor.as_bytes().to_vec())]
        } else if let Some(pattern) = &query.type_pattern {
            let types: Vec<String> = if pattern.contains('*') {
                index
                    .registered_types()?
                    .into_iter()
                    .filter(|t| type_matches(pattern, t))
                    .collect()
            } else {
                vec![pattern.clone()]
            };
            types
                .into_iter()
                .map(|t| stream(PostingKind::Type, t.into_bytes()))
                .collect()
        } else {
            // No key: every seq the index covers, or only the blocks whose
            // time range meets the window.
            let mut blocks = Vec::new();
            let first = min_seq;
            let last_block = mark / TIME_BLOCK_EVENTS;
            for block in 0..=last_block {
                if mark == 0 {
                    break;
                }
                let wanted = allowed_blocks
                    .and_then(|a| a.get(block as usize).copied())
                    .unwrap_or(true);
                if !wanted {
                    continue;
                }
                let lo = (block * TIME_BLOCK_EVENTS).max(first);
                let hi = ((block + 1) * TIME_BLOCK_EVENTS - 1).min(mark);
                if lo > hi {
                    continue;
                }
                match blocks.last_mut() {
                    Some((_, prev_hi)) if *prev_hi + 1 == lo => *prev_hi = hi,
                    _ => blocks.push((lo, hi)),
                }
            }
            return Ok(Source::Blocks {
                blocks,
                at: 0,
                next: 0,
            });
        };
        Ok(Source::Postings(streams))
    }

    /// The entity and every entity linked to it: named in a `link.*`
    /// metadata entry of one of its events, or naming it in one of theirs.
    fn linked_entities(
        self: &Arc<Self>,
        index: Option<&IndexState>,
        mark: u64,
        last: u64,
        entity: &Entity,
    ) -> Result<HashSet<Entity>> {
        let mut set = HashSet::new();
        set.insert(entity.clone());
        let own = keys::entity_key(entity);
        if let Some(index) = index {
            let prefix = keys::link_key(&own, &[]);
            index
                .store
                .visit(&prefix, &keys::prefix_end(&prefix), &mut |key, _| {
                    if let Some(other) = keys::decode_entity_key(&key[prefix.len()..]) {
                        set.insert(other);
                    }
                    Ok(true)
                })?;
        }
        let from = (mark + 1).max(self.first_readable());
        if from <= last {
            for event in self.iter(from..=last)? {
                let event = event?;
                let Some(own_entity) = &event.entity else {
                    continue;
                };
                for (name, value) in &event.metadata {
                    let Some(linked_type) = name.strip_prefix(LINK_METADATA_PREFIX) else {
                        continue;
                    };
                    if own_entity == entity {
                        set.insert(Entity {
                            entity_type: linked_type.to_string(),
                            entity_id: value.clone(),
                        });
                    } else if linked_type == entity.entity_type && *value == entity.entity_id {
                        set.insert(own_entity.clone());
                    }
                }
            }
        }
        Ok(set)
    }

    /// The seq of the event with `id`: from the id index, else from the
    /// part of the log it has not reached.
    pub(crate) fn seq_of_id(self: &Arc<Self>, id: Uuid) -> Result<Option<u64>> {
        let last = self.marks.last_seq();
        let (index, mark) = self.index_and_mark();
        if let Some(index) = &index {
            if let Some(seq) = index.lookup_id(id.as_bytes()) {
                if seq <= mark {
                    return Ok(Some(seq));
                }
            }
        }
        let from = (mark + 1).max(self.first_readable());
        if from <= last {
            for event in self.iter(from..=last)? {
                let event = event?;
                if event.id == id {
                    return Ok(Some(event.seq));
                }
            }
        }
        Ok(None)
    }

    pub(crate) fn find_by_id(self: &Arc<Self>, id: Uuid) -> Result<Option<LoggedEvent>> {
        match self.seq_of_id(id)? {
            Some(seq) => self.get(seq).map(Some),
            None => Ok(None),
        }
    }

    pub(crate) fn causation_chain(self: &Arc<Self>, id: Uuid) -> Result<Vec<LoggedEvent>> {
        let Some(mut event) = self.find_by_id(id)? else {
            return Err(Error::UnknownEventId(id));
        };
        let mut chain = Vec::new();
        loop {
            let cause = event.causation_id;
            let seq = event.seq;
            chain.push(event);
            let Some(cause) = cause else { break };
            match self.seq_of_id(cause)? {
                // A cause must come before its effect; anything else is
                // damage (`verify` reports it) and ends the walk.
                Some(parent) if parent < seq => event = self.get(parent)?,
                _ => break,
            }
        }
        chain.reverse();
        Ok(chain)
    }

    /// Seqs of the events whose causation id is `id` (the event at `seq`).
    fn children_of(
        self: &Arc<Self>,
        seq: u64,
        id: Uuid,
        index: Option<&IndexState>,
        mark: u64,
        last: u64,
    ) -> Result<Vec<u64>> {
        let mut children = Vec::new();
        if let Some(index) = index {
            children = index.children(seq, mark)?;
        }
        // An id held by several events (appended again after it left the
        // duplicate window) names its first one, as in the index: a later
        // copy has no children of its own.
        if self.seq_of_id(id)? != Some(seq) {
            return Ok(children);
        }
        let from = (mark + 1).max(self.first_readable()).max(seq + 1);
        if from <= last {
            for event in self.iter(from..=last)? {
                let event = event?;
                if event.causation_id == Some(id) {
                    children.push(event.seq);
                }
            }
        }
        Ok(children)
    }

    pub(crate) fn descendants(self: &Arc<Self>, id: Uuid) -> Result<CausationTree> {
        let Some(root) = self.find_by_id(id)? else {
            return Err(Error::UnknownEventId(id));
        };
        let last = self.marks.last_seq();
        let (index, mark) = self.index_and_mark();
        let mark = mark.min(last);
        // Built iteratively (a deep chain must not overflow the stack):
        // first every node with its parent's position, then the tree.
        let mut nodes: Vec<(LoggedEvent, Option<usize>)> = vec![(root, None)];
        let mut at = 0;
        while at < nodes.len() {
            let (seq, node_id) = (nodes[at].0.seq, nodes[at].0.id);
            for child in self.children_of(seq, node_id, index.as_deref(), mark, last)? {
                let event = self.get(child)?;
                if event.causation_id == Some(node_id) {
                    nodes.push((event, Some(at)));
                }
            }
            at += 1;
        }
        let mut built: Vec<Option<CausationTree>> = Vec::with_capacity(nodes.len());
        let mut parents = Vec::with_capacity(nodes.len());
        for (event, parent) in nodes {
            built.push(Some(CausationTree {
                event,
                children: Vec::new(),
            }));
            parents.push(parent);
        }
        // Children come after their parents: attach from the back.
        for i in (1..built.len()).rev() {
            if let (Some(parent), Some(node)) = (parents[i], built[i].take()) {
                if let Some(Some(parent_node)) = built.get_mut(parent) {
                    parent_node.children.push(node);
                }
            }
        }
        let mut root = built
            .into_iter()
            .next()
            .flatten()
            .ok_or(Error::Internal("descendants lost the root"))?;
        sort_tree(&mut root);
        Ok(root)
    }

    pub(crate) fn latest(self: &Arc<Self>, entity: &Entity) -> Result<Option<LoggedEvent>> {
        let last = self.marks.last_seq();
        let (index, mark) = self.index_and_mark();
        let mark = mark.min(last);
        let from = (mark + 1).max(self.first_readable());
        let mut found = None;
        if from <= last {
            for event in self.iter(from..=last)? {
                let event = event?;
                if event.entity.as_ref() == Some(entity) {
                    found = Some(event);
                }
            }
        }
        if found.is_some() {
            return Ok(found);
        }
        if let Some(index) = index {
            if let Some(seq) =
                index.last_posting(PostingKind::Entity, &keys::entity_key(entity), mark)?
            {
                return self.get(seq).map(Some);
            }
        }
        Ok(None)
    }

    pub(crate) fn stats(self: &Arc<Self>, range: (Option<i64>, Option<i64>)) -> Result<Stats> {
        // No event lies outside the accepted timestamps, so clamping the
        // window changes no answer and keeps the minute arithmetic in range.
        let clamp = |t: i64| t.clamp(TIMESTAMP_US_MIN, TIMESTAMP_US_MAX + 1);
        let (since, until) = (range.0.map(clamp), range.1.map(clamp));
        let last = self.marks.last_seq();
        let index = self.index.get();
        let mut stats = Stats::default();
        // The counters and the mark they stand for are read under the
        // indexer's apply gate, so that no batch lands between them.
        let gate = index.as_ref().map(|index| index.apply_gate.read());
        let mark = index.as_ref().map_or(0, |index| index.mark()).min(last);
        let Some(index) = index.clone() else {
            for event in self.query(&Query::all().during_opt(since, until))? {
                stats.add_event(&event?);
            }
            return Ok(stats);
        };
        // Whole minutes inside the window come from the counters.
        let first_minute = since.map(|s| (s + MICROS_PER_MINUTE - 1).div_euclid(MICROS_PER_MINUTE));
        let end_minute = until.map(|u| u.div_euclid(MICROS_PER_MINUTE));
        let whole = match (first_minute, end_minute) {
            (Some(a), Some(b)) if a >= b => None,
            other => Some(other),
        };
        if let Some((first_minute, end_minute)) = whole {
            for dim in [
                StatDim::All,
                StatDim::Type,
                StatDim::Actor,
                StatDim::Priority,
            ] {
                let from = keys::stat_prefix(dim, first_minute.unwrap_or(i64::MIN));
                let below = match end_minute {
                    Some(end) => keys::stat_prefix(dim, end),
                    None => keys::prefix_end(&[keys::STAT, dim as u8]),
                };
                let mut failure = None;
                index.store.visit(&from, &below, &mut |key, value| {
                    let (Some(minute_bytes), Ok(count)) = (
                        key.get(2..10),
                        <[u8; 8]>::try_from(value).map(u64::from_le_bytes),
                    ) else {
                        failure = Some("a counter entry is malformed");
                        return Ok(false);
                    };
                    let minute =
                        keys::from_sortable_i64(minute_bytes.try_into().unwrap_or_default());
                    let name = &key[10..];
                    match dim {
                        StatDim::All => {
                            stats.total += count;
                            stats.add_time(minute * MICROS_PER_MINUTE, count);
                        }
                        StatDim::Type => {
                            *stats
                                .by_type
                                .entry(String::from_utf8_lossy(name).into_owned())
                                .or_default() += count
                        }
                        StatDim::Actor => {
                            *stats
                                .by_actor
                                .entry(String::from_utf8_lossy(name).into_owned())
                                .or_default() += count
                        }
                        StatDim::Priority => {
                            if let Some(p) = name.first().and_then(|&b| Priority::from_u8(b)) {
                                *stats.by_priority.entry(p).or_default() += count;
                            }
                        }
                    }
                    Ok(true)
                })?;
                if let Some(what) = failure {
                    return Err(Error::Index {
                        path: index.path.clone(),
                        message: what.into(),
                    });
                }
            }
        }
        drop(gate);
        // Partial minutes at the edges (indexed events only; the tail is
        // counted below), read from the events.
        let mut edges: Vec<(Option<i64>, Option<i64>)> = Vec::new();
        match whole {
            None => edges.push((since, until)),
            Some((first_minute, end_minute)) => {
                if let (Some(s), Some(m)) = (since, first_minute) {
                    if s < m * MICROS_PER_MINUTE {
                        edges.push((Some(s), Some(m * MICROS_PER_MINUTE)));
                    }
                }
                if let (Some(u), Some(m)) = (until, end_minute) {
                    if m * MICROS_PER_MINUTE < u {
                        edges.push((Some(m * MICROS_PER_MINUTE), Some(u)));
                    }
                }
            }
        }
        for (a, b) in edges {
            // Only what the counters' mark covers: the rest is the tail,
            // counted once, below.
            for event in self.query_through(&Query::all().during_opt(a, b), Some(mark))? {
                stats.add_event(&event?);
            }
        }
        let from = (mark + 1).max(self.first_readable());
        if from <= last {
            let window = Query::all().during_opt(since, until);
            for event in self.iter(from..=last)? {
                let event = event?;
                if window.in_window(event.timestamp_us) {
                    stats.add_event(&event);
                }
            }
        }
        Ok(stats)
    }

    pub(crate) fn verify(
        self: &Arc<Self>,
        progress: &mut dyn FnMut(u64, u64),
    ) -> Result<VerifyReport> {
        let mut report = VerifyReport::default();
        let mut extra = 0u64;
        let last = self.marks.last_seq();
        let (index, mark) = self.index_and_mark();
        let mark = mark.min(last);
        report.index_available = index.is_some();
        let first = self.first_readable();
        // The work in checks: each sequence number of the log (pass 1),
        // then each indexed one twice (its postings, then its id).
        let log_checks = (last + 1).saturating_sub(first);
        let indexed = mark.saturating_sub(first.saturating_sub(1));
        let index_checks = if index.is_some() { 2 * indexed } else { 0 };
        let mut progress = VerifyProgress::start(progress, log_checks + index_checks);
        let report_deletions_exist = self.catalog.deleted_through().is_some();
        report.deletions = self.deletion_notes();
        // Pass 1: the log itself: continuity (the iterator checks each
        // seq), CRCs (each read), causes that come before their effects.
        let mut expected_entries = 0u64;
        let mut previous = None;
        if first <= last {
            for event in self.iter(first..=last)? {
                let event = match event {
                    Ok(event) => event,
                    Err(e) => {
                        note(&mut report.problems, &mut extra, format!("log: {e}"));
                        break;
                    }
                };
                let expected = previous.map_or(first, |p: u64| p + 1);
                if event.seq != expected {
                    // A hole is sound when retention's deletion notes
                    // account for every sequence number in it.
                    match self.deleted_in(expected, event.seq - 1) {
                        Ok(count) => report.deleted_events += count,
                        Err(unexplained) => note(
                            &mut report.problems,
                            &mut extra,
                            format!(
                                "log: seq {} follows {}; seq {unexplained} is missing and no retention rule deleted it",
                                event.seq,
                                expected - 1
                            ),
                        ),
                    }
                }
                previous = Some(event.seq);
                report.events_checked += 1;
                progress.advance((event.seq + 1).saturating_sub(first));
                let mut cause_indexed = false;
                if let Some(cause) = event.causation_id {
                    match self.seq_of_id(cause)? {
                        Some(parent) if parent < event.seq => cause_indexed = true,
                        Some(parent) => note(
                            &mut report.problems,
                            &mut extra,
                            format!(
                                "seq {}: its cause {cause} is the later event {parent}",
                                event.seq
                            ),
                        ),
                        // Retention may have deleted the cause.
                        None if report_deletions_exist => report.causes_not_found += 1,
                        None => note(
                            &mut report.problems,
                            &mut extra,
                            format!("seq {}: its cause {cause} is not in the log", event.seq),
                        ),
                    }
                }
                if event.seq <= mark {
                    expected_entries +=
                        posting_entries_of(&event) as u64 + u64::from(cause_indexed);
                }
            }
        }
        // Pass 2: every index entry names an event that has that key, and
        // there are exactly as many as the log implies.
        if let Some(index) = &index {
            // The postings are visited in key order, not seq order: their
            // share of the checks advances with the entries found out of
            // those the log implies.
            let postings_done = |found_entries: u64| -> u64 {
                if expected_entries == 0 {
                    return indexed;
                }
                let scaled =
                    u128::from(found_entries) * u128::from(indexed) / u128::from(expected_entries);
                u64::try_from(scaled).map_or(indexed, |scaled| scaled.min(indexed))
            };
            let mut found_entries = 0u64;
            let mut checked = 0u64;
            let mut problems = Vec::new();
            index
                .store
                .visit(&[keys::POSTING], &[keys::POSTING + 1], &mut |key, value| {
                    let Some((kind, posting_key, first_seq)) = split_posting_key(key) else {
                        problems.push("a posting key is malformed".to_string());
                        return Ok(true);
                    };
                    if kind == PostingKind::Children as u8 {
                        let Ok(block) = <[u8; 8]>::try_from(posting_key).map(u64::from_be_bytes)
                        else {
                            problems.push("a causation-link key is malformed".to_string());
                            return Ok(true);
                        };
                        let mut links = Vec::new();
                        let block_start = block * keys::CHILDREN_BLOCK_PARENTS;
                        if keys::decode_links(first_seq, block_start, value, &mut links).is_err() {
                            problems.push(format!("causation links at seq {first_seq} do not decode"));
                            return Ok(true);
                        }
                        for (parent, child) in links {
                            if child > mark {
                                continue;
                            }
                            found_entries += 1;
                            checked += 1;
                            progress.advance(log_checks + postings_done(found_entries));
                            let linked = match (self.get(child), self.get(parent)) {
                                (Ok(child_event), Ok(parent_event)) => {
                                    parent < child
                                        && child_event.causation_id == Some(parent_event.id)
                                }
                                _ => false,
                            };
                            if !linked {
                                problems.push(format!(
                                    "index says seq {parent} caused seq {child}; the events disagree"
                                ));
                            }
                        }
                        return Ok(problems.len() < PROBLEMS_LISTED_MAX);
                    }
                    let mut seqs = Vec::new();
                    if keys::decode_chunk(first_seq, value, &mut seqs).is_err() {
                        problems.push(format!("posting chunk at seq {first_seq} does not decode"));
                        return Ok(true);
                    }
                    for seq in seqs {
                        if seq > mark {
                            continue;
                        }
                        found_entries += 1;
                        checked += 1;
                        progress.advance(log_checks + postings_done(found_entries));
                        let event = match self.get(seq) {
                            Ok(event) => event,
                            Err(e) => {
                                problems.push(format!(
                                    "index names seq {seq}, which cannot be read: {e}"
                                ));
                                continue;
                            }
                        };
                        if !event_has_posting(&event, kind, posting_key) {
                            problems.push(format!(
                            "index lists seq {seq} under a {kind:?} key the event does not have"
                        ));
                        }
                    }
                    Ok(problems.len() < PROBLEMS_LISTED_MAX)
                })?;
            for problem in problems {
                note(&mut report.problems, &mut extra, problem);
            }
            if found_entries != expected_entries {
                note(
                    &mut report.problems,
                    &mut extra,
                    format!(
                        "the indexes hold {found_entries} posting entries through seq {mark}; the log implies {expected_entries}"
                    ),
                );
            }
            // The id runs: every id maps to its own event, one per event.
            let mut ids = 0u64;
            for run in index.id_runs().iter() {
                for (id, seq) in run.pairs() {
                    if seq > mark {
                        continue; // a batch applied after the mark was read
                    }
                    ids += 1;
                    checked += 1;
                    progress.advance(log_checks + indexed + ids.min(indexed));
                    match self.get(seq) {
                        Ok(event) if event.id.as_bytes() == &id => {}
                        _ => note(
                            &mut report.problems,
                            &mut extra,
                            format!("id index maps an id to seq {seq}, which has another id"),
                        ),
                    }
                }
            }
            if ids != indexed {
                note(
                    &mut report.problems,
                    &mut extra,
                    format!("the id index holds {ids} ids; {indexed} events are indexed"),
                );
            }
            report.index_entries_checked = checked;
        }
        if extra > 0 {
            report
                .problems
                .push(format!("... and {extra} more problems"));
        }
        progress.finish();
        Ok(report)
    }

    pub(crate) fn verify_chain(self: &Arc<Self>, correlation: Uuid) -> Result<ChainReport> {
        let mut report = ChainReport::default();
        let mut ids = std::collections::HashMap::new();
        for event in self.query(&Query::correlation(correlation))? {
            let event = event?;
            report.events += 1;
            match event.causation_id {
                None => report.roots.push(event.seq),
                Some(cause) => match ids.get(&cause) {
                    Some(&parent) if parent < event.seq => {}
                    _ => report.dangling.push((event.seq, cause)),
                },
            }
            if ids.insert(event.id, event.seq).is_some() {
                report
                    .problems
                    .push(format!("id {} appears twice in the correlation", event.id));
            }
        }
        if report.events == 0 {
            report
                .problems
                .push(format!("no event has correlation id {correlation}"));
        }
        Ok(report)
    }
}

impl Query {
    fn during_opt(self, since_us: Option<i64>, until_us: Option<i64>) -> Query {
        Query {
            since_us,
            until_us,
            ..self
        }
    }
}

fn sort_tree(tree: &mut CausationTree) {
    let mut stack = vec![tree];
    while let Some(node) = stack.pop() {
        node.children.sort_by_key(|c| c.event.seq);
        stack.extend(node.children.iter_mut());
    }
}

/// How many posting entries the indexer writes for `event`, its
/// causation link aside (written only when the cause is an earlier event).
fn posting_entries_of(event: &LoggedEvent) -> usize {
    1 + usize::from(event.correlation_id.is_some())
        + usize::from(event.entity.is_some())
        + usize::from(event.session.is_some())
        + usize::from(event.actor.is_some())
}

fn split_posting_key(key: &[u8]) -> Option<(u8, &[u8], u64)> {
    let kind = *key.get(1)?;
    let len = u16::from_be_bytes(key.get(2..4)?.try_into().ok()?) as usize;
    let posting_key = key.get(4..4 + len)?;
    let first = keys::trailing_seq(key)?;
    (key.len() == 4 + len + 8).then_some((kind, posting_key, first))
}

fn event_has_posting(event: &LoggedEvent, kind: u8, key: &[u8]) -> bool {
    match kind {
        k if k == PostingKind::Correlation as u8 => {
            event
                .correlation_id
                .map(|c| *c.as_bytes())
                .as_ref()
                .map(|b| &b[..])
                == Some(key)
        }
        k if k == PostingKind::Entity as u8 => {
            event.entity.as_ref().map(keys::entity_key).as_deref() == Some(key)
        }
        k if k == PostingKind::Session as u8 => {
            event.session.as_deref().map(str::as_bytes) == Some(key)
        }
        k if k == PostingKind::Actor as u8 => {
            event.actor.as_deref().map(str::as_bytes) == Some(key)
        }
        k if k == PostingKind::Type as u8 => event.event_type.as_bytes() == key,
        _ => false,
    }
}

/// Checks a dotted type pattern: segments of `[A-Za-z0-9_-]` or `*`, at
/// most [`crate::EVENT_TYPE_BYTES_MAX`] bytes. Each segment of a pattern
/// matches one segment of a type, of at least one byte, so a longer
/// pattern could match no type: it is a mistake, not a query.
pub fn validate_pattern(pattern: &str) -> Result<()> {
    if pattern.len() > crate::event::EVENT_TYPE_BYTES_MAX {
        return Err(Error::InvalidEvent(format!(
            "type pattern {:?}: longer than {} bytes, the longest type name, so it can match nothing",
            crate::event::shorten_for_message(pattern),
            crate::event::EVENT_TYPE_BYTES_MAX
        )));
    }
    let valid = !pattern.is_empty()
        && pattern.split('.').all(|segment| {
            segment == "*"
                || (!segment.is_empty()
                    && segment
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-'))
        });
    if valid {
        Ok(())
    } else {
        Err(Error::InvalidEvent(format!(
            "type pattern {:?}: segments must be names ([A-Za-z0-9_-]) or '*', separated by single dots",
            crate::event::shorten_for_message(pattern)
        )))
    }
}

/// Runnable examples of the query methods, put in the docs of [`crate::Log`]'s
/// copy of each (not again in [`crate::LogReader`]'s, to build each once).
macro_rules! query_example {
    (with, query) => {
        r#"
```
# fn main() -> evlog::Result<()> {
# let log = evlog::Log::open_temporary(evlog::Options::default())?;
use evlog::{Event, Uuid};
log.append(Event::new("task.created").entity("task", "T-1").actor("ana"))?;
log.append(Event::new("task.assigned").entity("task", "T-1").actor("bob"))?;
log.append(Event::new("task.created").entity("task", "T-2").actor("ana"))?;
let query = evlog::Query::entity("task", "T-1").and_actor("bob").event_type("task.*");
let types: Vec<String> = log.query(&query)?
    .map(|e| e.map(|e| e.event_type))
    .collect::<evlog::Result<_>>()?;
assert_eq!(types, ["task.assigned"]);
# Ok(()) }
```"#
    };
    (with, by_correlation) => {
        r#"
```
# fn main() -> evlog::Result<()> {
# let log = evlog::Log::open_temporary(evlog::Options::default())?;
use evlog::{Event, Uuid};
let request = Uuid::now_v7();
log.append(Event::new("order.placed").correlation_id(request))?;
log.append(Event::new("mail.sent"))?;
log.append(Event::new("order.paid").correlation_id(request))?;
let types: Vec<String> = log.by_correlation(request)?
    .map(|e| e.map(|e| e.event_type))
    .collect::<evlog::Result<_>>()?;
assert_eq!(types, ["order.placed", "order.paid"]);
# Ok(()) }
```"#
    };
    (with, by_session) => {
        r#"
```
# fn main() -> evlog::Result<()> {
# let log = evlog::Log::open_temporary(evlog::Options::default())?;
use evlog::{Event, Uuid};
log.append(Event::new("page.viewed").session("s-1"))?;
log.append(Event::new("page.viewed").session("s-2"))?;
assert_eq!(log.by_session("s-1")?.count(), 1);
# Ok(()) }
```"#
    };
    (with, by_actor) => {
        r#"
```
# fn main() -> evlog::Result<()> {
# let log = evlog::Log::open_temporary(evlog::Options::default())?;
use evlog::{Event, Uuid};
log.append(Event::new("task.created").actor("agent-7"))?;
log.append(Event::new("task.created").actor("agent-8"))?;
assert_eq!(log.by_actor("agent-7")?.count(), 1);
# Ok(()) }
```"#
    };
    (with, by_type) => {
        r#"
```
# fn main() -> evlog::Result<()> {
# let log = evlog::Log::open_temporary(evlog::Options::default())?;
use evlog::{Event, Uuid};
log.append(Event::new("validation.passed"))?;
log.append(Event::new("validation.failed"))?;
log.append(Event::new("task.created"))?;
assert_eq!(log.by_type("validation.*", ..)?.count(), 2);
# Ok(()) }
```"#
    };
    (with, between) => {
        r#"
```
# fn main() -> evlog::Result<()> {
# let log = evlog::Log::open_temporary(evlog::Options::default())?;
use evlog::{Event, Uuid};
let noon_us = 1_767_268_800_000_000; // 2026-01-01T12:00:00Z
log.append(Event::new("a.b").timestamp_us(noon_us - 1))?;
log.append(Event::new("a.b").timestamp_us(noon_us))?;
log.append(Event::new("a.b").timestamp_us(noon_us + 3_600_000_000))?;
// From noon (inclusive) to one o'clock (exclusive).
assert_eq!(log.between(noon_us..noon_us + 3_600_000_000)?.count(), 1);
# Ok(()) }
```"#
    };
    (with, entity_history) => {
        r#"
```
# fn main() -> evlog::Result<()> {
# let log = evlog::Log::open_temporary(evlog::Options::default())?;
use evlog::{Event, Uuid};
log.append(Event::new("account.opened").entity("account", "A-1"))?;
log.append(Event::new("account.opened").entity("account", "A-2"))?;
log.append(Event::new("account.closed").entity("account", "A-1"))?;
let types: Vec<String> = log.entity_history("account", "A-1", ..)?
    .map(|e| e.map(|e| e.event_type))
    .collect::<evlog::Result<_>>()?;
assert_eq!(types, ["account.opened", "account.closed"]);
# Ok(()) }
```"#
    };
    (with, entity_chain) => {
        r#"
```
# fn main() -> evlog::Result<()> {
# let log = evlog::Log::open_temporary(evlog::Options::default())?;
use evlog::{Event, Uuid};
log.append(Event::new("sprint.started").entity("sprint", "S-1"))?;
log.append(Event::new("task.created").entity("task", "T-1").metadata("link.sprint", "S-1"))?;
// The task's chain holds the sprint's events, and the sprint's the task's.
assert_eq!(log.entity_chain("task", "T-1")?.count(), 2);
assert_eq!(log.entity_chain("sprint", "S-1")?.count(), 2);
# Ok(()) }
```"#
    };
    (with, latest) => {
        r#"
```
# fn main() -> evlog::Result<()> {
# let log = evlog::Log::open_temporary(evlog::Options::default())?;
use evlog::{Event, Uuid};
log.append(Event::new("price.set").entity("sku", "X").json_payload(&10)?)?;
log.append(Event::new("price.set").entity("sku", "X").json_payload(&12)?)?;
let latest = log.latest("sku", "X")?.expect("an event");
assert_eq!(latest.payload_as::<u32>()?, 12);
assert!(log.latest("sku", "nope")?.is_none());
# Ok(()) }
```"#
    };
    (with, find_by_id) => {
        r#"
```
# fn main() -> evlog::Result<()> {
# let log = evlog::Log::open_temporary(evlog::Options::default())?;
use evlog::{Event, Uuid};
let id = Uuid::now_v7();
let seq = log.append(Event::new("a.b").id(id))?;
assert_eq!(log.find_by_id(id)?.map(|e| e.seq), Some(seq));
assert!(log.find_by_id(Uuid::now_v7())?.is_none());
# Ok(()) }
```"#
    };
    (with, causation_chain) => {
        r#"
```
# fn main() -> evlog::Result<()> {
# let log = evlog::Log::open_temporary(evlog::Options::default())?;
use evlog::{Event, Uuid};
let root = log.get(log.append(Event::new("request.received"))?)?.id;
let middle = log.get(log.append(Event::new("job.started").causation_id(root))?)?.id;
let last = log.get(log.append(Event::new("job.failed").causation_id(middle))?)?.id;
let chain: Vec<String> = log.causation_chain(last)?.into_iter().map(|e| e.event_type).collect();
assert_eq!(chain, ["request.received", "job.started", "job.failed"]);
# Ok(()) }
```"#
    };
    (with, descendants) => {
        r#"
```
# fn main() -> evlog::Result<()> {
# let log = evlog::Log::open_temporary(evlog::Options::default())?;
use evlog::{Event, Uuid};
let root = log.get(log.append(Event::new("request.received"))?)?.id;
log.append(Event::new("job.started").causation_id(root))?;
log.append(Event::new("mail.sent").causation_id(root))?;
let tree = log.descendants(root)?;
assert_eq!(tree.children.len(), 2);
assert_eq!(tree.walk().len(), 3); // (depth, event), the root first
# Ok(()) }
```"#
    };
    (with, stats) => {
        r#"
```
# fn main() -> evlog::Result<()> {
# let log = evlog::Log::open_temporary(evlog::Options::default())?;
use evlog::{Event, Uuid};
log.append(Event::new("task.created").actor("ana"))?;
log.append(Event::new("task.created").actor("bob"))?;
log.append(Event::new("task.closed").actor("ana"))?;
let stats = log.stats(..)?;
assert_eq!(stats.total, 3);
assert_eq!(stats.by_type["task.created"], 2);
assert_eq!(stats.by_actor["ana"], 2);
# Ok(()) }
```"#
    };
    (with, reconstruct) => {
        r#"
```
# fn main() -> evlog::Result<()> {
# let log = evlog::Log::open_temporary(evlog::Options::default())?;
use evlog::{Event, Uuid};
for cents in [500, -200, 300] {
    log.append(Event::new("account.moved").entity("account", "A-1").json_payload(&cents)?)?;
}
let balance = log.reconstruct("account", "A-1", i64::MAX, 0i64, |sum, event| {
    sum + event.payload_as::<i64>().unwrap_or(0)
})?;
assert_eq!(balance, 600);
# Ok(()) }
```"#
    };
    (with, state_at) => {
        r#"
```
# fn main() -> evlog::Result<()> {
# let log = evlog::Log::open_temporary(evlog::Options::default())?;
use evlog::{Event, Uuid};
let change = |before: &str, after: &str| {
    serde_json::json!({"changes": {"status": {"before": before, "after": after}}})
};
let t0 = 1_767_225_600_000_000; // 2026-01-01T00:00:00Z
log.append(Event::new("task.updated").entity("task", "T-1").timestamp_us(t0)
    .json_payload(&change("", "open"))?)?;
log.append(Event::new("task.updated").entity("task", "T-1").timestamp_us(t0 + 60_000_000)
    .json_payload(&change("open", "done"))?)?;
assert_eq!(log.state_at("task", "T-1", t0 + 1)?, serde_json::json!({"status": "open"}));
assert_eq!(log.state_at("task", "T-1", i64::MAX)?, serde_json::json!({"status": "done"}));
# Ok(()) }
```"#
    };
    (with, history) => {
        r#"
```
# fn main() -> evlog::Result<()> {
# let log = evlog::Log::open_temporary(evlog::Options::default())?;
use evlog::{Event, Uuid};
log.append(Event::new("task.updated").entity("task", "T-1").actor("ana")
    .json_payload(&serde_json::json!({"changes": {"owner": {"before": null, "after": "ana"}}}))?)?;
let changes = log.history("task", "T-1")?;
assert_eq!(changes.len(), 1);
assert_eq!((changes[0].field.as_str(), changes[0].actor.as_deref()), ("owner", Some("ana")));
# Ok(()) }
```"#
    };
    (with, verify) => {
        r#"
```
# fn main() -> evlog::Result<()> {
# let log = evlog::Log::open_temporary(evlog::Options::default())?;
use evlog::{Event, Uuid};
log.append(Event::new("a.b"))?;
let report = log.verify()?;
assert!(report.is_ok(), "{:?}", report.problems);
assert_eq!(report.events_checked, 1);
# Ok(()) }
```"#
    };
    (with, verify_with_progress) => {
        r#"
```
# fn main() -> evlog::Result<()> {
# let log = evlog::Log::open_temporary(evlog::Options::default())?;
use evlog::Event;
log.append(Event::new("a.b"))?;
let mut seen = Vec::new();
let report = log.verify_with_progress(|done, total| seen.push((done, total)))?;
assert!(report.is_ok(), "{:?}", report.problems);
let (done, total) = *seen.last().unwrap();
assert_eq!(done, total);
# Ok(()) }
```"#
    };
    (with, verify_chain) => {
        r#"
```
# fn main() -> evlog::Result<()> {
# let log = evlog::Log::open_temporary(evlog::Options::default())?;
use evlog::{Event, Uuid};
let request = Uuid::now_v7();
let root = log.get(log.append(Event::new("a.started").correlation_id(request))?)?.id;
log.append(Event::new("a.done").correlation_id(request).causation_id(root))?;
let report = log.verify_chain(request)?;
assert_eq!((report.events, report.roots.len()), (2, 1));
assert!(report.problems.is_empty());
# Ok(()) }
```"#
    };
}

/// The query methods, the same on [`crate::Log`] and [`crate::LogReader`]
/// (`with`: with the examples of [`query_example`]).
macro_rules! query_methods {
    ($owner:ty $(, $with:ident)?) => {
        impl $owner {
            /// The events that answer `query`, in sequence order, streamed.
            $(#[doc = query_example!($with, query)])?
            pub fn query(&self, query: &Query) -> Result<Events> {
                self.shared.query(query)
            }

            /// Every event of a correlation (for example one request).
            $(#[doc = query_example!($with, by_correlation)])?
            pub fn by_correlation(&self, correlation_id: Uuid) -> Result<Events> {
                self.shared.query(&Query::correlation(correlation_id))
            }

            /// Every event of a session.
            $(#[doc = query_example!($with, by_session)])?
            pub fn by_session(&self, session: &str) -> Result<Events> {
                self.shared.query(&Query::session(session))
            }

            /// Every event of an actor.
            $(#[doc = query_example!($with, by_actor)])?
            pub fn by_actor(&self, actor: &str) -> Result<Events> {
                self.shared.query(&Query::actor(actor))
            }

            /// The events whose type matches a dotted pattern, in a time
            /// window (`..` for all time). Pattern rules: see
            /// [`crate::type_matches`].
            $(#[doc = query_example!($with, by_type)])?
            pub fn by_type(&self, pattern: &str, window: impl RangeBounds<i64>) -> Result<Events> {
                self.shared
                    .query(&Query::all().event_type(pattern).during(window))
            }

            /// The events whose own timestamps fall in `window`, in
            /// sequence order. Correct when timestamps do not grow with the
            /// sequence number; fast when they mostly do (the indexes keep
            /// each block of 1024 events' time range and skip the blocks
            /// outside the window).
            $(#[doc = query_example!($with, between)])?
            pub fn between(&self, window: impl RangeBounds<i64>) -> Result<Events> {
                self.shared.query(&Query::all().during(window))
            }

            /// The events of one entity in a time window (`..` for all).
            $(#[doc = query_example!($with, entity_history)])?
            pub fn entity_history(
                &self,
                entity_type: &str,
                entity_id: &str,
                window: impl RangeBounds<i64>,
            ) -> Result<Events> {
                self.shared
                    .query(&Query::entity(entity_type, entity_id).during(window))
            }

            /// The entity's events and those of every entity linked to it.
            /// An event links its entity to another by a metadata entry
            /// `link.<entity type>` = `<entity id>` (a task event names its
            /// sprint with `link.sprint = S-1`); links go both ways, so the
            /// sprint's chain holds its tasks' events and each task's chain
            /// the sprint's.
            $(#[doc = query_example!($with, entity_chain)])?
            pub fn entity_chain(&self, entity_type: &str, entity_id: &str) -> Result<Events> {
                self.shared
                    .query(&Query::entity(entity_type, entity_id).with_linked_entities())
            }

            /// The last event of an entity (the key-value view of the log).
            $(#[doc = query_example!($with, latest)])?
            pub fn latest(
                &self,
                entity_type: &str,
                entity_id: &str,
            ) -> Result<Option<LoggedEvent>> {
                self.shared.latest(&Entity {
                    entity_type: entity_type.to_string(),
                    entity_id: entity_id.to_string(),
                })
            }

            /// The event with this id, if the log holds it.
            $(#[doc = query_example!($with, find_by_id)])?
            pub fn find_by_id(&self, id: Uuid) -> Result<Option<LoggedEvent>> {
                self.shared.find_by_id(id)
            }

            /// The causation chain of an event: its root cause first, the
            /// event last. The walk stops at a cause the log does not hold.
            $(#[doc = query_example!($with, causation_chain)])?
            pub fn causation_chain(&self, event_id: Uuid) -> Result<Vec<LoggedEvent>> {
                self.shared.causation_chain(event_id)
            }

            /// Everything an event caused, directly or not, as a tree.
            $(#[doc = query_example!($with, descendants)])?
            pub fn descendants(&self, event_id: Uuid) -> Result<CausationTree> {
                self.shared.descendants(event_id)
            }

            /// Counts by type, actor, priority, hour and day over a time
            /// window (`..` for all time).
            $(#[doc = query_example!($with, stats)])?
            pub fn stats(&self, window: impl RangeBounds<i64>) -> Result<Stats> {
                self.shared.stats(crate::query::window(window))
            }

            /// Folds an entity's events with timestamps up to and including
            /// `at_us`, in sequence order, from `init`.
            $(#[doc = query_example!($with, reconstruct)])?
            pub fn reconstruct<S>(
                &self,
                entity_type: &str,
                entity_id: &str,
                at_us: i64,
                init: S,
                mut fold: impl FnMut(S, &LoggedEvent) -> S,
            ) -> Result<S> {
                let mut state = init;
                for event in self.entity_history(entity_type, entity_id, ..=at_us)? {
                    state = fold(state, &event?);
                }
                Ok(state)
            }

            /// The entity as it was at `at_us`: its events' `changes`
            /// applied in order to an empty JSON object ([`apply_changes`]).
            $(#[doc = query_example!($with, state_at)])?
            pub fn state_at(
                &self,
                entity_type: &str,
                entity_id: &str,
                at_us: i64,
            ) -> Result<serde_json::Value> {
                self.reconstruct(
                    entity_type,
                    entity_id,
                    at_us,
                    serde_json::Value::Object(serde_json::Map::new()),
                    apply_changes,
                )
            }

            /// Every field change of an entity, with time and actor.
            $(#[doc = query_example!($with, history)])?
            pub fn history(&self, entity_type: &str, entity_id: &str) -> Result<Vec<StateChange>> {
                let mut changes = Vec::new();
                for event in self.entity_history(entity_type, entity_id, ..)? {
                    let event = event?;
                    let Ok(payload) = event.payload_as::<serde_json::Value>() else {
                        continue;
                    };
                    let Some(fields) = payload.get("changes").and_then(|c| c.as_object()) else {
                        continue;
                    };
                    for (field, change) in fields {
                        changes.push(StateChange {
                            seq: event.seq,
                            timestamp_us: event.timestamp_us,
                            actor: event.actor.clone(),
                            event_type: event.event_type.clone(),
                            field: field.clone(),
                            before: change
                                .get("before")
                                .cloned()
                                .unwrap_or(serde_json::Value::Null),
                            after: change
                                .get("after")
                                .cloned()
                                .unwrap_or(serde_json::Value::Null),
                        });
                    }
                }
                Ok(changes)
            }

            /// Checks the whole log: sequence continuity, every CRC, that
            /// every causation id names an earlier event, and that the
            /// indexes agree with the log. Problems are reported, not
            /// raised; `Err` only when reading fails outright.
            $(#[doc = query_example!($with, verify)])?
            pub fn verify(&self) -> Result<VerifyReport> {
                self.shared.verify(&mut |_, _| {})
            }

            /// [`Self::verify`], calling `progress(checks done, checks to
            /// do)` as it goes, for a progress bar. A check is one sequence
            /// number of the log read, or, when the indexes are available,
            /// one indexed event's postings or its id compared with the
            /// log (so `checks to do` is the log's span plus twice the
            /// indexed span). `progress` is called with 0 first, then at
            /// most once every few thousand checks (never per event), and,
            /// unless reading fails outright (`Err`), last with `done ==
            /// total`; `total` is the same in every call and `done` never
            /// decreases.
            $(#[doc = query_example!($with, verify_with_progress)])?
            pub fn verify_with_progress(
                &self,
                mut progress: impl FnMut(u64, u64),
            ) -> Result<VerifyReport> {
                self.shared.verify(&mut progress)
            }

            /// Checks that the events of one correlation form a causation
            /// tree: one root, every cause an earlier event of the same
            /// correlation.
            $(#[doc = query_example!($with, verify_chain)])?
            pub fn verify_chain(&self, correlation_id: Uuid) -> Result<ChainReport> {
                self.shared.verify_chain(correlation_id)
            }

            /// How many published events the indexes have not reached (all
            /// of them when no index is available).
            pub fn index_lag(&self) -> u64 {
                let last = self.shared.marks.last_seq();
                let status = self.shared.index.status();
                last.saturating_sub(status.indexed_through)
            }

            /// Waits until the indexes cover every event up to `seq` (so
            /// queries about them need no scan), the timeout passes, or the
            /// indexes stop or are unavailable (`Stopped`).
            pub fn wait_for_index(
                &self,
                seq: u64,
                timeout: std::time::Duration,
            ) -> crate::WaitOutcome {
                match self.shared.index.get() {
                    Some(index) => index
                        .indexed
                        .wait(crate::Watermark::Published, seq, timeout),
                    None => crate::WaitOutcome::Stopped(0),
                }
            }

            /// Whether queries use the indexes, how far they reach, and
            /// whether they were rebuilt at open.
            pub fn index_status(&self) -> crate::index::IndexStatus {
                self.shared.index.status()
            }
        }
    };
}

query_methods!(crate::log::Log, with);
query_methods!(crate::log::LogReader);

impl crate::log::LogReader {
    /// Every durable consumer with its committed position and lag, as
    /// [`crate::Log::consumers`] lists them; reads without writing.
    pub fn consumers(&self) -> Result<Vec<crate::ConsumerInfo>> {
        crate::consumer::list(&self.shared)
    }
}

impl crate::log::Log {
    /// Subscribes to the events that pass `filter`, from `start`: history
    /// first, then live events, in sequence order, each exactly once. See
    /// [`crate::Subscription`].
    pub fn subscribe(
        &self,
        filter: crate::Filter,
        start: crate::Start,
    ) -> Result<crate::Subscription> {
        crate::subscribe::Subscription::new(Arc::clone(&self.shared), filter, start)
    }

    /// Like [`Self::subscribe`], delivering to `handler` on a thread named
    /// `evlog:sub:<name>` until [`crate::SubscriptionHandle::unsubscribe`]
    /// or close. A handler may append to the same log.
    pub fn subscribe_with(
        &self,
        name: &str,
        filter: crate::Filter,
        start: crate::Start,
        handler: impl FnMut(LoggedEvent) + Send + 'static,
    ) -> Result<crate::SubscriptionHandle> {
        let subscription = self.subscribe(filter, start)?;
        crate::subscribe::SubscriptionHandle::spawn(name, subscription, handler)
    }

    /// Opens (creating on first use) the durable consumer `name`: it
    /// delivers the events that pass `filter` after its committed position.
    /// See [`crate::Consumer`].
    pub fn consumer(&self, name: &str, filter: crate::Filter) -> Result<crate::Consumer> {
        crate::consumer::Consumer::open(Arc::clone(&self.shared), name, filter)
    }

    /// Every durable consumer with its committed position and lag.
    pub fn consumers(&self) -> Result<Vec<crate::ConsumerInfo>> {
        crate::consumer::list(&self.shared)
    }

    /// Deletes a durable consumer's position; returns whether it existed.
    pub fn delete_consumer(&self, name: &str) -> Result<bool> {
        crate::consumer::delete(&self.shared, name)
    }

    /// Rebuilds every secondary index from the log and returns once they
    /// cover every event published when it was called. Queries stay
    /// correct meanwhile (they scan what is not indexed).
    pub fn reindex(&self) -> Result<u64> {
        self.reindex_with_progress(|_, _| {})
    }

    /// [`Self::reindex`], calling `progress(done, total)` as it goes.
    pub fn reindex_with_progress(&self, mut progress: impl FnMut(u64, u64)) -> Result<u64> {
        let Some(indexer) = self.indexer_handle() else {
            return Err(Error::Index {
                path: self.shared.dir.join(crate::index::INDEX_DIR),
                message: self
                    .shared
                    .index
                    .status()
                    .unavailable_because
                    .unwrap_or_else(|| "secondary indexes are off".into()),
            });
        };
        let (tx, rx) = crossbeam_channel::unbounded();
        indexer.request_reindex(crate::index::indexer::Reindex { progress: tx });
        let mut total = 0;
        for message in rx.iter() {
            let (done, of) = message?;
            progress(done, of);
            total = of;
        }
        Ok(total)
    }
}
