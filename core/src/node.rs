//! A member's whole pure logic: Raft plus a state machine, client-request
//! tracking, proposal batching, read-index matching, snapshots and the order in
//! which effects must happen. Drivers (the simulator, the production server)
//! only move bytes and time.
//!
//! # The driver's loop
//! ```text
//! node.step(input)            // any number of times: ticks, peer messages, client requests,
//!                             // Input::Persisted(n) when persist #n is durable
//! let rd = node.ready();
//! send rd.messages            // now; they never depend on unfinished writes
//! write rd.persist            // in number order; when durable (fsync), step Input::Persisted(number)
//! deliver rd.replies          // already applied, and durable here
//! ```
//! Messages that promise durability (append and vote acknowledgements) are
//! held inside the node until the persist they follow is reported durable, so a
//! driver cannot send them too early. Writes must become durable in number
//! order (persist #n durable implies every earlier one is), which any
//! append-only log with fsync gives.

use std::collections::{BTreeMap, VecDeque};

use bytes::{BufMut, Bytes, BytesMut};
use rand_chacha::ChaCha8Rng;
use rand_core::{RngCore, SeedableRng};

use crate::codec::{self, DecodeError, Reader};
use crate::limits::Limits;
use crate::raft::{
    ConfChange, ConfState, Entry, EntryKind, HardState, Message, ProposeError, Raft, RaftConfig,
    ReadCtx, Recovered, RecoveryError, Snapshot, SnapshotMeta,
};
use crate::types::{LogIndex, NodeId, ReqId, Term};

/// A deterministic state machine replicated through the log.
pub trait StateMachine {
    type Request: Clone + std::fmt::Debug;
    type Response: Clone + std::fmt::Debug;
    /// What the state machine reports to its driver besides replies (events, …).
    type Notification: Clone + std::fmt::Debug;

    fn encode_request(req: &Self::Request, buf: &mut BytesMut);
    fn decode_request(data: &[u8]) -> Result<Self::Request, DecodeError>;

    /// Applies a committed request. Must depend only on the current state and
    /// the request (never on a clock or on which member runs it), so that every
    /// member computes the same result.
    fn apply(&mut self, index: LogIndex, req: &Self::Request) -> Self::Response;

    /// Serves a read from the current state.
    fn read(&self, req: &Self::Request) -> Self::Response;

    /// Says that `reqs` are about to be applied or read, in this order, so
    /// the state machine can fetch what they touch ahead of time (a few
    /// cache misses at once instead of one after another). Must change
    /// nothing observable. The default does nothing.
    fn prefetch(&self, reqs: &[Self::Request]) {
        let _ = reqs;
    }

    /// Serves a request that only this member handles (a serializable read,
    /// or local state such as watches). Defaults to `read`.
    fn local(&mut self, req: &Self::Request) -> Self::Response {
        self.read(req)
    }

    fn snapshot(&self) -> Bytes;
    /// Replaces the state with a snapshot's; on error the state is unchanged.
    /// A snapshot in progress (`begin_snapshot`) is dropped.
    fn restore(&mut self, data: &[u8]) -> Result<(), DecodeError>;

    /// Starts a snapshot of the state as it is now. A state machine too big
    /// to encode at once returns `None` and produces it over later
    /// `snapshot_step` calls, while requests keep being applied; the snapshot
    /// is still of the state at this call. Starting one drops any other.
    fn begin_snapshot(&mut self) -> Option<Bytes> {
        Some(self.snapshot())
    }

    /// Continues the snapshot begun, doing work in proportion to `budget`
    /// (bytes, for the etcd state machine); returns it when complete.
    fn snapshot_step(&mut self, _budget: usize) -> Option<Bytes> {
        None
    }

    /// Gives up the snapshot begun, if any.
    fn abort_snapshot(&mut self) {}

    /// Checks a request before it is proposed or read, and completes what the
    /// proposer must choose (ids). `id_seed` is unique per request and member
    /// incarnation. An error is the request's answer.
    fn prepare(&mut self, _req: &mut Self::Request, _id_seed: u64) -> Result<(), Self::Response> {
        Ok(())
    }

    /// Called on every tick. `leader_ready` is true on the leader once it has
    /// applied an entry of its own term (so it has seen everything committed
    /// before it). The requests returned are proposed if this member leads,
    /// and dropped otherwise.
    fn tick(&mut self, _now_ticks: u64, _leader_ready: bool) -> Vec<Self::Request> {
        Vec::new()
    }

    fn take_notifications(&mut self) -> Vec<Self::Notification> {
        Vec::new()
    }

    /// A committed membership change, applied right after Raft applied it.
    fn apply_conf_change(&mut self, _index: LogIndex, _cc: &ConfChange) {}
}

/// Everything a node takes in.
#[derive(Clone, Debug)]
pub enum Input<Req> {
    /// One unit of logical time passed.
    Tick,
    /// A message from a peer.
    Peer(Message),
    /// A write: replicated, applied, then answered.
    Propose(ReqId, Req),
    /// A linearizable read: served after a confirmed read index is applied.
    Read(ReqId, Req),
    /// Served by this member alone, at once: a serializable read, or a
    /// request on local state (watches).
    ReadLocal(ReqId, Req),
    /// A membership change; answered with the new membership once applied.
    ConfChange(ReqId, ConfChange),
    /// Ask the leader to hand over to this member. Not answered; watch the leader.
    TransferLeader(NodeId),
    /// Persist number `n` (and every earlier one) is durable.
    Persisted(u64),
    /// The driver could not make a persist durable (the disk is full, or
    /// failing) and will retry it. Until `StorageRecovered`, new writes are
    /// refused at once with an error; nothing written is acknowledged
    /// before it is durable, as always.
    StorageFailed { no_space: bool },
    /// Writes reach the disk again.
    StorageRecovered,
}

/// Why a request failed. Texts are etcd's where etcd has the same error.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NodeError {
    /// No leader is known; the request was not proposed.
    NoLeader,
    /// The pending-request limit is reached.
    TooManyRequests,
    /// No answer within the request timeout. The write may or may not have
    /// been applied.
    Timeout,
    /// Refused by Raft (transfer in progress, membership change pending or invalid).
    Rejected(ProposeError),
    /// This member's disk is full: it takes no writes until space returns.
    NoSpace,
    /// This member cannot write to its disk.
    StorageFailed,
}

impl std::fmt::Display for NodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NodeError::NoLeader => write!(f, "etcdserver: no leader"),
            NodeError::TooManyRequests => write!(f, "etcdserver: too many requests"),
            NodeError::Timeout => write!(f, "etcdserver: request timed out"),
            NodeError::Rejected(ProposeError::NoLeader) => write!(f, "etcdserver: no leader"),
            NodeError::Rejected(ProposeError::TransferInProgress) => {
                write!(f, "etcdserver: leader changed")
            }
            NodeError::Rejected(ProposeError::ConfChangePending) => {
                write!(f, "etcdserver: unhealthy cluster")
            }
            NodeError::Rejected(ProposeError::InvalidConfChange(why)) => {
                write!(f, "etcdserver: invalid membership change: {why}")
            }
            // etcd's error for a member out of space (gRPC ResourceExhausted).
            NodeError::NoSpace => write!(f, "etcdserver: mvcc: database space exceeded"),
            NodeError::StorageFailed => {
                write!(f, "etcdserver: this member cannot write to its disk")
            }
        }
    }
}

/// The answer to one request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome<R> {
    Done(R),
    /// A membership change was applied; this is the membership after it.
    ConfApplied(ConfState),
    Failed(NodeError),
}

/// One write to make durable. Apply in this order: `snapshot` (a snapshot from
/// the leader replaces the whole log), `local_snapshot` (ours; entries up to
/// `compact_to` may then be dropped), `entries` (discard any stored entries at
/// or after `entries[0].index` first), `hard_state`.
#[derive(Clone, Debug, Default)]
pub struct Persist {
    pub number: u64,
    pub hard_state: Option<HardState>,
    pub entries: Vec<Entry>,
    pub snapshot: Option<Snapshot>,
    pub local_snapshot: Option<(Snapshot, LogIndex)>,
    /// False only when the sole change is the commit index, which Raft can
    /// recover from its peers: such a write need not be fsynced on its own.
    pub must_sync: bool,
}

/// What the driver must do now. See the module docs for the order.
#[derive(Debug)]
pub struct Ready<R, N> {
    pub persist: Option<Persist>,
    pub messages: Vec<Message>,
    pub replies: Vec<(ReqId, Outcome<R>)>,
    /// Entries applied during this ready, only with `NodeConfig::observe_applied`.
    pub applied: Vec<Entry>,
    pub notifications: Vec<N>,
}

impl<R, N> Ready<R, N> {
    pub fn is_empty(&self) -> bool {
        self.persist.is_none()
            && self.messages.is_empty()
            && self.replies.is_empty()
            && self.applied.is_empty()
            && self.notifications.is_empty()
    }
}

#[derive(Clone, Debug)]
pub struct NodeConfig {
    pub raft: RaftConfig,
    /// Take a snapshot after this many applied entries (etcd: `--snapshot-count`).
    pub snapshot_interval_entries: u64,
    /// Entries kept behind a snapshot so slightly lagging followers catch up
    /// from the log instead of a snapshot (etcd keeps 5000).
    pub snapshot_catchup_entries: u64,
    /// A snapshot is encoded this much at a time (bytes, for the etcd state
    /// machine: 8 KiB take some 20 to 70 microseconds), one step per
    /// `ready()`, so requests keep flowing meanwhile.
    pub snapshot_step_budget: usize,
    /// A request not answered within this many ticks fails with `Timeout`.
    pub request_timeout_ticks: u64,
    pub limits: Limits,
    /// Report applied entries in `Ready::applied` (for the simulator's checks).
    pub observe_applied: bool,
}

impl NodeConfig {
    pub fn new(raft: RaftConfig) -> NodeConfig {
        NodeConfig {
            raft,
            snapshot_interval_entries: 100_000,
            snapshot_catchup_entries: 5_000,
            snapshot_step_budget: 8 * 1024,
            request_timeout_ticks: 70,
            limits: Limits::default(),
            observe_applied: false,
        }
    }
}

/// A persist handed out and not yet reported durable.
#[derive(Debug)]
struct InFlight {
    number: u64,
    last_entry: Option<(LogIndex, Term)>,
    snapshot: Option<(LogIndex, Term)>,
    local_snapshot: Option<(Snapshot, LogIndex)>,
}

/// A request waiting for its answer.
#[derive(Debug)]
struct PendingWrite {
    id: ReqId,
    deadline_tick: u64,
}

/// Sequence number of the state machine's own proposals, which nobody awaits.
const INTERNAL_SEQ: u64 = 0;

/// Reads sharing one read-index round.
#[derive(Debug)]
struct ReadBatch<Req> {
    /// Who asked for each of `reqs`.
    ids: Vec<ReqId>,
    reqs: Vec<Req>,
    deadline_tick: u64,
}

const BATCH_TAG: u8 = 1;

/// Requests handed to [`StateMachine::prefetch`] at a time, just before they
/// are applied or read: enough for their cache misses to overlap, few enough
/// that what they fetch is still in cache when it is used.
pub const PREFETCH_AHEAD: usize = 16;

pub struct Node<S: StateMachine> {
    raft: Raft,
    sm: S,
    cfg: NodeConfig,
    /// Distinguishes this incarnation's proposals from an earlier one's with the
    /// same sequence numbers. Drivers give every incarnation its own seed.
    nonce: u64,
    next_seq: u64,
    now_ticks: u64,
    /// Writes received since the last ready; proposed together as one entry.
    batch: Vec<(u64, S::Request)>,
    /// Proposed writes by sequence number (so also by deadline).
    pending_writes: BTreeMap<u64, PendingWrite>,
    pending_conf: BTreeMap<u64, PendingWrite>,
    /// Reads received since the last ready; they share one read-index round.
    read_batch: Vec<(ReqId, S::Request)>,
    next_read_ctx: u64,
    reads_by_ctx: BTreeMap<u64, ReadBatch<S::Request>>,
    /// Confirmed rounds waiting for `applied >= index`.
    reads_ready: Vec<(LogIndex, ReadBatch<S::Request>)>,
    ready_number: u64,
    durable_number: u64,
    in_flight: VecDeque<InFlight>,
    after_persist: VecDeque<(u64, Message)>,
    out_msgs: Vec<Message>,
    replies: Vec<(ReqId, Outcome<S::Response>)>,
    applied_log: Vec<Entry>,
    last_snapshot_index: LogIndex,
    pending_local_snapshot: Option<(Snapshot, LogIndex)>,
    snapshot_in_flight: bool,
    /// A snapshot the state machine is still encoding, of this index.
    snapshot_job: Option<SnapshotMeta>,
    /// Set while the driver cannot write to the disk.
    storage_failure: Option<NodeError>,
    /// The hard state in the last persist that was synced.
    last_synced_hs: HardState,
    /// Entries whose payload failed to decode (skipped identically everywhere).
    undecodable_entries: u64,
    /// Set when the node cannot go on without serving wrong data; it then
    /// ignores all input and the driver must stop.
    fatal: Option<String>,
}

impl<S: StateMachine> Node<S> {
    /// A founding member of a new cluster with these voters (and their opaque
    /// member context).
    pub fn bootstrap(cfg: NodeConfig, sm: S, voters: &[(NodeId, Bytes)]) -> Node<S> {
        let raft = Raft::bootstrap(cfg.raft.clone(), voters);
        Node::with_raft(cfg, sm, raft, LogIndex::ZERO)
    }

    /// Rebuilds a member from what its storage recovered; an empty `Recovered`
    /// gives a member that waits to hear from a leader (one joining a cluster).
    pub fn restart(cfg: NodeConfig, mut sm: S, rec: Recovered) -> Result<Node<S>, RestartError> {
        let snap_index = rec
            .snapshot
            .as_ref()
            .map_or(LogIndex::ZERO, |s| s.meta.index);
        if let Some(s) = &rec.snapshot {
            sm.restore(&s.data).map_err(RestartError::Snapshot)?;
        }
        let hs = rec.hard_state;
        let raft = Raft::new(cfg.raft.clone(), rec).map_err(RestartError::Log)?;
        let mut node = Node::with_raft(cfg, sm, raft, snap_index);
        node.last_synced_hs = hs;
        Ok(node)
    }

    fn with_raft(cfg: NodeConfig, sm: S, raft: Raft, snap_index: LogIndex) -> Node<S> {
        let nonce = ChaCha8Rng::seed_from_u64(cfg.raft.seed ^ 0x6e6f_6e63_655f_6b65).next_u64();
        Node {
            raft,
            sm,
            nonce,
            next_seq: 1,
            now_ticks: 0,
            batch: Vec::new(),
            pending_writes: BTreeMap::new(),
            pending_conf: BTreeMap::new(),
            read_batch: Vec::new(),
            next_read_ctx: 1,
            reads_by_ctx: BTreeMap::new(),
            reads_ready: Vec::new(),
            ready_number: 0,
            durable_number: 0,
            in_flight: VecDeque::new(),
            after_persist: VecDeque::new(),
            out_msgs: Vec::new(),
            replies: Vec::new(),
            applied_log: Vec::new(),
            last_snapshot_index: snap_index,
            pending_local_snapshot: None,
            snapshot_in_flight: false,
            snapshot_job: None,
            storage_failure: None,
            last_synced_hs: HardState::default(),
            undecodable_entries: 0,
            fatal: None,
            cfg,
        }
    }

    pub fn raft(&self) -> &Raft {
        &self.raft
    }

    /// Starts an election now, as etcd's forced campaign does; tests use it too.
    pub fn campaign(&mut self) {
        self.raft.campaign();
    }

    pub fn state_machine(&self) -> &S {
        &self.sm
    }

    /// The state machine, for a driver's work that changes nothing
    /// replicated (encoding a client's snapshot in steps). Applying
    /// anything through it would fork this member from the others.
    pub fn state_machine_mut(&mut self) -> &mut S {
        &mut self.sm
    }

    pub fn id(&self) -> NodeId {
        self.raft.id()
    }

    pub fn config(&self) -> &NodeConfig {
        &self.cfg
    }

    pub fn undecodable_entries(&self) -> u64 {
        self.undecodable_entries
    }

    /// Why the node stopped, if it did. A stopped node ignores all input.
    pub fn fatal(&self) -> Option<&str> {
        self.fatal.as_deref()
    }

    /// Requests accepted and not yet answered.
    /// The applied index of the last snapshot taken or begun (or restored).
    pub fn last_snapshot_index(&self) -> LogIndex {
        self.last_snapshot_index
    }

    /// Whether the state machine is still encoding a snapshot.
    pub fn snapshot_in_progress(&self) -> bool {
        self.snapshot_job.is_some()
    }

    pub fn pending_requests(&self) -> usize {
        self.pending_writes.len()
            + self.pending_conf.len()
            + self.read_batch.len()
            + self
                .reads_by_ctx
                .values()
                .map(|b| b.reqs.len())
                .sum::<usize>()
            + self
                .reads_ready
                .iter()
                .map(|(_, b)| b.reqs.len())
                .sum::<usize>()
    }

    pub fn step(&mut self, input: Input<S::Request>) {
        if self.fatal.is_some() {
            return;
        }
        match input {
            Input::Tick => self.tick(),
            Input::Peer(m) => {
                self.raft.step(m);
                self.restore_if_needed();
            }
            Input::Propose(id, req) => self.propose(id, req),
            Input::Read(id, mut req) => {
                if !self.admit(id) {
                    return;
                }
                match self.sm.prepare(&mut req, 0) {
                    Ok(()) => self.read_batch.push((id, req)),
                    Err(resp) => self.replies.push((id, Outcome::Done(resp))),
                }
            }
            Input::ReadLocal(id, mut req) => {
                let resp = match self.sm.prepare(&mut req, 0) {
                    Ok(()) => self.sm.local(&req),
                    Err(resp) => resp,
                };
                self.replies.push((id, Outcome::Done(resp)));
            }
            Input::ConfChange(id, cc) => self.propose_conf_change(id, cc),
            Input::TransferLeader(target) => {
                // Without a known leader there is nobody to transfer from; the
                // caller watches the leader and retries.
                let _no_leader_means_nothing_to_do = self.raft.transfer_leader(target);
            }
            Input::Persisted(n) => self.on_persisted(n),
            Input::StorageFailed { no_space } => {
                self.storage_failure = Some(if no_space {
                    NodeError::NoSpace
                } else {
                    NodeError::StorageFailed
                });
            }
            Input::StorageRecovered => self.storage_failure = None,
        }
    }

    /// A snapshot from the leader replaced the log: the state machine follows
    /// at once, before anything is applied or read on top of it.
    fn restore_if_needed(&mut self) {
        if let Some(snap) = self.raft.take_snapshot_to_restore() {
            match self.sm.restore(&snap.data) {
                Ok(()) => {
                    // Our own snapshot in progress was of the replaced state.
                    self.snapshot_job = None;
                    self.last_snapshot_index = snap.meta.index;
                }
                Err(e) => {
                    self.fatal = Some(format!(
                        "snapshot at index {} from the leader does not decode: {e}",
                        snap.meta.index
                    ));
                }
            }
        }
    }

    /// Answers a write with the storage error while the disk fails.
    fn refuse_while_storage_fails(&mut self, id: ReqId) -> bool {
        let Some(e) = &self.storage_failure else {
            return false;
        };
        self.replies.push((id, Outcome::Failed(e.clone())));
        true
    }

    /// Checks the pending-request limit, answering `TooManyRequests` if full.
    fn admit(&mut self, id: ReqId) -> bool {
        if self.pending_requests() >= self.cfg.limits.max_pending_requests {
            self.replies
                .push((id, Outcome::Failed(NodeError::TooManyRequests)));
            return false;
        }
        true
    }

    fn propose(&mut self, id: ReqId, mut req: S::Request) {
        if !self.admit(id) || self.refuse_while_storage_fails(id) {
            return;
        }
        let log = self.raft.log();
        if log.committed().0.saturating_sub(log.applied().0)
            > self.cfg.limits.max_apply_backlog_entries
        {
            // Applying lags far behind: more writes would only queue.
            self.replies
                .push((id, Outcome::Failed(NodeError::TooManyRequests)));
            return;
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        if let Err(resp) = self.sm.prepare(&mut req, self.nonce ^ seq.rotate_left(32)) {
            self.replies.push((id, Outcome::Done(resp)));
            return;
        }
        if self.raft.leader().is_none() {
            self.replies
                .push((id, Outcome::Failed(NodeError::NoLeader)));
            return;
        }
        let deadline_tick = self.now_ticks + self.cfg.request_timeout_ticks;
        self.pending_writes
            .insert(seq, PendingWrite { id, deadline_tick });
        self.batch.push((seq, req));
        if self.batch.len() >= self.cfg.limits.max_requests_per_entry {
            self.flush_batch();
        }
    }

    fn propose_conf_change(&mut self, id: ReqId, mut cc: ConfChange) {
        if !self.admit(id) || self.refuse_while_storage_fails(id) {
            return;
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        cc.id = self.nonce ^ seq;
        let data = codec::encode_conf_change(&cc);
        match self.raft.propose(vec![(EntryKind::ConfChange, data)]) {
            Ok(()) => {
                let deadline_tick = self.now_ticks + self.cfg.request_timeout_ticks;
                self.pending_conf
                    .insert(seq, PendingWrite { id, deadline_tick });
            }
            Err(e) => self
                .replies
                .push((id, Outcome::Failed(NodeError::Rejected(e)))),
        }
    }

    /// Proposes the batched writes as one entry:
    /// `tag, nonce, origin, count, count × (seq, request)`.
    fn flush_batch(&mut self) {
        if self.batch.is_empty() {
            return;
        }
        let batch = std::mem::take(&mut self.batch);
        let mut buf = BytesMut::with_capacity(32 + batch.len() * 32);
        buf.put_u8(BATCH_TAG);
        buf.put_u64_le(self.nonce);
        buf.put_u64_le(self.raft.id().0);
        codec::put_uvarint(&mut buf, batch.len() as u64);
        let mut scratch = BytesMut::new();
        for (seq, req) in &batch {
            codec::put_uvarint(&mut buf, *seq);
            scratch.clear();
            S::encode_request(req, &mut scratch);
            codec::put_bytes(&mut buf, &scratch);
        }
        if let Err(e) = self.raft.propose(vec![(EntryKind::Normal, buf.freeze())]) {
            for (seq, _) in batch {
                if let Some(w) = self.pending_writes.remove(&seq) {
                    self.replies
                        .push((w.id, Outcome::Failed(NodeError::Rejected(e.clone()))));
                }
            }
        }
    }

    fn flush_reads(&mut self) {
        if self.read_batch.is_empty() {
            return;
        }
        let (ids, reqs): (Vec<ReqId>, Vec<S::Request>) =
            std::mem::take(&mut self.read_batch).into_iter().unzip();
        let ctx = ReadCtx {
            origin: self.raft.id(),
            id: self.next_read_ctx,
        };
        self.next_read_ctx += 1;
        match self.raft.read_index(ctx) {
            Ok(()) => {
                let deadline_tick = self.now_ticks + self.cfg.request_timeout_ticks;
                self.reads_by_ctx.insert(
                    ctx.id,
                    ReadBatch {
                        ids,
                        reqs,
                        deadline_tick,
                    },
                );
            }
            Err(_) => {
                for id in ids {
                    self.replies
                        .push((id, Outcome::Failed(NodeError::NoLeader)));
                }
            }
        }
    }

    fn tick(&mut self) {
        self.raft.tick();
        self.now_ticks += 1;
        let now = self.now_ticks;
        // The leader has seen all earlier terms' entries once it applied one of its own.
        let leader_ready = self.raft.role() == crate::raft::Role::Leader
            && self.raft.log().term(self.raft.log().applied()) == Some(self.raft.term());
        let internal = self.sm.tick(now, leader_ready);
        if self.raft.role() == crate::raft::Role::Leader {
            self.batch
                .extend(internal.into_iter().map(|r| (INTERNAL_SEQ, r)));
        }
        for pending in [&mut self.pending_writes, &mut self.pending_conf] {
            while let Some(entry) = pending.first_entry() {
                if entry.get().deadline_tick > now {
                    break;
                }
                let w = entry.remove();
                self.replies
                    .push((w.id, Outcome::Failed(NodeError::Timeout)));
            }
        }
        while let Some(entry) = self.reads_by_ctx.first_entry() {
            if entry.get().deadline_tick > now {
                break;
            }
            for id in entry.remove().ids {
                self.replies.push((id, Outcome::Failed(NodeError::Timeout)));
            }
        }
        let replies = &mut self.replies;
        self.reads_ready.retain_mut(|(_, b)| {
            if b.deadline_tick > now {
                return true;
            }
            for id in b.ids.drain(..) {
                replies.push((id, Outcome::Failed(NodeError::Timeout)));
            }
            false
        });
    }

    fn on_persisted(&mut self, n: u64) {
        if n <= self.durable_number {
            return;
        }
        assert!(n <= self.ready_number, "persist #{n} was never handed out");
        self.durable_number = n;
        while self.in_flight.front().is_some_and(|f| f.number <= n) {
            let f = self.in_flight.pop_front().expect("checked non-empty");
            self.raft.on_persisted(f.last_entry, f.snapshot);
            if let Some((snap, compact_to)) = f.local_snapshot {
                self.snapshot_in_flight = false;
                self.raft.set_local_snapshot(snap, compact_to);
            }
        }
    }

    /// Collects everything the driver must do now. Call after every batch of inputs.
    pub fn ready(&mut self) -> Ready<S::Response, S::Notification> {
        if self.fatal.is_some() {
            return Ready {
                persist: None,
                messages: Vec::new(),
                replies: Vec::new(),
                applied: Vec::new(),
                notifications: Vec::new(),
            };
        }
        self.flush_batch();
        self.flush_reads();
        // Releasing our own messages (a candidate's vote for itself) can make
        // more progress possible at once; a few rounds settle it, and anything
        // left over shows in `has_ready`.
        for _ in 0..4 {
            let stepped = self.release_after_persist();
            let applied = self.apply_committed();
            self.collect_read_states();
            if !stepped && !applied {
                break;
            }
        }
        self.continue_snapshot();
        self.maybe_snapshot();
        self.raft.free_some(crate::raft::COMPACT_ENTRIES_PER_STEP);
        // Tag what is still queued before deciding the persist, so that each
        // message waits for the write that records the state it depends on.
        let tag = self.current_tag();
        for m in self.raft.take_msgs_after_persist() {
            self.after_persist.push_back((tag, m));
        }
        let persist = self.take_persist();
        debug_assert!(persist.as_ref().is_none_or(|p| p.number == tag));
        self.out_msgs.extend(self.raft.take_msgs());
        Ready {
            persist,
            messages: std::mem::take(&mut self.out_msgs),
            replies: std::mem::take(&mut self.replies),
            applied: std::mem::take(&mut self.applied_log),
            notifications: self.sm.take_notifications(),
        }
    }

    /// Whether `ready()` would have anything to do.
    pub fn has_ready(&self) -> bool {
        if self.fatal.is_some() {
            return false;
        }
        let log = self.raft.log();
        self.raft.has_unpersisted()
            || self.raft.has_msgs()
            || self.pending_local_snapshot.is_some()
            || self.snapshot_job.is_some()
            || !self.replies.is_empty()
            || !self.batch.is_empty()
            || !self.read_batch.is_empty()
            || !self.out_msgs.is_empty()
            || self
                .after_persist
                .front()
                .is_some_and(|(n, _)| *n <= self.durable_number)
            || self.raft.has_read_states()
            || self
                .reads_ready
                .iter()
                .any(|(index, _)| *index <= log.applied())
            || log.committed().min(log.persisted()) > log.applied()
    }

    /// The persist that must be durable before a message generated now may
    /// leave: the next one if something waits to be persisted, else the last
    /// one handed out.
    fn current_tag(&self) -> u64 {
        if self.raft.has_unpersisted() || self.pending_local_snapshot.is_some() {
            self.ready_number + 1
        } else {
            self.ready_number
        }
    }

    /// Queues Raft's durability-dependent messages and releases those whose
    /// persist is durable. Returns whether a message to ourselves was stepped.
    fn release_after_persist(&mut self) -> bool {
        let tag = self.current_tag();
        for m in self.raft.take_msgs_after_persist() {
            self.after_persist.push_back((tag, m));
        }
        let mut stepped = false;
        while self
            .after_persist
            .front()
            .is_some_and(|(n, _)| *n <= self.durable_number)
        {
            let (_, m) = self.after_persist.pop_front().expect("checked non-empty");
            if m.to == self.raft.id() {
                self.raft.step(m);
                stepped = true;
            } else {
                self.out_msgs.push(m);
            }
        }
        stepped
    }

    /// Applies committed, locally durable entries. Returns whether any were.
    fn apply_committed(&mut self) -> bool {
        let entries = self
            .raft
            .log()
            .next_to_apply(self.cfg.limits.max_apply_bytes_per_ready);
        if entries.is_empty() {
            return false;
        }
        for e in entries {
            match e.kind {
                EntryKind::Normal if e.data.is_empty() => {} // a leader's no-op
                EntryKind::Normal => {
                    if self.apply_batch(e.index, &e.data).is_err() {
                        self.undecodable_entries += 1;
                    }
                }
                EntryKind::ConfChange => match codec::decode_conf_change(&e.data) {
                    Ok(cc) => {
                        let conf = self.raft.apply_conf_change(&cc);
                        self.sm.apply_conf_change(e.index, &cc);
                        let seq = cc.id ^ self.nonce;
                        if cc.id != 0
                            && let Some(w) = self.pending_conf.remove(&seq)
                        {
                            self.replies.push((w.id, Outcome::ConfApplied(conf)));
                        }
                    }
                    Err(_) => self.undecodable_entries += 1,
                },
            }
            let index = e.index;
            if self.cfg.observe_applied {
                self.applied_log.push(e);
            }
            self.raft.applied_to(index);
        }
        true
    }

    fn apply_batch(&mut self, index: LogIndex, data: &[u8]) -> Result<(), DecodeError> {
        let mut r = Reader::new(data);
        let tag = r.u8()?;
        if tag != BATCH_TAG {
            return Err(DecodeError::BadTag(tag));
        }
        let nonce = r.u64_le()?;
        let origin = NodeId(r.u64_le()?);
        let ours = nonce == self.nonce && origin == self.raft.id();
        let n = r.count(2)?;
        let mut seqs = Vec::with_capacity(n);
        let mut reqs = Vec::with_capacity(n);
        for _ in 0..n {
            seqs.push(r.uvarint()?);
            reqs.push(S::decode_request(r.bytes()?)?);
        }
        r.finish()?;
        for (seqs, reqs) in seqs.chunks(PREFETCH_AHEAD).zip(reqs.chunks(PREFETCH_AHEAD)) {
            self.sm.prefetch(reqs);
            for (seq, req) in seqs.iter().zip(reqs) {
                let resp = self.sm.apply(index, req);
                if ours && let Some(w) = self.pending_writes.remove(seq) {
                    self.replies.push((w.id, Outcome::Done(resp)));
                }
            }
        }
        Ok(())
    }

    /// Moves confirmed read rounds to wait for apply, and serves those whose
    /// index is applied.
    fn collect_read_states(&mut self) {
        for rs in self.raft.take_read_states() {
            if rs.ctx.origin != self.raft.id() {
                continue;
            }
            if let Some(batch) = self.reads_by_ctx.remove(&rs.ctx.id) {
                self.reads_ready.push((rs.index, batch));
            }
        }
        let applied = self.raft.log().applied();
        let (sm, replies) = (&self.sm, &mut self.replies);
        self.reads_ready.retain_mut(|(index, batch)| {
            if *index > applied {
                return true;
            }
            for (ids, reqs) in batch
                .ids
                .chunks(PREFETCH_AHEAD)
                .zip(batch.reqs.chunks(PREFETCH_AHEAD))
            {
                sm.prefetch(reqs);
                for (id, req) in ids.iter().zip(reqs) {
                    replies.push((*id, Outcome::Done(sm.read(req))));
                }
            }
            batch.ids.clear();
            batch.reqs.clear();
            false
        });
    }

    fn maybe_snapshot(&mut self) {
        let applied = self.raft.log().applied();
        let due =
            applied.distance_from(self.last_snapshot_index) >= self.cfg.snapshot_interval_entries;
        if !due || self.snapshot_in_flight || self.snapshot_job.is_some() {
            return;
        }
        let term = self
            .raft
            .log()
            .term(applied)
            .expect("the applied entry is in the log");
        let meta = SnapshotMeta {
            index: applied,
            term,
            conf: self.raft.conf().clone(),
        };
        self.last_snapshot_index = applied;
        match self.sm.begin_snapshot() {
            Some(data) => self.snapshot_done(meta, data),
            None => self.snapshot_job = Some(meta),
        }
    }

    /// One step of a snapshot the state machine is encoding.
    fn continue_snapshot(&mut self) {
        if self.snapshot_job.is_none() {
            return;
        }
        if let Some(data) = self.sm.snapshot_step(self.cfg.snapshot_step_budget)
            && let Some(meta) = self.snapshot_job.take()
        {
            self.snapshot_done(meta, data);
        }
    }

    fn snapshot_done(&mut self, meta: SnapshotMeta, data: Bytes) {
        let compact_to = LogIndex(
            meta.index
                .0
                .saturating_sub(self.cfg.snapshot_catchup_entries),
        );
        self.pending_local_snapshot = Some((Snapshot { meta, data }, compact_to));
        self.snapshot_in_flight = true;
    }

    fn take_persist(&mut self) -> Option<Persist> {
        let local_snapshot = self.pending_local_snapshot.take();
        if !self.raft.has_unpersisted() && local_snapshot.is_none() {
            return None;
        }
        let (hard_state, entries, snapshot) = self.raft.take_persist();
        let prev = self.last_synced_hs;
        let must_sync = !entries.is_empty()
            || snapshot.is_some()
            || local_snapshot.is_some()
            || hard_state.is_some_and(|hs| hs.term != prev.term || hs.vote != prev.vote);
        if let Some(hs) = hard_state {
            self.last_synced_hs = hs;
        }
        self.ready_number += 1;
        let number = self.ready_number;
        self.in_flight.push_back(InFlight {
            number,
            last_entry: entries.last().map(|e| (e.index, e.term)),
            snapshot: snapshot.as_ref().map(|s| (s.meta.index, s.meta.term)),
            local_snapshot: local_snapshot.clone(),
        });
        Some(Persist {
            number,
            hard_state,
            entries,
            snapshot,
            local_snapshot,
            must_sync,
        })
    }
}

/// The requests in a batch entry, in order, as every member applies them
/// (for observers such as the simulator's history checks). An empty entry
/// (a leader's no-op) has none.
pub fn decode_batch<S: StateMachine>(data: &[u8]) -> Result<Vec<S::Request>, DecodeError> {
    if data.is_empty() {
        return Ok(Vec::new());
    }
    let mut r = Reader::new(data);
    let tag = r.u8()?;
    if tag != BATCH_TAG {
        return Err(DecodeError::BadTag(tag));
    }
    let _nonce = r.u64_le()?;
    let _origin = r.u64_le()?;
    let n = r.count(2)?;
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let _seq = r.uvarint()?;
        out.push(S::decode_request(r.bytes()?)?);
    }
    r.finish()?;
    Ok(out)
}

/// Why a member could not be rebuilt from its storage.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RestartError {
    Log(RecoveryError),
    Snapshot(DecodeError),
}

impl std::fmt::Display for RestartError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RestartError::Log(e) => write!(f, "{e}"),
            RestartError::Snapshot(e) => write!(f, "snapshot does not decode: {e}"),
        }
    }
}
