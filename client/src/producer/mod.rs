//! The producer: [`Producer::send`] (sync, with retries), [`Producer::send_batch`],
//! [`Producer::send_async`] (a bounded window of sends in flight), by round robin, sharding key
//! or explicit queue.
//!
//! Every send ends in one of three ways, which [`SendOutcome`] names: stored
//! (`Ok(SendResult)`), definitely not stored ([`SendError`] with `!is_unknown_outcome()`), or
//! unknown (a timeout or lost connection after the request left, or a broker that proposed the
//! write but cannot tell its fate). Retries after an unknown outcome may store the message
//! twice (at-least-once); both [`SendResult::earlier_attempt_unknown`] and
//! [`SendError::is_unknown_outcome`] say when that may have happened. Every attempt of one
//! send carries the same `UNIQ_KEY`, so duplicates can be recognised.
//!
//! Each attempt has its own `send_timeout`; with `retries` retries a send takes at most about
//! `(retries + 1) * send_timeout` plus backoffs.
//!
//! Where each part lives:
//!
//! | file | concern |
//! |---|---|
//! | `builder.rs` | [`ProducerBuilder`]: settings, defaults, checks; starts the client instance |
//! | `handle.rs` | [`Producer`]: the send API, the async window, shutdown |
//! | `outgoing.rs` | a message or batch made ready for the wire, once for every attempt |
//! | `send.rs` | one send's attempts: route, queue, leader, retry, failover rounds |
//! | `retry.rs` | which failures are retried, and the backoff between attempts |
//! | `select.rs` | which queue an attempt goes to (round robin, sharding key, given queue) |
//! | `fault.rs` | members that failed lately, avoided by queue selection |
//! | `outcome.rs` | [`SendResult`], [`SendError`], [`SendOutcome`], [`SendHandle`] |
//! | `transaction.rs` | [`Producer::send_in_transaction`]: half message, local transaction, commit or rollback; answering the broker's checks |
//!
//! Routes, connections and heartbeats are the client instance's (`crate::instance`), shared
//! in code with the consumer.

mod builder;
mod fault;
mod handle;
mod outcome;
mod outgoing;
mod retry;
mod select;
mod send;
mod transaction;

pub use builder::{
    DEFAULT_ASYNC_WINDOW, DEFAULT_FAILOVER_WAIT, DEFAULT_PRODUCER_GROUP, DEFAULT_RETRIES,
    DEFAULT_SEND_TIMEOUT, MAX_ASYNC_WINDOW, MAX_RETRIES, PRODUCER_HEARTBEAT_INTERVAL,
    ProducerBuilder,
};
pub use fault::{FAULT_ISOLATION, MAX_ISOLATED_MEMBERS};
pub use handle::Producer;
pub use outcome::{SendError, SendHandle, SendOutcome, SendResult};
pub use outgoing::MAX_BATCH_MESSAGES;
pub use retry::{
    DEFAULT_RETRY_BACKOFF, MAX_RETRY_BACKOFF, RetryDecision, backoff, decide, is_leadership_change,
};
pub use send::{MAX_FAILOVER_DOUBLINGS, MAX_FAILOVER_ROUNDS};
pub use transaction::{TransactionChecker, TransactionResult, TransactionState};
