//! From words to a [`Command`]: the one parser behind the program's
//! arguments, the REPL and lines read from standard input. Pure: no I/O.
//!
//! clap does the parsing ([`CommandArgs`], the same definitions for every
//! mode, so `--help` and the REPL's `help` agree); [`Command::try_from`]
//! then checks what clap cannot express (the two forms of `cas`, member ids
//! and addresses). A line is
//! split into words with shell rules ([`shlex`]): double or single quotes
//! keep spaces in a value, a backslash escapes one character, and a word
//! starting with `#` begins a comment.

use std::time::Duration;

use clap::{CommandFactory, Parser, Subcommand};

pub use crate::txn::DEFAULT_SCAN_LIMIT;

use crate::lease::{LeaseArgs, LeaseCommand};

/// How long `verify` runs when `--duration` is not given.
pub const DEFAULT_VERIFY_DURATION: &str = "30s";

/// How many clients `verify` runs when `--clients` is not given.
pub const DEFAULT_VERIFY_CLIENTS: u32 = 5;

/// How many keys `verify` uses when `--keys` is not given.
pub const DEFAULT_VERIFY_KEYS: u32 = 5;

/// The most clients `verify` runs (each has its own connections).
pub const MAX_VERIFY_CLIENTS: u32 = 256;

/// The most keys `verify` uses at a time.
pub const MAX_VERIFY_KEYS: u32 = 10_000;

/// What a command expects to find, for compare-and-swap.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Expectation {
    /// The current value equals this.
    Value(String),
    /// The key's last write was at this revision (0: the key is absent).
    ModRevision(u64),
    /// The key was written this many times since it was created (0: absent).
    Version(u64),
    /// The key is absent.
    Absent,
}

/// A validated command.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    /// Read a key.
    Get {
        /// The key.
        key: String,
        /// Read from the first endpoint that answers, from its own state.
        stale: bool,
        /// Read as the store stood at this revision (0: the latest).
        revision: u64,
    },
    /// Set a key.
    Put {
        /// The key.
        key: String,
        /// The value.
        value: String,
        /// Attach it to this lease (0: none).
        lease: u64,
    },
    /// A lease command.
    Lease(LeaseCommand),
    /// Remove a key.
    Delete {
        /// The key.
        key: String,
    },
    /// Remove every key starting with a prefix, atomically.
    DeletePrefix {
        /// The prefix.
        prefix: String,
    },
    /// A multi-key transaction.
    Txn(graft_kv::protocol::Txn),
    /// Discard history below a revision.
    Compact {
        /// The oldest revision to keep readable.
        revision: u64,
    },
    /// Run a command while holding a lock.
    Lock {
        /// The lock's name.
        name: String,
        /// The lease's TTL.
        ttl: Duration,
        /// The command and its arguments.
        command: Vec<String>,
    },
    /// Campaign to lead an election and hold it until Ctrl+C.
    Elect {
        /// The election's name.
        name: String,
        /// The value to publish while leading.
        value: String,
        /// The lease's TTL.
        ttl: Duration,
    },
    /// Print every change to a key or prefix as it happens.
    Watch {
        /// The key, or the prefix with `prefix`.
        key: String,
        /// Follow every key starting with `key`.
        prefix: bool,
        /// Start from this revision, replaying history (0: from now).
        from_revision: u64,
        /// Print each key's previous value too.
        prev_value: bool,
    },
    /// Set a key if it holds what is expected.
    Cas {
        /// The key.
        key: String,
        /// What it must hold.
        expect: Expectation,
        /// The value to set.
        new: String,
    },
    /// List keys that start with a prefix.
    Scan {
        /// The prefix (empty: every key).
        prefix: String,
        /// At most this many keys.
        limit: u32,
        /// Read from the first endpoint that answers, from its own state.
        stale: bool,
        /// Read as the store stood at this revision (0: the latest).
        revision: u64,
    },
    /// Describe every member.
    Status,
    /// Hand leadership to another member.
    LeaderTransfer {
        /// The member's id.
        to: u64,
    },
    /// List the members, each with its own state.
    MemberList,
    /// Add a member (as a learner), or record a member's new address.
    MemberAdd {
        /// Its id (not 0).
        id: u64,
        /// Where it listens, `host:port`.
        addr: String,
        /// Whether it stays a learner (otherwise it becomes a voter once
        /// it has caught up).
        learner: bool,
    },
    /// Remove a member.
    MemberRemove {
        /// Its id.
        id: u64,
    },
    /// Make a learner a voter now.
    MemberPromote {
        /// Its id.
        id: u64,
    },
    /// Check the cluster is linearizable with a workload of its own.
    Verify {
        /// How long the workload runs.
        duration: Duration,
        /// Concurrent clients.
        clients: usize,
        /// Keys they share (at a time).
        keys: usize,
        /// Seeds the clients' choices and names the keys; `None`: random.
        seed: Option<u64>,
    },
}

impl Command {
    /// The command's name, as typed (`leader transfer` for a transfer).
    pub fn name(&self) -> &'static str {
        match self {
            Command::Get { .. } => "get",
            Command::Put { .. } => "put",
            Command::Lease(LeaseCommand::Grant { .. }) => "lease grant",
            Command::Lease(LeaseCommand::Revoke { .. }) => "lease revoke",
            Command::Lease(LeaseCommand::KeepAlive { .. }) => "lease keepalive",
            Command::Lease(LeaseCommand::Ttl { .. }) => "lease ttl",
            Command::Lease(LeaseCommand::List) => "lease list",
            Command::Delete { .. } | Command::DeletePrefix { .. } => "delete",
            Command::Txn(_) => "txn",
            Command::Compact { .. } => "compact",
            Command::Watch { .. } => "watch",
            Command::Lock { .. } => "lock",
            Command::Elect { .. } => "elect",
            Command::Cas { .. } => "cas",
            Command::Scan { .. } => "scan",
            Command::Status => "status",
            Command::LeaderTransfer { .. } => "leader transfer",
            Command::MemberList => "member list",
            Command::MemberAdd { .. } => "member add",
            Command::MemberRemove { .. } => "member remove",
            Command::MemberPromote { .. } => "member promote",
            Command::Verify { .. } => "verify",
        }
    }

    /// Whether the command changes data (so a failure may leave its outcome unknown).
    pub fn is_write(&self) -> bool {
        matches!(
            self,
            Command::Put { .. }
                | Command::Delete { .. }
                | Command::Cas { .. }
                | Command::DeletePrefix { .. }
                | Command::Txn(_)
                | Command::Compact { .. }
                | Command::Lease(LeaseCommand::Grant { .. } | LeaseCommand::Revoke { .. })
        )
    }

    /// Whether the command changes the membership (so a failure may leave
    /// its outcome unknown too).
    pub fn is_member_change(&self) -> bool {
        matches!(
            self,
            Command::MemberAdd { .. } | Command::MemberRemove { .. } | Command::MemberPromote { .. }
        )
    }
}

/// The commands as clap sees them, before [`Command::try_from`] checks them.
#[derive(Subcommand, Clone, Debug, PartialEq, Eq)]
pub enum CommandArgs {
    /// Print a key's value (exit 1 if the key is absent)
    Get {
        /// The key
        key: String,
        /// Read from the first endpoint that answers, from its own state,
        /// without asking the leader: may miss recent writes, works without
        /// a majority
        #[arg(long)]
        stale: bool,
        /// Read the key as it stood at revision R (refused below the
        /// compacted revision)
        #[arg(long, value_name = "R", default_value_t = 0)]
        revision: u64,
    },
    /// Set a key to a value; prints the write's revision
    #[command(allow_negative_numbers = true)]
    Put {
        /// The key
        key: String,
        /// The value
        value: String,
        /// Attach the key to lease ID: it is deleted when the lease expires
        /// or is revoked
        #[arg(long, value_name = "ID", default_value_t = 0)]
        lease: u64,
    },
    /// Leases: `lease grant TTL`, `lease revoke ID`, `lease keepalive ID
    /// [--once]`, `lease ttl ID`, `lease list`
    #[command(long_about = LEASE_ABOUT)]
    Lease {
        /// What to do
        #[command(subcommand)]
        action: LeaseArgs,
    },
    /// Remove a key (exit 1 if it was absent), or with --prefix every key
    /// starting with PREFIX, atomically (prints how many)
    #[command(override_usage = "delete KEY\n       delete --prefix PREFIX")]
    Delete {
        /// The key, or the prefix with --prefix
        key: String,
        /// Delete every key starting with the argument
        #[arg(long)]
        prefix: bool,
    },
    /// Run a transaction: compares, then the success or the failure
    /// operations, atomically; exit 1 if the compares failed. Read from
    /// standard input (three sections separated by blank lines) unless
    /// given with --compare/--success/--failure
    #[command(long_about = TXN_ABOUT)]
    Txn {
        /// A compare, FIELD(KEY) OP VALUE (repeatable)
        #[arg(long, value_name = "COMPARE")]
        compare: Vec<String>,
        /// An operation run if every compare holds (repeatable)
        #[arg(long, value_name = "OP")]
        success: Vec<String>,
        /// An operation run otherwise (repeatable)
        #[arg(long, value_name = "OP")]
        failure: Vec<String>,
    },
    /// Discard history below revision R: reads and watches at older
    /// revisions are refused from then on
    Compact {
        /// The oldest revision to keep readable
        revision: u64,
    },
    /// Run COMMAND while holding lock NAME (waiting for it); the lock's
    /// revision (a fencing token) is printed and passed to COMMAND as
    /// GRAFT_LOCK_REVISION; exits with COMMAND's code
    #[command(override_usage = "lock NAME [--ttl 10s] -- COMMAND [ARGS...]")]
    Lock {
        /// The lock's name (a key prefix)
        name: String,
        /// The TTL of the lease that holds it (renewed while held)
        #[arg(long, value_name = "TTL", default_value = "10s", value_parser = parse_duration)]
        ttl: Duration,
        /// The command to run
        #[arg(last = true, required = true, value_name = "COMMAND")]
        command: Vec<String>,
    },
    /// Campaign in election NAME with VALUE: prints `elected: VALUE
    /// (revision R)` once leader, holds until Ctrl+C, then resigns
    Elect {
        /// The election's name (a key prefix)
        name: String,
        /// What the leader publishes
        value: String,
        /// The TTL of the lease that holds the leadership
        #[arg(long, value_name = "TTL", default_value = "10s", value_parser = parse_duration)]
        ttl: Duration,
    },
    /// Print every change to KEY (or every key starting with it, with
    /// --prefix) as it happens, until Ctrl+C: `PUT KEY VALUE` and
    /// `DELETE KEY` lines. Survives the death of the member it reads from
    #[command(long_about = WATCH_ABOUT)]
    Watch {
        /// The key, or the prefix with --prefix
        key: String,
        /// Watch every key starting with KEY
        #[arg(long)]
        prefix: bool,
        /// Replay the changes from revision R first, then follow live
        #[arg(long, value_name = "R", default_value_t = 0)]
        from_revision: u64,
        /// Also print each key's previous value
        #[arg(long)]
        prev_value: bool,
    },
    /// Compare-and-swap: set KEY to NEW if it holds EXPECTED (exit 1 if not)
    #[command(
        allow_negative_numbers = true,
        override_usage = "cas KEY EXPECTED NEW\n       cas KEY NEW --mod-revision R\n       cas KEY NEW --version V\n       cas KEY NEW --absent"
    )]
    Cas {
        /// The key
        key: String,
        /// EXPECTED and NEW; only NEW with --mod-revision, --version or --absent
        #[arg(value_name = "VALUES", num_args = 1..=2, required = true)]
        values: Vec<String>,
        /// Compare the revision of the key's last write instead of its
        /// value (0: the key is absent)
        #[arg(long = "mod-revision", value_name = "R", conflicts_with_all = ["absent", "version"])]
        mod_revision: Option<u64>,
        /// Compare the key's version, the number of writes since it was
        /// created (0: the key is absent)
        #[arg(long = "version", value_name = "V", conflicts_with = "absent")]
        version: Option<u64>,
        /// Swap only if the key is absent
        #[arg(long)]
        absent: bool,
    },
    /// List keys that start with PREFIX, in key order, as KEY<TAB>VALUE lines
    Scan {
        /// The prefix (default: every key)
        #[arg(default_value = "")]
        prefix: String,
        /// At most this many keys
        #[arg(long, value_name = "N", default_value_t = DEFAULT_SCAN_LIMIT)]
        limit: u32,
        /// Read from the first endpoint that answers, from its own state
        #[arg(long)]
        stale: bool,
        /// List the keys as they stood at revision R
        #[arg(long, value_name = "R", default_value_t = 0)]
        revision: u64,
    },
    /// Show every member: id, address, role, term, commit and applied
    /// indexes, log size, whether it answers, and the leader
    Status,
    /// Leadership: `leader transfer ID` hands it to member ID
    Leader {
        /// What to do
        #[command(subcommand)]
        action: LeaderArgs,
    },
    /// Membership: `member list`, `member add ID ADDR [--learner]`,
    /// `member remove ID`, `member promote ID`
    #[command(long_about = MEMBER_ABOUT)]
    Member {
        /// What to do
        #[command(subcommand)]
        action: MemberArgs,
    },
    /// Check the cluster is linearizable: runs a workload of concurrent
    /// clients on keys of its own (under graft-verify/, deleted afterwards)
    /// and reports linearizable (exit 0) or the offending operations (exit 1)
    #[command(long_about = VERIFY_ABOUT)]
    Verify {
        /// How long the workload runs (e.g. 30s, 5m, 1h)
        #[arg(long, value_name = "DURATION", default_value = DEFAULT_VERIFY_DURATION, value_parser = parse_duration)]
        duration: Duration,
        /// Concurrent clients, each with its own connection and session
        #[arg(
            long,
            value_name = "N",
            default_value_t = DEFAULT_VERIFY_CLIENTS,
            value_parser = clap::value_parser!(u32).range(1..=i64::from(MAX_VERIFY_CLIENTS))
        )]
        clients: u32,
        /// Keys the clients share (fewer keys: more conflicts)
        #[arg(
            long,
            value_name = "N",
            default_value_t = DEFAULT_VERIFY_KEYS,
            value_parser = clap::value_parser!(u32).range(1..=i64::from(MAX_VERIFY_KEYS))
        )]
        keys: u32,
        /// Seeds the clients' random choices and names the keys (default:
        /// random; printed with the result, to run the same workload again)
        #[arg(long, value_name = "S")]
        seed: Option<u64>,
    },
}

/// `help verify`: what `verify` does, to which keys, and its exit codes.
const VERIFY_ABOUT: &str = "\
Check the cluster is linearizable, on your own deployment. For --duration,
--clients concurrent clients (each with its own connection and exactly-once
session) do random get, put, delete and compare-and-swap on --keys shared
keys, recording when each operation started and ended and what it returned.
A checker then looks for one order of all the operations that respects both
real time and what each returned.

The keys live under graft-verify/<SEED in hex>/ and nothing else is
touched: keys already there (from an interrupted run with the same seed)
are deleted first, and every key is deleted afterwards (best effort: if the
cluster fails meanwhile, `scan graft-verify/` lists what is left). --timeout
bounds each operation; one that takes longer counts as of unknown outcome.
Runs longer than 2 minutes move to fresh keys every minute, so that each
key's history stays small enough to check.

Prints `linearizable: N operations (U writes with unknown outcome, F failed
reads) on K keys in T, seed S`, or `NOT linearizable (seed S):` and a
minimal set of operations that have no valid order. On a terminal, progress
is shown on standard error.

Exit status: 0 linearizable; 1 not linearizable; 3 cluster unavailable (no
operation, or fewer than 1 in 10, completed); 4 the checker gave up.";

/// `help txn`: the text form of a transaction.
const TXN_ABOUT: &str = "\
Run a transaction atomically, in one log entry: if every compare holds, the
success operations run, otherwise the failure operations, in order (each
sees the writes before it). Exit 0 if the compares held, 1 if not.

Without --compare/--success/--failure the transaction is read from
standard input: compares, a blank line, success operations, a blank line,
failure operations (as `etcdctl txn` reads them). Words follow shell rules;
# starts a comment.

  compare:    FIELD(KEY) OP VALUE   FIELD: value, version, create, mod or lease
                                    OP: =, !=, > or <
  operation:  get KEY | scan PREFIX [--limit N] | put KEY VALUE
              | delete KEY | delete --prefix PREFIX

An absent key has version, create and mod revision 0; a value compare on
an absent key never holds. A branch may not write one key twice. At most
128 compares and 128 operations per branch.

Example (take a lock if nobody holds it):
  printf 'mod(lock) = 0\\n\\nput lock me\\n\\nget lock\\n' | graft-cli txn";

/// `help lease`.
const LEASE_ABOUT: &str = "\
Leases: a key put with --lease ID is deleted when lease ID expires (its TTL
passes without a keepalive) or is revoked, on every member at the same
revision (watchers see a DELETE). `lease grant TTL` prints the new lease's
id; `lease keepalive ID` renews it every third of its TTL until Ctrl+C;
`lease ttl ID` shows its TTL, the time left and its keys; `lease revoke ID`
deletes its keys at once. A leader change keeps each lease's time left (it
does not reset it to the TTL). A lease that is gone: exit 1.";

/// `help watch`.
const WATCH_ABOUT: &str = "\
Print every change to KEY, or with --prefix to every key starting with KEY,
in revision order as it happens, until Ctrl+C (exit 0). Plain output is one
line per change: `PUT KEY VALUE` or `DELETE KEY`, with --prev-value followed
by `(previous: VALUE)` when the key had one. --output json prints one
object per change: type, key, value, revision, create_revision,
mod_revision, version (and prev_value).

--from-revision R replays the changes from revision R on (history is kept
until compacted; below that the watch fails with exit 2 naming the oldest
revision left), then follows live, with no gap or repeat. If the member
serving the watch dies, or cancels it because the output is read too slowly,
the watch resumes on another member from the last revision printed.";

/// `help member`: what the `member` commands are for.
const MEMBER_ABOUT: &str = "\
Membership: list, add, remove or promote members, one change at a time (each
is committed before the next is accepted). A change is refused (exit 2) if
the voters the leader heard from within the last election timeout would not
form a majority of the voters afterwards, and refused for now (retried until
--timeout, then exit 3) while the previous change is not committed yet.";

/// `member` subcommands.
#[derive(Subcommand, Clone, Debug, PartialEq, Eq)]
pub enum MemberArgs {
    /// Show every member: id, address, voter or learner, and its own role,
    /// term and applied index if it answers; then the leader
    List,
    /// Add member ID at ADDR: it joins as a learner and becomes a voter
    /// once caught up, unless --learner
    #[command(long_about = MEMBER_ADD_ABOUT)]
    Add {
        /// The new member's id (not 0)
        id: u64,
        /// Where it listens, as HOST:PORT (the address the others reach it at)
        #[arg(value_name = "ADDR")]
        addr: String,
        /// Keep it a learner: it receives the log but never votes (promote
        /// it later with `member promote ID`)
        #[arg(long)]
        learner: bool,
    },
    /// Remove member ID (a voter, a learner, or the leader, which steps
    /// down once the change is committed)
    Remove {
        /// The member's id
        id: u64,
    },
    /// Make learner ID a voter now, without waiting for it to catch up
    Promote {
        /// The member's id
        id: u64,
    },
}

/// `help member add`.
const MEMBER_ADD_ABOUT: &str = "\
Add member ID at ADDR. It joins as a learner (it receives the log but does
not vote) and the leader promotes it to voter once it has caught up, unless
--learner keeps it a learner. Returns once the change is committed.

A new member process is normally started with
  graft-kv serve --id ID --join HOST:PORT --listen ADDR
which makes this same request itself: no `member add` is needed then. Use
`member add` to add a member you will start afterwards (with that command),
or, for a member that already exists, to record its new address.";

/// `leader` subcommands.
#[derive(Subcommand, Clone, Debug, PartialEq, Eq)]
pub enum LeaderArgs {
    /// Hand leadership to member ID; returns once it leads
    Transfer {
        /// The member's id
        id: u64,
    },
}

/// A command line that is not a valid command. Its text is one line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UsageError(pub String);

impl std::fmt::Display for UsageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

impl TryFrom<CommandArgs> for Command {
    type Error = UsageError;

    fn try_from(args: CommandArgs) -> Result<Command, UsageError> {
        Ok(match args {
            CommandArgs::Get { key, stale, revision } => Command::Get { key, stale, revision },
            CommandArgs::Put { key, value, lease } => Command::Put { key, value, lease },
            CommandArgs::Lease { action } => {
                Command::Lease(LeaseCommand::try_from(action).map_err(UsageError)?)
            }
            CommandArgs::Delete { key, prefix: false } => Command::Delete { key },
            CommandArgs::Delete { key, prefix: true } => Command::DeletePrefix { prefix: key },
            CommandArgs::Txn { compare, success, failure } => {
                if compare.is_empty() && success.is_empty() && failure.is_empty() {
                    // Read from standard input by the caller.
                    Command::Txn(graft_kv::protocol::Txn::default())
                } else {
                    let txn = crate::txn::parse_parts(&compare, &success, &failure).map_err(UsageError)?;
                    txn.validate().map_err(|e| UsageError(e.to_string()))?;
                    Command::Txn(txn)
                }
            }
            CommandArgs::Lock { name, ttl, command } => Command::Lock { name, ttl, command },
            CommandArgs::Elect { name, value, ttl } => Command::Elect { name, value, ttl },
            CommandArgs::Watch { key, prefix, from_revision, prev_value } => {
                Command::Watch { key, prefix, from_revision, prev_value }
            }
            CommandArgs::Compact { revision } => {
                if revision == 0 {
                    return Err(UsageError("compact needs a revision above 0".into()));
                }
                Command::Compact { revision }
            }
            CommandArgs::Cas { key, mut values, mod_revision, version, absent } => {
                let by_value = mod_revision.is_none() && version.is_none() && !absent;
                let wanted = if by_value { 2 } else { 1 };
                if values.len() != wanted {
                    return Err(UsageError(format!(
                        "cas takes KEY EXPECTED NEW, or KEY NEW with --mod-revision R, --version V or --absent (got {} value{} after the key)",
                        values.len(),
                        if values.len() == 1 { "" } else { "s" }
                    )));
                }
                let new = values.pop().unwrap_or_default();
                let expect = match (mod_revision, version, absent) {
                    (Some(r), _, _) => Expectation::ModRevision(r),
                    (None, Some(v), _) => Expectation::Version(v),
                    (None, None, true) => Expectation::Absent,
                    (None, None, false) => Expectation::Value(values.pop().unwrap_or_default()),
                };
                Command::Cas { key, expect, new }
            }
            CommandArgs::Scan { prefix, limit, stale, revision } => {
                if limit == 0 {
                    return Err(UsageError("scan --limit must be at least 1".into()));
                }
                Command::Scan { prefix, limit, stale, revision }
            }
            CommandArgs::Status => Command::Status,
            CommandArgs::Leader { action: LeaderArgs::Transfer { id } } => Command::LeaderTransfer { to: id },
            CommandArgs::Member { action } => match action {
                MemberArgs::List => Command::MemberList,
                MemberArgs::Add { id, addr, learner } => {
                    let addr = check_addr(&addr).map_err(UsageError)?;
                    Command::MemberAdd { id: member_id(id)?, addr, learner }
                }
                MemberArgs::Remove { id } => Command::MemberRemove { id: member_id(id)? },
                MemberArgs::Promote { id } => Command::MemberPromote { id: member_id(id)? },
            },
            CommandArgs::Verify { duration, clients, keys, seed } => {
                Command::Verify { duration, clients: clients as usize, keys: keys as usize, seed }
            }
        })
    }
}

/// Refuses member id 0 (no member has it).
fn member_id(id: u64) -> Result<u64, UsageError> {
    if id == 0 {
        return Err(UsageError("member ids start at 1".into()));
    }
    Ok(id)
}

/// Parses a human-readable, non-zero duration (`500ms`, `5s`, `1m`, `1h 30m`).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s).map_err(|e| e.to_string())?;
    if d.is_zero() {
        return Err("must be more than zero".into());
    }
    Ok(d)
}

/// Checks an address is `host:port`; returns it without surrounding spaces.
pub fn check_addr(addr: &str) -> Result<String, String> {
    let addr = addr.trim();
    match addr.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => Ok(addr.to_owned()),
        _ => Err(format!("invalid address {addr:?}: expected host:port")),
    }
}

/// What a line asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Parsed {
    /// Nothing: a blank line or a comment.
    Empty,
    /// Leave (`exit` or `quit`; REPL and standard input only).
    Exit,
    /// Show this help text.
    Help(String),
    /// Run this.
    Run(Command),
}

/// The parser for one line: the commands without the program's options.
#[derive(Parser, Debug)]
#[command(
    name = "graft",
    multicall = true,
    disable_version_flag = true,
    help_template = "Commands:\n{subcommands}{after-help}",
    after_help = "Also: exit or quit (or Ctrl+D) leaves. `help COMMAND` describes one command.\n\
                  Quote values with spaces: put greeting \"hello world\""
)]
struct LineArgs {
    #[command(subcommand)]
    command: CommandArgs,
}

/// Parses one line of input (REPL or standard input).
pub fn parse_line(line: &str) -> Result<Parsed, UsageError> {
    let Some(words) = shlex::split(line) else {
        return Err(UsageError("unbalanced quotes or a trailing backslash".into()));
    };
    parse_words(words)
}

/// Parses a command already split into words (the first is the command name).
pub fn parse_words(words: Vec<String>) -> Result<Parsed, UsageError> {
    match words.first().map(String::as_str) {
        None => return Ok(Parsed::Empty),
        Some("exit" | "quit") if words.len() == 1 => return Ok(Parsed::Exit),
        _ => {}
    }
    match LineArgs::try_parse_from(words) {
        Ok(args) => Command::try_from(args.command).map(Parsed::Run),
        Err(e) if is_help(&e) => Ok(Parsed::Help(e.render().to_string().trim_end().to_owned())),
        Err(e) => {
            let message = one_line(&e);
            Err(UsageError(match message.strip_suffix("; usage: <COMMAND>") {
                Some(m) => format!("{m}; type `help` for the commands"),
                None => message,
            }))
        }
    }
}

/// The words completion offers: for each command, and each subcommand as
/// its path (`member add`), its subcommands' names and its long options.
/// Top-level commands are the entries whose name is one word.
pub fn vocabulary() -> Vec<(String, Vec<String>)> {
    fn walk(prefix: &str, cmd: &clap::Command, out: &mut Vec<(String, Vec<String>)>) {
        for sub in cmd.get_subcommands() {
            let name = if prefix.is_empty() {
                sub.get_name().to_owned()
            } else {
                format!("{prefix} {}", sub.get_name())
            };
            let mut words: Vec<String> = sub.get_subcommands().map(|s| s.get_name().to_owned()).collect();
            words.extend(sub.get_arguments().filter_map(|a| a.get_long()).map(|l| format!("--{l}")));
            out.push((name.clone(), words));
            // `help` lists every command again: not a path worth completing.
            if sub.get_name() != "help" {
                walk(&name, sub, out);
            }
        }
    }
    let mut cmd = LineArgs::command();
    cmd.build();
    let mut out = Vec::new();
    walk("", &cmd, &mut out);
    out.push(("exit".into(), Vec::new()));
    out.push(("quit".into(), Vec::new()));
    out
}

/// Whether clap's "error" is a request for help text.
pub fn is_help(e: &clap::Error) -> bool {
    use clap::error::ErrorKind;
    matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion)
}

/// clap's error as one line: the message, then the usage.
pub fn one_line(e: &clap::Error) -> String {
    let text = e.render().to_string();
    let mut out = if e.kind() == clap::error::ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand {
        // clap shows the whole help here; one line says what is missing.
        "a subcommand is missing".to_owned()
    } else {
        let mut message = Vec::new();
        for line in text.lines() {
            let line = line.trim();
            if line.is_empty() {
                break;
            }
            message.push(line.strip_prefix("error: ").unwrap_or(line));
        }
        message.join(" ")
    };
    let usage: Vec<&str> = text
        .lines()
        .skip_while(|l| !l.starts_with("Usage:"))
        .take_while(|l| !l.trim().is_empty())
        .map(|l| l.trim().trim_start_matches("Usage:").trim())
        .collect();
    if !usage.is_empty() {
        out.push_str("; usage: ");
        out.push_str(&usage.join(" | "));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(line: &str) -> Command {
        match parse_line(line) {
            Ok(Parsed::Run(c)) => c,
            other => panic!("{line:?} parsed as {other:?}"),
        }
    }

    fn usage(line: &str) -> String {
        match parse_line(line) {
            Err(UsageError(m)) => m,
            other => panic!("{line:?} should be a usage error, got {other:?}"),
        }
    }

    fn s(x: &str) -> String {
        x.to_owned()
    }

    #[test]
    fn every_command() {
        assert_eq!(run("get k"), Command::Get { key: s("k"), stale: false, revision: 0 });
        assert_eq!(run("get k --stale"), Command::Get { key: s("k"), stale: true, revision: 0 });
        assert_eq!(run("get --stale k"), Command::Get { key: s("k"), stale: true, revision: 0 });
        assert_eq!(run("get k --revision 12"), Command::Get { key: s("k"), stale: false, revision: 12 });
        assert_eq!(run("put k v"), Command::Put { key: s("k"), value: s("v"), lease: 0 });
        assert_eq!(run("put k v --lease 9"), Command::Put { key: s("k"), value: s("v"), lease: 9 });
        assert_eq!(
            run("lease grant 10s"),
            Command::Lease(LeaseCommand::Grant { ttl: Duration::from_secs(10) })
        );
        assert_eq!(
            run("lease keepalive 4 --once"),
            Command::Lease(LeaseCommand::KeepAlive { id: 4, once: true })
        );
        assert_eq!(run("lease ttl 4"), Command::Lease(LeaseCommand::Ttl { id: 4 }));
        assert_eq!(run("lease list"), Command::Lease(LeaseCommand::List));
        assert_eq!(run("lease revoke 4"), Command::Lease(LeaseCommand::Revoke { id: 4 }));
        assert_eq!(run("delete k"), Command::Delete { key: s("k") });
        assert_eq!(run("delete --prefix a/"), Command::DeletePrefix { prefix: s("a/") });
        assert_eq!(run("compact 40"), Command::Compact { revision: 40 });
        assert_eq!(
            run("lock jobs --ttl 5s -- sh -c 'echo hi'"),
            Command::Lock {
                name: s("jobs"),
                ttl: Duration::from_secs(5),
                command: vec![s("sh"), s("-c"), s("echo hi")]
            }
        );
        assert_eq!(
            run("elect leader node-1"),
            Command::Elect { name: s("leader"), value: s("node-1"), ttl: Duration::from_secs(10) }
        );
        assert_eq!(
            run("watch cfg/ --prefix --from-revision 7 --prev-value"),
            Command::Watch { key: s("cfg/"), prefix: true, from_revision: 7, prev_value: true }
        );
        assert_eq!(
            run("cas k new --mod-revision 7"),
            Command::Cas { key: s("k"), expect: Expectation::ModRevision(7), new: s("new") }
        );
        let txn = run("txn --compare 'mod(k) = 0' --success 'put k v' --failure 'get k'");
        let Command::Txn(t) = txn else { panic!("not a txn: {txn:?}") };
        assert_eq!((t.compare.len(), t.success.len(), t.failure.len()), (1, 1, 1));
        assert_eq!(run("txn"), Command::Txn(graft_kv::protocol::Txn::default()), "read from standard input");
        assert_eq!(
            run("cas k old new"),
            Command::Cas { key: s("k"), expect: Expectation::Value(s("old")), new: s("new") }
        );
        assert_eq!(
            run("cas k new --version 7"),
            Command::Cas { key: s("k"), expect: Expectation::Version(7), new: s("new") }
        );
        assert_eq!(
            run("cas --version 0 k new"),
            Command::Cas { key: s("k"), expect: Expectation::Version(0), new: s("new") }
        );
        assert_eq!(
            run("cas k new --absent"),
            Command::Cas { key: s("k"), expect: Expectation::Absent, new: s("new") }
        );
        assert_eq!(
            run("scan user/"),
            Command::Scan { prefix: s("user/"), limit: DEFAULT_SCAN_LIMIT, stale: false, revision: 0 }
        );
        assert_eq!(
            run("scan user/ --limit 5 --stale --revision 3"),
            Command::Scan { prefix: s("user/"), limit: 5, stale: true, revision: 3 }
        );
        assert_eq!(
            run("scan"),
            Command::Scan { prefix: s(""), limit: DEFAULT_SCAN_LIMIT, stale: false, revision: 0 }
        );
        assert_eq!(run("status"), Command::Status);
        assert_eq!(run("leader transfer 3"), Command::LeaderTransfer { to: 3 });
        assert_eq!(run("member list"), Command::MemberList);
        assert_eq!(
            run("member add 4 10.0.0.4:15000"),
            Command::MemberAdd { id: 4, addr: s("10.0.0.4:15000"), learner: false }
        );
        assert_eq!(
            run("member add 4 10.0.0.4:15000 --learner"),
            Command::MemberAdd { id: 4, addr: s("10.0.0.4:15000"), learner: true }
        );
        assert_eq!(
            run("member add --learner 4 [::1]:7"),
            Command::MemberAdd { id: 4, addr: s("[::1]:7"), learner: true }
        );
        assert_eq!(run("member add 4 ' h:1 '"), Command::MemberAdd { id: 4, addr: s("h:1"), learner: false });
        assert_eq!(run("member remove 2"), Command::MemberRemove { id: 2 });
        assert_eq!(run("member promote 9"), Command::MemberPromote { id: 9 });
    }

    #[test]
    fn member_commands_refuse_bad_or_missing_arguments() {
        assert_eq!(usage("member"), "a subcommand is missing; usage: member <COMMAND>");
        assert_eq!(
            usage("member add 4"),
            "the following required arguments were not provided: <ADDR>; usage: member add <ID> <ADDR>"
        );
        assert!(usage("member add").contains("<ID> <ADDR>"), "{}", usage("member add"));
        assert!(usage("member add --learner").contains("<ID> <ADDR>"));
        assert!(
            usage("member remove").contains("<ID>; usage: member remove <ID>"),
            "{}",
            usage("member remove")
        );
        assert!(usage("member promote").contains("<ID>; usage: member promote <ID>"));
        assert!(usage("member add four h:1").contains("invalid value 'four'"));
        assert!(usage("member add -4 h:1").contains("'-4'"), "{}", usage("member add -4 h:1"));
        assert!(usage("member remove 1.5").contains("invalid value '1.5'"));
        assert!(usage("member promote x").contains("invalid value 'x'"));
        assert!(usage("member remove 99999999999999999999").contains("invalid value"));
        for line in ["member add 0 h:1", "member remove 0", "member promote 0"] {
            assert_eq!(usage(line), "member ids start at 1", "{line}");
        }
        for addr in ["nohost", "h:", ":1", "h:99999", "h:port", "''"] {
            let m = usage(&format!("member add 4 {addr}"));
            assert!(m.starts_with("invalid address") && m.ends_with("expected host:port"), "{addr}: {m}");
        }
        assert!(usage("member list now").contains("unexpected argument 'now'"));
        assert!(usage("member list --learner").contains("unexpected argument '--learner'"));
        assert!(usage("member add 4 h:1 h:2").contains("unexpected argument 'h:2'"));
        assert!(usage("member remove 2 3").contains("unexpected argument '3'"));
        assert!(usage("member remove 2 --learner").contains("unexpected argument '--learner'"));
        assert!(usage("member join 4").contains("unrecognized subcommand 'join'"));
        for line in ["member", "member add", "member add x y", "member promote", "member list x"] {
            let m = usage(line);
            assert!(!m.contains('\n') && !m.is_empty(), "{line:?}: {m:?}");
        }
    }

    #[test]
    fn names_and_writes() {
        assert_eq!(run("leader transfer 3").name(), "leader transfer");
        assert_eq!(run("cas k a b").name(), "cas");
        assert!(run("put k v").is_write() && run("delete k").is_write() && run("cas k a b").is_write());
        assert!(!run("get k").is_write() && !run("scan").is_write() && !run("status").is_write());
        assert_eq!(run("member list").name(), "member list");
        assert_eq!(run("member add 4 h:1").name(), "member add");
        assert_eq!(run("member remove 4").name(), "member remove");
        assert_eq!(run("member promote 4").name(), "member promote");
        assert!(!run("member remove 4").is_write() && !run("member list").is_member_change());
        assert!(run("member add 4 h:1").is_member_change() && run("member remove 4").is_member_change());
        assert!(run("member promote 4").is_member_change() && !run("put k v").is_member_change());
    }

    #[test]
    fn quoting() {
        assert_eq!(
            run(r#"put greeting "hello world""#),
            Command::Put { key: s("greeting"), value: s("hello world"), lease: 0 }
        );
        assert_eq!(
            run(r#"put "a key" 'single quoted'"#),
            Command::Put { key: s("a key"), value: s("single quoted"), lease: 0 }
        );
        assert_eq!(
            run(r#"put k "say \"hi\"""#),
            Command::Put { key: s("k"), value: s(r#"say "hi""#), lease: 0 }
        );
        assert_eq!(run(r#"put k """#), Command::Put { key: s("k"), value: s(""), lease: 0 });
        assert_eq!(run("  put   k   v  "), Command::Put { key: s("k"), value: s("v"), lease: 0 });
        assert_eq!(
            run(r#"cas k "old value" "new value""#),
            Command::Cas { key: s("k"), expect: Expectation::Value(s("old value")), new: s("new value") }
        );
        assert!(usage(r#"put k "unterminated"#).contains("unbalanced quotes"));
        // `#` begins a comment only at the start of a word, and not in quotes.
        assert_eq!(run("put k v # a note"), Command::Put { key: s("k"), value: s("v"), lease: 0 });
        assert_eq!(run(r##"put k "#tag""##), Command::Put { key: s("k"), value: s("#tag"), lease: 0 });
        assert_eq!(run("put k a#b"), Command::Put { key: s("k"), value: s("a#b"), lease: 0 });
    }

    #[test]
    fn blank_lines_comments_and_exit() {
        assert_eq!(parse_line(""), Ok(Parsed::Empty));
        assert_eq!(parse_line("   \t "), Ok(Parsed::Empty));
        assert_eq!(parse_line("# a comment"), Ok(Parsed::Empty));
        assert_eq!(parse_line("exit"), Ok(Parsed::Exit));
        assert_eq!(parse_line("quit"), Ok(Parsed::Exit));
        assert!(usage("exit now").contains("unrecognized subcommand 'exit'"));
    }

    #[test]
    fn negative_numbers_and_dashes_are_values() {
        assert_eq!(run("put temp -5"), Command::Put { key: s("temp"), value: s("-5"), lease: 0 });
        assert_eq!(
            run("cas temp -5 -6"),
            Command::Cas { key: s("temp"), expect: Expectation::Value(s("-5")), new: s("-6") }
        );
        assert_eq!(run("get -- --odd-key"), Command::Get { key: s("--odd-key"), stale: false, revision: 0 });
    }

    #[test]
    fn missing_arguments() {
        for line in ["get", "put k", "put", "delete", "cas k", "leader transfer", "cas k new --version"] {
            let m = usage(line);
            assert!(!m.contains('\n'), "{line:?}: {m:?} is not one line");
            assert!(
                m.contains("usage:") || m.contains("cas takes") || m.contains("value is required"),
                "{line:?}: {m}"
            );
        }
        assert!(usage("put k").contains("<VALUE>"));
        assert!(usage("cas k new").contains("cas takes KEY EXPECTED NEW"));
        assert_eq!(usage("leader"), "a subcommand is missing; usage: leader <COMMAND>");
        assert_eq!(
            usage("put k"),
            "the following required arguments were not provided: <VALUE>; usage: put <KEY> <VALUE>"
        );
    }

    #[test]
    fn extra_arguments() {
        assert!(usage("get k extra").contains("unexpected argument 'extra'"));
        assert!(usage("put k v w").contains("unexpected argument 'w'"));
        assert!(usage("status now").contains("unexpected argument 'now'"));
        assert!(usage("cas k a b c").contains("unexpected value 'c'"), "{}", usage("cas k a b c"));
        assert!(usage("cas k old new --version 3").contains("cas takes"));
        assert!(usage("cas k new --absent --version 0").contains("cannot be used with"));
        assert!(usage("put k v --stale").contains("unexpected argument '--stale'"));
    }

    #[test]
    fn bad_numbers() {
        assert!(usage("scan p --limit ten").contains("invalid value 'ten'"));
        assert!(
            usage("scan p --limit -1").contains("invalid value '-1'")
                || usage("scan p --limit -1").contains("'-1'")
        );
        assert!(usage("scan p --limit 0").contains("at least 1"));
        assert!(usage("scan p --limit 99999999999").contains("invalid value"));
        assert!(usage("cas k v --version x").contains("invalid value 'x'"));
        assert!(usage("leader transfer two").contains("invalid value 'two'"));
    }

    #[test]
    fn unknown_commands() {
        assert_eq!(
            usage("frobnicate k"),
            "unrecognized subcommand 'frobnicate'; type `help` for the commands"
        );
        assert!(usage("GET k").contains("unrecognized subcommand"));
        assert!(usage("leader elect 1").contains("unrecognized subcommand 'elect'"));
    }

    #[test]
    fn help() {
        let Ok(Parsed::Help(all)) = parse_line("help") else { panic!("help") };
        assert!(!all.contains("\n\n\n"), "{all}");
        for name in ["get", "put", "delete", "cas", "scan", "status", "leader", "member", "exit"] {
            assert!(all.contains(name), "help lacks {name}: {all}");
        }
        let Ok(Parsed::Help(cas)) = parse_line("help cas") else { panic!("help cas") };
        assert!(cas.contains("--absent") && cas.contains("--version"), "{cas}");
        let Ok(Parsed::Help(scan)) = parse_line("scan --help") else { panic!("scan --help") };
        assert!(scan.contains("--limit"), "{scan}");
        let Ok(Parsed::Help(member)) = parse_line("help member") else { panic!("help member") };
        for word in ["list", "add", "remove", "promote", "majority"] {
            assert!(member.contains(word), "help member lacks {word}: {member}");
        }
        let Ok(Parsed::Help(add)) = parse_line("help member add") else { panic!("help member add") };
        assert!(add.contains("--learner") && add.contains("learner") && add.contains("voter"), "{add}");
        assert!(add.contains("graft-kv serve --id ID --join HOST:PORT --listen ADDR"), "{add}");
        let Ok(Parsed::Help(add)) = parse_line("member add --help") else { panic!("member add --help") };
        assert!(add.contains("record its new address"), "{add}");
    }

    #[test]
    fn vocabulary_lists_commands_and_options() {
        let v = vocabulary();
        let find = |n: &str| v.iter().find(|(name, _)| name == n).map(|(_, w)| w.clone());
        assert!(find("leader").is_some_and(|w| w.contains(&s("transfer"))));
        assert!(find("scan").is_some_and(|w| w.contains(&s("--limit")) && w.contains(&s("--stale"))));
        assert!(find("cas").is_some_and(|w| w.contains(&s("--absent")) && w.contains(&s("--version"))));
        assert!(find("quit").is_some() && find("status").is_some());
        assert!(find("help").is_some_and(|w| w.contains(&s("get"))));
        assert!(find("get").is_some_and(|w| w.contains(&s("--help"))));
        assert!(find("member")
            .is_some_and(|w| ["list", "add", "remove", "promote"].iter().all(|c| w.contains(&s(c)))));
        assert!(find("member add").is_some_and(|w| w.contains(&s("--learner"))));
        assert!(find("member remove").is_some_and(|w| !w.contains(&s("--learner"))));
    }

    #[test]
    fn verify_options() {
        let verify = |duration: u64, clients: usize, keys: usize, seed: Option<u64>| Command::Verify {
            duration: Duration::from_secs(duration),
            clients,
            keys,
            seed,
        };
        assert_eq!(run("verify"), verify(30, 5, 5, None));
        assert_eq!(run("verify --duration 3s --seed 7"), verify(3, 5, 5, Some(7)));
        assert_eq!(run("verify --clients 2 --keys 1 --duration 1m"), verify(60, 2, 1, None));
        assert_eq!(
            run("verify --duration 1h --seed 18446744073709551615"),
            verify(3600, 5, 5, Some(u64::MAX))
        );
        assert_eq!(
            run("verify --duration 1500ms"),
            Command::Verify { duration: Duration::from_millis(1500), clients: 5, keys: 5, seed: None }
        );
        assert_eq!(run("verify --clients 256 --keys 10000"), verify(30, 256, 10_000, None));
        assert_eq!(run("verify").name(), "verify");
        assert!(!run("verify").is_write() && !run("verify").is_member_change());
    }

    #[test]
    fn verify_refuses_bad_options() {
        assert!(
            usage("verify --duration 0s").contains("must be more than zero"),
            "{}",
            usage("verify --duration 0s")
        );
        assert!(usage("verify --duration soon").contains("invalid value 'soon'"));
        assert!(usage("verify --duration 5").contains("invalid value '5'"));
        assert!(usage("verify --duration").contains("a value is required"), "{}", usage("verify --duration"));
        assert!(
            usage("verify --clients 0").contains("0 is not in 1..=256"),
            "{}",
            usage("verify --clients 0")
        );
        assert!(usage("verify --clients 257").contains("invalid value '257'"));
        assert!(usage("verify --keys 0").contains("invalid value '0'"));
        assert!(usage("verify --keys many").contains("invalid value 'many'"));
        assert!(usage("verify --seed -1").contains("'-1'"), "{}", usage("verify --seed -1"));
        assert!(usage("verify --seed 18446744073709551616").contains("invalid value"));
        let m = usage("verify now");
        assert!(m.contains("unexpected argument 'now'") && m.ends_with("; usage: verify [OPTIONS]"), "{m}");
        assert!(usage("verify --stale").contains("unexpected argument '--stale'"));
        for line in ["verify --duration x", "verify --clients 0", "verify extra"] {
            let m = usage(line);
            assert!(!m.contains('\n') && !m.is_empty(), "{line:?}: {m:?}");
        }
    }

    #[test]
    fn verify_help() {
        let Ok(Parsed::Help(all)) = parse_line("help") else { panic!("help") };
        assert!(all.contains("verify"), "{all}");
        let Ok(Parsed::Help(text)) = parse_line("help verify") else { panic!("help verify") };
        for needle in
            ["--duration", "--clients", "--keys", "--seed", "graft-verify/", "deleted", "Exit status"]
        {
            assert!(text.contains(needle), "help verify lacks {needle}: {text}");
        }
        let v = vocabulary();
        let words = v.iter().find(|(n, _)| n == "verify").map(|(_, w)| w.clone()).unwrap_or_default();
        for option in ["--duration", "--clients", "--keys", "--seed"] {
            assert!(words.contains(&s(option)), "{words:?}");
        }
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("2s"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("1h 30m"), Ok(Duration::from_secs(5400)));
        assert!(
            parse_duration("0ms").is_err() && parse_duration("").is_err() && parse_duration("5").is_err()
        );
    }

    #[test]
    fn addresses() {
        assert_eq!(check_addr(" 127.0.0.1:1 "), Ok(s("127.0.0.1:1")));
        assert_eq!(check_addr("[::1]:65535"), Ok(s("[::1]:65535")));
        assert!(check_addr("h:65536").is_err() && check_addr("h").is_err() && check_addr(":1").is_err());
    }

    #[test]
    fn errors_are_one_line() {
        for line in ["", "get", "get a b", "nope", "scan --limit x", "cas", "leader transfer -1"] {
            if let Err(UsageError(m)) = parse_line(line) {
                assert!(!m.contains('\n') && !m.is_empty(), "{line:?}: {m:?}");
            }
        }
    }
}
