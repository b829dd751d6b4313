//! Snapshot files and the etcd state machine's snapshot payload.
#![no_main]

use etcd_core::etcd::EtcdState;
use etcd_core::node::StateMachine;
use etcd_core::wal::snapfile;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(s) = snapfile::decode(data) {
        let mut sm = EtcdState::default();
        let _ = sm.restore(&s.data);
    }
    let mut sm = EtcdState::default();
    let _ = sm.restore(data);
});
