//! The route table: which broker groups exist, who is in them, who leads them, and which
//! topics they serve. Pure logic: no I/O, no clock (every call that needs the time takes
//! `now`), so that tests drive time by hand.
//!
//! # Cached group leadership
//!
//! A broker group (one `brokerName`) is a Raft group. Each RaftMQ member registers with its
//! Raft node id, its term and whether it leads ([`RaftClaim`]). The route lists:
//!
//! - in slot 0 (brokerId 0, where every RocketMQ producer writes) the member whose leadership
//!   claim has the highest term seen for the group;
//! - every other member at brokerId = its node id.
//!
//! The group remembers the highest leadership term it has seen (`fence_term`). A claim with a
//! lower term never takes slot 0, so a deposed leader that still believes it leads cannot take
//! the slot back; a claim with a higher term takes it over, and the former holder is listed at
//! its node id from then on. Only leadership claims move the fence: a follower's term does not
//! (a partitioned member that keeps starting elections must not empty slot 0). A holder that
//! registers as not leading leaves slot 0 empty until a leader registers.
//!
//! A plain RocketMQ broker (no Raft fields) is listed at the brokerId it registers with.
//!
//! # Liveness
//!
//! A member not heard from for its timeout ([`BROKER_EXPIRY`] unless the registration says
//! otherwise) is dropped by [`RouteTable::expire`], which the server calls every
//! [`EXPIRY_SCAN_INTERVAL`]; a member whose connection closes is dropped at once
//! ([`RouteTable::drop_connection`]). A group without members disappears with its topics.
//!
//! # Topics
//!
//! A group's topics are those of the latest registration from its slot-0 member, or from any
//! member while slot 0 is empty (so a leaderless group still routes reads). A registration
//! replaces the group's topic set: the broker's own (replicated) topic table is the truth.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use raftmq_protocol::admin::{RegisteredGroup, RegisteredMember};
use raftmq_protocol::header::RaftClaim;
use raftmq_protocol::route::{
    BrokerData, ClusterInfo, DataVersion, MASTER_ID, QueueData, TopicConfig, TopicList,
    TopicRouteData,
};
use tokio::time::Instant;

/// How long a member stays listed without registering (RocketMQ's default).
pub const BROKER_EXPIRY: Duration = Duration::from_secs(120);

/// How often the server drops expired members.
pub const EXPIRY_SCAN_INTERVAL: Duration = Duration::from_secs(5);

/// Bounds on a registration's own `heartbeatTimeoutMillis`.
pub const MIN_BROKER_TIMEOUT: Duration = Duration::from_secs(1);
pub const MAX_BROKER_TIMEOUT: Duration = Duration::from_secs(600);

/// Longest accepted broker name, cluster name or address.
pub const MAX_NAME_BYTES: usize = 255;

/// Members listed at most, over all groups (RocketMQ sets no bound; a NameServer must not
/// grow without one).
pub const MAX_MEMBERS: usize = 10_000;

/// Topics one registration may carry.
pub const MAX_TOPICS_PER_REGISTRATION: usize = 100_000;

/// Identifies the connection a registration came over (the remoting server's connection id).
pub type ConnectionKey = u64;

/// One registration, as the REGISTER_BROKER processor parsed it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Registration {
    pub cluster: String,
    pub broker_name: String,
    pub broker_addr: String,
    pub ha_server_addr: String,
    /// The brokerId the broker asked for; used only without a Raft claim.
    pub broker_id: u64,
    pub raft: Option<RaftClaim>,
    /// The broker's topic configs; `None` when the registration carried none.
    pub topics: Option<BTreeMap<String, TopicConfig>>,
    pub data_version: DataVersion,
    /// `heartbeatTimeoutMillis` when given.
    pub timeout: Option<Duration>,
    pub connection: Option<ConnectionKey>,
}

/// Why a registration was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegisterError {
    #[error("raftNodeId 0 is reserved for the leader slot; Raft node ids must be >= 1")]
    ReservedNodeId,
    #[error("{field} must be 1 to {MAX_NAME_BYTES} bytes")]
    BadName { field: &'static str },
    #[error("the NameServer lists {MAX_MEMBERS} members already")]
    TooManyMembers,
    #[error("a registration may carry at most {MAX_TOPICS_PER_REGISTRATION} topics")]
    TooManyTopics,
}

/// What a registration achieved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Registered {
    /// The brokerId the member is listed at now.
    pub broker_id: u64,
    /// A leadership claim was refused because a higher (or equal, held) term owns slot 0.
    pub fenced: bool,
    /// The member in slot 0 and its HA address, if any (RocketMQ answers these to slaves).
    pub master_addr: Option<String>,
    pub master_ha_addr: Option<String>,
    /// Slot 0 changed hands (or emptied, or filled) with this registration.
    pub master_changed: bool,
}

/// How a member identifies itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Identity {
    Raft(RaftClaim),
    Plain { broker_id: u64 },
}

#[derive(Clone, Debug)]
struct Member {
    identity: Identity,
    ha_server_addr: String,
    last_registration: Instant,
    timeout: Duration,
    connection: Option<ConnectionKey>,
    data_version: DataVersion,
}

#[derive(Clone, Debug)]
struct Group {
    cluster: String,
    /// By broker address.
    members: BTreeMap<String, Member>,
    /// The highest term of any leadership claim seen by this group.
    fence_term: u64,
    /// The Raft member in slot 0.
    leader: Option<String>,
    topics: BTreeMap<String, TopicConfig>,
}

impl Group {
    fn new(cluster: &str) -> Self {
        Group {
            cluster: cluster.to_owned(),
            members: BTreeMap::new(),
            fence_term: 0,
            leader: None,
            topics: BTreeMap::new(),
        }
    }

    /// brokerId -> address, slot 0 last so that it wins any collision.
    fn broker_addrs(&self) -> BTreeMap<u64, String> {
        let mut addrs = BTreeMap::new();
        for (addr, member) in &self.members {
            match member.identity {
                Identity::Plain { broker_id } => {
                    addrs.insert(broker_id, addr.clone());
                }
                Identity::Raft(claim) if self.leader.as_deref() != Some(addr) => {
                    addrs.insert(claim.node_id, addr.clone());
                }
                Identity::Raft(_) => {}
            }
        }
        if let Some(leader) = &self.leader {
            addrs.insert(MASTER_ID, leader.clone());
        }
        addrs
    }

    fn master_addr(&self) -> Option<&str> {
        self.leader.as_deref().or_else(|| {
            self.members
                .iter()
                .find(|(_, member)| {
                    member.identity
                        == Identity::Plain {
                            broker_id: MASTER_ID,
                        }
                })
                .map(|(addr, _)| addr.as_str())
        })
    }

    fn listed_id(&self, addr: &str) -> Option<u64> {
        let member = self.members.get(addr)?;
        Some(match member.identity {
            _ if self.leader.as_deref() == Some(addr) => MASTER_ID,
            Identity::Raft(claim) => claim.node_id,
            Identity::Plain { broker_id } => broker_id,
        })
    }

    fn remove_member(&mut self, addr: &str) -> Option<Member> {
        let member = self.members.remove(addr)?;
        if self.leader.as_deref() == Some(addr) {
            self.leader = None;
        }
        Some(member)
    }
}

/// A member the table dropped, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Removed {
    pub broker_name: String,
    pub broker_addr: String,
    pub reason: RemovalReason,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RemovalReason {
    Expired,
    ConnectionClosed,
    Unregistered,
}

/// All groups, members and topics known to one NameServer.
#[derive(Debug, Default)]
pub struct RouteTable {
    groups: BTreeMap<String, Group>,
}

fn check_name(field: &'static str, value: &str) -> Result<(), RegisterError> {
    if value.is_empty() || value.len() > MAX_NAME_BYTES {
        return Err(RegisterError::BadName { field });
    }
    Ok(())
}

impl RouteTable {
    pub fn new() -> Self {
        RouteTable::default()
    }

    /// Applies one registration at time `now`.
    pub fn register(
        &mut self,
        registration: Registration,
        now: Instant,
    ) -> Result<Registered, RegisterError> {
        check_name("clusterName", &registration.cluster)?;
        check_name("brokerName", &registration.broker_name)?;
        check_name("brokerAddr", &registration.broker_addr)?;
        if registration
            .raft
            .is_some_and(|claim| claim.node_id == MASTER_ID)
        {
            return Err(RegisterError::ReservedNodeId);
        }
        if registration
            .topics
            .as_ref()
            .is_some_and(|topics| topics.len() > MAX_TOPICS_PER_REGISTRATION)
        {
            return Err(RegisterError::TooManyTopics);
        }
        let known = self
            .groups
            .values()
            .any(|group| group.members.contains_key(&registration.broker_addr));
        if !known && self.member_count() >= MAX_MEMBERS {
            return Err(RegisterError::TooManyMembers);
        }
        // An address belongs to one group: a broker that was renamed leaves its old group.
        let renamed: Vec<String> = self
            .groups
            .iter()
            .filter(|(name, group)| {
                **name != registration.broker_name
                    && group.members.contains_key(&registration.broker_addr)
            })
            .map(|(name, _)| name.clone())
            .collect();
        for name in renamed {
            self.remove_member(&name, &registration.broker_addr);
        }

        let group = self
            .groups
            .entry(registration.broker_name.clone())
            .or_insert_with(|| Group::new(&registration.cluster));
        group.cluster.clone_from(&registration.cluster);
        let master_before = group.master_addr().map(str::to_owned);
        let addr = registration.broker_addr.clone();
        let identity = match registration.raft {
            Some(claim) => Identity::Raft(claim),
            None => Identity::Plain {
                broker_id: registration.broker_id,
            },
        };
        group.members.insert(
            addr.clone(),
            Member {
                identity,
                ha_server_addr: registration.ha_server_addr,
                last_registration: now,
                timeout: registration.timeout.map_or(BROKER_EXPIRY, |timeout| {
                    timeout.clamp(MIN_BROKER_TIMEOUT, MAX_BROKER_TIMEOUT)
                }),
                connection: registration.connection,
                data_version: registration.data_version,
            },
        );

        let mut fenced = false;
        match registration.raft {
            Some(claim) if claim.leader => {
                let holds_slot = group.leader.as_deref() == Some(addr.as_str());
                if claim.term > group.fence_term
                    || (claim.term == group.fence_term && (group.leader.is_none() || holds_slot))
                {
                    group.fence_term = claim.term;
                    group.leader = Some(addr.clone());
                } else {
                    fenced = true;
                }
            }
            Some(_) => {
                if group.leader.as_deref() == Some(addr.as_str()) {
                    group.leader = None;
                }
            }
            None => {
                // A plain broker cannot hold a Raft leader's slot.
                if group.leader.as_deref() == Some(addr.as_str()) {
                    group.leader = None;
                }
            }
        }

        let master = group.master_addr().map(str::to_owned);
        if let Some(topics) = registration.topics
            && (master.is_none() || master.as_deref() == Some(addr.as_str()))
        {
            group.topics = topics;
        }
        let broker_id = group.listed_id(&addr).unwrap_or(registration.broker_id);
        let master_ha_addr = master
            .as_ref()
            .and_then(|master| group.members.get(master))
            .map(|member| member.ha_server_addr.clone());
        Ok(Registered {
            broker_id,
            fenced,
            master_changed: master != master_before,
            master_addr: master,
            master_ha_addr,
        })
    }

    fn remove_member(&mut self, broker_name: &str, addr: &str) -> bool {
        let Some(group) = self.groups.get_mut(broker_name) else {
            return false;
        };
        let removed = group.remove_member(addr).is_some();
        if group.members.is_empty() {
            self.groups.remove(broker_name);
        }
        removed
    }

    /// Drops a member on UNREGISTER_BROKER.
    pub fn unregister(&mut self, broker_name: &str, broker_addr: &str) -> Option<Removed> {
        self.remove_member(broker_name, broker_addr)
            .then(|| Removed {
                broker_name: broker_name.to_owned(),
                broker_addr: broker_addr.to_owned(),
                reason: RemovalReason::Unregistered,
            })
    }

    /// Refreshes a member's liveness without a full registration (QUERY_DATA_VERSION,
    /// BROKER_HEARTBEAT). Returns its stored data version, or `None` if it is unknown.
    pub fn touch(
        &mut self,
        broker_name: &str,
        broker_addr: &str,
        now: Instant,
    ) -> Option<DataVersion> {
        let member = self
            .groups
            .get_mut(broker_name)?
            .members
            .get_mut(broker_addr)?;
        member.last_registration = now;
        Some(member.data_version.clone())
    }

    fn remove_where(
        &mut self,
        reason: RemovalReason,
        mut doomed: impl FnMut(&Member) -> bool,
    ) -> Vec<Removed> {
        let mut removed = Vec::new();
        for (name, group) in &mut self.groups {
            let addrs: Vec<String> = group
                .members
                .iter()
                .filter(|(_, member)| doomed(member))
                .map(|(addr, _)| addr.clone())
                .collect();
            for addr in addrs {
                group.remove_member(&addr);
                removed.push(Removed {
                    broker_name: name.clone(),
                    broker_addr: addr,
                    reason,
                });
            }
        }
        self.groups.retain(|_, group| !group.members.is_empty());
        removed
    }

    /// Drops every member not heard from within its timeout as of `now`.
    pub fn expire(&mut self, now: Instant) -> Vec<Removed> {
        self.remove_where(RemovalReason::Expired, |member| {
            now.saturating_duration_since(member.last_registration) > member.timeout
        })
    }

    /// Drops every member that registered over `connection`.
    pub fn drop_connection(&mut self, connection: ConnectionKey) -> Vec<Removed> {
        self.remove_where(RemovalReason::ConnectionClosed, |member| {
            member.connection == Some(connection)
        })
    }

    /// The route of `topic`, or `None` if no group serves it.
    pub fn topic_route(&self, topic: &str) -> Option<TopicRouteData> {
        let mut route = TopicRouteData::default();
        for (name, group) in &self.groups {
            let Some(config) = group.topics.get(topic) else {
                continue;
            };
            route.queue_datas.push(QueueData {
                broker_name: name.clone(),
                read_queue_nums: config.read_queue_nums,
                write_queue_nums: config.write_queue_nums,
                perm: config.perm,
                topic_sys_flag: config.topic_sys_flag,
            });
            route.broker_datas.push(broker_data(name, group));
        }
        (!route.queue_datas.is_empty()).then_some(route)
    }

    /// Removes `topic` from every group (of `cluster`, when given). Returns whether any had it.
    /// A broker that still has the topic brings it back with its next registration.
    pub fn delete_topic(&mut self, topic: &str, cluster: Option<&str>) -> bool {
        let mut deleted = false;
        for group in self.groups.values_mut() {
            if cluster.is_none_or(|cluster| cluster == group.cluster) {
                deleted |= group.topics.remove(topic).is_some();
            }
        }
        deleted
    }

    pub fn cluster_info(&self) -> ClusterInfo {
        let mut info = ClusterInfo::default();
        for (name, group) in &self.groups {
            info.broker_addr_table
                .insert(name.clone(), broker_data(name, group));
            info.cluster_addr_table
                .entry(group.cluster.clone())
                .or_default()
                .insert(name.clone());
        }
        info
    }

    /// Every topic of every group (of `cluster`, when given).
    pub fn topics(&self, cluster: Option<&str>) -> TopicList {
        let topic_list: BTreeSet<String> = self
            .groups
            .values()
            .filter(|group| cluster.is_none_or(|cluster| cluster == group.cluster))
            .flat_map(|group| group.topics.keys().cloned())
            .collect();
        TopicList {
            topic_list,
            broker_addr: None,
        }
    }

    /// The route of every topic.
    pub fn all_routes(&self) -> BTreeMap<String, TopicRouteData> {
        self.topics(None)
            .topic_list
            .into_iter()
            .filter_map(|topic| self.topic_route(&topic).map(|route| (topic, route)))
            .collect()
    }

    /// A group's cluster and members by brokerId.
    pub fn member_group(&self, broker_name: &str) -> Option<BrokerData> {
        self.groups
            .get(broker_name)
            .map(|group| broker_data(broker_name, group))
    }

    /// The admin view of every group at time `now`.
    pub fn groups(&self, now: Instant) -> Vec<RegisteredGroup> {
        self.groups
            .iter()
            .map(|(name, group)| RegisteredGroup {
                broker_name: name.clone(),
                cluster: group.cluster.clone(),
                leader: group.leader.clone(),
                term: group.fence_term,
                members: group
                    .members
                    .iter()
                    .map(|(addr, member)| {
                        let raft = match member.identity {
                            Identity::Raft(claim) => Some(claim),
                            Identity::Plain { .. } => None,
                        };
                        RegisteredMember {
                            addr: addr.clone(),
                            broker_id: group.listed_id(addr).unwrap_or(MASTER_ID),
                            raft_node_id: raft.map(|claim| claim.node_id),
                            raft_term: raft.map(|claim| claim.term),
                            claims_leadership: raft.is_some_and(|claim| claim.leader),
                            ha_server_addr: member.ha_server_addr.clone(),
                            last_registration_age_ms: u64::try_from(
                                now.saturating_duration_since(member.last_registration)
                                    .as_millis(),
                            )
                            .unwrap_or(u64::MAX),
                        }
                    })
                    .collect(),
                topics: group.topics.len(),
            })
            .collect()
    }

    /// Counts for metrics: groups, members, topics.
    pub fn counts(&self) -> (usize, usize, usize) {
        (
            self.groups.len(),
            self.member_count(),
            self.topics(None).topic_list.len(),
        )
    }

    fn member_count(&self) -> usize {
        self.groups.values().map(|group| group.members.len()).sum()
    }
}

fn broker_data(name: &str, group: &Group) -> BrokerData {
    BrokerData {
        cluster: group.cluster.clone(),
        broker_name: name.to_owned(),
        broker_addrs: group.broker_addrs(),
        zone_name: None,
        enable_acting_master: false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CLUSTER: &str = "DefaultCluster";

    fn topics(names: &[&str]) -> Option<BTreeMap<String, TopicConfig>> {
        Some(
            names
                .iter()
                .map(|name| ((*name).to_owned(), TopicConfig::new(*name, 4)))
                .collect(),
        )
    }

    fn raft(group: &str, node_id: u64, term: u64, leader: bool) -> Registration {
        Registration {
            cluster: CLUSTER.into(),
            broker_name: group.into(),
            broker_addr: format!("127.0.0.1:{}", 10_000 + node_id),
            ha_server_addr: format!("127.0.0.1:{}", 20_000 + node_id),
            broker_id: if leader { 0 } else { node_id },
            raft: Some(RaftClaim {
                node_id,
                term,
                leader,
            }),
            topics: topics(&["TopicA", "TBW102"]),
            data_version: DataVersion::default(),
            timeout: None,
            connection: Some(node_id),
        }
    }

    fn addrs(table: &RouteTable, group: &str) -> Vec<(u64, String)> {
        table
            .member_group(group)
            .map(|data| data.broker_addrs.into_iter().collect())
            .unwrap_or_default()
    }

    fn addr(node_id: u64) -> String {
        format!("127.0.0.1:{}", 10_000 + node_id)
    }

    #[test]
    fn registration_builds_routes_and_cluster_info() {
        let now = Instant::now();
        let mut table = RouteTable::new();
        assert!(table.topic_route("TopicA").is_none());
        let registered = table.register(raft("broker-a", 1, 3, true), now).unwrap();
        assert_eq!(registered.broker_id, 0);
        assert!(!registered.fenced);
        table.register(raft("broker-a", 2, 3, false), now).unwrap();
        let mut plain = raft("broker-b", 9, 0, false);
        plain.raft = None;
        plain.broker_id = 0;
        plain.topics = topics(&["TopicA", "TopicB"]);
        table.register(plain, now).unwrap();

        assert_eq!(addrs(&table, "broker-a"), vec![(0, addr(1)), (2, addr(2))]);
        assert_eq!(addrs(&table, "broker-b"), vec![(0, addr(9))]);

        let route = table.topic_route("TopicA").unwrap();
        assert_eq!(route.queue_datas.len(), 2);
        assert_eq!(route.queue_datas[0].broker_name, "broker-a");
        assert_eq!(route.queue_datas[0].write_queue_nums, 4);
        assert_eq!(route.broker_datas[1].broker_addrs[&0], addr(9));
        assert_eq!(table.topic_route("TopicB").unwrap().broker_datas.len(), 1);
        // The auto-create route is an ordinary registered topic.
        assert_eq!(
            table.topic_route("TBW102").unwrap().broker_datas[0].broker_name,
            "broker-a"
        );
        assert!(table.topic_route("Nope").is_none());

        let info = table.cluster_info();
        assert_eq!(
            info.cluster_addr_table[CLUSTER],
            BTreeSet::from(["broker-a".to_owned(), "broker-b".to_owned()])
        );
        assert_eq!(
            table.topics(None).topic_list,
            BTreeSet::from([
                "TBW102".to_owned(),
                "TopicA".to_owned(),
                "TopicB".to_owned()
            ])
        );
        assert_eq!(table.counts(), (2, 3, 3));
    }

    #[test]
    fn a_lower_term_claim_never_replaces_a_higher_one() {
        let now = Instant::now();
        let mut table = RouteTable::new();
        table.register(raft("g", 1, 5, true), now).unwrap();
        // A deposed leader of term 4 still believes it leads.
        let registered = table.register(raft("g", 2, 4, true), now).unwrap();
        assert!(registered.fenced);
        assert_eq!(registered.broker_id, 2);
        assert_eq!(registered.master_addr, Some(addr(1)));
        assert_eq!(addrs(&table, "g"), vec![(0, addr(1)), (2, addr(2))]);
        // Re-registering the term-5 leader keeps it; the term-4 claim repeated changes nothing.
        table.register(raft("g", 1, 5, true), now).unwrap();
        assert!(table.register(raft("g", 2, 4, true), now).unwrap().fenced);
        assert_eq!(addrs(&table, "g"), vec![(0, addr(1)), (2, addr(2))]);
        // Even after the term-5 leader is gone, the term-4 claim stays fenced.
        table.unregister("g", &addr(1)).unwrap();
        assert!(table.register(raft("g", 2, 4, true), now).unwrap().fenced);
        assert_eq!(addrs(&table, "g"), vec![(2, addr(2))]);
        assert_eq!(table.groups(now)[0].term, 5);
    }

    #[test]
    fn leadership_moves_with_a_higher_term() {
        let now = Instant::now();
        let mut table = RouteTable::new();
        table.register(raft("g", 1, 5, true), now).unwrap();
        table.register(raft("g", 2, 5, false), now).unwrap();
        table.register(raft("g", 3, 5, false), now).unwrap();
        assert_eq!(
            addrs(&table, "g"),
            vec![(0, addr(1)), (2, addr(2)), (3, addr(3))]
        );

        // Member 2 wins term 6 and registers at once; member 1 has not noticed yet.
        let registered = table.register(raft("g", 2, 6, true), now).unwrap();
        assert_eq!((registered.broker_id, registered.fenced), (0, false));
        assert!(registered.master_changed);
        assert!(
            !table
                .register(raft("g", 2, 6, true), now)
                .unwrap()
                .master_changed
        );
        assert_eq!(
            addrs(&table, "g"),
            vec![(0, addr(2)), (1, addr(1)), (3, addr(3))]
        );
        // Member 1's stale claim (term 5) does not take the slot back.
        assert!(table.register(raft("g", 1, 5, true), now).unwrap().fenced);
        assert_eq!(addrs(&table, "g")[0], (0, addr(2)));
        // Then it learns the new term and registers as a follower.
        table.register(raft("g", 1, 6, false), now).unwrap();
        assert_eq!(
            addrs(&table, "g"),
            vec![(0, addr(2)), (1, addr(1)), (3, addr(3))]
        );
        // A follower's higher term (an election in progress) does not empty slot 0.
        table.register(raft("g", 3, 7, false), now).unwrap();
        assert_eq!(addrs(&table, "g")[0], (0, addr(2)));
        // The leader stepping down empties slot 0 until the next leader registers.
        table.register(raft("g", 2, 7, false), now).unwrap();
        assert_eq!(
            addrs(&table, "g"),
            vec![(1, addr(1)), (2, addr(2)), (3, addr(3))]
        );
        table.register(raft("g", 3, 7, true), now).unwrap();
        assert_eq!(
            addrs(&table, "g"),
            vec![(0, addr(3)), (1, addr(1)), (2, addr(2))]
        );
    }

    #[test]
    fn equal_term_claims_keep_the_first_holder() {
        let now = Instant::now();
        let mut table = RouteTable::new();
        table.register(raft("g", 1, 5, true), now).unwrap();
        // Two leaders in one term cannot happen in Raft; if a bug made it happen, the slot
        // does not flap between them.
        assert!(table.register(raft("g", 2, 5, true), now).unwrap().fenced);
        assert_eq!(addrs(&table, "g")[0], (0, addr(1)));
    }

    #[test]
    fn members_expire_after_their_timeout() {
        let start = Instant::now();
        let mut table = RouteTable::new();
        table.register(raft("g", 1, 5, true), start).unwrap();
        table.register(raft("g", 2, 5, false), start).unwrap();
        let later = start + Duration::from_secs(60);
        table.register(raft("g", 2, 5, false), later).unwrap();

        assert!(
            table.expire(start + BROKER_EXPIRY).is_empty(),
            "exactly 120 s is still alive"
        );
        let removed = table.expire(start + BROKER_EXPIRY + Duration::from_secs(1));
        assert_eq!(
            removed,
            vec![Removed {
                broker_name: "g".into(),
                broker_addr: addr(1),
                reason: RemovalReason::Expired
            }]
        );
        // The leader expired: slot 0 is empty, the follower remains, and so do the topics.
        assert_eq!(addrs(&table, "g"), vec![(2, addr(2))]);
        assert!(table.topic_route("TopicA").is_some());

        let removed = table.expire(later + BROKER_EXPIRY + Duration::from_secs(1));
        assert_eq!(removed.len(), 1);
        assert!(table.member_group("g").is_none());
        assert!(
            table.topic_route("TopicA").is_none(),
            "the group's topics go with it"
        );
        assert_eq!(table.counts(), (0, 0, 0));
    }

    #[test]
    fn registration_timeouts_are_honoured_within_bounds() {
        let start = Instant::now();
        let mut table = RouteTable::new();
        let mut short = raft("g", 1, 1, true);
        short.timeout = Some(Duration::from_millis(10));
        table.register(short, start).unwrap();
        assert!(table.expire(start + Duration::from_millis(500)).is_empty());
        assert_eq!(
            table
                .expire(start + MIN_BROKER_TIMEOUT + Duration::from_millis(1))
                .len(),
            1
        );
    }

    #[test]
    fn closed_connections_drop_their_members_at_once() {
        let now = Instant::now();
        let mut table = RouteTable::new();
        table.register(raft("g", 1, 5, true), now).unwrap();
        table.register(raft("g", 2, 5, false), now).unwrap();
        let removed = table.drop_connection(1);
        assert_eq!(removed.len(), 1);
        assert_eq!(removed[0].reason, RemovalReason::ConnectionClosed);
        assert_eq!(addrs(&table, "g"), vec![(2, addr(2))]);
        assert!(table.drop_connection(1).is_empty());
    }

    #[test]
    fn topics_come_from_the_slot_zero_member() {
        let now = Instant::now();
        let mut table = RouteTable::new();
        table.register(raft("g", 1, 5, true), now).unwrap();
        let mut follower = raft("g", 2, 5, false);
        follower.topics = topics(&["Stale"]);
        table.register(follower, now).unwrap();
        assert!(table.topic_route("Stale").is_none());
        let mut leader = raft("g", 1, 5, true);
        leader.topics = topics(&["TopicA", "New"]);
        table.register(leader, now).unwrap();
        assert!(table.topic_route("New").is_some());
        assert!(
            table.topic_route("TBW102").is_none(),
            "a registration replaces the topic set"
        );
        // A registration without a body keeps the topics.
        let mut bodiless = raft("g", 1, 5, true);
        bodiless.topics = None;
        table.register(bodiless, now).unwrap();
        assert!(table.topic_route("New").is_some());
        // Without a leader, a follower's registration keeps the topics current.
        table.unregister("g", &addr(1)).unwrap();
        let mut follower = raft("g", 2, 5, false);
        follower.topics = topics(&["OnlyFollower"]);
        table.register(follower, now).unwrap();
        assert!(table.topic_route("OnlyFollower").is_some());
    }

    #[test]
    fn plain_rocketmq_brokers_are_listed_by_broker_id() {
        let now = Instant::now();
        let mut table = RouteTable::new();
        let mut master = raft("g", 1, 0, false);
        master.raft = None;
        master.broker_id = 0;
        let mut slave = raft("g", 2, 0, false);
        slave.raft = None;
        slave.broker_id = 1;
        slave.topics = topics(&["SlaveOnly"]);
        table.register(master, now).unwrap();
        let registered = table.register(slave, now).unwrap();
        assert_eq!(registered.master_addr, Some(addr(1)));
        assert_eq!(
            registered.master_ha_addr,
            Some("127.0.0.1:20001".to_owned())
        );
        assert_eq!(addrs(&table, "g"), vec![(0, addr(1)), (1, addr(2))]);
        assert!(
            table.topic_route("SlaveOnly").is_none(),
            "only the master's topics count"
        );
    }

    #[test]
    fn bad_registrations_are_refused() {
        let now = Instant::now();
        let mut table = RouteTable::new();
        assert_eq!(
            table.register(raft("g", 0, 1, false), now),
            Err(RegisterError::ReservedNodeId)
        );
        let mut nameless = raft("g", 1, 1, true);
        nameless.broker_name.clear();
        assert!(matches!(
            table.register(nameless, now),
            Err(RegisterError::BadName {
                field: "brokerName"
            })
        ));
        assert_eq!(table.counts(), (0, 0, 0));
    }

    #[test]
    fn the_table_is_bounded() {
        let now = Instant::now();
        let mut table = RouteTable::new();
        for node_id in 1..=MAX_MEMBERS as u64 {
            // Spread over groups: real groups have a handful of members.
            let mut registration = raft(&format!("g{}", node_id % 100), node_id, 1, false);
            registration.topics = None;
            table.register(registration, now).unwrap();
        }
        let mut one_more = raft("g", MAX_MEMBERS as u64 + 1, 1, false);
        one_more.topics = None;
        assert_eq!(
            table.register(one_more, now),
            Err(RegisterError::TooManyMembers)
        );
        // Known members still re-register.
        table.register(raft("g1", 1, 1, true), now).unwrap();
        let mut huge = raft("g1", 1, 1, true);
        huge.topics = Some(
            (0..=MAX_TOPICS_PER_REGISTRATION)
                .map(|i| (i.to_string(), TopicConfig::new(i.to_string(), 1)))
                .collect(),
        );
        assert_eq!(table.register(huge, now), Err(RegisterError::TooManyTopics));
    }

    #[test]
    fn a_renamed_broker_leaves_its_old_group() {
        let now = Instant::now();
        let mut table = RouteTable::new();
        table.register(raft("old", 1, 1, true), now).unwrap();
        table.register(raft("new", 1, 1, true), now).unwrap();
        assert!(table.member_group("old").is_none());
        assert_eq!(addrs(&table, "new"), vec![(0, addr(1))]);
    }

    #[test]
    fn deleting_a_topic_removes_its_route() {
        let now = Instant::now();
        let mut table = RouteTable::new();
        table.register(raft("g", 1, 1, true), now).unwrap();
        assert!(!table.delete_topic("TopicA", Some("OtherCluster")));
        assert!(table.delete_topic("TopicA", None));
        assert!(table.topic_route("TopicA").is_none());
        assert!(!table.delete_topic("TopicA", None));
    }

    #[test]
    fn touch_refreshes_liveness() {
        let start = Instant::now();
        let mut table = RouteTable::new();
        table.register(raft("g", 1, 1, true), start).unwrap();
        let later = start + Duration::from_secs(100);
        assert!(table.touch("g", &addr(1), later).is_some());
        assert!(table.touch("g", "nobody:1", later).is_none());
        assert!(
            table
                .expire(start + BROKER_EXPIRY + Duration::from_secs(1))
                .is_empty()
        );
        let view = table.groups(later + Duration::from_secs(1));
        assert_eq!(view[0].members[0].last_registration_age_ms, 1_000);
        assert_eq!(view[0].leader, Some(addr(1)));
    }
}
