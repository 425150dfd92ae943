//! W1: about ten clients, each doing a seeded mix of send, poll, commit-offset, fetch-offset
//! and reassign on [`W1_TOPIC`].
//!
//! Client `cN` sends values `cN-0`, `cN-1`, ... and consumes as consumer `cN` of its own group
//! `jl-w1-cN`, with an explicit assignment (a subset of the topic's queues) and its own
//! positions: a poll pulls from the queue leader at the position and moves past what it got;
//! a commit stores the position as the group's offset (only forward of what the client had
//! acknowledged, so the workload itself never commits backwards); a reassign picks a new
//! subset (a new epoch for the order checker) and starts newly taken queues at the group's
//! committed offset, read with a recorded `fetch_offset`. One group per client keeps the
//! committed offsets of a group a single client's business, so `commit_order` can judge them.

use std::collections::BTreeMap;

use raftmq_client::{BrokerClient, ClientError, MessageQueue, Producer, PullRequest, PullStatus};
use raftmq_remoting::RpcClient;

use super::{
    ClientRng, OP_TIMEOUT, QUEUES_PER_TOPIC, RPC_TIMEOUT, Shared, W1_TOPIC, recorded_send,
};
use crate::cluster::BROKER_NAME;
use crate::history::{
    AssignOp, Call, CommitOp, Event, FetchOffsetOp, PollOp, PolledMsg, QueueMin, QueueRef,
    RecordError,
};

/// Clients of W1 (the "about 10").
pub const W1_CLIENTS: usize = 10;
/// Messages one poll asks for.
pub const W1_PULL_BATCH: i32 = 16;
/// Out of 100: how often each operation is chosen (the rest is reassign).
const SEND_WEIGHT: u64 = 50;
const POLL_WEIGHT: u64 = 30;
const COMMIT_WEIGHT: u64 = 10;
const FETCH_WEIGHT: u64 = 5;

/// The RNG stream base of W1 clients (streams of other workloads differ).
const RNG_STREAM: u64 = 100;

struct Client {
    shared: Shared,
    process: String,
    group: String,
    producer: Producer,
    rpc: RpcClient,
    broker: BrokerClient,
    rng: ClientRng,
    sent: u64,
    /// Queue id -> next offset to read.
    positions: BTreeMap<u32, u64>,
    /// Queue id -> highest offset the broker acknowledged as committed for the group.
    acked_commit: BTreeMap<u32, u64>,
    /// Rotates polls over the assignment.
    poll_turn: usize,
}

fn queue(queue_id: u32) -> MessageQueue {
    MessageQueue {
        topic: W1_TOPIC.to_string(),
        broker_name: BROKER_NAME.to_string(),
        queue_id: i32::try_from(queue_id).unwrap_or(i32::MAX),
    }
}

fn queue_ref(queue_id: u32) -> QueueRef {
    QueueRef {
        topic: W1_TOPIC.to_string(),
        queue: queue_id,
    }
}

/// Runs client `id` until `shared.stop`. Returns on stop or when the history is closed.
pub async fn run_client(shared: Shared, id: usize) -> Result<(), RecordError> {
    let process = format!("c{id}");
    let producer = match shared.producer(&format!("jl-w1-p{id}")).await {
        Ok(p) => p,
        Err(e) => {
            tracing::error!(client = %process, error = %e, "cannot build a producer");
            return Ok(());
        }
    };
    let rpc = shared.rpc_client();
    let mut client = Client {
        group: format!("jl-w1-{process}"),
        process,
        broker: BrokerClient::new(rpc.clone()).with_timeout(RPC_TIMEOUT),
        rpc,
        producer,
        rng: ClientRng::new(shared.seed, RNG_STREAM + id as u64),
        sent: 0,
        positions: BTreeMap::new(),
        acked_commit: BTreeMap::new(),
        poll_turn: 0,
        shared,
    };
    let result = client.run().await;
    client.producer.shutdown().await;
    client.rpc.shutdown().await;
    result
}

impl Client {
    async fn run(&mut self) -> Result<(), RecordError> {
        self.reassign(true).await?;
        while !self.shared.stop.is_cancelled() {
            let roll = self.rng.below(100);
            if roll < SEND_WEIGHT {
                self.send().await?;
            } else if roll < SEND_WEIGHT + POLL_WEIGHT {
                self.poll().await?;
            } else if roll < SEND_WEIGHT + POLL_WEIGHT + COMMIT_WEIGHT {
                self.commit().await?;
            } else if roll < SEND_WEIGHT + POLL_WEIGHT + COMMIT_WEIGHT + FETCH_WEIGHT {
                let q = self.pick_assigned();
                self.fetch_offset(q).await?;
            } else {
                self.reassign(false).await?;
            }
            if !self.shared.think().await {
                break;
            }
        }
        Ok(())
    }

    async fn record(&self, event: Event) -> Result<(), RecordError> {
        self.shared.recorder.record(event).await
    }

    async fn send(&mut self) -> Result<(), RecordError> {
        let value = format!("{}-{}", self.process, self.sent);
        self.sent += 1;
        recorded_send(
            &self.shared,
            &self.producer,
            &self.process,
            W1_TOPIC,
            None,
            value,
        )
        .await
        .map(|_| ())
    }

    fn pick_assigned(&mut self) -> u32 {
        let queues: Vec<u32> = self.positions.keys().copied().collect();
        if queues.is_empty() {
            return 0;
        }
        self.poll_turn = (self.poll_turn + 1) % queues.len();
        queues[self.poll_turn]
    }

    /// The current leader's address for the topic (from the producer's route cache).
    async fn leader(&self) -> Result<String, ClientError> {
        let route = self.producer.route(W1_TOPIC).await?;
        route
            .leader_addr(BROKER_NAME)
            .map(str::to_string)
            .ok_or_else(|| ClientError::NoRoute {
                topic: W1_TOPIC.into(),
                reason: "no leader".into(),
            })
    }

    async fn after_error(&self, error: &ClientError) {
        if error.needs_route_refresh() {
            let _ = self.producer.routes().refresh(W1_TOPIC).await;
        }
    }

    fn failed(&self, call: Call, error: &ClientError) -> Event {
        if error.is_unknown_outcome() {
            Event::info(&self.process, call, error.to_string())
        } else {
            Event::fail(&self.process, call, error.to_string())
        }
    }

    fn timed_out(&self, call: Call) -> Event {
        Event::info(
            &self.process,
            call,
            format!("no answer within the harness bound of {OP_TIMEOUT:?}"),
        )
    }

    async fn poll(&mut self) -> Result<(), RecordError> {
        if self.positions.is_empty() {
            return self.reassign(false).await;
        }
        let q = self.pick_assigned();
        let position = self.positions.get(&q).copied().unwrap_or(0);
        let mut op = PollOp {
            consumer: self.process.clone(),
            group: self.group.clone(),
            msgs: vec![],
            min_offsets: vec![],
        };
        self.record(Event::invoke(&self.process, Call::Poll(op.clone())))
            .await?;
        let pulled = tokio::time::timeout(OP_TIMEOUT, async {
            let addr = self.leader().await?;
            let request = PullRequest::new(
                &self.group,
                queue(q),
                i64::try_from(position).unwrap_or(i64::MAX),
                W1_PULL_BATCH,
            );
            let result = self.broker.pull(&addr, &request).await?;
            Ok::<_, ClientError>((addr, result))
        })
        .await;
        let event = match pulled {
            Ok(Ok((addr, result))) => {
                let mut next = position;
                let mut outcome = None;
                // Every answer carries the queue's minimum: the checkers tell messages removed
                // by retention (below it) from lost ones.
                if let Ok(min_offset) = u64::try_from(result.min_offset) {
                    op.min_offsets.push(QueueMin {
                        topic: W1_TOPIC.into(),
                        queue: q,
                        min_offset,
                    });
                }
                match result.status {
                    PullStatus::Found => {
                        for m in &result.messages {
                            let offset = u64::try_from(m.queue_offset).unwrap_or(0);
                            op.msgs.push(PolledMsg {
                                topic: W1_TOPIC.into(),
                                queue: q,
                                offset,
                                value: String::from_utf8_lossy(&m.body).into_owned(),
                            });
                            next = next.max(offset + 1);
                        }
                    }
                    PullStatus::NoNewMessages => {}
                    PullStatus::RetryImmediately | PullStatus::OffsetMoved => {
                        let moved = u64::try_from(result.next_begin_offset).unwrap_or(0);
                        if moved >= position {
                            next = moved;
                        } else {
                            outcome = Some(format!(
                                "the broker moved the offset back from {position} to {moved}"
                            ));
                        }
                    }
                }
                self.positions.insert(q, next);
                let node = self.shared.node(&addr);
                let event = match outcome {
                    Some(error) => Event::fail(&self.process, Call::Poll(op), error),
                    None => Event::ok(&self.process, Call::Poll(op)),
                };
                match node {
                    Some(n) => event.with_node(n),
                    None => event,
                }
            }
            Ok(Err(error)) => {
                self.after_error(&error).await;
                self.failed(Call::Poll(op), &error)
            }
            Err(_) => self.timed_out(Call::Poll(op)),
        };
        self.record(event).await
    }

    async fn commit(&mut self) -> Result<(), RecordError> {
        // Only forward of what the broker acknowledged for this group.
        let candidates: Vec<(u32, u64)> = self
            .positions
            .iter()
            .filter(|(q, pos)| **pos > self.acked_commit.get(q).copied().unwrap_or(0))
            .map(|(q, pos)| (*q, *pos))
            .collect();
        if candidates.is_empty() {
            let q = self.pick_assigned();
            return self.fetch_offset(q).await;
        }
        let (q, offset) = candidates[self.rng.below(candidates.len() as u64) as usize];
        let op = CommitOp {
            group: self.group.clone(),
            topic: W1_TOPIC.into(),
            queue: q,
            offset,
            consumer: Some(self.process.clone()),
        };
        self.record(Event::invoke(&self.process, Call::Commit(op.clone())))
            .await?;
        let done = tokio::time::timeout(OP_TIMEOUT, async {
            let addr = self.leader().await?;
            self.broker
                .update_consumer_offset(
                    &addr,
                    &self.group,
                    &queue(q),
                    i64::try_from(offset).unwrap_or(i64::MAX),
                )
                .await?;
            Ok::<_, ClientError>(addr)
        })
        .await;
        let event = match done {
            Ok(Ok(addr)) => {
                let acked = self.acked_commit.entry(q).or_insert(offset);
                *acked = (*acked).max(offset);
                let event = Event::ok(&self.process, Call::Commit(op));
                match self.shared.node(&addr) {
                    Some(n) => event.with_node(n),
                    None => event,
                }
            }
            Ok(Err(error)) => {
                self.after_error(&error).await;
                self.failed(Call::Commit(op), &error)
            }
            Err(_) => self.timed_out(Call::Commit(op)),
        };
        self.record(event).await
    }

    /// Reads the group's committed offset of queue `q`; returns it when the read succeeded
    /// (`Some(None)`: the group has none).
    async fn fetch_offset(&mut self, q: u32) -> Result<(), RecordError> {
        self.fetch_offset_value(q).await.map(|_| ())
    }

    async fn fetch_offset_value(&mut self, q: u32) -> Result<Option<Option<u64>>, RecordError> {
        let mut op = FetchOffsetOp {
            group: self.group.clone(),
            topic: W1_TOPIC.into(),
            queue: q,
            offset: None,
        };
        self.record(Event::invoke(&self.process, Call::FetchOffset(op.clone())))
            .await?;
        let done = tokio::time::timeout(OP_TIMEOUT, async {
            let addr = self.leader().await?;
            let offset = self
                .broker
                .query_consumer_offset(&addr, &self.group, &queue(q))
                .await?;
            Ok::<_, ClientError>((addr, offset))
        })
        .await;
        let (event, value) = match done {
            Ok(Ok((addr, offset))) => {
                op.offset = offset.and_then(|o| u64::try_from(o).ok());
                let value = op.offset;
                let event = Event::ok(&self.process, Call::FetchOffset(op));
                let event = match self.shared.node(&addr) {
                    Some(n) => event.with_node(n),
                    None => event,
                };
                (event, Some(value))
            }
            Ok(Err(error)) => {
                self.after_error(&error).await;
                (self.failed(Call::FetchOffset(op), &error), None)
            }
            Err(_) => (self.timed_out(Call::FetchOffset(op)), None),
        };
        self.record(event).await?;
        Ok(value)
    }

    /// Picks a new non-empty subset of the queues (`first`: the initial `assign`), then
    /// starts each newly taken queue at the group's committed offset.
    async fn reassign(&mut self, first: bool) -> Result<(), RecordError> {
        let mut chosen: Vec<u32> = (0..QUEUES_PER_TOPIC)
            .filter(|_| self.rng.below(2) == 0)
            .collect();
        if chosen.is_empty() {
            chosen.push(self.rng.below(u64::from(QUEUES_PER_TOPIC)) as u32);
        }
        let op = AssignOp {
            consumer: self.process.clone(),
            group: self.group.clone(),
            queues: chosen.iter().map(|q| queue_ref(*q)).collect(),
        };
        let call = |op: AssignOp| {
            if first {
                Call::Assign(op)
            } else {
                Call::Reassign(op)
            }
        };
        self.record(Event::invoke(&self.process, call(op.clone())))
            .await?;
        // The assignment is the client's own decision: it always takes effect.
        self.record(Event::ok(&self.process, call(op))).await?;
        let kept: BTreeMap<u32, u64> = self
            .positions
            .iter()
            .filter(|(q, _)| chosen.contains(q))
            .map(|(q, p)| (*q, *p))
            .collect();
        self.positions = kept;
        for q in chosen {
            if self.positions.contains_key(&q) {
                continue;
            }
            let start = match self.fetch_offset_value(q).await? {
                Some(Some(committed)) => committed,
                Some(None) => 0,
                // Unknown: what this client knows the group acknowledged (a lower bound).
                None => self.acked_commit.get(&q).copied().unwrap_or(0),
            };
            self.positions.insert(q, start);
        }
        Ok(())
    }
}
