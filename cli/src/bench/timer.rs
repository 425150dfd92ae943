//! `mq bench timer`: how late timer messages are delivered, optionally across a leader kill.
//!
//! ```text
//! a consumer of a fresh group subscribes to a fresh topic
//! lanes send --count timer messages; timer i is due at t0 + delay + i * spread / count
//!   (TIMER_DELIVER_MS; the due time and i travel in the body)
//! with --kill-cmd: at the middle of the due window, kill -9 the leader, then start it again
//! the consumer records each delivery's lateness (wall clock at delivery - due time) until
//!   every timer arrived or the window plus a grace period passed
//! ```
//!
//! With `--no-consume` it only sends and leaves the timers pending (for the memory figure:
//! `bench/timers.sh` reads the broker's RSS before and after).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::bail;
use clap::Args;
use hdrhistogram::Histogram;
use raftmq_client::{ConsumeFrom, Consumer, Message, SendOutcome};
use serde::Serialize;

use super::failover::{healthy_leader, run_command};
use super::stats::{Latency, new_histogram};
use super::{MAX_CLIENTS, MAX_LANES, POLL_PERIOD, ensure_topic, fresh_name, new_producer};
use crate::context::Ctx;

/// Most timers of one run.
pub const MAX_TIMERS: u64 = 10_000_000;
/// How long after the last due time the consumer keeps waiting for stragglers.
pub const DELIVERY_GRACE: Duration = Duration::from_secs(60);
/// Deliveries buffered between the consumer and the reader.
pub const DELIVERY_CHANNEL_CAPACITY: usize = 256;
/// Messages per pull of the consumer.
pub const PULL_BATCH: i32 = 256;
/// Body bytes that carry the due time and the timer's number (both u64, little-endian).
pub const HEADER_BYTES: usize = 16;
/// How long one send may take (it rides out the kill).
pub const SEND_TIMEOUT: Duration = Duration::from_secs(3);

#[derive(Args, Debug, Clone)]
pub struct TimerArgs {
    /// The topic (default: a fresh one per run).
    #[arg(short = 't', long)]
    pub topic: Option<String>,
    /// Timer messages.
    #[arg(short = 'c', long, default_value_t = 100_000)]
    pub count: u64,
    /// Seconds from the start of sending to the first due time.
    #[arg(long, default_value_t = 60.0)]
    pub delay: f64,
    /// Seconds over which the due times are spread.
    #[arg(long, default_value_t = 60.0)]
    pub spread: f64,
    /// Producers.
    #[arg(short = 'p', long, default_value_t = 2)]
    pub producers: usize,
    /// Sends in flight per producer.
    #[arg(short = 'w', long, default_value_t = 64)]
    pub window: usize,
    /// Body bytes (at least 16).
    #[arg(short = 's', long, default_value_t = 128)]
    pub size: usize,
    /// Queues of a topic created by the run.
    #[arg(long, default_value_t = 8)]
    pub queues: u32,
    /// Shell command that kill -9s the member at `$BENCH_MEMBER_ADDR`; run for the leader at
    /// the middle of the due window.
    #[arg(long, requires = "restart_cmd")]
    pub kill_cmd: Option<String>,
    /// Shell command that starts that member again.
    #[arg(long)]
    pub restart_cmd: Option<String>,
    /// Only send: leave the timers pending and do not wait for them.
    #[arg(long)]
    pub no_consume: bool,
}

/// What a run measured.
#[derive(Serialize, Debug)]
pub struct TimerReport {
    pub topic: String,
    pub timers: u64,
    pub sent: u64,
    pub send_failed: u64,
    pub send_unknown: u64,
    pub send_s: f64,
    pub sends_per_s: f64,
    /// The leader killed at the middle of the due window, and when (s after t0).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub killed: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kill_at_s: Option<f64>,
    /// Whether deliveries were awaited (not with `--no-consume`).
    pub consumed: bool,
    pub delivered: u64,
    pub duplicates: u64,
    /// Delivered before their due time (must be none).
    pub early: u64,
    /// Acknowledged but never delivered within the window plus the grace period.
    pub missing: u64,
    /// Delivery time minus due time, microseconds (early ones count as 0).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lateness_us: Option<Latency>,
}

impl TimerReport {
    fn text(&self) -> String {
        let mut out = format!(
            "timer {}: {} timers, {} sent in {:.1} s ({:.0}/s), {} failed, {} unknown\n",
            self.topic,
            self.timers,
            self.sent,
            self.send_s,
            self.sends_per_s,
            self.send_failed,
            self.send_unknown
        );
        if let (Some(member), Some(at)) = (&self.killed, self.kill_at_s) {
            out.push_str(&format!("  leader {member} killed at {at:.1} s\n"));
        }
        if !self.consumed {
            out.push_str("  not consumed: the timers stay pending\n");
            return out;
        }
        out.push_str(&format!(
            "  delivered {}  duplicates {}  early {}  missing {}\n",
            self.delivered, self.duplicates, self.early, self.missing
        ));
        if let Some(l) = &self.lateness_us {
            let ms = |us: u64| us as f64 / 1e3;
            out.push_str(&format!(
                "  lateness ms: p50 {:.1}  p90 {:.1}  p99 {:.1}  p99.9 {:.1}  max {:.1}  ({} samples)\n",
                ms(l.p50),
                ms(l.p90),
                ms(l.p99),
                ms(l.p999),
                ms(l.max),
                l.samples
            ));
        }
        out
    }
}

fn wall_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The body of timer `index`, due at `due_ms`.
fn body(due_ms: u64, index: u64, size: usize) -> bytes::Bytes {
    let mut body = bytes::BytesMut::with_capacity(size.max(HEADER_BYTES));
    body.extend_from_slice(&due_ms.to_le_bytes());
    body.extend_from_slice(&index.to_le_bytes());
    body.resize(size.max(HEADER_BYTES), b't');
    body.freeze()
}

/// The due time and number a body carries.
fn parse(body: &[u8]) -> Option<(u64, u64)> {
    let due: [u8; 8] = body.get(..8)?.try_into().ok()?;
    let index: [u8; 8] = body.get(8..HEADER_BYTES)?.try_into().ok()?;
    Some((u64::from_le_bytes(due), u64::from_le_bytes(index)))
}

/// What the delivery reader saw.
struct Seen {
    hist: Histogram<u64>,
    delivered: Vec<bool>,
    duplicates: u64,
    early: u64,
}

impl Seen {
    fn new(count: u64) -> Self {
        Seen {
            hist: new_histogram(),
            delivered: vec![false; count as usize],
            duplicates: 0,
            early: 0,
        }
    }

    fn delivery(&mut self, body: &[u8], now_ms: u64) {
        let Some((due, index)) = parse(body) else {
            return;
        };
        let Some(seen) = self.delivered.get_mut(index as usize) else {
            return;
        };
        if *seen {
            self.duplicates += 1;
            return;
        }
        *seen = true;
        if now_ms < due {
            self.early += 1;
        }
        let late_us = now_ms.saturating_sub(due).saturating_mul(1000);
        super::stats::record(&mut self.hist, Duration::from_micros(late_us));
    }

    fn count(&self) -> u64 {
        self.delivered.iter().filter(|d| **d).count() as u64
    }
}

impl TimerArgs {
    fn validate(&self) -> anyhow::Result<()> {
        if !(1..=MAX_TIMERS).contains(&self.count) {
            bail!("--count must be within 1..={MAX_TIMERS}");
        }
        if !(1..=MAX_CLIENTS).contains(&self.producers)
            || self.window == 0
            || self.producers.saturating_mul(self.window) > MAX_LANES
        {
            bail!(
                "--producers within 1..={MAX_CLIENTS}, window positive, lanes at most {MAX_LANES}"
            );
        }
        let ok = |s: f64| s.is_finite() && s >= 0.0 && s <= super::MAX_DURATION.as_secs_f64();
        if !ok(self.delay) || !ok(self.spread) {
            bail!("--delay and --spread must be within 0..=3600 s");
        }
        if self.size < HEADER_BYTES || self.size > super::MAX_SIZE || self.queues == 0 {
            bail!(
                "--size must be within {HEADER_BYTES}..={} and --queues positive",
                super::MAX_SIZE
            );
        }
        Ok(())
    }
}

pub async fn run(ctx: &Ctx, args: &TimerArgs) -> anyhow::Result<()> {
    args.validate()?;
    let topic = args
        .topic
        .clone()
        .unwrap_or_else(|| fresh_name("BenchTimer"));
    ensure_topic(ctx, &topic, args.queues).await?;
    let consumer = if args.no_consume {
        None
    } else {
        let (consumer, deliveries) = Consumer::builder()
            .namesrv(ctx.namesrv_list.clone())
            .credentials(ctx.credentials.clone())
            .tls(ctx.tls.clone())
            .group(fresh_name("bench_timer"))
            .subscribe(&topic, "*")
            .consume_from(ConsumeFrom::First)
            .consume_retry_topic(false)
            .pull_batch_size(PULL_BATCH)
            .consume_batch_size(PULL_BATCH as usize)
            .start_with_channel(DELIVERY_CHANNEL_CAPACITY)
            .await?;
        Some((consumer, deliveries))
    };

    let t0 = wall_ms();
    let started = Instant::now();
    let first_due = t0 + (args.delay * 1e3) as u64;
    let spread_ms = (args.spread * 1e3) as u64;
    let count = args.count;
    let due_of = move |index: u64| first_due + index.saturating_mul(spread_ms) / count;

    // Send.
    let next = Arc::new(AtomicU64::new(0));
    let sent = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let unknown = Arc::new(AtomicU64::new(0));
    let group = fresh_name("bench_timer_producer");
    let mut producers = Vec::with_capacity(args.producers);
    let mut lanes = tokio::task::JoinSet::new();
    for _ in 0..args.producers {
        let producer = new_producer(ctx, &group, args.window, SEND_TIMEOUT, None).await?;
        for _ in 0..args.window {
            let (producer, topic, next, sent, failed, unknown) = (
                producer.clone(),
                topic.clone(),
                next.clone(),
                sent.clone(),
                failed.clone(),
                unknown.clone(),
            );
            let size = args.size;
            lanes.spawn(async move {
                loop {
                    let index = next.fetch_add(1, Ordering::Relaxed);
                    if index >= count {
                        return;
                    }
                    let due = due_of(index);
                    let message = Message::new(&topic, body(due, index, size))
                        .with_deliver_time_ms(i64::try_from(due).unwrap_or(i64::MAX));
                    match SendOutcome::from(producer.send(message).await) {
                        SendOutcome::Ok(_) => sent.fetch_add(1, Ordering::Relaxed),
                        SendOutcome::Failed(_) => failed.fetch_add(1, Ordering::Relaxed),
                        SendOutcome::Unknown(_) => unknown.fetch_add(1, Ordering::Relaxed),
                    };
                }
            });
        }
        producers.push(producer);
    }
    while lanes.join_next().await.is_some() {}
    let send_s = started.elapsed().as_secs_f64();
    for producer in &producers {
        producer.shutdown().await;
    }
    let sent = sent.load(Ordering::Relaxed);
    eprintln!(
        "mq bench timer: {sent} of {} timers sent in {send_s:.1} s",
        args.count
    );

    let mut report = TimerReport {
        topic: topic.clone(),
        timers: args.count,
        sent,
        send_failed: failed.load(Ordering::Relaxed),
        send_unknown: unknown.load(Ordering::Relaxed),
        send_s,
        sends_per_s: sent as f64 / send_s.max(1e-9),
        killed: None,
        kill_at_s: None,
        consumed: consumer.is_some(),
        delivered: 0,
        duplicates: 0,
        early: 0,
        missing: 0,
        lateness_us: None,
    };
    let Some((consumer, mut deliveries)) = consumer else {
        emit(ctx, &report)?;
        return Ok(());
    };

    // Read deliveries; kill the leader at the middle of the due window.
    let mut seen = Seen::new(args.count);
    let kill_at = Duration::from_millis((first_due + spread_ms / 2).saturating_sub(t0));
    let deadline = Duration::from_millis(first_due + spread_ms - t0) + DELIVERY_GRACE;
    let mut kill = args.kill_cmd.clone().zip(args.restart_cmd.clone());
    let mut progress = tokio::time::interval(Duration::from_secs(5));
    while started.elapsed() < deadline && seen.count() < sent {
        tokio::select! {
            delivery = deliveries.recv() => {
                let Some(delivery) = delivery else { break };
                let now = wall_ms();
                for message in &delivery.messages {
                    seen.delivery(&message.body, now);
                }
                delivery.ack();
            }
            _ = progress.tick() => {
                eprintln!(
                    "mq bench timer: {:.0} s, {} delivered",
                    started.elapsed().as_secs_f64(),
                    seen.count()
                );
            }
            _ = tokio::time::sleep(POLL_PERIOD) => {}
        }
        if started.elapsed() >= kill_at
            && let Some((kill_cmd, restart_cmd)) = kill.take()
        {
            let leader = healthy_leader(ctx, &ctx_broker_name(ctx, &topic).await?).await?;
            let addr = leader.remoting_addr.clone();
            report.kill_at_s = Some(started.elapsed().as_secs_f64());
            run_command("kill", &kill_cmd, &addr).await?;
            eprintln!("mq bench timer: killed the leader {addr}");
            run_command("restart", &restart_cmd, &addr).await?;
            report.killed = Some(addr);
        }
    }
    consumer.shutdown().await;
    report.delivered = seen.count();
    report.duplicates = seen.duplicates;
    report.early = seen.early;
    report.missing = sent.saturating_sub(seen.count());
    report.lateness_us = Latency::of(&seen.hist);
    emit(ctx, &report)
}

/// The broker group serving `topic` (the first its route names).
async fn ctx_broker_name(ctx: &Ctx, topic: &str) -> anyhow::Result<String> {
    let admin = ctx.signed_admin()?;
    let route = admin.route(topic).await;
    admin.shutdown().await;
    match route? {
        Some(route) => match route.read_queues.first() {
            Some(queue) => Ok(queue.broker_name.clone()),
            None => bail!("topic {topic} has no queues"),
        },
        None => bail!("topic {topic} has no route"),
    }
}

fn emit(ctx: &Ctx, report: &TimerReport) -> anyhow::Result<()> {
    if ctx.json {
        crate::output::print_json(report)?;
    } else {
        crate::output::emit(&report.text());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_carry_due_time_and_number() {
        let b = body(1_700_000_000_123, 42, 64);
        assert_eq!(b.len(), 64);
        assert_eq!(parse(&b), Some((1_700_000_000_123, 42)));
        assert_eq!(parse(&b[..10]), None);
    }

    #[test]
    fn deliveries_count_lateness_duplicates_and_early_ones() {
        let mut seen = Seen::new(3);
        seen.delivery(&body(1_000, 0, 16), 1_250);
        seen.delivery(&body(1_000, 0, 16), 1_300);
        seen.delivery(&body(2_000, 1, 16), 1_900);
        seen.delivery(&body(2_000, 7, 16), 2_000);
        assert_eq!(seen.count(), 2);
        assert_eq!((seen.duplicates, seen.early), (1, 1));
        assert_eq!(seen.hist.len(), 2);
        let max_ms = seen.hist.max() / 1000;
        assert!((249..=251).contains(&max_ms), "{max_ms}");
    }
}
