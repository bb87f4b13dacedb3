//! What one write does to the multi-version store and the lease table:
//! puts, deletes, compare-and-swap, prefix deletes, transactions,
//! compactions and lease changes, each at the revision of its entry.

use bytes::Bytes;

use crate::command::WriteOp;
use crate::error::StoreError;
use crate::lease::LeaseWriter;
use crate::mvcc::read::RangeOpts;
use crate::mvcc::{MvccMeta, Writer};
use crate::protocol::{
    ApiError, Expect, KeyRange, KeyValue, Response, Txn, TxnOp, TxnOpResult, TxnResponse, LEASE_AUTO_IDS,
};

/// An answer for the client, or the database failing.
pub type Outcome = Result<Result<Response, ApiError>, StoreError>;

/// The tables one write may change.
pub struct Tables<'a, 't> {
    /// The multi-version store.
    pub kv: &'a mut Writer<'t>,
    /// The lease table.
    pub leases: &'a mut LeaseWriter<'t>,
    /// The store's position, which a compaction moves.
    pub mvcc: &'a mut MvccMeta,
}

impl Tables<'_, '_> {
    /// Sets `key`, keeping lease attachments in step.
    fn put(&mut self, key: &Bytes, value: &Bytes, lease: u64) -> Result<Option<KeyValue>, StoreError> {
        let prev = self.kv.put(key, value, lease)?;
        if let Some(p) = prev.as_ref().filter(|p| p.lease != 0 && p.lease != lease) {
            self.leases.detach(p.lease, key)?;
        }
        if lease != 0 {
            self.leases.attach(lease, key)?;
        }
        Ok(prev)
    }

    /// Removes `key`, and its lease attachment.
    fn delete(&mut self, key: &Bytes) -> Result<Option<KeyValue>, StoreError> {
        let prev = self.kv.delete(key)?;
        if let Some(p) = prev.as_ref().filter(|p| p.lease != 0) {
            self.leases.detach(p.lease, key)?;
        }
        Ok(prev)
    }

    fn delete_prefix(&mut self, prefix: &[u8]) -> Result<u64, StoreError> {
        let range = KeyRange::prefix(Bytes::copy_from_slice(prefix));
        Ok(self.delete_range(&range)?.len() as u64)
    }

    /// Removes every key of `range`, and their lease attachments; returns
    /// their last records.
    fn delete_range(&mut self, range: &KeyRange) -> Result<Vec<(Bytes, KeyValue)>, StoreError> {
        let gone = self.kv.delete_range(range)?;
        for (key, kv) in &gone {
            if kv.lease != 0 {
                self.leases.detach(kv.lease, key)?;
            }
        }
        Ok(gone)
    }

    /// Removes lease `id` and deletes its keys; how many, or `None` if
    /// there is no such lease.
    fn revoke(&mut self, id: u64) -> Result<Option<u64>, StoreError> {
        let Some(keys) = self.leases.remove(id)? else { return Ok(None) };
        let mut deleted = 0;
        for key in &keys {
            deleted += u64::from(self.kv.delete(key)?.is_some());
        }
        Ok(Some(deleted))
    }

    /// Refuses a put to a lease that does not exist.
    fn check_lease(&self, lease: u64) -> Result<Result<(), ApiError>, StoreError> {
        if lease != 0 && self.leases.get(lease)?.is_none() {
            return Ok(Err(ApiError::LeaseNotFound { id: lease }));
        }
        Ok(Ok(()))
    }
}

/// Carries out `op` at the writer's revision.
pub fn execute(t: &mut Tables<'_, '_>, op: &WriteOp) -> Outcome {
    let revision = t.kv.revision();
    Ok(Ok(match op {
        WriteOp::Put { key, value, lease } => {
            if let Err(e) = t.check_lease(*lease)? {
                return Ok(Err(e));
            }
            t.put(key, value, *lease)?;
            Response::Put { revision }
        }
        WriteOp::Delete { key } => Response::Delete { previous: t.delete(key)?, revision },
        WriteOp::DeletePrefix { prefix } => {
            Response::DeletePrefix { deleted: t.delete_prefix(prefix)?, revision }
        }
        WriteOp::Cas { key, expect, value } => {
            let cur = t.kv.get(key)?;
            let matches = match expect {
                Expect::Value(want) => cur.as_ref().map(|c| &c.value) == want.as_ref(),
                Expect::ModRevision(r) => cur.as_ref().map_or(0, |c| c.mod_revision) == *r,
                Expect::Version(v) => cur.as_ref().map_or(0, |c| c.version) == *v,
            };
            if matches {
                t.put(key, value, 0)?;
                Response::Cas { swapped: true, current: t.kv.get(key)?, revision }
            } else {
                Response::Cas { swapped: false, current: cur, revision }
            }
        }
        WriteOp::Txn(txn) => match run_txn(t, txn)? {
            Ok(r) => Response::Txn(r),
            Err(e) => return Ok(Err(e)),
        },
        WriteOp::Compact { revision: target } => {
            if *target > revision {
                return Ok(Err(ApiError::FutureRevision { requested: *target, current: revision }));
            }
            if *target <= t.mvcc.compacted {
                return Ok(Err(ApiError::Compacted { requested: *target, oldest: t.mvcc.compacted }));
            }
            t.mvcc.compacted = *target;
            Response::Compacted { compacted: *target, revision }
        }
        WriteOp::LeaseGrant { id, ttl_ms } => {
            let id = if *id == 0 { revision | LEASE_AUTO_IDS } else { *id };
            if !t.leases.grant(id, *ttl_ms)? {
                return Ok(Err(ApiError::Invalid(format!("lease {id} already exists"))));
            }
            Response::LeaseGranted { id, ttl_ms: *ttl_ms, revision }
        }
        WriteOp::LeaseRevoke { id } => match t.revoke(*id)? {
            Some(deleted) => Response::LeaseRevoked { deleted, revision },
            None => return Ok(Err(ApiError::LeaseNotFound { id: *id })),
        },
        WriteOp::LeaseKeepAlive { ids } => {
            let mut out = Vec::with_capacity(ids.len());
            for id in ids {
                out.push((*id, t.leases.keep_alive(*id)?.map(|r| r.ttl_ms)));
            }
            Response::LeaseKeptAlive(out)
        }
        WriteOp::LeaseExpire { ids } => {
            for id in ids {
                if t.leases.expired(*id)? {
                    t.revoke(*id)?;
                }
            }
            Response::Done
        }
        WriteOp::LeaseClock | WriteOp::Note(_) => Response::Done,
    }))
}

/// Evaluates the compares against the state before the transaction, then
/// runs one branch in order: each operation sees the branch's earlier
/// writes, and a nested transaction's compares see them too. A put to a
/// lease that does not exist, or one keeping the value or lease of a key
/// that does not exist, refuses the whole transaction before anything is
/// written (checked in every branch of nested transactions).
fn run_txn(t: &mut Tables<'_, '_>, txn: &Txn) -> Result<Result<TxnResponse, ApiError>, StoreError> {
    let mut succeeded = true;
    for c in &txn.compare {
        if !c.holds(t.kv.get(&c.key)?.as_ref()) {
            succeeded = false;
            break;
        }
    }
    let branch = if succeeded { &txn.success } else { &txn.failure };
    if let Err(e) = check_branch(t, branch)? {
        return Ok(Err(e));
    }
    let mut results = Vec::with_capacity(branch.len());
    for op in branch {
        results.push(match op {
            TxnOp::Get { key } => TxnOpResult::Get(t.kv.get(key)?),
            TxnOp::Scan { prefix, limit } => TxnOpResult::Scan(t.kv.scan(prefix, *limit as usize)?),
            TxnOp::Put { key, value, lease } => TxnOpResult::Put { previous: t.put(key, value, *lease)? },
            TxnOp::PutKeeping { key, value, lease } => {
                // Checked to exist above, and no earlier write of the
                // branch touches it (validation).
                let current = t.kv.get(key)?;
                let cur = current.as_ref();
                let value = value.clone().or_else(|| cur.map(|c| c.value.clone())).unwrap_or_default();
                let lease = lease.or_else(|| cur.map(|c| c.lease)).unwrap_or(0);
                TxnOpResult::Put { previous: t.put(key, &value, lease)? }
            }
            TxnOp::Delete { key } => TxnOpResult::Delete { previous: t.delete(key)? },
            TxnOp::DeletePrefix { prefix } => TxnOpResult::DeletePrefix { deleted: t.delete_prefix(prefix)? },
            TxnOp::Range { range, limit } => {
                let opts = RangeOpts { limit: *limit as usize, count_all: true, count_only: false };
                let r = t.kv.range(range, opts)?;
                TxnOpResult::Range { kvs: r.kvs, count: r.count, more: r.more }
            }
            TxnOp::DeleteRange { range } => TxnOpResult::DeleteRange { previous: t.delete_range(range)? },
            TxnOp::Txn(nested) => match run_txn(t, nested)? {
                Ok(r) => TxnOpResult::Txn(r),
                // Checked above, so nothing of the branch was written yet
                // that this could leave half-done.
                Err(e) => return Ok(Err(e)),
            },
        });
    }
    Ok(Ok(TxnResponse { succeeded, results, revision: t.kv.revision() }))
}

/// Refuses a branch (and every branch of its nested transactions) that
/// puts to a lease that does not exist, or keeps the value or lease of a
/// key that does not exist.
fn check_branch(t: &Tables<'_, '_>, branch: &[TxnOp]) -> Result<Result<(), ApiError>, StoreError> {
    for op in branch {
        match op {
            TxnOp::Put { lease, .. } | TxnOp::PutKeeping { lease: Some(lease), .. } => {
                if let Err(e) = t.check_lease(*lease)? {
                    return Ok(Err(e));
                }
            }
            _ => {}
        }
        if let TxnOp::PutKeeping { key, .. } = op {
            if t.kv.get(key)?.is_none() {
                return Ok(Err(ApiError::KeyNotFound { key: key.clone() }));
            }
        }
        if let TxnOp::Txn(nested) = op {
            for b in [&nested.success, &nested.failure] {
                if let Err(e) = check_branch(t, b)? {
                    return Ok(Err(e));
                }
            }
        }
    }
    Ok(Ok(()))
}
