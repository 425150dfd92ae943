//! POP consumption (RocketMQ 5's broker-side consume state): POP_MESSAGE, ACK_MESSAGE,
//! CHANGE_MESSAGE_INVISIBLETIME and NOTIFICATION, with the Java field names of
//! `PopMessageRequestHeader`, `AckMessageRequestHeader`, `ChangeInvisibleTimeRequestHeader`,
//! `NotificationRequestHeader` and their response headers.
//!
//! The `extraInfo` a consumer sends back with an ack is the string RocketMQ's `ExtraInfoUtil`
//! builds: fields separated by a space,
//! `ckQueueOffset popTime invisibleTime reviveQid retry brokerName queueId queueOffset`.

ext_header! {
    /// POP_MESSAGE: take up to `max_msg_nums` messages of a queue (`queue_id` -1: any queue of
    /// the topic), invisible to the group for `invisible_time` ms.
    pub struct PopMessageRequestHeader {
        required consumer_group: String => "consumerGroup",
        required topic: String => "topic",
        required queue_id: i32 => "queueId",
        required max_msg_nums: i32 => "maxMsgNums",
        required invisible_time: i64 => "invisibleTime",
        /// How long the request may be held waiting for a message (long polling), ms.
        required poll_time: i64 => "pollTime",
        required born_time: i64 => "bornTime",
        /// `ConsumeInitMode`: 0 (MIN) starts a new group at the queue's first message, 1 (MAX)
        /// at its end.
        required init_mode: i32 => "initMode",
        optional exp_type: String => "expType",
        optional exp: String => "exp",
        optional order: bool => "order",
        optional attempt_id: String => "attemptId",
    }
}

ext_header! {
    pub struct PopMessageResponseHeader {
        required pop_time: i64 => "popTime",
        required invisible_time: i64 => "invisibleTime",
        required revive_qid: i32 => "reviveQid",
        /// Messages left to pop after these.
        required rest_num: i64 => "restNum",
        /// `retry queueId startOffset` per queue, `;`-separated.
        optional start_offset_info: String => "startOffsetInfo",
        /// `retry queueId offset,offset,...` per queue, `;`-separated.
        optional msg_offset_info: String => "msgOffsetInfo",
        /// `retry queueId count` per queue (orderly pops: how often the head was delivered).
        optional order_count_info: String => "orderCountInfo",
    }
}

ext_header! {
    /// ACK_MESSAGE: the message at `offset` was consumed; it never comes back.
    pub struct AckMessageRequestHeader {
        required consumer_group: String => "consumerGroup",
        required topic: String => "topic",
        required queue_id: i32 => "queueId",
        required extra_info: String => "extraInfo",
        required offset: i64 => "offset",
    }
}

ext_header! {
    /// CHANGE_MESSAGE_INVISIBLETIME: the message at `offset` stays invisible for
    /// `invisible_time` ms from now (a nack with a backoff, or more time to process).
    pub struct ChangeInvisibleTimeRequestHeader {
        required consumer_group: String => "consumerGroup",
        required topic: String => "topic",
        required queue_id: i32 => "queueId",
        required extra_info: String => "extraInfo",
        required offset: i64 => "offset",
        required invisible_time: i64 => "invisibleTime",
    }
}

ext_header! {
    /// The new handle's parts: the consumer builds its next `extraInfo` from them.
    pub struct ChangeInvisibleTimeResponseHeader {
        required pop_time: i64 => "popTime",
        required invisible_time: i64 => "invisibleTime",
        required revive_qid: i32 => "reviveQid",
    }
}

ext_header! {
    /// NOTIFICATION: wait up to `poll_time` ms until the group has a message to pop.
    pub struct NotificationRequestHeader {
        required consumer_group: String => "consumerGroup",
        required topic: String => "topic",
        required queue_id: i32 => "queueId",
        required poll_time: i64 => "pollTime",
        required born_time: i64 => "bornTime",
        optional order: bool => "order",
        optional attempt_id: String => "attemptId",
    }
}

ext_header! {
    pub struct NotificationResponseHeader {
        required has_msg: bool => "hasMsg",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::header::test_support::assert_round_trip;

    #[test]
    fn round_trips() {
        assert_round_trip(
            &PopMessageRequestHeader {
                consumer_group: "g".into(),
                topic: "t".into(),
                queue_id: -1,
                max_msg_nums: 32,
                invisible_time: 60_000,
                poll_time: 15_000,
                born_time: 1,
                init_mode: 0,
                exp_type: Some("TAG".into()),
                exp: Some("*".into()),
                order: Some(false),
                attempt_id: None,
            },
            &[
                "consumerGroup",
                "topic",
                "queueId",
                "maxMsgNums",
                "invisibleTime",
            ],
        );
        assert_round_trip(
            &AckMessageRequestHeader {
                consumer_group: "g".into(),
                topic: "t".into(),
                queue_id: 1,
                extra_info: "0 1 2 0 0 broker-a 1 0".into(),
                offset: 0,
            },
            &["consumerGroup", "topic", "queueId", "extraInfo", "offset"],
        );
        assert_round_trip(
            &ChangeInvisibleTimeRequestHeader {
                consumer_group: "g".into(),
                topic: "t".into(),
                queue_id: 1,
                extra_info: "0 1 2 0 0 broker-a 1 0".into(),
                offset: 0,
                invisible_time: 5_000,
            },
            &["extraInfo", "invisibleTime"],
        );
        assert_round_trip(&NotificationResponseHeader { has_msg: true }, &["hasMsg"]);
    }
}
