//! The durable image of one member's Raft storage, in memory: what a crash
//! leaves behind. The simulator's disk keeps one of these per node (plus the
//! writes not yet synced), and the production WAL must recover to the same
//! image (one conformance suite checks both; see the storage issue).

use crate::node::Persist;
use crate::raft::{Entry, HardState, Recovered, Snapshot};
use crate::types::LogIndex;

#[derive(Clone, Debug, Default)]
pub struct MemStorage {
    hard_state: HardState,
    snapshot: Option<Snapshot>,
    /// Contiguous entries. They may start before the snapshot index (kept for
    /// catch-up) but never after `snapshot index + 1`.
    entries: Vec<Entry>,
}

impl MemStorage {
    pub fn hard_state(&self) -> HardState {
        self.hard_state
    }

    pub fn snapshot(&self) -> Option<&Snapshot> {
        self.snapshot.as_ref()
    }

    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    pub fn last_index(&self) -> LogIndex {
        match (self.entries.last(), &self.snapshot) {
            (Some(e), _) => e.index,
            (None, Some(s)) => s.meta.index,
            (None, None) => LogIndex::ZERO,
        }
    }

    /// The durable entry at `index`, if any.
    pub fn entry(&self, index: LogIndex) -> Option<&Entry> {
        let first = self.entries.first()?.index;
        if index < first {
            return None;
        }
        self.entries.get(usize::try_from(index.0 - first.0).ok()?)
    }

    /// Applies one persist, in the order `Persist` documents.
    pub fn apply(&mut self, p: &Persist) {
        if let Some(s) = &p.snapshot {
            self.snapshot = Some(s.clone());
            self.entries.clear();
        }
        if let Some((s, compact_to)) = &p.local_snapshot {
            if self
                .snapshot
                .as_ref()
                .is_none_or(|cur| cur.meta.index < s.meta.index)
            {
                self.snapshot = Some(s.clone());
            }
            let drop = self.position(compact_to.next());
            self.entries.drain(..drop);
        }
        if let Some(first) = p.entries.first() {
            let keep = self.position(first.index);
            self.entries.truncate(keep);
            let follows = match (self.entries.last(), &self.snapshot) {
                (Some(e), _) => e.index.next() == first.index,
                (None, Some(s)) => first.index <= s.meta.index.next(),
                (None, None) => first.index == LogIndex(1),
            };
            assert!(follows, "persist leaves a gap before {:?}", first.index);
            self.entries.extend(p.entries.iter().cloned());
        }
        if let Some(hs) = p.hard_state {
            self.hard_state = hs;
        }
    }

    /// How many stored entries come before `index` (entries are contiguous).
    fn position(&self, index: LogIndex) -> usize {
        match self.entries.first() {
            None => 0,
            Some(f) if index <= f.index => 0,
            Some(f) => usize::try_from(index.0 - f.index.0)
                .map_or(self.entries.len(), |k| k.min(self.entries.len())),
        }
    }

    pub fn recover(&self) -> Recovered {
        Recovered {
            hard_state: self.hard_state,
            snapshot: self.snapshot.clone(),
            entries: self.entries.clone(),
            lost_state: false,
        }
    }
}

/// Durable Raft storage, as the driver sees it: writes in persist order, a
/// sync that makes everything written so far durable, and what a restart
/// would recover. The production WAL, the simulator's disk and `MemStorage`
/// implement it, and all of them must pass `conformance`.
pub trait Storage {
    type Error: std::fmt::Debug;

    /// Writes a persist. Not durable until `sync` returns.
    fn write(&mut self, p: &Persist) -> Result<(), Self::Error>;
    /// Makes everything written so far durable, except that a local snapshot
    /// may become durable later (see `flush_snapshots`): until it does, a
    /// restart recovers the snapshot before it and the log after that one,
    /// which holds the same state.
    fn sync(&mut self) -> Result<(), Self::Error>;
    /// Waits until every local snapshot written is durable (and recorded).
    fn flush_snapshots(&mut self) -> Result<(), Self::Error> {
        self.sync()
    }
    /// What a restart would recover from the durable state.
    fn recovered(&self) -> Result<Recovered, Self::Error>;
}

/// `MemStorage` with the write/sync split: writes wait in a queue until synced.
#[derive(Clone, Debug, Default)]
pub struct SyncedMem {
    pub durable: MemStorage,
    pending: Vec<Persist>,
}

impl Storage for SyncedMem {
    type Error = std::convert::Infallible;

    fn write(&mut self, p: &Persist) -> Result<(), Self::Error> {
        self.pending.push(p.clone());
        Ok(())
    }

    fn sync(&mut self) -> Result<(), Self::Error> {
        for p in self.pending.drain(..) {
            self.durable.apply(&p);
        }
        Ok(())
    }

    fn recovered(&self) -> Result<Recovered, Self::Error> {
        Ok(self.durable.recover())
    }
}

/// One conformance suite for every `Storage`: `fresh` makes an empty store,
/// `reopen` simulates a restart (dropping anything not synced is allowed,
/// losing anything synced is not). Panics with what differs.
pub mod conformance {
    use super::*;
    use crate::raft::{ConfState, Entry, EntryKind, HardState, Snapshot, SnapshotMeta};
    use crate::types::{LogIndex, NodeId, Term};
    use bytes::Bytes;

    fn ent(i: u64, t: u64) -> Entry {
        Entry {
            term: Term(t),
            index: LogIndex(i),
            kind: EntryKind::Normal,
            data: Bytes::from(format!("e{i}t{t}")),
        }
    }

    fn persist(n: u64, entries: Vec<Entry>, hs: Option<HardState>) -> Persist {
        Persist {
            number: n,
            hard_state: hs,
            entries,
            must_sync: true,
            ..Persist::default()
        }
    }

    fn hs(term: u64, vote: u64, commit: u64) -> HardState {
        HardState {
            term: Term(term),
            vote: NodeId(vote),
            commit: LogIndex(commit),
        }
    }

    fn indexes(r: &Recovered) -> Vec<(u64, u64)> {
        r.entries.iter().map(|e| (e.index.0, e.term.0)).collect()
    }

    pub fn run<S: Storage>(mut fresh: impl FnMut() -> S, mut reopen: impl FnMut(S) -> S) {
        // Synced entries and hard state survive a restart.
        let mut s = fresh();
        s.write(&persist(
            1,
            (1..=3).map(|i| ent(i, 1)).collect(),
            Some(hs(1, 1, 2)),
        ))
        .unwrap();
        s.sync().unwrap();
        let s = reopen(s);
        let r = s.recovered().unwrap();
        assert_eq!(
            indexes(&r),
            vec![(1, 1), (2, 1), (3, 1)],
            "synced entries survive"
        );
        assert_eq!(r.hard_state, hs(1, 1, 2));

        // A later write overwrites a suffix (Raft truncation).
        let mut s = s;
        s.write(&persist(2, vec![ent(3, 2), ent(4, 2)], Some(hs(2, 2, 3))))
            .unwrap();
        s.sync().unwrap();
        let r = reopen(s).recovered().unwrap();
        assert_eq!(
            indexes(&r),
            vec![(1, 1), (2, 1), (3, 2), (4, 2)],
            "truncation then append"
        );
        assert_eq!(r.hard_state, hs(2, 2, 3));

        // A snapshot from the leader replaces the log; entries follow it.
        let mut s = fresh();
        s.write(&persist(
            1,
            (1..=5).map(|i| ent(i, 1)).collect(),
            Some(hs(1, 0, 5)),
        ))
        .unwrap();
        let snap = Snapshot {
            meta: SnapshotMeta {
                index: LogIndex(10),
                term: Term(3),
                conf: ConfState {
                    voters: [NodeId(1)].into(),
                    learners: Default::default(),
                },
            },
            data: Bytes::from_static(b"state at 10"),
        };
        s.write(&Persist {
            number: 2,
            snapshot: Some(snap.clone()),
            hard_state: Some(hs(3, 0, 10)),
            must_sync: true,
            ..Persist::default()
        })
        .unwrap();
        s.write(&persist(
            3,
            vec![ent(11, 3), ent(12, 3)],
            Some(hs(3, 0, 12)),
        ))
        .unwrap();
        s.sync().unwrap();
        let r = reopen(s).recovered().unwrap();
        assert_eq!(
            r.snapshot.as_ref().map(|x| (x.meta.index, x.meta.term)),
            Some((LogIndex(10), Term(3)))
        );
        assert_eq!(
            r.snapshot.as_ref().map(|x| x.data.clone()),
            Some(snap.data.clone())
        );
        assert_eq!(
            indexes(&r)
                .into_iter()
                .filter(|(i, _)| *i > 10)
                .collect::<Vec<_>>(),
            vec![(11, 3), (12, 3)]
        );
        assert_eq!(r.hard_state, hs(3, 0, 12));

        // A local snapshot: later entries stay.
        let mut s = fresh();
        s.write(&persist(
            1,
            (1..=8).map(|i| ent(i, 1)).collect(),
            Some(hs(1, 0, 8)),
        ))
        .unwrap();
        let local = Snapshot {
            meta: SnapshotMeta {
                index: LogIndex(6),
                term: Term(1),
                conf: ConfState::default(),
            },
            data: Bytes::from_static(b"s6"),
        };
        s.write(&Persist {
            number: 2,
            local_snapshot: Some((local.clone(), LogIndex(4))),
            must_sync: true,
            ..Persist::default()
        })
        .unwrap();
        s.sync().unwrap();
        // Synced but not flushed: the new snapshot, or the log it covers.
        let mut s = reopen(s);
        let r = s.recovered().unwrap();
        match r.snapshot.as_ref().map(|x| x.meta.index) {
            Some(LogIndex(6)) => {}
            None => assert_eq!(
                indexes(&r),
                (1..=8).map(|i| (i, 1)).collect::<Vec<_>>(),
                "without the snapshot, the log it covers stays"
            ),
            other => panic!("recovered snapshot {other:?}"),
        }
        s.write(&Persist {
            number: 3,
            local_snapshot: Some((local, LogIndex(4))),
            must_sync: true,
            ..Persist::default()
        })
        .unwrap();
        s.sync().unwrap();
        s.flush_snapshots().unwrap();
        let r = reopen(s).recovered().unwrap();
        assert_eq!(r.snapshot.as_ref().map(|x| x.meta.index), Some(LogIndex(6)));
        let after: Vec<u64> = r
            .entries
            .iter()
            .map(|e| e.index.0)
            .filter(|i| *i > 6)
            .collect();
        assert_eq!(after, vec![7, 8], "entries after a local snapshot stay");
        assert_eq!(r.hard_state.commit, LogIndex(8));

        // Unsynced writes may or may not survive, but synced ones always do,
        // and what survives is a prefix of what was written.
        let mut s = fresh();
        s.write(&persist(
            1,
            (1..=2).map(|i| ent(i, 1)).collect(),
            Some(hs(1, 1, 1)),
        ))
        .unwrap();
        s.sync().unwrap();
        s.write(&persist(
            2,
            (3..=4).map(|i| ent(i, 1)).collect(),
            Some(hs(1, 1, 3)),
        ))
        .unwrap();
        let r = reopen(s).recovered().unwrap();
        let got = indexes(&r);
        assert!(
            got == vec![(1, 1), (2, 1)] || got == vec![(1, 1), (2, 1), (3, 1), (4, 1)],
            "got {got:?}"
        );
        assert!(r.hard_state == hs(1, 1, 1) || r.hard_state == hs(1, 1, 3));

        // Many small syncs and a big entry.
        let mut s = fresh();
        for i in 1..=200u64 {
            s.write(&persist(i, vec![ent(i, 1)], Some(hs(1, 1, i))))
                .unwrap();
            if i % 7 == 0 {
                s.sync().unwrap();
            }
        }
        let big = Entry {
            term: Term(1),
            index: LogIndex(201),
            kind: EntryKind::ConfChange,
            data: Bytes::from(vec![9u8; 300_000]),
        };
        s.write(&persist(201, vec![big.clone()], Some(hs(1, 1, 201))))
            .unwrap();
        s.sync().unwrap();
        let r = reopen(s).recovered().unwrap();
        assert_eq!(r.entries.len(), 201);
        assert_eq!(r.entries.last(), Some(&big));
        assert_eq!(r.hard_state.commit, LogIndex(201));
    }

    #[cfg(test)]
    #[test]
    fn mem_storage_conforms() {
        run(SyncedMem::default, |mut s| {
            s.pending.clear(); // a restart loses what was not synced
            s
        });
    }
}
