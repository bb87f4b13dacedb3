//! The process-cluster harness (shared with graft-cli's tests, in
//! graft-testkit) and the fault-injecting proxy of the Jepsen-style tests.

#![allow(dead_code, unused_imports)]

pub use graft_testkit::*;

pub mod coordination;
pub mod etcd;
pub mod locks;
pub mod proxy;
pub mod txn_workload;
pub mod watchers;
