//! One seed, start to finish: build the cluster and clients on madsim, inject
//! faults drawn from the seed while checking safety after every step, heal,
//! require liveness within a bound, then check the clients' history.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures::channel::mpsc;

use etcd_core::etcd::EtcdState;
use etcd_core::lease::LeaseTiming;
use etcd_core::mvcc::{PutRequest, RangeRequest};
use etcd_core::node::{Input, decode_batch};
use etcd_core::raft::{Bugs, ConfChange, ConfChangeKind, EntryKind, Role};
use etcd_core::request::{Request, Response};
use etcd_core::{NodeId, ReqId};

use crate::client::{self, Answer};
use crate::history::{self, Mode, OpRecord};
use crate::linearizability::{self, Verdict};
use crate::options::{Draw, SimOptions};
use crate::server::server_main;
use crate::world::{ClientReq, Endpoint, NodeState, Sim, Slot, Stats, Summary, World};

/// After the faults stop, the cluster must settle within this much simulated time.
pub const LIVENESS_BOUND: Duration = Duration::from_secs(60);
/// Node ids stay below this (new members get fresh ids; etcd never reuses one).
const MAX_NODE_ID: u64 = 12;
/// Search budget per key for the linearizability checker.
const LINEARIZABILITY_MAX_STEPS: u64 = 1_000_000;

#[derive(Clone, Debug, Default)]
pub struct RunConfig {
    pub bugs: Bugs,
}

#[derive(Clone, Debug)]
pub struct Report {
    pub opts: SimOptions,
    pub stats: Stats,
    pub elections: u64,
    pub observations: u64,
    pub history_ops: usize,
    pub trace_digest: u64,
    pub virtual_ms: u64,
}

#[derive(Clone, Debug)]
pub struct Failure {
    pub opts: SimOptions,
    pub kind: &'static str,
    pub message: String,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: {}\n  options: {}",
            self.kind, self.message, self.opts
        )
    }
}

/// Runs one seed on a fresh thread (madsim needs one per runtime).
pub fn run_seed(seed: u64, nodes: u64, cfg: &RunConfig) -> Result<Report, Box<Failure>> {
    let opts = SimOptions::from_seed(seed, nodes);
    let bugs = cfg.bugs;
    let opts2 = opts.clone();
    let joined = std::thread::Builder::new()
        .name(format!("seed-{seed}"))
        .spawn(move || {
            let mut rt =
                madsim::runtime::Runtime::with_seed_and_config(seed, madsim::Config::default());
            rt.set_time_limit(Duration::from_secs(600));
            rt.block_on(simulate(opts2, bugs)).map_err(Box::new)
        })
        .expect("spawn seed thread")
        .join();
    match joined {
        Ok(r) => r,
        Err(payload) => {
            crate::set_seed_hint(seed);
            let message = crate::panic_message(&payload);
            Err(Box::new(Failure {
                opts,
                kind: "panic",
                message,
            }))
        }
    }
}

async fn simulate(opts: SimOptions, bugs: Bugs) -> Result<Report, Failure> {
    let sim = Sim(Arc::new(Mutex::new(World::new(opts.clone(), bugs))));
    let result = run_world(&sim, opts).await;
    // Pending tasks hold each other through their channels (a member's main
    // loop and its disk task each keep the other's channel alive), so nothing
    // would free them: kill every node, let the executor drop the woken
    // tasks, and drop what the world holds of the runtime. Without this every
    // seed leaks its whole world (about 2 MB).
    let handle = madsim::runtime::Handle::current();
    let ids: Vec<madsim::task::NodeId> = sim.lock().madsim_nodes.clone();
    for id in ids {
        handle.kill(id);
    }
    madsim::time::sleep(Duration::from_millis(1)).await;
    sim.lock().teardown();
    result
}

async fn run_world(sim: &Sim, opts: SimOptions) -> Result<Report, Failure> {
    let sim = sim.clone();
    let handle = madsim::runtime::Handle::current();
    let net = handle.create_node().name("net").build();
    sim.lock().madsim_nodes.push(net.id());
    sim.lock().net = Some(net);
    for i in 1..=opts.nodes {
        add_member(&sim, &handle, NodeId(i), true);
    }
    let active = Arc::new(Mutex::new(0u64));
    for c in 1..=opts.clients {
        let node = handle.create_node().name(format!("client{c}")).build();
        sim.lock().madsim_nodes.push(node.id());
        let (sim2, active2) = (sim.clone(), active.clone());
        *active.lock().expect("not poisoned") += 1;
        node.spawn(async move {
            client::client_main(sim2, c).await;
            *active2.lock().expect("not poisoned") -= 1;
        });
    }

    let n_watchers = 1 + opts.seed % 2;
    for k in 0..n_watchers {
        let c = 1000 + k;
        let node = handle.create_node().name(format!("watcher{k}")).build();
        sim.lock().madsim_nodes.push(node.id());
        let (sim2, active2) = (sim.clone(), active.clone());
        *active.lock().expect("not poisoned") += 1;
        node.spawn(async move {
            crate::watcher::watcher_main(sim2, c).await;
            *active2.lock().expect("not poisoned") -= 1;
        });
    }

    let mut nemesis = Nemesis::default();
    let fault_end = Duration::from_secs(opts.fault_secs);
    while sim.lock().start.elapsed() < fault_end {
        let wait = {
            let mut w = sim.lock();
            let mean = w.opts.nemesis_interval_ms;
            Duration::from_millis(w.rng.range(mean / 4, mean * 2))
        };
        madsim::time::sleep(wait).await;
        if let Some(f) = failure(&sim) {
            return Err(f);
        }
        nemesis.act(&sim, &handle);
    }

    heal(&sim, &handle, &mut nemesis);
    sim.lock().stop_clients = true;
    let opts_now = || sim.lock().opts.clone();
    if let Err(why) = liveness(&sim, &handle, &mut nemesis).await {
        return Err(failure(&sim).unwrap_or(Failure {
            opts: opts_now(),
            kind: "liveness",
            message: why,
        }));
    }
    // Leases nobody keeps alive any more must expire, everywhere: wait out the
    // longest TTL the clients use (6 s) plus time to notice and commit.
    madsim::time::sleep(Duration::from_secs(9)).await;
    let deadline = sim.lock().start.elapsed() + LIVENESS_BOUND;
    if let Err(why) = converge(&sim, deadline).await {
        return Err(failure(&sim).unwrap_or(Failure {
            opts: opts_now(),
            kind: "liveness",
            message: why,
        }));
    }
    {
        let mut w = sim.lock();
        let leader = w.leader();
        w.final_revision = leader.map_or(0, |l| w.nodes[&l].summary.revision);
        w.quiet = true;
    }
    // Let every client and watcher finish before judging the history.
    for _ in 0..300 {
        if *active.lock().expect("not poisoned") == 0 {
            break;
        }
        madsim::time::sleep(Duration::from_millis(100)).await;
    }
    if let Some(f) = failure(&sim) {
        return Err(f);
    }
    // Removals applied at the very end: those members shut down too.
    nemesis.reap_removed(&sim, &handle);
    end_checks(&sim).map_err(|f| *f)?;
    let w = sim.lock();
    Ok(Report {
        opts: w.opts.clone(),
        stats: w.stats.clone(),
        elections: w.checker.elections,
        observations: w.checker.observations,
        history_ops: w.ops.len(),
        trace_digest: w.trace.finish(),
        virtual_ms: w.now_ns() / 1_000_000,
    })
}

/// The checks made once the run is quiet: the register keys' linearizability,
/// the etcd history against the committed log, every watch, and that every
/// lease nobody kept alive is gone with its keys on every member.
fn end_checks(sim: &Sim) -> Result<(), Box<Failure>> {
    let w = sim.lock();
    let fail = |kind: &'static str, message: String| {
        Box::new(Failure {
            opts: w.opts.clone(),
            kind,
            message,
        })
    };
    match linearizability::check(&w.history, LINEARIZABILITY_MAX_STEPS) {
        Verdict::Linearizable => {}
        Verdict::Violation { key, ops } => {
            let mut message = format!("history of key {key:?} is not linearizable:");
            for op in ops.iter().take(60) {
                message.push_str(&format!("\n    {op:?}"));
            }
            return Err(fail("linearizability", message));
        }
        Verdict::Unknown { key, steps } => {
            return Err(fail(
                "linearizability",
                format!("search for key {key:?} gave up after {steps} steps"),
            ));
        }
    }
    // The committed log, rebuilt from what members applied.
    let mut log = Vec::new();
    let mut expect = etcd_core::LogIndex(1);
    for (i, e) in &w.applied {
        if *i != expect {
            return Err(fail(
                "history",
                format!("no member reported applying entry {expect:?}"),
            ));
        }
        expect = expect.next();
        if e.kind == EntryKind::Normal {
            match decode_batch::<EtcdState>(&e.data) {
                Ok(reqs) => log.extend(reqs),
                Err(err) => {
                    return Err(fail(
                        "history",
                        format!("entry {i:?} does not decode: {err}"),
                    ));
                }
            }
        }
    }
    let timing = LeaseTiming::new(w.opts.tick_ms, w.opts.election_timeout_ticks);
    let replay = history::replay(&log, timing.min_ttl_secs);
    if w.verbose {
        let mut m = etcd_core::testing::etcd_model::EtcdModel::new(timing.min_ttl_secs);
        for (k, req) in log.iter().enumerate() {
            let resp = m.apply(req);
            println!("log #{k} rev={} {req:?} -> {resp:?}", m.revision());
        }
    }
    for (rev, events) in &w.revisions {
        history::check_events(&replay, *rev, events).map_err(|m| fail("history", m))?;
    }
    history::check_ops(&replay, &w.ops).map_err(|m| fail("history", m))?;
    for rec in &w.watch_records {
        history::check_watch(&replay, rec).map_err(|m| {
            let seen: Vec<String> = rec
                .responses
                .iter()
                .map(|r| {
                    format!(
                        "{}{}{}@{}:{}",
                        if r.created { "C" } else { "" },
                        if r.canceled { "X" } else { "" },
                        if r.watch_id == -1 { "P" } else { "" },
                        r.revision,
                        r.events
                            .iter()
                            .map(|e| e.kv.mod_revision.to_string())
                            .collect::<Vec<_>>()
                            .join("/")
                    )
                })
                .collect();
            fail(
                "watch",
                format!(
                    "{m}\n  start {:?}, received: {}",
                    rec.create.start_revision,
                    seen.join(" ")
                ),
            )
        })?;
    }
    for (id, s) in &w.nodes {
        if s.state == NodeState::Up && s.summary.leases != 0 {
            let views: Vec<String> = w
                .nodes
                .iter()
                .map(|(n, x)| {
                    format!(
                        "{n:?} {:?} applied={:?} voters={:?} learners={:?}",
                        x.state, x.summary.applied, x.summary.voters, x.summary.learners
                    )
                })
                .collect();
            return Err(fail(
                "leases",
                format!(
                    "{id:?} still has {} leases nobody keeps alive\n  {}",
                    s.summary.leases,
                    views.join("\n  ")
                ),
            ));
        }
    }
    Ok(())
}

fn failure(sim: &Sim) -> Option<Failure> {
    let w = sim.lock();
    w.failure.as_ref().map(|m| Failure {
        opts: w.opts.clone(),
        kind: "safety",
        message: m.clone(),
    })
}

fn add_member(sim: &Sim, handle: &madsim::runtime::Handle, id: NodeId, founding: bool) {
    {
        let mut w = sim.lock();
        let drift = w.opts.drift_pct;
        let tick_permille = if drift == 0 {
            1000
        } else {
            w.rng.range(1000 - drift * 10, 1000 + drift * 10)
        };
        w.nodes.insert(
            id,
            Slot {
                madsim: None,
                inbox: None,
                disk_kick: None,
                disk: Default::default(),
                state: NodeState::Crashed,
                incarnation: 0,
                founding,
                tick_permille,
                disk_stalled_until_ns: 0,
                disk_full_until_ns: 0,
                amnesiac: false,
                held_before_loss: None,
                summary: Summary::default(),
            },
        );
    }
    let sim2 = sim.clone();
    let node = handle
        .create_node()
        .name(format!("n{}", id.0))
        .init(move || server_main(sim2.clone(), id))
        .build();
    let mut w = sim.lock();
    w.madsim_nodes.push(node.id());
    w.nodes.get_mut(&id).expect("just inserted").madsim = Some(node);
}

fn madsim_id(sim: &Sim, id: NodeId) -> Option<madsim::task::NodeId> {
    sim.lock()
        .nodes
        .get(&id)
        .and_then(|s| s.madsim.as_ref())
        .map(|h| h.id())
}

fn crash(sim: &Sim, handle: &madsim::runtime::Handle, id: NodeId) {
    let Some(mid) = madsim_id(sim, id) else {
        return;
    };
    handle.kill(mid);
    let mut w = sim.lock();
    // Its clients' watch streams break with it.
    w.break_streams_of(id);
    let World {
        nodes, rng, stats, ..
    } = &mut *w;
    if let Some(slot) = nodes.get_mut(&id) {
        slot.state = NodeState::Crashed;
        slot.inbox = None;
        slot.disk_kick = None;
        slot.summary.role = None;
        let (tear, bytes) = slot.disk.crash(rng);
        stats.lost_unsynced_writes += u64::from(bytes > 0 && tear != crate::world::Tear::Kept);
        stats.torn_writes += u64::from(bytes > 0 && tear == crate::world::Tear::Sectors);
    }
}

fn restart(sim: &Sim, handle: &madsim::runtime::Handle, id: NodeId) {
    if let Some(mid) = madsim_id(sim, id) {
        handle.restart(mid);
    }
}

/// Faults in force and membership changes in progress.
#[derive(Default)]
struct Nemesis {
    /// Nodes asked to leave; shut down once the change is applied.
    removing: BTreeSet<NodeId>,
    /// Nodes created to join; proposed as learners until they are members.
    joining: BTreeSet<NodeId>,
}

impl Nemesis {
    fn act(&mut self, sim: &Sim, handle: &madsim::runtime::Handle) {
        self.reap_removed(sim, handle);
        let (opts, choice) = {
            let mut w = sim.lock();
            (w.opts.clone(), w.rng.below(10))
        };
        match choice {
            0 if opts.partitions => self.partition(sim, handle),
            1 if opts.partitions => self.one_way(sim, handle),
            2 if opts.crashes => self.crash_one(sim, handle),
            3 if opts.pauses => self.pause_one(sim, handle),
            4 if opts.client_cuts => self.cut_client(sim, handle),
            5 if opts.membership => self.change_membership(sim, handle),
            6 if opts.transfers => self.transfer(sim),
            7 if opts.weather => self.weather(sim, handle),
            8 if opts.partitions => self.isolate(sim, handle),
            9 if opts.disk_stalls => self.stall_disk(sim),
            _ => {}
        }
        // Drawn apart, so seeds without full disks replay as before.
        if opts.disk_full && sim.lock().rng.chance(120) {
            self.fill_disk(sim);
        }
    }

    fn servers(sim: &Sim, state: Option<NodeState>) -> Vec<NodeId> {
        let w = sim.lock();
        w.nodes
            .iter()
            .filter(|(_, s)| s.state != NodeState::Removed && state.is_none_or(|st| s.state == st))
            .map(|(id, _)| *id)
            .collect()
    }

    fn pick(sim: &Sim, from: &[NodeId]) -> Option<NodeId> {
        if from.is_empty() {
            return None;
        }
        let k = sim.lock().rng.below(from.len() as u64) as usize;
        Some(from[k])
    }

    /// Like `pick`, but half the time the current leader if it is a candidate:
    /// faults at the leader exercise elections, backtracking and the commit rule.
    fn pick_leader_often(sim: &Sim, from: &[NodeId]) -> Option<NodeId> {
        let leader = {
            let mut w = sim.lock();
            w.leader()
                .filter(|l| from.contains(l))
                .filter(|_| w.rng.chance(500))
        };
        leader.or_else(|| Self::pick(sim, from))
    }

    /// Undoes `links` after a random while (unless a heal got there first).
    fn heal_later(sim: &Sim, links: Vec<(Endpoint, Endpoint)>, max_ms: u64) {
        let d = Duration::from_millis(sim.lock().rng.range(200, max_ms));
        let sim2 = sim.clone();
        madsim::task::spawn(async move {
            madsim::time::sleep(d).await;
            let mut w = sim2.lock();
            for l in links {
                w.cut.remove(&l);
            }
        });
    }

    fn partition(&mut self, sim: &Sim, _: &madsim::runtime::Handle) {
        let all = Self::servers(sim, None);
        let mut w = sim.lock();
        let minority = w.rng.range(1, (all.len() as u64 / 2).max(1)) as usize;
        let mut side: BTreeSet<NodeId> = BTreeSet::new();
        while side.len() < minority {
            let k = w.rng.below(all.len() as u64) as usize;
            side.insert(all[k]);
        }
        let mut links = Vec::new();
        for a in &all {
            for b in &all {
                if side.contains(a) != side.contains(b) {
                    links.push((Endpoint::Server(*a), Endpoint::Server(*b)));
                }
            }
        }
        for l in &links {
            w.cut.insert(*l);
        }
        w.stats.partitions += 1;
        drop(w);
        Self::heal_later(sim, links, 6_000);
    }

    fn isolate(&mut self, sim: &Sim, _: &madsim::runtime::Handle) {
        let all = Self::servers(sim, None);
        let Some(a) = Self::pick_leader_often(sim, &all) else {
            return;
        };
        let mut links = Vec::new();
        for b in &all {
            if *b != a {
                links.push((Endpoint::Server(a), Endpoint::Server(*b)));
                links.push((Endpoint::Server(*b), Endpoint::Server(a)));
            }
        }
        let mut w = sim.lock();
        for l in &links {
            w.cut.insert(*l);
        }
        w.stats.partitions += 1;
        drop(w);
        Self::heal_later(sim, links, 8_000);
    }

    fn one_way(&mut self, sim: &Sim, _: &madsim::runtime::Handle) {
        let all = Self::servers(sim, None);
        let (Some(a), Some(b)) = (Self::pick(sim, &all), Self::pick(sim, &all)) else {
            return;
        };
        if a == b {
            return;
        }
        let link = (Endpoint::Server(a), Endpoint::Server(b));
        let mut w = sim.lock();
        w.cut.insert(link);
        w.stats.partitions += 1;
        drop(w);
        Self::heal_later(sim, vec![link], 5_000);
    }

    fn cut_client(&mut self, sim: &Sim, _: &madsim::runtime::Handle) {
        let all = Self::servers(sim, None);
        let Some(s) = Self::pick(sim, &all) else {
            return;
        };
        let mut w = sim.lock();
        let clients = w.opts.clients;
        let c = w.rng.range(1, clients);
        let links = vec![
            (Endpoint::Client(c), Endpoint::Server(s)),
            (Endpoint::Server(s), Endpoint::Client(c)),
        ];
        for l in &links {
            w.cut.insert(*l);
        }
        w.stats.client_cuts += 1;
        drop(w);
        Self::heal_later(sim, links, 5_000);
    }

    fn crash_one(&mut self, sim: &Sim, handle: &madsim::runtime::Handle) {
        let up = Self::servers(sim, Some(NodeState::Up));
        let Some(id) = Self::pick_leader_often(sim, &up) else {
            return;
        };
        crash(sim, handle, id);
        self.maybe_damage_disk(sim, id);
        let d = {
            let mut w = sim.lock();
            w.stats.crashes += 1;
            Duration::from_millis(w.rng.range(100, 5_000))
        };
        let (sim2, handle2) = (sim.clone(), handle.clone());
        madsim::task::spawn(async move {
            madsim::time::sleep(d).await;
            let crashed = sim2
                .lock()
                .nodes
                .get(&id)
                .is_some_and(|s| s.state == NodeState::Crashed);
            if crashed {
                restart(&sim2, &handle2, id);
            }
        });
    }

    fn pause_one(&mut self, sim: &Sim, handle: &madsim::runtime::Handle) {
        let up = Self::servers(sim, Some(NodeState::Up));
        let Some(id) = Self::pick_leader_often(sim, &up) else {
            return;
        };
        let Some(mid) = madsim_id(sim, id) else {
            return;
        };
        handle.pause(mid);
        let d = {
            let mut w = sim.lock();
            w.stats.pauses += 1;
            if let Some(s) = w.nodes.get_mut(&id) {
                s.state = NodeState::Paused;
            }
            Duration::from_millis(w.rng.range(100, 4_000))
        };
        let (sim2, handle2) = (sim.clone(), handle.clone());
        madsim::task::spawn(async move {
            madsim::time::sleep(d).await;
            resume_if_paused(&sim2, &handle2, id);
        });
    }

    /// While `id` is down, its disk may rot (a flipped bit in durable data,
    /// found at restart) or be replaced (wiped). Only a minority of voters may
    /// be damaged at once: a member stays damaged until it has caught up.
    fn maybe_damage_disk(&mut self, sim: &Sim, id: NodeId) {
        let mut w = sim.lock();
        if !w.opts.disk_faults || !w.rng.chance(400) {
            return;
        }
        // Not during a membership change: every live member must agree on the voters.
        let voters = w.membership().0;
        let views_agree = !self_removing_or_joining(&self.removing, &self.joining)
            && w.nodes
                .values()
                .filter(|s| s.state == NodeState::Up)
                .all(|s| s.summary.voters == voters);
        if !views_agree {
            return;
        }
        let damaged = w
            .nodes
            .iter()
            .filter(|(n, s)| **n != id && (s.amnesiac || s.disk.flipped))
            .count();
        if damaged + 1 > voters.len().saturating_sub(1) / 2 {
            return;
        }
        let World {
            nodes, rng, stats, ..
        } = &mut *w;
        let Some(slot) = nodes.get_mut(&id) else {
            return;
        };
        if rng.chance(500) {
            if slot.disk.flip_bit(rng) {
                stats.bit_flips += 1;
            }
        } else {
            slot.held_before_loss = Some(slot.disk.wipe());
            slot.amnesiac = true;
            stats.disk_wipes += 1;
        }
    }

    /// A member's disk stops completing fsyncs for a while (an overloaded or
    /// failing device). A leader in that state must not hold on to leadership.
    fn stall_disk(&mut self, sim: &Sim) {
        let up = Self::servers(sim, Some(NodeState::Up));
        let Some(id) = Self::pick_leader_often(sim, &up) else {
            return;
        };
        let mut w = sim.lock();
        let until = w.now_ns() + w.rng.range(500, 6_000) * 1_000_000;
        w.stats.disk_stalls += 1;
        if let Some(s) = w.nodes.get_mut(&id) {
            s.disk_stalled_until_ns = until;
        }
    }

    /// A member's disk fills up for a while: its syncs fail with "no space"
    /// and are retried; it must refuse new writes and acknowledge nothing it
    /// has not made durable.
    fn fill_disk(&mut self, sim: &Sim) {
        let up = Self::servers(sim, Some(NodeState::Up));
        let Some(id) = Self::pick_leader_often(sim, &up) else {
            return;
        };
        let mut w = sim.lock();
        let until = w.now_ns() + w.rng.range(100, 3_000) * 1_000_000;
        w.stats.disk_fulls += 1;
        if let Some(s) = w.nodes.get_mut(&id) {
            s.disk_full_until_ns = until;
        }
    }

    fn weather(&mut self, sim: &Sim, _: &madsim::runtime::Handle) {
        let d = {
            let mut w = sim.lock();
            w.loss_permille = w.rng.range(0, 300);
            w.dup_permille = w.rng.range(0, 100);
            let lo = w.rng.range(100, 20_000);
            w.delay_us = (lo, lo + w.rng.range(0, 200_000));
            w.stats.weather_changes += 1;
            Duration::from_millis(w.rng.range(200, 4_000))
        };
        let sim2 = sim.clone();
        madsim::task::spawn(async move {
            madsim::time::sleep(d).await;
            let mut w = sim2.lock();
            w.loss_permille = w.opts.loss_permille;
            w.dup_permille = w.opts.dup_permille;
            w.delay_us = w.opts.net_delay_us;
        });
    }

    fn transfer(&mut self, sim: &Sim) {
        let mut w = sim.lock();
        let Some(leader) = w.leader() else { return };
        let voters: Vec<NodeId> = w
            .membership()
            .0
            .into_iter()
            .filter(|v| *v != leader)
            .collect();
        if voters.is_empty() {
            return;
        }
        let target = voters[w.rng.below(voters.len() as u64) as usize];
        w.admin(leader, Input::TransferLeader(target));
        w.stats.transfers += 1;
    }

    fn change_membership(&mut self, sim: &Sim, handle: &madsim::runtime::Handle) {
        // Reconfiguring while a member is still recovering a lost disk could
        // leave no quorum that can vote; operators wait, and so do we.
        if sim
            .lock()
            .nodes
            .values()
            .any(|s| s.amnesiac || s.disk.flipped)
        {
            return;
        }
        let (voters, learners) = sim.lock().membership();
        let Some(leader) = sim.lock().leader() else {
            return;
        };
        let propose = |kind, node: NodeId| {
            let mut w = sim.lock();
            let cc = ConfChange {
                id: 0,
                kind,
                node,
                context: Bytes::new(),
            };
            w.admin(leader, Input::ConfChange(ReqId(0), cc));
            w.stats.membership_changes += 1;
        };
        // Finish what is under way first: joiners become learners, learners voters.
        if let Some(&j) = self
            .joining
            .iter()
            .find(|j| !voters.contains(j) && !learners.contains(j))
        {
            propose(ConfChangeKind::AddLearner, j);
            return;
        }
        if let Some(&l) = learners.iter().next() {
            self.joining.remove(&l);
            propose(ConfChangeKind::AddVoter, l);
            return;
        }
        let max_id = sim.lock().nodes.keys().last().map_or(0, |id| id.0);
        let grow = voters.len() <= 3 || sim.lock().rng.chance(400);
        if grow && max_id < MAX_NODE_ID && voters.len() < 6 {
            let id = NodeId(max_id + 1);
            add_member(sim, handle, id, false);
            self.joining.insert(id);
            propose(ConfChangeKind::AddLearner, id);
        } else if voters.len() > 3 {
            let v: Vec<NodeId> = voters
                .iter()
                .copied()
                .filter(|v| !self.removing.contains(v))
                .collect();
            if let Some(victim) = Self::pick(sim, &v) {
                self.removing.insert(victim);
                propose(ConfChangeKind::Remove, victim);
            }
        }
    }

    /// Shuts down members whose removal has been applied, as etcd does.
    fn reap_removed(&mut self, sim: &Sim, handle: &madsim::runtime::Handle) {
        let (voters, learners) = sim.lock().membership();
        if voters.is_empty() {
            // No member has reported a membership yet (the very start of a
            // run): nobody can be known to be removed. Seed 209108 once
            // shut down every member here.
            return;
        }
        // Shut a removed member down only once every other member has applied
        // its removal: until then they still count it, and killing it early
        // can leave them without a quorum (etcd's operators wait the same way).
        // Only current members' views count: a removed member that never
        // heard of its removal (nobody talks to it any more) is no obstacle.
        let applied_everywhere = |id: NodeId| {
            let w = sim.lock();
            w.nodes
                .iter()
                .filter(|(n, s)| {
                    **n != id
                        && s.state != NodeState::Removed
                        && (voters.contains(n) || learners.contains(n))
                })
                .all(|(_, s)| {
                    s.summary.role.is_none()
                        || (!s.summary.voters.contains(&id) && !s.summary.learners.contains(&id))
                })
        };
        // Whoever is no longer a member (by the most advanced view) and whose
        // removal every other member applied; joiners not yet added excepted.
        // (Not just the removals we saw through: one that looked lost may
        // commit later.)
        let candidates: Vec<NodeId> = {
            let w = sim.lock();
            w.nodes
                .iter()
                .filter(|(id, s)| s.state != NodeState::Removed && !self.joining.contains(id))
                .map(|(id, _)| *id)
                .filter(|id| !voters.contains(id) && !learners.contains(id))
                .collect()
        };
        let gone: Vec<NodeId> = candidates
            .into_iter()
            .filter(|id| applied_everywhere(*id))
            .collect();
        for id in gone {
            self.removing.remove(&id);
            if let Some(mid) = madsim_id(sim, id) {
                handle.kill(mid);
            }
            let mut w = sim.lock();
            w.break_streams_of(id);
            if let Some(s) = w.nodes.get_mut(&id) {
                s.state = NodeState::Removed;
                s.inbox = None;
                s.disk_kick = None;
            }
        }
        // Keep waiting for removals that some member applied; a proposal that
        // was lost leaves the node a member everywhere: try again later.
        self.removing
            .retain(|id| !voters.contains(id) && !learners.contains(id));
    }
}

fn self_removing_or_joining(removing: &BTreeSet<NodeId>, joining: &BTreeSet<NodeId>) -> bool {
    !removing.is_empty() || !joining.is_empty()
}

fn resume_if_paused(sim: &Sim, handle: &madsim::runtime::Handle, id: NodeId) {
    let paused = sim
        .lock()
        .nodes
        .get(&id)
        .is_some_and(|s| s.state == NodeState::Paused);
    if paused {
        if let Some(mid) = madsim_id(sim, id) {
            handle.resume(mid);
        }
        if let Some(s) = sim.lock().nodes.get_mut(&id) {
            s.state = NodeState::Up;
        }
    }
}

/// Ends every fault: links, weather, pauses and crashes.
fn heal(sim: &Sim, handle: &madsim::runtime::Handle, nemesis: &mut Nemesis) {
    {
        let mut w = sim.lock();
        w.cut.clear();
        for s in w.nodes.values_mut() {
            s.disk_stalled_until_ns = 0;
            s.disk_full_until_ns = 0;
        }
        w.loss_permille = 0;
        w.dup_permille = 0;
        w.delay_us = w.opts.net_delay_us;
    }
    let ids: Vec<(NodeId, NodeState)> = sim
        .lock()
        .nodes
        .iter()
        .map(|(id, s)| (*id, s.state))
        .collect();
    for (id, state) in ids {
        match state {
            NodeState::Paused => resume_if_paused(sim, handle, id),
            NodeState::Crashed => restart(sim, handle, id),
            NodeState::Up | NodeState::Removed => {}
        }
    }
    nemesis.reap_removed(sim, handle);
}

/// Within `LIVENESS_BOUND`: one leader, every member applied the same entries,
/// and a fresh write and a linearizable read succeed.
async fn liveness(
    sim: &Sim,
    handle: &madsim::runtime::Handle,
    nemesis: &mut Nemesis,
) -> Result<(), String> {
    let deadline = sim.lock().start.elapsed() + LIVENESS_BOUND;
    let (tx, mut rx) = mpsc::unbounded();
    sim.lock().clients.insert(0, tx);
    let mut seq = 0u64;
    let mut wrote = false;
    let value = Bytes::from(format!("liveness-{}", sim.lock().opts.seed));
    let key = Bytes::from_static(b"live");
    loop {
        if sim.lock().start.elapsed() > deadline {
            let w = sim.lock();
            let mut why = String::from("cluster did not settle after healing:");
            for (id, s) in &w.nodes {
                why.push_str(&format!(
                    "\n    {id:?} {:?} role={:?} term={:?} leader={:?} commit={:?} applied={:?} voters={:?} learners={:?}",
                    s.state, s.summary.role, s.summary.term, s.summary.leader, s.summary.commit, s.summary.applied,
                    s.summary.voters, s.summary.learners
                ));
            }
            return Err(why);
        }
        if failure(sim).is_some() {
            return Ok(());
        }
        nemesis.reap_removed(sim, handle);
        let Some(leader) = settled_leader(sim) else {
            madsim::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        seq += 1;
        let call_ns = sim.lock().now_ns();
        let record = |req: Request, mode: Mode, answer: &Answer| {
            let mut w = sim.lock();
            let return_ns = w.now_ns();
            let resp = match answer {
                Answer::Ok(r) => Some(r.clone()),
                Answer::Unknown | Answer::Refused => None,
            };
            let known = resp.is_some();
            if known || (mode == Mode::Write && matches!(answer, Answer::Unknown)) {
                w.ops.push(OpRecord {
                    client: 0,
                    call_ns,
                    return_ns: known.then_some(return_ns),
                    mode,
                    req,
                    resp,
                });
            }
        };
        if !wrote {
            let req = Request::Put(PutRequest {
                key: key.clone(),
                value: value.clone(),
                ..PutRequest::default()
            });
            let answer = client::call(
                sim,
                &mut rx,
                0,
                leader,
                ReqId(seq),
                ClientReq::Write(req.clone()),
            )
            .await;
            record(req, Mode::Write, &answer);
            wrote = matches!(answer, Answer::Ok(Response::Put(_)));
            continue;
        }
        let members: Vec<NodeId> = {
            let w = sim.lock();
            let (v, l) = w.membership();
            v.union(&l).copied().collect()
        };
        let reader = members[sim.lock().rng.below(members.len() as u64) as usize];
        let req = Request::Range(RangeRequest {
            key: key.clone(),
            ..RangeRequest::default()
        });
        let answer = client::call(
            sim,
            &mut rx,
            0,
            reader,
            ReqId(seq),
            ClientReq::Read(req.clone()),
        )
        .await;
        record(req, Mode::Linearizable, &answer);
        if let Answer::Ok(Response::Range(rr)) = answer {
            if rr.kvs.first().map(|kv| &kv.value) != Some(&value) {
                // A linearizable read after our acknowledged write must see it
                // (no other client writes this key); the history check reports it.
                return Ok(());
            }
            // Finally everyone must converge on the same applied state.
            return converge(sim, deadline).await;
        }
    }
}

/// Some member leads, all members are up and have applied everything it committed.
fn settled_leader(sim: &Sim) -> Option<NodeId> {
    let w = sim.lock();
    let leader = w.leader()?;
    let l = &w.nodes[&leader].summary;
    let members: BTreeSet<NodeId> = l.voters.union(&l.learners).copied().collect();
    let all_up = members
        .iter()
        .all(|m| w.nodes.get(m).is_some_and(|s| s.state == NodeState::Up));
    let leaders = w
        .nodes
        .values()
        .filter(|s| s.state == NodeState::Up && s.summary.role == Some(Role::Leader))
        .count();
    (all_up && leaders == 1).then_some(leader)
}

async fn converge(sim: &Sim, deadline: Duration) -> Result<(), String> {
    loop {
        {
            let w = sim.lock();
            if let Some(leader) = w.leader() {
                let l = &w.nodes[&leader].summary;
                let members: Vec<NodeId> = l.voters.union(&l.learners).copied().collect();
                let same = members.iter().all(|m| {
                    w.nodes.get(m).is_some_and(|s| {
                        s.state == NodeState::Up
                            && s.summary.applied == l.commit
                            && s.summary.digest == l.digest
                    })
                });
                if same && l.applied == l.commit {
                    return Ok(());
                }
            }
            if w.start.elapsed() > deadline {
                let mut why = String::from("members did not converge on the same applied state:");
                for (id, s) in &w.nodes {
                    why.push_str(&format!(
                        "\n    {id:?} {:?} role={:?} commit={:?} applied={:?} digest={:x}",
                        s.state,
                        s.summary.role,
                        s.summary.commit,
                        s.summary.applied,
                        s.summary.digest
                    ));
                }
                return Err(why);
            }
        }
        madsim::time::sleep(Duration::from_millis(100)).await;
    }
}
