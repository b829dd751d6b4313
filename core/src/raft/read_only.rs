//! The leader's ReadIndex rounds (dissertation §6.4). A round records the
//! commit index when a read arrived; the next heartbeat carries the newest
//! round's context, and once a quorum has acknowledged a round, that round and
//! every older one are confirmed: the leader was still leader after they arrived.

use std::collections::{BTreeSet, VecDeque};

use crate::raft::message::ReadCtx;
use crate::raft::quorum;
use crate::types::{LogIndex, NodeId};

#[derive(Debug)]
struct Round {
    origin: NodeId,
    ctx: ReadCtx,
    index: LogIndex,
    acks: BTreeSet<NodeId>,
}

#[derive(Debug, Default)]
pub(crate) struct ReadOnly {
    rounds: VecDeque<Round>,
}

impl ReadOnly {
    pub fn clear(&mut self) {
        self.rounds.clear();
    }

    /// Registers a round; the leader's own acknowledgement counts at once. When
    /// `cap` rounds are already waiting, the oldest is dropped (its readers time out).
    pub fn add(&mut self, origin: NodeId, ctx: ReadCtx, index: LogIndex, me: NodeId, cap: usize) {
        if self.rounds.iter().any(|r| r.ctx == ctx) {
            return;
        }
        while self.rounds.len() >= cap {
            self.rounds.pop_front();
        }
        self.rounds.push_back(Round {
            origin,
            ctx,
            index,
            acks: [me].into(),
        });
    }

    pub fn last_ctx(&self) -> Option<ReadCtx> {
        self.rounds.back().map(|r| r.ctx)
    }

    /// Records `from`'s acknowledgement of `ctx`. If that gives the round a
    /// quorum of `voters`, returns it and all older rounds, oldest first.
    pub fn recv_ack(
        &mut self,
        from: NodeId,
        ctx: ReadCtx,
        voters: &BTreeSet<NodeId>,
    ) -> Vec<(NodeId, ReadCtx, LogIndex)> {
        let Some(pos) = self.rounds.iter().position(|r| r.ctx == ctx) else {
            return Vec::new();
        };
        let round = &mut self.rounds[pos];
        round.acks.insert(from);
        let votes = round.acks.iter().filter(|id| voters.contains(id)).count();
        if votes < quorum::majority(voters.len()) {
            return Vec::new();
        }
        self.rounds
            .drain(..=pos)
            .map(|r| (r.origin, r.ctx, r.index))
            .collect()
    }
}
