//! One send, from its first attempt to its outcome: take the topic's route, choose a queue
//! (`select.rs`), send to the group's leader, and on failure classify the error
//! (`retry.rs`), refresh the route when it is wrong, isolate an unreachable member
//! (`fault.rs`), back off, and try again until `retries` are used up.
//!
//! Failures that mean the group's leadership is changing do not use up `retries` until the
//! producer's `failover_wait` has passed ([`Rounds`]): a send rides out a short election.

use std::time::Duration;

use raftmq_protocol::header::SendMessageRequestHeader;
use raftmq_protocol::names::{AUTO_CREATE_TOPIC_KEY_TOPIC, now_ms};
use tokio::time::Instant;

use super::handle::ProducerInner;
use super::outcome::{SendError, SendResult};
use super::outgoing::Outgoing;
use super::retry::{RetryDecision, backoff, decide, is_leadership_change};
use super::select::choose_queue;
use crate::broker_client::SendReply;
use crate::error::ClientError;
use crate::message::MessageQueue;

/// Rounds one send may spend waiting out a leader change (besides the time bound).
pub const MAX_FAILOVER_ROUNDS: u32 = 64;

/// While a send rides out a leader change its backoff doubles at most this often, so it polls
/// for the new leader every 100-200 ms (jittered) with the default 100 ms backoff. Measured
/// with `bench/failover.sh` (kill -9 of the leader under load, 10 kills): with the backoff
/// doubling up to 2 s, sends resumed 1.5-2 s after the NameServer already listed the new
/// leader.
pub const MAX_FAILOVER_DOUBLINGS: u32 = 1;

/// How a producer's sends are made and retried (from its builder).
#[derive(Clone, Debug)]
pub(super) struct SendSettings {
    pub(super) group: String,
    pub(super) send_timeout: Duration,
    pub(super) retries: u32,
    pub(super) retry_unknown: bool,
    pub(super) retry_backoff: Duration,
    pub(super) failover_wait: Duration,
    pub(super) default_topic_queue_nums: u32,
}

/// Counts a send's rounds: those that count against `retries`, and those spent riding out a
/// leader change (bounded by time and by [`MAX_FAILOVER_ROUNDS`]).
struct Rounds {
    retries: u32,
    failover_deadline: Instant,
    counted: u32,
    failover: u32,
}

impl Rounds {
    fn exhausted(&self) -> bool {
        self.counted > self.retries
    }

    /// Records a failed round; returns the backoff exponent for the next one: the counted
    /// rounds plus at most [`MAX_FAILOVER_DOUBLINGS`] for rounds spent riding out a leader
    /// change. An election ends at a moment nobody can predict; a backoff that kept doubling
    /// through it would add about the election's length again after it ends.
    fn count(&mut self, error: &ClientError) -> u32 {
        if is_leadership_change(error)
            && Instant::now() < self.failover_deadline
            && self.failover < MAX_FAILOVER_ROUNDS
        {
            self.failover += 1;
        } else {
            self.counted += 1;
        }
        self.counted + self.failover.min(MAX_FAILOVER_DOUBLINGS)
    }
}

/// What the last attempt left behind, for choosing the next one.
struct LastFailure {
    broker_name: Option<String>,
    addr: Option<String>,
}

impl ProducerInner {
    /// Sends `outgoing` as the module docs say; see [`SendError`] for how a failure ends.
    pub(super) async fn send(&self, outgoing: Outgoing) -> Result<SendResult, SendError> {
        let mut attempts = 0u32;
        // Attempts whose outcome is unknown, and whether `last_error` came from an attempt.
        let mut unknown_attempts = 0u32;
        let mut last_error_from_attempt = false;
        let mut last: Option<LastFailure> = None;
        let mut last_error: Option<ClientError> = None;
        let mut rounds = Rounds {
            retries: self.settings.retries,
            failover_deadline: Instant::now() + self.settings.failover_wait,
            counted: 0,
            failover: 0,
        };
        let mut rounds_so_far = 0u32;
        while !rounds.exhausted() {
            if let Some(error) = &last_error {
                let wait = match decide(error, self.settings.retry_unknown) {
                    RetryDecision::Stop => break,
                    RetryDecision::RetryAfterBackoff => true,
                    RetryDecision::Retry => false,
                };
                if wait && !self.pause(rounds_so_far).await {
                    break;
                }
            }
            last_error_from_attempt = false;
            let routes = self.instance.routes();
            let route = match routes.route(&outgoing.topic).await {
                Ok(route) => route,
                Err(error) => {
                    rounds_so_far = rounds.count(&error);
                    last_error = Some(error);
                    continue;
                }
            };
            let avoid_group = last.as_ref().and_then(|last| last.broker_name.as_deref());
            let queue = match choose_queue(&route, &outgoing.target, &self.faults, avoid_group) {
                Ok(queue) => queue,
                Err(error) => {
                    let _ = routes.refresh_after(&route).await;
                    rounds_so_far = rounds.count(&error);
                    last_error = Some(error);
                    continue;
                }
            };
            let Some(addr) = route.leader_addr(&queue.broker_name).map(str::to_owned) else {
                let _ = routes.refresh_after(&route).await;
                let error = ClientError::NoLeader {
                    topic: outgoing.topic.clone(),
                    broker_name: Some(queue.broker_name.clone()),
                };
                rounds_so_far = rounds.count(&error);
                last_error = Some(error);
                continue;
            };
            // The route still names the member that just refused or could not be reached:
            // give the group time to elect, and the NameServer to hear of it.
            if last.as_ref().and_then(|last| last.addr.as_deref()) == Some(addr.as_str())
                && !self.pause(rounds_so_far).await
            {
                break;
            }
            attempts += 1;
            match self.attempt(&outgoing, &queue, &addr).await {
                Ok(reply) => {
                    self.faults.recovered(&addr);
                    return Ok(SendResult {
                        status: reply.status,
                        msg_id: outgoing.msg_ids.first().cloned().unwrap_or_default(),
                        msg_ids: outgoing.msg_ids.clone(),
                        offset_msg_id: reply.offset_msg_id,
                        queue: MessageQueue {
                            queue_id: reply.queue_id,
                            ..queue
                        },
                        queue_offset: reply.queue_offset,
                        broker_addr: addr,
                        attempts,
                        earlier_attempt_unknown: unknown_attempts > 0,
                    });
                }
                Err(error) => {
                    tracing::debug!(topic = outgoing.topic, addr, attempt = attempts, %error, "send attempt failed");
                    if error.is_unknown_outcome() {
                        unknown_attempts += 1;
                    }
                    if matches!(error, ClientError::Rpc(_)) {
                        self.faults.isolate(&addr);
                    }
                    if error.needs_route_refresh()
                        && let Err(refresh_error) = routes.refresh_after(&route).await
                    {
                        tracing::debug!(topic = outgoing.topic, %refresh_error, "route refresh failed");
                    }
                    // Only a member that refused or could not be reached is worth waiting
                    // for; after a timeout the next attempt may go to it at once.
                    last = Some(LastFailure {
                        broker_name: Some(queue.broker_name.clone()),
                        addr: error.is_definite_failure().then_some(addr),
                    });
                    last_error_from_attempt = true;
                    rounds_so_far = rounds.count(&error);
                    last_error = Some(error);
                }
            }
        }
        let source = last_error.unwrap_or(ClientError::Shutdown);
        let last_counted = u32::from(last_error_from_attempt && source.is_unknown_outcome());
        Err(SendError {
            source,
            attempts,
            earlier_attempt_unknown: unknown_attempts > last_counted,
        })
    }

    /// Waits the backoff for `round`; false when the producer is shutting down meanwhile
    /// (only background work stops; sends in flight finish their attempts).
    async fn pause(&self, round: u32) -> bool {
        let delay = backoff(self.settings.retry_backoff, round);
        tokio::select! {
            _ = tokio::time::sleep(delay) => true,
            _ = self.stop_background.cancelled() => false,
        }
    }

    async fn attempt(
        &self,
        outgoing: &Outgoing,
        queue: &MessageQueue,
        addr: &str,
    ) -> Result<SendReply, ClientError> {
        let queue_nums = i32::try_from(self.settings.default_topic_queue_nums).unwrap_or(i32::MAX);
        let header = SendMessageRequestHeader {
            producer_group: self.settings.group.clone(),
            topic: outgoing.topic.clone(),
            default_topic: AUTO_CREATE_TOPIC_KEY_TOPIC.to_owned(),
            default_topic_queue_nums: queue_nums,
            queue_id: queue.queue_id,
            sys_flag: 0,
            born_timestamp: now_ms(),
            flag: outgoing.flag,
            properties: Some(outgoing.properties.clone()),
            reconsume_times: Some(0),
            unit_mode: Some(false),
            batch: Some(outgoing.batch),
            max_reconsume_times: None,
            broker_name: Some(queue.broker_name.clone()),
        };
        self.instance
            .broker()
            .send_message(
                addr,
                header,
                outgoing.body.clone(),
                self.settings.send_timeout,
            )
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use raftmq_remoting::RpcError;

    #[test]
    fn backoff_grows_for_counted_rounds_but_not_while_a_leader_is_elected() {
        let no_leader = ClientError::NoLeader {
            topic: "T".into(),
            broker_name: None,
        };
        let timeout = ClientError::Rpc(RpcError::Timeout {
            addr: "a".into(),
            timeout_ms: 1000,
        });
        let mut rounds = Rounds {
            retries: 10,
            failover_deadline: Instant::now() + Duration::from_secs(60),
            counted: 0,
            failover: 0,
        };
        let exponents: Vec<u32> = (0..5).map(|_| rounds.count(&no_leader)).collect();
        assert_eq!(exponents, [1, 1, 1, 1, 1]);
        assert_eq!(rounds.failover, 5);
        assert!(!rounds.exhausted(), "failover rounds do not use up retries");
        // Other failures still double the backoff.
        assert_eq!(rounds.count(&timeout), 2);
        assert_eq!(rounds.count(&timeout), 3);

        // Past the failover wait, leadership failures count like any other.
        let mut late = Rounds {
            retries: 1,
            failover_deadline: Instant::now(),
            counted: 0,
            failover: 0,
        };
        assert_eq!(late.count(&no_leader), 1);
        assert_eq!(late.count(&no_leader), 2);
        assert!(late.exhausted());
    }
}
