//! Multi-key transactions: compares, then one of two lists of operations,
//! applied atomically in one log entry (etcd's `TxnRequest`).

use std::collections::BTreeSet;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::kv::{ApiError, KeyValue, MAX_KEY, MAX_VALUE};
use super::range::KeyRange;

/// The most compares, and the most operations in each branch, of one
/// transaction (etcd's default `--max-txn-ops`).
pub const MAX_TXN_OPS: usize = 128;

/// If every compare holds, run `success`, otherwise `failure`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Txn {
    /// The conditions, all of which must hold.
    pub compare: Vec<Compare>,
    /// Run when they all hold.
    pub success: Vec<TxnOp>,
    /// Run otherwise.
    pub failure: Vec<TxnOp>,
}

/// One condition on one key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Compare {
    /// The key.
    pub key: Bytes,
    /// What of the key is compared, and with what.
    pub target: CompareTarget,
    /// How.
    pub op: CompareOp,
}

/// What a compare looks at. An absent key has version, create revision and
/// mod revision 0; a compare on the value of an absent key never holds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum CompareTarget {
    /// The value, compared bytewise.
    Value(Bytes),
    /// Writes since the key was created.
    Version(u64),
    /// The revision that created it.
    CreateRevision(u64),
    /// The revision of its last write.
    ModRevision(u64),
    /// The lease it is attached to (0: none; an absent key has 0).
    Lease(u64),
}

/// How the key's side compares with the given side.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum CompareOp {
    /// Equal.
    Equal,
    /// Not equal.
    NotEqual,
    /// The key's side is greater.
    Greater,
    /// The key's side is less.
    Less,
}

/// One operation of a transaction's branch.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum TxnOp {
    /// Reads one key (seeing the branch's earlier writes).
    Get {
        /// The key.
        key: Bytes,
    },
    /// Reads up to `limit` keys starting with `prefix`, in key order.
    Scan {
        /// The prefix (empty: all keys).
        prefix: Bytes,
        /// At most this many.
        limit: u32,
    },
    /// Sets a key.
    Put {
        /// The key.
        key: Bytes,
        /// The value.
        value: Bytes,
        /// Attach it to this lease (0: none).
        lease: u64,
    },
    /// Removes a key.
    Delete {
        /// The key.
        key: Bytes,
    },
    /// Removes every key starting with `prefix`.
    DeletePrefix {
        /// The prefix (empty: every key).
        prefix: Bytes,
    },
    /// Reads up to `limit` keys of a range (0: all), in key order.
    Range {
        /// Which keys.
        range: KeyRange,
        /// At most this many (0: all).
        limit: u32,
    },
    /// Removes every key of a range.
    DeleteRange {
        /// Which keys.
        range: KeyRange,
    },
    /// Sets a key keeping its current value (`value: None`, etcd's
    /// `ignore_value`) or its current lease (`lease: None`, etcd's
    /// `ignore_lease`); the key must exist if either is kept.
    PutKeeping {
        /// The key.
        key: Bytes,
        /// The new value, or `None` to keep the current one.
        value: Option<Bytes>,
        /// The new lease (0: none), or `None` to keep the current one.
        lease: Option<u64>,
    },
    /// A transaction nested in this branch: its compares see the branch's
    /// earlier writes (etcd's `request_txn`).
    Txn(Txn),
}

/// What one operation did.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum TxnOpResult {
    /// The key, if present.
    Get(Option<KeyValue>),
    /// Matching keys in key order.
    Scan(Vec<(Bytes, KeyValue)>),
    /// The key's record before the put, if it was present.
    Put {
        /// Its previous record.
        previous: Option<KeyValue>,
    },
    /// The key's record before the delete, if it was present.
    Delete {
        /// Its previous record.
        previous: Option<KeyValue>,
    },
    /// How many keys were removed.
    DeletePrefix {
        /// The count.
        deleted: u64,
    },
    /// The keys of a range.
    Range {
        /// Up to the limit, in key order.
        kvs: Vec<(Bytes, KeyValue)>,
        /// How many keys the range holds, the limit aside.
        count: u64,
        /// Whether the limit left some out.
        more: bool,
    },
    /// The records a range delete removed, in key order.
    DeleteRange {
        /// Each removed key with its last record.
        previous: Vec<(Bytes, KeyValue)>,
    },
    /// A nested transaction's outcome.
    Txn(TxnResponse),
}

/// A transaction's outcome.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TxnResponse {
    /// Whether every compare held (so `success` ran).
    pub succeeded: bool,
    /// Each operation's result, in order.
    pub results: Vec<TxnOpResult>,
    /// The revision of the transaction's entry.
    pub revision: u64,
}

impl Compare {
    /// Whether the compare holds for the key's current record.
    pub fn holds(&self, current: Option<&KeyValue>) -> bool {
        use std::cmp::Ordering;
        let ord = match (&self.target, current) {
            // etcd: a value compare on an absent key never holds.
            (CompareTarget::Value(_), None) => return false,
            (CompareTarget::Value(v), Some(kv)) => kv.value.as_ref().cmp(v.as_ref()),
            (CompareTarget::Version(n), kv) => kv.map_or(0, |kv| kv.version).cmp(n),
            (CompareTarget::CreateRevision(n), kv) => kv.map_or(0, |kv| kv.create_revision).cmp(n),
            (CompareTarget::ModRevision(n), kv) => kv.map_or(0, |kv| kv.mod_revision).cmp(n),
            (CompareTarget::Lease(n), kv) => kv.map_or(0, |kv| kv.lease).cmp(n),
        };
        match self.op {
            CompareOp::Equal => ord == Ordering::Equal,
            CompareOp::NotEqual => ord != Ordering::Equal,
            CompareOp::Greater => ord == Ordering::Greater,
            CompareOp::Less => ord == Ordering::Less,
        }
    }
}

impl TxnOp {
    /// Whether it writes.
    pub fn is_write(&self) -> bool {
        match self {
            TxnOp::Txn(t) => t.writes(),
            op => matches!(
                op,
                TxnOp::Put { .. }
                    | TxnOp::Delete { .. }
                    | TxnOp::DeletePrefix { .. }
                    | TxnOp::DeleteRange { .. }
                    | TxnOp::PutKeeping { .. }
            ),
        }
    }
}

impl Txn {
    /// Whether any branch writes (so the transaction goes through the log).
    pub fn writes(&self) -> bool {
        self.success.iter().chain(&self.failure).any(TxnOp::is_write)
    }

    /// Checks the transaction before it is accepted: not empty, within
    /// [`MAX_TXN_OPS`] and the key and value limits, and no branch writing
    /// the same key twice (a put or delete of a key another write of the
    /// branch also covers, as etcd refuses).
    pub fn validate(&self) -> Result<(), ApiError> {
        if self.compare.is_empty() && self.success.is_empty() && self.failure.is_empty() {
            return Err(ApiError::Invalid("empty transaction: no compare and no operation".into()));
        }
        for (what, n) in [
            ("compares", self.compare.len()),
            ("success", self.success.len()),
            ("failure", self.failure.len()),
        ] {
            if n > MAX_TXN_OPS {
                return Err(ApiError::Invalid(format!(
                    "transaction has {n} {what} operations, over the limit of {MAX_TXN_OPS}"
                )));
            }
        }
        for c in &self.compare {
            check_key(&c.key)?;
            if let CompareTarget::Value(v) = &c.target {
                check_value(v)?;
            }
        }
        for branch in [&self.success, &self.failure] {
            branch_writes(branch)?;
        }
        Ok(())
    }
}

/// Checks a branch's operations and returns what it writes: keys, and the
/// ranges it deletes (prefixes included); refuses a branch writing a key
/// twice. A nested transaction counts as writing what either of its
/// branches writes (etcd's rule, conservatively).
fn branch_writes(branch: &[TxnOp]) -> Result<(BTreeSet<Bytes>, Vec<KeyRange>), ApiError> {
    let mut keys: BTreeSet<Bytes> = BTreeSet::new();
    let mut ranges: Vec<KeyRange> = Vec::new();
    let put = |keys: &mut BTreeSet<Bytes>, key: &Bytes| {
        if keys.insert(key.clone()) {
            Ok(())
        } else {
            Err(duplicate(key))
        }
    };
    for op in branch {
        match op {
            TxnOp::Get { key } => check_key(key)?,
            TxnOp::Scan { prefix, .. } => check_key(prefix)?,
            TxnOp::Put { key, value, .. } => {
                check_key(key)?;
                check_value(value)?;
                put(&mut keys, key)?;
            }
            TxnOp::PutKeeping { key, value, .. } => {
                check_key(key)?;
                if let Some(v) = value {
                    check_value(v)?;
                }
                put(&mut keys, key)?;
            }
            TxnOp::Delete { key } => {
                check_key(key)?;
                put(&mut keys, key)?;
            }
            TxnOp::DeletePrefix { prefix } => {
                check_key(prefix)?;
                ranges.push(KeyRange::prefix(prefix.clone()));
            }
            TxnOp::Range { range, .. } => range.check()?,
            TxnOp::DeleteRange { range } => {
                range.check()?;
                ranges.push(range.clone());
            }
            TxnOp::Txn(nested) => {
                nested.validate()?;
                let (mut k, mut r) = branch_writes(&nested.success)?;
                let (k2, r2) = branch_writes(&nested.failure)?;
                // One branch runs: both may write the same keys and ranges.
                k.extend(k2);
                for q in r2 {
                    if !r.contains(&q) {
                        r.push(q);
                    }
                }
                for key in &k {
                    put(&mut keys, key)?;
                }
                ranges.extend(r);
            }
        }
    }
    for (i, r) in ranges.iter().enumerate() {
        if let Some(k) = keys.iter().find(|k| r.contains(k)) {
            return Err(duplicate(k));
        }
        if ranges[i + 1..].iter().any(|q| q.overlaps(r)) {
            return Err(ApiError::Invalid(format!(
                "transaction deletes overlapping ranges (one from {:?})",
                String::from_utf8_lossy(&r.start)
            )));
        }
    }
    Ok((keys, ranges))
}

fn duplicate(key: &[u8]) -> ApiError {
    ApiError::Invalid(format!(
        "transaction writes key {:?} more than once in one branch",
        String::from_utf8_lossy(key)
    ))
}

/// Refuses a key over [`MAX_KEY`].
pub fn check_key(key: &[u8]) -> Result<(), ApiError> {
    if key.len() > MAX_KEY {
        return Err(ApiError::KeyTooLarge { size: key.len(), max: MAX_KEY });
    }
    Ok(())
}

/// Refuses a value over [`MAX_VALUE`].
pub fn check_value(value: &[u8]) -> Result<(), ApiError> {
    if value.len() > MAX_VALUE {
        return Err(ApiError::ValueTooLarge { size: value.len(), max: MAX_VALUE });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(s: &str) -> Bytes {
        Bytes::copy_from_slice(s.as_bytes())
    }

    fn kv(value: &str, create: u64, m: u64, version: u64) -> KeyValue {
        KeyValue { value: b(value), create_revision: create, mod_revision: m, version, lease: 0 }
    }

    #[test]
    fn compares_follow_etcd_on_present_and_absent_keys() {
        let c = |target, op| Compare { key: b("k"), target, op };
        let k = kv("m", 3, 7, 2);
        use CompareOp::*;
        use CompareTarget::*;
        assert!(c(Value(b("m")), Equal).holds(Some(&k)));
        assert!(c(Value(b("a")), Greater).holds(Some(&k)));
        assert!(c(Value(b("z")), Less).holds(Some(&k)));
        assert!(c(Value(b("z")), NotEqual).holds(Some(&k)));
        assert!(!c(Value(b("m")), NotEqual).holds(None), "a value compare on an absent key never holds");
        assert!(!c(Value(b("")), Equal).holds(None));
        assert!(c(Version(0), Equal).holds(None), "an absent key has version 0");
        assert!(c(ModRevision(0), Equal).holds(None));
        assert!(c(CreateRevision(1), Less).holds(None));
        assert!(c(Version(2), Equal).holds(Some(&k)));
        assert!(c(CreateRevision(3), Equal).holds(Some(&k)));
        assert!(c(ModRevision(6), Greater).holds(Some(&k)));
        assert!(!c(ModRevision(7), Greater).holds(Some(&k)));
        assert!(c(Lease(0), Equal).holds(None), "an absent key has lease 0");
        assert!(c(Lease(0), Equal).holds(Some(&k)));
        let leased = KeyValue { lease: 9, ..k.clone() };
        assert!(c(Lease(9), Equal).holds(Some(&leased)) && c(Lease(3), Greater).holds(Some(&leased)));
    }

    #[test]
    fn bad_transactions_are_refused_with_a_reason() {
        let put = |k: &str| TxnOp::Put { key: b(k), value: b("v"), lease: 0 };
        let err = |t: Txn| t.validate().unwrap_err().to_string();
        assert!(err(Txn::default()).contains("empty transaction"));
        let twice = Txn { success: vec![put("a"), put("a")], ..Txn::default() };
        assert!(err(twice).contains("more than once"));
        let covered =
            Txn { failure: vec![put("a/1"), TxnOp::DeletePrefix { prefix: b("a/") }], ..Txn::default() };
        assert!(err(covered).contains("more than once"));
        let nested = Txn {
            success: vec![TxnOp::DeletePrefix { prefix: b("a") }, TxnOp::DeletePrefix { prefix: b("a/") }],
            ..Txn::default()
        };
        assert!(err(nested).contains("overlapping ranges"));
        let big = Txn { success: (0..=MAX_TXN_OPS).map(|i| put(&i.to_string())).collect(), ..Txn::default() };
        assert!(err(big).contains("over the limit of 128"));
        let huge_key =
            Txn { success: vec![TxnOp::Get { key: Bytes::from(vec![0; MAX_KEY + 1]) }], ..Txn::default() };
        assert!(matches!(huge_key.validate(), Err(ApiError::KeyTooLarge { .. })));
        // The same key in both branches is fine: only one runs.
        let ok = Txn { success: vec![put("a")], failure: vec![put("a")], ..Txn::default() };
        assert!(ok.validate().is_ok());
        let reads = Txn { success: vec![TxnOp::Get { key: b("a") }, put("a")], ..Txn::default() };
        assert!(reads.validate().is_ok(), "reading a key the branch writes is fine");
    }

    #[test]
    fn nested_transactions_count_what_either_branch_writes() {
        let put = |k: &str| TxnOp::Put { key: b(k), value: b("v"), lease: 0 };
        let inner =
            |success: Vec<TxnOp>, failure: Vec<TxnOp>| TxnOp::Txn(Txn { compare: vec![], success, failure });
        // Either branch of the nested one may write what the other does.
        let ok = Txn { success: vec![put("a"), inner(vec![put("b")], vec![put("b")])], ..Txn::default() };
        assert!(ok.validate().is_ok());
        assert!(ok.writes());
        // But not what the outer branch writes.
        let clash = Txn { success: vec![put("a"), inner(vec![], vec![put("a")])], ..Txn::default() };
        assert!(clash.validate().unwrap_err().to_string().contains("more than once"));
        let covered = Txn {
            success: vec![TxnOp::DeletePrefix { prefix: b("x/") }, inner(vec![put("x/1")], vec![])],
            ..Txn::default()
        };
        assert!(covered.validate().is_err());
        // A nested transaction is checked as a whole, and reads only.
        let empty = Txn { success: vec![inner(vec![], vec![])], ..Txn::default() };
        assert!(empty.validate().unwrap_err().to_string().contains("empty transaction"));
        let reads = Txn { success: vec![inner(vec![TxnOp::Get { key: b("a") }], vec![])], ..Txn::default() };
        assert!(!reads.writes());
        // Keeping a value or lease is a write like any other.
        let keep = TxnOp::PutKeeping { key: b("a"), value: None, lease: Some(0) };
        let twice = Txn { success: vec![keep, put("a")], ..Txn::default() };
        assert!(twice.validate().is_err());
    }
}
