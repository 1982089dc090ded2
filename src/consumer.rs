//! Durable named consumers: a subscription whose position is kept in the
//! data directory and moves only when the consumer commits.
//!
//! The position is the highest seq such that every matching event up to it
//! was handled; after a restart delivery starts right after it, so an
//! event handled but not yet committed is delivered again (at least once).
//! A consumer that writes derived events can commit in the same atomic
//! `append_batch` as those events ([`Consumer::append_batch_and_commit`]):
//! the position then travels inside the log as a bookkeeping event, and
//! after any crash the derived events and the position agree (exactly-once
//! effects).
//!
//! Position file `DIR/consumers/<name>.pos` (FORMAT.md): 32 bytes, magic
//! `EVLOGPOS`, version u32 (1), reserved u32 (0), position u64, CRC-32 of
//! bytes 0..24 u32, reserved u32 (0); all little-endian; replaced whole by
//! write-temp, fsync, rename, fsync-directory.

use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::codec::{put_u32, put_u64, u32_at, u64_at};
use crate::error::{CorruptKind, Error, IoContext, Result};
use crate::event::{Entity, Event, LoggedEvent};
use crate::log::Shared;
use crate::subscribe::{Filter, Progress, Start, Subscription};

pub(crate) const CONSUMERS_DIR: &str = "consumers";
const POSITION_SUFFIX: &str = ".pos";
const POSITION_MAGIC: &[u8; 8] = b"EVLOGPOS";
const POSITION_VERSION: u32 = 1;
const POSITION_FILE_BYTES: usize = 32;
/// The bookkeeping event a same-batch commit appends.
pub const CONSUMER_COMMIT_TYPE: &str = "evlog.consumer.committed";
/// Entity type of those events (the entity id is the consumer's name), so
/// that the latest one is an entity lookup.
pub const CONSUMER_ENTITY_TYPE: &str = "evlog.consumer";
/// Longest consumer name, in bytes.
pub const CONSUMER_NAME_BYTES_MAX: usize = 64;

const PARKED_SUFFIX: &str = ".parked";
/// Deliveries of one event before a failing one is parked, by default.
pub const MAX_DELIVERIES_DEFAULT: u32 = 5;
/// Longest failure reason kept with a parked event, in bytes.
const PARKED_REASON_BYTES_MAX: usize = 1024;
/// Fixed part of a parked record: length u32, CRC u32, seq u64, attempts u32.
const PARKED_HEADER_BYTES: usize = 20;

/// An event a durable consumer's handler kept failing on, set aside so the
/// consumer could move on (see [`Consumer::fail`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParkedEvent {
    /// Sequence number of the event.
    pub seq: u64,
    /// Deliveries that failed.
    pub attempts: u32,
    /// The handler's last reason (at most 1 KiB).
    pub reason: String,
}

/// What [`Consumer::fail`] did with the event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailOutcome {
    /// It will be delivered again next; this was failed delivery `attempt`.
    Redeliver {
        /// Failed deliveries of the event so far.
        attempt: u32,
    },
    /// It reached the limit and was parked; the consumer moved past it.
    Parked,
}

/// A durable consumer as [`crate::Log::consumers`] lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerInfo {
    /// The consumer's name (its position file is `consumers/NAME.pos`).
    pub name: String,
    /// Every matching event up to this seq was handled and committed.
    pub position: u64,
    /// Events after the position (matching or not).
    pub lag: u64,
}

/// Checks a consumer name: 1 to 64 bytes of `[A-Za-z0-9_.-]`, not
/// starting with a dot (it names a file).
pub fn validate_consumer_name(name: &str) -> Result<()> {
    let valid = !name.is_empty()
        && name.len() <= CONSUMER_NAME_BYTES_MAX
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.');
    if valid {
        Ok(())
    } else {
        Err(Error::InvalidEvent(format!(
            "consumer name {name:?}: 1 to {CONSUMER_NAME_BYTES_MAX} bytes of A-Z, a-z, 0-9, '_', '-', '.', not starting with '.'"
        )))
    }
}

pub(crate) fn consumers_dir(data_dir: &Path) -> PathBuf {
    data_dir.join(CONSUMERS_DIR)
}

fn parked_path(data_dir: &Path, name: &str) -> PathBuf {
    consumers_dir(data_dir).join(format!("{name}{PARKED_SUFFIX}"))
}

/// One parked record: length of the rest (u32 LE), CRC-32 of the rest
/// (u32 LE), then seq (u64 LE), attempts (u32 LE), reason (UTF-8).
fn encode_parked(event: &ParkedEvent) -> Vec<u8> {
    let mut reason = event.reason.as_str();
    if reason.len() > PARKED_REASON_BYTES_MAX {
        let mut end = PARKED_REASON_BYTES_MAX;
        while !reason.is_char_boundary(end) {
            end -= 1;
        }
        reason = &reason[..end];
    }
    let mut rest = Vec::with_capacity(12 + reason.len());
    put_u64(&mut rest, event.seq);
    put_u32(&mut rest, event.attempts);
    rest.extend_from_slice(reason.as_bytes());
    let mut record = Vec::with_capacity(8 + rest.len());
    put_u32(&mut record, rest.len() as u32);
    put_u32(&mut record, crc32fast::hash(&rest));
    record.extend_from_slice(&rest);
    record
}

/// Decodes a parked file into its records and the length of the whole
/// records (where the next one is appended). A last record cut short (a
/// crash while it was appended) is ignored; any other damage is an error
/// naming the offset.
pub(crate) fn decode_parked(bytes: &[u8], path: &Path) -> Result<(Vec<ParkedEvent>, usize)> {
    let mut parked = Vec::new();
    let mut at = 0usize;
    while at < bytes.len() {
        let (Some(len), Some(crc)) = (u32_at(bytes, at), u32_at(bytes, at + 4)) else {
            break; // torn header at the end
        };
        let len = len as usize;
        let Some(rest) = bytes.get(at + 8..at + 8 + len) else {
            break; // torn record at the end
        };
        let corrupt = |kind| Error::Corrupt {
            file: path.to_path_buf(),
            offset: at as u64,
            kind,
        };
        if !(PARKED_HEADER_BYTES - 8..=12 + PARKED_REASON_BYTES_MAX).contains(&len) {
            return Err(corrupt(CorruptKind::RecordLength(len as u32)));
        }
        let computed = crc32fast::hash(rest);
        if computed != crc {
            return Err(corrupt(CorruptKind::RecordChecksum {
                stored: crc,
                computed,
            }));
        }
        let reason = std::str::from_utf8(&rest[12..])
            .map_err(|_| corrupt(CorruptKind::Decode("parked reason is not UTF-8".into())))?;
        parked.push(ParkedEvent {
            seq: u64_at(rest, 0).unwrap_or(0),
            attempts: u32_at(rest, 8).unwrap_or(0),
            reason: reason.to_string(),
        });
        at += 8 + len;
    }
    Ok((parked, at))
}

fn position_path(data_dir: &Path, name: &str) -> PathBuf {
    consumers_dir(data_dir).join(format!("{name}{POSITION_SUFFIX}"))
}

pub(crate) fn encode_position(position: u64) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(POSITION_FILE_BYTES);
    bytes.extend_from_slice(POSITION_MAGIC);
    put_u32(&mut bytes, POSITION_VERSION);
    put_u32(&mut bytes, 0);
    put_u64(&mut bytes, position);
    let crc = crc32fast::hash(&bytes[..24]);
    put_u32(&mut bytes, crc);
    put_u32(&mut bytes, 0);
    bytes
}

pub(crate) fn decode_position(bytes: &[u8], path: &Path) -> Result<u64> {
    let corrupt = |offset, kind| Error::Corrupt {
        file: path.to_path_buf(),
        offset,
        kind,
    };
    if bytes.len() != POSITION_FILE_BYTES {
        return Err(corrupt(
            0,
            CorruptKind::BadHeader("a position file is 32 bytes"),
        ));
    }
    if &bytes[..8] != POSITION_MAGIC {
        return Err(corrupt(0, CorruptKind::BadMagic));
    }
    let stored = u32_at(bytes, 24).unwrap_or(0);
    if crc32fast::hash(&bytes[..24]) != stored {
        return Err(corrupt(24, CorruptKind::HeaderChecksum));
    }
    let version = u32_at(bytes, 8).unwrap_or(0);
    if version != POSITION_VERSION {
        return Err(Error::UnsupportedVersion {
            file: path.to_path_buf(),
            found: version,
            supported: POSITION_VERSION,
        });
    }
    Ok(u64_at(bytes, 16).unwrap_or(0))
}

/// Replaces the consumer's position file durably (creating `consumers/`
/// on first use).
pub(crate) fn store_position(shared: &Shared, name: &str, position: u64) -> Result<()> {
    let dir = consumers_dir(&shared.dir);
    shared.storage.create_dir_all(&dir).at(&dir)?;
    crate::fsutil::write_file_durably(
        &*shared.storage,
        &position_path(&shared.dir, name),
        &encode_position(position),
    )
}

/// The position stored in the file, if there is one.
pub(crate) fn read_position_file(shared: &Shared, name: &str) -> Result<Option<u64>> {
    let path = position_path(&shared.dir, name);
    if !shared.storage.exists(&path) {
        return Ok(None);
    }
    let file = shared
        .storage
        .open(&path, crate::storage::OpenMode::Read)
        .at(&path)?;
    let len = file.size_bytes().at(&path)?;
    if len != POSITION_FILE_BYTES as u64 {
        return Err(Error::Corrupt {
            file: path,
            offset: 0,
            kind: CorruptKind::BadHeader("a position file is 32 bytes"),
        });
    }
    let mut bytes = [0u8; POSITION_FILE_BYTES];
    file.read_exact_at(&mut bytes, 0).at(&path)?;
    decode_position(&bytes, &path).map(Some)
}

/// The position carried by the consumer's latest same-batch commit in the
/// log, if any.
pub(crate) fn position_in_log(shared: &Arc<Shared>, name: &str) -> Result<Option<u64>> {
    let entity = Entity {
        entity_type: CONSUMER_ENTITY_TYPE.into(),
        entity_id: name.into(),
    };
    let Some(event) = shared.latest(&entity)? else {
        return Ok(None);
    };
    let payload: serde_json::Value = event.payload_as()?;
    match payload.get("position").and_then(|p| p.as_u64()) {
        Some(position) => Ok(Some(position)),
        None => Err(Error::Corrupt {
            file: shared.dir.clone(),
            offset: event.seq,
            kind: CorruptKind::Decode(format!(
                "bookkeeping event {} of consumer {name} has no position",
                event.seq
            )),
        }),
    }
}

/// Where consumer `name` resumes: the larger of its file's position and
/// its latest same-batch commit's in the log. One never seen before gets
/// `new_position` (stored at once when `store`). A position past the end
/// of the log (a power cut lost events it had read) is moved back to the
/// end (stored when `store`) and the old one returned beside it; one
/// below what retention kept is `ConsumerBehindLog`, never a silent skip.
/// Durable consumers and automation rules both resume through here.
pub(crate) fn resume_position(
    shared: &Arc<Shared>,
    name: &str,
    new_position: u64,
    store: bool,
) -> Result<(u64, Option<u64>)> {
    let stored_in_file = read_position_file(shared, name)?;
    let stored_in_log = position_in_log(shared, name)?;
    let mut position = match (stored_in_file, stored_in_log) {
        (None, None) => {
            if store {
                store_position(shared, name, new_position)?;
            }
            new_position
        }
        (file, log) => file.unwrap_or(0).max(log.unwrap_or(0)),
    };
    let last = shared.marks.last_seq();
    let mut reset_from = None;
    if position > last {
        tracing::warn!(
            consumer = name,
            position,
            log_end = last,
            "the consumer's position is past the end of the log (events were lost, \
             for example in a power cut); it restarts from the end"
        );
        reset_from = Some(position);
        position = last;
        // Stored at once: left in the file, the old position would be
        // trusted again once the log grows past it, and the events in
        // between would never be delivered.
        if store {
            store_position(shared, name, position)?;
        }
    }
    let first = shared
        .first_seq
        .load(std::sync::atomic::Ordering::Acquire)
        .max(1);
    // Retention deleted events this consumer has not read (a rule without
    // `keep_until_consumed`): resuming would skip them.
    let kept_from = shared
        .catalog
        .deleted_through()
        .map_or(first, |deleted| first.max(deleted + 1));
    if position + 1 < kept_from {
        return Err(Error::ConsumerBehindLog {
            name: name.to_string(),
            position,
            first_seq: kept_from,
        });
    }
    Ok((position, reset_from))
}

/// A durable named consumer; see the module docs and
/// [`crate::Log::consumer`].
pub struct Consumer {
    shared: Arc<Shared>,
    name: String,
    subscription: Subscription,
    /// The committed position (in the file or the log).
    committed: u64,
    /// The last event delivered, and the acknowledged prefix.
    last_delivered: u64,
    acked: u64,
    /// Set when a stored position was beyond the log's end (a power cut
    /// lost the events it had read) and was moved back to the end.
    reset_from: Option<u64>,
    max_deliveries: u32,
    /// Failed deliveries of the event being retried: (seq, count). Counted
    /// in this process only: a restart starts counting again.
    failures: Option<(u64, u32)>,
}

impl Consumer {
    pub(crate) fn open(shared: Arc<Shared>, name: &str, filter: Filter) -> Result<Consumer> {
        validate_consumer_name(name)?;
        // A new consumer starts at the start of the log, and exists from
        // now on: its position file pins what retention rules with
        // `keep_until_consumed` keep for it.
        let first = shared
            .first_seq
            .load(std::sync::atomic::Ordering::Acquire)
            .max(1);
        let (committed, reset_from) = resume_position(&shared, name, first - 1, true)?;
        let subscription =
            Subscription::new(Arc::clone(&shared), filter, Start::Seq(committed + 1))?;
        Ok(Consumer {
            shared,
            name: name.to_string(),
            subscription,
            committed,
            last_delivered: committed,
            acked: committed,
            reset_from,
            max_deliveries: MAX_DELIVERIES_DEFAULT,
            failures: None,
        })
    }

    /// How many times an event whose handler fails is delivered before it
    /// is parked (at least 1; default [`MAX_DELIVERIES_DEFAULT`]).
    pub fn max_deliveries(mut self, deliveries: u32) -> Consumer {
        self.max_deliveries = deliveries.max(1);
        self
    }

    /// Reports that the handler failed on `seq`, the event delivered last.
    /// Below the limit of deliveries the same event comes again from the
    /// next `next_timeout`; at the limit it is parked (recorded durably in
    /// the consumer's parked list with `reason`), counted as handled, and
    /// the consumer moves on.
    pub fn fail(&mut self, seq: u64, reason: &str) -> Result<FailOutcome> {
        if seq != self.last_delivered || seq <= self.acked {
            return Err(Error::InvalidEvent(format!(
                "consumer {}: fail of seq {seq}, which is not the unacknowledged event delivered last ({})",
                self.name, self.last_delivered
            )));
        }
        let attempt = match self.failures {
            Some((failed, count)) if failed == seq => count + 1,
            _ => 1,
        };
        if attempt < self.max_deliveries {
            self.failures = Some((seq, attempt));
            self.subscription.rewind_to(seq);
            return Ok(FailOutcome::Redeliver { attempt });
        }
        self.failures = None;
        park(
            &self.shared,
            &self.name,
            &ParkedEvent {
                seq,
                attempts: attempt,
                reason: reason.to_string(),
            },
        )?;
        self.acked = self.acked.max(seq);
        Ok(FailOutcome::Parked)
    }

    /// The events this consumer parked, in the order they were parked.
    pub fn parked(&self) -> Result<Vec<ParkedEvent>> {
        read_parked(&self.shared, &self.name)
    }

    /// Removes `seq` from the parked list (after replaying it by hand with
    /// `Log::get`). Returns whether it was there.
    pub fn unpark(&mut self, seq: u64) -> Result<bool> {
        let mut parked = self.parked()?;
        let before = parked.len();
        parked.retain(|p| p.seq != seq);
        if parked.len() == before {
            return Ok(false);
        }
        let bytes: Vec<u8> = parked.iter().flat_map(encode_parked).collect();
        crate::fsutil::write_file_durably(
            &*self.shared.storage,
            &parked_path(&self.shared.dir, &self.name),
            &bytes,
        )?;
        Ok(true)
    }

    /// The consumer's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The committed position.
    pub fn committed(&self) -> u64 {
        self.committed
    }

    /// The position the consumer had before it was moved back to the end
    /// of a log that lost events, if it was.
    pub fn reset_from(&self) -> Option<u64> {
        self.reset_from
    }

    /// Where the consumer's subscription stands: next seq to examine and the visible end.
    pub fn progress(&self) -> Progress {
        self.subscription.progress()
    }

    /// The next matching event after the last one delivered, waiting up to
    /// `timeout`; `Ok(None)` when none came.
    pub fn next_timeout(&mut self, timeout: Duration) -> Result<Option<LoggedEvent>> {
        let event = self.subscription.next_timeout(timeout)?;
        if let Some(event) = &event {
            self.last_delivered = event.seq;
        }
        Ok(event)
    }

    /// Marks every delivered event up to `seq` as handled (cumulative). It
    /// is stored by the next [`Consumer::commit`].
    pub fn ack(&mut self, seq: u64) -> Result<()> {
        if self.failures.is_some_and(|(failed, _)| failed <= seq) {
            self.failures = None;
        }
        if seq > self.last_delivered {
            return Err(Error::InvalidEvent(format!(
                "consumer {}: ack of seq {seq}, past the last delivered event {}",
                self.name, self.last_delivered
            )));
        }
        self.acked = self.acked.max(seq);
        Ok(())
    }

    /// The position a commit now stores: past the events that did not
    /// match too, when every delivered one is acknowledged.
    fn position_to_commit(&self) -> u64 {
        if self.acked >= self.last_delivered {
            self.subscription.progress().position.max(self.acked)
        } else {
            self.acked
        }
    }

    /// Stores the acknowledged position durably. Returns it.
    pub fn commit(&mut self) -> Result<u64> {
        let position = self.position_to_commit();
        if position == self.committed {
            return Ok(position);
        }
        let _span = tracing::debug_span!(
            "evlog.consumer_commit",
            consumer = %self.name,
            from_seq = self.committed,
            to_seq = position
        )
        .entered();
        store_position(&self.shared, &self.name, position)?;
        self.committed = position;
        Ok(position)
    }

    /// Appends `events` and commits the position through `ack_through` in
    /// one atomic batch: after any crash either the events and the new
    /// position are both in the log or neither is. The position travels
    /// as one more event of type [`CONSUMER_COMMIT_TYPE`] (entity
    /// `evlog.consumer`/name) at the end of the batch; the position file
    /// is updated after, as a shortcut for the next open.
    pub fn append_batch_and_commit(
        &mut self,
        log: &crate::Log,
        events: &[Event],
        ack_through: u64,
    ) -> Result<Range<u64>> {
        if !Arc::ptr_eq(&log.shared, &self.shared) {
            return Err(Error::InvalidEvent(format!(
                "consumer {} belongs to another log",
                self.name
            )));
        }
        self.ack(ack_through)?;
        let position = self.position_to_commit();
        let mut batch = events.to_vec();
        batch.push(commit_event(&self.name, position)?);
        let range = log.append_batch(&batch)?;
        self.committed = position;
        // The log holds the position now; the file only saves the lookup.
        if let Err(e) = store_position(&self.shared, &self.name, position) {
            tracing::warn!(error = %e, consumer = %self.name, "position file not updated; the log holds the position");
        }
        Ok(range.start..range.end - 1)
    }
}

/// Appends `event` to the parked list of consumer `name`, durably.
pub(crate) fn park(shared: &Shared, name: &str, event: &ParkedEvent) -> Result<()> {
    let record = encode_parked(event);
    let dir = consumers_dir(&shared.dir);
    shared.storage.create_dir_all(&dir).at(&dir)?;
    let path = parked_path(&shared.dir, name);
    let created = !shared.storage.exists(&path);
    let file = shared
        .storage
        .open(&path, crate::storage::OpenMode::CreateOrOpen)
        .at(&path)?;
    let end = file.size_bytes().at(&path)?;
    // A record torn by a crash is ignored by readers; write after the
    // last whole one so it does not hide the new one.
    let mut bytes = vec![0u8; end as usize];
    file.read_exact_at(&mut bytes, 0).at(&path)?;
    let (_, whole) = decode_parked(&bytes, &path)?;
    file.write_all_at(&record, whole as u64).at(&path)?;
    file.set_len(whole as u64 + record.len() as u64).at(&path)?;
    file.sync_all().at(&path)?;
    drop(file);
    if created {
        crate::fsutil::sync_dir(&*shared.storage, &dir)?;
    }
    Ok(())
}

/// The bookkeeping event that carries consumer `name`'s position inside
/// an atomic batch (a same-batch commit).
pub(crate) fn commit_event(name: &str, position: u64) -> Result<Event> {
    Ok(Event::new(CONSUMER_COMMIT_TYPE)
        .entity(CONSUMER_ENTITY_TYPE, name.to_string())
        .json_payload(&serde_json::json!({"consumer": name, "position": position}))?
        .bookkeeping())
}

pub(crate) fn read_parked(shared: &Shared, name: &str) -> Result<Vec<ParkedEvent>> {
    let path = parked_path(&shared.dir, name);
    if !shared.storage.exists(&path) {
        return Ok(Vec::new());
    }
    let file = shared
        .storage
        .open(&path, crate::storage::OpenMode::Read)
        .at(&path)?;
    let len = file.size_bytes().at(&path)?;
    let mut bytes = vec![0u8; len as usize];
    file.read_exact_at(&mut bytes, 0).at(&path)?;
    decode_parked(&bytes, &path).map(|(parked, _)| parked)
}

/// Every durable consumer of the log at `shared`, with its lag.
pub(crate) fn list(shared: &Arc<Shared>) -> Result<Vec<ConsumerInfo>> {
    let dir = consumers_dir(&shared.dir);
    if !shared.storage.exists(&dir) {
        return Ok(Vec::new());
    }
    let last = shared.marks.last_seq();
    let mut infos = Vec::new();
    let mut names = shared.storage.list_dir(&dir).at(&dir)?;
    names.sort();
    for file in names {
        let Some(name) = file.strip_suffix(POSITION_SUFFIX) else {
            continue;
        };
        if validate_consumer_name(name).is_err() {
            continue;
        }
        let from_file = read_position_file(shared, name)?.unwrap_or(0);
        let from_log = position_in_log(shared, name)?.unwrap_or(0);
        let position = from_file.max(from_log);
        infos.push(ConsumerInfo {
            name: name.to_string(),
            position,
            lag: last.saturating_sub(position),
        });
    }
    Ok(infos)
}

/// The lowest committed position among the durable consumers, if there
/// are any: retention rules that keep events until every consumer has read
/// them keep everything after it.
pub(crate) fn min_position(shared: &Arc<Shared>) -> Result<Option<u64>> {
    Ok(list(shared)?.iter().map(|c| c.position).min())
}

/// Writes to its file every consumer's position that so far lives only in
/// the log (a same-batch commit's bookkeeping event): retention is about to
/// delete events, and those bookkeeping events may be among them.
pub(crate) fn persist_positions(shared: &Arc<Shared>) -> Result<()> {
    for info in list(shared)? {
        if read_position_file(shared, &info.name)?.unwrap_or(0) < info.position {
            store_position(shared, &info.name, info.position)?;
        }
    }
    Ok(())
}

/// Removes a consumer's position file. Returns whether it existed. (Its
/// bookkeeping events stay in the log: a consumer of the same name created
/// later starts from the last of them.)
pub(crate) fn delete(shared: &Shared, name: &str) -> Result<bool> {
    validate_consumer_name(name)?;
    let path = position_path(&shared.dir, name);
    if !shared.storage.exists(&path) {
        return Ok(false);
    }
    shared.storage.remove_file(&path).at(&path)?;
    let parked = parked_path(&shared.dir, name);
    if shared.storage.exists(&parked) {
        shared.storage.remove_file(&parked).at(&parked)?;
    }
    crate::fsutil::sync_dir(&*shared.storage, &consumers_dir(&shared.dir))?;
    Ok(true)
}
