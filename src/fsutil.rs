//! File-system steps whose durability depends on doing them in order.

use std::path::{Path, PathBuf};

use crate::error::{IoContext, Result};
use crate::storage::{OpenMode, Storage};

/// Suffix of files being written before their atomic rename; any found on
/// open are leftovers of a crash and are removed.
pub(crate) const TMP_SUFFIX: &str = ".tmp";

/// Makes the directory entries of `dir` (new files, renames) durable.
pub(crate) fn sync_dir(storage: &dyn Storage, dir: &Path) -> Result<()> {
    storage.sync_dir(dir).at(dir)
}

/// Writes `bytes` to `path` so that after a crash the file either does not
/// exist or is complete: temp file, fsync, rename, fsync of the directory.
pub(crate) fn write_file_durably(storage: &dyn Storage, path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = tmp_path(path);
    let file = storage.open(&tmp, OpenMode::CreateTruncate).at(&tmp)?;
    file.write_all_at(bytes, 0).at(&tmp)?;
    file.sync_all().at(&tmp)?;
    drop(file);
    storage.rename(&tmp, path).at(path)?;
    if let Some(parent) = path.parent() {
        sync_dir(storage, parent)?;
    }
    Ok(())
}

pub(crate) fn tmp_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(TMP_SUFFIX);
    PathBuf::from(name)
}
