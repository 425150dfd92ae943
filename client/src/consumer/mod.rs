//! The push-style consumer, clustering mode: [`Consumer::builder`] ... `.start(handler)`.
//!
//! - Membership: HEART_BEAT to every member of every subscribed topic's groups at start and
//!   every 30 s; UNREGISTER_CLIENT at shutdown.
//! - Rebalance ([`rebalance`]): at start, every 20 s, when a broker sends
//!   NOTIFY_CONSUMER_IDS_CHANGED, and when a route changes. Each member takes its average
//!   share of each topic's sorted queues among the group's sorted consumer ids.
//! - Per assigned queue (`pull.rs`): long-polling pulls (15 s) from the leader (or a follower
//!   with [`ReadFrom::Follower`]) and a processor that hands the handler one batch at a time,
//!   in queue order. A queue starts at its committed offset (QUERY_CONSUMER_OFFSET), or per
//!   [`ConsumeFrom`] when the group has none.
//! - Offsets ([`OffsetStore`], `offset_store.rs`): committed (UPDATE_CONSUMER_OFFSET, to the leader) every 5 s,
//!   when a queue is dropped in a rebalance, and at shutdown.
//! - A handler answering [`ConsumeStatus::RetryLater`] gets the same batch again after a
//!   backoff, before anything later in that queue (order is kept); after
//!   `max_reconsume_times` failures the batch goes to the group's dead-letter topic
//!   (CONSUMER_SEND_MSG_BACK with delay level -1) and consumption moves on.
//! - The group's `%RETRY%<group>` topic is consumed too when it has a route (messages other
//!   RocketMQ clients of the group sent back), with the original topic restored on delivery.
//!
//! Delivery is at least once: a handler may see a message again after a rebalance hands its
//! queue to another member before the old owner's commit, or after a crash.

mod offset_store;
mod pull;
pub mod rebalance;

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use raftmq_protocol::RemotingCommand;
use raftmq_protocol::body::{ConsumerData, HeartbeatData, SubscriptionData};
use raftmq_protocol::code::{request, response};
use raftmq_protocol::names::java_string_hash;
use tokio::sync::{Notify, mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use offset_store::{DEFAULT_COMMIT_INTERVAL, OffsetStore, QueueOffset, commit_loop};
pub use pull::{MAX_PENDING_BATCHES_PER_QUEUE, MAX_PULL_BACKOFF, PULL_ERROR_BACKOFF};
pub use rebalance::{DEFAULT_REBALANCE_INTERVAL, REBALANCE_RETRY_INTERVAL, allocate_averagely};

use crate::broker_client::{
    BrokerClient, DEFAULT_PULL_BATCH, DEFAULT_RPC_TIMEOUT, LONG_POLL_SUSPEND, MAX_PULL_BATCH,
};
use crate::client_id::new_client_id;
use crate::error::ClientError;
use crate::message::{MessageQueue, ReceivedMessage, validate_topic};
use crate::namesrv::{NameServerClient, namesrv_list_or_env};
use crate::route::{ROUTE_REFRESH_INTERVAL, ReadFrom, RouteCache, TopicRoute};
use pull::QueueWorker;
use raftmq_protocol::names::{now_ms, retry_topic};
use raftmq_remoting::{InboundRequestHandler, RpcClient, RpcClientConfig};

/// Most messages handed to the handler at once.
pub const DEFAULT_CONSUME_BATCH_SIZE: usize = 32;

/// The largest consume batch allowed.
pub const MAX_CONSUME_BATCH_SIZE: usize = 1024;

/// How often a consumer heartbeats (RocketMQ's 30 s).
pub const DEFAULT_HEARTBEAT_INTERVAL: Duration = Duration::from_secs(30);

/// Failed deliveries of one batch before it goes to the dead-letter topic (RocketMQ's 16).
pub const DEFAULT_MAX_RECONSUME_TIMES: i32 = 16;

/// Pause before a batch the handler could not process is delivered again.
pub const DEFAULT_RECONSUME_BACKOFF: Duration = Duration::from_secs(1);

/// How long stopping a queue waits for a handler in progress before abandoning it.
pub const HANDLER_DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// Subscriptions one consumer may hold.
pub const MAX_SUBSCRIPTIONS: usize = 256;

/// Deliveries waiting in the channel of [`ConsumerBuilder::start_with_channel`] by default.
pub const DEFAULT_DELIVERY_CHANNEL_CAPACITY: usize = 16;

/// Where a queue starts when the group has no committed offset for it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ConsumeFrom {
    /// The queue's first message (offset 0).
    #[default]
    First,
    /// After the queue's last message at the time the queue is taken.
    Last,
    /// The first message stored at or after this time (ms since the epoch).
    Timestamp(i64),
}

impl ConsumeFrom {
    fn wire_name(self) -> &'static str {
        match self {
            ConsumeFrom::First => "CONSUME_FROM_FIRST_OFFSET",
            ConsumeFrom::Last => "CONSUME_FROM_LAST_OFFSET",
            ConsumeFrom::Timestamp(_) => "CONSUME_FROM_TIMESTAMP",
        }
    }
}

/// What a handler says about a batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConsumeStatus {
    /// Processed: the queue's offset moves past the batch.
    Success,
    /// Not processed: deliver the batch again later (before later messages of its queue).
    RetryLater,
}

/// A topic and its tag filter (`*`, or `TagA || TagB`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Subscription {
    pub topic: String,
    pub expression: String,
    /// `None`: every tag.
    tags: Option<BTreeSet<String>>,
}

impl Subscription {
    pub fn new(topic: &str, expression: &str) -> Result<Self, ClientError> {
        validate_topic(topic)?;
        let trimmed = expression.trim();
        let tags = if trimmed.is_empty() || trimmed == "*" {
            None
        } else {
            let tags: BTreeSet<String> = trimmed
                .split("||")
                .map(str::trim)
                .filter(|tag| !tag.is_empty())
                .map(str::to_owned)
                .collect();
            if tags.is_empty() {
                return Err(ClientError::Config(format!(
                    "subscription expression {expression:?} names no tag"
                )));
            }
            Some(tags)
        };
        Ok(Subscription {
            topic: topic.to_owned(),
            expression: if tags.is_none() {
                "*".to_owned()
            } else {
                trimmed.to_owned()
            },
            tags,
        })
    }

    /// Whether a message with `tags` passes the filter.
    pub fn matches(&self, tags: Option<&str>) -> bool {
        match (&self.tags, tags) {
            (None, _) => true,
            (Some(wanted), Some(tag)) => wanted.contains(tag),
            (Some(_), None) => false,
        }
    }

    fn data(&self, sub_version: i64) -> SubscriptionData {
        let tags_set = self.tags.clone().unwrap_or_default();
        SubscriptionData {
            class_filter_mode: false,
            topic: self.topic.clone(),
            sub_string: self.expression.clone(),
            code_set: tags_set.iter().map(|tag| java_string_hash(tag)).collect(),
            tags_set,
            sub_version,
            expression_type: "TAG".to_owned(),
        }
    }
}

type BoxedHandler = Arc<
    dyn Fn(Vec<ReceivedMessage>) -> Pin<Box<dyn Future<Output = ConsumeStatus> + Send>>
        + Send
        + Sync,
>;

/// A batch delivered through [`ConsumerBuilder::start_with_channel`]. Answer with
/// [`Delivery::ack`] or [`Delivery::retry_later`]; dropping it unanswered means retry later.
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

/// Everything a running consumer was configured with.
#[derive(Clone, Debug)]
pub(crate) struct ConsumerConfig {
    pub(crate) group: String,
    pub(crate) subscriptions: Vec<Subscription>,
    pub(crate) consume_from: ConsumeFrom,
    pub(crate) read_from: ReadFrom,
    pub(crate) pull_batch_size: i32,
    pub(crate) consume_batch_size: usize,
    pub(crate) long_poll: Duration,
    pub(crate) rebalance_interval: Duration,
    pub(crate) commit_interval: Duration,
    pub(crate) heartbeat_interval: Duration,
    pub(crate) route_refresh_interval: Duration,
    pub(crate) max_reconsume_times: i32,
    pub(crate) reconsume_backoff: Duration,
    pub(crate) consume_retry_topic: bool,
    pub(crate) handler_drain_timeout: Duration,
}

/// Configures and starts a [`Consumer`].
#[derive(Clone, Debug)]
pub struct ConsumerBuilder {
    namesrv: Option<String>,
    group: String,
    subscriptions: Vec<(String, String)>,
    consume_from: ConsumeFrom,
    read_from: ReadFrom,
    client_id: Option<String>,
    pull_batch_size: i32,
    consume_batch_size: usize,
    long_poll: Duration,
    rebalance_interval: Duration,
    commit_interval: Duration,
    heartbeat_interval: Duration,
    route_refresh_interval: Duration,
    rpc_timeout: Duration,
    max_reconsume_times: i32,
    reconsume_backoff: Duration,
    consume_retry_topic: bool,
    handler_drain_timeout: Duration,
}

impl Default for ConsumerBuilder {
    fn default() -> Self {
        ConsumerBuilder {
            namesrv: None,
            group: String::new(),
            subscriptions: Vec::new(),
            consume_from: ConsumeFrom::First,
            read_from: ReadFrom::Leader,
            client_id: None,
            pull_batch_size: DEFAULT_PULL_BATCH,
            consume_batch_size: DEFAULT_CONSUME_BATCH_SIZE,
            long_poll: LONG_POLL_SUSPEND,
            rebalance_interval: DEFAULT_REBALANCE_INTERVAL,
            commit_interval: DEFAULT_COMMIT_INTERVAL,
            heartbeat_interval: DEFAULT_HEARTBEAT_INTERVAL,
            route_refresh_interval: ROUTE_REFRESH_INTERVAL,
            rpc_timeout: DEFAULT_RPC_TIMEOUT,
            max_reconsume_times: DEFAULT_MAX_RECONSUME_TIMES,
            reconsume_backoff: DEFAULT_RECONSUME_BACKOFF,
            consume_retry_topic: true,
            handler_drain_timeout: HANDLER_DRAIN_TIMEOUT,
        }
    }
}

impl ConsumerBuilder {
    /// NameServers, `host:port[;host:port]`; without it, `NAMESRV_ADDR` is read.
    pub fn namesrv(mut self, list: impl Into<String>) -> Self {
        self.namesrv = Some(list.into());
        self
    }

    /// The consumer group (required).
    pub fn group(mut self, group: impl Into<String>) -> Self {
        self.group = group.into();
        self
    }

    /// Consumes `topic`, messages whose tag matches `expression` (`*`, or `a || b`).
    pub fn subscribe(mut self, topic: impl Into<String>, expression: impl Into<String>) -> Self {
        self.subscriptions.push((topic.into(), expression.into()));
        self
    }

    /// Where queues without a committed offset start (default [`ConsumeFrom::First`]).
    pub fn consume_from(mut self, from: ConsumeFrom) -> Self {
        self.consume_from = from;
        self
    }

    /// Which member pulls go to (default the leader).
    pub fn read_from(mut self, read_from: ReadFrom) -> Self {
        self.read_from = read_from;
        self
    }

    /// The id brokers know this client by (default `ip@pid#n`). Ids order the allocation.
    pub fn client_id(mut self, client_id: impl Into<String>) -> Self {
        self.client_id = Some(client_id.into());
        self
    }

    /// Messages one pull asks for (default 32, at most 1024).
    pub fn pull_batch_size(mut self, size: i32) -> Self {
        self.pull_batch_size = size;
        self
    }

    /// Most messages per handler call (default 32).
    pub fn consume_batch_size(mut self, size: usize) -> Self {
        self.consume_batch_size = size;
        self
    }

    /// How long a broker may hold a pull (default 15 s).
    pub fn long_poll(mut self, suspend: Duration) -> Self {
        self.long_poll = suspend;
        self
    }

    /// Rebalance period (default 20 s; rebalances also happen when told to).
    pub fn rebalance_interval(mut self, interval: Duration) -> Self {
        self.rebalance_interval = interval;
        self
    }

    /// Offset commit period (default 5 s).
    pub fn commit_interval(mut self, interval: Duration) -> Self {
        self.commit_interval = interval;
        self
    }

    /// Heartbeat period (default 30 s).
    pub fn heartbeat_interval(mut self, interval: Duration) -> Self {
        self.heartbeat_interval = interval;
        self
    }

    /// Route refresh period (default 30 s).
    pub fn route_refresh_interval(mut self, interval: Duration) -> Self {
        self.route_refresh_interval = interval;
        self
    }

    /// Deadline of requests other than pulls (default 3 s).
    pub fn rpc_timeout(mut self, timeout: Duration) -> Self {
        self.rpc_timeout = timeout;
        self
    }

    /// Failed deliveries of a batch before it goes to the dead-letter topic (default 16).
    pub fn max_reconsume_times(mut self, times: i32) -> Self {
        self.max_reconsume_times = times;
        self
    }

    /// Pause before redelivering a batch the handler did not process (default 1 s).
    pub fn reconsume_backoff(mut self, backoff: Duration) -> Self {
        self.reconsume_backoff = backoff;
        self
    }

    /// Whether `%RETRY%<group>` is consumed too when it exists (default true).
    pub fn consume_retry_topic(mut self, consume: bool) -> Self {
        self.consume_retry_topic = consume;
        self
    }

    /// How long stopping a queue (rebalance, shutdown) waits for a handler in progress before
    /// abandoning it (default 10 s). An abandoned batch is not marked consumed.
    pub fn handler_drain_timeout(mut self, timeout: Duration) -> Self {
        self.handler_drain_timeout = timeout;
        self
    }

    /// Starts the consumer with an async handler called once per batch, one batch at a time
    /// per queue: `|messages| async move { ...; ConsumeStatus::Success }`.
    pub async fn start<F, Fut>(self, handler: F) -> Result<Consumer, ClientError>
    where
        F: Fn(Vec<ReceivedMessage>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ConsumeStatus> + Send + 'static,
    {
        let handler: BoxedHandler = Arc::new(move |messages| Box::pin(handler(messages)));
        self.start_boxed(handler).await
    }

    /// Starts the consumer and returns a channel of [`Delivery`]s (`capacity` of them may
    /// wait). Each queue waits for its delivery's answer before the next one.
    pub async fn start_with_channel(
        self,
        capacity: usize,
    ) -> Result<(Consumer, mpsc::Receiver<Delivery>), ClientError> {
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
        let consumer = self.start_boxed(handler).await?;
        Ok((consumer, rx))
    }

    fn config(&self) -> Result<ConsumerConfig, ClientError> {
        if self.group.is_empty() {
            return Err(ClientError::Config(
                "the consumer group is empty".to_owned(),
            ));
        }
        validate_topic(&self.group).map_err(|_| {
            ClientError::Config(format!("bad consumer group name {:?}", self.group))
        })?;
        if self.subscriptions.is_empty() {
            return Err(ClientError::Config("no subscription".to_owned()));
        }
        if self.subscriptions.len() > MAX_SUBSCRIPTIONS {
            return Err(ClientError::Config(format!(
                "more than {MAX_SUBSCRIPTIONS} subscriptions"
            )));
        }
        let mut subscriptions = Vec::new();
        let mut topics = BTreeSet::new();
        for (topic, expression) in &self.subscriptions {
            if !topics.insert(topic.clone()) {
                return Err(ClientError::Config(format!(
                    "topic {topic} subscribed twice"
                )));
            }
            subscriptions.push(Subscription::new(topic, expression)?);
        }
        if !(1..=MAX_PULL_BATCH).contains(&self.pull_batch_size) {
            return Err(ClientError::Config(format!(
                "pull batch size {} is outside 1..={MAX_PULL_BATCH}",
                self.pull_batch_size
            )));
        }
        if !(1..=MAX_CONSUME_BATCH_SIZE).contains(&self.consume_batch_size) {
            return Err(ClientError::Config(format!(
                "consume batch size {} is outside 1..={MAX_CONSUME_BATCH_SIZE}",
                self.consume_batch_size
            )));
        }
        let periods = [
            self.rebalance_interval,
            self.commit_interval,
            self.heartbeat_interval,
            self.route_refresh_interval,
            self.rpc_timeout,
        ];
        if periods.iter().any(Duration::is_zero) {
            return Err(ClientError::Config(
                "intervals and timeouts must be positive".to_owned(),
            ));
        }
        if self.max_reconsume_times < 0 {
            return Err(ClientError::Config(
                "max reconsume times must not be negative".to_owned(),
            ));
        }
        Ok(ConsumerConfig {
            group: self.group.clone(),
            subscriptions,
            consume_from: self.consume_from,
            read_from: self.read_from,
            pull_batch_size: self.pull_batch_size,
            consume_batch_size: self.consume_batch_size,
            long_poll: self.long_poll.min(LONG_POLL_SUSPEND),
            rebalance_interval: self.rebalance_interval,
            commit_interval: self.commit_interval,
            heartbeat_interval: self.heartbeat_interval,
            route_refresh_interval: self.route_refresh_interval,
            max_reconsume_times: self.max_reconsume_times,
            reconsume_backoff: self.reconsume_backoff,
            consume_retry_topic: self.consume_retry_topic,
            handler_drain_timeout: self.handler_drain_timeout,
        })
    }

    async fn start_boxed(self, handler: BoxedHandler) -> Result<Consumer, ClientError> {
        let config = self.config()?;
        let addrs = namesrv_list_or_env(self.namesrv.as_deref())?;
        let client_id = self
            .client_id
            .clone()
            .unwrap_or_else(|| new_client_id(&addrs[0]));
        let rebalance_now = Arc::new(Notify::new());
        let rpc = RpcClient::with_inbound_handler(
            RpcClientConfig::default(),
            Arc::new(NotifyHandler {
                group: config.group.clone(),
                rebalance_now: rebalance_now.clone(),
            }),
        );
        let namesrv = NameServerClient::new(rpc.clone(), addrs)?.with_timeout(self.rpc_timeout);
        // Cancelled when the last handle is dropped without a shutdown: everything stops.
        let alive = CancellationToken::new();
        let inner = Arc::new(ConsumerInner {
            client_id,
            rpc: rpc.clone(),
            broker: BrokerClient::new(rpc).with_timeout(self.rpc_timeout),
            routes: RouteCache::new(namesrv),
            handler,
            offsets: OffsetStore::default(),
            workers: tokio::sync::Mutex::new(BTreeMap::new()),
            assigned: Mutex::new(Vec::new()),
            rebalance_now,
            rebalances: std::sync::atomic::AtomicU64::new(0),
            sub_version: now_ms(),
            stop_background: alive.child_token(),
            stop_queues: alive.child_token(),
            abandon_handlers: alive.child_token(),
            background: TaskTracker::new(),
            queue_tasks: TaskTracker::new(),
            shutdown_done: tokio::sync::Mutex::new(false),
            config,
        });
        // Known to the brokers first, so that the first rebalance finds this member listed.
        for subscription in inner.all_subscriptions() {
            let _ = inner.routes.route(&subscription.topic).await;
        }
        inner.heartbeat_all().await;
        let complete = inner.rebalance().await;
        inner
            .background
            .spawn(rebalance_loop(inner.clone(), !complete));
        inner.background.spawn(heartbeat_loop(inner.clone()));
        inner.background.spawn(route_loop(inner.clone()));
        let committer = inner.clone();
        inner.background.spawn(async move {
            let inner = committer.clone();
            commit_loop(
                &committer.offsets,
                committer.config.commit_interval,
                &committer.stop_background,
                |queue, offset| {
                    let inner = inner.clone();
                    async move { inner.commit(&queue, offset).await }
                },
            )
            .await;
        });
        Ok(Consumer {
            inner,
            _stop_on_drop: Arc::new(alive.drop_guard()),
        })
    }
}

/// Wakes the rebalance when a broker says the group's members changed.
struct NotifyHandler {
    group: String,
    rebalance_now: Arc<Notify>,
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

pub(crate) struct ConsumerInner {
    pub(crate) config: ConsumerConfig,
    client_id: String,
    rpc: RpcClient,
    pub(crate) broker: BrokerClient,
    pub(crate) routes: RouteCache,
    pub(crate) handler: BoxedHandler,
    pub(crate) offsets: OffsetStore,
    /// The queues held, each with its tasks; locked for a whole rebalance.
    workers: tokio::sync::Mutex<BTreeMap<MessageQueue, QueueWorker>>,
    /// A copy of the held queues for synchronous readers.
    assigned: Mutex<Vec<MessageQueue>>,
    rebalance_now: Arc<Notify>,
    rebalances: std::sync::atomic::AtomicU64,
    sub_version: i64,
    stop_background: CancellationToken,
    pub(crate) stop_queues: CancellationToken,
    /// Abandons handlers still running when stopping has waited long enough.
    pub(crate) abandon_handlers: CancellationToken,
    background: TaskTracker,
    pub(crate) queue_tasks: TaskTracker,
    shutdown_done: tokio::sync::Mutex<bool>,
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
    /// The subscriptions, plus the retry topic when it is consumed.
    fn all_subscriptions(&self) -> Vec<Subscription> {
        let mut all = self.config.subscriptions.clone();
        if self.config.consume_retry_topic {
            let retry = retry_topic(&self.config.group);
            if !all.iter().any(|subscription| subscription.topic == retry)
                && let Ok(subscription) = Subscription::new(&retry, "*")
            {
                all.push(subscription);
            }
        }
        all
    }

    fn is_retry_topic(&self, topic: &str) -> bool {
        topic == retry_topic(&self.config.group)
    }

    pub(crate) fn subscription_for(&self, topic: &str) -> Subscription {
        self.all_subscriptions()
            .into_iter()
            .find(|subscription| subscription.topic == topic)
            .unwrap_or_else(|| Subscription {
                topic: topic.to_owned(),
                expression: "*".to_owned(),
                tags: None,
            })
    }

    /// The member to pull `queue` from, per the current route.
    pub(crate) async fn read_addr(&self, queue: &MessageQueue) -> Option<String> {
        let route = self.routes.route(&queue.topic).await.ok()?;
        route
            .read_addr(queue, self.config.read_from)
            .map(str::to_owned)
    }

    async fn leader_addr(&self, queue: &MessageQueue) -> Result<String, ClientError> {
        let route = self.routes.route(&queue.topic).await?;
        route
            .leader_addr(&queue.broker_name)
            .map(str::to_owned)
            .ok_or_else(|| ClientError::NoLeader {
                topic: queue.topic.clone(),
                broker_name: Some(queue.broker_name.clone()),
            })
    }

    /// Commits one queue's offset to its group's leader; true when taken.
    pub(crate) async fn commit(&self, queue: &MessageQueue, offset: i64) -> bool {
        let result = async {
            let addr = self.leader_addr(queue).await?;
            self.broker
                .update_consumer_offset(&addr, &self.config.group, queue, offset)
                .await
        }
        .await;
        match result {
            Ok(()) => true,
            Err(error) => {
                tracing::debug!(?queue, offset, %error, "offset commit failed");
                if error.needs_route_refresh() {
                    let _ = self.routes.refresh(&queue.topic).await;
                }
                false
            }
        }
    }

    /// Sends a batch that failed too often to the group's dead-letter topic; true when every
    /// message was taken.
    pub(crate) async fn send_to_dead_letters(&self, chunk: &[ReceivedMessage]) -> bool {
        for message in chunk {
            let result = async {
                let addr = self.leader_addr(&message.queue).await?;
                self.broker
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

    fn heartbeat_data(&self) -> HeartbeatData {
        HeartbeatData {
            client_id: self.client_id.clone(),
            producer_data_set: Vec::new(),
            consumer_data_set: vec![ConsumerData {
                group_name: self.config.group.clone(),
                consume_type: "CONSUME_PASSIVELY".to_owned(),
                message_model: "CLUSTERING".to_owned(),
                consume_from_where: self.config.consume_from.wire_name().to_owned(),
                subscription_data_set: self
                    .all_subscriptions()
                    .iter()
                    .map(|subscription| subscription.data(self.sub_version))
                    .collect(),
                unit_mode: false,
            }],
        }
    }

    /// Every member of every subscribed topic's cached route.
    fn known_addrs(&self) -> BTreeSet<String> {
        self.all_subscriptions()
            .iter()
            .filter_map(|subscription| self.routes.cached(&subscription.topic))
            .flat_map(|route| route.all_addrs())
            .collect()
    }

    async fn heartbeat_all(&self) {
        let data = self.heartbeat_data();
        for addr in self.known_addrs() {
            if let Err(error) = self.broker.heartbeat(&addr, &data).await {
                tracing::debug!(addr, %error, "consumer heartbeat failed");
            }
        }
    }

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
            match self.broker.consumer_list(&addr, &self.config.group).await {
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
        for subscription in self.all_subscriptions() {
            let topic = &subscription.topic;
            let retry = self.is_retry_topic(topic);
            let route = match self.routes.route(topic).await {
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
            let ids = match self.consumer_ids(&route).await {
                Ok(ids) => ids,
                Err(error) => {
                    tracing::debug!(topic, %error, "no consumer list; rebalancing this topic later");
                    allocation.incomplete = true;
                    continue;
                }
            };
            if !ids.contains(&self.client_id) {
                // The brokers have not seen this member yet: heartbeat, then try again soon.
                tracing::debug!(topic, "this consumer is not listed yet");
                allocation.incomplete = true;
                continue;
            }
            allocation.wanted.extend(allocate_averagely(
                &route.read_queues,
                &ids,
                &self.client_id,
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
        let committed = self
            .broker
            .query_consumer_offset(&addr, &self.config.group, queue)
            .await?
            .filter(|offset| *offset >= 0);
        if let Some(offset) = committed {
            return Ok((offset, Some(offset)));
        }
        let start = match self.config.consume_from {
            // The retry topic holds only messages to redo: always from its start.
            _ if self.is_retry_topic(&queue.topic) => 0,
            ConsumeFrom::First => 0,
            ConsumeFrom::Last => self.broker.max_offset(&addr, queue).await?,
            ConsumeFrom::Timestamp(timestamp_ms) => {
                self.broker
                    .search_offset(&addr, queue, timestamp_ms)
                    .await?
            }
        };
        Ok((start.max(0), None))
    }

    /// Computes this member's share and starts and stops queues to match. Returns whether
    /// the rebalance is complete (false: try again soon).
    async fn rebalance(self: &Arc<Self>) -> bool {
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

async fn rebalance_loop(inner: Arc<ConsumerInner>, mut retry_soon: bool) {
    loop {
        let wait = if retry_soon {
            REBALANCE_RETRY_INTERVAL
        } else {
            inner.config.rebalance_interval
        };
        tokio::select! {
            biased;
            _ = inner.stop_background.cancelled() => return,
            _ = inner.rebalance_now.notified() => {}
            _ = tokio::time::sleep(wait) => {}
        }
        if retry_soon {
            // This member may not be listed yet: tell the brokers again.
            inner.heartbeat_all().await;
        }
        retry_soon = !tokio::select! {
            biased;
            _ = inner.stop_background.cancelled() => return,
            complete = inner.rebalance() => complete,
        };
    }
}

async fn heartbeat_loop(inner: Arc<ConsumerInner>) {
    let period = inner.config.heartbeat_interval;
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            biased;
            _ = inner.stop_background.cancelled() => return,
            _ = tick.tick() => {}
        }
        tokio::select! {
            biased;
            _ = inner.stop_background.cancelled() => return,
            _ = inner.heartbeat_all() => {}
        }
    }
}

/// Refreshes routes on schedule; a changed route (new leader, new queues) triggers a
/// heartbeat to any new member and a rebalance.
async fn route_loop(inner: Arc<ConsumerInner>) {
    let period = inner.config.route_refresh_interval;
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            biased;
            _ = inner.stop_background.cancelled() => return,
            _ = tick.tick() => {}
        }
        let before: BTreeMap<String, Arc<TopicRoute>> = inner
            .routes
            .topics()
            .into_iter()
            .filter_map(|topic| Some((topic.clone(), inner.routes.cached(&topic)?)))
            .collect();
        tokio::select! {
            biased;
            _ = inner.stop_background.cancelled() => return,
            _ = async {
                for subscription in inner.all_subscriptions() {
                    let _ = inner.routes.refresh(&subscription.topic).await;
                }
            } => {}
        }
        let changed = inner.all_subscriptions().iter().any(|subscription| {
            let after = inner.routes.cached(&subscription.topic);
            match (before.get(&subscription.topic), after) {
                (Some(before), Some(after)) => !before.same_layout(&after),
                (None, None) => false,
                _ => true,
            }
        });
        if changed {
            inner.heartbeat_all().await;
            inner.rebalance_now.notify_one();
        }
    }
}

/// A running consumer. Cheap to clone; call [`Consumer::shutdown`] to stop it cleanly (commit
/// and leave the group). Dropping every handle without it stops the tasks but commits nothing.
#[derive(Clone)]
pub struct Consumer {
    inner: Arc<ConsumerInner>,
    _stop_on_drop: Arc<tokio_util::sync::DropGuard>,
}

impl std::fmt::Debug for Consumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Consumer")
            .field("group", &self.inner.config.group)
            .field("client_id", &self.inner.client_id)
            .finish_non_exhaustive()
    }
}

impl Consumer {
    pub fn builder() -> ConsumerBuilder {
        ConsumerBuilder::default()
    }

    pub fn client_id(&self) -> &str {
        &self.inner.client_id
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
        let inner = self.inner.clone();
        self.inner
            .offsets
            .commit_dirty(|queue, offset| {
                let inner = inner.clone();
                async move { inner.commit(&queue, offset).await }
            })
            .await
    }

    /// Stops rebalancing and pulling, lets handlers in progress finish (up to the handler
    /// drain timeout, [`HANDLER_DRAIN_TIMEOUT`] by default), commits every offset, unregisters from the brokers (which
    /// tell the other members to rebalance) and closes the connections. Calling it again
    /// does nothing.
    pub async fn shutdown(&self) {
        let mut done = self.inner.shutdown_done.lock().await;
        if *done {
            return;
        }
        let inner = &self.inner;
        inner.stop_background.cancel();
        inner.background.close();
        inner.background.wait().await;
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
        for addr in inner.known_addrs() {
            if let Err(error) = inner
                .broker
                .unregister_client(&addr, &inner.client_id, None, Some(&inner.config.group))
                .await
            {
                tracing::debug!(addr, %error, "unregistering the consumer failed");
            }
        }
        inner.rpc.shutdown().await;
        *done = true;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subscriptions_parse_tag_expressions() {
        let all = Subscription::new("T", "*").unwrap();
        assert!(all.matches(None) && all.matches(Some("x")));
        assert_eq!(Subscription::new("T", "").unwrap(), all);
        let some = Subscription::new("T", " a || b ").unwrap();
        assert!(some.matches(Some("a")) && some.matches(Some("b")));
        assert!(!some.matches(Some("c")) && !some.matches(None));
        let data = some.data(7);
        assert_eq!(data.tags_set.len(), 2);
        assert!(data.code_set.contains(&java_string_hash("a")));
        assert_eq!(data.sub_string, "a || b");
        assert!(Subscription::new("T", "||").is_err());
        assert!(Subscription::new("bad topic", "*").is_err());
    }

    #[tokio::test]
    async fn builder_refuses_bad_configurations() {
        let base = || Consumer::builder().namesrv("127.0.0.1:1").group("g");
        let refused = |builder: ConsumerBuilder| async move {
            builder
                .start(|_| async { ConsumeStatus::Success })
                .await
                .unwrap_err()
        };
        assert!(matches!(refused(base()).await, ClientError::Config(_)));
        let no_group = Consumer::builder()
            .namesrv("127.0.0.1:1")
            .subscribe("T", "*");
        assert!(matches!(refused(no_group).await, ClientError::Config(_)));
        let twice = base().subscribe("T", "*").subscribe("T", "a");
        assert!(matches!(refused(twice).await, ClientError::Config(_)));
        let batch = base().subscribe("T", "*").pull_batch_size(0);
        assert!(matches!(refused(batch).await, ClientError::Config(_)));
        let no_namesrv = base().subscribe("T", "*").namesrv("");
        assert!(matches!(refused(no_namesrv).await, ClientError::Config(_)));
    }

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
