//! The multi-version store against a model: a seeded random sequence of
//! puts, deletes and prefix deletes, compactions and purges, with every
//! read at every readable revision checked against the model's history.

use std::collections::BTreeMap;

use bytes::Bytes;
use graft_core::rng::Rng;
use redb::backends::InMemoryBackend;
use redb::{Database, ReadableDatabase, ReadableTableMetadata};

use super::compact::{self, Retention};
use super::read::View;
use super::*;
use crate::protocol::ApiError;

fn db() -> Database {
    Database::builder().create_with_backend(InMemoryBackend::new()).unwrap()
}

/// Every state the model went through: revision -> live keys.
type Model = BTreeMap<u64, BTreeMap<Bytes, KeyValue>>;

fn b(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

/// Writes one revision with `f` and commits it.
fn write(db: &Database, rev: u64, f: impl FnOnce(&mut Writer<'_>)) -> Vec<(Bytes, bool)> {
    let wtx = db.begin_write().unwrap();
    let writes = {
        let mut w = Writer::open(&wtx).unwrap();
        w.begin(rev);
        f(&mut w);
        w.finish(rev * 10).unwrap().into_iter().map(|e| (e.key, e.kv.is_some())).collect()
    };
    wtx.commit().unwrap();
    writes
}

fn view_get(db: &Database, meta: MvccMeta, key: &[u8], at: u64) -> Result<Option<KeyValue>, ApiError> {
    let rtx = db.begin_read().unwrap();
    View::new(&rtx, meta).get(key, at).unwrap()
}

fn view_scan(
    db: &Database,
    meta: MvccMeta,
    prefix: &[u8],
    at: u64,
) -> Result<Vec<(Bytes, KeyValue)>, ApiError> {
    let rtx = db.begin_read().unwrap();
    View::new(&rtx, meta).scan(prefix, usize::MAX, at).unwrap()
}

#[test]
fn revisions_count_writes_within_a_life_of_the_key() {
    let db = db();
    write(&db, 3, |w| {
        w.put(&b("k"), &b("a"), 0).unwrap();
    });
    write(&db, 5, |w| {
        assert_eq!(w.put(&b("k"), &b("b"), 0).unwrap().map(|p| p.value), Some(b("a")));
    });
    let meta = MvccMeta { revision: 5, ..MvccMeta::default() };
    let kv = view_get(&db, meta, b"k", 0).unwrap().unwrap();
    assert_eq!((kv.create_revision, kv.mod_revision, kv.version), (3, 5, 2));
    write(&db, 7, |w| {
        assert!(w.delete(&b("k")).unwrap().is_some());
        assert!(w.delete(&b("k")).unwrap().is_none(), "a second delete finds nothing");
    });
    let writes = write(&db, 9, |w| {
        w.put(&b("k"), &b("c"), 0).unwrap();
    });
    assert_eq!(writes, vec![(b("k"), true)]);
    let meta = MvccMeta { revision: 9, ..MvccMeta::default() };
    let kv = view_get(&db, meta, b"k", 0).unwrap().unwrap();
    assert_eq!((kv.create_revision, kv.mod_revision, kv.version), (9, 9, 1), "a new life");
    assert_eq!(view_get(&db, meta, b"k", 8).unwrap(), None, "deleted at 7");
    assert_eq!(view_get(&db, meta, b"k", 4).unwrap().unwrap().value, b("a"));
    assert_eq!(view_get(&db, meta, b"k", 2).unwrap(), None, "not yet created");
    assert_eq!(view_get(&db, meta, b"k", 10), Err(ApiError::FutureRevision { requested: 10, current: 9 }));
}

#[test]
fn an_unchanged_revision_writes_no_revision_record() {
    let db = db();
    let writes = write(&db, 4, |w| {
        assert!(w.delete(&b("absent")).unwrap().is_none());
    });
    assert!(writes.is_empty());
    let rtx = db.begin_read().unwrap();
    assert_eq!(rtx.open_table(REVS).unwrap().len().unwrap(), 0);
}

/// A seeded run: random writes to a few keys under two prefixes, random
/// compactions, purges with small budgets; after each step every read at
/// every revision from the compaction point on equals the model, every
/// read below it is refused, and once purged the history holds no row a
/// read could not need.
#[test]
fn reads_at_every_revision_match_the_model_across_compactions() {
    for seed in 0..20u64 {
        run_model(seed);
    }
}

fn run_model(seed: u64) {
    let replay = format!("seed {seed} (replay: this test, run_model({seed}))");
    let mut rng = Rng::new(seed);
    let db = db();
    let keys: Vec<Bytes> = ["a/1", "a/2", "a/22", "b/1", "b/2", "a"].iter().map(|k| b(k)).collect();
    let mut model: Model = BTreeMap::new();
    let mut live: BTreeMap<Bytes, KeyValue> = BTreeMap::new();
    model.insert(0, live.clone());
    let mut meta = MvccMeta::default();
    let mut rev = 0;
    for _ in 0..120 {
        rev += rng.range(1, 3);
        let ops = rng.range(1, 4);
        let mut touched = Vec::new();
        let wtx = db.begin_write().unwrap();
        {
            let mut w = Writer::open(&wtx).unwrap();
            w.begin(rev);
            for _ in 0..ops {
                let key = keys[rng.range(0, keys.len() as u64) as usize].clone();
                if touched.contains(&key) {
                    continue;
                }
                touched.push(key.clone());
                match rng.range(0, 10) {
                    0..=5 => {
                        let value = Bytes::from(format!("v{rev}"));
                        let prev = w.put(&key, &value, 0).unwrap();
                        assert_eq!(prev.as_ref(), live.get(&key), "{replay}");
                        let kv = KeyValue {
                            value,
                            create_revision: prev.as_ref().map_or(rev, |p| p.create_revision),
                            mod_revision: rev,
                            version: prev.map_or(1, |p| p.version + 1),
                            lease: 0,
                        };
                        live.insert(key, kv);
                    }
                    6..=8 => {
                        let prev = w.delete(&key).unwrap();
                        assert_eq!(prev, live.remove(&key), "{replay}");
                    }
                    _ => {
                        let prefix = key.slice(..1);
                        let gone = w.delete_prefix(&prefix).unwrap();
                        let want: Vec<Bytes> =
                            live.keys().filter(|k| k.starts_with(&prefix)).cloned().collect();
                        assert_eq!(gone.iter().map(|(k, _)| k.clone()).collect::<Vec<_>>(), want, "{replay}");
                        live.retain(|k, _| !k.starts_with(&prefix));
                    }
                }
            }
            w.finish(rev).unwrap();
            if rng.chance(0.1) {
                meta.compacted = rng.range(meta.compacted, rev + 1);
            }
            w.purge(&mut meta, rng.range(1, 20) as usize).unwrap();
        }
        meta.revision = rev;
        wtx.commit().unwrap();
        model.insert(rev, live.clone());
        check_reads(&db, meta, &model, &replay);
    }
    // Purged to the end, history holds for each key only what reads at
    // the compaction point or later need.
    let wtx = db.begin_write().unwrap();
    {
        let mut w = Writer::open(&wtx).unwrap();
        while meta.purged < meta.compacted {
            w.purge(&mut meta, 7).unwrap();
        }
    }
    wtx.commit().unwrap();
    check_reads(&db, meta, &model, &replay);
    let rtx = db.begin_read().unwrap();
    let history = rtx.open_table(HISTORY).unwrap();
    for item in history.iter().unwrap() {
        let (k, v) = item.unwrap();
        let (key, r) = k.value();
        if r >= meta.compacted {
            continue;
        }
        // A row below the compaction point: it must be the key's state at
        // that point, live.
        let at_c = model.range(..=meta.compacted).next_back().unwrap().1.get(key);
        assert!(!v.value().is_empty(), "{replay}: a tombstone below the compaction point survived");
        let rows: Vec<(u64, bool)> = history
            .range((key, 0u64)..)
            .unwrap()
            .map(|i| i.unwrap())
            .take_while(|(k, _)| k.value().0 == key)
            .map(|(k, v)| (k.value().1, v.value().is_empty()))
            .collect();
        assert_eq!(
            at_c.map(|kv| kv.mod_revision),
            Some(r),
            "{replay}: a useless row ({key:?}, {r}) survived compaction at {}; the key's rows (revision, tombstone): {rows:?}",
            meta.compacted
        );
    }
    let revs = rtx.open_table(REVS).unwrap();
    assert!(
        revs.range(..meta.compacted).unwrap().next().is_none(),
        "{replay}: revision rows below compaction"
    );
}

fn check_reads(db: &Database, meta: MvccMeta, model: &Model, replay: &str) {
    for at in 0..=meta.revision + 1 {
        let want_state = model.range(..=at).next_back().map(|(_, s)| s);
        for prefix in ["", "a", "a/2", "b/", "zz"] {
            let got = view_scan(db, meta, prefix.as_bytes(), at);
            if at > meta.revision {
                assert!(matches!(got, Err(ApiError::FutureRevision { .. })), "{replay}");
                continue;
            }
            if at != 0 && at != meta.revision && at < meta.compacted {
                assert_eq!(
                    got,
                    Err(ApiError::Compacted { requested: at, oldest: meta.compacted }),
                    "{replay}: scan at {at}"
                );
                continue;
            }
            let state = if at == 0 { model.values().next_back() } else { want_state };
            let want: Vec<(Bytes, KeyValue)> = state
                .map(|s| s.iter().filter(|(k, _)| k.starts_with(prefix.as_bytes())))
                .into_iter()
                .flatten()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            assert_eq!(got, Ok(want.clone()), "{replay}: scan {prefix:?} at {at}");
            for (k, v) in &want {
                assert_eq!(view_get(db, meta, k, at), Ok(Some(v.clone())), "{replay}: get {k:?} at {at}");
            }
        }
    }
}

#[test]
fn the_retention_policy_keeps_the_newest_revisions_and_the_last_hour() {
    let db = db();
    for rev in 1..=100u64 {
        let wtx = db.begin_write().unwrap();
        {
            let mut w = Writer::open(&wtx).unwrap();
            w.begin(rev);
            w.put(&b("k"), &b("v"), 0).unwrap();
            w.finish(rev * 1000).unwrap();
        }
        wtx.commit().unwrap();
    }
    let rtx = db.begin_read().unwrap();
    let revs = rtx.open_table(REVS).unwrap();
    let meta = MvccMeta { revision: 100, ..MvccMeta::default() };
    let by_count = Retention { keep_revisions: 30, keep_ms: 0 };
    assert_eq!(compact::target(&revs, meta, by_count, 0, 1).unwrap(), Some(70));
    assert_eq!(compact::target(&revs, meta, by_count, 0, 71).unwrap(), None, "too small a step");
    // Revision r was written at r seconds: keeping 10 s at 100 s keeps 90..
    let by_age = Retention { keep_revisions: 0, keep_ms: 10_000 };
    assert_eq!(compact::target(&revs, meta, by_age, 100_000, 1).unwrap(), Some(90));
    // Whichever keeps less wins.
    let both = Retention { keep_revisions: 5, keep_ms: 10_000 };
    assert_eq!(compact::target(&revs, meta, both, 100_000, 1).unwrap(), Some(95));
    let none = Retention { keep_revisions: 0, keep_ms: 0 };
    assert_eq!(compact::target(&revs, meta, none, 100_000, 1).unwrap(), None);
    let already = MvccMeta { revision: 100, compacted: 95, purged: 95 };
    assert_eq!(compact::target(&revs, already, both, 100_000, 1).unwrap(), None);
}

#[test]
fn a_state_machine_from_before_revisions_is_upgraded() {
    let db = db();
    let wtx = db.begin_write().unwrap();
    {
        let mut t = wtx.open_table(CURRENT).unwrap();
        let mut old = 12u64.to_be_bytes().to_vec();
        old.extend_from_slice(b"hello");
        t.insert(&b"k"[..], old.as_slice()).unwrap();
    }
    let meta = upgrade(&wtx, 20).unwrap();
    wtx.commit().unwrap();
    assert_eq!(meta, MvccMeta { revision: 20, compacted: 20, purged: 20 });
    let kv = view_get(&db, meta, b"k", 0).unwrap().unwrap();
    assert_eq!((kv.value, kv.create_revision, kv.mod_revision, kv.version), (b("hello"), 12, 12, 1));
    assert_eq!(view_get(&db, meta, b"k", 20).unwrap().map(|kv| kv.mod_revision), Some(12));
    assert_eq!(view_get(&db, meta, b"k", 19), Err(ApiError::Compacted { requested: 19, oldest: 20 }));
}

#[test]
fn a_corrupt_record_is_an_error_not_a_panic() {
    for junk in [&b""[..], b"short", &[0u8; 31][..]] {
        assert!(decode_record(junk).is_err(), "{junk:?}");
    }
    let kv = KeyValue { value: b("x"), create_revision: 1, mod_revision: 2, version: 3, lease: 4 };
    assert_eq!(decode_record(&encode_record(&kv)).unwrap(), kv);
}
