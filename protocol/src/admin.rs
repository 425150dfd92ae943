//! The admin HTTP API's JSON bodies, defined once for the servers that answer them (the
//! broker's `broker/src/admin.rs`, the NameServer's `namesrv/src/admin.rs`) and for everything
//! that reads them (`raftmq_client::admin_http`, used by `mq`, jepsen-lite and the tests).
//! Types only: no I/O, no HTTP.
//!
//! Broker (every member, its own admin port):
//!
//! | endpoint | request | answer |
//! |---|---|---|
//! | `GET /healthz` | | `ok` (text) |
//! | `GET /readyz` | | text; 503 until a leader is known |
//! | `GET /raft` | | [`RaftStatus`] |
//! | `GET /topics` | | `[`[`TopicStatus`]`]` |
//! | `GET /groups` | | `[`[`GroupStatus`]`]` |
//! | `GET /metrics` | | Prometheus text |
//! | `POST /raft/add-learner` | [`AddLearner`] | [`MembershipAnswer`] |
//! | `POST /raft/change-membership` | [`ChangeMembership`] | [`MembershipAnswer`] |
//! | `POST /raft/remove-learner` | [`RemoveLearner`] | [`MembershipAnswer`] |
//! | `POST /raft/elect` | (any body) | [`ElectAnswer`] |
//! | `POST /offsets/reset` | [`ResetOffsets`] | [`ResetAnswer`] |
//! | `GET /acl` | | [`crate::acl::AclView`] (no secret keys) |
//! | `POST /acl` | [`crate::acl::AclChange`] | [`AclAnswer`] |
//!
//! Authentication: a server given an admin token ([`AdminToken`]) requires
//! `Authorization: Bearer <token>` on every request that is not a `GET` or `HEAD`, and on
//! everything under `/acl`; a wrong or missing token is answered 401. A server without a token
//! must listen for admin HTTP on loopback only ([`check_admin_exposure`]).
//!
//! NameServer: `GET /healthz` (text), `GET /routes` ([`Routes`]), `GET /brokers`
//! (`[`[`RegisteredGroup`]`]`), `GET /metrics` (OpenMetrics text).
//!
//! A refusal on either server is a non-2xx status with an [`ErrorBody`].
//!
//! The JSON is what other tools read (`curl`, scripts, dashboards), so field names and shapes
//! never change; the tests below pin each body's bytes. A field added later gets
//! `#[serde(default)]` so that a reader still accepts a member that does not send it yet.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::route::TopicRouteData;

/// The environment variable holding the admin token, for the servers and for `mq`.
pub const ADMIN_TOKEN_ENV: &str = "RAFTMQ_ADMIN_TOKEN";

/// Shortest admin token accepted: a guessable token is no protection.
pub const ADMIN_TOKEN_MIN_CHARS: usize = 16;

/// The bearer token that guards admin HTTP. Never printed: `Debug` shows `<redacted>`.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct AdminToken(String);

/// The challenges a refused admin request is answered with (`WWW-Authenticate`, one header
/// each): `Bearer` for `mq` and scripts, and `Basic` so that a browser asks its user for the
/// token (as the password; any user name) and sends it with the dashboard's actions, which are
/// plain HTML form posts that cannot carry a bearer header.
pub const ADMIN_CHALLENGES: [&str; 2] =
    ["Bearer", "Basic realm=\"RaftMQ admin\", charset=\"UTF-8\""];

/// What a refused admin request is told.
pub const ADMIN_REFUSAL: &str = "this admin request needs Authorization: Bearer <admin token> (from a browser: the admin token as the password)";

impl AdminToken {
    /// Whether an `Authorization` header value carries this token: `Bearer <token>`, or
    /// `Basic <base64 of user:token>` (a browser's answer to the Basic challenge; the user name
    /// is not checked). Compared in constant time so that timing does not reveal how much of a
    /// guess was right.
    pub fn accepts(&self, authorization: Option<&str>) -> bool {
        use base64::Engine;
        use subtle::ConstantTimeEq;
        let Some(value) = authorization.map(str::trim) else {
            return false;
        };
        let presented = if let Some(bearer) = value.strip_prefix("Bearer ") {
            bearer.trim().as_bytes().to_vec()
        } else if let Some(basic) = value.strip_prefix("Basic ") {
            let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(basic.trim()) else {
                return false;
            };
            match decoded.iter().position(|b| *b == b':') {
                Some(colon) => decoded[colon + 1..].to_vec(),
                None => return false,
            }
        } else {
            return false;
        };
        bool::from(presented.as_slice().ct_eq(self.0.as_bytes()))
    }

    /// The `Authorization` header value a client sends.
    pub fn header_value(&self) -> String {
        format!("Bearer {}", self.0)
    }
}

impl std::fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AdminToken(<redacted>)")
    }
}

impl TryFrom<String> for AdminToken {
    type Error = String;

    fn try_from(token: String) -> Result<Self, Self::Error> {
        let token = token.trim().to_string();
        if token.chars().count() < ADMIN_TOKEN_MIN_CHARS
            || !token.chars().all(|c| c.is_ascii_graphic())
        {
            return Err(format!(
                "an admin token must be at least {ADMIN_TOKEN_MIN_CHARS} printable ASCII characters without spaces"
            ));
        }
        Ok(AdminToken(token))
    }
}

impl std::str::FromStr for AdminToken {
    type Err = String;

    fn from_str(token: &str) -> Result<Self, Self::Err> {
        AdminToken::try_from(token.to_string())
    }
}

/// Refuses admin HTTP on an address other hosts can reach (not loopback) without credentials:
/// anyone reaching it could change Raft membership or reset offsets. The credentials are a
/// token, or a client certificate of the cluster's CA on every connection
/// (`client_certificates_required`: `--tls-mode enforcing` with `--tls-client-auth require`).
pub fn check_admin_exposure(
    admin_listen: std::net::SocketAddr,
    token: Option<&AdminToken>,
    client_certificates_required: bool,
) -> Result<(), String> {
    if token.is_some() || client_certificates_required || admin_listen.ip().is_loopback() {
        return Ok(());
    }
    Err(format!(
        "admin HTTP would listen on {admin_listen}, which is not loopback, without credentials: set --admin-token (or {ADMIN_TOKEN_ENV}), require client certificates (--tls-mode enforcing --tls-client-auth require) or listen on 127.0.0.1"
    ))
}

/// Whether a request to admin HTTP must carry the token (when one is set): every request
/// that may change state, and the ACL configuration.
pub fn admin_request_needs_token(method_is_read: bool, path: &str) -> bool {
    !method_is_read || path == "/acl" || path.starts_with("/acl/")
}

/// `POST /acl`'s answer: the change is applied on the leader, whose applied log index was then
/// `log_index` (at or past the change's own entry).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AclAnswer {
    pub log_index: u64,
}

/// `GET /healthz`'s text on both servers.
pub const HEALTHY: &str = "ok\n";

/// The `elect` value of [`ElectAnswer`].
pub const ELECTION_STARTED: &str = "started";

/// The body of every refusal (a non-2xx status): `{"error": "..."}`.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct ErrorBody {
    pub error: String,
}

// ---- broker ----

/// One follower as the leader sees it.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct FollowerStatus {
    pub matched_index: Option<u64>,
    pub lag_entries: u64,
    /// Milliseconds since the follower last acknowledged a heartbeat or an append (its last
    /// contact with the leader); `None` before it ever did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_contact_ms: Option<u64>,
}

/// `GET /raft`: one member's Raft view and its log's flush counters.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct RaftStatus {
    pub broker_name: String,
    pub node_id: u64,
    /// openraft's server state: `Leader`, `Follower`, `Candidate`, `Learner`, `Shutdown`.
    pub state: String,
    pub term: u64,
    #[serde(default)]
    pub leader: Option<u64>,
    #[serde(default)]
    pub last_log_index: Option<u64>,
    #[serde(default)]
    pub applied_index: Option<u64>,
    #[serde(default)]
    pub voters: BTreeSet<u64>,
    #[serde(default)]
    pub learners: BTreeSet<u64>,
    /// Raft addresses by node id.
    #[serde(default)]
    pub nodes: BTreeMap<u64, String>,
    /// Filled on the leader only.
    #[serde(default)]
    pub followers: BTreeMap<u64, FollowerStatus>,
    pub remoting_addr: String,
    pub log_fsyncs: u64,
    pub log_entries_flushed: u64,
    /// It leads and a quorum acknowledged it recently: it takes writes now (a leader cut off
    /// from its group, or restarted with an old term, does not).
    #[serde(default)]
    pub writable: bool,
    /// On the leader: the highest log index a majority of the voters holds.
    #[serde(default)]
    pub commit_index: Option<u64>,
    /// On the leader: milliseconds since a quorum last acknowledged it (its last contact with
    /// the group).
    #[serde(default)]
    pub quorum_ack_age_ms: Option<u64>,
    /// Bytes of the files under the member's data directory (Raft log, snapshots, state).
    #[serde(default)]
    pub disk_used_bytes: Option<u64>,
    /// The member's disk is full: its log waits for space and it acknowledges nothing new
    /// (it goes on by itself once space is freed).
    #[serde(default)]
    pub disk_full: bool,
    /// Transactions whose half message waits for a commit, a rollback or its last check, in
    /// this member's applied state (jepsen-lite proves every one gets resolved).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending_transactions: Option<u64>,
    /// Timer and delayed messages not yet due, in this member's applied state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending_timers: Option<u64>,
}

impl RaftStatus {
    /// The `state` of a member that leads.
    pub const LEADER: &'static str = "Leader";

    pub fn is_leader(&self) -> bool {
        self.state == Self::LEADER
    }
}

/// `GET /topics`: one topic with its queues' offsets.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct TopicStatus {
    pub name: String,
    pub read_queue_nums: u32,
    pub write_queue_nums: u32,
    pub perm: u32,
    /// Per queue: `[min offset, max offset]` (max = the offset after the last message).
    pub queues: BTreeMap<u32, (u64, u64)>,
    /// Per queue: bytes of its messages still held (min..max).
    #[serde(default)]
    pub queue_bytes: BTreeMap<u32, u64>,
}

/// `GET /groups`: one consumer group with its committed offsets, lag and live clients.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct GroupStatus {
    pub group: String,
    pub clients: Vec<String>,
    pub queues: Vec<GroupQueueStatus>,
    pub total_lag: u64,
}

/// One queue of a [`GroupStatus`].
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct GroupQueueStatus {
    pub topic: String,
    pub queue: u32,
    pub committed: u64,
    pub max_offset: u64,
    pub lag: u64,
    /// The consumer client that pulled this queue most recently from this member (within the
    /// client expiry): which client holds the queue.
    #[serde(default)]
    pub client: Option<String>,
}

/// `POST /raft/add-learner`, on the leader: add a non-voting member and wait until it has
/// caught up.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct AddLearner {
    pub node_id: u64,
    /// Its Raft address, `host:port`.
    pub addr: String,
}

/// `POST /raft/change-membership`, on the leader: make `voters` the voters. With `retain`,
/// removed voters stay as learners.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct ChangeMembership {
    pub voters: BTreeSet<u64>,
    #[serde(default)]
    pub retain: bool,
}

/// `POST /raft/remove-learner`, on the leader: drop a non-voting member.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct RemoveLearner {
    pub node_id: u64,
}

/// The answer to a membership change: the log index of the membership entry.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct MembershipAnswer {
    pub log_index: u64,
}

/// The answer to `POST /raft/elect`: `{"elect": "started"}` ([`ELECTION_STARTED`]).
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct ElectAnswer {
    pub elect: String,
}

/// `POST /raft/transfer-leader`, on the leader: hand leadership to voter `node_id`.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct TransferLeader {
    pub node_id: u64,
}

/// The answer to `POST /raft/transfer-leader` once the named member leads: `{"leader": 2}`.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct TransferLeaderAnswer {
    pub leader: u64,
}

/// `POST /offsets/reset`, on the leader: move a consumer group's committed offsets on one
/// topic (every queue, or `queue`) to `offset` or to the first message stored at or after
/// `timestamp_ms`; exactly one of the two is given. `force` resets even while the group has
/// live consumers.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct ResetOffsets {
    pub group: String,
    pub topic: String,
    #[serde(default)]
    pub queue: Option<u32>,
    #[serde(default)]
    pub offset: Option<u64>,
    #[serde(default)]
    pub timestamp_ms: Option<i64>,
    #[serde(default)]
    pub force: bool,
}

/// One queue of a [`ResetAnswer`].
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct ResetQueue {
    pub queue: u32,
    /// The committed offset before, if the group had one.
    pub previous: Option<u64>,
    pub offset: u64,
}

/// The answer to `POST /offsets/reset`.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct ResetAnswer {
    pub group: String,
    pub topic: String,
    pub queues: Vec<ResetQueue>,
}

// ---- NameServer ----

/// `GET /routes`: every topic's route, as clients get it (RocketMQ's camelCase JSON).
pub type Routes = BTreeMap<String, TopicRouteData>;

/// `GET /brokers`: one broker group as the NameServer has it registered.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct RegisteredGroup {
    pub broker_name: String,
    pub cluster: String,
    /// The address in slot 0 (brokerId 0, the leader), if any.
    pub leader: Option<String>,
    /// The highest leadership term seen.
    pub term: u64,
    pub members: Vec<RegisteredMember>,
    /// How many topics the group registered.
    pub topics: usize,
}

/// One member of a [`RegisteredGroup`].
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct RegisteredMember {
    pub addr: String,
    /// Where the route lists it.
    pub broker_id: u64,
    pub raft_node_id: Option<u64>,
    pub raft_term: Option<u64>,
    pub claims_leadership: bool,
    pub ha_server_addr: String,
    pub last_registration_age_ms: u64,
}

#[cfg(test)]
mod tests {
    //! Each body against the exact JSON the servers wrote before these types were shared.

    use super::*;
    use crate::route::{BrokerData, QueueData};
    use serde::de::DeserializeOwned;

    /// `value` encodes to exactly `json` and `json` decodes back to `value`.
    fn pins<T>(value: &T, json: &str)
    where
        T: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug,
    {
        assert_eq!(serde_json::to_string(value).unwrap(), json);
        assert_eq!(&serde_json::from_str::<T>(json).unwrap(), value);
    }

    #[test]
    fn raft_status_on_a_leader() {
        let status = RaftStatus {
            broker_name: "broker-a".into(),
            node_id: 1,
            state: "Leader".into(),
            term: 3,
            leader: Some(1),
            last_log_index: Some(42),
            applied_index: Some(41),
            voters: BTreeSet::from([1, 2, 3]),
            learners: BTreeSet::from([4]),
            nodes: BTreeMap::from([(1, "127.0.0.1:10912".into()), (2, "127.0.0.2:10912".into())]),
            followers: BTreeMap::from([
                (
                    2,
                    FollowerStatus {
                        matched_index: Some(40),
                        lag_entries: 2,
                        last_contact_ms: Some(15),
                    },
                ),
                (
                    3,
                    FollowerStatus {
                        matched_index: None,
                        lag_entries: 42,
                        last_contact_ms: None,
                    },
                ),
            ]),
            remoting_addr: "127.0.0.1:10911".into(),
            log_fsyncs: 7,
            log_entries_flushed: 42,
            writable: true,
            commit_index: Some(40),
            quorum_ack_age_ms: Some(12),
            disk_used_bytes: Some(4096),
            disk_full: false,
            pending_transactions: None,
            pending_timers: None,
        };
        pins(
            &status,
            r#"{"broker_name":"broker-a","node_id":1,"state":"Leader","term":3,"leader":1,"last_log_index":42,"applied_index":41,"voters":[1,2,3],"learners":[4],"nodes":{"1":"127.0.0.1:10912","2":"127.0.0.2:10912"},"followers":{"2":{"matched_index":40,"lag_entries":2,"last_contact_ms":15},"3":{"matched_index":null,"lag_entries":42}},"remoting_addr":"127.0.0.1:10911","log_fsyncs":7,"log_entries_flushed":42,"writable":true,"commit_index":40,"quorum_ack_age_ms":12,"disk_used_bytes":4096,"disk_full":false}"#,
        );
        assert!(status.is_leader());
    }

    #[test]
    fn raft_status_of_a_fresh_member() {
        let status = RaftStatus {
            broker_name: "broker-a".into(),
            node_id: 4,
            state: "Learner".into(),
            term: 0,
            leader: None,
            last_log_index: None,
            applied_index: None,
            voters: BTreeSet::new(),
            learners: BTreeSet::new(),
            nodes: BTreeMap::new(),
            followers: BTreeMap::new(),
            remoting_addr: "127.0.0.4:10911".into(),
            log_fsyncs: 0,
            log_entries_flushed: 0,
            writable: false,
            commit_index: None,
            quorum_ack_age_ms: None,
            disk_used_bytes: None,
            disk_full: true,
            pending_transactions: Some(2),
            pending_timers: Some(5),
        };
        pins(
            &status,
            r#"{"broker_name":"broker-a","node_id":4,"state":"Learner","term":0,"leader":null,"last_log_index":null,"applied_index":null,"voters":[],"learners":[],"nodes":{},"followers":{},"remoting_addr":"127.0.0.4:10911","log_fsyncs":0,"log_entries_flushed":0,"writable":false,"commit_index":null,"quorum_ack_age_ms":null,"disk_used_bytes":null,"disk_full":true,"pending_transactions":2,"pending_timers":5}"#,
        );
        assert!(!status.is_leader());
    }

    #[test]
    fn raft_status_accepts_a_member_that_omits_optional_fields() {
        let status: RaftStatus = serde_json::from_str(
            r#"{"broker_name":"b","node_id":2,"state":"Follower","term":5,"remoting_addr":"a:1","log_fsyncs":1,"log_entries_flushed":1,"added_later":true}"#,
        )
        .unwrap();
        assert_eq!((status.node_id, status.leader), (2, None));
        assert!(status.voters.is_empty() && status.followers.is_empty());
        assert!(!status.writable && status.commit_index.is_none());
    }

    #[test]
    fn topics_and_groups() {
        pins(
            &vec![TopicStatus {
                name: "TopicA".into(),
                read_queue_nums: 2,
                write_queue_nums: 2,
                perm: 6,
                queues: BTreeMap::from([(0, (0, 5)), (1, (3, 3))]),
                queue_bytes: BTreeMap::from([(0, 640), (1, 0)]),
            }],
            r#"[{"name":"TopicA","read_queue_nums":2,"write_queue_nums":2,"perm":6,"queues":{"0":[0,5],"1":[3,3]},"queue_bytes":{"0":640,"1":0}}]"#,
        );
        pins(
            &vec![GroupStatus {
                group: "g".into(),
                clients: vec!["10.0.0.1@1".into()],
                queues: vec![GroupQueueStatus {
                    topic: "TopicA".into(),
                    queue: 1,
                    committed: 3,
                    max_offset: 5,
                    lag: 2,
                    client: Some("10.0.0.1@1".into()),
                }],
                total_lag: 2,
            }],
            r#"[{"group":"g","clients":["10.0.0.1@1"],"queues":[{"topic":"TopicA","queue":1,"committed":3,"max_offset":5,"lag":2,"client":"10.0.0.1@1"}],"total_lag":2}]"#,
        );
    }

    #[test]
    fn membership_requests_and_answers() {
        pins(
            &AddLearner {
                node_id: 4,
                addr: "127.0.0.1:20914".into(),
            },
            r#"{"node_id":4,"addr":"127.0.0.1:20914"}"#,
        );
        pins(
            &ChangeMembership {
                voters: BTreeSet::from([1, 2, 4]),
                retain: false,
            },
            r#"{"voters":[1,2,4],"retain":false}"#,
        );
        // `retain` may be left out (the README's curl examples do).
        let change: ChangeMembership = serde_json::from_str(r#"{"voters":[3,1]}"#).unwrap();
        assert_eq!(change.voters, BTreeSet::from([1, 3]));
        assert!(!change.retain);
        pins(&RemoveLearner { node_id: 4 }, r#"{"node_id":4}"#);
        pins(&MembershipAnswer { log_index: 17 }, r#"{"log_index":17}"#);
        pins(
            &ElectAnswer {
                elect: ELECTION_STARTED.into(),
            },
            r#"{"elect":"started"}"#,
        );
        pins(
            &ErrorBody {
                error: "node ids start at 1".into(),
            },
            r#"{"error":"node ids start at 1"}"#,
        );
    }

    #[test]
    fn offset_reset() {
        // What `mq offset reset` sent: every field, unset ones as null.
        pins(
            &ResetOffsets {
                group: "g".into(),
                topic: "t".into(),
                queue: None,
                offset: Some(0),
                timestamp_ms: None,
                force: false,
            },
            r#"{"group":"g","topic":"t","queue":null,"offset":0,"timestamp_ms":null,"force":false}"#,
        );
        // What a person sends with curl.
        let reset: ResetOffsets =
            serde_json::from_str(r#"{"group":"g","topic":"t","timestamp_ms":1700000000000}"#)
                .unwrap();
        assert_eq!(reset.timestamp_ms, Some(1_700_000_000_000));
        assert_eq!(
            (reset.queue, reset.offset, reset.force),
            (None, None, false)
        );
        pins(
            &ResetAnswer {
                group: "g".into(),
                topic: "t".into(),
                queues: vec![
                    ResetQueue {
                        queue: 0,
                        previous: Some(9),
                        offset: 0,
                    },
                    ResetQueue {
                        queue: 1,
                        previous: None,
                        offset: 0,
                    },
                ],
            },
            r#"{"group":"g","topic":"t","queues":[{"queue":0,"previous":9,"offset":0},{"queue":1,"previous":null,"offset":0}]}"#,
        );
    }

    #[test]
    fn namesrv_routes_and_brokers() {
        let routes: Routes = BTreeMap::from([(
            "TopicA".to_owned(),
            TopicRouteData {
                order_topic_conf: None,
                queue_datas: vec![QueueData {
                    broker_name: "broker-a".into(),
                    read_queue_nums: 4,
                    write_queue_nums: 4,
                    perm: 6,
                    topic_sys_flag: 0,
                }],
                broker_datas: vec![BrokerData {
                    cluster: "DefaultCluster".into(),
                    broker_name: "broker-a".into(),
                    broker_addrs: BTreeMap::from([
                        (0, "127.0.0.2:10911".into()),
                        (1, "127.0.0.1:10911".into()),
                    ]),
                    ..BrokerData::default()
                }],
                filter_server_table: BTreeMap::new(),
            },
        )]);
        let json = serde_json::to_string(&routes).unwrap();
        assert_eq!(serde_json::from_str::<Routes>(&json).unwrap(), routes);
        let value: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(
            value["TopicA"]["brokerDatas"][0]["brokerAddrs"]["0"],
            "127.0.0.2:10911"
        );
        assert_eq!(value["TopicA"]["queueDatas"][0]["perm"], 6);

        pins(
            &vec![RegisteredGroup {
                broker_name: "broker-a".into(),
                cluster: "DefaultCluster".into(),
                leader: Some("127.0.0.2:10911".into()),
                term: 4,
                members: vec![RegisteredMember {
                    addr: "127.0.0.2:10911".into(),
                    broker_id: 0,
                    raft_node_id: Some(2),
                    raft_term: Some(4),
                    claims_leadership: true,
                    ha_server_addr: String::new(),
                    last_registration_age_ms: 1500,
                }],
                topics: 3,
            }],
            r#"[{"broker_name":"broker-a","cluster":"DefaultCluster","leader":"127.0.0.2:10911","term":4,"members":[{"addr":"127.0.0.2:10911","broker_id":0,"raft_node_id":2,"raft_term":4,"claims_leadership":true,"ha_server_addr":"","last_registration_age_ms":1500}],"topics":3}]"#,
        );
    }
}

#[cfg(test)]
mod token_tests {
    use super::*;

    #[test]
    fn the_token_is_checked_exactly_and_never_printed() {
        let token: AdminToken = "0123456789abcdef-token".parse().unwrap();
        assert!(token.accepts(Some("Bearer 0123456789abcdef-token")));
        assert!(token.accepts(Some(&token.header_value())));
        for wrong in [
            None,
            Some(""),
            Some("0123456789abcdef-token"),
            Some("Bearer 0123456789abcdef-toke"),
            Some("Bearer 0123456789abcdef-token2"),
            Some("Basic 0123456789abcdef-token"),
            // base64 of "admin:0123456789abcdef-toke" and of "0123456789abcdef-token" (no colon)
            Some("Basic YWRtaW46MDEyMzQ1Njc4OWFiY2RlZi10b2tl"),
            Some("Basic MDEyMzQ1Njc4OWFiY2RlZi10b2tlbg=="),
        ] {
            assert!(!token.accepts(wrong), "{wrong:?} accepted");
        }
        // A browser's Basic answer with the token as the password, whatever the user name:
        // base64 of "admin:0123456789abcdef-token" and of ":0123456789abcdef-token".
        assert!(token.accepts(Some("Basic YWRtaW46MDEyMzQ1Njc4OWFiY2RlZi10b2tlbg==")));
        assert!(token.accepts(Some("Basic OjAxMjM0NTY3ODlhYmNkZWYtdG9rZW4=")));
        assert!(!format!("{token:?}").contains("abcdef"));
        assert!("short".parse::<AdminToken>().is_err());
        assert!("has a space in it, long".parse::<AdminToken>().is_err());
    }

    #[test]
    fn admin_off_loopback_needs_a_token_or_client_certificates() {
        let token: AdminToken = "0123456789abcdef-token".parse().unwrap();
        let loopback = "127.0.0.1:10913".parse().unwrap();
        let everywhere = "0.0.0.0:10913".parse().unwrap();
        assert!(check_admin_exposure(loopback, None, false).is_ok());
        assert!(check_admin_exposure("[::1]:10913".parse().unwrap(), None, false).is_ok());
        let refused = check_admin_exposure(everywhere, None, false).unwrap_err();
        assert!(refused.contains("--admin-token"), "{refused}");
        assert!(refused.contains("--tls-client-auth require"), "{refused}");
        assert!(check_admin_exposure(everywhere, Some(&token), false).is_ok());
        assert!(check_admin_exposure(everywhere, None, true).is_ok());
        assert!(admin_request_needs_token(false, "/raft/elect"));
        assert!(admin_request_needs_token(true, "/acl"));
        assert!(!admin_request_needs_token(true, "/raft"));
    }
}
