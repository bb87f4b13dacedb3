//! The address book: where each member listens, as the log says it when the
//! membership entries are appended, not when they are applied.
//!
//! The configuration itself takes effect when its entry is appended (see
//! docs/design.md), so a member must be able to reach the members of that
//! configuration at once. The state machine records addresses too, but only
//! as of its applied index, which after a restart can lag the log by
//! seconds (it is fsynced every few seconds; the log covers the rest). A
//! member that took its peers from there could not reach a member added
//! after it, and told others (status, joiners) an empty address for it.

use std::collections::BTreeMap;

use graft_core::{Entry, EntryPayload, NodeId};

use crate::command::MemberContext;
use crate::storage::MemberRecord;

/// Addresses by member id. Invariant: no address is empty; each is the
/// newest one seen in log order (a later entry overrides an earlier one).
#[derive(Clone, Debug, Default)]
pub struct AddressBook {
    addrs: BTreeMap<NodeId, String>,
}

/// The address a membership entry carries, if any.
pub fn entry_addr(e: &Entry) -> Option<(NodeId, String)> {
    let EntryPayload::Config(c) = &e.payload else { return None };
    let ctx = MemberContext::of(&c.change)?;
    (!ctx.addr.is_empty()).then_some((c.change.node, ctx.addr))
}

impl AddressBook {
    /// Records `addr` for `id` (an empty address is ignored).
    pub fn insert(&mut self, id: NodeId, addr: &str) {
        if !addr.is_empty() {
            self.addrs.insert(id, addr.to_owned());
        }
    }

    /// Takes the addresses of a state machine's member records (at start,
    /// and when a snapshot replaces the state machine).
    pub fn learn_members(&mut self, members: &BTreeMap<NodeId, MemberRecord>) {
        for (id, m) in members {
            self.insert(*id, &m.addr);
        }
    }

    /// Takes the addresses carried by membership entries, in log order.
    /// Returns whether any was learnt.
    pub fn learn_entries(&mut self, entries: &[Entry]) -> bool {
        let mut learnt = false;
        for (id, addr) in entries.iter().filter_map(entry_addr) {
            learnt = true;
            self.addrs.insert(id, addr);
        }
        learnt
    }

    /// Where `id` listens, if known.
    pub fn get(&self, id: NodeId) -> Option<&str> {
        self.addrs.get(&id).map(String::as_str)
    }

    /// Every known member and address.
    pub fn iter(&self) -> impl Iterator<Item = (NodeId, &str)> {
        self.addrs.iter().map(|(id, a)| (*id, a.as_str()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use graft_core::{ConfChange, ConfChangeKind, ConfState, ConfigEntry};

    fn add(index: u64, node: NodeId, addr: &str) -> Entry {
        let ctx = postcard::to_stdvec(&MemberContext { addr: addr.into(), promote: true }).unwrap();
        Entry {
            term: 1,
            index,
            payload: EntryPayload::Config(ConfigEntry {
                change: ConfChange { kind: ConfChangeKind::AddLearner, node, context: Bytes::from(ctx) },
                conf: ConfState::default(),
            }),
        }
    }

    #[test]
    fn the_newest_address_wins_and_empty_ones_are_ignored() {
        let mut book = AddressBook::default();
        book.insert(1, "a:1");
        book.insert(2, "");
        assert!(book.learn_entries(&[add(5, 6, "b:6"), add(6, 1, "c:1"), add(7, 6, "")]));
        assert_eq!(book.get(1), Some("c:1"));
        assert_eq!(book.get(6), Some("b:6"));
        assert_eq!(book.get(2), None);
        assert!(!book.learn_entries(&[Entry { term: 1, index: 8, payload: EntryPayload::Noop }]));
    }
}
