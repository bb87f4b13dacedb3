//! Helpers shared by the integration tests: operation constructors, a
//! brute-force linearizability checker, and a seeded history generator.

#![allow(dead_code)]

use std::collections::BTreeMap;

use bytes::Bytes;
use graft_check::{Call, History, Operation, Outcome};

pub fn b(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

pub fn put(client: u64, key: &str, value: &str, invoke: u64, complete: u64) -> Operation {
    Operation::new(client, b(key), Call::Put(b(value)), Outcome::Put, invoke, complete)
}

pub fn get(client: u64, key: &str, observed: Option<&str>, invoke: u64, complete: u64) -> Operation {
    Operation::new(client, b(key), Call::Get, Outcome::Get(observed.map(b)), invoke, complete)
}

pub fn del(client: u64, key: &str, existed: Option<bool>, invoke: u64, complete: u64) -> Operation {
    Operation::new(client, b(key), Call::Delete, Outcome::Delete { existed }, invoke, complete)
}

pub fn cas(
    client: u64,
    key: &str,
    expected: Option<&str>,
    new: &str,
    swapped: bool,
    invoke: u64,
    complete: u64,
) -> Operation {
    let call = Call::Cas { expected: expected.map(b), new: b(new) };
    Operation::new(client, b(key), call, Outcome::Cas(swapped), invoke, complete)
}

pub fn unknown_put(client: u64, key: &str, value: &str, invoke: u64) -> Operation {
    Operation::unknown(client, b(key), Call::Put(b(value)), invoke)
}

pub fn unknown_cas(client: u64, key: &str, expected: Option<&str>, new: &str, invoke: u64) -> Operation {
    Operation::unknown(client, b(key), Call::Cas { expected: expected.map(b), new: b(new) }, invoke)
}

pub fn history(ops: impl IntoIterator<Item = Operation>) -> History {
    History::from_operations(ops).expect("valid history")
}

/// The state after applying `op` to `state`, or `None` if its outcome is
/// impossible there. Unknown outcomes allow any result.
pub fn apply(state: &Option<Bytes>, op: &Operation) -> Option<Option<Bytes>> {
    let unknown = op.is_unknown();
    match &op.call {
        Call::Get => match &op.outcome {
            Outcome::Get(v) => (v == state).then(|| state.clone()),
            _ => Some(state.clone()),
        },
        Call::Put(v) => Some(Some(v.clone())),
        Call::Delete => match &op.outcome {
            Outcome::Delete { existed: Some(e) } if *e != state.is_some() => None,
            _ => Some(None),
        },
        Call::Cas { expected, new } => {
            let matches = expected == state;
            match &op.outcome {
                _ if unknown => Some(if matches { Some(new.clone()) } else { state.clone() }),
                Outcome::Cas(true) => matches.then(|| Some(new.clone())),
                Outcome::Cas(false) => (!matches).then(|| state.clone()),
                _ => unreachable!(),
            }
        }
    }
}

/// Brute force: tries every order (and every subset of the unknown-outcome
/// operations) consistent with real time, over all keys at once.
pub fn brute_force(history: &History) -> bool {
    let ops = history.operations();
    let mut state: BTreeMap<Bytes, Option<Bytes>> = BTreeMap::new();
    for op in ops {
        state.entry(op.key.clone()).or_insert_with(|| history.initial(&op.key).cloned());
    }
    let mut placed = vec![false; ops.len()];
    dfs(ops, &mut placed, &mut state)
}

fn dfs(ops: &[Operation], placed: &mut [bool], state: &mut BTreeMap<Bytes, Option<Bytes>>) -> bool {
    if ops.iter().zip(placed.iter()).all(|(op, &p)| p || op.is_unknown()) {
        return true;
    }
    for i in 0..ops.len() {
        if placed[i] {
            continue;
        }
        // Every known operation that completed strictly before this one was
        // invoked must already be placed.
        let blocked = ops.iter().enumerate().any(|(j, other)| {
            j != i && !placed[j] && !other.is_unknown() && other.complete.unwrap() < ops[i].invoke
        });
        if blocked {
            continue;
        }
        let before = state[&ops[i].key].clone();
        let Some(after) = apply(&before, &ops[i]) else { continue };
        state.insert(ops[i].key.clone(), after);
        placed[i] = true;
        let ok = dfs(ops, placed, state);
        placed[i] = false;
        state.insert(ops[i].key.clone(), before);
        if ok {
            return true;
        }
    }
    false
}

/// A small deterministic generator (xorshift64*).
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
    }

    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

/// Parameters of [`simulate`].
pub struct Sim {
    pub seed: u64,
    pub clients: u64,
    pub ops_per_client: usize,
    pub keys: usize,
    /// Values written are drawn from this many; 0 = every write unique.
    pub alphabet: u64,
    /// Percent of operations with an unknown outcome (half of them take
    /// effect).
    pub unknown_percent: u64,
}

/// A linearizable history of clients issuing operations one after another
/// on a shared store: each operation takes effect at a random instant
/// inside its interval, and outcomes are computed by applying operations in
/// the order of those instants.
pub fn simulate(sim: &Sim) -> History {
    let mut rng = Rng::new(sim.seed);
    // (linearization point, op, applied)
    let mut planned: Vec<(u64, Operation, bool)> = Vec::new();
    let mut unique = 0u64;
    for client in 0..sim.clients {
        let mut t = rng.below(50);
        for _ in 0..sim.ops_per_client {
            let invoke = t + rng.below(20);
            let complete = invoke + 1 + rng.below(100);
            let point = invoke + rng.below(complete - invoke + 1);
            let key = b(&format!("key{}", rng.below(sim.keys as u64)));
            let mut value = |rng: &mut Rng| {
                unique += 1;
                let v = if sim.alphabet == 0 { unique } else { rng.below(sim.alphabet) };
                b(&format!("v{v}"))
            };
            let call = match rng.below(10) {
                0..=3 => Call::Get,
                4..=6 => Call::Put(value(&mut rng)),
                7 => Call::Delete,
                _ => Call::Cas { expected: None, new: value(&mut rng) },
            };
            let unknown = rng.chance(sim.unknown_percent);
            let applied = !unknown || rng.chance(50);
            let op = Operation {
                client,
                key,
                call,
                invoke,
                complete: Some(complete),
                outcome: if unknown { Outcome::Unknown } else { Outcome::Put },
            };
            planned.push((point, op, applied));
            t = complete;
        }
    }
    planned.sort_by_key(|(point, _, _)| *point);
    let mut state: BTreeMap<Bytes, Option<Bytes>> = BTreeMap::new();
    let mut ops = Vec::new();
    for (_, mut op, applied) in planned {
        let current = state.get(&op.key).cloned().flatten();
        // CAS expects what is there half of the time, so some succeed.
        if let Call::Cas { expected, .. } = &mut op.call {
            if rng.chance(50) {
                *expected = current.clone();
            } else {
                *expected = Some(b(&format!("v{}", rng.below(sim.alphabet.max(3)))));
            }
        }
        if applied {
            let outcome = match &op.call {
                Call::Get => Outcome::Get(current.clone()),
                Call::Put(_) => Outcome::Put,
                Call::Delete => Outcome::Delete { existed: Some(current.is_some()) },
                Call::Cas { expected, .. } => Outcome::Cas(*expected == current),
            };
            let mut probe = op.clone();
            probe.outcome = outcome.clone();
            let after = apply(&current, &probe).expect("outcome computed from the state");
            state.insert(op.key.clone(), after);
            if !op.is_unknown() {
                op.outcome = outcome;
            }
        }
        ops.push(op);
    }
    history(ops)
}

/// Many concurrent writes of distinct values, each read by a concurrent
/// read, then a read nothing explains: every order of the writes must be
/// tried before the search can fail.
pub fn hard_history(writers: u64) -> History {
    let mut ops = Vec::new();
    for i in 0..writers {
        ops.push(put(i, "k", &format!("v{i}"), 0, 1000));
        ops.push(get(100 + i, "k", Some(&format!("v{i}")), 0, 1000));
    }
    ops.push(get(999, "k", Some("never"), 2000, 2001));
    history(ops)
}
