//! Property tests: decoders never panic on arbitrary input, and what we encode decodes back.

use std::collections::BTreeMap;

use bytes::{Bytes, BytesMut};
use proptest::prelude::*;
use raftmq_protocol::body::{ConsumerListBody, HeartbeatData, KvTable, LockBatchRequestBody};
use raftmq_protocol::frame::{self, LanguageCode, RemotingCommand, SerializeType};
use raftmq_protocol::header::*;
use raftmq_protocol::message::{self, BatchMessage, StoredMessage};
use raftmq_protocol::route::{ClusterInfo, RegisterBrokerBody, TopicList, TopicRouteData};

/// Field names the headers know, so arbitrary maps hit the parsers rather than only
/// "missing field".
const KNOWN_FIELDS: &[&str] = &[
    "topic",
    "queueId",
    "consumerGroup",
    "producerGroup",
    "defaultTopic",
    "defaultTopicQueueNums",
    "sysFlag",
    "bornTimestamp",
    "flag",
    "properties",
    "batch",
    "a",
    "b",
    "c",
    "d",
    "e",
    "f",
    "g",
    "h",
    "m",
    "queueOffset",
    "maxMsgNums",
    "commitOffset",
    "suspendTimeoutMillis",
    "subVersion",
    "msgId",
    "offset",
    "brokerName",
    "brokerAddr",
    "clusterName",
    "haServerAddr",
    "brokerId",
    "raftTerm",
    "raftLeader",
    "raftNodeId",
    "clientID",
    "group",
    "delayLevel",
    "timestamp",
    "suggestWhichBrokerId",
    "nextBeginOffset",
    "minOffset",
    "maxOffset",
    "order",
    "perm",
    "readQueueNums",
    "writeQueueNums",
    "topicFilterType",
    "namespace",
    "key",
    "value",
    "cluster",
];

fn field_map() -> impl Strategy<Value = BTreeMap<String, String>> {
    let key = prop_oneof![
        proptest::sample::select(KNOWN_FIELDS).prop_map(str::to_owned),
        ".{0,8}",
    ];
    let value = prop_oneof![
        "-?[0-9]{1,20}",
        Just("true".to_owned()),
        Just("false".to_owned()),
        ".{0,12}",
    ];
    proptest::collection::btree_map(key, value, 0..24)
}

fn parse_all_headers(fields: &BTreeMap<String, String>) {
    let _ = SendMessageRequestHeader::from_ext_fields(fields);
    let _ = SendMessageRequestHeaderV2::from_ext_fields(fields);
    let _ = SendMessageResponseHeader::from_ext_fields(fields);
    let _ = PullMessageRequestHeader::from_ext_fields(fields);
    let _ = PullMessageResponseHeader::from_ext_fields(fields);
    let _ = QueryConsumerOffsetRequestHeader::from_ext_fields(fields);
    let _ = QueryConsumerOffsetResponseHeader::from_ext_fields(fields);
    let _ = UpdateConsumerOffsetRequestHeader::from_ext_fields(fields);
    let _ = GetMaxOffsetRequestHeader::from_ext_fields(fields);
    let _ = GetMinOffsetRequestHeader::from_ext_fields(fields);
    let _ = OffsetResponseHeader::from_ext_fields(fields);
    let _ = SearchOffsetRequestHeader::from_ext_fields(fields);
    let _ = GetEarliestMsgStoretimeRequestHeader::from_ext_fields(fields);
    let _ = UnregisterClientRequestHeader::from_ext_fields(fields);
    let _ = GetConsumerListByGroupRequestHeader::from_ext_fields(fields);
    let _ = ConsumerSendMsgBackRequestHeader::from_ext_fields(fields);
    let _ = ViewMessageRequestHeader::from_ext_fields(fields);
    let _ = RegisterBrokerRequestHeader::from_ext_fields(fields).map(|header| header.raft_claim());
    let _ = UnregisterBrokerRequestHeader::from_ext_fields(fields);
    let _ = GetRouteInfoRequestHeader::from_ext_fields(fields);
    let _ = DeleteTopicFromNamesrvRequestHeader::from_ext_fields(fields);
    let _ = PutKvConfigRequestHeader::from_ext_fields(fields);
    let _ = KvConfigKeyRequestHeader::from_ext_fields(fields);
    let _ = CreateTopicRequestHeader::from_ext_fields(fields);
    let _ = DeleteTopicRequestHeader::from_ext_fields(fields);
}

fn command() -> impl Strategy<Value = RemotingCommand> {
    (
        any::<i16>(),
        0u8..14,
        any::<i16>(),
        any::<i32>(),
        0i32..4,
        proptest::option::of(".{0,16}"),
        proptest::collection::btree_map(".{0,8}", ".{0,8}", 0..6),
        proptest::collection::vec(any::<u8>(), 0..64),
        any::<bool>(),
    )
        .prop_map(
            |(code, language, version, opaque, flag, remark, ext_fields, body, binary)| {
                RemotingCommand {
                    code: i32::from(code),
                    language: LanguageCode::from_code(language),
                    version: i32::from(version),
                    opaque,
                    flag,
                    // An empty remark is "absent" in the binary header.
                    remark: remark.filter(|text| !(binary && text.is_empty())),
                    ext_fields,
                    body: Bytes::from(body),
                    serialize_type: if binary {
                        SerializeType::RocketMq
                    } else {
                        SerializeType::Json
                    },
                }
            },
        )
}

/// The case count: `PROPTEST_CASES` if set (`scripts/fuzz.sh`), else `default`.
fn cases(default: u32) -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases(2_000)))]

    #[test]
    fn frame_decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        let _ = frame::decode(&bytes);
        let _ = frame::decode_from(&mut BytesMut::from(&bytes[..]));
    }

    #[test]
    fn frame_decode_never_panics_past_the_length_prefix(
        binary in any::<bool>(),
        header in proptest::collection::vec(any::<u8>(), 0..128),
        body_len in 0usize..16,
    ) {
        // A well-formed envelope around an arbitrary header reaches the header parsers.
        let mut bytes = Vec::new();
        bytes.extend_from_slice(&((4 + header.len() + body_len) as i32).to_be_bytes());
        let marker = (i32::from(binary) << 24) | header.len() as i32;
        bytes.extend_from_slice(&marker.to_be_bytes());
        bytes.extend_from_slice(&header);
        bytes.extend(std::iter::repeat_n(0u8, body_len));
        let _ = frame::decode(&bytes);
    }

    #[test]
    fn frames_round_trip(command in command()) {
        let mut buf = BytesMut::new();
        frame::encode(&command, &mut buf).unwrap();
        let (decoded, used) = frame::decode(&buf).unwrap().unwrap();
        prop_assert_eq!(used, buf.len());
        prop_assert_eq!(decoded, command);
    }

    #[test]
    fn header_parsers_never_panic(fields in field_map()) {
        parse_all_headers(&fields);
    }

    #[test]
    fn message_decoders_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        let _ = StoredMessage::decode(&bytes);
        let _ = message::decode_stored(&bytes);
        let _ = message::decode_batch(&bytes);
        let _ = message::properties::parse(&String::from_utf8_lossy(&bytes));
        let _ = message::parse_offset_msg_id(&String::from_utf8_lossy(&bytes));
    }

    #[test]
    fn body_decoders_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        let _ = TopicRouteData::decode(&bytes);
        let _ = ClusterInfo::decode(&bytes);
        let _ = TopicList::decode(&bytes);
        let _ = RegisterBrokerBody::decode(&bytes);
        let _ = HeartbeatData::decode(&bytes);
        let _ = ConsumerListBody::decode(&bytes);
        let _ = LockBatchRequestBody::decode(&bytes);
        let _ = KvTable::decode(&bytes);
    }

    #[test]
    fn stored_messages_round_trip(
        queue_id in any::<i32>(),
        queue_offset in any::<i64>(),
        physical_offset in any::<i64>(),
        body in proptest::collection::vec(any::<u8>(), 0..64),
        topic in "[A-Za-z0-9_%-]{1,200}",
        properties in proptest::collection::btree_map("[A-Z_]{1,8}", "[a-z0-9]{0,8}", 0..4),
        v6 in any::<bool>(),
    ) {
        let host: std::net::SocketAddr = if v6 { "[::1]:10911".parse().unwrap() } else { "10.0.0.1:10911".parse().unwrap() };
        let stored = StoredMessage {
            queue_id,
            flag: 0,
            queue_offset,
            physical_offset,
            sys_flag: if v6 { 0x30 } else { 0 },
            born_timestamp: 1,
            born_host: host,
            store_timestamp: 2,
            store_host: host,
            reconsume_times: 0,
            prepared_transaction_offset: 0,
            body: Bytes::from(body.clone()),
            topic,
            properties: properties.clone(),
        };
        let mut buf = BytesMut::new();
        stored.encode(&mut buf).unwrap();
        prop_assert_eq!(message::decode_stored(&buf).unwrap(), vec![stored]);

        let batch = vec![BatchMessage { flag: 3, body: Bytes::from(body), properties }];
        let mut buf = BytesMut::new();
        message::encode_batch(&batch, &mut buf).unwrap();
        prop_assert_eq!(message::decode_batch(&buf).unwrap(), batch);
    }
}
