//! Live membership changes between real processes: grow, shrink, replace,
//! refuse, move.

mod util;

use std::time::{Duration, Instant};

use graft_kv::protocol::{ApiError, Consistency};
use graft_kv::ClientError;
use util::Cluster;

/// Waits until the leader reports exactly these voters and learners.
async fn wait_members(cluster: &Cluster, voters: &[u64], learners: &[u64]) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let st = cluster.statuses().await;
        if let Some(l) = st.iter().find(|s| s.role == "Leader") {
            let mut v: Vec<u64> = l.members.iter().filter(|m| m.voter).map(|m| m.id).collect();
            let mut le: Vec<u64> = l.members.iter().filter(|m| !m.voter).map(|m| m.id).collect();
            v.sort_unstable();
            le.sort_unstable();
            if v == voters && le == learners {
                return;
            }
            if Instant::now() > deadline {
                panic!(
                    "members are {v:?} + learners {le:?}, want {voters:?} + {learners:?}\n{}",
                    cluster.logs()
                );
            }
        } else if Instant::now() > deadline {
            panic!("no leader\n{}\n{}", util::summary(&st), cluster.logs());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grow_from_three_to_five_while_serving() {
    let mut cluster = Cluster::start(3);
    cluster.wait_leader(Duration::from_secs(20)).await;
    let client = cluster.client();
    // Traffic runs throughout.
    let writer = {
        let client = client.clone();
        tokio::spawn(async move {
            let mut acked = 0u64;
            for i in 0..400 {
                if client.put(format!("grow-{i}"), "v").await.is_ok() {
                    acked += 1;
                }
            }
            acked
        })
    };
    cluster.join_member(4, 1, true);
    cluster.join_member(5, 2, true);
    wait_members(&cluster, &[1, 2, 3, 4, 5], &[]).await;
    assert_eq!(writer.await.unwrap(), 400, "every write during the change succeeded");
    // The new members hold the data...
    let last = client.put("after-grow", "x").await.unwrap();
    cluster.wait_applied(last, Duration::from_secs(20)).await;
    for id in [4, 5] {
        let v = cluster.client_at(id).get_with("grow-0", Consistency::Stale).await.unwrap();
        assert_eq!(v.map(|v| v.value), Some("v".into()), "member {id} has the data");
    }
    // ...and count: with two original members gone, 3 of 5 still form a quorum.
    cluster.kill(1);
    cluster.kill(2);
    cluster.wait_leader(Duration::from_secs(20)).await;
    cluster.client().put("with-new-quorum", "y").await.expect("3 of 5 make progress");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shrink_from_five_to_three_removing_the_leader_first() {
    let mut cluster = Cluster::start(5);
    let leader = cluster.wait_leader(Duration::from_secs(20)).await;
    let client = cluster.client();
    client.put("before", "1").await.unwrap();
    // Remove the leader itself: it keeps leading until the change commits,
    // then steps down and the others elect a new one.
    client.remove_member(leader).await.expect("remove the leader");
    let others: Vec<u64> = (1..=5).filter(|&i| i != leader).collect();
    let second = others[3];
    client.remove_member(second).await.expect("remove another");
    let mut remaining: Vec<u64> = others[..3].to_vec();
    remaining.sort_unstable();
    cluster.kill(leader);
    cluster.kill(second);
    wait_members(&cluster, &remaining, &[]).await;
    client.put("after", "2").await.expect("three members serve");
    // With three voters, one more failure is tolerated.
    cluster.kill(remaining[0]);
    cluster.wait_leader(Duration::from_secs(20)).await;
    let client = cluster.client();
    client.put("after-one-more-failure", "3").await.expect("2 of 3 make progress");
    assert_eq!(client.get("before").await.unwrap().map(|v| v.value), Some("1".into()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replace_a_dead_member() {
    let mut cluster = Cluster::start(3);
    cluster.wait_leader(Duration::from_secs(20)).await;
    let client = cluster.client();
    for i in 0..100 {
        client.put(format!("k{i}"), format!("v{i}")).await.unwrap();
    }
    let dead = 3;
    cluster.kill(dead);
    client.remove_member(dead).await.expect("remove the dead member");
    cluster.join_member(4, 1, true);
    wait_members(&cluster, &[1, 2, 4], &[]).await;
    // The replacement carries the quorum with member 1 when 2 dies too.
    cluster.kill(2);
    cluster.wait_leader(Duration::from_secs(20)).await;
    let client = cluster.client();
    client.put("after-replace", "z").await.expect("members 1 and 4 form a quorum");
    assert_eq!(client.get("k99").await.unwrap().map(|v| v.value), Some("v99".into()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_that_would_leave_no_live_quorum_is_refused() {
    let mut cluster = Cluster::start(3);
    cluster.wait_leader(Duration::from_secs(20)).await;
    let client = cluster.client();
    cluster.kill(3);
    // The leader counts a member live if it heard from it within an
    // election timeout (at most 300 ms here).
    tokio::time::sleep(Duration::from_millis(800)).await;
    // A learner that never runs: adding it is harmless...
    client.add_member(9, "127.0.0.1:1".into(), false).await.expect("add a learner");
    // ...but making it a voter would need 3 live voters of 4, with only 2.
    match client.promote_member(9).await {
        Err(ClientError::Api(ApiError::Invalid(reason))) => {
            assert!(reason.contains("would not reach a quorum of 3"), "{reason}");
        }
        other => panic!("expected a refusal, got {other:?}\n{}", cluster.logs()),
    }
    // Nothing changed: the cluster still serves.
    client.put("still", "ok").await.expect("serving");
    wait_members(&cluster, &[1, 2, 3], &[9]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_restarted_at_a_new_address_rejoins() {
    let mut cluster = Cluster::start(3);
    cluster.wait_leader(Duration::from_secs(20)).await;
    cluster.join_member(4, 1, true);
    wait_members(&cluster, &[1, 2, 3, 4], &[]).await;
    cluster.stop(4);
    let new_port = util::free_ports(1)[0];
    cluster.member(4).addr = format!("127.0.0.1:{new_port}");
    cluster.start_member(4);
    let client = cluster.client();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let st = cluster.statuses().await;
        let moved = st
            .iter()
            .filter(|s| s.id != 4)
            .all(|s| s.members.iter().any(|m| m.id == 4 && m.addr == format!("127.0.0.1:{new_port}")));
        if moved && st.len() == 4 {
            break;
        }
        assert!(Instant::now() < deadline, "the new address did not spread\n{}", cluster.logs());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let last = client.put("after-move", "m").await.unwrap();
    cluster.wait_applied(last, Duration::from_secs(20)).await;
    let v = cluster.client_at(4).get_with("after-move", Consistency::Stale).await.unwrap();
    assert_eq!(v.map(|v| v.value), Some("m".into()), "the moved member receives the log again");
}

/// Regression (found by the Jepsen-style membership test): a client keeps
/// finding the cluster after every member it was started with is gone,
/// through the leaders it learnt from not-leader hints.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_outlives_the_members_it_started_with() {
    let mut cluster = Cluster::start(4);
    let leader = cluster.wait_leader(Duration::from_secs(20)).await;
    let admin = cluster.client();
    // Member 1 must not lead, so that the client learns of another member.
    if leader == 1 {
        admin.transfer_leader(2).await.expect("transfer");
    }
    let leader = cluster.wait_leader(Duration::from_secs(20)).await;
    let client = cluster.client_at(1);
    client.put("k", "1").await.expect("put through member 1's hint");
    tokio::time::sleep(Duration::from_millis(500)).await; // it learns the members in the background
    admin.remove_member(1).await.expect("remove member 1");
    cluster.kill(1);
    // The leader it talked to dies too: neither address it knew of directly
    // answers any more, and the cluster (3 voters, 2 alive) goes on.
    cluster.kill(leader);
    cluster.wait_leader(Duration::from_secs(20)).await;
    client.put("k", "2").await.expect("the client finds the new leader among the members it learnt");
    let v = client.get("k").await.expect("get").map(|v| v.value);
    assert_eq!(v, Some("2".into()));
}

/// Regression (found by the Jepsen-style soak): a member that joined restarts
/// from its own data even when the member it joined through is gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_joined_member_restarts_when_its_join_target_is_gone() {
    let mut cluster = Cluster::start(3);
    let leader = cluster.wait_leader(Duration::from_secs(20)).await;
    let admin = cluster.client();
    let target = if leader == 1 { 2 } else { 1 };
    cluster.join_member(4, target, true);
    wait_members(&cluster, &[1, 2, 3, 4], &[]).await;
    admin.remove_member(target).await.expect("remove the join target");
    cluster.kill(target);
    // kill -9: its database needs a repair when it opens again.
    cluster.kill(4);
    cluster.start_member(4); // still `--join` the dead member
    let others: Vec<u64> = [1, 2, 3].into_iter().filter(|&i| i != target).collect();
    // With one of the other two down, member 4 is needed for a quorum.
    cluster.kill(others[0]);
    cluster.wait_leader(Duration::from_secs(30)).await;
    cluster.client().put("after", "restart").await.expect("member 4 is back and counts");
}
