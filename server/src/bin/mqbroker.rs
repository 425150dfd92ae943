//! `mqbroker`: one member of a RaftMQ broker group.
//!
//! ```text
//! mqbroker -n localhost:9876 --broker-name broker-a --node-id 1 \
//!   --peers 1=127.0.0.1:10912,2=127.0.0.1:20912,3=127.0.0.1:30912 --data-dir ./data/a1
//! mqbroker -c broker.toml          # the same keys in a TOML file; flags override it
//! ```
//!
//! This binary only reads the configuration, binds the three listeners and hands them, with
//! the dashboard for `/ui`, to [`Broker`]; once the broker has started it prints one line to stdout,
//! `mqbroker listening remoting=<addr> raft=<addr> admin=<addr>`, for scripts and tests.
//! SIGINT or SIGTERM stop it cleanly; a Raft storage failure stops it with an error.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches, Parser};
use raftmq_broker::broker::{Broker, Listeners};
use raftmq_broker::config::{BrokerConfig, BrokerOptions};
use tokio::net::TcpListener;
use tracing_subscriber::EnvFilter;

/// A RaftMQ broker member: RocketMQ's broker, with every broker group a Raft group.
#[derive(Parser, Debug)]
#[command(name = "mqbroker", version)]
struct Cli {
    /// A TOML file with the same keys as the long flags (`broker-name = "broker-a"`, ...).
    #[arg(short = 'c', long = "config")]
    config: Option<PathBuf>,
    #[command(flatten)]
    options: BrokerOptions,
}

fn main() -> ExitCode {
    let matches = Cli::command().get_matches();
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(err) => err.exit(),
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| EnvFilter::new("info,openraft=warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    match run(cli.config.as_deref(), &matches) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            // Our errors already carry their causes in their messages.
            eprintln!("mqbroker: {err}");
            ExitCode::FAILURE
        }
    }
}

fn run(config_file: Option<&std::path::Path>, flags: &clap::ArgMatches) -> anyhow::Result<()> {
    let config = BrokerConfig::from_options(BrokerOptions::load(config_file, flags)?)?;
    if config.unsafe_ack_before_commit {
        tracing::warn!(
            "--unsafe-ack-before-commit: sends are acknowledged BEFORE they are committed; data will be lost"
        );
    }
    if config.unsafe_skip_fsync {
        tracing::warn!(
            "--unsafe-skip-fsync: the Raft log is NEVER fsynced; a power loss loses acknowledged sends"
        );
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let listeners = Listeners {
            remoting: bind("remoting", config.listen).await?,
            raft: bind("raft", config.raft_listen).await?,
            admin: bind("admin HTTP", config.admin_listen).await?,
            grpc: bind("gRPC", config.grpc_listen).await?,
        };
        let ui = raftmq_server::broker_ui(&config);
        let broker = Broker::start_with_ui(config, listeners, ui).await?;
        // One line on stdout for scripts and tests: where this member listens.
        println!(
            "mqbroker listening remoting={} raft={} admin={} grpc={}",
            broker.remoting_addr(),
            broker.raft_addr(),
            broker.admin_addr(),
            broker.grpc_addr()
        );
        broker.run(wait_for_signal()).await?;
        Ok(())
    })
}

/// Binds one listener; the error names what it is for, the address and the cause.
async fn bind(what: &str, addr: SocketAddr) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .map_err(|err| anyhow::anyhow!("cannot listen on {addr} ({what}): {err}"))
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
