//! The `lease` commands' arguments and their checked form. Pure: no I/O.

use std::time::Duration;

use clap::Subcommand;

/// `lease` subcommands, as clap sees them.
#[derive(Subcommand, Clone, Debug, PartialEq, Eq)]
pub enum LeaseArgs {
    /// Grant a lease of TTL (e.g. 10s, 1m; at most a day); prints its id
    Grant {
        /// Its time to live
        ttl: String,
    },
    /// Revoke lease ID, deleting every key attached to it
    Revoke {
        /// The lease's id
        id: u64,
    },
    /// Keep lease ID alive, renewing it every third of its TTL until
    /// Ctrl+C (exit 0) or the lease is found gone (exit 1); --once renews
    /// it once
    Keepalive {
        /// The lease's id
        id: u64,
        /// Renew once and exit
        #[arg(long)]
        once: bool,
    },
    /// Show lease ID's TTL, time left and keys (exit 1 if it is gone)
    Ttl {
        /// The lease's id
        id: u64,
    },
    /// List every lease with its TTL and time left
    List,
}

/// A checked `lease` command.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LeaseCommand {
    /// Grant a lease.
    Grant {
        /// Its TTL.
        ttl: Duration,
    },
    /// Revoke a lease.
    Revoke {
        /// Its id.
        id: u64,
    },
    /// Keep a lease alive.
    KeepAlive {
        /// Its id.
        id: u64,
        /// Once, or until Ctrl+C.
        once: bool,
    },
    /// Describe a lease.
    Ttl {
        /// Its id.
        id: u64,
    },
    /// List the leases.
    List,
}

impl TryFrom<LeaseArgs> for LeaseCommand {
    type Error = String;

    fn try_from(args: LeaseArgs) -> Result<LeaseCommand, String> {
        Ok(match args {
            LeaseArgs::Grant { ttl } => {
                let ttl = humantime::parse_duration(&ttl).map_err(|e| format!("lease grant {ttl:?}: {e}"))?;
                let ms = ttl.as_millis();
                let max = u128::from(graft_kv::protocol::MAX_LEASE_TTL_MS);
                if ms == 0 || ms > max {
                    return Err(format!(
                        "a lease TTL is 1ms to 24h, not {}",
                        humantime::format_duration(ttl)
                    ));
                }
                LeaseCommand::Grant { ttl }
            }
            LeaseArgs::Revoke { id } => LeaseCommand::Revoke { id },
            LeaseArgs::Keepalive { id, once } => LeaseCommand::KeepAlive { id, once },
            LeaseArgs::Ttl { id } => LeaseCommand::Ttl { id },
            LeaseArgs::List => LeaseCommand::List,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttls_are_checked() {
        let grant = |ttl: &str| LeaseCommand::try_from(LeaseArgs::Grant { ttl: ttl.into() });
        assert_eq!(grant("10s"), Ok(LeaseCommand::Grant { ttl: Duration::from_secs(10) }));
        assert_eq!(grant("1500ms"), Ok(LeaseCommand::Grant { ttl: Duration::from_millis(1500) }));
        assert!(grant("0s").unwrap_err().contains("1ms to 24h"));
        assert!(grant("2days").unwrap_err().contains("1ms to 24h"));
        assert!(grant("soon").is_err());
    }
}
