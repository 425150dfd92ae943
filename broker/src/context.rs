//! Everything a request processor needs, in one place: configuration, the applied state, the
//! proposer, the log reader, the client registry, the leadership view and metrics.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::batcher::Proposer;
use crate::clients::ClientRegistry;
use crate::config::BrokerConfig;
use crate::error::RequestError;
use crate::leadership::Leadership;
use crate::message_reader::MessageReader;
use crate::metrics::BrokerMetrics;
use crate::queue_locks::QueueLocks;
use crate::state_machine::BrokerState;

/// Shared by every processor of one broker member.
pub struct BrokerContext {
    pub config: BrokerConfig,
    pub state: Arc<BrokerState>,
    pub proposer: Proposer,
    pub reader: MessageReader,
    pub clients: ClientRegistry,
    pub queue_locks: QueueLocks,
    pub leadership: Leadership,
    pub metrics: Arc<BrokerMetrics>,
    /// Fires when the broker stops: long polls answer at once.
    pub shutdown: CancellationToken,
    /// Background work started by requests (e.g. creating a group's retry topic).
    pub tracker: TaskTracker,
    /// Asks the registration task to register with the NameServers now (topics changed).
    pub register_now: Arc<Notify>,
    /// Serializes POP plans on this member (`crate::pop::pop`): a plan reads a queue's pop
    /// cursor, and a second plan from the same cursor would be refused at apply.
    pub pop_planning: tokio::sync::Mutex<()>,
    /// POP long polls held at once (`crate::pop::MAX_POP_WAITERS`); more answer POLLING_FULL.
    pub pop_waiters: tokio::sync::Semaphore,
    /// The 5.x clients' Telemetry streams open on this member (settings, check-backs).
    pub telemetry: Arc<crate::grpc::telemetry::TelemetryClients>,
    /// gRPC channels to the other members, for writes forwarded to the leader.
    pub grpc_channels: crate::grpc::forward::Channels,
    next_queue: AtomicU32,
}

impl BrokerContext {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        config: BrokerConfig,
        state: Arc<BrokerState>,
        proposer: Proposer,
        reader: MessageReader,
        leadership: Leadership,
        metrics: Arc<BrokerMetrics>,
        shutdown: CancellationToken,
        tracker: TaskTracker,
    ) -> Self {
        let grpc_channels = crate::grpc::forward::Channels::new(config.tls.grpc_client.clone());
        Self {
            config,
            state,
            proposer,
            reader,
            clients: ClientRegistry::default(),
            queue_locks: QueueLocks::default(),
            leadership,
            metrics,
            shutdown,
            tracker,
            register_now: Arc::new(Notify::new()),
            pop_planning: tokio::sync::Mutex::new(()),
            pop_waiters: tokio::sync::Semaphore::new(crate::pop::MAX_POP_WAITERS),
            telemetry: Arc::default(),
            grpc_channels,
            next_queue: AtomicU32::new(0),
        }
    }

    /// Refuses a write on a member that does not lead, before anything is proposed.
    pub fn require_leader(&self) -> Result<(), RequestError> {
        if self.leadership.may_write() {
            return Ok(());
        }
        Err(RequestError::NotLeader {
            broker_name: self.config.broker_name.clone(),
            node_id: self.config.node_id,
            leader: self.leadership.view().leader,
        })
    }

    /// Refuses a read of committed state (consumer offsets) where it could be stale: on a
    /// member that does not lead, or on a leader still applying what was committed before it
    /// was elected ([`Leadership::may_read_committed`]).
    pub fn require_current_leader(&self) -> Result<(), RequestError> {
        self.require_leader()?;
        if self.leadership.may_read_committed() {
            return Ok(());
        }
        Err(RequestError::LeaderCatchingUp {
            broker_name: self.config.broker_name.clone(),
            node_id: self.config.node_id,
        })
    }

    /// Whether this member enforces the ACL: the group's replicated switch, or its own `--acl`.
    pub fn acl_enforced(&self) -> bool {
        self.config.acl || self.state.with_acl(|acl| acl.enabled)
    }

    /// The ACL decision for a remoting request, before any processor sees it. A refusal is
    /// counted and logged (access key and reason, never a secret or signature) and answered
    /// with NO_PERMISSION by the caller.
    pub fn check_remoting_acl(
        &self,
        peer: std::net::IpAddr,
        request: &raftmq_protocol::RemotingCommand,
    ) -> Result<(), raftmq_protocol::acl::Denial> {
        use raftmq_protocol::acl::remoting::{needs_of, proof_of};
        let enforced = self.acl_enforced();
        if !enforced {
            return Ok(());
        }
        let decision = needs_of(request).and_then(|needs| {
            self.state.with_acl(|acl| {
                acl.check_with_bootstrap(
                    enforced,
                    peer,
                    Some(proof_of(request)),
                    &needs,
                    self.config.acl_bootstrap_admin.as_ref(),
                )
            })
        });
        match decision {
            Ok(_) => Ok(()),
            Err(denial) => {
                self.metrics.observe_acl_denied("remoting", denial.kind());
                tracing::warn!(
                    code = request.code,
                    %peer,
                    access_key = request
                        .ext_fields
                        .get(raftmq_protocol::acl::ACCESS_KEY)
                        .map_or("", String::as_str),
                    reason = %denial,
                    "request refused by the ACL"
                );
                Err(denial)
            }
        }
    }

    /// A queue for a send that let the broker choose (queue id < 0): round robin.
    pub fn next_queue(&self, queue_nums: u32) -> u32 {
        self.next_queue.fetch_add(1, Ordering::Relaxed) % queue_nums.max(1)
    }
}
