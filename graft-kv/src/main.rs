//! The `graft-kv` binary: runs a member, the timestamp demo, or the benchmark.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use graft_kv::config::ClusterConfig;
use graft_kv::server::{run_member, Join, MemberOptions, ServeError};
use tokio_util::sync::CancellationToken;

/// A member allocates and frees many small buffers per request (frames,
/// entries, redb pages); mimalloc does that faster than the system allocator.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// graft-kv: a replicated key-value store built on Raft.
#[derive(Parser, Debug)]
#[command(version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
    /// Log filter (tracing syntax), e.g. `info`, `debug`, `graft_kv=debug`.
    /// Overrides RUST_LOG.
    #[arg(long, global = true)]
    log: Option<String>,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Runs one member of the cluster.
    Serve(MemberArgs),
    /// The original graft behaviour: the leader appends the time every
    /// 500 ms. Without --id, starts the whole cluster as child processes.
    DemoTimestamps(DemoArgs),
    /// Loads a cluster (a local 3-member one unless --endpoints) and prints
    /// throughput, latency percentiles and fsyncs per write.
    Bench(BenchArgs),
    /// Prints what a stopped member's data directory holds (identity, hard
    /// state, log range, applied index, members, key and session counts,
    /// membership entries), without changing it.
    Inspect(InspectArgs),
}

#[derive(clap::Args, Debug)]
struct InspectArgs {
    /// The member's data directory.
    #[arg(long)]
    data_dir: PathBuf,
    /// Also print every log entry.
    #[arg(long)]
    entries: bool,
}

#[derive(clap::Args, Debug)]
struct BenchArgs {
    /// Target these members (host:port,...) instead of starting a local cluster.
    #[arg(long, value_delimiter = ',')]
    endpoints: Vec<String>,
    /// Members of the local cluster.
    #[arg(long, default_value_t = 3)]
    members: u64,
    /// Concurrent clients, each with one request in flight.
    #[arg(long, default_value_t = 64)]
    clients: usize,
    /// Connections the clients share (default: one per 8 clients).
    #[arg(long)]
    conns: Option<usize>,
    /// How long to measure (e.g. 10s, 1m).
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    duration: std::time::Duration,
    /// Share of reads, 0 to 1 (0: puts only; 1: reads only).
    #[arg(long, default_value_t = 0.0)]
    read_ratio: f64,
    /// Write with transactions (compare one key, put two) instead of puts.
    #[arg(long)]
    txn: bool,
    /// Watch the written keys with this many watchers (each on its own
    /// connection) and report what they saw and how soon.
    #[arg(long, default_value_t = 0)]
    watchers: usize,
    /// Keep this many leases (TTL 10 s) alive during the run.
    #[arg(long, default_value_t = 0)]
    leases: usize,
    /// Serve reads from the member's own state instead of linearizably.
    #[arg(long)]
    stale: bool,
    /// Distinct keys.
    #[arg(long, default_value_t = 10_000)]
    keys: u64,
    /// Value size in bytes.
    #[arg(long, default_value_t = 256)]
    value_size: usize,
    /// Measure leader failover instead: kill -9 the leader this many times
    /// and time the first successful write after each.
    #[arg(long)]
    failover: Option<usize>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Output::Plain)]
    output: Output,
    /// Extra cluster-file TOML for the local cluster (e.g. "[log]\nmax_entries = 0").
    #[arg(long, default_value = "")]
    extra_config: String,
    /// Log filter for the local members (default `warn`); their logs
    /// (member-N.log) and data are then kept after the run.
    #[arg(long)]
    member_log: Option<String>,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum Output {
    Plain,
    Json,
}

#[derive(clap::Args, Debug)]
struct MemberArgs {
    /// This member's id (from the cluster file, or 1-5 for the default cluster).
    #[arg(long)]
    id: u64,
    /// The cluster file (TOML). Default: five members on 127.0.0.1:15000-15004.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Where this member keeps its data. Default: ./graft-data/member-ID.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Join the running cluster that this member (host:port) belongs to,
    /// as a new member (or one restarted at a new --listen address).
    #[arg(long, requires = "listen")]
    join: Option<String>,
    /// With --join: where this member listens (host:port).
    #[arg(long, requires = "join")]
    listen: Option<String>,
    /// With --join: the address the others use to reach this member, if
    /// not --listen.
    #[arg(long, requires = "join")]
    advertise: Option<String>,
    /// With --join: stay a learner (receive the log, never vote).
    #[arg(long, requires = "join")]
    learner: bool,
    /// Serve etcd's v3 API (gRPC) on host:port. Default: the cluster
    /// file's [etcd.members] address for this member (127.0.0.1:2378+ID in
    /// the built-in cluster), or none.
    #[arg(long)]
    etcd_listen: Option<String>,
}

#[derive(clap::Args, Debug)]
struct DemoArgs {
    /// Run only this member (as the original did, one per shell).
    #[arg(long)]
    id: Option<u64>,
    /// The cluster file (TOML). Default: five members on 127.0.0.1:15000-15004.
    #[arg(long)]
    config: Option<PathBuf>,
    /// With --id: this member's data directory (default ./graft-data/member-ID).
    /// Without: the directory holding every member's (default ./graft-data).
    #[arg(long)]
    data_dir: Option<PathBuf>,
}

fn init_logging(filter: Option<&str>) {
    use tracing_subscriber::EnvFilter;
    let filter = match filter {
        Some(f) => EnvFilter::new(f),
        None => EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
    };
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stdout());
    tracing_subscriber::fmt().with_env_filter(filter).with_target(false).with_ansi(ansi).init();
}

fn shutdown_on_signals() -> anyhow::Result<CancellationToken> {
    let token = CancellationToken::new();
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("cannot install the SIGTERM handler")?;
    let t = token.clone();
    tokio::spawn(async move {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT: shutting down"),
            _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
        }
        t.cancel();
    });
    Ok(token)
}

async fn member(args: MemberArgs, demo: bool) -> anyhow::Result<()> {
    let cluster = ClusterConfig::load_or_default(args.config.as_deref())?;
    let data_dir = args.data_dir.unwrap_or_else(|| PathBuf::from(format!("graft-data/member-{}", args.id)));
    let shutdown = shutdown_on_signals()?;
    let join = match (args.join, args.listen) {
        (Some(target), Some(listen)) => {
            let advertise = args.advertise.unwrap_or_else(|| listen.clone());
            Some(Join { target, listen, advertise, promote: !args.learner })
        }
        _ => None,
    };
    let opts = MemberOptions { id: args.id, cluster, data_dir, demo, join, etcd_listen: args.etcd_listen };
    match run_member(opts, shutdown).await {
        Ok(()) => Ok(()),
        Err(e @ ServeError::Config(_)) => Err(anyhow::Error::new(e)),
        Err(e) => Err(anyhow::Error::new(e).context(format!("member {}", args.id))),
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Cmd::Bench(b) => {
            if !(0.0..=1.0).contains(&b.read_ratio) {
                anyhow::bail!("--read-ratio must be between 0 and 1, not {}", b.read_ratio);
            }
            let opts = graft_kv::bench::BenchOptions {
                endpoints: b.endpoints,
                members: b.members,
                clients: b.clients.max(1),
                conns: b.conns.unwrap_or(b.clients.div_ceil(8)).max(1),
                duration: b.duration,
                read_ratio: b.read_ratio,
                txn: b.txn,
                watchers: b.watchers,
                leases: b.leases,
                stale_reads: b.stale,
                keys: b.keys,
                value_size: b.value_size,
                failover_trials: b.failover,
                json: b.output == Output::Json,
                extra_config: b.extra_config.replace("\\n", "\n"),
                member_log: b.member_log,
            };
            graft_kv::bench::run(opts).await
        }
        Cmd::Serve(args) => member(args, false).await,
        Cmd::Inspect(a) => {
            let found = graft_kv::storage::inspect::inspect(&a.data_dir, a.entries)
                .with_context(|| format!("cannot inspect {}", a.data_dir.display()))?;
            print!("{found}");
            Ok(())
        }
        Cmd::DemoTimestamps(DemoArgs { id: Some(id), config, data_dir }) => {
            let args = MemberArgs {
                id,
                config,
                data_dir,
                join: None,
                listen: None,
                advertise: None,
                learner: false,
                etcd_listen: None,
            };
            member(args, true).await
        }
        Cmd::DemoTimestamps(DemoArgs { id: None, config, data_dir }) => {
            let cluster = ClusterConfig::load_or_default(config.as_deref())?;
            let root = data_dir.unwrap_or_else(|| PathBuf::from("graft-data"));
            graft_kv::demo::run_cluster(&cluster, config.as_deref(), &root).await
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log.as_deref());
    // A member runs on one thread: its tasks (connections, the node, the
    // peer senders) hand work to each other without crossing threads, which
    // on a small machine shared by several members costs more than it gains.
    // Disk work runs on tokio's blocking threads.
    // The benchmark's load generator uses every core.
    let mut builder = match cli.command {
        Cmd::Bench(_) => tokio::runtime::Builder::new_multi_thread(),
        _ => tokio::runtime::Builder::new_current_thread(),
    };
    let rt = match builder.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("graft-kv: error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("graft-kv: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
