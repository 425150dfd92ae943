//! `mq consume`: read a topic from every readable queue of every broker group, print each
//! message, and on exit (count reached, idle timeout, Ctrl-C or SIGTERM) commit, for each queue
//! it printed from, the offset after the last message printed.
//!
//! It is a single-process pull consumer (like RocketMQ's `mqadmin consumeMessage`), not a
//! member of a rebalancing group: it reads every queue itself, one long-polling pull task per
//! queue feeding one printer through a bounded channel. A commit is UPDATE_CONSUMER_OFFSET to
//! the group's leader, which never moves an offset backwards; `mq offset reset` does that.

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow, bail};
use clap::Args;
use raftmq_client::consumer::LocalOffsets;
use raftmq_client::route::ReadFrom;
use raftmq_client::{
    BrokerClient, MessageQueue, NameServerClient, PullRequest, PullStatus, ReceivedMessage,
    TopicRoute,
};
use serde::Serialize;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::MessageJson;
use crate::context::Ctx;
use crate::output::{print_json, printable_body, progress};

/// How long one pull may wait on the broker for messages.
pub const PULL_SUSPEND: Duration = Duration::from_secs(5);
/// Messages asked for per pull.
pub const PULL_BATCH: i32 = 32;
/// Batches waiting for the printer.
pub const BATCH_CHANNEL_CAPACITY: usize = 64;
/// Pause after a failed pull.
pub const PULL_ERROR_BACKOFF: Duration = Duration::from_millis(500);
/// Consecutive failed pulls of one queue before `mq consume` gives up.
pub const MAX_CONSECUTIVE_PULL_ERRORS: u32 = 20;
/// Longest wait for the pull tasks to stop.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(5);
/// Messages kept for `--json`; the count stays exact beyond it.
pub const JSON_LIST_LIMIT: usize = 100_000;
/// Body characters printed per message in tables.
pub const BODY_PRINT_CHARS: usize = 200;
/// With `--count` above this (and `--json` or `--quiet`), a progress bar shows on stderr.
pub const PROGRESS_THRESHOLD: u64 = 20;

/// Where each queue starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum From {
    /// The group's committed offset; the queue's first message where it has none.
    Committed,
    First,
    /// After the last message: only new messages.
    Last,
    Offset(i64),
    /// The first message stored at or after this time (ms since the epoch).
    Timestamp(i64),
}

impl std::str::FromStr for From {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let number = |value: &str, what: &str| {
            value
                .parse::<i64>()
                .ok()
                .filter(|n| *n >= 0)
                .ok_or_else(|| format!("{what} {value:?} is not a non-negative integer"))
        };
        match text {
            "committed" => Ok(From::Committed),
            "first" => Ok(From::First),
            "last" => Ok(From::Last),
            _ => match text.split_once(':') {
                Some(("offset", value)) => Ok(From::Offset(number(value, "offset")?)),
                Some(("timestamp", value)) => Ok(From::Timestamp(number(value, "timestamp")?)),
                _ => Err(format!(
                    "{text:?}: expected committed, first, last, offset:N or timestamp:MS"
                )),
            },
        }
    }
}

#[derive(Args, Debug)]
pub struct ConsumeArgs {
    #[arg(short = 't', long)]
    topic: String,
    /// The consumer group whose offsets are read (`--from committed`) and committed.
    #[arg(short = 'g', long, default_value = "mq_cli_consumer")]
    group: String,
    /// Where to start: committed, first, last, offset:N or timestamp:MS.
    #[arg(long, default_value = "committed")]
    from: From,
    /// Stop after this many messages.
    #[arg(short = 'c', long)]
    count: Option<u64>,
    /// Stop when no message arrived for this long (with `--count`: fail if it was not reached).
    #[arg(long)]
    idle_timeout_ms: Option<u64>,
    /// Tag expression (`*`, `TagA || TagB`).
    #[arg(long, default_value = "*", conflicts_with = "sql")]
    tag: String,
    /// An SQL92 filter on message properties, evaluated by the broker (`level > 3 AND region
    /// IN ('eu', 'us')`); a bad expression is refused with the reason.
    #[arg(long)]
    sql: Option<String>,
    /// Broadcasting: offsets are this consumer's own, read from and written to
    /// `--offsets-file` instead of the group's on the brokers (every consumer of the group
    /// reads every message).
    #[arg(long)]
    broadcast: bool,
    /// Where `--broadcast` keeps its offsets [default: ~/.rocketmq_offsets/<group>/offsets.json].
    #[arg(long, requires = "broadcast")]
    offsets_file: Option<std::path::PathBuf>,
    /// Only this broker group's queues.
    #[arg(short = 'b', long)]
    broker_name: Option<String>,
    /// Do not commit offsets on exit.
    #[arg(long)]
    no_commit: bool,
    /// Count messages without printing them.
    #[arg(short = 'q', long)]
    quiet: bool,
}

#[derive(Serialize, Debug)]
struct CommittedJson {
    broker_name: String,
    queue_id: i32,
    offset: i64,
}

/// `mq consume --json`.
#[derive(Serialize, Debug)]
struct ConsumeJson {
    topic: String,
    group: String,
    consumed: u64,
    messages: Vec<MessageJson>,
    messages_truncated: bool,
    committed: Vec<CommittedJson>,
}

/// What a pull task hands the printer.
enum Event {
    Batch(Vec<ReceivedMessage>),
    Failed(anyhow::Error),
}

/// Why the printer stopped.
#[derive(Debug, PartialEq, Eq)]
enum Stop {
    Count,
    Idle,
    Signal,
}

pub async fn run(ctx: &Ctx, args: ConsumeArgs) -> anyhow::Result<ExitCode> {
    raftmq_client::message::validate_topic(&args.topic)?;
    if args.group.is_empty() {
        bail!("--group must not be empty");
    }
    if args.count == Some(0) {
        bail!("--count must be at least 1");
    }
    let data = ctx
        .namesrv
        .topic_route(&args.topic)
        .await?
        .ok_or_else(|| anyhow!("topic {} does not exist", args.topic))?;
    let route = TopicRoute::new(&args.topic, data);
    let queues: Vec<MessageQueue> = route
        .read_queues
        .iter()
        .filter(|queue| {
            args.broker_name
                .as_deref()
                .is_none_or(|name| name == queue.broker_name)
        })
        .cloned()
        .collect();
    if queues.is_empty() {
        bail!("topic {} has no readable queue here", args.topic);
    }
    let local = match args.broadcast {
        true => Some(LocalOffsets::open(Some(offsets_file(&args)?))?),
        false => None,
    };
    let mut starts = Vec::with_capacity(queues.len());
    for queue in &queues {
        let addr = route
            .read_addr(queue, ReadFrom::Leader)
            .ok_or_else(|| anyhow!("broker group {} has no member listed", queue.broker_name))?;
        let own = local
            .as_ref()
            .filter(|_| args.from == From::Committed)
            .and_then(|local| local.get(queue));
        starts.push(match own {
            Some(offset) => offset,
            None if local.is_some() && args.from == From::Committed => {
                ctx.broker.min_offset(addr, queue).await?
            }
            None => start_offset(&ctx.broker, addr, &args.group, queue, args.from).await?,
        });
    }

    let stop = CancellationToken::new();
    let tasks = TaskTracker::new();
    let (events, mut received) = mpsc::channel(BATCH_CHANNEL_CAPACITY);
    for (queue, offset) in queues.iter().zip(&starts) {
        tasks.spawn(pull_queue(
            ctx.broker.clone(),
            ctx.namesrv.clone(),
            PullRequest {
                sql92: args.sql.is_some(),
                subscription: args.sql.clone().unwrap_or_else(|| args.tag.clone()),
                suspend: Some(PULL_SUSPEND),
                ..PullRequest::new(&args.group, queue.clone(), *offset, PULL_BATCH)
            },
            events.clone(),
            stop.clone(),
        ));
    }
    drop(events);
    tasks.close();

    let bar = args
        .count
        .filter(|count| *count > PROGRESS_THRESHOLD && (ctx.json || args.quiet))
        .map(|count| progress(count, "consuming"));
    let mut printed: BTreeMap<MessageQueue, i64> = BTreeMap::new();
    let mut listed = Vec::new();
    let mut truncated = false;
    let mut consumed: u64 = 0;
    let idle = args.idle_timeout_ms.map(Duration::from_millis);
    let mut last_message = Instant::now();
    let shutdown = Arc::new(shutdown_signal());
    let outcome: anyhow::Result<Stop> = async {
        loop {
            let idle_left = idle.map(|idle| idle.saturating_sub(last_message.elapsed()));
            let event = tokio::select! {
                _ = shutdown.cancelled() => return Ok(Stop::Signal),
                _ = sleep_or_never(idle_left) => return Ok(Stop::Idle),
                event = received.recv() => event,
            };
            let batch = match event {
                Some(Event::Batch(batch)) => batch,
                Some(Event::Failed(err)) => return Err(err),
                None => bail!("every pull task stopped"),
            };
            last_message = Instant::now();
            for message in batch {
                consumed += 1;
                printed.insert(message.queue.clone(), message.queue_offset + 1);
                if let Some(bar) = &bar {
                    bar.inc(1);
                }
                if ctx.json {
                    if listed.len() < JSON_LIST_LIMIT {
                        listed.push(MessageJson::from(&message));
                    } else {
                        truncated = true;
                    }
                } else if !args.quiet {
                    print_message(&message);
                }
                if args.count == Some(consumed) {
                    return Ok(Stop::Count);
                }
            }
        }
    }
    .await;
    stop.cancel();
    shutdown.cancel();
    if tokio::time::timeout(STOP_TIMEOUT, tasks.wait())
        .await
        .is_err()
    {
        eprintln!("mq: pull tasks did not stop within {STOP_TIMEOUT:?}");
    }
    if let Some(bar) = &bar {
        bar.finish_and_clear();
    }

    let committed = match &local {
        _ if args.no_commit => Vec::new(),
        Some(local) => store_locally(local, &printed)?,
        None => commit(ctx, &args.group, &printed).await?,
    };
    if ctx.json {
        print_json(&ConsumeJson {
            topic: args.topic.clone(),
            group: args.group.clone(),
            consumed,
            messages: listed,
            messages_truncated: truncated,
            committed,
        })?;
    } else {
        eprintln!(
            "consumed {consumed} message(s); committed the offsets of {} queue(s) for group {}",
            committed.len(),
            args.group
        );
    }
    let stop = outcome?;
    if let Some(count) = args.count
        && stop == Stop::Idle
    {
        bail!(
            "only {consumed} of {count} message(s) arrived within {} ms of the last one",
            args.idle_timeout_ms.unwrap_or(0)
        );
    }
    Ok(ExitCode::SUCCESS)
}

async fn sleep_or_never(left: Option<Duration>) {
    match left {
        Some(left) => tokio::time::sleep(left).await,
        None => std::future::pending().await,
    }
}

/// A token cancelled on Ctrl-C or SIGTERM (by a tracked task that ends with it).
fn shutdown_signal() -> CancellationToken {
    let token = CancellationToken::new();
    let fired = token.clone();
    tokio::spawn(async move {
        use tokio::signal::unix::{SignalKind, signal};
        let mut terminate = signal(SignalKind::terminate()).ok();
        tokio::select! {
            _ = fired.cancelled() => return,
            _ = tokio::signal::ctrl_c() => {}
            _ = async {
                match terminate.as_mut() {
                    Some(terminate) => { terminate.recv().await; }
                    None => std::future::pending::<()>().await,
                }
            } => {}
        }
        fired.cancel();
    });
    token
}

fn print_message(message: &ReceivedMessage) {
    outln!(
        "{}:{}  offset={}  key={}  tag={}  {}",
        message.queue.broker_name,
        message.queue.queue_id,
        message.queue_offset,
        if message.keys.is_empty() {
            "-".to_owned()
        } else {
            message.keys.join(",")
        },
        message.tags.as_deref().unwrap_or("-"),
        printable_body(&message.body, BODY_PRINT_CHARS)
    );
}

async fn start_offset(
    broker: &BrokerClient,
    addr: &str,
    group: &str,
    queue: &MessageQueue,
    from: From,
) -> anyhow::Result<i64> {
    let what = || {
        format!(
            "finding where {}:{} starts",
            queue.broker_name, queue.queue_id
        )
    };
    Ok(match from {
        From::Committed => match broker
            .query_consumer_offset(addr, group, queue)
            .await
            .with_context(what)?
        {
            Some(offset) => offset,
            None => broker.min_offset(addr, queue).await.with_context(what)?,
        },
        From::First => broker.min_offset(addr, queue).await.with_context(what)?,
        From::Last => broker.max_offset(addr, queue).await.with_context(what)?,
        From::Offset(offset) => offset,
        From::Timestamp(timestamp_ms) => broker
            .search_offset(addr, queue, timestamp_ms)
            .await
            .with_context(what)?,
    })
}

/// Pulls one queue until `stop`, handing every non-empty batch to the printer.
async fn pull_queue(
    broker: BrokerClient,
    namesrv: NameServerClient,
    mut pull: PullRequest,
    events: mpsc::Sender<Event>,
    stop: CancellationToken,
) {
    let mut addr: Option<String> = None;
    let mut errors: u32 = 0;
    loop {
        if stop.is_cancelled() {
            return;
        }
        let result = async {
            let target = match &addr {
                Some(addr) => addr.clone(),
                None => leader_of(&namesrv, &pull.queue).await?,
            };
            addr = Some(target.clone());
            anyhow::Ok(broker.pull(&target, &pull).await?)
        };
        let result = tokio::select! {
            _ = stop.cancelled() => return,
            result = result => result,
        };
        match result {
            Ok(answer) => {
                errors = 0;
                pull.offset = answer.next_begin_offset.max(pull.offset);
                if answer.status == PullStatus::OffsetMoved {
                    pull.offset = answer.next_begin_offset;
                }
                if answer.status == PullStatus::Found && !answer.messages.is_empty() {
                    let sent = tokio::select! {
                        _ = stop.cancelled() => return,
                        sent = events.send(Event::Batch(answer.messages)) => sent,
                    };
                    if sent.is_err() {
                        return;
                    }
                }
            }
            Err(err) => {
                errors += 1;
                addr = None;
                if errors >= MAX_CONSECUTIVE_PULL_ERRORS {
                    let err = err.context(format!(
                        "pulling {}:{} failed {errors} times in a row",
                        pull.queue.broker_name, pull.queue.queue_id
                    ));
                    let _ = events.send(Event::Failed(err)).await;
                    return;
                }
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(PULL_ERROR_BACKOFF) => {}
                }
            }
        }
    }
}

/// The group leader of a queue, fresh from the NameServer (after a failed pull).
async fn leader_of(namesrv: &NameServerClient, queue: &MessageQueue) -> anyhow::Result<String> {
    let data = namesrv
        .topic_route(&queue.topic)
        .await?
        .ok_or_else(|| anyhow!("topic {} no longer exists", queue.topic))?;
    TopicRoute::new(&queue.topic, data)
        .read_addr(queue, ReadFrom::Leader)
        .map(str::to_owned)
        .ok_or_else(|| anyhow!("broker group {} has no member listed", queue.broker_name))
}

/// Commits each printed-from queue's next offset to its group's leader.
async fn commit(
    ctx: &Ctx,
    group: &str,
    printed: &BTreeMap<MessageQueue, i64>,
) -> anyhow::Result<Vec<CommittedJson>> {
    if printed.is_empty() {
        return Ok(Vec::new());
    }
    let leaders = ctx.leaders().await?;
    let mut committed = Vec::with_capacity(printed.len());
    for (queue, offset) in printed {
        let leader = leaders.get(&queue.broker_name).ok_or_else(|| {
            anyhow!(
                "broker group {} has no leader to commit offsets to",
                queue.broker_name
            )
        })?;
        ctx.broker
            .update_consumer_offset(leader, group, queue, *offset)
            .await
            .with_context(|| {
                format!(
                    "committing offset {offset} of {}:{}",
                    queue.broker_name, queue.queue_id
                )
            })?;
        committed.push(CommittedJson {
            broker_name: queue.broker_name.clone(),
            queue_id: queue.queue_id,
            offset: *offset,
        });
    }
    Ok(committed)
}

/// `--offsets-file`, or RocketMQ's place for a broadcasting consumer's offsets.
fn offsets_file(args: &ConsumeArgs) -> anyhow::Result<std::path::PathBuf> {
    if let Some(path) = &args.offsets_file {
        return Ok(path.clone());
    }
    let home =
        std::env::var_os("HOME").ok_or_else(|| anyhow!("HOME is not set: give --offsets-file"))?;
    Ok(std::path::PathBuf::from(home)
        .join(".rocketmq_offsets")
        .join(&args.group)
        .join("offsets.json"))
}

/// A broadcasting consumer's offsets, into its own file.
fn store_locally(
    local: &LocalOffsets,
    printed: &BTreeMap<MessageQueue, i64>,
) -> anyhow::Result<Vec<CommittedJson>> {
    let mut stored = Vec::with_capacity(printed.len());
    for (queue, offset) in printed {
        if !local.store(queue, *offset) {
            bail!("could not write the offsets file");
        }
        stored.push(CommittedJson {
            broker_name: queue.broker_name.clone(),
            queue_id: queue.queue_id,
            offset: *offset,
        });
    }
    Ok(stored)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_start_position_and_refuses_the_rest() {
        assert_eq!("committed".parse(), Ok(From::Committed));
        assert_eq!("first".parse(), Ok(From::First));
        assert_eq!("last".parse(), Ok(From::Last));
        assert_eq!("offset:42".parse(), Ok(From::Offset(42)));
        assert_eq!(
            "timestamp:1700000000000".parse(),
            Ok(From::Timestamp(1_700_000_000_000))
        );
        for bad in ["", "offset:", "offset:-1", "offset:x", "time:1", "latest"] {
            assert!(bad.parse::<From>().is_err(), "{bad:?} parsed");
        }
    }
}
