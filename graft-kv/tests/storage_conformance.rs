//! The redb log store against graft-core's storage conformance suite, in
//! memory (fast) and on disk.

use std::sync::Arc;

use graft_core::storage_suite::{self, TestStorage};
use graft_core::{
    ConfState, Entry, HardState, Index, InitialState, SnapshotMeta, Storage, StorageError, Term,
};
use graft_kv::storage::{self, Bootstrap, Identity, RaftLogStore};
use redb::Database;

/// A `RaftLogStore` with the database it writes to, each write in its own
/// durable transaction, as graft-kv's node does.
struct Redb {
    db: Arc<Database>,
    log: RaftLogStore,
    _dir: Option<Arc<tempfile::TempDir>>,
}

impl Redb {
    fn write(
        &mut self,
        f: impl FnOnce(&mut RaftLogStore, &redb::WriteTransaction) -> Result<(), StorageError>,
    ) -> Result<(), StorageError> {
        let wtx = self.db.begin_write().map_err(|e| StorageError::Io(Box::new(e)))?;
        f(&mut self.log, &wtx)?;
        wtx.commit().map_err(|e| StorageError::Io(Box::new(e)))
    }
}

fn identity() -> Identity {
    Identity { cluster: "suite".into(), member: 1 }
}

fn in_memory(conf: ConfState) -> Redb {
    let store = storage::open_in_memory(&identity(), &Bootstrap { conf, members: vec![] }).expect("open");
    Redb { db: store.log_db, log: store.log, _dir: None }
}

fn on_disk(conf: ConfState) -> Redb {
    let dir = Arc::new(tempfile::tempdir().expect("tempdir"));
    let store = storage::open(dir.path(), &identity(), &Bootstrap { conf, members: vec![] }).expect("open");
    Redb { db: store.log_db, log: store.log, _dir: Some(dir) }
}

impl Storage for Redb {
    fn initial_state(&self) -> Result<InitialState, StorageError> {
        self.log.initial_state()
    }
    fn entries(&self, lo: Index, hi: Index, max_bytes: u64) -> Result<Vec<Entry>, StorageError> {
        self.log.entries(lo, hi, max_bytes)
    }
    fn term(&self, index: Index) -> Result<Term, StorageError> {
        self.log.term(index)
    }
    fn first_index(&self) -> Result<Index, StorageError> {
        self.log.first_index()
    }
    fn last_index(&self) -> Result<Index, StorageError> {
        self.log.last_index()
    }
    fn snapshot_meta(&self) -> Result<SnapshotMeta, StorageError> {
        self.log.snapshot_meta()
    }
}

impl TestStorage for Redb {
    fn append(&mut self, entries: &[Entry]) -> Result<(), StorageError> {
        self.write(|log, wtx| log.write(wtx, entries, None).map_err(StorageError::from))
    }
    fn set_hard_state(&mut self, hs: HardState) {
        self.write(|log, wtx| log.write(wtx, &[], Some(hs)).map_err(StorageError::from)).expect("hard state");
    }
    fn compact(&mut self, index: Index, conf: ConfState) {
        let term = self.log.term(index).expect("term at the compaction point");
        self.write(|log, wtx| log.compact(wtx, index, term, conf).map_err(StorageError::from))
            .expect("compact");
    }
    fn reopen(self) -> Self {
        let log = RaftLogStore::load(self.db.clone()).expect("reload");
        Redb { db: self.db, log, _dir: self._dir }
    }
}

#[test]
fn redb_log_store_conforms_in_memory() {
    storage_suite::run(in_memory);
}

#[test]
fn redb_log_store_conforms_on_disk() {
    storage_suite::run(on_disk);
}

#[test]
fn the_log_cache_and_the_database_agree_past_the_cache() {
    // More entries than the in-memory cache holds: old ones come from redb.
    let mut s = in_memory(ConfState::with_voters([1]));
    let ents: Vec<Entry> = (1..=10_000)
        .map(|i| Entry { index: i, term: 1 + i / 3000, payload: graft_core::EntryPayload::Noop })
        .collect();
    for chunk in ents.chunks(500) {
        s.append(chunk).unwrap();
    }
    let s = s.reopen();
    assert_eq!(s.entries(1, 10_001, u64::MAX).unwrap(), ents);
    assert_eq!(s.entries(9_990, 10_001, u64::MAX).unwrap(), ents[9_989..]);
}
