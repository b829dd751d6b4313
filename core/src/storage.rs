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
        }
    }
}
