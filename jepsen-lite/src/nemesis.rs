//! The fault vocabulary and how a fault becomes concrete actions on a cluster.
//!
//! A [`Fault`] is what the schedule asks for ("isolate the leader"). At the moment it starts, the
//! nemesis looks at the cluster ([`ClusterView`]: members, leader, other nodes) and [`plan`]
//! turns the fault into a [`Plan`] naming nodes ("cut n2 from n1, n3, namesrv, host"). Random
//! choices ("which follower") come from the schedule's per-step `choice`, so a seed replays them.
//! The executor (`executor.rs`) carries plans out through the [`crate::net::Network`] and
//! [`Cluster`] traits and records every start and stop in the history.

use std::future::Future;

use serde::{Deserialize, Serialize};

/// Shapes of network partition among the group's members.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PartitionShape {
    /// The leader cut off from every other node (members, NameServer, clients).
    IsolateLeader,
    /// One follower cut off from every other node.
    IsolateFollower,
    /// A minority of members cut off from the majority (the leader may be on either side).
    MajorityMinority,
    /// Two halves that cannot see each other, plus one member that sees both.
    Bridge,
    /// The leader's packets to the other members are dropped; theirs still reach it.
    OneWayFromLeader,
    /// The other members' packets to the leader are dropped; the leader's still reach them.
    OneWayToLeader,
}

/// Which members a kill -9 (then restart), or a power loss, hits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KillTarget {
    One,
    Leader,
    Minority,
    All,
}

/// Which members a SIGSTOP (then SIGCONT) hits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PauseTarget {
    Leader,
    Minority,
}

/// Membership changes made while other faults come and go; undone (member re-added) at stop.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MembershipChange {
    RemoveFollower,
    RemoveLeader,
}

/// Which file of a member a bit flip damages.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CorruptFile {
    /// A sealed (finalized) commit log segment: the member must find it (its scrub reads
    /// every sealed segment at start) and stop, refusing to start again with that log.
    Segment,
    /// The state machine's database: the member refuses to open it, or redb repairs it.
    StateMachine,
}

/// One fault of the issue's vocabulary, as written in the schedule and the history.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Fault {
    Partition {
        shape: PartitionShape,
    },
    /// The leader cut off from its peers but still reachable by clients and the NameServer.
    StaleRoute,
    Kill {
        target: KillTarget,
    },
    /// kill -9 of the targets at once, then everything their lazy filesystems hold unsynced
    /// is dropped (as a power loss would); they restart at the stop. Needs a cluster whose
    /// members run on lazy filesystems (skipped otherwise).
    PowerLoss {
        target: KillTarget,
    },
    Pause {
        target: PauseTarget,
    },
    /// Drop this percentage of packets on every member-to-member link.
    Lossy {
        percent: u8,
    },
    Membership {
        change: MembershipChange,
    },
    /// The wall clock of the targets runs `offset_secs` seconds off (negative: behind) while
    /// they keep running; set right at stop. Raft's timing uses the monotonic clock; what a
    /// leader decides by wall time (due delays and timers, transaction checks, retention,
    /// store timestamps) follows the skewed clock.
    ClockSkew {
        target: KillTarget,
        offset_secs: i32,
    },
    /// One member killed, one bit of one of its files flipped on disk, the member started
    /// again. Whatever it does (refuse to start, stop when its scrub finds the damage, or run
    /// on when redb repaired its file), no corrupt message may be delivered; a member that
    /// stopped is replaced at stop (removed, its data cleared, added back as a fresh member).
    BitFlip {
        file: CorruptFile,
    },
    /// The targets' data filesystem is full (no file may grow); room again at stop. Needs lazy
    /// filesystems (skipped otherwise). A full member stops taking writes; the group goes on
    /// with the others.
    DiskFull {
        target: KillTarget,
    },
    /// The final phase: undo everything (network healed, paused resumed, killed restarted,
    /// removed members added back).
    HealAll,
}

impl Fault {
    /// Every fault the issue names, with the loss rate used for lossy links.
    pub fn vocabulary(lossy_percent: u8) -> Vec<Fault> {
        use PartitionShape::*;
        let mut all: Vec<Fault> = [
            IsolateLeader,
            IsolateFollower,
            MajorityMinority,
            Bridge,
            OneWayFromLeader,
            OneWayToLeader,
        ]
        .into_iter()
        .map(|shape| Fault::Partition { shape })
        .collect();
        all.push(Fault::StaleRoute);
        for target in [
            KillTarget::One,
            KillTarget::Leader,
            KillTarget::Minority,
            KillTarget::All,
        ] {
            all.push(Fault::Kill { target });
        }
        for target in [KillTarget::One, KillTarget::Minority, KillTarget::All] {
            all.push(Fault::PowerLoss { target });
        }
        for target in [PauseTarget::Leader, PauseTarget::Minority] {
            all.push(Fault::Pause { target });
        }
        all.push(Fault::Lossy {
            percent: lossy_percent,
        });
        for change in [
            MembershipChange::RemoveFollower,
            MembershipChange::RemoveLeader,
        ] {
            all.push(Fault::Membership { change });
        }
        all.extend(Fault::clock_skews());
        all.extend(Fault::disk_faults());
        all
    }

    /// Bit flips in a sealed segment and in the state machine's file, and full disks.
    pub fn disk_faults() -> Vec<Fault> {
        vec![
            Fault::BitFlip {
                file: CorruptFile::Segment,
            },
            Fault::BitFlip {
                file: CorruptFile::StateMachine,
            },
            Fault::DiskFull {
                target: KillTarget::One,
            },
            Fault::DiskFull {
                target: KillTarget::Leader,
            },
        ]
    }

    /// Clock skew of seconds to minutes, ahead and behind, on the leader or one member.
    pub fn clock_skews() -> Vec<Fault> {
        [
            (KillTarget::Leader, 120),
            (KillTarget::Leader, -120),
            (KillTarget::One, 5),
            (KillTarget::One, -30),
        ]
        .into_iter()
        .map(|(target, offset_secs)| Fault::ClockSkew {
            target,
            offset_secs,
        })
        .collect()
    }

    /// Whether the fault needs to know the current leader.
    pub fn needs_leader(&self) -> bool {
        matches!(
            self,
            Fault::Partition {
                shape: PartitionShape::IsolateLeader
                    | PartitionShape::OneWayFromLeader
                    | PartitionShape::OneWayToLeader
            } | Fault::StaleRoute
                | Fault::Kill {
                    target: KillTarget::Leader
                }
                | Fault::PowerLoss {
                    target: KillTarget::Leader
                }
                | Fault::Pause {
                    target: PauseTarget::Leader
                }
                | Fault::Membership {
                    change: MembershipChange::RemoveLeader
                }
                | Fault::ClockSkew {
                    target: KillTarget::Leader,
                    ..
                }
                | Fault::DiskFull {
                    target: KillTarget::Leader
                }
        )
    }
}

impl std::fmt::Display for Fault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Fault::Partition { shape } => write!(f, "partition-{}", snake(shape)),
            Fault::StaleRoute => write!(f, "stale-route"),
            Fault::Kill { target } => write!(f, "kill-{}", snake(target)),
            Fault::PowerLoss { target } => write!(f, "power-loss-{}", snake(target)),
            Fault::Pause { target } => write!(f, "pause-{}", snake(target)),
            Fault::Lossy { percent } => write!(f, "lossy-{percent}pct"),
            Fault::Membership { change } => write!(f, "membership-{}", snake(change)),
            Fault::ClockSkew {
                target,
                offset_secs,
            } => write!(f, "clock-skew-{}-{offset_secs:+}s", snake(target)),
            Fault::BitFlip { file } => write!(f, "bit-flip-{}", snake(file)),
            Fault::DiskFull { target } => write!(f, "disk-full-{}", snake(target)),
            Fault::HealAll => write!(f, "heal-all"),
        }
    }
}

/// The serde name of a unit variant, for display.
fn snake<T: Serialize>(value: &T) -> String {
    match serde_json::to_value(value) {
        Ok(serde_json::Value::String(s)) => s.replace('_', "-"),
        _ => "?".into(),
    }
}

/// What the nemesis knows about the cluster when a fault starts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterView {
    /// The group's current voters, by name.
    pub members: Vec<String>,
    pub leader: Option<String>,
    /// Nodes that are not group members but share the network: NameServers, the client host.
    pub others: Vec<String>,
}

/// A fault resolved to nodes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Plan {
    /// Cut every node of `a` from every node of `b`, both ways.
    Partition {
        a: Vec<String>,
        b: Vec<String>,
    },
    /// Drop packets from each of `from` to each of `to`.
    OneWay {
        from: Vec<String>,
        to: Vec<String>,
    },
    /// Drop `percent`% of packets between every pair of `nodes`.
    Lossy {
        nodes: Vec<String>,
        percent: u8,
    },
    /// SIGKILL these members; restart them at stop.
    Kill(Vec<String>),
    /// SIGKILL these members, drop their unsynced data; restart them at stop.
    PowerLoss(Vec<String>),
    /// SIGSTOP these members; SIGCONT them at stop.
    Pause(Vec<String>),
    /// Remove this member from the voters; add it back at stop.
    RemoveMember(String),
    /// Shift these members' wall clocks by `offset_ms`; back to 0 at stop.
    ClockSkew {
        nodes: Vec<String>,
        offset_ms: i64,
    },
    /// Kill this member, flip a bit of `file` (picked with `choice`), start it again; replace
    /// it at stop if it stopped.
    BitFlip {
        node: String,
        file: CorruptFile,
        choice: u64,
    },
    /// Fill these members' data filesystems; room again at stop.
    DiskFull(Vec<String>),
    HealAll,
}

impl Plan {
    /// The nodes the plan aims at, for the history's `targets`.
    pub fn targets(&self) -> Vec<String> {
        match self {
            Plan::Partition { a, .. } => a.clone(),
            Plan::OneWay { from, .. } => from.clone(),
            Plan::Lossy { nodes, .. } => nodes.clone(),
            Plan::Kill(nodes) | Plan::PowerLoss(nodes) | Plan::Pause(nodes) => nodes.clone(),
            Plan::RemoveMember(node) => vec![node.clone()],
            Plan::ClockSkew { nodes, .. } | Plan::DiskFull(nodes) => nodes.clone(),
            Plan::BitFlip { node, .. } => vec![node.clone()],
            Plan::HealAll => vec![],
        }
    }
}

/// Why a fault was not installed (recorded as a `fail` nemesis completion: "skipped").
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Skip {
    #[error("no leader is known")]
    NoLeader,
    #[error("the fault needs at least {needed} members, the group has {have}")]
    TooFewMembers { needed: usize, have: usize },
}

/// The largest number of members that is still a minority.
pub fn minority_size(members: usize) -> usize {
    members.saturating_sub(1) / 2
}

/// `members` rotated by `choice` (a deterministic "random" order for picking targets).
fn rotated(members: &[String], choice: u64) -> Vec<String> {
    let mut sorted = members.to_vec();
    sorted.sort();
    if sorted.is_empty() {
        return sorted;
    }
    let len = sorted.len() as u64;
    // A choice is a full 64-bit draw; reduce it to a rotation.
    let by = usize::try_from(choice % len).unwrap_or(0);
    sorted.rotate_left(by);
    sorted
}

fn without(nodes: &[String], remove: &[String]) -> Vec<String> {
    nodes
        .iter()
        .filter(|n| !remove.contains(n))
        .cloned()
        .collect()
}

/// Resolves `fault` against the cluster as it is now. `choice` picks among equal candidates.
pub fn plan(fault: &Fault, view: &ClusterView, choice: u64) -> Result<Plan, Skip> {
    let members = &view.members;
    let leader = || view.leader.clone().ok_or(Skip::NoLeader);
    let need = |needed: usize| need_members(members, needed);
    let everyone: Vec<String> = members.iter().chain(&view.others).cloned().collect();
    let followers = |leader: &Option<String>| match leader {
        Some(l) => without(members, std::slice::from_ref(l)),
        None => members.clone(),
    };
    Ok(match fault {
        Fault::Partition { shape } => match shape {
            PartitionShape::IsolateLeader => {
                need(2)?;
                let l = leader()?;
                Plan::Partition {
                    b: without(&everyone, std::slice::from_ref(&l)),
                    a: vec![l],
                }
            }
            PartitionShape::IsolateFollower => {
                need(2)?;
                let pick = rotated(&followers(&view.leader), choice)
                    .into_iter()
                    .next()
                    .ok_or(Skip::TooFewMembers {
                        needed: 2,
                        have: members.len(),
                    })?;
                Plan::Partition {
                    b: without(&everyone, std::slice::from_ref(&pick)),
                    a: vec![pick],
                }
            }
            PartitionShape::MajorityMinority => {
                need(3)?;
                let order = rotated(members, choice);
                let (minority, majority) = order.split_at(minority_size(members.len()));
                Plan::Partition {
                    a: minority.to_vec(),
                    b: majority.to_vec(),
                }
            }
            PartitionShape::Bridge => {
                need(3)?;
                // The first of the rotated order is the bridge: it stays connected to both halves.
                let order = rotated(members, choice);
                let rest = &order[1..];
                let (left, right) = rest.split_at(rest.len() / 2);
                Plan::Partition {
                    a: left.to_vec(),
                    b: right.to_vec(),
                }
            }
            PartitionShape::OneWayFromLeader => {
                need(2)?;
                let l = leader()?;
                Plan::OneWay {
                    to: without(members, std::slice::from_ref(&l)),
                    from: vec![l],
                }
            }
            PartitionShape::OneWayToLeader => {
                need(2)?;
                let l = leader()?;
                Plan::OneWay {
                    from: without(members, std::slice::from_ref(&l)),
                    to: vec![l],
                }
            }
        },
        Fault::StaleRoute => {
            need(2)?;
            let l = leader()?;
            Plan::Partition {
                b: without(members, std::slice::from_ref(&l)),
                a: vec![l],
            }
        }
        Fault::Kill { target } => Plan::Kill(kill_targets(*target, view, choice)?),
        Fault::PowerLoss { target } => Plan::PowerLoss(kill_targets(*target, view, choice)?),
        Fault::Pause { target } => match target {
            PauseTarget::Leader => Plan::Pause(vec![leader()?]),
            PauseTarget::Minority => {
                need(3)?;
                Plan::Pause(
                    rotated(members, choice)
                        .into_iter()
                        .take(minority_size(members.len()))
                        .collect(),
                )
            }
        },
        Fault::Lossy { percent } => {
            need(2)?;
            let mut nodes = members.clone();
            nodes.sort();
            Plan::Lossy {
                nodes,
                percent: (*percent).min(100),
            }
        }
        Fault::Membership { change } => {
            need(3)?;
            match change {
                MembershipChange::RemoveLeader => Plan::RemoveMember(leader()?),
                MembershipChange::RemoveFollower => Plan::RemoveMember(
                    rotated(&followers(&view.leader), choice)
                        .into_iter()
                        .next()
                        .ok_or(Skip::TooFewMembers {
                            needed: 3,
                            have: members.len(),
                        })?,
                ),
            }
        }
        Fault::ClockSkew {
            target,
            offset_secs,
        } => Plan::ClockSkew {
            nodes: kill_targets(*target, view, choice)?,
            offset_ms: i64::from(*offset_secs) * 1000,
        },
        Fault::BitFlip { file } => {
            // The damaged member may be out until stop: the others must still be a majority
            // that can replace it.
            need(3)?;
            Plan::BitFlip {
                node: kill_targets(KillTarget::One, view, choice)?.remove(0),
                file: *file,
                choice,
            }
        }
        Fault::DiskFull { target } => Plan::DiskFull(kill_targets(*target, view, choice)?),
        Fault::HealAll => Plan::HealAll,
    })
}

/// `Ok` when the group has at least `needed` members.
fn need_members(members: &[String], needed: usize) -> Result<(), Skip> {
    if members.len() < needed {
        Err(Skip::TooFewMembers {
            needed,
            have: members.len(),
        })
    } else {
        Ok(())
    }
}

/// The members a kill or a power loss aimed at `target` hits.
fn kill_targets(target: KillTarget, view: &ClusterView, choice: u64) -> Result<Vec<String>, Skip> {
    let members = &view.members;
    let need = |needed: usize| need_members(members, needed);
    Ok(match target {
        KillTarget::One => {
            need(1)?;
            rotated(members, choice).into_iter().take(1).collect()
        }
        KillTarget::Leader => vec![view.leader.clone().ok_or(Skip::NoLeader)?],
        KillTarget::Minority => {
            need(3)?;
            rotated(members, choice)
                .into_iter()
                .take(minority_size(members.len()))
                .collect()
        }
        KillTarget::All => {
            need(1)?;
            let mut all = members.clone();
            all.sort();
            all
        }
    })
}

/// Errors from the cluster controller (implemented by the harness).
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("unknown member {0}")]
    UnknownMember(String),
    #[error("member {member}: {message}")]
    Control { member: String, message: String },
    #[error("membership change failed: {0}")]
    Membership(String),
    /// A power loss asked of a cluster whose members do not run on lazy filesystems.
    #[error("the members do not run on lazy filesystems")]
    NoLazyFs,
    /// A bit flip found no file of the kind asked for (no sealed segment yet).
    #[error("member {member} has no {what} to corrupt yet")]
    NothingToCorrupt { member: String, what: &'static str },
}

/// What the nemesis needs from the cluster under test. The harness implements it against its
/// processes (it owns the `Child` handles, so it also reaps killed ones on restart).
pub trait Cluster: Send + Sync {
    /// The group's voters as the harness configured them, by name (e.g. `n1`).
    fn members(&self) -> Vec<String>;
    /// Nodes outside the group that share the network (NameServers, the client host), so that
    /// "isolate" cuts them off too and "stale route" does not.
    fn others(&self) -> Vec<String>;
    /// The pid of a running member process (`None` when it is down).
    fn pid(&self, member: &str) -> Option<u32>;
    /// The current leader as the cluster reports it (admin HTTP or the NameServer).
    fn leader(&self) -> impl Future<Output = Option<String>> + Send;
    /// Power loss of `members` at once: SIGKILL every one that runs, wait until they have
    /// exited, then drop everything their lazy filesystems hold unsynced. Returns the members
    /// hit; [`ClusterError::NoLazyFs`] (nothing done) when the members run on ordinary disks.
    fn power_loss(
        &self,
        members: &[String],
    ) -> impl Future<Output = Result<Vec<String>, ClusterError>> + Send;
    /// Starts a member again after it was killed (same data directory, same address).
    fn restart(&self, member: &str) -> impl Future<Output = Result<(), ClusterError>> + Send;
    /// Removes a member from the voters through the leader.
    fn remove_member(&self, member: &str) -> impl Future<Output = Result<(), ClusterError>> + Send;
    /// Adds a member back as a voter through the leader.
    fn add_member(&self, member: &str) -> impl Future<Output = Result<(), ClusterError>> + Send;
    /// Sets a member's wall-clock offset (0: none); it follows within a fraction of a second,
    /// whether it runs now or starts later.
    fn set_clock_offset(&self, member: &str, offset_ms: i64) -> Result<(), ClusterError>;
    /// Kills `member`, flips one bit of `file` in its data directory (which file and where
    /// picked with `choice`; the write is synced), and starts it again. Returns what was
    /// flipped and whether the member refused to start. [`ClusterError::NothingToCorrupt`]
    /// (and the member is started again) when it has no such file yet.
    fn flip_bit(
        &self,
        member: &str,
        file: CorruptFile,
        choice: u64,
    ) -> impl Future<Output = Result<BitFlipReport, ClusterError>> + Send;
    /// How many more bytes the files of `member`'s data filesystem may grow by (`Some(0)`: a
    /// full disk), or no limit. [`ClusterError::NoLazyFs`] on ordinary disks.
    fn set_space_left(&self, member: &str, left: Option<u64>) -> Result<(), ClusterError>;
    /// The last lines of a member's log (for the history, when it stopped on its own).
    fn log_tail(&self, member: &str) -> String;
}

/// What [`Cluster::flip_bit`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BitFlipReport {
    /// The file, relative to the member's data directory.
    pub file: String,
    pub position: u64,
    pub bit: u8,
    /// The member's error when it refused to start.
    pub refused: Option<String>,
}

/// Signals the nemesis sends to member processes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProcessSignal {
    Kill,
    Stop,
    Cont,
    /// A clean stop (the harness's own teardown, not a fault).
    Term,
}

/// Errors sending a signal.
#[derive(Debug, thiserror::Error)]
pub enum SignalError {
    #[error("pid {pid} does not fit a pid_t")]
    BadPid { pid: u32 },
    #[error("cannot send {signal:?} to pid {pid}: {source}")]
    Send {
        pid: u32,
        signal: ProcessSignal,
        source: nix::errno::Errno,
    },
}

/// Sends a signal to one process. Uses `nix` (safe wrapper over kill(2)) rather than spawning the
/// `kill` program: no fork per fault, and a precise errno (ESRCH: already gone) on failure.
pub fn send_signal(pid: u32, signal: ProcessSignal) -> Result<(), SignalError> {
    use nix::sys::signal::{Signal, kill};
    use nix::unistd::Pid;
    let raw = i32::try_from(pid).map_err(|_| SignalError::BadPid { pid })?;
    if raw <= 0 {
        // 0 and negatives address process groups: never what a member fault means.
        return Err(SignalError::BadPid { pid });
    }
    let sig = match signal {
        ProcessSignal::Kill => Signal::SIGKILL,
        ProcessSignal::Stop => Signal::SIGSTOP,
        ProcessSignal::Cont => Signal::SIGCONT,
        ProcessSignal::Term => Signal::SIGTERM,
    };
    kill(Pid::from_raw(raw), sig).map_err(|source| SignalError::Send {
        pid,
        signal,
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(n: usize, leader: Option<usize>) -> ClusterView {
        ClusterView {
            members: (1..=n).map(|i| format!("n{i}")).collect(),
            leader: leader.map(|i| format!("n{i}")),
            others: vec!["namesrv".into(), "host".into()],
        }
    }

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn fault_json_names_are_stable() {
        let f = Fault::Partition {
            shape: PartitionShape::IsolateLeader,
        };
        assert_eq!(
            serde_json::to_string(&f).unwrap(),
            r#"{"kind":"partition","shape":"isolate_leader"}"#
        );
        assert_eq!(
            serde_json::to_string(&Fault::Lossy { percent: 20 }).unwrap(),
            r#"{"kind":"lossy","percent":20}"#
        );
        assert_eq!(f.to_string(), "partition-isolate-leader");
        let skew = Fault::ClockSkew {
            target: KillTarget::Leader,
            offset_secs: -120,
        };
        assert_eq!(skew.to_string(), "clock-skew-leader--120s");
        assert_eq!(
            serde_json::to_string(&skew).unwrap(),
            r#"{"kind":"clock_skew","target":"leader","offset_secs":-120}"#
        );
        assert_eq!(
            plan(&skew, &view(3, Some(2)), 0).unwrap(),
            Plan::ClockSkew {
                nodes: s(&["n2"]),
                offset_ms: -120_000
            }
        );
        for fault in Fault::vocabulary(10) {
            let back: Fault =
                serde_json::from_str(&serde_json::to_string(&fault).unwrap()).unwrap();
            assert_eq!(back, fault);
        }
    }

    #[test]
    fn isolate_leader_cuts_it_from_everyone_but_stale_route_only_from_peers() {
        let v = view(3, Some(2));
        let iso = plan(
            &Fault::Partition {
                shape: PartitionShape::IsolateLeader,
            },
            &v,
            0,
        )
        .unwrap();
        assert_eq!(
            iso,
            Plan::Partition {
                a: s(&["n2"]),
                b: s(&["n1", "n3", "namesrv", "host"])
            }
        );
        let stale = plan(&Fault::StaleRoute, &v, 0).unwrap();
        assert_eq!(
            stale,
            Plan::Partition {
                a: s(&["n2"]),
                b: s(&["n1", "n3"])
            }
        );
    }

    #[test]
    fn leader_faults_are_skipped_without_a_leader() {
        let v = view(3, None);
        for fault in Fault::vocabulary(10) {
            let result = plan(&fault, &v, 7);
            if fault.needs_leader() {
                assert_eq!(result, Err(Skip::NoLeader), "{fault}");
            } else {
                assert!(result.is_ok(), "{fault}: {result:?}");
            }
        }
    }

    #[test]
    fn minorities_are_minorities_and_choices_are_deterministic() {
        for n in [3usize, 5] {
            let v = view(n, Some(1));
            for choice in 0..10u64 {
                let Plan::Partition { a, b } = plan(
                    &Fault::Partition {
                        shape: PartitionShape::MajorityMinority,
                    },
                    &v,
                    choice,
                )
                .unwrap() else {
                    panic!("majority-minority is one partition");
                };
                assert_eq!(a.len(), minority_size(n));
                assert_eq!(a.len() + b.len(), n);
                assert!(a.iter().all(|x| !b.contains(x)));
                let again = plan(
                    &Fault::Partition {
                        shape: PartitionShape::MajorityMinority,
                    },
                    &v,
                    choice,
                )
                .unwrap();
                assert_eq!(again, Plan::Partition { a, b });
            }
            let Plan::Kill(killed) = plan(
                &Fault::Kill {
                    target: KillTarget::Minority,
                },
                &v,
                3,
            )
            .unwrap() else {
                panic!("kill plan");
            };
            assert_eq!(killed.len(), minority_size(n));
        }
        // Followers never include the leader.
        let v = view(3, Some(2));
        for choice in 0..6 {
            let Plan::Partition { a, .. } = plan(
                &Fault::Partition {
                    shape: PartitionShape::IsolateFollower,
                },
                &v,
                choice,
            )
            .unwrap() else {
                panic!("partition");
            };
            assert_ne!(a, s(&["n2"]));
        }
    }

    #[test]
    fn power_loss_hits_the_members_a_kill_would() {
        let v = view(5, Some(3));
        for target in [
            KillTarget::One,
            KillTarget::Leader,
            KillTarget::Minority,
            KillTarget::All,
        ] {
            for choice in 0..5 {
                let Plan::Kill(killed) = plan(&Fault::Kill { target }, &v, choice).unwrap() else {
                    panic!("kill plan");
                };
                let lost = plan(&Fault::PowerLoss { target }, &v, choice).unwrap();
                assert_eq!(lost, Plan::PowerLoss(killed.clone()));
                assert_eq!(lost.targets(), killed);
            }
        }
        let all = plan(
            &Fault::PowerLoss {
                target: KillTarget::All,
            },
            &v,
            0,
        )
        .unwrap();
        assert_eq!(all.targets(), s(&["n1", "n2", "n3", "n4", "n5"]));
        let f = Fault::PowerLoss {
            target: KillTarget::Minority,
        };
        assert_eq!(f.to_string(), "power-loss-minority");
        assert_eq!(
            serde_json::to_string(&f).unwrap(),
            r#"{"kind":"power_loss","target":"minority"}"#
        );
    }

    #[test]
    fn bridge_leaves_one_member_seeing_both_halves() {
        let v = view(5, Some(1));
        let Plan::Partition { a, b } = plan(
            &Fault::Partition {
                shape: PartitionShape::Bridge,
            },
            &v,
            0,
        )
        .unwrap() else {
            panic!("partition");
        };
        assert_eq!(a, s(&["n2", "n3"]));
        assert_eq!(b, s(&["n4", "n5"]));
    }

    #[test]
    fn signals_reach_a_process_we_started() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let pid = child.id();
        send_signal(pid, ProcessSignal::Stop).unwrap();
        send_signal(pid, ProcessSignal::Cont).unwrap();
        send_signal(pid, ProcessSignal::Kill).unwrap();
        let status = child.wait().unwrap();
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(status.signal(), Some(9));
        assert!(matches!(
            send_signal(0, ProcessSignal::Kill),
            Err(SignalError::BadPid { .. })
        ));
    }
}
