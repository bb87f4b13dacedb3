//! Log compaction and snapshot transfer between real processes.

mod util;

use std::time::Duration;

use graft_kv::protocol::Consistency;
use util::Cluster;

const SMALL_LOG: &str = "[log]\nmax_entries = 200\nretain_entries = 20\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_far_behind_member_catches_up_by_snapshot() {
    let mut cluster = Cluster::start_with(3, SMALL_LOG);
    let leader = cluster.wait_leader(Duration::from_secs(20)).await;
    let behind = if leader == 3 { 2 } else { 3 };
    cluster.kill(behind);
    let client = cluster.client();
    let mut put_at = Vec::new();
    for i in 0..1500 {
        put_at.push(client.put(format!("key-{i:04}"), format!("value-{i}")).await.expect("put"));
    }
    client.delete("key-0007").await.expect("delete");
    let last = client.put("last", "x").await.expect("put");
    // The live members compacted their logs well past where `behind` stopped.
    let st = cluster.statuses().await;
    assert!(st.iter().all(|s| s.first_index > 1000), "logs were compacted: {}", util::summary(&st));

    cluster.start_member(behind);
    cluster.wait_applied(last, Duration::from_secs(30)).await;
    let log = std::fs::read_to_string(&cluster.member(behind).log_file).unwrap();
    assert!(log.contains("installed snapshot at index"), "member {behind} caught up by snapshot:\n{log}");
    let own = cluster.client_at(behind);
    let all = own.scan("key-", 10_000, Consistency::Stale).await.expect("scan");
    assert_eq!(all.len(), 1499, "every key but the deleted one");
    for (k, v) in &all {
        let i: usize = std::str::from_utf8(&k[4..]).unwrap().parse().unwrap();
        assert_eq!(v.value, format!("value-{i}").as_bytes());
    }
    // The snapshot carried the history too: the member answers reads at
    // past revisions as the leader does.
    let (past, at) = own.get_at("key-0007", Consistency::Stale, put_at[7]).await.expect("read in the past");
    let past = past.expect("key-0007 existed at the revision of its put");
    assert_eq!(
        (past.value.as_ref(), past.mod_revision, past.version, at),
        (&b"value-7"[..], put_at[7], 1, put_at[7])
    );
    let (later_scan, _) =
        own.scan_at("key-000", 100, Consistency::Stale, put_at[5]).await.expect("scan in the past");
    assert_eq!(later_scan.len(), 6, "keys 0-5 existed at the revision of key 5's put");
    let (leader_scan, _) =
        client.scan_at("key-000", 100, Consistency::Linearizable, put_at[5]).await.unwrap();
    assert_eq!(later_scan, leader_scan, "the same answer as the leader's");
    // It goes on replicating normally after the snapshot.
    let later = client.put("after-snapshot", "y").await.unwrap();
    cluster.wait_applied(later, Duration::from_secs(10)).await;
    let v = own.get_with("after-snapshot", Consistency::Stale).await.unwrap();
    assert_eq!(v.map(|v| v.value), Some("y".into()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_after_compaction_keeps_every_write() {
    let mut cluster = Cluster::start_with(3, SMALL_LOG);
    cluster.wait_leader(Duration::from_secs(20)).await;
    let client = cluster.client();
    for i in 0..600 {
        client.put(format!("k{i}"), format!("{i}")).await.expect("put");
    }
    for id in [1, 2, 3] {
        cluster.kill(id);
    }
    for id in [1, 2, 3] {
        cluster.start_member(id);
    }
    cluster.wait_leader(Duration::from_secs(20)).await;
    let client = cluster.client();
    for i in (0..600).step_by(7) {
        let v = client.get(format!("k{i}")).await.expect("get").expect("present");
        assert_eq!(v.value, i.to_string().as_bytes());
    }
    let st = cluster.statuses().await;
    assert!(
        st.iter().all(|s| s.last_index - s.first_index < 400),
        "logs stay bounded: {}",
        util::summary(&st)
    );
}
