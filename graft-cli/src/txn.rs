//! The text form of a transaction, for `graft-cli txn`. Pure: no I/O.
//!
//! Three sections separated by a blank line, as `etcdctl txn -i` reads
//! them: the compares, the operations run if all compares hold, the
//! operations run otherwise. One item per line; words follow shell rules
//! (quotes keep spaces, `#` starts a comment).
//!
//! ```text
//! mod(config/leader) = 0
//! value("lock owner") != "me"
//!
//! put config/leader node-7
//! get config/leader
//!
//! get config/leader
//! ```
//!
//! A compare is `FIELD(KEY) OP VALUE`: FIELD is `value` (or `val`),
//! `version` (`ver`), `create` or `mod`; OP is `=`, `!=`, `>` or `<`; VALUE
//! is bytes for `value` and a number otherwise. An absent key has version,
//! create and mod revision 0, and no value compare holds on it. An
//! operation is `get KEY`, `scan PREFIX [--limit N]`, `put KEY VALUE
//! [--lease ID]`, `delete KEY` or `delete --prefix PREFIX`.

use bytes::Bytes;
use graft_kv::protocol::{Compare, CompareOp, CompareTarget, Txn, TxnOp};

/// How many keys `scan` lists when `--limit` is not given, alone or in a
/// transaction.
pub const DEFAULT_SCAN_LIMIT: u32 = 1000;

/// Parses the three-section text form.
pub fn parse_text(text: &str) -> Result<Txn, String> {
    let mut sections: Vec<Vec<&str>> = vec![Vec::new()];
    let mut last_blank = false;
    for line in text.lines() {
        let content = line.trim();
        let is_comment = content.starts_with('#');
        if content.is_empty() {
            // Runs of blank lines count as one separator.
            if !last_blank {
                sections.push(Vec::new());
            }
            last_blank = true;
            continue;
        }
        last_blank = false;
        if !is_comment {
            if let Some(s) = sections.last_mut() {
                s.push(content);
            }
        }
    }
    if sections.last().is_some_and(|s| s.is_empty()) && sections.len() > 1 {
        sections.pop();
    }
    if sections.len() > 3 {
        return Err(format!(
            "a transaction has at most three sections (compares, success, failure) separated by blank lines; got {}",
            sections.len()
        ));
    }
    sections.resize(3, Vec::new());
    parse_parts(&sections[0], &sections[1], &sections[2])
}

/// Parses compares and the two branches given one item per string.
pub fn parse_parts<S: AsRef<str>>(compare: &[S], success: &[S], failure: &[S]) -> Result<Txn, String> {
    let compare = compare.iter().map(|c| parse_compare(c.as_ref())).collect::<Result<_, _>>()?;
    let success = success.iter().map(|o| parse_op(o.as_ref())).collect::<Result<_, _>>()?;
    let failure = failure.iter().map(|o| parse_op(o.as_ref())).collect::<Result<_, _>>()?;
    Ok(Txn { compare, success, failure })
}

fn words(line: &str) -> Result<Vec<String>, String> {
    shlex::split(line).ok_or_else(|| format!("unbalanced quotes in {line:?}"))
}

/// Parses `FIELD(KEY) OP VALUE`.
pub fn parse_compare(line: &str) -> Result<Compare, String> {
    let bad = |why: &str| format!("compare {line:?}: {why} (expected FIELD(KEY) OP VALUE, e.g. mod(k) = 0)");
    let w = words(line)?;
    // The field and key may have been split at spaces inside the key.
    let close = w.iter().position(|t| t.ends_with(')')).ok_or_else(|| bad("no FIELD(KEY)"))?;
    let head = w[..=close].join(" ");
    let (field, key) = head.split_once('(').ok_or_else(|| bad("no FIELD(KEY)"))?;
    let key = key.strip_suffix(')').ok_or_else(|| bad("no FIELD(KEY)"))?;
    let rest = &w[close + 1..];
    let [op, value] = rest else { return Err(bad("expected an operator and one value after the key")) };
    let op = match op.as_str() {
        "=" | "==" => CompareOp::Equal,
        "!=" => CompareOp::NotEqual,
        ">" => CompareOp::Greater,
        "<" => CompareOp::Less,
        other => return Err(bad(&format!("unknown operator {other:?}; use =, !=, > or <"))),
    };
    let number = || value.parse::<u64>().map_err(|_| bad(&format!("{value:?} is not a number")));
    let target = match field.trim() {
        "value" | "val" => CompareTarget::Value(Bytes::from(value.clone())),
        "version" | "ver" => CompareTarget::Version(number()?),
        "create" | "create_revision" => CompareTarget::CreateRevision(number()?),
        "mod" | "mod_revision" => CompareTarget::ModRevision(number()?),
        "lease" => CompareTarget::Lease(number()?),
        other => {
            return Err(bad(&format!("unknown field {other:?}; use value, version, create, mod or lease")))
        }
    };
    Ok(Compare { key: Bytes::from(key.to_owned()), target, op })
}

/// Parses one operation.
pub fn parse_op(line: &str) -> Result<TxnOp, String> {
    let w = words(line)?;
    let bad = || {
        format!(
            "operation {line:?}: expected get KEY, scan PREFIX [--limit N], put KEY VALUE, delete KEY or delete --prefix PREFIX"
        )
    };
    let b = |s: &String| Bytes::from(s.clone());
    Ok(match w.iter().map(String::as_str).collect::<Vec<_>>().as_slice() {
        ["get", _] => TxnOp::Get { key: b(&w[1]) },
        ["put", _, _] => TxnOp::Put { key: b(&w[1]), value: b(&w[2]), lease: 0 },
        ["put", _, _, "--lease", id] => match id.parse::<u64>() {
            Ok(lease) => TxnOp::Put { key: b(&w[1]), value: b(&w[2]), lease },
            Err(_) => return Err(format!("operation {line:?}: --lease takes a lease id")),
        },
        ["delete" | "del", "--prefix"] => return Err(bad()),
        ["delete" | "del", "--prefix", _] => TxnOp::DeletePrefix { prefix: b(&w[2]) },
        ["delete" | "del", _] => TxnOp::Delete { key: b(&w[1]) },
        ["scan", _] => TxnOp::Scan { prefix: b(&w[1]), limit: DEFAULT_SCAN_LIMIT },
        ["scan", _, "--limit", n] => match n.parse::<u32>() {
            Ok(limit) if limit > 0 => TxnOp::Scan { prefix: b(&w[1]), limit },
            _ => return Err(format!("operation {line:?}: --limit must be a number from 1")),
        },
        _ => return Err(bad()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(s: &str) -> Bytes {
        Bytes::copy_from_slice(s.as_bytes())
    }

    #[test]
    fn the_three_sections_parse() {
        let text = "\
# take the lock if nobody holds it
mod(locks/a) = 0
value(\"a key\") != \"x y\"

put locks/a me
get locks/a

get locks/a
";
        let t = parse_text(text).unwrap();
        assert_eq!(t.compare.len(), 2);
        assert_eq!(
            t.compare[0],
            Compare { key: b("locks/a"), target: CompareTarget::ModRevision(0), op: CompareOp::Equal }
        );
        assert_eq!(
            t.compare[1],
            Compare { key: b("a key"), target: CompareTarget::Value(b("x y")), op: CompareOp::NotEqual }
        );
        assert_eq!(
            t.success,
            vec![
                TxnOp::Put { key: b("locks/a"), value: b("me"), lease: 0 },
                TxnOp::Get { key: b("locks/a") }
            ]
        );
        assert_eq!(t.failure, vec![TxnOp::Get { key: b("locks/a") }]);
    }

    #[test]
    fn sections_may_be_missing_or_empty() {
        let only_ops = parse_text("\nput k v\n").unwrap();
        assert!(only_ops.compare.is_empty());
        assert_eq!(only_ops.success, vec![TxnOp::Put { key: b("k"), value: b("v"), lease: 0 }]);
        let only_compare = parse_text("ver(k) > 2").unwrap();
        assert_eq!(only_compare.compare[0].target, CompareTarget::Version(2));
        assert_eq!(only_compare.compare[0].op, CompareOp::Greater);
        assert!(parse_text("a(k) = 1\n\nput k v\n\nget k\n\nget k\n").unwrap_err().contains("at most three"));
    }

    #[test]
    fn every_operation_and_field_parses() {
        assert_eq!(parse_op("delete --prefix a/").unwrap(), TxnOp::DeletePrefix { prefix: b("a/") });
        assert_eq!(parse_op("del k").unwrap(), TxnOp::Delete { key: b("k") });
        assert_eq!(parse_op("scan a/ --limit 5").unwrap(), TxnOp::Scan { prefix: b("a/"), limit: 5 });
        assert_eq!(parse_op("scan a/").unwrap(), TxnOp::Scan { prefix: b("a/"), limit: DEFAULT_SCAN_LIMIT });
        assert_eq!(parse_compare("create(k) < 9").unwrap().target, CompareTarget::CreateRevision(9));
        assert_eq!(parse_compare("val(k) == v").unwrap().target, CompareTarget::Value(b("v")));
        assert_eq!(parse_compare("lease(k) = 7").unwrap().target, CompareTarget::Lease(7));
    }

    #[test]
    fn mistakes_are_explained() {
        for (line, says) in [
            ("mod k = 0", "no FIELD(KEY)"),
            ("mod(k) ~ 0", "unknown operator"),
            ("mod(k) = x", "not a number"),
            ("size(k) = 1", "unknown field"),
            ("mod(k) =", "an operator and one value"),
            ("mod(\"k) = 0", "unbalanced quotes"),
        ] {
            let e = parse_compare(line).unwrap_err();
            assert!(e.contains(says), "{line}: {e}");
        }
        for line in ["put k", "get", "frob k", "scan a --limit 0", "delete --prefix"] {
            assert!(parse_op(line).is_err(), "{line}");
        }
    }
}
