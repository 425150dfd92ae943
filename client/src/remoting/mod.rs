//! The remoting transport shared by the servers (NameServer, broker) and the Rust client.
//!
//! - [`connection`]: frames over a stream, with the frame cap enforced on read.
//! - [`server`]: [`Server`] runs a [`RequestHandler`] for every request, concurrently per
//!   connection, and reports closed connections.
//! - [`rpc_client`]: [`RpcClient`] sends requests and matches answers by opaque, telling "not
//!   sent" from "outcome unknown" in [`RpcError`].

pub mod connection;
pub mod rpc_client;
pub mod server;

pub use connection::{ConnectionError, EncodedFrame, FrameReader, FrameWriter};
pub use rpc_client::{InboundRequestHandler, NotSentReason, RpcClient, RpcClientConfig, RpcError};
pub use server::{
    ConnectionHandle, ConnectionId, ConnectionInfo, PushError, RequestHandler, Server,
    ServerConfig, ServerStats, ServerStatsSnapshot,
};
