//! Whole-directory open: the input is laid out as segment and index files
//! (see `evlog_fuzz::open_dir` for the format), checked with `evlog::dump`,
//! opened with `Log::open`, read back with `get` and `iter`, closed, and
//! opened again. Errors are fine; panics, hangs and runaway memory are not.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    evlog_fuzz::open_dir::run(data);
});
