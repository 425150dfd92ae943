//! `mq message get`: the message at one queue offset, pulled from the group's leader without
//! committing anything. `mq message query`: messages by key (or by the id clients show, their
//! `UNIQ_KEY`) within a time range, from every group's key index (QUERY_MESSAGE).

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
    /// Messages of a topic by key (one of their KEYS), or with --unique by the message id a
    /// client shows (UNIQ_KEY), stored within a time range.
    Query {
        #[arg(short = 't', long)]
        topic: String,
        #[arg(short = 'k', long)]
        key: String,
        /// The key is a message id (UNIQ_KEY), not one of the KEYS.
        #[arg(long)]
        unique: bool,
        /// Stored at or after this time, ms since the epoch [default: the beginning].
        #[arg(long, default_value_t = 0)]
        begin_ms: i64,
        /// Stored at or before this time, ms since the epoch [default: now and later].
        #[arg(long, default_value_t = i64::MAX)]
        end_ms: i64,
        /// Most messages from each broker group.
        #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(i32).range(1..=64))]
        max: i32,
    },
}

pub async fn run(ctx: &Ctx, command: MessageCommand) -> anyhow::Result<ExitCode> {
    let (topic, queue, offset, broker_name) = match command {
        MessageCommand::Get {
            topic,
            queue,
            offset,
            broker_name,
        } => (topic, queue, offset, broker_name),
        MessageCommand::Query {
            topic,
            key,
            unique,
            begin_ms,
            end_ms,
            max,
        } => return query(ctx, &topic, &key, unique, (begin_ms, end_ms), max).await,
    };
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

/// `mq message query`: one line per message found (`--json`: a list of messages).
async fn query(
    ctx: &Ctx,
    topic: &str,
    key: &str,
    unique: bool,
    range_ms: (i64, i64),
    max: i32,
) -> anyhow::Result<ExitCode> {
    raftmq_client::message::validate_topic(topic)?;
    let admin = ctx.signed_admin()?;
    let found = admin
        .query_messages(topic, key, unique, range_ms, max)
        .await;
    admin.shutdown().await;
    let found = found?;
    if ctx.json {
        let messages: Vec<MessageJson> = found.iter().map(MessageJson::from).collect();
        print_json(&messages)?;
        return Ok(ExitCode::SUCCESS);
    }
    if found.is_empty() {
        bail!(
            "no message of topic {topic} with {} {key:?} in that time range",
            if unique { "id" } else { "key" }
        );
    }
    let mut table = Table::new(&["MSG_ID", "QUEUE", "OFFSET", "STORED_MS", "KEYS", "BODY"]);
    for message in &found {
        table.row(vec![
            message.msg_id.clone(),
            format!("{}:{}", message.queue.broker_name, message.queue.queue_id),
            message.queue_offset.to_string(),
            message.store_timestamp.to_string(),
            message.keys.join(","),
            printable_body(&message.body, 60),
        ]);
    }
    table.print();
    Ok(ExitCode::SUCCESS)
}
