//! Topic administration on a broker: UPDATE_AND_CREATE_TOPIC and DELETE_TOPIC_IN_BROKER.

ext_header! {
    /// UPDATE_AND_CREATE_TOPIC: the topic config travels in the header.
    pub struct CreateTopicRequestHeader {
        required topic: String => "topic",
        required default_topic: String => "defaultTopic",
        required read_queue_nums: i32 => "readQueueNums",
        required write_queue_nums: i32 => "writeQueueNums",
        /// `route::perm` bits.
        required perm: i32 => "perm",
        /// "SINGLE_TAG" or "MULTI_TAG".
        required topic_filter_type: String => "topicFilterType",
        optional topic_sys_flag: i32 => "topicSysFlag",
        required order: bool => "order",
        /// Java's attribute string, `+key=value,...`.
        optional attributes: String => "attributes",
        optional force: bool => "force",
    }
}

ext_header! {
    pub struct DeleteTopicRequestHeader {
        required topic: String => "topic",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::header::test_support::assert_round_trip;

    #[test]
    fn round_trips() {
        assert_round_trip(
            &CreateTopicRequestHeader {
                topic: "T".into(),
                default_topic: "TBW102".into(),
                read_queue_nums: 8,
                write_queue_nums: 8,
                perm: 6,
                topic_filter_type: "SINGLE_TAG".into(),
                topic_sys_flag: Some(0),
                order: false,
                attributes: None,
                force: Some(false),
            },
            &[
                "topic",
                "defaultTopic",
                "readQueueNums",
                "writeQueueNums",
                "perm",
                "topicFilterType",
                "order",
            ],
        );
        assert_round_trip(&DeleteTopicRequestHeader { topic: "T".into() }, &["topic"]);
    }
}
