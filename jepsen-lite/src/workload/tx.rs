//! W5 (the `transactions` scenario): transaction producers that commit, roll back, or crash
//! before deciding, on [`TX_TOPIC`].
//!
//! Producers `t1`..`t3` share one producer group ([`TX_GROUP`]). Each sends values `tN-0`,
//! `tN-1`, ... as transactions (`transaction` operations), its local transaction deciding
//! commit, rollback or unknown (seeded). After an unknown one the producer *crashes*: it shuts
//! its client down, so it never answers the broker's checks of that transaction, and starts
//! again as a new client of the same group. The broker then checks the transaction with
//! another live producer of the group.
//!
//! Every producer answers checks the same way for a given transaction, so answers never
//! contradict each other: each message carries, in [`CHECK_ANSWER_PROPERTY`], what a check
//! must answer (the local decision when there was one; for a transaction left unknown, a
//! seeded commit, rollback, or "never": unknown at every check, so the broker discards it
//! after its last check). Each answer is recorded (`tx_check`) before it is given; when the
//! recorder is backed up the answer is "unknown" instead, unrecorded, and the broker asks
//! again.
//!
//! When told to stop ([`Shared::stop`]) the producers stop sending but go on answering
//! checks until `answer_until` is cancelled: the harness waits for the group to resolve every
//! pending transaction first ([`wait_settled`]), then records what each member still holds
//! ([`record_pending`], the `tx_pending` event the `transactions` checker needs).

use std::collections::BTreeMap;
use std::time::Duration;

use futures::future::join_all;
use raftmq_client::{Message, Producer, ReceivedMessage, TransactionState};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::{ClientRng, OP_TIMEOUT, Shared};
use crate::cluster::ProcessCluster;
use crate::history::{
    Call, Event, HARNESS_PROCESS, OpType, RecordError, TransactionOp, TxCheckOp, TxDecision,
    TxPendingOp,
};

/// The scenario that runs this workload (with W1 beside it).
pub const SCENARIO: &str = "transactions";
/// The transactions' topic.
pub const TX_TOPIC: &str = "jl-tx";
/// The producer group every transaction producer belongs to.
pub const TX_GROUP: &str = "jl-tx-pg";
/// Transaction producers.
pub const TX_PRODUCERS: usize = 3;
/// The message property naming what a check of its transaction is answered.
pub const CHECK_ANSWER_PROPERTY: &str = "jl_check_answer";
/// Check answers waiting to be recorded; when full, a check is answered "unknown".
pub const CHECK_RECORD_CAPACITY: usize = 1024;
/// The brokers' transaction settings in the scenario: checks start 2 s after a half message
/// (RocketMQ: 6 s), come every second (RocketMQ: 30 s), and a transaction is discarded after
/// its fifth (RocketMQ: 15), so a never-answered one is resolved in about 7 s, within the run.
pub const TRANSACTION_TIMEOUT_MS: u64 = 2_000;
pub const TRANSACTION_CHECK_INTERVAL_MS: u64 = 1_000;
pub const TRANSACTION_CHECK_MAX: u32 = 5;
/// How long the harness waits, once the producers stopped sending, for the leader to hold no
/// pending transaction (a never-answered one needs about 7 s; faults are healed by then).
pub const SETTLE_TIMEOUT: Duration = Duration::from_secs(45);
/// Pause between two looks at the leader while settling.
pub const SETTLE_POLL: Duration = Duration::from_millis(500);

/// Out of 100: local commit, then local rollback; the rest is left unknown (a crash).
const COMMIT_WEIGHT: u64 = 45;
const ROLLBACK_WEIGHT: u64 = 25;
/// The RNG stream base of the transaction producers.
const RNG_STREAM: u64 = 500;

/// The `mqbroker` flags of the scenario.
pub fn broker_args() -> Vec<String> {
    [
        (
            "--transaction-timeout-ms",
            TRANSACTION_TIMEOUT_MS.to_string(),
        ),
        (
            "--transaction-check-interval-ms",
            TRANSACTION_CHECK_INTERVAL_MS.to_string(),
        ),
        ("--transaction-check-max", TRANSACTION_CHECK_MAX.to_string()),
    ]
    .into_iter()
    .flat_map(|(flag, value)| [flag.to_string(), value])
    .collect()
}

fn wire_name(decision: TxDecision) -> &'static str {
    match decision {
        TxDecision::Commit => "commit",
        TxDecision::Rollback => "rollback",
        TxDecision::Unknown => "unknown",
    }
}

fn parse_decision(text: &str) -> Option<TxDecision> {
    [
        TxDecision::Commit,
        TxDecision::Rollback,
        TxDecision::Unknown,
    ]
    .into_iter()
    .find(|d| wire_name(*d) == text)
}

fn state_of(decision: TxDecision) -> TransactionState {
    match decision {
        TxDecision::Commit => TransactionState::Commit,
        TxDecision::Rollback => TransactionState::Rollback,
        TxDecision::Unknown => TransactionState::Unknown,
    }
}

/// What a producer answers the broker's check of `message`, given that the answer can be
/// recorded by `record` first (otherwise "unknown", unrecorded: the broker asks again).
fn answer_check(
    message: &ReceivedMessage,
    process: &str,
    record: impl FnOnce(Event) -> bool,
) -> TransactionState {
    let value = String::from_utf8_lossy(&message.body).into_owned();
    let answer = message
        .property(CHECK_ANSWER_PROPERTY)
        .and_then(parse_decision)
        .unwrap_or(TxDecision::Unknown);
    let event = Event::new(
        process,
        OpType::Info,
        Call::TxCheck(TxCheckOp {
            value,
            answer,
            by: process.to_string(),
        }),
    );
    if record(event) {
        state_of(answer)
    } else {
        TransactionState::Unknown
    }
}

/// Runs the transaction producers until `shared.stop` (sending) and `answer_until`
/// (answering checks).
pub async fn run(shared: Shared, answer_until: CancellationToken) -> Result<(), RecordError> {
    let (answers, mut recorded) = mpsc::channel::<Event>(CHECK_RECORD_CAPACITY);
    // A stopped client may keep its check handler (and so a sender) alive: the recording
    // loop ends when the producers are done, not when every sender is gone.
    let producers_done = CancellationToken::new();
    let producers = async {
        let results = join_all(
            (1..=TX_PRODUCERS)
                .map(|id| run_producer(shared.clone(), id, answers.clone(), answer_until.clone())),
        )
        .await;
        producers_done.cancel();
        results.into_iter().collect::<Result<(), _>>()
    };
    let recorder = shared.recorder.clone();
    let record_answers = async {
        loop {
            tokio::select! {
                biased;
                event = recorded.recv() => match event {
                    Some(event) => recorder.record(event).await?,
                    None => return Ok(()),
                },
                _ = producers_done.cancelled() => {
                    while let Ok(event) = recorded.try_recv() {
                        recorder.record(event).await?;
                    }
                    return Ok::<_, RecordError>(());
                }
            }
        }
    };
    let (produced, recorded) = futures::future::join(producers, record_answers).await;
    produced?;
    recorded
}

async fn build_producer(
    shared: &Shared,
    process: &str,
    answers: &mpsc::Sender<Event>,
) -> Result<Producer, raftmq_client::ClientError> {
    let answers = answers.clone();
    let process = process.to_string();
    shared
        .producer_builder(TX_GROUP)
        .transaction_checker(move |message| {
            answer_check(message, &process, |event| answers.try_send(event).is_ok())
        })
        .build()
        .await
}

async fn run_producer(
    shared: Shared,
    id: usize,
    answers: mpsc::Sender<Event>,
    answer_until: CancellationToken,
) -> Result<(), RecordError> {
    let process = format!("t{id}");
    let mut rng = ClientRng::new(shared.seed, RNG_STREAM + id as u64);
    let mut producer = match build_producer(&shared, &process, &answers).await {
        Ok(p) => p,
        Err(e) => {
            tracing::error!(producer = %process, error = %e, "cannot build a transaction producer");
            return Ok(());
        }
    };
    let mut sent = 0u64;
    let result = async {
        while !shared.stop.is_cancelled() {
            let value = format!("{process}-{sent}");
            sent += 1;
            let roll = rng.below(100);
            let local = if roll < COMMIT_WEIGHT {
                TxDecision::Commit
            } else if roll < COMMIT_WEIGHT + ROLLBACK_WEIGHT {
                TxDecision::Rollback
            } else {
                TxDecision::Unknown
            };
            let check_answer = match local {
                TxDecision::Unknown => [
                    TxDecision::Commit,
                    TxDecision::Rollback,
                    TxDecision::Unknown,
                ][rng.below(3) as usize],
                decided => decided,
            };
            recorded_transaction(&shared, &producer, &process, value, local, check_answer)
                .await?;
            if local == TxDecision::Unknown {
                // The crash: this client never answers a check of that transaction.
                producer.shutdown().await;
                producer = match build_producer(&shared, &process, &answers).await {
                    Ok(p) => p,
                    Err(e) => {
                        tracing::error!(producer = %process, error = %e, "cannot restart a transaction producer");
                        return Ok(());
                    }
                };
            }
            if !shared.think().await {
                break;
            }
        }
        Ok(())
    }
    .await;
    // Stopped sending; the group's pending transactions still need answers.
    answer_until.cancelled().await;
    producer.shutdown().await;
    result
}

/// Sends one transaction with `producer` and records the invoke and its completion.
async fn recorded_transaction(
    shared: &Shared,
    producer: &Producer,
    process: &str,
    value: String,
    local: TxDecision,
    check_answer: TxDecision,
) -> Result<(), RecordError> {
    let invoked = TransactionOp {
        topic: TX_TOPIC.to_string(),
        value: value.clone(),
        local,
        ended: false,
    };
    shared
        .recorder
        .record(Event::invoke(process, Call::Transaction(invoked.clone())))
        .await?;
    let message =
        Message::new(TX_TOPIC, value).with_property(CHECK_ANSWER_PROPERTY, wire_name(check_answer));
    let sent = tokio::time::timeout(
        OP_TIMEOUT,
        producer.send_in_transaction(message, |_| async move { state_of(local) }),
    )
    .await;
    let event = match sent {
        Ok(Ok(done)) => {
            let op = TransactionOp {
                ended: local != TxDecision::Unknown && done.ended.is_ok(),
                ..invoked
            };
            let event = Event::ok(process, Call::Transaction(op));
            let event = match shared.node(&done.send.broker_addr) {
                Some(node) => event.with_node(node),
                None => event,
            };
            match done.ended {
                Ok(()) => event,
                Err(e) => event.with_error(format!("END_TRANSACTION not acknowledged: {e}")),
            }
        }
        Ok(Err(error)) if error.is_unknown_outcome() => {
            Event::info(process, Call::Transaction(invoked), error.to_string())
        }
        Ok(Err(error)) => Event::fail(process, Call::Transaction(invoked), error.to_string()),
        Err(_) => Event::info(
            process,
            Call::Transaction(invoked),
            format!("no answer within the harness bound of {OP_TIMEOUT:?}"),
        ),
    };
    shared.recorder.record(event).await
}

/// Waits until the group's leader holds no pending transaction (bounded by
/// [`SETTLE_TIMEOUT`]); returns how long that took, or `None` if it never happened.
pub async fn wait_settled(cluster: &ProcessCluster) -> Option<Duration> {
    let started = tokio::time::Instant::now();
    while started.elapsed() < SETTLE_TIMEOUT {
        if let Some((_, leader)) = cluster.current_leader().await
            && leader.pending_transactions == Some(0)
        {
            return Some(started.elapsed());
        }
        tokio::time::sleep(SETTLE_POLL).await;
    }
    None
}

/// Records the pending transactions every member's applied state holds (`tx_pending`).
pub async fn record_pending(
    cluster: &ProcessCluster,
    recorder: &crate::history::Recorder,
) -> Result<(), RecordError> {
    let members: BTreeMap<String, Option<u64>> = cluster
        .statuses()
        .await
        .into_iter()
        .map(|(name, status)| (name, status.pending_transactions))
        .collect();
    recorder
        .record(Event::new(
            HARNESS_PROCESS,
            OpType::Info,
            Call::TxPending(TxPendingOp { members }),
        ))
        .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use raftmq_client::MessageQueue;

    fn checked(answer: Option<&str>) -> ReceivedMessage {
        let host = "127.0.0.1:1".parse().unwrap();
        ReceivedMessage {
            queue: MessageQueue {
                topic: TX_TOPIC.into(),
                broker_name: "b".into(),
                queue_id: 0,
            },
            topic: TX_TOPIC.into(),
            queue_offset: 0,
            msg_id: "m".into(),
            offset_msg_id: "o".into(),
            body: "t1-7".into(),
            tags: None,
            keys: vec![],
            flag: 0,
            sys_flag: 0,
            born_timestamp: 0,
            born_host: host,
            store_timestamp: 0,
            store_host: host,
            reconsume_times: 0,
            physical_offset: 0,
            properties: answer
                .map(|a| BTreeMap::from([(CHECK_ANSWER_PROPERTY.to_string(), a.to_string())]))
                .unwrap_or_default(),
        }
    }

    /// A check is answered as the message says, and only once the answer is recorded.
    #[test]
    fn checks_are_answered_as_planned_and_recorded_first() {
        for (planned, want) in [
            ("commit", TransactionState::Commit),
            ("rollback", TransactionState::Rollback),
            ("unknown", TransactionState::Unknown),
        ] {
            let mut recorded = None;
            let state = answer_check(&checked(Some(planned)), "t2", |e| {
                recorded = Some(e);
                true
            });
            assert_eq!(state, want);
            let Some(Call::TxCheck(op)) = recorded.map(|e| e.call) else {
                panic!("a tx_check event")
            };
            assert_eq!((op.value.as_str(), op.by.as_str()), ("t1-7", "t2"));
            assert_eq!(wire_name(op.answer), planned);
        }
        // Not recorded (recorder backed up): no decision is given away.
        let state = answer_check(&checked(Some("commit")), "t2", |_| false);
        assert_eq!(state, TransactionState::Unknown);
        // A message without the plan (not ours): unknown.
        let state = answer_check(&checked(None), "t2", |_| true);
        assert_eq!(state, TransactionState::Unknown);
    }

    #[test]
    fn broker_args_name_every_transaction_setting() {
        assert_eq!(
            broker_args(),
            [
                "--transaction-timeout-ms",
                "2000",
                "--transaction-check-interval-ms",
                "1000",
                "--transaction-check-max",
                "5"
            ]
        );
    }
}
