//! The one seam between the secondary indexes and the engine that stores
//! them. Everything above this file speaks ordered byte keys, atomic
//! batches and a flush; only this file knows sled, so another engine (an
//! LSM, SQLite, a hand-written B-tree) replaces sled by implementing
//! [`IndexStore`] once.
//!
//! sled 0.34 is no longer developed; that is acceptable because every byte
//! behind this trait is derived from the log and rebuilt when lost.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// One atomic write: every put and delete becomes visible together, or
/// (after a crash) none of them does.
#[derive(Default)]
pub(crate) struct StoreBatch {
    pub puts: Vec<(Vec<u8>, Vec<u8>)>,
    pub deletes: Vec<Vec<u8>>,
}

impl StoreBatch {
    pub fn put(&mut self, key: Vec<u8>, value: Vec<u8>) {
        self.puts.push((key, value));
    }
    pub fn delete(&mut self, key: Vec<u8>) {
        self.deletes.push(key);
    }
}

/// Called on each entry of a range read; `Ok(false)` stops the read.
pub(crate) type Visitor<'a> = dyn FnMut(&[u8], &[u8]) -> Result<bool> + 'a;

/// What a key-value engine must offer the indexes: point reads, ordered
/// range reads, atomic batches that survive a crash as a prefix of the
/// batches applied, and a flush. Keys sort as bytes.
pub(crate) trait IndexStore: Send + Sync {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>>;
    /// The first entry with `from <= key < below`.
    fn first_in(&self, from: &[u8], below: &[u8]) -> Result<Option<(Vec<u8>, Vec<u8>)>>;
    /// The last entry with `from <= key < below`.
    fn last_in(&self, from: &[u8], below: &[u8]) -> Result<Option<(Vec<u8>, Vec<u8>)>>;
    /// Calls `visit` on every entry with `from <= key < below` in key
    /// order until it returns `false`.
    fn visit(&self, from: &[u8], below: &[u8], visit: &mut Visitor<'_>) -> Result<()>;
    fn apply(&self, batch: StoreBatch) -> Result<()>;
    /// Removes every entry.
    fn clear(&self) -> Result<()>;
    /// Makes every applied batch durable.
    fn flush(&self) -> Result<()>;
}

/// Why an index directory could not be opened.
#[derive(Debug)]
pub(crate) enum OpenFailure {
    /// Another process holds the engine's lock: wait, do not rebuild.
    Locked(String),
    /// Damaged or unreadable: the caller moves it aside and rebuilds.
    Unusable(String),
}

/// sled 0.34, one tree (the default one), so that one `apply_batch` is
/// atomic across every index.
pub(crate) struct SledStore {
    db: sled::Db,
    path: PathBuf,
}

/// sled's page cache; the indexes' own caches sit above it.
const SLED_CACHE_BYTES: u64 = 64 * 1024 * 1024;

impl SledStore {
    pub fn open(path: &Path) -> std::result::Result<SledStore, OpenFailure> {
        let opened = std::panic::catch_unwind(|| {
            sled::Config::new()
                .path(path)
                .cache_capacity(SLED_CACHE_BYTES)
                // The indexer flushes after each batch it applies when asked
                // to; sled's own timer only bounds how far a crash rewinds.
                .flush_every_ms(Some(1000))
                .open()
        });
        match opened {
            Ok(Ok(db)) => Ok(SledStore {
                db,
                path: path.to_path_buf(),
            }),
            Ok(Err(sled::Error::Io(e)))
                if e.kind() == std::io::ErrorKind::WouldBlock || e.to_string().contains("lock") =>
            {
                Err(OpenFailure::Locked(e.to_string()))
            }
            Ok(Err(e)) => Err(OpenFailure::Unusable(e.to_string())),
            // sled 0.34 panics on some damaged files instead of returning
            // an error; the index is derived data, so that is a rebuild.
            Err(_) => Err(OpenFailure::Unusable(
                "the index engine panicked while opening it".into(),
            )),
        }
    }

    fn error(&self, e: sled::Error) -> Error {
        Error::Index {
            path: self.path.clone(),
            message: e.to_string(),
        }
    }
}

impl IndexStore for SledStore {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(self
            .db
            .get(key)
            .map_err(|e| self.error(e))?
            .map(|v| v.to_vec()))
    }

    fn first_in(&self, from: &[u8], below: &[u8]) -> Result<Option<(Vec<u8>, Vec<u8>)>> {
        match self.db.range(from..below).next() {
            Some(Ok((k, v))) => Ok(Some((k.to_vec(), v.to_vec()))),
            Some(Err(e)) => Err(self.error(e)),
            None => Ok(None),
        }
    }

    fn last_in(&self, from: &[u8], below: &[u8]) -> Result<Option<(Vec<u8>, Vec<u8>)>> {
        match self.db.range(from..below).next_back() {
            Some(Ok((k, v))) => Ok(Some((k.to_vec(), v.to_vec()))),
            Some(Err(e)) => Err(self.error(e)),
            None => Ok(None),
        }
    }

    fn visit(&self, from: &[u8], below: &[u8], visit: &mut Visitor<'_>) -> Result<()> {
        for entry in self.db.range(from..below) {
            let (k, v) = entry.map_err(|e| self.error(e))?;
            if !visit(&k, &v)? {
                break;
            }
        }
        Ok(())
    }

    fn apply(&self, batch: StoreBatch) -> Result<()> {
        let mut sled_batch = sled::Batch::default();
        for key in batch.deletes {
            sled_batch.remove(key);
        }
        for (key, value) in batch.puts {
            sled_batch.insert(key, value);
        }
        self.db.apply_batch(sled_batch).map_err(|e| self.error(e))
    }

    fn clear(&self) -> Result<()> {
        self.db.clear().map_err(|e| self.error(e))
    }

    fn flush(&self) -> Result<()> {
        self.db.flush().map(|_| ()).map_err(|e| self.error(e))
    }
}
