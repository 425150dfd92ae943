//! The connections the gRPC server serves: accepted by `raftmq_tls::incoming` through the
//! member's TLS acceptor (plaintext, TLS or both, by `--tls-mode`), each handshake on a task of
//! its own, then handed to tonic with the addresses its handlers read.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use raftmq_tls::{MaybeTlsStream, TlsAcceptor};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::{Stream, StreamExt};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tonic::transport::server::{Connected, TcpConnectInfo};

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
) -> impl Stream<Item = io::Result<GrpcConnection>> {
    let accepted = raftmq_tls::incoming::accept(listener, tls, "gRPC", shutdown, tasks);
    ReceiverStream::new(accepted).map(|accepted| {
        Ok(GrpcConnection {
            stream: accepted.stream,
            info: TcpConnectInfo {
                local_addr: accepted.local,
                remote_addr: Some(accepted.peer),
            },
        })
    })
}
