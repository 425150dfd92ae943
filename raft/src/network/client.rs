//! The client side: openraft asks the [`NetworkFactory`] for a [`PeerClient`] per target (one
//! long-lived client per replication stream and per heartbeat stream, a fresh one per election
//! round). Each client connects lazily and keeps its connection while it works.
//!
//! Timeouts are the network's (openraft 0.10 sets none on appends, see
//! [`APPEND_TIMEOUT`]). When a caller gives up on a request whose frame
//! is already written (openraft times heartbeats out after one heartbeat interval), the
//! connection is kept: the server answers in order, so the next exchange first reads and drops
//! the answers nobody waits for. Reconnecting instead would cost a TCP handshake, whose lost SYN
//! waits a whole second on a lossy link. Errors and our own timeouts drop the connection.
//!
//! Connection failures back off per target by the shared [`BackoffPolicy::RAFT_RECONNECT`]
//! (doubling, capped, jittered), shared by every client of that target, so a dead peer costs
//! one connection attempt per backoff period, not one per RPC.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use openraft::OptionalSend;
use openraft::errors::{
    NetworkError as OpenraftNetworkError, RPCError, ReplicationClosed, StreamingError, Unreachable,
};
use openraft::network::{Backoff, RPCOption, RaftNetworkFactory, RaftNetworkV2};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, TransferLeaderRequest,
    TransferLeaderResponse, VoteRequest, VoteResponse,
};
use raftmq_tls::{MaybeTlsStream, TlsConnector};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_util::codec::{Framed, LengthDelimitedCodec};

use raftmq_protocol::backoff::BackoffPolicy;

use super::{
    APPEND_TIMEOUT, CONNECT_TIMEOUT, MAX_APPEND_RPC_BYTES, MAX_FRAME_BYTES,
    MAX_UNANSWERED_REQUESTS, NetworkError, RpcRequest, RpcResponse, SNAPSHOT_CHUNK_TIMEOUT,
    frame_codec,
};
use crate::codec;
use crate::log_store::LogReader;
use crate::snapshot::{ChunkSource, SnapshotChunk};
use crate::types::{
    Entry, EntryPayload, LogId, Node, NodeId, Snapshot, SnapshotData, TypeConfig, Vote,
};

type Connection = Framed<MaybeTlsStream, LengthDelimitedCodec>;

/// An open connection and the requests written on it whose answers have not been read yet.
struct Link {
    framed: Connection,
    unanswered: usize,
}

/// The delay before the attempt that follows `failures` consecutive failures.
fn backoff_delay(failures: u32) -> Duration {
    BackoffPolicy::RAFT_RECONNECT.delay_at(failures)
}

/// Connection health of one target, shared by all its clients.
#[derive(Debug, Default)]
struct PeerHealth {
    failures: u32,
    next_attempt: Option<Instant>,
}

/// Creates the clients openraft uses to reach each member.
#[derive(Clone, Debug, Default)]
pub struct NetworkFactory {
    health: Arc<Mutex<HashMap<NodeId, Arc<Mutex<PeerHealth>>>>>,
    /// Reads the log entries a snapshot carries when one is sent.
    log: Option<LogReader>,
    /// Plaintext, or mutual TLS with the peers.
    tls: TlsConnector,
    #[cfg(feature = "fault-injection")]
    partition: super::Partition,
}

impl NetworkFactory {
    pub fn new() -> Self {
        NetworkFactory::default()
    }

    /// A factory whose clients can send snapshots (their log part is read with `log`).
    pub fn with_log(log: LogReader) -> Self {
        NetworkFactory {
            log: Some(log),
            ..NetworkFactory::default()
        }
    }

    /// The same factory, dialing peers through `tls`.
    pub fn with_tls(self, tls: TlsConnector) -> Self {
        NetworkFactory { tls, ..self }
    }

    /// The test hook that cuts this member off from chosen peers.
    #[cfg(feature = "fault-injection")]
    pub fn partition(&self) -> super::Partition {
        self.partition.clone()
    }

    fn health_of(&self, target: NodeId) -> Arc<Mutex<PeerHealth>> {
        let mut all = self
            .health
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        Arc::clone(all.entry(target).or_default())
    }
}

impl RaftNetworkFactory<TypeConfig> for NetworkFactory {
    type Network = PeerClient;

    async fn new_client(&mut self, target: NodeId, node: &Node) -> PeerClient {
        PeerClient {
            target,
            addr: node.addr.clone(),
            connection: None,
            health: self.health_of(target),
            log: self.log.clone(),
            tls: self.tls.clone(),
            #[cfg(feature = "fault-injection")]
            partition: self.partition.clone(),
        }
    }
}

/// A client of one target member.
pub struct PeerClient {
    target: NodeId,
    addr: String,
    connection: Option<Link>,
    health: Arc<Mutex<PeerHealth>>,
    #[cfg(feature = "fault-injection")]
    partition: super::Partition,
    log: Option<LogReader>,
    tls: TlsConnector,
}

impl std::fmt::Debug for PeerClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeerClient")
            .field("target", &self.target)
            .field("addr", &self.addr)
            .field("connected", &self.connection.is_some())
            .finish()
    }
}

impl PeerClient {
    fn health(&self) -> std::sync::MutexGuard<'_, PeerHealth> {
        self.health
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    async fn connect(&self) -> Result<Connection, NetworkError> {
        let unreachable = |reason: String| NetworkError::Unreachable {
            target: self.target,
            addr: self.addr.clone(),
            reason,
        };
        if let Some(next_attempt) = self.health().next_attempt
            && Instant::now() < next_attempt
        {
            return Err(unreachable("backing off after failed connections".into()));
        }
        let deadline = Instant::now() + CONNECT_TIMEOUT;
        let attempt = tokio::time::timeout_at(deadline, TcpStream::connect(&self.addr)).await;
        let stream = match attempt {
            Ok(Ok(stream)) => stream,
            Ok(Err(e)) => return Err(self.connect_failed(unreachable(e.to_string()))),
            Err(_) => {
                return Err(self.connect_failed(unreachable(format!(
                    "connect timed out after {CONNECT_TIMEOUT:?}"
                ))));
            }
        };
        // Raft RPCs are small and latency bound: never wait to coalesce them.
        stream
            .set_nodelay(true)
            .map_err(|source| NetworkError::Io {
                target: self.target,
                source,
            })?;
        // A refused certificate counts as a failed connection: backing off spares the peer a
        // handshake per RPC.
        let stream = match tokio::time::timeout_at(deadline, self.tls.connect(&self.addr, stream))
            .await
        {
            Ok(Ok(stream)) => stream,
            Ok(Err(e)) => {
                return Err(self.connect_failed(unreachable(format!("TLS handshake failed: {e}"))));
            }
            Err(_) => {
                return Err(self.connect_failed(unreachable(format!(
                    "TLS handshake timed out after {CONNECT_TIMEOUT:?}"
                ))));
            }
        };
        *self.health() = PeerHealth::default();
        Ok(Framed::new(stream, frame_codec()))
    }

    fn connect_failed(&self, error: NetworkError) -> NetworkError {
        let mut health = self.health();
        health.next_attempt = Some(Instant::now() + backoff_delay(health.failures));
        health.failures = health.failures.saturating_add(1);
        tracing::debug!(%error, failures = health.failures, "raft peer connection failed");
        error
    }

    /// Sends one encoded request and reads its response, within `timeout` (connecting included).
    /// Our own timeout means the link is broken or the peer stuck: the connection is dropped.
    async fn exchange(
        &mut self,
        request: Bytes,
        timeout: Duration,
    ) -> Result<RpcResponse, NetworkError> {
        match tokio::time::timeout(timeout, self.exchange_unbounded(request)).await {
            Ok(result) => result,
            Err(_) => {
                self.connection = None;
                Err(NetworkError::Timeout {
                    target: self.target,
                    timeout,
                })
            }
        }
    }

    /// Sends one encoded request and reads its response. Cancel-safe: if the caller drops this
    /// future, the connection stays usable (a frame is either wholly queued or not at all, and
    /// a queued request is counted as unanswered). Any error drops the connection.
    async fn exchange_unbounded(&mut self, request: Bytes) -> Result<RpcResponse, NetworkError> {
        if self
            .connection
            .as_ref()
            .is_some_and(|link| link.unanswered >= MAX_UNANSWERED_REQUESTS)
        {
            // The peer has not answered a run of requests: do not queue behind them.
            self.connection = None;
        }
        if self.connection.is_none() {
            let framed = self.connect().await?;
            self.connection = Some(Link {
                framed,
                unanswered: 0,
            });
        }
        let target = self.target;
        let result = match self.connection.as_mut() {
            Some(link) => Self::exchange_on(link, target, request).await,
            None => Err(NetworkError::Closed { target }),
        };
        if result.is_err() {
            self.connection = None;
        }
        let response = result?;
        if let RpcResponse::BadRequest(reason) = &response {
            return Err(NetworkError::UnexpectedAnswer {
                target,
                answer: format!("bad request: {reason}"),
            });
        }
        Ok(response)
    }

    async fn exchange_on(
        link: &mut Link,
        target: NodeId,
        request: Bytes,
    ) -> Result<RpcResponse, NetworkError> {
        let io = |source| NetworkError::Io { target, source };
        // `feed` returns once the whole frame is in the write buffer, and not before: from here
        // on the server will answer this request.
        link.framed.feed(request).await.map_err(io)?;
        link.unanswered += 1;
        SinkExt::<Bytes>::flush(&mut link.framed)
            .await
            .map_err(io)?;
        loop {
            let frame = match link.framed.next().await {
                Some(frame) => frame.map_err(io)?,
                None => return Err(NetworkError::Closed { target }),
            };
            link.unanswered = link.unanswered.saturating_sub(1);
            if link.unanswered == 0 {
                return codec::decode(&frame)
                    .map_err(|source| NetworkError::Codec { target, source });
            }
            // The answer to an earlier request whose caller gave up: nobody waits for it.
        }
    }

    fn encode(&mut self, request: &RpcRequest) -> Result<Bytes, NetworkError> {
        #[cfg(feature = "fault-injection")]
        if !self.partition.allows(self.target, request) {
            // As if the link were down: the connection in hand is not used again.
            self.connection = None;
            return Err(NetworkError::Unreachable {
                target: self.target,
                addr: self.addr.clone(),
                reason: "cut off by a test partition".to_string(),
            });
        }
        let encoded = codec::encode(request).map_err(|source| NetworkError::Codec {
            target: self.target,
            source,
        })?;
        if encoded.len() > MAX_FRAME_BYTES {
            return Err(NetworkError::TooLarge {
                bytes: encoded.len(),
                max: MAX_FRAME_BYTES,
            });
        }
        Ok(Bytes::from(encoded))
    }

    fn unexpected(&self, response: &RpcResponse) -> NetworkError {
        NetworkError::UnexpectedAnswer {
            target: self.target,
            answer: format!("{response:?}"),
        }
    }
}

/// openraft's view of a transport failure: unreachable peers make it back off, other failures
/// make it retry soon.
fn to_rpc_error(error: NetworkError) -> RPCError<TypeConfig> {
    match error {
        NetworkError::Unreachable { .. } => RPCError::Unreachable(Unreachable::new(&error)),
        _ => RPCError::Network(OpenraftNetworkError::new(&error)),
    }
}

/// A rough upper bound of the bytes an entry takes on the wire beyond its payload (log id,
/// enum tags, length prefixes), used only to split append requests.
const ENTRY_WIRE_OVERHEAD_BYTES: usize = 64;

fn entry_wire_bytes(entry: &Entry) -> usize {
    let payload = match &entry.payload {
        EntryPayload::Normal(request) => request.0.len(),
        EntryPayload::Blank | EntryPayload::Membership(_) => 0,
    };
    ENTRY_WIRE_OVERHEAD_BYTES + payload
}

/// How many leading entries fit in [`MAX_APPEND_RPC_BYTES`]: at least one (a single entry is
/// sent whenever it fits in a frame).
fn entries_within_budget(entries: &[Entry]) -> usize {
    let mut bytes = 0usize;
    let fitting = entries
        .iter()
        .take_while(|entry| {
            bytes = bytes.saturating_add(entry_wire_bytes(entry));
            bytes <= MAX_APPEND_RPC_BYTES
        })
        .count();
    fitting.max(1)
}

impl PeerClient {
    /// Sends a request that openraft may time out itself, and maps the answer.
    async fn call<T>(
        &mut self,
        request: RpcRequest,
        timeout: Duration,
        answer: impl FnOnce(RpcResponse) -> Result<T, RpcResponse>,
    ) -> Result<T, RPCError<TypeConfig>> {
        let request = self.encode(&request).map_err(to_rpc_error)?;
        let response = self
            .exchange(request, timeout)
            .await
            .map_err(to_rpc_error)?;
        match answer(response) {
            Ok(value) => Ok(value),
            // The peer is up but its Raft stopped: nothing to retry soon.
            Err(RpcResponse::Stopped(reason)) => Err(RPCError::Unreachable(
                Unreachable::from_string(format!("peer {}: raft stopped: {reason}", self.target)),
            )),
            Err(other) => Err(to_rpc_error(self.unexpected(&other))),
        }
    }
}

impl RaftNetworkV2<TypeConfig> for PeerClient {
    type SnapshotData = SnapshotData;

    /// Sends the entries that fit in [`MAX_APPEND_RPC_BYTES`]; when some were left out, a success
    /// is reported to openraft as a partial success up to the last entry sent, and openraft sends
    /// the rest next.
    async fn append_entries(
        &mut self,
        mut rpc: AppendEntriesRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<AppendEntriesResponse<TypeConfig>, RPCError<TypeConfig>> {
        let fitting = entries_within_budget(&rpc.entries);
        let partial: Option<LogId> = if fitting < rpc.entries.len() {
            rpc.entries.truncate(fitting);
            rpc.entries.last().map(|entry| entry.log_id)
        } else {
            None
        };
        let request = match self.encode(&RpcRequest::AppendEntries(rpc)) {
            Ok(request) => request,
            // A single entry over the cap can never be sent: report it as unreachable so that
            // openraft backs off instead of retrying at once, forever.
            Err(error @ NetworkError::TooLarge { .. }) => {
                tracing::error!(%error, target = self.target, "a log entry exceeds the frame cap");
                return Err(RPCError::Unreachable(Unreachable::new(&error)));
            }
            Err(error) => return Err(to_rpc_error(error)),
        };
        let response = self
            .exchange(request, APPEND_TIMEOUT)
            .await
            .map_err(to_rpc_error)?;
        match response {
            RpcResponse::AppendEntries(AppendEntriesResponse::Success) if partial.is_some() => {
                Ok(AppendEntriesResponse::PartialSuccess(partial))
            }
            RpcResponse::AppendEntries(response) => Ok(response),
            RpcResponse::Stopped(reason) => Err(RPCError::Unreachable(Unreachable::from_string(
                format!("peer {}: raft stopped: {reason}", self.target),
            ))),
            other => Err(to_rpc_error(self.unexpected(&other))),
        }
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.call(
            RpcRequest::Vote(rpc),
            option.hard_ttl(),
            |answer| match answer {
                RpcResponse::Vote(response) => Ok(response),
                other => Err(other),
            },
        )
        .await
    }

    async fn pre_vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.call(
            RpcRequest::PreVote(rpc),
            option.hard_ttl(),
            |answer| match answer {
                RpcResponse::PreVote(response) => Ok(response),
                other => Err(other),
            },
        )
        .await
    }

    async fn transfer_leader(
        &mut self,
        rpc: TransferLeaderRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<TransferLeaderResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.call(
            RpcRequest::TransferLeader(rpc),
            option.hard_ttl(),
            |answer| match answer {
                RpcResponse::TransferLeader(response) => Ok(response),
                other => Err(other),
            },
        )
        .await
    }

    /// Sends a snapshot as a sequence of chunks ([`crate::snapshot`]): its meta, its state
    /// image a MiB at a time, then the log entries it carries, each chunk answered before the
    /// next goes, so memory stays bounded on both sides. The last chunk's answer is openraft's.
    async fn full_snapshot(
        &mut self,
        vote: Vote,
        snapshot: Snapshot,
        cancel: impl Future<Output = ReplicationClosed> + OptionalSend + 'static,
        _option: RPCOption,
    ) -> Result<SnapshotResponse<TypeConfig>, StreamingError<TypeConfig>> {
        let Some(log) = self.log.clone() else {
            return Err(StreamingError::Unreachable(Unreachable::from_string(
                "this node cannot send snapshots (no log reader)",
            )));
        };
        let transfer = rand::random::<u64>();
        let mut source = ChunkSource::new(transfer, snapshot.meta, snapshot.snapshot, log);
        let send = async {
            loop {
                let chunk = match source.next().await {
                    Ok(Some(chunk)) => chunk,
                    Ok(None) => {
                        return Err(StreamingError::Network(OpenraftNetworkError::new(
                            &std::io::Error::other("the snapshot ended without an answer"),
                        )));
                    }
                    Err(error) => {
                        tracing::warn!(%error, target = self.target, "cannot read the snapshot to send");
                        return Err(StreamingError::Unreachable(Unreachable::new(&error)));
                    }
                };
                let last = matches!(chunk, SnapshotChunk::End { .. });
                let request = RpcRequest::SnapshotChunk { vote, chunk };
                let request = self
                    .encode(&request)
                    .map_err(|error| StreamingError::Unreachable(Unreachable::new(&error)))?;
                let answer = self
                    .exchange(request, SNAPSHOT_CHUNK_TIMEOUT)
                    .await
                    .map_err(|error| StreamingError::Unreachable(Unreachable::new(&error)))?;
                match answer {
                    RpcResponse::SnapshotChunkTaken if !last => {}
                    RpcResponse::FullSnapshot(response) if last => return Ok(response),
                    RpcResponse::Stopped(reason) => {
                        return Err(StreamingError::Unreachable(Unreachable::from_string(
                            format!("peer {}: raft stopped: {reason}", self.target),
                        )));
                    }
                    RpcResponse::SnapshotChunkRefused(reason) => {
                        return Err(StreamingError::Network(OpenraftNetworkError::new(
                            &std::io::Error::other(format!(
                                "peer {} refused a snapshot chunk: {reason}",
                                self.target
                            )),
                        )));
                    }
                    other => {
                        return Err(StreamingError::Network(OpenraftNetworkError::new(
                            &self.unexpected(&other),
                        )));
                    }
                }
            }
        };
        tokio::select! {
            closed = cancel => Err(StreamingError::Closed(closed)),
            result = send => result,
        }
    }

    /// How long openraft's replication waits after an `Unreachable`: the same policy as the
    /// connection backoff.
    fn backoff(&self) -> Option<Backoff> {
        Some(Backoff::new(BackoffPolicy::RAFT_RECONNECT.delays()))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;
    use crate::network::TCP_MIN_RTO;
    use crate::types::log_id;

    /// A stand-in peer: answers Vote and AppendEntries, the first request only after `first_delay`
    /// (a slow or lossy link). Counts the connections it accepted.
    async fn fake_peer(
        first_delay: Duration,
    ) -> (String, Arc<AtomicUsize>, tokio::task::JoinHandle<()>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let accepted = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&accepted);
        let task = tokio::spawn(async move {
            let mut delay = Some(first_delay);
            while let Ok((stream, _)) = listener.accept().await {
                counter.fetch_add(1, Ordering::SeqCst);
                let mut framed = Framed::new(stream, frame_codec());
                while let Some(Ok(frame)) = framed.next().await {
                    if let Some(delay) = delay.take() {
                        tokio::time::sleep(delay).await;
                    }
                    let answer = match codec::decode::<RpcRequest>(&frame) {
                        Ok(RpcRequest::Vote(vote)) => {
                            RpcResponse::Vote(VoteResponse::new(vote.vote, None, true))
                        }
                        Ok(RpcRequest::AppendEntries(_)) => {
                            RpcResponse::AppendEntries(AppendEntriesResponse::Success)
                        }
                        other => RpcResponse::BadRequest(format!("{other:?}")),
                    };
                    let encoded = Bytes::from(codec::encode(&answer).unwrap());
                    if framed.send(encoded).await.is_err() {
                        break;
                    }
                }
            }
        });
        (addr, accepted, task)
    }

    #[tokio::test]
    async fn an_answer_nobody_waits_for_is_dropped_and_the_connection_kept() {
        let (addr, accepted, peer) = fake_peer(Duration::from_millis(300)).await;
        let mut client = NetworkFactory::new()
            .new_client(9, &Node { addr: addr.clone() })
            .await;
        let option = RPCOption::new(Duration::from_secs(5));
        let first = VoteRequest::new(Vote::new(1, 1), None);
        // openraft gives up on the first request (as on a heartbeat after one interval).
        let gave_up = tokio::time::timeout(
            Duration::from_millis(50),
            client.vote(first, option.clone()),
        )
        .await;
        assert!(gave_up.is_err(), "the first answer is late");

        // The next request gets its own answer, on the same connection.
        let second = VoteRequest::new(Vote::new(2, 1), None);
        let answer = client.vote(second, option).await.unwrap();
        assert_eq!(
            answer.vote,
            Vote::new(2, 1),
            "not the stale answer to term 1"
        );
        assert_eq!(accepted.load(Ordering::SeqCst), 1, "no reconnect");
        peer.abort();
    }

    #[tokio::test]
    async fn an_append_answered_after_tcp_retransmissions_succeeds() {
        // Two retransmissions of a lost segment: well above the 150 ms openraft passes as the
        // RPC option (the heartbeat interval), well within the network's own append timeout.
        let late = TCP_MIN_RTO * 3;
        assert!(late < APPEND_TIMEOUT);
        let (addr, _, peer) = fake_peer(late).await;
        let mut client = NetworkFactory::new().new_client(9, &Node { addr }).await;
        let rpc = AppendEntriesRequest {
            vote: Vote::new_committed(1, 1),
            prev_log_id: Some(log_id(1, 1, 5)),
            leader_commit: None,
            entries: Vec::new(),
        };
        let answer = client
            .append_entries(rpc, RPCOption::new(Duration::from_millis(150)))
            .await
            .unwrap();
        assert_eq!(answer, AppendEntriesResponse::Success);
        peer.abort();
    }

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let policy = BackoffPolicy::RAFT_RECONNECT;
        // Jittered within the upper half of each step (f32 steps: a microsecond of slack).
        let within = |wait: Duration, step: Duration| {
            wait + Duration::from_micros(1) >= step / 2 && wait <= step + Duration::from_micros(1)
        };
        assert!(within(backoff_delay(0), policy.first));
        assert!(within(backoff_delay(1), policy.first * 2));
        assert!(within(backoff_delay(3), policy.first * 8));
        assert!(within(backoff_delay(10), policy.max));
        assert!(within(backoff_delay(u32::MAX), policy.max));
    }

    #[test]
    fn append_requests_are_cut_at_the_byte_budget_but_always_carry_one_entry() {
        let entry = |index: u64, bytes: usize| Entry {
            log_id: crate::types::log_id(1, 1, index),
            payload: EntryPayload::Normal(crate::types::AppRequest(Bytes::from(vec![0u8; bytes]))),
        };
        let sixth = MAX_APPEND_RPC_BYTES / 6;
        let entries: Vec<Entry> = (0..9).map(|i| entry(i, sixth)).collect();
        // Five sixths plus overhead fit; the sixth entry would pass the budget.
        assert_eq!(entries_within_budget(&entries), 5);
        assert_eq!(entries_within_budget(&entries[..3]), 3);
        assert_eq!(
            entries_within_budget(&[entry(0, MAX_APPEND_RPC_BYTES * 2)]),
            1
        );
        assert_eq!(entries_within_budget(&[]), 1);
    }

    #[tokio::test]
    async fn a_dead_peer_costs_one_connection_attempt_per_backoff_period() {
        // Bind then drop a listener: its port refuses connections.
        let addr = {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            listener.local_addr().unwrap().to_string()
        };
        let mut factory = NetworkFactory::new();
        let node = Node { addr: addr.clone() };
        let mut first = factory.new_client(9, &node).await;
        let mut second = factory.new_client(9, &node).await;
        let ping = Bytes::from_static(b"ping");

        let error = first
            .exchange(ping.clone(), APPEND_TIMEOUT)
            .await
            .unwrap_err();
        assert!(
            matches!(error, NetworkError::Unreachable { ref reason, .. } if !reason.contains("backing off"))
        );
        // Any client of the same target now backs off without trying to connect.
        let error = second
            .exchange(ping.clone(), APPEND_TIMEOUT)
            .await
            .unwrap_err();
        assert!(
            matches!(error, NetworkError::Unreachable { ref reason, .. } if reason.contains("backing off"))
        );
        let health = factory.health_of(9);
        let health = health.lock().unwrap();
        assert_eq!(health.failures, 1);
        assert!(health.next_attempt.is_some());
    }
}
