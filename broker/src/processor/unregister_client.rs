//! UNREGISTER_CLIENT: a client shuts down and leaves its groups.

use raftmq_protocol::header::client::UnregisterClientRequestHeader;
use raftmq_protocol::{ExtHeader, RemotingCommand, code::response};

use super::heart_beat::notify_consumer_ids_changed;
use crate::context::BrokerContext;
use crate::error::RequestError;

pub(super) fn handle(
    ctx: &BrokerContext,
    request: &RemotingCommand,
) -> Result<RemotingCommand, RequestError> {
    let header = UnregisterClientRequestHeader::from_ext_fields(&request.ext_fields)?;
    let changed = ctx.clients.unregister(
        &header.client_id,
        header.producer_group.as_deref(),
        header.consumer_group.as_deref(),
    );
    notify_consumer_ids_changed(ctx, &changed);
    Ok(request.new_response(response::SUCCESS, None))
}
