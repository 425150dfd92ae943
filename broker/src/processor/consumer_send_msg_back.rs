//! CONSUMER_SEND_MSG_BACK: a consumer failed to process a message and hands it back; it is
//! stored again in `%RETRY%<group>` (which the group's consumers also subscribe to), or in
//! `%DLQ%<group>` once it has been re-consumed `maxReconsumeTimes` times.
//!
//! A retry waits a delay level first, as in RocketMQ: the level the consumer asked for, or
//! when it left that to the broker (0), level 3 + the times it was already re-consumed (10 s,
//! 30 s, 1 m, ... with the default levels). It waits in the schedule topic (see `schedule`).

use std::time::Instant;

use raftmq_protocol::header::client::ConsumerSendMsgBackRequestHeader;
use raftmq_protocol::message::{StoredMessage, property};
use raftmq_protocol::names::{DEFAULT_MAX_RECONSUME_TIMES, dlq_topic, retry_topic};
use raftmq_protocol::{ExtHeader, RemotingCommand, code::response};
use raftmq_remoting::server::ConnectionInfo;

use super::send_message::{MessageFields, destination_of, encode_message, resolve_topic, store};
use crate::batcher::SendRequest;
use crate::context::BrokerContext;
use crate::error::RequestError;
use crate::schedule::FIRST_RETRY_DELAY_LEVEL;

pub(super) async fn handle(
    ctx: &BrokerContext,
    connection: &ConnectionInfo,
    request: &RemotingCommand,
) -> Result<RemotingCommand, RequestError> {
    let started = Instant::now();
    let header = ConsumerSendMsgBackRequestHeader::from_ext_fields(&request.ext_fields)?;
    let physical = u64::try_from(header.offset).map_err(|_| {
        RequestError::InvalidParameter(format!("offset {} is negative", header.offset))
    })?;
    let found = ctx
        .reader
        .read_physical(&ctx.state, physical)
        .await?
        .ok_or_else(|| {
            RequestError::NotFound(format!("no message at physical offset {physical}"))
        })?;
    let (original, _) = StoredMessage::decode(&found.bytes)
        .map_err(|err| RequestError::Internal(format!("stored message does not decode: {err}")))?;

    let reconsume_times = original.reconsume_times.saturating_add(1);
    let max = header
        .max_reconsume_times
        .unwrap_or(DEFAULT_MAX_RECONSUME_TIMES as i32);
    let dead = header.delay_level < 0 || reconsume_times > max;
    let topic = if dead {
        dlq_topic(&header.group)
    } else {
        retry_topic(&header.group)
    };

    let mut properties = original.properties.clone();
    // Where the message came from, kept across every retry.
    properties
        .entry(property::RETRY_TOPIC.to_string())
        .or_insert_with(|| {
            header
                .origin_topic
                .clone()
                .unwrap_or_else(|| original.topic.clone())
        });
    let origin_topic = properties
        .get(property::RETRY_TOPIC)
        .cloned()
        .unwrap_or_else(|| original.topic.clone());
    let origin_id = header
        .origin_msg_id
        .clone()
        .unwrap_or_else(|| original.offset_msg_id());
    properties
        .entry(property::ORIGIN_MESSAGE_ID.to_string())
        .or_insert(origin_id);
    // What an earlier delay left behind must not send this retry elsewhere.
    properties.remove(property::DELAY);
    properties.remove(property::REAL_TOPIC);
    properties.remove(property::REAL_QID);
    if dead {
        properties.insert(
            property::DLQ_ORIGIN_TOPIC.to_string(),
            original.topic.clone(),
        );
    } else {
        let level = if header.delay_level == 0 {
            FIRST_RETRY_DELAY_LEVEL.saturating_add(original.reconsume_times)
        } else {
            header.delay_level
        };
        properties.insert(property::DELAY.to_string(), level.to_string());
    }

    let (_, create_topic) = resolve_topic(ctx, &topic)?;
    let (destination, create_topic) = destination_of(
        ctx,
        crate::schedule::Destination {
            topic: topic.clone(),
            queue_id: 0,
        },
        create_topic,
        &mut properties,
    )
    .await?;
    let message = encode_message(
        ctx,
        connection,
        MessageFields {
            topic: &destination.topic,
            queue_id: destination.queue_id,
            flag: original.flag,
            sys_flag: original.sys_flag,
            born_timestamp: original.born_timestamp,
            reconsume_times,
            body: original.body.clone(),
            properties,
        },
    )?;
    let send = SendRequest {
        topic: destination.topic,
        queue_id: destination.queue_id,
        create_topic,
        messages: vec![message],
    };
    store(ctx, send, started).await?;
    if dead {
        ctx.metrics.sent_to_dlq(&origin_topic, &header.group);
    }
    Ok(request.new_response(response::SUCCESS, None))
}
