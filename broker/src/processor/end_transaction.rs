//! END_TRANSACTION: a producer commits or rolls back the half message of a transaction (after
//! its local transaction, or answering CHECK_TRANSACTION_STATE). RocketMQ's clients send it
//! oneway; the answer, when one is wanted, says whether this request ended the transaction.
//! The work is [`crate::transaction::end`].

use raftmq_protocol::header::transaction::EndTransactionRequestHeader;
use raftmq_protocol::message::sys_flag;
use raftmq_protocol::{ExtHeader, RemotingCommand, code::response};
use tracing::debug;

use crate::command::{Claim, Refusal};
use crate::context::BrokerContext;
use crate::error::RequestError;
use crate::metrics::ResultLabel;
use crate::transaction::{self, Decision, Ended};

pub(super) async fn handle(
    ctx: &BrokerContext,
    request: &RemotingCommand,
) -> Result<RemotingCommand, RequestError> {
    let header = EndTransactionRequestHeader::from_ext_fields(&request.ext_fields)?;
    let decision = match header.commit_or_rollback {
        sys_flag::TRANSACTION_COMMIT_TYPE => Decision::Commit,
        sys_flag::TRANSACTION_ROLLBACK_TYPE => Decision::Rollback,
        sys_flag::TRANSACTION_NOT_TYPE => {
            // The producer does not know yet: the broker checks back later.
            debug!(
                msg_id = header.msg_id,
                "a transaction's outcome is still unknown"
            );
            return Ok(request.new_response(
                response::SUCCESS,
                Some("the outcome is unknown; the broker will check back".into()),
            ));
        }
        other => {
            return Err(RequestError::InvalidParameter(format!(
                "commitOrRollback {other} is neither commit (8), rollback (12) nor unknown (0)"
            )));
        }
    };
    let half = u64::try_from(header.commit_log_offset).map_err(|_| {
        RequestError::InvalidParameter(format!(
            "commitLogOffset {} is negative",
            header.commit_log_offset
        ))
    })?;
    match transaction::end(ctx, half, &header.producer_group, decision).await? {
        Ended::Done => {
            let result = match decision {
                Decision::Commit => "commit",
                Decision::Rollback => "rollback",
            };
            ctx.metrics
                .transactions_ended
                .get_or_create(&ResultLabel { result })
                .inc();
            Ok(request.new_response(response::SUCCESS, None))
        }
        Ended::NotPending => Err(RequestError::Refused(Refusal::NotPending(
            Claim::Transaction { half },
        ))),
    }
}
