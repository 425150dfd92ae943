//! Prometheus metrics of the NameServer, served as text on the admin port's `/metrics`.

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use raftmq_protocol::code::{request, response};

use crate::route_table::{RemovalReason, RouteTable};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// The request code's name; `unknown` for codes without one, so that a client sending
    /// random codes cannot grow the label set without bound.
    pub code: &'static str,
    /// The response code's name (`other` when unnamed).
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RemovalLabels {
    pub reason: &'static str,
}

/// Every metric, registered once.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    registrations: Counter,
    fenced_claims: Counter,
    removed_members: Family<RemovalLabels, Counter>,
    groups: Gauge,
    members: Gauge,
    topics: Gauge,
    connections_open: Gauge<u64, AtomicU64>,
    connections_closed_malformed: Gauge<u64, AtomicU64>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("raftmq_namesrv");
        let metrics = Metrics {
            requests: Family::default(),
            registrations: Counter::default(),
            fenced_claims: Counter::default(),
            removed_members: Family::default(),
            groups: Gauge::default(),
            members: Gauge::default(),
            topics: Gauge::default(),
            connections_open: Gauge::default(),
            connections_closed_malformed: Gauge::default(),
            registry: Registry::default(),
        };
        registry.register(
            "requests",
            "Remoting requests by code and result",
            metrics.requests.clone(),
        );
        registry.register(
            "registrations",
            "Broker registrations accepted",
            metrics.registrations.clone(),
        );
        registry.register(
            "fenced_leadership_claims",
            "Leadership claims refused because a higher term holds slot 0",
            metrics.fenced_claims.clone(),
        );
        registry.register(
            "removed_members",
            "Broker members dropped, by reason",
            metrics.removed_members.clone(),
        );
        registry.register(
            "broker_groups",
            "Broker groups listed",
            metrics.groups.clone(),
        );
        registry.register(
            "broker_members",
            "Broker members listed",
            metrics.members.clone(),
        );
        registry.register("topics", "Topics with a route", metrics.topics.clone());
        registry.register(
            "connections_open",
            "Remoting connections open",
            metrics.connections_open.clone(),
        );
        registry.register(
            "connections_closed_malformed",
            "Remoting connections closed for a malformed or oversized frame",
            metrics.connections_closed_malformed.clone(),
        );
        Metrics {
            registry,
            ..metrics
        }
    }

    pub fn request(&self, code: i32, result: i32) {
        let labels = RequestLabels {
            code: request::name(code).unwrap_or("unknown"),
            result: response::name(result).unwrap_or("other"),
        };
        self.requests.get_or_create(&labels).inc();
    }

    pub fn registration(&self, fenced: bool) {
        self.registrations.inc();
        if fenced {
            self.fenced_claims.inc();
        }
    }

    pub fn removed(&self, reason: RemovalReason, count: usize) {
        let reason = match reason {
            RemovalReason::Expired => "expired",
            RemovalReason::ConnectionClosed => "connection_closed",
            RemovalReason::Unregistered => "unregistered",
        };
        self.removed_members
            .get_or_create(&RemovalLabels { reason })
            .inc_by(u64::try_from(count).unwrap_or(u64::MAX));
    }

    /// Renders the text exposition after refreshing the gauges from the table and server.
    pub fn render(
        &self,
        table: &RouteTable,
        server: &raftmq_remoting::ServerStatsSnapshot,
    ) -> Result<String, std::fmt::Error> {
        let (groups, members, topics) = table.counts();
        self.groups.set(i64::try_from(groups).unwrap_or(i64::MAX));
        self.members.set(i64::try_from(members).unwrap_or(i64::MAX));
        self.topics.set(i64::try_from(topics).unwrap_or(i64::MAX));
        self.connections_open.set(server.connections_open);
        self.connections_closed_malformed
            .set(server.connections_closed_malformed);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)?;
        Ok(text)
    }
}
