//! Runs a [`Command`] against the cluster through one [`graft_kv::Client`]
//! and returns what happened as an [`Outcome`]; [`Code`] says how the
//! program should exit because of it.

use std::collections::BTreeMap;

use anyhow::Context;
use bytes::Bytes;
use graft_kv::protocol::{ApiError, Consistency, Expect, MemberStatus, Versioned};
use graft_kv::{Client, ClientError};

use crate::command::{Command, Expectation, UsageError};

/// Exit codes. A run of several commands exits with the highest.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Code {
    /// Done.
    Ok = 0,
    /// The key was absent (get, delete), or compare-and-swap did not swap.
    NoMatch = 1,
    /// The command or its options are wrong, or the cluster refused the
    /// request as invalid (too large, unknown member).
    Usage = 2,
    /// The cluster did not answer in time; a write's outcome is unknown.
    Unavailable = 3,
    /// Anything else (a member's internal error, an output error).
    Failure = 4,
}

impl Code {
    /// The process exit status.
    pub fn as_u8(self) -> u8 {
        self as u8
    }

    /// The code for a failed command.
    pub fn of_error(err: &anyhow::Error) -> Code {
        for cause in err.chain() {
            if cause.downcast_ref::<UsageError>().is_some() {
                return Code::Usage;
            }
            if cause.downcast_ref::<NoMemberAnswered>().is_some() {
                return Code::Unavailable;
            }
            if let Some(e) = cause.downcast_ref::<ClientError>() {
                return match e {
                    ClientError::Unavailable { .. } => Code::Unavailable,
                    ClientError::Api(api) => match api {
                        ApiError::KeyTooLarge { .. }
                        | ApiError::ValueTooLarge { .. }
                        | ApiError::Invalid(_) => Code::Usage,
                        ApiError::NotLeader { .. } | ApiError::Unavailable(_) | ApiError::SessionExpired => {
                            Code::Unavailable
                        }
                        ApiError::Internal(_) => Code::Failure,
                    },
                };
            }
        }
        Code::Failure
    }
}

/// `status` found no member that answers.
#[derive(Debug)]
pub struct NoMemberAnswered {
    /// Each address asked, and why it gave no answer.
    pub tried: Vec<(String, String)>,
}

impl std::fmt::Display for NoMemberAnswered {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let tried: Vec<String> = self.tried.iter().map(|(addr, e)| format!("{addr}: {e}")).collect();
        write!(f, "cluster unavailable: no member answered; tried {}", tried.join("; "))
    }
}

impl std::error::Error for NoMemberAnswered {}

/// Whether a failed command was a write whose outcome is unknown.
pub fn outcome_unknown(err: &anyhow::Error) -> bool {
    err.chain().any(|c| c.downcast_ref::<ClientError>().is_some_and(ClientError::outcome_unknown))
}

/// What a command did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// `get`: the value, if the key exists.
    Got {
        /// The key.
        key: String,
        /// Its value and version.
        found: Option<Versioned>,
    },
    /// `put`: the new version.
    Put {
        /// The key.
        key: String,
        /// The log index of the write.
        version: u64,
    },
    /// `delete`: the version the key had, if it existed.
    Deleted {
        /// The key.
        key: String,
        /// Its version before the delete.
        previous: Option<u64>,
    },
    /// `cas`: whether it swapped, and the key's value afterwards.
    Cas {
        /// The key.
        key: String,
        /// Whether the value was replaced.
        swapped: bool,
        /// The value after the operation (the new one if swapped).
        current: Option<Versioned>,
    },
    /// `scan`: matching keys in key order.
    Scanned {
        /// The prefix asked for.
        prefix: String,
        /// Keys and values.
        items: Vec<(Bytes, Versioned)>,
    },
    /// `status`: every member.
    Status(StatusReport),
    /// `leader transfer`: member `to` leads now.
    Transferred {
        /// The new leader's id.
        to: u64,
    },
}

impl Outcome {
    /// The exit code this outcome calls for.
    pub fn code(&self) -> Code {
        match self {
            Outcome::Got { found: None, .. }
            | Outcome::Deleted { previous: None, .. }
            | Outcome::Cas { swapped: false, .. } => Code::NoMatch,
            _ => Code::Ok,
        }
    }
}

/// One row of `status`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemberRow {
    /// Its id, if known (from its own answer or another member's list).
    pub id: Option<u64>,
    /// Its address.
    pub addr: String,
    /// Its answer, or why it gave none.
    pub status: Result<MemberStatus, String>,
}

/// What `status` found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StatusReport {
    /// Every member, in id order (unknown ids last).
    pub members: Vec<MemberRow>,
    /// The leader's id and address, if any member knows it.
    pub leader: Option<(u64, String)>,
}

/// Runs commands with one client, so all writes share one exactly-once session.
pub struct Executor {
    client: Client,
    endpoints: Vec<String>,
}

impl Executor {
    /// An executor for the cluster at `endpoints`.
    pub fn new(endpoints: Vec<String>, timeout: std::time::Duration) -> Executor {
        let client = Client::new(graft_kv::ClientOptions { endpoints: endpoints.clone(), timeout });
        Executor { client, endpoints }
    }

    /// The address of the leader the client talks to, if known.
    pub fn leader(&self) -> Option<String> {
        self.client.leader()
    }

    /// Runs one command. The error's context names the command and key.
    pub async fn run(&self, cmd: &Command) -> anyhow::Result<Outcome> {
        let c = &self.client;
        let consistency = |stale: bool| if stale { Consistency::Stale } else { Consistency::Linearizable };
        Ok(match cmd {
            Command::Get { key, stale } => {
                let found = c
                    .get_with(key.clone(), consistency(*stale))
                    .await
                    .with_context(|| format!("get {key}"))?;
                Outcome::Got { key: key.clone(), found }
            }
            Command::Put { key, value } => {
                let version =
                    c.put(key.clone(), value.clone()).await.with_context(|| format!("put {key}"))?;
                Outcome::Put { key: key.clone(), version }
            }
            Command::Delete { key } => {
                let previous = c.delete(key.clone()).await.with_context(|| format!("delete {key}"))?;
                Outcome::Deleted { key: key.clone(), previous }
            }
            Command::Cas { key, expect, new } => {
                let expect = match expect {
                    Expectation::Value(v) => Expect::Value(Some(Bytes::from(v.clone()))),
                    Expectation::Version(v) => Expect::Version(*v),
                    Expectation::Absent => Expect::Value(None),
                };
                let (swapped, current) =
                    c.cas(key.clone(), expect, new.clone()).await.with_context(|| format!("cas {key}"))?;
                Outcome::Cas { key: key.clone(), swapped, current }
            }
            Command::Scan { prefix, limit, stale } => {
                let items = c
                    .scan(prefix.clone(), *limit, consistency(*stale))
                    .await
                    .with_context(|| format!("scan {prefix}"))?;
                Outcome::Scanned { prefix: prefix.clone(), items }
            }
            Command::Status => Outcome::Status(self.status().await.context("status")?),
            Command::LeaderTransfer { to } => {
                c.transfer_leader(*to).await.with_context(|| format!("leader transfer {to}"))?;
                // The client still remembers the old leader (shown in the
                // REPL's prompt). A read sent there is redirected to the new
                // one, which the client then remembers; its answer is not needed.
                let refresh = c.get_with(Bytes::new(), Consistency::Linearizable);
                let _ = tokio::time::timeout(std::time::Duration::from_millis(500), refresh).await;
                Outcome::Transferred { to: *to }
            }
        })
    }

    /// Asks every endpoint, and every member they know of, for its status.
    async fn status(&self) -> Result<StatusReport, NoMemberAnswered> {
        let mut answers: BTreeMap<String, Result<MemberStatus, String>> = BTreeMap::new();
        let mut to_ask: Vec<String> = self.endpoints.clone();
        // Two rounds: the endpoints, then members they listed that are not endpoints.
        for _ in 0..2 {
            let mut tasks = tokio::task::JoinSet::new();
            for addr in to_ask.drain(..) {
                if addr.is_empty() || answers.contains_key(&addr) {
                    continue;
                }
                answers.insert(addr.clone(), Err("not asked".into()));
                let client = self.client.clone();
                tasks.spawn(async move {
                    let r = client.status_of(&addr).await.map_err(|e| match e {
                        ClientError::Unavailable { last_error, .. } => last_error,
                        other => other.to_string(),
                    });
                    (addr, r)
                });
            }
            while let Some(joined) = tasks.join_next().await {
                if let Ok((addr, r)) = joined {
                    answers.insert(addr, r);
                }
            }
            // Members known by another address (say, `localhost` for
            // `127.0.0.1`) already answered: do not list them twice.
            let answered: Vec<u64> = answers.values().filter_map(|r| r.as_ref().ok()).map(|s| s.id).collect();
            to_ask = answers
                .values()
                .filter_map(|r| r.as_ref().ok())
                .flat_map(|s| s.members.iter())
                .filter(|m| !answered.contains(&m.id) && !answers.contains_key(&m.addr))
                .map(|m| m.addr.clone())
                .collect();
            if to_ask.is_empty() {
                break;
            }
        }
        if answers.values().all(Result::is_err) {
            let tried = answers.into_iter().map(|(addr, r)| (addr, r.err().unwrap_or_default())).collect();
            return Err(NoMemberAnswered { tried });
        }
        Ok(build_report(answers))
    }
}

/// Puts the answers in order and finds the leader.
fn build_report(answers: BTreeMap<String, Result<MemberStatus, String>>) -> StatusReport {
    let ok: Vec<&MemberStatus> = answers.values().filter_map(|r| r.as_ref().ok()).collect();
    let ids: BTreeMap<String, u64> =
        ok.iter().flat_map(|s| s.members.iter().map(|m| (m.addr.clone(), m.id))).collect();
    let newest = ok.iter().max_by_key(|s| s.term);
    let leader = ok
        .iter()
        .filter(|s| s.role == "Leader")
        .max_by_key(|s| s.term)
        .map(|s| s.id)
        .or_else(|| newest.and_then(|s| s.leader))
        .map(|id| {
            let addr = ids.iter().find(|(_, i)| **i == id).map(|(a, _)| a.clone()).unwrap_or_default();
            (id, addr)
        });
    let mut members: Vec<MemberRow> = answers
        .into_iter()
        .map(|(addr, status)| {
            let id = status.as_ref().ok().map(|s| s.id).or_else(|| ids.get(&addr).copied());
            MemberRow { id, addr, status }
        })
        .collect();
    members.sort_by(|a, b| (a.id.is_none(), a.id, &a.addr).cmp(&(b.id.is_none(), b.id, &b.addr)));
    StatusReport { members, leader }
}

#[cfg(test)]
mod tests {
    use super::*;
    use graft_kv::protocol::MemberInfo;

    fn member(id: u64, role: &str, term: u64, leader: Option<u64>) -> MemberStatus {
        MemberStatus {
            id,
            cluster: "c".into(),
            role: role.into(),
            term,
            leader,
            commit: 10,
            applied: 9,
            first_index: 1,
            last_index: 10,
            members: (1..=3).map(|i| MemberInfo { id: i, addr: format!("h:{i}"), voter: true }).collect(),
        }
    }

    #[test]
    fn report_orders_members_and_names_the_leader() {
        let mut answers = BTreeMap::new();
        answers.insert("h:3".to_owned(), Ok(member(3, "Follower", 4, Some(2))));
        answers.insert("h:2".to_owned(), Ok(member(2, "Leader", 4, Some(2))));
        answers.insert("h:1".to_owned(), Err("connection refused".to_owned()));
        answers.insert("x:9".to_owned(), Err("connection refused".to_owned()));
        let r = build_report(answers);
        assert_eq!(r.leader, Some((2, "h:2".to_owned())));
        let order: Vec<(Option<u64>, &str)> = r.members.iter().map(|m| (m.id, m.addr.as_str())).collect();
        assert_eq!(order, vec![(Some(1), "h:1"), (Some(2), "h:2"), (Some(3), "h:3"), (None, "x:9")]);
    }

    #[test]
    fn leader_from_hints_when_the_leader_does_not_answer() {
        let mut answers = BTreeMap::new();
        answers.insert("h:1".to_owned(), Err("refused".to_owned()));
        answers.insert("h:2".to_owned(), Ok(member(2, "Follower", 5, Some(1))));
        answers.insert("h:3".to_owned(), Ok(member(3, "Follower", 4, None)));
        assert_eq!(build_report(answers).leader, Some((1, "h:1".to_owned())));
    }

    #[test]
    fn codes() {
        let unavailable = ClientError::Unavailable {
            tried: vec!["a:1".into()],
            last_error: "refused".into(),
            timeout: std::time::Duration::from_secs(1),
            write: true,
        };
        let e = anyhow::Error::new(unavailable).context("put k");
        assert_eq!(Code::of_error(&e), Code::Unavailable);
        assert!(outcome_unknown(&e));
        let e = anyhow::Error::new(ClientError::Api(ApiError::ValueTooLarge { size: 2, max: 1 }));
        assert_eq!(Code::of_error(&e), Code::Usage);
        assert!(!outcome_unknown(&e));
        let e = anyhow::Error::new(ClientError::Api(ApiError::SessionExpired)).context("cas k");
        assert_eq!((Code::of_error(&e), outcome_unknown(&e)), (Code::Unavailable, true));
        let e = anyhow::Error::new(ClientError::Api(ApiError::Internal("disk".into())));
        assert_eq!(Code::of_error(&e), Code::Failure);
        assert_eq!(Code::of_error(&anyhow::Error::new(UsageError("x".into()))), Code::Usage);
        let none = NoMemberAnswered {
            tried: vec![("a:1".into(), "refused".into()), ("b:2".into(), "reset".into())],
        };
        assert_eq!(
            none.to_string(),
            "cluster unavailable: no member answered; tried a:1: refused; b:2: reset"
        );
        let e = anyhow::Error::new(none).context("status");
        assert_eq!((Code::of_error(&e), outcome_unknown(&e)), (Code::Unavailable, false));
        assert!(Code::Unavailable > Code::Usage && Code::Usage > Code::NoMatch && Code::NoMatch > Code::Ok);
    }

    #[test]
    fn outcomes_that_exit_one() {
        let v = Some(Versioned { value: Bytes::from("x"), version: 3 });
        assert_eq!(Outcome::Got { key: "k".into(), found: None }.code(), Code::NoMatch);
        assert_eq!(Outcome::Got { key: "k".into(), found: v.clone() }.code(), Code::Ok);
        assert_eq!(Outcome::Deleted { key: "k".into(), previous: None }.code(), Code::NoMatch);
        assert_eq!(Outcome::Deleted { key: "k".into(), previous: Some(3) }.code(), Code::Ok);
        assert_eq!(
            Outcome::Cas { key: "k".into(), swapped: false, current: v.clone() }.code(),
            Code::NoMatch
        );
        assert_eq!(Outcome::Cas { key: "k".into(), swapped: true, current: v }.code(), Code::Ok);
        assert_eq!(Outcome::Scanned { prefix: "".into(), items: vec![] }.code(), Code::Ok);
    }
}
