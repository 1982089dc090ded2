//! Fault injection on the simulated disk (`evlog::storage::SimStorage`):
//! SQLite-style every-N loops that fail operation N for N = 1, 2, 3, ...
//! until the workload completes, and seeded random power cuts that persist
//! a random part of the unsynced writes. After every fault the disk is
//! "rebooted" and the log reopened, and the promise is checked: every
//! acknowledged event is there and identical, the log is a gap-free prefix
//! of history, and no batch is split.
//!
//! Environment: `EVLOG_POWER_CUT_SEEDS` (default 300) sets how many seeded
//! power-cut workloads run; a failure prints its seed, and
//! `EVLOG_POWER_CUT_SEED=<seed>` replays exactly that one.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use evlog::storage::{Fault, FaultKind, OpKind, SimStorage};
use evlog::{Durability, Event, Log, Options, Payload};
use uuid::Uuid;

use crate::common::Rng;

const DIR: &str = "/sim/data";

/// Small segments and preallocation, so that rolls, seals and the
/// preallocation path all happen within a short workload.
fn options_with(durability: Durability) -> Options {
    Options::default()
        .durability(durability)
        .segment_bytes_max(64 * 1024)
        .preallocate_bytes(16 * 1024)
}

/// What the test appended, and what it was told.
#[derive(Default)]
struct History {
    /// Payload of every event ever attempted, by id.
    payloads: BTreeMap<Uuid, Vec<u8>>,
    /// Ids of each attempted append call, in order (one entry per batch).
    calls: Vec<Vec<Uuid>>,
    /// Acknowledged events: (seq, id).
    acked: Vec<(u64, Uuid)>,
    next_id: u128,
}

impl History {
    fn event(&mut self, rng: &mut Rng) -> Event {
        self.next_id += 1;
        let id = Uuid::from_u128(self.next_id);
        let pad = rng.below(1500) as usize;
        let payload = format!("{}:{}", self.next_id, "x".repeat(pad)).into_bytes();
        self.payloads.insert(id, payload.clone());
        Event::new("fault.test")
            .id(id)
            .timestamp_us(self.next_id as i64)
            .bytes_payload(payload)
    }

    /// Appends `count` events as one call (a batch when count > 1).
    fn append(&mut self, log: &Log, rng: &mut Rng, count: usize) -> evlog::Result<()> {
        let events: Vec<Event> = (0..count).map(|_| self.event(rng)).collect();
        let ids: Vec<Uuid> = (1..=count as u128)
            .map(|k| Uuid::from_u128(self.next_id - count as u128 + k))
            .collect();
        self.calls.push(ids.clone());
        let seqs = if count == 1 {
            let seq = log.append(events.into_iter().next().expect("one event"))?;
            seq..seq + 1
        } else {
            log.append_batch(&events)?
        };
        for (seq, id) in seqs.zip(ids) {
            self.acked.push((seq, id));
        }
        Ok(())
    }

    /// Checks the promise on a reopened log.
    fn check(&self, log: &Log, context: &str) {
        self.check_with(log, context, true)
    }

    /// Checks a reopened log; `acked_must_survive` is false for durability
    /// settings that do not promise acknowledged events survive power loss
    /// (the rest of the promise still holds).
    fn check_with(&self, log: &Log, context: &str, acked_must_survive: bool) {
        let last = log.last_seq().unwrap_or(0);
        let mut present = BTreeMap::new();
        let mut expected_seq = 1;
        for event in log
            .iter(..)
            .unwrap_or_else(|e| panic!("{context}: iter: {e}"))
        {
            let event =
                event.unwrap_or_else(|e| panic!("{context}: a corrupt event was returned: {e}"));
            assert_eq!(event.seq, expected_seq, "{context}: gap or reorder");
            expected_seq += 1;
            let Payload::Bytes(bytes) = &event.payload else {
                panic!("{context}: payload kind changed")
            };
            assert_eq!(
                Some(bytes),
                self.payloads.get(&event.id),
                "{context}: seq {} has content that was never appended",
                event.seq
            );
            assert!(
                present.insert(event.id, event.seq).is_none(),
                "{context}: duplicate"
            );
        }
        assert_eq!(
            expected_seq - 1,
            last,
            "{context}: iter and last_seq disagree"
        );
        for (seq, id) in &self.acked {
            if !acked_must_survive && *seq > last {
                continue;
            }
            assert_eq!(
                present.get(id),
                Some(seq),
                "{context}: acknowledged event seq {seq} lost or moved"
            );
        }
        for call in &self.calls {
            let found = call.iter().filter(|id| present.contains_key(id)).count();
            assert!(
                found == 0 || found == call.len(),
                "{context}: a batch of {} survived with {found} events",
                call.len()
            );
        }
    }
}

fn open(disk: &SimStorage) -> evlog::Result<Log> {
    open_with(disk, Durability::Always)
}

fn open_with(disk: &SimStorage, durability: Durability) -> evlog::Result<Log> {
    Log::open_with_storage(
        Path::new(DIR),
        options_with(durability),
        Arc::new(disk.clone()),
    )
}

/// A fixed workload: single appends, batches, rolls, a close and reopen.
/// Stops at the first error, as an application would.
fn fixed_workload(disk: &SimStorage, history: &mut History) -> evlog::Result<()> {
    let mut rng = Rng::new(1);
    let log = open(disk)?;
    for i in 0..40 {
        let count = if i % 7 == 3 { 12 } else { 1 };
        history.append(&log, &mut rng, count)?;
    }
    log.close()?;
    let log = open(disk)?;
    for _ in 0..10 {
        history.append(&log, &mut rng, 1)?;
    }
    history.append(&log, &mut rng, 20)?;
    log.close()
}

fn reboot_and_check(disk: &SimStorage, history: &History, context: &str) {
    for seed in [None, Some(7), Some(8)] {
        let rebooted = disk.crash(seed);
        let log = open(&rebooted)
            .unwrap_or_else(|e| panic!("{context}, reboot {seed:?}: reopen failed: {e}"));
        history.check(&log, &format!("{context}, reboot {seed:?}"));
        // The recovered log must take new appends.
        let mut more = History {
            next_id: 1 << 100,
            ..History::default()
        };
        more.append(&log, &mut Rng::new(3), 1)
            .unwrap_or_else(|e| panic!("{context}, reboot {seed:?}: append after recovery: {e}"));
    }
}

/// Fails operation N (of any kind) for every N until the workload runs to
/// completion; after each, reopens on the same disk (a process restart) and
/// on rebooted images (power loss), and checks the promise.
fn every_n(kind: FaultKind) -> u64 {
    let mut n = 1;
    loop {
        let disk = SimStorage::new();
        disk.set_fault(Some(Fault {
            op: OpKind::Any,
            nth: n,
            kind,
            sticky: false,
        }));
        let mut history = History::default();
        let result = fixed_workload(&disk, &mut history);
        if !disk.fault_fired() {
            result.unwrap_or_else(|e| panic!("{kind:?}: fault-free run failed: {e}"));
            return n - 1;
        }
        let context = format!("{kind:?} at operation {n}");
        if kind != FaultKind::PowerCut {
            disk.set_fault(None);
            let log = open(&disk).unwrap_or_else(|e| panic!("{context}: restart failed: {e}"));
            history.check(&log, &format!("{context}, restart"));
        }
        reboot_and_check(&disk, &history, &context);
        n += 1;
    }
}

// Failing any single I/O operation with EIO, at every position in the
// workload, loses no acknowledged event and leaves a consistent log.
#[test]
fn faults_every_n_eio() {
    let covered = every_n(FaultKind::Io);
    assert!(covered > 100, "the workload only did {covered} operations");
    println!("faults_every_n_eio: N = 1..={covered} covered");
}

// The same with ENOSPC (disk full).
#[test]
fn faults_every_n_enospc() {
    let covered = every_n(FaultKind::NoSpace);
    assert!(covered > 100);
    println!("faults_every_n_enospc: N = 1..={covered} covered");
}

// The same with a write that stores only half its bytes.
#[test]
fn faults_every_n_torn_write() {
    let covered = every_n(FaultKind::TornWrite);
    assert!(covered > 100);
    println!("faults_every_n_torn_write: N = 1..={covered} covered");
}

// A power cut at every operation: only what was synced (plus a random part
// of the rest) survives, and every acknowledged event is in it.
#[test]
fn faults_every_n_power_cut() {
    let covered = every_n(FaultKind::PowerCut);
    assert!(covered > 100);
    println!("faults_every_n_power_cut: N = 1..={covered} covered");
}

// A failed sync poisons the log: later calls fail with Poisoned until the
// log is reopened, and the reopened log holds every acknowledged event.
#[test]
fn faults_failed_fsync_poisons() {
    let disk = SimStorage::new();
    let log = open(&disk).expect("open");
    let mut history = History::default();
    let mut rng = Rng::new(5);
    history.append(&log, &mut rng, 1).expect("first append");
    disk.set_fault(Some(Fault {
        op: OpKind::Sync,
        nth: 1,
        kind: FaultKind::Io,
        sticky: false,
    }));
    assert!(history.append(&log, &mut rng, 1).is_err());
    for _ in 0..3 {
        match history.append(&log, &mut rng, 1) {
            // The poisoning error keeps the failed fsync as its typed source.
            Err(evlog::Error::Poisoned { source }) => assert!(
                matches!(&*source, evlog::Error::Io { source, .. } if source.raw_os_error() == Some(5)),
                "{source:?}"
            ),
            other => panic!("expected Poisoned, got {other:?}"),
        }
    }
    assert!(matches!(log.get(1), Err(evlog::Error::Poisoned { .. })));
    drop(log);
    disk.set_fault(None);
    let log = open(&disk).expect("reopen");
    history.check(&log, "after poisoning");
}

// A full disk fails the append with an error, leaves no partial record
// visible, and the log works again once space is back.
#[test]
fn faults_disk_full_then_space_returns() {
    let disk = SimStorage::new();
    let log = open(&disk).expect("open");
    let mut history = History::default();
    let mut rng = Rng::new(6);
    for _ in 0..5 {
        history.append(&log, &mut rng, 1).expect("append");
    }
    disk.set_fault(Some(Fault {
        op: OpKind::Write,
        nth: 1,
        kind: FaultKind::NoSpace,
        sticky: true,
    }));
    for _ in 0..3 {
        let error = history.append(&log, &mut rng, 3).expect_err("disk is full");
        // A typed error that says "disk full" and names the file.
        assert!(error.is_disk_full(), "{error:?}");
        assert!(
            matches!(&error, evlog::Error::DiskFull { path, .. } if path.starts_with("/sim/data")),
            "{error:?}"
        );
    }
    assert_eq!(log.last_seq(), Some(5));
    disk.set_fault(None);
    history
        .append(&log, &mut rng, 4)
        .expect("append after space returns");
    assert_eq!(log.last_seq(), Some(9));
    history.check(&log, "live");
    drop(log);
    let log = open(&disk).expect("reopen");
    history.check(&log, "reopened");
}

/// One seeded workload with a power cut at a random operation.
fn power_cut_round(seed: u64) {
    power_cut_round_with(seed, Durability::Always)
}

fn power_cut_round_with(seed: u64, durability: Durability) {
    let mut rng = Rng::new(seed);
    let disk = SimStorage::new();
    // Measure nothing: pick the cut point in a range the workload reaches.
    let cut_at = 1 + rng.below(600);
    disk.set_fault(Some(Fault {
        op: OpKind::Any,
        nth: cut_at,
        kind: FaultKind::PowerCut,
        sticky: false,
    }));
    let mut history = History::default();
    let _ = (|| -> evlog::Result<()> {
        let mut log = open_with(&disk, durability)?;
        for _ in 0..(20 + rng.below(100)) {
            match rng.below(10) {
                0 => {
                    log.close()?;
                    log = open_with(&disk, durability)?;
                }
                1 | 2 => {
                    let count = 2 + rng.below(30) as usize;
                    history.append(&log, &mut rng, count)?
                }
                _ => history.append(&log, &mut rng, 1)?,
            }
        }
        log.close()
    })();
    let rebooted = disk.crash(Some(seed));
    let context = format!(
        "{durability:?} power-cut seed {seed} (cut at operation {cut_at}; replay with EVLOG_POWER_CUT_SEED={seed})"
    );
    let log = open_with(&rebooted, durability)
        .unwrap_or_else(|e| panic!("{context}: reopen failed: {e}"));
    history.check_with(&log, &context, durability == Durability::Always);
}

// Seeded random workloads cut at a random operation, with a random part of
// the unsynced writes persisted: the recovered log always keeps the promise.
#[test]
fn faults_seeded_power_cuts() {
    if let Some(seed) = std::env::var("EVLOG_POWER_CUT_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
    {
        power_cut_round(seed);
        return;
    }
    let seeds: u64 = std::env::var("EVLOG_POWER_CUT_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(300);
    for seed in 0..seeds {
        power_cut_round(seed);
    }
    println!("faults_seeded_power_cuts: {seeds} seeded power cuts, 0 acknowledged events lost");
}

// Under `Interval` and `OsBuffered`, several unsynced commit groups can be
// in flight, and a power cut can persist a later one while tearing an
// earlier one. Recovery must cut the tail at the hole (records say what was
// durable when they were written), not refuse to open; the log is still a
// gap-free prefix with whole batches.
#[test]
fn faults_seeded_power_cuts_without_fsync_per_append() {
    for seed in 0..150 {
        power_cut_round_with(
            seed,
            Durability::Interval(std::time::Duration::from_secs(3600)),
        );
        power_cut_round_with(seed, Durability::OsBuffered);
    }
}

// Under `Always` the syncer thread answers appends while the writer writes
// the next groups. With several threads keeping batches in flight, an
// fsync that fails (the Nth) and then a power cut that keeps a random part
// of the unsynced writes: every event whose `wait` returned `Ok` is there,
// with its own id, at the position it was given, and so is every event a
// reader could see. An answer sent, or a group made readable, before its
// fsync returned would lose some of them.
#[test]
fn faults_failed_fsync_under_pipelined_appends_keeps_every_acknowledged_event() {
    for seed in 0..12u64 {
        let disk = SimStorage::new();
        // Batches over 64 KiB, which the writer hands to the syncer thread;
        // segments of 1 MiB, so that rolls come between them.
        let options = options_with(Durability::Always).segment_bytes_max(1024 * 1024);
        let open = |disk: &SimStorage| {
            Log::open_with_storage(Path::new(DIR), options.clone(), Arc::new(disk.clone()))
        };
        let log = Arc::new(open(&disk).expect("open"));
        disk.set_fault(Some(Fault {
            op: OpKind::Sync,
            nth: 3 + seed % 5,
            kind: FaultKind::Io,
            sticky: false,
        }));
        // The first error anywhere stops every thread (a failed fsync
        // poisons the log; a failed directory sync during a roll does not).
        let failed = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let threads: Vec<_> = (0..3u64)
            .map(|thread| {
                let log = Arc::clone(&log);
                let failed = Arc::clone(&failed);
                std::thread::spawn(move || {
                    let mut rng = Rng::new(seed * 10 + thread);
                    let mut acked = Vec::new();
                    let mut in_flight = std::collections::VecDeque::new();
                    while !failed.load(std::sync::atomic::Ordering::SeqCst) {
                        let count = 14 + rng.below(8) as usize;
                        let ids: Vec<Uuid> = (0..count)
                            .map(|_| Uuid::from_u128(u128::from(rng.next_u64()) << 1 | 1))
                            .collect();
                        let events: Vec<Event> = ids
                            .iter()
                            .map(|&id| {
                                Event::new("sync.pipelined")
                                    .id(id)
                                    .payload(Payload::Bytes(rng.bytes(5_000)))
                            })
                            .collect();
                        let Ok(pending) = log.submit_batch(&events) else {
                            failed.store(true, std::sync::atomic::Ordering::SeqCst);
                            break;
                        };
                        in_flight.push_back((pending, ids));
                        if in_flight.len() > 2 {
                            let (pending, ids) = in_flight.pop_front().expect("in flight");
                            match pending.wait() {
                                Ok(range) => acked.push((range, ids)),
                                Err(_) => {
                                    failed.store(true, std::sync::atomic::Ordering::SeqCst);
                                    break;
                                }
                            }
                        }
                    }
                    for (pending, ids) in in_flight {
                        if let Ok(range) = pending.wait() {
                            acked.push((range, ids));
                        }
                    }
                    acked
                })
            })
            .collect();
        // A reader polling the readable end meanwhile: under `Always` no
        // event becomes readable before it is durable, so whatever it saw
        // survives the power cut.
        let reader = {
            let (log, failed) = (Arc::clone(&log), Arc::clone(&failed));
            std::thread::spawn(move || {
                let mut seen = 0;
                while !failed.load(std::sync::atomic::Ordering::SeqCst) {
                    seen = seen.max(log.last_seq().unwrap_or(0));
                    std::hint::spin_loop();
                }
                seen
            })
        };
        let acked: Vec<_> = threads
            .into_iter()
            .flat_map(|thread| thread.join().expect("appender"))
            .collect();
        failed.store(true, std::sync::atomic::Ordering::SeqCst);
        let seen = reader.join().expect("reader");
        assert!(
            disk.fault_fired(),
            "seed {seed}: the fsync fault never fired"
        );
        assert!(!acked.is_empty(), "seed {seed}: nothing acknowledged");
        let reopened = open(&disk.crash(Some(seed))).expect("reopen after the power cut");
        assert!(
            reopened.last_seq().unwrap_or(0) >= seen,
            "seed {seed}: a reader saw seq {seen}, gone after the power cut (last {:?})",
            reopened.last_seq()
        );
        for (range, ids) in &acked {
            for (seq, id) in range.clone().zip(ids) {
                let event = reopened
                    .get(seq)
                    .unwrap_or_else(|e| panic!("seed {seed}: acknowledged seq {seq} lost: {e}"));
                assert_eq!(event.id, *id, "seed {seed}: seq {seq}");
            }
        }
    }
}
