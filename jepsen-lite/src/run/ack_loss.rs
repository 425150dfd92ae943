//! The scripted scenario that proves the suite can fail (`run --profile ack-loss`).
//!
//! 1. A producer stores a few messages (baseline).
//! 2. Stale route (window 1): the leader `L` is cut off from its peers; clients still reach it.
//! 3. [`DIRECTED_SENDS`] sends go straight to `L` at once (not through the NameServer route,
//!    which a new leader would soon take over). Nothing `L` appends can reach a majority, so
//!    none of these can ever commit: a correct broker cannot acknowledge them (they time out,
//!    unknown), while one started with `--unsafe-ack-before-commit` acknowledges them at once.
//! 4. Kill `L` (window 2, `kill one` aimed at `L`), then wait until the others have elected a
//!    new leader and applied an entry of its term: from then on `L`'s log, whose last term is
//!    older, can never win an election, so its unreplicated entries are overwritten when it
//!    rejoins. The loss of whatever `L` acknowledged is certain, not a race.
//! 5. Heal, restart `L`, heal-all, a few more sends, converge, drain every member.
//!
//! With the unsafe flag, `unseen` (and `lost_write`) must report every acknowledged directed
//! send; without it, the run must pass.

use std::sync::Arc;
use std::time::Duration;

use raftmq_client::{BrokerClient, ClientError, SendReply};
use raftmq_protocol::header::SendMessageRequestHeader;
use raftmq_protocol::names::AUTO_CREATE_TOPIC_KEY_TOPIC;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{
    RunOptions, ScenarioReport, converge_and_drain, create_topics, record_run_start,
    record_run_stop,
};
use crate::cluster::{BROKER_NAME, POLL_INTERVAL, ProcessCluster};
use crate::executor::Executor;
use crate::history::{Call, Event, HistoryWriter, RecordError, SendOp};
use crate::nemesis::{Cluster, Fault, KillTarget};
use crate::schedule::{Scenario, ScheduleConfig, Step};
use crate::workload::{OP_TIMEOUT, QUEUES_PER_TOPIC, SEND_TIMEOUT, Shared, recorded_send};

/// The scenario's topic.
pub const ACK_LOSS_TOPIC: &str = "jl-ack";
/// Sends before the fault and after the heal.
pub const BASELINE_SENDS: usize = 10;
/// Sends aimed at the cut-off leader, all at once.
pub const DIRECTED_SENDS: usize = 20;
/// How long the group may take to elect a new leader and apply an entry of its term.
pub const NEW_LEADER_TIMEOUT: Duration = Duration::from_secs(30);
/// The queue the directed sends go to.
const DIRECTED_QUEUE: u32 = 0;

/// The scenario as `run` lists it (its schedule is empty: the faults are scripted here).
pub fn scenario() -> Scenario {
    Scenario::new("ack-loss", ScheduleConfig::cadence(30_000, 30_000, vec![]))
}

fn directed_header() -> SendMessageRequestHeader {
    SendMessageRequestHeader {
        producer_group: "jl-ack-direct".into(),
        topic: ACK_LOSS_TOPIC.into(),
        default_topic: AUTO_CREATE_TOPIC_KEY_TOPIC.into(),
        default_topic_queue_nums: i32::try_from(QUEUES_PER_TOPIC).unwrap_or(4),
        queue_id: i32::try_from(DIRECTED_QUEUE).unwrap_or(0),
        sys_flag: 0,
        born_timestamp: raftmq_protocol::names::now_ms(),
        flag: 0,
        properties: None,
        reconsume_times: Some(0),
        unit_mode: Some(false),
        batch: Some(false),
        max_reconsume_times: None,
        broker_name: Some(BROKER_NAME.into()),
    }
}

/// One send straight to `addr`, recorded by `process` (the outcome rule as for producers).
async fn directed_send(
    shared: &Shared,
    broker: &BrokerClient,
    process: &str,
    addr: &str,
    node: &str,
    value: String,
) -> Result<bool, RecordError> {
    let invoked = SendOp {
        topic: ACK_LOSS_TOPIC.into(),
        key: None,
        queue: Some(DIRECTED_QUEUE),
        value: value.clone(),
        offset: None,
        retried_after_unknown: false,
    };
    shared
        .recorder
        .record(Event::invoke(process, Call::Send(invoked.clone())))
        .await?;
    let header = directed_header();
    let result: Result<Result<SendReply, ClientError>, _> = tokio::time::timeout(
        OP_TIMEOUT,
        broker.send_message(addr, header, value.into(), SEND_TIMEOUT),
    )
    .await;
    let (event, acked) = match result {
        Ok(Ok(reply)) => match (
            u32::try_from(reply.queue_id),
            u64::try_from(reply.queue_offset),
        ) {
            (Ok(queue), Ok(offset)) => {
                let mut op = invoked;
                op.queue = Some(queue);
                op.offset = Some(offset);
                (Event::ok(process, Call::Send(op)).with_node(node), true)
            }
            _ => (
                Event::info(
                    process,
                    Call::Send(invoked),
                    format!("acknowledged at {}/{}", reply.queue_id, reply.queue_offset),
                ),
                false,
            ),
        },
        Ok(Err(e)) if e.is_unknown_outcome() => (
            Event::info(process, Call::Send(invoked), e.to_string()),
            false,
        ),
        Ok(Err(e)) => (
            Event::fail(process, Call::Send(invoked), e.to_string()),
            false,
        ),
        Err(_) => (
            Event::info(process, Call::Send(invoked), "no answer in time"),
            false,
        ),
    };
    shared.recorder.record(event).await?;
    Ok(acked)
}

/// Waits until a leader other than `old` is agreed and every running member has applied its
/// log up to where the leader was when first seen.
async fn wait_new_leader(cluster: &ProcessCluster, old: &str) -> Result<String, String> {
    let deadline = Instant::now() + NEW_LEADER_TIMEOUT;
    loop {
        if let Some((name, status)) = cluster.current_leader().await
            && name != old
        {
            let top = status.last_log_index.unwrap_or(0);
            let statuses = cluster.statuses().await;
            let caught_up = cluster
                .members()
                .iter()
                .filter(|m| m.as_str() != old)
                .all(|m| {
                    statuses.get(m).is_some_and(|s| {
                        s.term == status.term && s.applied_index.unwrap_or(0) >= top
                    })
                });
            if caught_up && top > 0 {
                return Ok(name);
            }
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "no new leader with an applied entry of its term within {NEW_LEADER_TIMEOUT:?}"
            ));
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

/// Waits until the leader holds at least `count` messages of the topic (with the unsafe flag,
/// an acknowledged send is proposed only after its answer; this keeps the baseline out of the
/// loss the script causes, so that exactly the directed sends are at stake).
async fn wait_stored(cluster: &ProcessCluster, count: u64) -> Result<(), String> {
    let deadline = Instant::now() + NEW_LEADER_TIMEOUT;
    loop {
        if let Some((leader, _)) = cluster.current_leader().await
            && cluster
                .stored_messages(&leader, ACK_LOSS_TOPIC)
                .await
                .is_some_and(|n| n >= count)
        {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "the leader did not hold {count} messages of {ACK_LOSS_TOPIC} within {NEW_LEADER_TIMEOUT:?}"
            ));
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

fn step(window: u64, fault: Fault, choice: u64) -> Step {
    Step {
        window,
        start_ms: 0,
        stop_ms: 0,
        fault,
        choice,
    }
}

/// Runs the script against a started cluster, recording into `history_path`.
pub async fn drive(
    options: &RunOptions,
    cluster: &Arc<ProcessCluster>,
    history_path: &std::path::Path,
    seed: u64,
    report: &mut ScenarioReport,
    cancel: &CancellationToken,
) -> Result<(), String> {
    let namesrv = cluster.namesrv_addr().to_string();
    create_topics(&namesrv, &cluster.client_tls(), &[ACK_LOSS_TOPIC]).await?;
    let (recorder, writer) =
        HistoryWriter::create(history_path).map_err(|e| format!("history: {e}"))?;
    let shared = Shared {
        recorder: recorder.clone(),
        namesrv: namesrv.clone(),
        tls: cluster.client_tls(),
        names_by_addr: Arc::new(cluster.names_by_addr()),
        stop: cancel.child_token(),
        seed,
        think_time: options.think_time,
    };
    let settings = serde_json::json!({
        "profile": options.profile,
        "scenario": "ack-loss",
        "members": options.nodes,
        "net": cluster.net().kind(),
        "unsafe_ack_before_commit": options.unsafe_ack_before_commit,
        "run_seed": options.seed,
    });
    let rpc = shared.rpc_client();
    let broker = BrokerClient::new(rpc.clone());
    let script = async {
        record_run_start(&recorder, seed, settings)
            .await
            .map_err(|e| e.to_string())?;
        let producer = shared
            .producer("jl-ack-p")
            .await
            .map_err(|e| e.to_string())?;
        let outcome = async {
            for i in 0..BASELINE_SENDS {
                recorded_send(
                    &shared,
                    &producer,
                    "p1",
                    ACK_LOSS_TOPIC,
                    None,
                    format!("p1-{i}"),
                )
                .await
                .map_err(|e| e.to_string())?;
            }
            wait_stored(cluster, BASELINE_SENDS as u64).await?;
            let mut executor = Executor::new(cluster.clone(), cluster.net(), recorder.clone());
            executor
                .start(&step(1, Fault::StaleRoute, 0))
                .await
                .map_err(|e| e.to_string())?;
            let target = executor
                .active_targets(1)
                .and_then(|t| t.first().cloned())
                .ok_or("the stale-route partition was not installed")?;
            let addr = cluster
                .remoting_addrs()
                .into_iter()
                .find(|(name, _)| *name == target)
                .map(|(_, addr)| addr.to_string())
                .ok_or("the cut-off leader has no address")?;
            let sends = (0..DIRECTED_SENDS).map(|i| {
                let (shared, broker, addr, target) = (&shared, &broker, &addr, &target);
                async move {
                    directed_send(
                        shared,
                        broker,
                        &format!("d{i}"),
                        addr,
                        target,
                        format!("d{i}-0"),
                    )
                    .await
                }
            });
            let mut acked = 0usize;
            for sent in futures::future::join_all(sends).await {
                if sent.map_err(|e| e.to_string())? {
                    acked += 1;
                }
            }
            report.notes.push(format!(
                "{acked} of {DIRECTED_SENDS} sends to the cut-off leader {target} were acknowledged"
            ));
            // Kill exactly the cut-off leader: "kill one" picks the sorted member at `choice`.
            let mut sorted = cluster.members();
            sorted.sort();
            let choice = sorted.iter().position(|m| *m == target).unwrap_or(0) as u64;
            executor
                .start(&step(
                    2,
                    Fault::Kill {
                        target: KillTarget::One,
                    },
                    choice,
                ))
                .await
                .map_err(|e| e.to_string())?;
            if executor.active_targets(2) != Some(vec![target.clone()]) {
                return Err(format!("the kill did not hit the cut-off leader {target}"));
            }
            let new_leader = wait_new_leader(cluster, &target).await?;
            report.notes.push(format!("new leader {new_leader}"));
            executor.stop(1).await.map_err(|e| e.to_string())?;
            executor.stop(2).await.map_err(|e| e.to_string())?;
            executor.heal_all(3).await.map_err(|e| e.to_string())?;
            report.faults = 2;
            // A restarted leader may act as leader of its old term until it hears of the new
            // one (it restores its own vote); with the unsafe flag it would acknowledge (and
            // lose) the next sends too. Let it rejoin first, so that only the directed sends
            // are at stake.
            cluster
                .wait_converged(super::CONVERGE_TIMEOUT)
                .await
                .map_err(|e| e.to_string())?;
            let mut acked_after = 0u64;
            for i in 0..BASELINE_SENDS {
                acked_after += u64::from(
                    recorded_send(
                        &shared,
                        &producer,
                        "p1",
                        ACK_LOSS_TOPIC,
                        None,
                        format!("p1-{}", BASELINE_SENDS + i),
                    )
                    .await
                    .map_err(|e| e.to_string())?,
                );
            }
            // Only the directed sends are to be at stake: let the others land first.
            wait_stored(cluster, BASELINE_SENDS as u64 + acked_after).await?;
            converge_and_drain(cluster, &recorder, &[ACK_LOSS_TOPIC], report)
                .await
                .map_err(|e| e.to_string())?;
            record_run_stop(&recorder).await.map_err(|e| e.to_string())
        }
        .await;
        producer.shutdown().await;
        outcome
    };
    let result = script.await;
    rpc.shutdown().await;
    drop(shared);
    drop(recorder);
    let closed = writer.close().await;
    result?;
    closed.map(|_| ()).map_err(|e| format!("history: {e}"))
}
