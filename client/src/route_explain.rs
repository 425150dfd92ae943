//! [`explain_route`]: why a topic has a usable route or not, in words, instead of RocketMQ's
//! bare "No route info of this topic". `mq topic route --explain` prints it and the dashboard's
//! topic page shows it.
//!
//! ```text
//! NameServers answer?          no  -> NameServerUnreachable (each address and its error)
//! the NameServer has a route?  no  -> TopicUnknown: does a broker group hold the topic (it
//!                                     registers within 30 s), can a first send create it?
//! a group of the route has a
//! leader in slot 0?            no  -> NoLeader: per group, what its members say (none
//!                                     answers, none leads, a leader not registered yet)
//! a queue may be written?      no  -> NotWritable (the topic's permissions)
//!                                  -> Routable
//! ```

use raftmq_protocol::names::AUTO_CREATE_TOPIC_KEY_TOPIC;
use raftmq_protocol::route::{MASTER_ID, TopicRouteData, perm};
use serde::Serialize;

use crate::cluster_view::{ClusterView, ClusterViewer, GroupView};
use crate::error::ClientError;
use crate::message::validate_topic;

/// The outcome of [`explain_route`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RouteVerdict {
    /// Some group of the route has a registered leader and writable queues.
    Routable,
    /// The name is not a valid topic name.
    InvalidName,
    /// No NameServer answered.
    NameServerUnreachable,
    /// The NameServers have no route for the topic.
    TopicUnknown,
    /// The route lists no group with a leader in slot 0.
    NoLeader,
    /// Every queue of the route is read-only.
    NotWritable,
}

/// Why a topic is routable or not: a verdict, and the reasons as lines for people.
#[derive(Clone, Debug, Serialize)]
pub struct RouteExplanation {
    pub topic: String,
    pub verdict: RouteVerdict,
    pub route: Option<TopicRouteData>,
    pub reasons: Vec<String>,
}

/// Explains `topic`'s route; asks the NameServers, and the cluster's members when the route
/// alone does not say why.
pub async fn explain_route(viewer: &ClusterViewer, topic: &str) -> RouteExplanation {
    let mut explanation = RouteExplanation {
        topic: topic.to_owned(),
        verdict: RouteVerdict::Routable,
        route: None,
        reasons: Vec::new(),
    };
    if let Err(err) = validate_topic(topic) {
        explanation.verdict = RouteVerdict::InvalidName;
        explanation.reasons.push(err.to_string());
        return explanation;
    }
    let route = match viewer.namesrv().topic_route(topic).await {
        Ok(route) => route,
        Err(err) => {
            explanation.verdict = RouteVerdict::NameServerUnreachable;
            explanation.reasons.push(match &err {
                ClientError::NameServerUnavailable { .. } => format!(
                    "no NameServer answered ({}): {err}",
                    viewer.namesrv().addrs().join(";")
                ),
                _ => format!("the NameServer could not be asked: {err}"),
            });
            return explanation;
        }
    };
    let view = viewer.view().await;
    match route {
        None => unknown_topic(viewer, &view, &mut explanation).await,
        Some(route) => {
            explain_known(&view, &route, &mut explanation);
            explanation.route = Some(route);
        }
    }
    explanation
}

async fn unknown_topic(
    viewer: &ClusterViewer,
    view: &ClusterView,
    explanation: &mut RouteExplanation,
) {
    explanation.verdict = RouteVerdict::TopicUnknown;
    let topic = explanation.topic.clone();
    explanation
        .reasons
        .push(format!("the NameServer has no route for topic {topic}"));
    let mut holders = Vec::new();
    for group in &view.groups {
        let Some(admin) = group.leader_member().and_then(|m| m.admin_addr.as_deref()) else {
            continue;
        };
        if let Ok(topics) = viewer.admin().topics(admin).await
            && topics.iter().any(|t| t.name == topic)
        {
            holders.push(group.broker_name.clone());
        }
    }
    if holders.is_empty() {
        explanation.reasons.push(format!(
            "no broker group's leader has topic {topic}: create it (mq topic create -t {topic})"
        ));
        let auto_create = viewer
            .namesrv()
            .topic_route(AUTO_CREATE_TOPIC_KEY_TOPIC)
            .await
            .ok()
            .flatten()
            .is_some();
        if auto_create {
            explanation.reasons.push(format!(
                "or send to it: the brokers register {AUTO_CREATE_TOPIC_KEY_TOPIC}, so a producer's first send creates the topic"
            ));
        }
    } else {
        explanation.reasons.push(format!(
            "broker group(s) {} hold it but have not registered it yet: a group registers its topics at once when they change and every 30 s",
            holders.join(", ")
        ));
    }
}

fn explain_known(view: &ClusterView, route: &TopicRouteData, explanation: &mut RouteExplanation) {
    let mut led = 0;
    let mut writable = 0;
    for queue_data in &route.queue_datas {
        let name = &queue_data.broker_name;
        let leader_addr = route
            .broker_datas
            .iter()
            .find(|broker| &broker.broker_name == name)
            .and_then(|broker| broker.broker_addrs.get(&MASTER_ID));
        let group = view.groups.iter().find(|group| &group.broker_name == name);
        match leader_addr {
            Some(addr) => {
                led += 1;
                let write = queue_data.perm & perm::WRITE != 0;
                if write {
                    writable += 1;
                }
                explanation.reasons.push(format!(
                    "broker group {name}: leader {addr}, {} write / {} read queue(s){}",
                    queue_data.write_queue_nums,
                    queue_data.read_queue_nums,
                    if write {
                        ""
                    } else {
                        ", read-only (perm has no write bit)"
                    }
                ));
            }
            None => explanation
                .reasons
                .push(format!("broker group {name}: {}", why_no_leader(group))),
        }
    }
    explanation.verdict = if led == 0 {
        RouteVerdict::NoLeader
    } else if writable == 0 {
        RouteVerdict::NotWritable
    } else {
        RouteVerdict::Routable
    };
}

/// Why a group has no leader in the NameServer's slot 0, from what its members say.
fn why_no_leader(group: Option<&GroupView>) -> String {
    let Some(group) = group else {
        return "no leader registered, and the NameServer lists no member of it".to_owned();
    };
    if let Some(leader) = group.leader() {
        return format!(
            "node {} leads in term {} but has not registered as leader yet (it does at once; the NameServer keeps a higher term's claim)",
            leader.node_id, leader.term
        );
    }
    let up: Vec<String> = group
        .members
        .iter()
        .filter_map(|member| member.status())
        .map(|status| {
            format!(
                "node {} is {} in term {}",
                status.node_id, status.state, status.term
            )
        })
        .collect();
    if up.is_empty() {
        format!(
            "no leader: none of its {} member(s) answers",
            group.members.len()
        )
    } else {
        format!(
            "no leader: an election may be under way or a majority is down ({}; {} of {} member(s) answer)",
            up.join(", "),
            up.len(),
            group.members.len()
        )
    }
}
