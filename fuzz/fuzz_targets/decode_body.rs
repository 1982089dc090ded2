//! Record body decoder: any bytes give an event or an error, never a panic;
//! a decoded event re-encodes to a body that decodes to the same event.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(event) = evlog::fuzz_api::decode_body(data) {
        assert_eq!(event.seq, 1);
        evlog_fuzz::check_round_trip(&event);
    }
});
