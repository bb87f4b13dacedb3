//! The coordination checks that run beside the linearizability workload
//! in every Jepsen-style scenario: multi-key transactions checked in the
//! store's revision order ([`super::txn_workload`]), watchers that must see
//! exactly the committed writes ([`super::watchers`]) and fenced lock
//! holders ([`super::locks`]).

use std::time::{Duration, Instant};

use bytes::Bytes;
use graft_check::Committed;
use graft_kv::client::{Client, ClientOptions};
use graft_kv::protocol::Consistency;

use super::{locks, txn_workload, watchers};

/// The lease TTL of the lock clients.
const LOCK_TTL: Duration = Duration::from_secs(2);

/// The checks, running.
pub struct Coordination {
    txn_prefix: Bytes,
    lock_prefix: String,
    start: u64,
    txns: tokio::task::JoinHandle<Vec<graft_check::SerialOp>>,
    locks: tokio::task::JoinHandle<locks::LockRecorded>,
    watchers: tokio::task::JoinHandle<Vec<watchers::Running>>,
}

impl Coordination {
    /// Starts transaction clients, lock clients and watchers under
    /// `prefix`, running until `deadline`.
    pub async fn start(endpoints: Vec<String>, prefix: &str, seed: u64, deadline: Instant) -> Coordination {
        let client =
            Client::new(ClientOptions { endpoints: endpoints.clone(), timeout: Duration::from_secs(10) });
        let txn_prefix = Bytes::from(format!("{prefix}txn/"));
        let lock_prefix = format!("{prefix}lk/");
        // The prefix is empty at this revision: the checks start from here.
        let (_, start) = client
            .get_at(txn_prefix.clone(), Consistency::Linearizable, 0)
            .await
            .expect("reading the start revision");
        let origin = Instant::now();
        let txns = {
            let (endpoints, p) = (endpoints.clone(), txn_prefix.clone());
            tokio::spawn(async move {
                let p = String::from_utf8_lossy(&p).into_owned();
                txn_workload::run(endpoints, &p, 3, seed, deadline, origin).await
            })
        };
        let locks = {
            let (endpoints, p) = (endpoints.clone(), lock_prefix.clone());
            tokio::spawn(async move { locks::run(endpoints, &p, 3, seed, deadline, LOCK_TTL).await })
        };
        // Three watchers: one from the start, one started later replaying
        // from the start, one started later from the revision of then.
        let watchers = {
            let p = txn_prefix.clone();
            tokio::spawn(async move {
                let mut ws = vec![watchers::spawn(&client, p.clone(), start + 1)];
                tokio::time::sleep(deadline.saturating_duration_since(Instant::now()) / 3).await;
                ws.push(watchers::spawn(&client, p.clone(), start + 1));
                tokio::time::sleep(deadline.saturating_duration_since(Instant::now()) / 3).await;
                if let Ok((_, now)) = client.get_at(p.clone(), Consistency::Linearizable, 0).await {
                    ws.push(watchers::spawn(&client, p.clone(), now + 1));
                }
                ws
            })
        };
        Coordination { txn_prefix, lock_prefix, start, txns, locks, watchers }
    }

    /// Waits for the clients, then (the cluster healed, reachable at
    /// `endpoints`) checks everything; returns a line per check, or what
    /// failed.
    pub async fn finish(self, endpoints: Vec<String>) -> Result<Vec<String>, String> {
        let ops = self.txns.await.map_err(|e| format!("transaction clients: {e}"))?;
        let recorded = self.locks.await.map_err(|e| format!("lock clients: {e}"))?;
        let watchers = self.watchers.await.map_err(|e| format!("watchers: {e}"))?;
        let client = Client::new(ClientOptions { endpoints, timeout: Duration::from_secs(30) });
        let (_, end) = client
            .get_at(self.txn_prefix.clone(), Consistency::Linearizable, 0)
            .await
            .map_err(|e| format!("reading the final revision: {e}"))?;
        let committed = watchers::committed(&client, &self.txn_prefix, self.start + 1, end).await;
        watchers::check_committed(&committed).map_err(|e| format!("the committed writes: {e}"))?;
        let log: Vec<Committed> = committed
            .iter()
            .map(|e| Committed {
                revision: e.revision,
                key: e.key.clone(),
                record: e.kv.as_ref().map(txn_workload::record),
            })
            .collect();
        let report = graft_check::check_serial(&ops, &log);
        if !report.is_ok() {
            return Err(format!("transactions: {report}"));
        }
        let mut lines = vec![format!(
            "transactions: {} operations ({} unknown), {} writes committed: {report}",
            ops.len(),
            ops.iter().filter(|o| o.complete.is_none()).count(),
            committed.len()
        )];
        watchers::wait_caught_up(&watchers, end, Duration::from_secs(30)).await;
        lines.extend(watchers::check(&watchers, &committed, end)?);
        let list = client
            .get(format!("{}list", self.lock_prefix))
            .await
            .map_err(|e| format!("reading the lock list: {e}"))?
            .map(|kv| kv.value)
            .unwrap_or_default();
        lines.push(locks::check(&list, &recorded)?);
        Ok(lines)
    }
}
