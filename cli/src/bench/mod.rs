//! `mq bench`: load generators that measure a running cluster.
//!
//! - `produce`: N producers (one client each), each keeping W sends in flight (W "lanes",
//!   each sending and awaiting the acknowledgement again and again; W = 1 is a synchronous
//!   send), B messages per send (B > 1: one SEND_BATCH_MESSAGE). Throughput and per-send
//!   latency (hdrhistogram) over a measured span after a warm-up; bounded by `--duration`
//!   and `--count`. With `--transaction` each send is a transaction committed at once (half
//!   message, then END_TRANSACTION), for the transactional send rate.
//! - `consume`: N consumers of a fresh group read a topic from its first offset (optionally
//!   after preloading it) until `--count` messages or the duration; throughput.
//! - `e2e`: a consumer of a fresh group reads while producers send; the latency from the start
//!   of a send to the delivery of its message (the send time travels in the body).
//! - `timer`: timer messages due over a window, optionally with a leader kill in its middle;
//!   how late each is delivered (or, with `--no-consume`, just leaves them pending).
//! - `failover`: kills the leader (an external command) again and again under a steady load;
//!   the time from each kill to the next send acknowledged by another member, and, at the end,
//!   the acknowledged messages missing from the group (must be none).
//!
//! Every run prints a live progress line on stderr and a report (text, or one JSON document
//! with `--json`, the same fields as `bench/nats-client`).

mod consume;
mod failover;
mod load;
pub mod stats;
mod timer;

use std::process::ExitCode;
use std::time::Duration;

use anyhow::bail;
use clap::{Args, Subcommand};
use raftmq_client::Producer;
use raftmq_client::admin::TopicConfig;

use crate::context::Ctx;

/// Longest measured span of one run, whatever `--duration` says.
pub const MAX_DURATION: Duration = Duration::from_secs(3600);
/// Most lanes (producers x window) of one run.
pub const MAX_LANES: usize = 16_384;
/// Most producers or consumers of one run.
pub const MAX_CLIENTS: usize = 256;
/// Largest body.
pub const MAX_SIZE: usize = raftmq_client::message::MAX_MESSAGE_BYTES;
/// How long a new topic may take to appear in the NameServer's routes.
pub const TOPIC_READY_TIMEOUT: Duration = Duration::from_secs(30);
/// Poll period while waiting for a topic, an assignment or a member.
pub const POLL_PERIOD: Duration = Duration::from_millis(100);

#[derive(Subcommand, Debug)]
pub enum BenchCommand {
    /// Send as fast as the window allows; throughput and send latency.
    Produce(LoadArgs),
    /// Read a topic from its start with a fresh consumer group; throughput.
    Consume(consume::ConsumeArgs),
    /// Send and consume at once; send latency and send-to-delivery latency.
    E2e(LoadArgs),
    /// Kill the leader under load, repeatedly: time to the next acknowledged send, and
    /// acknowledged messages lost (must be zero).
    Failover(failover::FailoverArgs),
    /// Timer messages due over a window: how late each is delivered, optionally across a
    /// leader kill.
    Timer(timer::TimerArgs),
}

/// The shape of a load: who sends, how much at once, for how long.
#[derive(Args, Debug, Clone)]
pub struct LoadArgs {
    /// The topic (created with `--queues` queues if it does not exist).
    #[arg(short = 't', long, default_value = "BenchTopic")]
    pub topic: String,
    /// Producers, each its own client (own connections).
    #[arg(short = 'p', long, default_value_t = 1)]
    pub producers: usize,
    /// Sends in flight per producer (1: synchronous, one at a time).
    #[arg(short = 'w', long, default_value_t = 1)]
    pub window: usize,
    /// Messages per send (more than 1: batch sends).
    #[arg(short = 'b', long, default_value_t = 1)]
    pub batch: usize,
    /// Body bytes of each message.
    #[arg(short = 's', long, default_value_t = 1024)]
    pub size: usize,
    /// Measured seconds (the run ends earlier once `--count` messages are measured).
    #[arg(short = 'd', long, default_value_t = 10.0)]
    pub duration: f64,
    /// Messages to measure (0: bounded by the duration only).
    #[arg(short = 'c', long, default_value_t = 0)]
    pub count: u64,
    /// Seconds of unmeasured load before the measured span.
    #[arg(long, default_value_t = 1.0)]
    pub warmup: f64,
    /// Queues of the topic when it is created.
    #[arg(long, default_value_t = 8)]
    pub queues: u32,
    /// Deadline of one send attempt, ms.
    #[arg(long, default_value_t = 3000)]
    pub send_timeout_ms: u64,
    /// Messages per second in all (0: as fast as the window allows). A steady rate, for soaks
    /// (bench/soak.sh): each lane sends at its share of it.
    #[arg(long, default_value_t = 0.0)]
    pub rate: f64,
    /// No progress line.
    #[arg(short = 'q', long)]
    pub quiet: bool,
    /// Send each message as a transaction committed at once (half message, local transaction
    /// that commits, END_TRANSACTION); needs `--batch 1`.
    #[arg(long)]
    pub transaction: bool,
}

impl LoadArgs {
    pub fn validate(&self) -> anyhow::Result<()> {
        if !(1..=MAX_CLIENTS).contains(&self.producers) {
            bail!("--producers must be within 1..={MAX_CLIENTS}");
        }
        if self.window == 0 || self.producers.saturating_mul(self.window) > MAX_LANES {
            bail!("--window must be positive and producers x window at most {MAX_LANES}");
        }
        if !(1..=raftmq_client::producer::MAX_BATCH_MESSAGES).contains(&self.batch) {
            bail!(
                "--batch must be within 1..={}",
                raftmq_client::producer::MAX_BATCH_MESSAGES
            );
        }
        if self.size == 0 || self.size > MAX_SIZE || self.size.saturating_mul(self.batch) > MAX_SIZE
        {
            bail!("--size must be positive and size x batch at most {MAX_SIZE} bytes");
        }
        if !(self.rate.is_finite() && self.rate >= 0.0) {
            bail!("--rate must be a number of messages per second, 0 or more");
        }
        let times_ok = self.duration.is_finite()
            && self.duration > 0.0
            && self.warmup.is_finite()
            && self.warmup >= 0.0;
        if !times_ok {
            bail!("--duration must be positive and --warmup not negative");
        }
        if self.count != 0 && self.count < self.batch as u64 {
            bail!("--count must be 0 (no bound) or at least --batch");
        }
        if self.transaction && self.batch != 1 {
            bail!("--transaction sends one message at a time: use --batch 1");
        }
        if self.queues == 0 || self.send_timeout_ms == 0 {
            bail!("--queues and --send-timeout-ms must be positive");
        }
        Ok(())
    }

    /// Time between two sends of one lane at `--rate`; `None`: no pacing.
    pub fn lane_period(&self) -> Option<Duration> {
        if self.rate <= 0.0 {
            return None;
        }
        let lanes = (self.producers * self.window) as f64;
        Some(Duration::from_secs_f64(
            lanes * self.batch as f64 / self.rate,
        ))
    }

    pub fn duration(&self) -> Duration {
        Duration::from_secs_f64(self.duration).min(MAX_DURATION)
    }

    pub fn warmup(&self) -> Duration {
        Duration::from_secs_f64(self.warmup).min(MAX_DURATION)
    }
}

pub async fn run(ctx: &Ctx, command: BenchCommand) -> anyhow::Result<ExitCode> {
    let report = match command {
        BenchCommand::Produce(args) => load::produce(ctx, &args).await?,
        BenchCommand::E2e(args) => load::e2e(ctx, &args).await?,
        BenchCommand::Consume(args) => consume::run(ctx, &args).await?,
        BenchCommand::Failover(args) => return failover::run(ctx, &args).await,
        BenchCommand::Timer(args) => {
            timer::run(ctx, &args).await?;
            return Ok(ExitCode::SUCCESS);
        }
    };
    if ctx.json {
        crate::output::print_json(&report)?;
    } else {
        crate::output::emit(&report.text());
    }
    Ok(ExitCode::SUCCESS)
}

/// Creates `topic` with `queues` queues unless it exists, and waits until the NameServer
/// routes it; returns how many readable queues it has.
pub async fn ensure_topic(ctx: &Ctx, topic: &str, queues: u32) -> anyhow::Result<usize> {
    let admin = ctx.signed_admin()?;
    let result = async {
        if admin.route(topic).await?.is_none() {
            admin
                .create_topic(&TopicConfig::new(topic.to_owned(), queues), None)
                .await?;
        }
        let deadline = tokio::time::Instant::now() + TOPIC_READY_TIMEOUT;
        loop {
            if let Some(route) = admin.route(topic).await? {
                return Ok(route.read_queues.len());
            }
            if tokio::time::Instant::now() > deadline {
                bail!("topic {topic} has no route after {TOPIC_READY_TIMEOUT:?}");
            }
            tokio::time::sleep(POLL_PERIOD).await;
        }
    }
    .await;
    admin.shutdown().await;
    result
}

/// A producer for the bench (its own client, so its own connections). `failover_wait`: how
/// long a send rides out a leader change (the client's default when `None`).
pub async fn new_producer(
    ctx: &Ctx,
    group: &str,
    window: usize,
    send_timeout: Duration,
    failover_wait: Option<Duration>,
) -> anyhow::Result<Producer> {
    let mut builder = Producer::builder()
        .namesrv(ctx.namesrv_list.clone())
        .credentials(ctx.credentials.clone())
        .tls(ctx.tls.clone())
        .group(group)
        .send_timeout(send_timeout)
        .async_window(window.clamp(1, raftmq_client::producer::MAX_ASYNC_WINDOW));
    if let Some(wait) = failover_wait {
        builder = builder.failover_wait(wait);
    }
    Ok(builder.build().await?)
}

/// A group name no earlier run used.
pub fn fresh_name(prefix: &str) -> String {
    let millis = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    format!("{prefix}_{}_{millis}", std::process::id())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser, Debug)]
    struct Harness {
        #[command(subcommand)]
        command: BenchCommand,
    }

    fn load(args: &[&str]) -> LoadArgs {
        let mut argv = vec!["mq", "produce"];
        argv.extend_from_slice(args);
        match Harness::try_parse_from(argv).unwrap().command {
            BenchCommand::Produce(args) => args,
            other => panic!("parsed {other:?}"),
        }
    }

    #[test]
    fn load_shapes_parse_and_are_checked() {
        let args = load(&["-p", "4", "-w", "256", "-s", "100", "-d", "5"]);
        assert_eq!((args.producers, args.window, args.size), (4, 256, 100));
        assert_eq!(args.duration(), Duration::from_secs(5));
        args.validate().unwrap();

        assert!(load(&["-w", "0"]).validate().is_err());
        assert!(load(&["-p", "100", "-w", "1000"]).validate().is_err());
        assert!(load(&["-b", "4", "-s", "2000000"]).validate().is_err());
        assert!(load(&["-d", "0"]).validate().is_err());
        assert!(load(&["--warmup=-1"]).validate().is_err());
        assert!(load(&["-s", "0"]).validate().is_err());
        // A count smaller than one batch could never be sent.
        assert!(load(&["-b", "64", "-c", "10"]).validate().is_err());
        load(&["-b", "64", "-c", "64"]).validate().unwrap();
    }

    #[test]
    fn a_rate_paces_each_lane_at_its_share() {
        assert_eq!(load(&[]).lane_period(), None);
        // 2 producers x 4 lanes, 10 messages per send, 1,000 messages/s: each lane every 80 ms.
        let paced = load(&["-p", "2", "-w", "4", "-b", "10", "--rate", "1000"]);
        paced.validate().unwrap();
        assert_eq!(paced.lane_period(), Some(Duration::from_millis(80)));
        assert!(load(&["--rate=-5"]).validate().is_err());
        assert!(load(&["--rate", "NaN"]).validate().is_err());
    }

    #[test]
    fn fresh_names_differ_by_prefix_and_time() {
        assert!(fresh_name("bench").starts_with("bench_"));
        assert_ne!(fresh_name("a"), fresh_name("b"));
    }
}
