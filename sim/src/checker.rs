//! Raft's safety properties, checked from outside the members after every
//! step of every node. The checker sees each node only through an
//! [`Observation`] (plain data), so tests can feed it hand-made bad states.
//!
//! Properties (dissertation §3.6, Figure 3.2):
//! - election safety: at most one leader per term;
//! - a node's term and commit index never go back within one incarnation;
//! - log matching: two entries with the same index and term carry the same
//!   payload and follow entries of the same term (so, inductively, the logs
//!   before them are identical);
//! - leader completeness: a new leader of term T holds every entry committed
//!   in a term before T (a leader of an old term, elected late, need not hold
//!   what a newer term committed: it can commit nothing);
//! - committed entries never change: every node that commits or applies index
//!   `i` has the same entry there;
//! - a leader commits only entries that a quorum of voters hold durably, and
//!   advances its commit index only to an entry of its own term (§3.6.2; older
//!   entries commit indirectly, or Figure 3.7's overwrite becomes possible).

use std::collections::{BTreeMap, BTreeSet};

use etcd_core::hash::Fnv64;
use etcd_core::raft::{Entry, EntryKind, Role};
use etcd_core::{LogIndex, NodeId, Term};

/// The digest that identifies an entry's contents.
pub fn entry_digest(e: &Entry) -> u64 {
    let mut h = Fnv64::new();
    h.write_u64(e.term.0);
    h.write_u64(match e.kind {
        EntryKind::Normal => 1,
        EntryKind::ConfChange => 2,
    });
    h.write_bytes(&e.data);
    h.finish()
}

/// Read access to one node's in-memory log.
pub trait LogView {
    fn first_index(&self) -> LogIndex;
    fn last_index(&self) -> LogIndex;
    fn term(&self, i: LogIndex) -> Option<Term>;
    fn entry(&self, i: LogIndex) -> Option<&Entry>;
}

impl LogView for etcd_core::raft::RaftLog {
    fn first_index(&self) -> LogIndex {
        etcd_core::raft::RaftLog::first_index(self)
    }
    fn last_index(&self) -> LogIndex {
        etcd_core::raft::RaftLog::last_index(self)
    }
    fn term(&self, i: LogIndex) -> Option<Term> {
        etcd_core::raft::RaftLog::term(self, i)
    }
    fn entry(&self, i: LogIndex) -> Option<&Entry> {
        etcd_core::raft::RaftLog::entry(self, i)
    }
}

/// What the checker sees of one node after one step.
pub struct Observation<'a> {
    pub node: NodeId,
    pub incarnation: u64,
    pub role: Role,
    pub term: Term,
    pub commit: LogIndex,
    pub voters: &'a BTreeSet<NodeId>,
    pub log: &'a dyn LogView,
    /// Entries handed out for persisting in this step.
    pub new_entries: &'a [Entry],
    /// Entries applied in this step.
    pub applied: &'a [Entry],
    /// A snapshot from the leader installed in this step: (index, term).
    pub installed_snapshot: Option<(LogIndex, Term)>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Violation {
    TwoLeaders {
        term: Term,
        first: NodeId,
        second: NodeId,
    },
    TermRegressed {
        node: NodeId,
        from: Term,
        to: Term,
    },
    CommitRegressed {
        node: NodeId,
        from: LogIndex,
        to: LogIndex,
    },
    LogMismatch {
        node: NodeId,
        index: LogIndex,
        term: Term,
        what: &'static str,
    },
    LeaderIncomplete {
        node: NodeId,
        term: Term,
        missing: LogIndex,
    },
    CommittedChanged {
        node: NodeId,
        index: LogIndex,
        what: &'static str,
    },
    CommittedWithoutQuorum {
        node: NodeId,
        index: LogIndex,
        holders: usize,
        voters: usize,
    },
    CommittedOldTerm {
        node: NodeId,
        index: LogIndex,
        entry_term: Term,
        leader_term: Term,
    },
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Violation::TwoLeaders {
                term,
                first,
                second,
            } => {
                write!(
                    f,
                    "election safety: {first:?} and {second:?} both led term {term:?}"
                )
            }
            Violation::TermRegressed { node, from, to } => {
                write!(f, "{node:?}: term went back from {from:?} to {to:?}")
            }
            Violation::CommitRegressed { node, from, to } => {
                write!(
                    f,
                    "{node:?}: commit index went back from {from:?} to {to:?}"
                )
            }
            Violation::LogMismatch {
                node,
                index,
                term,
                what,
            } => {
                write!(
                    f,
                    "log matching: {node:?} entry ({index:?}, {term:?}): {what}"
                )
            }
            Violation::LeaderIncomplete {
                node,
                term,
                missing,
            } => write!(
                f,
                "leader completeness: {node:?} leads term {term:?} without committed entry {missing:?}"
            ),
            Violation::CommittedChanged { node, index, what } => {
                write!(
                    f,
                    "state machine safety: {node:?} at committed index {index:?}: {what}"
                )
            }
            Violation::CommittedWithoutQuorum {
                node,
                index,
                holders,
                voters,
            } => write!(
                f,
                "{node:?} committed {index:?} held durably by {holders} of {voters} voters"
            ),
            Violation::CommittedOldTerm {
                node,
                index,
                entry_term,
                leader_term,
            } => write!(
                f,
                "commit rule: leader {node:?} of {leader_term:?} committed {index:?} of {entry_term:?} by counting replicas"
            ),
        }
    }
}

#[derive(Clone, Debug, Default)]
struct NodeTrack {
    incarnation: u64,
    term: Term,
    commit: LogIndex,
    /// The term this node was last seen leading.
    led_term: Option<Term>,
    /// The voters this node saw at its last observation.
    voters: BTreeSet<NodeId>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct EntryFact {
    digest: u64,
    prev_term: Option<Term>,
}

#[derive(Default)]
pub struct Checker {
    leaders_by_term: BTreeMap<Term, NodeId>,
    nodes: BTreeMap<NodeId, NodeTrack>,
    entries: BTreeMap<(LogIndex, Term), EntryFact>,
    /// index → (entry term, digest, commit term). The commit term is the
    /// smallest term of any node seen committing the entry: never below the
    /// term of the leader that committed it.
    committed: BTreeMap<LogIndex, (Term, u64, Term)>,
    max_committed: LogIndex,
    /// Count of elections won (a node seen leading a new term).
    pub elections: u64,
    pub observations: u64,
}

impl Checker {
    pub fn max_committed(&self) -> LogIndex {
        self.max_committed
    }

    pub fn committed_entry(&self, i: LogIndex) -> Option<(Term, u64)> {
        self.committed.get(&i).map(|(t, d, _)| (*t, *d))
    }

    /// Checks one node after one step. `durable(v, i, t)` says whether voter
    /// `v`'s storage durably holds entry `i` with term `t` (or a snapshot covering it).
    pub fn observe(
        &mut self,
        o: &Observation<'_>,
        durable: &dyn Fn(NodeId, LogIndex, Term) -> bool,
    ) -> Result<(), Violation> {
        self.observations += 1;
        let prev = self.nodes.get(&o.node).cloned();
        let same_incarnation = prev
            .as_ref()
            .is_some_and(|p| p.incarnation == o.incarnation);
        let prev_commit = match &prev {
            Some(p) if same_incarnation => {
                if o.term < p.term {
                    return Err(Violation::TermRegressed {
                        node: o.node,
                        from: p.term,
                        to: o.term,
                    });
                }
                if o.commit < p.commit {
                    return Err(Violation::CommitRegressed {
                        node: o.node,
                        from: p.commit,
                        to: o.commit,
                    });
                }
                p.commit
            }
            // A restarted node: everything it believes committed is checked anew.
            _ => o.log.first_index().prev(),
        };

        // Log matching, for what this step appended.
        for (k, e) in o.new_entries.iter().enumerate() {
            let prev_term = if k > 0 {
                Some(o.new_entries[k - 1].term)
            } else {
                o.log.term(e.index.prev())
            };
            let fact = EntryFact {
                digest: entry_digest(e),
                prev_term,
            };
            match self.entries.get_mut(&(e.index, e.term)) {
                None => {
                    self.entries.insert((e.index, e.term), fact);
                }
                Some(known) => {
                    if known.digest != fact.digest {
                        return Err(Violation::LogMismatch {
                            node: o.node,
                            index: e.index,
                            term: e.term,
                            what: "same index and term, different payload",
                        });
                    }
                    match (known.prev_term, fact.prev_term) {
                        (Some(a), Some(b)) if a != b => {
                            return Err(Violation::LogMismatch {
                                node: o.node,
                                index: e.index,
                                term: e.term,
                                what: "same index and term, different preceding entry",
                            });
                        }
                        (None, Some(b)) => known.prev_term = Some(b),
                        _ => {}
                    }
                }
            }
        }

        if let Some((i, t)) = o.installed_snapshot
            && let Some((ct, _, _)) = self.committed.get(&i)
            && *ct != t
        {
            return Err(Violation::CommittedChanged {
                node: o.node,
                index: i,
                what: "snapshot's last entry differs from the committed one",
            });
        }

        // Leader completeness and election safety, once per term led.
        if o.role == Role::Leader {
            match self.leaders_by_term.get(&o.term) {
                Some(&other) if other != o.node => {
                    return Err(Violation::TwoLeaders {
                        term: o.term,
                        first: other,
                        second: o.node,
                    });
                }
                Some(_) => {}
                None => {
                    self.leaders_by_term.insert(o.term, o.node);
                }
            }
            let newly = prev
                .as_ref()
                .is_none_or(|p| !same_incarnation || p.led_term != Some(o.term));
            if newly {
                self.elections += 1;
                let mut i = o.log.first_index();
                while i <= self.max_committed {
                    if let Some((ct, _, commit_term)) = self.committed.get(&i)
                        && *commit_term < o.term
                        && o.log.term(i) != Some(*ct)
                    {
                        return Err(Violation::LeaderIncomplete {
                            node: o.node,
                            term: o.term,
                            missing: i,
                        });
                    }
                    i = i.next();
                }
            }
        }

        // Everything newly committed here must agree with what others committed.
        let mut i = prev_commit.next().max(o.log.first_index());
        while i <= o.commit {
            let Some(e) = o.log.entry(i) else { break };
            let digest = entry_digest(e);
            match self.committed.get_mut(&i) {
                None => {
                    self.committed.insert(i, (e.term, digest, o.term));
                }
                Some((t, d, commit_term)) => {
                    if *t != e.term || *d != digest {
                        return Err(Violation::CommittedChanged {
                            node: o.node,
                            index: i,
                            what: "a different entry was committed here before",
                        });
                    }
                    *commit_term = (*commit_term).min(o.term);
                }
            }
            i = i.next();
        }
        self.max_committed = self.max_committed.max(o.commit);

        // A leader's commit must rest on a durable quorum. One step may both
        // commit (under the membership it had) and apply a membership change;
        // single-server changes make the old and new majorities overlap, so a
        // durable majority of either justifies the commit.
        let led_this_term = prev
            .as_ref()
            .is_some_and(|p| same_incarnation && p.led_term == Some(o.term));
        if o.role == Role::Leader
            && led_this_term
            && o.commit > prev_commit
            && let Some(term) = o.log.term(o.commit)
        {
            if term != o.term {
                return Err(Violation::CommittedOldTerm {
                    node: o.node,
                    index: o.commit,
                    entry_term: term,
                    leader_term: o.term,
                });
            }
            let majority_holds = |voters: &BTreeSet<NodeId>| {
                let holders = voters
                    .iter()
                    .filter(|v| durable(**v, o.commit, term))
                    .count();
                (holders > voters.len() / 2, holders)
            };
            let (now_ok, holders) = majority_holds(o.voters);
            let before_ok = prev
                .as_ref()
                .is_some_and(|p| !p.voters.is_empty() && majority_holds(&p.voters).0);
            if !now_ok && !before_ok {
                return Err(Violation::CommittedWithoutQuorum {
                    node: o.node,
                    index: o.commit,
                    holders,
                    voters: o.voters.len(),
                });
            }
        }

        for e in o.applied {
            match self.committed.get(&e.index) {
                Some(&(t, d, _)) if t == e.term && d == entry_digest(e) => {}
                Some(_) => {
                    return Err(Violation::CommittedChanged {
                        node: o.node,
                        index: e.index,
                        what: "applied an entry that differs from the committed one",
                    });
                }
                None => {
                    return Err(Violation::CommittedChanged {
                        node: o.node,
                        index: e.index,
                        what: "applied an entry nobody committed",
                    });
                }
            }
        }

        self.nodes.insert(
            o.node,
            NodeTrack {
                incarnation: o.incarnation,
                term: o.term,
                commit: o.commit,
                led_term: if o.role == Role::Leader {
                    Some(o.term)
                } else {
                    prev.filter(|_| same_incarnation).and_then(|p| p.led_term)
                },
                voters: o.voters.clone(),
            },
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    /// A hand-made log: entries from index 1.
    struct FakeLog(Vec<Entry>);

    impl LogView for FakeLog {
        fn first_index(&self) -> LogIndex {
            LogIndex(1)
        }
        fn last_index(&self) -> LogIndex {
            LogIndex(self.0.len() as u64)
        }
        fn term(&self, i: LogIndex) -> Option<Term> {
            if i.0 == 0 {
                return Some(Term(0));
            }
            self.0.get(i.0 as usize - 1).map(|e| e.term)
        }
        fn entry(&self, i: LogIndex) -> Option<&Entry> {
            self.0.get((i.0 as usize).checked_sub(1)?)
        }
    }

    fn ent(index: u64, term: u64, data: &'static str) -> Entry {
        Entry {
            term: Term(term),
            index: LogIndex(index),
            kind: EntryKind::Normal,
            data: Bytes::from_static(data.as_bytes()),
        }
    }

    fn voters(n: u64) -> BTreeSet<NodeId> {
        (1..=n).map(NodeId).collect()
    }

    struct Obs {
        node: u64,
        inc: u64,
        role: Role,
        term: u64,
        commit: u64,
        log: Vec<Entry>,
        new: Vec<Entry>,
        applied: Vec<Entry>,
    }

    fn obs(node: u64, role: Role, term: u64, commit: u64, log: Vec<Entry>) -> Obs {
        Obs {
            node,
            inc: 1,
            role,
            term,
            commit,
            log,
            new: vec![],
            applied: vec![],
        }
    }

    fn feed(
        c: &mut Checker,
        o: &Obs,
        durable: &dyn Fn(NodeId, LogIndex, Term) -> bool,
    ) -> Result<(), Violation> {
        feed_with(c, o, &voters(3), durable)
    }

    fn feed_with(
        c: &mut Checker,
        o: &Obs,
        v: &BTreeSet<NodeId>,
        durable: &dyn Fn(NodeId, LogIndex, Term) -> bool,
    ) -> Result<(), Violation> {
        let log = FakeLog(o.log.clone());
        c.observe(
            &Observation {
                node: NodeId(o.node),
                incarnation: o.inc,
                role: o.role,
                term: Term(o.term),
                commit: LogIndex(o.commit),
                voters: v,
                log: &log,
                new_entries: &o.new,
                applied: &o.applied,
                installed_snapshot: None,
            },
            durable,
        )
    }

    const ALL_DURABLE: &dyn Fn(NodeId, LogIndex, Term) -> bool = &|_, _, _| true;

    #[test]
    fn two_leaders_in_one_term_fire() {
        let mut c = Checker::default();
        feed(&mut c, &obs(1, Role::Leader, 2, 0, vec![]), ALL_DURABLE).unwrap();
        let err = feed(&mut c, &obs(2, Role::Leader, 2, 0, vec![]), ALL_DURABLE).unwrap_err();
        assert!(matches!(err, Violation::TwoLeaders { .. }), "{err}");
        // Leaders of different terms are fine.
        feed(&mut c, &obs(2, Role::Leader, 3, 0, vec![]), ALL_DURABLE).unwrap();
    }

    #[test]
    fn term_and_commit_regressions_fire_within_an_incarnation_only() {
        let mut c = Checker::default();
        let log = vec![ent(1, 1, "a"), ent(2, 1, "b")];
        feed(
            &mut c,
            &obs(1, Role::Follower, 3, 2, log.clone()),
            ALL_DURABLE,
        )
        .unwrap();
        let err = feed(
            &mut c,
            &obs(1, Role::Follower, 2, 2, log.clone()),
            ALL_DURABLE,
        )
        .unwrap_err();
        assert!(matches!(err, Violation::TermRegressed { .. }));
        let err = feed(
            &mut c,
            &obs(1, Role::Follower, 3, 1, log.clone()),
            ALL_DURABLE,
        )
        .unwrap_err();
        assert!(matches!(err, Violation::CommitRegressed { .. }));
        // After a restart, the durable (older) commit index is legitimate.
        let mut restarted = obs(1, Role::Follower, 3, 1, log);
        restarted.inc = 2;
        feed(&mut c, &restarted, ALL_DURABLE).unwrap();
    }

    #[test]
    fn log_matching_fires_on_different_payload_or_history() {
        let mut c = Checker::default();
        let mut a = obs(
            1,
            Role::Follower,
            2,
            0,
            vec![ent(1, 1, "a"), ent(2, 2, "b")],
        );
        a.new = a.log.clone();
        feed(&mut c, &a, ALL_DURABLE).unwrap();
        let mut b = obs(
            2,
            Role::Follower,
            2,
            0,
            vec![ent(1, 1, "a"), ent(2, 2, "X")],
        );
        b.new = b.log.clone();
        assert!(matches!(
            feed(&mut c, &b, ALL_DURABLE),
            Err(Violation::LogMismatch { .. })
        ));
        let mut c2 = Checker::default();
        feed(&mut c2, &a, ALL_DURABLE).unwrap();
        // Same (2, t2) entry but after an entry of another term.
        let mut d = obs(
            3,
            Role::Follower,
            2,
            0,
            vec![ent(1, 2, "z"), ent(2, 2, "b")],
        );
        d.new = vec![d.log[1].clone()];
        assert!(matches!(
            feed(&mut c2, &d, ALL_DURABLE),
            Err(Violation::LogMismatch { .. })
        ));
    }

    #[test]
    fn leader_without_committed_entry_fires() {
        let mut c = Checker::default();
        feed(
            &mut c,
            &obs(
                1,
                Role::Follower,
                1,
                2,
                vec![ent(1, 1, "a"), ent(2, 1, "b")],
            ),
            ALL_DURABLE,
        )
        .unwrap();
        let err = feed(
            &mut c,
            &obs(2, Role::Leader, 2, 1, vec![ent(1, 1, "a")]),
            ALL_DURABLE,
        )
        .unwrap_err();
        assert!(
            matches!(
                err,
                Violation::LeaderIncomplete {
                    missing: LogIndex(2),
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn a_late_leader_of_an_older_term_need_not_hold_newer_commits() {
        let mut c = Checker::default();
        // Term 4 committed entries 1 (term 2) and 2 (term 4).
        feed(
            &mut c,
            &obs(3, Role::Leader, 4, 2, vec![ent(1, 2, "a"), ent(2, 4, "b")]),
            ALL_DURABLE,
        )
        .unwrap();
        // A paused candidate of term 3 wins its election late, without them.
        feed(
            &mut c,
            &obs(2, Role::Leader, 3, 0, vec![ent(1, 2, "a")]),
            ALL_DURABLE,
        )
        .unwrap();
        // A leader of term 5 without entry 2 is wrong.
        let err = feed(
            &mut c,
            &obs(1, Role::Leader, 5, 0, vec![ent(1, 2, "a")]),
            ALL_DURABLE,
        )
        .unwrap_err();
        assert!(
            matches!(
                err,
                Violation::LeaderIncomplete {
                    missing: LogIndex(2),
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn committing_a_different_entry_fires() {
        let mut c = Checker::default();
        feed(
            &mut c,
            &obs(1, Role::Follower, 1, 1, vec![ent(1, 1, "a")]),
            ALL_DURABLE,
        )
        .unwrap();
        let err = feed(
            &mut c,
            &obs(2, Role::Follower, 2, 1, vec![ent(1, 2, "b")]),
            ALL_DURABLE,
        )
        .unwrap_err();
        assert!(matches!(err, Violation::CommittedChanged { .. }), "{err}");
    }

    #[test]
    fn applying_an_uncommitted_or_different_entry_fires() {
        let mut c = Checker::default();
        let mut o = obs(1, Role::Follower, 1, 0, vec![ent(1, 1, "a")]);
        o.applied = vec![ent(1, 1, "a")];
        assert!(matches!(
            feed(&mut c, &o, ALL_DURABLE),
            Err(Violation::CommittedChanged { .. })
        ));
        let mut c = Checker::default();
        feed(
            &mut c,
            &obs(1, Role::Follower, 1, 1, vec![ent(1, 1, "a")]),
            ALL_DURABLE,
        )
        .unwrap();
        let mut o = obs(2, Role::Follower, 1, 0, vec![]);
        o.applied = vec![ent(1, 1, "not a")];
        assert!(matches!(
            feed(&mut c, &o, ALL_DURABLE),
            Err(Violation::CommittedChanged { .. })
        ));
    }

    #[test]
    fn leader_commit_without_durable_quorum_fires() {
        let mut c = Checker::default();
        let log = vec![ent(1, 2, "a")];
        feed(
            &mut c,
            &obs(1, Role::Leader, 2, 0, log.clone()),
            ALL_DURABLE,
        )
        .unwrap();
        // Only the leader itself holds it durably.
        let only_leader = |v: NodeId, _: LogIndex, _: Term| v == NodeId(1);
        let err = feed(
            &mut c,
            &obs(1, Role::Leader, 2, 1, log.clone()),
            &only_leader,
        )
        .unwrap_err();
        assert!(
            matches!(
                err,
                Violation::CommittedWithoutQuorum {
                    holders: 1,
                    voters: 3,
                    ..
                }
            ),
            "{err}"
        );
        // With two of three it is fine.
        let mut c = Checker::default();
        feed(
            &mut c,
            &obs(1, Role::Leader, 2, 0, log.clone()),
            ALL_DURABLE,
        )
        .unwrap();
        let two = |v: NodeId, _: LogIndex, _: Term| v != NodeId(3);
        feed(&mut c, &obs(1, Role::Leader, 2, 1, log), &two).unwrap();
    }

    #[test]
    fn commit_under_the_previous_membership_is_accepted_but_under_neither_fires() {
        let log = vec![ent(1, 2, "a")];
        let two_of_three = |v: NodeId, _: LogIndex, _: Term| v == NodeId(1) || v == NodeId(2);
        // Committed with 2 of {1,2,3}, and in the same step {1,2,3,4} took effect.
        let mut c = Checker::default();
        feed_with(
            &mut c,
            &obs(1, Role::Leader, 2, 0, log.clone()),
            &voters(3),
            ALL_DURABLE,
        )
        .unwrap();
        feed_with(
            &mut c,
            &obs(1, Role::Leader, 2, 1, log.clone()),
            &voters(4),
            &two_of_three,
        )
        .unwrap();
        // Had the previous membership also been four voters, 2 holders is no majority.
        let mut c = Checker::default();
        feed_with(
            &mut c,
            &obs(1, Role::Leader, 2, 0, log.clone()),
            &voters(4),
            ALL_DURABLE,
        )
        .unwrap();
        let err = feed_with(
            &mut c,
            &obs(1, Role::Leader, 2, 1, log),
            &voters(4),
            &two_of_three,
        )
        .unwrap_err();
        assert!(
            matches!(
                err,
                Violation::CommittedWithoutQuorum {
                    holders: 2,
                    voters: 4,
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn leader_committing_an_older_terms_entry_fires() {
        let log = vec![ent(1, 1, "a"), ent(2, 3, "noop")];
        let mut c = Checker::default();
        feed(
            &mut c,
            &obs(1, Role::Leader, 3, 0, log.clone()),
            ALL_DURABLE,
        )
        .unwrap();
        let err = feed(
            &mut c,
            &obs(1, Role::Leader, 3, 1, log.clone()),
            ALL_DURABLE,
        )
        .unwrap_err();
        assert!(matches!(err, Violation::CommittedOldTerm { .. }), "{err}");
        // Committing through its own entry is the rule.
        let mut c = Checker::default();
        feed(
            &mut c,
            &obs(1, Role::Leader, 3, 0, log.clone()),
            ALL_DURABLE,
        )
        .unwrap();
        feed(&mut c, &obs(1, Role::Leader, 3, 2, log), ALL_DURABLE).unwrap();
    }
}
