//! etcd's KV service: Range, Put, DeleteRange, Txn and Compact, on graft's
//! range reads, puts, transactions and compaction.

use bytes::Bytes;
use tonic::{Request, Response, Status};

use super::convert::{self, key_not_provided, status};
use super::pb::etcdserverpb as pb;
use super::pb::mvccpb;
use super::Frontend;
use crate::protocol::{
    Compare, CompareOp, CompareTarget, Consistency, KeyRange, KeyValue, Txn, TxnOp, TxnOpResult,
};

/// The KV service of one member.
pub struct KvService(pub Frontend);

/// The range a request names (`key` with etcd's `range_end`).
fn key_range(key: &[u8], range_end: &[u8]) -> Result<KeyRange, Status> {
    if key.is_empty() {
        return Err(key_not_provided());
    }
    Ok(KeyRange { start: Bytes::copy_from_slice(key), end: Bytes::copy_from_slice(range_end) })
}

/// Whether a range request needs every key of its range before the
/// limit applies (a sort other than by key ascending, or a filter).
fn needs_all(r: &pb::RangeRequest) -> bool {
    let by_key = r.sort_target == pb::range_request::SortTarget::Key as i32;
    let sorted = r.sort_order != pb::range_request::SortOrder::None as i32
        && !(by_key && r.sort_order == pb::range_request::SortOrder::Ascend as i32);
    let sorted_by_other = r.sort_order == pb::range_request::SortOrder::None as i32 && !by_key;
    sorted
        || sorted_by_other
        || r.min_mod_revision != 0
        || r.max_mod_revision != 0
        || r.min_create_revision != 0
        || r.max_create_revision != 0
}

/// The limit to read with: all keys when filtering or sorting first.
fn read_limit(r: &pb::RangeRequest) -> u32 {
    if needs_all(r) {
        0
    } else {
        u32::try_from(r.limit.max(0)).unwrap_or(u32::MAX)
    }
}

/// Filters, sorts, limits and shapes a range's keys as etcd does: `count`
/// is the range's size before filtering, `more` whether the limit cut.
fn range_response(
    mut kvs: Vec<(Bytes, KeyValue)>,
    count: u64,
    mut more: bool,
    r: &pb::RangeRequest,
) -> pb::RangeResponse {
    let within = |v: u64, min: i64, max: i64| {
        (min == 0 || convert::rev(v) >= min) && (max == 0 || convert::rev(v) <= max)
    };
    kvs.retain(|(_, kv)| {
        within(kv.mod_revision, r.min_mod_revision, r.max_mod_revision)
            && within(kv.create_revision, r.min_create_revision, r.max_create_revision)
    });
    use pb::range_request::{SortOrder, SortTarget};
    let order = SortOrder::try_from(r.sort_order).unwrap_or(SortOrder::None);
    let target = SortTarget::try_from(r.sort_target).unwrap_or(SortTarget::Key);
    let order = if order == SortOrder::None && target != SortTarget::Key { SortOrder::Ascend } else { order };
    if order != SortOrder::None {
        kvs.sort_by(|(ka, a), (kb, b)| {
            let o = match target {
                SortTarget::Key => ka.cmp(kb),
                SortTarget::Version => a.version.cmp(&b.version),
                SortTarget::Create => a.create_revision.cmp(&b.create_revision),
                SortTarget::Mod => a.mod_revision.cmp(&b.mod_revision),
                SortTarget::Value => a.value.cmp(&b.value),
            };
            if order == SortOrder::Descend {
                o.reverse()
            } else {
                o
            }
        });
    }
    let limit = usize::try_from(r.limit.max(0)).unwrap_or(usize::MAX);
    if limit > 0 && kvs.len() > limit {
        kvs.truncate(limit);
        more = true;
    }
    pb::RangeResponse {
        header: None,
        kvs: kvs.iter().map(|(k, v)| convert::kv(k, v, r.keys_only)).collect(),
        more,
        count: i64::try_from(count).unwrap_or(i64::MAX),
    }
}

/// A put as graft's operation: a plain put, or one keeping the current
/// value or lease (etcd's `ignore_value`, `ignore_lease`).
fn put_op(p: &pb::PutRequest) -> Result<TxnOp, Status> {
    if p.key.is_empty() {
        return Err(key_not_provided());
    }
    if p.ignore_value && !p.value.is_empty() {
        return Err(Status::invalid_argument("etcdserver: value is provided"));
    }
    if p.ignore_lease && p.lease != 0 {
        return Err(Status::invalid_argument("etcdserver: lease is provided"));
    }
    let key = Bytes::copy_from_slice(&p.key);
    let lease = convert::unrev(p.lease);
    if !p.ignore_value && !p.ignore_lease {
        return Ok(TxnOp::Put { key, value: Bytes::copy_from_slice(&p.value), lease });
    }
    Ok(TxnOp::PutKeeping {
        key,
        value: (!p.ignore_value).then(|| Bytes::copy_from_slice(&p.value)),
        lease: (!p.ignore_lease).then_some(lease),
    })
}

/// An etcd transaction as graft's (nested ones included).
fn txn(t: &pb::TxnRequest) -> Result<Txn, Status> {
    Ok(Txn {
        compare: t.compare.iter().map(compare).collect::<Result<_, _>>()?,
        success: t.success.iter().map(op).collect::<Result<_, _>>()?,
        failure: t.failure.iter().map(op).collect::<Result<_, _>>()?,
    })
}

/// One etcd compare as graft's.
fn compare(c: &pb::Compare) -> Result<Compare, Status> {
    use pb::compare::{CompareResult, CompareTarget as T, TargetUnion};
    if c.key.is_empty() {
        return Err(key_not_provided());
    }
    if !c.range_end.is_empty() {
        return Err(Status::invalid_argument("etcdserver: graft does not support compares over a range yet"));
    }
    let op = match CompareResult::try_from(c.result) {
        Ok(CompareResult::Equal) => CompareOp::Equal,
        Ok(CompareResult::Greater) => CompareOp::Greater,
        Ok(CompareResult::Less) => CompareOp::Less,
        Ok(CompareResult::NotEqual) => CompareOp::NotEqual,
        Err(_) => {
            return Err(Status::invalid_argument(format!("etcdserver: unknown compare result {}", c.result)))
        }
    };
    let n = |v: i64| convert::unrev(v);
    let target = match (T::try_from(c.target), &c.target_union) {
        (Ok(T::Version), Some(TargetUnion::Version(v))) => CompareTarget::Version(n(*v)),
        (Ok(T::Version), None) => CompareTarget::Version(0),
        (Ok(T::Create), Some(TargetUnion::CreateRevision(v))) => CompareTarget::CreateRevision(n(*v)),
        (Ok(T::Create), None) => CompareTarget::CreateRevision(0),
        (Ok(T::Mod), Some(TargetUnion::ModRevision(v))) => CompareTarget::ModRevision(n(*v)),
        (Ok(T::Mod), None) => CompareTarget::ModRevision(0),
        (Ok(T::Value), Some(TargetUnion::Value(v))) => CompareTarget::Value(Bytes::copy_from_slice(v)),
        (Ok(T::Value), None) => CompareTarget::Value(Bytes::new()),
        (Ok(T::Lease), Some(TargetUnion::Lease(v))) => CompareTarget::Lease(n(*v)),
        (Ok(T::Lease), None) => CompareTarget::Lease(0),
        _ => return Err(Status::invalid_argument("etcdserver: a compare's target and value disagree")),
    };
    Ok(Compare { key: Bytes::copy_from_slice(&c.key), target, op })
}

/// One etcd operation as graft's.
fn op(o: &pb::RequestOp) -> Result<TxnOp, Status> {
    use pb::request_op::Request as R;
    match &o.request {
        Some(R::RequestRange(r)) => {
            if r.revision != 0 {
                return Err(Status::invalid_argument(
                    "etcdserver: graft does not support a revision in a transaction's range yet",
                ));
            }
            Ok(TxnOp::Range { range: key_range(&r.key, &r.range_end)?, limit: read_limit(r) })
        }
        Some(R::RequestPut(p)) => put_op(p),
        Some(R::RequestDeleteRange(d)) => Ok(TxnOp::DeleteRange { range: key_range(&d.key, &d.range_end)? }),
        Some(R::RequestTxn(t)) => Ok(TxnOp::Txn(txn(t)?)),
        None => Err(Status::invalid_argument("etcdserver: an empty operation in a transaction")),
    }
}

/// One graft operation's result as etcd's, shaped by the etcd request.
fn op_response(f: &Frontend, req: &pb::RequestOp, result: TxnOpResult, revision: u64) -> pb::ResponseOp {
    use pb::request_op::Request as R;
    use pb::response_op::Response as S;
    let response = match (&req.request, result) {
        (Some(R::RequestRange(r)), TxnOpResult::Range { kvs, count, more }) => {
            let mut resp = range_response(kvs, count, more, r);
            resp.header = f.header(revision);
            S::ResponseRange(resp)
        }
        (Some(R::RequestPut(p)), TxnOpResult::Put { previous }) => S::ResponsePut(pb::PutResponse {
            header: f.header(revision),
            prev_kv: previous
                .filter(|_| p.prev_kv)
                .map(|kv| convert::kv(&Bytes::copy_from_slice(&p.key), &kv, false)),
        }),
        (Some(R::RequestDeleteRange(d)), TxnOpResult::DeleteRange { previous }) => {
            S::ResponseDeleteRange(delete_response(f, d, previous, revision))
        }
        (Some(R::RequestTxn(t)), TxnOpResult::Txn(r)) => S::ResponseTxn(txn_response(f, t, r)),
        // The results follow the operations one for one.
        _ => S::ResponsePut(pb::PutResponse { header: f.header(revision), prev_kv: None }),
    };
    pb::ResponseOp { response: Some(response) }
}

/// A graft transaction's outcome as etcd's, shaped by the etcd request.
fn txn_response(f: &Frontend, t: &pb::TxnRequest, resp: crate::protocol::TxnResponse) -> pb::TxnResponse {
    let ops = if resp.succeeded { &t.success } else { &t.failure };
    let revision = resp.revision;
    let responses =
        ops.iter().zip(resp.results).map(|(req, result)| op_response(f, req, result, revision)).collect();
    pb::TxnResponse { header: f.header(revision), succeeded: resp.succeeded, responses }
}

fn delete_response(
    f: &Frontend,
    d: &pb::DeleteRangeRequest,
    previous: Vec<(Bytes, KeyValue)>,
    revision: u64,
) -> pb::DeleteRangeResponse {
    pb::DeleteRangeResponse {
        header: f.header(revision),
        deleted: i64::try_from(previous.len()).unwrap_or(i64::MAX),
        prev_kvs: if d.prev_kv {
            previous.iter().map(|(k, v)| convert::kv(k, v, false)).collect()
        } else {
            Vec::new()
        },
    }
}

#[tonic::async_trait]
impl pb::kv_server::Kv for KvService {
    async fn range(&self, request: Request<pb::RangeRequest>) -> Result<Response<pb::RangeResponse>, Status> {
        let r = request.into_inner();
        let range = key_range(&r.key, &r.range_end)?;
        let (client, consistency) = if r.serializable {
            (&self.0.local, Consistency::Stale)
        } else {
            (&self.0.cluster, Consistency::Linearizable)
        };
        let count_only = r.count_only;
        let read = client
            .range(range, read_limit(&r), consistency, convert::unrev(r.revision), count_only)
            .await
            .map_err(status)?;
        let mut resp = range_response(read.kvs, read.count, read.more, &r);
        resp.header = self.0.header(read.revision);
        Ok(Response::new(resp))
    }

    async fn put(&self, request: Request<pb::PutRequest>) -> Result<Response<pb::PutResponse>, Status> {
        let p = request.into_inner();
        let op = put_op(&p)?;
        if let (TxnOp::Put { key, value, lease }, false) = (&op, p.prev_kv) {
            let revision =
                self.0.cluster.put_with_lease(key.clone(), value.clone(), *lease).await.map_err(status)?;
            return Ok(Response::new(pb::PutResponse { header: self.0.header(revision), prev_kv: None }));
        }
        let key = Bytes::copy_from_slice(&p.key);
        let txn = Txn { compare: vec![], success: vec![op], failure: vec![] };
        let resp = self.0.cluster.txn(txn).await.map_err(status)?;
        let prev_kv = match resp.results.into_iter().next() {
            Some(TxnOpResult::Put { previous }) if p.prev_kv => {
                previous.map(|kv| convert::kv(&key, &kv, false))
            }
            _ => None,
        };
        Ok(Response::new(pb::PutResponse { header: self.0.header(resp.revision), prev_kv }))
    }

    async fn delete_range(
        &self,
        request: Request<pb::DeleteRangeRequest>,
    ) -> Result<Response<pb::DeleteRangeResponse>, Status> {
        let d = request.into_inner();
        let range = key_range(&d.key, &d.range_end)?;
        let txn = Txn { compare: vec![], success: vec![TxnOp::DeleteRange { range }], failure: vec![] };
        let resp = self.0.cluster.txn(txn).await.map_err(status)?;
        let previous = match resp.results.into_iter().next() {
            Some(TxnOpResult::DeleteRange { previous }) => previous,
            _ => Vec::new(),
        };
        Ok(Response::new(delete_response(&self.0, &d, previous, resp.revision)))
    }

    async fn txn(&self, request: Request<pb::TxnRequest>) -> Result<Response<pb::TxnResponse>, Status> {
        let t = request.into_inner();
        let graft_txn = txn(&t)?;
        let resp =
            if graft_txn.compare.is_empty() && graft_txn.success.is_empty() && graft_txn.failure.is_empty() {
                // etcd answers an empty transaction as succeeded, at the current revision.
                let read = self.0.cluster.range(KeyRange::key("\0"), 1, Consistency::Linearizable, 0, true);
                let revision = read.await.map_err(status)?.revision;
                crate::protocol::TxnResponse { succeeded: true, results: vec![], revision }
            } else {
                self.0.cluster.txn(graft_txn).await.map_err(status)?
            };
        Ok(Response::new(txn_response(&self.0, &t, resp)))
    }

    async fn compact(
        &self,
        request: Request<pb::CompactionRequest>,
    ) -> Result<Response<pb::CompactionResponse>, Status> {
        let c = request.into_inner();
        let revision = self.0.cluster.compact(convert::unrev(c.revision)).await.map_err(status)?;
        Ok(Response::new(pb::CompactionResponse { header: self.0.header(revision) }))
    }
}

/// An etcd event from a graft watch event.
pub fn event(e: &crate::protocol::WatchEvent, prev_kv: bool) -> mvccpb::Event {
    let kv = match &e.kv {
        Some(kv) => convert::kv(&e.key, kv, false),
        // A delete: the key, at the delete's revision.
        None => mvccpb::KeyValue {
            key: e.key.to_vec(),
            mod_revision: convert::rev(e.revision),
            ..Default::default()
        },
    };
    mvccpb::Event {
        r#type: if e.kv.is_some() {
            mvccpb::event::EventType::Put as i32
        } else {
            mvccpb::event::EventType::Delete as i32
        },
        kv: Some(kv),
        prev_kv: if prev_kv { e.prev.as_ref().map(|p| convert::kv(&e.key, p, false)) } else { None },
    }
}
