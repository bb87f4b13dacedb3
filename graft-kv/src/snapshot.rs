//! Streaming snapshots to followers that are behind the leader's log.
//!
//! The core only names the snapshot; this module moves the data. The leader
//! opens a redb read transaction (a consistent view at its applied index,
//! taken without stopping writes), and streams its tables in chunks of about
//! 1 MiB over a dedicated connection. The follower stages the rows in
//! separate tables, one chunk at a time, and only when the stream is whole
//! hands the snapshot to Raft; the node then installs it in two
//! transactions: the state machine's, durably (staged tables renamed over
//! the live ones, metadata replaced), then the log's (reset to start after
//! the snapshot). A crash before the first leaves the old state; between the
//! two, the next start finds the state machine ahead of the log and resets
//! the log after it (`storage::repair`). Memory on both sides is bounded by
//! a couple of chunks.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::SinkExt;
use graft_core::{Message, MessageBody, NodeId, SnapshotMeta};
use redb::{Database, ReadTransaction};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tracing::{info, warn};

use crate::error::{ProtocolError, StoreError};
use crate::mailbox::NodeInput;
use crate::protocol::{self, ConnKind, Hello, HelloReply, SnapshotAck, SnapshotFrame, SnapshotTable};
use crate::storage::state_machine::{export_rows, stage_begin, stage_rows};
use crate::storage::StagedSnapshot;

/// Target size of one chunk.
const CHUNK_BYTES: usize = 1 << 20;
/// Chunks read ahead of the socket on the sending side.
const READ_AHEAD: usize = 2;

/// What the leader sends: a consistent view and what it contains.
pub struct Outgoing {
    /// The read transaction the rows come from.
    pub rtx: ReadTransaction,
    /// Index, term and membership of that view.
    pub meta: SnapshotMeta,
    /// The state machine metadata of that view.
    pub state: Bytes,
    /// The leader's term.
    pub term: u64,
}

/// Sends a snapshot to member `to` at `addr`, then reports the outcome to
/// the node.
pub async fn send(
    cluster: String,
    from: NodeId,
    to: NodeId,
    addr: String,
    out: Outgoing,
    node: mpsc::Sender<NodeInput>,
) {
    let index = out.meta.index;
    let started = std::time::Instant::now();
    let result = send_inner(&cluster, from, to, &addr, out).await;
    let ok = match result {
        Ok(rows) => {
            info!("snapshot at index {index} ({rows} rows) sent to member {to} in {:?}", started.elapsed());
            true
        }
        Err(e) => {
            warn!("snapshot at index {index} to member {to} at {addr} failed: {e}");
            false
        }
    };
    let _ = node.send(NodeInput::SnapshotSent { to, ok }).await;
}

async fn send_inner(
    cluster: &str,
    from: NodeId,
    to: NodeId,
    addr: &str,
    out: Outgoing,
) -> Result<u64, ProtocolError> {
    let stream = tokio::time::timeout(Duration::from_secs(2), TcpStream::connect(addr))
        .await
        .map_err(|_| ProtocolError::Handshake("connect timed out".into()))??;
    stream.set_nodelay(true)?;
    let mut conn = protocol::framed(stream);
    protocol::send(&mut conn, &Hello::new(ConnKind::Snapshot { cluster: cluster.to_owned(), from, to }))
        .await?;
    match protocol::recv::<_, HelloReply>(&mut conn).await? {
        Some(HelloReply::Welcome { member, .. }) if member == to => {}
        Some(HelloReply::Welcome { member, .. }) => {
            return Err(ProtocolError::Handshake(format!("{addr} is member {member}, not {to}")))
        }
        Some(HelloReply::Refused { reason }) => return Err(ProtocolError::Handshake(reason)),
        None => return Err(ProtocolError::Handshake("closed during hello".into())),
    }
    let begin = SnapshotFrame::Begin { term: out.term, meta: out.meta, state: out.state };
    protocol::send(&mut conn, &begin).await?;

    // A blocking reader fills a small queue; this task drains it to the socket.
    let (tx, mut rx) = mpsc::channel::<(SnapshotTable, Vec<(Bytes, Bytes)>)>(READ_AHEAD);
    let rtx = out.rtx;
    let reader = tokio::task::spawn_blocking(move || -> Result<u64, StoreError> {
        let mut rows = 0;
        for table in SnapshotTable::ALL {
            rows += export_rows(&rtx, table, CHUNK_BYTES, |chunk| tx.blocking_send((table, chunk)).is_ok())?;
        }
        Ok(rows)
    });
    while let Some((table, rows)) = rx.recv().await {
        conn.send(protocol::encode(&SnapshotFrame::Chunk { table, rows })?).await?;
    }
    let rows = match reader.await {
        Ok(Ok(rows)) => rows,
        Ok(Err(e)) => return Err(ProtocolError::Handshake(format!("reading the snapshot: {e}"))),
        Err(e) => return Err(ProtocolError::Handshake(format!("snapshot reader failed: {e}"))),
    };
    protocol::send(&mut conn, &SnapshotFrame::End { rows }).await?;
    match tokio::time::timeout(Duration::from_secs(60), protocol::recv::<_, SnapshotAck>(&mut conn)).await {
        Ok(Ok(Some(SnapshotAck::Staged))) => Ok(rows),
        Ok(Ok(Some(SnapshotAck::Failed { reason }))) => Err(ProtocolError::Handshake(reason)),
        Ok(Ok(None)) => Err(ProtocolError::Handshake("closed before acknowledging".into())),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(ProtocolError::Handshake("no acknowledgement within 60 s".into())),
    }
}

/// Receives a snapshot stream from `from` on `conn` (after the hello),
/// stages it, and hands it to the node. Only one stream is received at a
/// time (`busy` serializes them).
pub async fn receive(
    mut conn: protocol::FramedConn<TcpStream>,
    db: Arc<Database>,
    me: NodeId,
    from: NodeId,
    node: mpsc::Sender<NodeInput>,
    busy: Arc<tokio::sync::Mutex<()>>,
) -> Result<(), ProtocolError> {
    let _guard = busy.lock().await;
    let result = receive_inner(&mut conn, db, me, from, &node).await;
    let ack = match &result {
        Ok(()) => SnapshotAck::Staged,
        Err(e) => SnapshotAck::Failed { reason: e.to_string() },
    };
    let _ = protocol::send(&mut conn, &ack).await;
    result
}

async fn receive_inner(
    conn: &mut protocol::FramedConn<TcpStream>,
    db: Arc<Database>,
    me: NodeId,
    from: NodeId,
    node: &mpsc::Sender<NodeInput>,
) -> Result<(), ProtocolError> {
    let store_err = |e: StoreError| ProtocolError::Handshake(format!("staging the snapshot: {e}"));
    let (term, meta, state) = match protocol::recv::<_, SnapshotFrame>(conn).await? {
        Some(SnapshotFrame::Begin { term, meta, state }) => (term, meta, state),
        other => {
            return Err(ProtocolError::Handshake(format!("expected the snapshot's beginning, got {other:?}")))
        }
    };
    let d = db.clone();
    blocking(move || stage_begin(&d)).await?.map_err(store_err)?;
    let mut received = 0u64;
    loop {
        match protocol::recv::<_, SnapshotFrame>(conn).await? {
            Some(SnapshotFrame::Chunk { table, rows }) => {
                received += rows.len() as u64;
                let d = db.clone();
                blocking(move || stage_rows(&d, table, &rows)).await?.map_err(store_err)?;
            }
            Some(SnapshotFrame::End { rows }) if rows == received => break,
            Some(SnapshotFrame::End { rows }) => {
                return Err(ProtocolError::Handshake(format!(
                    "snapshot announced {rows} rows, {received} arrived"
                )))
            }
            other => {
                return Err(ProtocolError::Handshake(format!("unexpected frame in a snapshot: {other:?}")))
            }
        }
    }
    info!("snapshot at index {} ({received} rows) received from member {from}", meta.index);
    let staged = StagedSnapshot { index: meta.index, state };
    let msg = Message { from, to: me, term, body: MessageBody::Snapshot { meta } };
    // The staged tables must stay as they are until the node has installed
    // (or declined) them: wait for it before letting another stream in.
    let (done, installed) = tokio::sync::oneshot::channel();
    node.send(NodeInput::SnapshotReceived(msg, staged, done))
        .await
        .map_err(|_| ProtocolError::Handshake("member is shutting down".into()))?;
    let _ = installed.await;
    Ok(())
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Result<T, ProtocolError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ProtocolError::Handshake(format!("staging task failed: {e}")))
}
