//! The multi-key transaction workload of the Jepsen-style tests: clients
//! run transactions over four keys (compare on a value, version, mod or
//! create revision; put, delete and get several keys; read-only
//! transactions) and linearizable reads, recording each operation for
//! [`graft_check::check_serial`], which checks them against the revision
//! order with the committed writes a watch reports afterwards.
//!
//! Every value written is unique (client, operation, step) and every
//! writing branch puts one, so each revision's writes name the operation
//! that made them.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use graft_check::{CmpOp, Compare, Record, SerialCall, SerialOp, SerialOutcome, Step, StepResult, Target};
use graft_core::rng::Rng;
use graft_kv::client::{Client, ClientError, ClientOptions};
use graft_kv::protocol::{
    self, ApiError, CompareOp, CompareTarget, Consistency, KeyValue, Txn, TxnOp, TxnOpResult,
};

/// The keys the workload uses under `prefix`.
pub fn keys(prefix: &str) -> Vec<Bytes> {
    (0..4).map(|i| Bytes::from(format!("{prefix}t{i}"))).collect()
}

/// The model's record of a store record.
pub fn record(kv: &KeyValue) -> Record {
    Record {
        value: kv.value.clone(),
        create_revision: kv.create_revision,
        mod_revision: kv.mod_revision,
        version: kv.version,
    }
}

/// Runs `clients` clients until `deadline`; times are nanoseconds since
/// `origin`.
pub async fn run(
    endpoints: Vec<String>,
    prefix: &str,
    clients: usize,
    seed: u64,
    deadline: Instant,
    origin: Instant,
) -> Vec<SerialOp> {
    let out = Arc::new(Mutex::new(Vec::new()));
    let tasks: Vec<_> = (0..clients)
        .map(|c| {
            let client =
                Client::new(ClientOptions { endpoints: endpoints.clone(), timeout: Duration::from_secs(2) });
            let (out, keys) = (out.clone(), keys(prefix));
            let seed = seed.wrapping_mul(0x5851_f42d).wrapping_add(c as u64 + 100);
            tokio::spawn(async move {
                client_loop(100 + c as u64, client, keys, seed, deadline, origin, &out).await
            })
        })
        .collect();
    for t in tasks {
        if let Err(e) = t.await {
            if e.is_panic() {
                std::panic::resume_unwind(e.into_panic());
            }
        }
    }
    let taken = std::mem::take(&mut *out.lock().unwrap_or_else(std::sync::PoisonError::into_inner));
    taken
}

/// Whether a failed write certainly did not take effect.
fn certainly_not_applied(e: &ClientError) -> bool {
    matches!(
        e,
        ClientError::Api(
            ApiError::KeyTooLarge { .. } | ApiError::ValueTooLarge { .. } | ApiError::Invalid(_)
        )
    )
}

fn step_of(op: &TxnOp) -> Step {
    match op {
        TxnOp::Get { key } => Step::Get(key.clone()),
        TxnOp::Put { key, value, .. } => Step::Put(key.clone(), value.clone()),
        TxnOp::Delete { key } => Step::Delete(key.clone()),
        other => panic!("the workload does not use {other:?}"),
    }
}

fn result_of(r: &TxnOpResult) -> StepResult {
    match r {
        TxnOpResult::Get(kv) => StepResult::Get(kv.as_ref().map(record)),
        TxnOpResult::Put { previous } => StepResult::Put(previous.as_ref().map(record)),
        TxnOpResult::Delete { previous } => StepResult::Delete(previous.as_ref().map(record)),
        other => panic!("the workload does not use {other:?}"),
    }
}

fn compare_of(c: &protocol::Compare) -> Compare {
    Compare {
        key: c.key.clone(),
        target: match &c.target {
            CompareTarget::Value(v) => Target::Value(v.clone()),
            CompareTarget::Version(n) => Target::Version(*n),
            CompareTarget::CreateRevision(n) => Target::CreateRevision(*n),
            CompareTarget::ModRevision(n) => Target::ModRevision(*n),
            CompareTarget::Lease(_) => panic!("the workload does not compare leases"),
        },
        op: match c.op {
            CompareOp::Equal => CmpOp::Equal,
            CompareOp::NotEqual => CmpOp::NotEqual,
            CompareOp::Greater => CmpOp::Greater,
            CompareOp::Less => CmpOp::Less,
        },
    }
}

/// A transaction over the keys, chosen by `rng`; `value(j)` is the j-th
/// unique value of this operation.
fn choose_txn(rng: &mut Rng, keys: &[Bytes], seen: &[Option<KeyValue>], value: impl Fn(u32) -> Bytes) -> Txn {
    // Four distinct keys in a random order.
    let mut ks: Vec<Bytes> = keys.to_vec();
    for i in (1..ks.len()).rev() {
        let j = rng.range(0, i as u64 + 1) as usize;
        ks.swap(i, j);
    }
    let idx = |k: &Bytes| keys.iter().position(|x| x == k).unwrap_or(0);
    let put = |k: &Bytes, j| TxnOp::Put { key: k.clone(), value: value(j), lease: 0 };
    let get = |k: &Bytes| TxnOp::Get { key: k.clone() };
    match rng.range(0, 10) {
        // Read-only: a consistent view of three keys.
        0..=2 => {
            Txn { compare: vec![], success: vec![get(&ks[0]), get(&ks[1]), get(&ks[2])], failure: vec![] }
        }
        // Blind writes of two keys.
        3 => Txn { compare: vec![], success: vec![put(&ks[0], 0), put(&ks[1], 1)], failure: vec![] },
        // Delete one key if another exists, else create it.
        4 => Txn {
            compare: vec![protocol::Compare {
                key: ks[0].clone(),
                target: CompareTarget::Version(0),
                op: CompareOp::Greater,
            }],
            success: vec![TxnOp::Delete { key: ks[1].clone() }, put(&ks[2], 0)],
            failure: vec![put(&ks[0], 1), get(&ks[1])],
        },
        // A compare on what this client last saw of a key, then writes.
        _ => {
            let last = seen[idx(&ks[0])].as_ref();
            let target = match rng.range(0, 4) {
                0 => CompareTarget::Value(last.map(|kv| kv.value.clone()).unwrap_or_else(|| value(9))),
                1 => CompareTarget::Version(last.map_or(0, |kv| kv.version)),
                2 => CompareTarget::ModRevision(last.map_or(0, |kv| kv.mod_revision)),
                _ => CompareTarget::CreateRevision(last.map_or(0, |kv| kv.create_revision)),
            };
            let op = match rng.range(0, 8) {
                0 => CompareOp::NotEqual,
                1 => CompareOp::Greater,
                2 => CompareOp::Less,
                _ => CompareOp::Equal,
            };
            Txn {
                compare: vec![protocol::Compare { key: ks[0].clone(), target, op }],
                success: vec![put(&ks[0], 0), put(&ks[1], 1), get(&ks[2])],
                failure: vec![get(&ks[0]), put(&ks[3], 2)],
            }
        }
    }
}

async fn client_loop(
    id: u64,
    client: Client,
    keys: Vec<Bytes>,
    seed: u64,
    deadline: Instant,
    origin: Instant,
    out: &Mutex<Vec<SerialOp>>,
) {
    let mut rng = Rng::new(seed);
    let now = || origin.elapsed().as_nanos() as u64;
    let mut seen: Vec<Option<KeyValue>> = vec![None; keys.len()];
    let mut n = 0u64;
    while Instant::now() < deadline {
        n += 1;
        let invoke = now();
        let op = if rng.chance(0.25) {
            let k = rng.range(0, keys.len() as u64) as usize;
            let call = SerialCall::Read(keys[k].clone());
            match client.get_at(keys[k].clone(), Consistency::Linearizable, 0).await {
                Ok((kv, revision)) => {
                    let record = kv.as_ref().map(record);
                    seen[k] = kv;
                    SerialOp {
                        client: id,
                        call,
                        invoke,
                        complete: Some(now()),
                        outcome: SerialOutcome::Read { revision, record },
                    }
                }
                // A failed read had no effect.
                Err(_) => continue,
            }
        } else {
            let txn = choose_txn(&mut rng, &keys, &seen, |j| Bytes::from(format!("c{id}-{n}-{j}")));
            let call = SerialCall::Txn {
                compare: txn.compare.iter().map(compare_of).collect(),
                success: txn.success.iter().map(step_of).collect(),
                failure: txn.failure.iter().map(step_of).collect(),
            };
            match client.txn(txn.clone()).await {
                Ok(resp) => {
                    let branch = if resp.succeeded { &txn.success } else { &txn.failure };
                    for (op, r) in branch.iter().zip(&resp.results) {
                        if let (TxnOp::Get { key }, TxnOpResult::Get(kv)) = (op, r) {
                            if let Some(i) = keys.iter().position(|k| k == key) {
                                seen[i] = kv.clone();
                            }
                        }
                    }
                    SerialOp {
                        client: id,
                        call,
                        invoke,
                        complete: Some(now()),
                        outcome: SerialOutcome::Txn {
                            revision: resp.revision,
                            succeeded: resp.succeeded,
                            results: resp.results.iter().map(result_of).collect(),
                        },
                    }
                }
                Err(e) if certainly_not_applied(&e) => panic!("the workload's transaction was refused: {e}"),
                Err(_) => {
                    SerialOp { client: id, call, invoke, complete: None, outcome: SerialOutcome::Unknown }
                }
            }
        };
        out.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(op);
    }
}
