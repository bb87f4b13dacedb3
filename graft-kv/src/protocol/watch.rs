//! Watches: a stream of the changes to a key or a prefix, in revision
//! order, from a past revision or from now.

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::kv::KeyValue;

/// Which keys a watch follows.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WatchFilter {
    /// The key, or the prefix with `prefix`.
    pub key: Bytes,
    /// Follow every key starting with `key`.
    pub prefix: bool,
}

impl WatchFilter {
    /// Whether the watch follows `key`.
    pub fn matches(&self, key: &[u8]) -> bool {
        if self.prefix {
            key.starts_with(&self.key)
        } else {
            key == self.key.as_ref()
        }
    }
}

/// One change.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WatchEvent {
    /// The key.
    pub key: Bytes,
    /// The revision of the write.
    pub revision: u64,
    /// The key's new record for a put; `None` for a delete.
    pub kv: Option<KeyValue>,
    /// The key's record before the write, if asked for and known (a record
    /// older than the compaction point may be gone).
    pub prev: Option<KeyValue>,
}

/// What a watch stream carries: every answer to a `Watch` request has the
/// request's id, until `Canceled` (or the connection closes).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum WatchResponse {
    /// The watch is registered; the member's state stands at `revision`.
    Created {
        /// The member's revision when the watch started.
        revision: u64,
    },
    /// Changes, in revision order. A revision's changes span several
    /// answers only when they are too large for one: every piece but the
    /// last has `fragment` set, and a client delivers the revision once
    /// whole.
    Events {
        /// The changes.
        events: Vec<WatchEvent>,
        /// More changes of the last revision here follow.
        fragment: bool,
    },
    /// Nothing changed for this watch up to `revision`: every event at or
    /// below it has been sent.
    Progress {
        /// The member's revision.
        revision: u64,
    },
    /// The watch ended; no more answers come.
    Canceled {
        /// Why, for people.
        reason: String,
        /// Set when the start revision was compacted: the oldest revision
        /// still available. A client cannot resume below it.
        compacted: Option<u64>,
    },
}
