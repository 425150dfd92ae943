//! How batches reach the application: a handler answering [`ConsumeStatus`], either an async
//! function ([`ConsumerBuilder::start`]) or a channel of [`Delivery`]s to answer
//! ([`ConsumerBuilder::start_with_channel`]); both become one [`BoxedHandler`].
//!
//! [`ConsumerBuilder::start`]: super::ConsumerBuilder::start
//! [`ConsumerBuilder::start_with_channel`]: super::ConsumerBuilder::start_with_channel

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};

use crate::message::{MessageQueue, ReceivedMessage};

/// What a handler says about a batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConsumeStatus {
    /// Processed: the queue's offset moves past the batch.
    Success,
    /// Not processed: deliver the batch again later (before later messages of its queue).
    RetryLater,
}

/// The handler as the queue processors call it: one batch in, its status out.
pub(super) type BoxedHandler = Arc<
    dyn Fn(Vec<ReceivedMessage>) -> Pin<Box<dyn Future<Output = ConsumeStatus> + Send>>
        + Send
        + Sync,
>;

/// An async function as a [`BoxedHandler`].
pub(super) fn boxed_handler<F, Fut>(handler: F) -> BoxedHandler
where
    F: Fn(Vec<ReceivedMessage>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ConsumeStatus> + Send + 'static,
{
    Arc::new(move |messages| Box::pin(handler(messages)))
}

/// A handler that hands each batch out through a channel of `capacity` [`Delivery`]s and
/// waits for its answer; the receiving end to give the application.
pub(super) fn channel_handler(capacity: usize) -> (BoxedHandler, mpsc::Receiver<Delivery>) {
    let (tx, rx) = mpsc::channel(capacity.max(1));
    let handler: BoxedHandler = Arc::new(move |messages| {
        let tx = tx.clone();
        Box::pin(async move {
            let (answer, answered) = oneshot::channel();
            let delivery = Delivery {
                messages,
                answer: Some(answer),
            };
            if tx.send(delivery).await.is_err() {
                return ConsumeStatus::RetryLater;
            }
            answered.await.unwrap_or(ConsumeStatus::RetryLater)
        })
    });
    (handler, rx)
}

/// A batch delivered through the channel of
/// [`ConsumerBuilder::start_with_channel`](super::ConsumerBuilder::start_with_channel). Answer
/// with [`Delivery::ack`] or [`Delivery::retry_later`]; dropping it unanswered means retry
/// later.
#[derive(Debug)]
pub struct Delivery {
    pub messages: Vec<ReceivedMessage>,
    answer: Option<oneshot::Sender<ConsumeStatus>>,
}

impl Delivery {
    /// The queue the batch came from.
    pub fn queue(&self) -> Option<&MessageQueue> {
        self.messages.first().map(|message| &message.queue)
    }

    /// Processed: the queue moves on.
    pub fn ack(mut self) {
        self.answer(ConsumeStatus::Success);
    }

    /// Not processed: the batch comes again later.
    pub fn retry_later(mut self) {
        self.answer(ConsumeStatus::RetryLater);
    }

    fn answer(&mut self, status: ConsumeStatus) {
        if let Some(answer) = self.answer.take() {
            let _ = answer.send(status);
        }
    }
}

impl Drop for Delivery {
    fn drop(&mut self) {
        self.answer(ConsumeStatus::RetryLater);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dropped_deliveries_ask_for_redelivery() {
        let (answer, mut answered) = oneshot::channel();
        drop(Delivery {
            messages: Vec::new(),
            answer: Some(answer),
        });
        assert_eq!(answered.try_recv().unwrap(), ConsumeStatus::RetryLater);
        let (answer, mut answered) = oneshot::channel();
        Delivery {
            messages: Vec::new(),
            answer: Some(answer),
        }
        .ack();
        assert_eq!(answered.try_recv().unwrap(), ConsumeStatus::Success);
    }
}
