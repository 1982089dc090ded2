//! Sequence index header decoder. Input: a mode byte (bit 1: recompute the
//! entries CRC of a sealed index and the header CRC first), then the bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;

use evlog_fuzz::{fix_index_crcs, INDEX_MAGIC, MODE_FIX_CRCS};

fuzz_target!(|data: &[u8]| {
    let Some((&mode, index)) = data.split_first() else {
        return;
    };
    let mut index = index.to_vec();
    if mode & MODE_FIX_CRCS != 0 {
        fix_index_crcs(&mut index);
    }
    if let Ok(first_seq) = evlog::fuzz_api::decode_index_header(&index) {
        assert_eq!(&index[..8], INDEX_MAGIC);
        assert_eq!(
            u64::from_le_bytes(index[16..24].try_into().unwrap()),
            first_seq
        );
        let sealed = u32::from_le_bytes(index[12..16].try_into().unwrap());
        assert!(sealed <= 1, "sealed flag {sealed} accepted");
    }
});
