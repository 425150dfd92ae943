//! The admin port through each TLS mode, with the real admin client, and the token gate.

use std::time::Duration;

use axum::routing::{get, post};
use raftmq_client::admin_http::{AdminHttpClient, AdminHttpError};
use raftmq_tls::TlsMode;
use raftmq_tls::test_certs::TestCa;

use super::*;

/// A running admin port: `GET /healthz` answers `ok`, `POST /raft/elect` an election started.
struct Served {
    addr: String,
    shutdown: CancellationToken,
    server: tokio::task::JoinHandle<io::Result<()>>,
}

impl Served {
    async fn start(tls: TlsAcceptor, token: Option<AdminToken>) -> Served {
        let router = Router::new()
            .route("/healthz", get(|| async { "ok" }))
            .route("/raft/elect", post(|| async { axum::Json(elect_answer()) }));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let shutdown = CancellationToken::new();
        let server = tokio::spawn(serve(listener, tls, guard(router, token), shutdown.clone()));
        Served {
            addr,
            shutdown,
            server,
        }
    }

    async fn stop(self) {
        self.shutdown.cancel();
        let stopped = tokio::time::timeout(Duration::from_secs(10), self.server)
            .await
            .expect("the admin server did not stop");
        stopped.unwrap().unwrap();
    }
}

fn elect_answer() -> raftmq_protocol::admin::ElectAnswer {
    raftmq_protocol::admin::ElectAnswer {
        elect: "started".into(),
    }
}

fn client() -> AdminHttpClient {
    AdminHttpClient::new()
        .unwrap()
        .with_timeout(Duration::from_secs(5))
}

#[tokio::test]
async fn an_enforcing_port_answers_https_only_and_only_to_clients_trusting_its_ca() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("admin");
    let config = ca.process_config(dir.path(), "member", TlsMode::Enforcing);
    let served = Served::start(config.acceptor().unwrap(), None).await;
    let https = client()
        .with_tls(&ca.client_config(dir.path()).connector().unwrap())
        .unwrap();
    assert!(https.is_tls());

    assert_eq!(https.healthz(&served.addr).await.unwrap(), "ok");
    let plain = client().healthz(&served.addr).await;
    assert!(
        matches!(plain, Err(AdminHttpError::Transport { .. })),
        "plain HTTP got {plain:?}"
    );
    let stranger_dir = tempfile::tempdir().unwrap();
    let stranger = TestCa::new("another cluster");
    let wrong_ca = client()
        .with_tls(
            &stranger
                .client_config(stranger_dir.path())
                .connector()
                .unwrap(),
        )
        .unwrap()
        .healthz(&served.addr)
        .await;
    assert!(wrong_ca.is_err(), "a client of another CA got {wrong_ca:?}");
    served.stop().await;
}

#[tokio::test]
async fn a_permissive_port_answers_both_and_a_disabled_one_plain_http() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("admin");
    let https = client()
        .with_tls(&ca.client_config(dir.path()).connector().unwrap())
        .unwrap();

    let config = ca.process_config(dir.path(), "member", TlsMode::Permissive);
    let served = Served::start(config.acceptor().unwrap(), None).await;
    assert_eq!(https.healthz(&served.addr).await.unwrap(), "ok");
    assert_eq!(client().healthz(&served.addr).await.unwrap(), "ok");
    served.stop().await;

    let served = Served::start(TlsAcceptor::plaintext(), None).await;
    assert_eq!(client().healthz(&served.addr).await.unwrap(), "ok");
    assert!(https.healthz(&served.addr).await.is_err());
    served.stop().await;
}

#[tokio::test]
async fn with_a_token_state_changing_requests_need_it_and_reads_do_not() {
    let token: AdminToken = "a-long-enough-admin-token".parse().unwrap();
    let served = Served::start(TlsAcceptor::plaintext(), Some(token.clone())).await;

    assert_eq!(client().healthz(&served.addr).await.unwrap(), "ok");
    let refused = client().elect(&served.addr).await;
    let Err(AdminHttpError::Status {
        status, message, ..
    }) = refused
    else {
        panic!("a POST without the token got {refused:?}");
    };
    assert_eq!(status, 401);
    assert_eq!(message, ADMIN_REFUSAL);
    let wrong: AdminToken = "not-the-admin-token-at-all".parse().unwrap();
    let refused = client().with_token(Some(wrong)).elect(&served.addr).await;
    assert!(
        matches!(refused, Err(AdminHttpError::Status { status: 401, .. })),
        "{refused:?}"
    );
    client()
        .with_token(Some(token))
        .elect(&served.addr)
        .await
        .unwrap();
    served.stop().await;
}
