//! Paper tests for log compaction (Raft paper §7, thesis chapter 5): a
//! follower missing entries the leader compacted away gets the leader's
//! snapshot, and the leader's bookkeeping around the hand-off (the
//! application reports how the transfer went) decides where replication
//! resumes. The harness (`util`) checks Log Matching and State Machine
//! Safety after every delivery round, as in `paper.rs`.

mod util;

use graft_core::progress::ProgressState;
use graft_core::{
    AppendResponse, ConfState, Message, MessageBody, NodeId, ProgressStatus, Role, SnapshotMeta, Storage,
};
use util::*;

fn is_snapshot(m: &Message) -> bool {
    matches!(m.body, MessageBody::Snapshot { .. })
}

fn progress(net: &Network, leader: NodeId, id: NodeId) -> ProgressStatus {
    net.node(leader).status().progress.iter().find(|(p, _)| *p == id).map(|(_, p)| *p).unwrap()
}

/// The first append or snapshot `from` sent `to` at or after `net.sent[mark]`.
fn first_catch_up(net: &Network, mark: usize, from: NodeId, to: NodeId) -> Option<Message> {
    net.sent[mark..]
        .iter()
        .find(|m| m.from == from && m.to == to && (is_append(m) || is_snapshot(m)))
        .cloned()
}

/// Leader 1 of {1, 2, 3} commits ten commands with 2 while 3 is cut off,
/// then compacts its log through the commit index; 3 comes back and the
/// leader's next contact offers it the snapshot, which is held in the
/// queue. Returns the network and the snapshot's index.
fn follower_needing_a_snapshot() -> (Network, u64) {
    let mut net = Network::new(&[1, 2, 3], &plain);
    net.isolate(3);
    net.elect(1);
    for i in 0..10 {
        net.propose(1, &format!("c{i}"));
    }
    net.deliver_all();
    let snap = net.commit(1);
    assert!(snap >= 11, "the no-op and ten commands committed");
    net.node_mut(1).storage_mut().compact(snap, ConfState::with_voters([1, 2, 3])).unwrap();
    net.recover();
    heartbeat_holding(&mut net, 1, |m| !is_snapshot(m));
    let offered: Vec<&Message> = net.queue.iter().filter(|m| is_snapshot(m)).collect();
    assert_eq!(offered.len(), 1, "one snapshot offered to 3: {offered:?}");
    assert_eq!(offered[0].to, 3);
    assert_eq!(progress(&net, 1, 3).state, ProgressState::Snapshot { index: snap });
    (net, snap)
}

/// §7: "the leader must occasionally send snapshots to followers that lag
/// behind" because "the leader has already discarded the next log entry
/// that it needs to send". The follower installs it, discards its log, and
/// replication continues from the snapshot's end.
#[test]
fn a_follower_behind_the_compacted_log_catches_up_from_the_snapshot() {
    let (mut net, snap) = follower_needing_a_snapshot();
    net.deliver_all();
    net.node_mut(1).report_snapshot(3, true);
    net.propose(1, "after");
    net.deliver_all();
    heartbeat(&mut net, 1);
    assert_eq!(net.node(3).status().first_index, snap + 1, "3's log continues after the snapshot");
    assert_eq!(net.log(3), net.log(1));
    assert_eq!(net.commit(3), net.commit(1));
    assert_eq!(net.applied_commands(3), ["after"], "3 applies only what came after the snapshot");
    assert_eq!(progress(&net, 1, 3).state, ProgressState::Replicate);
    assert_eq!(net.role(3), Role::Follower);
}

/// The application reports the snapshot delivered, but the follower's answer
/// was lost: the leader probes just after the snapshot (the follower has
/// it), not from its old match, which would need the compacted entries
/// and so a second, needless snapshot.
#[test]
fn after_a_reported_snapshot_probing_resumes_just_after_it() {
    let (mut net, snap) = follower_needing_a_snapshot();
    let offer = net.queue.iter().position(is_snapshot).unwrap();
    let offer = net.queue.remove(offer).unwrap();
    net.step(offer);
    assert_eq!(net.node(3).status().first_index, snap + 1, "3 installed the snapshot");
    net.discard(|m| m.from == 3 && m.to == 1);
    net.node_mut(1).report_snapshot(3, true);
    let p = progress(&net, 1, 3);
    assert_eq!((p.state, p.next), (ProgressState::Probe, snap + 1));
    let mark = net.sent.len();
    heartbeat(&mut net, 1);
    match first_catch_up(&net, mark, 1, 3).map(|m| m.body) {
        Some(MessageBody::Append { prev_index, .. }) => assert_eq!(prev_index, snap),
        other => panic!("expected a probe just after the snapshot, got {other:?}"),
    }
    let snapshots = net.sent[mark..].iter().filter(|m| is_snapshot(m)).count();
    assert_eq!(snapshots, 0, "no second snapshot");
    assert_eq!(net.log(3), net.log(1));
    assert_eq!(progress(&net, 1, 3).state, ProgressState::Replicate);
}

/// The application reports the transfer failed (the stream broke): the
/// follower may hold nothing of it, so the leader forgets the snapshot's
/// index and probes from the follower's real match, which, being compacted,
/// means offering the snapshot again at the next contact, not an append
/// that assumes the follower has it.
#[test]
fn after_a_failed_snapshot_the_leader_offers_it_again() {
    let (mut net, snap) = follower_needing_a_snapshot();
    net.discard(is_snapshot);
    let matched = progress(&net, 1, 3).matched;
    net.node_mut(1).report_snapshot(3, false);
    let p = progress(&net, 1, 3);
    assert_eq!((p.state, p.next), (ProgressState::Probe, matched + 1));
    let mark = net.sent.len();
    heartbeat_holding(&mut net, 1, |m| !is_snapshot(m));
    match first_catch_up(&net, mark, 1, 3) {
        Some(m) if is_snapshot(&m) => {}
        other => panic!("expected the snapshot offered again, got {other:?}"),
    }
    net.deliver_all();
    net.node_mut(1).report_snapshot(3, true);
    heartbeat(&mut net, 1);
    assert_eq!(net.node(3).status().first_index, snap + 1);
    assert_eq!(net.log(3), net.log(1));
}

/// A report about a follower the leader is not sending a snapshot to, or
/// made to a member that does not lead, changes nothing.
#[test]
fn snapshot_reports_outside_a_transfer_change_nothing() {
    let mut net = Network::new(&[1, 2, 3], &plain);
    net.elect(1);
    heartbeat(&mut net, 1);
    let before = progress(&net, 1, 2);
    assert_eq!(before.state, ProgressState::Replicate);
    net.node_mut(1).report_snapshot(2, false);
    net.node_mut(1).report_snapshot(2, true);
    let after = progress(&net, 1, 2);
    assert_eq!((after.state, after.next, after.matched), (before.state, before.next, before.matched));
    net.node_mut(2).report_snapshot(3, false);
    assert_eq!(net.role(2), Role::Follower);
}

/// §7: a follower that accepts a snapshot "discards its entire log; it is
/// all superseded by the snapshot", and the log now ends at the snapshot's
/// last included entry, whose term it knows at once, before the application
/// has persisted the snapshot (messages may be stepped in between): the
/// leader's next append, right after the snapshot, is accepted.
#[test]
fn a_snapshot_not_yet_persisted_already_ends_the_log() {
    let mut n = node(3, storage(&[1, 2, 3], &[1], 1), &plain);
    let meta = SnapshotMeta { index: 5, term: 2, conf: ConfState::with_voters([1, 2, 3]) };
    n.step(Message { from: 1, to: 3, term: 2, body: MessageBody::Snapshot { meta } }).unwrap();
    let s = n.status();
    assert_eq!((s.first_index, s.last_index, n.log_term(5)), (6, 5, Some(2)), "the snapshot ends the log");
    let entries = vec![ent(6, 2)];
    let append = MessageBody::Append { prev_index: 5, prev_term: 2, entries, commit: 6 };
    n.step(Message { from: 1, to: 3, term: 2, body: append }).unwrap();
    assert_eq!(log_of(&n), vec![(6, 2)], "the log is readable, from just after the snapshot");
    let answers: Vec<AppendResponse> = drain(&mut n)
        .all()
        .into_iter()
        .filter_map(|m| match m.body {
            MessageBody::AppendResponse(r) => Some(r),
            _ => None,
        })
        .collect();
    assert_eq!(answers, vec![AppendResponse::Accepted { index: 5 }, AppendResponse::Accepted { index: 6 }]);
    assert_eq!(n.storage().last_index().unwrap(), 6);
    assert_eq!(n.status().hard_state.commit, 6);
}

/// Leader 1 of {1, 2, 3} commits ten commands while 3 is cut off (3 has
/// only the no-op), compacts its log, and offers 3 the snapshot (held in
/// the queue). Returns the network, the snapshot's index, and 3's match.
fn follower_with_a_match_needing_a_snapshot() -> (Network, u64, u64) {
    let mut net = Network::new(&[1, 2, 3], &plain);
    net.elect(1);
    heartbeat(&mut net, 1);
    let matched = progress(&net, 1, 3).matched;
    assert!(matched >= 1);
    net.isolate(3);
    for i in 0..10 {
        net.propose(1, &format!("c{i}"));
    }
    net.deliver_all();
    let snap = net.commit(1);
    net.node_mut(1).storage_mut().compact(snap, ConfState::with_voters([1, 2, 3])).unwrap();
    net.recover();
    heartbeat_holding(&mut net, 1, |m| !is_snapshot(m));
    assert_eq!(progress(&net, 1, 3).state, ProgressState::Snapshot { index: snap });
    assert_eq!(net.queue.iter().filter(|m| is_snapshot(m)).count(), 1);
    (net, snap, matched)
}

/// Thesis §5.4.2 (etcd's progress states): once the follower answers that
/// it installed the snapshot, the leader replicates to it from just after
/// the snapshot, whether or not the application has reported the transfer.
#[test]
fn the_followers_acceptance_of_the_snapshot_resumes_replication() {
    let (mut net, snap) = follower_needing_a_snapshot();
    net.deliver_all();
    let p = progress(&net, 1, 3);
    assert_eq!((p.state, p.matched, p.next), (ProgressState::Replicate, snap, snap + 1));
    net.propose(1, "after");
    net.deliver_all();
    assert_eq!(net.log(3), net.log(1));
    assert_eq!(net.applied_commands(3), ["after"]);
}

/// While a snapshot is on its way, an old acknowledgement from the follower
/// (from before it needed the snapshot, arriving late) says nothing about
/// it: the leader keeps waiting for the snapshot's outcome and sends
/// nothing more, in particular not the same snapshot again.
#[test]
fn an_old_acknowledgement_does_not_interrupt_a_snapshot_transfer() {
    let (mut net, snap, matched) = follower_with_a_match_needing_a_snapshot();
    let mark = net.sent.len();
    let term = net.term(1);
    let late = AppendResponse::Accepted { index: matched };
    net.step(Message { from: 3, to: 1, term, body: MessageBody::AppendResponse(late) });
    assert_eq!(progress(&net, 1, 3).state, ProgressState::Snapshot { index: snap });
    assert!(net.sent[mark..].iter().all(|m| m.to != 3), "sent to 3: {:?}", &net.sent[mark..]);
}

/// While a snapshot is on its way, heartbeats go on, and the follower's
/// answers (it still lacks the entries) prompt nothing: one snapshot is in
/// flight at a time.
#[test]
fn heartbeat_answers_during_a_snapshot_transfer_send_nothing_more() {
    let (mut net, snap, _) = follower_with_a_match_needing_a_snapshot();
    heartbeat_holding(&mut net, 1, |m| !is_snapshot(m));
    assert!(net.delivered.iter().any(|m| m.from == 3 && is_heartbeat_resp(m)));
    assert_eq!(net.queue.iter().filter(|m| is_snapshot(m)).count(), 1, "still one snapshot offered");
    assert_eq!(progress(&net, 1, 3).state, ProgressState::Snapshot { index: snap });
}

/// The leader compacted further while its snapshot was on its way: the
/// follower's acceptance of the older snapshot moves it on at once, and the
/// leader offers the newer one (the entries between are gone).
#[test]
fn a_follower_that_installed_an_older_snapshot_is_offered_the_newer_one() {
    let (mut net, snap, _) = follower_with_a_match_needing_a_snapshot();
    let offer = net.queue.iter().position(is_snapshot).unwrap();
    let offer = net.queue.remove(offer).unwrap();
    net.step(offer);
    assert_eq!(net.node(3).status().first_index, snap + 1, "3 installed the snapshot");
    // 3's answer is held while 1 and 2 commit more and 1 compacts again.
    for i in 0..5 {
        net.propose(1, &format!("d{i}"));
    }
    net.deliver_while(|m| m.from != 3);
    let snap2 = net.commit(1);
    assert!(snap2 > snap);
    net.node_mut(1).storage_mut().compact(snap2, ConfState::with_voters([1, 2, 3])).unwrap();
    net.deliver_while(|m| !is_snapshot(m));
    let offered: Vec<u64> = net
        .queue
        .iter()
        .filter_map(|m| match &m.body {
            MessageBody::Snapshot { meta } if m.to == 3 => Some(meta.index),
            _ => None,
        })
        .collect();
    assert_eq!(offered, vec![snap2], "the newer snapshot offered once 3 answered");
    assert_eq!(progress(&net, 1, 3).state, ProgressState::Snapshot { index: snap2 });
    net.deliver_all();
    assert_eq!(net.node(3).status().first_index, snap2 + 1);
}
