//! Replaying history for a watch that starts in the past: the changes of a
//! range of revisions that a filter follows, read from the multi-version
//! store's `revs` and `kv_history` tables in one read transaction.

use redb::{Database, ReadTransaction, ReadableDatabase};

use crate::error::StoreError;
use crate::mvcc::{self, record::decode_history, MvccMeta, RevRecord, HISTORY, REVS};
use crate::protocol::{WatchEvent, WatchFilter};
use crate::storage::META;

/// What one call read.
#[derive(Debug, Default)]
pub struct Chunk {
    /// The changes, in revision order; never a partial revision.
    pub events: Vec<WatchEvent>,
    /// The next revision to read from (`to + 1` once the range is done).
    pub next: u64,
}

/// A replay that cannot go on.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    /// The start is below the compaction point.
    #[error("revision {requested} has been compacted; the oldest revision available is {oldest}")]
    Compacted {
        /// The revision asked for.
        requested: u64,
        /// The oldest revision still available.
        oldest: u64,
    },
    /// The database failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Reads the changes `filter` follows in revisions `from..=to`, stopping
/// after about `max_events` (at a revision boundary). Blocking: call it
/// off the runtime's thread.
pub fn read(
    db: &Database,
    filter: &WatchFilter,
    from: u64,
    to: u64,
    prev_kv: bool,
    max_events: usize,
) -> Result<Chunk, ReplayError> {
    let rtx = db.begin_read().map_err(StoreError::from)?;
    let meta = position(&rtx)?;
    if from < meta.compacted {
        return Err(ReplayError::Compacted { requested: from, oldest: meta.compacted });
    }
    let revs = rtx.open_table(REVS).map_err(StoreError::from)?;
    let history = rtx.open_table(HISTORY).map_err(StoreError::from)?;
    let mut chunk = Chunk { events: Vec::new(), next: to.saturating_add(1) };
    for item in revs.range(from..=to).map_err(StoreError::from)? {
        let (rev, rec) = item.map_err(StoreError::from)?;
        let rev = rev.value();
        if chunk.events.len() >= max_events {
            chunk.next = rev;
            break;
        }
        for (key, put) in RevRecord::decode(rec.value())?.writes {
            if !filter.matches(&key) {
                continue;
            }
            let kv = if put {
                let row = history.get((key.as_ref(), rev)).map_err(StoreError::from)?;
                row.map(|v| decode_history(v.value())).transpose()?.flatten()
            } else {
                None
            };
            let prev = if prev_kv {
                let mut before =
                    history.range((key.as_ref(), 0u64)..(key.as_ref(), rev)).map_err(StoreError::from)?;
                match before.next_back().transpose().map_err(StoreError::from)? {
                    Some((_, v)) => decode_history(v.value())?,
                    None => None,
                }
            } else {
                None
            };
            chunk.events.push(WatchEvent { key, revision: rev, kv, prev });
        }
    }
    Ok(chunk)
}

fn position(rtx: &ReadTransaction) -> Result<MvccMeta, StoreError> {
    let meta = rtx.open_table(META)?;
    mvcc::meta_of(&meta)?
        .ok_or_else(|| StoreError::Corrupt { what: MvccMeta::KEY.into(), message: "missing".into() })
}
