//! How a send ends: [`SendResult`] (stored), [`SendError`] (not stored, or perhaps stored),
//! [`SendOutcome`] (the three cases as a history records them), and [`SendHandle`], the
//! result of an async send to await.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::sync::oneshot;

use crate::broker_client::SendStatus;
use crate::error::ClientError;
use crate::message::MessageQueue;

/// A stored send.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SendResult {
    pub status: SendStatus,
    /// The message's `UNIQ_KEY` (for a batch: the first message's).
    pub msg_id: String,
    /// Every message's `UNIQ_KEY`, in send order (one for a single message).
    pub msg_ids: Vec<String>,
    /// The broker's id for the message (store host + physical offset).
    pub offset_msg_id: String,
    pub queue: MessageQueue,
    /// Offset of the (first) message in its queue.
    pub queue_offset: i64,
    /// The member that stored it.
    pub broker_addr: String,
    /// Attempts made, this one included.
    pub attempts: u32,
    /// An earlier attempt's outcome is unknown: the message may be stored twice.
    pub earlier_attempt_unknown: bool,
}

/// A send that did not succeed.
#[derive(Debug, thiserror::Error)]
#[error("send failed after {attempts} attempt(s){}: {source}", unknown_note(*.earlier_attempt_unknown))]
pub struct SendError {
    /// The last attempt's error.
    pub source: ClientError,
    pub attempts: u32,
    /// An attempt before the last had an unknown outcome.
    pub earlier_attempt_unknown: bool,
}

fn unknown_note(earlier_unknown: bool) -> &'static str {
    if earlier_unknown {
        " (an earlier attempt's outcome is unknown)"
    } else {
        ""
    }
}

impl SendError {
    /// Whether the message may have been stored after all (by the last attempt or an earlier
    /// one). `false` means it certainly was not.
    pub fn is_unknown_outcome(&self) -> bool {
        self.earlier_attempt_unknown || self.source.is_unknown_outcome()
    }

    pub(super) fn before_any_attempt(source: ClientError) -> Self {
        SendError {
            source,
            attempts: 0,
            earlier_attempt_unknown: false,
        }
    }
}

/// The three ways a send ends, as a fault-injection history records them.
#[derive(Debug)]
pub enum SendOutcome {
    Ok(SendResult),
    /// Certainly not stored.
    Failed(SendError),
    /// Perhaps stored.
    Unknown(SendError),
}

impl From<Result<SendResult, SendError>> for SendOutcome {
    fn from(result: Result<SendResult, SendError>) -> Self {
        match result {
            Ok(sent) => SendOutcome::Ok(sent),
            Err(error) if error.is_unknown_outcome() => SendOutcome::Unknown(error),
            Err(error) => SendOutcome::Failed(error),
        }
    }
}

/// The result of a [`Producer::send_async`](super::Producer::send_async), to await.
#[derive(Debug)]
pub struct SendHandle {
    rx: oneshot::Receiver<Result<SendResult, SendError>>,
}

impl SendHandle {
    pub(super) fn new(rx: oneshot::Receiver<Result<SendResult, SendError>>) -> Self {
        SendHandle { rx }
    }
}

impl Future for SendHandle {
    type Output = Result<SendResult, SendError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.rx).poll(cx).map(|result| {
            // The send task ended without an answer (it panicked): it may have sent.
            result.unwrap_or(Err(SendError {
                source: ClientError::Shutdown,
                attempts: 0,
                earlier_attempt_unknown: true,
            }))
        })
    }
}
