//! Why a request failed, and the one function that turns that into a RocketMQ response code.

use raftmq_protocol::WireError;
use raftmq_protocol::code::response;
use raftmq_protocol::names::outcome_unknown_remark;

use crate::batcher::ProposeError;
use crate::command::Refusal;
use crate::message_reader::ReadError;
use crate::state_machine::state::StateReadError;

/// A request that could not be served.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    /// A write reached a member that does not lead: refused before anything was proposed.
    #[error(
        "broker {broker_name} member {node_id} is not the leader (leader: {leader}); refresh the route"
    )]
    NotLeader {
        broker_name: String,
        node_id: u64,
        leader: String,
    },
    #[error(transparent)]
    Propose(#[from] ProposeError),
    #[error(transparent)]
    Refused(#[from] Refusal),
    #[error("bad request header: {0}")]
    BadHeader(#[from] WireError),
    #[error("topic {0} does not exist")]
    TopicNotExist(String),
    #[error("{0}")]
    NoPermission(String),
    #[error("message illegal: {0}")]
    MessageIllegal(String),
    #[error("invalid parameter: {0}")]
    InvalidParameter(String),
    #[error("subscription group {0} does not exist")]
    GroupNotExist(String),
    #[error("not found: {0}")]
    NotFound(String),
    #[error(transparent)]
    StateRead(#[from] StateReadError),
    #[error(transparent)]
    Read(#[from] ReadError),
    #[error("internal error: {0}")]
    Internal(String),
}

/// The response code and remark for an error. Send outcomes follow one rule the clients rely
/// on: SERVICE_NOT_AVAILABLE means "definitely not stored" (refresh the route and retry);
/// SYSTEM_ERROR with a remark starting "outcome unknown" means it may or may not be stored.
pub fn error_code(error: &RequestError) -> (i32, String) {
    let code = match error {
        RequestError::NotLeader { .. } => response::SERVICE_NOT_AVAILABLE,
        RequestError::Propose(ProposeError::NotLeader { .. }) => response::SERVICE_NOT_AVAILABLE,
        RequestError::Propose(ProposeError::ShuttingDown) => response::SERVICE_NOT_AVAILABLE,
        RequestError::Propose(ProposeError::Unknown(_)) => response::SYSTEM_ERROR,
        RequestError::Propose(ProposeError::BadAnswer(_)) => response::SYSTEM_ERROR,
        RequestError::Refused(Refusal::TopicMissing(_)) => response::TOPIC_NOT_EXIST,
        RequestError::Refused(Refusal::QueueInvalid { .. }) => response::MESSAGE_ILLEGAL,
        RequestError::Refused(Refusal::TopicNotWritable(_)) => response::NO_PERMISSION,
        RequestError::Refused(Refusal::GroupMissing(_)) => response::SUBSCRIPTION_GROUP_NOT_EXIST,
        RequestError::BadHeader(_) => response::INVALID_PARAMETER,
        RequestError::TopicNotExist(_) => response::TOPIC_NOT_EXIST,
        RequestError::NoPermission(_) => response::NO_PERMISSION,
        RequestError::MessageIllegal(_) => response::MESSAGE_ILLEGAL,
        RequestError::InvalidParameter(_) => response::INVALID_PARAMETER,
        RequestError::GroupNotExist(_) => response::SUBSCRIPTION_GROUP_NOT_EXIST,
        RequestError::NotFound(_) => response::QUERY_NOT_FOUND,
        RequestError::StateRead(_) | RequestError::Read(_) | RequestError::Internal(_) => {
            response::SYSTEM_ERROR
        }
    };
    let remark = match error {
        RequestError::Propose(ProposeError::Unknown(reason)) => outcome_unknown_remark(reason),
        other => other.to_string(),
    };
    (code, remark)
}

#[cfg(test)]
mod tests {
    use super::*;
    use raftmq_protocol::names::OUTCOME_UNKNOWN_REMARK_PREFIX;

    #[test]
    fn definite_and_unknown_send_failures_get_distinct_codes() {
        let definite = RequestError::NotLeader {
            broker_name: "b".into(),
            node_id: 2,
            leader: "1".into(),
        };
        assert_eq!(error_code(&definite).0, response::SERVICE_NOT_AVAILABLE);
        let truncated = RequestError::Propose(ProposeError::NotLeader { leader: Some(3) });
        assert_eq!(error_code(&truncated).0, response::SERVICE_NOT_AVAILABLE);
        let unknown = RequestError::Propose(ProposeError::Unknown("no commit within 10s".into()));
        let (code, remark) = error_code(&unknown);
        assert_eq!(code, response::SYSTEM_ERROR);
        assert!(
            remark.starts_with(OUTCOME_UNKNOWN_REMARK_PREFIX),
            "{remark}"
        );
    }
}
