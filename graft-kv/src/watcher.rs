//! The client side of a watch ([`crate::Client::watch`]): one connection of
//! its own to one member, and resumption on another member (or the same)
//! from the last revision delivered whenever the stream breaks: the member
//! dies, the connection drops, or the member cancels the watch (too slow a
//! consumer, a snapshot installed). Revisions are delivered whole and in
//! order, so resuming from the next revision neither skips nor repeats one.
//!
//! The members to try come from [`Members`] (the client's endpoint list),
//! read afresh at every resumption, and each member a watch connects to is
//! asked for the membership (then every [`LEARN_EVERY`] while it streams,
//! apart from the stream so that a slow consumer does not hold it back),
//! so that a watch outlives the members it started with.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use tokio::net::TcpStream;
use tokio::sync::mpsc;

use crate::protocol::{
    self, ClientRequest, ClientResponse, ConnKind, Hello, HelloReply, Request, Response, WatchEvent,
    WatchFilter, WatchResponse,
};

/// What to watch.
#[derive(Clone, Debug)]
pub struct WatchOptions {
    /// The key or prefix.
    pub filter: WatchFilter,
    /// The first revision to report (0: changes after the watch starts).
    pub start_revision: u64,
    /// Include each key's previous record.
    pub prev_kv: bool,
    /// Ask for a progress note after this many ms without events (0: none).
    /// Notes may come more often: the client asks for them at least every
    /// second, as a heartbeat, and resumes elsewhere after three missed.
    pub progress_ms: u32,
}

/// What a watch yields.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WatchItem {
    /// The changes of one or more whole revisions, in order.
    Events(Vec<WatchEvent>),
    /// Every change up to this revision has been delivered.
    Progress(u64),
}

/// Why a watch ended.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum WatchError {
    /// The revision to resume from was compacted away: changes were lost
    /// to this watcher, which must start again from a fresh read.
    #[error("revision {requested} has been compacted; the oldest revision available is {oldest}")]
    Compacted {
        /// The revision the watch needed next.
        requested: u64,
        /// The oldest revision still available.
        oldest: u64,
    },
    /// The request was refused (a bad key, too many watches).
    #[error("watch refused: {0}")]
    Refused(String),
}

/// A running watch. Dropping it ends the watch.
pub struct Watcher {
    rx: mpsc::Receiver<Result<WatchItem, WatchError>>,
    task: tokio::task::JoinHandle<()>,
    /// Asks the member streamed from for the membership every
    /// [`LEARN_EVERY`], apart from the stream: a consumer that reads
    /// slowly holds the stream back, not the learning.
    learner: tokio::task::JoinHandle<()>,
}

impl Watcher {
    /// The next changes or progress note; an error ends the watch. `None`
    /// only after an error was returned.
    pub async fn next(&mut self) -> Option<Result<WatchItem, WatchError>> {
        self.rx.recv().await
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        self.task.abort();
        self.learner.abort();
    }
}

/// The longest a watch stream goes without a word from its member: the
/// client asks for progress notes at least this often (in ms) and resumes
/// elsewhere after three missed.
const HEARTBEAT_MS: u32 = 1000;

/// How often a stream asks its member for the membership: members may come
/// and go while it streams, and when its member goes it must know where
/// the others are.
pub const LEARN_EVERY: Duration = Duration::from_secs(1);

/// Where a watch finds members to stream from.
pub trait Members: Send + Sync + 'static {
    /// The addresses to try, in order.
    fn current(&self) -> Vec<String>;
    /// Learns the membership from the member at `addr`, in the background
    /// (an implementation may skip asking if it asked recently).
    fn learn_from(&self, addr: &str);
}

/// A fixed list of addresses that learns nothing.
impl Members for Vec<String> {
    fn current(&self) -> Vec<String> {
        self.clone()
    }
    fn learn_from(&self, _addr: &str) {}
}

/// Starts a watch over the members `members` names (tried in turn).
pub fn start(members: Arc<dyn Members>, opts: WatchOptions) -> Watcher {
    let (tx, rx) = mpsc::channel(64);
    let streaming_from: Streaming = Arc::default();
    let learner = {
        let (members, from) = (members.clone(), streaming_from.clone());
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(LEARN_EVERY).await;
                let addr = from.lock().ok().and_then(|a| a.clone());
                if let Some(a) = addr {
                    members.learn_from(&a);
                }
            }
        })
    };
    let task = tokio::spawn(run(members, opts, tx, streaming_from));
    Watcher { rx, task, learner }
}

/// The address a watch streams from now, if any.
type Streaming = Arc<std::sync::Mutex<Option<String>>>;

/// How one connection's stream ended.
enum End {
    /// Resume (elsewhere, or here after a pause).
    Resume(String),
    /// Stop with this error.
    Fatal(WatchError),
    /// The watcher was dropped.
    Gone,
}

async fn run(
    members: Arc<dyn Members>,
    opts: WatchOptions,
    tx: mpsc::Sender<Result<WatchItem, WatchError>>,
    streaming_from: Streaming,
) {
    // The next revision to deliver; 0 until the first member says where
    // "now" is.
    let mut next = opts.start_revision;
    let mut turn = 0usize;
    let mut pause = Duration::from_millis(10);
    loop {
        let endpoints = members.current();
        let Some(addr) = endpoints.get(turn % endpoints.len().max(1)).cloned() else {
            let _ = tx.send(Err(WatchError::Refused("no endpoints".into()))).await;
            return;
        };
        let before = next;
        match stream_from(&addr, &opts, &mut next, &tx, members.as_ref(), &streaming_from).await {
            End::Gone => return,
            End::Fatal(e) => {
                let _ = tx.send(Err(e)).await;
                return;
            }
            End::Resume(why) => {
                tracing::debug!("watch on {addr} ended ({why}); resuming from revision {next}");
            }
        }
        // Progress resets the pause; a member that fails at once is left
        // for the next one, with a growing pause once all were tried.
        if next != before {
            pause = Duration::from_millis(10);
        } else {
            turn += 1;
            if turn % endpoints.len().max(1) == 0 {
                pause = (pause * 2).min(Duration::from_millis(500));
            }
        }
        tokio::time::sleep(pause).await;
    }
}

async fn stream_from(
    addr: &str,
    opts: &WatchOptions,
    next: &mut u64,
    tx: &mpsc::Sender<Result<WatchItem, WatchError>>,
    members: &dyn Members,
    streaming_from: &Streaming,
) -> End {
    let mut conn = match connect(addr).await {
        Ok(c) => c,
        Err(e) => return End::Resume(e),
    };
    members.learn_from(addr);
    if let Ok(mut a) = streaming_from.lock() {
        *a = Some(addr.to_string());
    }
    // Progress notes double as a heartbeat: a stream silent for much
    // longer than they come (a member paused, a connection gone without a
    // word) is resumed elsewhere.
    let heartbeat_ms = if opts.progress_ms == 0 { HEARTBEAT_MS } else { opts.progress_ms.min(HEARTBEAT_MS) };
    let silence = Duration::from_millis(u64::from(heartbeat_ms) * 3) + Duration::from_secs(2);
    let req = ClientRequest {
        id: 1,
        request: Request::Watch {
            filter: opts.filter.clone(),
            start_revision: *next,
            prev_kv: opts.prev_kv,
            progress_ms: heartbeat_ms,
        },
    };
    if let Err(e) = protocol::send(&mut conn, &req).await {
        return End::Resume(e.to_string());
    }
    // Pieces of a revision too large for one answer.
    let mut pending: Vec<WatchEvent> = Vec::new();
    loop {
        let Ok(frame) = tokio::time::timeout(silence, conn.next()).await else {
            return End::Resume(format!("nothing heard for {silence:?}"));
        };
        let frame = match frame {
            None => return End::Resume("connection closed".into()),
            Some(Err(e)) => return End::Resume(e.to_string()),
            Some(Ok(f)) => f,
        };
        let resp: ClientResponse = match protocol::decode(&frame) {
            Ok(r) => r,
            Err(e) => return End::Resume(e.to_string()),
        };
        let answer = match resp.result {
            Ok(Response::Watch(a)) => a,
            Ok(other) => return End::Resume(format!("unexpected answer {other:?}")),
            Err(e @ protocol::ApiError::Invalid(_)) | Err(e @ protocol::ApiError::KeyTooLarge { .. }) => {
                return End::Fatal(WatchError::Refused(e.to_string()))
            }
            Err(e) => return End::Resume(e.to_string()),
        };
        let item = match answer {
            WatchResponse::Created { revision } => {
                if *next == 0 {
                    *next = revision + 1;
                }
                continue;
            }
            WatchResponse::Events { events, fragment } => {
                pending.extend(events);
                if fragment {
                    continue;
                }
                // Whole revisions only, each once.
                let events: Vec<WatchEvent> =
                    std::mem::take(&mut pending).into_iter().filter(|e| e.revision >= *next).collect();
                let Some(last) = events.last().map(|e| e.revision) else { continue };
                *next = last + 1;
                WatchItem::Events(events)
            }
            WatchResponse::Progress { revision } => {
                if revision + 1 < *next {
                    // A member behind the ones heard before: old news.
                    continue;
                }
                *next = revision + 1;
                if opts.progress_ms == 0 {
                    // Asked for as a heartbeat only.
                    continue;
                }
                WatchItem::Progress(revision)
            }
            WatchResponse::Canceled { compacted: Some(oldest), .. } => {
                return End::Fatal(WatchError::Compacted { requested: *next, oldest })
            }
            WatchResponse::Canceled { reason, compacted: None } => return End::Resume(reason),
        };
        if tx.send(Ok(item)).await.is_err() {
            return End::Gone;
        }
    }
}

async fn connect(addr: &str) -> Result<protocol::FramedConn<TcpStream>, String> {
    let stream = tokio::time::timeout(Duration::from_secs(2), TcpStream::connect(addr))
        .await
        .map_err(|_| "connect timed out".to_string())?
        .map_err(|e| e.to_string())?;
    stream.set_nodelay(true).map_err(|e| e.to_string())?;
    let mut framed = protocol::framed(stream);
    protocol::send(&mut framed, &Hello::new(ConnKind::Client)).await.map_err(|e| e.to_string())?;
    match protocol::recv::<_, HelloReply>(&mut framed).await.map_err(|e| e.to_string())? {
        Some(HelloReply::Welcome { .. }) => Ok(framed),
        Some(HelloReply::Refused { reason }) => Err(format!("refused: {reason}")),
        None => Err("closed during hello".into()),
    }
}
