//! Why a request failed, and the one function that turns that into a RocketMQ response code.
//!
//! What a client must act on is typed, not text: [`RequestError::leader`] (where writes go
//! instead) and [`RequestError::outcome_unknown`] (a write that may or may not have taken
//! effect). [`error_code`] maps every error to the code and remark clients see.

use raftmq_protocol::WireError;
use raftmq_protocol::code::response;
use raftmq_protocol::names::outcome_unknown_remark;
use raftmq_raft::NodeId;

use crate::batcher::ProposeError;
use crate::command::Refusal;
use crate::message_reader::ReadError;
use crate::pop::HandleError;
use crate::state_machine::state::StateReadError;

/// A request that could not be served.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    /// A write reached a member that does not lead: refused before anything was proposed.
    #[error(
        "broker {broker_name} member {node_id} is not the leader (leader: {}); refresh the route",
        leader_name(*.leader)
    )]
    NotLeader {
        broker_name: String,
        node_id: NodeId,
        /// The leader this member knows of, if any.
        leader: Option<NodeId>,
    },
    /// A read of replicated state on a leader that has not yet applied everything committed
    /// before it was elected (just after an election or a restart): answering from its applied
    /// state could show a committed consumer offset going back. The client retries.
    #[error(
        "broker {broker_name} member {node_id} leads but is still applying what was committed before it was elected; retry"
    )]
    LeaderCatchingUp {
        broker_name: String,
        node_id: NodeId,
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
    /// A subscription's filter expression that cannot be used.
    #[error("{0}")]
    SubscriptionParse(String),
    #[error(transparent)]
    StateRead(#[from] StateReadError),
    #[error(transparent)]
    Read(#[from] ReadError),
    /// Too many POP long polls are held already.
    #[error("{0} POP long polls are held already; poll again later")]
    PollingFull(usize),
    /// A POP receipt handle (or `extraInfo`) that cannot be used.
    #[error(transparent)]
    ReceiptHandle(#[from] HandleError),
    #[error("internal error: {0}")]
    Internal(String),
}

/// How a remark names a leader: `node 3`, or `unknown`.
fn leader_name(leader: Option<NodeId>) -> String {
    leader.map_or_else(|| "unknown".to_string(), |id| format!("node {id}"))
}

impl RequestError {
    /// The leader of the group, when this error says this member is not it: where a write
    /// should go instead (after a route refresh).
    pub fn leader(&self) -> Option<NodeId> {
        match self {
            RequestError::NotLeader { leader, .. }
            | RequestError::Propose(ProposeError::NotLeader { leader }) => *leader,
            _ => None,
        }
    }

    /// Whether the request may or may not have taken effect: it was proposed and no result
    /// came. Every other error means it definitely did not take effect.
    pub fn outcome_unknown(&self) -> bool {
        matches!(self, RequestError::Propose(ProposeError::Unknown(_)))
    }
}

/// The response code and remark for an error. Send outcomes follow one rule the clients rely
/// on: SERVICE_NOT_AVAILABLE means "definitely not stored" (refresh the route and retry);
/// SYSTEM_ERROR with a remark starting "outcome unknown" means it may or may not be stored.
pub fn error_code(error: &RequestError) -> (i32, String) {
    let code = match error {
        RequestError::NotLeader { .. } => response::SERVICE_NOT_AVAILABLE,
        RequestError::LeaderCatchingUp { .. } => response::SYSTEM_BUSY,
        RequestError::Propose(ProposeError::NotLeader { .. }) => response::SERVICE_NOT_AVAILABLE,
        RequestError::Propose(ProposeError::ShuttingDown) => response::SERVICE_NOT_AVAILABLE,
        RequestError::Propose(ProposeError::Unknown(_)) => response::SYSTEM_ERROR,
        RequestError::Propose(ProposeError::BadAnswer(_)) => response::SYSTEM_ERROR,
        RequestError::Refused(Refusal::TopicMissing(_)) => response::TOPIC_NOT_EXIST,
        RequestError::Refused(Refusal::QueueInvalid { .. }) => response::MESSAGE_ILLEGAL,
        RequestError::Refused(Refusal::TopicNotWritable(_)) => response::NO_PERMISSION,
        RequestError::Refused(Refusal::GroupMissing(_)) => response::SUBSCRIPTION_GROUP_NOT_EXIST,
        RequestError::Refused(Refusal::NotPending(_)) => response::SYSTEM_ERROR,
        RequestError::Refused(Refusal::Acl(_)) => response::INVALID_PARAMETER,
        RequestError::BadHeader(_) => response::INVALID_PARAMETER,
        RequestError::TopicNotExist(_) => response::TOPIC_NOT_EXIST,
        RequestError::NoPermission(_) => response::NO_PERMISSION,
        RequestError::MessageIllegal(_) => response::MESSAGE_ILLEGAL,
        RequestError::InvalidParameter(_) => response::INVALID_PARAMETER,
        RequestError::GroupNotExist(_) => response::SUBSCRIPTION_GROUP_NOT_EXIST,
        RequestError::NotFound(_) => response::QUERY_NOT_FOUND,
        RequestError::SubscriptionParse(_) => response::SUBSCRIPTION_PARSE_FAILED,
        // As RocketMQ's ACK_MESSAGE and CHANGE_MESSAGE_INVISIBLETIME answer a handle that no
        // longer names a message in flight, and a malformed one.
        RequestError::ReceiptHandle(
            HandleError::Stale | HandleError::NotInFlight | HandleError::NeverPopped,
        ) => response::NO_MESSAGE,
        RequestError::ReceiptHandle(_) => response::INVALID_PARAMETER,
        RequestError::PollingFull(_) => response::POLLING_FULL,
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
    use std::time::Duration;

    use super::*;
    use crate::batcher::UnknownOutcome;
    use raftmq_protocol::names::OUTCOME_UNKNOWN_REMARK_PREFIX;

    #[test]
    fn definite_and_unknown_send_failures_get_distinct_codes() {
        let definite = RequestError::NotLeader {
            broker_name: "b".into(),
            node_id: 2,
            leader: Some(1),
        };
        assert_eq!(error_code(&definite).0, response::SERVICE_NOT_AVAILABLE);
        assert_eq!(definite.leader(), Some(1));
        assert!(!definite.outcome_unknown());
        let truncated = RequestError::Propose(ProposeError::NotLeader { leader: Some(3) });
        assert_eq!(error_code(&truncated).0, response::SERVICE_NOT_AVAILABLE);
        assert_eq!(truncated.leader(), Some(3));
        assert!(!truncated.outcome_unknown());
        let unknown = RequestError::Propose(ProposeError::Unknown(UnknownOutcome::NoCommitWithin(
            Duration::from_secs(10),
        )));
        let (code, remark) = error_code(&unknown);
        assert_eq!(code, response::SYSTEM_ERROR);
        assert!(
            remark.starts_with(OUTCOME_UNKNOWN_REMARK_PREFIX),
            "{remark}"
        );
        assert!(unknown.outcome_unknown());
        assert_eq!(unknown.leader(), None);
    }

    /// The remarks clients see, word for word: typed fields must not change them.
    #[test]
    fn remarks_are_unchanged() {
        let cases = [
            (
                RequestError::NotLeader {
                    broker_name: "broker-a".into(),
                    node_id: 2,
                    leader: Some(1),
                },
                response::SERVICE_NOT_AVAILABLE,
                "broker broker-a member 2 is not the leader (leader: node 1); refresh the route",
            ),
            (
                RequestError::NotLeader {
                    broker_name: "broker-a".into(),
                    node_id: 2,
                    leader: None,
                },
                response::SERVICE_NOT_AVAILABLE,
                "broker broker-a member 2 is not the leader (leader: unknown); refresh the route",
            ),
            (
                RequestError::Propose(ProposeError::NotLeader { leader: Some(3) }),
                response::SERVICE_NOT_AVAILABLE,
                "this broker is not the leader of its group (leader: Some(3))",
            ),
            (
                RequestError::Propose(ProposeError::ShuttingDown),
                response::SERVICE_NOT_AVAILABLE,
                "the broker is shutting down",
            ),
            (
                RequestError::Propose(ProposeError::Unknown(UnknownOutcome::NoCommitWithin(
                    Duration::from_secs(10),
                ))),
                response::SYSTEM_ERROR,
                "outcome unknown: no commit within 10s",
            ),
            (
                RequestError::Propose(ProposeError::Unknown(UnknownOutcome::DroppedByRaft)),
                response::SYSTEM_ERROR,
                "outcome unknown: raft dropped the proposal",
            ),
            (
                RequestError::Propose(ProposeError::Unknown(UnknownOutcome::BrokerStopped)),
                response::SYSTEM_ERROR,
                "outcome unknown: broker stopped",
            ),
            (
                RequestError::Refused(Refusal::TopicNotWritable("t".into())),
                response::NO_PERMISSION,
                "topic t is not writable",
            ),
        ];
        for (error, code, remark) in cases {
            assert_eq!(error_code(&error), (code, remark.to_string()));
        }
    }
}
