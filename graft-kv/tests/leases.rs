//! Leases on real processes: expiry through the log (keys deleted on every
//! member, watchers see it), keepalive, revoke; a failover keeps the time
//! left instead of resetting it (etcd #9395, #13294); a leader stalled past
//! the TTL and deposed revokes nothing when it wakes (etcd #15247); bad
//! input refused with nothing changed.

mod util;

use std::time::{Duration, Instant};

use bytes::Bytes;
use graft_kv::protocol::{ApiError, Consistency, WatchFilter};
use graft_kv::{ClientError, WatchItem, WatchOptions};
use util::Cluster;

const SIGSTOP: i32 = 19;
const SIGCONT: i32 = 18;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_lease_deletes_its_keys_everywhere_and_a_kept_alive_one_survives() {
    let cluster = Cluster::start(3);
    cluster.wait_leader(Duration::from_secs(20)).await;
    let client = cluster.client();
    let short = client.lease_grant(Duration::from_millis(1000)).await.expect("grant");
    let kept = client.lease_grant(Duration::from_millis(1000)).await.expect("grant");
    assert_ne!(short, kept);
    client.put_with_lease("l/short", "a", short).await.expect("put");
    client.put_with_lease("l/kept", "b", kept).await.expect("put");
    let before = client.put("l/plain", "c").await.expect("put");
    let info = client.lease_ttl(short).await.expect("ttl");
    assert_eq!((info.ttl_ms, info.keys.clone()), (1000, vec![Bytes::from("l/short")]));
    assert!(info.remaining_ms <= 1000 && info.remaining_ms > 500, "{info:?}");
    let mut w = client.watch(WatchOptions {
        filter: WatchFilter { key: Bytes::from("l/"), prefix: true },
        start_revision: before + 1,
        prev_kv: false,
        progress_ms: 0,
    });
    let _alive = client.keep_alive(kept, Duration::from_millis(1000));
    // The watcher sees the expiry as a delete.
    let deadline = Instant::now() + Duration::from_secs(10);
    let expired_at = loop {
        match tokio::time::timeout_at(deadline.into(), w.next()).await {
            Ok(Some(Ok(WatchItem::Events(events)))) => {
                if let Some(e) = events.iter().find(|e| e.kv.is_none()) {
                    assert_eq!(e.key, "l/short", "only the unrenewed lease's key goes: {events:?}");
                    break e.revision;
                }
            }
            other => panic!("expected the expiry's delete, got {other:?}"),
        }
    };
    cluster.wait_applied(expired_at, Duration::from_secs(10)).await;
    for id in 1..=3 {
        let c = cluster.client_at(id);
        assert_eq!(c.get_with("l/short", Consistency::Stale).await.unwrap(), None, "member {id}");
        assert!(c.get_with("l/kept", Consistency::Stale).await.unwrap().is_some(), "member {id}");
    }
    assert!(
        matches!(client.lease_ttl(short).await, Err(ClientError::Api(ApiError::LeaseNotFound { id })) if id == short)
    );
    // Revoking deletes the keys at once.
    assert_eq!(client.lease_revoke(kept).await.expect("revoke"), 1);
    assert_eq!(client.get("l/kept").await.unwrap(), None);
    assert_eq!(client.get("l/plain").await.unwrap().map(|kv| kv.value), Some(Bytes::from("c")));
    assert!(client.leases().await.expect("list").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failover_keeps_a_lease_s_remaining_time() {
    let mut cluster = Cluster::start(3);
    let leader = cluster.wait_leader(Duration::from_secs(20)).await;
    let client = cluster.client();
    let id = client.lease_grant(Duration::from_secs(10)).await.expect("grant");
    let granted = Instant::now();
    client.put_with_lease("f/k", "v", id).await.expect("put");
    tokio::time::sleep(Duration::from_secs(3)).await;
    cluster.kill(leader);
    cluster.wait_leader(Duration::from_secs(20)).await;
    // Ask until the new leader answers (its clock entry must apply first).
    let info = loop {
        match client.lease_ttl(id).await {
            Ok(info) => break info,
            Err(e) if granted.elapsed() < Duration::from_secs(8) => {
                eprintln!("lease ttl: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("lease ttl after failover: {e}"),
        }
    };
    let elapsed = granted.elapsed().as_millis() as u64;
    // What is left is what was left, give or take the failover (the
    // election and the new leader's first clock entry), never reset to 10 s.
    let left = 10_000 - elapsed.min(10_000);
    assert!(
        info.remaining_ms <= left + 1500 && info.remaining_ms + 1500 >= left,
        "remaining {} ms, expected about {left} ms ({elapsed} ms after the grant)",
        info.remaining_ms
    );
    assert!(info.remaining_ms < 9000, "a failover must not reset the lease to its TTL: {info:?}");
    assert_eq!(client.get("f/k").await.unwrap().map(|kv| kv.value), Some(Bytes::from("v")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_leader_that_wakes_deposed_revokes_nothing() {
    let mut cluster = Cluster::start(3);
    let leader = cluster.wait_leader(Duration::from_secs(20)).await;
    let client = cluster.client();
    let id = client.lease_grant(Duration::from_millis(1500)).await.expect("grant");
    client.put_with_lease("s/k", "v", id).await.expect("put");
    let _alive = client.keep_alive(id, Duration::from_millis(1500));
    tokio::time::sleep(Duration::from_millis(500)).await;
    // Freeze the leader for longer than the TTL: the others elect a new
    // leader, and the keepalives go there.
    let pid = cluster.pid(leader).expect("pid");
    util::signal(pid, SIGSTOP);
    tokio::time::sleep(Duration::from_secs(4)).await;
    util::signal(pid, SIGCONT);
    // It wakes with every deadline passed in its own clock.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let info = client.lease_ttl(id).await.expect("the lease survived");
    assert!(info.remaining_ms > 0, "{info:?}");
    assert_eq!(client.get("s/k").await.unwrap().map(|kv| kv.value), Some(Bytes::from("v")));
    let st = cluster.statuses().await;
    assert!(st.iter().any(|s| s.role == "Leader" && s.id != leader), "a new leader took over: {st:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_lease_requests_are_refused_and_change_nothing() {
    let cluster = Cluster::start(3);
    cluster.wait_leader(Duration::from_secs(20)).await;
    let client = cluster.client();
    match client.put_with_lease("b/k", "v", 12345).await {
        Err(ClientError::Api(ApiError::LeaseNotFound { id: 12345 })) => {}
        other => panic!("expected lease not found, got {other:?}"),
    }
    assert_eq!(client.get("b/k").await.unwrap(), None, "nothing written");
    assert_eq!(client.lease_keep_alive(vec![777]).await.expect("keepalive"), vec![(777, None)]);
    assert!(matches!(
        client.lease_revoke(777).await,
        Err(ClientError::Api(ApiError::LeaseNotFound { id: 777 }))
    ));
    for ttl in [Duration::ZERO, Duration::from_secs(2 * 24 * 3600)] {
        assert!(
            matches!(client.lease_grant(ttl).await, Err(ClientError::Api(ApiError::Invalid(_)))),
            "{ttl:?}"
        );
    }
    assert!(client.leases().await.expect("list").is_empty());
}
