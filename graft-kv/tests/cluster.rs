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
        assert_eq!((v.value.as_ref(), v.mod_revision), (&b"hello"[..], version), "via member {id}");
    }
    // And every member's own copy, once applied there.
    cluster.wait_applied(version, Duration::from_secs(10)).await;
    for id in 1..=5 {
        let v = cluster.client_at(id).get_with("greeting", Consistency::Stale).await.expect("stale get");
        assert_eq!(v.map(|v| v.value), Some("hello".into()), "member {id}'s own state");
    }
}

/// Stops every member gracefully and returns each one's log and applied index.
fn stopped_logs(cluster: &mut Cluster) -> Vec<(u64, Vec<graft_core::Entry>, u64)> {
    for id in cluster.running() {
        let st = cluster.stop(id).expect("was running");
        assert!(st.success(), "member {id} exited with {st} on SIGTERM\n{}", cluster.logs());
    }
    cluster
        .members
        .iter()
        .map(|m| {
            let (log, applied) = graft_kv::storage::read_log(&m.data_dir).expect("read log");
            (m.id, log, applied)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_leader_elects_a_new_one_and_the_old_one_catches_up_to_an_identical_log() {
    let mut cluster = Cluster::start(5);
    let old = cluster.wait_leader(Duration::from_secs(20)).await;
    let client = cluster.client();
    for i in 0..50 {
        client.put(format!("before-{i}"), format!("v{i}")).await.expect("put before the kill");
    }
    cluster.kill(old);
    let new = cluster.wait_leader(Duration::from_secs(20)).await;
    assert_ne!(new, old, "a new leader replaces the killed one");
    for i in 0..50 {
        client.put(format!("after-{i}"), format!("v{i}")).await.expect("the new leader accepts writes");
    }
    cluster.start_member(old);
    let last = client.put("final", "x").await.expect("put");
    cluster.wait_applied(last, Duration::from_secs(20)).await;
    let v = cluster.client_at(old).get_with("after-49", Consistency::Stale).await.expect("stale read");
    assert_eq!(v.map(|v| v.value), Some("v49".into()), "the restarted member caught up");

    let logs = stopped_logs(&mut cluster);
    let (_, reference, _) = &logs[0];
    assert!(reference.len() as u64 >= last, "log holds every write");
    for (id, log, applied) in &logs {
        assert!(*applied >= last, "member {id} applied {applied} < {last}");
        let n = reference.len().min(log.len());
        assert!(n as u64 >= last);
        assert_eq!(&log[..n], &reference[..n], "member {id}'s log differs from member 1's");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_acknowledged_write_is_lost_across_kill_9_of_any_member_or_all_at_once() {
    let mut cluster = Cluster::start(3);
    cluster.wait_leader(Duration::from_secs(20)).await;
    let client = cluster.client();
    let mut acked: Vec<(String, String)> = Vec::new();
    let mut n = 0;
    // Kill each member in turn (leader or not) while writing.
    for victim in [1, 2, 3] {
        for _ in 0..30 {
            n += 1;
            let (k, v) = (format!("k{n}"), format!("v{n}"));
            if client.put(k.clone(), v.clone()).await.is_ok() {
                acked.push((k, v));
            }
        }
        cluster.kill(victim);
        for _ in 0..30 {
            n += 1;
            let (k, v) = (format!("k{n}"), format!("v{n}"));
            if client.put(k.clone(), v.clone()).await.is_ok() {
                acked.push((k, v));
            }
        }
        cluster.start_member(victim);
        cluster.wait_leader(Duration::from_secs(20)).await;
    }
    // Everyone at once, mid-stream.
    let writer = {
        let client = client.clone();
        tokio::spawn(async move {
            let mut acked = Vec::new();
            for i in 0..10_000 {
                let (k, v) = (format!("burst{i}"), format!("b{i}"));
                match client.put(k.clone(), v.clone()).await {
                    Ok(_) => acked.push((k, v)),
                    Err(_) => break,
                }
            }
            acked
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    for id in [1, 2, 3] {
        cluster.kill(id);
    }
    let burst = writer.await.expect("writer task");
    assert!(!burst.is_empty(), "some writes were acknowledged before the crash");
    acked.extend(burst);
    for id in [1, 2, 3] {
        cluster.start_member(id);
    }
    cluster.wait_leader(Duration::from_secs(20)).await;
    let client = cluster.client();
    for (k, v) in &acked {
        let got = client.get(k.clone()).await.expect("get after restart");
        assert_eq!(
            got.map(|g| g.value),
            Some(v.clone().into()),
            "acknowledged write {k} lost\n{}",
            cluster.logs()
        );
    }
    println!("{} acknowledged writes all present after kill -9 of every member", acked.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writers_lose_nothing_across_kill_9_of_all_members_while_compacting() {
    // Many writers at once make batches large enough for a member to apply
    // on a second thread alongside its log transaction; a tiny log limit
    // makes every member compact, and fsync its state machine for it, all
    // the time.
    let mut cluster = Cluster::start_with(3, "[log]\nmax_entries = 400\nretain_entries = 100\n");
    cluster.wait_leader(Duration::from_secs(20)).await;
    // The writers give up soon once the members are killed.
    let client = graft_kv::Client::new(graft_kv::ClientOptions {
        endpoints: cluster.endpoints(),
        timeout: Duration::from_secs(2),
    });
    const WRITERS: usize = 64;
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let client = client.clone();
            tokio::spawn(async move {
                let mut acked = Vec::new();
                for i in 0.. {
                    let (k, v) = (format!("w{w:02}-{i:06}"), format!("v{w}-{i}"));
                    match client.put(k.clone(), v.clone()).await {
                        Ok(_) => acked.push((k, v)),
                        Err(_) => break,
                    }
                }
                acked
            })
        })
        .collect();
    // Write for at least 2 s, and until some batch has been applied on a
    // second thread (up to 30 s on a slow machine).
    tokio::time::sleep(Duration::from_secs(2)).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let mut parallel = 0;
    while parallel == 0 && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
        parallel = 0;
        for addr in cluster.endpoints() {
            parallel += client.metrics_of(&addr).await.map_or(0, |m| m.parallel_batches);
        }
    }
    assert!(parallel > 0, "no batch applied alongside its log transaction\n{}", cluster.logs());
    for id in [1, 2, 3] {
        cluster.kill(id);
    }
    let mut acked = Vec::new();
    for w in writers {
        acked.extend(w.await.expect("writer task"));
    }
    for id in [1, 2, 3] {
        cluster.start_member(id);
    }
    cluster.wait_leader(Duration::from_secs(20)).await;
    let client = cluster.client();
    let mut present = std::collections::HashMap::new();
    for w in 0..WRITERS {
        let rows = client
            .scan(format!("w{w:02}-"), u32::MAX, Consistency::Linearizable)
            .await
            .expect("scan after restart");
        present.extend(rows.into_iter().map(|(k, v)| (k, v.value)));
    }
    for (k, v) in &acked {
        assert_eq!(
            present.get(k.as_bytes()),
            Some(&v.clone().into()),
            "acknowledged write {k} lost\n{}",
            cluster.logs()
        );
    }
    println!(
        "{} acknowledged writes from {WRITERS} writers ({parallel} batches applied in parallel) all present after kill -9 of every member",
        acked.len()
    );
}
