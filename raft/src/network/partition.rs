//! Test hook (feature `fault-injection`): cuts a member's outgoing Raft RPCs to chosen peers,
//! as a network partition would, and counts what it refused by RPC kind, so that a test can
//! wait for "the member campaigned several times" instead of sleeping.
//!
//! A full partition of member F is F's hook cutting every peer plus every peer's hook cutting F:
//! nothing then travels in either direction. [`Partition::heal`] lets everything through again.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, MutexGuard};

use super::RpcRequest;
use crate::types::NodeId;

/// The kinds of Raft RPC, for counting refusals.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum RpcKind {
    AppendEntries,
    Vote,
    PreVote,
    FullSnapshot,
    TransferLeader,
}

impl RpcKind {
    pub(crate) fn of(request: &RpcRequest) -> RpcKind {
        match request {
            RpcRequest::AppendEntries(_) => RpcKind::AppendEntries,
            RpcRequest::Vote(_) => RpcKind::Vote,
            RpcRequest::PreVote(_) => RpcKind::PreVote,
            RpcRequest::SnapshotChunk { .. } => RpcKind::FullSnapshot,
            RpcRequest::TransferLeader(_) => RpcKind::TransferLeader,
        }
    }
}

#[derive(Debug, Default)]
struct State {
    cut: BTreeSet<NodeId>,
    refused: BTreeMap<RpcKind, u64>,
}

/// The switch of one member; clones share it.
#[derive(Clone, Debug, Default)]
pub struct Partition {
    state: Arc<Mutex<State>>,
}

impl Partition {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// From now on, RPCs to `peers` fail as unreachable (connections already open are not used).
    pub fn cut(&self, peers: impl IntoIterator<Item = NodeId>) {
        self.state().cut.extend(peers);
    }

    /// Lets RPCs to every peer through again.
    pub fn heal(&self) {
        self.state().cut.clear();
    }

    /// How many RPCs of `kind` were refused since the member started.
    pub fn refused(&self, kind: RpcKind) -> u64 {
        self.state().refused.get(&kind).copied().unwrap_or(0)
    }

    /// Whether a request to `target` may go; counts it when not.
    pub(crate) fn allows(&self, target: NodeId, request: &RpcRequest) -> bool {
        let mut state = self.state();
        if !state.cut.contains(&target) {
            return true;
        }
        *state.refused.entry(RpcKind::of(request)).or_default() += 1;
        false
    }
}
