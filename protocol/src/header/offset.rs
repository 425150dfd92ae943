//! Consumer offsets and queue offsets: QUERY/UPDATE_CONSUMER_OFFSET, GET_MAX/MIN_OFFSET,
//! SEARCH_OFFSET_BY_TIMESTAMP, GET_EARLIEST_MSG_STORETIME.

ext_header! {
    /// QUERY_CONSUMER_OFFSET. A broker without an offset answers QUERY_NOT_FOUND.
    pub struct QueryConsumerOffsetRequestHeader {
        required consumer_group: String => "consumerGroup",
        required topic: String => "topic",
        required queue_id: i32 => "queueId",
        optional set_zero_if_not_found: bool => "setZeroIfNotFound",
        optional broker_name: String => "bname",
    }
}

ext_header! {
    pub struct QueryConsumerOffsetResponseHeader {
        required offset: i64 => "offset",
    }
}

ext_header! {
    /// UPDATE_CONSUMER_OFFSET (clients often send it oneway).
    pub struct UpdateConsumerOffsetRequestHeader {
        required consumer_group: String => "consumerGroup",
        required topic: String => "topic",
        required queue_id: i32 => "queueId",
        required commit_offset: i64 => "commitOffset",
        optional broker_name: String => "bname",
    }
}

ext_header! {
    /// GET_MAX_OFFSET: the offset after the last message of a queue.
    pub struct GetMaxOffsetRequestHeader {
        required topic: String => "topic",
        required queue_id: i32 => "queueId",
        /// Only committed messages count (the default in Java is true).
        optional committed: bool => "committed",
        optional broker_name: String => "bname",
    }
}

ext_header! {
    /// The answer to GET_MAX_OFFSET, GET_MIN_OFFSET and SEARCH_OFFSET_BY_TIMESTAMP.
    pub struct OffsetResponseHeader {
        required offset: i64 => "offset",
    }
}

ext_header! {
    /// GET_MIN_OFFSET: the first offset still stored in a queue.
    pub struct GetMinOffsetRequestHeader {
        required topic: String => "topic",
        required queue_id: i32 => "queueId",
        optional broker_name: String => "bname",
    }
}

ext_header! {
    /// SEARCH_OFFSET_BY_TIMESTAMP: the offset of the first message stored at or after
    /// `timestamp` (ms); `boundaryType` LOWER (default) or UPPER.
    pub struct SearchOffsetRequestHeader {
        required topic: String => "topic",
        required queue_id: i32 => "queueId",
        required timestamp: i64 => "timestamp",
        optional boundary_type: String => "boundaryType",
        optional broker_name: String => "bname",
    }
}

ext_header! {
    /// GET_EARLIEST_MSG_STORETIME.
    pub struct GetEarliestMsgStoretimeRequestHeader {
        required topic: String => "topic",
        required queue_id: i32 => "queueId",
        optional broker_name: String => "bname",
    }
}

ext_header! {
    pub struct GetEarliestMsgStoretimeResponseHeader {
        required timestamp: i64 => "timestamp",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::header::test_support::assert_round_trip;

    #[test]
    fn round_trips() {
        assert_round_trip(
            &QueryConsumerOffsetRequestHeader {
                consumer_group: "cg".into(),
                topic: "T".into(),
                queue_id: 1,
                set_zero_if_not_found: Some(false),
                broker_name: None,
            },
            &["consumerGroup", "topic", "queueId"],
        );
        assert_round_trip(
            &QueryConsumerOffsetResponseHeader { offset: 7 },
            &["offset"],
        );
        assert_round_trip(
            &UpdateConsumerOffsetRequestHeader {
                consumer_group: "cg".into(),
                topic: "T".into(),
                queue_id: 1,
                commit_offset: 99,
                broker_name: Some("b".into()),
            },
            &["consumerGroup", "topic", "queueId", "commitOffset"],
        );
        assert_round_trip(
            &GetMaxOffsetRequestHeader {
                topic: "T".into(),
                queue_id: 0,
                committed: Some(true),
                broker_name: None,
            },
            &["topic", "queueId"],
        );
        assert_round_trip(&OffsetResponseHeader { offset: -1 }, &["offset"]);
        assert_round_trip(
            &GetMinOffsetRequestHeader {
                topic: "T".into(),
                queue_id: 5,
                broker_name: None,
            },
            &["topic", "queueId"],
        );
        assert_round_trip(
            &SearchOffsetRequestHeader {
                topic: "T".into(),
                queue_id: 5,
                timestamp: 1_700_000_000_000,
                boundary_type: Some("LOWER".into()),
                broker_name: None,
            },
            &["topic", "queueId", "timestamp"],
        );
        assert_round_trip(
            &GetEarliestMsgStoretimeRequestHeader {
                topic: "T".into(),
                queue_id: 5,
                broker_name: None,
            },
            &["topic", "queueId"],
        );
        assert_round_trip(
            &GetEarliestMsgStoretimeResponseHeader { timestamp: 12 },
            &["timestamp"],
        );
    }
}
