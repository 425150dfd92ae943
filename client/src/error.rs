//! The client's error type, [`ClientError`], and how a failure is judged: definitely not done
//! (safe to retry anywhere) or outcome unknown (the request may have taken effect).

use raftmq_protocol::WireError;
use raftmq_protocol::code::{request, response};
use raftmq_protocol::names::OUTCOME_UNKNOWN_REMARK_PREFIX;

use raftmq_remoting::RpcError;

/// Everything that can go wrong between this client and a NameServer or broker.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// A builder or argument was given something unusable.
    #[error("invalid configuration: {0}")]
    Config(String),

    /// The message cannot be sent as it is (bad topic, empty body, bad property).
    #[error("invalid message: {0}")]
    InvalidMessage(String),

    /// The message (or batch) is larger than the client-side cap.
    #[error("message of {size} bytes exceeds the limit of {max} bytes")]
    MessageTooLarge { size: usize, max: usize },

    /// No usable route: the topic is unknown to the NameServers, or has no queue that can be
    /// written (or read).
    #[error("no route for topic `{topic}`: {reason}")]
    NoRoute { topic: String, reason: String },

    /// The broker group (`None`: every group of the topic) has no leader listed right now: an
    /// election is under way or the NameServer has not heard of its result yet.
    #[error("no leader for topic `{topic}` in {}", .broker_name.as_deref().unwrap_or("any broker group"))]
    NoLeader {
        topic: String,
        broker_name: Option<String>,
    },

    /// No NameServer could be reached; `last` is the last transport error.
    #[error("no NameServer answered (tried {tried}); last error: {last}")]
    NameServerUnavailable { tried: usize, last: RpcError },

    /// The transport failed: not sent (definite) or sent without an answer (outcome unknown).
    #[error(transparent)]
    Rpc(#[from] RpcError),

    /// The peer answered with a refusal: nothing was done (a definite failure).
    #[error("{addr} refused {} with {} ({code}): {remark}", request_name(*.request), response_name(*.code))]
    Broker {
        addr: String,
        request: i32,
        code: i32,
        remark: String,
    },

    /// The peer answered that the request was proposed but its result is not known
    /// (SYSTEM_ERROR with an "outcome unknown" remark): it may or may not have taken effect.
    #[error("{addr} could not tell the outcome of {}: {remark}", request_name(*.request))]
    OutcomeUnknown {
        addr: String,
        request: i32,
        remark: String,
    },

    /// The peer answered something this client cannot read. The request reached the peer, so
    /// its outcome is unknown.
    #[error("unreadable answer from {addr}: {source}")]
    BadResponse {
        addr: String,
        #[source]
        source: WireError,
    },

    /// The client was shut down.
    #[error("the client is shut down")]
    Shutdown,
}

fn request_name(code: i32) -> String {
    request::name(code).map_or_else(|| format!("request {code}"), str::to_owned)
}

fn response_name(code: i32) -> String {
    response::name(code).map_or_else(|| format!("code {code}"), str::to_owned)
}

impl ClientError {
    /// Whether the request may have taken effect although no success was seen: a timeout or a
    /// connection lost after sending, an "outcome unknown" answer, or an unreadable answer.
    /// A retry after such an error may duplicate a message.
    pub fn is_unknown_outcome(&self) -> bool {
        match self {
            ClientError::Rpc(error) => error.outcome_unknown(),
            ClientError::OutcomeUnknown { .. } | ClientError::BadResponse { .. } => true,
            _ => false,
        }
    }

    /// Whether the request certainly did not take effect.
    pub fn is_definite_failure(&self) -> bool {
        !self.is_unknown_outcome()
    }

    /// The response code of a broker refusal.
    pub fn response_code(&self) -> Option<i32> {
        match self {
            ClientError::Broker { code, .. } => Some(*code),
            ClientError::OutcomeUnknown { .. } => Some(response::SYSTEM_ERROR),
            _ => None,
        }
    }

    /// Whether the error says the route in hand is wrong (not the leader, member gone, topic
    /// moved): refresh the route before the next request.
    pub fn needs_route_refresh(&self) -> bool {
        match self {
            ClientError::Rpc(_)
            | ClientError::OutcomeUnknown { .. }
            | ClientError::NoLeader { .. } => true,
            ClientError::Broker { code, .. } => matches!(
                *code,
                response::SERVICE_NOT_AVAILABLE
                    | response::TOPIC_NOT_EXIST
                    | response::NO_PERMISSION
                    | response::NOT_LEADER_FOR_QUEUE
                    | response::SYSTEM_ERROR
            ),
            _ => false,
        }
    }

    pub(crate) fn bad_response(addr: &str, source: WireError) -> Self {
        ClientError::BadResponse {
            addr: addr.to_owned(),
            source,
        }
    }
}

/// Turns an answer into `Ok` when its code is one of `accepted`, or into the matching error.
pub(crate) fn check_response(
    addr: &str,
    request: i32,
    answer: raftmq_protocol::RemotingCommand,
    accepted: &[i32],
) -> Result<raftmq_protocol::RemotingCommand, ClientError> {
    if accepted.contains(&answer.code) {
        Ok(answer)
    } else {
        Err(refusal(addr, request, answer))
    }
}

/// The error an unaccepted answer stands for: "outcome unknown" for SYSTEM_ERROR with that
/// remark, a broker refusal otherwise.
pub(crate) fn refusal(
    addr: &str,
    request: i32,
    answer: raftmq_protocol::RemotingCommand,
) -> ClientError {
    let remark = answer.remark.unwrap_or_default();
    if answer.code == response::SYSTEM_ERROR && remark.starts_with(OUTCOME_UNKNOWN_REMARK_PREFIX) {
        return ClientError::OutcomeUnknown {
            addr: addr.to_owned(),
            request,
            remark,
        };
    }
    ClientError::Broker {
        addr: addr.to_owned(),
        request,
        code: answer.code,
        remark,
    }
}

#[cfg(test)]
mod tests {
    use raftmq_protocol::RemotingCommand;

    use super::*;
    use raftmq_remoting::NotSentReason;

    fn answer(code: i32, remark: &str) -> RemotingCommand {
        RemotingCommand::new_request(request::SEND_MESSAGE_V2)
            .new_response(code, Some(remark.into()))
    }

    #[test]
    fn transport_errors_keep_their_outcome() {
        let not_sent = ClientError::from(RpcError::NotSent {
            addr: "a".into(),
            reason: NotSentReason::ConnectTimeout,
        });
        assert!(!not_sent.is_unknown_outcome());
        assert!(not_sent.needs_route_refresh());
        let timeout = ClientError::from(RpcError::Timeout {
            addr: "a".into(),
            timeout_ms: 5,
        });
        assert!(timeout.is_unknown_outcome());
        let lost = ClientError::from(RpcError::ConnectionLost {
            addr: "a".into(),
            reason: "reset".into(),
        });
        assert!(lost.is_unknown_outcome());
    }

    #[test]
    fn answers_are_classified_by_code_and_remark() {
        let ok = check_response(
            "a",
            310,
            answer(response::SUCCESS, ""),
            &[response::SUCCESS],
        );
        assert!(ok.is_ok());
        let unknown = check_response(
            "a",
            310,
            answer(response::SYSTEM_ERROR, "outcome unknown: leader lost"),
            &[response::SUCCESS],
        )
        .unwrap_err();
        assert!(unknown.is_unknown_outcome(), "{unknown}");
        let plain_error = check_response(
            "a",
            310,
            answer(response::SYSTEM_ERROR, "disk full"),
            &[response::SUCCESS],
        )
        .unwrap_err();
        assert!(plain_error.is_definite_failure());
        assert_eq!(plain_error.response_code(), Some(response::SYSTEM_ERROR));
        let not_leader = check_response(
            "a",
            310,
            answer(response::SERVICE_NOT_AVAILABLE, "not the leader"),
            &[response::SUCCESS],
        )
        .unwrap_err();
        assert!(not_leader.is_definite_failure());
        assert!(not_leader.needs_route_refresh());
        let text = not_leader.to_string();
        assert!(
            text.contains("SEND_MESSAGE_V2") && text.contains("SERVICE_NOT_AVAILABLE"),
            "{text}"
        );
        let illegal = check_response(
            "a",
            310,
            answer(response::MESSAGE_ILLEGAL, "too big"),
            &[response::SUCCESS],
        )
        .unwrap_err();
        assert!(illegal.is_definite_failure());
        assert!(!illegal.needs_route_refresh());
    }
}
