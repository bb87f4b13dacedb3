//! The data Raft exchanges and persists: log entries, hard state, membership,
//! snapshot metadata and the messages between members.

use std::collections::BTreeSet;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

/// A member's identity. Never 0: 0 is reserved to mean "nobody".
pub type NodeId = u64;
/// A Raft term. Terms start at 0 and only grow.
pub type Term = u64;
/// A log index. The first real entry has index 1; index 0 is the empty prefix.
pub type Index = u64;

/// One entry of the replicated log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// The term of the leader that created the entry.
    pub term: Term,
    /// The entry's position in the log.
    pub index: Index,
    /// What the entry carries.
    pub payload: EntryPayload,
}

/// What a log entry carries.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum EntryPayload {
    /// Appended by every new leader when it takes office, so that it can commit
    /// an entry of its own term (Raft §5.4.2, §8). The application applies it as
    /// a no-op.
    Noop,
    /// An application command: opaque bytes the core never looks into.
    Command(Bytes),
    /// A membership change. The new membership takes effect on every member as
    /// soon as the entry is appended to its log, committed or not (thesis §4.1).
    Config(ConfigEntry),
}

/// A membership change as it travels in the log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigEntry {
    /// The change that was requested.
    pub change: ConfChange,
    /// The complete membership after the change.
    pub conf: ConfState,
}

impl Entry {
    /// An approximation of the entry's encoded size in bytes, used for the
    /// per-message byte cap.
    pub fn size(&self) -> u64 {
        let payload = match &self.payload {
            EntryPayload::Noop => 0,
            EntryPayload::Command(data) => data.len() as u64,
            EntryPayload::Config(c) => {
                c.change.context.len() as u64 + 8 * (c.conf.voters.len() + c.conf.learners.len()) as u64
            }
        };
        payload + 16
    }

    /// Whether the entry changes membership.
    pub fn is_config(&self) -> bool {
        matches!(self.payload, EntryPayload::Config(_))
    }
}

/// The state a member must persist before it sends messages that depend on it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HardState {
    /// The latest term this member has seen.
    pub term: Term,
    /// The candidate this member voted for in `term`, if any.
    /// Invariant: a member votes at most once per term, so this never changes
    /// within a term once set.
    pub vote: Option<NodeId>,
    /// The highest log index known to be committed. Persisting it is an
    /// optimisation (it can always be relearned), but it must never go backwards.
    pub commit: Index,
}

/// The membership of the cluster.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfState {
    /// Members that vote and count toward commitment.
    pub voters: BTreeSet<NodeId>,
    /// Members that receive the log but neither vote nor count.
    /// Invariant: disjoint from `voters`.
    pub learners: BTreeSet<NodeId>,
}

impl ConfState {
    /// A membership of the given voters and no learners.
    pub fn with_voters(voters: impl IntoIterator<Item = NodeId>) -> ConfState {
        ConfState { voters: voters.into_iter().collect(), learners: BTreeSet::new() }
    }

    /// Whether `id` is a voter or a learner.
    pub fn contains(&self, id: NodeId) -> bool {
        self.voters.contains(&id) || self.learners.contains(&id)
    }

    /// Every member, voters first, each in ascending id order.
    pub fn members(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.voters.iter().chain(self.learners.iter()).copied()
    }
}

/// A requested membership change. graft changes one member at a time
/// (single-server changes, thesis §4.1), so any two consecutive voter sets
/// share a majority.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfChange {
    /// What to do.
    pub kind: ConfChangeKind,
    /// The member it concerns.
    pub node: NodeId,
    /// Opaque application data carried with the change (graft-kv puts the
    /// member's address here).
    pub context: Bytes,
}

/// The kinds of single-member change.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ConfChangeKind {
    /// Add a voter, or promote a learner to a voter.
    AddVoter,
    /// Add a learner. Demoting a voter to a learner is also allowed.
    AddLearner,
    /// Remove a voter or a learner.
    Remove,
}

/// Describes a snapshot: the state machine as of `index`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotMeta {
    /// The last log index the snapshot includes.
    pub index: Index,
    /// The term of the entry at `index`.
    pub term: Term,
    /// The membership as of `index`.
    pub conf: ConfState,
}

/// A message between two members.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    /// The sender.
    pub from: NodeId,
    /// The receiver.
    pub to: NodeId,
    /// The sender's term (for a pre-vote request: the term it would campaign in).
    pub term: Term,
    /// What the message says.
    pub body: MessageBody,
}

/// The kinds of message, one variant each.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum MessageBody {
    /// RequestVote (§5.2), or a PreVote probe (thesis §9.6) when `pre_vote`.
    Vote {
        /// A PreVote probe: it changes no state on the receiver.
        pre_vote: bool,
        /// The candidate's last log index.
        last_index: Index,
        /// The candidate's last log term.
        last_term: Term,
        /// The campaign follows a leadership transfer, so receivers must not
        /// ignore it because they heard from the leader recently.
        transfer: bool,
    },
    /// The answer to `Vote`.
    VoteResponse {
        /// Answers a PreVote probe.
        pre_vote: bool,
        /// Whether the vote was granted.
        granted: bool,
    },
    /// AppendEntries (§5.3).
    Append {
        /// The index of the entry just before `entries`.
        prev_index: Index,
        /// The term of that entry.
        prev_term: Term,
        /// The entries, in index order; may be empty (a probe).
        entries: Vec<Entry>,
        /// The leader's commit index.
        commit: Index,
    },
    /// The answer to `Append` (and to `Snapshot`).
    AppendResponse(AppendResponse),
    /// A heartbeat: asserts leadership, carries the commit index the receiver
    /// may safely adopt, and the latest ReadIndex round.
    Heartbeat {
        /// `min(leader commit, receiver's match index)`.
        commit: Index,
        /// The latest ReadIndex round the leader has started.
        read_round: u64,
    },
    /// The answer to `Heartbeat`.
    HeartbeatResponse {
        /// Echoes the heartbeat's `read_round`.
        read_round: u64,
    },
    /// InstallSnapshot (§7). The core sends only the metadata: the application
    /// transfers the state itself (see [`crate::Ready::messages`]).
    Snapshot {
        /// What the snapshot contains.
        meta: SnapshotMeta,
    },
    /// Tells the receiver to campaign at once (leadership transfer, thesis §3.10).
    TimeoutNow,
}

/// The answer to `Append`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum AppendResponse {
    /// The receiver's log matches the leader's up to `index`.
    Accepted {
        /// The highest index known to match the leader's log.
        index: Index,
    },
    /// The receiver's log does not contain an entry at `rejected` with the
    /// term the leader sent; the hints let the leader skip a whole term per
    /// round trip (§5.3, "fast backtracking").
    Rejected {
        /// The `prev_index` that was rejected.
        rejected: Index,
        /// The largest index `<= rejected` whose term is `<= hint_term`.
        hint_index: Index,
        /// The term of the entry at `hint_index` in the receiver's log.
        hint_term: Term,
    },
}

impl MessageBody {
    /// A short name for logs and traces.
    pub fn kind(&self) -> &'static str {
        match self {
            MessageBody::Vote { pre_vote: true, .. } => "PreVote",
            MessageBody::Vote { .. } => "Vote",
            MessageBody::VoteResponse { pre_vote: true, .. } => "PreVoteResponse",
            MessageBody::VoteResponse { .. } => "VoteResponse",
            MessageBody::Append { .. } => "Append",
            MessageBody::AppendResponse(_) => "AppendResponse",
            MessageBody::Heartbeat { .. } => "Heartbeat",
            MessageBody::HeartbeatResponse { .. } => "HeartbeatResponse",
            MessageBody::Snapshot { .. } => "Snapshot",
            MessageBody::TimeoutNow => "TimeoutNow",
        }
    }
}
