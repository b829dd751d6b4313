//! Majority arithmetic over a set of voters.

use std::collections::{BTreeMap, BTreeSet};

use crate::types::{LogIndex, NodeId};

/// How many votes make a majority of `n` voters.
pub fn majority(n: usize) -> usize {
    n / 2 + 1
}

/// The highest index that a majority of `voters` have, given each voter's
/// matched index (missing voters count as 0). With no voters, `u64::MAX`: the
/// empty set agrees to anything, as in etcd-io/raft; callers never commit
/// without voters because the leader is always one.
pub fn committed_index(
    voters: &BTreeSet<NodeId>,
    matched: impl Fn(NodeId) -> Option<LogIndex>,
) -> LogIndex {
    if voters.is_empty() {
        return LogIndex(u64::MAX);
    }
    // Small fixed-size clusters: a stack buffer avoids allocating on the hot path.
    let mut buf = [LogIndex::ZERO; 16];
    let mut heap;
    let idx: &mut [LogIndex] = if voters.len() <= buf.len() {
        &mut buf[..voters.len()]
    } else {
        heap = vec![LogIndex::ZERO; voters.len()];
        &mut heap[..]
    };
    for (slot, id) in idx.iter_mut().zip(voters.iter()) {
        *slot = matched(*id).unwrap_or(LogIndex::ZERO);
    }
    idx.sort_unstable();
    // Sorted ascending, the entry at position n - majority is held by a majority.
    idx[idx.len() - majority(idx.len())]
}

#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum VoteResult {
    Won,
    Lost,
    Pending,
}

/// Tallies votes from `voters` only; answers from anyone else are ignored.
pub fn vote_result(voters: &BTreeSet<NodeId>, votes: &BTreeMap<NodeId, bool>) -> VoteResult {
    let (mut yes, mut no) = (0, 0);
    for id in voters {
        match votes.get(id) {
            Some(true) => yes += 1,
            Some(false) => no += 1,
            None => {}
        }
    }
    let q = majority(voters.len());
    if yes >= q {
        VoteResult::Won
    } else if no > voters.len() - q {
        VoteResult::Lost
    } else {
        VoteResult::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The obviously-correct version: the largest index i such that more than
    /// half of the voters have matched >= i.
    fn naive_committed(matches: &[u64]) -> u64 {
        let mut best = 0;
        for &candidate in matches {
            let holders = matches.iter().filter(|&&m| m >= candidate).count();
            if holders * 2 > matches.len() {
                best = best.max(candidate);
            }
        }
        best
    }

    fn naive_vote(n: usize, yes: usize, no: usize) -> VoteResult {
        if yes * 2 > n {
            VoteResult::Won
        } else if (n - no) * 2 <= n {
            VoteResult::Lost
        } else {
            VoteResult::Pending
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig {
            failure_persistence: Some(Box::new(
                proptest::test_runner::FileFailurePersistence::Direct(
                    concat!(env!("CARGO_MANIFEST_DIR"), "/../proptest-regressions/quorum.txt")))),
            ..ProptestConfig::default()
        })]

        #[test]
        fn committed_index_matches_naive(matches in proptest::collection::vec(0u64..20, 1..9)) {
            let voters: BTreeSet<NodeId> = (1..=matches.len() as u64).map(NodeId).collect();
            let got = committed_index(&voters, |id| Some(LogIndex(matches[(id.0 - 1) as usize])));
            prop_assert_eq!(got.0, naive_committed(&matches));
        }

        #[test]
        fn vote_result_matches_naive(n in 1usize..9, answers in proptest::collection::vec(0u8..3, 9)) {
            let voters: BTreeSet<NodeId> = (1..=n as u64).map(NodeId).collect();
            let mut votes = BTreeMap::new();
            let (mut yes, mut no) = (0, 0);
            for (k, a) in answers.iter().take(n).enumerate() {
                match a {
                    0 => { votes.insert(NodeId(k as u64 + 1), true); yes += 1; }
                    1 => { votes.insert(NodeId(k as u64 + 1), false); no += 1; }
                    _ => {}
                }
            }
            // A non-voter's answer never counts.
            votes.insert(NodeId(100), true);
            prop_assert_eq!(vote_result(&voters, &votes), naive_vote(n, yes, no));
        }
    }

    #[test]
    fn single_voter_commits_its_own_index() {
        let voters: BTreeSet<NodeId> = [NodeId(1)].into();
        assert_eq!(committed_index(&voters, |_| Some(LogIndex(7))), LogIndex(7));
    }
}
