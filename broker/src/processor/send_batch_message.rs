//! SEND_BATCH_MESSAGE: store a batch of messages to one queue, all in one Raft entry, with
//! consecutive offsets. The answer carries every message's offset message id, comma-separated.

use std::time::Instant;

use raftmq_protocol::RemotingCommand;
use raftmq_protocol::header::send::SendMessageRequestHeader;
use raftmq_protocol::message::decode_batch;
use raftmq_remoting::server::ConnectionInfo;

use super::send_message::{
    MessageFields, check_body, choose_queue, encode_message, is_transaction_half, resolve_topic,
    send_response, store,
};
use crate::batcher::{MAX_BATCH_MESSAGES, SendRequest};
use crate::context::BrokerContext;
use crate::error::RequestError;
use crate::schedule;

pub(super) async fn handle(
    ctx: &BrokerContext,
    connection: &ConnectionInfo,
    request: &RemotingCommand,
) -> Result<RemotingCommand, RequestError> {
    let started = Instant::now();
    let header = SendMessageRequestHeader::from_command(request)?;
    let batch = decode_batch(&request.body)
        .map_err(|err| RequestError::MessageIllegal(format!("batch body: {err}")))?;
    if batch.is_empty() {
        return Err(RequestError::MessageIllegal("empty batch".into()));
    }
    if batch.len() > MAX_BATCH_MESSAGES {
        return Err(RequestError::MessageIllegal(format!(
            "a batch holds at most {MAX_BATCH_MESSAGES} messages, got {}",
            batch.len()
        )));
    }
    // RocketMQ limits the whole batch like one message.
    check_body(ctx, request.body.len())?;
    let (config, create_topic) = resolve_topic(ctx, &header.topic)?;
    let queue_id = choose_queue(ctx, &config, header.queue_id)?;
    let mut messages = Vec::with_capacity(batch.len());
    for message in batch {
        // RocketMQ's clients refuse to batch delayed messages; one that arrives anyway is
        // refused rather than delivered early.
        if is_transaction_half(header.sys_flag, &message.properties) {
            return Err(RequestError::MessageIllegal(
                "a batch cannot hold transactional messages (TRAN_MSG); send them one by one"
                    .into(),
            ));
        }
        if schedule::requested_level(&message.properties) > 0 {
            return Err(RequestError::MessageIllegal(
                "a batch cannot hold delayed messages (DELAY property); send them one by one"
                    .into(),
            ));
        }
        messages.push(encode_message(
            ctx,
            connection,
            MessageFields {
                topic: &header.topic,
                queue_id,
                flag: message.flag,
                sys_flag: header.sys_flag,
                born_timestamp: header.born_timestamp,
                reconsume_times: header.reconsume_times.unwrap_or(0),
                body: message.body,
                properties: message.properties,
            },
        )?);
    }
    let count = messages.len() as u32;
    let send = SendRequest {
        topic: header.topic.clone(),
        queue_id,
        create_topic,
        messages,
    };
    let stored = store(ctx, send, started).await?;
    Ok(send_response(ctx, request, queue_id, stored, count))
}
