//! etcd's Lease service: Grant, Revoke, KeepAlive (a stream), TimeToLive
//! and Leases, on graft's leases (TTLs in seconds on etcd's side, in ms on
//! graft's).

use std::pin::Pin;

use futures::{Stream, StreamExt};
use tokio::sync::mpsc;
use tonic::{Request, Response, Status, Streaming};

use super::convert::{self, status};
use super::pb::etcdserverpb as pb;
use super::Frontend;
use crate::protocol::{ApiError, MAX_LEASE_TTL_MS};

/// The Lease service of one member.
pub struct LeaseService(pub Frontend);

/// Whole seconds left of `ms`, rounded up.
fn secs(ms: u64) -> i64 {
    i64::try_from(ms.div_ceil(1000)).unwrap_or(i64::MAX)
}

#[tonic::async_trait]
impl pb::lease_server::Lease for LeaseService {
    async fn lease_grant(
        &self,
        request: Request<pb::LeaseGrantRequest>,
    ) -> Result<Response<pb::LeaseGrantResponse>, Status> {
        let r = request.into_inner();
        // etcd raises a TTL below its minimum to it; graft's is a second.
        let ttl_ms = u64::try_from(r.ttl.max(1)).unwrap_or(1).saturating_mul(1000);
        if ttl_ms > MAX_LEASE_TTL_MS {
            return Err(Status::out_of_range("etcdserver: too large lease TTL"));
        }
        if r.id < 0 {
            return Err(Status::invalid_argument("etcdserver: a lease id is not negative"));
        }
        let (id, ttl_ms, revision) =
            self.0.cluster.lease_grant_id(ttl_ms, convert::unrev(r.id)).await.map_err(status)?;
        Ok(Response::new(pb::LeaseGrantResponse {
            header: self.0.header(revision),
            id: convert::lease_id(id),
            ttl: secs(ttl_ms),
            error: String::new(),
        }))
    }

    async fn lease_revoke(
        &self,
        request: Request<pb::LeaseRevokeRequest>,
    ) -> Result<Response<pb::LeaseRevokeResponse>, Status> {
        let id = convert::unrev(request.into_inner().id);
        self.0.cluster.lease_revoke(id).await.map_err(status)?;
        Ok(Response::new(pb::LeaseRevokeResponse { header: self.0.header(0) }))
    }

    type LeaseKeepAliveStream =
        Pin<Box<dyn Stream<Item = Result<pb::LeaseKeepAliveResponse, Status>> + Send>>;

    async fn lease_keep_alive(
        &self,
        request: Request<Streaming<pb::LeaseKeepAliveRequest>>,
    ) -> Result<Response<Self::LeaseKeepAliveStream>, Status> {
        let mut inbound = request.into_inner();
        let (tx, rx) = mpsc::channel(64);
        let f = self.0.clone();
        tokio::spawn(async move {
            while let Some(Ok(req)) = inbound.next().await {
                let id = convert::unrev(req.id);
                let answer = match f.cluster.lease_keep_alive(vec![id]).await {
                    // etcd answers TTL 0 for a lease that does not exist.
                    Ok(v) => Ok(pb::LeaseKeepAliveResponse {
                        header: f.header(0),
                        id: req.id,
                        ttl: v.first().and_then(|(_, ttl)| *ttl).map_or(0, secs),
                    }),
                    Err(e) => Err(status(e)),
                };
                if tx.send(answer).await.is_err() {
                    return;
                }
            }
        });
        Ok(Response::new(Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))))
    }

    async fn lease_time_to_live(
        &self,
        request: Request<pb::LeaseTimeToLiveRequest>,
    ) -> Result<Response<pb::LeaseTimeToLiveResponse>, Status> {
        let r = request.into_inner();
        match self.0.cluster.lease_ttl(convert::unrev(r.id)).await {
            Ok(info) => Ok(Response::new(pb::LeaseTimeToLiveResponse {
                header: self.0.header(0),
                id: r.id,
                ttl: secs(info.remaining_ms),
                granted_ttl: secs(info.ttl_ms),
                keys: if r.keys { info.keys.iter().map(|k| k.to_vec()).collect() } else { Vec::new() },
            })),
            // etcd answers TTL -1 for a lease that does not exist.
            Err(crate::client::ClientError::Api(ApiError::LeaseNotFound { .. })) => {
                Ok(Response::new(pb::LeaseTimeToLiveResponse {
                    header: self.0.header(0),
                    id: r.id,
                    ttl: -1,
                    granted_ttl: 0,
                    keys: Vec::new(),
                }))
            }
            Err(e) => Err(status(e)),
        }
    }

    async fn lease_leases(
        &self,
        _request: Request<pb::LeaseLeasesRequest>,
    ) -> Result<Response<pb::LeaseLeasesResponse>, Status> {
        let leases = self.0.cluster.leases().await.map_err(status)?;
        Ok(Response::new(pb::LeaseLeasesResponse {
            header: self.0.header(0),
            leases: leases.iter().map(|l| pb::LeaseStatus { id: convert::lease_id(l.id) }).collect(),
        }))
    }
}
