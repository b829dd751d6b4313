//! Every decoder the core runs on bytes from a peer, a client or the disk must
//! return an error, never panic, and never allocate beyond what the input
//! justifies. (The WAL record and segment decoders join this with the storage work.)
#![no_main]

use etcd_core::codec;
use etcd_core::node::StateMachine;
use etcd_core::register::Register;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = codec::decode_conf_change(data);
    let _ = Register::decode_request(data);
    let mut r = Register::default();
    let before = r.clone();
    if r.restore(data).is_err() {
        assert_eq!(r, before, "a failed restore must leave the state unchanged");
    }
});
