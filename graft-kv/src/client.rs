//! `Client`: the Rust client for graft. It finds the leader, follows
//! not-leader hints, retries transient failures with backoff under an
//! overall timeout, keeps many requests in flight on one connection per
//! member, and makes writes exactly-once with a session.
//!
//! ```no_run
//! # async fn demo() -> Result<(), graft_kv::client::ClientError> {
//! let client = graft_kv::Client::new(graft_kv::ClientOptions::default());
//! client.put("greeting", "hello").await?;
//! let v = client.get("greeting").await?;
//! assert_eq!(v.map(|v| v.value), Some("hello".into()));
//! # Ok(()) }
//! ```

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use crate::config::ClusterConfig;
use crate::protocol::{
    self, ApiError, ClientRequest, ClientResponse, ConnKind, Consistency, Expect, Hello, HelloReply,
    KeyValue, MemberStatus, Request, Response, SessionSeq, Txn, TxnResponse,
};

/// How a [`Client`] reaches the cluster.
#[derive(Clone, Debug)]
pub struct ClientOptions {
    /// Members to try, as `host:port`. The leader's address may come from a
    /// hint even if it is not listed.
    pub endpoints: Vec<String>,
    /// How long one call may take, retries included.
    pub timeout: Duration,
}

impl Default for ClientOptions {
    /// The built-in default cluster (127.0.0.1:15000-15004), 5 s timeout.
    fn default() -> ClientOptions {
        ClientOptions { endpoints: ClusterConfig::default().endpoints(), timeout: Duration::from_secs(5) }
    }
}

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// No member gave an answer in time. For a write, whether it took effect
    /// is unknown (a retry with the same client is still exactly-once).
    #[error("{}cluster unavailable after {timeout:?}: tried {}; last error: {last_error}",
        if *.write { "write outcome unknown: " } else { "" }, .tried.join(", "))]
    Unavailable {
        /// Addresses tried.
        tried: Vec<String>,
        /// The last failure seen.
        last_error: String,
        /// The overall timeout.
        timeout: Duration,
        /// Whether the call was a write.
        write: bool,
    },
    /// The cluster answered with an error that retrying will not fix.
    #[error(transparent)]
    Api(ApiError),
}

impl ClientError {
    /// Whether this error leaves a write's outcome unknown.
    pub fn outcome_unknown(&self) -> bool {
        matches!(
            self,
            ClientError::Unavailable { write: true, .. } | ClientError::Api(ApiError::SessionExpired)
        )
    }
}

type Pending = oneshot::Sender<Result<Response, ApiError>>;

/// A multiplexed connection to one member.
struct Conn {
    tx: mpsc::UnboundedSender<(Request, Pending)>,
}

/// A connection failure on one attempt.
#[derive(Debug)]
struct AttemptError(String);

struct Inner {
    opts: ClientOptions,
    /// Identifies this client's session; random.
    /// The exactly-once session this client's writes run under.
    session: Mutex<Session>,
    leader: Mutex<Option<String>>,
    /// The endpoints given, plus leaders learnt from hints.
    endpoints: Mutex<Vec<String>>,
    conns: Mutex<HashMap<String, Arc<Conn>>>,
    /// One connection attempt at a time per address: requests that find no
    /// connection wait for the attempt in progress instead of each opening
    /// their own (hundreds of simultaneous connects overflow a member's
    /// accept queue, and a dropped SYN costs a 1 s retransmission). Holds
    /// the last failed attempt's time and error.
    connecting: Mutex<HashMap<String, Arc<ConnectGate>>>,
    rotate: AtomicUsize,
    /// When the membership was last asked for ([`Client::learn_members`]):
    /// at most once per [`LEARN_GAP`], however many watches and new
    /// connections ask.
    learnt: Mutex<Option<Instant>>,
}

/// The shortest time between two membership requests of one client, but
/// for a new leader's, which is always asked.
const LEARN_GAP: Duration = Duration::from_secs(1);

/// Serializes connection attempts to one address; holds when the last one
/// failed, and why.
type ConnectGate = tokio::sync::Mutex<Option<(Instant, String)>>;

/// A client's exactly-once session: its id and the seqs of its writes.
struct Session {
    /// Identifies the session to the members; random.
    client_id: u64,
    /// The seq of the next write. A session starts at 1: the members create
    /// their record of it from a write whose `ack_below` is 1, and refuse a
    /// session they do not know with a higher one (it may have expired).
    next_seq: u64,
    /// Seqs of this session's writes not yet finished.
    outstanding: BTreeSet<u64>,
}

impl Session {
    fn new() -> Session {
        Session { client_id: random_u64() | 1, next_seq: 1, outstanding: BTreeSet::new() }
    }
}

/// Removes a write's seq from its session's outstanding set when dropped.
struct Outstanding<'a> {
    inner: &'a Inner,
    client_id: u64,
    seq: u64,
}

impl Drop for Outstanding<'_> {
    fn drop(&mut self) {
        let mut s = self.inner.session.lock().unwrap_or_else(|p| p.into_inner());
        // A write of a session that was since replaced has nothing to remove.
        if s.client_id == self.client_id {
            s.outstanding.remove(&self.seq);
        }
    }
}

/// A client of a graft cluster. Cheap to clone; clones share connections and
/// the exactly-once session.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

/// A random number from the clock and the process id, for ids and seeds
/// that must differ between processes and runs (no randomness crate).
pub fn random_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos(),
    );
    h.write_u32(std::process::id());
    h.finish()
}

impl Client {
    /// A client for the cluster in `opts`. Connects lazily.
    pub fn new(opts: ClientOptions) -> Client {
        let endpoints = opts.endpoints.clone();
        Client {
            inner: Arc::new(Inner {
                opts,
                session: Mutex::new(Session::new()),
                leader: Mutex::new(None),
                endpoints: Mutex::new(endpoints),
                conns: Mutex::new(HashMap::new()),
                connecting: Mutex::new(HashMap::new()),
                rotate: AtomicUsize::new(0),
                learnt: Mutex::new(None),
            }),
        }
    }

    /// The address of the leader this client currently talks to, if known.
    pub fn leader(&self) -> Option<String> {
        self.inner.leader.lock().ok().and_then(|l| l.clone())
    }

    /// This client's session id.
    pub fn client_id(&self) -> u64 {
        self.inner.session.lock().unwrap_or_else(|p| p.into_inner()).client_id
    }

    /// Reads `key` linearizably.
    pub async fn get(&self, key: impl Into<Bytes>) -> Result<Option<KeyValue>, ClientError> {
        self.get_with(key, Consistency::Linearizable).await
    }

    /// Reads `key` with the given consistency. A stale read is served by the
    /// first reachable endpoint, leader or not.
    pub async fn get_with(
        &self,
        key: impl Into<Bytes>,
        consistency: Consistency,
    ) -> Result<Option<KeyValue>, ClientError> {
        Ok(self.get_at(key, consistency, 0).await?.0)
    }

    /// Reads `key` as it stood at `revision` (0: the latest); returns it and
    /// the revision of the state read.
    pub async fn get_at(
        &self,
        key: impl Into<Bytes>,
        consistency: Consistency,
        revision: u64,
    ) -> Result<(Option<KeyValue>, u64), ClientError> {
        match self.call(Request::Get { key: key.into(), consistency, revision }).await? {
            Response::Get { kv, revision } => Ok((kv, revision)),
            other => Err(unexpected(other)),
        }
    }

    /// Lists up to `limit` keys starting with `prefix`, in key order.
    pub async fn scan(
        &self,
        prefix: impl Into<Bytes>,
        limit: u32,
        consistency: Consistency,
    ) -> Result<Vec<(Bytes, KeyValue)>, ClientError> {
        Ok(self.scan_at(prefix, limit, consistency, 0).await?.0)
    }

    /// Lists up to `limit` keys starting with `prefix` as they stood at
    /// `revision` (0: the latest); returns them and the revision read.
    pub async fn scan_at(
        &self,
        prefix: impl Into<Bytes>,
        limit: u32,
        consistency: Consistency,
        revision: u64,
    ) -> Result<(Vec<(Bytes, KeyValue)>, u64), ClientError> {
        match self.call(Request::Scan { prefix: prefix.into(), limit, consistency, revision }).await? {
            Response::Scan { kvs, revision } => Ok((kvs, revision)),
            other => Err(unexpected(other)),
        }
    }

    /// Reads the keys of `range` (etcd's `Range`) as they stood at
    /// `revision` (0: the latest): up to `limit` of them (0: all), how many
    /// the range holds, and whether the limit left some out.
    pub async fn range(
        &self,
        range: crate::protocol::KeyRange,
        limit: u32,
        consistency: Consistency,
        revision: u64,
        count_only: bool,
    ) -> Result<crate::mvcc::read::RangeRead, ClientError> {
        let req = Request::Range { range, limit, consistency, revision, count_only };
        match self.call(req).await? {
            Response::Range { kvs, count, more, revision } => {
                Ok(crate::mvcc::read::RangeRead { kvs, count, more, revision })
            }
            other => Err(unexpected(other)),
        }
    }

    /// Sets `key` to `value`; returns the write's revision.
    pub async fn put(&self, key: impl Into<Bytes>, value: impl Into<Bytes>) -> Result<u64, ClientError> {
        let (key, value) = (key.into(), value.into());
        match self
            .write(|session| Request::Put { key: key.clone(), value: value.clone(), lease: 0, session })
            .await?
        {
            Response::Put { revision } => Ok(revision),
            other => Err(unexpected(other)),
        }
    }

    /// Removes `key`; returns its record before, if it existed.
    pub async fn delete(&self, key: impl Into<Bytes>) -> Result<Option<KeyValue>, ClientError> {
        let key = key.into();
        match self.write(|session| Request::Delete { key: key.clone(), session }).await? {
            Response::Delete { previous, .. } => Ok(previous),
            other => Err(unexpected(other)),
        }
    }

    /// Removes every key starting with `prefix`, atomically; returns how
    /// many there were and the write's revision.
    pub async fn delete_prefix(&self, prefix: impl Into<Bytes>) -> Result<(u64, u64), ClientError> {
        let prefix = prefix.into();
        match self.write(|session| Request::DeletePrefix { prefix: prefix.clone(), session }).await? {
            Response::DeletePrefix { deleted, revision } => Ok((deleted, revision)),
            other => Err(unexpected(other)),
        }
    }

    /// Sets `key` to `value` if it holds what `expect` says. Returns whether
    /// it swapped and the key after the operation.
    pub async fn cas(
        &self,
        key: impl Into<Bytes>,
        expect: Expect,
        value: impl Into<Bytes>,
    ) -> Result<(bool, Option<KeyValue>), ClientError> {
        let (key, value) = (key.into(), value.into());
        let make = |session| Request::Cas {
            key: key.clone(),
            expect: expect.clone(),
            value: value.clone(),
            session,
        };
        match self.write(make).await? {
            Response::Cas { swapped, current, .. } => Ok((swapped, current)),
            other => Err(unexpected(other)),
        }
    }

    /// Runs a transaction atomically (checked against the limits before it
    /// is sent).
    pub async fn txn(&self, txn: Txn) -> Result<TxnResponse, ClientError> {
        txn.validate().map_err(ClientError::Api)?;
        match self.write(|session| Request::Txn { txn: txn.clone(), session }).await? {
            Response::Txn(r) => Ok(r),
            other => Err(unexpected(other)),
        }
    }

    /// Starts a watch: the changes to a key or prefix, in revision order,
    /// from `opts.start_revision` (history first) or from now, resumed on
    /// another member from the last revision delivered whenever the stream
    /// breaks. Needs a tokio runtime.
    pub fn watch(&self, opts: crate::watcher::WatchOptions) -> crate::watcher::Watcher {
        crate::watcher::start(Arc::new(self.clone()), opts)
    }

    /// Sets `key` to `value` attached to lease `lease` (deleted with it);
    /// returns the write's revision.
    pub async fn put_with_lease(
        &self,
        key: impl Into<Bytes>,
        value: impl Into<Bytes>,
        lease: u64,
    ) -> Result<u64, ClientError> {
        let (key, value) = (key.into(), value.into());
        let make = |session| Request::Put { key: key.clone(), value: value.clone(), lease, session };
        match self.write(make).await? {
            Response::Put { revision } => Ok(revision),
            other => Err(unexpected(other)),
        }
    }

    /// Grants a lease of `ttl` (at least 1 ms, at most a day); returns its id.
    pub async fn lease_grant(&self, ttl: Duration) -> Result<u64, ClientError> {
        let ttl_ms = ttl.as_millis().min(u128::from(u64::MAX)) as u64;
        Ok(self.lease_grant_id(ttl_ms, 0).await?.0)
    }

    /// Grants a lease of `ttl_ms` with the id `id` (below 2^62; 0: the
    /// cluster picks one); returns its id, its TTL in ms and the revision.
    pub async fn lease_grant_id(&self, ttl_ms: u64, id: u64) -> Result<(u64, u64, u64), ClientError> {
        crate::protocol::check_lease_grant(ttl_ms, id).map_err(ClientError::Api)?;
        match self.write(|session| Request::LeaseGrant { ttl_ms, id, session }).await? {
            Response::LeaseGranted { id, ttl_ms, revision } => Ok((id, ttl_ms, revision)),
            other => Err(unexpected(other)),
        }
    }

    /// Revokes a lease, deleting its keys; returns how many.
    pub async fn lease_revoke(&self, id: u64) -> Result<u64, ClientError> {
        match self.write(|session| Request::LeaseRevoke { id, session }).await? {
            Response::LeaseRevoked { deleted, .. } => Ok(deleted),
            other => Err(unexpected(other)),
        }
    }

    /// Renews leases once; for each, its TTL or `None` if it is gone.
    pub async fn lease_keep_alive(&self, ids: Vec<u64>) -> Result<Vec<(u64, Option<u64>)>, ClientError> {
        match self.call(Request::LeaseKeepAlive { ids }).await? {
            Response::LeaseKeptAlive(v) => Ok(v),
            other => Err(unexpected(other)),
        }
    }

    /// A lease's TTL, time left and keys.
    pub async fn lease_ttl(&self, id: u64) -> Result<crate::protocol::LeaseInfo, ClientError> {
        match self.call(Request::LeaseTimeToLive { id }).await? {
            Response::Lease(info) => Ok(info),
            other => Err(unexpected(other)),
        }
    }

    /// Every lease.
    pub async fn leases(&self) -> Result<Vec<crate::protocol::LeaseInfo>, ClientError> {
        match self.call(Request::LeaseList).await? {
            Response::Leases(v) => Ok(v),
            other => Err(unexpected(other)),
        }
    }

    /// Keeps lease `id` alive in the background, renewing it every third
    /// of `ttl`, until the handle is dropped or the lease is found gone.
    /// Needs a tokio runtime.
    pub fn keep_alive(&self, id: u64, ttl: Duration) -> crate::keepalive::KeepAlive {
        // Its own client, whose calls give up on a hung member well within
        // the TTL, so that the next renewal goes elsewhere in time.
        let endpoints = self.inner.endpoints.lock().map(|e| e.clone()).unwrap_or_default();
        let timeout = (ttl / 4).max(Duration::from_millis(50));
        let client = Client::new(ClientOptions { endpoints, timeout });
        crate::keepalive::start(ttl, move || {
            let client = client.clone();
            async move {
                let answers = client.lease_keep_alive(vec![id]).await?;
                Ok::<_, ClientError>(answers.into_iter().find(|(i, _)| *i == id).and_then(|(_, t)| t))
            }
        })
    }

    /// Discards the history below `revision`; returns the compaction point.
    pub async fn compact(&self, revision: u64) -> Result<u64, ClientError> {
        match self.write(|session| Request::Compact { revision, session }).await? {
            Response::Compacted { compacted, .. } => Ok(compacted),
            other => Err(unexpected(other)),
        }
    }

    /// Asks the leader to hand leadership to member `to`; returns once it has.
    pub async fn transfer_leader(&self, to: u64) -> Result<(), ClientError> {
        self.call(Request::TransferLeader { to }).await?;
        // The next call finds the new leader from a not-leader hint.
        self.set_leader(None);
        Ok(())
    }

    /// Adds member `id` listening at `addr` as a learner (promoted to voter
    /// once caught up if `promote`), or records a known member's new address.
    /// Returns once the change is committed.
    pub async fn add_member(&self, id: u64, addr: String, promote: bool) -> Result<(), ClientError> {
        self.call(Request::AddMember { id, addr, promote }).await.map(|_| ())
    }

    /// Makes learner `id` a voter now.
    pub async fn promote_member(&self, id: u64) -> Result<(), ClientError> {
        self.call(Request::PromoteMember { id }).await.map(|_| ())
    }

    /// Removes member `id` (the leader included).
    pub async fn remove_member(&self, id: u64) -> Result<(), ClientError> {
        self.call(Request::RemoveMember { id }).await.map(|_| ())
    }

    /// Asks one member for its counters (no retries elsewhere).
    pub async fn metrics_of(&self, addr: &str) -> Result<crate::protocol::Metrics, ClientError> {
        match self.ask_one(addr, Request::Metrics).await? {
            Response::Metrics(m) => Ok(m),
            other => Err(unexpected(other)),
        }
    }

    /// Asks one member for its status (no retries elsewhere).
    pub async fn status_of(&self, addr: &str) -> Result<MemberStatus, ClientError> {
        match self.ask_one(addr, Request::Status).await? {
            Response::Status(s) => Ok(*s),
            other => Err(unexpected(other)),
        }
    }

    /// Sends `req` to the member at `addr` alone, once, under the timeout.
    async fn ask_one(&self, addr: &str, req: Request) -> Result<Response, ClientError> {
        let deadline = Instant::now() + self.inner.opts.timeout;
        let err = match tokio::time::timeout_at(deadline, self.attempt(addr, req)).await {
            Ok(Ok(Ok(resp))) => return Ok(resp),
            Ok(Ok(Err(e))) => return Err(ClientError::Api(e)),
            Ok(Err(AttemptError(e))) => e,
            Err(_) => "timed out".to_owned(),
        };
        Err(ClientError::Unavailable {
            tried: vec![addr.to_owned()],
            last_error: err,
            timeout: self.inner.opts.timeout,
            write: false,
        })
    }

    /// Runs a write under the session: the same seq on every retry.
    ///
    /// A member that does not know the session answers `SessionExpired`:
    /// the session expired, or its first writes never reached the log (the
    /// members cannot tell which, so that write's outcome is unknown). The
    /// client then starts a new session, so that its next writes go through
    /// instead of being refused the same way for ever.
    async fn write(&self, make: impl Fn(Option<SessionSeq>) -> Request) -> Result<Response, ClientError> {
        let session = {
            let mut s = self.inner.session.lock().unwrap_or_else(|p| p.into_inner());
            let seq = s.next_seq;
            s.next_seq += 1;
            s.outstanding.insert(seq);
            let ack_below = s.outstanding.first().copied().unwrap_or(seq);
            SessionSeq { client: s.client_id, seq, ack_below }
        };
        // However the call ends (even dropped mid-way), the seq stops being
        // outstanding, so the members may forget its answer.
        let _done = Outstanding { inner: &self.inner, client_id: session.client, seq: session.seq };
        let result = self.call(make(Some(session))).await;
        if let Err(ClientError::Api(ApiError::SessionExpired)) = &result {
            let mut s = self.inner.session.lock().unwrap_or_else(|p| p.into_inner());
            if s.client_id == session.client {
                *s = Session::new();
            }
        }
        result
    }

    fn pick(&self, stale_read: bool) -> String {
        if !stale_read {
            if let Some(l) = self.leader() {
                return l;
            }
        }
        let Ok(eps) = self.inner.endpoints.lock() else { return String::new() };
        if eps.is_empty() {
            return String::new();
        }
        eps[self.inner.rotate.load(Ordering::Relaxed) % eps.len()].clone()
    }

    fn set_leader(&self, addr: Option<String>) {
        let changed = match self.inner.leader.lock() {
            Ok(mut l) => {
                let changed = addr.is_some() && *l != addr;
                l.clone_from(&addr);
                changed
            }
            Err(_) => false,
        };
        // A new leader: learn the membership from it, so that the client
        // still finds the cluster after the members it was started with are
        // gone (members come and go with membership changes).
        if let (true, Some(a)) = (changed, addr) {
            self.remember(std::slice::from_ref(&a));
            self.learn_members(a, true);
        }
    }

    /// Sends `req` to the cluster, following hints and retrying until the
    /// overall timeout.
    pub async fn call(&self, req: Request) -> Result<Response, ClientError> {
        let timeout = self.inner.opts.timeout;
        let deadline = Instant::now() + timeout;
        let stale = matches!(
            req,
            Request::Get { consistency: Consistency::Stale, .. }
                | Request::Scan { consistency: Consistency::Stale, .. }
                | Request::Range { consistency: Consistency::Stale, .. }
        );
        let write = req.is_write();
        let mut tried: Vec<String> = Vec::new();
        let mut last_error = String::from("no endpoints");
        // Back off only once every endpoint failed to connect in a row; an
        // election in progress ("no leader known") is polled every 10 ms, so
        // that the first write after a failover is not held back by a long
        // sleep.
        let mut backoff = Duration::from_millis(10);
        let mut refused_in_a_row = 0usize;
        loop {
            let addr = self.pick(stale);
            if addr.is_empty() {
                break;
            }
            if !tried.contains(&addr) {
                tried.push(addr.clone());
            }
            let outcome = tokio::time::timeout_at(deadline, self.attempt(&addr, req.clone())).await;
            let pause = match outcome {
                Err(_) => {
                    last_error = format!("{addr}: no answer in time");
                    // A member that hangs (paused, overloaded) is not asked
                    // first again: the next call starts elsewhere.
                    self.set_leader(None);
                    self.inner.rotate.fetch_add(1, Ordering::Relaxed);
                    break;
                }
                Ok(Ok(Ok(resp))) => {
                    if !stale {
                        self.set_leader(Some(addr));
                    }
                    return Ok(resp);
                }
                Ok(Ok(Err(ApiError::NotLeader { leader: Some(hint) }))) if hint.addr != addr => {
                    last_error = format!("{addr}: not the leader");
                    refused_in_a_row = 0;
                    self.set_leader(Some(hint.addr));
                    continue;
                }
                Ok(Ok(Err(e @ (ApiError::NotLeader { .. } | ApiError::Unavailable(_))))) => {
                    last_error = format!("{addr}: {e}");
                    refused_in_a_row = 0;
                    Some(Duration::from_millis(10))
                }
                Ok(Ok(Err(e))) => return Err(ClientError::Api(e)),
                Ok(Err(AttemptError(e))) => {
                    last_error = format!("{addr}: {e}");
                    if let Ok(mut conns) = self.inner.conns.lock() {
                        conns.remove(&addr);
                    }
                    refused_in_a_row += 1;
                    let endpoints = self.inner.endpoints.lock().map_or(1, |e| e.len());
                    if refused_in_a_row < endpoints {
                        None
                    } else {
                        refused_in_a_row = 0;
                        let b = backoff;
                        backoff = (backoff * 2).min(Duration::from_millis(200));
                        Some(b)
                    }
                }
            };
            self.set_leader(None);
            self.inner.rotate.fetch_add(1, Ordering::Relaxed);
            if let Some(pause) = pause {
                if tokio::time::timeout_at(deadline, tokio::time::sleep(pause)).await.is_err() {
                    break;
                }
            }
        }
        Err(ClientError::Unavailable { tried, last_error, timeout, write })
    }

    /// One try at one member.
    async fn attempt(&self, addr: &str, req: Request) -> Result<Result<Response, ApiError>, AttemptError> {
        let conn = self.conn(addr).await?;
        let (tx, rx) = oneshot::channel();
        conn.tx.send((req, tx)).map_err(|_| AttemptError("connection closed".into()))?;
        rx.await.map_err(|_| AttemptError("connection lost before the answer".into()))
    }

    async fn conn(&self, addr: &str) -> Result<Arc<Conn>, AttemptError> {
        if let Some(c) = self.open_conn(addr) {
            return Ok(c);
        }
        let gate = match self.inner.connecting.lock() {
            Ok(mut g) => g.entry(addr.to_owned()).or_default().clone(),
            Err(_) => Arc::default(),
        };
        let waited_since = Instant::now();
        let mut last_failure = gate.lock().await;
        // The attempt this request waited for may have succeeded, or failed.
        if let Some(c) = self.open_conn(addr) {
            return Ok(c);
        }
        if let Some((when, error)) = &*last_failure {
            if *when >= waited_since {
                return Err(AttemptError(error.clone()));
            }
        }
        match connect(addr).await {
            Ok(conn) => {
                *last_failure = None;
                let conn = Arc::new(conn);
                if let Ok(mut conns) = self.inner.conns.lock() {
                    conns.insert(addr.to_owned(), conn.clone());
                }
                // Each member connected to teaches the membership, so that
                // the client still finds the cluster once the members it
                // was given are gone.
                self.learn_members(addr.to_owned(), false);
                Ok(conn)
            }
            Err(e) => {
                *last_failure = Some((Instant::now(), e.0.clone()));
                Err(e)
            }
        }
    }

    /// The open connection to `addr`, if there is one.
    fn open_conn(&self, addr: &str) -> Option<Arc<Conn>> {
        let c = self.inner.conns.lock().ok()?.get(addr).cloned()?;
        (!c.tx.is_closed()).then_some(c)
    }
}

fn unexpected(r: Response) -> ClientError {
    ClientError::Api(ApiError::Internal(format!("unexpected response {r:?}")))
}

async fn connect(addr: &str) -> Result<Conn, AttemptError> {
    let stream = tokio::time::timeout(Duration::from_secs(2), TcpStream::connect(addr))
        .await
        .map_err(|_| AttemptError("connect timed out".into()))?
        .map_err(|e| AttemptError(e.to_string()))?;
    stream.set_nodelay(true).map_err(|e| AttemptError(e.to_string()))?;
    let mut framed = protocol::framed(stream);
    protocol::send(&mut framed, &Hello::new(ConnKind::Client))
        .await
        .map_err(|e| AttemptError(e.to_string()))?;
    match protocol::recv::<_, HelloReply>(&mut framed).await.map_err(|e| AttemptError(e.to_string()))? {
        Some(HelloReply::Welcome { .. }) => {}
        Some(HelloReply::Refused { reason }) => return Err(AttemptError(format!("refused: {reason}"))),
        None => return Err(AttemptError("closed during hello".into())),
    }
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(conn_task(framed, rx));
    Ok(Conn { tx })
}

/// Writes requests and routes answers back by id, until either side fails.
async fn conn_task(
    framed: protocol::FramedConn<TcpStream>,
    mut rx: mpsc::UnboundedReceiver<(Request, Pending)>,
) {
    let (mut sink, mut stream) = framed.split();
    let mut pending: HashMap<u64, Pending> = HashMap::new();
    let mut next_id = 1u64;
    loop {
        tokio::select! {
            req = rx.recv() => {
                let Some((request, reply)) = req else { return };
                let mut batch = vec![(request, reply)];
                while let Ok(more) = rx.try_recv() {
                    batch.push(more);
                    if batch.len() >= 1024 {
                        break;
                    }
                }
                let mut failed = false;
                for (request, reply) in batch {
                    let id = next_id;
                    next_id += 1;
                    let frame = match protocol::encode(&ClientRequest { id, request }) {
                        Ok(f) => f,
                        Err(e) => {
                            let _ = reply.send(Err(ApiError::Invalid(e.to_string())));
                            continue;
                        }
                    };
                    pending.insert(id, reply);
                    if sink.feed(frame).await.is_err() {
                        failed = true;
                        break;
                    }
                }
                if failed || sink.flush().await.is_err() {
                    return;
                }
            }
            frame = stream.next() => {
                let Some(Ok(frame)) = frame else { return };
                let Ok(resp) = protocol::decode::<ClientResponse>(&frame) else { return };
                if let Some(reply) = pending.remove(&resp.id) {
                    let _ = reply.send(resp.result);
                }
            }
        }
    }
}

mod learn;
#[cfg(test)]
mod tests;
