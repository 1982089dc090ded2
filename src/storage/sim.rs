//! A simulated disk for tests: every file lives in memory twice, as the
//! bytes the program sees (`live`) and the bytes that would survive a power
//! cut (`durable`), like redb's crash-consistency backend. A sync copies
//! live to durable; a directory sync makes names durable (a new file's name
//! survives a crash only after its directory is synced, as on ext4). Faults
//! fail the Nth operation of a kind, once or from then on, with EIO or
//! ENOSPC, tear a write, or cut the power; [`SimStorage::crash`] then gives
//! the disk as it would be after a reboot, with a seeded, random part of
//! the unsynced writes persisted (page by page, out of order).

use std::any::Any;
use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use super::{OpenMode, Storage, StorageFile};
use crate::error::Error;
use crate::mmap::SharedMap;

/// Unsynced writes persist in pieces of this size after a simulated crash.
const PAGE_BYTES: u64 = 4096;

/// Kinds of operations a fault can target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum OpKind {
    /// Every kind of operation.
    Any,
    /// Writes to a file.
    Write,
    /// Syncs of a file.
    Sync,
    /// Size changes of a file.
    SetLen,
    /// File creations.
    Create,
    /// Renames.
    Rename,
    /// File removals.
    Remove,
    /// Syncs of a directory.
    SyncDir,
}

/// What happens at the faulty operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultKind {
    /// The operation fails with EIO.
    Io,
    /// The operation fails with ENOSPC.
    NoSpace,
    /// A write stores only its first half, then fails with EIO; other
    /// operations fail with EIO.
    TornWrite,
    /// The power goes off: this and every later operation fail with EIO.
    /// Use [`SimStorage::crash`] to see what survived.
    PowerCut,
}

/// Fail the `nth` (1-based) operation of kind `op`.
#[derive(Debug, Clone, Copy)]
pub struct Fault {
    /// The kind of operation that fails.
    pub op: OpKind,
    /// Which one of them fails (1-based).
    pub nth: u64,
    /// How it fails.
    pub kind: FaultKind,
    /// Keep failing every later operation of that kind.
    pub sticky: bool,
}

#[derive(Debug, Clone, Default)]
struct Inode {
    live: Vec<u8>,
    durable: Vec<u8>,
    /// Writes and size changes since the last sync, in order.
    pending: Vec<Pending>,
}

#[derive(Debug, Clone)]
enum Pending {
    Write { offset: u64, bytes: Vec<u8> },
    SetLen(u64),
}

#[derive(Debug, Default)]
struct State {
    inodes: Vec<Inode>,
    live_names: BTreeMap<PathBuf, usize>,
    durable_names: BTreeMap<PathBuf, usize>,
    dirs: BTreeSet<PathBuf>,
    locked: BTreeSet<PathBuf>,
    counts: BTreeMap<OpKind, u64>,
    fault: Option<Fault>,
    fault_fired: bool,
    powered_off: bool,
}

impl State {
    /// Counts an operation and decides whether it fails.
    fn check(&mut self, op: OpKind) -> io::Result<Option<FaultKind>> {
        if self.powered_off {
            return Err(io::Error::other("simulated power cut: device is gone"));
        }
        *self.counts.entry(op).or_default() += 1;
        let any = {
            let count = self.counts.entry(OpKind::Any).or_default();
            *count += 1;
            *count
        };
        let Some(fault) = self.fault else {
            return Ok(None);
        };
        let count = if fault.op == OpKind::Any {
            any
        } else if fault.op == op {
            self.counts.get(&op).copied().unwrap_or(0)
        } else {
            return Ok(None);
        };
        let hit = count == fault.nth || (fault.sticky && self.fault_fired && count > fault.nth);
        if !hit {
            return Ok(None);
        }
        self.fault_fired = true;
        match fault.kind {
            FaultKind::PowerCut => {
                self.powered_off = true;
                Err(io::Error::other("simulated power cut"))
            }
            FaultKind::NoSpace => Err(io::Error::from_raw_os_error(28)),
            FaultKind::Io => Err(io::Error::from_raw_os_error(5)),
            FaultKind::TornWrite if op == OpKind::Write => Ok(Some(FaultKind::TornWrite)),
            FaultKind::TornWrite => Err(io::Error::from_raw_os_error(5)),
        }
    }

    fn parent_of(path: &Path) -> PathBuf {
        path.parent().map(Path::to_path_buf).unwrap_or_default()
    }
}

fn apply(bytes: &mut Vec<u8>, pending: &Pending) {
    match pending {
        Pending::Write {
            offset,
            bytes: data,
        } => {
            let end = *offset as usize + data.len();
            if bytes.len() < end {
                bytes.resize(end, 0);
            }
            bytes[*offset as usize..end].copy_from_slice(data);
        }
        Pending::SetLen(len) => bytes.resize(*len as usize, 0),
    }
}

/// A simulated disk; clones share it.
#[derive(Clone, Default)]
pub struct SimStorage {
    state: Arc<Mutex<State>>,
}

impl std::fmt::Debug for SimStorage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SimStorage")
    }
}

impl SimStorage {
    /// An empty simulated disk with no faults.
    pub fn new() -> SimStorage {
        SimStorage::default()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Arms a fault; operation counts start from now.
    pub fn set_fault(&self, fault: Option<Fault>) {
        let mut state = self.lock();
        state.fault = fault;
        state.fault_fired = false;
        state.counts.clear();
    }

    /// Whether the armed fault has fired.
    pub fn fault_fired(&self) -> bool {
        self.lock().fault_fired
    }

    /// Operations of a kind counted since the fault was last set.
    pub fn op_count(&self, op: OpKind) -> u64 {
        self.lock().counts.get(&op).copied().unwrap_or(0)
    }

    /// The disk after a power cut and reboot: durable names and bytes,
    /// plus, when `seed` is given, a random part of the unsynced writes
    /// (each 4 KiB piece independently, so later writes can survive where
    /// earlier ones did not). The result is a fresh disk with no fault.
    pub fn crash(&self, seed: Option<u64>) -> SimStorage {
        let state = self.lock();
        let mut rng = seed.map(|s| s ^ 0x9E37_79B9_7F4A_7C15);
        let mut next = move || {
            rng.as_mut().map(|r| {
                *r ^= *r << 13;
                *r ^= *r >> 7;
                *r ^= *r << 17;
                *r
            })
        };
        let mut inodes = Vec::with_capacity(state.inodes.len());
        for inode in &state.inodes {
            let mut image = inode.durable.clone();
            for pending in &inode.pending {
                match pending {
                    Pending::SetLen(len) => {
                        if next().is_some_and(|r| r % 2 == 0) {
                            image.resize(*len as usize, 0);
                        }
                    }
                    Pending::Write { offset, bytes } => {
                        let mut start = 0u64;
                        while start < bytes.len() as u64 {
                            let page_end =
                                ((offset + start) / PAGE_BYTES + 1) * PAGE_BYTES - offset;
                            let end = page_end.min(bytes.len() as u64);
                            if next().is_some_and(|r| r % 2 == 0) {
                                apply(
                                    &mut image,
                                    &Pending::Write {
                                        offset: offset + start,
                                        bytes: bytes[start as usize..end as usize].to_vec(),
                                    },
                                );
                            }
                            start = end;
                        }
                    }
                }
            }
            inodes.push(Inode {
                live: image.clone(),
                durable: image,
                pending: Vec::new(),
            });
        }
        SimStorage {
            state: Arc::new(Mutex::new(State {
                inodes,
                live_names: state.durable_names.clone(),
                durable_names: state.durable_names.clone(),
                dirs: state.dirs.clone(),
                ..State::default()
            })),
        }
    }

    /// The live bytes of a file, if it exists (for tests that damage files).
    pub fn read_file(&self, path: &Path) -> Option<Vec<u8>> {
        let state = self.lock();
        let id = *state.live_names.get(path)?;
        Some(state.inodes[id].live.clone())
    }

    /// Replaces a file's bytes, live and durable (for tests that damage
    /// files).
    pub fn write_file(&self, path: &Path, bytes: &[u8]) {
        let mut state = self.lock();
        let id = match state.live_names.get(path) {
            Some(&id) => id,
            None => {
                state.inodes.push(Inode::default());
                let id = state.inodes.len() - 1;
                state.live_names.insert(path.to_path_buf(), id);
                id
            }
        };
        state.durable_names.insert(path.to_path_buf(), id);
        let inode = &mut state.inodes[id];
        inode.live = bytes.to_vec();
        inode.durable = bytes.to_vec();
        inode.pending.clear();
    }
}

struct SimFile {
    storage: SimStorage,
    inode: usize,
    writable: bool,
}

impl SimFile {
    fn read_only_error() -> io::Error {
        io::Error::from_raw_os_error(9)
    }
}

impl StorageFile for SimFile {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let state = self.storage.lock();
        if state.powered_off {
            return Err(io::Error::other("simulated power cut: device is gone"));
        }
        let live = &state.inodes[self.inode].live;
        let end = offset as usize + buf.len();
        if end > live.len() {
            return Err(io::Error::from(io::ErrorKind::UnexpectedEof));
        }
        buf.copy_from_slice(&live[offset as usize..end]);
        Ok(())
    }

    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        if !self.writable {
            return Err(SimFile::read_only_error());
        }
        let mut state = self.storage.lock();
        let outcome = state.check(OpKind::Write)?;
        let (bytes, result) = match outcome {
            Some(FaultKind::TornWrite) => {
                (&buf[..buf.len() / 2], Err(io::Error::from_raw_os_error(5)))
            }
            _ => (buf, Ok(())),
        };
        let pending = Pending::Write {
            offset,
            bytes: bytes.to_vec(),
        };
        let inode = &mut state.inodes[self.inode];
        apply(&mut inode.live, &pending);
        inode.pending.push(pending);
        result
    }

    fn sync_data(&self) -> io::Result<()> {
        let mut state = self.storage.lock();
        state.check(OpKind::Sync)?;
        let inode = &mut state.inodes[self.inode];
        inode.durable = inode.live.clone();
        inode.pending.clear();
        Ok(())
    }

    fn sync_all(&self) -> io::Result<()> {
        self.sync_data()
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        if !self.writable {
            return Err(SimFile::read_only_error());
        }
        let mut state = self.storage.lock();
        state.check(OpKind::SetLen)?;
        let inode = &mut state.inodes[self.inode];
        let pending = Pending::SetLen(len);
        apply(&mut inode.live, &pending);
        inode.pending.push(pending);
        Ok(())
    }

    fn size_bytes(&self) -> io::Result<u64> {
        Ok(self.storage.lock().inodes[self.inode].live.len() as u64)
    }

    fn map_read_only(&self, _len: u64) -> io::Result<Option<SharedMap>> {
        Ok(None)
    }

    fn map_read_write(&self, _len: u64) -> io::Result<Option<SharedMap>> {
        Ok(None)
    }
}

fn not_found(path: &Path) -> io::Error {
    io::Error::new(io::ErrorKind::NotFound, path.display().to_string())
}

impl Storage for SimStorage {
    fn open(&self, path: &Path, mode: OpenMode) -> io::Result<Box<dyn StorageFile>> {
        let mut state = self.lock();
        let existing = state.live_names.get(path).copied();
        let inode = match (existing, mode) {
            (Some(id), OpenMode::CreateTruncate) => {
                state.check(OpKind::SetLen)?;
                let inode = &mut state.inodes[id];
                inode.live.clear();
                inode.pending.push(Pending::SetLen(0));
                id
            }
            (Some(id), _) => id,
            (None, OpenMode::Read | OpenMode::ReadWrite) => return Err(not_found(path)),
            (None, OpenMode::CreateOrOpen | OpenMode::CreateTruncate) => {
                if !state.dirs.contains(&State::parent_of(path)) {
                    return Err(not_found(path));
                }
                state.check(OpKind::Create)?;
                state.inodes.push(Inode::default());
                let id = state.inodes.len() - 1;
                state.live_names.insert(path.to_path_buf(), id);
                id
            }
        };
        drop(state);
        Ok(Box::new(SimFile {
            storage: self.clone(),
            inode,
            writable: mode != OpenMode::Read,
        }))
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut state = self.lock();
        state.check(OpKind::Rename)?;
        let id = state
            .live_names
            .remove(from)
            .ok_or_else(|| not_found(from))?;
        state.live_names.insert(to.to_path_buf(), id);
        Ok(())
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        let mut state = self.lock();
        state.check(OpKind::Remove)?;
        state
            .live_names
            .remove(path)
            .map(|_| ())
            .ok_or_else(|| not_found(path))
    }

    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        let mut state = self.lock();
        let mut dir = path.to_path_buf();
        loop {
            state.dirs.insert(dir.clone());
            match dir.parent() {
                Some(parent) if !parent.as_os_str().is_empty() => dir = parent.to_path_buf(),
                _ => break,
            }
        }
        Ok(())
    }

    fn sync_dir(&self, path: &Path) -> io::Result<()> {
        let mut state = self.lock();
        state.check(OpKind::SyncDir)?;
        let in_dir = |p: &PathBuf| State::parent_of(p) == path;
        let live: Vec<(PathBuf, usize)> = state
            .live_names
            .iter()
            .filter(|(p, _)| in_dir(p))
            .map(|(p, id)| (p.clone(), *id))
            .collect();
        state.durable_names.retain(|p, _| !in_dir(p));
        state.durable_names.extend(live);
        Ok(())
    }

    fn list_dir(&self, path: &Path) -> io::Result<Vec<String>> {
        let state = self.lock();
        if !state.dirs.contains(path) {
            return Err(not_found(path));
        }
        Ok(state
            .live_names
            .keys()
            .chain(state.dirs.iter())
            .filter(|p| State::parent_of(p) == path)
            .filter_map(|p| p.file_name()?.to_str().map(str::to_string))
            .collect())
    }

    fn exists(&self, path: &Path) -> bool {
        let state = self.lock();
        state.live_names.contains_key(path) || state.dirs.contains(path)
    }

    fn lock_dir(&self, dir: &Path) -> crate::Result<Box<dyn Any + Send + Sync>> {
        let mut state = self.lock();
        if !state.locked.insert(dir.to_path_buf()) {
            return Err(Error::Locked {
                dir: dir.to_path_buf(),
                pid: std::process::id().to_string(),
            });
        }
        Ok(Box::new(SimLock {
            storage: self.clone(),
            dir: dir.to_path_buf(),
        }))
    }
}

struct SimLock {
    storage: SimStorage,
    dir: PathBuf,
}

impl Drop for SimLock {
    fn drop(&mut self) {
        self.storage.lock().locked.remove(&self.dir);
    }
}
