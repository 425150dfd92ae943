//! JSON bodies of client requests: HEART_BEAT's `HeartbeatData`, the consumer list, queue
//! locks and the KV table. Every field has a default so that a client leaving one out still
//! decodes; encoding writes every field.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

/// The body of HEART_BEAT: who the client is and which groups and subscriptions it has.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct HeartbeatData {
    #[serde(rename = "clientID")]
    pub client_id: String,
    pub producer_data_set: Vec<ProducerData>,
    pub consumer_data_set: Vec<ConsumerData>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ProducerData {
    pub group_name: String,
}

/// One consumer group of a client. Enum-like fields stay strings so that values this crate
/// does not know still decode: consumeType `CONSUME_ACTIVELY` (pull) / `CONSUME_PASSIVELY`
/// (push) / `CONSUME_POP`; messageModel `CLUSTERING` / `BROADCASTING`; consumeFromWhere
/// `CONSUME_FROM_LAST_OFFSET` / `CONSUME_FROM_FIRST_OFFSET` / `CONSUME_FROM_TIMESTAMP`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ConsumerData {
    pub group_name: String,
    pub consume_type: String,
    pub message_model: String,
    pub consume_from_where: String,
    pub subscription_data_set: Vec<SubscriptionData>,
    pub unit_mode: bool,
}

/// A subscription: a topic and a tag expression (`*`, or `a || b` with `tags_set`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct SubscriptionData {
    pub class_filter_mode: bool,
    pub topic: String,
    pub sub_string: String,
    pub tags_set: BTreeSet<String>,
    /// Java `String.hashCode()` of each tag.
    pub code_set: BTreeSet<i32>,
    pub sub_version: i64,
    /// "TAG" or "SQL92".
    pub expression_type: String,
}

/// The body of CHECK_CLIENT_CONFIG: a consumer asks whether the broker can serve a
/// subscription (an SQL92 filter that does not parse is refused here, before it consumes).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct CheckClientRequestBody {
    pub client_id: String,
    pub group: String,
    pub subscription_data: SubscriptionData,
}

/// The answer to GET_CONSUMER_LIST_BY_GROUP: the client ids of a group's live consumers.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ConsumerListBody {
    pub consumer_id_list: Vec<String>,
}

/// A message queue: a topic's queue on one broker group.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct MessageQueue {
    pub topic: String,
    pub broker_name: String,
    pub queue_id: i32,
}

/// The body of LOCK_BATCH_MQ and UNLOCK_BATCH_MQ (ordered consumption).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct LockBatchRequestBody {
    pub consumer_group: String,
    pub client_id: String,
    pub only_this_broker: bool,
    pub mq_set: BTreeSet<MessageQueue>,
}

/// The answer to LOCK_BATCH_MQ: the queues now locked by the requester.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockBatchResponseBody {
    #[serde(rename = "lockOKMQSet", default)]
    pub lock_ok_mq_set: BTreeSet<MessageQueue>,
}

/// The answer to GET_KVLIST_BY_NAMESPACE.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct KvTable {
    pub table: BTreeMap<String, String>,
}

json_body! {
    HeartbeatData => "heartbeat data",
    ConsumerListBody => "consumer list",
    LockBatchRequestBody => "lock batch request",
    LockBatchResponseBody => "lock batch response",
    KvTable => "KV table",
    CheckClientRequestBody => "check client request",
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_the_rust_clients_heartbeat() {
        // The shape rocketmq-client-rust 1.0.0 sends (field set and spelling).
        let json = br#"{"clientID":"10.0.0.1@4242#123","producerDataSet":[{"groupName":"pg"}],"consumerDataSet":[{"groupName":"cg","consumeType":"CONSUME_PASSIVELY","messageModel":"CLUSTERING","consumeFromWhere":"CONSUME_FROM_FIRST_OFFSET","subscriptionDataSet":[{"classFilterMode":false,"topic":"T","subString":"*","tagsSet":[],"codeSet":[],"subVersion":1700000000000,"expressionType":"TAG"}],"unitMode":false}],"heartbeatFingerprint":0,"withoutSub":false}"#;
        let data = HeartbeatData::decode(json).unwrap();
        assert_eq!(data.client_id, "10.0.0.1@4242#123");
        assert_eq!(data.producer_data_set[0].group_name, "pg");
        let consumer = &data.consumer_data_set[0];
        assert_eq!(consumer.consume_from_where, "CONSUME_FROM_FIRST_OFFSET");
        assert_eq!(consumer.subscription_data_set[0].topic, "T");
        assert_eq!(
            HeartbeatData::decode(&data.encode().unwrap()).unwrap(),
            data
        );
        assert_eq!(
            HeartbeatData::decode(br#"{"clientID":"x"}"#)
                .unwrap()
                .client_id,
            "x"
        );
    }

    #[test]
    fn bodies_round_trip() {
        let queue = MessageQueue {
            topic: "T".into(),
            broker_name: "broker-a".into(),
            queue_id: 1,
        };
        let lock = LockBatchRequestBody {
            consumer_group: "cg".into(),
            client_id: "c".into(),
            only_this_broker: true,
            mq_set: BTreeSet::from([queue.clone()]),
        };
        assert_eq!(
            LockBatchRequestBody::decode(&lock.encode().unwrap()).unwrap(),
            lock
        );
        let locked = LockBatchResponseBody {
            lock_ok_mq_set: BTreeSet::from([queue]),
        };
        let json = String::from_utf8(locked.encode().unwrap()).unwrap();
        assert!(
            json.starts_with(
                r#"{"lockOKMQSet":[{"topic":"T","brokerName":"broker-a","queueId":1}]"#
            )
        );
        assert_eq!(
            LockBatchResponseBody::decode(json.as_bytes()).unwrap(),
            locked
        );
        let list = ConsumerListBody {
            consumer_id_list: vec!["a".into(), "b".into()],
        };
        assert_eq!(
            String::from_utf8(list.encode().unwrap()).unwrap(),
            r#"{"consumerIdList":["a","b"]}"#
        );
        let kv = KvTable {
            table: BTreeMap::from([("k".to_owned(), "v".to_owned())]),
        };
        assert_eq!(KvTable::decode(&kv.encode().unwrap()).unwrap(), kv);
    }
}

#[cfg(test)]
mod batch_ack_tests {
    use super::*;

    #[test]
    fn a_batch_ack_body_decodes_with_java_names_and_its_bit_set_names_offsets() {
        // Bits 0, 2 and 9: Java's BitSet.toByteArray() is [0b101, 0b10], base64 "BQI=".
        let json = r#"{"brokerName":"broker-a","acks":[{"c":"g","t":"T","r":"0","so":10,"q":1,"rq":0,"pt":5,"it":6,"b":"BQI="}]}"#;
        let body: BatchAckMessageRequestBody = serde_json::from_str(json).unwrap();
        assert_eq!(body.acks[0].consumer_group, "g");
        assert_eq!(body.acks[0].offsets().unwrap(), vec![10, 12, 19]);
        let long =
            r#"{"acks":[{"consumerGroup":"g","topic":"T","startOffset":0,"bitSet":"AQ=="}]}"#;
        let body: BatchAckMessageRequestBody = serde_json::from_str(long).unwrap();
        assert_eq!(body.acks[0].offsets().unwrap(), vec![0]);
        let mut bad = body.acks[0].clone();
        bad.bit_set = "**".into();
        assert!(bad.offsets().is_err());
        bad.bit_set = "AQ==".into();
        bad.start_offset = -1;
        assert!(bad.offsets().is_err());
    }
}

/// The most offsets one BATCH_ACK_MESSAGE may ack (its bit sets are bounded by this too).
pub const MAX_BATCH_ACK_OFFSETS: usize = 4096;

/// The body of BATCH_ACK_MESSAGE (RocketMQ's `BatchAckMessageRequestBody`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct BatchAckMessageRequestBody {
    pub broker_name: String,
    pub acks: Vec<BatchAck>,
}

/// One pop's acks (RocketMQ's `BatchAck`, short JSON names with the long ones accepted): the
/// offsets `start_offset + i` for every bit `i` set in `bit_set`, all popped at `pop_time`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct BatchAck {
    #[serde(rename = "c", alias = "consumerGroup")]
    pub consumer_group: String,
    #[serde(rename = "t", alias = "topic")]
    pub topic: String,
    /// "0" for the topic itself, "1"/"2" for a pop retry topic.
    #[serde(rename = "r", alias = "retry")]
    pub retry: String,
    #[serde(rename = "so", alias = "startOffset")]
    pub start_offset: i64,
    #[serde(rename = "q", alias = "queueId")]
    pub queue_id: i32,
    #[serde(rename = "rq", alias = "reviveQueueId")]
    pub revive_queue_id: i32,
    #[serde(rename = "pt", alias = "popTime")]
    pub pop_time: i64,
    #[serde(rename = "it", alias = "invisibleTime")]
    pub invisible_time: i64,
    /// Java's `BitSet.toByteArray()` in base64 (bit `i` is bit `i % 8` of byte `i / 8`).
    #[serde(rename = "b", alias = "bitSet")]
    pub bit_set: String,
}

impl BatchAck {
    /// The offsets acked, ascending; an error for a bit set that is not base64 or names more
    /// than [`MAX_BATCH_ACK_OFFSETS`] offsets, or offsets past `i64::MAX`.
    pub fn offsets(&self) -> Result<Vec<u64>, crate::WireError> {
        use base64::Engine;
        let invalid = |field: &'static str, value: String, reason: &'static str| {
            crate::WireError::InvalidField {
                field,
                value,
                reason,
            }
        };
        let start = u64::try_from(self.start_offset).map_err(|_| {
            invalid(
                "so",
                self.start_offset.to_string(),
                "a negative start offset",
            )
        })?;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(self.bit_set.as_bytes())
            .map_err(|_| invalid("b", self.bit_set.clone(), "not base64"))?;
        if bytes.len() > MAX_BATCH_ACK_OFFSETS / 8 {
            return Err(invalid(
                "b",
                format!("{} bytes", bytes.len()),
                "names more offsets than one batch ack may",
            ));
        }
        let mut offsets = Vec::new();
        for (index, byte) in bytes.iter().enumerate() {
            for bit in 0..8u64 {
                if byte & (1 << bit) != 0 {
                    let offset = start
                        .checked_add(index as u64 * 8 + bit)
                        .filter(|offset| *offset <= i64::MAX as u64)
                        .ok_or_else(|| invalid("so", start.to_string(), "offsets overflow"))?;
                    offsets.push(offset);
                }
            }
        }
        Ok(offsets)
    }
}
