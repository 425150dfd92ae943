//! Prometheus metrics of a broker member, served on the admin port's `/metrics`.
//!
//! Two families of names:
//!
//! - **RocketMQ 5's built-in metrics**, with its names and labels (`BrokerMetricsConstant`,
//!   `RemotingMetricsConstant`), so Grafana boards made for RocketMQ work: every series carries
//!   `cluster`, `node_type="broker"` and `node_id` (the broker name, as RocketMQ sets it).
//!
//!   | metric | type | labels |
//!   |---|---|---|
//!   | `rocketmq_messages_in_total`, `rocketmq_throughput_in_total` (bytes) | counter | `topic`, `message_type`, `is_system` |
//!   | `rocketmq_message_size` (bytes) | histogram | `topic`, `message_type`, `is_system` |
//!   | `rocketmq_messages_out_total`, `rocketmq_throughput_out_total` (bytes) | counter | `topic`, `consumer_group`, `is_retry`, `is_system` |
//!   | `rocketmq_consumer_lag_messages`, `rocketmq_consumer_lag_latency` (ms), `rocketmq_consumer_inflight_messages` | gauge | `topic`, `consumer_group`, `is_retry`, `is_system` |
//!   | `rocketmq_send_to_dlq_messages_total` | counter | `topic`, `consumer_group`, `is_system` |
//!   | `rocketmq_rpc_latency` (ms) | histogram | `protocol_type`, `request_code`, `response_code`, `is_long_polling`, `result` |
//!   | `rocketmq_producer_connections` | gauge | `protocol_type` |
//!   | `rocketmq_consumer_connections` | gauge | `consumer_group`, `consume_mode`, `protocol_type`, `is_system` |
//!
//!   As in RocketMQ, sends to retry and dead-letter topics are not counted as messages in.
//!   `message_type` is `normal` or `delay` (FIFO and transactional sends are not told apart
//!   yet). The connection gauges have no `language` and `version` labels: the member does not
//!   keep them per client.
//!
//! - **RaftMQ's own**, prefixed `raftmq_`: the send path (`send_requests_total{result}`,
//!   `send_latency_seconds`, `raft_commit_latency_seconds`, `pull_requests_total`), the log's
//!   fsyncs, and Raft per group and member (labels `cluster`, `group`, `member`): term, leader,
//!   whether it leads and may write, last log, commit and applied index, leader changes, the
//!   leader's last contact with a quorum, and per follower (`follower`) its matched index, lag
//!   and last contact (openraft 0.10's heartbeat metrics).
//!
//! The consumer lag gauges are exported by each group's leader only (the offsets are
//! replicated, so every member would report the same lag).
//!
//! Series of a deleted topic (and of a consumer group that has neither offsets nor clients any
//! more) disappear at the next scrape: gauges are rebuilt from the state at every scrape, and
//! the counters and histograms labelled by topic drop the series of topics that no longer exist.

use std::borrow::Cow;
use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use raftmq_protocol::admin::RaftStatus;
use raftmq_protocol::names::{DLQ_GROUP_TOPIC_PREFIX, RETRY_GROUP_TOPIC_PREFIX, now_ms};

use crate::clients::ClientRegistry;
use crate::schedule::{SCHEDULE_PROGRESS_GROUP, SCHEDULE_TOPIC};
use crate::state_machine::BrokerState;
use raftmq_raft::LogStoreMetricsSnapshot;

/// RocketMQ's `message_size` buckets: 1 KiB, 4 KiB, 512 KiB, 1, 2 and 4 MiB.
pub const MESSAGE_SIZE_BUCKETS: [f64; 6] = [
    1024.0,
    4.0 * 1024.0,
    512.0 * 1024.0,
    1024.0 * 1024.0,
    2.0 * 1024.0 * 1024.0,
    4.0 * 1024.0 * 1024.0,
];
/// RocketMQ's `rpc_latency` buckets, in milliseconds.
pub const RPC_LATENCY_BUCKETS_MS: [f64; 9] =
    [1.0, 3.0, 5.0, 7.0, 10.0, 100.0, 1000.0, 2000.0, 3000.0];
/// Most files and directories a disk-usage walk looks at (bounds a scrape on a huge directory).
pub const MAX_DIR_ENTRIES: usize = 100_000;

/// RocketMQ's `is_system` for a topic: its internal topics, and the retry and dead-letter topics
/// of internal groups.
pub fn is_system_topic(topic: &str) -> bool {
    topic == SCHEDULE_TOPIC
        || topic == raftmq_protocol::names::AUTO_CREATE_TOPIC_KEY_TOPIC
        || topic.starts_with("rmq_sys_")
}

fn is_system_group(group: &str) -> bool {
    group == SCHEDULE_PROGRESS_GROUP || group.to_ascii_lowercase().starts_with("cid_rmq_sys_")
}

fn is_retry_topic(topic: &str) -> bool {
    topic.starts_with(RETRY_GROUP_TOPIC_PREFIX)
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, PartialOrd, Ord, EncodeLabelSet)]
pub struct ResultLabel {
    pub result: &'static str,
}

/// Labels of `rocketmq_messages_in_total` and its siblings.
#[derive(Clone, Debug, Hash, PartialEq, Eq, PartialOrd, Ord, EncodeLabelSet)]
pub struct InLabels {
    pub topic: String,
    pub message_type: &'static str,
    pub is_system: bool,
}

/// Labels of the per topic and group metrics (messages out, lag).
#[derive(Clone, Debug, Hash, PartialEq, Eq, PartialOrd, Ord, EncodeLabelSet)]
pub struct GroupLabels {
    pub topic: String,
    pub consumer_group: String,
    pub is_retry: bool,
    pub is_system: bool,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, PartialOrd, Ord, EncodeLabelSet)]
pub struct DlqLabels {
    pub topic: String,
    pub consumer_group: String,
    pub is_system: bool,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RpcLabels {
    pub protocol_type: &'static str,
    pub request_code: &'static str,
    pub response_code: &'static str,
    pub is_long_polling: bool,
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProducerConnectionLabels {
    pub protocol_type: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ConsumerConnectionLabels {
    pub consumer_group: String,
    pub consume_mode: &'static str,
    pub protocol_type: &'static str,
    pub is_system: bool,
}

/// Labels of refused requests: the protocol and why (`raftmq_protocol::acl::Denial::kind`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AclDeniedLabels {
    pub protocol_type: &'static str,
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FollowerLabel {
    pub follower: u64,
}

/// RocketMQ's `protocol_type` of everything served over the remoting protocol.
const PROTOCOL_REMOTING: &str = "remoting";

/// The label sets the counters and histograms labelled by topic have created, so the series of
/// a deleted topic can be removed.
#[derive(Default)]
struct TopicSeries {
    messages_in: BTreeSet<InLabels>,
    messages_out: BTreeSet<GroupLabels>,
    dlq: BTreeSet<DlqLabels>,
}

/// Every metric of one member.
pub struct BrokerMetrics {
    registry: Registry,
    // RaftMQ's send path
    pub send_requests: Family<ResultLabel, Counter>,
    pub send_latency_seconds: Histogram,
    pub commit_latency_seconds: Histogram,
    pub pull_requests: Counter,
    /// Timer messages the leader moved to their real topic.
    pub timers_delivered: Counter,
    /// Transactions ended by END_TRANSACTION, by `result` (`commit`, `rollback`).
    pub transactions_ended: Family<ResultLabel, Counter>,
    /// Requests the ACL refused, by protocol and reason.
    pub acl_denied: Family<AclDeniedLabels, Counter>,
    /// Totals for GET_BROKER_RUNTIME_INFO (`msgPutTotalTodayNow`, `msgGetTotalTodayNow`); not
    /// exported (the per-topic RocketMQ counters are).
    pub messages_stored: Counter,
    pub messages_pulled: Counter,
    // RocketMQ's
    messages_in: Family<InLabels, Counter>,
    throughput_in: Family<InLabels, Counter>,
    message_size: Family<InLabels, Histogram>,
    messages_out: Family<GroupLabels, Counter>,
    throughput_out: Family<GroupLabels, Counter>,
    send_to_dlq: Family<DlqLabels, Counter>,
    offset_moved: Family<GroupLabels, Counter>,
    consumer_lag_messages: Family<GroupLabels, Gauge>,
    consumer_lag_latency: Family<GroupLabels, Gauge>,
    consumer_inflight_messages: Family<GroupLabels, Gauge>,
    rpc_latency: Family<RpcLabels, Histogram>,
    producer_connections: Family<ProducerConnectionLabels, Gauge>,
    consumer_connections: Family<ConsumerConnectionLabels, Gauge>,
    // Raft, per group and member
    raft_term: Gauge,
    raft_leader_id: Gauge,
    raft_is_leader: Gauge,
    raft_writable: Gauge,
    raft_last_log_index: Gauge,
    raft_commit_index: Gauge,
    raft_applied_index: Gauge,
    raft_quorum_ack_age_seconds: Gauge<f64, std::sync::atomic::AtomicU64>,
    pub raft_leader_changes: Counter,
    raft_follower_lag: Family<FollowerLabel, Gauge>,
    raft_follower_match_index: Family<FollowerLabel, Gauge>,
    raft_follower_last_contact_seconds:
        Family<FollowerLabel, Gauge<f64, std::sync::atomic::AtomicU64>>,
    log_fsyncs: Counter,
    log_fsync_seconds: Counter<f64>,
    log_entries_flushed: Counter,
    log_segments_scrubbed: Counter,
    log_scrub_passes: Counter,
    disk_used_bytes: Gauge,
    disk_full: Gauge,
    last_log: Mutex<LogStoreMetricsSnapshot>,
    series: Mutex<TopicSeries>,
}

fn latency_buckets() -> impl Iterator<Item = f64> {
    // 50 us .. ~3.3 s
    exponential_buckets(0.000_05, 2.0, 17)
}

impl BrokerMetrics {
    /// The metrics of member `member` of broker group `group` in `cluster`.
    pub fn new(cluster: &str, group: &str, member: u64) -> Self {
        let mut metrics = Self {
            registry: Registry::default(),
            send_requests: Family::default(),
            send_latency_seconds: Histogram::new(latency_buckets()),
            commit_latency_seconds: Histogram::new(latency_buckets()),
            pull_requests: Counter::default(),
            timers_delivered: Counter::default(),
            transactions_ended: Family::default(),
            acl_denied: Family::default(),
            messages_stored: Counter::default(),
            messages_pulled: Counter::default(),
            messages_in: Family::default(),
            throughput_in: Family::default(),
            message_size: Family::new_with_constructor(|| {
                Histogram::new(MESSAGE_SIZE_BUCKETS.iter().copied())
            }),
            messages_out: Family::default(),
            throughput_out: Family::default(),
            send_to_dlq: Family::default(),
            offset_moved: Family::default(),
            consumer_lag_messages: Family::default(),
            consumer_lag_latency: Family::default(),
            consumer_inflight_messages: Family::default(),
            rpc_latency: Family::new_with_constructor(|| {
                Histogram::new(RPC_LATENCY_BUCKETS_MS.iter().copied())
            }),
            producer_connections: Family::default(),
            consumer_connections: Family::default(),
            raft_term: Gauge::default(),
            raft_leader_id: Gauge::default(),
            raft_is_leader: Gauge::default(),
            raft_writable: Gauge::default(),
            raft_last_log_index: Gauge::default(),
            raft_commit_index: Gauge::default(),
            raft_applied_index: Gauge::default(),
            raft_quorum_ack_age_seconds: Gauge::default(),
            raft_leader_changes: Counter::default(),
            raft_follower_lag: Family::default(),
            raft_follower_match_index: Family::default(),
            raft_follower_last_contact_seconds: Family::default(),
            log_fsyncs: Counter::default(),
            log_fsync_seconds: Counter::default(),
            log_entries_flushed: Counter::default(),
            log_segments_scrubbed: Counter::default(),
            log_scrub_passes: Counter::default(),
            disk_used_bytes: Gauge::default(),
            disk_full: Gauge::default(),
            last_log: Mutex::new(LogStoreMetricsSnapshot::default()),
            series: Mutex::new(TopicSeries::default()),
        };
        metrics.register(cluster, group, member);
        metrics
    }

    fn register(&mut self, cluster: &str, group: &str, member: u64) {
        let label = |name: &'static str, value: String| (Cow::Borrowed(name), Cow::Owned(value));
        let root = &mut self.registry;

        let rocketmq = root
            .sub_registry_with_label(label("cluster", cluster.to_string()))
            .sub_registry_with_label(label("node_type", "broker".to_string()))
            .sub_registry_with_label(label("node_id", group.to_string()));
        rocketmq.register(
            "rocketmq_messages_in",
            "Total number of incoming messages",
            self.messages_in.clone(),
        );
        rocketmq.register(
            "rocketmq_throughput_in",
            "Total traffic of incoming messages, in bytes",
            self.throughput_in.clone(),
        );
        rocketmq.register(
            "rocketmq_message_size",
            "Incoming messages size, in bytes",
            self.message_size.clone(),
        );
        rocketmq.register(
            "rocketmq_messages_out",
            "Total number of outgoing messages",
            self.messages_out.clone(),
        );
        rocketmq.register(
            "rocketmq_throughput_out",
            "Total traffic of outgoing messages, in bytes",
            self.throughput_out.clone(),
        );
        rocketmq.register(
            "rocketmq_send_to_dlq_messages",
            "Consumer send to DLQ messages",
            self.send_to_dlq.clone(),
        );
        rocketmq.register(
            "raftmq_consumer_offset_moved",
            "Pulls that asked for an offset below the queue's minimum (gone with retention); the consumer was moved to the minimum",
            self.offset_moved.clone(),
        );
        rocketmq.register(
            "rocketmq_consumer_lag_messages",
            "Consumer lag messages",
            self.consumer_lag_messages.clone(),
        );
        rocketmq.register(
            "rocketmq_consumer_lag_latency",
            "Consumer lag time, in milliseconds",
            self.consumer_lag_latency.clone(),
        );
        rocketmq.register(
            "rocketmq_consumer_inflight_messages",
            "Consumer inflight messages (pulled, not committed)",
            self.consumer_inflight_messages.clone(),
        );
        rocketmq.register(
            "rocketmq_rpc_latency",
            "Remoting request latency, in milliseconds",
            self.rpc_latency.clone(),
        );
        rocketmq.register(
            "rocketmq_producer_connections",
            "Producer connections",
            self.producer_connections.clone(),
        );
        rocketmq.register(
            "rocketmq_consumer_connections",
            "Consumer connections",
            self.consumer_connections.clone(),
        );

        let raftmq = self.registry.sub_registry_with_prefix("raftmq");
        raftmq.register(
            "acl_denied_requests",
            "Requests refused by the ACL (NO_PERMISSION), by protocol and reason",
            self.acl_denied.clone(),
        );
        raftmq.register(
            "send_requests",
            "Send requests by result",
            self.send_requests.clone(),
        );
        raftmq.register(
            "send_latency_seconds",
            "Time from receiving a send to answering it",
            self.send_latency_seconds.clone(),
        );
        raftmq.register(
            "raft_commit_latency_seconds",
            "Time from proposing an entry to its apply result",
            self.commit_latency_seconds.clone(),
        );
        raftmq.register(
            "pull_requests",
            "Pull requests served",
            self.pull_requests.clone(),
        );
        raftmq.register(
            "timers_delivered",
            "Timer messages moved to their real topic when due",
            self.timers_delivered.clone(),
        );
        raftmq.register(
            "transactions_ended",
            "Transactions ended by their producer (result: commit, rollback)",
            self.transactions_ended.clone(),
        );
        raftmq.register(
            "raft_log_fsyncs",
            "Durable log commits (one fsync each)",
            self.log_fsyncs.clone(),
        );
        raftmq.register(
            "raft_log_fsync_seconds",
            "Time spent committing the log to disk",
            self.log_fsync_seconds.clone(),
        );
        raftmq.register(
            "raft_log_entries_flushed",
            "Log entries written to disk",
            self.log_entries_flushed.clone(),
        );
        raftmq.register(
            "raft_log_segments_scrubbed",
            "Sealed log segments read back by the scrub with every record's CRC checked",
            self.log_segments_scrubbed.clone(),
        );
        raftmq.register(
            "raft_log_scrub_passes",
            "Complete scrub passes over every sealed log segment",
            self.log_scrub_passes.clone(),
        );
        let raft = raftmq
            .sub_registry_with_label(label("cluster", cluster.to_string()))
            .sub_registry_with_label(label("group", group.to_string()))
            .sub_registry_with_label(label("member", member.to_string()));
        raft.register("raft_term", "Current Raft term", self.raft_term.clone());
        raft.register(
            "raft_leader_id",
            "Node id of the leader this member knows (-1: none)",
            self.raft_leader_id.clone(),
        );
        raft.register(
            "raft_is_leader",
            "1 if this member leads its group",
            self.raft_is_leader.clone(),
        );
        raft.register(
            "raft_writable",
            "1 if this member leads and a quorum acknowledged it recently (it takes writes)",
            self.raft_writable.clone(),
        );
        raft.register(
            "raft_last_log_index",
            "Index of the last log entry",
            self.raft_last_log_index.clone(),
        );
        raft.register(
            "raft_commit_index",
            "On the leader: the highest index a majority of voters holds",
            self.raft_commit_index.clone(),
        );
        raft.register(
            "raft_applied_index",
            "Index of the last applied entry",
            self.raft_applied_index.clone(),
        );
        raft.register(
            "raft_quorum_ack_age_seconds",
            "On the leader: seconds since a quorum last acknowledged it",
            self.raft_quorum_ack_age_seconds.clone(),
        );
        raft.register(
            "raft_leader_changes",
            "Times this member saw its group's leader change",
            self.raft_leader_changes.clone(),
        );
        raft.register(
            "raft_follower_lag_entries",
            "On the leader: entries each follower is behind",
            self.raft_follower_lag.clone(),
        );
        raft.register(
            "raft_follower_match_index",
            "On the leader: the last index each follower is known to hold",
            self.raft_follower_match_index.clone(),
        );
        raft.register(
            "raft_follower_last_contact_seconds",
            "On the leader: seconds since each follower last acknowledged a heartbeat or an append",
            self.raft_follower_last_contact_seconds.clone(),
        );
        raft.register(
            "disk_used_bytes",
            "Bytes of the files under the member's data directory",
            self.disk_used_bytes.clone(),
        );
        raft.register(
            "disk_full",
            "1 while the member's disk is full: its log waits for space and it acknowledges nothing new",
            self.disk_full.clone(),
        );
    }

    pub fn observe_send(&self, result: &'static str, elapsed: Duration) {
        self.send_requests
            .get_or_create(&ResultLabel { result })
            .inc();
        self.send_latency_seconds.observe(elapsed.as_secs_f64());
    }

    /// `count` messages of `bytes` stored in `topic` (an answered send). Retry and dead-letter
    /// topics are not counted, as in RocketMQ.
    pub fn messages_in(&self, topic: &str, count: u64, bytes: u64) {
        self.messages_stored.inc_by(count);
        if topic.starts_with(RETRY_GROUP_TOPIC_PREFIX) || topic.starts_with(DLQ_GROUP_TOPIC_PREFIX)
        {
            return;
        }
        let labels = InLabels {
            topic: topic.to_string(),
            message_type: if topic == SCHEDULE_TOPIC {
                "delay"
            } else {
                "normal"
            },
            is_system: is_system_topic(topic),
        };
        self.messages_in.get_or_create(&labels).inc_by(count);
        self.throughput_in.get_or_create(&labels).inc_by(bytes);
        if let Some(average) = bytes.checked_div(count) {
            self.message_size
                .get_or_create(&labels)
                .observe(average as f64);
        }
        self.lock_series().messages_in.insert(labels);
    }

    /// `count` messages of `bytes` returned by a pull of `group` on `topic`.
    pub fn messages_out(&self, topic: &str, group: &str, count: u64, bytes: u64) {
        self.pull_requests.inc();
        self.messages_pulled.inc_by(count);
        let labels = GroupLabels {
            topic: topic.to_string(),
            consumer_group: group.to_string(),
            is_retry: is_retry_topic(topic),
            is_system: is_system_topic(topic) || is_system_group(group),
        };
        self.messages_out.get_or_create(&labels).inc_by(count);
        self.throughput_out.get_or_create(&labels).inc_by(bytes);
        self.lock_series().messages_out.insert(labels);
    }

    /// A pull of `group` asked for an offset below the queue's minimum (gone with retention):
    /// the consumer was moved to the minimum.
    pub fn offset_moved(&self, topic: &str, group: &str) {
        let labels = GroupLabels {
            topic: topic.to_string(),
            consumer_group: group.to_string(),
            is_retry: is_retry_topic(topic),
            is_system: is_system_topic(topic) || is_system_group(group),
        };
        self.offset_moved.get_or_create(&labels).inc();
        self.lock_series().messages_out.insert(labels);
    }

    /// A message of `topic` that `group` failed too often went to the dead-letter topic.
    pub fn sent_to_dlq(&self, topic: &str, group: &str) {
        let labels = DlqLabels {
            topic: topic.to_string(),
            consumer_group: group.to_string(),
            is_system: is_system_topic(topic) || is_system_group(group),
        };
        self.send_to_dlq.get_or_create(&labels).inc();
        self.lock_series().dlq.insert(labels);
    }

    /// One remoting request answered after `elapsed`.
    pub fn observe_rpc(
        &self,
        request_code: i32,
        response_code: i32,
        long_polling: bool,
        elapsed: Duration,
    ) {
        use raftmq_protocol::code::{request, response};
        let labels = RpcLabels {
            protocol_type: PROTOCOL_REMOTING,
            request_code: request::name(request_code).unwrap_or("unknown"),
            response_code: response::name(response_code).unwrap_or("other"),
            is_long_polling: long_polling,
            result: "success",
        };
        self.rpc_latency
            .get_or_create(&labels)
            .observe(elapsed.as_secs_f64() * 1000.0);
    }

    /// One request refused by the ACL.
    pub fn observe_acl_denied(&self, protocol_type: &'static str, reason: &'static str) {
        self.acl_denied
            .get_or_create(&AclDeniedLabels {
                protocol_type,
                reason,
            })
            .inc();
    }

    fn lock_series(&self) -> std::sync::MutexGuard<'_, TopicSeries> {
        self.series.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Refreshes the scrape-time gauges and renders everything in Prometheus text format.
    pub fn render(&self, scrape: &Scrape<'_>) -> String {
        self.refresh_raft(scrape.raft, scrape.log);
        if let Some(bytes) = scrape.disk_used_bytes {
            self.disk_used_bytes.set(clamp_i64(bytes));
        }
        self.disk_full.set(i64::from(scrape.log.disk_full()));
        self.drop_deleted_series(scrape.state, scrape.clients);
        self.refresh_consumers(scrape.state, scrape.clients, scrape.raft.is_leader());
        let mut text = String::new();
        if let Err(err) = prometheus_client::encoding::text::encode(&mut text, &self.registry) {
            text = format!("# metrics could not be encoded: {err}\n");
        }
        text
    }

    fn refresh_raft(&self, raft: &RaftStatus, log: LogStoreMetricsSnapshot) {
        self.raft_term.set(clamp_i64(raft.term));
        self.raft_leader_id.set(raft.leader.map_or(-1, clamp_i64));
        self.raft_is_leader.set(i64::from(raft.is_leader()));
        self.raft_writable.set(i64::from(raft.writable));
        self.raft_last_log_index
            .set(clamp_i64(raft.last_log_index.unwrap_or(0)));
        self.raft_commit_index
            .set(clamp_i64(raft.commit_index.unwrap_or(0)));
        self.raft_applied_index
            .set(clamp_i64(raft.applied_index.unwrap_or(0)));
        self.raft_quorum_ack_age_seconds
            .set(raft.quorum_ack_age_ms.map_or(0.0, |ms| ms as f64 / 1000.0));
        self.raft_follower_lag.clear();
        self.raft_follower_match_index.clear();
        self.raft_follower_last_contact_seconds.clear();
        for (follower, status) in &raft.followers {
            let label = FollowerLabel {
                follower: *follower,
            };
            self.raft_follower_lag
                .get_or_create(&label)
                .set(clamp_i64(status.lag_entries));
            if let Some(matched) = status.matched_index {
                self.raft_follower_match_index
                    .get_or_create(&label)
                    .set(clamp_i64(matched));
            }
            if let Some(ms) = status.last_contact_ms {
                self.raft_follower_last_contact_seconds
                    .get_or_create(&label)
                    .set(ms as f64 / 1000.0);
            }
        }
        let mut last = self.last_log.lock().unwrap_or_else(|p| p.into_inner());
        self.log_fsyncs
            .inc_by(log.fsyncs.saturating_sub(last.fsyncs));
        let nanos = log
            .commit_nanos_total
            .saturating_sub(last.commit_nanos_total);
        self.log_fsync_seconds.inc_by(nanos as f64 / 1e9);
        self.log_entries_flushed
            .inc_by(log.entries_flushed.saturating_sub(last.entries_flushed));
        self.log_segments_scrubbed
            .inc_by(log.segments_scrubbed.saturating_sub(last.segments_scrubbed));
        self.log_scrub_passes
            .inc_by(log.scrub_passes.saturating_sub(last.scrub_passes));
        *last = log;
    }

    /// Removes the counter and histogram series of topics that no longer exist, and of consumer
    /// groups that have no config, no committed offset and no live client any more.
    fn drop_deleted_series(&self, state: &BrokerState, clients: &ClientRegistry) {
        let mut series = self.lock_series();
        let exists = |topic: &str| state.topic(topic).is_some();
        let with_offsets: BTreeSet<String> = state.groups_with_offsets().into_iter().collect();
        let live: BTreeSet<String> = clients
            .consumer_groups()
            .into_iter()
            .map(|members| members.group)
            .collect();
        let group_exists = |group: &str| {
            state.group(group).is_some() || with_offsets.contains(group) || live.contains(group)
        };
        series.messages_in.retain(|labels| {
            let keep = exists(&labels.topic);
            if !keep {
                self.messages_in.remove(labels);
                self.throughput_in.remove(labels);
                self.message_size.remove(labels);
            }
            keep
        });
        series.messages_out.retain(|labels| {
            let keep = exists(&labels.topic) && group_exists(&labels.consumer_group);
            if !keep {
                self.messages_out.remove(labels);
                self.throughput_out.remove(labels);
                self.offset_moved.remove(labels);
            }
            keep
        });
        series.dlq.retain(|labels| {
            let keep = (exists(&labels.topic)
                || exists(&raftmq_protocol::names::dlq_topic(&labels.consumer_group)))
                && group_exists(&labels.consumer_group);
            if !keep {
                self.send_to_dlq.remove(labels);
            }
            keep
        });
    }

    /// Rebuilds lag, in-flight and connection gauges from the applied state and the clients.
    /// Lag gauges come from the leader only: every member holds the same replicated offsets,
    /// and a sum over members would count each group's lag once per member.
    fn refresh_consumers(&self, state: &BrokerState, clients: &ClientRegistry, leads: bool) {
        self.consumer_lag_messages.clear();
        self.consumer_lag_latency.clear();
        self.consumer_inflight_messages.clear();
        let now = Instant::now();
        let now_ms = now_ms();
        let groups = if leads {
            state.groups_with_offsets()
        } else {
            Vec::new()
        };
        for group in groups {
            if group == SCHEDULE_PROGRESS_GROUP {
                continue; // the delay scheduler's progress, not a consumer
            }
            let mut per_topic: std::collections::BTreeMap<String, (u64, i64, u64)> =
                std::collections::BTreeMap::new();
            for ((topic, queue), committed) in state.group_offsets(&group) {
                if state.topic(&topic).is_none() {
                    continue; // a deleted topic: its series go with it
                }
                let max = state.queue(&topic, queue).next_offset;
                let lag = max.saturating_sub(committed);
                let oldest = if lag > 0 {
                    state
                        .store_timestamp(&topic, queue, committed)
                        .ok()
                        .flatten()
                        .unwrap_or(now_ms)
                } else {
                    now_ms
                };
                let inflight = clients
                    .queue_puller(&group, (&topic, queue), now)
                    .map_or(0, |pull| pull.next_offset.saturating_sub(committed));
                let entry = per_topic.entry(topic).or_insert((0, now_ms, 0));
                entry.0 += lag;
                entry.1 = entry.1.min(oldest);
                entry.2 += inflight;
            }
            for (topic, (lag, oldest, inflight)) in per_topic {
                let labels = GroupLabels {
                    is_retry: is_retry_topic(&topic),
                    is_system: is_system_topic(&topic) || is_system_group(&group),
                    topic,
                    consumer_group: group.clone(),
                };
                self.consumer_lag_messages
                    .get_or_create(&labels)
                    .set(clamp_i64(lag));
                self.consumer_lag_latency
                    .get_or_create(&labels)
                    .set(now_ms.saturating_sub(oldest).max(0));
                self.consumer_inflight_messages
                    .get_or_create(&labels)
                    .set(clamp_i64(inflight));
            }
        }
        self.producer_connections.clear();
        self.producer_connections
            .get_or_create(&ProducerConnectionLabels {
                protocol_type: PROTOCOL_REMOTING,
            })
            .set(clamp_i64(clients.producer_count() as u64));
        self.consumer_connections.clear();
        for count in clients.consumer_counts() {
            let labels = ConsumerConnectionLabels {
                consume_mode: match count.consume_type.as_str() {
                    "CONSUME_ACTIVELY" => "pull",
                    _ => "push",
                },
                protocol_type: PROTOCOL_REMOTING,
                is_system: is_system_group(&count.group),
                consumer_group: count.group,
            };
            self.consumer_connections
                .get_or_create(&labels)
                .set(clamp_i64(count.clients as u64));
        }
        clients.forget_pulls(|_, topic| state.topic(topic).is_some(), now);
    }
}

/// What a scrape reads: the member's Raft status, log counters, applied state and clients.
pub struct Scrape<'a> {
    pub raft: &'a RaftStatus,
    pub log: LogStoreMetricsSnapshot,
    pub state: &'a BrokerState,
    pub clients: &'a ClientRegistry,
    pub disk_used_bytes: Option<u64>,
}

fn clamp_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// Bytes of the regular files under `dir` (recursively, symlinks not followed), looking at no
/// more than [`MAX_DIR_ENTRIES`] entries.
pub fn dir_bytes(dir: &Path) -> std::io::Result<u64> {
    let mut total = 0u64;
    let mut pending = vec![dir.to_path_buf()];
    let mut seen = 0usize;
    while let Some(path) = pending.pop() {
        for entry in std::fs::read_dir(&path)? {
            seen += 1;
            if seen > MAX_DIR_ENTRIES {
                return Ok(total);
            }
            let entry = entry?;
            let kind = entry.file_type()?;
            if kind.is_dir() {
                pending.push(entry.path());
            } else if kind.is_file() {
                total = total.saturating_add(entry.metadata()?.len());
            }
        }
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    //! The RocketMQ-named series from real sends and pulls on a one-member group, and their
    //! disappearance once the topic is deleted.

    use std::collections::{BTreeMap, BTreeSet};

    use anyhow::{Result, ensure};
    use raftmq_protocol::code::{request, response};
    use raftmq_protocol::header::topic::DeleteTopicRequestHeader;
    use raftmq_protocol::{ExtHeader, RemotingCommand};
    use raftmq_remoting::rpc_client::RpcClient;

    use super::*;
    use crate::testing::{RPC_TIMEOUT, TestGroup, pull_request, send_request, wait_until};

    const TOPIC: &str = "MetricsTopic";

    fn scrape(member: &crate::testing::TestMember) -> String {
        let raft = RaftStatus {
            broker_name: "broker-a".into(),
            node_id: 1,
            state: "Leader".into(),
            term: 3,
            leader: Some(1),
            last_log_index: Some(9),
            applied_index: Some(9),
            voters: BTreeSet::from([1]),
            learners: BTreeSet::new(),
            nodes: BTreeMap::new(),
            followers: BTreeMap::new(),
            remoting_addr: member.remoting.clone(),
            log_fsyncs: 0,
            log_entries_flushed: 0,
            writable: true,
            commit_index: Some(9),
            quorum_ack_age_ms: Some(5),
            disk_used_bytes: Some(1234),
            disk_full: false,
            pending_transactions: None,
            pending_timers: None,
        };
        member.ctx.metrics.render(&Scrape {
            raft: &raft,
            log: LogStoreMetricsSnapshot::default(),
            state: &member.ctx.state,
            clients: &member.ctx.clients,
            disk_used_bytes: raft.disk_used_bytes,
        })
    }

    /// The value of the one series of `metric` whose line has every one of `labels`.
    fn value(text: &str, metric: &str, labels: &[&str]) -> Option<f64> {
        text.lines()
            .filter(|line| line.starts_with(&format!("{metric}{{")))
            .find(|line| labels.iter().all(|label| line.contains(label)))
            .and_then(|line| line.rsplit(' ').next()?.parse().ok())
    }

    /// Every metric the example Grafana dashboard (`deploy/grafana/raftmq.json`) queries is one
    /// a member exports.
    fn assert_grafana_queries_exported_metrics(text: &str) {
        let path =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/grafana/raftmq.json");
        let board = std::fs::read_to_string(&path).unwrap();
        let mut names = BTreeSet::new();
        for start in board
            .match_indices("rocketmq_")
            .chain(board.match_indices("raftmq_"))
            .map(|(at, _)| at)
        {
            let name: String = board[start..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            names.insert(name);
        }
        assert!(names.len() > 15, "{names:?}");
        for name in names {
            let base = ["_total", "_bucket", "_sum", "_count"]
                .iter()
                .find_map(|suffix| name.strip_suffix(suffix))
                .unwrap_or(&name);
            assert!(
                text.contains(&format!("# TYPE {base} ")),
                "the Grafana board queries {name}, which is not exported:\n{text}"
            );
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn rocketmq_series_count_sends_and_pulls_and_go_with_their_topic() -> Result<()> {
        let group = TestGroup::start(1).await?;
        let leader = group.member(group.wait_for_leader().await?);
        let rpc = RpcClient::default();
        for body in [&b"hello"[..], b"world!"] {
            let answer = rpc
                .invoke(
                    &leader.remoting,
                    send_request(TOPIC, 0, "k", body),
                    RPC_TIMEOUT,
                )
                .await?;
            ensure!(
                answer.code == response::SUCCESS,
                "send: {:?}",
                answer.remark
            );
        }
        wait_until("both sends applied", || {
            (leader.ctx.state.queue(TOPIC, 0).next_offset == 2).then_some(())
        })
        .await?;
        // The pulling group exists (as a heartbeat makes it): its series stay.
        leader
            .ctx
            .proposer
            .propose(crate::command::Command::UpsertGroup(
                crate::topic::GroupConfig::new("test-consumer"),
            ))
            .await?;
        let pulled = rpc
            .invoke(&leader.remoting, pull_request(TOPIC, 0, 0, 32), RPC_TIMEOUT)
            .await?;
        ensure!(pulled.code == response::SUCCESS);

        let text = scrape(leader);
        assert_grafana_queries_exported_metrics(&text);
        let topic = format!("topic=\"{TOPIC}\"");
        let common = [
            "cluster=\"DefaultCluster\"",
            "node_type=\"broker\"",
            "node_id=\"broker-a\"",
        ];
        let mut labels: Vec<&str> = common.to_vec();
        labels.extend([
            topic.as_str(),
            "message_type=\"normal\"",
            "is_system=\"false\"",
        ]);
        assert_eq!(
            value(&text, "rocketmq_messages_in_total", &labels),
            Some(2.0),
            "{text}"
        );
        ensure!(
            value(&text, "rocketmq_throughput_in_total", &labels).is_some_and(|bytes| bytes > 11.0),
            "{text}"
        );
        assert_eq!(
            value(&text, "rocketmq_message_size_count", &labels),
            Some(2.0),
            "{text}"
        );
        let out = [
            topic.as_str(),
            "consumer_group=\"test-consumer\"",
            "is_retry=\"false\"",
        ];
        assert_eq!(
            value(&text, "rocketmq_messages_out_total", &out),
            Some(2.0),
            "{text}"
        );
        assert_eq!(
            value(
                &text,
                "rocketmq_rpc_latency_count",
                &[
                    "request_code=\"SEND_MESSAGE_V2\"",
                    "response_code=\"SUCCESS\""
                ]
            ),
            Some(2.0),
            "{text}"
        );
        let raft = ["group=\"broker-a\"", "member=\"1\""];
        assert_eq!(value(&text, "raftmq_raft_term", &raft), Some(3.0), "{text}");
        assert_eq!(
            value(&text, "raftmq_raft_commit_index", &raft),
            Some(9.0),
            "{text}"
        );
        assert_eq!(
            value(&text, "raftmq_disk_used_bytes", &raft),
            Some(1234.0),
            "{text}"
        );

        let mut delete = RemotingCommand::new_request(request::DELETE_TOPIC_IN_BROKER);
        delete.ext_fields = DeleteTopicRequestHeader {
            topic: TOPIC.into(),
        }
        .to_ext_fields();
        let answer = rpc.invoke(&leader.remoting, delete, RPC_TIMEOUT).await?;
        ensure!(
            answer.code == response::SUCCESS,
            "delete: {:?}",
            answer.remark
        );
        wait_until("the delete applied", || {
            leader.ctx.state.topic(TOPIC).is_none().then_some(())
        })
        .await?;
        let text = scrape(leader);
        ensure!(
            !text.contains(&topic),
            "series of the deleted topic remain:\n{text}"
        );
        group.shutdown().await
    }
}
