//! QUERY_DATA_VERSION: a broker asks whether our copy of its topic configs is current
//! (RocketMQ brokers do this before a non-forced registration). Refreshes its liveness.

use raftmq_protocol::RemotingCommand;
use raftmq_protocol::code::response;
use raftmq_protocol::header::{QueryDataVersionRequestHeader, QueryDataVersionResponseHeader};
use raftmq_protocol::route::DataVersion;
use tokio::time::Instant;
use tracing::instrument;

use super::Outcome;
use crate::state::NameServerState;

#[instrument(skip_all)]
pub(super) fn process(state: &NameServerState, request: &RemotingCommand) -> Outcome {
    let header: QueryDataVersionRequestHeader = request.decode_header()?;
    let theirs = DataVersion::decode(&request.body)?;
    let ours = state
        .routes()
        .touch(&header.broker_name, &header.broker_addr, Instant::now());
    let changed = ours.as_ref() != Some(&theirs);
    let mut answer = request
        .new_response(response::SUCCESS, None)
        .with_header(&QueryDataVersionResponseHeader { changed });
    if let Some(ours) = ours {
        answer.body = ours.encode()?.into();
    }
    Ok(answer)
}
