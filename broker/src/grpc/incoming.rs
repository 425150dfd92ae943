//! The connections the gRPC server serves: accepted here and put through the member's TLS
//! acceptor (plaintext, TLS or both, by `--tls-mode`), each handshake on a task of its own so
//! that a slow client holds up nobody, then handed to tonic. tonic's own TLS would offer TLS
//! only; this keeps the permissive mode and one acceptor for every port.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use raftmq_tls::{MaybeTlsStream, TlsAcceptor};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tonic::transport::server::{Connected, TcpConnectInfo};
use tracing::{debug, warn};

/// Connections between accept and the end of their handshake; beyond it accepting waits.
pub const MAX_PENDING_HANDSHAKES: usize = 256;

/// Connections handshaken and waiting for tonic to take them.
pub const ACCEPTED_QUEUE_CAPACITY: usize = 64;

/// Pause after a failed `accept` (out of file descriptors) before the next one.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);

/// One gRPC connection, with the addresses tonic hands to handlers (`Request::remote_addr`).
pub struct GrpcConnection {
    stream: MaybeTlsStream,
    info: TcpConnectInfo,
}

impl Connected for GrpcConnection {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> TcpConnectInfo {
        self.info.clone()
    }
}

impl AsyncRead for GrpcConnection {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for GrpcConnection {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}

/// Accepts on `listener` until `shutdown`, on tasks tracked by `tasks`; the stream yields the
/// connections whose handshake succeeded.
pub fn accept(
    listener: TcpListener,
    tls: TlsAcceptor,
    shutdown: CancellationToken,
    tasks: &TaskTracker,
) -> ReceiverStream<io::Result<GrpcConnection>> {
    let (tx, rx) = mpsc::channel(ACCEPTED_QUEUE_CAPACITY);
    tasks.spawn(accept_loop(listener, tls, tx, shutdown, tasks.clone()));
    ReceiverStream::new(rx)
}

async fn accept_loop(
    listener: TcpListener,
    tls: TlsAcceptor,
    tx: mpsc::Sender<io::Result<GrpcConnection>>,
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
                    warn!(%error, "gRPC accept failed; retrying");
                    tokio::select! {
                        () = shutdown.cancelled() => return,
                        () = tokio::time::sleep(ACCEPT_ERROR_PAUSE) => continue,
                    }
                }
            },
        };
        if let Err(error) = tcp.set_nodelay(true) {
            debug!(%error, %peer, "could not set TCP_NODELAY");
        }
        let info = TcpConnectInfo {
            local_addr: tcp.local_addr().ok(),
            remote_addr: Some(peer),
        };
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
                    let _ = tx.send(Ok(GrpcConnection { stream, info })).await;
                }
                Err(error) => warn!(%peer, %error, "gRPC connection refused"),
            }
        });
    }
}
