//! `mq group list|describe`: consumer groups as each broker group's leader sees them (its
//! admin `GET /groups`: committed offsets from the replicated state, max offsets, lag, and the
//! consumers connected to it).

use std::collections::{BTreeMap, BTreeSet};
use std::process::ExitCode;

use anyhow::bail;
use clap::Subcommand;
use raftmq_protocol::admin::GroupStatus;
use serde::Serialize;

use crate::context::Ctx;
use crate::output::{Table, print_json};

#[derive(Subcommand, Debug)]
pub enum GroupCommand {
    /// Every consumer group with committed offsets or live consumers.
    List,
    /// A group's committed offset, max offset and lag on every queue.
    Describe {
        #[arg(short = 'g', long)]
        group: String,
    },
}

#[derive(Serialize, Debug, Default)]
struct GroupSummaryJson {
    group: String,
    broker_names: Vec<String>,
    clients: Vec<String>,
    topics: Vec<String>,
    total_lag: u64,
}

#[derive(Serialize, Debug)]
struct ListJson {
    groups: Vec<GroupSummaryJson>,
}

#[derive(Serialize, Debug)]
struct QueueJson {
    broker_name: String,
    topic: String,
    queue_id: u32,
    committed: u64,
    max_offset: u64,
    lag: u64,
}

#[derive(Serialize, Debug)]
struct DescribeJson {
    group: String,
    clients: Vec<String>,
    total_lag: u64,
    queues: Vec<QueueJson>,
}

pub async fn run(ctx: &Ctx, command: GroupCommand) -> anyhow::Result<ExitCode> {
    let per_broker = fetch(ctx).await?;
    match command {
        GroupCommand::List => list(ctx, per_broker),
        GroupCommand::Describe { group } => describe(ctx, per_broker, &group),
    }
}

/// `GET /groups` on every broker group's leader, by broker name.
async fn fetch(ctx: &Ctx) -> anyhow::Result<BTreeMap<String, Vec<GroupStatus>>> {
    let mut per_broker = BTreeMap::new();
    for group in ctx.discover(None).await? {
        let leader = group.require_leader()?;
        let groups = ctx.admin.groups(&leader.admin_addr).await?;
        per_broker.insert(group.broker_name.clone(), groups);
    }
    Ok(per_broker)
}

fn list(ctx: &Ctx, per_broker: BTreeMap<String, Vec<GroupStatus>>) -> anyhow::Result<ExitCode> {
    let mut merged: BTreeMap<String, GroupSummaryJson> = BTreeMap::new();
    let mut clients: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut topics: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (broker_name, groups) in per_broker {
        for group in groups {
            let entry = merged
                .entry(group.group.clone())
                .or_insert_with(|| GroupSummaryJson {
                    group: group.group.clone(),
                    ..GroupSummaryJson::default()
                });
            entry.broker_names.push(broker_name.clone());
            entry.total_lag += group.queues.iter().map(|queue| queue.lag).sum::<u64>();
            clients
                .entry(group.group.clone())
                .or_default()
                .extend(group.clients);
            topics
                .entry(group.group.clone())
                .or_default()
                .extend(group.queues.into_iter().map(|queue| queue.topic));
        }
    }
    for (name, entry) in &mut merged {
        entry.clients = clients
            .remove(name)
            .unwrap_or_default()
            .into_iter()
            .collect();
        entry.topics = topics
            .remove(name)
            .unwrap_or_default()
            .into_iter()
            .collect();
    }
    let groups: Vec<GroupSummaryJson> = merged.into_values().collect();
    if ctx.json {
        print_json(&ListJson { groups })?;
        return Ok(ExitCode::SUCCESS);
    }
    let mut table = Table::new(&["GROUP", "BROKERS", "CLIENTS", "TOPICS", "TOTAL_LAG"]);
    for group in groups {
        table.row(vec![
            group.group,
            group.broker_names.join(","),
            group.clients.len().to_string(),
            group.topics.join(","),
            group.total_lag.to_string(),
        ]);
    }
    table.print();
    Ok(ExitCode::SUCCESS)
}

fn describe(
    ctx: &Ctx,
    per_broker: BTreeMap<String, Vec<GroupStatus>>,
    name: &str,
) -> anyhow::Result<ExitCode> {
    let mut found = false;
    let mut clients = BTreeSet::new();
    let mut queues = Vec::new();
    for (broker_name, groups) in per_broker {
        for group in groups.into_iter().filter(|group| group.group == name) {
            found = true;
            clients.extend(group.clients);
            queues.extend(group.queues.into_iter().map(|queue| QueueJson {
                broker_name: broker_name.clone(),
                topic: queue.topic,
                queue_id: queue.queue,
                committed: queue.committed,
                max_offset: queue.max_offset,
                lag: queue.lag,
            }));
        }
    }
    if !found {
        bail!("no consumer group {name:?} (no committed offsets and no live consumers)");
    }
    let described = DescribeJson {
        group: name.to_owned(),
        clients: clients.into_iter().collect(),
        total_lag: queues.iter().map(|queue| queue.lag).sum(),
        queues,
    };
    if ctx.json {
        print_json(&described)?;
        return Ok(ExitCode::SUCCESS);
    }
    outln!(
        "group {}: {} live consumer(s), total lag {}",
        described.group,
        described.clients.len(),
        described.total_lag
    );
    let mut table = Table::new(&["BROKER", "TOPIC", "QUEUE", "COMMITTED", "MAX_OFFSET", "LAG"]);
    for queue in &described.queues {
        table.row(vec![
            queue.broker_name.clone(),
            queue.topic.clone(),
            queue.queue_id.to_string(),
            queue.committed.to_string(),
            queue.max_offset.to_string(),
            queue.lag.to_string(),
        ]);
    }
    table.print();
    Ok(ExitCode::SUCCESS)
}
