//! Transactions: END_TRANSACTION (a producer commits or rolls back a half message) and
//! CHECK_TRANSACTION_STATE (a broker asks a producer about a half message left pending), and
//! QUERY_MESSAGE (messages by key within a time range) with its answer.

ext_header! {
    /// END_TRANSACTION: the outcome of a producer's local transaction for the half message at
    /// `commit_log_offset` (RocketMQ sends it oneway).
    pub struct EndTransactionRequestHeader {
        optional topic: String => "topic",
        required producer_group: String => "producerGroup",
        /// The half message's offset in the half topic's queue.
        required tran_state_table_offset: i64 => "tranStateTableOffset",
        /// The half message's physical offset (from its offset message id).
        required commit_log_offset: i64 => "commitLogOffset",
        /// `message::sys_flag::TRANSACTION_COMMIT_TYPE`, `TRANSACTION_ROLLBACK_TYPE`, or
        /// `TRANSACTION_NOT_TYPE` (still unknown).
        required commit_or_rollback: i32 => "commitOrRollback",
        /// The answer to a CHECK_TRANSACTION_STATE rather than the end of a send.
        optional from_transaction_check: bool => "fromTransactionCheck",
        required msg_id: String => "msgId",
        optional transaction_id: String => "transactionId",
        optional broker_name: String => "bname",
    }
}

ext_header! {
    /// CHECK_TRANSACTION_STATE, sent oneway by a broker to a producer of the half message's
    /// group; the body is the half message as its real topic will hold it.
    pub struct CheckTransactionStateRequestHeader {
        optional topic: String => "topic",
        required tran_state_table_offset: i64 => "tranStateTableOffset",
        required commit_log_offset: i64 => "commitLogOffset",
        /// The message's `UNIQ_KEY`.
        optional msg_id: String => "msgId",
        optional transaction_id: String => "transactionId",
        optional offset_msg_id: String => "offsetMsgId",
        optional broker_name: String => "bname",
    }
}

ext_header! {
    /// QUERY_MESSAGE: up to `max_num` messages of `topic` with `key` stored between the two
    /// times (ms). With `_UNIQUE_KEY_QUERY` = true, `key` is a `UNIQ_KEY` (a client message
    /// id) rather than one of the `KEYS`.
    pub struct QueryMessageRequestHeader {
        required topic: String => "topic",
        required key: String => "key",
        required max_num: i32 => "maxNum",
        required begin_timestamp: i64 => "beginTimestamp",
        required end_timestamp: i64 => "endTimestamp",
        optional unique_key_query: bool => "_UNIQUE_KEY_QUERY",
        optional broker_name: String => "bname",
    }
}

ext_header! {
    /// The answer to QUERY_MESSAGE; the body holds the stored messages found.
    pub struct QueryMessageResponseHeader {
        required index_last_update_timestamp: i64 => "indexLastUpdateTimestamp",
        required index_last_update_phyoffset: i64 => "indexLastUpdatePhyoffset",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::header::test_support::assert_round_trip;

    #[test]
    fn round_trips() {
        assert_round_trip(
            &EndTransactionRequestHeader {
                topic: Some("T".into()),
                producer_group: "pg".into(),
                tran_state_table_offset: 7,
                commit_log_offset: 1 << 30,
                commit_or_rollback: 8,
                from_transaction_check: Some(true),
                msg_id: "U1".into(),
                transaction_id: Some("U1".into()),
                broker_name: Some("broker-a".into()),
            },
            &[
                "producerGroup",
                "tranStateTableOffset",
                "commitLogOffset",
                "commitOrRollback",
                "msgId",
            ],
        );
        assert_round_trip(
            &CheckTransactionStateRequestHeader {
                topic: Some("T".into()),
                tran_state_table_offset: 7,
                commit_log_offset: 99,
                msg_id: Some("U1".into()),
                transaction_id: Some("U1".into()),
                offset_msg_id: Some("7F000001".into()),
                broker_name: None,
            },
            &["tranStateTableOffset", "commitLogOffset"],
        );
        assert_round_trip(
            &QueryMessageRequestHeader {
                topic: "T".into(),
                key: "order-1".into(),
                max_num: 32,
                begin_timestamp: 0,
                end_timestamp: i64::MAX,
                unique_key_query: Some(true),
                broker_name: None,
            },
            &["topic", "key", "maxNum", "beginTimestamp", "endTimestamp"],
        );
        assert_round_trip(
            &QueryMessageResponseHeader {
                index_last_update_timestamp: 5,
                index_last_update_phyoffset: 6,
            },
            &["indexLastUpdateTimestamp", "indexLastUpdatePhyoffset"],
        );
    }
}
