//! The admin HTTP endpoints, on their own port:
//!
//! - `/ui`: the dashboard of the whole cluster (supplied by the binary, `raftmq-server`);
//! - `GET /healthz`: `ok`.
//! - `GET /routes`: every topic's route, `{topic: TopicRouteData}` (the JSON clients get).
//! - `GET /brokers`: per group its cluster, leader (slot 0), highest leadership term, topic
//!   count and members (address, listed brokerId, Raft node id and term, leadership claim,
//!   age of the last registration in ms).
//! - `GET /metrics`: Prometheus text exposition.
//!
//! The JSON bodies are `raftmq_protocol::admin`'s types, shared with the admin client.

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Json, Response};
use axum::routing::get;
use raftmq_protocol::admin::{AdminToken, HEALTHY, RegisteredGroup, Routes};
use raftmq_remoting::ServerStats;
use tokio::time::Instant;

use crate::state::NameServerState;

/// The state the admin handlers read.
#[derive(Clone, Debug)]
pub struct AdminState {
    pub state: Arc<NameServerState>,
    pub server_stats: Arc<ServerStats>,
}

/// The JSON endpoints, and `ui` (the dashboard under `/ui`, which the binary supplies: this
/// library does not depend on the client crate the dashboard is built on), behind the admin
/// token when one is set (`raftmq_admin_server::guard`: the dashboard's actions need it).
pub fn router(admin: AdminState, ui: Router, token: Option<AdminToken>) -> Router {
    raftmq_admin_server::guard(json_router(admin).merge(ui), token)
}

fn json_router(admin: AdminState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/routes", get(routes))
        .route("/brokers", get(brokers))
        .route("/metrics", get(metrics))
        .with_state(admin)
}

async fn healthz() -> &'static str {
    HEALTHY
}

async fn routes(State(admin): State<AdminState>) -> Json<Routes> {
    Json(admin.state.routes().all_routes())
}

async fn brokers(State(admin): State<AdminState>) -> Json<Vec<RegisteredGroup>> {
    Json(admin.state.routes().groups(Instant::now()))
}

async fn metrics(State(admin): State<AdminState>) -> Response {
    let stats = admin.server_stats.snapshot();
    let text = {
        let routes = admin.state.routes();
        admin.state.metrics.render(&routes, &stats)
    };
    match text {
        Ok(text) => (
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            text,
        )
            .into_response(),
        Err(_) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            "metrics encoding failed\n",
        )
            .into_response(),
    }
}
