//! The `mqbroker` and `mqnamesrv` binaries (`src/bin/`): each reads its flags, binds its
//! listeners, and starts the broker or NameServer library with the dashboard (`/ui`, from
//! `raftmq_dashboard`) beside its admin endpoints. The libraries do not depend on the client
//! crate the dashboard is built on; this crate is where the two meet.
//!
//! Start reading at `src/bin/mqbroker.rs`; [`broker_ui`] and [`namesrv_ui`] build the
//! dashboards.

use std::net::SocketAddr;

use raftmq_broker::config::BrokerConfig;

/// The dashboard a broker member serves, reaching the cluster through its NameServers.
pub fn broker_ui(config: &BrokerConfig) -> axum::Router {
    let served_by = format!(
        "{} node {} ({})",
        config.broker_name, config.node_id, config.advertise
    );
    let dashboard = if config.namesrv.is_empty() {
        Err(raftmq_dashboard::SetupError(
            "no NameServer is configured (-n / NAMESRV_ADDR)".to_owned(),
        ))
    } else {
        raftmq_dashboard::Dashboard::new(served_by, &config.namesrv)
    };
    raftmq_dashboard::router_or_unavailable(dashboard)
}

/// The dashboard a NameServer serves: the cluster it knows, asked at `remoting_addr` (on
/// loopback when it listens on every interface).
pub fn namesrv_ui(remoting_addr: SocketAddr) -> axum::Router {
    let reachable = if remoting_addr.ip().is_unspecified() {
        SocketAddr::from(([127, 0, 0, 1], remoting_addr.port()))
    } else {
        remoting_addr
    };
    let dashboard = raftmq_dashboard::Dashboard::new(
        format!("NameServer {remoting_addr}"),
        &[reachable.to_string()],
    );
    raftmq_dashboard::router_or_unavailable(dashboard)
}
