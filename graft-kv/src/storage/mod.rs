//! Durable state: two redb databases per member, in its data directory.
//!
//! - `graft.redb`, the log: the member's identity (cluster id and member id),
//!   the Raft hard state and log ([`RaftLogStore`], which implements
//!   [`graft_core::Storage`]). Everything a `Ready` asks to persist is
//!   written in one transaction, with one fsync (group commit).
//! - `state.redb`, the state machine: the key-value tables with their applied
//!   index and the client sessions ([`StateMachine`]). Applying a batch of
//!   committed entries is one transaction that moves the applied index with
//!   the data it covers; it is fsynced only now and then (every
//!   `state_fsync_ms`, 5 s by default, before the log is compacted past it,
//!   and on a clean stop), because the entries it applies are already
//!   durable in the log and a restart re-applies them.
//!
//! Keeping the two apart is what makes writes cheap: an fsync of the log
//! flushes a few pages of appended entries, not the scattered B-tree pages
//! the key-value writes dirtied.

mod execute;
pub mod inspect;
mod log;
pub mod state_machine;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use graft_core::{ConfState, NodeId};
use redb::backends::InMemoryBackend;
use redb::{Database, ReadableDatabase, TableDefinition};
use serde::{Deserialize, Serialize};

pub use log::{LogWrite, RaftLogStore};
pub use state_machine::{Applied, MemberRecord, StagedSnapshot, StateMachine};

use crate::error::StoreError;

/// Small records, by name: identity, hard state, log base, state machine meta.
pub(crate) const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
/// The Raft log: index -> 8-byte little-endian term, then the postcard payload.
pub(crate) const LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("log");
/// The live key-value data (see [`crate::mvcc`] for it and its history).
pub(crate) const KV: TableDefinition<&[u8], &[u8]> = crate::mvcc::CURRENT;
/// Client sessions for exactly-once writes: client id -> postcard `Session`.
pub(crate) const SESSIONS: TableDefinition<u64, &[u8]> = TableDefinition::new("sessions");
/// A snapshot being received: rows of `sessions`, staged until installed.
pub(crate) const SESSIONS_STAGING: TableDefinition<u64, &[u8]> = TableDefinition::new("sessions_staging");

/// The file name of the log database inside a data directory.
pub const DB_FILE: &str = "graft.redb";
/// The file name of the state machine database inside a data directory.
pub const STATE_FILE: &str = "state.redb";

/// Who a data directory belongs to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    /// The cluster id.
    pub cluster: String,
    /// The member id.
    pub member: NodeId,
}

/// What a new member starts from.
#[derive(Clone, Debug, Default)]
pub struct Bootstrap {
    /// The initial membership (empty for a member that joins later).
    pub conf: ConfState,
    /// The initial members' addresses.
    pub members: Vec<(NodeId, String)>,
}

pub(crate) fn decode<T: serde::de::DeserializeOwned>(what: &str, bytes: &[u8]) -> Result<T, StoreError> {
    postcard::from_bytes(bytes).map_err(|e| StoreError::Corrupt { what: what.into(), message: e.to_string() })
}

/// Reads and decodes the record `name` of a `meta` table; a missing one
/// means the data is corrupt.
pub(crate) fn meta_record<T, M>(meta: &M, name: &str) -> Result<T, StoreError>
where
    T: serde::de::DeserializeOwned,
    M: redb::ReadableTable<&'static str, &'static [u8]>,
{
    match meta.get(name)? {
        Some(v) => decode(name, v.value()),
        None => Err(StoreError::Corrupt { what: name.into(), message: "missing".into() }),
    }
}

pub(crate) fn encode<T: Serialize>(what: &str, value: &T) -> Result<Vec<u8>, StoreError> {
    postcard::to_stdvec(value).map_err(|e| StoreError::Corrupt { what: what.into(), message: e.to_string() })
}

/// An opened member's databases.
pub struct Store {
    /// The log database.
    pub log_db: Arc<Database>,
    /// The state machine database, shared with readers.
    pub sm_db: Arc<Database>,
    /// The Raft log and hard state.
    pub log: RaftLogStore,
    /// The key-value state machine.
    pub sm: StateMachine,
    /// Whose data this is.
    pub identity: Identity,
}

/// Opens (or creates) the database in `dir` for `identity`. An existing
/// database of another cluster or member is refused before anything is
/// written.
pub fn open(dir: &Path, identity: &Identity, bootstrap: &Bootstrap) -> Result<Store, StoreError> {
    std::fs::create_dir_all(dir).map_err(|cause| StoreError::Dir { dir: dir.to_owned(), cause })?;
    // Look before touching: a foreign database is refused without being
    // opened for writing.
    match read_identity(dir) {
        Ok(Some(found)) => check_identity(dir, &found, identity)?,
        Ok(None) => {}
        // After a crash the database needs a repair, which a read-only open
        // cannot do: the identity is checked after opening instead.
        Err(StoreError::Db(redb::Error::RepairAborted)) => {}
        Err(e) => return Err(e),
    }
    let log_db = Database::create(dir.join(DB_FILE))?;
    let sm_db = Database::create(dir.join(STATE_FILE))?;
    open_dbs(log_db, sm_db, dir.to_owned(), identity, bootstrap)
}

/// Opens a fresh in-memory database (tests and simulations).
pub fn open_in_memory(identity: &Identity, bootstrap: &Bootstrap) -> Result<Store, StoreError> {
    let log_db = Database::builder().create_with_backend(InMemoryBackend::new())?;
    let sm_db = Database::builder().create_with_backend(InMemoryBackend::new())?;
    open_dbs(log_db, sm_db, PathBuf::from(":memory:"), identity, bootstrap)
}

fn stored_identity(db: &Database) -> Result<Option<Identity>, StoreError> {
    let rtx = db.begin_read()?;
    match rtx.open_table(META) {
        Ok(t) => t.get("identity")?.map(|v| decode("identity", v.value())).transpose(),
        Err(redb::TableError::TableDoesNotExist(_)) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

fn open_dbs(
    log_db: Database,
    sm_db: Database,
    dir: PathBuf,
    identity: &Identity,
    bootstrap: &Bootstrap,
) -> Result<Store, StoreError> {
    match stored_identity(&log_db)? {
        Some(found) => check_identity(&dir, &found, identity)?,
        None => {
            let wtx = log_db.begin_write()?;
            {
                let mut meta = wtx.open_table(META)?;
                meta.insert("identity", encode("identity", identity)?.as_slice())?;
                wtx.open_table(LOG)?;
            }
            log::init(&wtx, &bootstrap.conf)?;
            wtx.commit()?;
        }
    }
    match stored_identity(&sm_db)? {
        Some(found) => check_identity(&dir, &found, identity)?,
        None => {
            let wtx = sm_db.begin_write()?;
            {
                let mut meta = wtx.open_table(META)?;
                meta.insert("identity", encode("identity", identity)?.as_slice())?;
                wtx.open_table(SESSIONS)?;
            }
            state_machine::init(&wtx, bootstrap)?;
            wtx.commit()?;
        }
    }
    // A snapshot half received before a crash is of no use.
    state_machine::stage_begin(&sm_db)?;
    let (log_db, sm_db) = (Arc::new(log_db), Arc::new(sm_db));
    let mut log = RaftLogStore::load(log_db.clone())?;
    let sm = StateMachine::load(sm_db.clone())?;
    repair(&log_db, &mut log, &sm)?;
    Ok(Store { log_db, sm_db, log, sm, identity: identity.clone() })
}

/// Opens the existing data of member `member`, whatever its cluster (the
/// cluster id is read from the data): for a member that joined a cluster
/// earlier and restarts. Refused if the data belongs to another member.
pub fn open_existing(dir: &Path, member: graft_core::NodeId) -> Result<Store, StoreError> {
    let log_db = Database::create(dir.join(DB_FILE))?;
    let Some(identity) = stored_identity(&log_db)? else {
        return Err(StoreError::Corrupt { what: "identity".into(), message: "missing".into() });
    };
    if identity.member != member {
        return Err(StoreError::Foreign {
            dir: dir.to_owned(),
            found_cluster: identity.cluster.clone(),
            found_member: identity.member,
            cluster: identity.cluster,
            member,
        });
    }
    let sm_db = Database::create(dir.join(STATE_FILE))?;
    open_dbs(log_db, sm_db, dir.to_owned(), &identity, &Bootstrap::default())
}

/// Reconciles the log with the state machine after a crash. The state
/// machine is never behind the log's base (the log is compacted only up to
/// a durably applied index). It can be ahead of the log's end, or disagree
/// with the log at its applied index, only if a crash fell between the two
/// transactions of a snapshot install (state machine first, then log): the
/// snapshot's state is committed, so the log restarts after it.
fn repair(log_db: &Database, log: &mut RaftLogStore, sm: &StateMachine) -> Result<(), StoreError> {
    let applied = sm.applied();
    let base = log.base().index;
    if applied < base {
        return Err(StoreError::Corrupt {
            what: "state machine".into(),
            message: format!("applied index {applied} is behind the log, which starts after {base}"),
        });
    }
    let matches = graft_core::Storage::term(log, applied).is_ok_and(|t| t == sm.applied_term());
    if !matches {
        let meta = graft_core::SnapshotMeta { index: applied, term: sm.applied_term(), conf: sm.conf() };
        let wtx = log_db.begin_write()?;
        log.reset_to(&wtx, meta)?;
        wtx.commit()?;
    }
    Ok(())
}

fn check_identity(dir: &Path, found: &Identity, want: &Identity) -> Result<(), StoreError> {
    if found == want {
        return Ok(());
    }
    Err(StoreError::Foreign {
        dir: dir.to_owned(),
        found_cluster: found.cluster.clone(),
        found_member: found.member,
        cluster: want.cluster.clone(),
        member: want.member,
    })
}

/// Reads the identity recorded in a data directory (opening the database
/// read-only), if there is a database.
pub fn read_identity(dir: &Path) -> Result<Option<Identity>, StoreError> {
    let path = dir.join(DB_FILE);
    if !path.exists() {
        return Ok(None);
    }
    let db = redb::ReadOnlyDatabase::open(&path)?;
    let rtx = db.begin_read()?;
    let t = match rtx.open_table(META) {
        Ok(t) => t,
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let v = t.get("identity")?;
    v.map(|v| decode("identity", v.value())).transpose()
}

/// Reads a stopped member's whole log and applied index (opening its
/// database read-only): for tests and offline inspection.
pub fn read_log(dir: &Path) -> Result<(Vec<graft_core::Entry>, graft_core::Index), StoreError> {
    let db = redb::ReadOnlyDatabase::open(dir.join(DB_FILE))?;
    let rtx = db.begin_read()?;
    let log = rtx.open_table(LOG)?;
    let mut out = Vec::new();
    for item in redb::ReadableTable::iter(&log)? {
        let (k, v) = item?;
        out.push(log::decode_entry(k.value(), v.value())?);
    }
    let sm_db = redb::ReadOnlyDatabase::open(dir.join(STATE_FILE))?;
    let rtx = sm_db.begin_read()?;
    let applied = state_machine::applied_of(&rtx.open_table(META)?)?;
    Ok((out, applied))
}
