//! What every command shares, and how `mq` discovers a cluster from `-n` alone:
//!
//! ```text
//! NameServer GET_BROKER_CLUSTER_INFO -> each group's registered members (slot 0 = leader)
//!   -> GET_BROKER_RUNTIME_INFO on each member -> its Raft view (state, term, indexes,
//!      membership, followers' matched indexes) and its admin HTTP address
//! ```
//!
//! Membership changes and offset resets are admin HTTP calls on the group's leader, found
//! this way.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use anyhow::{Context as _, anyhow, bail};
use raftmq_client::admin_http::membership::LeaderView;
use raftmq_client::cluster_view::{ADMIN_ADDR_KEY, ClusterViewer, reachable_admin};
use raftmq_client::namesrv::namesrv_list_or_env;
use raftmq_client::tls::TlsConnector;
use raftmq_client::{AdminHttpClient, BrokerClient, NameServerClient};
use raftmq_protocol::acl::SessionCredentials;
use raftmq_protocol::admin::AdminToken;
use raftmq_protocol::route::ClusterInfo;
use raftmq_remoting::{RpcClient, RpcClientConfig};

/// Deadline of one request to a NameServer or broker.
pub const RPC_TIMEOUT: Duration = Duration::from_secs(3);
/// Deadline of GET_BROKER_RUNTIME_INFO: short, so a dead member does not stall `status`.
pub const RUNTIME_INFO_TIMEOUT: Duration = Duration::from_secs(2);
/// Most broker groups one command looks at.
pub const MAX_GROUPS: usize = 256;
/// Default deadline of one admin HTTP call.
pub const ADMIN_TIMEOUT: Duration = Duration::from_secs(10);

/// Shared by every command.
pub struct Ctx {
    pub json: bool,
    pub namesrv_list: String,
    pub namesrv: NameServerClient,
    pub broker: BrokerClient,
    /// Admin HTTP calls (each names the member it asks), with the admin token if given.
    pub admin: AdminHttpClient,
    /// Signs every remoting request (`--access-key`/`--secret-key`), and is handed to the
    /// producers and consumers commands start.
    pub credentials: Option<SessionCredentials>,
    /// TLS to the NameServers and brokers (`--tls`, `--tls-ca`), handed to the producers and
    /// consumers commands start too.
    pub tls: TlsConnector,
}

impl Ctx {
    pub fn new(
        namesrv: Option<&str>,
        json: bool,
        credentials: Option<SessionCredentials>,
        admin_token: Option<AdminToken>,
        tls: TlsConnector,
    ) -> anyhow::Result<Ctx> {
        let addrs = namesrv_list_or_env(namesrv)?;
        let namesrv_list = addrs.join(";");
        let rpc = RpcClient::new(RpcClientConfig {
            credentials: credentials.clone(),
            tls: tls.clone(),
            ..RpcClientConfig::default()
        });
        let namesrv = NameServerClient::new(rpc.clone(), addrs)?.with_timeout(RPC_TIMEOUT);
        Ok(Ctx {
            json,
            namesrv_list,
            namesrv,
            broker: BrokerClient::new(rpc).with_timeout(RPC_TIMEOUT),
            // The admin ports serve TLS whenever the remoting ports do.
            admin: AdminHttpClient::new()?
                .with_tls(&tls)?
                .with_timeout(ADMIN_TIMEOUT)
                .with_token(admin_token),
            credentials,
            tls,
        })
    }

    /// A remoting admin client (topic creation, routes, queries) signing with the credentials.
    pub fn signed_admin(&self) -> anyhow::Result<raftmq_client::Admin> {
        Ok(raftmq_client::Admin::with_rpc_config(
            Some(&self.namesrv_list),
            raftmq_client::broker_client::DEFAULT_RPC_TIMEOUT,
            RpcClientConfig {
                credentials: self.credentials.clone(),
                tls: self.tls.clone(),
                ..RpcClientConfig::default()
            },
        )?)
    }

    /// The cluster view (`GET /raft` of every member) that `mq cluster health`, `mq topic route
    /// --explain` and the dashboard share.
    pub fn viewer(&self) -> anyhow::Result<ClusterViewer> {
        Ok(ClusterViewer::new(
            self.namesrv.clone(),
            self.broker.clone().with_timeout(RUNTIME_INFO_TIMEOUT),
            self.admin.with_timeout(RUNTIME_INFO_TIMEOUT),
        ))
    }

    pub async fn cluster_info(&self) -> anyhow::Result<ClusterInfo> {
        let info = self
            .namesrv
            .cluster_info()
            .await
            .context("asking the NameServer for the cluster")?;
        if info.broker_addr_table.len() > MAX_GROUPS {
            bail!(
                "the NameServer lists {} broker groups, more than {MAX_GROUPS}",
                info.broker_addr_table.len()
            );
        }
        Ok(info)
    }

    /// GET_BROKER_RUNTIME_INFO on one member.
    pub async fn runtime_info(&self, addr: &str) -> anyhow::Result<MemberInfo> {
        let table = self
            .broker
            .clone()
            .with_timeout(RUNTIME_INFO_TIMEOUT)
            .runtime_info(addr)
            .await
            .with_context(|| format!("asking {addr} for its runtime info"))?;
        MemberInfo::from_table(addr, &table)
    }

    /// Every group the NameServer knows (or only `only`), each member with its runtime info.
    pub async fn discover(&self, only: Option<&str>) -> anyhow::Result<Vec<GroupView>> {
        let info = self.cluster_info().await?;
        if let Some(name) = only
            && !info.broker_addr_table.contains_key(name)
        {
            bail!(
                "the NameServer knows no broker group {name:?} (known: {})",
                known(info.broker_addr_table.keys())
            );
        }
        let mut groups = Vec::new();
        for (name, data) in &info.broker_addr_table {
            if only.is_some_and(|only| only != name) {
                continue;
            }
            // One entry per distinct address: the leader is listed in slot 0 and at its id.
            let mut slots: BTreeMap<String, Vec<u64>> = BTreeMap::new();
            for (id, addr) in &data.broker_addrs {
                slots.entry(addr.clone()).or_default().push(*id);
            }
            let lookups = slots.keys().map(|addr| self.runtime_info(addr));
            let infos = futures::future::join_all(lookups).await;
            let members = slots
                .into_iter()
                .zip(infos)
                .map(|((addr, slots), info)| MemberView {
                    addr,
                    namesrv_slots: slots,
                    info: info.map_err(|err| format!("{err:#}")),
                })
                .collect();
            groups.push(GroupView {
                broker_name: name.clone(),
                cluster: data.cluster.clone(),
                namesrv_members: data.broker_addrs.clone(),
                members,
            });
        }
        Ok(groups)
    }

    /// One group, which must exist.
    pub async fn group(&self, broker_name: &str) -> anyhow::Result<GroupView> {
        self.discover(Some(broker_name))
            .await?
            .into_iter()
            .next()
            .ok_or_else(|| anyhow!("no broker group {broker_name:?}"))
    }

    /// The leader address the NameServer lists for each group (slot 0), by broker name.
    pub async fn leaders(&self) -> anyhow::Result<BTreeMap<String, String>> {
        let info = self.cluster_info().await?;
        Ok(info
            .broker_addr_table
            .into_iter()
            .filter_map(|(name, data)| Some((name, data.broker_addrs.get(&0)?.clone())))
            .collect())
    }
}

fn known<'a>(names: impl Iterator<Item = &'a String>) -> String {
    let names: Vec<&str> = names.map(String::as_str).collect();
    if names.is_empty() {
        "none".to_owned()
    } else {
        names.join(", ")
    }
}

/// One member's runtime info: RocketMQ's figures and its Raft view.
#[derive(Clone, Debug)]
pub struct MemberInfo {
    pub broker_name: String,
    pub node_id: u64,
    pub state: String,
    pub term: u64,
    pub leader: Option<u64>,
    pub last_log_index: u64,
    pub applied_index: u64,
    /// Known on the leader only.
    pub commit_index: Option<u64>,
    pub voters: BTreeSet<u64>,
    pub learners: BTreeSet<u64>,
    /// Raft addresses by node id.
    pub nodes: BTreeMap<u64, String>,
    /// On the leader: each other member's matched log index (`None` = not known yet).
    pub followers: Option<BTreeMap<u64, Option<u64>>>,
    pub admin_addr: String,
    pub raft_addr: String,
    pub remoting_addr: String,
    /// It leads and a quorum acknowledged it recently, so it takes writes now (a leader
    /// restarted with its old term does not until its group answers it).
    pub writable: bool,
}

impl MemberInfo {
    fn from_table(addr: &str, table: &BTreeMap<String, String>) -> anyhow::Result<MemberInfo> {
        let text = |key: &str| -> anyhow::Result<String> {
            table
                .get(key)
                .cloned()
                .ok_or_else(|| anyhow!("{addr}'s runtime info has no {key} (not a RaftMQ broker?)"))
        };
        let number = |key: &str| -> anyhow::Result<u64> {
            let value = text(key)?;
            value
                .parse()
                .map_err(|_| anyhow!("{addr}'s runtime info has {key}={value:?}, not a number"))
        };
        let ids = |key: &str| -> anyhow::Result<BTreeSet<u64>> {
            parse_ids(&text(key)?).map_err(|bad| anyhow!("{addr}'s runtime info: {key}: {bad}"))
        };
        let pairs = |key: &str| -> anyhow::Result<BTreeMap<u64, String>> {
            parse_pairs(&text(key)?).map_err(|bad| anyhow!("{addr}'s runtime info: {key}: {bad}"))
        };
        let leader = text("raftLeader")?;
        let followers = match table.get("raftFollowers") {
            None => None,
            Some(value) => Some(
                parse_pairs(value)
                    .map_err(|bad| anyhow!("{addr}'s runtime info: raftFollowers: {bad}"))?
                    .into_iter()
                    .map(|(id, index)| (id, index.parse().ok()))
                    .collect(),
            ),
        };
        let remoting_addr = text("remotingAddr")?;
        Ok(MemberInfo {
            broker_name: text("brokerName")?,
            node_id: number("raftNodeId")?,
            state: text("raftState")?,
            term: number("raftTerm")?,
            leader: if leader.is_empty() {
                None
            } else {
                Some(
                    leader
                        .parse()
                        .map_err(|_| anyhow!("{addr}'s runtime info has raftLeader={leader:?}"))?,
                )
            },
            last_log_index: number("raftLastLogIndex")?,
            applied_index: number("raftAppliedIndex")?,
            commit_index: table.get("raftCommitIndex").and_then(|v| v.parse().ok()),
            voters: ids("raftVoters")?,
            learners: ids("raftLearners")?,
            nodes: pairs("raftNodes")?,
            followers,
            admin_addr: reachable_admin(&text(ADMIN_ADDR_KEY)?, addr),
            raft_addr: text("raftAddr")?,
            remoting_addr,
            writable: table.get("raftWritable").is_some_and(|v| v == "true"),
        })
    }

    pub fn is_leader(&self) -> bool {
        self.state == "Leader"
    }

    /// What a membership change needs of this member as the leader.
    pub fn leader_view(&self) -> LeaderView {
        LeaderView {
            node_id: self.node_id,
            term: self.term,
            admin_addr: self.admin_addr.clone(),
            voters: self.voters.clone(),
            learners: self.learners.clone(),
            nodes: self.nodes.clone(),
        }
    }

    /// How many entries `follower` is behind this leader's log (`None` until the leader
    /// knows what it holds, e.g. a member down since before this leader was elected).
    pub fn lag_of(&self, follower: u64) -> Option<u64> {
        let matched = (*self.followers.as_ref()?.get(&follower)?)?;
        Some(self.last_log_index.saturating_sub(matched))
    }
}

fn parse_ids(text: &str) -> Result<BTreeSet<u64>, String> {
    text.split(',')
        .map(str::trim)
        .filter(|part| !part.is_empty())
        .map(|part| {
            part.parse()
                .map_err(|_| format!("{part:?} is not a node id"))
        })
        .collect()
}

fn parse_pairs(text: &str) -> Result<BTreeMap<u64, String>, String> {
    text.split(',')
        .map(str::trim)
        .filter(|part| !part.is_empty())
        .map(|part| {
            let (id, value) = part
                .split_once('=')
                .ok_or_else(|| format!("{part:?} is not id=value"))?;
            let id = id.parse().map_err(|_| format!("{id:?} is not a node id"))?;
            Ok((id, value.to_owned()))
        })
        .collect()
}

/// A broker group as the NameServer lists it, with each member's runtime info.
#[derive(Debug)]
pub struct GroupView {
    pub broker_name: String,
    pub cluster: String,
    /// The NameServer's slots: brokerId -> address (0 = the leader).
    pub namesrv_members: BTreeMap<u64, String>,
    pub members: Vec<MemberView>,
}

#[derive(Debug)]
pub struct MemberView {
    pub addr: String,
    /// The NameServer slots this address holds.
    pub namesrv_slots: Vec<u64>,
    /// Its runtime info, or why it could not be had (down, not a RaftMQ broker).
    pub info: Result<MemberInfo, String>,
}

impl GroupView {
    /// The reachable member that says it leads (the highest term if several do).
    pub fn leader(&self) -> Option<&MemberInfo> {
        self.members
            .iter()
            .filter_map(|member| member.info.as_ref().ok())
            .filter(|info| info.is_leader())
            .max_by_key(|info| info.term)
    }

    pub fn require_leader(&self) -> anyhow::Result<&MemberInfo> {
        self.leader().ok_or_else(|| {
            anyhow!(
                "broker group {} has no reachable leader ({} member(s) listed by the NameServer)",
                self.broker_name,
                self.members.len()
            )
        })
    }

    /// The reachable member with this node id.
    pub fn member(&self, node_id: u64) -> Option<&MemberInfo> {
        self.members
            .iter()
            .filter_map(|member| member.info.as_ref().ok())
            .find(|info| info.node_id == node_id)
    }

    pub fn namesrv_leader(&self) -> Option<&str> {
        self.namesrv_members.get(&0).map(String::as_str)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_ids_and_pairs() {
        assert_eq!(parse_ids("1,2, 3").unwrap(), BTreeSet::from([1, 2, 3]));
        assert!(parse_ids("").unwrap().is_empty());
        assert!(parse_ids("1,x").is_err());
        assert_eq!(
            parse_pairs("1=a:1,2=b:2").unwrap(),
            BTreeMap::from([(1, "a:1".to_owned()), (2, "b:2".to_owned())])
        );
        assert!(parse_pairs("1").is_err());
        assert!(parse_pairs("x=1").is_err());
    }

    #[test]
    fn a_runtime_table_without_raft_keys_is_an_error() {
        let table = BTreeMap::from([("brokerVersion".to_owned(), "5".to_owned())]);
        let err = MemberInfo::from_table("a:1", &table).unwrap_err();
        assert!(err.to_string().contains("not a RaftMQ broker"), "{err}");
    }
}
