//! `graft-cli watch` against a real cluster: history then live changes,
//! plain and JSON, stopped by Ctrl+C with exit 0; a compacted start is a
//! clear error.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::util::{cli_bin, start_cluster, CliCluster};

/// Ctrl+C.
const SIGINT: i32 = 2;

#[test]
fn watch_prints_history_then_live_changes_until_ctrl_c() {
    let cluster = start_cluster(3);
    cluster.wait_leader_blocking(Duration::from_secs(20));
    let first: u64 = cluster.cli(&["put", "w/a", "1"]).stdout.trim().parse().expect("revision");
    cluster.cli(&["put", "w/b", "2"]);
    cluster.cli(&["put", "other", "x"]);
    let endpoints = cluster.endpoints_arg();
    let from = first.to_string();
    let mut child = Command::new(cli_bin())
        .args([
            "--endpoints",
            &endpoints,
            "watch",
            "w/",
            "--prefix",
            "--from-revision",
            &from,
            "--prev-value",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn graft-cli watch");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let mut next = || lines.next().expect("a line").expect("utf-8");
    assert_eq!(next(), "PUT w/a 1");
    assert_eq!(next(), "PUT w/b 2");
    cluster.cli(&["put", "w/a", "3"]);
    assert_eq!(next(), "PUT w/a 3 (previous: 1)");
    cluster.cli(&["delete", "--prefix", "w/"]);
    let mut deleted = vec![next(), next()];
    deleted.sort();
    assert_eq!(deleted, ["DELETE w/a (previous: 3)", "DELETE w/b (previous: 2)"]);
    graft_testkit::signal(child.id(), SIGINT);
    let status = child.wait().expect("wait");
    assert_eq!(status.code(), Some(0), "Ctrl+C ends a watch normally");

    // JSON, one object per change.
    let mut child = Command::new(cli_bin())
        .args(["--endpoints", &endpoints, "--output", "json", "watch", "j"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    // The watch starts from now: wait until it is registered by writing
    // until the first change shows (each write's revision grows).
    std::thread::sleep(Duration::from_millis(300));
    let rev: u64 = cluster.cli(&["put", "j", "v"]).stdout.trim().parse().expect("revision");
    let line = lines.next().expect("a line").expect("utf-8");
    let j: serde_json::Value = serde_json::from_str(&line).expect("json");
    assert_eq!(
        (j["type"].as_str(), j["key"].as_str(), j["value"].as_str()),
        (Some("PUT"), Some("j"), Some("v"))
    );
    assert_eq!(j["revision"].as_u64(), Some(rev));
    graft_testkit::signal(child.id(), SIGINT);
    assert_eq!(child.wait().expect("wait").code(), Some(0));

    // Below the compaction point: a clear error, exit 2.
    let now: u64 = cluster.cli(&["put", "w/c", "4"]).stdout.trim().parse().expect("revision");
    assert_eq!(cluster.cli(&["compact", &now.to_string()]).code, 0);
    let r = cluster.cli(&["watch", "w/", "--prefix", "--from-revision", &first.to_string()]);
    assert_eq!(r.code, 2, "{r:?}");
    assert!(r.stderr.contains(&format!("the oldest revision available is {now}")), "{r:?}");
}
