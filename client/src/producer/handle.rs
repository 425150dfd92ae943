//! [`Producer`]: the handle callers hold, and the state behind it. Its methods are the send
//! API (one message, to a named queue, a batch, a bounded window of async sends) and
//! shutdown; each send is prepared once (`outgoing.rs`) and run by the send loop
//! (`send.rs`).

use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore, oneshot};
use tokio_util::sync::{CancellationToken, DropGuard};
use tokio_util::task::TaskTracker;

use super::builder::ProducerBuilder;
use super::fault::FaultTracker;
use super::outcome::{SendError, SendHandle, SendResult};
use super::outgoing::{Outgoing, Target, prepare_batch, prepare_single};
use super::send::SendSettings;
use crate::error::ClientError;
use crate::instance::ClientInstance;
use crate::message::{Message, MessageQueue};
use crate::route::{RouteCache, TopicRoute};

/// A RocketMQ-style producer. Cheap to clone; call [`Producer::shutdown`] when done (it waits
/// for async sends in flight). Dropping every handle without it stops the background tasks.
#[derive(Clone)]
pub struct Producer {
    pub(super) inner: Arc<ProducerInner>,
    pub(super) _stop_on_drop: Arc<DropGuard>,
}

impl std::fmt::Debug for Producer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Producer")
            .field("group", &self.inner.settings.group)
            .field("client_id", &self.inner.instance.client_id())
            .finish_non_exhaustive()
    }
}

/// What every handle of one producer shares.
pub(super) struct ProducerInner {
    /// Connections, routes, heartbeats.
    pub(super) instance: Arc<ClientInstance>,
    pub(super) settings: SendSettings,
    pub(super) faults: FaultTracker,
    /// Permits for [`Producer::send_async`] sends in flight.
    pub(super) window: Arc<Semaphore>,
    pub(super) window_size: usize,
    /// Set at shutdown: no new sends.
    pub(super) closing: CancellationToken,
    /// Set once sends in flight have finished: background work and backoffs stop.
    pub(super) stop_background: CancellationToken,
    pub(super) send_tasks: TaskTracker,
    /// Members this producer has heartbeated to since it started sending transactions there.
    pub(super) announced: std::sync::Mutex<std::collections::BTreeSet<String>>,
    pub(super) shutdown_done: tokio::sync::Mutex<bool>,
}

impl Producer {
    pub fn builder() -> ProducerBuilder {
        ProducerBuilder::default()
    }

    pub fn client_id(&self) -> &str {
        self.inner.instance.client_id()
    }

    pub fn group(&self) -> &str {
        &self.inner.settings.group
    }

    /// The route cache (for tools and tests: which queues a topic has, who leads).
    pub fn routes(&self) -> &RouteCache {
        self.inner.instance.routes()
    }

    /// The route a send of `topic` would use (fetched if not cached; TBW102's if the topic
    /// does not exist yet).
    pub async fn route(&self, topic: &str) -> Result<Arc<TopicRoute>, ClientError> {
        self.inner.instance.routes().route(topic).await
    }

    /// Sends one message and waits until it is stored, retrying as the module docs say. A
    /// message with a sharding key goes to its key's queue (and retries there).
    pub async fn send(&self, message: Message) -> Result<SendResult, SendError> {
        let target = match &message.sharding_key {
            Some(key) => Target::Key(key.clone()),
            None => Target::RoundRobin,
        };
        let outgoing = prepare_single(message, target).map_err(SendError::before_any_attempt)?;
        self.send_now(outgoing).await
    }

    async fn send_now(&self, outgoing: Outgoing) -> Result<SendResult, SendError> {
        if self.inner.closing.is_cancelled() {
            return Err(SendError::before_any_attempt(ClientError::Shutdown));
        }
        self.inner.send(outgoing).await
    }

    /// Sends one message to `queue` (retries stay on it).
    pub async fn send_to_queue(
        &self,
        message: Message,
        queue: MessageQueue,
    ) -> Result<SendResult, SendError> {
        if queue.topic != message.topic {
            return Err(SendError::before_any_attempt(ClientError::InvalidMessage(
                format!(
                    "the queue belongs to topic {}, the message to {}",
                    queue.topic, message.topic
                ),
            )));
        }
        let outgoing =
            prepare_single(message, Target::Queue(queue)).map_err(SendError::before_any_attempt)?;
        self.send_now(outgoing).await
    }

    /// Sends messages of one topic as one batch to one queue (SEND_BATCH_MESSAGE): stored
    /// together, at consecutive offsets, or not at all. At most
    /// [`MAX_MESSAGE_BYTES`](crate::message::MAX_MESSAGE_BYTES) encoded and
    /// [`MAX_BATCH_MESSAGES`](super::MAX_BATCH_MESSAGES) messages. The first message's sharding
    /// key, if any, picks the queue.
    pub async fn send_batch(&self, messages: Vec<Message>) -> Result<SendResult, SendError> {
        let outgoing = prepare_batch(messages).map_err(SendError::before_any_attempt)?;
        self.send_now(outgoing).await
    }

    /// [`send_batch`](Self::send_batch) to one given queue (retries stay on it), e.g. to keep a
    /// queue's order across batches sent one after another.
    pub async fn send_batch_to_queue(
        &self,
        messages: Vec<Message>,
        queue: MessageQueue,
    ) -> Result<SendResult, SendError> {
        let mut outgoing = prepare_batch(messages).map_err(SendError::before_any_attempt)?;
        if queue.topic != outgoing.topic {
            return Err(SendError::before_any_attempt(ClientError::InvalidMessage(
                format!(
                    "the queue belongs to topic {}, the batch to {}",
                    queue.topic, outgoing.topic
                ),
            )));
        }
        outgoing.target = Target::Queue(queue);
        self.send_now(outgoing).await
    }

    /// Starts sending `message` in the background and returns a handle to await its result.
    /// Waits while the window (`async_window` sends) is full. Sends of one producer to one
    /// queue may be stored in another order than they were started.
    pub async fn send_async(&self, message: Message) -> Result<SendHandle, ClientError> {
        let target = match &message.sharding_key {
            Some(key) => Target::Key(key.clone()),
            None => Target::RoundRobin,
        };
        let outgoing = prepare_single(message, target)?;
        let permit = tokio::select! {
            biased;
            _ = self.inner.closing.cancelled() => return Err(ClientError::Shutdown),
            permit = self.inner.window.clone().acquire_owned() => {
                permit.map_err(|_| ClientError::Shutdown)?
            }
        };
        Ok(self.inner.clone().spawn_send(outgoing, permit))
    }

    /// Sends started with [`Producer::send_async`] and not finished.
    pub fn in_flight(&self) -> usize {
        self.inner.window_size - self.inner.window.available_permits()
    }

    /// Refuses new sends, waits for the sends in flight, stops the background tasks,
    /// unregisters from the brokers and closes the connections. Calling it again does nothing.
    pub async fn shutdown(&self) {
        let mut done = self.inner.shutdown_done.lock().await;
        if *done {
            return;
        }
        let inner = &self.inner;
        inner.closing.cancel();
        inner.send_tasks.close();
        inner.send_tasks.wait().await;
        inner.stop_background.cancel();
        inner.instance.stop().await;
        inner.instance.close().await;
        *done = true;
    }
}

impl ProducerInner {
    /// Heartbeats to every member of `topic`'s route that has not heard from this producer
    /// yet (a broker checks pending transactions with the producers that heartbeat to it).
    /// Best effort: the periodic heartbeat follows anyway.
    pub(super) async fn announce_to(&self, topic: &str) {
        let Ok(route) = self.instance.routes().route(topic).await else {
            return;
        };
        let unannounced = {
            let announced = self
                .announced
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            route
                .all_addrs()
                .into_iter()
                .any(|addr| !announced.contains(&addr))
        };
        if unannounced {
            self.instance.heartbeat_all().await;
            let mut announced = self
                .announced
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            announced.extend(route.all_addrs());
        }
    }

    fn spawn_send(self: Arc<Self>, outgoing: Outgoing, permit: OwnedSemaphorePermit) -> SendHandle {
        let (tx, rx) = oneshot::channel();
        let inner = self.clone();
        self.send_tasks.spawn(async move {
            let result = inner.send(outgoing).await;
            drop(permit);
            // The caller may have dropped the handle: nobody to tell.
            let _ = tx.send(result);
        });
        SendHandle::new(rx)
    }
}
