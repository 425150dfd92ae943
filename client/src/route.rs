//! Topic routes: [`TopicRoute`] (which broker groups hold a topic's queues, who leads each
//! group) and [`RouteCache`], the client's copy of the NameServer's routes, refreshed every
//! [`ROUTE_REFRESH_INTERVAL`] and at once (rate-limited) after a routing error.
//!
//! RaftMQ lists a broker group's current Raft leader in `brokerAddrs[0]` (the master slot every
//! RocketMQ client writes to) and its followers at their node ids. Writes and consumer-offset
//! requests go to the leader; pulls may go to any member.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use raftmq_protocol::names::AUTO_CREATE_TOPIC_KEY_TOPIC;
use raftmq_protocol::route::{MASTER_ID, TopicRouteData, perm};
use tokio::time::Instant;

use crate::error::ClientError;
use crate::message::MessageQueue;
use crate::namesrv::NameServerClient;

/// How often a client refreshes every route it uses (RocketMQ's default).
pub const ROUTE_REFRESH_INTERVAL: Duration = Duration::from_secs(30);

/// A route fetched this recently is not fetched again on a routing error: many requests
/// failing at once cause one NameServer request, not one each.
pub const ROUTE_REFRESH_MIN_INTERVAL: Duration = Duration::from_millis(200);

/// Routes one client keeps; beyond this the least recently fetched are forgotten.
pub const MAX_CACHED_ROUTES: usize = 4096;

/// The queue count a producer asks brokers to give a topic they auto-create (RaftMQ's 8).
pub const DEFAULT_TOPIC_QUEUE_NUMS: u32 = 8;

/// Where a consumer pulls from.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ReadFrom {
    /// The group's leader (slot 0); falls back to a follower when the group has no leader.
    #[default]
    Leader,
    /// A follower chosen by queue id (spreading queues over the followers); the leader when
    /// the group has no follower.
    Follower,
}

/// One broker group of a route.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BrokerGroup {
    pub broker_name: String,
    pub cluster: String,
    /// The address in slot 0: the current leader.
    pub leader: Option<String>,
    /// Every listed member by brokerId (0 = the leader slot).
    pub members: BTreeMap<u64, String>,
}

impl BrokerGroup {
    /// Followers' addresses by node id (slot 0 and the leader's own address left out).
    pub fn followers(&self) -> Vec<&str> {
        self.members
            .iter()
            .filter(|(id, addr)| **id != MASTER_ID && Some(addr.as_str()) != self.leader.as_deref())
            .map(|(_, addr)| addr.as_str())
            .collect()
    }

    /// Every distinct member address, the leader first.
    pub fn addrs(&self) -> Vec<&str> {
        let mut seen = BTreeSet::new();
        self.leader
            .iter()
            .map(String::as_str)
            .chain(self.members.values().map(String::as_str))
            .filter(|addr| seen.insert(*addr))
            .collect()
    }

    /// The member to pull `queue_id` from.
    pub fn read_addr(&self, read_from: ReadFrom, queue_id: i32) -> Option<&str> {
        let followers = self.followers();
        let follower = || {
            (!followers.is_empty()).then(|| {
                let index = usize::try_from(queue_id.unsigned_abs()).unwrap_or(0) % followers.len();
                followers[index]
            })
        };
        match read_from {
            ReadFrom::Leader => self.leader.as_deref().or_else(follower),
            ReadFrom::Follower => follower().or(self.leader.as_deref()),
        }
    }
}

/// A topic's route, digested for use.
#[derive(Debug)]
pub struct TopicRoute {
    pub topic: String,
    /// The NameServer's answer as it came (for a route borrowed from TBW102: TBW102's).
    pub data: TopicRouteData,
    pub groups: BTreeMap<String, BrokerGroup>,
    /// Writable queues, by broker name then queue id (RocketMQ's order), leader or not.
    pub write_queues: Vec<MessageQueue>,
    /// Readable queues, by broker name then queue id.
    pub read_queues: Vec<MessageQueue>,
    /// The topic is not known yet and this route is TBW102's: brokers create the topic on the
    /// first send.
    pub from_default_topic: bool,
    /// Round-robin position of the producer's queue selection.
    pub(crate) next_queue: AtomicUsize,
}

impl TopicRoute {
    pub fn new(topic: &str, data: TopicRouteData) -> Self {
        TopicRoute::build(topic, data, None)
    }

    /// A route for `topic` made from TBW102's: each group's queues capped at `max_queues`.
    pub fn from_default_topic(topic: &str, data: TopicRouteData, max_queues: u32) -> Self {
        TopicRoute::build(topic, data, Some(max_queues))
    }

    fn build(topic: &str, data: TopicRouteData, cap: Option<u32>) -> Self {
        let groups: BTreeMap<String, BrokerGroup> = data
            .broker_datas
            .iter()
            .map(|broker| {
                (
                    broker.broker_name.clone(),
                    BrokerGroup {
                        broker_name: broker.broker_name.clone(),
                        cluster: broker.cluster.clone(),
                        leader: broker.broker_addrs.get(&MASTER_ID).cloned(),
                        members: broker.broker_addrs.clone(),
                    },
                )
            })
            .collect();
        let mut queue_datas: Vec<_> = data
            .queue_datas
            .iter()
            .filter(|queue_data| groups.contains_key(&queue_data.broker_name))
            .collect();
        queue_datas.sort_by(|a, b| a.broker_name.cmp(&b.broker_name));
        let mut write_queues = Vec::new();
        let mut read_queues = Vec::new();
        let mut seen_groups = BTreeSet::new();
        for queue_data in queue_datas {
            // A group listed twice keeps its first entry.
            if !seen_groups.insert(queue_data.broker_name.clone()) {
                continue;
            }
            let cap = cap.unwrap_or(u32::MAX);
            let queues = |count: u32, allowed: bool| {
                let count = if allowed { count.min(cap) } else { 0 };
                (0..count).filter_map(|queue_id| {
                    Some(MessageQueue {
                        topic: topic.to_owned(),
                        broker_name: queue_data.broker_name.clone(),
                        queue_id: i32::try_from(queue_id).ok()?,
                    })
                })
            };
            write_queues.extend(queues(
                queue_data.write_queue_nums,
                queue_data.perm & perm::WRITE != 0,
            ));
            read_queues.extend(queues(
                queue_data.read_queue_nums,
                queue_data.perm & perm::READ != 0,
            ));
        }
        TopicRoute {
            topic: topic.to_owned(),
            data,
            groups,
            write_queues,
            read_queues,
            from_default_topic: cap.is_some(),
            next_queue: AtomicUsize::new(0),
        }
    }

    /// The leader of `broker_name`, where writes and consumer offsets go.
    pub fn leader_addr(&self, broker_name: &str) -> Option<&str> {
        self.groups.get(broker_name)?.leader.as_deref()
    }

    /// The member to pull `queue` from.
    pub fn read_addr(&self, queue: &MessageQueue, read_from: ReadFrom) -> Option<&str> {
        self.groups
            .get(&queue.broker_name)?
            .read_addr(read_from, queue.queue_id)
    }

    /// Every member address of every group, sorted.
    pub fn all_addrs(&self) -> BTreeSet<String> {
        self.groups
            .values()
            .flat_map(|group| group.addrs())
            .map(str::to_owned)
            .collect()
    }

    /// Leaders of every group, by broker name.
    pub fn leaders(&self) -> Vec<(&str, &str)> {
        self.groups
            .values()
            .filter_map(|group| Some((group.broker_name.as_str(), group.leader.as_deref()?)))
            .collect()
    }

    pub(crate) fn next_round_robin(&self) -> usize {
        self.next_queue.fetch_add(1, Ordering::Relaxed)
    }

    /// Whether two routes send and read the same way (same queues and same members).
    pub fn same_layout(&self, other: &TopicRoute) -> bool {
        self.groups == other.groups
            && self.write_queues == other.write_queues
            && self.read_queues == other.read_queues
    }
}

/// When a cached route is good enough not to fetch it again.
enum Freshness<'a> {
    /// It was fetched less than this long ago.
    YoungerThan(Duration),
    /// It is not this route (someone fetched a newer one).
    Replaces(&'a Arc<TopicRoute>),
}

struct CacheEntry {
    route: Arc<TopicRoute>,
    fetched_at: Instant,
}

/// The routes a client uses, fetched from the NameServers on first use and kept fresh.
#[derive(Debug)]
pub struct RouteCache {
    namesrv: NameServerClient,
    /// For producers: the queue count to borrow TBW102's route with when a topic has none.
    auto_create_queue_nums: Option<u32>,
    entries: Mutex<HashMap<String, CacheEntry>>,
    /// Serialises fetches, so that concurrent routing errors cause one fetch.
    fetch_lock: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for CacheEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CacheEntry")
            .field("topic", &self.route.topic)
            .finish_non_exhaustive()
    }
}

impl RouteCache {
    /// A cache for consumers and tools: a topic without a route is an error.
    pub fn new(namesrv: NameServerClient) -> Self {
        RouteCache {
            namesrv,
            auto_create_queue_nums: None,
            entries: Mutex::new(HashMap::new()),
            fetch_lock: tokio::sync::Mutex::new(()),
        }
    }

    /// A cache for producers: a topic without a route borrows TBW102's (queues capped at
    /// `queue_nums`), so that the broker auto-creates it on the first send.
    pub fn with_auto_create(namesrv: NameServerClient, queue_nums: u32) -> Self {
        RouteCache {
            auto_create_queue_nums: Some(queue_nums),
            ..RouteCache::new(namesrv)
        }
    }

    pub fn namesrv(&self) -> &NameServerClient {
        &self.namesrv
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, CacheEntry>> {
        self.entries
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    /// The cached route, however old.
    pub fn cached(&self, topic: &str) -> Option<Arc<TopicRoute>> {
        self.lock().get(topic).map(|entry| entry.route.clone())
    }

    /// Topics with a cached route.
    pub fn topics(&self) -> Vec<String> {
        let mut topics: Vec<String> = self.lock().keys().cloned().collect();
        topics.sort();
        topics
    }

    /// The route of `topic`: the cached one, or a fresh one on first use.
    pub async fn route(&self, topic: &str) -> Result<Arc<TopicRoute>, ClientError> {
        if let Some(route) = self.cached(topic) {
            return Ok(route);
        }
        self.fetch(topic, Duration::MAX).await
    }

    /// Fetches the route of `topic` now, unless it was fetched within
    /// [`ROUTE_REFRESH_MIN_INTERVAL`]. Call after a routing error.
    pub async fn refresh(&self, topic: &str) -> Result<Arc<TopicRoute>, ClientError> {
        self.fetch(topic, ROUTE_REFRESH_MIN_INTERVAL).await
    }

    /// Fetches the route of `topic` now unless it changed since `seen` was handed out (another
    /// caller refreshed it meanwhile). A request that failed on `seen` calls this: many
    /// failing at once cause one fetch, and a lone failure always gets a fresh route.
    pub async fn refresh_after(
        &self,
        seen: &Arc<TopicRoute>,
    ) -> Result<Arc<TopicRoute>, ClientError> {
        self.fetch_inner(&seen.topic, Freshness::Replaces(seen))
            .await
    }

    /// Fetches every cached route again; failures keep the old route. Called every
    /// [`ROUTE_REFRESH_INTERVAL`].
    pub async fn refresh_all(&self) {
        for topic in self.topics() {
            if let Err(error) = self.fetch(&topic, Duration::ZERO).await {
                tracing::debug!(topic, %error, "route refresh failed; keeping the old route");
            }
        }
    }

    /// Forgets `topic` (a deleted topic, a finished subscription).
    pub fn forget(&self, topic: &str) {
        self.lock().remove(topic);
    }

    async fn fetch(
        &self,
        topic: &str,
        fresh_enough: Duration,
    ) -> Result<Arc<TopicRoute>, ClientError> {
        self.fetch_inner(topic, Freshness::YoungerThan(fresh_enough))
            .await
    }

    async fn fetch_inner(
        &self,
        topic: &str,
        keep: Freshness<'_>,
    ) -> Result<Arc<TopicRoute>, ClientError> {
        let _serialised = self.fetch_lock.lock().await;
        if let Some(entry) = self.lock().get(topic) {
            let keep = match keep {
                Freshness::YoungerThan(age) => entry.fetched_at.elapsed() < age,
                Freshness::Replaces(seen) => !Arc::ptr_eq(&entry.route, seen),
            };
            if keep {
                return Ok(entry.route.clone());
            }
        }
        let route = match self.namesrv.topic_route(topic).await? {
            Some(data) => TopicRoute::new(topic, data),
            None => match self.auto_create_queue_nums {
                Some(queue_nums) => match self
                    .namesrv
                    .topic_route(AUTO_CREATE_TOPIC_KEY_TOPIC)
                    .await?
                {
                    Some(data) => TopicRoute::from_default_topic(topic, data, queue_nums),
                    None => return Err(self.missing(topic, "neither it nor TBW102 has a route")),
                },
                None => return Err(self.missing(topic, "the NameServer does not know it")),
            },
        };
        let route = Arc::new(route);
        let mut entries = self.lock();
        if let Some(old) = entries.get(topic) {
            if !old.route.same_layout(&route) {
                tracing::info!(topic, "route changed");
            } else {
                // Keep the round-robin position across refreshes that change nothing.
                route.next_queue.store(
                    old.route.next_queue.load(Ordering::Relaxed),
                    Ordering::Relaxed,
                );
            }
        }
        if entries.len() >= MAX_CACHED_ROUTES && !entries.contains_key(topic) {
            let oldest = entries
                .iter()
                .min_by_key(|(_, entry)| entry.fetched_at)
                .map(|(topic, _)| topic.clone());
            if let Some(oldest) = oldest {
                entries.remove(&oldest);
            }
        }
        entries.insert(
            topic.to_owned(),
            CacheEntry {
                route: route.clone(),
                fetched_at: Instant::now(),
            },
        );
        Ok(route)
    }

    fn missing(&self, topic: &str, reason: &str) -> ClientError {
        // A topic that disappeared (deleted) is forgotten.
        self.forget(topic);
        ClientError::NoRoute {
            topic: topic.to_owned(),
            reason: reason.to_owned(),
        }
    }
}

#[cfg(test)]
mod tests {
    use raftmq_protocol::route::{BrokerData, QueueData};

    use super::*;

    fn group(name: &str, addrs: &[(u64, &str)]) -> BrokerData {
        BrokerData {
            cluster: "c".into(),
            broker_name: name.into(),
            broker_addrs: addrs.iter().map(|(id, a)| (*id, (*a).to_owned())).collect(),
            zone_name: None,
            enable_acting_master: false,
        }
    }

    fn queues(name: &str, read: u32, write: u32, perm: u32) -> QueueData {
        QueueData {
            broker_name: name.into(),
            read_queue_nums: read,
            write_queue_nums: write,
            perm,
            topic_sys_flag: 0,
        }
    }

    fn data() -> TopicRouteData {
        TopicRouteData {
            order_topic_conf: None,
            // Out of order on purpose: queues are sorted by broker name.
            queue_datas: vec![
                queues("broker-b", 2, 2, perm::READ_WRITE),
                queues("broker-a", 3, 2, perm::READ_WRITE),
                queues("broker-c", 4, 4, perm::READ),
                queues("ghost", 4, 4, perm::READ_WRITE),
            ],
            broker_datas: vec![
                group(
                    "broker-a",
                    &[(0, "a1:1"), (1, "a1:1"), (2, "a2:1"), (3, "a3:1")],
                ),
                group("broker-b", &[(2, "b2:1"), (3, "b3:1")]),
                group("broker-c", &[(0, "c1:1")]),
            ],
            filter_server_table: BTreeMap::new(),
        }
    }

    fn ids(queues: &[MessageQueue]) -> Vec<(String, i32)> {
        queues
            .iter()
            .map(|q| (q.broker_name.clone(), q.queue_id))
            .collect()
    }

    #[test]
    fn queues_follow_permissions_and_sort_by_broker() {
        let route = TopicRoute::new("T", data());
        assert_eq!(
            ids(&route.write_queues),
            vec![
                ("broker-a".into(), 0),
                ("broker-a".into(), 1),
                ("broker-b".into(), 0),
                ("broker-b".into(), 1),
            ]
        );
        assert_eq!(route.read_queues.len(), 3 + 2 + 4);
        assert!(route.read_queues.iter().all(|q| q.topic == "T"));
        // A group the route does not describe has no queues.
        assert!(route.read_queues.iter().all(|q| q.broker_name != "ghost"));
        assert!(!route.from_default_topic);
    }

    #[test]
    fn slot_zero_is_the_leader_and_followers_exclude_it() {
        let route = TopicRoute::new("T", data());
        assert_eq!(route.leader_addr("broker-a"), Some("a1:1"));
        assert_eq!(route.leader_addr("broker-b"), None);
        let a = &route.groups["broker-a"];
        assert_eq!(a.followers(), vec!["a2:1", "a3:1"]);
        assert_eq!(a.addrs(), vec!["a1:1", "a2:1", "a3:1"]);
        let queue = |broker: &str, queue_id| MessageQueue {
            topic: "T".into(),
            broker_name: broker.into(),
            queue_id,
        };
        assert_eq!(
            route.read_addr(&queue("broker-a", 0), ReadFrom::Leader),
            Some("a1:1")
        );
        assert_eq!(
            route.read_addr(&queue("broker-a", 0), ReadFrom::Follower),
            Some("a2:1")
        );
        assert_eq!(
            route.read_addr(&queue("broker-a", 1), ReadFrom::Follower),
            Some("a3:1")
        );
        // No leader: pulls go to a follower anyway.
        assert_eq!(
            route.read_addr(&queue("broker-b", 1), ReadFrom::Leader),
            Some("b3:1")
        );
        // No follower: pulls go to the leader.
        assert_eq!(
            route.read_addr(&queue("broker-c", 1), ReadFrom::Follower),
            Some("c1:1")
        );
        assert_eq!(route.read_addr(&queue("nope", 1), ReadFrom::Leader), None);
        assert_eq!(
            route.leaders(),
            vec![("broker-a", "a1:1"), ("broker-c", "c1:1")]
        );
        assert_eq!(route.all_addrs().len(), 6);
    }

    #[test]
    fn default_topic_route_caps_queues_and_renames() {
        let route = TopicRoute::from_default_topic("New", data(), 1);
        assert!(route.from_default_topic);
        assert_eq!(
            ids(&route.write_queues),
            vec![("broker-a".into(), 0), ("broker-b".into(), 0)]
        );
        assert!(route.write_queues.iter().all(|q| q.topic == "New"));
    }

    #[test]
    fn decodes_a_java_route_and_builds_it() {
        let java = br#"{"brokerDatas":[{"brokerAddrs":{0:"127.0.0.1:10911",2:"127.0.0.1:10921"},"brokerName":"broker-a","cluster":"DefaultCluster","enableActingMaster":false}],"filterServerTable":{},"queueDatas":[{"brokerName":"broker-a","perm":6,"readQueueNums":8,"topicSysFlag":0,"writeQueueNums":8}]}"#;
        let route = TopicRoute::new("T", TopicRouteData::decode(java).unwrap());
        assert_eq!(route.write_queues.len(), 8);
        assert_eq!(route.leader_addr("broker-a"), Some("127.0.0.1:10911"));
        assert_eq!(
            route.groups["broker-a"].followers(),
            vec!["127.0.0.1:10921"]
        );
    }
}
