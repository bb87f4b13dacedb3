//! Paper tests for the leader's side of replication beyond `paper.rs` (Raft
//! paper §5.3, thesis §10.2): when an acknowledgement commits, how a
//! follower's progress moves between probing and replicating, and what an
//! idle leader sends. The harness (`util`) checks Log Matching and State
//! Machine Safety as in `paper.rs`.

mod util;

use graft_core::progress::ProgressState;
use graft_core::{AppendResponse, EntryPayload, Message, MessageBody, NodeId, ProgressStatus};
use util::*;

fn progress(net: &Network, leader: NodeId, id: NodeId) -> ProgressStatus {
    net.node(leader).status().progress.iter().find(|(p, _)| *p == id).map(|(_, p)| *p).unwrap()
}

fn accepted(from: NodeId, to: NodeId, term: u64, index: u64) -> Message {
    Message { from, to, term, body: MessageBody::AppendResponse(AppendResponse::Accepted { index }) }
}

/// §5.3: "A log entry is committed once the leader that created the entry
/// has replicated it on a majority of the servers". The acknowledgement
/// that makes the majority commits the entry then and there: the leader's
/// next `Ready` already hands it out for applying.
#[test]
fn the_acknowledgement_that_makes_a_majority_commits_at_once() {
    let mut net = Network::new(&[1, 2, 3], &plain);
    net.elect(1);
    heartbeat(&mut net, 1);
    let i = net.propose(1, "x");
    net.deliver_while(|m| m.to == 2);
    let ack = net.queue.iter().position(|m| m.from == 2 && m.to == 1).unwrap();
    let ack = net.queue.remove(ack).unwrap();
    assert_eq!(ack.body, MessageBody::AppendResponse(AppendResponse::Accepted { index: i }));
    net.node_mut(1).step(ack).unwrap();
    assert_eq!(net.commit(1), i, "committed on the majority's acknowledgement");
    let rd = net.node_mut(1).ready().unwrap();
    let applied: Vec<u64> = rd.committed_entries.iter().map(|e| e.index).collect();
    assert_eq!(applied, vec![i]);
    assert!(matches!(&rd.committed_entries[0].payload, EntryPayload::Command(d) if d.as_ref() == b"x"));
}

/// Thesis §10.2.1 (etcd's progress states): a follower the leader lost
/// track of is probed, one append at a time, until one is accepted. An
/// accepted probe that carried nothing new (the leader's news of its commit
/// index) still shows where the follower's log ends: replication resumes.
#[test]
fn an_accepted_probe_resumes_replication_even_with_nothing_new() {
    let mut net = Network::new(&[1, 2, 3, 4, 5], &plain);
    net.elect(1);
    heartbeat(&mut net, 1);
    let i = net.propose(1, "x");
    // 2 appends x and acknowledges it; 2 of 5 do not commit it.
    net.deliver_while(|m| m.to == 2 || m.from == 2);
    assert_eq!(progress(&net, 1, 2).matched, i);
    assert!(net.commit(1) < i);
    net.node_mut(1).report_unreachable(2);
    assert_eq!(progress(&net, 1, 2).state, ProgressState::Probe);
    // 3 and 4 acknowledge: x commits, and the news goes to 2 as an empty probe.
    net.deliver_while(|m| m.to != 2);
    assert_eq!(net.commit(1), i);
    let probe = net.queue.iter().find(|m| m.to == 2).cloned().expect("news of the commit for 2");
    assert_eq!(append_entries(&probe).map(<[_]>::len), Some(0));
    net.deliver_all();
    let p = progress(&net, 1, 2);
    assert_eq!((p.state, p.matched, p.next), (ProgressState::Replicate, i, i + 1));
    assert_eq!(net.commit(2), i);
}

/// Thesis §10.2.1: while probing, the leader waits for the answer to its
/// probe. An acknowledgement older than what it knows the follower has (a
/// late or duplicated message) answers nothing: the follower stays in
/// probing and nothing more is sent to it.
#[test]
fn an_old_acknowledgement_does_not_end_probing() {
    let mut net = Network::new(&[1, 2, 3], &plain);
    net.elect(1);
    net.propose(1, "a");
    net.deliver_all();
    heartbeat(&mut net, 1);
    let matched = progress(&net, 1, 2).matched;
    assert!(matched >= 2);
    net.node_mut(1).report_unreachable(2);
    // The probe carries "b"; it is held.
    net.propose(1, "b");
    let probes = net.queue.iter().filter(|m| m.to == 2 && is_append(m)).count();
    assert_eq!(probes, 1);
    let mark = net.sent.len();
    let term = net.term(1);
    net.step(accepted(2, 1, term, matched - 1));
    let p = progress(&net, 1, 2);
    assert_eq!((p.state, p.matched), (ProgressState::Probe, matched), "still probing");
    let resent = net.sent[mark..].iter().filter(|m| m.to == 2 && is_append(m)).count();
    assert_eq!(resent, 0, "nothing more sent to 2");
    // The probe's own answer resumes replication.
    net.deliver_all();
    assert_eq!(progress(&net, 1, 2).state, ProgressState::Replicate);
    assert_eq!(net.log(2), net.log(1));
}

/// §5.2 / §5.3: an idle leader (every follower has its whole log and knows
/// the commit index) sends heartbeats, and nothing else: no append answers
/// a heartbeat's acknowledgement, and no empty append goes out with a
/// `Ready` that has nothing new.
#[test]
fn an_idle_leader_sends_only_heartbeats() {
    let mut net = Network::new(&[1, 2, 3], &plain);
    net.elect(1);
    net.propose(1, "a");
    net.deliver_all();
    heartbeat(&mut net, 1);
    for id in [2, 3] {
        assert_eq!(net.log(id), net.log(1));
        assert_eq!(net.commit(id), net.commit(1));
    }
    let mark = net.sent.len();
    for _ in 0..5 {
        heartbeat(&mut net, 1);
    }
    let from_leader: Vec<&Message> = net.sent[mark..].iter().filter(|m| m.from == 1).collect();
    assert_eq!(from_leader.len(), 10, "one heartbeat per follower and interval: {from_leader:?}");
    assert!(from_leader.iter().all(|m| is_heartbeat(m)), "{from_leader:?}");
}
