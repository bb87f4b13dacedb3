//! Paper tests for what happens as time passes (Raft paper §5.2, thesis
//! §6.4): the leader's heartbeat interval, the ReadIndex rounds heartbeats
//! start, and the election timer a follower waits out. The harness (`util`)
//! checks Log Matching and State Machine Safety as in `paper.rs`.

mod util;

use graft_core::{Message, Role};
use util::*;

/// The contexts of the reads `id` released, in order.
fn read_ctxs(net: &Network, id: u64) -> Vec<u64> {
    net.reads[&id].iter().map(|r| r.ctx).collect()
}

/// Heartbeats the leader sent `to` so far.
fn heartbeats_to(net: &Network, to: u64) -> usize {
    net.sent_count(1, to, is_heartbeat)
}

/// §5.2: "Leaders send periodic heartbeats ... to all followers"; graft's
/// `Config::heartbeat_tick` is the period: one heartbeat to each follower
/// every `heartbeat_tick` ticks, no more and no sooner.
#[test]
fn the_leader_heartbeats_every_heartbeat_tick() {
    let mut net = Network::new(&[1, 2, 3], &plain);
    net.elect(1);
    net.deliver_all();
    let hb = net.configs[&1].heartbeat_tick;
    assert!(hb > 1, "the test needs a period of several ticks");
    let before = (heartbeats_to(&net, 2), heartbeats_to(&net, 3));
    for period in 1..=10 {
        for t in 1..=hb {
            net.tick(1);
            let expected = if t == hb { period } else { period - 1 };
            assert_eq!(heartbeats_to(&net, 2) - before.0, expected, "period {period}, tick {t}");
            assert_eq!(heartbeats_to(&net, 3) - before.1, expected, "period {period}, tick {t}");
        }
        net.deliver_all();
    }
    assert_eq!(net.role(1), Role::Leader);
}

/// Thesis §6.4: reads are confirmed by heartbeat rounds, and the periodic
/// heartbeat starts the round a waiting read needs. Read 1's round is lost;
/// read 2 arrives while it is in flight. The next heartbeat starts a new
/// round, after both arrived, and one exchange of it confirms both reads.
#[test]
fn read_index_the_periodic_heartbeat_starts_the_round_a_read_waits_for() {
    let mut net = Network::new(&[1, 2, 3], &plain);
    net.elect(1);
    net.deliver_all();
    net.node_mut(1).read_index(1).unwrap();
    net.handle_ready(1);
    assert_eq!(net.queue.iter().filter(|m| is_heartbeat(m)).count(), 2, "read 1's round");
    net.queue.clear();
    net.node_mut(1).read_index(2).unwrap();
    net.handle_ready(1);
    assert!(net.queue.is_empty(), "read 2 waits: a round is in flight");
    for _ in 0..net.configs[&1].heartbeat_tick {
        net.tick(1);
    }
    // One exchange: the periodic heartbeats and their answers, nothing after.
    let wave: Vec<Message> = net.queue.drain(..).collect();
    assert_eq!(wave.len(), 2);
    for m in wave {
        net.step(m);
    }
    net.deliver_while(is_heartbeat_resp);
    assert_eq!(read_ctxs(&net, 1), vec![1, 2], "one heartbeat round confirmed both reads");
}

/// Thesis §6.4: a read arriving when no round is in flight starts one at
/// once. So the periodic heartbeat must not start a round no read waits for
/// (read 1 already waits for the round in flight): the next read would find
/// that round in flight, though it started before it, and wait for another.
#[test]
fn read_index_the_periodic_heartbeat_starts_no_round_needlessly() {
    let mut net = Network::new(&[1, 2, 3], &plain);
    net.elect(1);
    net.deliver_all();
    net.node_mut(1).read_index(1).unwrap();
    net.handle_ready(1);
    for _ in 0..net.configs[&1].heartbeat_tick {
        net.tick(1);
    }
    // Read 1's round is acknowledged; the periodic heartbeats are lost.
    let queued: Vec<Message> = net.queue.drain(..).collect();
    assert_eq!(queued.len(), 4, "read 1's round, then the periodic heartbeats");
    for m in queued.into_iter().take(2) {
        net.step(m);
    }
    net.deliver_all();
    assert_eq!(read_ctxs(&net, 1), vec![1]);
    net.node_mut(1).read_index(2).unwrap();
    net.handle_ready(1);
    let round: Vec<u64> = net.queue.iter().filter(|m| is_heartbeat(m)).map(|m| m.to).collect();
    assert_eq!(round, vec![2, 3], "no round in flight: read 2 starts one at once");
    net.deliver_all();
    assert_eq!(read_ctxs(&net, 1), vec![1, 2]);
}

/// §5.2: "election timeouts are chosen randomly from a fixed interval";
/// `Raft::randomized_election_timeout` (which the simulation and tests read)
/// is the timeout the follower actually waits out: within
/// `[election_tick, 2 * election_tick)`, and it campaigns on that very tick.
#[test]
fn the_randomized_election_timeout_is_the_one_that_fires() {
    for seed in 0..20 {
        let mut n = node(1, storage(&[1, 2, 3], &[], 0), &|c| {
            plain(c);
            c.seed = seed;
        });
        let et = n.raft().config().election_tick;
        let timeout = n.raft().randomized_election_timeout();
        assert!((et..2 * et).contains(&timeout), "seed {seed}: timeout {timeout}");
        for _ in 1..timeout {
            n.tick().unwrap();
        }
        assert_eq!(n.role(), Role::Follower, "seed {seed}: campaigned before its timeout");
        n.tick().unwrap();
        assert_eq!(n.role(), Role::Candidate, "seed {seed}: did not campaign at its timeout");
    }
}
