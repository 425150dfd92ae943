//! GET_KV_CONFIG: QUERY_NOT_FOUND when absent, as RocketMQ.

use raftmq_protocol::RemotingCommand;
use raftmq_protocol::code::response;
use raftmq_protocol::header::{GetKvConfigResponseHeader, KvConfigKeyRequestHeader};
use tracing::instrument;

use super::Outcome;
use crate::state::NameServerState;

#[instrument(skip_all)]
pub(super) fn process(state: &NameServerState, request: &RemotingCommand) -> Outcome {
    let header: KvConfigKeyRequestHeader = request.decode_header()?;
    let value = state
        .kv()
        .get(&header.namespace, &header.key)
        .map(str::to_owned);
    Ok(match value {
        Some(value) => request
            .new_response(response::SUCCESS, None)
            .with_header(&GetKvConfigResponseHeader { value: Some(value) }),
        None => request.new_response(
            response::QUERY_NOT_FOUND,
            Some(format!(
                "No config item, Namespace: {} Key: {}",
                header.namespace, header.key
            )),
        ),
    })
}
