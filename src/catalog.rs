//! The catalog: which file holds which sequence range. It is the only
//! thing readers ask where a sequence number lives.
//!
//! The catalog is not a file of its own: it is derived at open from the
//! file names of `segments/` and `archive/` and the archives' footers (the
//! rule is in FORMAT.md, "The catalog"), and kept in memory as an ordered
//! list of pieces. Each piece covers a contiguous range; together they
//! cover the log from its start to its end without gap or overlap. The
//! list changes in three ways only: the writer appends a new active
//! segment when it rolls, the archiver replaces a sealed segment by its
//! archive, and retention replaces a piece by a compacted archive (possibly
//! a tombstone holding no event).

use std::sync::{Arc, PoisonError, RwLock};

use crate::archive::ArchiveFile;
use crate::error::{Error, Result};
use crate::segment::Segment;

/// What holds a piece of the log.
#[derive(Clone)]
pub(crate) enum Holder {
    /// A live segment file (sealed, or the active one when last).
    Segment(Arc<Segment>),
    /// An archive: every event of a former sealed segment, or what
    /// retention kept of it (possibly nothing: a tombstone whose deletion
    /// notes explain the range).
    Archive(Arc<ArchiveFile>),
}

/// One contiguous sequence range and what holds it.
#[derive(Clone)]
pub(crate) struct Piece {
    pub first_seq: u64,
    pub holder: Holder,
}

impl Piece {
    pub fn segment(segment: Arc<Segment>) -> Piece {
        Piece {
            first_seq: segment.first_seq,
            holder: Holder::Segment(segment),
        }
    }

    /// The segment holding this piece, if it is live.
    pub fn as_segment(&self) -> Option<&Arc<Segment>> {
        match &self.holder {
            Holder::Segment(segment) => Some(segment),
            Holder::Archive(_) => None,
        }
    }

    pub fn archive(archive: Arc<ArchiveFile>) -> Piece {
        Piece {
            first_seq: archive.range_first_seq(),
            holder: Holder::Archive(archive),
        }
    }
}

/// The ordered pieces of the log.
pub(crate) struct Catalog {
    pieces: RwLock<Vec<Piece>>,
}

impl Catalog {
    pub fn new(pieces: Vec<Piece>) -> Catalog {
        debug_assert!(pieces.windows(2).all(|w| w[0].first_seq < w[1].first_seq));
        Catalog {
            pieces: RwLock::new(pieces),
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Vec<Piece>> {
        self.pieces.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Vec<Piece>> {
        self.pieces.write().unwrap_or_else(PoisonError::into_inner)
    }

    /// The piece whose range holds `seq`, for a `seq` the caller knows is
    /// at most the log's end; `None` below the first piece.
    pub fn locate(&self, seq: u64) -> Option<Piece> {
        let pieces = self.read();
        let after = pieces.partition_point(|p| p.first_seq <= seq);
        after.checked_sub(1).and_then(|i| pieces.get(i)).cloned()
    }

    /// Every piece, in sequence order.
    pub fn pieces(&self) -> Vec<Piece> {
        self.read().clone()
    }

    /// The live segments, in sequence order (the last is the active one).
    pub fn segments(&self) -> Vec<Arc<Segment>> {
        self.read()
            .iter()
            .filter_map(|p| p.as_segment().cloned())
            .collect()
    }

    /// The last piece: the active segment, when the log has one.
    pub fn last(&self) -> Option<Piece> {
        self.read().last().cloned()
    }

    /// Replaces the piece that starts at `first_seq` (the archiver's swap
    /// of a sealed segment for its archive, or of an archive for its
    /// compacted rewrite). The new holder covers the same range.
    pub fn replace(&self, first_seq: u64, holder: Holder) -> Result<Holder> {
        let mut pieces = self.write();
        let last = pieces.len().saturating_sub(1);
        match pieces.binary_search_by_key(&first_seq, |p| p.first_seq) {
            // Never the active segment: the writer appends to it.
            Ok(i) if i < last => Ok(std::mem::replace(&mut pieces[i].holder, holder)),
            _ => Err(Error::Internal(
                "the archiver replaced a piece the catalog does not hold sealed",
            )),
        }
    }

    /// As [`Catalog::replace`], for a read-only view, whose last piece may
    /// be a segment that the writer sealed and archived since.
    pub fn replace_in_view(&self, first_seq: u64, holder: Holder) -> Result<Holder> {
        let mut pieces = self.write();
        match pieces.binary_search_by_key(&first_seq, |p| p.first_seq) {
            Ok(i) => Ok(std::mem::replace(&mut pieces[i].holder, holder)),
            Err(_) => Err(Error::Internal("a view replaced a piece it does not hold")),
        }
    }

    /// The lowest sequence number of an event still held (skipping
    /// tombstones at the start), or `next_seq` when none is.
    pub fn first_held_seq(&self, next_seq: u64) -> u64 {
        first_held_seq(&self.read(), next_seq)
    }

    /// The highest sequence number retention deleted, if any: a durable
    /// consumer behind it would miss events it never saw.
    pub fn deleted_through(&self) -> Option<u64> {
        self.read()
            .iter()
            .filter_map(|p| match &p.holder {
                Holder::Archive(archive) => archive.deletions().iter().map(|n| n.last_seq).max(),
                Holder::Segment(_) => None,
            })
            .max()
    }

    /// Appends a new last piece (the writer's new active segment, or a
    /// segment a read-only view found).
    pub fn push(&self, piece: Piece) {
        let mut pieces = self.write();
        debug_assert!(pieces.last().is_none_or(|p| p.first_seq < piece.first_seq));
        pieces.push(piece);
    }
}

/// The lowest sequence number of an event the pieces hold, or `next_seq`.
pub(crate) fn first_held_seq(pieces: &[Piece], next_seq: u64) -> u64 {
    for piece in pieces {
        match &piece.holder {
            Holder::Segment(segment) if segment.record_count() > 0 => return piece.first_seq,
            Holder::Segment(_) => {}
            Holder::Archive(archive) => {
                if let Some((first, _)) = archive.present_seqs() {
                    return first;
                }
            }
        }
    }
    next_seq
}
