//! One broker member, wired together: the state machine under Raft, the proposal batcher, the
//! remoting server, NameServer registration, client expiry and the admin HTTP server.
//!
//! The caller binds the listeners (the `mqbroker` binary from its flags, a test on
//! `127.0.0.1:0`) and gives a shutdown future, as in tokio's mini-redis `server::run`:
//!
//! ```text
//! Broker::start(config, Listeners { remoting, raft, admin, grpc })
//!   <data_dir>/broker-state.redb     BrokerStateMachine (index, offsets, topics)
//!   <data_dir>/raft/                 RaftNode (the log = the commit log), on `raft`
//!   remoting                         remoting server -> processor::BrokerHandler
//!   admin                            admin HTTP
//!   grpc                             RocketMQ 5 gRPC -> grpc::MessagingServer
//! Broker::run(shutdown)
//!   serves until `shutdown` completes or Raft stops on a storage error; then stops accepting,
//!   answers requests in hand, unregisters, stops Raft, closes storage
//! ```

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use raftmq_remoting::rpc_client::{RpcClient, RpcClientConfig};
use raftmq_remoting::server::{Server, ServerConfig};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{error, info, warn};

use crate::admin::{self, AdminState};
use crate::batcher::Proposer;
use crate::config::BrokerConfig;
use crate::context::BrokerContext;
use crate::leadership::Leadership;
use crate::message_reader::MessageReader;
use crate::metrics::BrokerMetrics;
use crate::processor::BrokerHandler;
use crate::state_machine::BrokerStateMachine;
use raftmq_raft::{
    DEFAULT_SCRUB_BYTES_PER_SEC, InitializeOutcome, MetricsReceiver, Node, NodeConfig, NodeError,
    Raft, RaftNode, ScrubConfig, StateMachineError,
};

/// How often silent clients are looked for.
pub const CLIENT_EXPIRY_SCAN: Duration = Duration::from_secs(10);
/// The state machine's file in the data directory.
pub const STATE_FILE: &str = "broker-state.redb";

/// Why a broker could not start, or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    #[error("data directory {path}: {source}")]
    DataDir {
        path: String,
        source: std::io::Error,
    },
    #[error("broker state: {0}")]
    State(#[from] StateMachineError),
    #[error("raft: {0}")]
    Raft(#[from] NodeError),
    /// A listener handed in cannot report its address (it is not a bound TCP socket).
    #[error("the {what} listener: {source}")]
    Listener {
        what: &'static str,
        source: std::io::Error,
    },
    /// Raft stopped on its own (a storage error: a full disk, a failed fsync): this member can
    /// no longer take part in its group.
    #[error("raft stopped: {0}")]
    RaftStopped(String),
}

/// The sockets a member serves on, bound by the caller.
#[derive(Debug)]
pub struct Listeners {
    /// RocketMQ remoting, for clients.
    pub remoting: TcpListener,
    /// Raft RPCs from the other members of the group.
    pub raft: TcpListener,
    /// Admin HTTP.
    pub admin: TcpListener,
    /// RocketMQ 5 gRPC (MessagingService), for the official 5.x clients.
    pub grpc: TcpListener,
}

/// A started broker member: storage open, Raft running, every server accepting.
pub struct Broker {
    node: RaftNode,
    ctx: Arc<BrokerContext>,
    shutdown: CancellationToken,
    tasks: TaskTracker,
    remoting_addr: SocketAddr,
    admin_addr: SocketAddr,
    grpc_addr: SocketAddr,
}

impl Broker {
    /// Opens the member's storage in `config.data_dir`, starts Raft on `listeners.raft` (the
    /// member with the smallest id in `config.peers` forms the group), and serves remoting and
    /// admin HTTP on the other two listeners.
    pub async fn start(config: BrokerConfig, listeners: Listeners) -> Result<Broker, BrokerError> {
        Self::start_with_ui(config, listeners, axum::Router::new()).await
    }

    /// [`start`](Self::start), serving `ui` (the binary's dashboard under `/ui`) beside the
    /// admin endpoints.
    pub async fn start_with_ui(
        config: BrokerConfig,
        listeners: Listeners,
        ui: axum::Router,
    ) -> Result<Broker, BrokerError> {
        let Listeners {
            remoting,
            raft: raft_listener,
            admin: admin_listener,
            grpc: grpc_listener,
        } = listeners;
        let local_addr = |listener: &TcpListener, what| {
            listener
                .local_addr()
                .map_err(|source| BrokerError::Listener { what, source })
        };
        let remoting_addr = local_addr(&remoting, "remoting")?;
        let admin_addr = local_addr(&admin_listener, "admin HTTP")?;
        let grpc_addr = local_addr(&grpc_listener, "gRPC")?;

        let data_dir_error = |source| BrokerError::DataDir {
            path: config.data_dir.display().to_string(),
            source,
        };
        raftmq_raft::segment::create_dir_all_durably(&config.data_dir).map_err(data_dir_error)?;
        let state_machine = BrokerStateMachine::open(&config.data_dir.join(STATE_FILE))?;
        // The state file may be new: its directory entry is durable only once the directory is
        // synced (redb syncs the file, not its directory).
        std::fs::File::open(&config.data_dir)
            .and_then(|dir| dir.sync_all())
            .map_err(data_dir_error)?;
        let state = state_machine.state();

        let mut node_config = NodeConfig::new(config.node_id, config.data_dir.join("raft"));
        node_config.timers = config.raft_timers.clone();
        node_config.cluster_name = config.broker_name.clone();
        node_config.segment_bytes = config.segment_bytes;
        node_config.unsafe_skip_fsync = config.unsafe_skip_fsync;
        node_config.log_scrub = config.log_scrub_interval.map(|interval| ScrubConfig {
            interval,
            bytes_per_sec: DEFAULT_SCRUB_BYTES_PER_SEC,
        });
        node_config.tls = config.tls.raft.clone();
        let node = RaftNode::start(node_config, raft_listener, state_machine).await?;
        // One member forms the group: the one with the smallest id. If every member
        // initialized, each would campaign at once and the first terms would be lost to
        // competing candidates. The others join when the first leader reaches them.
        let founder = config.peers.keys().next().copied();
        if !config.join && founder == Some(config.node_id) {
            let members: BTreeMap<_, _> = config
                .peers
                .iter()
                .map(|(id, addr)| (*id, Node::new(addr.clone())))
                .collect();
            match node.initialize(members).await? {
                InitializeOutcome::Initialized => {
                    info!(peers = ?config.peers, "formed the broker group")
                }
                InitializeOutcome::AlreadyInitialized => info!("rejoined the broker group"),
            }
        }

        let shutdown = CancellationToken::new();
        let tasks = TaskTracker::new();
        let raft = node.raft().clone();
        let proposer = Proposer::start(
            raft.clone(),
            &tasks,
            shutdown.child_token(),
            config.dedup_window,
        );
        let leadership = Leadership::new(
            config.node_id,
            raft.metrics(),
            raft.server_metrics(),
            config.raft_timers.election_timeout_max_ms,
        );
        let ctx = Arc::new(BrokerContext::new(
            config.clone(),
            state,
            proposer,
            MessageReader::new(node.log_reader()),
            leadership,
            Arc::new(BrokerMetrics::new(
                &config.cluster_name,
                &config.broker_name,
                config.node_id,
            )),
            shutdown.clone(),
            tasks.clone(),
        ));

        let server = Server::new(
            remoting,
            Arc::new(BrokerHandler { ctx: ctx.clone() }),
            ServerConfig {
                tls: config.tls.remoting.clone(),
                ..ServerConfig::default()
            },
        );
        tasks.spawn(server.run(shutdown.clone().cancelled_owned()));
        tasks.spawn(crate::grpc::serve(
            ctx.clone(),
            grpc_listener,
            config.tls.grpc.clone(),
            shutdown.clone(),
        ));

        let router = admin::router(
            AdminState {
                ctx: ctx.clone(),
                raft: raft.clone(),
                log: node.log_reader(),
            },
            ui,
        );
        // The admin port speaks what the remoting port does (--tls-mode, same certificate).
        let admin_served = raftmq_admin_server::serve(
            admin_listener,
            config.tls.remoting.clone(),
            router,
            shutdown.clone(),
        );
        tasks.spawn(async move {
            if let Err(err) = admin_served.await {
                warn!(error = %err, "admin HTTP server failed");
            }
        });

        tasks.spawn(crate::registration::run(
            ctx.clone(),
            RpcClient::new(RpcClientConfig {
                tls: config.tls.connector.clone(),
                ..RpcClientConfig::default()
            }),
            shutdown.clone(),
        ));
        tasks.spawn(expire_clients(ctx.clone(), shutdown.clone()));
        tasks.spawn(count_leader_changes(ctx.clone(), shutdown.clone()));
        tasks.spawn(crate::schedule::run(ctx.clone(), shutdown.clone()));
        tasks.spawn(crate::timer::run(ctx.clone(), shutdown.clone()));
        tasks.spawn(crate::pop::dead_letter::run(ctx.clone(), shutdown.clone()));
        tasks.spawn(crate::transaction::run(ctx.clone(), shutdown.clone()));
        tasks.spawn(crate::transaction::relay_grpc_checks(
            ctx.clone(),
            shutdown.clone(),
        ));
        tasks.spawn(crate::retention::run(
            ctx.clone(),
            raft.clone(),
            node.log_reader(),
            shutdown.clone(),
        ));

        info!(
            broker = %config.broker_name,
            node_id = config.node_id,
            remoting = %remoting_addr,
            raft = %node.local_addr(),
            admin = %admin_addr,
            grpc = %grpc_addr,
            tls = %config.tls.settings.mode,
            "broker started"
        );
        Ok(Broker {
            node,
            ctx,
            shutdown,
            tasks,
            remoting_addr,
            admin_addr,
            grpc_addr,
        })
    }

    /// Where clients connect (the bound address; the advertised one is in the config).
    pub fn remoting_addr(&self) -> SocketAddr {
        self.remoting_addr
    }

    pub fn raft_addr(&self) -> SocketAddr {
        self.node.local_addr()
    }

    pub fn admin_addr(&self) -> SocketAddr {
        self.admin_addr
    }

    /// Where 5.x clients connect (gRPC; the advertised address is in the config).
    pub fn grpc_addr(&self) -> SocketAddr {
        self.grpc_addr
    }

    pub fn context(&self) -> &Arc<BrokerContext> {
        &self.ctx
    }

    /// The openraft handle (metrics, membership), as the admin endpoints use it.
    pub fn raft(&self) -> &Raft {
        self.node.raft()
    }

    /// Serves until `shutdown` completes, or until Raft stops on its own after a storage error
    /// (a full disk, a failed fsync), then stops cleanly: stops accepting requests, answers
    /// those in hand, unregisters from the NameServers, stops Raft and closes storage. A Raft
    /// failure is returned as [`BrokerError::RaftStopped`], so that the operator (or a
    /// supervisor) sees it.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> Result<(), BrokerError> {
        let failure = tokio::select! {
            () = shutdown => None,
            reason = self.failed() => Some(reason),
        };
        if let Some(reason) = &failure {
            error!(%reason, "stopping: this member can no longer take part in its group");
        }
        let stopped = self.stop().await;
        match failure {
            // A shutdown after a storage failure may itself report that failure: the first
            // one is what matters.
            Some(reason) => {
                if let Err(err) = stopped {
                    warn!(error = %err, "the stop after the failure also failed");
                }
                Err(BrokerError::RaftStopped(reason))
            }
            None => stopped,
        }
    }

    /// Completes once this member can no longer take part in its group: Raft stopped on its
    /// own, or its log store failed (the scrub may find corrupt data on an idle member, which
    /// openraft would notice only at its next write); returns why.
    async fn failed(&self) -> String {
        tokio::select! {
            reason = self.raft_stopped() => reason,
            failure = self.node.log_failed() => format!("{}: {failure}", failure.kind()),
        }
    }

    /// Completes once openraft's core has stopped on its own; returns why. It waits on the
    /// server metrics, which close when openraft's core stops (after it published its fatal
    /// error in the full metrics), rather than on the full metrics, which change several times
    /// per committed entry and would wake this task (on the runtime's main thread) for each.
    async fn raft_stopped(&self) -> String {
        let mut server = self.node.raft().server_metrics();
        loop {
            if let Err(fatal) = &self.node.raft().metrics().borrow_watched().running_state {
                // openraft keeps only the text of a storage error; the node kept its kind, so
                // the reason says whether the disk is full or a file is corrupt.
                return match self.node.storage_failure() {
                    Some(failure) => format!("{}: {failure}", failure.kind()),
                    None => fatal.to_string(),
                };
            }
            if server.changed().await.is_err()
                && self
                    .node
                    .raft()
                    .metrics()
                    .borrow_watched()
                    .running_state
                    .is_ok()
            {
                return "its metrics channel closed".to_string();
            }
        }
    }

    async fn stop(self) -> Result<(), BrokerError> {
        info!("broker stopping");
        self.shutdown.cancel();
        self.tasks.close();
        self.tasks.wait().await;
        self.node.shutdown().await?;
        info!("broker stopped");
        Ok(())
    }
}

/// Counts every change of the leader this member knows (`raftmq_raft_leader_changes_total`),
/// as it happens rather than at scrape time, so that a change between two scrapes is not
/// missed.
async fn count_leader_changes(ctx: Arc<BrokerContext>, shutdown: CancellationToken) {
    let mut metrics = ctx.leadership.subscribe();
    let mut known = metrics.borrow_and_update().current_leader;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            changed = metrics.changed() => {
                if changed.is_err() {
                    return; // Raft stopped
                }
                let leader = metrics.borrow_and_update().current_leader;
                if leader != known {
                    if leader.is_some() {
                        ctx.metrics.raft_leader_changes.inc();
                    }
                    known = leader;
                }
            }
        }
    }
}

async fn expire_clients(ctx: Arc<BrokerContext>, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(CLIENT_EXPIRY_SCAN);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {
                let changed = ctx.clients.expire(Instant::now());
                crate::processor::notify_consumer_ids_changed(&ctx, &changed);
            }
        }
    }
}
