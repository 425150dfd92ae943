//! Request dispatch: one table decides how each request code is served, and one file per code
//! holds its header parsing, handling and response. This file only dispatches.

mod ack_message;
mod batch_ack_message;
mod change_invisible_time;
mod check_client_config;
mod consumer_send_msg_back;
mod delete_topic_in_broker;
mod end_transaction;
pub(crate) mod get_all_topic_config;
pub(crate) mod get_broker_runtime_info;
mod get_consumer_list_by_group;
mod get_earliest_msg_storetime;
mod get_max_offset;
mod get_min_offset;
mod heart_beat;
pub(crate) use heart_beat::notify_consumer_ids_changed;
mod lock_batch_mq;
mod notification;
mod pop_message;
mod pull_message;
mod query_consumer_offset;
mod query_message;
mod search_offset_by_timestamp;
mod send_batch_message;
pub mod send_message;
#[cfg(test)]
mod send_pull_tests;
mod unlock_batch_mq;
mod unregister_client;
mod update_and_create_topic;
mod update_consumer_offset;
mod view_message_by_id;

use std::sync::Arc;

use raftmq_protocol::RemotingCommand;
use raftmq_protocol::code::{request, response};
use raftmq_remoting::server::{ConnectionInfo, RequestHandler};
use tracing::{debug, instrument};

use crate::context::BrokerContext;
use crate::error::{RequestError, error_code};

/// How a request is served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// Changes replicated state: only the leader serves it, through Raft.
    Replicated,
    /// Reads applied state: any member serves it.
    Read,
    /// Member-local state (client sessions, queue locks): served where it arrives.
    Local,
}

/// THE table of which requests go through Raft. Handlers never decide this case by case.
pub fn route_of(code: i32) -> Option<Route> {
    use request::*;
    Some(match code {
        SEND_MESSAGE
        | SEND_MESSAGE_V2
        | SEND_BATCH_MESSAGE
        | CONSUMER_SEND_MSG_BACK
        | UPDATE_CONSUMER_OFFSET
        | UPDATE_AND_CREATE_TOPIC
        | DELETE_TOPIC_IN_BROKER
        | END_TRANSACTION
        | POP_MESSAGE
        | ACK_MESSAGE
        | BATCH_ACK_MESSAGE
        | CHANGE_MESSAGE_INVISIBLETIME => Route::Replicated,
        PULL_MESSAGE
        | QUERY_MESSAGE
        | QUERY_CONSUMER_OFFSET
        | GET_MAX_OFFSET
        | GET_MIN_OFFSET
        | SEARCH_OFFSET_BY_TIMESTAMP
        | GET_EARLIEST_MSG_STORETIME
        | VIEW_MESSAGE_BY_ID
        | GET_ALL_TOPIC_CONFIG
        | GET_BROKER_RUNTIME_INFO
        | CHECK_CLIENT_CONFIG
        | NOTIFICATION => Route::Read,
        HEART_BEAT
        | UNREGISTER_CLIENT
        | GET_CONSUMER_LIST_BY_GROUP
        | LOCK_BATCH_MQ
        | UNLOCK_BATCH_MQ => Route::Local,
        _ => return None,
    })
}

/// The broker's remoting request handler.
pub struct BrokerHandler {
    pub ctx: Arc<BrokerContext>,
}

impl RequestHandler for BrokerHandler {
    #[instrument(skip_all, fields(code = request.code, opaque = request.opaque, peer = %connection.peer))]
    async fn handle(
        &self,
        connection: ConnectionInfo,
        request: RemotingCommand,
    ) -> Option<RemotingCommand> {
        let started = std::time::Instant::now();
        // The ACL decides before any processor runs, so a refused request changes nothing.
        let result = match self.ctx.check_remoting_acl(connection.peer.ip(), &request) {
            Ok(()) => dispatch(&self.ctx, &connection, &request).await,
            Err(denial) => Err(RequestError::NoPermission(denial.to_string())),
        };
        let answer = result.unwrap_or_else(|err| {
            let (code, remark) = error_code(&err);
            debug!(code, %remark, "request failed");
            request.new_response(code, Some(remark))
        });
        self.ctx.metrics.observe_rpc(
            request.code,
            answer.code,
            is_long_polling(&request),
            started.elapsed(),
        );
        Some(answer)
    }

    async fn connection_closed(&self, connection: ConnectionInfo) {
        let changed = self.ctx.clients.connection_closed(connection.id.0);
        heart_beat::notify_consumer_ids_changed(&self.ctx, &changed);
    }
}

async fn dispatch(
    ctx: &BrokerContext,
    connection: &ConnectionInfo,
    request: &RemotingCommand,
) -> Result<RemotingCommand, RequestError> {
    let Some(route) = route_of(request.code) else {
        return Ok(request.new_response(
            response::REQUEST_CODE_NOT_SUPPORTED,
            Some(format!(
                "request code {} is not supported by this broker",
                request.code
            )),
        ));
    };
    if route == Route::Replicated {
        ctx.require_leader()?;
    }
    use request::*;
    match request.code {
        SEND_MESSAGE | SEND_MESSAGE_V2 => send_message::handle(ctx, connection, request).await,
        SEND_BATCH_MESSAGE => send_batch_message::handle(ctx, connection, request).await,
        CONSUMER_SEND_MSG_BACK => consumer_send_msg_back::handle(ctx, connection, request).await,
        UPDATE_CONSUMER_OFFSET => update_consumer_offset::handle(ctx, request).await,
        END_TRANSACTION => end_transaction::handle(ctx, request).await,
        POP_MESSAGE => pop_message::handle(ctx, request).await,
        ACK_MESSAGE => ack_message::handle(ctx, request).await,
        BATCH_ACK_MESSAGE => batch_ack_message::handle(ctx, request).await,
        CHANGE_MESSAGE_INVISIBLETIME => change_invisible_time::handle(ctx, request).await,
        NOTIFICATION => notification::handle(ctx, request).await,
        QUERY_MESSAGE => query_message::handle(ctx, request).await,
        UPDATE_AND_CREATE_TOPIC => update_and_create_topic::handle(ctx, request).await,
        DELETE_TOPIC_IN_BROKER => delete_topic_in_broker::handle(ctx, request).await,
        PULL_MESSAGE => pull_message::handle(ctx, connection, request).await,
        QUERY_CONSUMER_OFFSET => query_consumer_offset::handle(ctx, request),
        GET_MAX_OFFSET => get_max_offset::handle(ctx, request),
        GET_MIN_OFFSET => get_min_offset::handle(ctx, request),
        SEARCH_OFFSET_BY_TIMESTAMP => search_offset_by_timestamp::handle(ctx, request),
        GET_EARLIEST_MSG_STORETIME => get_earliest_msg_storetime::handle(ctx, request),
        VIEW_MESSAGE_BY_ID => view_message_by_id::handle(ctx, request).await,
        GET_ALL_TOPIC_CONFIG => get_all_topic_config::handle(ctx, request),
        GET_BROKER_RUNTIME_INFO => get_broker_runtime_info::handle(ctx, request),
        CHECK_CLIENT_CONFIG => check_client_config::handle(request),
        HEART_BEAT => heart_beat::handle(ctx, connection, request),
        UNREGISTER_CLIENT => unregister_client::handle(ctx, request),
        GET_CONSUMER_LIST_BY_GROUP => get_consumer_list_by_group::handle(ctx, request),
        LOCK_BATCH_MQ => lock_batch_mq::handle(ctx, request),
        UNLOCK_BATCH_MQ => unlock_batch_mq::handle(ctx, request),
        other => Err(RequestError::Internal(format!(
            "request code {other} is routed but has no processor"
        ))),
    }
}

/// A pull that may be suspended (RocketMQ's `is_long_polling` label of `rpc_latency`).
fn is_long_polling(request: &RemotingCommand) -> bool {
    if request.code == request::POP_MESSAGE || request.code == request::NOTIFICATION {
        return request
            .ext_fields
            .get("pollTime")
            .and_then(|time| time.parse::<i64>().ok())
            .is_some_and(|time| time > 0);
    }
    request.code == request::PULL_MESSAGE
        && request
            .ext_fields
            .get("sysFlag")
            .and_then(|flag| flag.parse::<i32>().ok())
            .is_some_and(|flag| flag & raftmq_protocol::header::pull_sys_flag::SUSPEND != 0)
}

/// A queue id from a header: it must be in `0..queue_nums`.
fn checked_queue_id(topic: &str, queue_id: i32, queue_nums: u32) -> Result<u32, RequestError> {
    u32::try_from(queue_id)
        .ok()
        .filter(|id| *id < queue_nums)
        .ok_or_else(|| {
            RequestError::InvalidParameter(format!("topic {topic} has no queue {queue_id}"))
        })
}

/// A topic that must exist (reads).
pub(crate) fn existing_topic(
    ctx: &BrokerContext,
    topic: &str,
) -> Result<crate::topic::TopicConfig, RequestError> {
    ctx.state
        .topic(topic)
        .ok_or_else(|| RequestError::TopicNotExist(topic.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_write_goes_through_raft_and_unknown_codes_are_not_routed() {
        for code in [
            request::SEND_MESSAGE,
            request::SEND_MESSAGE_V2,
            request::SEND_BATCH_MESSAGE,
            request::UPDATE_CONSUMER_OFFSET,
            request::UPDATE_AND_CREATE_TOPIC,
            request::DELETE_TOPIC_IN_BROKER,
            request::CONSUMER_SEND_MSG_BACK,
            request::END_TRANSACTION,
            request::POP_MESSAGE,
            request::ACK_MESSAGE,
            request::BATCH_ACK_MESSAGE,
            request::CHANGE_MESSAGE_INVISIBLETIME,
        ] {
            assert_eq!(route_of(code), Some(Route::Replicated), "code {code}");
        }
        assert_eq!(route_of(request::PULL_MESSAGE), Some(Route::Read));
        assert_eq!(route_of(request::HEART_BEAT), Some(Route::Local));
        assert_eq!(route_of(9999), None);
        assert_eq!(route_of(request::REGISTER_BROKER), None);
    }
}
