//! The wire protocol: what travels in the length-delimited frames between
//! members, and between clients and members. `docs/protocol.md` describes it
//! for people; this file is the definition.
//!
//! Every connection starts with a [`Hello`] from the side that connected,
//! answered by a [`HelloReply`]. After that, a peer connection carries
//! [`PeerFrame`]s one way (each member dials its own connection to each
//! peer), and a client connection carries [`ClientRequest`]s one way and
//! [`ClientResponse`]s the other, matched by id, many in flight.
//! Frames are a 4-byte big-endian length followed by a postcard body.

use bytes::{Bytes, BytesMut};
use futures::{SinkExt, StreamExt};
use graft_core::{Message, NodeId};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_util::codec::{Framed, LengthDelimitedCodec};

use crate::error::ProtocolError;

mod kv;
mod range;
mod txn;
mod watch;

pub use kv::{ApiError, KeyValue, LeaderHint, MAX_KEY, MAX_VALUE};
pub use range::{prefix_end, KeyRange};
pub use txn::{
    check_key, check_value, Compare, CompareOp, CompareTarget, Txn, TxnOp, TxnOpResult, TxnResponse,
    MAX_TXN_OPS,
};
pub use watch::{WatchEvent, WatchFilter, WatchResponse};

/// Identifies graft connections, so that a stray connection is refused at once.
pub const MAGIC: [u8; 5] = *b"graft";
/// The protocol version this build speaks. A member refuses other versions.
pub const PROTOCOL_VERSION: u16 = 2;
/// The largest frame accepted, in bytes. Larger frames close the connection.
pub const MAX_FRAME: usize = 16 << 20;

/// The first frame on every connection, from the side that connected.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// Always [`MAGIC`].
    pub magic: [u8; 5],
    /// The sender's [`PROTOCOL_VERSION`].
    pub version: u16,
    /// What the connection is for.
    pub kind: ConnKind,
}

impl Hello {
    /// A hello for this build's protocol.
    pub fn new(kind: ConnKind) -> Hello {
        Hello { magic: MAGIC, version: PROTOCOL_VERSION, kind }
    }
}

/// What a connection is for.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ConnKind {
    /// Raft traffic from member `from` of `cluster` to member `to`.
    Peer {
        /// The cluster id of the sender.
        cluster: String,
        /// The sender's member id.
        from: NodeId,
        /// The member the sender believes it reached.
        to: NodeId,
    },
    /// A client.
    Client,
    /// A snapshot stream from the leader `from` of `cluster` to member `to`.
    Snapshot {
        /// The cluster id of the sender.
        cluster: String,
        /// The sender's member id.
        from: NodeId,
        /// The member the sender believes it reached.
        to: NodeId,
    },
}

/// The answer to a [`Hello`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum HelloReply {
    /// Accepted; the member that answered.
    Welcome {
        /// Its member id.
        member: NodeId,
        /// Its cluster id.
        cluster: String,
    },
    /// Refused; the connection closes after this frame.
    Refused {
        /// Why, for people.
        reason: String,
    },
}

/// A frame on a peer connection.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum PeerFrame {
    /// A Raft message.
    Raft(Message),
}

/// A frame on a snapshot connection (leader to follower), in this order:
/// one `Begin`, any number of `Chunk`s, one `End`. The follower answers the
/// `End` with one [`SnapshotAck`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SnapshotFrame {
    /// What the snapshot is.
    Begin {
        /// The leader's term.
        term: u64,
        /// The index, term and membership the snapshot covers.
        meta: graft_core::SnapshotMeta,
        /// The state machine's own metadata (applied index, members), postcard.
        state: Bytes,
    },
    /// Rows of one table, in key order.
    Chunk {
        /// Which table.
        table: SnapshotTable,
        /// Keys and raw stored values.
        rows: Vec<(Bytes, Bytes)>,
    },
    /// The end; `rows` counts every row sent, as a check.
    End {
        /// The number of rows sent.
        rows: u64,
    },
}

/// The tables a snapshot carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SnapshotTable {
    /// Live keys and their records.
    Kv,
    /// Client sessions (key: the client id, 8 bytes big-endian).
    Sessions,
    /// Past records (key: the key, then the revision, 8 bytes big-endian).
    History,
    /// Which keys each revision wrote (key: the revision, 8 bytes big-endian).
    Revs,
    /// Leases, their expiry index and attached keys (byte keys).
    Leases,
}

impl SnapshotTable {
    /// Every table, in the order a snapshot sends them.
    pub const ALL: [SnapshotTable; 5] = [
        SnapshotTable::Kv,
        SnapshotTable::History,
        SnapshotTable::Revs,
        SnapshotTable::Leases,
        SnapshotTable::Sessions,
    ];
}

/// The follower's answer to a snapshot stream.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SnapshotAck {
    /// Staged whole and handed to Raft.
    Staged,
    /// Refused or failed.
    Failed {
        /// Why.
        reason: String,
    },
}

/// A request on a client connection.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientRequest {
    /// Chosen by the client; the response carries it back.
    pub id: u64,
    /// What to do.
    pub request: Request,
}

/// A response on a client connection.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientResponse {
    /// The id of the request this answers.
    pub id: u64,
    /// The outcome.
    pub result: Result<Response, ApiError>,
}

/// How fresh a read must be.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Consistency {
    /// Linearizable: served by the leader after confirming its leadership
    /// (ReadIndex). Reflects every write acknowledged before the read began.
    #[default]
    Linearizable,
    /// Served from the addressed member's own state, leader or not. May miss
    /// recent writes.
    Stale,
}

/// What a write expects to find, for compare-and-swap.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Expect {
    /// The current value equals this (`None`: the key is absent).
    Value(Option<Bytes>),
    /// The key's last write was at this revision (0: the key is absent).
    ModRevision(u64),
    /// The key was written this many times since it was created (0: the
    /// key is absent).
    Version(u64),
}

/// Identifies a write for exactly-once execution: the same `(client, seq)`
/// is applied at most once, and a retry gets the first outcome back.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionSeq {
    /// A random id the client chose for itself.
    pub client: u64,
    /// The write's sequence number within the client, from 1.
    pub seq: u64,
    /// Every sequence number below this has been answered to the client, so
    /// the member may forget those answers.
    pub ack_below: u64,
}

/// A client request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    /// Reads one key.
    Get {
        /// The key.
        key: Bytes,
        /// How fresh.
        consistency: Consistency,
        /// Read the key as it stood at this revision (0: the latest).
        revision: u64,
    },
    /// Reads keys that start with `prefix`, in key order.
    Scan {
        /// The prefix (empty: all keys).
        prefix: Bytes,
        /// At most this many.
        limit: u32,
        /// How fresh.
        consistency: Consistency,
        /// Read the keys as they stood at this revision (0: the latest).
        revision: u64,
    },
    /// Sets a key.
    Put {
        /// The key.
        key: Bytes,
        /// The value.
        value: Bytes,
        /// Attach the key to this lease (0: none); refused if the lease
        /// does not exist.
        lease: u64,
        /// For exactly-once execution.
        session: Option<SessionSeq>,
    },
    /// Grants a lease of `ttl_ms` (the cluster picks the id if `id` is 0).
    LeaseGrant {
        /// Its time to live, in ms (1 ms to a day).
        ttl_ms: u64,
        /// The id wanted (below 2^62), or 0.
        id: u64,
        /// For exactly-once execution.
        session: Option<SessionSeq>,
    },
    /// Revokes a lease, deleting every key attached to it, atomically.
    LeaseRevoke {
        /// The lease.
        id: u64,
        /// For exactly-once execution.
        session: Option<SessionSeq>,
    },
    /// Renews leases for their full TTL (through the log, as every lease change).
    LeaseKeepAlive {
        /// The leases.
        ids: Vec<u64>,
    },
    /// Describes a lease: its TTL, remaining time and keys (a linearizable read).
    LeaseTimeToLive {
        /// The lease.
        id: u64,
    },
    /// Lists every lease (a linearizable read).
    LeaseList,
    /// Removes a key.
    Delete {
        /// The key.
        key: Bytes,
        /// For exactly-once execution.
        session: Option<SessionSeq>,
    },
    /// Removes every key starting with `prefix`, atomically.
    DeletePrefix {
        /// The prefix (empty: every key).
        prefix: Bytes,
        /// For exactly-once execution.
        session: Option<SessionSeq>,
    },
    /// A multi-key transaction, applied atomically.
    Txn {
        /// The transaction.
        txn: Txn,
        /// For exactly-once execution.
        session: Option<SessionSeq>,
    },
    /// Discards the history below `revision`: reads and watches at older
    /// revisions are refused from then on.
    Compact {
        /// The oldest revision to keep readable.
        revision: u64,
        /// For exactly-once execution.
        session: Option<SessionSeq>,
    },
    /// Sets a key if it holds what is expected.
    Cas {
        /// The key.
        key: Bytes,
        /// The expected value or version.
        expect: Expect,
        /// The new value.
        value: Bytes,
        /// For exactly-once execution.
        session: Option<SessionSeq>,
    },
    /// Streams the changes to a key or prefix: answered by any number of
    /// `Watch` responses with this request's id (see [`WatchResponse`]).
    /// Served by the member addressed, leader or not.
    Watch {
        /// Which keys.
        filter: WatchFilter,
        /// The first revision to report (0: changes after the member's
        /// current revision). From a past revision, history is replayed
        /// first, then live changes follow with no gap or repeat.
        start_revision: u64,
        /// Include each key's previous record.
        prev_kv: bool,
        /// Send `Progress` after this many ms without events (0: never).
        progress_ms: u32,
    },
    /// Ends the watch started by request `id` on this connection.
    CancelWatch {
        /// The `Watch` request's id.
        id: u64,
    },
    /// Describes the member that answers.
    Status,
    /// The member's counters since it started.
    Metrics,
    /// Asks the leader to hand leadership to `to`.
    TransferLeader {
        /// The member to hand it to.
        to: NodeId,
    },
    /// Adds a member as a learner; with `promote`, the leader makes it a
    /// voter once it has caught up. Also updates a member's address.
    AddMember {
        /// Its id.
        id: NodeId,
        /// Where it listens.
        addr: String,
        /// Make it a voter once caught up.
        promote: bool,
    },
    /// Makes a learner a voter now.
    PromoteMember {
        /// Its id.
        id: NodeId,
    },
    /// Removes a member (voter or learner, the leader included).
    RemoveMember {
        /// Its id.
        id: NodeId,
    },
    /// Reads the keys of a range (etcd's `Range`), in key order.
    Range {
        /// Which keys.
        range: KeyRange,
        /// At most this many (0: all).
        limit: u32,
        /// How fresh.
        consistency: Consistency,
        /// Read the keys as they stood at this revision (0: the latest).
        revision: u64,
        /// Count the keys only; return none.
        count_only: bool,
    },
}

impl Request {
    /// Whether the request changes data (and so goes through the log).
    pub fn is_write(&self) -> bool {
        matches!(
            self,
            Request::Put { .. }
                | Request::Delete { .. }
                | Request::Cas { .. }
                | Request::DeletePrefix { .. }
                | Request::Txn { .. }
                | Request::Compact { .. }
                | Request::LeaseGrant { .. }
                | Request::LeaseRevoke { .. }
                | Request::LeaseKeepAlive { .. }
        )
    }

    /// Checks sizes and shapes before the request is accepted.
    pub fn validate(&self) -> Result<(), ApiError> {
        match self {
            Request::Get { key, .. } | Request::Delete { key, .. } => check_key(key),
            Request::Scan { prefix, .. } | Request::DeletePrefix { prefix, .. } => check_key(prefix),
            Request::Range { range, .. } => range.check(),
            Request::Put { key, value, .. } => check_key(key).and_then(|()| check_value(value)),
            Request::Cas { key, value, expect, .. } => {
                check_key(key)?;
                check_value(value)?;
                match expect {
                    Expect::Value(Some(v)) => check_value(v),
                    _ => Ok(()),
                }
            }
            Request::Txn { txn, .. } => txn.validate(),
            Request::Compact { revision: 0, .. } => {
                Err(ApiError::Invalid("compact needs a revision above 0".into()))
            }
            Request::Watch { filter, .. } => check_key(&filter.key),
            Request::LeaseGrant { ttl_ms, id, .. } => check_lease_grant(*ttl_ms, *id),
            Request::LeaseKeepAlive { ids } if ids.is_empty() || ids.len() > MAX_TXN_OPS * 8 => {
                Err(ApiError::Invalid(format!(
                    "a keepalive names 1 to {} leases, not {}",
                    MAX_TXN_OPS * 8,
                    ids.len()
                )))
            }
            Request::LeaseRevoke { .. }
            | Request::LeaseKeepAlive { .. }
            | Request::LeaseTimeToLive { .. }
            | Request::LeaseList => Ok(()),
            Request::Compact { .. }
            | Request::CancelWatch { .. }
            | Request::Status
            | Request::Metrics
            | Request::TransferLeader { .. }
            | Request::AddMember { .. }
            | Request::PromoteMember { .. }
            | Request::RemoveMember { .. } => Ok(()),
        }
    }
}

/// A successful response. Answers about data carry `revision`: the
/// revision of the state the request read (the member's applied index) or
/// of the entry it wrote.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Response {
    /// The key, if present.
    Get {
        /// Its record.
        kv: Option<KeyValue>,
        /// The revision read.
        revision: u64,
    },
    /// Matching keys in key order.
    Scan {
        /// The keys and their records.
        kvs: Vec<(Bytes, KeyValue)>,
        /// The revision read.
        revision: u64,
    },
    /// The put's revision.
    Put {
        /// The revision of this write.
        revision: u64,
    },
    /// Whether the key existed.
    Delete {
        /// The key's record before the delete, if it existed.
        previous: Option<KeyValue>,
        /// The revision of this write.
        revision: u64,
    },
    /// How many keys a prefix delete removed.
    DeletePrefix {
        /// The count.
        deleted: u64,
        /// The revision of this write.
        revision: u64,
    },
    /// The outcome of a compare-and-swap.
    Cas {
        /// Whether the value was swapped.
        swapped: bool,
        /// The key after the operation (the new record if swapped).
        current: Option<KeyValue>,
        /// The revision of this write.
        revision: u64,
    },
    /// The outcome of a transaction.
    Txn(TxnResponse),
    /// One answer of a watch stream.
    Watch(WatchResponse),
    /// A lease was granted.
    LeaseGranted {
        /// Its id.
        id: u64,
        /// Its TTL, in ms.
        ttl_ms: u64,
        /// The revision of the grant.
        revision: u64,
    },
    /// A lease was revoked.
    LeaseRevoked {
        /// How many keys were deleted with it.
        deleted: u64,
        /// The revision of the revocation.
        revision: u64,
    },
    /// Leases renewed: for each id asked, its TTL, or `None` if there is no
    /// such lease (expired or revoked).
    LeaseKeptAlive(Vec<(u64, Option<u64>)>),
    /// A lease's state.
    Lease(LeaseInfo),
    /// Every lease.
    Leases(Vec<LeaseInfo>),
    /// History below `compacted` is gone.
    Compacted {
        /// The compaction point: the oldest readable revision.
        compacted: u64,
        /// The revision of this entry.
        revision: u64,
    },
    /// The member's state.
    Status(Box<MemberStatus>),
    /// The member's counters.
    Metrics(Metrics),
    /// Done.
    Done,
    /// The keys of a range.
    Range {
        /// Up to the limit, in key order (none if only counted).
        kvs: Vec<(Bytes, KeyValue)>,
        /// How many keys the range holds, the limit aside.
        count: u64,
        /// Whether the limit left some out.
        more: bool,
        /// The store's revision when read (as etcd's header: the latest,
        /// even for a read at a past revision).
        revision: u64,
    },
}

/// A lease, as `LeaseTimeToLive` and `LeaseList` describe it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseInfo {
    /// Its id.
    pub id: u64,
    /// Its TTL, in ms.
    pub ttl_ms: u64,
    /// The time left before it expires, as the answering member sees it.
    pub remaining_ms: u64,
    /// The keys attached to it (only from `LeaseTimeToLive`).
    pub keys: Vec<Bytes>,
}

/// The lease ids a client may choose are below this; ids the cluster picks
/// are at or above it.
pub const LEASE_AUTO_IDS: u64 = 1 << 62;

/// The longest lease TTL, in ms (a day).
pub const MAX_LEASE_TTL_MS: u64 = 24 * 3600 * 1000;

/// Checks a lease grant's TTL and id.
pub fn check_lease_grant(ttl_ms: u64, id: u64) -> Result<(), ApiError> {
    if ttl_ms == 0 || ttl_ms > MAX_LEASE_TTL_MS {
        return Err(ApiError::Invalid(format!("a lease TTL is 1 ms to {MAX_LEASE_TTL_MS} ms, not {ttl_ms}")));
    }
    if id >= LEASE_AUTO_IDS {
        return Err(ApiError::Invalid(format!("a chosen lease id is below {LEASE_AUTO_IDS}, not {id}")));
    }
    Ok(())
}

/// A member's state, for `graft-cli status`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberStatus {
    /// Its id.
    pub id: NodeId,
    /// Its cluster id.
    pub cluster: String,
    /// Its role: "Leader", "Follower", "Candidate", "PreCandidate".
    pub role: String,
    /// Its current term.
    pub term: u64,
    /// The leader it knows of.
    pub leader: Option<NodeId>,
    /// Its commit index.
    pub commit: u64,
    /// Its applied index.
    pub applied: u64,
    /// The index of its first log entry.
    pub first_index: u64,
    /// The index of its last log entry.
    pub last_index: u64,
    /// The oldest revision its store can still read (history below was
    /// compacted).
    pub compacted: u64,
    /// The members it knows of.
    pub members: Vec<MemberInfo>,
}

/// A member's counters since it started (for benchmarks and monitoring).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Metrics {
    /// Write transactions committed with an fsync.
    pub fsyncs: u64,
    /// Write transactions committed without one (applying only).
    pub lazy_commits: u64,
    /// Log entries persisted.
    pub entries_persisted: u64,
    /// Committed entries applied.
    pub entries_applied: u64,
    /// Client writes answered.
    pub writes_answered: u64,
    /// Linearizable reads answered.
    pub reads_answered: u64,
    /// Raft messages dropped because a peer's queue was full.
    pub messages_dropped: u64,
    /// Batches whose applying ran on a second thread, alongside their log
    /// transaction.
    pub parallel_batches: u64,
}

/// One member as another sees it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberInfo {
    /// Its id.
    pub id: NodeId,
    /// Its address.
    pub addr: String,
    /// Whether it votes.
    pub voter: bool,
}

/// A framed connection carrying postcard-encoded messages.
pub type FramedConn<T> = Framed<T, LengthDelimitedCodec>;

/// Wraps a stream in graft's framing (length-delimited, [`MAX_FRAME`] limit).
pub fn framed<T: AsyncRead + AsyncWrite>(io: T) -> FramedConn<T> {
    LengthDelimitedCodec::builder().max_frame_length(MAX_FRAME).new_framed(io)
}

/// Encodes `msg` into a frame body.
pub fn encode<M: Serialize>(msg: &M) -> Result<Bytes, ProtocolError> {
    let v = postcard::to_stdvec(msg).map_err(ProtocolError::Encode)?;
    Ok(Bytes::from(v))
}

/// Decodes a frame body.
pub fn decode<M: DeserializeOwned>(frame: &BytesMut) -> Result<M, ProtocolError> {
    postcard::from_bytes(frame).map_err(ProtocolError::Decode)
}

/// Sends one message as a frame.
pub async fn send<T, M>(conn: &mut FramedConn<T>, msg: &M) -> Result<(), ProtocolError>
where
    T: AsyncRead + AsyncWrite + Unpin,
    M: Serialize,
{
    conn.send(encode(msg)?).await.map_err(ProtocolError::Io)
}

/// Receives one message; `Ok(None)` when the other side closed cleanly.
pub async fn recv<T, M>(conn: &mut FramedConn<T>) -> Result<Option<M>, ProtocolError>
where
    T: AsyncRead + AsyncWrite + Unpin,
    M: DeserializeOwned,
{
    match conn.next().await {
        None => Ok(None),
        Some(Ok(frame)) => decode(&frame).map(Some),
        Some(Err(e)) => Err(ProtocolError::Io(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_round_trip() {
        let req = ClientRequest {
            id: 7,
            request: Request::Cas {
                key: Bytes::from("k"),
                expect: Expect::ModRevision(3),
                value: Bytes::from("v"),
                session: Some(SessionSeq { client: 1, seq: 2, ack_below: 2 }),
            },
        };
        let body = encode(&req).unwrap();
        let back: ClientRequest = decode(&BytesMut::from(&body[..])).unwrap();
        assert_eq!(back, req);
    }

    #[test]
    fn garbage_is_a_decode_error_not_a_panic() {
        // Empty, truncated, an unknown variant, an overlong varint.
        for junk in [&b""[..], b"\x07", b"\x07\x7f", b"\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff"] {
            assert!(decode::<ClientRequest>(&BytesMut::from(junk)).is_err(), "{junk:?}");
            assert!(decode::<Hello>(&BytesMut::from(junk)).is_err(), "{junk:?}");
        }
        // Whatever the bytes, decoding returns (it never panics).
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        for len in 0..2000 {
            let junk: Vec<u8> = (0..len % 97)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x as u8
                })
                .collect();
            let _ = decode::<ClientRequest>(&BytesMut::from(&junk[..]));
            let _ = decode::<PeerFrame>(&BytesMut::from(&junk[..]));
            let _ = decode::<SnapshotFrame>(&BytesMut::from(&junk[..]));
        }
    }

    #[test]
    fn oversized_values_are_refused() {
        let req = Request::Put {
            key: Bytes::from("k"),
            value: Bytes::from(vec![0; MAX_VALUE + 1]),
            lease: 0,
            session: None,
        };
        assert!(matches!(req.validate(), Err(ApiError::ValueTooLarge { .. })));
        let req = Request::Get {
            key: Bytes::from(vec![0; MAX_KEY + 1]),
            consistency: Consistency::Stale,
            revision: 0,
        };
        assert!(matches!(req.validate(), Err(ApiError::KeyTooLarge { .. })));
    }
}
