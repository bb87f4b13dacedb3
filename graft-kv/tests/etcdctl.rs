//! Debian's `etcdctl` (package etcd-client, etcd 3.4; scripts/test-deps
//! installs it) against a graft cluster serving etcd's v3 API: get and put
//! in every form etcdctl 3.4 has, deletes, `txn -i`, compaction, watches (prefix, from a
//! revision, previous values, interactive), leases, two competing `lock`
//! and `elect` processes, members added, promoted and removed, endpoint
//! status and health. `check perf` runs for a minute: behind
//! `GRAFT_ETCDCTL_PERF=1`.

mod util;

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use util::Cluster;

/// `etcdctl --endpoints=<endpoints> <args>`, with `stdin` if given.
fn etcdctl(endpoints: &str, args: &[&str], stdin: Option<&str>) -> Output {
    let mut cmd = Command::new("etcdctl");
    cmd.env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={endpoints}"))
        .arg("--command-timeout=10s")
        .args(args)
        .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("etcdctl runs (scripts/test-deps installs Debian's etcd-client)");
    if let (Some(text), Some(mut input)) = (stdin, child.stdin.take()) {
        input.write_all(text.as_bytes()).expect("write etcdctl's stdin");
    }
    child.wait_with_output().expect("etcdctl finishes")
}

/// Runs etcdctl and returns its standard output; fails the test if it fails.
fn ok(endpoints: &str, args: &[&str]) -> String {
    let out = etcdctl(endpoints, args, None);
    assert!(
        out.status.success(),
        "etcdctl {args:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A JSON answer's field, as etcdctl prints it.
fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("etcdctl's JSON {text:?}: {e}"))
}

/// The revision in an answer's header (`-w json`).
fn revision(text: &str) -> u64 {
    json(text)["header"]["revision"].as_u64().expect("a header revision")
}

/// A long-running etcdctl (watch, lock, elect) whose output lines are read
/// as they come.
struct Running {
    child: Child,
    lines: std::sync::mpsc::Receiver<String>,
}

impl Running {
    fn start(endpoints: &str, args: &[&str], stdin: bool) -> Running {
        let mut child = Command::new("etcdctl")
            .env("ETCDCTL_API", "3")
            .arg(format!("--endpoints={endpoints}"))
            .args(args)
            .stdin(if stdin { Stdio::piped() } else { Stdio::null() })
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("etcdctl runs");
        let out = child.stdout.take().expect("stdout");
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        Running { child, lines }
    }

    /// Reads lines until `want` has been seen in order, within `within`.
    fn expect_lines(&self, want: &[&str], within: Duration) -> Vec<String> {
        let deadline = Instant::now() + within;
        let mut got = Vec::new();
        let mut next = 0;
        while next < want.len() {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    if line == want[next] {
                        next += 1;
                    }
                    got.push(line);
                }
                Err(_) => panic!("expected {want:?} in order; got {got:?}"),
            }
        }
        got
    }

    fn write(&mut self, text: &str) {
        let input = self.child.stdin.as_mut().expect("stdin");
        input.write_all(text.as_bytes()).expect("write");
        input.flush().expect("flush");
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start() -> (Cluster, Vec<String>) {
    let (cluster, addrs) = util::etcd::etcd_cluster(3);
    cluster.wait_leader_blocking(Duration::from_secs(20));
    // Ready once a linearizable read goes through the etcd API.
    let deadline = Instant::now() + Duration::from_secs(20);
    while !etcdctl(&addrs[0], &["get", "probe"], None).status.success() {
        assert!(Instant::now() < deadline, "etcd API never answered\n{}", cluster.logs());
        std::thread::sleep(Duration::from_millis(100));
    }
    (cluster, addrs)
}

#[test]
fn etcdctl_gets_puts_deletes_txn_compaction_and_watches() {
    let (_cluster, addrs) = start();
    let all = addrs.join(",");
    let e = all.as_str();
    let first = revision(&ok(e, &["put", "foo/a", "1", "-w", "json"]));
    ok(e, &["put", "foo/b", "2"]);
    ok(e, &["put", "foo/c", "3"]);
    ok(e, &["put", "bar", "4"]);
    ok(e, &["put", "foo/a", "one"]);
    assert_eq!(ok(e, &["get", "foo/", "--prefix"]), "foo/a\none\nfoo/b\n2\nfoo/c\n3\n");
    assert_eq!(ok(e, &["get", "foo/", "--prefix", "--limit=2"]), "foo/a\none\nfoo/b\n2\n");
    assert_eq!(ok(e, &["get", "foo/", "--prefix", "--keys-only"]), "foo/a\n\nfoo/b\n\nfoo/c\n\n");
    assert_eq!(json(&ok(e, &["get", "foo/", "--prefix", "--limit=1", "-w", "json"]))["count"], 3, "count");
    assert_eq!(ok(e, &["get", "foo/a", &format!("--rev={first}")]), "foo/a\n1\n", "a past revision");
    assert_eq!(ok(e, &["get", "foo/b", "foo/d"]), "foo/b\n2\nfoo/c\n3\n", "a range");
    assert_eq!(ok(e, &["get", "foo/c", "--from-key"]), "foo/c\n3\n");
    assert_eq!(
        ok(e, &["get", "foo/", "--prefix", "--sort-by=VALUE", "--order=DESCEND", "--print-value-only"]),
        "one\n3\n2\n"
    );

    // txn -i: compares, then the success or failure requests.
    let txn = "value(\"foo/a\") = \"one\"\n\nput foo/d 4\nget foo/b\n\nput foo/d never\n\n";
    let out = etcdctl(e, &["txn", "-i"], Some(txn));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && text.lines().any(|l| l == "SUCCESS"), "{text}");
    assert!(text.contains("foo/b\n2"), "{text}");
    assert_eq!(ok(e, &["get", "foo/d", "--print-value-only"]), "4\n");
    let txn = "version(\"foo/a\") > \"5\"\n\nput foo/e never\n\ndel foo/d\n\n";
    let out = etcdctl(e, &["txn", "-i"], Some(txn));
    assert!(String::from_utf8_lossy(&out.stdout).lines().any(|l| l == "FAILURE"), "{out:?}");
    assert_eq!(json(&ok(e, &["get", "foo/", "--prefix", "-w", "json"]))["count"], 3, "the other branch ran");

    // A watch from a past revision replays, then follows, with previous values.
    let w = Running::start(e, &["watch", "foo/", "--prefix", "--prev-kv", &format!("--rev={first}")], false);
    w.expect_lines(&["PUT", "foo/a", "1"], Duration::from_secs(10));
    ok(e, &["put", "foo/b", "two"]);
    w.expect_lines(&["PUT", "foo/b", "2", "foo/b", "two"], Duration::from_secs(10));
    drop(w);
    // Interactive: watch commands on standard input.
    let mut wi = Running::start(e, &["watch", "-i"], true);
    wi.write("watch live/ --prefix\n");
    std::thread::sleep(Duration::from_millis(500));
    ok(e, &["put", "live/x", "1"]);
    wi.expect_lines(&["PUT", "live/x", "1"], Duration::from_secs(10));
    drop(wi);

    // Deletes, with the previous values.
    assert_eq!(ok(e, &["del", "foo/", "--prefix", "--prev-kv"]).lines().next(), Some("3"));
    assert_eq!(ok(e, &["get", "foo/", "--prefix"]), "");

    // Compaction: reads below it are refused with etcd's message.
    let now = revision(&ok(e, &["put", "z", "1", "-w", "json"]));
    assert!(ok(e, &["compaction", &now.to_string()]).contains(&format!("compacted revision {now}")));
    let out = etcdctl(e, &["get", "z", &format!("--rev={first}")], None);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("required revision has been compacted"), "{out:?}");
}

#[test]
fn etcdctl_leases_locks_and_elections() {
    let (_cluster, addrs) = start();
    let all = addrs.join(",");
    let e = all.as_str();
    let granted = ok(e, &["lease", "grant", "30"]);
    let id = granted.split_whitespace().nth(1).expect("lease <id> granted").to_string();
    ok(e, &["put", "svc/a", "1", &format!("--lease={id}")]);
    let ttl = ok(e, &["lease", "timetolive", &id, "--keys"]);
    assert!(ttl.contains("granted with TTL(30s)") && ttl.contains("attached keys([svc/a])"), "{ttl}");
    assert!(ok(e, &["lease", "list"]).contains(&id));
    assert!(ok(e, &["lease", "keep-alive", "--once", &id]).contains("keepalived with TTL(30)"));
    assert!(ok(e, &["lease", "revoke", &id]).contains("revoked"));
    assert_eq!(ok(e, &["get", "svc/a"]), "", "the lease's key went with it");
    assert!(ok(e, &["lease", "timetolive", &id]).contains("already expired"));

    // Two processes compete for one lock: their critical sections never
    // overlap.
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("held");
    let section =
        |name: &str| format!("echo start {name} >> {f}; sleep 1; echo end {name} >> {f}", f = file.display());
    let a = Running::start(e, &["lock", "L", "--", "sh", "-c", &section("a")], false);
    let b = Running::start(e, &["lock", "L", "--", "sh", "-c", &section("b")], false);
    for mut p in [a, b] {
        let deadline = Instant::now() + Duration::from_secs(20);
        while p.child.try_wait().expect("wait").is_none() {
            assert!(Instant::now() < deadline, "a lock holder never finished");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    let held = std::fs::read_to_string(&file).expect("the lock holders wrote");
    let lines: Vec<&str> = held.lines().collect();
    assert_eq!(lines.len(), 4, "{held}");
    assert!(
        lines[0].starts_with("start") && lines[1] == lines[0].replace("start", "end"),
        "one holder at a time: {held}"
    );

    // Two candidates: the first leads; when it dies, the second does.
    let mut alice = Running::start(e, &["elect", "E", "alice"], false);
    alice.expect_lines(&["alice"], Duration::from_secs(10));
    let bob = Running::start(e, &["elect", "E", "bob"], false);
    // `elect -l` observes: it prints each new leader's value.
    let observer = Running::start(e, &["elect", "-l", "E"], false);
    observer.expect_lines(&["alice"], Duration::from_secs(10));
    // Ctrl+C: etcdctl resigns (revokes its session) before it exits.
    util::signal(alice.child.id(), libc::SIGINT);
    bob.expect_lines(&["bob"], Duration::from_secs(20));
    observer.expect_lines(&["bob"], Duration::from_secs(10));
    let _ = alice.child.wait();
}

#[test]
fn etcdctl_members_status_and_health() {
    let (mut cluster, addrs) = start();
    let all = addrs.join(",");
    let e = all.as_str();
    let list = json(&ok(e, &["member", "list", "-w", "json"]));
    assert_eq!(list["members"].as_array().map(Vec::len), Some(3));
    let status = ok(e, &["endpoint", "status", "-w", "json"]);
    let status = json(&status);
    let leaders: Vec<u64> = status
        .as_array()
        .expect("one status per endpoint")
        .iter()
        .map(|s| s["Status"]["leader"].as_u64().expect("leader"))
        .collect();
    assert_eq!(leaders.len(), 3);
    assert!(leaders.windows(2).all(|w| w[0] == w[1] && w[0] != 0), "{leaders:?}");
    let health = etcdctl(e, &["endpoint", "health"], None);
    assert!(health.status.success(), "{health:?}");
    assert_eq!(
        String::from_utf8_lossy(&health.stderr).matches("is healthy").count()
            + String::from_utf8_lossy(&health.stdout).matches("is healthy").count(),
        3
    );

    // Add a learner with etcdctl, start it, promote it, remove it.
    let port = util::free_ports(1)[0];
    let peer = format!("127.0.0.1:{port}");
    let added = ok(e, &["member", "add", "m4", &format!("--peer-urls=http://{peer}"), "--learner"]);
    assert!(added.contains("Member") && added.contains("added"), "{added}");
    cluster.join_member_at(4, 1, false, peer.clone(), None);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let out = etcdctl(e, &["member", "promote", "4"], None);
        if out.status.success() {
            break;
        }
        assert!(Instant::now() < deadline, "member 4 never promoted: {out:?}\n{}", cluster.logs());
        std::thread::sleep(Duration::from_millis(300));
    }
    let list = json(&ok(e, &["member", "list", "-w", "json"]));
    let m4 = list["members"].as_array().expect("members").iter().find(|m| m["ID"] == 4).cloned();
    assert_eq!(
        m4.as_ref().map(|m| m.get("isLearner").is_none() || m["isLearner"] == false),
        Some(true),
        "{list}"
    );
    assert!(ok(e, &["member", "remove", "4"]).contains("removed"));
    cluster.kill(4);
    let list = json(&ok(e, &["member", "list", "-w", "json"]));
    assert_eq!(list["members"].as_array().map(Vec::len), Some(3));
}

#[test]
fn etcdctl_check_perf_passes() {
    if std::env::var("GRAFT_ETCDCTL_PERF").is_err() {
        eprintln!("etcdctl check perf runs for a minute: set GRAFT_ETCDCTL_PERF=1 to run it");
        return;
    }
    let (_cluster, addrs) = start();
    let out = etcdctl(&addrs.join(","), &["check", "perf", "--load=s"], None);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.contains("PASS"),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
