//! The lock checker of the Jepsen-style tests: clients take a lock
//! (`graft_kv::lock`, a lease-backed key; its create revision is the
//! fencing token) and, while holding it, append an entry naming the token
//! to a shared list with a transaction fenced on the lock key. Now and then
//! a holder stalls longer than its lease's TTL (its keepalives stop) and
//! then tries to append anyway, as a process paused by a long GC or a
//! frozen VM would.
//!
//! Afterwards the list must show no two holders at once, judged by the
//! tokens (they never go down along the list: a holder with an older token
//! never writes after a newer one), and nothing lost: every acknowledged
//! append is there exactly once, and nothing is there that no client tried.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use graft_core::rng::Rng;
use graft_kv::client::{Client, ClientOptions};
use graft_kv::protocol::{Compare, Txn, TxnOp};

/// What the lock clients did.
#[derive(Debug, Default)]
pub struct LockRecorded {
    /// Appends acknowledged as written.
    pub acked: Vec<String>,
    /// Appends whose outcome is unknown.
    pub unknown: Vec<String>,
    /// Times the lock was taken.
    pub holds: u64,
    /// Appends by a stalled holder that the fence refused.
    pub stale_refused: u64,
    /// Appends by a stalled holder that went through (its lease had not
    /// expired yet: legal, and judged by the tokens like any other).
    pub stale_written: u64,
}

/// Runs `clients` lock clients until `deadline`, locking `{prefix}lock`
/// with leases of `ttl` and appending to `{prefix}list`.
pub async fn run(
    endpoints: Vec<String>,
    prefix: &str,
    clients: usize,
    seed: u64,
    deadline: Instant,
    ttl: Duration,
) -> LockRecorded {
    let out = Arc::new(Mutex::new(LockRecorded::default()));
    let tasks: Vec<_> = (0..clients)
        .map(|c| {
            let client =
                Client::new(ClientOptions { endpoints: endpoints.clone(), timeout: Duration::from_secs(2) });
            let (out, prefix) = (out.clone(), prefix.to_string());
            let seed = seed.wrapping_mul(0x2545_f491).wrapping_add(c as u64 + 200);
            tokio::spawn(async move {
                client_loop(200 + c as u64, client, &prefix, seed, deadline, ttl, &out).await
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

/// How an append ended.
enum Appended {
    Written,
    Refused,
    Unknown,
    NotTried,
}

/// Reads the list and writes it back with `entry` appended, only while
/// `fence` holds.
async fn append(client: &Client, list: &Bytes, fence: Compare, entry: &str) -> Appended {
    let Ok(old) = client.get(list.clone()).await else { return Appended::NotTried };
    let mut value = old.map(|kv| kv.value.to_vec()).unwrap_or_default();
    value.extend_from_slice(entry.as_bytes());
    let txn = Txn {
        compare: vec![fence],
        success: vec![TxnOp::Put { key: list.clone(), value: Bytes::from(value), lease: 0 }],
        failure: vec![],
    };
    match client.txn(txn).await {
        Ok(r) if r.succeeded => Appended::Written,
        Ok(_) => Appended::Refused,
        Err(_) => Appended::Unknown,
    }
}

async fn client_loop(
    id: u64,
    client: Client,
    prefix: &str,
    seed: u64,
    deadline: Instant,
    ttl: Duration,
    out: &Mutex<LockRecorded>,
) {
    let mut rng = Rng::new(seed);
    let name = format!("{prefix}lock");
    let list = Bytes::from(format!("{prefix}list"));
    let mut n = 0u64;
    let record = |entry: String, how: Appended, stale: bool| {
        let mut o = out.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        match how {
            Appended::Written => {
                o.acked.push(entry);
                if stale {
                    o.stale_written += 1;
                }
            }
            Appended::Unknown => o.unknown.push(entry),
            Appended::Refused if stale => o.stale_refused += 1,
            Appended::Refused | Appended::NotTried => {}
        }
    };
    while Instant::now() < deadline {
        let left = deadline.saturating_duration_since(Instant::now());
        let held = match tokio::time::timeout(
            left,
            graft_kv::lock::acquire(&client, &name, Bytes::new(), ttl),
        )
        .await
        {
            Ok(Ok(h)) => h,
            _ => {
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        out.lock().unwrap_or_else(std::sync::PoisonError::into_inner).holds += 1;
        if rng.chance(0.25) {
            // Stall past the TTL: the keepalives stop with the lock's handle.
            let (fence, token) = (held.still_held(), held.revision);
            drop(held);
            tokio::time::sleep(ttl + Duration::from_millis(1500)).await;
            n += 1;
            let entry = format!("{token}:{id}:{n};");
            let how = append(&client, &list, fence, &entry).await;
            record(entry, how, true);
            continue;
        }
        for _ in 0..rng.range(1, 4) {
            n += 1;
            let entry = format!("{}:{id}:{n};", held.revision);
            let how = append(&client, &list, held.still_held(), &entry).await;
            record(entry, how, false);
        }
        let _ = held.release().await;
    }
}

/// Checks the final list (read after the cluster healed) against what the
/// clients did; returns a summary.
pub fn check(list: &[u8], rec: &LockRecorded) -> Result<String, String> {
    let text = std::str::from_utf8(list).map_err(|e| format!("the list is not text: {e}"))?;
    let entries: Vec<&str> = text.split_inclusive(';').collect();
    let tried: HashSet<&str> = rec.acked.iter().chain(&rec.unknown).map(String::as_str).collect();
    let mut present = HashSet::new();
    let mut last_token = 0u64;
    for e in &entries {
        if !present.insert(*e) {
            return Err(format!("entry {e} is in the list twice"));
        }
        if !tried.contains(e) {
            return Err(format!("entry {e} is in the list, but no client appended it"));
        }
        let token: u64 = e.split(':').next().and_then(|t| t.parse().ok()).ok_or(format!("bad entry {e}"))?;
        if token < last_token {
            return Err(format!(
                "entry {e} (token {token}) comes after an entry with token {last_token}: two holders at once\nlist: {text}"
            ));
        }
        last_token = token;
    }
    if let Some(lost) = rec.acked.iter().find(|a| !present.contains(a.as_str())) {
        return Err(format!("acknowledged append {lost} is not in the list: lost\nlist: {text}"));
    }
    Ok(format!(
        "locks: {} holds, {} appends acknowledged ({} unknown), {} stalled holders refused by the fence, {} in time; \
         tokens never go down, nothing lost",
        rec.holds,
        rec.acked.len(),
        rec.unknown.len(),
        rec.stale_refused,
        rec.stale_written
    ))
}
