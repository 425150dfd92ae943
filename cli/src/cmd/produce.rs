//! `mq produce`: send messages with the client producer (retries, route refresh, a bounded
//! window of sends in flight). Bodies come from the arguments, a file's lines, stdin's lines,
//! or are generated (`--count`, `--size`).

use std::collections::VecDeque;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context as _, bail};
use clap::Args;
use raftmq_client::producer::SendHandle;
use raftmq_client::{Message, Producer, SendResult, TransactionState};
use serde::Serialize;
use tokio::io::{AsyncBufRead, AsyncBufReadExt, BufReader};

use crate::context::Ctx;
use crate::output::{Table, print_json, progress};

/// Up to this many messages, each is listed; beyond, a summary is printed.
pub const LIST_LIMIT: u64 = 20;
/// Most messages listed in `--json` (the counts stay exact beyond it).
pub const JSON_LIST_LIMIT: usize = 100_000;
/// Default sends in flight at once.
pub const DEFAULT_WINDOW: usize = 64;
/// Most sends in flight at once.
pub const MAX_WINDOW: usize = 4096;
/// Default generated body size, bytes.
pub const DEFAULT_GENERATED_BYTES: usize = 100;
/// Failures described on stderr before the rest are only counted.
pub const MAX_FAILURES_SHOWN: u64 = 5;
/// Longest input line read as one message (RocketMQ's 4 MiB message cap).
pub const MAX_LINE_BYTES: usize = raftmq_client::message::MAX_MESSAGE_BYTES;

#[derive(Args, Debug)]
pub struct ProduceArgs {
    /// The topic (created with 8 queues on first send where brokers auto-create topics).
    #[arg(short = 't', long)]
    topic: String,
    /// Message bodies, one message each. Without bodies, `--file` or `--count`/`--size`, stdin
    /// is read, one message per line.
    #[arg(conflicts_with_all = ["file", "count", "size"])]
    bodies: Vec<String>,
    /// Read bodies from this file, one message per line.
    #[arg(short = 'f', long, conflicts_with_all = ["count", "size"])]
    file: Option<PathBuf>,
    /// The message key (RocketMQ KEYS), for lookups.
    #[arg(short = 'k', long)]
    key: Option<String>,
    /// The message tag (RocketMQ TAGS), for consumer filtering.
    #[arg(long)]
    tag: Option<String>,
    /// Send this many generated messages (default 1 when only `--size` is given).
    #[arg(short = 'c', long)]
    count: Option<u64>,
    /// Size in bytes of each generated body [default: 100].
    #[arg(short = 's', long)]
    size: Option<usize>,
    /// The producer group.
    #[arg(short = 'g', long, default_value = "mq_cli_producer")]
    group: String,
    /// Sends in flight at once (1 sends one by one, in order).
    #[arg(long, default_value_t = DEFAULT_WINDOW)]
    window: usize,
    /// Deliver after this delay level (RocketMQ's; broker default levels: 1 = 1 s, 2 = 5 s,
    /// 3 = 10 s, 4 = 30 s, 5 = 1 m, ... 18 = 2 h).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=64), conflicts_with_all = ["deliver_at_ms", "timer_delay_ms"])]
    delay_level: Option<u32>,
    /// Deliver at this time, ms since the epoch (a RocketMQ 5 timer message,
    /// TIMER_DELIVER_MS; up to the broker's timer-max-delay-sec ahead, 3 days by default).
    #[arg(long, conflicts_with = "timer_delay_ms")]
    deliver_at_ms: Option<i64>,
    /// Deliver this many ms after the broker stores it (a timer message, TIMER_DELAY_MS).
    #[arg(long)]
    timer_delay_ms: Option<u64>,
    /// Send each message as a transaction whose local transaction ends this way: commit
    /// (delivered), rollback (never delivered), or unknown (the broker checks back with the
    /// producer group; this process answers with --check-answer while it runs, and a
    /// transaction nobody answers is discarded after transaction-check-max checks). Sends one
    /// by one.
    #[arg(long, value_enum, conflicts_with = "delay_level")]
    transaction: Option<TransactionArg>,
    /// How this producer answers the broker's checks of its group's transactions.
    #[arg(long, value_enum, default_value = "commit", requires = "transaction")]
    check_answer: TransactionArg,
}

/// A transaction's end, as `--transaction` and `--check-answer` name it.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum TransactionArg {
    Commit,
    Rollback,
    Unknown,
}

impl From<TransactionArg> for TransactionState {
    fn from(arg: TransactionArg) -> Self {
        match arg {
            TransactionArg::Commit => TransactionState::Commit,
            TransactionArg::Rollback => TransactionState::Rollback,
            TransactionArg::Unknown => TransactionState::Unknown,
        }
    }
}

/// One acknowledged message in `--json`.
#[derive(Serialize, Debug)]
struct SentJson {
    msg_id: String,
    offset_msg_id: String,
    broker_name: String,
    queue_id: i32,
    queue_offset: i64,
    broker_addr: String,
}

/// `mq produce --json`.
#[derive(Serialize, Debug)]
struct ProduceJson {
    topic: String,
    sent: u64,
    failed: u64,
    /// Sends whose outcome is unknown (a timeout after the request left): maybe stored.
    unknown: u64,
    elapsed_ms: u64,
    messages: Vec<SentJson>,
    messages_truncated: bool,
}

enum Source {
    Bodies(std::vec::IntoIter<String>),
    Lines(Box<dyn AsyncBufRead + Unpin + Send>),
    Generated { next: u64, count: u64, size: usize },
}

impl Source {
    /// The next body, `None` at the end.
    async fn next(&mut self) -> anyhow::Result<Option<Vec<u8>>> {
        match self {
            Source::Bodies(bodies) => Ok(bodies.next().map(String::into_bytes)),
            // Empty lines carry no message (brokers refuse empty bodies).
            Source::Lines(reader) => loop {
                match read_line(reader.as_mut()).await? {
                    Some(line) if line.is_empty() => continue,
                    other => return Ok(other),
                }
            },
            Source::Generated { next, count, size } => {
                if *next >= *count {
                    return Ok(None);
                }
                *next += 1;
                Ok(Some(generated_body(*next, *size)))
            }
        }
    }

    fn total(&self) -> Option<u64> {
        match self {
            Source::Bodies(bodies) => Some(bodies.len() as u64),
            Source::Lines(_) => None,
            Source::Generated { count, .. } => Some(*count),
        }
    }
}

/// A line without its end of line; `None` at the end of input. Lines over the cap are an error.
async fn read_line(
    reader: &mut (dyn AsyncBufRead + Unpin + Send),
) -> anyhow::Result<Option<Vec<u8>>> {
    let mut line = Vec::new();
    loop {
        let available = reader.fill_buf().await.context("reading input")?;
        if available.is_empty() {
            return Ok((!line.is_empty()).then_some(line));
        }
        let (taken, done) = match available.iter().position(|byte| *byte == b'\n') {
            Some(end) => (end + 1, true),
            None => (available.len(), false),
        };
        line.extend_from_slice(&available[..taken]);
        reader.consume(taken);
        if line.len() > MAX_LINE_BYTES + 2 {
            bail!("an input line is longer than the {MAX_LINE_BYTES}-byte message cap");
        }
        if done {
            if line.ends_with(b"\n") {
                line.pop();
            }
            if line.ends_with(b"\r") {
                line.pop();
            }
            return Ok(Some(line));
        }
    }
}

/// `"<seq> "` followed by a repeating alphabet, `size` bytes in all.
fn generated_body(seq: u64, size: usize) -> Vec<u8> {
    let mut body = format!("{seq:08} ").into_bytes();
    let alphabet = b"abcdefghijklmnopqrstuvwxyz";
    let mut index = 0;
    while body.len() < size {
        body.push(alphabet[index % alphabet.len()]);
        index += 1;
    }
    body.truncate(size.max(1));
    body
}

pub async fn run(ctx: &Ctx, args: ProduceArgs) -> anyhow::Result<ExitCode> {
    raftmq_client::message::validate_topic(&args.topic)?;
    if !(1..=MAX_WINDOW).contains(&args.window) {
        bail!("--window must be in 1..={MAX_WINDOW}");
    }
    let mut source = if !args.bodies.is_empty() {
        Source::Bodies(args.bodies.clone().into_iter())
    } else if let Some(path) = &args.file {
        let file = tokio::fs::File::open(path)
            .await
            .with_context(|| format!("opening {}", path.display()))?;
        Source::Lines(Box::new(BufReader::new(file)))
    } else if args.count.is_some() || args.size.is_some() {
        let size = args.size.unwrap_or(DEFAULT_GENERATED_BYTES);
        if size == 0 || size > raftmq_client::message::MAX_MESSAGE_BYTES {
            bail!(
                "--size must be in 1..={}",
                raftmq_client::message::MAX_MESSAGE_BYTES
            );
        }
        Source::Generated {
            next: 0,
            count: args.count.unwrap_or(1),
            size,
        }
    } else {
        Source::Lines(Box::new(BufReader::new(tokio::io::stdin())))
    };

    let mut builder = Producer::builder()
        .namesrv(ctx.namesrv_list.clone())
        .credentials(ctx.credentials.clone())
        .tls(ctx.tls.clone())
        .group(args.group.clone())
        .async_window(args.window);
    if args.transaction.is_some() {
        let answer = TransactionState::from(args.check_answer);
        builder = builder.transaction_checker(move |_| answer);
    }
    let producer = builder.build().await.context("starting the producer")?;
    let result = send_all(ctx, &args, &producer, &mut source).await;
    producer.shutdown().await;
    result
}

#[derive(Default)]
struct Tally {
    sent: u64,
    failed: u64,
    unknown: u64,
    listed: Vec<SendResult>,
    truncated: bool,
}

impl Tally {
    fn record(&mut self, result: Result<SendResult, raftmq_client::SendError>) {
        match result {
            Ok(sent) => {
                self.sent += 1;
                if self.listed.len() < JSON_LIST_LIMIT {
                    self.listed.push(sent);
                } else {
                    self.truncated = true;
                }
            }
            Err(err) => {
                let failures = self.failed + self.unknown;
                if failures < MAX_FAILURES_SHOWN {
                    eprintln!("mq: send failed: {err}");
                } else if failures == MAX_FAILURES_SHOWN {
                    eprintln!("mq: more send failures follow; only counting them");
                }
                if err.is_unknown_outcome() {
                    self.unknown += 1;
                } else {
                    self.failed += 1;
                }
            }
        }
    }
}

async fn send_all(
    ctx: &Ctx,
    args: &ProduceArgs,
    producer: &Producer,
    source: &mut Source,
) -> anyhow::Result<ExitCode> {
    let total = source.total();
    let bar = total
        .filter(|total| *total > LIST_LIMIT)
        .map(|total| progress(total, "producing"));
    let started = Instant::now();
    let mut in_flight: VecDeque<SendHandle> = VecDeque::with_capacity(args.window);
    let mut tally = Tally::default();
    while let Some(body) = source.next().await? {
        let mut message = Message::new(args.topic.clone(), body);
        if let Some(tag) = &args.tag {
            message = message.with_tags(tag.clone());
        }
        if let Some(key) = &args.key {
            message = message.with_keys([key.clone()]);
        }
        if let Some(level) = args.delay_level {
            message = message.with_delay_level(level);
        }
        if let Some(at_ms) = args.deliver_at_ms {
            message = message.with_deliver_time_ms(at_ms);
        }
        if let Some(delay_ms) = args.timer_delay_ms {
            message = message.with_delay(std::time::Duration::from_millis(delay_ms));
        }
        if let Some(state) = args.transaction {
            let state = TransactionState::from(state);
            let result = producer
                .send_in_transaction(message, move |_| async move { state })
                .await
                .map(|transaction| {
                    if let Err(err) = &transaction.ended {
                        eprintln!(
                            "mq: the broker did not take the transaction's end ({err}); it will check back"
                        );
                    }
                    transaction.send
                });
            tally.record(result);
            if let Some(bar) = &bar {
                bar.inc(1);
            }
            continue;
        }
        if in_flight.len() >= args.window
            && let Some(oldest) = in_flight.pop_front()
        {
            tally.record(oldest.await);
            if let Some(bar) = &bar {
                bar.inc(1);
            }
        }
        match producer.send_async(message).await {
            Ok(handle) => in_flight.push_back(handle),
            Err(err) => tally.record(Err(raftmq_client::SendError {
                source: err,
                attempts: 0,
                earlier_attempt_unknown: false,
            })),
        }
    }
    while let Some(handle) = in_flight.pop_front() {
        tally.record(handle.await);
        if let Some(bar) = &bar {
            bar.inc(1);
        }
    }
    if let Some(bar) = &bar {
        bar.finish_and_clear();
    }
    let elapsed = started.elapsed();
    let attempted = tally.sent + tally.failed + tally.unknown;
    if ctx.json {
        print_json(&ProduceJson {
            topic: args.topic.clone(),
            sent: tally.sent,
            failed: tally.failed,
            unknown: tally.unknown,
            elapsed_ms: u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX),
            messages: tally
                .listed
                .iter()
                .map(|sent| SentJson {
                    msg_id: sent.msg_id.clone(),
                    offset_msg_id: sent.offset_msg_id.clone(),
                    broker_name: sent.queue.broker_name.clone(),
                    queue_id: sent.queue.queue_id,
                    queue_offset: sent.queue_offset,
                    broker_addr: sent.broker_addr.clone(),
                })
                .collect(),
            messages_truncated: tally.truncated,
        })?;
    } else if attempted <= LIST_LIMIT {
        let mut table = Table::new(&["MSG_ID", "QUEUE", "OFFSET"]);
        for sent in &tally.listed {
            table.row(vec![
                sent.msg_id.clone(),
                format!("{}:{}", sent.queue.broker_name, sent.queue.queue_id),
                sent.queue_offset.to_string(),
            ]);
        }
        if !table.is_empty() {
            table.print();
        }
    } else {
        let seconds = elapsed.as_secs_f64().max(1e-6);
        outln!(
            "sent {} message(s) to {} in {:.2} s ({:.0} msg/s); failed {}, unknown outcome {}",
            tally.sent,
            args.topic,
            seconds,
            tally.sent as f64 / seconds,
            tally.failed,
            tally.unknown
        );
    }
    if attempted == 0 {
        bail!("no message to send (empty input)");
    }
    if tally.failed + tally.unknown > 0 {
        bail!(
            "{} of {attempted} send(s) failed ({} with an unknown outcome)",
            tally.failed + tally.unknown,
            tally.unknown
        );
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_bodies_have_the_asked_size_and_a_sequence_number() {
        let body = generated_body(7, 20);
        assert_eq!(body.len(), 20);
        assert!(body.starts_with(b"00000007 abc"));
        assert_eq!(generated_body(1, 3).len(), 3);
    }

    #[tokio::test]
    async fn lines_are_split_without_their_end_of_line() {
        let mut reader: Box<dyn AsyncBufRead + Unpin + Send> =
            Box::new(BufReader::new(&b"one\r\ntwo\n\nlast"[..]));
        let mut lines = Vec::new();
        while let Some(line) = read_line(reader.as_mut()).await.unwrap() {
            lines.push(String::from_utf8(line).unwrap());
        }
        assert_eq!(lines, ["one", "two", "", "last"]);
    }
}
