//! A generic remoting server: accepts connections, reads frames, hands each request to a
//! [`RequestHandler`] and writes the answers back.
//!
//! Per connection there is one reader (this task), one writer task fed by a bounded channel,
//! and one task per request: requests on a connection are handled concurrently, because
//! RocketMQ clients pipeline and a long-polling pull may wait 15 s while later requests on the
//! same connection proceed. Answers are written as they finish; the client matches them by
//! `opaque`. At most [`MAX_IN_FLIGHT_PER_CONNECTION`] requests run per connection: beyond
//! that the reader stops reading, which pushes back on the client through TCP.
//!
//! TLS is decided per connection by [`ServerConfig::tls`] (RocketMQ's `tls.server.mode`:
//! disabled, permissive, enforcing), on the connection's own task so that a slow handshake
//! delays no other client; the frames above it are the same either way.
//!
//! A malformed or oversized frame closes that connection (logged with the reason); the server
//! keeps serving the others. On shutdown the server stops accepting and reading, tells
//! handlers through [`ConnectionInfo::closing`] (long polls return early), writes the answers
//! of the requests in hand, and returns once every task it started has finished.

use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use raftmq_protocol::code::response;
use raftmq_protocol::frame::FLAG_RESPONSE;
use raftmq_protocol::{RemotingCommand, WireError};
use raftmq_tls::{MaybeTlsStream, TlsAcceptor};
use tokio::io::{ReadHalf, WriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

use crate::connection::{ConnectionError, EncodedFrame, FrameReader, FrameWriter, WRITE_TIMEOUT};

/// Connections served at once; further clients wait in the listen backlog.
pub const MAX_CONNECTIONS: usize = 1024;

/// Requests of one connection being handled at once.
pub const MAX_IN_FLIGHT_PER_CONNECTION: usize = 256;

/// Encoded answers waiting for a connection's writer.
pub const WRITE_QUEUE_CAPACITY: usize = 256;

/// How long a closing connection waits for its requests in hand before dropping their answers.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

/// Pause after a failed `accept` (for example out of file descriptors) before the next one.
pub const ACCEPT_ERROR_BACKOFF: Duration = Duration::from_millis(100);

/// Limits of a [`Server`]; `Default` gives the named constants.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    pub max_connections: usize,
    pub max_in_flight_per_connection: usize,
    pub write_queue_capacity: usize,
    pub write_timeout: Duration,
    pub drain_timeout: Duration,
    /// Plaintext, TLS, or both on one port (sniffed per connection).
    pub tls: TlsAcceptor,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            max_connections: MAX_CONNECTIONS,
            max_in_flight_per_connection: MAX_IN_FLIGHT_PER_CONNECTION,
            write_queue_capacity: WRITE_QUEUE_CAPACITY,
            write_timeout: WRITE_TIMEOUT,
            drain_timeout: DRAIN_TIMEOUT,
            tls: TlsAcceptor::plaintext(),
        }
    }
}

/// Identifies one accepted connection for the life of the server.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnectionId(pub u64);

impl fmt::Display for ConnectionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}", self.0)
    }
}

/// What a handler knows about the connection a request came on.
#[derive(Clone)]
pub struct ConnectionInfo {
    pub id: ConnectionId,
    pub peer: SocketAddr,
    pub local: SocketAddr,
    handle: ConnectionHandle,
    closing: CancellationToken,
}

impl fmt::Debug for ConnectionInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConnectionInfo")
            .field("id", &self.id)
            .field("peer", &self.peer)
            .field("local", &self.local)
            .finish()
    }
}

impl ConnectionInfo {
    /// A handle to push commands to this connection later (oneway notifications such as
    /// NOTIFY_CONSUMER_IDS_CHANGED).
    pub fn handle(&self) -> ConnectionHandle {
        self.handle.clone()
    }

    /// Completes when the connection or the server is closing: a handler that waits (a long
    /// poll) should answer now.
    pub async fn closing(&self) {
        self.closing.cancelled().await;
    }

    pub fn is_closing(&self) -> bool {
        self.closing.is_cancelled()
    }
}

/// Why a command could not be pushed to a connection.
#[derive(Debug, thiserror::Error)]
pub enum PushError {
    #[error("the connection is closed")]
    Closed,
    #[error("the connection's write queue is full")]
    Full,
    #[error("the command cannot be encoded: {0}")]
    Encode(#[from] WireError),
}

/// Sends commands to one server connection from anywhere.
#[derive(Clone)]
pub struct ConnectionHandle {
    id: ConnectionId,
    peer: SocketAddr,
    tx: mpsc::Sender<EncodedFrame>,
}

impl fmt::Debug for ConnectionHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConnectionHandle")
            .field("id", &self.id)
            .field("peer", &self.peer)
            .finish()
    }
}

impl ConnectionHandle {
    pub fn id(&self) -> ConnectionId {
        self.id
    }

    pub fn peer(&self) -> SocketAddr {
        self.peer
    }

    /// Queues `command`, waiting while the write queue is full.
    pub async fn send(&self, command: &RemotingCommand) -> Result<(), PushError> {
        let frame = EncodedFrame::encode(command)?;
        self.tx.send(frame).await.map_err(|_| PushError::Closed)
    }

    /// Queues `command` unless the write queue is full.
    pub fn try_send(&self, command: &RemotingCommand) -> Result<(), PushError> {
        let frame = EncodedFrame::encode(command)?;
        self.tx.try_send(frame).map_err(|error| match error {
            mpsc::error::TrySendError::Full(_) => PushError::Full,
            mpsc::error::TrySendError::Closed(_) => PushError::Closed,
        })
    }

    pub fn is_closed(&self) -> bool {
        self.tx.is_closed()
    }
}

/// What the server calls for each request.
pub trait RequestHandler: Send + Sync + 'static {
    /// Handles one request. Return the response (its opaque and response flag are set by the
    /// server), or `None` to send nothing (oneway requests get nothing either way).
    fn handle(
        &self,
        connection: ConnectionInfo,
        request: RemotingCommand,
    ) -> impl Future<Output = Option<RemotingCommand>> + Send;

    /// Called once when a connection stops reading (peer closed, bad frame, or shutdown),
    /// before its requests in hand have finished.
    fn connection_closed(&self, connection: ConnectionInfo) -> impl Future<Output = ()> + Send {
        let _ = connection;
        async {}
    }
}

/// Counters of a running server.
#[derive(Debug, Default)]
pub struct ServerStats {
    connections_accepted: AtomicU64,
    connections_open: AtomicU64,
    connections_closed_malformed: AtomicU64,
    connections_refused_tls: AtomicU64,
    requests: AtomicU64,
}

/// A copy of [`ServerStats`] at one moment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ServerStatsSnapshot {
    pub connections_accepted: u64,
    pub connections_open: u64,
    /// Connections closed because the peer sent a malformed or oversized frame.
    pub connections_closed_malformed: u64,
    /// Connections closed before serving: plaintext on a TLS-only port, a failed or timed-out
    /// TLS handshake.
    pub connections_refused_tls: u64,
    pub requests: u64,
}

impl ServerStats {
    pub fn snapshot(&self) -> ServerStatsSnapshot {
        ServerStatsSnapshot {
            connections_accepted: self.connections_accepted.load(Ordering::Relaxed),
            connections_open: self.connections_open.load(Ordering::Relaxed),
            connections_closed_malformed: self.connections_closed_malformed.load(Ordering::Relaxed),
            connections_refused_tls: self.connections_refused_tls.load(Ordering::Relaxed),
            requests: self.requests.load(Ordering::Relaxed),
        }
    }
}

struct Shared<H> {
    handler: Arc<H>,
    config: ServerConfig,
    stats: Arc<ServerStats>,
    tracker: TaskTracker,
    next_connection_id: AtomicU64,
}

/// A remoting server on one listener.
pub struct Server<H> {
    listener: TcpListener,
    shared: Arc<Shared<H>>,
}

impl<H: RequestHandler> Server<H> {
    pub fn new(listener: TcpListener, handler: Arc<H>, config: ServerConfig) -> Self {
        let config = ServerConfig {
            max_connections: config.max_connections.clamp(1, Semaphore::MAX_PERMITS),
            max_in_flight_per_connection: config
                .max_in_flight_per_connection
                .clamp(1, u32::MAX as usize),
            write_queue_capacity: config.write_queue_capacity.max(1),
            ..config
        };
        Server {
            listener,
            shared: Arc::new(Shared {
                handler,
                config,
                stats: Arc::new(ServerStats::default()),
                tracker: TaskTracker::new(),
                next_connection_id: AtomicU64::new(1),
            }),
        }
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    pub fn stats(&self) -> Arc<ServerStats> {
        self.shared.stats.clone()
    }

    /// Serves until `shutdown` completes, then closes down (see the module docs) and returns
    /// once every connection and request task has finished.
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        let Server { listener, shared } = self;
        let server_closing = CancellationToken::new();
        let connection_slots = Arc::new(Semaphore::new(shared.config.max_connections));
        tokio::pin!(shutdown);
        loop {
            let permit = tokio::select! {
                _ = &mut shutdown => break,
                permit = connection_slots.clone().acquire_owned() => match permit {
                    Ok(permit) => permit,
                    Err(_) => break, // never closed
                },
            };
            let (stream, peer) = tokio::select! {
                _ = &mut shutdown => break,
                accepted = listener.accept() => match accepted {
                    Ok(accepted) => accepted,
                    Err(error) => {
                        warn!(%error, "accept failed; retrying");
                        tokio::select! {
                            _ = &mut shutdown => break,
                            _ = tokio::time::sleep(ACCEPT_ERROR_BACKOFF) => continue,
                        }
                    }
                },
            };
            shared
                .stats
                .connections_accepted
                .fetch_add(1, Ordering::Relaxed);
            let closing = server_closing.child_token();
            shared.tracker.spawn(serve_connection(
                shared.clone(),
                stream,
                peer,
                closing,
                permit,
            ));
        }
        drop(listener);
        info!("remoting server stopping: finishing requests in hand");
        server_closing.cancel();
        shared.tracker.close();
        shared.tracker.wait().await;
        info!("remoting server stopped");
    }
}

/// Why a connection stopped reading.
enum ReadEnd {
    PeerClosed,
    Closing,
    WriterFailed,
    Failed(ConnectionError),
}

async fn serve_connection<H: RequestHandler>(
    shared: Arc<Shared<H>>,
    stream: TcpStream,
    peer: SocketAddr,
    closing: CancellationToken,
    _slot: OwnedSemaphorePermit,
) {
    let id = ConnectionId(shared.next_connection_id.fetch_add(1, Ordering::Relaxed));
    let local = stream
        .local_addr()
        .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
    if let Err(error) = stream.set_nodelay(true) {
        debug!(connection = %id, %error, "could not set TCP_NODELAY");
    }
    let stream = match shared.config.tls.accept(stream).await {
        Ok(stream) => stream,
        Err(error) => {
            shared
                .stats
                .connections_refused_tls
                .fetch_add(1, Ordering::Relaxed);
            warn!(connection = %id, %peer, %error, "connection refused");
            return;
        }
    };
    shared
        .stats
        .connections_open
        .fetch_add(1, Ordering::Relaxed);
    debug!(connection = %id, %peer, tls = stream.is_tls(), "connection accepted");

    let (read_half, write_half) = tokio::io::split(stream);
    let (tx, rx) = mpsc::channel(shared.config.write_queue_capacity);
    let abort = CancellationToken::new();
    let finish = CancellationToken::new();
    let writer = shared.tracker.spawn(write_loop(
        write_half,
        rx,
        shared.config.write_timeout,
        abort.clone(),
        finish.clone(),
        id,
    ));
    let info = ConnectionInfo {
        id,
        peer,
        local,
        handle: ConnectionHandle { id, peer, tx },
        closing: closing.clone(),
    };
    let in_flight = Arc::new(Semaphore::new(shared.config.max_in_flight_per_connection));

    match read_loop(&shared, &info, read_half, &in_flight, &abort).await {
        ReadEnd::PeerClosed => debug!(connection = %id, %peer, "peer closed the connection"),
        ReadEnd::Closing => debug!(connection = %id, %peer, "connection closing: server shutdown"),
        ReadEnd::WriterFailed => {
            debug!(connection = %id, %peer, "connection closing: write failed")
        }
        ReadEnd::Failed(error) => {
            if matches!(error, ConnectionError::Malformed(_)) {
                shared
                    .stats
                    .connections_closed_malformed
                    .fetch_add(1, Ordering::Relaxed);
            }
            warn!(connection = %id, %peer, %error, "closing connection");
            abort.cancel();
        }
    }
    // Requests in hand stop waiting (their peer is gone or the server is stopping).
    closing.cancel();
    shared.handler.connection_closed(info.clone()).await;

    let all = u32::try_from(shared.config.max_in_flight_per_connection).unwrap_or(u32::MAX);
    let drained =
        tokio::time::timeout(shared.config.drain_timeout, in_flight.acquire_many(all)).await;
    if drained.is_err() {
        warn!(connection = %id, %peer, "requests in hand did not finish in time; dropping their answers");
        abort.cancel();
    }
    finish.cancel();
    drop(info);
    if writer.await.is_err() {
        warn!(connection = %id, "connection writer panicked");
    }
    shared
        .stats
        .connections_open
        .fetch_sub(1, Ordering::Relaxed);
    debug!(connection = %id, %peer, "connection closed");
}

async fn read_loop<H: RequestHandler>(
    shared: &Arc<Shared<H>>,
    info: &ConnectionInfo,
    read_half: ReadHalf<MaybeTlsStream>,
    in_flight: &Arc<Semaphore>,
    abort: &CancellationToken,
) -> ReadEnd {
    let mut reader = FrameReader::new(read_half);
    loop {
        // read_frame is cancel-safe: bytes read stay in its buffer.
        let next = tokio::select! {
            _ = info.closing.cancelled() => return ReadEnd::Closing,
            _ = abort.cancelled() => return ReadEnd::WriterFailed,
            next = reader.read_frame() => next,
        };
        let request = match next {
            Ok(Some(request)) => request,
            Ok(None) => return ReadEnd::PeerClosed,
            Err(error) => return ReadEnd::Failed(error),
        };
        if request.is_response() {
            debug!(connection = %info.id, opaque = request.opaque, "ignoring a response on a server connection");
            continue;
        }
        let permit = tokio::select! {
            _ = info.closing.cancelled() => return ReadEnd::Closing,
            _ = abort.cancelled() => return ReadEnd::WriterFailed,
            permit = in_flight.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => return ReadEnd::Closing, // never closed
            },
        };
        shared.stats.requests.fetch_add(1, Ordering::Relaxed);
        let handler = shared.handler.clone();
        let connection = info.clone();
        shared.tracker.spawn(async move {
            let oneway = request.is_oneway();
            let opaque = request.opaque;
            let template = request.new_response(response::SYSTEM_ERROR, None);
            let answer = handler.handle(connection.clone(), request).await;
            if let (Some(mut answer), false) = (answer, oneway) {
                answer.opaque = opaque;
                answer.flag |= FLAG_RESPONSE;
                let frame = EncodedFrame::encode(&answer).or_else(|error| {
                    warn!(connection = %connection.id, code = answer.code, %error, "response cannot be encoded");
                    EncodedFrame::encode(&template.with_remark(format!("response cannot be encoded: {error}")))
                });
                if let Ok(frame) = frame {
                    // Fails only when the connection is already gone.
                    let _ = connection.handle.tx.send(frame).await;
                }
            }
            drop(permit);
        });
    }
}

async fn write_loop(
    write_half: WriteHalf<MaybeTlsStream>,
    mut rx: mpsc::Receiver<EncodedFrame>,
    write_timeout: Duration,
    abort: CancellationToken,
    finish: CancellationToken,
    id: ConnectionId,
) {
    let mut writer = FrameWriter::new(write_half, write_timeout);
    let result: Result<(), ConnectionError> = async {
        loop {
            let frame = tokio::select! {
                biased;
                _ = abort.cancelled() => return Ok(()),
                frame = rx.recv() => match frame {
                    Some(frame) => frame,
                    None => break,
                },
                _ = finish.cancelled() => break,
            };
            writer.write_encoded(&frame).await?;
            // Coalesce whatever else is ready into the same flush.
            while let Ok(frame) = rx.try_recv() {
                writer.write_encoded(&frame).await?;
            }
            writer.flush().await?;
        }
        while let Ok(frame) = rx.try_recv() {
            writer.write_encoded(&frame).await?;
        }
        writer.shutdown().await
    }
    .await;
    if let Err(error) = result {
        debug!(connection = %id, %error, "connection write failed");
        abort.cancel();
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::sync::Mutex;

    use raftmq_protocol::frame;
    use tokio::io::AsyncWriteExt;
    use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
    use tokio::sync::Notify;

    use super::*;

    const SLOW: i32 = 1;
    const FAST: i32 = 2;
    const TEST_TIMEOUT: Duration = Duration::from_secs(10);

    #[derive(Default)]
    struct TestHandler {
        release_slow: Notify,
        running: AtomicU64,
        max_running: AtomicU64,
        closed: Mutex<BTreeSet<u64>>,
        closed_notify: Notify,
    }

    impl RequestHandler for TestHandler {
        async fn handle(
            &self,
            connection: ConnectionInfo,
            request: RemotingCommand,
        ) -> Option<RemotingCommand> {
            let now = self.running.fetch_add(1, Ordering::SeqCst) + 1;
            self.max_running.fetch_max(now, Ordering::SeqCst);
            if request.code == SLOW {
                tokio::select! {
                    _ = self.release_slow.notified() => {}
                    _ = connection.closing() => {}
                }
            }
            self.running.fetch_sub(1, Ordering::SeqCst);
            Some(request.new_response(response::SUCCESS, Some(format!("done {}", request.code))))
        }

        async fn connection_closed(&self, connection: ConnectionInfo) {
            self.closed.lock().unwrap().insert(connection.id.0);
            self.closed_notify.notify_waiters();
        }
    }

    struct Running {
        addr: SocketAddr,
        handler: Arc<TestHandler>,
        stats: Arc<ServerStats>,
        stop: tokio::sync::oneshot::Sender<()>,
        task: tokio::task::JoinHandle<()>,
    }

    async fn start(config: ServerConfig) -> Running {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let handler = Arc::new(TestHandler::default());
        let server = Server::new(listener, handler.clone(), config);
        let addr = server.local_addr().unwrap();
        let stats = server.stats();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(server.run(async {
            let _ = stopped.await;
        }));
        Running {
            addr,
            handler,
            stats,
            stop,
            task,
        }
    }

    struct Client {
        reader: FrameReader<OwnedReadHalf>,
        writer: FrameWriter<OwnedWriteHalf>,
    }

    impl Client {
        async fn connect(addr: SocketAddr) -> Client {
            let (read, write) = TcpStream::connect(addr).await.unwrap().into_split();
            Client {
                reader: FrameReader::new(read),
                writer: FrameWriter::new(write, WRITE_TIMEOUT),
            }
        }

        async fn send(&mut self, code: i32, opaque: i32) {
            let mut request = RemotingCommand::new_request(code);
            request.opaque = opaque;
            self.writer.write_frame(&request).await.unwrap();
            self.writer.flush().await.unwrap();
        }

        async fn recv(&mut self) -> Option<RemotingCommand> {
            tokio::time::timeout(TEST_TIMEOUT, self.reader.read_frame())
                .await
                .expect("answer in time")
                .unwrap_or(None)
        }
    }

    #[tokio::test]
    async fn requests_on_one_connection_run_concurrently() {
        let server = start(ServerConfig::default()).await;
        let mut client = Client::connect(server.addr).await;
        client.send(SLOW, 1).await;
        client.send(FAST, 2).await;
        // The fast request overtakes the slow one on the same connection.
        let first = client.recv().await.unwrap();
        assert_eq!((first.opaque, first.remark.as_deref()), (2, Some("done 2")));
        assert!(first.is_response());
        server.handler.release_slow.notify_one();
        let second = client.recv().await.unwrap();
        assert_eq!(second.opaque, 1);
        let _ = server.stop.send(());
        server.task.await.unwrap();
    }

    #[tokio::test]
    async fn in_flight_requests_per_connection_are_bounded() {
        let server = start(ServerConfig {
            max_in_flight_per_connection: 2,
            ..ServerConfig::default()
        })
        .await;
        let mut client = Client::connect(server.addr).await;
        for opaque in 0..3 {
            client.send(SLOW, opaque).await;
        }
        let deadline = tokio::time::Instant::now() + TEST_TIMEOUT;
        while server.handler.running.load(Ordering::SeqCst) < 2 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "requests never started"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        // Give the third request a chance to (wrongly) start before checking.
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(server.handler.max_running.load(Ordering::SeqCst), 2);
        for _ in 0..3 {
            server.handler.release_slow.notify_one();
            client.recv().await.unwrap();
        }
        assert_eq!(server.handler.max_running.load(Ordering::SeqCst), 2);
        let _ = server.stop.send(());
        server.task.await.unwrap();
    }

    #[tokio::test]
    async fn oneway_requests_get_no_answer() {
        let server = start(ServerConfig::default()).await;
        let mut client = Client::connect(server.addr).await;
        let mut oneway = RemotingCommand::new_request(FAST).into_oneway();
        oneway.opaque = 9;
        client.writer.write_frame(&oneway).await.unwrap();
        client.send(FAST, 10).await;
        let answer = client.recv().await.unwrap();
        assert_eq!(answer.opaque, 10);
        assert_eq!(server.stats.snapshot().requests, 2);
        let _ = server.stop.send(());
        server.task.await.unwrap();
    }

    #[tokio::test]
    async fn malformed_frame_closes_only_its_connection() {
        let server = start(ServerConfig::default()).await;
        let mut good = Client::connect(server.addr).await;
        good.send(FAST, 1).await;
        good.recv().await.unwrap();

        for garbage in [
            ((frame::MAX_FRAME_BYTES + 1) as i32).to_be_bytes().to_vec(),
            [0, 0, 0, 8, 9, 0, 0, 0, b'{', b'}', 0, 0].to_vec(),
            [0, 0, 0, 6, 0, 0, 0, 2, b'{', b'x'].to_vec(),
        ] {
            let mut raw = TcpStream::connect(server.addr).await.unwrap();
            raw.write_all(&garbage).await.unwrap();
            let mut reader = FrameReader::new(raw);
            // The server closes: end of stream, or a reset.
            let closed = tokio::time::timeout(TEST_TIMEOUT, reader.read_frame())
                .await
                .expect("closed in time");
            assert!(matches!(closed, Ok(None) | Err(_)));
        }
        let deadline = tokio::time::Instant::now() + TEST_TIMEOUT;
        while server.stats.snapshot().connections_closed_malformed < 3 {
            assert!(tokio::time::Instant::now() < deadline);
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        // The first connection still works.
        good.send(FAST, 2).await;
        assert_eq!(good.recv().await.unwrap().opaque, 2);
        let _ = server.stop.send(());
        server.task.await.unwrap();
    }

    #[tokio::test]
    async fn closed_connections_are_reported() {
        let server = start(ServerConfig::default()).await;
        let mut client = Client::connect(server.addr).await;
        client.send(FAST, 1).await;
        client.recv().await.unwrap();
        let closed = server.handler.closed_notify.notified();
        tokio::pin!(closed);
        closed.as_mut().enable();
        drop(client);
        tokio::time::timeout(TEST_TIMEOUT, closed)
            .await
            .expect("close reported");
        assert_eq!(server.handler.closed.lock().unwrap().len(), 1);
        let _ = server.stop.send(());
        server.task.await.unwrap();
    }

    #[tokio::test]
    async fn shutdown_answers_requests_in_hand_then_returns() {
        let server = start(ServerConfig::default()).await;
        let mut client = Client::connect(server.addr).await;
        client.send(SLOW, 5).await;
        let deadline = tokio::time::Instant::now() + TEST_TIMEOUT;
        while server.handler.running.load(Ordering::SeqCst) == 0 {
            assert!(tokio::time::Instant::now() < deadline);
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let _ = server.stop.send(());
        // The slow handler sees `closing` and answers; the answer arrives before the close.
        let answer = client.recv().await.unwrap();
        assert_eq!(answer.opaque, 5);
        assert!(client.recv().await.is_none());
        tokio::time::timeout(TEST_TIMEOUT, server.task)
            .await
            .expect("server stopped in time")
            .unwrap();
        assert!(TcpStream::connect(server.addr).await.is_err());
    }

    #[tokio::test]
    async fn pushed_commands_reach_the_connection() {
        struct Pusher;
        impl RequestHandler for Pusher {
            async fn handle(
                &self,
                connection: ConnectionInfo,
                request: RemotingCommand,
            ) -> Option<RemotingCommand> {
                let mut notify = RemotingCommand::new_request(40).into_oneway();
                notify.opaque = 77;
                connection.handle().send(&notify).await.unwrap();
                Some(request.new_response(response::SUCCESS, None))
            }
        }
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let server = Server::new(listener, Arc::new(Pusher), ServerConfig::default());
        let addr = server.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(server.run(async {
            let _ = stopped.await;
        }));
        let mut client = Client::connect(addr).await;
        client.send(FAST, 1).await;
        let pushed = client.recv().await.unwrap();
        assert_eq!(
            (pushed.code, pushed.opaque, pushed.is_oneway()),
            (40, 77, true)
        );
        assert_eq!(client.recv().await.unwrap().opaque, 1);
        let _ = stop.send(());
        task.await.unwrap();
    }
}
