//! A voter that is alone (the other members are learners) wins its
//! election in the step that starts it, so its first appends carry a term
//! that is not durable yet. Raft's persistence rule (§5.1: "updated on
//! stable storage before responding to RPCs", and a term a leader acts in
//! must survive its crash) means none of them may leave before the term is
//! durable; otherwise a crash in between lets the voter lead that same term
//! again with a different entry at the same index (found by mutation
//! testing: seed 955 with a planted mutant showed two leaders of term 31).

mod util;

use bytes::Bytes;
use graft_core::{ConfState, EntryPayload, MemStorage, RawNode, Storage};
use util::*;

fn lone_voter_with_a_learner() -> (MemStorage, MemStorage) {
    let conf = ConfState { voters: [1].into(), learners: [2].into() };
    (MemStorage::new_with_conf(conf.clone()), MemStorage::new_with_conf(conf))
}

#[test]
fn a_lone_voter_sends_nothing_of_its_new_term_before_the_term_is_durable() {
    let (s1, _) = lone_voter_with_a_learner();
    let mut n1 = RawNode::new(config(1, &plain), s1).unwrap();
    n1.campaign().unwrap();
    n1.propose(Bytes::from_static(b"a")).unwrap();
    let rd = n1.ready().unwrap();
    let term = rd.hard_state.map(|hs| hs.term);
    assert_eq!(term, Some(1), "the new term is in this Ready");
    assert!(rd.messages.is_empty(), "sent before the term is durable: {:?}", rd.messages);
    assert!(
        rd.persisted_messages.iter().any(|m| m.to == 2 && m.term == 1 && is_append(m)),
        "the append to the learner waits for the persist: {:?}",
        rd.persisted_messages
    );
}

/// The whole failure: the voter crashes after its Ready is handed out but
/// before persisting, restarts, wins the same term again and proposes
/// another command; the learner must never apply a different entry than
/// the leader at the same index.
#[test]
fn a_lone_voter_crashing_before_its_term_is_durable_cannot_fork_the_log() {
    let (s1, s2) = lone_voter_with_a_learner();
    let mut n1 = RawNode::new(config(1, &plain), s1.clone()).unwrap();
    let mut n2 = RawNode::new(config(2, &plain), s2).unwrap();
    n1.campaign().unwrap();
    n1.propose(Bytes::from_static(b"a")).unwrap();
    let rd = n1.ready().unwrap();
    // What the application may send before persisting reaches the learner;
    // then the voter crashes without persisting anything.
    for m in rd.messages {
        n2.step(m).unwrap();
    }
    let mut applied2 = Vec::new();
    let pump2 = |n2: &mut RawNode<MemStorage>, applied2: &mut Vec<graft_core::Entry>| {
        let mut out = Vec::new();
        while n2.has_ready() {
            let rd = n2.ready().unwrap();
            n2.storage_mut().append(&rd.entries).unwrap();
            if let Some(hs) = rd.hard_state {
                n2.storage_mut().set_hard_state(hs);
            }
            applied2.extend(rd.committed_entries);
            out.extend(rd.messages.into_iter().chain(rd.persisted_messages));
            n2.advance().unwrap();
        }
        out
    };
    pump2(&mut n2, &mut applied2);
    let mut n1 = RawNode::new(config(1, &plain), s1).unwrap();
    n1.campaign().unwrap();
    n1.propose(Bytes::from_static(b"b")).unwrap();
    let mut applied1 = Vec::new();
    for _ in 0..5 {
        while n1.has_ready() {
            let rd = n1.ready().unwrap();
            n1.storage_mut().append(&rd.entries).unwrap();
            if let Some(hs) = rd.hard_state {
                n1.storage_mut().set_hard_state(hs);
            }
            applied1.extend(rd.committed_entries);
            let msgs: Vec<_> = rd.messages.into_iter().chain(rd.persisted_messages).collect();
            n1.advance().unwrap();
            for m in msgs.into_iter().filter(|m| m.to == 2) {
                n2.step(m).unwrap();
            }
        }
        for m in pump2(&mut n2, &mut applied2) {
            n1.step(m).unwrap();
        }
        n1.tick().unwrap();
    }
    let show = |v: &[graft_core::Entry]| -> Vec<(u64, u64, String)> {
        v.iter()
            .map(|e| {
                let what = match &e.payload {
                    EntryPayload::Command(d) => String::from_utf8_lossy(d).into_owned(),
                    p => format!("{p:?}"),
                };
                (e.index, e.term, what)
            })
            .collect()
    };
    assert!(applied1.iter().any(|e| matches!(&e.payload, EntryPayload::Command(d) if d.as_ref() == b"b")));
    assert_eq!(show(&applied2), show(&applied1), "the learner applies what the leader applies");
    assert_eq!(n2.storage().last_index().unwrap(), n1.storage().last_index().unwrap());
}
