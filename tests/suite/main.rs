//! Integration tests of `evlog` as a whole: recovery from damaged files,
//! concurrent appends and reads, a kill -9 crash loop against the real
//! binary, and the command-line contract.
//!
//! Environment:
//! - `EVLOG_CRASH_ROUNDS`: number of kill -9 rounds of the crash loop
//!   (default 50).

mod cli;
mod common;
mod concurrency;
mod crash_loop;
mod recovery;
