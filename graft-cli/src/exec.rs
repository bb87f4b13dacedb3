//! Runs a [`Command`] against the cluster through one [`graft_kv::Client`]
//! and returns what happened as an [`Outcome`]; [`Code`] (in `code`) says
//! how the program should exit because of it.
//!
//! `status` and `member list` share one survey of the cluster (every
//! endpoint and every member they list, asked for its status at once); they
//! differ in what they show of it: `status` every address that was asked,
//! `member list` the membership as the leader (else the first endpoint that
//! answered) knows it.

use std::collections::BTreeMap;
use std::io::IsTerminal;

use anyhow::Context;
use bytes::Bytes;
use graft_kv::protocol::{
    Consistency, Expect, KeyValue, LeaseInfo, MemberInfo, MemberStatus, Txn, TxnResponse,
};
use graft_kv::{Client, ClientError};

use crate::code::{ChangeOutcomeUnknown, Code, NoMemberAnswered};
use crate::command::{Command, Expectation};
use crate::lease::LeaseCommand;
use crate::verify::{self, Plan, VerifyReport};

/// The error of a failed membership change: marked as of unknown outcome
/// when the cluster did not answer in time.
fn change_error(e: ClientError) -> anyhow::Error {
    match e {
        ClientError::Unavailable { .. } => anyhow::Error::new(ChangeOutcomeUnknown(e)),
        other => anyhow::Error::new(other),
    }
}

/// What a command did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// `get`: the value, if the key exists.
    Got {
        /// The key.
        key: String,
        /// Its record.
        found: Option<KeyValue>,
        /// The revision read.
        revision: u64,
    },
    /// `put`: the write's revision.
    Put {
        /// The key.
        key: String,
        /// The revision of the write.
        revision: u64,
    },
    /// `delete`: the key's record before, if it existed.
    Deleted {
        /// The key.
        key: String,
        /// Its record before the delete.
        previous: Option<KeyValue>,
    },
    /// `delete --prefix`: how many keys went.
    DeletedPrefix {
        /// The prefix.
        prefix: String,
        /// How many keys were deleted.
        deleted: u64,
        /// The revision of the write.
        revision: u64,
    },
    /// `cas`: whether it swapped, and the key afterwards.
    Cas {
        /// The key.
        key: String,
        /// Whether the value was replaced.
        swapped: bool,
        /// The key after the operation (the new record if swapped).
        current: Option<KeyValue>,
    },
    /// `scan`: matching keys in key order.
    Scanned {
        /// The prefix asked for.
        prefix: String,
        /// Keys and their records.
        items: Vec<(Bytes, KeyValue)>,
        /// The revision read.
        revision: u64,
    },
    /// `txn`: which branch ran and what each operation did.
    Txn {
        /// The transaction (its operations label the results).
        txn: Box<Txn>,
        /// The outcome.
        response: TxnResponse,
    },
    /// `compact`: the new compaction point.
    Compacted {
        /// The oldest revision still readable.
        revision: u64,
    },
    /// `lease grant`: the new lease.
    LeaseGranted {
        /// Its id.
        id: u64,
        /// Its TTL, in ms.
        ttl_ms: u64,
    },
    /// `lease revoke`: how many keys went with it.
    LeaseRevoked {
        /// The lease.
        id: u64,
        /// Keys deleted.
        deleted: u64,
    },
    /// `lease keepalive --once`: renewed (`Some(ttl)`) or gone.
    LeaseRenewed {
        /// The lease.
        id: u64,
        /// Its TTL, if it still exists.
        ttl_ms: Option<u64>,
    },
    /// `lease ttl`: the lease.
    Lease(LeaseInfo),
    /// `lease list`: every lease.
    Leases(Vec<LeaseInfo>),
    /// `status`: every member.
    Status(StatusReport),
    /// `leader transfer`: member `to` leads now.
    Transferred {
        /// The new leader's id.
        to: u64,
    },
    /// `member list`: the members.
    Members(MemberList),
    /// `member add`: the change is committed.
    MemberAdded {
        /// The member's id.
        id: u64,
        /// Its address.
        addr: String,
        /// Whether it becomes a voter once caught up (no `--learner`).
        promote: bool,
    },
    /// `member remove`: the change is committed.
    MemberRemoved {
        /// The member's id.
        id: u64,
    },
    /// `member promote`: the change is committed.
    MemberPromoted {
        /// The member's id.
        id: u64,
    },
    /// `verify`: what the run found.
    Verified(VerifyReport),
}

impl Outcome {
    /// The exit code this outcome calls for.
    pub fn code(&self) -> Code {
        match self {
            Outcome::Got { found: None, .. }
            | Outcome::Deleted { previous: None, .. }
            | Outcome::Cas { swapped: false, .. } => Code::NoMatch,
            Outcome::Txn { response, .. } if !response.succeeded => Code::NoMatch,
            Outcome::LeaseRenewed { ttl_ms: None, .. } => Code::NoMatch,
            Outcome::Verified(report) => report.code(),
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

/// One member of `member list`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListedMember {
    /// Its id, address and whether it votes, as the membership says.
    pub info: MemberInfo,
    /// Whether it leads.
    pub leader: bool,
    /// Its own answer, or why it gave none.
    pub status: Result<MemberStatus, String>,
}

/// What `member list` found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemberList {
    /// The members, in id order.
    pub members: Vec<ListedMember>,
    /// The leader's id and address, if known.
    pub leader: Option<(u64, String)>,
}

/// Every address asked for its status, and its answer or why it gave none.
type Answers = BTreeMap<String, Result<MemberStatus, String>>;

/// Runs commands with one client, so all writes share one exactly-once session.
pub struct Executor {
    client: Client,
    endpoints: Vec<String>,
    timeout: std::time::Duration,
}

impl Executor {
    /// An executor for the cluster at `endpoints`.
    pub fn new(endpoints: Vec<String>, timeout: std::time::Duration) -> Executor {
        let client = Client::new(graft_kv::ClientOptions { endpoints: endpoints.clone(), timeout });
        Executor { client, endpoints, timeout }
    }

    /// The address of the leader the client talks to, if known.
    pub fn leader(&self) -> Option<String> {
        self.client.leader()
    }

    /// The client (for `watch`, which streams instead of answering once).
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Runs one command. The error's context names the command and key.
    pub async fn run(&self, cmd: &Command) -> anyhow::Result<Outcome> {
        let c = &self.client;
        let consistency = |stale: bool| if stale { Consistency::Stale } else { Consistency::Linearizable };
        Ok(match cmd {
            Command::Get { key, stale, revision } => {
                let (found, revision) = c
                    .get_at(key.clone(), consistency(*stale), *revision)
                    .await
                    .with_context(|| format!("get {key}"))?;
                Outcome::Got { key: key.clone(), found, revision }
            }
            Command::Put { key, value, lease } => {
                let revision = c
                    .put_with_lease(key.clone(), value.clone(), *lease)
                    .await
                    .with_context(|| format!("put {key}"))?;
                Outcome::Put { key: key.clone(), revision }
            }
            Command::Lease(LeaseCommand::Grant { ttl }) => {
                let id = c.lease_grant(*ttl).await.context("lease grant")?;
                Outcome::LeaseGranted { id, ttl_ms: ttl.as_millis() as u64 }
            }
            Command::Lease(LeaseCommand::Revoke { id }) => {
                let deleted = c.lease_revoke(*id).await.with_context(|| format!("lease revoke {id}"))?;
                Outcome::LeaseRevoked { id: *id, deleted }
            }
            Command::Lease(LeaseCommand::KeepAlive { id, .. }) => {
                let answers =
                    c.lease_keep_alive(vec![*id]).await.with_context(|| format!("lease keepalive {id}"))?;
                let ttl_ms = answers.into_iter().find(|(i, _)| i == id).and_then(|(_, t)| t);
                Outcome::LeaseRenewed { id: *id, ttl_ms }
            }
            Command::Lease(LeaseCommand::Ttl { id }) => {
                Outcome::Lease(c.lease_ttl(*id).await.with_context(|| format!("lease ttl {id}"))?)
            }
            Command::Lease(LeaseCommand::List) => Outcome::Leases(c.leases().await.context("lease list")?),
            Command::Delete { key } => {
                let previous = c.delete(key.clone()).await.with_context(|| format!("delete {key}"))?;
                Outcome::Deleted { key: key.clone(), previous }
            }
            Command::DeletePrefix { prefix } => {
                let (deleted, revision) = c
                    .delete_prefix(prefix.clone())
                    .await
                    .with_context(|| format!("delete --prefix {prefix}"))?;
                Outcome::DeletedPrefix { prefix: prefix.clone(), deleted, revision }
            }
            Command::Txn(txn) => {
                let response = c.txn(txn.clone()).await.context("txn")?;
                Outcome::Txn { txn: Box::new(txn.clone()), response }
            }
            Command::Compact { revision } => {
                let revision = c.compact(*revision).await.with_context(|| format!("compact {revision}"))?;
                Outcome::Compacted { revision }
            }
            Command::Cas { key, expect, new } => {
                let expect = match expect {
                    Expectation::Value(v) => Expect::Value(Some(Bytes::from(v.clone()))),
                    Expectation::ModRevision(r) => Expect::ModRevision(*r),
                    Expectation::Version(v) => Expect::Version(*v),
                    Expectation::Absent => Expect::Value(None),
                };
                let (swapped, current) =
                    c.cas(key.clone(), expect, new.clone()).await.with_context(|| format!("cas {key}"))?;
                Outcome::Cas { key: key.clone(), swapped, current }
            }
            Command::Scan { prefix, limit, stale, revision } => {
                let (items, revision) = c
                    .scan_at(prefix.clone(), *limit, consistency(*stale), *revision)
                    .await
                    .with_context(|| format!("scan {prefix}"))?;
                Outcome::Scanned { prefix: prefix.clone(), items, revision }
            }
            Command::Watch { .. } | Command::Lock { .. } | Command::Elect { .. } => {
                anyhow::bail!("{} runs until it ends; the runner serves it", cmd.name())
            }
            Command::Status => Outcome::Status(build_report(self.survey().await.context("status")?)),
            Command::LeaderTransfer { to } => {
                c.transfer_leader(*to).await.with_context(|| format!("leader transfer {to}"))?;
                // The client still remembers the old leader (shown in the
                // REPL's prompt). A read sent there is redirected to the new
                // one, which the client then remembers; its answer is not needed.
                let refresh = c.get_with(Bytes::new(), Consistency::Linearizable);
                let _ = tokio::time::timeout(std::time::Duration::from_millis(500), refresh).await;
                Outcome::Transferred { to: *to }
            }
            Command::MemberList => {
                let answers = self.survey().await.context("member list")?;
                Outcome::Members(build_member_list(&self.endpoints, answers))
            }
            Command::MemberAdd { id, addr, learner } => {
                c.add_member(*id, addr.clone(), !*learner)
                    .await
                    .map_err(change_error)
                    .with_context(|| format!("member add {id} {addr}"))?;
                Outcome::MemberAdded { id: *id, addr: addr.clone(), promote: !*learner }
            }
            Command::MemberRemove { id } => {
                c.remove_member(*id)
                    .await
                    .map_err(change_error)
                    .with_context(|| format!("member remove {id}"))?;
                Outcome::MemberRemoved { id: *id }
            }
            Command::MemberPromote { id } => {
                c.promote_member(*id)
                    .await
                    .map_err(change_error)
                    .with_context(|| format!("member promote {id}"))?;
                Outcome::MemberPromoted { id: *id }
            }
            Command::Verify { duration, clients, keys, seed } => {
                let plan = Plan {
                    endpoints: self.endpoints.clone(),
                    timeout: self.timeout,
                    duration: *duration,
                    clients: *clients,
                    keys: *keys,
                    seed: seed.unwrap_or_else(graft_kv::client::random_u64),
                };
                // Progress only for a person watching, never into a pipe or a file.
                let progress = std::io::stderr().is_terminal();
                Outcome::Verified(verify::run(plan, progress).await?)
            }
        })
    }

    /// Asks every endpoint, and every member they know of, for its status.
    /// Fails if none answers.
    async fn survey(&self) -> Result<Answers, NoMemberAnswered> {
        let mut answers: Answers = BTreeMap::new();
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
        Ok(answers)
    }
}

/// The leader's id: the member that says it leads in the newest term, else
/// the one named by the member with the newest term.
fn find_leader(answers: &Answers) -> Option<u64> {
    let ok: Vec<&MemberStatus> = answers.values().filter_map(|r| r.as_ref().ok()).collect();
    let newest = ok.iter().max_by_key(|s| s.term);
    ok.iter()
        .filter(|s| s.role == "Leader")
        .max_by_key(|s| s.term)
        .map(|s| s.id)
        .or_else(|| newest.and_then(|s| s.leader))
}

/// Puts the answers in order and finds the leader.
fn build_report(answers: Answers) -> StatusReport {
    let ok: Vec<&MemberStatus> = answers.values().filter_map(|r| r.as_ref().ok()).collect();
    let ids: BTreeMap<String, u64> =
        ok.iter().flat_map(|s| s.members.iter().map(|m| (m.addr.clone(), m.id))).collect();
    let leader = find_leader(&answers).map(|id| {
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

/// The membership, from the leader's own answer if it gave one (a member
/// that was removed may never learn it), else from the first endpoint, in
/// the order given, that answered (else any member that answered); each
/// member with its own answer, found by address or, for a member that
/// answered under another address, by id.
fn build_member_list(endpoints: &[String], answers: Answers) -> MemberList {
    let leader = find_leader(&answers);
    let ok = || answers.values().filter_map(|r| r.as_ref().ok());
    let source = ok()
        .find(|s| Some(s.id) == leader && s.role == "Leader")
        .or_else(|| endpoints.iter().find_map(|e| answers.get(e).and_then(|r| r.as_ref().ok())))
        .or_else(|| ok().next());
    let infos: Vec<MemberInfo> = source.map(|s| s.members.clone()).unwrap_or_default();
    let mut members: Vec<ListedMember> = infos
        .into_iter()
        .map(|info| {
            let status = match answers.get(&info.addr) {
                Some(Ok(s)) if s.id != info.id => Err(format!("{} answers as member {}", info.addr, s.id)),
                Some(r) => r.clone(),
                None => ok().find(|s| s.id == info.id).cloned().ok_or_else(|| "not asked".to_owned()),
            };
            ListedMember { leader: Some(info.id) == leader, info, status }
        })
        .collect();
    members.sort_by_key(|m| m.info.id);
    let leader = leader.map(|id| {
        let addr = members.iter().find(|m| m.info.id == id).map(|m| m.info.addr.clone()).unwrap_or_default();
        (id, addr)
    });
    MemberList { members, leader }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::code::outcome_unknown;
    use crate::command::UsageError;
    use graft_kv::protocol::ApiError;

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
            compacted: 0,
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

    /// A member's answer listing `members` as (id, voter).
    fn listing(id: u64, role: &str, term: u64, leader: Option<u64>, members: &[(u64, bool)]) -> MemberStatus {
        let members = members.iter().map(|&(i, voter)| MemberInfo { id: i, addr: format!("h:{i}"), voter });
        MemberStatus { members: members.collect(), ..member(id, role, term, leader) }
    }

    fn endpoints(ids: &[u64]) -> Vec<String> {
        ids.iter().map(|i| format!("h:{i}")).collect()
    }

    fn ids_of(list: &MemberList) -> Vec<(u64, bool, bool, bool)> {
        list.members.iter().map(|m| (m.info.id, m.info.voter, m.leader, m.status.is_ok())).collect()
    }

    #[test]
    fn member_list_takes_the_leaders_membership() {
        // Member 1 was removed and never learned it; the leader's list counts.
        let mut answers = BTreeMap::new();
        answers.insert(
            "h:1".to_owned(),
            Ok(listing(1, "Follower", 2, Some(3), &[(1, true), (2, true), (3, true)])),
        );
        answers.insert(
            "h:2".to_owned(),
            Ok(listing(2, "Follower", 2, Some(3), &[(2, true), (3, true), (9, false)])),
        );
        answers.insert(
            "h:3".to_owned(),
            Ok(listing(3, "Leader", 2, Some(3), &[(2, true), (3, true), (9, false)])),
        );
        answers.insert("h:9".to_owned(), Err("connection refused".to_owned()));
        let list = build_member_list(&endpoints(&[1, 2, 3]), answers);
        assert_eq!(ids_of(&list), [(2, true, false, true), (3, true, true, true), (9, false, false, false)]);
        assert_eq!(list.leader, Some((3, "h:3".to_owned())));
        assert_eq!(list.members[2].status, Err("connection refused".to_owned()));
    }

    #[test]
    fn member_list_without_the_leader_takes_the_first_endpoint_that_answered() {
        let mut answers = BTreeMap::new();
        answers.insert("h:1".to_owned(), Err("refused".to_owned()));
        answers.insert(
            "h:2".to_owned(),
            Ok(listing(2, "Follower", 4, Some(1), &[(1, true), (2, true), (3, true)])),
        );
        answers.insert(
            "h:3".to_owned(),
            Ok(listing(3, "Follower", 4, Some(1), &[(1, true), (2, true), (3, false)])),
        );
        let list = build_member_list(&endpoints(&[1, 3, 2]), answers.clone());
        // Endpoint order: h:1 (no answer), then h:3, whose list says 3 is a learner.
        assert_eq!(ids_of(&list), [(1, true, true, false), (2, true, false, true), (3, false, false, true)]);
        assert_eq!(list.leader, Some((1, "h:1".to_owned())));
        let list = build_member_list(&endpoints(&[2]), answers.clone());
        assert_eq!(ids_of(&list)[2], (3, true, false, true));
        // No endpoint answered (members found through others did): any answer.
        let list = build_member_list(&endpoints(&[7]), answers);
        assert_eq!(list.members.len(), 3);
    }

    #[test]
    fn member_list_matches_answers_by_address_then_id() {
        let three = [(1, true), (2, true), (3, true)];
        let mut answers = BTreeMap::new();
        // Member 1 answered under another name for its address.
        answers.insert("localhost:1".to_owned(), Ok(listing(1, "Leader", 1, Some(1), &three)));
        answers.insert("h:2".to_owned(), Ok(listing(2, "Follower", 1, Some(1), &three)));
        // Something else now listens at member 3's address.
        answers.insert("h:3".to_owned(), Ok(listing(7, "Follower", 1, Some(1), &three)));
        let list = build_member_list(&["localhost:1".to_owned()], answers);
        assert_eq!(ids_of(&list), [(1, true, true, true), (2, true, false, true), (3, true, false, false)]);
        assert_eq!(list.members[2].status, Err("h:3 answers as member 7".to_owned()));
        assert_eq!(list.leader, Some((1, "h:1".to_owned())));
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
        // Membership changes: refused is a usage error, known not to have
        // happened; no answer in time is exit 3, outcome unknown.
        let refused = ApiError::Invalid("membership change refused: after the change, ...".into());
        let e = change_error(ClientError::Api(refused)).context("member promote 9");
        assert_eq!((Code::of_error(&e), outcome_unknown(&e)), (Code::Usage, false));
        let timed_out = ClientError::Unavailable {
            tried: vec!["a:1".into()],
            last_error: "a:1: unavailable: membership change refused for now: ...".into(),
            timeout: std::time::Duration::from_secs(1),
            write: false,
        };
        let e = change_error(timed_out).context("member remove 2");
        assert_eq!((Code::of_error(&e), outcome_unknown(&e)), (Code::Unavailable, true));
        assert!(
            format!("{e:#}")
                .starts_with("member remove 2: membership change outcome unknown: cluster unavailable"),
            "{e:#}"
        );
        assert!(Code::Unavailable > Code::Usage && Code::Usage > Code::NoMatch && Code::NoMatch > Code::Ok);
    }

    #[test]
    fn outcomes_that_exit_one() {
        let v = Some(KeyValue {
            value: Bytes::from("x"),
            create_revision: 3,
            mod_revision: 3,
            version: 1,
            lease: 0,
        });
        assert_eq!(Outcome::Got { key: "k".into(), found: None, revision: 4 }.code(), Code::NoMatch);
        assert_eq!(Outcome::Got { key: "k".into(), found: v.clone(), revision: 4 }.code(), Code::Ok);
        assert_eq!(Outcome::Deleted { key: "k".into(), previous: None }.code(), Code::NoMatch);
        assert_eq!(Outcome::Deleted { key: "k".into(), previous: v.clone() }.code(), Code::Ok);
        assert_eq!(
            Outcome::Cas { key: "k".into(), swapped: false, current: v.clone() }.code(),
            Code::NoMatch
        );
        assert_eq!(Outcome::Cas { key: "k".into(), swapped: true, current: v }.code(), Code::Ok);
        let txn = |succeeded| Outcome::Txn {
            txn: Box::default(),
            response: graft_kv::protocol::TxnResponse { succeeded, results: vec![], revision: 5 },
        };
        assert_eq!(txn(true).code(), Code::Ok);
        assert_eq!(txn(false).code(), Code::NoMatch, "the compares failed");
        assert_eq!(Outcome::DeletedPrefix { prefix: "p".into(), deleted: 0, revision: 5 }.code(), Code::Ok);
        assert_eq!(Outcome::Scanned { prefix: "".into(), items: vec![], revision: 4 }.code(), Code::Ok);
    }
}
