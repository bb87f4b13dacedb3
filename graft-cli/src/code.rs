//! Exit codes, and the errors that decide them: how graft-cli ends after a
//! command (used by the executor, `verify`, the batch runner and `main`).

use graft_kv::protocol::ApiError;
use graft_kv::ClientError;

use crate::command::UsageError;

/// Exit codes. A run of several commands exits with the highest.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Code {
    /// Done.
    Ok = 0,
    /// The key was absent (get, delete), or compare-and-swap did not swap.
    NoMatch = 1,
    /// The command or its options are wrong, or the cluster refused the
    /// request as invalid (too large, unknown member).
    Usage = 2,
    /// The cluster did not answer in time; a write's outcome is unknown.
    Unavailable = 3,
    /// Anything else (a member's internal error, an output error).
    Failure = 4,
}

impl Code {
    /// The process exit status.
    pub fn as_u8(self) -> u8 {
        self as u8
    }

    /// The code for a command run under `lock` that exited with `code`:
    /// 0 stays 0, anything else is a failure (4).
    pub fn from_exit(code: i32) -> Code {
        if code == 0 {
            Code::Ok
        } else {
            Code::Failure
        }
    }

    /// The code for a failed command.
    pub fn of_error(err: &anyhow::Error) -> Code {
        for cause in err.chain() {
            if cause.downcast_ref::<UsageError>().is_some() {
                return Code::Usage;
            }
            if cause.downcast_ref::<NoMemberAnswered>().is_some() {
                return Code::Unavailable;
            }
            if cause.downcast_ref::<graft_kv::WatchError>().is_some() {
                // A compacted start revision, or a refused watch.
                return Code::Usage;
            }
            if let Some(e) = cause.downcast_ref::<ClientError>() {
                return match e {
                    ClientError::Unavailable { .. } => Code::Unavailable,
                    ClientError::Api(api) => match api {
                        ApiError::KeyTooLarge { .. }
                        | ApiError::ValueTooLarge { .. }
                        | ApiError::Invalid(_)
                        | ApiError::Compacted { .. }
                        | ApiError::FutureRevision { .. } => Code::Usage,
                        ApiError::NotLeader { .. } | ApiError::Unavailable(_) | ApiError::SessionExpired => {
                            Code::Unavailable
                        }
                        ApiError::Internal(_) => Code::Failure,
                        // The lease is gone (expired or revoked): like a
                        // missing key.
                        ApiError::LeaseNotFound { .. } | ApiError::KeyNotFound { .. } => Code::NoMatch,
                    },
                };
            }
        }
        Code::Failure
    }
}

/// `status` or `member list` found no member that answers.
#[derive(Debug)]
pub struct NoMemberAnswered {
    /// Each address asked, and why it gave no answer.
    pub tried: Vec<(String, String)>,
}

impl std::fmt::Display for NoMemberAnswered {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let tried: Vec<String> = self.tried.iter().map(|(addr, e)| format!("{addr}: {e}")).collect();
        write!(f, "cluster unavailable: no member answered; tried {}", tried.join("; "))
    }
}

impl std::error::Error for NoMemberAnswered {}

/// A membership change got no answer in time: it may or may not have
/// taken effect. (The client marks only data writes so; see
/// [`ClientError::outcome_unknown`].) Its source is the client's error.
#[derive(Debug)]
pub struct ChangeOutcomeUnknown(pub ClientError);

impl std::fmt::Display for ChangeOutcomeUnknown {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("membership change outcome unknown")
    }
}

impl std::error::Error for ChangeOutcomeUnknown {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.0)
    }
}

/// Whether a failed command was a write (or a membership change) whose
/// outcome is unknown.
pub fn outcome_unknown(err: &anyhow::Error) -> bool {
    err.chain().any(|c| {
        c.downcast_ref::<ClientError>().is_some_and(ClientError::outcome_unknown)
            || c.downcast_ref::<ChangeOutcomeUnknown>().is_some()
    })
}
