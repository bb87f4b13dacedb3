//! A fault-injecting TCP proxy for the Jepsen-style tests.
//!
//! Every member is reached through its own proxy port (the cluster file's
//! `addr`), while the member binds a private port (`listen`). The proxy reads
//! the graft hello on each connection, so it knows which link a peer
//! connection is (`from` -> `to`), and then applies the link's faults:
//! - **blocked**: existing connections on the link are cut and new ones
//!   refused (a partition; one-way if only one direction is blocked);
//! - **loss**: each Raft message (frame) is dropped with a probability;
//! - **delay**: each frame waits a random time before it is forwarded (order
//!   is kept, as TCP keeps it).
//!
//! Client connections pass through untouched: the tests fault the network
//! between members, not between the test's clients and the members.

#![allow(dead_code)]

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::BytesMut;
use futures::{SinkExt, StreamExt};
use graft_kv::protocol::{self, ConnKind, Hello};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// The faults currently in force.
#[derive(Clone, Debug, Default)]
pub struct Faults {
    /// Directed links that carry nothing: (from, to).
    pub blocked: BTreeSet<(u64, u64)>,
    /// Probability that a Raft message is lost, on every link.
    pub loss: f64,
    /// Extra delay per message, uniformly in this range of milliseconds.
    pub delay_ms: (u64, u64),
}

/// The proxies of a cluster, sharing one fault table.
pub struct Proxies {
    faults: watch::Sender<Faults>,
    stats: Arc<Mutex<HashMap<&'static str, u64>>>,
    /// Which member each route leads to now, by the id it was added with
    /// (a replacement at the same address takes its predecessor's route).
    routes: Mutex<HashMap<u64, Arc<AtomicU64>>>,
}

impl Proxies {
    /// Starts one proxy per member: `(member id, proxy listener, real address)`.
    pub fn start(routes: Vec<(u64, std::net::TcpListener, String)>) -> Proxies {
        let (faults, _) = watch::channel(Faults::default());
        let p = Proxies {
            faults,
            stats: Arc::new(Mutex::new(HashMap::new())),
            routes: Mutex::new(HashMap::new()),
        };
        for (to, listener, real) in routes {
            p.add_route(to, listener, real);
        }
        p
    }

    /// Starts a proxy for member `to`, listening on `listener` and
    /// forwarding to `real`.
    pub fn add_route(&self, to: u64, listener: std::net::TcpListener, real: String) {
        listener.set_nonblocking(true).expect("nonblocking listener");
        let listener = TcpListener::from_std(listener).expect("tokio listener");
        let rx = self.faults.subscribe();
        let stats = self.stats.clone();
        let owner = Arc::new(AtomicU64::new(to));
        self.routes.lock().expect("routes").insert(to, owner.clone());
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { return };
                let (rx, real, stats) = (rx.clone(), real.clone(), stats.clone());
                let to = owner.load(Ordering::Relaxed);
                tokio::spawn(async move {
                    let _ = proxy_conn(stream, to, real, rx, stats).await;
                });
            }
        });
    }

    /// Hands the route that leads to member `old` (and every route it took
    /// over before) to member `new`, which now listens there.
    pub fn hand_over(&self, old: u64, new: u64) {
        for owner in self.routes.lock().expect("routes").values() {
            if owner.load(Ordering::Relaxed) == old {
                owner.store(new, Ordering::Relaxed);
            }
        }
    }

    /// Replaces the faults in force.
    pub fn set(&self, f: Faults) {
        self.faults.send_replace(f);
    }

    /// Changes the faults in force.
    pub fn update(&self, f: impl FnOnce(&mut Faults)) {
        self.faults.send_modify(f);
    }

    /// Removes every fault.
    pub fn heal(&self) {
        self.set(Faults::default());
    }

    /// Counters: messages forwarded, dropped, connections cut.
    pub fn stats(&self) -> HashMap<&'static str, u64> {
        self.stats.lock().map(|s| s.clone()).unwrap_or_default()
    }
}

fn count(stats: &Mutex<HashMap<&'static str, u64>>, what: &'static str) {
    if let Ok(mut s) = stats.lock() {
        *s.entry(what).or_default() += 1;
    }
}

fn rand_u64() -> u64 {
    use std::cell::Cell;
    thread_local!(static X: Cell<u64> = const { Cell::new(0x2545_f491_4f6c_dd1d) });
    X.with(|x| {
        let mut v = x.get() ^ (std::process::id() as u64);
        v ^= v << 13;
        v ^= v >> 7;
        v ^= v << 17;
        x.set(v);
        v
    })
}

async fn proxy_conn(
    inbound: TcpStream,
    to: u64,
    real: String,
    mut faults: watch::Receiver<Faults>,
    stats: Arc<Mutex<HashMap<&'static str, u64>>>,
) -> std::io::Result<()> {
    inbound.set_nodelay(true)?;
    let mut client = protocol::framed(inbound);
    let Some(Ok(first)) = client.next().await else { return Ok(()) };
    let Ok(hello) = protocol::decode::<Hello>(&first) else { return Ok(()) };
    let from = match &hello.kind {
        ConnKind::Peer { from, .. } | ConnKind::Snapshot { from, .. } => Some(*from),
        ConnKind::Client => None,
    };
    let is_snapshot = matches!(hello.kind, ConnKind::Snapshot { .. });
    if let Some(from) = from {
        if faults.borrow().blocked.contains(&(from, to)) {
            count(&stats, "refused");
            return Ok(());
        }
    }
    let outbound = TcpStream::connect(&real).await?;
    outbound.set_nodelay(true)?;
    let mut server = protocol::framed(outbound);
    server.send(first.freeze()).await?;
    let Some(from) = from else {
        // A client: copy both ways untouched.
        let (mut c_sink, mut c_stream) = client.split();
        let (mut s_sink, mut s_stream) = server.split();
        let up = async {
            while let Some(Ok(f)) = c_stream.next().await {
                s_sink.send(f.freeze()).await?;
            }
            Ok::<_, std::io::Error>(())
        };
        let down = async {
            while let Some(Ok(f)) = s_stream.next().await {
                c_sink.send(f.freeze()).await?;
            }
            Ok::<_, std::io::Error>(())
        };
        // Either side closing closes both, as a broken connection would.
        tokio::select! {
            _ = up => {}
            _ = down => {}
        }
        return Ok(());
    };
    // A peer or snapshot link: the hello's answer goes back, then frames
    // flow one way, through the faults.
    let (mut c_sink, mut c_stream) = client.split();
    let (mut s_sink, mut s_stream) = server.split();
    let back = tokio::spawn(async move {
        while let Some(Ok(f)) = s_stream.next().await {
            if c_sink.send(f.freeze()).await.is_err() {
                break;
            }
        }
    });
    let (tx, mut rx) = tokio::sync::mpsc::channel::<(tokio::time::Instant, BytesMut)>(4096);
    let forward = tokio::spawn(async move {
        while let Some((at, f)) = rx.recv().await {
            tokio::time::sleep_until(at).await;
            if s_sink.send(f.freeze()).await.is_err() {
                break;
            }
        }
    });
    loop {
        let frame = tokio::select! {
            f = c_stream.next() => f,
            changed = faults.changed() => {
                if changed.is_err() {
                    break;
                }
                if faults.borrow().blocked.contains(&(from, to)) {
                    count(&stats, "cut");
                    break;
                }
                continue;
            }
        };
        let Some(Ok(frame)) = frame else { break };
        let f = faults.borrow().clone();
        if f.blocked.contains(&(from, to)) {
            count(&stats, "cut");
            break;
        }
        // Dropping part of a snapshot stream would only corrupt it: snapshot
        // links are cut or delayed, never thinned.
        if !is_snapshot && f.loss > 0.0 && (rand_u64() % 1_000_000) as f64 / 1e6 < f.loss {
            count(&stats, "dropped");
            continue;
        }
        let (lo, hi) = f.delay_ms;
        let delay = if hi > lo { lo + rand_u64() % (hi - lo) } else { lo };
        count(&stats, "forwarded");
        if tx.send((tokio::time::Instant::now() + Duration::from_millis(delay), frame)).await.is_err() {
            break;
        }
    }
    back.abort();
    forward.abort();
    Ok(())
}
