//! The messages users send ([`Message`]) and receive ([`ReceivedMessage`]), client-side
//! validation, and the client-generated unique id (`UNIQ_KEY`) RocketMQ clients attach.

use std::collections::BTreeMap;
use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::net::{IpAddr, SocketAddr};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use raftmq_protocol::message::{MAX_PROPERTIES_BYTES, StoredMessage, properties, property};
use raftmq_protocol::names::{AUTO_CREATE_TOPIC_KEY_TOPIC, MAX_TOPIC_NAME_BYTES, now_ms};

pub use raftmq_protocol::body::MessageQueue;

use crate::error::ClientError;

/// The largest message body (or encoded batch) a producer sends: RocketMQ's 4 MiB default.
pub const MAX_MESSAGE_BYTES: usize = 4 * 1024 * 1024;

/// Separates the keys in the `KEYS` property.
pub const KEY_SEPARATOR: &str = " ";

/// A message to send.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    pub topic: String,
    pub body: Bytes,
    /// One tag (the `TAGS` property), used by consumers' tag filters.
    pub tags: Option<String>,
    /// Business keys (the `KEYS` property, space-separated), for lookups.
    pub keys: Vec<String>,
    /// The user flag, stored with the message and returned as it is.
    pub flag: i32,
    /// Messages with the same sharding key go to the same queue while the topic's queue count
    /// stays the same (so they keep their relative order).
    pub sharding_key: Option<String>,
    /// Further properties (names and values must not contain `\x01` or `\x02`).
    pub properties: BTreeMap<String, String>,
}

impl Message {
    pub fn new(topic: impl Into<String>, body: impl Into<Bytes>) -> Self {
        Message {
            topic: topic.into(),
            body: body.into(),
            tags: None,
            keys: Vec::new(),
            flag: 0,
            sharding_key: None,
            properties: BTreeMap::new(),
        }
    }

    pub fn with_tags(mut self, tags: impl Into<String>) -> Self {
        self.tags = Some(tags.into());
        self
    }

    pub fn with_keys<I, K>(mut self, keys: I) -> Self
    where
        I: IntoIterator<Item = K>,
        K: Into<String>,
    {
        self.keys = keys.into_iter().map(Into::into).collect();
        self
    }

    pub fn with_flag(mut self, flag: i32) -> Self {
        self.flag = flag;
        self
    }

    /// Routes the message by `key` (hash of the key modulo the queue count).
    pub fn with_sharding_key(mut self, key: impl Into<String>) -> Self {
        self.sharding_key = Some(key.into());
        self
    }

    /// Delivers the message only after delay level `level` (RocketMQ's `setDelayTimeLevel`;
    /// with the broker's default levels 1 = 1 s, 2 = 5 s, 3 = 10 s, ... 18 = 2 h). 0 = no delay.
    pub fn with_delay_level(self, level: u32) -> Self {
        self.with_property(property::DELAY, level.to_string())
    }

    /// Delivers the message at `deliver_at_ms` (ms since the epoch; RocketMQ 5's
    /// `setDeliverTimeMs`, the `TIMER_DELIVER_MS` property), up to the broker's
    /// `timer-max-delay` ahead. A time already past delivers at once.
    pub fn with_deliver_time_ms(self, deliver_at_ms: i64) -> Self {
        self.with_property(property::TIMER_DELIVER_MS, deliver_at_ms.to_string())
    }

    /// Delivers the message `delay` after the broker stores it (the `TIMER_DELAY_MS` property;
    /// RocketMQ 5's timer messages, any delay, not a level).
    pub fn with_delay(self, delay: std::time::Duration) -> Self {
        self.with_property(property::TIMER_DELAY_MS, delay.as_millis().to_string())
    }

    pub fn with_property(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.properties.insert(name.into(), value.into());
        self
    }

    /// The properties as sent: the user's, then `TAGS`, `KEYS`, `WAIT` and `UNIQ_KEY`.
    pub(crate) fn wire_properties(&self, unique_id: &str) -> BTreeMap<String, String> {
        let mut wire = self.properties.clone();
        if let Some(tags) = &self.tags {
            wire.insert(property::TAGS.to_owned(), tags.clone());
        }
        if !self.keys.is_empty() {
            wire.insert(property::KEYS.to_owned(), self.keys.join(KEY_SEPARATOR));
        }
        if let Some(key) = &self.sharding_key {
            wire.insert(property::SHARDING_KEY.to_owned(), key.clone());
        }
        // The producer waits for the store to finish (RocketMQ's waitStoreMsgOK).
        wire.insert(property::WAIT.to_owned(), "true".to_owned());
        wire.insert(property::UNIQ_KEY.to_owned(), unique_id.to_owned());
        wire
    }

    /// Checks what RocketMQ's client checks before sending, plus what the wire can carry.
    pub fn validate(&self) -> Result<(), ClientError> {
        validate_topic(&self.topic)?;
        if self.topic == AUTO_CREATE_TOPIC_KEY_TOPIC {
            return Err(ClientError::InvalidMessage(format!(
                "topic {AUTO_CREATE_TOPIC_KEY_TOPIC} is reserved for topic auto-creation"
            )));
        }
        if self.body.is_empty() {
            return Err(ClientError::InvalidMessage(
                "the message body is empty".to_owned(),
            ));
        }
        if self.body.len() > MAX_MESSAGE_BYTES {
            return Err(ClientError::MessageTooLarge {
                size: self.body.len(),
                max: MAX_MESSAGE_BYTES,
            });
        }
        if let Some(tags) = &self.tags
            && (tags.is_empty() || tags.contains("||"))
        {
            return Err(ClientError::InvalidMessage(format!(
                "tag {tags:?} must be non-empty and must not contain `||`"
            )));
        }
        // A 32-character id stands in for the real one: the length is what counts.
        let rendered = properties::render(&self.wire_properties(&"0".repeat(32)))
            .map_err(|error| ClientError::InvalidMessage(error.to_string()))?;
        if rendered.len() > MAX_PROPERTIES_BYTES {
            return Err(ClientError::InvalidMessage(format!(
                "properties take {} bytes, more than the {MAX_PROPERTIES_BYTES} a stored message can hold",
                rendered.len()
            )));
        }
        Ok(())
    }
}

/// Checks a topic name as RocketMQ's client does: 1 to 127 characters of `%|a-zA-Z0-9_-`.
pub fn validate_topic(topic: &str) -> Result<(), ClientError> {
    if topic.is_empty() {
        return Err(ClientError::InvalidMessage(
            "the topic name is empty".to_owned(),
        ));
    }
    if topic.len() > MAX_TOPIC_NAME_BYTES {
        return Err(ClientError::InvalidMessage(format!(
            "the topic name is {} bytes long, more than {MAX_TOPIC_NAME_BYTES}",
            topic.len()
        )));
    }
    if let Some(bad) = topic
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '%' | '|' | '_' | '-')))
    {
        return Err(ClientError::InvalidMessage(format!(
            "the topic name {topic:?} contains {bad:?}; allowed are letters, digits, %, |, _ and -"
        )));
    }
    Ok(())
}

/// A message delivered by a pull.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReceivedMessage {
    /// The queue it was pulled from (for a retried message: the retry topic's queue).
    pub queue: MessageQueue,
    /// The topic it was sent to (for a retried message: the original topic).
    pub topic: String,
    pub queue_offset: i64,
    /// The client-generated id (`UNIQ_KEY`), or the offset id when the sender set none.
    pub msg_id: String,
    /// Store host and physical offset, as the broker names the message.
    pub offset_msg_id: String,
    pub body: Bytes,
    pub tags: Option<String>,
    pub keys: Vec<String>,
    pub flag: i32,
    pub sys_flag: i32,
    pub born_timestamp: i64,
    pub born_host: SocketAddr,
    pub store_timestamp: i64,
    pub store_host: SocketAddr,
    pub reconsume_times: i32,
    pub physical_offset: i64,
    pub properties: BTreeMap<String, String>,
}

impl ReceivedMessage {
    /// Wraps a stored message pulled from `broker_name`'s queue `stored.queue_id`.
    pub fn from_stored(topic: &str, broker_name: &str, stored: StoredMessage) -> Self {
        let offset_msg_id = stored.offset_msg_id();
        let properties = stored.properties;
        let msg_id = properties
            .get(property::UNIQ_KEY)
            .cloned()
            .unwrap_or_else(|| offset_msg_id.clone());
        let tags = properties.get(property::TAGS).cloned();
        let keys = properties
            .get(property::KEYS)
            .map(|keys| {
                keys.split(KEY_SEPARATOR)
                    .filter(|key| !key.is_empty())
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default();
        let original_topic = properties
            .get(property::RETRY_TOPIC)
            .cloned()
            .unwrap_or_else(|| stored.topic.clone());
        ReceivedMessage {
            queue: MessageQueue {
                topic: topic.to_owned(),
                broker_name: broker_name.to_owned(),
                queue_id: stored.queue_id,
            },
            topic: original_topic,
            queue_offset: stored.queue_offset,
            msg_id,
            offset_msg_id,
            body: stored.body,
            tags,
            keys,
            flag: stored.flag,
            sys_flag: stored.sys_flag,
            born_timestamp: stored.born_timestamp,
            born_host: stored.born_host,
            store_timestamp: stored.store_timestamp,
            store_host: stored.store_host,
            reconsume_times: stored.reconsume_times,
            physical_offset: stored.physical_offset,
            properties,
        }
    }

    pub fn property(&self, name: &str) -> Option<&str> {
        self.properties.get(name).map(String::as_str)
    }
}

/// What makes this process's unique ids differ from every other's: an address, the pid and
/// a random salt (std's per-process random hash keys, so no RNG crate is needed).
struct UniqueIdPrefix {
    bytes: [u8; 10],
}

static UNIQUE_ID_PREFIX: OnceLock<UniqueIdPrefix> = OnceLock::new();
static UNIQUE_ID_COUNTER: AtomicU64 = AtomicU64::new(0);

/// Sets the address part of unique ids (call once, before the first id; later calls do
/// nothing). Without it the ids carry 127.0.0.1.
pub fn init_unique_id_host(ip: IpAddr) {
    let _ = UNIQUE_ID_PREFIX.get_or_init(|| UniqueIdPrefix::new(ip));
}

impl UniqueIdPrefix {
    fn new(ip: IpAddr) -> Self {
        let mut bytes = [0u8; 10];
        let ip4 = match ip {
            IpAddr::V4(ip) => ip.octets(),
            // Fold an IPv6 address into 4 bytes; uniqueness rests on pid and salt anyway.
            IpAddr::V6(ip) => {
                let octets = ip.octets();
                let mut folded = [0u8; 4];
                for (index, byte) in octets.iter().enumerate() {
                    folded[index % 4] ^= byte;
                }
                folded
            }
        };
        bytes[..4].copy_from_slice(&ip4);
        let pid = std::process::id();
        bytes[4..6].copy_from_slice(&(pid as u16).to_be_bytes());
        let mut hasher = RandomState::new().build_hasher();
        hasher.write_u32(pid);
        hasher.write_i64(now_ms());
        let salt = hasher.finish();
        bytes[6..10].copy_from_slice(&salt.to_be_bytes()[..4]);
        UniqueIdPrefix { bytes }
    }
}

/// A new client-side unique message id: 32 upper-case hex digits (the length and alphabet of
/// RocketMQ's `UNIQ_KEY`): host (4 bytes), pid (2), a random salt (4) and a 48-bit counter
/// that never repeats within the process.
pub fn new_unique_id() -> String {
    let prefix = UNIQUE_ID_PREFIX
        .get_or_init(|| UniqueIdPrefix::new(IpAddr::from([127, 0, 0, 1])))
        .bytes;
    let counter = UNIQUE_ID_COUNTER.fetch_add(1, Ordering::Relaxed);
    let mut id = String::with_capacity(32);
    for byte in prefix.iter().chain(&counter.to_be_bytes()[2..]) {
        id.push(char::from(HEX[usize::from(byte >> 4)]));
        id.push(char::from(HEX[usize::from(byte & 0x0F)]));
    }
    id
}

const HEX: &[u8; 16] = b"0123456789ABCDEF";

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    #[test]
    fn unique_ids_are_32_hex_digits_and_distinct() {
        let ids: BTreeSet<String> = (0..1000).map(|_| new_unique_id()).collect();
        assert_eq!(ids.len(), 1000);
        for id in &ids {
            assert_eq!(id.len(), 32);
            assert!(id.bytes().all(|b| HEX.contains(&b)), "{id}");
        }
    }

    #[test]
    fn validation_follows_rocketmq_rules() {
        assert!(Message::new("T-1_%|x", "b").validate().is_ok());
        assert!(Message::new("", "b").validate().is_err());
        assert!(Message::new("a b", "b").validate().is_err());
        assert!(Message::new("t".repeat(128), "b").validate().is_err());
        assert!(Message::new("TBW102", "b").validate().is_err());
        assert!(Message::new("T", "").validate().is_err());
        let big = Message::new("T", vec![0u8; MAX_MESSAGE_BYTES + 1]);
        assert!(matches!(
            big.validate(),
            Err(ClientError::MessageTooLarge {
                size,
                max: MAX_MESSAGE_BYTES
            }) if size == MAX_MESSAGE_BYTES + 1
        ));
        assert!(
            Message::new("T", vec![0u8; MAX_MESSAGE_BYTES])
                .validate()
                .is_ok()
        );
        assert!(
            Message::new("T", "b")
                .with_property("k", "v\u{1}")
                .validate()
                .is_err()
        );
        assert!(Message::new("T", "b").with_tags("a||b").validate().is_err());
    }

    #[test]
    fn wire_properties_carry_tags_keys_and_id() {
        let message = Message::new("T", "b")
            .with_tags("TagA")
            .with_keys(["k1", "k2"])
            .with_property("x", "y");
        let wire = message.wire_properties("ID");
        assert_eq!(wire["TAGS"], "TagA");
        assert_eq!(wire["KEYS"], "k1 k2");
        assert_eq!(wire["UNIQ_KEY"], "ID");
        assert_eq!(wire["WAIT"], "true");
        assert_eq!(wire["x"], "y");
    }

    #[test]
    fn received_messages_expose_id_tags_keys_and_original_topic() {
        let stored = StoredMessage {
            queue_id: 2,
            flag: 5,
            queue_offset: 7,
            physical_offset: 99,
            sys_flag: 0,
            born_timestamp: 1,
            born_host: "127.0.0.1:1".parse().unwrap(),
            store_timestamp: 2,
            store_host: "127.0.0.1:10911".parse().unwrap(),
            reconsume_times: 1,
            prepared_transaction_offset: 0,
            body: Bytes::from_static(b"x"),
            topic: "%RETRY%cg".into(),
            properties: BTreeMap::from([
                ("UNIQ_KEY".to_owned(), "U".to_owned()),
                ("TAGS".to_owned(), "t".to_owned()),
                ("KEYS".to_owned(), "a b".to_owned()),
                ("RETRY_TOPIC".to_owned(), "Orig".to_owned()),
            ]),
        };
        let received = ReceivedMessage::from_stored("%RETRY%cg", "broker-a", stored);
        assert_eq!(received.msg_id, "U");
        assert_eq!(received.topic, "Orig");
        assert_eq!(received.queue.topic, "%RETRY%cg");
        assert_eq!(received.queue.queue_id, 2);
        assert_eq!(received.tags.as_deref(), Some("t"));
        assert_eq!(received.keys, vec!["a", "b"]);
        assert_eq!(received.offset_msg_id, "7F00000100002A9F0000000000000063");
    }
}
