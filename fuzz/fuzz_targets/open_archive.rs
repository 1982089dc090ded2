//! Archive file reader: any bytes give an error or readable events, never
//! a panic, and never an allocation beyond what the frame index may
//! declare (16 MiB a frame).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = evlog::fuzz_api::open_archive(data);
});
