//! Framed record decoder (header plausibility, length, CRC, body).
//!
//! Input: a mode byte, then the record. Mode bit 1 recomputes the CRC and
//! bit 2 sets `body_len` to the bytes present, so that mutations reach the
//! checks and the body decoder behind them.
#![no_main]

use libfuzzer_sys::fuzz_target;

use evlog_fuzz::{fix_record_crc, MODE_FIX_CRCS, MODE_FIX_LENGTH, RECORD_HEADER_BYTES};

fuzz_target!(|data: &[u8]| {
    let Some((&mode, record)) = data.split_first() else {
        return;
    };
    let mut record = record.to_vec();
    if mode & MODE_FIX_LENGTH != 0 && record.len() >= RECORD_HEADER_BYTES {
        let body_len = (record.len() - RECORD_HEADER_BYTES) as u32;
        record[..4].copy_from_slice(&body_len.to_le_bytes());
    }
    if mode & MODE_FIX_CRCS != 0 {
        fix_record_crc(&mut record);
    }
    if let Ok(event) = evlog::fuzz_api::decode_record(&record) {
        // A valid record's body is valid on its own, and means the same.
        let seq = u64::from_le_bytes(record[8..16].try_into().unwrap());
        assert_eq!(event.seq, seq, "decoded seq differs from the header");
        let mut body = evlog::fuzz_api::decode_body(&record[RECORD_HEADER_BYTES..])
            .expect("the body of a valid record decodes on its own");
        body.seq = seq;
        assert_eq!(body, event);
        evlog_fuzz::check_round_trip(&event);
    }
});
