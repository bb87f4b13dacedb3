//! A linearizability workload: concurrent clients doing get, put, delete
//! and compare-and-swap on a few keys, recording every operation's
//! invocation, completion and outcome into a [`graft_check::History`].
//!
//! The fault tests run it while they kill, pause and partition members;
//! `graft-cli verify` runs it against a live cluster. The keys live under a
//! random prefix, so a run never touches other data.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use graft_check::{Call, History, Operation, Outcome};
use graft_core::rng::Rng;

use crate::client::{Client, ClientError, ClientOptions};
use crate::protocol::{ApiError, Expect};

/// How to run the workload.
#[derive(Clone, Debug)]
pub struct WorkloadOptions {
    /// Concurrent clients, each with its own connection and session.
    pub clients: usize,
    /// How many keys they share (few keys: many conflicts).
    pub keys: usize,
    /// How long to run.
    pub duration: Duration,
    /// Seeds the clients' choices of key, operation and expected value.
    pub seed: u64,
    /// How long one operation may take before its outcome counts as unknown.
    pub op_timeout: Duration,
    /// Prefix of every key.
    pub prefix: String,
    /// Move to a fresh set of keys this often (long runs: keeps each key's
    /// history, and so the check, small).
    pub rotate_every: Option<Duration>,
}

impl WorkloadOptions {
    /// Defaults: 5 clients, 5 keys, 30 s, 2 s per operation, a random prefix.
    pub fn new(seed: u64) -> WorkloadOptions {
        WorkloadOptions {
            clients: 5,
            keys: 5,
            duration: Duration::from_secs(30),
            seed,
            op_timeout: Duration::from_secs(2),
            prefix: format!("graft-verify/{seed:016x}/"),
            rotate_every: None,
        }
    }

    /// The number of key sets a run goes through.
    fn epochs(&self) -> usize {
        match self.rotate_every {
            Some(r) if !r.is_zero() => (self.duration.as_nanos() / r.as_nanos()) as usize + 1,
            _ => 1,
        }
    }

    /// How many keys the workload may use ([`WorkloadOptions::key_names`]'s
    /// length, without making them).
    pub fn key_count(&self) -> usize {
        self.epochs() * self.keys
    }

    /// Every key the workload may use.
    pub fn key_names(&self) -> Vec<Bytes> {
        (0..self.epochs()).flat_map(|e| (0..self.keys).map(move |i| self.key(e, i))).collect()
    }

    fn key(&self, epoch: usize, i: usize) -> Bytes {
        Bytes::from(format!("{}e{epoch}k{i}", self.prefix))
    }
}

/// What a run did.
#[derive(Debug, Default)]
pub struct Recorded {
    /// Every operation, in no particular order.
    pub history: History,
    /// Operations whose outcome was learnt.
    pub ok: u64,
    /// Writes whose outcome is unknown (timeout, lost connection).
    pub unknown: u64,
    /// Reads that failed (they are left out: a failed read has no effect).
    pub failed_reads: u64,
    /// Of those, final reads (after healing) that failed: a healed cluster
    /// should answer them all.
    pub final_reads_failed: u64,
}

/// Shared recording state.
struct Recorder {
    origin: Instant,
    out: Mutex<Recorded>,
}

impl Recorder {
    fn now(&self) -> u64 {
        self.origin.elapsed().as_nanos() as u64
    }

    fn record(&self, op: Operation) {
        let mut r = self.out.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if op.is_unknown() {
            if op.call == Call::Get {
                r.failed_reads += 1;
                return;
            }
            r.unknown += 1;
        } else {
            r.ok += 1;
        }
        // Operations are built consistently below; a refusal would be a bug
        // in this module, and leaving the operation out keeps the check
        // honest (it can only make a violation harder to find, not invent one).
        let _ = r.history.push(op);
    }
}

/// Runs the workload against `endpoints` and returns what it recorded,
/// including a final linearizable read of every key by a fresh client
/// (with `final_timeout`) after `before_final_reads` has run (the fault
/// tests heal the cluster there; it may return the endpoints to read from,
/// if the membership changed).
pub async fn run<F, Fut>(
    endpoints: Vec<String>,
    opts: &WorkloadOptions,
    final_timeout: Duration,
    before_final_reads: F,
) -> Recorded
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = Option<Vec<String>>>,
{
    // At least one key: the clients index their keys.
    let opts = &WorkloadOptions { keys: opts.keys.max(1), ..opts.clone() };
    let recorder = Arc::new(Recorder { origin: Instant::now(), out: Mutex::new(Recorded::default()) });
    let keys = opts.key_names();
    let deadline = Instant::now() + opts.duration;
    let tasks: Vec<_> = (0..opts.clients)
        .map(|c| {
            let client =
                Client::new(ClientOptions { endpoints: endpoints.clone(), timeout: opts.op_timeout });
            let (recorder, opts) = (recorder.clone(), opts.clone());
            let seed = opts.seed.wrapping_mul(0x9e37_79b9).wrapping_add(c as u64);
            tokio::spawn(
                async move { client_loop(c as u64 + 1, client, seed, &opts, deadline, &recorder).await },
            )
        })
        .collect();
    for t in tasks {
        // A client task that panicked would leave a partial history that
        // still checks: let the panic through instead.
        if let Err(e) = t.await {
            if e.is_panic() {
                std::panic::resume_unwind(e.into_panic());
            }
        }
    }
    let endpoints = before_final_reads().await.unwrap_or(endpoints);
    let reader = Client::new(ClientOptions { endpoints, timeout: final_timeout });
    for key in keys.iter() {
        let invoke = recorder.now();
        let op = match reader.get(key.clone()).await {
            Ok(v) => Operation::new(
                0,
                key.clone(),
                Call::Get,
                Outcome::Get(v.map(|v| v.value)),
                invoke,
                recorder.now(),
            ),
            Err(_) => {
                recorder.out.lock().unwrap_or_else(std::sync::PoisonError::into_inner).final_reads_failed +=
                    1;
                Operation::unknown(0, key.clone(), Call::Get, invoke)
            }
        };
        recorder.record(op);
    }
    // Every task that held the recorder has ended.
    let recorded =
        std::mem::take(&mut *recorder.out.lock().unwrap_or_else(std::sync::PoisonError::into_inner));
    recorded
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

async fn client_loop(
    id: u64,
    client: Client,
    seed: u64,
    opts: &WorkloadOptions,
    deadline: Instant,
    rec: &Recorder,
) {
    let mut rng = Rng::new(seed);
    let mut n = 0u64;
    let start = Instant::now();
    let mut epoch = usize::MAX;
    // The last value this client saw per key: a likely expectation for a
    // compare-and-swap.
    let mut seen: Vec<Option<Bytes>> = vec![None; opts.keys];
    while Instant::now() < deadline {
        let now_epoch = match opts.rotate_every {
            Some(r) if !r.is_zero() => (start.elapsed().as_nanos() / r.as_nanos()) as usize,
            _ => 0,
        };
        if now_epoch != epoch {
            epoch = now_epoch;
            seen = vec![None; opts.keys];
        }
        let k = rng.range(0, opts.keys as u64) as usize;
        let key = opts.key(epoch, k);
        n += 1;
        let value = Bytes::from(format!("c{id}-{n}"));
        let invoke = rec.now();
        let op = match rng.range(0, 10) {
            0..=3 => match client.get(key.clone()).await {
                Ok(v) => {
                    let v = v.map(|v| v.value);
                    seen[k] = v.clone();
                    Operation::new(id, key, Call::Get, Outcome::Get(v), invoke, rec.now())
                }
                Err(_) => Operation::unknown(id, key, Call::Get, invoke),
            },
            4..=5 => {
                let call = Call::Put(value.clone());
                match client.put(key.clone(), value).await {
                    Ok(_) => Operation::new(id, key, call, Outcome::Put, invoke, rec.now()),
                    Err(e) if certainly_not_applied(&e) => continue,
                    Err(_) => Operation::unknown(id, key, call, invoke),
                }
            }
            6 => match client.delete(key.clone()).await {
                Ok(prev) => {
                    let outcome = Outcome::Delete { existed: Some(prev.is_some()) };
                    Operation::new(id, key, Call::Delete, outcome, invoke, rec.now())
                }
                Err(e) if certainly_not_applied(&e) => continue,
                Err(_) => Operation::unknown(id, key, Call::Delete, invoke),
            },
            _ => {
                let expected = seen[k].clone();
                let call = Call::Cas { expected: expected.clone(), new: value.clone() };
                match client.cas(key.clone(), Expect::Value(expected), value.clone()).await {
                    Ok((swapped, current)) => {
                        seen[k] = current.map(|c| c.value);
                        Operation::new(id, key, call, Outcome::Cas(swapped), invoke, rec.now())
                    }
                    Err(e) if certainly_not_applied(&e) => continue,
                    Err(_) => Operation::unknown(id, key, call, invoke),
                }
            }
        };
        rec.record(op);
    }
}
