//! `graft-cli verify` against a real cluster: linearizable, in plain and
//! JSON, from standard input; its keys cleared before and deleted after,
//! other keys untouched; an unreachable cluster exits 3; bad options exit 2.

use std::time::Duration;

use serde_json::json;

use crate::util::{free_ports, run_cli, start_cluster, CliCluster};

/// The prefix of a run with `seed`.
fn prefix(seed: u64) -> String {
    format!("graft-verify/{seed:016x}/")
}

/// `linearizable: N operations (...) on K keys in T, seed S`: N.
fn operations(line: &str) -> u64 {
    line.strip_prefix("linearizable: ")
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("not a linearizable line: {line:?}"))
}

#[test]
fn a_live_cluster_is_linearizable_and_keeps_no_keys() {
    let cluster = start_cluster(3);
    cluster.wait_leader_blocking(Duration::from_secs(20));
    // A user's key, and a key left under the prefix of seed 7 (by an
    // interrupted run): the run must start from absent keys all the same.
    assert_eq!(cluster.cli(&["put", "user/a", "1"]).code, 0);
    let leftover = format!("{}e0k0", prefix(7));
    assert_eq!(cluster.cli(&["put", &leftover, "left over"]).code, 0);

    let run = cluster.cli(&["verify", "--duration", "3s", "--seed", "7"]);
    assert_eq!(run.code, 0, "{run:?}\n{}", cluster.logs());
    assert_eq!(run.stdout.lines().count(), 1, "{run:?}");
    let line = run.stdout.trim_end();
    assert!(operations(line) > 0, "{run:?}");
    assert!(line.contains(" on 5 keys in ") && line.ends_with("s, seed 7"), "{run:?}");
    assert!(run.stderr.is_empty(), "no progress bar into a pipe: {run:?}");
    assert!(run.took >= Duration::from_secs(3), "{run:?}");

    // Its keys are gone; the user's key is untouched.
    let scan = cluster.cli(&["scan", "graft-verify/"]);
    assert_eq!((scan.code, scan.stdout.as_str()), (0, ""), "{scan:?}");
    assert_eq!(cluster.cli(&["get", "user/a"]).stdout, "1\n");

    // JSON, with other options; a random seed is reported.
    let run =
        cluster.cli(&["--output", "json", "verify", "--duration", "2s", "--clients", "3", "--keys", "2"]);
    assert_eq!(run.code, 0, "{run:?}");
    let j = run.json();
    assert_eq!(
        (j["command"].clone(), j["ok"].clone(), j["exit"].clone(), j["linearizable"].clone()),
        (json!("verify"), json!(true), json!(0), json!(true)),
        "{j}"
    );
    let ops = j["operations"].as_u64().unwrap_or_default();
    let ok_ops = j["ok_ops"].as_u64().unwrap_or_default();
    let unknown = j["unknown"].as_u64().unwrap_or(u64::MAX);
    let failed_reads = j["failed_reads"].as_u64().unwrap_or(u64::MAX);
    assert!(ok_ops > 0 && ops == ok_ops + unknown + failed_reads, "{j}");
    assert_eq!((j["keys"].clone(), j["clients"].clone()), (json!(2), json!(3)), "{j}");
    assert!(j["duration_ms"].as_u64().is_some_and(|ms| ms >= 2000), "{j}");
    let seed = j["seed"].as_u64().expect("a seed");
    assert_eq!(j["prefix"], json!(prefix(seed)));
    assert_eq!((j["violation"].clone(), j["error"].clone()), (json!(null), json!(null)), "{j}");
    assert_eq!(j["cleanup_error"], json!(null));

    // From standard input, among other commands: the worst code counts.
    let run = cluster.cli_input(&[], Some("verify --duration 1s --seed 9\nget user/a\nget nope\n"));
    assert_eq!(run.code, 1, "get nope exits 1: {run:?}");
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{run:?}");
    assert!(operations(lines[0]) > 0 && lines[0].ends_with("seed 9"), "{run:?}");
    assert_eq!(lines[1], "1");
    assert_eq!(run.stderr, "graft-cli: line 3: key not found: nope\n");
    assert_eq!(cluster.cli(&["scan", "graft-verify/"]).stdout, "");
}

#[test]
fn a_writer_outside_the_run_is_a_violation() {
    // End to end, without faking a bug: another client writes a value no
    // client of the run wrote into the run's key, so the clients read
    // something the history cannot explain.
    let cluster = start_cluster(3);
    cluster.wait_leader_blocking(Duration::from_secs(20));
    let key = format!("{}e0k0", prefix(13));
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let intruder = {
        let (stop, endpoints, key) = (stop.clone(), cluster.endpoints_arg(), key.clone());
        std::thread::spawn(move || {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                run_cli(&["--endpoints", &endpoints, "put", &key, "intruder"], None);
                std::thread::sleep(Duration::from_millis(20));
            }
        })
    };
    let run = cluster.cli(&["verify", "--duration", "3s", "--seed", "13", "--keys", "1"]);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let _ = intruder.join();
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.stdout.starts_with("NOT linearizable (seed 13):\n"), "{run:?}");
    assert!(run.stdout.contains(&format!("key {key:?} is not linearizable")), "{run:?}");
    assert!(run.stdout.contains("\"intruder\""), "{run:?}");
    let j = cluster.cli(&["--output", "json", "get", &key]).json();
    assert!(j["found"] == json!(false) || j["value"] == json!("intruder"), "{j}");
}

#[test]
fn an_unreachable_cluster_exits_3_and_names_the_endpoints() {
    let ports = free_ports(2);
    let endpoints = format!("127.0.0.1:{},127.0.0.1:{}", ports[0], ports[1]);
    let base = ["--endpoints", endpoints.as_str(), "--timeout", "500ms", "verify", "--duration", "1s"];
    let run = run_cli(&base, None);
    assert_eq!((run.code, run.stdout.as_str()), (3, ""), "{run:?}");
    assert_eq!(run.stderr.lines().count(), 1, "{run:?}");
    assert!(run.stderr.starts_with("graft-cli: error: verify: cluster unavailable"), "{run:?}");
    for p in &ports {
        assert!(run.stderr.contains(&format!("127.0.0.1:{p}")), "{run:?}");
    }
    // It gives up before starting the workload.
    assert!(run.took < Duration::from_secs(5), "{run:?}");

    let mut json = vec!["--output", "json"];
    json.extend_from_slice(&base);
    let run = run_cli(&json, None);
    assert_eq!(run.code, 3, "{run:?}");
    let j = run.json();
    assert_eq!(
        (j["command"].clone(), j["ok"].clone(), j["exit"].clone(), j["linearizable"].clone()),
        (json!("verify"), json!(false), json!(3), json!(null)),
        "{j}"
    );
    assert_eq!((j["operations"].clone(), j["violation"].clone()), (json!(0), json!(null)), "{j}");
    let error = j["error"].as_str().unwrap_or_default();
    assert!(
        error.starts_with("cluster unavailable") && error.contains(&format!("127.0.0.1:{}", ports[1])),
        "{j}"
    );
}

#[test]
fn bad_verify_options_exit_2() {
    for args in [
        &["verify", "--duration", "0s"][..],
        &["verify", "--duration", "soon"],
        &["verify", "--clients", "0"],
        &["verify", "--keys", "-1"],
        &["verify", "--seed", "x"],
        &["verify", "extra"],
    ] {
        let r = run_cli(args, None);
        assert_eq!(r.code, 2, "{args:?}: {r:?}");
        assert_eq!(r.stderr.lines().count(), 1, "{args:?}: {r:?}");
        assert!(r.stderr.starts_with("graft-cli: error: "), "{args:?}: {r:?}");
        assert!(r.stdout.is_empty(), "{args:?}: {r:?}");
    }
    let help = run_cli(&["verify", "--help"], None);
    assert_eq!(help.code, 0);
    assert!(help.stdout.contains("graft-verify/") && help.stdout.contains("--seed"), "{help:?}");
}
