//! The in-memory Raft log: a compacted prefix (summarised by its last index and
//! term), the entries after it, and four watermarks.
//!
//! Invariants (checked by [`RaftLog::check`] in debug builds and tests):
//! - `entries[k].index == offset + 1 + k` and terms never decrease along the log;
//! - `applied <= committed <= last_index()`;
//! - `persisted <= last_index()` and `offset + 1 <= unstable_from <= last_index() + 1`.

use crate::raft::message::{Entry, Snapshot};
use crate::types::{LogIndex, Term};

#[derive(Clone, Debug)]
pub struct RaftLog {
    /// Index of the last entry folded into the snapshot (0 for a fresh log).
    offset: LogIndex,
    /// Term of the entry at `offset`.
    offset_term: Term,
    entries: Vec<Entry>,
    /// Highest index known to be committed.
    pub(crate) committed: LogIndex,
    /// Highest index applied to the state machine.
    pub(crate) applied: LogIndex,
    /// Highest index known durable on this node's storage.
    pub(crate) persisted: LogIndex,
    /// First index not yet handed to the driver for persisting.
    unstable_from: LogIndex,
}

impl RaftLog {
    /// A log whose compacted prefix ends at `(offset, offset_term)` and whose
    /// entries (already durable) follow it.
    pub fn new(offset: LogIndex, offset_term: Term, entries: Vec<Entry>) -> RaftLog {
        let mut log = RaftLog {
            offset,
            offset_term,
            entries: Vec::new(),
            committed: offset,
            applied: offset,
            persisted: offset,
            unstable_from: offset.next(),
        };
        log.entries = entries;
        let last = log.last_index();
        log.persisted = last;
        log.unstable_from = last.next();
        log
    }

    pub fn offset(&self) -> LogIndex {
        self.offset
    }

    pub fn first_index(&self) -> LogIndex {
        self.offset.next()
    }

    pub fn last_index(&self) -> LogIndex {
        self.offset.plus(self.entries.len() as u64)
    }

    pub fn last_term(&self) -> Term {
        self.entries.last().map_or(self.offset_term, |e| e.term)
    }

    pub fn committed(&self) -> LogIndex {
        self.committed
    }

    pub fn applied(&self) -> LogIndex {
        self.applied
    }

    pub fn persisted(&self) -> LogIndex {
        self.persisted
    }

    /// The term of the entry at `index`, or `None` when it is compacted away
    /// (below `offset`) or not yet in the log.
    pub fn term(&self, index: LogIndex) -> Option<Term> {
        if index == self.offset {
            return Some(self.offset_term);
        }
        self.entry(index).map(|e| e.term)
    }

    pub fn entry(&self, index: LogIndex) -> Option<&Entry> {
        if index <= self.offset {
            return None;
        }
        let k = index.distance_from(self.offset) - 1;
        self.entries.get(usize::try_from(k).ok()?)
    }

    pub fn match_term(&self, index: LogIndex, term: Term) -> bool {
        self.term(index) == Some(term)
    }

    /// Raft's election restriction: is a log ending at `(last_index, last_term)`
    /// at least as up to date as ours?
    pub fn is_up_to_date(&self, last_index: LogIndex, last_term: Term) -> bool {
        let my_term = self.last_term();
        last_term > my_term || (last_term == my_term && last_index >= self.last_index())
    }

    /// The largest index `<= index` whose term is `<= term`, with that term. An
    /// index whose term is unknown (compacted) is returned with term 0, meaning
    /// "possibly matching". Used on both sides of fast conflict backtracking.
    pub fn find_conflict_by_term(&self, index: LogIndex, term: Term) -> (LogIndex, Term) {
        let mut i = index.min(self.last_index());
        loop {
            match self.term(i) {
                None => return (i, Term::ZERO),
                Some(t) if t <= term => return (i, t),
                Some(_) => {}
            }
            if i == LogIndex::ZERO {
                return (i, Term::ZERO);
            }
            i = i.prev();
        }
    }

    /// A follower's handling of an append: if our entry at `prev_index` has
    /// `prev_term`, merge `entries` (truncating a conflicting suffix), advance
    /// the commit index to `min(commit, last new index)` and return the last new
    /// index; otherwise `None`.
    ///
    /// Panics if the merge would overwrite a committed entry: that is lost safety.
    pub fn maybe_append(
        &mut self,
        prev_index: LogIndex,
        prev_term: Term,
        commit: LogIndex,
        entries: &[Entry],
    ) -> Option<LogIndex> {
        if !self.match_term(prev_index, prev_term) {
            return None;
        }
        let last_new = prev_index.plus(entries.len() as u64);
        if let Some(k) = entries
            .iter()
            .position(|e| !self.match_term(e.index, e.term))
        {
            let first_conflict = entries[k].index;
            assert!(
                first_conflict > self.committed,
                "append conflicts with committed entry {:?} (committed {:?})",
                first_conflict,
                self.committed
            );
            self.truncate_and_append(&entries[k..]);
        }
        self.commit_to(commit.min(last_new));
        Some(last_new)
    }

    /// Appends entries that follow our last entry (the leader's own proposals).
    pub fn append(&mut self, entries: Vec<Entry>) {
        if let Some(first) = entries.first() {
            assert_eq!(
                first.index,
                self.last_index().next(),
                "leader append not contiguous"
            );
            assert!(
                first.term >= self.last_term(),
                "leader append with older term"
            );
        }
        self.entries.extend(entries);
    }

    /// Replaces everything from `entries[0].index` on with `entries`.
    fn truncate_and_append(&mut self, entries: &[Entry]) {
        let Some(first) = entries.first() else { return };
        let from = first.index;
        assert!(from > self.offset, "truncating into the compacted prefix");
        assert!(from <= self.last_index().next(), "append leaves a gap");
        let keep = usize::try_from(from.distance_from(self.offset) - 1).expect("index fits usize");
        self.entries.truncate(keep);
        self.entries.extend_from_slice(entries);
        self.unstable_from = self.unstable_from.min(from);
        self.persisted = self.persisted.min(from.prev());
        debug_assert!(self.check().is_ok(), "{:?}", self.check());
    }

    pub fn commit_to(&mut self, index: LogIndex) {
        if index <= self.committed {
            return;
        }
        assert!(
            index <= self.last_index(),
            "commit {:?} beyond last index {:?}",
            index,
            self.last_index()
        );
        self.committed = index;
    }

    pub fn applied_to(&mut self, index: LogIndex) {
        assert!(
            index >= self.applied,
            "applied regressed {:?} -> {:?}",
            self.applied,
            index
        );
        assert!(
            index <= self.committed,
            "applied {:?} beyond committed {:?}",
            index,
            self.committed
        );
        self.applied = index;
    }

    /// Entries in `[lo, hi)`, stopping before `max_bytes` is exceeded but always
    /// returning at least one entry when the range is non-empty. `None` if `lo`
    /// is compacted.
    pub fn slice(&self, lo: LogIndex, hi: LogIndex, max_bytes: u64) -> Option<Vec<Entry>> {
        if lo <= self.offset {
            return None;
        }
        let hi = hi.min(self.last_index().next());
        let mut out = Vec::new();
        let mut size = 0u64;
        let mut i = lo;
        while i < hi {
            let e = self.entry(i).expect("index within log");
            size += e.size_bytes();
            if !out.is_empty() && size > max_bytes {
                break;
            }
            out.push(e.clone());
            i = i.next();
        }
        Some(out)
    }

    /// Committed entries that are also durable here and not yet applied, up to
    /// `max_bytes` (at least one).
    pub fn next_to_apply(&self, max_bytes: u64) -> Vec<Entry> {
        let hi = self.committed.min(self.persisted);
        if hi <= self.applied {
            return Vec::new();
        }
        self.slice(self.applied.next(), hi.next(), max_bytes)
            .expect("applied entries are never compacted before they are applied")
    }

    pub fn has_unstable(&self) -> bool {
        self.unstable_from <= self.last_index()
    }

    /// Hands out the entries not yet given to the driver to persist.
    pub fn take_unstable(&mut self) -> Vec<Entry> {
        if !self.has_unstable() {
            return Vec::new();
        }
        let k = usize::try_from(self.unstable_from.distance_from(self.offset) - 1)
            .expect("index fits usize");
        let out = self.entries[k..].to_vec();
        self.unstable_from = self.last_index().next();
        out
    }

    /// The driver reports that entries up to `(index, term)` are durable. Ignored
    /// if that entry has since been replaced (a later write will cover it).
    pub fn persisted_to(&mut self, index: LogIndex, term: Term) {
        if index > self.persisted && index < self.unstable_from && self.match_term(index, term) {
            self.persisted = index;
        }
    }

    /// Drops entries up to and including `index`, which must be applied.
    /// Folds the entries up to `index` into the snapshot and returns them
    /// (to be freed by the caller, perhaps a few at a time).
    #[must_use = "the entries compacted away, to free"]
    pub fn compact(&mut self, index: LogIndex) -> Vec<Entry> {
        if index <= self.offset {
            return Vec::new();
        }
        assert!(index <= self.applied, "compacting unapplied entries");
        assert!(
            index <= self.persisted,
            "compacting entries not yet durable"
        );
        let term = self.term(index).expect("index within log");
        let k = usize::try_from(index.distance_from(self.offset)).expect("index fits usize");
        // Keep the (usually short) rest in a new vector: no shifting of the
        // whole log, and nothing freed here.
        let rest = self.entries.split_off(k);
        let gone = std::mem::replace(&mut self.entries, rest);
        self.offset = index;
        self.offset_term = term;
        gone
    }

    /// Resets the log to a snapshot received from the leader. Everything is
    /// replaced; the snapshot itself becomes durable when the driver says so.
    pub fn restore(&mut self, snap: &Snapshot) {
        let idx = snap.meta.index;
        assert!(idx > self.committed, "restoring an older snapshot");
        self.entries.clear();
        self.offset = idx;
        self.offset_term = snap.meta.term;
        self.committed = idx;
        self.applied = idx;
        self.unstable_from = idx.next();
        // Not durable until the driver persists the snapshot.
        self.persisted = self.persisted.min(idx.prev());
    }

    /// Marks a restored snapshot durable.
    pub fn snapshot_persisted(&mut self, index: LogIndex, term: Term) {
        if self.match_term(index, term) && index > self.persisted {
            self.persisted = index;
        }
    }

    /// Checks the invariants listed in the module documentation.
    pub fn check(&self) -> Result<(), String> {
        let mut prev_term = self.offset_term;
        for (k, e) in self.entries.iter().enumerate() {
            let want = self.offset.plus(k as u64 + 1);
            if e.index != want {
                return Err(format!("entry {k} has index {:?}, want {want:?}", e.index));
            }
            if e.term < prev_term {
                return Err(format!("term decreases at {:?}", e.index));
            }
            prev_term = e.term;
        }
        if self.applied > self.committed {
            return Err(format!(
                "applied {:?} > committed {:?}",
                self.applied, self.committed
            ));
        }
        if self.committed > self.last_index() {
            return Err(format!(
                "committed {:?} > last {:?}",
                self.committed,
                self.last_index()
            ));
        }
        if self.persisted > self.last_index() {
            return Err(format!(
                "persisted {:?} > last {:?}",
                self.persisted,
                self.last_index()
            ));
        }
        if self.unstable_from <= self.offset || self.unstable_from > self.last_index().next() {
            return Err(format!(
                "unstable_from {:?} out of range",
                self.unstable_from
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::raft::message::EntryKind;
    use bytes::Bytes;
    use proptest::prelude::*;

    fn ent(index: u64, term: u64) -> Entry {
        Entry {
            term: Term(term),
            index: LogIndex(index),
            kind: EntryKind::Normal,
            data: Bytes::new(),
        }
    }

    /// The obviously-correct log: the term of every index from 1, plus the
    /// compaction point below which terms are forgotten.
    #[derive(Debug, Default)]
    struct Model {
        terms: Vec<u64>,
        offset: u64,
        committed: u64,
    }

    impl Model {
        fn term(&self, i: u64) -> Option<u64> {
            if i == 0 && self.offset == 0 {
                return Some(0);
            }
            if i < self.offset || i as usize > self.terms.len() {
                return None;
            }
            if i == 0 {
                Some(0)
            } else {
                Some(self.terms[i as usize - 1])
            }
        }
        fn last(&self) -> u64 {
            self.terms.len() as u64
        }
    }

    #[derive(Clone, Debug)]
    enum Op {
        /// A follower append at `prev` of `n` entries with terms starting at `term`.
        Append {
            prev: u64,
            prev_term: u64,
            n: u64,
            term: u64,
            commit: u64,
        },
        Commit(u64),
        Compact(u64),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (0u64..12, 0u64..5, 0u64..5, 1u64..5, 0u64..15)
                .prop_map(|(prev, prev_term, n, term, commit)| Op::Append { prev, prev_term, n, term, commit }),
            1 => (0u64..15).prop_map(Op::Commit),
            1 => (0u64..15).prop_map(Op::Compact),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig {
            failure_persistence: Some(Box::new(
                proptest::test_runner::FileFailurePersistence::Direct(
                    concat!(env!("CARGO_MANIFEST_DIR"), "/../proptest-regressions/raftlog.txt")))),
            ..ProptestConfig::default()
        })]

        #[test]
        fn log_matches_model(ops in proptest::collection::vec(op(), 0..60)) {
            let mut log = RaftLog::new(LogIndex(0), Term(0), vec![]);
            let mut m = Model::default();
            for op in ops {
                match op {
                    Op::Append { prev, prev_term, n, term, commit } => {
                        // Terms along a log never decrease: the new entries' term is
                        // at least the term at `prev`.
                        let term = term.max(prev_term);
                        let entries: Vec<Entry> = (0..n).map(|k| ent(prev + 1 + k, term)).collect();
                        let matches = m.term(prev) == Some(prev_term);
                        // Skip appends that would overwrite committed entries: Raft never sends them.
                        let conflict = entries.iter().find(|e| m.term(e.index.0) != Some(e.term.0));
                        if matches && conflict.is_some_and(|e| e.index.0 <= m.committed) {
                            continue;
                        }
                        let got = log.maybe_append(LogIndex(prev), Term(prev_term), LogIndex(commit), &entries);
                        if matches {
                            if let Some(c) = conflict {
                                m.terms.truncate(c.index.0 as usize - 1);
                                let from = c.index.0;
                                for e in &entries { if e.index.0 >= from { m.terms.push(e.term.0); } }
                            }
                            let last_new = prev + n;
                            m.committed = m.committed.max(commit.min(last_new));
                            prop_assert_eq!(got, Some(LogIndex(last_new)));
                        } else {
                            prop_assert_eq!(got, None);
                        }
                    }
                    Op::Commit(i) => {
                        if i <= m.last() {
                            log.commit_to(LogIndex(i));
                            m.committed = m.committed.max(i);
                        }
                    }
                    Op::Compact(i) => {
                        // Everything up to `committed` counts as applied and durable here.
                        let upto = log.committed();
                        log.applied_to(upto);
                        let _ = log.take_unstable();
                        log.persisted_to(log.last_index(), log.last_term());
                        let i = i.min(upto.0).min(log.persisted().0);
                        if i > m.offset {
                            let _ = log.compact(LogIndex(i));
                            m.offset = i;
                        }
                    }
                }
                prop_assert!(log.check().is_ok(), "{:?}", log.check());
                prop_assert_eq!(log.last_index().0, m.last());
                prop_assert_eq!(log.committed().0, m.committed);
                for i in 0..=m.last() + 1 {
                    prop_assert_eq!(log.term(LogIndex(i)).map(|t| t.0), m.term(i), "term at {}", i);
                }
            }
        }

        #[test]
        fn find_conflict_by_term_matches_naive(terms in proptest::collection::vec(1u64..6, 0..20), index in 0u64..25, term in 0u64..7) {
            let mut sorted = terms.clone();
            sorted.sort_unstable();
            let entries: Vec<Entry> = sorted.iter().enumerate().map(|(k, t)| ent(k as u64 + 1, *t)).collect();
            let log = RaftLog::new(LogIndex(0), Term(0), entries);
            let (i, t) = log.find_conflict_by_term(LogIndex(index), Term(term));
            // Naive: the largest j <= min(index, last) with term(j) <= term.
            let mut j = index.min(sorted.len() as u64);
            while j > 0 && sorted[j as usize - 1] > term { j -= 1; }
            let tj = if j == 0 { 0 } else { sorted[j as usize - 1] };
            prop_assert_eq!((i.0, t.0), (j, tj));
        }
    }
}
