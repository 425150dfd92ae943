//! [`ClusterView`]: every broker group and member as the NameServers list them, with each
//! member's Raft status as its admin `GET /raft` answers it ([`RaftStatus`]); and [`Health`],
//! the one judgement of whether the cluster is healthy that `mq cluster health` and the
//! dashboard both show.
//!
//! How a cluster is found from nothing but NameServer addresses:
//!
//! ```text
//! NameServer GET_BROKER_CLUSTER_INFO -> each group's registered members (slot 0 = leader)
//!   -> GET_BROKER_RUNTIME_INFO on each member -> its admin HTTP address (`adminAddr`)
//!   -> GET /raft on it -> RaftStatus
//! plus the members of the leader's Raft membership the NameServer does not list (down, or
//! not registered yet), known by their Raft address only
//! ```
//!
//! Healthy ([`ClusterView::health`]) means, as for Redpanda's `rpk cluster health`: the
//! NameServers answer, every group has a leader that takes writes and that the NameServer
//! lists in slot 0, every member answers, and no follower is more than `max_lag` entries
//! behind its leader.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;

use futures::future::join_all;
use raftmq_protocol::admin::RaftStatus;
use raftmq_protocol::route::BrokerData;
use serde::Serialize;

use crate::admin_http::AdminHttpClient;
use crate::broker_client::BrokerClient;
use crate::error::ClientError;
use crate::namesrv::NameServerClient;

/// The runtime-info key holding a member's admin HTTP address.
pub const ADMIN_ADDR_KEY: &str = "adminAddr";
/// Most broker groups one view looks at.
pub const MAX_GROUPS: usize = 256;
/// Default bound on how many entries a follower may be behind its leader and still be healthy.
pub const DEFAULT_MAX_LAG_ENTRIES: u64 = 1000;

/// The whole cluster as seen from its NameServers.
#[derive(Clone, Debug, Serialize)]
pub struct ClusterView {
    pub namesrv: Vec<String>,
    /// Why the NameServers could not be asked (then `groups` is empty).
    pub namesrv_error: Option<String>,
    pub groups: Vec<GroupView>,
}

/// One broker group: what the NameServer lists and what each member says.
#[derive(Clone, Debug, Serialize)]
pub struct GroupView {
    pub broker_name: String,
    pub cluster: String,
    /// The NameServer's slots: brokerId -> remoting address (0 = the leader).
    pub namesrv_slots: BTreeMap<u64, String>,
    pub members: Vec<MemberView>,
}

/// One member: where it is and its Raft status, or why it could not be had.
#[derive(Clone, Debug, Serialize)]
pub struct MemberView {
    /// From its status, its NameServer slot, or the leader's membership.
    pub node_id: Option<u64>,
    /// Remoting address; `None` for a Raft member the NameServer does not list.
    pub remoting_addr: Option<String>,
    /// The NameServer slots this address holds (0 is the leader slot).
    pub namesrv_slots: Vec<u64>,
    pub admin_addr: Option<String>,
    pub raft_addr: Option<String>,
    /// `GET /raft`, or why it could not be had (down, not a RaftMQ broker, not registered).
    pub status: Result<RaftStatus, String>,
}

impl MemberView {
    pub fn status(&self) -> Option<&RaftStatus> {
        self.status.as_ref().ok()
    }

    pub fn is_up(&self) -> bool {
        self.status.is_ok()
    }
}

impl GroupView {
    /// The answering member that says it leads (the highest term if several do).
    pub fn leader(&self) -> Option<&RaftStatus> {
        self.members
            .iter()
            .filter_map(MemberView::status)
            .filter(|status| status.is_leader())
            .max_by_key(|status| status.term)
    }

    /// The member view of the leader.
    pub fn leader_member(&self) -> Option<&MemberView> {
        let leader = self.leader()?;
        self.members
            .iter()
            .find(|member| member.status().is_some_and(|s| s.node_id == leader.node_id))
    }

    /// The member with this node id, answering or not.
    pub fn member(&self, node_id: u64) -> Option<&MemberView> {
        self.members
            .iter()
            .find(|member| member.node_id == Some(node_id))
    }

    /// The address in the NameServer's slot 0.
    pub fn namesrv_leader(&self) -> Option<&str> {
        self.namesrv_slots.get(&0).map(String::as_str)
    }

    /// `voter`, `learner`, or `None` when the leader's membership does not list it (or there
    /// is no leader).
    pub fn role_of(&self, node_id: u64) -> Option<&'static str> {
        let leader = self.leader()?;
        if leader.voters.contains(&node_id) {
            Some("voter")
        } else if leader.learners.contains(&node_id) {
            Some("learner")
        } else {
            None
        }
    }

    /// Milliseconds since `node_id` last acknowledged the leader (a heartbeat or an append);
    /// `None` for the leader itself or while the leader has heard nothing from it.
    pub fn last_contact_ms_of(&self, node_id: u64) -> Option<u64> {
        let leader = self.leader()?;
        leader.followers.get(&node_id)?.last_contact_ms
    }

    /// Entries `node_id` is behind the leader (0 for the leader itself); `None` while the
    /// leader knows nothing of what it holds.
    pub fn lag_of(&self, node_id: u64) -> Option<u64> {
        let leader = self.leader()?;
        if leader.node_id == node_id {
            return Some(0);
        }
        let follower = leader.followers.get(&node_id)?;
        follower.matched_index.map(|_| follower.lag_entries)
    }
}

/// How bad a problem is, least to most; the worst problem is the cluster's verdict.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Healthy,
    /// Writes are taken, but a member is down, lags, or the NameServer lists a stale leader.
    Degraded,
    /// A group has no leader that takes writes (or no group is registered).
    NoLeader,
    /// No NameServer answered.
    Unreachable,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Healthy => "healthy",
            Verdict::Degraded => "degraded",
            Verdict::NoLeader => "no_leader",
            Verdict::Unreachable => "unreachable",
        }
    }
}

/// One reason the cluster is not healthy.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Problem {
    pub verdict: Verdict,
    /// The broker group it is about, if one.
    pub group: Option<String>,
    pub message: String,
}

/// The cluster's health: the worst verdict and every problem found.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Health {
    pub verdict: Verdict,
    pub problems: Vec<Problem>,
}

impl ClusterView {
    /// Judges the view; `max_lag` is how many entries a follower may be behind.
    pub fn health(&self, max_lag: u64) -> Health {
        let mut problems = Vec::new();
        if let Some(error) = &self.namesrv_error {
            problems.push(Problem {
                verdict: Verdict::Unreachable,
                group: None,
                message: format!(
                    "the NameServer ({}) cannot be asked: {error}",
                    self.namesrv.join(";")
                ),
            });
        } else if self.groups.is_empty() {
            problems.push(Problem {
                verdict: Verdict::NoLeader,
                group: None,
                message: "no broker group is registered with the NameServer".to_owned(),
            });
        }
        for group in &self.groups {
            group_problems(group, max_lag, &mut problems);
        }
        let verdict = problems
            .iter()
            .map(|problem| problem.verdict)
            .max()
            .unwrap_or(Verdict::Healthy);
        Health { verdict, problems }
    }
}

fn group_problems(group: &GroupView, max_lag: u64, problems: &mut Vec<Problem>) {
    let mut problem = |verdict, message: String| {
        problems.push(Problem {
            verdict,
            group: Some(group.broker_name.clone()),
            message,
        })
    };
    let name = &group.broker_name;
    match group.leader() {
        None => {
            let up = group.members.iter().filter(|m| m.is_up()).count();
            problem(
                Verdict::NoLeader,
                format!(
                    "{name} has no leader ({up} of {} member(s) answer)",
                    group.members.len()
                ),
            );
        }
        Some(leader) if !leader.writable => problem(
            Verdict::NoLeader,
            format!(
                "{name}'s leader, node {}, does not take writes: no quorum has acknowledged it recently",
                leader.node_id
            ),
        ),
        Some(leader) if group.namesrv_leader() != Some(leader.remoting_addr.as_str()) => problem(
            Verdict::Degraded,
            format!(
                "the NameServer lists {} in {name}'s leader slot, but the leader is node {} at {}",
                group.namesrv_leader().unwrap_or("nothing"),
                leader.node_id,
                leader.remoting_addr
            ),
        ),
        Some(_) => {}
    }
    for member in &group.members {
        let who = match (member.node_id, &member.remoting_addr) {
            (Some(id), Some(addr)) => format!("node {id} ({addr})"),
            (Some(id), None) => format!("node {id}"),
            (None, Some(addr)) => addr.clone(),
            (None, None) => "a member".to_owned(),
        };
        match &member.status {
            Err(error) => problem(
                Verdict::Degraded,
                format!("{name}: {who} does not answer: {error}"),
            ),
            Ok(status) if !status.is_leader() => match group.lag_of(status.node_id) {
                Some(lag) if lag > max_lag => problem(
                    Verdict::Degraded,
                    format!(
                        "{name}: {who} is {lag} entries behind the leader (more than {max_lag})"
                    ),
                ),
                None if group.leader().is_some() && group.role_of(status.node_id).is_some() => {
                    problem(
                        Verdict::Degraded,
                        format!("{name}: the leader does not know what {who} holds yet"),
                    )
                }
                _ => {}
            },
            Ok(_) => {}
        }
    }
}

/// Gathers [`ClusterView`]s: the NameServer over remoting, each member's runtime info over
/// remoting, its Raft status over admin HTTP.
#[derive(Clone, Debug)]
pub struct ClusterViewer {
    namesrv: NameServerClient,
    broker: BrokerClient,
    admin: AdminHttpClient,
}

impl ClusterViewer {
    pub fn new(namesrv: NameServerClient, broker: BrokerClient, admin: AdminHttpClient) -> Self {
        ClusterViewer {
            namesrv,
            broker,
            admin,
        }
    }

    pub fn namesrv(&self) -> &NameServerClient {
        &self.namesrv
    }

    pub fn broker(&self) -> &BrokerClient {
        &self.broker
    }

    pub fn admin(&self) -> &AdminHttpClient {
        &self.admin
    }

    /// The cluster now; every member is asked at once. Never fails: what could not be had is
    /// in the view (`namesrv_error`, a member's `status`).
    pub async fn view(&self) -> ClusterView {
        let namesrv = self.namesrv.addrs().to_vec();
        let info = match self.namesrv.cluster_info().await {
            Ok(info) => info,
            Err(err) => {
                return ClusterView {
                    namesrv,
                    namesrv_error: Some(err.to_string()),
                    groups: Vec::new(),
                };
            }
        };
        let groups = info
            .broker_addr_table
            .iter()
            .take(MAX_GROUPS)
            .map(|(name, data)| self.group(name, data));
        ClusterView {
            namesrv,
            namesrv_error: None,
            groups: join_all(groups).await,
        }
    }

    async fn group(&self, name: &str, data: &BrokerData) -> GroupView {
        // One entry per distinct address: the leader is listed in slot 0 and may be at its id.
        let mut slots: BTreeMap<String, Vec<u64>> = BTreeMap::new();
        for (id, addr) in &data.broker_addrs {
            slots.entry(addr.clone()).or_default().push(*id);
        }
        let lookups = slots
            .into_iter()
            .map(|(addr, slots)| self.member(addr, slots));
        let mut group = GroupView {
            broker_name: name.to_owned(),
            cluster: data.cluster.clone(),
            namesrv_slots: data.broker_addrs.clone(),
            members: join_all(lookups).await,
        };
        // Members of the Raft membership the NameServer does not list.
        if let Some(leader) = group.leader().cloned() {
            let listed: BTreeSet<u64> = group.members.iter().filter_map(|m| m.node_id).collect();
            for (id, raft_addr) in &leader.nodes {
                if !listed.contains(id) {
                    group.members.push(MemberView {
                        node_id: Some(*id),
                        remoting_addr: None,
                        namesrv_slots: Vec::new(),
                        admin_addr: None,
                        raft_addr: Some(raft_addr.clone()),
                        status: Err("not registered with the NameServer".to_owned()),
                    });
                }
            }
        }
        group.members.sort_by_key(|member| {
            (
                member.node_id.unwrap_or(u64::MAX),
                member.remoting_addr.clone(),
            )
        });
        group
    }

    async fn member(&self, addr: String, namesrv_slots: Vec<u64>) -> MemberView {
        // Followers register at their node id; the leader slot (0) says nothing.
        let slot_id = namesrv_slots
            .iter()
            .copied()
            .filter(|slot| *slot != 0)
            .max();
        let mut view = MemberView {
            node_id: slot_id,
            remoting_addr: Some(addr.clone()),
            namesrv_slots,
            admin_addr: None,
            raft_addr: None,
            status: Err(String::new()),
        };
        let admin = match self.admin_addr(&addr).await {
            Ok(admin) => admin,
            Err(err) => {
                view.status = Err(err);
                return view;
            }
        };
        view.admin_addr = Some(admin.clone());
        view.status = self
            .admin
            .raft_status(&admin)
            .await
            .map_err(|err| err.to_string());
        if let Ok(status) = &view.status {
            view.node_id = Some(status.node_id);
            view.raft_addr = status.nodes.get(&status.node_id).cloned();
        }
        view
    }

    /// A member's admin HTTP address, from its runtime info.
    pub async fn admin_addr(&self, remoting_addr: &str) -> Result<String, String> {
        let table = self
            .broker
            .runtime_info(remoting_addr)
            .await
            .map_err(|err: ClientError| err.to_string())?;
        let admin = table.get(ADMIN_ADDR_KEY).ok_or_else(|| {
            format!("{remoting_addr}'s runtime info has no {ADMIN_ADDR_KEY} (not a RaftMQ broker?)")
        })?;
        Ok(reachable_admin(admin, remoting_addr))
    }
}

/// A member bound to `0.0.0.0` or `[::]` for admin HTTP is reached at its remoting host.
pub fn reachable_admin(admin: &str, remoting: &str) -> String {
    match (admin.parse::<SocketAddr>(), remoting.parse::<SocketAddr>()) {
        (Ok(admin), Ok(remoting)) if admin.ip().is_unspecified() => {
            SocketAddr::new(remoting.ip(), admin.port()).to_string()
        }
        _ => admin.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use raftmq_protocol::admin::FollowerStatus;

    fn status(node_id: u64, state: &str, term: u64) -> RaftStatus {
        RaftStatus {
            broker_name: "broker-a".into(),
            node_id,
            state: state.into(),
            term,
            leader: Some(1),
            last_log_index: Some(100),
            applied_index: Some(100),
            voters: BTreeSet::from([1, 2, 3]),
            learners: BTreeSet::new(),
            nodes: BTreeMap::new(),
            followers: BTreeMap::new(),
            remoting_addr: format!("127.0.0.{node_id}:10911"),
            log_fsyncs: 0,
            log_entries_flushed: 0,
            writable: state == "Leader",
            commit_index: None,
            quorum_ack_age_ms: None,
            disk_used_bytes: None,
            disk_full: false,
            pending_transactions: None,
            pending_timers: None,
        }
    }

    fn member(status: Result<RaftStatus, String>, node_id: u64) -> MemberView {
        MemberView {
            node_id: Some(node_id),
            remoting_addr: Some(format!("127.0.0.{node_id}:10911")),
            namesrv_slots: vec![node_id],
            admin_addr: None,
            raft_addr: None,
            status,
        }
    }

    fn healthy_group() -> GroupView {
        let mut leader = status(1, "Leader", 2);
        leader.followers = BTreeMap::from([
            (
                2,
                FollowerStatus {
                    matched_index: Some(100),
                    lag_entries: 0,
                    last_contact_ms: Some(20),
                },
            ),
            (
                3,
                FollowerStatus {
                    matched_index: Some(95),
                    lag_entries: 5,
                    last_contact_ms: Some(30),
                },
            ),
        ]);
        GroupView {
            broker_name: "broker-a".into(),
            cluster: "DefaultCluster".into(),
            namesrv_slots: BTreeMap::from([(0, "127.0.0.1:10911".into())]),
            members: vec![
                member(Ok(leader), 1),
                member(Ok(status(2, "Follower", 2)), 2),
                member(Ok(status(3, "Follower", 2)), 3),
            ],
        }
    }

    fn view(groups: Vec<GroupView>) -> ClusterView {
        ClusterView {
            namesrv: vec!["127.0.0.1:9876".into()],
            namesrv_error: None,
            groups,
        }
    }

    #[test]
    fn a_group_with_a_writable_registered_leader_and_close_followers_is_healthy() {
        let health = view(vec![healthy_group()]).health(DEFAULT_MAX_LAG_ENTRIES);
        assert_eq!(health.verdict, Verdict::Healthy, "{:?}", health.problems);
        assert_eq!(view(vec![healthy_group()]).groups[0].lag_of(3), Some(5));
    }

    #[test]
    fn a_member_down_or_lagging_is_degraded() {
        let mut group = healthy_group();
        group.members[2].status = Err("connection refused".into());
        let health = view(vec![group]).health(DEFAULT_MAX_LAG_ENTRIES);
        assert_eq!(health.verdict, Verdict::Degraded);
        assert!(health.problems[0].message.contains("does not answer"));

        let health = view(vec![healthy_group()]).health(4);
        assert_eq!(health.verdict, Verdict::Degraded);
        assert!(health.problems[0].message.contains("5 entries behind"));
    }

    #[test]
    fn no_leader_or_a_leader_without_quorum_is_no_leader() {
        let mut group = healthy_group();
        group.members[0].status = Err("connection refused".into());
        let health = view(vec![group]).health(DEFAULT_MAX_LAG_ENTRIES);
        assert_eq!(health.verdict, Verdict::NoLeader);
        assert!(health.problems[0].message.contains("has no leader (2 of 3"));

        let mut group = healthy_group();
        if let Ok(leader) = &mut group.members[0].status {
            leader.writable = false;
        }
        assert_eq!(
            view(vec![group]).health(DEFAULT_MAX_LAG_ENTRIES).verdict,
            Verdict::NoLeader
        );
        assert_eq!(view(vec![]).health(1).verdict, Verdict::NoLeader);
    }

    #[test]
    fn an_unreachable_namesrv_is_the_worst() {
        let mut cluster = view(vec![]);
        cluster.namesrv_error = Some("connection refused".into());
        let health = cluster.health(1);
        assert_eq!(health.verdict, Verdict::Unreachable);
        assert_eq!(health.problems.len(), 1);
    }

    #[test]
    fn a_stale_namesrv_leader_slot_is_degraded() {
        let mut group = healthy_group();
        group.namesrv_slots.insert(0, "127.0.0.2:10911".into());
        let health = view(vec![group]).health(DEFAULT_MAX_LAG_ENTRIES);
        assert_eq!(health.verdict, Verdict::Degraded);
        assert!(health.problems[0].message.contains("leader slot"));
    }

    #[test]
    fn an_unspecified_admin_host_becomes_the_remoting_host() {
        assert_eq!(
            reachable_admin("0.0.0.0:10913", "127.0.0.2:10911"),
            "127.0.0.2:10913"
        );
        assert_eq!(
            reachable_admin("127.0.0.1:10913", "10.0.0.1:10911"),
            "127.0.0.1:10913"
        );
    }
}
