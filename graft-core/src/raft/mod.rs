//! The Raft state machine: roles, elections, replication, commitment,
//! ReadIndex, leadership transfer and membership.
//!
//! Everything here is deterministic: no clock (time is [`Raft::tick`]), no IO
//! (messages and entries are collected for [`crate::Ready`]), no global
//! randomness (timeouts come from a seeded [`Rng`]).
//!
//! This file holds the state, roles, ticks, elections and message dispatch;
//! `replication` the appends, heartbeats and commit rule; `requests` what
//! the application asks of a leader (proposals, reads, transfers, reports);
//! `membership` configuration changes and history.

mod membership;
mod replication;
mod requests;

use std::collections::{BTreeMap, VecDeque};

use crate::config::Config;
use crate::error::{ConfigError, Error};
use crate::message::{
    AppendResponse, ConfState, EntryPayload, HardState, Index, Message, MessageBody, NodeId, Term,
};
use crate::progress::Progress;
use crate::quorum::{self, VoteResult};
use crate::raft_log::RaftLog;
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
            // it counts its own log toward commitment only once persisted
            // (thesis §10.2.1), and its term is durable: made so when it
            // campaigned, or, for a lone voter that won in the same step,
            // `RawNode::ready` holds every message of the Ready that carries
            // the new term until it is persisted.
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

    // ----- replication -----

    // ----- client requests -----

    // ----- membership -----

    /// Test and simulation access to the election timer.
    pub fn randomized_election_timeout(&self) -> u32 {
        self.randomized_election_timeout
    }
}
