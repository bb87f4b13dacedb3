//! The leader's side of leases: keeping the lease clock fresh, finding
//! expired leases, and revoking them through the log once a ReadIndex
//! round has confirmed it still leads; and the lease reads.
//!
//! See [`crate::lease`] for the clock and why a failover neither resets nor
//! shortens a lease.

use std::time::{Duration, Instant};

use bytes::Bytes;
use graft_core::Role;
use redb::ReadTransaction;
use tracing::debug;

use crate::command::{Command, WriteOp};
use crate::error::StoreError;
use crate::lease::{self, LEASES};
use crate::mailbox::{NodeInput, Responder};
use crate::protocol::{ApiError, Consistency, LeaseInfo, Request, Response};

use super::clock::now_ms;
use super::{Node, NodeError};

/// How often (in ticks) the leader looks after leases.
pub(super) const EVERY_TICKS: u64 = 10;

/// The most leases one expiry entry revokes.
const EXPIRE_BATCH: usize = 1000;

impl Node {
    /// The time leases are measured against here: the leader's clock once
    /// the lease clock is in its term, else the latest time the log shows.
    pub(super) fn lease_now(&self) -> u64 {
        let clock = self.sm.lease_clock();
        if self.raw.role() == Role::Leader && clock.term == self.raw.term() {
            now_ms().max(clock.ms)
        } else {
            clock.ms
        }
    }

    /// On the leader: writes a clock entry when the lease clock is not in
    /// its term yet, or every check while leases exist (so that a failover
    /// extends leases by little); proposes revoking expired leases once a
    /// ReadIndex round confirmed the leadership.
    pub(super) fn tend_leases(&mut self) -> Result<(), NodeError> {
        if self.raw.role() != Role::Leader {
            return Ok(());
        }
        let clock = self.sm.lease_clock();
        let rtx = self.sm.begin_read()?;
        let table = rtx.open_table(LEASES).map_err(StoreError::from)?;
        let any = redb::ReadableTableMetadata::len(&table).map_err(StoreError::from)? > 0;
        if clock.term != self.raw.term() || any {
            self.propose_internal(WriteOp::LeaseClock);
        }
        if clock.term != self.raw.term()
            || self.lease_check.is_some_and(|t| t.elapsed() < Duration::from_secs(2))
        {
            return Ok(());
        }
        let due = lease::due(&table, now_ms(), EXPIRE_BATCH)?;
        if due.is_empty() {
            return Ok(());
        }
        // Confirm the leadership first: a leader that was stalled and
        // deposed meanwhile must not revoke anything.
        self.lease_check = Some(Instant::now());
        let (tx, rx) = tokio::sync::oneshot::channel();
        let confirm = Request::Get { key: Bytes::new(), consistency: Consistency::Linearizable, revision: 0 };
        self.handle_request(confirm, Responder::Once(tx))?;
        let inputs = self.opts.inputs.clone();
        tokio::spawn(async move {
            if let Ok(Ok(_)) = rx.await {
                let _ = inputs.send(NodeInput::ExpireLeases(due)).await;
            }
        });
        Ok(())
    }

    /// Proposes revoking `ids` if they are still expired when applied.
    pub(super) fn expire_leases(&mut self, ids: Vec<u64>) {
        self.lease_check = None;
        if self.raw.role() == Role::Leader {
            debug!("{}, revoking expired leases {ids:?}", self.id());
            self.propose_internal(WriteOp::LeaseExpire { ids });
        }
    }

    /// Proposes an entry that changes no data but moves the lease clock
    /// (and gives every member an applied batch).
    pub(super) fn propose_clock(&mut self) {
        self.propose_internal(WriteOp::LeaseClock);
    }

    /// Proposes a command nobody waits for.
    fn propose_internal(&mut self, op: WriteOp) {
        let cmd = Command { session: None, time_ms: now_ms(), op };
        if let Ok(data) = postcard::to_stdvec(&cmd) {
            let _ = self.raw.propose(Bytes::from(data));
        }
    }
}

/// `LeaseTimeToLive`: the lease's TTL, time left and keys.
pub(super) fn describe(
    rtx: &ReadTransaction,
    id: u64,
    now: u64,
) -> Result<Result<Response, ApiError>, StoreError> {
    let table = rtx.open_table(LEASES)?;
    Ok(match lease::describe(&table, id)? {
        Some((rec, keys)) => Ok(Response::Lease(LeaseInfo {
            id,
            ttl_ms: rec.ttl_ms,
            remaining_ms: rec.deadline_ms.saturating_sub(now),
            keys,
        })),
        None => Err(ApiError::LeaseNotFound { id }),
    })
}

/// `LeaseList`: every lease, without keys.
pub(super) fn list(rtx: &ReadTransaction, now: u64) -> Result<Result<Response, ApiError>, StoreError> {
    let table = rtx.open_table(LEASES)?;
    let leases = lease::list(&table)?
        .into_iter()
        .map(|(id, rec)| LeaseInfo {
            id,
            ttl_ms: rec.ttl_ms,
            remaining_ms: rec.deadline_ms.saturating_sub(now),
            keys: Vec::new(),
        })
        .collect();
    Ok(Ok(Response::Leases(leases)))
}
