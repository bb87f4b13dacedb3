//! graft-core: the Raft consensus algorithm as a pure, deterministic state
//! machine (sans-IO).
//!
//! The core never touches a clock, a socket, a file or global randomness.
//! The application owns all of that and drives a [`RawNode`]:
//! [`RawNode::tick`] when its timer fires, [`RawNode::step`] for each message
//! from a peer, [`RawNode::propose`] and [`RawNode::read_index`] for clients,
//! and, whenever [`RawNode::has_ready`], carries out the [`Ready`] in the
//! order its documentation gives: send, persist, send what depends on the
//! persisted state, apply, [`RawNode::advance`].
//!
//! ```
//! use graft_core::{Config, ConfState, EntryPayload, MemStorage, RawNode};
//!
//! // A one-member cluster: it elects itself at once.
//! let storage = MemStorage::new_with_conf(ConfState::with_voters([1]));
//! let mut node = RawNode::new(Config::new(1), storage).unwrap();
//! node.campaign().unwrap();
//! let mut applied = Vec::new();
//! let mut proposed = false;
//! for _ in 0..10 {
//!     if node.role() == graft_core::Role::Leader && !proposed {
//!         node.propose("hello".into()).unwrap();
//!         proposed = true;
//!     }
//!     if !node.has_ready() {
//!         continue;
//!     }
//!     let rd = node.ready().unwrap();
//!     // 1. messages to peers may go out now (none here).
//!     assert!(rd.messages.is_empty());
//!     // 2. persist entries and hard state, atomically.
//!     let store = node.storage_mut();
//!     store.append(&rd.entries).unwrap();
//!     if let Some(hs) = rd.hard_state {
//!         store.set_hard_state(hs);
//!     }
//!     // 3. now the messages that depend on it (none here).
//!     // 4. apply committed entries.
//!     for e in rd.committed_entries {
//!         if let EntryPayload::Command(data) = e.payload {
//!             applied.push(data);
//!         }
//!     }
//!     // 5. done.
//!     node.advance().unwrap();
//! }
//! assert_eq!(applied, vec![bytes::Bytes::from("hello")]);
//! ```
//!
//! # Layout
//! - [`raw_node`]: the application-facing API and [`Ready`].
//! - [`raft`]: roles, elections, replication, commitment, reads, transfer, membership.
//! - [`raft_log`]: the log over durable storage plus unstable entries.
//! - [`storage`]: the read-only [`Storage`] trait and [`MemStorage`].
//! - [`progress`]: the leader's per-follower flow control.
//! - [`quorum`]: majority arithmetic.
//! - [`message`]: entries, hard state, membership, messages.
//! - `sim` (feature `test-util`): a seeded, deterministic cluster simulation.

#![warn(missing_docs)]

pub mod config;
pub mod error;
pub mod message;
pub mod progress;
pub mod quorum;
pub mod raft;
pub mod raft_log;
pub mod raw_node;
pub mod rng;
pub mod storage;

/// The deterministic cluster simulation.
#[cfg(feature = "test-util")]
pub mod sim;
#[cfg(feature = "test-util")]
pub mod storage_suite;

pub use config::Config;
pub use error::{ConfChangeError, ConfigError, Error};
pub use message::{
    AppendResponse, ConfChange, ConfChangeKind, ConfState, ConfigEntry, Entry, EntryPayload, HardState,
    Index, Message, MessageBody, NodeId, SnapshotMeta, Term,
};
pub use raft::{ReadState, Role};
pub use raw_node::{ProgressStatus, RawNode, Ready, SoftState, Status};
pub use storage::{InitialState, MemStorage, Storage, StorageError};
