//! `mq topic create|list|describe|route|delete`. `route --explain` says why a topic has no
//! usable route (`raftmq_client::route_explain`). Topic changes go to each broker group's leader
//! (they are replicated through Raft there); the NameServer learns them from the brokers'
//! registrations, which a topic change triggers at once.

use std::process::ExitCode;

use anyhow::{Context as _, anyhow, bail};
use clap::Subcommand;
use raftmq_client::route::ReadFrom;
use raftmq_client::route_explain::{RouteVerdict, explain_route};
use raftmq_client::{MessageQueue, TopicRoute};
use raftmq_protocol::route::{TopicConfig, perm};
use serde::Serialize;

use crate::context::Ctx;
use crate::output::{Table, print_json};

/// Most queues a topic may have per broker group (RocketMQ's default cap is 1024).
pub const MAX_QUEUES: u32 = 1024;

#[derive(Subcommand, Debug)]
pub enum TopicCommand {
    /// Create a topic (or change its queue counts) on every broker group, or on one.
    Create {
        #[arg(short = 't', long)]
        topic: String,
        /// Read and write queues per broker group.
        #[arg(short = 'q', long, default_value_t = 8)]
        queues: u32,
        /// Only this broker group.
        #[arg(short = 'b', long)]
        broker_name: Option<String>,
        /// Permissions: 6 read-write, 4 read-only, 2 write-only.
        #[arg(long, default_value_t = 6)]
        perm: u32,
    },
    /// Every topic the NameServer knows.
    List,
    /// A topic's route, and each queue's min and max offset.
    Describe {
        #[arg(short = 't', long)]
        topic: String,
    },
    /// A topic's route as the NameServer gives it to clients; with --explain, why it is
    /// usable or not (NameServer unreachable, topic unknown, no leader, read-only).
    Route {
        #[arg(short = 't', long)]
        topic: String,
        /// Say why the route is usable or not; exit 1 when it is not.
        #[arg(long)]
        explain: bool,
    },
    /// Delete a topic from every broker group that has it, then from the NameServers.
    Delete {
        #[arg(short = 't', long)]
        topic: String,
    },
}

#[derive(Serialize, Debug)]
struct CreatedJson {
    topic: String,
    queues: u32,
    perm: u32,
    broker_names: Vec<String>,
}

#[derive(Serialize, Debug)]
struct ListJson {
    topics: Vec<String>,
}

#[derive(Serialize, Debug)]
struct QueueJson {
    queue_id: i32,
    min_offset: i64,
    max_offset: i64,
    /// Bytes of the messages still held (`null` if the group's leader did not say).
    bytes: Option<u64>,
}

#[derive(Serialize, Debug)]
struct GroupJson {
    broker_name: String,
    leader_addr: Option<String>,
    read_queue_nums: u32,
    write_queue_nums: u32,
    perm: u32,
    queues: Vec<QueueJson>,
}

#[derive(Serialize, Debug)]
struct DescribeJson {
    topic: String,
    groups: Vec<GroupJson>,
}

#[derive(Serialize, Debug)]
struct DeletedJson {
    topic: String,
    broker_names: Vec<String>,
}

pub async fn run(ctx: &Ctx, command: TopicCommand) -> anyhow::Result<ExitCode> {
    match command {
        TopicCommand::Create {
            topic,
            queues,
            broker_name,
            perm,
        } => create(ctx, &topic, queues, broker_name.as_deref(), perm).await,
        TopicCommand::List => list(ctx).await,
        TopicCommand::Describe { topic } => describe(ctx, &topic).await,
        TopicCommand::Delete { topic } => delete(ctx, &topic).await,
        TopicCommand::Route { topic, explain } => route(ctx, &topic, explain).await,
    }
}

async fn create(
    ctx: &Ctx,
    topic: &str,
    queues: u32,
    broker_name: Option<&str>,
    permissions: u32,
) -> anyhow::Result<ExitCode> {
    raftmq_client::message::validate_topic(topic)?;
    if !(1..=MAX_QUEUES).contains(&queues) {
        bail!("--queues must be in 1..={MAX_QUEUES}");
    }
    if ![perm::READ_WRITE, perm::READ, perm::WRITE].contains(&permissions) {
        bail!("--perm must be 6 (read-write), 4 (read-only) or 2 (write-only)");
    }
    let leaders = ctx.leaders().await?;
    let targets: Vec<(&String, &String)> = leaders
        .iter()
        .filter(|(name, _)| broker_name.is_none_or(|only| only == name.as_str()))
        .collect();
    if targets.is_empty() {
        bail!(
            "no broker group {}has a leader registered in the NameServer",
            broker_name.map_or_else(String::new, |name| format!("named {name:?} "))
        );
    }
    let mut config = TopicConfig::new(topic, queues);
    config.perm = permissions;
    let mut created = Vec::new();
    for (name, leader) in targets {
        ctx.broker
            .create_topic(leader, &config)
            .await
            .with_context(|| format!("creating {topic} on {name} (leader {leader})"))?;
        created.push(name.clone());
    }
    if ctx.json {
        print_json(&CreatedJson {
            topic: topic.to_owned(),
            queues,
            perm: permissions,
            broker_names: created,
        })?;
    } else {
        outln!(
            "created topic {topic} with {queues} queue(s) on {}",
            created.join(", ")
        );
    }
    Ok(ExitCode::SUCCESS)
}

async fn list(ctx: &Ctx) -> anyhow::Result<ExitCode> {
    let topics: Vec<String> = ctx
        .namesrv
        .topic_list()
        .await
        .context("asking the NameServer for topics")?
        .topic_list
        .into_iter()
        .collect();
    if ctx.json {
        print_json(&ListJson { topics })?;
    } else {
        for topic in topics {
            outln!("{topic}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn describe(ctx: &Ctx, topic: &str) -> anyhow::Result<ExitCode> {
    raftmq_client::message::validate_topic(topic)?;
    let data = ctx
        .namesrv
        .topic_route(topic)
        .await?
        .ok_or_else(|| anyhow!("topic {topic} does not exist"))?;
    let route = TopicRoute::new(topic, data);
    let mut groups = Vec::new();
    for queue_data in &route.data.queue_datas {
        let name = &queue_data.broker_name;
        let leader = route.leader_addr(name).map(str::to_owned);
        // Bytes per queue come from the leader's admin view of its topics.
        let queue_bytes = match ctx.group(name).await.ok().and_then(|g| g.leader().cloned()) {
            Some(leader) => ctx
                .admin
                .topics(&leader.admin_addr)
                .await
                .ok()
                .and_then(|topics| topics.into_iter().find(|t| t.name == topic))
                .map(|t| t.queue_bytes)
                .unwrap_or_default(),
            None => Default::default(),
        };
        let mut queues = Vec::new();
        for queue_id in 0..queue_data.read_queue_nums {
            let queue = MessageQueue {
                topic: topic.to_owned(),
                broker_name: name.clone(),
                queue_id: i32::try_from(queue_id).unwrap_or(i32::MAX),
            };
            let addr = route
                .read_addr(&queue, ReadFrom::Leader)
                .ok_or_else(|| anyhow!("broker group {name} has no member listed"))?;
            let min_offset = ctx.broker.min_offset(addr, &queue).await?;
            let max_offset = ctx.broker.max_offset(addr, &queue).await?;
            queues.push(QueueJson {
                queue_id: queue.queue_id,
                min_offset,
                max_offset,
                bytes: queue_bytes.get(&queue_id).copied(),
            });
        }
        groups.push(GroupJson {
            broker_name: name.clone(),
            leader_addr: leader,
            read_queue_nums: queue_data.read_queue_nums,
            write_queue_nums: queue_data.write_queue_nums,
            perm: queue_data.perm,
            queues,
        });
    }
    if ctx.json {
        print_json(&DescribeJson {
            topic: topic.to_owned(),
            groups,
        })?;
        return Ok(ExitCode::SUCCESS);
    }
    let mut table = Table::new(&[
        "BROKER",
        "LEADER",
        "QUEUE",
        "MIN_OFFSET",
        "MAX_OFFSET",
        "BYTES",
        "PERM",
    ]);
    for group in &groups {
        for queue in &group.queues {
            table.row(vec![
                group.broker_name.clone(),
                group.leader_addr.clone().unwrap_or_else(|| "-".to_owned()),
                queue.queue_id.to_string(),
                queue.min_offset.to_string(),
                queue.max_offset.to_string(),
                queue
                    .bytes
                    .map_or_else(|| "-".to_owned(), |b| b.to_string()),
                group.perm.to_string(),
            ]);
        }
    }
    outln!("topic {topic}");
    table.print();
    Ok(ExitCode::SUCCESS)
}

async fn route(ctx: &Ctx, topic: &str, explain: bool) -> anyhow::Result<ExitCode> {
    if !explain {
        raftmq_client::message::validate_topic(topic)?;
        let data = ctx.namesrv.topic_route(topic).await?.ok_or_else(|| {
            anyhow!("no route for topic {topic} (ask why: mq topic route -t {topic} --explain)")
        })?;
        if ctx.json {
            print_json(&data)?;
            return Ok(ExitCode::SUCCESS);
        }
        print_route(topic, &data);
        return Ok(ExitCode::SUCCESS);
    }
    let explanation = explain_route(&ctx.viewer()?, topic).await;
    let routable = explanation.verdict == RouteVerdict::Routable;
    if ctx.json {
        print_json(&explanation)?;
    } else {
        outln!(
            "topic {topic}: {}",
            serde_json::to_value(explanation.verdict)?
                .as_str()
                .unwrap_or("unknown")
                .replace('_', " ")
        );
        for reason in &explanation.reasons {
            outln!("  - {reason}");
        }
        if let Some(data) = &explanation.route {
            print_route(topic, data);
        }
    }
    Ok(if routable {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn print_route(topic: &str, data: &raftmq_protocol::route::TopicRouteData) {
    outln!("route of {topic}:");
    let mut table = Table::new(&["BROKER", "READ_QUEUES", "WRITE_QUEUES", "PERM", "MEMBERS"]);
    for queue in &data.queue_datas {
        let members = data
            .broker_datas
            .iter()
            .find(|broker| broker.broker_name == queue.broker_name)
            .map(|broker| {
                broker
                    .broker_addrs
                    .iter()
                    .map(|(id, addr)| format!("{id}={addr}"))
                    .collect::<Vec<_>>()
                    .join(",")
            })
            .unwrap_or_else(|| "-".to_owned());
        table.row(vec![
            queue.broker_name.clone(),
            queue.read_queue_nums.to_string(),
            queue.write_queue_nums.to_string(),
            queue.perm.to_string(),
            members,
        ]);
    }
    table.print();
}

async fn delete(ctx: &Ctx, topic: &str) -> anyhow::Result<ExitCode> {
    raftmq_client::message::validate_topic(topic)?;
    let data = ctx
        .namesrv
        .topic_route(topic)
        .await?
        .ok_or_else(|| anyhow!("topic {topic} does not exist"))?;
    let route = TopicRoute::new(topic, data);
    let mut deleted = Vec::new();
    for (name, group) in &route.groups {
        let leader = group.leader.as_deref().ok_or_else(|| {
            anyhow!("broker group {name} has no leader registered; cannot delete {topic} there")
        })?;
        ctx.broker
            .delete_topic(leader, topic)
            .await
            .with_context(|| format!("deleting {topic} on {name} (leader {leader})"))?;
        deleted.push(name.clone());
    }
    ctx.namesrv
        .delete_topic(topic, None)
        .await
        .with_context(|| format!("deleting {topic} from the NameServers"))?;
    if ctx.json {
        print_json(&DeletedJson {
            topic: topic.to_owned(),
            broker_names: deleted,
        })?;
    } else {
        outln!("deleted topic {topic} from {}", deleted.join(", "));
    }
    Ok(ExitCode::SUCCESS)
}
