//! The leader-side proposal batcher: concurrent requests are packed into Raft entries and
//! proposed without waiting for earlier ones to commit.
//!
//! Sends from many connections queue here; one task takes everything queued (bounded in messages
//! and bytes), encodes it as one `Command::Send` entry and hands it to openraft with
//! `client_write_ff`, in order, so the log order is the order sends reached this queue. A
//! bounded number of entries may be in flight; a responder task per entry waits for its apply
//! result and answers each waiting request with its own outcome.
//!
//! Outcomes follow openraft's semantics: `ForwardToLeader` means the entry was refused before it
//! was appended (never committed), so the sender learns a definite failure; an entry discarded
//! on a leader change (`LogEntryDiscarded`) or one that got no answer in time has an unknown
//! outcome (it may still commit).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use tokio::sync::{Semaphore, mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, warn};

use crate::command::{
    Applied, Command, MAX_MESSAGES_PER_ENTRY, MessageSlot, SendBatch, SendOutcome, SendUnit,
    decode_applied, encode_entry,
};
use crate::topic::TopicConfig;
use raftmq_raft::{AppRequest, ClientWriteError, ClientWriteResult, NodeId, Raft, WriteResponder};

/// Most messages packed into one entry.
pub const MAX_BATCH_MESSAGES: usize = 8192;
/// Most message bytes packed into one entry (a single larger message still gets its own entry).
pub const MAX_BATCH_BYTES: usize = 4 << 20;
/// Entries proposed and not yet answered; more waits, so the queue fills and batches grow.
/// Measured with openraft 0.9, whose leader fsynced each entry on its own, one after another, so
/// entries beyond a few in flight only queued inside openraft while staying small: with 256 async
/// sends in flight (release, 3 members on loopback, busy 2-core box) 64 in flight gave 3.8k
/// msgs/s, 4 gave 8.7k msgs/s. 0.10 no longer serializes the leader's fsyncs; not re-measured.
pub const MAX_IN_FLIGHT_PROPOSALS: usize = 4;
/// Requests waiting to be packed.
pub const PROPOSAL_QUEUE_CAPACITY: usize = 16384;
/// How long a proposal may wait for its apply result before its outcome is called unknown.
pub const PROPOSAL_TIMEOUT: Duration = Duration::from_secs(10);

const _: () = assert!(MAX_BATCH_MESSAGES <= MAX_MESSAGES_PER_ENTRY);

/// Why a proposal did not produce an answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProposeError {
    /// This member does not lead; nothing was (or will be) applied.
    #[error("this broker is not the leader of its group (leader: {leader:?})")]
    NotLeader { leader: Option<NodeId> },
    /// The broker is stopping; nothing was proposed.
    #[error("the broker is shutting down")]
    ShuttingDown,
    /// Proposed, but no result: it may or may not be applied.
    #[error("outcome unknown: {0}")]
    Unknown(String),
    /// The state machine's answer could not be read: an internal fault.
    #[error("unreadable apply result: {0}")]
    BadAnswer(String),
}

/// One message to store: its bytes in RocketMQ's stored layout and its tag's hash.
#[derive(Debug, Clone)]
pub struct PendingMessage {
    pub bytes: Bytes,
    pub tags_code: i64,
}

/// The messages of one send request, all for one queue.
#[derive(Debug)]
pub struct SendRequest {
    pub topic: String,
    pub queue_id: u32,
    pub create_topic: Option<TopicConfig>,
    pub messages: Vec<PendingMessage>,
}

impl SendRequest {
    fn byte_len(&self) -> usize {
        self.messages.iter().map(|m| m.bytes.len()).sum()
    }
}

enum Proposal {
    Send {
        request: SendRequest,
        reply: oneshot::Sender<Result<SendOutcome, ProposeError>>,
    },
    Command {
        command: Command,
        reply: oneshot::Sender<Result<Applied, ProposeError>>,
    },
}

/// The handle processors propose through. Cheap to clone.
#[derive(Clone)]
pub struct Proposer {
    queue: mpsc::Sender<Proposal>,
}

impl Proposer {
    /// Starts the batcher task on `tracker`; it stops when `shutdown` fires or every
    /// `Proposer` is dropped, after answering what is in flight.
    pub fn start(raft: Raft, tracker: &TaskTracker, shutdown: CancellationToken) -> Self {
        let (queue, receiver) = mpsc::channel(PROPOSAL_QUEUE_CAPACITY);
        let batcher = Batcher {
            raft,
            receiver,
            in_flight: Arc::new(Semaphore::new(MAX_IN_FLIGHT_PROPOSALS)),
            tracker: tracker.clone(),
            last_store_timestamp_ms: 0,
            carried: None,
        };
        tracker.spawn(batcher.run(shutdown));
        Self { queue }
    }

    /// Stores the messages of one send request; answers once they are committed and applied.
    pub async fn send(&self, request: SendRequest) -> Result<SendOutcome, ProposeError> {
        let (reply, answer) = oneshot::channel();
        self.queue
            .send(Proposal::Send { request, reply })
            .await
            .map_err(|_| ProposeError::ShuttingDown)?;
        // A dropped reply means the batcher stopped after taking the request: unknown.
        answer
            .await
            .unwrap_or_else(|_| Err(ProposeError::Unknown("broker stopped".into())))
    }

    /// Proposes one non-send command in an entry of its own.
    pub async fn propose(&self, command: Command) -> Result<Applied, ProposeError> {
        let (reply, answer) = oneshot::channel();
        self.queue
            .send(Proposal::Command { command, reply })
            .await
            .map_err(|_| ProposeError::ShuttingDown)?;
        answer
            .await
            .unwrap_or_else(|_| Err(ProposeError::Unknown("broker stopped".into())))
    }
}

type SendReply = oneshot::Sender<Result<SendOutcome, ProposeError>>;

struct Batcher {
    raft: Raft,
    receiver: mpsc::Receiver<Proposal>,
    in_flight: Arc<Semaphore>,
    tracker: TaskTracker,
    /// Store timestamps never go back, even if the clock does.
    last_store_timestamp_ms: i64,
    /// A proposal taken from the queue that did not fit the previous batch.
    carried: Option<Proposal>,
}

impl Batcher {
    async fn run(mut self, shutdown: CancellationToken) {
        loop {
            // Wait for a slot first, so requests pile up (and batch) while entries are in flight.
            let permit = tokio::select! {
                _ = shutdown.cancelled() => break,
                permit = self.in_flight.clone().acquire_owned() => match permit {
                    Ok(permit) => permit,
                    Err(_) => break,
                },
            };
            let first = match self.carried.take() {
                Some(proposal) => proposal,
                None => tokio::select! {
                    _ = shutdown.cancelled() => break,
                    next = self.receiver.recv() => match next {
                        Some(proposal) => proposal,
                        None => break,
                    },
                },
            };
            match first {
                Proposal::Command { command, reply } => {
                    self.propose_command(command, reply, permit).await;
                }
                Proposal::Send { request, reply } => {
                    let batch = self.collect_sends(request, reply);
                    self.propose_sends(batch, permit).await;
                }
            }
        }
        // Refuse whatever is still queued: none of it was proposed.
        self.receiver.close();
        let carried = self.carried.take();
        for proposal in carried
            .into_iter()
            .chain(std::iter::from_fn(|| self.receiver.try_recv().ok()))
        {
            match proposal {
                Proposal::Send { reply, .. } => drop(reply.send(Err(ProposeError::ShuttingDown))),
                Proposal::Command { reply, .. } => {
                    drop(reply.send(Err(ProposeError::ShuttingDown)))
                }
            }
        }
    }

    /// Takes queued sends after `first` until a limit or a non-send proposal.
    fn collect_sends(
        &mut self,
        first: SendRequest,
        reply: SendReply,
    ) -> Vec<(SendRequest, SendReply)> {
        let mut messages = first.messages.len();
        let mut bytes = first.byte_len();
        let mut batch = vec![(first, reply)];
        while let Ok(next) = self.receiver.try_recv() {
            match next {
                Proposal::Send { request, reply } => {
                    let fits = messages + request.messages.len() <= MAX_BATCH_MESSAGES
                        && bytes + request.byte_len() <= MAX_BATCH_BYTES;
                    if !fits {
                        self.carried = Some(Proposal::Send { request, reply });
                        break;
                    }
                    messages += request.messages.len();
                    bytes += request.byte_len();
                    batch.push((request, reply));
                }
                command @ Proposal::Command { .. } => {
                    // Commands keep their place in the order: they go after this batch.
                    self.carried = Some(command);
                    break;
                }
            }
        }
        batch
    }

    fn next_store_timestamp_ms(&mut self) -> i64 {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0);
        self.last_store_timestamp_ms = self.last_store_timestamp_ms.max(now);
        self.last_store_timestamp_ms
    }

    async fn propose_sends(
        &mut self,
        batch: Vec<(SendRequest, SendReply)>,
        permit: tokio::sync::OwnedSemaphorePermit,
    ) {
        let total_bytes: usize = batch.iter().map(|(request, _)| request.byte_len()).sum();
        let mut blob = Vec::with_capacity(total_bytes);
        // Requests for the same queue share one unit (in arrival order), so an entry costs the
        // state machine one index row per queue, not one per request. Each reply remembers its
        // unit and where its messages start in it.
        let mut units: Vec<SendUnit> = Vec::new();
        let mut unit_of_queue: HashMap<(String, u32), usize> = HashMap::new();
        let mut replies: Vec<(SendReply, usize, u32)> = Vec::with_capacity(batch.len());
        for (request, reply) in batch {
            let key = (request.topic, request.queue_id);
            let unit_index = match unit_of_queue.get(&key) {
                Some(index) => *index,
                None => {
                    units.push(SendUnit {
                        topic: key.0.clone(),
                        queue_id: key.1,
                        create_topic: None,
                        messages: Vec::new(),
                    });
                    unit_of_queue.insert(key, units.len() - 1);
                    units.len() - 1
                }
            };
            let unit = &mut units[unit_index];
            if unit.create_topic.is_none() {
                unit.create_topic = request.create_topic;
            }
            let start_in_unit = unit.messages.len() as u32;
            for message in &request.messages {
                unit.messages.push(MessageSlot {
                    start: blob.len() as u32,
                    len: message.bytes.len() as u32,
                    tags_code: message.tags_code,
                });
                blob.extend_from_slice(&message.bytes);
            }
            replies.push((reply, unit_index, start_in_unit));
        }
        let command = Command::Send(SendBatch {
            store_timestamp_ms: self.next_store_timestamp_ms(),
            units,
        });
        let unit_count = unit_of_queue.len();
        let answer = self.write(&command, &blob).await;
        self.tracker.spawn(async move {
            let outcomes = match answer {
                Err(err) => Err(err),
                Ok(receiver) => await_applied(receiver)
                    .await
                    .and_then(|applied| match applied {
                        Applied::Sent(outcomes) if outcomes.len() == unit_count => Ok(outcomes),
                        other => Err(ProposeError::BadAnswer(format!(
                            "expected {unit_count} send outcomes, got {other:?}"
                        ))),
                    }),
            };
            drop(permit);
            match outcomes {
                Ok(outcomes) => {
                    for (reply, unit_index, start) in replies {
                        let outcome = match &outcomes[unit_index] {
                            SendOutcome::Stored {
                                first_offset,
                                log_index,
                                first_ordinal,
                            } => SendOutcome::Stored {
                                first_offset: first_offset + u64::from(start),
                                log_index: *log_index,
                                first_ordinal: first_ordinal + start,
                            },
                            refused @ SendOutcome::Refused(_) => refused.clone(),
                        };
                        let _ = reply.send(Ok(outcome));
                    }
                }
                Err(err) => {
                    for (reply, _, _) in replies {
                        let _ = reply.send(Err(err.clone()));
                    }
                }
            }
        });
    }

    async fn propose_command(
        &mut self,
        command: Command,
        reply: oneshot::Sender<Result<Applied, ProposeError>>,
        permit: tokio::sync::OwnedSemaphorePermit,
    ) {
        let answer = self.write(&command, &[]).await;
        self.tracker.spawn(async move {
            let result = match answer {
                Err(err) => Err(err),
                Ok(receiver) => await_applied(receiver).await,
            };
            drop(permit);
            let _ = reply.send(result);
        });
    }

    /// Hands one entry to openraft; returns the receiver of its apply result.
    async fn write(&self, command: &Command, blob: &[u8]) -> Result<WriteReceiver, ProposeError> {
        let payload =
            encode_entry(command, blob).map_err(|err| ProposeError::BadAnswer(err.to_string()))?;
        let (responder, receiver) = WriteResponder::complete_only();
        self.raft
            .client_write_ff(AppRequest(payload), Some(responder))
            .await
            .map_err(|fatal| {
                debug!(error = %fatal, "raft stopped before accepting a proposal");
                ProposeError::ShuttingDown
            })?;
        Ok(receiver)
    }
}

type WriteReceiver = oneshot::Receiver<ClientWriteResult>;

async fn await_applied(receiver: WriteReceiver) -> Result<Applied, ProposeError> {
    let result = match tokio::time::timeout(PROPOSAL_TIMEOUT, receiver).await {
        Err(_) => {
            return Err(ProposeError::Unknown(format!(
                "no commit within {PROPOSAL_TIMEOUT:?}"
            )));
        }
        Ok(Err(_)) => return Err(ProposeError::Unknown("raft dropped the proposal".into())),
        Ok(Ok(result)) => result,
    };
    match result {
        Ok(response) => {
            decode_applied(&response.data.0).map_err(|err| ProposeError::BadAnswer(err.to_string()))
        }
        // Refused before it was appended: never committed.
        Err(ClientWriteError::ForwardToLeader(forward)) => Err(ProposeError::NotLeader {
            leader: forward.leader_id,
        }),
        // Appended, then replaced by another leader's log: it may still have committed there.
        Err(ClientWriteError::LogEntryDiscarded(forward)) => Err(ProposeError::Unknown(format!(
            "the entry was discarded on a leader change (leader now: {:?})",
            forward.leader_id
        ))),
        // Data proposals carry no preconditions.
        Err(ClientWriteError::PreconditionFailed(err)) => {
            warn!(error = %err, "a data proposal failed a precondition");
            Err(ProposeError::Unknown(err.to_string()))
        }
        Err(ClientWriteError::ChangeMembershipError(err)) => {
            warn!(error = %err, "a data proposal met a membership error");
            Err(ProposeError::Unknown(err.to_string()))
        }
    }
}
