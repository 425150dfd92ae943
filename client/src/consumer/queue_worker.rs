//! One assigned queue is served by two tasks: a puller (`pull.rs`: long-polling pulls, flow
//! control through a bounded channel of [`Fetched`] batches) and a processor (`consume.rs`:
//! hands batches to the handler in queue order, advances the queue's offset after each
//! success). [`QueueWorker`] starts both and stops them.
//!
//! Stopping is two-staged: `soft` stops pulling and stops the processor before its next batch
//! (a batch in the handler finishes); `hard` abandons a handler that did not finish in time.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::consume::process_loop;
use super::handle::ConsumerInner;
use super::pull::pull_loop;
use crate::message::{MessageQueue, ReceivedMessage};

/// Pulled batches waiting for the processor, per queue: with 32-message pulls, at most about
/// 256 messages buffered per queue before pulling pauses.
pub const MAX_PENDING_BATCHES_PER_QUEUE: usize = 8;

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

/// Sleeps `delay`; false when `stop` fires first.
pub(super) async fn pause(stop: &CancellationToken, delay: Duration) -> bool {
    tokio::select! {
        biased;
        _ = stop.cancelled() => false,
        _ = tokio::time::sleep(delay) => true,
    }
}
