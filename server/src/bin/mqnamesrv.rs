//! `mqnamesrv`: the RaftMQ NameServer.
//!
//! Listens for RocketMQ remoting on `--listen` (default 0.0.0.0:9876) and serves admin HTTP
//! (`/healthz`, `/routes`, `/brokers`, `/metrics`) on `--admin-listen` (default
//! 127.0.0.1:9877). Once both are bound it prints one line to stdout,
//! `mqnamesrv listening remoting=<addr> admin=<addr>`, so that a supervisor (or a test
//! started with port 0) learns the real addresses. Logs go to stderr (`RUST_LOG`, default
//! `info`). SIGINT or SIGTERM stop it cleanly. `--tls-mode permissive|enforcing` with
//! `--tls-cert`/`--tls-key` serves remoting over TLS (`--tls-ca`: the CA its dashboard trusts
//! when it reads the cluster back over TLS).

use std::io::{IsTerminal, Write};
use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use raftmq_namesrv::{DEFAULT_ADMIN_LISTEN, DEFAULT_LISTEN, NameServer};
use raftmq_tls::{ClientAuth, TlsConfig, TlsMode};
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

    /// TLS on the remoting port: `disabled`, `permissive` (TLS and plaintext, told apart per
    /// connection) or `enforcing` (TLS only).
    #[arg(long, env = "RAFTMQ_TLS_MODE", default_value_t = TlsMode::Disabled)]
    tls_mode: TlsMode,

    /// The NameServer's certificate chain (PEM), valid for the address clients dial.
    #[arg(long, env = "RAFTMQ_TLS_CERT")]
    tls_cert: Option<PathBuf>,

    /// The private key of --tls-cert (PEM).
    #[arg(long, env = "RAFTMQ_TLS_KEY")]
    tls_key: Option<PathBuf>,

    /// The cluster's CA (PEM): the dashboard on the admin port checks the servers it reads
    /// (this NameServer, the brokers) against it, and client certificates are checked
    /// against it.
    #[arg(long, env = "RAFTMQ_TLS_CA")]
    tls_ca: Option<PathBuf>,

    /// Whether TLS clients of the remoting and admin ports must present a certificate of
    /// --tls-ca: `none`, `optional` or `require`. With `enforcing`, `require` makes the
    /// certificate a credential: admin HTTP may then listen off loopback without a token.
    #[arg(long, env = "RAFTMQ_TLS_CLIENT_AUTH", default_value_t = ClientAuth::None)]
    tls_client_auth: ClientAuth,
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

    let tls = TlsConfig {
        mode: args.tls_mode,
        cert: args.tls_cert,
        key: args.tls_key,
        ca: args.tls_ca,
        client_auth: args.tls_client_auth,
    };
    raftmq_protocol::admin::check_admin_exposure(
        args.admin_listen,
        args.admin_token.as_ref(),
        tls.clients_need_certificates(),
    )
    .map_err(anyhow::Error::msg)?;
    let acceptor = tls.acceptor().context("TLS")?;
    // The dashboard reads the cluster as a client: over TLS when this NameServer has TLS on,
    // presenting this NameServer's certificate to servers that ask for one.
    let dashboard_tls = tls
        .connector()
        .context("TLS (the dashboard's client side)")?;
    let remoting = TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("binding the remoting address {}", args.listen))?;
    let admin = TcpListener::bind(args.admin_listen)
        .await
        .with_context(|| format!("binding the admin address {}", args.admin_listen))?;
    let remoting_addr = remoting.local_addr()?;
    let server = NameServer::with_tls(remoting, admin, acceptor)
        .with_ui(raftmq_server::namesrv_ui(
            remoting_addr,
            args.admin_token.clone(),
            dashboard_tls,
        ))
        .with_admin_token(args.admin_token);
    let admin_addr = server.admin_addr()?;
    tracing::info!(%remoting_addr, %admin_addr, tls = %tls.mode, "NameServer listening");
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
