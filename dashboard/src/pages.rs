//! One handler per page: gather the data (the cluster view, then `GET /topics` or
//! `GET /groups` on each group's leader, or a pull), then render it.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::Uri;
use maud::Markup;
use raftmq_client::cluster_view::{ClusterView, DEFAULT_MAX_LAG_ENTRIES};
use raftmq_client::route_explain::explain_route;
use raftmq_client::{AdminHttpError, MessageQueue, PullStatus, ReceivedMessage};
use raftmq_protocol::admin::{GroupStatus, TopicStatus};
use raftmq_protocol::names::DLQ_GROUP_TOPIC_PREFIX;
use serde::Deserialize;

use crate::Dashboard;
use crate::render::{self, GroupRow, Lookup, MessageQuery, TopicRow};

/// Most messages of a dead-letter topic listed on the DLQ page.
pub const DLQ_SHOW_MESSAGES: usize = 50;

type Dash = State<Arc<Dashboard>>;

fn uri_text(uri: &Uri) -> String {
    uri.path_and_query()
        .map_or_else(|| uri.path().to_owned(), |pq| pq.as_str().to_owned())
}

pub async fn cluster(State(dashboard): Dash, uri: Uri) -> Markup {
    let view = dashboard.viewer.view().await;
    let health = view.health(DEFAULT_MAX_LAG_ENTRIES);
    render::cluster(&dashboard.served_by, &uri_text(&uri), &view, &health)
}

/// One admin call on every group's leader, by broker name; what could not be had, as problems.
async fn ask_leaders<T, F, Fut>(view: &ClusterView, ask: F) -> (Vec<(String, T)>, Vec<String>)
where
    F: Fn(String) -> Fut,
    Fut: Future<Output = Result<T, AdminHttpError>>,
{
    let mut problems: Vec<String> = view.namesrv_error.iter().cloned().collect();
    let mut found = Vec::new();
    for group in &view.groups {
        let Some(admin) = group.leader_member().and_then(|m| m.admin_addr.clone()) else {
            problems.push(format!("{} has no leader to ask", group.broker_name));
            continue;
        };
        match ask(admin).await {
            Ok(answer) => found.push((group.broker_name.clone(), answer)),
            Err(err) => problems.push(err.to_string()),
        }
    }
    (found, problems)
}

/// `GET /topics` on every group's leader.
async fn topics_by_group(
    dashboard: &Dashboard,
    view: &ClusterView,
) -> (Vec<(String, Vec<TopicStatus>)>, Vec<String>) {
    let http = dashboard.http();
    ask_leaders(view, |admin| async move { http.topics(&admin).await }).await
}

/// The topics merged over groups, each with its counts and rate.
fn topic_rows(dashboard: &Dashboard, by_group: &[(String, Vec<TopicStatus>)]) -> Vec<TopicRow> {
    let mut rows: BTreeMap<String, TopicRow> = BTreeMap::new();
    for (group, topics) in by_group {
        for topic in topics {
            let written: u64 = topic.queues.values().map(|(_, max)| max).sum();
            let stored: u64 = topic
                .queues
                .values()
                .map(|(min, max)| max.saturating_sub(*min))
                .sum();
            let rate = dashboard.rate(group, &topic.name, written);
            let row = rows.entry(topic.name.clone()).or_insert_with(|| TopicRow {
                name: topic.name.clone(),
                perm: topic.perm,
                ..TopicRow::default()
            });
            row.groups.push(group.clone());
            row.queues += topic.read_queue_nums.max(topic.write_queue_nums);
            row.messages += stored;
            row.written += written;
            row.rate = match (row.rate, rate) {
                (Some(a), Some(b)) => Some(a + b),
                (a, b) => a.or(b),
            };
        }
    }
    rows.into_values().collect()
}

pub async fn topics(State(dashboard): Dash, uri: Uri) -> Markup {
    let view = dashboard.viewer.view().await;
    let (by_group, problems) = topics_by_group(&dashboard, &view).await;
    let rows = topic_rows(&dashboard, &by_group);
    render::topics(&dashboard.served_by, &uri_text(&uri), &rows, &problems)
}

#[derive(Debug, Deserialize)]
pub struct NameQuery {
    #[serde(default)]
    pub name: String,
}

pub async fn topic(State(dashboard): Dash, uri: Uri, Query(query): Query<NameQuery>) -> Markup {
    let explanation = explain_route(&dashboard.viewer, &query.name).await;
    let view = dashboard.viewer.view().await;
    let (by_group, _) = topics_by_group(&dashboard, &view).await;
    let per_group: Vec<(String, TopicStatus)> = by_group
        .into_iter()
        .filter_map(|(group, topics)| {
            topics
                .into_iter()
                .find(|topic| topic.name == query.name)
                .map(|topic| (group, topic))
        })
        .collect();
    render::topic(
        &dashboard.served_by,
        &uri_text(&uri),
        &query.name,
        &explanation,
        &per_group,
    )
}

/// `GET /groups` on every group's leader.
async fn groups_by_broker(dashboard: &Dashboard) -> (Vec<(String, Vec<GroupStatus>)>, Vec<String>) {
    let view = dashboard.viewer.view().await;
    let http = dashboard.http();
    ask_leaders(&view, |admin| async move { http.groups(&admin).await }).await
}

pub async fn groups(State(dashboard): Dash, uri: Uri) -> Markup {
    let (by_broker, problems) = groups_by_broker(&dashboard).await;
    let mut rows: BTreeMap<String, (GroupRow, BTreeSet<String>, BTreeSet<String>)> =
        BTreeMap::new();
    for (broker, groups) in by_broker {
        for group in groups {
            let (row, clients, topics) = rows.entry(group.group.clone()).or_insert_with(|| {
                (
                    GroupRow {
                        name: group.group.clone(),
                        ..GroupRow::default()
                    },
                    BTreeSet::new(),
                    BTreeSet::new(),
                )
            });
            row.brokers.push(broker.clone());
            row.total_lag += group.total_lag;
            clients.extend(group.clients);
            topics.extend(group.queues.into_iter().map(|queue| queue.topic));
        }
    }
    let rows: Vec<GroupRow> = rows
        .into_values()
        .map(|(mut row, clients, topics)| {
            row.clients = clients.into_iter().collect();
            row.topics = topics.into_iter().collect();
            row
        })
        .collect();
    render::groups(&dashboard.served_by, &uri_text(&uri), &rows, &problems)
}

pub async fn group(State(dashboard): Dash, uri: Uri, Query(query): Query<NameQuery>) -> Markup {
    let (by_broker, mut problems) = groups_by_broker(&dashboard).await;
    let per_broker: Vec<(String, GroupStatus)> = by_broker
        .into_iter()
        .filter_map(|(broker, groups)| {
            groups
                .into_iter()
                .find(|group| group.group == query.name)
                .map(|group| (broker, group))
        })
        .collect();
    if per_broker.is_empty() {
        problems.push(format!(
            "no broker group knows consumer group {} (no committed offsets, no live consumers)",
            query.name
        ));
    }
    render::group(
        &dashboard.served_by,
        &uri_text(&uri),
        &query.name,
        &per_broker,
        &problems,
    )
}

/// The message a query names, looked up the way `mq message get` does (a pull of one message
/// at a queue offset from the group's leader), or by offset message id (VIEW_MESSAGE_BY_ID).
/// The most messages one key lookup lists (from each broker group).
const MAX_KEY_MATCHES: i32 = 32;

/// QUERY_MESSAGE on every broker group of `topic`: the messages with `key` (with `unique`, the
/// message id a producer gave) stored at any time retention still holds.
async fn by_key(dashboard: &Dashboard, topic: &str, key: &str, unique: bool) -> Lookup {
    let now = raftmq_protocol::names::now_ms();
    match dashboard
        .admin
        .query_messages(topic, key, unique, (0, now), MAX_KEY_MATCHES)
        .await
    {
        Ok(mut found) if found.len() == 1 => Lookup::Found(Box::new(found.remove(0))),
        Ok(found) if found.is_empty() => Lookup::NotFound(format!(
            "no message in {topic} with {} {key}",
            if unique { "message id" } else { "key" }
        )),
        Ok(found) => Lookup::Matches(found),
        Err(err) => Lookup::Failed(format!("finding {key} in {topic} failed: {err}")),
    }
}

pub async fn find_message(dashboard: &Dashboard, query: &MessageQuery) -> Lookup {
    fn given(field: &Option<String>) -> Option<&str> {
        field.as_deref().map(str::trim).filter(|v| !v.is_empty())
    }
    if let Some(key) = given(&query.key) {
        let Some(topic) = given(&query.topic) else {
            return Lookup::Failed("finding messages by key needs their topic".to_owned());
        };
        return by_key(dashboard, topic, key, false).await;
    }
    if let Some(id) = given(&query.id) {
        // Not an offset message id: the id a producer gave (UNIQ_KEY), found in the key index.
        if raftmq_protocol::message::parse_offset_msg_id(id).is_err() {
            let Some(topic) = given(&query.topic) else {
                return Lookup::Failed(format!(
                    "{id} is not an offset message id; a message id made by a producer (UNIQ_KEY) is found with its topic"
                ));
            };
            return by_key(dashboard, topic, id, true).await;
        }
        return match dashboard.admin.broker().view_message(id).await {
            Ok(Some(stored)) => {
                let topic = stored.topic.clone();
                // The id names the member that stored it; the page names its broker group.
                let addr = raftmq_protocol::message::parse_offset_msg_id(id)
                    .map(|(addr, _)| addr.to_string())
                    .unwrap_or_default();
                let view = dashboard.viewer.view().await;
                let broker =
                    view.groups
                        .iter()
                        .find(|group| {
                            group.members.iter().any(|member| {
                                member.remoting_addr.as_deref() == Some(addr.as_str())
                            })
                        })
                        .map_or(addr.clone(), |group| group.broker_name.clone());
                Lookup::Found(Box::new(ReceivedMessage::from_stored(
                    &topic, &broker, stored,
                )))
            }
            Ok(None) => Lookup::NotFound(format!("no message with offset id {id}")),
            Err(err) => Lookup::Failed(format!("looking up {id} failed: {err}")),
        };
    }
    let (Some(topic), Some(queue), Some(offset)) = (
        given(&query.topic),
        given(&query.queue),
        given(&query.offset),
    ) else {
        return Lookup::NotAsked;
    };
    let (Ok(queue_id), Ok(offset)) = (queue.parse::<i32>(), offset.parse::<i64>()) else {
        return Lookup::Failed("queue and offset must be numbers".to_owned());
    };
    let broker_name = match given(&query.broker) {
        Some(name) => name.to_owned(),
        None => match dashboard.admin.route(topic).await {
            Ok(Some(route)) => match route.groups.keys().collect::<Vec<_>>().as_slice() {
                [only] => (*only).clone(),
                names => {
                    return Lookup::Failed(format!(
                        "topic {topic} is on {} broker groups; name one",
                        names.len()
                    ));
                }
            },
            Ok(None) => return Lookup::NotFound(format!("topic {topic} does not exist")),
            Err(err) => return Lookup::Failed(err.to_string()),
        },
    };
    let queue = MessageQueue {
        topic: topic.to_owned(),
        broker_name,
        queue_id,
    };
    match dashboard.admin.pull(&queue, offset, 1).await {
        Ok(pulled) => {
            let found = (pulled.status == PullStatus::Found)
                .then(|| {
                    pulled
                        .messages
                        .into_iter()
                        .find(|m| m.queue_offset == offset)
                })
                .flatten();
            match found {
                Some(message) => Lookup::Found(Box::new(message)),
                None => Lookup::NotFound(format!(
                    "no message at {}:{queue_id} offset {offset} (the queue holds [{}, {}))",
                    queue.broker_name, pulled.min_offset, pulled.max_offset
                )),
            }
        }
        Err(err) => Lookup::Failed(err.to_string()),
    }
}

pub async fn messages(
    State(dashboard): Dash,
    uri: Uri,
    Query(query): Query<MessageQuery>,
) -> Markup {
    let lookup = find_message(&dashboard, &query).await;
    render::messages(&dashboard.served_by, &uri_text(&uri), &query, &lookup)
}

#[derive(Debug, Deserialize)]
pub struct DlqQuery {
    pub topic: Option<String>,
}

pub async fn dlq(State(dashboard): Dash, uri: Uri, Query(query): Query<DlqQuery>) -> Markup {
    let view = dashboard.viewer.view().await;
    let (by_group, mut problems) = topics_by_group(&dashboard, &view).await;
    let rows: Vec<TopicRow> = topic_rows(&dashboard, &by_group)
        .into_iter()
        .filter(|row| row.name.starts_with(DLQ_GROUP_TOPIC_PREFIX))
        .collect();
    let mut messages = Vec::new();
    let selected = query.topic.as_deref().filter(|t| !t.is_empty());
    if let Some(topic) = selected {
        for (group, topics) in &by_group {
            let Some(status) = topics.iter().find(|t| t.name == topic) else {
                continue;
            };
            for (queue_id, (min, max)) in &status.queues {
                let queue = MessageQueue {
                    topic: topic.to_owned(),
                    broker_name: group.clone(),
                    queue_id: i32::try_from(*queue_id).unwrap_or(i32::MAX),
                };
                let left = DLQ_SHOW_MESSAGES.saturating_sub(messages.len());
                if left == 0 || min >= max {
                    continue;
                }
                let want = i32::try_from(left).unwrap_or(i32::MAX);
                match dashboard
                    .admin
                    .pull(&queue, i64::try_from(*min).unwrap_or(i64::MAX), want)
                    .await
                {
                    Ok(pulled) => messages.extend(pulled.messages.into_iter().take(left)),
                    Err(err) => problems.push(err.to_string()),
                }
            }
        }
    }
    render::dlq(
        &dashboard.served_by,
        &uri_text(&uri),
        &rows,
        selected.map(|topic| (topic, messages.as_slice())),
        &problems,
    )
}
