//! Helpers: running `graft-cli`, alone or against a cluster of real
//! `graft-kv serve` processes (graft-testkit's [`Cluster`], shared with
//! graft-kv's tests; it also finds the graft-kv binary).

#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

pub use graft_testkit::{free_ports, Cluster};
use serde_json::Value;

/// The graft-cli binary under test.
pub fn cli_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_graft-cli"))
}

/// What a finished graft-cli run printed.
#[derive(Debug)]
pub struct Run {
    /// The exit code.
    pub code: i32,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
    /// How long it took.
    pub took: Duration,
}

impl Run {
    /// Standard output parsed as one JSON object per line.
    pub fn json_lines(&self) -> Vec<Value> {
        self.stdout
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l:?}\n{self:?}")))
            .collect()
    }

    /// Standard output as one JSON object.
    pub fn json(&self) -> Value {
        let lines = self.json_lines();
        assert_eq!(lines.len(), 1, "one JSON line expected: {self:?}");
        lines.into_iter().next().unwrap_or_default()
    }
}

/// Runs graft-cli with `args` (and `stdin` as its standard input).
pub fn run_cli(args: &[&str], stdin: Option<&str>) -> Run {
    use std::io::Write;
    let start = Instant::now();
    let mut child = Command::new(cli_bin())
        .args(args)
        .env_remove("GRAFT_ENDPOINTS")
        .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn graft-cli");
    if let Some(input) = stdin {
        let mut pipe = child.stdin.take().expect("stdin");
        pipe.write_all(input.as_bytes()).expect("write stdin");
    }
    let out = child.wait_with_output().expect("wait for graft-cli");
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        took: start.elapsed(),
    }
}

/// Starts `n` members of a cluster (id "cli-test"), member `id` with the
/// environment `env(id)`.
pub fn start_cluster_with(n: u64, env: impl Fn(u64) -> Vec<(String, String)>) -> Cluster {
    let mut c = Cluster::configure(n, "cli-test");
    for id in 1..=n {
        c.start_member_with(id, &env(id));
    }
    c
}

/// Starts `n` members of a cluster (id "cli-test").
pub fn start_cluster(n: u64) -> Cluster {
    start_cluster_with(n, |_| Vec::new())
}

/// Running graft-cli against a [`Cluster`].
pub trait CliCluster {
    /// Runs graft-cli against this cluster with a generous timeout.
    fn cli(&self, args: &[&str]) -> Run;
    /// Like [`CliCluster::cli`], with `stdin` as standard input.
    fn cli_input(&self, args: &[&str], stdin: Option<&str>) -> Run;
}

impl CliCluster for Cluster {
    fn cli(&self, args: &[&str]) -> Run {
        self.cli_input(args, None)
    }

    fn cli_input(&self, args: &[&str], stdin: Option<&str>) -> Run {
        let endpoints = self.endpoints_arg();
        let mut all = vec!["--endpoints", endpoints.as_str(), "--timeout", "15s"];
        all.extend_from_slice(args);
        run_cli(&all, stdin)
    }
}
