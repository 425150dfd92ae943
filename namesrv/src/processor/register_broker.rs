//! REGISTER_BROKER: a broker member announces itself, its topics and (RaftMQ) its Raft claim.

use std::time::Duration;

use raftmq_protocol::RemotingCommand;
use raftmq_protocol::body::KvTable;
use raftmq_protocol::code::response;
use raftmq_protocol::header::{RegisterBrokerRequestHeader, RegisterBrokerResponseHeader};
use raftmq_protocol::message::body_crc;
use raftmq_protocol::route::{DataVersion, RegisterBrokerBody};
use raftmq_remoting::ConnectionInfo;
use tokio::time::Instant;
use tracing::{debug, info, instrument, warn};

use super::{Outcome, ProcessError};
use crate::kv_config::ORDER_TOPIC_CONFIG_NAMESPACE;
use crate::route_table::Registration;
use crate::state::NameServerState;

#[instrument(skip_all, fields(broker_name, broker_addr, connection = %connection.id))]
pub(super) fn process(
    state: &NameServerState,
    connection: &ConnectionInfo,
    request: &RemotingCommand,
) -> Outcome {
    let header: RegisterBrokerRequestHeader = request.decode_header()?;
    let span = tracing::Span::current();
    span.record("broker_name", header.broker_name.as_str());
    span.record("broker_addr", header.broker_addr.as_str());

    let raft_fields = [
        header.raft_node_id.is_some(),
        header.raft_term.is_some(),
        header.raft_leader.is_some(),
    ];
    if raft_fields.contains(&true) && raft_fields.contains(&false) {
        return Err(ProcessError::Invalid(
            "raftNodeId, raftTerm and raftLeader must be sent together".to_owned(),
        ));
    }
    if header.compressed == Some(true) {
        return Err(ProcessError::Invalid(
            "compressed registration bodies are not supported; register uncompressed (compressedRegister=false)"
                .to_owned(),
        ));
    }
    if let Some(expected) = header.body_crc32.filter(|crc| *crc != 0) {
        let actual = body_crc(&request.body);
        if i64::from(actual) != i64::from(expected) {
            return Err(ProcessError::Invalid(format!(
                "body CRC32 {actual} does not match bodyCrc32 {expected}"
            )));
        }
    }
    let broker_id = u64::try_from(header.broker_id)
        .map_err(|_| ProcessError::Invalid(format!("brokerId {} is negative", header.broker_id)))?;
    let (topics, data_version) = if request.body.is_empty() {
        (None, DataVersion::default())
    } else {
        let body = RegisterBrokerBody::decode(&request.body)?;
        let wrapper = body.topic_config_serialize_wrapper;
        (Some(wrapper.topic_config_table), wrapper.data_version)
    };
    let topic_count = topics.as_ref().map_or(0, |topics| topics.len());
    let claim = header.raft_claim();
    let registration = Registration {
        cluster: header.cluster_name,
        broker_name: header.broker_name.clone(),
        broker_addr: header.broker_addr.clone(),
        ha_server_addr: header.ha_server_addr,
        broker_id,
        raft: claim,
        topics,
        data_version,
        timeout: header
            .heartbeat_timeout_millis
            .and_then(|millis| u64::try_from(millis).ok())
            .map(Duration::from_millis),
        connection: Some(connection.id.0),
    };
    let registered = state.routes().register(registration, Instant::now())?;
    state.metrics.registration(registered.fenced);

    let remark = if registered.fenced {
        warn!(?claim, master = ?registered.master_addr, "stale leadership claim fenced: a higher term holds slot 0");
        Some("leadership claim fenced: a higher term holds slot 0".to_owned())
    } else {
        None
    };
    if registered.master_changed {
        info!(master = ?registered.master_addr, ?claim, "slot 0 changed");
    }
    debug!(
        listed_as = registered.broker_id,
        topics = topic_count,
        "broker registered"
    );

    let order_topics = state
        .kv()
        .namespace(ORDER_TOPIC_CONFIG_NAMESPACE)
        .cloned()
        .unwrap_or_default();
    let mut answer = request.new_response(response::SUCCESS, remark).with_header(
        &RegisterBrokerResponseHeader {
            ha_server_addr: registered.master_ha_addr,
            master_addr: registered.master_addr,
        },
    );
    if !order_topics.is_empty() {
        answer.body = KvTable {
            table: order_topics,
        }
        .encode()?
        .into();
    }
    Ok(answer)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use raftmq_protocol::code::request;
    use raftmq_protocol::header::ExtHeader;
    use raftmq_protocol::route::{TopicConfig, TopicConfigSerializeWrapper};

    use super::*;
    use crate::processor::test_support::connection_info;

    fn header(node_id: u64, term: u64, leader: bool) -> RegisterBrokerRequestHeader {
        RegisterBrokerRequestHeader {
            broker_name: "broker-a".into(),
            broker_addr: format!("127.0.0.1:{}", 10_900 + node_id),
            cluster_name: "DefaultCluster".into(),
            ha_server_addr: String::new(),
            broker_id: if leader {
                0
            } else {
                i64::try_from(node_id).unwrap()
            },
            raft_node_id: Some(node_id),
            raft_term: Some(term),
            raft_leader: Some(leader),
            ..RegisterBrokerRequestHeader::default()
        }
    }

    fn body() -> Vec<u8> {
        RegisterBrokerBody {
            topic_config_serialize_wrapper: TopicConfigSerializeWrapper {
                topic_config_table: BTreeMap::from([(
                    "TopicA".to_owned(),
                    TopicConfig::new("TopicA", 4),
                )]),
                data_version: DataVersion::default(),
            },
            filter_server_list: vec![],
        }
        .encode()
        .unwrap()
    }

    #[tokio::test]
    async fn registers_and_fences() {
        let state = NameServerState::new();
        let connection = connection_info().await;
        let leader = RemotingCommand::new_request(request::REGISTER_BROKER)
            .with_header(&header(1, 5, true))
            .with_body(body());
        let answer = process(&state, &connection, &leader).unwrap();
        assert_eq!(answer.code, response::SUCCESS);
        let answer_header: RegisterBrokerResponseHeader = answer.decode_header().unwrap();
        assert_eq!(
            answer_header.master_addr.as_deref(),
            Some("127.0.0.1:10901")
        );
        assert!(state.routes().topic_route("TopicA").is_some());

        let stale =
            RemotingCommand::new_request(request::REGISTER_BROKER).with_header(&header(2, 4, true));
        let answer = process(&state, &connection, &stale).unwrap();
        assert_eq!(answer.code, response::SUCCESS);
        assert!(answer.remark.unwrap().contains("fenced"));
        let group = state.routes().member_group("broker-a").unwrap();
        assert_eq!(group.broker_addrs[&0], "127.0.0.1:10901");
        assert_eq!(group.broker_addrs[&2], "127.0.0.1:10902");
    }

    #[tokio::test]
    async fn refuses_bad_registrations_with_a_reason() {
        let state = NameServerState::new();
        let connection = connection_info().await;
        let mut partial = header(1, 5, true);
        partial.raft_term = None;
        let mut crc = header(1, 5, true);
        crc.body_crc32 = Some(12345);
        let mut compressed = header(1, 5, true);
        compressed.compressed = Some(true);
        for (header, body, reason) in [
            (partial, body(), "must be sent together"),
            (crc, body(), "CRC32"),
            (compressed, body(), "compressed"),
            (header(0, 5, true), body(), "reserved"),
            (header(1, 5, true), b"{not json".to_vec(), "malformed JSON"),
        ] {
            let request = RemotingCommand::new_request(request::REGISTER_BROKER)
                .with_header(&header)
                .with_body(body);
            let error = process(&state, &connection, &request).unwrap_err();
            assert!(error.to_string().contains(reason), "{error} lacks {reason}");
        }
        let mut fields = header(1, 5, true).to_ext_fields();
        fields.remove("brokerAddr");
        let mut missing = RemotingCommand::new_request(request::REGISTER_BROKER);
        missing.ext_fields = fields;
        let error = process(&state, &connection, &missing).unwrap_err();
        assert!(error.to_string().contains("brokerAddr"), "{error}");
        assert_eq!(state.routes().counts(), (0, 0, 0));
    }

    #[tokio::test]
    async fn a_correct_body_crc_is_accepted() {
        let state = NameServerState::new();
        let connection = connection_info().await;
        let mut with_crc = header(1, 5, true);
        with_crc.body_crc32 = Some(i32::try_from(body_crc(&body())).unwrap());
        let request = RemotingCommand::new_request(request::REGISTER_BROKER)
            .with_header(&with_crc)
            .with_body(body());
        assert_eq!(
            process(&state, &connection, &request).unwrap().code,
            response::SUCCESS
        );
    }
}
