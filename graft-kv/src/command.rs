//! The commands graft-kv writes into the Raft log (postcard-encoded in
//! `EntryPayload::Command`).

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::protocol::{Expect, SessionSeq, Txn};

/// One replicated write.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Command {
    /// Identifies the write for exactly-once execution.
    pub session: Option<SessionSeq>,
    /// The leader's wall clock when it proposed the write, in ms since the
    /// epoch. Sessions expire by this clock, so every member expires them at
    /// the same entry.
    pub time_ms: u64,
    /// What to do.
    pub op: WriteOp,
}

/// A write operation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum WriteOp {
    /// Sets `key` to `value`.
    Put {
        /// The key.
        key: Bytes,
        /// The value.
        value: Bytes,
        /// The lease it is attached to (0: none).
        lease: u64,
    },
    /// Removes `key`.
    Delete {
        /// The key.
        key: Bytes,
    },
    /// Sets `key` to `value` if it holds what `expect` says.
    Cas {
        /// The key.
        key: Bytes,
        /// The condition.
        expect: Expect,
        /// The new value.
        value: Bytes,
    },
    /// Removes every key starting with `prefix`.
    DeletePrefix {
        /// The prefix.
        prefix: Bytes,
    },
    /// A multi-key transaction.
    Txn(Txn),
    /// Discards history below `revision`.
    Compact {
        /// The oldest revision to keep readable.
        revision: u64,
    },
    /// Grants a lease (`id` 0: the entry's index, with the top bits set).
    LeaseGrant {
        /// The id wanted, or 0.
        id: u64,
        /// Its TTL.
        ttl_ms: u64,
    },
    /// Revokes a lease and deletes its keys.
    LeaseRevoke {
        /// The lease.
        id: u64,
    },
    /// Renews leases.
    LeaseKeepAlive {
        /// The leases.
        ids: Vec<u64>,
    },
    /// The leader's expiry: revokes each lease that is, as of this entry's
    /// time, past its deadline (a keepalive applied before wins).
    LeaseExpire {
        /// The leases the leader found expired.
        ids: Vec<u64>,
    },
    /// Moves the lease clock (a leader writes one when it takes over and
    /// every 100 ms while leases exist).
    LeaseClock,
    /// Changes no data: the timestamp demo's entries.
    Note(String),
}

impl WriteOp {
    /// A short description for logs.
    pub fn describe(&self) -> String {
        match self {
            WriteOp::Put { key, value, lease: 0 } => format!("put {:?} ({} bytes)", key, value.len()),
            WriteOp::Put { key, value, lease } => {
                format!("put {:?} ({} bytes, lease {lease})", key, value.len())
            }
            WriteOp::LeaseGrant { id, ttl_ms } => format!("lease grant {id} ({ttl_ms} ms)"),
            WriteOp::LeaseRevoke { id } => format!("lease revoke {id}"),
            WriteOp::LeaseKeepAlive { ids } => format!("lease keepalive {ids:?}"),
            WriteOp::LeaseExpire { ids } => format!("lease expire {ids:?}"),
            WriteOp::LeaseClock => "lease clock".to_owned(),
            WriteOp::Delete { key } => format!("delete {key:?}"),
            WriteOp::Cas { key, .. } => format!("cas {key:?}"),
            WriteOp::DeletePrefix { prefix } => format!("delete prefix {prefix:?}"),
            WriteOp::Txn(t) => format!(
                "txn ({} compares, {} success, {} failure)",
                t.compare.len(),
                t.success.len(),
                t.failure.len()
            ),
            WriteOp::Compact { revision } => format!("compact at {revision}"),
            WriteOp::Note(s) => s.clone(),
        }
    }
}

/// What graft-kv puts in a membership change's context.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberContext {
    /// Where the member listens (empty: unchanged).
    pub addr: String,
    /// For a learner: make it a voter once it has caught up.
    pub promote: bool,
}

impl MemberContext {
    /// Reads the context of a membership change; `None` if it carries none
    /// (a promotion, a removal) or cannot be decoded.
    pub fn of(change: &graft_core::ConfChange) -> Option<MemberContext> {
        postcard::from_bytes(&change.context).ok()
    }
}
