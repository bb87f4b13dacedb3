//! The process-cluster harness (shared with graft-cli's tests, in
//! graft-testkit) and the fault-injecting proxy of the Jepsen-style tests.

#![allow(dead_code, unused_imports)]

pub use graft_testkit::*;

pub mod proxy;
