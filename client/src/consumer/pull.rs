//! One assigned queue: a puller task (long-polling pulls, flow control through a bounded
//! channel) and a processor task (hands batches to the handler in queue order, advances the
//! queue's offset after each success).
//!
//! Stopping is two-staged: `soft` stops pulling and stops the processor before its next batch
//! (a batch in the handler finishes); `hard` abandons a handler that did not finish in time.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{ConsumeStatus, ConsumerInner};
use crate::broker_client::{PullRequest, PullStatus};
use crate::message::{MessageQueue, ReceivedMessage};

/// Pulled batches waiting for the processor, per queue: with 32-message pulls, at most about
/// 256 messages buffered per queue before pulling pauses.
pub const MAX_PENDING_BATCHES_PER_QUEUE: usize = 8;

/// The first backoff after a failed pull; doubles up to [`MAX_PULL_BACKOFF`].
pub const PULL_ERROR_BACKOFF: Duration = Duration::from_millis(100);

/// The longest pause between failed pulls (RocketMQ's 3 s).
pub const MAX_PULL_BACKOFF: Duration = Duration::from_secs(3);

/// A pull that came back empty this fast was not held by the broker (no long polling, or the
/// broker is closing): wait this long before the next, rather than spin.
pub const EMPTY_PULL_PAUSE: Duration = Duration::from_millis(200);

/// Below this, an empty answer counts as "not held".
const SHORT_PULL: Duration = Duration::from_secs(1);

/// What the puller hands the processor, in queue order.
#[derive(Debug)]
pub(super) enum Fetched {
    /// Messages to process; afterwards the queue's offset is `next_offset`.
    Messages {
        messages: Vec<ReceivedMessage>,
        next_offset: i64,
    },
    /// Nothing to process below `.0` (filtered out): advance the offset.
    Advance(i64),
    /// The broker moved the offset (out of range): set it, even backwards.
    Reset(i64),
}

/// The two tasks serving one queue.
pub(super) struct QueueWorker {
    soft: CancellationToken,
    hard: CancellationToken,
    puller: JoinHandle<()>,
    processor: JoinHandle<()>,
}

impl QueueWorker {
    pub(super) fn start(inner: &Arc<ConsumerInner>, queue: MessageQueue, offset: i64) -> Self {
        let soft = inner.stop_queues.child_token();
        let hard = inner.abandon_handlers.child_token();
        let (tx, rx) = mpsc::channel(MAX_PENDING_BATCHES_PER_QUEUE);
        let puller = inner.queue_tasks.spawn(pull_loop(
            inner.clone(),
            queue.clone(),
            offset,
            tx,
            soft.clone(),
        ));
        let processor = inner.queue_tasks.spawn(process_loop(
            inner.clone(),
            queue,
            rx,
            soft.clone(),
            hard.clone(),
        ));
        QueueWorker {
            soft,
            hard,
            puller,
            processor,
        }
    }

    /// Asks both tasks to stop (the batch in the handler finishes).
    pub(super) fn stop(&self) {
        self.soft.cancel();
    }

    /// Waits for both tasks; a handler still running after `drain` is abandoned.
    pub(super) async fn join(self, drain: Duration) {
        self.soft.cancel();
        let QueueWorker {
            hard,
            puller,
            processor,
            ..
        } = self;
        let both = async {
            let _ = puller.await;
            let _ = processor.await;
        };
        tokio::pin!(both);
        if tokio::time::timeout(drain, &mut both).await.is_err() {
            tracing::warn!("a message handler did not finish in time; abandoning it");
            hard.cancel();
            both.await;
        }
    }
}

async fn pull_loop(
    inner: Arc<ConsumerInner>,
    queue: MessageQueue,
    mut offset: i64,
    tx: mpsc::Sender<Fetched>,
    soft: CancellationToken,
) {
    let subscription = inner.subscription_for(&queue.topic);
    let mut failures = 0u32;
    while !soft.is_cancelled() {
        let Some(addr) = inner.read_addr(&queue).await else {
            failures += 1;
            if !pause(&soft, pull_backoff(failures)).await {
                return;
            }
            continue;
        };
        let request = PullRequest {
            group: inner.config.group.clone(),
            queue: queue.clone(),
            offset,
            max_messages: inner.config.pull_batch_size,
            subscription: subscription.expression.clone(),
            suspend: Some(inner.config.long_poll),
        };
        let started = Instant::now();
        let result = tokio::select! {
            biased;
            _ = soft.cancelled() => return,
            result = inner.broker.pull(&addr, &request) => result,
        };
        let result = match result {
            Ok(result) => {
                failures = 0;
                result
            }
            Err(error) => {
                failures += 1;
                tracing::debug!(?queue, addr, %error, "pull failed");
                if error.needs_route_refresh() {
                    let _ = inner.routes.refresh(&queue.topic).await;
                }
                if !pause(&soft, pull_backoff(failures)).await {
                    return;
                }
                continue;
            }
        };
        let fetched = match result.status {
            PullStatus::Found => {
                // Keep only what lies at or after the offset asked for, in order.
                let mut messages: Vec<ReceivedMessage> = result
                    .messages
                    .into_iter()
                    .filter(|message| message.queue_offset >= offset)
                    .collect();
                messages.sort_by_key(|message| message.queue_offset);
                let after_last = messages
                    .last()
                    .map_or(offset, |message| message.queue_offset + 1);
                let next_offset = result.next_begin_offset.max(after_last);
                messages.retain(|message| subscription.matches(message.tags.as_deref()));
                if messages.is_empty() {
                    (next_offset > offset).then_some(Fetched::Advance(next_offset))
                } else {
                    Some(Fetched::Messages {
                        messages,
                        next_offset,
                    })
                }
            }
            PullStatus::RetryImmediately => (result.next_begin_offset > offset)
                .then_some(Fetched::Advance(result.next_begin_offset)),
            PullStatus::NoNewMessages => {
                if started.elapsed() < SHORT_PULL && !pause(&soft, EMPTY_PULL_PAUSE).await {
                    return;
                }
                (result.next_begin_offset > offset)
                    .then_some(Fetched::Advance(result.next_begin_offset))
            }
            PullStatus::OffsetMoved => {
                tracing::warn!(
                    ?queue,
                    from = offset,
                    to = result.next_begin_offset,
                    "the broker moved this queue's offset"
                );
                Some(Fetched::Reset(result.next_begin_offset))
            }
        };
        let Some(fetched) = fetched else {
            continue;
        };
        offset = match &fetched {
            Fetched::Messages { next_offset, .. } => *next_offset,
            Fetched::Advance(next) | Fetched::Reset(next) => *next,
        };
        tokio::select! {
            biased;
            _ = soft.cancelled() => return,
            sent = tx.send(fetched) => if sent.is_err() { return },
        }
    }
}

async fn process_loop(
    inner: Arc<ConsumerInner>,
    queue: MessageQueue,
    mut rx: mpsc::Receiver<Fetched>,
    soft: CancellationToken,
    hard: CancellationToken,
) {
    loop {
        let fetched = tokio::select! {
            biased;
            _ = soft.cancelled() => return,
            fetched = rx.recv() => match fetched {
                Some(fetched) => fetched,
                None => return,
            },
        };
        match fetched {
            Fetched::Advance(next) => inner.offsets.advance(&queue, next),
            Fetched::Reset(next) => inner.offsets.reset(&queue, next),
            Fetched::Messages {
                messages,
                next_offset,
            } => {
                let batch = inner.config.consume_batch_size;
                for chunk in messages.chunks(batch) {
                    if soft.is_cancelled() {
                        return;
                    }
                    if !consume(&inner, chunk, &soft, &hard).await {
                        return;
                    }
                    if let Some(last) = chunk.last() {
                        inner.offsets.advance(&queue, last.queue_offset + 1);
                    }
                }
                inner.offsets.advance(&queue, next_offset);
            }
        }
    }
}

/// Runs the handler on `chunk` until it succeeds; true when done with the chunk (handled, or
/// sent to the dead-letter queue after too many failures), false when stopped first.
async fn consume(
    inner: &ConsumerInner,
    chunk: &[ReceivedMessage],
    soft: &CancellationToken,
    hard: &CancellationToken,
) -> bool {
    let mut failures: i32 = 0;
    loop {
        let mut delivery = chunk.to_vec();
        if failures > 0 {
            for message in &mut delivery {
                message.reconsume_times = message.reconsume_times.saturating_add(failures);
            }
        }
        let status = tokio::select! {
            biased;
            _ = hard.cancelled() => return false,
            status = (inner.handler)(delivery) => status,
        };
        if status == ConsumeStatus::Success {
            return true;
        }
        failures = failures.saturating_add(1);
        if failures > inner.config.max_reconsume_times && inner.send_to_dead_letters(chunk).await {
            return true;
        }
        if !pause(soft, inner.config.reconsume_backoff).await {
            return false;
        }
    }
}

fn pull_backoff(failures: u32) -> Duration {
    let factor = 1u32
        .checked_shl(failures.saturating_sub(1))
        .unwrap_or(u32::MAX);
    PULL_ERROR_BACKOFF
        .saturating_mul(factor)
        .min(MAX_PULL_BACKOFF)
}

/// Sleeps `delay`; false when `stop` fires first.
async fn pause(stop: &CancellationToken, delay: Duration) -> bool {
    tokio::select! {
        biased;
        _ = stop.cancelled() => false,
        _ = tokio::time::sleep(delay) => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pull_backoff_doubles_to_a_cap() {
        assert_eq!(pull_backoff(1), Duration::from_millis(100));
        assert_eq!(pull_backoff(2), Duration::from_millis(200));
        assert_eq!(pull_backoff(6), MAX_PULL_BACKOFF);
        assert_eq!(pull_backoff(u32::MAX), MAX_PULL_BACKOFF);
    }
}
