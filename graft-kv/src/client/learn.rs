//! How a client learns the membership: from every new leader, every member
//! it connects to (at most once per [`LEARN_GAP`]) and the member each of
//! its watches streams from, so that it still finds the cluster once the
//! members it was given are gone.

use std::time::Duration;

use tokio::time::Instant;

use super::{Client, LEARN_GAP};

impl Client {
    /// Learns the membership from the member at `addr`, in the background:
    /// its members' addresses join the endpoints tried. Unless `always`,
    /// skipped when the client asked less than [`LEARN_GAP`] ago.
    pub(super) fn learn_members(&self, addr: String, always: bool) {
        let Ok(handle) = tokio::runtime::Handle::try_current() else { return };
        if let Ok(mut last) = self.inner.learnt.lock() {
            let now = Instant::now();
            if !always && last.is_some_and(|t| now.duration_since(t) < LEARN_GAP) {
                return;
            }
            *last = Some(now);
        }
        let me = self.clone();
        handle.spawn(async move {
            if let Ok(Ok(st)) = tokio::time::timeout(Duration::from_secs(2), me.status_of(&addr)).await {
                let addrs: Vec<String> = st.members.into_iter().map(|m| m.addr).collect();
                me.remember(&addrs);
            }
        });
    }

    /// Adds addresses to the endpoints tried.
    pub(super) fn remember(&self, addrs: &[String]) {
        if let Ok(mut eps) = self.inner.endpoints.lock() {
            for a in addrs {
                if !a.is_empty() && !eps.contains(a) {
                    eps.push(a.clone());
                }
            }
        }
    }
}

/// A watch tries the client's endpoints as they are when it resumes, and
/// teaches the client the membership of the member it streams from (at
/// most once per [`LEARN_GAP`] for the whole client).
impl crate::watcher::Members for Client {
    fn current(&self) -> Vec<String> {
        self.inner.endpoints.lock().map(|e| e.clone()).unwrap_or_default()
    }
    fn learn_from(&self, addr: &str) {
        self.learn_members(addr.to_string(), false);
    }
}
