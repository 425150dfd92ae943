//! [`Admin`]: what `mqadmin`-style tools and test harnesses do with a cluster — routes and
//! cluster info, topic creation and deletion, queue and consumer offsets, and raw pulls from
//! the leader or from a member you name (to read what one member holds).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use raftmq_protocol::route::MASTER_ID;
pub use raftmq_protocol::route::{ClusterInfo, TopicConfig};

use crate::broker_client::{
    BrokerClient, DEFAULT_RPC_TIMEOUT, MAX_PULL_BATCH, PullRequest, PullResult, PullStatus,
};
use crate::error::ClientError;
use crate::message::{MessageQueue, ReceivedMessage, validate_topic};
use crate::namesrv::{NameServerClient, namesrv_list_or_env};
use crate::route::TopicRoute;
use raftmq_remoting::RpcClient;

/// The consumer group admin pulls name (RocketMQ's tools use the same).
pub const ADMIN_PULL_GROUP: &str = "TOOLS_CONSUMER";

/// Most messages [`Admin::read_queue`] returns in one call.
pub const MAX_READ_MESSAGES: usize = 1_000_000;

/// A queue's offsets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QueueStatus {
    pub queue: MessageQueue,
    /// The first offset still stored.
    pub min_offset: i64,
    /// The offset after the last message.
    pub max_offset: i64,
}

/// Administration of a RaftMQ (or RocketMQ) cluster through its NameServers.
#[derive(Clone, Debug)]
pub struct Admin {
    rpc: RpcClient,
    namesrv: NameServerClient,
    broker: BrokerClient,
}

impl Admin {
    /// An admin client for the NameServers in `namesrv` (`host:port[;host:port]`), or in
    /// `NAMESRV_ADDR` when `None`; requests time out after 3 s.
    pub fn new(namesrv: Option<&str>) -> Result<Self, ClientError> {
        Admin::with_timeout(namesrv, DEFAULT_RPC_TIMEOUT)
    }

    pub fn with_timeout(namesrv: Option<&str>, timeout: Duration) -> Result<Self, ClientError> {
        Admin::with_credentials(namesrv, timeout, None)
    }

    /// An admin client whose requests are signed with `credentials` (brokers enforcing ACL;
    /// topic administration needs an admin account).
    pub fn with_credentials(
        namesrv: Option<&str>,
        timeout: Duration,
        credentials: Option<raftmq_protocol::acl::SessionCredentials>,
    ) -> Result<Self, ClientError> {
        Admin::with_rpc_config(
            namesrv,
            timeout,
            raftmq_remoting::RpcClientConfig {
                credentials,
                ..Default::default()
            },
        )
    }

    /// An admin client whose connections are made as `rpc` says (TLS, credentials, limits).
    pub fn with_rpc_config(
        namesrv: Option<&str>,
        timeout: Duration,
        rpc: raftmq_remoting::RpcClientConfig,
    ) -> Result<Self, ClientError> {
        let addrs = namesrv_list_or_env(namesrv)?;
        let rpc = RpcClient::new(rpc);
        Ok(Admin {
            namesrv: NameServerClient::new(rpc.clone(), addrs)?.with_timeout(timeout),
            broker: BrokerClient::new(rpc.clone()).with_timeout(timeout),
            rpc,
        })
    }

    pub fn namesrv(&self) -> &NameServerClient {
        &self.namesrv
    }

    /// Requests to a broker address of your choice.
    pub fn broker(&self) -> &BrokerClient {
        &self.broker
    }

    /// The current route of `topic`; `Ok(None)` when the NameServer does not know it.
    pub async fn route(&self, topic: &str) -> Result<Option<TopicRoute>, ClientError> {
        Ok(self
            .namesrv
            .topic_route(topic)
            .await?
            .map(|data| TopicRoute::new(topic, data)))
    }

    async fn existing_route(&self, topic: &str) -> Result<TopicRoute, ClientError> {
        self.route(topic)
            .await?
            .ok_or_else(|| ClientError::NoRoute {
                topic: topic.to_owned(),
                reason: "the NameServer does not know it".to_owned(),
            })
    }

    pub async fn cluster_info(&self) -> Result<ClusterInfo, ClientError> {
        self.namesrv.cluster_info().await
    }

    pub async fn topic_list(&self) -> Result<BTreeSet<String>, ClientError> {
        Ok(self.namesrv.topic_list().await?.topic_list)
    }

    /// Creates (or updates) a topic on the leader of every broker group of `cluster` (every
    /// group when `None`). Returns the broker names it was created on. Brokers register the
    /// topic with the NameServers themselves.
    pub async fn create_topic(
        &self,
        config: &TopicConfig,
        cluster: Option<&str>,
    ) -> Result<Vec<String>, ClientError> {
        validate_topic(&config.topic_name)?;
        if config.read_queue_nums == 0 || config.write_queue_nums == 0 {
            return Err(ClientError::Config(
                "a topic needs at least one queue".to_owned(),
            ));
        }
        let info = self.cluster_info().await?;
        let groups: Vec<String> = match cluster {
            Some(cluster) => info
                .cluster_addr_table
                .get(cluster)
                .ok_or_else(|| ClientError::Config(format!("no cluster named {cluster}")))?
                .iter()
                .cloned()
                .collect(),
            None => info.broker_addr_table.keys().cloned().collect(),
        };
        if groups.is_empty() {
            return Err(ClientError::Config(
                "no broker group to create the topic on".to_owned(),
            ));
        }
        for group in &groups {
            let leader = info
                .broker_addr_table
                .get(group)
                .and_then(|broker| broker.broker_addrs.get(&MASTER_ID))
                .ok_or_else(|| ClientError::NoLeader {
                    topic: config.topic_name.clone(),
                    broker_name: Some(group.clone()),
                })?;
            self.broker.create_topic(leader, config).await?;
        }
        Ok(groups)
    }

    /// Deletes `topic` on the leader of every group that has it, then from every NameServer.
    pub async fn delete_topic(&self, topic: &str) -> Result<(), ClientError> {
        if let Some(route) = self.route(topic).await? {
            for (group, leader) in route.leaders() {
                self.broker
                    .delete_topic(leader, topic)
                    .await
                    .map_err(|error| {
                        tracing::warn!(group, %error, "deleting the topic on a broker failed");
                        error
                    })?;
            }
        }
        self.namesrv.delete_topic(topic, None).await
    }

    /// Min and max offsets of every readable queue of `topic`, from each group's leader.
    pub async fn queue_offsets(&self, topic: &str) -> Result<Vec<QueueStatus>, ClientError> {
        let route = self.existing_route(topic).await?;
        let mut statuses = Vec::with_capacity(route.read_queues.len());
        for queue in &route.read_queues {
            let addr = leader_of(&route, queue)?;
            statuses.push(QueueStatus {
                queue: queue.clone(),
                min_offset: self.broker.min_offset(addr, queue).await?,
                max_offset: self.broker.max_offset(addr, queue).await?,
            });
        }
        Ok(statuses)
    }

    /// `group`'s committed offset of every readable queue of `topic` (`None`: none yet).
    pub async fn consumer_offsets(
        &self,
        group: &str,
        topic: &str,
    ) -> Result<BTreeMap<MessageQueue, Option<i64>>, ClientError> {
        let route = self.existing_route(topic).await?;
        let mut offsets = BTreeMap::new();
        for queue in &route.read_queues {
            let addr = leader_of(&route, queue)?;
            let offset = self
                .broker
                .query_consumer_offset(addr, group, queue)
                .await?;
            offsets.insert(queue.clone(), offset);
        }
        Ok(offsets)
    }

    /// Commits `offset` as `group`'s offset of `queue` (to the group's leader).
    pub async fn commit_offset(
        &self,
        group: &str,
        queue: &MessageQueue,
        offset: i64,
    ) -> Result<(), ClientError> {
        let route = self.existing_route(&queue.topic).await?;
        let addr = leader_of(&route, queue)?;
        self.broker
            .update_consumer_offset(addr, group, queue, offset)
            .await
    }

    /// The live consumers of `group`, as the leader of `topic`'s first group knows them.
    pub async fn consumer_list(
        &self,
        group: &str,
        topic: &str,
    ) -> Result<Vec<String>, ClientError> {
        let route = self.existing_route(topic).await?;
        let (_, addr) =
            route
                .leaders()
                .into_iter()
                .next()
                .ok_or_else(|| ClientError::NoLeader {
                    topic: topic.to_owned(),
                    broker_name: None,
                })?;
        self.broker.consumer_list(addr, group).await
    }

    /// The first offset of `queue` stored at or after `timestamp_ms`.
    pub async fn search_offset(
        &self,
        queue: &MessageQueue,
        timestamp_ms: i64,
    ) -> Result<i64, ClientError> {
        let route = self.existing_route(&queue.topic).await?;
        self.broker
            .search_offset(leader_of(&route, queue)?, queue, timestamp_ms)
            .await
    }

    /// One pull of up to `max` messages of `queue` from `offset`, from the group's leader
    /// (no long polling).
    pub async fn pull(
        &self,
        queue: &MessageQueue,
        offset: i64,
        max: i32,
    ) -> Result<PullResult, ClientError> {
        let route = self.existing_route(&queue.topic).await?;
        let addr = leader_of(&route, queue)?.to_owned();
        self.pull_from(&addr, queue, offset, max).await
    }

    /// One pull from the member at `addr` (leader or follower), no long polling.
    pub async fn pull_from(
        &self,
        addr: &str,
        queue: &MessageQueue,
        offset: i64,
        max: i32,
    ) -> Result<PullResult, ClientError> {
        let request = PullRequest::new(
            ADMIN_PULL_GROUP,
            queue.clone(),
            offset,
            max.clamp(1, MAX_PULL_BATCH),
        );
        self.broker.pull(addr, &request).await
    }

    /// Everything the member at `addr` holds in `queue` from `offset` on, up to `limit`
    /// messages, in offset order (for a final drain against one member). Pulls until the
    /// member has nothing more.
    pub async fn read_queue(
        &self,
        addr: &str,
        queue: &MessageQueue,
        mut offset: i64,
        limit: usize,
    ) -> Result<Vec<ReceivedMessage>, ClientError> {
        let limit = limit.min(MAX_READ_MESSAGES);
        let mut messages = Vec::new();
        // Each round moves the offset forward or ends; the bound only guards a broker that
        // keeps answering without progress.
        let max_rounds = limit.saturating_add(2);
        for _ in 0..max_rounds {
            if messages.len() >= limit {
                break;
            }
            let result = self.pull_from(addr, queue, offset, MAX_PULL_BATCH).await?;
            let next = result.next_begin_offset;
            match result.status {
                PullStatus::Found => {
                    for message in result.messages {
                        if message.queue_offset >= offset && messages.len() < limit {
                            messages.push(message);
                        }
                    }
                }
                PullStatus::NoNewMessages => break,
                PullStatus::RetryImmediately | PullStatus::OffsetMoved => {}
            }
            if next <= offset {
                break;
            }
            offset = next;
        }
        Ok(messages)
    }

    /// QUERY_MESSAGE on every broker group of `topic` (its leader): the messages with `key`
    /// (one of their `KEYS`, or with `unique` their `UNIQ_KEY`, the id clients show) stored
    /// within `begin_ms ..= end_ms`, at most `max` from each group, oldest first.
    pub async fn query_messages(
        &self,
        topic: &str,
        key: &str,
        unique: bool,
        range_ms: (i64, i64),
        max: i32,
    ) -> Result<Vec<ReceivedMessage>, ClientError> {
        let route = self.existing_route(topic).await?;
        let mut found = Vec::new();
        for (broker_name, addr) in route.leaders() {
            for stored in self
                .broker
                .query_message(addr, topic, key, unique, range_ms, max)
                .await?
            {
                found.push(ReceivedMessage::from_stored(topic, broker_name, stored));
            }
        }
        found.sort_by_key(|message| message.store_timestamp);
        Ok(found)
    }

    /// Closes the connections.
    pub async fn shutdown(&self) {
        self.rpc.shutdown().await;
    }
}

fn leader_of<'a>(route: &'a TopicRoute, queue: &MessageQueue) -> Result<&'a str, ClientError> {
    route
        .leader_addr(&queue.broker_name)
        .ok_or_else(|| ClientError::NoLeader {
            topic: queue.topic.clone(),
            broker_name: Some(queue.broker_name.clone()),
        })
}
