//! The client instance (RocketMQ's `MQClientInstance`): what a producer and a consumer need
//! from the cluster besides their own requests, written once. Each [`Producer`] and
//! [`Consumer`] starts one and runs none of this itself:
//!
//! - one [`RpcClient`] (the connections), with the [`NameServerClient`] and [`BrokerClient`]
//!   built on it;
//! - the [`RouteCache`]: routes fetched on first use, fetched again at once (rate-limited)
//!   after a routing error ([`ClientInstance::refresh_on_error`]), and every
//!   `route_refresh_interval` (30 s) by a background task for every route in use; a periodic
//!   round that changed a route wakes [`ClientInstance::route_changed`];
//! - heartbeats: every `heartbeat_interval` (30 s) a background task sends HEART_BEAT, with
//!   this client's group, to every member of every route in use; [`ClientInstance::close`]
//!   unregisters from them.
//!
//! "Routes in use" are the cached routes plus, for a consumer, its subscribed topics (so that
//! a topic created after the consumer started, such as its retry topic, is found).
//!
//! [`Producer`]: crate::Producer
//! [`Consumer`]: crate::Consumer

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use raftmq_protocol::body::{ConsumerData, HeartbeatData, ProducerData};
use raftmq_remoting::{InboundRequestHandler, RpcClient, RpcClientConfig};
use tokio::sync::Notify;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::broker_client::BrokerClient;
use crate::client_id::new_client_id;
use crate::error::ClientError;
use crate::namesrv::{NameServerClient, namesrv_list_or_env};
use crate::route::RouteCache;
use raftmq_protocol::acl::SessionCredentials;

/// How often a client heartbeats to the brokers of its routes (RocketMQ's 30 s).
pub const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(30);

/// Who this client is to the brokers: the group its heartbeats and unregistration name.
#[derive(Clone, Debug)]
pub(crate) enum Membership {
    Producer(ProducerData),
    /// A consumer group with its subscriptions (whose topics are routes in use).
    Consumer(ConsumerData),
}

/// How to start a [`ClientInstance`].
pub(crate) struct InstanceConfig {
    /// `host:port[;host:port]`; `None` reads `NAMESRV_ADDR`.
    pub(crate) namesrv: Option<String>,
    /// `None`: a fresh `ip@pid#n`.
    pub(crate) client_id: Option<String>,
    /// The deadline of NameServer requests and of broker requests without their own.
    pub(crate) rpc_timeout: Duration,
    pub(crate) route_refresh_interval: Duration,
    pub(crate) heartbeat_interval: Duration,
    /// For producers: a topic without a route borrows TBW102's with this many queues.
    pub(crate) auto_create_queue_nums: Option<u32>,
    /// Answers requests brokers send this client (a consumer's rebalance notices).
    pub(crate) inbound: Option<Arc<dyn InboundRequestHandler>>,
    /// Signs every request (brokers enforcing ACL).
    pub(crate) credentials: Option<SessionCredentials>,
    /// TLS to the NameServers and brokers, or plaintext.
    pub(crate) tls: raftmq_tls::TlsConnector,
}

/// The shared route and membership machinery of one producer or consumer; see the module docs.
pub(crate) struct ClientInstance {
    client_id: String,
    rpc: RpcClient,
    broker: BrokerClient,
    routes: RouteCache,
    membership: Membership,
    heartbeat: HeartbeatData,
    route_changed: Notify,
    stop: CancellationToken,
    tasks: TaskTracker,
}

impl ClientInstance {
    /// Connects nothing yet: checks the configuration and starts the route refresh and
    /// heartbeat tasks, which run until `stop` is cancelled or [`ClientInstance::stop`].
    pub(crate) fn start(
        config: InstanceConfig,
        membership: Membership,
        stop: CancellationToken,
    ) -> Result<Arc<Self>, ClientError> {
        let addrs = namesrv_list_or_env(config.namesrv.as_deref())?;
        if config.rpc_timeout.is_zero()
            || config.route_refresh_interval.is_zero()
            || config.heartbeat_interval.is_zero()
        {
            return Err(ClientError::Config(
                "the RPC timeout, route refresh and heartbeat intervals must be positive"
                    .to_owned(),
            ));
        }
        let client_id = config.client_id.unwrap_or_else(|| new_client_id(&addrs[0]));
        let rpc_config = RpcClientConfig {
            credentials: config.credentials,
            tls: config.tls,
            ..RpcClientConfig::default()
        };
        let rpc = match config.inbound {
            Some(inbound) => RpcClient::with_inbound_handler(rpc_config, inbound),
            None => RpcClient::new(rpc_config),
        };
        let namesrv = NameServerClient::new(rpc.clone(), addrs)?.with_timeout(config.rpc_timeout);
        let routes = match config.auto_create_queue_nums {
            Some(queue_nums) => RouteCache::with_auto_create(namesrv, queue_nums),
            None => RouteCache::new(namesrv),
        };
        let heartbeat = HeartbeatData {
            client_id: client_id.clone(),
            producer_data_set: match &membership {
                Membership::Producer(producer) => vec![producer.clone()],
                Membership::Consumer(_) => Vec::new(),
            },
            consumer_data_set: match &membership {
                Membership::Producer(_) => Vec::new(),
                Membership::Consumer(consumer) => vec![consumer.clone()],
            },
        };
        let instance = Arc::new(ClientInstance {
            client_id,
            broker: BrokerClient::new(rpc.clone()).with_timeout(config.rpc_timeout),
            rpc,
            routes,
            membership,
            heartbeat,
            route_changed: Notify::new(),
            stop,
            tasks: TaskTracker::new(),
        });
        instance.tasks.spawn(route_refresh_loop(
            instance.clone(),
            config.route_refresh_interval,
        ));
        instance
            .tasks
            .spawn(heartbeat_loop(instance.clone(), config.heartbeat_interval));
        Ok(instance)
    }

    pub(crate) fn client_id(&self) -> &str {
        &self.client_id
    }

    pub(crate) fn broker(&self) -> &BrokerClient {
        &self.broker
    }

    pub(crate) fn routes(&self) -> &RouteCache {
        &self.routes
    }

    /// After a request for `topic` failed with `error`: when the error says the route in hand
    /// is wrong (not the leader, member gone, ...), fetch it again now, unless it was fetched
    /// within [`crate::route::ROUTE_REFRESH_MIN_INTERVAL`] (many failures, one fetch).
    pub(crate) async fn refresh_on_error(&self, topic: &str, error: &ClientError) {
        if error.needs_route_refresh()
            && let Err(refresh_error) = self.routes.refresh(topic).await
        {
            tracing::debug!(topic, %refresh_error, "route refresh after an error failed");
        }
    }

    /// Waits until a periodic refresh changed a route in use (members, leaders or queues).
    /// Meant for one waiter (the consumer's rebalance); a change seen while nobody waited
    /// wakes the next wait at once.
    pub(crate) async fn route_changed(&self) {
        self.route_changed.notified().await;
    }

    /// Topics whose routes are kept fresh: every cached one and every subscribed one.
    fn topics_in_use(&self) -> BTreeSet<String> {
        let mut topics: BTreeSet<String> = self.routes.topics().into_iter().collect();
        if let Membership::Consumer(consumer) = &self.membership {
            topics.extend(
                consumer
                    .subscription_data_set
                    .iter()
                    .map(|subscription| subscription.topic.clone()),
            );
        }
        topics
    }

    /// Fetches every route in use again (failures keep the old route); true when any route
    /// appeared, disappeared or changed its layout.
    async fn refresh_routes(&self) -> bool {
        let mut changed = false;
        for topic in self.topics_in_use() {
            let before = self.routes.cached(&topic);
            if let Err(error) = self.routes.refresh(&topic).await {
                tracing::debug!(topic, %error, "route refresh failed; keeping the old route");
            }
            changed |= match (before, self.routes.cached(&topic)) {
                (Some(before), Some(after)) => !before.same_layout(&after),
                (None, None) => false,
                _ => true,
            };
        }
        changed
    }

    /// Every member of every cached route: where heartbeats go.
    pub(crate) fn known_addrs(&self) -> BTreeSet<String> {
        self.routes
            .topics()
            .iter()
            .filter_map(|topic| self.routes.cached(topic))
            .flat_map(|route| route.all_addrs())
            .collect()
    }

    /// HEART_BEAT to every member of every route in use, one after the other; failures are
    /// logged (the next round tries again).
    pub(crate) async fn heartbeat_all(&self) {
        for addr in self.known_addrs() {
            if let Err(error) = self.broker.heartbeat(&addr, &self.heartbeat).await {
                tracing::debug!(addr, %error, "heartbeat failed");
            }
        }
    }

    /// Stops the route refresh and heartbeat tasks and waits for them.
    pub(crate) async fn stop(&self) {
        self.stop.cancel();
        self.tasks.close();
        self.tasks.wait().await;
    }

    /// Unregisters this client's group from every member it heartbeats to, then closes every
    /// connection. Call after [`ClientInstance::stop`] and after the last request.
    pub(crate) async fn close(&self) {
        let (producer_group, consumer_group) = match &self.membership {
            Membership::Producer(producer) => (Some(producer.group_name.as_str()), None),
            Membership::Consumer(consumer) => (None, Some(consumer.group_name.as_str())),
        };
        for addr in self.known_addrs() {
            if let Err(error) = self
                .broker
                .unregister_client(&addr, &self.client_id, producer_group, consumer_group)
                .await
            {
                tracing::debug!(addr, %error, "unregistering the client failed");
            }
        }
        self.rpc.shutdown().await;
    }
}

/// A tick every `period`, the first one `period` from now; late ticks are not made up.
fn ticker(period: Duration) -> tokio::time::Interval {
    let mut tick = tokio::time::interval_at(Instant::now() + period, period);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    tick
}

async fn route_refresh_loop(instance: Arc<ClientInstance>, period: Duration) {
    let mut tick = ticker(period);
    loop {
        tokio::select! {
            biased;
            _ = instance.stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let changed = tokio::select! {
            biased;
            _ = instance.stop.cancelled() => return,
            changed = instance.refresh_routes() => changed,
        };
        if changed {
            instance.route_changed.notify_one();
        }
    }
}

async fn heartbeat_loop(instance: Arc<ClientInstance>, period: Duration) {
    let mut tick = ticker(period);
    loop {
        tokio::select! {
            biased;
            _ = instance.stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        tokio::select! {
            biased;
            _ = instance.stop.cancelled() => return,
            _ = instance.heartbeat_all() => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use raftmq_protocol::RemotingCommand;
    use raftmq_protocol::body::SubscriptionData;
    use raftmq_protocol::code::{request, response};
    use raftmq_protocol::route::{BrokerData, QueueData, TopicRouteData, perm};
    use raftmq_remoting::{ConnectionInfo, RequestHandler, Server, ServerConfig};
    use tokio::net::TcpListener;

    use super::*;
    use crate::route::ROUTE_REFRESH_MIN_INTERVAL;

    /// Longest any condition here is waited for.
    const WAIT: Duration = Duration::from_secs(10);
    /// Intervals that never tick during a test.
    const NEVER: Duration = Duration::from_secs(3600);
    /// Intervals that tick many times during a test.
    const OFTEN: Duration = Duration::from_millis(20);

    /// What the fake NameServer and brokers saw.
    #[derive(Default)]
    struct Seen {
        routes: Mutex<BTreeMap<String, TopicRouteData>>,
        route_requests: AtomicUsize,
        /// (member address, heartbeat) in arrival order.
        heartbeats: Mutex<Vec<(String, HeartbeatData)>>,
        /// (member address, client id, producer group, consumer group).
        unregistered: Mutex<Vec<(String, String, String, String)>>,
    }

    impl Seen {
        fn heartbeats_at(&self, addr: &str) -> usize {
            let heartbeats = self.heartbeats.lock().unwrap();
            heartbeats.iter().filter(|(at, _)| at == addr).count()
        }

        fn route_requests(&self) -> usize {
            self.route_requests.load(Ordering::SeqCst)
        }

        /// One broker group `name` led by `members[0]`, with four queues.
        fn set_route(&self, topic: &str, name: &str, members: &[&str]) {
            let route = TopicRouteData {
                order_topic_conf: None,
                queue_datas: vec![QueueData {
                    broker_name: name.to_owned(),
                    read_queue_nums: 4,
                    write_queue_nums: 4,
                    perm: perm::READ_WRITE,
                    topic_sys_flag: 0,
                }],
                broker_datas: vec![BrokerData {
                    cluster: "c".to_owned(),
                    broker_name: name.to_owned(),
                    broker_addrs: (0u64..)
                        .zip(members.iter().map(|m| (*m).to_owned()))
                        .collect(),
                    zone_name: None,
                    enable_acting_master: false,
                }],
                filter_server_table: BTreeMap::new(),
            };
            self.routes.lock().unwrap().insert(topic.to_owned(), route);
        }
    }

    /// One fake server: the NameServer's route requests, and a member's heartbeats and
    /// unregistrations, recorded under its address.
    struct Fake {
        addr: String,
        seen: Arc<Seen>,
    }

    impl RequestHandler for Fake {
        async fn handle(
            &self,
            _connection: ConnectionInfo,
            request: RemotingCommand,
        ) -> Option<RemotingCommand> {
            let seen = &self.seen;
            Some(match request.code {
                request::GET_ROUTEINFO_BY_TOPIC => {
                    seen.route_requests.fetch_add(1, Ordering::SeqCst);
                    let topic = request.ext("topic").unwrap_or_default().to_owned();
                    let route = seen.routes.lock().unwrap().get(&topic).cloned();
                    match route {
                        Some(route) => request
                            .new_response(response::SUCCESS, None)
                            .with_body(route.encode().unwrap()),
                        None => request.new_response(response::TOPIC_NOT_EXIST, None),
                    }
                }
                request::HEART_BEAT => {
                    let data = HeartbeatData::decode(&request.body).unwrap();
                    seen.heartbeats
                        .lock()
                        .unwrap()
                        .push((self.addr.clone(), data));
                    request.new_response(response::SUCCESS, None)
                }
                request::UNREGISTER_CLIENT => {
                    let field = |name| request.ext(name).unwrap_or_default().to_owned();
                    seen.unregistered.lock().unwrap().push((
                        self.addr.clone(),
                        field("clientID"),
                        field("producerGroup"),
                        field("consumerGroup"),
                    ));
                    request.new_response(response::SUCCESS, None)
                }
                _ => request.new_response(response::REQUEST_CODE_NOT_SUPPORTED, None),
            })
        }
    }

    /// `count` fake servers sharing `seen`, running until `stop`; their addresses.
    async fn servers(count: usize, seen: &Arc<Seen>, stop: &CancellationToken) -> Vec<String> {
        let mut addrs = Vec::new();
        for _ in 0..count {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap().to_string();
            let handler = Arc::new(Fake {
                addr: addr.clone(),
                seen: seen.clone(),
            });
            let server = Server::new(listener, handler, ServerConfig::default());
            tokio::spawn(server.run(stop.clone().cancelled_owned()));
            addrs.push(addr);
        }
        addrs
    }

    fn config(namesrv: &str, refresh: Duration, heartbeat: Duration) -> InstanceConfig {
        InstanceConfig {
            credentials: None,
            tls: raftmq_tls::TlsConnector::plaintext(),
            namesrv: Some(namesrv.to_owned()),
            client_id: Some("10.0.0.1@1#1".to_owned()),
            rpc_timeout: Duration::from_secs(3),
            route_refresh_interval: refresh,
            heartbeat_interval: heartbeat,
            auto_create_queue_nums: None,
            inbound: None,
        }
    }

    fn producer(group: &str) -> Membership {
        Membership::Producer(ProducerData {
            group_name: group.to_owned(),
        })
    }

    fn consumer(group: &str, topics: &[&str]) -> Membership {
        Membership::Consumer(ConsumerData {
            group_name: group.to_owned(),
            subscription_data_set: topics
                .iter()
                .map(|topic| SubscriptionData {
                    topic: (*topic).to_owned(),
                    ..SubscriptionData::default()
                })
                .collect(),
            ..ConsumerData::default()
        })
    }

    async fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
        let deadline = Instant::now() + WAIT;
        while !condition() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    #[tokio::test]
    async fn heartbeats_go_to_every_member_of_the_routes_in_use_and_no_other() {
        let stop = CancellationToken::new();
        let seen = Arc::new(Seen::default());
        let addrs = servers(5, &seen, &stop).await;
        let (namesrv, m1, m2, m3, unused) = (&addrs[0], &addrs[1], &addrs[2], &addrs[3], &addrs[4]);
        seen.set_route("A", "group-a", &[m1, m2]);
        seen.set_route("B", "group-b", &[m3]);
        seen.set_route("C", "group-c", &[unused]);
        let instance = ClientInstance::start(
            config(namesrv, NEVER, NEVER),
            producer("P"),
            stop.child_token(),
        )
        .unwrap();
        instance.routes().route("A").await.unwrap();
        instance.routes().route("B").await.unwrap();

        instance.heartbeat_all().await;
        for member in [m1, m2, m3] {
            assert_eq!(seen.heartbeats_at(member), 1, "{member}");
        }
        assert_eq!(seen.heartbeats_at(unused), 0, "a route not in use");
        assert_eq!(seen.heartbeats_at(namesrv), 0);
        let (_, data) = seen.heartbeats.lock().unwrap()[0].clone();
        assert_eq!(data.client_id, "10.0.0.1@1#1");
        assert_eq!(data.producer_data_set[0].group_name, "P");
        assert!(data.consumer_data_set.is_empty());

        instance.stop().await;
        instance.close().await;
        let mut unregistered: Vec<_> = seen
            .unregistered
            .lock()
            .unwrap()
            .iter()
            .map(|(addr, id, producer, consumer)| {
                assert_eq!(
                    (id.as_str(), producer.as_str(), consumer.as_str()),
                    ("10.0.0.1@1#1", "P", "")
                );
                addr.clone()
            })
            .collect();
        unregistered.sort();
        let mut members = vec![m1.clone(), m2.clone(), m3.clone()];
        members.sort();
        assert_eq!(unregistered, members);
        // Closed: nothing more goes out.
        assert!(
            instance
                .broker()
                .heartbeat(m1, &instance.heartbeat)
                .await
                .is_err()
        );
        stop.cancel();
    }

    #[tokio::test]
    async fn the_periodic_tasks_follow_subscribed_topics_and_report_route_changes() {
        let stop = CancellationToken::new();
        let seen = Arc::new(Seen::default());
        let addrs = servers(4, &seen, &stop).await;
        let (namesrv, m1, m2, m3) = (&addrs[0], &addrs[1], &addrs[2], &addrs[3]);
        seen.set_route("A", "group-a", &[m1, m2]);
        let instance = ClientInstance::start(
            config(namesrv, OFTEN, OFTEN),
            consumer("G", &["A"]),
            stop.child_token(),
        )
        .unwrap();

        // A subscribed topic is fetched by the periodic refresh without anyone asking.
        tokio::time::timeout(WAIT, instance.route_changed())
            .await
            .expect("the subscribed topic's route appears");
        assert!(instance.routes().cached("A").is_some());
        wait_until("periodic heartbeats to both members", || {
            seen.heartbeats_at(m1) >= 2 && seen.heartbeats_at(m2) >= 2
        })
        .await;
        let (_, data) = seen.heartbeats.lock().unwrap()[0].clone();
        assert_eq!(data.consumer_data_set[0].group_name, "G");

        // A new leader: the next round sees it, says so, and heartbeats reach it.
        seen.set_route("A", "group-a", &[m3, m2]);
        tokio::time::timeout(WAIT, async {
            while instance
                .routes()
                .cached("A")
                .and_then(|r| r.leader_addr("group-a").map(str::to_owned))
                != Some(m3.clone())
            {
                instance.route_changed().await;
            }
        })
        .await
        .expect("the route change is reported");
        wait_until("heartbeats to the new leader", || {
            seen.heartbeats_at(m3) >= 1
        })
        .await;

        instance.stop().await;
        assert!(instance.tasks.is_empty(), "stop waits for both tasks");
        stop.cancel();
    }

    #[tokio::test]
    async fn a_routing_error_refreshes_the_route_at_once_and_other_errors_do_not() {
        let stop = CancellationToken::new();
        let seen = Arc::new(Seen::default());
        let addrs = servers(3, &seen, &stop).await;
        let (namesrv, m1, m2) = (&addrs[0], &addrs[1], &addrs[2]);
        seen.set_route("A", "group-a", &[m1, m2]);
        let instance = ClientInstance::start(
            config(namesrv, NEVER, NEVER),
            producer("P"),
            stop.child_token(),
        )
        .unwrap();
        instance.routes().route("A").await.unwrap();
        assert_eq!(seen.route_requests(), 1);
        let refusal = |code| ClientError::Broker {
            addr: m1.clone(),
            request: request::SEND_MESSAGE_V2,
            code,
            remark: String::new(),
        };
        let not_leader = refusal(response::SERVICE_NOT_AVAILABLE);
        let illegal = refusal(response::MESSAGE_ILLEGAL);
        seen.set_route("A", "group-a", &[m2, m1]);

        // Many requests failing at once on a route just fetched cause no new fetch.
        instance.refresh_on_error("A", &not_leader).await;
        assert_eq!(seen.route_requests(), 1);

        // Once the route is older than the rate limit, the next routing error fetches it now.
        tokio::time::pause();
        tokio::time::advance(ROUTE_REFRESH_MIN_INTERVAL).await;
        tokio::time::resume();
        instance.refresh_on_error("A", &illegal).await;
        assert_eq!(seen.route_requests(), 1, "not a routing error");
        instance.refresh_on_error("A", &not_leader).await;
        assert_eq!(seen.route_requests(), 2);
        let route = instance.routes().cached("A").unwrap();
        assert_eq!(route.leader_addr("group-a"), Some(m2.as_str()));

        instance.stop().await;
        instance.close().await;
        stop.cancel();
    }

    #[tokio::test]
    async fn zero_intervals_are_refused() {
        let stop = CancellationToken::new();
        for (refresh, heartbeat) in [(Duration::ZERO, NEVER), (NEVER, Duration::ZERO)] {
            let started = ClientInstance::start(
                config("127.0.0.1:1", refresh, heartbeat),
                producer("P"),
                stop.child_token(),
            );
            assert!(matches!(started, Err(ClientError::Config(_))));
        }
    }
}
