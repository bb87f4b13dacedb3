//! The `graft-kv` binary: runs a member, the timestamp demo, or the benchmark.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use graft_kv::config::ClusterConfig;
use graft_kv::server::{run_member, Join, MemberOptions, ServeError};
use tokio_util::sync::CancellationToken;

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
    let opts = MemberOptions { id: args.id, cluster, data_dir, demo, join };
    match run_member(opts, shutdown).await {
        Ok(()) => Ok(()),
        Err(e @ ServeError::Config(_)) => Err(anyhow::Error::new(e)),
        Err(e) => Err(anyhow::Error::new(e).context(format!("member {}", args.id))),
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Cmd::Serve(args) => member(args, false).await,
        Cmd::DemoTimestamps(DemoArgs { id: Some(id), config, data_dir }) => {
            let args = MemberArgs {
                id,
                config,
                data_dir,
                join: None,
                listen: None,
                advertise: None,
                learner: false,
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
    let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
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
