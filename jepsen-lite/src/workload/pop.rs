//! W6 (the scenarios with [`crate::schedule::Scenario::pop`]): POP consumption. A producer sends
//! values `pp-0`, `pp-1`, ... to [`POP_TOPIC`]; consumers `pc1`, `pc2` of [`POP_GROUP`] pop
//! batches from any queue of the topic on the leader (`pop` operations listing what each
//! handed out) and ack each message (`pop_ack`), except about one in [`LEAVE_PERCENT`]: those
//! they let expire, so they come back after their invisible time with the next attempt. (The
//! group keeps RocketMQ's 16 retries: no message reaches the DLQ within a run unless a fault
//! keeps it from being acked that often.)
//!
//! After the run, [`drain`] pops and acks whatever is left until the group has nothing to hand
//! out for longer than an invisible time, then records the group's dead-letter topic
//! (`pop_dlq`). The `pop` checker judges it all: no message handed out again after an ack of
//! it was confirmed, and every acknowledged send acked or dead-lettered in the end.

use std::time::Duration;

use raftmq_client::{
    Admin, BrokerClient, ClientError, MessageQueue, PopRequest, PoppedMessage, Producer,
};
use tokio::time::Instant;

use super::{ClientRng, OP_TIMEOUT, RPC_TIMEOUT, Shared};
use crate::cluster::BROKER_NAME;
use crate::history::{Call, Event, OpType, PopAckOp, PopDlqOp, PopOp, PoppedMsg, RecordError};

/// The topic and consumer group of the POP workload.
pub const POP_TOPIC: &str = "jl-pop";
pub const POP_GROUP: &str = "jl-pop-g";
/// Consumers popping beside the producer.
pub const POP_CONSUMERS: usize = 2;
/// How long a popped message stays invisible before it comes back.
pub const INVISIBLE: Duration = Duration::from_secs(3);
/// The long poll of a pop: how long it waits for a message.
pub const POP_POLL: Duration = Duration::from_secs(1);
/// Messages per pop at most.
pub const POP_BATCH: i32 = 8;
/// Out of 100: popped messages a consumer lets expire instead of acking.
pub const LEAVE_PERCENT: u64 = 10;
/// The final drain stops once pops found nothing for this long (longer than an invisible
/// time, so that every message left to expire had its chance to come back) ...
pub const DRAIN_QUIET: Duration = Duration::from_secs(5);
/// ... or after this long in all.
pub const DRAIN_LIMIT: Duration = Duration::from_secs(60);
/// The RNG stream base of the POP clients.
const RNG_STREAM: u64 = 600;
/// The process that drains at the end.
const DRAIN_PROCESS: &str = "pd";
/// Tries at building a consumer's route client.
const SETUP_ATTEMPTS: usize = 20;

/// Runs the producer and the consumers until `shared.stop`.
pub async fn run(shared: Shared) -> Result<(), RecordError> {
    let producer = super::feed(&shared, "jl-pop-p", "pp", POP_TOPIC);
    let consumers = (1..=POP_CONSUMERS).map(|id| {
        let shared = shared.clone();
        async move {
            let Some(mut consumer) = PopConsumer::new(shared.clone(), format!("pc{id}"), id).await
            else {
                tracing::error!(id, "cannot build a POP consumer");
                return Ok(());
            };
            let result = async {
                while !consumer.shared.stop.is_cancelled() {
                    consumer.pop_once(true).await?;
                    if !consumer.shared.think().await {
                        break;
                    }
                }
                Ok(())
            }
            .await;
            consumer.shutdown().await;
            result
        }
    });
    let (produced, consumed) = tokio::join!(producer, futures::future::join_all(consumers));
    produced?;
    consumed.into_iter().collect()
}

/// One POP consumer: where it finds the leader, how it pops and acks, what it records.
struct PopConsumer {
    shared: Shared,
    process: String,
    /// For the route to the leader (its cache is refreshed after errors).
    routes: Producer,
    broker: BrokerClient,
    rng: ClientRng,
}

impl PopConsumer {
    /// A consumer, once its route client is built (retried up to [`SETUP_ATTEMPTS`] times,
    /// a think time apart); `None` if it never was.
    async fn new(shared: Shared, process: String, stream: usize) -> Option<Self> {
        let mut routes = None;
        for _ in 0..SETUP_ATTEMPTS {
            match shared.producer(&format!("jl-pop-route-{process}")).await {
                Ok(producer) => {
                    routes = Some(producer);
                    break;
                }
                Err(error) => {
                    tracing::warn!(%error, process, "cannot build a route client; retrying");
                    tokio::time::sleep(shared.think_time).await;
                }
            }
        }
        Some(PopConsumer {
            broker: BrokerClient::new(shared.rpc_client()).with_timeout(RPC_TIMEOUT),
            rng: ClientRng::new(shared.seed, RNG_STREAM + stream as u64),
            routes: routes?,
            shared,
            process,
        })
    }

    async fn shutdown(self) {
        self.routes.shutdown().await;
        self.broker.rpc().shutdown().await;
    }

    async fn leader(&self) -> Result<String, ClientError> {
        let route = self.routes.route(POP_TOPIC).await?;
        route
            .leader_addr(BROKER_NAME)
            .map(str::to_string)
            .ok_or_else(|| ClientError::NoRoute {
                topic: POP_TOPIC.into(),
                reason: "no leader".into(),
            })
    }

    async fn after_error(&self, error: &ClientError) {
        if error.needs_route_refresh() {
            let _ = self.routes.routes().refresh(POP_TOPIC).await;
        }
    }

    /// One pop and the acks of what it handed out (all of it unless `may_leave`): the number
    /// of messages popped, `None` when the pop failed.
    async fn pop_once(&mut self, may_leave: bool) -> Result<Option<usize>, RecordError> {
        let mut op = PopOp {
            topic: POP_TOPIC.into(),
            group: POP_GROUP.into(),
            messages: Vec::new(),
        };
        self.shared
            .recorder
            .record(Event::invoke(&self.process, Call::Pop(op.clone())))
            .await?;
        let popped = tokio::time::timeout(OP_TIMEOUT, async {
            let addr = self.leader().await?;
            let request = PopRequest {
                group: POP_GROUP.into(),
                queue: MessageQueue {
                    topic: POP_TOPIC.into(),
                    broker_name: BROKER_NAME.into(),
                    queue_id: -1,
                },
                max_messages: POP_BATCH,
                invisible: INVISIBLE,
                poll: Some(POP_POLL),
                expression: "*".into(),
                orderly: false,
            };
            let result = self.broker.pop(&addr, &request).await?;
            Ok::<_, ClientError>((addr, result))
        })
        .await;
        let (addr, messages) = match popped {
            Ok(Ok((addr, result))) => {
                op.messages = result.messages.iter().map(popped_msg).collect();
                let node = self.shared.node(&addr);
                let mut event = Event::ok(&self.process, Call::Pop(op));
                if let Some(node) = node {
                    event = event.with_node(node);
                }
                self.shared.recorder.record(event).await?;
                (addr, result.messages)
            }
            Ok(Err(error)) => {
                self.after_error(&error).await;
                // A pop whose answer was lost may have handed messages out: they come back
                // after their invisible time, which the checker allows.
                let event = if error.is_unknown_outcome() {
                    Event::info(&self.process, Call::Pop(op), error.to_string())
                } else {
                    Event::fail(&self.process, Call::Pop(op), error.to_string())
                };
                self.shared.recorder.record(event).await?;
                return Ok(None);
            }
            Err(_) => {
                let event = Event::info(
                    &self.process,
                    Call::Pop(op),
                    format!("no answer within the harness bound of {OP_TIMEOUT:?}"),
                );
                self.shared.recorder.record(event).await?;
                return Ok(None);
            }
        };
        for message in &messages {
            if may_leave && self.rng.below(100) < LEAVE_PERCENT {
                continue;
            }
            self.ack(&addr, message).await?;
        }
        Ok(Some(messages.len()))
    }

    async fn ack(&self, addr: &str, message: &PoppedMessage) -> Result<(), RecordError> {
        let popped = popped_msg(message);
        let op = PopAckOp {
            topic: POP_TOPIC.into(),
            group: POP_GROUP.into(),
            value: popped.value,
            queue: popped.queue,
            offset: popped.offset,
        };
        self.shared
            .recorder
            .record(Event::invoke(&self.process, Call::PopAck(op.clone())))
            .await?;
        let acked =
            tokio::time::timeout(OP_TIMEOUT, self.broker.ack(addr, POP_GROUP, message)).await;
        let call = Call::PopAck(op);
        let event = match acked {
            Ok(Ok(())) => Event::ok(&self.process, call),
            Ok(Err(error)) if error.is_unknown_outcome() => {
                Event::info(&self.process, call, error.to_string())
            }
            Ok(Err(error)) => Event::fail(&self.process, call, error.to_string()),
            Err(_) => Event::info(
                &self.process,
                call,
                format!("no answer within the harness bound of {OP_TIMEOUT:?}"),
            ),
        };
        let event = match self.shared.node(addr) {
            Some(node) => event.with_node(node),
            None => event,
        };
        self.shared.recorder.record(event).await
    }
}

/// What the history keeps of a popped message.
fn popped_msg(message: &PoppedMessage) -> PoppedMsg {
    let stored = &message.message;
    PoppedMsg {
        value: String::from_utf8_lossy(&stored.body).into_owned(),
        queue: u32::try_from(stored.queue.queue_id).unwrap_or(u32::MAX),
        offset: u64::try_from(stored.queue_offset).unwrap_or(u64::MAX),
        attempt: u32::try_from(stored.reconsume_times)
            .unwrap_or(0)
            .saturating_add(1),
    }
}

/// After the run (faults healed, workloads stopped): pops and acks everything the group still
/// has until it hands out nothing for [`DRAIN_QUIET`] (bounded by [`DRAIN_LIMIT`]), then
/// records what the group's dead-letter topic holds.
pub async fn drain(shared: Shared) -> Result<(), RecordError> {
    let mut drained = false;
    if let Some(mut consumer) = PopConsumer::new(shared.clone(), DRAIN_PROCESS.into(), 0).await {
        let started = Instant::now();
        let mut last_found = Instant::now();
        while started.elapsed() < DRAIN_LIMIT {
            if last_found.elapsed() >= DRAIN_QUIET {
                drained = true;
                break;
            }
            // Only pops that answered "nothing" count as quiet.
            if consumer.pop_once(false).await? != Some(0) {
                last_found = Instant::now();
            }
        }
        consumer.shutdown().await;
    }
    let (values, read_error) = match dead_letters(&shared).await {
        Ok(values) => (values, None),
        Err(error) => (Vec::new(), Some(error)),
    };
    let dlq = PopDlqOp {
        group: POP_GROUP.into(),
        values,
        read_error,
        drained,
    };
    shared
        .recorder
        .record(Event::new(DRAIN_PROCESS, OpType::Info, Call::PopDlq(dlq)))
        .await
}

/// Every value in `%DLQ%<group>` (none when the topic was never made).
async fn dead_letters(shared: &Shared) -> Result<Vec<String>, String> {
    let dlq = format!("%DLQ%{POP_GROUP}");
    let rpc = raftmq_remoting::RpcClientConfig {
        tls: shared.tls.clone(),
        ..Default::default()
    };
    let admin = Admin::with_rpc_config(Some(&shared.namesrv), RPC_TIMEOUT, rpc)
        .map_err(|error| error.to_string())?;
    let result = async {
        let Some(route) = admin.route(&dlq).await.map_err(|e| e.to_string())? else {
            return Ok(Vec::new());
        };
        let leader = route
            .leader_addr(BROKER_NAME)
            .ok_or("the DLQ's route names no leader")?
            .to_string();
        let mut values = Vec::new();
        for queue in &route.read_queues {
            let messages = admin
                .read_queue(&leader, queue, 0, 1_000_000)
                .await
                .map_err(|e| e.to_string())?;
            values.extend(
                messages
                    .iter()
                    .map(|m| String::from_utf8_lossy(&m.body).into_owned()),
            );
        }
        Ok(values)
    }
    .await;
    admin.shutdown().await;
    result
}
