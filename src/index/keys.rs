//! Byte layout of every key and value the secondary indexes keep in their
//! store (FORMAT.md, "Secondary indexes", says the same for independent
//! readers). Keys sort as bytes; integers in keys are big-endian so that
//! byte order is numeric order, integers in values little-endian.

use crate::error::CorruptKind;
use crate::event::Entity;

/// Version of the key and value layout below; a store with another version
/// is rebuilt from the log.
pub(crate) const INDEX_STORE_VERSION: u32 = 1;

/// `M` entries: the layout version (u32 LE).
pub(crate) const META_VERSION: &[u8] = b"Mversion";
/// `M` entries: "indexed through": seq u64 LE, then the 16-byte id of the
/// event at that seq (zeros for 0), so that an index of another log (or of
/// a log that lost its tail in a power cut) is recognised.
pub(crate) const META_MARK: &[u8] = b"Mmark";

pub(crate) const POSTING: u8 = b'P';
pub(crate) const ID_RUN: u8 = b'I';
pub(crate) const TIME_BLOCK: u8 = b'T';
pub(crate) const STAT: u8 = b'S';
pub(crate) const LINK: u8 = b'L';
/// `Y` + event type: every type the log holds, so that a type pattern
/// is matched against a few dozen names, not every posting chunk.
pub(crate) const TYPE_REGISTRY: u8 = b'Y';

/// What a posting list is keyed by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub(crate) enum PostingKind {
    Correlation = 1,
    Entity = 2,
    Session = 3,
    Actor = 4,
    Type = 5,
    /// Causation links `(parent seq, child seq)` of the parents in one
    /// block of `CHILDREN_BLOCK_PARENTS` seqs, keyed by the block number
    /// (u64 BE): one list per block rather than per parent, because most
    /// events cause one or two others and a list per parent would be a
    /// store entry per event.
    Children = 6,
}

/// Parents per block of causation links: the block of parent `p` is
/// `p / CHILDREN_BLOCK_PARENTS`.
pub(crate) const CHILDREN_BLOCK_PARENTS: u64 = 1024;

/// Events per time block: the block of `seq` is `seq / TIME_BLOCK_EVENTS`.
pub(crate) const TIME_BLOCK_EVENTS: u64 = 1024;

/// Statistics dimensions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub(crate) enum StatDim {
    /// Every event, value empty: counts per minute for `--by hour|day`.
    All = 0,
    Type = 1,
    Actor = 2,
    Priority = 3,
}

pub(crate) const MICROS_PER_MINUTE: i64 = 60_000_000;

/// Bytes of an entity inside keys: type length (u16 BE), type, id.
pub(crate) fn entity_key(entity: &Entity) -> Vec<u8> {
    entity_key_parts(&entity.entity_type, &entity.entity_id)
}

pub(crate) fn entity_key_parts(entity_type: &str, entity_id: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(2 + entity_type.len() + entity_id.len());
    entity_key_into(&mut key, entity_type, entity_id);
    key
}

/// [`entity_key_parts`] appended to `out`.
pub(crate) fn entity_key_into(out: &mut Vec<u8>, entity_type: &str, entity_id: &str) {
    // Both are at most FIELD_BYTES_MAX (1024) bytes: the length fits.
    out.extend_from_slice(&(entity_type.len() as u16).to_be_bytes());
    out.extend_from_slice(entity_type.as_bytes());
    out.extend_from_slice(entity_id.as_bytes());
}

pub(crate) fn decode_entity_key(bytes: &[u8]) -> Option<Entity> {
    let len = u16::from_be_bytes(bytes.get(..2)?.try_into().ok()?) as usize;
    let entity_type = std::str::from_utf8(bytes.get(2..2 + len)?).ok()?;
    let entity_id = std::str::from_utf8(bytes.get(2 + len..)?).ok()?;
    Some(Entity {
        entity_type: entity_type.to_string(),
        entity_id: entity_id.to_string(),
    })
}

/// `P`, kind, key length (u16 BE), key: every chunk of one posting list
/// starts with this, followed by the chunk's first seq (u64 BE).
pub(crate) fn posting_prefix(kind: PostingKind, key: &[u8]) -> Vec<u8> {
    let mut prefix = Vec::with_capacity(4 + key.len() + 8);
    posting_prefix_into(&mut prefix, kind, key);
    prefix
}

/// [`posting_prefix`] appended to `out`.
pub(crate) fn posting_prefix_into(out: &mut Vec<u8>, kind: PostingKind, key: &[u8]) {
    out.push(POSTING);
    out.push(kind as u8);
    // Keys are at most 2 + 2 * FIELD_BYTES_MAX bytes.
    out.extend_from_slice(&(key.len() as u16).to_be_bytes());
    out.extend_from_slice(key);
}

pub(crate) fn with_seq(prefix: &[u8], seq: u64) -> Vec<u8> {
    let mut key = Vec::with_capacity(prefix.len() + 8);
    key.extend_from_slice(prefix);
    key.extend_from_slice(&seq.to_be_bytes());
    key
}

/// The seq at the end of a chunk key.
pub(crate) fn trailing_seq(key: &[u8]) -> Option<u64> {
    let start = key.len().checked_sub(8)?;
    Some(u64::from_be_bytes(key[start..].try_into().ok()?))
}

/// Chunk value: count (varint), then each seq as a varint delta from the
/// previous one (the first from the chunk's first seq, so it is 0).
pub(crate) fn encode_chunk(first_seq: u64, seqs: &[u64], out: &mut Vec<u8>) {
    put_varint(out, seqs.len() as u64);
    let mut previous = first_seq;
    for &seq in seqs {
        put_varint(out, seq - previous);
        previous = seq;
    }
}

pub(crate) fn decode_chunk(
    first_seq: u64,
    bytes: &[u8],
    out: &mut Vec<u64>,
) -> Result<(), CorruptKind> {
    let mut at = 0;
    let count = get_varint(bytes, &mut at)?;
    // Each entry takes at least one byte: a count beyond that is damage,
    // not a reason to allocate.
    if count > bytes.len() as u64 {
        return Err(CorruptKind::Index("posting chunk count exceeds its bytes"));
    }
    let mut previous = first_seq;
    for _ in 0..count {
        let delta = get_varint(bytes, &mut at)?;
        previous = previous
            .checked_add(delta)
            .ok_or(CorruptKind::Index("posting chunk seq overflows"))?;
        out.push(previous);
    }
    if at != bytes.len() {
        return Err(CorruptKind::Index("posting chunk has trailing bytes"));
    }
    Ok(())
}

/// Causation-link chunk value: count (varint), then per link the parent's
/// offset in its block (varint) and the child seq as a varint delta from
/// the previous child (the first from the chunk's first seq). Links are in
/// child order.
pub(crate) fn encode_links(
    first_seq: u64,
    block_start: u64,
    links: &[(u64, u64)],
    out: &mut Vec<u8>,
) {
    put_varint(out, links.len() as u64);
    let mut previous = first_seq;
    for &(parent, child) in links {
        put_varint(out, parent - block_start);
        put_varint(out, child - previous);
        previous = child;
    }
}

pub(crate) fn decode_links(
    first_seq: u64,
    block_start: u64,
    bytes: &[u8],
    out: &mut Vec<(u64, u64)>,
) -> Result<(), CorruptKind> {
    let mut at = 0;
    let count = get_varint(bytes, &mut at)?;
    if count > bytes.len() as u64 {
        return Err(CorruptKind::Index("link chunk count exceeds its bytes"));
    }
    let mut previous = first_seq;
    for _ in 0..count {
        let offset = get_varint(bytes, &mut at)?;
        if offset >= CHILDREN_BLOCK_PARENTS {
            return Err(CorruptKind::Index("link parent outside its block"));
        }
        let delta = get_varint(bytes, &mut at)?;
        previous = previous
            .checked_add(delta)
            .ok_or(CorruptKind::Index("link chunk seq overflows"))?;
        out.push((block_start + offset, previous));
    }
    if at != bytes.len() {
        return Err(CorruptKind::Index("link chunk has trailing bytes"));
    }
    Ok(())
}

pub(crate) fn put_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

pub(crate) fn get_varint(bytes: &[u8], at: &mut usize) -> Result<u64, CorruptKind> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let byte = *bytes
            .get(*at)
            .ok_or(CorruptKind::Index("varint runs past the end"))?;
        *at += 1;
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Ok(value);
        }
    }
    Err(CorruptKind::Index("varint longer than 10 bytes"))
}

/// Minutes since the epoch, floored (also for times before 1970).
pub(crate) fn minute_of(timestamp_us: i64) -> i64 {
    timestamp_us.div_euclid(MICROS_PER_MINUTE)
}

/// A signed value as big-endian bytes that sort in numeric order.
pub(crate) fn sortable_i64(value: i64) -> [u8; 8] {
    ((value as u64) ^ (1 << 63)).to_be_bytes()
}

pub(crate) fn from_sortable_i64(bytes: [u8; 8]) -> i64 {
    (u64::from_be_bytes(bytes) ^ (1 << 63)) as i64
}

/// `S`, dim, minute (sortable BE): the prefix of one minute's counters.
pub(crate) fn stat_prefix(dim: StatDim, minute: i64) -> Vec<u8> {
    let mut key = Vec::with_capacity(10 + 16);
    key.push(STAT);
    key.push(dim as u8);
    key.extend_from_slice(&sortable_i64(minute));
    key
}

/// A counter's key, appended to `out`: its minute's prefix
/// ([`stat_prefix`]), then the counted value.
pub(crate) fn stat_key_into(out: &mut Vec<u8>, dim: StatDim, minute: i64, value: &[u8]) {
    out.push(STAT);
    out.push(dim as u8);
    out.extend_from_slice(&sortable_i64(minute));
    out.extend_from_slice(value);
}

pub(crate) fn link_key(from: &[u8], to: &[u8]) -> Vec<u8> {
    let mut key = Vec::with_capacity(1 + from.len() + to.len());
    key.push(LINK);
    key.extend_from_slice(from);
    key.extend_from_slice(to);
    key
}

/// The smallest key greater than every key starting with `prefix`.
pub(crate) fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    // Only a prefix of all 0xff bytes gets here; nothing we write is one.
    vec![0xff; prefix.len() + 1]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunk_round_trips() {
        let seqs = [5, 6, 200, 1 << 40];
        let mut bytes = Vec::new();
        encode_chunk(5, &seqs, &mut bytes);
        let mut back = Vec::new();
        decode_chunk(5, &bytes, &mut back).unwrap();
        assert_eq!(back, seqs);
        for cut in 0..bytes.len() {
            let mut out = Vec::new();
            assert!(decode_chunk(5, &bytes[..cut], &mut out).is_err());
        }
    }

    #[test]
    fn sortable_i64_orders_like_numbers() {
        let values = [i64::MIN, -61, -1, 0, 1, 60, i64::MAX];
        for pair in values.windows(2) {
            assert!(sortable_i64(pair[0]) < sortable_i64(pair[1]));
            assert_eq!(from_sortable_i64(sortable_i64(pair[0])), pair[0]);
        }
        assert_eq!(minute_of(-1), -1);
        assert_eq!(minute_of(59_999_999), 0);
    }

    #[test]
    fn entity_keys_round_trip_and_are_prefix_free() {
        let a = entity_key_parts("task", "T-1");
        let b = entity_key_parts("task", "T-10");
        assert_eq!(decode_entity_key(&a).unwrap().entity_id, "T-1");
        // The posting prefix carries the key length, so "T-1" never matches
        // the chunks of "T-10".
        let pa = posting_prefix(PostingKind::Entity, &a);
        let pb = posting_prefix(PostingKind::Entity, &b);
        assert!(!pb.starts_with(&pa));
    }
}
