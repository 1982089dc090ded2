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

/// Where each piece starts, from file names alone: the rule every reader
/// of a directory applies (recovery, the read-only view's refresh,
/// `repair`, `evlog-dump --verify`), written once.
///
/// A segment that starts where an archive starts is superseded by it (a
/// crash between the archive's rename and the segment's removal leaves
/// both; the archive is the authoritative copy). A sealed segment's
/// records end where the next piece starts, live or archived.
pub(crate) struct PieceStarts {
    /// Live segments not superseded by an archive, in order.
    segments: Vec<u64>,
    /// Every piece's first seq: those segments and the archives, in order.
    starts: Vec<u64>,
}

impl PieceStarts {
    pub fn new(
        segment_seqs: impl IntoIterator<Item = u64>,
        archive_seqs: impl IntoIterator<Item = u64>,
    ) -> PieceStarts {
        let mut archives: Vec<u64> = archive_seqs.into_iter().collect();
        archives.sort_unstable();
        let mut segments: Vec<u64> = segment_seqs
            .into_iter()
            .filter(|seq| archives.binary_search(seq).is_err())
            .collect();
        segments.sort_unstable();
        let mut starts: Vec<u64> = segments.iter().chain(&archives).copied().collect();
        starts.sort_unstable();
        PieceStarts { segments, starts }
    }

    /// Live segments not superseded by an archive, in order.
    pub fn segments(&self) -> &[u64] {
        &self.segments
    }

    /// Every piece's first seq, in order.
    pub fn starts(&self) -> &[u64] {
        &self.starts
    }

    /// The first seq of the piece after the one that starts at
    /// `first_seq`: where a sealed segment's records must end. `None` for
    /// the last piece.
    pub fn successor(&self, first_seq: u64) -> Option<u64> {
        self.starts
            .get(self.starts.partition_point(|&s| s <= first_seq))
            .copied()
    }
}

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

#[cfg(test)]
mod tests {
    use super::PieceStarts;

    #[test]
    fn piece_starts_drop_segments_an_archive_replaced_and_chain_successors() {
        // Archives at 1 and 201; a segment left beside the archive at 201
        // (a crash before its removal); live segments at 101, 301 and 401
        // (the active one).
        let pieces = PieceStarts::new([401, 201, 101, 301], [201, 1]);
        assert_eq!(pieces.segments(), &[101, 301, 401]);
        assert_eq!(pieces.starts(), &[1, 101, 201, 301, 401]);
        // A sealed segment ends where the next piece starts, archive or not.
        assert_eq!(pieces.successor(101), Some(201));
        assert_eq!(pieces.successor(301), Some(401));
        assert_eq!(pieces.successor(1), Some(101));
        assert_eq!(pieces.successor(401), None);
        let empty = PieceStarts::new([], []);
        assert!(empty.starts().is_empty());
        assert_eq!(empty.successor(1), None);
    }
}
