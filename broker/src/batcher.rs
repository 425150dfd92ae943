//! The leader-side proposal batcher: concurrent requests are packed into Raft entries and
//! proposed without waiting for earlier ones to commit.
//!
//! Sends from many connections queue here; one task takes everything queued (bounded in messages
//! and bytes), encodes it as one `Command::Send` entry and hands it to openraft with
//! `client_write_ff`, in order, so the log order is the order sends reached this queue. A
//! bounded number of entries may be in flight; each entry's responder (a callback openraft calls
//! once the entry is applied or refused) answers each waiting request with its own outcome,
//! without a task of its own in between.
//!
//! The queue is bounded twice ([`QueueLimits`]): in requests and in message bytes, since a
//! request can carry up to a frame of messages. A send waits while either bound is reached; a
//! single request larger than the byte bound waits for an empty queue and then goes alone.
//!
//! Outcomes follow openraft's semantics: `ForwardToLeader` means the entry was refused before it
//! was appended (never committed), so the sender learns a definite failure; an entry discarded
//! on a leader change (`LogEntryDiscarded`) or one that got no answer in time has an unknown
//! outcome (it may still commit). On shutdown, every request still queued or waiting for room is
//! answered `ShuttingDown` (never proposed).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot};
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
/// Message bytes waiting to be packed: what bounds the queue's memory, since one request may
/// carry up to a frame (16 MiB) of messages. Sixteen full entries keep the batcher busy while
/// [`MAX_IN_FLIGHT_PROPOSALS`] are in flight.
pub const PROPOSAL_QUEUE_BYTES: u32 = 16 * MAX_BATCH_BYTES as u32;
/// How long a request may wait, from entering the queue, for its apply result before its
/// outcome is called unknown.
pub const PROPOSAL_TIMEOUT: Duration = Duration::from_secs(10);

const _: () = assert!(MAX_BATCH_MESSAGES <= MAX_MESSAGES_PER_ENTRY);
const _: () = assert!(MAX_BATCH_BYTES <= u32::MAX as usize / 16);

/// How much may wait in the proposal queue; `Default` gives the named constants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueLimits {
    /// Requests (sends and commands).
    pub requests: usize,
    /// Message bytes of the queued sends.
    pub bytes: u32,
}

impl Default for QueueLimits {
    fn default() -> Self {
        Self {
            requests: PROPOSAL_QUEUE_CAPACITY,
            bytes: PROPOSAL_QUEUE_BYTES,
        }
    }
}

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
    Unknown(UnknownOutcome),
    /// The state machine's answer could not be read: an internal fault.
    #[error("unreadable apply result: {0}")]
    BadAnswer(String),
}

/// Why a proposal handed to Raft got no result. It may still commit.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UnknownOutcome {
    #[error("no commit within {0:?}")]
    NoCommitWithin(Duration),
    #[error("raft dropped the proposal")]
    DroppedByRaft,
    #[error("broker stopped")]
    BrokerStopped,
    /// openraft reported a membership error for a data proposal (its message).
    #[error("{0}")]
    MembershipChange(String),
    /// The entry was appended, then replaced by another leader's log: it may have committed
    /// there.
    #[error("the entry was discarded on a leader change (leader now: {leader:?})")]
    DiscardedOnLeaderChange { leader: Option<u64> },
    /// openraft reported a failed precondition for a data proposal (which carries none).
    #[error("{0}")]
    PreconditionFailed(String),
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
    Send(QueuedSend),
    Command {
        command: Command,
        /// The message bytes the command's slots point into (empty for most commands).
        blob: Bytes,
        reply: oneshot::Sender<Result<Applied, ProposeError>>,
    },
}

/// The handle processors propose through. Cheap to clone.
#[derive(Clone)]
pub struct Proposer {
    queue: mpsc::Sender<Proposal>,
    /// Permits for the message bytes that may wait in the queue; closed when the batcher stops.
    queue_bytes: Arc<Semaphore>,
    byte_limit: u32,
}

impl Proposer {
    /// Starts the batcher task on `tracker` with the default [`QueueLimits`]; it stops when
    /// `shutdown` fires or every `Proposer` is dropped, after answering what is in flight.
    /// Every send entry carries `dedup_window` (see [`SendBatch::dedup_window_ms`]).
    pub fn start(
        raft: Raft,
        tracker: &TaskTracker,
        shutdown: CancellationToken,
        dedup_window: Duration,
    ) -> Self {
        let (proposer, mut batcher) = Self::new(raft, QueueLimits::default());
        batcher.dedup_window_ms = dedup_window.as_millis() as u64;
        tracker.spawn(batcher.run(shutdown));
        proposer
    }

    /// A proposer and its batcher, not yet running (tests start it when they choose).
    fn new(raft: Raft, limits: QueueLimits) -> (Self, Batcher) {
        let (queue, receiver) = mpsc::channel(limits.requests);
        let queue_bytes = Arc::new(Semaphore::new(limits.bytes as usize));
        let batcher = Batcher {
            raft,
            receiver,
            queue_bytes: queue_bytes.clone(),
            in_flight: Arc::new(Semaphore::new(MAX_IN_FLIGHT_PROPOSALS)),
            last_store_timestamp_ms: 0,
            dedup_window_ms: 0,
            carried: None,
        };
        let proposer = Self {
            queue,
            queue_bytes,
            byte_limit: limits.bytes,
        };
        (proposer, batcher)
    }

    /// Stores the messages of one send request; answers once they are committed and applied.
    /// Waits while the queue is full, in requests or in bytes.
    pub async fn send(&self, request: SendRequest) -> Result<SendOutcome, ProposeError> {
        // A request larger than the whole byte bound takes all of it: it waits until the queue
        // is empty of bytes and then goes alone, instead of waiting for ever.
        let share = u32::try_from(request.byte_len())
            .unwrap_or(u32::MAX)
            .min(self.byte_limit);
        let queued_bytes = self
            .queue_bytes
            .clone()
            .acquire_many_owned(share)
            .await
            .map_err(|_| ProposeError::ShuttingDown)?;
        let (reply, answer) = oneshot::channel();
        self.queue
            .send(Proposal::Send(QueuedSend {
                request,
                reply,
                queued_bytes,
            }))
            .await
            .map_err(|_| ProposeError::ShuttingDown)?;
        await_answer(answer).await
    }

    /// Proposes one non-send command in an entry of its own.
    pub async fn propose(&self, command: Command) -> Result<Applied, ProposeError> {
        self.propose_with_messages(command, Bytes::new()).await
    }

    /// Proposes a command whose message slots point into `blob` (a release) in an entry of its
    /// own.
    pub async fn propose_with_messages(
        &self,
        command: Command,
        blob: Bytes,
    ) -> Result<Applied, ProposeError> {
        let (reply, answer) = oneshot::channel();
        self.queue
            .send(Proposal::Command {
                command,
                blob,
                reply,
            })
            .await
            .map_err(|_| ProposeError::ShuttingDown)?;
        await_answer(answer).await
    }

    /// Requests waiting in the queue (not yet taken by the batcher).
    #[cfg(test)]
    fn queued(&self) -> usize {
        self.queue.max_capacity() - self.queue.capacity()
    }
}

/// Waits (at most [`PROPOSAL_TIMEOUT`]) for the answer to a queued request. A dropped reply
/// means the batcher or openraft stopped after taking the request: unknown.
async fn await_answer<T>(
    answer: oneshot::Receiver<Result<T, ProposeError>>,
) -> Result<T, ProposeError> {
    match tokio::time::timeout(PROPOSAL_TIMEOUT, answer).await {
        Err(_) => Err(ProposeError::Unknown(UnknownOutcome::NoCommitWithin(
            PROPOSAL_TIMEOUT,
        ))),
        Ok(Err(_)) => Err(ProposeError::Unknown(UnknownOutcome::BrokerStopped)),
        Ok(Ok(result)) => result,
    }
}

type SendReply = oneshot::Sender<Result<SendOutcome, ProposeError>>;

/// A send in the queue.
struct QueuedSend {
    request: SendRequest,
    reply: SendReply,
    /// The request's share of [`QueueLimits::bytes`], given back once it is packed.
    queued_bytes: OwnedSemaphorePermit,
}

struct Batcher {
    raft: Raft,
    receiver: mpsc::Receiver<Proposal>,
    queue_bytes: Arc<Semaphore>,
    in_flight: Arc<Semaphore>,
    /// Store timestamps never go back, even if the clock does.
    last_store_timestamp_ms: i64,
    /// Carried in every send entry: [`SendBatch::dedup_window_ms`].
    dedup_window_ms: u64,
    /// A proposal taken from the queue that did not fit the previous batch.
    carried: Option<Proposal>,
}

impl Batcher {
    async fn run(mut self, shutdown: CancellationToken) {
        loop {
            // Wait for a slot first, so requests pile up (and batch) while entries are in flight.
            // Shutdown comes first: nothing more is proposed once it fired.
            let permit = tokio::select! {
                biased;
                _ = shutdown.cancelled() => break,
                permit = self.in_flight.clone().acquire_owned() => match permit {
                    Ok(permit) => permit,
                    Err(_) => break,
                },
            };
            let first = match self.carried.take() {
                Some(proposal) => proposal,
                None => tokio::select! {
                    biased;
                    _ = shutdown.cancelled() => break,
                    next = self.receiver.recv() => match next {
                        Some(proposal) => proposal,
                        None => break,
                    },
                },
            };
            match first {
                Proposal::Command {
                    command,
                    blob,
                    reply,
                } => {
                    self.propose_command(command, &blob, reply, permit).await;
                }
                Proposal::Send(send) => {
                    let batch = self.collect_sends(send);
                    self.propose_sends(batch, permit).await;
                }
            }
        }
        // Refuse whatever is still queued, or waiting for room: none of it was proposed.
        self.receiver.close();
        self.queue_bytes.close();
        let carried = self.carried.take();
        for proposal in carried
            .into_iter()
            .chain(std::iter::from_fn(|| self.receiver.try_recv().ok()))
        {
            match proposal {
                Proposal::Send(send) => drop(send.reply.send(Err(ProposeError::ShuttingDown))),
                Proposal::Command { reply, .. } => {
                    drop(reply.send(Err(ProposeError::ShuttingDown)))
                }
            }
        }
    }

    /// Takes queued sends after `first` until a limit or a non-send proposal.
    fn collect_sends(&mut self, first: QueuedSend) -> Vec<QueuedSend> {
        let mut messages = first.request.messages.len();
        let mut bytes = first.request.byte_len();
        let mut batch = vec![first];
        while let Ok(next) = self.receiver.try_recv() {
            match next {
                Proposal::Send(send) => {
                    let fits = messages + send.request.messages.len() <= MAX_BATCH_MESSAGES
                        && bytes + send.request.byte_len() <= MAX_BATCH_BYTES;
                    if !fits {
                        self.carried = Some(Proposal::Send(send));
                        break;
                    }
                    messages += send.request.messages.len();
                    bytes += send.request.byte_len();
                    batch.push(send);
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
        let now = raftmq_protocol::names::now_ms();
        self.last_store_timestamp_ms = self.last_store_timestamp_ms.max(now);
        self.last_store_timestamp_ms
    }

    async fn propose_sends(&mut self, batch: Vec<QueuedSend>, permit: OwnedSemaphorePermit) {
        let total_bytes: usize = batch.iter().map(|queued| queued.request.byte_len()).sum();
        let mut blob = Vec::with_capacity(total_bytes);
        // Requests for the same queue share one unit (in arrival order), so an entry costs the
        // state machine one index row per queue, not one per request. Each reply remembers its
        // unit and where its messages start in it.
        let mut units: Vec<SendUnit> = Vec::new();
        let mut unit_of_queue: HashMap<(String, u32), usize> = HashMap::new();
        let mut replies: Vec<(SendReply, usize, u32)> = Vec::with_capacity(batch.len());
        for QueuedSend {
            request,
            reply,
            queued_bytes,
        } in batch
        {
            // Its bytes are in the entry now: room for the next request in the queue.
            drop(queued_bytes);
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
            dedup_window_ms: self.dedup_window_ms,
            units,
        });
        let unit_count = unit_of_queue.len();
        self.write(&command, &blob, move |result| {
            // The in-flight slot is free again once the entry is applied or refused.
            drop(permit);
            let outcomes = result.and_then(|applied| match applied {
                Applied::Sent(outcomes) if outcomes.len() == unit_count => Ok(outcomes),
                other => Err(ProposeError::BadAnswer(format!(
                    "expected {unit_count} send outcomes, got {other:?}"
                ))),
            });
            match outcomes {
                Ok(outcomes) => {
                    for (reply, unit_index, start) in replies {
                        let _ = reply.send(Ok(outcomes[unit_index].for_request(start)));
                    }
                }
                Err(err) => {
                    for (reply, _, _) in replies {
                        let _ = reply.send(Err(err.clone()));
                    }
                }
            }
        })
        .await;
    }

    async fn propose_command(
        &mut self,
        command: Command,
        blob: &[u8],
        reply: oneshot::Sender<Result<Applied, ProposeError>>,
        permit: OwnedSemaphorePermit,
    ) {
        self.write(&command, blob, move |result| {
            drop(permit);
            let _ = reply.send(result);
        })
        .await;
    }

    /// Hands one entry to openraft; `answer` is called with its apply result (on openraft's
    /// task, so it only hands the result on), or at once if it never reached openraft. If
    /// openraft stops before answering, `answer` is dropped uncalled, and so are the replies it
    /// owns: their senders learn the outcome is unknown.
    async fn write(
        &self,
        command: &Command,
        blob: &[u8],
        answer: impl FnOnce(Result<Applied, ProposeError>) + Send + 'static,
    ) {
        let payload = match encode_entry(command, blob) {
            Ok(payload) => payload,
            Err(err) => return answer(Err(ProposeError::BadAnswer(err.to_string()))),
        };
        // Whoever comes first answers: openraft through the responder, or this function if
        // openraft refuses the proposal outright (then the responder is dropped uncalled).
        let answer = Arc::new(Mutex::new(Some(answer)));
        let on_applied = Arc::clone(&answer);
        let responder = WriteResponder::new(move |result| {
            if let Some(answer) = take_answer(&on_applied) {
                answer(applied_of(result));
            }
        });
        if let Err(fatal) = self
            .raft
            .client_write_ff(AppRequest(payload), Some(responder))
            .await
        {
            debug!(error = %fatal, "raft stopped before accepting a proposal");
            if let Some(answer) = take_answer(&answer) {
                answer(Err(ProposeError::ShuttingDown));
            }
        }
    }
}

/// The answer function, once (the lock is never held across an await).
fn take_answer<F>(answer: &Mutex<Option<F>>) -> Option<F> {
    answer
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .take()
}

/// What an entry's apply result means for its requests.
fn applied_of(result: ClientWriteResult) -> Result<Applied, ProposeError> {
    match result {
        Ok(response) => {
            decode_applied(&response.data.0).map_err(|err| ProposeError::BadAnswer(err.to_string()))
        }
        // Refused before it was appended: never committed.
        Err(ClientWriteError::ForwardToLeader(forward)) => Err(ProposeError::NotLeader {
            leader: forward.leader_id,
        }),
        // Appended, then replaced by another leader's log: it may still have committed there.
        Err(ClientWriteError::LogEntryDiscarded(forward)) => Err(ProposeError::Unknown(
            UnknownOutcome::DiscardedOnLeaderChange {
                leader: forward.leader_id,
            },
        )),
        // Data proposals carry no preconditions.
        Err(ClientWriteError::PreconditionFailed(err)) => {
            warn!(error = %err, "a data proposal failed a precondition");
            Err(ProposeError::Unknown(UnknownOutcome::PreconditionFailed(
                err.to_string(),
            )))
        }
        Err(ClientWriteError::ChangeMembershipError(err)) => {
            warn!(error = %err, "a data proposal met a membership error");
            Err(ProposeError::Unknown(UnknownOutcome::MembershipChange(
                err.to_string(),
            )))
        }
    }
}

#[cfg(test)]
mod tests {
    //! The batcher against a real one-member Raft group (in process): merging, both queue
    //! bounds, and shutdown. A request is polled once to see whether it got into the queue:
    //! one poll enqueues it if there is room, so "still not queued" after it proves it waits.

    use std::future::Future;
    use std::pin::Pin;

    use anyhow::{Result, bail};
    use futures::poll;

    use super::*;
    use crate::testing::{TestGroup, wait_until};

    const TOPIC: &str = "BatcherTest";

    fn send_of(queue_id: u32, body_bytes: usize) -> SendRequest {
        SendRequest {
            topic: TOPIC.to_string(),
            queue_id,
            create_topic: Some(TopicConfig::new(TOPIC, 4)),
            messages: vec![PendingMessage {
                bytes: Bytes::from(vec![b'x'; body_bytes]),
                tags_code: 0,
            }],
        }
    }

    type Pending = Pin<Box<dyn Future<Output = Result<SendOutcome, ProposeError>> + Send>>;

    /// A send polled once: it is in the queue, or waiting for room, when this returns.
    async fn submit(proposer: &Proposer, request: SendRequest) -> Pending {
        let proposer = proposer.clone();
        let mut send: Pending = Box::pin(async move { proposer.send(request).await });
        assert!(poll!(&mut send).is_pending(), "answered before proposing");
        send
    }

    fn stored(outcome: Result<SendOutcome, ProposeError>) -> Result<(u64, u64, u32)> {
        match outcome {
            Ok(SendOutcome::Stored {
                first_offset,
                log_index,
                first_ordinal,
            }) => Ok((first_offset, log_index, first_ordinal)),
            other => bail!("expected Stored, got {other:?}"),
        }
    }

    /// A one-member group, its leader, and a batcher on its Raft that is not yet running.
    async fn batcher_on_one_member(
        limits: QueueLimits,
    ) -> Result<(TestGroup, Proposer, Batcher, TaskTracker)> {
        let group = TestGroup::start(1).await?;
        let leader = group.wait_for_leader().await?;
        let tracker = TaskTracker::new();
        let (proposer, batcher) = Proposer::new(group.member(leader).raft.clone(), limits);
        Ok((group, proposer, batcher, tracker))
    }

    async fn stop(
        group: TestGroup,
        tracker: TaskTracker,
        shutdown: CancellationToken,
    ) -> Result<()> {
        shutdown.cancel();
        tracker.close();
        tracker.wait().await;
        group.shutdown().await
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_sends_are_merged_into_one_entry() -> Result<()> {
        let (group, proposer, batcher, tracker) =
            batcher_on_one_member(QueueLimits::default()).await?;
        let mut sends = Vec::new();
        for i in 0..10 {
            sends.push(submit(&proposer, send_of(i % 2, 100)).await);
        }
        assert_eq!(proposer.queued(), 10);
        let shutdown = CancellationToken::new();
        tracker.spawn(batcher.run(shutdown.clone()));

        let mut outcomes = Vec::new();
        for send in sends {
            outcomes.push(stored(send.await)?);
        }
        // One entry holds them all; each queue got consecutive offsets, and every message its
        // own place in the entry.
        let log_index = outcomes[0].1;
        assert!(outcomes.iter().all(|(_, index, _)| *index == log_index));
        for queue in 0..2 {
            let mut offsets: Vec<u64> = outcomes
                .iter()
                .skip(queue)
                .step_by(2)
                .map(|(offset, _, _)| *offset)
                .collect();
            offsets.sort_unstable();
            assert_eq!(offsets, vec![0, 1, 2, 3, 4], "queue {queue}");
        }
        let mut ordinals: Vec<u32> = outcomes.iter().map(|(_, _, ordinal)| *ordinal).collect();
        ordinals.sort_unstable();
        assert_eq!(ordinals, (0..10).collect::<Vec<_>>());
        stop(group, tracker, shutdown).await
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_send_waits_for_the_byte_budget_and_an_oversized_one_goes_alone() -> Result<()> {
        let limits = QueueLimits {
            requests: 100,
            bytes: 1000,
        };
        let (group, proposer, batcher, tracker) = batcher_on_one_member(limits).await?;
        // 600 + 600 bytes do not fit in 1000: the second waits outside the queue.
        let first = submit(&proposer, send_of(0, 600)).await;
        let second = submit(&proposer, send_of(0, 600)).await;
        assert_eq!(proposer.queued(), 1);
        let shutdown = CancellationToken::new();
        tracker.spawn(batcher.run(shutdown.clone()));
        let (first, second) = (stored(first.await)?, stored(second.await)?);
        assert!(second.1 > first.1, "the second went in a later entry");

        // 5000 bytes, over the whole budget: admitted into an empty queue, alone; a small send
        // behind it waits until it has been packed.
        let (group_big, proposer, batcher, tracker_big) = batcher_on_one_member(limits).await?;
        let big = submit(&proposer, send_of(1, 5000)).await;
        assert_eq!(proposer.queued(), 1, "the oversized send is admitted");
        let small = submit(&proposer, send_of(1, 10)).await;
        assert_eq!(proposer.queued(), 1, "the small send waits behind it");
        let shutdown_big = CancellationToken::new();
        tracker_big.spawn(batcher.run(shutdown_big.clone()));
        let (big, small) = (stored(big.await)?, stored(small.await)?);
        assert_eq!((big.0, small.0), (0, 1));
        assert!(small.1 > big.1, "the oversized send went alone");

        stop(group_big, tracker_big, shutdown_big).await?;
        stop(group, tracker, shutdown).await
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_full_queue_holds_senders_back_until_the_batcher_drains_it() -> Result<()> {
        let limits = QueueLimits {
            requests: 2,
            bytes: PROPOSAL_QUEUE_BYTES,
        };
        let (group, proposer, batcher, tracker) = batcher_on_one_member(limits).await?;
        let mut sends = Vec::new();
        for _ in 0..3 {
            sends.push(submit(&proposer, send_of(2, 10)).await);
        }
        assert_eq!(proposer.queued(), 2, "the third send waits for a slot");
        let shutdown = CancellationToken::new();
        tracker.spawn(batcher.run(shutdown.clone()));
        let mut offsets = Vec::new();
        for send in sends {
            offsets.push(stored(send.await)?.0);
        }
        offsets.sort_unstable();
        assert_eq!(offsets, vec![0, 1, 2]);
        stop(group, tracker, shutdown).await
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn on_shutdown_every_waiting_send_is_refused_and_nothing_is_stored() -> Result<()> {
        let limits = QueueLimits {
            requests: 2,
            bytes: 1000,
        };
        let (group, proposer, batcher, tracker) = batcher_on_one_member(limits).await?;
        let queued_big = submit(&proposer, send_of(3, 600)).await;
        let queued_small = submit(&proposer, send_of(3, 10)).await;
        // The queue is full in requests: this one waits for a slot.
        let waiting_for_slot = submit(&proposer, send_of(3, 10)).await;
        // And this one for bytes (380 are left).
        let waiting_for_bytes = submit(&proposer, send_of(3, 600)).await;
        assert_eq!(proposer.queued(), 2);

        let shutdown = CancellationToken::new();
        shutdown.cancel();
        tracker.spawn(batcher.run(shutdown.clone()));
        for (what, send) in [
            ("queued", queued_big),
            ("queued", queued_small),
            ("waiting for a slot", waiting_for_slot),
            ("waiting for bytes", waiting_for_bytes),
        ] {
            let answer = tokio::time::timeout(crate::testing::WAIT_MAX, send).await?;
            assert_eq!(answer, Err(ProposeError::ShuttingDown), "{what}");
        }
        // Once stopped, a new send is refused at once.
        assert_eq!(
            proposer.send(send_of(3, 10)).await,
            Err(ProposeError::ShuttingDown)
        );
        // Nothing was proposed: the topic was never even created.
        let state = group.member(1).ctx.state.clone();
        wait_until("the batcher stopping", || tracker.is_empty().then_some(())).await?;
        assert!(state.topic(TOPIC).is_none());
        assert_eq!(state.queue(TOPIC, 3).next_offset, 0);
        stop(group, tracker, shutdown).await
    }
}
