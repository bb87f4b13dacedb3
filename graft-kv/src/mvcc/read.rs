//! Reads at the latest revision (one lookup in the live table) or at a past
//! one (the last history row at or below it), refused below the compacted
//! revision and above the state's own.

use bytes::Bytes;
use redb::{ReadTransaction, ReadableTable};

use super::record::{decode_history, decode_record, MvccMeta, CURRENT, HISTORY};
use crate::error::StoreError;
use crate::protocol::{ApiError, KeyRange, KeyValue};

/// A range read's keys (up to its limit), how many the range holds, and
/// whether the limit left some out.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RangeRead {
    /// Up to the limit, in key order (none if only counted).
    pub kvs: Vec<(Bytes, KeyValue)>,
    /// The keys in the range: all of them with `count_all`, otherwise
    /// those up to the limit.
    pub count: u64,
    /// Whether keys beyond the limit exist.
    pub more: bool,
    /// The revision of the state read (set by the node, 0 inside the store).
    pub revision: u64,
}

/// How a range read goes.
#[derive(Clone, Copy, Debug)]
pub struct RangeOpts {
    /// At most this many keys returned (0: all).
    pub limit: usize,
    /// Count every key of the range, past the limit.
    pub count_all: bool,
    /// Return no keys, only the count.
    pub count_only: bool,
}

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
        if limit == 0 {
            return Ok(self.resolve(at).map(|_| Vec::new()));
        }
        let range = KeyRange::prefix(Bytes::copy_from_slice(prefix));
        let opts = RangeOpts { limit, count_all: false, count_only: false };
        Ok(self.range(&range, opts, at)?.map(|r| r.kvs))
    }

    /// The keys of `range` as they stood at revision `at` (0: now).
    pub fn range(&self, range: &KeyRange, opts: RangeOpts, at: u64) -> ReadResult<RangeRead> {
        let past = match self.resolve(at) {
            Ok(p) => p,
            Err(e) => return Ok(Err(e)),
        };
        Ok(Ok(match past {
            None => range_current(&self.rtx.open_table(CURRENT)?, range, opts)?,
            Some(at) => range_history(&self.rtx.open_table(HISTORY)?, range, opts, at)?,
        }))
    }
}

/// Collects a range read's keys in key order, against its options.
struct Collector {
    opts: RangeOpts,
    read: RangeRead,
}

impl Collector {
    fn new(opts: RangeOpts) -> Collector {
        Collector { opts, read: RangeRead::default() }
    }

    /// Whether the read is over: the limit reached and a key beyond it
    /// seen (so `more` is known), unless every key is to be counted.
    fn done(&self) -> bool {
        !self.opts.count_all && self.opts.limit != 0 && self.read.more
    }

    /// Takes the next live key; `decode` yields its record when kept.
    fn push(
        &mut self,
        key: &[u8],
        decode: impl FnOnce() -> Result<KeyValue, StoreError>,
    ) -> Result<(), StoreError> {
        let within = self.opts.limit == 0 || (self.read.count as usize) < self.opts.limit;
        if within {
            if !self.opts.count_only {
                self.read.kvs.push((Bytes::copy_from_slice(key), decode()?));
            }
        } else {
            self.read.more = true;
        }
        if within || self.opts.count_all {
            self.read.count += 1;
        }
        Ok(())
    }
}

/// The live keys of `range`, in key order.
pub(super) fn range_current<T: ReadableTable<&'static [u8], &'static [u8]>>(
    t: &T,
    range: &KeyRange,
    opts: RangeOpts,
) -> Result<RangeRead, StoreError> {
    let mut c = Collector::new(opts);
    for item in t.range::<&[u8]>(range.scan_start()..)? {
        if c.done() {
            break;
        }
        let (k, v) = item?;
        let key = k.value();
        if range.is_past(key) {
            break;
        }
        if range.contains(key) {
            c.push(key, || decode_record(v.value()))?;
        }
    }
    Ok(c.read)
}

/// Up to `limit` live keys starting with `prefix`, in key order.
pub(super) fn scan_current<T: ReadableTable<&'static [u8], &'static [u8]>>(
    t: &T,
    prefix: &[u8],
    limit: usize,
) -> Result<Vec<(Bytes, KeyValue)>, StoreError> {
    if limit == 0 {
        return Ok(Vec::new());
    }
    let range = KeyRange::prefix(Bytes::copy_from_slice(prefix));
    Ok(range_current(t, &range, RangeOpts { limit, count_all: false, count_only: false })?.kvs)
}

/// The keys of `range` as they stood at `at`: for each key, its last
/// history row at or below `at`, if that is not a tombstone.
fn range_history<T: ReadableTable<(&'static [u8], u64), &'static [u8]>>(
    t: &T,
    range: &KeyRange,
    opts: RangeOpts,
    at: u64,
) -> Result<RangeRead, StoreError> {
    let mut c = Collector::new(opts);
    // The key being read and its last row at or below `at`.
    let mut cur: Option<(Vec<u8>, Option<Vec<u8>>)> = None;
    let flush = |cur: Option<(Vec<u8>, Option<Vec<u8>>)>, c: &mut Collector| {
        if let Some((k, Some(row))) = cur {
            if let Some(kv) = decode_history(&row)? {
                c.push(&k, || Ok(kv))?;
            }
        }
        Ok::<(), StoreError>(())
    };
    for item in t.range((range.scan_start(), 0u64)..)? {
        if c.done() {
            break;
        }
        let (k, v) = item?;
        let (key, rev) = k.value();
        if range.is_past(key) {
            break;
        }
        if !range.contains(key) {
            continue;
        }
        if cur.as_ref().is_none_or(|(k, _)| k.as_slice() != key) {
            flush(cur.take(), &mut c)?;
            cur = Some((key.to_vec(), None));
        }
        if rev <= at {
            if let Some((_, best)) = cur.as_mut() {
                *best = Some(v.value().to_vec());
            }
        }
    }
    if !c.done() {
        flush(cur, &mut c)?;
    }
    Ok(c.read)
}
