//! The Raft state machine: roles, elections, replication, commitment,
//! ReadIndex, leadership transfer and membership.
//!
//! Everything here is deterministic: no clock (time is [`Raft::tick`]), no IO
//! (messages and entries are collected for [`crate::Ready`]), no global
//! randomness (timeouts come from a seeded [`Rng`]).

use std::collections::{BTreeMap, VecDeque};

use bytes::Bytes;

use crate::config::Config;
use crate::error::{ConfChangeError, ConfigError, Error};
use crate::message::{
    AppendResponse, ConfChange, ConfChangeKind, ConfState, ConfigEntry, Entry, EntryPayload, HardState,
    Index, Message, MessageBody, NodeId, SnapshotMeta, Term,
};
use crate::progress::{Progress, ProgressState};
use crate::quorum::{self, VoteResult};
use crate::raft_log::{AppendOutcome, RaftLog};
use crate::rng::Rng;
use crate::storage::{Storage, StorageError};

/// A member's role.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    /// Follows a leader (or waits for one).
    Follower,
    /// Probing, with PreVote, whether it could win an election.
    PreCandidate,
    /// Campaigning in its current term.
    Candidate,
    /// Leads its current term.
    Leader,
}

/// A linearizable read that may now be served: once the application has
/// applied up to `index`, reading its state machine is linearizable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReadState {
    /// The commit index when the read arrived.
    pub index: Index,
    /// The identifier the application passed to `read_index`.
    pub ctx: u64,
}

/// The leader's ReadIndex bookkeeping (thesis §6.4). Reads are batched: every
/// read waits for the next heartbeat round, one round is in flight at a time,
/// and a round confirms every read that arrived before it started.
#[derive(Debug, Default)]
struct ReadOnly {
    /// The latest round started in this term.
    round: u64,
    /// The latest round a majority of voters has acknowledged.
    /// Invariant: `confirmed <= round`.
    confirmed: u64,
    /// Reads waiting for a round: (the round that confirms them, the read).
    /// Invariant: rounds are non-decreasing, and each is `> confirmed`.
    pending: VecDeque<(u64, ReadState)>,
    /// Reads that arrived before this leader committed an entry of its term;
    /// they get their index once it has.
    before_commit: Vec<u64>,
}

/// Per-member Raft state.
pub struct Raft<S: Storage> {
    /// This member's id.
    pub id: NodeId,
    /// The current term. Invariant: never decreases.
    pub term: Term,
    /// The vote cast in `term`.
    pub vote: Option<NodeId>,
    /// The current role.
    pub role: Role,
    /// The leader of `term`, if known.
    pub leader: Option<NodeId>,
    /// The log.
    pub log: RaftLog<S>,
    /// The membership in effect: that of the latest configuration entry in
    /// the log, committed or not (or of the snapshot when there is none).
    pub conf: ConfState,
    /// Configuration entries in the log after the snapshot, oldest first, so
    /// that truncating one reverts to the one before.
    /// Invariant: sorted by index, and every entry is in the log (same index and term).
    conf_history: Vec<(Index, Term, ConfState)>,
    /// The membership of the log's base (snapshot or bootstrap).
    base_conf: ConfState,
    /// On a leader: what it knows of every other member's log.
    pub progress: BTreeMap<NodeId, Progress>,
    /// Votes received in the current campaign.
    votes: BTreeMap<NodeId, bool>,
    /// Messages a leader may send before the `Ready` is persisted.
    pub msgs: Vec<Message>,
    /// Messages to send only after the `Ready` is persisted.
    pub msgs_after_persist: Vec<Message>,
    /// Reads that may be served.
    pub read_states: Vec<ReadState>,
    read_only: ReadOnly,
    /// Ticks since the last election timeout reset.
    election_elapsed: u32,
    /// Ticks since this member started (a logical clock for liveness).
    ticks: u64,
    /// Ticks since the last heartbeat (leader only).
    heartbeat_elapsed: u32,
    /// The current randomized timeout, in `[election_tick, 2 * election_tick)`.
    randomized_election_timeout: u32,
    /// The member leadership is being handed to, if any.
    pub lead_transferee: Option<NodeId>,
    /// The index of the latest configuration entry a leader appended. A new
    /// change is refused until it is committed.
    pending_conf_index: Index,
    /// The leader has entries or a commit index its followers have not been
    /// sent yet; sent (batched) when the `Ready` is built.
    pending_broadcast: bool,
    cfg: Config,
    rng: Rng,
}

impl<S: Storage> Raft<S> {
    /// Restores a member from its durable state in `storage`.
    pub fn new(cfg: Config, storage: S) -> Result<Raft<S>, Error> {
        cfg.validate()?;
        let init = storage.initial_state()?;
        // Invariant: a member never claims an applied index its state machine
        // does not hold. The state machine must resume within the log: not
        // behind its base (the entries it lacks are gone) and not past its end.
        let (first, last) = (storage.first_index()?, storage.last_index()?);
        if cfg.applied < first - 1 || cfg.applied > last {
            return Err(Error::Config(ConfigError::AppliedOutsideLog {
                applied: cfg.applied,
                first_applicable: first - 1,
                last,
            }));
        }
        let log = RaftLog::new(storage, cfg.applied)?;
        let mut r = Raft {
            id: cfg.id,
            term: init.hard_state.term,
            vote: init.hard_state.vote,
            role: Role::Follower,
            leader: None,
            log,
            conf: init.conf.clone(),
            conf_history: Vec::new(),
            base_conf: init.conf,
            progress: BTreeMap::new(),
            votes: BTreeMap::new(),
            msgs: Vec::new(),
            msgs_after_persist: Vec::new(),
            read_states: Vec::new(),
            read_only: ReadOnly::default(),
            election_elapsed: 0,
            ticks: 0,
            heartbeat_elapsed: 0,
            randomized_election_timeout: cfg.election_tick,
            lead_transferee: None,
            pending_conf_index: 0,
            pending_broadcast: false,
            rng: Rng::new(cfg.seed),
            cfg,
        };
        r.load_conf_history()?;
        r.reset_randomized_timeout();
        Ok(r)
    }

    /// Finds the configuration entries in the log after its base.
    fn load_conf_history(&mut self) -> Result<(), StorageError> {
        let mut lo = self.log.first_index()?;
        let hi = self.log.last_index()? + 1;
        while lo < hi {
            let batch = self.log.entries(lo, hi, 4 << 20)?;
            let Some(last) = batch.last() else { break };
            lo = last.index + 1;
            for e in batch {
                if let EntryPayload::Config(c) = e.payload {
                    self.conf_history.push((e.index, e.term, c.conf));
                }
            }
        }
        if let Some((_, _, c)) = self.conf_history.last() {
            self.conf = c.clone();
        }
        Ok(())
    }

    /// The hard state as it stands.
    pub fn hard_state(&self) -> HardState {
        HardState { term: self.term, vote: self.vote, commit: self.log.committed }
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// Whether this member may campaign: it is a voter, or it was one until
    /// a configuration entry that is not committed yet. In that case the
    /// previous voters may still need it: it may hold the only log up to
    /// date enough to win, and as leader it commits its own removal, then
    /// steps down.
    pub fn promotable(&self) -> bool {
        if self.conf.voters.contains(&self.id) {
            return true;
        }
        match self.conf_history.last() {
            Some((index, _, _)) if *index > self.log.committed => {
                self.conf_at(index - 1).voters.contains(&self.id)
            }
            _ => false,
        }
    }

    fn reset_randomized_timeout(&mut self) {
        let e = u64::from(self.cfg.election_tick);
        self.randomized_election_timeout = self.rng.range(e, 2 * e) as u32;
    }

    fn reset(&mut self, term: Term) {
        if self.term != term {
            self.term = term;
            self.vote = None;
        }
        self.leader = None;
        self.election_elapsed = 0;
        self.heartbeat_elapsed = 0;
        self.reset_randomized_timeout();
        self.votes.clear();
        self.lead_transferee = None;
        self.read_only = ReadOnly::default();
        self.pending_broadcast = false;
        self.progress.clear();
    }

    /// Becomes a follower of `leader` in `term`.
    pub fn become_follower(&mut self, term: Term, leader: Option<NodeId>) {
        self.reset(term);
        self.role = Role::Follower;
        self.leader = leader;
    }

    fn become_pre_candidate(&mut self) {
        // A pre-candidate changes neither term nor vote.
        self.votes.clear();
        self.progress.clear();
        self.read_only = ReadOnly::default();
        self.role = Role::PreCandidate;
        self.leader = None;
    }

    fn become_candidate(&mut self) {
        self.reset(self.term + 1);
        self.vote = Some(self.id);
        self.role = Role::Candidate;
    }

    fn become_leader(&mut self) -> Result<(), Error> {
        self.reset(self.term);
        self.role = Role::Leader;
        self.leader = Some(self.id);
        let last = self.log.last_index()?;
        for id in self.conf.members() {
            if id != self.id {
                let mut p = Progress::new(last + 1, self.cfg.max_inflight_msgs);
                p.recent_active = true;
                self.progress.insert(id, p);
            }
        }
        // No configuration change until everything this leader inherited is
        // committed, and its own no-op with it.
        self.pending_conf_index = last;
        self.append_entries(vec![EntryPayload::Noop])?;
        Ok(())
    }

    // ----- time -----

    /// Advances logical time by one tick.
    pub fn tick(&mut self) -> Result<(), Error> {
        self.ticks += 1;
        match self.role {
            Role::Leader => self.tick_heartbeat(),
            _ => self.tick_election(),
        }
    }

    fn tick_election(&mut self) -> Result<(), Error> {
        self.election_elapsed += 1;
        if self.promotable() && self.election_elapsed >= self.randomized_election_timeout {
            self.election_elapsed = 0;
            self.hup(false)?;
        }
        Ok(())
    }

    fn tick_heartbeat(&mut self) -> Result<(), Error> {
        self.heartbeat_elapsed += 1;
        self.election_elapsed += 1;
        if self.election_elapsed >= self.cfg.election_tick {
            self.election_elapsed = 0;
            if self.cfg.check_quorum && !self.quorum_active() {
                self.become_follower(self.term, None);
                return Ok(());
            }
            // A transfer that did not finish within an election timeout is abandoned.
            self.lead_transferee = None;
        }
        if self.heartbeat_elapsed >= self.cfg.heartbeat_tick {
            self.heartbeat_elapsed = 0;
            if self.read_only.pending.back().is_some_and(|(r, _)| *r > self.read_only.round) {
                self.read_only.round += 1;
            }
            self.broadcast_heartbeat();
        }
        Ok(())
    }

    /// Whether a majority of voters was heard from since the last check;
    /// clears the marks for the next round.
    fn quorum_active(&mut self) -> bool {
        let voters = &self.conf.voters;
        let mut active = 0;
        for v in voters {
            if *v == self.id {
                active += 1;
            } else if let Some(p) = self.progress.get_mut(v) {
                if p.recent_active {
                    active += 1;
                }
            }
        }
        for p in self.progress.values_mut() {
            p.recent_active = false;
        }
        active >= quorum::majority(voters.len())
    }

    // ----- elections -----

    /// Starts an election (with a PreVote round first if configured) unless
    /// already leader or not a voter.
    pub fn hup(&mut self, transfer: bool) -> Result<(), Error> {
        if self.role == Role::Leader || !self.promotable() {
            return Ok(());
        }
        if self.cfg.pre_vote && !transfer {
            self.campaign(true, false)
        } else {
            self.campaign(false, transfer)
        }
    }

    fn campaign(&mut self, pre_vote: bool, transfer: bool) -> Result<(), Error> {
        let term = if pre_vote {
            self.become_pre_candidate();
            self.term + 1
        } else {
            self.become_candidate();
            self.term
        };
        // Our own vote. A candidate's vote for itself is in the hard state of
        // this Ready, persisted before any Vote message is sent.
        self.votes.insert(self.id, true);
        if self.tally()? {
            return Ok(());
        }
        let last_index = self.log.last_index()?;
        let last_term = self.log.last_term()?;
        let voters: Vec<NodeId> = self.conf.voters.iter().copied().filter(|&v| v != self.id).collect();
        for to in voters {
            self.send(to, term, MessageBody::Vote { pre_vote, last_index, last_term, transfer });
        }
        Ok(())
    }

    /// Counts votes; acts on a decided election. Returns whether it was decided.
    fn tally(&mut self) -> Result<bool, Error> {
        match quorum::vote_result(&self.conf.voters, &self.votes) {
            VoteResult::Won => {
                if self.role == Role::PreCandidate {
                    self.campaign(false, false)?;
                } else {
                    self.become_leader()?;
                }
                Ok(true)
            }
            VoteResult::Lost => {
                self.become_follower(self.term, None);
                Ok(true)
            }
            VoteResult::Pending => Ok(false),
        }
    }

    // ----- messages -----

    fn send(&mut self, to: NodeId, term: Term, body: MessageBody) {
        let m = Message { from: self.id, to, term, body };
        match m.body {
            // A leader's messages depend on nothing in the unpersisted Ready:
            // its term was made durable when it campaigned, and it counts its
            // own log toward commitment only once persisted (thesis §10.2.1).
            MessageBody::Append { .. }
            | MessageBody::Heartbeat { .. }
            | MessageBody::Snapshot { .. }
            | MessageBody::TimeoutNow => self.msgs.push(m),
            _ => self.msgs_after_persist.push(m),
        }
    }

    /// Handles a message from another member.
    pub fn step(&mut self, m: Message) -> Result<(), Error> {
        if m.to != self.id || m.from == self.id || m.from == 0 {
            return Ok(());
        }
        if m.term > self.term {
            match &m.body {
                MessageBody::Vote { pre_vote, transfer, .. } => {
                    // A member that heard from a live leader within the
                    // election timeout ignores candidates: they are
                    // disruptive, not needed (thesis §4.2.3, §9.6).
                    // With PreVote alone, the same rule applies to pre-votes:
                    // a voter grants one only if it has not heard from a
                    // leader for an election timeout (thesis §9.6).
                    let in_lease = (self.cfg.check_quorum || (*pre_vote && self.cfg.pre_vote))
                        && self.leader.is_some()
                        && self.election_elapsed < self.cfg.election_tick;
                    if in_lease && !transfer {
                        return Ok(());
                    }
                    if !pre_vote {
                        self.become_follower(m.term, None);
                    }
                }
                // A granted pre-vote carries the term the candidate asked
                // for; the real election will move to it.
                MessageBody::VoteResponse { pre_vote: true, granted: true } => {}
                MessageBody::Append { .. } | MessageBody::Heartbeat { .. } | MessageBody::Snapshot { .. } => {
                    self.become_follower(m.term, Some(m.from));
                }
                _ => self.become_follower(m.term, None),
            }
        } else if m.term < self.term {
            match m.body {
                // A stale leader learns of the new term from the answer, so
                // that it steps down (needed with CheckQuorum and PreVote,
                // where the others may never campaign against it).
                MessageBody::Append { .. } | MessageBody::Heartbeat { .. } => {
                    let (hint_index, hint_term) = (self.log.last_index()?, 0);
                    self.send(
                        m.from,
                        self.term,
                        MessageBody::AppendResponse(AppendResponse::Rejected {
                            rejected: hint_index,
                            hint_index,
                            hint_term,
                        }),
                    );
                }
                MessageBody::Vote { pre_vote: true, .. } => {
                    self.send(
                        m.from,
                        self.term,
                        MessageBody::VoteResponse { pre_vote: true, granted: false },
                    );
                }
                _ => {}
            }
            return Ok(());
        }

        if let MessageBody::Vote { pre_vote, last_index, last_term, .. } = m.body {
            return self.handle_vote(m.from, m.term, pre_vote, last_index, last_term);
        }
        match self.role {
            Role::Leader => self.step_leader(m),
            Role::Candidate | Role::PreCandidate => self.step_candidate(m),
            Role::Follower => self.step_follower(m),
        }
    }

    fn handle_vote(
        &mut self,
        from: NodeId,
        term: Term,
        pre_vote: bool,
        last_index: Index,
        last_term: Term,
    ) -> Result<(), Error> {
        // A vote can be granted if we already voted for this candidate, or
        // have not voted and know no leader in this term, or (PreVote) the
        // candidate asks about a later term.
        let can_vote = self.vote == Some(from)
            || (self.vote.is_none() && self.leader.is_none())
            || (pre_vote && term > self.term);
        let granted = can_vote && self.log.is_up_to_date(last_index, last_term)?;
        if granted && !pre_vote {
            self.election_elapsed = 0;
            self.vote = Some(from);
        }
        // A granted pre-vote answers in the term asked about; a refusal in
        // ours, so that a candidate behind us catches up.
        let reply_term = if granted { term } else { self.term };
        self.send(from, reply_term, MessageBody::VoteResponse { pre_vote, granted });
        Ok(())
    }

    fn step_candidate(&mut self, m: Message) -> Result<(), Error> {
        match m.body {
            MessageBody::VoteResponse { pre_vote, granted } => {
                if pre_vote == (self.role == Role::PreCandidate) {
                    self.votes.entry(m.from).or_insert(granted);
                    self.tally()?;
                }
                Ok(())
            }
            MessageBody::Append { .. } | MessageBody::Heartbeat { .. } | MessageBody::Snapshot { .. } => {
                // A leader of our term exists.
                self.become_follower(m.term, Some(m.from));
                self.step_follower(m)
            }
            _ => Ok(()),
        }
    }

    fn step_follower(&mut self, m: Message) -> Result<(), Error> {
        match m.body {
            MessageBody::Append { prev_index, prev_term, entries, commit } => {
                self.election_elapsed = 0;
                self.leader = Some(m.from);
                self.handle_append(m.from, prev_index, prev_term, &entries, commit)
            }
            MessageBody::Heartbeat { commit, read_round } => {
                self.election_elapsed = 0;
                self.leader = Some(m.from);
                // The leader sends min(its commit, our match), so this entry
                // is ours and committed.
                self.log.commit_to(commit);
                self.send(m.from, self.term, MessageBody::HeartbeatResponse { read_round });
                Ok(())
            }
            MessageBody::Snapshot { meta } => {
                self.election_elapsed = 0;
                self.leader = Some(m.from);
                self.handle_snapshot(m.from, meta)
            }
            MessageBody::TimeoutNow => {
                // Leadership transfer: campaign at once, without PreVote.
                self.hup(true)
            }
            _ => Ok(()),
        }
    }

    fn handle_append(
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

    fn handle_snapshot(&mut self, from: NodeId, meta: SnapshotMeta) -> Result<(), Error> {
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

    fn step_leader(&mut self, m: Message) -> Result<(), Error> {
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

    // ----- replication -----

    /// Sends `to` the next append (or a snapshot if the entries it needs are
    /// compacted). Returns whether something carrying entries was sent.
    /// With `allow_empty`, sends an empty append (a probe, or news of the
    /// commit index) when there are no entries to send.
    fn send_append(&mut self, to: NodeId, allow_empty: bool) -> Result<bool, Error> {
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
    fn send_empty_probe(&mut self, to: NodeId) -> Result<(), Error> {
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

    fn send_snapshot(&mut self, to: NodeId) -> Result<bool, Error> {
        let meta = self.log.storage.snapshot_meta()?;
        if let Some(pr) = self.progress.get_mut(&to) {
            pr.become_snapshot(meta.index);
        }
        self.send(to, self.term, MessageBody::Snapshot { meta });
        Ok(false)
    }

    fn broadcast_heartbeat(&mut self) {
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
    fn append_entries(&mut self, payloads: Vec<EntryPayload>) -> Result<Index, Error> {
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
    fn maybe_commit(&mut self) -> Result<bool, Error> {
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

    fn on_commit_advanced(&mut self, _old: Index) -> Result<(), Error> {
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

    // ----- client requests -----

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

    fn check_can_propose(&self) -> Result<(), Error> {
        if self.role != Role::Leader {
            return Err(Error::NotLeader { leader: self.leader });
        }
        if self.lead_transferee.is_some() {
            return Err(Error::TransferInProgress);
        }
        Ok(())
    }

    /// Proposes a membership change. Returns the index of its entry.
    pub fn propose_conf_change(&mut self, cc: ConfChange) -> Result<Index, Error> {
        self.check_can_propose()?;
        if self.pending_conf_index > self.log.committed {
            return Err(ConfChangeError::Pending(self.pending_conf_index).into());
        }
        // The single-server change fix: commit an entry of this term first.
        if self.log.term_or_zero(self.log.committed)? != self.term {
            return Err(ConfChangeError::LeaderNotReady.into());
        }
        let conf = self.changed_conf(&cc)?;
        self.check_live_quorum(&conf)?;
        let index = self.append_entries(vec![EntryPayload::Config(ConfigEntry { change: cc, conf })])?;
        Ok(index)
    }

    /// The membership after `cc`, or why it is refused.
    pub fn changed_conf(&self, cc: &ConfChange) -> Result<ConfState, ConfChangeError> {
        if cc.node == 0 {
            return Err(ConfChangeError::ZeroId);
        }
        let mut conf = self.conf.clone();
        let changed = match cc.kind {
            ConfChangeKind::AddVoter => conf.learners.remove(&cc.node) | conf.voters.insert(cc.node),
            ConfChangeKind::AddLearner => conf.voters.remove(&cc.node) | conf.learners.insert(cc.node),
            ConfChangeKind::Remove => conf.voters.remove(&cc.node) | conf.learners.remove(&cc.node),
        };
        // The same role again only makes sense to update the context (graft-kv:
        // a member's new address); the membership itself stays as it is.
        if !changed && (cc.context.is_empty() || cc.kind == ConfChangeKind::Remove) {
            return Err(ConfChangeError::NoOp(cc.node));
        }
        if conf.voters.is_empty() {
            return Err(ConfChangeError::NoVoters);
        }
        Ok(conf)
    }

    /// Refuses a membership whose voters heard from within the last
    /// election timeout would not form a majority.
    fn check_live_quorum(&self, conf: &ConfState) -> Result<(), ConfChangeError> {
        let window = u64::from(self.cfg.election_tick);
        let heard = |p: &Progress| p.last_heard.is_some_and(|t| self.ticks.saturating_sub(t) <= window);
        let live =
            conf.voters.iter().filter(|&&v| v == self.id || self.progress.get(&v).is_some_and(heard)).count();
        let needed = quorum::majority(conf.voters.len());
        if live < needed {
            return Err(ConfChangeError::NoLiveQuorum { live, needed });
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
    fn advance_reads(&mut self) {
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

    // ----- membership -----

    /// Brings the membership in line with the log after `entries` were
    /// appended (possibly truncating others): configuration entries no
    /// longer in the log stop counting, new ones take effect now.
    fn sync_conf_history(&mut self, entries: &[Entry]) -> Result<(), StorageError> {
        let before = self.conf_history.len();
        let mut kept = Vec::with_capacity(before);
        for (i, t, c) in std::mem::take(&mut self.conf_history) {
            if self.log.match_term(i, t)? {
                kept.push((i, t, c));
            }
        }
        let mut changed = kept.len() != before;
        for e in entries {
            let EntryPayload::Config(c) = &e.payload else { continue };
            if kept.iter().any(|(i, _, _)| *i == e.index) || !self.log.match_term(e.index, e.term)? {
                continue;
            }
            kept.push((e.index, e.term, c.conf.clone()));
            changed = true;
            if self.role == Role::Leader {
                self.pending_conf_index = self.pending_conf_index.max(e.index);
            }
        }
        kept.sort_by_key(|(i, _, _)| *i);
        self.conf_history = kept;
        if changed {
            let conf = self.conf_history.last().map_or_else(|| self.base_conf.clone(), |(_, _, c)| c.clone());
            self.set_conf(conf);
        }
        Ok(())
    }

    fn set_conf(&mut self, conf: ConfState) {
        if self.role == Role::Leader {
            let last = self.log.last_index().unwrap_or(0);
            for id in conf.members() {
                if id != self.id && !self.progress.contains_key(&id) {
                    let mut p = Progress::new(last + 1, self.cfg.max_inflight_msgs);
                    p.recent_active = true;
                    self.progress.insert(id, p);
                }
            }
            self.progress.retain(|id, _| conf.contains(*id));
            if self.lead_transferee.is_some_and(|t| !conf.voters.contains(&t)) {
                self.lead_transferee = None;
            }
        }
        self.conf = conf;
    }

    /// The membership in effect at `index` (which must be at or after the
    /// log's base): for the application's snapshots.
    pub fn conf_at(&self, index: Index) -> ConfState {
        self.conf_history
            .iter()
            .rev()
            .find(|(i, _, _)| *i <= index)
            .map_or_else(|| self.base_conf.clone(), |(_, _, c)| c.clone())
    }

    /// Forgets configuration history the log compacted away, keeping the
    /// membership in effect at `index` as the base.
    pub fn on_compacted(&mut self, index: Index) {
        self.base_conf = self.conf_at(index);
        self.conf_history.retain(|(i, _, _)| *i > index);
    }

    /// Test and simulation access to the election timer.
    pub fn randomized_election_timeout(&self) -> u32 {
        self.randomized_election_timeout
    }
}
