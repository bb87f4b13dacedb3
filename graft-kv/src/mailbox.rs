//! The node task's mailbox: what the server, the transport and the snapshot
//! streams tell the node, and where its answers go. Its own module so that
//! everything that feeds the node depends on this small type, not on the
//! node.

use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit};

use graft_core::{Message, NodeId};

use crate::protocol::{ApiError, ClientResponse, Request, Response};
use crate::storage::StagedSnapshot;

/// A client connection's queue of answers for its socket, each with the
/// permit (if any) to give back once it is written: a watch uses them to
/// never queue more than a few answers ahead of the socket.
pub type ConnSink = mpsc::UnboundedSender<(ClientResponse, Option<OwnedSemaphorePermit>)>;

/// Where an answer goes.
pub enum Responder {
    /// A client connection, matched by request id.
    Conn {
        /// The request id.
        id: u64,
        /// The connection's response queue.
        tx: ConnSink,
        /// Holds one of the connection's in-flight slots until answered.
        permit: Option<OwnedSemaphorePermit>,
    },
    /// An in-process caller.
    Once(oneshot::Sender<Result<Response, ApiError>>),
}

impl Responder {
    /// Sends the answer (dropped silently if the asker is gone).
    pub fn send(self, result: Result<Response, ApiError>) {
        match self {
            Responder::Conn { id, tx, permit } => {
                let _ = tx.send((ClientResponse { id, result }, None));
                drop(permit);
            }
            Responder::Once(tx) => {
                let _ = tx.send(result);
            }
        }
    }
}

/// What the node task is told.
pub enum NodeInput {
    /// A Raft message from a peer.
    Raft(Message),
    /// A client request.
    Client(Request, Responder),
    /// The transport lost its connection to a peer.
    Unreachable(NodeId),
    /// A snapshot stream to a peer ended.
    SnapshotSent {
        /// The peer.
        to: NodeId,
        /// Whether the peer staged it whole.
        ok: bool,
    },
    /// The leader confirmed its leadership after finding these leases
    /// expired: propose revoking them.
    ExpireLeases(Vec<u64>),
    /// A snapshot arrived whole and is staged: step the message; the sender
    /// is told when the staged data was installed or declined.
    SnapshotReceived(Message, StagedSnapshot, oneshot::Sender<()>),
}
