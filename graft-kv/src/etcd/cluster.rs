//! etcd's Cluster service (members, mapped onto graft's membership) and
//! Maintenance service (status, alarms, defragment, hashes, leadership).

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;

use tonic::{Request, Response, Status};

use super::convert::{self, status};
use super::pb::etcdserverpb as pb;
use super::Frontend;
use crate::mvcc::read::RangeRead;
use crate::protocol::{Consistency, KeyRange, MemberStatus};

/// The Cluster service of one member.
pub struct ClusterService(pub Frontend);

/// The Maintenance service of one member.
pub struct MaintenanceService(pub Frontend);

/// The address in an etcd URL (`http://host:port` -> `host:port`).
fn url_addr(url: &str) -> &str {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    rest.trim_end_matches('/')
}

impl Frontend {
    /// The leader's view of the membership (this member's, failing that).
    async fn membership(&self) -> Result<MemberStatus, Status> {
        let local = self.local.status_of(&self.local_addr).await.map_err(status)?;
        let leader_addr = local.members.iter().find(|m| Some(m.id) == local.leader).map(|m| m.addr.clone());
        match leader_addr {
            Some(a) if a != self.local_addr => Ok(self.cluster.status_of(&a).await.unwrap_or(local)),
            _ => Ok(local),
        }
    }

    /// The members as etcd lists them: peer URL = graft address, client
    /// URL = the member's etcd address where the cluster file names it.
    fn members(&self, st: &MemberStatus) -> Vec<pb::Member> {
        st.members
            .iter()
            .map(|m| pb::Member {
                id: m.id,
                name: format!("member-{}", m.id),
                peer_ur_ls: vec![format!("http://{}", m.addr)],
                client_ur_ls: self
                    .etcd_addrs
                    .get(&m.id)
                    .map(|a| vec![format!("http://{a}")])
                    .unwrap_or_default(),
                is_learner: !m.voter,
            })
            .collect()
    }

    async fn member_list(&self) -> Result<Vec<pb::Member>, Status> {
        Ok(self.members(&self.membership().await?))
    }
}

#[tonic::async_trait]
impl pb::cluster_server::Cluster for ClusterService {
    async fn member_add(
        &self,
        request: Request<pb::MemberAddRequest>,
    ) -> Result<Response<pb::MemberAddResponse>, Status> {
        let r = request.into_inner();
        let Some(url) = r.peer_ur_ls.first() else {
            return Err(Status::invalid_argument("etcdserver: a new member needs a peer URL"));
        };
        let addr = url_addr(url).to_string();
        let st = self.0.membership().await?;
        if st.members.iter().any(|m| m.addr == addr) {
            return Err(Status::failed_precondition("etcdserver: Peer URLs already exists"));
        }
        // etcd picks the id; graft's are small numbers: the next one free.
        let id = st.members.iter().map(|m| m.id).max().unwrap_or(0) + 1;
        self.0.cluster.add_member(id, addr.clone(), !r.is_learner).await.map_err(status)?;
        let member = pb::Member {
            id,
            name: String::new(),
            peer_ur_ls: vec![format!("http://{addr}")],
            client_ur_ls: Vec::new(),
            is_learner: true,
        };
        let members = self.0.member_list().await?;
        Ok(Response::new(pb::MemberAddResponse { header: self.0.header(0), member: Some(member), members }))
    }

    async fn member_remove(
        &self,
        request: Request<pb::MemberRemoveRequest>,
    ) -> Result<Response<pb::MemberRemoveResponse>, Status> {
        let id = request.into_inner().id;
        let st = self.0.membership().await?;
        if !st.members.iter().any(|m| m.id == id) {
            return Err(Status::not_found("etcdserver: member not found"));
        }
        self.0.cluster.remove_member(id).await.map_err(status)?;
        let members = self.0.member_list().await?;
        Ok(Response::new(pb::MemberRemoveResponse { header: self.0.header(0), members }))
    }

    async fn member_update(
        &self,
        request: Request<pb::MemberUpdateRequest>,
    ) -> Result<Response<pb::MemberUpdateResponse>, Status> {
        let r = request.into_inner();
        let Some(url) = r.peer_ur_ls.first() else {
            return Err(Status::invalid_argument("etcdserver: an update needs a peer URL"));
        };
        let st = self.0.membership().await?;
        let Some(m) = st.members.iter().find(|m| m.id == r.id) else {
            return Err(Status::not_found("etcdserver: member not found"));
        };
        // Re-adding a known member changes its address and keeps its role.
        self.0.cluster.add_member(r.id, url_addr(url).to_string(), m.voter).await.map_err(status)?;
        let members = self.0.member_list().await?;
        Ok(Response::new(pb::MemberUpdateResponse { header: self.0.header(0), members }))
    }

    async fn member_list(
        &self,
        _request: Request<pb::MemberListRequest>,
    ) -> Result<Response<pb::MemberListResponse>, Status> {
        let members = self.0.member_list().await?;
        Ok(Response::new(pb::MemberListResponse { header: self.0.header(0), members }))
    }

    async fn member_promote(
        &self,
        request: Request<pb::MemberPromoteRequest>,
    ) -> Result<Response<pb::MemberPromoteResponse>, Status> {
        let id = request.into_inner().id;
        let st = self.0.membership().await?;
        match st.members.iter().find(|m| m.id == id) {
            None => return Err(Status::not_found("etcdserver: member not found")),
            Some(m) if m.voter => {
                return Err(Status::failed_precondition("etcdserver: can only promote a learner member"))
            }
            Some(_) => {}
        }
        self.0.cluster.promote_member(id).await.map_err(status)?;
        let members = self.0.member_list().await?;
        Ok(Response::new(pb::MemberPromoteResponse { header: self.0.header(0), members }))
    }
}

/// A hash of the key-value state: every key with its revisions and value,
/// in key order (CRC-32; equal on every member at the same revision, not
/// comparable with etcd's own numbers).
fn hash_kvs(read: &RangeRead) -> u32 {
    let mut h = crc32fast::Hasher::new();
    for (k, kv) in &read.kvs {
        for part in [&k[..], &kv.value[..]] {
            h.update(&(part.len() as u64).to_be_bytes());
            h.update(part);
        }
        for n in [kv.create_revision, kv.mod_revision, kv.version, kv.lease] {
            h.update(&n.to_be_bytes());
        }
    }
    h.finalize()
}

#[tonic::async_trait]
impl pb::maintenance_server::Maintenance for MaintenanceService {
    async fn alarm(&self, request: Request<pb::AlarmRequest>) -> Result<Response<pb::AlarmResponse>, Status> {
        let r = request.into_inner();
        if r.action != pb::alarm_request::AlarmAction::Get as i32 {
            return Err(Status::unimplemented("graft raises and clears its alarms itself"));
        }
        // graft raises no alarm yet (a full disk stops the member).
        Ok(Response::new(pb::AlarmResponse { header: self.0.header(0), alarms: Vec::new() }))
    }

    async fn status(
        &self,
        _request: Request<pb::StatusRequest>,
    ) -> Result<Response<pb::StatusResponse>, Status> {
        let f = &self.0;
        let st = f.local.status_of(&f.local_addr).await.map_err(status)?;
        f.term.store(st.term, Ordering::Relaxed);
        let db_size =
            f.db_files.iter().filter_map(|p| std::fs::metadata(p).ok()).map(|m| m.len()).sum::<u64>();
        let db_size = i64::try_from(db_size).unwrap_or(i64::MAX);
        let is_learner = st.members.iter().any(|m| m.id == st.id && !m.voter);
        Ok(Response::new(pb::StatusResponse {
            header: f.header(st.applied),
            version: format!("3.5.0+graft.{}", env!("CARGO_PKG_VERSION")),
            db_size,
            leader: st.leader.unwrap_or(0),
            raft_index: st.commit,
            raft_term: st.term,
            raft_applied_index: st.applied,
            errors: Vec::new(),
            db_size_in_use: db_size,
            is_learner,
            ..Default::default()
        }))
    }

    async fn defragment(
        &self,
        _request: Request<pb::DefragmentRequest>,
    ) -> Result<Response<pb::DefragmentResponse>, Status> {
        // redb reuses freed pages itself; there is nothing to defragment.
        Ok(Response::new(pb::DefragmentResponse { header: self.0.header(0) }))
    }

    async fn hash(&self, _request: Request<pb::HashRequest>) -> Result<Response<pb::HashResponse>, Status> {
        Err(Status::unimplemented("graft does not hash its raw database; use HashKV"))
    }

    async fn hash_kv(
        &self,
        request: Request<pb::HashKvRequest>,
    ) -> Result<Response<pb::HashKvResponse>, Status> {
        let at = convert::unrev(request.into_inner().revision);
        let f = &self.0;
        let all = KeyRange { start: bytes::Bytes::from_static(&[0]), end: bytes::Bytes::from_static(&[0]) };
        let read = f.local.range(all, 0, Consistency::Stale, at, false).await.map_err(status)?;
        let st = f.local.status_of(&f.local_addr).await.map_err(status)?;
        let revision = if at == 0 { read.revision } else { at };
        Ok(Response::new(pb::HashKvResponse {
            header: f.header(read.revision),
            hash: hash_kvs(&read),
            compact_revision: convert::rev(st.compacted),
            hash_revision: convert::rev(revision),
        }))
    }

    type SnapshotStream =
        std::pin::Pin<Box<dyn futures::Stream<Item = Result<pb::SnapshotResponse, Status>> + Send>>;

    async fn snapshot(
        &self,
        _request: Request<pb::SnapshotRequest>,
    ) -> Result<Response<Self::SnapshotStream>, Status> {
        Err(Status::unimplemented(
            "graft's backups come with `graft-cli snapshot save` (not yet through etcd's API)",
        ))
    }

    async fn move_leader(
        &self,
        request: Request<pb::MoveLeaderRequest>,
    ) -> Result<Response<pb::MoveLeaderResponse>, Status> {
        let to = request.into_inner().target_id;
        self.0.cluster.transfer_leader(to).await.map_err(status)?;
        Ok(Response::new(pb::MoveLeaderResponse { header: self.0.header(0) }))
    }

    async fn downgrade(
        &self,
        _request: Request<pb::DowngradeRequest>,
    ) -> Result<Response<pb::DowngradeResponse>, Status> {
        Err(Status::unimplemented("graft has no cluster version to downgrade"))
    }
}

/// Parses the `[etcd]` addresses of a cluster file (member id -> address).
pub fn parse_addrs(members: &BTreeMap<String, String>) -> Result<BTreeMap<u64, String>, String> {
    members
        .iter()
        .map(|(id, a)| {
            id.parse::<u64>()
                .map(|id| (id, a.clone()))
                .map_err(|_| format!("[etcd] member id {id:?} is not a number"))
        })
        .collect()
}
