//! The etcd state machine behind real Raft nodes (in-process cluster): what a
//! member does before proposing, and leases, whose clock only the leader runs.

use bytes::Bytes;
use etcd_core::NodeId;
use etcd_core::error::EtcdError;
use etcd_core::etcd::EtcdState;
use etcd_core::mvcc::{PutRequest, RangeRequest};
use etcd_core::node::{Input, Outcome};
use etcd_core::request::{Request, Response};
use etcd_core::testing::Cluster;

fn put(key: &str, lease: i64) -> Request {
    Request::Put(PutRequest {
        key: Bytes::from(key.to_string()),
        value: Bytes::from_static(b"v"),
        lease,
        ..PutRequest::default()
    })
}

fn answer(c: &mut Cluster<EtcdState>, rid: etcd_core::ReqId) -> Response {
    match c.take_reply(rid) {
        Some(Outcome::Done(r)) => r,
        other => panic!("no answer: {other:?}"),
    }
}

fn grant(c: &mut Cluster<EtcdState>, leader: NodeId, ttl: i64) -> i64 {
    let rid = c.propose(leader, Request::LeaseGrant { id: 0, ttl });
    c.run_ticks(2);
    match answer(c, rid) {
        Response::LeaseGrant { id, .. } => id,
        other => panic!("{other:?}"),
    }
}

fn leases_everywhere(c: &Cluster<EtcdState>) -> Vec<usize> {
    c.members
        .values()
        .map(|m| m.node.state_machine().lessor().len())
        .collect()
}

#[test]
fn invalid_requests_are_answered_without_being_proposed() {
    let mut c: Cluster<EtcdState> = Cluster::new(3);
    let l = c.elect_any();
    let last = c.node(l).raft().log().last_index();
    let rid = c.propose(l, Request::Put(PutRequest::default()));
    c.process(l);
    assert_eq!(answer(&mut c, rid), Response::Error(EtcdError::EmptyKey));
    assert_eq!(
        c.node(l).raft().log().last_index(),
        last,
        "nothing was proposed"
    );
}

#[test]
fn a_lease_granted_with_id_zero_gets_an_id_and_expires_everywhere_with_its_keys() {
    let mut c: Cluster<EtcdState> = Cluster::new(3);
    let l = c.elect_any();
    let id = grant(&mut c, l, 2);
    assert_ne!(id, 0);
    let rid = c.propose(l, put("leased", id));
    c.run_ticks(2);
    assert!(matches!(answer(&mut c, rid), Response::Put(_)));
    assert_eq!(leases_everywhere(&c), vec![1, 1, 1]);
    // 2 s at 100 ms a tick, plus time to propose and apply the revoke.
    c.run_ticks(25);
    assert_eq!(leases_everywhere(&c), vec![0, 0, 0]);
    for m in c.members.values() {
        assert!(
            m.node.state_machine().mvcc().get(b"leased").is_none(),
            "key went with its lease"
        );
    }
}

#[test]
fn keep_alives_keep_a_lease() {
    let mut c: Cluster<EtcdState> = Cluster::new(3);
    let l = c.elect_any();
    let id = grant(&mut c, l, 2);
    for _ in 0..10 {
        c.run_ticks(10);
        let f = NodeId(if l.0 == 1 { 2 } else { 1 });
        // Through a follower: forwarded and applied like any write.
        let rid = c.propose(f, Request::LeaseRenew { id });
        c.run_ticks(1);
        assert!(matches!(
            answer(&mut c, rid),
            Response::LeaseRenew { ttl: 2, .. }
        ));
    }
    assert_eq!(leases_everywhere(&c), vec![1, 1, 1]);
}

#[test]
fn a_new_leader_does_not_hand_out_a_fresh_ttl() {
    let mut c: Cluster<EtcdState> = Cluster::new(3);
    let l = c.elect_any();
    let id = grant(&mut c, l, 10);
    // 7 s pass; checkpoints every 5 s record the remaining TTL.
    c.run_ticks(70);
    let target = NodeId(if l.0 == 3 { 2 } else { 3 });
    c.step(l, Input::TransferLeader(target));
    c.run_ticks(5);
    assert_eq!(c.leader(), Some(target));
    // The new leader resumes from the last checkpoint (about 5 s left at
    // 5.2 s), so the lease ends near 12.7 s: at most one checkpoint interval
    // late. etcd would restart the full 10 s at the transfer (7.5 s) and
    // expire it near 17.5 s.
    c.run_ticks(35); // 11 s: not yet, it is not early either
    assert_eq!(leases_everywhere(&c), vec![1, 1, 1]);
    c.run_ticks(30); // 14 s
    assert_eq!(
        leases_everywhere(&c),
        vec![0, 0, 0],
        "lease {id} outlived its TTL across a leader change"
    );
}

#[test]
fn linearizable_range_reads_the_latest_write_through_a_follower() {
    let mut c: Cluster<EtcdState> = Cluster::new(3);
    let l = c.elect_any();
    let rid = c.propose(l, put("a", 0));
    c.run_ticks(1);
    assert!(matches!(answer(&mut c, rid), Response::Put(_)));
    let f = NodeId(if l.0 == 1 { 2 } else { 1 });
    let rid = c.read(
        f,
        Request::Range(RangeRequest {
            key: Bytes::from_static(b"a"),
            ..RangeRequest::default()
        }),
    );
    c.run_ticks(2);
    match answer(&mut c, rid) {
        Response::Range(rr) => assert_eq!(rr.kvs.len(), 1),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_member_whose_disk_is_full_refuses_writes_until_space_returns() {
    let mut c: Cluster<EtcdState> = Cluster::new(3);
    let l = c.elect_any();
    c.step(l, Input::StorageFailed { no_space: true });
    let last = c.node(l).raft().log().last_index();
    let rid = c.propose(l, put("full", 0));
    c.process(l);
    let refused = c.take_reply(rid);
    assert_eq!(
        refused,
        Some(Outcome::Failed(etcd_core::NodeError::NoSpace)),
        "refused at once"
    );
    assert_eq!(
        etcd_core::NodeError::NoSpace.to_string(),
        "etcdserver: mvcc: database space exceeded"
    );
    assert_eq!(
        c.node(l).raft().log().last_index(),
        last,
        "nothing proposed"
    );
    // Reads still work.
    let rid = c.read(
        l,
        Request::Range(RangeRequest {
            key: Bytes::from_static(b"full"),
            ..RangeRequest::default()
        }),
    );
    c.run_ticks(2);
    assert!(matches!(answer(&mut c, rid), Response::Range(_)));
    c.step(l, Input::StorageRecovered);
    let rid = c.propose(l, put("full", 0));
    c.run_ticks(2);
    assert!(matches!(answer(&mut c, rid), Response::Put(_)));
}
