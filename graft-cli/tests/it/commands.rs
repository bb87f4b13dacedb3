//! One-shot commands against a real cluster: every command, every exit
//! code, plain and JSON output.

use std::time::Duration;

use serde_json::json;

use crate::util::{free_ports, run_cli, start_cluster, CliCluster};

#[test]
fn every_command_in_plain_output_with_its_exit_code() {
    let cluster = start_cluster(3);
    let leader = cluster.wait_leader_blocking(Duration::from_secs(20));

    // put prints the write's revision; get prints the value alone.
    let put = cluster.cli(&["put", "greeting", "hello world"]);
    assert_eq!(put.code, 0, "{put:?}");
    let version: u64 = put.stdout.trim().parse().unwrap_or_else(|_| panic!("put prints a revision: {put:?}"));
    assert!(version > 0);
    let get = cluster.cli(&["get", "greeting"]);
    assert_eq!((get.code, get.stdout.as_str(), get.stderr.as_str()), (0, "hello world\n", ""));

    // A missing key: exit 1, nothing on stdout, one line on stderr.
    let missing = cluster.cli(&["get", "nope"]);
    assert_eq!((missing.code, missing.stdout.as_str()), (1, ""), "{missing:?}");
    assert_eq!(missing.stderr, "graft-cli: key not found: nope\n");

    // cas on the value: swaps, then a stale expectation does not (exit 1).
    let cas = cluster.cli(&["cas", "greeting", "hello world", "bonjour"]);
    assert_eq!(cas.code, 0, "{cas:?}");
    assert!(cas.stdout.starts_with("swapped (revision "), "{cas:?}");
    let cas = cluster.cli(&["cas", "greeting", "hello world", "hola"]);
    assert_eq!(cas.code, 1, "{cas:?}");
    assert!(cas.stdout.starts_with("not swapped: the value is \"bonjour\" (mod revision "), "{cas:?}");
    assert!(cas.stdout.ends_with(", version 2)\n"), "two writes in this life of the key: {cas:?}");
    assert_eq!(cluster.cli(&["get", "greeting"]).stdout, "bonjour\n");

    // cas on the mod revision, the version, and on absence.
    let v: u64 = cluster.cli(&["put", "counter", "1"]).stdout.trim().parse().expect("revision");
    let stale = (v - 1).to_string();
    let cas = cluster.cli(&["cas", "counter", "2", "--mod-revision", &stale]);
    assert_eq!(cas.code, 1, "{cas:?}");
    let cas = cluster.cli(&["cas", "counter", "2", "--mod-revision", &v.to_string()]);
    assert_eq!(cas.code, 0, "{cas:?}");
    assert_eq!(cluster.cli(&["get", "counter"]).stdout, "2\n");
    let cas = cluster.cli(&["cas", "counter", "3", "--version", "1"]);
    assert_eq!(cas.code, 1, "counter was written twice: {cas:?}");
    let cas = cluster.cli(&["cas", "counter", "3", "--version", "2"]);
    assert_eq!(cas.code, 0, "{cas:?}");
    let cas = cluster.cli(&["cas", "counter", "4", "--absent"]);
    assert_eq!((cas.code, cas.stdout.starts_with("not swapped")), (1, true), "{cas:?}");
    let cas = cluster.cli(&["cas", "fresh", "new", "--absent"]);
    assert_eq!(cas.code, 0, "{cas:?}");
    let cas = cluster.cli(&["cas", "fresh2", "new", "--version", "0"]);
    assert_eq!(cas.code, 0, "version 0 means absent: {cas:?}");
    let cas = cluster.cli(&["cas", "nothing-here", "old", "new"]);
    assert_eq!((cas.code, cas.stdout.as_str()), (1, "not swapped: the key is absent\n"), "{cas:?}");

    // delete: exit 0 then 1.
    let del = cluster.cli(&["delete", "fresh2"]);
    assert_eq!((del.code, del.stdout.as_str()), (0, "deleted\n"), "{del:?}");
    let del = cluster.cli(&["delete", "fresh2"]);
    assert_eq!((del.code, del.stderr.as_str()), (1, "graft-cli: key not found: fresh2\n"), "{del:?}");
    assert_eq!(cluster.cli(&["get", "fresh2"]).code, 1);

    // scan: KEY<TAB>VALUE in key order, --limit, other prefixes left out.
    for (k, v) in [("user/b", "2"), ("user/a", "1"), ("user/c", "3"), ("users", "x")] {
        assert_eq!(cluster.cli(&["put", k, v]).code, 0);
    }
    let scan = cluster.cli(&["scan", "user/"]);
    assert_eq!((scan.code, scan.stdout.as_str()), (0, "user/a\t1\nuser/b\t2\nuser/c\t3\n"), "{scan:?}");
    let scan = cluster.cli(&["scan", "user/", "--limit", "2"]);
    assert_eq!(scan.stdout, "user/a\t1\nuser/b\t2\n");
    let scan = cluster.cli(&["scan", "zzz"]);
    assert_eq!((scan.code, scan.stdout.as_str()), (0, ""));

    // status: one row per member, all reachable, the leader named.
    let status = cluster.cli(&["status"]);
    assert_eq!(status.code, 0, "{status:?}");
    let lines: Vec<&str> = status.stdout.lines().collect();
    assert_eq!(lines.len(), 5, "header, 3 members, leader line: {status:?}");
    assert!(lines[0].starts_with("ID") && lines[0].contains("LOG") && lines[0].ends_with("REACHABLE"));
    for (i, line) in lines[1..4].iter().enumerate() {
        let cells: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(cells[0], (i + 1).to_string(), "{line}");
        assert_eq!(cells[1], cluster.addr(i as u64 + 1));
        assert_eq!(cells[2], if i as u64 + 1 == leader { "Leader" } else { "Follower" }, "{line}");
        assert_eq!(cells[8], "yes", "{line}");
    }
    assert_eq!(lines[4], format!("leader: member {leader} at {}", cluster.addr(leader)));

    // leader transfer to a follower.
    let to = if leader == 1 { 2 } else { 1 };
    let t = cluster.cli(&["leader", "transfer", &to.to_string()]);
    assert_eq!((t.code, t.stdout.clone()), (0, format!("leader is now member {to}\n")), "{t:?}");
    assert_eq!(cluster.wait_leader_blocking(Duration::from_secs(10)), to);
    // Writes still work, through the new leader.
    assert_eq!(cluster.cli(&["put", "after-transfer", "ok"]).code, 0);
    let t = cluster.cli(&["leader", "transfer", "9"]);
    assert_eq!(t.code, 2, "not a member: an invalid request: {t:?}");
    assert!(t.stderr.starts_with("graft-cli: error: leader transfer 9: invalid request"), "{t:?}");
}

#[test]
fn stale_reads_come_from_the_member_addressed_and_work_without_a_majority() {
    let mut cluster = start_cluster(3);
    let leader = cluster.wait_leader_blocking(Duration::from_secs(20));
    assert_eq!(cluster.cli(&["put", "k", "v1"]).code, 0);
    let follower = if leader == 1 { 2 } else { 1 };
    let other = (1..=3).find(|i| *i != leader && *i != follower).expect("a third member");
    let at_follower = cluster.addr(follower);

    // Eventually the follower has applied the write and serves it itself.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let r = run_cli(&["--endpoints", &at_follower, "get", "k", "--stale"], None);
        if r.code == 0 {
            assert_eq!(r.stdout, "v1\n");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the follower never served k: {r:?}");
        std::thread::sleep(Duration::from_millis(50));
    }

    // With the leader and one follower gone there is no majority: a
    // linearizable read fails (exit 3, endpoints listed), a stale one works.
    cluster.kill(leader);
    cluster.kill(other);
    let r = run_cli(&["--endpoints", &at_follower, "--timeout", "700ms", "get", "k"], None);
    assert_eq!(r.code, 3, "{r:?}");
    assert!(r.stderr.contains(&at_follower) && !r.stderr.contains("outcome unknown"), "{r:?}");
    let r = run_cli(&["--endpoints", &at_follower, "--timeout", "700ms", "get", "k", "--stale"], None);
    assert_eq!((r.code, r.stdout.as_str()), (0, "v1\n"), "{r:?}");
    let r = run_cli(&["--endpoints", &at_follower, "--timeout", "700ms", "scan", "", "--stale"], None);
    assert_eq!((r.code, r.stdout.as_str()), (0, "k\tv1\n"), "{r:?}");

    // status still answers, marks the dead members unreachable, exit 0.
    let r = cluster.cli(&["status"]);
    assert_eq!(r.code, 0, "{r:?}");
    let unreachable = r.stdout.lines().filter(|l| l.contains("no (")).count();
    assert_eq!(unreachable, 2, "{r:?}");
}

#[test]
fn json_output_is_one_object_per_command() {
    let cluster = start_cluster(3);
    let leader = cluster.wait_leader_blocking(Duration::from_secs(20));
    let json = |args: &[&str]| {
        let mut all = vec!["--output", "json"];
        all.extend_from_slice(args);
        let r = cluster.cli(&all);
        (r.code, r.json())
    };

    let (code, put) = json(&["put", "k", "héllo wörld"]);
    assert_eq!(code, 0);
    let version = put["revision"].as_u64().expect("revision");
    assert_eq!(put, json!({"command": "put", "ok": true, "exit": 0, "key": "k", "revision": version}));

    let (code, get) = json(&["get", "k"]);
    assert_eq!(code, 0);
    let read_at = get["revision"].as_u64().expect("the revision read");
    assert!(read_at >= version, "{get}");
    assert_eq!(
        get,
        json!({"command": "get", "ok": true, "exit": 0, "key": "k", "found": true, "value": "héllo wörld",
               "create_revision": version, "mod_revision": version, "version": 1, "revision": read_at})
    );
    let (code, get) = json(&["get", "absent"]);
    assert_eq!((code, get["found"].clone(), get["ok"].clone()), (1, json!(false), json!(false)));

    let (code, cas) = json(&["cas", "k", "nope", "x"]);
    assert_eq!(code, 1);
    assert_eq!(cas["swapped"], json!(false));
    assert_eq!(
        cas["current"],
        json!({"value": "héllo wörld", "create_revision": version, "mod_revision": version, "version": 1})
    );
    let (code, cas) = json(&["cas", "k", "x", "--mod-revision", &version.to_string()]);
    assert_eq!((code, cas["swapped"].clone(), cas["current"]["value"].clone()), (0, json!(true), json!("x")));

    let (_, scan) = json(&["scan", "k"]);
    assert_eq!(
        scan["items"],
        json!([{"key": "k", "value": "x", "create_revision": version,
                "mod_revision": cas["current"]["mod_revision"], "version": 2}])
    );

    let (code, del) = json(&["delete", "k"]);
    assert_eq!((code, del["deleted"].clone()), (0, json!(true)));
    let (code, del) = json(&["delete", "k"]);
    assert_eq!((code, del["deleted"].clone(), del["previous"].clone()), (1, json!(false), json!(null)));

    let (code, status) = json(&["status"]);
    assert_eq!(code, 0);
    assert_eq!(status["leader"]["id"], json!(leader));
    let members = status["members"].as_array().expect("members");
    assert_eq!(members.len(), 3);
    for m in members {
        assert_eq!(m["reachable"], json!(true), "{m}");
        let (first, last) = (m["first_index"].as_u64().unwrap_or(0), m["last_index"].as_u64().unwrap_or(0));
        assert_eq!(m["log_entries"].as_u64(), Some(last + 1 - first), "{m}");
        assert!(m["commit"].as_u64() >= Some(version) && m["term"].as_u64() >= Some(1), "{m}");
    }

    // Given one endpoint, status finds the other members through its member list.
    let one = cluster.addr(1);
    let r = run_cli(&["--endpoints", &one, "--output", "json", "status"], None);
    assert_eq!(r.code, 0, "{r:?}");
    let members = r.json()["members"].as_array().cloned().unwrap_or_default();
    let ids: Vec<u64> = members.iter().filter_map(|m| m["id"].as_u64()).collect();
    assert_eq!(ids, [1, 2, 3], "{r:?}");
    assert!(members.iter().all(|m| m["reachable"] == json!(true)), "{r:?}");

    // A usage error in JSON mode is a JSON line too (and a line on stderr).
    let r = cluster.cli(&["--output", "json", "cas", "k", "only-one"]);
    assert_eq!(r.code, 2);
    let j = r.json();
    assert_eq!(
        (j["ok"].clone(), j["exit"].clone(), j["command"].clone()),
        (json!(false), json!(2), json!(null))
    );
    assert!(r.stderr.starts_with("graft-cli: error: cas takes"), "{r:?}");
}

#[test]
fn an_unreachable_cluster_exits_3_and_lists_the_endpoints_tried() {
    let ports = free_ports(2);
    let endpoints = format!("127.0.0.1:{},127.0.0.1:{}", ports[0], ports[1]);
    let base = ["--endpoints", endpoints.as_str(), "--timeout", "400ms"];
    let with = |args: &[&str]| {
        let mut all = base.to_vec();
        all.extend_from_slice(args);
        run_cli(&all, None)
    };

    let put = with(&["put", "k", "v"]);
    assert_eq!((put.code, put.stdout.as_str()), (3, ""), "{put:?}");
    assert_eq!(put.stderr.lines().count(), 1, "one line: {put:?}");
    assert!(
        put.stderr.starts_with("graft-cli: error: put k: write outcome unknown: cluster unavailable"),
        "{put:?}"
    );
    for p in &ports {
        assert!(put.stderr.contains(&format!("127.0.0.1:{p}")), "lists every endpoint tried: {put:?}");
    }
    assert!(put.took >= Duration::from_millis(400) && put.took < Duration::from_secs(5), "{put:?}");

    let get = with(&["get", "k"]);
    assert_eq!(get.code, 3, "{get:?}");
    assert!(get.stderr.contains("cluster unavailable") && !get.stderr.contains("outcome unknown"), "{get:?}");
    assert!(get.stderr.contains(&format!("127.0.0.1:{}", ports[0])), "{get:?}");

    let status = with(&["status"]);
    assert_eq!(status.code, 3, "{status:?}");
    assert!(
        status.stderr.starts_with("graft-cli: error: status: cluster unavailable: no member answered"),
        "{status:?}"
    );
    assert!(status.stderr.contains(&format!("127.0.0.1:{}", ports[1])), "{status:?}");
    let list = with(&["member", "list"]);
    assert_eq!(list.code, 3, "{list:?}");
    assert!(
        list.stderr.starts_with("graft-cli: error: member list: cluster unavailable: no member answered"),
        "{list:?}"
    );

    // A membership change that got no answer may or may not have happened.
    let remove = with(&["--output", "json", "member", "remove", "2"]);
    assert_eq!(remove.code, 3, "{remove:?}");
    assert!(
        remove.stderr.starts_with(
            "graft-cli: error: member remove 2: membership change outcome unknown: cluster unavailable"
        ),
        "{remove:?}"
    );
    let j = remove.json();
    assert_eq!(
        (j["command"].clone(), j["exit"].clone(), j["outcome_unknown"].clone()),
        (json!("member remove"), json!(3), json!(true))
    );

    let cas = with(&["--output", "json", "cas", "k", "a", "b"]);
    assert_eq!(cas.code, 3);
    let j = cas.json();
    assert_eq!(
        (j["exit"].clone(), j["outcome_unknown"].clone(), j["command"].clone()),
        (json!(3), json!(true), json!("cas"))
    );

    // GRAFT_ENDPOINTS is read when --endpoints is not given.
    let out = std::process::Command::new(crate::util::cli_bin())
        .args(["--timeout", "200ms", "get", "k"])
        .env("GRAFT_ENDPOINTS", &endpoints)
        .output()
        .expect("run graft-cli");
    assert_eq!(out.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&out.stderr).contains(&format!("127.0.0.1:{}", ports[1])));
}

#[test]
fn usage_errors_exit_2_with_one_line() {
    for args in [
        &["put", "k"][..],
        &["frobnicate"],
        &["cas", "k", "new"],
        &["scan", "--limit", "ten"],
        &["--timeout", "5", "get", "k"],
        &["--endpoints", "nohostport", "get", "k"],
        &["leader"],
        &["get", "k", "extra"],
        &["member"],
        &["member", "add", "4"],
        &["member", "add", "0", "127.0.0.1:1"],
        &["member", "add", "4", "nohostport"],
        &["member", "remove", "four"],
        &["member", "promote"],
        &["member", "list", "extra"],
    ] {
        let r = run_cli(args, None);
        assert_eq!(r.code, 2, "{args:?}: {r:?}");
        assert_eq!(r.stderr.lines().count(), 1, "{args:?}: {r:?}");
        assert!(r.stderr.starts_with("graft-cli: error: "), "{args:?}: {r:?}");
        assert!(r.stdout.is_empty(), "{args:?}: {r:?}");
    }
    let r = run_cli(&["put", "k"], None);
    assert!(r.stderr.contains("<VALUE>") && r.stderr.contains("usage: graft-cli put <KEY> <VALUE>"), "{r:?}");

    let help = run_cli(&["--help"], None);
    assert_eq!(help.code, 0);
    for needle in [
        "get",
        "put",
        "delete",
        "cas",
        "scan",
        "status",
        "leader",
        "member",
        "--endpoints",
        "--timeout",
        "--output",
    ] {
        assert!(help.stdout.contains(needle), "--help mentions {needle}");
    }
    assert!(help.stdout.contains("3  cluster unavailable or timed out; for a write or a membership change"));
    let help = run_cli(&["help", "cas"], None);
    assert_eq!(help.code, 0);
    assert!(help.stdout.contains("--absent") && help.stdout.contains("--version <V>"), "{help:?}");
    let help = run_cli(&["help", "member", "add"], None);
    assert_eq!(help.code, 0);
    assert!(
        help.stdout.contains("--learner") && help.stdout.contains("graft-kv serve --id ID --join"),
        "{help:?}"
    );
}
