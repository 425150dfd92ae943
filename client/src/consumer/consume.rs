//! The processor of one queue: takes [`Fetched`] batches in queue order, hands them to the
//! handler `consume_batch_size` messages at a time, and advances the queue's offset after
//! each success. A batch the handler answers `RetryLater` is delivered again after
//! `reconsume_backoff`, before anything later in the queue (order is kept); after
//! `max_reconsume_times` failures it goes to the group's dead-letter topic
//! (CONSUMER_SEND_MSG_BACK with delay level -1) and the queue moves on.

use std::sync::Arc;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::delivery::ConsumeStatus;
use super::handle::ConsumerInner;
use super::queue_worker::{Fetched, pause};
use crate::message::{MessageQueue, ReceivedMessage};

pub(super) async fn process_loop(
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
        if failures > inner.config.max_reconsume_times {
            if inner.config.broadcasting.is_some() {
                // A broadcast message is not sent back (the group's other consumers have it
                // too): after its local retries it is skipped, as RocketMQ does.
                tracing::warn!(
                    count = chunk.len(),
                    "broadcast messages failed {failures} times; skipped"
                );
                return true;
            }
            if inner.send_to_dead_letters(chunk).await {
                return true;
            }
        }
        if !pause(soft, inner.config.reconsume_backoff).await {
            return false;
        }
    }
}

impl ConsumerInner {
    /// Sends a batch that failed too often to the group's dead-letter topic; true when every
    /// message was taken.
    async fn send_to_dead_letters(&self, chunk: &[ReceivedMessage]) -> bool {
        for message in chunk {
            let result = async {
                let addr = self.leader_addr(&message.queue).await?;
                self.instance
                    .broker()
                    .send_message_back(
                        &addr,
                        &self.config.group,
                        message,
                        -1,
                        self.config.max_reconsume_times,
                    )
                    .await
            }
            .await;
            if let Err(error) = result {
                tracing::warn!(msg_id = message.msg_id, %error, "could not send a failed message to the dead-letter topic; retrying it");
                return false;
            }
        }
        true
    }
}
