//! The redb tables of the broker state machine. Everything here is small except `QUEUE_INDEX`,
//! which has one row per send request (not per message): messages themselves stay in the Raft
//! log, which is the commit log.

use redb::TableDefinition;

/// `"applied"` -> codec(LogId), `"membership"` -> codec(StoredMembership),
/// `"last_store_timestamp_ms"` -> codec(i64).
pub const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
pub const META_APPLIED: &str = "applied";
pub const META_MEMBERSHIP: &str = "membership";
pub const META_LAST_STORE_TIMESTAMP: &str = "last_store_timestamp_ms";

/// topic -> codec(TopicConfig)
pub const TOPICS: TableDefinition<&str, &[u8]> = TableDefinition::new("topics");

/// group -> codec(GroupConfig)
pub const GROUPS: TableDefinition<&str, &[u8]> = TableDefinition::new("groups");

/// (topic, queue id) -> (next offset, min offset)
pub const QUEUES: TableDefinition<(&str, u32), (u64, u64)> = TableDefinition::new("queues");

/// (group, topic, queue id) -> committed consumer offset
pub const CONSUMER_OFFSETS: TableDefinition<(&str, &str, u32), u64> =
    TableDefinition::new("consumer_offsets");

/// (topic, queue id, first offset) -> (log index, unit index, first ordinal, count, store ms):
/// the messages `first offset .. first offset + count` of a queue are unit `unit index` of the
/// send batch at `log index`, starting at ordinal `first ordinal` of that entry.
pub const QUEUE_INDEX: TableDefinition<IndexKey, IndexValue> = TableDefinition::new("queue_index");

/// `(topic, queue id, first offset)`
pub type IndexKey<'a> = (&'a str, u32, u64);
/// `(log index, unit index, first ordinal, count, store timestamp ms)`
pub type IndexValue = (u64, u32, u32, u32, i64);
