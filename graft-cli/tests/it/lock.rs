//! The lock checker: contenders take `graft-cli lock` and append to a
//! shared log under the lock, each append fenced by the lock's token (a
//! transaction comparing the holder's key); one holder is frozen past its
//! TTL. Checked: every append of a holder that finished is there, and in
//! revision order the tokens never go back (no two holders interleave,
//! and the frozen one's late appends were refused).

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::util::{cli_bin, start_cluster, CliCluster};

const SIGSTOP: i32 = 19;
const SIGCONT: i32 = 18;

/// The command each holder runs: three fenced appends, `$PAUSE` apart.
const APPEND: &str = r#"for i in 1 2 3; do "$GRAFT_CLI" txn --compare "create($GRAFT_LOCK_KEY) = $GRAFT_LOCK_REVISION" --success "put log/$(printf %020d $GRAFT_LOCK_REVISION)/$i x" > /dev/null || exit 1; sleep $PAUSE; done"#;

fn locker(endpoints: &str, pause: &str) -> std::process::Child {
    Command::new(cli_bin())
        .args(["lock", "L", "--ttl", "1s", "--", "sh", "-c", APPEND])
        .env("PAUSE", pause)
        .env("GRAFT_ENDPOINTS", endpoints)
        .env("GRAFT_CLI", cli_bin())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn graft-cli lock")
}

#[test]
fn holders_never_overlap_and_a_frozen_holder_is_fenced_off() {
    let cluster = start_cluster(3);
    cluster.wait_leader_blocking(Duration::from_secs(20));
    let endpoints = cluster.endpoints_arg();
    // The victim takes the lock first, then is frozen while its command
    // goes on appending: its lease expires and its later appends fail.
    let mut victim = locker(&endpoints, "0.8");
    let mut out = BufReader::new(victim.stdout.take().expect("stdout")).lines();
    let first = out.next().expect("a line").expect("utf-8");
    assert!(first.starts_with("locked L at revision "), "{first}");
    graft_testkit::signal(victim.id(), SIGSTOP);
    let others: Vec<_> = (0..3).map(|_| locker(&endpoints, "0.1")).collect();
    std::thread::sleep(Duration::from_secs(3));
    graft_testkit::signal(victim.id(), SIGCONT);
    let mut finished = Vec::new();
    for child in others {
        let out = child.wait_with_output().expect("wait");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert_eq!(out.status.code(), Some(0), "{text} {}", String::from_utf8_lossy(&out.stderr));
        let token: u64 = text.trim().rsplit(' ').next().and_then(|t| t.parse().ok()).expect("a token");
        finished.push(token);
    }
    let _ = victim.wait();
    // The log, in revision order.
    let scan = cluster.cli(&["--output", "json", "scan", "log/"]).json();
    let mut appends: Vec<(u64, u64, String)> = scan["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|i| {
            let key = i["key"].as_str().expect("key").to_owned();
            let token: u64 = key[4..24].parse().expect("token");
            (i["mod_revision"].as_u64().expect("rev"), token, key)
        })
        .collect();
    appends.sort();
    let tokens: Vec<u64> = appends.iter().map(|a| a.1).collect();
    assert!(tokens.windows(2).all(|w| w[0] <= w[1]), "holders interleaved: {appends:?}");
    for t in &finished {
        let mine: Vec<&str> = appends.iter().filter(|a| a.1 == *t).map(|a| &a.2[25..]).collect();
        assert_eq!(mine, ["1", "2", "3"], "holder {t} lost an append: {appends:?}");
    }
    let victim_token: u64 = first.rsplit(' ').next().and_then(|t| t.parse().ok()).expect("token");
    let late = appends.iter().filter(|a| a.1 == victim_token).count();
    assert!(late < 3, "the frozen holder's appends after its lease expired were refused: {appends:?}");
}
