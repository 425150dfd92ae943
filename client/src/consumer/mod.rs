//! The push-style consumer: [`Consumer::builder`] ... `.start(handler)`. Clustering mode (the
//! group shares the queues) by default; with [`ConsumerBuilder::broadcasting`] every consumer of
//! the group reads every queue and keeps its own offsets (`local_offsets.rs`). Subscriptions
//! filter by tag, or by an SQL92 expression the broker evaluates
//! ([`ConsumerBuilder::subscribe_sql92`]).
//!
//! - Membership: HEART_BEAT to every member of every subscribed topic's groups at start and
//!   every 30 s; UNREGISTER_CLIENT at shutdown (the client instance's, `crate::instance`).
//! - Rebalance ([`rebalance`]): at start, every 20 s, when a broker sends
//!   NOTIFY_CONSUMER_IDS_CHANGED, and when a route changes. Each member takes its average
//!   share of each topic's sorted queues among the group's sorted consumer ids.
//! - Per assigned queue: long-polling pulls (15 s) from the leader (or a follower with
//!   [`ReadFrom::Follower`]) and a processor that hands the handler one batch at a time, in
//!   queue order. A queue starts at its committed offset (QUERY_CONSUMER_OFFSET), or per
//!   [`ConsumeFrom`] when the group has none.
//! - Offsets ([`OffsetStore`]): committed (UPDATE_CONSUMER_OFFSET, to the leader) every 5 s,
//!   when a queue is dropped in a rebalance, and at shutdown.
//! - A handler answering [`ConsumeStatus::RetryLater`] gets the same batch again after a
//!   backoff, before anything later in that queue (order is kept); after
//!   `max_reconsume_times` failures the batch goes to the group's dead-letter topic
//!   (CONSUMER_SEND_MSG_BACK with delay level -1) and consumption moves on.
//! - The group's `%RETRY%<group>` topic is consumed too when it has a route (messages other
//!   RocketMQ clients of the group sent back), with the original topic restored on delivery.
//!
//! Delivery is at least once: a handler may see a message again after a rebalance hands its
//! queue to another member before the old owner's commit, or after a crash.
//!
//! Where each part lives:
//!
//! | file | concern |
//! |---|---|
//! | `builder.rs` | [`ConsumerBuilder`]: settings, defaults, checks; starting |
//! | `handle.rs` | [`Consumer`] and the state its tasks share; shutdown |
//! | `subscription.rs` | [`Subscription`]s, the retry topic, [`ConsumeFrom`], heartbeat data |
//! | `delivery.rs` | how batches reach the application: [`ConsumeStatus`], [`Delivery`] |
//! | `rebalance.rs` | when and how the held queues change |
//! | `allocate.rs` | which queues a member takes ([`allocate_averagely`]) |
//! | `queue_worker.rs` | the two tasks serving one held queue, and stopping them |
//! | `pull.rs` | the pull loop of one queue |
//! | `consume.rs` | the processor of one queue: handler calls, redelivery, dead letters |
//! | `offset_store.rs` | the offsets of held queues and what changed ([`OffsetStore`]) |
//! | `commit.rs` | offset commits to the leader: periodic, on drop, at shutdown |
//! | `local_offsets.rs` | a broadcasting consumer's own offsets, in a file |
//!
//! [`ReadFrom::Follower`]: crate::route::ReadFrom::Follower

mod allocate;
mod builder;
mod commit;
mod consume;
mod delivery;
mod handle;
mod local_offsets;
mod offset_store;
mod pull;
mod queue_worker;
pub mod rebalance;
mod subscription;

pub use builder::{
    ConsumerBuilder, DEFAULT_CONSUME_BATCH_SIZE, DEFAULT_DELIVERY_CHANNEL_CAPACITY,
    DEFAULT_HEARTBEAT_INTERVAL, DEFAULT_MAX_RECONSUME_TIMES, DEFAULT_RECONSUME_BACKOFF,
    HANDLER_DRAIN_TIMEOUT, MAX_CONSUME_BATCH_SIZE, MAX_SUBSCRIPTIONS,
};
pub use delivery::{ConsumeStatus, Delivery};
pub use handle::Consumer;
pub use local_offsets::LocalOffsets;
pub use offset_store::{DEFAULT_COMMIT_INTERVAL, OffsetStore, QueueOffset, commit_loop};
pub use pull::{MAX_PULL_BACKOFF, PULL_ERROR_BACKOFF};
pub use queue_worker::MAX_PENDING_BATCHES_PER_QUEUE;
pub use rebalance::{DEFAULT_REBALANCE_INTERVAL, REBALANCE_RETRY_INTERVAL, allocate_averagely};
pub use subscription::{ConsumeFrom, Subscription};
