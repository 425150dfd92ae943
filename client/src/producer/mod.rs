//! The producer: [`Producer::send`] (sync, with retries), [`Producer::send_batch`],
//! [`Producer::send_async`] (a bounded window of sends in flight), by round robin, sharding key
//! or explicit queue.
//!
//! Every send ends in one of three ways, which [`SendOutcome`] names: stored
//! (`Ok(SendResult)`), definitely not stored ([`SendError`] with `!is_unknown_outcome()`), or
//! unknown (a timeout or lost connection after the request left, or a broker that proposed the
//! write but cannot tell its fate). Retries after an unknown outcome may store the message
//! twice (at-least-once); both [`SendResult::earlier_attempt_unknown`] and
//! [`SendError::is_unknown_outcome`] say when that may have happened. Every attempt of one
//! send carries the same `UNIQ_KEY`, so duplicates can be recognised.
//!
//! Each attempt has its own `send_timeout`; with `retries` retries a send takes at most about
//! `(retries + 1) * send_timeout` plus backoffs.

mod retry;
mod select;

use std::collections::{BTreeSet, HashMap};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use raftmq_protocol::body::{HeartbeatData, ProducerData};
use raftmq_protocol::header::SendMessageRequestHeader;
use raftmq_protocol::message::{BatchMessage, encode_batch, properties, property};
use raftmq_protocol::names::AUTO_CREATE_TOPIC_KEY_TOPIC;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, oneshot};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use retry::{
    DEFAULT_RETRY_BACKOFF, MAX_RETRY_BACKOFF, RetryDecision, backoff, decide, is_leadership_change,
};

use crate::broker_client::{BrokerClient, DEFAULT_RPC_TIMEOUT, SendStatus};
use crate::client_id::new_client_id;
use crate::error::ClientError;
use crate::message::{MAX_MESSAGE_BYTES, Message, MessageQueue, new_unique_id};
use crate::namesrv::{NameServerClient, namesrv_list_or_env};
use crate::route::{DEFAULT_TOPIC_QUEUE_NUMS, ROUTE_REFRESH_INTERVAL, RouteCache, TopicRoute};
use raftmq_protocol::names::now_ms;
use raftmq_remoting::RpcClient;

/// RocketMQ's producer group when none is given.
pub const DEFAULT_PRODUCER_GROUP: &str = "DEFAULT_PRODUCER";

/// How long one send attempt may take (RocketMQ's 3 s).
pub const DEFAULT_SEND_TIMEOUT: Duration = Duration::from_secs(3);

/// Retries after a failed attempt (RocketMQ's `retryTimesWhenSendFailed`).
pub const DEFAULT_RETRIES: u32 = 2;

/// More retries than this is a configuration mistake.
pub const MAX_RETRIES: u32 = 64;

/// How long a send keeps retrying through a leader change (no leader, not the leader, the
/// leader unreachable) before those failures count against `retries`.
pub const DEFAULT_FAILOVER_WAIT: Duration = Duration::from_secs(3);

/// Rounds one send may spend waiting out a leader change (besides the time bound).
pub const MAX_FAILOVER_ROUNDS: u32 = 64;

/// While a send rides out a leader change its backoff doubles at most this often, so it polls
/// for the new leader every 200 ms with the default 100 ms backoff. Measured with
/// `bench/failover.sh` (kill -9 of the leader under load, 10 kills): with the backoff doubling
/// up to 2 s, sends resumed 1.5-2 s after the NameServer already listed the new leader.
pub const MAX_FAILOVER_DOUBLINGS: u32 = 1;

/// Sends [`Producer::send_async`] keeps in flight by default.
pub const DEFAULT_ASYNC_WINDOW: usize = 256;

/// The largest window allowed.
pub const MAX_ASYNC_WINDOW: usize = 65_536;

/// How long a member that could not be reached is avoided by queue selection.
pub const FAULT_ISOLATION: Duration = Duration::from_secs(3);

/// Members remembered as failing; beyond this, new failures are not remembered.
pub const MAX_ISOLATED_MEMBERS: usize = 1024;

/// Messages in one batch (besides the byte cap).
pub const MAX_BATCH_MESSAGES: usize = 4096;

/// How often a producer heartbeats to the brokers of its routes (RocketMQ's 30 s).
pub const PRODUCER_HEARTBEAT_INTERVAL: Duration = Duration::from_secs(30);

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

    fn before_any_attempt(source: ClientError) -> Self {
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

/// The result of a [`Producer::send_async`], to await.
#[derive(Debug)]
pub struct SendHandle {
    rx: oneshot::Receiver<Result<SendResult, SendError>>,
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

/// Configures and starts a [`Producer`].
#[derive(Clone, Debug)]
pub struct ProducerBuilder {
    namesrv: Option<String>,
    group: String,
    client_id: Option<String>,
    send_timeout: Duration,
    retries: u32,
    retry_unknown: bool,
    retry_backoff: Duration,
    failover_wait: Duration,
    async_window: usize,
    default_topic_queue_nums: u32,
    rpc_timeout: Duration,
    route_refresh_interval: Duration,
}

impl Default for ProducerBuilder {
    fn default() -> Self {
        ProducerBuilder {
            namesrv: None,
            group: DEFAULT_PRODUCER_GROUP.to_owned(),
            client_id: None,
            send_timeout: DEFAULT_SEND_TIMEOUT,
            retries: DEFAULT_RETRIES,
            retry_unknown: true,
            retry_backoff: DEFAULT_RETRY_BACKOFF,
            failover_wait: DEFAULT_FAILOVER_WAIT,
            async_window: DEFAULT_ASYNC_WINDOW,
            default_topic_queue_nums: DEFAULT_TOPIC_QUEUE_NUMS,
            rpc_timeout: DEFAULT_RPC_TIMEOUT,
            route_refresh_interval: ROUTE_REFRESH_INTERVAL,
        }
    }
}

impl ProducerBuilder {
    /// NameServers, `host:port[;host:port]`; without it, `NAMESRV_ADDR` is read.
    pub fn namesrv(mut self, list: impl Into<String>) -> Self {
        self.namesrv = Some(list.into());
        self
    }

    pub fn group(mut self, group: impl Into<String>) -> Self {
        self.group = group.into();
        self
    }

    /// The id brokers know this client by (default: `ip@pid#n`).
    pub fn client_id(mut self, client_id: impl Into<String>) -> Self {
        self.client_id = Some(client_id.into());
        self
    }

    /// The deadline of each attempt (default 3 s).
    pub fn send_timeout(mut self, timeout: Duration) -> Self {
        self.send_timeout = timeout;
        self
    }

    /// Retries after a failed attempt (default 2).
    pub fn retries(mut self, retries: u32) -> Self {
        self.retries = retries;
        self
    }

    /// Whether an attempt with an unknown outcome is retried (default true: at-least-once,
    /// duplicates possible). With false, such a send ends as unknown at once.
    pub fn retry_on_unknown_outcome(mut self, retry: bool) -> Self {
        self.retry_unknown = retry;
        self
    }

    /// The first backoff between attempts (doubling, capped at [`MAX_RETRY_BACKOFF`]).
    pub fn retry_backoff(mut self, backoff: Duration) -> Self {
        self.retry_backoff = backoff;
        self
    }

    /// How long a send rides out a leader change before its failures count as retries
    /// (default 3 s). Failures during a leader change are definite (nothing was stored), so
    /// retrying them cannot duplicate. Zero makes every failure count.
    pub fn failover_wait(mut self, wait: Duration) -> Self {
        self.failover_wait = wait;
        self
    }

    /// Most [`Producer::send_async`] sends in flight at once (default 256).
    pub fn async_window(mut self, window: usize) -> Self {
        self.async_window = window;
        self
    }

    /// Queues a broker should give a topic it auto-creates on the first send (default 8).
    pub fn default_topic_queue_nums(mut self, queues: u32) -> Self {
        self.default_topic_queue_nums = queues;
        self
    }

    /// The deadline of NameServer and other non-send requests (default 3 s).
    pub fn rpc_timeout(mut self, timeout: Duration) -> Self {
        self.rpc_timeout = timeout;
        self
    }

    /// How often every route is fetched again (default 30 s).
    pub fn route_refresh_interval(mut self, interval: Duration) -> Self {
        self.route_refresh_interval = interval;
        self
    }

    /// Checks the configuration and starts the producer's background task (route refresh
    /// and heartbeats). Routes are fetched on first use.
    pub async fn build(self) -> Result<Producer, ClientError> {
        let addrs = namesrv_list_or_env(self.namesrv.as_deref())?;
        if self.group.is_empty() {
            return Err(ClientError::Config(
                "the producer group is empty".to_owned(),
            ));
        }
        if self.send_timeout.is_zero() || self.rpc_timeout.is_zero() {
            return Err(ClientError::Config("timeouts must be positive".to_owned()));
        }
        if self.retries > MAX_RETRIES {
            return Err(ClientError::Config(format!(
                "{} retries, more than {MAX_RETRIES}",
                self.retries
            )));
        }
        if !(1..=MAX_ASYNC_WINDOW).contains(&self.async_window) {
            return Err(ClientError::Config(format!(
                "async window {} is outside 1..={MAX_ASYNC_WINDOW}",
                self.async_window
            )));
        }
        if self.default_topic_queue_nums == 0 || self.route_refresh_interval.is_zero() {
            return Err(ClientError::Config(
                "default topic queue count and route refresh interval must be positive".to_owned(),
            ));
        }
        let client_id = self.client_id.unwrap_or_else(|| new_client_id(&addrs[0]));
        let rpc = RpcClient::default();
        let namesrv = NameServerClient::new(rpc.clone(), addrs)?.with_timeout(self.rpc_timeout);
        // Cancelled when the last handle is dropped without a shutdown: background work stops.
        let alive = CancellationToken::new();
        let inner = Arc::new(ProducerInner {
            group: self.group,
            client_id,
            rpc: rpc.clone(),
            broker: BrokerClient::new(rpc).with_timeout(self.rpc_timeout),
            routes: RouteCache::with_auto_create(namesrv, self.default_topic_queue_nums),
            send_timeout: self.send_timeout,
            retries: self.retries,
            retry_unknown: self.retry_unknown,
            retry_backoff: self.retry_backoff,
            failover_wait: self.failover_wait,
            default_topic_queue_nums: self.default_topic_queue_nums,
            window: Arc::new(Semaphore::new(self.async_window)),
            window_size: self.async_window,
            faults: FaultTracker::default(),
            closing: alive.child_token(),
            stop_background: alive.child_token(),
            send_tasks: TaskTracker::new(),
            background: TaskTracker::new(),
            shutdown_done: tokio::sync::Mutex::new(false),
        });
        inner
            .background
            .spawn(maintenance_loop(inner.clone(), self.route_refresh_interval));
        Ok(Producer {
            inner,
            _stop_on_drop: Arc::new(alive.drop_guard()),
        })
    }
}

/// A RocketMQ-style producer. Cheap to clone; call [`Producer::shutdown`] when done (it waits
/// for async sends in flight). Dropping every handle without it stops the background task.
#[derive(Clone)]
pub struct Producer {
    inner: Arc<ProducerInner>,
    _stop_on_drop: Arc<tokio_util::sync::DropGuard>,
}

impl std::fmt::Debug for Producer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Producer")
            .field("group", &self.inner.group)
            .field("client_id", &self.inner.client_id)
            .finish_non_exhaustive()
    }
}

/// Where a send goes.
#[derive(Clone, Debug)]
enum Target {
    RoundRobin,
    Key(String),
    Queue(MessageQueue),
}

/// A send ready for the wire: the same bytes go out on every attempt.
struct Outgoing {
    topic: String,
    body: Bytes,
    properties: String,
    flag: i32,
    batch: bool,
    msg_ids: Vec<String>,
    target: Target,
}

struct ProducerInner {
    group: String,
    client_id: String,
    rpc: RpcClient,
    broker: BrokerClient,
    routes: RouteCache,
    send_timeout: Duration,
    retries: u32,
    retry_unknown: bool,
    retry_backoff: Duration,
    failover_wait: Duration,
    default_topic_queue_nums: u32,
    window: Arc<Semaphore>,
    window_size: usize,
    faults: FaultTracker,
    /// Set at shutdown: no new sends.
    closing: CancellationToken,
    /// Set once sends in flight have finished: background work stops.
    stop_background: CancellationToken,
    send_tasks: TaskTracker,
    background: TaskTracker,
    shutdown_done: tokio::sync::Mutex<bool>,
}

impl Producer {
    pub fn builder() -> ProducerBuilder {
        ProducerBuilder::default()
    }

    pub fn client_id(&self) -> &str {
        &self.inner.client_id
    }

    pub fn group(&self) -> &str {
        &self.inner.group
    }

    /// The route cache (for tools and tests: which queues a topic has, who leads).
    pub fn routes(&self) -> &RouteCache {
        &self.inner.routes
    }

    /// The route a send of `topic` would use (fetched if not cached; TBW102's if the topic
    /// does not exist yet).
    pub async fn route(&self, topic: &str) -> Result<Arc<TopicRoute>, ClientError> {
        self.inner.routes.route(topic).await
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
    /// together, at consecutive offsets, or not at all. At most [`MAX_MESSAGE_BYTES`] encoded
    /// and [`MAX_BATCH_MESSAGES`] messages. The first message's sharding key, if any, picks
    /// the queue.
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

    /// Refuses new sends, waits for the sends in flight, stops the background task,
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
        inner.background.close();
        inner.background.wait().await;
        for addr in inner.known_addrs() {
            if let Err(error) = inner
                .broker
                .unregister_client(&addr, &inner.client_id, Some(&inner.group), None)
                .await
            {
                tracing::debug!(addr, %error, "unregistering the producer failed");
            }
        }
        inner.rpc.shutdown().await;
        *done = true;
    }
}

fn prepare_single(message: Message, target: Target) -> Result<Outgoing, ClientError> {
    message.validate()?;
    let msg_id = new_unique_id();
    let rendered = properties::render(&message.wire_properties(&msg_id))
        .map_err(|error| ClientError::InvalidMessage(error.to_string()))?;
    Ok(Outgoing {
        topic: message.topic,
        body: message.body,
        properties: rendered,
        flag: message.flag,
        batch: false,
        msg_ids: vec![msg_id],
        target,
    })
}

fn prepare_batch(messages: Vec<Message>) -> Result<Outgoing, ClientError> {
    let Some(first) = messages.first() else {
        return Err(ClientError::InvalidMessage("the batch is empty".to_owned()));
    };
    if messages.len() > MAX_BATCH_MESSAGES {
        return Err(ClientError::InvalidMessage(format!(
            "{} messages in one batch, more than {MAX_BATCH_MESSAGES}",
            messages.len()
        )));
    }
    let topic = first.topic.clone();
    let target = match &first.sharding_key {
        Some(key) => Target::Key(key.clone()),
        None => Target::RoundRobin,
    };
    let mut msg_ids = Vec::with_capacity(messages.len());
    let mut elements = Vec::with_capacity(messages.len());
    let mut total = 0usize;
    for message in &messages {
        message.validate()?;
        if message.topic != topic {
            return Err(ClientError::InvalidMessage(format!(
                "a batch holds one topic; found {} and {}",
                topic, message.topic
            )));
        }
        total = total.saturating_add(message.body.len());
        if total > MAX_MESSAGE_BYTES {
            return Err(ClientError::MessageTooLarge {
                size: total,
                max: MAX_MESSAGE_BYTES,
            });
        }
        let msg_id = new_unique_id();
        elements.push(BatchMessage {
            flag: message.flag,
            body: message.body.clone(),
            properties: message.wire_properties(&msg_id),
        });
        msg_ids.push(msg_id);
    }
    let mut body = BytesMut::new();
    encode_batch(&elements, &mut body)
        .map_err(|error| ClientError::InvalidMessage(error.to_string()))?;
    if body.len() > MAX_MESSAGE_BYTES {
        return Err(ClientError::MessageTooLarge {
            size: body.len(),
            max: MAX_MESSAGE_BYTES,
        });
    }
    let batch_properties =
        std::collections::BTreeMap::from([(property::WAIT.to_owned(), "true".to_owned())]);
    Ok(Outgoing {
        topic,
        body: body.freeze(),
        properties: properties::render(&batch_properties)
            .map_err(|error| ClientError::InvalidMessage(error.to_string()))?,
        flag: 0,
        batch: true,
        msg_ids,
        target,
    })
}

/// Members whose leader address failed lately, avoided by queue selection for a while.
#[derive(Default)]
struct FaultTracker {
    until: Mutex<HashMap<String, Instant>>,
}

impl FaultTracker {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Instant>> {
        self.until
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    fn isolate(&self, addr: &str) {
        let now = Instant::now();
        let mut until = self.lock();
        until.retain(|_, end| *end > now);
        if until.len() < MAX_ISOLATED_MEMBERS || until.contains_key(addr) {
            until.insert(addr.to_owned(), now + FAULT_ISOLATION);
        }
    }

    fn recovered(&self, addr: &str) {
        self.lock().remove(addr);
    }

    fn is_isolated(&self, addr: &str) -> bool {
        self.lock()
            .get(addr)
            .is_some_and(|end| *end > Instant::now())
    }
}

struct RouteHealth<'a> {
    route: &'a TopicRoute,
    faults: &'a FaultTracker,
}

impl select::QueueHealth for RouteHealth<'_> {
    fn has_leader(&self, queue: &MessageQueue) -> bool {
        self.route.leader_addr(&queue.broker_name).is_some()
    }

    fn isolated(&self, queue: &MessageQueue) -> bool {
        self.route
            .leader_addr(&queue.broker_name)
            .is_some_and(|addr| self.faults.is_isolated(addr))
    }
}

/// Counts a send's rounds: those that count against `retries`, and those spent riding out a
/// leader change (bounded by time and by [`MAX_FAILOVER_ROUNDS`]).
struct Rounds {
    retries: u32,
    failover_deadline: Instant,
    counted: u32,
    failover: u32,
}

impl Rounds {
    fn exhausted(&self) -> bool {
        self.counted > self.retries
    }

    /// Records a failed round; returns the backoff exponent for the next one: the counted
    /// rounds plus at most [`MAX_FAILOVER_DOUBLINGS`] for rounds spent riding out a leader
    /// change. An election ends at a moment nobody can predict; a backoff that kept doubling
    /// through it would add about the election's length again after it ends.
    fn count(&mut self, error: &ClientError) -> u32 {
        if is_leadership_change(error)
            && Instant::now() < self.failover_deadline
            && self.failover < MAX_FAILOVER_ROUNDS
        {
            self.failover += 1;
        } else {
            self.counted += 1;
        }
        self.counted + self.failover.min(MAX_FAILOVER_DOUBLINGS)
    }
}

/// What the last attempt left behind, for choosing the next one.
struct LastFailure {
    broker_name: Option<String>,
    addr: Option<String>,
}

impl ProducerInner {
    fn spawn_send(self: Arc<Self>, outgoing: Outgoing, permit: OwnedSemaphorePermit) -> SendHandle {
        let (tx, rx) = oneshot::channel();
        let inner = self.clone();
        self.send_tasks.spawn(async move {
            let result = inner.send(outgoing).await;
            drop(permit);
            // The caller may have dropped the handle: nobody to tell.
            let _ = tx.send(result);
        });
        SendHandle { rx }
    }

    /// Picks the queue for this attempt from the current route.
    fn choose_queue(
        &self,
        route: &TopicRoute,
        target: &Target,
        last: Option<&LastFailure>,
    ) -> Result<MessageQueue, ClientError> {
        let no_route = |reason: String| ClientError::NoRoute {
            topic: route.topic.clone(),
            reason,
        };
        let queue = match target {
            Target::RoundRobin => select::round_robin(
                &route.write_queues,
                route.next_round_robin(),
                &RouteHealth {
                    route,
                    faults: &self.faults,
                },
                last.and_then(|last| last.broker_name.as_deref()),
            )
            .ok_or_else(|| {
                if route.write_queues.is_empty() {
                    no_route("no writable queue".to_owned())
                } else {
                    ClientError::NoLeader {
                        topic: route.topic.clone(),
                        broker_name: None,
                    }
                }
            })?,
            Target::Key(key) => select::by_key(&route.write_queues, key)
                .ok_or_else(|| no_route("no writable queue".to_owned()))?,
            Target::Queue(queue) => queue.clone(),
        };
        Ok(queue)
    }

    async fn send(&self, outgoing: Outgoing) -> Result<SendResult, SendError> {
        let mut attempts = 0u32;
        // Attempts whose outcome is unknown, and whether `last_error` came from an attempt.
        let mut unknown_attempts = 0u32;
        let mut last_error_from_attempt = false;
        let mut last: Option<LastFailure> = None;
        let mut last_error: Option<ClientError> = None;
        let mut rounds = Rounds {
            retries: self.retries,
            failover_deadline: Instant::now() + self.failover_wait,
            counted: 0,
            failover: 0,
        };
        let mut rounds_so_far = 0u32;
        while !rounds.exhausted() {
            if let Some(error) = &last_error {
                let wait = match decide(error, self.retry_unknown) {
                    RetryDecision::Stop => break,
                    RetryDecision::RetryAfterBackoff => true,
                    RetryDecision::Retry => false,
                };
                if wait && !self.pause(rounds_so_far).await {
                    break;
                }
            }
            last_error_from_attempt = false;
            let route = match self.routes.route(&outgoing.topic).await {
                Ok(route) => route,
                Err(error) => {
                    rounds_so_far = rounds.count(&error);
                    last_error = Some(error);
                    continue;
                }
            };
            let queue = match self.choose_queue(&route, &outgoing.target, last.as_ref()) {
                Ok(queue) => queue,
                Err(error) => {
                    let _ = self.routes.refresh_after(&route).await;
                    rounds_so_far = rounds.count(&error);
                    last_error = Some(error);
                    continue;
                }
            };
            let Some(addr) = route.leader_addr(&queue.broker_name).map(str::to_owned) else {
                let _ = self.routes.refresh_after(&route).await;
                let error = ClientError::NoLeader {
                    topic: outgoing.topic.clone(),
                    broker_name: Some(queue.broker_name.clone()),
                };
                rounds_so_far = rounds.count(&error);
                last_error = Some(error);
                continue;
            };
            // The route still names the member that just refused or could not be reached:
            // give the group time to elect, and the NameServer to hear of it.
            if last.as_ref().and_then(|last| last.addr.as_deref()) == Some(addr.as_str())
                && !self.pause(rounds_so_far).await
            {
                break;
            }
            attempts += 1;
            match self.attempt(&outgoing, &queue, &addr).await {
                Ok(reply) => {
                    self.faults.recovered(&addr);
                    return Ok(SendResult {
                        status: reply.status,
                        msg_id: outgoing.msg_ids.first().cloned().unwrap_or_default(),
                        msg_ids: outgoing.msg_ids.clone(),
                        offset_msg_id: reply.offset_msg_id,
                        queue: MessageQueue {
                            queue_id: reply.queue_id,
                            ..queue
                        },
                        queue_offset: reply.queue_offset,
                        broker_addr: addr,
                        attempts,
                        earlier_attempt_unknown: unknown_attempts > 0,
                    });
                }
                Err(error) => {
                    tracing::debug!(topic = outgoing.topic, addr, attempt = attempts, %error, "send attempt failed");
                    if error.is_unknown_outcome() {
                        unknown_attempts += 1;
                    }
                    if matches!(error, ClientError::Rpc(_)) {
                        self.faults.isolate(&addr);
                    }
                    if error.needs_route_refresh()
                        && let Err(refresh_error) = self.routes.refresh_after(&route).await
                    {
                        tracing::debug!(topic = outgoing.topic, %refresh_error, "route refresh failed");
                    }
                    // Only a member that refused or could not be reached is worth waiting
                    // for; after a timeout the next attempt may go to it at once.
                    last = Some(LastFailure {
                        broker_name: Some(queue.broker_name.clone()),
                        addr: error.is_definite_failure().then_some(addr),
                    });
                    last_error_from_attempt = true;
                    rounds_so_far = rounds.count(&error);
                    last_error = Some(error);
                }
            }
        }
        let source = last_error.unwrap_or(ClientError::Shutdown);
        let last_counted = u32::from(last_error_from_attempt && source.is_unknown_outcome());
        Err(SendError {
            source,
            attempts,
            earlier_attempt_unknown: unknown_attempts > last_counted,
        })
    }

    /// Waits the backoff for `round`; false when the producer is shutting down meanwhile
    /// (only background work stops; sends in flight finish their attempts).
    async fn pause(&self, round: u32) -> bool {
        let delay = backoff(self.retry_backoff, round);
        tokio::select! {
            _ = tokio::time::sleep(delay) => true,
            _ = self.stop_background.cancelled() => false,
        }
    }

    async fn attempt(
        &self,
        outgoing: &Outgoing,
        queue: &MessageQueue,
        addr: &str,
    ) -> Result<crate::broker_client::SendReply, ClientError> {
        let queue_nums = i32::try_from(self.default_topic_queue_nums).unwrap_or(i32::MAX);
        let header = SendMessageRequestHeader {
            producer_group: self.group.clone(),
            topic: outgoing.topic.clone(),
            default_topic: AUTO_CREATE_TOPIC_KEY_TOPIC.to_owned(),
            default_topic_queue_nums: queue_nums,
            queue_id: queue.queue_id,
            sys_flag: 0,
            born_timestamp: now_ms(),
            flag: outgoing.flag,
            properties: Some(outgoing.properties.clone()),
            reconsume_times: Some(0),
            unit_mode: Some(false),
            batch: Some(outgoing.batch),
            max_reconsume_times: None,
            broker_name: Some(queue.broker_name.clone()),
        };
        self.broker
            .send_message(addr, header, outgoing.body.clone(), self.send_timeout)
            .await
    }

    /// Every member of every cached route.
    fn known_addrs(&self) -> BTreeSet<String> {
        self.routes
            .topics()
            .iter()
            .filter_map(|topic| self.routes.cached(topic))
            .flat_map(|route| route.all_addrs())
            .collect()
    }

    async fn heartbeat_all(&self) {
        let data = HeartbeatData {
            client_id: self.client_id.clone(),
            producer_data_set: vec![ProducerData {
                group_name: self.group.clone(),
            }],
            consumer_data_set: Vec::new(),
        };
        for addr in self.known_addrs() {
            if let Err(error) = self.broker.heartbeat(&addr, &data).await {
                tracing::debug!(addr, %error, "producer heartbeat failed");
            }
        }
    }
}

/// Every `interval`: refresh every route, then heartbeat to every member.
async fn maintenance_loop(inner: Arc<ProducerInner>, interval: Duration) {
    let mut routes_tick = tokio::time::interval_at(Instant::now() + interval, interval);
    routes_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut heartbeat_tick = tokio::time::interval_at(
        Instant::now() + PRODUCER_HEARTBEAT_INTERVAL,
        PRODUCER_HEARTBEAT_INTERVAL,
    );
    heartbeat_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = inner.stop_background.cancelled() => return,
            _ = routes_tick.tick() => {
                tokio::select! {
                    _ = inner.stop_background.cancelled() => return,
                    _ = inner.routes.refresh_all() => {}
                }
            }
            _ = heartbeat_tick.tick() => {
                tokio::select! {
                    _ = inner.stop_background.cancelled() => return,
                    _ = inner.heartbeat_all() => {}
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use raftmq_remoting::RpcError;

    #[test]
    fn backoff_grows_for_counted_rounds_but_not_while_a_leader_is_elected() {
        let no_leader = ClientError::NoLeader {
            topic: "T".into(),
            broker_name: None,
        };
        let timeout = ClientError::Rpc(RpcError::Timeout {
            addr: "a".into(),
            timeout_ms: 1000,
        });
        let mut rounds = Rounds {
            retries: 10,
            failover_deadline: Instant::now() + Duration::from_secs(60),
            counted: 0,
            failover: 0,
        };
        let exponents: Vec<u32> = (0..5).map(|_| rounds.count(&no_leader)).collect();
        assert_eq!(exponents, [1, 1, 1, 1, 1]);
        assert_eq!(rounds.failover, 5);
        assert!(!rounds.exhausted(), "failover rounds do not use up retries");
        // Other failures still double the backoff.
        assert_eq!(rounds.count(&timeout), 2);
        assert_eq!(rounds.count(&timeout), 3);

        // Past the failover wait, leadership failures count like any other.
        let mut late = Rounds {
            retries: 1,
            failover_deadline: Instant::now(),
            counted: 0,
            failover: 0,
        };
        assert_eq!(late.count(&no_leader), 1);
        assert_eq!(late.count(&no_leader), 2);
        assert!(late.exhausted());
    }
}
