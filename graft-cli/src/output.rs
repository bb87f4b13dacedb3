//! Every answer's text, plain and JSON, in one place.
//!
//! Plain: `get` prints the value's bytes as they are; `put` the write's
//! revision; `delete` the word `deleted` (`delete --prefix` `deleted N
//! keys`); `cas` `swapped (revision N)` or `not swapped: ...`; `scan`
//! `KEY<TAB>VALUE` lines; `txn` `succeeded` or `failed` then one line per
//! operation (a read prints its value, or `KEY<TAB>VALUE` lines for a scan;
//! a write `put KEY`, `deleted KEY`, `KEY was absent` or `deleted N keys`);
//! `compact` `compacted: revisions below R are gone`; `status` a table;
//! `leader transfer` `leader is now member N`; `member list` a table;
//! `member add` `member N added as learner[ (promoted to voter once caught
//! up)]`, `member remove` `member N removed`, `member promote` `member N
//! promoted to voter`; `verify` `linearizable: N operations (...)` or
//! `NOT linearizable (seed S):` and the violation. A missing key, or an
//! unavailable cluster for `verify`, prints nothing on standard output (the
//! message goes to standard error).
//!
//! JSON: one object on one line per command, failed or not, with
//! `command`, `ok` and `exit` (its exit code). Keys and values are strings
//! when they are UTF-8; other bytes appear base64-encoded under
//! `key_base64` / `value_base64` instead.

use base64::Engine;
use bytes::Bytes;
use graft_kv::protocol::{KeyValue, TxnOp, TxnOpResult, WatchEvent};
use serde_json::{json, Map, Value};

use crate::cli::OutputFormat;
use crate::code::Code;
use crate::exec::{MemberList, Outcome, StatusReport};
use crate::verify::{seconds, Finding, VerifyReport};

/// The text for a successful command's standard output.
pub fn render(format: OutputFormat, outcome: &Outcome) -> Vec<u8> {
    match format {
        OutputFormat::Plain => plain(outcome),
        OutputFormat::Json => {
            let mut line = json_outcome(outcome).to_string().into_bytes();
            line.push(b'\n');
            line
        }
    }
}

/// One change of a `watch`: `PUT KEY VALUE` or `DELETE KEY` (with
/// `with_prev`, then ` (previous: VALUE)` if there was one), or one JSON
/// object.
pub fn render_event(format: OutputFormat, e: &WatchEvent, with_prev: bool) -> Vec<u8> {
    match format {
        OutputFormat::Plain => {
            let mut out = Vec::new();
            match &e.kv {
                Some(kv) => {
                    out.extend_from_slice(b"PUT ");
                    out.extend_from_slice(&e.key);
                    out.push(b' ');
                    out.extend_from_slice(&kv.value);
                }
                None => {
                    out.extend_from_slice(b"DELETE ");
                    out.extend_from_slice(&e.key);
                }
            }
            if let (true, Some(p)) = (with_prev, &e.prev) {
                out.extend_from_slice(b" (previous: ");
                out.extend_from_slice(&p.value);
                out.push(b')');
            }
            out.push(b'\n');
            out
        }
        OutputFormat::Json => {
            let mut obj = Map::new();
            obj.insert("type".into(), Value::from(if e.kv.is_some() { "PUT" } else { "DELETE" }));
            put_bytes(&mut obj, "key", &e.key);
            obj.insert("revision".into(), Value::from(e.revision));
            if let Some(kv) = &e.kv {
                record(&mut obj, kv);
            }
            if with_prev {
                match &e.prev {
                    Some(p) => put_bytes(&mut obj, "prev_value", &p.value),
                    None => {
                        obj.insert("prev_value".into(), Value::Null);
                    }
                }
            }
            format!("{}\n", Value::Object(obj)).into_bytes()
        }
    }
}

/// What to print for help text.
pub fn render_help(format: OutputFormat, text: &str) -> Vec<u8> {
    match format {
        OutputFormat::Plain => format!("{text}\n").into_bytes(),
        OutputFormat::Json => {
            format!("{}\n", json!({"command": "help", "ok": true, "exit": 0, "text": text})).into_bytes()
        }
    }
}

/// The lines for standard error that come with an outcome: a missing key
/// (exit 1); `verify`'s unavailable cluster (exit 3), and keys it could not
/// delete.
pub fn notes(outcome: &Outcome) -> Vec<String> {
    match outcome {
        Outcome::Got { key, found: None, .. } | Outcome::Deleted { key, previous: None } => {
            vec![format!("key not found: {key}")]
        }
        Outcome::LeaseRenewed { id, ttl_ms: None } => {
            vec![format!("lease not found: {id} (expired or revoked)")]
        }
        Outcome::Verified(report) => {
            let mut lines = Vec::new();
            if let Finding::Unavailable(why) = &report.finding {
                lines.push(format!("error: verify: {why}"));
            }
            if let Err(why) = &report.cleanup {
                lines.push(format!(
                    "warning: verify: could not delete every key under {}: {why}",
                    report.prefix
                ));
            }
            lines
        }
        _ => Vec::new(),
    }
}

/// The JSON line on standard output for a failed command (plain mode prints
/// nothing there: the error goes to standard error only).
pub fn render_error(
    format: OutputFormat,
    command: Option<&str>,
    message: &str,
    code: Code,
    unknown: bool,
) -> Vec<u8> {
    match format {
        OutputFormat::Plain => Vec::new(),
        OutputFormat::Json => {
            let mut obj = Map::new();
            obj.insert("command".into(), command.map_or(Value::Null, Value::from));
            obj.insert("ok".into(), Value::from(false));
            obj.insert("exit".into(), Value::from(code.as_u8()));
            obj.insert("error".into(), Value::from(message));
            obj.insert("outcome_unknown".into(), Value::from(unknown));
            format!("{}\n", Value::Object(obj)).into_bytes()
        }
    }
}

fn plain(outcome: &Outcome) -> Vec<u8> {
    let mut out = Vec::new();
    match outcome {
        Outcome::Got { found: Some(v), .. } => {
            out.extend_from_slice(&v.value);
            out.push(b'\n');
        }
        Outcome::Got { found: None, .. } | Outcome::Deleted { previous: None, .. } => {}
        Outcome::Put { revision, .. } => out.extend_from_slice(format!("{revision}\n").as_bytes()),
        Outcome::Deleted { previous: Some(_), .. } => out.extend_from_slice(b"deleted\n"),
        Outcome::DeletedPrefix { deleted, .. } => {
            out.extend_from_slice(format!("deleted {}\n", plural(*deleted, "key")).as_bytes())
        }
        Outcome::Cas { swapped: true, current, .. } => {
            let revision = current.as_ref().map_or(0, |v| v.mod_revision);
            out.extend_from_slice(format!("swapped (revision {revision})\n").as_bytes());
        }
        Outcome::Cas { swapped: false, current: None, .. } => {
            out.extend_from_slice(b"not swapped: the key is absent\n")
        }
        Outcome::Cas { swapped: false, current: Some(v), .. } => out.extend_from_slice(
            format!(
                "not swapped: the value is {:?} (mod revision {}, version {})\n",
                String::from_utf8_lossy(&v.value),
                v.mod_revision,
                v.version
            )
            .as_bytes(),
        ),
        Outcome::Scanned { items, .. } => scan_lines(&mut out, items),
        Outcome::Txn { txn, response } => {
            out.extend_from_slice(if response.succeeded { b"succeeded\n" } else { b"failed\n" });
            let ops = if response.succeeded { &txn.success } else { &txn.failure };
            for (op, result) in ops.iter().zip(&response.results) {
                txn_line(&mut out, op, result);
            }
        }
        Outcome::Compacted { revision } => {
            out.extend_from_slice(format!("compacted: revisions below {revision} are gone\n").as_bytes())
        }
        Outcome::LeaseGranted { id, .. } => out.extend_from_slice(format!("{id}\n").as_bytes()),
        Outcome::LeaseRevoked { id, deleted } => out.extend_from_slice(
            format!("revoked lease {id} ({} deleted)\n", plural(*deleted, "key")).as_bytes(),
        ),
        Outcome::LeaseRenewed { id, ttl_ms: Some(ttl) } => {
            out.extend_from_slice(format!("lease {id} renewed for {ttl} ms\n").as_bytes())
        }
        Outcome::LeaseRenewed { ttl_ms: None, .. } => {}
        Outcome::Lease(info) => {
            let keys: Vec<String> =
                info.keys.iter().map(|k| String::from_utf8_lossy(k).into_owned()).collect();
            out.extend_from_slice(
                format!(
                    "lease {}: TTL {} ms, {} ms left, keys: {}\n",
                    info.id,
                    info.ttl_ms,
                    info.remaining_ms,
                    if keys.is_empty() { "none".to_owned() } else { keys.join(", ") }
                )
                .as_bytes(),
            )
        }
        Outcome::Leases(list) => {
            for l in list {
                out.extend_from_slice(
                    format!("{}\tTTL {} ms\t{} ms left\n", l.id, l.ttl_ms, l.remaining_ms).as_bytes(),
                );
            }
        }
        Outcome::Status(report) => out.extend_from_slice(status_table(report).as_bytes()),
        Outcome::Transferred { to } => {
            out.extend_from_slice(format!("leader is now member {to}\n").as_bytes())
        }
        Outcome::Members(list) => out.extend_from_slice(member_table(list).as_bytes()),
        Outcome::MemberAdded { id, promote, .. } => {
            let then = if *promote { " (promoted to voter once caught up)" } else { "" };
            out.extend_from_slice(format!("member {id} added as learner{then}\n").as_bytes())
        }
        Outcome::MemberRemoved { id } => out.extend_from_slice(format!("member {id} removed\n").as_bytes()),
        Outcome::MemberPromoted { id } => {
            out.extend_from_slice(format!("member {id} promoted to voter\n").as_bytes())
        }
        Outcome::Verified(report) => out.extend_from_slice(verify_plain(report).as_bytes()),
    }
    out
}

/// `verify`'s answer: `linearizable: ...`; `NOT linearizable (seed S):`,
/// the violation, a note on its times and the counts; or `undecided:` and
/// why the checker gave up; nothing for an unavailable cluster (the error
/// goes to standard error).
fn verify_plain(r: &VerifyReport) -> String {
    let counts = format!(
        "{} ({} with unknown outcome, {}) on {} in {}",
        plural(r.operations, "operation"),
        plural(r.unknown, "write"),
        plural(r.failed_reads, "failed read"),
        plural(r.keys as u64, "key"),
        seconds(r.elapsed)
    );
    match &r.finding {
        Finding::Linearizable => format!("linearizable: {counts}, seed {}\n", r.seed),
        Finding::NotLinearizable(violation) => {
            let mut text = format!("NOT linearizable (seed {}):\n{violation}", r.seed);
            if !text.ends_with('\n') {
                text.push('\n');
            }
            text.push_str(&format!(
                "(times in nanoseconds since the workload started; client 0 is the final read of every key)\n{counts}\n"
            ));
            text
        }
        Finding::GaveUp(why) => format!("undecided: {why}; {counts}, seed {}\n", r.seed),
        Finding::Unavailable(_) => String::new(),
    }
}

/// `1 key`, `2 keys`.
fn plural(n: u64, word: &str) -> String {
    if n == 1 {
        format!("{n} {word}")
    } else {
        format!("{n} {word}s")
    }
}

/// The `status` table. LOG is the number of entries the member holds
/// (last index - first index + 1); LAST is its last log index.
fn status_table(report: &StatusReport) -> String {
    let header = ["ID", "ADDRESS", "ROLE", "TERM", "COMMIT", "APPLIED", "LOG", "LAST", "REACHABLE"];
    let mut rows: Vec<Vec<String>> = vec![header.iter().map(|h| (*h).to_owned()).collect()];
    for m in &report.members {
        let id = m.id.map_or("?".to_owned(), |i| i.to_string());
        let row = match &m.status {
            Ok(s) => vec![
                id,
                m.addr.clone(),
                s.role.clone(),
                s.term.to_string(),
                s.commit.to_string(),
                s.applied.to_string(),
                log_entries(s.first_index, s.last_index).to_string(),
                s.last_index.to_string(),
                "yes".to_owned(),
            ],
            Err(e) => unreachable_row(vec![id, m.addr.clone()], header.len(), e),
        };
        rows.push(row);
    }
    table(&rows) + &leader_line(report.leader.as_ref())
}

/// The `member list` table: each member as the membership says (KIND:
/// voter or learner), then its own answer (ROLE, TERM, APPLIED) if it gave one.
fn member_table(list: &MemberList) -> String {
    let header = ["ID", "ADDRESS", "KIND", "ROLE", "TERM", "APPLIED", "REACHABLE"];
    let mut rows: Vec<Vec<String>> = vec![header.iter().map(|h| (*h).to_owned()).collect()];
    for m in &list.members {
        let start = vec![m.info.id.to_string(), m.info.addr.clone(), kind(m.info.voter).to_owned()];
        let row = match &m.status {
            Ok(s) => {
                let mut r = start;
                r.extend([s.role.clone(), s.term.to_string(), s.applied.to_string(), "yes".to_owned()]);
                r
            }
            Err(e) => unreachable_row(start, header.len(), e),
        };
        rows.push(row);
    }
    table(&rows) + &leader_line(list.leader.as_ref())
}

/// `voter` or `learner`.
fn kind(voter: bool) -> &'static str {
    if voter {
        "voter"
    } else {
        "learner"
    }
}

/// A row for a member that gave no answer: `start`, then `-` up to the last
/// of `columns`, which is `no (WHY)`.
fn unreachable_row(mut start: Vec<String>, columns: usize, why: &str) -> Vec<String> {
    let dashes = columns.saturating_sub(start.len() + 1);
    start.extend(std::iter::repeat_n("-".to_owned(), dashes));
    start.push(format!("no ({why})"));
    start
}

/// Rows (the first is the header) as left-aligned columns two spaces apart;
/// the last column is not padded.
fn table(rows: &[Vec<String>]) -> String {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|c| rows.iter().filter_map(|r| r.get(c)).map(|cell| cell.chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for row in rows {
        let cells: Vec<String> = row
            .iter()
            .enumerate()
            .map(
                |(c, cell)| {
                    if c + 1 == row.len() {
                        cell.clone()
                    } else {
                        format!("{cell:<w$}", w = widths[c])
                    }
                },
            )
            .collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    out
}

/// `leader: member N at ADDR`, or `leader: none known`, and a newline.
fn leader_line(leader: Option<&(u64, String)>) -> String {
    match leader {
        Some((id, addr)) => format!("leader: member {id} at {addr}\n"),
        None => "leader: none known\n".to_owned(),
    }
}

/// How many entries a log holds, from its first and last index.
fn log_entries(first: u64, last: u64) -> u64 {
    (last + 1).saturating_sub(first)
}

/// Adds `name` (a UTF-8 string) or `name_base64` for other bytes.
fn put_bytes(obj: &mut Map<String, Value>, name: &str, bytes: &Bytes) {
    match std::str::from_utf8(bytes) {
        Ok(s) => obj.insert(name.to_owned(), Value::from(s)),
        Err(_) => obj.insert(
            format!("{name}_base64"),
            Value::from(base64::engine::general_purpose::STANDARD.encode(bytes)),
        ),
    };
}

fn scan_lines(out: &mut Vec<u8>, items: &[(Bytes, KeyValue)]) {
    for (key, v) in items {
        out.extend_from_slice(key);
        out.push(b'\t');
        out.extend_from_slice(&v.value);
        out.push(b'\n');
    }
}

/// One operation's line(s) of a transaction's plain output.
fn txn_line(out: &mut Vec<u8>, op: &TxnOp, result: &TxnOpResult) {
    let key = |k: &Bytes| String::from_utf8_lossy(k).into_owned();
    match (op, result) {
        (_, TxnOpResult::Get(Some(v))) => {
            out.extend_from_slice(&v.value);
            out.push(b'\n');
        }
        (TxnOp::Get { key: k }, TxnOpResult::Get(None)) => {
            out.extend_from_slice(format!("{} is absent\n", key(k)).as_bytes())
        }
        (_, TxnOpResult::Scan(items)) => scan_lines(out, items),
        (TxnOp::Put { key: k, .. }, TxnOpResult::Put { .. }) => {
            out.extend_from_slice(format!("put {}\n", key(k)).as_bytes())
        }
        (TxnOp::Delete { key: k }, TxnOpResult::Delete { previous }) => {
            let line = match previous {
                Some(_) => format!("deleted {}\n", key(k)),
                None => format!("{} was absent\n", key(k)),
            };
            out.extend_from_slice(line.as_bytes())
        }
        (_, TxnOpResult::DeletePrefix { deleted }) => {
            out.extend_from_slice(format!("deleted {}\n", plural(*deleted, "key")).as_bytes())
        }
        (_, TxnOpResult::Range { kvs, .. }) => scan_lines(out, kvs),
        (_, TxnOpResult::DeleteRange { previous }) => {
            out.extend_from_slice(format!("deleted {}\n", plural(previous.len() as u64, "key")).as_bytes())
        }
        // A result that does not match its operation cannot come from a
        // member; show it as it is.
        (_, other) => out.extend_from_slice(format!("{other:?}\n").as_bytes()),
    }
}

/// A key's record as JSON: its value and revisions.
fn record(obj: &mut Map<String, Value>, v: &KeyValue) {
    put_bytes(obj, "value", &v.value);
    obj.insert("create_revision".into(), Value::from(v.create_revision));
    obj.insert("mod_revision".into(), Value::from(v.mod_revision));
    obj.insert("version".into(), Value::from(v.version));
}

fn record_json(v: &KeyValue) -> Value {
    let mut obj = Map::new();
    record(&mut obj, v);
    Value::Object(obj)
}

fn items_json(items: &[(Bytes, KeyValue)]) -> Value {
    let items = items
        .iter()
        .map(|(k, v)| {
            let mut item = Map::new();
            put_bytes(&mut item, "key", k);
            record(&mut item, v);
            Value::Object(item)
        })
        .collect();
    Value::Array(items)
}

fn lease_json(l: &graft_kv::protocol::LeaseInfo) -> Value {
    let keys: Vec<String> = l.keys.iter().map(|k| String::from_utf8_lossy(k).into_owned()).collect();
    json!({"id": l.id, "ttl_ms": l.ttl_ms, "remaining_ms": l.remaining_ms, "keys": keys})
}

fn txn_result_json(result: &TxnOpResult) -> Value {
    let opt = |v: &Option<KeyValue>| v.as_ref().map_or(Value::Null, record_json);
    match result {
        TxnOpResult::Get(v) => json!({"op": "get", "found": v.is_some(), "kv": opt(v)}),
        TxnOpResult::Scan(items) => json!({"op": "scan", "items": items_json(items)}),
        TxnOpResult::Put { previous } => json!({"op": "put", "previous": opt(previous)}),
        TxnOpResult::Delete { previous } => {
            json!({"op": "delete", "deleted": previous.is_some(), "previous": opt(previous)})
        }
        TxnOpResult::DeletePrefix { deleted } => json!({"op": "delete prefix", "deleted": deleted}),
        TxnOpResult::Range { kvs, count, more } => {
            json!({"op": "range", "items": items_json(kvs), "count": count, "more": more})
        }
        TxnOpResult::DeleteRange { previous } => {
            json!({"op": "delete range", "deleted": previous.len(), "previous": items_json(previous)})
        }
        TxnOpResult::Txn(r) => json!({
            "op": "txn",
            "succeeded": r.succeeded,
            "results": r.results.iter().map(txn_result_json).collect::<Vec<_>>(),
        }),
    }
}

fn json_outcome(outcome: &Outcome) -> Value {
    let code = outcome.code();
    let mut obj = Map::new();
    let name = match outcome {
        Outcome::Got { .. } => "get",
        Outcome::Put { .. } => "put",
        Outcome::Deleted { .. } | Outcome::DeletedPrefix { .. } => "delete",
        Outcome::Cas { .. } => "cas",
        Outcome::Scanned { .. } => "scan",
        Outcome::Txn { .. } => "txn",
        Outcome::Compacted { .. } => "compact",
        Outcome::LeaseGranted { .. } => "lease grant",
        Outcome::LeaseRevoked { .. } => "lease revoke",
        Outcome::LeaseRenewed { .. } => "lease keepalive",
        Outcome::Lease(_) => "lease ttl",
        Outcome::Leases(_) => "lease list",
        Outcome::Status(_) => "status",
        Outcome::Transferred { .. } => "leader transfer",
        Outcome::Members(_) => "member list",
        Outcome::MemberAdded { .. } => "member add",
        Outcome::MemberRemoved { .. } => "member remove",
        Outcome::MemberPromoted { .. } => "member promote",
        Outcome::Verified(_) => "verify",
    };
    obj.insert("command".into(), Value::from(name));
    obj.insert("ok".into(), Value::from(code == Code::Ok));
    obj.insert("exit".into(), Value::from(code.as_u8()));
    match outcome {
        Outcome::Got { key, found, revision } => {
            obj.insert("key".into(), Value::from(key.as_str()));
            obj.insert("found".into(), Value::from(found.is_some()));
            obj.insert("revision".into(), Value::from(*revision));
            if let Some(v) = found {
                record(&mut obj, v);
            }
        }
        Outcome::Put { key, revision } => {
            obj.insert("key".into(), Value::from(key.as_str()));
            obj.insert("revision".into(), Value::from(*revision));
        }
        Outcome::Deleted { key, previous } => {
            obj.insert("key".into(), Value::from(key.as_str()));
            obj.insert("deleted".into(), Value::from(previous.is_some()));
            obj.insert("previous".into(), previous.as_ref().map_or(Value::Null, record_json));
        }
        Outcome::DeletedPrefix { prefix, deleted, revision } => {
            obj.insert("prefix".into(), Value::from(prefix.as_str()));
            obj.insert("deleted".into(), Value::from(*deleted));
            obj.insert("revision".into(), Value::from(*revision));
        }
        Outcome::Cas { key, swapped, current } => {
            obj.insert("key".into(), Value::from(key.as_str()));
            obj.insert("swapped".into(), Value::from(*swapped));
            obj.insert("current".into(), current.as_ref().map_or(Value::Null, record_json));
        }
        Outcome::Scanned { prefix, items, revision } => {
            obj.insert("prefix".into(), Value::from(prefix.as_str()));
            obj.insert("revision".into(), Value::from(*revision));
            obj.insert("items".into(), items_json(items));
        }
        Outcome::Txn { response, .. } => {
            obj.insert("succeeded".into(), Value::from(response.succeeded));
            obj.insert("revision".into(), Value::from(response.revision));
            obj.insert("results".into(), response.results.iter().map(txn_result_json).collect());
        }
        Outcome::Compacted { revision } => {
            obj.insert("compacted".into(), Value::from(*revision));
        }
        Outcome::LeaseGranted { id, ttl_ms } => {
            obj.insert("id".into(), Value::from(*id));
            obj.insert("ttl_ms".into(), Value::from(*ttl_ms));
        }
        Outcome::LeaseRevoked { id, deleted } => {
            obj.insert("id".into(), Value::from(*id));
            obj.insert("deleted".into(), Value::from(*deleted));
        }
        Outcome::LeaseRenewed { id, ttl_ms } => {
            obj.insert("id".into(), Value::from(*id));
            obj.insert("found".into(), Value::from(ttl_ms.is_some()));
            obj.insert("ttl_ms".into(), ttl_ms.map_or(Value::Null, Value::from));
        }
        Outcome::Lease(info) => {
            obj.insert("lease".into(), lease_json(info));
        }
        Outcome::Leases(list) => {
            obj.insert("leases".into(), list.iter().map(lease_json).collect());
        }
        Outcome::Status(report) => {
            obj.insert("leader".into(), leader_json(report.leader.as_ref()));
            let members = report
                .members
                .iter()
                .map(|m| match &m.status {
                    Ok(s) => json!({
                        "id": s.id,
                        "addr": m.addr,
                        "reachable": true,
                        "role": s.role,
                        "term": s.term,
                        "leader": s.leader,
                        "commit": s.commit,
                        "applied": s.applied,
                        "first_index": s.first_index,
                        "last_index": s.last_index,
                        "log_entries": log_entries(s.first_index, s.last_index),
                    }),
                    Err(e) => json!({"id": m.id, "addr": m.addr, "reachable": false, "error": e}),
                })
                .collect();
            obj.insert("members".into(), Value::Array(members));
        }
        Outcome::Transferred { to } => {
            obj.insert("leader".into(), Value::from(*to));
        }
        Outcome::Members(list) => {
            obj.insert("leader".into(), leader_json(list.leader.as_ref()));
            let members = list
                .members
                .iter()
                .map(|m| {
                    let mut item = Map::new();
                    item.insert("id".into(), Value::from(m.info.id));
                    item.insert("addr".into(), Value::from(m.info.addr.as_str()));
                    item.insert("voter".into(), Value::from(m.info.voter));
                    item.insert("is_leader".into(), Value::from(m.leader));
                    item.insert("reachable".into(), Value::from(m.status.is_ok()));
                    match &m.status {
                        Ok(s) => {
                            item.insert("role".into(), Value::from(s.role.as_str()));
                            item.insert("term".into(), Value::from(s.term));
                            item.insert("applied".into(), Value::from(s.applied));
                        }
                        Err(e) => {
                            item.insert("error".into(), Value::from(e.as_str()));
                        }
                    }
                    Value::Object(item)
                })
                .collect();
            obj.insert("members".into(), Value::Array(members));
        }
        Outcome::MemberAdded { id, addr, promote } => {
            obj.insert("id".into(), Value::from(*id));
            obj.insert("addr".into(), Value::from(addr.as_str()));
            obj.insert("promote".into(), Value::from(*promote));
        }
        Outcome::MemberRemoved { id } | Outcome::MemberPromoted { id } => {
            obj.insert("id".into(), Value::from(*id));
        }
        Outcome::Verified(r) => {
            let linearizable = match r.finding {
                Finding::Linearizable => Value::from(true),
                Finding::NotLinearizable(_) => Value::from(false),
                Finding::GaveUp(_) | Finding::Unavailable(_) => Value::Null,
            };
            obj.insert("linearizable".into(), linearizable);
            obj.insert("operations".into(), Value::from(r.operations));
            obj.insert("ok_ops".into(), Value::from(r.ok_ops));
            obj.insert("unknown".into(), Value::from(r.unknown));
            obj.insert("failed_reads".into(), Value::from(r.failed_reads));
            obj.insert("keys".into(), Value::from(r.keys));
            obj.insert("clients".into(), Value::from(r.clients));
            obj.insert("duration_ms".into(), Value::from(r.elapsed.as_millis() as u64));
            obj.insert("seed".into(), Value::from(r.seed));
            obj.insert("prefix".into(), Value::from(r.prefix.as_str()));
            let (violation, error) = match &r.finding {
                Finding::Linearizable => (None, None),
                Finding::NotLinearizable(v) => (Some(v), None),
                Finding::GaveUp(why) | Finding::Unavailable(why) => (None, Some(why)),
            };
            obj.insert("violation".into(), violation.map_or(Value::Null, |v| Value::from(v.as_str())));
            obj.insert("error".into(), error.map_or(Value::Null, |e| Value::from(e.as_str())));
            let cleanup = r.cleanup.as_ref().err().map_or(Value::Null, |e| Value::from(e.as_str()));
            obj.insert("cleanup_error".into(), cleanup);
        }
    }
    Value::Object(obj)
}

/// `{id, addr}` of the leader, or `null`.
fn leader_json(leader: Option<&(u64, String)>) -> Value {
    leader.map_or(Value::Null, |(id, addr)| json!({"id": id, "addr": addr}))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exec::{ListedMember, MemberRow};
    use graft_kv::protocol::{MemberInfo, MemberStatus};

    /// A record last written at `m`, created at `m - 1` (version 2).
    fn v(value: &'static [u8], m: u64) -> KeyValue {
        KeyValue {
            value: Bytes::from_static(value),
            create_revision: m - 1,
            mod_revision: m,
            version: 2,
            lease: 0,
        }
    }

    fn plain_text(o: &Outcome) -> String {
        String::from_utf8(render(OutputFormat::Plain, o)).expect("utf-8")
    }

    fn json_of(o: &Outcome) -> Value {
        let line = render(OutputFormat::Json, o);
        assert_eq!(line.iter().filter(|b| **b == b'\n').count(), 1, "one line");
        serde_json::from_slice(&line).expect("valid json")
    }

    fn got(found: Option<KeyValue>) -> Outcome {
        Outcome::Got { key: "k".into(), found, revision: 20 }
    }

    fn sample_txn() -> Outcome {
        use graft_kv::protocol::{Txn, TxnResponse};
        let b = |s: &'static str| Bytes::from_static(s.as_bytes());
        let txn = Txn {
            compare: vec![],
            success: vec![
                TxnOp::Get { key: b("a") },
                TxnOp::Get { key: b("gone") },
                TxnOp::Put { key: b("b"), value: b("2"), lease: 0 },
                TxnOp::Delete { key: b("c") },
                TxnOp::DeletePrefix { prefix: b("d/") },
                TxnOp::Scan { prefix: b("e/"), limit: 10 },
            ],
            failure: vec![],
        };
        let response = TxnResponse {
            succeeded: true,
            results: vec![
                TxnOpResult::Get(Some(v(b"one", 5))),
                TxnOpResult::Get(None),
                TxnOpResult::Put { previous: None },
                TxnOpResult::Delete { previous: None },
                TxnOpResult::DeletePrefix { deleted: 3 },
                TxnOpResult::Scan(vec![(b("e/1"), v(b"x", 4))]),
            ],
            revision: 30,
        };
        Outcome::Txn { txn: Box::new(txn), response }
    }

    #[test]
    fn plain_answers() {
        assert_eq!(plain_text(&got(Some(v(b"hello world", 4)))), "hello world\n");
        assert_eq!(plain_text(&got(None)), "");
        assert_eq!(plain_text(&Outcome::Put { key: "k".into(), revision: 12 }), "12\n");
        assert_eq!(
            plain_text(&Outcome::Deleted { key: "k".into(), previous: Some(v(b"x", 3)) }),
            "deleted\n"
        );
        assert_eq!(
            plain_text(&Outcome::DeletedPrefix { prefix: "a/".into(), deleted: 2, revision: 9 }),
            "deleted 2 keys\n"
        );
        assert_eq!(
            plain_text(&Outcome::Cas { key: "k".into(), swapped: true, current: Some(v(b"n", 9)) }),
            "swapped (revision 9)\n"
        );
        assert_eq!(
            plain_text(&Outcome::Cas { key: "k".into(), swapped: false, current: Some(v(b"x y", 5)) }),
            "not swapped: the value is \"x y\" (mod revision 5, version 2)\n"
        );
        assert_eq!(
            plain_text(&Outcome::Cas { key: "k".into(), swapped: false, current: None }),
            "not swapped: the key is absent\n"
        );
        let items = vec![(Bytes::from("a/1"), v(b"one", 2)), (Bytes::from("a/2"), v(b"two", 3))];
        assert_eq!(
            plain_text(&Outcome::Scanned { prefix: "a/".into(), items, revision: 7 }),
            "a/1\tone\na/2\ttwo\n"
        );
        assert_eq!(
            plain_text(&sample_txn()),
            "succeeded\none\ngone is absent\nput b\nc was absent\ndeleted 3 keys\ne/1\tx\n"
        );
        assert_eq!(
            plain_text(&Outcome::Compacted { revision: 40 }),
            "compacted: revisions below 40 are gone\n"
        );
        assert_eq!(plain_text(&Outcome::Transferred { to: 2 }), "leader is now member 2\n");
        assert_eq!(
            plain_text(&Outcome::MemberAdded { id: 4, addr: "h:4".into(), promote: true }),
            "member 4 added as learner (promoted to voter once caught up)\n"
        );
        assert_eq!(
            plain_text(&Outcome::MemberAdded { id: 4, addr: "h:4".into(), promote: false }),
            "member 4 added as learner\n"
        );
        assert_eq!(plain_text(&Outcome::MemberRemoved { id: 4 }), "member 4 removed\n");
        assert_eq!(plain_text(&Outcome::MemberPromoted { id: 4 }), "member 4 promoted to voter\n");
    }

    #[test]
    fn watch_events_plain_and_json() {
        let b = |s: &'static str| Bytes::from_static(s.as_bytes());
        let put = WatchEvent { key: b("k"), revision: 9, kv: Some(v(b"new", 9)), prev: Some(v(b"old", 5)) };
        let del = WatchEvent { key: b("k"), revision: 10, kv: None, prev: None };
        let plain = |e: &WatchEvent, p| String::from_utf8(render_event(OutputFormat::Plain, e, p)).unwrap();
        assert_eq!(plain(&put, false), "PUT k new\n");
        assert_eq!(plain(&put, true), "PUT k new (previous: old)\n");
        assert_eq!(plain(&del, true), "DELETE k\n");
        let j: Value = serde_json::from_slice(&render_event(OutputFormat::Json, &put, true)).unwrap();
        assert_eq!(
            j,
            json!({"type": "PUT", "key": "k", "revision": 9, "value": "new", "create_revision": 8,
                   "mod_revision": 9, "version": 2, "prev_value": "old"})
        );
        let j: Value = serde_json::from_slice(&render_event(OutputFormat::Json, &del, false)).unwrap();
        assert_eq!(j, json!({"type": "DELETE", "key": "k", "revision": 10}));
    }

    #[test]
    fn plain_get_keeps_bytes() {
        let o = got(Some(v(b"\xff\x00b", 1)));
        assert_eq!(render(OutputFormat::Plain, &o), b"\xff\x00b\n");
    }

    #[test]
    fn json_answers() {
        let j = json_of(&got(Some(v(b"hi", 4))));
        assert_eq!(
            j,
            json!({"command": "get", "ok": true, "exit": 0, "key": "k", "found": true, "value": "hi",
                   "create_revision": 3, "mod_revision": 4, "version": 2, "revision": 20})
        );
        let j = json_of(&got(None));
        assert_eq!(
            j,
            json!({"command": "get", "ok": false, "exit": 1, "key": "k", "found": false, "revision": 20})
        );
        let j = json_of(&Outcome::Cas { key: "k".into(), swapped: false, current: Some(v(b"x", 5)) });
        assert_eq!(
            j["current"],
            json!({"value": "x", "create_revision": 4, "mod_revision": 5, "version": 2})
        );
        assert_eq!((j["swapped"].clone(), j["exit"].clone()), (json!(false), json!(1)));
        let j = json_of(&Outcome::Deleted { key: "k".into(), previous: Some(v(b"x", 7)) });
        assert_eq!((j["deleted"].clone(), j["previous"]["mod_revision"].clone()), (json!(true), json!(7)));
        let j = json_of(&Outcome::Put { key: "k".into(), revision: 8 });
        assert_eq!(j, json!({"command": "put", "ok": true, "exit": 0, "key": "k", "revision": 8}));
        let j = json_of(&Outcome::DeletedPrefix { prefix: "a/".into(), deleted: 2, revision: 9 });
        assert_eq!(
            j,
            json!({"command": "delete", "ok": true, "exit": 0, "prefix": "a/", "deleted": 2, "revision": 9})
        );
        let j = json_of(&sample_txn());
        assert_eq!(
            (j["command"].clone(), j["succeeded"].clone(), j["revision"].clone()),
            (json!("txn"), json!(true), json!(30))
        );
        assert_eq!(
            j["results"][0],
            json!({"op": "get", "found": true,
            "kv": {"value": "one", "create_revision": 4, "mod_revision": 5, "version": 2}})
        );
        assert_eq!(j["results"][4], json!({"op": "delete prefix", "deleted": 3}));
        let j = json_of(&Outcome::Compacted { revision: 40 });
        assert_eq!(j, json!({"command": "compact", "ok": true, "exit": 0, "compacted": 40}));
        let j = json_of(&Outcome::MemberAdded { id: 4, addr: "h:4".into(), promote: false });
        assert_eq!(
            j,
            json!({"command": "member add", "ok": true, "exit": 0, "id": 4, "addr": "h:4", "promote": false})
        );
        let j = json_of(&Outcome::MemberRemoved { id: 4 });
        assert_eq!(j, json!({"command": "member remove", "ok": true, "exit": 0, "id": 4}));
        let j = json_of(&Outcome::MemberPromoted { id: 4 });
        assert_eq!(j, json!({"command": "member promote", "ok": true, "exit": 0, "id": 4}));
    }

    #[test]
    fn json_bytes_that_are_not_utf8_are_base64() {
        let items = vec![(Bytes::from_static(b"k\xff"), v(b"\x00\xfe", 3))];
        let j = json_of(&Outcome::Scanned { prefix: "k".into(), items, revision: 3 });
        assert_eq!(
            j["items"][0],
            json!({"key_base64": "a/8=", "value_base64": "AP4=", "create_revision": 2, "mod_revision": 3, "version": 2})
        );
    }

    #[test]
    fn errors() {
        assert!(render_error(OutputFormat::Plain, Some("put"), "boom", Code::Unavailable, true).is_empty());
        let line = render_error(OutputFormat::Json, Some("put"), "boom", Code::Unavailable, true);
        let j: Value = serde_json::from_slice(&line).expect("json");
        assert_eq!(
            j,
            json!({"command": "put", "ok": false, "exit": 3, "error": "boom", "outcome_unknown": true})
        );
        assert_eq!(notes(&Outcome::Deleted { key: "gone".into(), previous: None }), ["key not found: gone"]);
        assert!(notes(&Outcome::Put { key: "k".into(), revision: 1 }).is_empty());
    }

    fn linearizable_report() -> VerifyReport {
        VerifyReport {
            seed: 42,
            prefix: "graft-verify/000000000000002a/".into(),
            clients: 5,
            keys: 5,
            operations: 12345,
            ok_ops: 12330,
            unknown: 12,
            failed_reads: 3,
            elapsed: std::time::Duration::from_millis(30_040),
            finding: Finding::Linearizable,
            cleanup: Ok(5),
        }
    }

    #[test]
    fn verify_linearizable() {
        let o = Outcome::Verified(linearizable_report());
        assert_eq!(
            plain_text(&o),
            "linearizable: 12345 operations (12 writes with unknown outcome, 3 failed reads) on 5 keys in 30.0s, seed 42\n"
        );
        assert!(notes(&o).is_empty());
        assert_eq!(o.code(), Code::Ok);
        assert_eq!(
            json_of(&o),
            json!({
                "command": "verify", "ok": true, "exit": 0, "linearizable": true,
                "operations": 12345, "ok_ops": 12330, "unknown": 12, "failed_reads": 3,
                "keys": 5, "clients": 5, "duration_ms": 30040, "seed": 42,
                "prefix": "graft-verify/000000000000002a/",
                "violation": null, "error": null, "cleanup_error": null,
            })
        );
        let one =
            VerifyReport { operations: 1, unknown: 1, failed_reads: 1, keys: 1, ..linearizable_report() };
        assert!(plain_text(&Outcome::Verified(one)).starts_with(
            "linearizable: 1 operation (1 write with unknown outcome, 1 failed read) on 1 key in"
        ));
    }

    #[test]
    fn verify_not_linearizable() {
        // From a real check of a hand-built history: a put of "a" completed,
        // then a later read found nothing.
        let o = Outcome::Verified(crate::verify::tests::not_linearizable());
        let text = plain_text(&o);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "NOT linearizable (seed 42):", "{text}");
        assert!(lines[1].starts_with("key \"graft-verify/k\" is not linearizable"), "{text}");
        assert!(lines.iter().any(|l| l.contains("client 1") && l.contains("put")), "{text}");
        assert!(lines.iter().any(|l| l.contains("client 2") && l.contains("get")), "{text}");
        assert!(
            text.ends_with(
                "\n2 operations (0 writes with unknown outcome, 0 failed reads) on 1 key in 30.0s\n"
            ),
            "{text:?}"
        );
        assert!(lines.iter().any(|l| l.starts_with("(times in nanoseconds")), "{text}");
        assert_eq!(o.code(), Code::NoMatch);
        assert!(notes(&o).is_empty());
        let j = json_of(&o);
        assert_eq!((j["ok"].clone(), j["exit"].clone()), (json!(false), json!(1)));
        assert_eq!((j["linearizable"].clone(), j["error"].clone()), (json!(false), Value::Null));
        let violation = j["violation"].as_str().unwrap_or_default();
        assert!(violation.starts_with("key \"graft-verify/k\" is not linearizable"), "{j}");
        assert_eq!(j["operations"], json!(2));
    }

    #[test]
    fn verify_gave_up_or_unavailable() {
        let gave_up = VerifyReport {
            finding: Finding::GaveUp("gave up checking key k: time limit reached".into()),
            ..linearizable_report()
        };
        let o = Outcome::Verified(gave_up);
        assert!(
            plain_text(&o)
                .starts_with("undecided: gave up checking key k: time limit reached; 12345 operations"),
            "{}",
            plain_text(&o)
        );
        assert_eq!(o.code(), Code::Failure);
        let j = json_of(&o);
        assert_eq!((j["linearizable"].clone(), j["exit"].clone()), (Value::Null, json!(4)));
        assert_eq!(j["error"], json!("gave up checking key k: time limit reached"));

        let unavailable = VerifyReport {
            finding: Finding::Unavailable(
                "cluster unavailable: no operation completed in 1.0s; tried a:1".into(),
            ),
            cleanup: Err("cluster unavailable after 1s".into()),
            ..linearizable_report()
        };
        let o = Outcome::Verified(unavailable);
        assert_eq!(plain_text(&o), "");
        assert_eq!(
            notes(&o),
            [
                "error: verify: cluster unavailable: no operation completed in 1.0s; tried a:1",
                "warning: verify: could not delete every key under graft-verify/000000000000002a/: cluster unavailable after 1s",
            ]
        );
        let j = json_of(&o);
        assert_eq!(
            (j["linearizable"].clone(), j["exit"].clone(), j["ok"].clone()),
            (Value::Null, json!(3), json!(false))
        );
        assert_eq!(j["cleanup_error"], json!("cluster unavailable after 1s"));
    }

    #[test]
    fn status_table_and_json() {
        let s = MemberStatus {
            id: 1,
            cluster: "c".into(),
            role: "Leader".into(),
            term: 3,
            leader: Some(1),
            commit: 20,
            applied: 19,
            first_index: 5,
            last_index: 20,
            compacted: 0,
            members: vec![],
        };
        let report = StatusReport {
            members: vec![
                MemberRow { id: Some(1), addr: "h:1".into(), status: Ok(s) },
                MemberRow { id: Some(2), addr: "h:2".into(), status: Err("connection refused".into()) },
            ],
            leader: Some((1, "h:1".into())),
        };
        let text = plain_text(&Outcome::Status(report.clone()));
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 4, "{text}");
        let cells = |l: &str| l.split_whitespace().map(str::to_owned).collect::<Vec<_>>();
        assert_eq!(
            cells(lines[0]),
            ["ID", "ADDRESS", "ROLE", "TERM", "COMMIT", "APPLIED", "LOG", "LAST", "REACHABLE"]
        );
        assert_eq!(cells(lines[1]), ["1", "h:1", "Leader", "3", "20", "19", "16", "20", "yes"]);
        assert!(lines[2].starts_with("2 ") && lines[2].ends_with("no (connection refused)"), "{text}");
        assert_eq!(lines[3], "leader: member 1 at h:1");
        let j = json_of(&Outcome::Status(report));
        assert_eq!(j["leader"], json!({"id": 1, "addr": "h:1"}));
        assert_eq!(j["members"][0]["log_entries"], json!(16));
        assert_eq!(
            j["members"][1],
            json!({"id": 2, "addr": "h:2", "reachable": false, "error": "connection refused"})
        );
    }

    #[test]
    fn member_table_and_json() {
        let s = MemberStatus {
            id: 1,
            cluster: "c".into(),
            role: "Leader".into(),
            term: 3,
            leader: Some(1),
            commit: 20,
            applied: 19,
            first_index: 5,
            last_index: 20,
            compacted: 0,
            members: vec![],
        };
        let list = MemberList {
            members: vec![
                ListedMember {
                    info: MemberInfo { id: 1, addr: "h:1".into(), voter: true },
                    leader: true,
                    status: Ok(s),
                },
                ListedMember {
                    info: MemberInfo { id: 9, addr: "h:9".into(), voter: false },
                    leader: false,
                    status: Err("connection refused".into()),
                },
            ],
            leader: Some((1, "h:1".into())),
        };
        let text = plain_text(&Outcome::Members(list.clone()));
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 4, "{text}");
        let cells = |l: &str| l.split_whitespace().map(str::to_owned).collect::<Vec<_>>();
        assert_eq!(cells(lines[0]), ["ID", "ADDRESS", "KIND", "ROLE", "TERM", "APPLIED", "REACHABLE"]);
        assert_eq!(cells(lines[1]), ["1", "h:1", "voter", "Leader", "3", "19", "yes"]);
        assert_eq!(cells(lines[2]), ["9", "h:9", "learner", "-", "-", "-", "no", "(connection", "refused)"]);
        // Columns line up: REACHABLE starts where `yes` and `no` do.
        let at = lines[0].find("REACHABLE");
        assert!(at.is_some() && lines[1].find("yes") == at && lines[2].find("no (") == at, "{text}");
        assert_eq!(lines[3], "leader: member 1 at h:1");
        let j = json_of(&Outcome::Members(list.clone()));
        assert_eq!(
            j,
            json!({
                "command": "member list", "ok": true, "exit": 0,
                "leader": {"id": 1, "addr": "h:1"},
                "members": [
                    {"id": 1, "addr": "h:1", "voter": true, "is_leader": true, "reachable": true,
                     "role": "Leader", "term": 3, "applied": 19},
                    {"id": 9, "addr": "h:9", "voter": false, "is_leader": false, "reachable": false,
                     "error": "connection refused"},
                ],
            })
        );
        let none = MemberList { leader: None, ..list };
        assert!(plain_text(&Outcome::Members(none.clone())).ends_with("\nleader: none known\n"));
        assert_eq!(json_of(&Outcome::Members(none))["leader"], Value::Null);
    }
}
