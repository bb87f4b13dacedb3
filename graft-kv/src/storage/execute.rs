//! What one write does to the multi-version store: puts, deletes,
//! compare-and-swap, prefix deletes, transactions and compactions, each at
//! the revision of its entry.

use crate::command::WriteOp;
use crate::error::StoreError;
use crate::mvcc::{MvccMeta, Writer};
use crate::protocol::{ApiError, Expect, Response, Txn, TxnOp, TxnOpResult, TxnResponse};

/// An answer for the client, or the database failing.
pub type Outcome = Result<Result<Response, ApiError>, StoreError>;

/// Carries out `op` at the writer's revision. `meta` is the store's
/// position, which a compaction moves.
pub fn execute(w: &mut Writer<'_>, meta: &mut MvccMeta, op: &WriteOp) -> Outcome {
    let revision = w.revision();
    Ok(Ok(match op {
        WriteOp::Put { key, value } => {
            w.put(key, value, 0)?;
            Response::Put { revision }
        }
        WriteOp::Delete { key } => Response::Delete { previous: w.delete(key)?, revision },
        WriteOp::DeletePrefix { prefix } => {
            let deleted = w.delete_prefix(prefix)?.len() as u64;
            Response::DeletePrefix { deleted, revision }
        }
        WriteOp::Cas { key, expect, value } => {
            let cur = w.get(key)?;
            let matches = match expect {
                Expect::Value(want) => cur.as_ref().map(|c| &c.value) == want.as_ref(),
                Expect::ModRevision(r) => cur.as_ref().map_or(0, |c| c.mod_revision) == *r,
                Expect::Version(v) => cur.as_ref().map_or(0, |c| c.version) == *v,
            };
            if matches {
                w.put(key, value, 0)?;
                Response::Cas { swapped: true, current: w.get(key)?, revision }
            } else {
                Response::Cas { swapped: false, current: cur, revision }
            }
        }
        WriteOp::Txn(txn) => Response::Txn(run_txn(w, txn)?),
        WriteOp::Compact { revision: target } => {
            if *target > revision {
                return Ok(Err(ApiError::FutureRevision { requested: *target, current: revision }));
            }
            if *target <= meta.compacted {
                return Ok(Err(ApiError::Compacted { requested: *target, oldest: meta.compacted }));
            }
            meta.compacted = *target;
            Response::Compacted { compacted: *target, revision }
        }
        WriteOp::Note(_) => Response::Done,
    }))
}

/// Evaluates the compares against the state before the transaction, then
/// runs one branch in order: each operation sees the branch's earlier
/// writes.
fn run_txn(w: &mut Writer<'_>, txn: &Txn) -> Result<TxnResponse, StoreError> {
    let mut succeeded = true;
    for c in &txn.compare {
        if !c.holds(w.get(&c.key)?.as_ref()) {
            succeeded = false;
            break;
        }
    }
    let branch = if succeeded { &txn.success } else { &txn.failure };
    let mut results = Vec::with_capacity(branch.len());
    for op in branch {
        results.push(match op {
            TxnOp::Get { key } => TxnOpResult::Get(w.get(key)?),
            TxnOp::Scan { prefix, limit } => TxnOpResult::Scan(w.scan(prefix, *limit as usize)?),
            TxnOp::Put { key, value } => TxnOpResult::Put { previous: w.put(key, value, 0)? },
            TxnOp::Delete { key } => TxnOpResult::Delete { previous: w.delete(key)? },
            TxnOp::DeletePrefix { prefix } => {
                TxnOpResult::DeletePrefix { deleted: w.delete_prefix(prefix)?.len() as u64 }
            }
        });
    }
    Ok(TxnResponse { succeeded, results, revision: w.revision() })
}
