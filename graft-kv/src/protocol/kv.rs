//! Keys, values and their revisions, the size limits, and the errors a
//! request can get: the vocabulary both requests and transactions use.

use bytes::Bytes;
use graft_core::NodeId;
use serde::{Deserialize, Serialize};

/// The largest key accepted, in bytes.
pub const MAX_KEY: usize = 4 << 10;
/// The largest value accepted, in bytes.
pub const MAX_VALUE: usize = 1 << 20;

/// A key's value and its revisions (etcd's `mvccpb.KeyValue`, without the
/// key, which the answer names where it is not the one asked for).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyValue {
    /// The value.
    pub value: Bytes,
    /// The revision that created this life of the key.
    pub create_revision: u64,
    /// The revision of its last write.
    pub mod_revision: u64,
    /// Writes since it was created (1 for a new key; a delete ends the life).
    pub version: u64,
    /// The lease the key is attached to (0: none).
    pub lease: u64,
}

/// Where the leader is.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaderHint {
    /// Its member id.
    pub id: NodeId,
    /// Its address.
    pub addr: String,
}

/// A refused or failed request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum ApiError {
    /// Ask the leader instead (if one is known).
    #[error("not the leader{}", match .leader { Some(l) => format!(" (leader is {} at {})", l.id, l.addr), None => " (no leader known)".into() })]
    NotLeader {
        /// The leader this member knows of.
        leader: Option<LeaderHint>,
    },
    /// The key is over [`MAX_KEY`].
    #[error("key of {size} bytes is over the limit of {max}")]
    KeyTooLarge {
        /// Its size.
        size: usize,
        /// The limit.
        max: usize,
    },
    /// The value is over [`MAX_VALUE`].
    #[error("value of {size} bytes is over the limit of {max}")]
    ValueTooLarge {
        /// Its size.
        size: usize,
        /// The limit.
        max: usize,
    },
    /// The request makes no sense.
    #[error("invalid request: {0}")]
    Invalid(String),
    /// The member cannot serve now (shutting down, overloaded, leadership
    /// changing). Retry, possibly elsewhere. For a write, the outcome is unknown.
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// The write's session was forgotten (expired), so a retry cannot be
    /// told apart from a new write. Its outcome is unknown.
    #[error("session expired: the outcome of this write is unknown")]
    SessionExpired,
    /// The member failed.
    #[error("internal error: {0}")]
    Internal(String),
    /// The revision asked for has been compacted away.
    #[error("revision {requested} has been compacted; the oldest revision available is {oldest}")]
    Compacted {
        /// The revision asked for.
        requested: u64,
        /// The oldest revision still readable (the compaction point).
        oldest: u64,
    },
    /// No such lease (never granted, expired or revoked).
    #[error("requested lease {id} not found")]
    LeaseNotFound {
        /// The lease.
        id: u64,
    },
    /// The revision asked for is ahead of the member's state.
    #[error("revision {requested} is in the future; the current revision is {current}")]
    FutureRevision {
        /// The revision asked for.
        requested: u64,
        /// The member's current revision.
        current: u64,
    },
    /// A put keeping the value or lease of a key that does not exist.
    #[error("key {} not found", String::from_utf8_lossy(.key))]
    KeyNotFound {
        /// The key.
        key: Bytes,
    },
}
