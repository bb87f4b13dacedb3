//! The multi-version store: every key's current record, its past records
//! by revision, and which keys each revision wrote.
//!
//! A **revision** is a log index: the entry at index N writes at revision
//! N, so revisions are cluster-wide and strictly increasing (not dense: an
//! entry that writes nothing, a no-op or a membership change, has no
//! writes at its revision). A key's record carries `create_revision` (the
//! revision that created this life of the key), `mod_revision` (its last
//! write) and `version` (writes since it was created; a delete ends the
//! life, and the next put starts again at 1), as etcd's `mvccpb.KeyValue`.
//!
//! Three tables of the state machine's database:
//! - [`CURRENT`] (`kv`): key -> its live record. A read of the latest value
//!   is one lookup here, as before revisions existed.
//! - [`HISTORY`] (`kv_history`): (key, revision) -> the record the key got
//!   at that revision, or a tombstone for a delete. Reads at a past
//!   revision take the last row at or below it.
//! - [`REVS`] (`revs`): revision -> the keys it wrote (put or delete) and
//!   the leader's clock: watch replay and time-based compaction walk it in
//!   order.
//!
//! History is kept until **compacted** at a revision C (a log entry, so
//! every member compacts at the same point): reads at any revision >= C
//! still answer exactly, reads below are refused with the oldest revision
//! still available. The rows compaction makes useless are removed a
//! bounded number at a time with later batches ([`compact::purge`]), so a
//! large compaction never stalls the applying.
//!
//! # Layout
//! - this file: [`Writer`], which applies puts and deletes inside the state
//!   machine's write transaction, and the upgrade from the layout before
//!   revisions;
//! - [`record`]: the tables, the record encoding and the store's position;
//! - [`read`]: reads at the latest or a past revision;
//! - [`compact`]: removing history below the compacted revision, and the
//!   retention policy that decides when to compact.

pub mod compact;
pub mod read;
pub mod record;

use bytes::Bytes;
use redb::{ReadableTable, Table, WriteTransaction};

use crate::error::StoreError;
use crate::protocol::{KeyRange, KeyValue, WatchEvent};

pub use record::{
    decode_record, encode_record, MvccMeta, RevRecord, CURRENT, CURRENT_STAGING, HISTORY, HISTORY_STAGING,
    REVS, REVS_STAGING,
};

/// Applies writes inside the state machine's write transaction, one
/// revision at a time: [`Writer::begin`], puts and deletes, then
/// [`Writer::finish`].
pub struct Writer<'t> {
    current: Table<'t, &'static [u8], &'static [u8]>,
    history: Table<'t, (&'static [u8], u64), &'static [u8]>,
    revs: Table<'t, u64, &'static [u8]>,
    /// The revision being written.
    revision: u64,
    /// What it wrote so far, in order.
    writes: Vec<WatchEvent>,
}

impl<'t> Writer<'t> {
    /// Opens the tables in `wtx`.
    pub fn open(wtx: &'t WriteTransaction) -> Result<Writer<'t>, StoreError> {
        Ok(Writer {
            current: wtx.open_table(CURRENT)?,
            history: wtx.open_table(HISTORY)?,
            revs: wtx.open_table(REVS)?,
            revision: 0,
            writes: Vec::new(),
        })
    }

    /// Starts writing at `revision` (the entry's index).
    pub fn begin(&mut self, revision: u64) {
        self.revision = revision;
        self.writes.clear();
    }

    /// The revision being written.
    pub fn revision(&self) -> u64 {
        self.revision
    }

    /// The live record of `key`, as this revision's earlier writes left it.
    pub fn get(&self, key: &[u8]) -> Result<Option<KeyValue>, StoreError> {
        self.current.get(key)?.map(|v| decode_record(v.value())).transpose()
    }

    /// Up to `limit` live keys starting with `prefix`, in key order.
    pub fn scan(&self, prefix: &[u8], limit: usize) -> Result<Vec<(Bytes, KeyValue)>, StoreError> {
        read::scan_current(&self.current, prefix, limit)
    }

    /// Sets `key` to `value`; returns the previous record, if the key was live.
    pub fn put(&mut self, key: &Bytes, value: &Bytes, lease: u64) -> Result<Option<KeyValue>, StoreError> {
        let prev = self.get(key)?;
        let kv = KeyValue {
            value: value.clone(),
            create_revision: prev.as_ref().map_or(self.revision, |p| p.create_revision),
            mod_revision: self.revision,
            version: prev.as_ref().map_or(1, |p| p.version + 1),
            lease,
        };
        let rec = encode_record(&kv);
        self.current.insert(key.as_ref(), rec.as_slice())?;
        self.history.insert((key.as_ref(), self.revision), rec.as_slice())?;
        self.writes.push(WatchEvent {
            key: key.clone(),
            revision: self.revision,
            kv: Some(kv),
            prev: prev.clone(),
        });
        Ok(prev)
    }

    /// Removes `key`; returns its record if it was live.
    pub fn delete(&mut self, key: &Bytes) -> Result<Option<KeyValue>, StoreError> {
        let prev = self.current.remove(key.as_ref())?.map(|v| decode_record(v.value())).transpose()?;
        if prev.is_some() {
            self.history.insert((key.as_ref(), self.revision), &[][..])?;
            self.writes.push(WatchEvent {
                key: key.clone(),
                revision: self.revision,
                kv: None,
                prev: prev.clone(),
            });
        }
        Ok(prev)
    }

    /// The live keys of `range`, as this revision's earlier writes left them.
    pub fn range(&self, range: &KeyRange, opts: read::RangeOpts) -> Result<read::RangeRead, StoreError> {
        read::range_current(&self.current, range, opts)
    }

    /// Removes every live key starting with `prefix`; returns their records.
    pub fn delete_prefix(&mut self, prefix: &[u8]) -> Result<Vec<(Bytes, KeyValue)>, StoreError> {
        self.delete_range(&KeyRange::prefix(Bytes::copy_from_slice(prefix)))
    }

    /// Removes every live key of `range`; returns their records.
    pub fn delete_range(&mut self, range: &KeyRange) -> Result<Vec<(Bytes, KeyValue)>, StoreError> {
        let all = read::RangeOpts { limit: 0, count_all: true, count_only: false };
        let doomed = self.range(range, all)?.kvs;
        for (key, _) in &doomed {
            self.delete(key)?;
        }
        Ok(doomed)
    }

    /// Ends the revision: records which keys it wrote (if any) with the
    /// leader's clock, and returns what it wrote, as watch events.
    pub fn finish(&mut self, time_ms: u64) -> Result<Vec<WatchEvent>, StoreError> {
        let events = std::mem::take(&mut self.writes);
        if !events.is_empty() {
            let writes = events.iter().map(|e| (e.key.clone(), e.kv.is_some())).collect();
            let rec = RevRecord { time_ms, writes };
            let bytes = postcard::to_stdvec(&rec).map_err(|e| StoreError::Corrupt {
                what: "revision record".into(),
                message: e.to_string(),
            })?;
            self.revs.insert(self.revision, bytes.as_slice())?;
        }
        Ok(events)
    }

    /// Removes history below the compaction point, at most about `budget`
    /// rows; see [`compact::purge`].
    pub fn purge(&mut self, meta: &mut MvccMeta, budget: usize) -> Result<usize, StoreError> {
        compact::purge(&mut self.history, &mut self.revs, meta, budget)
    }
}

/// Reads the store's position from a `meta` table; `None` for a state
/// machine written before revisions existed.
pub fn meta_of<M: ReadableTable<&'static str, &'static [u8]>>(
    meta: &M,
) -> Result<Option<MvccMeta>, StoreError> {
    meta.get(MvccMeta::KEY)?.map(|v| MvccMeta::decode(v.value())).transpose()
}

/// Brings a state machine written before revisions existed (values stored
/// as an 8-byte version, the log index of their last write, then the
/// bytes) to this layout, inside `wtx`: each live key becomes a record
/// created and modified at that index, version 1, with its history row.
/// History before `applied` is unknown, so it counts as compacted there.
/// Returns the store's position.
pub fn upgrade(wtx: &WriteTransaction, applied: u64) -> Result<MvccMeta, StoreError> {
    let mut current = wtx.open_table(CURRENT)?;
    let mut history = wtx.open_table(HISTORY)?;
    wtx.open_table(REVS)?;
    let mut rows = Vec::new();
    for item in current.iter()? {
        let (k, v) = item?;
        rows.push((k.value().to_vec(), v.value().to_vec()));
    }
    for (key, old) in rows {
        let head: [u8; 8] = old.get(..8).and_then(|b| b.try_into().ok()).ok_or_else(|| {
            StoreError::Corrupt { what: "value".into(), message: "shorter than its version".into() }
        })?;
        let rev = u64::from_be_bytes(head);
        let kv = KeyValue {
            value: Bytes::copy_from_slice(&old[8..]),
            create_revision: rev,
            mod_revision: rev,
            version: 1,
            lease: 0,
        };
        let rec = encode_record(&kv);
        current.insert(key.as_slice(), rec.as_slice())?;
        history.insert((key.as_slice(), rev), rec.as_slice())?;
    }
    Ok(MvccMeta { revision: applied, compacted: applied, purged: applied })
}

#[cfg(test)]
mod tests;
