//! [`Consumer`]: the handle callers hold (assigned queues, offsets, commit now, shutdown),
//! and [`ConsumerInner`], the state every part of the consumer shares: where a queue's
//! requests go, the queues held, the tasks and their stop signals.

use std::collections::BTreeMap;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;
use tokio_util::sync::{CancellationToken, DropGuard};
use tokio_util::task::TaskTracker;

use super::builder::{ConsumerBuilder, ConsumerConfig};
use super::delivery::BoxedHandler;
use super::local_offsets::LocalOffsets;
use super::offset_store::{OffsetStore, QueueOffset};
use super::queue_worker::QueueWorker;
use crate::error::ClientError;
use crate::instance::ClientInstance;
use crate::message::MessageQueue;

/// A running consumer. Cheap to clone; call [`Consumer::shutdown`] to stop it cleanly (commit
/// and leave the group). Dropping every handle without it stops the tasks but commits nothing.
#[derive(Clone)]
pub struct Consumer {
    pub(super) inner: Arc<ConsumerInner>,
    pub(super) _stop_on_drop: Arc<DropGuard>,
}

impl std::fmt::Debug for Consumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Consumer")
            .field("group", &self.inner.config.group)
            .field("client_id", &self.inner.instance.client_id())
            .finish_non_exhaustive()
    }
}

/// What every handle and task of one consumer shares.
pub(crate) struct ConsumerInner {
    pub(super) config: ConsumerConfig,
    /// Connections, routes, heartbeats.
    pub(super) instance: Arc<ClientInstance>,
    pub(super) handler: BoxedHandler,
    pub(super) offsets: OffsetStore,
    /// A broadcasting consumer's own offsets (clustering consumers commit to the brokers).
    pub(super) local_offsets: Option<LocalOffsets>,
    /// The queues held, each with its tasks; locked for a whole rebalance.
    pub(super) workers: tokio::sync::Mutex<BTreeMap<MessageQueue, QueueWorker>>,
    /// A copy of the held queues for synchronous readers.
    pub(super) assigned: Mutex<Vec<MessageQueue>>,
    pub(super) rebalance_now: Arc<Notify>,
    pub(super) rebalances: AtomicU64,
    /// Stops the rebalance and commit tasks (and, through a child, the client instance's).
    pub(super) stop_background: CancellationToken,
    pub(super) stop_queues: CancellationToken,
    /// Abandons handlers still running when stopping has waited long enough.
    pub(super) abandon_handlers: CancellationToken,
    pub(super) background: TaskTracker,
    pub(super) queue_tasks: TaskTracker,
    pub(super) shutdown_done: tokio::sync::Mutex<bool>,
}

impl ConsumerInner {
    /// Asks the leader of each SQL92 subscription's topic whether it can use the expression
    /// (CHECK_CLIENT_CONFIG); its refusal, with the reason, is the error. A topic without a
    /// route yet is not checked (its first pull is).
    pub(super) async fn check_sql92_subscriptions(&self) -> Result<(), ClientError> {
        for subscription in &self.config.subscriptions {
            if !subscription.is_sql92() {
                continue;
            }
            let Ok(route) = self.instance.routes().route(&subscription.topic).await else {
                continue;
            };
            let Some((_, addr)) = route.leaders().into_iter().next() else {
                continue;
            };
            self.instance
                .broker()
                .check_client_config(
                    addr,
                    self.instance.client_id(),
                    &self.config.group,
                    &subscription.data(0),
                )
                .await?;
        }
        Ok(())
    }
}

impl ConsumerInner {
    /// The member to pull `queue` from, per the current route.
    pub(super) async fn read_addr(&self, queue: &MessageQueue) -> Option<String> {
        let route = self.instance.routes().route(&queue.topic).await.ok()?;
        route
            .read_addr(queue, self.config.read_from)
            .map(str::to_owned)
    }

    /// The leader of `queue`'s group, where offsets and sent-back messages go.
    pub(super) async fn leader_addr(&self, queue: &MessageQueue) -> Result<String, ClientError> {
        let route = self.instance.routes().route(&queue.topic).await?;
        route
            .leader_addr(&queue.broker_name)
            .map(str::to_owned)
            .ok_or_else(|| ClientError::NoLeader {
                topic: queue.topic.clone(),
                broker_name: Some(queue.broker_name.clone()),
            })
    }
}

impl Consumer {
    pub fn builder() -> ConsumerBuilder {
        ConsumerBuilder::default()
    }

    pub fn client_id(&self) -> &str {
        self.inner.instance.client_id()
    }

    pub fn group(&self) -> &str {
        &self.inner.config.group
    }

    /// The queues this member holds now.
    pub fn assigned_queues(&self) -> Vec<MessageQueue> {
        self.inner
            .assigned
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
            .clone()
    }

    /// Processed and committed offsets of the queues held now.
    pub fn offsets(&self) -> BTreeMap<MessageQueue, QueueOffset> {
        self.inner.offsets.snapshot()
    }

    /// Rebalances finished so far (for tests waiting on one).
    pub fn rebalance_count(&self) -> u64 {
        self.inner
            .rebalances
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Asks for a rebalance now (it runs in the background).
    pub fn request_rebalance(&self) {
        self.inner.rebalance_now.notify_one();
    }

    /// Commits every changed offset now; returns how many commits were taken.
    pub async fn commit_now(&self) -> usize {
        self.inner.commit_changed().await
    }

    /// Stops rebalancing and pulling, lets handlers in progress finish (up to the handler
    /// drain timeout, [`HANDLER_DRAIN_TIMEOUT`](super::HANDLER_DRAIN_TIMEOUT) by default),
    /// commits every offset, unregisters from the brokers (which tell the other members to
    /// rebalance) and closes the connections. Calling it again does nothing.
    pub async fn shutdown(&self) {
        let mut done = self.inner.shutdown_done.lock().await;
        if *done {
            return;
        }
        let inner = &self.inner;
        inner.stop_background.cancel();
        inner.background.close();
        inner.background.wait().await;
        inner.instance.stop().await;
        let workers = std::mem::take(&mut *inner.workers.lock().await);
        inner.stop_queues.cancel();
        for worker in workers.into_values() {
            worker.join(inner.config.handler_drain_timeout).await;
        }
        // Queue tasks whose worker a cancelled rebalance dropped are still tracked here.
        inner.queue_tasks.close();
        if tokio::time::timeout(inner.config.handler_drain_timeout, inner.queue_tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!("message handlers did not finish in time; abandoning them");
            inner.abandon_handlers.cancel();
            inner.queue_tasks.wait().await;
        }
        let committed = self.commit_now().await;
        tracing::debug!(committed, "final offset commit");
        inner
            .assigned
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
            .clear();
        inner.instance.close().await;
        *done = true;
    }
}
