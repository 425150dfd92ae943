//! Who leads this broker group, as this member sees it (from openraft's metrics).

use openraft::ServerState;
use tokio::sync::watch;

use raftmq_raft::{NodeId, RaftMetrics};

/// A member's view of its group's leadership.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LeadershipView {
    pub node_id: NodeId,
    pub term: u64,
    pub leader: Option<NodeId>,
    /// This member leads (openraft says so, not just "the leader id is mine").
    pub is_leader: bool,
}

/// Reads the leadership view from openraft's metrics channel.
#[derive(Clone)]
pub struct Leadership {
    node_id: NodeId,
    metrics: watch::Receiver<RaftMetrics>,
}

impl Leadership {
    pub fn new(node_id: NodeId, metrics: watch::Receiver<RaftMetrics>) -> Self {
        Self { node_id, metrics }
    }

    pub fn view(&self) -> LeadershipView {
        view_of(self.node_id, &self.metrics.borrow())
    }

    pub fn is_leader(&self) -> bool {
        self.view().is_leader
    }

    /// A receiver for waiting on changes (registration re-registers when the view changes).
    pub fn subscribe(&self) -> watch::Receiver<RaftMetrics> {
        self.metrics.clone()
    }

    /// The metrics as they are now (for admin endpoints).
    pub fn metrics(&self) -> RaftMetrics {
        self.metrics.borrow().clone()
    }
}

pub fn view_of(node_id: NodeId, metrics: &RaftMetrics) -> LeadershipView {
    LeadershipView {
        node_id,
        term: metrics.current_term,
        leader: metrics.current_leader,
        is_leader: metrics.state == ServerState::Leader && metrics.current_leader == Some(node_id),
    }
}
