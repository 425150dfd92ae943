//! The concrete openraft type config for RaftMQ and short aliases for the types built on it.
//!
//! The raft crate knows nothing about messages: an entry's application payload is opaque bytes
//! (`AppRequest`), encoded and decoded by the state machine that owns them (the broker's).

use std::io::Cursor;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

/// A member of a Raft group. RaftMQ uses small integers (`--node-id`).
pub type NodeId = u64;

/// What the group knows about a member: its Raft RPC address.
pub type Node = openraft::BasicNode;

/// The payload of a normal log entry: an application command, encoded by the application.
///
/// For the broker this is one encoded batch of messages (or an offset commit, a topic change ...).
/// It is serialized as one byte string, not element by element.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppRequest(pub Bytes);

/// What applying one normal entry returned, encoded by the application (for the broker: the
/// queue offsets it assigned). Blank and membership entries answer an empty response.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppResponse(pub Bytes);

openraft::declare_raft_types!(
    /// The one openraft type config of RaftMQ.
    pub TypeConfig:
        D = AppRequest,
        R = AppResponse,
        NodeId = NodeId,
        Node = Node,
        SnapshotData = Cursor<Vec<u8>>,
);

pub type Raft = openraft::Raft<TypeConfig>;
pub type Entry = openraft::Entry<TypeConfig>;
pub type EntryPayload = openraft::EntryPayload<TypeConfig>;
pub type LogId = openraft::LogId<NodeId>;
pub type Vote = openraft::Vote<NodeId>;
pub type StoredMembership = openraft::StoredMembership<NodeId, Node>;
pub type SnapshotMeta = openraft::SnapshotMeta<NodeId, Node>;
pub type RaftMetrics = openraft::RaftMetrics<NodeId, Node>;
pub type StorageError = openraft::StorageError<NodeId>;
