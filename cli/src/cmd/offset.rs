//! `mq offset reset`: move a consumer group's committed offsets on a topic, by offset or by
//! time. Each broker group's leader does it through Raft (admin `POST /offsets/reset`, the
//! state machine's `CommitOffsets { reset: true }`, the one command that may move an offset
//! backwards). The leader refuses while the group has live consumers connected, since they
//! would commit their own position over the reset; `--force` overrides.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context as _, bail};
use clap::Subcommand;
use raftmq_protocol::admin::ResetOffsets;
use serde::Serialize;

use crate::context::Ctx;
use crate::output::{Table, opt, print_json};

/// Deadline of one reset (it waits for a Raft commit).
pub const RESET_TIMEOUT: Duration = Duration::from_secs(15);

#[derive(Subcommand, Debug)]
pub enum OffsetCommand {
    /// Reset a group's committed offsets on a topic (every queue, or one).
    Reset {
        #[arg(short = 'g', long)]
        group: String,
        #[arg(short = 't', long)]
        topic: String,
        /// The offset to move to: a number (clamped into each queue's [min, max]), `first`
        /// or `last`.
        #[arg(
            short = 'o',
            long,
            conflicts_with = "timestamp",
            required_unless_present = "timestamp"
        )]
        offset: Option<String>,
        /// Move to the first message stored at or after this time (ms since the epoch).
        #[arg(long)]
        timestamp: Option<i64>,
        /// Only this queue.
        #[arg(short = 'q', long)]
        queue: Option<u32>,
        /// Only this broker group.
        #[arg(short = 'b', long)]
        broker_name: Option<String>,
        /// Reset even while the group has live consumers (they may commit over it).
        #[arg(long)]
        force: bool,
    },
}

#[derive(Serialize, Debug)]
struct QueueJson {
    broker_name: String,
    queue_id: u32,
    previous: Option<u64>,
    offset: u64,
}

#[derive(Serialize, Debug)]
struct ResetJson {
    group: String,
    topic: String,
    queues: Vec<QueueJson>,
}

fn parse_offset(text: &str) -> anyhow::Result<u64> {
    match text {
        "first" => Ok(0),
        "last" => Ok(u64::MAX),
        number => number.parse().with_context(|| {
            format!("--offset {number:?} is not first, last or a non-negative number")
        }),
    }
}

pub async fn run(ctx: &Ctx, command: OffsetCommand) -> anyhow::Result<ExitCode> {
    let OffsetCommand::Reset {
        group,
        topic,
        offset,
        timestamp,
        queue,
        broker_name,
        force,
    } = command;
    raftmq_client::message::validate_topic(&topic)?;
    if group.is_empty() {
        bail!("--group must not be empty");
    }
    let offset = offset.as_deref().map(parse_offset).transpose()?;
    if timestamp.is_some_and(|timestamp| timestamp < 0) {
        bail!("--timestamp must not be negative");
    }
    let route = ctx
        .namesrv
        .topic_route(&topic)
        .await?
        .ok_or_else(|| anyhow::anyhow!("topic {topic} does not exist"))?;
    let mut names: Vec<String> = route
        .broker_datas
        .iter()
        .map(|data| data.broker_name.clone())
        .filter(|name| broker_name.as_deref().is_none_or(|only| only == name))
        .collect();
    names.sort();
    names.dedup();
    if names.is_empty() {
        bail!("topic {topic} is on no broker group named {broker_name:?}");
    }
    let mut queues = Vec::new();
    for name in &names {
        let view = ctx.group(name).await?;
        let leader = view.require_leader()?;
        let request = ResetOffsets {
            group: group.clone(),
            topic: topic.clone(),
            queue,
            offset,
            timestamp_ms: timestamp,
            force,
        };
        let answer = ctx
            .admin
            .with_timeout(RESET_TIMEOUT)
            .reset_offsets(&leader.admin_addr, &request)
            .await
            .with_context(|| format!("resetting on {name}"))?;
        queues.extend(answer.queues.into_iter().map(|reset| QueueJson {
            broker_name: name.clone(),
            queue_id: reset.queue,
            previous: reset.previous,
            offset: reset.offset,
        }));
    }
    if ctx.json {
        print_json(&ResetJson {
            group,
            topic,
            queues,
        })?;
        return Ok(ExitCode::SUCCESS);
    }
    outln!("reset the offsets of group {group} on {topic}");
    let mut table = Table::new(&["BROKER", "QUEUE", "PREVIOUS", "OFFSET"]);
    for queue in queues {
        table.row(vec![
            queue.broker_name,
            queue.queue_id.to_string(),
            opt(queue.previous),
            queue.offset.to_string(),
        ]);
    }
    table.print();
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_are_numbers_first_or_last() {
        assert_eq!(parse_offset("first").unwrap(), 0);
        assert_eq!(parse_offset("last").unwrap(), u64::MAX);
        assert_eq!(parse_offset("17").unwrap(), 17);
        assert!(parse_offset("-1").is_err());
        assert!(parse_offset("soon").is_err());
    }
}
