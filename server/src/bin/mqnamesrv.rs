//! `mqnamesrv`: the RaftMQ NameServer.
//!
//! Listens for RocketMQ remoting on `--listen` (default 0.0.0.0:9876) and serves admin HTTP
//! (`/healthz`, `/routes`, `/brokers`, `/metrics`) on `--admin-listen` (default
//! 127.0.0.1:9877). Once both are bound it prints one line to stdout,
//! `mqnamesrv listening remoting=<addr> admin=<addr>`, so that a supervisor (or a test
//! started with port 0) learns the real addresses. Logs go to stderr (`RUST_LOG`, default
//! `info`). SIGINT or SIGTERM stop it cleanly.

use std::io::{IsTerminal, Write};
use std::net::SocketAddr;

use anyhow::Context;
use clap::Parser;
use raftmq_namesrv::{DEFAULT_ADMIN_LISTEN, DEFAULT_LISTEN, NameServer};
use tokio::net::TcpListener;
use tracing_subscriber::EnvFilter;

#[derive(Debug, Parser)]
#[command(name = "mqnamesrv", about = "The RaftMQ NameServer", version)]
struct Args {
    /// Address for RocketMQ remoting (brokers and clients).
    #[arg(long, env = "RAFTMQ_NAMESRV_LISTEN", default_value_t = DEFAULT_LISTEN)]
    listen: SocketAddr,

    /// Address for the admin HTTP endpoints.
    #[arg(long, env = "RAFTMQ_NAMESRV_ADMIN_LISTEN", default_value_t = DEFAULT_ADMIN_LISTEN)]
    admin_listen: SocketAddr,

    /// Bearer token admin HTTP requires on state-changing requests; required when
    /// --admin-listen is not loopback.
    #[arg(long, env = raftmq_protocol::admin::ADMIN_TOKEN_ENV, hide_env_values = true)]
    admin_token: Option<raftmq_protocol::admin::AdminToken>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .init();

    raftmq_protocol::admin::check_admin_exposure(args.admin_listen, args.admin_token.as_ref())
        .map_err(anyhow::Error::msg)?;
    let remoting = TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("binding the remoting address {}", args.listen))?;
    let admin = TcpListener::bind(args.admin_listen)
        .await
        .with_context(|| format!("binding the admin address {}", args.admin_listen))?;
    let remoting_addr = remoting.local_addr()?;
    let server = NameServer::new(remoting, admin)
        .with_ui(raftmq_server::namesrv_ui(
            remoting_addr,
            args.admin_token.clone(),
        ))
        .with_admin_token(args.admin_token);
    let admin_addr = server.admin_addr()?;
    tracing::info!(%remoting_addr, %admin_addr, "NameServer listening");
    {
        let mut stdout = std::io::stdout().lock();
        writeln!(
            stdout,
            "mqnamesrv listening remoting={remoting_addr} admin={admin_addr}"
        )?;
        stdout.flush()?;
    }
    server.run(shutdown_signal()).await?;
    Ok(())
}

/// Completes on SIGINT or SIGTERM.
async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut terminate) => {
                tokio::select! {
                    _ = interrupt => {}
                    _ = terminate.recv() => {}
                }
            }
            Err(error) => {
                tracing::warn!(%error, "cannot listen for SIGTERM; SIGINT only");
                let _ = interrupt.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = interrupt.await;
    }
}
