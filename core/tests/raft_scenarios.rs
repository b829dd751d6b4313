//! Protocol scenarios on the in-process cluster: each test sets up a situation
//! from the dissertation (or from an etcd bug report) and checks the outcome.

use bytes::Bytes;
use etcd_core::codec;
use etcd_core::node::{Input, NodeError, Outcome};
use etcd_core::raft::{ConfChange, ConfChangeKind, EntryKind, MsgBody, Role};
use etcd_core::register::{Register, RegisterRequest, RegisterResponse};
use etcd_core::testing::{Cluster, test_config};
use etcd_core::{LogIndex, NodeId, Term};

fn put(k: &str, v: &str) -> RegisterRequest {
    RegisterRequest::Put {
        key: Bytes::copy_from_slice(k.as_bytes()),
        value: Bytes::copy_from_slice(v.as_bytes()),
    }
}

fn get(k: &str) -> RegisterRequest {
    RegisterRequest::Get {
        key: Bytes::copy_from_slice(k.as_bytes()),
    }
}

fn value(c: &Cluster<Register>, id: u64, k: &str) -> Option<Bytes> {
    c.node(NodeId(id))
        .state_machine()
        .get(k.as_bytes())
        .cloned()
}

#[test]
fn single_member_elects_itself_and_commits() {
    let mut c: Cluster<Register> = Cluster::new(1);
    let l = c.elect_any();
    assert_eq!(l, NodeId(1));
    let rid = c.propose(l, put("a", "1"));
    c.stabilize();
    assert_eq!(
        c.take_reply(rid),
        Some(Outcome::Done(RegisterResponse::Put))
    );
    assert_eq!(value(&c, 1, "a").as_deref(), Some(&b"1"[..]));
}

#[test]
fn three_members_replicate_and_apply_the_same() {
    let mut c: Cluster<Register> = Cluster::new(3);
    let l = c.elect_any();
    let mut rids = Vec::new();
    for i in 0..50 {
        rids.push(c.propose(l, put(&format!("k{}", i % 7), &i.to_string())));
        if i % 10 == 0 {
            c.stabilize();
        }
    }
    c.run_ticks(2);
    for rid in rids {
        assert_eq!(
            c.take_reply(rid),
            Some(Outcome::Done(RegisterResponse::Put))
        );
    }
    let d1 = c.node(NodeId(1)).state_machine().digest();
    for id in 2..=3 {
        assert_eq!(c.node(NodeId(id)).state_machine().digest(), d1);
        assert_eq!(
            c.node(NodeId(id)).raft().log().applied(),
            c.node(NodeId(1)).raft().log().applied()
        );
    }
}

#[test]
fn follower_forwards_proposals_and_answers_after_applying() {
    let mut c: Cluster<Register> = Cluster::new(3);
    let l = c.elect_any();
    let f = NodeId(if l.0 == 1 { 2 } else { 1 });
    let rid = c.propose(f, put("x", "y"));
    c.stabilize();
    c.run_ticks(1);
    assert_eq!(
        c.take_reply(rid),
        Some(Outcome::Done(RegisterResponse::Put))
    );
    assert_eq!(value(&c, f.0, "x").as_deref(), Some(&b"y"[..]));
}

#[test]
fn linearizable_read_on_follower_sees_the_latest_write() {
    let mut c: Cluster<Register> = Cluster::new(3);
    let l = c.elect_any();
    let f = NodeId(if l.0 == 3 { 2 } else { 3 });
    c.propose(l, put("r", "1"));
    c.stabilize();
    // Write again, but keep the follower from hearing about it through
    // anything but the read-index round.
    c.propose(l, put("r", "2"));
    c.stabilize();
    let rid = c.read(f, get("r"));
    c.stabilize();
    c.run_ticks(2);
    assert_eq!(
        c.take_reply(rid),
        Some(Outcome::Done(RegisterResponse::Get(Some(
            Bytes::from_static(b"2")
        ))))
    );
}

#[test]
fn many_reads_share_one_read_index_round() {
    let mut c: Cluster<Register> = Cluster::new(3);
    let l = c.elect_any();
    c.run_ticks(1);
    let before = c.delivered;
    let rids: Vec<_> = (0..100).map(|_| c.read(l, get("a"))).collect();
    c.stabilize();
    // One heartbeat round to two followers and their answers.
    assert!(
        c.delivered - before <= 4,
        "delivered {} messages",
        c.delivered - before
    );
    for rid in rids {
        assert_eq!(
            c.take_reply(rid),
            Some(Outcome::Done(RegisterResponse::Get(None)))
        );
    }
}

#[test]
fn isolated_leader_steps_down_with_check_quorum_and_cluster_moves_on() {
    let mut c: Cluster<Register> = Cluster::new(3);
    let l = c.elect_any();
    let old_term = c.node(l).raft().term();
    c.isolate(l);
    c.run_ticks(40);
    assert_ne!(
        c.node(l).raft().role(),
        Role::Leader,
        "isolated leader should step down"
    );
    let leaders: Vec<_> = c.leaders();
    assert_eq!(leaders.len(), 1);
    assert_ne!(leaders[0], l);
    assert!(c.node(leaders[0]).raft().term() > old_term);
}

#[test]
fn prevote_keeps_a_returning_partitioned_node_from_disrupting_the_leader() {
    let mut c: Cluster<Register> = Cluster::new(3);
    let l = c.elect_any();
    let term = c.node(l).raft().term();
    let f = NodeId(if l.0 == 1 { 2 } else { 1 });
    c.isolate(f);
    c.run_ticks(100);
    // Pre-vote: the isolated node never raised its term.
    assert_eq!(c.node(f).raft().term(), term);
    c.heal();
    c.run_ticks(20);
    assert_eq!(c.leader(), Some(l));
    assert_eq!(c.node(l).raft().term(), term);
}

#[test]
fn without_prevote_a_returning_node_does_disrupt() {
    // The counterpart: shows the test above can fail.
    let mut c: Cluster<Register> = Cluster::with_config(3, |id, seed| {
        let mut cfg = test_config(id, seed);
        cfg.raft.pre_vote = false;
        cfg.raft.check_quorum = false;
        cfg
    });
    let l = c.elect_any();
    let term = c.node(l).raft().term();
    let f = NodeId(if l.0 == 1 { 2 } else { 1 });
    c.isolate(f);
    c.run_ticks(100);
    assert!(c.node(f).raft().term() > term);
    c.heal();
    c.run_ticks(20);
    let nl = c.elect_any();
    assert!(c.node(nl).raft().term() > term);
}

#[test]
fn leadership_transfer_hands_over_to_the_target() {
    let mut c: Cluster<Register> = Cluster::new(3);
    let l = c.elect_any();
    let target = NodeId(if l.0 == 3 { 1 } else { 3 });
    for i in 0..10 {
        c.propose(l, put("t", &i.to_string()));
    }
    c.step(l, Input::TransferLeader(target));
    c.stabilize();
    c.run_ticks(3);
    assert_eq!(c.leader(), Some(target));
    assert_eq!(c.leaders().len(), 1);
}

#[test]
fn proposals_during_a_transfer_are_refused() {
    let mut c: Cluster<Register> = Cluster::new(3);
    let l = c.elect_any();
    let target = NodeId(if l.0 == 3 { 1 } else { 3 });
    // Keep the target from catching up so the transfer stays pending.
    c.cut.insert((l, target));
    c.propose(l, put("a", "1"));
    c.stabilize();
    c.step(l, Input::TransferLeader(target));
    let rid = c.propose(l, put("b", "2"));
    c.process(l);
    assert!(matches!(
        c.take_reply(rid),
        Some(Outcome::Failed(NodeError::Rejected(_)))
    ));
    // After an election timeout the transfer is abandoned.
    c.run_ticks(12);
    assert_eq!(c.leader(), Some(l));
    let rid = c.propose(l, put("b", "2"));
    c.run_ticks(2);
    assert_eq!(
        c.take_reply(rid),
        Some(Outcome::Done(RegisterResponse::Put))
    );
}

#[test]
fn append_acks_wait_for_the_follower_fsync() {
    let mut c: Cluster<Register> = Cluster::new(3);
    let l = c.elect_any();
    c.auto_persist = false;
    c.propose(l, put("a", "1"));
    c.process(l);
    // The leader's append leaves before its own write is durable.
    assert!(
        c.net
            .iter()
            .any(|m| matches!(m.body, MsgBody::Append { ref entries, .. } if !entries.is_empty()))
    );
    c.deliver_queued();
    c.process_all();
    assert!(
        !c.net
            .iter()
            .any(|m| matches!(m.body, MsgBody::AppendResp { reject: false, .. })),
        "a follower acknowledged an append before persisting it"
    );
    let f = NodeId(if l.0 == 1 { 2 } else { 1 });
    c.persist(f);
    c.process(f);
    assert!(
        c.net
            .iter()
            .any(|m| m.from == f && matches!(m.body, MsgBody::AppendResp { reject: false, .. }))
    );
}

#[test]
fn votes_wait_for_the_vote_to_be_durable() {
    let mut c: Cluster<Register> = Cluster::with_config(3, |id, seed| {
        let mut cfg = test_config(id, seed);
        cfg.raft.pre_vote = false;
        cfg.raft.check_quorum = false; // no leader lease: voters answer at once
        cfg
    });
    c.elect_any();
    c.auto_persist = false;
    // Let node 3 campaign with the leader gone.
    let l = c.leader().unwrap();
    let cand = NodeId(if l.0 == 3 { 2 } else { 3 });
    c.isolate(l);
    c.members.get_mut(&cand).unwrap().node.campaign();
    c.process(cand);
    c.persist(cand);
    c.process(cand);
    c.deliver_queued();
    c.process_all();
    assert!(!c.net.iter().any(|m| matches!(
        m.body,
        MsgBody::VoteResp {
            pre: false,
            reject: false,
            ..
        }
    )));
    let voter = c
        .members
        .keys()
        .copied()
        .find(|&id| id != l && id != cand)
        .unwrap();
    c.persist(voter);
    c.process(voter);
    assert!(c.net.iter().any(|m| m.from == voter
        && matches!(
            m.body,
            MsgBody::VoteResp {
                pre: false,
                reject: false,
                ..
            }
        )));
}

#[test]
fn restart_recovers_log_and_state() {
    let mut c: Cluster<Register> = Cluster::new(3);
    let l = c.elect_any();
    for i in 0..20 {
        c.propose(l, put("k", &i.to_string()));
    }
    c.run_ticks(2);
    let digest = c.node(l).state_machine().digest();
    for id in 1..=3 {
        c.restart(NodeId(id));
    }
    c.elect_any();
    c.run_ticks(3);
    for id in 1..=3 {
        assert_eq!(
            c.node(NodeId(id)).state_machine().digest(),
            digest,
            "node {id}"
        );
    }
}

#[test]
fn far_behind_follower_catches_up_by_snapshot() {
    let mut c: Cluster<Register> = Cluster::with_config(3, |id, seed| {
        let mut cfg = test_config(id, seed);
        cfg.snapshot_interval_entries = 20;
        cfg.snapshot_catchup_entries = 5;
        cfg
    });
    let l = c.elect_any();
    let f = NodeId(if l.0 == 1 { 2 } else { 1 });
    c.isolate(f);
    for i in 0..100 {
        c.propose(l, put(&format!("k{}", i % 13), &i.to_string()));
        c.stabilize();
    }
    c.run_ticks(1);
    assert!(
        c.node(l).raft().log().first_index() > LogIndex(10),
        "leader compacted its log"
    );
    c.heal();
    c.run_ticks(30);
    assert_eq!(
        c.node(f).state_machine().digest(),
        c.node(l).state_machine().digest()
    );
    assert!(c.node(f).raft().snapshot().is_some());
    // And it survives a restart from what it persisted.
    c.restart(f);
    c.run_ticks(5);
    assert_eq!(
        c.node(f).state_machine().digest(),
        c.node(l).state_machine().digest()
    );
}

#[test]
fn fast_backtracking_skips_a_divergent_tail_in_few_round_trips() {
    let mut c: Cluster<Register> = Cluster::new(3);
    let l = c.elect_any();
    let others: Vec<NodeId> = c.members.keys().copied().filter(|&id| id != l).collect();
    // The old leader appends 200 entries nobody else sees.
    c.isolate(l);
    for i in 0..200 {
        c.propose(l, put("div", &i.to_string()));
        c.process(l);
    }
    c.net.clear();
    // The others elect a new leader and write a little.
    c.run_ticks(40);
    let nl = c.leader().unwrap();
    assert!(others.contains(&nl));
    c.propose(nl, put("new", "1"));
    c.stabilize();
    c.heal();
    let before = c.delivered;
    c.run_ticks(5);
    assert_eq!(
        c.node(l).state_machine().digest(),
        c.node(nl).state_machine().digest()
    );
    // Naive backtracking would need ~200 rejections; with hints only a handful
    // of messages beyond heartbeats flow.
    assert!(
        c.delivered - before < 60,
        "took {} messages",
        c.delivered - before
    );
}

fn conf_change(kind: ConfChangeKind, node: u64) -> ConfChange {
    ConfChange {
        id: 0,
        kind,
        node: NodeId(node),
        context: Bytes::new(),
    }
}

#[test]
fn learner_joins_catches_up_is_promoted_and_a_member_is_removed() {
    let mut c: Cluster<Register> = Cluster::new(3);
    let l = c.elect_any();
    for i in 0..30 {
        c.propose(l, put("m", &i.to_string()));
    }
    c.stabilize();
    c.add_empty_member(NodeId(4));
    let rid = c.next_req_id();
    c.step(
        l,
        Input::ConfChange(rid, conf_change(ConfChangeKind::AddLearner, 4)),
    );
    c.run_ticks(3);
    match c.take_reply(rid) {
        Some(Outcome::ConfApplied(conf)) => assert!(conf.learners.contains(&NodeId(4))),
        other => panic!("unexpected {other:?}"),
    }
    c.run_ticks(5);
    assert_eq!(
        c.node(NodeId(4)).state_machine().digest(),
        c.node(l).state_machine().digest()
    );
    // A learner never campaigns, however long it waits alone.
    c.isolate(NodeId(4));
    c.run_ticks(50);
    assert_eq!(c.node(NodeId(4)).raft().role(), Role::Follower);
    assert_eq!(c.node(NodeId(4)).raft().term(), c.node(l).raft().term());
    c.heal();
    c.run_ticks(5);
    let rid = c.next_req_id();
    c.step(
        l,
        Input::ConfChange(rid, conf_change(ConfChangeKind::AddVoter, 4)),
    );
    c.run_ticks(3);
    match c.take_reply(rid) {
        Some(Outcome::ConfApplied(conf)) => assert_eq!(conf.voters.len(), 4),
        other => panic!("unexpected {other:?}"),
    }
    // Remove the leader itself: the others carry on.
    let rid = c.next_req_id();
    c.step(
        l,
        Input::ConfChange(rid, conf_change(ConfChangeKind::Remove, l.0)),
    );
    c.run_ticks(30);
    let nl = c.elect_any();
    assert_ne!(nl, l);
    assert!(!c.node(nl).raft().conf().contains(l));
    let rid = c.propose(nl, put("after", "removal"));
    c.run_ticks(3);
    assert_eq!(
        c.take_reply(rid),
        Some(Outcome::Done(RegisterResponse::Put))
    );
}

#[test]
fn promotion_of_a_lagging_learner_is_refused() {
    let mut c: Cluster<Register> = Cluster::new(3);
    let l = c.elect_any();
    c.add_empty_member(NodeId(4));
    let rid = c.next_req_id();
    c.step(
        l,
        Input::ConfChange(rid, conf_change(ConfChangeKind::AddLearner, 4)),
    );
    c.run_ticks(3);
    c.isolate(NodeId(4));
    for i in 0..100 {
        c.propose(l, put("m", &i.to_string()));
    }
    c.run_ticks(3);
    let rid = c.next_req_id();
    c.step(
        l,
        Input::ConfChange(rid, conf_change(ConfChangeKind::AddVoter, 4)),
    );
    c.process(l);
    assert!(matches!(
        c.take_reply(rid),
        Some(Outcome::Failed(NodeError::Rejected(_)))
    ));
}

#[test]
fn second_membership_change_waits_for_the_first() {
    let mut c: Cluster<Register> = Cluster::new(3);
    let l = c.elect_any();
    c.auto_persist = false;
    let a = c.next_req_id();
    c.step(
        l,
        Input::ConfChange(a, conf_change(ConfChangeKind::AddLearner, 4)),
    );
    let b = c.next_req_id();
    c.step(
        l,
        Input::ConfChange(b, conf_change(ConfChangeKind::AddLearner, 5)),
    );
    c.process(l);
    assert!(matches!(
        c.take_reply(b),
        Some(Outcome::Failed(NodeError::Rejected(_)))
    ));
}

#[test]
fn bootstrap_entries_are_identical_on_every_founding_member() {
    let c: Cluster<Register> = Cluster::new(3);
    let e1: Vec<_> = c.members[&NodeId(1)]
        .storage
        .entries()
        .iter()
        .take(3)
        .cloned()
        .collect();
    for id in 2..=3 {
        let e: Vec<_> = c.members[&NodeId(id)]
            .storage
            .entries()
            .iter()
            .take(3)
            .cloned()
            .collect();
        assert_eq!(e, e1);
    }
    assert!(
        e1.iter()
            .all(|e| e.kind == EntryKind::ConfChange && e.term == Term(1))
    );
    let cc = codec::decode_conf_change(&e1[2].data).unwrap();
    assert_eq!(cc.node, NodeId(3));
}

#[test]
fn stale_leader_learns_the_new_term_and_steps_down() {
    let mut c: Cluster<Register> = Cluster::with_config(3, |id, seed| {
        let mut cfg = test_config(id, seed);
        cfg.raft.check_quorum = false; // so the old leader stays leader while cut off
        cfg
    });
    let l = c.elect_any();
    c.isolate(l);
    let others: Vec<NodeId> = c.members.keys().copied().filter(|&id| id != l).collect();
    // Elect another leader among the rest.
    for _ in 0..100 {
        c.tick_all();
        c.stabilize();
        if others
            .iter()
            .any(|id| c.node(*id).raft().role() == Role::Leader)
        {
            break;
        }
    }
    assert_eq!(c.node(l).raft().role(), Role::Leader);
    c.heal();
    c.run_ticks(3);
    assert_ne!(c.node(l).raft().role(), Role::Leader);
    assert_eq!(c.leaders().len(), 1);
}

#[test]
fn too_many_pending_requests_are_refused_with_etcds_error() {
    let mut c: Cluster<Register> = Cluster::with_config(3, |id, seed| {
        let mut cfg = test_config(id, seed);
        cfg.limits.max_pending_requests = 5;
        cfg
    });
    let l = c.elect_any();
    let rids: Vec<_> = (0..6)
        .map(|i| c.propose(l, put("p", &i.to_string())))
        .collect();
    c.process(l);
    let last = c.take_reply(rids[5]);
    assert_eq!(last, Some(Outcome::Failed(NodeError::TooManyRequests)));
    assert_eq!(
        NodeError::TooManyRequests.to_string(),
        "etcdserver: too many requests"
    );
}

#[test]
fn writes_are_refused_while_applying_lags_far_behind_the_commit() {
    let mut c: Cluster<Register> = Cluster::with_config(3, |id, seed| {
        let mut cfg = test_config(id, seed);
        // One entry per write, one applied per apply step: the leader
        // commits 200 in one round and applies at most 64 of them (16
        // readies of 4 steps).
        cfg.limits.max_requests_per_entry = 1;
        cfg.limits.max_apply_bytes_per_ready = 1;
        cfg.limits.max_apply_backlog_entries = 5;
        cfg
    });
    let l = c.elect_any();
    c.stabilize();
    for i in 0..200 {
        c.propose(l, put("p", &i.to_string()));
        c.process(l);
    }
    // Followers store and acknowledge; the leader commits all at once.
    c.deliver_queued();
    for id in c.members.keys().copied().collect::<Vec<_>>() {
        if id != l {
            c.process(id);
        }
    }
    c.deliver_queued();
    c.process(l);
    let log = c.node(l).raft().log();
    assert!(
        log.committed().0 - log.applied().0 > 5,
        "{:?} {:?}",
        log.committed(),
        log.applied()
    );
    let refused = c.propose(l, put("late", "x"));
    c.process(l);
    assert_eq!(
        c.take_reply(refused),
        Some(Outcome::Failed(NodeError::TooManyRequests))
    );
    // Once applying catches up, writes are taken again.
    c.stabilize();
    let ok = c.propose(l, put("later", "y"));
    c.stabilize();
    assert!(matches!(c.take_reply(ok), Some(Outcome::Done(_))));
}

#[test]
fn requests_time_out_when_no_quorum() {
    let mut c: Cluster<Register> = Cluster::new(3);
    let l = c.elect_any();
    let others: Vec<NodeId> = c.members.keys().copied().filter(|&id| id != l).collect();
    for o in others {
        c.isolate(o);
    }
    let rid = c.propose(l, put("q", "1"));
    c.run_ticks(100);
    assert_eq!(c.take_reply(rid), Some(Outcome::Failed(NodeError::Timeout)));
}

#[test]
fn a_member_that_lost_its_log_neither_votes_nor_campaigns_until_caught_up() {
    let mut c: Cluster<Register> = Cluster::new(3);
    let l = c.elect_any();
    for i in 0..20 {
        c.propose(l, put("a", &i.to_string()));
    }
    c.run_ticks(2);
    // Node x loses its disk and comes back empty, knowing it.
    let x = NodeId(if l.0 == 3 { 2 } else { 3 });
    let other = NodeId(6 - l.0 - x.0);
    {
        let m = c.members.get_mut(&x).unwrap();
        m.storage = etcd_core::storage::MemStorage::default();
        m.incarnation += 1;
        let rec = etcd_core::raft::Recovered {
            lost_state: true,
            ..Default::default()
        };
        m.node = etcd_core::Node::restart(test_config(x, 77), Register::default(), rec).unwrap();
    }
    assert!(c.node(x).raft().amnesia().is_some());
    // Cut x off from the leader: alone it can neither catch up nor campaign,
    // and it refuses the other follower's vote request.
    c.cut.insert((l, x));
    c.cut.insert((x, l));
    c.isolate(l);
    c.cut.remove(&(x, other));
    c.cut.remove(&(other, x));
    c.run_ticks(60);
    assert!(
        c.leaders().iter().all(|&id| id == l),
        "no one may win with an amnesiac's vote: {:?}",
        c.leaders()
    );
    assert_ne!(c.node(x).raft().role(), Role::Candidate);
    // Healed, x catches up from the leader and then votes again.
    c.heal();
    c.run_ticks(30);
    assert!(c.node(x).raft().amnesia().is_none(), "caught up");
    let leader = c.elect_any();
    assert_eq!(
        c.node(x).state_machine().digest(),
        c.node(leader).state_machine().digest()
    );
    c.isolate(leader);
    c.run_ticks(60);
    let new = c.leaders().into_iter().find(|&id| id != leader);
    assert!(
        new.is_some(),
        "x's vote now counts: the other two elect a leader"
    );
}
