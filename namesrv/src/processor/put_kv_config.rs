//! PUT_KV_CONFIG.

use raftmq_protocol::RemotingCommand;
use raftmq_protocol::code::response;
use raftmq_protocol::header::PutKvConfigRequestHeader;
use tracing::instrument;

use super::Outcome;
use crate::state::NameServerState;

#[instrument(skip_all)]
pub(super) fn process(state: &NameServerState, request: &RemotingCommand) -> Outcome {
    let header: PutKvConfigRequestHeader = request.decode_header()?;
    state
        .kv()
        .put(&header.namespace, &header.key, &header.value)?;
    Ok(request.new_response(response::SUCCESS, None))
}
