//! Distributed locks and leader election on leases, transactions and
//! watches (etcd's concurrency recipes).
//!
//! A contender grants itself a lease, keeps it alive, and creates the key
//! `NAME/<lease id>` attached to it. Contenders are ordered by their key's
//! create revision: the lowest holds the lock (or leads). Every other one
//! watches only the key just before its own (no herd) and checks again when
//! that key goes. The holder's create revision is its **fencing token**:
//! it grows with every new holder, so a resource can refuse a request
//! carrying a token older than one it has seen, and a holder that stalled
//! past its TTL (its lease expired, its key deleted, someone else now
//! holds) is refused once the resource has seen the newer token. A holder
//! can also make its own writes conditional on its key still existing
//! ([`Held::still_held`] as a transaction compare).
//!
//! Releasing (or dropping the process) revokes the lease, which deletes
//! the key and lets the next contender in.

use std::time::Duration;

use bytes::Bytes;

use crate::client::{Client, ClientError};
use crate::keepalive::{KeepAlive, LeaseState};
use crate::protocol::{Compare, CompareOp, CompareTarget, Consistency, Txn, TxnOp, TxnOpResult, WatchFilter};
use crate::watcher::{WatchError, WatchItem, WatchOptions};

/// Why a lock could not be taken or was lost.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// The cluster refused or could not be reached.
    #[error(transparent)]
    Client(#[from] ClientError),
    /// The watch on the predecessor failed.
    #[error(transparent)]
    Watch(#[from] WatchError),
    /// The lease expired before the lock was taken (the process stalled).
    #[error("the lock's lease expired while waiting")]
    LeaseLost,
}

/// A held lock (or leadership).
pub struct Held {
    /// The key this contender created.
    pub key: Bytes,
    /// Its create revision: the fencing token.
    pub revision: u64,
    /// The lease the key is attached to.
    pub lease: u64,
    keepalive: KeepAlive,
    client: Client,
}

impl Held {
    /// A compare that holds only while this contender's key exists with
    /// its create revision: put it first in a transaction to write only
    /// while still holding.
    pub fn still_held(&self) -> Compare {
        Compare {
            key: self.key.clone(),
            target: CompareTarget::CreateRevision(self.revision),
            op: CompareOp::Equal,
        }
    }

    /// Whether the lease was found gone (the lock is then lost).
    pub fn lost(&self) -> bool {
        self.keepalive.state() == LeaseState::Lost
    }

    /// Waits until the lease is found gone.
    pub async fn wait_lost(&mut self) {
        self.keepalive.lost().await
    }

    /// Releases the lock: revokes the lease (deleting the key).
    pub async fn release(self) -> Result<(), ClientError> {
        match self.client.lease_revoke(self.lease).await {
            Ok(_) | Err(ClientError::Api(crate::protocol::ApiError::LeaseNotFound { .. })) => Ok(()),
            Err(e) => Err(e),
        }
    }
}

/// Takes the lock `name` (waiting as long as it takes), with a lease of
/// `ttl`; `value` is stored in the key (for an election: the candidate's
/// proposal, visible to observers).
pub async fn acquire(client: &Client, name: &str, value: Bytes, ttl: Duration) -> Result<Held, LockError> {
    let lease = client.lease_grant(ttl).await?;
    let keepalive = client.keep_alive(lease, ttl);
    let prefix = format!("{name}/");
    let key = Bytes::from(format!("{prefix}{lease:016x}"));
    // Create the key if it is not there yet (a retry finds it).
    let txn = Txn {
        compare: vec![Compare {
            key: key.clone(),
            target: CompareTarget::CreateRevision(0),
            op: CompareOp::Equal,
        }],
        success: vec![TxnOp::Put { key: key.clone(), value, lease }, TxnOp::Get { key: key.clone() }],
        failure: vec![TxnOp::Get { key: key.clone() }],
    };
    let resp = client.txn(txn).await?;
    let mine = resp.results.iter().find_map(|r| match r {
        TxnOpResult::Get(Some(kv)) => Some(kv.create_revision),
        _ => None,
    });
    let Some(revision) = mine else { return Err(LockError::LeaseLost) };
    let held = Held { key, revision, lease, keepalive, client: client.clone() };
    loop {
        if held.lost() {
            return Err(LockError::LeaseLost);
        }
        // The contenders before us, by create revision.
        let (all, read_at) = client.scan_at(prefix.clone(), u32::MAX, Consistency::Linearizable, 0).await?;
        let before = all
            .iter()
            .filter(|(_, kv)| kv.create_revision < revision)
            .max_by_key(|(_, kv)| kv.create_revision)
            .map(|(k, _)| k.clone());
        let Some(pred) = before else {
            if all.iter().any(|(k, _)| *k == held.key) {
                return Ok(held);
            }
            // Our own key is gone: the lease expired while we waited.
            return Err(LockError::LeaseLost);
        };
        wait_deleted(client, pred, read_at + 1).await?;
    }
}

/// Waits until `key` is deleted at `from` or later.
async fn wait_deleted(client: &Client, key: Bytes, from: u64) -> Result<(), LockError> {
    let mut w = client.watch(WatchOptions {
        filter: WatchFilter { key, prefix: false },
        start_revision: from,
        prev_kv: false,
        progress_ms: 0,
    });
    loop {
        match w.next().await {
            Some(Ok(WatchItem::Events(events))) if events.iter().any(|e| e.kv.is_none()) => return Ok(()),
            Some(Ok(_)) => {}
            Some(Err(e)) => return Err(e.into()),
            None => return Ok(()),
        }
    }
}

/// The current holder of `name` (the leader of an election): its key,
/// value and fencing token, if anyone holds it.
pub async fn holder(client: &Client, name: &str) -> Result<Option<(Bytes, Bytes, u64)>, ClientError> {
    let (all, _) = client.scan_at(format!("{name}/"), u32::MAX, Consistency::Linearizable, 0).await?;
    Ok(all
        .into_iter()
        .min_by_key(|(_, kv)| kv.create_revision)
        .map(|(k, kv)| (k, kv.value, kv.create_revision)))
}

/// How long a lock's lease lives without renewal by default.
pub const DEFAULT_TTL: Duration = Duration::from_secs(10);
