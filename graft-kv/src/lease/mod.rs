//! Leases: a key attached to a lease is deleted when the lease expires or
//! is revoked. The lease table is replicated state; expiry is decided by
//! the leader and carried out through the log, so every member deletes the
//! same keys at the same revision.
//!
//! # Time
//! A lease's deadline is in the clock of the leader that wrote it: each
//! command entry carries its leader's wall clock (`time_ms`), and every
//! entry of a term comes from that term's one leader, so times within a
//! term are comparable. [`LeaseClock`] is the latest time seen in the
//! latest term. When the first command of a new term applies, every
//! deadline is moved into the new leader's clock keeping its remaining
//! time as of the old leader's last entry: a failover neither resets a
//! lease to its full TTL (etcd #9395, #13294) nor shortens it; it extends
//! it by the time from the old leader's last entry to the new leader's
//! first, which the leader keeps short by writing a clock entry every
//! 100 ms while leases exist. Clocks of different members are never
//! compared.
//!
//! # Expiry
//! The leader looks for leases past their deadline in its own clock, but
//! revokes only after a ReadIndex round confirmed it still leads (a leader
//! that stalled and woke up deposed revokes nothing: etcd #15247), and the
//! revocation entry revokes a lease only if, when applied, it is still past
//! its deadline as of the entry's time: a keepalive that got in first wins.
//!
//! # Storage
//! One table of the state machine, `leases` (byte keys, so snapshots copy
//! it like the key-value table):
//! - `L` + id: the lease ([`LeaseRecord`]);
//! - `E` + deadline + id: the expiry index, in deadline order;
//! - `K` + id + key: the keys attached.

use bytes::Bytes;
use redb::{ReadableTable, Table, TableDefinition, WriteTransaction};
use serde::{Deserialize, Serialize};

use crate::error::StoreError;

/// The lease table.
pub const LEASES: TableDefinition<&[u8], &[u8]> = TableDefinition::new("leases");
/// A snapshot being received: rows of [`LEASES`].
pub const LEASES_STAGING: TableDefinition<&[u8], &[u8]> = TableDefinition::new("leases_staging");

/// The longest TTL a lease may have (etcd's is about 9e9 s; a day is
/// plenty for a coordination lease and keeps deadlines far from overflow).
pub const MAX_TTL_MS: u64 = 24 * 3600 * 1000;

/// A lease.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseRecord {
    /// Its time to live, granted and renewed by each keepalive.
    pub ttl_ms: u64,
    /// When it expires, in the lease clock.
    pub deadline_ms: u64,
}

/// The latest leader time seen, and its term. Stored in the state
/// machine's `meta` table under [`LeaseClock::KEY`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseClock {
    /// The term whose leader's clock the deadlines are in.
    pub term: u64,
    /// The latest time seen in that term, in ms since the epoch.
    pub ms: u64,
}

impl LeaseClock {
    /// Its name in the `meta` table.
    pub const KEY: &'static str = "lease_clock";
}

fn lease_key(id: u64) -> [u8; 9] {
    let mut k = [b'L'; 9];
    k[1..].copy_from_slice(&id.to_be_bytes());
    k
}

fn expiry_key(deadline: u64, id: u64) -> [u8; 17] {
    let mut k = [b'E'; 17];
    k[1..9].copy_from_slice(&deadline.to_be_bytes());
    k[9..].copy_from_slice(&id.to_be_bytes());
    k
}

fn keys_prefix(id: u64) -> [u8; 9] {
    let mut k = [b'K'; 9];
    k[1..].copy_from_slice(&id.to_be_bytes());
    k
}

fn attach_key(id: u64, key: &[u8]) -> Vec<u8> {
    let mut k = keys_prefix(id).to_vec();
    k.extend_from_slice(key);
    k
}

fn corrupt(what: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt { what: what.into(), message: e.to_string() }
}

fn decode_record(bytes: &[u8]) -> Result<LeaseRecord, StoreError> {
    postcard::from_bytes(bytes).map_err(|e| corrupt("lease", e))
}

fn u64_at(bytes: &[u8], at: usize) -> Result<u64, StoreError> {
    bytes
        .get(at..at + 8)
        .and_then(|b| b.try_into().ok())
        .map(u64::from_be_bytes)
        .ok_or_else(|| corrupt("lease index", format!("{} bytes", bytes.len())))
}

/// Changes leases inside the state machine's write transaction.
pub struct LeaseWriter<'t> {
    table: Table<'t, &'static [u8], &'static [u8]>,
    /// The lease clock; the caller stores it with the batch.
    pub clock: LeaseClock,
}

impl<'t> LeaseWriter<'t> {
    /// Opens the table in `wtx`, with the clock as stored.
    pub fn open(wtx: &'t WriteTransaction, clock: LeaseClock) -> Result<LeaseWriter<'t>, StoreError> {
        Ok(LeaseWriter { table: wtx.open_table(LEASES)?, clock })
    }

    /// A command of `term` stamped `time_ms` applies: moves the clock, and
    /// on a new term every deadline into the new leader's clock.
    pub fn on_command(&mut self, term: u64, time_ms: u64) -> Result<(), StoreError> {
        if term <= self.clock.term {
            self.clock.ms = self.clock.ms.max(time_ms);
            return Ok(());
        }
        let old = self.clock;
        let mut moved = Vec::new();
        for item in self.table.range::<&[u8]>(&b"L"[..]..&b"M"[..])? {
            let (k, v) = item?;
            let id = u64_at(k.value(), 1)?;
            moved.push((id, decode_record(v.value())?));
        }
        for (id, mut rec) in moved {
            let remaining = rec.deadline_ms.saturating_sub(old.ms);
            self.table.remove(&expiry_key(rec.deadline_ms, id)[..])?;
            rec.deadline_ms = time_ms.saturating_add(remaining);
            self.store(id, rec)?;
        }
        self.clock = LeaseClock { term, ms: time_ms };
        Ok(())
    }

    fn store(&mut self, id: u64, rec: LeaseRecord) -> Result<(), StoreError> {
        let bytes = postcard::to_stdvec(&rec).map_err(|e| corrupt("lease", e))?;
        self.table.insert(&lease_key(id)[..], bytes.as_slice())?;
        self.table.insert(&expiry_key(rec.deadline_ms, id)[..], &[][..])?;
        Ok(())
    }

    /// The lease `id`, if it exists.
    pub fn get(&self, id: u64) -> Result<Option<LeaseRecord>, StoreError> {
        self.table.get(&lease_key(id)[..])?.map(|v| decode_record(v.value())).transpose()
    }

    /// Grants lease `id` for `ttl_ms` from now (the clock). False if it exists.
    pub fn grant(&mut self, id: u64, ttl_ms: u64) -> Result<bool, StoreError> {
        if self.get(id)?.is_some() {
            return Ok(false);
        }
        self.store(id, LeaseRecord { ttl_ms, deadline_ms: self.clock.ms.saturating_add(ttl_ms) })?;
        Ok(true)
    }

    /// Renews lease `id` for its TTL from now; its record after, if it exists.
    pub fn keep_alive(&mut self, id: u64) -> Result<Option<LeaseRecord>, StoreError> {
        let Some(mut rec) = self.get(id)? else { return Ok(None) };
        self.table.remove(&expiry_key(rec.deadline_ms, id)[..])?;
        rec.deadline_ms = self.clock.ms.saturating_add(rec.ttl_ms);
        self.store(id, rec)?;
        Ok(Some(rec))
    }

    /// Whether lease `id` is past its deadline at the clock's time.
    pub fn expired(&self, id: u64) -> Result<bool, StoreError> {
        Ok(self.get(id)?.is_some_and(|r| r.deadline_ms <= self.clock.ms))
    }

    /// Removes lease `id`; returns the keys that were attached (which the
    /// caller deletes), or `None` if there was no such lease.
    pub fn remove(&mut self, id: u64) -> Result<Option<Vec<Bytes>>, StoreError> {
        let Some(rec) = self.get(id)? else { return Ok(None) };
        self.table.remove(&lease_key(id)[..])?;
        self.table.remove(&expiry_key(rec.deadline_ms, id)[..])?;
        let prefix = keys_prefix(id);
        let mut keys = Vec::new();
        for item in self.table.range::<&[u8]>(&prefix[..]..)? {
            let (k, _) = item?;
            if !k.value().starts_with(&prefix) {
                break;
            }
            keys.push(Bytes::copy_from_slice(&k.value()[9..]));
        }
        for key in &keys {
            self.table.remove(attach_key(id, key).as_slice())?;
        }
        Ok(Some(keys))
    }

    /// Records that `key` is attached to lease `id`.
    pub fn attach(&mut self, id: u64, key: &[u8]) -> Result<(), StoreError> {
        self.table.insert(attach_key(id, key).as_slice(), &[][..])?;
        Ok(())
    }

    /// Records that `key` is no longer attached to lease `id`.
    pub fn detach(&mut self, id: u64, key: &[u8]) -> Result<(), StoreError> {
        self.table.remove(attach_key(id, key).as_slice())?;
        Ok(())
    }
}

/// Up to `limit` leases whose deadline is at or before `now_ms`, soonest
/// first (for the leader's expiry check).
pub fn due<T: ReadableTable<&'static [u8], &'static [u8]>>(
    table: &T,
    now_ms: u64,
    limit: usize,
) -> Result<Vec<u64>, StoreError> {
    let mut out = Vec::new();
    let end = expiry_key(now_ms, u64::MAX);
    for item in table.range::<&[u8]>(&b"E"[..]..=&end[..])? {
        if out.len() >= limit {
            break;
        }
        let (k, _) = item?;
        out.push(u64_at(k.value(), 9)?);
    }
    Ok(out)
}

/// Every lease, with its record.
pub fn list<T: ReadableTable<&'static [u8], &'static [u8]>>(
    table: &T,
) -> Result<Vec<(u64, LeaseRecord)>, StoreError> {
    let mut out = Vec::new();
    for item in table.range::<&[u8]>(&b"L"[..]..&b"M"[..])? {
        let (k, v) = item?;
        out.push((u64_at(k.value(), 1)?, decode_record(v.value())?));
    }
    Ok(out)
}

/// Lease `id` and the keys attached to it.
pub fn describe<T: ReadableTable<&'static [u8], &'static [u8]>>(
    table: &T,
    id: u64,
) -> Result<Option<(LeaseRecord, Vec<Bytes>)>, StoreError> {
    let Some(rec) = table.get(&lease_key(id)[..])?.map(|v| decode_record(v.value())).transpose()? else {
        return Ok(None);
    };
    let prefix = keys_prefix(id);
    let mut keys = Vec::new();
    for item in table.range::<&[u8]>(&prefix[..]..)? {
        let (k, _) = item?;
        if !k.value().starts_with(&prefix) {
            break;
        }
        keys.push(Bytes::copy_from_slice(&k.value()[9..]));
    }
    Ok(Some((rec, keys)))
}

#[cfg(test)]
mod tests;
