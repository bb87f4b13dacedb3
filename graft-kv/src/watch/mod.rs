//! Watches: the hub that fans applied changes out to watchers, the replay
//! of history for a watch that starts in the past, and the task that serves
//! one watch on a client connection.
//!
//! A watcher is a consumer of the ordered stream of changes with a bounded
//! buffer and a known position (its revision); falling behind is a visible
//! state, never a silent skip:
//! - the node publishes each applied batch's changes to the [`WatchHub`]
//!   after the state machine committed them, then moves the hub's revision;
//! - a watch registers with the hub first, learning the revision `H` the
//!   hub had published; it replays history from its start revision up to
//!   `H` from a read transaction (which holds everything up to `H`), off
//!   the node's thread, then takes live changes, which are all above `H`:
//!   no gap, no repeat at the seam;
//! - each watcher's queue is bounded in bytes ([`MAX_QUEUED_BYTES`]); a
//!   watcher over it is cancelled with a reason, and its client resumes
//!   from the last revision it received (replaying from history, which does
//!   not hold the node up);
//! - a member that installs a snapshot jumps its state: every watcher is
//!   cancelled so that its client resumes (from history, which the snapshot
//!   carried).
//!
//! # Layout
//! - this file: [`WatchHub`] and [`Subscription`];
//! - [`replay`]: reading a range of revisions' changes from history;
//! - [`stream`]: the task serving one watch on a connection.

pub mod replay;
pub mod stream;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::mpsc;

use crate::protocol::{WatchEvent, WatchFilter};

/// The most bytes of changes one watcher may have queued and not yet taken
/// before it is cancelled as too slow.
pub const MAX_QUEUED_BYTES: usize = 16 << 20;

/// Fans applied changes out to the watches of one member.
pub struct WatchHub {
    inner: Mutex<Inner>,
    /// The revision up to which changes have been published. Invariant:
    /// moves only after every change at or below it was handed to every
    /// watcher registered at the time.
    revision: AtomicU64,
}

struct Inner {
    next_id: u64,
    watchers: HashMap<u64, Watcher>,
}

struct Watcher {
    filter: WatchFilter,
    tx: mpsc::UnboundedSender<Vec<WatchEvent>>,
    shared: Arc<Shared>,
}

/// What a watcher and the hub both see.
struct Shared {
    /// Bytes queued and not yet taken.
    queued: AtomicUsize,
    /// Why the hub cancelled the watcher, if it did.
    cancelled: Mutex<Option<String>>,
}

/// A watcher's end: its queue of changes, and why it was cancelled if it
/// was. Dropping it unregisters the watcher.
pub struct Subscription {
    id: u64,
    hub: Arc<WatchHub>,
    rx: mpsc::UnboundedReceiver<Vec<WatchEvent>>,
    shared: Arc<Shared>,
    /// Every change above this revision comes through the queue; those at
    /// or below it were published before the watcher registered.
    pub live_from: u64,
}

fn size_of(events: &[WatchEvent]) -> usize {
    let record = |kv: &Option<crate::protocol::KeyValue>| kv.as_ref().map_or(0, |kv| kv.value.len() + 32);
    events.iter().map(|e| e.key.len() + 16 + record(&e.kv) + record(&e.prev)).sum()
}

impl WatchHub {
    /// A hub whose member stands at `revision`.
    pub fn new(revision: u64) -> Arc<WatchHub> {
        Arc::new(WatchHub {
            inner: Mutex::new(Inner { next_id: 1, watchers: HashMap::new() }),
            revision: AtomicU64::new(revision),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The revision up to which changes have been published.
    pub fn revision(&self) -> u64 {
        self.revision.load(Ordering::Acquire)
    }

    /// How many watchers are registered.
    pub fn watchers(&self) -> usize {
        self.lock().watchers.len()
    }

    /// Registers a watcher of `filter`.
    pub fn subscribe(self: &Arc<Self>, filter: WatchFilter) -> Subscription {
        let (tx, rx) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared { queued: AtomicUsize::new(0), cancelled: Mutex::new(None) });
        let mut inner = self.lock();
        let id = inner.next_id;
        inner.next_id += 1;
        inner.watchers.insert(id, Watcher { filter, tx, shared: shared.clone() });
        // Read under the lock: a publish holds it from handing out changes
        // to moving the revision.
        let live_from = self.revision();
        drop(inner);
        Subscription { id, hub: self.clone(), rx, shared, live_from }
    }

    /// Hands the changes of an applied batch (in revision order) to every
    /// watcher they concern, then records that the member stands at
    /// `revision`. A watcher whose queue would pass [`MAX_QUEUED_BYTES`] is
    /// cancelled instead.
    pub fn publish(&self, revision: u64, events: &[WatchEvent]) {
        let mut inner = self.lock();
        if !events.is_empty() {
            let mut gone = Vec::new();
            for (id, w) in &inner.watchers {
                let mine: Vec<WatchEvent> =
                    events.iter().filter(|e| w.filter.matches(&e.key)).cloned().collect();
                if mine.is_empty() {
                    continue;
                }
                let size = size_of(&mine);
                let queued = w.shared.queued.fetch_add(size, Ordering::AcqRel) + size;
                if queued > MAX_QUEUED_BYTES && queued > size {
                    let reason = format!("the watcher fell more than {MAX_QUEUED_BYTES} bytes behind");
                    tracing::info!(
                        "cancelling the watch of {:?} at revision {revision}: {reason}",
                        w.filter.key
                    );
                    cancel(&w.shared, reason);
                    gone.push(*id);
                    continue;
                }
                if w.tx.send(mine).is_err() {
                    gone.push(*id);
                }
            }
            for id in gone {
                inner.watchers.remove(&id);
            }
        }
        self.revision.fetch_max(revision, Ordering::AcqRel);
    }

    /// The member's state jumped to `revision` (a snapshot was installed):
    /// every watcher is cancelled, to resume from history.
    pub fn reset(&self, revision: u64) {
        let mut inner = self.lock();
        for (_, w) in inner.watchers.drain() {
            cancel(&w.shared, format!("the member installed a snapshot at revision {revision}"));
        }
        self.revision.store(revision, Ordering::Release);
    }
}

fn cancel(shared: &Shared, reason: String) {
    let mut c = shared.cancelled.lock().unwrap_or_else(PoisonError::into_inner);
    c.get_or_insert(reason);
}

impl Subscription {
    /// The next batch of changes; `None` once the watcher was cancelled
    /// (see [`Subscription::cancelled`]) and its queue is empty.
    pub async fn next(&mut self) -> Option<Vec<WatchEvent>> {
        let batch = self.rx.recv().await?;
        self.shared.queued.fetch_sub(size_of(&batch), Ordering::AcqRel);
        Some(batch)
    }

    /// A batch already queued, without waiting.
    pub fn try_next(&mut self) -> Option<Vec<WatchEvent>> {
        let batch = self.rx.try_recv().ok()?;
        self.shared.queued.fetch_sub(size_of(&batch), Ordering::AcqRel);
        Some(batch)
    }

    /// Why the hub cancelled this watcher, if it did.
    pub fn cancelled(&self) -> Option<String> {
        self.shared.cancelled.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// The hub's current revision.
    pub fn hub_revision(&self) -> u64 {
        self.hub.revision()
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.hub.lock().watchers.remove(&self.id);
    }
}

#[cfg(test)]
mod tests;
