//! [`ConsumerBuilder`]: a consumer's settings, their defaults (RocketMQ's where it has one)
//! and checks ([`ConsumerConfig`]); starting makes the consumer's client instance (connections,
//! route refresh, heartbeats; `crate::instance`), makes it known to the brokers, takes its
//! first share of queues and starts the rebalance and offset commit tasks.

use raftmq_protocol::acl::SessionCredentials;
use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use raftmq_protocol::names::now_ms;
use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::delivery::{BoxedHandler, ConsumeStatus, Delivery, boxed_handler, channel_handler};
use super::handle::{Consumer, ConsumerInner};
use super::local_offsets::LocalOffsets;
use super::offset_store::{DEFAULT_COMMIT_INTERVAL, OffsetStore};
use super::rebalance::{DEFAULT_REBALANCE_INTERVAL, NotifyHandler, rebalance_loop};
use super::subscription::{ConsumeFrom, Subscription};
use crate::broker_client::{
    DEFAULT_PULL_BATCH, DEFAULT_RPC_TIMEOUT, LONG_POLL_SUSPEND, MAX_PULL_BATCH,
};
use crate::error::ClientError;
use crate::instance::{ClientInstance, InstanceConfig, Membership};
use crate::message::{ReceivedMessage, validate_topic};
use crate::route::{ROUTE_REFRESH_INTERVAL, ReadFrom};

pub use crate::instance::HEARTBEAT_INTERVAL as DEFAULT_HEARTBEAT_INTERVAL;

/// Most messages handed to the handler at once.
pub const DEFAULT_CONSUME_BATCH_SIZE: usize = 32;

/// The largest consume batch allowed.
pub const MAX_CONSUME_BATCH_SIZE: usize = 1024;

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
    pub(crate) max_reconsume_times: i32,
    pub(crate) reconsume_backoff: Duration,
    pub(crate) consume_retry_topic: bool,
    pub(crate) handler_drain_timeout: Duration,
    /// Broadcasting mode, with the file its offsets are kept in (if any).
    pub(crate) broadcasting: Option<Option<PathBuf>>,
}

/// Configures and starts a [`Consumer`].
#[derive(Clone, Debug)]
pub struct ConsumerBuilder {
    namesrv: Option<String>,
    group: String,
    /// `(topic, expression, sql92)`
    subscriptions: Vec<(String, String, bool)>,
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
    broadcasting: Option<Option<PathBuf>>,
    credentials: Option<SessionCredentials>,
    tls: raftmq_tls::TlsConnector,
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
            broadcasting: None,
            credentials: None,
            tls: raftmq_tls::TlsConnector::plaintext(),
        }
    }
}

impl ConsumerBuilder {
    /// Signs every request with an account's keys, as RocketMQ's `AclClientRPCHook` does (for
    /// brokers that enforce ACL); `None` sends requests unsigned.
    pub fn credentials(mut self, credentials: Option<SessionCredentials>) -> Self {
        self.credentials = credentials;
        self
    }

    /// Connects to the NameServers and brokers over TLS with `tls` (built with
    /// `raftmq_tls::ClientTlsConfig::connector`: the CA to trust, an optional client
    /// certificate); plaintext by default.
    pub fn tls(mut self, tls: raftmq_tls::TlsConnector) -> Self {
        self.tls = tls;
        self
    }

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
        self.subscriptions
            .push((topic.into(), expression.into(), false));
        self
    }

    /// Consumes `topic`, messages whose properties make the SQL92 `expression` true
    /// (RocketMQ's `MessageSelector.bySql`: comparisons, `BETWEEN`, `IN`, `IS [NOT] NULL`,
    /// `AND`/`OR`/`NOT`). The broker filters; one that cannot parse the expression makes
    /// [`ConsumerBuilder::start`] fail with its reason.
    pub fn subscribe_sql92(
        mut self,
        topic: impl Into<String>,
        expression: impl Into<String>,
    ) -> Self {
        self.subscriptions
            .push((topic.into(), expression.into(), true));
        self
    }

    /// Broadcasting mode (RocketMQ's `MessageModel.BROADCASTING`): every consumer of the group
    /// gets every message of every queue, and keeps its own offsets: in `offsets_file` (read
    /// at start, written at each commit) or, without one, in memory only. Failed messages are
    /// redelivered locally up to `max_reconsume_times`, then skipped (never sent back).
    pub fn broadcasting(mut self, offsets_file: Option<PathBuf>) -> Self {
        self.broadcasting = Some(offsets_file);
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
        self.start_boxed(boxed_handler(handler)).await
    }

    /// Starts the consumer and returns a channel of [`Delivery`]s (`capacity` of them may
    /// wait). Each queue waits for its delivery's answer before the next one.
    pub async fn start_with_channel(
        self,
        capacity: usize,
    ) -> Result<(Consumer, mpsc::Receiver<Delivery>), ClientError> {
        let (handler, deliveries) = channel_handler(capacity);
        let consumer = self.start_boxed(handler).await?;
        Ok((consumer, deliveries))
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
        for (topic, expression, sql92) in &self.subscriptions {
            if !topics.insert(topic.clone()) {
                return Err(ClientError::Config(format!(
                    "topic {topic} subscribed twice"
                )));
            }
            subscriptions.push(if *sql92 {
                Subscription::sql92(topic, expression)?
            } else {
                Subscription::new(topic, expression)?
            });
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
            max_reconsume_times: self.max_reconsume_times,
            reconsume_backoff: self.reconsume_backoff,
            consume_retry_topic: self.consume_retry_topic,
            handler_drain_timeout: self.handler_drain_timeout,
            broadcasting: self.broadcasting.clone(),
        })
    }

    async fn start_boxed(self, handler: BoxedHandler) -> Result<Consumer, ClientError> {
        let config = self.config()?;
        let local_offsets = match &config.broadcasting {
            Some(file) => Some(LocalOffsets::open(file.clone())?),
            None => None,
        };
        let rebalance_now = Arc::new(Notify::new());
        // Cancelled when the last handle is dropped without a shutdown: everything stops.
        let alive = CancellationToken::new();
        let stop_background = alive.child_token();
        let instance = ClientInstance::start(
            InstanceConfig {
                namesrv: self.namesrv,
                client_id: self.client_id,
                rpc_timeout: self.rpc_timeout,
                route_refresh_interval: self.route_refresh_interval,
                heartbeat_interval: self.heartbeat_interval,
                credentials: self.credentials.clone(),
                tls: self.tls.clone(),
                auto_create_queue_nums: None,
                inbound: Some(Arc::new(NotifyHandler {
                    group: config.group.clone(),
                    rebalance_now: rebalance_now.clone(),
                })),
            },
            Membership::Consumer(config.consumer_data(now_ms())),
            stop_background.child_token(),
        )?;
        let inner = Arc::new(ConsumerInner {
            instance,
            handler,
            offsets: OffsetStore::default(),
            local_offsets,
            workers: tokio::sync::Mutex::new(BTreeMap::new()),
            assigned: Mutex::new(Vec::new()),
            rebalance_now,
            rebalances: std::sync::atomic::AtomicU64::new(0),
            stop_background,
            stop_queues: alive.child_token(),
            abandon_handlers: alive.child_token(),
            background: TaskTracker::new(),
            queue_tasks: TaskTracker::new(),
            shutdown_done: tokio::sync::Mutex::new(false),
            config,
        });
        // Known to the brokers first, so that the first rebalance finds this member listed.
        for subscription in inner.config.all_subscriptions() {
            let _ = inner.instance.routes().route(&subscription.topic).await;
        }
        // An SQL92 expression the brokers cannot use is refused now, not at every pull.
        if let Err(error) = inner.check_sql92_subscriptions().await {
            inner.instance.stop().await;
            inner.instance.close().await;
            return Err(error);
        }
        inner.instance.heartbeat_all().await;
        let complete = inner.rebalance().await;
        inner
            .background
            .spawn(rebalance_loop(inner.clone(), !complete));
        inner.background.spawn(inner.clone().periodic_commits());
        Ok(Consumer {
            inner,
            _stop_on_drop: Arc::new(alive.drop_guard()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
