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
    /// Changes no data: the timestamp demo's entries.
    Note(String),
}

impl WriteOp {
    /// A short description for logs.
    pub fn describe(&self) -> String {
        match self {
            WriteOp::Put { key, value } => format!("put {:?} ({} bytes)", key, value.len()),
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
