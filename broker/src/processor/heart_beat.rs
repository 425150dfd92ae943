//! HEART_BEAT: a client says who it is and which producer and consumer groups it has. Kept per
//! member (not replicated). On the leader, a consumer group seen for the first time gets its
//! subscription-group config and its `%RETRY%` topic created through Raft, in the background.

use std::time::Instant;

use raftmq_protocol::body::HeartbeatData;
use raftmq_protocol::code::{request as request_code, response};
use raftmq_protocol::header::client::NotifyConsumerIdsChangedRequestHeader;
use raftmq_protocol::names::retry_topic;
use raftmq_protocol::{ExtHeader, RemotingCommand};
use raftmq_remoting::server::ConnectionInfo;
use tracing::debug;

use crate::command::Command;
use crate::context::BrokerContext;
use crate::error::RequestError;
use crate::topic::{GroupConfig, TopicConfig};

pub(super) fn handle(
    ctx: &BrokerContext,
    connection: &ConnectionInfo,
    request: &RemotingCommand,
) -> Result<RemotingCommand, RequestError> {
    let data = HeartbeatData::decode(&request.body)?;
    let changed = ctx
        .clients
        .heartbeat(
            connection.id.0,
            Some(connection.handle()),
            &data,
            Instant::now(),
        )
        .map_err(|err| RequestError::InvalidParameter(err.to_string()))?;
    notify_consumer_ids_changed(ctx, &changed);
    if ctx.leadership.is_leader() {
        for consumer in &data.consumer_data_set {
            ensure_group(ctx, &consumer.group_name);
        }
    }
    Ok(request.new_response(response::SUCCESS, None))
}

/// Creates a consumer group's config and retry topic if they do not exist yet.
fn ensure_group(ctx: &BrokerContext, group: &str) {
    let mut commands = Vec::new();
    if ctx.state.group(group).is_none() {
        commands.push(Command::UpsertGroup(GroupConfig::new(group)));
    }
    let retry = retry_topic(group);
    if ctx.state.topic(&retry).is_none() {
        commands.push(Command::UpsertTopic(TopicConfig::new(retry, 1)));
    }
    if commands.is_empty() {
        return;
    }
    let proposer = ctx.proposer.clone();
    let register_now = ctx.register_now.clone();
    ctx.tracker.spawn(async move {
        for command in commands {
            if let Err(err) = proposer.propose(command).await {
                debug!(error = %err, "creating a consumer group's config failed; the next heartbeat retries");
                return;
            }
        }
        register_now.notify_one();
    });
}

/// Tells every consumer of the changed groups to rebalance now (oneway, best effort: consumers
/// also rebalance every 20 s).
pub(crate) fn notify_consumer_ids_changed(ctx: &BrokerContext, groups: &[String]) {
    for group in groups {
        let header = NotifyConsumerIdsChangedRequestHeader {
            consumer_group: group.clone(),
        };
        let mut notice =
            RemotingCommand::new_request(request_code::NOTIFY_CONSUMER_IDS_CHANGED).into_oneway();
        notice.ext_fields = header.to_ext_fields();
        for handle in ctx.clients.consumer_handles(group) {
            if let Err(err) = handle.try_send(&notice) {
                debug!(error = %err, %group, "could not notify a consumer of a group change");
            }
        }
    }
}
