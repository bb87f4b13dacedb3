//! One member: the listener (peers and clients share its port), the
//! connection handlers, and the startup and shutdown sequence.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use graft_core::{ConfState, NodeId, RawNode};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::config::ClusterConfig;
use crate::error::{ConfigError, ProtocolError, StoreError};
use crate::mailbox::{NodeInput, Responder};
use crate::members::AddressBook;
use crate::node::{Node, NodeError, NodeOptions};
use crate::protocol::{
    self, ClientRequest, ClientResponse, ConnKind, Hello, HelloReply, PeerFrame, Request, MAGIC,
    PROTOCOL_VERSION,
};
use crate::storage::{self, Bootstrap, Identity};
use crate::transport::Transport;
use crate::watch::{self, stream::WatchRequest, WatchHub};

/// Requests one client connection may have in flight.
const MAX_IN_FLIGHT_PER_CONN: usize = 4096;

/// The most watches one client connection serves at once.
const MAX_WATCHES_PER_CONN: usize = 1024;
/// Connections served at once; more wait in the kernel's accept queue.
const MAX_CONNECTIONS: usize = 4096;
/// How long a new connection has to say hello.
const HELLO_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a member could not start or had to stop.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The configuration is wrong.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The data directory cannot be used.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The address cannot be listened on (in use, not local, ...).
    #[error("cannot listen on {addr}: {cause}")]
    Bind {
        /// The address.
        addr: String,
        /// Why.
        cause: std::io::Error,
    },
    /// The node failed while running.
    #[error(transparent)]
    Node(#[from] NodeError),
    /// The Raft core refused to start.
    #[error("raft: {0}")]
    Raft(graft_core::Error),
    /// Joining the cluster failed.
    #[error("cannot join through {target}: {reason}")]
    Join {
        /// The member asked.
        target: String,
        /// Why.
        reason: String,
    },
}

impl From<graft_core::Error> for ServeError {
    fn from(e: graft_core::Error) -> ServeError {
        ServeError::Raft(e)
    }
}

/// How to run a member.
#[derive(Clone, Debug)]
pub struct MemberOptions {
    /// The member id.
    pub id: NodeId,
    /// The cluster.
    pub cluster: ClusterConfig,
    /// Where its database lives.
    pub data_dir: PathBuf,
    /// Run the timestamp demo.
    pub demo: bool,
    /// Join a running cluster instead of starting from the cluster file's
    /// members.
    pub join: Option<Join>,
    /// Serve etcd's v3 API here (default: the cluster file's `[etcd]`
    /// address for this member, if any).
    pub etcd_listen: Option<String>,
}

/// How a new member joins a running cluster.
#[derive(Clone, Debug)]
pub struct Join {
    /// Any member of the cluster.
    pub target: String,
    /// Where this member binds.
    pub listen: String,
    /// Where the others reach it (usually the same as `listen`).
    pub advertise: String,
    /// Become a voter once caught up (otherwise stay a learner).
    pub promote: bool,
}

/// Starts a member and runs it until `shutdown` fires (or it fails).
/// Checks everything that can be wrong before touching the data directory:
/// an unknown id, an address in use, then a foreign data directory.
pub async fn run_member(mut opts: MemberOptions, shutdown: CancellationToken) -> Result<(), ServeError> {
    opts.cluster.validate()?;
    // Who we are, where we listen, and what a new data directory starts with.
    let mut rejoining = false;
    let (listen, bootstrap) = match &opts.join {
        None => {
            let me = opts.cluster.member(opts.id)?.clone();
            let bootstrap = Bootstrap {
                conf: ConfState::with_voters(opts.cluster.members.iter().map(|m| m.id)),
                members: opts.cluster.members.iter().map(|m| (m.id, m.addr.clone())).collect(),
            };
            (me.bind_addr().to_owned(), bootstrap)
        }
        // A member that joined before restarts from its own data: it knows
        // its cluster and the members, and needs no live target.
        Some(join) if opts.data_dir.join(storage::DB_FILE).exists() => {
            rejoining = true;
            opts.cluster.members.clear();
            (join.listen.clone(), Bootstrap::default())
        }
        Some(join) => {
            // A new member learns the cluster from a running member, and
            // starts with no vote: it is added as a learner.
            let status = crate::Client::new(crate::ClientOptions {
                endpoints: vec![join.target.clone()],
                timeout: Duration::from_secs(10),
            })
            .status_of(&join.target)
            .await
            .map_err(|e| ServeError::Join { target: join.target.clone(), reason: e.to_string() })?;
            opts.cluster.cluster_id = status.cluster.clone();
            opts.cluster.members = status
                .members
                .iter()
                // A member whose address the answering member does not know
                // yet is learnt from the log.
                .filter(|m| m.id != opts.id && !m.addr.is_empty())
                .map(|m| crate::config::MemberConfig { id: m.id, addr: m.addr.clone(), listen: None })
                .collect();
            let members = opts.cluster.members.iter().map(|m| (m.id, m.addr.clone())).collect();
            (join.listen.clone(), Bootstrap { conf: ConfState::default(), members })
        }
    };
    let listener = bind(&listen).await.map_err(|cause| ServeError::Bind { addr: listen.clone(), cause })?;
    let identity = Identity { cluster: opts.cluster.cluster_id.clone(), member: opts.id };
    let data_dir = opts.data_dir.clone();
    let store = tokio::task::spawn_blocking(move || {
        if rejoining {
            storage::open_existing(&data_dir, identity.member)
        } else {
            storage::open(&data_dir, &identity, &bootstrap)
        }
    })
    .await
    .map_err(|e| StoreError::Corrupt { what: "open".into(), message: e.to_string() })??;
    if rejoining {
        opts.cluster.cluster_id = store.identity.cluster.clone();
    }
    info!(
        "member {} of cluster {:?} listening on {}, data in {}",
        opts.id,
        opts.cluster.cluster_id,
        listen,
        opts.data_dir.display()
    );

    let timing = opts.cluster.timing;
    let mut cfg = graft_core::Config::new(opts.id);
    cfg.election_tick = timing.election_ticks;
    cfg.heartbeat_tick = timing.heartbeat_ticks;
    cfg.applied = store.sm.applied();
    cfg.seed = random_seed(opts.id);
    // Addresses: the cluster file, then the state machine's (as of its
    // applied index), then the membership entries of the log after it,
    // in log order.
    let mut addrs = AddressBook::default();
    for m in &opts.cluster.members {
        addrs.insert(m.id, &m.addr);
    }
    addrs.learn_members(store.sm.members());
    learn_log_addresses(&mut addrs, &store.log, store.sm.applied())?;
    let raw = RawNode::new(cfg, store.log)?;

    let (node_tx, node_rx) = mpsc::channel(16 * 1024);
    let transport =
        Transport::new(opts.cluster.cluster_id.clone(), opts.id, node_tx.clone(), shutdown.clone());
    let node_opts = NodeOptions {
        cluster: opts.cluster.cluster_id.clone(),
        tick: timing.tick(),
        election_ticks: timing.election_ticks,
        demo: opts.demo,
        crash_before_reply: std::env::var("GRAFT_FAULT_CRASH_BEFORE_REPLY").ok().and_then(|v| v.parse().ok()),
        log: opts.cluster.log,
        history: opts.cluster.history.retention(),
        inputs: node_tx.clone(),
        watches: WatchHub::new(store.sm.applied()),
    };
    let ctx = Arc::new(ConnCtx {
        cluster: opts.cluster.cluster_id.clone(),
        me: opts.id,
        node: node_tx,
        db: store.sm_db.clone(),
        snapshot_busy: Arc::new(tokio::sync::Mutex::new(())),
        watches: node_opts.watches.clone(),
    });
    let known: Vec<String> =
        addrs.iter().filter(|(id, _)| *id != opts.id).map(|(_, a)| a.to_owned()).collect();
    let node = Node::new(raw, store.sm, store.log_db, transport, node_opts, addrs);

    start_etcd(&opts, &listen, &known, &shutdown).await?;
    let accept = tokio::spawn(accept_loop(listener, ctx, shutdown.clone()));
    let joining = opts.join.clone().map(|join| {
        let (id, shutdown) = (opts.id, shutdown.clone());
        tokio::spawn(async move {
            let result = ask_to_join(id, &join, known).await;
            match &result {
                // A member already in the cluster keeps running: the others
                // still reach it (unless it moved; then it retries on restart).
                Err(e) if rejoining => tracing::warn!("{e}"),
                Err(e) => {
                    tracing::error!("{e}");
                    shutdown.cancel();
                }
                Ok(()) => {}
            }
            if rejoining {
                Ok(())
            } else {
                result
            }
        })
    });
    let result = node.run(node_rx, shutdown.clone()).await;
    // Whatever ended the node ends the member.
    shutdown.cancel();
    let _ = accept.await;
    if let Some(j) = joining {
        if let Ok(Err(e)) = j.await {
            return Err(e);
        }
    }
    result.map_err(ServeError::from)
}

/// Binds and starts etcd's API for this member, if it serves it.
async fn start_etcd(
    opts: &MemberOptions,
    listen: &str,
    known: &[String],
    shutdown: &CancellationToken,
) -> Result<(), ServeError> {
    let Some(addr) =
        opts.etcd_listen.clone().or_else(|| opts.cluster.etcd.addr_of(opts.id).map(str::to_owned))
    else {
        return Ok(());
    };
    let listener = bind(&addr).await.map_err(|cause| ServeError::Bind { addr: addr.clone(), cause })?;
    // The frontend reaches this member where it listens.
    let local = listen.replace("0.0.0.0", "127.0.0.1");
    let mut frontend = crate::etcd::Frontend::new(&opts.cluster.cluster_id, opts.id, local, known.to_vec());
    frontend.etcd_addrs = opts.cluster.etcd.by_id();
    frontend.etcd_addrs.insert(opts.id, addr.clone());
    frontend.db_files = vec![opts.data_dir.join(storage::DB_FILE), opts.data_dir.join(storage::STATE_FILE)];
    info!("member {} serves etcd's v3 API on {addr}", opts.id);
    let stop = shutdown.clone();
    tokio::spawn(async move {
        if let Err(e) = crate::etcd::serve(listener, frontend, stop).await {
            tracing::error!("etcd API on {addr}: {e}");
        }
    });
    Ok(())
}

/// Learns the addresses in the membership entries of `log` after `applied`
/// (read in batches of a few MiB).
fn learn_log_addresses(
    addrs: &mut AddressBook,
    log: &storage::RaftLogStore,
    applied: graft_core::Index,
) -> Result<(), StoreError> {
    use graft_core::Storage;
    let corrupt =
        |e: graft_core::StorageError| StoreError::Corrupt { what: "log".into(), message: e.to_string() };
    let hi = log.last_index().map_err(corrupt)? + 1;
    let mut lo = applied + 1;
    while lo < hi {
        let batch = log.entries(lo, hi, 4 << 20).map_err(corrupt)?;
        let Some(last) = batch.last() else { break };
        lo = last.index + 1;
        addrs.learn_entries(&batch);
    }
    Ok(())
}

/// Asks the cluster to add this member (or to record its new address),
/// unless it already knows it at this address.
/// `known`: the other members this member already knows of (from its data),
/// tried too.
async fn ask_to_join(id: NodeId, join: &Join, known: Vec<String>) -> Result<(), ServeError> {
    let err = |reason: String| ServeError::Join { target: join.target.clone(), reason };
    let mut endpoints = vec![join.target.clone()];
    endpoints.extend(known);
    let client = crate::Client::new(crate::ClientOptions {
        endpoints: endpoints.clone(),
        timeout: Duration::from_secs(30),
    });
    let mut status = None;
    let mut last = String::new();
    for e in &endpoints {
        match client.status_of(e).await {
            Ok(s) => {
                status = Some(s);
                break;
            }
            Err(x) => last = x.to_string(),
        }
    }
    let status = status.ok_or_else(|| err(last))?;
    if status.members.iter().any(|m| m.id == id && m.addr == join.advertise) {
        info!("member {id} is already in the cluster at {}", join.advertise);
        return Ok(());
    }
    client.add_member(id, join.advertise.clone(), join.promote).await.map_err(|e| err(e.to_string()))?;
    info!(
        "member {id} joined the cluster as a learner{}",
        if join.promote { "; it becomes a voter once it has caught up" } else { "" }
    );
    Ok(())
}

fn random_seed(id: NodeId) -> u64 {
    let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    (t.as_nanos() as u64) ^ (u64::from(std::process::id()) << 32) ^ id.wrapping_mul(0x9e37_79b9_7f4a_7c15)
}

struct ConnCtx {
    cluster: String,
    me: NodeId,
    node: mpsc::Sender<NodeInput>,
    db: Arc<redb::Database>,
    /// One incoming snapshot at a time.
    snapshot_busy: Arc<tokio::sync::Mutex<()>>,
    /// The member's watch hub, which the node publishes to.
    watches: Arc<WatchHub>,
}

/// The listen backlog: room for a burst of simultaneous connects (a full
/// accept queue drops SYNs, and each costs the client a 1 s retransmission).
/// The kernel caps it at `net.core.somaxconn`.
const LISTEN_BACKLOG: u32 = 4096;

/// Binds `addr` (host:port, resolved) with [`LISTEN_BACKLOG`].
async fn bind(addr: &str) -> std::io::Result<TcpListener> {
    let mut last = None;
    for a in tokio::net::lookup_host(addr).await? {
        let socket =
            if a.is_ipv4() { tokio::net::TcpSocket::new_v4()? } else { tokio::net::TcpSocket::new_v6()? };
        // As std and tokio do: a restarted member can rebind at once.
        socket.set_reuseaddr(true)?;
        match socket.bind(a).and_then(|()| socket.listen(LISTEN_BACKLOG)) {
            Ok(l) => return Ok(l),
            Err(e) => last = Some(e),
        }
    }
    Err(last
        .unwrap_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidInput, "resolves to no address")))
}

async fn accept_loop(listener: TcpListener, ctx: Arc<ConnCtx>, shutdown: CancellationToken) {
    let limit = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let mut backoff = Duration::from_millis(5);
    loop {
        let Ok(permit) = limit.clone().acquire_owned().await else { return };
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => return,
            a = listener.accept() => a,
        };
        match accepted {
            Ok((stream, peer)) => {
                backoff = Duration::from_millis(5);
                let ctx = ctx.clone();
                let shutdown = shutdown.clone();
                tokio::spawn(async move {
                    if let Err(e) = handle_conn(stream, &ctx, shutdown).await {
                        debug!("connection from {peer} closed: {e}");
                        if matches!(e, ProtocolError::Decode(_) | ProtocolError::Handshake(_)) {
                            warn!("connection from {peer} closed: {e}");
                        }
                    }
                    drop(permit);
                });
            }
            Err(e) => {
                // Usually out of file descriptors: wait and retry.
                warn!("accept failed: {e}");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
            }
        }
    }
}

async fn handle_conn(
    stream: TcpStream,
    ctx: &ConnCtx,
    shutdown: CancellationToken,
) -> Result<(), ProtocolError> {
    stream.set_nodelay(true)?;
    let mut conn = protocol::framed(stream);
    let hello: Hello = match tokio::time::timeout(HELLO_TIMEOUT, protocol::recv(&mut conn)).await {
        Err(_) => return Err(ProtocolError::Handshake("no hello within 5 s".into())),
        Ok(r) => match r? {
            Some(h) => h,
            None => return Ok(()),
        },
    };
    if hello.magic != MAGIC {
        return Err(ProtocolError::Handshake("not a graft connection".into()));
    }
    if hello.version != PROTOCOL_VERSION {
        let reason = format!(
            "protocol version {} is not supported (this member speaks {PROTOCOL_VERSION})",
            hello.version
        );
        protocol::send(&mut conn, &HelloReply::Refused { reason: reason.clone() }).await?;
        return Err(ProtocolError::Handshake(reason));
    }
    match hello.kind {
        ConnKind::Peer { cluster, from, to } => {
            welcome_member(&mut conn, ctx, &cluster, to).await?;
            peer_loop(conn, ctx, from, shutdown).await
        }
        ConnKind::Snapshot { cluster, from, to } => {
            welcome_member(&mut conn, ctx, &cluster, to).await?;
            crate::snapshot::receive(
                conn,
                ctx.db.clone(),
                ctx.me,
                from,
                ctx.node.clone(),
                ctx.snapshot_busy.clone(),
            )
            .await
        }
        ConnKind::Client => {
            protocol::send(&mut conn, &HelloReply::Welcome { member: ctx.me, cluster: ctx.cluster.clone() })
                .await?;
            client_loop(conn, ctx, shutdown).await
        }
    }
}

/// Answers a member's hello: welcome if it reached the member of the cluster
/// it meant, refused (with the reason) otherwise.
async fn welcome_member(
    conn: &mut protocol::FramedConn<TcpStream>,
    ctx: &ConnCtx,
    cluster: &str,
    to: NodeId,
) -> Result<(), ProtocolError> {
    if cluster != ctx.cluster || to != ctx.me {
        let reason =
            format!("this is member {} of cluster {:?}, not member {to} of {cluster:?}", ctx.me, ctx.cluster);
        protocol::send(conn, &HelloReply::Refused { reason: reason.clone() }).await?;
        return Err(ProtocolError::Handshake(reason));
    }
    protocol::send(conn, &HelloReply::Welcome { member: ctx.me, cluster: ctx.cluster.clone() }).await
}

async fn peer_loop(
    mut conn: protocol::FramedConn<TcpStream>,
    ctx: &ConnCtx,
    from: NodeId,
    shutdown: CancellationToken,
) -> Result<(), ProtocolError> {
    loop {
        let frame: Option<PeerFrame> = tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            f = protocol::recv(&mut conn) => f?,
        };
        let Some(PeerFrame::Raft(m)) = frame else { return Ok(()) };
        if m.from != from || m.to != ctx.me {
            return Err(ProtocolError::Handshake(format!(
                "peer {from} sent a message from {} to {}",
                m.from, m.to
            )));
        }
        if ctx.node.send(NodeInput::Raft(m)).await.is_err() {
            return Ok(());
        }
    }
}

async fn client_loop(
    conn: protocol::FramedConn<TcpStream>,
    ctx: &ConnCtx,
    shutdown: CancellationToken,
) -> Result<(), ProtocolError> {
    let (mut sink, mut stream) = conn.split();
    let (resp_tx, mut resp_rx) = mpsc::unbounded_channel::<(ClientResponse, Option<OwnedSemaphorePermit>)>();
    let writer = tokio::spawn(async move {
        while let Some((first, permit)) = resp_rx.recv().await {
            let mut written = vec![permit];
            sink.feed(protocol::encode(&first)?).await?;
            while let Ok((more, permit)) = resp_rx.try_recv() {
                sink.feed(protocol::encode(&more)?).await?;
                written.push(permit);
            }
            sink.flush().await?;
            // A watch may queue more once its answers are on the socket.
            drop(written);
        }
        Ok::<(), ProtocolError>(())
    });
    let in_flight = Arc::new(Semaphore::new(MAX_IN_FLIGHT_PER_CONN));
    // The watches this connection serves, by request id.
    let mut watches: HashMap<u64, CancellationToken> = HashMap::new();
    let result = async {
        loop {
            let Ok(permit) = in_flight.clone().acquire_owned().await else { return Ok(()) };
            let frame = tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                f = stream.next() => f,
            };
            let frame = match frame {
                None => return Ok(()),
                Some(f) => f?,
            };
            let req: ClientRequest = protocol::decode(&frame)?;
            let responder = Responder::Conn { id: req.id, tx: resp_tx.clone(), permit: Some(permit) };
            match req.request {
                Request::Watch { filter, start_revision, prev_kv, progress_ms } => {
                    watches.retain(|_, t| !t.is_cancelled());
                    if let Err(e) = protocol::check_key(&filter.key) {
                        responder.send(Err(e));
                        continue;
                    }
                    if watches.len() >= MAX_WATCHES_PER_CONN || watches.contains_key(&req.id) {
                        responder.send(Err(protocol::ApiError::Invalid(format!(
                            "a connection serves at most {MAX_WATCHES_PER_CONN} watches, each with its own request id"
                        ))));
                        continue;
                    }
                    drop(responder);
                    let stop = shutdown.child_token();
                    watches.insert(req.id, stop.clone());
                    let w = WatchRequest { filter, start_revision, prev_kv, progress_ms };
                    let (db, hub, tx) = (ctx.db.clone(), ctx.watches.clone(), resp_tx.clone());
                    tokio::spawn(async move {
                        watch::stream::serve(db, hub, req.id, w, tx, stop.clone()).await;
                        stop.cancel();
                    });
                }
                Request::CancelWatch { id } => {
                    let found = watches.remove(&id).map(|t| t.cancel()).is_some();
                    responder.send(match found {
                        true => Ok(protocol::Response::Done),
                        false => Err(protocol::ApiError::Invalid(format!("no watch with request id {id}"))),
                    });
                }
                request => {
                    if let Err(mpsc::error::SendError(NodeInput::Client(_, r))) =
                        ctx.node.send(NodeInput::Client(request, responder)).await
                    {
                        r.send(Err(protocol::ApiError::Unavailable("member is shutting down".into())));
                        return Ok(());
                    }
                }
            }
        }
    }
    .await;
    for (_, stop) in watches {
        stop.cancel();
    }
    drop(resp_tx);
    // Answers already queued still go out, unless the writer failed.
    let _ = tokio::time::timeout(Duration::from_secs(1), writer).await;
    result
}
