//! The client side: openraft asks the [`NetworkFactory`] for a [`PeerClient`] per target (one
//! long-lived client per replication stream, a fresh one per election round). Each client
//! connects lazily, keeps its connection while requests succeed, and drops it on any error or
//! cancellation (a half-finished exchange leaves the stream in an unknown state).
//!
//! Connection failures back off exponentially per target, from [`BACKOFF_MIN`] to
//! [`BACKOFF_MAX`], shared by every client of that target, so a dead peer costs one connection
//! attempt per backoff period, not one per RPC.

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
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_util::codec::{Framed, LengthDelimitedCodec};

use super::{
    APPEND_TIMEOUT, BACKOFF_MAX, BACKOFF_MIN, CONNECT_TIMEOUT, MAX_APPEND_RPC_BYTES,
    MAX_FRAME_BYTES, NetworkError, RpcRequest, RpcResponse, frame_codec,
};
use crate::codec;
use crate::types::{
    Entry, EntryPayload, LogId, Node, NodeId, Snapshot, SnapshotData, TypeConfig, Vote,
};

type Connection = Framed<TcpStream, LengthDelimitedCodec>;

/// The delay before the attempt that follows `failures` consecutive failures.
fn backoff_delay(failures: u32) -> Duration {
    let factor = 1u32.checked_shl(failures.min(16)).unwrap_or(u32::MAX);
    BACKOFF_MIN.saturating_mul(factor).min(BACKOFF_MAX)
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
    #[cfg(feature = "fault-injection")]
    partition: super::Partition,
}

impl NetworkFactory {
    pub fn new() -> Self {
        NetworkFactory::default()
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
            #[cfg(feature = "fault-injection")]
            partition: self.partition.clone(),
        }
    }
}

/// A client of one target member.
pub struct PeerClient {
    target: NodeId,
    addr: String,
    connection: Option<Connection>,
    health: Arc<Mutex<PeerHealth>>,
    #[cfg(feature = "fault-injection")]
    partition: super::Partition,
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
        let attempt = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(&self.addr)).await;
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
    async fn exchange(
        &mut self,
        request: Bytes,
        timeout: Duration,
    ) -> Result<RpcResponse, NetworkError> {
        match tokio::time::timeout(timeout, self.exchange_unbounded(request)).await {
            Ok(result) => result,
            Err(_) => Err(NetworkError::Timeout {
                target: self.target,
                timeout,
            }),
        }
    }

    /// Sends one encoded request and reads its response. The connection is taken out for the
    /// exchange and put back only when it completed, so a cancelled or failed exchange never
    /// leaves a half-read stream behind for the next request.
    async fn exchange_unbounded(&mut self, request: Bytes) -> Result<RpcResponse, NetworkError> {
        let mut connection = match self.connection.take() {
            Some(connection) => connection,
            None => self.connect().await?,
        };
        let io = |source| NetworkError::Io {
            target: self.target,
            source,
        };
        connection.send(request).await.map_err(io)?;
        let frame = match connection.next().await {
            Some(frame) => frame.map_err(io)?,
            None => {
                return Err(NetworkError::Closed {
                    target: self.target,
                });
            }
        };
        let response: RpcResponse =
            codec::decode(&frame).map_err(|source| NetworkError::Codec {
                target: self.target,
                source,
            })?;
        if let RpcResponse::BadRequest(reason) = &response {
            return Err(NetworkError::UnexpectedAnswer {
                target: self.target,
                answer: format!("bad request: {reason}"),
            });
        }
        self.connection = Some(connection);
        Ok(response)
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

    /// Sends the whole snapshot in one frame (ours are the state machine's small state; the log,
    /// which holds the messages, is never part of a snapshot while nothing is purged).
    async fn full_snapshot(
        &mut self,
        vote: Vote,
        snapshot: Snapshot,
        cancel: impl Future<Output = ReplicationClosed> + OptionalSend + 'static,
        option: RPCOption,
    ) -> Result<SnapshotResponse<TypeConfig>, StreamingError<TypeConfig>> {
        let request = RpcRequest::FullSnapshot {
            vote,
            meta: snapshot.meta,
            data: snapshot.snapshot,
        };
        let request = match self.encode(&request) {
            Ok(request) => request,
            Err(error) => {
                tracing::error!(%error, target = self.target, "cannot send snapshot");
                return Err(StreamingError::Unreachable(Unreachable::new(&error)));
            }
        };
        let answer = tokio::select! {
            closed = cancel => return Err(StreamingError::Closed(closed)),
            answer = self.exchange(request, option.hard_ttl()) => answer,
        };
        match answer {
            Ok(RpcResponse::FullSnapshot(response)) => Ok(response),
            Ok(RpcResponse::Stopped(reason)) => Err(StreamingError::Unreachable(
                Unreachable::from_string(format!("peer {}: raft stopped: {reason}", self.target)),
            )),
            Ok(other) => Err(StreamingError::Network(OpenraftNetworkError::new(
                &self.unexpected(&other),
            ))),
            Err(error @ NetworkError::Unreachable { .. }) => {
                Err(StreamingError::Unreachable(Unreachable::new(&error)))
            }
            Err(error) => Err(StreamingError::Network(OpenraftNetworkError::new(&error))),
        }
    }

    /// How long openraft's replication waits after an `Unreachable`: the same capped
    /// exponential schedule as the connection backoff.
    fn backoff(&self) -> Option<Backoff> {
        Some(Backoff::new((0u32..).map(backoff_delay)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        assert_eq!(backoff_delay(0), BACKOFF_MIN);
        assert_eq!(backoff_delay(1), BACKOFF_MIN * 2);
        assert_eq!(backoff_delay(3), BACKOFF_MIN * 8);
        assert_eq!(backoff_delay(10), BACKOFF_MAX);
        assert_eq!(backoff_delay(u32::MAX), BACKOFF_MAX);
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
