//! Majority arithmetic.

use std::collections::{BTreeMap, BTreeSet};

use crate::message::{Index, NodeId};

/// The number of voters that forms a majority of `n`.
pub fn majority(n: usize) -> usize {
    n / 2 + 1
}

/// The highest index that a majority of `voters` has reached, by `matched`.
/// Voters missing from `matched` count as 0. An empty voter set commits nothing.
pub fn committed_index(voters: &BTreeSet<NodeId>, matched: impl Fn(NodeId) -> Index) -> Index {
    if voters.is_empty() {
        return 0;
    }
    let mut indexes: Vec<Index> = voters.iter().map(|&v| matched(v)).collect();
    indexes.sort_unstable_by(|a, b| b.cmp(a));
    indexes[majority(indexes.len()) - 1]
}

/// The outcome of counting votes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VoteResult {
    /// A majority granted.
    Won,
    /// A majority refused: the election cannot be won.
    Lost,
    /// Neither yet.
    Pending,
}

/// Counts `votes` (granted or refused, by voter) against `voters`. Votes from
/// non-voters are ignored.
pub fn vote_result(voters: &BTreeSet<NodeId>, votes: &BTreeMap<NodeId, bool>) -> VoteResult {
    let need = majority(voters.len());
    let (mut yes, mut no) = (0, 0);
    for v in voters {
        match votes.get(v) {
            Some(true) => yes += 1,
            Some(false) => no += 1,
            None => {}
        }
    }
    if voters.is_empty() {
        VoteResult::Pending
    } else if yes >= need {
        VoteResult::Won
    } else if no > voters.len() - need {
        VoteResult::Lost
    } else {
        VoteResult::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn committed_index_is_the_majority_median() {
        let voters: BTreeSet<NodeId> = [1, 2, 3, 4, 5].into();
        let m = BTreeMap::from([(1, 10), (2, 9), (3, 3), (4, 2), (5, 1)]);
        assert_eq!(committed_index(&voters, |v| m[&v]), 3);
        let three: BTreeSet<NodeId> = [1, 2, 3].into();
        assert_eq!(committed_index(&three, |v| m[&v]), 9);
        assert_eq!(committed_index(&BTreeSet::new(), |_| 7), 0);
    }

    #[test]
    fn votes_need_a_strict_majority() {
        let voters: BTreeSet<NodeId> = [1, 2, 3, 4].into();
        let mut votes = BTreeMap::from([(1, true), (2, true)]);
        assert_eq!(vote_result(&voters, &votes), VoteResult::Pending);
        votes.insert(9, true); // not a voter
        assert_eq!(vote_result(&voters, &votes), VoteResult::Pending);
        votes.insert(3, true);
        assert_eq!(vote_result(&voters, &votes), VoteResult::Won);
        let lost = BTreeMap::from([(1, false), (2, false)]);
        assert_eq!(vote_result(&voters, &lost), VoteResult::Lost);
        // Of five, two refusals still leave three possible grants.
        let five: BTreeSet<NodeId> = [1, 2, 3, 4, 5].into();
        let two_no = BTreeMap::from([(1, false), (2, false), (3, true)]);
        assert_eq!(vote_result(&five, &two_no), VoteResult::Pending);
        let three_no = BTreeMap::from([(1, false), (2, false), (4, false)]);
        assert_eq!(vote_result(&five, &three_no), VoteResult::Lost);
    }
}
