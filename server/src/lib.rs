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
        // The member's own bootstrap admin and admin token, so that the dashboard can read
        // the cluster and act on it when ACL and the token are on.
        let credentials = config.acl_bootstrap_admin.as_ref().map(|account| {
            raftmq_protocol::acl::SessionCredentials::new(
                account.access_key.clone(),
                account.secret_key.clone(),
            )
        });
        raftmq_dashboard::Dashboard::with_access(
            served_by,
            &config.namesrv,
            credentials,
            config.admin_token.clone(),
            config.tls.connector.clone(),
        )
    };
    raftmq_dashboard::router_or_unavailable(dashboard)
}

/// The dashboard a NameServer serves: the cluster it knows, asked at `remoting_addr` (on
/// loopback when it listens on every interface). `admin_token` goes with its admin calls and
/// actions (one token for the cluster's admin ports).
pub fn namesrv_ui(
    remoting_addr: SocketAddr,
    admin_token: Option<raftmq_protocol::admin::AdminToken>,
    tls: raftmq_tls::TlsConnector,
) -> axum::Router {
    let reachable = if remoting_addr.ip().is_unspecified() {
        SocketAddr::from(([127, 0, 0, 1], remoting_addr.port()))
    } else {
        remoting_addr
    };
    let dashboard = raftmq_dashboard::Dashboard::with_access(
        format!("NameServer {remoting_addr}"),
        &[reachable.to_string()],
        None,
        admin_token,
        tls,
    );
    raftmq_dashboard::router_or_unavailable(dashboard)
}
