//! The comparison program (issue 4): evlog against SQLite, sled and the raw
//! disk, in one process, on the same events of the reference workload W1
//! (`docs/WORKLOAD.md`), on the same disk.
//!
//! ```text
//! cargo bench --bench compare                      # quick: N = 100 000
//! EVLOG_BENCH_FULL=1 cargo bench --bench compare   # full:  N = 1 000 000
//! EVLOG_BENCH_N=20000 cargo bench --bench compare  # any N (overrides FULL)
//! EVLOG_BENCH_OUT=path.json ...                    # default target/compare.json
//! ```
//!
//! What is measured, each once, with `std::time::Instant` around the loop:
//!
//! - A1: 10 000 single appends into a fresh store, each durable before the
//!   call returns (evlog `Durability::Always`, SQLite `synchronous=FULL`
//!   autocommit insert, sled transaction + `flush()`); events/s, p50/p99.
//! - A2: all N events into a fresh store in batches of 1 000, durable per
//!   batch (evlog `append_batch`, SQLite one transaction, sled one
//!   transaction over its trees + `flush()`); events/s and MB/s of encoded
//!   event bytes.
//! - A3: 4 threads, each 10 000 single durable appends into one shared
//!   store (evlog: one `Log`; SQLite: one connection behind a mutex, since
//!   SQLite has one writer at a time anyway; sled: one `Db`); events/s.
//! - S1: bytes on disk (sum of file lengths, every file under the store's
//!   directory, so evlog's segments and its `index/` directory) per event
//!   after A2 and a clean close; also allocated blocks, and evlog's index
//!   directory alone.
//! - C1: time from opening the store of A2 again to its first read.
//! - R1: 100 000 reads of a random event by sequence number; reads/s.
//! - R2: scan of all N events in order; events/s and MB/s.
//! - A2 + indexes current: A2's clock kept running until every index
//!   answers for every event. evlog indexes in the background
//!   (`evlog:indexer`), so this is A2 until `index_lag() == 0`; SQLite and
//!   sled update their indexes in each batch's transaction, so for them it
//!   is A2 itself.
//! - Q1, Q2, Q3: 10 000 queries each: the events of a random correlation in
//!   order, the history of a random entity in order, the causation chain of
//!   a random event back to its root (evlog: `by_correlation`,
//!   `entity_history`, `get` + `causation_chain`). All three engines answer
//!   from their indexes (correlation, entity and, for Q3, event id); evlog's
//!   are measured only once `index_lag() == 0`, so no query scans an
//!   unindexed tail.
//! - T1: 100 queries for the events of type `validation.*` in a 1-minute
//!   window starting at a random microsecond (evlog: `by_type`, from its
//!   type posting lists and time blocks; SQLite: its timestamp index and a
//!   range on the type; sled: `n/a`, it has no type or time index).
//! - I1, I2 (evlog only): N events appended with
//!   `Options::secondary_indexes(false)`, closed, reopened with indexes: the
//!   seconds from `Log::open` until `index_lag() == 0` (the indexer catches
//!   up in the background); then `reindex()` of the same log.
//! - Z1, Z2 and archived reads (evlog only, 8 MiB segments): N events
//!   appended (batches of 1 000), scanned live 3 times ("R2 live", the
//!   median), then `archive_all_sealed()` timed (Z1: MB/s of the archived
//!   events' encoded bytes, on the archiver thread; archived bytes per
//!   event and as a fraction of the encoded bytes); 3 replays of every
//!   archived event through `evlog::Archive` on the archive directory
//!   alone (Z2, the median, to compare with R2 live; for both, the CPU
//!   cores the process kept busy, those the rest of the machine kept busy
//!   and the hypervisor's steal during the scans, which tell a slow scan
//!   from a busy or shared machine); 10 000 random `get`s of archived
//!   events with the frame cache off (every read decompresses its frame;
//!   the file is in the page cache), p50 and p99.
//! - A2 archiving (evlog only, 8 MiB segments in both runs): A2 into a fresh log while a thread calls
//!   `archive_all_sealed()` every 5 ms (each segment archived once sealed),
//!   against A2 into a fresh log without it, in the same run: medians of 9
//!   rounds of each, alternating which goes first (with 5, seven runs
//!   on one day gave ratios from 0.86 to 1.43).
//! - A2 variants (evlog only): A2 serial again, A2 with two batches in
//!   flight (`Log::submit_batch`, so the next batch is encoded while the
//!   previous one is written and synced; every batch is still durable
//!   before its `wait` returns), and both with the secondary indexes off
//!   (the log alone, whose indexer otherwise takes CPU beside the
//!   appender): 3 rounds, order rotated, medians; ratios against L2.
//! - `EVLOG_BENCH_ONLY=evlog` skips SQLite and sled.
//! - L1, L2, L3: the raw-disk limits on the same encoded bytes (evlog's
//!   record framing around a bincode body, as evlog writes them): `write` +
//!   `fdatasync` per event (10 000 events, appending to a new file, and
//!   again into a preallocated file), per 1 000-event chunk (N events), and
//!   a sequential read of that file from the page cache.
//!
//! Every read returns fully decoded events. Every answer is checked against
//! the generator's ground truth after its timed loop (sequence numbers, ids,
//! order, counts, and every field for R1 and a second scan), so a fast wrong
//! answer panics instead of being reported. Stores live under
//! `target/bench-tmp` (the repository's disk, not a tmpfs `/tmp`).
//!
//! Output: a Markdown table on stdout (ratios are evlog's figure divided by
//! the other's) and a JSON file with the machine, N, the durability
//! settings and every figure.

mod common;

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use evlog::workload::{GeneratedEvent, Rng, Workload, WorkloadConfig};
use evlog::{Durability, Event, Log, LoggedEvent, Options, Payload};
use serde::{Deserialize, Serialize};
use serde_json::json;
use uuid::Uuid;

const A1_EVENTS: usize = 10_000;
const A3_THREADS: usize = 4;
const A3_EVENTS_PER_THREAD: usize = 10_000;
const BATCH_EVENTS: usize = 1_000;
const R1_READS: usize = 100_000;
const QUERIES: usize = 10_000;
/// T1's answers are thousands of events each (a minute of W1 is 60 000
/// events), so fewer queries take about as long as Q1's 10 000.
const T1_QUERIES: usize = 100;
/// T1's type pattern is `validation.*`: this prefix and a dot.
const T1_TYPE_PREFIX: &str = "validation";
const T1_WINDOW_US: i64 = 60_000_000;
/// Seed of the random reads and queries (the workload has its own).
const PICK_SEED: u64 = 7;
/// evlog's record header: length, CRC, seq, position in commit group.
const RECORD_HEADER_BYTES: usize = 24;

// ---------------------------------------------------------------------------
// The events, their encoding and the ground truth.

/// An event as every engine gives it back; compared field by field with
/// what the generator made.
#[derive(Debug, Clone, PartialEq)]
struct Row {
    seq: u64,
    id: Uuid,
    event_type: String,
    timestamp_us: i64,
    correlation_id: Option<Uuid>,
    causation_id: Option<Uuid>,
    entity_type: String,
    entity_id: String,
    actor: String,
    session: String,
    priority: u8,
    payload: String,
}

impl Row {
    fn expected(g: &GeneratedEvent, seq: u64) -> Row {
        Row {
            seq,
            id: g.id,
            event_type: g.event_type.to_string(),
            timestamp_us: g.timestamp_us,
            correlation_id: Some(g.correlation_id),
            causation_id: g.causation_id,
            entity_type: g.entity_type.to_string(),
            entity_id: g.entity_id.clone(),
            actor: g.actor.clone(),
            session: g.session.clone(),
            priority: g.priority.as_u8(),
            payload: g.payload.clone(),
        }
    }

    fn digest(&self) -> (u64, Uuid) {
        (self.seq, self.id)
    }
}

/// The body encoding of evlog's records (bincode, fields in the same
/// order), used for the raw-disk files and as sled's value.
#[derive(Serialize, Deserialize)]
struct Stored<'a> {
    id: [u8; 16],
    timestamp_us: i64,
    event_type: Cow<'a, str>,
    correlation_id: Option<[u8; 16]>,
    causation_id: Option<[u8; 16]>,
    entity: Option<(Cow<'a, str>, Cow<'a, str>)>,
    actor: Option<Cow<'a, str>>,
    session: Option<Cow<'a, str>>,
    priority: u8,
    traceparent: Option<Cow<'a, str>>,
    metadata: Vec<(Cow<'a, str>, Cow<'a, str>)>,
    payload_kind: u8,
    payload: Cow<'a, str>,
}

fn bincode_config() -> impl bincode::config::Config {
    bincode::config::standard()
}

fn encode_body(g: &GeneratedEvent) -> Vec<u8> {
    let stored = Stored {
        id: *g.id.as_bytes(),
        timestamp_us: g.timestamp_us,
        event_type: Cow::Borrowed(g.event_type),
        correlation_id: Some(*g.correlation_id.as_bytes()),
        causation_id: g.causation_id.map(|id| *id.as_bytes()),
        entity: Some((Cow::Borrowed(g.entity_type), Cow::Borrowed(&g.entity_id))),
        actor: Some(Cow::Borrowed(&g.actor)),
        session: Some(Cow::Borrowed(&g.session)),
        priority: g.priority.as_u8(),
        traceparent: None,
        metadata: Vec::new(),
        payload_kind: 1,
        payload: Cow::Borrowed(&g.payload),
    };
    bincode::serde::encode_to_vec(&stored, bincode_config()).expect("encode event")
}

fn decode_body(seq: u64, bytes: &[u8]) -> Row {
    let (s, _): (Stored, usize) =
        bincode::serde::decode_from_slice(bytes, bincode_config()).expect("decode event");
    let (entity_type, entity_id) = s.entity.unwrap_or_default();
    Row {
        seq,
        id: Uuid::from_bytes(s.id),
        event_type: s.event_type.into_owned(),
        timestamp_us: s.timestamp_us,
        correlation_id: s.correlation_id.map(Uuid::from_bytes),
        causation_id: s.causation_id.map(Uuid::from_bytes),
        entity_type: entity_type.into_owned(),
        entity_id: entity_id.into_owned(),
        actor: s.actor.unwrap_or_default().into_owned(),
        session: s.session.unwrap_or_default().into_owned(),
        priority: s.priority,
        payload: s.payload.into_owned(),
    }
}

/// A framed record as evlog lays it out: 24-byte header, then the body.
fn encode_record(g: &GeneratedEvent, seq: u64, out: &mut Vec<u8>) {
    let body = encode_body(g);
    let start = out.len();
    out.extend_from_slice(&(body.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(&body).to_le_bytes());
    out.extend_from_slice(&seq.to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes());
    out.extend_from_slice(&1u32.to_le_bytes());
    debug_assert_eq!(out.len() - start, RECORD_HEADER_BYTES);
    out.extend_from_slice(&body);
}

/// The generated events, the raw bytes and the answers every query must
/// give.
struct Truth {
    events: Vec<GeneratedEvent>,
    /// All N records back to back, and where each ends.
    raw: Vec<u8>,
    raw_ends: Vec<usize>,
    /// Event indices of each correlation and entity, in order.
    by_correlation: Vec<Vec<u64>>,
    by_entity: Vec<Vec<u64>>,
    /// Indices of the events of T1's types, in order.
    t1_typed: Vec<u64>,
}

impl Truth {
    fn new(config: WorkloadConfig) -> Truth {
        let events: Vec<GeneratedEvent> = Workload::new(config).collect();
        let mut raw = Vec::with_capacity(events.len() * 400);
        let mut raw_ends = Vec::with_capacity(events.len());
        let mut by_correlation = vec![Vec::new(); config.correlation_count() as usize];
        let mut by_entity = vec![Vec::new(); config.entity_count() as usize];
        let t1_type_start = format!("{T1_TYPE_PREFIX}.");
        let mut t1_typed = Vec::new();
        for g in &events {
            if g.event_type.starts_with(&t1_type_start) {
                t1_typed.push(g.index);
            }
            encode_record(g, g.index + 1, &mut raw);
            raw_ends.push(raw.len());
            by_correlation[g.correlation as usize].push(g.index);
            by_entity[g.entity as usize].push(g.index);
        }
        Truth {
            events,
            raw,
            raw_ends,
            by_correlation,
            by_entity,
            t1_typed,
        }
    }

    /// Indices of T1's answer for `since_us..until_us` (timestamps grow
    /// with the index in W1).
    fn t1(&self, since_us: i64, until_us: i64) -> Vec<u64> {
        let timestamp = |&index: &u64| self.events[index as usize].timestamp_us;
        let from = self.t1_typed.partition_point(|i| timestamp(i) < since_us);
        let to = self.t1_typed.partition_point(|i| timestamp(i) < until_us);
        self.t1_typed[from..to].to_vec()
    }

    fn n(&self) -> usize {
        self.events.len()
    }

    fn record(&self, i: usize) -> &[u8] {
        let start = if i == 0 { 0 } else { self.raw_ends[i - 1] };
        &self.raw[start..self.raw_ends[i]]
    }

    /// Bytes of records `from..to`.
    fn raw_range(&self, from: usize, to: usize) -> &[u8] {
        let start = if from == 0 {
            0
        } else {
            self.raw_ends[from - 1]
        };
        &self.raw[start..self.raw_ends[to - 1]]
    }

    /// Indices of the causation chain of event `index`, back to its root.
    fn chain(&self, index: u64) -> Vec<u64> {
        let mut chain = vec![index];
        let mut at = index;
        while let Some(cause) = self.events[at as usize].causation_index {
            chain.push(cause);
            at = cause;
        }
        chain
    }
}

/// Panics unless `got` (seq, id pairs) are exactly the events of `indices`
/// (stored at seq = index + 1), in that order.
fn check_digests(what: &str, truth: &Truth, got: &[(u64, Uuid)], indices: &[u64]) {
    assert_eq!(got.len(), indices.len(), "{what}: wrong number of events");
    for (&(seq, id), &index) in got.iter().zip(indices) {
        assert_eq!(seq, index + 1, "{what}: wrong sequence number");
        assert_eq!(
            id, truth.events[index as usize].id,
            "{what}: wrong event at seq {seq}"
        );
    }
}

// ---------------------------------------------------------------------------
// The engines.

/// One store of events, as each engine is used for the benchmark. `Sync`
/// so that A3's threads can share it.
trait Engine: Sync + Sized {
    const NAME: &'static str;
    /// What an application hands to the engine; built before timing.
    type Input: Send;
    fn input(g: &GeneratedEvent) -> Self::Input;
    fn open(dir: &Path) -> Self;
    /// Appends one event durably; returns its sequence number.
    fn append(&self, input: Self::Input) -> u64;
    /// Appends events atomically and durably; returns the first seq.
    fn append_batch(&self, inputs: &[Self::Input]) -> u64;
    fn get(&self, seq: u64) -> Row;
    fn scan(&self, visit: &mut dyn FnMut(Row));
    /// Q1; `None` when the engine cannot answer it.
    fn correlation(&self, id: Uuid) -> Option<Vec<Row>>;
    /// Q2.
    fn entity(&self, entity_type: &str, entity_id: &str) -> Option<Vec<Row>>;
    /// Q3: the event `seq`, its cause, the cause's cause... to the root.
    fn chain(&self, seq: u64) -> Option<Vec<Row>>;
    /// T1: the events whose type starts with `prefix` + "." (evlog's
    /// pattern `prefix.*`) and whose timestamp is in `since_us..until_us`,
    /// in seq order.
    fn types_in_window(&self, prefix: &str, since_us: i64, until_us: i64) -> Option<Vec<Row>>;
    /// Returns once every index answers for every appended event. Engines
    /// that update their indexes in the append's own transaction are
    /// always current.
    fn wait_indexes_current(&self) {}
    fn close(self);
}

struct Evlog {
    log: Log,
}

fn row_of_logged(e: LoggedEvent) -> Row {
    let (entity_type, entity_id) = e
        .entity
        .map(|x| (x.entity_type, x.entity_id))
        .unwrap_or_default();
    Row {
        seq: e.seq,
        id: e.id,
        event_type: e.event_type,
        timestamp_us: e.timestamp_us,
        correlation_id: e.correlation_id,
        causation_id: e.causation_id,
        entity_type,
        entity_id,
        actor: e.actor.unwrap_or_default(),
        session: e.session.unwrap_or_default(),
        priority: e.priority.as_u8(),
        payload: match e.payload {
            Payload::Json(text) => text,
            other => panic!("evlog returned a non-JSON payload {other:?}"),
        },
    }
}

fn rows_of_events(events: evlog::Events) -> Vec<Row> {
    events
        .map(|event| row_of_logged(event.expect("evlog query item")))
        .collect()
}

/// How often the wait for the indexer looks at `index_lag()`: short
/// against the seconds of A2 and of a catch-up, long enough not to take
/// a core from the indexer on this 2-core machine.
const INDEX_POLL: Duration = Duration::from_micros(200);
/// A wait longer than this means the indexer stopped, not that it is slow.
const INDEX_WAIT_MAX: Duration = Duration::from_secs(600);

/// Returns once every published event is indexed (`index_lag() == 0`).
/// `index_status()` says "unavailable" while the indexes are still opening
/// too, so only the time limit tells a stopped indexer from a slow one.
fn wait_index_lag_zero(log: &Log) {
    let started = Instant::now();
    while log.index_lag() > 0 {
        assert!(
            started.elapsed() < INDEX_WAIT_MAX,
            "evlog indexes still {} events behind after {:?}: {:?}",
            log.index_lag(),
            INDEX_WAIT_MAX,
            log.index_status()
        );
        std::thread::sleep(INDEX_POLL);
    }
}

impl Engine for Evlog {
    const NAME: &'static str = "evlog";
    type Input = Event;

    fn input(g: &GeneratedEvent) -> Event {
        g.event()
    }
    fn open(dir: &Path) -> Evlog {
        let options = Options::default().durability(Durability::Always);
        Evlog {
            log: Log::open(dir, options).expect("open evlog"),
        }
    }
    fn append(&self, input: Event) -> u64 {
        self.log.append(input).expect("evlog append")
    }
    fn append_batch(&self, inputs: &[Event]) -> u64 {
        self.log
            .append_batch(inputs)
            .expect("evlog append_batch")
            .start
    }
    fn get(&self, seq: u64) -> Row {
        row_of_logged(self.log.get(seq).expect("evlog get"))
    }
    fn scan(&self, visit: &mut dyn FnMut(Row)) {
        for event in self.log.iter(..).expect("evlog iter") {
            visit(row_of_logged(event.expect("evlog iter item")));
        }
    }
    fn correlation(&self, id: Uuid) -> Option<Vec<Row>> {
        let events = self.log.by_correlation(id).expect("evlog by_correlation");
        Some(rows_of_events(events))
    }
    fn entity(&self, entity_type: &str, entity_id: &str) -> Option<Vec<Row>> {
        let events = self
            .log
            .entity_history(entity_type, entity_id, ..)
            .expect("evlog entity_history");
        Some(rows_of_events(events))
    }
    fn chain(&self, seq: u64) -> Option<Vec<Row>> {
        // The query API walks from an event id, so the event is read once
        // here for its id and once more by the walk: that read is part of
        // what an application holding a seq pays.
        let id = self.log.get(seq).expect("evlog get").id;
        let mut chain = self.log.causation_chain(id).expect("evlog causation_chain");
        // `causation_chain` gives the root first; Q3's answer (and the
        // other engines') starts at the event itself.
        chain.reverse();
        Some(chain.into_iter().map(row_of_logged).collect())
    }
    fn types_in_window(&self, prefix: &str, since_us: i64, until_us: i64) -> Option<Vec<Row>> {
        let pattern = format!("{prefix}.*");
        let events = self
            .log
            .by_type(&pattern, since_us..until_us)
            .expect("evlog by_type");
        Some(rows_of_events(events))
    }
    fn wait_indexes_current(&self) {
        wait_index_lag_zero(&self.log);
    }
    fn close(self) {
        self.log.close().expect("evlog close");
    }
}

struct Sqlite {
    conn: Mutex<rusqlite::Connection>,
}

const SQLITE_SCHEMA: &str = "
    CREATE TABLE IF NOT EXISTS events (
        seq INTEGER PRIMARY KEY,
        id BLOB NOT NULL UNIQUE,
        event_type TEXT NOT NULL,
        timestamp_us INTEGER NOT NULL,
        correlation_id BLOB,
        causation_id BLOB,
        entity_type TEXT,
        entity_id TEXT,
        actor TEXT,
        session TEXT,
        priority INTEGER NOT NULL,
        payload TEXT NOT NULL
    );
    CREATE INDEX IF NOT EXISTS events_correlation ON events (correlation_id);
    CREATE INDEX IF NOT EXISTS events_entity ON events (entity_type, entity_id);
    CREATE INDEX IF NOT EXISTS events_timestamp ON events (timestamp_us);";
const SQLITE_INSERT: &str = "INSERT INTO events (id, event_type, timestamp_us, correlation_id,
    causation_id, entity_type, entity_id, actor, session, priority, payload)
    VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)";
/// A query returning every column of `events`, in `Row` order.
macro_rules! select_events {
    ($rest:literal) => {
        concat!(
            "SELECT seq, id, event_type, timestamp_us, correlation_id, causation_id, ",
            "entity_type, entity_id, actor, session, priority, payload FROM events ",
            $rest
        )
    };
}

impl Sqlite {
    fn insert(stmt: &mut rusqlite::CachedStatement<'_>, g: &GeneratedEvent) -> u64 {
        stmt.insert(rusqlite::params![
            g.id.as_bytes(),
            g.event_type,
            g.timestamp_us,
            g.correlation_id.as_bytes(),
            g.causation_id.as_ref().map(|id| id.as_bytes()),
            g.entity_type,
            g.entity_id,
            g.actor,
            g.session,
            g.priority.as_u8(),
            g.payload,
        ])
        .expect("sqlite insert") as u64
    }

    fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Row> {
        Ok(Row {
            seq: r.get::<_, i64>(0)? as u64,
            id: Uuid::from_bytes(r.get(1)?),
            event_type: r.get(2)?,
            timestamp_us: r.get(3)?,
            correlation_id: r.get::<_, Option<[u8; 16]>>(4)?.map(Uuid::from_bytes),
            causation_id: r.get::<_, Option<[u8; 16]>>(5)?.map(Uuid::from_bytes),
            entity_type: r.get(6)?,
            entity_id: r.get(7)?,
            actor: r.get(8)?,
            session: r.get(9)?,
            priority: r.get(10)?,
            payload: r.get(11)?,
        })
    }

    fn query(&self, sql: &str, params: impl rusqlite::Params) -> Vec<Row> {
        let conn = self.lock();
        let mut stmt = conn.prepare_cached(sql).expect("sqlite prepare");
        let rows = stmt.query_map(params, Sqlite::row).expect("sqlite query");
        rows.collect::<rusqlite::Result<Vec<Row>>>()
            .expect("sqlite row")
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, rusqlite::Connection> {
        self.conn
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl Engine for Sqlite {
    const NAME: &'static str = "SQLite";
    type Input = GeneratedEvent;

    fn input(g: &GeneratedEvent) -> GeneratedEvent {
        g.clone()
    }
    fn open(dir: &Path) -> Sqlite {
        std::fs::create_dir_all(dir).expect("create sqlite dir");
        let conn = rusqlite::Connection::open(dir.join("events.db")).expect("open sqlite");
        conn.pragma_update(None, "journal_mode", "WAL")
            .expect("journal_mode");
        conn.pragma_update(None, "synchronous", "FULL")
            .expect("synchronous");
        conn.execute_batch(SQLITE_SCHEMA).expect("sqlite schema");
        Sqlite {
            conn: Mutex::new(conn),
        }
    }
    fn append(&self, g: GeneratedEvent) -> u64 {
        let conn = self.lock();
        let mut stmt = conn.prepare_cached(SQLITE_INSERT).expect("sqlite prepare");
        Sqlite::insert(&mut stmt, &g)
    }
    fn append_batch(&self, inputs: &[GeneratedEvent]) -> u64 {
        let mut conn = self.lock();
        let tx = conn.transaction().expect("sqlite begin");
        let first = {
            let mut stmt = tx.prepare_cached(SQLITE_INSERT).expect("sqlite prepare");
            let mut seqs = inputs.iter().map(|g| Sqlite::insert(&mut stmt, g));
            let first = seqs.next().unwrap_or(0);
            seqs.for_each(drop);
            first
        };
        tx.commit().expect("sqlite commit");
        first
    }
    fn get(&self, seq: u64) -> Row {
        let conn = self.lock();
        let mut stmt = conn
            .prepare_cached(select_events!("WHERE seq = ?1"))
            .expect("sqlite prepare");
        stmt.query_row([seq as i64], Sqlite::row)
            .expect("sqlite get")
    }
    fn scan(&self, visit: &mut dyn FnMut(Row)) {
        let conn = self.lock();
        let mut stmt = conn
            .prepare_cached(select_events!("ORDER BY seq"))
            .expect("sqlite prepare");
        for row in stmt.query_map([], Sqlite::row).expect("sqlite scan") {
            visit(row.expect("sqlite row"));
        }
    }
    fn correlation(&self, id: Uuid) -> Option<Vec<Row>> {
        let sql = select_events!("WHERE correlation_id = ?1 ORDER BY seq");
        Some(self.query(sql, [id.as_bytes()]))
    }
    fn entity(&self, entity_type: &str, entity_id: &str) -> Option<Vec<Row>> {
        let sql = select_events!("WHERE entity_type = ?1 AND entity_id = ?2 ORDER BY seq");
        Some(self.query(sql, [entity_type, entity_id]))
    }
    fn chain(&self, seq: u64) -> Option<Vec<Row>> {
        // Walks causation ids through the unique index on `id`.
        let sql = concat!(
            "WITH RECURSIVE chain(seq, cause) AS (
                SELECT seq, causation_id FROM events WHERE seq = ?1
                UNION ALL
                SELECT e.seq, e.causation_id FROM events e JOIN chain c ON e.id = c.cause
            ) ",
            select_events!("WHERE seq IN (SELECT seq FROM chain) ORDER BY seq DESC")
        );
        Some(self.query(sql, [seq as i64]))
    }
    fn types_in_window(&self, prefix: &str, since_us: i64, until_us: i64) -> Option<Vec<Row>> {
        // A range on the type is `LIKE 'prefix.%'` without LIKE's case
        // folding ('/' follows '.'); the plan goes through the timestamp
        // index and filters the type per row, as SQLite has no type index
        // in this schema (W1's peer: correlation, entity and timestamp).
        let sql = select_events!(
            "WHERE timestamp_us >= ?1 AND timestamp_us < ?2
               AND event_type >= ?3 AND event_type < ?4 ORDER BY seq"
        );
        let (low, high) = (format!("{prefix}."), format!("{prefix}/"));
        Some(self.query(
            sql,
            rusqlite::params![since_us, until_us, low.as_str(), high.as_str()],
        ))
    }
    fn close(self) {
        let conn = self.conn.into_inner().unwrap_or_else(|e| e.into_inner());
        conn.close().map_err(|(_, e)| e).expect("sqlite close");
    }
}

/// sled 0.34 used as an event log: `events` keyed by big-endian seq, and
/// index trees keyed by (key, seq) for correlation and entity, and by id for
/// causation lookups. Every write is one transaction over the four trees.
struct Sled {
    db: sled::Db,
    events: sled::Tree,
    by_correlation: sled::Tree,
    by_entity: sled::Tree,
    by_id: sled::Tree,
    next_seq: AtomicU64,
}

type SledResult = sled::transaction::ConflictableTransactionResult<(), ()>;

/// The index keys of one event: correlation key, entity key, id key.
fn sled_keys(g: &GeneratedEvent, seq: u64) -> [Vec<u8>; 3] {
    let mut correlation = g.correlation_id.as_bytes().to_vec();
    correlation.extend_from_slice(&seq.to_be_bytes());
    let mut entity = entity_prefix(g.entity_type, &g.entity_id);
    entity.extend_from_slice(&seq.to_be_bytes());
    [correlation, entity, g.id.as_bytes().to_vec()]
}

/// Length-prefixed type and id, so that no entity's key prefixes another's.
fn entity_prefix(entity_type: &str, entity_id: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(entity_type.len() + entity_id.len() + 10);
    for part in [entity_type, entity_id] {
        key.push(u8::try_from(part.len()).expect("entity key part under 256 bytes"));
        key.extend_from_slice(part.as_bytes());
    }
    key
}

fn seq_of_key(key: &[u8]) -> u64 {
    let tail: [u8; 8] = key[key.len() - 8..].try_into().expect("8-byte seq");
    u64::from_be_bytes(tail)
}

impl Sled {
    fn trees(&self) -> (&sled::Tree, &sled::Tree, &sled::Tree, &sled::Tree) {
        (
            &self.events,
            &self.by_correlation,
            &self.by_entity,
            &self.by_id,
        )
    }

    fn flush(&self) {
        self.db.flush().expect("sled flush");
    }

    fn rows_of_index(&self, tree: &sled::Tree, prefix: &[u8]) -> Vec<Row> {
        tree.scan_prefix(prefix)
            .keys()
            .map(|key| self.get(seq_of_key(&key.expect("sled index key"))))
            .collect()
    }
}

impl Engine for Sled {
    const NAME: &'static str = "sled";
    type Input = GeneratedEvent;

    fn input(g: &GeneratedEvent) -> GeneratedEvent {
        g.clone()
    }
    fn open(dir: &Path) -> Sled {
        let db = sled::Config::new().path(dir).open().expect("open sled");
        let tree = |name: &str| db.open_tree(name).expect("open sled tree");
        let events = tree("events");
        let last = events
            .last()
            .expect("sled last")
            .map_or(0, |(key, _)| seq_of_key(&key));
        Sled {
            by_correlation: tree("by_correlation"),
            by_entity: tree("by_entity"),
            by_id: tree("by_id"),
            events,
            db,
            next_seq: AtomicU64::new(last + 1),
        }
    }
    fn append(&self, g: GeneratedEvent) -> u64 {
        use sled::Transactional;
        let seq = self.next_seq.fetch_add(1, Ordering::Relaxed);
        let value = sled::IVec::from(encode_body(&g));
        let [correlation, entity, id] = sled_keys(&g, seq);
        self.trees()
            .transaction(|(events, by_correlation, by_entity, by_id)| -> SledResult {
                events.insert(&seq.to_be_bytes(), value.clone())?;
                by_correlation.insert(correlation.as_slice(), &[])?;
                by_entity.insert(entity.as_slice(), &[])?;
                by_id.insert(id.as_slice(), &seq.to_be_bytes())?;
                Ok(())
            })
            .expect("sled transaction");
        self.flush();
        seq
    }
    fn append_batch(&self, inputs: &[GeneratedEvent]) -> u64 {
        use sled::Transactional;
        let first = self
            .next_seq
            .fetch_add(inputs.len() as u64, Ordering::Relaxed);
        let mut batches: [sled::Batch; 4] = Default::default();
        for (g, seq) in inputs.iter().zip(first..) {
            let [correlation, entity, id] = sled_keys(g, seq);
            batches[0].insert(&seq.to_be_bytes(), encode_body(g));
            batches[1].insert(correlation, &[]);
            batches[2].insert(entity, &[]);
            batches[3].insert(id, &seq.to_be_bytes());
        }
        self.trees()
            .transaction(|(events, by_correlation, by_entity, by_id)| -> SledResult {
                events.apply_batch(&batches[0])?;
                by_correlation.apply_batch(&batches[1])?;
                by_entity.apply_batch(&batches[2])?;
                by_id.apply_batch(&batches[3])?;
                Ok(())
            })
            .expect("sled transaction");
        self.flush();
        first
    }
    fn get(&self, seq: u64) -> Row {
        let value = self
            .events
            .get(seq.to_be_bytes())
            .expect("sled get")
            .expect("sled: no such seq");
        decode_body(seq, &value)
    }
    fn scan(&self, visit: &mut dyn FnMut(Row)) {
        for item in self.events.iter() {
            let (key, value) = item.expect("sled scan");
            visit(decode_body(seq_of_key(&key), &value));
        }
    }
    fn correlation(&self, id: Uuid) -> Option<Vec<Row>> {
        Some(self.rows_of_index(&self.by_correlation, id.as_bytes()))
    }
    fn entity(&self, entity_type: &str, entity_id: &str) -> Option<Vec<Row>> {
        Some(self.rows_of_index(&self.by_entity, &entity_prefix(entity_type, entity_id)))
    }
    fn chain(&self, seq: u64) -> Option<Vec<Row>> {
        let mut chain = vec![self.get(seq)];
        while let Some(cause) = chain.last().and_then(|row| row.causation_id) {
            let seq = self
                .by_id
                .get(cause.as_bytes())
                .expect("sled by_id")
                .expect("sled: cause not indexed");
            chain.push(self.get(seq_of_key(&seq)));
        }
        Some(chain)
    }
    fn types_in_window(&self, _: &str, _: i64, _: i64) -> Option<Vec<Row>> {
        // W1's sled peer has index trees for correlation, entity and id
        // only; T1 would be a scan of every event, which measures nothing
        // the R2 row does not already show.
        None
    }
    fn close(self) {
        self.flush();
    }
}

// ---------------------------------------------------------------------------
// Running the operations.

/// Figures by operation, then by column ("raw", "evlog", "SQLite", "sled").
#[derive(Default)]
struct Figures(BTreeMap<&'static str, BTreeMap<&'static str, f64>>);

impl Figures {
    fn set(&mut self, op: &'static str, column: &'static str, value: f64) {
        self.0.entry(op).or_default().insert(column, value);
    }
    fn get(&self, op: &str, column: &str) -> Option<f64> {
        self.0.get(op)?.get(column).copied()
    }
}

struct Bench {
    truth: Truth,
    root: PathBuf,
    started: Instant,
    figures: Figures,
    /// Disk usage per engine after A2: (apparent bytes, allocated bytes).
    disk: BTreeMap<&'static str, (u64, u64)>,
}

fn per_second(count: usize, elapsed: Duration) -> f64 {
    count as f64 / elapsed.as_secs_f64()
}

/// What `median_scan` measured: events/s, and during the scans (medians)
/// the process's CPU cores busy, then the cores everything else on the
/// machine (other processes, the kernel's threads) kept busy and the
/// cores the hypervisor took (steal), where `/proc/stat` tells.
struct ScanFigures {
    rate: f64,
    cores_busy: f64,
    /// The process's minor page faults per event scanned.
    faults_per_event: f64,
    machine: Option<(f64, f64)>,
}

impl ScanFigures {
    /// Sets the figures `cores`, `faults`, `others` and `steal` (keys of
    /// `ROWS`).
    fn record(
        &self,
        figures: &mut Figures,
        [cores, faults, others, steal]: [&'static str; 4],
        engine: &'static str,
    ) {
        figures.set(cores, engine, self.cores_busy);
        figures.set(faults, engine, self.faults_per_event);
        if let Some((others_cores, steal_cores)) = self.machine {
            figures.set(others, engine, others_cores);
            figures.set(steal, engine, steal_cores);
        }
    }
}

/// The median of the rounds of one measurement (the upper one of an even
/// count).
fn median(mut rounds: Vec<f64>) -> f64 {
    rounds.sort_by(f64::total_cmp);
    rounds[rounds.len() / 2]
}

fn percentile_us(sorted: &[Duration], p: f64) -> f64 {
    let at = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[at].as_secs_f64() * 1e6
}

/// Sum of the lengths (and of the allocated blocks) of the files under `dir`.
fn disk_usage(dir: &Path) -> (u64, u64) {
    use std::os::unix::fs::MetadataExt;
    let mut total = (0, 0);
    for entry in std::fs::read_dir(dir).expect("read_dir") {
        let entry = entry.expect("dir entry");
        let meta = entry.metadata().expect("metadata");
        if meta.is_dir() {
            let (len, allocated) = disk_usage(&entry.path());
            total.0 += len;
            total.1 += allocated;
        } else {
            total.0 += meta.len();
            total.1 += meta.blocks() * 512;
        }
    }
    total
}

impl Bench {
    fn progress(&self, what: &str) {
        eprintln!("[{:7.1}s] {what}", self.started.elapsed().as_secs_f64());
    }

    fn fresh_dir(&self, name: &str) -> PathBuf {
        let dir = self.root.join(name);
        if dir.exists() {
            std::fs::remove_dir_all(&dir).expect("clear bench dir");
        }
        dir
    }

    fn a1_count(&self) -> usize {
        A1_EVENTS.min(self.truth.n())
    }

    fn a3_per_thread(&self) -> usize {
        A3_EVENTS_PER_THREAD.min(self.truth.n() / A3_THREADS)
    }

    /// Untimed: every event in the store, in order, equals `expected(seq)`.
    fn check_store<E: Engine>(
        &self,
        engine: &E,
        what: &str,
        count: usize,
        expected: impl Fn(u64) -> Row,
    ) {
        let mut seen = 0u64;
        engine.scan(&mut |row| {
            seen += 1;
            assert_eq!(row.seq, seen, "{what}: scan out of order");
            assert_eq!(row, expected(row.seq), "{what}: wrong event");
        });
        assert_eq!(seen, count as u64, "{what}: wrong number of events");
    }

    fn run_engine<E: Engine>(&mut self) {
        let name = E::NAME;
        self.a1::<E>();
        self.a3::<E>();
        let dir = self.a2::<E>();

        let started = Instant::now();
        let engine = E::open(&dir);
        let first = engine.get(1);
        let reopen = started.elapsed();
        assert_eq!(first, Row::expected(&self.truth.events[0], 1), "{name} C1");
        self.figures.set("C1", name, reopen.as_secs_f64() * 1e3);

        self.r1(&engine);
        self.r2(&engine);
        self.queries(&engine);
        engine.close();
        std::fs::remove_dir_all(&dir).expect("remove bench dir");
    }

    fn a1<E: Engine>(&mut self) {
        let name = E::NAME;
        self.progress(&format!("{name}: A1"));
        let count = self.a1_count();
        let dir = self.fresh_dir(&format!("{name}-a1"));
        let engine = E::open(&dir);
        let inputs: Vec<E::Input> = self.truth.events[..count].iter().map(E::input).collect();
        let mut latencies = Vec::with_capacity(count);
        let mut seqs = Vec::with_capacity(count);
        let started = Instant::now();
        for input in inputs {
            let t = Instant::now();
            seqs.push(engine.append(input));
            latencies.push(t.elapsed());
        }
        let elapsed = started.elapsed();

        assert!(
            seqs.iter().copied().eq(1..=count as u64),
            "{name} A1: wrong seqs"
        );
        self.check_store(&engine, &format!("{name} A1"), count, |seq| {
            Row::expected(&self.truth.events[seq as usize - 1], seq)
        });
        engine.close();
        std::fs::remove_dir_all(&dir).expect("remove bench dir");
        latencies.sort_unstable();
        self.figures.set("A1", name, per_second(count, elapsed));
        self.figures
            .set("A1 p50", name, percentile_us(&latencies, 0.50));
        self.figures
            .set("A1 p99", name, percentile_us(&latencies, 0.99));
    }

    fn a3<E: Engine>(&mut self) {
        let name = E::NAME;
        self.progress(&format!("{name}: A3"));
        let per_thread = self.a3_per_thread();
        let dir = self.fresh_dir(&format!("{name}-a3"));
        let engine = E::open(&dir);
        let inputs: Vec<Vec<E::Input>> = (0..A3_THREADS)
            .map(|t| {
                let events = &self.truth.events[t * per_thread..(t + 1) * per_thread];
                events.iter().map(E::input).collect()
            })
            .collect();
        let started = Instant::now();
        let seqs: Vec<Vec<u64>> = std::thread::scope(|scope| {
            let threads: Vec<_> = inputs
                .into_iter()
                .map(|inputs| {
                    let engine = &engine;
                    scope.spawn(move || {
                        inputs
                            .into_iter()
                            .map(|input| engine.append(input))
                            .collect::<Vec<u64>>()
                    })
                })
                .collect();
            threads
                .into_iter()
                .map(|t| t.join().expect("A3 thread"))
                .collect()
        });
        let elapsed = started.elapsed();

        // Each seq was handed out once, and holds the event of its thread.
        let total = per_thread * A3_THREADS;
        let mut index_at_seq = vec![usize::MAX; total];
        for (t, seqs) in seqs.iter().enumerate() {
            assert!(
                seqs.windows(2).all(|w| w[0] < w[1]),
                "{name} A3: seqs not increasing"
            );
            for (i, &seq) in seqs.iter().enumerate() {
                let slot = &mut index_at_seq[seq as usize - 1];
                assert_eq!(*slot, usize::MAX, "{name} A3: seq {seq} given twice");
                *slot = t * per_thread + i;
            }
        }
        self.check_store(&engine, &format!("{name} A3"), total, |seq| {
            Row::expected(&self.truth.events[index_at_seq[seq as usize - 1]], seq)
        });
        engine.close();
        std::fs::remove_dir_all(&dir).expect("remove bench dir");
        self.figures.set("A3", name, per_second(total, elapsed));
    }

    /// A2 and S1; returns the directory of the closed, filled store.
    fn a2<E: Engine>(&mut self) -> PathBuf {
        let name = E::NAME;
        self.progress(&format!("{name}: A2"));
        let n = self.truth.n();
        let dir = self.fresh_dir(&format!("{name}-a2"));
        let engine = E::open(&dir);
        let inputs: Vec<E::Input> = self.truth.events.iter().map(E::input).collect();
        let started = Instant::now();
        let firsts: Vec<u64> = inputs
            .chunks(BATCH_EVENTS)
            .map(|batch| engine.append_batch(batch))
            .collect();
        let elapsed = started.elapsed();
        // The same clock, on until the indexes answer for every event too
        // (at once for SQLite and sled, whose indexes are in the batch's
        // transaction).
        engine.wait_indexes_current();
        let elapsed_indexed = started.elapsed();
        drop(inputs);

        let expected_firsts = (0..n).step_by(BATCH_EVENTS).map(|i| i as u64 + 1);
        assert!(
            firsts.iter().copied().eq(expected_firsts),
            "{name} A2: wrong seqs"
        );
        engine.close();
        let usage = disk_usage(&dir);
        self.disk.insert(name, usage);
        self.figures.set("A2", name, per_second(n, elapsed));
        self.figures
            .set("A2+idx", name, per_second(n, elapsed_indexed));
        self.figures.set(
            "A2 MB/s",
            name,
            self.truth.raw.len() as f64 / 1e6 / elapsed.as_secs_f64(),
        );
        self.figures.set("S1", name, usage.0 as f64 / n as f64);
        self.figures
            .set("S1 allocated", name, usage.1 as f64 / n as f64);
        // evlog's indexes live in their own directory; SQLite's and sled's
        // share their files with the events.
        let index_dir = dir.join("index");
        if name == Evlog::NAME && index_dir.is_dir() {
            let index_usage = disk_usage(&index_dir);
            self.figures
                .set("S1 index", name, index_usage.0 as f64 / n as f64);
        }
        dir
    }

    fn r1<E: Engine>(&mut self, engine: &E) {
        let name = E::NAME;
        self.progress(&format!("{name}: R1"));
        let n = self.truth.n() as u64;
        let mut rng = Rng::new(PICK_SEED);
        let seqs: Vec<u64> = (0..R1_READS).map(|_| 1 + rng.below(n)).collect();
        let mut rows = Vec::with_capacity(R1_READS);
        let started = Instant::now();
        for &seq in &seqs {
            rows.push(engine.get(seq));
        }
        let elapsed = started.elapsed();
        for (row, seq) in rows.iter().zip(&seqs) {
            assert_eq!(
                *row,
                Row::expected(&self.truth.events[*seq as usize - 1], *seq),
                "{name} R1"
            );
        }
        self.figures.set("R1", name, per_second(R1_READS, elapsed));
    }

    fn r2<E: Engine>(&mut self, engine: &E) {
        let name = E::NAME;
        self.progress(&format!("{name}: R2"));
        let n = self.truth.n();
        let mut digests = Vec::with_capacity(n);
        let started = Instant::now();
        engine.scan(&mut |row| digests.push(row.digest()));
        let elapsed = started.elapsed();
        let all: Vec<u64> = (0..n as u64).collect();
        check_digests(&format!("{name} R2"), &self.truth, &digests, &all);
        self.check_store(engine, &format!("{name} R2"), n, |seq| {
            Row::expected(&self.truth.events[seq as usize - 1], seq)
        });
        self.figures.set("R2", name, per_second(n, elapsed));
        self.figures.set(
            "R2 MB/s",
            name,
            self.truth.raw.len() as f64 / 1e6 / elapsed.as_secs_f64(),
        );
    }

    fn queries<E: Engine>(&mut self, engine: &E) {
        let name = E::NAME;
        // Every query below is measured on current indexes: none of them
        // scans a tail the indexer has not reached.
        let started = Instant::now();
        engine.wait_indexes_current();
        self.progress(&format!(
            "{name}: indexes current after {:.1} ms",
            started.elapsed().as_secs_f64() * 1e3
        ));
        let truth = &self.truth;
        let mut rng = Rng::new(PICK_SEED + 1);
        let correlations: Vec<usize> = (0..QUERIES)
            .map(|_| rng.below(truth.by_correlation.len() as u64) as usize)
            .collect();
        let entities: Vec<usize> = (0..QUERIES)
            .map(|_| rng.below(truth.by_entity.len() as u64) as usize)
            .collect();
        let starts: Vec<u64> = (0..QUERIES).map(|_| rng.below(truth.n() as u64)).collect();

        self.progress(&format!("{name}: Q1"));
        let q1 = timed_queries(&correlations, |&c| {
            let id = truth.events[truth.by_correlation[c][0] as usize].correlation_id;
            engine.correlation(id)
        });
        if let Some((elapsed, answers)) = q1 {
            for (answer, &c) in answers.iter().zip(&correlations) {
                check_digests(
                    &format!("{name} Q1"),
                    truth,
                    answer,
                    &truth.by_correlation[c],
                );
            }
            self.figures.set("Q1", name, per_second(QUERIES, elapsed));
        }

        self.progress(&format!("{name}: Q2"));
        let q2 = timed_queries(&entities, |&rank| {
            let (entity_type, entity_id) = Workload::entity_of_rank(rank as u64);
            engine.entity(entity_type, &entity_id)
        });
        if let Some((elapsed, answers)) = q2 {
            for (answer, &rank) in answers.iter().zip(&entities) {
                check_digests(&format!("{name} Q2"), truth, answer, &truth.by_entity[rank]);
            }
            self.figures.set("Q2", name, per_second(QUERIES, elapsed));
        }

        self.progress(&format!("{name}: Q3"));
        let q3 = timed_queries(&starts, |&index| engine.chain(index + 1));
        if let Some((elapsed, answers)) = q3 {
            for (answer, &index) in answers.iter().zip(&starts) {
                check_digests(&format!("{name} Q3"), truth, answer, &truth.chain(index));
            }
            self.figures.set("Q3", name, per_second(QUERIES, elapsed));
        }

        self.progress(&format!("{name}: T1"));
        // Windows start at a random microsecond from the first event's
        // timestamp to the last full minute of the run.
        let first_us = truth.events[0].timestamp_us;
        let last_us = truth.events[truth.n() - 1].timestamp_us;
        let start_span_us = (last_us - first_us - T1_WINDOW_US).max(1) as u64;
        let windows: Vec<(i64, i64)> = (0..T1_QUERIES)
            .map(|_| {
                let since_us = first_us + rng.below(start_span_us) as i64;
                (since_us, since_us + T1_WINDOW_US)
            })
            .collect();
        let t1 = timed_queries(&windows, |&(since_us, until_us)| {
            engine.types_in_window(T1_TYPE_PREFIX, since_us, until_us)
        });
        if let Some((elapsed, answers)) = t1 {
            let mut events = 0;
            for (answer, &(since_us, until_us)) in answers.iter().zip(&windows) {
                let expected = truth.t1(since_us, until_us);
                check_digests(&format!("{name} T1"), truth, answer, &expected);
                events += expected.len();
            }
            self.figures
                .set("T1", name, per_second(T1_QUERIES, elapsed));
            self.figures
                .set("T1 events", name, events as f64 / T1_QUERIES as f64);
        }
    }

    /// Events/s of `SCAN_ROUNDS` scans of `events()` (the median), each
    /// checked against the truth: `indices` are the truth's indices of
    /// the events in the order the scan yields them. Also what ran beside
    /// the scans (medians): the process's CPU cores busy and the cores the
    /// hypervisor took (steal), so a slow scan can be told from a busy or
    /// shared machine.
    fn median_scan<I>(
        &self,
        what: &str,
        indices: &[u64],
        mut events: impl FnMut() -> I,
    ) -> ScanFigures
    where
        I: Iterator<Item = evlog::Result<LoggedEvent>>,
    {
        let mut rates = Vec::with_capacity(SCAN_ROUNDS);
        let mut cores_busy = Vec::with_capacity(SCAN_ROUNDS);
        let mut others_cores = Vec::with_capacity(SCAN_ROUNDS);
        let mut faults_per_event = Vec::with_capacity(SCAN_ROUNDS);
        let mut steal_cores = Vec::with_capacity(SCAN_ROUNDS);
        for _ in 0..SCAN_ROUNDS {
            let mut digests = Vec::with_capacity(indices.len());
            let (cpu_before, faults_before) = common::process_usage();
            let machine_before = common::machine_cpu_seconds();
            let started = Instant::now();
            for event in events() {
                digests.push(row_of_logged(event.expect(what)).digest());
            }
            let elapsed = started.elapsed();
            let seconds = elapsed.as_secs_f64();
            let (cpu_after, faults_after) = common::process_usage();
            let process = cpu_after - cpu_before;
            cores_busy.push(process / seconds);
            faults_per_event
                .push((faults_after - faults_before) as f64 / indices.len().max(1) as f64);
            if let (Some((busy_before, steal_before)), Some((busy, steal))) =
                (machine_before, common::machine_cpu_seconds())
            {
                // Clock ticks against getrusage: clamped, a few ticks apart.
                others_cores.push(((busy - busy_before - process) / seconds).max(0.0));
                steal_cores.push((steal - steal_before) / seconds);
            }
            rates.push(per_second(indices.len(), elapsed));
            check_digests(what, &self.truth, &digests, indices);
        }
        ScanFigures {
            rate: median(rates),
            cores_busy: median(cores_busy),
            faults_per_event: median(faults_per_event),
            machine: (!steal_cores.is_empty()).then(|| (median(others_cores), median(steal_cores))),
        }
    }

    /// evlog only: Z1, Z2, archived point reads, archived bytes per event,
    /// and A2 while the archiver runs (see the module docs).
    fn archive(&mut self) {
        let name = Evlog::NAME;
        let n = self.truth.n();
        let dir = self.fresh_dir("evlog-archive");
        let inputs: Vec<Event> = self.truth.events.iter().map(Evlog::input).collect();
        let log = Log::open(&dir, archive_options()).expect("open evlog");
        for batch in inputs.chunks(BATCH_EVENTS) {
            log.append_batch(batch).expect("append");
        }

        // R2 of this very log before it is archived, the live side of
        // Z2/R2: the R2 row was taken minutes earlier on another store,
        // and this VM's speed drifts more than that ratio's margin. Both
        // sides are medians of `SCAN_ROUNDS` scans.
        self.progress(&format!("{name}: R2 of the log to be archived"));
        let all: Vec<u64> = (0..n as u64).collect();
        let live = self.median_scan(&format!("{name} R2 before archiving"), &all, || {
            log.iter(..).expect("iter")
        });
        self.figures.set("R2 live", name, live.rate);
        live.record(
            &mut self.figures,
            [
                "R2 live cores",
                "R2 live faults",
                "R2 live others",
                "R2 live steal",
            ],
            name,
        );

        // Z1: every sealed segment into an archive, on the archiver thread.
        // The archiver waits for the indexes to cover a segment before it
        // archives it; they are made current first so Z1 times compression.
        assert!(
            matches!(
                log.wait_for_index(n as u64, Duration::from_secs(600)),
                evlog::WaitOutcome::Reached(_)
            ),
            "{name}: indexes not current before Z1"
        );
        self.progress(&format!("{name}: Z1 archive all sealed segments"));
        let started = Instant::now();
        let report = log.archive_all_sealed().expect("archive_all_sealed");
        let z1 = started.elapsed();
        let archive_dir = dir.join("archive");
        assert!(report.segments_archived > 0, "Z1 archived nothing");
        let archived = evlog::Archive::open(&archive_dir)
            .expect("open archives")
            .last_seq();
        let input_bytes = self.truth.raw_range(0, archived as usize).len() as f64;
        let archived_bytes = disk_usage(&archive_dir).0 as f64;
        self.figures
            .set("Z1", name, input_bytes / 1e6 / z1.as_secs_f64());
        self.figures
            .set("Z1 bytes", name, archived_bytes / archived as f64);
        self.figures
            .set("Z1 ratio", name, archived_bytes / input_bytes);
        // Every archived event reads back as appended.
        self.check_store(&Evlog { log }, &format!("{name} Z1"), n, |seq| {
            Row::expected(&self.truth.events[seq as usize - 1], seq)
        });

        // Z2: replay every archived event from the archives alone.
        self.progress(&format!("{name}: Z2 replay from archives"));
        let offline = evlog::Archive::open(&archive_dir).expect("open archives");
        let indices: Vec<u64> = (0..archived).collect();
        let replay = self.median_scan(&format!("{name} Z2"), &indices, || {
            offline.iter(..).expect("archive iter")
        });
        self.figures.set("Z2", name, replay.rate);
        replay.record(
            &mut self.figures,
            ["Z2 cores", "Z2 faults", "Z2 others", "Z2 steal"],
            name,
        );
        self.figures
            .set("Z2/R2 live", name, replay.rate / live.rate);
        drop(offline);

        // Archived point reads with a cold frame cache (cache off: every
        // read decompresses its frame).
        self.progress(&format!("{name}: archived point reads"));
        let log = Log::open(&dir, archive_options().archive_cache_bytes(0)).expect("open evlog");
        let mut rng = Rng::new(PICK_SEED);
        let seqs: Vec<u64> = (0..R1_READS).map(|_| 1 + rng.below(archived)).collect();
        let mut latencies = Vec::with_capacity(seqs.len());
        for &seq in &seqs {
            let t = Instant::now();
            let event = log.get(seq).expect("archived get");
            latencies.push(t.elapsed());
            assert_eq!(
                row_of_logged(event),
                Row::expected(&self.truth.events[seq as usize - 1], seq),
                "{name} archived get"
            );
        }
        latencies.sort_unstable();
        self.figures
            .set("Z get p50", name, percentile_us(&latencies, 0.50));
        self.figures
            .set("Z get p99", name, percentile_us(&latencies, 0.99));
        log.close().expect("close");
        std::fs::remove_dir_all(&dir).expect("remove bench dir");

        // A2 with and without the archiver at work: the same N events into
        // a fresh log each time; with it, a thread archives every segment
        // as soon as it is sealed. Rounds alternate which goes first
        // (without, with; with, without; ...), and each row is the median
        // of its rounds, so neither side always runs after the other's
        // directory was removed.
        let mut rates: [Vec<f64>; 2] = [Vec::new(), Vec::new()];
        for round in 0..A2_ARCHIVING_ROUNDS {
            let order = if round % 2 == 0 {
                [false, true]
            } else {
                [true, false]
            };
            for archiving in order {
                self.progress(&format!(
                    "{name}: A2 {} the archiver, round {}",
                    if archiving { "with" } else { "without" },
                    round + 1
                ));
                let dir = self.fresh_dir("evlog-a2-archiving");
                let log = Log::open(&dir, archive_options()).expect("open evlog");
                let done = std::sync::atomic::AtomicBool::new(false);
                let (elapsed, archived_segments) = std::thread::scope(|scope| {
                    let archiver = scope.spawn(|| {
                        let mut segments = 0;
                        while archiving && !done.load(std::sync::atomic::Ordering::Acquire) {
                            segments +=
                                log.archive_all_sealed().expect("archive").segments_archived;
                            std::thread::sleep(Duration::from_millis(5));
                        }
                        segments
                    });
                    let started = Instant::now();
                    for batch in inputs.chunks(BATCH_EVENTS) {
                        log.append_batch(batch).expect("append");
                    }
                    let elapsed = started.elapsed();
                    done.store(true, std::sync::atomic::Ordering::Release);
                    (elapsed, archiver.join().expect("archiver thread"))
                });
                if archiving {
                    assert!(
                        archived_segments > 0,
                        "the archiver archived nothing during A2"
                    );
                }
                log.close().expect("close");
                std::fs::remove_dir_all(&dir).expect("remove bench dir");
                rates[usize::from(archiving)].push(per_second(n, elapsed));
            }
        }
        let [without, with] = rates.map(median);
        self.figures.set("A2 same run", name, without);
        self.figures.set("A2 archiving", name, with);
        self.figures.set("A2 archiving ratio", name, with / without);
    }

    /// evlog only: A2's batches with two in flight (`Log::submit_batch`),
    /// and both ways with the secondary indexes off (the log alone), each
    /// against the serial A2 in the same rounds. Four variants, `A2_VARIANT_ROUNDS`
    /// rounds, the order rotated each round, medians reported; each run
    /// appends the same N events into a fresh log.
    fn a2_variants(&mut self) {
        let name = Evlog::NAME;
        let n = self.truth.n();
        let inputs: Vec<Event> = self.truth.events.iter().map(Evlog::input).collect();
        // (figure key, indexes on, batches in flight, fsyncs figure key)
        const VARIANTS: [(&str, bool, usize, Option<&str>); 4] = [
            ("A2 serial", true, 1, None),
            (
                "A2 pipelined",
                true,
                A2_IN_FLIGHT,
                Some("A2 pipelined fsyncs"),
            ),
            ("A2 log only", false, 1, None),
            (
                "A2 log only pipelined",
                false,
                A2_IN_FLIGHT,
                Some("A2 log only pipelined fsyncs"),
            ),
        ];
        let mut rates: [Vec<f64>; 4] = Default::default();
        // fsyncs of the active segment per run: with batches in flight the
        // writer may commit two in one group, so fewer fsyncs than
        // batches (L2 syncs every batch); printed so the ratio reads right.
        let mut fsyncs: [Vec<f64>; 4] = Default::default();
        for round in 0..A2_VARIANT_ROUNDS {
            for k in 0..VARIANTS.len() {
                let which = (k + round) % VARIANTS.len();
                let (key, indexes, in_flight_max, _) = VARIANTS[which];
                self.progress(&format!("{name}: {key}, round {}", round + 1));
                let dir = self.fresh_dir("evlog-a2-variant");
                let options = Options::default()
                    .durability(Durability::Always)
                    .secondary_indexes(indexes);
                let log = Log::open(&dir, options).expect("open evlog");
                let mut in_flight = std::collections::VecDeque::with_capacity(in_flight_max);
                let mut next_first = 1u64;
                let mut check = |pending: (u64, evlog::PendingAppend)| {
                    let range = pending.1.wait().expect("append");
                    assert_eq!(range.start, pending.0, "{name} {key}: wrong seqs");
                };
                let started = Instant::now();
                for batch in inputs.chunks(BATCH_EVENTS) {
                    if in_flight.len() == in_flight_max {
                        check(in_flight.pop_front().expect("one in flight"));
                    }
                    in_flight.push_back((next_first, log.submit_batch(batch).expect("submit")));
                    next_first += batch.len() as u64;
                }
                in_flight.into_iter().for_each(&mut check);
                let elapsed = started.elapsed();
                assert_eq!(log.durable_seq(), n as u64, "{name} {key}: not all durable");
                if let Some(append) = log.metrics().expect("metrics").appends {
                    fsyncs[which].push(append.fsync_duration_us.count as f64);
                }
                log.close().expect("close");
                std::fs::remove_dir_all(&dir).expect("remove bench dir");
                rates[which].push(per_second(n, elapsed));
            }
        }
        let raw = self.figures.get("A2", "raw");
        for (which, &(key, _, _, fsyncs_key)) in VARIANTS.iter().enumerate() {
            self.figures
                .set(key, name, median(std::mem::take(&mut rates[which])));
            if let Some(raw) = raw {
                self.figures.set(key, "raw", raw);
            }
            let runs = &fsyncs[which];
            if let Some(fsyncs_key) = fsyncs_key {
                if !runs.is_empty() {
                    let per_batch = runs.iter().sum::<f64>()
                        / runs.len() as f64
                        / n.div_ceil(BATCH_EVENTS) as f64;
                    self.figures.set(fsyncs_key, name, per_batch);
                    self.figures.set(fsyncs_key, "raw", 1.0);
                }
            }
        }
    }

    /// evlog only: I1, indexing a log appended without indexes, from the
    /// open that turns them on until they are current; I2, `reindex()` of
    /// the same log.
    fn index_catch_up(&mut self) {
        let name = Evlog::NAME;
        self.progress(&format!("{name}: I1 append without indexes"));
        let n = self.truth.n();
        let dir = self.fresh_dir(&format!("{name}-i1"));
        let unindexed = Options::default()
            .durability(Durability::Always)
            .secondary_indexes(false);
        let log = Log::open(&dir, unindexed).expect("open evlog without indexes");
        let inputs: Vec<Event> = self
            .truth
            .events
            .iter()
            .map(GeneratedEvent::event)
            .collect();
        for batch in inputs.chunks(BATCH_EVENTS) {
            log.append_batch(batch).expect("evlog append_batch");
        }
        drop(inputs);
        log.close().expect("evlog close");
        assert!(
            !dir.join("index").exists(),
            "{name} I1: an index directory exists with indexes off"
        );

        self.progress(&format!("{name}: I1 catch-up"));
        let indexed = Options::default().durability(Durability::Always);
        let started = Instant::now();
        let engine = Evlog {
            log: Log::open(&dir, indexed).expect("open evlog with indexes"),
        };
        wait_index_lag_zero(&engine.log);
        let catch_up = started.elapsed();
        self.check_indexed(&engine, "I1");
        self.figures.set("I1", name, catch_up.as_secs_f64());
        self.figures.set("I1 rate", name, per_second(n, catch_up));

        self.progress(&format!("{name}: I2 reindex"));
        let started = Instant::now();
        let through = engine.log.reindex().expect("evlog reindex");
        let reindex = started.elapsed();
        assert_eq!(through, n as u64, "{name} I2: reindexed a different count");
        assert_eq!(engine.log.index_lag(), 0, "{name} I2: lag after reindex");
        self.check_indexed(&engine, "I2");
        self.figures.set("I2", name, reindex.as_secs_f64());
        self.figures.set("I2 rate", name, per_second(n, reindex));
        engine.close();
        std::fs::remove_dir_all(&dir).expect("remove bench dir");
    }

    /// Untimed: the indexes are in use and give the right answers to a
    /// sample of Q1, Q2 and Q3 queries.
    fn check_indexed(&self, engine: &Evlog, what: &str) {
        let status = engine.log.index_status();
        assert!(
            status.available && status.indexed_through == self.truth.n() as u64,
            "evlog {what}: indexes not current: {status:?}"
        );
        let truth = &self.truth;
        let mut rng = Rng::new(PICK_SEED + 2);
        for _ in 0..100 {
            let c = rng.below(truth.by_correlation.len() as u64) as usize;
            let id = truth.events[truth.by_correlation[c][0] as usize].correlation_id;
            let rows = engine.correlation(id).expect("evlog Q1");
            let got: Vec<_> = rows.iter().map(Row::digest).collect();
            check_digests(
                &format!("evlog {what} Q1"),
                truth,
                &got,
                &truth.by_correlation[c],
            );

            let rank = rng.below(truth.by_entity.len() as u64);
            let (entity_type, entity_id) = Workload::entity_of_rank(rank);
            let rows = engine.entity(entity_type, &entity_id).expect("evlog Q2");
            let got: Vec<_> = rows.iter().map(Row::digest).collect();
            check_digests(
                &format!("evlog {what} Q2"),
                truth,
                &got,
                &truth.by_entity[rank as usize],
            );

            let index = rng.below(truth.n() as u64);
            let rows = engine.chain(index + 1).expect("evlog Q3");
            let got: Vec<_> = rows.iter().map(Row::digest).collect();
            check_digests(
                &format!("evlog {what} Q3"),
                truth,
                &got,
                &truth.chain(index),
            );
        }
    }

    /// L1 (and L1 into a preallocated file), L2 and L3.
    fn raw_limits(&mut self) {
        self.progress("raw: L1");
        let dir = self.fresh_dir("raw");
        std::fs::create_dir_all(&dir).expect("create raw dir");
        let count = self.a1_count();

        for (op, preallocate) in [("L1", false), ("L1 prealloc", true)] {
            let path = dir.join(format!("{}.bin", op.replace(' ', "-")));
            let mut file = File::create(&path).expect("create raw file");
            if preallocate {
                let len = self.truth.raw_range(0, count).len();
                file.write_all(&vec![0u8; len]).expect("preallocate");
                file.sync_all().expect("sync preallocation");
                drop(file);
                file = OpenOptions::new()
                    .write(true)
                    .open(&path)
                    .expect("reopen raw file");
            }
            let mut latencies = Vec::with_capacity(count);
            let started = Instant::now();
            for i in 0..count {
                let t = Instant::now();
                file.write_all(self.truth.record(i)).expect("raw write");
                file.sync_data().expect("raw fdatasync");
                latencies.push(t.elapsed());
            }
            let elapsed = started.elapsed();
            let written = std::fs::read(&path).expect("read raw file back");
            assert!(
                written == self.truth.raw_range(0, count),
                "raw {op}: bytes differ"
            );
            latencies.sort_unstable();
            let column = if preallocate { "raw prealloc" } else { "raw" };
            self.figures.set("A1", column, per_second(count, elapsed));
            self.figures
                .set("A1 p50", column, percentile_us(&latencies, 0.50));
            self.figures
                .set("A1 p99", column, percentile_us(&latencies, 0.99));
        }

        self.progress("raw: L2");
        let n = self.truth.n();
        let path = dir.join("L2.bin");
        let mut file = File::create(&path).expect("create raw file");
        let started = Instant::now();
        for from in (0..n).step_by(BATCH_EVENTS) {
            let to = (from + BATCH_EVENTS).min(n);
            file.write_all(self.truth.raw_range(from, to))
                .expect("raw write");
            file.sync_data().expect("raw fdatasync");
        }
        let elapsed = started.elapsed();
        drop(file);
        self.figures.set("A2", "raw", per_second(n, elapsed));
        self.figures.set(
            "A2 MB/s",
            "raw",
            self.truth.raw.len() as f64 / 1e6 / elapsed.as_secs_f64(),
        );
        self.figures
            .set("S1", "raw", self.truth.raw.len() as f64 / n as f64);

        self.progress("raw: L3");
        let mut file = File::open(&path).expect("open raw file");
        let mut buf = vec![0u8; 1 << 20];
        let mut read = 0usize;
        let started = Instant::now();
        loop {
            let got = file.read(&mut buf).expect("raw read");
            if got == 0 {
                break;
            }
            read += got;
        }
        let elapsed = started.elapsed();
        assert_eq!(read, self.truth.raw.len(), "raw L3: wrong length");
        assert!(
            std::fs::read(&path).expect("raw read") == self.truth.raw,
            "raw L3: bytes differ"
        );
        self.figures.set("R2", "raw", per_second(n, elapsed));
        self.figures
            .set("R2 MB/s", "raw", read as f64 / 1e6 / elapsed.as_secs_f64());
        std::fs::remove_dir_all(&dir).expect("remove raw dir");
    }
}

/// The (seq, id) of every event of every answer, in order.
type Answers = Vec<Vec<(u64, Uuid)>>;

/// Runs `query` for each pick, keeping (seq, id) of every returned event;
/// `None` if the engine cannot answer.
fn timed_queries<P>(
    picks: &[P],
    query: impl Fn(&P) -> Option<Vec<Row>>,
) -> Option<(Duration, Answers)> {
    let mut answers = Vec::with_capacity(picks.len());
    let started = Instant::now();
    for pick in picks {
        let rows = query(pick)?;
        answers.push(rows.iter().map(Row::digest).collect());
    }
    Some((started.elapsed(), answers))
}

// ---------------------------------------------------------------------------
// Report.

/// Options of the archive rows: 8 MiB segments, so that N = 100 000
/// events (about 35 MB) fill several sealed segments to archive.
fn archive_options() -> Options {
    Options::default()
        .durability(Durability::Always)
        .segment_bytes_max(ARCHIVE_SEGMENT_BYTES)
}

const ARCHIVE_SEGMENT_BYTES: u64 = 8 * 1024 * 1024;
/// Rounds of A2 with and without the archiver (medians are reported).
const A2_ARCHIVING_ROUNDS: usize = 9;
/// Scans of the archive section's log before archiving (R2 live) and of
/// its archives (Z2); medians are reported.
const SCAN_ROUNDS: usize = 3;
/// Rounds of the A2 variants (medians are reported).
const A2_VARIANT_ROUNDS: usize = 3;
/// Batches a pipelined A2 keeps in flight: one being written and synced
/// while the next is encoded.
const A2_IN_FLIGHT: usize = 2;

/// (key, operation, unit) of each table row, in order.
const ROWS: &[(&str, &str, &str)] = &[
    (
        "A1",
        "A1 append 1 event, durable each, 1 thread",
        "events/s",
    ),
    ("A1 p50", "A1 latency p50", "µs"),
    ("A1 p99", "A1 latency p99", "µs"),
    (
        "A2",
        "A2 append batches of 1 000, durable per batch (log durable)",
        "events/s",
    ),
    (
        "A2+idx",
        "A2 + indexes current (to index lag 0 after the last batch)",
        "events/s",
    ),
    ("A2 MB/s", "A2 throughput of encoded events", "MB/s"),
    (
        "A3",
        "A3 4 threads, 1 event per call, durable each",
        "events/s",
    ),
    ("R1", "R1 get a random event by seq", "reads/s"),
    ("R2", "R2 scan all events in order", "events/s"),
    ("R2 MB/s", "R2 throughput of encoded events", "MB/s"),
    ("Q1", "Q1 events of a correlation, in order", "queries/s"),
    ("Q2", "Q2 history of an entity, in order", "queries/s"),
    ("Q3", "Q3 causation chain back to the root", "chains/s"),
    (
        "T1",
        "T1 events of type validation.* in a 1-minute window",
        "queries/s",
    ),
    ("T1 events", "T1 mean events per answer", "events"),
    (
        "S1",
        "S1 bytes on disk per event after A2, log + indexes",
        "bytes",
    ),
    ("S1 allocated", "S1 allocated blocks per event", "bytes"),
    ("S1 index", "S1 of which evlog's index directory", "bytes"),
    ("C1", "C1 reopen after clean close, to first read", "ms"),
    (
        "I1",
        "I1 index catch-up of N unindexed events, open to lag 0",
        "s",
    ),
    ("I1 rate", "I1 catch-up rate", "events/s"),
    ("I2", "I2 reindex() of the same N events", "s"),
    ("I2 rate", "I2 reindex rate", "events/s"),
    (
        "Z1",
        "Z1 archive all sealed segments (the archiver's zstd level, 5), input",
        "MB/s",
    ),
    ("Z1 bytes", "Z1 archived bytes per event", "bytes"),
    (
        "Z1 ratio",
        "Z1 archived bytes / live encoded bytes",
        "ratio",
    ),
    (
        "Z2",
        "Z2 replay every archived event from archives alone (median of 3)",
        "events/s",
    ),
    (
        "R2 live",
        "R2 scan of the same log before it was archived (median of 3)",
        "events/s",
    ),
    (
        "Z2/R2 live",
        "Z2 / R2 of the same log (the two rows above)",
        "ratio",
    ),
    (
        "R2 live cores",
        "CPU cores the bench process kept busy during those R2 scans (median)",
        "cores",
    ),
    (
        "Z2 cores",
        "CPU cores the bench process kept busy during the Z2 scans (median): the replay decompresses ahead on a second thread",
        "cores",
    ),
    (
        "R2 live faults",
        "minor page faults of the process per event during those R2 scans (median)",
        "faults",
    ),
    (
        "Z2 faults",
        "minor page faults of the process per event during the Z2 scans (median)",
        "faults",
    ),
    (
        "R2 live others",
        "CPU cores the rest of the machine (other processes, kernel threads) kept busy during those R2 scans (median)",
        "cores",
    ),
    (
        "Z2 others",
        "CPU cores the rest of the machine (other processes, kernel threads) kept busy during the Z2 scans (median)",
        "cores",
    ),
    (
        "R2 live steal",
        "CPU the hypervisor took from this machine during those R2 scans (steal, median)",
        "cores",
    ),
    (
        "Z2 steal",
        "CPU the hypervisor took from this machine during the Z2 scans (steal, median)",
        "cores",
    ),
    ("Z get p50", "archived get, frame cache off, p50", "µs"),
    ("Z get p99", "archived get, frame cache off, p99", "µs"),
    (
        "A2 serial",
        "A2 again, serial (same rounds as the next three; median of 3)",
        "events/s",
    ),
    (
        "A2 pipelined",
        "A2 with 2 batches in flight (`submit_batch`), each durable before its wait returns",
        "events/s",
    ),
    (
        "A2 log only",
        "A2, secondary indexes off (the log alone), serial",
        "events/s",
    ),
    (
        "A2 log only pipelined",
        "A2, secondary indexes off, 2 batches in flight",
        "events/s",
    ),
    (
        "A2 pipelined fsyncs",
        "fsyncs per batch in the row \"A2 with 2 batches in flight\" (L2: one per batch)",
        "fsyncs",
    ),
    (
        "A2 log only pipelined fsyncs",
        "fsyncs per batch, indexes off, 2 in flight",
        "fsyncs",
    ),
    (
        "A2 same run",
        "A2 into a fresh log, no archiver (same run as the next row; median of 9)",
        "events/s",
    ),
    (
        "A2 archiving",
        "A2 while a thread archives each segment once sealed (median of 9)",
        "events/s",
    ),
    (
        "A2 archiving ratio",
        "A2 while archiving / A2 without (the two rows above)",
        "ratio",
    ),
];

fn format_figure(value: Option<f64>) -> String {
    match value {
        None => "n/a".into(),
        Some(v) if v >= 100.0 => format!("{v:.0}"),
        Some(v) if v >= 10.0 => format!("{v:.1}"),
        Some(v) => format!("{v:.2}"),
    }
}

fn format_ratio(a: Option<f64>, b: Option<f64>) -> String {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => format!("{:.2}×", a / b),
        _ => "–".into(),
    }
}

fn markdown_table(figures: &Figures) -> String {
    let mut out = String::from(
        "| operation | unit | raw limit | evlog | SQLite | sled | evlog/raw | evlog/SQLite | evlog/sled |\n\
         |---|---|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for &(key, label, unit) in ROWS {
        let evlog = figures.get(key, "evlog");
        let raw = figures.get(key, "raw");
        let raw_text = match raw {
            None => "–".to_string(),
            Some(_) => format_figure(raw),
        };
        // Ratios are compared with targets such as 0.25 or 0.5: two
        // decimals would print 0.2495 as 0.25.
        let evlog_text = match evlog {
            Some(v) if unit == "ratio" => format!("{v:.4}"),
            _ => format_figure(evlog),
        };
        out.push_str(&format!(
            "| {label} | {unit} | {raw_text} | {evlog_text} | {} | {} | {} | {} | {} |\n",
            format_figure(figures.get(key, "SQLite")),
            format_figure(figures.get(key, "sled")),
            format_ratio(evlog, raw),
            format_ratio(evlog, figures.get(key, "SQLite")),
            format_ratio(evlog, figures.get(key, "sled")),
        ));
    }
    out
}

fn read_trimmed(path: &str) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .map(|s| s.trim().to_string())
}

/// The filesystem type of the mount holding `dir`, from /proc/mounts.
fn filesystem_of(dir: &Path) -> Option<String> {
    let dir = dir.canonicalize().ok()?;
    let mounts = std::fs::read_to_string("/proc/mounts").ok()?;
    mounts
        .lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let (_, mount, fs) = (fields.next()?, fields.next()?, fields.next()?);
            dir.starts_with(mount)
                .then(|| (mount.len(), fs.to_string()))
        })
        .max_by_key(|(len, _)| *len)
        .map(|(_, fs)| fs)
}

fn machine_info(dir: &Path) -> serde_json::Value {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|text| {
            text.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|s| s.trim().to_string())
        });
    let memory_kib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|text| {
            text.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        });
    json!({
        "cores": std::thread::available_parallelism().map(|n| n.get()).ok(),
        "cpu": cpu,
        "memory_kib": memory_kib,
        "kernel": read_trimmed("/proc/sys/kernel/osrelease"),
        "filesystem": filesystem_of(dir),
        "bench_dir": dir.display().to_string(),
    })
}

fn main() {
    let full = std::env::var("EVLOG_BENCH_FULL").is_ok_and(|v| v == "1");
    let n: u64 = match std::env::var("EVLOG_BENCH_N") {
        Ok(text) => text.trim().parse().expect("EVLOG_BENCH_N must be a number"),
        Err(_) if full => 1_000_000,
        Err(_) => 100_000,
    };
    assert!(n >= 1_000, "EVLOG_BENCH_N must be at least 1 000");
    let out = std::env::var("EVLOG_BENCH_OUT").map_or_else(
        |_| Path::new(env!("CARGO_MANIFEST_DIR")).join("target/compare.json"),
        PathBuf::from,
    );
    let tmp = common::bench_root("compare-");

    let started = Instant::now();
    let config = WorkloadConfig::new(n);
    eprintln!("generating {n} events (seed {})", config.seed);
    let mut bench = Bench {
        truth: Truth::new(config),
        root: tmp.path().to_path_buf(),
        started,
        figures: Figures::default(),
        disk: BTreeMap::new(),
    };
    bench.raw_limits();
    bench.run_engine::<Evlog>();
    bench.index_catch_up();
    bench.archive();
    bench.a2_variants();
    // EVLOG_BENCH_ONLY=evlog skips the peers (for a quick look at evlog's
    // own rows; the ratios against them then read "–").
    if std::env::var("EVLOG_BENCH_ONLY").map_or(true, |only| only != "evlog") {
        bench.run_engine::<Sqlite>();
        bench.run_engine::<Sled>();
    }
    let wall = started.elapsed();

    let machine = machine_info(tmp.path());
    let table = markdown_table(&bench.figures);
    let raw_bytes = bench.truth.raw.len();
    println!(
        "\n## evlog vs SQLite vs sled vs raw disk: W1, N = {n}, seed {}\n",
        config.seed
    );
    println!(
        "Machine: {} cores, {}, kernel {}, filesystem {}. Mean encoded event: {:.0} bytes.",
        machine["cores"],
        machine["cpu"].as_str().unwrap_or("unknown CPU"),
        machine["kernel"].as_str().unwrap_or("?"),
        machine["filesystem"].as_str().unwrap_or("?"),
        raw_bytes as f64 / n as f64,
    );
    println!(
        "Durability: evlog Durability::Always; SQLite WAL + synchronous=FULL; sled flush() after \
         each append or batch; raw fdatasync per event (L1) or per 1 000 events (L2).\n"
    );
    println!("{table}");
    println!(
        "Raw limit column: A1 and A3 = L1 (write + fdatasync per event, appending to a new file), \
         A2 = L2 (per 1 000-event chunk), R2 = L3 (sequential read), S1 = encoded bytes alone. \
         L1 into a preallocated file: {} events/s (p50 {} µs, p99 {} µs). Ratios are evlog's \
         figure divided by the other's: above 1 is better for rates, worse for µs, ms and bytes.",
        format_figure(bench.figures.get("A1", "raw prealloc")),
        format_figure(bench.figures.get("A1 p50", "raw prealloc")),
        format_figure(bench.figures.get("A1 p99", "raw prealloc")),
    );
    println!("Wall time: {:.1} s", wall.as_secs_f64());

    let figures: serde_json::Map<String, serde_json::Value> = bench
        .figures
        .0
        .iter()
        .map(|(op, columns)| (op.to_string(), json!(columns)))
        .collect();
    let report = json!({
        "workload": "W1",
        "n": n,
        "seed": config.seed,
        "mode": if n == 1_000_000 { "full" } else if n == 100_000 { "quick" } else { "custom" },
        "machine": machine,
        "durability": {
            "evlog": "Durability::Always (fdatasync before each append returns; group commit)",
            "SQLite": "journal_mode=WAL, synchronous=FULL, autocommit per single append, one transaction per batch",
            "sled": "one transaction over 4 trees per append or batch, then Db::flush()",
            "raw": "L1: write + fdatasync per event; L2: write + fdatasync per 1000 events",
        },
        "counts": {
            "A1": bench.a1_count(),
            "A2_batch": BATCH_EVENTS,
            "A3_threads": A3_THREADS,
            "A3_per_thread": bench.a3_per_thread(),
            "R1": R1_READS,
            "queries": QUERIES,
            "T1_queries": T1_QUERIES,
            "T1_window_us": T1_WINDOW_US,
        },
        "rows": ROWS.iter().map(|(key, label, unit)| json!({"key": key, "operation": label, "unit": unit})).collect::<Vec<_>>(),
        "figures": figures,
        "disk_after_a2": bench.disk.iter().map(|(engine, (len, allocated))| {
            (engine.to_string(), json!({"apparent_bytes": len, "allocated_bytes": allocated}))
        }).collect::<serde_json::Map<_, _>>(),
        "raw_bytes": raw_bytes,
        "wall_seconds": wall.as_secs_f64(),
    });
    if let Some(parent) = out.parent() {
        std::fs::create_dir_all(parent).expect("create output dir");
    }
    let text = serde_json::to_string_pretty(&report).expect("serialize report");
    std::fs::write(&out, text + "\n").expect("write report");
    eprintln!("wrote {}", out.display());
}
