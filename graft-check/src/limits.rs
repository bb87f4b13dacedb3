//! The limits a check works within, and why it gives up: shared by the
//! search (which enforces them) and the entry points (which report them).

use std::fmt;
use std::time::Duration;

/// How much work a check may do before giving up.
///
/// The search is exponential in the worst case; these limits turn a
/// pathological history into [`Verdict::GaveUp`] instead of a hang or an
/// exhausted memory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Most configurations (set of linearized operations, register value)
    /// one key's search may remember. Each costs a few dozen bytes, plus a
    /// bit per unknown-outcome operation on the key and per operation
    /// pending concurrently at that point.
    pub max_states: u64,
    /// Most bytes one key's search may use for remembered configurations
    /// (approximate).
    pub max_cache_bytes: usize,
    /// Wall-clock limit for the whole check, minimization included; `None`
    /// for no limit.
    pub time_limit: Option<Duration>,
    /// Most configurations the minimization of a violation may explore, in
    /// all its searches. When that is reached, the violation is reported as
    /// shrunk so far, marked not minimal.
    pub minimize_total_states: u64,
    /// [`Limits::max_states`] for each search run while minimizing, unless
    /// the search that found the violation needed more: then twice what it
    /// needed. A candidate subset whose search exceeds it is taken as not
    /// shown non-linearizable.
    pub minimize_max_states: u64,
}

impl Default for Limits {
    /// Ten million states, 512 MiB, no time limit; minimization: at least
    /// 100 000 states per search, twenty million in all.
    fn default() -> Self {
        Limits {
            max_states: 10_000_000,
            max_cache_bytes: 512 << 20,
            time_limit: None,
            minimize_total_states: 20_000_000,
            minimize_max_states: 100_000,
        }
    }
}

/// Why a check gave up.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GiveUpReason {
    /// The search remembered more than [`Limits::max_states`] configurations.
    StateLimit {
        /// Configurations remembered when it stopped.
        states: u64,
    },
    /// The search used more than [`Limits::max_cache_bytes`].
    MemoryLimit {
        /// Bytes used when it stopped.
        bytes: usize,
    },
    /// [`Limits::time_limit`] passed.
    TimeLimit,
}

impl fmt::Display for GiveUpReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GiveUpReason::StateLimit { states } => write!(f, "state limit reached ({states} states)"),
            GiveUpReason::MemoryLimit { bytes } => write!(f, "memory limit reached ({bytes} bytes)"),
            GiveUpReason::TimeLimit => f.write_str("time limit reached"),
        }
    }
}
