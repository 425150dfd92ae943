//! The server side: an accept loop bounded by a semaphore of [`MAX_CONNECTIONS`] permits, and a
//! task per connection that reads one request frame at a time, hands it to the local `Raft`, and
//! writes the answer. Every task is tracked; on shutdown the accept loop stops, each connection
//! finishes the request in hand, and [`RaftServer::shutdown`] waits for all of them.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::codec::Framed;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use raftmq_tls::TlsAcceptor;

use super::{MAX_CONNECTIONS, RpcRequest, RpcResponse, frame_codec};
use crate::codec;
use crate::snapshot::SnapshotInbox;
use crate::types::{Raft, Snapshot};

/// How long the accept loop pauses after an accept error (for example, out of file
/// descriptors) before trying again.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);

/// A running Raft RPC server.
#[derive(Debug)]
pub struct RaftServer {
    local_addr: SocketAddr,
    shutdown: CancellationToken,
    tasks: TaskTracker,
}

impl RaftServer {
    /// Serves Raft RPCs arriving on `listener` to `raft` until [`shutdown`](Self::shutdown);
    /// snapshots are received into `inbox`. Each connection goes through `tls` first (mutual
    /// TLS, or plaintext).
    pub fn start(
        listener: TcpListener,
        raft: Raft,
        inbox: Arc<SnapshotInbox>,
        tls: TlsAcceptor,
    ) -> std::io::Result<RaftServer> {
        let local_addr = listener.local_addr()?;
        let shutdown = CancellationToken::new();
        let tasks = TaskTracker::new();
        tasks.spawn(accept_loop(
            listener,
            raft,
            inbox,
            tls,
            shutdown.clone(),
            tasks.clone(),
        ));
        Ok(RaftServer {
            local_addr,
            shutdown,
            tasks,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Stops accepting, lets every connection finish the request in hand, and waits for all
    /// server tasks to end.
    pub async fn shutdown(&self) {
        self.shutdown.cancel();
        self.tasks.close();
        self.tasks.wait().await;
    }
}

async fn accept_loop(
    listener: TcpListener,
    raft: Raft,
    inbox: Arc<SnapshotInbox>,
    tls: TlsAcceptor,
    shutdown: CancellationToken,
    tasks: TaskTracker,
) {
    let permits = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let permit = tokio::select! {
            () = shutdown.cancelled() => return,
            permit = Arc::clone(&permits).acquire_owned() => match permit {
                Ok(permit) => permit,
                // The semaphore is never closed; treat it as a shutdown if it ever is.
                Err(_) => return,
            },
        };
        let accepted = tokio::select! {
            () = shutdown.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(error) => {
                tracing::warn!(%error, "raft server accept failed");
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    () = tokio::time::sleep(ACCEPT_ERROR_PAUSE) => continue,
                }
            }
        };
        if let Err(error) = stream.set_nodelay(true) {
            tracing::warn!(%error, %peer, "cannot set TCP_NODELAY; closing");
            continue;
        }
        tasks.spawn(serve_connection(
            stream,
            peer,
            raft.clone(),
            Arc::clone(&inbox),
            tls.clone(),
            shutdown.clone(),
            permit,
        ));
    }
}

#[tracing::instrument(level = "debug", skip_all, fields(%peer))]
async fn serve_connection(
    stream: TcpStream,
    peer: SocketAddr,
    raft: Raft,
    inbox: Arc<SnapshotInbox>,
    tls: TlsAcceptor,
    shutdown: CancellationToken,
    _permit: OwnedSemaphorePermit,
) {
    // On this connection's own task: a slow or refused handshake holds up no other peer.
    let stream = tokio::select! {
        () = shutdown.cancelled() => return,
        accepted = tls.accept(stream) => match accepted {
            Ok(stream) => stream,
            Err(error) => {
                tracing::warn!(%error, "raft connection refused");
                return;
            }
        },
    };
    let mut framed = Framed::new(stream, frame_codec());
    loop {
        let frame = tokio::select! {
            () = shutdown.cancelled() => return,
            frame = framed.next() => frame,
        };
        let frame = match frame {
            None => return,
            Some(Ok(frame)) => frame,
            Some(Err(error)) => {
                // Includes frames over the cap: refused before reading their body.
                tracing::warn!(%error, "bad raft frame; closing the connection");
                return;
            }
        };
        let (response, keep_open) = match codec::decode::<RpcRequest>(&frame) {
            Ok(request) => (handle(&raft, &inbox, request).await, true),
            Err(error) => {
                tracing::warn!(%error, "undecodable raft request; closing the connection");
                (RpcResponse::BadRequest(error.to_string()), false)
            }
        };
        let encoded = match codec::encode(&response) {
            Ok(encoded) => Bytes::from(encoded),
            Err(error) => {
                tracing::error!(%error, "cannot encode a raft response; closing the connection");
                return;
            }
        };
        if let Err(error) = framed.send(encoded).await {
            tracing::debug!(%error, "cannot answer; closing the connection");
            return;
        }
        if !keep_open {
            return;
        }
    }
}

/// Hands one request to the local Raft node. A stopped Raft answers with why it stopped.
async fn handle(raft: &Raft, inbox: &Arc<SnapshotInbox>, request: RpcRequest) -> RpcResponse {
    let stopped = |error: &dyn std::fmt::Display| RpcResponse::Stopped(error.to_string());
    match request {
        RpcRequest::AppendEntries(rpc) => match raft.append_entries(rpc).await {
            Ok(response) => RpcResponse::AppendEntries(response),
            Err(error) => stopped(&error),
        },
        RpcRequest::Vote(rpc) => match raft.vote(rpc).await {
            Ok(response) => RpcResponse::Vote(response),
            Err(error) => stopped(&error),
        },
        RpcRequest::PreVote(rpc) => match raft.pre_vote(rpc).await {
            Ok(response) => RpcResponse::PreVote(response),
            Err(error) => stopped(&error),
        },
        RpcRequest::SnapshotChunk { vote, chunk } => {
            // File writes (and the final syncs) run off the async threads.
            let inbox = Arc::clone(inbox);
            let taken = tokio::task::spawn_blocking(move || inbox.take(chunk)).await;
            match taken {
                Ok(Ok(None)) => RpcResponse::SnapshotChunkTaken,
                Ok(Ok(Some((meta, bundle)))) => {
                    let snapshot = Snapshot {
                        meta,
                        snapshot: bundle,
                    };
                    match raft.install_full_snapshot(vote, snapshot).await {
                        Ok(response) => RpcResponse::FullSnapshot(response),
                        Err(error) => stopped(&error),
                    }
                }
                Ok(Err(error)) => {
                    tracing::warn!(%error, "snapshot chunk refused");
                    RpcResponse::SnapshotChunkRefused(error.to_string())
                }
                Err(error) => RpcResponse::SnapshotChunkRefused(error.to_string()),
            }
        }
        RpcRequest::TransferLeader(rpc) => match raft.handle_transfer_leader(rpc).await {
            Ok(response) => RpcResponse::TransferLeader(response),
            Err(error) => stopped(&error),
        },
    }
}
