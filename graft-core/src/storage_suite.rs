//! A conformance suite for [`Storage`] implementations: the contract the core
//! relies on, checked against any store that can also be written and reopened.
//!
//! graft runs it against [`MemStorage`](crate::MemStorage) and graft-kv's redb
//! log store. Each check panics with a description of the broken rule.

use crate::message::{ConfState, Entry, EntryPayload, HardState, Index, SnapshotMeta, Term};
use crate::storage::{Storage, StorageError};

/// A store the suite can write to and reopen.
pub trait TestStorage: Storage + Sized {
    /// Durably appends `entries`, replacing existing entries at or after the
    /// first one's index. Fails (without changing anything) on a gap.
    fn append(&mut self, entries: &[Entry]) -> Result<(), StorageError>;
    /// Durably records the hard state.
    fn set_hard_state(&mut self, hs: HardState);
    /// Durably drops entries up to `index`, with `conf` as the membership there.
    fn compact(&mut self, index: Index, conf: ConfState);
    /// Simulates a restart: a store rebuilt from what is durable.
    fn reopen(self) -> Self;
}

fn ent(index: Index, term: Term, data: &str) -> Entry {
    Entry { index, term, payload: EntryPayload::Command(data.as_bytes().to_vec().into()) }
}

fn terms<S: Storage>(s: &S, lo: Index, hi: Index) -> Vec<Term> {
    s.entries(lo, hi, u64::MAX)
        .unwrap_or_else(|e| panic!("entries({lo}, {hi}): {e}"))
        .iter()
        .map(|e| e.term)
        .collect()
}

/// Runs every check. `new` makes an empty store whose base membership is the
/// given one.
pub fn run<S: TestStorage>(new: impl Fn(ConfState) -> S) {
    empty_store(&new);
    append_and_read(&new);
    truncate_conflicting_suffix(&new);
    gaps_are_refused(&new);
    size_limits(&new);
    hard_state_survives_reopen(&new);
    compaction(&new);
}

fn conf() -> ConfState {
    ConfState::with_voters([1, 2, 3])
}

fn empty_store<S: TestStorage>(new: &impl Fn(ConfState) -> S) {
    let s = new(conf());
    let init = s.initial_state().expect("initial_state");
    assert_eq!(init.hard_state, HardState::default(), "a new store has a zero hard state");
    assert_eq!(init.conf, conf(), "a new store reports its base membership");
    assert_eq!(s.first_index().unwrap(), 1, "an empty log starts at 1");
    assert_eq!(s.last_index().unwrap(), 0, "an empty log ends at 0");
    assert_eq!(s.term(0).unwrap(), 0, "term(0) is 0");
    assert!(matches!(s.term(1), Err(StorageError::Unavailable(1))), "term past the end is Unavailable");
    assert!(s.entries(1, 1, u64::MAX).unwrap().is_empty(), "an empty range is empty");
    assert!(matches!(s.entries(1, 2, u64::MAX), Err(StorageError::Unavailable(_))));
    assert_eq!(s.snapshot_meta().unwrap(), SnapshotMeta { index: 0, term: 0, conf: conf() });
}

fn append_and_read<S: TestStorage>(new: &impl Fn(ConfState) -> S) {
    let mut s = new(conf());
    s.append(&[ent(1, 1, "a"), ent(2, 1, "b"), ent(3, 2, "c")]).unwrap();
    s.append(&[ent(4, 2, "d"), ent(5, 3, "e")]).unwrap();
    assert_eq!(s.last_index().unwrap(), 5);
    assert_eq!(terms(&s, 1, 6), vec![1, 1, 2, 2, 3]);
    assert_eq!(s.term(3).unwrap(), 2);
    let got = s.entries(2, 4, u64::MAX).unwrap();
    assert_eq!(got, vec![ent(2, 1, "b"), ent(3, 2, "c")], "entries are returned whole, in order");
    assert!(matches!(s.entries(4, 7, u64::MAX), Err(StorageError::Unavailable(_))));
    let s = s.reopen();
    assert_eq!(terms(&s, 1, 6), vec![1, 1, 2, 2, 3], "entries survive a restart");
    assert_eq!(s.entries(5, 6, u64::MAX).unwrap(), vec![ent(5, 3, "e")]);
}

fn truncate_conflicting_suffix<S: TestStorage>(new: &impl Fn(ConfState) -> S) {
    let mut s = new(conf());
    s.append(&[ent(1, 1, "a"), ent(2, 1, "b"), ent(3, 1, "c"), ent(4, 1, "d")]).unwrap();
    s.append(&[ent(3, 2, "x")]).unwrap();
    assert_eq!(s.last_index().unwrap(), 3, "appending at 3 drops 4");
    assert_eq!(terms(&s, 1, 4), vec![1, 1, 2]);
    assert!(matches!(s.term(4), Err(StorageError::Unavailable(4))));
    let s = s.reopen();
    assert_eq!(s.last_index().unwrap(), 3, "the truncation is durable");
    assert_eq!(s.entries(3, 4, u64::MAX).unwrap(), vec![ent(3, 2, "x")]);
}

fn gaps_are_refused<S: TestStorage>(new: &impl Fn(ConfState) -> S) {
    let mut s = new(conf());
    s.append(&[ent(1, 1, "a")]).unwrap();
    assert!(s.append(&[ent(3, 1, "c")]).is_err(), "an append leaving a gap is refused");
    assert_eq!(s.last_index().unwrap(), 1, "and changes nothing");
}

fn size_limits<S: TestStorage>(new: &impl Fn(ConfState) -> S) {
    let mut s = new(conf());
    let big = "x".repeat(100);
    let ents: Vec<Entry> = (1..=10).map(|i| ent(i, 1, &big)).collect();
    s.append(&ents).unwrap();
    let one = ents[0].size();
    assert_eq!(s.entries(1, 11, 0).unwrap().len(), 1, "at least one entry, whatever the limit");
    assert_eq!(s.entries(1, 11, one * 3).unwrap().len(), 3, "as many as fit");
    assert_eq!(s.entries(1, 11, one * 3 + 1).unwrap().len(), 3);
    assert_eq!(s.entries(1, 11, u64::MAX).unwrap().len(), 10);
}

fn hard_state_survives_reopen<S: TestStorage>(new: &impl Fn(ConfState) -> S) {
    let mut s = new(conf());
    s.append(&[ent(1, 1, "a"), ent(2, 2, "b")]).unwrap();
    let hs = HardState { term: 7, vote: Some(3), commit: 2 };
    s.set_hard_state(hs);
    assert_eq!(s.initial_state().unwrap().hard_state, hs);
    let s = s.reopen();
    assert_eq!(s.initial_state().unwrap().hard_state, hs, "term, vote and commit survive a restart");
}

fn compaction<S: TestStorage>(new: &impl Fn(ConfState) -> S) {
    let mut s = new(conf());
    s.append(&[ent(1, 1, "a"), ent(2, 1, "b"), ent(3, 2, "c"), ent(4, 2, "d"), ent(5, 3, "e")]).unwrap();
    let later = ConfState::with_voters([1, 2, 3, 4]);
    s.compact(3, later.clone());
    assert_eq!(s.first_index().unwrap(), 4);
    assert_eq!(s.last_index().unwrap(), 5);
    assert_eq!(s.term(3).unwrap(), 2, "the compaction point keeps its term");
    assert!(matches!(s.term(2), Err(StorageError::Compacted(2))));
    assert!(matches!(s.entries(3, 5, u64::MAX), Err(StorageError::Compacted(_))));
    assert_eq!(terms(&s, 4, 6), vec![2, 3]);
    assert_eq!(s.snapshot_meta().unwrap(), SnapshotMeta { index: 3, term: 2, conf: later.clone() });
    assert_eq!(s.initial_state().unwrap().conf, later, "the base membership is the compaction point's");
    let mut s = s.reopen();
    assert_eq!(s.first_index().unwrap(), 4, "compaction survives a restart");
    assert_eq!(s.term(3).unwrap(), 2);
    s.append(&[ent(6, 3, "f")]).unwrap();
    assert_eq!(terms(&s, 4, 7), vec![2, 3, 3]);
    // Compacting everything leaves an empty log after the base.
    s.compact(6, later.clone());
    assert_eq!((s.first_index().unwrap(), s.last_index().unwrap()), (7, 6));
    assert_eq!(s.term(6).unwrap(), 3);
    s.append(&[ent(7, 4, "g")]).unwrap();
    assert_eq!(s.reopen().entries(7, 8, u64::MAX).unwrap(), vec![ent(7, 4, "g")]);
}

impl TestStorage for crate::MemStorage {
    fn append(&mut self, entries: &[Entry]) -> Result<(), StorageError> {
        crate::MemStorage::append(self, entries)
    }

    fn set_hard_state(&mut self, hs: HardState) {
        crate::MemStorage::set_hard_state(self, hs);
    }

    fn compact(&mut self, index: Index, conf: ConfState) {
        crate::MemStorage::compact(self, index, conf).expect("compact");
    }

    fn reopen(self) -> Self {
        self
    }
}
