//! Coordination load for `graft-kv bench`: watchers on the written prefix
//! (do they all see every change, and how soon?) and leases kept alive
//! (what do they cost the writes?).

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use hdrhistogram::Histogram;
use serde::Serialize;

use crate::client::{Client, ClientOptions};
use crate::protocol::WatchFilter;
use crate::watcher::{WatchItem, WatchOptions};

/// What the watchers saw.
#[derive(Debug, Serialize)]
pub struct WatchReport {
    /// Watchers.
    pub watchers: usize,
    /// Changes each should have seen (from the first watcher's start to the
    /// end marker).
    pub expected: u64,
    /// The fewest and the most changes one watcher saw.
    pub min_seen: u64,
    /// See `min_seen`.
    pub max_seen: u64,
    /// From the start of the write to its delivery to a watcher, in µs
    /// (over every delivery): an upper bound on commit-to-delivery.
    pub delivery_us: [u64; 3],
}

/// One watcher's task: how many changes it saw, and their delivery times.
type WatcherTask = tokio::task::JoinHandle<anyhow::Result<(u64, Histogram<u64>)>>;

/// Running watchers.
pub struct Watchers {
    tasks: Vec<WatcherTask>,
    end: Arc<tokio::sync::watch::Sender<u64>>,
}

/// Writes a value that carries the time its write started, for
/// [`Watchers`] to measure delivery.
pub fn stamped(origin: Instant, size: usize) -> Bytes {
    let mut v = (origin.elapsed().as_micros() as u64).to_be_bytes().to_vec();
    v.resize(size.max(8), b'x');
    Bytes::from(v)
}

/// Starts `n` watchers (each with its own connection) on `prefix`, from
/// revision `from`.
pub async fn start_watchers(
    endpoints: &[String],
    n: usize,
    prefix: &str,
    from: u64,
    origin: Instant,
) -> anyhow::Result<Watchers> {
    let (end_tx, end_rx) = tokio::sync::watch::channel(0u64);
    let mut tasks = Vec::new();
    for i in 0..n {
        // Spread the watchers over the members.
        let mut eps = endpoints.to_vec();
        let turn = i % eps.len().max(1);
        eps.rotate_left(turn);
        let client = Client::new(ClientOptions { endpoints: eps, timeout: Duration::from_secs(10) });
        let mut w = client.watch(WatchOptions {
            filter: WatchFilter { key: Bytes::from(prefix.to_owned()), prefix: true },
            start_revision: from,
            prev_kv: false,
            progress_ms: 0,
        });
        let mut end = end_rx.clone();
        tasks.push(tokio::spawn(async move {
            let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).context("histogram")?;
            let mut seen = 0u64;
            let mut last = 0u64;
            loop {
                let stop = *end.borrow();
                if stop != 0 && last >= stop {
                    return Ok((seen, hist));
                }
                tokio::select! {
                    item = w.next() => match item {
                        Some(Ok(WatchItem::Events(events))) => {
                            let now = origin.elapsed().as_micros() as u64;
                            for e in events {
                                last = e.revision;
                                seen += 1;
                                if let Some(kv) = e.kv.filter(|kv| kv.value.len() >= 8) {
                                    let sent = u64::from_be_bytes(kv.value[..8].try_into().unwrap_or([0; 8]));
                                    let _ = hist.record(now.saturating_sub(sent).max(1));
                                }
                            }
                        }
                        Some(Ok(WatchItem::Progress(_))) => {}
                        Some(Err(e)) => anyhow::bail!("watcher {i}: {e}"),
                        None => anyhow::bail!("watcher {i} ended"),
                    },
                    _ = end.changed() => {}
                }
            }
        }));
    }
    Ok(Watchers { tasks, end: Arc::new(end_tx) })
}

impl Watchers {
    /// Waits (up to `within`) until every watcher saw revision `end`; how
    /// many changes `expected` there were in between.
    pub async fn finish(self, end: u64, expected: u64, within: Duration) -> anyhow::Result<WatchReport> {
        let _ = self.end.send(end);
        let n = self.tasks.len();
        let mut all = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).context("histogram")?;
        let (mut min_seen, mut max_seen) = (u64::MAX, 0);
        for t in self.tasks {
            let (seen, hist) = tokio::time::timeout(within, t)
                .await
                .context("a watcher did not reach the end in time")?
                .context("a watcher task failed")??;
            min_seen = min_seen.min(seen);
            max_seen = max_seen.max(seen);
            all.add(hist).context("merging histograms")?;
        }
        Ok(WatchReport {
            watchers: n,
            expected,
            min_seen: if n == 0 { 0 } else { min_seen },
            max_seen,
            delivery_us: [all.value_at_quantile(0.5), all.value_at_quantile(0.99), all.max()],
        })
    }
}

/// What keeping the leases alive took.
#[derive(Debug, Serialize)]
pub struct LeaseReport {
    /// Leases kept alive.
    pub leases: usize,
    /// Their TTL, in ms.
    pub ttl_ms: u64,
    /// Keepalive requests sent (each renews up to 1,000 leases).
    pub keepalives: u64,
    /// Leases found gone when renewed (should be 0).
    pub lost: u64,
}

/// Leases being kept alive.
pub struct LeaseLoad {
    task: tokio::task::JoinHandle<(u64, u64)>,
    stop: tokio_util::sync::CancellationToken,
    leases: usize,
    ttl: Duration,
}

/// Grants `n` leases of `ttl` and keeps them alive, renewing each every
/// third of its TTL in batches of 1,000.
pub async fn start_leases(endpoints: &[String], n: usize, ttl: Duration) -> anyhow::Result<LeaseLoad> {
    let client =
        Client::new(ClientOptions { endpoints: endpoints.to_vec(), timeout: Duration::from_secs(10) });
    let mut grants = Vec::new();
    for chunk in (0..n).collect::<Vec<_>>().chunks(n.div_ceil(64).max(1)) {
        let (client, count) = (client.clone(), chunk.len());
        grants.push(tokio::spawn(async move {
            let mut ids = Vec::with_capacity(count);
            for _ in 0..count {
                ids.push(client.lease_grant(ttl).await?);
            }
            Ok::<_, crate::client::ClientError>(ids)
        }));
    }
    let mut ids = Vec::with_capacity(n);
    for g in grants {
        ids.extend(g.await.context("granting leases")?.context("granting leases")?);
    }
    let stop = tokio_util::sync::CancellationToken::new();
    let token = stop.clone();
    let task = tokio::spawn(async move {
        let (mut sent, mut lost) = (0u64, 0u64);
        let batches: Vec<Vec<u64>> = ids.chunks(1000).map(|c| c.to_vec()).collect();
        let every = ttl / 3 / (batches.len().max(1) as u32);
        loop {
            for b in &batches {
                if token.is_cancelled() {
                    return (sent, lost);
                }
                if let Ok(answers) = client.lease_keep_alive(b.clone()).await {
                    sent += 1;
                    lost += answers.iter().filter(|(_, t)| t.is_none()).count() as u64;
                }
                tokio::select! {
                    _ = tokio::time::sleep(every) => {}
                    _ = token.cancelled() => return (sent, lost),
                }
            }
        }
    });
    Ok(LeaseLoad { task, stop, leases: n, ttl })
}

impl LeaseLoad {
    /// Stops renewing; what it took.
    pub async fn finish(self) -> LeaseReport {
        self.stop.cancel();
        let (keepalives, lost) = self.task.await.unwrap_or((0, 0));
        LeaseReport { leases: self.leases, ttl_ms: self.ttl.as_millis() as u64, keepalives, lost }
    }
}
