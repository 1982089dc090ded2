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

/// A durable consumer as [`crate::Log::consumers`] lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerInfo {
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

/// The position stored in the file, if there is one.
fn read_position_file(shared: &Shared, name: &str) -> Result<Option<u64>> {
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
fn position_in_log(shared: &Arc<Shared>, name: &str) -> Result<Option<u64>> {
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
}

impl Consumer {
    pub(crate) fn open(shared: Arc<Shared>, name: &str, filter: Filter) -> Result<Consumer> {
        validate_consumer_name(name)?;
        let from_file = read_position_file(&shared, name)?.unwrap_or(0);
        let from_log = position_in_log(&shared, name)?.unwrap_or(0);
        let mut committed = from_file.max(from_log);
        let last = shared.marks.last_seq();
        let mut reset_from = None;
        if committed > last {
            tracing::warn!(
                consumer = name,
                position = committed,
                log_end = last,
                "the consumer's position is past the end of the log (events were lost, \
                 for example in a power cut); it restarts from the end"
            );
            reset_from = Some(committed);
            committed = last;
        }
        let first = shared
            .first_seq
            .load(std::sync::atomic::Ordering::Acquire)
            .max(1);
        if committed + 1 < first {
            return Err(Error::ConsumerBehindLog {
                name: name.to_string(),
                position: committed,
                first_seq: first,
            });
        }
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
        })
    }

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
        let dir = consumers_dir(&self.shared.dir);
        self.shared.storage.create_dir_all(&dir).at(&dir)?;
        crate::fsutil::write_file_durably(
            &*self.shared.storage,
            &position_path(&self.shared.dir, &self.name),
            &encode_position(position),
        )?;
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
        batch.push(
            Event::new(CONSUMER_COMMIT_TYPE)
                .entity(CONSUMER_ENTITY_TYPE, self.name.clone())
                .json_payload(&serde_json::json!({"consumer": self.name, "position": position}))?
                .bookkeeping(),
        );
        let range = log.append_batch(&batch)?;
        self.committed = position;
        // The log holds the position now; the file only saves the lookup.
        let dir = consumers_dir(&self.shared.dir);
        if self.shared.storage.create_dir_all(&dir).is_ok() {
            if let Err(e) = crate::fsutil::write_file_durably(
                &*self.shared.storage,
                &position_path(&self.shared.dir, &self.name),
                &encode_position(position),
            ) {
                tracing::warn!(error = %e, consumer = %self.name, "position file not updated; the log holds the position");
            }
        }
        Ok(range.start..range.end - 1)
    }
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
    crate::fsutil::sync_dir(&*shared.storage, &consumers_dir(&shared.dir))?;
    Ok(true)
}
