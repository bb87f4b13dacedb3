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

/// The lease table against a plain model, over seeded random runs of
/// terms, clock steps, grants, keepalives, attachments and removals: after
/// every step the expiry index gives exactly the model's due leases in
/// deadline order (then id), every lease's record and keys match, and
/// nothing stale lingers in the index (a phantom expiry) or is missing
/// from it (a lease that never expires).
#[test]
fn expiry_order_matches_a_model_over_random_runs() {
    use std::collections::{BTreeMap, BTreeSet};

    use graft_core::rng::Rng;

    let seeds: u64 = std::env::var("GRAFT_LEASE_SEEDS").ok().and_then(|s| s.parse().ok()).unwrap_or(40);
    for seed in 0..seeds {
        let replay =
            format!("seed {seed}: GRAFT_LEASE_SEEDS={} cargo test -p graft-kv --lib expiry_order", seed + 1);
        let mut rng = Rng::new(seed);
        let db = db();
        let mut clock = write(&db, LeaseClock::default(), |w| w.on_command(1, 0).unwrap());
        // The model: id -> (ttl, deadline, keys), and its own clock.
        let mut model: BTreeMap<u64, (u64, u64, BTreeSet<Bytes>)> = BTreeMap::new();
        let (mut term, mut ms) = (1u64, 0u64);
        for step in 0..300 {
            let choice = rng.range(0, 10);
            clock = write(&db, clock, |w| match choice {
                // A command of the current term, the clock moving on (or back).
                0..=2 => {
                    let t = if rng.chance(0.1) {
                        ms.saturating_sub(rng.range(0, 500))
                    } else {
                        ms + rng.range(0, 2_000)
                    };
                    w.on_command(term, t).unwrap();
                    ms = ms.max(t);
                }
                // A new term whose leader's clock is anywhere.
                3 => {
                    let t = rng.range(0, 1_000_000);
                    w.on_command(term + 1, t).unwrap();
                    for (_, deadline, _) in model.values_mut() {
                        *deadline = t + deadline.saturating_sub(ms);
                    }
                    term += 1;
                    ms = t;
                }
                4..=5 => {
                    let id = rng.range(1, 20);
                    let ttl = rng.range(1, 10_000);
                    let fresh = !model.contains_key(&id);
                    assert_eq!(w.grant(id, ttl).unwrap(), fresh, "{replay}");
                    if fresh {
                        model.insert(id, (ttl, ms + ttl, BTreeSet::new()));
                    }
                }
                6 => {
                    let id = rng.range(1, 20);
                    let got = w.keep_alive(id).unwrap().map(|r| r.deadline_ms);
                    let want = model.get_mut(&id).map(|(ttl, d, _)| {
                        *d = ms + *ttl;
                        *d
                    });
                    assert_eq!(got, want, "{replay}");
                }
                7..=8 => {
                    if let Some(&id) = model.keys().nth(rng.range(0, model.len().max(1) as u64) as usize) {
                        let key = Bytes::from(format!("k{}", rng.range(0, 5)));
                        w.attach(id, &key).unwrap();
                        model.get_mut(&id).map(|(_, _, keys)| keys.insert(key));
                    }
                }
                _ => {
                    let id = rng.range(1, 20);
                    let got = w.remove(id).unwrap();
                    let want = model.remove(&id).map(|(_, _, keys)| keys.into_iter().collect::<Vec<_>>());
                    assert_eq!(got, want, "{replay}");
                }
            });
            assert_eq!(clock.ms, ms, "{replay}, step {step}");
            // Due leases at several instants, in deadline order.
            for now in [ms, ms + 1_000, ms + 5_000, u64::MAX / 2] {
                let mut want: Vec<(u64, u64)> = model
                    .iter()
                    .filter(|(_, (_, d, _))| *d <= now)
                    .map(|(id, (_, d, _))| (*d, *id))
                    .collect();
                want.sort_unstable();
                let want: Vec<u64> = want.into_iter().map(|(_, id)| id).collect();
                assert_eq!(due_at(&db, now), want, "{replay}, step {step}, now {now}");
            }
            let rtx = db.begin_read().unwrap();
            let table = rtx.open_table(LEASES).unwrap();
            let listed: Vec<(u64, u64, u64)> =
                list(&table).unwrap().into_iter().map(|(id, r)| (id, r.ttl_ms, r.deadline_ms)).collect();
            let want: Vec<(u64, u64, u64)> = model.iter().map(|(id, (t, d, _))| (*id, *t, *d)).collect();
            assert_eq!(listed, want, "{replay}, step {step}");
            for (id, (_, _, keys)) in &model {
                let (_, got) = describe(&table, *id).unwrap().unwrap();
                assert_eq!(got, keys.iter().cloned().collect::<Vec<_>>(), "{replay}, step {step}");
            }
        }
    }
}
