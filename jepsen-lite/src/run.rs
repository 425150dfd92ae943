//! `jepsen-lite run`: start a cluster per scenario, run the workloads while the nemesis carries
//! out the seeded schedule, heal, wait for convergence, drain, stop everything, check.
//!
//! Output, per scenario in `<out>/<NN>-<name>/`: `history.jsonl`, `summary.json` and
//! `summary.txt` (the checkers' verdicts, availability per fault window, recovery after the
//! heal), `report.json` (harness facts: network layout, convergence time, drain), the
//! `schedule.txt` the seed gave, and `logs/` (every process's output). `<out>/summary.txt` and
//! `<out>/summary.json` sum the scenarios up; the seed there replays the same schedules
//! (`--seed N`, and `--scenario NAME` for one of them).
//!
//! Every wait is bounded; every process started is stopped by pid and the network torn down
//! whatever happens (error, Ctrl-C); the scenario's data directory is deleted after a passing
//! scenario unless `--keep-data`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use raftmq_client::Admin;
use raftmq_client::admin::TopicConfig;
use raftmq_client::broker_client::DEFAULT_RPC_TIMEOUT;
use raftmq_remoting::RpcClientConfig;
use raftmq_tls::TlsConnector;
use serde::Serialize;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::checker::{self, CheckOptions};
use crate::cluster::{ClusterSpec, NetChoice, ProcessCluster};
use crate::executor::Executor;
use crate::history::{
    Call, Event, HARNESS_PROCESS, HarnessErrorOp, HistoryWriter, NemesisPhase, OpType, RecordError,
    Recorder, RunOp, read_history,
};
use crate::nemesis::Cluster;
use crate::schedule::{Profile, Scenario, Schedule, scenario_seed};
use crate::summary::{EXIT_INCOMPLETE, EXIT_PASS, EXIT_SAFETY_VIOLATION, RunVerdict, Summary};
use crate::workload::drain::{DrainReport, Target, drain_all};
use crate::workload::{
    QUEUES_PER_TOPIC, Shared, W1_TOPIC, W2_TOPIC, W3_TOPIC, pop, tx, w1, w2, w3,
};

pub mod ack_loss;
pub mod fsync_loss;

/// Exit status after Ctrl-C or SIGTERM.
pub const EXIT_INTERRUPTED: i32 = 130;
/// How long topic creation may take (the group must have a leader to take it).
pub const TOPIC_SETUP_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the workloads may take to finish their operations in hand once told to stop.
pub const WORKLOAD_STOP_TIMEOUT: Duration = Duration::from_secs(60);
/// How long the group may take to converge after the workloads stopped.
pub const CONVERGE_TIMEOUT: Duration = Duration::from_secs(60);
/// Default pause between one client's operations.
pub const DEFAULT_THINK_TIME: Duration = Duration::from_millis(100);
/// Every workload topic.
pub const TOPICS: [&str; 3] = [W1_TOPIC, W2_TOPIC, W3_TOPIC];

/// What `run --profile` runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum RunProfile {
    /// Scenarios of 60-75 s with different fault mixes (CI), retention, transactions, power
    /// loss and disk faults among them.
    Short,
    /// Ten scenarios of 300 s: five mixing every fault (power losses, clock skew, bit flips and
    /// full disks too), then retention, transactions, power loss, clock skew and disk faults.
    Long,
    /// The scripted proof that the suite can fail: acknowledge sends on a leader cut off from
    /// its peers, kill it, heal. With `--unsafe-ack-before-commit` the checkers must report
    /// the acknowledged sends lost; without it the run must pass.
    AckLoss,
    /// The scripted proof that power-loss faults test our fsyncs: acknowledged sends, then a
    /// power loss of every member at once. With `--unsafe-skip-fsync` the checkers must report
    /// lost writes; without it the run must pass.
    FsyncLoss,
}

impl RunProfile {
    /// The name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            RunProfile::Short => "short",
            RunProfile::Long => "long",
            RunProfile::AckLoss => "ack-loss",
            RunProfile::FsyncLoss => "fsync-loss",
        }
    }
}

/// Everything `run` needs.
#[derive(Clone, Debug)]
pub struct RunOptions {
    pub profile: RunProfile,
    pub seed: u64,
    pub out: PathBuf,
    pub nodes: usize,
    pub unsafe_ack_before_commit: bool,
    pub unsafe_skip_fsync: bool,
    pub net: NetChoice,
    pub bin_dir: PathBuf,
    pub keep_data: bool,
    pub think_time: Duration,
    /// Run only the scenario with this name.
    pub only: Option<String>,
}

/// One scenario's facts beyond the checkers' summary.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ScenarioReport {
    pub index: usize,
    pub name: String,
    pub seed: u64,
    pub dir: PathBuf,
    pub verdict: Option<RunVerdict>,
    pub exit_code: i32,
    pub net: String,
    pub faults: usize,
    pub duration_ms: u64,
    /// Time from the end of the workloads to a converged group.
    pub converged_after_ms: Option<u64>,
    pub drain: DrainReport,
    /// What went wrong in the harness (also in the history as `harness_error`).
    pub harness_errors: Vec<String>,
    /// Notes that are not errors (e.g. slow convergence).
    pub notes: Vec<String>,
    /// Checker names that failed, with their counts.
    pub failed_checkers: Vec<String>,
}

/// The whole run.
#[derive(Clone, Debug, Serialize)]
pub struct RunReport {
    pub profile: RunProfile,
    pub seed: u64,
    pub nodes: usize,
    pub unsafe_ack_before_commit: bool,
    pub unsafe_skip_fsync: bool,
    pub exit_code: i32,
    pub scenarios: Vec<ScenarioReport>,
}

impl RunReport {
    /// A short table for people.
    pub fn table(&self) -> String {
        let mut out = format!(
            "jepsen-lite run --profile {} --seed {} --nodes {}{}{}\n",
            self.profile.name(),
            self.seed,
            self.nodes,
            if self.unsafe_ack_before_commit {
                " --unsafe-ack-before-commit"
            } else {
                ""
            },
            if self.unsafe_skip_fsync {
                " --unsafe-skip-fsync"
            } else {
                ""
            }
        );
        out.push_str(&format!(
            "{:<3} {:<14} {:<12} {:>6} {:>7} {:>9} {}\n",
            "#", "scenario", "verdict", "faults", "secs", "converge", "failed checkers / notes"
        ));
        for s in &self.scenarios {
            let verdict = match s.verdict {
                Some(RunVerdict::Pass) => "PASS",
                Some(RunVerdict::Fail) => "FAIL",
                Some(RunVerdict::Incomplete) => "INCOMPLETE",
                None => "NOT RUN",
            };
            let converge = s
                .converged_after_ms
                .map_or_else(|| "-".into(), |ms| format!("{:.1}s", ms as f64 / 1e3));
            let mut notes: Vec<String> = s.failed_checkers.clone();
            notes.extend(s.harness_errors.iter().map(|e| format!("harness: {e}")));
            notes.extend(s.notes.iter().cloned());
            out.push_str(&format!(
                "{:<3} {:<14} {:<12} {:>6} {:>7.1} {:>9} {}\n",
                s.index + 1,
                s.name,
                verdict,
                s.faults,
                s.duration_ms as f64 / 1e3,
                converge,
                notes.join("; ")
            ));
        }
        out.push_str(&format!("exit status {}\n", self.exit_code));
        out
    }
}

fn write(path: &Path, text: &str) {
    if let Err(e) = std::fs::write(path, text) {
        tracing::error!(path = %path.display(), error = %e, "cannot write");
    }
}

/// Runs the profile. `cancel` (Ctrl-C) ends the scenario in hand at once (faults healed,
/// processes stopped) and skips the rest.
pub async fn run(options: &RunOptions, cancel: &CancellationToken) -> RunReport {
    let scenarios: Vec<(usize, Scenario)> = match options.profile {
        RunProfile::Short => Profile::Short.scenarios(),
        RunProfile::Long => Profile::Long.scenarios(),
        RunProfile::AckLoss => vec![ack_loss::scenario()],
        RunProfile::FsyncLoss => vec![fsync_loss::scenario()],
    }
    .into_iter()
    .enumerate()
    .filter(|(_, s)| options.only.as_ref().is_none_or(|only| *only == s.name))
    .collect();
    if let Err(e) = std::fs::create_dir_all(&options.out) {
        tracing::error!(out = %options.out.display(), error = %e, "cannot create the output directory");
    }
    write(&options.out.join("seed"), &format!("{}\n", options.seed));
    let mut reports = Vec::new();
    for (index, scenario) in scenarios {
        if cancel.is_cancelled() {
            break;
        }
        let seed = scenario_seed(options.seed, index);
        eprintln!(
            "jepsen-lite: scenario {} {} (seed {seed}, {:.0} s)",
            index + 1,
            scenario.name,
            scenario.config.run_ms as f64 / 1e3
        );
        let report = run_scenario(options, index, &scenario, seed, cancel).await;
        eprintln!(
            "jepsen-lite: scenario {} {}: {:?} (exit {})",
            index + 1,
            scenario.name,
            report.verdict,
            report.exit_code
        );
        reports.push(report);
    }
    let exit_code = if cancel.is_cancelled() {
        EXIT_INTERRUPTED
    } else if reports.iter().any(|r| r.exit_code == EXIT_SAFETY_VIOLATION) {
        EXIT_SAFETY_VIOLATION
    } else if reports.is_empty() || reports.iter().any(|r| r.exit_code != EXIT_PASS) {
        EXIT_INCOMPLETE
    } else {
        EXIT_PASS
    };
    let report = RunReport {
        profile: options.profile,
        seed: options.seed,
        nodes: options.nodes,
        unsafe_ack_before_commit: options.unsafe_ack_before_commit,
        unsafe_skip_fsync: options.unsafe_skip_fsync,
        exit_code,
        scenarios: reports,
    };
    write(&options.out.join("summary.txt"), &report.table());
    write(
        &options.out.join("summary.json"),
        &serde_json::to_string_pretty(&report).unwrap_or_default(),
    );
    report
}

async fn run_scenario(
    options: &RunOptions,
    index: usize,
    scenario: &Scenario,
    seed: u64,
    cancel: &CancellationToken,
) -> ScenarioReport {
    let started = Instant::now();
    let dir = options
        .out
        .join(format!("{:02}-{}", index + 1, scenario.name));
    let schedule = Schedule::generate(seed, &scenario.config);
    let mut report = ScenarioReport {
        index,
        name: scenario.name.clone(),
        seed,
        dir: dir.clone(),
        exit_code: EXIT_INCOMPLETE,
        faults: schedule.steps.len(),
        ..ScenarioReport::default()
    };
    if dir.exists() {
        // A replay into the same directory: start clean (old data would be reused otherwise).
        let _ = std::fs::remove_dir_all(&dir);
    }
    if let Err(e) = std::fs::create_dir_all(&dir) {
        report
            .harness_errors
            .push(format!("cannot create {}: {e}", dir.display()));
        return report;
    }
    write(&dir.join("schedule.txt"), &schedule.table());
    let spec = ClusterSpec {
        members: options.nodes,
        bin_dir: options.bin_dir.clone(),
        dir: dir.clone(),
        net: options.net,
        unsafe_ack_before_commit: options.unsafe_ack_before_commit,
        // The fsync-loss script starts safe brokers and restarts them with the flag itself.
        unsafe_skip_fsync: options.unsafe_skip_fsync && options.profile != RunProfile::FsyncLoss,
        broker_args: scenario.broker_args.clone(),
        lazy_fs: scenario.lazy_fs,
        tls: scenario.tls,
    };
    let cluster = match ProcessCluster::start(spec).await {
        Ok(c) => c,
        Err(e) => {
            report.harness_errors.push(format!("cluster start: {e}"));
            report.duration_ms = started.elapsed().as_millis() as u64;
            write(
                &dir.join("report.json"),
                &serde_json::to_string_pretty(&report).unwrap_or_default(),
            );
            return report;
        }
    };
    report.net = cluster.net().kind().to_string();
    let history_path = dir.join("history.jsonl");
    let driven = match options.profile {
        RunProfile::AckLoss => {
            ack_loss::drive(options, &cluster, &history_path, seed, &mut report, cancel).await
        }
        RunProfile::FsyncLoss => {
            fsync_loss::drive(options, &cluster, &history_path, seed, &mut report, cancel).await
        }
        _ => {
            drive(
                options,
                &cluster,
                &history_path,
                &schedule,
                scenario,
                seed,
                &mut report,
                cancel,
            )
            .await
        }
    };
    if let Err(e) = driven {
        report.harness_errors.push(e);
    }
    if let Err(e) = cluster.shutdown().await {
        report.harness_errors.push(format!("shutdown: {e}"));
    }
    drop(cluster);
    finish(options, &dir, &history_path, &mut report);
    report.duration_ms = started.elapsed().as_millis() as u64;
    write(
        &dir.join("report.json"),
        &serde_json::to_string_pretty(&report).unwrap_or_default(),
    );
    report
}

/// Runs the checkers over the scenario's history and writes the summaries.
fn finish(options: &RunOptions, dir: &Path, history_path: &Path, report: &mut ScenarioReport) {
    let history = match read_history(history_path) {
        Ok(h) => h,
        Err(e) => {
            report.harness_errors.push(format!("history: {e}"));
            return;
        }
    };
    let check = CheckOptions {
        logs_dir: Some(dir.join("logs")),
        allow_duplicates: false,
    };
    let summary: Summary = checker::all(&history, &check);
    // Harness trouble found after the history was closed still makes the run unproven.
    let exit_code = if summary.exit_code == EXIT_PASS && !report.harness_errors.is_empty() {
        EXIT_INCOMPLETE
    } else {
        summary.exit_code
    };
    report.exit_code = exit_code;
    report.verdict = Some(if exit_code == EXIT_INCOMPLETE {
        RunVerdict::Incomplete
    } else {
        summary.verdict
    });
    report.failed_checkers = summary
        .checkers
        .iter()
        .filter(|c| c.verdict == checker::Verdict::Fail)
        .map(|c| {
            let counts: Vec<String> = c.counts.iter().map(|(k, v)| format!("{k}={v}")).collect();
            format!("{} ({})", c.name, counts.join(" "))
        })
        .collect();
    let mut table = summary.table();
    table.push_str(&format!(
        "network: {}; faults: {}; converged {} after the workloads stopped; drain: {} pulls, {} messages{}\n",
        report.net,
        report.faults,
        report
            .converged_after_ms
            .map_or_else(|| "never".into(), |ms| format!("{:.1} s", ms as f64 / 1e3)),
        report.drain.pulls,
        report.drain.messages,
        if report.drain.gave_up.is_empty() {
            String::new()
        } else {
            format!("; gave up on {:?}", report.drain.gave_up)
        }
    ));
    for note in &report.notes {
        table.push_str(&format!("note: {note}\n"));
    }
    for e in &report.harness_errors {
        table.push_str(&format!("harness error: {e}\n"));
    }
    write(&dir.join("summary.txt"), &table);
    write(&dir.join("summary.json"), &summary.to_json_pretty());
    print!("{table}");
    if exit_code == EXIT_PASS && !options.keep_data {
        let _ = std::fs::remove_dir_all(dir.join("data"));
    }
}

/// Creates the workload topics on the group's leader and waits until the NameServer routes
/// them.
pub async fn create_topics(
    namesrv: &str,
    tls: &TlsConnector,
    topics: &[&str],
) -> Result<(), String> {
    let rpc = RpcClientConfig {
        tls: tls.clone(),
        ..RpcClientConfig::default()
    };
    let admin = Admin::with_rpc_config(Some(namesrv), DEFAULT_RPC_TIMEOUT, rpc)
        .map_err(|e| e.to_string())?;
    let deadline = Instant::now() + TOPIC_SETUP_TIMEOUT;
    let mut last = String::new();
    let result = loop {
        let mut done = true;
        for topic in topics {
            match admin.route(topic).await {
                Ok(Some(route)) if route.read_queues.len() >= QUEUES_PER_TOPIC as usize => {}
                _ => {
                    done = false;
                    if let Err(e) = admin
                        .create_topic(&TopicConfig::new(*topic, QUEUES_PER_TOPIC), None)
                        .await
                    {
                        last = e.to_string();
                    }
                }
            }
        }
        if done {
            break Ok(());
        }
        if Instant::now() >= deadline {
            break Err(format!(
                "topics {topics:?} not routed within {TOPIC_SETUP_TIMEOUT:?}: {last}"
            ));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    admin.shutdown().await;
    result
}

/// Records a harness error event (ignoring a closed history: then the run is already broken).
pub async fn harness_error(recorder: &Recorder, source: &str, message: String) {
    tracing::warn!(source, %message, "harness error");
    let _ = recorder
        .record(Event::new(
            HARNESS_PROCESS,
            OpType::Info,
            Call::HarnessError(HarnessErrorOp {
                source: source.into(),
                message,
            }),
        ))
        .await;
}

/// Records the run's start event.
pub async fn record_run_start(
    recorder: &Recorder,
    seed: u64,
    settings: serde_json::Value,
) -> Result<(), RecordError> {
    recorder
        .record(Event::new(
            HARNESS_PROCESS,
            OpType::Info,
            Call::Run(RunOp {
                phase: NemesisPhase::Start,
                seed: Some(seed),
                settings,
            }),
        ))
        .await
}

/// Records the run's stop event.
pub async fn record_run_stop(recorder: &Recorder) -> Result<(), RecordError> {
    recorder
        .record(Event::new(
            HARNESS_PROCESS,
            OpType::Info,
            Call::Run(RunOp {
                phase: NemesisPhase::Stop,
                seed: None,
                settings: serde_json::Value::Null,
            }),
        ))
        .await
}

/// Waits for convergence, then drains every topic from every running member and the client.
pub async fn converge_and_drain(
    cluster: &ProcessCluster,
    recorder: &Recorder,
    topics: &[&str],
    report: &mut ScenarioReport,
) -> Result<(), RecordError> {
    match cluster.wait_converged(CONVERGE_TIMEOUT).await {
        Ok(took) => report.converged_after_ms = Some(took.as_millis() as u64),
        Err(e) => report.notes.push(format!("convergence: {e}")),
    }
    let mut targets: Vec<Target> = cluster
        .remoting_addrs()
        .into_iter()
        .filter(|(name, _)| cluster.pid(name).is_some())
        .map(|(name, addr)| Target {
            member: Some(name),
            addr: Some(addr),
        })
        .collect();
    targets.push(Target {
        member: None,
        addr: None,
    });
    let namesrv = cluster.namesrv_addr().to_string();
    report.drain = drain_all(recorder, &namesrv, &cluster.client_tls(), targets, topics).await?;
    Ok(())
}

#[allow(clippy::too_many_arguments)]
async fn drive(
    options: &RunOptions,
    cluster: &Arc<ProcessCluster>,
    history_path: &Path,
    schedule: &Schedule,
    scenario: &Scenario,
    seed: u64,
    report: &mut ScenarioReport,
    cancel: &CancellationToken,
) -> Result<(), String> {
    let namesrv = cluster.namesrv_addr().to_string();
    // The transactions and clock-skew scenarios run W1 beside the transaction producers.
    let transactions = scenario.runs_transactions();
    let mut topics: Vec<&str> = if transactions {
        vec![W1_TOPIC, tx::TX_TOPIC]
    } else {
        TOPICS.to_vec()
    };
    if scenario.pop {
        topics.push(pop::POP_TOPIC);
    }
    create_topics(&namesrv, &cluster.client_tls(), &topics).await?;
    let (recorder, writer) =
        HistoryWriter::create(history_path).map_err(|e| format!("history: {e}"))?;
    let settings = serde_json::json!({
        "profile": options.profile,
        "scenario": scenario.name,
        "members": options.nodes,
        "net": cluster.net().kind(),
        "unsafe_ack_before_commit": options.unsafe_ack_before_commit,
        "unsafe_skip_fsync": options.unsafe_skip_fsync,
        "run_ms": schedule.run_ms,
        "heal_all_ms": schedule.heal_all_ms,
        "think_time_ms": options.think_time.as_millis() as u64,
        "run_seed": options.seed,
        "pop": scenario.pop,
        "broker_args": scenario.broker_args,
        "lazy_fs": scenario.lazy_fs,
        "tls": scenario.tls,
        checker::retention::EXPECT_SETTING: scenario.expect_retention,
    });
    let recorded = async {
        record_run_start(&recorder, seed, settings).await?;
        let stop = CancellationToken::new();
        let shared = Shared {
            recorder: recorder.clone(),
            namesrv: namesrv.clone(),
            tls: cluster.client_tls(),
            names_by_addr: Arc::new(cluster.names_by_addr()),
            stop: stop.clone(),
            seed,
            think_time: options.think_time,
        };
        let workloads = TaskTracker::new();
        for id in 1..=w1::W1_CLIENTS {
            workloads.spawn(w1::run_client(shared.clone(), id));
        }
        // Cancelled once every pending transaction is resolved: then nobody need answer checks.
        let tx_answer_until = CancellationToken::new();
        if transactions {
            workloads.spawn(tx::run(shared.clone(), tx_answer_until.clone()));
        } else {
            for id in 1..=w2::W2_PRODUCERS {
                workloads.spawn(w2::run_producer(shared.clone(), id));
            }
            workloads.spawn(w3::run(shared.clone()));
        }
        if scenario.pop {
            workloads.spawn(pop::run(shared.clone()));
        }
        workloads.close();
        let nemesis_cancel = cancel.child_token();
        let mut executor = Executor::new(cluster.clone(), cluster.net(), recorder.clone());
        let end = Instant::now() + Duration::from_millis(schedule.run_ms);
        // On interrupt the executor skips to its heal-all at once (never dropped mid-fault).
        if let Err(e) = executor.run(schedule, &nemesis_cancel).await {
            harness_error(&recorder, "nemesis", e.to_string()).await;
        }
        // The final phase: workloads keep running until the scenario's end (recovery).
        tokio::select! {
            _ = tokio::time::sleep_until(end) => {}
            _ = cancel.cancelled() => {}
        }
        stop.cancel();
        if transactions && !cancel.is_cancelled() {
            match tx::wait_settled(cluster).await {
                Some(took) => report.notes.push(format!(
                    "transactions settled {:.1} s after the workloads stopped sending",
                    took.as_secs_f64()
                )),
                None => report.notes.push(format!(
                    "transactions still pending {:?} after the workloads stopped sending",
                    tx::SETTLE_TIMEOUT
                )),
            }
        }
        tx_answer_until.cancel();
        if tokio::time::timeout(WORKLOAD_STOP_TIMEOUT, workloads.wait())
            .await
            .is_err()
        {
            harness_error(
                &recorder,
                "workload",
                format!("workloads still busy {WORKLOAD_STOP_TIMEOUT:?} after stop"),
            )
            .await;
        }
        if !cancel.is_cancelled() {
            converge_and_drain(cluster, &recorder, &topics, report).await?;
            if transactions {
                tx::record_pending(cluster, &recorder).await?;
            }
            if scenario.pop {
                // The workloads' stop is cancelled by now: the drain gets its own.
                let drain = Shared {
                    stop: CancellationToken::new(),
                    ..shared.clone()
                };
                pop::drain(drain).await?;
            }
        }
        record_run_stop(&recorder).await
    };
    let result = recorded.await;
    drop(recorder);
    let closed = writer.close().await;
    result.map_err(|e| format!("history: {e}"))?;
    closed.map(|_| ()).map_err(|e| format!("history: {e}"))
}
