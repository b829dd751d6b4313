//! Raft's data: entries, hard state, snapshots, membership and peer messages.

use std::collections::BTreeSet;

use bytes::Bytes;

use crate::types::{LogIndex, NodeId, Term};

/// What an entry carries; the bytes are opaque to Raft except for `ConfChange`.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum EntryKind {
    /// Application data. An empty `Normal` entry is the leader's no-op.
    Normal,
    /// An encoded [`ConfChange`], applied to the membership when the entry is applied.
    ConfChange,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub term: Term,
    pub index: LogIndex,
    pub kind: EntryKind,
    pub data: Bytes,
}

impl Entry {
    /// Bytes this entry counts against message-size limits: payload plus a fixed
    /// allowance for the header fields.
    pub fn size_bytes(&self) -> u64 {
        self.data.len() as u64 + ENTRY_OVERHEAD_BYTES
    }
}

/// Header allowance per entry in size accounting (term, index, kind, length).
pub const ENTRY_OVERHEAD_BYTES: u64 = 24;

/// The state Raft must persist before it answers anyone: its term, its vote in
/// that term, and how far it knows the log is committed.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct HardState {
    pub term: Term,
    pub vote: NodeId,
    pub commit: LogIndex,
}

/// The membership: who votes and who only follows.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ConfState {
    pub voters: BTreeSet<NodeId>,
    pub learners: BTreeSet<NodeId>,
}

impl ConfState {
    pub fn contains(&self, id: NodeId) -> bool {
        self.voters.contains(&id) || self.learners.contains(&id)
    }

    /// Every member, voters first then learners, each in ascending order.
    pub fn members(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.voters.iter().chain(self.learners.iter()).copied()
    }
}

/// One membership change. Changes go through the log one at a time (see
/// ARCHITECTURE.md: single-server changes, applied when the entry is applied).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfChange {
    /// Chosen by the proposer to recognise its change when applied (0: none).
    pub id: u64,
    pub kind: ConfChangeKind,
    pub node: NodeId,
    /// Opaque to Raft (the server puts the member's name and URLs here).
    pub context: Bytes,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum ConfChangeKind {
    /// Add a voter, or promote an existing learner.
    AddVoter,
    /// Add a learner. Demoting a voter is refused.
    AddLearner,
    Remove,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SnapshotMeta {
    pub index: LogIndex,
    pub term: Term,
    pub conf: ConfState,
}

/// A state-machine snapshot. `data` is opaque to Raft.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Snapshot {
    pub meta: SnapshotMeta,
    pub data: Bytes,
}

/// Identifies one read-index round: who asked, and their request number.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ReadCtx {
    pub origin: NodeId,
    pub id: u64,
}

/// "Reads registered under `ctx` may be served once the state machine has applied `index`."
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct ReadState {
    pub ctx: ReadCtx,
    pub index: LogIndex,
}

/// A message between members. `term` is zero only on forwarded proposals and
/// read-index requests, which are not bound to a term.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    pub from: NodeId,
    pub to: NodeId,
    pub term: Term,
    pub body: MsgBody,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MsgBody {
    /// Leader → follower: entries after `(prev_index, prev_term)`.
    Append {
        prev_index: LogIndex,
        prev_term: Term,
        entries: Vec<Entry>,
        commit: LogIndex,
    },
    /// Follower → leader. On success `index` is the last index now matching the
    /// leader. On rejection `index` is the rejected `prev_index` and
    /// `(hint_index, hint_term)` tell the leader where to probe next.
    AppendResp {
        index: LogIndex,
        reject: bool,
        hint_index: LogIndex,
        hint_term: Term,
    },
    Heartbeat {
        commit: LogIndex,
        ctx: Option<ReadCtx>,
    },
    HeartbeatResp {
        ctx: Option<ReadCtx>,
    },
    /// A (pre-)candidate asks for a vote. `transfer` marks a campaign started by
    /// leadership transfer, which voters honour even inside a leader lease.
    Vote {
        pre: bool,
        last_index: LogIndex,
        last_term: Term,
        transfer: bool,
    },
    VoteResp {
        pre: bool,
        reject: bool,
    },
    Snapshot(Snapshot),
    /// Leader → transfer target: campaign now, skipping pre-vote.
    TimeoutNow,
    /// Follower → leader (term 0): proposals to append.
    Propose {
        entries: Vec<(EntryKind, Bytes)>,
    },
    /// Follower → leader (term 0): confirm leadership and tell me the commit index.
    ReadIndex {
        ctx: ReadCtx,
    },
    ReadIndexResp {
        ctx: ReadCtx,
        index: LogIndex,
    },
    /// Anyone → leader (term 0): hand leadership to `target`.
    TransferLeader {
        target: NodeId,
    },
}

impl MsgBody {
    /// A short name for traces and logs.
    pub fn kind_name(&self) -> &'static str {
        match self {
            MsgBody::Append { .. } => "App",
            MsgBody::AppendResp { .. } => "AppResp",
            MsgBody::Heartbeat { .. } => "Heartbeat",
            MsgBody::HeartbeatResp { .. } => "HeartbeatResp",
            MsgBody::Vote { pre: true, .. } => "PreVote",
            MsgBody::Vote { pre: false, .. } => "Vote",
            MsgBody::VoteResp { pre: true, .. } => "PreVoteResp",
            MsgBody::VoteResp { pre: false, .. } => "VoteResp",
            MsgBody::Snapshot(_) => "Snap",
            MsgBody::TimeoutNow => "TimeoutNow",
            MsgBody::Propose { .. } => "Prop",
            MsgBody::ReadIndex { .. } => "ReadIndex",
            MsgBody::ReadIndexResp { .. } => "ReadIndexResp",
            MsgBody::TransferLeader { .. } => "TransferLeader",
        }
    }
}
