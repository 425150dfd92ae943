//! One module per command family.

pub mod acl;
pub mod cluster;
pub mod consume;
pub mod group;
pub mod health;
pub mod message;
pub mod offset;
pub mod produce;
pub mod topic;

use serde::Serialize;

use raftmq_client::ReceivedMessage;

/// A message as `mq consume` and `mq message get` print it in `--json`.
#[derive(Serialize, Debug, Clone)]
pub struct MessageJson {
    pub topic: String,
    pub broker_name: String,
    pub queue_id: i32,
    pub queue_offset: i64,
    pub msg_id: String,
    pub offset_msg_id: String,
    pub keys: Vec<String>,
    pub tags: Option<String>,
    /// The body as UTF-8 (invalid bytes replaced).
    pub body: String,
    pub body_len: usize,
    pub born_timestamp_ms: i64,
    pub store_timestamp_ms: i64,
    pub reconsume_times: i32,
    pub properties: std::collections::BTreeMap<String, String>,
}

impl From<&ReceivedMessage> for MessageJson {
    fn from(message: &ReceivedMessage) -> Self {
        MessageJson {
            topic: message.topic.clone(),
            broker_name: message.queue.broker_name.clone(),
            queue_id: message.queue.queue_id,
            queue_offset: message.queue_offset,
            msg_id: message.msg_id.clone(),
            offset_msg_id: message.offset_msg_id.clone(),
            keys: message.keys.clone(),
            tags: message.tags.clone(),
            body: String::from_utf8_lossy(&message.body).into_owned(),
            body_len: message.body.len(),
            born_timestamp_ms: message.born_timestamp,
            store_timestamp_ms: message.store_timestamp,
            reconsume_times: message.reconsume_times,
            properties: message.properties.clone(),
        }
    }
}
