//! The simulated world every task shares: members and their disks, the network
//! between members and clients, the checker, the clients' history, counters
//! and the trace digest. One lock; never held across an `.await`.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use futures::channel::mpsc::UnboundedSender;
use rand_chacha::ChaCha8Rng;
use rand_core::SeedableRng;

use etcd_core::etcd::{EtcdState, Notification};
use etcd_core::hash::Fnv64;
use etcd_core::mvcc::Event as KvEvent;
use etcd_core::node::{Input, Node, Outcome, Persist, Ready};
use etcd_core::raft::{Entry, Message, MsgBody, Role};
use etcd_core::raft::{Recovered, Snapshot};
use etcd_core::request::{Request, Response};
use etcd_core::wal::{self, WalRecord, WalReplay};
use etcd_core::watch::{StreamId, WatchResponse};
use etcd_core::{LogIndex, NodeId, ReqId, Term};

use crate::checker::{Checker, Observation};
use crate::history::{OpRecord, WatchRecord};
use crate::linearizability::Op;
use crate::options::{Draw, SimOptions};

/// What a member's task receives.
#[derive(Debug)]
pub enum Event {
    Tick,
    Peer(Message),
    Client {
        id: ReqId,
        req: ClientReq,
    },
    Persisted(u64),
    /// An operator's input (membership change, leadership transfer).
    Admin(Input<Request>),
}

#[derive(Clone, Debug)]
pub enum ClientReq {
    /// Through the log.
    Write(Request),
    /// Linearizable (ReadIndex).
    Read(Request),
    /// Served by the member alone: serializable reads, watch requests.
    Local(Request),
}

/// What a watching client's stream delivers.
#[derive(Clone, Debug)]
pub enum WatchMsg {
    Resp(WatchResponse),
    /// The stream broke (the member crashed or the link was cut).
    Broken,
}

/// Either end of a simulated link.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Endpoint {
    Server(NodeId),
    Client(u64),
}

#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum NodeState {
    Up,
    Crashed,
    Paused,
    /// Removed from the cluster and shut down for good.
    Removed,
}

/// A member's disk, byte for byte: the WAL written through the production
/// codec (`etcd_core::wal`), one batch per sync and never a second batch
/// before the first is durable, exactly as the production WAL; plus snapshot
/// files. Crashes tear what was in flight; recovery reads the bytes back
/// through the same scanner the production WAL uses.
#[derive(Default)]
pub struct SimDisk {
    pub wal: Vec<u8>,
    /// Bytes known durable.
    pub synced_len: usize,
    /// The batch written and not yet durable: (start offset, persist number, records).
    in_flight: Option<(usize, u64, Vec<WalRecord>)>,
    /// Written by the member, not yet handed to the disk.
    queued: VecDeque<(u64, Vec<WalRecord>)>,
    /// Snapshot files by (index, term); durable when written, as the
    /// production WAL fsyncs them before the WAL names them.
    snaps: BTreeMap<(LogIndex, Term), Snapshot>,
    /// What the durable WAL says (for the checker's durable-quorum test).
    durable: WalReplay,
    /// Bits flipped in durable data (so recovery must find corruption).
    pub flipped: bool,
}

/// How a crash leaves the write that was in flight.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Tear {
    Lost,
    Kept,
    /// Each 512-byte sector independently written or not.
    Sectors,
}

pub const SECTOR: usize = 512;

/// Why a disk could not be read back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DiskError {
    Corrupt { offset: usize, reason: String },
}

fn replay_holds(r: &WalReplay, i: LogIndex, t: Term) -> bool {
    if let Some(first) = r.entries.first().map(|e| e.index)
        && i >= first
        && let Some(e) = r.entries.get((i.0 - first.0) as usize)
    {
        return e.term == t;
    }
    r.snapshot.is_some_and(|(si, _)| si >= i)
}

impl SimDisk {
    /// Queues a persist (snapshot files first, durably).
    pub fn write(&mut self, p: &Persist) {
        for s in p
            .snapshot
            .iter()
            .chain(p.local_snapshot.iter().map(|(s, _)| s))
        {
            self.snaps.insert((s.meta.index, s.meta.term), s.clone());
        }
        self.queued.push_back((p.number, wal::records_of(p)));
    }

    pub fn has_queued(&self) -> bool {
        !self.queued.is_empty()
    }

    /// Writes everything queued as one batch; it becomes durable at `finish_sync`.
    pub fn start_sync(&mut self) -> bool {
        assert!(
            self.in_flight.is_none(),
            "a second batch before the first is durable"
        );
        if self.queued.is_empty() {
            return false;
        }
        let mut number = 0;
        let mut records = Vec::new();
        for (n, recs) in self.queued.drain(..) {
            number = n;
            records.extend(recs);
        }
        let start = self.wal.len();
        let bytes = wal::encode_batch(&records, 0, start as u64);
        self.wal.extend_from_slice(&bytes);
        self.in_flight = Some((start, number, records));
        true
    }

    /// The sync returned: the batch is durable. Returns its persist number.
    pub fn finish_sync(&mut self) -> Option<u64> {
        let (_, number, records) = self.in_flight.take()?;
        self.synced_len = self.wal.len();
        for r in records {
            // The durable view only feeds the checker; a replay error here
            // would show again, properly, at recovery.
            let _ = self.durable.apply(r);
        }
        Some(number)
    }

    /// A crash: queued writes are gone; the batch in flight is lost, kept or torn.
    pub fn crash(&mut self, rng: &mut ChaCha8Rng) -> (Tear, usize) {
        self.queued.clear();
        let Some((start, _, _)) = self.in_flight.take() else {
            return (Tear::Lost, 0);
        };
        let tear = [Tear::Lost, Tear::Kept, Tear::Sectors][rng.below(3) as usize];
        let len = self.wal.len() - start;
        match tear {
            Tear::Lost => self.wal.truncate(start),
            Tear::Kept => {}
            Tear::Sectors => {
                let mut at = start;
                while at < self.wal.len() {
                    let end = ((at / SECTOR + 1) * SECTOR).min(self.wal.len());
                    if rng.chance(500) {
                        self.wal[at..end].fill(0);
                    }
                    at = end;
                }
            }
        }
        (tear, len)
    }

    /// Flips one bit in durable data (bit rot).
    pub fn flip_bit(&mut self, rng: &mut ChaCha8Rng) -> bool {
        if self.synced_len == 0 {
            return false;
        }
        let at = rng.below(self.synced_len as u64) as usize;
        self.wal[at] ^= 1 << rng.below(8);
        self.flipped = true;
        true
    }

    /// Forget everything (a replaced disk, or an operator wiping a damaged
    /// one). Returns what it durably held, which the leader may still count
    /// on until the member tells it otherwise.
    pub fn wipe(&mut self) -> WalReplay {
        let held = std::mem::take(&mut self.durable);
        *self = SimDisk::default();
        held
    }

    /// What a restart recovers: the bytes read back through the production
    /// scanner. A torn tail is cut (as the production WAL does); damage before
    /// it is an error.
    pub fn recover(&mut self) -> Result<Recovered, DiskError> {
        let scan = wal::scan_segment(&self.wal, 0);
        let mut replay = WalReplay::default();
        for (offset, rec) in scan.records {
            replay
                .apply(rec)
                .map_err(|reason| DiskError::Corrupt { offset, reason })?;
        }
        match scan.end {
            wal::SegmentEnd::Clean { offset } | wal::SegmentEnd::TornTail { offset } => {
                self.wal.truncate(offset);
                self.synced_len = offset;
            }
            wal::SegmentEnd::Corrupt { offset, reason } => {
                return Err(DiskError::Corrupt { offset, reason });
            }
        }
        let snapshot = replay
            .snapshot
            .and_then(|(i, t)| self.snaps.get(&(i, t)).cloned());
        self.durable = replay.clone();
        Ok(replay.into_recovered(snapshot))
    }

    /// Nothing was ever written.
    pub fn is_empty(&self) -> bool {
        self.wal.is_empty() && self.queued.is_empty() && self.in_flight.is_none()
    }

    /// Does durable data hold entry `(i, t)`, or a snapshot covering `i`?
    pub fn holds(&self, i: LogIndex, t: Term) -> bool {
        replay_holds(&self.durable, i, t)
    }
}

/// What the controller and final checks need to know of a member.
#[derive(Clone, Debug, Default)]
pub struct Summary {
    pub role: Option<Role>,
    pub term: Term,
    pub leader: NodeId,
    pub commit: LogIndex,
    pub applied: LogIndex,
    pub voters: BTreeSet<NodeId>,
    pub learners: BTreeSet<NodeId>,
    pub digest: u64,
    /// The store revision and the number of leases.
    pub revision: i64,
    pub leases: usize,
    pub last_index: LogIndex,
    pub matched_by_leader: BTreeMap<NodeId, LogIndex>,
}

pub struct Slot {
    pub madsim: Option<madsim::runtime::NodeHandle>,
    pub inbox: Option<UnboundedSender<Event>>,
    /// Wakes the member's disk task after a write is queued.
    pub disk_kick: Option<UnboundedSender<()>>,
    pub disk: SimDisk,
    pub state: NodeState,
    pub incarnation: u64,
    /// Founding members bootstrap when their disk is empty; joiners wait.
    pub founding: bool,
    /// Tick interval multiplier in per mille (1000 = exact).
    pub tick_permille: u64,
    /// Fsyncs wait until this virtual time (a stalled disk).
    pub disk_stalled_until_ns: u64,
    /// Writes fail with "no space" until this virtual time (a full disk).
    pub disk_full_until_ns: u64,
    /// Lost its log (wiped or repaired): restarts guarded until caught up.
    pub amnesiac: bool,
    /// What it durably held before losing its log, while amnesiac.
    pub held_before_loss: Option<WalReplay>,
    pub summary: Summary,
}

#[derive(Clone, Debug, Default)]
pub struct Stats {
    pub messages_sent: u64,
    pub messages_delivered: u64,
    pub messages_dropped: u64,
    pub messages_duplicated: u64,
    pub leader_changes: u64,
    pub partitions: u64,
    pub crashes: u64,
    pub lost_unsynced_writes: u64,
    pub pauses: u64,
    pub client_cuts: u64,
    pub snapshots_sent: u64,
    pub snapshots_installed: u64,
    pub local_snapshots: u64,
    pub membership_changes: u64,
    pub membership_applied: u64,
    pub disk_stalls: u64,
    pub disk_fulls: u64,
    pub writes_failed_for_space: u64,
    pub torn_writes: u64,
    pub bit_flips: u64,
    pub disk_wipes: u64,
    pub repairs: u64,
    pub transfers: u64,
    pub weather_changes: u64,
    pub ops_ok: u64,
    pub ops_failed: u64,
    pub ops_unknown: u64,
}

impl Stats {
    pub fn add(&mut self, o: &Stats) {
        self.messages_sent += o.messages_sent;
        self.messages_delivered += o.messages_delivered;
        self.messages_dropped += o.messages_dropped;
        self.messages_duplicated += o.messages_duplicated;
        self.leader_changes += o.leader_changes;
        self.partitions += o.partitions;
        self.crashes += o.crashes;
        self.lost_unsynced_writes += o.lost_unsynced_writes;
        self.pauses += o.pauses;
        self.client_cuts += o.client_cuts;
        self.snapshots_sent += o.snapshots_sent;
        self.snapshots_installed += o.snapshots_installed;
        self.local_snapshots += o.local_snapshots;
        self.membership_changes += o.membership_changes;
        self.membership_applied += o.membership_applied;
        self.disk_stalls += o.disk_stalls;
        self.disk_fulls += o.disk_fulls;
        self.writes_failed_for_space += o.writes_failed_for_space;
        self.torn_writes += o.torn_writes;
        self.bit_flips += o.bit_flips;
        self.disk_wipes += o.disk_wipes;
        self.repairs += o.repairs;
        self.transfers += o.transfers;
        self.weather_changes += o.weather_changes;
        self.ops_ok += o.ops_ok;
        self.ops_failed += o.ops_failed;
        self.ops_unknown += o.ops_unknown;
    }
}

pub struct World {
    pub opts: SimOptions,
    pub bugs: etcd_core::raft::Bugs,
    pub rng: ChaCha8Rng,
    pub start: madsim::time::Instant,
    pub nodes: BTreeMap<NodeId, Slot>,
    /// Directed links that drop everything.
    pub cut: BTreeSet<(Endpoint, Endpoint)>,
    pub loss_permille: u64,
    pub dup_permille: u64,
    pub delay_us: (u64, u64),
    pub clients: BTreeMap<u64, UnboundedSender<(ReqId, Outcome<Response>)>>,
    /// Watch streams: stream → (client, member), and each watcher's inbox.
    pub streams: BTreeMap<StreamId, (u64, NodeId)>,
    pub watchers: BTreeMap<u64, UnboundedSender<WatchMsg>>,
    pub watch_records: Vec<WatchRecord>,
    /// The etcd history: every client operation.
    pub ops: Vec<OpRecord>,
    /// The committed log as members applied it (first report per index).
    pub applied: BTreeMap<LogIndex, Entry>,
    /// Each revision's events as first reported; every other member must
    /// report the same.
    pub revisions: BTreeMap<i64, Vec<KvEvent>>,
    pub stop_clients: bool,
    /// Set once no write will happen any more; watchers then ask for progress.
    pub quiet: bool,
    /// The store revision when the run went quiet.
    pub final_revision: i64,
    pub checker: Checker,
    pub history: Vec<Op>,
    pub stats: Stats,
    pub trace: Fnv64,
    pub net: Option<madsim::runtime::NodeHandle>,
    /// Every madsim node created (members, clients, watchers, the network).
    pub madsim_nodes: Vec<madsim::task::NodeId>,
    /// The first safety violation; the run stops at it.
    pub failure: Option<String>,
    pub last_leader: NodeId,
    /// Print every step (SIM_TRACE=1 when replaying a seed).
    pub verbose: bool,
    pub founding_voters: Vec<(NodeId, Bytes)>,
}

/// The shared handle.
#[derive(Clone)]
pub struct Sim(pub Arc<Mutex<World>>);

impl Sim {
    pub fn lock(&self) -> MutexGuard<'_, World> {
        // A poisoned lock means a task panicked; the runtime is already failing.
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl World {
    pub fn new(opts: SimOptions, bugs: etcd_core::raft::Bugs) -> World {
        let founding_voters: Vec<(NodeId, Bytes)> = (1..=opts.nodes)
            .map(|i| {
                let m = etcd_core::cluster::Member {
                    id: i,
                    name: format!("n{i}"),
                    peer_urls: vec![format!("http://10.0.0.{i}:2380")],
                    client_urls: vec![format!("http://10.0.0.{i}:2379")],
                    is_learner: false,
                };
                (NodeId(i), etcd_core::cluster::encode_member(&m))
            })
            .collect::<Vec<_>>();
        World {
            rng: ChaCha8Rng::seed_from_u64(opts.seed),
            loss_permille: opts.loss_permille,
            dup_permille: opts.dup_permille,
            delay_us: opts.net_delay_us,
            opts,
            bugs,
            start: madsim::time::Instant::now(),
            nodes: BTreeMap::new(),
            cut: BTreeSet::new(),
            clients: BTreeMap::new(),
            streams: BTreeMap::new(),
            watchers: BTreeMap::new(),
            watch_records: Vec::new(),
            ops: Vec::new(),
            applied: BTreeMap::new(),
            revisions: BTreeMap::new(),
            stop_clients: false,
            quiet: false,
            final_revision: 0,
            checker: Checker::default(),
            history: Vec::new(),
            stats: Stats::default(),
            trace: Fnv64::new(),
            net: None,
            madsim_nodes: Vec::new(),
            failure: None,
            last_leader: NodeId::NONE,
            verbose: std::env::var("SIM_TRACE").is_ok_and(|v| v == "1"),
            founding_voters,
        }
    }

    /// Drops everything that refers back into the runtime (node handles,
    /// channels), so the runtime and this world can both be freed.
    pub fn teardown(&mut self) {
        self.net = None;
        for s in self.nodes.values_mut() {
            s.madsim = None;
            s.inbox = None;
            s.disk_kick = None;
        }
        self.clients.clear();
        self.watchers.clear();
        self.streams.clear();
    }

    pub fn now_ns(&self) -> u64 {
        self.start.elapsed().as_nanos() as u64
    }

    pub fn fail(&mut self, why: String) {
        if self.failure.is_none() {
            self.failure = Some(why);
        }
    }

    pub fn etcd_config(&self) -> etcd_core::etcd::EtcdConfig {
        let mut c =
            etcd_core::etcd::EtcdConfig::new(self.opts.tick_ms, self.opts.election_timeout_ticks);
        c.observe_events = true;
        c.cluster_id = 0xc1_5eed;
        c
    }

    pub fn node_config(&self, id: NodeId, incarnation: u64) -> etcd_core::NodeConfig {
        let seed = self.opts.seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ (id.0 << 32) ^ incarnation;
        let mut raft = etcd_core::RaftConfig::new(id, seed);
        raft.election_timeout_ticks = self.opts.election_timeout_ticks;
        raft.heartbeat_interval_ticks = 1;
        raft.max_inflight_msgs = self.opts.max_inflight_msgs;
        raft.max_msg_bytes = self.opts.max_msg_bytes;
        raft.bugs = self.bugs;
        let mut cfg = etcd_core::NodeConfig::new(raft);
        cfg.snapshot_interval_entries = self.opts.snapshot_interval_entries;
        cfg.snapshot_catchup_entries = self.opts.snapshot_catchup_entries;
        cfg.snapshot_step_budget = self.opts.snapshot_step_budget;
        cfg.request_timeout_ticks = 40;
        cfg.observe_applied = true;
        cfg
    }

    /// Members as the most up-to-date live node sees them (voters, learners).
    pub fn membership(&self) -> (BTreeSet<NodeId>, BTreeSet<NodeId>) {
        self.nodes
            .values()
            .filter(|s| s.state != NodeState::Removed)
            .max_by_key(|s| (s.summary.applied, s.summary.term))
            .map(|s| (s.summary.voters.clone(), s.summary.learners.clone()))
            .unwrap_or_default()
    }

    /// The live leader of the highest term, if any.
    pub fn leader(&self) -> Option<NodeId> {
        self.nodes
            .iter()
            .filter(|(_, s)| s.state == NodeState::Up && s.summary.role == Some(Role::Leader))
            .max_by_key(|(_, s)| s.summary.term)
            .map(|(id, _)| *id)
    }

    fn link_up(&self, from: Endpoint, to: Endpoint) -> bool {
        !self.cut.contains(&(from, to))
    }

    fn draw_delay(&mut self) -> Duration {
        let (lo, hi) = self.delay_us;
        Duration::from_micros(self.rng.range(lo, hi.max(lo)))
    }

    /// Decides the fate of one message: delivery delays (none: dropped; two:
    /// duplicated). Only Raft's own messages may be duplicated: they are
    /// idempotent, and a retransmitting transport may repeat them. A client's
    /// request, its answer, or a proposal a follower forwards to the leader is
    /// not idempotent, and a stream transport (TCP) never repeats it.
    fn fate(&mut self, from: Endpoint, to: Endpoint, may_duplicate: bool) -> Vec<Duration> {
        self.stats.messages_sent += 1;
        if !self.link_up(from, to) || self.rng.chance(self.loss_permille) {
            self.stats.messages_dropped += 1;
            return Vec::new();
        }
        let mut out = vec![self.draw_delay()];
        if may_duplicate && self.rng.chance(self.dup_permille) {
            self.stats.messages_duplicated += 1;
            out.push(self.draw_delay());
        }
        out
    }

    fn trace_event(&mut self, tag: u64, a: u64, b: u64) {
        let now = self.now_ns();
        self.trace.write_u64(now);
        self.trace.write_u64(tag);
        self.trace.write_u64(a);
        self.trace.write_u64(b);
    }

    /// Delivers to a member's inbox if it is up and the link is still up.
    fn deliver_to_server(&mut self, from: Endpoint, to: NodeId, ev: Event) {
        if !self.link_up(from, Endpoint::Server(to)) {
            self.stats.messages_dropped += 1;
            return;
        }
        let Some(slot) = self.nodes.get(&to) else {
            return;
        };
        let Some(inbox) = &slot.inbox else {
            self.stats.messages_dropped += 1;
            return;
        };
        if let Event::Peer(m) = &ev
            && matches!(m.body, MsgBody::Snapshot(_))
        {
            self.stats.snapshots_sent += 1;
        }
        if inbox.unbounded_send(ev).is_ok() {
            self.stats.messages_delivered += 1;
        }
    }

    /// Checks one member after one step and carries out its `Ready`.
    pub fn after_ready(
        &mut self,
        sim: &Sim,
        id: NodeId,
        node: &Node<EtcdState>,
        rd: Ready<Response, Notification>,
    ) {
        let raft = node.raft();
        let Some(slot) = self.nodes.get(&id) else {
            return;
        };
        let incarnation = slot.incarnation;
        let new_entries: &[etcd_core::raft::Entry] =
            rd.persist.as_ref().map_or(&[], |p| &p.entries[..]);
        let installed = rd
            .persist
            .as_ref()
            .and_then(|p| p.snapshot.as_ref())
            .map(|s| (s.meta.index, s.meta.term));
        let obs = Observation {
            node: id,
            incarnation,
            role: raft.role(),
            term: raft.term(),
            commit: raft.log().committed(),
            voters: &raft.conf().voters,
            log: raft.log(),
            new_entries,
            applied: &rd.applied,
            installed_snapshot: installed,
        };
        let nodes = &self.nodes;
        // A member that lost its disk acknowledged what it held before; the
        // leader counts that until the member catches up (the amnesia guard
        // keeps that safe), so the check does too.
        let durable = |v: NodeId, i: LogIndex, t: Term| {
            nodes.get(&v).is_some_and(|s| {
                s.disk.holds(i, t)
                    || s.held_before_loss
                        .as_ref()
                        .is_some_and(|r| replay_holds(r, i, t))
            })
        };
        if let Err(v) = self.checker.observe(&obs, &durable) {
            let why = format!("t={}ms {v}", self.now_ns() / 1_000_000);
            self.fail(why);
        }
        for e in &rd.applied {
            self.applied.entry(e.index).or_insert_with(|| e.clone());
        }
        for n in &rd.notifications {
            match n {
                Notification::Committed {
                    revision, events, ..
                } => match self.revisions.get(revision) {
                    None => {
                        self.revisions.insert(*revision, events.clone());
                    }
                    Some(first) if first != events => {
                        let why = format!(
                            "{id:?} applied revision {revision} as {events:?}, another member as {first:?}"
                        );
                        self.fail(why);
                    }
                    Some(_) => {}
                },
                Notification::Watch(w) => self.deliver_watch(id, w.clone()),
            }
        }
        if raft.role() == Role::Leader && self.last_leader != id {
            self.last_leader = id;
            self.stats.leader_changes += 1;
        }
        if installed.is_some() {
            self.stats.snapshots_installed += 1;
        }
        if raft.role() == Role::Leader {
            let founding = self.founding_voters.len() as u64;
            let applied_changes = rd
                .applied
                .iter()
                .filter(|e| {
                    e.kind == etcd_core::raft::EntryKind::ConfChange && e.index.0 > founding
                })
                .count();
            self.stats.membership_applied += applied_changes as u64;
        }
        let mut matched = BTreeMap::new();
        if raft.role() == Role::Leader {
            for m in raft.conf().members() {
                if let Some(p) = raft.progress(m) {
                    matched.insert(m, p.matched);
                }
            }
        }
        let summary = Summary {
            role: Some(raft.role()),
            term: raft.term(),
            leader: raft.leader(),
            commit: raft.log().committed(),
            applied: raft.log().applied(),
            voters: raft.conf().voters.clone(),
            learners: raft.conf().learners.clone(),
            digest: {
                let sm = node.state_machine();
                let (h, _) = sm.mvcc().hash_kv(0).unwrap_or((0, 0));
                (u64::from(h) << 32)
                    ^ sm.mvcc().current_revision() as u64
                    ^ (sm.lessor().len() as u64) << 48
            },
            revision: node.state_machine().mvcc().current_revision(),
            leases: node.state_machine().lessor().len(),
            last_index: raft.log().last_index(),
            matched_by_leader: matched,
        };
        self.trace_event(1, id.0, summary.term.0 << 32 | summary.commit.0);
        if self.verbose {
            let p = rd.persist.as_ref();
            println!(
                "{:>8.3}s {id:?} inc={} {:?} t={} vote={:?} lead={:?} commit={} applied={} last={} persisted={} | persist#{:?} ents={:?} hs={:?} snap={:?} | msgs={}",
                self.now_ns() as f64 / 1e9,
                incarnation,
                raft.role(),
                raft.term(),
                raft.vote(),
                raft.leader(),
                raft.log().committed(),
                raft.log().applied(),
                raft.log().last_index(),
                raft.log().persisted(),
                p.map(|p| p.number),
                p.map(|p| p
                    .entries
                    .iter()
                    .map(|e| (e.index.0, e.term.0))
                    .collect::<Vec<_>>()),
                p.and_then(|p| p.hard_state),
                p.and_then(|p| p.snapshot.as_ref().map(|s| (s.meta.index.0, s.meta.term.0))),
                rd.messages
                    .iter()
                    .map(|m| format!(
                        "{}>{}:{}@{}",
                        m.from.0,
                        m.to.0,
                        m.body.kind_name(),
                        m.term.0
                    ))
                    .collect::<Vec<_>>()
                    .join(","),
            );
        }
        if let Some(slot) = self.nodes.get_mut(&id) {
            slot.summary = summary;
            if slot.amnesiac && raft.amnesia().is_none() {
                slot.amnesiac = false;
                slot.held_before_loss = None;
            }
        }

        for m in rd.messages {
            self.trace_event(2, m.from.0 << 8 | m.to.0, m.term.0);
            let (from, to) = (Endpoint::Server(m.from), m.to);
            let idempotent = !matches!(m.body, MsgBody::Propose { .. });
            for delay in self.fate(from, Endpoint::Server(to), idempotent) {
                let sim2 = sim.clone();
                let m2 = m.clone();
                self.spawn_net(async move {
                    madsim::time::sleep(delay).await;
                    sim2.lock().deliver_to_server(from, to, Event::Peer(m2));
                });
            }
        }
        if let Some(p) = rd.persist {
            if p.local_snapshot.is_some() {
                self.stats.local_snapshots += 1;
            }
            if let Some(slot) = self.nodes.get_mut(&id) {
                slot.disk.write(&p);
                if let Some(kick) = &slot.disk_kick {
                    // The disk task may already be gone (crash); nothing to wake then.
                    let _ = kick.unbounded_send(());
                }
            }
        }
        for (rid, out) in rd.replies {
            let client = rid.0 >> 40;
            for delay in self.fate(Endpoint::Server(id), Endpoint::Client(client), false) {
                let sim2 = sim.clone();
                let out2 = out.clone();
                self.spawn_net(async move {
                    madsim::time::sleep(delay).await;
                    let w = sim2.lock();
                    if !w.link_up(Endpoint::Server(id), Endpoint::Client(client)) {
                        return;
                    }
                    if let Some(tx) = w.clients.get(&client) {
                        // A client that has finished no longer listens.
                        let _ = tx.unbounded_send((rid, out2));
                    }
                });
            }
        }
    }

    /// A client's request, over the client's link to `to`.
    pub fn send_request(&mut self, sim: &Sim, client: u64, to: NodeId, id: ReqId, req: ClientReq) {
        let from = Endpoint::Client(client);
        for delay in self.fate(from, Endpoint::Server(to), false) {
            let sim2 = sim.clone();
            let req2 = req.clone();
            self.spawn_net(async move {
                madsim::time::sleep(delay).await;
                sim2.lock()
                    .deliver_to_server(from, to, Event::Client { id, req: req2 });
            });
        }
    }

    /// A watch response goes to its stream's client, in order, while the
    /// stream is connected; a cut link breaks the stream.
    fn deliver_watch(&mut self, from: NodeId, w: WatchResponse) {
        if self.verbose {
            println!(
                "{:>8.3}s watch {from:?} stream={} id={} created={} canceled={} rev={} events={:?}",
                self.now_ns() as f64 / 1e9,
                w.stream,
                w.watch_id,
                w.created,
                w.canceled,
                w.revision,
                w.events
                    .iter()
                    .map(|e| e.kv.mod_revision)
                    .collect::<Vec<_>>()
            );
        }
        let Some(&(client, member)) = self.streams.get(&w.stream) else {
            return;
        };
        if member != from {
            return;
        }
        let cut = !self.link_up(Endpoint::Server(from), Endpoint::Client(client))
            || !self.link_up(Endpoint::Client(client), Endpoint::Server(from));
        let stream = w.stream;
        let msg = if cut {
            WatchMsg::Broken
        } else {
            WatchMsg::Resp(w)
        };
        if cut {
            self.break_stream(stream);
        }
        if let Some(tx) = self.watchers.get(&client) {
            // A watcher that has finished no longer listens.
            let _ = tx.unbounded_send(msg);
        }
    }

    /// Forgets a stream and tells its member to drop its watchers.
    pub fn break_stream(&mut self, stream: StreamId) {
        if let Some((client, member)) = self.streams.remove(&stream) {
            self.admin(
                member,
                Input::ReadLocal(ReqId(0), Request::WatchClose { stream }),
            );
            if let Some(tx) = self.watchers.get(&client) {
                let _ = tx.unbounded_send(WatchMsg::Broken);
            }
        }
    }

    /// A member went down: its streams break.
    pub fn break_streams_of(&mut self, member: NodeId) {
        let dead: Vec<StreamId> = self
            .streams
            .iter()
            .filter(|(_, (_, m))| *m == member)
            .map(|(s, _)| *s)
            .collect();
        for s in dead {
            self.break_stream(s);
        }
    }

    /// An operator's input, delivered directly.
    pub fn admin(&mut self, to: NodeId, input: Input<Request>) {
        if let Some(inbox) = self.nodes.get(&to).and_then(|s| s.inbox.as_ref()) {
            // A member that just went down simply misses it, as with any operator call.
            let _ = inbox.unbounded_send(Event::Admin(input));
        }
    }

    fn spawn_net(&self, fut: impl std::future::Future<Output = ()> + Send + 'static) {
        self.net.as_ref().expect("network node exists").spawn(fut);
    }
}
