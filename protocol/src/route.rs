//! Route and registration bodies (JSON, Java field names): `TopicRouteData`, `ClusterInfo`,
//! `TopicList`, `RegisterBrokerBody` with its topic configs.
//!
//! Java's fastjson writes maps with numeric keys unquoted (`{"brokerAddrs":{0:"host:port"}}`),
//! which is not JSON. Decoding accepts both that and standard JSON; encoding writes standard
//! JSON (`{"0":"host:port"}`), which `rocketmq-client-rust` 1.0.0 and Java clients read.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::error::WireError;

/// The brokerId of a group's master slot; in RaftMQ, the group's leader.
pub const MASTER_ID: u64 = 0;

/// Permission bits of a topic or queue (Java's `PermName`).
pub mod perm {
    pub const PRIORITY: u32 = 0x1 << 3;
    pub const READ: u32 = 0x1 << 2;
    pub const WRITE: u32 = 0x1 << 1;
    pub const INHERIT: u32 = 0x1;
    pub const READ_WRITE: u32 = READ | WRITE;
}

/// A broker group's queues of one topic.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct QueueData {
    pub broker_name: String,
    pub read_queue_nums: u32,
    pub write_queue_nums: u32,
    pub perm: u32,
    pub topic_sys_flag: u32,
}

/// A broker group and its members' addresses by brokerId (0 = master/leader).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct BrokerData {
    pub cluster: String,
    pub broker_name: String,
    pub broker_addrs: BTreeMap<u64, String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub zone_name: Option<String>,
    /// Always written: `rocketmq-client-rust` 1.0.0 requires the field.
    pub enable_acting_master: bool,
}

/// The answer to GET_ROUTEINFO_BY_TOPIC. `queueDatas`, `brokerDatas` and
/// `filterServerTable` are always written (the Rust client requires them).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct TopicRouteData {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub order_topic_conf: Option<String>,
    pub queue_datas: Vec<QueueData>,
    pub broker_datas: Vec<BrokerData>,
    pub filter_server_table: BTreeMap<String, Vec<String>>,
}

/// The answer to GET_BROKER_CLUSTER_INFO.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ClusterInfo {
    pub broker_addr_table: BTreeMap<String, BrokerData>,
    pub cluster_addr_table: BTreeMap<String, BTreeSet<String>>,
}

/// The answer to GET_ALL_TOPIC_LIST_FROM_NAMESERVER and GET_TOPICS_BY_CLUSTER.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct TopicList {
    pub topic_list: BTreeSet<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub broker_addr: Option<String>,
}

fn default_topic_filter_type() -> String {
    "SINGLE_TAG".to_owned()
}

/// A topic's configuration as a broker holds it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct TopicConfig {
    pub topic_name: String,
    pub read_queue_nums: u32,
    pub write_queue_nums: u32,
    pub perm: u32,
    /// "SINGLE_TAG" or "MULTI_TAG".
    pub topic_filter_type: String,
    pub topic_sys_flag: u32,
    pub order: bool,
    pub attributes: BTreeMap<String, String>,
}

impl Default for TopicConfig {
    fn default() -> Self {
        TopicConfig {
            topic_name: String::new(),
            read_queue_nums: 16,
            write_queue_nums: 16,
            perm: perm::READ_WRITE,
            topic_filter_type: default_topic_filter_type(),
            topic_sys_flag: 0,
            order: false,
            attributes: BTreeMap::new(),
        }
    }
}

impl TopicConfig {
    /// A read-write topic with `queues` read and write queues.
    pub fn new(topic_name: impl Into<String>, queues: u32) -> Self {
        TopicConfig {
            topic_name: topic_name.into(),
            read_queue_nums: queues,
            write_queue_nums: queues,
            ..TopicConfig::default()
        }
    }
}

/// A broker's version of its metadata (Java's `DataVersion`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct DataVersion {
    pub state_version: i64,
    pub timestamp: i64,
    pub counter: i64,
}

/// A broker's topic configs, as sent in a registration. Java's static-topic mapping fields
/// are ignored when decoding.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct TopicConfigSerializeWrapper {
    pub topic_config_table: BTreeMap<String, TopicConfig>,
    pub data_version: DataVersion,
}

/// The body of REGISTER_BROKER (uncompressed form).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct RegisterBrokerBody {
    pub topic_config_serialize_wrapper: TopicConfigSerializeWrapper,
    pub filter_server_list: Vec<String>,
}

/// The members of one broker group (GET_BROKER_MEMBER_GROUP).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct BrokerMemberGroup {
    pub cluster: String,
    pub broker_name: String,
    pub broker_addrs: BTreeMap<u64, String>,
}

/// The answer to GET_BROKER_MEMBER_GROUP.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct GetBrokerMemberGroupResponseBody {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub broker_member_group: Option<BrokerMemberGroup>,
}

/// Decodes a JSON body, accepting fastjson's unquoted numeric map keys.
pub fn decode_json<T: DeserializeOwned>(what: &'static str, bytes: &[u8]) -> Result<T, WireError> {
    match serde_json::from_slice(bytes) {
        Ok(value) => Ok(value),
        Err(first_error) => {
            let Ok(text) = std::str::from_utf8(bytes) else {
                return Err(WireError::json(what, first_error));
            };
            match quote_numeric_keys(text) {
                Cow::Borrowed(_) => Err(WireError::json(what, first_error)),
                Cow::Owned(fixed) => {
                    serde_json::from_str(&fixed).map_err(|source| WireError::json(what, source))
                }
            }
        }
    }
}

/// Encodes a body as standard JSON.
pub fn encode_json<T: Serialize>(what: &'static str, value: &T) -> Result<Vec<u8>, WireError> {
    serde_json::to_vec(value).map_err(|source| WireError::json(what, source))
}

json_body! {
    TopicRouteData => "topic route data",
    ClusterInfo => "cluster info",
    TopicList => "topic list",
    RegisterBrokerBody => "register broker body",
    TopicConfig => "topic config",
    DataVersion => "data version",
    GetBrokerMemberGroupResponseBody => "broker member group",
}

/// Quotes object keys that are bare integers (`{0:"a",-1:2}` becomes `{"0":"a","-1":2}`),
/// leaving string contents alone. Returns the input unchanged when there is nothing to fix.
fn quote_numeric_keys(input: &str) -> Cow<'_, str> {
    let bytes = input.as_bytes();
    let mut out: Option<String> = None;
    let mut copied = 0;
    let mut index = 0;
    let mut in_string = false;
    let mut escaped = false;
    while index < bytes.len() {
        let byte = bytes[index];
        if in_string {
            if escaped {
                escaped = false;
            } else if byte == b'\\' {
                escaped = true;
            } else if byte == b'"' {
                in_string = false;
            }
            index += 1;
            continue;
        }
        match byte {
            b'"' => in_string = true,
            b'{' | b',' => {
                let mut start = index + 1;
                while bytes.get(start).is_some_and(u8::is_ascii_whitespace) {
                    start += 1;
                }
                let mut end = start;
                if bytes.get(end) == Some(&b'-') {
                    end += 1;
                }
                let digits_start = end;
                while bytes.get(end).is_some_and(u8::is_ascii_digit) {
                    end += 1;
                }
                let mut colon = end;
                while bytes.get(colon).is_some_and(u8::is_ascii_whitespace) {
                    colon += 1;
                }
                if end > digits_start && bytes.get(colon) == Some(&b':') {
                    let fixed = out.get_or_insert_with(|| String::with_capacity(input.len() + 16));
                    fixed.push_str(&input[copied..start]);
                    fixed.push('"');
                    fixed.push_str(&input[start..end]);
                    fixed.push('"');
                    copied = end;
                    index = end;
                    continue;
                }
            }
            _ => {}
        }
        index += 1;
    }
    match out {
        Some(mut fixed) => {
            fixed.push_str(&input[copied..]);
            Cow::Owned(fixed)
        }
        None => Cow::Borrowed(input),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route() -> TopicRouteData {
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
                    (0, "127.0.0.1:10911".to_owned()),
                    (2, "127.0.0.1:10921".to_owned()),
                ]),
                zone_name: None,
                enable_acting_master: false,
            }],
            filter_server_table: BTreeMap::new(),
        }
    }

    #[test]
    fn encodes_the_shape_the_rust_client_reads() {
        let json = String::from_utf8(route().encode().unwrap()).unwrap();
        assert_eq!(
            json,
            r#"{"queueDatas":[{"brokerName":"broker-a","readQueueNums":4,"writeQueueNums":4,"perm":6,"topicSysFlag":0}],"brokerDatas":[{"cluster":"DefaultCluster","brokerName":"broker-a","brokerAddrs":{"0":"127.0.0.1:10911","2":"127.0.0.1:10921"},"enableActingMaster":false}],"filterServerTable":{}}"#
        );
        assert_eq!(TopicRouteData::decode(json.as_bytes()).unwrap(), route());
    }

    #[test]
    fn decodes_java_fastjson_unquoted_keys() {
        let java = br#"{"brokerDatas":[{"brokerAddrs":{0:"127.0.0.1:10911", 2 :"127.0.0.1:10921"},"brokerName":"broker-a","cluster":"DefaultCluster","enableActingMaster":false}],"filterServerTable":{},"queueDatas":[{"brokerName":"broker-a","perm":6,"readQueueNums":4,"topicSysFlag":0,"writeQueueNums":4}]}"#;
        assert_eq!(TopicRouteData::decode(java).unwrap(), route());
    }

    #[test]
    fn key_quoting_leaves_strings_and_values_alone() {
        assert_eq!(
            quote_numeric_keys(r#"{"a":"{1:2}","b":[1,-2],"c":3}"#),
            Cow::Borrowed(r#"{"a":"{1:2}","b":[1,-2],"c":3}"#)
        );
        assert_eq!(
            quote_numeric_keys(r#"{ -1 :{7:"x\",8:"}}"#),
            Cow::<str>::Owned(r#"{ "-1" :{"7":"x\",8:"}}"#.to_owned())
        );
        assert!(TopicRouteData::decode(b"{not json").is_err());
    }

    #[test]
    fn bodies_round_trip() {
        let cluster = ClusterInfo {
            broker_addr_table: BTreeMap::from([(
                "broker-a".to_owned(),
                route().broker_datas[0].clone(),
            )]),
            cluster_addr_table: BTreeMap::from([(
                "DefaultCluster".to_owned(),
                BTreeSet::from(["broker-a".to_owned()]),
            )]),
        };
        assert_eq!(
            ClusterInfo::decode(&cluster.encode().unwrap()).unwrap(),
            cluster
        );

        let topics = TopicList {
            topic_list: BTreeSet::from(["A".to_owned(), "B".to_owned()]),
            broker_addr: None,
        };
        let json = String::from_utf8(topics.encode().unwrap()).unwrap();
        assert_eq!(json, r#"{"topicList":["A","B"]}"#);
        assert_eq!(TopicList::decode(json.as_bytes()).unwrap(), topics);

        let body = RegisterBrokerBody {
            topic_config_serialize_wrapper: TopicConfigSerializeWrapper {
                topic_config_table: BTreeMap::from([
                    ("TBW102".to_owned(), TopicConfig::new("TBW102", 8)),
                    ("T".to_owned(), TopicConfig::new("T", 4)),
                ]),
                data_version: DataVersion {
                    state_version: 0,
                    timestamp: 1,
                    counter: 2,
                },
            },
            filter_server_list: vec![],
        };
        assert_eq!(
            RegisterBrokerBody::decode(&body.encode().unwrap()).unwrap(),
            body
        );

        let members = GetBrokerMemberGroupResponseBody {
            broker_member_group: Some(BrokerMemberGroup {
                cluster: "c".into(),
                broker_name: "b".into(),
                broker_addrs: BTreeMap::from([(0, "a:1".to_owned())]),
            }),
        };
        let json = String::from_utf8(members.encode().unwrap()).unwrap();
        assert_eq!(
            json,
            r#"{"brokerMemberGroup":{"cluster":"c","brokerName":"b","brokerAddrs":{"0":"a:1"}}}"#
        );
        assert_eq!(
            GetBrokerMemberGroupResponseBody::decode(json.as_bytes()).unwrap(),
            members
        );
    }

    #[test]
    fn decodes_a_java_registration_with_extra_fields() {
        let java = br#"{"filterServerList":[],"topicConfigSerializeWrapper":{"dataVersion":{"counter":3,"stateVersion":0,"timestamp":1700000000000},"mappingDataVersion":{"counter":0,"stateVersion":0,"timestamp":1},"topicConfigTable":{"TBW102":{"attributes":{},"order":false,"perm":7,"readQueueNums":8,"topicFilterType":"SINGLE_TAG","topicName":"TBW102","topicSysFlag":0,"writeQueueNums":8}},"topicQueueMappingDetailMap":{},"topicQueueMappingInfoMap":{}}}"#;
        let body = RegisterBrokerBody::decode(java).unwrap();
        let table = &body.topic_config_serialize_wrapper.topic_config_table;
        assert_eq!(table["TBW102"].perm, 7);
        assert_eq!(table["TBW102"].read_queue_nums, 8);
        assert_eq!(body.topic_config_serialize_wrapper.data_version.counter, 3);
    }
}
