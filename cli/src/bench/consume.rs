//! `mq bench consume`: consumers of a fresh group read a topic from its first offset; the
//! throughput from the first delivered message to the `count`-th.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use anyhow::bail;
use clap::Args;
use raftmq_client::{ConsumeFrom, ConsumeStatus, Consumer, ReceivedMessage};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::stats::{Counters, Report, spawn_progress};
use super::{LoadArgs, MAX_CLIENTS, MAX_DURATION, ensure_topic, fresh_name, load};
use crate::context::Ctx;

/// How long the run waits for the next message before it ends with what it has.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(10);
/// Poll period of the end condition.
pub const END_POLL: Duration = Duration::from_millis(10);
/// Sends in flight while preloading, and messages per send.
pub const PRELOAD_WINDOW: usize = 16;
pub const PRELOAD_BATCH: usize = 32;

#[derive(Args, Debug, Clone)]
pub struct ConsumeArgs {
    /// The topic (created with `--queues` queues if it does not exist).
    #[arg(short = 't', long, default_value = "BenchTopic")]
    pub topic: String,
    /// Consumers in the group, each its own client.
    #[arg(long, default_value_t = 1)]
    pub consumers: usize,
    /// Messages to read.
    #[arg(short = 'c', long, default_value_t = 100_000)]
    pub count: u64,
    /// Send `--count` messages of `--size` bytes first (batches of 32, 16 in flight).
    #[arg(long)]
    pub preload: bool,
    /// Body bytes of preloaded messages.
    #[arg(short = 's', long, default_value_t = 1024)]
    pub size: usize,
    /// Messages per pull (at most 1024).
    #[arg(long, default_value_t = 512)]
    pub pull_batch: i32,
    /// Most seconds to read.
    #[arg(short = 'd', long, default_value_t = 60.0)]
    pub duration: f64,
    /// Queues of the topic when it is created.
    #[arg(long, default_value_t = 8)]
    pub queues: u32,
    /// No progress line.
    #[arg(short = 'q', long)]
    pub quiet: bool,
}

impl ConsumeArgs {
    fn validate(&self) -> anyhow::Result<()> {
        if !(1..=MAX_CLIENTS).contains(&self.consumers) {
            bail!("--consumers must be within 1..={MAX_CLIENTS}");
        }
        if self.count == 0 {
            bail!("--count must be positive");
        }
        if !(1..=raftmq_client::broker_client::MAX_PULL_BATCH).contains(&self.pull_batch) {
            bail!(
                "--pull-batch must be within 1..={}",
                raftmq_client::broker_client::MAX_PULL_BATCH
            );
        }
        if !(self.duration.is_finite() && self.duration > 0.0) {
            bail!("--duration must be positive");
        }
        Ok(())
    }
}

/// What the handlers of every consumer share.
#[derive(Default)]
struct Progress {
    counters: Arc<Counters>,
    bytes: AtomicU64,
    first: OnceLock<Instant>,
    reached: OnceLock<Instant>,
    last: std::sync::Mutex<Option<Instant>>,
}

impl Progress {
    fn delivered(&self, messages: &[ReceivedMessage], goal: u64) {
        let now = Instant::now();
        let _ = self.first.set(now);
        let bytes: usize = messages.iter().map(|m| m.body.len()).sum();
        self.bytes.fetch_add(bytes as u64, Ordering::Relaxed);
        let total = self
            .counters
            .messages
            .fetch_add(messages.len() as u64, Ordering::Relaxed)
            + messages.len() as u64;
        if total >= goal {
            let _ = self.reached.set(now);
        }
        *self.last.lock().unwrap_or_else(|p| p.into_inner()) = Some(now);
    }

    fn last(&self) -> Option<Instant> {
        *self.last.lock().unwrap_or_else(|p| p.into_inner())
    }
}

pub async fn run(ctx: &Ctx, args: &ConsumeArgs) -> anyhow::Result<Report> {
    args.validate()?;
    ensure_topic(ctx, &args.topic, args.queues).await?;
    if args.preload {
        let preload = LoadArgs {
            topic: args.topic.clone(),
            producers: 1,
            window: PRELOAD_WINDOW,
            batch: PRELOAD_BATCH,
            size: args.size,
            duration: MAX_DURATION.as_secs_f64(),
            // Whole batches, at least `count` messages.
            count: args.count.div_ceil(PRELOAD_BATCH as u64) * PRELOAD_BATCH as u64,
            warmup: 0.0,
            queues: args.queues,
            send_timeout_ms: 3000,
            rate: 0.0,
            quiet: args.quiet,
            transaction: false,
        };
        let report = load::produce(ctx, &preload).await?;
        if !args.quiet {
            eprintln!(
                "preloaded {} messages ({:.0} msgs/s)",
                report.messages, report.msgs_per_s
            );
        }
    }
    let progress = Arc::new(Progress::default());
    let group = fresh_name("bench_consume");
    let pull_batch = args.pull_batch;
    let mut consumers = Vec::with_capacity(args.consumers);
    let started = Instant::now();
    for _ in 0..args.consumers {
        let shared = progress.clone();
        let goal = args.count;
        let consumer = Consumer::builder()
            .namesrv(ctx.namesrv_list.clone())
            .credentials(ctx.credentials.clone())
            .tls(ctx.tls.clone())
            .group(&group)
            .subscribe(&args.topic, "*")
            .consume_from(ConsumeFrom::First)
            .consume_retry_topic(false)
            .pull_batch_size(pull_batch)
            .consume_batch_size(pull_batch as usize)
            .start(move |messages: Vec<ReceivedMessage>| {
                shared.delivered(&messages, goal);
                std::future::ready(ConsumeStatus::Success)
            })
            .await?;
        consumers.push(consumer);
    }
    let stop = CancellationToken::new();
    let tracker = TaskTracker::new();
    if !args.quiet {
        spawn_progress(
            "consume".to_owned(),
            progress.counters.clone(),
            stop.clone(),
            &tracker,
        );
    }
    let deadline = started + Duration::from_secs_f64(args.duration).min(MAX_DURATION);
    loop {
        let now = Instant::now();
        let idle = progress.last().unwrap_or(started);
        if progress.reached.get().is_some()
            || now >= deadline
            || now.saturating_duration_since(idle) > IDLE_TIMEOUT
        {
            break;
        }
        tokio::time::sleep(END_POLL).await;
    }
    stop.cancel();
    tracker.close();
    tracker.wait().await;
    for consumer in &consumers {
        consumer.shutdown().await;
    }
    let messages = progress.counters.messages.load(Ordering::Relaxed);
    let bytes = progress.bytes.load(Ordering::Relaxed);
    let first = progress.first.get().copied().unwrap_or(started);
    let end = progress
        .reached
        .get()
        .copied()
        .or_else(|| progress.last())
        .unwrap_or_else(Instant::now);
    let secs = end.saturating_duration_since(first).as_secs_f64().max(1e-9);
    if messages < args.count {
        eprintln!("mq bench: consumed {messages} of {} messages", args.count);
    }
    Ok(Report {
        system: "raftmq",
        mode: "consume",
        topic: args.topic.clone(),
        producers: args.consumers,
        window: args.pull_batch as usize,
        batch: 1,
        size: args.size,
        messages,
        total_messages: messages,
        bytes,
        errors: 0,
        unknown: 0,
        elapsed_s: secs,
        msgs_per_s: messages as f64 / secs,
        mb_per_s: bytes as f64 / secs / 1e6,
        latency_us: None,
        e2e_latency_us: None,
    })
}
