//! The WAL frame decoder at every aligned offset of arbitrary bytes: errors,
//! never panics, never allocates beyond the input.
#![no_main]

use etcd_core::wal::{FRAME_ALIGN, decode_frame};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut off = 0;
    while off <= data.len() {
        let _ = decode_frame(data, 1, off);
        off += FRAME_ALIGN;
    }
});
