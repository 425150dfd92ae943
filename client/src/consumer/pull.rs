//! The puller of one queue: long-polling pulls (15 s) from the member the route names (the
//! leader, or a follower with `ReadFrom::Follower`), filtered by the subscription's tags,
//! handed in order to the queue's processor through a bounded channel (so a slow handler
//! pauses pulling). A failed pull refreshes the route when it is wrong and backs off by the
//! shared [`BackoffPolicy::PULL_RETRY`].

use std::sync::Arc;
use std::time::Duration;

use raftmq_protocol::backoff::BackoffPolicy;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::handle::ConsumerInner;
use super::queue_worker::{Fetched, pause};
use crate::broker_client::{PullRequest, PullStatus};
use crate::message::{MessageQueue, ReceivedMessage};

/// The first backoff after a failed pull (at most; jittered down to half); doubles up to
/// [`MAX_PULL_BACKOFF`].
pub const PULL_ERROR_BACKOFF: Duration = BackoffPolicy::PULL_RETRY.first;

/// The longest pause between failed pulls (RocketMQ's 3 s).
pub const MAX_PULL_BACKOFF: Duration = BackoffPolicy::PULL_RETRY.max;

/// A pull that came back empty this fast was not held by the broker (no long polling, or the
/// broker is closing): wait this long before the next, rather than spin.
pub const EMPTY_PULL_PAUSE: Duration = Duration::from_millis(200);

/// Below this, an empty answer counts as "not held".
const SHORT_PULL: Duration = Duration::from_secs(1);

pub(super) async fn pull_loop(
    inner: Arc<ConsumerInner>,
    queue: MessageQueue,
    mut offset: i64,
    tx: mpsc::Sender<Fetched>,
    soft: CancellationToken,
) {
    let subscription = inner.config.subscription_for(&queue.topic);
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
            sql92: subscription.is_sql92(),
            suspend: Some(inner.config.long_poll),
        };
        let started = Instant::now();
        let result = tokio::select! {
            biased;
            _ = soft.cancelled() => return,
            result = inner.instance.broker().pull(&addr, &request) => result,
        };
        let result = match result {
            Ok(result) => {
                failures = 0;
                result
            }
            Err(error) => {
                failures += 1;
                tracing::debug!(?queue, addr, %error, "pull failed");
                inner.instance.refresh_on_error(&queue.topic, &error).await;
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

/// The pause before the next pull after `failures` failed pulls in a row.
fn pull_backoff(failures: u32) -> Duration {
    BackoffPolicy::PULL_RETRY.delay_at(failures.saturating_sub(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pull_backoff_doubles_to_a_cap() {
        // Each pause lies in the upper half of its nominal value (f32 steps: 1 us slack).
        let within = |wait: Duration, nominal: Duration| {
            wait + Duration::from_micros(1) >= nominal / 2
                && wait <= nominal + Duration::from_micros(1)
        };
        for _ in 0..20 {
            assert!(within(pull_backoff(1), Duration::from_millis(100)));
            assert!(within(pull_backoff(2), Duration::from_millis(200)));
            assert!(within(pull_backoff(6), MAX_PULL_BACKOFF));
            assert!(within(pull_backoff(u32::MAX), MAX_PULL_BACKOFF));
        }
    }
}
