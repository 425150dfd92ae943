//! The concrete openraft type config for RaftMQ and short aliases for the types built on it.
//!
//! The raft crate knows nothing about messages: an entry's application payload is opaque bytes
//! (`AppRequest`), encoded and decoded by the state machine that owns them (the broker's).
//! Everything else in this workspace names these aliases, never `C: RaftTypeConfig`.

use bytes::Bytes;
use openraft::OptionalSend;
use openraft::raft::responder::Responder;
use openraft::type_config::alias;
use serde::{Deserialize, Serialize};

use crate::sm_adapter::StateMachineStore;

/// A member of a Raft group. RaftMQ uses small integers (`--node-id`).
pub type NodeId = u64;

/// What the group knows about a member: its Raft RPC address.
pub type Node = openraft::BasicNode;

/// The payload of a normal log entry: an application command, encoded by the application.
///
/// For the broker this is one encoded batch of messages (or an offset commit, a topic change ...).
/// It is serialized as one byte string, not element by element.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppRequest(pub Bytes);

/// What applying one normal entry returned, encoded by the application (for the broker: the
/// queue offsets it assigned). Blank and membership entries answer an empty response.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppResponse(pub Bytes);

/// openraft logs entries with `Display`: the length, never the (possibly large) bytes.
impl std::fmt::Display for AppRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "AppRequest({} bytes)", self.0.len())
    }
}

impl std::fmt::Display for AppResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "AppResponse({} bytes)", self.0.len())
    }
}

/// The one openraft type config of RaftMQ: openraft's defaults (`u64` terms, leader ids that
/// allow several leaders per term (`leader_id_adv`, the same layout 0.9 wrote to disk), tokio)
/// except the application data and the responder. Written out rather than with
/// `declare_raft_types!`, which cannot name a generic responder.
#[derive(Debug, Clone, Copy, Default, Eq, PartialEq, Ord, PartialOrd)]
pub struct TypeConfig {}

impl openraft::RaftTypeConfig for TypeConfig {
    type D = AppRequest;
    type R = AppResponse;
    type NodeId = NodeId;
    type Node = Node;
    type Term = u64;
    type LeaderId = openraft::impls::leader_id_adv::LeaderId<Self::Term, Self::NodeId>;
    type Vote = openraft::impls::Vote<Self::LeaderId>;
    type Payload = openraft::EntryPayload<Self::D, Self::NodeId, Self::Node>;
    type Entry =
        openraft::Entry<<Self::LeaderId as openraft::vote::RaftLeaderId>::Committed, Self::Payload>;
    type Responder<T>
        = CallbackResponder<T>
    where
        T: OptionalSend + 'static;
    type Batch<T>
        = openraft::impls::InlineBatch<T>
    where
        T: OptionalSend + 'static;
    // What `declare_raft_types!` names too; openraft's `openraft-rt-tokio` crate is the
    // undeprecated path, not worth a dependency of its own for one name.
    #[allow(deprecated)]
    type AsyncRuntime = openraft::impls::TokioRuntime;
    type ErrorSource = openraft::impls::BoxedErrorSource;
}

/// Answers a `Raft::client_write_ff` proposal by calling a function with its outcome, on the
/// openraft task that completes it (its state-machine task once the entry is applied; its core
/// when the proposal is refused). It spares the proposer a task of its own that waits on a
/// channel for each entry (a wake-up, often a context switch, per entry). The function must be
/// quick and must not block: it only hands the outcome on. If openraft drops the responder
/// without completing it (it stopped), the function is dropped uncalled.
pub struct CallbackResponder<T>(Box<dyn FnOnce(T) + Send + 'static>);

impl<T> CallbackResponder<T> {
    pub fn new(on_complete: impl FnOnce(T) + Send + 'static) -> Self {
        CallbackResponder(Box::new(on_complete))
    }
}

impl<T> std::fmt::Debug for CallbackResponder<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CallbackResponder")
    }
}

impl<T: OptionalSend + 'static> Responder<TypeConfig, T> for CallbackResponder<T> {
    fn on_complete(self, result: T) {
        (self.0)(result)
    }
}

/// A snapshot on disk: the state machine's image and the log entries that travel with it (see
/// [`crate::snapshot`]).
pub type SnapshotData = crate::snapshot::SnapshotBundle;

/// The openraft handle of a member, over the one state machine adapter.
pub type Raft = openraft::Raft<TypeConfig, StateMachineStore>;
pub type Entry = alias::EntryOf<TypeConfig>;
pub type EntryPayload = alias::EntryPayloadOf<TypeConfig>;
pub type LogId = alias::LogIdOf<TypeConfig>;
/// The leader id that a log id carries (term and node id).
pub type CommittedLeaderId = alias::CommittedLeaderIdOf<TypeConfig>;
pub type Vote = alias::VoteOf<TypeConfig>;
pub type Membership = openraft::Membership<NodeId, Node>;
pub type StoredMembership = alias::StoredMembershipOf<TypeConfig>;
pub type SnapshotMeta = alias::SnapshotMetaOf<TypeConfig>;
pub type Snapshot = alias::SnapshotOf<TypeConfig, SnapshotData>;
pub type RaftMetrics = openraft::RaftMetrics<TypeConfig>;
/// A receiver of [`RaftMetrics`] updates (`Raft::metrics()`); read it through
/// [`MetricsReceiver`]'s methods (`borrow_watched`, `changed`).
pub type MetricsWatch = alias::WatchReceiverOf<TypeConfig, RaftMetrics>;
pub use openraft::async_runtime::WatchReceiver as MetricsReceiver;
/// Who leads, the vote, the membership: openraft's metrics that change only with leadership or
/// membership, not with every entry (`Raft::server_metrics()`).
pub type ServerMetrics = openraft::metrics::RaftServerMetrics<TypeConfig>;
/// A receiver of [`ServerMetrics`] updates. Tasks that only care about leadership wait on this
/// one: [`MetricsWatch`] changes several times per committed entry, and each change wakes
/// every waiter (a context switch each).
pub type ServerMetricsWatch = alias::WatchReceiverOf<TypeConfig, ServerMetrics>;
pub type StorageError = openraft::StorageError<TypeConfig>;
pub type Fatal = openraft::errors::Fatal<TypeConfig>;
pub type ClientWriteError = openraft::errors::ClientWriteError<TypeConfig>;
pub type ClientWriteResponse = openraft::raft::ClientWriteResponse<TypeConfig>;
pub type ClientWriteResult = openraft::raft::ClientWriteResult<TypeConfig>;
/// What `Raft::client_write_ff` answers through once the entry is applied (or refused): a
/// [`CallbackResponder`].
pub type WriteResponder = alias::WriteResponderOf<TypeConfig>;

/// How long ago a quorum last acknowledged this member as leader, as of now; `None` when it
/// does not lead or no quorum has acknowledged it yet. The only voter of a group is its own
/// quorum (openraft records no acknowledgement then): zero.
pub fn since_quorum_ack(metrics: &RaftMetrics) -> Option<std::time::Duration> {
    use openraft::Instant as _;
    let leads = metrics.state == openraft::ServerState::Leader;
    let mut voters = metrics.membership_config.membership().voter_ids();
    let only_voter = voters.next() == Some(metrics.id) && voters.next().is_none();
    if leads && only_voter {
        return Some(std::time::Duration::ZERO);
    }
    metrics.last_quorum_acked.as_ref().map(|at| at.elapsed())
}

/// A log id of term `term` written by leader `node_id` at `index`.
pub fn log_id(term: u64, node_id: NodeId, index: u64) -> LogId {
    LogId::new(CommittedLeaderId { term, node_id }, index)
}
