//! What the leader knows of each follower's log, and the flow control of the
//! appends it sends (the shape of etcd's `tracker/progress.go`).

use std::collections::VecDeque;

use crate::message::Index;

/// How the leader is currently replicating to one follower.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProgressState {
    /// The leader does not know where the follower's log matches its own: it
    /// sends one append at a time and waits for the answer.
    Probe,
    /// The logs match up to `matched`: the leader streams appends optimistically,
    /// up to the in-flight limit.
    Replicate,
    /// The follower needs a snapshot; nothing else is sent until it is
    /// installed or reported failed.
    Snapshot {
        /// The index of the snapshot being sent.
        index: Index,
    },
}

/// The leader's view of one member.
#[derive(Clone, Debug)]
pub struct Progress {
    /// The highest index known to be replicated on the member.
    /// Invariant: `matched < next`.
    pub matched: Index,
    /// The index of the next entry to send.
    pub next: Index,
    /// The replication state.
    pub state: ProgressState,
    /// In `Probe`: an append was sent and no answer has come yet.
    pub probe_sent: bool,
    /// In `Replicate`: the last index of each append in flight, oldest first.
    /// Invariant: at most `max_inflight` elements, strictly increasing.
    inflight: VecDeque<Index>,
    max_inflight: usize,
    /// The member was heard from since the last CheckQuorum round.
    pub recent_active: bool,
    /// The latest ReadIndex round the member has acknowledged in this term.
    pub read_round: u64,
    /// The leader's tick count when it last heard from the member (`None`:
    /// never, in this term).
    pub last_heard: Option<u64>,
}

impl Progress {
    /// A new progress for a member whose log is assumed to end at `next - 1`.
    pub fn new(next: Index, max_inflight: usize) -> Progress {
        Progress {
            matched: 0,
            next,
            state: ProgressState::Probe,
            probe_sent: false,
            inflight: VecDeque::new(),
            max_inflight,
            recent_active: false,
            read_round: 0,
            last_heard: None,
        }
    }

    fn reset(&mut self, state: ProgressState) {
        self.state = state;
        self.probe_sent = false;
        self.inflight.clear();
    }

    /// Back to probing from just after the known match.
    pub fn become_probe(&mut self) {
        if let ProgressState::Snapshot { index } = self.state {
            self.reset(ProgressState::Probe);
            self.next = (self.matched + 1).max(index + 1);
        } else {
            self.reset(ProgressState::Probe);
            self.next = self.matched + 1;
        }
    }

    /// Streams from just after the known match.
    pub fn become_replicate(&mut self) {
        self.reset(ProgressState::Replicate);
        self.next = self.matched + 1;
    }

    /// Waits for the snapshot at `index` to be installed.
    pub fn become_snapshot(&mut self, index: Index) {
        self.reset(ProgressState::Snapshot { index });
    }

    /// Records that the member's log matches up to `index`. Returns whether
    /// that is news.
    pub fn maybe_update(&mut self, index: Index) -> bool {
        let updated = index > self.matched;
        if updated {
            self.matched = index;
            self.probe_sent = false;
        }
        self.next = self.next.max(index + 1);
        updated
    }

    /// Records that an append ending at `last` was sent.
    pub fn sent_append(&mut self, last: Index, carried_entries: bool) {
        match self.state {
            ProgressState::Replicate => {
                if carried_entries {
                    self.next = last + 1;
                    self.inflight.push_back(last);
                }
            }
            ProgressState::Probe => self.probe_sent = true,
            ProgressState::Snapshot { .. } => {}
        }
    }

    /// Frees the in-flight slots of appends up to `index`.
    pub fn free_inflight_to(&mut self, index: Index) {
        while self.inflight.front().is_some_and(|&i| i <= index) {
            self.inflight.pop_front();
        }
    }

    /// Handles a rejection of the append whose `prev_index` was `rejected`,
    /// moving `next` back to `probe_from + 1`. Returns false if the rejection
    /// is stale (an answer to an older append) and was ignored.
    pub fn maybe_decrease_to(&mut self, rejected: Index, probe_from: Index) -> bool {
        if self.state == ProgressState::Replicate {
            // In replicate, only a rejection of the first unmatched entry is news.
            if rejected <= self.matched {
                return false;
            }
            self.next = (probe_from + 1).max(self.matched + 1);
            return true;
        }
        // In probe, only the answer to the last probe counts.
        if self.next.checked_sub(1) != Some(rejected) {
            return false;
        }
        self.next = (probe_from + 1).max(self.matched + 1).min(rejected.max(1));
        self.probe_sent = false;
        true
    }

    /// Whether the leader must hold back appends to this member.
    pub fn is_paused(&self) -> bool {
        match self.state {
            ProgressState::Probe => self.probe_sent,
            ProgressState::Replicate => self.inflight.len() >= self.max_inflight,
            ProgressState::Snapshot { .. } => true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replicate_pauses_at_the_inflight_limit_and_resumes_on_ack() {
        let mut p = Progress::new(1, 2);
        p.become_replicate();
        p.sent_append(3, true);
        assert!(!p.is_paused());
        p.sent_append(5, true);
        assert!(p.is_paused());
        assert_eq!(p.next, 6);
        p.maybe_update(3);
        p.free_inflight_to(3);
        assert!(!p.is_paused());
    }

    #[test]
    fn probe_sends_one_at_a_time() {
        let mut p = Progress::new(5, 8);
        p.sent_append(4, false);
        assert!(p.is_paused());
        // A stale rejection (not of the last probe) is ignored.
        assert!(!p.maybe_decrease_to(2, 1));
        assert!(p.maybe_decrease_to(4, 2));
        assert_eq!(p.next, 3);
        assert!(!p.is_paused());
    }

    #[test]
    fn an_acknowledgement_moves_match_and_next_only_forward() {
        let mut p = Progress::new(1, 8);
        assert!(p.maybe_update(5), "news");
        assert_eq!((p.matched, p.next), (5, 6), "next is just after the match");
        assert!(!p.maybe_update(5), "the same index again is no news");
        assert!(!p.maybe_update(3), "an older index is no news");
        assert_eq!((p.matched, p.next), (5, 6));
        p.next = 9;
        assert!(p.maybe_update(7));
        assert_eq!((p.matched, p.next), (7, 9), "next never moves back");
    }

    #[test]
    fn probing_restarts_just_after_the_match_or_the_snapshot() {
        let mut p = Progress::new(1, 8);
        p.maybe_update(4);
        p.become_replicate();
        p.sent_append(9, true);
        p.become_probe();
        assert_eq!(p.next, 5, "from just after the match");
        p.become_snapshot(10);
        p.become_probe();
        assert_eq!(p.next, 11, "from just after the snapshot, if later");
        p.maybe_update(12);
        p.become_snapshot(10);
        p.become_probe();
        assert_eq!(p.next, 13, "from just after the match, if later");
        p.become_replicate();
        assert_eq!(p.next, 13);
    }

    #[test]
    fn a_rejection_never_moves_next_below_the_match() {
        // A hint below the match cannot come from a follower that kept what
        // it acknowledged; next stays just after the match all the same.
        let mut p = Progress::new(1, 8);
        p.maybe_update(5);
        p.become_replicate();
        p.sent_append(9, true);
        assert!(p.maybe_decrease_to(7, 2));
        assert_eq!(p.next, 6);
        p.become_probe();
        p.next = 8;
        p.sent_append(7, false);
        assert!(p.maybe_decrease_to(7, 1));
        assert_eq!(p.next, 6);
    }

    #[test]
    fn stale_rejection_in_replicate_is_ignored() {
        let mut p = Progress::new(1, 8);
        p.maybe_update(5);
        p.become_replicate();
        assert!(!p.maybe_decrease_to(4, 0));
        assert!(p.maybe_decrease_to(7, 6));
        assert_eq!(p.next, 7);
    }
}
