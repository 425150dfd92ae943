//! `mq bench produce` and `mq bench e2e`: lanes of sends.
//!
//! A lane is one task that sends (one message, or a batch) and awaits the acknowledgement,
//! again and again, until the run's [`Bounds`] end it; `window` lanes per producer keep that
//! many sends in flight. Each lane keeps its own histogram; they are merged at the end.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::bail;
use hdrhistogram::Histogram;
use raftmq_client::{
    ConsumeFrom, Consumer, Message, MessageQueue, Producer, SendError, SendOutcome, SendResult,
    TransactionState,
};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::stats::{
    Bounds, Counters, Latency, Report, new_histogram, record, spawn_progress, stamp_of,
    stamped_body,
};
use super::{LoadArgs, POLL_PERIOD, ensure_topic, fresh_name, new_producer};
use crate::context::Ctx;

/// Failures described on stderr before the rest are only counted.
pub const MAX_FAILURES_SHOWN: u64 = 3;
/// How long `e2e` waits for the group to take every queue before sending.
pub const ASSIGNMENT_TIMEOUT: Duration = Duration::from_secs(30);
/// How long `e2e` waits, after the last send, for the last deliveries.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
/// Deliveries buffered between the consumer and the `e2e` reader.
pub const DELIVERY_CHANNEL_CAPACITY: usize = 256;
/// Messages per pull of the `e2e` consumer.
pub const E2E_PULL_BATCH: i32 = 256;

/// One acknowledged message (kept for the failover loss check).
#[derive(Debug, Clone)]
pub struct Acked {
    pub queue: MessageQueue,
    pub queue_offset: i64,
    pub msg_id: String,
}

/// Tells the failover loop when the first send after a kill is acknowledged by another member.
#[derive(Debug, Default)]
pub struct AckWatch {
    armed: Mutex<Option<Armed>>,
}

#[derive(Debug)]
struct Armed {
    after: Instant,
    not_from: String,
    first: Option<Instant>,
}

impl AckWatch {
    /// Watches for the first acknowledgement after `after` from a member other than `not_from`.
    pub fn arm(&self, after: Instant, not_from: &str) {
        *self.lock() = Some(Armed {
            after,
            not_from: not_from.to_owned(),
            first: None,
        });
    }

    /// When that acknowledgement came, if it has.
    pub fn first(&self) -> Option<Instant> {
        self.lock().as_ref().and_then(|armed| armed.first)
    }

    fn acknowledged(&self, at: Instant, by: &str) {
        let mut armed = self.lock();
        if let Some(armed) = armed.as_mut()
            && armed.first.is_none()
            && at > armed.after
            && by != armed.not_from
        {
            armed.first = Some(at);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Armed>> {
        self.armed
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }
}

/// What a finished lane hands back.
pub struct LaneResult {
    pub hist: Histogram<u64>,
    /// Every acknowledged message, when the caller watches acknowledgements (failover).
    pub acked: Vec<Acked>,
}

/// One lane: sends until `bounds` ends the run.
pub async fn lane(
    producer: Producer,
    topic: String,
    args: LoadArgs,
    bounds: Arc<Bounds>,
    counters: Arc<Counters>,
    watch: Option<Arc<AckWatch>>,
) -> LaneResult {
    let mut hist = new_histogram();
    let mut acked = Vec::new();
    let batch = args.batch as u64;
    let mut pace = args.lane_period().map(|period| {
        let mut ticks = tokio::time::interval(period);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticks
    });
    while let Some(measured) = bounds.next(batch) {
        if let Some(ticks) = &mut pace {
            ticks.tick().await;
        }
        let started = Instant::now();
        let result = if args.transaction {
            let message = Message::new(&topic, stamped_body(bounds.epoch, args.size));
            producer
                .send_in_transaction(message, |_| async { TransactionState::Commit })
                .await
                .and_then(|done| match done.ended {
                    Ok(()) => Ok(done.send),
                    // Stored as a half message, its commit not acknowledged: unknown.
                    Err(source) => Err(SendError {
                        source,
                        attempts: done.send.attempts,
                        earlier_attempt_unknown: true,
                    }),
                })
        } else if args.batch == 1 {
            producer
                .send(Message::new(&topic, stamped_body(bounds.epoch, args.size)))
                .await
        } else {
            let messages = (0..args.batch)
                .map(|_| Message::new(&topic, stamped_body(bounds.epoch, args.size)))
                .collect();
            producer.send_batch(messages).await
        };
        let elapsed = started.elapsed();
        match SendOutcome::from(result) {
            SendOutcome::Ok(sent) => {
                counters.total.fetch_add(batch, Ordering::Relaxed);
                if measured {
                    record(&mut hist, elapsed);
                    counters.messages.fetch_add(batch, Ordering::Relaxed);
                }
                if let Some(watch) = &watch {
                    watch.acknowledged(Instant::now(), &sent.broker_addr);
                    keep(&mut acked, sent);
                }
            }
            SendOutcome::Failed(error) => {
                if counters.errors.fetch_add(1, Ordering::Relaxed) < MAX_FAILURES_SHOWN {
                    eprintln!("mq bench: send failed: {error}");
                }
            }
            SendOutcome::Unknown(error) => {
                if counters.unknown.fetch_add(1, Ordering::Relaxed) < MAX_FAILURES_SHOWN {
                    eprintln!("mq bench: send outcome unknown: {error}");
                }
            }
        }
    }
    LaneResult { hist, acked }
}

fn keep(acked: &mut Vec<Acked>, sent: SendResult) {
    for (index, msg_id) in sent.msg_ids.into_iter().enumerate() {
        acked.push(Acked {
            queue: sent.queue.clone(),
            queue_offset: sent.queue_offset + index as i64,
            msg_id,
        });
    }
}

/// Producers and their lanes, started.
pub struct Lanes {
    pub producers: Vec<Producer>,
    pub tasks: Vec<tokio::task::JoinHandle<LaneResult>>,
}

impl Lanes {
    pub async fn start(
        ctx: &Ctx,
        args: &LoadArgs,
        bounds: &Arc<Bounds>,
        counters: &Arc<Counters>,
        watch: Option<&Arc<AckWatch>>,
        failover_wait: Option<Duration>,
    ) -> anyhow::Result<Lanes> {
        let group = fresh_name("bench_producer");
        let send_timeout = Duration::from_millis(args.send_timeout_ms);
        let mut producers = Vec::with_capacity(args.producers);
        for _ in 0..args.producers {
            let producer =
                new_producer(ctx, &group, args.window, send_timeout, failover_wait).await?;
            // Fetch the route before the clock starts.
            producer.route(&args.topic).await?;
            producers.push(producer);
        }
        let mut tasks = Vec::with_capacity(args.producers * args.window);
        for producer in &producers {
            for _ in 0..args.window {
                tasks.push(tokio::spawn(lane(
                    producer.clone(),
                    args.topic.clone(),
                    args.clone(),
                    bounds.clone(),
                    counters.clone(),
                    watch.cloned(),
                )));
            }
        }
        Ok(Lanes { producers, tasks })
    }

    /// Waits for every lane; returns the merged histogram, the acknowledged sends kept and
    /// when the last lane ended.
    pub async fn finish(self) -> anyhow::Result<(Histogram<u64>, Vec<Acked>, Instant)> {
        let mut hist = new_histogram();
        let mut acked = Vec::new();
        for task in self.tasks {
            let result = task.await?;
            hist.add(result.hist)?;
            acked.extend(result.acked);
        }
        let ended = Instant::now();
        for producer in &self.producers {
            producer.shutdown().await;
        }
        Ok((hist, acked, ended))
    }
}

fn report(
    mode: &'static str,
    args: &LoadArgs,
    counters: &Counters,
    span: Duration,
    send: &Histogram<u64>,
    e2e: Option<&Histogram<u64>>,
) -> Report {
    let messages = counters.messages.load(Ordering::Relaxed);
    let secs = span.as_secs_f64().max(1e-9);
    let bytes = messages * args.size as u64;
    Report {
        system: "raftmq",
        mode,
        topic: args.topic.clone(),
        producers: args.producers,
        window: args.window,
        batch: args.batch,
        size: args.size,
        messages,
        total_messages: counters.total.load(Ordering::Relaxed),
        bytes,
        errors: counters.errors.load(Ordering::Relaxed),
        unknown: counters.unknown.load(Ordering::Relaxed),
        elapsed_s: secs,
        msgs_per_s: messages as f64 / secs,
        mb_per_s: bytes as f64 / secs / 1e6,
        latency_us: Latency::of(send),
        e2e_latency_us: e2e.and_then(Latency::of),
    }
}

pub async fn produce(ctx: &Ctx, args: &LoadArgs) -> anyhow::Result<Report> {
    args.validate()?;
    ensure_topic(ctx, &args.topic, args.queues).await?;
    let counters = Arc::new(Counters::default());
    let bounds = Bounds::new(Instant::now(), args.warmup(), args.duration(), args.count);
    let lanes = Lanes::start(ctx, args, &bounds, &counters, None, None).await?;
    let stop = CancellationToken::new();
    let tracker = TaskTracker::new();
    if !args.quiet {
        spawn_progress(
            "produce".to_owned(),
            counters.clone(),
            stop.clone(),
            &tracker,
        );
    }
    let finished = lanes.finish().await;
    stop.cancel();
    tracker.close();
    tracker.wait().await;
    let (hist, _, ended) = finished?;
    let span = ended.saturating_duration_since(bounds.measure_from);
    Ok(report("produce", args, &counters, span, &hist, None))
}

/// Waits until `consumer` holds every queue of `topic`.
async fn wait_for_assignment(
    consumer: &Consumer,
    topic: &str,
    queues: usize,
) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + ASSIGNMENT_TIMEOUT;
    loop {
        let held = consumer
            .assigned_queues()
            .iter()
            .filter(|queue| queue.topic == topic)
            .count();
        if held >= queues {
            return Ok(());
        }
        if tokio::time::Instant::now() > deadline {
            bail!("the e2e consumer holds {held} of {queues} queues after {ASSIGNMENT_TIMEOUT:?}");
        }
        tokio::time::sleep(POLL_PERIOD).await;
    }
}

pub async fn e2e(ctx: &Ctx, args: &LoadArgs) -> anyhow::Result<Report> {
    args.validate()?;
    let queues = ensure_topic(ctx, &args.topic, args.queues).await?;
    let epoch = Instant::now();
    let (consumer, mut deliveries) = Consumer::builder()
        .namesrv(ctx.namesrv_list.clone())
        .credentials(ctx.credentials.clone())
        .tls(ctx.tls.clone())
        .group(fresh_name("bench_e2e"))
        .subscribe(&args.topic, "*")
        .consume_from(ConsumeFrom::Last)
        .consume_retry_topic(false)
        .pull_batch_size(E2E_PULL_BATCH)
        .consume_batch_size(E2E_PULL_BATCH as usize)
        .start_with_channel(DELIVERY_CHANNEL_CAPACITY)
        .await?;
    wait_for_assignment(&consumer, &args.topic, queues).await?;

    let counters = Arc::new(Counters::default());
    let bounds = Bounds::new(epoch, args.warmup(), args.duration(), args.count);
    let reader_counters = counters.clone();
    let reader_bounds = bounds.clone();
    let reader_stop = CancellationToken::new();
    let reader_done = reader_stop.clone();
    let reader = tokio::spawn(async move {
        let mut hist = new_histogram();
        let measure_from = reader_bounds.measure_from.saturating_duration_since(epoch);
        loop {
            let delivery = tokio::select! {
                _ = reader_done.cancelled() => break,
                delivery = deliveries.recv() => match delivery {
                    Some(delivery) => delivery,
                    None => break,
                },
            };
            let now = epoch.elapsed();
            for message in &delivery.messages {
                if let Some(sent) = stamp_of(&message.body)
                    && sent >= measure_from
                {
                    record(&mut hist, now.saturating_sub(sent));
                    reader_counters.delivered.fetch_add(1, Ordering::Relaxed);
                }
            }
            delivery.ack();
        }
        hist
    });

    let lanes = Lanes::start(ctx, args, &bounds, &counters, None, None).await?;
    let stop = CancellationToken::new();
    let tracker = TaskTracker::new();
    if !args.quiet {
        spawn_progress("e2e".to_owned(), counters.clone(), stop.clone(), &tracker);
    }
    let finished = lanes.finish().await;
    // Let the last acknowledged messages arrive (bounded).
    let sent = counters.messages.load(Ordering::Relaxed);
    let drain_until = tokio::time::Instant::now() + DRAIN_TIMEOUT;
    while counters.delivered.load(Ordering::Relaxed) < sent
        && tokio::time::Instant::now() < drain_until
    {
        tokio::time::sleep(POLL_PERIOD).await;
    }
    reader_stop.cancel();
    stop.cancel();
    tracker.close();
    tracker.wait().await;
    let e2e_hist = reader.await?;
    consumer.shutdown().await;
    let (hist, _, ended) = finished?;
    let span = ended.saturating_duration_since(bounds.measure_from);
    let delivered = counters.delivered.load(Ordering::Relaxed);
    if delivered < sent {
        eprintln!(
            "mq bench: {delivered} of {sent} measured messages delivered within the drain time"
        );
    }
    Ok(report("e2e", args, &counters, span, &hist, Some(&e2e_hist)))
}
