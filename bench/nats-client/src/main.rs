//! `nats-bench`: the NATS JetStream side of `bench/compare-nats.sh`. It runs the same workload
//! shapes as `mq bench` (same lanes model, same payload layout, same JSON report), so the
//! script can put the two side by side:
//!
//! - `setup`: (re)creates the benchmark stream, file storage, R3, and prints its leader;
//! - `produce`: N publishers (one connection each), each with W publishes awaiting their ack
//!   at once (W = 1 is a synchronous publish);
//! - `consume`: optionally preloads the stream, then reads it back with a pull consumer;
//! - `e2e`: publishes while a pull consumer reads; latency from publish start to delivery.
//!
//! A "lane" is one task that publishes and awaits the ack, again and again: W lanes per
//! publisher keep W publishes in flight. Every payload starts with the send time (u64
//! nanoseconds since the process started, little-endian), so the consumer of `e2e` can tell
//! the end-to-end latency.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use async_nats::jetstream::{self, consumer, stream};
use bytes::{Bytes, BytesMut};
use clap::{Args, Parser, Subcommand};
use futures::StreamExt;
use hdrhistogram::Histogram;
use serde::Serialize;

/// Longest run allowed, whatever `--duration` says.
const MAX_DURATION: Duration = Duration::from_secs(600);
/// Most lanes (publishers x window).
const MAX_LANES: usize = 8192;
/// Histogram range: 1 us .. 60 s, 3 significant digits.
const LATENCY_MAX_US: u64 = 60_000_000;
/// How long a consume run waits for the next message before giving up.
const CONSUME_IDLE_TIMEOUT: Duration = Duration::from_secs(10);
/// Deadline of one publish ack.
const ACK_TIMEOUT: Duration = Duration::from_secs(10);
/// Bytes of the send timestamp at the start of every payload.
const STAMP_BYTES: usize = 8;
/// Largest payload.
const MAX_SIZE: usize = 1 << 20;

#[derive(Parser, Debug)]
#[command(name = "nats-bench")]
struct Cli {
    /// Server URLs, comma-separated, in the order of the server names n1, n2, n3 (so the
    /// stream leader's URL can be found from its name).
    #[arg(long, default_value = "nats://127.0.0.1:4222")]
    servers: String,
    /// The stream.
    #[arg(long, default_value = "BENCH")]
    stream: String,
    /// The subject published to (the stream holds `<subject>.>` and `<subject>`).
    #[arg(long, default_value = "bench")]
    subject: String,
    /// Print one JSON document instead of text.
    #[arg(long)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Delete and create the stream (file storage) with this many replicas.
    Setup {
        #[arg(long, default_value_t = 3)]
        replicas: usize,
    },
    Produce(LoadArgs),
    Consume(ConsumeArgs),
    E2e(LoadArgs),
}

#[derive(Args, Debug, Clone)]
struct LoadArgs {
    /// Publishers, each with its own connection.
    #[arg(long, default_value_t = 1)]
    producers: usize,
    /// Publishes in flight per publisher (1: synchronous).
    #[arg(long, default_value_t = 1)]
    window: usize,
    /// Payload bytes.
    #[arg(long, default_value_t = 1024)]
    size: usize,
    /// Measured seconds (ends earlier when `--count` is reached).
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Messages to measure (0: no bound but the duration).
    #[arg(long, default_value_t = 0)]
    count: u64,
    /// Seconds of unmeasured load first.
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
}

#[derive(Args, Debug, Clone)]
struct ConsumeArgs {
    /// Messages to read.
    #[arg(long, default_value_t = 100_000)]
    count: u64,
    /// Publish `--count` messages first (window 256).
    #[arg(long)]
    preload: bool,
    /// Payload bytes of preloaded messages.
    #[arg(long, default_value_t = 1024)]
    size: usize,
    /// Messages per pull request.
    #[arg(long, default_value_t = 512)]
    batch: usize,
    /// Most seconds to spend reading.
    #[arg(long, default_value_t = 60.0)]
    duration: f64,
}

#[derive(Serialize, Debug, Default, Clone)]
struct Latency {
    p50: u64,
    p90: u64,
    p99: u64,
    p999: u64,
    max: u64,
    mean: f64,
    samples: u64,
}

impl Latency {
    fn of(hist: &Histogram<u64>) -> Option<Latency> {
        (!hist.is_empty()).then(|| Latency {
            p50: hist.value_at_quantile(0.50),
            p90: hist.value_at_quantile(0.90),
            p99: hist.value_at_quantile(0.99),
            p999: hist.value_at_quantile(0.999),
            max: hist.max(),
            mean: hist.mean(),
            samples: hist.len(),
        })
    }
}

/// The report, with the same fields as `mq bench --json`.
#[derive(Serialize, Debug)]
struct Report {
    system: &'static str,
    mode: &'static str,
    producers: usize,
    window: usize,
    size: usize,
    messages: u64,
    /// Every message acknowledged or consumed, the warm-up's too (for CPU per message).
    total_messages: u64,
    bytes: u64,
    errors: u64,
    elapsed_s: f64,
    msgs_per_s: f64,
    mb_per_s: f64,
    /// Publish (send to ack) latency, microseconds.
    latency_us: Option<Latency>,
    /// Send start to delivery, microseconds (`e2e`).
    e2e_latency_us: Option<Latency>,
}

impl Report {
    fn print(&self, json: bool) -> anyhow::Result<()> {
        if json {
            println!("{}", serde_json::to_string(self)?);
            return Ok(());
        }
        println!(
            "nats {}: {} msgs in {:.2} s: {:.0} msgs/s, {:.2} MB/s, {} errors",
            self.mode, self.messages, self.elapsed_s, self.msgs_per_s, self.mb_per_s, self.errors
        );
        for (what, latency) in [("latency", &self.latency_us), ("e2e", &self.e2e_latency_us)] {
            if let Some(l) = latency {
                println!(
                    "  {what} ms: p50 {:.3} p90 {:.3} p99 {:.3} p99.9 {:.3} max {:.3}",
                    l.p50 as f64 / 1e3,
                    l.p90 as f64 / 1e3,
                    l.p99 as f64 / 1e3,
                    l.p999 as f64 / 1e3,
                    l.max as f64 / 1e3
                );
            }
        }
        Ok(())
    }
}

fn new_histogram() -> Histogram<u64> {
    // Bounds are constants within hdrhistogram's limits.
    Histogram::new_with_bounds(1, LATENCY_MAX_US, 3).expect("valid histogram bounds")
}

fn record(hist: &mut Histogram<u64>, elapsed: Duration) {
    let us = (elapsed.as_micros() as u64).clamp(1, LATENCY_MAX_US);
    // Clamped into range: cannot fail.
    let _ = hist.record(us);
}

/// The payload: the send time, then filler.
fn payload(epoch: Instant, size: usize) -> Bytes {
    let mut buf = BytesMut::with_capacity(size.max(STAMP_BYTES));
    let nanos = epoch.elapsed().as_nanos() as u64;
    buf.extend_from_slice(&nanos.to_le_bytes());
    buf.resize(size.max(STAMP_BYTES), b'x');
    buf.freeze()
}

fn stamp_of(payload: &[u8]) -> Option<u64> {
    payload
        .get(..STAMP_BYTES)
        .and_then(|b| b.try_into().ok())
        .map(u64::from_le_bytes)
}

fn urls(cli: &Cli) -> Vec<String> {
    cli.servers.split(',').map(str::to_owned).collect()
}

async fn connect(url: &str) -> anyhow::Result<async_nats::Client> {
    async_nats::ConnectOptions::new()
        .connection_timeout(Duration::from_secs(5))
        .connect(url)
        .await
        .with_context(|| format!("connecting to {url}"))
}

fn context(client: async_nats::Client) -> jetstream::Context {
    jetstream::ContextBuilder::new()
        .timeout(ACK_TIMEOUT)
        .build(client)
}

/// The URL of the stream leader (servers are named n1, n2, ... in `--servers` order).
async fn leader_url(cli: &Cli) -> anyhow::Result<String> {
    let all = urls(cli);
    let js = context(connect(&all[0]).await?);
    let mut stream = js.get_stream(&cli.stream).await.context("no stream")?;
    let info = stream.info().await?;
    let leader = info.cluster.as_ref().and_then(|c| c.leader.clone());
    let index = leader
        .as_deref()
        .and_then(|name| name.strip_prefix('n'))
        .and_then(|n| n.parse::<usize>().ok())
        .and_then(|n| n.checked_sub(1))
        .filter(|i| *i < all.len())
        .unwrap_or(0);
    Ok(all[index].clone())
}

async fn setup(cli: &Cli, replicas: usize) -> anyhow::Result<()> {
    let js = context(connect(&urls(cli)[0]).await?);
    let _ = js.delete_stream(&cli.stream).await;
    js.create_stream(stream::Config {
        name: cli.stream.clone(),
        subjects: vec![cli.subject.clone(), format!("{}.>", cli.subject)],
        storage: stream::StorageType::File,
        num_replicas: replicas,
        ..Default::default()
    })
    .await
    .context("creating the stream")?;
    // Wait (bounded) until the stream has a leader.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut stream = js.get_stream(&cli.stream).await?;
        let info = stream.info().await?;
        if let Some(leader) = info.cluster.as_ref().and_then(|c| c.leader.clone()) {
            println!("stream {} ready, R{replicas}, leader {leader}", cli.stream);
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("the stream has no leader after 30 s");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// What lanes share.
struct Load {
    epoch: Instant,
    measure_from: Instant,
    deadline: Instant,
    /// Messages still to measure (`u64::MAX`: unbounded).
    tickets: AtomicU64,
    done: AtomicBool,
    measured: AtomicU64,
    total: AtomicU64,
    errors: AtomicU64,
}

impl Load {
    fn new(epoch: Instant, args: &LoadArgs) -> Arc<Load> {
        let warmup = Duration::from_secs_f64(args.warmup.max(0.0));
        let duration = Duration::from_secs_f64(args.duration.max(0.0)).min(MAX_DURATION);
        let now = Instant::now();
        Arc::new(Load {
            epoch,
            measure_from: now + warmup,
            deadline: now + warmup + duration,
            tickets: AtomicU64::new(if args.count == 0 {
                u64::MAX
            } else {
                args.count
            }),
            done: AtomicBool::new(false),
            measured: AtomicU64::new(0),
            total: AtomicU64::new(0),
            errors: AtomicU64::new(0),
        })
    }

    /// Whether to send again; `Some(true)` when the send is measured.
    fn next(&self) -> Option<bool> {
        let now = Instant::now();
        if self.done.load(Ordering::Relaxed) || now >= self.deadline {
            self.done.store(true, Ordering::Relaxed);
            return None;
        }
        if now < self.measure_from {
            return Some(false);
        }
        let taken = self
            .tickets
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |t| t.checked_sub(1));
        if taken.is_err() {
            self.done.store(true, Ordering::Relaxed);
            return None;
        }
        Some(true)
    }
}

async fn lane(
    js: jetstream::Context,
    subject: String,
    size: usize,
    load: Arc<Load>,
) -> Histogram<u64> {
    let mut hist = new_histogram();
    while let Some(measured) = load.next() {
        let started = Instant::now();
        let result = match js.publish(subject.clone(), payload(load.epoch, size)).await {
            Ok(ack) => ack.await.map(|_| ()).map_err(anyhow::Error::from),
            Err(error) => Err(error.into()),
        };
        if result.is_ok() {
            load.total.fetch_add(1, Ordering::Relaxed);
        }
        match result {
            Ok(()) if measured => {
                record(&mut hist, started.elapsed());
                load.measured.fetch_add(1, Ordering::Relaxed);
            }
            Ok(()) => {}
            Err(error) => {
                if load.errors.fetch_add(1, Ordering::Relaxed) < 3 {
                    eprintln!("publish failed: {error:#}");
                }
            }
        }
    }
    hist
}

/// Prints a progress line every second on stderr until `done`.
fn spawn_progress(what: &'static str, counter: Arc<Load>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut last = 0;
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.tick().await;
        let started = Instant::now();
        while !counter.done.load(Ordering::Relaxed) {
            tick.tick().await;
            let now = counter.measured.load(Ordering::Relaxed);
            eprintln!(
                "[{:>5.1}s] nats {what}: {now} msgs, {} msgs/s, {} errors",
                started.elapsed().as_secs_f64(),
                now - last,
                counter.errors.load(Ordering::Relaxed)
            );
            last = now;
        }
    })
}

/// Runs the publishers; returns the merged histogram and the measured span.
async fn run_publishers(
    cli: &Cli,
    args: &LoadArgs,
    load: Arc<Load>,
    mode: &'static str,
) -> anyhow::Result<(Histogram<u64>, Duration)> {
    if args.producers == 0 || args.window == 0 || args.producers * args.window > MAX_LANES {
        bail!("producers x window must be within 1..={MAX_LANES}");
    }
    if args.size > MAX_SIZE {
        bail!("size over {MAX_SIZE}");
    }
    let url = leader_url(cli).await?;
    let mut lanes = Vec::new();
    for _ in 0..args.producers {
        let js = context(connect(&url).await?);
        for _ in 0..args.window {
            lanes.push(tokio::spawn(lane(
                js.clone(),
                cli.subject.clone(),
                args.size,
                load.clone(),
            )));
        }
    }
    let progress = spawn_progress(mode, load.clone());
    let mut hist = new_histogram();
    for lane in lanes {
        hist.add(lane.await?)?;
    }
    let ended = Instant::now();
    load.done.store(true, Ordering::Relaxed);
    progress.abort();
    let span = ended.saturating_duration_since(load.measure_from);
    Ok((hist, span))
}

fn report(
    mode: &'static str,
    args: &LoadArgs,
    load: &Load,
    messages: u64,
    span: Duration,
    latency: Option<Latency>,
    e2e: Option<Latency>,
) -> Report {
    let secs = span.as_secs_f64().max(1e-9);
    let bytes = messages * args.size as u64;
    Report {
        system: "nats",
        mode,
        producers: args.producers,
        window: args.window,
        size: args.size,
        messages,
        total_messages: load.total.load(Ordering::Relaxed),
        bytes,
        errors: load.errors.load(Ordering::Relaxed),
        elapsed_s: secs,
        msgs_per_s: messages as f64 / secs,
        mb_per_s: bytes as f64 / secs / 1e6,
        latency_us: latency,
        e2e_latency_us: e2e,
    }
}

async fn produce(cli: &Cli, args: &LoadArgs) -> anyhow::Result<Report> {
    let load = Load::new(Instant::now(), args);
    let (hist, span) = run_publishers(cli, args, load.clone(), "produce").await?;
    Ok(report(
        "produce",
        args,
        &load,
        hist.len(),
        span,
        Latency::of(&hist),
        None,
    ))
}

/// A pull consumer reading the whole stream without acks (the closest match to a RocketMQ
/// consumer, which commits offsets every few seconds rather than per message).
async fn pull_consumer(
    js: &jetstream::Context,
    stream: &str,
    deliver: consumer::DeliverPolicy,
) -> anyhow::Result<consumer::PullConsumer> {
    let stream = js.get_stream(stream).await?;
    let consumer = stream
        .create_consumer(consumer::pull::Config {
            deliver_policy: deliver,
            ack_policy: consumer::AckPolicy::None,
            ..Default::default()
        })
        .await
        .context("creating the pull consumer")?;
    Ok(consumer)
}

async fn consume(cli: &Cli, args: &ConsumeArgs) -> anyhow::Result<Report> {
    if args.preload {
        let load_args = LoadArgs {
            producers: 1,
            window: 256,
            size: args.size,
            duration: MAX_DURATION.as_secs_f64(),
            count: args.count,
            warmup: 0.0,
        };
        let load = Load::new(Instant::now(), &load_args);
        run_publishers(cli, &load_args, load, "preload").await?;
    }
    let url = leader_url(cli).await?;
    let js = context(connect(&url).await?);
    let consumer = pull_consumer(&js, &cli.stream, consumer::DeliverPolicy::All).await?;
    let mut messages = consumer
        .stream()
        .max_messages_per_batch(args.batch)
        .messages()
        .await?;
    let deadline = Instant::now() + Duration::from_secs_f64(args.duration).min(MAX_DURATION);
    // Timed from the first message delivered to the last, as `mq bench consume` does.
    let mut first: Option<Instant> = None;
    let mut last = Instant::now();
    let (mut count, mut bytes, mut errors) = (0u64, 0u64, 0u64);
    let mut last_print = Instant::now();
    while count < args.count && Instant::now() < deadline {
        match tokio::time::timeout(CONSUME_IDLE_TIMEOUT, messages.next()).await {
            Err(_) | Ok(None) => break,
            Ok(Some(Err(error))) => {
                errors += 1;
                if errors <= 3 {
                    eprintln!("pull failed: {error}");
                }
            }
            Ok(Some(Ok(message))) => {
                last = Instant::now();
                first.get_or_insert(last);
                count += 1;
                bytes += message.payload.len() as u64;
            }
        }
        if last_print.elapsed() >= Duration::from_secs(1) {
            eprintln!("nats consume: {count} msgs");
            last_print = Instant::now();
        }
    }
    let span = last.saturating_duration_since(first.unwrap_or(last));
    let secs = span.as_secs_f64().max(1e-9);
    Ok(Report {
        system: "nats",
        mode: "consume",
        producers: 1,
        window: args.batch,
        size: args.size,
        messages: count,
        total_messages: count,
        bytes,
        errors,
        elapsed_s: secs,
        msgs_per_s: count as f64 / secs,
        mb_per_s: bytes as f64 / secs / 1e6,
        latency_us: None,
        e2e_latency_us: None,
    })
}

async fn e2e(cli: &Cli, args: &LoadArgs) -> anyhow::Result<Report> {
    let epoch = Instant::now();
    let url = leader_url(cli).await?;
    let js = context(connect(&url).await?);
    let consumer = pull_consumer(&js, &cli.stream, consumer::DeliverPolicy::New).await?;
    let mut messages = consumer
        .stream()
        .max_messages_per_batch(512)
        .messages()
        .await?;
    let load = Load::new(epoch, args);
    let reader_load = load.clone();
    let reader = tokio::spawn(async move {
        let mut hist = new_histogram();
        loop {
            let next = tokio::time::timeout(Duration::from_secs(2), messages.next()).await;
            match next {
                Ok(Some(Ok(message))) => {
                    let now = epoch.elapsed().as_nanos() as u64;
                    if let Some(sent) = stamp_of(&message.payload)
                        && epoch + Duration::from_nanos(sent) >= reader_load.measure_from
                    {
                        record(&mut hist, Duration::from_nanos(now.saturating_sub(sent)));
                    }
                }
                Ok(Some(Err(_))) => {}
                // Quiet for 2 s after the publishers stopped: everything arrived.
                Ok(None) | Err(_) if reader_load.done.load(Ordering::Relaxed) => break,
                Ok(None) => break,
                Err(_) => {}
            }
        }
        hist
    });
    let (hist, span) = run_publishers(cli, args, load.clone(), "e2e").await?;
    let e2e = reader.await?;
    Ok(report(
        "e2e",
        args,
        &load,
        hist.len(),
        span,
        Latency::of(&hist),
        Latency::of(&e2e),
    ))
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let report = match &cli.command {
        Command::Setup { replicas } => return setup(&cli, *replicas).await,
        Command::Produce(args) => produce(&cli, args).await?,
        Command::Consume(args) => consume(&cli, args).await?,
        Command::E2e(args) => e2e(&cli, args).await?,
    };
    report.print(cli.json)
}
