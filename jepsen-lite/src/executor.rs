//! Carries out a [`Schedule`] against a cluster and a network, recording every fault's start
//! and stop in the history.
//!
//! Each start is an invoke of `nemesis` (phase start) followed by its completion:
//! - `ok`: installed (the completion names the targets);
//! - `fail`: skipped, known not installed (no leader known, too few members, targets down);
//! - `info`: indeterminate: attempted, but a step failed (an `nft` error, a membership change
//!   that timed out). A `harness_error` event follows, since the harness lost control; the
//!   run's verdict is then at best "incomplete".
//!
//! A power loss kills its targets, drops what their lazy filesystems hold unsynced, and
//! restarts them at its stop, as a kill does.
//!
//! Each installed fault is undone at its stop (heal the network, restart killed members,
//! SIGCONT paused ones, add a removed member back). The final heal-all undoes whatever is still
//! in place and then, as a safety net, heals the network, resumes every member and restarts
//! every member that has no process.

use std::sync::Arc;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::history::{
    Call, CorruptionOutcome, Detection, Event, HARNESS_PROCESS, HarnessErrorOp, NEMESIS_PROCESS,
    NemesisOp, NemesisPhase, OpType, RecordError, Recorder,
};
use crate::nemesis::{
    Cluster, ClusterError, ClusterView, CorruptFile, Fault, Plan, ProcessSignal, SignalError, plan,
    send_signal,
};
use crate::net::Network;
use crate::schedule::{Schedule, Step};

/// The executor stops only when it cannot record (the history writer is gone).
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    #[error(transparent)]
    Record(#[from] RecordError),
}

/// How to undo an installed fault.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Undo {
    Heal,
    Restart(Vec<String>),
    Resume(Vec<(String, u32)>),
    AddMember(String),
    /// Set these members' clocks right.
    Unskew(Vec<String>),
    /// Replace a member whose data was damaged (remove it, add it back fresh): always, or
    /// only when it is not running (it refused or stopped).
    Replace {
        node: String,
        always: bool,
    },
    /// Give these members' data filesystems room again.
    Unfill(Vec<String>),
}

/// How long a segment bit flip's start waits for the member to find the damage: its scrub
/// reads every sealed segment right after it starts, which takes well under a second at these
/// sizes.
pub const DETECTION_WAIT: std::time::Duration = std::time::Duration::from_secs(15);

/// A fault in place: how to undo it, and for a bit flip what became of it.
struct Installed {
    undo: Undo,
    corruption: Option<CorruptionOutcome>,
}

impl From<Undo> for Installed {
    fn from(undo: Undo) -> Self {
        Installed {
            undo,
            corruption: None,
        }
    }
}

#[derive(Debug)]
struct Active {
    window: u64,
    fault: Fault,
    targets: Vec<String>,
    undo: Undo,
}

/// Why an install did not fully happen.
enum InstallError {
    /// Known not installed.
    Skipped(String),
    /// Attempted; may be partly in place (undo what might be).
    Failed { undo: Option<Undo>, error: String },
}

/// Runs faults. Generic over the harness's cluster and network.
pub struct Executor<C: Cluster, N: Network> {
    cluster: Arc<C>,
    net: Arc<N>,
    recorder: Recorder,
    active: Vec<Active>,
}

impl<C: Cluster, N: Network> std::fmt::Debug for Executor<C, N> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Executor")
            .field("active", &self.active)
            .finish_non_exhaustive()
    }
}

fn ok_gone(result: Result<(), SignalError>) -> Result<(), SignalError> {
    // The process already exited: for kill and resume that is the wanted end state.
    match result {
        Err(SignalError::Send {
            source: nix::errno::Errno::ESRCH,
            ..
        }) => Ok(()),
        other => other,
    }
}

impl<C: Cluster, N: Network> Executor<C, N> {
    pub fn new(cluster: Arc<C>, net: Arc<N>, recorder: Recorder) -> Self {
        Executor {
            cluster,
            net,
            recorder,
            active: Vec::new(),
        }
    }

    /// Windows whose fault is in place now.
    pub fn active_windows(&self) -> Vec<u64> {
        self.active.iter().map(|a| a.window).collect()
    }

    /// The nodes the fault of `window` was resolved to, while it is in place.
    pub fn active_targets(&self, window: u64) -> Option<Vec<String>> {
        self.active
            .iter()
            .find(|a| a.window == window)
            .map(|a| a.targets.clone())
    }

    async fn record(
        &self,
        kind: OpType,
        op: &NemesisOp,
        error: Option<String>,
    ) -> Result<(), ExecError> {
        let mut event = Event::new(NEMESIS_PROCESS, kind, Call::Nemesis(op.clone()));
        event.error = error;
        self.recorder.record(event).await?;
        Ok(())
    }

    async fn harness_error(&self, message: String) -> Result<(), ExecError> {
        tracing::warn!(%message, "nemesis harness error");
        self.recorder
            .record(Event::new(
                HARNESS_PROCESS,
                OpType::Info,
                Call::HarnessError(HarnessErrorOp {
                    source: "nemesis".into(),
                    message,
                }),
            ))
            .await?;
        Ok(())
    }

    /// Resolves and installs one step's fault, recording invoke and completion.
    pub async fn start(&mut self, step: &Step) -> Result<(), ExecError> {
        let mut op = NemesisOp {
            window: step.window,
            phase: NemesisPhase::Start,
            fault: step.fault.clone(),
            targets: vec![],
            corruption: None,
        };
        self.record(OpType::Invoke, &op, None).await?;
        let view = ClusterView {
            members: self.cluster.members(),
            leader: self.cluster.leader().await,
            others: self.cluster.others(),
        };
        let resolved = match plan(&step.fault, &view, step.choice) {
            Ok(p) => p,
            Err(skip) => return self.record(OpType::Fail, &op, Some(skip.to_string())).await,
        };
        op.targets = resolved.targets();
        match self.install(&resolved).await {
            Ok(Installed { undo, corruption }) => {
                self.active.push(Active {
                    window: step.window,
                    fault: step.fault.clone(),
                    targets: op.targets.clone(),
                    undo,
                });
                op.corruption = corruption;
                self.record(OpType::Ok, &op, None).await
            }
            Err(InstallError::Skipped(reason)) => {
                self.record(OpType::Fail, &op, Some(reason)).await
            }
            Err(InstallError::Failed { undo, error }) => {
                if let Some(undo) = undo {
                    self.active.push(Active {
                        window: step.window,
                        fault: step.fault.clone(),
                        targets: op.targets.clone(),
                        undo,
                    });
                }
                self.record(OpType::Info, &op, Some(error.clone())).await?;
                self.harness_error(format!("window {} {}: {error}", step.window, step.fault))
                    .await
            }
        }
    }

    async fn install(&self, p: &Plan) -> Result<Installed, InstallError> {
        let net_failed = |e: crate::net::NetError| InstallError::Failed {
            undo: Some(Undo::Heal),
            error: e.to_string(),
        };
        match p {
            Plan::Partition { a, b } => self.net.partition(a, b).await.map_err(net_failed)?,
            Plan::OneWay { from, to } => self.net.one_way(from, to).await.map_err(net_failed)?,
            Plan::Lossy { nodes, percent } => self
                .net
                .lossy(nodes, nodes, *percent)
                .await
                .map_err(net_failed)?,
            Plan::Kill(nodes) => {
                let mut killed = Vec::new();
                for node in nodes {
                    let Some(pid) = self.cluster.pid(node) else {
                        continue; // already down
                    };
                    if let Err(e) = ok_gone(send_signal(pid, ProcessSignal::Kill)) {
                        return Err(InstallError::Failed {
                            undo: Some(Undo::Restart(killed)),
                            error: e.to_string(),
                        });
                    }
                    killed.push(node.clone());
                }
                if killed.is_empty() {
                    return Err(InstallError::Skipped("every target is already down".into()));
                }
                return Ok(Undo::Restart(killed).into());
            }
            Plan::PowerLoss(nodes) => {
                return match self.cluster.power_loss(nodes).await {
                    Ok(hit) if hit.is_empty() => {
                        Err(InstallError::Skipped("no target lost power".into()))
                    }
                    Ok(hit) => Ok(Undo::Restart(hit).into()),
                    Err(ClusterError::NoLazyFs) => {
                        Err(InstallError::Skipped(ClusterError::NoLazyFs.to_string()))
                    }
                    // Some may be down: restarting a running member does nothing.
                    Err(e) => Err(InstallError::Failed {
                        undo: Some(Undo::Restart(nodes.clone())),
                        error: e.to_string(),
                    }),
                };
            }
            Plan::Pause(nodes) => {
                let mut paused = Vec::new();
                for node in nodes {
                    let Some(pid) = self.cluster.pid(node) else {
                        continue;
                    };
                    if let Err(e) = send_signal(pid, ProcessSignal::Stop) {
                        return Err(InstallError::Failed {
                            undo: Some(Undo::Resume(paused)),
                            error: e.to_string(),
                        });
                    }
                    paused.push((node.clone(), pid));
                }
                if paused.is_empty() {
                    return Err(InstallError::Skipped("every target is down".into()));
                }
                return Ok(Undo::Resume(paused).into());
            }
            Plan::RemoveMember(node) => {
                return match self.cluster.remove_member(node).await {
                    Ok(()) => Ok(Undo::AddMember(node.clone()).into()),
                    Err(e) => Err(InstallError::Failed {
                        undo: Some(Undo::AddMember(node.clone())),
                        error: e.to_string(),
                    }),
                };
            }
            Plan::ClockSkew { nodes, offset_ms } => {
                for (done, node) in nodes.iter().enumerate() {
                    if let Err(e) = self.cluster.set_clock_offset(node, *offset_ms) {
                        return Err(InstallError::Failed {
                            undo: Some(Undo::Unskew(nodes[..=done].to_vec())),
                            error: e.to_string(),
                        });
                    }
                }
                return Ok(Undo::Unskew(nodes.clone()).into());
            }
            Plan::BitFlip { node, file, choice } => {
                return self.install_bit_flip(node, *file, *choice).await;
            }
            Plan::DiskFull(nodes) => {
                for (done, node) in nodes.iter().enumerate() {
                    match self.cluster.set_space_left(node, Some(0)) {
                        Ok(()) => {}
                        Err(ClusterError::NoLazyFs) => {
                            return Err(InstallError::Skipped(ClusterError::NoLazyFs.to_string()));
                        }
                        Err(e) => {
                            return Err(InstallError::Failed {
                                undo: Some(Undo::Unfill(nodes[..=done].to_vec())),
                                error: e.to_string(),
                            });
                        }
                    }
                }
                return Ok(Undo::Unfill(nodes.clone()).into());
            }
            Plan::HealAll => return Ok(Undo::Heal.into()),
        }
        Ok(Undo::Heal.into())
    }

    /// Kills `node`, flips a bit of `file`, starts it again, then waits (at most
    /// [`DETECTION_WAIT`]) to see whether it stops on its own.
    async fn install_bit_flip(
        &self,
        node: &str,
        file: CorruptFile,
        choice: u64,
    ) -> Result<Installed, InstallError> {
        // A segment flip must always be found, so the member is replaced whatever it did; a
        // state machine flip that redb repaired (or that hit a free page) leaves it running.
        let undo = Undo::Replace {
            node: node.to_string(),
            always: file == CorruptFile::Segment,
        };
        let report = match self.cluster.flip_bit(node, file, choice).await {
            Ok(report) => report,
            Err(skip @ ClusterError::NothingToCorrupt { .. }) => {
                return Err(InstallError::Skipped(skip.to_string()));
            }
            Err(e) => {
                return Err(InstallError::Failed {
                    undo: Some(undo),
                    error: e.to_string(),
                });
            }
        };
        let (detection, reason) = match report.refused {
            Some(reason) => (Detection::RefusedToStart, Some(reason)),
            // The state machine's file is checked whole when it opens, before the member
            // listens: one that started has accepted (or repaired) it.
            None if file == CorruptFile::StateMachine => (Detection::Running, None),
            None => {
                let deadline = Instant::now() + DETECTION_WAIT;
                loop {
                    if self.cluster.pid(node).is_none() {
                        break (
                            Detection::StoppedAfterStart,
                            Some(self.cluster.log_tail(node)),
                        );
                    }
                    if Instant::now() >= deadline {
                        break (Detection::Running, None);
                    }
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
            }
        };
        Ok(Installed {
            undo,
            corruption: Some(CorruptionOutcome {
                file: report.file,
                position: report.position,
                bit: report.bit,
                detection,
                reason: reason.map(|r| error_line(&r)),
            }),
        })
    }

    async fn undo(&self, undo: &Undo) -> Result<(), String> {
        match undo {
            Undo::Heal => self.net.heal().await.map_err(|e| e.to_string()),
            Undo::Restart(nodes) => {
                for node in nodes {
                    self.cluster
                        .restart(node)
                        .await
                        .map_err(|e| e.to_string())?;
                }
                Ok(())
            }
            Undo::Resume(paused) => {
                for (_, pid) in paused {
                    ok_gone(send_signal(*pid, ProcessSignal::Cont)).map_err(|e| e.to_string())?;
                }
                Ok(())
            }
            Undo::AddMember(node) => self
                .cluster
                .add_member(node)
                .await
                .map_err(|e| e.to_string()),
            Undo::Unskew(nodes) => {
                for node in nodes {
                    self.cluster
                        .set_clock_offset(node, 0)
                        .map_err(|e| e.to_string())?;
                }
                Ok(())
            }
            Undo::Replace { node, always } => {
                if !*always && self.cluster.pid(node).is_some() {
                    return Ok(());
                }
                self.cluster
                    .remove_member(node)
                    .await
                    .map_err(|e| e.to_string())?;
                self.cluster
                    .add_member(node)
                    .await
                    .map_err(|e| e.to_string())
            }
            Undo::Unfill(nodes) => {
                for node in nodes {
                    self.cluster
                        .set_space_left(node, None)
                        .map_err(|e| e.to_string())?;
                }
                Ok(())
            }
        }
    }

    /// Undoes the fault of `window`, recording the stop. Nothing is recorded for a window whose
    /// fault was skipped (nothing to undo).
    pub async fn stop(&mut self, window: u64) -> Result<(), ExecError> {
        let Some(pos) = self.active.iter().position(|a| a.window == window) else {
            return Ok(());
        };
        let active = self.active.remove(pos);
        let op = NemesisOp {
            window,
            phase: NemesisPhase::Stop,
            fault: active.fault.clone(),
            targets: active.targets.clone(),
            corruption: None,
        };
        self.record(OpType::Invoke, &op, None).await?;
        match self.undo(&active.undo).await {
            Ok(()) => self.record(OpType::Ok, &op, None).await,
            Err(error) => {
                self.record(OpType::Info, &op, Some(error.clone())).await?;
                self.harness_error(format!("undo window {window} {}: {error}", active.fault))
                    .await
            }
        }
    }

    /// Undoes everything: the faults in place, then heals the network, resumes every member
    /// and restarts every member without a process. Recorded as a stop of `Fault::HealAll`.
    pub async fn heal_all(&mut self, window: u64) -> Result<(), ExecError> {
        let op = NemesisOp {
            window,
            phase: NemesisPhase::Stop,
            fault: Fault::HealAll,
            targets: vec![],
            corruption: None,
        };
        self.record(OpType::Invoke, &op, None).await?;
        let mut errors = Vec::new();
        while let Some(active) = self.active.pop() {
            if let Err(e) = self.undo(&active.undo).await {
                errors.push(format!("window {} {}: {e}", active.window, active.fault));
            }
        }
        if let Err(e) = self.net.heal().await {
            errors.push(e.to_string());
        }
        for member in self.cluster.members() {
            match self.cluster.pid(&member) {
                Some(pid) => {
                    if let Err(e) = ok_gone(send_signal(pid, ProcessSignal::Cont)) {
                        errors.push(e.to_string());
                    }
                }
                None => {
                    if let Err(e) = self.cluster.restart(&member).await {
                        errors.push(e.to_string());
                    }
                }
            }
        }
        if errors.is_empty() {
            self.record(OpType::Ok, &op, None).await
        } else {
            let error = errors.join("; ");
            self.record(OpType::Info, &op, Some(error.clone())).await?;
            self.harness_error(format!("heal-all: {error}")).await
        }
    }

    /// Runs the whole schedule from now: each step at its time, then the heal-all. On
    /// `cancel`, skips to the heal-all at once (faults are never left in place).
    pub async fn run(
        &mut self,
        schedule: &Schedule,
        cancel: &CancellationToken,
    ) -> Result<(), ExecError> {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + std::time::Duration::from_millis(ms);
        let wait = |deadline: Instant| async move {
            tokio::select! {
                _ = cancel.cancelled() => false,
                _ = tokio::time::sleep_until(deadline) => true,
            }
        };
        let mut completed = true;
        for step in &schedule.steps {
            if !wait(at(step.start_ms)).await {
                completed = false;
                break;
            }
            self.start(step).await?;
            if !wait(at(step.stop_ms)).await {
                completed = false;
                break;
            }
            self.stop(step.window).await?;
        }
        if completed {
            wait(at(schedule.heal_all_ms)).await;
        }
        self.heal_all(schedule.heal_all_window()).await
    }
}

/// The line of a member's log tail that says why it stopped: the last one that mentions
/// corruption, else the last line; at most 400 characters.
fn error_line(log_tail: &str) -> String {
    let line = log_tail
        .lines()
        .rev()
        .find(|l| l.to_ascii_lowercase().contains("corrupt"))
        .or_else(|| log_tail.lines().rev().find(|l| !l.trim().is_empty()))
        .unwrap_or("")
        .trim();
    line.chars().take(400).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checker::{self, CheckOptions};
    use crate::history::{HistoryWriter, read_history};
    use crate::nemesis::{KillTarget, MembershipChange, PartitionShape, PauseTarget};
    use crate::net::{Faults, NetError};
    use crate::summary::EXIT_INCOMPLETE;
    use std::collections::HashMap;
    use std::os::unix::process::ExitStatusExt;
    use std::process::{Child, Command};
    use std::sync::Mutex;

    /// Members are real `sleep` processes, so signals really land.
    struct FakeCluster {
        members: Vec<String>,
        leader: Mutex<Option<String>>,
        children: Mutex<HashMap<String, Child>>,
        log: Mutex<Vec<String>>,
        /// Whether power losses are possible (members on lazy filesystems).
        lazy_fs: bool,
        /// What a member does after a bit flip.
        after_flip: Mutex<Detection>,
    }

    fn sleeper() -> Child {
        Command::new("sleep").arg("600").spawn().unwrap()
    }

    impl FakeCluster {
        fn new(n: usize, leader: Option<&str>) -> Self {
            let members: Vec<String> = (1..=n).map(|i| format!("n{i}")).collect();
            let children = members.iter().map(|m| (m.clone(), sleeper())).collect();
            FakeCluster {
                members,
                leader: Mutex::new(leader.map(Into::into)),
                children: Mutex::new(children),
                log: Mutex::new(vec![]),
                lazy_fs: true,
                after_flip: Mutex::new(Detection::StoppedAfterStart),
            }
        }
        fn log(&self) -> Vec<String> {
            self.log.lock().unwrap().clone()
        }
        fn state(&self, member: &str) -> char {
            let pid = self.pid(member).unwrap();
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
            // "pid (comm) S ...": the state follows the closing parenthesis.
            stat.rsplit(')')
                .next()
                .unwrap()
                .trim()
                .chars()
                .next()
                .unwrap()
        }
    }

    impl Drop for FakeCluster {
        fn drop(&mut self) {
            for (_, mut c) in self.children.lock().unwrap().drain() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }

    impl Cluster for FakeCluster {
        fn members(&self) -> Vec<String> {
            self.members.clone()
        }
        fn others(&self) -> Vec<String> {
            vec!["namesrv".into(), "host".into()]
        }
        fn pid(&self, member: &str) -> Option<u32> {
            let mut children = self.children.lock().unwrap();
            let child = children.get_mut(member)?;
            // A killed child is down once reaped.
            match child.try_wait() {
                Ok(None) => Some(child.id()),
                _ => None,
            }
        }
        async fn leader(&self) -> Option<String> {
            self.leader.lock().unwrap().clone()
        }
        async fn restart(&self, member: &str) -> Result<(), ClusterError> {
            let mut children = self.children.lock().unwrap();
            let old = children
                .get_mut(member)
                .ok_or_else(|| ClusterError::UnknownMember(member.into()))?;
            let status = old.wait().unwrap();
            self.log
                .lock()
                .unwrap()
                .push(format!("restart {member} (signal {:?})", status.signal()));
            children.insert(member.into(), sleeper());
            Ok(())
        }
        async fn power_loss(&self, members: &[String]) -> Result<Vec<String>, ClusterError> {
            if !self.lazy_fs {
                return Err(ClusterError::NoLazyFs);
            }
            let mut children = self.children.lock().unwrap();
            for member in members {
                let child = children
                    .get_mut(member)
                    .ok_or_else(|| ClusterError::UnknownMember(member.clone()))?;
                child.kill().unwrap();
            }
            self.log
                .lock()
                .unwrap()
                .push(format!("power loss {}", members.join(" ")));
            Ok(members.to_vec())
        }
        async fn remove_member(&self, member: &str) -> Result<(), ClusterError> {
            self.log.lock().unwrap().push(format!("remove {member}"));
            Ok(())
        }
        async fn add_member(&self, member: &str) -> Result<(), ClusterError> {
            self.log.lock().unwrap().push(format!("add {member}"));
            Ok(())
        }
        fn set_clock_offset(&self, member: &str, offset_ms: i64) -> Result<(), ClusterError> {
            self.log
                .lock()
                .unwrap()
                .push(format!("clock {member} {offset_ms:+}ms"));
            Ok(())
        }
        async fn flip_bit(
            &self,
            member: &str,
            file: CorruptFile,
            choice: u64,
        ) -> Result<crate::nemesis::BitFlipReport, ClusterError> {
            let mut children = self.children.lock().unwrap();
            let child = children
                .get_mut(member)
                .ok_or_else(|| ClusterError::UnknownMember(member.into()))?;
            child.kill().unwrap();
            child.wait().unwrap();
            self.log
                .lock()
                .unwrap()
                .push(format!("flip {member} {file:?} {choice}"));
            let after = *self.after_flip.lock().unwrap();
            let refused = match after {
                Detection::RefusedToStart => Some("corrupt: refused".to_string()),
                // Exits at once, as a member whose scrub found the damage.
                Detection::StoppedAfterStart => {
                    children.insert(member.into(), Command::new("true").spawn().unwrap());
                    None
                }
                Detection::Running => {
                    children.insert(member.into(), sleeper());
                    None
                }
            };
            Ok(crate::nemesis::BitFlipReport {
                file: "raft/log/00000000000000000000.log".into(),
                position: 42,
                bit: 3,
                refused,
            })
        }
        fn set_space_left(&self, member: &str, left: Option<u64>) -> Result<(), ClusterError> {
            if !self.lazy_fs {
                return Err(ClusterError::NoLazyFs);
            }
            self.log
                .lock()
                .unwrap()
                .push(format!("space {member} {left:?}"));
            Ok(())
        }
        fn log_tail(&self, member: &str) -> String {
            format!("started\nERROR {member}: corrupt record in 00000000000000000000.log\n")
        }
    }

    #[derive(Default)]
    struct FakeNet {
        faults: Mutex<Faults>,
        calls: Mutex<Vec<String>>,
        fail: Mutex<bool>,
    }

    impl FakeNet {
        fn call(&self, what: String, change: impl FnOnce(&mut Faults)) -> Result<(), NetError> {
            self.calls.lock().unwrap().push(what);
            if *self.fail.lock().unwrap() {
                return Err(NetError::Setup("injected failure".into()));
            }
            change(&mut self.faults.lock().unwrap());
            Ok(())
        }
    }

    impl Network for FakeNet {
        async fn partition(&self, a: &[String], b: &[String]) -> Result<(), NetError> {
            self.call(format!("partition {a:?} {b:?}"), |f| f.partition(a, b))
        }
        async fn one_way(&self, from: &[String], to: &[String]) -> Result<(), NetError> {
            self.call(format!("one_way {from:?} {to:?}"), |f| f.one_way(from, to))
        }
        async fn lossy(&self, a: &[String], b: &[String], p: u8) -> Result<(), NetError> {
            self.call(format!("lossy {p}"), |f| f.lossy(a, b, p))
        }
        async fn heal(&self) -> Result<(), NetError> {
            self.call("heal".into(), Faults::clear)
        }
    }

    /// Polls `cond` until it holds (signals are delivered asynchronously), for at most 5 s.
    async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
        for _ in 0..500 {
            if cond() {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        panic!("timed out waiting until {what}");
    }

    fn step(window: u64, start_ms: u64, stop_ms: u64, fault: Fault) -> Step {
        Step {
            window,
            start_ms,
            stop_ms,
            fault,
            choice: 0,
        }
    }

    #[tokio::test]
    async fn kill_restarts_and_pause_resumes_real_processes() {
        let dir = tempfile::tempdir().unwrap();
        let (rec, writer) = HistoryWriter::create(&dir.path().join("h.jsonl")).unwrap();
        let cluster = Arc::new(FakeCluster::new(3, Some("n2")));
        let net = Arc::new(FakeNet::default());
        let mut ex = Executor::new(cluster.clone(), net.clone(), rec);

        let kill = step(
            1,
            0,
            0,
            Fault::Kill {
                target: KillTarget::Leader,
            },
        );
        ex.start(&kill).await.unwrap();
        eventually("n2 is down", || cluster.pid("n2").is_none()).await;
        ex.stop(1).await.unwrap();
        assert_eq!(cluster.log(), vec!["restart n2 (signal Some(9))"]);
        assert!(cluster.pid("n2").is_some());

        let pause = step(
            2,
            0,
            0,
            Fault::Pause {
                target: PauseTarget::Leader,
            },
        );
        ex.start(&pause).await.unwrap();
        eventually("n2 is stopped", || cluster.state("n2") == 'T').await;
        ex.stop(2).await.unwrap();
        eventually("n2 is resumed", || cluster.state("n2") != 'T').await;

        let remove = step(
            3,
            0,
            0,
            Fault::Membership {
                change: MembershipChange::RemoveFollower,
            },
        );
        ex.start(&remove).await.unwrap();
        ex.stop(3).await.unwrap();
        assert_eq!(&cluster.log()[1..], ["remove n1", "add n1"]);

        let skew = step(
            4,
            0,
            0,
            Fault::ClockSkew {
                target: KillTarget::Leader,
                offset_secs: -90,
            },
        );
        ex.start(&skew).await.unwrap();
        assert_eq!(ex.active_targets(4), Some(vec!["n2".into()]));
        assert_eq!(cluster.log().last().unwrap(), "clock n2 -90000ms");
        assert!(cluster.pid("n2").is_some(), "a skewed member keeps running");
        ex.stop(4).await.unwrap();
        assert_eq!(&cluster.log()[3..], ["clock n2 -90000ms", "clock n2 +0ms"]);
        assert!(ex.active_windows().is_empty());
        drop(ex);
        writer.close().await.unwrap();
    }

    #[tokio::test]
    async fn power_loss_kills_every_target_and_restarts_them_at_the_stop() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("h.jsonl");
        let (rec, writer) = HistoryWriter::create(&path).unwrap();
        let cluster = Arc::new(FakeCluster::new(3, Some("n2")));
        let net = Arc::new(FakeNet::default());
        let mut ex = Executor::new(cluster.clone(), net, rec);
        let all = Fault::PowerLoss {
            target: KillTarget::All,
        };
        ex.start(&step(1, 0, 0, all.clone())).await.unwrap();
        assert_eq!(
            ex.active_targets(1),
            Some(vec!["n1".into(), "n2".into(), "n3".into()])
        );
        for member in ["n1", "n2", "n3"] {
            eventually("the member is down", || cluster.pid(member).is_none()).await;
        }
        ex.stop(1).await.unwrap();
        assert_eq!(cluster.log()[0], "power loss n1 n2 n3");
        assert_eq!(cluster.log().len(), 4, "{:?}", cluster.log());
        assert!(
            cluster.log()[1..]
                .iter()
                .all(|l| l.ends_with("(signal Some(9))"))
        );
        for member in ["n1", "n2", "n3"] {
            assert!(cluster.pid(member).is_some(), "{member} restarted");
        }
        // Without lazy filesystems, a power loss is skipped and nothing is killed.
        let mut plain = FakeCluster::new(3, Some("n1"));
        plain.lazy_fs = false;
        let plain = Arc::new(plain);
        let mut plain_ex = Executor::new(
            plain.clone(),
            Arc::new(FakeNet::default()),
            ex.recorder.clone(),
        );
        plain_ex.start(&step(2, 0, 0, all)).await.unwrap();
        assert!(plain_ex.active_windows().is_empty());
        assert!(plain.pid("n1").is_some());
        drop((ex, plain_ex));
        writer.close().await.unwrap();
        let history = read_history(&path).unwrap();
        let completions: Vec<(u64, OpType)> = history
            .ops
            .iter()
            .filter_map(|op| match (&op.call, op.kind) {
                (Call::Nemesis(n), kind) if kind != OpType::Invoke => Some((n.window, kind)),
                _ => None,
            })
            .collect();
        assert_eq!(
            completions,
            vec![(1, OpType::Ok), (1, OpType::Ok), (2, OpType::Fail)]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_schedule_runs_in_order_and_the_history_shows_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("h.jsonl");
        let (rec, writer) = HistoryWriter::create(&path).unwrap();
        let cluster = Arc::new(FakeCluster::new(3, Some("n1")));
        let net = Arc::new(FakeNet::default());
        let mut ex = Executor::new(cluster.clone(), net.clone(), rec);
        let schedule = Schedule {
            seed: 1,
            steps: vec![
                step(
                    1,
                    5_000,
                    9_000,
                    Fault::Partition {
                        shape: PartitionShape::IsolateLeader,
                    },
                ),
                step(2, 12_000, 16_000, Fault::Lossy { percent: 20 }),
                // Left in place at the heal-all (clipped by the final phase).
                step(
                    3,
                    20_000,
                    30_000,
                    Fault::Partition {
                        shape: PartitionShape::MajorityMinority,
                    },
                ),
            ],
            heal_all_ms: 30_000,
            run_ms: 40_000,
        };
        let cancel = CancellationToken::new();
        let t0 = Instant::now();
        ex.run(&schedule, &cancel).await.unwrap();
        let took = t0.elapsed();
        assert!(took >= std::time::Duration::from_millis(30_000), "{took:?}");
        assert!(took < std::time::Duration::from_millis(31_000), "{took:?}");
        drop(ex);
        writer.close().await.unwrap();

        let calls = net.calls.lock().unwrap().clone();
        assert_eq!(calls.len(), 7, "{calls:?}");
        assert!(calls[0].starts_with("partition [\"n1\"] [\"n2\", \"n3\", \"namesrv\", \"host\"]"));
        assert_eq!(calls[1], "heal");
        assert_eq!(calls[2], "lossy 20");
        assert_eq!(calls[3], "heal");
        assert!(calls[4].starts_with("partition"));
        // heal-all: undo window 3, then the safety-net heal.
        assert_eq!(&calls[5..], ["heal", "heal"]);
        assert!(net.faults.lock().unwrap().is_empty());

        let history = read_history(&path).unwrap();
        let report = checker::availability::analyze(&history);
        let windows: Vec<(u64, &str, Option<u64>, Option<u64>)> = report
            .windows
            .iter()
            .map(|w| (w.window, w.outcome.as_str(), w.start_ms, w.end_ms))
            .collect();
        assert_eq!(
            windows,
            vec![
                (1, "installed", Some(5_000), Some(9_000)),
                (2, "installed", Some(12_000), Some(16_000)),
                (3, "installed", Some(20_000), Some(30_000)),
            ]
        );
        assert_eq!(report.recovery.unwrap().heal_ms, 30_000);
    }

    #[tokio::test]
    async fn skipped_and_failed_faults_are_recorded_as_such() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("h.jsonl");
        let (rec, writer) = HistoryWriter::create(&path).unwrap();
        let cluster = Arc::new(FakeCluster::new(3, None));
        let net = Arc::new(FakeNet::default());
        let mut ex = Executor::new(cluster.clone(), net.clone(), rec);
        // No leader: skipped.
        ex.start(&step(1, 0, 0, Fault::StaleRoute)).await.unwrap();
        ex.stop(1).await.unwrap();
        // The network fails: indeterminate, plus a harness error.
        *net.fail.lock().unwrap() = true;
        ex.start(&step(2, 0, 0, Fault::Lossy { percent: 5 }))
            .await
            .unwrap();
        *net.fail.lock().unwrap() = false;
        ex.heal_all(3).await.unwrap();
        drop(ex);
        writer.close().await.unwrap();

        let history = read_history(&path).unwrap();
        let completions: Vec<(u64, OpType)> = history
            .ops
            .iter()
            .filter_map(|op| match (&op.call, op.kind) {
                (Call::Nemesis(n), kind) if kind != OpType::Invoke => Some((n.window, kind)),
                _ => None,
            })
            .collect();
        assert_eq!(
            completions,
            vec![(1, OpType::Fail), (2, OpType::Info), (3, OpType::Ok)]
        );
        let summary = checker::all(&history, &CheckOptions::default());
        assert_eq!(summary.harness_error_count, 1);
        assert_eq!(summary.exit_code, EXIT_INCOMPLETE);
    }

    #[tokio::test]
    async fn a_bit_flip_records_how_the_member_took_it_and_replaces_it_at_the_stop() {
        let dir = tempfile::tempdir().unwrap();
        let (rec, writer) = HistoryWriter::create(&dir.path().join("h.jsonl")).unwrap();
        let cluster = Arc::new(FakeCluster::new(3, Some("n1")));
        let net = Arc::new(FakeNet::default());
        let mut ex = Executor::new(cluster.clone(), net, rec);
        let segment = Fault::BitFlip {
            file: CorruptFile::Segment,
        };
        let state = Fault::BitFlip {
            file: CorruptFile::StateMachine,
        };
        // A segment flip the member finds: the outcome says so, and the stop replaces it.
        ex.start(&step(1, 0, 0, segment.clone())).await.unwrap();
        ex.stop(1).await.unwrap();
        // A state machine flip that redb repaired: the member runs on and is kept.
        *cluster.after_flip.lock().unwrap() = Detection::Running;
        ex.start(&step(2, 0, 0, state)).await.unwrap();
        ex.stop(2).await.unwrap();
        // A full disk is filled and emptied again.
        let full = Fault::DiskFull {
            target: KillTarget::Leader,
        };
        ex.start(&step(3, 0, 0, full)).await.unwrap();
        ex.stop(3).await.unwrap();
        let log = cluster.log();
        assert_eq!(
            log,
            vec![
                "flip n1 Segment 0",
                "remove n1",
                "add n1",
                "flip n1 StateMachine 0",
                "space n1 Some(0)",
                "space n1 None",
            ],
            "{log:?}"
        );
        drop(ex);
        writer.close().await.unwrap();
        let history = read_history(&dir.path().join("h.jsonl")).unwrap();
        let outcomes: Vec<CorruptionOutcome> = history
            .ops
            .iter()
            .filter_map(|e| match &e.call {
                Call::Nemesis(op) if e.kind == OpType::Ok => op.corruption.clone(),
                _ => None,
            })
            .collect();
        assert_eq!(outcomes.len(), 2, "{outcomes:?}");
        assert_eq!(outcomes[0].detection, Detection::StoppedAfterStart);
        assert!(
            outcomes[0]
                .reason
                .as_deref()
                .is_some_and(|r| r.contains("corrupt record in 00000000000000000000.log")),
            "{outcomes:?}"
        );
        assert_eq!(outcomes[1].detection, Detection::Running);
    }

    #[tokio::test]
    async fn cancel_skips_to_the_heal_all() {
        let dir = tempfile::tempdir().unwrap();
        let (rec, writer) = HistoryWriter::create(&dir.path().join("h.jsonl")).unwrap();
        let cluster = Arc::new(FakeCluster::new(3, Some("n1")));
        let net = Arc::new(FakeNet::default());
        let mut ex = Executor::new(cluster, net.clone(), rec);
        let schedule = Schedule {
            seed: 1,
            steps: vec![step(
                1,
                0,
                3_600_000,
                Fault::Partition {
                    shape: PartitionShape::IsolateLeader,
                },
            )],
            heal_all_ms: 3_600_000,
            run_ms: 3_600_000,
        };
        let cancel = CancellationToken::new();
        let canceller = cancel.clone();
        let watcher = net.clone();
        let trigger = tokio::spawn(async move {
            // Cancel as soon as the partition is in place.
            eventually("the partition is in place", || {
                !watcher.faults.lock().unwrap().is_empty()
            })
            .await;
            canceller.cancel();
        });
        tokio::time::timeout(
            std::time::Duration::from_secs(10),
            ex.run(&schedule, &cancel),
        )
        .await
        .expect("cancel ends the run promptly")
        .unwrap();
        trigger.await.unwrap();
        assert!(net.faults.lock().unwrap().is_empty(), "healed on cancel");
        drop(ex);
        writer.close().await.unwrap();
    }
}
