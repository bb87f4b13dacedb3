//! The cluster file and its defaults.
//!
//! ```toml
//! cluster_id = "graft"          # optional; recorded in every data directory
//!
//! [timing]                      # optional
//! tick_ms = 10                  # one Raft tick
//! election_ticks = 15           # followers time out after 15 to 30 ticks
//! heartbeat_ticks = 3           # leaders heartbeat every 3 ticks
//!
//! [history]                     # optional: how long past revisions stay readable
//! keep_revisions = 10000        # at most the last 10,000 revisions (0: no limit)
//! keep_seconds = 3600           # and at most one hour of them (0: no limit)
//!
//! [[members]]
//! id = 1
//! addr = "127.0.0.1:15000"
//! ```

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use graft_core::NodeId;
use serde::{Deserialize, Serialize};

use crate::error::ConfigError;

/// The default cluster id.
pub const DEFAULT_CLUSTER_ID: &str = "graft";
/// The first port of the built-in default cluster: member N listens on
/// `DEFAULT_BASE_PORT + N - 1`.
pub const DEFAULT_BASE_PORT: u16 = 15000;
/// The size of the built-in default cluster.
pub const DEFAULT_MEMBERS: u64 = 5;

/// A member as the cluster file lists it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemberConfig {
    /// Its id, unique and not 0.
    pub id: NodeId,
    /// Where peers and clients reach it (`host:port`).
    pub addr: String,
    /// Where it binds, if not `addr` (for example `0.0.0.0:15000` behind a
    /// name, or a real port behind a proxy).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub listen: Option<String>,
}

impl MemberConfig {
    /// The address this member binds.
    pub fn bind_addr(&self) -> &str {
        self.listen.as_deref().unwrap_or(&self.addr)
    }
}

/// Raft timing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Timing {
    /// The length of one Raft tick, in milliseconds.
    pub tick_ms: u64,
    /// A follower that hears no leader for a random `[n, 2n)` ticks starts
    /// an election.
    pub election_ticks: u32,
    /// A leader heartbeats every this many ticks.
    pub heartbeat_ticks: u32,
}

impl Default for Timing {
    /// A dead leader is noticed after 150 to 300 ms.
    fn default() -> Timing {
        Timing { tick_ms: 10, election_ticks: 15, heartbeat_ticks: 3 }
    }
}

impl Timing {
    /// The tick interval.
    pub fn tick(&self) -> Duration {
        Duration::from_millis(self.tick_ms)
    }
}

/// When a member compacts its log, and how long the log alone covers
/// what was applied.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogLimits {
    /// Compact once the log holds more entries than this (0: no limit).
    pub max_entries: u64,
    /// Compact once the log's entries add up to more bytes than this (0: no limit).
    pub max_bytes: u64,
    /// Keep this many of the newest applied entries, so that followers a
    /// little behind catch up from the log rather than by snapshot.
    pub retain_entries: u64,
    /// How often the state machine database is fsynced, in milliseconds
    /// (also whenever compaction needs it, and on a clean stop). Between two
    /// fsyncs the log alone holds what was applied: after a crash the state
    /// machine restarts from its last fsync and re-applies the rest from the
    /// log.
    pub state_fsync_ms: u64,
}

impl Default for LogLimits {
    fn default() -> LogLimits {
        LogLimits { max_entries: 100_000, max_bytes: 256 << 20, retain_entries: 5_000, state_fsync_ms: 5_000 }
    }
}

/// How much history of past revisions the cluster keeps readable. The
/// leader compacts whatever is older than either limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HistoryLimits {
    /// Keep at most this many of the latest revisions (0: no limit by count).
    pub keep_revisions: u64,
    /// Keep at most this many seconds of revisions (0: no limit by age).
    pub keep_seconds: u64,
}

impl Default for HistoryLimits {
    fn default() -> HistoryLimits {
        HistoryLimits { keep_revisions: 10_000, keep_seconds: 3600 }
    }
}

impl HistoryLimits {
    /// The policy the multi-version store applies.
    pub fn retention(&self) -> crate::mvcc::compact::Retention {
        crate::mvcc::compact::Retention {
            keep_revisions: self.keep_revisions,
            keep_ms: self.keep_seconds.saturating_mul(1000),
        }
    }
}

/// The cluster: who is in it and how it runs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    /// Names the cluster; a data directory of another cluster is refused.
    #[serde(default = "default_cluster_id")]
    pub cluster_id: String,
    /// Raft timing.
    #[serde(default)]
    pub timing: Timing,
    /// Log compaction.
    #[serde(default)]
    pub log: LogLimits,
    /// History compaction.
    #[serde(default)]
    pub history: HistoryLimits,
    /// The initial members.
    pub members: Vec<MemberConfig>,
    /// etcd's v3 API: where each member serves it (off unless named).
    #[serde(default)]
    pub etcd: EtcdConfig,
}

/// The `[etcd]` section: each member's etcd API address.
///
/// ```toml
/// [etcd.members]
/// 1 = "127.0.0.1:2379"
/// 2 = "127.0.0.1:2380"
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EtcdConfig {
    /// Member id -> the `host:port` it serves etcd's API on.
    pub members: std::collections::BTreeMap<String, String>,
}

impl EtcdConfig {
    /// The etcd API address of member `id`, if it has one.
    pub fn addr_of(&self, id: NodeId) -> Option<&str> {
        self.members.get(&id.to_string()).map(String::as_str)
    }

    /// Every member's etcd API address, by id (ids that are not numbers
    /// are refused by [`ClusterConfig::validate`]).
    pub fn by_id(&self) -> std::collections::BTreeMap<NodeId, String> {
        self.members.iter().filter_map(|(id, a)| Some((id.parse().ok()?, a.clone()))).collect()
    }
}

fn default_cluster_id() -> String {
    DEFAULT_CLUSTER_ID.to_owned()
}

impl Default for ClusterConfig {
    /// The built-in default: five members, ids 1 to 5, on 127.0.0.1 ports
    /// 15000 to 15004, as the original project had, serving etcd's API on
    /// 127.0.0.1:2379 to 2383 (so that `etcdctl` with no flags reaches
    /// member 1).
    fn default() -> ClusterConfig {
        let mut cfg = ClusterConfig::local(DEFAULT_MEMBERS, DEFAULT_BASE_PORT);
        cfg.etcd.members =
            (1..=DEFAULT_MEMBERS).map(|id| (id.to_string(), format!("127.0.0.1:{}", 2378 + id))).collect();
        cfg
    }
}

impl ClusterConfig {
    /// `n` members on 127.0.0.1, member N on `base_port + N - 1`.
    pub fn local(n: u64, base_port: u16) -> ClusterConfig {
        ClusterConfig {
            cluster_id: default_cluster_id(),
            timing: Timing::default(),
            log: LogLimits::default(),
            history: HistoryLimits::default(),
            members: (1..=n)
                .map(|id| MemberConfig {
                    id,
                    addr: format!("127.0.0.1:{}", u64::from(base_port) + id - 1),
                    listen: None,
                })
                .collect(),
            etcd: EtcdConfig::default(),
        }
    }

    /// Parses a cluster file's text.
    pub fn parse(text: &str, path: &Path) -> Result<ClusterConfig, ConfigError> {
        let cfg: ClusterConfig = toml::from_str(text)
            .map_err(|e| ConfigError::Parse { path: path.to_owned(), message: e.message().to_owned() })?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Reads and checks a cluster file.
    pub fn load(path: &Path) -> Result<ClusterConfig, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|cause| ConfigError::Read { path: path.to_owned(), cause })?;
        ClusterConfig::parse(&text, path)
    }

    /// Reads `path` if given, or the built-in default.
    pub fn load_or_default(path: Option<&Path>) -> Result<ClusterConfig, ConfigError> {
        match path {
            Some(p) => ClusterConfig::load(p),
            None => Ok(ClusterConfig::default()),
        }
    }

    /// Checks what the types cannot.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.cluster_id.is_empty() {
            return Err(ConfigError::Invalid("cluster_id must not be empty".into()));
        }
        if self.members.is_empty() {
            return Err(ConfigError::Invalid("the cluster has no members".into()));
        }
        for (id, a) in &self.etcd.members {
            if id.parse::<NodeId>().is_err() {
                return Err(ConfigError::Invalid(format!("[etcd.members]: {id:?} is not a member id")));
            }
            if !a.rsplit_once(':').is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok()) {
                return Err(ConfigError::Invalid(format!("[etcd.members]: address {a:?} is not host:port")));
            }
        }
        let mut ids = BTreeSet::new();
        let mut addrs = BTreeSet::new();
        for m in &self.members {
            if m.id == 0 {
                return Err(ConfigError::Invalid("member id 0 is reserved".into()));
            }
            if !ids.insert(m.id) {
                return Err(ConfigError::Invalid(format!("member id {} appears twice", m.id)));
            }
            if !addrs.insert(m.addr.as_str()) {
                return Err(ConfigError::Invalid(format!("address {} appears twice", m.addr)));
            }
            for a in std::iter::once(&m.addr).chain(m.listen.as_ref()) {
                match a.rsplit_once(':') {
                    Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => {}
                    _ => {
                        return Err(ConfigError::Invalid(format!(
                            "member {}: address {a:?} is not host:port",
                            m.id
                        )))
                    }
                }
            }
        }
        if self.log.state_fsync_ms == 0 {
            return Err(ConfigError::Invalid("log: state_fsync_ms must be at least 1".into()));
        }
        let t = &self.timing;
        if t.tick_ms == 0 || t.heartbeat_ticks == 0 || t.election_ticks <= t.heartbeat_ticks {
            return Err(ConfigError::Invalid(format!(
                "timing: need tick_ms > 0 and election_ticks ({}) > heartbeat_ticks ({}) > 0",
                t.election_ticks, t.heartbeat_ticks
            )));
        }
        Ok(())
    }

    /// The member with `id`.
    pub fn member(&self, id: NodeId) -> Result<&MemberConfig, ConfigError> {
        self.members.iter().find(|m| m.id == id).ok_or_else(|| ConfigError::UnknownMember {
            id,
            members: self.members.iter().map(|m| m.id.to_string()).collect::<Vec<_>>().join(", "),
        })
    }

    /// Every member's address, in id order.
    pub fn endpoints(&self) -> Vec<String> {
        self.members.iter().map(|m| m.addr.clone()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<ClusterConfig, ConfigError> {
        ClusterConfig::parse(text, Path::new("test.toml"))
    }

    #[test]
    fn default_mirrors_the_original_five_members() {
        let c = ClusterConfig::default();
        assert_eq!(c.members.len(), 5);
        assert_eq!(c.member(1).unwrap().addr, "127.0.0.1:15000");
        assert_eq!(c.member(5).unwrap().addr, "127.0.0.1:15004");
        c.validate().unwrap();
    }

    #[test]
    fn a_minimal_file_parses() {
        let c = parse("[[members]]\nid = 7\naddr = \"10.0.0.1:9000\"\n").unwrap();
        assert_eq!(c.cluster_id, "graft");
        assert_eq!(c.timing, Timing::default());
        assert_eq!(c.history, HistoryLimits { keep_revisions: 10_000, keep_seconds: 3600 });
        let c = parse("[history]\nkeep_revisions = 0\n[[members]]\nid = 7\naddr = \"a:1\"\n").unwrap();
        assert_eq!(c.history.retention().keep_revisions, 0);
        assert_eq!(c.history.retention().keep_ms, 3_600_000);
        assert_eq!(c.members[0].id, 7);
    }

    #[test]
    fn wrong_files_are_refused_with_a_reason() {
        let cases = [
            ("", "missing field"),
            ("[[members]]\nid = 0\naddr = \"a:1\"\n", "reserved"),
            ("[[members]]\nid = 1\naddr = \"a:1\"\n[[members]]\nid = 1\naddr = \"a:2\"\n", "twice"),
            ("[[members]]\nid = 1\naddr = \"nowhere\"\n", "host:port"),
            ("[[members]]\nid = 1\naddr = \"a:1\"\nport = 3\n", "unknown field"),
            (
                "[timing]\nelection_ticks = 2\nheartbeat_ticks = 2\n[[members]]\nid = 1\naddr = \"a:1\"\n",
                "timing",
            ),
            ("members = 3", "invalid type"),
            ("[history]\nkeep = 3\n[[members]]\nid = 1\naddr = \"a:1\"\n", "unknown field"),
        ];
        for (text, want) in cases {
            let err = parse(text).unwrap_err().to_string();
            assert!(err.contains(want), "{text:?}: {err:?} should mention {want:?}");
        }
    }

    #[test]
    fn unknown_member_lists_the_known_ones() {
        let err = ClusterConfig::default().member(9).unwrap_err().to_string();
        assert!(err.contains("member 9") && err.contains("1, 2, 3, 4, 5"), "{err}");
    }
}
