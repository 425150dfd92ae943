//! The requesting side: one connection per address, requests matched to answers by a fresh
//! `opaque`, a deadline per request, oneway sends, reconnection on demand.
//!
//! Errors tell apart "the request was not sent" (safe to retry anywhere) from "it was sent and
//! no answer came" (the outcome is unknown: a send may have been stored). A request counts as
//! sent once it is queued for the connection's writer, so that a timed-out or cut-off request
//! is never reported as not sent.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use raftmq_protocol::RemotingCommand;
use raftmq_protocol::WireError;
use raftmq_protocol::acl::SessionCredentials;
use raftmq_protocol::code::response;
use raftmq_protocol::frame::FLAG_ONEWAY;
use raftmq_tls::{MaybeTlsStream, TlsConnector};
use tokio::io::{ReadHalf, WriteHalf};
use tokio::net::TcpStream;
use tokio::sync::{Semaphore, mpsc, oneshot};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, warn};

use crate::connection::{EncodedFrame, FrameReader, FrameWriter, WRITE_TIMEOUT, millis};

/// How long establishing a connection may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// Requests awaiting answers on one connection.
pub const MAX_PENDING_PER_CONNECTION: usize = 4096;

/// Encoded requests waiting for a connection's writer.
pub const CLIENT_WRITE_QUEUE_CAPACITY: usize = 1024;

/// Limits of an [`RpcClient`]; `Default` gives the named constants.
#[derive(Clone, Debug)]
pub struct RpcClientConfig {
    pub connect_timeout: Duration,
    pub max_pending_per_connection: usize,
    pub write_queue_capacity: usize,
    pub write_timeout: Duration,
    /// Signs every request sent (RocketMQ's `AclClientRPCHook`) when the servers enforce ACL.
    pub credentials: Option<SessionCredentials>,
    /// TLS to the servers (trusting the configured CA), or plaintext.
    pub tls: TlsConnector,
}

impl Default for RpcClientConfig {
    fn default() -> Self {
        RpcClientConfig {
            connect_timeout: CONNECT_TIMEOUT,
            max_pending_per_connection: MAX_PENDING_PER_CONNECTION,
            write_queue_capacity: CLIENT_WRITE_QUEUE_CAPACITY,
            write_timeout: WRITE_TIMEOUT,
            credentials: None,
            tls: TlsConnector::plaintext(),
        }
    }
}

/// Why a request was not sent; retrying it cannot duplicate anything.
#[derive(Debug, thiserror::Error)]
pub enum NotSentReason {
    #[error("connect failed: {0}")]
    Connect(#[source] std::io::Error),
    #[error("connect timed out")]
    ConnectTimeout,
    /// The TLS handshake failed (an untrusted certificate, a plaintext-only server); nothing
    /// was sent.
    #[error("TLS handshake failed: {0}")]
    TlsHandshake(#[source] std::io::Error),
    #[error("the request cannot be encoded: {0}")]
    Encode(#[source] WireError),
    #[error("the deadline passed while waiting for room on the connection")]
    Backlogged,
    #[error("the connection closed before the request was queued")]
    ConnectionClosed,
    #[error("the client is shut down")]
    Shutdown,
}

/// A failed request.
#[derive(Debug, thiserror::Error)]
pub enum RpcError {
    /// Nothing reached the network: safe to retry, here or elsewhere.
    #[error("request to {addr} not sent: {reason}")]
    NotSent { addr: String, reason: NotSentReason },

    /// Sent, but no answer before the deadline: the outcome is unknown.
    #[error("request to {addr} got no answer within {timeout_ms} ms; its outcome is unknown")]
    Timeout { addr: String, timeout_ms: u64 },

    /// Sent, but the connection closed before the answer: the outcome is unknown.
    #[error("connection to {addr} closed before the answer ({reason}); the outcome is unknown")]
    ConnectionLost { addr: String, reason: String },
}

impl RpcError {
    /// Whether the request may have been processed by the peer.
    pub fn outcome_unknown(&self) -> bool {
        !matches!(self, RpcError::NotSent { .. })
    }

    pub fn addr(&self) -> &str {
        match self {
            RpcError::NotSent { addr, .. }
            | RpcError::Timeout { addr, .. }
            | RpcError::ConnectionLost { addr, .. } => addr,
        }
    }
}

/// Answers requests a server sends to this client on its connection (for example
/// NOTIFY_CONSUMER_IDS_CHANGED or CHECK_TRANSACTION_STATE). Called on the connection's reader:
/// return quickly.
pub trait InboundRequestHandler: Send + Sync + 'static {
    /// Return an answer for a request that expects one; ignored for oneway requests.
    fn on_request(&self, addr: &str, request: RemotingCommand) -> Option<RemotingCommand>;
}

/// A client for request/response over remoting, one connection per address. Cheap to clone.
#[derive(Clone)]
pub struct RpcClient {
    inner: Arc<ClientInner>,
}

impl fmt::Debug for RpcClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RpcClient").finish_non_exhaustive()
    }
}

/// The connection to one address, if any; its async lock serialises connecting.
type ConnectionSlot = Arc<tokio::sync::Mutex<Option<Arc<Connection>>>>;

struct ClientInner {
    config: RpcClientConfig,
    /// One slot per address; the slot's async lock serialises connecting to that address.
    connections: Mutex<HashMap<String, ConnectionSlot>>,
    next_opaque: AtomicI32,
    tracker: TaskTracker,
    shutdown: CancellationToken,
    inbound: Option<Arc<dyn InboundRequestHandler>>,
}

impl Drop for ClientInner {
    fn drop(&mut self) {
        // Connection tasks end when the last client handle goes away.
        self.shutdown.cancel();
    }
}

struct Pending {
    waiters: HashMap<i32, oneshot::Sender<RemotingCommand>>,
    /// Set once the connection died; no new waiter may register.
    closed: Option<String>,
}

struct Connection {
    addr: String,
    tx: mpsc::Sender<EncodedFrame>,
    pending: Mutex<Pending>,
    pending_slots: Semaphore,
    closed: CancellationToken,
}

impl Connection {
    fn is_usable(&self) -> bool {
        !self.closed.is_cancelled() && !self.tx.is_closed()
    }

    /// Marks the connection dead and fails every waiter.
    fn close(&self, reason: String) {
        let waiters = {
            let mut pending = self
                .pending
                .lock()
                .unwrap_or_else(|poison| poison.into_inner());
            if pending.closed.is_none() {
                pending.closed = Some(reason);
            }
            std::mem::take(&mut pending.waiters)
        };
        // Dropping the senders wakes each waiter with "connection lost".
        drop(waiters);
        self.closed.cancel();
    }

    fn close_reason(&self) -> String {
        self.pending
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
            .closed
            .clone()
            .unwrap_or_else(|| "connection closed".to_owned())
    }

    fn forget(&self, opaque: i32) {
        self.pending
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
            .waiters
            .remove(&opaque);
    }
}

/// Removes a waiter when its request future ends for any reason (answer, timeout, drop).
struct WaiterGuard<'a> {
    connection: &'a Connection,
    opaque: i32,
}

impl Drop for WaiterGuard<'_> {
    fn drop(&mut self) {
        self.connection.forget(self.opaque);
    }
}

impl Default for RpcClient {
    fn default() -> Self {
        RpcClient::new(RpcClientConfig::default())
    }
}

impl RpcClient {
    pub fn new(config: RpcClientConfig) -> Self {
        RpcClient::build(config, None)
    }

    /// A client that answers server-initiated requests with `inbound`.
    pub fn with_inbound_handler(
        config: RpcClientConfig,
        inbound: Arc<dyn InboundRequestHandler>,
    ) -> Self {
        RpcClient::build(config, Some(inbound))
    }

    fn build(config: RpcClientConfig, inbound: Option<Arc<dyn InboundRequestHandler>>) -> Self {
        let config = RpcClientConfig {
            max_pending_per_connection: config
                .max_pending_per_connection
                .clamp(1, Semaphore::MAX_PERMITS),
            write_queue_capacity: config.write_queue_capacity.max(1),
            ..config
        };
        RpcClient {
            inner: Arc::new(ClientInner {
                config,
                connections: Mutex::new(HashMap::new()),
                next_opaque: AtomicI32::new(1),
                tracker: TaskTracker::new(),
                shutdown: CancellationToken::new(),
                inbound,
            }),
        }
    }

    /// Signs `request` last, once its header and body are final (the opaque and flag are not
    /// signed, as in RocketMQ).
    fn sign(&self, request: &mut RemotingCommand) {
        if let Some(credentials) = &self.inner.config.credentials {
            credentials.sign(request);
        }
    }

    fn next_opaque(&self) -> i32 {
        self.inner.next_opaque.fetch_add(1, Ordering::Relaxed)
    }

    /// Sends `request` to `addr` and waits for its answer, at most `timeout` in all
    /// (connecting included). The request gets a fresh opaque.
    pub async fn invoke(
        &self,
        addr: &str,
        mut request: RemotingCommand,
        timeout: Duration,
    ) -> Result<RemotingCommand, RpcError> {
        let deadline = Instant::now() + timeout;
        request.opaque = self.next_opaque();
        request.flag &= !FLAG_ONEWAY;
        self.sign(&mut request);
        let frame = EncodedFrame::encode(&request)
            .map_err(|error| not_sent(addr, NotSentReason::Encode(error)))?;
        let connection = self.connection(addr, deadline).await?;
        let _slot = tokio::time::timeout_at(deadline, connection.pending_slots.acquire())
            .await
            .map_err(|_| not_sent(addr, NotSentReason::Backlogged))?
            .map_err(|_| not_sent(addr, NotSentReason::ConnectionClosed))?;

        let (answer_tx, answer_rx) = oneshot::channel();
        {
            let mut pending = connection
                .pending
                .lock()
                .unwrap_or_else(|poison| poison.into_inner());
            if pending.closed.is_some() {
                return Err(not_sent(addr, NotSentReason::ConnectionClosed));
            }
            pending.waiters.insert(request.opaque, answer_tx);
        }
        let _guard = WaiterGuard {
            connection: &connection,
            opaque: request.opaque,
        };
        match tokio::time::timeout_at(deadline, connection.tx.send(frame)).await {
            Err(_) => return Err(not_sent(addr, NotSentReason::Backlogged)),
            Ok(Err(_)) => return Err(not_sent(addr, NotSentReason::ConnectionClosed)),
            Ok(Ok(())) => {}
        }
        // From here on the request may be on the wire.
        match tokio::time::timeout_at(deadline, answer_rx).await {
            Ok(Ok(answer)) => Ok(answer),
            Ok(Err(_)) => Err(RpcError::ConnectionLost {
                addr: addr.to_owned(),
                reason: connection.close_reason(),
            }),
            Err(_) => Err(RpcError::Timeout {
                addr: addr.to_owned(),
                timeout_ms: millis(timeout),
            }),
        }
    }

    /// Sends `request` to `addr` marked oneway; returns once it is queued for writing.
    pub async fn invoke_oneway(
        &self,
        addr: &str,
        mut request: RemotingCommand,
        timeout: Duration,
    ) -> Result<(), RpcError> {
        let deadline = Instant::now() + timeout;
        request.opaque = self.next_opaque();
        request.flag |= FLAG_ONEWAY;
        self.sign(&mut request);
        let frame = EncodedFrame::encode(&request)
            .map_err(|error| not_sent(addr, NotSentReason::Encode(error)))?;
        let connection = self.connection(addr, deadline).await?;
        match tokio::time::timeout_at(deadline, connection.tx.send(frame)).await {
            Err(_) => Err(not_sent(addr, NotSentReason::Backlogged)),
            Ok(Err(_)) => Err(not_sent(addr, NotSentReason::ConnectionClosed)),
            Ok(Ok(())) => Ok(()),
        }
    }

    /// Closes the connection to `addr`, failing its waiters; the next request reconnects.
    pub async fn close_connection(&self, addr: &str) {
        let slot = self.slot(addr);
        let mut slot = slot.lock().await;
        if let Some(connection) = slot.take() {
            connection.close("closed by the client".to_owned());
        }
    }

    /// Closes every connection and waits for their tasks.
    pub async fn shutdown(&self) {
        self.inner.shutdown.cancel();
        self.inner.tracker.close();
        self.inner.tracker.wait().await;
    }

    fn slot(&self, addr: &str) -> ConnectionSlot {
        let mut connections = self
            .inner
            .connections
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        connections.entry(addr.to_owned()).or_default().clone()
    }

    /// The live connection to `addr`, connecting if there is none.
    async fn connection(&self, addr: &str, deadline: Instant) -> Result<Arc<Connection>, RpcError> {
        if self.inner.shutdown.is_cancelled() {
            return Err(not_sent(addr, NotSentReason::Shutdown));
        }
        let slot = self.slot(addr);
        let mut slot = tokio::time::timeout_at(deadline, slot.lock())
            .await
            .map_err(|_| not_sent(addr, NotSentReason::ConnectTimeout))?;
        if let Some(connection) = slot.as_ref().filter(|connection| connection.is_usable()) {
            return Ok(connection.clone());
        }
        let connect_deadline = deadline.min(Instant::now() + self.inner.config.connect_timeout);
        let stream = match tokio::time::timeout_at(connect_deadline, TcpStream::connect(addr)).await
        {
            Err(_) => return Err(not_sent(addr, NotSentReason::ConnectTimeout)),
            Ok(Err(error)) => return Err(not_sent(addr, NotSentReason::Connect(error))),
            Ok(Ok(stream)) => stream,
        };
        if let Err(error) = stream.set_nodelay(true) {
            debug!(addr, %error, "could not set TCP_NODELAY");
        }
        let stream = match tokio::time::timeout_at(
            connect_deadline,
            self.inner.config.tls.connect(addr, stream),
        )
        .await
        {
            Err(_) => return Err(not_sent(addr, NotSentReason::ConnectTimeout)),
            Ok(Err(error)) => return Err(not_sent(addr, NotSentReason::TlsHandshake(error))),
            Ok(Ok(stream)) => stream,
        };
        let connection = self.start_connection(addr, stream);
        *slot = Some(connection.clone());
        Ok(connection)
    }

    fn start_connection(&self, addr: &str, stream: MaybeTlsStream) -> Arc<Connection> {
        let config = &self.inner.config;
        let (read_half, write_half) = tokio::io::split(stream);
        let (tx, rx) = mpsc::channel(config.write_queue_capacity);
        let connection = Arc::new(Connection {
            addr: addr.to_owned(),
            tx,
            pending: Mutex::new(Pending {
                waiters: HashMap::new(),
                closed: None,
            }),
            pending_slots: Semaphore::new(config.max_pending_per_connection),
            closed: self.inner.shutdown.child_token(),
        });
        self.inner.tracker.spawn(client_write_loop(
            write_half,
            rx,
            config.write_timeout,
            connection.clone(),
        ));
        self.inner.tracker.spawn(client_read_loop(
            read_half,
            connection.clone(),
            self.inner.inbound.clone(),
        ));
        debug!(addr, "connected");
        connection
    }
}

fn not_sent(addr: &str, reason: NotSentReason) -> RpcError {
    RpcError::NotSent {
        addr: addr.to_owned(),
        reason,
    }
}

async fn client_write_loop(
    write_half: WriteHalf<MaybeTlsStream>,
    mut rx: mpsc::Receiver<EncodedFrame>,
    write_timeout: Duration,
    connection: Arc<Connection>,
) {
    let mut writer = FrameWriter::new(write_half, write_timeout);
    let result: Result<(), crate::connection::ConnectionError> = async {
        loop {
            let frame = tokio::select! {
                biased;
                _ = connection.closed.cancelled() => return Ok(()),
                frame = rx.recv() => match frame {
                    Some(frame) => frame,
                    None => return Ok(()),
                },
            };
            writer.write_encoded(&frame).await?;
            while let Ok(frame) = rx.try_recv() {
                writer.write_encoded(&frame).await?;
            }
            writer.flush().await?;
        }
    }
    .await;
    if let Err(error) = result {
        debug!(addr = %connection.addr, %error, "write failed");
        connection.close(format!("write failed: {error}"));
    }
}

async fn client_read_loop(
    read_half: ReadHalf<MaybeTlsStream>,
    connection: Arc<Connection>,
    inbound: Option<Arc<dyn InboundRequestHandler>>,
) {
    let mut reader = FrameReader::new(read_half);
    let reason = loop {
        let next = tokio::select! {
            _ = connection.closed.cancelled() => break "connection closed".to_owned(),
            next = reader.read_frame() => next,
        };
        let command = match next {
            Ok(Some(command)) => command,
            Ok(None) => break "closed by the peer".to_owned(),
            Err(error) => {
                warn!(addr = %connection.addr, %error, "closing connection");
                break format!("closed after a read error: {error}");
            }
        };
        if command.is_response() {
            let waiter = connection
                .pending
                .lock()
                .unwrap_or_else(|poison| poison.into_inner())
                .waiters
                .remove(&command.opaque);
            match waiter {
                // The waiter may have timed out meanwhile: nothing to do then.
                Some(waiter) => drop(waiter.send(command)),
                None => {
                    debug!(addr = %connection.addr, opaque = command.opaque, "answer nobody waits for")
                }
            }
            continue;
        }
        let oneway = command.is_oneway();
        let opaque = command.opaque;
        let answer = match &inbound {
            Some(handler) => handler.on_request(&connection.addr, command),
            None => Some(command.new_response(
                response::REQUEST_CODE_NOT_SUPPORTED,
                Some(format!(
                    "request code {} not supported by this client",
                    command.code
                )),
            )),
        };
        if let (Some(mut answer), false) = (answer, oneway) {
            answer.opaque = opaque;
            answer.flag |= raftmq_protocol::frame::FLAG_RESPONSE;
            match EncodedFrame::encode(&answer) {
                // Never block the reader on the writer: drop the answer when the queue is full.
                Ok(frame) => {
                    if connection.tx.try_send(frame).is_err() {
                        warn!(addr = %connection.addr, "write queue full; dropping an answer to the server");
                    }
                }
                Err(error) => warn!(addr = %connection.addr, %error, "answer cannot be encoded"),
            }
        }
    };
    connection.close(reason);
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use raftmq_protocol::code::request;
    use tokio::net::TcpListener;

    use super::*;
    use crate::server::{ConnectionInfo, RequestHandler, Server, ServerConfig};

    const TEST_TIMEOUT: Duration = Duration::from_secs(10);
    const ECHO: i32 = 1;
    const NEVER: i32 = 2;
    const PUSH: i32 = 3;

    #[derive(Default)]
    struct Echo {
        handled: AtomicUsize,
    }

    impl RequestHandler for Echo {
        async fn handle(
            &self,
            connection: ConnectionInfo,
            request: RemotingCommand,
        ) -> Option<RemotingCommand> {
            self.handled.fetch_add(1, Ordering::SeqCst);
            match request.code {
                NEVER => {
                    connection.closing().await;
                    None
                }
                PUSH => {
                    let mut ask = RemotingCommand::new_request(request::CHECK_TRANSACTION_STATE);
                    ask.opaque = 555;
                    connection.handle().send(&ask).await.ok()?;
                    Some(request.new_response(response::SUCCESS, None))
                }
                _ => Some(
                    request
                        .new_response(response::SUCCESS, None)
                        .with_body(request.body.clone()),
                ),
            }
        }
    }

    async fn start() -> (
        String,
        Arc<Echo>,
        tokio::sync::oneshot::Sender<()>,
        tokio::task::JoinHandle<()>,
    ) {
        start_with(ServerConfig::default()).await
    }

    async fn start_with(
        config: ServerConfig,
    ) -> (
        String,
        Arc<Echo>,
        tokio::sync::oneshot::Sender<()>,
        tokio::task::JoinHandle<()>,
    ) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let handler = Arc::new(Echo::default());
        let server = Server::new(listener, handler.clone(), config);
        let addr = server.local_addr().unwrap().to_string();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(server.run(async {
            let _ = stopped.await;
        }));
        (addr, handler, stop, task)
    }

    /// Echoes `body` through `client` to `addr`.
    async fn echo(client: &RpcClient, addr: &str, body: &[u8]) -> Result<(), RpcError> {
        let request = RemotingCommand::new_request(ECHO).with_body(body.to_vec());
        let answer = client.invoke(addr, request, TEST_TIMEOUT).await?;
        assert_eq!(answer.body.as_ref(), body);
        Ok(())
    }

    #[tokio::test]
    async fn tls_modes_of_the_server_decide_which_clients_are_served() {
        use raftmq_tls::TlsMode;
        use raftmq_tls::test_certs::TestCa;

        let dir = tempfile::tempdir().unwrap();
        let ca = TestCa::new("cluster");
        let tls_client = RpcClient::new(RpcClientConfig {
            tls: ca.client_config(dir.path()).connector().unwrap(),
            ..RpcClientConfig::default()
        });
        let plain_client = RpcClient::default();
        for mode in [TlsMode::Permissive, TlsMode::Enforcing] {
            let tls = ca.process_config(dir.path(), "server", mode);
            let (addr, _, stop, task) = start_with(ServerConfig {
                tls: tls.acceptor().unwrap(),
                ..ServerConfig::default()
            })
            .await;
            // Frames larger than a TLS record cross intact.
            echo(&tls_client, &addr, &vec![7u8; 100_000]).await.unwrap();
            let plain = echo(&plain_client, &addr, b"plain").await;
            match mode {
                TlsMode::Enforcing => {
                    let error = plain.unwrap_err();
                    assert!(error.outcome_unknown(), "the frame was written: {error}");
                }
                _ => plain.unwrap(),
            }
            let _ = stop.send(());
            task.await.unwrap();
        }

        // A client that does not trust the server's CA sends nothing.
        let rogue = TestCa::new("rogue").process_config(dir.path(), "rogue", TlsMode::Enforcing);
        let (addr, handler, stop, task) = start_with(ServerConfig {
            tls: rogue.acceptor().unwrap(),
            ..ServerConfig::default()
        })
        .await;
        let error = echo(&tls_client, &addr, b"x").await.unwrap_err();
        assert!(
            matches!(
                &error,
                RpcError::NotSent {
                    reason: NotSentReason::TlsHandshake(_),
                    ..
                }
            ),
            "{error}"
        );
        assert_eq!(handler.handled.load(Ordering::SeqCst), 0);
        for client in [tls_client, plain_client] {
            client.shutdown().await;
        }
        let _ = stop.send(());
        task.await.unwrap();
    }

    #[tokio::test]
    async fn concurrent_requests_get_their_own_answers() {
        let (addr, _, stop, task) = start().await;
        let client = RpcClient::default();
        let calls = (0..50u8).map(|i| {
            let client = client.clone();
            let addr = addr.clone();
            async move {
                let request = RemotingCommand::new_request(ECHO).with_body(vec![i; 10]);
                let answer = client.invoke(&addr, request, TEST_TIMEOUT).await.unwrap();
                assert_eq!(answer.body.as_ref(), &[i; 10]);
            }
        });
        futures_join_all(calls).await;
        client.shutdown().await;
        let _ = stop.send(());
        task.await.unwrap();
    }

    #[tokio::test]
    async fn unanswered_request_times_out_as_unknown_outcome() {
        let (addr, _, stop, task) = start().await;
        let client = RpcClient::default();
        let error = client
            .invoke(
                &addr,
                RemotingCommand::new_request(NEVER),
                Duration::from_millis(100),
            )
            .await
            .unwrap_err();
        assert!(
            matches!(
                error,
                RpcError::Timeout {
                    timeout_ms: 100,
                    ..
                }
            ),
            "{error}"
        );
        assert!(error.outcome_unknown());
        // The connection is still good.
        client
            .invoke(&addr, RemotingCommand::new_request(ECHO), TEST_TIMEOUT)
            .await
            .unwrap();
        client.shutdown().await;
        let _ = stop.send(());
        task.await.unwrap();
    }

    #[tokio::test]
    async fn connection_loss_fails_waiters_and_the_next_call_reconnects() {
        let (addr, handler, stop, task) = start().await;
        let client = RpcClient::default();
        let waiting = {
            let client = client.clone();
            let addr = addr.clone();
            tokio::spawn(async move {
                client
                    .invoke(&addr, RemotingCommand::new_request(NEVER), TEST_TIMEOUT)
                    .await
            })
        };
        let deadline = Instant::now() + TEST_TIMEOUT;
        while handler.handled.load(Ordering::SeqCst) == 0 {
            assert!(Instant::now() < deadline);
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        client.close_connection(&addr).await;
        let error = waiting.await.unwrap().unwrap_err();
        assert!(matches!(error, RpcError::ConnectionLost { .. }), "{error}");
        assert!(error.outcome_unknown());
        client
            .invoke(&addr, RemotingCommand::new_request(ECHO), TEST_TIMEOUT)
            .await
            .unwrap();
        client.shutdown().await;
        let _ = stop.send(());
        task.await.unwrap();
    }

    #[tokio::test]
    async fn server_shutdown_fails_waiters_promptly() {
        let (addr, _, stop, task) = start().await;
        let client = RpcClient::default();
        client
            .invoke(&addr, RemotingCommand::new_request(ECHO), TEST_TIMEOUT)
            .await
            .unwrap();
        let waiting = {
            let client = client.clone();
            let addr = addr.clone();
            tokio::spawn(async move {
                client
                    .invoke(&addr, RemotingCommand::new_request(NEVER), TEST_TIMEOUT)
                    .await
            })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        let _ = stop.send(());
        task.await.unwrap();
        let started = Instant::now();
        let error = waiting.await.unwrap().unwrap_err();
        assert!(matches!(error, RpcError::ConnectionLost { .. }), "{error}");
        assert!(started.elapsed() < TEST_TIMEOUT);
        client.shutdown().await;
    }

    #[tokio::test]
    async fn unreachable_or_unencodable_requests_are_not_sent() {
        let client = RpcClient::default();
        // A port nobody listens on.
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        drop(listener);
        let error = client
            .invoke(&addr, RemotingCommand::new_request(ECHO), TEST_TIMEOUT)
            .await
            .unwrap_err();
        assert!(
            matches!(
                error,
                RpcError::NotSent {
                    reason: NotSentReason::Connect(_),
                    ..
                }
            ),
            "{error}"
        );
        assert!(!error.outcome_unknown());

        let too_big = RemotingCommand::new_request(ECHO)
            .with_body(vec![0; raftmq_protocol::frame::MAX_FRAME_BYTES]);
        let error = client
            .invoke(&addr, too_big, TEST_TIMEOUT)
            .await
            .unwrap_err();
        assert!(
            matches!(
                error,
                RpcError::NotSent {
                    reason: NotSentReason::Encode(_),
                    ..
                }
            ),
            "{error}"
        );

        client.shutdown().await;
        let error = client
            .invoke(&addr, RemotingCommand::new_request(ECHO), TEST_TIMEOUT)
            .await
            .unwrap_err();
        assert!(
            matches!(
                error,
                RpcError::NotSent {
                    reason: NotSentReason::Shutdown,
                    ..
                }
            ),
            "{error}"
        );
    }

    #[tokio::test]
    async fn oneway_requests_are_delivered() {
        let (addr, handler, stop, task) = start().await;
        let client = RpcClient::default();
        client
            .invoke_oneway(&addr, RemotingCommand::new_request(ECHO), TEST_TIMEOUT)
            .await
            .unwrap();
        let deadline = Instant::now() + TEST_TIMEOUT;
        while handler.handled.load(Ordering::SeqCst) == 0 {
            assert!(Instant::now() < deadline, "oneway request never handled");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        client.shutdown().await;
        let _ = stop.send(());
        task.await.unwrap();
    }

    #[tokio::test]
    async fn server_requests_reach_the_inbound_handler() {
        struct Inbound(std::sync::Mutex<Vec<i32>>);
        impl InboundRequestHandler for Inbound {
            fn on_request(&self, _addr: &str, request: RemotingCommand) -> Option<RemotingCommand> {
                self.0.lock().unwrap().push(request.code);
                Some(request.new_response(response::SUCCESS, None))
            }
        }
        let (addr, _, stop, task) = start().await;
        let inbound = Arc::new(Inbound(std::sync::Mutex::new(Vec::new())));
        let client = RpcClient::with_inbound_handler(RpcClientConfig::default(), inbound.clone());
        client
            .invoke(&addr, RemotingCommand::new_request(PUSH), TEST_TIMEOUT)
            .await
            .unwrap();
        // The pushed request is written before the answer, so it has been handled by now.
        assert_eq!(
            *inbound.0.lock().unwrap(),
            vec![request::CHECK_TRANSACTION_STATE]
        );
        client.shutdown().await;
        let _ = stop.send(());
        task.await.unwrap();
    }

    async fn futures_join_all<F: std::future::Future<Output = ()> + Send + 'static>(
        futures: impl Iterator<Item = F>,
    ) {
        let tasks: Vec<_> = futures.map(tokio::spawn).collect();
        for task in tasks {
            tokio::time::timeout(TEST_TIMEOUT, task)
                .await
                .expect("in time")
                .unwrap();
        }
    }
}
