//! `graft-cli lease` and `put --lease` against a real cluster.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::util::{cli_bin, start_cluster, CliCluster};

/// Ctrl+C.
const SIGINT: i32 = 2;

#[test]
fn leases_from_the_command_line() {
    let cluster = start_cluster(3);
    cluster.wait_leader_blocking(Duration::from_secs(20));
    let grant = cluster.cli(&["lease", "grant", "3s"]);
    assert_eq!(grant.code, 0, "{grant:?}");
    let id = grant.stdout.trim().to_owned();
    id.parse::<u64>().unwrap_or_else(|_| panic!("grant prints the id: {grant:?}"));
    assert_eq!(cluster.cli(&["put", "svc/a", "10.0.0.1", "--lease", &id]).code, 0);
    let ttl = cluster.cli(&["lease", "ttl", &id]);
    assert!(ttl.stdout.starts_with(&format!("lease {id}: TTL 3000 ms, ")), "{ttl:?}");
    assert!(ttl.stdout.ends_with("keys: svc/a\n"), "{ttl:?}");
    let j = cluster.cli(&["--output", "json", "lease", "list"]).json();
    assert_eq!(j["leases"][0]["id"].as_u64().map(|v| v.to_string()), Some(id.clone()), "{j}");
    let once = cluster.cli(&["lease", "keepalive", &id, "--once"]);
    assert_eq!(
        (once.code, once.stdout.clone()),
        (0, format!("lease {id} renewed for 3000 ms\n")),
        "{once:?}"
    );

    // keepalive streams renewals until Ctrl+C, and the key outlives the TTL.
    let endpoints = cluster.endpoints_arg();
    let mut child = Command::new(cli_bin())
        .args(["--endpoints", &endpoints, "lease", "keepalive", &id])
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn graft-cli lease keepalive");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    for _ in 0..4 {
        let line = lines.next().expect("a renewal").expect("utf-8");
        assert_eq!(line, format!("lease {id} renewed for 3000 ms"));
    }
    assert_eq!(cluster.cli(&["get", "svc/a"]).stdout, "10.0.0.1\n", "kept alive past its TTL");
    graft_testkit::signal(child.id(), SIGINT);
    assert_eq!(child.wait().expect("wait").code(), Some(0));

    // Revoke: the key goes with it; the lease is then gone (exit 1).
    let revoke = cluster.cli(&["lease", "revoke", &id]);
    assert_eq!((revoke.code, revoke.stdout.clone()), (0, format!("revoked lease {id} (1 key deleted)\n")));
    assert_eq!(cluster.cli(&["get", "svc/a"]).code, 1);
    let gone = cluster.cli(&["lease", "ttl", &id]);
    assert_eq!(gone.code, 1, "{gone:?}");
    assert!(gone.stderr.contains("not found"), "{gone:?}");
    let once = cluster.cli(&["lease", "keepalive", &id, "--once"]);
    assert_eq!(once.code, 1, "{once:?}");
    // Bad input.
    assert_eq!(cluster.cli(&["lease", "grant", "0s"]).code, 2);
    let r = cluster.cli(&["put", "k", "v", "--lease", "424242"]);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stderr.contains("lease 424242 not found"), "{r:?}");
    assert_eq!(cluster.cli(&["get", "k"]).code, 1, "nothing written");
}
