//! W4: the final drain. After everything is healed and the group has converged, every queue of
//! every workload topic is read from offset 0 to its end, against every member that runs
//! (process `drain.<member>`, `member` set) and through the client's routing (the current
//! leader from the NameServer, process `drain.client`, `member` absent). Each pull is one
//! `drain` operation with its `from`, so a long queue is several history lines.

use std::net::SocketAddr;
use std::time::Duration;

use raftmq_client::{Admin, ClientError, MessageQueue, PullStatus};
use raftmq_remoting::RpcClientConfig;
use raftmq_tls::TlsConnector;
use serde::Serialize;

use super::{OP_TIMEOUT, QUEUES_PER_TOPIC, RPC_TIMEOUT};
use crate::cluster::BROKER_NAME;
use crate::history::{Call, DrainMsg, DrainOp, Event, RecordError, Recorder};

/// Messages asked for per pull.
pub const DRAIN_BATCH: i32 = 256;
/// Pulls per queue and member at most (a guard against a member that never says "no more").
pub const MAX_DRAIN_ROUNDS: usize = 10_000;
/// Failed pulls of one queue on one member before the drain gives that queue up.
pub const DRAIN_ATTEMPTS: usize = 5;
/// Pause after a failed pull.
pub const DRAIN_RETRY_PAUSE: Duration = Duration::from_millis(500);
/// The most one target's whole drain may take; queues left then are reported as given up.
pub const DRAIN_TARGET_TIMEOUT: Duration = Duration::from_secs(120);

/// Where to drain from.
#[derive(Clone, Debug)]
pub struct Target {
    /// `None`: through the client's routing (the leader the NameServer names).
    pub member: Option<String>,
    /// The member's remoting address (unused for the client target).
    pub addr: Option<SocketAddr>,
}

/// What the drain did, for the run report.
#[derive(Clone, Debug, Default, Serialize)]
pub struct DrainReport {
    pub pulls: u64,
    pub messages: u64,
    /// Queue and target pairs that could not be read to the end.
    pub gave_up: Vec<String>,
}

/// Drains `topics` from every target, targets in parallel.
pub async fn drain_all(
    recorder: &Recorder,
    namesrv: &str,
    tls: &TlsConnector,
    targets: Vec<Target>,
    topics: &[&str],
) -> Result<DrainReport, RecordError> {
    let rpc = RpcClientConfig {
        tls: tls.clone(),
        ..RpcClientConfig::default()
    };
    let admin = match Admin::with_rpc_config(Some(namesrv), RPC_TIMEOUT, rpc) {
        Ok(a) => a,
        Err(e) => {
            return Ok(DrainReport {
                gave_up: vec![format!("no admin client: {e}")],
                ..DrainReport::default()
            });
        }
    };
    let runs = targets.into_iter().map(|target| {
        let admin = admin.clone();
        let recorder = recorder.clone();
        let topics: Vec<String> = topics.iter().map(|t| t.to_string()).collect();
        async move {
            let mut report = DrainReport::default();
            let deadline = tokio::time::Instant::now() + DRAIN_TARGET_TIMEOUT;
            for topic in &topics {
                for queue in 0..QUEUES_PER_TOPIC {
                    drain_queue(
                        &recorder,
                        &admin,
                        &target,
                        topic,
                        queue,
                        deadline,
                        &mut report,
                    )
                    .await?;
                }
            }
            Ok::<_, RecordError>(report)
        }
    });
    let mut total = DrainReport::default();
    for report in futures::future::join_all(runs).await {
        let report = report?;
        total.pulls += report.pulls;
        total.messages += report.messages;
        total.gave_up.extend(report.gave_up);
    }
    admin.shutdown().await;
    Ok(total)
}

async fn drain_queue(
    recorder: &Recorder,
    admin: &Admin,
    target: &Target,
    topic: &str,
    queue: u32,
    deadline: tokio::time::Instant,
    report: &mut DrainReport,
) -> Result<(), RecordError> {
    let process = format!("drain.{}", target.member.as_deref().unwrap_or("client"));
    let mq = MessageQueue {
        topic: topic.to_string(),
        broker_name: BROKER_NAME.to_string(),
        queue_id: i32::try_from(queue).unwrap_or(i32::MAX),
    };
    let mut from = 0u64;
    let mut failures = 0usize;
    for _ in 0..MAX_DRAIN_ROUNDS {
        if tokio::time::Instant::now() >= deadline {
            report.gave_up.push(format!(
                "{topic}/{queue} on {process} at {from}: out of the {DRAIN_TARGET_TIMEOUT:?} budget"
            ));
            return Ok(());
        }
        let mut op = DrainOp {
            member: target.member.clone(),
            topic: topic.to_string(),
            queue,
            from,
            msgs: vec![],
            min_offset: None,
        };
        recorder
            .record(Event::invoke(&process, Call::Drain(op.clone())))
            .await?;
        report.pulls += 1;
        let pulled = tokio::time::timeout(OP_TIMEOUT, async {
            let addr = match target.addr {
                Some(addr) => addr.to_string(),
                None => {
                    let route = admin
                        .route(topic)
                        .await?
                        .ok_or_else(|| ClientError::NoRoute {
                            topic: topic.to_string(),
                            reason: "unknown to the NameServer".into(),
                        })?;
                    route
                        .leader_addr(BROKER_NAME)
                        .map(str::to_string)
                        .ok_or_else(|| ClientError::NoRoute {
                            topic: topic.to_string(),
                            reason: "no leader".into(),
                        })?
                }
            };
            admin
                .pull_from(
                    &addr,
                    &mq,
                    i64::try_from(from).unwrap_or(i64::MAX),
                    DRAIN_BATCH,
                )
                .await
        })
        .await;
        let result = match pulled {
            Ok(Ok(result)) => result,
            Ok(Err(e)) => {
                let call = Call::Drain(op);
                let event = if e.is_unknown_outcome() {
                    Event::info(&process, call, e.to_string())
                } else {
                    Event::fail(&process, call, e.to_string())
                };
                recorder.record(event).await?;
                failures += 1;
                if failures >= DRAIN_ATTEMPTS {
                    report
                        .gave_up
                        .push(format!("{topic}/{queue} on {process} at {from}: {e}"));
                    return Ok(());
                }
                tokio::time::sleep(DRAIN_RETRY_PAUSE).await;
                continue;
            }
            Err(_) => {
                recorder
                    .record(Event::info(
                        &process,
                        Call::Drain(op),
                        format!("no answer within {OP_TIMEOUT:?}"),
                    ))
                    .await?;
                failures += 1;
                if failures >= DRAIN_ATTEMPTS {
                    report
                        .gave_up
                        .push(format!("{topic}/{queue} on {process} at {from}: timeouts"));
                    return Ok(());
                }
                continue;
            }
        };
        let mut next = from;
        let mut more = false;
        // The queue's minimum as this member reports it: below it retention removed messages.
        op.min_offset = u64::try_from(result.min_offset).ok();
        match result.status {
            PullStatus::Found => {
                for m in &result.messages {
                    let offset = u64::try_from(m.queue_offset).unwrap_or(0);
                    op.msgs.push(DrainMsg {
                        offset,
                        value: String::from_utf8_lossy(&m.body).into_owned(),
                    });
                    next = next.max(offset + 1);
                }
                report.messages += op.msgs.len() as u64;
                more = next > from;
            }
            PullStatus::NoNewMessages => {}
            PullStatus::RetryImmediately | PullStatus::OffsetMoved => {
                let moved = u64::try_from(result.next_begin_offset).unwrap_or(0);
                if moved > from {
                    next = moved;
                    more = true;
                }
            }
        }
        recorder
            .record(Event::ok(&process, Call::Drain(op)))
            .await?;
        if !more {
            return Ok(());
        }
        from = next;
    }
    report.gave_up.push(format!(
        "{topic}/{queue} on {process}: still reading after {MAX_DRAIN_ROUNDS} pulls"
    ));
    Ok(())
}
