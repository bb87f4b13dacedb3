//! Unit tests named after the rules of the Raft paper ("In Search of an
//! Understandable Consensus Algorithm", Ongaro & Ousterhout, 2014) and of
//! Ongaro's thesis ("Consensus: Bridging Theory and Practice", 2014), in the
//! spirit of etcd's `raft_paper_test.go`: each test sets a cluster up, acts,
//! and checks the rule's observable consequence.

//!
//! Besides each test's own checks, the harness (`util`) asserts after every
//! delivery round: durable terms and commit indexes never go back and a vote
//! never changes within a term; Log Matching; Leader Completeness (a new
//! leader holds every applied entry); State Machine Safety (every member
//! applies the same entry at each index, each index once and in order).

mod util;

use bytes::Bytes;
use graft_core::progress::ProgressState;
use graft_core::{
    AppendResponse, ConfChange, ConfChangeError, ConfChangeKind, Error, Message, MessageBody, ReadState,
    Role, Storage,
};
use util::*;

fn vote_req(from: u64, to: u64, term: u64, last_index: u64, last_term: u64) -> Message {
    Message {
        from,
        to,
        term,
        body: MessageBody::Vote { pre_vote: false, last_index, last_term, transfer: false },
    }
}

/// The `granted` flags of the vote responses in `msgs`.
fn vote_answers(msgs: &[Message]) -> Vec<bool> {
    msgs.iter()
        .filter_map(|m| match m.body {
            MessageBody::VoteResponse { pre_vote: false, granted } => Some(granted),
            _ => None,
        })
        .collect()
}

// ----- §5.2 leader election -----

/// §5.2, Election Safety (Figure 3): "at most one leader can be elected in a
/// given term". Three members campaign in the same term at once.
#[test]
fn election_safety_three_concurrent_candidates() {
    let mut net = Network::new(&[1, 2, 3], &plain);
    for id in [1, 2, 3] {
        net.node_mut(id).campaign().unwrap();
    }
    net.deliver_all();
    // Each voted for itself: nobody can win term 1.
    assert!(net.current_leaders().is_empty());
    assert!(net.ids().iter().all(|&id| net.term(id) == 1 && net.role(id) != Role::Leader));
    // Randomized timeouts break the tie eventually.
    for _ in 0..100 {
        net.tick_all();
        net.assert_election_safety();
        if !net.current_leaders().is_empty() {
            break;
        }
    }
    assert_eq!(net.current_leaders().len(), 1);
    net.assert_election_safety();
}

/// §5.2, Election Safety with five members and a split vote: two candidates
/// each gather two of five votes, nobody wins the term; the next election
/// (randomized timeouts) elects exactly one leader.
#[test]
fn election_safety_five_members_split_vote() {
    let mut net = Network::new(&[1, 2, 3, 4, 5], &plain);
    // 1 can reach only 3, 2 only 4; 5 hears from neither.
    for (a, b) in [(1, 2), (1, 4), (1, 5), (2, 3), (2, 5)] {
        net.cut_link(a, b);
    }
    net.node_mut(1).campaign().unwrap();
    net.node_mut(2).campaign().unwrap();
    net.deliver_all();
    assert_eq!(net.role(1), Role::Candidate);
    assert_eq!(net.role(2), Role::Candidate);
    assert_eq!(net.node(3).status().hard_state.vote, Some(1));
    assert_eq!(net.node(4).status().hard_state.vote, Some(2));
    assert!(net.current_leaders().is_empty(), "a split vote elects nobody");
    net.recover();
    for _ in 0..200 {
        net.tick_all();
        net.assert_election_safety();
        if !net.current_leaders().is_empty() {
            break;
        }
    }
    assert_eq!(net.current_leaders().len(), 1);
    let leader = net.current_leaders()[0];
    assert!(net.term(leader) >= 2);
    net.assert_election_safety();
}

/// §5.2, Election Safety under many timings: members sharing election
/// timeouts campaign in the same tick, over many seeds; every term has at
/// most one leader, and a leader emerges.
#[test]
fn election_safety_many_seeds_with_concurrent_timeouts() {
    for seed in 0..30u64 {
        for size in [3u64, 5] {
            let ids: Vec<u64> = (1..=size).collect();
            let tweak = move |c: &mut graft_core::Config| {
                plain(c);
                // Odd and even members share timeouts: several candidates at once.
                c.seed = seed * 1000 + c.id % 2;
            };
            let mut net = Network::new(&ids, &tweak);
            let mut elected = false;
            for t in 0..300 {
                net.tick_all();
                net.assert_election_safety();
                if !net.current_leaders().is_empty() {
                    elected = true;
                    // Cut the leader off for a while now and then, forcing more terms.
                    if t % 40 == 0 {
                        let l = net.current_leaders()[0];
                        net.isolate(l);
                    }
                }
                if t % 40 == 25 {
                    net.recover();
                }
            }
            assert!(elected, "seed {seed}, {size} members: no leader");
            assert!(net.leaders.len() > 1, "seed {seed}: expected several terms with leaders");
            net.assert_election_safety();
        }
    }
}

/// §5.2: "If a follower receives no communication over a period of time
/// called the election timeout, then it assumes there is no viable leader
/// and begins an election ... it increments its current term and transitions
/// to candidate state"; "election timeouts are chosen randomly from a fixed
/// interval". A follower campaigns after between `election_tick` and
/// `2 * election_tick - 1` ticks, and members with different seeds pick
/// different timeouts.
#[test]
fn follower_campaigns_after_randomized_election_timeout() {
    let mut timeouts = std::collections::BTreeSet::new();
    for seed in 0..40u64 {
        let mut n = node(1, storage(&[1, 2, 3], &[], 0), &|c| {
            plain(c);
            c.seed = seed;
        });
        let et = n.raft().config().election_tick;
        let mut fired = None;
        for t in 1..=2 * et {
            n.tick().unwrap();
            if n.role() == Role::Candidate {
                fired = Some(t);
                break;
            }
        }
        let t = fired.expect("campaigned within 2 * election_tick");
        assert!((et..2 * et).contains(&t), "seed {seed}: campaigned after {t} ticks");
        assert_eq!(n.term(), 1);
        let out = drain(&mut n);
        assert_eq!(
            out.persisted_messages.iter().filter(|m| matches!(m.body, MessageBody::Vote { .. })).count(),
            2
        );
        timeouts.insert(t);
    }
    assert!(timeouts.len() > 3, "timeouts are randomized: {timeouts:?}");
}

/// §5.2: "Leaders send periodic heartbeats ... to all followers in order to
/// maintain their authority"; "A server remains in follower state as long as
/// it receives valid RPCs from a leader". No election happens while the
/// leader is up, however long the cluster runs.
#[test]
fn heartbeats_keep_followers_from_campaigning() {
    for tweak in [plain as fn(&mut graft_core::Config), defaults] {
        let mut net = Network::new(&[1, 2, 3, 4, 5], &tweak);
        net.elect(1);
        let term = net.term(1);
        for _ in 0..20 * election_tick(&net) {
            net.tick_all();
        }
        for id in 1..=5 {
            assert_eq!(net.term(id), term, "node {id}");
            assert_eq!(net.node(id).leader(), Some(1), "node {id}");
        }
        let hb = net.sent_count(1, 2, is_heartbeat);
        let et = election_tick(&net) as usize;
        assert!(hb >= 20 * et / 2 - 1, "{hb} heartbeats");
    }
}

/// §5.2: a follower that grants a vote resets its election timer
/// ("granting vote to candidate" is communication that defers its own campaign).
#[test]
fn granting_a_vote_resets_the_election_timer() {
    let mut n = node(1, storage(&[1, 2, 3], &[], 1), &plain);
    let timeout = n.raft().randomized_election_timeout();
    for _ in 0..timeout - 1 {
        n.tick().unwrap();
    }
    n.step(vote_req(2, 1, 2, 0, 0)).unwrap();
    assert_eq!(vote_answers(&drain(&mut n).all()), vec![true]);
    let new_timeout = n.raft().randomized_election_timeout();
    for _ in 0..new_timeout - 1 {
        n.tick().unwrap();
    }
    assert_eq!(n.role(), Role::Follower, "the timer restarted at the vote");
    assert_eq!(n.term(), 2);
}

/// §5.2: "If the AppendEntries RPC is from another server claiming to be
/// leader and the leader's term is at least as large as the candidate's
/// current term, then the candidate recognizes the leader as legitimate and
/// returns to follower state. If the term in the RPC is smaller than the
/// candidate's current term, then the candidate rejects the RPC and continues
/// in candidate state."
#[test]
fn candidate_steps_down_on_append_from_leader_of_its_term_or_later() {
    let append = |_| MessageBody::Append { prev_index: 0, prev_term: 0, entries: vec![], commit: 0 };
    let heartbeat = |_| MessageBody::Heartbeat { commit: 0, read_round: 0 };
    type Body = fn(u64) -> MessageBody;
    let bodies: [(&str, Body); 2] = [("append", append), ("heartbeat", heartbeat)];
    for (name, body) in bodies {
        // (message term, expected role, expected term, expected leader)
        for (mterm, role, term, leader) in
            [(1, Role::Follower, 1, Some(2)), (2, Role::Follower, 2, Some(2)), (0, Role::Candidate, 1, None)]
        {
            let mut n = node(1, storage(&[1, 2, 3], &[], 0), &plain);
            n.campaign().unwrap();
            drain(&mut n);
            assert_eq!((n.role(), n.term()), (Role::Candidate, 1));
            n.step(Message { from: 2, to: 1, term: mterm, body: body(mterm) }).unwrap();
            drain(&mut n);
            assert_eq!(n.role(), role, "{name} in term {mterm}");
            assert_eq!(n.term(), term, "{name} in term {mterm}");
            assert_eq!(n.leader(), leader, "{name} in term {mterm}");
            if role == Role::Follower {
                assert_eq!(n.status().hard_state.vote, (mterm == 1).then_some(1), "vote kept in its term");
            }
        }
    }
}

// ----- §5.2 / §5.4.1 voting rules -----

/// §5.2: "each server will vote for at most one candidate in a given term,
/// on a first-come-first-served basis". A repeated request from the same
/// candidate is granted again (its answer may have been lost).
#[test]
fn vote_at_most_once_per_term() {
    let mut n = node(1, storage(&[1, 2, 3], &[], 1), &plain);
    n.step(vote_req(2, 1, 2, 0, 0)).unwrap();
    let out = drain(&mut n);
    assert_eq!(vote_answers(&out.persisted_messages), vec![true]);
    assert_eq!(out.hard_state.unwrap().vote, Some(2));

    n.step(vote_req(3, 1, 2, 5, 2)).unwrap();
    let out = drain(&mut n);
    assert_eq!(vote_answers(&out.all()), vec![false], "a second candidate in the same term");
    assert_eq!(n.status().hard_state.vote, Some(2));

    n.step(vote_req(2, 1, 2, 0, 0)).unwrap();
    assert_eq!(vote_answers(&drain(&mut n).all()), vec![true], "same candidate again");
    // A new term frees the vote.
    n.step(vote_req(3, 1, 3, 0, 0)).unwrap();
    assert_eq!(vote_answers(&drain(&mut n).all()), vec![true]);
    assert_eq!(n.status().hard_state.vote, Some(3));
}

/// §5.2: a candidate votes for itself, so it refuses other candidates of its term.
#[test]
fn candidate_votes_for_itself_and_refuses_others_in_its_term() {
    let mut n = node(1, storage(&[1, 2, 3], &[], 0), &plain);
    n.campaign().unwrap();
    let out = drain(&mut n);
    assert_eq!(out.hard_state.unwrap().vote, Some(1));
    assert_eq!(n.role(), Role::Candidate);
    n.step(vote_req(2, 1, 1, 10, 1)).unwrap();
    assert_eq!(vote_answers(&drain(&mut n).all()), vec![false]);
    assert_eq!(n.status().hard_state.vote, Some(1));
}

/// §5.4.1: "the voter denies its vote if its own log is more up-to-date than
/// that of the candidate ... If the logs have last entries with different
/// terms, then the log with the later term is more up-to-date. If the logs
/// end with the same term, then whichever log is longer is more up-to-date."
#[test]
fn vote_only_for_candidate_with_log_at_least_as_up_to_date() {
    // (voter's log terms, candidate's last index, candidate's last term, granted)
    let cases: &[(&[u64], u64, u64, bool)] = &[
        // voter log ends at (2, 1)
        (&[1, 1], 1, 1, false), // same last term, shorter
        (&[1, 1], 2, 1, true),  // same last term, same length
        (&[1, 1], 3, 1, true),  // same last term, longer
        (&[1, 1], 1, 2, true),  // later last term, even if shorter
        (&[1, 1], 0, 0, false), // empty log
        // voter log ends at (2, 2)
        (&[1, 2], 3, 1, false), // earlier last term, even if longer
        (&[1, 2], 1, 2, false), // same last term, shorter
        (&[1, 2], 2, 2, true),
        (&[1, 2], 9, 2, true),
        (&[1, 2], 1, 3, true),
        // empty voter log: anyone is at least as up to date
        (&[], 0, 0, true),
        (&[], 1, 1, true),
    ];
    for (i, &(log, last_index, last_term, granted)) in cases.iter().enumerate() {
        let mut n = node(1, storage(&[1, 2, 3], log, 2), &plain);
        n.step(vote_req(2, 1, 3, last_index, last_term)).unwrap();
        let out = drain(&mut n);
        assert_eq!(
            vote_answers(&out.all()),
            vec![granted],
            "case {i}: {log:?} vs ({last_index}, {last_term})"
        );
        // The higher term is adopted either way; the vote only if granted.
        assert_eq!(n.term(), 3, "case {i}");
        assert_eq!(n.status().hard_state.vote, granted.then_some(2), "case {i}");
    }
}

/// §5.1: "If a server receives a request with a stale term number, it rejects
/// the request." A member never grants a vote to a candidate of a lower term
/// and keeps its term and vote.
#[test]
fn follower_with_higher_term_rejects_vote() {
    let mut n = node(1, storage(&[1, 2, 3], &[1], 5), &plain);
    n.step(vote_req(2, 1, 3, 100, 4)).unwrap();
    let out = drain(&mut n);
    assert!(!vote_answers(&out.all()).contains(&true));
    assert_eq!(n.term(), 5);
    assert_eq!(n.status().hard_state.vote, None);
    // A stale pre-vote probe gets an explicit refusal carrying the newer term.
    let mut probe = vote_req(2, 1, 4, 100, 4);
    probe.body = MessageBody::Vote { pre_vote: true, last_index: 100, last_term: 4, transfer: false };
    n.step(probe).unwrap();
    let out = drain(&mut n).all();
    assert!(matches!(
        out[..],
        [Message { term: 5, body: MessageBody::VoteResponse { pre_vote: true, granted: false }, .. }]
    ));
    assert_eq!((n.term(), n.status().hard_state.vote), (5, None));
}

/// §5.4.1: "a candidate must contact a majority of the cluster in order to
/// be elected, which means that every committed entry must be present in at
/// least one of those servers." A member that missed committed entries cannot
/// be elected; one that has them can.
#[test]
fn election_restriction_stale_member_cannot_win() {
    let mut net = Network::new(&[1, 2, 3], &plain);
    net.elect(1);
    net.isolate(3);
    net.propose(1, "a");
    net.deliver_all();
    assert_eq!(net.commit(1), 2);
    net.recover();
    net.isolate(1);
    for _ in 0..3 {
        net.campaign(3);
        assert_ne!(net.role(3), Role::Leader, "3 lacks the committed entry 2");
    }
    net.elect(2);
    heartbeat(&mut net, 2);
    assert_eq!(net.applied_commands(3), ["a"]);
    net.assert_election_safety();
}

// ----- Figure 2: persistent state -----

/// Figure 2: "Persistent state on all servers (Updated on stable storage
/// before responding to RPCs)". The vote is in the `Ready`'s hard state and
/// the answer among the messages sent only after it is durable.
#[test]
fn vote_is_persisted_before_the_answer_is_sent() {
    let mut n = node(1, storage(&[1, 2, 3], &[], 1), &plain);
    n.step(vote_req(2, 1, 2, 0, 0)).unwrap();
    let rd = n.ready().unwrap();
    assert_eq!(rd.hard_state.map(|h| (h.term, h.vote)), Some((2, Some(2))));
    assert!(vote_answers(&rd.messages).is_empty(), "no answer before the vote is durable");
    assert_eq!(vote_answers(&rd.persisted_messages), vec![true]);
    n.storage_mut().set_hard_state(rd.hard_state.unwrap());
    n.advance().unwrap();
}

/// Figure 2 / §5.2: a candidate's vote for itself and its new term are
/// durable before its RequestVote RPCs go out.
#[test]
fn candidate_persists_term_and_self_vote_before_requesting_votes() {
    let mut n = node(1, storage(&[1, 2, 3], &[], 0), &plain);
    n.campaign().unwrap();
    let rd = n.ready().unwrap();
    assert_eq!(rd.hard_state.map(|h| (h.term, h.vote)), Some((1, Some(1))));
    assert!(rd.messages.is_empty());
    let to: Vec<u64> = rd
        .persisted_messages
        .iter()
        .filter(|m| matches!(m.body, MessageBody::Vote { pre_vote: false, .. }))
        .map(|m| m.to)
        .collect();
    assert_eq!(to, vec![2, 3]);
    n.storage_mut().set_hard_state(rd.hard_state.unwrap());
    n.advance().unwrap();
}

/// Figure 2 / §5.2: currentTerm and votedFor are persistent, so a member
/// that restarts from its durable state still cannot vote twice in a term.
#[test]
fn restarted_member_keeps_term_and_vote_and_cannot_vote_twice() {
    let mut net = Network::new(&[1, 2, 3], &plain);
    // 2 hears 1's request only after 3 has voted.
    net.cut_link(1, 2);
    net.elect(1);
    assert_eq!(net.node(3).status().hard_state.vote, Some(1));
    let before = net.node(3).storage().hard_state();
    assert_eq!((before.term, before.vote), (1, Some(1)));

    net.restart(3);
    let hs = net.node(3).status().hard_state;
    assert_eq!((hs.term, hs.vote), (1, Some(1)), "term and vote survive the restart");
    assert_eq!(net.role(3), Role::Follower);
    // 2 campaigns in the same term 1 (it is still in term 0 and is not told
    // of term 1): its request for term 1 must be refused.
    net.recover();
    net.cut_link(1, 2);
    net.cut_link(1, 3);
    net.step(vote_req(2, 3, 1, 10, 1));
    let answers: Vec<bool> = net
        .queue
        .iter()
        .filter(|m| m.from == 3 && m.to == 2)
        .filter_map(|m| match m.body {
            MessageBody::VoteResponse { granted, .. } => Some(granted),
            _ => None,
        })
        .collect();
    assert_eq!(answers, vec![false]);
    assert_eq!(net.node(3).status().hard_state.vote, Some(1));
}

/// A restarting member's state machine resumes from the log: one behind the
/// log's base (its missing entries were compacted away) or past the log's
/// end cannot, and the core refuses to start rather than claim an applied
/// index the state machine does not hold (issue 11's missing invariant).
#[test]
fn a_state_machine_outside_the_log_is_refused_at_start() {
    use graft_core::{ConfState, Config, ConfigError, Entry, EntryPayload, MemStorage, RawNode};
    let mut storage = MemStorage::new_with_conf(ConfState::with_voters([1]));
    let entries: Vec<Entry> =
        (1..=10).map(|index| Entry { term: 1, index, payload: EntryPayload::Noop }).collect();
    storage.append(&entries).unwrap();
    storage.compact(4, ConfState::with_voters([1])).unwrap();
    let start = |applied: u64| {
        let mut cfg = Config::new(1);
        cfg.applied = applied;
        RawNode::new(cfg, storage.clone())
    };
    for applied in [4, 7, 10] {
        assert!(start(applied).is_ok(), "applied {applied} lies within the log 4..=10");
    }
    for applied in [0, 3, 11] {
        match start(applied) {
            Err(Error::Config(ConfigError::AppliedOutsideLog {
                applied: a,
                first_applicable: 4,
                last: 10,
            })) => {
                assert_eq!(a, applied)
            }
            other => panic!("applied {applied}: expected a refusal, got {:?}", other.map(|_| ())),
        }
    }
}

// ----- §5.3 log replication, §5.4 safety -----

fn append_msg(
    from: u64,
    to: u64,
    term: u64,
    prev: (u64, u64),
    entries: Vec<graft_core::Entry>,
    commit: u64,
) -> Message {
    Message {
        from,
        to,
        term,
        body: MessageBody::Append { prev_index: prev.0, prev_term: prev.1, entries, commit },
    }
}

fn append_answers(msgs: &[Message]) -> Vec<AppendResponse> {
    msgs.iter()
        .filter_map(|m| match m.body {
            MessageBody::AppendResponse(r) => Some(r),
            _ => None,
        })
        .collect()
}

fn terms_log(terms: &[u64]) -> Vec<(u64, u64)> {
    terms.iter().enumerate().map(|(i, &t)| (i as u64 + 1, t)).collect()
}

/// §5.3, Figure 7: "the leader must find the latest log entry where the two
/// logs agree, delete any entries in the follower's log after that point,
/// and send the follower all of the leader's entries after that point". The
/// leader of term 8 brings each follower (a)-(f) of Figure 7 to its log;
/// with the rejection hints (§5.3, "the follower can include the term of the
/// conflicting entry and the first index it stores for that term") one
/// rejection per follower suffices, even for (f), behind by several terms.
#[test]
fn leader_syncs_follower_logs_of_figure_7() {
    let leader_log: &[u64] = &[1, 1, 1, 4, 4, 5, 5, 6, 6, 6];
    let followers: &[(&str, &[u64])] = &[
        ("a", &[1, 1, 1, 4, 4, 5, 5, 6, 6]),
        ("b", &[1, 1, 1, 4]),
        ("c", &[1, 1, 1, 4, 4, 5, 5, 6, 6, 6, 6]),
        ("d", &[1, 1, 1, 4, 4, 5, 5, 6, 6, 6, 7, 7]),
        ("e", &[1, 1, 1, 4, 4, 4, 4]),
        ("f", &[1, 1, 1, 2, 2, 2, 3, 3, 3, 3, 3]),
    ];
    for &(name, flog) in followers {
        let mut net = Network::from_storages(
            vec![
                (1, storage(&[1, 2, 3], leader_log, 7)),
                (2, storage(&[1, 2, 3], flog, 7)),
                (3, storage(&[1, 2, 3], leader_log, 7)),
            ],
            &plain,
        );
        net.elect(1);
        assert_eq!(net.term(1), 8);
        let mut want = terms_log(leader_log);
        want.push((11, 8)); // the leader's no-op
        assert_eq!(net.log(1), want, "({name}) the leader's log is untouched");
        assert_eq!(net.log(2), want, "({name}) follower brought to the leader's log");
        let rejections = net
            .delivered
            .iter()
            .filter(|m| m.from == 2 && m.to == 1)
            .filter(|m| matches!(m.body, MessageBody::AppendResponse(AppendResponse::Rejected { .. })))
            .count();
        assert!(rejections <= 1, "({name}) {rejections} rejections to find the match point");
        assert_eq!(net.commit(1), 11, "({name}) the no-op commits");
        // The follower learns the commit index at the latest with the next heartbeat.
        heartbeat(&mut net, 1);
        assert_eq!(net.commit(2), 11, "({name})");
    }
}

/// §5.3, consistency check: "If the follower does not find an entry in its
/// log with the same index and term, then it refuses the new entries." The
/// refusal carries hints: the largest index at or before `prev_index` whose
/// term is at most `prev_term`, and that term.
#[test]
fn append_with_mismatching_prev_is_rejected_with_hints() {
    // (follower log, prev_index, prev_term, expected rejection hint (index, term))
    type Case = (&'static [u64], u64, u64, Option<(u64, u64)>);
    let cases: &[Case] = &[
        (&[1, 2, 2], 3, 2, None),            // matches
        (&[1, 2, 2], 3, 3, Some((3, 2))),    // same index, other term
        (&[1, 2, 2], 5, 2, Some((3, 2))),    // beyond the end
        (&[1, 2, 2], 6, 4, Some((3, 2))),    // beyond the end, later term
        (&[1, 3, 3, 3], 4, 2, Some((1, 1))), // a whole term skipped at once
        (&[2, 2, 2], 2, 1, Some((0, 0))),    // nothing matches
    ];
    for (i, &(flog, prev_index, prev_term, hint)) in cases.iter().enumerate() {
        let mut n = node(2, storage(&[1, 2, 3], flog, 4), &plain);
        n.step(append_msg(1, 2, 5, (prev_index, prev_term), vec![ent(prev_index + 1, 5)], 0)).unwrap();
        let out = drain(&mut n);
        let answers = append_answers(&out.all());
        let want = match hint {
            None => AppendResponse::Accepted { index: prev_index + 1 },
            Some((hint_index, hint_term)) => {
                AppendResponse::Rejected { rejected: prev_index, hint_index, hint_term }
            }
        };
        assert_eq!(answers, vec![want], "case {i}");
        if hint.is_some() {
            assert_eq!(log_of(&n), terms_log(flog), "case {i}: a refused append changes nothing");
        }
        assert_eq!(n.leader(), Some(1), "case {i}");
    }
}

/// §5.3: "If an existing entry conflicts with a new one (same index but
/// different terms), delete the existing entry and all that follow it";
/// "Append any new entries not already in the log". Entries that match are
/// kept, and an append that brings nothing new (stale, duplicated or
/// reordered) never truncates the log.
#[test]
fn follower_truncates_conflicting_entries_and_keeps_matching_ones() {
    let mut n = node(2, storage(&[1, 2, 3], &[1, 1, 1, 2, 2], 2), &plain);
    // Conflict at 4: 4 and 5 go, 4 and 5 of term 3 come.
    n.step(append_msg(1, 2, 3, (3, 1), vec![ent(4, 3), ent(5, 3)], 0)).unwrap();
    let out = drain(&mut n);
    assert_eq!(append_answers(&out.persisted_messages), vec![AppendResponse::Accepted { index: 5 }]);
    assert_eq!(out.entries.iter().map(|e| (e.index, e.term)).collect::<Vec<_>>(), vec![(4, 3), (5, 3)]);
    assert_eq!(log_of(&n), terms_log(&[1, 1, 1, 3, 3]));
    assert_eq!(n.storage().last_index().unwrap(), 5);

    // A new entry after matching ones: only the new one is written.
    n.step(append_msg(1, 2, 3, (3, 1), vec![ent(4, 3), ent(5, 3), ent(6, 3)], 0)).unwrap();
    let out = drain(&mut n);
    assert_eq!(out.entries.iter().map(|e| (e.index, e.term)).collect::<Vec<_>>(), vec![(6, 3)]);
    assert_eq!(append_answers(&out.all()), vec![AppendResponse::Accepted { index: 6 }]);

    // A stale, shorter duplicate: nothing is truncated; the answer covers
    // only what that append proved.
    n.step(append_msg(1, 2, 3, (3, 1), vec![ent(4, 3)], 0)).unwrap();
    let out = drain(&mut n);
    assert!(out.entries.is_empty());
    assert_eq!(append_answers(&out.all()), vec![AppendResponse::Accepted { index: 4 }]);
    assert_eq!(log_of(&n), terms_log(&[1, 1, 1, 3, 3, 3]));

    // An append from a deposed leader (term 2) is refused and changes nothing.
    n.step(append_msg(3, 2, 2, (3, 1), vec![ent(4, 2)], 0)).unwrap();
    let out = drain(&mut n);
    assert!(matches!(append_answers(&out.all())[..], [AppendResponse::Rejected { .. }]));
    assert!(out.all().iter().all(|m| m.term == 3), "the answer tells the stale leader the new term");
    assert_eq!(log_of(&n), terms_log(&[1, 1, 1, 3, 3, 3]));
    assert_eq!(n.leader(), Some(1));
}

/// §5.3, Leader Append-Only (Figure 3): "a leader never overwrites or deletes
/// entries in its log; it only appends new entries". The leader of Figure 7
/// meets a follower with a longer, conflicting log ((d)), a forged append of
/// its own term, and a stale one: its log only ever grows.
#[test]
fn leader_append_only() {
    let leader_log: &[u64] = &[1, 1, 1, 4, 4, 5, 5, 6, 6, 6];
    let mut net = Network::from_storages(
        vec![
            (1, storage(&[1, 2, 3], leader_log, 7)),
            (2, storage(&[1, 2, 3], &[1, 1, 1, 4, 4, 5, 5, 6, 6, 6, 7, 7], 7)),
            (3, storage(&[1, 2, 3], leader_log, 7)),
        ],
        &plain,
    );
    net.node_mut(1).campaign().unwrap();
    net.handle_all();
    let mut before = net.log(1);
    let check = |net: &Network, before: &mut Vec<(u64, u64)>| {
        let now = net.log(1);
        assert!(now.starts_with(before), "leader log went from {before:?} to {now:?}");
        *before = now;
    };
    while let Some(m) = net.queue.pop_front() {
        net.step(m);
        check(&net, &mut before);
    }
    assert_eq!(net.role(1), Role::Leader);
    // A forged append of the leader's own term with conflicting entries, and
    // one from a stale term: both ignored by the leader's log.
    net.step(append_msg(2, 1, 8, (3, 1), vec![ent(4, 8), ent(5, 8)], 0));
    check(&net, &mut before);
    net.step(append_msg(3, 1, 7, (3, 1), vec![ent(4, 7)], 0));
    check(&net, &mut before);
    net.propose(1, "x");
    net.deliver_all();
    check(&net, &mut before);
    assert_eq!(net.log(1).len(), 12);
    assert_eq!(net.log(2), net.log(1));
}

/// Builds Figure 8 (c): S1 leads term 4 after S5 (term 3) crashed; S1
/// replicated its term-2 entry at index 2 to S3 and S4, so it is on a
/// majority (S1, S2, S3, S4), but S1's own no-op (index 3, term 4) reached
/// nobody yet: those appends are held in the queue.
fn figure_8_c() -> Network {
    let hs = |term, vote| graft_core::HardState { term, vote, commit: 1 };
    let mk = |terms: &[u64], vote| {
        let mut s = storage(&[1, 2, 3, 4, 5], terms, 3);
        s.set_hard_state(hs(3, vote));
        s
    };
    let stores = vec![
        (1, mk(&[1, 2], None)),
        (2, mk(&[1, 2], None)),
        (3, mk(&[1], Some(5))),
        (4, mk(&[1], Some(5))),
        (5, mk(&[1, 3], Some(5))),
    ];
    let mut net = Network::from_storages(stores, &|c| {
        plain(c);
        c.max_entries_per_msg = 1;
    });
    net.cut_link(1, 5); // S5 is down while S1 leads.
    net.node_mut(1).campaign().unwrap();
    let mut refused_once = std::collections::BTreeSet::new();
    net.deliver_while(|m| !is_append(m));
    assert_eq!((net.role(1), net.term(1)), (Role::Leader, 4));
    // S3 and S4 lack index 2: they refuse the first append (prev (2, 2)), then
    // get index 2 alone. Every append carrying the term-4 no-op to a member
    // that would accept it is held.
    net.deliver_while(|m| {
        let carries_4 = append_entries(m).is_some_and(|es| es.iter().any(|e| e.term == 4));
        !carries_4 || ((m.to == 3 || m.to == 4) && refused_once.insert(m.to))
    });
    for id in [2, 3, 4] {
        assert_eq!(net.log(id), vec![(1, 1), (2, 2)], "S{id}");
    }
    assert_eq!(net.log(1), vec![(1, 1), (2, 2), (3, 4)]);
    let st = net.node(1).status();
    let matched: Vec<u64> =
        st.progress.iter().filter(|(id, _)| [3, 4].contains(id)).map(|(_, p)| p.matched).collect();
    assert_eq!(matched, vec![2, 2], "the leader knows index 2 is on a majority");
    net
}

/// §5.4.2, Figure 8 (c)-(d): "Raft never commits log entries from previous
/// terms by counting replicas." S1 (term 4) knows its term-2 entry is on a
/// majority, yet does not commit it; rightly so, since S5 can still be
/// elected (by S2, S3, S4) and overwrite it with its term-3 entry.
#[test]
fn leader_does_not_commit_previous_term_entry_by_counting_replicas_figure_8() {
    let mut net = figure_8_c();
    assert_eq!(net.commit(1), 1, "index 2 (term 2) must not be committed by counting replicas");
    assert!(net.applied[&1].iter().all(|e| e.index < 2));
    // (d) S1 crashes; S5 comes back and is elected by S2, S3 and S4.
    net.isolate(1);
    net.cut.retain(|&(a, b)| a == 1 || b == 1);
    for _ in 0..3 {
        if net.role(5) == Role::Leader {
            break;
        }
        net.campaign(5);
    }
    assert_eq!(net.role(5), Role::Leader);
    heartbeat(&mut net, 5);
    let t5 = net.term(5);
    for id in [2, 3, 4, 5] {
        assert_eq!(net.log(id), vec![(1, 1), (2, 3), (3, t5)], "S{id}: index 2 overwritten by term 3");
        let at2 = net.applied[&id].iter().find(|e| e.index == 2).map(|e| e.term);
        assert_eq!(at2, Some(3), "S{id}");
    }
    net.assert_applied_consistent();
    net.assert_election_safety();
}

/// §5.4.2, Figure 8 (e): "once an entry from the current term has been
/// committed ..., all prior entries are committed indirectly because of the
/// Log Matching Property." When S1's no-op reaches a majority, indices 2 and
/// 3 commit together, and S5 can no longer be elected.
#[test]
fn leader_commits_previous_term_entries_with_an_entry_of_its_term_figure_8() {
    let mut net = figure_8_c();
    assert_eq!(net.commit(1), 1);
    // The no-op reaches S2 and S3 (a majority with S1), not S4.
    net.discard(|m| m.to == 4);
    net.deliver_while(|m| m.to != 4);
    net.discard(|m| m.to == 4);
    assert_eq!(net.commit(1), 3);
    let applied: Vec<(u64, u64)> = net.applied[&1].iter().map(|e| (e.index, e.term)).collect();
    assert_eq!(applied, vec![(1, 1), (2, 2), (3, 4)]);
    // S1 crashes: S5 (last term 3) cannot win against S2 and S3 (last term 4).
    net.isolate(1);
    net.cut.retain(|&(a, b)| a == 1 || b == 1);
    for _ in 0..5 {
        net.campaign(5);
        assert_ne!(net.role(5), Role::Leader);
    }
    for id in [2, 3] {
        assert_eq!(net.log(id), vec![(1, 1), (2, 2), (3, 4)], "S{id}");
    }
    net.assert_election_safety();
}

/// §5.3: "When the entry has been safely replicated, the leader applies the
/// entry to its state machine"; "The leader keeps track of the highest index
/// it knows to be committed, and it includes that index in future
/// AppendEntries RPCs (including heartbeats) so that the other servers
/// eventually find out. Once a follower learns that a log entry is
/// committed, it applies the entry to its local state machine (in log
/// order)." Each entry is applied once, in order, also across a restart.
#[test]
fn commit_propagates_to_followers_and_entries_apply_in_order_once() {
    let mut net = Network::new(&[1, 2, 3], &plain);
    net.elect(1);
    heartbeat(&mut net, 1);
    for id in [1, 2, 3] {
        assert_eq!(net.commit(id), 1, "node {id}");
    }
    for d in ["a", "b", "c"] {
        net.propose(1, d);
    }
    // Not applied before it is replicated on a majority.
    assert!(net.applied_commands(1).is_empty());
    net.deliver_all();
    assert_eq!(net.commit(1), 4);
    assert_eq!(net.applied_commands(1), ["a", "b", "c"]);
    heartbeat(&mut net, 1);
    for id in [1, 2, 3] {
        assert_eq!(net.commit(id), 4, "node {id}");
        assert_eq!(net.applied_commands(id), ["a", "b", "c"], "node {id}");
    }
    // A follower restarts, keeping its applied index: nothing is applied twice.
    net.restart(2);
    net.propose(1, "d");
    net.deliver_all();
    heartbeat(&mut net, 1);
    for id in [1, 2, 3] {
        assert_eq!(net.applied_commands(id), ["a", "b", "c", "d"], "node {id}");
        assert_eq!(net.applied[&id].iter().map(|e| e.index).collect::<Vec<_>>(), vec![1, 2, 3, 4, 5]);
    }
    net.assert_applied_consistent();
}

/// §5.3: "If leaderCommit > commitIndex, set commitIndex = min(leaderCommit,
/// index of last new entry)": a follower never commits entries beyond what
/// the append proved matches the leader, even if its log is longer.
#[test]
fn follower_commits_only_up_to_last_new_entry() {
    // Entries 3..5 of term 2 were left by a deposed leader.
    let mut n = node(2, storage(&[1, 2, 3], &[1, 1, 2, 2, 2], 2), &plain);
    n.step(append_msg(1, 2, 3, (1, 1), vec![], 9)).unwrap();
    let first = drain(&mut n);
    assert_eq!(n.status().hard_state.commit, 1, "only index 1 is known to match");
    assert_eq!(first.committed.iter().map(|e| (e.index, e.term)).collect::<Vec<_>>(), vec![(1, 1)]);
    n.step(append_msg(1, 2, 3, (2, 1), vec![ent(3, 3)], 9)).unwrap();
    let out = drain(&mut n);
    assert_eq!(n.status().hard_state.commit, 3);
    assert_eq!(log_of(&n), terms_log(&[1, 1, 3]));
    assert_eq!(out.committed.iter().map(|e| (e.index, e.term)).collect::<Vec<_>>(), vec![(2, 1), (3, 3)]);
}

/// Thesis §10.2.1: the leader may send its entries before writing them to
/// its own disk, but then counts itself toward the majority only once they
/// are durable. With one follower's acknowledgement and its own write still
/// pending, the leader of three does not commit; once its write is done, it does.
#[test]
fn leader_counts_its_own_entry_only_once_durable() {
    let mut net = Network::new(&[1, 2, 3], &plain);
    net.elect(1);
    heartbeat(&mut net, 1);
    let i = net.node_mut(1).propose("a".into()).unwrap();
    let rd = net.node_mut(1).ready().unwrap();
    assert_eq!(rd.entries.iter().map(|e| e.index).collect::<Vec<_>>(), vec![i]);
    let to2 =
        rd.messages.iter().find(|m| m.to == 2 && is_append(m)).cloned().expect("sent before persisting");
    net.step(to2);
    let ack: Vec<Message> = net.queue.drain(..).filter(|m| m.from == 2 && m.to == 1).collect();
    assert_eq!(ack.len(), 1);
    net.node_mut(1).step(ack[0].clone()).unwrap();
    assert!(net.commit(1) < i, "1 durable copy (2's) of 3 is no majority");
    // The leader's write completes.
    net.node_mut(1).storage_mut().append(&rd.entries).unwrap();
    if let Some(hs) = rd.hard_state {
        net.node_mut(1).storage_mut().set_hard_state(hs);
    }
    net.node_mut(1).advance().unwrap();
    assert_eq!(net.commit(1), i);
    net.handle_ready(1);
    assert_eq!(net.applied_commands(1), ["a"]);
}

/// §5.4.2 and §8: "Raft handles this by having each leader commit a blank
/// no-op entry into the log at the start of its term." A new leader appends
/// a no-op of its term at once and commits it (with every earlier entry).
#[test]
fn new_leader_commits_a_noop_of_its_term() {
    // Inherited, uncommitted entries of term 1.
    let stores = (1..=3).map(|id| (id, storage(&[1, 2, 3], &[1, 1], 1))).collect();
    let mut net = Network::from_storages(stores, &plain);
    net.node_mut(2).campaign().unwrap();
    net.deliver_while(|m| !is_append(m));
    assert_eq!(net.role(2), Role::Leader);
    let last = entries_of(net.node(2)).pop().unwrap();
    assert_eq!((last.index, last.term, last.payload), (3, 2, graft_core::EntryPayload::Noop));
    net.deliver_all();
    assert_eq!(net.role(2), Role::Leader);
    heartbeat(&mut net, 2);
    for id in [1, 2, 3] {
        assert_eq!(net.commit(id), 3, "node {id}");
        let applied: Vec<(u64, u64)> = net.applied[&id].iter().map(|e| (e.index, e.term)).collect();
        assert_eq!(applied, vec![(1, 1), (2, 1), (3, 2)], "node {id}");
    }
}

// ----- thesis §9.6 PreVote, §6.2 CheckQuorum -----

fn election_tick(net: &Network) -> u32 {
    net.configs[&1].election_tick
}

/// Thesis §9.6: "the PreVote algorithm ... a candidate would first ask other
/// servers whether its log was up-to-date enough to get their vote. Only if
/// the candidate believed it could get votes from a majority of the cluster
/// would it increment its term and start a normal election." A member cut
/// off from the others keeps its term however long it ticks alone, and when
/// it returns it does not depose the healthy leader.
#[test]
fn prevote_partitioned_member_does_not_raise_term_or_disrupt_leader() {
    let mut net = Network::new(&[1, 2, 3], &defaults);
    net.elect(1);
    heartbeat(&mut net, 1);
    let term = net.term(1);
    net.isolate(3);
    let mark = net.sent.len();
    for _ in 0..6 * election_tick(&net) {
        net.tick_all();
    }
    assert_eq!(net.term(3), term, "the isolated member did not raise its term");
    assert_eq!(net.role(3), Role::PreCandidate);
    assert_eq!(net.node(3).storage().hard_state().term, term);
    let probes: Vec<&Message> = net.sent[mark..].iter().filter(|m| m.from == 3).collect();
    assert!(!probes.is_empty());
    assert!(probes.iter().all(|m| matches!(m.body, MessageBody::Vote { pre_vote: true, .. })));
    // Meanwhile the majority went on.
    net.propose(1, "x");
    net.deliver_all();
    net.recover();
    for _ in 0..4 * election_tick(&net) {
        net.tick_all();
    }
    for id in [1, 2, 3] {
        assert_eq!(net.term(id), term, "node {id}");
        assert_eq!(net.node(id).leader(), Some(1), "node {id}");
    }
    assert_eq!(net.role(1), Role::Leader);
    assert_eq!(net.applied_commands(3), ["x"], "the returning member catches up");
    net.assert_election_safety();
}

/// The problem PreVote solves (thesis §9.6): without it, the member cut off
/// raises its term on every timeout, and its return deposes the leader.
#[test]
fn without_prevote_partitioned_member_raises_term_and_disrupts_leader() {
    let mut net = Network::new(&[1, 2, 3], &plain);
    net.elect(1);
    heartbeat(&mut net, 1);
    let term = net.term(1);
    net.isolate(3);
    for _ in 0..6 * election_tick(&net) {
        net.tick_all();
    }
    assert!(net.term(3) > term + 1);
    net.recover();
    heartbeat(&mut net, 1);
    assert_ne!(net.role(1), Role::Leader, "the stale leader learns of the higher term");
    assert!(net.term(1) > term);
    net.assert_election_safety();
}

/// Runs the "returning member with an up-to-date log" scenario: 3 is cut off
/// (no writes happen meanwhile, so its log stays as up to date as anyone's),
/// ticks alone, and on its return its probe reaches the others before any
/// heartbeat reaches it. Returns (term before, network).
fn returning_up_to_date_member(tweak: &dyn Fn(&mut graft_core::Config)) -> (u64, Network) {
    let mut net = Network::new(&[1, 2, 3], tweak);
    net.elect(1);
    heartbeat(&mut net, 1);
    let term = net.term(1);
    net.isolate(3);
    for _ in 0..4 * election_tick(&net) {
        net.tick_all();
    }
    assert_eq!(net.term(3), term);
    assert_eq!(net.role(3), Role::PreCandidate);
    net.recover();
    // 3's next probe goes out first (its timer is the one that fires).
    let mark = net.sent.len();
    while !net.sent[mark..].iter().any(|m| m.from == 3) {
        net.tick(3);
    }
    net.deliver_all();
    for _ in 0..2 * election_tick(&net) {
        net.tick_all();
    }
    (term, net)
}

/// Thesis §9.6 with PreVote and CheckQuorum (graft's defaults): a returning
/// member whose log is as up to date as the leader's still cannot depose
/// it: "the other servers will have been receiving regular heartbeats from
/// the leader".
#[test]
fn prevote_with_check_quorum_up_to_date_returning_member_does_not_disrupt() {
    let (term, net) = returning_up_to_date_member(&defaults);
    assert_eq!(net.role(1), Role::Leader);
    for id in [1, 2, 3] {
        assert_eq!(net.term(id), term, "node {id}");
        assert_eq!(net.node(id).leader(), Some(1), "node {id}");
    }
    net.assert_election_safety();
}

/// Thesis §9.6 defines PreVote with the liveness condition built in: voters
/// grant a pre-vote only "if the candidate's log is sufficiently up-to-date,
/// and the voters have not received heartbeats from a valid leader for at
/// least a baseline election timeout"; `Config::pre_vote` documents that
/// with it "a member that was cut off cannot depose a healthy leader when it
/// returns". With PreVote on and CheckQuorum off, a returning member whose
/// log is up to date is nevertheless granted pre-votes by members that hear
/// from the leader, and deposes it.
#[test]

fn prevote_alone_up_to_date_returning_member_does_not_disrupt() {
    let (term, net) = returning_up_to_date_member(&|c| c.check_quorum = false);
    assert_eq!(net.role(1), Role::Leader, "the healthy leader was deposed");
    for id in [1, 2, 3] {
        assert_eq!(net.term(id), term, "node {id}");
    }
    net.assert_election_safety();
}

/// Thesis §6.2: "a leader steps down if an election timeout elapses without
/// a successful round of heartbeats to a majority of its cluster". A leader
/// cut off from the majority steps down (without raising its term) within
/// two election timeouts; a connected leader never does.
#[test]
fn check_quorum_leader_cut_off_from_majority_steps_down() {
    let mut net = Network::new(&[1, 2, 3], &defaults);
    net.elect(1);
    let term = net.term(1);
    let et = election_tick(&net);
    for _ in 0..5 * et {
        net.tick_all();
        assert_eq!(net.role(1), Role::Leader, "a connected leader keeps leading");
    }
    net.isolate(1);
    let mut stepped_down_after = None;
    for t in 1..=2 * et {
        net.node_mut(1).tick().unwrap();
        if net.role(1) != Role::Leader {
            // The application hears of it at once, though nothing else changed.
            assert!(net.node(1).has_ready(), "the step-down is reported");
            let rd = net.node_mut(1).ready().unwrap();
            assert_eq!(rd.soft_state.map(|s| (s.role, s.leader)), Some((Role::Follower, None)));
            stepped_down_after = Some(t);
            break;
        }
        net.handle_ready(1);
    }
    let t = stepped_down_after.expect("the cut-off leader stepped down within two election timeouts");
    assert!(t >= 1);
    assert_eq!(net.role(1), Role::Follower);
    assert_eq!(net.node(1).leader(), None);
    assert_eq!(net.term(1), term, "stepping down does not change the term");
    assert!(matches!(net.node_mut(1).propose("late".into()), Err(Error::NotLeader { leader: None })));
}

/// Thesis §4.2.3 / §9.6: "if a server receives a RequestVote request within
/// the minimum election timeout of hearing from a current leader, it does not
/// update its term or grant its vote". Once the timeout passes without the
/// leader, it votes again.
#[test]
fn check_quorum_follower_in_lease_ignores_vote_requests() {
    let mut net = Network::new(&[1, 2, 3], &|c| c.pre_vote = false);
    net.elect(1);
    heartbeat(&mut net, 1);
    let term = net.term(1);
    net.cut_link(1, 2);
    net.cut_link(1, 3);
    net.step(vote_req(3, 2, term + 1, 100, term));
    assert!(net.queue.iter().all(|m| m.from != 2), "no answer while in the lease");
    assert_eq!(net.term(2), term);
    assert_eq!(net.node(2).status().hard_state.vote, Some(1));
    // The leader is gone for an election timeout.
    for _ in 0..election_tick(&net) {
        net.tick(2);
    }
    net.queue.clear();
    net.step(vote_req(3, 2, term + 2, 100, term));
    let answers = vote_answers(&net.queue.iter().filter(|m| m.from == 2).cloned().collect::<Vec<_>>());
    assert_eq!(answers, vec![true]);
    assert_eq!(net.term(2), term + 2);
}

// ----- thesis §6.4 ReadIndex -----

fn reads(net: &Network, id: u64) -> Vec<ReadState> {
    net.reads[&id].clone()
}

/// Thesis §6.4, step 1: "If the leader has not yet marked an entry from its
/// current term committed, it waits until it has done so." A read on a new
/// leader is not released before its no-op commits, even after heartbeat
/// acknowledgements; then its index covers the no-op.
#[test]
fn read_index_waits_for_leaders_noop_to_commit() {
    let mut net = Network::new(&[1, 2, 3], &plain);
    net.node_mut(1).campaign().unwrap();
    net.deliver_while(|m| !is_append(m));
    assert_eq!(net.role(1), Role::Leader);
    net.node_mut(1).read_index(7).unwrap();
    // Heartbeats flow, but the no-op does not.
    for _ in 0..net.configs[&1].heartbeat_tick {
        net.tick(1);
    }
    net.deliver_while(|m| !is_append(m));
    assert!(net.delivered.iter().any(is_heartbeat_resp));
    assert!(reads(&net, 1).is_empty(), "released before the no-op committed");
    net.deliver_all();
    assert_eq!(net.commit(1), 1);
    assert_eq!(reads(&net, 1), vec![ReadState { index: 1, ctx: 7 }]);
}

/// Thesis §6.4, steps 2-3: "the leader saves its current commit index in a
/// local variable readIndex"; "the leader needs to make sure it hasn't been
/// superseded ... it issues a new round of heartbeats and waits for their
/// acknowledgments from a majority of the cluster." The read is released
/// only once a majority (leader included) acknowledged a heartbeat sent after
/// it arrived, and its index is the commit index when it arrived, though
/// more entries committed meanwhile; append acknowledgements do not count.
#[test]
fn read_index_released_after_majority_heartbeat_ack_with_commit_index_at_request() {
    let mut net = Network::new(&[1, 2, 3, 4, 5], &plain);
    net.elect(1);
    net.propose(1, "a");
    net.deliver_all();
    let commit_at_request = net.commit(1);
    assert_eq!(commit_at_request, 2);
    net.node_mut(1).read_index(8).unwrap();
    net.handle_ready(1);
    let hb: Vec<u64> = net.queue.iter().filter(|m| is_heartbeat(m)).map(|m| m.to).collect();
    assert_eq!(hb, vec![2, 3, 4, 5], "a heartbeat round starts at once");
    net.deliver_while(|m| !is_heartbeat_resp(m));
    assert!(reads(&net, 1).is_empty());
    // A write commits meanwhile (append acks flow, heartbeat acks are held).
    net.propose(1, "b");
    net.deliver_while(|m| !is_heartbeat_resp(m));
    assert_eq!(net.commit(1), 3);
    assert!(reads(&net, 1).is_empty(), "append acknowledgements do not confirm the read");
    // One acknowledgement: 2 of 5 is no majority.
    net.deliver_while(|m| m.from == 2 && is_heartbeat_resp(m));
    assert!(reads(&net, 1).is_empty(), "2 of 5 is no majority");
    net.deliver_while(|m| m.from == 3 && is_heartbeat_resp(m));
    assert_eq!(reads(&net, 1), vec![ReadState { index: commit_at_request, ctx: 8 }]);
    net.deliver_all();
    assert_eq!(reads(&net, 1).len(), 1, "released once");
}

/// Thesis §6.4: a read is confirmed only by a heartbeat round that started
/// after it arrived. A read arriving while a round is in flight waits for the
/// next one, which starts by itself once that round completes (no further
/// read needed to trigger it).
#[test]
fn read_index_arriving_during_a_round_waits_for_the_next_round() {
    let mut net = Network::new(&[1, 2, 3], &plain);
    net.elect(1);
    net.deliver_all();
    net.node_mut(1).read_index(1).unwrap();
    net.handle_ready(1);
    // Round 1 is in flight; read 2 arrives now.
    net.node_mut(1).read_index(2).unwrap();
    net.handle_ready(1);
    let first_round: Vec<u64> = net.queue.iter().filter(|m| is_heartbeat(m)).map(|m| m.to).collect();
    assert_eq!(first_round, vec![2, 3], "one round in flight");
    // Acknowledge round 1 only: read 1 is released, read 2 is not.
    let round_one: Vec<Message> = net.queue.drain(..).filter(is_heartbeat).collect();
    for m in round_one {
        net.step(m);
    }
    net.deliver_while(|m| is_heartbeat_resp(m) && m.to == 1);
    let ctxs = |net: &Network| reads(net, 1).iter().map(|r| r.ctx).collect::<Vec<u64>>();
    assert_eq!(ctxs(&net), vec![1], "the round that started before read 2 does not confirm it");
    // The next round starts by itself and confirms read 2.
    assert!(net.queue.iter().any(is_heartbeat), "a second round started for the waiting read");
    net.deliver_all();
    assert_eq!(ctxs(&net), vec![1, 2]);
}

/// `propose_batch` appends every command at once and answers the index of
/// the first.
#[test]
fn propose_batch_returns_the_index_of_the_first_entry() {
    let mut net = Network::new(&[1, 2, 3], &plain);
    net.elect(1);
    net.deliver_all();
    let last = net.node(1).status().last_index;
    let first =
        net.node_mut(1).propose_batch(vec![Bytes::from("a"), Bytes::from("b"), Bytes::from("c")]).unwrap();
    assert_eq!(first, last + 1);
    assert_eq!(net.node(1).status().last_index, last + 3);
}

/// Thesis §6.4: the heartbeat round ensures a deposed leader cannot serve
/// stale reads. A leader cut off from the majority, while a new leader
/// commits a write, never releases a read, however long it waits, and not
/// after it returns either.
#[test]
fn read_index_partitioned_leader_never_releases_read() {
    let mut net = Network::new(&[1, 2, 3], &plain);
    net.elect(1);
    heartbeat(&mut net, 1);
    net.isolate(1);
    net.campaign(2);
    assert_eq!(net.role(2), Role::Leader);
    net.propose(2, "new");
    net.deliver_all();
    assert_eq!(net.applied_commands(2), ["new"]);
    assert_eq!(net.role(1), Role::Leader, "the old leader does not know yet");
    net.node_mut(1).read_index(9).unwrap();
    for _ in 0..10 * election_tick(&net) {
        net.tick(1);
        net.deliver_all();
    }
    assert!(reads(&net, 1).is_empty());
    net.recover();
    for _ in 0..election_tick(&net) {
        net.tick_all();
    }
    assert!(reads(&net, 1).is_empty(), "a deposed leader's read is never released");
    assert_ne!(net.role(1), Role::Leader);
    net.assert_election_safety();
}

/// With CheckQuorum the partitioned leader's read is dropped when it steps
/// down; it is never released.
#[test]
fn read_index_partitioned_leader_with_check_quorum_drops_read() {
    let mut net = Network::new(&[1, 2, 3], &defaults);
    net.elect(1);
    heartbeat(&mut net, 1);
    net.isolate(1);
    net.node_mut(1).read_index(9).unwrap();
    for _ in 0..3 * election_tick(&net) {
        net.tick(1);
    }
    assert_eq!(net.role(1), Role::Follower);
    net.recover();
    for _ in 0..3 * election_tick(&net) {
        net.tick_all();
    }
    assert!(reads(&net, 1).is_empty());
}

/// Thesis §6.4: with a single voter the leader's own acknowledgement is a
/// majority, so a read is served at once (once its no-op committed).
#[test]
fn read_index_single_voter_completes_immediately() {
    let mut n = node(1, storage(&[1], &[], 0), &defaults);
    n.campaign().unwrap();
    drain(&mut n);
    assert_eq!(n.role(), Role::Leader);
    assert_eq!(n.status().hard_state.commit, 1);
    n.read_index(5).unwrap();
    let out = drain(&mut n);
    assert_eq!(out.reads, vec![ReadState { index: 1, ctx: 5 }]);
    assert!(out.all().is_empty());
}

/// Thesis §6.4: only the leader serves reads; a follower answers NotLeader
/// with the leader it knows (so the client can be redirected).
#[test]
fn read_index_on_follower_is_not_leader() {
    let mut net = Network::new(&[1, 2, 3], &plain);
    net.elect(1);
    assert!(matches!(net.node_mut(2).read_index(1), Err(Error::NotLeader { leader: Some(1) })));
    assert!(matches!(net.node_mut(2).propose("x".into()), Err(Error::NotLeader { leader: Some(1) })));
    let mut lone = node(1, storage(&[1, 2, 3], &[], 0), &plain);
    assert!(matches!(lone.read_index(1), Err(Error::NotLeader { leader: None })));
}

// ----- thesis §3.10 leadership transfer -----

fn is_timeout_now(m: &Message) -> bool {
    matches!(m.body, MessageBody::TimeoutNow)
}

/// Thesis §3.10: "the prior leader sends a TimeoutNow request to the target
/// server. This request has the same effect as the target server's election
/// timer firing: the target server starts a new election (incrementing its
/// term)". To an up-to-date follower, the transfer completes at once, with
/// PreVote and CheckQuorum on (the transfer bypasses both).
#[test]
fn transfer_to_up_to_date_follower_makes_it_leader_in_next_term() {
    let mut net = Network::new(&[1, 2, 3], &defaults);
    net.elect(1);
    heartbeat(&mut net, 1);
    let term = net.term(1);
    net.node_mut(1).transfer_leader(2).unwrap();
    net.handle_ready(1);
    assert!(net.queue.iter().any(|m| m.to == 2 && is_timeout_now(m)), "TimeoutNow at once");
    net.deliver_all();
    assert_eq!(net.role(2), Role::Leader);
    assert_eq!(net.term(2), term + 1);
    for id in [1, 3] {
        assert_eq!(net.role(id), Role::Follower, "node {id}");
        assert_eq!(net.node(id).leader(), Some(2), "node {id}");
        assert_eq!(net.term(id), term + 1, "node {id}");
    }
    net.assert_election_safety();
}

/// Thesis §3.10: "the prior leader ... transfers its log entries to the
/// target server, so that the target server can be elected"; "the prior
/// leader stops accepting new client requests" meanwhile. A lagging target
/// is first brought up to date, only then told to campaign.
#[test]
fn transfer_to_lagging_follower_first_brings_it_up_to_date() {
    let mut net = Network::new(&[1, 2, 3], &defaults);
    net.elect(1);
    heartbeat(&mut net, 1);
    let term = net.term(1);
    net.isolate(3);
    for d in ["a", "b", "c"] {
        net.propose(1, d);
    }
    net.deliver_all();
    let last = net.node(1).status().last_index;
    assert_eq!(net.commit(1), last);
    assert!(net.log(3).len() < last as usize);
    net.recover();
    let mark = net.delivered.len();
    net.node_mut(1).transfer_leader(3).unwrap();
    assert!(matches!(net.node_mut(1).propose("refused".into()), Err(Error::TransferInProgress)));
    assert!(matches!(net.node_mut(1).propose_batch(vec!["refused".into()]), Err(Error::TransferInProgress)));
    net.handle_ready(1);
    assert!(!net.queue.iter().any(is_timeout_now), "no TimeoutNow to a lagging target");
    for _ in 0..election_tick(&net) {
        if net.role(3) == Role::Leader {
            break;
        }
        net.deliver_all();
        if net.role(3) != Role::Leader {
            net.tick(1);
        }
    }
    assert_eq!(net.role(3), Role::Leader);
    assert_eq!(net.term(3), term + 1, "elected in the very next term");
    // The TimeoutNow followed 3's acknowledgement of the leader's last entry.
    let after = &net.delivered[mark..];
    let tn = after.iter().position(|m| m.to == 3 && is_timeout_now(m)).expect("TimeoutNow sent");
    let caught_up = after.iter().position(|m| {
        m.from == 3 && matches!(m.body, MessageBody::AppendResponse(AppendResponse::Accepted { index }) if index == last)
    });
    assert!(caught_up.is_some_and(|c| c < tn), "TimeoutNow only once the target is up to date");
    heartbeat(&mut net, 3);
    assert_eq!(net.applied_commands(3), ["a", "b", "c"]);
    net.assert_election_safety();
}

/// Thesis §3.10: the target must be able to lead, so only a voter can be
/// chosen; a learner or a stranger is refused.
#[test]
fn transfer_to_non_voter_is_refused() {
    let mut net = Network::new(&[1, 2, 3], &plain);
    net.elect(1);
    net.node_mut(1)
        .propose_conf_change(ConfChange { kind: ConfChangeKind::AddLearner, node: 4, context: Bytes::new() })
        .unwrap();
    assert!(net.node(1).conf().learners.contains(&4));
    assert!(matches!(net.node_mut(1).transfer_leader(4), Err(Error::NotAVoter(4))));
    assert!(matches!(net.node_mut(1).transfer_leader(9), Err(Error::NotAVoter(9))));
    assert!(matches!(net.node_mut(2).transfer_leader(3), Err(Error::NotLeader { leader: Some(1) })));
    // Nothing changed: proposals are still accepted.
    net.propose(1, "ok");
    assert_eq!(net.node(1).raft().lead_transferee, None);
}

/// Thesis §3.10: "If the transfer does not complete within an election
/// timeout, the prior leader aborts the transfer and resumes accepting client
/// requests."
#[test]
fn transfer_abandoned_after_election_timeout() {
    let mut net = Network::new(&[1, 2, 3], &defaults);
    net.elect(1);
    heartbeat(&mut net, 1);
    net.isolate(3);
    net.node_mut(1).transfer_leader(3).unwrap();
    let et = election_tick(&net);
    for _ in 0..et - 1 {
        net.tick_all();
        assert!(matches!(net.node_mut(1).propose("x".into()), Err(Error::TransferInProgress)));
    }
    net.tick_all();
    assert_eq!(net.role(1), Role::Leader);
    net.propose(1, "after");
    net.deliver_all();
    assert_eq!(net.applied_commands(1), ["after"]);
}

/// Thesis §3.10: during a transfer the leader accepts no new requests,
/// membership changes included.
#[test]
fn transfer_refuses_membership_changes_while_in_progress() {
    let mut net = Network::new(&[1, 2, 3], &defaults);
    net.elect(1);
    heartbeat(&mut net, 1);
    net.isolate(2);
    net.node_mut(1).transfer_leader(2).unwrap();
    let r = net.node_mut(1).propose_conf_change(cc(ConfChangeKind::AddLearner, 4));
    assert!(matches!(r, Err(Error::TransferInProgress)));
}

// ----- flow control (etcd's progress tracking) -----

fn payload(n: usize) -> Bytes {
    Bytes::from(vec![b'x'; n])
}

/// Appends carry at most `max_entries_per_msg` entries.
#[test]
fn flow_control_append_respects_max_entries_per_msg() {
    let mut net = Network::new(&[1, 2, 3], &|c| {
        plain(c);
        c.max_entries_per_msg = 2;
    });
    net.elect(1);
    heartbeat(&mut net, 1);
    let leader = 1;
    let mark = net.sent.len();
    net.node_mut(leader).propose_batch((0..7).map(|i| Bytes::from(format!("e{i}"))).collect()).unwrap();
    net.deliver_all();
    heartbeat(&mut net, leader);
    let sizes: Vec<usize> =
        net.sent[mark..].iter().filter_map(|m| append_entries(m)).map(|e| e.len()).collect();
    assert!(sizes.iter().all(|&n| n <= 2), "{sizes:?}");
    assert!(sizes.contains(&2));
    for id in [1, 2, 3] {
        assert_eq!(net.applied_commands(id).len(), 7, "node {id}");
    }
}

/// Appends carry at most `max_bytes_per_msg` bytes of entries (by
/// `Entry::size`), except that a single larger entry goes alone.
#[test]
fn flow_control_append_respects_max_bytes_per_msg() {
    let mut net = Network::new(&[1, 2, 3], &|c| {
        plain(c);
        c.max_bytes_per_msg = 300;
    });
    net.elect(1);
    heartbeat(&mut net, 1);
    // Hold the followers' answers so that entries pile up.
    net.isolate(2);
    net.isolate(3);
    let mut data: Vec<Bytes> = (0..5).map(|_| payload(100)).collect();
    data.push(payload(1000));
    data.extend((0..3).map(|_| payload(100)));
    net.node_mut(1).propose_batch(data).unwrap();
    net.deliver_all();
    net.recover();
    let mark = net.sent.len();
    for _ in 0..3 {
        heartbeat(&mut net, 1);
    }
    let appends: Vec<&[graft_core::Entry]> =
        net.sent[mark..].iter().filter_map(|m| append_entries(m)).filter(|e| !e.is_empty()).collect();
    for es in &appends {
        let size: u64 = es.iter().map(|e| e.size()).sum();
        assert!(size <= 300 || es.len() == 1, "an append of {} entries, {size} bytes", es.len());
    }
    assert!(appends.iter().any(|es| es.len() == 2), "several small entries travel together");
    assert!(appends.iter().any(|es| es.len() == 1 && es[0].size() > 1000), "the big entry goes alone");
    for id in [1, 2, 3] {
        assert_eq!(net.applied_commands(id).len(), 9, "node {id}");
    }
}

/// A cluster of one voter: nothing to send, yet every proposal must come out
/// in a `Ready` to be persisted, and commits once it is durable.
#[test]
fn a_lone_voter_persists_and_commits_without_messages() {
    use graft_core::{ConfState, Config, EntryPayload, MemStorage, RawNode};
    let mut node =
        RawNode::new(Config::new(1), MemStorage::new_with_conf(ConfState::with_voters([1]))).unwrap();
    node.campaign().unwrap();
    let mut committed = Vec::new();
    let carry_out = |node: &mut RawNode<MemStorage>, committed: &mut Vec<u64>| {
        while node.has_ready() {
            let rd = node.ready().unwrap();
            assert!(rd.messages.is_empty() && rd.persisted_messages.is_empty(), "no one to send to");
            node.storage_mut().append(&rd.entries).unwrap();
            if let Some(hs) = rd.hard_state {
                node.storage_mut().set_hard_state(hs);
            }
            committed.extend(
                rd.committed_entries.iter().filter(|e| e.payload != EntryPayload::Noop).map(|e| e.index),
            );
            node.advance().unwrap();
        }
    };
    carry_out(&mut node, &mut committed);
    assert_eq!(node.role(), Role::Leader);
    let index = node.propose(Bytes::from("x")).unwrap();
    assert!(node.has_ready(), "the new entry must be handed out to persist");
    carry_out(&mut node, &mut committed);
    assert_eq!(committed, vec![index]);
}

/// The transport reports a follower unreachable (its connection broke): the
/// leader stops streaming into the void and probes it again from just after
/// its match (etcd's `ReportUnreachable`).
#[test]
fn an_unreachable_follower_goes_back_to_probing() {
    let mut net = Network::new(&[1, 2, 3], &plain);
    net.elect(1);
    heartbeat(&mut net, 1);
    let progress = |net: &Network, id: u64| {
        net.node(1).status().progress.iter().find(|(p, _)| *p == id).map(|(_, p)| *p).unwrap()
    };
    assert_eq!(progress(&net, 2).state, ProgressState::Replicate);
    let matched = progress(&net, 2).matched;
    net.node_mut(1).report_unreachable(2);
    let p2 = progress(&net, 2);
    assert_eq!((p2.state, p2.next), (ProgressState::Probe, matched + 1));
    assert_eq!(progress(&net, 3).state, ProgressState::Replicate, "the others are untouched");
    // A follower reporting it is harmless.
    net.node_mut(2).report_unreachable(3);
    assert_eq!(net.node(2).role(), Role::Follower);
}

/// No more than `max_inflight_msgs` appends are outstanding to a follower in
/// the replicate state; acknowledgements open the window again.
#[test]
fn flow_control_inflight_appends_limited_in_replicate() {
    let mut net = Network::new(&[1, 2, 3], &|c| {
        plain(c);
        c.max_inflight_msgs = 2;
        c.max_entries_per_msg = 1;
    });
    net.elect(1);
    heartbeat(&mut net, 1);
    let p2 = net.node(1).status().progress.iter().find(|(id, _)| *id == 2).unwrap().1;
    assert_eq!(p2.state, ProgressState::Replicate);
    let (sent_mark, delivered_mark) = (net.sent.len(), net.delivered.len());
    for i in 0..6 {
        net.propose(1, &format!("p{i}"));
    }
    // Appends carrying entries to 2, and how many of them 2 has not acknowledged yet.
    let outstanding = |net: &Network| {
        let acked = net.delivered[delivered_mark..]
            .iter()
            .filter(|m| m.from == 2 && m.to == 1)
            .filter_map(|m| match m.body {
                MessageBody::AppendResponse(AppendResponse::Accepted { index }) => Some(index),
                _ => None,
            })
            .max()
            .unwrap_or(0);
        let lasts: Vec<u64> = net.sent[sent_mark..]
            .iter()
            .filter(|m| m.to == 2)
            .filter_map(|m| append_entries(m)?.last().map(|e| e.index))
            .collect();
        (lasts.len(), lasts.iter().filter(|&&l| l > acked).count())
    };
    assert_eq!(outstanding(&net), (2, 2), "two appends in flight, the rest wait");
    // Deliver one message at a time, checking the window all along.
    let mut max_seen = 0;
    while let Some(m) = net.queue.pop_front() {
        net.step(m);
        let (_, out) = outstanding(&net);
        max_seen = max_seen.max(out);
        assert!(out <= 2, "{out} appends outstanding to 2");
    }
    assert_eq!(max_seen, 2);
    assert_eq!(outstanding(&net).0, 6, "one append per entry, none resent");
    heartbeat(&mut net, 1);
    assert_eq!(net.applied_commands(2).len(), 6);
}

/// `Config::max_inflight_msgs`: "The most `Append` messages in flight to one
/// follower while replicating." The limit must hold also while heartbeats
/// keep flowing and the appends are merely slow (not lost): a heartbeat
/// answer proves the follower is alive, not that the appends were lost.
#[test]

fn flow_control_inflight_limit_holds_while_heartbeats_flow() {
    let mut net = Network::new(&[1, 2, 3], &|c| {
        plain(c);
        c.max_inflight_msgs = 2;
        c.max_entries_per_msg = 1;
    });
    net.elect(1);
    heartbeat(&mut net, 1);
    let mark = net.sent.len();
    for i in 0..6 {
        net.propose(1, &format!("p{i}"));
    }
    // Appends to 2 are slow: they stay queued. Everything else flows,
    // including several heartbeat rounds and their answers.
    for _ in 0..4 {
        heartbeat_holding(&mut net, 1, |m| !(m.to == 2 && is_append(m)));
    }
    let in_flight: Vec<u64> = net
        .queue
        .iter()
        .filter(|m| m.to == 2)
        .filter_map(|m| append_entries(m)?.last().map(|e| e.index))
        .collect();
    let sent = net.sent[mark..]
        .iter()
        .filter(|m| m.to == 2 && append_entries(m).is_some_and(|e| !e.is_empty()))
        .count();
    assert!(sent <= 2, "{sent} appends with entries sent to 2, none acknowledged; in flight: {in_flight:?}");
}

// ----- thesis §4.1-§4.2 membership changes (single-server) -----

fn cc(kind: ConfChangeKind, node: u64) -> ConfChange {
    ConfChange { kind, node, context: Bytes::new() }
}

fn conf_err(r: Result<u64, Error>) -> ConfChangeError {
    match r {
        Err(Error::ConfChange(e)) => e,
        other => panic!("expected a refused membership change, got {other:?}"),
    }
}

/// Thesis §4.1 (and the single-server change fix, raft-dev 2015): "a leader
/// may not append a new configuration entry until it has committed an entry
/// of its own term". A new leader refuses changes until its no-op commits.
#[test]
fn membership_change_refused_until_leader_committed_entry_of_its_term() {
    let mut net = Network::new(&[1, 2, 3], &plain);
    net.node_mut(1).campaign().unwrap();
    net.deliver_while(|m| !is_append(m));
    assert_eq!(net.role(1), Role::Leader);
    let r = net.node_mut(1).propose_conf_change(cc(ConfChangeKind::AddLearner, 4));
    assert_eq!(conf_err(r), ConfChangeError::LeaderNotReady);
    assert_eq!(net.node(1).conf().learners.len(), 0);
    net.deliver_all();
    assert_eq!(net.commit(1), 1);
    net.node_mut(1).propose_conf_change(cc(ConfChangeKind::AddLearner, 4)).unwrap();
}

/// A leader that inherits uncommitted entries also refuses a change until
/// they and its no-op are committed.
#[test]
fn membership_change_refused_while_inherited_entries_are_uncommitted() {
    let stores = (1..=3).map(|id| (id, storage(&[1, 2, 3], &[1, 1], 1))).collect();
    let mut net = Network::from_storages(stores, &plain);
    net.node_mut(1).campaign().unwrap();
    net.deliver_while(|m| !is_append(m));
    assert_eq!(net.role(1), Role::Leader);
    let r = net.node_mut(1).propose_conf_change(cc(ConfChangeKind::AddLearner, 4));
    assert!(matches!(conf_err(r), ConfChangeError::Pending(_) | ConfChangeError::LeaderNotReady));
    net.deliver_all();
    assert_eq!(net.commit(1), 3);
    net.node_mut(1).propose_conf_change(cc(ConfChangeKind::AddLearner, 4)).unwrap();
}

/// Thesis §4.1: "the leader ... waits for the [change] to commit before
/// starting the next one": one change is pending at a time.
/// Which single-member changes are changes: demoting a voter to learner is
/// one; adding a member in the role it has is refused as a no-op, unless it
/// carries a context (graft-kv: the member's new address), which is recorded;
/// removing a non-member is a no-op whatever it carries.
#[test]
fn membership_changes_that_change_nothing_are_refused_unless_they_carry_a_context() {
    let mut net = Network::new(&[1, 2, 3], &plain);
    net.elect(1);
    heartbeat(&mut net, 1);
    assert_eq!(net.node(1).id(), 1);
    let cc = |kind, node, context: &'static str| ConfChange { kind, node, context: Bytes::from(context) };
    let refused = |r: Result<u64, Error>| matches!(r, Err(Error::ConfChange(ConfChangeError::NoOp(_))));
    assert!(refused(net.node_mut(1).propose_conf_change(cc(ConfChangeKind::AddVoter, 2, ""))));
    assert!(refused(net.node_mut(1).propose_conf_change(cc(ConfChangeKind::Remove, 9, "x"))));
    // The same role with a context: recorded, the membership unchanged.
    net.node_mut(1).propose_conf_change(cc(ConfChangeKind::AddVoter, 2, "new address")).expect("a context");
    net.deliver_all();
    heartbeat(&mut net, 1);
    assert_eq!(net.node(1).conf().voters, [1, 2, 3].into());
    // Demoting a voter to learner is a change.
    net.node_mut(1).propose_conf_change(cc(ConfChangeKind::AddLearner, 3, "")).expect("demote a voter");
    assert_eq!(
        (net.node(1).conf().voters.clone(), net.node(1).conf().learners.clone()),
        ([1, 2].into(), [3].into())
    );
}

#[test]
fn membership_one_change_pending_at_a_time() {
    let mut net = Network::new(&[1, 2, 3], &plain);
    net.elect(1);
    let i = net.node_mut(1).propose_conf_change(cc(ConfChangeKind::AddLearner, 4)).unwrap();
    assert_eq!(i, 2);
    let r = net.node_mut(1).propose_conf_change(cc(ConfChangeKind::AddLearner, 5));
    assert_eq!(conf_err(r), ConfChangeError::Pending(2));
    // Ordinary proposals are not held up.
    net.propose(1, "x");
    net.deliver_all();
    assert!(net.commit(1) >= 2);
    net.node_mut(1).propose_conf_change(cc(ConfChangeKind::AddLearner, 5)).unwrap();
    assert_eq!(net.node(1).conf().learners.iter().copied().collect::<Vec<_>>(), vec![4, 5]);
}

/// Thesis §4.1: "a server always uses the latest configuration in its log,
/// regardless of whether the entry is committed". On the leader and on a
/// follower the new membership is in effect as soon as the entry is
/// appended, before it commits.
#[test]
fn membership_takes_effect_when_appended_not_when_committed() {
    let mut net = Network::new(&[1, 2, 3], &plain);
    net.elect(1);
    heartbeat(&mut net, 1);
    let i = net.node_mut(1).propose_conf_change(cc(ConfChangeKind::AddVoter, 4)).unwrap();
    net.handle_ready(1);
    assert!(net.node(1).conf().voters.contains(&4), "leader: in effect on append");
    assert!(net.node(1).status().progress.iter().any(|(id, _)| *id == 4), "leader replicates to 4");
    assert!(net.commit(1) < i);
    // Node 2 appends it, but hears nothing of its commitment.
    net.deliver_while(|m| m.to == 2 && is_append(m));
    assert_eq!(net.log(2).last(), Some(&(i, net.term(1))));
    assert!(net.commit(2) < i);
    assert!(net.node(2).conf().voters.contains(&4), "follower: in effect on append");
    assert!(!net.node(3).conf().voters.contains(&4));
    // The new voter set needs 3 of 4 to commit: the leader and node 2 are not enough.
    net.deliver_while(|m| m.from == 2);
    assert!(net.commit(1) < i, "a majority of the new membership is needed");
}

/// Thesis §4.1: "a configuration entry ... can be removed if there is a
/// change of leadership; in this case, a server must be prepared to fall back
/// to the previous configuration in its log." A follower that appended a
/// change the next leader did not have reverts when it is overwritten.
#[test]
fn membership_entry_truncated_reverts_to_previous_configuration() {
    let mut net = Network::new(&[1, 2, 3, 4, 5], &plain);
    net.elect(1);
    heartbeat(&mut net, 1);
    let i = net.node_mut(1).propose_conf_change(cc(ConfChangeKind::AddLearner, 6)).unwrap();
    net.deliver_while(|m| m.to == 2 && is_append(m));
    net.queue.clear();
    assert!(net.node(2).conf().learners.contains(&6));
    // 1 and 2 are cut off; 3 is elected by 3, 4, 5 and overwrites index i.
    net.isolate(1);
    net.isolate(2);
    net.elect(3);
    net.recover();
    net.isolate(1);
    heartbeat(&mut net, 3);
    assert_eq!(net.log(2), net.log(3));
    assert_eq!(net.log(2)[(i - 1) as usize], (i, net.term(3)));
    assert!(net.node(2).conf().learners.is_empty(), "back to the previous membership");
    assert_eq!(net.node(2).conf().voters.len(), 5);
}

/// Thesis §4.2.2: "the leader ... steps down (returns to follower state) once
/// the Cnew entry is committed". Until then it keeps leading (without
/// counting itself in the majority); afterwards the others elect a leader.
#[test]
fn membership_removed_leader_steps_down_once_change_commits() {
    let mut net = Network::new(&[1, 2, 3], &plain);
    net.elect(1);
    heartbeat(&mut net, 1);
    let i = net.node_mut(1).propose_conf_change(cc(ConfChangeKind::Remove, 1)).unwrap();
    net.handle_ready(1);
    assert!(!net.node(1).conf().voters.contains(&1));
    assert_eq!(net.role(1), Role::Leader, "still leading while the change is uncommitted");
    // 2's acknowledgement alone: 1 of the new voters {2, 3}, not a majority.
    net.deliver_while(|m| m.to == 2 || m.from == 2);
    assert!(net.commit(1) < i);
    assert_eq!(net.role(1), Role::Leader);
    net.deliver_all();
    assert_eq!(net.commit(1), i);
    assert_eq!(net.role(1), Role::Follower, "stepped down once the change committed");
    for _ in 0..4 * election_tick(&net) {
        net.tick_all();
        if net.current_leaders().iter().any(|&l| l != 1) {
            break;
        }
    }
    let leaders = net.current_leaders();
    assert_eq!(leaders.len(), 1);
    assert!(leaders[0] == 2 || leaders[0] == 3);
    assert_ne!(net.role(1), Role::Leader);
    net.assert_election_safety();
}

/// Thesis §4.2 / §6.2 (and etcd's conf-change safety check): a change after
/// which the members recently heard from would not form a majority of the
/// new voters would stop the cluster, so it is refused.
#[test]
fn membership_change_leaving_no_live_quorum_is_refused() {
    let mut net = Network::new(&[1, 2, 3], &defaults);
    net.elect(1);
    heartbeat(&mut net, 1);
    net.isolate(3);
    // A CheckQuorum round passes without hearing from 3.
    for _ in 0..2 * election_tick(&net) {
        net.tick(1);
        net.tick(2);
        net.deliver_all();
    }
    let live = |net: &Network, id: u64| {
        net.node(1).status().progress.iter().find(|(i, _)| *i == id).map(|(_, p)| p.recent_active)
    };
    assert_eq!(live(&net, 3), Some(false));
    assert_eq!(net.role(1), Role::Leader);
    let r = net.node_mut(1).propose_conf_change(cc(ConfChangeKind::AddVoter, 4));
    assert_eq!(conf_err(r), ConfChangeError::NoLiveQuorum { live: 2, needed: 3 });
    let r = net.node_mut(1).propose_conf_change(cc(ConfChangeKind::Remove, 2));
    assert_eq!(conf_err(r), ConfChangeError::NoLiveQuorum { live: 1, needed: 2 });
    assert_eq!(net.node(1).conf().voters.len(), 3, "nothing appended");
    // Removing the dead member leaves a live majority.
    net.node_mut(1).propose_conf_change(cc(ConfChangeKind::Remove, 3)).unwrap();
    net.deliver_all();
    assert_eq!(net.node(1).conf().voters.iter().copied().collect::<Vec<_>>(), vec![1, 2]);
}

/// Thesis §4.1-§4.2: a new server joins (with an empty log) by a single
/// AddVoter change; it is caught up, and from then on counts toward the
/// majority: with one of the four voters down, the other three still elect a
/// leader and commit.
#[test]
fn membership_add_voter_joins_and_counts_toward_quorum() {
    let mut net = Network::new(&[1, 2, 3], &plain);
    net.add_node(4, graft_core::MemStorage::new_with_conf(graft_core::ConfState::default()), &plain);
    net.elect(1);
    net.propose(1, "a");
    net.deliver_all();
    let i = net.node_mut(1).propose_conf_change(cc(ConfChangeKind::AddVoter, 4)).unwrap();
    net.deliver_all();
    heartbeat(&mut net, 1);
    assert_eq!(net.commit(1), i);
    assert_eq!(net.log(4), net.log(1), "the new member is caught up");
    assert_eq!(net.applied_commands(4), ["a"]);
    for id in 1..=4 {
        assert_eq!(net.node(id).conf().voters.iter().copied().collect::<Vec<_>>(), vec![1, 2, 3, 4]);
    }
    // Two of four are not a majority any more.
    net.isolate(3);
    net.isolate(4);
    net.propose(1, "b");
    net.deliver_all();
    assert_eq!(net.commit(1), i, "2 of 4 voters cannot commit");
    // Without 1, the other three voters (2 has "b") elect a leader and commit.
    net.recover();
    net.isolate(1);
    net.queue.clear();
    net.elect(2);
    net.propose(2, "c");
    net.deliver_all();
    heartbeat(&mut net, 2);
    for id in [2, 3, 4] {
        assert_eq!(net.applied_commands(id), ["a", "b", "c"], "node {id}");
    }
    net.assert_election_safety();
}

/// Thesis §4.2.1: learners (non-voting members) receive the log but neither
/// vote, campaign, nor count toward commitment.
#[test]
fn membership_learner_receives_log_but_does_not_vote_or_count() {
    let mut net = Network::new(&[1, 2, 3], &plain);
    net.add_node(4, graft_core::MemStorage::new_with_conf(graft_core::ConfState::default()), &plain);
    net.elect(1);
    net.node_mut(1).propose_conf_change(cc(ConfChangeKind::AddLearner, 4)).unwrap();
    net.deliver_all();
    net.propose(1, "a");
    net.deliver_all();
    heartbeat(&mut net, 1);
    assert_eq!(net.applied_commands(4), ["a"]);
    // With 2 and 3 down, the leader and the learner cannot commit.
    net.isolate(2);
    net.isolate(3);
    let before = net.commit(1);
    net.propose(1, "b");
    net.deliver_all();
    assert_eq!(net.commit(1), before, "a learner does not count");
    // The learner never campaigns, however long it waits.
    net.isolate(1);
    for _ in 0..5 * election_tick(&net) {
        net.tick(4);
    }
    assert_eq!(net.role(4), Role::Follower);
    assert!(net.sent.iter().all(|m| !(m.from == 4 && matches!(m.body, MessageBody::Vote { .. }))));
}

/// Thesis §4.1: the membership is that of the latest configuration entry in
/// the log, so a member that restarts finds it again from its durable log.
#[test]
fn membership_restored_from_log_after_restart() {
    let mut net = Network::new(&[1, 2, 3], &plain);
    net.elect(1);
    net.node_mut(1).propose_conf_change(cc(ConfChangeKind::AddLearner, 4)).unwrap();
    net.deliver_while(|m| m.to == 2 && is_append(m));
    assert!(net.node(2).conf().learners.contains(&4));
    net.restart(2);
    assert!(net.node(2).conf().learners.contains(&4), "uncommitted change found again in the log");
    net.restart(1);
    assert!(net.node(1).conf().learners.contains(&4));
}

/// Thesis §4.2.1: a new server first joins as a non-voting learner and is
/// promoted once caught up. A one-voter cluster grows this way (adding the
/// voter directly would leave it without a live majority and is refused).
#[test]
fn membership_single_voter_grows_by_learner_then_promotion() {
    let mut net = Network::new(&[1], &defaults);
    net.add_node(2, graft_core::MemStorage::new_with_conf(graft_core::ConfState::default()), &defaults);
    net.elect(1);
    net.propose(1, "a");
    net.deliver_all();
    let r = net.node_mut(1).propose_conf_change(cc(ConfChangeKind::AddVoter, 2));
    assert_eq!(conf_err(r), ConfChangeError::NoLiveQuorum { live: 1, needed: 2 });
    net.node_mut(1).propose_conf_change(cc(ConfChangeKind::AddLearner, 2)).unwrap();
    net.deliver_all();
    heartbeat(&mut net, 1);
    assert_eq!(net.applied_commands(2), ["a"]);
    let i = net.node_mut(1).propose_conf_change(cc(ConfChangeKind::AddVoter, 2)).unwrap();
    net.deliver_all();
    assert_eq!(net.commit(1), i, "committed by both voters");
    assert_eq!(net.node(2).conf().voters.iter().copied().collect::<Vec<_>>(), vec![1, 2]);
    net.propose(1, "b");
    net.deliver_all();
    heartbeat(&mut net, 1);
    assert_eq!(net.applied_commands(2), ["a", "b"]);
}
