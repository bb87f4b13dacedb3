//! A member restarting from its durable state: how much of the log it
//! reads to find its membership again.

use std::cell::Cell;

use bytes::Bytes;
use graft_core::{
    ConfChange, ConfChangeKind, ConfState, Config, ConfigEntry, Entry, EntryPayload, HardState, Index,
    InitialState, MemStorage, RawNode, SnapshotMeta, Storage, StorageError, Term,
};

/// A `MemStorage` that counts the calls to `entries`.
struct Counting {
    inner: MemStorage,
    reads: Cell<usize>,
}

impl Storage for Counting {
    fn initial_state(&self) -> Result<InitialState, StorageError> {
        self.inner.initial_state()
    }
    fn entries(&self, lo: Index, hi: Index, max_bytes: u64) -> Result<Vec<Entry>, StorageError> {
        self.reads.set(self.reads.get() + 1);
        self.inner.entries(lo, hi, max_bytes)
    }
    fn term(&self, index: Index) -> Result<Term, StorageError> {
        self.inner.term(index)
    }
    fn first_index(&self) -> Result<Index, StorageError> {
        self.inner.first_index()
    }
    fn last_index(&self) -> Result<Index, StorageError> {
        self.inner.last_index()
    }
    fn snapshot_meta(&self) -> Result<SnapshotMeta, StorageError> {
        self.inner.snapshot_meta()
    }
}

/// Thesis §4.1: a restarting member finds its membership in the latest
/// configuration entry of its log, so it scans the log after its base. It
/// does so in large batches (up to 4 MiB each), not one storage read per
/// entry: a long log on disk would otherwise make every restart slow.
#[test]
fn a_restart_scans_the_log_for_membership_in_batches() {
    let mut s = MemStorage::new_with_conf(ConfState::with_voters([1, 2, 3]));
    let mut entries: Vec<Entry> = (1..=1000)
        .map(|index| Entry { term: 1, index, payload: EntryPayload::Command(Bytes::from_static(b"x")) })
        .collect();
    let change = ConfChange { kind: ConfChangeKind::AddLearner, node: 4, context: Bytes::new() };
    let conf = ConfState { voters: [1, 2, 3].into(), learners: [4].into() };
    entries.push(Entry { term: 1, index: 1001, payload: EntryPayload::Config(ConfigEntry { change, conf }) });
    s.append(&entries).unwrap();
    s.set_hard_state(HardState { term: 1, vote: None, commit: 1001 });
    let storage = Counting { inner: s, reads: Cell::new(0) };
    let n = RawNode::new(Config::new(1), storage).unwrap();
    assert!(n.conf().learners.contains(&4), "the membership of the log's last configuration entry");
    let reads = n.storage().reads.get();
    assert!(reads <= 2, "{reads} storage reads to scan 1001 small entries");
}
