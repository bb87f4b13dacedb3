//! `member list`, `member add`, `member promote` and `member remove`
//! against a real cluster: the membership as the leader sees it, each
//! member's own answer, refused changes (exit 2, with the reason).

use std::time::Duration;

use serde_json::{json, Value};

use crate::util::{free_ports, start_cluster, CliCluster, Run};

/// The rows of a plain `member list` (header and leader line left out), as cells.
fn rows(r: &Run) -> Vec<Vec<String>> {
    let lines: Vec<&str> = r.stdout.lines().collect();
    assert!(lines.len() >= 2, "{r:?}");
    assert_eq!(
        lines[0].split_whitespace().collect::<Vec<_>>(),
        ["ID", "ADDRESS", "KIND", "ROLE", "TERM", "APPLIED", "REACHABLE"]
    );
    lines[1..lines.len() - 1].iter().map(|l| l.split_whitespace().map(str::to_owned).collect()).collect()
}

/// The leader line of a plain `member list`.
fn leader_line(r: &Run) -> &str {
    r.stdout.lines().last().unwrap_or_default()
}

#[test]
fn list_then_add_promote_and_remove_a_learner() {
    let mut cluster = start_cluster(3);
    let leader = cluster.wait_leader_blocking(Duration::from_secs(20));

    // Three voters, all answering, the leader named.
    let list = cluster.cli(&["member", "list"]);
    assert_eq!((list.code, list.stderr.as_str()), (0, ""), "{list:?}");
    let got = rows(&list);
    assert_eq!(got.len(), 3, "{list:?}");
    for (i, row) in got.iter().enumerate() {
        let id = i as u64 + 1;
        assert_eq!(row[..3], [id.to_string(), cluster.addr(id), "voter".to_owned()], "{list:?}");
        assert_eq!(row[3], if id == leader { "Leader" } else { "Follower" }, "{list:?}");
        assert!(row[4].parse::<u64>().is_ok_and(|t| t >= 1) && row[5].parse::<u64>().is_ok(), "{list:?}");
        assert_eq!(row[6], "yes", "{list:?}");
    }
    assert_eq!(leader_line(&list), format!("leader: member {leader} at {}", cluster.addr(leader)));

    // The same in JSON.
    let list = cluster.cli(&["--output", "json", "member", "list"]);
    assert_eq!(list.code, 0, "{list:?}");
    let j = list.json();
    assert_eq!(
        (j["command"].clone(), j["ok"].clone(), j["exit"].clone()),
        (json!("member list"), json!(true), json!(0))
    );
    assert_eq!(j["leader"], json!({"id": leader, "addr": cluster.addr(leader)}));
    let members = j["members"].as_array().cloned().unwrap_or_default();
    assert_eq!(members.len(), 3, "{j}");
    for (i, m) in members.iter().enumerate() {
        let id = i as u64 + 1;
        assert_eq!(
            (m["id"].clone(), m["addr"].clone(), m["voter"].clone()),
            (json!(id), json!(cluster.addr(id)), json!(true)),
            "{m}"
        );
        assert_eq!(
            (m["is_leader"].clone(), m["reachable"].clone()),
            (json!(id == leader), json!(true)),
            "{m}"
        );
        assert_eq!(m["role"], json!(if id == leader { "Leader" } else { "Follower" }), "{m}");
        assert!(m["term"].as_u64() >= Some(1) && m["applied"].as_u64().is_some(), "{m}");
    }

    // Add member 9 as a learner at an address where nothing listens.
    let nine = format!("127.0.0.1:{}", free_ports(1)[0]);
    let add = cluster.cli(&["member", "add", "9", &nine, "--learner"]);
    assert_eq!((add.code, add.stdout.as_str(), add.stderr.as_str()), (0, "member 9 added as learner\n", ""));
    let list = cluster.cli(&["member", "list"]);
    assert_eq!(list.code, 0, "{list:?}");
    let got = rows(&list);
    assert_eq!(got.len(), 4, "{list:?}");
    assert_eq!(got[3][..7], ["9", nine.as_str(), "learner", "-", "-", "-", "no"], "{list:?}");
    assert!(got[..3].iter().all(|r| r[2] == "voter" && r[6] == "yes"), "{list:?}");
    let j = cluster.cli(&["--output", "json", "member", "list"]).json();
    let m9 = &j["members"][3];
    assert_eq!(
        (m9["id"].clone(), m9["voter"].clone(), m9["reachable"].clone()),
        (json!(9), json!(false), json!(false)),
        "{j}"
    );
    assert!(m9["error"].as_str().is_some_and(|e| !e.is_empty()) && m9.get("role").is_none(), "{j}");

    // Promoting 9 would make four voters (quorum 3). With all three others
    // live that is allowed, so stop a follower first: then only two voters
    // are live (9 has never been heard from), and the leader refuses, once
    // it has not heard from the follower for an election timeout (<= 300 ms).
    let follower = (1..=3).find(|&id| id != leader).unwrap_or(1);
    cluster.kill(follower);
    std::thread::sleep(Duration::from_millis(1000));
    let reason =
        "membership change refused: after the change, live members (2) would not reach a quorum of 3";
    let promote = cluster.cli(&["member", "promote", "9"]);
    assert_eq!((promote.code, promote.stdout.as_str()), (2, ""), "{promote:?}");
    assert_eq!(promote.stderr, format!("graft-cli: error: member promote 9: invalid request: {reason}\n"));
    assert!(promote.took < Duration::from_secs(10), "refused at once, not retried: {promote:?}");
    let promote = cluster.cli(&["--output", "json", "member", "promote", "9"]);
    assert_eq!(promote.code, 2, "{promote:?}");
    let j = promote.json();
    assert_eq!(
        (j["command"].clone(), j["ok"].clone(), j["exit"].clone(), j["outcome_unknown"].clone()),
        (json!("member promote"), json!(false), json!(2), json!(false)),
        "{j}"
    );
    assert!(j["error"].as_str().is_some_and(|e| e.ends_with(reason)), "{j}");

    // Removing the learner changes no voter: allowed with one voter down.
    let remove = cluster.cli(&["member", "remove", "9"]);
    assert_eq!((remove.code, remove.stdout.as_str()), (0, "member 9 removed\n"), "{remove:?}");
    let list = cluster.cli(&["member", "list"]);
    assert_eq!(list.code, 0, "{list:?}");
    let got = rows(&list);
    let ids: Vec<&str> = got.iter().map(|r| r[0].as_str()).collect();
    assert_eq!(ids, ["1", "2", "3"], "{list:?}");
    assert!(got.iter().all(|r| r[2] == "voter"), "{list:?}");
    let down = &got[follower as usize - 1];
    assert_eq!((down[3].as_str(), down[6].as_str()), ("-", "no"), "the stopped follower: {list:?}");
    assert_eq!(leader_line(&list), format!("leader: member {leader} at {}", cluster.addr(leader)));
    let j = cluster.cli(&["--output", "json", "member", "list"]).json();
    let ids: Vec<u64> =
        j["members"].as_array().into_iter().flatten().filter_map(|m| m["id"].as_u64()).collect();
    assert_eq!(ids, [1, 2, 3], "{j}");
}

#[test]
fn removing_a_voter_of_three_leaves_two() {
    let cluster = start_cluster(3);
    let leader = cluster.wait_leader_blocking(Duration::from_secs(20));
    // Member 1 when it follows: the first endpoint, still running after its
    // removal and unaware of it, so the list must come from the leader.
    let removed = if leader == 1 { 2 } else { 1 };
    let remove = cluster.cli(&["member", "remove", &removed.to_string()]);
    assert_eq!(
        (remove.code, remove.stdout.clone()),
        (0, format!("member {removed} removed\n")),
        "{remove:?}"
    );

    let list = cluster.cli(&["member", "list"]);
    assert_eq!(list.code, 0, "{list:?}");
    let got = rows(&list);
    let ids: Vec<u64> = got.iter().filter_map(|r| r[0].parse().ok()).collect();
    let kept: Vec<u64> = (1..=3).filter(|&id| id != removed).collect();
    assert_eq!(ids, kept, "{list:?}");
    assert!(got.iter().all(|r| r[2] == "voter" && r[6] == "yes"), "{list:?}");
    assert_eq!(leader_line(&list), format!("leader: member {leader} at {}", cluster.addr(leader)));
    let j = cluster.cli(&["--output", "json", "member", "list"]).json();
    let members: Vec<Value> = j["members"].as_array().cloned().unwrap_or_default();
    assert_eq!(members.len(), 2, "{j}");

    // The two left still make a majority of their own.
    assert_eq!(cluster.cli(&["put", "after-remove", "ok"]).code, 0);
    assert_eq!(cluster.cli(&["get", "after-remove"]).stdout, "ok\n");
    // Removing it again: not a member any more, refused as invalid.
    let again = cluster.cli(&["member", "remove", &removed.to_string()]);
    assert_eq!(again.code, 2, "{again:?}");
    assert!(again.stderr.contains("invalid request: membership change refused"), "{again:?}");
}
