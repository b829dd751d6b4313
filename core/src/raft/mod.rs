//! Raft, as described in Ongaro's dissertation and as etcd runs it: pre-vote,
//! check-quorum, pipelined replication with flow control and fast backtracking,
//! ReadIndex, leadership transfer, snapshots, and single-server membership changes.
//!
//! This is the protocol alone. [`crate::node::Node`] wraps it with a state
//! machine, request tracking and the persist/send/apply ordering a driver follows.
//!
//! # Durability contract
//! Messages that promise something about this node's storage (append and vote
//! acknowledgements) and messages to itself (a candidate's own vote) are held in
//! `msgs_after_persist`; the node releases them only once the driver reports the
//! write that precedes them durable. A leader's appends to followers may leave
//! before its own write (dissertation §10.2.1); the leader counts itself towards
//! a commit quorum only up to its own durable index.

pub mod log;
pub mod message;
pub mod progress;
pub mod quorum;
mod read_only;
pub mod wire;

use std::collections::BTreeMap;

use bytes::Bytes;
use rand_chacha::ChaCha8Rng;
use rand_core::{RngCore, SeedableRng};

use crate::codec;
use crate::types::{LogIndex, NodeId, Term};
pub use log::RaftLog;
pub use message::*;
use progress::{Progress, ProgressState};
use quorum::VoteResult;
use read_only::ReadOnly;

/// Raft's tunables. Time is in ticks; the driver decides how long a tick is.
#[derive(Clone, Debug)]
pub struct RaftConfig {
    pub id: NodeId,
    /// A follower campaigns after a randomized timeout in `[t, 2t)` ticks without
    /// hearing from a leader. etcd: `--election-timeout` / `--heartbeat-interval`.
    pub election_timeout_ticks: u32,
    pub heartbeat_interval_ticks: u32,
    /// Upper bound on the entry bytes in one append message (at least one entry is
    /// always sent).
    pub max_msg_bytes: u64,
    /// Append messages in flight per follower in the replicate state.
    pub max_inflight_msgs: u32,
    /// Pre-vote: a node that cannot win does not disturb the cluster's term.
    pub pre_vote: bool,
    /// A leader that has not heard from a quorum within an election timeout steps
    /// down, and followers that have a live leader ignore vote requests.
    pub check_quorum: bool,
    /// A learner may be promoted once its matched index is at least this share
    /// (in percent) of the leader's (etcd's `isLearnerReady` uses 90).
    pub learner_promotion_ready_pct: u64,
    /// Seeds this node's election-timeout randomness.
    pub seed: u64,
    /// Deliberate protocol bugs for checker tests; all off by default.
    pub bugs: Bugs,
}

impl RaftConfig {
    pub fn new(id: NodeId, seed: u64) -> RaftConfig {
        RaftConfig {
            id,
            election_timeout_ticks: 10,
            heartbeat_interval_ticks: 1,
            max_msg_bytes: 1024 * 1024,
            max_inflight_msgs: 256,
            pre_vote: true,
            check_quorum: true,
            learner_promotion_ready_pct: 90,
            seed,
            bugs: Bugs::default(),
        }
    }

    /// Checks the relations between the settings.
    pub fn validate(&self) -> Result<(), String> {
        if self.id.is_none() {
            return Err("raft: node id must not be 0".into());
        }
        if self.heartbeat_interval_ticks == 0 {
            return Err("raft: heartbeat interval must be at least one tick".into());
        }
        if self.election_timeout_ticks <= self.heartbeat_interval_ticks {
            return Err(
                "raft: election timeout must be greater than the heartbeat interval".into(),
            );
        }
        if self.max_inflight_msgs == 0 {
            return Err("raft: max inflight messages must be at least 1".into());
        }
        if self.learner_promotion_ready_pct > 100 {
            return Err("raft: learner promotion threshold is a percentage".into());
        }
        Ok(())
    }
}

/// Deliberately broken behaviours, compiled in only with the `bug-injection`
/// feature (which only the simulator's tests enable), to prove that the
/// simulator's checkers catch each of them.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct Bugs {
    /// A leader commits an entry of an earlier term by counting replicas (the
    /// dissertation's Figure 3.7 error).
    #[cfg(feature = "bug-injection")]
    pub commit_old_term_by_count: bool,
    /// A node grants its vote again within a term it already voted in.
    #[cfg(feature = "bug-injection")]
    pub vote_twice: bool,
    /// Append and vote acknowledgements leave before the write they promise is durable.
    #[cfg(feature = "bug-injection")]
    pub ack_before_durable: bool,
}

impl Bugs {
    fn commit_old_term_by_count(&self) -> bool {
        #[cfg(feature = "bug-injection")]
        return self.commit_old_term_by_count;
        #[cfg(not(feature = "bug-injection"))]
        false
    }
    fn vote_twice(&self) -> bool {
        #[cfg(feature = "bug-injection")]
        return self.vote_twice;
        #[cfg(not(feature = "bug-injection"))]
        false
    }
    fn ack_before_durable(&self) -> bool {
        #[cfg(feature = "bug-injection")]
        return self.ack_before_durable;
        #[cfg(not(feature = "bug-injection"))]
        false
    }
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    Follower,
    PreCandidate,
    Candidate,
    Leader,
}

/// Why a local proposal was not accepted. Expected outcomes, not failures.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProposeError {
    /// No leader is known (an election is under way).
    NoLeader,
    /// Leadership is being transferred; proposals are refused until it settles.
    TransferInProgress,
    /// Another membership change is not yet applied, or the leader has not yet
    /// committed an entry of its term.
    ConfChangePending,
    /// The membership change itself is not allowed (see the message).
    InvalidConfChange(String),
}

/// Why recovered storage could not be turned back into a node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RecoveryError {
    /// Entries are not contiguous, or do not follow the snapshot.
    Gap { expected: LogIndex, found: LogIndex },
    /// The hard state's commit index lies beyond the recovered log: committed
    /// entries were lost.
    CommitBeyondLog { commit: LogIndex, last: LogIndex },
    /// Entry terms decrease, or exceed the hard state's term.
    BadTerm { index: LogIndex },
}

impl std::fmt::Display for RecoveryError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RecoveryError::Gap { expected, found } => {
                write!(f, "raft: log gap: expected index {expected}, found {found}")
            }
            RecoveryError::CommitBeyondLog { commit, last } => write!(
                f,
                "raft: commit index {commit} is beyond the last log index {last}: committed entries are missing"
            ),
            RecoveryError::BadTerm { index } => write!(f, "raft: bad term at index {index}"),
        }
    }
}

/// What a node's storage held when it restarted.
#[derive(Clone, Debug, Default)]
pub struct Recovered {
    pub hard_state: HardState,
    pub snapshot: Option<Snapshot>,
    /// Durable entries, contiguous; those at or below the snapshot index are skipped.
    pub entries: Vec<Entry>,
    /// This member's log was lost or damaged and it restarts without it: it
    /// may have voted in terms it no longer remembers, so it must neither
    /// vote nor campaign until it has caught up (see `Amnesia`).
    pub lost_state: bool,
}

/// A member that restarted without its log ("amnesia") neither votes nor
/// campaigns until it has caught up with a leader of some term T: its commit
/// index reaches the commit the leader reported, at an entry of term T. From
/// then on it votes only in terms above T.
///
/// Why this is (nearly) enough: the votes its former self cast are in terms
/// it may no longer know. A leader of term T whose term-T entry we committed
/// had a majority at term T, so no election above T had been won before it.
/// The one window left open is a candidate of a higher term that has not yet
/// won and still holds our former vote within its election timeout; the
/// alternative (never voting again under this identity) is Raft's advice
/// for lost disks and remains the operator's choice.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Amnesia {
    /// The first leader heard from after the restart, and its commit index.
    pub target: Option<(Term, LogIndex)>,
}

/// Compacted entries freed per step (`Raft::free_some`).
pub const COMPACT_ENTRIES_PER_STEP: usize = 4096;

/// Bound on read-index rounds a leader tracks at once; older rounds are dropped
/// (their readers time out and retry).
pub const MAX_PENDING_READ_ROUNDS: usize = 4096;

pub struct Raft {
    cfg: RaftConfig,
    id: NodeId,
    rng: ChaCha8Rng,
    term: Term,
    vote: NodeId,
    role: Role,
    leader: NodeId,
    pub(crate) log: RaftLog,
    conf: ConfState,
    /// Leader only: every member's progress, including our own.
    progress: BTreeMap<NodeId, Progress>,
    votes: BTreeMap<NodeId, bool>,
    election_elapsed_ticks: u32,
    heartbeat_elapsed_ticks: u32,
    randomized_election_timeout_ticks: u32,
    lead_transferee: Option<NodeId>,
    /// Leader only: index of the last membership change proposed; another may be
    /// proposed only once this one is applied.
    pending_conf_index: LogIndex,
    read_only: ReadOnly,
    /// Leader only: read requests waiting for the first commit of this term.
    pending_read_requests: Vec<(NodeId, ReadCtx)>,
    /// The latest snapshot, sent to followers that are too far behind.
    snapshot: Option<Snapshot>,
    /// Entries compacted away, freed a step at a time (`free_some`).
    garbage: Vec<Entry>,
    /// A snapshot received from the leader that the driver has not yet been given.
    pending_snapshot: Option<Snapshot>,
    /// The same snapshot, until the node has restored its state machine from it.
    snapshot_to_restore: Option<Snapshot>,
    msgs: Vec<Message>,
    msgs_after_persist: Vec<Message>,
    read_states: Vec<ReadState>,
    /// The hard state most recently handed out for persisting.
    last_hard_state: HardState,
    /// Did our own durable index advance since the last check-quorum window?
    persist_progress_in_window: bool,
    /// Set while recovering from a lost log (see `Amnesia`).
    amnesia: Option<Amnesia>,
    /// Votes in terms below this are refused (after an amnesia).
    min_vote_term: Term,
}

impl Raft {
    /// Rebuilds a node from what its storage recovered (empty for a new node).
    pub fn new(cfg: RaftConfig, rec: Recovered) -> Result<Raft, RecoveryError> {
        cfg.validate().expect("invalid raft config");
        let (offset, offset_term, conf) = match &rec.snapshot {
            Some(s) => (s.meta.index, s.meta.term, s.meta.conf.clone()),
            None => (LogIndex::ZERO, Term::ZERO, ConfState::default()),
        };
        let mut expected = offset.next();
        let mut prev_term = offset_term;
        let mut entries = Vec::with_capacity(rec.entries.len());
        for e in rec.entries {
            if e.index <= offset {
                continue;
            }
            if e.index != expected {
                return Err(RecoveryError::Gap {
                    expected,
                    found: e.index,
                });
            }
            if e.term < prev_term || e.term > rec.hard_state.term {
                return Err(RecoveryError::BadTerm { index: e.index });
            }
            prev_term = e.term;
            expected = expected.next();
            entries.push(e);
        }
        let mut log = RaftLog::new(offset, offset_term, entries);
        if rec.hard_state.commit > log.last_index() {
            return Err(RecoveryError::CommitBeyondLog {
                commit: rec.hard_state.commit,
                last: log.last_index(),
            });
        }
        log.commit_to(rec.hard_state.commit);
        let mut r = Raft {
            id: cfg.id,
            rng: ChaCha8Rng::seed_from_u64(cfg.seed),
            term: rec.hard_state.term,
            vote: rec.hard_state.vote,
            role: Role::Follower,
            leader: NodeId::NONE,
            log,
            conf,
            progress: BTreeMap::new(),
            votes: BTreeMap::new(),
            election_elapsed_ticks: 0,
            heartbeat_elapsed_ticks: 0,
            randomized_election_timeout_ticks: cfg.election_timeout_ticks,
            lead_transferee: None,
            pending_conf_index: LogIndex::ZERO,
            read_only: ReadOnly::default(),
            pending_read_requests: Vec::new(),
            snapshot: rec.snapshot,
            garbage: Vec::new(),
            pending_snapshot: None,
            snapshot_to_restore: None,
            msgs: Vec::new(),
            msgs_after_persist: Vec::new(),
            read_states: Vec::new(),
            last_hard_state: rec.hard_state,
            persist_progress_in_window: false,
            amnesia: rec.lost_state.then_some(Amnesia { target: None }),
            min_vote_term: Term::ZERO,
            cfg,
        };
        r.last_hard_state.commit = r.log.committed;
        r.reset_randomized_election_timeout();
        Ok(r)
    }

    /// A founding member of a new cluster: the initial membership is written as
    /// conf-change entries 1..=n at term 1 and committed, exactly as on every
    /// other founding member, so that a member joining later can rebuild it from
    /// the log. The entries still have to be persisted.
    pub fn bootstrap(cfg: RaftConfig, voters: &[(NodeId, Bytes)]) -> Raft {
        assert!(!voters.is_empty(), "bootstrap needs at least one voter");
        let mut r = Raft::new(cfg, Recovered::default()).expect("empty storage always recovers");
        let entries: Vec<Entry> = voters
            .iter()
            .enumerate()
            .map(|(k, (id, ctx))| Entry {
                term: Term(1),
                index: LogIndex(k as u64 + 1),
                kind: EntryKind::ConfChange,
                data: codec::encode_conf_change(&ConfChange {
                    id: 0,
                    kind: ConfChangeKind::AddVoter,
                    node: *id,
                    context: ctx.clone(),
                }),
            })
            .collect();
        let n = entries.len() as u64;
        r.log.append(entries);
        r.log.commit_to(LogIndex(n));
        r.term = Term(1);
        r
    }

    // ---- read-only view ----------------------------------------------------

    pub fn id(&self) -> NodeId {
        self.id
    }
    pub fn term(&self) -> Term {
        self.term
    }
    pub fn vote(&self) -> NodeId {
        self.vote
    }
    pub fn role(&self) -> Role {
        self.role
    }
    pub fn leader(&self) -> NodeId {
        self.leader
    }
    pub fn conf(&self) -> &ConfState {
        &self.conf
    }
    pub fn log(&self) -> &RaftLog {
        &self.log
    }
    pub fn lead_transferee(&self) -> Option<NodeId> {
        self.lead_transferee
    }
    pub fn hard_state(&self) -> HardState {
        HardState {
            term: self.term,
            vote: self.vote,
            commit: self.log.committed,
        }
    }
    /// Leader only: the progress of `id`.
    pub fn progress(&self, id: NodeId) -> Option<&Progress> {
        self.progress.get(&id)
    }
    pub fn snapshot(&self) -> Option<&Snapshot> {
        self.snapshot.as_ref()
    }
    /// Whether this node may campaign: it is a voter in its applied membership.
    pub fn promotable(&self) -> bool {
        self.conf.voters.contains(&self.id) && self.amnesia.is_none()
    }

    /// Whether this member is still catching up after losing its log.
    pub fn amnesia(&self) -> Option<Amnesia> {
        self.amnesia
    }

    /// Catching up after an amnesia: remember the first leader's commit, and
    /// clear the guard once we have committed up to it at an entry of its term.
    fn note_leader_contact(&mut self, leader_commit: Option<LogIndex>) {
        let term = self.term;
        let Some(a) = &mut self.amnesia else { return };
        if a.target.is_none() {
            // Only an append carries the leader's real commit index.
            a.target = leader_commit.map(|c| (term, c));
        }
        let Some(target) = a.target else { return };
        let done =
            self.log.committed >= target.1 && self.log.term(self.log.committed) == Some(target.0);
        if done {
            self.amnesia = None;
            self.min_vote_term = target.0.next();
        }
    }

    // ---- inputs --------------------------------------------------------------

    /// Advances logical time by one tick.
    pub fn tick(&mut self) {
        match self.role {
            Role::Leader => self.tick_heartbeat(),
            Role::Follower | Role::PreCandidate | Role::Candidate => self.tick_election(),
        }
    }

    /// Starts an election now (tests and the simulator use it; so would an
    /// operator's "campaign").
    pub fn campaign(&mut self) {
        self.hup(false);
    }

    /// Proposes entries. On a follower they are forwarded to the leader; whether
    /// they commit is learned only by applying.
    pub fn propose(&mut self, entries: Vec<(EntryKind, Bytes)>) -> Result<(), ProposeError> {
        match self.role {
            Role::Leader => self.leader_append(entries),
            Role::Follower if !self.leader.is_none() => {
                let leader = self.leader;
                self.send(leader, Term::ZERO, MsgBody::Propose { entries });
                Ok(())
            }
            Role::Follower | Role::PreCandidate | Role::Candidate => Err(ProposeError::NoLeader),
        }
    }

    /// Asks for a linearizable read point; the answer arrives as a [`ReadState`]
    /// carrying `ctx`. Returns `NoLeader` if none is known.
    pub fn read_index(&mut self, ctx: ReadCtx) -> Result<(), ProposeError> {
        match self.role {
            Role::Leader => {
                self.handle_read_index(self.id, ctx);
                Ok(())
            }
            Role::Follower if !self.leader.is_none() => {
                let leader = self.leader;
                self.send(leader, Term::ZERO, MsgBody::ReadIndex { ctx });
                Ok(())
            }
            Role::Follower | Role::PreCandidate | Role::Candidate => Err(ProposeError::NoLeader),
        }
    }

    /// Asks the leader to hand leadership to `target`.
    pub fn transfer_leader(&mut self, target: NodeId) -> Result<(), ProposeError> {
        match self.role {
            Role::Leader => {
                self.handle_transfer_leader(target);
                Ok(())
            }
            Role::Follower if !self.leader.is_none() => {
                let leader = self.leader;
                self.send(leader, Term::ZERO, MsgBody::TransferLeader { target });
                Ok(())
            }
            Role::Follower | Role::PreCandidate | Role::Candidate => Err(ProposeError::NoLeader),
        }
    }

    /// Processes one message from a peer (or from ourselves, released after persist).
    pub fn step(&mut self, m: Message) {
        if m.term > self.term {
            if let MsgBody::Vote { transfer, .. } = m.body {
                // Check-quorum's lease: while we hear from a live leader, a
                // vote request (which a partitioned node might send with an
                // inflated term) is ignored, unless it comes from a transfer.
                let in_lease = self.cfg.check_quorum
                    && !self.leader.is_none()
                    && self.election_elapsed_ticks < self.cfg.election_timeout_ticks;
                if !transfer && in_lease {
                    return;
                }
            }
            match m.body {
                // A pre-vote never changes our term; a granted pre-vote comes back
                // with the term the candidate would use, which we don't have yet.
                MsgBody::Vote { pre: true, .. }
                | MsgBody::VoteResp {
                    pre: true,
                    reject: false,
                } => {}
                MsgBody::Append { .. } | MsgBody::Heartbeat { .. } | MsgBody::Snapshot(_) => {
                    self.become_follower(m.term, m.from);
                }
                _ => self.become_follower(m.term, NodeId::NONE),
            }
        } else if m.term < self.term && m.term != Term::ZERO {
            match m.body {
                MsgBody::Append { .. } | MsgBody::Heartbeat { .. }
                    if self.cfg.check_quorum || self.cfg.pre_vote =>
                {
                    // A stale leader (perhaps back from a partition) would never
                    // learn our term otherwise; this answer makes it step down.
                    let term = self.term;
                    self.send(
                        m.from,
                        term,
                        MsgBody::AppendResp {
                            index: LogIndex::ZERO,
                            reject: false,
                            hint_index: LogIndex::ZERO,
                            hint_term: Term::ZERO,
                        },
                    );
                }
                MsgBody::Vote { pre: true, .. } => {
                    // Tell the pre-candidate our term so it can catch up.
                    let term = self.term;
                    self.send(
                        m.from,
                        term,
                        MsgBody::VoteResp {
                            pre: true,
                            reject: true,
                        },
                    );
                }
                _ => {}
            }
            return;
        }

        if let MsgBody::Vote {
            pre,
            last_index,
            last_term,
            ..
        } = m.body
        {
            self.handle_vote(m.from, m.term, pre, last_index, last_term);
            return;
        }
        match self.role {
            Role::Leader => self.step_leader(m),
            Role::PreCandidate | Role::Candidate => self.step_candidate(m),
            Role::Follower => self.step_follower(m),
        }
    }

    // ---- ready plumbing (used by Node) ----------------------------------------

    pub(crate) fn take_msgs(&mut self) -> Vec<Message> {
        std::mem::take(&mut self.msgs)
    }

    pub(crate) fn take_msgs_after_persist(&mut self) -> Vec<Message> {
        std::mem::take(&mut self.msgs_after_persist)
    }

    /// A snapshot from the leader that replaced the log; the state machine
    /// must be restored from it before anything else is applied or read.
    pub(crate) fn take_snapshot_to_restore(&mut self) -> Option<Snapshot> {
        self.snapshot_to_restore.take()
    }

    pub(crate) fn take_read_states(&mut self) -> Vec<ReadState> {
        std::mem::take(&mut self.read_states)
    }

    pub(crate) fn has_read_states(&self) -> bool {
        !self.read_states.is_empty()
    }

    pub(crate) fn has_msgs(&self) -> bool {
        !self.msgs.is_empty() || !self.msgs_after_persist.is_empty()
    }

    /// Whether anything needs persisting.
    pub(crate) fn has_unpersisted(&self) -> bool {
        self.hard_state() != self.last_hard_state
            || self.log.has_unstable()
            || self.pending_snapshot.is_some()
    }

    /// Hands out what must be persisted: a changed hard state, new entries
    /// (the first may overwrite a suffix), and a snapshot received from the leader.
    pub(crate) fn take_persist(&mut self) -> (Option<HardState>, Vec<Entry>, Option<Snapshot>) {
        let hs = self.hard_state();
        let hs_out = (hs != self.last_hard_state).then_some(hs);
        self.last_hard_state = hs;
        let snap = self.pending_snapshot.take();
        (hs_out, self.log.take_unstable(), snap)
    }

    /// The driver reports durable: entries up to `last` and the snapshot `snap`.
    pub(crate) fn on_persisted(
        &mut self,
        last: Option<(LogIndex, Term)>,
        snap: Option<(LogIndex, Term)>,
    ) {
        let before = self.log.persisted;
        if let Some((i, t)) = snap {
            self.log.snapshot_persisted(i, t);
        }
        if let Some((i, t)) = last {
            self.log.persisted_to(i, t);
        }
        if self.log.persisted > before {
            self.persist_progress_in_window = true;
        }
        if self.role == Role::Leader {
            let persisted = self.log.persisted;
            let id = self.id;
            if let Some(pr) = self.progress.get_mut(&id) {
                pr.maybe_update(persisted);
            }
            if self.maybe_commit() {
                self.bcast_append();
            }
        }
    }

    /// Records that the state machine applied everything up to `index`.
    pub(crate) fn applied_to(&mut self, index: LogIndex) {
        self.log.applied_to(index);
    }

    /// Installs a snapshot this node made of its own state machine, and drops
    /// log entries up to `compact_to` (which must not exceed the snapshot).
    pub(crate) fn set_local_snapshot(&mut self, snap: Snapshot, compact_to: LogIndex) {
        assert!(
            compact_to <= snap.meta.index,
            "compacting past the snapshot"
        );
        if self
            .snapshot
            .as_ref()
            .is_some_and(|s| s.meta.index >= snap.meta.index)
        {
            return;
        }
        self.snapshot = Some(snap);
        let to = compact_to.min(self.log.applied).min(self.log.persisted);
        let gone = self.log.compact(to);
        if self.garbage.is_empty() {
            self.garbage = gone;
        } else {
            self.garbage.extend(gone);
        }
        self.free_some(COMPACT_ENTRIES_PER_STEP);
    }

    /// Frees up to `max` more compacted entries. A snapshot may cover a
    /// hundred thousand entries; freeing them all at once would stall the
    /// member, so the node calls this on every `ready()`.
    pub(crate) fn free_some(&mut self, max: usize) {
        let keep = self.garbage.len().saturating_sub(max);
        self.garbage.truncate(keep);
        if keep == 0 {
            self.garbage = Vec::new();
        }
    }

    /// Applies a committed membership change. Deterministic: it depends only on
    /// the current membership and the change, never on local observations.
    /// Returns the new membership.
    pub fn apply_conf_change(&mut self, cc: &ConfChange) -> ConfState {
        let node = cc.node;
        match cc.kind {
            ConfChangeKind::AddVoter => {
                self.conf.learners.remove(&node);
                self.conf.voters.insert(node);
            }
            ConfChangeKind::AddLearner => {
                // Demotion is refused at proposal time; here it is a no-op.
                if !self.conf.voters.contains(&node) {
                    self.conf.learners.insert(node);
                }
            }
            ConfChangeKind::Remove => {
                // Never remove the last voter: the cluster could not recover.
                if !(self.conf.voters.len() == 1 && self.conf.voters.contains(&node)) {
                    self.conf.voters.remove(&node);
                }
                self.conf.learners.remove(&node);
            }
        }
        if self.role == Role::Leader {
            self.sync_progress_to_conf();
        }
        self.conf.clone()
    }

    // ---- timers --------------------------------------------------------------

    fn tick_election(&mut self) {
        self.election_elapsed_ticks += 1;
        if self.promotable()
            && self.election_elapsed_ticks >= self.randomized_election_timeout_ticks
        {
            self.election_elapsed_ticks = 0;
            self.hup(false);
        }
    }

    fn tick_heartbeat(&mut self) {
        self.heartbeat_elapsed_ticks += 1;
        self.election_elapsed_ticks += 1;
        if self.election_elapsed_ticks >= self.cfg.election_timeout_ticks {
            self.election_elapsed_ticks = 0;
            if self.cfg.check_quorum && !self.quorum_recently_active() {
                let term = self.term;
                self.become_follower(term, NodeId::NONE);
                return;
            }
            // A transfer that did not finish within an election timeout is abandoned.
            self.lead_transferee = None;
        }
        // Retry snapshots that got lost on the way.
        let retry_after = self.cfg.election_timeout_ticks.saturating_mul(2);
        for pr in self.progress.values_mut() {
            if pr.state == ProgressState::Snapshot {
                pr.snapshot_elapsed_ticks += 1;
                if pr.snapshot_elapsed_ticks > retry_after {
                    pr.become_probe();
                }
            }
        }
        if self.heartbeat_elapsed_ticks >= self.cfg.heartbeat_interval_ticks {
            self.heartbeat_elapsed_ticks = 0;
            self.bcast_heartbeat();
        }
    }

    /// Check-quorum: did a majority of voters talk to us in the last window? We
    /// count ourselves only if our disk made progress (or had nothing to do): a
    /// leader whose fsyncs stall can neither apply nor answer, so it should
    /// yield rather than heartbeat on.
    fn quorum_recently_active(&mut self) -> bool {
        let disk_ok =
            self.log.persisted >= self.log.last_index() || self.persist_progress_in_window;
        self.persist_progress_in_window = false;
        let mut active = 0;
        for id in &self.conf.voters {
            if *id == self.id {
                active += usize::from(disk_ok);
            } else if self.progress.get(id).is_some_and(|p| p.recent_active) {
                active += 1;
            }
        }
        let me = self.id;
        for (id, pr) in self.progress.iter_mut() {
            if *id != me {
                pr.recent_active = false;
            }
        }
        active >= quorum::majority(self.conf.voters.len())
    }

    fn reset_randomized_election_timeout(&mut self) {
        let base = self.cfg.election_timeout_ticks;
        self.randomized_election_timeout_ticks = base + self.rng.next_u32() % base;
    }

    // ---- role transitions ------------------------------------------------------

    fn reset(&mut self, term: Term) {
        if self.term != term {
            assert!(
                term > self.term,
                "term regressed {:?} -> {:?}",
                self.term,
                term
            );
            self.term = term;
            self.vote = NodeId::NONE;
        }
        self.leader = NodeId::NONE;
        self.election_elapsed_ticks = 0;
        self.heartbeat_elapsed_ticks = 0;
        self.reset_randomized_election_timeout();
        self.lead_transferee = None;
        self.votes.clear();
        self.progress.clear();
        self.read_only.clear();
        self.pending_read_requests.clear();
        self.pending_conf_index = LogIndex::ZERO;
    }

    fn become_follower(&mut self, term: Term, leader: NodeId) {
        self.reset(term);
        self.role = Role::Follower;
        self.leader = leader;
    }

    fn become_pre_candidate(&mut self) {
        assert_ne!(
            self.role,
            Role::Leader,
            "leader cannot become pre-candidate"
        );
        // No term change and no vote: a pre-vote round leaves no trace.
        self.role = Role::PreCandidate;
        self.votes.clear();
        self.leader = NodeId::NONE;
        self.progress.clear();
    }

    fn become_candidate(&mut self) {
        assert_ne!(self.role, Role::Leader, "leader cannot become candidate");
        let term = self.term.next();
        self.reset(term);
        self.vote = self.id;
        self.role = Role::Candidate;
    }

    fn become_leader(&mut self) {
        assert_eq!(
            self.role,
            Role::Candidate,
            "only a candidate can become leader"
        );
        let term = self.term;
        self.reset(term);
        self.role = Role::Leader;
        self.leader = self.id;
        let next = self.log.last_index().next();
        let max_inflight = self.cfg.max_inflight_msgs as usize;
        for id in self.conf.members() {
            let learner = self.conf.learners.contains(&id);
            let mut pr = Progress::new(next, max_inflight, learner);
            pr.recent_active = true;
            if id == self.id {
                pr.matched = self.log.persisted;
                pr.become_replicate();
            }
            self.progress.insert(id, pr);
        }
        // Conservatively treat anything uncommitted as a possible pending change.
        self.pending_conf_index = self.log.last_index();
        // The no-op lets us commit (and so learn the commit index) in our term.
        let noop = Entry {
            term,
            index: next,
            kind: EntryKind::Normal,
            data: Bytes::new(),
        };
        self.log.append(vec![noop]);
    }

    /// Starts a campaign: pre-vote first when enabled, unless this is a transfer.
    fn hup(&mut self, transfer: bool) {
        if self.role == Role::Leader || !self.promotable() {
            return;
        }
        // A membership change that is committed but not yet applied might
        // remove us or change the quorum: wait until it is applied.
        if self.has_unapplied_conf_change() {
            return;
        }
        self.campaign_round(self.cfg.pre_vote && !transfer, transfer);
    }

    fn has_unapplied_conf_change(&self) -> bool {
        let mut i = self.log.applied.next();
        while i <= self.log.committed {
            match self.log.entry(i) {
                Some(e) if e.kind == EntryKind::ConfChange => return true,
                Some(_) => {}
                None => return false,
            }
            i = i.next();
        }
        false
    }

    fn campaign_round(&mut self, pre: bool, transfer: bool) {
        let vote_term = if pre {
            self.become_pre_candidate();
            self.term.next()
        } else {
            self.become_candidate();
            self.term
        };
        let (last_index, last_term) = (self.log.last_index(), self.log.last_term());
        let voters: Vec<NodeId> = self.conf.voters.iter().copied().collect();
        for id in voters {
            if id == self.id {
                // Our own vote counts once our term and vote are durable: it
                // goes through the after-persist queue like any vote response.
                self.send(id, vote_term, MsgBody::VoteResp { pre, reject: false });
            } else {
                self.send(
                    id,
                    vote_term,
                    MsgBody::Vote {
                        pre,
                        last_index,
                        last_term,
                        transfer,
                    },
                );
            }
        }
    }

    fn handle_vote(
        &mut self,
        from: NodeId,
        m_term: Term,
        pre: bool,
        last_index: LogIndex,
        last_term: Term,
    ) {
        // We may vote for a candidate we already voted for (a retransmit); or
        // for anyone if we have neither voted nor heard from a leader in this
        // term; or in a pre-vote for a future term.
        let can_vote = self.vote == from
            || (self.vote.is_none() && self.leader.is_none())
            || (pre && m_term > self.term)
            || (!pre && self.cfg.bugs.vote_twice());
        // After an amnesia: no vote until caught up, then only in new terms.
        let remembers = self.amnesia.is_none() && m_term >= self.min_vote_term;
        if can_vote && remembers && self.log.is_up_to_date(last_index, last_term) {
            self.send(from, m_term, MsgBody::VoteResp { pre, reject: false });
            if !pre {
                // Granting a vote restarts our timer, or we might campaign
                // against the node we just helped.
                self.election_elapsed_ticks = 0;
                self.vote = from;
            }
        } else {
            let term = self.term;
            self.send(from, term, MsgBody::VoteResp { pre, reject: true });
        }
    }

    // ---- per-role message handling --------------------------------------------

    fn step_leader(&mut self, m: Message) {
        let from = m.from;
        match m.body {
            MsgBody::Propose { entries } => {
                // A forwarded proposal that we refuse is simply dropped: the
                // proposer learns the outcome only by applying, and times out.
                let _refused_proposals_are_dropped = self.leader_append(entries);
            }
            MsgBody::ReadIndex { ctx } => self.handle_read_index(from, ctx),
            MsgBody::TransferLeader { target } => self.handle_transfer_leader(target),
            MsgBody::AppendResp {
                index,
                reject,
                hint_index,
                hint_term,
            } => {
                self.handle_append_resp(from, index, reject, hint_index, hint_term);
            }
            MsgBody::HeartbeatResp { ctx } => self.handle_heartbeat_resp(from, ctx),
            MsgBody::VoteResp { .. } | MsgBody::TimeoutNow | MsgBody::ReadIndexResp { .. } => {
                // Stale answers from an earlier role in this term.
            }
            MsgBody::Append { .. } | MsgBody::Heartbeat { .. } | MsgBody::Snapshot(_) => {
                // Another leader in our own term is impossible (election
                // safety); the simulator's checker would flag it. Ignore.
            }
            MsgBody::Vote { .. } => unreachable!("votes are handled before role dispatch"),
        }
    }

    fn step_candidate(&mut self, m: Message) {
        let from = m.from;
        match m.body {
            MsgBody::Append {
                prev_index,
                prev_term,
                entries,
                commit,
            } => {
                self.become_follower(m.term, from);
                self.handle_append(from, prev_index, prev_term, entries, commit);
            }
            MsgBody::Heartbeat { commit, ctx } => {
                self.become_follower(m.term, from);
                self.handle_heartbeat(from, commit, ctx);
            }
            MsgBody::Snapshot(snap) => {
                self.become_follower(m.term, from);
                self.handle_snapshot(from, snap);
            }
            MsgBody::VoteResp { pre, reject } => {
                let ours = (self.role == Role::PreCandidate) == pre;
                if !ours {
                    return;
                }
                self.votes.entry(from).or_insert(!reject);
                match quorum::vote_result(&self.conf.voters, &self.votes) {
                    VoteResult::Won if pre => self.campaign_round(false, false),
                    VoteResult::Won => {
                        self.become_leader();
                        self.bcast_append();
                    }
                    VoteResult::Lost => {
                        let term = self.term;
                        self.become_follower(term, NodeId::NONE);
                    }
                    VoteResult::Pending => {}
                }
            }
            MsgBody::Propose { .. }
            | MsgBody::ReadIndex { .. }
            | MsgBody::TransferLeader { .. }
            | MsgBody::TimeoutNow
            | MsgBody::AppendResp { .. }
            | MsgBody::HeartbeatResp { .. }
            | MsgBody::ReadIndexResp { .. } => {
                // No leader to forward to; requesters time out and retry.
            }
            MsgBody::Vote { .. } => unreachable!("votes are handled before role dispatch"),
        }
    }

    fn step_follower(&mut self, m: Message) {
        let from = m.from;
        match m.body {
            MsgBody::Append {
                prev_index,
                prev_term,
                entries,
                commit,
            } => {
                self.election_elapsed_ticks = 0;
                self.leader = from;
                self.handle_append(from, prev_index, prev_term, entries, commit);
            }
            MsgBody::Heartbeat { commit, ctx } => {
                self.election_elapsed_ticks = 0;
                self.leader = from;
                self.handle_heartbeat(from, commit, ctx);
            }
            MsgBody::Snapshot(snap) => {
                self.election_elapsed_ticks = 0;
                self.leader = from;
                self.handle_snapshot(from, snap);
            }
            MsgBody::Propose { entries } => {
                if !self.leader.is_none() {
                    let leader = self.leader;
                    self.send(leader, Term::ZERO, MsgBody::Propose { entries });
                }
            }
            MsgBody::ReadIndex { ctx } => {
                if !self.leader.is_none() {
                    let leader = self.leader;
                    self.send(leader, Term::ZERO, MsgBody::ReadIndex { ctx });
                }
            }
            MsgBody::TransferLeader { target } => {
                if !self.leader.is_none() {
                    let leader = self.leader;
                    self.send(leader, Term::ZERO, MsgBody::TransferLeader { target });
                }
            }
            MsgBody::ReadIndexResp { ctx, index } => {
                self.read_states.push(ReadState { ctx, index });
            }
            MsgBody::TimeoutNow => {
                // The leader is handing over: campaign at once, skipping pre-vote.
                self.hup(true);
            }
            MsgBody::AppendResp { .. }
            | MsgBody::HeartbeatResp { .. }
            | MsgBody::VoteResp { .. } => {
                // Answers to a role we no longer have.
            }
            MsgBody::Vote { .. } => unreachable!("votes are handled before role dispatch"),
        }
    }

    // ---- follower side of replication -------------------------------------------

    fn handle_append(
        &mut self,
        from: NodeId,
        prev_index: LogIndex,
        prev_term: Term,
        entries: Vec<Entry>,
        commit: LogIndex,
    ) {
        let term = self.term;
        if prev_index < self.log.committed {
            self.note_leader_contact(Some(commit));
            let committed = self.log.committed;
            self.send(
                from,
                term,
                MsgBody::AppendResp {
                    index: committed,
                    reject: false,
                    hint_index: LogIndex::ZERO,
                    hint_term: Term::ZERO,
                },
            );
            return;
        }
        match self
            .log
            .maybe_append(prev_index, prev_term, commit, &entries)
        {
            Some(last_new) => {
                self.send(
                    from,
                    term,
                    MsgBody::AppendResp {
                        index: last_new,
                        reject: false,
                        hint_index: LogIndex::ZERO,
                        hint_term: Term::ZERO,
                    },
                );
            }
            None => {
                // Tell the leader the last index that might match, and its term,
                // so it can skip a whole term's worth of entries per round trip.
                let hint = prev_index.min(self.log.last_index());
                let (hint_index, hint_term) = self.log.find_conflict_by_term(hint, prev_term);
                self.send(
                    from,
                    term,
                    MsgBody::AppendResp {
                        index: prev_index,
                        reject: true,
                        hint_index,
                        hint_term,
                    },
                );
            }
        }
        self.note_leader_contact(Some(commit));
    }

    fn handle_heartbeat(&mut self, from: NodeId, commit: LogIndex, ctx: Option<ReadCtx>) {
        self.note_leader_contact(None);
        // The leader sends min(our matched index, its commit), so every index up
        // to `commit` is in our log and matches the leader's.
        self.log.commit_to(commit.min(self.log.last_index()));
        let term = self.term;
        self.send(from, term, MsgBody::HeartbeatResp { ctx });
    }

    fn handle_snapshot(&mut self, from: NodeId, snap: Snapshot) {
        let term = self.term;
        let (index, snap_term) = (snap.meta.index, snap.meta.term);
        let reply_index = if index <= self.log.committed {
            self.log.committed
        } else if self.log.match_term(index, snap_term) {
            // We already have the snapshot's last entry: just fast-forward commit.
            self.log.commit_to(index);
            self.log.committed
        } else {
            self.log.restore(&snap);
            self.conf = snap.meta.conf.clone();
            self.pending_snapshot = Some(snap.clone());
            self.snapshot_to_restore = Some(snap.clone());
            self.snapshot = Some(snap);
            self.log.last_index()
        };
        self.send(
            from,
            term,
            MsgBody::AppendResp {
                index: reply_index,
                reject: false,
                hint_index: LogIndex::ZERO,
                hint_term: Term::ZERO,
            },
        );
        self.note_leader_contact(None);
    }

    // ---- leader side of replication ------------------------------------------------

    fn leader_append(&mut self, entries: Vec<(EntryKind, Bytes)>) -> Result<(), ProposeError> {
        if self.lead_transferee.is_some() {
            return Err(ProposeError::TransferInProgress);
        }
        let mut conf_change_at = None;
        for (k, (kind, data)) in entries.iter().enumerate() {
            if *kind != EntryKind::ConfChange {
                continue;
            }
            if conf_change_at.is_some() {
                return Err(ProposeError::InvalidConfChange(
                    "one membership change per proposal".into(),
                ));
            }
            let cc = codec::decode_conf_change(data)
                .map_err(|e| ProposeError::InvalidConfChange(e.to_string()))?;
            self.check_conf_change(&cc)?;
            conf_change_at = Some(k);
        }
        let term = self.term;
        let first = self.log.last_index().next();
        let new: Vec<Entry> = entries
            .into_iter()
            .enumerate()
            .map(|(k, (kind, data))| Entry {
                term,
                index: first.plus(k as u64),
                kind,
                data,
            })
            .collect();
        if let Some(k) = conf_change_at {
            self.pending_conf_index = first.plus(k as u64);
        }
        self.log.append(new);
        self.bcast_append();
        Ok(())
    }

    fn check_conf_change(&self, cc: &ConfChange) -> Result<(), ProposeError> {
        if self.pending_conf_index > self.log.applied || !self.committed_entry_in_current_term() {
            return Err(ProposeError::ConfChangePending);
        }
        if cc.node.is_none() {
            return Err(ProposeError::InvalidConfChange("node id 0".into()));
        }
        match cc.kind {
            ConfChangeKind::AddVoter => {
                if self.conf.voters.contains(&cc.node) {
                    return Err(ProposeError::InvalidConfChange("already a voter".into()));
                }
                if self.conf.learners.contains(&cc.node) {
                    let learner = self
                        .progress
                        .get(&cc.node)
                        .map_or(LogIndex::ZERO, |p| p.matched);
                    let leader = self
                        .progress
                        .get(&self.id)
                        .map_or(LogIndex::ZERO, |p| p.matched);
                    let ready_pct = self.cfg.learner_promotion_ready_pct;
                    if u128::from(learner.0) * 100 < u128::from(leader.0) * u128::from(ready_pct) {
                        return Err(ProposeError::InvalidConfChange(
                            "learner is not yet in sync with the leader".into(),
                        ));
                    }
                }
            }
            ConfChangeKind::AddLearner => {
                if self.conf.contains(cc.node) {
                    return Err(ProposeError::InvalidConfChange("already a member".into()));
                }
            }
            ConfChangeKind::Remove => {
                if !self.conf.contains(cc.node) {
                    return Err(ProposeError::InvalidConfChange("not a member".into()));
                }
                if self.conf.voters.len() == 1 && self.conf.voters.contains(&cc.node) {
                    return Err(ProposeError::InvalidConfChange(
                        "cannot remove the last voter".into(),
                    ));
                }
            }
        }
        Ok(())
    }

    fn committed_entry_in_current_term(&self) -> bool {
        self.log.term(self.log.committed) == Some(self.term)
    }

    fn handle_append_resp(
        &mut self,
        from: NodeId,
        index: LogIndex,
        reject: bool,
        hint_index: LogIndex,
        hint_term: Term,
    ) {
        let Some(pr) = self.progress.get_mut(&from) else {
            return;
        };
        pr.recent_active = true;
        if reject {
            let mut next_probe = hint_index;
            if hint_term > Term::ZERO {
                next_probe = self.log.find_conflict_by_term(hint_index, hint_term).0;
            }
            let pr = self.progress.get_mut(&from).expect("checked above");
            if pr.maybe_decr_to(index, next_probe) {
                if pr.state == ProgressState::Replicate {
                    pr.become_probe();
                }
                self.send_append(from);
            }
            return;
        }
        let was_paused = pr.is_paused();
        if !pr.maybe_update(index) {
            return;
        }
        match pr.state {
            ProgressState::Probe => pr.become_replicate(),
            ProgressState::Snapshot => {
                if pr.matched.next() >= self.log.first_index() {
                    pr.become_probe();
                    pr.become_replicate();
                }
            }
            ProgressState::Replicate => pr.inflights.free_le(index),
        }
        if self.maybe_commit() {
            self.bcast_append();
        } else if was_paused {
            self.send_append(from);
        }
        // The window may have opened for more than one message.
        while self.maybe_send_append(from, false) {}
        if self.lead_transferee == Some(from)
            && self
                .progress
                .get(&from)
                .is_some_and(|p| p.matched == self.log.last_index())
        {
            let term = self.term;
            self.send(from, term, MsgBody::TimeoutNow);
        }
    }

    fn handle_heartbeat_resp(&mut self, from: NodeId, ctx: Option<ReadCtx>) {
        let last = self.log.last_index();
        let Some(pr) = self.progress.get_mut(&from) else {
            return;
        };
        pr.recent_active = true;
        pr.probe_sent = false;
        // A lost append could otherwise leave a full window stuck forever.
        if pr.state == ProgressState::Replicate && pr.inflights.full() {
            pr.inflights.reset();
        }
        if pr.matched < last {
            self.send_append(from);
        }
        if let Some(ctx) = ctx {
            let voters = &self.conf.voters;
            let released = self.read_only.recv_ack(from, ctx, voters);
            for (origin, ctx, index) in released {
                self.respond_read(origin, ctx, index);
            }
        }
    }

    fn maybe_commit(&mut self) -> bool {
        if self.conf.voters.is_empty() {
            return false;
        }
        let progress = &self.progress;
        let mci =
            quorum::committed_index(&self.conf.voters, |id| progress.get(&id).map(|p| p.matched));
        if mci <= self.log.committed || mci > self.log.last_index() {
            return false;
        }
        // Only entries of our own term are committed by counting replicas; older
        // ones commit indirectly through them (dissertation §3.6.2).
        if self.log.term(mci) != Some(self.term) && !self.cfg.bugs.commit_old_term_by_count() {
            return false;
        }
        let first_in_term = !self.committed_entry_in_current_term();
        self.log.commit_to(mci);
        if first_in_term && self.committed_entry_in_current_term() {
            for (from, ctx) in std::mem::take(&mut self.pending_read_requests) {
                self.handle_read_index(from, ctx);
            }
        }
        true
    }

    fn bcast_append(&mut self) {
        let ids: Vec<NodeId> = self
            .progress
            .keys()
            .copied()
            .filter(|&id| id != self.id)
            .collect();
        for id in ids {
            self.send_append(id);
        }
    }

    fn send_append(&mut self, to: NodeId) {
        self.maybe_send_append(to, true);
    }

    /// Sends `to` the entries it needs next (or a snapshot). With
    /// `send_if_empty` false, returns false instead of sending an empty append.
    fn maybe_send_append(&mut self, to: NodeId, send_if_empty: bool) -> bool {
        let Some(pr) = self.progress.get(&to) else {
            return false;
        };
        if pr.is_paused() {
            return false;
        }
        let prev_index = pr.next.prev();
        let prev_term = self.log.term(prev_index);
        let entries = self.log.slice(
            pr.next,
            self.log.last_index().next(),
            self.cfg.max_msg_bytes,
        );
        let (Some(prev_term), Some(entries)) = (prev_term, entries) else {
            // What this follower needs is compacted away: send the snapshot.
            if !pr.recent_active {
                return false;
            }
            let Some(snap) = self.snapshot.clone() else {
                return false;
            };
            let pr = self.progress.get_mut(&to).expect("checked above");
            pr.become_snapshot(snap.meta.index);
            let term = self.term;
            self.send(to, term, MsgBody::Snapshot(snap));
            return true;
        };
        if entries.is_empty() && !send_if_empty {
            return false;
        }
        let pr = self.progress.get_mut(&to).expect("checked above");
        pr.sent_entries(entries.last().map(|e| e.index));
        let (term, commit) = (self.term, self.log.committed);
        self.send(
            to,
            term,
            MsgBody::Append {
                prev_index,
                prev_term,
                entries,
                commit,
            },
        );
        true
    }

    fn bcast_heartbeat(&mut self) {
        let ctx = self.read_only.last_ctx();
        let ids: Vec<NodeId> = self
            .progress
            .keys()
            .copied()
            .filter(|&id| id != self.id)
            .collect();
        for id in ids {
            let matched = self.progress[&id].matched;
            let commit = matched.min(self.log.committed);
            let term = self.term;
            self.send(id, term, MsgBody::Heartbeat { commit, ctx });
        }
    }

    fn handle_read_index(&mut self, from: NodeId, ctx: ReadCtx) {
        if self.conf.voters.len() == 1 && self.conf.voters.contains(&self.id) {
            let index = self.log.committed;
            self.respond_read(from, ctx, index);
            return;
        }
        if !self.committed_entry_in_current_term() {
            // We don't know the commit index until our no-op commits.
            self.pending_read_requests.push((from, ctx));
            return;
        }
        let index = self.log.committed;
        self.read_only
            .add(from, ctx, index, self.id, MAX_PENDING_READ_ROUNDS);
        self.bcast_heartbeat();
    }

    fn respond_read(&mut self, origin: NodeId, ctx: ReadCtx, index: LogIndex) {
        if origin == self.id {
            self.read_states.push(ReadState { ctx, index });
        } else {
            let term = self.term;
            self.send(origin, term, MsgBody::ReadIndexResp { ctx, index });
        }
    }

    fn handle_transfer_leader(&mut self, target: NodeId) {
        let Some(pr) = self.progress.get(&target) else {
            return;
        };
        if pr.is_learner || target == self.id || self.lead_transferee == Some(target) {
            return;
        }
        let caught_up = pr.matched == self.log.last_index();
        // The transfer must finish within one election timeout.
        self.election_elapsed_ticks = 0;
        self.lead_transferee = Some(target);
        if caught_up {
            let term = self.term;
            self.send(target, term, MsgBody::TimeoutNow);
        } else {
            self.send_append(target);
        }
    }

    /// Leader: bring `progress` in line with a just-applied membership.
    fn sync_progress_to_conf(&mut self) {
        let next = self.log.last_index().next();
        let max_inflight = self.cfg.max_inflight_msgs as usize;
        let members: Vec<(NodeId, bool)> = self
            .conf
            .members()
            .map(|id| (id, self.conf.learners.contains(&id)))
            .collect();
        self.progress
            .retain(|id, _| members.iter().any(|(m, _)| m == id));
        for (id, learner) in members {
            let pr = self.progress.entry(id).or_insert_with(|| {
                let mut pr = Progress::new(next, max_inflight, learner);
                pr.recent_active = true;
                pr
            });
            pr.is_learner = learner;
        }
        if self
            .lead_transferee
            .is_some_and(|t| !self.conf.voters.contains(&t))
        {
            self.lead_transferee = None;
        }
        if !self.conf.voters.contains(&self.id) {
            // We removed ourselves. Hand over to the most caught-up voter if one
            // is fully caught up, then step down.
            let last = self.log.last_index();
            let best = self
                .conf
                .voters
                .iter()
                .copied()
                .find(|id| self.progress.get(id).is_some_and(|p| p.matched == last));
            if let Some(best) = best {
                let term = self.term;
                self.send(best, term, MsgBody::TimeoutNow);
            }
            let term = self.term;
            self.become_follower(term, NodeId::NONE);
            return;
        }
        if self.maybe_commit() {
            self.bcast_append();
        } else {
            let ids: Vec<NodeId> = self
                .progress
                .keys()
                .copied()
                .filter(|&id| id != self.id)
                .collect();
            for id in ids {
                self.maybe_send_append(id, false);
            }
        }
    }

    fn send(&mut self, to: NodeId, term: Term, body: MsgBody) {
        let after_persist = to == self.id
            || (matches!(body, MsgBody::AppendResp { .. } | MsgBody::VoteResp { .. })
                && !self.cfg.bugs.ack_before_durable());
        let m = Message {
            from: self.id,
            to,
            term,
            body,
        };
        if after_persist {
            self.msgs_after_persist.push(m);
        } else {
            self.msgs.push(m);
        }
    }
}
