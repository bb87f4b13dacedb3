//! Paper tests for membership changes beyond `paper.rs` (Raft paper §5.3,
//! thesis chapter 4). The harness (`util`) checks Log Matching and State
//! Machine Safety as in `paper.rs`.

mod util;

use bytes::Bytes;
use graft_core::progress::ProgressState;
use graft_core::{ConfChange, ConfChangeKind, ConfState, MemStorage, MessageBody, Role};
use util::*;

/// §5.3: "When a leader first comes to power, it initializes all nextIndex
/// values to the index just after the last one in its log". A member the
/// leader gains by a membership change starts the same way: probed just
/// after the leader's last entry (the change itself), then caught up.
#[test]
fn a_member_added_by_a_change_is_probed_just_after_the_leaders_last_entry() {
    let mut net = Network::new(&[1, 2, 3], &plain);
    net.add_node(4, MemStorage::new_with_conf(ConfState::default()), &plain);
    net.elect(1);
    net.propose(1, "a");
    net.deliver_all();
    let change = ConfChange { kind: ConfChangeKind::AddLearner, node: 4, context: Bytes::new() };
    let i = net.node_mut(1).propose_conf_change(change).unwrap();
    assert_eq!(net.node(1).status().last_index, i);
    let p = net.node(1).status().progress.into_iter().find(|(id, _)| *id == 4).map(|(_, p)| p).unwrap();
    assert_eq!((p.state, p.next, p.matched), (ProgressState::Probe, i + 1, 0));
    net.handle_ready(1);
    let first = net.sent.iter().find(|m| m.to == 4).map(|m| m.body.clone());
    match first {
        Some(MessageBody::Append { prev_index, entries, .. }) => {
            assert_eq!((prev_index, entries.len()), (i, 0), "an empty probe just after the last entry");
        }
        other => panic!("expected a probe to 4, got {other:?}"),
    }
    net.deliver_all();
    heartbeat(&mut net, 1);
    assert_eq!(net.log(4), net.log(1));
    assert_eq!(net.applied_commands(4), ["a"]);
    assert_eq!(net.role(4), Role::Follower);
}
