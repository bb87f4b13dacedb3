//! `graft-kv bench`: load a cluster and measure it.
//!
//! Without `--endpoints` it starts its own local cluster (3 members by
//! default, real processes of this binary, data in a temporary directory,
//! every write fsynced), runs the workload, prints throughput, latency
//! percentiles and fsyncs per write, and stops the cluster. `--failover`
//! measures instead how long it takes, after `kill -9` of the leader, until
//! a write succeeds again.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use bytes::Bytes;
use hdrhistogram::Histogram;
use serde::Serialize;

use crate::client::{Client, ClientOptions};
use crate::protocol::Consistency;

/// What to run.
#[derive(Clone, Debug)]
pub struct BenchOptions {
    /// Target this cluster instead of starting one.
    pub endpoints: Vec<String>,
    /// Members of the local cluster.
    pub members: u64,
    /// Concurrent clients, each issuing one request at a time.
    pub clients: usize,
    /// Connections the clients share (each client uses one).
    pub conns: usize,
    /// How long to measure.
    pub duration: Duration,
    /// Share of reads (0.0: puts only; 1.0: linearizable reads only).
    pub read_ratio: f64,
    /// Write with transactions (compare one key, put two) instead of puts.
    pub txn: bool,
    /// Watchers on the written keys' prefix during the run.
    pub watchers: usize,
    /// Leases kept alive (TTL 10 s, renewed every third) during the run.
    pub leases: usize,
    /// Serve reads from the member's own state instead of linearizably.
    pub stale_reads: bool,
    /// Distinct keys.
    pub keys: u64,
    /// Value size in bytes.
    pub value_size: usize,
    /// Measure leader failover instead: this many trials.
    pub failover_trials: Option<usize>,
    /// Print JSON instead of text.
    pub json: bool,
    /// Cluster file options for the local cluster (TOML appended to it).
    pub extra_config: String,
    /// The local members' log filter; when set, their logs and data are
    /// kept after the run for inspection.
    pub member_log: Option<String>,
}

/// Results of a load run.
#[derive(Debug, Serialize)]
pub struct LoadReport {
    /// Operations completed.
    pub ops: u64,
    /// Of which writes.
    pub writes: u64,
    /// Operations that failed.
    pub errors: u64,
    /// Measured seconds.
    pub seconds: f64,
    /// Operations per second.
    pub ops_per_sec: f64,
    /// Latency percentiles, in microseconds.
    pub latency_us: Percentiles,
    /// fsyncs on all members together, per write (0 if no writes).
    pub fsyncs_per_write: f64,
    /// fsyncs on the leader, per write.
    pub leader_fsyncs_per_write: f64,
    /// The options, for the record.
    pub clients: usize,
    /// Connections used.
    pub conns: usize,
    /// Share of reads.
    pub read_ratio: f64,
    /// Value size.
    pub value_size: usize,
    /// What the watchers saw (with `--watchers`).
    pub watch: Option<crate::bench_coord::WatchReport>,
    /// What keeping the leases alive took (with `--leases`).
    pub leases: Option<crate::bench_coord::LeaseReport>,
}

/// Latency percentiles in microseconds.
#[derive(Debug, Serialize)]
pub struct Percentiles {
    /// Median.
    pub p50: u64,
    /// 90th percentile.
    pub p90: u64,
    /// 99th percentile.
    pub p99: u64,
    /// 99.9th percentile.
    pub p999: u64,
    /// Maximum.
    pub max: u64,
}

/// Results of a failover run.
#[derive(Debug, Serialize)]
pub struct FailoverReport {
    /// Milliseconds from `kill -9` of the leader to the first successful write, per trial.
    pub trials_ms: Vec<f64>,
    /// Their median.
    pub median_ms: f64,
}

/// A local cluster of child processes, stopped on drop.
struct LocalCluster {
    dir: tempfile::TempDir,
    /// The members' log filter (`warn` unless asked otherwise).
    log: String,
    /// Keep the directory (logs and data) when the cluster stops.
    keep: bool,
    config: PathBuf,
    addrs: Vec<String>,
    children: Vec<Option<Child>>,
}

impl LocalCluster {
    fn start(members: u64, extra: &str, member_log: Option<&str>) -> anyhow::Result<LocalCluster> {
        let dir = tempfile::Builder::new().prefix("graft-bench-").tempdir().context("temporary directory")?;
        let listeners: Vec<std::net::TcpListener> = (0..members)
            .map(|_| std::net::TcpListener::bind("127.0.0.1:0"))
            .collect::<Result<_, _>>()
            .context("finding free ports")?;
        let addrs: Vec<String> =
            listeners.iter().map(|l| l.local_addr().map(|a| a.to_string())).collect::<Result<_, _>>()?;
        drop(listeners);
        let mut toml = format!("cluster_id = \"bench\"\n{extra}\n");
        for (i, a) in addrs.iter().enumerate() {
            toml.push_str(&format!("\n[[members]]\nid = {}\naddr = \"{a}\"\n", i + 1));
        }
        let config = dir.path().join("cluster.toml");
        // A bad --extra-config fails here, not as members that never start.
        crate::config::ClusterConfig::parse(&toml, &config)
            .and_then(|c| c.validate())
            .context("the local cluster's configuration (--members, --extra-config)")?;
        std::fs::write(&config, toml).context("writing the cluster file")?;
        let mut c = LocalCluster {
            dir,
            log: member_log.unwrap_or("warn").to_owned(),
            keep: member_log.is_some(),
            config,
            addrs,
            children: Vec::new(),
        };
        for id in 1..=members {
            let child = c.spawn(id)?;
            c.children.push(Some(child));
        }
        Ok(c)
    }

    fn spawn(&self, id: u64) -> anyhow::Result<Child> {
        let exe = std::env::current_exe().context("finding this program")?;
        // Appended to: a restarted member's earlier log is kept.
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join(format!("member-{id}.log")))?;
        Command::new(exe)
            .args(["serve", "--id", &id.to_string(), "--log", &self.log, "--config"])
            .arg(&self.config)
            .arg("--data-dir")
            .arg(self.dir.path().join(format!("member-{id}")))
            .stdout(log.try_clone()?)
            .stderr(log)
            .stdin(Stdio::null())
            .spawn()
            .with_context(|| format!("starting member {id}"))
    }

    fn kill(&mut self, id: u64) {
        if let Some(Some(mut c)) = self.children.get_mut(id as usize - 1).map(Option::take) {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn restart(&mut self, id: u64) -> anyhow::Result<()> {
        let child = self.spawn(id)?;
        self.children[id as usize - 1] = Some(child);
        Ok(())
    }

    fn data_dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        for c in self.children.iter_mut().flatten() {
            // SAFETY: kill(2) has no memory-safety preconditions.
            unsafe {
                libc::kill(c.id() as libc::pid_t, libc::SIGTERM);
            }
        }
        // A member that does not stop within 10 s is killed.
        let deadline = Instant::now() + Duration::from_secs(10);
        for c in self.children.iter_mut().flatten() {
            while matches!(c.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
        if self.keep {
            self.dir.disable_cleanup(true);
            eprintln!("member logs and data kept in {}", self.dir.path().display());
        }
    }
}

/// Finds the leader's address among `endpoints`, waiting up to `within`.
async fn wait_leader(endpoints: &[String], within: Duration) -> anyhow::Result<String> {
    let deadline = Instant::now() + within;
    let probe =
        Client::new(ClientOptions { endpoints: endpoints.to_vec(), timeout: Duration::from_millis(500) });
    loop {
        for a in endpoints {
            if let Ok(s) = probe.status_of(a).await {
                if s.role == "Leader" {
                    return Ok(a.clone());
                }
            }
        }
        if Instant::now() > deadline {
            bail!("no leader among {} within {within:?}", endpoints.join(", "));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn fsyncs(endpoints: &[String], leader: &str) -> (u64, u64) {
    let c = Client::new(ClientOptions { endpoints: endpoints.to_vec(), timeout: Duration::from_secs(2) });
    let (mut all, mut lead) = (0, 0);
    for a in endpoints {
        if let Ok(m) = c.metrics_of(a).await {
            all += m.fsyncs;
            if a == leader {
                lead = m.fsyncs;
            }
        }
    }
    (all, lead)
}

/// Runs the benchmark and prints its report.
pub async fn run(opts: BenchOptions) -> anyhow::Result<()> {
    let mut local = None;
    let endpoints = if opts.endpoints.is_empty() {
        let c = LocalCluster::start(opts.members, &opts.extra_config, opts.member_log.as_deref())?;
        let e = c.addrs.clone();
        if !opts.json {
            eprintln!("started {} members, data in {}", opts.members, c.data_dir().display());
        }
        local = Some(c);
        e
    } else {
        opts.endpoints.clone()
    };
    wait_leader(&endpoints, Duration::from_secs(30)).await?;
    if let Some(trials) = opts.failover_trials {
        let Some(cluster) = local.as_mut() else {
            bail!("--failover needs the local cluster (no --endpoints)")
        };
        let report = failover(cluster, &endpoints, trials).await?;
        if opts.json {
            println!("{}", serde_json_string(&report));
        } else {
            let t: Vec<String> = report.trials_ms.iter().map(|t| format!("{t:.0}")).collect();
            println!(
                "kill -9 of the leader to the first successful write: median {:.0} ms",
                report.median_ms
            );
            println!("trials (ms): {}", t.join(", "));
        }
        return Ok(());
    }
    let report = load(&endpoints, &opts).await?;
    if opts.json {
        println!("{}", serde_json_string(&report));
    } else {
        let l = &report.latency_us;
        println!(
            "{:.0} ops/s ({} ops, {} writes, {} errors in {:.1} s; {} clients on {} connections, {}% reads, {}-byte values)",
            report.ops_per_sec,
            report.ops,
            report.writes,
            report.errors,
            report.seconds,
            report.clients,
            report.conns,
            (report.read_ratio * 100.0).round(),
            report.value_size
        );
        println!(
            "latency: p50 {:.3} ms, p90 {:.3} ms, p99 {:.3} ms, p99.9 {:.3} ms, max {:.3} ms",
            l.p50 as f64 / 1000.0,
            l.p90 as f64 / 1000.0,
            l.p99 as f64 / 1000.0,
            l.p999 as f64 / 1000.0,
            l.max as f64 / 1000.0
        );
        if let Some(w) = &report.watch {
            println!(
                "watchers: {} saw {}-{} changes each (at least {} written); write to delivery p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
                w.watchers,
                w.min_seen,
                w.max_seen,
                w.expected,
                w.delivery_us[0] as f64 / 1000.0,
                w.delivery_us[1] as f64 / 1000.0,
                w.delivery_us[2] as f64 / 1000.0
            );
        }
        if let Some(l) = &report.leases {
            println!(
                "leases: {} kept alive (TTL {} ms) with {} keepalive requests; {} found gone",
                l.leases, l.ttl_ms, l.keepalives, l.lost
            );
        }
        if report.writes > 0 {
            println!(
                "fsyncs per write: {:.3} on the leader, {:.3} over all members",
                report.leader_fsyncs_per_write, report.fsyncs_per_write
            );
        }
    }
    Ok(())
}

fn serde_json_string<T: Serialize>(v: &T) -> String {
    serde_json::to_string(v).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
}

/// The transaction `--txn` writes with: a compare on one key (one that
/// always holds, so that both puts happen), then two puts.
fn bench_txn(key: Bytes, other: Bytes, value: Bytes) -> crate::protocol::Txn {
    use crate::protocol::{Compare, CompareOp, CompareTarget, Txn, TxnOp};
    let other = if other == key { Bytes::from([&key[..], b"-2"].concat()) } else { other };
    Txn {
        compare: vec![Compare {
            key: key.clone(),
            target: CompareTarget::CreateRevision(u64::MAX),
            op: CompareOp::Less,
        }],
        success: vec![
            TxnOp::Put { key, value: value.clone(), lease: 0 },
            TxnOp::Put { key: other, value, lease: 0 },
        ],
        failure: vec![],
    }
}

async fn load(endpoints: &[String], opts: &BenchOptions) -> anyhow::Result<LoadReport> {
    let conns: Vec<Client> = (0..opts.conns.max(1))
        .map(|_| {
            Client::new(ClientOptions { endpoints: endpoints.to_vec(), timeout: Duration::from_secs(10) })
        })
        .collect();
    let value = Bytes::from(vec![b'x'; opts.value_size]);
    // Key names are made once, before the clock starts.
    let names: Arc<[Bytes]> = (0..opts.keys.max(1)).map(|k| Bytes::from(format!("bench-{k:08}"))).collect();
    if opts.read_ratio > 0.0 {
        // Reads find something (among the first 10,000 keys).
        let c = &conns[0];
        for name in names.iter().take(10_000) {
            c.put(name.clone(), value.clone()).await.context("preloading keys")?;
        }
    }
    let leader = wait_leader(endpoints, Duration::from_secs(10)).await?;
    // Every connection finds the leader before the clock starts, so that
    // connecting is not measured.
    for c in &conns {
        c.get("bench-warm-up").await.context("warming up the connections")?;
    }
    let origin = Instant::now();
    let watchers = if opts.watchers > 0 {
        let from = conns[0].put("bench-start", "0").await.context("starting the watchers")? + 1;
        Some(crate::bench_coord::start_watchers(endpoints, opts.watchers, "bench-", from, origin).await?)
    } else {
        None
    };
    let leases = if opts.leases > 0 {
        Some(crate::bench_coord::start_leases(endpoints, opts.leases, Duration::from_secs(10)).await?)
    } else {
        None
    };
    let (fs_all0, fs_lead0) = fsyncs(endpoints, &leader).await;
    let done = Arc::new(AtomicU64::new(0));
    let bar = if opts.json || !std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        indicatif::ProgressBar::hidden()
    } else {
        let b = indicatif::ProgressBar::new(opts.duration.as_secs().max(1));
        b.set_style(
            indicatif::ProgressStyle::with_template("{elapsed_precise} [{bar:30}] {msg}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        b
    };
    let template = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).context("histogram")?;
    let started = Instant::now();
    let deadline = started + opts.duration;
    let tasks: Vec<_> = (0..opts.clients)
        .map(|i| {
            let client = conns[i % conns.len()].clone();
            let mut hist = template.clone();
            let (done, value, names) = (done.clone(), value.clone(), names.clone());
            let read_ratio = opts.read_ratio;
            let txn = opts.txn;
            let (stamp, size) = (opts.watchers > 0, opts.value_size);
            let consistency = if opts.stale_reads { Consistency::Stale } else { Consistency::Linearizable };
            tokio::spawn(async move {
                let mut rng = graft_core::rng::Rng::new(i as u64 + 1);
                let (mut writes, mut errors) = (0u64, 0u64);
                loop {
                    let t = Instant::now();
                    if t >= deadline {
                        break;
                    }
                    let key = names[rng.range(0, names.len() as u64) as usize].clone();
                    let value = if stamp { crate::bench_coord::stamped(origin, size) } else { value.clone() };
                    let ok = if rng.chance(read_ratio) {
                        client.get_with(key, consistency).await.is_ok()
                    } else if txn {
                        writes += 1;
                        let other = names[rng.range(0, names.len() as u64) as usize].clone();
                        client.txn(bench_txn(key, other, value.clone())).await.is_ok()
                    } else {
                        writes += 1;
                        client.put(key, value.clone()).await.is_ok()
                    };
                    if ok {
                        let _ = hist.record((t.elapsed().as_micros() as u64).max(1));
                        done.fetch_add(1, Ordering::Relaxed);
                    } else {
                        errors += 1;
                    }
                }
                (hist, writes, errors)
            })
        })
        .collect();
    while Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let secs = started.elapsed().as_secs_f64();
        bar.set_position(secs as u64);
        bar.set_message(format!("{:.0} ops/s", done.load(Ordering::Relaxed) as f64 / secs));
    }
    let mut hist = template;
    let (mut writes, mut errors) = (0, 0);
    for t in tasks {
        let (h, w, e) = t.await.context("a client task failed")?;
        hist.add(h).context("merging histograms")?;
        writes += w;
        errors += e;
    }
    let seconds = started.elapsed().as_secs_f64();
    bar.finish_and_clear();
    let leases = match leases {
        Some(l) => Some(l.finish().await),
        None => None,
    };
    let watch = match watchers {
        Some(w) => {
            let end = conns[0].put("bench-zz-end", "0").await.context("ending the watchers")?;
            let per_write = if opts.txn { 2 } else { 1 };
            let ok_writes = writes.saturating_sub(errors);
            Some(w.finish(end, ok_writes * per_write + 1, Duration::from_secs(60)).await?)
        }
        None => None,
    };
    let (fs_all1, fs_lead1) = fsyncs(endpoints, &leader).await;
    let ops = hist.len();
    let per_write = |n: u64| if writes > 0 { n as f64 / writes as f64 } else { 0.0 };
    Ok(LoadReport {
        ops,
        writes,
        errors,
        seconds,
        ops_per_sec: ops as f64 / seconds,
        latency_us: Percentiles {
            p50: hist.value_at_quantile(0.5),
            p90: hist.value_at_quantile(0.9),
            p99: hist.value_at_quantile(0.99),
            p999: hist.value_at_quantile(0.999),
            max: hist.max(),
        },
        fsyncs_per_write: per_write(fs_all1.saturating_sub(fs_all0)),
        leader_fsyncs_per_write: per_write(fs_lead1.saturating_sub(fs_lead0)),
        clients: opts.clients,
        conns: opts.conns,
        read_ratio: opts.read_ratio,
        value_size: opts.value_size,
        watch,
        leases,
    })
}

async fn failover(
    cluster: &mut LocalCluster,
    endpoints: &[String],
    trials: usize,
) -> anyhow::Result<FailoverReport> {
    let mut times = Vec::new();
    for trial in 0..trials {
        let leader = wait_leader(endpoints, Duration::from_secs(30)).await?;
        let id =
            endpoints.iter().position(|a| *a == leader).map(|i| i as u64 + 1).context("leader address")?;
        let client =
            Client::new(ClientOptions { endpoints: endpoints.to_vec(), timeout: Duration::from_secs(10) });
        client.put("failover", "before").await.context("write before the kill")?;
        let killed = Instant::now();
        cluster.kill(id);
        client.put("failover", format!("after-{trial}")).await.context("write after the kill")?;
        let ms = killed.elapsed().as_secs_f64() * 1000.0;
        times.push(ms);
        cluster.restart(id)?;
        // Let the restarted member rejoin before the next trial.
        let deadline = Instant::now() + Duration::from_secs(20);
        while client.status_of(&leader).await.is_err() {
            if Instant::now() > deadline {
                bail!("member {id} did not come back");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let mut sorted = times.clone();
    sorted.sort_by(|a, b| a.total_cmp(b));
    let median = if sorted.is_empty() {
        0.0
    } else if sorted.len() % 2 == 1 {
        sorted[sorted.len() / 2]
    } else {
        (sorted[sorted.len() / 2 - 1] + sorted[sorted.len() / 2]) / 2.0
    };
    Ok(FailoverReport { trials_ms: times, median_ms: median })
}
