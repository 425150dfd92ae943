//! `mq bench failover`: kill -9 the leader under a steady load, again and again.
//!
//! ```text
//! steady load (lanes, acknowledgements watched and kept)
//! repeat --kills times:
//!   wait until the group is healthy (a leader, every follower close behind), then --settle s
//!   t0 = now; run --kill-cmd for the leader       (BENCH_MEMBER_ADDR = its remoting address)
//!   wait for the first send after t0 acknowledged by another member: failover = that - t0
//!   run --restart-cmd for the killed member, wait until it has caught up
//! stop the load; read every queue back from the leader: every acknowledged message must be
//! at its offset (missing ones are counted, and make the exit code non-zero)
//! ```
//!
//! The kill and restart commands come from whoever started the cluster (they know the pids):
//! `bench/failover.sh` passes its own. The group's Raft term before and after tells how many
//! elections happened; more than about one or two per kill means spurious ones.

use std::collections::{BTreeMap, BTreeSet};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow, bail};
use clap::Args;
use raftmq_client::MessageQueue;
use serde::Serialize;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::load::{AckWatch, Acked, Lanes};
use super::stats::{Bounds, Counters, spawn_progress};
use super::{LoadArgs, MAX_DURATION, POLL_PERIOD, ensure_topic};
use crate::context::{Ctx, MemberInfo};

/// Most kills of one run.
pub const MAX_KILLS: usize = 100;
/// Most time a kill or restart command may take.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);
/// A follower at most this many entries behind the leader counts as caught up.
pub const CAUGHT_UP_LAG_ENTRIES: u64 = 64;
/// Most time the group may take to become healthy (before a kill, after a restart).
pub const HEALTHY_TIMEOUT: Duration = Duration::from_secs(120);
/// Most time the load may take to be acknowledged again after a kill.
pub const FAILOVER_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a send rides out a leader change before failures count as retries.
pub const FAILOVER_WAIT: Duration = Duration::from_secs(30);
/// Poll period while waiting for the first acknowledgement after a kill.
pub const ACK_POLL: Duration = Duration::from_millis(2);

#[derive(Args, Debug, Clone)]
pub struct FailoverArgs {
    /// The topic (created with 8 queues if it does not exist).
    #[arg(short = 't', long, default_value = "BenchFailover")]
    pub topic: String,
    /// The broker group to kill the leader of (default: the topic's only group).
    #[arg(long)]
    pub broker_name: Option<String>,
    /// Leader kills.
    #[arg(long, default_value_t = 10)]
    pub kills: usize,
    /// Shell command that kill -9s the member whose remoting address is in
    /// `$BENCH_MEMBER_ADDR` (and returns once it is dead).
    #[arg(long)]
    pub kill_cmd: String,
    /// Shell command that starts that member again (same `$BENCH_MEMBER_ADDR`), in the
    /// background, and returns.
    #[arg(long)]
    pub restart_cmd: String,
    /// Producers of the steady load.
    #[arg(short = 'p', long, default_value_t = 1)]
    pub producers: usize,
    /// Sends in flight per producer.
    #[arg(short = 'w', long, default_value_t = 4)]
    pub window: usize,
    /// Messages per send (more than 1: batch sends, for a failover under full load).
    #[arg(short = 'b', long, default_value_t = 1)]
    pub batch: usize,
    /// Body bytes.
    #[arg(short = 's', long, default_value_t = 1024)]
    pub size: usize,
    /// Seconds of steady load before each kill.
    #[arg(long, default_value_t = 3.0)]
    pub settle: f64,
    /// Deadline of one send attempt, ms.
    #[arg(long, default_value_t = 3000)]
    pub send_timeout_ms: u64,
    /// No progress line.
    #[arg(short = 'q', long)]
    pub quiet: bool,
}

/// `mq bench failover --json`.
#[derive(Serialize, Debug)]
pub struct FailoverReport {
    pub kills: usize,
    /// Each kill's time to the next send acknowledged by another member, ms.
    pub failover_ms: Vec<f64>,
    pub failover_median_ms: f64,
    pub failover_max_ms: f64,
    /// The Raft term before the first kill and after the last restart.
    pub term_before: u64,
    pub term_after: u64,
    pub acknowledged: u64,
    /// Acknowledged messages not found at their offset afterwards (must be 0).
    pub missing: u64,
    pub failed_sends: u64,
    pub unknown_sends: u64,
}

fn median(sorted: &[f64]) -> f64 {
    match sorted.len() {
        0 => 0.0,
        n if n % 2 == 1 => sorted[n / 2],
        n => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
    }
}

/// Runs `command` with `sh -c`, the member's address in `$BENCH_MEMBER_ADDR`.
pub(super) async fn run_command(
    what: &str,
    command: &str,
    member_addr: &str,
) -> anyhow::Result<()> {
    let mut child = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(command)
        .env("BENCH_MEMBER_ADDR", member_addr)
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting the {what} command"))?;
    let status = tokio::time::timeout(COMMAND_TIMEOUT, child.wait())
        .await
        .map_err(|_| anyhow!("the {what} command ran over {COMMAND_TIMEOUT:?}"))??;
    if !status.success() {
        bail!("the {what} command failed ({status}) for {member_addr}");
    }
    Ok(())
}

/// The group's leader, once every voter answers and is caught up.
pub(super) async fn healthy_leader(ctx: &Ctx, broker_name: &str) -> anyhow::Result<MemberInfo> {
    let deadline = tokio::time::Instant::now() + HEALTHY_TIMEOUT;
    loop {
        let problem = match ctx.group(broker_name).await {
            Ok(group) => {
                let infos: Vec<&MemberInfo> = group
                    .members
                    .iter()
                    .filter_map(|m| m.info.as_ref().ok())
                    .collect();
                let leader = infos
                    .iter()
                    .filter(|info| info.is_leader())
                    .max_by_key(|info| info.term);
                match leader {
                    Some(leader) => {
                        let behind: Vec<u64> = leader
                            .voters
                            .iter()
                            .filter(|id| **id != leader.node_id)
                            .filter(|id| {
                                leader
                                    .lag_of(**id)
                                    .is_none_or(|lag| lag > CAUGHT_UP_LAG_ENTRIES)
                            })
                            .copied()
                            .collect();
                        if behind.is_empty() {
                            return Ok((*leader).clone());
                        }
                        format!("members {behind:?} are not caught up")
                    }
                    None => "no leader".to_owned(),
                }
            }
            Err(error) => format!("{error:#}"),
        };
        if tokio::time::Instant::now() > deadline {
            bail!("the group is not healthy after {HEALTHY_TIMEOUT:?}: {problem}");
        }
        tokio::time::sleep(POLL_PERIOD).await;
    }
}

/// Counts acknowledged messages that are not at their offset on the leader now.
async fn count_missing(ctx: &Ctx, acked: &[Acked]) -> anyhow::Result<u64> {
    let mut by_queue: BTreeMap<&MessageQueue, Vec<&Acked>> = BTreeMap::new();
    for ack in acked {
        by_queue.entry(&ack.queue).or_default().push(ack);
    }
    let admin = ctx.signed_admin()?;
    let leaders = ctx.leaders().await?;
    let mut missing = 0u64;
    for (queue, acks) in by_queue {
        let addr = leaders
            .get(&queue.broker_name)
            .ok_or_else(|| anyhow!("no leader listed for {}", queue.broker_name))?;
        let first = acks.iter().map(|a| a.queue_offset).min().unwrap_or(0);
        let last = acks.iter().map(|a| a.queue_offset).max().unwrap_or(0);
        let span = usize::try_from(last - first + 1).unwrap_or(usize::MAX);
        let stored = admin
            .read_queue(addr, queue, first, span)
            .await
            .with_context(|| format!("reading {queue:?} back from {addr}"))?;
        let at: BTreeMap<i64, &str> = stored
            .iter()
            .map(|m| (m.queue_offset, m.msg_id.as_str()))
            .collect();
        missing += acks
            .iter()
            .filter(|a| at.get(&a.queue_offset) != Some(&a.msg_id.as_str()))
            .count() as u64;
    }
    admin.shutdown().await;
    Ok(missing)
}

pub async fn run(ctx: &Ctx, args: &FailoverArgs) -> anyhow::Result<ExitCode> {
    if !(1..=MAX_KILLS).contains(&args.kills) {
        bail!("--kills must be within 1..={MAX_KILLS}");
    }
    if !(args.settle.is_finite() && args.settle >= 0.0) {
        bail!("--settle must not be negative");
    }
    let load_args = LoadArgs {
        topic: args.topic.clone(),
        producers: args.producers,
        window: args.window,
        batch: args.batch,
        size: args.size,
        duration: MAX_DURATION.as_secs_f64(),
        count: 0,
        warmup: 0.0,
        queues: 8,
        send_timeout_ms: args.send_timeout_ms,
        rate: 0.0,
        quiet: args.quiet,
        transaction: false,
    };
    load_args.validate()?;
    ensure_topic(ctx, &args.topic, load_args.queues).await?;
    let broker_name = match &args.broker_name {
        Some(name) => name.clone(),
        None => {
            let groups: BTreeSet<String> = ctx.leaders().await?.into_keys().collect();
            match groups.len() {
                1 => groups.into_iter().next().unwrap_or_default(),
                n => bail!("{n} broker groups: say which with --broker-name"),
            }
        }
    };
    let term_before = healthy_leader(ctx, &broker_name).await?.term;

    let counters = Arc::new(Counters::default());
    let bounds = Bounds::new(Instant::now(), Duration::ZERO, MAX_DURATION, 0);
    let watch = Arc::new(AckWatch::default());
    let lanes = Lanes::start(
        ctx,
        &load_args,
        &bounds,
        &counters,
        Some(&watch),
        Some(FAILOVER_WAIT),
    )
    .await?;
    let stop = CancellationToken::new();
    let tracker = TaskTracker::new();
    if !args.quiet {
        spawn_progress(
            "failover load".to_owned(),
            counters.clone(),
            stop.clone(),
            &tracker,
        );
    }
    let kills = kill_loop(ctx, args, &broker_name, &watch).await;
    bounds.stop();
    let finished = lanes.finish().await;
    stop.cancel();
    tracker.close();
    tracker.wait().await;
    let mut failover_ms = kills?;
    let (_, acked, _) = finished?;
    let term_after = healthy_leader(ctx, &broker_name).await?.term;
    let missing = count_missing(ctx, &acked).await?;

    let in_order = failover_ms.clone();
    failover_ms.sort_by(f64::total_cmp);
    let report = FailoverReport {
        kills: args.kills,
        failover_median_ms: median(&failover_ms),
        failover_max_ms: failover_ms.last().copied().unwrap_or(0.0),
        failover_ms: in_order,
        term_before,
        term_after,
        acknowledged: acked.len() as u64,
        missing,
        failed_sends: counters.errors.load(Ordering::Relaxed),
        unknown_sends: counters.unknown.load(Ordering::Relaxed),
    };
    if ctx.json {
        crate::output::print_json(&report)?;
    } else {
        let each: Vec<String> = report
            .failover_ms
            .iter()
            .map(|ms| format!("{ms:.0}"))
            .collect();
        outln!(
            "failover over {} kills: median {:.0} ms, max {:.0} ms (each: {})",
            report.kills,
            report.failover_median_ms,
            report.failover_max_ms,
            each.join(" ")
        );
        outln!(
            "raft term {} -> {} ({} elections for {} kills); {} acknowledged, {} missing; {} failed, {} unknown sends",
            report.term_before,
            report.term_after,
            report.term_after.saturating_sub(report.term_before),
            report.kills,
            report.acknowledged,
            report.missing,
            report.failed_sends,
            report.unknown_sends
        );
    }
    Ok(if missing == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// The kills; each one's failover time in ms.
async fn kill_loop(
    ctx: &Ctx,
    args: &FailoverArgs,
    broker_name: &str,
    watch: &AckWatch,
) -> anyhow::Result<Vec<f64>> {
    let settle = Duration::from_secs_f64(args.settle);
    let mut times = Vec::with_capacity(args.kills);
    for kill in 1..=args.kills {
        let leader = healthy_leader(ctx, broker_name).await?;
        tokio::time::sleep(settle).await;
        let victim = leader.remoting_addr.clone();
        let killed_at = Instant::now();
        watch.arm(killed_at, &victim);
        run_command("kill", &args.kill_cmd, &victim).await?;
        let deadline = killed_at + FAILOVER_TIMEOUT;
        let acknowledged = loop {
            if let Some(first) = watch.first() {
                break first;
            }
            if Instant::now() > deadline {
                bail!("kill {kill}: no send acknowledged within {FAILOVER_TIMEOUT:?}");
            }
            tokio::time::sleep(ACK_POLL).await;
        };
        let ms = acknowledged
            .saturating_duration_since(killed_at)
            .as_secs_f64()
            * 1e3;
        eprintln!(
            "kill {kill}: leader {victim} (node {}, term {}): next acknowledged send after {ms:.0} ms",
            leader.node_id, leader.term
        );
        times.push(ms);
        run_command("restart", &args.restart_cmd, &victim).await?;
    }
    Ok(times)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(median(&[]), 0.0);
        assert_eq!(median(&[1.0, 5.0, 9.0]), 5.0);
        assert_eq!(median(&[1.0, 3.0, 5.0, 9.0]), 4.0);
    }
}
