//! The fault tests' own checkers, shown to fail on what they must catch:
//! a check that cannot fail proves nothing.

mod util;

use bytes::Bytes;
use graft_kv::protocol::{KeyValue, WatchEvent};
use util::locks::{self, LockRecorded};
use util::watchers;

fn kv(v: &str, create: u64, modr: u64, version: u64) -> KeyValue {
    KeyValue {
        value: Bytes::copy_from_slice(v.as_bytes()),
        create_revision: create,
        mod_revision: modr,
        version,
        lease: 0,
    }
}

fn ev(key: &str, revision: u64, new: Option<KeyValue>, prev: Option<KeyValue>) -> WatchEvent {
    WatchEvent { key: Bytes::copy_from_slice(key.as_bytes()), revision, kv: new, prev }
}

fn history() -> Vec<WatchEvent> {
    vec![
        ev("a", 5, Some(kv("1", 5, 5, 1)), None),
        ev("b", 5, Some(kv("1", 5, 5, 1)), None),
        ev("a", 7, Some(kv("2", 5, 7, 2)), Some(kv("1", 5, 5, 1))),
        ev("a", 9, None, Some(kv("2", 5, 7, 2))),
    ]
}

#[test]
fn committed_writes_with_a_wrong_previous_record_or_order_are_refused() {
    assert_eq!(watchers::check_committed(&history()), Ok(()));
    let mut wrong_prev = history();
    wrong_prev[2].prev = None;
    assert!(watchers::check_committed(&wrong_prev).is_err());
    let mut reordered = history();
    reordered.swap(2, 3);
    assert!(watchers::check_committed(&reordered).is_err());
}

#[test]
fn a_lock_list_with_two_holders_at_once_or_a_lost_append_is_refused() {
    let rec = LockRecorded {
        acked: vec!["10:1:1;".into(), "10:1:2;".into(), "14:2:1;".into()],
        unknown: vec!["14:2:2;".into()],
        ..LockRecorded::default()
    };
    assert!(locks::check(b"10:1:1;10:1:2;14:2:1;", &rec).is_ok());
    // The unknown append may be there.
    assert!(locks::check(b"10:1:1;10:1:2;14:2:1;14:2:2;", &rec).is_ok());
    // A holder with an older token wrote after a newer one.
    let err = locks::check(b"10:1:1;14:2:1;10:1:2;", &rec).unwrap_err();
    assert!(err.contains("two holders at once"), "{err}");
    // An acknowledged append is missing.
    let err = locks::check(b"10:1:1;14:2:1;", &rec).unwrap_err();
    assert!(err.contains("lost"), "{err}");
    // An entry nobody appended, or one appended twice.
    assert!(locks::check(b"10:1:1;10:1:2;10:9:9;14:2:1;", &rec).is_err());
    assert!(locks::check(b"10:1:1;10:1:1;10:1:2;14:2:1;", &rec).is_err());
}

#[test]
fn a_watcher_with_a_gap_a_duplicate_a_reordering_or_a_phantom_is_refused() {
    let committed = history();
    let end = committed.last().map_or(0, |e| e.revision);
    let log = |start: u64, events: Vec<WatchEvent>| watchers::WatchLog {
        start,
        seen: events.last().map_or(0, |e| e.revision),
        events,
        error: None,
    };
    assert!(watchers::check_log(&log(1, committed.clone()), &committed, end).is_ok());
    assert!(watchers::check_log(&log(7, committed[2..].to_vec()), &committed, end).is_ok());
    let mut gap = committed.clone();
    gap.remove(2);
    assert!(watchers::check_log(&log(1, gap), &committed, end).is_err());
    let mut dup = committed.clone();
    dup.insert(3, committed[2].clone());
    assert!(watchers::check_log(&log(1, dup), &committed, end).is_err());
    let mut reordered = committed.clone();
    reordered.swap(0, 1);
    assert!(watchers::check_log(&log(1, reordered), &committed, end).is_err());
    let mut phantom = committed.clone();
    phantom.push(ev("z", 11, Some(kv("x", 11, 11, 1)), None));
    assert!(watchers::check_log(&log(1, phantom), &committed, end).is_err());
    // Started late, missing the start: a gap too.
    assert!(watchers::check_log(&log(5, committed[1..].to_vec()), &committed, end).is_err());
    let ended = watchers::WatchLog {
        start: 1,
        events: committed.clone(),
        seen: end,
        error: Some("compacted".into()),
    };
    assert!(watchers::check_log(&ended, &committed, end).is_err());
    // Every event so far, but stuck short of the healed cluster's revision.
    let stuck = watchers::WatchLog { start: 1, events: committed[..3].to_vec(), seen: 4, error: None };
    let err = watchers::check_log(&stuck, &committed[..3], end).unwrap_err();
    assert!(err.contains("stuck"), "{err}");
}
