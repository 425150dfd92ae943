//! SEND_MESSAGE and SEND_MESSAGE_V2 (the same request with one-letter header names): store one
//! message, answering only once it is committed on a majority and applied.
//!
//! The helpers here are shared by the other requests that store messages (batch sends and
//! messages a consumer sends back for a retry).

use std::time::Instant;

use bytes::{Bytes, BytesMut};
use raftmq_protocol::header::send::{SendMessageRequestHeader, SendMessageResponseHeader};
use raftmq_protocol::message::{StoredMessage, offset_msg_id, properties, property, sys_flag};
use raftmq_protocol::names::{
    DEFAULT_MAX_RECONSUME_TIMES, DLQ_GROUP_TOPIC_PREFIX, RETRY_GROUP_TOPIC_PREFIX, TIMER_TOPIC,
    TRANS_HALF_TOPIC, dlq_topic, now_ms, tags_code,
};
use raftmq_protocol::{ExtHeader, RemotingCommand, WireError, code::response};
use raftmq_remoting::server::ConnectionInfo;

use crate::batcher::{PendingMessage, SendRequest};
use crate::command::{Command, SendOutcome, physical_offset, split_physical_offset};
use crate::context::BrokerContext;
use crate::error::RequestError;
use crate::schedule;
use crate::topic::{AUTO_CREATE_QUEUE_NUMS, TopicConfig, validate_topic_name};
use crate::{timer, transaction};

pub(super) async fn handle(
    ctx: &BrokerContext,
    connection: &ConnectionInfo,
    request: &RemotingCommand,
) -> Result<RemotingCommand, RequestError> {
    let started = Instant::now();
    let header = SendMessageRequestHeader::from_command(request)?;
    let mut topic = header.topic.clone();
    let mut queue_id = header.queue_id;
    let reconsume_times = header.reconsume_times.unwrap_or(0);
    let mut props = properties::parse(header.properties.as_deref().unwrap_or(""));
    // A retry message that failed too often goes to its group's dead-letter topic instead, at
    // once.
    if let Some(group) = topic.strip_prefix(RETRY_GROUP_TOPIC_PREFIX) {
        let max = header
            .max_reconsume_times
            .map_or(DEFAULT_MAX_RECONSUME_TIMES as i32, |m| m);
        if reconsume_times >= max {
            topic = dlq_topic(group);
            queue_id = 0;
            props.remove(property::DELAY);
        }
    }
    let (config, create_topic) = resolve_topic(ctx, &topic)?;
    let queue_id = choose_queue(ctx, &config, queue_id)?;
    check_body(ctx, request.body.len())?;
    // A transaction's half message waits in the half topic, a message with a delay level in
    // the schedule topic, a timer message in the timer topic; the answer still names the queue
    // it will be delivered to, as RocketMQ's does.
    let real = schedule::Destination {
        topic: topic.clone(),
        queue_id,
    };
    let (destination, create_topic, sys_flag) = if is_transaction_half(header.sys_flag, &props) {
        let (destination, create_topic) =
            transaction::divert_half(ctx, real, create_topic, &header.producer_group, &mut props)
                .await?;
        // Stored as RocketMQ stores half messages: without the prepared type.
        let stored_flag =
            transaction::with_transaction_type(header.sys_flag, sys_flag::TRANSACTION_NOT_TYPE);
        (destination, create_topic, stored_flag)
    } else {
        let (destination, create_topic) =
            destination_of(ctx, real, create_topic, &mut props).await?;
        (destination, create_topic, header.sys_flag)
    };
    let message = encode_message(
        ctx,
        connection,
        MessageFields {
            topic: &destination.topic,
            queue_id: destination.queue_id,
            flag: header.flag,
            sys_flag,
            born_timestamp: header.born_timestamp,
            reconsume_times,
            body: request.body.clone(),
            properties: props,
        },
    )?;
    let send = SendRequest {
        topic: destination.topic,
        queue_id: destination.queue_id,
        create_topic,
        messages: vec![message],
    };
    let outcome = store(ctx, send, started).await?;
    Ok(send_response(ctx, request, queue_id, outcome, 1))
}

/// Whether a message is a transaction's half message (RocketMQ's `TRAN_MSG` property, or the
/// prepared bit of its sys flag): it must stay invisible until its producer commits it.
pub(crate) fn is_transaction_half(
    sys_flag: i32,
    properties: &std::collections::BTreeMap<String, String>,
) -> bool {
    let prepared =
        sys_flag & transaction::TRANSACTION_TYPE_MASK == sys_flag::TRANSACTION_PREPARED_TYPE;
    let tran_msg = properties
        .get(property::TRAN_MSG)
        .is_some_and(|value| value.trim().eq_ignore_ascii_case("true"));
    prepared || tran_msg
}

/// Where a send is stored once its delay level (`schedule::divert`) or, without one, its timer
/// properties (`timer::divert`) are considered, and the topic to create with it. A delayed or
/// timer message to a topic that does not exist yet creates that topic now, as RocketMQ's
/// broker does at send time, so that consumers find its route while the message waits; the
/// first delayed message creates the schedule topic (one queue per configured delay level), the
/// first timer message the timer topic.
pub(crate) async fn destination_of(
    ctx: &BrokerContext,
    real: schedule::Destination,
    create_topic: Option<TopicConfig>,
    properties: &mut std::collections::BTreeMap<String, String>,
) -> Result<(schedule::Destination, Option<TopicConfig>), RequestError> {
    let delayed = schedule::divert(
        &ctx.config.delay_levels,
        &real.topic,
        real.queue_id,
        properties,
    );
    let (destination, waiting_topic) = if delayed.topic != real.topic {
        // A delay level wins over timer properties, as in RocketMQ 5.
        for name in [
            property::TIMER_DELIVER_MS,
            property::TIMER_DELAY_SEC,
            property::TIMER_DELAY_MS,
        ] {
            properties.remove(name);
        }
        (
            delayed,
            schedule::schedule_topic_config(&ctx.config.delay_levels),
        )
    } else {
        let timed = timer::divert(
            real.clone(),
            properties,
            now_ms(),
            ctx.config.timer_max_delay,
        )?;
        (timed, timer::timer_topic_config())
    };
    if destination == real {
        return Ok((destination, create_topic));
    }
    if let Some(config) = create_topic {
        ctx.proposer
            .propose(Command::CreateTopicIfMissing(config))
            .await?;
        ctx.register_now.notify_one();
    }
    let create_waiting_topic = ctx
        .state
        .topic(&waiting_topic.name)
        .is_none()
        .then_some(waiting_topic);
    Ok((destination, create_waiting_topic))
}

/// The topic a send goes to: an existing writable one, or one created by this send where that
/// is allowed (retry and dead-letter topics always; others with auto-creation on).
pub(crate) fn resolve_topic(
    ctx: &BrokerContext,
    topic: &str,
) -> Result<(TopicConfig, Option<TopicConfig>), RequestError> {
    validate_topic_name(topic).map_err(|err| RequestError::MessageIllegal(err.to_string()))?;
    if topic == schedule::SCHEDULE_TOPIC || topic == TIMER_TOPIC || topic == TRANS_HALF_TOPIC {
        return Err(RequestError::NoPermission(format!(
            "topic {topic} holds the broker's waiting messages; send with a delay level (DELAY), timer properties (TIMER_DELIVER_MS, TIMER_DELAY_SEC, TIMER_DELAY_MS) or as a transaction (TRAN_MSG) instead"
        )));
    }
    if let Some(config) = ctx.state.topic(topic) {
        if !config.is_writable() {
            return Err(RequestError::NoPermission(format!(
                "topic {topic} is not writable"
            )));
        }
        return Ok((config, None));
    }
    let system =
        topic.starts_with(RETRY_GROUP_TOPIC_PREFIX) || topic.starts_with(DLQ_GROUP_TOPIC_PREFIX);
    if system {
        let config = TopicConfig::new(topic, 1);
        return Ok((config.clone(), Some(config)));
    }
    if ctx.config.auto_create_topic {
        let config = TopicConfig::new(topic, AUTO_CREATE_QUEUE_NUMS);
        return Ok((config.clone(), Some(config)));
    }
    Err(RequestError::TopicNotExist(topic.to_string()))
}

/// The queue a send goes to: the requested one, or round robin when the client let the broker
/// choose (a negative id).
pub(crate) fn choose_queue(
    ctx: &BrokerContext,
    config: &TopicConfig,
    requested: i32,
) -> Result<u32, RequestError> {
    if requested < 0 {
        return Ok(ctx.next_queue(config.write_queue_nums));
    }
    u32::try_from(requested)
        .ok()
        .filter(|id| *id < config.write_queue_nums)
        .ok_or_else(|| {
            RequestError::MessageIllegal(format!(
                "queue id {requested} is illegal: topic {} has {} write queues",
                config.name, config.write_queue_nums
            ))
        })
}

pub(crate) fn check_body(ctx: &BrokerContext, len: usize) -> Result<(), RequestError> {
    if len > ctx.config.max_message_bytes {
        return Err(RequestError::MessageIllegal(format!(
            "message body of {len} bytes is over the {}-byte limit",
            ctx.config.max_message_bytes
        )));
    }
    Ok(())
}

/// What a stored message is made of, before offsets exist.
pub(crate) struct MessageFields<'a> {
    pub topic: &'a str,
    pub queue_id: u32,
    pub flag: i32,
    pub sys_flag: i32,
    pub born_timestamp: i64,
    pub reconsume_times: i32,
    pub body: Bytes,
    pub properties: std::collections::BTreeMap<String, String>,
}

/// Encodes a message in RocketMQ's stored layout with offsets and store time left zero (they are
/// filled in when it is read back).
pub(crate) fn encode_message(
    ctx: &BrokerContext,
    connection: &ConnectionInfo,
    fields: MessageFields<'_>,
) -> Result<PendingMessage, RequestError> {
    let message = StoredMessage {
        queue_id: fields.queue_id as i32,
        flag: fields.flag,
        queue_offset: 0,
        physical_offset: 0,
        sys_flag: fields.sys_flag,
        born_timestamp: fields.born_timestamp,
        born_host: connection.peer,
        store_timestamp: 0,
        store_host: ctx.config.advertise,
        reconsume_times: fields.reconsume_times,
        prepared_transaction_offset: 0,
        body: fields.body,
        topic: fields.topic.to_string(),
        properties: fields.properties,
    };
    pending_message(&message).map_err(|err| RequestError::MessageIllegal(err.to_string()))
}

/// A message in RocketMQ's stored layout, ready to propose: its bytes and its tag's hash.
pub(crate) fn pending_message(message: &StoredMessage) -> Result<PendingMessage, WireError> {
    let tags_code = message
        .properties
        .get(property::TAGS)
        .map_or(0, |tag| tags_code(tag));
    let mut bytes = BytesMut::new();
    message.encode(&mut bytes)?;
    Ok(PendingMessage {
        bytes: bytes.freeze(),
        tags_code,
    })
}

/// Where the messages of one send request were stored.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Stored {
    /// Set when the send was a retry of one stored before (its `UNIQ_KEY` was found): the queue
    /// the first attempt went to, which the answer names instead of the one chosen now.
    pub first_attempt_queue: Option<u32>,
    pub first_offset: u64,
    pub log_index: u64,
    pub first_ordinal: u32,
}

/// Proposes a send and waits for its outcome. A send that created its topic (auto-creation,
/// a first retry or DLQ message) makes the member register with the NameServers at once, as
/// RocketMQ's broker does: until then no client can find a route to the new topic, and a
/// consumer of it waits a whole registration interval (30 s) before it reads anything.
pub(crate) async fn store(
    ctx: &BrokerContext,
    send: SendRequest,
    started: Instant,
) -> Result<Stored, RequestError> {
    let creates_topic = send.create_topic.is_some();
    let topic = send.topic.clone();
    let count = send.messages.len() as u64;
    let bytes: usize = send.messages.iter().map(|m| m.bytes.len()).sum();
    if ctx.config.unsafe_ack_before_commit {
        return Ok(unsafe_ack_before_commit(ctx, send));
    }
    let result = ctx.proposer.send(send).await;
    let elapsed = started.elapsed();
    match result {
        Ok(SendOutcome::Stored {
            first_offset,
            log_index,
            first_ordinal,
        }) => {
            if creates_topic {
                ctx.register_now.notify_one();
            }
            ctx.metrics.observe_send("ok", elapsed);
            ctx.metrics
                .commit_latency_seconds
                .observe(elapsed.as_secs_f64());
            ctx.metrics.messages_in(&topic, count, bytes as u64);
            Ok(Stored {
                first_attempt_queue: None,
                first_offset,
                log_index,
                first_ordinal,
            })
        }
        Ok(SendOutcome::Duplicate(first)) => {
            // Stored before: answer as the first attempt was answered, store nothing.
            ctx.metrics.observe_send("duplicate", elapsed);
            let (log_index, first_ordinal) = split_physical_offset(first.physical);
            Ok(Stored {
                first_attempt_queue: Some(first.queue_id),
                first_offset: first.queue_offset,
                log_index,
                first_ordinal,
            })
        }
        Ok(SendOutcome::Placed { .. }) => Err(RequestError::Internal(
            "the batcher answered a request with a unit's outcome".into(),
        )),
        Ok(SendOutcome::Refused(refusal)) => {
            ctx.metrics.observe_send("refused", elapsed);
            Err(refusal.into())
        }
        Err(err) => {
            let result = match &err {
                crate::batcher::ProposeError::Unknown(_) => "unknown",
                _ => "failed",
            };
            ctx.metrics.observe_send(result, elapsed);
            Err(err.into())
        }
    }
}

/// TEST ONLY (`--unsafe-ack-before-commit`): answers before the message is committed, so that
/// jepsen-lite can show it notices acknowledged messages being lost. The offset is a guess.
fn unsafe_ack_before_commit(ctx: &BrokerContext, send: SendRequest) -> Stored {
    let first_offset = ctx.state.queue(&send.topic, send.queue_id).next_offset;
    let proposer = ctx.proposer.clone();
    ctx.tracker.spawn(async move {
        let _ = proposer.send(send).await;
    });
    Stored {
        first_attempt_queue: None,
        first_offset,
        log_index: 0,
        first_ordinal: 0,
    }
}

/// The SUCCESS answer: the offset message id(s), the queue and the first queue offset.
pub(crate) fn send_response(
    ctx: &BrokerContext,
    request: &RemotingCommand,
    queue_id: u32,
    stored: Stored,
    count: u32,
) -> RemotingCommand {
    let msg_id = (0..count)
        .map(|i| {
            offset_msg_id(
                ctx.config.advertise,
                physical_offset(stored.log_index, stored.first_ordinal + i) as i64,
            )
        })
        .collect::<Vec<_>>()
        .join(",");
    let header = SendMessageResponseHeader {
        msg_id,
        queue_id: stored.first_attempt_queue.unwrap_or(queue_id) as i32,
        queue_offset: stored.first_offset as i64,
        transaction_id: None,
        batch_uniq_id: None,
    };
    let mut response = request.new_response(response::SUCCESS, None);
    response.ext_fields = header.to_ext_fields();
    response
        .ext_fields
        .insert("MSG_REGION".into(), "DefaultRegion".into());
    response.ext_fields.insert("TRACE_ON".into(), "true".into());
    response
}
