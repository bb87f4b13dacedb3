//! The lease table on its own: deadlines across terms (clocks), renewal,
//! the expiry index, attached keys.

use redb::backends::InMemoryBackend;
use redb::{Database, ReadableDatabase};

use super::*;

fn db() -> Database {
    Database::builder().create_with_backend(InMemoryBackend::new()).unwrap()
}

/// Runs `f` in one write transaction with the clock `clock`, returning
/// the clock after.
fn write(db: &Database, clock: LeaseClock, f: impl FnOnce(&mut LeaseWriter<'_>)) -> LeaseClock {
    let wtx = db.begin_write().unwrap();
    let clock = {
        let mut w = LeaseWriter::open(&wtx, clock).unwrap();
        f(&mut w);
        w.clock
    };
    wtx.commit().unwrap();
    clock
}

fn due_at(db: &Database, now: u64) -> Vec<u64> {
    let rtx = db.begin_read().unwrap();
    due(&rtx.open_table(LEASES).unwrap(), now, 100).unwrap()
}

#[test]
fn a_new_term_keeps_each_lease_s_remaining_time_in_the_new_leader_s_clock() {
    let db = db();
    // Term 2's leader's clock reads 1,000,000 when lease 7 is granted 10 s.
    let clock = write(&db, LeaseClock::default(), |w| {
        w.on_command(2, 1_000_000).unwrap();
        assert!(w.grant(7, 10_000).unwrap());
        assert!(!w.grant(7, 5_000).unwrap(), "an existing id is refused");
    });
    // Three seconds later in that clock, the last entry of term 2.
    let clock = write(&db, clock, |w| w.on_command(2, 1_003_000).unwrap());
    // Term 3's leader's clock is 500 s behind: the lease keeps its 7 s.
    let clock = write(&db, clock, |w| {
        w.on_command(3, 500_000).unwrap();
        assert_eq!(w.get(7).unwrap().unwrap().deadline_ms, 507_000);
        assert!(!w.expired(7).unwrap());
    });
    assert_eq!(clock, LeaseClock { term: 3, ms: 500_000 });
    assert!(due_at(&db, 506_999).is_empty());
    assert_eq!(due_at(&db, 507_000), [7]);
    // A clock running backwards within a term is ignored.
    let clock = write(&db, clock, |w| w.on_command(3, 400_000).unwrap());
    assert_eq!(clock.ms, 500_000);
}

#[test]
fn a_keepalive_renews_for_the_full_ttl_and_moves_the_index() {
    let db = db();
    let clock = write(&db, LeaseClock::default(), |w| {
        w.on_command(1, 0).unwrap();
        w.grant(1, 1000).unwrap();
        w.grant(2, 5000).unwrap();
    });
    assert_eq!(due_at(&db, 1000), [1]);
    let clock = write(&db, clock, |w| {
        w.on_command(1, 900).unwrap();
        assert_eq!(w.keep_alive(1).unwrap().map(|r| r.deadline_ms), Some(1900));
        assert_eq!(w.keep_alive(99).unwrap(), None);
    });
    assert!(due_at(&db, 1000).is_empty());
    assert_eq!(due_at(&db, 6000), [1, 2], "soonest first");
    write(&db, clock, |w| {
        w.on_command(1, 2000).unwrap();
        assert!(w.expired(1).unwrap());
        assert!(!w.expired(2).unwrap());
    });
}

#[test]
fn removing_a_lease_returns_its_keys_and_forgets_them() {
    let db = db();
    write(&db, LeaseClock::default(), |w| {
        w.on_command(1, 0).unwrap();
        w.grant(5, 1000).unwrap();
        w.grant(6, 1000).unwrap();
        w.attach(5, b"a").unwrap();
        w.attach(5, b"b").unwrap();
        w.attach(6, b"c").unwrap();
        w.detach(5, b"b").unwrap();
    });
    let rtx = db.begin_read().unwrap();
    let t = rtx.open_table(LEASES).unwrap();
    let (rec, keys) = describe(&t, 5).unwrap().unwrap();
    assert_eq!((rec.ttl_ms, keys), (1000, vec![Bytes::from("a")]));
    assert_eq!(list(&t).unwrap().iter().map(|(id, _)| *id).collect::<Vec<_>>(), [5, 6]);
    drop((t, rtx));
    write(&db, LeaseClock { term: 1, ms: 0 }, |w| {
        assert_eq!(w.remove(5).unwrap(), Some(vec![Bytes::from("a")]));
        assert_eq!(w.remove(5).unwrap(), None);
    });
    let rtx = db.begin_read().unwrap();
    let t = rtx.open_table(LEASES).unwrap();
    assert!(describe(&t, 5).unwrap().is_none());
    assert_eq!(describe(&t, 6).unwrap().map(|(_, k)| k), Some(vec![Bytes::from("c")]));
    assert_eq!(due(&t, u64::MAX, 10).unwrap(), [6]);
}
