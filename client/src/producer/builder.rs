//! [`ProducerBuilder`]: a producer's settings, their defaults (RocketMQ's where it has one)
//! and checks; [`ProducerBuilder::build`] starts the producer's client instance (connections,
//! route refresh, heartbeats; `crate::instance`).

use raftmq_protocol::acl::SessionCredentials;
use std::collections::BTreeSet;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use raftmq_protocol::body::ProducerData;
use raftmq_remoting::InboundRequestHandler;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::fault::FaultTracker;
use super::handle::{Producer, ProducerInner};
use super::retry::DEFAULT_RETRY_BACKOFF;
use super::send::SendSettings;
use super::transaction::{CheckHandler, TransactionChecker, TransactionState};
use crate::broker_client::DEFAULT_RPC_TIMEOUT;
use crate::error::ClientError;
use crate::instance::{ClientInstance, InstanceConfig, Membership};
use crate::message::ReceivedMessage;
use crate::route::{DEFAULT_TOPIC_QUEUE_NUMS, ROUTE_REFRESH_INTERVAL};

pub use crate::instance::HEARTBEAT_INTERVAL as PRODUCER_HEARTBEAT_INTERVAL;

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

/// Sends [`Producer::send_async`] keeps in flight by default.
pub const DEFAULT_ASYNC_WINDOW: usize = 256;

/// The largest window allowed.
pub const MAX_ASYNC_WINDOW: usize = 65_536;

/// Configures and starts a [`Producer`].
#[derive(Clone)]
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
    transaction_checker: Option<TransactionChecker>,
    credentials: Option<SessionCredentials>,
    tls: raftmq_tls::TlsConnector,
}

impl std::fmt::Debug for ProducerBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProducerBuilder")
            .field("group", &self.group)
            .field("namesrv", &self.namesrv)
            .field("transactional", &self.transaction_checker.is_some())
            .finish_non_exhaustive()
    }
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
            transaction_checker: None,
            credentials: None,
            tls: raftmq_tls::TlsConnector::plaintext(),
        }
    }
}

impl ProducerBuilder {
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

    /// The first backoff between attempts (default 100 ms; doubling, capped at
    /// [`MAX_RETRY_BACKOFF`](super::MAX_RETRY_BACKOFF), each wait jittered down to as little as
    /// half, as [`raftmq_protocol::backoff`] says).
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

    /// Makes this a transaction producer: brokers ask `checker` about this group's
    /// transactions whose end they did not get (RocketMQ's `checkLocalTransaction`), and the
    /// producer answers with its decision. See [`Producer::send_in_transaction`].
    pub fn transaction_checker(
        mut self,
        checker: impl Fn(&ReceivedMessage) -> TransactionState + Send + Sync + 'static,
    ) -> Self {
        self.transaction_checker = Some(Arc::new(checker));
        self
    }

    /// Checks the configuration and starts the producer's client instance (route refresh
    /// and heartbeats). Routes are fetched on first use.
    pub async fn build(self) -> Result<Producer, ClientError> {
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
        // Cancelled when the last handle is dropped without a shutdown: background work stops.
        let alive = CancellationToken::new();
        let stop_background = alive.child_token();
        let send_tasks = TaskTracker::new();
        let check_handler = self.transaction_checker.map(|checker| {
            Arc::new(CheckHandler {
                group: self.group.clone(),
                checker,
                broker: OnceLock::new(),
                tasks: send_tasks.clone(),
                stop: stop_background.clone(),
            })
        });
        let instance = ClientInstance::start(
            InstanceConfig {
                namesrv: self.namesrv,
                client_id: self.client_id,
                rpc_timeout: self.rpc_timeout,
                route_refresh_interval: self.route_refresh_interval,
                heartbeat_interval: PRODUCER_HEARTBEAT_INTERVAL,
                credentials: self.credentials.clone(),
                tls: self.tls.clone(),
                auto_create_queue_nums: Some(self.default_topic_queue_nums),
                inbound: check_handler
                    .clone()
                    .map(|handler| handler as Arc<dyn InboundRequestHandler>),
            },
            Membership::Producer(ProducerData {
                group_name: self.group.clone(),
            }),
            stop_background.child_token(),
        )?;
        if let Some(handler) = &check_handler {
            // The handler answers checks through the instance's own connections.
            let _ = handler.broker.set(instance.broker().clone());
        }
        let inner = Arc::new(ProducerInner {
            instance,
            settings: SendSettings {
                group: self.group,
                send_timeout: self.send_timeout,
                retries: self.retries,
                retry_unknown: self.retry_unknown,
                retry_backoff: self.retry_backoff,
                failover_wait: self.failover_wait,
                default_topic_queue_nums: self.default_topic_queue_nums,
            },
            window: Arc::new(Semaphore::new(self.async_window)),
            window_size: self.async_window,
            faults: FaultTracker::default(),
            closing: alive.child_token(),
            stop_background,
            send_tasks,
            announced: std::sync::Mutex::new(BTreeSet::new()),
            shutdown_done: tokio::sync::Mutex::new(false),
        });
        Ok(Producer {
            inner,
            _stop_on_drop: Arc::new(alive.drop_guard()),
        })
    }
}
