//! Watches on real processes: replay from history then live with no gap,
//! resumption on another member when the serving member dies, a consumer
//! too slow to keep up (cancelled by the member, resumed by the client,
//! nothing skipped), compaction, progress notes, a watch outliving every
//! member it started with.

mod util;

use std::time::Duration;

use bytes::Bytes;
use graft_kv::protocol::{WatchEvent, WatchFilter};
use graft_kv::{Client, ClientOptions, WatchError, WatchItem, WatchOptions, Watcher};
use util::Cluster;

fn prefix(p: &str) -> WatchFilter {
    WatchFilter { key: Bytes::copy_from_slice(p.as_bytes()), prefix: true }
}

fn opts(filter: WatchFilter, start_revision: u64) -> WatchOptions {
    WatchOptions { filter, start_revision, prev_kv: false, progress_ms: 0 }
}

/// Takes events until one at `last` (or later) arrived.
async fn collect_until(w: &mut Watcher, last: u64, within: Duration) -> Vec<WatchEvent> {
    let mut got: Vec<WatchEvent> = Vec::new();
    let deadline = tokio::time::Instant::now() + within;
    while got.last().is_none_or(|e| e.revision < last) {
        match tokio::time::timeout_at(deadline, w.next()).await {
            Ok(Some(Ok(WatchItem::Events(events)))) => got.extend(events),
            Ok(Some(Ok(WatchItem::Progress(_)))) => {}
            Ok(Some(Err(e))) => panic!("the watch failed: {e}"),
            Ok(None) => panic!("the watch ended"),
            Err(_) => {
                panic!("no event at {last} within {within:?}; got up to {:?}", got.last().map(|e| e.revision))
            }
        }
    }
    got
}

/// `(key, revision)` of each event.
fn ids(events: &[WatchEvent]) -> Vec<(Bytes, u64)> {
    events.iter().map(|e| (e.key.clone(), e.revision)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_from_the_past_replays_history_then_follows_live_with_no_gap() {
    let cluster = Cluster::start(3);
    cluster.wait_leader(Duration::from_secs(20)).await;
    let client = cluster.client();
    let mut writes = Vec::new();
    for i in 0..200 {
        let key = Bytes::from(format!("w/{}", i % 10));
        writes.push((key.clone(), client.put(key, format!("v{i}")).await.expect("put")));
    }
    client.put("other/x", "not watched").await.expect("put");
    let start = writes[50].1;
    let mut w = client.watch(WatchOptions { prev_kv: true, ..opts(prefix("w/"), start) });
    // Live writes while the history is being replayed.
    let writer = {
        let client = cluster.client();
        tokio::spawn(async move {
            let mut more = Vec::new();
            for i in 200..400 {
                let key = Bytes::from(format!("w/{}", i % 10));
                more.push((key.clone(), client.put(key, format!("v{i}")).await.expect("put")));
            }
            more
        })
    };
    writes.extend(writer.await.expect("writer"));
    let last = writes.last().map(|w| w.1).unwrap_or_default();
    let got = collect_until(&mut w, last, Duration::from_secs(20)).await;
    let want: Vec<(Bytes, u64)> = writes.iter().filter(|(_, r)| *r >= start).cloned().collect();
    assert_eq!(ids(&got), want, "every write from the start revision, once, in order");
    // Values and previous values are the ones written.
    let e = &got[10];
    let i: usize = std::str::from_utf8(&e.kv.as_ref().unwrap().value).unwrap()[1..].parse().unwrap();
    assert_eq!(e.key, format!("w/{}", i % 10));
    assert_eq!(
        e.prev.as_ref().map(|p| p.mod_revision),
        writes.iter().rev().find(|(k, r)| *k == e.key && *r < e.revision).map(|w| w.1)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_resumes_on_another_member_when_its_member_dies() {
    let mut cluster = Cluster::start(3);
    let leader = cluster.wait_leader(Duration::from_secs(20)).await;
    let served_by = if leader == 1 { 2 } else { 1 };
    // The watcher's first endpoint is a follower, which serves the watch.
    let mut endpoints = vec![cluster.addr(served_by)];
    endpoints.extend((1..=3).filter(|&id| id != served_by).map(|id| cluster.addr(id)));
    let watcher_client = Client::new(ClientOptions { endpoints, timeout: Duration::from_secs(10) });
    let client = cluster.client();
    let first = client.put("r/0", "0").await.expect("put");
    let mut w = watcher_client.watch(opts(prefix("r/"), first));
    let writer = {
        let client = cluster.client();
        tokio::spawn(async move {
            let mut writes = Vec::new();
            for i in 1..600 {
                let key = Bytes::from(format!("r/{}", i % 7));
                match client.put(key.clone(), format!("{i}")).await {
                    Ok(rev) => writes.push((key, rev)),
                    Err(e) => panic!("put {i}: {e}"),
                }
            }
            writes
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    cluster.kill(served_by);
    let mut writes = vec![(Bytes::from("r/0"), first)];
    writes.extend(writer.await.expect("writer"));
    let last = writes.last().map(|w| w.1).unwrap_or_default();
    let got = collect_until(&mut w, last, Duration::from_secs(30)).await;
    assert_eq!(ids(&got), writes, "no write skipped or repeated across the member's death");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_too_slow_is_cancelled_and_resumes_without_losing_a_change() {
    let cluster = Cluster::start(3);
    cluster.wait_leader(Duration::from_secs(20)).await;
    let client = cluster.client();
    let first = client.put("big/start", "0").await.expect("put");
    let mut w = client.watch(opts(prefix("big/"), first));
    // Not reading while 48 MiB of changes go by: more than the member
    // queues for one watcher (16 MiB) once the socket and the client's
    // buffer are full.
    let value = Bytes::from(vec![b'v'; 256 << 10]);
    let mut writes = vec![(Bytes::from("big/start"), first)];
    for i in 0..192 {
        let key = Bytes::from(format!("big/{}", i % 16));
        writes.push((key.clone(), client.put(key, value.clone()).await.expect("put")));
    }
    let last = writes.last().map(|w| w.1).unwrap_or_default();
    let got = collect_until(&mut w, last, Duration::from_secs(60)).await;
    assert_eq!(ids(&got), writes, "every change, in order, although the member cancelled the slow watch");
    let logs = cluster.logs();
    assert!(
        logs.contains("fell more than"),
        "the member cancelled the watcher as too slow (and the client resumed it):\n{}",
        logs.lines().filter(|l| l.contains("watch")).collect::<Vec<_>>().join("\n")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_below_the_compaction_point_is_refused_and_quiet_watches_hear_progress() {
    let cluster = Cluster::start(3);
    cluster.wait_leader(Duration::from_secs(20)).await;
    let client = cluster.client();
    let old = client.put("c/k", "1").await.expect("put");
    let newer = client.put("c/k", "2").await.expect("put");
    client.compact(newer).await.expect("compact");
    let mut w = client.watch(opts(prefix("c/"), old));
    match tokio::time::timeout(Duration::from_secs(10), w.next()).await {
        Ok(Some(Err(WatchError::Compacted { requested, oldest }))) => {
            assert_eq!((requested, oldest), (old, newer))
        }
        other => panic!("expected a compacted error, got {other:?}"),
    }
    // From the compaction point it works.
    let mut w = client.watch(opts(prefix("c/"), newer));
    let got = collect_until(&mut w, newer, Duration::from_secs(10)).await;
    assert_eq!(ids(&got), [(Bytes::from("c/k"), newer)]);

    // A quiet watch learns the revision moves on elsewhere.
    let mut quiet = client.watch(WatchOptions { progress_ms: 100, ..opts(prefix("quiet/"), 0) });
    let elsewhere = client.put("c/other", "x").await.expect("put");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        match tokio::time::timeout_at(deadline, quiet.next()).await {
            Ok(Some(Ok(WatchItem::Progress(r)))) if r >= elsewhere => break,
            Ok(Some(Ok(WatchItem::Progress(_)))) => {}
            other => panic!("expected progress past {elsewhere}, got {other:?}"),
        }
    }
}

/// Waits until the leader reports exactly these voters.
async fn wait_voters(cluster: &Cluster, voters: &[u64]) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let st = cluster.statuses().await;
        if let Some(l) = st.iter().find(|s| s.role == "Leader") {
            let mut v: Vec<u64> = l.members.iter().filter(|m| m.voter).map(|m| m.id).collect();
            v.sort_unstable();
            if v == voters {
                return;
            }
        }
        assert!(tokio::time::Instant::now() < deadline, "voters never became {voters:?}\n{}", cluster.logs());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_outlives_every_member_it_started_with() {
    // The membership turns over completely under a watch that was given
    // member 1 alone: it must learn the new members and resume on them,
    // though nobody reads its events until the end (the learning does not
    // wait for the consumer).
    let mut cluster = Cluster::start(3);
    cluster.wait_leader(Duration::from_secs(20)).await;
    let watcher_client =
        Client::new(ClientOptions { endpoints: vec![cluster.addr(1)], timeout: Duration::from_secs(10) });
    let client = cluster.client();
    let first = client.put("turn/0", "0").await.expect("put");
    let mut w = watcher_client.watch(opts(prefix("turn/"), first));
    let mut writes = vec![(Bytes::from("turn/0"), first)];
    for (new, through) in [(4, 2), (5, 3), (6, 2)] {
        cluster.join_member(new, through, true);
    }
    wait_voters(&cluster, &[1, 2, 3, 4, 5, 6]).await;
    // The watch asks its member for the membership about once a second,
    // though nobody reads its events: it learns the new members.
    let new: Vec<String> = (4..=6).map(|id| cluster.addr(id)).collect();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let known = graft_kv::watcher::Members::current(&watcher_client);
        if new.iter().all(|a| known.contains(a)) {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "the watch never learnt {new:?}; it knows {known:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for (step, old) in [1u64, 2, 3].into_iter().enumerate() {
        let admin = Client::new(ClientOptions {
            endpoints: (4..=6).map(|id| cluster.addr(id)).collect(),
            timeout: Duration::from_secs(10),
        });
        admin.remove_member(old).await.expect("remove an original member");
        cluster.kill(old);
        for i in 0..20 {
            let key = Bytes::from(format!("turn/{step}-{i}"));
            writes.push((key.clone(), admin.put(key, "v").await.expect("put on the new members")));
        }
    }
    let last = writes.last().map(|w| w.1).unwrap_or_default();
    let got = collect_until(&mut w, last, Duration::from_secs(30)).await;
    assert_eq!(ids(&got), writes, "every write, once, though every member it knew is gone");
}
