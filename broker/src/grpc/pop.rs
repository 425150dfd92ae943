//! POP consumption over gRPC: ReceiveMessage, AckMessage, ChangeInvisibleDuration and
//! ForwardMessageToDeadLetterQueue on top of [`crate::pop`]. Every one runs on the leader; a
//! follower forwards the call ([`super::forward`]).
//!
//! - ReceiveMessage answers, as the proxy does, Status OK, the messages, then
//!   `delivery_timestamp`; an empty poll is one Status MESSAGE_NOT_FOUND. The answer is built
//!   whole (at most [`crate::pop::MAX_POP_MESSAGES`] messages, about
//!   [`crate::pop::MAX_POP_BYTES`]) and then streamed: a follower forwarding it collects the
//!   leader's stream and replays it, so a receive is retried across a leader change exactly as a
//!   send is (a pop whose answer was lost only leaves its messages invisible until their
//!   invisible time ends, when they are handed out again).
//! - A receive pops from every readable queue of the topic, whichever queue the request names
//!   (RocketMQ's proxy uses only its broker name): a client that picks an empty queue still
//!   gets what another queue holds, rather than waiting out its long poll.
//! - The long poll ends [`REPLY_MARGIN`] before the call's deadline, so the client gets an
//!   answer rather than DEADLINE_EXCEEDED.
//! - `auto_renew` (PushConsumer): the proxy keeps such a message invisible by renewing it in the
//!   background until it is acked or changed. Here it is popped invisible for
//!   [`AUTO_RENEW_INVISIBLE`] and not renewed: a consumer acks, or on failure asks for its
//!   backoff with ChangeInvisibleDuration, well within that time; a consumer that dies holding it
//!   sees it redelivered after it. A handler running longer than that sees a redelivery.
//! - FIFO: the broker's group config has no orderly flag; a receive is orderly when the
//!   client's Settings on this member's Telemetry stream say `subscription.fifo` for the group.
//!   A forwarding follower tells the leader with [`FIFO_HEADER`].

use std::time::Duration;

use raftmq_protocol::message::{StoredMessage, property};
use tokio::time::Instant;

use super::pb::{self, Code, receive_message_response::Content};
use super::{send, settings, status};
use crate::context::BrokerContext;
use crate::error::RequestError;
use crate::filter::{EXPRESSION_TYPE_SQL92, MessageFilter};
use crate::pop::{self, PopRequest, ReceiptHandle};

/// A receive's long poll ends this long before the call's deadline.
pub const REPLY_MARGIN: Duration = Duration::from_millis(500);
/// How long a message received with `auto_renew` stays invisible (see the module docs): the
/// proxy's default invisible time. A delivery whose answer was lost in a failover comes back
/// after it.
pub const AUTO_RENEW_INVISIBLE: Duration = Duration::from_secs(60);
/// Set by a follower forwarding a receive of an orderly (FIFO) group.
pub const FIFO_HEADER: &str = "x-raftmq-fifo";

fn name_of(resource: Option<&pb::Resource>) -> &str {
    resource.map_or("", |resource| resource.name.as_str())
}

fn millis(duration: Option<&prost_types::Duration>) -> Option<u64> {
    let duration = duration?;
    if duration.seconds < 0 || duration.nanos < 0 {
        return Some(0);
    }
    Some(
        (duration.seconds as u64)
            .saturating_mul(1000)
            .saturating_add(duration.nanos as u64 / 1_000_000),
    )
}

fn timestamp(ms: i64) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: ms.div_euclid(1000),
        nanos: (ms.rem_euclid(1000) * 1_000_000) as i32,
    }
}

fn status_only(status: pb::Status) -> Vec<pb::ReceiveMessageResponse> {
    vec![pb::ReceiveMessageResponse {
        content: Some(Content::Status(status)),
    }]
}

/// The status of a receive's answer (its first item).
// `forward::write` reads the status of the answer type itself, here a `Vec`.
#[allow(clippy::ptr_arg)]
pub fn receive_status(answer: &Vec<pb::ReceiveMessageResponse>) -> Option<&pb::Status> {
    match answer.first()?.content.as_ref()? {
        Content::Status(status) => Some(status),
        _ => None,
    }
}

/// Serves a receive here (on the leader), answering by `deadline`.
pub async fn receive(
    ctx: &BrokerContext,
    request: pb::ReceiveMessageRequest,
    fifo: bool,
    deadline: Instant,
) -> Vec<pb::ReceiveMessageResponse> {
    let group = name_of(request.group.as_ref());
    let queue = request.message_queue.as_ref();
    let topic = name_of(queue.and_then(|queue| queue.topic.as_ref()));
    if group.is_empty() {
        return status_only(status::status(
            Code::IllegalConsumerGroup,
            "the consumer group is missing",
        ));
    }
    if topic.is_empty() {
        return status_only(status::status(Code::IllegalTopic, "the topic is missing"));
    }
    let filter = match request.filter_expression.as_ref() {
        None => MessageFilter::all(),
        Some(expression) => {
            let kind =
                (expression.r#type == pb::FilterType::Sql as i32).then_some(EXPRESSION_TYPE_SQL92);
            match MessageFilter::parse(kind, &expression.expression) {
                Ok(filter) => filter,
                Err(err) => {
                    return status_only(status::status(
                        Code::IllegalFilterExpression,
                        err.to_string(),
                    ));
                }
            }
        }
    };
    let invisible_ms = if request.auto_renew {
        AUTO_RENEW_INVISIBLE.as_millis() as u64
    } else {
        match millis(request.invisible_duration.as_ref()) {
            Some(ms) if (pop::MIN_INVISIBLE_MS..=pop::MAX_INVISIBLE_MS).contains(&ms) => ms,
            _ => {
                return status_only(status::status(
                    Code::IllegalInvisibleTime,
                    format!(
                        "the invisible duration must be {} ms to {} ms",
                        pop::MIN_INVISIBLE_MS,
                        pop::MAX_INVISIBLE_MS
                    ),
                ));
            }
        }
    };
    // Every readable queue of the topic in this group, whichever queue the client named: as
    // RocketMQ's proxy does (it picks the broker by the queue's broker name and pops queue -1).
    // A SimpleConsumer names a queue per receive (the Python client a random one each time);
    // honouring it left each receive of an empty queue waiting out its whole long poll while
    // the one queue still holding messages was drained only when chosen, so the tail of that
    // queue looked stalled (issue 15).
    let pop_request = PopRequest {
        group,
        topic,
        queue_id: None,
        max_messages: usize::try_from(request.batch_size).unwrap_or(1).max(1),
        invisible_ms,
        filter: &filter,
        fifo,
        init_from_end: false,
    };
    let wait = settings::long_polling(request.long_polling_timeout.as_ref()).min(
        deadline
            .saturating_duration_since(Instant::now())
            .saturating_sub(REPLY_MARGIN),
    );
    let popped = match pop::pop_or_wait(ctx, &pop_request, wait).await {
        Ok(popped) => popped,
        Err(err) => return status_only(status::of_error(&err)),
    };
    if popped.messages.is_empty() {
        return status_only(status::status(
            Code::MessageNotFound,
            "no new message for now",
        ));
    }
    let mut answer = Vec::with_capacity(popped.messages.len() + 2);
    answer.push(pb::ReceiveMessageResponse {
        content: Some(Content::Status(status::ok())),
    });
    for message in &popped.messages {
        match message_of(message) {
            Ok(message) => answer.push(pb::ReceiveMessageResponse {
                content: Some(Content::Message(message)),
            }),
            // A message that cannot be decoded stays in flight and is dead-lettered after its
            // attempts; the rest of the batch is still delivered.
            Err(err) => tracing::warn!(error = %err, "a popped message could not be decoded"),
        }
    }
    answer.push(pb::ReceiveMessageResponse {
        content: Some(Content::DeliveryTimestamp(timestamp(popped.pop_ms))),
    });
    answer
}

/// A popped message as a 5.x message.
fn message_of(popped: &pop::PoppedMessage) -> Result<pb::Message, RequestError> {
    let (stored, _) = StoredMessage::decode(&popped.message)
        .map_err(|err| RequestError::Internal(format!("stored message: {err}")))?;
    let mut message = send::message_of(&stored, &stored.topic);
    let message_type = if stored.properties.contains_key(property::SHARDING_KEY) {
        pb::MessageType::Fifo
    } else if stored.properties.contains_key(property::TIMER_DELIVER_MS) {
        pb::MessageType::Delay
    } else if stored.properties.contains_key(property::TRAN_MSG) {
        pb::MessageType::Transaction
    } else {
        pb::MessageType::Normal
    };
    if let Some(system) = message.system_properties.as_mut() {
        system.message_type = message_type as i32;
        system.receipt_handle = Some(popped.handle.encode());
        system.delivery_attempt = Some(i32::try_from(popped.attempt).unwrap_or(i32::MAX));
        system.invisible_duration = Some(prost_types::Duration {
            seconds: (popped.handle.invisible_ms / 1000) as i64,
            nanos: ((popped.handle.invisible_ms % 1000) * 1_000_000) as i32,
        });
        system.queue_id = i32::try_from(popped.queue_id).unwrap_or(i32::MAX);
        system.queue_offset = Some(i64::try_from(popped.offset).unwrap_or(i64::MAX));
        if let Some(due) = stored
            .properties
            .get(property::TIMER_DELIVER_MS)
            .and_then(|due| due.parse::<i64>().ok())
        {
            system.delivery_timestamp = Some(timestamp(due));
        }
    }
    Ok(message)
}

fn parse_handle(text: &str) -> Result<ReceiptHandle, RequestError> {
    ReceiptHandle::parse(text).map_err(RequestError::ReceiptHandle)
}

/// AckMessage: one result per entry; the call's status is OK when every entry is, the common
/// code when all failed alike, MULTIPLE_RESULTS otherwise.
pub async fn ack(ctx: &BrokerContext, request: pb::AckMessageRequest) -> pb::AckMessageResponse {
    let group = name_of(request.group.as_ref());
    if group.is_empty() {
        return pb::AckMessageResponse {
            status: Some(status::status(
                Code::IllegalConsumerGroup,
                "the consumer group is missing",
            )),
            entries: Vec::new(),
        };
    }
    let parsed: Vec<Result<ReceiptHandle, RequestError>> = request
        .entries
        .iter()
        .map(|entry| parse_handle(&entry.receipt_handle))
        .collect();
    let handles: Vec<ReceiptHandle> = parsed
        .iter()
        .filter_map(|h| h.as_ref().ok())
        .cloned()
        .collect();
    let mut outcomes = match pop::ack_batch(ctx, group, &handles).await {
        Ok(outcomes) => outcomes.into_iter(),
        Err(err) => {
            return pb::AckMessageResponse {
                status: Some(status::of_error(&err)),
                entries: Vec::new(),
            };
        }
    };
    let entries: Vec<pb::AckMessageResultEntry> = request
        .entries
        .into_iter()
        .zip(parsed)
        .map(|(entry, parsed)| {
            let outcome = match parsed {
                Ok(_) => outcomes.next().unwrap_or_else(|| {
                    Err(RequestError::Internal("an ack was not answered".into()))
                }),
                Err(err) => Err(err),
            };
            pb::AckMessageResultEntry {
                message_id: entry.message_id,
                receipt_handle: entry.receipt_handle,
                status: Some(match outcome {
                    Ok(()) => status::ok(),
                    Err(err) => status::of_error(&err),
                }),
            }
        })
        .collect();
    let codes: Vec<i32> = entries
        .iter()
        .map(|entry| entry.status.as_ref().map_or(0, |status| status.code))
        .collect();
    let overall = match codes.first() {
        None => status::ok(),
        Some(first) if codes.iter().all(|code| code == first) => {
            entries[0].status.clone().unwrap_or_else(status::ok)
        }
        Some(_) => status::status(Code::MultipleResults, "some entries failed"),
    };
    pb::AckMessageResponse {
        status: Some(overall),
        entries,
    }
}

/// ChangeInvisibleDuration: the new handle, the old one is stale from now.
pub async fn change_invisible(
    ctx: &BrokerContext,
    request: pb::ChangeInvisibleDurationRequest,
) -> pb::ChangeInvisibleDurationResponse {
    let refused = |status| pb::ChangeInvisibleDurationResponse {
        status: Some(status),
        receipt_handle: String::new(),
    };
    let group = name_of(request.group.as_ref());
    if group.is_empty() {
        return refused(status::status(
            Code::IllegalConsumerGroup,
            "the consumer group is missing",
        ));
    }
    let Some(invisible_ms) =
        millis(request.invisible_duration.as_ref()).filter(|ms| *ms <= pop::MAX_INVISIBLE_MS)
    else {
        return refused(status::status(
            Code::IllegalInvisibleTime,
            format!(
                "the invisible duration must be given, at most {} ms",
                pop::MAX_INVISIBLE_MS
            ),
        ));
    };
    let handle = match parse_handle(&request.receipt_handle) {
        Ok(handle) => handle,
        Err(err) => return refused(status::of_error(&err)),
    };
    match pop::change_invisible(ctx, group, &handle, invisible_ms).await {
        Ok(handle) => pb::ChangeInvisibleDurationResponse {
            status: Some(status::ok()),
            receipt_handle: handle.encode(),
        },
        Err(err) => refused(status::of_error(&err)),
    }
}

/// ForwardMessageToDeadLetterQueue: the delivery's message to `%DLQ%<group>`, out of flight.
pub async fn forward_to_dlq(
    ctx: &BrokerContext,
    request: pb::ForwardMessageToDeadLetterQueueRequest,
) -> pb::ForwardMessageToDeadLetterQueueResponse {
    let answer = |status| pb::ForwardMessageToDeadLetterQueueResponse {
        status: Some(status),
    };
    let group = name_of(request.group.as_ref());
    if group.is_empty() {
        return answer(status::status(
            Code::IllegalConsumerGroup,
            "the consumer group is missing",
        ));
    }
    let outcome = match parse_handle(&request.receipt_handle) {
        Ok(handle) => pop::forward_to_dlq(ctx, group, &handle).await,
        Err(err) => Err(err),
    };
    answer(match outcome {
        Ok(()) => status::ok(),
        Err(err) => status::of_error(&err),
    })
}

/// Whether a receive of `group` by the client whose call this is must be orderly: a forwarded
/// call says so in [`FIFO_HEADER`], a client's own call in its Settings here.
pub fn fifo_of(ctx: &BrokerContext, metadata: &tonic::metadata::MetadataMap, group: &str) -> bool {
    if super::forward::is_forwarded(metadata) {
        return metadata.contains_key(FIFO_HEADER);
    }
    metadata
        .get(super::CLIENT_ID_HEADER)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|client_id| ctx.telemetry.fifo(client_id, group))
}
