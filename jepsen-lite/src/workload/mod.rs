//! The workloads: clients that talk to the cluster only over the client protocol and record
//! every operation in the history (schema: README.md).
//!
//! - [`w1`]: about ten clients doing send, poll, commit-offset, fetch-offset and reassign on
//!   one topic, each with its own consumer group and values unique per client (`c3-17`).
//! - [`w2`]: producers sending in order per sharding key, one synchronous send at a time, so
//!   that per-producer per-queue order is checkable.
//! - [`w3`]: a consumer group of real push consumers under forced rebalances (members joining
//!   and leaving), with a producer feeding its topic.
//! - [`tx`]: transaction producers that commit, roll back, or crash before deciding, with
//!   check-backs answered by the rest of their producer group (the `transactions` scenario).
//! - [`pop`]: POP consumption: a producer, consumers that pop, ack, and let some messages
//!   expire, and a final drain of the group (the scenarios with `pop`).
//! - [`drain`]: the final read of every queue from offset 0, against every member and through
//!   the client's routing.
//!
//! The outcome rule: a send (or commit) that timed out or lost its connection after being sent
//! is recorded as `info` (unknown), never `fail`; only a definite refusal is `fail`. Producers
//! retry an attempt whose outcome is unknown, as RocketMQ's do, with the same `UNIQ_KEY`: the
//! broker's dedup window (the idempotent producer) stores the value once and answers the retry
//! with the first attempt's position. A completion says `retried_after_unknown` when that
//! happened, and the `duplicate` checker fails the run if such a value is stored twice. Every operation is bounded by [`OP_TIMEOUT`]: a workload
//! told to stop finishes the operation in hand (recording its completion) and returns.

pub mod drain;
pub mod pop;
pub mod tx;
pub mod w1;
pub mod w2;
pub mod w3;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use raftmq_client::{Producer, SendError, SendResult};
use raftmq_remoting::{RpcClient, RpcClientConfig};
use raftmq_tls::TlsConnector;
use tokio_util::sync::CancellationToken;

use crate::history::{Call, Event, RecordError, Recorder, SendOp};

/// W1's topic.
pub const W1_TOPIC: &str = "jl-w1";
/// W2's topic.
pub const W2_TOPIC: &str = "jl-w2";
/// W3's topic.
pub const W3_TOPIC: &str = "jl-w3";
/// Queues of every workload topic.
pub const QUEUES_PER_TOPIC: u32 = 4;
/// The longest any one recorded operation may take before the harness gives up on it (it is
/// then recorded as `info`). Above a send's own bound (3 attempts of [`SEND_TIMEOUT`]).
pub const OP_TIMEOUT: Duration = Duration::from_secs(20);
/// One send attempt's deadline (RocketMQ's 3 s).
pub const SEND_TIMEOUT: Duration = Duration::from_secs(3);
/// Retries of a send after a definite failure (never after an unknown outcome).
pub const SEND_RETRIES: u32 = 2;
/// Deadline of polls, commits and offset reads.
pub const RPC_TIMEOUT: Duration = Duration::from_secs(3);

/// What every workload shares.
#[derive(Clone, Debug)]
pub struct Shared {
    pub recorder: Recorder,
    /// The NameServer address clients use.
    pub namesrv: String,
    /// What clients connect with (TLS in the scenarios with TLS on every link).
    pub tls: TlsConnector,
    /// Member names by remoting address (for the history's `node`).
    pub names_by_addr: Arc<BTreeMap<String, String>>,
    /// Cancelled when the workloads should stop (after the operation in hand).
    pub stop: CancellationToken,
    /// The scenario's seed; each client derives its own RNG from it.
    pub seed: u64,
    /// Pause between one client's operations (keeps the load within what two cores take).
    pub think_time: Duration,
}

impl Shared {
    /// The member name of a remoting address, if it is one.
    pub fn node(&self, addr: &str) -> Option<String> {
        self.names_by_addr.get(addr).cloned()
    }

    /// A remoting client as the workloads' own requests use it (pulls and offset commits).
    pub fn rpc_client(&self) -> RpcClient {
        RpcClient::new(RpcClientConfig {
            tls: self.tls.clone(),
            ..RpcClientConfig::default()
        })
    }

    /// Waits `think_time`; false when told to stop meanwhile.
    pub async fn think(&self) -> bool {
        tokio::select! {
            _ = self.stop.cancelled() => false,
            _ = tokio::time::sleep(self.think_time) => true,
        }
    }

    /// A producer as the workloads use it: it retries after an unknown outcome too, as
    /// RocketMQ's does, with the same `UNIQ_KEY`, so the broker's dedup window (the idempotent
    /// producer, on by default) must store each value once.
    pub async fn producer(&self, group: &str) -> Result<Producer, raftmq_client::ClientError> {
        self.producer_builder(group).build().await
    }

    /// The settings of [`Self::producer`], for producers that add to them.
    pub fn producer_builder(&self, group: &str) -> raftmq_client::ProducerBuilder {
        Producer::builder()
            .namesrv(self.namesrv.clone())
            .tls(self.tls.clone())
            .group(group)
            .send_timeout(SEND_TIMEOUT)
            .retries(SEND_RETRIES)
            .retry_on_unknown_outcome(true)
            .rpc_timeout(RPC_TIMEOUT)
            .default_topic_queue_nums(QUEUES_PER_TOPIC)
    }
}

/// How a send ended, from the producer's answer (the outcome rule).
pub fn send_completion(
    shared: &Shared,
    process: &str,
    invoked: &SendOp,
    result: Result<Result<SendResult, SendError>, tokio::time::error::Elapsed>,
) -> Event {
    match result {
        Ok(Ok(sent)) => {
            let (Ok(queue), Ok(offset)) = (
                u32::try_from(sent.queue.queue_id),
                u64::try_from(sent.queue_offset),
            ) else {
                // Acknowledged, but the answer names no usable position: it is stored somewhere.
                return Event::info(
                    process,
                    Call::Send(invoked.clone()),
                    format!(
                        "acknowledged with queue {} offset {}",
                        sent.queue.queue_id, sent.queue_offset
                    ),
                );
            };
            let mut op = invoked.clone();
            op.queue = Some(queue);
            op.offset = Some(offset);
            op.retried_after_unknown = sent.earlier_attempt_unknown;
            let event = Event::ok(process, Call::Send(op));
            match shared.node(&sent.broker_addr) {
                Some(node) => event.with_node(node),
                None => event,
            }
        }
        Ok(Err(error)) => {
            let mut op = invoked.clone();
            op.retried_after_unknown = error.earlier_attempt_unknown;
            let call = Call::Send(op);
            if error.is_unknown_outcome() {
                Event::info(process, call, error.to_string())
            } else {
                Event::fail(process, call, error.to_string())
            }
        }
        Err(_) => Event::info(
            process,
            Call::Send(invoked.clone()),
            format!("no answer within the harness bound of {OP_TIMEOUT:?}"),
        ),
    }
}

/// Sends one message with `producer` and records the invoke and its completion. Returns
/// whether the send was acknowledged.
pub async fn recorded_send(
    shared: &Shared,
    producer: &Producer,
    process: &str,
    topic: &str,
    key: Option<&str>,
    value: String,
) -> Result<bool, RecordError> {
    let invoked = SendOp {
        topic: topic.to_string(),
        key: key.map(str::to_string),
        queue: None,
        value: value.clone(),
        offset: None,
        retried_after_unknown: false,
    };
    shared
        .recorder
        .record(Event::invoke(process, Call::Send(invoked.clone())))
        .await?;
    let mut message = raftmq_client::Message::new(topic, value);
    if let Some(key) = key {
        message = message.with_sharding_key(key);
    }
    let result = tokio::time::timeout(OP_TIMEOUT, producer.send(message)).await;
    let event = send_completion(shared, process, &invoked, result);
    let acked = event.kind == crate::history::OpType::Ok;
    shared.recorder.record(event).await?;
    Ok(acked)
}

/// A producer of group `producer_group` that sends `<process>-0`, `<process>-1`, ... to
/// `topic`, one at a time a think time apart, until `shared.stop` (W3's and the POP workload's
/// feeder).
pub async fn feed(
    shared: &Shared,
    producer_group: &str,
    process: &str,
    topic: &str,
) -> Result<(), RecordError> {
    let producer = match shared.producer(producer_group).await {
        Ok(producer) => producer,
        Err(error) => {
            tracing::error!(%error, process, "cannot build a producer");
            return Ok(());
        }
    };
    let mut sent = 0u64;
    let result = async {
        while !shared.stop.is_cancelled() {
            let value = format!("{process}-{sent}");
            sent += 1;
            recorded_send(shared, &producer, process, topic, None, value).await?;
            if !shared.think().await {
                break;
            }
        }
        Ok(())
    }
    .await;
    producer.shutdown().await;
    result
}

/// A small deterministic RNG per client (SplitMix64): the op mix replays with the seed.
#[derive(Clone, Debug)]
pub struct ClientRng(u64);

impl ClientRng {
    pub fn new(seed: u64, stream: u64) -> Self {
        ClientRng(crate::schedule::scenario_seed(seed, stream as usize))
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n` > 0; 0 gives 0).
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next_u64() % n }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::{HistoryWriter, OpType};
    use raftmq_client::{ClientError, MessageQueue, SendStatus};
    use raftmq_remoting::{NotSentReason, RpcError};

    fn shared(recorder: Recorder) -> Shared {
        Shared {
            recorder,
            namesrv: "127.0.0.1:9876".into(),
            tls: TlsConnector::plaintext(),
            names_by_addr: Arc::new(BTreeMap::from([(
                "10.0.0.2:10911".to_string(),
                "n1".to_string(),
            )])),
            stop: CancellationToken::new(),
            seed: 1,
            think_time: Duration::from_millis(1),
        }
    }

    fn invoked() -> SendOp {
        SendOp {
            topic: "t".into(),
            key: None,
            queue: None,
            value: "c1-0".into(),
            offset: None,
            retried_after_unknown: false,
        }
    }

    fn error(source: ClientError, earlier_attempt_unknown: bool) -> SendError {
        SendError {
            source,
            attempts: 1,
            earlier_attempt_unknown,
        }
    }

    /// The outcome rule: timeouts and lost connections are `info`, refusals `fail`, answers `ok`.
    #[tokio::test]
    async fn send_outcomes_follow_the_outcome_rule() {
        let dir = tempfile::tempdir().unwrap();
        let (recorder, writer) = HistoryWriter::create(&dir.path().join("h")).unwrap();
        let shared = shared(recorder);
        let stored = SendResult {
            status: SendStatus::Ok,
            msg_id: "m".into(),
            msg_ids: vec!["m".into()],
            offset_msg_id: "o".into(),
            queue: MessageQueue {
                topic: "t".into(),
                broker_name: "b".into(),
                queue_id: 2,
            },
            queue_offset: 17,
            broker_addr: "10.0.0.2:10911".into(),
            attempts: 1,
            earlier_attempt_unknown: false,
        };
        let ok = send_completion(&shared, "c1", &invoked(), Ok(Ok(stored.clone())));
        assert_eq!(ok.kind, OpType::Ok);
        assert_eq!(ok.node.as_deref(), Some("n1"));
        let Call::Send(acked) = &ok.call else {
            panic!("a send")
        };
        assert_eq!((acked.queue, acked.offset), (Some(2), Some(17)));

        let cases = [
            (
                ClientError::Rpc(RpcError::Timeout {
                    addr: "a".into(),
                    timeout_ms: 3000,
                }),
                false,
                OpType::Info,
            ),
            (
                ClientError::Rpc(RpcError::ConnectionLost {
                    addr: "a".into(),
                    reason: "reset".into(),
                }),
                false,
                OpType::Info,
            ),
            (
                ClientError::Rpc(RpcError::NotSent {
                    addr: "a".into(),
                    reason: NotSentReason::ConnectTimeout,
                }),
                false,
                OpType::Fail,
            ),
            // Refused now, but an earlier attempt may have stored it: unknown.
            (
                ClientError::Rpc(RpcError::NotSent {
                    addr: "a".into(),
                    reason: NotSentReason::ConnectTimeout,
                }),
                true,
                OpType::Info,
            ),
            (
                ClientError::Broker {
                    addr: "a".into(),
                    request: 310,
                    code: 1,
                    remark: "not the leader".into(),
                },
                false,
                OpType::Fail,
            ),
            (
                ClientError::OutcomeUnknown {
                    addr: "a".into(),
                    request: 310,
                    remark: "outcome unknown: leader lost".into(),
                },
                false,
                OpType::Info,
            ),
        ];
        for (source, earlier, want) in cases {
            let text = source.to_string();
            let event = send_completion(&shared, "c1", &invoked(), Ok(Err(error(source, earlier))));
            assert_eq!(event.kind, want, "{text}");
            assert!(event.error.is_some());
        }
        // The harness's own bound: unknown.
        let elapsed = tokio::time::timeout(Duration::from_millis(1), std::future::pending::<()>())
            .await
            .unwrap_err();
        let late = send_completion(&shared, "c1", &invoked(), Err(elapsed));
        assert_eq!(late.kind, OpType::Info);
        // An acknowledgement without a usable position is stored somewhere: unknown, not ok.
        let odd = SendResult {
            queue_offset: -1,
            ..stored
        };
        let odd = send_completion(&shared, "c1", &invoked(), Ok(Ok(odd)));
        assert_eq!(odd.kind, OpType::Info);
        drop(shared);
        writer.close().await.unwrap();
    }

    #[test]
    fn client_rngs_replay_and_differ_per_stream() {
        let mut a = ClientRng::new(7, 1);
        let mut b = ClientRng::new(7, 1);
        let mut c = ClientRng::new(7, 2);
        let xs: Vec<u64> = (0..8).map(|_| a.next_u64()).collect();
        let ys: Vec<u64> = (0..8).map(|_| b.next_u64()).collect();
        let zs: Vec<u64> = (0..8).map(|_| c.next_u64()).collect();
        assert_eq!(xs, ys);
        assert_ne!(xs, zs);
        assert!((0..100).all(|_| a.below(3) < 3));
        assert_eq!(a.below(0), 0);
    }
}
