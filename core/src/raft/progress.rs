//! The leader's view of each follower: how much of the log it has, and how
//! aggressively to send it more (probe one message at a time, replicate with a
//! bounded window of messages in flight, or wait for a snapshot).

use std::collections::VecDeque;

use crate::types::LogIndex;

#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum ProgressState {
    /// We don't know where the follower's log matches ours: one append per
    /// heartbeat interval until it answers.
    Probe,
    /// The follower is matching: stream appends, at most `max_inflight_msgs` unacknowledged.
    Replicate,
    /// The follower needs a snapshot; nothing else is sent until it answers.
    Snapshot,
}

/// The last index of each append message not yet acknowledged, oldest first.
/// Bounded by the capacity given at construction.
#[derive(Clone, Debug)]
pub struct Inflights {
    cap: usize,
    queue: VecDeque<LogIndex>,
}

impl Inflights {
    pub fn new(cap: usize) -> Inflights {
        assert!(cap > 0, "inflight window must hold at least one message");
        Inflights {
            cap,
            queue: VecDeque::with_capacity(cap.min(64)),
        }
    }

    pub fn full(&self) -> bool {
        self.queue.len() >= self.cap
    }

    pub fn len(&self) -> usize {
        self.queue.len()
    }

    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// Records a sent message ending at `last`. Panics when full: callers check `full()`.
    pub fn add(&mut self, last: LogIndex) {
        assert!(!self.full(), "inflights overflow");
        debug_assert!(
            self.queue.back().is_none_or(|&b| b <= last),
            "inflights out of order"
        );
        self.queue.push_back(last);
    }

    /// Frees every message ending at or before `index`.
    pub fn free_le(&mut self, index: LogIndex) {
        while self.queue.front().is_some_and(|&f| f <= index) {
            self.queue.pop_front();
        }
    }

    pub fn reset(&mut self) {
        self.queue.clear();
    }
}

#[derive(Clone, Debug)]
pub struct Progress {
    /// Highest index known to match the leader's log (durable on the follower).
    pub matched: LogIndex,
    /// Next index to send.
    pub next: LogIndex,
    pub state: ProgressState,
    /// In `Snapshot` state: the index of the snapshot sent.
    pub pending_snapshot: LogIndex,
    /// Ticks since the snapshot was sent; used to retry a lost one.
    pub snapshot_elapsed_ticks: u32,
    /// In `Probe` state: a probe is out, wait for the answer or the next heartbeat.
    pub probe_sent: bool,
    /// Heard from within the current check-quorum window.
    pub recent_active: bool,
    pub is_learner: bool,
    pub inflights: Inflights,
}

impl Progress {
    pub fn new(next: LogIndex, max_inflight_msgs: usize, is_learner: bool) -> Progress {
        Progress {
            matched: LogIndex::ZERO,
            next,
            state: ProgressState::Probe,
            pending_snapshot: LogIndex::ZERO,
            snapshot_elapsed_ticks: 0,
            probe_sent: false,
            recent_active: false,
            is_learner,
            inflights: Inflights::new(max_inflight_msgs),
        }
    }

    fn reset_state(&mut self, state: ProgressState) {
        self.probe_sent = false;
        self.pending_snapshot = LogIndex::ZERO;
        self.snapshot_elapsed_ticks = 0;
        self.state = state;
        self.inflights.reset();
    }

    pub fn become_probe(&mut self) {
        // Coming back from a snapshot, the follower has at least the snapshot.
        if self.state == ProgressState::Snapshot {
            let pending = self.pending_snapshot;
            self.reset_state(ProgressState::Probe);
            self.next = self.matched.max(pending).next();
        } else {
            self.reset_state(ProgressState::Probe);
            self.next = self.matched.next();
        }
    }

    pub fn become_replicate(&mut self) {
        self.reset_state(ProgressState::Replicate);
        self.next = self.matched.next();
    }

    pub fn become_snapshot(&mut self, snapshot_index: LogIndex) {
        self.reset_state(ProgressState::Snapshot);
        self.pending_snapshot = snapshot_index;
    }

    /// A successful append response up to `index`. Returns false if it tells us
    /// nothing new (a stale or duplicated response).
    pub fn maybe_update(&mut self, index: LogIndex) -> bool {
        let updated = index > self.matched;
        if updated {
            self.matched = index;
            self.probe_sent = false;
        }
        self.next = self.next.max(index.next());
        updated
    }

    /// A rejection of the append at `rejected`; `match_hint` is the highest index
    /// that may still match. Returns false for a stale rejection.
    pub fn maybe_decr_to(&mut self, rejected: LogIndex, match_hint: LogIndex) -> bool {
        if self.state == ProgressState::Replicate {
            // Appends arrive in order, so a rejection at or below `matched` is old.
            if rejected <= self.matched {
                return false;
            }
            self.next = self.matched.next();
            return true;
        }
        // Probe: only the rejection of the probe we sent counts.
        if self.next.prev() != rejected {
            return false;
        }
        if match_hint < self.matched {
            // It no longer has what it acknowledged: its log was lost (a
            // replaced disk; see `Amnesia`). Start over from what it has, or
            // the probe would repeat forever. Lowering `matched` never lowers
            // the commit index, which only moves forward.
            self.matched = match_hint;
        }
        self.next = rejected.min(match_hint.next()).max(self.matched.next());
        self.probe_sent = false;
        true
    }

    /// Whether the leader must hold back appends to this follower.
    pub fn is_paused(&self) -> bool {
        match self.state {
            ProgressState::Probe => self.probe_sent,
            ProgressState::Replicate => self.inflights.full(),
            ProgressState::Snapshot => true,
        }
    }

    /// Records an append whose last entry is `last` (none: `last` is None).
    pub fn sent_entries(&mut self, last: Option<LogIndex>) {
        match self.state {
            ProgressState::Replicate => {
                if let Some(last) = last {
                    self.next = last.next();
                    self.inflights.add(last);
                }
            }
            ProgressState::Probe => self.probe_sent = true,
            ProgressState::Snapshot => unreachable!("no appends while a snapshot is pending"),
        }
    }
}
