//! The recorded history: operations, their calls and outcomes, and the
//! initial value of each key.

use std::collections::BTreeMap;
use std::fmt;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

/// A key of the store. Each key is an independent register.
pub type Key = Bytes;

/// A value held by a register.
pub type Value = Bytes;

/// What a client asked the store to do to one key.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Call {
    /// Read the key; the result is the value, or `None` if the key is absent.
    Get,
    /// Set the key to this value, whatever it held before.
    Put(Value),
    /// Remove the key (a no-op if it is already absent).
    Delete,
    /// Compare-and-swap: set the key to `new` if and only if it currently
    /// holds `expected` (`None` means "only if the key is absent").
    Cas {
        /// The value the key must hold for the swap to happen; `None` = absent.
        expected: Option<Value>,
        /// The value written if the swap happens.
        new: Value,
    },
}

/// What the client learnt about the effect of its [`Call`].
///
/// Every variant except [`Outcome::Unknown`] must match the call's kind
/// (`Get` with [`Call::Get`], and so on); [`History::push`] rejects a
/// mismatch.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Outcome {
    /// A read returned this value (`None` = the key was absent).
    Get(Option<Value>),
    /// A put was acknowledged.
    Put,
    /// A delete was acknowledged.
    Delete {
        /// Whether the key existed just before the delete, if the store said
        /// so; `None` when the store does not report it (no constraint).
        existed: Option<bool>,
    },
    /// A compare-and-swap completed; `true` means it swapped.
    Cas(bool),
    /// The client never learnt the outcome (timeout, lost connection,
    /// crash). The operation may take effect at any time after its
    /// invocation, or never.
    Unknown,
}

impl Outcome {
    /// Whether this is [`Outcome::Unknown`].
    pub fn is_unknown(&self) -> bool {
        matches!(self, Outcome::Unknown)
    }
}

/// One operation of a history: a call on one key by one client, the times
/// it was invoked and completed, and its outcome.
///
/// Times are integers on any clock shared by all clients and monotonic
/// (for instance nanoseconds since the test started). An operation `a`
/// precedes `b` in real time when `a` completed strictly before `b` was
/// invoked; operations whose intervals touch (`a.complete == b.invoke`) are
/// treated as concurrent.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Operation {
    /// The client (process) that issued the operation. Only used in reports.
    pub client: u64,
    /// The key the operation acts on.
    pub key: Key,
    /// What was asked.
    pub call: Call,
    /// When the client invoked the operation.
    pub invoke: u64,
    /// When the client received the response. Invariant (checked by
    /// [`History::push`]): `None` only if `outcome` is [`Outcome::Unknown`],
    /// and otherwise `>= invoke`. For an unknown outcome this is at most the
    /// time the client gave up and is only shown in reports: the operation
    /// is treated as pending forever.
    pub complete: Option<u64>,
    /// What the client learnt.
    pub outcome: Outcome,
}

impl Operation {
    /// An operation whose outcome the client received at `complete`.
    pub fn new(
        client: u64,
        key: impl Into<Key>,
        call: Call,
        outcome: Outcome,
        invoke: u64,
        complete: u64,
    ) -> Self {
        Operation { client, key: key.into(), call, invoke, complete: Some(complete), outcome }
    }

    /// An operation invoked at `invoke` whose outcome the client never learnt.
    pub fn unknown(client: u64, key: impl Into<Key>, call: Call, invoke: u64) -> Self {
        Operation { client, key: key.into(), call, invoke, complete: None, outcome: Outcome::Unknown }
    }

    /// Whether the outcome is unknown (the operation may or may not have
    /// taken effect).
    pub fn is_unknown(&self) -> bool {
        self.outcome.is_unknown()
    }

    /// Checks the invariants documented on the fields.
    fn validate(&self, index: usize) -> Result<(), HistoryError> {
        let kinds_match = matches!(
            (&self.call, &self.outcome),
            (_, Outcome::Unknown)
                | (Call::Get, Outcome::Get(_))
                | (Call::Put(_), Outcome::Put)
                | (Call::Delete, Outcome::Delete { .. })
                | (Call::Cas { .. }, Outcome::Cas(_))
        );
        if !kinds_match {
            return Err(HistoryError::OutcomeMismatch {
                index,
                call: call_kind(&self.call),
                outcome: outcome_kind(&self.outcome),
            });
        }
        match self.complete {
            None if !self.is_unknown() => Err(HistoryError::MissingCompletion { index }),
            Some(complete) if complete < self.invoke => {
                Err(HistoryError::CompletesBeforeInvoke { index, invoke: self.invoke, complete })
            }
            _ => Ok(()),
        }
    }
}

fn call_kind(call: &Call) -> &'static str {
    match call {
        Call::Get => "get",
        Call::Put(_) => "put",
        Call::Delete => "delete",
        Call::Cas { .. } => "cas",
    }
}

fn outcome_kind(outcome: &Outcome) -> &'static str {
    match outcome {
        Outcome::Get(_) => "get",
        Outcome::Put => "put",
        Outcome::Delete { .. } => "delete",
        Outcome::Cas(_) => "cas",
        Outcome::Unknown => "unknown",
    }
}

/// Why an operation was rejected by [`History::push`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum HistoryError {
    /// The outcome's kind does not match the call's kind.
    #[error("operation {index}: a {call} call cannot have a {outcome} outcome")]
    OutcomeMismatch {
        /// Position the operation would have had in the history.
        index: usize,
        /// The call's kind.
        call: &'static str,
        /// The outcome's kind.
        outcome: &'static str,
    },
    /// A known outcome without a completion time.
    #[error("operation {index}: a known outcome needs a completion time")]
    MissingCompletion {
        /// Position the operation would have had in the history.
        index: usize,
    },
    /// The operation completed before it was invoked.
    #[error("operation {index}: completes at {complete}, before its invocation at {invoke}")]
    CompletesBeforeInvoke {
        /// Position the operation would have had in the history.
        index: usize,
        /// The invocation time.
        invoke: u64,
        /// The completion time.
        complete: u64,
    },
}

/// A history of operations on a key-value store, to be checked with
/// [`check()`](crate::check()).
///
/// Build it with [`History::push`] (which validates each operation) and
/// optionally [`History::set_initial`]; keys not given an initial value start
/// absent. The order of pushes does not matter: only the times do.
///
/// With serde, a history is (de)serialized as `{ initial: [(key, value)...],
/// operations: [...] }`, and deserializing validates every operation.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "HistoryRepr", into = "HistoryRepr")]
pub struct History {
    /// Invariant: every operation passed `Operation::validate`.
    operations: Vec<Operation>,
    /// Initial value of keys that do not start absent.
    initial: BTreeMap<Key, Value>,
}

impl History {
    /// An empty history in which every key starts absent.
    pub fn new() -> Self {
        History::default()
    }

    /// Builds a history from operations, validating each.
    pub fn from_operations(operations: impl IntoIterator<Item = Operation>) -> Result<Self, HistoryError> {
        let mut history = History::new();
        for op in operations {
            history.push(op)?;
        }
        Ok(history)
    }

    /// Appends an operation, after checking that its outcome matches its
    /// call and that its times are consistent.
    pub fn push(&mut self, operation: Operation) -> Result<&mut Self, HistoryError> {
        operation.validate(self.operations.len())?;
        self.operations.push(operation);
        Ok(self)
    }

    /// Sets the value `key` holds before any operation (`None` = absent, the
    /// default).
    pub fn set_initial(&mut self, key: impl Into<Key>, value: Option<Value>) -> &mut Self {
        let key = key.into();
        match value {
            Some(value) => self.initial.insert(key, value),
            None => self.initial.remove(&key),
        };
        self
    }

    /// The value `key` holds before any operation (`None` = absent).
    pub fn initial(&self, key: &[u8]) -> Option<&Value> {
        self.initial.get(key)
    }

    /// The operations, in the order they were pushed.
    pub fn operations(&self) -> &[Operation] {
        &self.operations
    }

    /// The number of operations.
    pub fn len(&self) -> usize {
        self.operations.len()
    }

    /// Whether the history has no operations.
    pub fn is_empty(&self) -> bool {
        self.operations.is_empty()
    }

    /// The operations grouped by key (keys in byte order), each group in
    /// push order. Unknown-outcome reads are left out: they constrain
    /// nothing and change nothing.
    pub(crate) fn by_key(&self) -> BTreeMap<&Key, Vec<&Operation>> {
        let mut groups: BTreeMap<&Key, Vec<&Operation>> = BTreeMap::new();
        for op in &self.operations {
            if op.is_unknown() && op.call == Call::Get {
                continue;
            }
            groups.entry(&op.key).or_default().push(op);
        }
        groups
    }
}

/// The serialized form of a [`History`].
#[derive(Serialize, Deserialize)]
struct HistoryRepr {
    initial: Vec<(Key, Value)>,
    operations: Vec<Operation>,
}

impl TryFrom<HistoryRepr> for History {
    type Error = HistoryError;

    fn try_from(repr: HistoryRepr) -> Result<Self, HistoryError> {
        let mut history = History::from_operations(repr.operations)?;
        for (key, value) in repr.initial {
            history.set_initial(key, Some(value));
        }
        Ok(history)
    }
}

impl From<History> for HistoryRepr {
    fn from(history: History) -> Self {
        HistoryRepr { initial: history.initial.into_iter().collect(), operations: history.operations }
    }
}

/// Writes bytes readably: `"text"` (with escapes) when at least three
/// quarters are printable ASCII, `0x…` hex otherwise.
pub(crate) struct DisplayBytes<'a>(pub &'a [u8]);

impl fmt::Display for DisplayBytes<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let printable = self.0.iter().filter(|&&b| b.is_ascii_graphic() || b == b' ').count();
        if printable * 4 >= self.0.len() * 3 {
            write!(f, "\"{}\"", self.0.escape_ascii())
        } else {
            f.write_str("0x")?;
            for b in self.0 {
                write!(f, "{b:02x}")?;
            }
            Ok(())
        }
    }
}

/// Writes an optional value: the value, or `absent`.
pub(crate) struct DisplayValue<'a>(pub Option<&'a [u8]>);

impl fmt::Display for DisplayValue<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(v) => DisplayBytes(v).fmt(f),
            None => f.write_str("absent"),
        }
    }
}

impl fmt::Display for Call {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Call::Get => f.write_str("get"),
            Call::Put(v) => write!(f, "put {}", DisplayBytes(v)),
            Call::Delete => f.write_str("delete"),
            Call::Cas { expected, new } => {
                write!(f, "cas {} -> {}", DisplayValue(expected.as_deref()), DisplayBytes(new))
            }
        }
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outcome::Get(v) => DisplayValue(v.as_deref()).fmt(f),
            Outcome::Put => f.write_str("ok"),
            Outcome::Delete { existed: None } => f.write_str("ok"),
            Outcome::Delete { existed: Some(true) } => f.write_str("ok (existed)"),
            Outcome::Delete { existed: Some(false) } => f.write_str("ok (was absent)"),
            Outcome::Cas(true) => f.write_str("swapped"),
            Outcome::Cas(false) => f.write_str("not swapped"),
            Outcome::Unknown => f.write_str("unknown"),
        }
    }
}

impl fmt::Display for Operation {
    /// One line: `client 3 key "k": put "a" -> ok [100, 250]`; an unknown
    /// outcome's interval is written open-ended, `[100, ∞)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "client {} key {}: {} -> {} {}",
            self.client,
            DisplayBytes(&self.key),
            self.call,
            self.outcome,
            DisplayInterval(self)
        )
    }
}

/// Writes an operation's interval: `[invoke, complete]`, or `[invoke, ∞)`
/// for an unknown outcome (with the time the client gave up, if known).
pub(crate) struct DisplayInterval<'a>(pub &'a Operation);

impl fmt::Display for DisplayInterval<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let op = self.0;
        match (op.is_unknown(), op.complete) {
            (false, Some(c)) => write!(f, "[{}, {}]", op.invoke, c),
            (_, Some(c)) => write!(f, "[{}, ∞) (gave up at {})", op.invoke, c),
            (_, None) => write!(f, "[{}, ∞)", op.invoke),
        }
    }
}
