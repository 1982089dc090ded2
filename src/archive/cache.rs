//! A bounded cache of decompressed archive frames, shared by every reader
//! of a log: repeated reads near one another cost one decompression.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

/// Which frame: the archive's first covered seq, its footer CRC (so that a
/// compaction that rewrites the archive under the same name never serves
/// the old version's frames), and the frame's number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct FrameKey {
    pub range_first_seq: u64,
    pub footer_crc: u32,
    pub frame: u32,
}

struct Entry {
    bytes: Arc<Vec<u8>>,
    last_used: u64,
}

#[derive(Default)]
struct Lru {
    entries: HashMap<FrameKey, Entry>,
    /// `last_used` tick -> key, oldest first.
    order: BTreeMap<u64, FrameKey>,
    bytes: u64,
    tick: u64,
}

/// Least-recently-used cache of decompressed frames, bounded in bytes of
/// frame content. Thread-safe; a lookup holds the lock only to move an
/// `Arc`, never while decompressing.
pub(crate) struct FrameCache {
    bytes_max: u64,
    lru: Mutex<Lru>,
}

impl FrameCache {
    pub fn new(bytes_max: u64) -> FrameCache {
        FrameCache {
            bytes_max,
            lru: Mutex::new(Lru::default()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Lru> {
        // A panic while holding the lock leaves a consistent map (every
        // update is a few inserts and removes); go on with it.
        self.lru
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn get(&self, key: &FrameKey) -> Option<Arc<Vec<u8>>> {
        let mut guard = self.lock();
        let lru = &mut *guard;
        lru.tick += 1;
        let tick = lru.tick;
        let entry = lru.entries.get_mut(key)?;
        let previous = std::mem::replace(&mut entry.last_used, tick);
        let bytes = Arc::clone(&entry.bytes);
        lru.order.remove(&previous);
        lru.order.insert(tick, *key);
        Some(bytes)
    }

    /// Keeps `bytes` for `key`, evicting the least recently used frames to
    /// stay within the bound. A frame larger than the whole bound is not
    /// kept.
    pub fn insert(&self, key: FrameKey, bytes: Arc<Vec<u8>>) {
        let size = bytes.len() as u64;
        if size > self.bytes_max {
            return;
        }
        let mut guard = self.lock();
        let lru = &mut *guard;
        lru.tick += 1;
        let tick = lru.tick;
        if let Some(old) = lru.entries.insert(
            key,
            Entry {
                bytes,
                last_used: tick,
            },
        ) {
            lru.order.remove(&old.last_used);
            lru.bytes -= old.bytes.len() as u64;
        }
        lru.order.insert(tick, key);
        lru.bytes += size;
        while lru.bytes > self.bytes_max {
            let Some((_, oldest)) = lru.order.pop_first() else {
                break;
            };
            if let Some(evicted) = lru.entries.remove(&oldest) {
                lru.bytes -= evicted.bytes.len() as u64;
            }
        }
    }

    /// Drops every frame of the archive starting at `range_first_seq`
    /// (after it is rewritten or deleted: frees the memory at once).
    pub fn forget_archive(&self, range_first_seq: u64) {
        let mut lru = self.lock();
        let doomed: Vec<(FrameKey, u64)> = lru
            .entries
            .iter()
            .filter(|(key, _)| key.range_first_seq == range_first_seq)
            .map(|(key, entry)| (*key, entry.last_used))
            .collect();
        for (key, last_used) in doomed {
            lru.order.remove(&last_used);
            if let Some(entry) = lru.entries.remove(&key) {
                lru.bytes -= entry.bytes.len() as u64;
            }
        }
    }

    /// Drops everything (a cold cache for the benchmarks).
    pub fn clear(&self) {
        let mut lru = self.lock();
        lru.entries.clear();
        lru.order.clear();
        lru.bytes = 0;
    }

    /// Bytes of frames held.
    #[cfg(test)]
    pub fn bytes(&self) -> u64 {
        self.lock().bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(range_first_seq: u64, frame: u32) -> FrameKey {
        FrameKey {
            range_first_seq,
            footer_crc: 7,
            frame,
        }
    }

    #[test]
    fn cache_evicts_least_recently_used_within_its_byte_bound() {
        let cache = FrameCache::new(300);
        for frame in 0..3 {
            cache.insert(key(1, frame), Arc::new(vec![frame as u8; 100]));
        }
        assert_eq!(cache.bytes(), 300);
        // Frame 0 is used, so frame 1 is now the oldest.
        assert_eq!(cache.get(&key(1, 0)).unwrap()[0], 0);
        cache.insert(key(1, 3), Arc::new(vec![3; 100]));
        assert_eq!(cache.bytes(), 300);
        assert!(cache.get(&key(1, 1)).is_none());
        assert!(cache.get(&key(1, 0)).is_some());
        assert!(cache.get(&key(1, 2)).is_some());
        // A different footer CRC is a different archive version.
        assert!(cache
            .get(&FrameKey {
                footer_crc: 8,
                ..key(1, 0)
            })
            .is_none());
        // Too large for the whole cache: not kept, nothing evicted.
        cache.insert(key(2, 0), Arc::new(vec![0; 301]));
        assert_eq!(cache.bytes(), 300);
        cache.insert(key(2, 1), Arc::new(vec![0; 50]));
        cache.forget_archive(1);
        assert_eq!(cache.bytes(), 50);
        cache.clear();
        assert_eq!(cache.bytes(), 0);
        assert!(cache.get(&key(2, 1)).is_none());
    }
}
