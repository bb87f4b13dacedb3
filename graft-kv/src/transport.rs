//! Outbound Raft traffic: one task per peer, each with its own TCP
//! connection, a bounded queue, and reconnection with exponential backoff.
//!
//! Raft tolerates lost messages, so a full queue drops rather than waits: a
//! dead or slow peer never grows this member's memory, and never blocks the
//! node task.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::SinkExt;
use graft_core::{Message, NodeId};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::error::ProtocolError;
use crate::mailbox::NodeInput;
use crate::protocol::{self, ConnKind, Hello, HelloReply, PeerFrame};

/// Messages queued per peer before new ones are dropped.
const PEER_QUEUE: usize = 8192;
/// The longest wait between reconnection attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(1);
/// The first wait between reconnection attempts.
const MIN_BACKOFF: Duration = Duration::from_millis(10);

struct Peer {
    addr: String,
    tx: mpsc::Sender<Message>,
}

/// Sends Raft messages to peers. Cheap to share.
#[derive(Clone)]
pub struct Transport {
    inner: Arc<Inner>,
}

struct Inner {
    cluster: String,
    me: NodeId,
    peers: Mutex<HashMap<NodeId, Peer>>,
    node: mpsc::Sender<NodeInput>,
    shutdown: CancellationToken,
    dropped: AtomicU64,
}

impl Transport {
    /// A transport for member `me` of `cluster`. Unreachable peers are
    /// reported to `node`.
    pub fn new(
        cluster: String,
        me: NodeId,
        node: mpsc::Sender<NodeInput>,
        shutdown: CancellationToken,
    ) -> Transport {
        Transport {
            inner: Arc::new(Inner {
                cluster,
                me,
                peers: Mutex::new(HashMap::new()),
                node,
                shutdown,
                dropped: AtomicU64::new(0),
            }),
        }
    }

    /// Starts (or re-points) the connection to peer `id` at `addr`.
    pub fn set_peer(&self, id: NodeId, addr: String) {
        if id == self.inner.me {
            return;
        }
        let Ok(mut peers) = self.inner.peers.lock() else { return };
        if peers.get(&id).is_some_and(|p| p.addr == addr) {
            return;
        }
        let (tx, rx) = mpsc::channel(PEER_QUEUE);
        // Replacing the sender ends the old task (its queue closes).
        peers.insert(id, Peer { addr: addr.clone(), tx });
        let inner = self.inner.clone();
        tokio::spawn(async move { peer_task(inner, id, addr, rx).await });
    }

    /// Stops talking to peer `id`.
    pub fn remove_peer(&self, id: NodeId) {
        if let Ok(mut peers) = self.inner.peers.lock() {
            peers.remove(&id);
        }
    }

    /// The peers currently connected to (or being connected to).
    pub fn peer_ids(&self) -> Vec<NodeId> {
        self.inner.peers.lock().map(|p| p.keys().copied().collect()).unwrap_or_default()
    }

    /// Queues `m` for its peer; drops it if the queue is full or the peer unknown.
    pub fn send(&self, m: Message) {
        let Ok(peers) = self.inner.peers.lock() else { return };
        match peers.get(&m.to) {
            Some(p) => {
                if p.tx.try_send(m).is_err() {
                    self.inner.dropped.fetch_add(1, Ordering::Relaxed);
                }
            }
            None => {
                debug!("no address for member {}; message dropped", m.to);
            }
        }
    }

    /// How many messages were dropped because a peer's queue was full.
    pub fn dropped(&self) -> u64 {
        self.inner.dropped.load(Ordering::Relaxed)
    }
}

async fn peer_task(inner: Arc<Inner>, to: NodeId, addr: String, mut rx: mpsc::Receiver<Message>) {
    let mut backoff = MIN_BACKOFF;
    let mut warned = false;
    loop {
        let attempt = tokio::select! {
            _ = inner.shutdown.cancelled() => return,
            r = connect(&inner, to, &addr) => r,
        };
        match attempt {
            Ok(mut conn) => {
                if warned {
                    warn!("reconnected to member {to} at {addr}");
                }
                warned = false;
                backoff = MIN_BACKOFF;
                match pump(&inner, &mut conn, &mut rx).await {
                    Ok(()) => return, // queue closed or shutdown
                    Err(e) => debug!("connection to member {to} at {addr} lost: {e}"),
                }
            }
            Err(e) => {
                if !warned {
                    warn!("cannot reach member {to} at {addr}: {e}; retrying with backoff");
                    warned = true;
                }
            }
        }
        let _ = inner.node.try_send(NodeInput::Unreachable(to));
        // Messages queued while disconnected are stale by the time we are
        // back; Raft resends what matters.
        while let Ok(_stale) = rx.try_recv() {}
        tokio::select! {
            _ = inner.shutdown.cancelled() => return,
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
        if rx.is_closed() {
            return;
        }
    }
}

async fn connect(
    inner: &Inner,
    to: NodeId,
    addr: &str,
) -> Result<protocol::FramedConn<TcpStream>, ProtocolError> {
    let stream = tokio::time::timeout(Duration::from_secs(2), TcpStream::connect(addr))
        .await
        .map_err(|_| ProtocolError::Handshake("connect timed out".into()))??;
    stream.set_nodelay(true)?;
    let mut conn = protocol::framed(stream);
    let hello = Hello::new(ConnKind::Peer { cluster: inner.cluster.clone(), from: inner.me, to });
    protocol::send(&mut conn, &hello).await?;
    let reply: Option<HelloReply> = tokio::time::timeout(Duration::from_secs(2), protocol::recv(&mut conn))
        .await
        .map_err(|_| ProtocolError::Handshake("no answer to hello".into()))??;
    match reply {
        Some(HelloReply::Welcome { member, cluster }) if member == to && cluster == inner.cluster => Ok(conn),
        Some(HelloReply::Welcome { member, cluster }) => Err(ProtocolError::Handshake(format!(
            "{addr} is member {member} of cluster {cluster:?}, expected member {to} of {:?}",
            inner.cluster
        ))),
        Some(HelloReply::Refused { reason }) => Err(ProtocolError::Handshake(format!("refused: {reason}"))),
        None => Err(ProtocolError::Handshake("closed during hello".into())),
    }
}

/// Sends queued messages until the queue closes (`Ok`) or the connection fails.
async fn pump(
    inner: &Inner,
    conn: &mut protocol::FramedConn<TcpStream>,
    rx: &mut mpsc::Receiver<Message>,
) -> Result<(), ProtocolError> {
    loop {
        let first = tokio::select! {
            _ = inner.shutdown.cancelled() => return Ok(()),
            m = rx.recv() => match m {
                Some(m) => m,
                None => return Ok(()),
            },
        };
        conn.feed(protocol::encode(&PeerFrame::Raft(first))?).await?;
        // Batch whatever else is queued into the same flush.
        for _ in 0..1024 {
            match rx.try_recv() {
                Ok(m) => conn.feed(protocol::encode(&PeerFrame::Raft(m))?).await?,
                Err(_) => break,
            }
        }
        SinkExt::<bytes::Bytes>::flush(conn).await?;
    }
}
