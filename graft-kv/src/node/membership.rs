//! Membership on the node: proposing changes for clients, promoting
//! caught-up learners, and pointing the transport at the members of the
//! configuration (addresses from the address book, kept at append time).

use std::collections::BTreeSet;

use bytes::Bytes;
use graft_core::NodeId;
use tracing::{debug, info};

use crate::command::MemberContext;
use crate::mailbox::Responder;
use crate::protocol::{ApiError, Request};

use super::{Node, NodeError};

impl Node {
    pub(super) fn addr_of(&self, id: NodeId) -> Option<String> {
        self.addrs.get(id).map(str::to_owned)
    }

    /// On the leader: makes a learner that asked for it a voter once it has
    /// caught up with the commit index.
    pub(super) fn promote_caught_up_learner(&mut self) {
        let st = self.raw.status();
        let candidate = st.progress.iter().find(|(id, p)| {
            st.conf.learners.contains(id)
                && self.sm.members().get(id).is_some_and(|m| m.promote)
                && p.recent_active
                && p.matched + 16 >= st.hard_state.commit
        });
        if let Some((id, _)) = candidate {
            let cc = graft_core::ConfChange {
                kind: graft_core::ConfChangeKind::AddVoter,
                node: *id,
                context: Bytes::new(),
            };
            match self.raw.propose_conf_change(cc) {
                Ok(index) => info!("{}, promoting learner {id} to voter (entry {index})", self.id()),
                Err(e) => debug!("{}, cannot promote learner {id} yet: {e}", self.id()),
            }
        }
    }

    /// Proposes a membership change for a client.
    pub(super) fn propose_member_change(
        &mut self,
        req: Request,
        responder: Responder,
    ) -> Result<(), NodeError> {
        use graft_core::ConfChangeKind;
        let (kind, node, ctx) = match req {
            Request::AddMember { id, addr, promote } => {
                let kind = if self.raw.conf().voters.contains(&id) {
                    ConfChangeKind::AddVoter
                } else {
                    ConfChangeKind::AddLearner
                };
                (kind, id, Some(MemberContext { addr, promote }))
            }
            Request::PromoteMember { id } => (ConfChangeKind::AddVoter, id, None),
            Request::RemoveMember { id } => (ConfChangeKind::Remove, id, None),
            _ => {
                responder.send(Err(ApiError::Invalid("not a membership change".into())));
                return Ok(());
            }
        };
        let context = match ctx.map(|c| postcard::to_stdvec(&c)).transpose() {
            Ok(c) => Bytes::from(c.unwrap_or_default()),
            Err(e) => {
                responder.send(Err(ApiError::Internal(e.to_string())));
                return Ok(());
            }
        };
        match self.raw.propose_conf_change(graft_core::ConfChange { kind, node, context }) {
            Ok(index) => {
                info!("{}, proposed {kind:?} {node} at index {index}", self.id());
                self.pending_writes.insert(index, (self.raw.term(), responder));
            }
            Err(graft_core::Error::NotLeader { .. }) => responder.send(Err(self.not_leader())),
            Err(graft_core::Error::TransferInProgress) => {
                responder.send(Err(ApiError::NotLeader { leader: None }))
            }
            Err(graft_core::Error::ConfChange(
                e @ (graft_core::ConfChangeError::Pending(_) | graft_core::ConfChangeError::LeaderNotReady),
            )) => {
                responder.send(Err(ApiError::Unavailable(format!("membership change refused for now: {e}"))))
            }
            Err(graft_core::Error::ConfChange(e)) => {
                responder.send(Err(ApiError::Invalid(format!("membership change refused: {e}"))))
            }
            Err(e) => return Err(e.into()),
        }
        Ok(())
    }

    /// Points the transport at the members of the configuration (as of the
    /// log's end) and those the state machine still records (a removed
    /// member hears until its removal applies), at their newest addresses.
    pub(super) fn sync_peers(&mut self) {
        let mut members: BTreeSet<NodeId> = self.raw.conf().members().collect();
        members.extend(self.sm.members().keys());
        for id in self.transport.peer_ids() {
            if !members.contains(&id) {
                self.transport.remove_peer(id);
            }
        }
        for id in members {
            if let Some(addr) = self.addrs.get(id) {
                self.transport.set_peer(id, addr.to_owned());
            }
        }
    }
}
