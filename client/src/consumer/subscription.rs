//! What a consumer consumes: its [`Subscription`]s (a topic and a tag filter), the group's
//! `%RETRY%<group>` topic consumed alongside them, where a queue without a committed offset
//! starts ([`ConsumeFrom`]), and how all of it is described to brokers in heartbeats.

use std::collections::BTreeSet;

use raftmq_protocol::body::{ConsumerData, SubscriptionData};
use raftmq_protocol::names::{java_string_hash, retry_topic};

use super::builder::ConsumerConfig;
use crate::error::ClientError;
use crate::message::validate_topic;

/// Where a queue starts when the group has no committed offset for it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ConsumeFrom {
    /// The queue's first message (offset 0).
    #[default]
    First,
    /// After the queue's last message at the time the queue is taken.
    Last,
    /// The first message stored at or after this time (ms since the epoch).
    Timestamp(i64),
}

impl ConsumeFrom {
    fn wire_name(self) -> &'static str {
        match self {
            ConsumeFrom::First => "CONSUME_FROM_FIRST_OFFSET",
            ConsumeFrom::Last => "CONSUME_FROM_LAST_OFFSET",
            ConsumeFrom::Timestamp(_) => "CONSUME_FROM_TIMESTAMP",
        }
    }
}

/// A topic and its filter: tags (`*`, or `TagA || TagB`), or an SQL92 expression on message
/// properties that the broker evaluates.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Subscription {
    pub topic: String,
    pub expression: String,
    /// `None`: every tag (or an SQL92 filter, which the broker applies).
    tags: Option<BTreeSet<String>>,
    sql92: bool,
}

impl Subscription {
    /// An SQL92 subscription (RocketMQ's `MessageSelector.bySql`): the broker delivers only
    /// messages whose properties make `expression` true, and refuses an expression it cannot
    /// parse when the consumer starts.
    pub fn sql92(topic: &str, expression: &str) -> Result<Self, ClientError> {
        validate_topic(topic)?;
        if expression.trim().is_empty() {
            return Err(ClientError::Config(
                "an SQL92 subscription needs an expression".to_owned(),
            ));
        }
        Ok(Subscription {
            topic: topic.to_owned(),
            expression: expression.trim().to_owned(),
            tags: None,
            sql92: true,
        })
    }

    pub fn is_sql92(&self) -> bool {
        self.sql92
    }

    pub fn new(topic: &str, expression: &str) -> Result<Self, ClientError> {
        validate_topic(topic)?;
        let trimmed = expression.trim();
        let tags = if trimmed.is_empty() || trimmed == "*" {
            None
        } else {
            let tags: BTreeSet<String> = trimmed
                .split("||")
                .map(str::trim)
                .filter(|tag| !tag.is_empty())
                .map(str::to_owned)
                .collect();
            if tags.is_empty() {
                return Err(ClientError::Config(format!(
                    "subscription expression {expression:?} names no tag"
                )));
            }
            Some(tags)
        };
        Ok(Subscription {
            topic: topic.to_owned(),
            expression: if tags.is_none() {
                "*".to_owned()
            } else {
                trimmed.to_owned()
            },
            tags,
            sql92: false,
        })
    }

    /// Whether a message with `tags` passes the filter (SQL92 filters are the broker's).
    pub fn matches(&self, tags: Option<&str>) -> bool {
        match (&self.tags, tags) {
            (None, _) => true,
            (Some(wanted), Some(tag)) => wanted.contains(tag),
            (Some(_), None) => false,
        }
    }

    pub(super) fn data(&self, sub_version: i64) -> SubscriptionData {
        let tags_set = self.tags.clone().unwrap_or_default();
        SubscriptionData {
            class_filter_mode: false,
            topic: self.topic.clone(),
            sub_string: self.expression.clone(),
            code_set: tags_set.iter().map(|tag| java_string_hash(tag)).collect(),
            tags_set,
            sub_version,
            expression_type: if self.sql92 { "SQL92" } else { "TAG" }.to_owned(),
        }
    }
}

impl ConsumerConfig {
    /// The subscriptions, plus the retry topic when it is consumed (never when broadcasting:
    /// a broadcast message is not sent back for a retry).
    pub(super) fn all_subscriptions(&self) -> Vec<Subscription> {
        let mut all = self.subscriptions.clone();
        if self.consume_retry_topic && self.broadcasting.is_none() {
            let retry = retry_topic(&self.group);
            if !all.iter().any(|subscription| subscription.topic == retry)
                && let Ok(subscription) = Subscription::new(&retry, "*")
            {
                all.push(subscription);
            }
        }
        all
    }

    pub(super) fn is_retry_topic(&self, topic: &str) -> bool {
        topic == retry_topic(&self.group)
    }

    /// The subscription `topic` is consumed with (every tag for a topic not subscribed).
    pub(super) fn subscription_for(&self, topic: &str) -> Subscription {
        self.all_subscriptions()
            .into_iter()
            .find(|subscription| subscription.topic == topic)
            .unwrap_or_else(|| Subscription {
                topic: topic.to_owned(),
                expression: "*".to_owned(),
                tags: None,
                sql92: false,
            })
    }

    /// The group as heartbeats describe it to brokers; `sub_version` marks this start.
    pub(super) fn consumer_data(&self, sub_version: i64) -> ConsumerData {
        ConsumerData {
            group_name: self.group.clone(),
            consume_type: "CONSUME_PASSIVELY".to_owned(),
            message_model: if self.broadcasting.is_some() {
                "BROADCASTING"
            } else {
                "CLUSTERING"
            }
            .to_owned(),
            consume_from_where: self.consume_from.wire_name().to_owned(),
            subscription_data_set: self
                .all_subscriptions()
                .iter()
                .map(|subscription| subscription.data(sub_version))
                .collect(),
            unit_mode: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subscriptions_parse_tag_expressions() {
        let all = Subscription::new("T", "*").unwrap();
        assert!(all.matches(None) && all.matches(Some("x")));
        assert_eq!(Subscription::new("T", "").unwrap(), all);
        let some = Subscription::new("T", " a || b ").unwrap();
        assert!(some.matches(Some("a")) && some.matches(Some("b")));
        assert!(!some.matches(Some("c")) && !some.matches(None));
        let data = some.data(7);
        assert_eq!(data.tags_set.len(), 2);
        assert!(data.code_set.contains(&java_string_hash("a")));
        assert_eq!(data.sub_string, "a || b");
        assert!(Subscription::new("T", "||").is_err());
        assert!(Subscription::new("bad topic", "*").is_err());
    }
}
