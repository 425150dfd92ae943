//! Send: SEND_MESSAGE (long field names), SEND_MESSAGE_V2 and SEND_BATCH_MESSAGE (one-letter
//! names `a`..`n`), and the send response.

use crate::code::request;
use crate::error::WireError;
use crate::frame::RemotingCommand;
use crate::header::ExtHeader;

ext_header! {
    /// The send header with Java's long field names (SEND_MESSAGE, SEND_REPLY_MESSAGE).
    /// Every send is handled through this type; V2 converts into it.
    pub struct SendMessageRequestHeader {
        required producer_group: String => "producerGroup",
        required topic: String => "topic",
        /// The topic whose config a broker copies when it auto-creates `topic` (TBW102).
        required default_topic: String => "defaultTopic",
        required default_topic_queue_nums: i32 => "defaultTopicQueueNums",
        /// A negative queue id lets the broker choose.
        required queue_id: i32 => "queueId",
        /// `message::sys_flag` bits.
        required sys_flag: i32 => "sysFlag",
        required born_timestamp: i64 => "bornTimestamp",
        required flag: i32 => "flag",
        /// Message properties, `name\x01value\x02` (see `message::properties`).
        optional properties: String => "properties",
        optional reconsume_times: i32 => "reconsumeTimes",
        optional unit_mode: bool => "unitMode",
        optional batch: bool => "batch",
        optional max_reconsume_times: i32 => "maxReconsumeTimes",
        /// The broker group the client meant (RocketMQ 5 `RpcRequestHeader.bname`).
        optional broker_name: String => "bname",
    }
}

ext_header! {
    /// The same header with one-letter names (SEND_MESSAGE_V2, SEND_BATCH_MESSAGE,
    /// SEND_REPLY_MESSAGE_V2), which saves bytes on every send.
    pub struct SendMessageRequestHeaderV2 {
        required a: String => "a",
        required b: String => "b",
        required c: String => "c",
        required d: i32 => "d",
        required e: i32 => "e",
        required f: i32 => "f",
        required g: i64 => "g",
        required h: i32 => "h",
        optional i: String => "i",
        optional j: i32 => "j",
        optional k: bool => "k",
        optional l: i32 => "l",
        optional m: bool => "m",
        optional n: String => "n",
    }
}

impl From<SendMessageRequestHeaderV2> for SendMessageRequestHeader {
    fn from(v2: SendMessageRequestHeaderV2) -> Self {
        SendMessageRequestHeader {
            producer_group: v2.a,
            topic: v2.b,
            default_topic: v2.c,
            default_topic_queue_nums: v2.d,
            queue_id: v2.e,
            sys_flag: v2.f,
            born_timestamp: v2.g,
            flag: v2.h,
            properties: v2.i,
            reconsume_times: v2.j,
            unit_mode: v2.k,
            max_reconsume_times: v2.l,
            batch: v2.m,
            broker_name: v2.n,
        }
    }
}

impl From<SendMessageRequestHeader> for SendMessageRequestHeaderV2 {
    fn from(v1: SendMessageRequestHeader) -> Self {
        SendMessageRequestHeaderV2 {
            a: v1.producer_group,
            b: v1.topic,
            c: v1.default_topic,
            d: v1.default_topic_queue_nums,
            e: v1.queue_id,
            f: v1.sys_flag,
            g: v1.born_timestamp,
            h: v1.flag,
            i: v1.properties,
            j: v1.reconsume_times,
            k: v1.unit_mode,
            l: v1.max_reconsume_times,
            m: v1.batch,
            n: v1.broker_name,
        }
    }
}

impl SendMessageRequestHeader {
    /// Parses the send header of any send request, choosing the field names by request code
    /// (V2 codes use `a`..`n`).
    pub fn from_command(command: &RemotingCommand) -> Result<Self, WireError> {
        match command.code {
            request::SEND_MESSAGE_V2
            | request::SEND_BATCH_MESSAGE
            | request::SEND_REPLY_MESSAGE_V2 => {
                Ok(SendMessageRequestHeaderV2::from_ext_fields(&command.ext_fields)?.into())
            }
            _ => SendMessageRequestHeader::from_ext_fields(&command.ext_fields),
        }
    }

    /// Whether this send carries a batch body (`message::decode_batch`).
    pub fn is_batch(&self) -> bool {
        self.batch.unwrap_or(false)
    }
}

ext_header! {
    /// The answer to a send. `msg_id` is the offset message id (store host + physical offset,
    /// `message::offset_msg_id`); clients report the `UNIQ_KEY` property as the message id.
    pub struct SendMessageResponseHeader {
        required msg_id: String => "msgId",
        required queue_id: i32 => "queueId",
        required queue_offset: i64 => "queueOffset",
        optional transaction_id: String => "transactionId",
        optional batch_uniq_id: String => "batchUniqId",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::header::test_support::assert_round_trip;

    fn v1() -> SendMessageRequestHeader {
        SendMessageRequestHeader {
            producer_group: "pg".into(),
            topic: "TopicA".into(),
            default_topic: "TBW102".into(),
            default_topic_queue_nums: 4,
            queue_id: -1,
            sys_flag: 0,
            born_timestamp: 1_700_000_000_000,
            flag: 0,
            properties: Some("UNIQ_KEY\u{1}ABC\u{2}WAIT\u{1}true\u{2}".into()),
            reconsume_times: Some(0),
            unit_mode: Some(false),
            batch: Some(true),
            max_reconsume_times: Some(16),
            broker_name: Some("broker-a".into()),
        }
    }

    #[test]
    fn round_trips() {
        assert_round_trip(
            &v1(),
            &[
                "producerGroup",
                "topic",
                "defaultTopic",
                "defaultTopicQueueNums",
                "queueId",
                "sysFlag",
                "bornTimestamp",
                "flag",
            ],
        );
        assert_round_trip(
            &SendMessageRequestHeaderV2::from(v1()),
            &["a", "b", "c", "d", "e", "f", "g", "h"],
        );
        assert_round_trip(
            &SendMessageResponseHeader {
                msg_id: "7F00000100002A9F0000000000000000".into(),
                queue_id: 3,
                queue_offset: 42,
                transaction_id: Some("tx".into()),
                batch_uniq_id: None,
            },
            &["msgId", "queueId", "queueOffset"],
        );
        assert_round_trip(&SendMessageRequestHeader::default(), &[]);
    }

    #[test]
    fn v2_names_follow_java() {
        let fields = SendMessageRequestHeaderV2::from(v1()).to_ext_fields();
        assert_eq!(fields["a"], "pg");
        assert_eq!(fields["b"], "TopicA");
        assert_eq!(fields["c"], "TBW102");
        assert_eq!(fields["e"], "-1");
        assert_eq!(fields["l"], "16");
        assert_eq!(fields["m"], "true");
        assert_eq!(fields["n"], "broker-a");
    }

    #[test]
    fn from_command_picks_names_by_code() {
        let v2 = RemotingCommand::new_request(request::SEND_MESSAGE_V2)
            .with_header(&SendMessageRequestHeaderV2::from(v1()));
        assert_eq!(SendMessageRequestHeader::from_command(&v2).unwrap(), v1());
        let batch = RemotingCommand::new_request(request::SEND_BATCH_MESSAGE)
            .with_header(&SendMessageRequestHeaderV2::from(v1()));
        assert!(
            SendMessageRequestHeader::from_command(&batch)
                .unwrap()
                .is_batch()
        );
        let plain = RemotingCommand::new_request(request::SEND_MESSAGE).with_header(&v1());
        assert_eq!(
            SendMessageRequestHeader::from_command(&plain).unwrap(),
            v1()
        );
        let wrong = RemotingCommand::new_request(request::SEND_MESSAGE)
            .with_header(&SendMessageRequestHeaderV2::from(v1()));
        assert!(matches!(
            SendMessageRequestHeader::from_command(&wrong),
            Err(WireError::MissingField {
                field: "producerGroup"
            })
        ));
    }

    #[test]
    fn invalid_numbers_name_the_field() {
        let mut fields = v1().to_ext_fields();
        fields.insert("queueId".into(), "three".into());
        let error = SendMessageRequestHeader::from_ext_fields(&fields).unwrap_err();
        assert!(matches!(
            error,
            WireError::InvalidField {
                field: "queueId",
                ..
            }
        ));
        fields.insert("queueId".into(), "1".into());
        fields.insert("batch".into(), "maybe".into());
        let error = SendMessageRequestHeader::from_ext_fields(&fields).unwrap_err();
        assert!(matches!(
            error,
            WireError::InvalidField { field: "batch", .. }
        ));
    }
}
