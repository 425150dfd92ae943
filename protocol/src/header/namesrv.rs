//! NameServer requests: REGISTER_BROKER (with RaftMQ's leadership fields), UNREGISTER_BROKER,
//! GET_ROUTEINFO_BY_TOPIC, DELETE_TOPIC_IN_NAMESRV, GET_TOPICS_BY_CLUSTER, QUERY_DATA_VERSION,
//! BROKER_HEARTBEAT, GET_BROKER_MEMBER_GROUP and the KV config.

ext_header! {
    /// REGISTER_BROKER; the body is `route::RegisterBrokerBody` (JSON unless `compressed`).
    ///
    /// RaftMQ members add `raftNodeId`, `raftTerm` and `raftLeader`: the NameServer puts the
    /// leader with the highest term in slot 0 (brokerId 0) and followers at their node ids,
    /// ignoring `brokerId`. A plain RocketMQ broker sends none of them and is listed by its
    /// `brokerId`.
    pub struct RegisterBrokerRequestHeader {
        required broker_name: String => "brokerName",
        required broker_addr: String => "brokerAddr",
        required cluster_name: String => "clusterName",
        required ha_server_addr: String => "haServerAddr",
        required broker_id: i64 => "brokerId",
        optional heartbeat_timeout_millis: i64 => "heartbeatTimeoutMillis",
        optional enable_acting_master: bool => "enableActingMaster",
        optional compressed: bool => "compressed",
        optional body_crc32: i32 => "bodyCrc32",
        /// RaftMQ: the member's Raft node id (>= 1; 0 is the leader slot).
        optional raft_node_id: u64 => "raftNodeId",
        /// RaftMQ: the member's current Raft term.
        optional raft_term: u64 => "raftTerm",
        /// RaftMQ: whether the member leads its group in `raft_term`.
        optional raft_leader: bool => "raftLeader",
    }
}

impl RegisterBrokerRequestHeader {
    /// The Raft claim carried by this registration, if it is a RaftMQ member: all three
    /// fields must be present.
    pub fn raft_claim(&self) -> Option<RaftClaim> {
        Some(RaftClaim {
            node_id: self.raft_node_id?,
            term: self.raft_term?,
            leader: self.raft_leader?,
        })
    }
}

/// What a RaftMQ member says about itself when it registers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RaftClaim {
    pub node_id: u64,
    pub term: u64,
    pub leader: bool,
}

ext_header! {
    pub struct RegisterBrokerResponseHeader {
        optional ha_server_addr: String => "haServerAddr",
        optional master_addr: String => "masterAddr",
    }
}

ext_header! {
    pub struct UnregisterBrokerRequestHeader {
        required broker_name: String => "brokerName",
        required broker_addr: String => "brokerAddr",
        required cluster_name: String => "clusterName",
        required broker_id: i64 => "brokerId",
    }
}

ext_header! {
    /// GET_ROUTEINFO_BY_TOPIC; the answer's body is `route::TopicRouteData`.
    pub struct GetRouteInfoRequestHeader {
        required topic: String => "topic",
        optional accept_standard_json_only: bool => "acceptStandardJsonOnly",
    }
}

ext_header! {
    pub struct DeleteTopicFromNamesrvRequestHeader {
        required topic: String => "topic",
        optional cluster_name: String => "clusterName",
    }
}

ext_header! {
    pub struct GetTopicsByClusterRequestHeader {
        required cluster: String => "cluster",
    }
}

ext_header! {
    pub struct PutKvConfigRequestHeader {
        required namespace: String => "namespace",
        required key: String => "key",
        required value: String => "value",
    }
}

ext_header! {
    /// GET_KV_CONFIG and DELETE_KV_CONFIG.
    pub struct KvConfigKeyRequestHeader {
        required namespace: String => "namespace",
        required key: String => "key",
    }
}

ext_header! {
    pub struct GetKvConfigResponseHeader {
        optional value: String => "value",
    }
}

ext_header! {
    /// GET_KVLIST_BY_NAMESPACE; the answer's body is `body::KvTable`.
    pub struct GetKvListByNamespaceRequestHeader {
        required namespace: String => "namespace",
    }
}

ext_header! {
    /// QUERY_DATA_VERSION: a broker asks whether the NameServer's copy of its topic configs is
    /// current (body: its `route::DataVersion`); the answer says `changed` and carries the
    /// NameServer's copy. Also refreshes the broker's liveness.
    pub struct QueryDataVersionRequestHeader {
        required broker_name: String => "brokerName",
        required broker_addr: String => "brokerAddr",
        required cluster_name: String => "clusterName",
        required broker_id: i64 => "brokerId",
    }
}

ext_header! {
    pub struct QueryDataVersionResponseHeader {
        required changed: bool => "changed",
    }
}

ext_header! {
    /// BROKER_HEARTBEAT: a light liveness refresh between registrations (RocketMQ 5).
    pub struct BrokerHeartbeatRequestHeader {
        required cluster_name: String => "clusterName",
        required broker_addr: String => "brokerAddr",
        required broker_name: String => "brokerName",
        optional broker_id: i64 => "brokerId",
    }
}

ext_header! {
    /// GET_BROKER_MEMBER_GROUP; the answer's body is `route::GetBrokerMemberGroupResponseBody`.
    pub struct GetBrokerMemberGroupRequestHeader {
        required cluster_name: String => "clusterName",
        required broker_name: String => "brokerName",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::header::ExtHeader;
    use crate::header::test_support::assert_round_trip;

    fn register() -> RegisterBrokerRequestHeader {
        RegisterBrokerRequestHeader {
            broker_name: "broker-a".into(),
            broker_addr: "127.0.0.1:10911".into(),
            cluster_name: "DefaultCluster".into(),
            ha_server_addr: "127.0.0.1:10912".into(),
            broker_id: 0,
            heartbeat_timeout_millis: Some(120_000),
            enable_acting_master: Some(false),
            compressed: Some(false),
            body_crc32: Some(0),
            raft_node_id: Some(2),
            raft_term: Some(5),
            raft_leader: Some(true),
        }
    }

    #[test]
    fn round_trips() {
        assert_round_trip(
            &register(),
            &[
                "brokerName",
                "brokerAddr",
                "clusterName",
                "haServerAddr",
                "brokerId",
            ],
        );
        assert_round_trip(
            &RegisterBrokerResponseHeader {
                ha_server_addr: Some("h".into()),
                master_addr: None,
            },
            &[],
        );
        assert_round_trip(
            &UnregisterBrokerRequestHeader {
                broker_name: "b".into(),
                broker_addr: "a".into(),
                cluster_name: "c".into(),
                broker_id: 1,
            },
            &["brokerName", "brokerAddr", "clusterName", "brokerId"],
        );
        assert_round_trip(
            &GetRouteInfoRequestHeader {
                topic: "T".into(),
                accept_standard_json_only: Some(true),
            },
            &["topic"],
        );
        assert_round_trip(
            &DeleteTopicFromNamesrvRequestHeader {
                topic: "T".into(),
                cluster_name: Some("c".into()),
            },
            &["topic"],
        );
        assert_round_trip(
            &GetTopicsByClusterRequestHeader {
                cluster: "c".into(),
            },
            &["cluster"],
        );
        assert_round_trip(
            &PutKvConfigRequestHeader {
                namespace: "ORDER_TOPIC_CONFIG".into(),
                key: "T".into(),
                value: "broker-a:4".into(),
            },
            &["namespace", "key", "value"],
        );
        assert_round_trip(
            &KvConfigKeyRequestHeader {
                namespace: "n".into(),
                key: "k".into(),
            },
            &["namespace", "key"],
        );
        assert_round_trip(
            &GetKvConfigResponseHeader {
                value: Some("v".into()),
            },
            &[],
        );
        assert_round_trip(
            &QueryDataVersionRequestHeader {
                broker_name: "b".into(),
                broker_addr: "a".into(),
                cluster_name: "c".into(),
                broker_id: 0,
            },
            &["brokerName", "brokerAddr", "clusterName", "brokerId"],
        );
        assert_round_trip(
            &QueryDataVersionResponseHeader { changed: true },
            &["changed"],
        );
        assert_round_trip(
            &BrokerHeartbeatRequestHeader {
                cluster_name: "c".into(),
                broker_addr: "a".into(),
                broker_name: "b".into(),
                broker_id: Some(1),
            },
            &["clusterName", "brokerAddr", "brokerName"],
        );
        assert_round_trip(
            &GetBrokerMemberGroupRequestHeader {
                cluster_name: "c".into(),
                broker_name: "b".into(),
            },
            &["clusterName", "brokerName"],
        );
        assert_round_trip(
            &GetKvListByNamespaceRequestHeader {
                namespace: "n".into(),
            },
            &["namespace"],
        );
    }

    #[test]
    fn raft_fields_are_optional_and_named() {
        let fields = register().to_ext_fields();
        assert_eq!(fields["raftNodeId"], "2");
        assert_eq!(fields["raftTerm"], "5");
        assert_eq!(fields["raftLeader"], "true");
        assert_eq!(
            register().raft_claim(),
            Some(RaftClaim {
                node_id: 2,
                term: 5,
                leader: true
            })
        );

        let mut plain = fields.clone();
        plain.remove("raftNodeId");
        plain.remove("raftTerm");
        plain.remove("raftLeader");
        let header = RegisterBrokerRequestHeader::from_ext_fields(&plain).unwrap();
        assert_eq!(header.raft_claim(), None);
        assert_eq!(header.broker_id, 0);

        let mut bad = fields;
        bad.insert("raftTerm".into(), "-1".into());
        assert!(matches!(
            RegisterBrokerRequestHeader::from_ext_fields(&bad),
            Err(crate::WireError::InvalidField {
                field: "raftTerm",
                ..
            })
        ));
    }
}
