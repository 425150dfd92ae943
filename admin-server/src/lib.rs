//! What every admin HTTP port serves alike, a broker member's or a NameServer's. Each server
//! builds its own router (`broker/src/admin.rs`, `namesrv/src/admin.rs`, the dashboard) and
//! hands it here:
//!
//! - [`guard`] puts the admin token in front of it: with a token configured, a request that may
//!   change state (and anything under `/acl`) needs `Authorization: Bearer <token>` (or Basic
//!   with the token as password, from a browser), by `raftmq_protocol::admin`'s one rule;
//! - [`serve`] serves it on the admin port through the process's TLS acceptor, so the port
//!   speaks what `--tls-mode` says (plain HTTP, HTTPS, or both told apart by the first byte),
//!   with the process's certificate.
//!
//! Where to start reading: [`serve`].

use std::io;
use std::net::SocketAddr;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use raftmq_protocol::admin::{
    ADMIN_CHALLENGES, ADMIN_REFUSAL, AdminToken, ErrorBody, admin_request_needs_token,
};
use raftmq_tls::incoming::{self, Accepted};
use raftmq_tls::{MaybeTlsStream, TlsAcceptor};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Serves `router` on `listener` until `shutdown`, every connection put through `tls` first
/// (each handshake on its own task: a client that connects and stays silent holds up nobody).
/// Returns once the requests in progress are answered and accepting has stopped.
pub async fn serve(
    listener: TcpListener,
    tls: TlsAcceptor,
    router: Router,
    shutdown: CancellationToken,
) -> io::Result<()> {
    let local = listener.local_addr()?;
    let accepting = TaskTracker::new();
    // A child: a failed server stops its own accepting, not the process.
    let stop_accepting = shutdown.child_token();
    let accepted = incoming::accept(
        listener,
        tls,
        "admin HTTP",
        stop_accepting.clone(),
        &accepting,
    );
    let served = axum::serve(AdminListener { accepted, local }, router)
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await;
    stop_accepting.cancel();
    accepting.close();
    accepting.wait().await;
    served
}

/// The connections [`incoming::accept`] made ready, as axum takes them.
struct AdminListener {
    accepted: mpsc::Receiver<Accepted>,
    local: SocketAddr,
}

impl axum::serve::Listener for AdminListener {
    type Io = MaybeTlsStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (MaybeTlsStream, SocketAddr) {
        match self.accepted.recv().await {
            Some(accepted) => (accepted.stream, accepted.peer),
            // Accepting stopped: shutdown has begun, and ends the server without another
            // connection.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.local)
    }
}

/// `router` behind the admin token (`None`: no token configured, everything passes).
pub fn guard(router: Router, token: Option<AdminToken>) -> Router {
    router.layer(axum::middleware::from_fn_with_state(
        token,
        require_admin_token,
    ))
}

/// Refuses (401, with the Bearer and Basic challenges and an `{"error": ...}` body) a request
/// that needs the admin token and does not carry it. The refusal is logged without the header.
async fn require_admin_token(
    State(token): State<Option<AdminToken>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let Some(token) = &token else {
        return next.run(request).await;
    };
    let read = matches!(*request.method(), Method::GET | Method::HEAD);
    if !admin_request_needs_token(read, request.uri().path()) {
        return next.run(request).await;
    }
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok());
    if token.accepts(presented) {
        return next.run(request).await;
    }
    tracing::warn!(
        method = %request.method(),
        path = request.uri().path(),
        "admin request refused: missing or wrong admin token"
    );
    let body = ErrorBody {
        error: ADMIN_REFUSAL.into(),
    };
    let mut refused = (StatusCode::UNAUTHORIZED, axum::Json(body)).into_response();
    for challenge in ADMIN_CHALLENGES {
        refused.headers_mut().append(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static(challenge),
        );
    }
    refused
}

#[cfg(test)]
mod tests;
