//! Checking multi-key transactions against the store's own revision order.
//!
//! Multi-key transactions break the locality [`crate::check`] relies on
//! (each key its own register), and a search over every interleaving of a
//! multi-key store is hopeless on long histories. A store with revisions
//! names its order itself: every write (transaction) is one revision,
//! every read reports the revision of the state it read. That order is a
//! *witness*: [`check_serial`] verifies that it is a valid linearization,
//! which proves the history strictly serializable, in time linear in its
//! length. A wrong witness (a store misreporting revisions, or a history
//! with no valid order at all) is reported as a violation; the check never
//! passes a history no order explains.
//!
//! What it needs besides the operations is the **committed log**: every
//! write the store applied to the keys concerned, with its revision, as a
//! watch from before the first operation reports it. Values written must
//! be unique per operation and every writing branch must put at least one
//! value, so that each revision's writes name the operation that made
//! them (an operation whose outcome the client never learnt is found that
//! way, or shown never to have happened).
//!
//! The rules, for each revision `r` in order, starting from an empty store:
//! - a transaction acknowledged at `r` is evaluated on the state of the
//!   revisions before `r`: its compares must give the branch it reported,
//!   each operation of the branch must give the result it reported, and
//!   the writes it makes must be exactly the committed writes at `r`;
//! - committed writes at `r` no acknowledged transaction claims must be
//!   those of exactly one transaction whose outcome is unknown, evaluated
//!   the same way; no operation may take effect twice;
//! - a read that reported revision `r` must see the state after `r`;
//! - real time: an operation that completed before another was invoked
//!   comes first in the order (a read at `r` is placed after the write at
//!   `r`; two reads may share a place).

use std::collections::{BTreeMap, HashMap};
use std::fmt;

use crate::history::{DisplayBytes, Key, Value};

/// A live key as the store reports it (etcd's `mvccpb.KeyValue`).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Record {
    /// The value.
    pub value: Value,
    /// The revision that created this life of the key.
    pub create_revision: u64,
    /// The revision of its last write.
    pub mod_revision: u64,
    /// Writes since it was created.
    pub version: u64,
}

/// What a compare looks at. An absent key has version, create revision and
/// mod revision 0, and no value compare on it holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// The value, bytewise.
    Value(Value),
    /// The version.
    Version(u64),
    /// The create revision.
    CreateRevision(u64),
    /// The mod revision.
    ModRevision(u64),
}

/// How the key's side compares with the given side.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CmpOp {
    /// Equal.
    Equal,
    /// Not equal.
    NotEqual,
    /// The key's side is greater.
    Greater,
    /// The key's side is less.
    Less,
}

/// One condition of a transaction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Compare {
    /// The key.
    pub key: Key,
    /// What is compared.
    pub target: Target,
    /// How.
    pub op: CmpOp,
}

impl Compare {
    fn holds(&self, rec: Option<&Record>) -> bool {
        use std::cmp::Ordering;
        let ord = match (&self.target, rec) {
            (Target::Value(_), None) => return false,
            (Target::Value(v), Some(r)) => r.value.as_ref().cmp(v.as_ref()),
            (Target::Version(n), r) => r.map_or(0, |r| r.version).cmp(n),
            (Target::CreateRevision(n), r) => r.map_or(0, |r| r.create_revision).cmp(n),
            (Target::ModRevision(n), r) => r.map_or(0, |r| r.mod_revision).cmp(n),
        };
        match self.op {
            CmpOp::Equal => ord == Ordering::Equal,
            CmpOp::NotEqual => ord != Ordering::Equal,
            CmpOp::Greater => ord == Ordering::Greater,
            CmpOp::Less => ord == Ordering::Less,
        }
    }
}

/// One operation of a transaction's branch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// Read a key (seeing the branch's earlier writes).
    Get(Key),
    /// Set a key.
    Put(Key, Value),
    /// Remove a key.
    Delete(Key),
}

/// What one step returned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StepResult {
    /// The key's record, if present.
    Get(Option<Record>),
    /// The record the put replaced, if any.
    Put(Option<Record>),
    /// The record the delete removed, if any.
    Delete(Option<Record>),
}

/// What a client asked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SerialCall {
    /// A transaction: one revision of its own, written or not.
    Txn {
        /// All must hold for `success` to run.
        compare: Vec<Compare>,
        /// Run if they hold.
        success: Vec<Step>,
        /// Run otherwise.
        failure: Vec<Step>,
    },
    /// A read of one key at the latest revision.
    Read(Key),
}

/// What the client learnt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SerialOutcome {
    /// The transaction ran at `revision`.
    Txn {
        /// Its revision.
        revision: u64,
        /// Whether the compares held.
        succeeded: bool,
        /// Each step's result.
        results: Vec<StepResult>,
    },
    /// The read saw this record at `revision`.
    Read {
        /// The revision of the state read.
        revision: u64,
        /// What it saw.
        record: Option<Record>,
    },
    /// Unknown (timeout, lost connection): it may have run once, or never.
    Unknown,
}

/// One operation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SerialOp {
    /// Who issued it (for reports).
    pub client: u64,
    /// What was asked.
    pub call: SerialCall,
    /// When it was invoked.
    pub invoke: u64,
    /// When its outcome arrived. Invariant: `Some` unless the outcome is
    /// [`SerialOutcome::Unknown`].
    pub complete: Option<u64>,
    /// What came back.
    pub outcome: SerialOutcome,
}

/// One committed write, as the store's log (a watch) reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Committed {
    /// Its revision.
    pub revision: u64,
    /// The key.
    pub key: Key,
    /// The record written, `None` for a delete. Checked against the model.
    pub record: Option<Record>,
}

/// What [`check_serial`] found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SerialReport {
    /// Operations checked at their place in the order.
    pub placed: usize,
    /// Unknown-outcome transactions found in the committed log.
    pub unknown_committed: usize,
    /// Everything wrong, in revision order (empty: the order is a valid
    /// linearization).
    pub problems: Vec<String>,
}

impl SerialReport {
    /// Whether the history is strictly serializable in the store's order.
    pub fn is_ok(&self) -> bool {
        self.problems.is_empty()
    }
}

impl fmt::Display for SerialReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_ok() {
            return write!(
                f,
                "strictly serializable in revision order ({} operations placed, {} unknown ones committed)",
                self.placed, self.unknown_committed
            );
        }
        writeln!(f, "{} problems; the first:", self.problems.len())?;
        for p in self.problems.iter().take(10) {
            writeln!(f, "  {p}")?;
        }
        Ok(())
    }
}

/// A revision's writes: (key, value or `None` for a delete), in order.
type Writes = Vec<(Key, Option<Value>)>;

/// Runs a transaction on `state` at `revision`: whether it succeeded, each
/// step's result and the writes it made (a delete of an absent key writes
/// nothing, as in the store).
fn simulate(
    state: &BTreeMap<Key, Record>,
    revision: u64,
    compare: &[Compare],
    success: &[Step],
    failure: &[Step],
) -> (bool, Vec<StepResult>, Writes) {
    let succeeded = compare.iter().all(|c| c.holds(state.get(&c.key)));
    let mut overlay: HashMap<Key, Option<Record>> = HashMap::new();
    let lookup = |overlay: &HashMap<Key, Option<Record>>, k: &Key| -> Option<Record> {
        match overlay.get(k) {
            Some(r) => r.clone(),
            None => state.get(k).cloned(),
        }
    };
    let mut results = Vec::new();
    let mut writes = Vec::new();
    for step in if succeeded { success } else { failure } {
        match step {
            Step::Get(k) => results.push(StepResult::Get(lookup(&overlay, k))),
            Step::Put(k, v) => {
                let prev = lookup(&overlay, k);
                let rec = Record {
                    value: v.clone(),
                    create_revision: prev.as_ref().map_or(revision, |p| p.create_revision),
                    mod_revision: revision,
                    version: prev.as_ref().map_or(1, |p| p.version + 1),
                };
                overlay.insert(k.clone(), Some(rec));
                writes.push((k.clone(), Some(v.clone())));
                results.push(StepResult::Put(prev));
            }
            Step::Delete(k) => {
                let prev = lookup(&overlay, k);
                if prev.is_some() {
                    writes.push((k.clone(), None));
                }
                overlay.insert(k.clone(), None);
                results.push(StepResult::Delete(prev));
            }
        }
    }
    (succeeded, results, writes)
}

/// Applies one committed write to the model; a reported record that
/// differs from the model's is a problem.
fn apply(state: &mut BTreeMap<Key, Record>, c: &Committed, problems: &mut Vec<String>) {
    match &c.record {
        Some(reported) => {
            let prev = state.get(&c.key);
            let rec = Record {
                value: reported.value.clone(),
                create_revision: prev.map_or(c.revision, |p| p.create_revision),
                mod_revision: c.revision,
                version: prev.map_or(1, |p| p.version + 1),
            };
            if &rec != reported {
                problems.push(format!(
                    "revision {}: the log reports {} as {reported:?}, the writes before it make {rec:?}",
                    c.revision,
                    DisplayBytes(&c.key)
                ));
            }
            state.insert(c.key.clone(), rec);
        }
        None => {
            if state.remove(&c.key).is_none() {
                problems.push(format!(
                    "revision {}: the log deletes {}, which was absent",
                    c.revision,
                    DisplayBytes(&c.key)
                ));
            }
        }
    }
}

/// Checks `ops` against the store's order, given every write `committed`
/// to the keys they touch (from an empty store). See the module docs.
pub fn check_serial(ops: &[SerialOp], committed: &[Committed]) -> SerialReport {
    let mut report = SerialReport::default();
    let problems = &mut report.problems;
    let mut groups: BTreeMap<u64, Vec<&Committed>> = BTreeMap::new();
    for c in committed {
        groups.entry(c.revision).or_default().push(c);
    }
    // Acknowledged transactions by revision, reads by revision.
    let mut txn_at: BTreeMap<u64, usize> = BTreeMap::new();
    let mut reads_at: BTreeMap<u64, Vec<usize>> = BTreeMap::new();
    // Unknown transactions by the values they may put.
    let mut unknown_by_value: HashMap<Value, usize> = HashMap::new();
    let mut unknown_all: Vec<usize> = Vec::new();
    for (i, op) in ops.iter().enumerate() {
        match (&op.call, &op.outcome) {
            (SerialCall::Txn { .. }, SerialOutcome::Txn { revision, .. }) => {
                if let Some(j) = txn_at.insert(*revision, i) {
                    problems.push(format!("operations {j} and {i} both report revision {revision}"));
                }
            }
            (SerialCall::Read(_), SerialOutcome::Read { revision, .. }) => {
                reads_at.entry(*revision).or_default().push(i);
            }
            (SerialCall::Txn { success, failure, .. }, SerialOutcome::Unknown) => {
                unknown_all.push(i);
                for s in success.iter().chain(failure) {
                    if let Step::Put(_, v) = s {
                        unknown_by_value.insert(v.clone(), i);
                    }
                }
            }
            (SerialCall::Read(_), SerialOutcome::Unknown) => {}
            (call, outcome) => problems.push(format!("operation {i}: outcome {outcome:?} for {call:?}")),
        }
    }
    // Each operation's place: 2r for a transaction at r, 2r + 1 for a read.
    let mut place: Vec<Option<u64>> = vec![None; ops.len()];
    let mut used = vec![false; ops.len()];
    let mut revisions: Vec<u64> =
        groups.keys().chain(txn_at.keys()).chain(reads_at.keys()).copied().collect();
    revisions.sort_unstable();
    revisions.dedup();
    let mut state: BTreeMap<Key, Record> = BTreeMap::new();
    for r in revisions {
        let group: Writes = groups
            .get(&r)
            .map(|g| g.iter().map(|c| (c.key.clone(), c.record.as_ref().map(|r| r.value.clone()))).collect())
            .unwrap_or_default();
        let shown = |w: &Writes| {
            w.iter()
                .map(|(k, v)| match v {
                    Some(v) => format!("put {}={}", DisplayBytes(k), DisplayBytes(v)),
                    None => format!("delete {}", DisplayBytes(k)),
                })
                .collect::<Vec<_>>()
                .join(", ")
        };
        if let Some(&i) = txn_at.get(&r) {
            let op = &ops[i];
            used[i] = true;
            place[i] = Some(2 * r);
            report.placed += 1;
            if let (
                SerialCall::Txn { compare, success, failure },
                SerialOutcome::Txn { succeeded, results, .. },
            ) = (&op.call, &op.outcome)
            {
                let (ok, want, writes) = simulate(&state, r, compare, success, failure);
                if ok != *succeeded {
                    problems.push(format!(
                        "revision {r}: client {}'s transaction reported succeeded={succeeded}, its compares give {ok} {compare:?}",
                        op.client
                    ));
                } else if &want != results {
                    problems.push(format!(
                        "revision {r}: client {}'s transaction returned {results:?}, the state before it gives {want:?}",
                        op.client
                    ));
                }
                if writes != group {
                    problems.push(format!(
                        "revision {r}: client {}'s acknowledged transaction writes [{}], the log has [{}]",
                        op.client,
                        shown(&writes),
                        shown(&group)
                    ));
                }
            }
        } else if !group.is_empty() {
            // An unknown transaction did it: found by a value it put, or
            // (a branch of deletes only) by trying each.
            let by_value = group.iter().find_map(|(_, v)| v.as_ref().and_then(|v| unknown_by_value.get(v)));
            let candidates: Vec<usize> = match by_value {
                Some(&i) => vec![i],
                None => unknown_all.iter().copied().filter(|&i| !used[i]).collect(),
            };
            let found = candidates.into_iter().find(|&i| {
                let SerialCall::Txn { compare, success, failure } = &ops[i].call else { return false };
                simulate(&state, r, compare, success, failure).2 == group
            });
            match found {
                Some(i) if used[i] => problems.push(format!(
                    "revision {r}: [{}] is client {}'s transaction taking effect a second time",
                    shown(&group),
                    ops[i].client
                )),
                Some(i) => {
                    used[i] = true;
                    place[i] = Some(2 * r);
                    report.unknown_committed += 1;
                }
                None => problems.push(format!(
                    "revision {r}: the log has [{}], which no operation explains at that point",
                    shown(&group)
                )),
            }
        }
        if let Some(g) = groups.get(&r) {
            for c in g {
                apply(&mut state, c, problems);
            }
        }
        for &i in reads_at.get(&r).into_iter().flatten() {
            let (SerialCall::Read(key), SerialOutcome::Read { record, .. }) = (&ops[i].call, &ops[i].outcome)
            else {
                continue;
            };
            place[i] = Some(2 * r + 1);
            report.placed += 1;
            let want = state.get(key);
            if want != record.as_ref() {
                problems.push(format!(
                    "revision {r}: client {} read {} as {record:?}, the log makes it {want:?}",
                    ops[i].client,
                    DisplayBytes(key)
                ));
            }
        }
    }
    real_time(ops, &place, problems);
    report
}

/// An operation that completed before another was invoked must have the
/// earlier place (reads may share one).
fn real_time(ops: &[SerialOp], place: &[Option<u64>], problems: &mut Vec<String>) {
    let mut by_invoke: Vec<usize> = (0..ops.len()).filter(|&i| place[i].is_some()).collect();
    by_invoke.sort_by_key(|&i| ops[i].invoke);
    let mut by_complete: Vec<usize> =
        (0..ops.len()).filter(|&i| place[i].is_some() && ops[i].complete.is_some()).collect();
    by_complete.sort_by_key(|&i| ops[i].complete);
    // The highest place among operations completed so far, and whose.
    let mut best: Option<(u64, usize)> = None;
    let mut next = 0;
    for &b in &by_invoke {
        while next < by_complete.len() && ops[by_complete[next]].complete < Some(ops[b].invoke) {
            let a = by_complete[next];
            if let Some(p) = place[a] {
                if best.is_none_or(|(q, _)| p > q) {
                    best = Some((p, a));
                }
            }
            next += 1;
        }
        let (Some(pb), Some((pa, a))) = (place[b], best) else { continue };
        if pb < pa || (pb == pa && pb % 2 == 0 && a != b) {
            problems.push(format!(
                "client {}'s operation at revision {} was invoked after client {}'s at revision {} completed",
                ops[b].client,
                pb / 2,
                ops[a].client,
                pa / 2
            ));
        }
    }
}

#[cfg(test)]
mod tests;
