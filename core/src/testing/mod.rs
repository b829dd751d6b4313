//! A deterministic in-process cluster for unit tests and benchmarks: nodes
//! driven directly, messages in one FIFO queue, storage in memory. No faults
//! beyond cut links and restarts; the simulator (`sim/`) does the rest.

pub mod etcd_model;

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use bytes::Bytes;

use crate::node::{Input, Node, NodeConfig, Outcome, Persist, StateMachine};
use crate::raft::{Message, RaftConfig, Recovered, Role};
use crate::storage::MemStorage;
use crate::types::{NodeId, ReqId};

pub struct Member<S: StateMachine> {
    pub node: Node<S>,
    pub storage: MemStorage,
    /// Persists handed out but not yet applied to `storage` (when the cluster
    /// does not persist automatically).
    pub unpersisted: VecDeque<Persist>,
    pub incarnation: u64,
}

pub struct Cluster<S: StateMachine + Default> {
    pub members: BTreeMap<NodeId, Member<S>>,
    /// Messages in flight, in send order.
    pub net: VecDeque<Message>,
    /// Directed links that drop everything.
    pub cut: BTreeSet<(NodeId, NodeId)>,
    pub replies: Vec<(NodeId, ReqId, Outcome<S::Response>)>,
    /// Persist every ready immediately (the default). Off: tests call `persist`.
    pub auto_persist: bool,
    next_req: u64,
    make_config: Box<dyn Fn(NodeId, u64) -> NodeConfig>,
    /// Messages delivered so far.
    pub delivered: u64,
}

/// A config with small timeouts, seeded per node and incarnation.
pub fn test_config(id: NodeId, seed: u64) -> NodeConfig {
    let mut cfg = NodeConfig::new(RaftConfig::new(id, seed));
    cfg.raft.election_timeout_ticks = 10;
    cfg.raft.heartbeat_interval_ticks = 1;
    cfg
}

impl<S: StateMachine + Default> Cluster<S> {
    /// `n` founding voters with ids 1..=n.
    pub fn new(n: u64) -> Cluster<S> {
        Cluster::with_config(n, test_config)
    }

    pub fn with_config(n: u64, make: impl Fn(NodeId, u64) -> NodeConfig + 'static) -> Cluster<S> {
        let voters: Vec<(NodeId, Bytes)> = (1..=n).map(|i| (NodeId(i), Bytes::new())).collect();
        let mut members = BTreeMap::new();
        for (id, _) in &voters {
            let node = Node::bootstrap(make(*id, id.0 * 1000), S::default(), &voters);
            members.insert(
                *id,
                Member {
                    node,
                    storage: MemStorage::default(),
                    unpersisted: VecDeque::new(),
                    incarnation: 0,
                },
            );
        }
        let mut c = Cluster {
            members,
            net: VecDeque::new(),
            cut: BTreeSet::new(),
            replies: Vec::new(),
            auto_persist: true,
            next_req: 1,
            make_config: Box::new(make),
            delivered: 0,
        };
        c.stabilize();
        c
    }

    /// Adds an empty member that will learn everything from the leader.
    pub fn add_empty_member(&mut self, id: NodeId) {
        let cfg = (self.make_config)(id, id.0 * 1000);
        let node =
            Node::restart(cfg, S::default(), Recovered::default()).expect("empty storage recovers");
        self.members.insert(
            id,
            Member {
                node,
                storage: MemStorage::default(),
                unpersisted: VecDeque::new(),
                incarnation: 0,
            },
        );
    }

    pub fn node(&self, id: NodeId) -> &Node<S> {
        &self.members[&id].node
    }

    pub fn step(&mut self, id: NodeId, input: Input<S::Request>) {
        if let Some(m) = self.members.get_mut(&id) {
            m.node.step(input);
        }
    }

    /// Runs `ready()` on one node until it has nothing more to do.
    pub fn process(&mut self, id: NodeId) {
        for _ in 0..16 {
            let Some(m) = self.members.get_mut(&id) else {
                return;
            };
            if !m.node.has_ready() {
                return;
            }
            let rd = m.node.ready();
            self.net.extend(rd.messages);
            for (rid, out) in rd.replies {
                self.replies.push((id, rid, out));
            }
            if let Some(p) = rd.persist {
                if self.auto_persist {
                    m.storage.apply(&p);
                    m.node.step(Input::Persisted(p.number));
                } else {
                    m.unpersisted.push_back(p);
                }
            }
        }
    }

    /// Makes `id`'s outstanding persists durable.
    pub fn persist(&mut self, id: NodeId) {
        let m = self.members.get_mut(&id).expect("member exists");
        let mut last = None;
        while let Some(p) = m.unpersisted.pop_front() {
            m.storage.apply(&p);
            last = Some(p.number);
        }
        if let Some(n) = last {
            m.node.step(Input::Persisted(n));
        }
    }

    pub fn process_all(&mut self) {
        let ids: Vec<NodeId> = self.members.keys().copied().collect();
        for id in ids {
            self.process(id);
        }
    }

    /// Delivers the messages queued now (not those they cause). Returns how many.
    pub fn deliver_queued(&mut self) -> usize {
        let n = self.net.len();
        for _ in 0..n {
            let m = self.net.pop_front().expect("counted");
            if self.cut.contains(&(m.from, m.to)) {
                continue;
            }
            if let Some(member) = self.members.get_mut(&m.to) {
                member.node.step(Input::Peer(m));
                self.delivered += 1;
            }
        }
        n
    }

    /// Processes and delivers until nothing moves (bounded).
    pub fn stabilize(&mut self) {
        for _ in 0..10_000 {
            self.process_all();
            if self.net.is_empty() {
                return;
            }
            self.deliver_queued();
        }
        panic!("cluster did not stabilize");
    }

    pub fn tick_all(&mut self) {
        let ids: Vec<NodeId> = self.members.keys().copied().collect();
        for id in ids {
            self.step(id, Input::Tick);
        }
    }

    /// Ticks everyone and stabilizes, `n` times.
    pub fn run_ticks(&mut self, n: u32) {
        for _ in 0..n {
            self.tick_all();
            self.stabilize();
        }
    }

    pub fn leaders(&self) -> Vec<NodeId> {
        self.members
            .iter()
            .filter(|(_, m)| m.node.raft().role() == Role::Leader)
            .map(|(id, _)| *id)
            .collect()
    }

    /// The unique leader of the highest term, if any.
    pub fn leader(&self) -> Option<NodeId> {
        self.members
            .iter()
            .filter(|(_, m)| m.node.raft().role() == Role::Leader)
            .max_by_key(|(_, m)| m.node.raft().term())
            .map(|(id, _)| *id)
    }

    /// Ticks until some node is leader (bounded), and returns it.
    pub fn elect_any(&mut self) -> NodeId {
        for _ in 0..1000 {
            if let Some(l) = self.leader() {
                return l;
            }
            self.tick_all();
            self.stabilize();
        }
        panic!("no leader elected");
    }

    /// Makes `id` campaign now and stabilizes.
    pub fn campaign(&mut self, id: NodeId) {
        self.members
            .get_mut(&id)
            .expect("member exists")
            .node
            .campaign();
        self.stabilize();
    }

    pub fn next_req_id(&mut self) -> ReqId {
        self.next_req += 1;
        ReqId(self.next_req)
    }

    pub fn propose(&mut self, id: NodeId, req: S::Request) -> ReqId {
        let rid = self.next_req_id();
        self.step(id, Input::Propose(rid, req));
        rid
    }

    pub fn read(&mut self, id: NodeId, req: S::Request) -> ReqId {
        let rid = self.next_req_id();
        self.step(id, Input::Read(rid, req));
        rid
    }

    pub fn take_reply(&mut self, rid: ReqId) -> Option<Outcome<S::Response>> {
        let pos = self.replies.iter().position(|(_, r, _)| *r == rid)?;
        Some(self.replies.remove(pos).2)
    }

    /// Cuts every link to and from `id`.
    pub fn isolate(&mut self, id: NodeId) {
        let ids: Vec<NodeId> = self.members.keys().copied().collect();
        for other in ids {
            if other != id {
                self.cut.insert((id, other));
                self.cut.insert((other, id));
            }
        }
    }

    pub fn heal(&mut self) {
        self.cut.clear();
    }

    /// Crashes `id` (losing what was not persisted) and restarts it from storage.
    pub fn restart(&mut self, id: NodeId) {
        let m = self.members.get_mut(&id).expect("member exists");
        m.unpersisted.clear();
        m.incarnation += 1;
        let cfg = (self.make_config)(id, id.0 * 1000 + m.incarnation);
        m.node = Node::restart(cfg, S::default(), m.storage.recover()).expect("storage recovers");
        self.net.retain(|msg| msg.to != id);
    }
}
