//! The core's error types.

use crate::message::{Index, NodeId};
use crate::storage::StorageError;

/// An invalid [`crate::Config`].
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    /// Id 0 means "nobody".
    #[error("member id must not be 0")]
    ZeroId,
    /// Heartbeats must happen.
    #[error("heartbeat_tick must be at least 1")]
    ZeroHeartbeat,
    /// Followers would time out between heartbeats.
    #[error("election_tick ({election}) must be greater than heartbeat_tick ({heartbeat})")]
    ElectionNotAboveHeartbeat {
        /// The configured election tick.
        election: u32,
        /// The configured heartbeat tick.
        heartbeat: u32,
    },
    /// Replication could never send anything.
    #[error("max_inflight_msgs must be at least 1")]
    ZeroInflight,
    /// Appends could carry nothing.
    #[error("max_entries_per_msg must be at least 1")]
    ZeroEntriesPerMsg,
    /// The application's state machine is not where its log can continue
    /// it: behind the log's first entry (what it lacks is gone from the log),
    /// or past the log's end. Starting anyway would claim an applied index
    /// the state machine does not hold.
    #[error(
        "the state machine's applied index {applied} is outside the log, which can resume \
         from {first_applicable} up to {last}"
    )]
    AppliedOutsideLog {
        /// The applied index given in the configuration.
        applied: Index,
        /// The lowest applied index the log can resume from (its base).
        first_applicable: Index,
        /// The log's last index.
        last: Index,
    },
}

/// Why the core refused a request or failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Only the leader accepts proposals and reads. `leader` is the leader
    /// this member knows of, if any: ask it instead.
    #[error("not the leader (leader: {leader:?})")]
    NotLeader {
        /// The leader this member knows of.
        leader: Option<NodeId>,
    },
    /// The leader is handing leadership over and accepts no proposals until
    /// the transfer completes or times out. Retry shortly.
    #[error("leadership transfer in progress")]
    TransferInProgress,
    /// A membership change was refused.
    #[error("membership change refused: {0}")]
    ConfChange(ConfChangeError),
    /// The target of a leadership transfer is not a voter.
    #[error("member {0} is not a voter")]
    NotAVoter(NodeId),
    /// The configuration is invalid.
    #[error("invalid configuration: {0}")]
    Config(ConfigError),
    /// The storage failed, or returned something that contradicts the log
    /// the core holds.
    #[error("storage: {0}")]
    Storage(StorageError),
}

/// Why a membership change was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfChangeError {
    /// A previous change is not committed yet; changes go one at a time.
    #[error("the change at index {0} is not committed yet")]
    Pending(Index),
    /// The leader has not yet committed an entry of its own term, which must
    /// happen before its first change (the single-server change fix).
    #[error("the leader has not committed an entry of its term yet")]
    LeaderNotReady,
    /// The change would leave no voter.
    #[error("the change would leave the cluster without voters")]
    NoVoters,
    /// After the change, the members heard from recently would not form a
    /// majority of the new voters, so the cluster would stop.
    #[error("after the change, live members ({live}) would not reach a quorum of {needed}")]
    NoLiveQuorum {
        /// Voters of the new membership that were heard from recently.
        live: usize,
        /// The majority the new membership needs.
        needed: usize,
    },
    /// The change does nothing: the member already has that role, or is not a member.
    #[error("member {0} already has that role")]
    NoOp(NodeId),
    /// Id 0 is reserved.
    #[error("member id must not be 0")]
    ZeroId,
}

impl From<ConfChangeError> for Error {
    fn from(e: ConfChangeError) -> Error {
        Error::ConfChange(e)
    }
}

impl From<ConfigError> for Error {
    fn from(e: ConfigError) -> Error {
        Error::Config(e)
    }
}

impl From<StorageError> for Error {
    fn from(e: StorageError) -> Error {
        Error::Storage(e)
    }
}
