//! etcd's v3 API over gRPC, so that etcdctl and every etcd client library
//! work against graft unchanged. Each etcd request is translated onto
//! graft's own operations and sent with [`Client`]: to the leader (with
//! not-leader hints, retries and exactly-once sessions) for writes and
//! linearizable reads, to this member alone for serializable reads and
//! watches. See docs/etcd-compatibility.md for what is supported.
//!
//! # Layout
//! - this file: the generated messages ([`pb`]), the shared [`Frontend`]
//!   and [`serve`];
//! - [`convert`]: headers, records and errors in etcd's terms;
//! - [`kv`]: the KV service (Range, Put, DeleteRange, Txn, Compact);
//! - [`lease`]: the Lease service;
//! - [`watch`]: the Watch service;
//! - [`cluster`]: the Cluster and Maintenance services.

pub mod cluster;
pub mod convert;
pub mod kv;
pub mod lease;
pub mod watch;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::client::{Client, ClientOptions};

/// The messages and service traits generated from `proto/etcd`.
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod pb {
    /// `mvccpb`: key-values and events.
    pub mod mvccpb {
        tonic::include_proto!("mvccpb");
    }
    /// `authpb`: users and roles.
    pub mod authpb {
        tonic::include_proto!("authpb");
    }
    /// `etcdserverpb`: the services and their requests.
    pub mod etcdserverpb {
        tonic::include_proto!("etcdserverpb");
    }
}

/// What every etcd service of one member shares.
#[derive(Clone)]
pub struct Frontend {
    /// The whole cluster: writes and linearizable reads go to the leader.
    pub cluster: Client,
    /// This member alone: serializable reads and watches.
    pub local: Client,
    /// This member's address (graft's protocol).
    pub local_addr: String,
    /// The cluster id as etcd's 64-bit number (a hash of graft's name).
    pub cluster_id: u64,
    /// This member's id.
    pub member_id: u64,
    /// The last Raft term this member reported (refreshed every 500 ms).
    pub term: Arc<AtomicU64>,
    /// Each member's etcd address, as the cluster file names them.
    pub etcd_addrs: std::collections::BTreeMap<u64, String>,
    /// This member's database files (their sizes are etcd's `dbSize`).
    pub db_files: Vec<std::path::PathBuf>,
    /// The highest revision seen in an answer or this member's status:
    /// the header of answers that carry none of their own.
    pub revision: Arc<AtomicU64>,
}

impl Frontend {
    /// A frontend for member `member_id` of `cluster`, reachable at
    /// `local_addr`, whose peers are at `endpoints`.
    pub fn new(cluster: &str, member_id: u64, local_addr: String, endpoints: Vec<String>) -> Frontend {
        let mut all = vec![local_addr.clone()];
        all.extend(endpoints.into_iter().filter(|e| *e != local_addr));
        let timeout = Duration::from_secs(5);
        Frontend {
            cluster: Client::new(ClientOptions { endpoints: all, timeout }),
            local: Client::new(ClientOptions { endpoints: vec![local_addr.clone()], timeout }),
            local_addr,
            cluster_id: convert::cluster_id(cluster),
            member_id,
            term: Arc::new(AtomicU64::new(0)),
            etcd_addrs: Default::default(),
            db_files: Vec::new(),
            revision: Arc::new(AtomicU64::new(0)),
        }
    }

    /// A response header at `revision` (0: the latest revision known).
    pub fn header(&self, revision: u64) -> Option<pb::etcdserverpb::ResponseHeader> {
        let latest = self.revision.fetch_max(revision, Ordering::Relaxed).max(revision);
        let revision = if revision == 0 { latest } else { revision };
        Some(pb::etcdserverpb::ResponseHeader {
            cluster_id: self.cluster_id,
            member_id: self.member_id,
            revision: convert::rev(revision),
            raft_term: self.term.load(Ordering::Relaxed),
        })
    }
}

/// Serves etcd's API on `listener` until `shutdown`.
pub async fn serve(
    listener: TcpListener,
    frontend: Frontend,
    shutdown: CancellationToken,
) -> Result<(), tonic::transport::Error> {
    use pb::etcdserverpb::{
        cluster_server::ClusterServer, kv_server::KvServer, lease_server::LeaseServer,
        maintenance_server::MaintenanceServer, watch_server::WatchServer,
    };
    // The term in headers, kept fresh off the request path.
    {
        let (f, stop) = (frontend.clone(), shutdown.clone());
        tokio::spawn(async move {
            while !stop.is_cancelled() {
                if let Ok(st) = f.local.status_of(&f.local_addr).await {
                    f.term.store(st.term, Ordering::Relaxed);
                    f.revision.fetch_max(st.applied, Ordering::Relaxed);
                }
                tokio::select! {
                    _ = stop.cancelled() => {}
                    _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                }
            }
        });
    }
    let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
    tonic::transport::Server::builder()
        .add_service(KvServer::new(kv::KvService(frontend.clone())))
        .add_service(LeaseServer::new(lease::LeaseService(frontend.clone())))
        .add_service(WatchServer::new(watch::WatchService(frontend.clone())))
        .add_service(ClusterServer::new(cluster::ClusterService(frontend.clone())))
        .add_service(MaintenanceServer::new(cluster::MaintenanceService(frontend)))
        .serve_with_incoming_shutdown(incoming, shutdown.cancelled_owned())
        .await
}
