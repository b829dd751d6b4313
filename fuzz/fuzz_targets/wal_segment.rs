//! The segment reader (batches, torn tails, corruption) on arbitrary bytes,
//! and the replay of what it returns.
#![no_main]

use etcd_core::wal::{WalReplay, scan_segment};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let scan = scan_segment(data, 1);
    let mut replay = WalReplay::default();
    for (_, rec) in scan.records {
        let _ = replay.apply(rec);
    }
});
