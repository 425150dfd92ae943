//! The redb tables of the broker state machine. Everything here is small except `QUEUE_INDEX`,
//! which has one row per send request (not per message): messages themselves stay in the Raft
//! log, which is the commit log.

use redb::TableDefinition;

/// `"applied"` -> codec(LogId), `"membership"` -> codec(StoredMembership),
/// `"last_store_timestamp_ms"` -> codec(i64), `"retention_floor"` -> codec(u64),
/// `"acl"` -> codec(AclConfig).
pub const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
pub const META_APPLIED: &str = "applied";
pub const META_MEMBERSHIP: &str = "membership";
pub const META_LAST_STORE_TIMESTAMP: &str = "last_store_timestamp_ms";
pub const META_RETENTION_FLOOR: &str = "retention_floor";
/// `"acl"` -> codec(AclConfig): small (accounts and whitelists), written whole when it changes.
pub const META_ACL: &str = "acl";

/// topic -> codec(TopicConfig)
pub const TOPICS: TableDefinition<&str, &[u8]> = TableDefinition::new("topics");

/// group -> codec(GroupConfig)
pub const GROUPS: TableDefinition<&str, &[u8]> = TableDefinition::new("groups");

/// (topic, queue id) -> (next offset, min offset, bytes of the messages min..next)
pub const QUEUES: TableDefinition<(&str, u32), (u64, u64, u64)> = TableDefinition::new("queues");

/// log index -> store timestamp (ms) of every applied entry that stored messages: how retention
/// by time finds the first entry it must keep. Rows below the retention floor are deleted.
pub const LOG_TIMES: TableDefinition<u64, i64> = TableDefinition::new("log_times");

/// (group, topic, queue id) -> committed consumer offset
pub const CONSUMER_OFFSETS: TableDefinition<(&str, &str, u32), u64> =
    TableDefinition::new("consumer_offsets");

/// (topic, queue id, first offset) -> (log index, unit index, first ordinal, count, store ms,
/// bytes): the messages `first offset .. first offset + count` of a queue are unit
/// `unit index` of the send batch at `log index`, starting at ordinal `first ordinal` of that
/// entry, `bytes` long in all.
pub const QUEUE_INDEX: TableDefinition<IndexKey, IndexValue> = TableDefinition::new("queue_index");

/// `(topic, queue id, first offset)`
pub type IndexKey<'a> = (&'a str, u32, u64);
/// `(log index, unit index, first ordinal, count, store timestamp ms, bytes)`
pub type IndexValue = (u64, u32, u32, u32, i64, u64);

/// (group, topic, queue id) -> codec(PopQueue): a group's POP cursor and in-flight deliveries
/// of one queue.
pub const POP_QUEUES: TableDefinition<(&str, &str, u32), &[u8]> =
    TableDefinition::new("pop_queues");
