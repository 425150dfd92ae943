//! Who leads this broker group, as this member sees it (from openraft's metrics).

use std::time::Duration;

use openraft::ServerState;

use raftmq_raft::{
    MetricsReceiver, MetricsWatch, NodeId, RaftMetrics, ServerMetrics, ServerMetricsWatch,
    since_quorum_ack,
};

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
    metrics: MetricsWatch,
    /// Changes only with leadership, vote or membership: what waiters subscribe to.
    server: ServerMetricsWatch,
    quorum_lease_ms: u64,
}

impl Leadership {
    /// `quorum_lease_ms`: how long a leader may go without a quorum acknowledging it and still
    /// take writes (the longest election timeout: after that another leader may exist).
    pub fn new(
        node_id: NodeId,
        metrics: MetricsWatch,
        server: ServerMetricsWatch,
        quorum_lease_ms: u64,
    ) -> Self {
        Self {
            node_id,
            metrics,
            server,
            quorum_lease_ms,
        }
    }

    pub fn view(&self) -> LeadershipView {
        view_of(self.node_id, &self.metrics.borrow_watched())
    }

    /// Whether this member may take writes now: it leads, and a quorum has acknowledged it
    /// recently. A leader cut off from its group, or one restarted with the vote of an old term
    /// (openraft restores it as leader until it hears of the new term), refuses writes with a
    /// definite "not leader" instead of proposing entries that cannot commit and would leave
    /// their senders with timeouts.
    pub fn may_write(&self) -> bool {
        let metrics = self.metrics.borrow_watched();
        view_of(self.node_id, &metrics).is_leader
            && since_quorum_ack(&metrics)
                .is_some_and(|since| since <= Duration::from_millis(self.quorum_lease_ms))
    }

    /// Whether this member may answer reads that must never go back (a group's committed
    /// offsets): it may write, and it has applied an entry of its own term. A new leader's first
    /// entry is the blank one it commits on election, so once that is applied, everything
    /// committed before the election is too. Until then (after a restart the applied state may
    /// be behind what was committed, since the state machine fsyncs only every few applies), its
    /// applied state could be older than what a client was told is committed.
    pub fn may_read_committed(&self) -> bool {
        // One borrow at a time: the watch's lock is not re-entrant, and a second borrow while
        // openraft waits to publish new metrics would deadlock the member.
        if !self.may_write() {
            return false;
        }
        let metrics = self.metrics.borrow_watched();
        metrics
            .last_applied
            .is_some_and(|applied| applied.leader_id.term == metrics.current_term)
    }

    pub fn is_leader(&self) -> bool {
        self.view().is_leader
    }

    /// A receiver for waiting on leadership changes (registration re-registers when the view
    /// changes): it changes only with the leader, the vote or the membership. (The full
    /// metrics change several times per committed entry; a waiter on them was woken, a context
    /// switch each time, for every message.) Read the view with [`server_view_of`].
    pub fn subscribe(&self) -> ServerMetricsWatch {
        self.server.clone()
    }

    /// The metrics as they are now (for admin endpoints).
    pub fn metrics(&self) -> RaftMetrics {
        self.metrics.borrow_watched().clone()
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

/// The same view from the server metrics (see [`Leadership::subscribe`]).
pub fn server_view_of(node_id: NodeId, metrics: &ServerMetrics) -> LeadershipView {
    LeadershipView {
        node_id,
        term: metrics.vote.leader_id.term,
        leader: metrics.current_leader,
        is_leader: metrics.state == ServerState::Leader && metrics.current_leader == Some(node_id),
    }
}
