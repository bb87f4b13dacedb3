//! Paper tests for elections beyond `paper.rs` (Raft paper §5.2, thesis
//! §4.2.2, §9.6): who may campaign, which messages a member listens to, and
//! which votes and pre-votes it grants. The harness (`util`) checks Election
//! Safety, Log Matching and State Machine Safety as in `paper.rs`.

mod util;

use bytes::Bytes;
use graft_core::{ConfChange, ConfChangeKind, ConfState, MemStorage, Message, MessageBody, Role};
use util::*;

fn vote(from: u64, to: u64, term: u64, pre_vote: bool, last: (u64, u64)) -> Message {
    let (last_index, last_term) = last;
    Message { from, to, term, body: MessageBody::Vote { pre_vote, last_index, last_term, transfer: false } }
}

/// The `(term, pre_vote, granted)` of every vote answer in `msgs`.
fn answers(msgs: &[Message]) -> Vec<(u64, bool, bool)> {
    msgs.iter()
        .filter_map(|m| match m.body {
            MessageBody::VoteResponse { pre_vote, granted } => Some((m.term, pre_vote, granted)),
            _ => None,
        })
        .collect()
}

fn heartbeat_msg(from: u64, to: u64, term: u64) -> Message {
    Message { from, to, term, body: MessageBody::Heartbeat { commit: 0, read_round: 0 } }
}

/// Thesis §4.2.2: a server that is not part of its own latest configuration
/// should still start elections while that configuration is uncommitted, as
/// it may still be needed. Leader 4 of {1, 2, 3, 4} removes itself and is
/// cut off before the entry leaves it; 1 fails. 2 and 3 (still on the old
/// membership) need 4's vote, which it refuses, their logs being behind; only
/// 4 can win (with 2 and 3, a majority of {1, 2, 3}). Once back, it loses
/// its leadership to their higher term, campaigns, leads, commits its own
/// removal, steps down, and 2 or 3 takes over.
#[test]
fn a_member_removed_by_an_uncommitted_change_still_campaigns() {
    let mut net = Network::new(&[1, 2, 3, 4], &plain);
    net.elect(4);
    heartbeat(&mut net, 4);
    let change = ConfChange { kind: ConfChangeKind::Remove, node: 4, context: Bytes::new() };
    let i = net.node_mut(4).propose_conf_change(change).unwrap();
    net.handle_ready(4);
    net.queue.clear();
    assert_eq!(net.log(4).last().map(|e| e.0), Some(i));
    assert!(!net.node(4).conf().voters.contains(&4), "4 is out of its latest membership");
    assert!(net.commit(4) < i, "the removal is not committed");
    // 2 and 3 lose the leader and try to elect one among themselves.
    net.isolate(4);
    net.isolate(1);
    let et = net.configs[&2].election_tick;
    for _ in 0..4 * et {
        net.tick(2);
        net.tick(3);
        net.deliver_all();
    }
    assert!(net.current_leaders() == vec![4], "2 and 3 cannot win without 4's vote");
    assert!(net.term(2) > net.term(4));
    net.recover();
    net.isolate(1);
    let mut done = false;
    for _ in 0..40 * et {
        for id in [2, 3, 4] {
            net.tick(id);
        }
        net.deliver_all();
        if [2, 3].iter().any(|&id| net.role(id) == Role::Leader) && net.commit(2) >= i && net.commit(3) >= i {
            done = true;
            break;
        }
    }
    assert!(done, "no leader among 2 and 3 with the removal committed");
    let terms_led_by_4 = net.leaders.iter().filter(|(_, l)| l.contains(&4)).count();
    assert_eq!(terms_led_by_4, 2, "4 campaigned again and led a second term");
    assert_ne!(net.role(4), Role::Leader, "4 stepped down once its removal committed");
    assert_eq!(net.node(2).conf().voters, [1, 2, 3].into());
    net.assert_election_safety();
}

/// §5.2: elections are started by followers (and candidates) that time out;
/// asking a leader to campaign changes nothing (it already leads its term),
/// and a learner never campaigns, even when asked (thesis §4.2.1).
#[test]
fn campaign_is_a_no_op_on_a_leader_and_on_a_learner() {
    let mut net = Network::new(&[1, 2, 3], &plain);
    net.add_node(4, MemStorage::new_with_conf(ConfState::default()), &plain);
    net.elect(1);
    let learner = ConfChange { kind: ConfChangeKind::AddLearner, node: 4, context: Bytes::new() };
    net.node_mut(1).propose_conf_change(learner).unwrap();
    net.deliver_all();
    heartbeat(&mut net, 1);
    assert!(net.node(4).conf().learners.contains(&4));
    let term = net.term(1);
    let mark = net.sent.len();
    net.campaign(1);
    assert_eq!((net.role(1), net.term(1)), (Role::Leader, term), "the leader keeps leading its term");
    net.campaign(4);
    assert_eq!((net.role(4), net.term(4)), (Role::Follower, term), "the learner does not campaign");
    let votes = net.sent[mark..].iter().filter(|m| matches!(m.body, MessageBody::Vote { .. })).count();
    assert_eq!(votes, 0, "no vote requested");
    for id in 1..=4 {
        assert_eq!(net.node(id).leader(), Some(1), "node {id}");
    }
}

/// A member acts only on messages addressed to it, from another member:
/// not on one for someone else (misrouted), from itself, or from id 0 (no
/// member has it). Each here would otherwise raise its term or win its vote.
#[test]
fn a_member_ignores_messages_not_meant_for_it() {
    for (from, to) in [(2, 3), (1, 1), (0, 1)] {
        let mut n = node(1, storage(&[1, 2, 3], &[], 1), &plain);
        n.step(vote(from, to, 5, false, (0, 0))).unwrap();
        n.step(heartbeat_msg(from, to, 6)).unwrap();
        let out = drain(&mut n);
        assert_eq!(n.term(), 1, "a message from {from} to {to} was acted on");
        assert_eq!(n.status().hard_state.vote, None, "a message from {from} to {to} won a vote");
        assert_eq!(n.leader(), None, "a message from {from} to {to} was taken for a leader's");
        assert!(out.all().is_empty(), "a message from {from} to {to} was answered: {:?}", out.all());
    }
}

/// Thesis §9.6: a pre-vote is granted on the same terms as a real vote,
/// except that it may ask about a later term than the voter's. One asking
/// about the voter's own term, in which it already voted for another
/// candidate or knows the leader, is refused however up to date the log.
#[test]
fn a_pre_vote_for_the_voters_own_term_follows_the_vote_rules() {
    // 1 knows 2 leads term 2.
    let mut n = node(1, storage(&[1, 2, 3], &[1], 1), &defaults);
    n.step(heartbeat_msg(2, 1, 2)).unwrap();
    drain(&mut n);
    assert_eq!((n.term(), n.leader()), (2, Some(2)));
    n.step(vote(3, 1, 2, true, (5, 1))).unwrap();
    assert_eq!(answers(&drain(&mut n).all()), vec![(2, true, false)], "a leader of term 2 is known");
    // 1 voted for 2 in term 2, no leader known yet.
    let mut n = node(1, storage(&[1, 2, 3], &[1], 1), &defaults);
    n.step(vote(2, 1, 2, false, (1, 1))).unwrap();
    assert_eq!(answers(&drain(&mut n).all()), vec![(2, false, true)]);
    n.step(vote(3, 1, 2, true, (5, 1))).unwrap();
    assert_eq!(answers(&drain(&mut n).all()), vec![(2, true, false)], "1 voted for 2 in term 2");
    // About term 3 (later than 1's), the same log wins the pre-vote.
    n.step(vote(3, 1, 3, true, (5, 1))).unwrap();
    assert_eq!(answers(&drain(&mut n).all()), vec![(3, true, true)]);
    assert_eq!((n.term(), n.status().hard_state.vote), (2, Some(2)), "a pre-vote changes nothing");
}

/// Thesis §9.6, PreVote without CheckQuorum: only pre-votes wait for the
/// leader's lease to run out. A real vote request comes from a candidate
/// whose pre-vote a majority granted (they had lost the leader), so a
/// follower that still heard from the leader recently moves to its term and
/// answers it as usual.
#[test]
fn prevote_alone_a_follower_in_the_lease_answers_real_votes() {
    let mut n = node(1, storage(&[1, 2, 3], &[1], 1), &|c| c.check_quorum = false);
    n.step(heartbeat_msg(2, 1, 2)).unwrap();
    drain(&mut n);
    assert_eq!(n.leader(), Some(2));
    n.step(vote(3, 1, 3, true, (1, 1))).unwrap();
    assert!(answers(&drain(&mut n).all()).is_empty(), "a pre-vote in the lease is ignored");
    n.step(vote(3, 1, 3, false, (1, 1))).unwrap();
    assert_eq!(answers(&drain(&mut n).all()), vec![(3, false, true)]);
    assert_eq!((n.term(), n.status().hard_state.vote), (3, Some(3)));
}
