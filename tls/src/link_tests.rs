//! The acceptor's modes, mutual TLS and the file errors, over real loopback sockets.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::test_certs::TestCa;
use crate::{AcceptError, ClientTlsConfig, MaybeTlsStream, TlsConfig, TlsConnector, TlsMode};

const TEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Accepts one connection with `acceptor`, echoes what it reads until the peer closes, and
/// returns how the accept went.
async fn serve_one(
    acceptor: crate::TlsAcceptor,
) -> (
    SocketAddr,
    tokio::task::JoinHandle<Result<bool, AcceptError>>,
) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let mut stream = acceptor.accept(tcp).await?;
        let was_tls = stream.is_tls();
        let mut buffer = [0u8; 64];
        loop {
            match stream.read(&mut buffer).await {
                Ok(0) | Err(_) => break,
                Ok(read) => {
                    if stream.write_all(&buffer[..read]).await.is_err() {
                        break;
                    }
                }
            }
        }
        Ok(was_tls)
    });
    (addr, task)
}

/// Connects with `connector`, sends "ping" and expects it back.
async fn ping(connector: &TlsConnector, addr: SocketAddr) -> std::io::Result<MaybeTlsStream> {
    let tcp = TcpStream::connect(addr).await?;
    let mut stream = connector.connect(&addr.to_string(), tcp).await?;
    stream.write_all(b"ping").await?;
    stream.flush().await?;
    let mut answer = [0u8; 4];
    stream.read_exact(&mut answer).await?;
    assert_eq!(&answer, b"ping");
    Ok(stream)
}

/// A client trusting `ca` that presents a certificate of another CA (files under `dir`).
fn rogue_client(ca: &TestCa, dir: &std::path::Path) -> TlsConnector {
    let files = TestCa::new("rogue").issue(dir, "intruder");
    ClientTlsConfig {
        enabled: true,
        ca: Some(ca.write_ca(dir)),
        cert: Some(files.cert),
        key: Some(files.key),
    }
    .connector()
    .unwrap()
}

async fn finish(
    task: tokio::task::JoinHandle<Result<bool, AcceptError>>,
) -> Result<bool, AcceptError> {
    tokio::time::timeout(TEST_TIMEOUT, task)
        .await
        .expect("server side finished in time")
        .unwrap()
}

#[tokio::test]
async fn permissive_mode_serves_tls_and_plaintext_on_one_port() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("cluster");
    let server = ca.process_config(dir.path(), "server", TlsMode::Permissive);
    let tls_client = ca.client_config(dir.path()).connector().unwrap();

    let (addr, task) = serve_one(server.acceptor().unwrap()).await;
    drop(ping(&tls_client, addr).await.unwrap());
    assert!(finish(task).await.unwrap(), "served as TLS");

    let (addr, task) = serve_one(server.acceptor().unwrap()).await;
    drop(ping(&TlsConnector::plaintext(), addr).await.unwrap());
    assert!(!finish(task).await.unwrap(), "served as plaintext");
}

#[tokio::test]
async fn enforcing_mode_refuses_plaintext() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("cluster");
    let server = ca.process_config(dir.path(), "server", TlsMode::Enforcing);

    let (addr, task) = serve_one(server.acceptor().unwrap()).await;
    let refused = ping(&TlsConnector::plaintext(), addr).await;
    assert!(refused.is_err(), "a plaintext client gets no answer");
    assert!(matches!(
        finish(task).await,
        Err(AcceptError::PlaintextRefused)
    ));

    let (addr, task) = serve_one(server.acceptor().unwrap()).await;
    let connector = ca.client_config(dir.path()).connector().unwrap();
    drop(ping(&connector, addr).await.unwrap());
    assert!(finish(task).await.unwrap());
}

#[tokio::test]
async fn a_client_refuses_a_server_of_another_ca() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestCa::new("rogue").process_config(dir.path(), "server", TlsMode::Enforcing);
    let client = TestCa::new("cluster")
        .client_config(dir.path())
        .connector()
        .unwrap();
    let (addr, task) = serve_one(server.acceptor().unwrap()).await;
    let error = ping(&client, addr).await.unwrap_err();
    assert!(error.to_string().contains("certificate"), "{error}");
    assert!(matches!(finish(task).await, Err(AcceptError::Handshake(_))));
}

#[tokio::test]
async fn mutual_tls_refuses_a_client_without_a_certificate_or_with_one_of_another_ca() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("cluster");
    let member = ca.process_config(dir.path(), "member-1", TlsMode::Enforcing);
    let peer = ca.process_config(dir.path(), "member-2", TlsMode::Enforcing);

    // A member of the cluster gets through.
    let (addr, task) = serve_one(member.mutual_acceptor().unwrap()).await;
    drop(ping(&peer.connector().unwrap(), addr).await.unwrap());
    assert!(finish(task).await.unwrap());

    // No client certificate. TLS 1.3 finishes the client's side of the handshake before the
    // server has checked the certificate: the refusal shows on the first read.
    let (addr, task) = serve_one(member.mutual_acceptor().unwrap()).await;
    let anonymous = ca.client_config(dir.path()).connector().unwrap();
    assert!(ping(&anonymous, addr).await.is_err());
    let error = finish(task).await.unwrap_err();
    assert!(matches!(error, AcceptError::Handshake(_)), "{error}");

    // A certificate signed by another CA, trusting the cluster's CA.
    let rogue_dir = tempfile::tempdir().unwrap();
    let rogue = rogue_client(&ca, rogue_dir.path());
    let (addr, task) = serve_one(member.mutual_acceptor().unwrap()).await;
    assert!(ping(&rogue, addr).await.is_err());
    let error = finish(task).await.unwrap_err();
    assert!(error.to_string().contains("certificate"), "{error}");

    // Plaintext is refused on a mutual-TLS port even when the configured mode is permissive.
    let permissive = TlsConfig {
        mode: TlsMode::Permissive,
        ..member.clone()
    };
    let (addr, task) = serve_one(permissive.mutual_acceptor().unwrap()).await;
    assert!(ping(&TlsConnector::plaintext(), addr).await.is_err());
    assert!(matches!(
        finish(task).await,
        Err(AcceptError::PlaintextRefused)
    ));
}

#[tokio::test]
async fn a_silent_client_is_dropped_after_the_handshake_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestCa::new("cluster").process_config(dir.path(), "server", TlsMode::Permissive);
    let acceptor = server
        .acceptor()
        .unwrap()
        .with_handshake_timeout(Duration::from_millis(100));
    let (addr, task) = serve_one(acceptor).await;
    let _silent = TcpStream::connect(addr).await.unwrap();
    assert!(matches!(finish(task).await, Err(AcceptError::Timeout)));
}

#[test]
fn file_errors_name_the_file_and_the_problem() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("cluster");
    let good = ca.process_config(dir.path(), "server", TlsMode::Enforcing);
    let missing = dir.path().join("missing.pem");
    let not_pem = dir.path().join("not-pem.txt");
    std::fs::write(&not_pem, "hello\n").unwrap();

    let with = |change: &dyn Fn(&mut TlsConfig)| {
        let mut config = good.clone();
        change(&mut config);
        config.acceptor().unwrap_err().to_string()
    };
    let error = with(&|config| config.cert = Some(missing.clone()));
    assert!(
        error.contains("certificate") && error.contains("missing.pem"),
        "{error}"
    );
    let error = with(&|config| config.key = Some(not_pem.clone()));
    assert!(
        error.contains("private key") && error.contains("not-pem.txt"),
        "{error}"
    );
    // The key of another certificate.
    let other = ca.issue(dir.path(), "other");
    let error = with(&|config| config.key = Some(other.key.clone()));
    assert!(
        error.contains("server.pem") && error.contains("other.key"),
        "{error}"
    );

    let mut no_ca = good.clone();
    no_ca.ca = Some(not_pem.clone());
    let error = no_ca.mutual_acceptor().unwrap_err().to_string();
    assert!(
        error.contains("CA") && error.contains("not-pem.txt"),
        "{error}"
    );
    no_ca.ca = None;
    let error = no_ca.connector().unwrap_err().to_string();
    assert!(error.contains("--tls-ca"), "{error}");
}

/// A client that drops its TLS connection without `close_notify` ends the server's reads the
/// way a plaintext close does (0 bytes), not with an error to warn about.
#[tokio::test]
async fn a_tls_peer_gone_without_close_notify_reads_as_end_of_stream() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("cluster");
    let server = ca.process_config(dir.path(), "server", TlsMode::Enforcing);
    let acceptor = server.acceptor().unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let reader = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let mut stream = acceptor.accept(tcp).await.unwrap();
        let mut received = Vec::new();
        stream.read_to_end(&mut received).await.map(|_| received)
    });

    let connector = ca.client_config(dir.path()).connector().unwrap();
    let tcp = TcpStream::connect(addr).await.unwrap();
    let mut client = connector.connect(&addr.to_string(), tcp).await.unwrap();
    client.write_all(b"last words").await.unwrap();
    client.flush().await.unwrap();
    drop(client); // no shutdown: no close_notify

    let received = tokio::time::timeout(TEST_TIMEOUT, reader)
        .await
        .expect("the server read to the end in time")
        .unwrap();
    assert_eq!(received.unwrap(), b"last words");
}

/// `--tls-client-auth`: `require` lets in only clients with a certificate of the CA; `optional`
/// also lets in clients with none, but never one with another CA's certificate.
#[tokio::test]
async fn client_auth_require_and_optional_on_a_client_port() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("cluster");
    let with_certificate = ca
        .client_config_with_certificate(dir.path(), "client")
        .connector()
        .unwrap();
    let without = ca.client_config(dir.path()).connector().unwrap();
    let rogue_dir = tempfile::tempdir().unwrap();
    let rogue = rogue_client(&ca, rogue_dir.path());
    let server = |client_auth| TlsConfig {
        client_auth,
        ..ca.process_config(dir.path(), "server", TlsMode::Enforcing)
    };

    let require = server(crate::ClientAuth::Require);
    assert!(require.clients_need_certificates());
    let (addr, task) = serve_one(require.acceptor().unwrap()).await;
    drop(ping(&with_certificate, addr).await.unwrap());
    assert!(finish(task).await.unwrap());
    for refused in [&without, &rogue] {
        let (addr, task) = serve_one(require.acceptor().unwrap()).await;
        assert!(ping(refused, addr).await.is_err());
        assert!(matches!(finish(task).await, Err(AcceptError::Handshake(_))));
    }

    let optional = server(crate::ClientAuth::Optional);
    assert!(!optional.clients_need_certificates());
    for admitted in [&with_certificate, &without] {
        let (addr, task) = serve_one(optional.acceptor().unwrap()).await;
        drop(ping(admitted, addr).await.unwrap());
        assert!(finish(task).await.unwrap());
    }
    let (addr, task) = serve_one(optional.acceptor().unwrap()).await;
    assert!(ping(&rogue, addr).await.is_err());
    assert!(matches!(finish(task).await, Err(AcceptError::Handshake(_))));
}
