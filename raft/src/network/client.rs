//! The client side: openraft asks the [`NetworkFactory`] for a [`PeerClient`] per target (one
//! long-lived client per replication stream, a fresh one per election round). Each client
//! connects lazily, keeps its connection while requests succeed, and drops it on any error or
//! cancellation (a half-finished exchange leaves the stream in an unknown state).
//!
//! Connection failures back off per target by the shared [`BackoffPolicy::RAFT_RECONNECT`]
//! (doubling, capped, jittered), shared by every client of that target, so a dead peer costs
//! one connection attempt per backoff period, not one per RPC.

use std::collections::HashMap;
use std::future::Future;
use std::io::Cursor;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use openraft::error::{
    Fatal, InstallSnapshotError, NetworkError as OpenraftNetworkError, PayloadTooLarge, RPCError,
    RaftError, RemoteError, ReplicationClosed, StreamingError, Unreachable,
};
use openraft::network::{Backoff, RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    SnapshotResponse, VoteRequest, VoteResponse,
};
use openraft::{OptionalSend, Snapshot};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_util::codec::{Framed, LengthDelimitedCodec};

use raftmq_protocol::backoff::BackoffPolicy;

use super::{
    CONNECT_TIMEOUT, MAX_APPEND_RPC_BYTES, MAX_FRAME_BYTES, NetworkError, RpcRequest, RpcResponse,
    frame_codec,
};
use crate::codec;
use crate::types::{Node, NodeId, TypeConfig, Vote};

type Connection = Framed<TcpStream, LengthDelimitedCodec>;

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
}

impl NetworkFactory {
    pub fn new() -> Self {
        NetworkFactory::default()
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
        }
    }
}

/// A client of one target member.
pub struct PeerClient {
    target: NodeId,
    addr: String,
    connection: Option<Connection>,
    health: Arc<Mutex<PeerHealth>>,
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

    /// Sends one encoded request and reads its response. The connection is taken out for the
    /// exchange and put back only when it completed, so a cancelled or failed exchange never
    /// leaves a half-read stream behind for the next request.
    async fn exchange(&mut self, request: Bytes) -> Result<RpcResponse, NetworkError> {
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

    fn encode(&self, request: &RpcRequest) -> Result<Bytes, NetworkError> {
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
/// make it retry on its next tick.
fn to_rpc_error<E: std::error::Error>(error: NetworkError) -> RPCError<NodeId, Node, E> {
    match error {
        NetworkError::Unreachable { .. } => RPCError::Unreachable(Unreachable::new(&error)),
        _ => RPCError::Network(OpenraftNetworkError::new(&error)),
    }
}

fn remote<E: std::error::Error>(target: NodeId, error: E) -> RPCError<NodeId, Node, E> {
    RPCError::RemoteError(RemoteError::new(target, error))
}

/// How many of `sent` entries would fit in three quarters of [`MAX_APPEND_RPC_BYTES`] (room for
/// entries larger than the average), when they took `bytes`.
fn entries_hint(sent: usize, bytes: usize) -> u64 {
    let budget = MAX_APPEND_RPC_BYTES as u128 * 3 / 4;
    let fitting = sent as u128 * budget / (bytes.max(1) as u128);
    u64::try_from(fitting).unwrap_or(u64::MAX).max(1)
}

impl RaftNetwork<TypeConfig> for PeerClient {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, Node, RaftError<NodeId>>> {
        let sent = rpc.entries.len();
        let request = match self.encode(&RpcRequest::AppendEntries(rpc)) {
            Ok(request) if request.len() > MAX_APPEND_RPC_BYTES && sent > 1 => {
                return Err(RPCError::PayloadTooLarge(
                    PayloadTooLarge::new_entries_hint(entries_hint(sent, request.len())),
                ));
            }
            Ok(request) => request,
            Err(NetworkError::TooLarge { bytes, .. }) if sent > 1 => {
                return Err(RPCError::PayloadTooLarge(
                    PayloadTooLarge::new_entries_hint(entries_hint(sent, bytes)),
                ));
            }
            // A single entry over the cap can never be sent: report it as unreachable so that
            // openraft backs off instead of retrying at once, forever.
            Err(error @ NetworkError::TooLarge { .. }) => {
                tracing::error!(%error, target = self.target, "a log entry exceeds the frame cap");
                return Err(RPCError::Unreachable(Unreachable::new(&error)));
            }
            Err(error) => return Err(to_rpc_error(error)),
        };
        match self.exchange(request).await.map_err(to_rpc_error)? {
            RpcResponse::AppendEntries(Ok(response)) => Ok(response),
            RpcResponse::AppendEntries(Err(error)) => Err(remote(self.target, error)),
            other => Err(to_rpc_error(self.unexpected(&other))),
        }
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        _option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, Node, RaftError<NodeId>>> {
        let request = self.encode(&RpcRequest::Vote(rpc)).map_err(to_rpc_error)?;
        match self.exchange(request).await.map_err(to_rpc_error)? {
            RpcResponse::Vote(Ok(response)) => Ok(response),
            RpcResponse::Vote(Err(error)) => Err(remote(self.target, error)),
            other => Err(to_rpc_error(self.unexpected(&other))),
        }
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<NodeId>,
        RPCError<NodeId, Node, RaftError<NodeId, InstallSnapshotError>>,
    > {
        let request = self
            .encode(&RpcRequest::InstallSnapshot(rpc))
            .map_err(to_rpc_error)?;
        match self.exchange(request).await.map_err(to_rpc_error)? {
            RpcResponse::InstallSnapshot(Ok(response)) => Ok(response),
            RpcResponse::InstallSnapshot(Err(error)) => Err(remote(self.target, error)),
            other => Err(to_rpc_error(self.unexpected(&other))),
        }
    }

    /// Sends the whole snapshot in one frame (ours are the state machine's small state; the log,
    /// which holds the messages, is never part of a snapshot while nothing is purged).
    async fn full_snapshot(
        &mut self,
        vote: Vote,
        snapshot: Snapshot<TypeConfig>,
        cancel: impl Future<Output = ReplicationClosed> + OptionalSend + 'static,
        option: RPCOption,
    ) -> Result<SnapshotResponse<NodeId>, StreamingError<TypeConfig, Fatal<NodeId>>> {
        let data = Bytes::from(Cursor::into_inner(*snapshot.snapshot));
        let request = RpcRequest::FullSnapshot {
            vote,
            meta: snapshot.meta,
            data,
        };
        let request = match self.encode(&request) {
            Ok(request) => request,
            Err(error) => {
                tracing::error!(%error, target = self.target, "cannot send snapshot");
                return Err(StreamingError::Unreachable(Unreachable::new(&error)));
            }
        };
        let timeout = option.hard_ttl();
        let answer = tokio::select! {
            closed = cancel => return Err(StreamingError::Closed(closed)),
            answer = tokio::time::timeout(timeout, self.exchange(request)) => answer,
        };
        let response = match answer {
            Ok(Ok(response)) => response,
            Ok(Err(error @ NetworkError::Unreachable { .. })) => {
                return Err(StreamingError::Unreachable(Unreachable::new(&error)));
            }
            Ok(Err(error)) => {
                return Err(StreamingError::Network(OpenraftNetworkError::new(&error)));
            }
            Err(_) => {
                let error = NetworkError::Timeout {
                    target: self.target,
                    timeout,
                };
                return Err(StreamingError::Network(OpenraftNetworkError::new(&error)));
            }
        };
        match response {
            RpcResponse::FullSnapshot(Ok(response)) => Ok(response),
            RpcResponse::FullSnapshot(Err(fatal)) => Err(StreamingError::RemoteError(
                RemoteError::new(self.target, fatal),
            )),
            other => Err(StreamingError::Network(OpenraftNetworkError::new(
                &self.unexpected(&other),
            ))),
        }
    }

    /// How long openraft's replication waits after an `Unreachable`: the same policy as the
    /// connection backoff.
    fn backoff(&self) -> Backoff {
        Backoff::new(BackoffPolicy::RAFT_RECONNECT.delays())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn the_entries_hint_fits_with_room_to_spare() {
        // 1000 entries encoded to twice the budget: three eighths of them fit.
        assert_eq!(entries_hint(1000, 2 * MAX_APPEND_RPC_BYTES), 375);
        assert_eq!(entries_hint(2, usize::MAX), 1);
        assert!(entries_hint(10, MAX_FRAME_BYTES + 1) >= 1);
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

        let error = first.exchange(ping.clone()).await.unwrap_err();
        assert!(
            matches!(error, NetworkError::Unreachable { ref reason, .. } if !reason.contains("backing off"))
        );
        // Any client of the same target now backs off without trying to connect.
        let error = second.exchange(ping.clone()).await.unwrap_err();
        assert!(
            matches!(error, NetworkError::Unreachable { ref reason, .. } if reason.contains("backing off"))
        );
        let health = factory.health_of(9);
        let health = health.lock().unwrap();
        assert_eq!(health.failures, 1);
        assert!(health.next_attempt.is_some());
    }
}
