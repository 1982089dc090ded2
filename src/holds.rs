//! Legal holds: a hold on a correlation id or an entity keeps its events
//! from deletion by retention (archiving them is still allowed: it loses
//! nothing).
//!
//! The holds live in `DIR/holds`, a small file replaced whole (temporary
//! file, fsync, rename, fsync of the directory) on every change, so after
//! a crash it is either the old list or the new one. Layout (FORMAT.md,
//! "Legal holds"): magic `EVLOGHLD`, version u32 (1), hold count u32, the
//! holds, then a CRC-32 of everything before it; all little-endian.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::path::{Path, PathBuf};

use uuid::Uuid;

use crate::codec::{put_u32, put_u64, u32_at, u64_at};
use crate::error::{CorruptKind, Error, IoContext, Result};
use crate::event::FIELD_BYTES_MAX;
use crate::storage::{OpenMode, OsStorage, Storage};

/// The holds file's name in the data directory.
pub const HOLDS_FILE: &str = "holds";
/// Most holds a log keeps: holds are placed by people, one per case, and
/// the bound keeps the file (and the hash sets built from it) small.
pub const HOLDS_MAX: usize = 10_000;
/// Longest reason kept with a hold, in bytes.
pub const HOLD_REASON_BYTES_MAX: usize = 1024;

const HOLDS_MAGIC: &[u8; 8] = b"EVLOGHLD";
const HOLDS_VERSION: u32 = 1;
const MAGIC_OFFSET: usize = 0;
const VERSION_OFFSET: usize = MAGIC_OFFSET + 8;
const COUNT_OFFSET: usize = VERSION_OFFSET + 4;
const HOLDS_HEADER_BYTES: usize = COUNT_OFFSET + 4;
const CRC_BYTES: usize = 4;
const _: () = assert!(HOLDS_HEADER_BYTES == 16);

const TARGET_CORRELATION: u8 = 1;
const TARGET_ENTITY: u8 = 2;
/// Kind byte and placed_at_us, before the target.
const HOLD_FIXED_BYTES: usize = 1 + 8;
/// Largest encoded hold: fixed part, an entity target (two lengths and
/// two fields) and the reason with its length.
const HOLD_BYTES_MAX: usize =
    HOLD_FIXED_BYTES + 4 + FIELD_BYTES_MAX + 4 + FIELD_BYTES_MAX + 4 + HOLD_REASON_BYTES_MAX;
/// Largest holds file: bounds what a reader allocates for a damaged one.
const HOLDS_FILE_BYTES_MAX: usize = HOLDS_HEADER_BYTES + HOLDS_MAX * HOLD_BYTES_MAX + CRC_BYTES;
const _: () = assert!(HOLDS_FILE_BYTES_MAX < 64 * 1024 * 1024);

/// What a hold protects.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum HoldTarget {
    /// Every event with this correlation id.
    Correlation(Uuid),
    /// Every event of this entity.
    Entity {
        /// The entity's type.
        entity_type: String,
        /// The entity's id.
        entity_id: String,
    },
}

impl fmt::Display for HoldTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HoldTarget::Correlation(id) => write!(f, "correlation {id}"),
            HoldTarget::Entity {
                entity_type,
                entity_id,
            } => write!(f, "entity {entity_type}/{entity_id}"),
        }
    }
}

/// A legal hold: its events are never deleted while it stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hold {
    /// What the hold covers.
    pub target: HoldTarget,
    /// Why (a case number, a ticket): at most [`HOLD_REASON_BYTES_MAX`].
    pub reason: String,
    /// When it was placed, microseconds since the Unix epoch.
    pub placed_at_us: i64,
}

impl Hold {
    /// Checks the lengths the file format bounds: an entity's type and id
    /// 1 to [`FIELD_BYTES_MAX`] bytes, the reason at most
    /// [`HOLD_REASON_BYTES_MAX`].
    pub fn validate(&self) -> Result<()> {
        let refuse = |reason: String| Err(Error::InvalidHold { reason });
        if let HoldTarget::Entity {
            entity_type,
            entity_id,
        } = &self.target
        {
            for (what, field) in [("entity type", entity_type), ("entity id", entity_id)] {
                if field.is_empty() || field.len() > FIELD_BYTES_MAX {
                    return refuse(format!(
                        "the {what} must be 1 to {FIELD_BYTES_MAX} bytes, not {}",
                        field.len()
                    ));
                }
            }
        }
        if self.reason.len() > HOLD_REASON_BYTES_MAX {
            return refuse(format!(
                "the reason is {} bytes, over the limit of {HOLD_REASON_BYTES_MAX}",
                self.reason.len()
            ));
        }
        Ok(())
    }
}

/// Adds `hold` unless its target is already held; returns whether it was
/// added (the first hold on a target keeps its reason and time).
pub(crate) fn add_hold(holds: &mut Vec<Hold>, hold: Hold) -> Result<bool> {
    hold.validate()?;
    if holds.iter().any(|h| h.target == hold.target) {
        return Ok(false);
    }
    if holds.len() >= HOLDS_MAX {
        return Err(Error::InvalidHold {
            reason: format!("the log already has the most holds it keeps ({HOLDS_MAX})"),
        });
    }
    holds.push(hold);
    Ok(true)
}

/// Removes the hold on `target`; returns it, or `None` if there was none.
pub(crate) fn remove_hold(holds: &mut Vec<Hold>, target: &HoldTarget) -> Option<Hold> {
    let index = holds.iter().position(|h| &h.target == target)?;
    Some(holds.remove(index))
}

pub(crate) fn holds_path(dir: &Path) -> PathBuf {
    dir.join(HOLDS_FILE)
}

/// The holds of the log in `dir`: none when the file does not exist; a
/// damaged file is `Corrupt` naming the file and offset.
pub(crate) fn read_holds(storage: &dyn Storage, dir: &Path) -> Result<Vec<Hold>> {
    let path = holds_path(dir);
    if !storage.exists(&path) {
        return Ok(Vec::new());
    }
    let file = storage.open(&path, OpenMode::Read).at(&path)?;
    let len = file.size_bytes().at(&path)?;
    if len > HOLDS_FILE_BYTES_MAX as u64 {
        return Err(Error::Corrupt {
            file: path,
            offset: 0,
            kind: CorruptKind::BadHeader("a holds file is larger than the most holds can be"),
        });
    }
    // Bounded by HOLDS_FILE_BYTES_MAX just above.
    let mut bytes = vec![0u8; len as usize];
    file.read_exact_at(&mut bytes, 0).at(&path)?;
    decode_holds(&bytes, &path)
}

/// Replaces `DIR/holds` with `holds`, durably: after a crash the file is
/// either the old list or this one.
pub(crate) fn write_holds(storage: &dyn Storage, dir: &Path, holds: &[Hold]) -> Result<()> {
    let bytes = encode_holds(holds)?;
    crate::fsutil::write_file_durably(storage, &holds_path(dir), &bytes)
}

pub(crate) fn encode_holds(holds: &[Hold]) -> Result<Vec<u8>> {
    if holds.len() > HOLDS_MAX {
        return Err(Error::InvalidHold {
            reason: format!("{} holds, over the limit of {HOLDS_MAX}", holds.len()),
        });
    }
    let mut out = Vec::with_capacity(HOLDS_HEADER_BYTES + 64 * holds.len() + CRC_BYTES);
    out.extend_from_slice(HOLDS_MAGIC);
    put_u32(&mut out, HOLDS_VERSION);
    put_u32(&mut out, holds.len() as u32);
    for hold in holds {
        hold.validate()?;
        match &hold.target {
            HoldTarget::Correlation(id) => {
                out.push(TARGET_CORRELATION);
                put_u64(&mut out, hold.placed_at_us as u64);
                out.extend_from_slice(id.as_bytes());
            }
            HoldTarget::Entity {
                entity_type,
                entity_id,
            } => {
                out.push(TARGET_ENTITY);
                put_u64(&mut out, hold.placed_at_us as u64);
                put_str(&mut out, entity_type);
                put_str(&mut out, entity_id);
            }
        }
        put_str(&mut out, &hold.reason);
    }
    let crc = crc32fast::hash(&out);
    put_u32(&mut out, crc);
    Ok(out)
}

/// A u32 byte length then the bytes (lengths are validated to be small).
fn put_str(out: &mut Vec<u8>, text: &str) {
    put_u32(out, text.len() as u32);
    out.extend_from_slice(text.as_bytes());
}

pub(crate) fn decode_holds(bytes: &[u8], path: &Path) -> Result<Vec<Hold>> {
    let corrupt = |offset: usize, kind| Error::Corrupt {
        file: path.to_path_buf(),
        offset: offset as u64,
        kind,
    };
    if bytes.get(..HOLDS_MAGIC.len()) != Some(&HOLDS_MAGIC[..]) {
        return Err(corrupt(MAGIC_OFFSET, CorruptKind::BadMagic));
    }
    if bytes.len() < HOLDS_HEADER_BYTES + CRC_BYTES {
        return Err(corrupt(bytes.len(), CorruptKind::Truncated));
    }
    // The CRC covers everything, so a cut or a flipped bit anywhere is
    // caught here, before a length from the file is believed.
    let crc_offset = bytes.len() - CRC_BYTES;
    let stored = u32_at(bytes, crc_offset).unwrap_or(0);
    let computed = crc32fast::hash(&bytes[..crc_offset]);
    if stored != computed {
        return Err(corrupt(
            crc_offset,
            CorruptKind::RecordChecksum { stored, computed },
        ));
    }
    let version = u32_at(bytes, VERSION_OFFSET).unwrap_or(0);
    if version != HOLDS_VERSION {
        return Err(Error::UnsupportedVersion {
            file: path.to_path_buf(),
            found: version,
            supported: HOLDS_VERSION,
        });
    }
    let count = u32_at(bytes, COUNT_OFFSET).unwrap_or(0) as usize;
    if count > HOLDS_MAX {
        return Err(corrupt(
            COUNT_OFFSET,
            CorruptKind::BadHeader("more holds than a log keeps"),
        ));
    }
    let body = &bytes[..crc_offset];
    let mut at = HOLDS_HEADER_BYTES;
    let mut holds = Vec::with_capacity(count);
    for _ in 0..count {
        let start = at;
        let kind = *body
            .get(at)
            .ok_or_else(|| corrupt(at, CorruptKind::Truncated))?;
        let placed_at_us =
            u64_at(body, at + 1).ok_or_else(|| corrupt(at + 1, CorruptKind::Truncated))? as i64;
        at += HOLD_FIXED_BYTES;
        let target = match kind {
            TARGET_CORRELATION => {
                let id: [u8; 16] = body
                    .get(at..at + 16)
                    .and_then(|b| b.try_into().ok())
                    .ok_or_else(|| corrupt(at, CorruptKind::Truncated))?;
                at += 16;
                HoldTarget::Correlation(Uuid::from_bytes(id))
            }
            TARGET_ENTITY => {
                let entity_type = take_str(body, &mut at, 1, FIELD_BYTES_MAX, path)?;
                let entity_id = take_str(body, &mut at, 1, FIELD_BYTES_MAX, path)?;
                HoldTarget::Entity {
                    entity_type,
                    entity_id,
                }
            }
            _ => {
                return Err(corrupt(
                    start,
                    CorruptKind::Decode(format!("unknown hold target kind {kind}")),
                ))
            }
        };
        let reason = take_str(body, &mut at, 0, HOLD_REASON_BYTES_MAX, path)?;
        holds.push(Hold {
            target,
            reason,
            placed_at_us,
        });
    }
    if at != body.len() {
        return Err(corrupt(at, CorruptKind::TrailingBytes));
    }
    Ok(holds)
}

/// Reads a u32 length (within `min..=max`) and that many bytes of UTF-8
/// at `*at`, and moves `*at` past them.
fn take_str(bytes: &[u8], at: &mut usize, min: usize, max: usize, path: &Path) -> Result<String> {
    let corrupt = |offset: usize, kind| Error::Corrupt {
        file: path.to_path_buf(),
        offset: offset as u64,
        kind,
    };
    let len_offset = *at;
    let len = u32_at(bytes, len_offset)
        .ok_or_else(|| corrupt(len_offset, CorruptKind::Truncated))? as usize;
    if !(min..=max).contains(&len) {
        return Err(corrupt(len_offset, CorruptKind::RecordLength(len as u32)));
    }
    let start = len_offset + 4;
    let text = bytes
        .get(start..start + len)
        .ok_or_else(|| corrupt(start, CorruptKind::Truncated))?;
    let text = std::str::from_utf8(text).map_err(|_| {
        corrupt(
            start,
            CorruptKind::Decode("a hold field is not UTF-8".into()),
        )
    })?;
    *at = start + len;
    Ok(text.to_string())
}

/// The holds as sets, for checking each event while a piece is scanned or
/// rewritten: two hash lookups an event, no allocation.
#[derive(Debug, Default, Clone)]
pub(crate) struct HoldSet {
    correlations: HashSet<Uuid>,
    /// Entity ids by entity type, so that a lookup borrows both strings.
    entities: HashMap<String, HashSet<String>>,
}

impl HoldSet {
    pub(crate) fn new(holds: &[Hold]) -> HoldSet {
        let mut set = HoldSet::default();
        for hold in holds {
            match &hold.target {
                HoldTarget::Correlation(id) => {
                    set.correlations.insert(*id);
                }
                HoldTarget::Entity {
                    entity_type,
                    entity_id,
                } => {
                    set.entities
                        .entry(entity_type.clone())
                        .or_default()
                        .insert(entity_id.clone());
                }
            }
        }
        set
    }

    #[cfg(test)]
    pub(crate) fn is_empty(&self) -> bool {
        self.correlations.is_empty() && self.entities.is_empty()
    }

    /// Whether a hold covers an event with this correlation id and entity.
    pub(crate) fn holds_event(
        &self,
        correlation: Option<&Uuid>,
        entity: Option<(&str, &str)>,
    ) -> bool {
        correlation.is_some_and(|id| self.correlations.contains(id))
            || entity.is_some_and(|(entity_type, entity_id)| {
                self.entities
                    .get(entity_type)
                    .is_some_and(|ids| ids.contains(entity_id))
            })
    }
}

/// The holds of the log in `dir`, read without a lock (the file is only
/// ever replaced whole). For `evlog holds`.
pub fn holds_in_dir(dir: &Path) -> Result<Vec<Hold>> {
    if !dir.join("segments").is_dir() {
        return Err(Error::NoDataDirectory {
            path: dir.to_path_buf(),
        });
    }
    read_holds(&OsStorage, dir)
}

/// Places a hold in the log in `dir` while no process has it open: takes
/// the directory's lock (so `Locked` if a process has the log open; place
/// the hold through that process's `Log` then). `Ok(false)` when the
/// target was already held.
pub fn place_hold_in_dir(dir: &Path, hold: Hold) -> Result<bool> {
    change_holds_in_dir(dir, |holds| add_hold(holds, hold))
}

/// Releases the hold on `target` in the log in `dir`, as
/// [`place_hold_in_dir`]; the released hold, or `None` if there was none.
pub fn release_hold_in_dir(dir: &Path, target: &HoldTarget) -> Result<Option<Hold>> {
    change_holds_in_dir(dir, |holds| Ok(remove_hold(holds, target)))
}

/// Edits the holds file of a log no process has open, under its lock;
/// the file is rewritten only when `change` changed the list.
fn change_holds_in_dir<T>(
    dir: &Path,
    change: impl FnOnce(&mut Vec<Hold>) -> Result<T>,
) -> Result<T> {
    if !dir.join("segments").is_dir() {
        return Err(Error::NoDataDirectory {
            path: dir.to_path_buf(),
        });
    }
    let _lock = OsStorage.lock_dir(dir)?;
    let mut holds = read_holds(&OsStorage, dir)?;
    let before = holds.clone();
    let answer = change(&mut holds)?;
    if holds != before {
        write_holds(&OsStorage, dir, &holds)?;
    }
    Ok(answer)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::SimStorage;

    fn sample_holds() -> Vec<Hold> {
        vec![
            Hold {
                target: HoldTarget::Correlation(Uuid::from_u128(
                    0x0123_4567_89ab_cdef_0011_2233_4455_6677,
                )),
                reason: "case 2026-17".into(),
                placed_at_us: 1_764_000_000_000_000,
            },
            Hold {
                target: HoldTarget::Entity {
                    entity_type: "task".into(),
                    entity_id: "T-1/ü".into(),
                },
                reason: String::new(),
                placed_at_us: -5,
            },
        ]
    }

    #[test]
    fn holds_round_trip_through_the_storage_and_survive_a_power_cut() {
        let storage = SimStorage::new();
        let dir = Path::new("/data");
        storage.create_dir_all(dir).unwrap();
        assert_eq!(read_holds(&storage, dir).unwrap(), Vec::new());
        write_holds(&storage, dir, &sample_holds()).unwrap();
        assert_eq!(read_holds(&storage, dir).unwrap(), sample_holds());
        // Written durably: a power cut right after keeps it whole.
        let rebooted = storage.crash(Some(7));
        assert_eq!(read_holds(&rebooted, dir).unwrap(), sample_holds());
        assert!(!rebooted.exists(&crate::fsutil::tmp_path(&holds_path(dir))));
        write_holds(&storage, dir, &[]).unwrap();
        assert_eq!(read_holds(&storage, dir).unwrap(), Vec::new());
    }

    #[test]
    fn holds_file_layout_is_as_format_md_says() {
        let bytes = encode_holds(&sample_holds()[..1]).unwrap();
        assert_eq!(&bytes[..8], b"EVLOGHLD");
        assert_eq!(u32_at(&bytes, 8), Some(1));
        assert_eq!(u32_at(&bytes, 12), Some(1));
        assert_eq!(bytes[16], TARGET_CORRELATION);
        assert_eq!(u64_at(&bytes, 17), Some(1_764_000_000_000_000));
        assert_eq!(
            &bytes[25..41],
            Uuid::from_u128(0x0123_4567_89ab_cdef_0011_2233_4455_6677).as_bytes()
        );
        assert_eq!(u32_at(&bytes, 41), Some(12));
        assert_eq!(&bytes[45..57], b"case 2026-17");
        assert_eq!(bytes.len(), 57 + 4);
        assert_eq!(u32_at(&bytes, 57), Some(crc32fast::hash(&bytes[..57])));
        // An empty list is 20 bytes.
        assert_eq!(encode_holds(&[]).unwrap().len(), 20);
    }

    #[test]
    fn holds_truncation_and_bit_flips_are_detected() {
        let path = Path::new("/data/holds");
        let bytes = encode_holds(&sample_holds()).unwrap();
        for len in 0..bytes.len() {
            match decode_holds(&bytes[..len], path) {
                Err(Error::Corrupt { file, .. }) => assert_eq!(file, path),
                other => panic!("cut at {len}: {other:?}"),
            }
        }
        for at in 0..bytes.len() {
            for bit in 0..8 {
                let mut damaged = bytes.clone();
                damaged[at] ^= 1 << bit;
                match decode_holds(&damaged, path) {
                    Err(Error::Corrupt { file, offset, .. }) => {
                        assert_eq!(file, path);
                        assert!(offset <= bytes.len() as u64);
                    }
                    other => panic!("bit {bit} of byte {at}: {other:?}"),
                }
            }
        }
        // A flip in the magic is named at 0, elsewhere at the CRC.
        let mut damaged = bytes.clone();
        damaged[20] ^= 1;
        assert!(matches!(
            decode_holds(&damaged, path),
            Err(Error::Corrupt { offset, kind: CorruptKind::RecordChecksum { .. }, .. })
                if offset == bytes.len() as u64 - 4
        ));
    }

    /// Re-seals a damaged body with a valid CRC, to reach the checks
    /// behind it (a file written by a buggy or hostile writer).
    fn resealed(mut body: Vec<u8>) -> Vec<u8> {
        let crc = crc32fast::hash(&body);
        put_u32(&mut body, crc);
        body
    }

    #[test]
    fn holds_bad_fields_behind_a_valid_crc_are_named_at_their_offset() {
        let path = Path::new("holds");
        let good = encode_holds(&sample_holds()).unwrap();
        let body = good[..good.len() - 4].to_vec();
        let with = |at: usize, value: &[u8]| {
            let mut b = body.clone();
            b[at..at + value.len()].copy_from_slice(value);
            resealed(b)
        };
        let corrupt_at = |bytes: Vec<u8>| match decode_holds(&bytes, path) {
            Err(Error::Corrupt { offset, kind, .. }) => (offset, kind),
            other => panic!("{other:?}"),
        };
        assert!(matches!(
            decode_holds(&with(8, &2u32.to_le_bytes()), path),
            Err(Error::UnsupportedVersion {
                found: 2,
                supported: 1,
                ..
            })
        ));
        assert_eq!(corrupt_at(with(12, &u32::MAX.to_le_bytes())).0, 12);
        // One hold more than there is: the file ends inside it.
        assert_eq!(
            corrupt_at(with(12, &3u32.to_le_bytes())),
            (body.len() as u64, CorruptKind::Truncated)
        );
        // One fewer: the second hold is trailing bytes.
        let second = 16 + 9 + 16 + 4 + 12;
        assert_eq!(
            corrupt_at(with(12, &1u32.to_le_bytes())),
            (second as u64, CorruptKind::TrailingBytes)
        );
        assert!(
            matches!(corrupt_at(with(second, &[9])), (o, CorruptKind::Decode(_)) if o == second as u64)
        );
        // The entity type's length: zero, and past the limit.
        let type_len_at = second + 9;
        assert_eq!(
            corrupt_at(with(type_len_at, &0u32.to_le_bytes())),
            (type_len_at as u64, CorruptKind::RecordLength(0))
        );
        assert_eq!(
            corrupt_at(with(type_len_at, &5000u32.to_le_bytes())).0,
            type_len_at as u64
        );
        // Invalid UTF-8 in the entity type.
        assert!(
            matches!(corrupt_at(with(type_len_at + 4, &[0xff])), (o, CorruptKind::Decode(_)) if o == type_len_at as u64 + 4)
        );
    }

    #[test]
    fn holds_set_matches_correlations_and_entities() {
        let set = HoldSet::new(&sample_holds());
        let held = Uuid::from_u128(0x0123_4567_89ab_cdef_0011_2233_4455_6677);
        assert!(set.holds_event(Some(&held), None));
        assert!(!set.holds_event(Some(&Uuid::from_u128(1)), None));
        assert!(set.holds_event(None, Some(("task", "T-1/ü"))));
        assert!(set.holds_event(Some(&Uuid::from_u128(1)), Some(("task", "T-1/ü"))));
        assert!(!set.holds_event(None, Some(("task", "T-2"))));
        assert!(!set.holds_event(None, Some(("order", "T-1/ü"))));
        assert!(!set.holds_event(None, None));
        assert!(HoldSet::new(&[]).is_empty() && !set.is_empty());
    }

    #[test]
    fn holds_add_and_remove_keep_one_hold_per_target() {
        let mut holds = Vec::new();
        let [first, second] = <[Hold; 2]>::try_from(sample_holds()).unwrap();
        assert!(add_hold(&mut holds, first.clone()).unwrap());
        assert!(!add_hold(
            &mut holds,
            Hold {
                reason: "again".into(),
                ..first.clone()
            }
        )
        .unwrap());
        assert!(add_hold(&mut holds, second.clone()).unwrap());
        assert_eq!(holds, vec![first.clone(), second.clone()]);
        assert_eq!(remove_hold(&mut holds, &first.target), Some(first.clone()));
        assert_eq!(remove_hold(&mut holds, &first.target), None);
        let too_long = Hold {
            reason: "x".repeat(HOLD_REASON_BYTES_MAX + 1),
            ..first.clone()
        };
        assert!(matches!(
            add_hold(&mut holds, too_long),
            Err(Error::InvalidHold { .. })
        ));
        let empty_id = Hold {
            target: HoldTarget::Entity {
                entity_type: "task".into(),
                entity_id: String::new(),
            },
            ..first
        };
        assert!(matches!(
            encode_holds(&[empty_id]),
            Err(Error::InvalidHold { .. })
        ));
    }

    #[test]
    fn holds_in_dir_places_and_releases_under_the_lock() {
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(
            holds_in_dir(dir.path()),
            Err(Error::NoDataDirectory { .. })
        ));
        std::fs::create_dir(dir.path().join("segments")).unwrap();
        assert_eq!(holds_in_dir(dir.path()).unwrap(), Vec::new());
        let [hold, _] = <[Hold; 2]>::try_from(sample_holds()).unwrap();
        assert!(place_hold_in_dir(dir.path(), hold.clone()).unwrap());
        assert!(!place_hold_in_dir(dir.path(), hold.clone()).unwrap());
        assert_eq!(holds_in_dir(dir.path()).unwrap(), vec![hold.clone()]);
        assert_eq!(
            release_hold_in_dir(dir.path(), &hold.target).unwrap(),
            Some(hold.clone())
        );
        assert_eq!(release_hold_in_dir(dir.path(), &hold.target).unwrap(), None);
        assert_eq!(holds_in_dir(dir.path()).unwrap(), Vec::new());
        // While a process holds the directory, changes are refused.
        let _lock = OsStorage.lock_dir(dir.path()).unwrap();
        assert!(matches!(
            place_hold_in_dir(dir.path(), hold),
            Err(Error::Locked { .. })
        ));
    }
}
