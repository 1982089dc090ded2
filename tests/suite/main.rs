//! Integration tests of `evlog` as a whole: recovery from damaged files,
//! concurrent appends and reads, a kill -9 crash loop against the real
//! binary, fault injection and power cuts on a simulated disk, and the
//! command-line contract.
//!
//! Environment:
//! - `EVLOG_CRASH_ROUNDS`: number of kill -9 rounds of the crash loop
//!   (default 100).
//! - `EVLOG_POWER_CUT_SEEDS` / `EVLOG_POWER_CUT_SEED`: how many seeded
//!   power-cut workloads run (default 300) / replay one seed.
//! - `EVLOG_NATS_SERVER_BIN`: the `nats-server` binary of the NATS mirror
//!   tests (default: `nats-server` on the PATH); `EVLOG_NATS_KILL_ROUNDS`:
//!   SIGKILL rounds of the mirror (default 50).

mod archive_file;
mod archive_log;
mod cli;
mod cli_errors;
mod cli_hardening;
mod cli_holds;
mod cli_queries;
mod cli_tail;
mod common;
mod concurrency;
mod crash_loop;
mod disk_full;
mod dump_cli;
mod faults;
mod fixtures;
mod fuzz_regressions;
mod guard;
mod hardening;
#[cfg(feature = "http")]
mod http_api;
#[cfg(feature = "http")]
mod http_browser;
mod idempotent;
mod index_crash;
mod index_damage;
mod index_props;
mod metrics;
mod model;
#[cfg(feature = "nats")]
mod nats_mirror;
#[cfg(feature = "opentelemetry")]
mod otel_context;
mod pipelined;
mod queries;
mod recovery;
mod rules;
mod subscription_edges;
mod subscription_procs;
mod subscription_props;
mod subscriptions;
