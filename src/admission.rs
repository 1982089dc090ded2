//! What the writer admits into the log: retried appends recognized by
//! their ids (the duplicate window) and conditional appends checked
//! against their entity's version.
//!
//! Both checks run in the writer thread, the only code that assigns
//! sequence numbers, on each commit group before it is written: nothing can
//! be appended between a check and the write it allows, whatever the number
//! of appending threads. The decisions for the requests of one group build
//! on each other (a request sees the ids and entity versions of the
//! requests admitted before it in the same group), so they are provisional
//! until the group is written; when the write fails, `forget` drops
//! everything this module knows and it reads it back from the log when it
//! next needs it.

use std::collections::HashMap;

use uuid::Uuid;

use crate::error::{CorruptKind, Error, Result};
use crate::event::Entity;
use crate::log::Shared;
use crate::options::DEDUP_WINDOW_IDS_DEFAULT;
use crate::record::body_entity;
use crate::writer::{Group, PreparedBatch};

/// Most entities whose versions the writer keeps; past this the cache is
/// emptied (at the start of a commit group) and refilled on demand, so
/// memory stays bounded whatever the number of entities.
pub(crate) const VERSION_CACHE_ENTITIES_MAX: usize = 100_000;

/// What the writer does with one request of a commit group.
pub(crate) enum Verdict {
    /// Write it.
    Write,
    /// Every event of it is already in the log, from this sequence number
    /// on, in the same order: answer with that instead of writing.
    Existing(u64),
    /// Answer with this error; nothing of it is written.
    Refuse(Error),
}

/// The ids of the last `capacity` events appended, with their sequence
/// numbers.
///
/// Every append with caller-set ids costs the window two lookups per event
/// (the duplicate check, then the insert, which finds the same slot still
/// in cache), in the writer thread, on the path of every durable batch.
/// Evicting the oldest id as each new one came in cost a third lookup, at a
/// random place of a table of several MB (a cache miss per event), and
/// SipHash on 16-byte keys made each lookup dearer still: together the
/// largest part of the writer's CPU per batch in a profile of W1's batched
/// appends. So ids out of the window are not
/// evicted one by one: an entry counts only while its sequence number is
/// among the last `capacity`, and once the table holds twice `capacity`
/// entries one sequential sweep drops the stale ones. Keys are the id as a
/// `u128`, hashed with foldhash (seeded per process).
struct IdWindow {
    capacity: usize,
    /// Each id's latest sequence number; entries older than the window are
    /// stale until the next sweep and count as absent.
    seqs: HashMap<u128, u64, foldhash::fast::RandomState>,
    /// The sequence number after the last id inserted: the window is
    /// `end_seq - capacity .. end_seq`.
    end_seq: u64,
    /// Whether the window mirrors the log. Until the first append that
    /// carries a caller-set id it is empty and records nothing, so that
    /// opening a log costs nothing and appends that never set ids pay
    /// nothing.
    loaded: bool,
}

impl IdWindow {
    /// Records `id` at `seq`, the sequence number after every id recorded
    /// so far.
    fn insert(&mut self, id: Uuid, seq: u64) {
        if self.seqs.len() >= self.capacity.saturating_mul(2) {
            self.sweep();
        }
        self.seqs.insert(id.as_u128(), seq);
        self.end_seq = seq + 1;
    }

    /// The sequence number of `id` if it is in the window.
    fn get(&self, id: Uuid) -> Option<u64> {
        let seq = *self.seqs.get(&id.as_u128())?;
        (seq.saturating_add(self.capacity as u64) >= self.end_seq).then_some(seq)
    }

    /// Drops the entries that left the window, in one pass over the table.
    fn sweep(&mut self) {
        let window_start = self.end_seq.saturating_sub(self.capacity as u64);
        self.seqs.retain(|_, seq| *seq >= window_start);
    }

    fn unload(&mut self) {
        self.seqs.clear();
        self.end_seq = 0;
        self.loaded = false;
    }

    /// Reads the ids of the last `capacity` events up to `last_seq` back
    /// from the log (the id is a body's first 16 bytes, see FORMAT.md).
    fn load(&mut self, shared: &Shared, last_seq: u64) -> Result<()> {
        self.unload();
        let from_seq = (last_seq + 1).saturating_sub(self.capacity as u64).max(1);
        self.end_seq = from_seq;
        // Room for the most the table holds (twice the window), taken once,
        // so that appends do not pay for growing it; a window larger than
        // the default grows as it fills instead of taking it all at once.
        let entries_max = self
            .capacity
            .min(DEDUP_WINDOW_IDS_DEFAULT)
            .saturating_mul(2);
        self.seqs
            .reserve(entries_max.saturating_sub(self.seqs.len()));
        let result = shared.scan_bodies(from_seq, last_seq, &mut |seq, body| {
            let id = body
                .get(..16)
                .and_then(|bytes| Uuid::from_slice(bytes).ok())
                .ok_or_else(|| CorruptKind::Decode("body shorter than an id".into()))?;
            self.insert(id, seq);
            Ok(())
        });
        match result {
            Ok(()) => {
                // The window ends after the log's last event, whether or
                // not retention left events to read before it.
                self.end_seq = last_seq + 1;
                self.loaded = true;
                Ok(())
            }
            Err(e) => {
                self.unload();
                Err(e)
            }
        }
    }

    /// Whether `batch` was appended before: `None` if none of its
    /// caller-set ids is in the window.
    fn judge(&self, batch: &PreparedBatch) -> Option<Verdict> {
        let mut first_found: Option<(Uuid, u64)> = None;
        let mut same_batch_again = true;
        for (k, (&id, &set_by_caller)) in batch.ids.iter().zip(&batch.id_set_by_caller).enumerate()
        {
            // Ids evlog generated cannot be in the log already.
            let found = if set_by_caller { self.get(id) } else { None };
            match (found, first_found) {
                (None, _) => same_batch_again = false,
                (Some(seq), None) => {
                    first_found = Some((id, seq));
                    same_batch_again &= k == 0;
                }
                (Some(seq), Some((_, first_seq))) => {
                    same_batch_again &= first_seq.checked_add(k as u64) == Some(seq);
                }
            }
        }
        let (id, seq) = first_found?;
        Some(if same_batch_again {
            Verdict::Existing(seq)
        } else {
            Verdict::Refuse(Error::DuplicateInBatch {
                id,
                existing_seq: seq,
            })
        })
    }
}

/// The versions (event counts) of the entities that conditional appends
/// asked about, kept current as the writer appends. Keyed type first, so a
/// lookup by the `&str`s of an encoded body allocates nothing.
#[derive(Default)]
struct VersionCache {
    by_type: HashMap<String, HashMap<String, u64>>,
    entities: usize,
}

impl VersionCache {
    fn get(&self, (entity_type, entity_id): (&str, &str)) -> Option<u64> {
        self.by_type.get(entity_type)?.get(entity_id).copied()
    }

    fn insert(&mut self, (entity_type, entity_id): (&str, &str), version: u64) {
        let ids = self.by_type.entry(entity_type.to_owned()).or_default();
        if ids.insert(entity_id.to_owned(), version).is_none() {
            self.entities += 1;
        }
    }

    /// Counts one more event of the entity, if it is cached.
    fn count_event(&mut self, (entity_type, entity_id): (&str, &str)) {
        if let Some(version) = self
            .by_type
            .get_mut(entity_type)
            .and_then(|ids| ids.get_mut(entity_id))
        {
            *version += 1;
        }
    }

    fn is_empty(&self) -> bool {
        self.entities == 0
    }

    fn clear(&mut self) {
        self.by_type.clear();
        self.entities = 0;
    }
}

/// The writer's memory for duplicate detection and conditional appends.
pub(crate) struct Admission {
    window: IdWindow,
    versions: VersionCache,
}

type EntityRef<'a> = (&'a str, &'a str);

impl Admission {
    /// `window_ids` 0 turns duplicate detection off.
    pub fn new(window_ids: usize) -> Admission {
        Admission {
            window: IdWindow {
                capacity: window_ids,
                seqs: HashMap::with_hasher(foldhash::fast::RandomState::default()),
                end_seq: 0,
                loaded: false,
            },
            versions: VersionCache::default(),
        }
    }

    /// Decides, in order, what to do with each request of a commit group
    /// whose first written event will get `next_seq`, and records the ids
    /// and versions of the requests to write as if they were written.
    /// `None` means "write them all" and is the common path's answer
    /// (no caller-set id since the log was opened, no expected version, no
    /// entity version asked for), which looks at nothing but the flags.
    pub fn screen(
        &mut self,
        shared: &Shared,
        group: &Group,
        next_seq: u64,
    ) -> Option<Vec<Verdict>> {
        let dedup = self.window.capacity > 0;
        let ids_to_check = dedup && group.iter().any(|(b, _, _)| b.has_caller_set_ids());
        let conditional = group
            .iter()
            .any(|(b, _, _)| !b.expected_versions.is_empty());
        if !ids_to_check && !self.window.loaded && !conditional && self.versions.is_empty() {
            return None;
        }
        if self.versions.entities > VERSION_CACHE_ENTITIES_MAX {
            self.versions.clear();
        }
        // Loaded before any request of the group is recorded, so that it
        // reads exactly the events written before the group.
        let mut load_error = None;
        if ids_to_check && !self.window.loaded {
            if let Err(e) = self.window.load(shared, next_seq - 1) {
                load_error = Some(e);
            }
        }
        let mut verdicts: Vec<Verdict> = Vec::with_capacity(group.len());
        let mut seq = next_seq;
        for (batch, _, _) in group {
            let verdict = self.judge(shared, batch, group, &verdicts, next_seq, &load_error);
            let verdict = match verdict {
                Ok((Verdict::Write, entities)) => {
                    self.record(batch, seq, entities.as_deref());
                    seq += batch.len();
                    Verdict::Write
                }
                Ok((other, _)) => other,
                Err(e) => Verdict::Refuse(e),
            };
            verdicts.push(verdict);
        }
        Some(verdicts)
    }

    /// Drops everything provisional after a commit group failed to be
    /// written: the window and versions are read back from the log when
    /// next needed.
    pub fn forget(&mut self) {
        self.window.unload();
        self.versions.clear();
    }

    /// The verdict on one request, and its events' entities when the
    /// versions need them.
    fn judge<'b>(
        &mut self,
        shared: &Shared,
        batch: &'b PreparedBatch,
        group: &Group,
        verdicts: &[Verdict],
        next_seq: u64,
        load_error: &Option<Error>,
    ) -> Result<(Verdict, Option<Vec<Option<EntityRef<'b>>>>)> {
        // Duplicates first: retrying a conditional append that succeeded
        // must give its sequence number, not a conflict with itself.
        if self.window.capacity > 0 && batch.has_caller_set_ids() {
            if let Some(e) = load_error {
                return Err(e.duplicate());
            }
            if let Some(verdict) = self.window.judge(batch) {
                return Ok((verdict, None));
            }
        }
        if batch.expected_versions.is_empty() && self.versions.is_empty() {
            return Ok((Verdict::Write, None));
        }
        let entities = batch_entities(batch)?;
        if batch.expected_versions.is_empty() {
            return Ok((Verdict::Write, Some(entities)));
        }
        for &(index, _) in &batch.expected_versions {
            let entity = conditional_entity(&entities, index)?;
            if self.versions.get(entity).is_none() {
                let version = self.fetch_version(shared, entity, group, verdicts, next_seq)?;
                self.versions.insert(entity, version);
            }
        }
        // Events of the same request before a conditional one count.
        let mut earlier_in_request: HashMap<EntityRef<'b>, u64> = HashMap::new();
        let mut conditions = batch.expected_versions.iter().peekable();
        for (index, entity) in entities.iter().enumerate() {
            if let Some(&(_, expected)) = conditions.next_if(|(at, _)| *at == index) {
                let entity = conditional_entity(&entities, index)?;
                let cached = self.versions.get(entity).ok_or(Error::Internal(
                    "a conditional append's entity is not cached",
                ))?;
                let actual = cached + earlier_in_request.get(&entity).copied().unwrap_or(0);
                if actual != expected {
                    let conflict = Error::VersionConflict {
                        entity_type: entity.0.to_owned(),
                        entity_id: entity.1.to_owned(),
                        expected,
                        actual,
                    };
                    return Ok((Verdict::Refuse(conflict), None));
                }
            }
            if let Some(entity) = entity {
                *earlier_in_request.entry(*entity).or_default() += 1;
            }
        }
        Ok((Verdict::Write, Some(entities)))
    }

    /// The version of `entity` before the group's next request: its events
    /// in the log plus those of the requests admitted earlier in the group.
    fn fetch_version(
        &self,
        shared: &Shared,
        entity: EntityRef<'_>,
        group: &Group,
        verdicts: &[Verdict],
        next_seq: u64,
    ) -> Result<u64> {
        let owned = Entity {
            entity_type: entity.0.to_owned(),
            entity_id: entity.1.to_owned(),
        };
        let mut version = shared.entity_version(&owned, next_seq - 1)?;
        for ((batch, _, _), verdict) in group.iter().zip(verdicts) {
            if let Verdict::Write = verdict {
                for other in batch_entities(batch)?.into_iter().flatten() {
                    if other == entity {
                        version += 1;
                    }
                }
            }
        }
        Ok(version)
    }

    /// Takes a request's events into the window and the version cache, as
    /// if already written from `first_seq` on.
    fn record(
        &mut self,
        batch: &PreparedBatch,
        first_seq: u64,
        entities: Option<&[Option<EntityRef<'_>>]>,
    ) {
        if self.window.loaded {
            for (seq, &id) in (first_seq..).zip(&batch.ids) {
                self.window.insert(id, seq);
            }
        }
        if let Some(entities) = entities {
            for entity in entities.iter().flatten() {
                self.versions.count_event(*entity);
            }
        }
    }
}

/// The entity of each event of `batch`, read from its encoded body.
fn batch_entities(batch: &PreparedBatch) -> Result<Vec<Option<EntityRef<'_>>>> {
    (0..batch.record_ends.len())
        .map(|i| {
            body_entity(batch.body(i))
                .map_err(|_| Error::Internal("the writer cannot read back an encoded body"))
        })
        .collect()
}

fn conditional_entity<'b>(
    entities: &[Option<EntityRef<'b>>],
    index: usize,
) -> Result<EntityRef<'b>> {
    entities
        .get(index)
        .copied()
        .flatten()
        .ok_or(Error::Internal("a conditional event has no entity"))
}

impl Verdict {
    /// The answer to a request that was decided without being written.
    pub fn answer(self) -> Result<u64> {
        match self {
            Verdict::Existing(seq) => Ok(seq),
            Verdict::Refuse(e) => Err(e),
            Verdict::Write => Err(Error::Internal("a written request answered as decided")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn window(capacity: usize) -> IdWindow {
        IdWindow {
            capacity,
            seqs: HashMap::default(),
            end_seq: 1,
            loaded: true,
        }
    }

    // The window forgets the oldest ids first, and an id that came back
    // (appended again after leaving) is found at its later seq, also after
    // a sweep dropped the stale entries.
    #[test]
    fn window_forgets_oldest_first_and_keeps_the_later_seq() {
        let mut w = window(3);
        let id = |n: u128| Uuid::from_u128(n);
        for (n, seq) in [(1, 1), (2, 2), (3, 3)] {
            w.insert(id(n), seq);
        }
        assert_eq!(w.get(id(1)), Some(1));
        w.insert(id(4), 4);
        assert_eq!(w.get(id(1)), None);
        assert_eq!(w.get(id(2)), Some(2));
        w.insert(id(2), 5);
        w.insert(id(6), 6);
        // Seq 2 left the window, but id 2 is in it at 5.
        assert_eq!(w.get(id(2)), Some(5));
        assert_eq!(w.get(id(3)), None);
        assert_eq!(w.get(id(4)), Some(4));
        // The table never holds more than twice the window.
        for seq in 7..100 {
            w.insert(id(u128::from(seq) + 1000), seq);
            assert!(w.seqs.len() <= 6, "{} entries at seq {seq}", w.seqs.len());
        }
        assert_eq!(w.get(id(1099)), Some(99));
        assert_eq!(w.get(id(1097)), Some(97));
        assert_eq!(w.get(id(1096)), None);
        assert_eq!(w.get(id(2)), None);
    }

    // Against a model that keeps the last `capacity` (id, seq) pairs: the
    // window finds an id exactly when the model holds it, at the model's
    // latest seq for it, whatever the mix of new and repeated ids.
    proptest::proptest! {
        #[test]
        fn window_matches_a_fifo_model(
            capacity in 1usize..40,
            ids in proptest::collection::vec(0u128..60, 1..400),
        ) {
            let mut w = window(capacity);
            let mut model: std::collections::VecDeque<(u128, u64)> = Default::default();
            for (seq, &n) in (1u64..).zip(&ids) {
                for probe in 0u128..60 {
                    let expected = model.iter().rev().find(|(id, _)| *id == probe).map(|(_, s)| *s);
                    proptest::prop_assert_eq!(w.get(Uuid::from_u128(probe)), expected);
                }
                w.insert(Uuid::from_u128(n), seq);
                model.push_back((n, seq));
                if model.len() > capacity {
                    model.pop_front();
                }
                proptest::prop_assert!(w.seqs.len() <= 2 * capacity);
            }
        }
    }

    // The version cache counts only entities it holds and finds them by
    // borrowed strings.
    #[test]
    fn version_cache_counts_only_cached_entities() {
        let mut cache = VersionCache::default();
        assert!(cache.is_empty());
        cache.count_event(("task", "T-1"));
        assert_eq!(cache.get(("task", "T-1")), None);
        cache.insert(("task", "T-1"), 4);
        cache.insert(("task", "T-1"), 5);
        assert_eq!(cache.entities, 1);
        cache.count_event(("task", "T-1"));
        cache.count_event(("task", "T-2"));
        assert_eq!(cache.get(("task", "T-1")), Some(6));
        assert_eq!(cache.get(("task", "T-2")), None);
        cache.clear();
        assert!(cache.is_empty());
    }
}
