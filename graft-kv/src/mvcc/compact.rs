//! Compaction: removing the history no read can need any more, and the
//! retention policy that decides when the leader proposes a compaction.
//!
//! Compacting at revision C promises reads at every revision >= C. For a
//! key, such a read needs its last row at or below C and every row after
//! it; so every older row goes, and so does that last row if it is a
//! tombstone below C (the key was absent at C). Rows of [`super::REVS`]
//! below C go too (watch replay starts at C or later).
//!
//! The work is done a bounded number of rows at a time, with each applied
//! batch, walking the revisions below C in order: the keys they wrote are
//! exactly the keys that may have rows to remove.

use std::collections::HashSet;

use redb::{ReadableTable, Table};

use super::record::{MvccMeta, RevRecord};
use crate::error::StoreError;

/// The most history rows one applied batch removes.
pub const PURGE_BUDGET: usize = 512;

/// The most history rows a batch that wrote nothing removes.
pub const IDLE_PURGE_BUDGET: usize = 8192;

/// Removes history below `meta.compacted`, doing at most about `budget`
/// rows of work; returns how many rows it removed, and moves
/// `meta.purged` up to the compaction point once nothing is left to do.
pub fn purge(
    history: &mut Table<(&'static [u8], u64), &'static [u8]>,
    revs: &mut Table<u64, &'static [u8]>,
    meta: &mut MvccMeta,
    budget: usize,
) -> Result<usize, StoreError> {
    let compacted = meta.compacted;
    if meta.purged >= compacted {
        return Ok(0);
    }
    let mut removed = 0;
    let mut done_keys: HashSet<Vec<u8>> = HashSet::new();
    let mut done_revs = Vec::new();
    let mut pending = Vec::new();
    // A write at the compaction point itself supersedes older rows too;
    // its revision row stays (watches may start there), so it is visited
    // with every call that still has rows below the point.
    if let Some(rec) = revs.get(compacted)? {
        for (key, _) in RevRecord::decode(rec.value())?.writes {
            if done_keys.insert(key.to_vec()) {
                pending.push(key);
            }
        }
    }
    for key in pending.drain(..) {
        removed += purge_key(history, &key, compacted)?;
    }
    // Gather the keys of the oldest revisions (each usually has one row to
    // remove), then purge them in key order: neighbouring keys share
    // pages, so the removals touch each page once.
    for item in revs.range(..compacted)? {
        if removed + done_revs.len() + pending.len() >= budget {
            break;
        }
        let (rev, rec) = item?;
        let rec = RevRecord::decode(rec.value())?;
        done_revs.push(rev.value());
        for (key, _) in rec.writes {
            if done_keys.insert(key.to_vec()) {
                pending.push(key);
            }
        }
    }
    pending.sort_unstable();
    for key in pending.drain(..) {
        removed += purge_key(history, &key, compacted)?;
    }
    for rev in &done_revs {
        revs.remove(rev)?;
    }
    if revs.range(..compacted)?.next().is_none() {
        meta.purged = compacted;
    }
    Ok(removed + done_revs.len())
}

/// Removes the rows of `key` no read at `compacted` or later needs.
fn purge_key(
    history: &mut Table<(&'static [u8], u64), &'static [u8]>,
    key: &[u8],
    compacted: u64,
) -> Result<usize, StoreError> {
    // One pass over the key's rows up to the point: all but the last go,
    // and the last too if it is a tombstone below the point.
    let mut doomed: Vec<u64> = Vec::new();
    let mut last: Option<(u64, bool)> = None;
    for item in history.range((key, 0u64)..=(key, compacted))? {
        let (k, v) = item?;
        if let Some((rev, _)) = last {
            doomed.push(rev);
        }
        last = Some((k.value().1, v.value().is_empty()));
    }
    if let Some((rev, true)) = last {
        if rev < compacted {
            doomed.push(rev);
        }
    }
    for rev in &doomed {
        history.remove((key, *rev))?;
    }
    Ok(doomed.len())
}

/// How much history to keep (the cluster file's `[history]`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Retention {
    /// Keep at most this many revisions (0: no limit by count).
    pub keep_revisions: u64,
    /// Keep at most this long, in ms (0: no limit by age).
    pub keep_ms: u64,
}

/// The most revision records the age rule reads per decision, so that a
/// decision stays cheap; a longer backlog is compacted over several.
const AGE_SCAN_MAX: usize = 4096;

/// The revision to compact at now under `policy`, if it is at least
/// `min_step` past the current compaction point (so that compaction
/// entries stay rare).
pub fn target<T: ReadableTable<u64, &'static [u8]>>(
    revs: &T,
    meta: MvccMeta,
    policy: Retention,
    now_ms: u64,
    min_step: u64,
) -> Result<Option<u64>, StoreError> {
    let by_count = match policy.keep_revisions {
        0 => 0,
        keep => meta.revision.saturating_sub(keep),
    };
    let mut by_age = 0;
    if policy.keep_ms > 0 {
        let cutoff = now_ms.saturating_sub(policy.keep_ms);
        for item in revs.range(meta.compacted..)?.take(AGE_SCAN_MAX) {
            let (rev, rec) = item?;
            let rec = RevRecord::decode(rec.value())?;
            if rec.time_ms >= cutoff {
                // Keep this revision and everything after it.
                by_age = rev.value();
                break;
            }
            // Older than the cutoff: compact past it.
            by_age = rev.value() + 1;
        }
    }
    let target = by_count.max(by_age).min(meta.revision);
    Ok((target >= meta.compacted + min_step.max(1)).then_some(target))
}
