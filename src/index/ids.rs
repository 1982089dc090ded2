//! The event-id index: id -> seq, as a few sorted runs (a logarithmic
//! merge, the small cousin of an LSM tree). Each indexer batch adds one
//! run of its events sorted by id; whenever the run before the newest is
//! at most twice as large, the two are merged. So there are O(log n) runs,
//! each event is rewritten O(log n) times in all, and the store holds one
//! entry per run instead of one per event (one sled entry per event costs
//! about 5 us and 100+ bytes on disk; a run costs 24 bytes an event).
//!
//! Run value: `hi_seq` u64 LE, `count` u64 LE, then `count` entries of
//! 16-byte id and seq u64 LE, sorted by id. Key: `I` + `lo_seq` u64 BE.
//! Runs cover disjoint, adjacent seq ranges `lo..=hi`.

use std::sync::Arc;

use crate::error::CorruptKind;

pub(crate) const ID_ENTRY_BYTES: usize = 24;
const RUN_HEADER_BYTES: usize = 16;

/// One run as the in-memory directory knows it.
#[derive(Clone)]
pub(crate) struct IdRun {
    pub lo: u64,
    pub hi: u64,
    pub count: u64,
    pub min_id: [u8; 16],
    pub max_id: [u8; 16],
    /// The run's entries (the value without its header).
    pub entries: Arc<Vec<u8>>,
    /// The id of every `FENCE_STRIDE`th entry: a search first finds the
    /// stride in this small array (it stays in the CPU cache), then looks
    /// only inside one stride of `entries`, instead of taking a cache miss
    /// at each of ~17 halvings of a multi-megabyte array.
    fences: Arc<Vec<[u8; 16]>>,
}

/// Entries per fence (24 bytes each: 1.5 KiB, a few cache lines).
const FENCE_STRIDE: usize = 64;

impl IdRun {
    /// Builds a run from unsorted `(id, seq)` pairs.
    pub fn from_pairs(lo: u64, hi: u64, mut pairs: Vec<([u8; 16], u64)>) -> IdRun {
        pairs.sort_unstable();
        let mut entries = Vec::with_capacity(pairs.len() * ID_ENTRY_BYTES);
        for (id, seq) in &pairs {
            entries.extend_from_slice(id);
            entries.extend_from_slice(&seq.to_le_bytes());
        }
        IdRun::from_entries(lo, hi, entries)
    }

    fn from_entries(lo: u64, hi: u64, entries: Vec<u8>) -> IdRun {
        let count = (entries.len() / ID_ENTRY_BYTES) as u64;
        let id_at = |i: usize| -> [u8; 16] {
            let mut id = [0u8; 16];
            id.copy_from_slice(&entries[i * ID_ENTRY_BYTES..i * ID_ENTRY_BYTES + 16]);
            id
        };
        let (min_id, max_id) = if count == 0 {
            ([0xff; 16], [0; 16])
        } else {
            (id_at(0), id_at(count as usize - 1))
        };
        let fences = (0..count as usize)
            .step_by(FENCE_STRIDE)
            .map(id_at)
            .collect();
        IdRun {
            lo,
            hi,
            count,
            min_id,
            max_id,
            entries: Arc::new(entries),
            fences: Arc::new(fences),
        }
    }

    pub fn decode(lo: u64, value: &[u8]) -> Result<IdRun, CorruptKind> {
        let header = value
            .get(..RUN_HEADER_BYTES)
            .ok_or(CorruptKind::Index("id run shorter than its header"))?;
        let hi = u64::from_le_bytes(header[..8].try_into().unwrap_or_default());
        let count = u64::from_le_bytes(header[8..16].try_into().unwrap_or_default());
        let entries = &value[RUN_HEADER_BYTES..];
        if !entries.len().is_multiple_of(ID_ENTRY_BYTES)
            || (entries.len() / ID_ENTRY_BYTES) as u64 != count
        {
            return Err(CorruptKind::Index("id run count does not match its length"));
        }
        if hi < lo {
            return Err(CorruptKind::Index("id run ends before it starts"));
        }
        let run = IdRun::from_entries(lo, hi, entries.to_vec());
        // Sorted by id, every seq inside the run's range: a lookup trusts
        // both.
        for i in 0..run.count as usize {
            let seq = run.seq_at(i);
            if seq < lo || seq > hi {
                return Err(CorruptKind::Index("id run entry outside the run's range"));
            }
            // Equal ids are allowed (an id appended again after it left the
            // duplicate window); they sort by seq.
            if i > 0 && (run.id_at(i - 1), run.seq_at(i - 1)) >= (run.id_at(i), run.seq_at(i)) {
                return Err(CorruptKind::Index("id run not sorted"));
            }
        }
        Ok(run)
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut value = Vec::with_capacity(RUN_HEADER_BYTES + self.entries.len());
        value.extend_from_slice(&self.hi.to_le_bytes());
        value.extend_from_slice(&self.count.to_le_bytes());
        value.extend_from_slice(&self.entries);
        value
    }

    fn id_at(&self, i: usize) -> &[u8] {
        &self.entries[i * ID_ENTRY_BYTES..i * ID_ENTRY_BYTES + 16]
    }

    fn seq_at(&self, i: usize) -> u64 {
        let at = i * ID_ENTRY_BYTES + 16;
        u64::from_le_bytes(self.entries[at..at + 8].try_into().unwrap_or_default())
    }

    /// The seq of the first event of this run with `id`.
    pub fn lookup(&self, id: &[u8; 16]) -> Option<u64> {
        if id < &self.min_id || id > &self.max_id {
            return None;
        }
        // The first fence not below `id`; the first entry with `id` lies in
        // the stride before it (or at the fence itself).
        let fence = self.fences.partition_point(|f| f < id);
        let mut low = fence.saturating_sub(1) * FENCE_STRIDE;
        let mut high = (fence * FENCE_STRIDE + 1).min(self.count as usize);
        while low < high {
            let mid = (low + high) / 2;
            match self.id_at(mid).cmp(&id[..]) {
                std::cmp::Ordering::Less => low = mid + 1,
                std::cmp::Ordering::Greater | std::cmp::Ordering::Equal => high = mid,
            }
        }
        // `low` is the first entry not below `id`: its first event, if any.
        (low < self.count as usize && self.id_at(low) == &id[..]).then(|| self.seq_at(low))
    }

    /// Every `(id, seq)` of the run, in id order.
    pub fn pairs(&self) -> impl Iterator<Item = ([u8; 16], u64)> + '_ {
        (0..self.count as usize).map(|i| {
            let mut id = [0u8; 16];
            id.copy_from_slice(self.id_at(i));
            (id, self.seq_at(i))
        })
    }

    /// Merges `self` with the run that follows it in seq order.
    pub fn merge(&self, newer: &IdRun) -> IdRun {
        let mut entries = Vec::with_capacity(self.entries.len() + newer.entries.len());
        let (mut i, mut j) = (0usize, 0usize);
        let (a, b) = (self.count as usize, newer.count as usize);
        while i < a || j < b {
            let take_left = j >= b || (i < a && self.id_at(i) <= newer.id_at(j));
            let (run, at) = if take_left {
                i += 1;
                (self, i - 1)
            } else {
                j += 1;
                (newer, j - 1)
            };
            entries.extend_from_slice(&run.entries[at * ID_ENTRY_BYTES..(at + 1) * ID_ENTRY_BYTES]);
        }
        IdRun::from_entries(self.lo, newer.hi, entries)
    }
}

/// Adds `run` (not yet stored) to `runs` and merges while the second
/// newest run is at most twice the newest. Returns the `lo` keys of stored
/// runs that were merged away; the newest run of `runs` is the one to
/// (re)write.
pub(crate) fn push_and_merge(runs: &mut Vec<IdRun>, run: IdRun) -> Vec<u64> {
    let new_lo = run.lo;
    let mut gone = Vec::new();
    runs.push(run);
    while let [.., older, newer] = runs.as_slice() {
        if older.count > 2 * newer.count {
            break;
        }
        let merged = older.merge(newer);
        // A stored run merged into the one before it leaves its key behind;
        // the new run was never stored.
        if newer.lo != new_lo {
            gone.push(newer.lo);
        }
        runs.truncate(runs.len() - 2);
        runs.push(merged);
    }
    gone
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u64) -> [u8; 16] {
        let mut id = [0u8; 16];
        id[..8].copy_from_slice(&n.wrapping_mul(0x9E37_79B9_7F4A_7C15).to_be_bytes());
        id
    }

    #[test]
    fn runs_stay_logarithmic_and_find_every_id() {
        let mut runs = Vec::new();
        let mut seq = 1;
        for batch in 0..300u64 {
            let n = 1 + batch % 7;
            let pairs = (seq..seq + n).map(|s| (id(s), s)).collect();
            let gone = push_and_merge(&mut runs, IdRun::from_pairs(seq, seq + n - 1, pairs));
            let newest = runs.last().unwrap().lo;
            assert!(gone.iter().all(|&lo| lo > newest));
            seq += n;
        }
        assert!(runs.len() <= 12, "{} runs", runs.len());
        for pair in runs.windows(2) {
            assert_eq!(pair[0].hi + 1, pair[1].lo);
        }
        for s in 1..seq {
            let found = runs.iter().rev().find_map(|r| r.lookup(&id(s)));
            assert_eq!(found, Some(s));
        }
        assert_eq!(runs.iter().rev().find_map(|r| r.lookup(&id(seq + 5))), None);
        let round = IdRun::decode(runs[0].lo, &runs[0].encode()).unwrap();
        assert_eq!(round.count, runs[0].count);
    }
}
