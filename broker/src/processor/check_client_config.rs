//! CHECK_CLIENT_CONFIG: before it consumes, a consumer with an SQL92 subscription asks whether
//! the broker can serve it. An expression that does not parse, or uses what RocketMQ's grammar
//! lacks, is refused here with SUBSCRIPTION_PARSE_FAILED and the reason.

use raftmq_protocol::body::CheckClientRequestBody;
use raftmq_protocol::{RemotingCommand, code::response};

use crate::error::RequestError;
use crate::filter::MessageFilter;

pub(super) fn handle(request: &RemotingCommand) -> Result<RemotingCommand, RequestError> {
    let body = CheckClientRequestBody::decode(&request.body)?;
    let subscription = &body.subscription_data;
    MessageFilter::parse(
        Some(subscription.expression_type.as_str()).filter(|kind| !kind.is_empty()),
        &subscription.sub_string,
    )
    .map_err(|err| RequestError::SubscriptionParse(err.to_string()))?;
    Ok(request.new_response(response::SUCCESS, None))
}
