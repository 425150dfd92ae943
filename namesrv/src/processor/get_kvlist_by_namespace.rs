//! GET_KVLIST_BY_NAMESPACE: QUERY_NOT_FOUND for an empty namespace, as RocketMQ.

use raftmq_protocol::RemotingCommand;
use raftmq_protocol::body::KvTable;
use raftmq_protocol::code::response;
use raftmq_protocol::header::GetKvListByNamespaceRequestHeader;
use tracing::instrument;

use super::Outcome;
use crate::state::NameServerState;

#[instrument(skip_all)]
pub(super) fn process(state: &NameServerState, request: &RemotingCommand) -> Outcome {
    let header: GetKvListByNamespaceRequestHeader = request.decode_header()?;
    let table = state.kv().namespace(&header.namespace).cloned();
    Ok(match table {
        Some(table) => request
            .new_response(response::SUCCESS, None)
            .with_body(KvTable { table }.encode()?),
        None => request.new_response(
            response::QUERY_NOT_FOUND,
            Some(format!("No config item, Namespace: {}", header.namespace)),
        ),
    })
}
