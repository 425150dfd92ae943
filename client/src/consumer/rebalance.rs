//! Rebalance: which queues this member holds. At start, every `rebalance_interval` (20 s),
//! when a broker sends NOTIFY_CONSUMER_IDS_CHANGED (`NotifyHandler`), when the client
//! instance reports a changed route, and on request, the member computes its share of every
//! subscribed topic ([`allocate_averagely`] over the group's consumer ids, asked of the
//! brokers), stops the queues it no longer holds (committing their offsets first) and starts
//! the new ones at their committed offset (or per `ConsumeFrom`). A rebalance that could not
//! finish (no route, no consumer list, this member not listed yet) is tried again after
//! [`REBALANCE_RETRY_INTERVAL`], with a heartbeat first.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use raftmq_protocol::RemotingCommand;
use raftmq_protocol::code::{request, response};
use raftmq_remoting::InboundRequestHandler;
use tokio::sync::Notify;

pub use super::allocate::allocate_averagely;
use super::handle::ConsumerInner;
use super::queue_worker::QueueWorker;
use super::subscription::ConsumeFrom;
use crate::error::ClientError;
use crate::message::MessageQueue;
use crate::route::TopicRoute;

/// How often a consumer rebalances without being told to (RocketMQ's 20 s).
pub const DEFAULT_REBALANCE_INTERVAL: Duration = Duration::from_secs(20);

/// How soon a rebalance that could not finish (no route, no leader to ask) is tried again.
pub const REBALANCE_RETRY_INTERVAL: Duration = Duration::from_secs(1);

/// Wakes the rebalance when a broker says the group's members changed.
pub(super) struct NotifyHandler {
    pub(super) group: String,
    pub(super) rebalance_now: Arc<Notify>,
}

impl InboundRequestHandler for NotifyHandler {
    fn on_request(&self, addr: &str, request: RemotingCommand) -> Option<RemotingCommand> {
        match request.code {
            request::NOTIFY_CONSUMER_IDS_CHANGED => {
                let group = request.ext("consumerGroup").unwrap_or_default();
                if group.is_empty() || group == self.group {
                    tracing::debug!(addr, group, "consumer ids changed; rebalancing");
                    self.rebalance_now.notify_one();
                }
                Some(request.new_response(response::SUCCESS, None))
            }
            code => Some(request.new_response(
                response::REQUEST_CODE_NOT_SUPPORTED,
                Some(format!(
                    "request code {code} is not supported by the RaftMQ Rust consumer"
                )),
            )),
        }
    }
}

/// What one rebalance concluded.
#[derive(Debug, Default)]
struct Allocation {
    wanted: BTreeSet<MessageQueue>,
    /// Topics whose share was computed; queues of other topics are kept as they are.
    decided_topics: BTreeSet<String>,
    /// Something is missing (route, consumer list): try again soon.
    incomplete: bool,
}

impl ConsumerInner {
    /// The group's consumer ids, from the first member of the route that answers (leaders
    /// first, in broker-name order, so that every member of the group asks the same broker).
    async fn consumer_ids(&self, route: &TopicRoute) -> Result<Vec<String>, ClientError> {
        let mut candidates: Vec<String> = route
            .leaders()
            .into_iter()
            .map(|(_, addr)| addr.to_owned())
            .collect();
        for addr in route.all_addrs() {
            if !candidates.contains(&addr) {
                candidates.push(addr);
            }
        }
        let mut last = None;
        for addr in candidates {
            match self
                .instance
                .broker()
                .consumer_list(&addr, &self.config.group)
                .await
            {
                Ok(ids) => return Ok(ids),
                Err(error) => last = Some(error),
            }
        }
        Err(last.unwrap_or_else(|| ClientError::NoRoute {
            topic: route.topic.clone(),
            reason: "no broker to ask for the consumer list".to_owned(),
        }))
    }

    async fn allocate(&self) -> Allocation {
        let mut allocation = Allocation::default();
        for subscription in self.config.all_subscriptions() {
            let topic = &subscription.topic;
            let retry = self.config.is_retry_topic(topic);
            let route = match self.instance.routes().route(topic).await {
                Ok(route) => route,
                Err(error) => {
                    // A missing retry topic is normal: the broker has none for this group.
                    if !retry {
                        tracing::debug!(topic, %error, "no route; rebalancing this topic later");
                        allocation.incomplete = true;
                    }
                    continue;
                }
            };
            if self.config.broadcasting.is_some() {
                // Every consumer of the group reads every queue.
                allocation.wanted.extend(route.read_queues.iter().cloned());
                allocation.decided_topics.insert(topic.clone());
                continue;
            }
            let ids = match self.consumer_ids(&route).await {
                Ok(ids) => ids,
                Err(error) => {
                    tracing::debug!(topic, %error, "no consumer list; rebalancing this topic later");
                    allocation.incomplete = true;
                    continue;
                }
            };
            if !ids.iter().any(|id| id == self.instance.client_id()) {
                // The brokers have not seen this member yet: heartbeat, then try again soon.
                tracing::debug!(topic, "this consumer is not listed yet");
                allocation.incomplete = true;
                continue;
            }
            allocation.wanted.extend(allocate_averagely(
                &route.read_queues,
                &ids,
                self.instance.client_id(),
            ));
            allocation.decided_topics.insert(topic.clone());
        }
        allocation
    }

    /// Where `queue` starts: the committed offset, or per `consume_from`.
    async fn initial_offset(
        &self,
        queue: &MessageQueue,
    ) -> Result<(i64, Option<i64>), ClientError> {
        let addr = self.leader_addr(queue).await?;
        let broker = self.instance.broker();
        let committed = match &self.local_offsets {
            Some(local) => local.get(queue),
            None => {
                broker
                    .query_consumer_offset(&addr, &self.config.group, queue)
                    .await?
            }
        }
        .filter(|offset| *offset >= 0);
        if let Some(offset) = committed {
            return Ok((offset, Some(offset)));
        }
        let start = match self.config.consume_from {
            // The retry topic holds only messages to redo: always from its start.
            _ if self.config.is_retry_topic(&queue.topic) => 0,
            ConsumeFrom::First => 0,
            ConsumeFrom::Last => broker.max_offset(&addr, queue).await?,
            ConsumeFrom::Timestamp(timestamp_ms) => {
                broker.search_offset(&addr, queue, timestamp_ms).await?
            }
        };
        Ok((start.max(0), None))
    }

    /// Computes this member's share and starts and stops queues to match. Returns whether
    /// the rebalance is complete (false: try again soon).
    pub(super) async fn rebalance(self: &Arc<Self>) -> bool {
        let mut workers = self.workers.lock().await;
        if self.stop_background.is_cancelled() {
            return true;
        }
        let allocation = self.allocate().await;
        let mut complete = !allocation.incomplete;
        let dropped: Vec<MessageQueue> = workers
            .keys()
            .filter(|queue| {
                allocation.decided_topics.contains(&queue.topic)
                    && !allocation.wanted.contains(*queue)
            })
            .cloned()
            .collect();
        let mut stopping = Vec::new();
        for queue in &dropped {
            if let Some(worker) = workers.remove(queue) {
                worker.stop();
                stopping.push((queue.clone(), worker));
            }
        }
        for (queue, worker) in stopping {
            worker.join(self.config.handler_drain_timeout).await;
            let committed = self
                .offsets
                .commit_and_remove(&queue, |queue, offset| async move {
                    self.commit(&queue, offset).await
                })
                .await;
            tracing::info!(?queue, ?committed, "queue dropped in a rebalance");
        }
        for queue in &allocation.wanted {
            if workers.contains_key(queue) {
                continue;
            }
            match self.initial_offset(queue).await {
                Ok((start, committed)) => {
                    self.offsets.insert(queue.clone(), start, committed);
                    workers.insert(
                        queue.clone(),
                        QueueWorker::start(self, queue.clone(), start),
                    );
                    tracing::info!(?queue, start, "queue taken in a rebalance");
                }
                Err(error) => {
                    tracing::debug!(?queue, %error, "cannot read the queue's offset; taking it later");
                    complete = false;
                }
            }
        }
        *self
            .assigned
            .lock()
            .unwrap_or_else(|poison| poison.into_inner()) = workers.keys().cloned().collect();
        self.rebalances
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        complete
    }
}

/// Rebalances whenever one of the module docs' occasions comes; `retry_soon` when the first
/// rebalance (at start) could not finish.
pub(super) async fn rebalance_loop(inner: Arc<ConsumerInner>, mut retry_soon: bool) {
    loop {
        let wait = if retry_soon {
            REBALANCE_RETRY_INTERVAL
        } else {
            inner.config.rebalance_interval
        };
        let route_changed = tokio::select! {
            biased;
            _ = inner.stop_background.cancelled() => return,
            _ = inner.rebalance_now.notified() => false,
            _ = inner.instance.route_changed() => true,
            _ = tokio::time::sleep(wait) => false,
        };
        if retry_soon || route_changed {
            // This member may not be listed yet, or a changed route names members that have
            // not heard of it: tell the brokers first.
            inner.instance.heartbeat_all().await;
        }
        retry_soon = !tokio::select! {
            biased;
            _ = inner.stop_background.cancelled() => return,
            complete = inner.rebalance() => complete,
        };
    }
}
