//! Helpers: the binaries, a cluster of real `graft-kv serve` processes on
//! free ports of 127.0.0.1 with a temporary cluster file and data
//! directories (as graft-kv's own tests do), and running `graft-cli`.
//!
//! Locating graft-kv: cargo only gives integration tests the binaries of
//! their own package (`CARGO_BIN_EXE_graft-cli`), so the tests use the
//! `graft-kv` next to graft-cli's binary in the same target directory.
//! `cargo test --workspace` (CI) has always just built it. When it is
//! missing or older than the sources of graft-kv and graft-core (say, after
//! `cargo test -p graft-cli` alone following an edit), the first test that
//! needs it runs `cargo build --profile test -p graft-kv --bin graft-kv`
//! once. (Running that cargo every time would rebuild graft-kv's whole
//! dependency tree once per target directory: `cargo test --workspace`
//! unifies features across the workspace and its dev-dependencies, a
//! `cargo build -p graft-kv` does not, so the two never share artifacts.)
//! `GRAFT_KV_BIN=path` overrides all this.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::Value;

/// The graft-cli binary under test.
pub fn cli_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_graft-cli"))
}

/// The graft-kv binary (see the module's doc), built at most once per run.
pub fn kv_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(path) = std::env::var_os("GRAFT_KV_BIN") {
            return PathBuf::from(path);
        }
        let cli = cli_bin();
        let profile_dir = cli.parent().expect("graft-cli sits in a profile directory");
        let bin = profile_dir.join(format!("graft-kv{}", std::env::consts::EXE_SUFFIX));
        let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let built = std::fs::metadata(&bin).and_then(|m| m.modified()).ok();
        let sources = ["graft-kv", "graft-core", "Cargo.lock"].map(|p| newest_mtime(&workspace.join(p)));
        if built.is_some_and(|b| sources.iter().all(|s| s.is_none_or(|s| s <= b))) {
            return bin;
        }
        let target_dir = profile_dir.parent().expect("the profile directory sits in the target directory");
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let out = Command::new(cargo)
            .args(["build", "--quiet", "--profile", "test", "-p", "graft-kv", "--bin", "graft-kv"])
            .arg("--manifest-path")
            .arg(workspace.join("Cargo.toml"))
            .arg("--target-dir")
            .arg(target_dir)
            .output()
            .expect("run cargo to build graft-kv");
        assert!(out.status.success(), "building graft-kv failed:\n{}", String::from_utf8_lossy(&out.stderr));
        assert!(bin.exists(), "{} was not built", bin.display());
        bin
    })
    .clone()
}

/// The newest modification time of `path` or any file under it (`target`
/// directories left out).
fn newest_mtime(path: &Path) -> Option<std::time::SystemTime> {
    let meta = std::fs::metadata(path).ok()?;
    let mut newest = meta.modified().ok();
    if meta.is_dir() {
        for entry in std::fs::read_dir(path).ok()?.flatten() {
            if entry.file_name() == "target" {
                continue;
            }
            newest = newest.max(newest_mtime(&entry.path()));
        }
    }
    newest
}

/// `n` distinct TCP ports on 127.0.0.1 that were free a moment ago.
pub fn free_ports(n: usize) -> Vec<u16> {
    let listeners: Vec<std::net::TcpListener> =
        (0..n).map(|_| std::net::TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port")).collect();
    listeners.iter().map(|l| l.local_addr().expect("local addr").port()).collect()
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

/// One member process.
pub struct Member {
    pub id: u64,
    pub addr: String,
    pub data_dir: PathBuf,
    pub log_file: PathBuf,
    pub child: Option<Child>,
}

/// A cluster of `graft-kv serve` processes. Killed on drop.
pub struct Cluster {
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
    pub members: Vec<Member>,
}

impl Cluster {
    /// Starts `n` members.
    pub fn start(n: u64) -> Cluster {
        Cluster::start_with(n, |_| Vec::new())
    }

    /// Starts `n` members, member `id` with the environment `env(id)`.
    pub fn start_with(n: u64, env: impl Fn(u64) -> Vec<(String, String)>) -> Cluster {
        let kv = kv_bin();
        assert!(kv.exists());
        let dir = tempfile::tempdir().expect("temp dir");
        let mut toml = String::from("cluster_id = \"cli-test\"\n");
        let mut members = Vec::new();
        for (i, port) in free_ports(n as usize).into_iter().enumerate() {
            let id = i as u64 + 1;
            let addr = format!("127.0.0.1:{port}");
            toml.push_str(&format!("\n[[members]]\nid = {id}\naddr = \"{addr}\"\n"));
            members.push(Member {
                id,
                addr,
                data_dir: dir.path().join(format!("member-{id}")),
                log_file: dir.path().join(format!("member-{id}.log")),
                child: None,
            });
        }
        let config = dir.path().join("cluster.toml");
        std::fs::write(&config, toml).expect("write the cluster file");
        let mut c = Cluster { dir, config, members };
        for id in 1..=n {
            c.start_member(id, &env(id));
        }
        c
    }

    fn member(&mut self, id: u64) -> &mut Member {
        self.members.iter_mut().find(|m| m.id == id).expect("member id")
    }

    /// The address of member `id`.
    pub fn addr(&self, id: u64) -> String {
        self.members.iter().find(|m| m.id == id).expect("member id").addr.clone()
    }

    /// Starts (or restarts) member `id`; its output is appended to its log file.
    pub fn start_member(&mut self, id: u64, env: &[(String, String)]) {
        let config = self.config.clone();
        let m = self.member(id);
        assert!(m.child.is_none(), "member {id} is already running");
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&m.log_file).expect("log file");
        let child = Command::new(kv_bin())
            .args(["serve", "--id", &id.to_string(), "--config"])
            .arg(&config)
            .arg("--data-dir")
            .arg(&m.data_dir)
            .env("RUST_LOG", "info")
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdout(log.try_clone().expect("log file"))
            .stderr(log)
            .stdin(Stdio::null())
            .spawn()
            .expect("spawn graft-kv");
        m.child = Some(child);
    }

    /// kill -9.
    pub fn kill(&mut self, id: u64) {
        if let Some(mut c) = self.member(id).child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Members that exited by themselves since the last call, with how.
    pub fn reap(&mut self) -> Vec<(u64, ExitStatus)> {
        let mut out = Vec::new();
        for m in &mut self.members {
            if let Some(c) = &mut m.child {
                if let Ok(Some(status)) = c.try_wait() {
                    out.push((m.id, status));
                    m.child = None;
                }
            }
        }
        out
    }

    /// Every member's address, comma-separated, for `--endpoints`.
    pub fn endpoints(&self) -> String {
        self.members.iter().map(|m| m.addr.clone()).collect::<Vec<_>>().join(",")
    }

    /// Runs graft-cli against this cluster with a generous timeout.
    pub fn cli(&self, args: &[&str]) -> Run {
        self.cli_input(args, None)
    }

    /// Like [`Cluster::cli`], with `stdin` as standard input.
    pub fn cli_input(&self, args: &[&str], stdin: Option<&str>) -> Run {
        let endpoints = self.endpoints();
        let mut all = vec!["--endpoints", endpoints.as_str(), "--timeout", "15s"];
        all.extend_from_slice(args);
        run_cli(&all, stdin)
    }

    /// Waits until every running member answers and all agree on one
    /// leader (asked with `graft-cli status`); returns its id.
    pub fn wait_leader(&self, within: Duration) -> u64 {
        let deadline = Instant::now() + within;
        let running: Vec<u64> = self.members.iter().filter(|m| m.child.is_some()).map(|m| m.id).collect();
        loop {
            let endpoints = self.endpoints();
            let r =
                run_cli(&["--endpoints", &endpoints, "--timeout", "1s", "--output", "json", "status"], None);
            if r.code == 0 {
                let j = r.json();
                let up: Vec<&Value> = j["members"]
                    .as_array()
                    .map(|ms| ms.iter().filter(|m| m["reachable"] == Value::Bool(true)).collect())
                    .unwrap_or_default();
                let leaders: Vec<u64> =
                    up.iter().filter(|m| m["role"] == "Leader").filter_map(|m| m["id"].as_u64()).collect();
                if up.len() == running.len()
                    && leaders.len() == 1
                    && up.iter().all(|m| m["leader"] == leaders[0])
                {
                    return leaders[0];
                }
            }
            assert!(Instant::now() < deadline, "no single leader within {within:?}: {r:?}\n{}", self.logs());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The tail of every member's log, for failure messages.
    pub fn logs(&self) -> String {
        let mut out = String::new();
        for m in &self.members {
            let text = std::fs::read_to_string(&m.log_file).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            let tail = &lines[lines.len().saturating_sub(20)..];
            out.push_str(&format!("--- member {} ({}) ---\n{}\n", m.id, m.addr, tail.join("\n")));
        }
        out
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for m in &mut self.members {
            if let Some(mut c) = m.child.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }
}
