//! Replication and commitment: a follower's handling of appends and
//! snapshots, the leader's flow-controlled appends, heartbeats and
//! broadcasts, and the commit rule (only entries of the leader's own term
//! commit by counting replicas; earlier ones commit with them).

use crate::error::Error;
use crate::message::{
    AppendResponse, Entry, EntryPayload, Index, Message, MessageBody, NodeId, SnapshotMeta, Term,
};
use crate::progress::ProgressState;
use crate::quorum;
use crate::raft_log::AppendOutcome;
use crate::storage::{Storage, StorageError};

use super::{Raft, Role};

impl<S: Storage> Raft<S> {
    pub(super) fn handle_append(
        &mut self,
        from: NodeId,
        prev_index: Index,
        prev_term: Term,
        entries: &[Entry],
        commit: Index,
    ) -> Result<(), Error> {
        let committed = self.log.committed;
        if prev_index < committed {
            // Everything up to our commit index matches any leader's log.
            let resp = AppendResponse::Accepted { index: committed };
            self.send(from, self.term, MessageBody::AppendResponse(resp));
            return Ok(());
        }
        let resp = match self.log.maybe_append(prev_index, prev_term, commit, entries)? {
            AppendOutcome::Matched(last) => {
                self.sync_conf_history(entries)?;
                AppendResponse::Accepted { index: last }
            }
            AppendOutcome::Mismatch => {
                let (hint_index, hint_term) = self.log.find_conflict_by_term(prev_index, prev_term)?;
                AppendResponse::Rejected { rejected: prev_index, hint_index, hint_term }
            }
            // A leader contradicting our committed log is not one we follow.
            AppendOutcome::ConflictsWithCommitted(_) => return Ok(()),
        };
        self.send(from, self.term, MessageBody::AppendResponse(resp));
        Ok(())
    }

    pub(super) fn handle_snapshot(&mut self, from: NodeId, meta: SnapshotMeta) -> Result<(), Error> {
        let index = meta.index;
        let resp = if index <= self.log.committed {
            AppendResponse::Accepted { index: self.log.committed }
        } else if self.log.match_term(index, meta.term)? {
            // We already have the snapshot's entries: just fast-forward.
            self.log.commit_to(index);
            AppendResponse::Accepted { index }
        } else {
            self.log.restore(meta.clone());
            self.base_conf = meta.conf.clone();
            self.conf_history.clear();
            self.conf = meta.conf;
            AppendResponse::Accepted { index }
        };
        self.send(from, self.term, MessageBody::AppendResponse(resp));
        Ok(())
    }

    pub(super) fn step_leader(&mut self, m: Message) -> Result<(), Error> {
        let from = m.from;
        let Some(pr) = self.progress.get_mut(&from) else { return Ok(()) };
        pr.recent_active = true;
        pr.last_heard = Some(self.ticks);
        match m.body {
            MessageBody::AppendResponse(AppendResponse::Accepted { index }) => {
                let updated = pr.maybe_update(index);
                let first = self.log.first_index()?;
                match pr.state {
                    ProgressState::Probe if updated || pr.matched == index => pr.become_replicate(),
                    ProgressState::Snapshot { index: snap }
                        if pr.matched >= snap || pr.matched + 1 >= first =>
                    {
                        pr.become_probe();
                        pr.become_replicate();
                    }
                    ProgressState::Replicate => pr.free_inflight_to(index),
                    _ => {}
                }
                if updated && self.maybe_commit()? {
                    self.pending_broadcast = true;
                }
                // Keep the pipe full.
                while self.send_append(from, false)? {}
                if self.lead_transferee == Some(from)
                    && self.progress.get(&from).map(|p| p.matched) == Some(self.log.last_index()?)
                {
                    self.send(from, self.term, MessageBody::TimeoutNow);
                }
            }
            MessageBody::AppendResponse(AppendResponse::Rejected { rejected, hint_index, hint_term }) => {
                // Skip the follower's whole conflicting term in one step: the
                // next probe starts at the last entry of ours whose term is
                // at most the follower's hint term.
                let (probe_from, _) = if hint_term > 0 {
                    self.log.find_conflict_by_term(hint_index, hint_term)?
                } else {
                    (hint_index, 0)
                };
                let Some(pr) = self.progress.get_mut(&from) else { return Ok(()) };
                if pr.maybe_decrease_to(rejected, probe_from) {
                    if pr.state == ProgressState::Replicate {
                        pr.become_probe();
                    }
                    self.send_append(from, true)?;
                }
            }
            MessageBody::HeartbeatResponse { read_round } => {
                pr.probe_sent = false;
                pr.read_round = pr.read_round.max(read_round);
                let window_full = pr.state == ProgressState::Replicate && pr.is_paused();
                if pr.matched < self.log.last_index()? {
                    if window_full {
                        // Appends may have been lost. Probe with an empty
                        // append at the end of what was sent: it is accepted
                        // if they merely lag (freeing the window), rejected
                        // if something was lost (back to probing). The window
                        // itself is never exceeded.
                        self.send_empty_probe(from)?;
                    } else {
                        self.send_append(from, true)?;
                    }
                }
                self.advance_reads();
            }
            _ => {}
        }
        Ok(())
    }

    /// Sends `to` the next append (or a snapshot if the entries it needs are
    /// compacted). Returns whether something carrying entries was sent.
    /// With `allow_empty`, sends an empty append (a probe, or news of the
    /// commit index) when there are no entries to send.
    pub(super) fn send_append(&mut self, to: NodeId, allow_empty: bool) -> Result<bool, Error> {
        let Some(pr) = self.progress.get(&to) else { return Ok(false) };
        if pr.is_paused() {
            return Ok(false);
        }
        let next = pr.next;
        let last = self.log.last_index()?;
        if next > last && !allow_empty {
            return Ok(false);
        }
        let prev_index = next - 1;
        let prev_term = self.log.term(prev_index);
        let entries = if next <= last {
            let hi = last.min(next - 1 + self.cfg.max_entries_per_msg as u64) + 1;
            self.log.entries(next, hi, self.cfg.max_bytes_per_msg)
        } else {
            Ok(Vec::new())
        };
        let (prev_term, entries) = match (prev_term, entries) {
            (Ok(t), Ok(e)) => (t, e),
            (Err(StorageError::Compacted(_)), _) | (_, Err(StorageError::Compacted(_))) => {
                return self.send_snapshot(to);
            }
            (Err(e), _) | (_, Err(e)) => return Err(e.into()),
        };
        let commit = self.log.committed;
        let last_sent = entries.last().map_or(prev_index, |e| e.index);
        let carried = !entries.is_empty();
        if let Some(pr) = self.progress.get_mut(&to) {
            pr.sent_append(last_sent, carried);
        }
        self.send(to, self.term, MessageBody::Append { prev_index, prev_term, entries, commit });
        Ok(carried)
    }

    /// Sends `to` an append with no entries just after the last entry sent,
    /// regardless of the flow-control window.
    pub(super) fn send_empty_probe(&mut self, to: NodeId) -> Result<(), Error> {
        let Some(pr) = self.progress.get(&to) else { return Ok(()) };
        let prev_index = pr.next - 1;
        match self.log.term(prev_index) {
            Ok(prev_term) => {
                let commit = self.log.committed;
                let body = MessageBody::Append { prev_index, prev_term, entries: Vec::new(), commit };
                self.send(to, self.term, body);
                Ok(())
            }
            Err(StorageError::Compacted(_)) => self.send_snapshot(to).map(|_| ()),
            Err(e) => Err(e.into()),
        }
    }

    pub(super) fn send_snapshot(&mut self, to: NodeId) -> Result<bool, Error> {
        let meta = self.log.storage.snapshot_meta()?;
        if let Some(pr) = self.progress.get_mut(&to) {
            pr.become_snapshot(meta.index);
        }
        self.send(to, self.term, MessageBody::Snapshot { meta });
        Ok(false)
    }

    pub(super) fn broadcast_heartbeat(&mut self) {
        let round = self.read_only.round;
        let commit = self.log.committed;
        let peers: Vec<(NodeId, Index)> = self.progress.iter().map(|(&id, p)| (id, p.matched)).collect();
        for (to, matched) in peers {
            self.send(
                to,
                self.term,
                MessageBody::Heartbeat { commit: commit.min(matched), read_round: round },
            );
        }
    }

    /// Sends what is pending to every follower: new entries, or news of the
    /// commit index. Called when the `Ready` is built, so that proposals that
    /// arrived together travel together.
    pub fn flush_broadcast(&mut self) -> Result<(), Error> {
        if !self.pending_broadcast || self.role != Role::Leader {
            return Ok(());
        }
        self.pending_broadcast = false;
        let peers: Vec<NodeId> = self.progress.keys().copied().collect();
        for to in peers {
            let mut first = true;
            while self.send_append(to, first)? {
                first = false;
            }
        }
        Ok(())
    }

    /// Whether `flush_broadcast` has something to send.
    pub fn has_pending_broadcast(&self) -> bool {
        self.pending_broadcast && self.role == Role::Leader
    }

    /// Appends entries of the current term as leader.
    pub(super) fn append_entries(&mut self, payloads: Vec<EntryPayload>) -> Result<Index, Error> {
        let mut index = self.log.last_index()?;
        let term = self.term;
        let entries: Vec<Entry> = payloads
            .into_iter()
            .map(|payload| {
                index += 1;
                Entry { term, index, payload }
            })
            .collect();
        self.log.append(&entries)?;
        self.sync_conf_history(&entries)?;
        self.pending_broadcast = true;
        // A lone voter commits as soon as its own log is durable.
        Ok(index)
    }

    /// The leader's own log became durable up to `index`.
    pub fn on_persisted(&mut self) -> Result<(), Error> {
        if self.role == Role::Leader && self.maybe_commit()? {
            self.pending_broadcast = true;
        }
        Ok(())
    }

    /// Recomputes the commit index from the voters' match indexes. Returns
    /// whether it advanced.
    pub(super) fn maybe_commit(&mut self) -> Result<bool, Error> {
        let id = self.id;
        let persisted = self.log.persisted;
        let progress = &self.progress;
        let index = quorum::committed_index(&self.conf.voters, |v| {
            if v == id {
                persisted
            } else {
                progress.get(&v).map_or(0, |p| p.matched)
            }
        });
        let old = self.log.committed;
        if !self.log.maybe_commit(index, self.term)? {
            return Ok(false);
        }
        self.on_commit_advanced(old)?;
        Ok(true)
    }

    pub(super) fn on_commit_advanced(&mut self, _old: Index) -> Result<(), Error> {
        // Reads that waited for this leader's first commit get their index.
        if !self.read_only.before_commit.is_empty() {
            let waiting = std::mem::take(&mut self.read_only.before_commit);
            for ctx in waiting {
                self.read_index(ctx)?;
            }
        }
        // A leader that is not a voter of the committed membership steps
        // down (thesis §4.2.2).
        if !self.promotable() && self.pending_conf_index <= self.log.committed {
            self.become_follower(self.term, None);
        }
        Ok(())
    }
}
