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
    /// TEST ONLY: a file holding a clock offset in milliseconds (e.g. `-90000`), read every
    /// 200 ms: this member's wall clock runs that far off (jepsen-lite's clock-skew fault). A
    /// missing or empty file is no offset.
    #[arg(long, hide = true)]
    unsafe_clock_offset_file: Option<PathBuf>,
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
    match run(
        cli.config.as_deref(),
        cli.unsafe_clock_offset_file.as_deref(),
        &matches,
    ) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            // Our errors already carry their causes in their messages.
            eprintln!("mqbroker: {err}");
            ExitCode::FAILURE
        }
    }
}

fn run(
    config_file: Option<&std::path::Path>,
    clock_offset_file: Option<&std::path::Path>,
    flags: &clap::ArgMatches,
) -> anyhow::Result<()> {
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
        if let Some(path) = clock_offset_file {
            tracing::warn!(
                path = %path.display(),
                "--unsafe-clock-offset-file: this member's wall clock follows the offset in that file"
            );
            tokio::spawn(follow_clock_offset(path.to_path_buf()));
        }
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

/// Sets this process's clock offset from `path` every 200 ms, for as long as it runs.
async fn follow_clock_offset(path: PathBuf) {
    let mut interval = tokio::time::interval(std::time::Duration::from_millis(200));
    let mut unreadable_reported = false;
    loop {
        interval.tick().await;
        let offset = match tokio::fs::read_to_string(&path).await {
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(0),
            Err(err) => Err(err.to_string()),
            Ok(text) if text.trim().is_empty() => Ok(0),
            Ok(text) => text.trim().parse::<i64>().map_err(|err| err.to_string()),
        };
        match offset {
            Ok(offset) => {
                unreadable_reported = false;
                let before = raftmq_protocol::names::clock_offset_ms();
                if offset != before {
                    tracing::warn!(
                        offset_ms = offset,
                        before_ms = before,
                        "clock offset changed"
                    );
                    raftmq_protocol::names::set_clock_offset_ms(offset);
                }
            }
            Err(reason) if !unreadable_reported => {
                tracing::warn!(path = %path.display(), %reason, "cannot read the clock offset; keeping the one in force");
                unreadable_reported = true;
            }
            Err(_) => {}
        }
    }
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
