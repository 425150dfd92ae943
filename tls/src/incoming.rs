//! Accepting through a [`TlsAcceptor`] for servers that take ready connections one by one
//! (tonic's gRPC server, axum's admin HTTP): a loop accepts sockets and runs each handshake on
//! a task of its own, so that a slow or silent client holds up nobody, and hands the
//! connections whose handshake succeeded to a channel the server reads. The servers' own TLS
//! would offer TLS only; this keeps the permissive mode and one acceptor for every port.
//!
//! (The remoting and Raft servers run the acceptor on each connection's own task themselves:
//! they spawn that task anyway.)

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::{Semaphore, mpsc};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, warn};

use crate::{MaybeTlsStream, TlsAcceptor};

/// Connections between accept and the end of their handshake; beyond it accepting waits.
pub const MAX_PENDING_HANDSHAKES: usize = 256;

/// Connections handshaken and waiting for the server to take them.
pub const ACCEPTED_QUEUE_CAPACITY: usize = 64;

/// Pause after a failed `accept` (out of file descriptors) before the next one.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);

/// A connection ready to serve: plain or TLS, as the acceptor's mode decided.
#[derive(Debug)]
pub struct Accepted {
    pub stream: MaybeTlsStream,
    pub peer: SocketAddr,
    pub local: Option<SocketAddr>,
}

/// Accepts on `listener` until `shutdown`, on tasks tracked by `tasks`; the receiver yields the
/// connections whose handshake succeeded and ends once accepting stopped. `server` names the
/// port in logs (`"gRPC"`, `"admin HTTP"`).
pub fn accept(
    listener: TcpListener,
    tls: TlsAcceptor,
    server: &'static str,
    shutdown: CancellationToken,
    tasks: &TaskTracker,
) -> mpsc::Receiver<Accepted> {
    let (tx, rx) = mpsc::channel(ACCEPTED_QUEUE_CAPACITY);
    tasks.spawn(accept_loop(
        listener,
        tls,
        server,
        tx,
        shutdown,
        tasks.clone(),
    ));
    rx
}

async fn accept_loop(
    listener: TcpListener,
    tls: TlsAcceptor,
    server: &'static str,
    tx: mpsc::Sender<Accepted>,
    shutdown: CancellationToken,
    tasks: TaskTracker,
) {
    let pending = Arc::new(Semaphore::new(MAX_PENDING_HANDSHAKES));
    loop {
        let permit = tokio::select! {
            () = shutdown.cancelled() => return,
            permit = pending.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => return, // never closed
            },
        };
        let (tcp, peer) = tokio::select! {
            () = shutdown.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    warn!(%error, server, "accept failed; retrying");
                    tokio::select! {
                        () = shutdown.cancelled() => return,
                        () = tokio::time::sleep(ACCEPT_ERROR_PAUSE) => continue,
                    }
                }
            },
        };
        if let Err(error) = tcp.set_nodelay(true) {
            debug!(%error, %peer, server, "could not set TCP_NODELAY");
        }
        let local = tcp.local_addr().ok();
        let (tls, tx, shutdown) = (tls.clone(), tx.clone(), shutdown.clone());
        tasks.spawn(async move {
            let stream = tokio::select! {
                () = shutdown.cancelled() => return,
                accepted = tls.accept(tcp) => accepted,
            };
            drop(permit);
            match stream {
                Ok(stream) => {
                    // Fails only once the server stopped taking connections.
                    let _ = tx
                        .send(Accepted {
                            stream,
                            peer,
                            local,
                        })
                        .await;
                }
                Err(error) => warn!(%peer, %error, server, "connection refused"),
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    use super::*;
    use crate::TlsMode;
    use crate::test_certs::TestCa;

    /// A silent client does not hold up the next one, a plaintext client is refused by an
    /// enforcing acceptor without reaching the server, and a TLS client gets through.
    #[tokio::test]
    async fn handshakes_run_beside_each_other_and_refusals_never_reach_the_server() {
        let dir = tempfile::tempdir().unwrap();
        let ca = TestCa::new("incoming");
        let config = ca.process_config(dir.path(), "server", TlsMode::Enforcing);
        let acceptor = config.acceptor().unwrap();
        let connector = ca.client_config(dir.path()).connector().unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let shutdown = CancellationToken::new();
        let tasks = TaskTracker::new();
        let mut ready = accept(listener, acceptor, "test", shutdown.clone(), &tasks);

        let _silent = TcpStream::connect(&addr).await.unwrap();
        let mut plain = TcpStream::connect(&addr).await.unwrap();
        plain.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
        let tcp = TcpStream::connect(&addr).await.unwrap();
        let mut client = connector.connect(&addr, tcp).await.unwrap();
        client.write_all(b"hello").await.unwrap();

        let accepted = tokio::time::timeout(Duration::from_secs(5), ready.recv())
            .await
            .expect("the TLS client was held up")
            .unwrap();
        assert!(accepted.stream.is_tls());
        let mut stream = accepted.stream;
        let mut hello = [0u8; 5];
        stream.read_exact(&mut hello).await.unwrap();
        assert_eq!(&hello, b"hello");
        // The plaintext client was closed, not handed over.
        let mut rest = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(5), plain.read_to_end(&mut rest))
            .await
            .expect("the plaintext client was left open");
        assert!(read.is_err() || rest.is_empty(), "{read:?} {rest:?}");
        assert!(
            ready.try_recv().is_err(),
            "a refused connection reached the server"
        );

        shutdown.cancel();
        tasks.close();
        tokio::time::timeout(Duration::from_secs(5), tasks.wait())
            .await
            .expect("accepting did not stop");
    }
}
