//! `graft-kv demo-timestamps` with no `--id`: the whole default cluster as
//! child processes of this one, their output prefixed with the member id.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use anyhow::Context;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use crate::config::ClusterConfig;

/// Sends SIGTERM to a child (graceful stop).
pub fn terminate(child: &Child) {
    if let Some(pid) = child.id() {
        // SAFETY: kill(2) with a pid we own and a valid signal number has no
        // memory-safety preconditions.
        unsafe {
            libc::kill(pid as libc::pid_t, libc::SIGTERM);
        }
    }
}

/// Runs every member of `cluster` as `graft-kv demo-timestamps --id N`,
/// each with its data under `data_root/member-N`, until Ctrl+C or SIGTERM;
/// then stops them all.
pub async fn run_cluster(
    cluster: &ClusterConfig,
    config_file: Option<&Path>,
    data_root: &Path,
) -> anyhow::Result<()> {
    let exe = std::env::current_exe().context("cannot find this program's path")?;
    let mut children = Vec::new();
    for m in &cluster.members {
        let dir: PathBuf = data_root.join(format!("member-{}", m.id));
        let mut cmd = Command::new(&exe);
        cmd.arg("demo-timestamps").arg("--id").arg(m.id.to_string()).arg("--data-dir").arg(&dir);
        if let Some(f) = config_file {
            cmd.arg("--config").arg(f);
        }
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).stdin(Stdio::null()).kill_on_drop(true);
        let mut child = cmd.spawn().with_context(|| format!("cannot start member {}", m.id))?;
        for (stream, name) in [
            (child.stdout.take().map(|s| Box::new(s) as Box<dyn tokio::io::AsyncRead + Unpin + Send>), "out"),
            (child.stderr.take().map(|s| Box::new(s) as Box<dyn tokio::io::AsyncRead + Unpin + Send>), "err"),
        ] {
            let Some(stream) = stream else { continue };
            let id = m.id;
            tokio::spawn(async move {
                let mut lines = BufReader::new(stream).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    if name == "err" {
                        eprintln!("[{id}] {line}");
                    } else {
                        println!("[{id}] {line}");
                    }
                }
            });
        }
        children.push((m.id, child));
    }
    println!(
        "started {} members; data under {}. Kill one (its pid is below) to watch an election or a catch-up; Ctrl+C stops all.",
        children.len(),
        data_root.display()
    );
    for (id, c) in &children {
        println!("member {id}: pid {}", c.id().unwrap_or(0));
    }
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    println!("stopping all members");
    for (_, c) in &children {
        terminate(c);
    }
    for (id, mut c) in children {
        match tokio::time::timeout(std::time::Duration::from_secs(5), c.wait()).await {
            Ok(Ok(status)) => println!("member {id} stopped ({status})"),
            _ => {
                let _ = c.kill().await;
                println!("member {id} killed after 5 s");
            }
        }
    }
    Ok(())
}
