//! What the application asks of a leader: proposals, ReadIndex reads,
//! leadership transfer, and its reports on unreachable peers and snapshot
//! sends.

use bytes::Bytes;

use crate::error::Error;
use crate::message::{EntryPayload, Index, MessageBody, NodeId};
use crate::progress::ProgressState;
use crate::quorum;
use crate::storage::Storage;

use super::{Raft, ReadState, Role};

impl<S: Storage> Raft<S> {
    /// Appends `data` as a command. Returns the entry's index.
    pub fn propose(&mut self, data: Bytes) -> Result<Index, Error> {
        self.check_can_propose()?;
        self.append_entries(vec![EntryPayload::Command(data)])
    }

    /// Appends several commands at once. Returns the index of the first.
    pub fn propose_batch(&mut self, data: Vec<Bytes>) -> Result<Index, Error> {
        self.check_can_propose()?;
        let first = self.log.last_index()? + 1;
        self.append_entries(data.into_iter().map(EntryPayload::Command).collect())?;
        Ok(first)
    }

    pub(super) fn check_can_propose(&self) -> Result<(), Error> {
        if self.role != Role::Leader {
            return Err(Error::NotLeader { leader: self.leader });
        }
        if self.lead_transferee.is_some() {
            return Err(Error::TransferInProgress);
        }
        Ok(())
    }

    /// Starts a linearizable read (thesis §6.4). When leadership is
    /// confirmed, a [`ReadState`] with `ctx` appears in a later `Ready`.
    pub fn read_index(&mut self, ctx: u64) -> Result<(), Error> {
        if self.role != Role::Leader {
            return Err(Error::NotLeader { leader: self.leader });
        }
        // The commit index is only known to be up to date once this leader
        // has committed an entry of its own term (its no-op).
        if self.log.term_or_zero(self.log.committed)? != self.term {
            self.read_only.before_commit.push(ctx);
            return Ok(());
        }
        let read = ReadState { index: self.log.committed, ctx };
        if self.conf.voters.len() == 1 && self.conf.voters.contains(&self.id) {
            self.read_states.push(read);
            return Ok(());
        }
        let ro = &mut self.read_only;
        let need = ro.round + 1;
        ro.pending.push_back((need, read));
        // Start a round now unless one is in flight; otherwise this read
        // waits for the round after it (started when this one completes).
        if ro.confirmed == ro.round {
            ro.round += 1;
            self.broadcast_heartbeat();
        }
        Ok(())
    }

    /// Releases reads whose round a majority acknowledged.
    pub(super) fn advance_reads(&mut self) {
        let id = self.id;
        let round = self.read_only.round;
        let progress = &self.progress;
        let confirmed = quorum::committed_index(&self.conf.voters, |v| {
            if v == id {
                round
            } else {
                progress.get(&v).map_or(0, |p| p.read_round)
            }
        });
        let ro = &mut self.read_only;
        if confirmed <= ro.confirmed {
            return;
        }
        ro.confirmed = confirmed;
        while ro.pending.front().is_some_and(|(r, _)| *r <= confirmed) {
            if let Some((_, read)) = ro.pending.pop_front() {
                self.read_states.push(read);
            }
        }
        if ro.pending.back().is_some_and(|(r, _)| *r > ro.round) {
            ro.round += 1;
            self.broadcast_heartbeat();
        }
    }

    /// Hands leadership to `to` (thesis §3.10): once its log is up to date,
    /// it is told to campaign at once. Proposals are refused meanwhile.
    pub fn transfer_leader(&mut self, to: NodeId) -> Result<(), Error> {
        if self.role != Role::Leader {
            return Err(Error::NotLeader { leader: self.leader });
        }
        if to == self.id {
            return Ok(());
        }
        if !self.conf.voters.contains(&to) {
            return Err(Error::NotAVoter(to));
        }
        self.lead_transferee = Some(to);
        self.election_elapsed = 0;
        let last = self.log.last_index()?;
        if self.progress.get(&to).map(|p| p.matched) == Some(last) {
            self.send(to, self.term, MessageBody::TimeoutNow);
        } else {
            self.send_append(to, true)?;
        }
        Ok(())
    }

    /// The transport could not reach `to`: stop streaming to it and probe.
    pub fn report_unreachable(&mut self, to: NodeId) {
        if self.role != Role::Leader {
            return;
        }
        if let Some(pr) = self.progress.get_mut(&to) {
            if pr.state == ProgressState::Replicate {
                pr.become_probe();
            }
        }
    }

    /// The application finished (or failed) sending a snapshot to `to`.
    pub fn report_snapshot(&mut self, to: NodeId, ok: bool) {
        if self.role != Role::Leader {
            return;
        }
        if let Some(pr) = self.progress.get_mut(&to) {
            if let ProgressState::Snapshot { .. } = pr.state {
                if !ok {
                    pr.become_snapshot(0);
                }
                // Probe again; the follower's answer tells where it stands.
                pr.become_probe();
                pr.probe_sent = true;
            }
        }
    }
}
