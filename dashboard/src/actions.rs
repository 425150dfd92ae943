//! `POST /ui/action`: every state-changing action, behind a confirmation step. A form posts
//! its fields with `action=<name>`; without `confirmed=yes` the answer is a page that says
//! what will happen and posts the same fields back with `confirmed=yes`; only then is the
//! action carried out, by the code path `mq` uses:
//!
//! | action | fields | carried out by |
//! |---|---|---|
//! | `create_topic` | `topic`, `queues` | `Admin::create_topic` (UPDATE_AND_CREATE_TOPIC on each group's leader) |
//! | `delete_topic` | `topic` | `Admin::delete_topic` (each group's leader, then the NameServers) |
//! | `reset_offset` | `group`, `topic`, `time`, `force` | `POST /offsets/reset` on the leader of each group of the topic |
//! | `resend` | `group`, and `topic`, `broker`, `queue`, `offset` | a copy sent to `%RETRY%<group>` (only that group consumes it) |
//! | `transfer_leader` | `group`, `node` | `POST /raft/transfer-leader` on the group's leader |
//! | `add_member` / `remove_member` | `group`, `node` (and `raft_addr`) | `admin_http::membership`, then (remove) UNREGISTER_BROKER on every NameServer, as `mq cluster add-member/remove-member` |

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Form;
use axum::extract::State;
use maud::Markup;
use raftmq_client::admin_http::membership::{FindLeader, LeaderView, Membership, MembershipWaits};
use raftmq_client::{Message, Producer};
use raftmq_protocol::admin::ResetOffsets;
use raftmq_protocol::header::UnregisterBrokerRequestHeader;
use raftmq_protocol::message::property;
use raftmq_protocol::names::retry_topic;
use raftmq_protocol::route::TopicConfig;

use crate::Dashboard;
use crate::pages::find_message;
use crate::render::{self, Lookup, MessageQuery, url_encode};

/// The most queues a topic created here may have (as `mq topic create`).
pub const MAX_QUEUES: u32 = 1024;
/// The producer group of resent copies.
pub const RESEND_PRODUCER_GROUP: &str = "RAFTMQ_DASHBOARD";

type Fields = BTreeMap<String, String>;

fn field<'a>(fields: &'a Fields, name: &str) -> Result<&'a str, String> {
    fields
        .get(name)
        .map(|value| value.trim())
        .filter(|value| !value.is_empty())
        .ok_or_else(|| format!("the form has no {name}"))
}

fn number<T: std::str::FromStr>(fields: &Fields, name: &str) -> Result<T, String> {
    let text = field(fields, name)?;
    text.parse()
        .map_err(|_| format!("{name} {text:?} is not a number"))
}

/// What an action will do, in words, and where to go back to; an error for an unknown one.
fn describe(fields: &Fields) -> Result<(String, String), String> {
    let action = field(fields, "action")?;
    let text = |name: &str| field(fields, name).map(str::to_owned);
    Ok(match action {
        "create_topic" => (
            format!(
                "create topic {} with {} queue(s) on every broker group",
                text("topic")?,
                text("queues").unwrap_or_else(|_| "8".into())
            ),
            "/ui/topics".into(),
        ),
        "delete_topic" => (
            format!(
                "delete topic {} and all its messages from every broker group and the NameServers",
                text("topic")?
            ),
            "/ui/topics".into(),
        ),
        "reset_offset" => {
            let group = text("group")?;
            (
                format!(
                    "move consumer group {group}'s offsets on {} to the first message stored at or after {} UTC{}",
                    text("topic")?,
                    text("time")?,
                    if fields.get("force").is_some_and(|f| f == "yes") {
                        ", even while its consumers are connected"
                    } else {
                        ""
                    }
                ),
                format!("/ui/group?name={}", url_encode(&group)),
            )
        }
        "resend" => (
            format!(
                "send a copy of the message at {}:{}:{} offset {} to consumer group {} (topic {})",
                text("broker").unwrap_or_default(),
                text("topic")?,
                text("queue")?,
                text("offset")?,
                text("group")?,
                retry_topic(&text("group")?)
            ),
            "/ui/dlq".into(),
        ),
        "transfer_leader" => (
            format!(
                "make node {} the leader of broker group {}",
                text("node")?,
                text("group")?
            ),
            "/ui/cluster".into(),
        ),
        "add_member" => (
            format!(
                "add node {} at {} to broker group {} (as a learner until it has caught up, then as a voter)",
                text("node")?,
                text("raft_addr")?,
                text("group")?
            ),
            "/ui/cluster".into(),
        ),
        "remove_member" => (
            format!(
                "remove node {} from broker group {} (a removed leader steps down)",
                text("node")?,
                text("group")?
            ),
            "/ui/cluster".into(),
        ),
        other => return Err(format!("unknown action {other:?}")),
    })
}

pub async fn action(State(dashboard): State<Arc<Dashboard>>, Form(fields): Form<Fields>) -> Markup {
    let served_by = &dashboard.served_by;
    let (question, back) = match describe(&fields) {
        Ok(described) => described,
        Err(why) => return render::outcome(served_by, &Err(why), "/ui/cluster"),
    };
    if fields.get("confirmed").map(String::as_str) != Some("yes") {
        return render::confirm(served_by, &format!("{question}?"), &fields);
    }
    let result = perform(&dashboard, &fields).await;
    render::outcome(served_by, &result, &back)
}

async fn perform(dashboard: &Dashboard, fields: &Fields) -> Result<String, String> {
    match field(fields, "action")? {
        "create_topic" => {
            let topic = field(fields, "topic")?;
            let queues: u32 = match fields.get("queues").filter(|q| !q.trim().is_empty()) {
                Some(_) => number(fields, "queues")?,
                None => 8,
            };
            if !(1..=MAX_QUEUES).contains(&queues) {
                return Err(format!("queues must be 1 to {MAX_QUEUES}"));
            }
            let created = dashboard
                .admin
                .create_topic(&TopicConfig::new(topic, queues), None)
                .await
                .map_err(|err| format!("creating topic {topic}: {err}"))?;
            Ok(format!("created topic {topic} on {}", created.join(", ")))
        }
        "delete_topic" => {
            let topic = field(fields, "topic")?;
            dashboard
                .admin
                .delete_topic(topic)
                .await
                .map_err(|err| format!("deleting topic {topic}: {err}"))?;
            Ok(format!("deleted topic {topic}"))
        }
        "reset_offset" => reset_offset(dashboard, fields).await,
        "resend" => resend(dashboard, fields).await,
        "transfer_leader" => {
            let (group, node) = (field(fields, "group")?, number::<u64>(fields, "node")?);
            let view = dashboard.viewer.view().await;
            let admin = view
                .groups
                .iter()
                .find(|g| g.broker_name == group)
                .and_then(|g| g.leader_member())
                .and_then(|m| m.admin_addr.clone())
                .ok_or_else(|| format!("{group} has no leader that answers"))?;
            dashboard
                .http()
                .transfer_leader(&admin, node)
                .await
                .map_err(|err| err.to_string())?;
            Ok(format!("node {node} leads {group}"))
        }
        "add_member" => {
            let (group, node) = (field(fields, "group")?, number::<u64>(fields, "node")?);
            let raft_addr = field(fields, "raft_addr")?;
            let finder = ViewLeader { dashboard, group };
            let leader = membership(dashboard, &finder)
                .add_member(node, raft_addr, false)
                .await
                .map_err(|err| err.to_string())?;
            Ok(format!(
                "node {node} is a voter of {group}; voters {:?}",
                leader.voters
            ))
        }
        "remove_member" => {
            let (group, node) = (field(fields, "group")?, number::<u64>(fields, "node")?);
            // Its addresses as listed now: they are unregistered below, as `mq` does.
            let view = dashboard.viewer.view().await;
            let listed: Vec<(String, String)> = view
                .groups
                .iter()
                .filter(|g| g.broker_name == group)
                .flat_map(|g| {
                    g.members
                        .iter()
                        .filter(|m| m.node_id == Some(node))
                        .filter_map(|m| Some((m.remoting_addr.clone()?, g.cluster.clone())))
                })
                .collect();
            let finder = ViewLeader { dashboard, group };
            let leader = membership(dashboard, &finder)
                .remove_member(node)
                .await
                .map_err(|err| err.to_string())?;
            // A removed member may never learn it was (the leader stops replicating to it), so
            // routes would list it until it expires: unregister it now.
            for (addr, cluster) in &listed {
                let header = UnregisterBrokerRequestHeader {
                    broker_name: group.to_owned(),
                    broker_addr: addr.clone(),
                    cluster_name: cluster.clone(),
                    broker_id: i64::try_from(node).unwrap_or(i64::MAX),
                };
                dashboard
                    .admin
                    .namesrv()
                    .unregister_broker(&header)
                    .await
                    .map_err(|err| {
                        format!("node {node} left {group}, but unregistering {addr}: {err}")
                    })?;
            }
            Ok(format!(
                "node {node} left {group}; voters {:?}; stop its process now",
                leader.voters
            ))
        }
        other => Err(format!("unknown action {other:?}")),
    }
}

/// `YYYY-MM-DDTHH:MM[:SS]` (as a `datetime-local` input sends it, read as UTC) or milliseconds
/// since the epoch.
pub fn parse_time_ms(text: &str) -> Result<i64, String> {
    let text = text.trim();
    if let Ok(ms) = text.parse::<i64>() {
        return Ok(ms);
    }
    let bad = || format!("{text:?} is not YYYY-MM-DDTHH:MM[:SS] nor milliseconds");
    let (date, time) = text.split_once(['T', ' ']).ok_or_else(bad)?;
    let parts = |s: &str, sep: char| -> Result<Vec<i64>, String> {
        s.split(sep)
            .map(|p| p.parse::<i64>().map_err(|_| bad()))
            .collect()
    };
    let (date, time) = (parts(date, '-')?, parts(time, ':')?);
    let [year, month, day] = date[..] else {
        return Err(bad());
    };
    let (hour, minute, second) = match time[..] {
        [h, m] => (h, m, 0),
        [h, m, s] => (h, m, s),
        _ => return Err(bad()),
    };
    if !(1..=12).contains(&month)
        || !(1..=31).contains(&day)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return Err(bad());
    }
    // Days from 1970-01-01 to the date (Howard Hinnant's days_from_civil).
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Ok(((days * 24 + hour) * 60 + minute) * 60_000 + second * 1000)
}

async fn reset_offset(dashboard: &Dashboard, fields: &Fields) -> Result<String, String> {
    let (group, topic) = (field(fields, "group")?, field(fields, "topic")?);
    let timestamp_ms = parse_time_ms(field(fields, "time")?)?;
    let force = fields.get("force").is_some_and(|f| f == "yes");
    let route = dashboard
        .admin
        .route(topic)
        .await
        .map_err(|err| err.to_string())?
        .ok_or_else(|| format!("topic {topic} does not exist"))?;
    let view = dashboard.viewer.view().await;
    let mut moved = Vec::new();
    for broker in route.groups.keys() {
        let admin = view
            .groups
            .iter()
            .find(|g| &g.broker_name == broker)
            .and_then(|g| g.leader_member())
            .and_then(|m| m.admin_addr.clone())
            .ok_or_else(|| format!("broker group {broker} has no reachable leader"))?;
        let request = ResetOffsets {
            group: group.to_owned(),
            topic: topic.to_owned(),
            queue: None,
            offset: None,
            timestamp_ms: Some(timestamp_ms),
            force,
        };
        let answer = dashboard
            .http()
            .reset_offsets(&admin, &request)
            .await
            .map_err(|err| format!("resetting on {broker}: {err}"))?;
        moved.extend(
            answer
                .queues
                .iter()
                .map(|queue| format!("{broker}:{} -> {}", queue.queue, queue.offset)),
        );
    }
    Ok(format!(
        "reset {group}'s offsets on {topic}: {}",
        moved.join(", ")
    ))
}

/// Properties the producer or broker sets on a copy of their own.
const NOT_COPIED: [&str; 10] = [
    property::UNIQ_KEY,
    property::KEYS,
    property::TAGS,
    property::WAIT,
    property::DELAY,
    property::REAL_TOPIC,
    property::REAL_QID,
    property::MIN_OFFSET,
    property::MAX_OFFSET,
    property::PRODUCER_GROUP,
];

async fn resend(dashboard: &Dashboard, fields: &Fields) -> Result<String, String> {
    let group = field(fields, "group")?;
    let query = MessageQuery {
        topic: fields.get("topic").cloned(),
        broker: fields.get("broker").cloned(),
        queue: fields.get("queue").cloned(),
        offset: fields.get("offset").cloned(),
        ..MessageQuery::default()
    };
    let message = match find_message(dashboard, &query).await {
        Lookup::Found(message) => message,
        Lookup::NotFound(why) | Lookup::Failed(why) => return Err(why),
        Lookup::NotAsked | Lookup::Matches(_) => {
            return Err("the form does not name one message".to_owned());
        }
    };
    let mut properties = message.properties.clone();
    for name in NOT_COPIED {
        properties.remove(name);
    }
    // The group's consumers deliver it under its original topic, as any retry.
    properties
        .entry(property::RETRY_TOPIC.to_owned())
        .or_insert_with(|| message.topic.clone());
    let copy = Message {
        topic: retry_topic(group),
        body: message.body.clone(),
        tags: message.tags.clone(),
        keys: message.keys.clone(),
        flag: message.flag,
        sharding_key: None,
        properties,
    };
    let producer = Producer::builder()
        .namesrv(dashboard.namesrv_list.clone())
        .group(RESEND_PRODUCER_GROUP)
        .build()
        .await
        .map_err(|err| err.to_string())?;
    let sent = producer.send(copy).await;
    producer.shutdown().await;
    let sent = sent.map_err(|err| format!("sending to {}: {err}", retry_topic(group)))?;
    Ok(format!(
        "sent a copy to {} ({}:{} offset {}) for consumer group {group}",
        retry_topic(group),
        sent.queue.broker_name,
        sent.queue.queue_id,
        sent.queue_offset
    ))
}

/// Finds a group's leader through the dashboard's cluster view.
struct ViewLeader<'a> {
    dashboard: &'a Dashboard,
    group: &'a str,
}

impl FindLeader for ViewLeader<'_> {
    async fn find_leader(&self) -> Result<LeaderView, String> {
        let view = self.dashboard.viewer.view().await;
        let group = view
            .groups
            .iter()
            .find(|g| g.broker_name == self.group)
            .ok_or_else(|| format!("the NameServer knows no broker group {}", self.group))?;
        let member = group
            .leader_member()
            .ok_or_else(|| format!("broker group {} has no leader", self.group))?;
        match (member.status(), &member.admin_addr) {
            (Some(status), Some(admin)) => Ok(LeaderView::from_status(status, admin.clone())),
            _ => Err(format!("the leader of {} does not answer", self.group)),
        }
    }
}

/// `mq`'s membership changes, with the dashboard's way to the leader and `mq`'s bounds.
fn membership<'a>(
    dashboard: &'a Dashboard,
    finder: &'a ViewLeader<'a>,
) -> Membership<'a, ViewLeader<'a>> {
    Membership {
        group: finder.group,
        leaders: finder,
        admin: dashboard.http(),
        waits: MembershipWaits::default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_read_as_utc_or_milliseconds() {
        assert_eq!(parse_time_ms("1700000000000").unwrap(), 1_700_000_000_000);
        assert_eq!(parse_time_ms("1970-01-01T00:00").unwrap(), 0);
        // 2023-11-14T22:13:20Z is 1_700_000_000 s.
        assert_eq!(
            parse_time_ms("2023-11-14T22:13:20").unwrap(),
            1_700_000_000_000
        );
        assert_eq!(
            parse_time_ms("2024-02-29 12:00").unwrap(),
            1_709_208_000_000
        );
        assert!(parse_time_ms("yesterday").is_err());
        assert!(parse_time_ms("2024-13-01T00:00").is_err());
    }

    #[test]
    fn every_action_says_what_it_will_do_and_unknown_ones_are_refused() {
        let fields = |pairs: &[(&str, &str)]| -> Fields {
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect()
        };
        let (question, back) =
            describe(&fields(&[("action", "delete_topic"), ("topic", "T")])).unwrap();
        assert!(question.contains("delete topic T"), "{question}");
        assert_eq!(back, "/ui/topics");
        let (question, _) = describe(&fields(&[
            ("action", "reset_offset"),
            ("group", "g"),
            ("topic", "T"),
            ("time", "2024-01-01T00:00"),
            ("force", "yes"),
        ]))
        .unwrap();
        assert!(question.contains("even while its consumers"), "{question}");
        assert!(describe(&fields(&[("action", "drop_database")])).is_err());
        assert!(describe(&fields(&[("action", "delete_topic")])).is_err());
    }
}
