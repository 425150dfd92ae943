//! The producers and consumers that heartbeat to this member, by connection.
//!
//! Not replicated, as in RocketMQ: clients heartbeat every 30 s to the brokers they use, so a new
//! leader knows its clients again within one heartbeat. A client leaves when its connection
//! closes, when it unregisters, or after `CLIENT_EXPIRY` without a heartbeat.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use raftmq_protocol::body::{HeartbeatData, SubscriptionData};
use raftmq_remoting::server::ConnectionHandle;

/// A client silent this long is dropped (RocketMQ's channel expiry: 120 s).
pub const CLIENT_EXPIRY: Duration = Duration::from_secs(120);
/// Bounds what one member remembers, so a misbehaving client cannot grow it without end.
pub const MAX_CLIENTS_PER_GROUP: usize = 4096;
pub const MAX_GROUPS: usize = 16384;
/// Most `(group, topic, queue)` pull records kept (which client pulled a queue last); past it
/// the oldest record is dropped.
pub const MAX_PULL_RECORDS: usize = 65_536;

/// One consumer client of a group.
#[derive(Debug, Clone)]
pub struct ConsumerClient {
    pub connection_id: u64,
    pub last_seen: Instant,
    pub consume_type: String,
    pub message_model: String,
    pub consume_from_where: String,
    pub subscriptions: Vec<SubscriptionData>,
}

#[derive(Debug, Clone)]
struct ProducerClient {
    connection_id: u64,
    last_seen: Instant,
}

#[derive(Default)]
struct Registry {
    /// group -> client id -> client
    consumers: BTreeMap<String, BTreeMap<String, ConsumerClient>>,
    producers: BTreeMap<String, BTreeMap<String, ProducerClient>>,
    /// How to reach each connection that has heartbeated (to notify consumers of changes).
    handles: BTreeMap<u64, ConnectionHandle>,
    /// The last pull of each `(group, topic, queue)` served here.
    pulls: BTreeMap<(String, String, u32), LastPull>,
}

/// The last pull of one queue by one group, served by this member.
#[derive(Debug, Clone, Copy)]
struct LastPull {
    connection_id: u64,
    at: Instant,
    /// The offset after the last message returned.
    next_offset: u64,
}

/// Which client of a group pulled one of its queues last, and how far.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueuePuller {
    /// `None` when the connection's client no longer heartbeats.
    pub client_id: Option<String>,
    /// The offset after the last message this member returned to the group.
    pub next_offset: u64,
}

/// Live connections of one consumer group and consume type (for the connection gauges).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerCount {
    pub group: String,
    /// RocketMQ's `CONSUME_PASSIVELY` (push) or `CONSUME_ACTIVELY` (pull).
    pub consume_type: String,
    pub clients: usize,
}

/// A consumer group's membership as seen by this member.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupMembers {
    pub group: String,
    pub client_ids: Vec<String>,
}

/// Why a heartbeat was not (wholly) taken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegistryError {
    #[error("heartbeat without a client id")]
    MissingClientId,
    #[error(
        "too many groups or clients (limits {MAX_GROUPS} groups, {MAX_CLIENTS_PER_GROUP} clients a group)"
    )]
    Full,
}

/// Live clients by group.
#[derive(Default)]
pub struct ClientRegistry {
    inner: Mutex<Registry>,
}

impl ClientRegistry {
    fn lock(&self) -> std::sync::MutexGuard<'_, Registry> {
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Records a heartbeat. Returns the consumer groups whose membership changed (a client
    /// joined), whose members should rebalance.
    pub fn heartbeat(
        &self,
        connection_id: u64,
        handle: Option<ConnectionHandle>,
        data: &HeartbeatData,
        now: Instant,
    ) -> Result<Vec<String>, RegistryError> {
        if data.client_id.is_empty() {
            return Err(RegistryError::MissingClientId);
        }
        let mut registry = self.lock();
        if let Some(handle) = handle {
            registry.handles.insert(connection_id, handle);
        }
        let mut changed = Vec::new();
        for consumer in &data.consumer_data_set {
            let group_count = registry.consumers.len();
            let group = match registry.consumers.get_mut(&consumer.group_name) {
                Some(group) => group,
                None if group_count >= MAX_GROUPS => return Err(RegistryError::Full),
                None => registry
                    .consumers
                    .entry(consumer.group_name.clone())
                    .or_default(),
            };
            if !group.contains_key(&data.client_id) && group.len() >= MAX_CLIENTS_PER_GROUP {
                return Err(RegistryError::Full);
            }
            let client = ConsumerClient {
                connection_id,
                last_seen: now,
                consume_type: consumer.consume_type.clone(),
                message_model: consumer.message_model.clone(),
                consume_from_where: consumer.consume_from_where.clone(),
                subscriptions: consumer.subscription_data_set.clone(),
            };
            if group.insert(data.client_id.clone(), client).is_none() {
                changed.push(consumer.group_name.clone());
            }
        }
        for producer in &data.producer_data_set {
            let group_count = registry.producers.len();
            let group = match registry.producers.get_mut(&producer.group_name) {
                Some(group) => group,
                None if group_count >= MAX_GROUPS => return Err(RegistryError::Full),
                None => registry
                    .producers
                    .entry(producer.group_name.clone())
                    .or_default(),
            };
            if !group.contains_key(&data.client_id) && group.len() >= MAX_CLIENTS_PER_GROUP {
                return Err(RegistryError::Full);
            }
            group.insert(
                data.client_id.clone(),
                ProducerClient {
                    connection_id,
                    last_seen: now,
                },
            );
        }
        Ok(changed)
    }

    /// UNREGISTER_CLIENT: the client leaves the named groups. Returns changed consumer groups.
    pub fn unregister(
        &self,
        client_id: &str,
        producer_group: Option<&str>,
        consumer_group: Option<&str>,
    ) -> Vec<String> {
        let mut registry = self.lock();
        if let Some(group) = producer_group.and_then(|g| registry.producers.get_mut(g)) {
            group.remove(client_id);
        }
        let mut changed = Vec::new();
        if let Some(name) = consumer_group
            && let Some(group) = registry.consumers.get_mut(name)
            && group.remove(client_id).is_some()
        {
            changed.push(name.to_string());
        }
        prune(&mut registry);
        changed
    }

    /// A connection closed: every client on it leaves. Returns changed consumer groups.
    pub fn connection_closed(&self, connection_id: u64) -> Vec<String> {
        self.lock().handles.remove(&connection_id);
        self.remove_where(|client_connection, _| client_connection == connection_id)
    }

    /// Drops clients silent for `CLIENT_EXPIRY`. Returns changed consumer groups.
    pub fn expire(&self, now: Instant) -> Vec<String> {
        self.remove_where(|_, last_seen| now.saturating_duration_since(last_seen) >= CLIENT_EXPIRY)
    }

    fn remove_where(&self, gone: impl Fn(u64, Instant) -> bool) -> Vec<String> {
        let mut registry = self.lock();
        let mut changed = Vec::new();
        for (name, group) in registry.consumers.iter_mut() {
            let before = group.len();
            group.retain(|_, client| !gone(client.connection_id, client.last_seen));
            if group.len() != before {
                changed.push(name.clone());
            }
        }
        for group in registry.producers.values_mut() {
            group.retain(|_, client| !gone(client.connection_id, client.last_seen));
        }
        prune(&mut registry);
        changed
    }

    /// The client ids of a consumer group, sorted (every consumer allocates queues by this
    /// order, so they must all see the same one).
    pub fn consumer_ids(&self, group: &str) -> Vec<String> {
        self.lock()
            .consumers
            .get(group)
            .map(|clients| clients.keys().cloned().collect())
            .unwrap_or_default()
    }

    /// The connections of a consumer group's clients (to notify them of membership changes).
    pub fn consumer_connections(&self, group: &str) -> Vec<u64> {
        let registry = self.lock();
        let mut connections: Vec<u64> = registry
            .consumers
            .get(group)
            .map(|clients| clients.values().map(|c| c.connection_id).collect())
            .unwrap_or_default();
        connections.sort_unstable();
        connections.dedup();
        connections
    }

    /// Handles to the connections of a consumer group's clients.
    pub fn consumer_handles(&self, group: &str) -> Vec<ConnectionHandle> {
        let connections = self.consumer_connections(group);
        let registry = self.lock();
        connections
            .iter()
            .filter_map(|id| registry.handles.get(id).cloned())
            .collect()
    }

    /// Handles to the live connections of a producer group's clients, by client id (to ask
    /// one of them about a pending transaction).
    pub fn producer_handles(&self, group: &str) -> Vec<ConnectionHandle> {
        let registry = self.lock();
        registry
            .producers
            .get(group)
            .into_iter()
            .flat_map(|clients| clients.values())
            .filter_map(|client| registry.handles.get(&client.connection_id).cloned())
            .filter(|handle| !handle.is_closed())
            .collect()
    }

    /// Every consumer group with its members.
    pub fn consumer_groups(&self) -> Vec<GroupMembers> {
        self.lock()
            .consumers
            .iter()
            .map(|(group, clients)| GroupMembers {
                group: group.clone(),
                client_ids: clients.keys().cloned().collect(),
            })
            .collect()
    }

    /// Records a pull of `group` on a queue that returned messages up to `next_offset`.
    pub fn pulled(
        &self,
        group: &str,
        queue: (&str, u32),
        connection_id: u64,
        next_offset: u64,
        now: Instant,
    ) {
        let mut registry = self.lock();
        let key = (group.to_string(), queue.0.to_string(), queue.1);
        if !registry.pulls.contains_key(&key) && registry.pulls.len() >= MAX_PULL_RECORDS {
            // Full: forget the stalest record (a bounded scan, only when the table is full).
            if let Some(stalest) = registry
                .pulls
                .iter()
                .min_by_key(|(_, pull)| pull.at)
                .map(|(key, _)| key.clone())
            {
                registry.pulls.remove(&stalest);
            }
        }
        registry.pulls.insert(
            key,
            LastPull {
                connection_id,
                at: now,
                next_offset,
            },
        );
    }

    /// Who pulled `group`'s queue last within [`CLIENT_EXPIRY`], and how far.
    pub fn queue_puller(
        &self,
        group: &str,
        queue: (&str, u32),
        now: Instant,
    ) -> Option<QueuePuller> {
        let registry = self.lock();
        let pull = registry
            .pulls
            .get(&(group.to_string(), queue.0.to_string(), queue.1))
            .filter(|pull| now.saturating_duration_since(pull.at) < CLIENT_EXPIRY)?;
        let client_id = registry.consumers.get(group).and_then(|clients| {
            clients
                .iter()
                .find(|(_, client)| client.connection_id == pull.connection_id)
                .map(|(id, _)| id.clone())
        });
        Some(QueuePuller {
            client_id,
            next_offset: pull.next_offset,
        })
    }

    /// Drops the pull records of a topic (it was deleted) or of stale pulls.
    pub fn forget_pulls(&self, keep: impl Fn(&str, &str) -> bool, now: Instant) {
        self.lock().pulls.retain(|(group, topic, _), pull| {
            keep(group, topic) && now.saturating_duration_since(pull.at) < CLIENT_EXPIRY
        });
    }

    /// Live consumer clients by group and consume type.
    pub fn consumer_counts(&self) -> Vec<ConsumerCount> {
        let registry = self.lock();
        let mut counts: BTreeMap<(String, String), usize> = BTreeMap::new();
        for (group, clients) in &registry.consumers {
            for client in clients.values() {
                *counts
                    .entry((group.clone(), client.consume_type.clone()))
                    .or_default() += 1;
            }
        }
        counts
            .into_iter()
            .map(|((group, consume_type), clients)| ConsumerCount {
                group,
                consume_type,
                clients,
            })
            .collect()
    }

    /// Live producer clients (each client id once, whatever its groups).
    pub fn producer_count(&self) -> usize {
        let registry = self.lock();
        let ids: std::collections::BTreeSet<&String> = registry
            .producers
            .values()
            .flat_map(|clients| clients.keys())
            .collect();
        ids.len()
    }

    /// A group's subscription to a topic, as its most recent heartbeating client sent it.
    pub fn subscription(&self, group: &str, topic: &str) -> Option<SubscriptionData> {
        let registry = self.lock();
        registry
            .consumers
            .get(group)?
            .values()
            .max_by_key(|client| client.last_seen)?
            .subscriptions
            .iter()
            .find(|s| s.topic == topic)
            .cloned()
    }
}

fn prune(registry: &mut Registry) {
    registry.consumers.retain(|_, clients| !clients.is_empty());
    registry.producers.retain(|_, clients| !clients.is_empty());
    // Forget handles of connections no client uses any more.
    let live: std::collections::BTreeSet<u64> = registry
        .consumers
        .values()
        .flat_map(|clients| clients.values().map(|c| c.connection_id))
        .chain(
            registry
                .producers
                .values()
                .flat_map(|clients| clients.values().map(|c| c.connection_id)),
        )
        .collect();
    registry.handles.retain(|id, _| live.contains(id));
}

#[cfg(test)]
mod tests {
    use super::*;
    use raftmq_protocol::body::{ConsumerData, ProducerData};

    fn heartbeat(client: &str, group: &str) -> HeartbeatData {
        HeartbeatData {
            client_id: client.into(),
            producer_data_set: vec![ProducerData {
                group_name: "pg".into(),
            }],
            consumer_data_set: vec![ConsumerData {
                group_name: group.into(),
                subscription_data_set: vec![SubscriptionData {
                    topic: "T".into(),
                    sub_string: "*".into(),
                    ..Default::default()
                }],
                ..Default::default()
            }],
        }
    }

    #[test]
    fn the_last_puller_of_a_queue_is_known_until_it_expires() {
        let registry = ClientRegistry::default();
        let now = Instant::now();
        registry
            .heartbeat(7, None, &heartbeat("c@7", "g"), now)
            .unwrap();
        registry.pulled("g", ("T", 1), 7, 42, now);
        registry.pulled("g", ("T", 2), 99, 5, now);
        assert_eq!(
            registry.queue_puller("g", ("T", 1), now),
            Some(QueuePuller {
                client_id: Some("c@7".into()),
                next_offset: 42
            })
        );
        // A connection without a heartbeating client: the offset, no client.
        assert_eq!(
            registry.queue_puller("g", ("T", 2), now).unwrap().client_id,
            None
        );
        assert_eq!(registry.queue_puller("g", ("T", 3), now), None);
        let later = now + CLIENT_EXPIRY;
        assert_eq!(registry.queue_puller("g", ("T", 1), later), None);
        registry.forget_pulls(|_, topic| topic != "T", now);
        assert_eq!(registry.queue_puller("g", ("T", 1), now), None);
        assert_eq!(registry.producer_count(), 1);
        assert_eq!(
            registry.consumer_counts(),
            vec![ConsumerCount {
                group: "g".into(),
                consume_type: String::new(),
                clients: 1
            }]
        );
    }

    #[test]
    fn joins_leaves_and_closed_connections_change_the_group() {
        let registry = ClientRegistry::default();
        let now = Instant::now();
        assert_eq!(
            registry
                .heartbeat(1, None, &heartbeat("b@1", "g"), now)
                .unwrap(),
            vec!["g"]
        );
        assert_eq!(
            registry
                .heartbeat(2, None, &heartbeat("a@2", "g"), now)
                .unwrap(),
            vec!["g"]
        );
        // A repeated heartbeat changes nothing.
        assert!(
            registry
                .heartbeat(1, None, &heartbeat("b@1", "g"), now)
                .unwrap()
                .is_empty()
        );
        assert_eq!(registry.consumer_ids("g"), vec!["a@2", "b@1"]);
        assert_eq!(registry.consumer_connections("g"), vec![1, 2]);
        assert_eq!(registry.subscription("g", "T").unwrap().sub_string, "*");

        assert_eq!(registry.connection_closed(1), vec!["g"]);
        assert_eq!(registry.consumer_ids("g"), vec!["a@2"]);
        assert_eq!(registry.unregister("a@2", Some("pg"), Some("g")), vec!["g"]);
        assert!(registry.consumer_groups().is_empty());
    }

    #[test]
    fn silent_clients_expire() {
        let registry = ClientRegistry::default();
        let start = Instant::now();
        registry
            .heartbeat(1, None, &heartbeat("old", "g"), start)
            .unwrap();
        registry
            .heartbeat(
                2,
                None,
                &heartbeat("fresh", "g"),
                start + Duration::from_secs(100),
            )
            .unwrap();
        assert!(registry.expire(start + Duration::from_secs(119)).is_empty());
        assert_eq!(registry.expire(start + CLIENT_EXPIRY), vec!["g"]);
        assert_eq!(registry.consumer_ids("g"), vec!["fresh"]);
    }

    #[test]
    fn a_heartbeat_without_client_id_is_refused() {
        let registry = ClientRegistry::default();
        let err = registry
            .heartbeat(1, None, &heartbeat("", "g"), Instant::now())
            .unwrap_err();
        assert_eq!(err, RegistryError::MissingClientId);
    }
}
