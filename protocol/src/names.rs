//! RocketMQ's names and defaults that clients, brokers and tools must agree on, defined once:
//! system topic names, the retry and dead-letter topics of a group, Java's `String.hashCode`
//! (tag codes and sharding keys), the "outcome unknown" remark, and the default ports.

use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// The topic a RocketMQ client falls back to for a topic it has no route for: a broker that
/// auto-creates topics registers it, so the client can send and let the broker create the rest.
pub const AUTO_CREATE_TOPIC_KEY_TOPIC: &str = "TBW102";
/// Prefix of the per-group topic holding messages sent back for a later retry.
pub const RETRY_GROUP_TOPIC_PREFIX: &str = "%RETRY%";
/// Prefix of the per-group dead-letter topic, after `max_reconsume_times` failed retries.
pub const DLQ_GROUP_TOPIC_PREFIX: &str = "%DLQ%";
/// How many times a message is re-consumed before it goes to the dead-letter topic.
pub const DEFAULT_MAX_RECONSUME_TIMES: u32 = 16;
/// Where transactions' half messages wait, invisible to consumers, until their producer commits
/// or rolls them back (RocketMQ's `RMQ_SYS_TRANS_HALF_TOPIC`).
pub const TRANS_HALF_TOPIC: &str = "RMQ_SYS_TRANS_HALF_TOPIC";
/// Where a half message goes when its producer never answered `transaction-check-max` checks
/// (RocketMQ's `TRANS_CHECK_MAX_TIME_TOPIC`): kept for an operator, never delivered.
pub const TRANS_CHECK_MAX_TIME_TOPIC: &str = "TRANS_CHECK_MAX_TIME_TOPIC";
/// Where timer messages (`TIMER_DELIVER_MS`, `TIMER_DELAY_SEC`, `TIMER_DELAY_MS`) wait for their
/// due time (RocketMQ 5's `rmq_sys_wheel_timer`).
pub const TIMER_TOPIC: &str = "rmq_sys_wheel_timer";
/// The longest topic name RocketMQ accepts (`TopicValidator`), so names fit the stored layout.
pub const MAX_TOPIC_NAME_BYTES: usize = 127;

/// A SYSTEM_ERROR answer whose remark starts with this may or may not have taken effect (the
/// broker lost leadership or timed out after proposing it): the client must treat the
/// outcome as unknown, not as failed.
pub const OUTCOME_UNKNOWN_REMARK_PREFIX: &str = "outcome unknown";

/// The NameServer's client port (RocketMQ's default).
pub const NAMESRV_PORT: u16 = 9876;
/// The NameServer's admin HTTP port (RaftMQ's; next to the client port).
pub const NAMESRV_ADMIN_PORT: u16 = 9877;
/// The broker's client port (RocketMQ's `listenPort`).
pub const BROKER_PORT: u16 = 10911;
/// The broker's Raft RPC port: where RocketMQ's master/slave HA port is.
pub const BROKER_RAFT_PORT: u16 = 10912;
/// The broker's admin HTTP port (RaftMQ's).
pub const BROKER_ADMIN_PORT: u16 = 10913;

/// `%RETRY%<group>`: where messages a consumer sends back wait for their next delivery.
pub fn retry_topic(group: &str) -> String {
    format!("{RETRY_GROUP_TOPIC_PREFIX}{group}")
}

/// `%DLQ%<group>`: where messages go after too many failed deliveries.
pub fn dlq_topic(group: &str) -> String {
    format!("{DLQ_GROUP_TOPIC_PREFIX}{group}")
}

/// The remark of an answer whose outcome is unknown, as [`OUTCOME_UNKNOWN_REMARK_PREFIX`] says.
pub fn outcome_unknown_remark(reason: impl std::fmt::Display) -> String {
    format!("{OUTCOME_UNKNOWN_REMARK_PREFIX}: {reason}")
}

/// Java's `String.hashCode()`: RocketMQ stores it per message as the tag code (so a broker
/// filters pulls by tag without reading the message), consumers put it in
/// `SubscriptionData::code_set`, and producers pick a queue for a sharding key with it.
pub fn java_string_hash(text: &str) -> i32 {
    text.encode_utf16().fold(0i32, |hash, unit| {
        hash.wrapping_mul(31).wrapping_add(i32::from(unit))
    })
}

/// The tag code stored with a message (its `tagsCode`): Java's `String.hashCode` of the tag.
pub fn tags_code(tag: &str) -> i64 {
    i64::from(java_string_hash(tag))
}

/// Milliseconds since the Unix epoch (0 before it, saturating far after it), shifted by the
/// process's [clock offset](set_clock_offset_ms): the clock of born and store timestamps, and of
/// everything a broker leader decides by time (due delays and timers, transaction checks,
/// retention, POP invisibility).
pub fn now_ms() -> i64 {
    let system = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| {
            i64::try_from(elapsed.as_millis()).unwrap_or(i64::MAX)
        });
    system
        .saturating_add(CLOCK_OFFSET_MS.load(Ordering::Relaxed))
        .max(0)
}

/// See [`set_clock_offset_ms`].
static CLOCK_OFFSET_MS: AtomicI64 = AtomicI64::new(0);

/// TEST ONLY: shifts this process's [`now_ms`] by `offset_ms` (negative: behind), as a wrong
/// system clock would. mqbroker's hidden `--unsafe-clock-offset-file` sets it, and jepsen-lite's
/// clock-skew fault changes it while the member runs. Raft timing (elections, leases) uses the
/// monotonic clock and is not shifted, as a wall-clock jump would not shift it either.
pub fn set_clock_offset_ms(offset_ms: i64) {
    CLOCK_OFFSET_MS.store(offset_ms, Ordering::Relaxed);
}

/// The offset [`set_clock_offset_ms`] set (0 unless a test skews this process's clock).
pub fn clock_offset_ms() -> i64 {
    CLOCK_OFFSET_MS.load(Ordering::Relaxed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn java_string_hash_matches_java() {
        // Values computed with Java's "TagA".hashCode() and "".hashCode().
        assert_eq!(java_string_hash("TagA"), 2598919);
        assert_eq!(java_string_hash(""), 0);
        // Wraps past i32::MAX, as Java's int arithmetic does.
        assert_eq!(java_string_hash("Hello World"), -862545276);
        assert_eq!(java_string_hash("hello"), 99162322);
    }

    #[test]
    fn group_topics_and_remarks() {
        assert_eq!(retry_topic("cg"), "%RETRY%cg");
        assert_eq!(dlq_topic("cg"), "%DLQ%cg");
        assert_eq!(
            outcome_unknown_remark("leader lost"),
            "outcome unknown: leader lost"
        );
    }
}
