//! One broker member, wired together: the state machine under Raft, the proposal batcher, the
//! remoting server, NameServer registration, client expiry and the admin HTTP server.
//!
//! ```text
//! Broker::start(config)
//!   <data_dir>/broker-state.redb     BrokerStateMachine (index, offsets, topics)
//!   <data_dir>/raft/                 RaftNode (the log = the commit log)
//!   --listen                         remoting server -> processor::BrokerHandler
//!   --raft-listen                    Raft RPCs
//!   --admin-listen                   admin HTTP
//! RunningBroker::shutdown()
//!   stop accepting, answer requests in hand, unregister, stop Raft, close storage
//! ```

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use raftmq_remoting::rpc_client::RpcClient;
use raftmq_remoting::server::{Server, ServerConfig};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

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
    InitializeOutcome, MetricsReceiver, Node, NodeConfig, NodeError, RaftNode, StateMachineError,
};

/// How often silent clients are looked for.
pub const CLIENT_EXPIRY_SCAN: Duration = Duration::from_secs(10);
/// The state machine's file in the data directory.
pub const STATE_FILE: &str = "broker-state.redb";

/// Why a broker could not start or stop cleanly.
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
    #[error("cannot listen on {addr} ({what}): {source}")]
    Bind {
        what: &'static str,
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// A started broker member.
pub struct RunningBroker {
    node: RaftNode,
    ctx: Arc<BrokerContext>,
    shutdown: CancellationToken,
    tasks: TaskTracker,
    remoting_addr: SocketAddr,
    admin_addr: SocketAddr,
}

impl RunningBroker {
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

    pub fn context(&self) -> &Arc<BrokerContext> {
        &self.ctx
    }

    /// Completes if the broker must stop on its own: Raft stopped after a storage error (a full
    /// disk, a failed fsync). Returns why. The caller then calls [`shutdown`](Self::shutdown)
    /// and exits with an error, so that the operator (or a supervisor) sees it.
    pub async fn failed(&self) -> String {
        let mut metrics = self.node.raft().metrics();
        loop {
            if let Err(fatal) = &metrics.borrow_and_update().running_state {
                // openraft keeps only the text of a storage error; the node kept its kind, so
                // the reason says whether the disk is full or a file is corrupt.
                return match self.node.storage_failure() {
                    Some(failure) => format!("raft stopped: {}: {failure}", failure.kind()),
                    None => format!("raft stopped: {fatal}"),
                };
            }
            if metrics.changed().await.is_err() {
                return "raft stopped".to_string();
            }
        }
    }

    /// Stops accepting requests, answers those in hand, unregisters from the NameServers, stops
    /// Raft and closes storage.
    pub async fn shutdown(self) -> Result<(), BrokerError> {
        info!("broker stopping");
        self.shutdown.cancel();
        self.tasks.close();
        self.tasks.wait().await;
        self.node.shutdown().await?;
        info!("broker stopped");
        Ok(())
    }
}

/// Starts a broker member.
pub async fn start(config: BrokerConfig) -> Result<RunningBroker, BrokerError> {
    std::fs::create_dir_all(&config.data_dir).map_err(|source| BrokerError::DataDir {
        path: config.data_dir.display().to_string(),
        source,
    })?;
    let state_machine = BrokerStateMachine::open(&config.data_dir.join(STATE_FILE))?;
    let state = state_machine.state();

    let mut node_config = NodeConfig::new(
        config.node_id,
        config.data_dir.join("raft"),
        config.raft_listen,
    );
    node_config.timers = config.raft_timers.clone();
    node_config.cluster_name = config.broker_name.clone();
    let node = RaftNode::start(node_config, state_machine).await?;
    // One member forms the group: the one with the smallest id. If every member initialized,
    // each would campaign at once and the first terms would be lost to competing candidates.
    // The others join when the first leader reaches them.
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
    let proposer = Proposer::start(raft.clone(), &tasks, shutdown.child_token());
    let leadership = Leadership::new(
        config.node_id,
        raft.metrics(),
        config.raft_timers.election_timeout_max_ms,
    );
    let ctx = Arc::new(BrokerContext::new(
        config.clone(),
        state,
        proposer,
        MessageReader::new(node.log_reader()),
        leadership,
        Arc::new(BrokerMetrics::default()),
        shutdown.clone(),
        tasks.clone(),
    ));

    let listener = TcpListener::bind(config.listen)
        .await
        .map_err(|source| BrokerError::Bind {
            what: "remoting",
            addr: config.listen,
            source,
        })?;
    let remoting_addr = listener.local_addr().unwrap_or(config.listen);
    let server = Server::new(
        listener,
        Arc::new(BrokerHandler { ctx: ctx.clone() }),
        ServerConfig::default(),
    );
    tasks.spawn(server.run(shutdown.clone().cancelled_owned()));

    let admin_listener = TcpListener::bind(config.admin_listen)
        .await
        .map_err(|source| BrokerError::Bind {
            what: "admin HTTP",
            addr: config.admin_listen,
            source,
        })?;
    let admin_addr = admin_listener.local_addr().unwrap_or(config.admin_listen);
    let router = admin::router(AdminState {
        ctx: ctx.clone(),
        raft: raft.clone(),
        log: node.log_reader(),
    });
    let admin_shutdown = shutdown.clone();
    tasks.spawn(async move {
        let serve = axum::serve(admin_listener, router)
            .with_graceful_shutdown(admin_shutdown.cancelled_owned());
        if let Err(err) = serve.await {
            warn!(error = %err, "admin HTTP server failed");
        }
    });

    tasks.spawn(crate::registration::run(
        ctx.clone(),
        RpcClient::default(),
        shutdown.clone(),
    ));
    tasks.spawn(expire_clients(ctx.clone(), shutdown.clone()));
    tasks.spawn(crate::schedule::run(ctx.clone(), shutdown.clone()));

    info!(
        broker = %config.broker_name,
        node_id = config.node_id,
        remoting = %remoting_addr,
        raft = %node.local_addr(),
        admin = %admin_addr,
        "broker started"
    );
    Ok(RunningBroker {
        node,
        ctx,
        shutdown,
        tasks,
        remoting_addr,
        admin_addr,
    })
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
