//! The Raft core alone: entries per second through `RawNode`, with
//! in-memory storage and messages passed by hand between three members.
//!
//! ```text
//! cargo bench -p graft-core --bench core
//! ```

use std::collections::VecDeque;
use std::hint::black_box;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use graft_core::{ConfState, Config, MemStorage, Message, RawNode, Role};

/// A three-member cluster whose messages are delivered at once.
struct Cluster {
    nodes: Vec<RawNode<MemStorage>>,
    queue: VecDeque<Message>,
    applied: u64,
}

impl Cluster {
    fn new() -> Cluster {
        let nodes = (1..=3)
            .map(|id| {
                let mut cfg = Config::new(id);
                cfg.max_entries_per_msg = 4096;
                RawNode::new(cfg, MemStorage::new_with_conf(ConfState::with_voters([1, 2, 3]))).unwrap()
            })
            .collect();
        let mut c = Cluster { nodes, queue: VecDeque::new(), applied: 0 };
        c.nodes[0].campaign().unwrap();
        c.settle();
        assert_eq!(c.nodes[0].role(), Role::Leader);
        c
    }

    /// Runs every member's Ready loop and delivers messages until quiet.
    fn settle(&mut self) {
        loop {
            let mut progress = false;
            for i in 0..self.nodes.len() {
                let node = &mut self.nodes[i];
                while node.has_ready() {
                    progress = true;
                    let rd = node.ready().unwrap();
                    self.queue.extend(rd.messages);
                    let store = node.storage_mut();
                    store.append(&rd.entries).unwrap();
                    if let Some(hs) = rd.hard_state {
                        store.set_hard_state(hs);
                    }
                    self.queue.extend(rd.persisted_messages);
                    if i == 0 {
                        self.applied += rd.committed_entries.len() as u64;
                    }
                    node.advance().unwrap();
                }
            }
            while let Some(m) = self.queue.pop_front() {
                progress = true;
                let to = (m.to - 1) as usize;
                self.nodes[to].step(m).unwrap();
            }
            if !progress {
                return;
            }
        }
    }
}

fn replicate(c: &mut Criterion) {
    let mut group = c.benchmark_group("replicate");
    for batch in [1usize, 64, 1024] {
        group.throughput(Throughput::Elements(16 * batch as u64));
        group.bench_function(format!("{batch} entries of 256 bytes, 3 members"), |b| {
            let data = Bytes::from(vec![7u8; 256]);
            b.iter_batched_ref(
                Cluster::new,
                |cluster| {
                    for _ in 0..16 {
                        let before = cluster.applied;
                        for _ in 0..batch {
                            cluster.nodes[0].propose(data.clone()).unwrap();
                        }
                        cluster.settle();
                        black_box(cluster.applied - before);
                    }
                },
                BatchSize::LargeInput,
            );
        });
    }
    group.finish();
}

criterion_group!(benches, replicate);
criterion_main!(benches);
