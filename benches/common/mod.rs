//! Helpers every benchmark target shares (`mod common;` in each): a
//! directory for its stores and the reference workload's events. Each
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
