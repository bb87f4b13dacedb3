//! Keeping a lease alive from a client ([`crate::Client::keep_alive`]): a
//! background task renews it every third of its TTL (sooner after a failed
//! attempt) until the handle is dropped, and reports when the lease is gone.

use std::time::Duration;

use std::future::Future;

use tokio::sync::watch;

/// What the keepalive task knows of its lease.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LeaseState {
    /// Renewed; the TTL the cluster granted again, in ms.
    Alive {
        /// The TTL.
        ttl_ms: u64,
    },
    /// Not renewed yet (the first attempt is in progress, or attempts fail).
    Pending,
    /// The lease is gone (expired or revoked); the task stopped.
    Lost,
}

/// A running keepalive; dropping it stops renewing (the lease then
/// expires after its TTL unless revoked first).
pub struct KeepAlive {
    state: watch::Receiver<LeaseState>,
    task: tokio::task::JoinHandle<()>,
}

impl KeepAlive {
    /// What is known now.
    pub fn state(&self) -> LeaseState {
        self.state.borrow().clone()
    }

    /// A receiver that sees every change of state (each renewal).
    pub fn watch(&self) -> watch::Receiver<LeaseState> {
        self.state.clone()
    }

    /// Waits until the lease is found gone.
    pub async fn lost(&mut self) {
        let _ = self.state.wait_for(|s| *s == LeaseState::Lost).await;
    }
}

impl Drop for KeepAlive {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Starts renewing a lease of TTL `ttl` with `renew`, which answers the
/// TTL granted again, `None` if the lease is gone, or an error to retry.
pub fn start<F, Fut, E>(ttl: Duration, renew: F) -> KeepAlive
where
    F: Fn() -> Fut + Send + 'static,
    Fut: Future<Output = Result<Option<u64>, E>> + Send,
    E: Send,
{
    let (tx, rx) = watch::channel(LeaseState::Pending);
    let every = (ttl / 3).max(Duration::from_millis(10));
    let task = tokio::spawn(async move {
        loop {
            let pause = match renew().await {
                Ok(Some(ttl_ms)) => {
                    let _ = tx.send(LeaseState::Alive { ttl_ms });
                    every
                }
                Ok(None) => {
                    let _ = tx.send(LeaseState::Lost);
                    return;
                }
                // Unavailable for now: try again at once (the attempt itself
                // took its time), elsewhere.
                Err(_) => Duration::from_millis(10),
            };
            tokio::time::sleep(pause).await;
        }
    });
    KeepAlive { state: rx, task }
}
