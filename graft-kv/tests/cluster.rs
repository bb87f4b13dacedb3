//! A real cluster of graft-kv processes on 127.0.0.1: elections, replication,
//! kill -9, restarts.

mod util;

use std::time::Duration;

use graft_kv::protocol::Consistency;
use util::Cluster;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_members_elect_one_leader_and_a_put_is_readable_through_every_member() {
    let cluster = Cluster::start(5);
    let leader = cluster.wait_leader(Duration::from_secs(20)).await;
    let st = cluster.statuses().await;
    let leaders: Vec<_> = st.iter().filter(|s| s.role == "Leader").collect();
    assert_eq!(leaders.len(), 1, "exactly one leader: {st:#?}");
    assert_eq!(leaders[0].id, leader);

    let version = cluster.client().put("greeting", "hello").await.expect("put");
    for id in 1..=5 {
        // Linearizable, through each member (a follower points to the leader).
        let v = cluster.client_at(id).get("greeting").await.expect("get").expect("present");
        assert_eq!((v.value.as_ref(), v.version), (&b"hello"[..], version), "via member {id}");
    }
    // And every member's own copy, once applied there.
    cluster.wait_applied(version, Duration::from_secs(10)).await;
    for id in 1..=5 {
        let v = cluster.client_at(id).get_with("greeting", Consistency::Stale).await.expect("stale get");
        assert_eq!(v.map(|v| v.value), Some("hello".into()), "member {id}'s own state");
    }
}
