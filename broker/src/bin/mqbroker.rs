//! `mqbroker`: one member of a RaftMQ broker group.
//!
//! ```text
//! mqbroker -n localhost:9876 --broker-name broker-a --node-id 1 \
//!   --peers 1=127.0.0.1:10912,2=127.0.0.1:20912,3=127.0.0.1:30912 --data-dir ./data/a1
//! mqbroker -c broker.toml          # the same keys in a TOML file; flags override it
//! ```

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use raftmq_broker::config::{BrokerConfig, BrokerOptions};
use tracing_subscriber::EnvFilter;

/// A RaftMQ broker member: RocketMQ's broker, with every broker group a Raft group.
#[derive(Parser, Debug)]
#[command(name = "mqbroker", version)]
struct Args {
    /// A TOML file with the same keys as the long flags (`broker-name = "broker-a"`, ...).
    #[arg(short = 'c', long = "config")]
    config: Option<PathBuf>,
    /// NameServer addresses, `host:port;host:port`.
    #[arg(short = 'n', long, env = "NAMESRV_ADDR")]
    namesrv: Option<String>,
    #[arg(long)]
    cluster_name: Option<String>,
    /// The broker group (RocketMQ's brokerName): one Raft group.
    #[arg(long)]
    broker_name: Option<String>,
    /// This member's Raft node id (1, 2, 3, ...).
    #[arg(long)]
    node_id: Option<u64>,
    /// The group's initial members: `1=host:raftport,2=host:raftport,...`.
    #[arg(long)]
    peers: Option<String>,
    /// Client listen address [default: 0.0.0.0:10911].
    #[arg(long)]
    listen: Option<String>,
    /// The address clients are told to use, if not the listen address.
    #[arg(long)]
    advertise: Option<String>,
    /// Raft RPC listen address [default: 127.0.0.1:10912].
    #[arg(long)]
    raft_listen: Option<String>,
    /// Admin HTTP listen address [default: 127.0.0.1:10913].
    #[arg(long)]
    admin_listen: Option<String>,
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Create topics on first send [default: true].
    #[arg(long)]
    auto_create_topic: Option<bool>,
    #[arg(long)]
    register_interval_ms: Option<u64>,
    #[arg(long)]
    max_message_bytes: Option<usize>,
    #[arg(long)]
    raft_heartbeat_ms: Option<u64>,
    #[arg(long)]
    raft_election_min_ms: Option<u64>,
    #[arg(long)]
    raft_election_max_ms: Option<u64>,
    /// Delay levels, RocketMQ's messageDelayLevel: level 1 first, units ms/s/m/h/d
    /// [default: "1s 5s 10s 30s 1m 2m 3m 4m 5m 6m 7m 8m 9m 10m 20m 30m 1h 2h"].
    #[arg(long)]
    message_delay_level: Option<String>,
    /// Join an existing group later (as a learner) instead of forming one from --peers.
    #[arg(long)]
    join: bool,
    /// TEST ONLY: acknowledge sends before they are committed (loses data; for jepsen-lite).
    #[arg(long, hide = true)]
    unsafe_ack_before_commit: bool,
}

impl Args {
    fn options(&self) -> BrokerOptions {
        BrokerOptions {
            namesrv: self.namesrv.clone(),
            cluster_name: self.cluster_name.clone(),
            broker_name: self.broker_name.clone(),
            node_id: self.node_id,
            peers: self.peers.clone(),
            listen: self.listen.clone(),
            advertise: self.advertise.clone(),
            raft_listen: self.raft_listen.clone(),
            admin_listen: self.admin_listen.clone(),
            data_dir: self.data_dir.clone(),
            auto_create_topic: self.auto_create_topic,
            register_interval_ms: self.register_interval_ms,
            max_message_bytes: self.max_message_bytes,
            raft_heartbeat_ms: self.raft_heartbeat_ms,
            raft_election_min_ms: self.raft_election_min_ms,
            raft_election_max_ms: self.raft_election_max_ms,
            message_delay_level: self.message_delay_level.clone(),
            join: self.join.then_some(true),
            unsafe_ack_before_commit: self.unsafe_ack_before_commit.then_some(true),
        }
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| EnvFilter::new("info,openraft=warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            // Our errors already carry their causes in their messages.
            eprintln!("mqbroker: {err}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: Args) -> anyhow::Result<()> {
    let file = match &args.config {
        Some(path) => BrokerOptions::from_toml_file(path)?,
        None => BrokerOptions::default(),
    };
    let config = BrokerConfig::from_options(file.merged_with(args.options()))?;
    if config.unsafe_ack_before_commit {
        tracing::warn!(
            "--unsafe-ack-before-commit: sends are acknowledged BEFORE they are committed; data will be lost"
        );
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let broker = raftmq_broker::broker::start(config).await?;
        // One line on stdout for scripts and tests: where this member listens.
        println!(
            "mqbroker listening remoting={} raft={} admin={}",
            broker.remoting_addr(),
            broker.raft_addr(),
            broker.admin_addr()
        );
        let failure = tokio::select! {
            _ = wait_for_signal() => None,
            reason = broker.failed() => Some(reason),
        };
        if let Some(reason) = &failure {
            tracing::error!(%reason, "stopping: this member can no longer take part in its group");
        }
        // A shutdown after a storage failure may itself report that failure: the first one is
        // what matters.
        let stopped = broker.shutdown().await;
        match failure {
            Some(reason) => anyhow::bail!("{reason}"),
            None => stopped.map_err(anyhow::Error::from),
        }
    })
}

async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut terminate) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = terminate.recv() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
