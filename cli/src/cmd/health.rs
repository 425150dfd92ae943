//! `mq cluster health [--watch] [--exit-when-healthy]`: is every broker group writable, does
//! every member answer, does none lag — judged by `raftmq_client::cluster_view` (the same
//! judgement the dashboard shows), with an exit code per verdict as `rpk cluster health` has:
//!
//! | exit | verdict |
//! |---|---|
//! | 0 | healthy |
//! | 3 | degraded: a member down or not answering, a follower lagging, a stale leader slot |
//! | 4 | no leader: a group without a leader that takes writes, or no group registered |
//! | 5 | the NameServers cannot be asked |
//!
//! `--watch` checks again every `--interval-ms` until Ctrl-C or `--timeout-ms`;
//! `--exit-when-healthy` ends the watch at the first healthy check (exit 0). A watch that
//! times out exits with the last check's code.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Args;
use raftmq_client::cluster_view::{ClusterView, DEFAULT_MAX_LAG_ENTRIES, Health, Verdict};
use serde::Serialize;

use crate::context::Ctx;
use crate::output::{Table, opt, print_json};

/// Exit code of a degraded cluster.
pub const EXIT_DEGRADED: u8 = 3;
/// Exit code of a cluster with a group that has no writable leader.
pub const EXIT_NO_LEADER: u8 = 4;
/// Exit code when the NameServers cannot be asked.
pub const EXIT_UNREACHABLE: u8 = 5;
/// Default pause between two checks of `--watch`.
pub const DEFAULT_INTERVAL_MS: u64 = 2000;

#[derive(Args, Debug)]
pub struct HealthArgs {
    /// Check again every --interval-ms until Ctrl-C (or --timeout-ms).
    #[arg(long)]
    watch: bool,
    /// With --watch: stop (exit 0) at the first healthy check.
    #[arg(long, requires = "watch")]
    exit_when_healthy: bool,
    #[arg(long, default_value_t = DEFAULT_INTERVAL_MS)]
    interval_ms: u64,
    /// With --watch: stop after this long, with the last check's exit code.
    #[arg(long)]
    timeout_ms: Option<u64>,
    /// How many entries a follower may be behind its leader and still count as healthy.
    #[arg(long, default_value_t = DEFAULT_MAX_LAG_ENTRIES)]
    max_lag: u64,
}

/// The exit code of a verdict.
pub fn exit_code(verdict: Verdict) -> u8 {
    match verdict {
        Verdict::Healthy => 0,
        Verdict::Degraded => EXIT_DEGRADED,
        Verdict::NoLeader => EXIT_NO_LEADER,
        Verdict::Unreachable => EXIT_UNREACHABLE,
    }
}

#[derive(Serialize, Debug)]
struct MemberJson {
    node_id: Option<u64>,
    addr: Option<String>,
    up: bool,
    state: Option<String>,
    term: Option<u64>,
    applied_index: Option<u64>,
    lag: Option<u64>,
}

#[derive(Serialize, Debug)]
struct GroupJson {
    broker_name: String,
    leader: Option<u64>,
    term: Option<u64>,
    writable: bool,
    members: Vec<MemberJson>,
}

/// `mq cluster health --json`.
#[derive(Serialize, Debug)]
struct HealthJson {
    verdict: Verdict,
    exit_code: u8,
    problems: Vec<raftmq_client::cluster_view::Problem>,
    groups: Vec<GroupJson>,
}

fn health_json(view: &ClusterView, health: Health) -> HealthJson {
    HealthJson {
        verdict: health.verdict,
        exit_code: exit_code(health.verdict),
        problems: health.problems,
        groups: view
            .groups
            .iter()
            .map(|group| GroupJson {
                broker_name: group.broker_name.clone(),
                leader: group.leader().map(|leader| leader.node_id),
                term: group.leader().map(|leader| leader.term),
                writable: group.leader().is_some_and(|leader| leader.writable),
                members: group
                    .members
                    .iter()
                    .map(|member| MemberJson {
                        node_id: member.node_id,
                        addr: member.remoting_addr.clone(),
                        up: member.is_up(),
                        state: member.status().map(|s| s.state.clone()),
                        term: member.status().map(|s| s.term),
                        applied_index: member.status().and_then(|s| s.applied_index),
                        lag: member.node_id.and_then(|id| group.lag_of(id)),
                    })
                    .collect(),
            })
            .collect(),
    }
}

fn print_health(report: &HealthJson) {
    match report.verdict {
        Verdict::Healthy => outln!(
            "HEALTHY: {} broker group(s); every leader takes writes, every member answers, none lags",
            report.groups.len()
        ),
        verdict => {
            outln!(
                "{} (exit {}):",
                verdict.as_str().replace('_', " ").to_uppercase(),
                report.exit_code
            );
            for problem in &report.problems {
                outln!("  - {}", problem.message);
            }
        }
    }
    for group in &report.groups {
        outln!(
            "broker group {}: leader {}, term {}{}",
            group.broker_name,
            opt(group.leader),
            opt(group.term),
            if group.writable { ", writable" } else { "" }
        );
        let mut table = Table::new(&["NODE", "STATE", "UP", "TERM", "APPLIED", "LAG", "ADDR"]);
        for member in &group.members {
            table.row(vec![
                opt(member.node_id),
                member.state.clone().unwrap_or_else(|| "-".to_owned()),
                if member.up { "up" } else { "DOWN" }.to_owned(),
                opt(member.term),
                opt(member.applied_index),
                opt(member.lag),
                member.addr.clone().unwrap_or_else(|| "-".to_owned()),
            ]);
        }
        table.print();
    }
}

async fn check(ctx: &Ctx, max_lag: u64) -> anyhow::Result<HealthJson> {
    let view = ctx.viewer()?.view().await;
    let health = view.health(max_lag);
    Ok(health_json(&view, health))
}

fn report(ctx: &Ctx, report: &HealthJson, watching: bool) -> anyhow::Result<()> {
    if ctx.json {
        if watching {
            // One document a line, so a watch can be read line by line.
            outln!("{}", serde_json::to_string(report)?);
        } else {
            print_json(report)?;
        }
    } else {
        if watching {
            outln!("-- {}", time_of_day());
        }
        print_health(report);
    }
    Ok(())
}

pub async fn run(ctx: &Ctx, args: HealthArgs) -> anyhow::Result<ExitCode> {
    if !args.watch {
        let health = check(ctx, args.max_lag).await?;
        report(ctx, &health, false)?;
        return Ok(ExitCode::from(health.exit_code));
    }
    let deadline = args
        .timeout_ms
        .map(|ms| Instant::now() + Duration::from_millis(ms));
    let interval = Duration::from_millis(args.interval_ms.max(1));
    loop {
        let health = check(ctx, args.max_lag).await?;
        report(ctx, &health, true)?;
        if args.exit_when_healthy && health.verdict == Verdict::Healthy {
            return Ok(ExitCode::SUCCESS);
        }
        let wait = match deadline {
            Some(deadline) if Instant::now() >= deadline => {
                return Ok(ExitCode::from(health.exit_code));
            }
            Some(deadline) => interval.min(deadline.saturating_duration_since(Instant::now())),
            None => interval,
        };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = tokio::signal::ctrl_c() => return Ok(ExitCode::from(health.exit_code)),
        }
    }
}

/// `HH:MM:SS` (UTC) of now, for the watch's separators.
fn time_of_day() -> String {
    let secs = raftmq_protocol::names::now_ms() / 1000;
    let day = secs.rem_euclid(86_400);
    format!(
        "{:02}:{:02}:{:02} UTC",
        day / 3600,
        day % 3600 / 60,
        day % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_verdict_has_its_own_exit_code() {
        let codes: Vec<u8> = [
            Verdict::Healthy,
            Verdict::Degraded,
            Verdict::NoLeader,
            Verdict::Unreachable,
        ]
        .into_iter()
        .map(exit_code)
        .collect();
        assert_eq!(codes, [0, 3, 4, 5]);
    }
}
