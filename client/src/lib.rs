//! The Rust producer and consumer of RaftMQ (and of RocketMQ brokers), over the remoting
//! protocol.
//!
//! Where to start reading:
//! - [`producer`]: [`Producer`] — sync sends with retries, batches, a bounded window of async
//!   sends, queue selection by round robin or sharding key; the three-way outcome of a send
//!   ([`SendOutcome`]: stored, definitely not stored, unknown).
//! - [`consumer`]: [`Consumer`] — clustering-mode push consumer: average allocation
//!   rebalance, long-polling pulls per queue, in-order delivery per queue to an async handler
//!   or a channel, offsets committed every 5 s, on queue drop and at shutdown.
//! - [`route`]: [`RouteCache`] and [`TopicRoute`] — the NameServers' routes, the group leader in
//!   slot 0, refresh every 30 s and at once after a routing error.
//! - `instance`: the client instance (RocketMQ's `MQClientInstance`) every producer and
//!   consumer runs on — the RPC client, the route cache and its periodic refresh, heartbeats.
//! - [`broker_client`]: [`BrokerClient`] — one typed call per broker request, to an address you
//!   choose (pull from a given member, POP with ack and change of invisibility, offsets,
//!   heartbeats, topics).
//! - [`admin`]: [`Admin`] — routes, cluster info, topic create/delete, queue and consumer
//!   offsets, raw pulls from the leader or a named member (what `mq` and jepsen-lite use).
//! - [`admin_http`]: [`AdminHttpClient`] — the brokers' and NameServers' admin HTTP API, one
//!   typed call per endpoint; [`admin_http::membership`] adds and removes group members.
//! - [`cluster_view`]: [`cluster_view::ClusterView`] — every group and member with its Raft
//!   status, and the one health judgement `mq cluster health` and the dashboard share.
//! - [`route_explain`]: why a topic has a usable route or not (`mq topic route --explain`).
//! - [`namesrv`]: [`NameServerClient`] — NameServer requests with failover between NameServers.
//! - [`error`]: [`ClientError`] and `is_unknown_outcome()`.
//! - [`message`]: [`Message`] (what you send) and [`ReceivedMessage`] (what a pull returns).
//!
//! The transport under all of it is the `raftmq-remoting` crate (frames, the RPC client with
//! "not sent" versus "outcome unknown" errors), shared with the servers.

pub mod admin;
pub mod admin_http;
pub mod broker_client;
pub mod client_id;
pub mod cluster_view;
pub mod consumer;
pub mod error;
mod instance;
pub mod message;
pub mod namesrv;
pub mod producer;
pub mod route;
pub mod route_explain;

pub use admin::Admin;
pub use admin_http::{AdminHttpClient, AdminHttpError};
pub use broker_client::{
    BrokerClient, PopRequest, PopResult, PoppedMessage, PullRequest, PullResult, PullStatus,
    SendReply, SendStatus,
};
pub use consumer::{ConsumeFrom, ConsumeStatus, Consumer, ConsumerBuilder, Delivery};
pub use error::ClientError;
pub use message::{Message, MessageQueue, ReceivedMessage};
pub use namesrv::NameServerClient;
pub use producer::{
    Producer, ProducerBuilder, SendError, SendHandle, SendOutcome, SendResult, TransactionResult,
    TransactionState,
};
/// TLS settings for [`ProducerBuilder::tls`] and [`ConsumerBuilder::tls`].
pub use raftmq_tls as tls;
pub use route::{ReadFrom, RouteCache, TopicRoute};
