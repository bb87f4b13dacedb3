//! The watch checker of the Jepsen-style tests: watchers on a prefix run
//! through the faults (resuming on other members by themselves), and each
//! one's events must equal exactly the committed writes to the prefix from
//! its start revision: no gap, no duplicate, no reordering, nothing that
//! did not commit. The committed writes come from a watch read once the
//! cluster has healed, which the transaction checker validates against
//! every acknowledged operation; here each event's previous record is
//! also checked against the writes before it.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use graft_kv::client::Client;
use graft_kv::protocol::{KeyValue, WatchEvent, WatchFilter};
use graft_kv::watcher::{WatchItem, WatchOptions};

/// What one watcher received.
#[derive(Debug, Default)]
pub struct WatchLog {
    /// The revision it asked to start from.
    pub start: u64,
    /// Every event, in the order received.
    pub events: Vec<WatchEvent>,
    /// The highest revision it knows it has seen everything up to.
    pub seen: u64,
    /// Why it ended, if it did.
    pub error: Option<String>,
}

/// A running watcher.
pub struct Running {
    /// What it received so far.
    pub log: Arc<Mutex<WatchLog>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn opts(prefix: &Bytes, start: u64) -> WatchOptions {
    WatchOptions {
        filter: WatchFilter { key: prefix.clone(), prefix: true },
        start_revision: start,
        prev_kv: true,
        progress_ms: 300,
    }
}

/// Starts a watcher on `prefix` from revision `start`.
pub fn spawn(client: &Client, prefix: Bytes, start: u64) -> Running {
    let log = Arc::new(Mutex::new(WatchLog { start, ..WatchLog::default() }));
    let mut w = client.watch(opts(&prefix, start));
    let l = log.clone();
    let task = tokio::spawn(async move {
        while let Some(item) = w.next().await {
            let mut log = l.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            match item {
                Ok(WatchItem::Events(evs)) => {
                    if let Some(last) = evs.last() {
                        log.seen = log.seen.max(last.revision);
                    }
                    log.events.extend(evs);
                }
                Ok(WatchItem::Progress(r)) => log.seen = log.seen.max(r),
                Err(e) => {
                    log.error = Some(e.to_string());
                    return;
                }
            }
        }
    });
    Running { log, task }
}

/// Waits until every watcher has seen up to `revision` (or ended), at most
/// `within`.
pub async fn wait_caught_up(watchers: &[Running], revision: u64, within: Duration) {
    let until = Instant::now() + within;
    while Instant::now() < until {
        let behind = watchers.iter().any(|w| {
            let log = w.log.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            log.error.is_none() && log.seen < revision
        });
        if !behind {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Every committed write to `prefix` from `start` up to `revision`, read by
/// a fresh watch of a healed cluster.
pub async fn committed(client: &Client, prefix: &Bytes, start: u64, revision: u64) -> Vec<WatchEvent> {
    let mut w = client.watch(opts(prefix, start));
    let mut out: Vec<WatchEvent> = Vec::new();
    let until = Instant::now() + Duration::from_secs(60);
    loop {
        let left = until.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, w.next()).await {
            Ok(Some(Ok(WatchItem::Events(evs)))) => {
                let done = evs.last().is_some_and(|e| e.revision >= revision);
                out.extend(evs);
                if done {
                    break;
                }
            }
            Ok(Some(Ok(WatchItem::Progress(r)))) if r >= revision => break,
            Ok(Some(Ok(WatchItem::Progress(_)))) => {}
            other => panic!("reading the committed writes from revision {start}: {other:?}"),
        }
    }
    out.retain(|e| e.revision <= revision);
    out
}

/// Checks each event's previous record against the writes before it
/// (from an empty prefix at `start`), and that revisions never go down.
pub fn check_committed(events: &[WatchEvent]) -> Result<(), String> {
    let mut state: BTreeMap<Bytes, KeyValue> = BTreeMap::new();
    let mut last = 0;
    for e in events {
        if e.revision < last {
            return Err(format!("revision {} after {last}", e.revision));
        }
        last = e.revision;
        if e.prev.as_ref() != state.get(&e.key) {
            return Err(format!(
                "revision {}: {:?} reports the previous record {:?}, the writes before it leave {:?}",
                e.revision,
                e.key,
                e.prev,
                state.get(&e.key)
            ));
        }
        match &e.kv {
            Some(kv) => state.insert(e.key.clone(), kv.clone()),
            None => state.remove(&e.key),
        };
    }
    Ok(())
}

/// Compares each watcher's events with the committed ones from its start
/// up to `end`; returns a line per watcher.
pub fn check(watchers: &[Running], committed: &[WatchEvent], end: u64) -> Result<Vec<String>, String> {
    let mut lines = Vec::new();
    for (i, w) in watchers.iter().enumerate() {
        let log = w.log.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        lines.push(check_log(&log, committed, end).map_err(|e| format!("watcher {i}: {e}"))?);
    }
    Ok(lines)
}

/// One watcher's events must be exactly the committed ones from its start
/// revision: no gap, no duplicate, no reordering, nothing uncommitted; and
/// it must have caught up with `end`, the revision of the healed cluster
/// (a watcher stuck on members that are gone fails here).
pub fn check_log(log: &WatchLog, committed: &[WatchEvent], end: u64) -> Result<String, String> {
    if let Some(e) = &log.error {
        return Err(format!("(from revision {}) ended: {e}", log.start));
    }
    if log.seen < end {
        return Err(format!(
            "(from revision {}) stuck: complete up to revision {} of {end} after the cluster healed \
             ({} events received)",
            log.start,
            log.seen,
            log.events.len()
        ));
    }
    let want: Vec<&WatchEvent> = committed.iter().filter(|e| e.revision >= log.start).collect();
    let got: Vec<&WatchEvent> = log.events.iter().collect();
    if let Some(at) = (0..want.len().max(got.len())).find(|&j| want.get(j) != got.get(j)) {
        return Err(format!(
            "(from revision {}): event {at} is {:?}, the committed writes have {:?} \
             ({} events received, {} committed; it knew itself complete up to revision {})",
            log.start,
            got.get(at),
            want.get(at),
            got.len(),
            want.len(),
            log.seen
        ));
    }
    Ok(format!("from revision {}, {} events, exact", log.start, got.len()))
}
