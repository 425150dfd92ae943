//! The history: every operation a client or the nemesis performed, one JSON object per line.
//!
//! An operation is recorded twice: once when it is *invoked* (`"type":"invoke"`) and once when it
//! *completes* (`ok`, `fail`, or `info`). `info` means the outcome is unknown (a timeout or a lost
//! connection after the request was sent): the operation may or may not have taken effect, and no
//! checker may treat it as failed. A process (a client task, or `"nemesis"`) has at most one
//! operation outstanding at a time, so a completion belongs to the latest invoke of its process.
//! Two standalone event kinds (`run`, `harness_error`) are written as a single `info` line.
//!
//! Writing: [`HistoryWriter::create`] returns a cloneable [`Recorder`] for any number of async
//! tasks and a handle to close the file. Records travel over a bounded channel to one writer
//! thread, which numbers them (`index`), so the index order is the order in which records were
//! handed over: if one record was handed over before another was started, its index is lower.
//! Reading: [`read_history`] parses and validates a file into a [`History`].

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, BufRead, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};

use crate::nemesis::Fault;

/// Records waiting for the writer thread; senders wait (back-pressure) when it is full.
pub const RECORD_CHANNEL_CAPACITY: usize = 4096;
/// Bytes buffered before the writer thread writes to the file (it also flushes whenever it has
/// caught up with the channel, so the file lags the run by at most one burst).
pub const HISTORY_BUFFER_BYTES: usize = 256 * 1024;
/// The longest history line accepted by the reader. A drain of a long queue should be recorded
/// as several `drain` operations (each with its own `from`), not one giant line.
pub const MAX_LINE_BYTES: usize = 64 * 1024 * 1024;

/// The process name the nemesis records under.
pub const NEMESIS_PROCESS: &str = "nemesis";
/// The process name the harness records `run` and `harness_error` events under.
pub const HARNESS_PROCESS: &str = "harness";

/// How an operation record ends (or begins, for `invoke`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OpType {
    Invoke,
    Ok,
    /// Definitely did not take effect.
    Fail,
    /// Unknown outcome: may or may not have taken effect.
    Info,
}

/// A message queue: RocketMQ's (topic, queue id). Offsets are per queue.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct QueueRef {
    pub topic: String,
    pub queue: u32,
}

impl std::fmt::Display for QueueRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.topic, self.queue)
    }
}

/// `send`: invoke names the value (and the queue if the client picks it); `ok` carries the queue
/// and offset the broker assigned; `fail` and `info` carry what is known.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SendOp {
    pub topic: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    #[serde(default)]
    pub queue: Option<u32>,
    /// Unique across the whole run, e.g. `"c3-1742"`.
    pub value: String,
    #[serde(default)]
    pub offset: Option<u64>,
    /// On a completion: an earlier attempt of this send had an unknown outcome and the
    /// producer tried again (with the same `UNIQ_KEY`, so the broker's dedup window stores it
    /// once; the `duplicate` checker tells such duplicates apart).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub retried_after_unknown: bool,
}

impl SendOp {
    /// The queue, once known.
    pub fn queue_ref(&self) -> Option<QueueRef> {
        self.queue.map(|queue| QueueRef {
            topic: self.topic.clone(),
            queue,
        })
    }
}

/// One message returned by a poll.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolledMsg {
    pub topic: String,
    pub queue: u32,
    pub offset: u64,
    pub value: String,
}

/// A queue's minimum offset as an answer reported it: retention has removed every message
/// below it (offsets never shift; a reader below the minimum is moved up to it).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueMin {
    pub topic: String,
    pub queue: u32,
    pub min_offset: u64,
}

impl QueueMin {
    pub fn queue_ref(&self) -> QueueRef {
        QueueRef {
            topic: self.topic.clone(),
            queue: self.queue,
        }
    }
}

/// `poll`: `ok` carries every message delivered to the application, in delivery order, and
/// the minimum offsets the broker's answers reported (when the client sees them).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PollOp {
    pub consumer: String,
    pub group: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub msgs: Vec<PolledMsg>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub min_offsets: Vec<QueueMin>,
}

/// `commit`: the consumer group's next offset to consume in one queue.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommitOp {
    pub group: String,
    pub topic: String,
    pub queue: u32,
    pub offset: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consumer: Option<String>,
}

/// `fetch_offset`: read the group's committed offset of one queue; `ok` carries it (`null` if
/// the group has none).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FetchOffsetOp {
    pub group: String,
    pub topic: String,
    pub queue: u32,
    #[serde(default)]
    pub offset: Option<u64>,
}

/// `assign` / `reassign`: the queues a consumer owns from now on. Each `ok` (or `info`) starts a
/// new assignment epoch for that consumer: its position in every queue may restart.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AssignOp {
    pub consumer: String,
    pub group: String,
    pub queues: Vec<QueueRef>,
}

/// One message returned by a drain.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DrainMsg {
    pub offset: u64,
    pub value: String,
}

/// `drain`: the final read of a queue from offset `from` (0 for the first chunk), against one
/// member (`member`) or through the normal client routing (`member` absent). `ok` carries the
/// queue's minimum offset the answer reported (`min_offset`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DrainOp {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub member: Option<String>,
    pub topic: String,
    pub queue: u32,
    #[serde(default)]
    pub from: u64,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub msgs: Vec<DrainMsg>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_offset: Option<u64>,
}

impl DrainOp {
    pub fn queue_ref(&self) -> QueueRef {
        QueueRef {
            topic: self.topic.clone(),
            queue: self.queue,
        }
    }
}

/// Whether a nemesis operation begins a fault or undoes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NemesisPhase {
    Start,
    Stop,
}

/// `nemesis`: a fault starting or stopping. The completion type says what happened:
/// `ok` = installed (or undone), `fail` = skipped (known not installed, e.g. no leader known),
/// `info` = indeterminate (attempted; whether it took effect is unknown).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NemesisOp {
    /// Pairs a start with its stop; the schedule numbers its windows.
    pub window: u64,
    pub phase: NemesisPhase,
    pub fault: Fault,
    /// The members (or other nodes) the fault was aimed at, once resolved.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub targets: Vec<String>,
    /// A bit flip's start: what was flipped and what the member made of it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub corruption: Option<CorruptionOutcome>,
}

/// What a bit flip damaged and how the member took it (judged by the `corruption` checker).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CorruptionOutcome {
    /// The file, relative to the member's data directory.
    pub file: String,
    pub position: u64,
    pub bit: u8,
    pub detection: Detection,
    /// The member's own words (its error line), when it stopped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// How a member took a flipped bit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Detection {
    /// It would not start with the damaged file.
    RefusedToStart,
    /// It started, found the damage (its scrub) and stopped.
    StoppedAfterStart,
    /// Still running when the harness stopped waiting.
    Running,
}

/// `run`: the run's settings and seed (`phase` start) and its end.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunOp {
    pub phase: NemesisPhase,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
    #[serde(default, skip_serializing_if = "serde_json::Value::is_null")]
    pub settings: serde_json::Value,
}

/// `harness_error`: the harness itself failed (control plane, configuration, a bug): the run
/// cannot be accepted whatever the checkers say.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HarnessErrorOp {
    pub source: String,
    pub message: String,
}

/// What a transaction's producer decided: its local transaction, or its answer to a check.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TxDecision {
    Commit,
    Rollback,
    /// Not decided (yet): the broker checks again, and discards it after its last check.
    Unknown,
}

/// `transaction`: a transactional send. The invoke names the value and what the local
/// transaction will decide (`local`). `ok`: the half message was stored; `ended` says whether
/// the broker acknowledged the END_TRANSACTION carrying `local` (then this request ended the
/// transaction). `fail`: no half message was stored. `info`: whether one was is unknown.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransactionOp {
    pub topic: String,
    /// Unique across the whole run, e.g. `"t2-17"`.
    pub value: String,
    pub local: TxDecision,
    #[serde(default)]
    pub ended: bool,
}

/// `tx_check`: a producer answered the broker's check of the transaction carrying `value`
/// with `answer` (recorded before the answer is sent). A single `info` event.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TxCheckOp {
    pub value: String,
    pub answer: TxDecision,
    /// The producer process that answered.
    pub by: String,
}

/// `tx_pending`: after the transactions settled and the group converged, the pending
/// transactions each member's applied state holds (`None`: that member did not say). A single
/// `info` event.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TxPendingOp {
    pub members: std::collections::BTreeMap<String, Option<u64>>,
}

/// One message a pop handed out: its value (the body), where it is stored, and which delivery
/// this is (1 first).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PoppedMsg {
    pub value: String,
    pub queue: u32,
    pub offset: u64,
    pub attempt: u32,
}

/// `pop`: a POP_MESSAGE of `topic` for consumer group `group` (any queue); `ok` lists what it
/// handed out (each now invisible to the group until acked or its invisible time ends).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PopOp {
    pub topic: String,
    pub group: String,
    #[serde(default)]
    pub messages: Vec<PoppedMsg>,
}

/// `pop_ack`: an ACK_MESSAGE of a popped message (by the receipt of the pop that handed it
/// out). `ok`: the broker confirmed it; the message must never be handed out again.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PopAckOp {
    pub topic: String,
    pub group: String,
    pub value: String,
    pub queue: u32,
    pub offset: u64,
}

/// `pop_dlq`: after the final POP drain, the values the group's dead-letter topic holds, or
/// why it could not be read (`read_error`). A single `info` event.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PopDlqOp {
    pub group: String,
    #[serde(default)]
    pub values: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read_error: Option<String>,
    /// The drain ended because the group had nothing to hand out for a while (not at its time
    /// limit): then every message not acked must be in the DLQ.
    #[serde(default)]
    pub drained: bool,
}

/// The function of an operation with its argument or result (`"f"` and `"value"` in JSON).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "f", content = "value", rename_all = "snake_case")]
pub enum Call {
    Send(SendOp),
    Poll(PollOp),
    Commit(CommitOp),
    FetchOffset(FetchOffsetOp),
    Assign(AssignOp),
    Reassign(AssignOp),
    Drain(DrainOp),
    Nemesis(NemesisOp),
    Run(RunOp),
    HarnessError(HarnessErrorOp),
    Transaction(TransactionOp),
    TxCheck(TxCheckOp),
    TxPending(TxPendingOp),
    Pop(PopOp),
    PopAck(PopAckOp),
    PopDlq(PopDlqOp),
}

impl Call {
    /// The `"f"` name, for messages.
    pub fn name(&self) -> &'static str {
        match self {
            Call::Send(_) => "send",
            Call::Poll(_) => "poll",
            Call::Commit(_) => "commit",
            Call::FetchOffset(_) => "fetch_offset",
            Call::Assign(_) => "assign",
            Call::Reassign(_) => "reassign",
            Call::Drain(_) => "drain",
            Call::Nemesis(_) => "nemesis",
            Call::Run(_) => "run",
            Call::HarnessError(_) => "harness_error",
            Call::Transaction(_) => "transaction",
            Call::TxCheck(_) => "tx_check",
            Call::TxPending(_) => "tx_pending",
            Call::Pop(_) => "pop",
            Call::PopAck(_) => "pop_ack",
            Call::PopDlq(_) => "pop_dlq",
        }
    }

    /// Standalone events are one `info` line, not an invoke/completion pair.
    pub fn is_event(&self) -> bool {
        matches!(
            self,
            Call::Run(_)
                | Call::HarnessError(_)
                | Call::TxCheck(_)
                | Call::TxPending(_)
                | Call::PopDlq(_)
        )
    }
}

/// One history line.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Op {
    /// Position in the file, from 0, strictly increasing.
    pub index: u64,
    pub process: String,
    #[serde(rename = "type")]
    pub kind: OpType,
    #[serde(flatten)]
    pub call: Call,
    /// Monotonic nanoseconds since the run started (for durations and windows).
    pub mono_ns: u64,
    /// Wall-clock nanoseconds since the Unix epoch (to line up with member logs).
    pub wall_ns: u64,
    /// The member that answered, when the client knows it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// Why a `fail` or `info` happened.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// What a caller hands the recorder; the recorder stamps times and the writer the index.
#[derive(Clone, Debug, PartialEq)]
pub struct Event {
    pub process: String,
    pub kind: OpType,
    pub call: Call,
    pub node: Option<String>,
    pub error: Option<String>,
}

impl Event {
    pub fn new(process: impl Into<String>, kind: OpType, call: Call) -> Self {
        Event {
            process: process.into(),
            kind,
            call,
            node: None,
            error: None,
        }
    }
    pub fn invoke(process: impl Into<String>, call: Call) -> Self {
        Self::new(process, OpType::Invoke, call)
    }
    pub fn ok(process: impl Into<String>, call: Call) -> Self {
        Self::new(process, OpType::Ok, call)
    }
    pub fn fail(process: impl Into<String>, call: Call, error: impl Into<String>) -> Self {
        Self::new(process, OpType::Fail, call).with_error(error)
    }
    pub fn info(process: impl Into<String>, call: Call, error: impl Into<String>) -> Self {
        Self::new(process, OpType::Info, call).with_error(error)
    }
    pub fn with_node(mut self, node: impl Into<String>) -> Self {
        self.node = Some(node.into());
        self
    }
    pub fn with_error(mut self, error: impl Into<String>) -> Self {
        self.error = Some(error.into());
        self
    }
}

/// Errors of writing and reading histories.
#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    #[error("cannot create history file {path}: {source}")]
    Create { path: PathBuf, source: io::Error },
    #[error("cannot open history file {path}: {source}")]
    Open { path: PathBuf, source: io::Error },
    #[error("cannot write history: {0}")]
    Write(io::Error),
    #[error("cannot read history at line {line}: {source}")]
    Read { line: usize, source: io::Error },
    #[error("history line {line} is longer than {max_line_bytes} bytes")]
    LineTooLong { line: usize, max_line_bytes: usize },
    #[error("history line {line} is not a valid operation: {source}")]
    Parse {
        line: usize,
        source: serde_json::Error,
    },
    #[error("history line {line} (index {index}): {reason}")]
    Invalid {
        line: usize,
        index: u64,
        reason: String,
    },
    #[error("the history writer thread could not be started: {0}")]
    Thread(io::Error),
    #[error("the history writer stopped without reporting (it panicked)")]
    WriterLost,
}

/// Errors a recorder call can return: the writer is gone, so the run has a harness failure.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error("the history writer is closed (closed by the harness, or stopped on a write error)")]
    Closed,
}

/// The run's clocks: one start instant, both timestamps taken at the call site. Tokio's
/// `Instant` is the monotonic clock, and follows tokio's paused clock in tests.
#[derive(Clone, Copy, Debug)]
struct Clock {
    start: tokio::time::Instant,
}

impl Clock {
    fn stamp(&self) -> (u64, u64) {
        let mono_ns = u64::try_from(self.start.elapsed().as_nanos()).unwrap_or(u64::MAX);
        let wall_ns = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
            .unwrap_or(0);
        (mono_ns, wall_ns)
    }
}

enum WriterMsg {
    Record {
        // Boxed: events are large beside `Close`, and the channel holds many.
        event: Box<Event>,
        mono_ns: u64,
        wall_ns: u64,
    },
    Close,
}

/// A cloneable handle for recording from any task. Cheap to clone; every clone feeds one file.
#[derive(Clone, Debug)]
pub struct Recorder {
    tx: mpsc::Sender<WriterMsg>,
    clock: Clock,
}

impl std::fmt::Debug for WriterMsg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WriterMsg::Record { event, .. } => write!(f, "Record({event:?})"),
            WriterMsg::Close => write!(f, "Close"),
        }
    }
}

impl Recorder {
    /// Records an event, waiting while the channel is full. Times are taken now, before waiting.
    pub async fn record(&self, event: Event) -> Result<(), RecordError> {
        let (mono_ns, wall_ns) = self.clock.stamp();
        self.tx
            .send(WriterMsg::Record {
                event: Box::new(event),
                mono_ns,
                wall_ns,
            })
            .await
            .map_err(|_| RecordError::Closed)
    }

    /// Records from a plain thread (never from inside an async task: that would block it).
    pub fn record_blocking(&self, event: Event) -> Result<(), RecordError> {
        let (mono_ns, wall_ns) = self.clock.stamp();
        self.tx
            .blocking_send(WriterMsg::Record {
                event: Box::new(event),
                mono_ns,
                wall_ns,
            })
            .map_err(|_| RecordError::Closed)
    }

    /// Nanoseconds since the run started, on the clock the history uses.
    pub fn mono_ns(&self) -> u64 {
        self.clock.stamp().0
    }
}

/// What the writer did, reported when it closes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WriteStats {
    pub ops: u64,
    pub bytes: u64,
}

/// The owner's handle on the writer thread: close it to flush and learn of write errors.
#[derive(Debug)]
pub struct HistoryWriter {
    tx: mpsc::Sender<WriterMsg>,
    done: oneshot::Receiver<Result<WriteStats, HistoryError>>,
    path: PathBuf,
}

impl HistoryWriter {
    /// Creates (truncates) `path` and starts the writer thread. The run's clock starts now.
    pub fn create(path: &Path) -> Result<(Recorder, HistoryWriter), HistoryError> {
        let file = File::create(path).map_err(|source| HistoryError::Create {
            path: path.to_path_buf(),
            source,
        })?;
        Self::start(Box::new(file), path.to_path_buf())
    }

    fn start(
        sink: Box<dyn Write + Send>,
        path: PathBuf,
    ) -> Result<(Recorder, HistoryWriter), HistoryError> {
        let (tx, rx) = mpsc::channel(RECORD_CHANNEL_CAPACITY);
        let (done_tx, done) = oneshot::channel();
        std::thread::Builder::new()
            .name("history-writer".into())
            .spawn(move || {
                let result = write_loop(rx, BufWriter::with_capacity(HISTORY_BUFFER_BYTES, sink));
                // The owner may have dropped its handle; then nobody wants the result.
                let _ = done_tx.send(result);
            })
            .map_err(HistoryError::Thread)?;
        let recorder = Recorder {
            tx: tx.clone(),
            clock: Clock {
                start: tokio::time::Instant::now(),
            },
        };
        Ok((recorder, HistoryWriter { tx, done, path }))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes everything handed over before this call, flushes, and stops the writer. Recorder
    /// calls after this fail with [`RecordError::Closed`].
    pub async fn close(self) -> Result<WriteStats, HistoryError> {
        // If the writer already stopped on an error, the send fails and `done` has the error.
        let _ = self.tx.send(WriterMsg::Close).await;
        drop(self.tx);
        self.done.await.map_err(|_| HistoryError::WriterLost)?
    }
}

fn write_loop(
    mut rx: mpsc::Receiver<WriterMsg>,
    mut out: BufWriter<Box<dyn Write + Send>>,
) -> Result<WriteStats, HistoryError> {
    let mut stats = WriteStats { ops: 0, bytes: 0 };
    let mut line = Vec::with_capacity(512);
    // `None` when every sender is gone: the run ended without close(); still flush.
    while let Some(msg) = rx.blocking_recv() {
        let mut next = Some(msg);
        while let Some(msg) = next.take() {
            match msg {
                WriterMsg::Close => {
                    out.flush().map_err(HistoryError::Write)?;
                    return Ok(stats);
                }
                WriterMsg::Record {
                    event,
                    mono_ns,
                    wall_ns,
                } => {
                    let op = Op {
                        index: stats.ops,
                        process: event.process,
                        kind: event.kind,
                        call: event.call,
                        mono_ns,
                        wall_ns,
                        node: event.node,
                        error: event.error,
                    };
                    line.clear();
                    serde_json::to_writer(&mut line, &op)
                        .map_err(|e| HistoryError::Write(io::Error::other(e)))?;
                    line.push(b'\n');
                    out.write_all(&line).map_err(HistoryError::Write)?;
                    stats.ops += 1;
                    stats.bytes += line.len() as u64;
                }
            }
            next = rx.try_recv().ok();
        }
        // Caught up with the channel: make what we have durable-ish (visible to readers).
        out.flush().map_err(HistoryError::Write)?;
    }
    out.flush().map_err(HistoryError::Write)?;
    Ok(stats)
}

/// A parsed, validated history, with each invoke paired to its completion.
#[derive(Clone, Debug, Default)]
pub struct History {
    pub ops: Vec<Op>,
    /// For each position in `ops`: the position of its completion (for invokes) or its invoke
    /// (for completions); `None` for an invoke that never completed, and for events.
    partner: Vec<Option<usize>>,
    /// The file ended in a partial line, which was dropped (the writer died mid-write).
    pub truncated_tail: bool,
}

impl History {
    /// Validates and pairs operations (in file order). Rules: indices strictly increase; each
    /// process has at most one outstanding invoke; a completion matches its invoke's function;
    /// `run` and `harness_error` are single `info` events; an `ok` send names queue and offset.
    pub fn from_ops(ops: Vec<Op>) -> Result<History, HistoryError> {
        let mut partner = vec![None; ops.len()];
        let mut open: HashMap<&str, usize> = HashMap::new();
        let mut last_index: Option<u64> = None;
        for (pos, op) in ops.iter().enumerate() {
            let invalid = |reason: String| HistoryError::Invalid {
                line: pos + 1,
                index: op.index,
                reason,
            };
            if let Some(last) = last_index
                && op.index <= last
            {
                return Err(invalid(format!(
                    "index does not increase (previous {last})"
                )));
            }
            last_index = Some(op.index);
            if op.call.is_event() {
                if op.kind != OpType::Info {
                    return Err(invalid(format!(
                        "a {} event must have type info",
                        op.call.name()
                    )));
                }
                continue;
            }
            if let (OpType::Ok, Call::Send(send)) = (op.kind, &op.call)
                && (send.queue.is_none() || send.offset.is_none())
            {
                return Err(invalid("an ok send must carry its queue and offset".into()));
            }
            match op.kind {
                OpType::Invoke => {
                    if let Some(&prev) = open.get(op.process.as_str()) {
                        return Err(invalid(format!(
                            "process {} invoked again while index {} is outstanding",
                            op.process, ops[prev].index
                        )));
                    }
                    open.insert(op.process.as_str(), pos);
                }
                OpType::Ok | OpType::Fail | OpType::Info => {
                    let Some(inv) = open.remove(op.process.as_str()) else {
                        return Err(invalid(format!(
                            "completion for process {} with no outstanding invoke",
                            op.process
                        )));
                    };
                    if ops[inv].call.name() != op.call.name() {
                        return Err(invalid(format!(
                            "completion {} does not match invoke {} (index {})",
                            op.call.name(),
                            ops[inv].call.name(),
                            ops[inv].index
                        )));
                    }
                    partner[inv] = Some(pos);
                    partner[pos] = Some(inv);
                }
            }
        }
        Ok(History {
            ops,
            partner,
            truncated_tail: false,
        })
    }

    pub fn len(&self) -> usize {
        self.ops.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    /// The completion of the invoke at `pos`, if it completed.
    pub fn completion(&self, pos: usize) -> Option<&Op> {
        match self.ops.get(pos)?.kind {
            OpType::Invoke => self
                .partner
                .get(pos)
                .copied()
                .flatten()
                .map(|p| &self.ops[p]),
            _ => None,
        }
    }

    /// The invoke of the completion at `pos`.
    pub fn invoke_of(&self, pos: usize) -> Option<&Op> {
        match self.ops.get(pos)?.kind {
            OpType::Invoke => None,
            _ => self
                .partner
                .get(pos)
                .copied()
                .flatten()
                .map(|p| &self.ops[p]),
        }
    }

    /// Every invoke with its completion (or `None`), in invoke order.
    pub fn pairs(&self) -> impl Iterator<Item = (usize, &Op, Option<&Op>)> {
        self.ops
            .iter()
            .enumerate()
            .filter(|(_, op)| op.kind == OpType::Invoke)
            .map(|(pos, op)| (pos, op, self.completion(pos)))
    }

    /// The run's seed and settings, from its `run` start event.
    pub fn run_start(&self) -> Option<&RunOp> {
        self.ops.iter().find_map(|op| match &op.call {
            Call::Run(run) if run.phase == NemesisPhase::Start => Some(run),
            _ => None,
        })
    }
}

/// Reads and validates a history file.
pub fn read_history(path: &Path) -> Result<History, HistoryError> {
    let file = File::open(path).map_err(|source| HistoryError::Open {
        path: path.to_path_buf(),
        source,
    })?;
    parse_history(BufReader::with_capacity(HISTORY_BUFFER_BYTES, file))
}

/// Parses JSON lines (blank lines are skipped) and validates them with [`History::from_ops`].
pub fn parse_history(reader: impl BufRead) -> Result<History, HistoryError> {
    parse_history_capped(reader, MAX_LINE_BYTES)
}

fn parse_history_capped(
    mut reader: impl BufRead,
    max_line_bytes: usize,
) -> Result<History, HistoryError> {
    let mut ops = Vec::new();
    let mut buf = Vec::new();
    let mut line = 0usize;
    loop {
        line += 1;
        buf.clear();
        let limit = max_line_bytes as u64 + 1;
        let n = (&mut reader)
            .take(limit)
            .read_until(b'\n', &mut buf)
            .map_err(|source| HistoryError::Read { line, source })?;
        if n == 0 {
            break;
        }
        if buf.len() > max_line_bytes {
            return Err(HistoryError::LineTooLong {
                line,
                max_line_bytes,
            });
        }
        if buf.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        match serde_json::from_slice::<Op>(&buf) {
            Ok(op) => ops.push(op),
            // Only the last line can lack its newline: a writer killed mid-line. Keep the rest.
            Err(_) if buf.last() != Some(&b'\n') => {
                let mut history = History::from_ops(ops)?;
                history.truncated_tail = true;
                return Ok(history);
            }
            Err(source) => return Err(HistoryError::Parse { line, source }),
        }
    }
    History::from_ops(ops)
}

/// Shorthand constructors for hand-made histories (checker tests, docs).
#[cfg(test)]
pub mod build {
    use super::*;

    /// Builds a history in order; `mono_ns` is the position times 1 ms unless set.
    #[derive(Default)]
    pub struct Builder {
        ops: Vec<Op>,
        now_ns: u64,
    }

    pub const STEP_NS: u64 = 1_000_000;

    impl Builder {
        pub fn new() -> Self {
            Self::default()
        }
        /// Moves the clock to `ms` milliseconds since the start.
        pub fn at_ms(&mut self, ms: u64) -> &mut Self {
            self.now_ns = ms * STEP_NS;
            self
        }
        pub fn push(&mut self, process: &str, kind: OpType, call: Call) -> &mut Self {
            let index = self.ops.len() as u64;
            self.ops.push(Op {
                index,
                process: process.into(),
                kind,
                call,
                mono_ns: self.now_ns,
                wall_ns: 1_700_000_000_000_000_000 + self.now_ns,
                node: None,
                error: None,
            });
            self.now_ns += STEP_NS;
            self
        }
        /// An invoke and its completion of a send. `outcome` Ok needs queue and offset.
        pub fn send(
            &mut self,
            process: &str,
            value: &str,
            outcome: OpType,
            at: Option<(u32, u64)>,
        ) -> &mut Self {
            let invoke = SendOp {
                topic: "t".into(),
                key: None,
                queue: at.map(|(q, _)| q),
                value: value.into(),
                offset: None,
                retried_after_unknown: false,
            };
            let mut done = invoke.clone();
            if outcome == OpType::Ok {
                done.offset = at.map(|(_, o)| o);
            }
            self.push(process, OpType::Invoke, Call::Send(invoke));
            self.push(process, outcome, Call::Send(done))
        }
        /// A successful poll by consumer `process` (group "g") returning `(queue, offset, value)`.
        pub fn poll(&mut self, process: &str, msgs: &[(u32, u64, &str)]) -> &mut Self {
            self.poll_with_mins(process, msgs, &[])
        }
        /// A successful poll whose answers reported the minimum offsets `(queue, min_offset)`.
        pub fn poll_with_mins(
            &mut self,
            process: &str,
            msgs: &[(u32, u64, &str)],
            mins: &[(u32, u64)],
        ) -> &mut Self {
            let invoke = PollOp {
                consumer: process.into(),
                group: "g".into(),
                msgs: vec![],
                min_offsets: vec![],
            };
            let mut done = invoke.clone();
            done.min_offsets = mins
                .iter()
                .map(|&(queue, min_offset)| QueueMin {
                    topic: "t".into(),
                    queue,
                    min_offset,
                })
                .collect();
            done.msgs = msgs
                .iter()
                .map(|&(queue, offset, value)| PolledMsg {
                    topic: "t".into(),
                    queue,
                    offset,
                    value: value.into(),
                })
                .collect();
            self.push(process, OpType::Invoke, Call::Poll(invoke));
            self.push(process, OpType::Ok, Call::Poll(done))
        }
        /// A successful drain of queue `queue` against `member`, from offset 0.
        pub fn drain(
            &mut self,
            member: Option<&str>,
            queue: u32,
            msgs: &[(u64, &str)],
        ) -> &mut Self {
            self.drain_with_min(member, queue, None, msgs)
        }
        /// A successful drain whose answer reported the queue's minimum offset `min_offset`.
        pub fn drain_with_min(
            &mut self,
            member: Option<&str>,
            queue: u32,
            min_offset: Option<u64>,
            msgs: &[(u64, &str)],
        ) -> &mut Self {
            let invoke = DrainOp {
                member: member.map(Into::into),
                topic: "t".into(),
                queue,
                from: 0,
                msgs: vec![],
                min_offset: None,
            };
            let mut done = invoke.clone();
            done.min_offset = min_offset;
            done.msgs = msgs
                .iter()
                .map(|&(offset, value)| DrainMsg {
                    offset,
                    value: value.into(),
                })
                .collect();
            let process = "drainer";
            self.push(process, OpType::Invoke, Call::Drain(invoke));
            self.push(process, OpType::Ok, Call::Drain(done))
        }
        /// An assignment of `queues` to consumer `process`, completed with `outcome`.
        pub fn assign(&mut self, process: &str, queues: &[u32], outcome: OpType) -> &mut Self {
            let op = AssignOp {
                consumer: process.into(),
                group: "g".into(),
                queues: queues
                    .iter()
                    .map(|&queue| QueueRef {
                        topic: "t".into(),
                        queue,
                    })
                    .collect(),
            };
            self.push(process, OpType::Invoke, Call::Assign(op.clone()));
            self.push(process, outcome, Call::Assign(op))
        }
        /// A commit by `process` for group "g", completed with `outcome`.
        pub fn commit(
            &mut self,
            process: &str,
            queue: u32,
            offset: u64,
            outcome: OpType,
        ) -> &mut Self {
            let op = CommitOp {
                group: "g".into(),
                topic: "t".into(),
                queue,
                offset,
                consumer: Some(process.into()),
            };
            self.push(process, OpType::Invoke, Call::Commit(op.clone()));
            self.push(process, outcome, Call::Commit(op))
        }
        /// A fetch of group "g"'s committed offset that returned `offset`.
        pub fn fetch_offset(
            &mut self,
            process: &str,
            queue: u32,
            offset: Option<u64>,
        ) -> &mut Self {
            let invoke = FetchOffsetOp {
                group: "g".into(),
                topic: "t".into(),
                queue,
                offset: None,
            };
            let mut done = invoke.clone();
            done.offset = offset;
            self.push(process, OpType::Invoke, Call::FetchOffset(invoke));
            self.push(process, OpType::Ok, Call::FetchOffset(done))
        }
        /// A nemesis start or stop of `window`, completed with `outcome`.
        pub fn nemesis(
            &mut self,
            window: u64,
            phase: NemesisPhase,
            fault: Fault,
            outcome: OpType,
        ) -> &mut Self {
            let op = NemesisOp {
                window,
                phase,
                fault,
                targets: vec!["n1".into()],
                corruption: None,
            };
            self.push(NEMESIS_PROCESS, OpType::Invoke, Call::Nemesis(op.clone()));
            self.push(NEMESIS_PROCESS, outcome, Call::Nemesis(op))
        }
        /// A bit flip's start, completed `ok` with what the member made of it.
        pub fn bit_flip(
            &mut self,
            window: u64,
            file: crate::nemesis::CorruptFile,
            detection: Detection,
            reason: Option<&str>,
        ) -> &mut Self {
            let mut op = NemesisOp {
                window,
                phase: NemesisPhase::Start,
                fault: Fault::BitFlip { file },
                targets: vec!["n1".into()],
                corruption: None,
            };
            self.push(NEMESIS_PROCESS, OpType::Invoke, Call::Nemesis(op.clone()));
            op.corruption = Some(CorruptionOutcome {
                file: "raft/log/00000000000000000417.log".into(),
                position: 1234,
                bit: 3,
                detection,
                reason: reason.map(String::from),
            });
            self.push(NEMESIS_PROCESS, OpType::Ok, Call::Nemesis(op))
        }
        pub fn build(&self) -> History {
            History::from_ops(self.ops.clone()).expect("hand-made history is valid")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nemesis::{Fault, PartitionShape};

    fn sample_calls() -> Vec<(OpType, Call)> {
        let send = SendOp {
            topic: "t".into(),
            key: Some("k1".into()),
            queue: None,
            value: "c1-0".into(),
            offset: None,
            retried_after_unknown: false,
        };
        let sent = SendOp {
            queue: Some(2),
            offset: Some(17),
            ..send.clone()
        };
        vec![
            (
                OpType::Info,
                Call::Run(RunOp {
                    phase: NemesisPhase::Start,
                    seed: Some(42),
                    settings: serde_json::json!({"profile": "short"}),
                }),
            ),
            (OpType::Invoke, Call::Send(send)),
            (OpType::Ok, Call::Send(sent)),
            (
                OpType::Invoke,
                Call::Nemesis(NemesisOp {
                    window: 1,
                    phase: NemesisPhase::Start,
                    fault: Fault::Partition {
                        shape: PartitionShape::IsolateLeader,
                    },
                    targets: vec![],
                    corruption: None,
                }),
            ),
        ]
    }

    #[test]
    fn op_json_shape_is_flat_with_f_and_value() {
        let op = Op {
            index: 3,
            process: "c1".into(),
            kind: OpType::Ok,
            call: Call::Send(SendOp {
                topic: "t".into(),
                key: None,
                queue: Some(2),
                value: "c1-0".into(),
                offset: Some(17),
                retried_after_unknown: false,
            }),
            mono_ns: 5,
            wall_ns: 6,
            node: Some("n1".into()),
            error: None,
        };
        let json = serde_json::to_value(&op).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "index": 3, "process": "c1", "type": "ok", "f": "send",
                "value": {"topic": "t", "queue": 2, "value": "c1-0", "offset": 17},
                "mono_ns": 5, "wall_ns": 6, "node": "n1"
            })
        );
        let back: Op = serde_json::from_value(json).unwrap();
        assert_eq!(back, op);
    }

    #[tokio::test]
    async fn writer_and_reader_round_trip_from_many_tasks() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("history.jsonl");
        let (recorder, writer) = HistoryWriter::create(&path).unwrap();
        const TASKS: usize = 8;
        const SENDS_PER_TASK: usize = 200;
        let mut tasks = tokio::task::JoinSet::new();
        for t in 0..TASKS {
            let rec = recorder.clone();
            tasks.spawn(async move {
                let process = format!("c{t}");
                for i in 0..SENDS_PER_TASK {
                    let send = SendOp {
                        topic: "t".into(),
                        key: None,
                        queue: Some(0),
                        value: format!("{process}-{i}"),
                        offset: None,
                        retried_after_unknown: false,
                    };
                    rec.record(Event::invoke(&process, Call::Send(send.clone())))
                        .await
                        .unwrap();
                    let done = SendOp {
                        offset: Some(i as u64),
                        ..send
                    };
                    rec.record(Event::ok(&process, Call::Send(done)))
                        .await
                        .unwrap();
                }
            });
        }
        while let Some(res) = tasks.join_next().await {
            res.unwrap();
        }
        let stats = writer.close().await.unwrap();
        assert_eq!(stats.ops, (TASKS * SENDS_PER_TASK * 2) as u64);
        // Closed: further records fail rather than vanish.
        assert!(matches!(
            recorder
                .record(Event::invoke("c0", sample_calls()[1].1.clone()))
                .await,
            Err(RecordError::Closed)
        ));
        let history = read_history(&path).unwrap();
        assert_eq!(history.len() as u64, stats.ops);
        for (i, op) in history.ops.iter().enumerate() {
            assert_eq!(op.index, i as u64);
        }
        let completed = history
            .pairs()
            .filter(|(_, _, done)| done.map(|d| d.kind) == Some(OpType::Ok))
            .count();
        assert_eq!(completed, TASKS * SENDS_PER_TASK);
    }

    #[test]
    fn records_from_a_plain_thread() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("h.jsonl");
        let (recorder, writer) = HistoryWriter::create(&path).unwrap();
        let (kind, call) = sample_calls().remove(0);
        recorder
            .record_blocking(Event::new(HARNESS_PROCESS, kind, call))
            .unwrap();
        drop(recorder);
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let stats = rt.block_on(writer.close()).unwrap();
        assert_eq!(stats.ops, 1);
        let history = read_history(&path).unwrap();
        assert_eq!(history.run_start().and_then(|r| r.seed), Some(42));
    }

    fn line(index: u64, process: &str, kind: OpType, call: Call) -> String {
        serde_json::to_string(&Op {
            index,
            process: process.into(),
            kind,
            call,
            mono_ns: index,
            wall_ns: index,
            node: None,
            error: None,
        })
        .unwrap()
    }

    #[test]
    fn reader_rejects_bad_input_with_line_numbers() {
        let calls = sample_calls();
        let send_invoke = calls[1].1.clone();
        let send_ok = calls[2].1.clone();

        // Not JSON.
        let err = parse_history("\n{nope\n".as_bytes()).unwrap_err();
        assert!(matches!(err, HistoryError::Parse { line: 2, .. }), "{err}");

        // Completion without invoke.
        let text = line(0, "c1", OpType::Ok, send_ok.clone());
        let err = parse_history(text.as_bytes()).unwrap_err();
        assert!(err.to_string().contains("no outstanding invoke"), "{err}");

        // Two outstanding invokes in one process.
        let text = [
            line(0, "c1", OpType::Invoke, send_invoke.clone()),
            line(1, "c1", OpType::Invoke, send_invoke.clone()),
        ]
        .join("\n");
        let err = parse_history(text.as_bytes()).unwrap_err();
        assert!(err.to_string().contains("outstanding"), "{err}");

        // Index going back.
        let text = [
            line(5, "c1", OpType::Invoke, send_invoke.clone()),
            line(5, "c1", OpType::Ok, send_ok.clone()),
        ]
        .join("\n");
        let err = parse_history(text.as_bytes()).unwrap_err();
        assert!(err.to_string().contains("does not increase"), "{err}");

        // An ok send without an offset.
        let text = [
            line(0, "c1", OpType::Invoke, send_invoke.clone()),
            line(1, "c1", OpType::Ok, send_invoke.clone()),
        ]
        .join("\n");
        let err = parse_history(text.as_bytes()).unwrap_err();
        assert!(err.to_string().contains("queue and offset"), "{err}");

        // Mismatched completion.
        let poll = Call::Poll(PollOp {
            consumer: "c1".into(),
            group: "g".into(),
            msgs: vec![],
            min_offsets: vec![],
        });
        let text = [
            line(0, "c1", OpType::Invoke, send_invoke.clone()),
            line(1, "c1", OpType::Ok, poll),
        ]
        .join("\n");
        let err = parse_history(text.as_bytes()).unwrap_err();
        assert!(err.to_string().contains("does not match"), "{err}");

        // A valid one, with an invoke that never completed (allowed: unknown outcome).
        let text = [
            line(0, HARNESS_PROCESS, calls[0].0, calls[0].1.clone()),
            line(1, "c1", OpType::Invoke, send_invoke.clone()),
            line(2, "c1", OpType::Ok, send_ok),
            line(3, "c2", OpType::Invoke, send_invoke),
        ]
        .join("\n");
        let history = parse_history(text.as_bytes()).unwrap();
        let pairs: Vec<_> = history
            .pairs()
            .map(|(p, _, d)| (p, d.map(|d| d.index)))
            .collect();
        assert_eq!(pairs, vec![(1, Some(2)), (3, None)]);
        assert_eq!(history.invoke_of(2).map(|o| o.index), Some(1));
    }

    #[test]
    fn a_partial_last_line_is_dropped_and_flagged() {
        let calls = sample_calls();
        let full = line(0, "c1", OpType::Invoke, calls[1].1.clone());
        let partial = &line(1, "c1", OpType::Ok, calls[2].1.clone())[..20];
        let text = format!("{full}\n{partial}");
        let history = parse_history(text.as_bytes()).unwrap();
        assert_eq!(history.len(), 1);
        assert!(history.truncated_tail);
        // The same bytes with a newline are a broken line in the middle: an error.
        let err = parse_history(format!("{full}\n{partial}\n").as_bytes()).unwrap_err();
        assert!(matches!(err, HistoryError::Parse { line: 2, .. }));
    }

    #[test]
    fn reader_caps_line_length() {
        // A reader that yields an endless line must stop at the cap, not exhaust memory.
        let endless = io::repeat(b'x');
        let err = parse_history_capped(BufReader::new(endless), 1024).unwrap_err();
        assert!(matches!(err, HistoryError::LineTooLong { line: 1, .. }));
    }
}
