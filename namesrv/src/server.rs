//! Running a NameServer: the remoting server, the admin HTTP server and the expiry scanner,
//! started together and stopped together.

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;

use raftmq_protocol::names::{NAMESRV_ADMIN_PORT, NAMESRV_PORT};
use raftmq_remoting::{Server, ServerConfig};
use raftmq_tls::TlsAcceptor;
use tokio::net::TcpListener;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{error, info};

use crate::admin::{self, AdminState};
use crate::processor::NamesrvHandler;
use crate::route_table::EXPIRY_SCAN_INTERVAL;
use crate::state::NameServerState;
use raftmq_protocol::admin::AdminToken;

/// RocketMQ's NameServer port, on every interface.
pub const DEFAULT_LISTEN: SocketAddr =
    SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), NAMESRV_PORT);

/// The admin HTTP port: next to the remoting one, on loopback unless told otherwise.
pub const DEFAULT_ADMIN_LISTEN: SocketAddr =
    SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), NAMESRV_ADMIN_PORT);

/// Why the NameServer stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum NamesrvError {
    #[error("admin HTTP server failed: {0}")]
    Admin(#[source] std::io::Error),
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
}

/// A NameServer on two bound listeners.
pub struct NameServer {
    remoting: Server<NamesrvHandler>,
    admin: TcpListener,
    state: Arc<NameServerState>,
    /// More admin HTTP routes (the binary's dashboard under `/ui`).
    ui: axum::Router,
    /// What admin HTTP requires on state-changing requests (`None`: open, loopback only).
    admin_token: Option<AdminToken>,
    /// What the admin port accepts: the remoting port's TLS mode and certificate.
    admin_tls: TlsAcceptor,
}

impl NameServer {
    /// A NameServer serving plaintext remoting.
    pub fn new(remoting_listener: TcpListener, admin_listener: TcpListener) -> Self {
        Self::with_tls(remoting_listener, admin_listener, TlsAcceptor::plaintext())
    }

    /// A NameServer whose remoting and admin ports serve what `tls` accepts (TLS, plaintext or
    /// both).
    pub fn with_tls(
        remoting_listener: TcpListener,
        admin_listener: TcpListener,
        tls: TlsAcceptor,
    ) -> Self {
        let state = Arc::new(NameServerState::new());
        let handler = Arc::new(NamesrvHandler::new(state.clone()));
        let config = ServerConfig {
            tls: tls.clone(),
            ..ServerConfig::default()
        };
        NameServer {
            remoting: Server::new(remoting_listener, handler, config),
            admin: admin_listener,
            state,
            ui: axum::Router::new(),
            admin_token: None,
            admin_tls: tls,
        }
    }

    /// Requires `token` on admin HTTP requests that may change state (the dashboard's
    /// actions); without it the admin listener must be on loopback
    /// ([`raftmq_protocol::admin::check_admin_exposure`], which the binary applies).
    pub fn with_admin_token(mut self, token: Option<AdminToken>) -> Self {
        self.admin_token = token;
        self
    }

    /// Serves `ui` (the dashboard under `/ui`) beside the admin JSON endpoints.
    pub fn with_ui(mut self, ui: axum::Router) -> Self {
        self.ui = ui;
        self
    }

    pub fn remoting_addr(&self) -> std::io::Result<SocketAddr> {
        self.remoting.local_addr()
    }

    pub fn admin_addr(&self) -> std::io::Result<SocketAddr> {
        self.admin.local_addr()
    }

    pub fn state(&self) -> Arc<NameServerState> {
        self.state.clone()
    }

    /// Serves until `shutdown` completes (or the admin server fails), then stops every part
    /// and returns once all their tasks have finished.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> Result<(), NamesrvError> {
        let NameServer {
            remoting,
            admin,
            state,
            ui,
            admin_token,
            admin_tls,
        } = self;
        let stop = CancellationToken::new();
        let tracker = TaskTracker::new();
        let admin_state = AdminState {
            state: state.clone(),
            server_stats: remoting.stats(),
        };
        tracker.spawn(remoting.run(stop.clone().cancelled_owned()));
        tracker.spawn(expiry_loop(state, stop.clone()));
        let mut admin_task = tracker.spawn(raftmq_admin_server::serve(
            admin,
            admin_tls,
            admin::router(admin_state, ui, admin_token),
            stop.clone(),
        ));
        tracker.close();

        let mut outcome = Ok(());
        tokio::select! {
            _ = shutdown => info!("shutting down"),
            finished = &mut admin_task => {
                outcome = match finished {
                    Ok(Ok(())) => Ok(()),
                    Ok(Err(error)) => Err(NamesrvError::Admin(error)),
                    Err(join) => Err(NamesrvError::Admin(std::io::Error::other(join))),
                };
                error!("admin HTTP server stopped; shutting down");
            }
        }
        stop.cancel();
        tracker.wait().await;
        info!("NameServer stopped");
        outcome
    }
}

/// Drops expired members every [`EXPIRY_SCAN_INTERVAL`] until `stop`.
async fn expiry_loop(state: Arc<NameServerState>, stop: CancellationToken) {
    let mut ticker = tokio::time::interval(EXPIRY_SCAN_INTERVAL);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = ticker.tick() => {
                let removed = state.routes().expire(Instant::now());
                for member in &removed {
                    info!(broker_name = %member.broker_name, broker_addr = %member.broker_addr, "broker expired: no registration in time");
                }
                if let Some(first) = removed.first() {
                    state.metrics.removed(first.reason, removed.len());
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use raftmq_protocol::header::RaftClaim;
    use raftmq_protocol::route::DataVersion;

    use super::*;
    use crate::route_table::Registration;

    #[tokio::test(start_paused = true)]
    async fn the_scanner_drops_silent_members_under_paused_time() {
        let state = Arc::new(NameServerState::new());
        let registration = |node_id: u64| Registration {
            cluster: "c".into(),
            broker_name: "g".into(),
            broker_addr: format!("127.0.0.1:{node_id}"),
            ha_server_addr: String::new(),
            broker_id: node_id,
            raft: Some(RaftClaim {
                node_id,
                term: 1,
                leader: node_id == 1,
            }),
            topics: None,
            data_version: DataVersion::default(),
            timeout: None,
            connection: None,
        };
        state
            .routes()
            .register(registration(1), Instant::now())
            .unwrap();
        state
            .routes()
            .register(registration(2), Instant::now())
            .unwrap();
        let stop = CancellationToken::new();
        let scanner = tokio::spawn(expiry_loop(state.clone(), stop.clone()));

        // Member 2 keeps registering every 30 s; member 1 falls silent.
        for _ in 0..4 {
            tokio::time::sleep(Duration::from_secs(30)).await;
            state
                .routes()
                .register(registration(2), Instant::now())
                .unwrap();
        }
        // 120 s after member 1's registration (BROKER_EXPIRY): at the limit, still listed.
        assert_eq!(state.routes().counts().1, 2);
        // The next scans (at most one interval later) drop it.
        tokio::time::sleep(EXPIRY_SCAN_INTERVAL * 2).await;
        assert_eq!(state.routes().counts().1, 1);
        let group = state.routes().member_group("g").unwrap();
        assert_eq!(
            group.broker_addrs.keys().copied().collect::<Vec<_>>(),
            vec![2]
        );

        stop.cancel();
        scanner.await.unwrap();
    }
}
