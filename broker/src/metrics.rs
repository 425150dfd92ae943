//! Prometheus metrics of a broker member: counters and histograms updated on the data path, and
//! gauges read from Raft, the log store and the applied state when `/metrics` is scraped.

use std::sync::Mutex;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::state_machine::BrokerState;
use raftmq_raft::{LogStoreMetricsSnapshot, RaftMetrics};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabel {
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LagLabels {
    pub group: String,
    pub topic: String,
    pub queue: u32,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FollowerLabel {
    pub follower: u64,
}

/// Every metric of one member.
pub struct BrokerMetrics {
    registry: Mutex<Registry>,
    pub send_requests: Family<ResultLabel, Counter>,
    pub messages_stored: Counter,
    pub message_bytes_stored: Counter,
    pub send_latency_seconds: Histogram,
    pub commit_latency_seconds: Histogram,
    pub pull_requests: Counter,
    pub messages_pulled: Counter,
    raft_term: Gauge,
    raft_is_leader: Gauge,
    raft_last_log_index: Gauge,
    raft_applied_index: Gauge,
    raft_follower_lag: Family<FollowerLabel, Gauge>,
    log_fsyncs: Counter,
    log_fsync_seconds: Counter<f64>,
    log_entries_flushed: Counter,
    consumer_lag: Family<LagLabels, Gauge>,
    last_log: Mutex<LogStoreMetricsSnapshot>,
}

fn latency_buckets() -> impl Iterator<Item = f64> {
    // 50 us .. ~3.3 s
    exponential_buckets(0.000_05, 2.0, 17)
}

impl Default for BrokerMetrics {
    fn default() -> Self {
        let metrics = Self {
            registry: Mutex::new(Registry::with_prefix("raftmq")),
            send_requests: Family::default(),
            messages_stored: Counter::default(),
            message_bytes_stored: Counter::default(),
            send_latency_seconds: Histogram::new(latency_buckets()),
            commit_latency_seconds: Histogram::new(latency_buckets()),
            pull_requests: Counter::default(),
            messages_pulled: Counter::default(),
            raft_term: Gauge::default(),
            raft_is_leader: Gauge::default(),
            raft_last_log_index: Gauge::default(),
            raft_applied_index: Gauge::default(),
            raft_follower_lag: Family::default(),
            log_fsyncs: Counter::default(),
            log_fsync_seconds: Counter::default(),
            log_entries_flushed: Counter::default(),
            consumer_lag: Family::default(),
            last_log: Mutex::new(LogStoreMetricsSnapshot::default()),
        };
        {
            let mut registry = metrics.registry.lock().unwrap_or_else(|p| p.into_inner());
            let r = &mut *registry;
            r.register(
                "send_requests",
                "Send requests by result",
                metrics.send_requests.clone(),
            );
            r.register(
                "messages_stored",
                "Messages acknowledged as stored",
                metrics.messages_stored.clone(),
            );
            r.register(
                "message_bytes_stored",
                "Bytes of messages acknowledged as stored",
                metrics.message_bytes_stored.clone(),
            );
            r.register(
                "send_latency_seconds",
                "Time from receiving a send to answering it",
                metrics.send_latency_seconds.clone(),
            );
            r.register(
                "raft_commit_latency_seconds",
                "Time from proposing an entry to its apply result",
                metrics.commit_latency_seconds.clone(),
            );
            r.register(
                "pull_requests",
                "Pull requests served",
                metrics.pull_requests.clone(),
            );
            r.register(
                "messages_pulled",
                "Messages returned by pulls",
                metrics.messages_pulled.clone(),
            );
            r.register("raft_term", "Current Raft term", metrics.raft_term.clone());
            r.register(
                "raft_is_leader",
                "1 if this member leads its group",
                metrics.raft_is_leader.clone(),
            );
            r.register(
                "raft_last_log_index",
                "Index of the last log entry",
                metrics.raft_last_log_index.clone(),
            );
            r.register(
                "raft_applied_index",
                "Index of the last applied entry",
                metrics.raft_applied_index.clone(),
            );
            r.register(
                "raft_follower_lag_entries",
                "On the leader: entries each follower is behind",
                metrics.raft_follower_lag.clone(),
            );
            r.register(
                "raft_log_fsyncs",
                "Durable log commits (one fsync each)",
                metrics.log_fsyncs.clone(),
            );
            r.register(
                "raft_log_fsync_seconds",
                "Time spent committing the log to disk",
                metrics.log_fsync_seconds.clone(),
            );
            r.register(
                "raft_log_entries_flushed",
                "Log entries written to disk",
                metrics.log_entries_flushed.clone(),
            );
            r.register(
                "consumer_lag_messages",
                "Messages after a group's committed offset",
                metrics.consumer_lag.clone(),
            );
        }
        metrics
    }
}

impl BrokerMetrics {
    pub fn observe_send(&self, result: &'static str, elapsed: Duration) {
        self.send_requests
            .get_or_create(&ResultLabel { result })
            .inc();
        self.send_latency_seconds.observe(elapsed.as_secs_f64());
    }

    /// Refreshes the scrape-time gauges and renders everything in Prometheus text format.
    pub fn render(
        &self,
        raft: &RaftMetrics,
        log: LogStoreMetricsSnapshot,
        state: &BrokerState,
    ) -> String {
        self.raft_term.set(raft.current_term as i64);
        self.raft_is_leader
            .set(i64::from(raft.state == openraft::ServerState::Leader));
        self.raft_last_log_index
            .set(raft.last_log_index.unwrap_or(0) as i64);
        self.raft_applied_index
            .set(raft.last_applied.map_or(0, |id| id.index) as i64);
        self.raft_follower_lag.clear();
        if let Some(replication) = &raft.replication {
            let last = raft.last_log_index.unwrap_or(0);
            for (follower, matched) in replication.iter() {
                let matched = matched.map_or(0, |id| id.index);
                self.raft_follower_lag
                    .get_or_create(&FollowerLabel {
                        follower: *follower,
                    })
                    .set(last.saturating_sub(matched) as i64);
            }
        }
        {
            let mut last = self.last_log.lock().unwrap_or_else(|p| p.into_inner());
            self.log_fsyncs
                .inc_by(log.fsyncs.saturating_sub(last.fsyncs));
            let nanos = log
                .commit_nanos_total
                .saturating_sub(last.commit_nanos_total);
            self.log_fsync_seconds.inc_by(nanos as f64 / 1e9);
            self.log_entries_flushed
                .inc_by(log.entries_flushed.saturating_sub(last.entries_flushed));
            *last = log;
        }
        self.consumer_lag.clear();
        for group in state.groups_with_offsets() {
            for ((topic, queue), committed) in state.group_offsets(&group) {
                let max = state.queue(&topic, queue).next_offset;
                self.consumer_lag
                    .get_or_create(&LagLabels {
                        group: group.clone(),
                        topic,
                        queue,
                    })
                    .set(max.saturating_sub(committed) as i64);
            }
        }
        let mut text = String::new();
        let registry = self.registry.lock().unwrap_or_else(|p| p.into_inner());
        if let Err(err) = prometheus_client::encoding::text::encode(&mut text, &registry) {
            text = format!("# metrics could not be encoded: {err}\n");
        }
        text
    }
}
