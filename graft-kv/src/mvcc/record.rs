//! The multi-version store's tables and encodings (see [`super`]).

use bytes::Bytes;
use redb::TableDefinition;
use serde::{Deserialize, Serialize};

use crate::error::StoreError;
use crate::protocol::KeyValue;

/// Live keys: key -> record (see [`encode_record`]).
pub const CURRENT: TableDefinition<&[u8], &[u8]> = TableDefinition::new("kv");
/// Past records: (key, revision) -> record, or empty for a delete.
pub const HISTORY: TableDefinition<(&[u8], u64), &[u8]> = TableDefinition::new("kv_history");
/// Revision -> postcard [`RevRecord`]: the keys that revision wrote.
pub const REVS: TableDefinition<u64, &[u8]> = TableDefinition::new("revs");
/// A snapshot being received: rows of [`CURRENT`], staged until installed.
pub const CURRENT_STAGING: TableDefinition<&[u8], &[u8]> = TableDefinition::new("kv_staging");
/// A snapshot being received: rows of [`HISTORY`].
pub const HISTORY_STAGING: TableDefinition<(&[u8], u64), &[u8]> = TableDefinition::new("kv_history_staging");
/// A snapshot being received: rows of [`REVS`].
pub const REVS_STAGING: TableDefinition<u64, &[u8]> = TableDefinition::new("revs_staging");

/// The store's position, kept in the state machine's `meta` table under
/// [`MvccMeta::KEY`] and written with every applied batch.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MvccMeta {
    /// The revision of the state: the last applied index.
    pub revision: u64,
    /// Reads below this revision are refused. Invariant: every read at a
    /// revision in `compacted..=revision` is answered exactly by the
    /// tables (rows below it that no such read needs may linger until
    /// [`compact::purge`] removes them).
    pub compacted: u64,
    /// The compaction point whose useless rows are all gone. Invariant:
    /// `purged <= compacted`; while it is below, each applied batch removes
    /// some more ([`super::compact::purge`]).
    pub purged: u64,
}

impl MvccMeta {
    /// Its name in the `meta` table.
    pub const KEY: &'static str = "mvcc";

    /// Decodes the stored record.
    pub fn decode(bytes: &[u8]) -> Result<MvccMeta, StoreError> {
        postcard::from_bytes(bytes)
            .map_err(|e| StoreError::Corrupt { what: MvccMeta::KEY.into(), message: e.to_string() })
    }

    /// Encodes it for the `meta` table.
    pub fn encode(&self) -> Result<Vec<u8>, StoreError> {
        postcard::to_stdvec(self)
            .map_err(|e| StoreError::Corrupt { what: MvccMeta::KEY.into(), message: e.to_string() })
    }
}

/// What one revision wrote, for watch replay and time-based compaction.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RevRecord {
    /// The proposing leader's clock, in ms since the epoch.
    pub time_ms: u64,
    /// The keys written, in order; `true` for a put, `false` for a delete.
    pub writes: Vec<(Bytes, bool)>,
}

impl RevRecord {
    /// Decodes a stored record.
    pub fn decode(bytes: &[u8]) -> Result<RevRecord, StoreError> {
        postcard::from_bytes(bytes)
            .map_err(|e| StoreError::Corrupt { what: "revision record".into(), message: e.to_string() })
    }
}

/// The fixed part of an encoded record: create, mod, version, lease.
const HEADER: usize = 32;

/// Encodes a record: create revision, mod revision, version and lease as
/// 8-byte big-endian numbers, then the value. A tombstone (in
/// [`HISTORY`]) is the empty slice, which no record is.
pub fn encode_record(kv: &KeyValue) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER + kv.value.len());
    for n in [kv.create_revision, kv.mod_revision, kv.version, kv.lease] {
        out.extend_from_slice(&n.to_be_bytes());
    }
    out.extend_from_slice(&kv.value);
    out
}

/// Decodes a record written by [`encode_record`].
pub fn decode_record(bytes: &[u8]) -> Result<KeyValue, StoreError> {
    let n = |i: usize| -> Result<u64, StoreError> {
        bytes.get(i * 8..i * 8 + 8).and_then(|b| b.try_into().ok()).map(u64::from_be_bytes).ok_or_else(|| {
            StoreError::Corrupt { what: "key record".into(), message: format!("{} bytes", bytes.len()) }
        })
    };
    Ok(KeyValue {
        create_revision: n(0)?,
        mod_revision: n(1)?,
        version: n(2)?,
        lease: n(3)?,
        value: Bytes::copy_from_slice(&bytes[HEADER..]),
    })
}

/// Decodes a [`HISTORY`] row: `None` for a tombstone.
pub fn decode_history(bytes: &[u8]) -> Result<Option<KeyValue>, StoreError> {
    if bytes.is_empty() {
        return Ok(None);
    }
    decode_record(bytes).map(Some)
}
