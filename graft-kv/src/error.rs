//! graft-kv's error types.

use std::path::PathBuf;

use graft_core::NodeId;

/// A framing or encoding failure on a connection. The connection is closed;
/// nothing else is affected.
#[derive(Debug, thiserror::Error)]
pub enum ProtocolError {
    /// The socket failed, or a frame was over the size limit.
    #[error("connection: {0}")]
    Io(std::io::Error),
    /// A frame did not decode as the expected message.
    #[error("malformed frame: {0}")]
    Decode(postcard::Error),
    /// A message could not be encoded.
    #[error("cannot encode: {0}")]
    Encode(postcard::Error),
    /// The handshake was refused or made no sense.
    #[error("handshake: {0}")]
    Handshake(String),
}

/// A configuration that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {cause}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        cause: std::io::Error,
    },
    /// The file is not valid TOML of the expected shape.
    #[error("invalid config file {path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's message.
        message: String,
    },
    /// The configuration is well-formed but wrong.
    #[error("invalid configuration: {0}")]
    Invalid(String),
    /// The member id is not in the cluster.
    #[error("member {id} is not in the cluster (members: {members})")]
    UnknownMember {
        /// The id asked for.
        id: NodeId,
        /// The ids the configuration lists.
        members: String,
    },
}

/// A failure of the durable store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// redb failed (I/O, corruption, a full disk).
    #[error("database: {0}")]
    Db(redb::Error),
    /// The data directory belongs to another cluster or member.
    #[error(
        "data directory {dir} belongs to member {found_member} of cluster {found_cluster:?}, \
         not member {member} of cluster {cluster:?}; refusing to touch it"
    )]
    Foreign {
        /// The data directory.
        dir: PathBuf,
        /// The cluster recorded there.
        found_cluster: String,
        /// The member recorded there.
        found_member: NodeId,
        /// The cluster asked for.
        cluster: String,
        /// The member asked for.
        member: NodeId,
    },
    /// A stored record did not decode: the data is corrupt or from an
    /// incompatible version.
    #[error("corrupt record {what}: {message}")]
    Corrupt {
        /// Which record.
        what: String,
        /// The decoder's message.
        message: String,
    },
    /// The data directory could not be used.
    #[error("data directory {dir}: {cause}")]
    Dir {
        /// The directory.
        dir: PathBuf,
        /// Why.
        cause: std::io::Error,
    },
}

impl From<std::io::Error> for ProtocolError {
    fn from(e: std::io::Error) -> ProtocolError {
        ProtocolError::Io(e)
    }
}

impl From<redb::Error> for StoreError {
    fn from(e: redb::Error) -> StoreError {
        StoreError::Db(e)
    }
}

macro_rules! from_redb {
    ($($t:ty),*) => {$(
        impl From<$t> for StoreError {
            fn from(e: $t) -> StoreError {
                StoreError::Db(e.into())
            }
        }
    )*};
}
from_redb!(
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError,
    redb::SetDurabilityError
);

impl From<StoreError> for graft_core::StorageError {
    fn from(e: StoreError) -> graft_core::StorageError {
        graft_core::StorageError::Io(Box::new(e))
    }
}
