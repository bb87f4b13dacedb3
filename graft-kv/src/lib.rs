//! graft-kv: a replicated key-value store on the graft-core Raft library,
//! with redb for durable state and tokio for the network.
//!
//! # Layout
//! - [`server`]: one member — listener, connection handlers, startup checks.
//! - [`node`]: the task that owns the Raft node, the log and the state
//!   machine, and carries out each `Ready` in order.
//! - [`mailbox`]: what the node task is told ([`mailbox::NodeInput`]) and
//!   where its answers go ([`mailbox::Responder`]).
//! - [`transport`]: outbound Raft traffic, one task and queue per peer.
//! - [`members`]: the address book, kept as membership entries are appended.
//! - [`snapshot`]: streaming snapshots to followers behind the log.
//! - [`storage`]: the redb database — identity, log, hard state, key-value
//!   tables, client sessions.
//! - [`mvcc`]: the multi-version store: revisions, history, compaction.
//! - [`lease`]: the replicated lease table, its clock and expiry index.
//! - [`watch`]: watches: the hub the node publishes changes to, history
//!   replay, and the task serving one watch on a connection.
//! - [`watcher`]: the client side of a watch, resuming across members.
//! - [`keepalive`]: keeping a lease alive from a client.
//! - [`lock`]: distributed locks and leader election, with fencing tokens.
//! - [`command`]: the commands written into the log.
//! - [`protocol`]: frames and messages on the wire.
//! - [`client`]: [`Client`], the Rust client graft-cli uses.
//! - [`config`]: the cluster file and the built-in default cluster.
//! - [`bench`]: `graft-kv bench`, the load generator and failover timer;
//!   [`bench_coord`] its watchers and leases.
//! - [`demo`]: `graft-kv demo-timestamps`, the original project's behaviour.
//! - [`workload`]: the linearizability workload behind the fault tests and
//!   `graft-cli verify`.

#![warn(missing_docs)]

pub mod bench;
pub mod bench_coord;
pub mod client;
pub mod command;
pub mod config;
pub mod demo;
pub mod error;
pub mod etcd;
pub mod keepalive;
pub mod lease;
pub mod lock;
pub mod mailbox;
pub mod members;
pub mod mvcc;
pub mod node;
pub mod protocol;
pub mod server;
pub mod snapshot;
pub mod storage;
pub mod transport;
pub mod watch;
pub mod watcher;
pub mod workload;

pub use client::{Client, ClientError, ClientOptions};
pub use config::ClusterConfig;
pub use watcher::{WatchError, WatchItem, WatchOptions, Watcher};
