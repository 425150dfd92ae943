//! One stream type for plain and TLS connections, the server side's [`TlsAcceptor`] (with
//! RocketMQ's permissive mode) and the client side's [`TlsConnector`].
//!
//! Permissive mode tells TLS from plaintext by the first byte a client sends, without
//! consuming it (`peek`): a TLS connection opens with a handshake record, content type 0x16.
//! No plaintext protocol served here can start with that byte: a RocketMQ remoting frame
//! starts with its big-endian length, and 0x16 there would announce a frame of over 369 MB,
//! far above the 16 MiB cap; a Raft frame's length is capped at 64 MiB (0x04000000).

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use crate::TlsMode;

/// The first byte of a TLS connection: the content type of a handshake record.
pub const TLS_HANDSHAKE_RECORD: u8 = 0x16;

/// How long a new connection may take to send its first byte and finish the TLS handshake:
/// a peer that connects and stays silent must not hold a connection slot for long.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// A connection, plain or TLS (either side of the handshake).
#[allow(clippy::large_enum_variant)] // the TLS states are boxed; the plain one is a socket
pub enum MaybeTlsStream {
    Plain(TcpStream),
    Server(Box<tokio_rustls::server::TlsStream<TcpStream>>),
    Client(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

impl std::fmt::Debug for MaybeTlsStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = if self.is_tls() { "tls" } else { "plain" };
        f.debug_struct("MaybeTlsStream")
            .field("kind", &kind)
            .field("peer", &self.tcp().peer_addr().ok())
            .finish()
    }
}

impl MaybeTlsStream {
    pub fn is_tls(&self) -> bool {
        !matches!(self, MaybeTlsStream::Plain(_))
    }

    /// The socket under the TLS layer (for its addresses and options).
    pub fn tcp(&self) -> &TcpStream {
        match self {
            MaybeTlsStream::Plain(tcp) => tcp,
            MaybeTlsStream::Server(tls) => tls.get_ref().0,
            MaybeTlsStream::Client(tls) => tls.get_ref().0,
        }
    }
}

macro_rules! delegate {
    ($self:ident, $stream:ident => $call:expr) => {
        match $self.get_mut() {
            MaybeTlsStream::Plain($stream) => {
                let $stream = Pin::new($stream);
                $call
            }
            MaybeTlsStream::Server($stream) => {
                let $stream = Pin::new($stream.as_mut());
                $call
            }
            MaybeTlsStream::Client($stream) => {
                let $stream = Pin::new($stream.as_mut());
                $call
            }
        }
    };
}

impl AsyncRead for MaybeTlsStream {
    /// A peer that closes a TLS connection without `close_notify` (a killed process, a client
    /// that drops its socket, as RocketMQ's do) reads as a plain end of stream, as it would
    /// without TLS, instead of rustls' `UnexpectedEof` error: every protocol served here frames
    /// its messages by length, so a cut in the middle of one is still caught by the framing
    /// (bytes left at the end of the stream), and a close between two is not worth a warning.
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let is_tls = self.is_tls();
        match delegate!(self, stream => stream.poll_read(cx, buf)) {
            Poll::Ready(Err(error)) if is_tls && error.kind() == io::ErrorKind::UnexpectedEof => {
                Poll::Ready(Ok(()))
            }
            other => other,
        }
    }
}

impl AsyncWrite for MaybeTlsStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        delegate!(self, stream => stream.poll_write(cx, buf))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        delegate!(self, stream => stream.poll_write_vectored(cx, bufs))
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            MaybeTlsStream::Plain(tcp) => tcp.is_write_vectored(),
            MaybeTlsStream::Server(tls) => tls.is_write_vectored(),
            MaybeTlsStream::Client(tls) => tls.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        delegate!(self, stream => stream.poll_flush(cx))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        delegate!(self, stream => stream.poll_shutdown(cx))
    }
}

/// Why an accepted connection is not served.
#[derive(Debug, thiserror::Error)]
pub enum AcceptError {
    #[error("plaintext connection refused: this port accepts TLS only (tls mode enforcing)")]
    PlaintextRefused,
    #[error("TLS handshake failed: {0}")]
    Handshake(#[source] io::Error),
    #[error("no TLS handshake within {} ms", HANDSHAKE_TIMEOUT.as_millis())]
    Timeout,
    #[error("I/O error before the handshake: {0}")]
    Io(#[source] io::Error),
}

/// Turns accepted sockets into streams by a [`TlsMode`]. Cheap to clone.
#[derive(Clone)]
pub struct TlsAcceptor {
    mode: TlsMode,
    acceptor: Option<tokio_rustls::TlsAcceptor>,
    handshake_timeout: Duration,
}

impl std::fmt::Debug for TlsAcceptor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsAcceptor")
            .field("mode", &self.mode)
            .finish()
    }
}

impl Default for TlsAcceptor {
    fn default() -> Self {
        TlsAcceptor::plaintext()
    }
}

impl TlsAcceptor {
    /// Serves every connection as plaintext (TLS disabled).
    pub fn plaintext() -> Self {
        TlsAcceptor {
            mode: TlsMode::Disabled,
            acceptor: None,
            handshake_timeout: HANDSHAKE_TIMEOUT,
        }
    }

    /// An acceptor in `mode` with `config` (ignored when the mode is disabled).
    pub fn new(mode: TlsMode, config: Arc<rustls::ServerConfig>) -> Self {
        TlsAcceptor {
            mode,
            acceptor: mode
                .is_enabled()
                .then(|| tokio_rustls::TlsAcceptor::from(config)),
            handshake_timeout: HANDSHAKE_TIMEOUT,
        }
    }

    /// The same acceptor with another handshake timeout (tests).
    pub fn with_handshake_timeout(mut self, timeout: Duration) -> Self {
        self.handshake_timeout = timeout;
        self
    }

    pub fn mode(&self) -> TlsMode {
        self.mode
    }

    /// Decides how to serve `tcp`: as it is (disabled, or a plaintext client in permissive
    /// mode), or after a TLS handshake. Enforcing mode refuses a plaintext client before reading
    /// anything from it. Bounded by the handshake timeout; call it on the connection's own task,
    /// not in an accept loop, so that a slow client delays nobody else.
    pub async fn accept(&self, tcp: TcpStream) -> Result<MaybeTlsStream, AcceptError> {
        let Some(acceptor) = &self.acceptor else {
            return Ok(MaybeTlsStream::Plain(tcp));
        };
        let handshake = async {
            let mut first = [0u8; 1];
            let peeked = tcp.peek(&mut first).await.map_err(AcceptError::Io)?;
            let is_tls = peeked == 1 && first[0] == TLS_HANDSHAKE_RECORD;
            if !is_tls {
                return match self.mode {
                    // A client that closed without a byte reads as a clean close either way.
                    TlsMode::Permissive | TlsMode::Disabled => Ok(MaybeTlsStream::Plain(tcp)),
                    TlsMode::Enforcing => Err(AcceptError::PlaintextRefused),
                };
            }
            let tls = acceptor.accept(tcp).await.map_err(AcceptError::Handshake)?;
            Ok(MaybeTlsStream::Server(Box::new(tls)))
        };
        tokio::time::timeout(self.handshake_timeout, handshake)
            .await
            .unwrap_or(Err(AcceptError::Timeout))
    }
}

/// Opens client connections, over TLS when configured. Cheap to clone.
#[derive(Clone, Default)]
pub struct TlsConnector {
    connector: Option<tokio_rustls::TlsConnector>,
}

impl std::fmt::Debug for TlsConnector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsConnector")
            .field("tls", &self.is_tls())
            .finish()
    }
}

impl TlsConnector {
    /// Connections stay plaintext.
    pub fn plaintext() -> Self {
        TlsConnector { connector: None }
    }

    pub fn new(config: Arc<rustls::ClientConfig>) -> Self {
        TlsConnector {
            connector: Some(tokio_rustls::TlsConnector::from(config)),
        }
    }

    pub fn is_tls(&self) -> bool {
        self.connector.is_some()
    }

    /// The rustls configuration behind a TLS connector (for an HTTP client built on it).
    pub fn client_config(&self) -> Option<Arc<rustls::ClientConfig>> {
        self.connector
            .as_ref()
            .map(|connector| connector.config().clone())
    }

    /// Runs the client handshake on `tcp`, connected to `addr` (`host:port`): the server's
    /// certificate must chain to the CA and name `host` (a DNS name or an IP address SAN).
    /// Plaintext connectors return the socket as it is. The caller bounds the time.
    pub async fn connect(&self, addr: &str, tcp: TcpStream) -> io::Result<MaybeTlsStream> {
        let Some(connector) = &self.connector else {
            return Ok(MaybeTlsStream::Plain(tcp));
        };
        let name = server_name(addr)?;
        let tls = connector.connect(name, tcp).await?;
        Ok(MaybeTlsStream::Client(Box::new(tls)))
    }
}

/// The name a server at `addr` (`host:port`, `[v6]:port` or a bare host) must prove.
pub fn server_name(addr: &str) -> io::Result<ServerName<'static>> {
    let host = match addr.rsplit_once(':') {
        Some((host, port)) if port.parse::<u16>().is_ok() => host,
        _ => addr,
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    ServerName::try_from(host.to_owned()).map_err(|error| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{host:?} (from {addr:?}) is not a DNS name or IP address: {error}"),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_names_come_from_the_host_part() {
        assert_eq!(
            server_name("127.0.0.1:10911").unwrap(),
            ServerName::try_from("127.0.0.1").unwrap()
        );
        assert_eq!(
            server_name("[::1]:9876").unwrap(),
            ServerName::try_from("::1").unwrap()
        );
        assert_eq!(
            server_name("broker-a.example:10911").unwrap(),
            ServerName::try_from("broker-a.example").unwrap()
        );
        assert!(server_name("bad host:1").is_err());
    }
}
