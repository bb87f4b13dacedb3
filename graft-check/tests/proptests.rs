//! Property tests: the checker against a brute-force search on small random
//! histories, and on histories linearizable by construction.

mod common;

use std::collections::BTreeMap;

use bytes::Bytes;
use common::*;
use graft_check::{check, Call, History, Operation, Outcome, Verdict, Violation};
use proptest::prelude::*;

/// The raw material of one operation, turned into an [`Operation`] by the
/// history builders below, so that shrinking works on plain numbers.
#[derive(Clone, Debug)]
struct RawOp {
    client: u64,
    key: u8,
    /// 0 get, 1 put, 2 delete, 3 cas.
    kind: u8,
    /// A value index (0..3).
    value: u8,
    /// An optional value index (3 = absent).
    other: u8,
    /// For the random generator: start and length of the interval. For the
    /// constructed one: slack before and after the linearization point.
    a: u64,
    b: u64,
    /// 0 = unknown outcome, 1 = unknown and never applied (constructed
    /// histories only), anything else = known.
    fate: u8,
    /// Picks a result for random histories.
    result: u8,
}

fn value(i: u8) -> Bytes {
    Bytes::from(vec![b'a' + i])
}

fn opt_value(i: u8) -> Option<Bytes> {
    (i < 3).then(|| value(i))
}

fn key(i: u8) -> Bytes {
    Bytes::from(vec![b'x' + i])
}

impl RawOp {
    fn call(&self) -> Call {
        match self.kind {
            0 => Call::Get,
            1 => Call::Put(value(self.value)),
            2 => Call::Delete,
            _ => Call::Cas { expected: opt_value(self.other), new: value(self.value) },
        }
    }

    /// A random outcome of the right kind.
    fn random_outcome(&self) -> Outcome {
        match self.kind {
            0 => Outcome::Get(opt_value(self.result % 4)),
            1 => Outcome::Put,
            2 => Outcome::Delete { existed: [None, Some(true), Some(false)][self.result as usize % 3] },
            _ => Outcome::Cas(self.result % 2 == 0),
        }
    }
}

fn raw_op(keys: u8) -> impl Strategy<Value = RawOp> {
    (0..3u64, 0..keys, 0..4u8, 0..3u8, 0..4u8, 0..20u64, 0..10u64, 0..6u8, any::<u8>()).prop_map(
        |(client, key, kind, value, other, a, b, fate, result)| RawOp {
            client,
            key,
            kind,
            value,
            other,
            a,
            b,
            fate,
            result,
        },
    )
}

/// Fully random operations: intervals `[a, a + b]`, random outcomes.
fn random_history(raw: &[RawOp], initial: &[u8]) -> History {
    let ops = raw.iter().map(|r| {
        let call = r.call();
        if r.fate <= 1 {
            let mut op = Operation::unknown(r.client, key(r.key), call, r.a);
            if r.fate == 1 {
                op.complete = Some(r.a + r.b);
            }
            op
        } else {
            Operation::new(r.client, key(r.key), call, r.random_outcome(), r.a, r.a + r.b)
        }
    });
    let mut h = history(ops);
    for (k, &v) in initial.iter().enumerate() {
        h.set_initial(key(k as u8), opt_value(v));
    }
    h
}

/// A history linearizable by construction: operation `i` takes effect at
/// time `100 + 10 i` (or never, for fate 1), its outcome computed from a
/// sequential register, inside the interval `[point - a, point + b]`.
/// The results of the operations at positions `perturb` (if known) are then
/// changed.
fn constructed_history(raw: &[RawOp], initial: &[u8], perturb: &[usize]) -> History {
    let mut state: BTreeMap<Bytes, Option<Bytes>> = BTreeMap::new();
    for (k, &v) in initial.iter().enumerate() {
        state.insert(key(k as u8), opt_value(v));
    }
    let mut ops = Vec::new();
    for (i, r) in raw.iter().enumerate() {
        let point = 100 + 10 * i as u64;
        let k = key(r.key);
        let call = r.call();
        let current = state.get(&k).cloned().flatten();
        let outcome = match &call {
            Call::Get => Outcome::Get(current.clone()),
            Call::Put(_) => Outcome::Put,
            Call::Delete => {
                Outcome::Delete { existed: [None, Some(current.is_some())][r.result as usize % 2] }
            }
            Call::Cas { expected, .. } => Outcome::Cas(*expected == current),
        };
        let mut op = Operation::new(r.client, k.clone(), call, outcome, point - r.a * 3, point + r.b * 3);
        if r.fate != 1 {
            let after = apply(&current, &op).expect("computed outcome");
            state.insert(k, after);
        }
        if r.fate <= 1 {
            op.outcome = Outcome::Unknown;
            if r.result % 2 == 0 {
                op.complete = None;
            }
        } else if perturb.contains(&i) {
            op.outcome = match op.outcome {
                Outcome::Get(v) => Outcome::Get(opt_value((r.result % 3 + v.map_or(3, |v| v[0] - b'a')) % 4)),
                Outcome::Delete { existed: Some(e) } => Outcome::Delete { existed: Some(!e) },
                Outcome::Cas(s) => Outcome::Cas(!s),
                other => other,
            };
        }
        ops.push(op);
    }
    let mut h = history(ops);
    for (k, &v) in initial.iter().enumerate() {
        h.set_initial(key(k as u8), opt_value(v));
    }
    h
}

/// Whether `op`, as checked, could use a state holding `state`: a read of
/// it, a compare-and-swap expecting it (or, if it failed, expecting
/// something else), a delete that reported existence matching it.
fn could_use(op: &Operation, state: &Option<Bytes>) -> bool {
    match (&op.call, &op.outcome) {
        (Call::Get, Outcome::Get(v)) => v == state,
        (Call::Cas { expected, .. }, Outcome::Cas(true) | Outcome::Unknown) => expected == state,
        (Call::Cas { expected, .. }, Outcome::Cas(false)) => expected != state,
        (Call::Delete, Outcome::Delete { existed: Some(e) }) => *e == state.is_some(),
        _ => false,
    }
}

/// The single moves the minimizer may make on `ops[i]` (as checked): the
/// resulting operation lists.
fn moves(ops: &[Operation], i: usize) -> Vec<Vec<Operation>> {
    let op = &ops[i];
    let mut result = Vec::new();
    let mut without = ops.to_vec();
    without.remove(i);
    let observer =
        matches!((&op.call, &op.outcome), (Call::Get, _) | (Call::Cas { .. }, Outcome::Cas(false)));
    let written = match &op.call {
        Call::Put(v) | Call::Cas { new: v, .. } => Some(v.clone()),
        _ => None,
    };
    if observer || !without.iter().any(|other| could_use(other, &written)) {
        result.push(without);
    }
    let mut weaker = op.clone();
    match (&op.call, &op.outcome) {
        (Call::Cas { new, .. }, Outcome::Cas(true)) => {
            weaker.call = Call::Put(new.clone());
            weaker.outcome = Outcome::Put;
        }
        (Call::Cas { new, .. }, Outcome::Unknown) => weaker.call = Call::Put(new.clone()),
        (Call::Delete, Outcome::Delete { existed: Some(_) }) => {
            weaker.outcome = Outcome::Delete { existed: None }
        }
        (Call::Put(_), Outcome::Put) | (Call::Delete, Outcome::Delete { existed: None }) => {
            weaker.outcome = Outcome::Unknown;
            weaker.complete = None;
        }
        _ => return result,
    }
    let mut weakened = ops.to_vec();
    weakened[i] = weaker;
    result.push(weakened);
    result
}

/// Asserts that a violation proves the whole history is not linearizable:
/// its operations are the history's, on its key, and every operation on the
/// key left out is an observer, or a write whose state no operation of the
/// violation (as checked) could use.
fn assert_witness(h: &History, v: &Violation) -> Result<(), TestCaseError> {
    prop_assert_eq!(v.operations.len(), v.usage.len());
    for op in &v.operations {
        prop_assert!(h.operations().contains(op));
        prop_assert_eq!(&op.key, &v.key);
    }
    let sub = v.history();
    for op in h.operations().iter().filter(|op| op.key == v.key && !v.operations.contains(op)) {
        let observer =
            matches!((&op.call, &op.outcome), (Call::Get, _) | (Call::Cas { .. }, Outcome::Cas(false)));
        let written = match &op.call {
            Call::Put(v) | Call::Cas { new: v, .. } => Some(v.clone()),
            _ => None,
        };
        prop_assert!(
            observer || !sub.operations().iter().any(|o| could_use(o, &written)),
            "{} was left out, but the violation could use what it wrote:\n{}",
            op,
            v
        );
    }
    Ok(())
}

/// Asserts the checker agrees with the brute force, and that a reported
/// violation is a non-linearizable, 1-minimal subset of the history.
fn agrees(h: &History) -> Result<(), TestCaseError> {
    let expected = brute_force(h);
    let verdict = check(h);
    match &verdict {
        Verdict::Linearizable => prop_assert!(expected, "checker: linearizable; brute force: not"),
        Verdict::GaveUp { .. } => prop_assert!(false, "gave up on a tiny history: {}", verdict),
        Verdict::NotLinearizable(v) => {
            prop_assert!(!expected, "checker: {}; brute force: linearizable", v);
            prop_assert!(v.minimal);
            let sub = v.history();
            prop_assert!(!brute_force(&sub), "the reported subset is linearizable:\n{}", v);
            assert_witness(h, v)?;
            // 1-minimal: every allowed single move makes it linearizable.
            let ops = sub.operations();
            for i in 0..ops.len() {
                for smaller in moves(ops, i) {
                    let mut smaller = history(smaller);
                    smaller.set_initial(v.key.clone(), h.initial(&v.key).cloned());
                    prop_assert!(brute_force(&smaller), "operation {} can be weakened in:\n{}", i, v);
                }
            }
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 10_000, ..ProptestConfig::default() })]

    #[test]
    fn random_histories_agree_with_brute_force(
        raw in prop::collection::vec(raw_op(2), 0..=8),
        initial in prop::collection::vec(0..4u8, 2),
    ) {
        agrees(&random_history(&raw, &initial))?;
    }

    #[test]
    fn perturbed_histories_agree_with_brute_force(
        raw in prop::collection::vec(raw_op(2), 1..=8),
        initial in prop::collection::vec(0..4u8, 2),
        perturb in any::<prop::sample::Index>(),
    ) {
        let h = constructed_history(&raw, &initial, &[perturb.index(raw.len())]);
        agrees(&h)?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 500, ..ProptestConfig::default() })]

    #[test]
    fn constructed_histories_are_linearizable(
        raw in prop::collection::vec(raw_op(3), 0..=80),
        initial in prop::collection::vec(0..4u8, 3),
    ) {
        let h = constructed_history(&raw, &initial, &[]);
        let verdict = check(&h);
        prop_assert!(verdict.is_linearizable(), "{}", verdict);
    }

    #[test]
    fn small_constructed_histories_agree_with_brute_force(
        raw in prop::collection::vec(raw_op(1), 0..=7),
        initial in prop::collection::vec(0..4u8, 1),
    ) {
        let h = constructed_history(&raw, &initial, &[]);
        prop_assert!(brute_force(&h));
        prop_assert!(check(&h).is_linearizable());
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    /// Histories too long for the brute force: the verdict does not depend
    /// on the order operations were pushed in, and a violation is itself not
    /// linearizable and proves the history is not.
    #[test]
    fn medium_perturbed_histories_are_consistent(
        raw in prop::collection::vec(raw_op(2), 8..=40),
        initial in prop::collection::vec(0..4u8, 2),
        perturb in prop::collection::vec(any::<prop::sample::Index>(), 0..3),
    ) {
        let perturb: Vec<usize> = perturb.iter().map(|p| p.index(raw.len())).collect();
        let h = constructed_history(&raw, &initial, &perturb);
        let verdict = check(&h);
        let mut reversed = history(h.operations().iter().rev().cloned());
        for k in 0..2u8 {
            reversed.set_initial(key(k), h.initial(&key(k)).cloned());
        }
        prop_assert_eq!(verdict.is_linearizable(), check(&reversed).is_linearizable());
        if perturb.is_empty() {
            prop_assert!(verdict.is_linearizable(), "{}", verdict);
        }
        if let Verdict::NotLinearizable(v) = &verdict {
            prop_assert!(v.minimal, "{}", v);
            prop_assert!(!check(&v.history()).is_linearizable(), "{}", v);
            assert_witness(&h, v)?;
        }
    }
}
