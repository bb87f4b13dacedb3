//! etcd's v3 API, driven by a real third-party client (the `etcd-client`
//! crate): KV (ranges of every form, limits, sorting, revisions, deletes
//! with previous values, transactions, compaction), leases, watches,
//! members and status, against a 3-member graft cluster; and the errors
//! etcd clients match on.

mod util;

use std::time::Duration;

use etcd_client::{
    Client, Compare, CompareOp, DeleteOptions, EventType, GetOptions, LeaseTimeToLiveOptions, PutOptions,
    SortOrder, SortTarget, Txn, TxnOp, TxnOpResponse, WatchOptions,
};
use util::Cluster;

fn etcd_cluster() -> (Cluster, Vec<String>) {
    util::etcd::etcd_cluster(3)
}

async fn connect(addr: &str) -> Client {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        match Client::connect([addr], None).await {
            Ok(mut c) => {
                // Ready once a linearizable read goes through.
                if c.get("probe", None).await.is_ok() {
                    return c;
                }
            }
            Err(e) if tokio::time::Instant::now() > deadline => panic!("connect to {addr}: {e}"),
            Err(_) => {}
        }
        assert!(tokio::time::Instant::now() < deadline, "etcd API at {addr} never answered");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn keys(resp: &etcd_client::GetResponse) -> Vec<String> {
    resp.kvs().iter().map(|kv| String::from_utf8_lossy(kv.key()).into_owned()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kv_ranges_deletes_transactions_and_compaction() {
    let (cluster, addrs) = etcd_cluster();
    let leader = cluster.wait_leader(Duration::from_secs(20)).await;
    // Through a follower: writes and linearizable reads are forwarded.
    let follower = if leader == 1 { 2 } else { 1 };
    let mut c = connect(&addrs[follower as usize - 1]).await;
    let first = c.put("a/1", "one", None).await.expect("put").header().expect("header").revision();
    assert!(first > 0);
    for (k, v) in [("a/2", "two"), ("a/3", "three"), ("b/1", "bee"), ("c", "sea")] {
        c.put(k, v, None).await.expect("put");
    }
    let again = c.put("a/1", "uno", Some(PutOptions::new().with_prev_key())).await.expect("put");
    assert_eq!(again.prev_key().map(|kv| kv.value()), Some(&b"one"[..]), "prev_kv");

    let one = c.get("a/1", None).await.expect("get");
    assert_eq!(one.kvs()[0].value(), b"uno");
    assert_eq!(one.kvs()[0].version(), 2);
    assert_eq!(one.kvs()[0].create_revision(), first);
    assert_eq!(
        keys(&c.get("a/", Some(GetOptions::new().with_prefix())).await.unwrap()),
        ["a/1", "a/2", "a/3"]
    );
    assert_eq!(
        keys(&c.get("a/2", Some(GetOptions::new().with_range("b/2"))).await.unwrap()),
        ["a/2", "a/3", "b/1"]
    );
    assert_eq!(keys(&c.get("b", Some(GetOptions::new().with_from_key())).await.unwrap()), ["b/1", "c"]);
    assert_eq!(c.get("", Some(GetOptions::new().with_all_keys())).await.unwrap().count(), 5);
    let limited = c.get("a/", Some(GetOptions::new().with_prefix().with_limit(2))).await.unwrap();
    assert_eq!((keys(&limited).len(), limited.count(), limited.more()), (2, 3, true));
    let counted = c.get("a/", Some(GetOptions::new().with_prefix().with_count_only())).await.unwrap();
    assert_eq!((counted.kvs().len(), counted.count()), (0, 3));
    let keys_only = c.get("a/", Some(GetOptions::new().with_prefix().with_keys_only())).await.unwrap();
    assert!(keys_only.kvs().iter().all(|kv| kv.value().is_empty()));
    let sorted = c
        .get("a/", Some(GetOptions::new().with_prefix().with_sort(SortTarget::Value, SortOrder::Descend)))
        .await
        .unwrap();
    let values: Vec<&[u8]> = sorted.kvs().iter().map(|kv| kv.value()).collect();
    assert_eq!(values, [&b"uno"[..], b"two", b"three"], "sorted by value, descending");
    let old = c.get("a/1", Some(GetOptions::new().with_revision(first))).await.unwrap();
    assert_eq!(old.kvs()[0].value(), b"one", "a read at a past revision");
    let stale = c.get("a/1", Some(GetOptions::new().with_serializable())).await.unwrap();
    assert!(stale.kvs().len() <= 1);

    // Deletes: a range with its previous values.
    let del = c.delete("a/", Some(DeleteOptions::new().with_prefix().with_prev_key())).await.unwrap();
    assert_eq!(del.deleted(), 3);
    assert_eq!(del.prev_kvs().len(), 3);
    assert_eq!(c.get("a/", Some(GetOptions::new().with_prefix())).await.unwrap().count(), 0);

    // A transaction: compare, then one branch, with each operation's answer.
    let txn = Txn::new()
        .when([Compare::value("c", CompareOp::Equal, "sea")])
        .and_then([TxnOp::put("d", "dee", None), TxnOp::get("b/", Some(GetOptions::new().with_prefix()))])
        .or_else([TxnOp::put("d", "never", None)]);
    let t = c.txn(txn).await.expect("txn");
    assert!(t.succeeded());
    match &t.op_responses()[1] {
        TxnOpResponse::Get(g) => assert_eq!(g.kvs()[0].value(), b"bee"),
        other => panic!("a get's answer, not {other:?}"),
    }
    let txn = Txn::new()
        .when([Compare::version("d", CompareOp::Greater, 5)])
        .and_then([TxnOp::put("e", "never", None)])
        .or_else([TxnOp::delete("c", Some(DeleteOptions::new().with_prev_key()))]);
    let t = c.txn(txn).await.expect("txn");
    assert!(!t.succeeded());
    match &t.op_responses()[0] {
        TxnOpResponse::Delete(d) => assert_eq!(d.prev_kvs()[0].value(), b"sea"),
        other => panic!("a delete's answer, not {other:?}"),
    }
    assert_eq!(c.get("e", None).await.unwrap().count(), 0, "the other branch did not run");

    // Compaction: reads below it get etcd's error text.
    let now = c.put("f", "1", None).await.unwrap().header().unwrap().revision();
    c.compact(now, None).await.expect("compact");
    let err = c.get("f", Some(GetOptions::new().with_revision(first))).await.unwrap_err();
    assert!(err.to_string().contains("required revision has been compacted"), "{err}");
    // Bad input: an empty key.
    let err = c.put("", "x", None).await.unwrap_err();
    assert!(err.to_string().contains("key is not provided"), "{err}");
    // A transaction writing one key twice.
    let txn = Txn::new().and_then([TxnOp::put("g", "1", None), TxnOp::put("g", "2", None)]);
    let err = c.txn(txn).await.unwrap_err();
    assert!(err.to_string().contains("duplicate key"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leases_grant_keepalive_time_to_live_list_and_revoke() {
    let (cluster, addrs) = etcd_cluster();
    cluster.wait_leader(Duration::from_secs(20)).await;
    let mut c = connect(&addrs[0]).await;
    let lease = c.lease_grant(30, None).await.expect("grant");
    assert_eq!(lease.ttl(), 30);
    let id = lease.id();
    c.put("svc/a", "1", Some(PutOptions::new().with_lease(id))).await.expect("put with lease");
    c.put("svc/b", "2", Some(PutOptions::new().with_lease(id))).await.expect("put with lease");
    assert_eq!(c.get("svc/a", None).await.unwrap().kvs()[0].lease(), id);
    let (mut keeper, mut stream) = c.lease_keep_alive(id).await.expect("keepalive stream");
    keeper.keep_alive().await.expect("send keepalive");
    let ka = stream.message().await.expect("keepalive answer").expect("an answer");
    assert_eq!((ka.id(), ka.ttl()), (id, 30));
    let ttl = c.lease_time_to_live(id, Some(LeaseTimeToLiveOptions::new().with_keys())).await.unwrap();
    assert_eq!(ttl.granted_ttl(), 30);
    assert!(ttl.ttl() > 25 && ttl.ttl() <= 30, "remaining {}", ttl.ttl());
    assert_eq!(ttl.keys().len(), 2);
    assert!(c.leases().await.unwrap().leases().iter().any(|l| l.id() == id));
    c.lease_revoke(id).await.expect("revoke");
    assert_eq!(c.get("svc/", Some(GetOptions::new().with_prefix())).await.unwrap().count(), 0, "keys gone");
    assert_eq!(c.lease_time_to_live(id, None).await.unwrap().ttl(), -1, "gone: TTL -1, as etcd");
    let err = c.lease_revoke(id).await.unwrap_err();
    assert!(err.to_string().contains("requested lease not found"), "{err}");
    let err = c.put("x", "1", Some(PutOptions::new().with_lease(id))).await.unwrap_err();
    assert!(err.to_string().contains("requested lease not found"), "{err}");
    // A keepalive for a lease that does not exist: TTL 0.
    keeper.keep_alive().await.expect("send keepalive");
    let ka = stream.message().await.expect("keepalive answer").expect("an answer");
    assert_eq!(ka.ttl(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watches_replay_follow_filter_cancel_and_refuse_a_compacted_start() {
    let (cluster, addrs) = etcd_cluster();
    cluster.wait_leader(Duration::from_secs(20)).await;
    let mut c = connect(&addrs[1]).await;
    let start = c.put("w/1", "a", None).await.unwrap().header().unwrap().revision();
    c.put("w/2", "b", None).await.unwrap();
    c.put("other", "x", None).await.unwrap();
    let mut stream = c
        .watch("w/", Some(WatchOptions::new().with_prefix().with_start_revision(start).with_prev_key()))
        .await
        .expect("watch");
    let created = stream.message().await.unwrap().expect("created");
    assert!(created.created());
    let watch_id = created.watch_id();
    c.put("w/1", "c", None).await.unwrap();
    c.delete("w/2", None).await.unwrap();
    let mut events = Vec::new();
    while events.len() < 4 {
        let resp = tokio::time::timeout(Duration::from_secs(10), stream.message())
            .await
            .expect("events in time")
            .expect("stream")
            .expect("a message");
        for e in resp.events() {
            let kv = e.kv().expect("kv");
            events.push((
                e.event_type(),
                String::from_utf8_lossy(kv.key()).into_owned(),
                e.prev_kv().map(|p| p.value().to_vec()),
            ));
        }
    }
    assert_eq!(
        events,
        vec![
            (EventType::Put, "w/1".into(), None),
            (EventType::Put, "w/2".into(), None),
            (EventType::Put, "w/1".into(), Some(b"a".to_vec())),
            (EventType::Delete, "w/2".into(), Some(b"b".to_vec())),
        ],
        "history, then live, in order, with previous values"
    );
    stream.cancel(watch_id).await.expect("cancel");
    let now = c.put("w/3", "d", None).await.unwrap().header().unwrap().revision();
    c.compact(now, None).await.expect("compact");
    let mut stream =
        c.watch("w/", Some(WatchOptions::new().with_prefix().with_start_revision(start))).await.unwrap();
    let mut resp = stream.message().await.unwrap().expect("a message");
    if resp.created() && !resp.canceled() {
        resp = stream.message().await.unwrap().expect("a message");
    }
    assert!(resp.canceled(), "{resp:?}");
    assert_eq!(resp.compact_revision(), now);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_and_status() {
    let (cluster, addrs) = etcd_cluster();
    let leader = cluster.wait_leader(Duration::from_secs(20)).await;
    let mut c = connect(&addrs[2]).await;
    let list = c.member_list().await.expect("member list");
    let mut ids: Vec<u64> = list.members().iter().map(|m| m.id()).collect();
    ids.sort_unstable();
    assert_eq!(ids, [1, 2, 3]);
    let m1 = list.members().iter().find(|m| m.id() == 1).unwrap();
    assert_eq!(m1.client_urls(), [format!("http://{}", addrs[0])]);
    assert_eq!(m1.peer_urls(), [format!("http://{}", cluster.addr(1))]);
    let st = c.status().await.expect("status");
    assert_eq!(st.leader(), leader);
    assert!(st.version().starts_with("3.5.0+graft"));
    assert!(st.raft_index() > 0 && st.db_size() > 0);
    assert_eq!(st.header().unwrap().member_id(), 3);
    // Every member hashes the same state the same way.
    let rev = c.put("h", "1", None).await.unwrap().header().unwrap().revision();
    let mut hashes = Vec::new();
    for a in &addrs {
        let mut m = connect(a).await;
        hashes.push(m.hash_kv(rev).await.expect("hash kv").hash());
    }
    assert!(hashes.windows(2).all(|w| w[0] == w[1]), "{hashes:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_resumes_on_another_member_and_a_lease_outlives_a_leader_kill() {
    let (mut cluster, addrs) = etcd_cluster();
    let leader = cluster.wait_leader(Duration::from_secs(20)).await;
    // The watch is served by a follower, which is then killed; the client
    // resumes on another member from the revision after its last event.
    let served_by = if leader == 1 { 2 } else { 1 };
    let other = (1..=3).find(|&id| id != leader && id != served_by).unwrap_or(leader);
    let mut writer = connect(&addrs[leader as usize - 1]).await;
    let mut watcher = connect(&addrs[served_by as usize - 1]).await;
    let start = writer.put("r/0", "0", None).await.unwrap().header().unwrap().revision();
    let mut stream = watcher
        .watch("r/", Some(WatchOptions::new().with_prefix().with_start_revision(start)))
        .await
        .unwrap();
    let mut written = vec![start];
    for i in 1..50 {
        written.push(
            writer
                .put(format!("r/{}", i % 7), format!("{i}"), None)
                .await
                .unwrap()
                .header()
                .unwrap()
                .revision(),
        );
    }
    let mut seen: Vec<i64> = Vec::new();
    while seen.len() < 20 {
        let resp = stream.message().await.expect("stream").expect("message");
        seen.extend(resp.events().iter().filter_map(|e| e.kv().map(|kv| kv.mod_revision())));
    }
    cluster.kill(served_by);
    // Drain what the dead member's stream still delivers, then resume.
    while let Ok(Some(resp)) = stream.message().await {
        seen.extend(resp.events().iter().filter_map(|e| e.kv().map(|kv| kv.mod_revision())));
    }
    let next = seen.last().copied().unwrap_or(start) + 1;
    for i in 50..80 {
        written.push(
            writer
                .put(format!("r/{}", i % 7), format!("{i}"), None)
                .await
                .unwrap()
                .header()
                .unwrap()
                .revision(),
        );
    }
    let mut resumed = connect(&addrs[other as usize - 1]).await;
    let mut stream =
        resumed.watch("r/", Some(WatchOptions::new().with_prefix().with_start_revision(next))).await.unwrap();
    let last = *written.last().unwrap();
    while seen.last().is_none_or(|&r| r < last) {
        let resp = tokio::time::timeout(Duration::from_secs(10), stream.message())
            .await
            .expect("events in time")
            .expect("stream")
            .expect("message");
        seen.extend(resp.events().iter().filter_map(|e| e.kv().map(|kv| kv.mod_revision())));
    }
    assert_eq!(seen, written, "every write once, in order, across the serving member's death");

    // A lease kept alive through a member that survives, across a kill of
    // the leader: still alive afterwards, with its key.
    let survivor = other;
    let mut c = connect(&addrs[survivor as usize - 1]).await;
    let id = c.lease_grant(10, None).await.unwrap().id();
    c.put("held", "1", Some(PutOptions::new().with_lease(id))).await.unwrap();
    let (mut keeper, mut ka) = c.lease_keep_alive(id).await.unwrap();
    cluster.start_member(served_by);
    cluster.kill(leader);
    for _ in 0..6 {
        tokio::time::sleep(Duration::from_secs(2)).await;
        // Keepalives fail during the election and succeed after it.
        if keeper.keep_alive().await.is_ok() {
            let _ = tokio::time::timeout(Duration::from_secs(5), ka.message()).await;
        }
    }
    let ttl = c.lease_time_to_live(id, None).await.expect("time to live after the failover");
    assert!(ttl.ttl() > 0, "the lease survived 12 s of a 10 s TTL by its keepalives: {}", ttl.ttl());
    assert_eq!(c.get("held", None).await.unwrap().count(), 1, "its key too");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nested_transactions_and_puts_keeping_the_value_or_lease() {
    let (cluster, addrs) = etcd_cluster();
    cluster.wait_leader(Duration::from_secs(20)).await;
    let mut c = connect(&addrs[0]).await;
    c.put("n/a", "1", None).await.unwrap();
    // The nested compare sees the outer branch's earlier write.
    let inner = Txn::new()
        .when([Compare::value("n/b", CompareOp::Equal, "2")])
        .and_then([TxnOp::put("n/c", "saw b", None)])
        .or_else([TxnOp::put("n/c", "missed b", None)]);
    let outer = Txn::new()
        .when([Compare::value("n/a", CompareOp::Equal, "1")])
        .and_then([TxnOp::put("n/b", "2", None), TxnOp::txn(inner)]);
    let t = c.txn(outer).await.expect("nested txn");
    assert!(t.succeeded());
    match &t.op_responses()[1] {
        TxnOpResponse::Txn(inner) => assert!(inner.succeeded(), "the nested compare saw n/b"),
        other => panic!("a nested transaction's answer, not {other:?}"),
    }
    assert_eq!(c.get("n/c", None).await.unwrap().kvs()[0].value(), b"saw b");
    // A nested transaction writing a key its outer branch writes is refused.
    let clash = Txn::new().and_then([
        TxnOp::put("n/d", "1", None),
        TxnOp::txn(Txn::new().and_then([TxnOp::put("n/d", "2", None)])),
    ]);
    let err = c.txn(clash).await.unwrap_err();
    assert!(err.to_string().contains("duplicate key"), "{err}");

    // ignore_value keeps the value and takes the new lease; ignore_lease
    // keeps the lease and takes the new value.
    let lease = c.lease_grant(60, None).await.unwrap().id();
    c.put("n/a", "", Some(PutOptions::new().with_ignore_value().with_lease(lease)))
        .await
        .expect("ignore_value");
    let kv = c.get("n/a", None).await.unwrap().kvs()[0].clone();
    assert_eq!((kv.value(), kv.lease()), (&b"1"[..], lease));
    c.put("n/a", "3", Some(PutOptions::new().with_ignore_lease())).await.expect("ignore_lease");
    let kv = c.get("n/a", None).await.unwrap().kvs()[0].clone();
    assert_eq!((kv.value(), kv.lease()), (&b"3"[..], lease));
    // A compare on the lease.
    let on_lease = |id| Txn::new().when([Compare::lease("n/a", CompareOp::Equal, id)]);
    assert!(c.txn(on_lease(lease)).await.unwrap().succeeded());
    assert!(!c.txn(on_lease(lease + 1)).await.unwrap().succeeded());
    // Both refuse a key that does not exist, and contradictory options.
    let err = c.put("n/none", "", Some(PutOptions::new().with_ignore_value())).await.unwrap_err();
    assert!(err.to_string().contains("key not found"), "{err}");
    let err = c.put("n/a", "x", Some(PutOptions::new().with_ignore_value())).await.unwrap_err();
    assert!(err.to_string().contains("value is provided"), "{err}");
    assert_eq!(c.get("n/none", None).await.unwrap().count(), 0, "nothing written");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_progress_request_never_claims_more_than_the_watches_have() {
    let (cluster, addrs) = etcd_cluster();
    cluster.wait_leader(Duration::from_secs(20)).await;
    let mut c = connect(&addrs[0]).await;
    c.put("other", "1", None).await.unwrap();
    let mut stream = c.watch("p/", Some(WatchOptions::new().with_prefix())).await.unwrap();
    assert!(stream.message().await.unwrap().expect("created").created());
    // Nothing delivered yet: no progress answer (a latest-revision header
    // would claim events this watch has not had).
    stream.request_progress().await.expect("progress request");
    let quiet = tokio::time::timeout(Duration::from_millis(800), stream.message()).await;
    assert!(quiet.is_err(), "no answer before the watch has anything: {quiet:?}");
    let rev = c.put("p/1", "x", None).await.unwrap().header().unwrap().revision();
    let got = stream.message().await.unwrap().expect("the event");
    assert_eq!(got.events()[0].kv().map(|kv| kv.mod_revision()), Some(rev));
    stream.request_progress().await.expect("progress request");
    let progress = tokio::time::timeout(Duration::from_secs(5), stream.message())
        .await
        .expect("a progress answer")
        .unwrap()
        .expect("message");
    assert!(progress.events().is_empty());
    assert_eq!(progress.header().map(|h| h.revision()), Some(rev), "exactly what was delivered");
}
