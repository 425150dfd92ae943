//! The scripted scenario that proves power-loss faults test our fsyncs (`run --profile
//! fsync-loss`), as `ack-loss` proves the suite catches acknowledging before commit.
//!
//! 1. The members run on lazy filesystems ([`crate::lazyfs`]), started as correct brokers; a
//!    producer stores [`SENDS_DURABLE`] messages: durable on every member.
//! 2. Kill -9 of every member (window 1); with `--unsafe-skip-fsync` given to the run, they
//!    restart with that flag (a kill keeps what the filesystems hold unsynced, so nothing is
//!    lost here).
//! 3. [`SENDS_AT_STAKE`] more sends, each acknowledged once a majority has it in its log.
//! 4. Power loss of every member at once (window 2): kill -9, then everything the filesystems
//!    hold unsynced is dropped. A correct broker fsynced every acknowledged entry on a
//!    majority first, so nothing acknowledged is lost; brokers whose Raft log skips its
//!    fsyncs lose the entries of step 3 on every member, back to the durable log of step 1.
//!    (They are fewer than the state machine's applies per durable commit, so its durable
//!    state stays within that log too, and the group comes back.)
//! 5. Restart, heal-all, converge, then [`SENDS_AFTER`] sends: they take the offsets the lost
//!    messages had, so readers get past those offsets without ever returning the lost values.
//! 6. Drain every member.
//!
//! With the unsafe flag, `lost_write` must report the acknowledged sends of step 3; without
//! it, the run must pass.

use std::sync::Arc;
use std::time::Duration;

use raftmq_client::Producer;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{
    RunOptions, ScenarioReport, converge_and_drain, create_topics, record_run_start,
    record_run_stop,
};
use crate::cluster::{POLL_INTERVAL, ProcessCluster};
use crate::executor::Executor;
use crate::history::HistoryWriter;
use crate::nemesis::{Cluster, Fault, KillTarget};
use crate::schedule::{Scenario, ScheduleConfig, Step};
use crate::workload::{Shared, recorded_send};

/// The scenario's topic.
pub const FSYNC_LOSS_TOPIC: &str = "jl-fsync";
/// Sends made durable before anything unsafe happens.
pub const SENDS_DURABLE: usize = 10;
/// Sends between the restart (with the unsafe flag, if given) and the power loss. Fewer than
/// the broker state machine's applies per durable commit (64), with room for the entries a new
/// leader appends.
pub const SENDS_AT_STAKE: usize = 20;
/// How long killed members may take to be gone.
pub const DOWN_TIMEOUT: Duration = Duration::from_secs(10);
/// Sends after the group is back.
pub const SENDS_AFTER: usize = 20;

/// The scenario as `run` lists it: members on lazy filesystems; its schedule is empty (the
/// faults are scripted here).
pub fn scenario() -> Scenario {
    Scenario {
        lazy_fs: true,
        ..Scenario::new(
            "fsync-loss",
            ScheduleConfig::cadence(30_000, 30_000, vec![]),
        )
    }
}

fn step(window: u64, fault: Fault) -> Step {
    Step {
        window,
        start_ms: 0,
        stop_ms: 0,
        fault,
        choice: 0,
    }
}

/// Waits until none of `members` has a process (a SIGKILL lands asynchronously; a member
/// still seen running would not be restarted).
async fn wait_down(cluster: &ProcessCluster, members: &[String]) -> Result<(), String> {
    let deadline = Instant::now() + DOWN_TIMEOUT;
    while members.iter().any(|m| cluster.pid(m).is_some()) {
        if Instant::now() >= deadline {
            return Err(format!(
                "{members:?} still running {DOWN_TIMEOUT:?} after SIGKILL"
            ));
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
    Ok(())
}

/// Sends `count` values `p1-<from>..` through `producer`; returns how many were acknowledged.
async fn send_some(
    shared: &Shared,
    producer: &Producer,
    from: usize,
    count: usize,
) -> Result<usize, String> {
    let mut acked = 0;
    for i in from..from + count {
        if recorded_send(
            shared,
            producer,
            "p1",
            FSYNC_LOSS_TOPIC,
            None,
            format!("p1-{i}"),
        )
        .await
        .map_err(|e| e.to_string())?
        {
            acked += 1;
        }
    }
    Ok(acked)
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
    create_topics(&namesrv, &cluster.client_tls(), &[FSYNC_LOSS_TOPIC]).await?;
    let (recorder, writer) =
        HistoryWriter::create(history_path).map_err(|e| format!("history: {e}"))?;
    let shared = Shared {
        recorder: recorder.clone(),
        namesrv,
        tls: cluster.client_tls(),
        names_by_addr: Arc::new(cluster.names_by_addr()),
        stop: cancel.child_token(),
        seed,
        think_time: options.think_time,
    };
    let settings = serde_json::json!({
        "profile": options.profile,
        "scenario": "fsync-loss",
        "members": options.nodes,
        "net": cluster.net().kind(),
        "unsafe_skip_fsync": options.unsafe_skip_fsync,
        "run_seed": options.seed,
    });
    let script = async {
        record_run_start(&recorder, seed, settings)
            .await
            .map_err(|e| e.to_string())?;
        let producer = shared
            .producer("jl-fsync-p")
            .await
            .map_err(|e| e.to_string())?;
        let outcome = async {
            let mut executor = Executor::new(cluster.clone(), cluster.net(), recorder.clone());
            let mut members = cluster.members();
            members.sort();
            let mut sent = 0;
            let durable = send_some(&shared, &producer, sent, SENDS_DURABLE).await?;
            sent += SENDS_DURABLE;
            // Restart every member, with the unsafe flag if the run has it.
            cluster.set_unsafe_skip_fsync(options.unsafe_skip_fsync);
            let everyone = KillTarget::All;
            executor
                .start(&step(1, Fault::Kill { target: everyone }))
                .await
                .map_err(|e| e.to_string())?;
            wait_down(cluster, &members).await?;
            executor.stop(1).await.map_err(|e| e.to_string())?;
            cluster
                .wait_converged(super::CONVERGE_TIMEOUT)
                .await
                .map_err(|e| e.to_string())?;
            let at_stake = send_some(&shared, &producer, sent, SENDS_AT_STAKE).await?;
            sent += SENDS_AT_STAKE;
            report.notes.push(format!(
                "{durable} of {SENDS_DURABLE} sends acknowledged before the restart, \
                 {at_stake} of {SENDS_AT_STAKE} between it and the power loss"
            ));
            executor
                .start(&step(2, Fault::PowerLoss { target: everyone }))
                .await
                .map_err(|e| e.to_string())?;
            if executor.active_targets(2) != Some(members.clone()) {
                return Err(format!(
                    "the power loss did not hit every member {members:?}: {:?}",
                    executor.active_targets(2)
                ));
            }
            executor.stop(2).await.map_err(|e| e.to_string())?;
            executor.heal_all(3).await.map_err(|e| e.to_string())?;
            report.faults = 2;
            cluster
                .wait_converged(super::CONVERGE_TIMEOUT)
                .await
                .map_err(|e| e.to_string())?;
            // The client's drain goes through the NameServer's route.
            cluster
                .wait_for_registered_leader(super::CONVERGE_TIMEOUT)
                .await
                .map_err(|e| e.to_string())?;
            let acked_after = send_some(&shared, &producer, sent, SENDS_AFTER).await?;
            report.notes.push(format!(
                "{acked_after} of {SENDS_AFTER} sends acknowledged after the power loss"
            ));
            converge_and_drain(cluster, &recorder, &[FSYNC_LOSS_TOPIC], report)
                .await
                .map_err(|e| e.to_string())?;
            record_run_stop(&recorder).await.map_err(|e| e.to_string())
        }
        .await;
        producer.shutdown().await;
        outcome
    };
    let result = script.await;
    drop(shared);
    drop(recorder);
    let closed = writer.close().await;
    result?;
    closed.map(|_| ()).map_err(|e| format!("history: {e}"))
}
