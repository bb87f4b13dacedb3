//! Client requests: writes are proposed, linearizable reads go through
//! ReadIndex, stale reads, status, metrics and leadership transfers are
//! answered at once.

use bytes::Bytes;
use tracing::error;

use crate::command::{Command, WriteOp};
use crate::error::StoreError;
use crate::mailbox::Responder;
use crate::mvcc::read::RangeOpts;
use crate::protocol::{ApiError, Consistency, LeaderHint, MemberInfo, MemberStatus, Request, Response};
use crate::storage::StateMachine;

use super::clock::now_ms;
use super::{Node, NodeError};

impl Node {
    pub(super) fn leader_hint(&self) -> Option<LeaderHint> {
        let id = self.raw.leader()?;
        let addr = self.addr_of(id)?;
        Some(LeaderHint { id, addr })
    }

    pub(super) fn not_leader(&self) -> ApiError {
        ApiError::NotLeader { leader: self.leader_hint() }
    }

    pub(super) fn handle_request(&mut self, req: Request, responder: Responder) -> Result<(), NodeError> {
        if let Err(e) = req.validate() {
            responder.send(Err(e));
            return Ok(());
        }
        match req {
            Request::Put { .. }
            | Request::Delete { .. }
            | Request::Cas { .. }
            | Request::DeletePrefix { .. }
            | Request::Txn { .. }
            | Request::Compact { .. }
            | Request::LeaseGrant { .. }
            | Request::LeaseRevoke { .. }
            | Request::LeaseKeepAlive { .. } => self.propose_write(req, responder),
            Request::AddMember { .. } | Request::PromoteMember { .. } | Request::RemoveMember { .. } => {
                self.propose_member_change(req, responder)
            }
            Request::Get { consistency: Consistency::Stale, .. }
            | Request::Scan { consistency: Consistency::Stale, .. }
            | Request::Range { consistency: Consistency::Stale, .. } => {
                let result = self.serve_reads_now(vec![(req, responder)]);
                result.map_err(NodeError::from)
            }
            Request::Get { .. }
            | Request::Scan { .. }
            | Request::Range { .. }
            | Request::LeaseTimeToLive { .. }
            | Request::LeaseList => {
                let ctx = self.next_ctx;
                match self.raw.read_index(ctx) {
                    Ok(()) => {
                        self.next_ctx += 1;
                        self.pending_reads.insert(ctx, (req, responder));
                    }
                    Err(graft_core::Error::NotLeader { .. }) => responder.send(Err(self.not_leader())),
                    Err(e) => return Err(e.into()),
                }
                Ok(())
            }
            Request::Watch { .. } | Request::CancelWatch { .. } => {
                // The connection serves watches itself (`watch::stream`).
                responder.send(Err(ApiError::Invalid("a watch is served by its connection".into())));
                Ok(())
            }
            Request::Status => {
                responder.send(Ok(Response::Status(Box::new(self.status()))));
                Ok(())
            }
            Request::Metrics => {
                let mut m = self.metrics.clone();
                m.messages_dropped = self.transport.dropped();
                responder.send(Ok(Response::Metrics(m)));
                Ok(())
            }
            Request::TransferLeader { to } => {
                match self.raw.transfer_leader(to) {
                    Ok(()) if to == self.id() => responder.send(Ok(Response::Done)),
                    Ok(()) => {
                        if let Some((_, old, _)) = self.transfer.take() {
                            old.send(Err(ApiError::Unavailable("superseded by another transfer".into())));
                        }
                        self.transfer = Some((to, responder, self.opts.election_ticks * 2));
                    }
                    Err(graft_core::Error::NotLeader { .. }) => responder.send(Err(self.not_leader())),
                    Err(e @ graft_core::Error::NotAVoter(_)) => {
                        responder.send(Err(ApiError::Invalid(e.to_string())))
                    }
                    Err(e) => responder.send(Err(ApiError::Unavailable(e.to_string()))),
                }
                Ok(())
            }
        }
    }

    pub(super) fn propose_write(&mut self, req: Request, responder: Responder) -> Result<(), NodeError> {
        let (session, op) = match req {
            Request::Put { key, value, lease, session } => (session, WriteOp::Put { key, value, lease }),
            Request::LeaseGrant { ttl_ms, id, session } => (session, WriteOp::LeaseGrant { id, ttl_ms }),
            Request::LeaseRevoke { id, session } => (session, WriteOp::LeaseRevoke { id }),
            Request::LeaseKeepAlive { ids } => (None, WriteOp::LeaseKeepAlive { ids }),
            Request::Delete { key, session } => (session, WriteOp::Delete { key }),
            Request::Cas { key, expect, value, session } => (session, WriteOp::Cas { key, expect, value }),
            Request::DeletePrefix { prefix, session } => (session, WriteOp::DeletePrefix { prefix }),
            Request::Txn { txn, session } => (session, WriteOp::Txn(txn)),
            Request::Compact { revision, session } => (session, WriteOp::Compact { revision }),
            _ => {
                responder.send(Err(ApiError::Invalid("not a write".into())));
                return Ok(());
            }
        };
        let cmd = Command { session, time_ms: now_ms(), op };
        let data = match postcard::to_stdvec(&cmd) {
            Ok(d) => Bytes::from(d),
            Err(e) => {
                responder.send(Err(ApiError::Internal(e.to_string())));
                return Ok(());
            }
        };
        match self.raw.propose(data) {
            Ok(index) => {
                self.pending_writes.insert(index, (self.raw.term(), responder));
            }
            // Not proposed, so certainly not applied: safe to retry anywhere.
            Err(graft_core::Error::NotLeader { .. }) => responder.send(Err(self.not_leader())),
            Err(graft_core::Error::TransferInProgress) => {
                responder.send(Err(ApiError::NotLeader { leader: None }));
            }
            Err(e) => return Err(e.into()),
        }
        Ok(())
    }

    /// Serves reads from the local state machine, in one read transaction.
    pub(super) fn serve_reads_now(&mut self, reads: Vec<(Request, Responder)>) -> Result<(), StoreError> {
        if reads.is_empty() {
            return Ok(());
        }
        let rtx = self.sm.begin_read()?;
        let view = StateMachine::view(&rtx)?;
        let revision = view.revision();
        let lease_now = self.lease_now();
        for (req, responder) in reads {
            let result = match &req {
                Request::Get { key, revision: at, .. } => view
                    .get(key, *at)
                    .map(|r| r.map(|kv| Response::Get { kv, revision: at_or(*at, revision) })),
                Request::Scan { prefix, limit, revision: at, .. } => view
                    .scan(prefix, *limit as usize, *at)
                    .map(|r| r.map(|kvs| Response::Scan { kvs, revision: at_or(*at, revision) })),
                Request::Range { range, limit, revision: at, count_only, .. } => {
                    let opts = RangeOpts { limit: *limit as usize, count_all: true, count_only: *count_only };
                    view.range(range, opts, *at).map(|r| {
                        r.map(|r| Response::Range {
                            kvs: r.kvs,
                            count: r.count,
                            more: r.more,
                            // As etcd: the store's revision, whatever was read.
                            revision,
                        })
                    })
                }
                Request::LeaseTimeToLive { id } => super::leases::describe(&rtx, *id, lease_now),
                Request::LeaseList => super::leases::list(&rtx, lease_now),
                _ => Ok(Ok(Response::Done)),
            };
            match result {
                Ok(r) => responder.send(r),
                Err(e) => {
                    error!("{}, read failed: {e}", self.id());
                    responder.send(Err(ApiError::Internal(e.to_string())));
                }
            }
        }
        Ok(())
    }

    pub(super) fn status(&self) -> MemberStatus {
        let st = self.raw.status();
        let members = st
            .conf
            .members()
            .map(|id| MemberInfo {
                id,
                addr: self.addr_of(id).unwrap_or_default(),
                voter: st.conf.voters.contains(&id),
            })
            .collect();
        MemberStatus {
            id: st.id,
            cluster: self.opts.cluster.clone(),
            role: format!("{:?}", st.soft_state.role),
            term: st.hard_state.term,
            leader: st.soft_state.leader,
            commit: st.hard_state.commit,
            applied: self.sm.applied(),
            first_index: st.first_index,
            last_index: st.last_index,
            compacted: self.sm.mvcc().compacted,
            members,
        }
    }
}

/// The revision a read at `at` (0: the latest) reports.
fn at_or(at: u64, latest: u64) -> u64 {
    if at == 0 {
        latest
    } else {
        at
    }
}
