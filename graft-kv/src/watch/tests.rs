//! The hub on its own: filters, the registration seam, slow consumers,
//! snapshots.

use bytes::Bytes;

use super::*;
use crate::protocol::KeyValue;

fn put(key: &str, revision: u64, size: usize) -> WatchEvent {
    let kv = KeyValue {
        value: Bytes::from(vec![b'x'; size]),
        create_revision: revision,
        mod_revision: revision,
        version: 1,
        lease: 0,
    };
    WatchEvent { key: Bytes::copy_from_slice(key.as_bytes()), revision, kv: Some(kv), prev: None }
}

fn filter(key: &str, prefix: bool) -> WatchFilter {
    WatchFilter { key: Bytes::copy_from_slice(key.as_bytes()), prefix }
}

fn keys(batch: &[WatchEvent]) -> Vec<(String, u64)> {
    batch.iter().map(|e| (String::from_utf8_lossy(&e.key).into_owned(), e.revision)).collect()
}

#[tokio::test]
async fn each_watcher_gets_the_changes_its_filter_follows_in_order() {
    let hub = WatchHub::new(10);
    let mut one = hub.subscribe(filter("a", false));
    let mut all_a = hub.subscribe(filter("a", true));
    let mut none = hub.subscribe(filter("zz", true));
    assert_eq!((one.live_from, all_a.live_from), (10, 10));
    hub.publish(12, &[put("a", 11, 1), put("ab", 11, 1), put("b", 12, 1)]);
    hub.publish(13, &[put("a", 13, 1)]);
    assert_eq!(keys(&one.next().await.unwrap()), [("a".into(), 11)]);
    assert_eq!(keys(&one.next().await.unwrap()), [("a".into(), 13)]);
    assert_eq!(keys(&all_a.next().await.unwrap()), [("a".into(), 11), ("ab".into(), 11)]);
    assert!(none.try_next().is_none());
    assert_eq!(hub.revision(), 13);
    // A watcher registered now learns where live changes start.
    let late = hub.subscribe(filter("a", false));
    assert_eq!(late.live_from, 13);
    assert_eq!(hub.watchers(), 4);
    drop((one, all_a, none, late));
    assert_eq!(hub.watchers(), 0, "dropping a subscription unregisters it");
}

#[tokio::test]
async fn a_watcher_that_falls_too_far_behind_is_cancelled_not_skipped() {
    let hub = WatchHub::new(0);
    let mut slow = hub.subscribe(filter("k", false));
    let mut fast = hub.subscribe(filter("k", false));
    let big = MAX_QUEUED_BYTES / 4;
    for rev in 1..=8 {
        hub.publish(rev, &[put("k", rev, big)]);
        // The fast one keeps up.
        assert_eq!(fast.next().await.map(|b| b[0].revision), Some(rev));
    }
    // The slow one got what fitted, then was cancelled: it drains what it
    // has, in order, and then learns why, instead of missing the rest.
    let mut got = Vec::new();
    while let Some(batch) = slow.next().await {
        got.extend(batch.iter().map(|e| e.revision));
    }
    assert!(!got.is_empty() && got.len() < 8, "{got:?}");
    assert_eq!(got, (1..=got.len() as u64).collect::<Vec<_>>(), "a prefix of the changes, in order");
    assert!(slow.cancelled().is_some_and(|r| r.contains("fell more than")), "{:?}", slow.cancelled());
    assert!(fast.cancelled().is_none());
    assert_eq!(hub.watchers(), 1);
}

#[tokio::test]
async fn a_snapshot_cancels_every_watcher_to_resume_from_history() {
    let hub = WatchHub::new(5);
    let mut w = hub.subscribe(filter("", true));
    hub.reset(100);
    assert!(w.next().await.is_none());
    assert!(w.cancelled().is_some_and(|r| r.contains("snapshot at revision 100")));
    assert_eq!(hub.revision(), 100);
    assert_eq!(hub.watchers(), 0);
}

#[test]
fn filters_match_a_key_or_a_prefix() {
    assert!(filter("a", false).matches(b"a"));
    assert!(!filter("a", false).matches(b"ab"));
    assert!(filter("a", true).matches(b"ab"));
    assert!(!filter("b", true).matches(b"ab"));
    assert!(filter("", true).matches(b"anything"));
}
