//! QUERY_MESSAGE: the messages of a topic with a key (one of its `KEYS`, or with
//! `_UNIQUE_KEY_QUERY` its `UNIQ_KEY`) stored within a time range, from the state machine's key
//! index, served by any member. The body holds the stored messages found, oldest first.

use bytes::BytesMut;
use raftmq_protocol::header::transaction::{QueryMessageRequestHeader, QueryMessageResponseHeader};
use raftmq_protocol::{ExtHeader, RemotingCommand, code::response};

use crate::command::physical_offset;
use crate::context::BrokerContext;
use crate::error::RequestError;
use crate::state_machine::indexes::KeyKind;

/// Most messages one query returns (RocketMQ's `maxMsgsNumBatch`).
pub const MAX_QUERY_MESSAGES: usize = 64;

pub(super) async fn handle(
    ctx: &BrokerContext,
    request: &RemotingCommand,
) -> Result<RemotingCommand, RequestError> {
    let header = QueryMessageRequestHeader::from_ext_fields(&request.ext_fields)?;
    let kind = if header.unique_key_query.unwrap_or(false) {
        KeyKind::Unique
    } else {
        KeyKind::Key
    };
    let max = usize::try_from(header.max_num)
        .unwrap_or(1)
        .clamp(1, MAX_QUERY_MESSAGES);
    let hits = ctx.state.query_keys(
        &header.topic,
        kind,
        &header.key,
        header.begin_timestamp,
        header.end_timestamp,
        max,
    )?;
    let mut body = BytesMut::new();
    for hit in hits {
        // A message retention removed since it was indexed is left out.
        if let Some(found) = ctx.reader.read_physical(&ctx.state, hit.physical).await? {
            body.extend_from_slice(&found.bytes);
        }
    }
    if body.is_empty() {
        return Ok(request.new_response(
            response::QUERY_NOT_FOUND,
            Some(format!(
                "no message of topic {} with {} {:?} stored in that time range",
                header.topic,
                if kind == KeyKind::Unique {
                    "unique key"
                } else {
                    "key"
                },
                header.key
            )),
        ));
    }
    let answer_header = QueryMessageResponseHeader {
        index_last_update_timestamp: ctx.state.read_last_store_timestamp_ms(),
        index_last_update_phyoffset: ctx
            .state
            .applied()
            .map_or(0, |applied| physical_offset(applied.index, 0) as i64),
    };
    let mut answer = request.new_response(response::SUCCESS, None);
    answer.ext_fields = answer_header.to_ext_fields();
    answer.body = body.freeze();
    Ok(answer)
}
