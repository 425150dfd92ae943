//! SendMessage and EndTransaction: a 5.x message becomes a RocketMQ stored message and takes
//! the same path as a remoting send (`processor/send_message.rs`): topic resolution, delay and
//! timer diversion, transaction half messages, the proposal batcher, the dedup window.
//!
//! | 5.x field                     | stored as                                        |
//! |-------------------------------|--------------------------------------------------|
//! | `message_id`                  | `UNIQ_KEY` (a retried send is stored once)        |
//! | `tag`, `keys`                 | `TAGS`, `KEYS` (space separated)                  |
//! | `message_group` (FIFO)        | `__SHARDINGKEY`; the group is hashed to a queue   |
//! | `delivery_timestamp` (DELAY)  | `TIMER_DELIVER_MS`: the timer holds it            |
//! | `message_type = TRANSACTION`  | `TRAN_MSG`, producer group [`GRPC_PRODUCER_GROUP`] |
//! | `user_properties`             | properties of the same names                      |
//!
//! A transaction's id names the group and its half message's physical offset
//! (`broker-a@123456`): the same on every member, so EndTransaction finds the half message on
//! whichever member leads by then.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Instant;

use raftmq_protocol::message::{StoredMessage, property};
use raftmq_protocol::names::java_string_hash;

use super::pb::{self, Code, MessageType};
use super::status;
use crate::batcher::SendRequest;
use crate::command::physical_offset;
use crate::context::BrokerContext;
use crate::error::RequestError;
use crate::processor::send_message::{
    check_body, choose_queue, destination_of, pending_message, resolve_topic, store,
};
use crate::schedule;
use crate::transaction::{self, Decision, Ended};

/// The producer group of every half message a 5.x producer sends: 5.x producers have no
/// group; a check-back goes to a producer publishing the half message's topic instead.
pub const GRPC_PRODUCER_GROUP: &str = "RAFTMQ_GRPC_PRODUCER";
/// Messages one SendMessage may carry.
pub const MAX_MESSAGES_PER_SEND: usize = 1024;

/// Properties the server sets from system properties: a user property may not use them.
const RESERVED_PROPERTIES: [&str; 9] = [
    property::UNIQ_KEY,
    property::TAGS,
    property::KEYS,
    property::SHARDING_KEY,
    property::TIMER_DELIVER_MS,
    property::TRAN_MSG,
    property::PRODUCER_GROUP,
    property::REAL_TOPIC,
    property::REAL_QID,
];

/// A send that failed with a protocol code (not a broker error).
fn refuse(code: Code, message: impl Into<String>) -> pb::SendResultEntry {
    pb::SendResultEntry {
        status: Some(status::status(code, message)),
        ..pb::SendResultEntry::default()
    }
}

/// Sends every message of a request, in order; the answer has one entry per message.
pub async fn send_message(
    ctx: &BrokerContext,
    request: pb::SendMessageRequest,
    peer: Option<SocketAddr>,
) -> pb::SendMessageResponse {
    if request.messages.is_empty() {
        return pb::SendMessageResponse {
            status: Some(status::status(Code::BadRequest, "no message to send")),
            entries: Vec::new(),
        };
    }
    if request.messages.len() > MAX_MESSAGES_PER_SEND {
        return pb::SendMessageResponse {
            status: Some(status::status(
                Code::BadRequest,
                format!("at most {MAX_MESSAGES_PER_SEND} messages per send"),
            )),
            entries: Vec::new(),
        };
    }
    let mut entries = Vec::with_capacity(request.messages.len());
    for message in request.messages {
        entries.push(send_one(ctx, message, peer).await);
    }
    let first = entries[0].status.clone();
    let same = entries.iter().all(|entry| entry.status == first);
    pb::SendMessageResponse {
        status: if same {
            first
        } else {
            Some(status::status(
                Code::MultipleResults,
                "the messages had different results",
            ))
        },
        entries,
    }
}

/// What is decided about a message before it is stored.
struct Prepared {
    topic: String,
    queue_id: u32,
    transaction: bool,
    properties: BTreeMap<String, String>,
    born_timestamp: i64,
    body: bytes::Bytes,
    message_id: String,
}

/// Checks a message and derives its stored properties; a refusal is the entry to answer.
fn prepare(ctx: &BrokerContext, message: pb::Message) -> Result<Prepared, pb::SendResultEntry> {
    let topic = message.topic.map(|topic| topic.name).unwrap_or_default();
    if topic.is_empty() {
        return Err(refuse(Code::IllegalTopic, "the message has no topic"));
    }
    let Some(system) = message.system_properties else {
        return Err(refuse(
            Code::BadRequest,
            "the message has no system properties",
        ));
    };
    if system.message_id.is_empty() {
        return Err(refuse(
            Code::IllegalMessageId,
            "the message has no message id",
        ));
    }
    if message.body.len() > ctx.config.max_message_bytes {
        return Err(refuse(
            Code::MessageBodyTooLarge,
            format!(
                "the body of {} bytes is over the {}-byte limit",
                message.body.len(),
                ctx.config.max_message_bytes
            ),
        ));
    }
    let mut properties = BTreeMap::new();
    for (key, value) in message.user_properties {
        if RESERVED_PROPERTIES.contains(&key.as_str()) || key.is_empty() {
            return Err(refuse(
                Code::IllegalMessagePropertyKey,
                format!("the property name {key:?} is reserved"),
            ));
        }
        properties.insert(key, value);
    }
    properties.insert(property::UNIQ_KEY.to_string(), system.message_id.clone());
    if let Some(tag) = system.tag.filter(|tag| !tag.is_empty()) {
        properties.insert(property::TAGS.to_string(), tag);
    }
    if !system.keys.is_empty() {
        properties.insert(property::KEYS.to_string(), system.keys.join(" "));
    }
    let message_type = MessageType::try_from(system.message_type).unwrap_or(MessageType::Normal);
    let group = system.message_group.filter(|group| !group.is_empty());
    if let Some(group) = &group {
        properties.insert(property::SHARDING_KEY.to_string(), group.clone());
    }
    if let Some(due) = &system.delivery_timestamp {
        let due_ms = timestamp_ms(due);
        properties.insert(property::TIMER_DELIVER_MS.to_string(), due_ms.to_string());
    }
    let transaction = message_type == MessageType::Transaction;
    let (config, _) = resolve_topic(ctx, &topic).map_err(|err| entry_of_error(&err))?;
    // FIFO: every message of a group goes to one queue, so the group's order is the queue's.
    let requested = match &group {
        Some(group) => {
            (java_string_hash(group).unsigned_abs() % config.write_queue_nums.max(1)) as i32
        }
        None => -1,
    };
    let queue_id = choose_queue(ctx, &config, requested).map_err(|err| entry_of_error(&err))?;
    let born_timestamp = system
        .born_timestamp
        .as_ref()
        .map(timestamp_ms)
        .unwrap_or_else(raftmq_protocol::names::now_ms);
    Ok(Prepared {
        topic,
        queue_id,
        transaction,
        properties,
        born_timestamp,
        body: message.body.into(),
        message_id: system.message_id,
    })
}

/// A client's timestamp in Unix milliseconds, saturating: a client may send any seconds and
/// nanos (the fuzzer found `i64::MAX` seconds overflowing the sum).
fn timestamp_ms(timestamp: &prost_types::Timestamp) -> i64 {
    timestamp
        .seconds
        .saturating_mul(1000)
        .saturating_add(i64::from(timestamp.nanos / 1_000_000))
}

fn entry_of_error(error: &RequestError) -> pb::SendResultEntry {
    pb::SendResultEntry {
        status: Some(status::of_error(error)),
        ..pb::SendResultEntry::default()
    }
}

async fn send_one(
    ctx: &BrokerContext,
    message: pb::Message,
    peer: Option<SocketAddr>,
) -> pb::SendResultEntry {
    let started = Instant::now();
    let prepared = match prepare(ctx, message) {
        Ok(prepared) => prepared,
        Err(entry) => return entry,
    };
    let message_id = prepared.message_id.clone();
    let transaction = prepared.transaction;
    match store_prepared(ctx, prepared, peer, started).await {
        Ok((offset, physical)) => pb::SendResultEntry {
            status: Some(status::ok()),
            message_id,
            transaction_id: if transaction {
                transaction_id(&ctx.config.broker_name, physical)
            } else {
                String::new()
            },
            offset: offset as i64,
            recall_handle: String::new(),
        },
        Err(err) => entry_of_error(&err),
    }
}

/// Stores a checked message; returns its queue offset and physical offset.
async fn store_prepared(
    ctx: &BrokerContext,
    prepared: Prepared,
    peer: Option<SocketAddr>,
    started: Instant,
) -> Result<(u64, u64), RequestError> {
    check_body(ctx, prepared.body.len())?;
    let (_, create_topic) = resolve_topic(ctx, &prepared.topic)?;
    let mut properties = prepared.properties;
    let real = schedule::Destination {
        topic: prepared.topic.clone(),
        queue_id: prepared.queue_id,
    };
    let (destination, create_topic) = if prepared.transaction {
        properties.insert(property::TRAN_MSG.to_string(), "true".to_string());
        transaction::divert_half(
            ctx,
            real,
            create_topic,
            GRPC_PRODUCER_GROUP,
            &mut properties,
        )
        .await?
    } else {
        destination_of(ctx, real, create_topic, &mut properties).await?
    };
    let stored = StoredMessage {
        queue_id: destination.queue_id as i32,
        flag: 0,
        queue_offset: 0,
        physical_offset: 0,
        sys_flag: 0,
        born_timestamp: prepared.born_timestamp,
        born_host: peer.unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0))),
        store_timestamp: 0,
        store_host: ctx.config.advertise,
        reconsume_times: 0,
        prepared_transaction_offset: 0,
        body: prepared.body,
        topic: destination.topic.clone(),
        properties,
    };
    let pending =
        pending_message(&stored).map_err(|err| RequestError::MessageIllegal(err.to_string()))?;
    let send = SendRequest {
        topic: destination.topic,
        queue_id: destination.queue_id,
        create_topic,
        messages: vec![pending],
    };
    let stored = store(ctx, send, started).await?;
    Ok((
        stored.first_offset,
        physical_offset(stored.log_index, stored.first_ordinal),
    ))
}

/// Commits or rolls back a transaction (after the producer's local transaction, or answering
/// a check-back). Ending one that has ended already is OK: a retried end must not fail.
pub async fn end_transaction(
    ctx: &BrokerContext,
    request: pb::EndTransactionRequest,
) -> pb::EndTransactionResponse {
    let answer = |status| pb::EndTransactionResponse {
        status: Some(status),
    };
    let decision = match pb::TransactionResolution::try_from(request.resolution) {
        Ok(pb::TransactionResolution::Commit) => Decision::Commit,
        Ok(pb::TransactionResolution::Rollback) => Decision::Rollback,
        _ => {
            return answer(status::status(
                Code::BadRequest,
                "the resolution must be COMMIT or ROLLBACK",
            ));
        }
    };
    let half = match parse_transaction_id(&ctx.config.broker_name, &request.transaction_id) {
        Some(half) => half,
        None => {
            return answer(status::status(
                Code::InvalidTransactionId,
                format!(
                    "{:?} is not a transaction id of this broker",
                    request.transaction_id
                ),
            ));
        }
    };
    match transaction::end(ctx, half, GRPC_PRODUCER_GROUP, decision).await {
        Ok(Ended::Done) => answer(status::ok()),
        Ok(Ended::NotPending) => {
            answer(status::status(Code::Ok, "the transaction had ended before"))
        }
        Err(err) => answer(status::of_error(&err)),
    }
}

/// The id of the transaction whose half message is at `half` in group `broker_name`.
pub fn transaction_id(broker_name: &str, half: u64) -> String {
    format!("{broker_name}@{half}")
}

/// The half message's physical offset in a transaction id of this group.
pub fn parse_transaction_id(broker_name: &str, id: &str) -> Option<u64> {
    let (group, half) = id.rsplit_once('@')?;
    if group != broker_name || half.is_empty() || !half.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    half.parse().ok()
}

/// A stored message as a 5.x message (for a check-back): the system properties from the
/// stored ones, the rest as user properties.
pub fn message_of(stored: &StoredMessage, topic: &str) -> pb::Message {
    let mut user_properties = BTreeMap::new();
    for (key, value) in &stored.properties {
        if !RESERVED_PROPERTIES.contains(&key.as_str()) && key != property::TRANSACTION_ID {
            user_properties.insert(key.clone(), value.clone());
        }
    }
    let timestamp = |ms: i64| prost_types::Timestamp {
        seconds: ms.div_euclid(1000),
        nanos: (ms.rem_euclid(1000) * 1_000_000) as i32,
    };
    pb::Message {
        topic: Some(pb::Resource {
            resource_namespace: String::new(),
            name: topic.to_string(),
        }),
        user_properties: user_properties.into_iter().collect(),
        system_properties: Some(pb::SystemProperties {
            tag: stored.properties.get(property::TAGS).cloned(),
            keys: stored
                .properties
                .get(property::KEYS)
                .map(|keys| keys.split(' ').map(str::to_string).collect())
                .unwrap_or_default(),
            message_id: stored
                .properties
                .get(property::UNIQ_KEY)
                .cloned()
                .unwrap_or_default(),
            body_digest: Some(pb::Digest {
                r#type: pb::DigestType::Md5 as i32,
                checksum: md5_hex(&stored.body),
            }),
            body_encoding: pb::Encoding::Identity as i32,
            message_type: MessageType::Transaction as i32,
            born_timestamp: Some(timestamp(stored.born_timestamp)),
            born_host: stored.born_host.ip().to_string(),
            store_timestamp: Some(timestamp(stored.store_timestamp)),
            store_host: stored.store_host.to_string(),
            queue_id: stored.queue_id,
            queue_offset: Some(stored.queue_offset),
            message_group: stored.properties.get(property::SHARDING_KEY).cloned(),
            ..pb::SystemProperties::default()
        }),
        body: stored.body.to_vec(),
    }
}

/// The MD5 of a body in uppercase hex, as the proxy computes `body_digest` (RocketMQ's
/// `UtilAll.bytes2string`); the Python client compares it with its own uppercase digest and
/// drops a message whose digest differs.
pub fn md5_hex(body: &[u8]) -> String {
    use md5::Digest as _;
    let digest = md5::Md5::digest(body);
    digest.iter().map(|byte| format!("{byte:02X}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transaction_ids_round_trip_and_name_their_group() {
        let id = transaction_id("broker-a", 123_456);
        assert_eq!(id, "broker-a@123456");
        assert_eq!(parse_transaction_id("broker-a", &id), Some(123_456));
        assert_eq!(parse_transaction_id("broker-b", &id), None);
        for bad in [
            "",
            "@",
            "broker-a@",
            "broker-a@-1",
            "broker-a@1x",
            "123",
            "broker-a@99999999999999999999",
        ] {
            assert_eq!(parse_transaction_id("broker-a", bad), None, "{bad:?}");
        }
    }

    #[test]
    fn md5_is_uppercase_hex() {
        assert_eq!(md5_hex(b""), "D41D8CD98F00B204E9800998ECF8427E");
        assert_eq!(md5_hex(b"hello"), "5D41402ABC4B2A76B9719D911017C592");
    }
}
