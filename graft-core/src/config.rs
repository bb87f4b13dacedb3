//! The core's tunables.

use crate::error::ConfigError;
use crate::message::{Index, NodeId};

/// How a [`crate::RawNode`] behaves. Times are counted in ticks: the
/// application decides how long a tick is by how often it calls
/// [`crate::RawNode::tick`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// This member's id. Never 0.
    pub id: NodeId,
    /// A follower that hears nothing from a leader for a random number of
    /// ticks in `[election_tick, 2 * election_tick)` starts an election.
    /// A leader with CheckQuorum steps down when it has not heard from a
    /// majority for `election_tick` ticks.
    pub election_tick: u32,
    /// A leader sends heartbeats every `heartbeat_tick` ticks.
    /// Invariant: `heartbeat_tick < election_tick`.
    pub heartbeat_tick: u32,
    /// The most entries one `Append` message carries.
    pub max_entries_per_msg: usize,
    /// The most bytes (by [`crate::Entry::size`]) one `Append` carries; a single
    /// larger entry still goes alone.
    pub max_bytes_per_msg: u64,
    /// The most `Append` messages in flight to one follower while replicating.
    pub max_inflight_msgs: usize,
    /// Run a PreVote round before a real election (thesis §9.6), so that a
    /// member that was cut off cannot depose a healthy leader when it returns.
    pub pre_vote: bool,
    /// A leader steps down when it has not heard from a majority within an
    /// election timeout, and followers ignore vote requests while they have a
    /// live leader (thesis §6.2, §9.6).
    pub check_quorum: bool,
    /// The index the application's state machine has already applied (from
    /// its durable state). Committed entries after it are handed out again.
    /// It must lie within the log, from its base (the latest snapshot or
    /// compaction point) to its last entry: `RawNode::new` refuses anything
    /// else with [`crate::ConfigError::AppliedOutsideLog`] rather than claim
    /// an applied index the state machine does not hold.
    pub applied: Index,
    /// Seeds the election-timeout randomness. Use a different seed per member
    /// (and per restart) so that members do not time out in lockstep.
    pub seed: u64,
}

impl Config {
    /// A configuration with graft's defaults for member `id`.
    pub fn new(id: NodeId) -> Config {
        Config {
            id,
            election_tick: 10,
            heartbeat_tick: 2,
            max_entries_per_msg: 1024,
            max_bytes_per_msg: 1 << 20,
            max_inflight_msgs: 256,
            pre_vote: true,
            check_quorum: true,
            applied: 0,
            seed: id,
        }
    }

    /// Checks the configuration for values the core cannot work with.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.id == 0 {
            return Err(ConfigError::ZeroId);
        }
        if self.heartbeat_tick == 0 {
            return Err(ConfigError::ZeroHeartbeat);
        }
        if self.election_tick <= self.heartbeat_tick {
            return Err(ConfigError::ElectionNotAboveHeartbeat {
                election: self.election_tick,
                heartbeat: self.heartbeat_tick,
            });
        }
        if self.max_inflight_msgs == 0 {
            return Err(ConfigError::ZeroInflight);
        }
        if self.max_entries_per_msg == 0 {
            return Err(ConfigError::ZeroEntriesPerMsg);
        }
        Ok(())
    }
}
