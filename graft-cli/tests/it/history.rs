//! Revisions, past reads, prefix deletes, transactions and compaction
//! through graft-cli against a real cluster, with bad input refused and
//! nothing changed.

use std::time::Duration;

use serde_json::json;

use crate::util::{start_cluster, CliCluster};

fn revision_of(put: &crate::util::Run) -> u64 {
    put.stdout.trim().parse().unwrap_or_else(|_| panic!("put prints its revision: {put:?}"))
}

#[test]
fn past_revisions_prefix_deletes_and_compaction() {
    let cluster = start_cluster(3);
    cluster.wait_leader_blocking(Duration::from_secs(20));
    let r1 = revision_of(&cluster.cli(&["put", "cfg/a", "one"]));
    let r2 = revision_of(&cluster.cli(&["put", "cfg/a", "two"]));
    let r3 = revision_of(&cluster.cli(&["put", "cfg/b", "bee"]));
    assert!(r1 < r2 && r2 < r3, "revisions increase: {r1} {r2} {r3}");

    // The key as it stood at each revision, and its revision fields.
    assert_eq!(cluster.cli(&["get", "cfg/a", "--revision", &r1.to_string()]).stdout, "one\n");
    assert_eq!(cluster.cli(&["get", "cfg/a"]).stdout, "two\n");
    let before = cluster.cli(&["get", "cfg/b", "--revision", &r2.to_string()]);
    assert_eq!((before.code, before.stderr.as_str()), (1, "graft-cli: key not found: cfg/b\n"), "{before:?}");
    let j = cluster.cli(&["--output", "json", "get", "cfg/a"]).json();
    assert_eq!(
        (j["create_revision"].clone(), j["mod_revision"].clone(), j["version"].clone()),
        (json!(r1), json!(r2), json!(2))
    );
    let scan = cluster.cli(&["scan", "cfg/", "--revision", &r2.to_string()]);
    assert_eq!(scan.stdout, "cfg/a\ttwo\n", "{scan:?}");
    let future = cluster.cli(&["get", "cfg/a", "--revision", "999999"]);
    assert_eq!(future.code, 2, "{future:?}");
    assert!(future.stderr.contains("revision 999999 is in the future"), "{future:?}");

    // delete --prefix removes every key under the prefix, atomically.
    let del = cluster.cli(&["delete", "--prefix", "cfg/"]);
    assert_eq!((del.code, del.stdout.as_str()), (0, "deleted 2 keys\n"), "{del:?}");
    assert_eq!(cluster.cli(&["scan", "cfg/"]).stdout, "");
    let j = cluster.cli(&["--output", "json", "delete", "--prefix", "cfg/"]).json();
    assert_eq!(j["deleted"], json!(0));
    // History still has them.
    assert_eq!(
        cluster.cli(&["scan", "cfg/", "--revision", &r3.to_string()]).stdout,
        "cfg/a\ttwo\ncfg/b\tbee\n"
    );

    // A new life of the key starts at version 1.
    let r4 = revision_of(&cluster.cli(&["put", "cfg/a", "three"]));
    let j = cluster.cli(&["--output", "json", "get", "cfg/a"]).json();
    assert_eq!((j["create_revision"].clone(), j["version"].clone()), (json!(r4), json!(1)));

    // Compaction: reads below the point are refused and name the oldest
    // revision left; reads at or above it still answer.
    let c = cluster.cli(&["compact", &r3.to_string()]);
    assert_eq!(
        (c.code, c.stdout.clone()),
        (0, format!("compacted: revisions below {r3} are gone\n")),
        "{c:?}"
    );
    let gone = cluster.cli(&["get", "cfg/a", "--revision", &r2.to_string()]);
    assert_eq!(gone.code, 2, "{gone:?}");
    assert!(
        gone.stderr
            .contains(&format!("revision {r2} has been compacted; the oldest revision available is {r3}")),
        "{gone:?}"
    );
    assert_eq!(cluster.cli(&["get", "cfg/a", "--revision", &r3.to_string()]).stdout, "two\n");
    let again = cluster.cli(&["compact", &r2.to_string()]);
    assert_eq!(again.code, 2, "already compacted past it: {again:?}");
    let ahead = cluster.cli(&["compact", "999999"]);
    assert_eq!(ahead.code, 2, "{ahead:?}");
    assert_eq!(cluster.cli(&["compact", "0"]).code, 2);
    let status = cluster.cli(&["--output", "json", "status"]).json();
    assert!(status["members"].as_array().is_some_and(|m| !m.is_empty()), "{status}");
}

#[test]
fn transactions_from_arguments_and_standard_input() {
    let cluster = start_cluster(3);
    cluster.wait_leader_blocking(Duration::from_secs(20));
    // Take a lock if nobody holds it: the first succeeds, the second fails
    // (exit 1) and runs the failure branch, which reads the holder.
    let take = |who: &str| {
        let text = format!("mod(lock) = 0\n\nput lock {who}\nput owner {who}\n\nget lock\n");
        cluster.cli_input(&["txn"], Some(&text))
    };
    let first = take("alice");
    assert_eq!((first.code, first.stdout.as_str()), (0, "succeeded\nput lock\nput owner\n"), "{first:?}");
    let second = take("bob");
    assert_eq!((second.code, second.stdout.as_str()), (1, "failed\nalice\n"), "{second:?}");
    assert_eq!(cluster.cli(&["get", "owner"]).stdout, "alice\n");

    // Both writes landed at one revision.
    let lock = cluster.cli(&["--output", "json", "get", "lock"]).json();
    let owner = cluster.cli(&["--output", "json", "get", "owner"]).json();
    assert_eq!(lock["mod_revision"], owner["mod_revision"], "{lock} {owner}");

    // From arguments, JSON output: compare on value and version, delete a
    // prefix, and read in the same branch what it wrote.
    cluster.cli(&["put", "jobs/1", "x"]);
    cluster.cli(&["put", "jobs/2", "y"]);
    let r = cluster.cli(&[
        "--output",
        "json",
        "txn",
        "--compare",
        "value(owner) = alice",
        "--compare",
        "version(lock) > 0",
        "--success",
        "delete --prefix jobs/",
        "--success",
        "put done yes",
        "--success",
        "get done",
    ]);
    assert_eq!(r.code, 0, "{r:?}");
    let j = r.json();
    assert_eq!(j["succeeded"], json!(true));
    assert_eq!(j["results"][0], json!({"op": "delete prefix", "deleted": 2}));
    assert_eq!(j["results"][2]["kv"]["value"], json!("yes"), "a read sees the branch's earlier write: {j}");
    assert_eq!(cluster.cli(&["scan", "jobs/"]).stdout, "");
}

#[test]
fn bad_transactions_are_refused_and_change_nothing() {
    let cluster = start_cluster(3);
    cluster.wait_leader_blocking(Duration::from_secs(20));
    cluster.cli(&["put", "k", "v"]);
    for (input, says) in [
        ("", "empty transaction"),
        ("\n\n\n", "empty transaction"),
        ("size(k) = 1\n\nput k x\n", "unknown field"),
        ("mod(k) = 0\n\nput k a\nput k b\n", "more than once"),
        ("mod(k) = 0\n\nput k a\n\nget k\n\nget k\n", "at most three"),
        ("mod(k) = zero\n\nput k a\n", "not a number"),
        ("\n\nfrobnicate k\n", "operation"),
    ] {
        let r = cluster.cli_input(&["txn"], Some(input));
        assert_eq!(r.code, 2, "{input:?}: {r:?}");
        assert!(r.stderr.contains(says), "{input:?} should say {says:?}: {r:?}");
    }
    let many: String = (0..129).map(|i| format!("put k{i} v\n")).collect();
    let r = cluster.cli_input(&["txn"], Some(&format!("\n{many}")));
    assert_eq!(r.code, 2, "{r:?}");
    assert!(r.stderr.contains("over the limit of 128"), "{r:?}");
    let r = cluster.cli(&["txn", "--success", "put k"]);
    assert_eq!(r.code, 2, "{r:?}");
    // Nothing changed.
    assert_eq!(cluster.cli(&["get", "k"]).stdout, "v\n");
    assert_eq!(cluster.cli(&["get", "k0"]).code, 1);
}
