//! The one place where on-disk integers are read and written: all of them
//! little-endian. Readers return `None` past the end of the slice instead of
//! panicking, so a short or damaged file can never crash a decoder.

pub(crate) fn put_u32(out: &mut Vec<u8>, value: u32) {
    out.extend_from_slice(&value.to_le_bytes());
}

pub(crate) fn put_u64(out: &mut Vec<u8>, value: u64) {
    out.extend_from_slice(&value.to_le_bytes());
}

/// Overwrites the 4 bytes at `at` (which the caller allocated).
pub(crate) fn set_u32_at(bytes: &mut [u8], at: usize, value: u32) {
    bytes[at..at + 4].copy_from_slice(&value.to_le_bytes());
}

/// Overwrites the 8 bytes at `at` (which the caller allocated).
pub(crate) fn set_u64_at(bytes: &mut [u8], at: usize, value: u64) {
    bytes[at..at + 8].copy_from_slice(&value.to_le_bytes());
}

pub(crate) fn u32_at(bytes: &[u8], at: usize) -> Option<u32> {
    let end = at.checked_add(4)?;
    let field: [u8; 4] = bytes.get(at..end)?.try_into().ok()?;
    Some(u32::from_le_bytes(field))
}

pub(crate) fn u64_at(bytes: &[u8], at: usize) -> Option<u64> {
    let end = at.checked_add(8)?;
    let field: [u8; 8] = bytes.get(at..end)?.try_into().ok()?;
    Some(u64::from_le_bytes(field))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codec_reads_what_it_writes_and_refuses_short_input() {
        let mut out = Vec::new();
        put_u32(&mut out, 0xDEAD_BEEF);
        put_u64(&mut out, u64::MAX - 1);
        assert_eq!(u32_at(&out, 0), Some(0xDEAD_BEEF));
        assert_eq!(u64_at(&out, 4), Some(u64::MAX - 1));
        assert_eq!(u64_at(&out, 5), None);
        assert_eq!(u32_at(&out, usize::MAX - 1), None);
        set_u32_at(&mut out, 0, 7);
        set_u64_at(&mut out, 4, 9);
        assert_eq!((u32_at(&out, 0), u64_at(&out, 4)), (Some(7), Some(9)));
    }
}
