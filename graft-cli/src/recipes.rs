//! `lock` and `elect`: graft_kv's lock recipe run from the command line.

use std::process::Stdio;
use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use graft_kv::lock;
use graft_kv::Client;

/// What ended a `lock` or `elect`.
pub enum Ended {
    /// The command ran; its exit code.
    Command(i32),
    /// Ctrl+C.
    Interrupted,
}

/// Runs `command` while holding lock `name`, with `GRAFT_LOCK_REVISION`
/// (the fencing token) and `GRAFT_LOCK_KEY` in its environment; prints
/// `locked NAME at revision R` first. If the lock is lost meanwhile (the
/// lease expired), the command is killed and this fails.
pub async fn run_lock(
    client: &Client,
    name: &str,
    ttl: Duration,
    command: &[String],
    say: impl Fn(&str),
    interrupted: impl std::future::Future<Output = ()>,
) -> anyhow::Result<Ended> {
    let (program, args) = command.split_first().context("lock needs a command after --")?;
    tokio::pin!(interrupted);
    let mut held = tokio::select! {
        held = lock::acquire(client, name, Bytes::new(), ttl) => held.with_context(|| format!("lock {name}"))?,
        () = &mut interrupted => return Ok(Ended::Interrupted),
    };
    say(&format!("locked {name} at revision {}", held.revision));
    let mut child = tokio::process::Command::new(program)
        .args(args)
        .env("GRAFT_LOCK_REVISION", held.revision.to_string())
        .env("GRAFT_LOCK_KEY", String::from_utf8_lossy(&held.key).into_owned())
        .stdin(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("lock {name}: starting {program}"))?;
    let ended = tokio::select! {
        status = child.wait() => Ended::Command(status.map(|s| s.code().unwrap_or(128)).unwrap_or(127)),
        () = held.wait_lost() => {
            let _ = child.kill().await;
            anyhow::bail!("lock {name}: lost (the lease expired); the command was stopped");
        }
        () = &mut interrupted => {
            let _ = child.kill().await;
            Ended::Interrupted
        }
    };
    held.release().await.with_context(|| format!("lock {name}: releasing"))?;
    Ok(ended)
}

/// Campaigns in election `name` with `value`; prints `elected: VALUE
/// (revision R)` once leader and holds until Ctrl+C, then resigns.
pub async fn run_elect(
    client: &Client,
    name: &str,
    value: &str,
    ttl: Duration,
    say: impl Fn(&str),
    interrupted: impl std::future::Future<Output = ()>,
) -> anyhow::Result<Ended> {
    tokio::pin!(interrupted);
    let mut held = tokio::select! {
        held = lock::acquire(client, name, Bytes::from(value.to_owned()), ttl) => {
            held.with_context(|| format!("elect {name}"))?
        }
        () = &mut interrupted => return Ok(Ended::Interrupted),
    };
    say(&format!("elected: {value} (revision {})", held.revision));
    tokio::select! {
        () = held.wait_lost() => anyhow::bail!("elect {name}: lost the leadership (the lease expired)"),
        () = &mut interrupted => {}
    }
    held.release().await.with_context(|| format!("elect {name}: resigning"))?;
    Ok(Ended::Interrupted)
}
