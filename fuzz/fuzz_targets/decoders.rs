//! Every decoder the core runs on bytes from a peer, a client or the disk must
//! return an error, never panic, and never allocate beyond what the input
//! justifies: conf changes, members, requests (the register's and etcd's),
//! peer messages, and state machine snapshots. The WAL has its own targets.
#![no_main]

use etcd_core::codec;
use etcd_core::etcd::EtcdState;
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
    let _ = etcd_core::cluster::decode_member(data);
    let _ = etcd_core::request::decode_request(data);
    // Peer messages come off the network.
    if let Ok(msgs) = etcd_core::raft::wire::decode_batch(data) {
        let again = etcd_core::raft::wire::encode_batch(&msgs);
        assert_eq!(etcd_core::raft::wire::decode_batch(&again).as_ref(), Ok(&msgs));
    }
    let mut e = EtcdState::default();
    if e.restore(data).is_ok() {
        // Whatever decoded must encode again and answer reads.
        let again = e.snapshot();
        let mut f = EtcdState::default();
        f.restore(&again).expect("a re-encoded snapshot decodes");
        let _ = e.mvcc().hash_kv(0);
    }
});
