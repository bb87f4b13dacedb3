//! Hand-written histories, linearizable and not.

mod common;

use common::*;
use graft_check::{
    check, check_with, Call, GiveUpReason, History, HistoryError, Limits, Operation, Outcome, Usage, Verdict,
};

fn assert_linearizable(h: &History) {
    let verdict = check(h);
    assert!(verdict.is_linearizable(), "expected linearizable, got:\n{verdict}");
    assert!(brute_force(h), "brute force disagrees");
}

/// Checks that the history is not linearizable and that the reported
/// violation is exactly `expected` (in invocation order, with whether each
/// outcome was relaxed) and minimal.
fn assert_violation(h: &History, expected: &[(Operation, Usage)]) {
    let verdict = check(h);
    let Some(violation) = verdict.violation() else { panic!("expected a violation, got {verdict}") };
    assert!(!brute_force(h), "brute force disagrees");
    assert!(!brute_force(&violation.history()), "the violation is linearizable:\n{violation}");
    assert!(violation.minimal, "{violation}");
    let got: Vec<(Operation, Usage)> =
        violation.operations.iter().cloned().zip(violation.usage.iter().copied()).collect();
    assert_eq!(got, expected, "\n{violation}");
    let report = violation.to_string();
    let footnote = usize::from(violation.usage.contains(&Usage::Optional))
        + usize::from(violation.usage.contains(&Usage::WriteOnly));
    assert_eq!(report.lines().count(), 2 + expected.len() + footnote, "{report}");
}

/// The operation, used as recorded.
fn k(op: Operation) -> (Operation, Usage) {
    (op, Usage::Recorded)
}

/// The operation, used as an optional write.
fn r(op: Operation) -> (Operation, Usage) {
    (op, Usage::Optional)
}

// ---- linearizable ----------------------------------------------------------

#[test]
fn empty_history_is_linearizable() {
    assert_linearizable(&History::new());
}

#[test]
fn sequential_history() {
    assert_linearizable(&history([
        get(1, "k", None, 0, 1),
        put(1, "k", "a", 2, 3),
        get(2, "k", Some("a"), 4, 5),
        put(2, "k", "b", 6, 7),
        get(1, "k", Some("b"), 8, 9),
        del(1, "k", Some(true), 10, 11),
        get(2, "k", None, 12, 13),
        del(2, "k", Some(false), 14, 15),
        del(2, "k", None, 16, 17),
    ]));
}

#[test]
fn concurrent_reads_see_either_side_of_a_write() {
    assert_linearizable(&history([
        put(1, "k", "a", 0, 1),
        put(1, "k", "b", 10, 100),
        get(2, "k", Some("b"), 20, 30),
        get(3, "k", Some("a"), 5, 40),
        get(2, "k", Some("b"), 40, 50),
        get(3, "k", Some("b"), 101, 102),
    ]));
}

#[test]
fn touching_intervals_are_concurrent() {
    // The read is invoked exactly when the write completes: either order.
    assert_linearizable(&history([put(1, "k", "a", 0, 10), get(2, "k", None, 10, 20)]));
}

#[test]
fn concurrent_writes_in_either_order() {
    assert_linearizable(&history([
        put(1, "k", "a", 0, 10),
        put(2, "k", "b", 0, 10),
        get(3, "k", Some("a"), 11, 12),
        put(1, "k", "c", 20, 30),
        put(2, "k", "d", 20, 30),
        get(3, "k", Some("d"), 31, 32),
    ]));
}

#[test]
fn cas_chain() {
    assert_linearizable(&history([
        cas(1, "k", None, "1", true, 0, 10),
        cas(2, "k", Some("1"), "2", true, 5, 15),
        cas(3, "k", Some("1"), "x", false, 6, 20),
        cas(1, "k", Some("2"), "3", true, 12, 25),
        cas(2, "k", None, "y", false, 30, 31),
        get(3, "k", Some("3"), 32, 33),
    ]));
}

#[test]
fn concurrent_cas_exactly_one_wins() {
    assert_linearizable(&history([
        put(1, "k", "0", 0, 1),
        cas(1, "k", Some("0"), "1", false, 10, 20),
        cas(2, "k", Some("0"), "2", true, 10, 20),
        get(3, "k", Some("2"), 21, 22),
    ]));
}

#[test]
fn unknown_write_that_took_effect() {
    assert_linearizable(&history([
        put(1, "k", "a", 0, 1),
        unknown_put(2, "k", "b", 5),
        put(1, "k", "c", 10, 20),
        get(3, "k", Some("c"), 21, 22),
        // The lost write lands late, after c.
        get(3, "k", Some("b"), 30, 40),
        get(1, "k", Some("b"), 50, 60),
    ]));
}

#[test]
fn unknown_write_that_never_took_effect() {
    assert_linearizable(&history([
        put(1, "k", "a", 0, 1),
        unknown_put(2, "k", "b", 5),
        get(3, "k", Some("a"), 10, 20),
        get(3, "k", Some("a"), 1000, 1001),
    ]));
}

#[test]
fn unknown_cas_and_delete() {
    let mut ops = vec![
        put(1, "k", "a", 0, 1),
        unknown_cas(2, "k", Some("a"), "b", 2),
        Operation::unknown(3, b("k"), Call::Delete, 3),
        get(1, "k", Some("b"), 10, 11),
        get(1, "k", None, 12, 13),
    ];
    assert_linearizable(&history(ops.clone()));
    // ...but the unknown delete cannot take effect twice.
    ops.push(put(1, "k", "c", 14, 15));
    ops.push(get(1, "k", None, 16, 17));
    assert!(!check(&history(ops)).is_linearizable());
}

#[test]
fn unknown_reads_are_ignored() {
    assert_linearizable(&history([
        put(1, "k", "a", 0, 1),
        Operation::unknown(2, b("k"), Call::Get, 0),
        get(1, "k", Some("a"), 2, 3),
    ]));
}

#[test]
fn delete_semantics() {
    assert_linearizable(&history([
        del(1, "k", Some(false), 0, 1),
        put(1, "k", "a", 2, 3),
        del(2, "k", Some(true), 4, 10),
        del(3, "k", Some(false), 5, 11),
        get(1, "k", None, 12, 13),
    ]));
    let h = history([put(1, "k", "a", 0, 1), del(2, "k", Some(false), 2, 3)]);
    assert_violation(&h, &[k(put(1, "k", "a", 0, 1)), k(del(2, "k", Some(false), 2, 3))]);
}

#[test]
fn initial_values() {
    let mut h = history([get(1, "k", Some("init"), 0, 1), get(1, "j", None, 0, 1)]);
    h.set_initial(b("k"), Some(b("init")));
    assert_linearizable(&h);
    h.set_initial(b("k"), None);
    let verdict = check(&h);
    assert_eq!(verdict.violation().unwrap().operations, [get(1, "k", Some("init"), 0, 1)]);
}

#[test]
fn keys_are_independent() {
    assert_linearizable(&history([
        put(1, "x", "1", 0, 10),
        put(2, "y", "1", 0, 10),
        get(1, "x", Some("1"), 11, 12),
        get(2, "y", Some("1"), 11, 12),
        get(3, "z", None, 0, 100),
    ]));
}

// ---- not linearizable ------------------------------------------------------

#[test]
fn stale_read_after_completed_write() {
    let h = history([
        put(1, "k", "1", 0, 10),
        get(3, "k", Some("1"), 12, 15),
        put(2, "k", "2", 20, 30),
        put(4, "other", "z", 31, 32),
        get(1, "k", Some("2"), 32, 35),
        get(3, "k", Some("1"), 40, 50),
        get(2, "k", Some("1"), 60, 70),
    ]);
    assert_violation(
        &h,
        &[k(put(1, "k", "1", 0, 10)), k(put(2, "k", "2", 20, 30)), k(get(3, "k", Some("1"), 40, 50))],
    );
}

#[test]
fn read_of_a_value_never_written() {
    let h = history([
        put(1, "k", "1", 0, 10),
        get(2, "k", Some("1"), 11, 12),
        get(2, "k", Some("ghost"), 20, 30),
        put(1, "k", "2", 40, 50),
    ]);
    assert_violation(&h, &[k(get(2, "k", Some("ghost"), 20, 30))]);
}

#[test]
fn lost_update_two_cas_from_the_same_value() {
    let h = history([
        put(1, "k", "0", 0, 1),
        get(3, "k", Some("0"), 2, 3),
        cas(1, "k", Some("0"), "1", true, 10, 20),
        cas(2, "k", Some("0"), "2", true, 12, 22),
        get(3, "k", Some("2"), 30, 31),
    ]);
    assert_violation(
        &h,
        &[
            // Even if the put's acknowledgement was not trusted, both swaps
            // cannot have seen "0".
            r(put(1, "k", "0", 0, 1)),
            k(cas(1, "k", Some("0"), "1", true, 10, 20)),
            k(cas(2, "k", Some("0"), "2", true, 12, 22)),
        ],
    );
}

#[test]
fn lost_update_with_initial_value() {
    let mut h =
        history([cas(1, "k", Some("0"), "1", true, 10, 20), cas(2, "k", Some("0"), "2", true, 12, 22)]);
    h.set_initial(b("k"), Some(b("0")));
    assert_violation(
        &h,
        &[k(cas(1, "k", Some("0"), "1", true, 10, 20)), k(cas(2, "k", Some("0"), "2", true, 12, 22))],
    );
}

#[test]
fn non_monotonic_sequential_reads() {
    let h = history([
        put(1, "k", "1", 0, 5),
        put(2, "k", "2", 10, 100),
        get(3, "k", Some("2"), 20, 30),
        get(3, "k", Some("1"), 40, 50),
        get(4, "k", Some("2"), 101, 110),
    ]);
    assert_violation(
        &h,
        &[
            k(put(1, "k", "1", 0, 5)),
            // Wherever "2" took effect, it was after "1" was written.
            r(put(2, "k", "2", 10, 100)),
            k(get(3, "k", Some("2"), 20, 30)),
            k(get(3, "k", Some("1"), 40, 50)),
        ],
    );
}

#[test]
fn acknowledged_write_vanished() {
    let h = history([
        get(2, "k", None, 0, 1),
        put(1, "k", "a", 5, 10),
        put(3, "j", "a", 5, 10),
        get(2, "k", None, 20, 30),
        get(2, "j", Some("a"), 20, 30),
    ]);
    assert_violation(&h, &[k(put(1, "k", "a", 5, 10)), k(get(2, "k", None, 20, 30))]);
}

#[test]
fn unknown_write_cannot_take_effect_before_invocation() {
    let h = history([get(1, "k", Some("a"), 0, 10), unknown_put(2, "k", "a", 20)]);
    assert_violation(&h, &[k(get(1, "k", Some("a"), 0, 10)), k(unknown_put(2, "k", "a", 20))]);
}

#[test]
fn unknown_write_takes_effect_at_most_once() {
    let h = history([
        unknown_put(1, "k", "a", 0),
        get(2, "k", Some("a"), 10, 20),
        put(3, "k", "b", 30, 40),
        get(2, "k", Some("a"), 50, 60),
    ]);
    assert_violation(
        &h,
        &[
            k(unknown_put(1, "k", "a", 0)),
            k(get(2, "k", Some("a"), 10, 20)),
            k(put(3, "k", "b", 30, 40)),
            k(get(2, "k", Some("a"), 50, 60)),
        ],
    );
}

#[test]
fn report_is_readable() {
    let h = history([put(1, "k", "1", 0, 10), put(2, "k", "2", 20, 30), get(3, "k", Some("1"), 40, 50)]);
    let report = check(&h).to_string();
    let expected = "\
key \"k\" is not linearizable (initial value: absent)
a minimal set of 3 of its 3 operations with no linearization, by invocation time:
  client 1  put \"1\"  -> ok   [0, 10]
  client 2  put \"2\"  -> ok   [20, 30]
  client 3  get      -> \"1\"  [40, 50]
";
    assert_eq!(report, expected);
}

// ---- validation, limits, serde ---------------------------------------------

#[test]
fn push_validates_operations() {
    let mut h = History::new();
    let err = h.push(Operation::new(1, b("k"), Call::Get, Outcome::Put, 0, 1)).unwrap_err();
    assert!(matches!(err, HistoryError::OutcomeMismatch { index: 0, .. }), "{err}");
    let err = h.push(put(1, "k", "a", 5, 4)).unwrap_err();
    assert_eq!(err, HistoryError::CompletesBeforeInvoke { index: 0, invoke: 5, complete: 4 });
    let mut op = put(1, "k", "a", 5, 6);
    op.complete = None;
    assert_eq!(h.push(op).unwrap_err(), HistoryError::MissingCompletion { index: 0 });
    assert!(h.is_empty());
}

#[test]
fn gives_up_when_the_budget_is_exhausted() {
    let limits = Limits { max_states: 1000, ..Limits::default() };
    let verdict = check_with(&hard_history(20), &limits);
    assert!(
        matches!(&verdict, Verdict::GaveUp { reason: GiveUpReason::StateLimit { states: 1001 }, .. }),
        "{verdict}"
    );
    let limits = Limits { max_cache_bytes: 1 << 20, ..Limits::default() };
    let verdict = check_with(&hard_history(20), &limits);
    assert!(
        matches!(&verdict, Verdict::GaveUp { reason: GiveUpReason::MemoryLimit { .. }, .. }),
        "{verdict}"
    );
}

#[test]
fn a_violation_elsewhere_beats_giving_up() {
    let mut ops = hard_history(20).operations().to_vec();
    ops.extend([put(1, "j", "a", 0, 1), get(2, "j", None, 2, 3)]);
    let limits = Limits { max_states: 1000, ..Limits::default() };
    let verdict = check_with(&history(ops), &limits);
    assert_eq!(verdict.violation().map(|v| &v.key[..]), Some(&b"j"[..]), "{verdict}");
}

#[test]
fn serde_round_trip() {
    let mut h =
        history([put(1, "k", "a", 0, 10), unknown_put(2, "k", "b", 5), get(3, "k", Some("a"), 11, 12)]);
    h.set_initial(b("k"), Some(b("init")));
    let encoded = postcard::to_allocvec(&h).unwrap();
    let decoded: History = postcard::from_bytes(&encoded).unwrap();
    assert_eq!(decoded, h);

    // Deserializing validates: operations are public, so an invalid one can
    // be serialized in the same shape.
    #[derive(serde::Serialize)]
    struct Repr {
        initial: Vec<(bytes::Bytes, bytes::Bytes)>,
        operations: Vec<Operation>,
    }
    let valid = Repr { initial: vec![], operations: vec![put(1, "k", "a", 0, 10)] };
    let encoded = postcard::to_allocvec(&valid).unwrap();
    assert_eq!(postcard::from_bytes::<History>(&encoded).unwrap(), history([put(1, "k", "a", 0, 10)]));
    let invalid = Repr { initial: vec![], operations: vec![put(1, "k", "a", 10, 0)] };
    let encoded = postcard::to_allocvec(&invalid).unwrap();
    assert!(postcard::from_bytes::<History>(&encoded).is_err());
}

#[test]
fn print_a_report() {
    let mut gave_up = unknown_put(4, "k\n", "\u{1}bin", 3);
    gave_up.complete = Some(5);
    let h = history([
        put(1, "k\n", "1", 0, 10),
        gave_up,
        get(3, "k\n", Some("\u{1}bin"), 10, 20),
        put(2, "k\n", "2", 30, 40),
        get(3, "k\n", Some("\u{1}bin"), 50, 60),
    ]);
    println!("{}", check(&h));
}
