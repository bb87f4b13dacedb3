//! Test support for graft's crates (unpublished; a dev-dependency only).
//!
//! - [`Cluster`]: a cluster of real `graft-kv serve` processes on free ports
//!   of 127.0.0.1, with a temporary cluster file and data directories:
//!   start, kill -9, SIGTERM, restart, join new members, wait for a leader or
//!   an applied index, and read the members' logs for failure messages.
//!   graft-kv's and graft-cli's integration tests both use it.
//! - [`graft_kv_bin`]: where the `graft-kv` binary under test is.
//! - The crate's own tests check the workspace: no import cycles between
//!   files, no source file over 800 lines of code.

mod bin;
mod cluster;
pub mod workspace;

pub use bin::graft_kv_bin;
pub use cluster::{file_digest, free_ports, signal, summary, Cluster, Member};
