//! etcd's Watch service: one bidirectional stream carries any number of
//! watches (create, cancel, progress requests), each a graft watch on this
//! member ([`crate::Client::watch`]): history replayed from a start
//! revision, then live, no gap and no repeat, resumed by itself if the
//! stream to the member breaks.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use futures::{Stream, StreamExt};
use tokio::sync::mpsc;
use tonic::{Request, Response, Status, Streaming};

use super::convert;
use super::pb::etcdserverpb as pb;
use super::Frontend;
use crate::protocol::{prefix_end, WatchFilter};
use crate::watcher::{WatchError, WatchItem, WatchOptions};

/// The Watch service of one member.
pub struct WatchService(pub Frontend);

/// The most event bytes in one response: larger batches are split
/// (between events; with `fragment`, the pieces are marked as one).
const MAX_RESPONSE_BYTES: usize = 1 << 20;

/// etcd's reason for a watch whose start was compacted away.
const COMPACTED: &str = "etcdserver: mvcc: required revision has been compacted";

/// Which keys a create request follows, as a graft filter: a key, a
/// prefix, or every key. Other ranges are refused (for now).
fn filter(key: &[u8], range_end: &[u8]) -> Result<WatchFilter, String> {
    if range_end.is_empty() {
        return Ok(WatchFilter { key: Bytes::copy_from_slice(key), prefix: false });
    }
    if key == [0] && range_end == [0] {
        return Ok(WatchFilter { key: Bytes::new(), prefix: true });
    }
    if prefix_end(key).as_ref() == range_end {
        return Ok(WatchFilter { key: Bytes::copy_from_slice(key), prefix: true });
    }
    Err("graft watches a key, a prefix or every key; other ranges are not supported yet".into())
}

/// A watch of the stream.
struct Running {
    task: tokio::task::JoinHandle<()>,
    /// Every change up to this revision has been sent.
    seen: Arc<AtomicU64>,
}

type Out = mpsc::Sender<Result<pb::WatchResponse, Status>>;

#[tonic::async_trait]
impl pb::watch_server::Watch for WatchService {
    type WatchStream = Pin<Box<dyn Stream<Item = Result<pb::WatchResponse, Status>> + Send>>;

    async fn watch(
        &self,
        request: Request<Streaming<pb::WatchRequest>>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let mut inbound = request.into_inner();
        let (tx, rx) = mpsc::channel(256);
        let f = self.0.clone();
        tokio::spawn(async move {
            let mut watches: HashMap<i64, Running> = HashMap::new();
            let mut next_id: i64 = 0;
            while let Some(Ok(req)) = inbound.next().await {
                use pb::watch_request::RequestUnion as U;
                watches.retain(|_, w| !w.task.is_finished());
                match req.request_union {
                    Some(U::CreateRequest(c)) => {
                        let id = if c.watch_id != 0 { c.watch_id } else { next_id };
                        if watches.contains_key(&id) {
                            let _ = tx.send(Ok(refused(&f, id, "etcdserver: duplicate watch id"))).await;
                            continue;
                        }
                        while watches.contains_key(&next_id) || next_id == id {
                            next_id += 1;
                        }
                        match start(&f, id, c, tx.clone()) {
                            Ok(w) => {
                                watches.insert(id, w);
                            }
                            Err(reason) => {
                                let _ = tx.send(Ok(refused(&f, id, &reason))).await;
                            }
                        }
                    }
                    Some(U::CancelRequest(c)) => {
                        if let Some(w) = watches.remove(&c.watch_id) {
                            w.task.abort();
                            let resp = pb::WatchResponse {
                                header: f.header(0),
                                watch_id: c.watch_id,
                                canceled: true,
                                ..Default::default()
                            };
                            if tx.send(Ok(resp)).await.is_err() {
                                break;
                            }
                        }
                    }
                    Some(U::ProgressRequest(_)) => {
                        // Every watch of the stream has everything up to the
                        // lowest revision they have each reached. A watch that
                        // has reached none yet is not in sync: as etcd, no
                        // answer then (a header of 0 would claim the latest).
                        let seen = watches.values().map(|w| w.seen.load(Ordering::Relaxed)).min();
                        let revision = match seen {
                            Some(0) => continue,
                            Some(r) => r,
                            // No watch: the latest revision known.
                            None => 0,
                        };
                        let resp = pb::WatchResponse {
                            header: f.header(revision),
                            watch_id: -1,
                            ..Default::default()
                        };
                        if tx.send(Ok(resp)).await.is_err() {
                            break;
                        }
                    }
                    None => {}
                }
            }
            for (_, w) in watches {
                w.task.abort();
            }
        });
        Ok(Response::new(Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))))
    }
}

/// A create request refused: created and canceled at once, with why.
fn refused(f: &Frontend, id: i64, reason: &str) -> pb::WatchResponse {
    pb::WatchResponse {
        header: f.header(0),
        watch_id: id,
        created: true,
        canceled: true,
        cancel_reason: reason.to_string(),
        ..Default::default()
    }
}

/// Starts watch `id` of a stream.
fn start(f: &Frontend, id: i64, c: pb::WatchCreateRequest, tx: Out) -> Result<Running, String> {
    if c.key.is_empty() {
        return Err("etcdserver: key is not provided".into());
    }
    let filter = filter(&c.key, &c.range_end)?;
    let no_put = c.filters.contains(&(pb::watch_create_request::FilterType::Noput as i32));
    let no_delete = c.filters.contains(&(pb::watch_create_request::FilterType::Nodelete as i32));
    let opts = WatchOptions {
        filter,
        start_revision: convert::unrev(c.start_revision),
        prev_kv: c.prev_kv,
        // etcd's progress notifications come every 10 minutes by default.
        progress_ms: if c.progress_notify { 600_000 } else { 0 },
    };
    let seen = Arc::new(AtomicU64::new(0));
    let (f, s) = (f.clone(), seen.clone());
    let task = tokio::spawn(async move {
        let created =
            pb::WatchResponse { header: f.header(0), watch_id: id, created: true, ..Default::default() };
        if tx.send(Ok(created)).await.is_err() {
            return;
        }
        let mut w = f.local.watch(opts);
        while let Some(item) = w.next().await {
            match item {
                Ok(WatchItem::Events(events)) => {
                    let last = events.last().map_or(0, |e| e.revision);
                    let events: Vec<_> = events
                        .iter()
                        .filter(|e| !(e.kv.is_some() && no_put || e.kv.is_none() && no_delete))
                        .map(|e| super::kv::event(e, c.prev_kv))
                        .collect();
                    s.fetch_max(last, Ordering::Relaxed);
                    if !send_events(&f, &tx, id, events, last, c.fragment).await {
                        return;
                    }
                }
                Ok(WatchItem::Progress(r)) => {
                    s.fetch_max(r, Ordering::Relaxed);
                    let resp = pb::WatchResponse { header: f.header(r), watch_id: id, ..Default::default() };
                    if tx.send(Ok(resp)).await.is_err() {
                        return;
                    }
                }
                Err(WatchError::Compacted { oldest, .. }) => {
                    let resp = pb::WatchResponse {
                        header: f.header(0),
                        watch_id: id,
                        canceled: true,
                        compact_revision: convert::rev(oldest),
                        cancel_reason: COMPACTED.into(),
                        ..Default::default()
                    };
                    let _ = tx.send(Ok(resp)).await;
                    return;
                }
                Err(e) => {
                    let _ = tx.send(Ok(refused(&f, id, &format!("etcdserver: {e}")))).await;
                    return;
                }
            }
        }
    });
    Ok(Running { task, seen })
}

/// Sends a batch of events, split into responses of at most
/// [`MAX_RESPONSE_BYTES`]; false once the stream is gone.
async fn send_events(
    f: &Frontend,
    tx: &Out,
    id: i64,
    events: Vec<super::pb::mvccpb::Event>,
    revision: u64,
    fragment: bool,
) -> bool {
    if events.is_empty() {
        return true;
    }
    let mut pieces: Vec<Vec<super::pb::mvccpb::Event>> = vec![Vec::new()];
    let mut size = 0;
    for e in events {
        let n = e.kv.as_ref().map_or(0, |kv| kv.key.len() + kv.value.len())
            + e.prev_kv.as_ref().map_or(0, |kv| kv.key.len() + kv.value.len());
        if size + n > MAX_RESPONSE_BYTES && pieces.last().is_some_and(|p| !p.is_empty()) {
            pieces.push(Vec::new());
            size = 0;
        }
        size += n;
        if let Some(p) = pieces.last_mut() {
            p.push(e);
        }
    }
    let last = pieces.len() - 1;
    for (i, events) in pieces.into_iter().enumerate() {
        let resp = pb::WatchResponse {
            header: f.header(revision),
            watch_id: id,
            fragment: fragment && i < last,
            events,
            ..Default::default()
        };
        if tx.send(Ok(resp)).await.is_err() {
            return false;
        }
    }
    true
}
