//! The one mapping from a failed request to RocketMQ 5's `Code` (definition.proto), and the
//! `Status` values every answer carries. Codes are those Apache's older clients know too (the
//! Rust client 5.0.0 panics on codes its proto lacks).

use super::pb::{Code, Status};
use crate::batcher::ProposeError;
use crate::command::Refusal;
use crate::error::RequestError;

pub fn ok() -> Status {
    status(Code::Ok, "OK")
}

pub fn status(code: Code, message: impl Into<String>) -> Status {
    Status {
        code: code as i32,
        message: message.into(),
    }
}

/// The status of a failed request.
pub fn of_error(error: &RequestError) -> Status {
    status(code_of(error), error.to_string())
}

/// The `Code` for an error. A write that definitely did not take effect on a member without a
/// leader is `HA_NOT_AVAILABLE` (clients retry it); one whose outcome is unknown is
/// `MASTER_PERSISTENCE_TIMEOUT` (a retry is stored once: the message id is its `UNIQ_KEY`).
pub fn code_of(error: &RequestError) -> Code {
    match error {
        RequestError::NotLeader { .. }
        | RequestError::Propose(ProposeError::NotLeader { .. })
        | RequestError::Propose(ProposeError::ShuttingDown) => Code::HaNotAvailable,
        RequestError::LeaderCatchingUp { .. } => Code::TooManyRequests,
        RequestError::Propose(ProposeError::Unknown(_)) => Code::MasterPersistenceTimeout,
        RequestError::Propose(ProposeError::BadAnswer(_)) => Code::InternalError,
        RequestError::Refused(Refusal::TopicMissing(_)) | RequestError::TopicNotExist(_) => {
            Code::TopicNotFound
        }
        RequestError::Refused(Refusal::QueueInvalid { .. }) => Code::BadRequest,
        RequestError::Refused(Refusal::TopicNotWritable(_)) | RequestError::NoPermission(_) => {
            Code::Forbidden
        }
        RequestError::Refused(Refusal::GroupMissing(_)) | RequestError::GroupNotExist(_) => {
            Code::ConsumerGroupNotFound
        }
        RequestError::Refused(Refusal::NotPending(_)) => Code::InvalidTransactionId,
        RequestError::Refused(Refusal::Acl(_)) => Code::BadRequest,
        RequestError::BadHeader(_)
        | RequestError::InvalidParameter(_)
        | RequestError::MessageIllegal(_) => Code::BadRequest,
        RequestError::NotFound(_) => Code::NotFound,
        RequestError::SubscriptionParse(_) => Code::IllegalFilterExpression,
        RequestError::StateRead(_) | RequestError::Read(_) | RequestError::Internal(_) => {
            Code::InternalError
        }
        RequestError::ReceiptHandle(_) => Code::InvalidReceiptHandle,
        RequestError::PollingFull(_) => Code::TooManyRequests,
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::batcher::UnknownOutcome;

    #[test]
    fn errors_map_to_the_codes_clients_act_on() {
        let cases = [
            (
                RequestError::NotLeader {
                    broker_name: "b".into(),
                    node_id: 2,
                    leader: None,
                },
                Code::HaNotAvailable,
            ),
            (
                RequestError::Propose(ProposeError::Unknown(UnknownOutcome::NoCommitWithin(
                    Duration::from_secs(1),
                ))),
                Code::MasterPersistenceTimeout,
            ),
            (RequestError::TopicNotExist("t".into()), Code::TopicNotFound),
            (
                RequestError::Refused(Refusal::TopicNotWritable("t".into())),
                Code::Forbidden,
            ),
            (
                RequestError::MessageIllegal("too big".into()),
                Code::BadRequest,
            ),
            (RequestError::Internal("x".into()), Code::InternalError),
        ];
        for (error, code) in cases {
            let answer = of_error(&error);
            assert_eq!(answer.code, code as i32, "{error}");
            assert_eq!(answer.message, error.to_string());
        }
        assert_eq!(ok().code, 20000);
    }
}
