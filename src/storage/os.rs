//! The real file system.

use std::any::Any;
use std::collections::BTreeSet;
use std::fs::{File, OpenOptions, TryLockError};
use std::io::{self, Read, Seek, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::{OpenMode, Storage, StorageFile};
use crate::error::{Error, IoContext};
use crate::mmap::SharedMap;

pub(crate) const LOCK_FILE: &str = "LOCK";

/// The real file system, through `std::fs`.
#[derive(Debug, Default, Clone, Copy)]
pub struct OsStorage;

struct OsFile(File);

impl StorageFile for OsFile {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.0.read_exact_at(buf, offset)
    }
    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.0.write_all_at(buf, offset)
    }
    fn sync_data(&self) -> io::Result<()> {
        self.0.sync_data()
    }
    fn start_writeback(&self, offset: u64, len: u64) -> io::Result<()> {
        crate::sys::start_writeback(&self.0, offset, len)
    }
    fn sync_all(&self) -> io::Result<()> {
        self.0.sync_all()
    }
    fn set_len(&self, len: u64) -> io::Result<()> {
        self.0.set_len(len)
    }
    fn size_bytes(&self) -> io::Result<u64> {
        self.0.metadata().map(|m| m.len())
    }
    fn map_read_only(&self, len: u64) -> io::Result<Option<SharedMap>> {
        SharedMap::read_only(&self.0, len).map(Some)
    }
    fn map_read_write(&self, len: u64) -> io::Result<Option<SharedMap>> {
        SharedMap::read_write(&self.0, len).map(Some)
    }
}

/// Wraps an already open file, for tools that read files directly.
pub(crate) fn os_file(file: File) -> Box<dyn StorageFile> {
    Box::new(OsFile(file))
}

impl Storage for OsStorage {
    fn open(&self, path: &Path, mode: OpenMode) -> io::Result<Box<dyn StorageFile>> {
        let mut options = OpenOptions::new();
        options.read(true);
        match mode {
            OpenMode::Read => {}
            OpenMode::ReadWrite => {
                options.write(true);
            }
            OpenMode::CreateOrOpen => {
                options.write(true).create(true).truncate(false);
            }
            OpenMode::CreateTruncate => {
                options.write(true).create(true).truncate(true);
            }
        }
        Ok(Box::new(OsFile(options.open(path)?)))
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        std::fs::rename(from, to)
    }
    fn remove_file(&self, path: &Path) -> io::Result<()> {
        std::fs::remove_file(path)
    }
    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        std::fs::create_dir_all(path)
    }
    fn sync_dir(&self, path: &Path) -> io::Result<()> {
        File::open(path)?.sync_all()
    }
    fn list_dir(&self, path: &Path) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in std::fs::read_dir(path)? {
            if let Some(name) = entry?.file_name().to_str() {
                names.push(name.to_string());
            }
        }
        Ok(names)
    }
    fn exists(&self, path: &Path) -> bool {
        path.exists()
    }
    fn hosts_secondary_indexes(&self) -> bool {
        true
    }

    fn lock_dir(&self, dir: &Path) -> crate::Result<Box<dyn Any + Send + Sync>> {
        Ok(Box::new(lock_dir(dir)?))
    }
}

/// Directories this process has open. A second `Log::open` of the same
/// directory in this process fails at once instead of waiting on `flock`.
static OPEN_DIRS: std::sync::Mutex<BTreeSet<PathBuf>> = std::sync::Mutex::new(BTreeSet::new());
/// How long to retry a held lock before reporting it. A child forked by
/// any thread of the process that last held the lock shares the lock's file
/// descriptor until it calls `exec` (which closes it, the descriptor being
/// close-on-exec), so a lock can outlive its `Log` by that long; a lock
/// that is really held is reported after this delay.
const LOCK_RETRY: Duration = Duration::from_secs(1);
const LOCK_RETRY_SLEEP: Duration = Duration::from_millis(2);

/// The held directory lock; dropping it releases the directory.
struct DirLock {
    _file: File,
    _registration: Registration,
}

/// This process's claim on a directory in `OPEN_DIRS`.
struct Registration {
    key: PathBuf,
}

impl Drop for Registration {
    fn drop(&mut self) {
        open_dirs().remove(&self.key);
    }
}

fn open_dirs() -> std::sync::MutexGuard<'static, BTreeSet<PathBuf>> {
    OPEN_DIRS
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Takes the directory lock, writing our pid into `LOCK` for the error
/// message of whoever comes second. The lock is `flock`-style: the kernel
/// releases it when the process dies, so a crash never leaves it stale.
fn lock_dir(dir: &Path) -> crate::Result<DirLock> {
    let key = std::fs::canonicalize(dir).at(dir)?;
    let own_pid = std::process::id().to_string();
    if !open_dirs().insert(key.clone()) {
        return Err(Error::Locked {
            dir: dir.to_path_buf(),
            pid: own_pid,
        });
    }
    let registration = Registration { key };
    let path = dir.join(LOCK_FILE);
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .at(&path)?;
    let started = Instant::now();
    loop {
        match file.try_lock() {
            Ok(()) => break,
            Err(TryLockError::WouldBlock) => {
                let mut pid = String::new();
                let _ = file.rewind();
                let _ = file.read_to_string(&mut pid);
                let pid = pid.trim();
                if started.elapsed() < LOCK_RETRY {
                    std::thread::sleep(LOCK_RETRY_SLEEP);
                    continue;
                }
                return Err(Error::Locked {
                    dir: dir.to_path_buf(),
                    pid: if pid.is_empty() {
                        "unknown".into()
                    } else {
                        pid.to_string()
                    },
                });
            }
            Err(TryLockError::Error(e)) => return Err(e).at(&path),
        }
    }
    file.set_len(0).at(&path)?;
    file.rewind().at(&path)?;
    writeln!(file, "{own_pid}").at(&path)?;
    Ok(DirLock {
        _file: file,
        _registration: registration,
    })
}
