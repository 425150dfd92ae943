//! The operator's view: a web dashboard under `/ui` that every broker member and every
//! NameServer serves on its admin port, so no separate dashboard process is needed.
//!
//! Where to start reading:
//! - [`router`]: the pages and the one action endpoint, mounted by `broker/src/admin.rs` and
//!   `namesrv/src/admin.rs` next to their JSON endpoints;
//! - [`pages`]: one handler per page; each gathers the same data the JSON endpoints answer
//!   (`raftmq_protocol::admin`'s types, fetched with `raftmq_client`'s admin clients) and
//!   hands it to a pure render function;
//! - [`render`]: the HTML, server-rendered with maud (which escapes every value it inserts:
//!   a topic name or a message body with HTML in it shows as text);
//! - [`actions`]: create and delete topics, reset a group's offsets by time, resend a message
//!   to a group, transfer leadership, add and remove members. Each is a POST that first answers
//!   with a confirmation page and acts only when that page's form is sent back; each calls the
//!   code path `mq` uses (`raftmq_client::Admin`, the admin HTTP endpoints, `membership`).
//!
//! Pages refresh by themselves: the live part of each page (`#live`) is fetched again every
//! few seconds by htmx (vendored, `assets/htmx.min.js`, its license header kept), which swaps
//! in the same element of the new page; forms sit outside it, so typing is never lost. There is
//! no build step: the script is included in the binary.
//!
//! What the dashboard cannot show yet, it says on the page (see the README's list).

pub mod actions;
pub mod pages;
pub mod render;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Redirect};
use axum::routing::{get, post};
use raftmq_client::cluster_view::ClusterViewer;
use raftmq_client::{Admin, AdminHttpClient};

/// The vendored htmx (0BSD), served at [`HTMX_PATH`].
pub const HTMX_JS: &str = include_str!("../assets/htmx.min.js");
pub const HTMX_PATH: &str = "/ui/assets/htmx.min.js";
/// How often a page's live part is fetched again.
pub const REFRESH_SECONDS: u64 = 5;
/// Deadline of one call the dashboard makes to a member or NameServer.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(3);
/// Most topics whose message rate is remembered between two views.
pub const MAX_RATE_ENTRIES: usize = 10_000;

/// What the dashboard of one server needs: how to reach the cluster, and who it is.
pub struct Dashboard {
    /// Who serves this dashboard, shown in its header ("NameServer 127.0.0.1:9876").
    pub served_by: String,
    pub viewer: ClusterViewer,
    /// Topics, offsets and pulls over remoting (what `mq` uses).
    pub admin: Admin,
    /// The NameServer list, `host:port;host:port`, for the clients an action starts.
    pub namesrv_list: String,
    rates: Mutex<BTreeMap<(String, String), RateSample>>,
}

/// The last total of a topic's messages in one group, to tell a rate at the next view.
#[derive(Clone, Copy, Debug)]
struct RateSample {
    at: Instant,
    total: u64,
    per_second: Option<f64>,
}

/// Why the dashboard could not be set up (a bad NameServer list, no HTTP client).
#[derive(Debug, thiserror::Error)]
#[error("dashboard: {0}")]
pub struct SetupError(pub String);

impl Dashboard {
    /// The dashboard of a server that reaches the cluster through the NameServers in
    /// `namesrv` (`host:port` each).
    pub fn new(served_by: String, namesrv: &[String]) -> Result<Dashboard, SetupError> {
        Dashboard::with_access(
            served_by,
            namesrv,
            None,
            None,
            raftmq_remoting::RpcClientConfig::default().tls,
        )
    }

    /// [`Dashboard::new`] for a cluster that enforces ACL (`credentials` sign its remoting
    /// requests), guards admin HTTP (`admin_token` goes with its admin calls and actions) or
    /// serves TLS (`tls` connects to the NameServers and brokers, remoting and admin ports).
    pub fn with_access(
        served_by: String,
        namesrv: &[String],
        credentials: Option<raftmq_protocol::acl::SessionCredentials>,
        admin_token: Option<raftmq_protocol::admin::AdminToken>,
        tls: raftmq_tls::TlsConnector,
    ) -> Result<Dashboard, SetupError> {
        let list = namesrv.join(";");
        let setup = |err: &dyn std::fmt::Display| SetupError(err.to_string());
        let rpc = raftmq_remoting::RpcClientConfig {
            credentials,
            tls,
            ..Default::default()
        };
        let http = AdminHttpClient::new()
            .and_then(|http| http.with_tls(&rpc.tls))
            .map_err(|e| setup(&e))?
            .with_timeout(CALL_TIMEOUT)
            .with_token(admin_token);
        let admin =
            Admin::with_rpc_config(Some(&list), CALL_TIMEOUT, rpc).map_err(|e| setup(&e))?;
        let viewer = ClusterViewer::new(admin.namesrv().clone(), admin.broker().clone(), http);
        Ok(Dashboard {
            served_by,
            viewer,
            admin,
            namesrv_list: list,
            rates: Mutex::new(BTreeMap::new()),
        })
    }

    pub fn http(&self) -> &AdminHttpClient {
        self.viewer.admin()
    }

    /// Messages per second of `topic` in `group` since the previous look, given its total
    /// now (`None` on the first look, or when the total went down: a topic recreated).
    pub fn rate(&self, group: &str, topic: &str, total: u64) -> Option<f64> {
        let mut rates = self.rates.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        let key = (group.to_owned(), topic.to_owned());
        let sample = match rates.get(&key) {
            // Refreshes closer than a second apart keep the last rate (too noisy otherwise).
            Some(last) if now.duration_since(last.at) < Duration::from_secs(1) => {
                return last.per_second;
            }
            Some(last) => RateSample {
                at: now,
                total,
                per_second: total
                    .checked_sub(last.total)
                    .map(|grown| grown as f64 / now.duration_since(last.at).as_secs_f64()),
            },
            None => RateSample {
                at: now,
                total,
                per_second: None,
            },
        };
        if !rates.contains_key(&key) && rates.len() >= MAX_RATE_ENTRIES {
            // Full: forget the sample looked at longest ago (a deleted topic's, most likely).
            if let Some(stalest) = rates
                .iter()
                .min_by_key(|(_, sample)| sample.at)
                .map(|(key, _)| key.clone())
            {
                rates.remove(&stalest);
            }
        }
        rates.insert(key, sample);
        sample.per_second
    }
}

/// The dashboard's routes, all under `/ui`.
pub fn router(dashboard: Arc<Dashboard>) -> Router {
    Router::new()
        .route("/ui", get(|| async { Redirect::to("/ui/cluster") }))
        .route("/ui/", get(|| async { Redirect::to("/ui/cluster") }))
        .route("/ui/cluster", get(pages::cluster))
        .route("/ui/topics", get(pages::topics))
        .route("/ui/topic", get(pages::topic))
        .route("/ui/groups", get(pages::groups))
        .route("/ui/group", get(pages::group))
        .route("/ui/messages", get(pages::messages))
        .route("/ui/dlq", get(pages::dlq))
        .route("/ui/action", post(actions::action))
        .route(HTMX_PATH, get(htmx))
        .with_state(dashboard)
}

/// The dashboard's routes, or, when it could not be set up (no NameServer configured), `/ui`
/// pages that say why.
pub fn router_or_unavailable(dashboard: Result<Dashboard, SetupError>) -> Router {
    match dashboard {
        Ok(dashboard) => router(Arc::new(dashboard)),
        Err(err) => {
            let reason = format!("The dashboard is not available on this server: {err}\n");
            let page = move || {
                let reason = reason.clone();
                async move { (StatusCode::SERVICE_UNAVAILABLE, reason) }
            };
            Router::new()
                .route("/ui", get(page.clone()))
                .route("/ui/{*rest}", get(page))
        }
    }
}

async fn htmx() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=86400"),
        ],
        HTMX_JS,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_vendored_htmx_keeps_its_license_header() {
        assert!(HTMX_JS.starts_with("/*! htmx 2.0.11"));
        assert!(HTMX_JS.contains("Zero-Clause BSD"));
        assert!(HTMX_JS.contains("var htmx="));
    }

    #[tokio::test]
    async fn a_rate_needs_two_looks_a_second_apart() {
        let dashboard = Dashboard::new("test".into(), &["127.0.0.1:1".into()]).unwrap();
        assert_eq!(dashboard.rate("g", "T", 100), None);
        // Less than a second later: the last rate (none yet).
        assert_eq!(dashboard.rate("g", "T", 150), None);
        {
            let mut rates = dashboard.rates.lock().unwrap();
            let sample = rates.get_mut(&("g".into(), "T".into())).unwrap();
            sample.at -= Duration::from_secs(2);
        }
        let rate = dashboard.rate("g", "T", 300).unwrap();
        assert!((rate - 100.0).abs() < 5.0, "{rate}");
        // A topic recreated with fewer messages: no rate.
        {
            let mut rates = dashboard.rates.lock().unwrap();
            let sample = rates.get_mut(&("g".into(), "T".into())).unwrap();
            sample.at -= Duration::from_secs(2);
        }
        assert_eq!(dashboard.rate("g", "T", 10), None);
    }
}
