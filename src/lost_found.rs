//! `DIR/lost+found/`: where bytes go that recovery or `repair` cuts from a
//! segment, so that nothing leaves the log without a copy an operator can
//! look at (`evlog-dump` reads them as segment tails).

use std::path::{Path, PathBuf};

use crate::error::{IoContext, Result};
use crate::fsutil::{sync_dir, write_file_durably};
use crate::storage::Storage;

pub(crate) const LOST_FOUND_DIR: &str = "lost+found";
/// Most bytes `lost+found/` may hold in all. A cut is bounded by one
/// segment plus one commit group, so this keeps a few worst cases; past it
/// the copy is refused with a message (the cut itself goes on: refusing to
/// open a log because old copies were never cleaned up would be worse).
pub const LOST_FOUND_BYTES_MAX: u64 = 256 * 1024 * 1024;

/// Where a cut went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LostFoundCopy {
    /// The file holding the copy (`None` if nothing could be kept).
    pub path: Option<PathBuf>,
    /// Bytes of the cut that were not copied because `lost+found/` is
    /// over [`LOST_FOUND_BYTES_MAX`].
    pub bytes_not_kept: u64,
}

/// The file name of the copy of bytes cut from `segment` at `offset`.
pub(crate) fn copy_name(segment: &Path, offset: u64) -> String {
    let name = segment
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    format!("{name}.at-{offset}")
}

/// Copies `bytes`, cut from `segment` at `offset`, durably into
/// `dir/lost+found/` (temporary file, fsync, rename, fsync of the
/// directory) before the caller cuts them.
pub(crate) fn preserve(
    storage: &dyn Storage,
    dir: &Path,
    segment: &Path,
    offset: u64,
    bytes: &[u8],
) -> Result<LostFoundCopy> {
    let lost_dir = dir.join(LOST_FOUND_DIR);
    if !storage.exists(&lost_dir) {
        storage.create_dir_all(&lost_dir).at(&lost_dir)?;
        sync_dir(storage, dir)?;
    }
    let mut used_bytes = 0u64;
    for name in storage.list_dir(&lost_dir).at(&lost_dir)? {
        let path = lost_dir.join(name);
        if let Ok(file) = storage.open(&path, crate::storage::OpenMode::Read) {
            used_bytes += file.size_bytes().unwrap_or(0);
        }
    }
    let room = LOST_FOUND_BYTES_MAX.saturating_sub(used_bytes);
    let kept = (bytes.len() as u64).min(room) as usize;
    let bytes_not_kept = (bytes.len() - kept) as u64;
    if bytes_not_kept > 0 {
        tracing::error!(
            dir = %lost_dir.display(),
            bytes_not_kept,
            cap_bytes = LOST_FOUND_BYTES_MAX,
            "lost+found is full: part of the cut is not kept; remove old files from it"
        );
    }
    if kept == 0 {
        return Ok(LostFoundCopy {
            path: None,
            bytes_not_kept,
        });
    }
    let path = lost_dir.join(copy_name(segment, offset));
    write_file_durably(storage, &path, &bytes[..kept])?;
    Ok(LostFoundCopy {
        path: Some(path),
        bytes_not_kept,
    })
}
