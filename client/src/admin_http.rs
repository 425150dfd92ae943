//! [`AdminHttpClient`]: the typed client of the admin HTTP API that brokers and NameServers
//! serve on their admin port (the JSON bodies are [`raftmq_protocol::admin`]'s), one method per
//! endpoint. `mq`, jepsen-lite and the integration tests all talk to admin HTTP through it, and
//! [`membership`] builds the group membership changes on it.
//!
//! Each call names the server it asks, so one client serves a whole cluster.
//!
//! Built on `reqwest` (HTTP/1.1 only; HTTPS with our rustls configuration after
//! [`AdminHttpClient::with_tls`], for servers whose admin port serves TLS), set up to behave
//! like the hand-written clients it replaced:
//!
//! - one request per connection (no idle pool): a member killed and restarted on the same
//!   address is never asked over a dead pooled connection;
//! - no proxy from the environment and no redirects: the address given is the one asked;
//! - one deadline over the whole exchange (connect, send, read the answer), [`DEFAULT_TIMEOUT`]
//!   unless [`AdminHttpClient::with_timeout`] says otherwise;
//! - an answer longer than [`MAX_RESPONSE_BYTES`] is refused.
//!
//! Errors ([`AdminHttpError`]) keep apart what callers react to differently: nobody listens
//! ([`AdminHttpError::Connect`]), no answer in time, a refusal with its HTTP status and
//! `{"error": ...}` message ([`AdminHttpError::Status`]), and an answer that is not the
//! expected JSON ([`AdminHttpError::BadJson`]).

use std::sync::Arc;
use std::time::Duration;

use raftmq_protocol::acl::{AclChange, AclView};
use raftmq_protocol::admin::{
    AclAnswer, AddLearner, AdminToken, ChangeMembership, ElectAnswer, ErrorBody, GroupStatus,
    MembershipAnswer, RaftStatus, RegisteredGroup, RemoveLearner, ResetAnswer, ResetOffsets,
    Routes, TopicStatus, TransferLeader, TransferLeaderAnswer,
};
use raftmq_tls::TlsConnector;
use reqwest::{Method, RequestBuilder};
use serde::Serialize;
use serde::de::DeserializeOwned;

pub mod membership;

/// Deadline of one admin call unless the client is given another.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// Longest answer read (a `/raft` status is a few hundred bytes; `/routes` of a large cluster
/// a few MiB).
pub const MAX_RESPONSE_BYTES: usize = 16 * 1024 * 1024;

/// Which call failed, as errors print it: `GET /raft on 127.0.0.1:10913`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AdminCall {
    pub method: &'static str,
    pub path: String,
    /// The server's admin address, `host:port`.
    pub addr: String,
}

impl AdminCall {
    fn new(method: &'static str, path: &str, addr: &str) -> AdminCall {
        AdminCall {
            method,
            path: path.to_owned(),
            addr: addr.to_owned(),
        }
    }
}

impl std::fmt::Display for AdminCall {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {} on {}", self.method, self.path, self.addr)
    }
}

/// Why an admin call failed.
#[derive(Debug, thiserror::Error)]
pub enum AdminHttpError {
    /// The HTTP client could not be set up.
    #[error("setting up the admin HTTP client: {0}")]
    Build(String),
    /// Nothing accepted the connection (refused, unreachable, unresolvable): the server is
    /// down or not there.
    #[error("{call}: could not connect: {cause}")]
    Connect { call: AdminCall, cause: String },
    /// No whole answer within the deadline.
    #[error("{call}: no answer within {timeout:?}")]
    Timeout { call: AdminCall, timeout: Duration },
    /// The connection failed after it was made (reset, closed early, malformed HTTP).
    #[error("{call}: {cause}")]
    Transport { call: AdminCall, cause: String },
    /// The server answered with a non-2xx status: `message` is the `{"error": ...}` of the
    /// body, or the body's text when it has none.
    #[error("{call}: HTTP {status}: {message}")]
    Status {
        call: AdminCall,
        status: u16,
        message: String,
        body: String,
    },
    /// The answer is longer than [`MAX_RESPONSE_BYTES`].
    #[error("{call}: answer longer than {MAX_RESPONSE_BYTES} bytes")]
    TooLarge { call: AdminCall },
    /// A 2xx answer that is not the JSON the endpoint returns.
    #[error("{call}: unreadable answer: {source}")]
    BadJson {
        call: AdminCall,
        source: serde_json::Error,
    },
    /// A 2xx text answer that is not UTF-8.
    #[error("{call}: the answer is not UTF-8 text")]
    NotText { call: AdminCall },
}

/// The admin HTTP client: each call names the server it asks (`addr`, `host:port` of a broker
/// member's or a NameServer's admin port). Cheap to clone.
#[derive(Clone, Debug)]
pub struct AdminHttpClient {
    http: reqwest::Client,
    /// `http`, or `https` for a client made by [`AdminHttpClient::with_tls`].
    scheme: &'static str,
    timeout: Duration,
    /// Sent as `Authorization: Bearer` on every call (servers started with an admin token).
    token: Option<AdminToken>,
}

impl AdminHttpClient {
    /// A plain-HTTP client with [`DEFAULT_TIMEOUT`] per call.
    pub fn new() -> Result<AdminHttpClient, AdminHttpError> {
        let plain = raftmq_tls::files::trusting_nothing()
            .map_err(|err| AdminHttpError::Build(err.to_string()))?;
        Ok(AdminHttpClient {
            http: build_http(&plain)?,
            scheme: "http",
            timeout: DEFAULT_TIMEOUT,
            token: None,
        })
    }

    /// The same client speaking HTTPS through `tls` (its CA and, if any, client certificate),
    /// for servers whose admin port serves TLS (`--tls-mode permissive` or `enforcing`); a
    /// plaintext connector leaves the client as it is.
    pub fn with_tls(&self, tls: &TlsConnector) -> Result<AdminHttpClient, AdminHttpError> {
        let Some(config) = tls.client_config() else {
            return Ok(self.clone());
        };
        Ok(AdminHttpClient {
            http: build_http(&config)?,
            scheme: "https",
            timeout: self.timeout,
            token: self.token.clone(),
        })
    }

    /// Whether calls go over HTTPS.
    pub fn is_tls(&self) -> bool {
        self.scheme == "https"
    }

    /// The same client with another deadline per call.
    pub fn with_timeout(&self, timeout: Duration) -> AdminHttpClient {
        AdminHttpClient {
            timeout,
            ..self.clone()
        }
    }

    /// The same client sending `token` as `Authorization: Bearer` on every call (`None`:
    /// none), for servers that require it on state-changing requests.
    pub fn with_token(&self, token: Option<AdminToken>) -> AdminHttpClient {
        AdminHttpClient {
            token,
            ..self.clone()
        }
    }

    fn url(&self, call: &AdminCall) -> String {
        format!("{}://{}{}", self.scheme, call.addr, call.path)
    }

    /// Adds the bearer token, if any.
    fn authorized(&self, request: RequestBuilder) -> RequestBuilder {
        match &self.token {
            Some(token) => request.header(reqwest::header::AUTHORIZATION, token.header_value()),
            None => request,
        }
    }

    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    // ---- both servers ----

    /// `GET /healthz`: `ok` while the process serves.
    pub async fn healthz(&self, addr: &str) -> Result<String, AdminHttpError> {
        self.get_text(addr, "/healthz").await
    }

    /// `GET /metrics`: Prometheus / OpenMetrics text.
    pub async fn metrics(&self, addr: &str) -> Result<String, AdminHttpError> {
        self.get_text(addr, "/metrics").await
    }

    // ---- broker ----

    /// `GET /readyz`: a line naming the leader; [`AdminHttpError::Status`] 503 while this
    /// member knows no leader.
    pub async fn readyz(&self, addr: &str) -> Result<String, AdminHttpError> {
        self.get_text(addr, "/readyz").await
    }

    /// `GET /raft`: the member's Raft view.
    pub async fn raft_status(&self, addr: &str) -> Result<RaftStatus, AdminHttpError> {
        self.get_json(addr, "/raft").await
    }

    /// `GET /topics`: every topic the member has, with its queues' offsets.
    pub async fn topics(&self, addr: &str) -> Result<Vec<TopicStatus>, AdminHttpError> {
        self.get_json(addr, "/topics").await
    }

    /// `GET /groups`: consumer groups with committed offsets, lag and live clients.
    pub async fn groups(&self, addr: &str) -> Result<Vec<GroupStatus>, AdminHttpError> {
        self.get_json(addr, "/groups").await
    }

    /// `POST /raft/add-learner` (on the leader): answers once the learner has caught up, so
    /// give this call a deadline long enough for that.
    pub async fn add_learner(
        &self,
        addr: &str,
        request: &AddLearner,
    ) -> Result<MembershipAnswer, AdminHttpError> {
        self.post_json(addr, "/raft/add-learner", request).await
    }

    /// `POST /raft/change-membership` (on the leader).
    pub async fn change_membership(
        &self,
        addr: &str,
        request: &ChangeMembership,
    ) -> Result<MembershipAnswer, AdminHttpError> {
        self.post_json(addr, "/raft/change-membership", request)
            .await
    }

    /// `POST /raft/remove-learner` (on the leader).
    pub async fn remove_learner(
        &self,
        addr: &str,
        request: &RemoveLearner,
    ) -> Result<MembershipAnswer, AdminHttpError> {
        self.post_json(addr, "/raft/remove-learner", request).await
    }

    /// `POST /raft/elect`: this member starts an election now.
    pub async fn elect(&self, addr: &str) -> Result<ElectAnswer, AdminHttpError> {
        self.post_json(addr, "/raft/elect", &serde_json::Map::new())
            .await
    }

    /// `POST /raft/transfer-leader` (on the leader): hands leadership to voter `node_id` and
    /// answers once it leads (the server gives up after a few seconds).
    pub async fn transfer_leader(
        &self,
        addr: &str,
        node_id: u64,
    ) -> Result<TransferLeaderAnswer, AdminHttpError> {
        self.post_json(addr, "/raft/transfer-leader", &TransferLeader { node_id })
            .await
    }

    /// `POST /offsets/reset` (on the leader): answers once the reset is committed.
    pub async fn reset_offsets(
        &self,
        addr: &str,
        request: &ResetOffsets,
    ) -> Result<ResetAnswer, AdminHttpError> {
        self.post_json(addr, "/offsets/reset", request).await
    }

    /// `GET /acl`: the group's ACL configuration as this member applied it (no secrets).
    pub async fn acl(&self, addr: &str) -> Result<AclView, AdminHttpError> {
        self.get_json(addr, "/acl").await
    }

    /// `POST /acl` (on the leader): one ACL change; answers once it is applied there.
    pub async fn change_acl(
        &self,
        addr: &str,
        change: &AclChange,
    ) -> Result<AclAnswer, AdminHttpError> {
        self.post_json(addr, "/acl", change).await
    }

    // ---- NameServer ----

    /// `GET /routes`: every topic's route.
    pub async fn routes(&self, addr: &str) -> Result<Routes, AdminHttpError> {
        self.get_json(addr, "/routes").await
    }

    /// `GET /brokers`: every registered broker group and its members.
    pub async fn brokers(&self, addr: &str) -> Result<Vec<RegisteredGroup>, AdminHttpError> {
        self.get_json(addr, "/brokers").await
    }

    // ---- the dashboard (`/ui`) ----

    /// `GET` of a dashboard page, `path_and_query` as `/ui/topic?name=T`: its HTML.
    pub async fn page(&self, addr: &str, path_and_query: &str) -> Result<String, AdminHttpError> {
        let call = AdminCall::new("GET", path_and_query, addr);
        let request = self.authorized(
            self.http
                .get(self.url(&call))
                .header(reqwest::header::ACCEPT, "text/html"),
        );
        let body = self.exchange(&call, request).await?;
        String::from_utf8(body).map_err(|_| AdminHttpError::NotText { call })
    }

    /// `POST` of a dashboard form (`application/x-www-form-urlencoded`): the answer's HTML.
    pub async fn post_form(
        &self,
        addr: &str,
        path: &str,
        fields: &[(&str, &str)],
    ) -> Result<String, AdminHttpError> {
        let call = AdminCall::new("POST", path, addr);
        let body = fields
            .iter()
            .map(|(name, value)| format!("{}={}", form_encode(name), form_encode(value)))
            .collect::<Vec<_>>()
            .join("&");
        let request = self.authorized(
            self.http
                .post(self.url(&call))
                .header(
                    reqwest::header::CONTENT_TYPE,
                    "application/x-www-form-urlencoded",
                )
                .body(body),
        );
        let body = self.exchange(&call, request).await?;
        String::from_utf8(body).map_err(|_| AdminHttpError::NotText { call })
    }

    // ---- one exchange ----

    fn request(&self, method: Method, call: &AdminCall) -> RequestBuilder {
        self.authorized(
            self.http
                .request(method, self.url(call))
                .header(reqwest::header::ACCEPT, "application/json"),
        )
    }

    async fn get_text(&self, addr: &str, path: &'static str) -> Result<String, AdminHttpError> {
        let call = AdminCall::new("GET", path, addr);
        let body = self
            .exchange(&call, self.request(Method::GET, &call))
            .await?;
        String::from_utf8(body).map_err(|_| AdminHttpError::NotText { call })
    }

    async fn get_json<T: DeserializeOwned>(
        &self,
        addr: &str,
        path: &'static str,
    ) -> Result<T, AdminHttpError> {
        let call = AdminCall::new("GET", path, addr);
        let body = self
            .exchange(&call, self.request(Method::GET, &call))
            .await?;
        decode(call, &body)
    }

    async fn post_json<B: Serialize, T: DeserializeOwned>(
        &self,
        addr: &str,
        path: &'static str,
        request: &B,
    ) -> Result<T, AdminHttpError> {
        let call = AdminCall::new("POST", path, addr);
        let builder = self.request(Method::POST, &call).json(request);
        let body = self.exchange(&call, builder).await?;
        decode(call, &body)
    }

    /// Sends the request and reads the whole answer within the deadline; a non-2xx status is
    /// [`AdminHttpError::Status`].
    async fn exchange(
        &self,
        call: &AdminCall,
        request: RequestBuilder,
    ) -> Result<Vec<u8>, AdminHttpError> {
        let exchange = async {
            let mut response = request.send().await.map_err(|err| send_error(call, &err))?;
            let status = response.status();
            if response
                .content_length()
                .is_some_and(|length| length > MAX_RESPONSE_BYTES as u64)
            {
                return Err(AdminHttpError::TooLarge { call: call.clone() });
            }
            let mut body = Vec::new();
            // Each chunk grows the body, which is capped, and the whole loop is under the
            // deadline.
            while let Some(chunk) = response
                .chunk()
                .await
                .map_err(|err| send_error(call, &err))?
            {
                if body.len() + chunk.len() > MAX_RESPONSE_BYTES {
                    return Err(AdminHttpError::TooLarge { call: call.clone() });
                }
                body.extend_from_slice(&chunk);
            }
            if !status.is_success() {
                let message = serde_json::from_slice::<ErrorBody>(&body).map_or_else(
                    |_| String::from_utf8_lossy(&body).trim().to_owned(),
                    |refusal| refusal.error,
                );
                return Err(AdminHttpError::Status {
                    call: call.clone(),
                    status: status.as_u16(),
                    message,
                    body: String::from_utf8_lossy(&body).into_owned(),
                });
            }
            Ok(body)
        };
        tokio::time::timeout(self.timeout, exchange)
            .await
            .map_err(|_| AdminHttpError::Timeout {
                call: call.clone(),
                timeout: self.timeout,
            })?
    }
}

/// Percent-encodes a URL query or form value (every byte but `A-Z a-z 0-9 - _ . ~`).
pub fn form_encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for byte in value.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

fn decode<T: DeserializeOwned>(call: AdminCall, body: &[u8]) -> Result<T, AdminHttpError> {
    serde_json::from_slice(body).map_err(|source| AdminHttpError::BadJson { call, source })
}

fn send_error(call: &AdminCall, err: &reqwest::Error) -> AdminHttpError {
    let call = call.clone();
    let cause = root_cause(err);
    if err.is_connect() {
        AdminHttpError::Connect { call, cause }
    } else {
        AdminHttpError::Transport { call, cause }
    }
}

/// The reqwest client every admin call goes through, its TLS set up by `tls` (ours, with the
/// ring provider: reqwest's own default would need another crypto provider).
fn build_http(
    tls: &Arc<raftmq_tls::rustls::ClientConfig>,
) -> Result<reqwest::Client, AdminHttpError> {
    reqwest::Client::builder()
        .tls_backend_preconfigured(raftmq_tls::rustls::ClientConfig::clone(tls))
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .pool_max_idle_per_host(0)
        .http1_only()
        .build()
        .map_err(|err| AdminHttpError::Build(root_cause(&err)))
}

/// The innermost error's text (`Connection refused (os error 111)`), which says more than
/// reqwest's outer "error sending request for url ...".
fn root_cause(err: &(dyn std::error::Error + 'static)) -> String {
    let mut inner = err;
    while let Some(source) = inner.source() {
        inner = source;
    }
    inner.to_string()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::net::SocketAddr;

    use axum::Router;
    use axum::http::StatusCode;
    use axum::response::IntoResponse;
    use axum::routing::{get, post};
    use raftmq_protocol::admin::ELECTION_STARTED;
    use tokio::net::TcpListener;
    use tokio::sync::oneshot;

    use super::*;

    /// Serves `router` on a loopback port until the returned sender is dropped.
    pub(crate) async fn serve(router: Router) -> (SocketAddr, oneshot::Sender<()>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        tokio::spawn(async move {
            axum::serve(listener, router)
                .with_graceful_shutdown(async move {
                    let _ = stopped.await;
                })
                .await
                .unwrap();
        });
        (addr, stop)
    }

    fn status_json() -> &'static str {
        r#"{"broker_name":"broker-a","node_id":2,"state":"Follower","term":3,"leader":1,"last_log_index":9,"applied_index":9,"voters":[1,2,3],"learners":[],"nodes":{},"followers":{},"remoting_addr":"127.0.0.2:10911","log_fsyncs":4,"log_entries_flushed":9}"#
    }

    #[tokio::test]
    async fn typed_answers_and_text_answers() {
        let router = Router::new()
            .route("/raft", get(|| async { status_json() }))
            .route("/healthz", get(|| async { "ok\n" }))
            .route(
                "/raft/change-membership",
                post(
                    |axum::Json(body): axum::Json<ChangeMembership>| async move {
                        // Echo the voters' count as the log index: proves the body arrived whole.
                        axum::Json(MembershipAnswer {
                            log_index: body.voters.len() as u64 * 100 + u64::from(body.retain),
                        })
                    },
                ),
            )
            .route(
                "/raft/elect",
                post(|| async {
                    axum::Json(ElectAnswer {
                        elect: ELECTION_STARTED.into(),
                    })
                }),
            );
        let (addr, _stop) = serve(router).await;
        let client = AdminHttpClient::new().unwrap();
        let addr = addr.to_string();
        let status = client.raft_status(&addr).await.unwrap();
        assert_eq!(
            (status.node_id, status.leader, status.term),
            (2, Some(1), 3)
        );
        assert_eq!(status.voters, BTreeSet::from([1, 2, 3]));
        assert_eq!(client.healthz(&addr).await.unwrap(), "ok\n");
        let answer = client
            .change_membership(
                &addr,
                &ChangeMembership {
                    voters: BTreeSet::from([1, 2, 4]),
                    retain: true,
                },
            )
            .await
            .unwrap();
        assert_eq!(answer.log_index, 301);
        assert_eq!(client.elect(&addr).await.unwrap().elect, ELECTION_STARTED);
    }

    #[tokio::test]
    async fn a_refusal_keeps_its_status_and_error_message() {
        let router = Router::new()
            .route(
                "/raft/add-learner",
                post(|| async {
                    (
                        StatusCode::CONFLICT,
                        axum::Json(ErrorBody {
                            error: "has to forward request to: 1".into(),
                        }),
                    )
                }),
            )
            .route(
                "/readyz",
                get(|| async {
                    (
                        StatusCode::SERVICE_UNAVAILABLE,
                        "not ready: no leader known\n",
                    )
                        .into_response()
                }),
            );
        let (addr, _stop) = serve(router).await;
        let client = AdminHttpClient::new().unwrap();
        let addr = addr.to_string();
        let err = client
            .add_learner(
                &addr,
                &AddLearner {
                    node_id: 4,
                    addr: "127.0.0.4:10912".into(),
                },
            )
            .await
            .unwrap_err();
        match &err {
            AdminHttpError::Status {
                status, message, ..
            } => {
                assert_eq!(*status, 409);
                assert_eq!(message, "has to forward request to: 1");
            }
            other => panic!("expected a status error, got {other:?}"),
        }
        assert_eq!(
            err.to_string(),
            format!("POST /raft/add-learner on {addr}: HTTP 409: has to forward request to: 1")
        );
        let err = client.readyz(&addr).await.unwrap_err();
        assert!(
            matches!(&err, AdminHttpError::Status { status: 503, message, .. } if message == "not ready: no leader known"),
            "{err:?}"
        );
        // A path the server does not have is a 404 with its (empty) body as the message.
        let err = client.topics(&addr).await.unwrap_err();
        assert!(
            matches!(err, AdminHttpError::Status { status: 404, .. }),
            "{err:?}"
        );
    }

    #[tokio::test]
    async fn an_answer_that_is_not_the_json_expected_is_bad_json() {
        let router = Router::new()
            .route("/raft", get(|| async { "{\"node_id\": \"two\"}" }))
            .route("/groups", get(|| async { "<html>proxy error</html>" }));
        let (addr, _stop) = serve(router).await;
        let client = AdminHttpClient::new().unwrap();
        let addr = addr.to_string();
        let err = client.raft_status(&addr).await.unwrap_err();
        assert!(matches!(err, AdminHttpError::BadJson { .. }), "{err:?}");
        let err = client.groups(&addr).await.unwrap_err();
        assert!(matches!(err, AdminHttpError::BadJson { .. }), "{err:?}");
        assert!(err.to_string().contains("GET /groups on"), "{err}");
    }

    #[tokio::test]
    async fn nobody_listening_is_a_connect_error() {
        // Bind, learn the port, close: nothing listens there now.
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let client = AdminHttpClient::new().unwrap();
        let addr = addr.to_string();
        let err = client.raft_status(&addr).await.unwrap_err();
        assert!(matches!(err, AdminHttpError::Connect { .. }), "{err:?}");
        assert!(err.to_string().contains("could not connect"), "{err}");
    }

    #[tokio::test]
    async fn a_silent_server_times_out() {
        // Accepts connections and never answers.
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, mut stopped) = oneshot::channel::<()>();
        let silent = tokio::spawn(async move {
            let mut held = Vec::new();
            loop {
                tokio::select! {
                    accepted = listener.accept() => match accepted {
                        Ok((socket, _)) => held.push(socket),
                        Err(_) => return,
                    },
                    _ = &mut stopped => return,
                }
            }
        });
        let addr = addr.to_string();
        let client = AdminHttpClient::new()
            .unwrap()
            .with_timeout(Duration::from_millis(200));
        let started = std::time::Instant::now();
        let err = client.raft_status(&addr).await.unwrap_err();
        assert!(
            matches!(err, AdminHttpError::Timeout { timeout, .. } if timeout == Duration::from_millis(200)),
            "{err:?}"
        );
        assert!(started.elapsed() < Duration::from_secs(5));
        drop(stop);
        silent.await.unwrap();
    }

    #[tokio::test]
    async fn an_oversized_answer_is_refused() {
        let router = Router::new().route(
            "/metrics",
            get(|| async { "x".repeat(MAX_RESPONSE_BYTES + 1) }),
        );
        let (addr, _stop) = serve(router).await;
        let client = AdminHttpClient::new().unwrap();
        let addr = addr.to_string();
        let err = client.metrics(&addr).await.unwrap_err();
        assert!(matches!(err, AdminHttpError::TooLarge { .. }), "{err:?}");
    }

    #[tokio::test]
    async fn one_client_asks_each_server_it_names() {
        let (a, _stop_a) = serve(Router::new().route("/healthz", get(|| async { "a" }))).await;
        let (b, _stop_b) = serve(Router::new().route("/healthz", get(|| async { "b" }))).await;
        let client = AdminHttpClient::new()
            .unwrap()
            .with_timeout(Duration::from_secs(3));
        assert_eq!(client.timeout(), Duration::from_secs(3));
        assert_eq!(client.healthz(&a.to_string()).await.unwrap(), "a");
        assert_eq!(client.healthz(&b.to_string()).await.unwrap(), "b");
    }
}
