//! The task serving one watch on a client connection: register with the
//! hub, replay history up to the revision the hub had published, then
//! forward live changes, with progress notes when quiet, until the client
//! cancels, the connection goes, or the hub cancels the watcher.

use std::sync::Arc;
use std::time::Duration;

use redb::Database;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use super::replay::{self, ReplayError};
use super::WatchHub;
use crate::protocol::{ClientResponse, Response, WatchEvent, WatchFilter, WatchResponse};

pub use crate::mailbox::ConnSink as Sink;

/// The most answers of one watch queued for the socket and not yet
/// written: a client that stops reading stops its watch from taking more
/// changes, and the hub then cancels it as too slow.
const FRAMES_IN_FLIGHT: usize = 8;

/// Revisions' changes read from history per blocking call.
const REPLAY_CHUNK: usize = 4096;

/// About the most bytes of changes in one answer; a revision larger than
/// this is sent in fragments.
const FRAME_BYTES: usize = 4 << 20;

/// What the client asked for.
#[derive(Clone, Debug)]
pub struct WatchRequest {
    /// Which keys.
    pub filter: WatchFilter,
    /// The first revision to report (0: after the current one).
    pub start_revision: u64,
    /// Include previous records.
    pub prev_kv: bool,
    /// Progress notes after this long without events (0: none).
    pub progress_ms: u32,
}

struct Out {
    id: u64,
    sink: Sink,
    frames: Arc<Semaphore>,
}

impl Out {
    /// Sends one answer once the socket has room; false if the connection
    /// is gone.
    async fn send(&self, answer: WatchResponse) -> bool {
        let Ok(permit) = self.frames.clone().acquire_owned().await else { return false };
        let resp = ClientResponse { id: self.id, result: Ok(Response::Watch(answer)) };
        self.sink.send((resp, Some(permit))).is_ok()
    }

    /// Sends changes in answers of at most about [`FRAME_BYTES`], cutting
    /// only between revisions unless one revision is larger.
    async fn events(&self, events: Vec<WatchEvent>) -> bool {
        let mut frame: Vec<WatchEvent> = Vec::new();
        let mut bytes = 0;
        for e in events {
            let size = e.key.len()
                + e.kv.as_ref().map_or(0, |kv| kv.value.len())
                + e.prev.as_ref().map_or(0, |kv| kv.value.len())
                + 64;
            if bytes + size > FRAME_BYTES && !frame.is_empty() {
                let fragment = frame.last().is_some_and(|l| l.revision == e.revision);
                if !self.send(WatchResponse::Events { events: std::mem::take(&mut frame), fragment }).await {
                    return false;
                }
                bytes = 0;
            }
            bytes += size;
            frame.push(e);
        }
        frame.is_empty() || self.send(WatchResponse::Events { events: frame, fragment: false }).await
    }

    async fn cancel(&self, reason: String, compacted: Option<u64>) {
        self.send(WatchResponse::Canceled { reason, compacted }).await;
    }
}

/// Serves the watch of request `id` until it ends.
pub async fn serve(
    db: Arc<Database>,
    hub: Arc<WatchHub>,
    id: u64,
    req: WatchRequest,
    sink: Sink,
    stop: CancellationToken,
) {
    let out = Out { id, sink, frames: Arc::new(Semaphore::new(FRAMES_IN_FLIGHT)) };
    let mut sub = hub.subscribe(req.filter.clone());
    let published = sub.live_from;
    if !out.send(WatchResponse::Created { revision: published }).await {
        return;
    }
    let start = if req.start_revision == 0 { published + 1 } else { req.start_revision };
    // History first, up to what was published before we registered.
    let mut next = start;
    while next <= published {
        let (db, filter) = (db.clone(), req.filter.clone());
        let prev = req.prev_kv;
        let read = tokio::task::spawn_blocking(move || {
            replay::read(&db, &filter, next, published, prev, REPLAY_CHUNK)
        });
        let chunk = match read.await {
            Ok(Ok(chunk)) => chunk,
            Ok(Err(e @ ReplayError::Compacted { oldest, .. })) => {
                return out.cancel(e.to_string(), Some(oldest)).await
            }
            Ok(Err(e)) => return out.cancel(format!("reading history: {e}"), None).await,
            Err(e) => return out.cancel(format!("reading history: {e}"), None).await,
        };
        if stop.is_cancelled() || !out.events(chunk.events).await {
            return;
        }
        next = chunk.next;
    }
    // Then live changes, all above `published`.
    let quiet = Duration::from_millis(u64::from(req.progress_ms));
    loop {
        let progress = async {
            if quiet.is_zero() {
                std::future::pending::<()>().await;
            }
            tokio::time::sleep(quiet).await;
        };
        tokio::select! {
            _ = stop.cancelled() => return out.cancel("canceled".into(), None).await,
            batch = sub.next() => match batch {
                Some(events) => {
                    let events: Vec<WatchEvent> = events.into_iter().filter(|e| e.revision >= start).collect();
                    if !out.events(events).await {
                        return;
                    }
                }
                None => {
                    let reason = sub.cancelled().unwrap_or_else(|| "the member is shutting down".into());
                    return out.cancel(reason, None).await;
                }
            },
            () = progress => {
                // Everything published up to `revision` is in the queue by
                // the time it is read: send that, then the note.
                let revision = sub.hub_revision();
                while let Some(events) = sub.try_next() {
                    let events: Vec<WatchEvent> = events.into_iter().filter(|e| e.revision >= start).collect();
                    if !out.events(events).await {
                        return;
                    }
                }
                if !out.send(WatchResponse::Progress { revision }).await {
                    return;
                }
            }
        }
    }
}
