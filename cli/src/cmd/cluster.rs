//! `mq cluster status|health|wait|add-member|remove-member|transfer-leader` (health: see
//! `health.rs`): each broker group's Raft
//! cluster as its members report it (GET_BROKER_RUNTIME_INFO) next to the NameServer's view,
//! and membership changes through the leader's admin HTTP:
//!
//! - add-member: `POST /raft/add-learner` (returns once the learner has caught up), then
//!   `POST /raft/change-membership` with the voters plus the new member;
//! - remove-member: `/raft/change-membership` without it (or `/raft/remove-learner`); a
//!   removed leader steps down once that is committed and the others elect a new one; then
//!   UNREGISTER_BROKER on every NameServer so routes drop it at once;
//!
//!   both are `raftmq_client::admin_http::membership` (shared with jepsen-lite), given the
//!   leader as the NameServer and the members' runtime info show it ([`NameServerLeader`]);
//! - transfer-leader: `POST /raft/transfer-leader` on the leader (openraft's transfer: the
//!   leader stops proposing, the target catches up and wins an election the voters grant at
//!   once), which answers once the target leads.

use std::collections::{BTreeMap, BTreeSet};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow, bail};
use clap::Subcommand;
use raftmq_client::admin_http::membership::{
    FindLeader, LeaderView, Membership, MembershipWaits, POLL_INTERVAL, SETTLE_TIMEOUT,
};
use raftmq_protocol::header::UnregisterBrokerRequestHeader;
use serde::Serialize;

use crate::context::{Ctx, GroupView, MemberInfo};
use crate::output::{Table, opt, print_json};

/// Default bound of `mq cluster wait`.
pub const DEFAULT_WAIT_TIMEOUT_MS: u64 = 60_000;

#[derive(Subcommand, Debug)]
pub enum ClusterCommand {
    /// Every broker group: members, leader, term, commit and applied index, followers' lag,
    /// and the NameServer's view.
    Status {
        /// Only this broker group.
        #[arg(short = 'b', long)]
        broker_name: Option<String>,
    },
    /// Healthy when every group has a writable leader, every member answers and none lags;
    /// exit 0 healthy, 3 degraded, 4 no leader, 5 NameServer unreachable.
    Health(super::health::HealthArgs),
    /// Wait until `--groups` broker groups have a leader the NameServer lists in slot 0.
    Wait {
        #[arg(long, default_value_t = 1)]
        groups: usize,
        #[arg(long, default_value_t = DEFAULT_WAIT_TIMEOUT_MS)]
        timeout_ms: u64,
    },
    /// Add a member to a group: as a learner, then promoted to voter.
    AddMember {
        #[arg(short = 'b', long)]
        broker_name: String,
        /// The new member's remoting address (started with `mqbroker --join`); its node id
        /// and Raft address are asked from it.
        #[arg(long, required_unless_present_all = ["node_id", "raft_addr"])]
        addr: Option<String>,
        /// The new member's node id (instead of asking `--addr`).
        #[arg(long, requires = "raft_addr", conflicts_with = "addr")]
        node_id: Option<u64>,
        /// The new member's Raft address (instead of asking `--addr`).
        #[arg(long, requires = "node_id", conflicts_with = "addr")]
        raft_addr: Option<String>,
        /// Leave it a learner (no vote).
        #[arg(long)]
        learner_only: bool,
    },
    /// Remove a member from a group (a removed leader steps down once the change commits).
    RemoveMember {
        #[arg(short = 'b', long)]
        broker_name: String,
        #[arg(long)]
        node_id: u64,
    },
    /// Make a member the group's leader.
    TransferLeader {
        #[arg(short = 'b', long)]
        broker_name: String,
        #[arg(long)]
        node_id: u64,
    },
}

pub async fn run(ctx: &Ctx, command: ClusterCommand) -> anyhow::Result<ExitCode> {
    match command {
        ClusterCommand::Status { broker_name } => status(ctx, broker_name.as_deref()).await,
        ClusterCommand::Health(args) => super::health::run(ctx, args).await,
        ClusterCommand::Wait { groups, timeout_ms } => {
            wait(ctx, groups, Duration::from_millis(timeout_ms)).await
        }
        ClusterCommand::AddMember {
            broker_name,
            addr,
            node_id,
            raft_addr,
            learner_only,
        } => {
            add_member(
                ctx,
                &broker_name,
                addr.as_deref(),
                node_id.zip(raft_addr),
                learner_only,
            )
            .await
        }
        ClusterCommand::RemoveMember {
            broker_name,
            node_id,
        } => remove_member(ctx, &broker_name, node_id).await,
        ClusterCommand::TransferLeader {
            broker_name,
            node_id,
        } => transfer_leader(ctx, &broker_name, node_id).await,
    }
}

// ---- status ----

/// One member in `mq cluster status --json`.
#[derive(Serialize, Debug, Clone)]
pub struct MemberJson {
    /// Known from the member itself, its NameServer slot, or the leader's membership.
    pub node_id: Option<u64>,
    /// Remoting address; `None` for a member of the Raft membership the NameServer does not list.
    pub addr: Option<String>,
    /// It answered GET_BROKER_RUNTIME_INFO.
    pub up: bool,
    pub state: Option<String>,
    pub term: Option<u64>,
    pub leader: Option<u64>,
    pub last_log_index: Option<u64>,
    pub applied_index: Option<u64>,
    /// Entries behind the leader's last log index (from the leader's replication view).
    pub lag: Option<u64>,
    /// In the leader's membership: "voter", "learner", or `None` when not a member.
    pub role: Option<String>,
    pub admin_addr: Option<String>,
    pub raft_addr: Option<String>,
    /// The NameServer slots (brokerIds) this address holds; 0 is the leader slot.
    pub namesrv_slots: Vec<u64>,
    pub error: Option<String>,
}

/// One broker group in `mq cluster status --json`.
#[derive(Serialize, Debug, Clone)]
pub struct GroupJson {
    pub broker_name: String,
    pub cluster: String,
    pub leader: Option<u64>,
    pub term: Option<u64>,
    pub commit_index: Option<u64>,
    pub voters: Vec<u64>,
    pub learners: Vec<u64>,
    /// The address in the NameServer's slot 0.
    pub namesrv_leader_addr: Option<String>,
    /// The NameServer's slots: brokerId (as a string key) -> address.
    pub namesrv_members: BTreeMap<String, String>,
    /// The NameServer's slot 0 holds the Raft leader's address.
    pub leader_registered: bool,
    /// The leader takes writes now (its group has acknowledged it recently).
    pub leader_writable: bool,
    pub members: Vec<MemberJson>,
}

/// `mq cluster status --json`.
#[derive(Serialize, Debug)]
pub struct StatusJson {
    pub namesrv: Vec<String>,
    pub groups: Vec<GroupJson>,
}

fn group_json(view: &GroupView) -> GroupJson {
    let leader = view.leader();
    let role = |id: u64| {
        leader.and_then(|leader| {
            if leader.voters.contains(&id) {
                Some("voter".to_owned())
            } else if leader.learners.contains(&id) {
                Some("learner".to_owned())
            } else {
                None
            }
        })
    };
    let mut members: Vec<MemberJson> = view
        .members
        .iter()
        .map(|member| match &member.info {
            Ok(info) => MemberJson {
                node_id: Some(info.node_id),
                addr: Some(member.addr.clone()),
                up: true,
                state: Some(info.state.clone()),
                term: Some(info.term),
                leader: info.leader,
                last_log_index: Some(info.last_log_index),
                applied_index: Some(info.applied_index),
                lag: leader.and_then(|leader| {
                    if leader.node_id == info.node_id {
                        Some(0)
                    } else {
                        leader.lag_of(info.node_id)
                    }
                }),
                role: role(info.node_id),
                admin_addr: Some(info.admin_addr.clone()),
                raft_addr: Some(info.raft_addr.clone()),
                namesrv_slots: member.namesrv_slots.clone(),
                error: None,
            },
            Err(err) => {
                // Followers register at their node id; the leader slot says nothing.
                let node_id = member
                    .namesrv_slots
                    .iter()
                    .copied()
                    .filter(|slot| *slot != 0)
                    .max();
                MemberJson {
                    node_id,
                    addr: Some(member.addr.clone()),
                    up: false,
                    state: None,
                    term: None,
                    leader: None,
                    last_log_index: None,
                    applied_index: None,
                    lag: node_id.and_then(|id| leader.and_then(|leader| leader.lag_of(id))),
                    role: node_id.and_then(role),
                    admin_addr: None,
                    raft_addr: node_id
                        .and_then(|id| leader.and_then(|leader| leader.nodes.get(&id).cloned())),
                    namesrv_slots: member.namesrv_slots.clone(),
                    error: Some(err.clone()),
                }
            }
        })
        .collect();
    // Members of the Raft membership the NameServer does not list (not started, or expired).
    if let Some(leader) = leader {
        let listed: BTreeSet<u64> = members.iter().filter_map(|m| m.node_id).collect();
        for (id, raft_addr) in &leader.nodes {
            if !listed.contains(id) {
                members.push(MemberJson {
                    node_id: Some(*id),
                    addr: None,
                    up: false,
                    state: None,
                    term: None,
                    leader: None,
                    last_log_index: None,
                    applied_index: None,
                    lag: leader.lag_of(*id),
                    role: role(*id),
                    admin_addr: None,
                    raft_addr: Some(raft_addr.clone()),
                    namesrv_slots: Vec::new(),
                    error: Some("not registered in the NameServer".to_owned()),
                });
            }
        }
    }
    members.sort_by_key(|member| (member.node_id.unwrap_or(u64::MAX), member.addr.clone()));
    let namesrv_leader_addr = view.namesrv_leader().map(str::to_owned);
    GroupJson {
        broker_name: view.broker_name.clone(),
        cluster: view.cluster.clone(),
        leader: leader.map(|leader| leader.node_id),
        term: leader.map(|leader| leader.term),
        commit_index: leader.and_then(|leader| leader.commit_index),
        voters: leader.map_or_else(Vec::new, |l| l.voters.iter().copied().collect()),
        learners: leader.map_or_else(Vec::new, |l| l.learners.iter().copied().collect()),
        leader_registered: leader.is_some_and(|leader| {
            namesrv_leader_addr.as_deref() == Some(leader.remoting_addr.as_str())
        }),
        leader_writable: leader.is_some_and(|leader| leader.writable),
        namesrv_leader_addr,
        namesrv_members: view
            .namesrv_members
            .iter()
            .map(|(id, addr)| (id.to_string(), addr.clone()))
            .collect(),
        members,
    }
}

fn print_status(status: &StatusJson) {
    outln!("NameServer {}", status.namesrv.join(";"));
    if status.groups.is_empty() {
        outln!("no broker group is registered");
    }
    for group in &status.groups {
        outln!();
        match group.leader {
            Some(leader) => outln!(
                "broker group {} (cluster {}): leader node {leader}, term {}, commit index {}, voters {:?}, learners {:?}",
                group.broker_name,
                group.cluster,
                opt(group.term),
                opt(group.commit_index),
                group.voters,
                group.learners
            ),
            None => outln!(
                "broker group {} (cluster {}): NO LEADER reachable",
                group.broker_name,
                group.cluster
            ),
        }
        outln!(
            "NameServer view: slot 0 (leader) = {}{}",
            group.namesrv_leader_addr.as_deref().unwrap_or("none"),
            if group.leader_registered {
                ", the Raft leader"
            } else if group.leader.is_some() {
                ", NOT the Raft leader yet"
            } else {
                ""
            }
        );
        let mut table = Table::new(&[
            "NODE", "STATE", "ROLE", "UP", "TERM", "LAST_LOG", "APPLIED", "LAG", "REMOTING",
            "ADMIN", "RAFT", "NS_SLOTS",
        ]);
        for member in &group.members {
            table.row(vec![
                opt(member.node_id),
                member.state.clone().unwrap_or_else(|| "-".to_owned()),
                member.role.clone().unwrap_or_else(|| "-".to_owned()),
                if member.up { "up" } else { "DOWN" }.to_owned(),
                opt(member.term),
                opt(member.last_log_index),
                opt(member.applied_index),
                opt(member.lag),
                member.addr.clone().unwrap_or_else(|| "-".to_owned()),
                member.admin_addr.clone().unwrap_or_else(|| "-".to_owned()),
                member.raft_addr.clone().unwrap_or_else(|| "-".to_owned()),
                if member.namesrv_slots.is_empty() {
                    "-".to_owned()
                } else {
                    member
                        .namesrv_slots
                        .iter()
                        .map(u64::to_string)
                        .collect::<Vec<_>>()
                        .join(",")
                },
            ]);
        }
        table.print();
    }
}

async fn collect_status(ctx: &Ctx, only: Option<&str>) -> anyhow::Result<StatusJson> {
    let groups = ctx.discover(only).await?;
    Ok(StatusJson {
        namesrv: ctx.namesrv.addrs().to_vec(),
        groups: groups.iter().map(group_json).collect(),
    })
}

async fn status(ctx: &Ctx, only: Option<&str>) -> anyhow::Result<ExitCode> {
    let status = collect_status(ctx, only).await?;
    if ctx.json {
        print_json(&status)?;
    } else {
        print_status(&status);
    }
    Ok(ExitCode::SUCCESS)
}

async fn wait(ctx: &Ctx, groups: usize, timeout: Duration) -> anyhow::Result<ExitCode> {
    let deadline = Instant::now() + timeout;
    loop {
        let problem = match collect_status(ctx, None).await {
            Ok(status) => {
                let ready = status
                    .groups
                    .iter()
                    .filter(|group| group.leader_registered && group.leader_writable)
                    .count();
                if ready >= groups {
                    if ctx.json {
                        print_json(&status)?;
                    } else {
                        outln!(
                            "{ready} broker group(s) have a registered leader that takes writes"
                        );
                    }
                    return Ok(ExitCode::SUCCESS);
                }
                format!(
                    "{ready} of {groups} broker group(s) have a leader registered in the NameServer that takes writes"
                )
            }
            Err(err) => format!("{err:#}"),
        };
        if Instant::now() >= deadline {
            bail!("not ready within {} ms: {problem}", timeout.as_millis());
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

// ---- membership ----

/// `mq cluster add-member|remove-member|transfer-leader --json`.
#[derive(Serialize, Debug)]
pub struct MembershipJson {
    pub broker_name: String,
    pub node_id: u64,
    pub leader: Option<u64>,
    pub term: Option<u64>,
    pub voters: Vec<u64>,
    pub learners: Vec<u64>,
    /// remove-member: the addresses unregistered from the NameServers.
    pub unregistered: Vec<String>,
}

impl MembershipJson {
    fn new(broker_name: &str, node_id: u64, leader: &LeaderView) -> Self {
        MembershipJson {
            broker_name: broker_name.to_owned(),
            node_id,
            leader: Some(leader.node_id),
            term: Some(leader.term),
            voters: leader.voters.iter().copied().collect(),
            learners: leader.learners.iter().copied().collect(),
            unregistered: Vec::new(),
        }
    }
}

/// `mq`'s way to a group's leader: the members the NameServer lists, each asked for its
/// runtime info; the one that says it leads (the highest term if several do).
struct NameServerLeader<'a> {
    ctx: &'a Ctx,
    broker_name: &'a str,
}

impl FindLeader for NameServerLeader<'_> {
    async fn find_leader(&self) -> Result<LeaderView, String> {
        let view = self
            .ctx
            .group(self.broker_name)
            .await
            .map_err(|err| format!("{err:#}"))?;
        let leader = view.require_leader().map_err(|err| format!("{err:#}"))?;
        Ok(leader.leader_view())
    }
}

impl NameServerLeader<'_> {
    /// Membership changes of the group, with `mq`'s bounds (one look for the leader).
    fn membership(&self) -> Membership<'_, Self> {
        Membership {
            group: self.broker_name,
            leaders: self,
            admin: &self.ctx.admin,
            waits: MembershipWaits::default(),
        }
    }
}

async fn add_member(
    ctx: &Ctx,
    broker_name: &str,
    addr: Option<&str>,
    explicit: Option<(u64, String)>,
    learner_only: bool,
) -> anyhow::Result<ExitCode> {
    let (node_id, raft_addr) = match (addr, explicit) {
        (Some(addr), _) => {
            let info = ctx
                .runtime_info(addr)
                .await
                .with_context(|| format!("asking the new member at {addr} who it is"))?;
            if info.broker_name != broker_name {
                bail!(
                    "the member at {addr} belongs to broker group {}, not {broker_name}",
                    info.broker_name
                );
            }
            (info.node_id, info.raft_addr)
        }
        (None, Some(explicit)) => explicit,
        (None, None) => bail!("give --addr, or --node-id and --raft-addr"),
    };
    let leader = NameServerLeader { ctx, broker_name }
        .membership()
        .add_member(node_id, &raft_addr, learner_only)
        .await?;
    let answer = MembershipJson::new(broker_name, node_id, &leader);
    if ctx.json {
        print_json(&answer)?;
    } else {
        outln!(
            "node {node_id} ({raft_addr}) is now a {} of {broker_name}; voters {:?}, learners {:?}",
            if learner_only { "learner" } else { "voter" },
            answer.voters,
            answer.learners
        );
    }
    Ok(ExitCode::SUCCESS)
}

async fn remove_member(ctx: &Ctx, broker_name: &str, node_id: u64) -> anyhow::Result<ExitCode> {
    // The members as listed now: the removed one's addresses are unregistered below.
    let view = ctx.group(broker_name).await?;
    let leader = NameServerLeader { ctx, broker_name }
        .membership()
        .remove_member(node_id)
        .await?;
    // Routes should stop listing it now, not when its registration expires.
    let addrs: BTreeSet<String> = view
        .members
        .iter()
        .filter(|member| match &member.info {
            Ok(info) => info.node_id == node_id,
            Err(_) => member.namesrv_slots.contains(&node_id),
        })
        .map(|member| member.addr.clone())
        .collect();
    for addr in &addrs {
        unregister(ctx, &view, addr, node_id).await?;
    }
    let mut answer = MembershipJson::new(broker_name, node_id, &leader);
    answer.unregistered = addrs.into_iter().collect();
    if ctx.json {
        print_json(&answer)?;
    } else {
        outln!(
            "node {node_id} left {broker_name}; voters {:?}, learners {:?}",
            answer.voters,
            answer.learners
        );
        if !answer.unregistered.is_empty() {
            outln!(
                "unregistered {} from the NameServers; stop that process now (it would register again)",
                answer.unregistered.join(", ")
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// UNREGISTER_BROKER for one member address on every NameServer.
async fn unregister(ctx: &Ctx, view: &GroupView, addr: &str, node_id: u64) -> anyhow::Result<()> {
    let header = UnregisterBrokerRequestHeader {
        broker_name: view.broker_name.clone(),
        broker_addr: addr.to_owned(),
        cluster_name: view.cluster.clone(),
        broker_id: i64::try_from(node_id).unwrap_or(i64::MAX),
    };
    ctx.namesrv
        .unregister_broker(&header)
        .await
        .with_context(|| format!("unregistering {addr} from the NameServers"))
}

/// Asks the leader to hand leadership to `target`, then waits (bounded) until `target` reports
/// itself leader; returns its view as the leader.
/// Asks the leader to hand leadership to `target` (openraft's transfer), then waits (bounded)
/// until `target` reports itself leader; returns its view.
async fn hand_over(
    ctx: &Ctx,
    broker_name: &str,
    leader: &MemberInfo,
    target: &MemberInfo,
) -> anyhow::Result<MemberInfo> {
    ctx.admin
        .transfer_leader(&leader.admin_addr, target.node_id)
        .await
        .with_context(|| {
            format!(
                "asking leader {} to hand over to node {}",
                leader.node_id, target.node_id
            )
        })?;
    let deadline = Instant::now() + SETTLE_TIMEOUT;
    loop {
        if let Ok(info) = ctx.runtime_info(&target.remoting_addr).await
            && info.is_leader()
        {
            return Ok(info);
        }
        if Instant::now() >= deadline {
            bail!(
                "node {} of {broker_name} did not report itself leader within {SETTLE_TIMEOUT:?}",
                target.node_id
            );
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

async fn transfer_leader(ctx: &Ctx, broker_name: &str, node_id: u64) -> anyhow::Result<ExitCode> {
    let view = ctx.group(broker_name).await?;
    let target = view.member(node_id).ok_or_else(|| {
        anyhow!(
            "node {node_id} of {broker_name} does not answer (or is not listed by the NameServer)"
        )
    })?;
    if let Some(leader) = view.leader()
        && !leader.voters.contains(&node_id)
    {
        bail!("node {node_id} is not a voter of {broker_name}; only voters can lead");
    }
    let leader = if target.is_leader() {
        target.clone()
    } else {
        let current = view.require_leader()?;
        hand_over(ctx, broker_name, current, target).await?
    };
    // The new leader registers in slot 0 at once; wait for it so routes already follow.
    let registered = settle_registration(ctx, broker_name, &leader.remoting_addr).await;
    let answer = MembershipJson::new(broker_name, node_id, &leader.leader_view());
    if ctx.json {
        print_json(&answer)?;
    } else {
        outln!(
            "node {node_id} leads {broker_name} in term {}{}",
            leader.term,
            if registered {
                " (the NameServer lists it)"
            } else {
                " (not yet in the NameServer's leader slot)"
            }
        );
    }
    Ok(ExitCode::SUCCESS)
}

async fn settle_registration(ctx: &Ctx, broker_name: &str, addr: &str) -> bool {
    let deadline = Instant::now() + SETTLE_TIMEOUT;
    loop {
        if let Ok(leaders) = ctx.leaders().await
            && leaders.get(broker_name).map(String::as_str) == Some(addr)
        {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}
