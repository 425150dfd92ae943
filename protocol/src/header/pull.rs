//! PULL_MESSAGE request and response headers.

ext_header! {
    /// A pull: read up to `max_msg_nums` messages of one queue from `queue_offset`; with the
    /// suspend flag the broker may hold the request up to `suspend_timeout_millis` (long poll).
    pub struct PullMessageRequestHeader {
        required consumer_group: String => "consumerGroup",
        required topic: String => "topic",
        required queue_id: i32 => "queueId",
        required queue_offset: i64 => "queueOffset",
        required max_msg_nums: i32 => "maxMsgNums",
        /// `pull_sys_flag` bits.
        required sys_flag: i32 => "sysFlag",
        /// The consumer's committed offset for this queue, piggybacked on the pull.
        required commit_offset: i64 => "commitOffset",
        required suspend_timeout_millis: i64 => "suspendTimeoutMillis",
        /// The subscription expression (tags `a || b`, or `*`), sent with the subscription flag.
        optional subscription: String => "subscription",
        required sub_version: i64 => "subVersion",
        /// "TAG" or "SQL92".
        optional expression_type: String => "expressionType",
        optional max_msg_bytes: i32 => "maxMsgBytes",
        optional broker_name: String => "bname",
    }
}

ext_header! {
    /// The answer to a pull (with SUCCESS, PULL_NOT_FOUND, PULL_RETRY_IMMEDIATELY or
    /// PULL_OFFSET_MOVED); on SUCCESS the body holds stored messages (`message::decode_stored`).
    pub struct PullMessageResponseHeader {
        /// Which member the consumer should pull this queue from next (0 = the leader slot).
        required suggest_which_broker_id: i64 => "suggestWhichBrokerId",
        required next_begin_offset: i64 => "nextBeginOffset",
        required min_offset: i64 => "minOffset",
        required max_offset: i64 => "maxOffset",
        optional offset_delta: i64 => "offsetDelta",
        optional topic_sys_flag: i32 => "topicSysFlag",
        optional group_sys_flag: i32 => "groupSysFlag",
        optional forbidden_type: i32 => "forbiddenType",
    }
}

/// Bits of [`PullMessageRequestHeader::sys_flag`] (Java's `PullSysFlag`).
pub mod pull_sys_flag {
    /// `commitOffset` carries an offset to commit.
    pub const COMMIT_OFFSET: i32 = 1;
    /// The broker may suspend the pull until messages arrive (long polling).
    pub const SUSPEND: i32 = 1 << 1;
    /// `subscription` carries the subscription expression.
    pub const SUBSCRIPTION: i32 = 1 << 2;
    pub const CLASS_FILTER: i32 = 1 << 3;
    pub const LITE_PULL_MESSAGE: i32 = 1 << 4;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::header::test_support::assert_round_trip;

    #[test]
    fn round_trips() {
        assert_round_trip(
            &PullMessageRequestHeader {
                consumer_group: "cg".into(),
                topic: "TopicA".into(),
                queue_id: 2,
                queue_offset: 100,
                max_msg_nums: 32,
                sys_flag: pull_sys_flag::SUSPEND | pull_sys_flag::SUBSCRIPTION,
                commit_offset: 90,
                suspend_timeout_millis: 15_000,
                subscription: Some("*".into()),
                sub_version: 1,
                expression_type: Some("TAG".into()),
                max_msg_bytes: None,
                broker_name: Some("broker-a".into()),
            },
            &[
                "consumerGroup",
                "topic",
                "queueId",
                "queueOffset",
                "maxMsgNums",
                "sysFlag",
                "commitOffset",
                "suspendTimeoutMillis",
                "subVersion",
            ],
        );
        assert_round_trip(
            &PullMessageResponseHeader {
                suggest_which_broker_id: 0,
                next_begin_offset: 132,
                min_offset: 0,
                max_offset: 500,
                offset_delta: None,
                topic_sys_flag: Some(0),
                group_sys_flag: None,
                forbidden_type: None,
            },
            &[
                "suggestWhichBrokerId",
                "nextBeginOffset",
                "minOffset",
                "maxOffset",
            ],
        );
    }
}
