//! Whether a failed send is worth another attempt, decided from the error alone.
//!
//! | failure | outcome | next attempt |
//! |---|---|---|
//! | not sent (connect refused, backlog) | definite | at once, route refreshed, member isolated |
//! | SERVICE_NOT_AVAILABLE (not the leader) | definite | at once, route refreshed (the group's new leader) |
//! | SYSTEM_ERROR (plain), TOPIC_NOT_EXIST, NO_PERMISSION | definite | at once, route refreshed, another group if any |
//! | SYSTEM_BUSY, FLOW_CONTROL | definite | after a backoff |
//! | no route / no leader / no NameServer | definite | after a backoff, route refreshed |
//! | timeout, connection lost, SYSTEM_ERROR "outcome unknown" | unknown | at once if retrying unknown outcomes is on (may duplicate) |
//! | MESSAGE_ILLEGAL, any other refusal, bad message, unreadable answer | — | none |
//!
//! "At once" still waits a backoff when the next attempt would go to the very member that
//! just failed (the NameServer has not seen the new leader yet).
//!
//! Failures that mean the group's leadership is changing ([`is_leadership_change`]: no leader
//! listed, not the leader, leader unreachable) do not count against `retries` until the
//! producer's `failover_wait` has passed: a send rides out a short election.
//!
//! Backoffs follow the shared [`BackoffPolicy::SEND_RETRY`] (doubling to a cap, jittered
//! within the upper half of each step), from the producer's `retry_backoff`.

use std::time::Duration;

use raftmq_protocol::backoff::BackoffPolicy;
use raftmq_protocol::code::response;

use crate::error::ClientError;
use raftmq_remoting::{NotSentReason, RpcError};

/// The first backoff between attempts (at most; jittered down to half); it doubles per
/// attempt up to [`MAX_RETRY_BACKOFF`].
pub const DEFAULT_RETRY_BACKOFF: Duration = BackoffPolicy::SEND_RETRY.first;

/// The longest backoff between two attempts.
pub const MAX_RETRY_BACKOFF: Duration = BackoffPolicy::SEND_RETRY.max;

/// What to do after a failed attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RetryDecision {
    /// Retrying cannot help.
    Stop,
    /// Try again now (another queue, or the group's new leader).
    Retry,
    /// Try again after a backoff.
    RetryAfterBackoff,
}

/// The decision for `error`; `retry_unknown` says whether an attempt whose outcome is unknown
/// is retried (at-least-once: the retry may store the message twice).
pub fn decide(error: &ClientError, retry_unknown: bool) -> RetryDecision {
    let unknown = if retry_unknown {
        RetryDecision::Retry
    } else {
        RetryDecision::Stop
    };
    match error {
        ClientError::Rpc(RpcError::NotSent { reason, .. }) => match reason {
            NotSentReason::Connect(_)
            | NotSentReason::ConnectTimeout
            | NotSentReason::ConnectionClosed
            // Another member may hold a good certificate; the retries are few either way.
            | NotSentReason::TlsHandshake(_) => RetryDecision::Retry,
            NotSentReason::Backlogged => RetryDecision::RetryAfterBackoff,
            NotSentReason::Encode(_) | NotSentReason::Shutdown => RetryDecision::Stop,
        },
        ClientError::Rpc(RpcError::Timeout { .. } | RpcError::ConnectionLost { .. })
        | ClientError::OutcomeUnknown { .. } => unknown,
        ClientError::Broker { code, .. } => match *code {
            response::SERVICE_NOT_AVAILABLE
            | response::SYSTEM_ERROR
            | response::TOPIC_NOT_EXIST
            | response::NO_PERMISSION
            | response::NOT_LEADER_FOR_QUEUE => RetryDecision::Retry,
            response::SYSTEM_BUSY | response::FLOW_CONTROL => RetryDecision::RetryAfterBackoff,
            _ => RetryDecision::Stop,
        },
        ClientError::NoRoute { .. }
        | ClientError::NoLeader { .. }
        | ClientError::NameServerUnavailable { .. } => RetryDecision::RetryAfterBackoff,
        ClientError::BadResponse { .. }
        | ClientError::Config(_)
        | ClientError::InvalidMessage(_)
        | ClientError::MessageTooLarge { .. }
        | ClientError::Shutdown => RetryDecision::Stop,
    }
}

/// Whether `error` says the group's leadership is changing: no leader listed, a member that
/// is not the leader, or a leader that cannot be reached. All are definite failures.
pub fn is_leadership_change(error: &ClientError) -> bool {
    match error {
        ClientError::Rpc(RpcError::NotSent { reason, .. }) => matches!(
            reason,
            NotSentReason::Connect(_)
                | NotSentReason::ConnectTimeout
                | NotSentReason::ConnectionClosed
        ),
        ClientError::Broker { code, .. } => matches!(
            *code,
            response::SERVICE_NOT_AVAILABLE | response::NOT_LEADER_FOR_QUEUE
        ),
        ClientError::NoLeader { .. } => true,
        _ => false,
    }
}

/// The backoff before attempt `attempt` (1 = the first retry) when the first backoff is
/// `base`: `base * 2^(attempt - 1)`, at most [`MAX_RETRY_BACKOFF`], jittered down to as little
/// as half of that.
pub fn backoff(base: Duration, attempt: u32) -> Duration {
    BackoffPolicy::SEND_RETRY
        .with_first(base)
        .delay_at(attempt.saturating_sub(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn broker(code: i32, remark: &str) -> ClientError {
        ClientError::Broker {
            addr: "a".into(),
            request: 310,
            code,
            remark: remark.into(),
        }
    }

    fn not_sent(reason: NotSentReason) -> ClientError {
        ClientError::Rpc(RpcError::NotSent {
            addr: "a".into(),
            reason,
        })
    }

    #[test]
    fn definite_failures_by_response_code() {
        use RetryDecision::*;
        for (code, expected) in [
            (response::SERVICE_NOT_AVAILABLE, Retry),
            (response::SYSTEM_ERROR, Retry),
            (response::TOPIC_NOT_EXIST, Retry),
            (response::NO_PERMISSION, Retry),
            (response::SYSTEM_BUSY, RetryAfterBackoff),
            (response::FLOW_CONTROL, RetryAfterBackoff),
            (response::MESSAGE_ILLEGAL, Stop),
            (response::REQUEST_CODE_NOT_SUPPORTED, Stop),
            (12345, Stop),
        ] {
            let error = broker(code, "no");
            assert!(error.is_definite_failure(), "{code}");
            assert_eq!(decide(&error, true), expected, "code {code}");
            assert_eq!(decide(&error, false), expected, "code {code}");
        }
    }

    #[test]
    fn unknown_outcomes_retry_only_when_allowed() {
        let unknowns = [
            ClientError::Rpc(RpcError::Timeout {
                addr: "a".into(),
                timeout_ms: 1,
            }),
            ClientError::Rpc(RpcError::ConnectionLost {
                addr: "a".into(),
                reason: "reset".into(),
            }),
            ClientError::OutcomeUnknown {
                addr: "a".into(),
                request: 310,
                remark: "outcome unknown: lost leadership".into(),
            },
        ];
        for error in &unknowns {
            assert!(error.is_unknown_outcome());
            assert_eq!(decide(error, true), RetryDecision::Retry);
            assert_eq!(decide(error, false), RetryDecision::Stop);
        }
        let bad = ClientError::BadResponse {
            addr: "a".into(),
            source: raftmq_protocol::WireError::MissingField { field: "msgId" },
        };
        assert!(bad.is_unknown_outcome());
        assert_eq!(decide(&bad, true), RetryDecision::Stop);
    }

    #[test]
    fn transport_and_local_failures() {
        let refused = not_sent(NotSentReason::Connect(std::io::Error::from(
            std::io::ErrorKind::ConnectionRefused,
        )));
        assert_eq!(decide(&refused, false), RetryDecision::Retry);
        assert_eq!(
            decide(&not_sent(NotSentReason::Backlogged), false),
            RetryDecision::RetryAfterBackoff
        );
        assert_eq!(
            decide(&not_sent(NotSentReason::Shutdown), true),
            RetryDecision::Stop
        );
        assert_eq!(
            decide(
                &ClientError::NoRoute {
                    topic: "T".into(),
                    reason: "no leader".into()
                },
                false
            ),
            RetryDecision::RetryAfterBackoff
        );
        for local in [
            ClientError::InvalidMessage("x".into()),
            ClientError::MessageTooLarge { size: 2, max: 1 },
            ClientError::Shutdown,
        ] {
            assert_eq!(decide(&local, true), RetryDecision::Stop);
        }
    }

    #[test]
    fn leader_changes_are_recognised() {
        let refused = not_sent(NotSentReason::Connect(std::io::Error::from(
            std::io::ErrorKind::ConnectionRefused,
        )));
        assert!(is_leadership_change(&refused));
        assert!(is_leadership_change(&broker(
            response::SERVICE_NOT_AVAILABLE,
            ""
        )));
        assert!(is_leadership_change(&ClientError::NoLeader {
            topic: "T".into(),
            broker_name: None,
        }));
        assert!(!is_leadership_change(&ClientError::NoRoute {
            topic: "T".into(),
            reason: "unknown topic".into()
        }));
        assert!(!is_leadership_change(&broker(response::SYSTEM_BUSY, "")));
        assert!(!is_leadership_change(&broker(response::SYSTEM_ERROR, "")));
        assert!(!is_leadership_change(&not_sent(NotSentReason::Backlogged)));
        let timeout = ClientError::Rpc(RpcError::Timeout {
            addr: "a".into(),
            timeout_ms: 1,
        });
        assert!(
            !is_leadership_change(&timeout),
            "a timeout may have stored the message"
        );
    }

    #[test]
    fn backoff_doubles_and_is_capped() {
        // Each backoff lies in the upper half of its nominal value (f32 steps: 1 us slack).
        let within = |wait: Duration, nominal_ms: u64| {
            let nominal = Duration::from_millis(nominal_ms);
            wait + Duration::from_micros(1) >= nominal / 2
                && wait <= nominal + Duration::from_micros(1)
        };
        let base = Duration::from_millis(100);
        for _ in 0..20 {
            assert!(within(backoff(base, 1), 100));
            assert!(within(backoff(base, 2), 200));
            assert!(within(backoff(base, 3), 400));
            assert!(within(backoff(base, 30), 2000));
            assert!(backoff(base, u32::MAX) <= MAX_RETRY_BACKOFF);
            assert!(within(backoff(base, 0), 100));
            // A configured first backoff is honoured.
            assert!(within(backoff(Duration::from_millis(10), 2), 20));
        }
    }
}
