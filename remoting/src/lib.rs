//! The RocketMQ remoting transport on tokio, shared by the servers (NameServer, broker) and the
//! Rust client. The bytes are `raftmq-protocol`'s; this crate moves them.
//!
//! Where to start reading: [`server::Server::run`] (accept loop -> one reader, one writer and
//! one task per request on each connection) for the serving side, [`RpcClient::invoke`] for the
//! calling side.
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
