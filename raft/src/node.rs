//! The lifecycle of one Raft member, as the broker uses it: open from a data directory, serve
//! Raft RPCs, initialise a group, change membership, shut down cleanly.
//!
//! ```text
//! RaftNode::start(config, listener, state_machine)
//!   opens   <data_dir>/log/, raft-meta   (log_store: the commit log in segment files)
//!   opens   <data_dir>/snapshot/          (sm_adapter: current snapshot)
//!   serves  the caller's bound listener   (network::server)
//!   starts  openraft::Raft                (network::client reaches the other members)
//! RaftNode::shutdown()
//!   stops the RPC server, shuts openraft down, lets the flusher finish, releases redb
//! ```
//!
//! The log is the commit log, so nothing may be purged: openraft never snapshots on its own
//! (`SnapshotPolicy::Never`) and keeps every log entry even after a manual snapshot
//! (`max_in_snapshot_log_to_keep = u64::MAX`). Followers catch up by replication.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use openraft::errors::{InitializeError, RaftError};
use openraft::{ChangeMembers, ServerState, SnapshotPolicy};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::log_store::{
    DEFAULT_LOG_CACHE_BYTES, DEFAULT_SCRUB_BYTES_PER_SEC, FlusherHandle, LogReader, LogStore,
    LogStoreConfig, LogStoreError, LogStoreMetricsSnapshot, ScrubConfig,
};
use crate::network::{NetworkFactory, RaftServer};
use crate::segment::SegmentConfig;
use crate::sm_adapter::{SnapshotFileError, StateMachineReleased, StateMachineStore};
use crate::snapshot::SnapshotInbox;
use crate::state_machine::StateMachine;
use crate::storage_fault::{FailureLatch, StorageFailure};
use crate::types::{
    ClientWriteError, ClientWriteResponse, Fatal, MetricsReceiver, Node, NodeId, Raft, TypeConfig,
};

/// Leader heartbeat period, and openraft's timeout for one heartbeat. Append RPCs have the
/// network's own, longer timeout ([`APPEND_TIMEOUT`](crate::network::APPEND_TIMEOUT)), suited to
/// TCP retransmission and to the follower's fsync.
///
/// How a failover's time is made (openraft 0.10, `core/raft_core.rs` `handle_tick_election`,
/// `engine/engine_config.rs`): a follower campaigns once `leader lease + election timeout` has
/// passed without a heartbeat, where the lease is the maximum election timeout; so with
/// `min..max` the election starts `max + min .. 2 * max` after the leader's last heartbeat. Then
/// pre-vote, vote, the new leader's first commit, its registration with the NameServers and the
/// clients' next route refresh (~0.1-0.2 s together).
///
/// Measured with `bench/failover.sh` (10 kill -9s of the leader under load, bench/RESULTS.md):
/// 150 / 500-800 ms gave a 1.58 s median failover on openraft 0.10 (1.84 s on 0.9);
/// 100 / 250-400 ms gives 0.84 s (max 0.89 s), also under full batched load, and no election
/// happened under ~5 minutes of the heaviest shapes (8 batches of 256 in flight, 4 x 256
/// single sends, 1 KiB and 100 B) with the machine's load average at 9-11. Pre-vote is what
/// makes the shorter timeouts safe here: a follower that misses heartbeats because its own
/// process is starved of CPU asks first, and the other follower, still hearing the leader,
/// refuses, so no term is raised (ARCHITECTURE.md decision 10).
///
/// Earlier (openraft 0.9, no pre-vote): 150 / 750-1500 ms gave a 3.05 s median, 150 / 500-800
/// ms 1.85-1.90 s; 400-700 ms split a vote (3.3-3.7 s).
pub const DEFAULT_HEARTBEAT_INTERVAL_MS: u64 = 100;

/// Lower bound of the randomized election timeout (ARCHITECTURE.md #10: chosen by measurement,
/// see [`DEFAULT_HEARTBEAT_INTERVAL_MS`]).
pub const DEFAULT_ELECTION_TIMEOUT_MIN_MS: u64 = 250;

/// Upper bound of the randomized election timeout; also openraft's leader lease.
pub const DEFAULT_ELECTION_TIMEOUT_MAX_MS: u64 = 400;

/// The most entries one append RPC carries; with 1 KiB entries that is 2 MiB per RPC, far below
/// the frame cap, and enough that one follower fsync covers thousands of entries.
pub const DEFAULT_MAX_PAYLOAD_ENTRIES: u64 = 2_048;

/// How long [`RaftNode::shutdown`] waits for openraft to let go of the state machine.
pub const SHUTDOWN_WAIT_MAX: std::time::Duration = std::time::Duration::from_secs(10);

/// How long sending and installing a whole snapshot may take.
pub const DEFAULT_INSTALL_SNAPSHOT_TIMEOUT_MS: u64 = 30_000;

/// How long [`transfer_leader`] waits for the named member to lead. openraft's target first
/// waits until it has flushed the leader's log (at most one minimum election timeout), then wins
/// one election; 5 s covers that with room on a loaded machine.
pub const TRANSFER_LEADER_WAIT_MAX: std::time::Duration = std::time::Duration::from_secs(5);

/// How often [`transfer_leader`] repeats the hand-over while the target does not lead yet: a
/// target still catching up ignores the first request, and the leader resends the request with
/// its current last log id.
pub const TRANSFER_LEADER_RETRY_INTERVAL: std::time::Duration =
    std::time::Duration::from_millis(500);

/// The openraft timers of a member.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RaftTimers {
    pub heartbeat_interval_ms: u64,
    pub election_timeout_min_ms: u64,
    pub election_timeout_max_ms: u64,
}

impl Default for RaftTimers {
    fn default() -> Self {
        RaftTimers {
            heartbeat_interval_ms: DEFAULT_HEARTBEAT_INTERVAL_MS,
            election_timeout_min_ms: DEFAULT_ELECTION_TIMEOUT_MIN_MS,
            election_timeout_max_ms: DEFAULT_ELECTION_TIMEOUT_MAX_MS,
        }
    }
}

/// Everything needed to start a member.
#[derive(Clone, Debug)]
pub struct NodeConfig {
    pub node_id: NodeId,
    /// Holds the log (`log/` segment files and `raft-meta`) and the current snapshot
    /// (`snapshot/`). The state machine keeps its own files wherever its owner opens them (the
    /// broker: in this directory too).
    pub data_dir: PathBuf,
    pub timers: RaftTimers,
    pub max_payload_entries: u64,
    pub install_snapshot_timeout_ms: u64,
    /// Byte cap of the in-memory cache of recent log entries.
    pub log_cache_bytes: usize,
    /// The size at which a log segment file is sealed and the next one started.
    pub segment_bytes: u64,
    /// TEST ONLY: the log store skips its fsyncs (see [`SegmentConfig::unsafe_skip_fsync`]).
    pub unsafe_skip_fsync: bool,
    /// The log's background check of its finalized segments (`None`: off).
    pub log_scrub: Option<ScrubConfig>,
    /// A name for the group, shown in openraft's logs.
    pub cluster_name: String,
    /// Plaintext or mutual-TLS links to the other members.
    pub tls: crate::network::RaftTls,
}

/// How often the log scrub checks every finalized segment again (the first pass runs at start).
pub const DEFAULT_LOG_SCRUB_INTERVAL: std::time::Duration =
    std::time::Duration::from_secs(24 * 60 * 60);

impl NodeConfig {
    /// A config with the default timers and limits.
    pub fn new(node_id: NodeId, data_dir: impl Into<PathBuf>) -> Self {
        NodeConfig {
            node_id,
            data_dir: data_dir.into(),
            timers: RaftTimers::default(),
            max_payload_entries: DEFAULT_MAX_PAYLOAD_ENTRIES,
            install_snapshot_timeout_ms: DEFAULT_INSTALL_SNAPSHOT_TIMEOUT_MS,
            log_cache_bytes: DEFAULT_LOG_CACHE_BYTES,
            segment_bytes: crate::segment::DEFAULT_SEGMENT_BYTES,
            unsafe_skip_fsync: false,
            log_scrub: Some(ScrubConfig {
                interval: DEFAULT_LOG_SCRUB_INTERVAL,
                bytes_per_sec: DEFAULT_SCRUB_BYTES_PER_SEC,
            }),
            cluster_name: "raftmq".to_string(),
            tls: crate::network::RaftTls::default(),
        }
    }

    /// The openraft config this node runs with.
    pub fn openraft_config(&self) -> Result<openraft::Config, NodeError> {
        let config = openraft::Config {
            cluster_name: self.cluster_name.clone(),
            heartbeat_interval: self.timers.heartbeat_interval_ms,
            election_timeout_min: self.timers.election_timeout_min_ms,
            election_timeout_max: self.timers.election_timeout_max_ms,
            install_snapshot_timeout: self.install_snapshot_timeout_ms,
            max_payload_entries: self.max_payload_entries,
            // A member cut off from its group and healed must not depose a healthy leader: it
            // asks whether it could win (pre-vote) before it raises its term, and only a
            // member that would win campaigns for real.
            enable_pre_vote: Some(true),
            // The log is the commit log: never snapshot on our own, never purge.
            snapshot_policy: SnapshotPolicy::Never,
            max_in_snapshot_log_to_keep: u64::MAX,
            ..openraft::Config::default()
        };
        config
            .validate()
            .map_err(|e| NodeError::Config(Box::new(e)))
    }
}

/// Why a member could not start, change, or stop. (openraft's errors are boxed: they are
/// large, and errors should not make every `Result` large.)
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("invalid raft config: {0}")]
    Config(#[source] Box<openraft::ConfigError>),
    #[error(transparent)]
    LogStore(#[from] LogStoreError),
    #[error(transparent)]
    Snapshot(#[from] SnapshotFileError),
    #[error("the raft RPC listener: {0}")]
    Listener(#[source] std::io::Error),
    #[error("raft stopped: {0}")]
    Fatal(#[source] Box<Fatal>),
    #[error("cannot initialize the group: {0}")]
    Initialize(#[source] Box<RaftError<TypeConfig, InitializeError<TypeConfig>>>),
    #[error("membership change failed: {0}")]
    Membership(#[source] Box<RaftError<TypeConfig, ClientWriteError>>),
    #[error("raft did not shut down cleanly: {0}")]
    Shutdown(String),
    #[error("member {node_id} does not lead (leader: {leader:?}); transfer on the leader")]
    NotLeader {
        node_id: NodeId,
        leader: Option<NodeId>,
    },
    #[error("member {to} is not a voter of the group; only voters can lead")]
    NotVoter { to: NodeId },
    #[error("member {to} does not replicate from this leader; it cannot take over")]
    NotReplicating { to: NodeId },
    #[error(
        "member {to} did not take over within {waited:?} (this leader stops proposing while it hands over)"
    )]
    TransferTimedOut {
        to: NodeId,
        waited: std::time::Duration,
    },
}

impl From<Fatal> for NodeError {
    fn from(fatal: Fatal) -> Self {
        NodeError::Fatal(Box::new(fatal))
    }
}

fn membership_error(e: RaftError<TypeConfig, ClientWriteError>) -> NodeError {
    NodeError::Membership(Box::new(e))
}

/// Hands leadership from this member (the leader) to the voter `to` with openraft's transfer:
/// the leader stops proposing, `to` catches up with the leader's log and wins an election that
/// the other voters grant at once (no election timeout passes). Returns once this member sees
/// `to` lead, or fails after [`TRANSFER_LEADER_WAIT_MAX`].
///
/// Refused up front unless this member leads and `to` is a voter that replicates from it: once
/// a transfer starts, openraft's leader takes no new proposal until someone else leads.
pub async fn transfer_leader(raft: &Raft, to: NodeId) -> Result<(), NodeError> {
    let metrics = raft.metrics().borrow_watched().clone();
    if metrics.current_leader == Some(to) {
        return Ok(());
    }
    if metrics.state != ServerState::Leader || metrics.current_leader != Some(metrics.id) {
        return Err(NodeError::NotLeader {
            node_id: metrics.id,
            leader: metrics.current_leader,
        });
    }
    let membership = metrics.membership_config.membership();
    if !membership.voter_ids().any(|id| id == to) {
        return Err(NodeError::NotVoter { to });
    }
    let replicating = metrics
        .replication
        .as_ref()
        .and_then(|replication| replication.get(&to))
        .is_some_and(|matched| matched.is_some());
    if !replicating {
        return Err(NodeError::NotReplicating { to });
    }

    let deadline = tokio::time::Instant::now() + TRANSFER_LEADER_WAIT_MAX;
    let mut leads = raft.metrics();
    loop {
        raft.trigger().transfer_leader(to).await?;
        let retry_at = (tokio::time::Instant::now() + TRANSFER_LEADER_RETRY_INTERVAL).min(deadline);
        loop {
            if leads.borrow_watched().current_leader == Some(to) {
                tracing::info!(to, "leadership transferred");
                return Ok(());
            }
            match tokio::time::timeout_at(retry_at, leads.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => return Err(NodeError::Fatal(Box::new(Fatal::Stopped))),
                Err(_) => break,
            }
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(NodeError::TransferTimedOut {
                to,
                waited: TRANSFER_LEADER_WAIT_MAX,
            });
        }
    }
}

/// What a starting node keeps beside openraft's handle.
struct NodeHooks {
    released: Option<StateMachineReleased>,
    failure: FailureLatch,
    stop_applies: CancellationToken,
    #[cfg(feature = "fault-injection")]
    partition: crate::network::Partition,
}

/// What [`RaftNode::initialize`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InitializeOutcome {
    /// This call formed the group.
    Initialized,
    /// The node already belonged to an initialized group (a restart, or another member formed
    /// it first); nothing changed.
    AlreadyInitialized,
}

/// A running member of a Raft group.
pub struct RaftNode {
    node_id: NodeId,
    raft: Raft,
    server: RaftServer,
    flusher: FlusherHandle,
    log_reader: LogReader,
    state_machine_released: Option<StateMachineReleased>,
    state_machine_failure: FailureLatch,
    /// Cancelled at shutdown: an apply waiting for disk space gives up.
    stop_applies: CancellationToken,
    #[cfg(feature = "fault-injection")]
    partition: crate::network::Partition,
}

impl std::fmt::Debug for RaftNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RaftNode")
            .field("node_id", &self.node_id)
            .field("raft_addr", &self.server.local_addr())
            .finish_non_exhaustive()
    }
}

impl RaftNode {
    /// Opens the member's storage in `config.data_dir`, serves Raft RPCs on `listener` (bound
    /// by the caller, so a bind error is reported where the address is known, and tests can
    /// bind port 0) and starts openraft. A restarted member resumes from its data directory; a
    /// new one waits to be initialized or added.
    pub async fn start<S: StateMachine>(
        config: NodeConfig,
        listener: TcpListener,
        state_machine: S,
    ) -> Result<RaftNode, NodeError> {
        let raft_config = Arc::new(config.openraft_config()?);
        let log_store = LogStore::open(
            &config.data_dir,
            LogStoreConfig {
                cache_bytes: config.log_cache_bytes,
                segment_bytes: config.segment_bytes,
                unsafe_skip_fsync: config.unsafe_skip_fsync,
                scrub: config.log_scrub,
            },
        )?;
        let flusher = log_store.flusher();
        let log_reader = log_store.reader();
        let started = async {
            let mut sm_store =
                StateMachineStore::open(&config.data_dir, state_machine, log_reader.clone())?;
            let released = sm_store.released();
            let failure = sm_store.failure_latch();
            let stop_applies = sm_store.stop_token();
            let network =
                NetworkFactory::with_log(log_reader.clone()).with_tls(config.tls.connector.clone());
            #[cfg(feature = "fault-injection")]
            let partition = network.partition();
            let raft = Raft::new(config.node_id, raft_config, network, log_store, sm_store).await?;
            let hooks = NodeHooks {
                released,
                failure,
                stop_applies,
                #[cfg(feature = "fault-injection")]
                partition,
            };
            let inbox = Arc::new(SnapshotInbox::new(
                &config.data_dir,
                SegmentConfig {
                    segment_bytes: config.segment_bytes,
                    unsafe_skip_fsync: config.unsafe_skip_fsync,
                },
            ));
            match RaftServer::start(listener, raft.clone(), inbox, config.tls.acceptor.clone()) {
                Ok(server) => Ok((raft, server, hooks)),
                Err(source) => {
                    let _ = raft.shutdown().await;
                    Err(NodeError::Listener(source))
                }
            }
        };
        match started.await {
            Ok((raft, server, hooks)) => {
                tracing::info!(
                    node_id = config.node_id,
                    raft_addr = %server.local_addr(),
                    "raft node started"
                );
                Ok(RaftNode {
                    node_id: config.node_id,
                    raft,
                    server,
                    flusher,
                    log_reader,
                    state_machine_released: hooks.released,
                    state_machine_failure: hooks.failure,
                    stop_applies: hooks.stop_applies,
                    #[cfg(feature = "fault-injection")]
                    partition: hooks.partition,
                })
            }
            Err(e) => {
                flusher.stop().await;
                Err(e)
            }
        }
    }

    /// Forms a group of `members` (this node among them). Safe to call on every member and on
    /// restart: a node that already belongs to a group answers
    /// [`InitializeOutcome::AlreadyInitialized`].
    pub async fn initialize(
        &self,
        members: BTreeMap<NodeId, Node>,
    ) -> Result<InitializeOutcome, NodeError> {
        match self.raft.initialize(members).await {
            Ok(()) => Ok(InitializeOutcome::Initialized),
            Err(RaftError::APIError(InitializeError::NotAllowed(_))) => {
                Ok(InitializeOutcome::AlreadyInitialized)
            }
            Err(e) => Err(NodeError::Initialize(Box::new(e))),
        }
    }

    /// Adds a non-voting member and waits until it has caught up with the log (call on the
    /// leader).
    pub async fn add_learner(
        &self,
        id: NodeId,
        node: Node,
    ) -> Result<ClientWriteResponse, NodeError> {
        self.raft
            .add_learner(id, node, true)
            .await
            .map_err(membership_error)
    }

    /// Makes `voters` the voting members (call on the leader). With `retain`, removed voters
    /// stay as learners.
    pub async fn change_membership(
        &self,
        voters: BTreeSet<NodeId>,
        retain: bool,
    ) -> Result<ClientWriteResponse, NodeError> {
        self.raft
            .change_membership(ChangeMembers::ReplaceAllVoters(voters), retain)
            .await
            .map_err(membership_error)
    }

    /// The openraft handle: `client_write` / `client_write_ff` to propose, `metrics()` /
    /// `wait()` to observe, `ensure_linearizable()` before a linearizable read.
    pub fn raft(&self) -> &Raft {
        &self.raft
    }

    /// Hands leadership to the voter `to` (call on the leader); see [`transfer_leader`].
    pub async fn transfer_leader(&self, to: NodeId) -> Result<(), NodeError> {
        transfer_leader(&self.raft, to).await
    }

    /// A reader of the log (the commit log), for serving messages.
    pub fn log_reader(&self) -> LogReader {
        self.log_reader.clone()
    }

    /// The first storage failure of this member (its log, its state machine or its snapshot
    /// file), if one happened: openraft stops on it and keeps only its text, this keeps its kind
    /// ([`StorageFailure::kind`]: disk full, corrupt data, I/O error) and source.
    pub fn storage_failure(&self) -> Option<StorageFailure> {
        self.log_reader
            .first_failure()
            .map(StorageFailure::Log)
            .or_else(|| self.state_machine_failure.get())
    }

    /// Completes once this member's log store has failed (see [`LogReader::failed`]): a
    /// failure found by the log scrub on an idle member stops it at once, not at its next
    /// write.
    pub async fn log_failed(&self) -> StorageFailure {
        StorageFailure::Log(self.log_reader.failed().await)
    }

    /// Test hook: cuts this member's RPCs to chosen peers (feature `fault-injection`).
    #[cfg(feature = "fault-injection")]
    pub fn partition(&self) -> crate::network::Partition {
        self.partition.clone()
    }

    /// Counters of the log store (appends, transactions, fsyncs, ...).
    pub fn log_metrics(&self) -> LogStoreMetricsSnapshot {
        self.log_reader.metrics()
    }

    pub fn node_id(&self) -> NodeId {
        self.node_id
    }

    /// The address the Raft RPC server actually listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.server.local_addr()
    }

    /// Stops serving RPCs, shuts openraft down, waits until openraft has dropped the state
    /// machine (so its files are closed, unless its owner holds other handles), lets the flusher
    /// write what is queued, and closes the log's redb file. [`LogReader`] clones held elsewhere
    /// fail with `LogStoreError::Closed` afterwards.
    pub async fn shutdown(self) -> Result<(), NodeError> {
        let RaftNode {
            node_id,
            raft,
            server,
            flusher,
            log_reader,
            state_machine_released,
            stop_applies,
            ..
        } = self;
        stop_applies.cancel();
        server.shutdown().await;
        let raft_result = raft.shutdown().await;
        drop(raft);
        drop(log_reader);
        let released = match state_machine_released {
            Some(released) => released.wait(SHUTDOWN_WAIT_MAX).await,
            None => true,
        };
        flusher.stop().await;
        tracing::info!(node_id, "raft node stopped");
        raft_result.map_err(|e| NodeError::Shutdown(e.to_string()))?;
        if released {
            Ok(())
        } else {
            Err(NodeError::Shutdown(format!(
                "openraft still held the state machine after {SHUTDOWN_WAIT_MAX:?}"
            )))
        }
    }
}
