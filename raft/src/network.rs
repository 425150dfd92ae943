//! The Raft RPC transport: tokio TCP, length-delimited frames, payloads through
//! [`codec`](crate::codec).
//!
//! ```text
//! frame = [u32 big-endian length][codec-encoded RpcRequest or RpcResponse]
//! ```
//!
//! One request is in flight per connection: the client writes a request frame and reads one
//! response frame. Frames above [`MAX_FRAME_BYTES`] are refused by the decoder before any buffer
//! is allocated for them; an append request of several entries that would encode above
//! [`MAX_APPEND_RPC_BYTES`] answers openraft with `PayloadTooLarge` and a hint of how many
//! entries would fit, so openraft sends fewer.
//!
//! - [`client`]: openraft's `RaftNetworkFactory` / `RaftNetwork`, one lazily connected client per
//!   target with capped exponential backoff after connection failures.
//! - [`server`]: the accept loop (bounded by a semaphore) and one task per connection that hands
//!   each request to the local `Raft`.

pub mod client;
pub mod server;

use std::time::Duration;

use bytes::Bytes;
use openraft::error::{Fatal, InstallSnapshotError, RaftError};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    SnapshotResponse, VoteRequest, VoteResponse,
};
use serde::{Deserialize, Serialize};
use tokio_util::codec::LengthDelimitedCodec;

pub use client::{NetworkFactory, PeerClient};
pub use server::RaftServer;

use crate::types::{NodeId, SnapshotMeta, TypeConfig, Vote};

/// The largest frame (request or response) either side accepts. Log entries must stay well
/// below it: a single entry that does not fit can never be replicated.
pub const MAX_FRAME_BYTES: usize = 64 * 1024 * 1024;

/// The most bytes one append RPC should carry. openraft times an append RPC out after one
/// heartbeat interval, and the follower answers only after its fsync, so a request must be small
/// enough to be written well within that (this disk syncs ~100 MiB/s under load). Larger
/// requests answer openraft `PayloadTooLarge` with a hint of how many entries fit; a single
/// entry is always sent if it fits in a frame.
pub const MAX_APPEND_RPC_BYTES: usize = 8 * 1024 * 1024;

/// Bytes of the frame length prefix.
const FRAME_LENGTH_FIELD_BYTES: usize = 4;

/// The most Raft RPC connections a server serves at once (a group has a handful of members,
/// each holding one replication and a few vote connections).
pub const MAX_CONNECTIONS: usize = 64;

/// How long establishing a connection may take before the peer counts as unreachable.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

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
    Vote(VoteRequest<NodeId>),
    /// One chunk of a snapshot (openraft's chunked transfer).
    InstallSnapshot(InstallSnapshotRequest<TypeConfig>),
    /// A whole snapshot in one frame.
    FullSnapshot {
        vote: Vote,
        meta: SnapshotMeta,
        data: Bytes,
    },
}

/// The answer to an [`RpcRequest`], variant for variant.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum RpcResponse {
    AppendEntries(Result<AppendEntriesResponse<NodeId>, RaftError<NodeId>>),
    Vote(Result<VoteResponse<NodeId>, RaftError<NodeId>>),
    InstallSnapshot(
        Result<InstallSnapshotResponse<NodeId>, RaftError<NodeId, InstallSnapshotError>>,
    ),
    FullSnapshot(Result<SnapshotResponse<NodeId>, Fatal<NodeId>>),
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
    use bytes::{BufMut, BytesMut};
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
        let request = RpcRequest::Vote(VoteRequest::new(vote, None));
        let decoded: RpcRequest =
            crate::codec::decode(&crate::codec::encode(&request).unwrap()).unwrap();
        assert!(matches!(decoded, RpcRequest::Vote(v) if v.vote == vote));

        let response = RpcResponse::Vote(Ok(VoteResponse::new(vote, None, true)));
        let decoded: RpcResponse =
            crate::codec::decode(&crate::codec::encode(&response).unwrap()).unwrap();
        assert!(matches!(decoded, RpcResponse::Vote(Ok(v)) if v.vote_granted));
    }
}
