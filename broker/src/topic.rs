//! Topic and subscription-group configuration, as the state machine stores it and as RocketMQ
//! names it (perm bits, queue counts, the system topics a client expects).

use raftmq_protocol::names::{DEFAULT_MAX_RECONSUME_TIMES, MAX_TOPIC_NAME_BYTES};
use serde::{Deserialize, Serialize};

/// Queues may be read (RocketMQ's `PermName.PERM_READ`).
pub const PERM_READ: u32 = 1 << 2;
/// Queues may be written (`PermName.PERM_WRITE`).
pub const PERM_WRITE: u32 = 1 << 1;
/// The topic is inherited by auto-creation (`PermName.PERM_INHERIT`, set on `TBW102`).
pub const PERM_INHERIT: u32 = 1;

/// Queues given to a topic created by a send (ARCHITECTURE.md: 8, like RocketMQ's default).
pub const AUTO_CREATE_QUEUE_NUMS: u32 = 8;
/// The most queues a topic may have; bounds every per-topic loop and the route data size.
pub const MAX_QUEUE_NUMS: u32 = 1024;

/// One topic's configuration: how many queues and what may be done with them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicConfig {
    pub name: String,
    pub read_queue_nums: u32,
    pub write_queue_nums: u32,
    pub perm: u32,
    pub topic_sys_flag: u32,
    pub order: bool,
}

impl TopicConfig {
    /// A readable, writable topic with `queue_nums` read and write queues.
    pub fn new(name: impl Into<String>, queue_nums: u32) -> Self {
        Self {
            name: name.into(),
            read_queue_nums: queue_nums,
            write_queue_nums: queue_nums,
            perm: PERM_READ | PERM_WRITE,
            topic_sys_flag: 0,
            order: false,
        }
    }

    pub fn is_writable(&self) -> bool {
        self.perm & PERM_WRITE != 0
    }

    pub fn is_readable(&self) -> bool {
        self.perm & PERM_READ != 0
    }

    /// The number of queues that exist for this topic (a queue exists if it can be read or
    /// written).
    pub fn queue_nums(&self) -> u32 {
        self.read_queue_nums.max(self.write_queue_nums)
    }
}

/// Why a topic name or config is refused, before anything is proposed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TopicError {
    #[error("topic name is empty")]
    EmptyName,
    #[error("topic name is longer than {MAX_TOPIC_NAME_BYTES} bytes")]
    NameTooLong,
    #[error("topic name {0:?} has characters other than letters, digits, '%', '-', '_' and '|'")]
    BadCharacters(String),
    #[error("queue count {0} is not between 1 and {MAX_QUEUE_NUMS}")]
    BadQueueNums(u32),
}

/// Checks a topic name the way RocketMQ's `TopicValidator` does.
pub fn validate_topic_name(name: &str) -> Result<(), TopicError> {
    if name.is_empty() {
        return Err(TopicError::EmptyName);
    }
    if name.len() > MAX_TOPIC_NAME_BYTES {
        return Err(TopicError::NameTooLong);
    }
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '%' | '-' | '_' | '|');
    if !name.chars().all(allowed) {
        return Err(TopicError::BadCharacters(name.to_string()));
    }
    Ok(())
}

/// Checks a whole topic config before it is proposed.
pub fn validate_topic_config(config: &TopicConfig) -> Result<(), TopicError> {
    validate_topic_name(&config.name)?;
    for nums in [config.read_queue_nums, config.write_queue_nums] {
        if nums == 0 || nums > MAX_QUEUE_NUMS {
            return Err(TopicError::BadQueueNums(nums));
        }
    }
    Ok(())
}

/// A consumer (subscription) group's configuration, replicated so that it survives failover.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupConfig {
    pub name: String,
    pub consume_enable: bool,
    pub retry_queue_nums: u32,
    pub retry_max_times: u32,
}

impl GroupConfig {
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            consume_enable: true,
            retry_queue_nums: 1,
            retry_max_times: DEFAULT_MAX_RECONSUME_TIMES,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_names_are_checked_like_rocketmq() {
        assert_eq!(validate_topic_name("Orders_v2-%|x"), Ok(()));
        assert_eq!(validate_topic_name(""), Err(TopicError::EmptyName));
        assert_eq!(
            validate_topic_name(&"a".repeat(128)),
            Err(TopicError::NameTooLong)
        );
        assert!(matches!(
            validate_topic_name("a b"),
            Err(TopicError::BadCharacters(_))
        ));
        assert!(matches!(
            validate_topic_name("a/b"),
            Err(TopicError::BadCharacters(_))
        ));
    }

    #[test]
    fn queue_counts_are_bounded() {
        let mut config = TopicConfig::new("t", 8);
        assert_eq!(validate_topic_config(&config), Ok(()));
        config.write_queue_nums = 0;
        assert_eq!(
            validate_topic_config(&config),
            Err(TopicError::BadQueueNums(0))
        );
        config.write_queue_nums = MAX_QUEUE_NUMS + 1;
        assert!(validate_topic_config(&config).is_err());
    }
}
