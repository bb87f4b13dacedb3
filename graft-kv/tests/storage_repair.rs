//! A crash between the two transactions of a snapshot install (state
//! machine first, then log) is repaired when the member starts; a crash
//! while applying alongside a log append needs no repair.

use bytes::Bytes;
use graft_core::{ConfState, Entry, EntryPayload, Storage};
use graft_kv::storage::{self, Bootstrap, Identity, StagedSnapshot};

fn bootstrap() -> Bootstrap {
    Bootstrap { conf: ConfState::with_voters([1, 2, 3]), members: vec![(1, "a:1".into()), (2, "b:1".into())] }
}

fn noop(index: u64, term: u64) -> Entry {
    Entry { index, term, payload: EntryPayload::Noop }
}

#[test]
fn a_state_machine_ahead_of_the_log_resets_the_log_after_it() {
    let dir = tempfile::tempdir().unwrap();
    // A leader's state at index 20 (term 2), as a snapshot would carry it.
    let leader_dir = tempfile::tempdir().unwrap();
    let leader =
        storage::open(leader_dir.path(), &Identity { cluster: "c".into(), member: 1 }, &bootstrap()).unwrap();
    let entries: Vec<Entry> = (1..=20).map(|i| noop(i, if i <= 10 { 1 } else { 2 })).collect();
    let mut sm = leader.sm.clone();
    let wtx = leader.sm_db.begin_write().unwrap();
    sm.apply(&wtx, &entries).unwrap();
    wtx.commit().unwrap();
    let state: Bytes = sm.export_meta().unwrap();

    // A follower whose log ends at 5, in another term: it receives the
    // snapshot, installs the state machine, and crashes before the log part.
    let me = Identity { cluster: "c".into(), member: 2 };
    {
        let mut f = storage::open(dir.path(), &me, &bootstrap()).unwrap();
        let wtx = f.log_db.begin_write().unwrap();
        f.log.write(&wtx, &(1..=5).map(|i| noop(i, 1)).collect::<Vec<_>>(), None).unwrap();
        wtx.commit().unwrap();
        storage::state_machine::stage_begin(&f.sm_db).unwrap();
        let wtx = f.sm_db.begin_write().unwrap();
        f.sm.install(&wtx, &StagedSnapshot { index: 20, state }).unwrap();
        wtx.commit().unwrap();
    }
    let f = storage::open(dir.path(), &me, &bootstrap()).unwrap();
    assert_eq!(f.sm.applied(), 20);
    assert_eq!(f.log.base().index, 20, "the log restarts after the installed state");
    assert_eq!(f.log.term(20).unwrap(), 2);
    assert_eq!(f.log.last_index().unwrap(), 20);
}

#[test]
fn a_crash_while_applying_alongside_a_log_append_needs_no_repair() {
    // The node applies committed entries on one thread while the next
    // entries are appended on another. Committed entries are always in the
    // durable log already (the core hands them out only up to the persisted
    // index), so a crash with the state machine durable and the append lost
    // leaves the log whole up to the applied index.
    let dir = tempfile::tempdir().unwrap();
    let me = Identity { cluster: "c".into(), member: 2 };
    {
        let mut f = storage::open(dir.path(), &me, &bootstrap()).unwrap();
        let durable: Vec<Entry> = (1..=6).map(|i| noop(i, 1)).collect();
        let wtx = f.log_db.begin_write().unwrap();
        f.log.write(&wtx, &durable, None).unwrap();
        wtx.commit().unwrap();
        // The append of 7..=8 is in flight and never commits (dropped).
        let wtx = f.log_db.begin_write().unwrap();
        f.log.write(&wtx, &[noop(7, 1), noop(8, 1)], None).unwrap();
        // Meanwhile 1..=6 are applied, durably.
        let sm_tx = f.sm_db.begin_write().unwrap();
        f.sm.apply(&sm_tx, &durable).unwrap();
        sm_tx.commit().unwrap();
        drop(wtx);
    }
    let f = storage::open(dir.path(), &me, &bootstrap()).unwrap();
    assert_eq!((f.sm.applied(), f.sm.applied_term()), (6, 1));
    assert_eq!((f.log.base().index, f.log.last_index().unwrap()), (0, 6), "the durable log is kept whole");
}

#[test]
fn a_state_machine_behind_the_log_base_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let me = Identity { cluster: "c".into(), member: 2 };
    {
        let mut f = storage::open(dir.path(), &me, &bootstrap()).unwrap();
        let wtx = f.log_db.begin_write().unwrap();
        f.log.write(&wtx, &(1..=10).map(|i| noop(i, 1)).collect::<Vec<_>>(), None).unwrap();
        f.log.compact(&wtx, 8, 1, ConfState::with_voters([1, 2, 3])).unwrap();
        wtx.commit().unwrap();
    }
    match storage::open(dir.path(), &me, &bootstrap()) {
        Err(e) => assert!(e.to_string().contains("applied index 0 is behind the log"), "{e}"),
        Ok(_) => panic!("a state machine behind the log's base must be refused"),
    }
}
