//! A cluster of real `graft-kv` processes on 127.0.0.1, on free ports, with
//! temporary data directories.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use graft_kv::protocol::MemberStatus;
use graft_kv::{Client, ClientOptions};

use crate::bin::graft_kv_bin;

/// `n` distinct free TCP ports on 127.0.0.1, none handed out before by this
/// process: tests running in parallel threads each get their own (a port
/// freed by one test and handed to another while the first still means to
/// bind it made members fail to start).
pub fn free_ports(n: usize) -> Vec<u16> {
    static GIVEN: std::sync::Mutex<std::collections::BTreeSet<u16>> =
        std::sync::Mutex::new(std::collections::BTreeSet::new());
    let mut given = GIVEN.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let mut listeners = Vec::new();
    let mut ports = Vec::new();
    while ports.len() < n {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
        let port = l.local_addr().expect("local addr").port();
        if given.insert(port) {
            ports.push(port);
        }
        // Held until all are chosen, so the kernel does not repeat one.
        listeners.push(l);
    }
    ports
}

/// One member process.
pub struct Member {
    pub id: u64,
    pub addr: String,
    pub data_dir: PathBuf,
    pub log_file: PathBuf,
    pub child: Option<Child>,
    /// Where it binds, if not `addr` (behind a proxy).
    pub listen: Option<String>,
    /// For a member that joined later: the member it joins through, and
    /// whether it becomes a voter.
    pub join: Option<(String, bool)>,
    /// Extra environment variables it starts with (fault knobs).
    pub env: Vec<(String, String)>,
}

/// A cluster of member processes. Killed on drop.
pub struct Cluster {
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
    pub members: Vec<Member>,
    pub cluster_id: String,
}

/// Signals a process.
pub fn signal(pid: u32, sig: i32) {
    // SAFETY: kill(2) has no memory-safety preconditions.
    unsafe {
        libc::kill(pid as i32, sig);
    }
}

impl Cluster {
    /// Writes a cluster file for `n` members and starts them all.
    pub fn start(n: u64) -> Cluster {
        Cluster::start_with(n, "")
    }

    /// Like `start`, with `extra` TOML (tables such as `[log]`) in the cluster file.
    pub fn start_with(n: u64, extra: &str) -> Cluster {
        let mut c = Cluster::configure_with(n, "test-cluster", extra);
        for id in 1..=n {
            c.start_member(id);
        }
        c
    }

    /// Writes the cluster file without starting anything.
    pub fn configure(n: u64, cluster_id: &str) -> Cluster {
        Cluster::configure_with(n, cluster_id, "")
    }

    /// Writes the cluster file, with `extra` TOML, without starting anything.
    pub fn configure_with(n: u64, cluster_id: &str, extra: &str) -> Cluster {
        let dir = tempfile::tempdir().expect("temp dir");
        let ports = free_ports(n as usize);
        let mut toml = format!("cluster_id = \"{cluster_id}\"\n{extra}\n");
        let mut members = Vec::new();
        for (i, port) in ports.iter().enumerate() {
            let id = i as u64 + 1;
            let addr = format!("127.0.0.1:{port}");
            toml.push_str(&format!("\n[[members]]\nid = {id}\naddr = \"{addr}\"\n"));
            members.push(Member {
                id,
                addr,
                data_dir: dir.path().join(format!("member-{id}")),
                log_file: dir.path().join(format!("member-{id}.log")),
                child: None,
                listen: None,
                join: None,
                env: Vec::new(),
            });
        }
        let config = dir.path().join("cluster.toml");
        std::fs::write(&config, toml).expect("write cluster file");
        Cluster { dir, config, members, cluster_id: cluster_id.to_owned() }
    }

    /// Member `id`.
    pub fn member(&mut self, id: u64) -> &mut Member {
        self.members.iter_mut().find(|m| m.id == id).expect("member id")
    }

    /// Starts (or restarts) member `id`; its output is appended to its log file.
    pub fn start_member(&mut self, id: u64) {
        let config = self.config.clone();
        let m = self.member(id);
        assert!(m.child.is_none(), "member {id} is already running");
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&m.log_file).expect("log file");
        let mut cmd = Command::new(graft_kv_bin());
        cmd.args(["serve", "--id", &id.to_string(), "--config"])
            .arg(&config)
            .arg("--data-dir")
            .arg(&m.data_dir);
        if let Some((target, promote)) = &m.join {
            cmd.args([
                "--join",
                target,
                "--listen",
                m.listen.as_deref().unwrap_or(&m.addr),
                "--advertise",
                &m.addr,
            ]);
            if !promote {
                cmd.arg("--learner");
            }
        }
        let child = cmd
            .env("RUST_LOG", "info")
            .envs(m.env.iter().map(|(k, v)| (k, v)))
            .stdout(log.try_clone().expect("log file"))
            .stderr(log)
            .stdin(Stdio::null())
            .spawn()
            .expect("spawn graft-kv");
        m.child = Some(child);
    }

    /// Starts (or restarts) member `id` with the environment `env` (kept for
    /// its later restarts).
    pub fn start_member_with(&mut self, id: u64, env: &[(String, String)]) {
        self.member(id).env = env.to_vec();
        self.start_member(id);
    }

    /// Starts a new member `id` that joins through member `through`.
    pub fn join_member(&mut self, id: u64, through: u64, promote: bool) {
        let port = free_ports(1)[0];
        self.join_member_at(id, through, promote, format!("127.0.0.1:{port}"), None);
    }

    /// Starts a new member `id` that joins through member `through`,
    /// advertising `addr` and binding `listen` (if not `addr`).
    pub fn join_member_at(
        &mut self,
        id: u64,
        through: u64,
        promote: bool,
        addr: String,
        listen: Option<String>,
    ) {
        let target = self.members.iter().find(|m| m.id == through).expect("member").addr.clone();
        self.members.push(Member {
            id,
            addr,
            listen,
            data_dir: self.dir.path().join(format!("member-{id}")),
            log_file: self.dir.path().join(format!("member-{id}.log")),
            child: None,
            join: Some((target, promote)),
            env: Vec::new(),
        });
        self.start_member(id);
    }

    /// Like `configure_with`, but every member is reached through a proxy:
    /// the cluster file's `addr` is the proxy's port and `listen` the
    /// member's own. Returns the proxy routes to start.
    pub fn configure_proxied(n: u64, extra: &str) -> (Cluster, Vec<(u64, std::net::TcpListener, String)>) {
        let dir = tempfile::tempdir().expect("temp dir");
        let real = free_ports(n as usize);
        let mut toml = format!("cluster_id = \"test-cluster\"\n{extra}\n");
        let mut members = Vec::new();
        let mut routes = Vec::new();
        for (i, port) in real.iter().enumerate() {
            let id = i as u64 + 1;
            let proxy = std::net::TcpListener::bind("127.0.0.1:0").expect("proxy port");
            let addr = proxy.local_addr().expect("addr").to_string();
            let listen = format!("127.0.0.1:{port}");
            toml.push_str(&format!("\n[[members]]\nid = {id}\naddr = \"{addr}\"\nlisten = \"{listen}\"\n"));
            routes.push((id, proxy, listen.clone()));
            members.push(Member {
                id,
                addr,
                listen: Some(listen),
                data_dir: dir.path().join(format!("member-{id}")),
                log_file: dir.path().join(format!("member-{id}.log")),
                child: None,
                join: None,
                env: Vec::new(),
            });
        }
        let config = dir.path().join("cluster.toml");
        std::fs::write(&config, toml).expect("write cluster file");
        (Cluster { dir, config, members, cluster_id: "test-cluster".into() }, routes)
    }

    /// kill -9.
    pub fn kill(&mut self, id: u64) {
        if let Some(mut c) = self.member(id).child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM, and wait for a clean exit.
    pub fn stop(&mut self, id: u64) -> Option<ExitStatus> {
        let mut c = self.member(id).child.take()?;
        signal(c.id(), libc::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(Some(st)) = c.try_wait() {
                return Some(st);
            }
            if Instant::now() > deadline {
                let _ = c.kill();
                panic!("member {id} did not stop within 10 s of SIGTERM\n{}", self.logs());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Member `id`'s process id, if it runs.
    pub fn pid(&mut self, id: u64) -> Option<u32> {
        self.member(id).child.as_ref().map(|c| c.id())
    }

    /// The members whose process runs (or is stopped with SIGSTOP).
    pub fn running(&self) -> Vec<u64> {
        self.members.iter().filter(|m| m.child.is_some()).map(|m| m.id).collect()
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

    /// Every member's address.
    pub fn endpoints(&self) -> Vec<String> {
        self.members.iter().map(|m| m.addr.clone()).collect()
    }

    /// Every member's address, comma-separated (for `--endpoints`).
    pub fn endpoints_arg(&self) -> String {
        self.endpoints().join(",")
    }

    /// The address of member `id`.
    pub fn addr(&self, id: u64) -> String {
        self.members.iter().find(|m| m.id == id).expect("member id").addr.clone()
    }

    /// A client for every member, with a generous timeout.
    pub fn client(&self) -> Client {
        Client::new(ClientOptions { endpoints: self.endpoints(), timeout: Duration::from_secs(20) })
    }

    /// A client that talks to one member first.
    pub fn client_at(&self, id: u64) -> Client {
        let addr = self.members.iter().find(|m| m.id == id).expect("member").addr.clone();
        Client::new(ClientOptions { endpoints: vec![addr], timeout: Duration::from_secs(20) })
    }

    /// Every running member's status (members that do not answer are left out).
    pub async fn statuses(&self) -> Vec<MemberStatus> {
        let mut out = Vec::new();
        for m in &self.members {
            if m.child.is_none() {
                continue;
            }
            let c = Client::new(ClientOptions {
                endpoints: vec![m.addr.clone()],
                timeout: Duration::from_secs(1),
            });
            if let Ok(s) = c.status_of(&m.addr).await {
                out.push(s);
            }
        }
        out
    }

    /// Waits until the running members agree on one leader; returns its id.
    pub async fn wait_leader(&self, within: Duration) -> u64 {
        let deadline = Instant::now() + within;
        loop {
            let st = self.statuses().await;
            let running = self.running().len();
            let leaders: Vec<&MemberStatus> = st.iter().filter(|s| s.role == "Leader").collect();
            if st.len() == running && leaders.len() == 1 {
                let l = leaders[0];
                if st.iter().all(|s| s.leader == Some(l.id) && s.term == l.term) {
                    return l.id;
                }
            }
            if Instant::now() > deadline {
                panic!("no single leader within {within:?}:\n{}\n{}", summary(&st), self.logs());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// [`Cluster::wait_leader`] for tests without a runtime of their own.
    pub fn wait_leader_blocking(&self, within: Duration) -> u64 {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime");
        rt.block_on(self.wait_leader(within))
    }

    /// Waits until every running member has applied at least `index`.
    pub async fn wait_applied(&self, index: u64, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            let st = self.statuses().await;
            if st.len() == self.running().len() && st.iter().all(|s| s.applied >= index) {
                return;
            }
            if Instant::now() > deadline {
                panic!("members did not apply {index} within {within:?}:\n{}\n{}", summary(&st), self.logs());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The tail of every member's log, for failure messages.
    pub fn logs(&self) -> String {
        let mut out = String::new();
        for m in &self.members {
            let text = std::fs::read_to_string(&m.log_file).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            let tail = &lines[lines.len().saturating_sub(25)..];
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

/// One line per member, for failure messages.
pub fn summary(st: &[MemberStatus]) -> String {
    st.iter()
        .map(|s| {
            format!(
                "member {}: {} term {} leader {:?} commit {} applied {} last {}",
                s.id, s.role, s.term, s.leader, s.commit, s.applied, s.last_index
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// A digest of a file's bytes, to show it was not touched.
pub fn file_digest(path: &Path) -> (u64, u64) {
    use std::hash::{Hash, Hasher};
    let bytes = std::fs::read(path).expect("read file");
    let mut h = std::collections::hash_map::DefaultHasher::new();
    bytes.hash(&mut h);
    (bytes.len() as u64, h.finish())
}
