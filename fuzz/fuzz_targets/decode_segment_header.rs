//! Segment file header decoder. Input: a mode byte (bit 1: recompute the
//! header CRC first), then the header bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;

use evlog_fuzz::{fix_header_crc, MODE_FIX_CRCS, SEGMENT_MAGIC};

fuzz_target!(|data: &[u8]| {
    let Some((&mode, header)) = data.split_first() else {
        return;
    };
    let mut header = header.to_vec();
    if mode & MODE_FIX_CRCS != 0 {
        fix_header_crc(&mut header);
    }
    if let Ok(first_seq) = evlog::fuzz_api::decode_segment_header(&header) {
        assert_ne!(first_seq, 0, "first_seq 0 accepted");
        assert_eq!(&header[..8], SEGMENT_MAGIC);
        assert_eq!(
            u64::from_le_bytes(header[16..24].try_into().unwrap()),
            first_seq
        );
        // Every field FORMAT.md gives a fixed value is as built from the
        // description (the reserved field at 24..28 is not checked by
        // readers, so it is left out).
        let version = evlog_fuzz::header_version(&header);
        let expected = evlog_fuzz::segment_header(version, first_seq);
        assert_eq!(expected[..24], header[..24]);
    }
});
