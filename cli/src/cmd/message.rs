//! `mq message get`: the message at one queue offset, pulled from the group's leader without
//! committing anything.

use std::process::ExitCode;

use anyhow::{anyhow, bail};
use clap::Subcommand;
use raftmq_client::route::ReadFrom;
use raftmq_client::{MessageQueue, PullRequest, PullStatus, TopicRoute};

use super::MessageJson;
use crate::context::Ctx;
use crate::output::{Table, print_json, printable_body};

/// The group name pulls of `mq message get` carry (nothing is committed under it).
pub const VIEW_GROUP: &str = "mq_cli_view";
/// Body characters shown in the table (the JSON has all of it).
pub const BODY_SHOW_CHARS: usize = 4096;

#[derive(Subcommand, Debug)]
pub enum MessageCommand {
    /// The message at a queue offset.
    Get {
        #[arg(short = 't', long)]
        topic: String,
        #[arg(short = 'q', long)]
        queue: i32,
        #[arg(short = 'o', long)]
        offset: i64,
        /// The broker group (needed when the topic is on several).
        #[arg(short = 'b', long)]
        broker_name: Option<String>,
    },
}

pub async fn run(ctx: &Ctx, command: MessageCommand) -> anyhow::Result<ExitCode> {
    let MessageCommand::Get {
        topic,
        queue,
        offset,
        broker_name,
    } = command;
    raftmq_client::message::validate_topic(&topic)?;
    if queue < 0 || offset < 0 {
        bail!("--queue and --offset must not be negative");
    }
    let data = ctx
        .namesrv
        .topic_route(&topic)
        .await?
        .ok_or_else(|| anyhow!("topic {topic} does not exist"))?;
    let route = TopicRoute::new(&topic, data);
    let broker_name = match broker_name {
        Some(name) => name,
        None => {
            let names: Vec<&String> = route.groups.keys().collect();
            match names.as_slice() {
                [only] => (*only).clone(),
                _ => bail!(
                    "topic {topic} is on {} broker groups; pick one with -b",
                    names.len()
                ),
            }
        }
    };
    let queue = MessageQueue {
        topic: topic.clone(),
        broker_name: broker_name.clone(),
        queue_id: queue,
    };
    if !route.read_queues.contains(&queue) {
        bail!(
            "topic {topic} has no readable queue {broker_name}:{}",
            queue.queue_id
        );
    }
    let addr = route
        .read_addr(&queue, ReadFrom::Leader)
        .ok_or_else(|| anyhow!("broker group {broker_name} has no member listed"))?;
    let pulled = ctx
        .broker
        .pull(
            addr,
            &PullRequest::new(VIEW_GROUP, queue.clone(), offset, 1),
        )
        .await?;
    let message = match pulled.status {
        PullStatus::Found => pulled
            .messages
            .into_iter()
            .find(|message| message.queue_offset == offset),
        _ => None,
    }
    .ok_or_else(|| {
        anyhow!(
            "no message at {broker_name}:{} offset {offset} (the queue holds [{}, {}))",
            queue.queue_id,
            pulled.min_offset,
            pulled.max_offset
        )
    })?;
    let json = MessageJson::from(&message);
    if ctx.json {
        print_json(&json)?;
        return Ok(ExitCode::SUCCESS);
    }
    let mut table = Table::new(&["FIELD", "VALUE"]);
    let mut field = |name: &str, value: String| table.row(vec![name.to_owned(), value]);
    field("topic", json.topic.clone());
    field("queue", format!("{}:{}", json.broker_name, json.queue_id));
    field("offset", json.queue_offset.to_string());
    field("msg_id", json.msg_id.clone());
    field("offset_msg_id", json.offset_msg_id.clone());
    field("keys", json.keys.join(","));
    field("tags", json.tags.clone().unwrap_or_default());
    field("born_timestamp_ms", json.born_timestamp_ms.to_string());
    field("store_timestamp_ms", json.store_timestamp_ms.to_string());
    field("body_len", json.body_len.to_string());
    field("body", printable_body(&message.body, BODY_SHOW_CHARS));
    table.print();
    Ok(ExitCode::SUCCESS)
}
