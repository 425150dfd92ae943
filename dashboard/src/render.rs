//! The pages' HTML: pure functions from the data (the admin JSON types, the cluster view) to
//! maud markup. maud escapes every value written with `(value)`, so names, keys, properties and
//! bodies are always text, never markup.

use std::collections::BTreeMap;

use maud::{DOCTYPE, Markup, PreEscaped, html};
use raftmq_client::ReceivedMessage;
use raftmq_client::cluster_view::{ClusterView, GroupView, Health, MemberView, Verdict};
use raftmq_client::route_explain::{RouteExplanation, RouteVerdict};
use raftmq_protocol::admin::{GroupStatus, TopicStatus};

use crate::{HTMX_PATH, REFRESH_SECONDS};

/// Bytes of a body shown on the message page (the rest is cut, and says so).
pub const BODY_SHOW_BYTES: usize = 64 * 1024;
/// Characters of a body shown in a list (DLQ).
pub const BODY_PREVIEW_CHARS: usize = 80;

const CSS: &str = r#"
body{font-family:system-ui,sans-serif;margin:0;color:#1d232a;background:#f6f7f9}
header{background:#1d2a3a;color:#fff;padding:.6em 1.2em;display:flex;gap:1.5em;align-items:center}
header a{color:#cfe0ff;text-decoration:none}header a.active{color:#fff;font-weight:600;border-bottom:2px solid #7fb0ff}
header .by{margin-left:auto;color:#9fb3c8;font-size:.9em}
main{padding:1em 1.5em}h1{font-size:1.4em;margin:.2em 0 .6em}h2{font-size:1.1em;margin:1.2em 0 .4em}
table{border-collapse:collapse;background:#fff;font-size:.9em;margin-bottom:.8em}
th,td{border:1px solid #d8dde3;padding:.25em .55em;text-align:left;vertical-align:top}th{background:#eef1f5}
td.num{text-align:right;font-variant-numeric:tabular-nums}
.banner{padding:.5em .8em;border-radius:4px;margin-bottom:.8em}
.healthy{background:#e3f6e8;border:1px solid #7cc892}.degraded{background:#fff4d6;border:1px solid #e5c15c}
.no_leader,.unreachable,.failed{background:#fde2e1;border:1px solid #e08a85}
.leader{font-weight:600}.down{color:#b42318;font-weight:600}.muted{color:#6b7785}
.gap{color:#6b7785;font-style:italic}
form.inline{display:inline;margin:0}pre.body{background:#fff;border:1px solid #d8dde3;padding:.6em;white-space:pre-wrap;max-width:100em}
fieldset{background:#fff;border:1px solid #d8dde3;margin:.6em 0;max-width:60em}
"#;

/// The pages of the navigation bar.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Nav {
    Cluster,
    Topics,
    Groups,
    Messages,
    Dlq,
    None,
}

/// A whole page: `live` is refreshed every [`REFRESH_SECONDS`] from `uri` (the page's own
/// address), `rest` (forms) is not.
pub fn page(
    served_by: &str,
    nav: Nav,
    title: &str,
    uri: &str,
    live: Markup,
    rest: Markup,
) -> Markup {
    let link = |target: Nav, href: &str, label: &str| {
        html! { a href=(href) class=[(nav == target).then_some("active")] { (label) } }
    };
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { "RaftMQ · " (title) }
                script src=(HTMX_PATH) {}
                style { (PreEscaped(CSS)) }
            }
            body {
                header {
                    strong { "RaftMQ" }
                    nav {
                        (link(Nav::Cluster, "/ui/cluster", "Cluster")) " "
                        (link(Nav::Topics, "/ui/topics", "Topics")) " "
                        (link(Nav::Groups, "/ui/groups", "Consumer groups")) " "
                        (link(Nav::Messages, "/ui/messages", "Messages")) " "
                        (link(Nav::Dlq, "/ui/dlq", "DLQ"))
                    }
                    span.by { "served by " (served_by) }
                }
                main {
                    h1 { (title) }
                    div #live hx-get=(uri) hx-trigger={ "every " (REFRESH_SECONDS) "s" }
                        hx-select="#live" hx-swap="outerHTML" data-rendered-at=(now_text()) {
                        (live)
                    }
                    (rest)
                }
            }
        }
    }
}

fn now_text() -> String {
    raftmq_protocol::names::now_ms().to_string()
}

/// `None` as `-`.
fn opt<T: std::fmt::Display>(value: Option<T>) -> String {
    value.map_or_else(|| "-".to_owned(), |value| value.to_string())
}

/// `1.5 MiB`.
pub fn bytes_text(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// A form that posts one action (first to its confirmation page).
fn action_button(action: &str, label: &str, fields: &[(&str, String)]) -> Markup {
    html! {
        form.inline method="post" action="/ui/action" {
            input type="hidden" name="action" value=(action);
            @for (name, value) in fields {
                input type="hidden" name=(name) value=(value);
            }
            button type="submit" data-action=(action) { (label) }
        }
    }
}

fn verdict_banner(health: &Health) -> Markup {
    html! {
        div #health class={ "banner " (health.verdict.as_str()) } data-verdict=(health.verdict.as_str()) {
            @match health.verdict {
                Verdict::Healthy => {
                    strong { "Healthy" }
                    " — every group has a leader that takes writes, every member answers, none lags."
                }
                verdict => {
                    strong { (verdict.as_str().replace('_', " ").to_uppercase()) }
                    ul { @for problem in &health.problems { li { (problem.message) } } }
                }
            }
        }
    }
}

// ---- cluster ----

/// The cluster page: health, and per group each member's Raft state.
pub fn cluster(served_by: &str, uri: &str, view: &ClusterView, health: &Health) -> Markup {
    let live = html! {
        (verdict_banner(health))
        p.muted { "NameServer " (view.namesrv.join(";")) }
        @for group in &view.groups { (group_section(group)) }
    };
    let rest = html! {
        fieldset #add-member {
            legend { "Add a member (started with mqbroker --join)" }
            form method="post" action="/ui/action" {
                input type="hidden" name="action" value="add_member";
                label { "Broker group " select name="group" {
                    @for group in &view.groups { option value=(group.broker_name) { (group.broker_name) } }
                } } " "
                label { "Node id " input type="number" name="node" min="1" required; } " "
                label { "Raft address " input type="text" name="raft_addr" placeholder="host:port" required; } " "
                button type="submit" { "Add…" }
            }
        }
    };
    page(served_by, Nav::Cluster, "Cluster", uri, live, rest)
}

fn group_section(group: &GroupView) -> Markup {
    let leader = group.leader();
    html! {
        section.group data-group=(group.broker_name) {
            h2 {
                "Broker group " (group.broker_name) " "
                span.muted { "(cluster " (group.cluster) ")" }
            }
            p {
                @match leader {
                    Some(leader) => {
                        "Leader: node " (leader.node_id) ", term " (leader.term)
                        ", commit index " (opt(leader.commit_index))
                        @if leader.writable { ", takes writes" } @else { span.down { ", does NOT take writes" } }
                    }
                    None => span.down { "No leader" }
                }
                " · NameServer slot 0: " (group.namesrv_leader().unwrap_or("none"))
            }
            table.members id={ "members-" (group.broker_name) } {
                thead { tr {
                    th { "Node" } th { "State" } th { "Role" } th { "Up" } th { "Term" }
                    th { "Last log" } th { "Commit" } th { "Applied" } th { "Lag" }
                    th { "Last contact" } th { "Writable" } th { "Disk used" }
                    th { "Remoting" } th { "Admin" } th { "Raft" } th { "NS slots" } th { "Actions" }
                } }
                tbody { @for member in &group.members { (member_row(group, member)) } }
            }
        }
    }
}

fn member_row(group: &GroupView, member: &MemberView) -> Markup {
    let status = member.status();
    let node = member.node_id;
    let is_leader = status.is_some_and(|s| s.is_leader());
    let role = node.and_then(|id| group.role_of(id));
    html! {
        tr class=(if is_leader { "member leader" } else { "member" }) data-node=(opt(node)) {
            td.num { (opt(node)) }
            td.state { @match status { Some(s) => (s.state), None => "-" } }
            td { (role.unwrap_or("-")) }
            td { @match &member.status {
                Ok(_) => "up",
                Err(reason) => span.down title=(reason) { "DOWN" },
            } }
            td.num { (opt(status.map(|s| s.term))) }
            td.num { (opt(status.and_then(|s| s.last_log_index))) }
            td.num { (opt(status.and_then(|s| s.commit_index))) }
            td.num { (opt(status.and_then(|s| s.applied_index))) }
            td.num { (opt(node.and_then(|id| group.lag_of(id)))) }
            td {
                @if is_leader {
                    @match status.and_then(|s| s.quorum_ack_age_ms) {
                        Some(ms) => { (ms) " ms ago (quorum)" }
                        None => "-",
                    }
                } @else {
                    @match node.and_then(|id| group.last_contact_ms_of(id)) {
                        Some(ms) => { (ms) " ms ago" }
                        None => "-",
                    }
                }
            }
            td { @match status { Some(s) => (if s.writable { "yes" } else { "no" }), None => "-" } }
            td.num { (status.and_then(|s| s.disk_used_bytes).map_or_else(|| "-".to_owned(), bytes_text)) }
            td { (member.remoting_addr.as_deref().unwrap_or("-")) }
            td { (member.admin_addr.as_deref().unwrap_or("-")) }
            td { (member.raft_addr.as_deref().unwrap_or("-")) }
            td { (member.namesrv_slots.iter().map(u64::to_string).collect::<Vec<_>>().join(",")) }
            td {
                @if let (Some(id), Some(_), false) = (node, status, is_leader) {
                    @if role == Some("voter") {
                        (action_button("transfer_leader", "Make leader…", &[("group", group.broker_name.clone()), ("node", id.to_string())]))
                        " "
                    }
                }
                @if let (Some(id), Some(_)) = (node, role) {
                    (action_button("remove_member", "Remove…", &[("group", group.broker_name.clone()), ("node", id.to_string())]))
                }
            }
        }
    }
}

// ---- topics ----

/// One topic on the topics page, merged over the broker groups that have it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TopicRow {
    pub name: String,
    pub groups: Vec<String>,
    pub queues: u32,
    /// Messages stored now (max - min offsets, summed).
    pub messages: u64,
    /// Messages ever written (max offsets, summed).
    pub written: u64,
    /// Messages per second since the previous look, summed over groups.
    pub rate: Option<f64>,
    pub perm: u32,
}

pub fn topics(served_by: &str, uri: &str, rows: &[TopicRow], problems: &[String]) -> Markup {
    let live = html! {
        @for problem in problems { div.banner.degraded { (problem) } }
        table #topics {
            thead { tr { th { "Topic" } th { "Broker groups" } th { "Queues" } th { "Messages stored" }
                th { "Messages written" } th { "Rate (msg/s)" } th { "Perm" } th { "Actions" } } }
            tbody {
                @for row in rows {
                    tr.topic data-topic=(row.name) {
                        td { a href={ "/ui/topic?name=" (url_encode(&row.name)) } { (row.name) } }
                        td { (row.groups.join(", ")) }
                        td.num { (row.queues) }
                        td.num { (row.messages) }
                        td.num { (row.written) }
                        td.num { (row.rate.map_or_else(|| "-".to_owned(), |rate| format!("{rate:.1}"))) }
                        td.num { (row.perm) }
                        td { (action_button("delete_topic", "Delete…", &[("topic", row.name.clone())])) }
                    }
                }
            }
        }
        p.muted { "Rates are measured between two refreshes of this page." }
    };
    let rest = html! {
        fieldset #create-topic {
            legend { "Create a topic (on every broker group's leader)" }
            form method="post" action="/ui/action" {
                input type="hidden" name="action" value="create_topic";
                label { "Topic " input type="text" name="topic" required; } " "
                label { "Queues " input type="number" name="queues" value="8" min="1" max="1024"; } " "
                button type="submit" { "Create…" }
            }
        }
    };
    page(served_by, Nav::Topics, "Topics", uri, live, rest)
}

pub fn topic(
    served_by: &str,
    uri: &str,
    name: &str,
    explanation: &RouteExplanation,
    per_group: &[(String, TopicStatus)],
) -> Markup {
    let verdict = serde_verdict(explanation.verdict);
    let live = html! {
        div #route class=(if explanation.verdict == RouteVerdict::Routable { "banner healthy" } else { "banner degraded" }) data-verdict=(verdict) {
            strong { "Route: " (verdict.replace('_', " ")) }
            ul { @for reason in &explanation.reasons { li { (reason) } } }
        }
        @for (group, status) in per_group {
            h2 { "On " (group) }
            table.queues data-group=(group) {
                thead { tr { th { "Queue" } th { "Min offset" } th { "Max offset" } th { "Messages" } } }
                tbody { @for (queue, (min, max)) in &status.queues {
                    tr { td.num { (queue) } td.num { (min) } td.num { (max) } td.num { (max.saturating_sub(*min)) } }
                } }
            }
        }
    };
    let rest = html! {
        p { (action_button("delete_topic", "Delete this topic…", &[("topic", name.to_owned())])) }
    };
    page(
        served_by,
        Nav::Topics,
        &format!("Topic {name}"),
        uri,
        live,
        rest,
    )
}

fn serde_verdict(verdict: RouteVerdict) -> &'static str {
    match verdict {
        RouteVerdict::Routable => "routable",
        RouteVerdict::InvalidName => "invalid_name",
        RouteVerdict::NameServerUnreachable => "name_server_unreachable",
        RouteVerdict::TopicUnknown => "topic_unknown",
        RouteVerdict::NoLeader => "no_leader",
        RouteVerdict::NotWritable => "not_writable",
    }
}

// ---- consumer groups ----

/// One consumer group on the groups page, merged over broker groups.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GroupRow {
    pub name: String,
    pub brokers: Vec<String>,
    pub clients: Vec<String>,
    pub topics: Vec<String>,
    pub total_lag: u64,
}

pub fn groups(served_by: &str, uri: &str, rows: &[GroupRow], problems: &[String]) -> Markup {
    let live = html! {
        @for problem in problems { div.banner.degraded { (problem) } }
        table #groups {
            thead { tr { th { "Group" } th { "Broker groups" } th { "Online clients" } th { "Topics" } th { "Total lag" } } }
            tbody { @for row in rows {
                tr.group data-group=(row.name) {
                    td { a href={ "/ui/group?name=" (url_encode(&row.name)) } { (row.name) } }
                    td { (row.brokers.join(", ")) }
                    td.num { (row.clients.len()) }
                    td { (row.topics.join(", ")) }
                    td.num { (row.total_lag) }
                }
            } }
        }
    };
    page(
        served_by,
        Nav::Groups,
        "Consumer groups",
        uri,
        live,
        html! {},
    )
}

pub fn group(
    served_by: &str,
    uri: &str,
    name: &str,
    per_broker: &[(String, GroupStatus)],
    problems: &[String],
) -> Markup {
    let mut clients: Vec<&String> = per_broker.iter().flat_map(|(_, g)| &g.clients).collect();
    clients.sort();
    clients.dedup();
    let total: u64 = per_broker.iter().map(|(_, g)| g.total_lag).sum();
    let mut topics: Vec<&String> = per_broker
        .iter()
        .flat_map(|(_, g)| g.queues.iter().map(|q| &q.topic))
        .collect();
    topics.sort();
    topics.dedup();
    let live = html! {
        @for problem in problems { div.banner.degraded { (problem) } }
        p { "Total lag: " strong #total-lag { (total) } }
        h2 { "Online clients (" (clients.len()) ")" }
        ul #clients { @for client in &clients { li.client { (client) } } }
        h2 { "Queues" }
        table #group-queues {
            thead { tr { th { "Broker group" } th { "Topic" } th { "Queue" } th { "Committed" } th { "Max offset" } th { "Lag" } th { "Client (last pull)" } } }
            tbody { @for (broker, status) in per_broker { @for queue in &status.queues {
                tr.queue {
                    td { (broker) } td { (queue.topic) } td.num { (queue.queue) }
                    td.num { (queue.committed) } td.num { (queue.max_offset) } td.num { (queue.lag) }
                    td { (queue.client.as_deref().unwrap_or("-")) }
                }
            } } }
        }
        p.muted { "The client of a queue is the one that pulled it last from the group's leader; pulls served by followers are not seen there." }
    };
    let rest = html! {
        fieldset #reset-offset {
            legend { "Reset the group's offsets by time" }
            form method="post" action="/ui/action" {
                input type="hidden" name="action" value="reset_offset";
                input type="hidden" name="group" value=(name);
                label { "Topic " select name="topic" { @for topic in &topics { option value=(topic) { (topic) } } } } " "
                label { "Time (UTC) " input type="datetime-local" name="time" step="1" required; } " "
                label { input type="checkbox" name="force" value="yes"; " even with live consumers" } " "
                button type="submit" { "Reset…" }
            }
        }
    };
    page(
        served_by,
        Nav::Groups,
        &format!("Consumer group {name}"),
        uri,
        live,
        rest,
    )
}

// ---- messages ----

/// What the messages page was asked.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Deserialize)]
pub struct MessageQuery {
    pub topic: Option<String>,
    pub broker: Option<String>,
    pub queue: Option<String>,
    pub offset: Option<String>,
    /// An offset message id.
    pub id: Option<String>,
    pub key: Option<String>,
}

/// What a lookup found.
#[derive(Debug)]
pub enum Lookup {
    NotAsked,
    NotFound(String),
    Failed(String),
    Found(Box<ReceivedMessage>),
    /// Several messages with the key asked for, oldest first.
    Matches(Vec<ReceivedMessage>),
}

pub fn messages(served_by: &str, uri: &str, query: &MessageQuery, lookup: &Lookup) -> Markup {
    let value = |field: &Option<String>| field.clone().unwrap_or_default();
    let live = html! {
        @match lookup {
            Lookup::NotAsked => p.muted { "Look a message up by topic, queue and offset, by its message id, or by topic and key." },
            Lookup::NotFound(why) => div #not-found .banner.degraded { (why) },
            Lookup::Failed(why) => div #failed .banner.failed { (why) },
            Lookup::Found(message) => (message_view(message)),
            Lookup::Matches(found) => (matches_view(found)),
        }
    };
    let rest = html! {
        fieldset #lookup {
            legend { "Find a message" }
            form method="get" action="/ui/messages" {
                label { "Topic " input type="text" name="topic" value=(value(&query.topic)); } " "
                label { "Broker group " input type="text" name="broker" value=(value(&query.broker)) placeholder="when on several"; } " "
                label { "Queue " input type="number" name="queue" min="0" value=(value(&query.queue)); } " "
                label { "Offset " input type="number" name="offset" min="0" value=(value(&query.offset)); } " "
                button type="submit" { "Find" }
            }
            form method="get" action="/ui/messages" {
                label { "Topic " input type="text" name="topic" value=(value(&query.topic)) placeholder="for a producer's id"; } " "
                label { "Message id " input type="text" name="id" size="40" value=(value(&query.id)) placeholder="offset id, or a producer's id"; } " "
                button type="submit" { "Find by id" }
            }
            form method="get" action="/ui/messages" {
                label { "Topic " input type="text" name="topic" value=(value(&query.topic)); } " "
                label { "Key " input type="text" name="key" value=(value(&query.key)); } " "
                button type="submit" { "Find by key" }
            }
        }
        @if let Lookup::Found(message) = lookup {
            fieldset #resend {
                legend { "Resend to a consumer group (a copy goes to %RETRY%<group>, which only that group consumes)" }
                form method="post" action="/ui/action" {
                    input type="hidden" name="action" value="resend";
                    input type="hidden" name="topic" value=(message.queue.topic);
                    input type="hidden" name="broker" value=(message.queue.broker_name);
                    input type="hidden" name="queue" value=(message.queue.queue_id);
                    input type="hidden" name="offset" value=(message.queue_offset);
                    label { "Group " input type="text" name="group" required; } " "
                    button type="submit" { "Resend…" }
                }
            }
        }
    };
    page(served_by, Nav::Messages, "Messages", uri, live, rest)
}

/// The messages a key lookup found, each linked to its own page.
fn matches_view(found: &[ReceivedMessage]) -> Markup {
    html! {
        table #matches {
            thead { tr { th { "Broker group" } th { "Queue" } th { "Offset" } th { "Keys" } th { "Stored (ms)" } } }
            tbody {
                @for message in found {
                    tr {
                        td { (message.queue.broker_name) }
                        td.num { (message.queue.queue_id) }
                        td.num { a href={ "/ui/messages?topic=" (url_encode(&message.queue.topic)) "&broker=" (url_encode(&message.queue.broker_name)) "&queue=" (message.queue.queue_id) "&offset=" (message.queue_offset) } { (message.queue_offset) } }
                        td { (message.keys.join(" ")) }
                        td.num { (message.store_timestamp) }
                    }
                }
            }
        }
    }
}

fn message_view(message: &ReceivedMessage) -> Markup {
    let shown = &message.body[..message.body.len().min(BODY_SHOW_BYTES)];
    html! {
        table #message {
            tbody {
                tr { th { "Topic" } td #message-topic { (message.topic) } }
                tr { th { "Queue" } td { (message.queue.broker_name) ":" (message.queue.topic) ":" (message.queue.queue_id) } }
                tr { th { "Offset" } td { (message.queue_offset) } }
                tr { th { "Message id" } td { (message.msg_id) } }
                tr { th { "Offset message id" } td { (message.offset_msg_id) } }
                tr { th { "Keys" } td #message-keys { (message.keys.join(" ")) } }
                tr { th { "Tags" } td { (message.tags.as_deref().unwrap_or("-")) } }
                tr { th { "Born / stored (ms)" } td { (message.born_timestamp) " / " (message.store_timestamp) } }
                tr { th { "Re-consumed" } td { (message.reconsume_times) } }
                tr { th { "Body" } td { (message.body.len()) " bytes" } }
            }
        }
        h2 { "Properties" }
        table #properties {
            tbody { @for (name, value) in &message.properties { tr { th { (name) } td { (value) } } } }
        }
        h2 { "Body" }
        pre #message-body .body { (String::from_utf8_lossy(shown)) }
        @if shown.len() < message.body.len() {
            p.muted { "(first " (BODY_SHOW_BYTES) " bytes of " (message.body.len()) ")" }
        }
    }
}

// ---- DLQ ----

pub fn dlq(
    served_by: &str,
    uri: &str,
    dlq_topics: &[TopicRow],
    selected: Option<(&str, &[ReceivedMessage])>,
    problems: &[String],
) -> Markup {
    let live = html! {
        @for problem in problems { div.banner.degraded { (problem) } }
        table #dlq-topics {
            thead { tr { th { "Dead-letter topic" } th { "Broker groups" } th { "Messages" } } }
            tbody { @for row in dlq_topics {
                tr { td { a href={ "/ui/dlq?topic=" (url_encode(&row.name)) } { (row.name) } }
                     td { (row.groups.join(", ")) } td.num { (row.messages) } }
            } }
        }
        @if dlq_topics.is_empty() { p.muted { "No dead-letter topic: no group has given up on a message." } }
        @if let Some((topic, messages)) = selected {
            h2 { (topic) }
            table #dlq-messages {
                thead { tr { th { "Queue" } th { "Offset" } th { "Message id" } th { "Original topic" } th { "Body" } th { "Actions" } } }
                tbody { @for message in messages {
                    tr {
                        td { (message.queue.broker_name) ":" (message.queue.queue_id) }
                        td.num { a href={ "/ui/messages?topic=" (url_encode(&message.queue.topic)) "&broker=" (url_encode(&message.queue.broker_name)) "&queue=" (message.queue.queue_id) "&offset=" (message.queue_offset) } { (message.queue_offset) } }
                        td { (message.msg_id) }
                        td { (message.property("DLQ_ORIGIN_TOPIC").or(message.property("RETRY_TOPIC")).unwrap_or("-")) }
                        td { (preview(&message.body)) }
                        td { (action_button("resend", "Resend…", &[
                            ("topic", message.queue.topic.clone()),
                            ("broker", message.queue.broker_name.clone()),
                            ("queue", message.queue.queue_id.to_string()),
                            ("offset", message.queue_offset.to_string()),
                            ("group", topic.strip_prefix(raftmq_protocol::names::DLQ_GROUP_TOPIC_PREFIX).unwrap_or(topic).to_owned()),
                        ])) }
                    }
                } }
            }
        }
    };
    page(
        served_by,
        Nav::Dlq,
        "Dead-letter queues",
        uri,
        live,
        html! {},
    )
}

fn preview(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let mut out: String = text.chars().take(BODY_PREVIEW_CHARS).collect();
    if text.chars().count() > BODY_PREVIEW_CHARS {
        out.push('…');
    }
    out
}

// ---- actions ----

/// The confirmation step of an action: what will happen, and the same form with
/// `confirmed=yes`.
pub fn confirm(served_by: &str, question: &str, fields: &BTreeMap<String, String>) -> Markup {
    let live = html! {
        div #confirmation .banner.degraded {
            p { strong { "Confirm: " } (question) }
            form method="post" action="/ui/action" {
                @for (name, value) in fields {
                    @if name != "confirmed" { input type="hidden" name=(name) value=(value); }
                }
                input type="hidden" name="confirmed" value="yes";
                button #confirm type="submit" { "Yes, do it" } " "
                a href="javascript:history.back()" { "Cancel" }
            }
        }
    };
    page(
        served_by,
        Nav::None,
        "Confirm",
        "/ui/cluster",
        live,
        html! {},
    )
}

/// The result of an action.
pub fn outcome(served_by: &str, result: &Result<String, String>, back: &str) -> Markup {
    let live = html! {
        @match result {
            Ok(done) => div #outcome .banner.healthy data-outcome="done" { strong { "Done: " } (done) },
            Err(why) => div #outcome .banner.failed data-outcome="failed" { strong { "Failed: " } (why) },
        }
        p { a href=(back) { "Back" } }
    };
    page(served_by, Nav::None, "Action", back, live, html! {})
}

/// Percent-encodes a query value (topic names may hold `%` and `|`).
pub use raftmq_client::admin_http::form_encode as url_encode;

#[cfg(test)]
mod tests {
    use super::*;
    use raftmq_client::MessageQueue;

    const SCRIPT: &str = "<script>alert(\"x\")</script>";

    #[test]
    fn a_topic_name_with_html_is_shown_as_text() {
        let rows = vec![TopicRow {
            name: SCRIPT.to_owned(),
            groups: vec!["broker-<b>a</b>".into()],
            queues: 1,
            ..TopicRow::default()
        }];
        let html =
            topics("<i>me</i>", "/ui/topics", &rows, &["<u>problem</u>".into()]).into_string();
        assert!(!html.contains(SCRIPT), "{html}");
        assert!(
            html.contains("&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;"),
            "{html}"
        );
        assert!(html.contains("broker-&lt;b&gt;a&lt;/b&gt;"));
        assert!(html.contains("&lt;i&gt;me&lt;/i&gt;"));
        assert!(html.contains("&lt;u&gt;problem&lt;/u&gt;"));
        // The link carries it percent-encoded.
        assert!(html.contains("/ui/topic?name=%3Cscript%3E"));
    }

    #[test]
    fn a_message_body_keys_and_properties_with_html_are_shown_as_text() {
        let message = ReceivedMessage {
            queue: MessageQueue {
                topic: "T".into(),
                broker_name: "broker-a".into(),
                queue_id: 0,
            },
            topic: "T".into(),
            queue_offset: 3,
            msg_id: "ID".into(),
            offset_msg_id: "OID".into(),
            body: bytes::Bytes::from_static(b"<img src=x onerror=alert(1)> & more"),
            tags: Some("<t>".into()),
            keys: vec!["<k>".into()],
            flag: 0,
            sys_flag: 0,
            born_timestamp: 1,
            born_host: "127.0.0.1:1".parse().unwrap(),
            store_timestamp: 2,
            store_host: "127.0.0.1:2".parse().unwrap(),
            reconsume_times: 0,
            physical_offset: 0,
            properties: BTreeMap::from([("<p>".to_owned(), "</td><script>".to_owned())]),
        };
        let html = messages(
            "me",
            "/ui/messages",
            &MessageQuery::default(),
            &Lookup::Found(Box::new(message)),
        )
        .into_string();
        assert!(
            html.contains("&lt;img src=x onerror=alert(1)&gt; &amp; more"),
            "{html}"
        );
        assert!(!html.contains("<img src=x"));
        assert!(html.contains("&lt;k&gt;") && html.contains("&lt;t&gt;"));
        assert!(html.contains("&lt;/td&gt;&lt;script&gt;") && !html.contains("</td><script>"));
    }

    #[test]
    fn every_page_refreshes_its_live_part_and_loads_htmx() {
        let html = groups("me", "/ui/groups?x=1", &[], &[]).into_string();
        assert!(
            html.contains(r#"<script src="/ui/assets/htmx.min.js"></script>"#),
            "{html}"
        );
        assert!(html.contains(r#"hx-get="/ui/groups?x=1""#), "{html}");
        assert!(html.contains(r#"hx-trigger="every 5s""#), "{html}");
        assert!(html.contains(r##"hx-select="#live""##));
    }

    #[test]
    fn a_confirmation_repeats_the_fields_with_confirmed() {
        let fields = BTreeMap::from([
            ("action".to_owned(), "delete_topic".to_owned()),
            ("topic".to_owned(), "T\"><b>".to_owned()),
        ]);
        let html = confirm("me", "Delete topic T?", &fields).into_string();
        assert!(html.contains(r#"name="confirmed" value="yes""#), "{html}");
        assert!(
            html.contains(r#"name="topic" value="T&quot;&gt;&lt;b&gt;""#),
            "{html}"
        );
        assert!(html.contains(r#"method="post""#));
    }

    #[test]
    fn sizes_and_urls() {
        assert_eq!(bytes_text(512), "512 B");
        assert_eq!(bytes_text(1536), "1.5 KiB");
        assert_eq!(url_encode("%DLQ%g|x y"), "%25DLQ%25g%7Cx%20y");
    }
}
