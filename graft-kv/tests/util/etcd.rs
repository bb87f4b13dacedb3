//! Clusters that serve etcd's v3 API, for the etcd-client and etcdctl
//! tests.

use super::{free_ports, Cluster};

/// An `n`-member cluster serving etcd's API; returns it and each member's
/// etcd address (member N's at index N - 1).
pub fn etcd_cluster(n: u64) -> (Cluster, Vec<String>) {
    let addrs: Vec<String> = free_ports(n as usize).iter().map(|p| format!("127.0.0.1:{p}")).collect();
    let mut extra = String::from("[etcd.members]\n");
    for (i, a) in addrs.iter().enumerate() {
        extra.push_str(&format!("{} = \"{a}\"\n", i + 1));
    }
    (Cluster::start_with(n, &extra), addrs)
}
