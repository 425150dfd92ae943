//! DELETE_KV_CONFIG.

use raftmq_protocol::RemotingCommand;
use raftmq_protocol::code::response;
use raftmq_protocol::header::KvConfigKeyRequestHeader;
use tracing::instrument;

use super::Outcome;
use crate::state::NameServerState;

#[instrument(skip_all)]
pub(super) fn process(state: &NameServerState, request: &RemotingCommand) -> Outcome {
    let header: KvConfigKeyRequestHeader = request.decode_header()?;
    state.kv().delete(&header.namespace, &header.key);
    Ok(request.new_response(response::SUCCESS, None))
}
