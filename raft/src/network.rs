//! The Raft RPC transport: tokio TCP, length-delimited frames, payloads through
//! [`codec`](crate::codec).
//!
//! ```text
//! frame = [u32 big-endian length][codec-encoded RpcRequest or RpcResponse]
//! ```
//!
//! The server answers the requests of a connection one at a time, in order; the client waits for
//! each answer (an answer its caller gave up on is read and dropped before the next one). Frames
//! above [`MAX_FRAME_BYTES`] are refused by the decoder before any buffer is allocated for them;
//! of an append request whose entries exceed [`MAX_APPEND_RPC_BYTES`], the client sends the
//! entries that fit and reports a partial success, so openraft sends the rest next.
//!
//! Timeouts are the network's: [`APPEND_TIMEOUT`] for appends (openraft 0.10 sets none),
//! [`CONNECT_TIMEOUT`] for a connection, both sized by TCP's retransmission timers
//! ([`TCP_MIN_RTO`], [`TCP_SYN_RTO`]) so that a lossy link slows replication instead of
//! stopping it; votes, transfers and snapshots use the deadline openraft passes.
//!
//! - [`client`]: openraft's `RaftNetworkFactory` / `RaftNetworkV2`, one lazily connected client
//!   per target with capped exponential backoff after connection failures.
//! - [`server`]: the accept loop (bounded by a semaphore) and one task per connection that hands
//!   each request to the local `Raft`.
//! - [`RaftTls`]: both ends of the links over mutual TLS when the member is configured with
//!   TLS: the server refuses a peer without a certificate chaining to the cluster CA, the
//!   client presents its own and checks the server's.
//! - `partition` (feature `fault-injection`, this crate's tests only): a switch that cuts a
//!   member's RPCs to chosen peers.

pub mod client;
#[cfg(feature = "fault-injection")]
pub mod partition;
pub mod server;

use std::time::Duration;

use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, TransferLeaderRequest,
    TransferLeaderResponse, VoteRequest, VoteResponse,
};
use serde::{Deserialize, Serialize};
use tokio_util::codec::LengthDelimitedCodec;

pub use client::{NetworkFactory, PeerClient};
#[cfg(feature = "fault-injection")]
pub use partition::{Partition, RpcKind};
pub use server::RaftServer;

use crate::types::{NodeId, TypeConfig, Vote};

/// The largest frame (request or response) either side accepts. Log entries must stay well
/// below it: a single entry that does not fit can never be replicated.
pub const MAX_FRAME_BYTES: usize = 64 * 1024 * 1024;

/// The most bytes one append RPC should carry. The follower answers only after its fsync, so a
/// request must be small enough to be written well within the append timeout (this disk syncs
/// ~100 MiB/s under load). The client sends the entries of a larger request that fit and answers
/// openraft with a partial success, so openraft sends the rest next; a single entry is always
/// sent if it fits in a frame.
pub const MAX_APPEND_RPC_BYTES: usize = 8 * 1024 * 1024;

/// Bytes of the frame length prefix.
const FRAME_LENGTH_FIELD_BYTES: usize = 4;

/// The most Raft RPC connections a server serves at once (a group has a handful of members,
/// each holding one replication and a few vote connections).
pub const MAX_CONNECTIONS: usize = 64;

/// Linux's minimum TCP retransmission timeout (`TCP_RTO_MIN`): a lost segment on an otherwise
/// healthy connection arrives at least this late, and each further loss of it doubles the wait.
pub const TCP_MIN_RTO: Duration = Duration::from_millis(200);

/// Linux's initial retransmission timeout of a connection's SYN (`TCP_TIMEOUT_INIT`): a lost SYN
/// or SYN-ACK costs a whole second, the next loss 2 s more.
pub const TCP_SYN_RTO: Duration = Duration::from_secs(1);

/// How long establishing a connection may take before the peer counts as unreachable: room for
/// the SYN to be sent three times (at 0, 1 and 3 s), so that a lossy link still connects.
pub const CONNECT_TIMEOUT: Duration = Duration::from_millis(3_500);

/// How long one append RPC (replication or catch-up) may take: the follower's fsync of up to
/// [`MAX_APPEND_RPC_BYTES`] and its answer, with room for a lost request or answer to be
/// retransmitted three times (200 + 400 + 800 ms from [`TCP_MIN_RTO`]). openraft 0.10 leaves
/// this timeout to the network; 0.9 used the heartbeat interval (150 ms), below TCP's minimum
/// retransmission timeout, so at 20 % packet loss most appends timed out and replication
/// stalled. Heartbeats keep openraft's own timeout of one heartbeat interval; a heartbeat it
/// gives up on leaves the connection open (see [`client`]).
pub const APPEND_TIMEOUT: Duration = Duration::from_secs(2);

/// The most requests a connection may have written without reading their answers (callers that
/// gave up waiting); beyond it the peer counts as stuck and the connection is replaced.
pub const MAX_UNANSWERED_REQUESTS: usize = 16;

/// How long one snapshot chunk (at most a MiB, written to the receiver's page cache, and the
/// last one's install) may take before the transfer is given up and retried.
pub const SNAPSHOT_CHUNK_TIMEOUT: Duration = Duration::from_secs(30);

/// How this member's Raft links are secured: plaintext by default; with TLS, the server
/// accepts only peers with a certificate of the cluster CA and the client presents one
/// (`raftmq_tls::TlsConfig::mutual_acceptor` and `connector`).
#[derive(Clone, Debug, Default)]
pub struct RaftTls {
    pub acceptor: raftmq_tls::TlsAcceptor,
    pub connector: raftmq_tls::TlsConnector,
}

impl RaftTls {
    /// Both ends from one process's TLS settings.
    pub fn from_config(config: &raftmq_tls::TlsConfig) -> Result<RaftTls, raftmq_tls::TlsError> {
        Ok(RaftTls {
            acceptor: config.mutual_acceptor()?,
            connector: config.connector()?,
        })
    }
}

/// The frame codec both sides use.
pub fn frame_codec() -> LengthDelimitedCodec {
    LengthDelimitedCodec::builder()
        .length_field_length(FRAME_LENGTH_FIELD_BYTES)
        .max_frame_length(MAX_FRAME_BYTES)
        .new_codec()
}

/// A Raft RPC as sent on the wire.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum RpcRequest {
    AppendEntries(AppendEntriesRequest<TypeConfig>),
    Vote(VoteRequest<TypeConfig>),
    /// Would the peer vote for this candidate? (Pre-vote: nothing is persisted.)
    PreVote(VoteRequest<TypeConfig>),
    /// One chunk of a snapshot transfer ([`crate::snapshot`]); the last one's answer is
    /// openraft's.
    SnapshotChunk {
        vote: Vote,
        chunk: crate::snapshot::SnapshotChunk,
    },
    /// The leader hands leadership to `to_node_id` (sent to every voter).
    TransferLeader(TransferLeaderRequest<TypeConfig>),
}

/// The answer to an [`RpcRequest`], variant for variant.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum RpcResponse {
    AppendEntries(AppendEntriesResponse<TypeConfig>),
    Vote(VoteResponse<TypeConfig>),
    PreVote(VoteResponse<TypeConfig>),
    FullSnapshot(SnapshotResponse<TypeConfig>),
    /// A snapshot chunk was taken; send the next.
    SnapshotChunkTaken,
    /// A snapshot chunk was refused (out of order, a disk error): the transfer starts over.
    SnapshotChunkRefused(String),
    TransferLeader(TransferLeaderResponse<TypeConfig>),
    /// The peer's Raft has stopped (a fatal error or shutdown); the text says why. It is text,
    /// not openraft's error type, so that peers never depend on each other's error layout.
    Stopped(String),
    /// The server could not decode the request; it closes the connection after this.
    BadRequest(String),
}

/// Why a network operation failed, before openraft's error types take over.
#[derive(Debug, thiserror::Error)]
pub enum NetworkError {
    #[error("peer {target} at {addr} is unreachable: {reason}")]
    Unreachable {
        target: NodeId,
        addr: String,
        reason: String,
    },
    #[error("connection to peer {target} failed: {source}")]
    Io {
        target: NodeId,
        #[source]
        source: std::io::Error,
    },
    #[error("peer {target} closed the connection before answering")]
    Closed { target: NodeId },
    #[error("cannot encode or decode a frame for peer {target}: {source}")]
    Codec {
        target: NodeId,
        #[source]
        source: crate::codec::CodecError,
    },
    #[error("request of {bytes} bytes exceeds the {max} byte frame cap")]
    TooLarge { bytes: usize, max: usize },
    #[error("peer {target} answered {answer}")]
    UnexpectedAnswer { target: NodeId, answer: String },
    #[error("request to peer {target} timed out after {timeout:?}")]
    Timeout { target: NodeId, timeout: Duration },
    #[error("cannot bind the raft listener on {addr}: {source}")]
    Bind {
        addr: String,
        #[source]
        source: std::io::Error,
    },
}

#[cfg(test)]
mod tests {
    use bytes::{BufMut, Bytes, BytesMut};
    use tokio_util::codec::{Decoder, Encoder};

    use super::*;

    #[test]
    fn a_frame_over_the_cap_is_refused_before_allocating() {
        let mut codec = frame_codec();
        let mut buf = BytesMut::with_capacity(64);
        buf.put_u32(u32::try_from(MAX_FRAME_BYTES + 1).unwrap());
        buf.put_slice(b"just the start of a huge frame");
        let capacity_before = buf.capacity();
        assert!(codec.decode(&mut buf).is_err());
        assert_eq!(
            buf.capacity(),
            capacity_before,
            "no buffer grown for the frame"
        );
        assert!(buf.capacity() < 1024);
    }

    #[test]
    fn a_frame_at_the_cap_is_accepted_and_incomplete_frames_wait() {
        let mut codec = frame_codec();
        let mut buf = BytesMut::new();
        buf.put_u32(u32::try_from(MAX_FRAME_BYTES).unwrap());
        buf.put_slice(&[1, 2, 3]);
        assert!(
            matches!(codec.decode(&mut buf), Ok(None)),
            "needs more bytes"
        );

        // A fresh codec: the first one now waits for the rest of that frame.
        let mut codec = frame_codec();
        let mut buf = BytesMut::new();
        codec
            .encode(Bytes::from_static(b"hello"), &mut buf)
            .unwrap();
        assert_eq!(&buf[..4], &[0, 0, 0, 5]);
        let frame = codec.decode(&mut buf).unwrap().unwrap();
        assert_eq!(&frame[..], b"hello");
    }

    #[test]
    fn an_oversized_frame_cannot_be_encoded_either() {
        let mut codec = frame_codec();
        let mut buf = BytesMut::new();
        let huge = Bytes::from(vec![0u8; MAX_FRAME_BYTES + 1]);
        assert!(codec.encode(huge, &mut buf).is_err());
    }

    #[test]
    fn requests_and_responses_round_trip_through_the_codec() {
        let vote = Vote::new(3, 1);
        let request = RpcRequest::PreVote(VoteRequest::new(vote, None));
        let decoded: RpcRequest =
            crate::codec::decode(&crate::codec::encode(&request).unwrap()).unwrap();
        assert!(matches!(decoded, RpcRequest::PreVote(v) if v.vote == vote));

        let response = RpcResponse::Vote(VoteResponse::new(vote, None, true));
        let decoded: RpcResponse =
            crate::codec::decode(&crate::codec::encode(&response).unwrap()).unwrap();
        assert!(matches!(decoded, RpcResponse::Vote(v) if v.vote_granted));

        let transfer = RpcRequest::TransferLeader(TransferLeaderRequest::new(
            Vote::new_committed(3, 1),
            2,
            Some(crate::types::log_id(3, 1, 7)),
        ));
        let decoded: RpcRequest =
            crate::codec::decode(&crate::codec::encode(&transfer).unwrap()).unwrap();
        assert!(matches!(decoded, RpcRequest::TransferLeader(t) if *t.to_node_id() == 2));
    }
}
