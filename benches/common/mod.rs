//! Helpers every benchmark target shares (`mod common;` in each): a
//! directory for its stores, the reference workload's events, and the
//! CPU clocks that tell what ran beside a measurement. Each
//! bench is its own crate and uses a part of this, hence the allowance.
#![allow(dead_code)]

use std::path::Path;

use evlog::workload::{Workload, WorkloadConfig};
use evlog::Event;

/// A fresh directory under `target/bench-tmp` (the repository's disk, not
/// a tmpfs `/tmp`), named after the bench, removed when dropped.
pub fn bench_root(prefix: &str) -> tempfile::TempDir {
    let parent = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench-tmp");
    std::fs::create_dir_all(&parent).expect("create target/bench-tmp");
    tempfile::Builder::new()
        .prefix(prefix)
        .tempdir_in(parent)
        .expect("create bench dir")
}

/// The first `n` events of W1 (seed 42) as appendable events.
pub fn workload_events(n: u64) -> Vec<Event> {
    Workload::new(WorkloadConfig::new(n))
        .map(|g| g.event())
        .collect()
}

/// CPU time of the whole process so far (every thread, user and system).
pub fn process_cpu_seconds() -> f64 {
    process_usage().0
}

/// The whole process so far: CPU seconds (every thread, user and system)
/// and minor page faults (pages the kernel had to map, zeroed or from its
/// cache, without reading the disk).
pub fn process_usage() -> (f64, u64) {
    // SAFETY: `getrusage` writes one `rusage` into the zeroed value we
    // own, and reads nothing else.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        assert_eq!(libc::getrusage(libc::RUSAGE_SELF, &mut usage), 0);
        usage
    };
    let seconds = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    (
        seconds(usage.ru_utime) + seconds(usage.ru_stime),
        u64::try_from(usage.ru_minflt).unwrap_or(0),
    )
}

/// CPU time of the whole machine from `/proc/stat`'s `cpu` line, summed
/// over its CPUs, in seconds: `(busy, steal)`, busy being every process's
/// and the kernel's (user, nice, system, irq, softirq), steal what the
/// hypervisor gave to other guests while this machine's CPUs wanted to
/// run. `None` where there is no `/proc/stat` or it has no steal figure.
pub fn machine_cpu_seconds() -> Option<(f64, f64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().find(|line| line.starts_with("cpu "))?;
    let ticks: Vec<f64> = line
        .split_whitespace()
        .skip(1)
        .map(|field| field.parse().ok())
        .collect::<Option<_>>()?;
    // user nice system idle iowait irq softirq steal ...
    let [user, nice, system, _idle, _iowait, irq, softirq, steal, ..] = ticks[..] else {
        return None;
    };
    // SAFETY: `sysconf` reads its integer argument only.
    let ticks_per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    (ticks_per_second > 0).then(|| {
        let per_second = ticks_per_second as f64;
        (
            (user + nice + system + irq + softirq) / per_second,
            steal / per_second,
        )
    })
}
