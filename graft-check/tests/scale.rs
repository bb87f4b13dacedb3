//! Larger simulated histories: thousands of operations per key.

mod common;

use std::time::{Duration, Instant};

use common::*;
use graft_check::{check, check_with, Call, GiveUpReason, History, Limits, Operation, Outcome, Verdict};

fn timed_check(name: &str, h: &History) -> Verdict {
    let start = Instant::now();
    let verdict = check(h);
    eprintln!("{name}: {} operations checked in {:?}", h.len(), start.elapsed());
    verdict
}

#[test]
fn five_clients_unique_values() {
    let sim = Sim { seed: 1, clients: 5, ops_per_client: 2000, keys: 4, alphabet: 0, unknown_percent: 0 };
    let h = simulate(&sim);
    let verdict = timed_check("unique values", &h);
    assert!(verdict.is_linearizable(), "{verdict}");
}

#[test]
fn five_clients_one_key_with_unknown_outcomes() {
    let sim = Sim { seed: 2, clients: 5, ops_per_client: 1000, keys: 1, alphabet: 0, unknown_percent: 3 };
    let h = simulate(&sim);
    let verdict = timed_check("one key, 3% unknown", &h);
    assert!(verdict.is_linearizable(), "{verdict}");
}

#[test]
fn five_clients_small_alphabet_with_unknown_outcomes() {
    for seed in 0..4 {
        let sim = Sim { seed, clients: 5, ops_per_client: 1000, keys: 3, alphabet: 3, unknown_percent: 2 };
        let h = simulate(&sim);
        let verdict = timed_check("3 values, 2% unknown", &h);
        assert!(verdict.is_linearizable(), "seed {seed}: {verdict}");
    }
}

/// Turns one read into a stale read: it returns the value of a put that was
/// overwritten by another put, both completed before the read began. The
/// put is the latest such one if `recent`, else the earliest.
fn inject_stale_read(h: &History, recent: bool) -> (History, Operation) {
    let mut ops = h.operations().to_vec();
    let puts: Vec<usize> =
        (0..ops.len()).filter(|&i| matches!(ops[i].call, Call::Put(_)) && !ops[i].is_unknown()).collect();
    for g in (ops.len() / 2)..ops.len() {
        if ops[g].call != Call::Get || ops[g].is_unknown() {
            continue;
        }
        let key = &ops[g].key;
        let before = |i: usize, j: usize| ops[i].complete.unwrap() < ops[j].invoke;
        let is_stale = |&p: &usize| {
            ops[p].key == *key
                && before(p, g)
                && puts.iter().any(|&q| ops[q].key == *key && before(p, q) && before(q, g))
        };
        let stale = if recent {
            puts.iter().copied().rev().find(is_stale)
        } else {
            puts.iter().copied().find(is_stale)
        };
        if let Some(p) = stale {
            let Call::Put(value) = ops[p].call.clone() else { unreachable!() };
            ops[g].outcome = Outcome::Get(Some(value));
            let read = ops[g].clone();
            let mut mutated = History::from_operations(ops).unwrap();
            for key in ["key0", "key1", "key2", "key3"] {
                mutated.set_initial(b(key), h.initial(key.as_bytes()).cloned());
            }
            return (mutated, read);
        }
    }
    panic!("no read to make stale");
}

#[test]
fn stale_read_in_a_long_history_is_found_and_minimized() {
    let sim = Sim { seed: 3, clients: 5, ops_per_client: 2000, keys: 4, alphabet: 0, unknown_percent: 1 };
    let (h, read) = inject_stale_read(&simulate(&sim), false);
    let verdict = timed_check("stale read", &h);
    let Verdict::NotLinearizable(violation) = &verdict else { panic!("{verdict}") };
    eprintln!("{violation}");
    assert!(violation.minimal);
    assert!(violation.operations.contains(&read), "{violation}");
    assert!(violation.operations.len() <= 4, "{violation}");
}

#[test]
fn pathological_history_hits_the_time_limit() {
    let limits = Limits { time_limit: Some(Duration::from_millis(200)), ..Limits::default() };
    let start = Instant::now();
    let verdict = check_with(&hard_history(40), &limits);
    assert!(matches!(&verdict, Verdict::GaveUp { reason: GiveUpReason::TimeLimit, .. }), "{verdict}");
    assert!(start.elapsed() < Duration::from_secs(5));
}

#[test]
fn ten_clients_stale_reads() {
    let sim = Sim { seed: 4, clients: 10, ops_per_client: 300, keys: 2, alphabet: 0, unknown_percent: 3 };
    let h = simulate(&sim);
    assert!(timed_check("ten clients", &h).is_linearizable());
    for recent in [false, true] {
        let (h, read) = inject_stale_read(&h, recent);
        let verdict = timed_check(&format!("ten clients, stale read (recent: {recent})"), &h);
        let Verdict::NotLinearizable(violation) = &verdict else { panic!("{verdict}") };
        eprintln!("{violation}");
        assert!(violation.minimal);
        assert!(violation.operations.contains(&read), "{violation}");
    }
}
