//! Client session requests: UNREGISTER_CLIENT, GET_CONSUMER_LIST_BY_GROUP,
//! NOTIFY_CONSUMER_IDS_CHANGED, CONSUMER_SEND_MSG_BACK, VIEW_MESSAGE_BY_ID.
//! HEART_BEAT has no header fields: its content is the JSON body `body::HeartbeatData`.

ext_header! {
    pub struct UnregisterClientRequestHeader {
        required client_id: String => "clientID",
        optional producer_group: String => "producerGroup",
        optional consumer_group: String => "consumerGroup",
    }
}

ext_header! {
    /// GET_CONSUMER_LIST_BY_GROUP; the answer's body is `body::ConsumerListBody`.
    pub struct GetConsumerListByGroupRequestHeader {
        required consumer_group: String => "consumerGroup",
    }
}

ext_header! {
    /// NOTIFY_CONSUMER_IDS_CHANGED, sent oneway by a broker to a group's consumers.
    pub struct NotifyConsumerIdsChangedRequestHeader {
        required consumer_group: String => "consumerGroup",
    }
}

ext_header! {
    /// CONSUMER_SEND_MSG_BACK: a consumer failed a message and asks for redelivery through
    /// `%RETRY%<group>` (or `%DLQ%<group>` after `max_reconsume_times`).
    pub struct ConsumerSendMsgBackRequestHeader {
        /// The physical (commit log) offset of the message being sent back.
        required offset: i64 => "offset",
        required group: String => "group",
        required delay_level: i32 => "delayLevel",
        optional origin_msg_id: String => "originMsgId",
        optional origin_topic: String => "originTopic",
        optional unit_mode: bool => "unitMode",
        optional max_reconsume_times: i32 => "maxReconsumeTimes",
        optional broker_name: String => "bname",
    }
}

ext_header! {
    /// VIEW_MESSAGE_BY_ID: read the message at a physical offset (from an offset msg id).
    pub struct ViewMessageRequestHeader {
        required offset: i64 => "offset",
        optional topic: String => "topic",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::header::test_support::assert_round_trip;

    #[test]
    fn round_trips() {
        assert_round_trip(
            &UnregisterClientRequestHeader {
                client_id: "127.0.0.1@1".into(),
                producer_group: Some("pg".into()),
                consumer_group: None,
            },
            &["clientID"],
        );
        assert_round_trip(
            &GetConsumerListByGroupRequestHeader {
                consumer_group: "cg".into(),
            },
            &["consumerGroup"],
        );
        assert_round_trip(
            &NotifyConsumerIdsChangedRequestHeader {
                consumer_group: "cg".into(),
            },
            &["consumerGroup"],
        );
        assert_round_trip(
            &ConsumerSendMsgBackRequestHeader {
                offset: 1234,
                group: "cg".into(),
                delay_level: 0,
                origin_msg_id: Some("ABC".into()),
                origin_topic: Some("T".into()),
                unit_mode: Some(false),
                max_reconsume_times: Some(16),
                broker_name: None,
            },
            &["offset", "group", "delayLevel"],
        );
        assert_round_trip(
            &ViewMessageRequestHeader {
                offset: 77,
                topic: None,
            },
            &["offset"],
        );
    }
}
