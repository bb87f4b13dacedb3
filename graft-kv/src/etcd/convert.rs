//! graft's records, revisions and errors in etcd's terms: `mvccpb`
//! key-values, int64 revisions, and gRPC statuses with the messages etcd
//! clients match on.

use bytes::Bytes;
use tonic::{Code, Status};

use super::pb::mvccpb;
use crate::client::ClientError;
use crate::protocol::{ApiError, KeyValue};

/// etcd's 64-bit cluster id for graft's cluster name: FNV-1a, so every
/// member reports the same one.
pub fn cluster_id(name: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in name.as_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// A revision as etcd's int64.
pub fn rev(r: u64) -> i64 {
    i64::try_from(r).unwrap_or(i64::MAX)
}

/// A revision from etcd's int64 (negative ones read as 0: "the latest").
pub fn unrev(r: i64) -> u64 {
    u64::try_from(r).unwrap_or(0)
}

/// A lease id as etcd's int64.
pub fn lease_id(id: u64) -> i64 {
    i64::try_from(id).unwrap_or(i64::MAX)
}

/// A record as etcd's `KeyValue`; with `keys_only`, without its value.
pub fn kv(key: &Bytes, kv: &KeyValue, keys_only: bool) -> mvccpb::KeyValue {
    mvccpb::KeyValue {
        key: key.to_vec(),
        create_revision: rev(kv.create_revision),
        mod_revision: rev(kv.mod_revision),
        version: rev(kv.version),
        value: if keys_only { Vec::new() } else { kv.value.to_vec() },
        lease: lease_id(kv.lease),
    }
}

/// etcd's error for an empty key.
pub fn key_not_provided() -> Status {
    Status::invalid_argument("etcdserver: key is not provided")
}

/// A graft error as the gRPC status an etcd server would answer.
pub fn status(e: ClientError) -> Status {
    match e {
        ClientError::Api(e) => api_status(e),
        ClientError::Unavailable { write: true, last_error, .. } => {
            Status::unavailable(format!("etcdserver: request timed out ({last_error})"))
        }
        ClientError::Unavailable { last_error, .. } => {
            Status::unavailable(format!("etcdserver: no leader ({last_error})"))
        }
    }
}

/// An answer's refusal in etcd's words.
pub fn api_status(e: ApiError) -> Status {
    match e {
        ApiError::Compacted { .. } => {
            Status::new(Code::OutOfRange, "etcdserver: mvcc: required revision has been compacted")
        }
        ApiError::FutureRevision { .. } => {
            Status::new(Code::OutOfRange, "etcdserver: mvcc: required revision is a future revision")
        }
        ApiError::LeaseNotFound { .. } => Status::not_found("etcdserver: requested lease not found"),
        ApiError::KeyTooLarge { .. } | ApiError::ValueTooLarge { .. } => {
            Status::invalid_argument(format!("etcdserver: request is too large ({e})"))
        }
        ApiError::NotLeader { .. } => Status::unavailable("etcdserver: leader changed"),
        ApiError::Unavailable(m) => Status::unavailable(format!("etcdserver: request timed out ({m})")),
        ApiError::SessionExpired => Status::unavailable("etcdserver: request timed out (session expired)"),
        ApiError::Invalid(m) if m.contains("more than once") => {
            Status::invalid_argument(format!("etcdserver: duplicate key given in txn request ({m})"))
        }
        ApiError::Invalid(m) if m.contains("over the limit of") => {
            Status::invalid_argument(format!("etcdserver: too many operations in txn request ({m})"))
        }
        ApiError::Invalid(m) if m.contains("lease") && m.contains("exists") => {
            Status::failed_precondition("etcdserver: lease already exists")
        }
        ApiError::Invalid(m) if m.contains("lease TTL") => {
            Status::out_of_range(format!("etcdserver: too large lease TTL ({m})"))
        }
        ApiError::Invalid(m) => Status::invalid_argument(format!("etcdserver: {m}")),
        ApiError::Internal(m) => Status::internal(format!("etcdserver: {m}")),
        ApiError::KeyNotFound { .. } => Status::invalid_argument("etcdserver: key not found"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_carry_the_messages_etcd_clients_match_on() {
        let s = api_status(ApiError::Compacted { requested: 1, oldest: 5 });
        assert_eq!(
            (s.code(), s.message()),
            (Code::OutOfRange, "etcdserver: mvcc: required revision has been compacted")
        );
        let s = api_status(ApiError::LeaseNotFound { id: 7 });
        assert_eq!((s.code(), s.message()), (Code::NotFound, "etcdserver: requested lease not found"));
        assert_eq!(api_status(ApiError::NotLeader { leader: None }).message(), "etcdserver: leader changed");
        assert_eq!(cluster_id("a"), cluster_id("a"));
        assert_ne!(cluster_id("a"), cluster_id("b"));
        assert_eq!(unrev(-3), 0);
    }
}
