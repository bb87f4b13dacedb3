//! The application's handle on the core: drive it with [`RawNode::tick`],
//! [`RawNode::step`] and requests, and carry out what [`Ready`] says.

use bytes::Bytes;

use crate::config::Config;
use crate::error::Error;
use crate::message::{ConfChange, ConfState, Entry, HardState, Index, Message, NodeId, SnapshotMeta, Term};
use crate::progress::{Progress, ProgressState};
use crate::raft::{Raft, ReadState, Role};
use crate::storage::Storage;

/// Volatile state worth showing (logs, status pages); never persisted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SoftState {
    /// The leader this member knows of.
    pub leader: Option<NodeId>,
    /// This member's role.
    pub role: Role,
}

/// Everything the application must do, in this order:
///
/// 1. Send [`Ready::messages`]. They may go out at once, even before step 2
///    (a leader writes its own log in parallel with replicating it).
/// 2. Make durable, in one atomic write (graft-kv: one transaction of its
///    log database, one fsync): [`Ready::snapshot`] (install it), then [`Ready::entries`]
///    (appended after dropping any existing entries at or after the first
///    one's index), then [`Ready::hard_state`].
/// 3. Only after step 2 is durable, send [`Ready::persisted_messages`].
/// 4. Apply [`Ready::committed_entries`] in order, and serve each
///    [`ReadState`] in [`Ready::read_states`] once the applied index reaches
///    its `index`. Applying may run alongside step 2 (graft-kv does so for
///    large batches): committed entries are handed out only up to the
///    index already persisted.
/// 5. Call [`RawNode::advance`], then look for the next `Ready`.
///
/// A member that crashes anywhere in this sequence restarts from what step 2
/// made durable and from its state machine's own applied index, which must
/// lie within the log (see [`crate::Config::applied`]).
#[derive(Debug, Default)]
#[must_use = "a Ready must be carried out and then advanced"]
pub struct Ready {
    /// The leader or role changed (informational; nothing to persist).
    pub soft_state: Option<SoftState>,
    /// The term, vote or commit index changed: persist with the entries,
    /// before sending `persisted_messages`.
    pub hard_state: Option<HardState>,
    /// A snapshot from the leader to install, replacing the state machine and
    /// the whole log. The application received its data before stepping the
    /// `Snapshot` message; now it makes that data the live state, durably and
    /// atomically, with the log reset to start after `snapshot.index`.
    pub snapshot: Option<SnapshotMeta>,
    /// Entries to append to the durable log, first removing existing entries
    /// at or after `entries[0].index`.
    pub entries: Vec<Entry>,
    /// Messages from a leader that do not depend on this `Ready` being
    /// durable: send them at once. Invariant: empty when `hard_state`
    /// carries a new term or vote (a lone voter's first appends of its new
    /// term wait in `persisted_messages`: sent before the term is durable, a
    /// crash could let it lead that term again with a different log).
    ///
    /// A `Snapshot` message carries only metadata: the application sends its
    /// state machine as of `meta.index` or later along with it (graft-kv
    /// streams it in chunks) and reports the outcome with
    /// [`RawNode::report_snapshot`].
    pub messages: Vec<Message>,
    /// Messages that promise what this `Ready` persists (votes, append
    /// acknowledgements): send only after `snapshot`, `entries` and
    /// `hard_state` are durable.
    pub persisted_messages: Vec<Message>,
    /// Committed entries to apply to the state machine, in order. They are
    /// already durable in the log.
    pub committed_entries: Vec<Entry>,
    /// Linearizable reads that may be served once the applied index reaches
    /// their index.
    pub read_states: Vec<ReadState>,
}

/// What the application promised to do with the `Ready` handed out last.
#[derive(Debug, Default)]
struct InFlight {
    last_entry: Option<(Index, Term)>,
    snapshot: Option<Index>,
    applying: Index,
}

/// A snapshot of a member's state, for status pages and tests.
#[derive(Clone, Debug)]
pub struct Status {
    /// This member's id.
    pub id: NodeId,
    /// The current term, vote and commit index.
    pub hard_state: HardState,
    /// Role and known leader.
    pub soft_state: SoftState,
    /// The applied index (as of the last `advance`).
    pub applied: Index,
    /// The index of the last log entry.
    pub last_index: Index,
    /// The index of the first log entry (after the latest snapshot).
    pub first_index: Index,
    /// The membership in effect.
    pub conf: ConfState,
    /// On a leader: each other member's replication progress.
    pub progress: Vec<(NodeId, ProgressStatus)>,
}

/// The leader's view of one member's replication.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProgressStatus {
    /// The highest index known replicated there.
    pub matched: Index,
    /// The next index to send.
    pub next: Index,
    /// The replication state.
    pub state: ProgressState,
    /// Heard from since the last CheckQuorum round.
    pub recent_active: bool,
}

impl From<&Progress> for ProgressStatus {
    fn from(p: &Progress) -> ProgressStatus {
        ProgressStatus { matched: p.matched, next: p.next, state: p.state, recent_active: p.recent_active }
    }
}

/// A Raft member, driven by the application. See the crate docs for the loop.
pub struct RawNode<S: Storage> {
    raft: Raft<S>,
    prev_hard_state: HardState,
    prev_soft_state: SoftState,
    in_flight: Option<InFlight>,
}

impl<S: Storage> RawNode<S> {
    /// Restores (or bootstraps) a member from `storage`. A bootstrapping
    /// member's storage holds the initial membership as its base.
    pub fn new(config: Config, storage: S) -> Result<RawNode<S>, Error> {
        let raft = Raft::new(config, storage)?;
        let prev_hard_state = raft.hard_state();
        let prev_soft_state = SoftState { leader: raft.leader, role: raft.role };
        Ok(RawNode { raft, prev_hard_state, prev_soft_state, in_flight: None })
    }

    /// Advances logical time by one tick (election and heartbeat timers).
    pub fn tick(&mut self) -> Result<(), Error> {
        self.raft.tick()
    }

    /// Starts an election now (with PreVote if configured).
    pub fn campaign(&mut self) -> Result<(), Error> {
        self.raft.hup(false)
    }

    /// Handles a message from another member.
    pub fn step(&mut self, m: Message) -> Result<(), Error> {
        self.raft.step(m)
    }

    /// Proposes a command. Returns the index its entry will have if it
    /// commits; the application learns the outcome when an entry with that
    /// index appears in `committed_entries` (it is this command only if the
    /// term matches the term returned by [`RawNode::term`] when proposing).
    pub fn propose(&mut self, data: Bytes) -> Result<Index, Error> {
        self.raft.propose(data)
    }

    /// Proposes several commands in one go. Returns the first index; the
    /// others follow consecutively.
    pub fn propose_batch(&mut self, data: Vec<Bytes>) -> Result<Index, Error> {
        self.raft.propose_batch(data)
    }

    /// Proposes a membership change (one member at a time).
    pub fn propose_conf_change(&mut self, cc: ConfChange) -> Result<Index, Error> {
        self.raft.propose_conf_change(cc)
    }

    /// Starts a linearizable read identified by `ctx`. Only the leader
    /// accepts reads; the read appears in [`Ready::read_states`] once the
    /// leader has confirmed, with a majority, that it still leads.
    pub fn read_index(&mut self, ctx: u64) -> Result<(), Error> {
        self.raft.read_index(ctx)
    }

    /// Hands leadership to `to`.
    pub fn transfer_leader(&mut self, to: NodeId) -> Result<(), Error> {
        self.raft.transfer_leader(to)
    }

    /// Tells the leader that `to` could not be reached.
    pub fn report_unreachable(&mut self, to: NodeId) {
        self.raft.report_unreachable(to);
    }

    /// Tells the leader how sending a snapshot to `to` ended.
    pub fn report_snapshot(&mut self, to: NodeId, ok: bool) {
        self.raft.report_snapshot(to, ok);
    }

    /// Whether there is anything for the application to do.
    pub fn has_ready(&self) -> bool {
        let r = &self.raft;
        self.in_flight.is_none()
            && (self.soft_state() != self.prev_soft_state
                || r.hard_state() != self.prev_hard_state
                || r.log.next_snapshot().is_some()
                || r.log.has_next_unstable()
                || !r.msgs.is_empty()
                || !r.msgs_after_persist.is_empty()
                || r.log.has_next_committed()
                || !r.read_states.is_empty()
                || r.has_pending_broadcast())
    }

    fn soft_state(&self) -> SoftState {
        SoftState { leader: self.raft.leader, role: self.raft.role }
    }

    /// Collects what the application must do. Call [`RawNode::advance`] when
    /// done, before the next `ready`.
    pub fn ready(&mut self) -> Result<Ready, Error> {
        self.raft.flush_broadcast()?;
        let r = &mut self.raft;
        let mut rd = Ready::default();
        let ss = SoftState { leader: r.leader, role: r.role };
        if ss != self.prev_soft_state {
            rd.soft_state = Some(ss);
            self.prev_soft_state = ss;
        }
        let hs = r.hard_state();
        // Whether this Ready makes a new term or vote durable: then nothing
        // of it may leave before it is (a lone voter wins in the step that
        // starts its campaign, and its first appends carry the new term).
        let new_term = hs.term != self.prev_hard_state.term || hs.vote != self.prev_hard_state.vote;
        if hs != self.prev_hard_state {
            rd.hard_state = Some(hs);
            self.prev_hard_state = hs;
        }
        let mut in_flight = InFlight::default();
        if let Some(s) = r.log.next_snapshot() {
            rd.snapshot = Some(s.clone());
            in_flight.snapshot = Some(s.index);
        }
        rd.entries = r.log.next_unstable().to_vec();
        in_flight.last_entry = r.log.accept_unstable();
        rd.messages = std::mem::take(&mut r.msgs);
        rd.persisted_messages = std::mem::take(&mut r.msgs_after_persist);
        if new_term && !rd.messages.is_empty() {
            let mut held = std::mem::take(&mut rd.messages);
            held.append(&mut rd.persisted_messages);
            rd.persisted_messages = held;
        }
        rd.committed_entries = r.log.next_committed()?;
        if let Some(e) = rd.committed_entries.last() {
            r.log.applying = e.index;
        }
        in_flight.applying = r.log.applying;
        rd.read_states = std::mem::take(&mut r.read_states);
        self.in_flight = Some(in_flight);
        Ok(rd)
    }

    /// Confirms that the last `Ready` was carried out: its snapshot and
    /// entries are durable, its messages sent, its committed entries applied.
    pub fn advance(&mut self) -> Result<(), Error> {
        let Some(done) = self.in_flight.take() else { return Ok(()) };
        let r = &mut self.raft;
        if let Some(index) = done.snapshot {
            r.log.stable_snapshot_to(index);
        }
        if let Some((index, term)) = done.last_entry {
            r.log.stable_to(index, term);
        }
        r.log.applied = r.log.applied.max(done.applying);
        r.on_persisted()
    }

    /// The current term.
    pub fn term(&self) -> Term {
        self.raft.term
    }

    /// The current role.
    pub fn role(&self) -> Role {
        self.raft.role
    }

    /// The leader this member knows of.
    pub fn leader(&self) -> Option<NodeId> {
        self.raft.leader
    }

    /// This member's id.
    pub fn id(&self) -> NodeId {
        self.raft.id
    }

    /// The membership in effect.
    pub fn conf(&self) -> &ConfState {
        &self.raft.conf
    }

    /// The membership in effect at `index` (for snapshots taken there).
    pub fn conf_at(&self, index: Index) -> ConfState {
        self.raft.conf_at(index)
    }

    /// The log's durable storage, for the application to read.
    pub fn storage(&self) -> &S {
        &self.raft.log.storage
    }

    /// The log's durable storage, for the application to write what `Ready`
    /// hands it (and to compact it).
    pub fn storage_mut(&mut self) -> &mut S {
        &mut self.raft.log.storage
    }

    /// The application compacted its log up to `index`: forget membership
    /// history before it.
    pub fn on_compacted(&mut self, index: Index) {
        self.raft.on_compacted(index);
    }

    /// The term of the entry at `index`, if the log still holds it.
    pub fn log_term(&self, index: Index) -> Option<Term> {
        self.raft.log.term(index).ok()
    }

    /// The member's state, for status pages and tests.
    pub fn status(&self) -> Status {
        let r = &self.raft;
        Status {
            id: r.id,
            hard_state: r.hard_state(),
            soft_state: self.soft_state(),
            applied: r.log.applied,
            last_index: r.log.last_index().unwrap_or(0),
            first_index: r.log.first_index().unwrap_or(0),
            conf: r.conf.clone(),
            progress: r.progress.iter().map(|(&id, p)| (id, ProgressStatus::from(p))).collect(),
        }
    }

    /// The underlying state machine, for tests.
    pub fn raft(&self) -> &Raft<S> {
        &self.raft
    }
}
