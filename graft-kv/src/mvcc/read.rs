//! Reads at the latest revision (one lookup in the live table) or at a past
//! one (the last history row at or below it), refused below the compacted
//! revision and above the state's own.

use bytes::Bytes;
use redb::{ReadTransaction, ReadableTable};

use super::record::{decode_history, decode_record, MvccMeta, CURRENT, HISTORY};
use crate::error::StoreError;
use crate::protocol::{ApiError, KeyValue};

/// A consistent view of the store in one read transaction.
pub struct View<'a> {
    rtx: &'a ReadTransaction,
    meta: MvccMeta,
}

/// A read's answer: the data, or a refusal for the asker (a compacted or
/// future revision); the outer error is the database failing.
pub type ReadResult<T> = Result<Result<T, ApiError>, StoreError>;

impl<'a> View<'a> {
    /// A view over `rtx`, whose store stands at `meta` (read from the same
    /// transaction).
    pub fn new(rtx: &'a ReadTransaction, meta: MvccMeta) -> View<'a> {
        View { rtx, meta }
    }

    /// The revision of the state this view reads.
    pub fn revision(&self) -> u64 {
        self.meta.revision
    }

    /// The oldest revision still readable.
    pub fn compacted(&self) -> u64 {
        self.meta.compacted
    }

    /// The store's whole position (revision, compaction and purge points).
    pub fn meta(&self) -> MvccMeta {
        self.meta
    }

    /// Which revision a read `at` (0: the latest) reads, or why it cannot.
    fn resolve(&self, at: u64) -> Result<Option<u64>, ApiError> {
        if at == 0 || at == self.meta.revision {
            return Ok(None);
        }
        if at > self.meta.revision {
            return Err(ApiError::FutureRevision { requested: at, current: self.meta.revision });
        }
        if at < self.meta.compacted {
            return Err(ApiError::Compacted { requested: at, oldest: self.meta.compacted });
        }
        Ok(Some(at))
    }

    /// `key` as it stood at revision `at` (0: now).
    pub fn get(&self, key: &[u8], at: u64) -> ReadResult<Option<KeyValue>> {
        let past = match self.resolve(at) {
            Ok(p) => p,
            Err(e) => return Ok(Err(e)),
        };
        Ok(Ok(match past {
            None => {
                let t = self.rtx.open_table(CURRENT)?;
                let found = t.get(key)?;
                found.map(|v| decode_record(v.value())).transpose()?
            }
            Some(at) => {
                let t = self.rtx.open_table(HISTORY)?;
                let last = t.range((key, 0u64)..=(key, at))?.next_back().transpose()?;
                match last {
                    Some((_, v)) => decode_history(v.value())?,
                    None => None,
                }
            }
        }))
    }

    /// Up to `limit` keys starting with `prefix` as they stood at revision
    /// `at` (0: now), in key order.
    pub fn scan(&self, prefix: &[u8], limit: usize, at: u64) -> ReadResult<Vec<(Bytes, KeyValue)>> {
        let past = match self.resolve(at) {
            Ok(p) => p,
            Err(e) => return Ok(Err(e)),
        };
        Ok(Ok(match past {
            None => scan_current(&self.rtx.open_table(CURRENT)?, prefix, limit)?,
            Some(at) => scan_history(&self.rtx.open_table(HISTORY)?, prefix, limit, at)?,
        }))
    }
}

/// Up to `limit` live keys starting with `prefix`, in key order.
pub(super) fn scan_current<T: ReadableTable<&'static [u8], &'static [u8]>>(
    t: &T,
    prefix: &[u8],
    limit: usize,
) -> Result<Vec<(Bytes, KeyValue)>, StoreError> {
    let mut out = Vec::new();
    for item in t.range::<&[u8]>(prefix..)? {
        if out.len() >= limit {
            break;
        }
        let (k, v) = item?;
        if !k.value().starts_with(prefix) {
            break;
        }
        out.push((Bytes::copy_from_slice(k.value()), decode_record(v.value())?));
    }
    Ok(out)
}

/// Up to `limit` keys starting with `prefix` as they stood at `at`: for
/// each key, its last history row at or below `at`, if that is not a
/// tombstone.
fn scan_history<T: ReadableTable<(&'static [u8], u64), &'static [u8]>>(
    t: &T,
    prefix: &[u8],
    limit: usize,
    at: u64,
) -> Result<Vec<(Bytes, KeyValue)>, StoreError> {
    let mut out = Vec::new();
    // The key being read and its last row at or below `at`.
    let mut cur: Option<(Vec<u8>, Option<Vec<u8>>)> = None;
    let flush = |cur: Option<(Vec<u8>, Option<Vec<u8>>)>, out: &mut Vec<(Bytes, KeyValue)>| {
        if let Some((k, Some(row))) = cur {
            if let Some(kv) = decode_history(&row)? {
                out.push((Bytes::from(k), kv));
            }
        }
        Ok::<(), StoreError>(())
    };
    for item in t.range((prefix, 0u64)..)? {
        if out.len() >= limit {
            break;
        }
        let (k, v) = item?;
        let (key, rev) = k.value();
        if !key.starts_with(prefix) {
            break;
        }
        if cur.as_ref().is_none_or(|(c, _)| c.as_slice() != key) {
            flush(cur.take(), &mut out)?;
            cur = Some((key.to_vec(), None));
        }
        if rev <= at {
            if let Some((_, best)) = cur.as_mut() {
                *best = Some(v.value().to_vec());
            }
        }
    }
    if out.len() < limit {
        flush(cur, &mut out)?;
    }
    Ok(out)
}
