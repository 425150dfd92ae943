//! Transactional sends, as RocketMQ's `TransactionMQProducer`: [`Producer::send_in_transaction`]
//! stores a half message (invisible to consumers), runs the caller's local transaction, then
//! commits or rolls the message back with END_TRANSACTION. A transaction whose end never
//! arrived (the producer crashed, the answer was lost, the local transaction said "unknown") is
//! checked later: the broker sends CHECK_TRANSACTION_STATE on this producer's connection and the
//! [`TransactionChecker`] given to [`ProducerBuilder::transaction_checker`] decides
//! ([`CheckHandler`]).
//!
//! The broker ends each transaction once: a commit or rollback repeated (by a retry, or by an
//! answer to a check racing the first end) changes nothing.
//!
//! [`ProducerBuilder::transaction_checker`]: super::ProducerBuilder::transaction_checker

use std::future::Future;
use std::sync::{Arc, OnceLock};

use raftmq_protocol::RemotingCommand;
use raftmq_protocol::code::request;
use raftmq_protocol::header::ExtHeader;
use raftmq_protocol::header::transaction::{
    CheckTransactionStateRequestHeader, EndTransactionRequestHeader,
};
use raftmq_protocol::message::{StoredMessage, parse_offset_msg_id, property, sys_flag};
use raftmq_remoting::InboundRequestHandler;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::handle::Producer;
use super::outcome::{SendError, SendResult};
use crate::broker_client::BrokerClient;
use crate::error::ClientError;
use crate::message::{Message, ReceivedMessage};

/// What a local transaction (or a check of one) concluded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TransactionState {
    /// Deliver the message.
    Commit,
    /// Never deliver it.
    Rollback,
    /// Not known yet: the broker asks the producer group again later.
    Unknown,
}

impl TransactionState {
    /// The `commitOrRollback` value of END_TRANSACTION.
    fn wire(self) -> i32 {
        match self {
            TransactionState::Commit => sys_flag::TRANSACTION_COMMIT_TYPE,
            TransactionState::Rollback => sys_flag::TRANSACTION_ROLLBACK_TYPE,
            TransactionState::Unknown => sys_flag::TRANSACTION_NOT_TYPE,
        }
    }
}

/// Decides the state of a transaction the broker asks about (its half message, as its real
/// topic would hold it). Called on a task of its own; it must not block for long.
pub type TransactionChecker = Arc<dyn Fn(&ReceivedMessage) -> TransactionState + Send + Sync>;

/// How a transactional send ended.
#[derive(Debug)]
pub struct TransactionResult {
    /// Where the half message was stored.
    pub send: SendResult,
    /// What the local transaction decided.
    pub state: TransactionState,
    /// Whether the broker took the decision (END_TRANSACTION answered). On an error the broker
    /// checks the transaction later, so a commit or rollback is not lost: it is late.
    pub ended: Result<(), ClientError>,
}

impl Producer {
    /// Sends `message` as a transaction's half message, runs `local` (the local transaction)
    /// once it is stored, and commits or rolls it back as `local` decides. A half message that
    /// could not be stored returns the send's error, and `local` does not run. Give the
    /// producer a [`TransactionChecker`] (the broker asks it about transactions whose end it
    /// did not get).
    pub async fn send_in_transaction<F, Fut>(
        &self,
        message: Message,
        local: F,
    ) -> Result<TransactionResult, SendError>
    where
        F: FnOnce(&SendResult) -> Fut,
        Fut: Future<Output = TransactionState>,
    {
        if message.properties.contains_key(property::DELAY) {
            return Err(SendError::before_any_attempt(ClientError::InvalidMessage(
                "a transactional message cannot have a delay level".to_owned(),
            )));
        }
        // The broker asks a producer of the group about a pending transaction on the
        // connection the producer heartbeats on: make sure every member of the route has
        // heard from this one before the first half message goes there.
        self.inner.announce_to(&message.topic).await;
        let group = self.group().to_owned();
        let half = message
            .with_property(property::TRAN_MSG, "true")
            .with_property(property::PRODUCER_GROUP, group.clone());
        let send = self.send(half).await?;
        let state = local(&send).await;
        let ended = end_transaction(
            self.inner.instance.broker(),
            &send.broker_addr,
            EndOf {
                group: &group,
                topic: &send.queue.topic,
                offset_msg_id: &send.offset_msg_id,
                queue_offset: send.queue_offset,
                msg_id: &send.msg_id,
                from_check: false,
            },
            state,
        )
        .await;
        Ok(TransactionResult { send, state, ended })
    }
}

/// Which half message an END_TRANSACTION ends.
struct EndOf<'a> {
    group: &'a str,
    topic: &'a str,
    offset_msg_id: &'a str,
    queue_offset: i64,
    msg_id: &'a str,
    from_check: bool,
}

/// Sends END_TRANSACTION for `state` (nothing for `Unknown`: the broker will ask).
async fn end_transaction(
    broker: &BrokerClient,
    addr: &str,
    end: EndOf<'_>,
    state: TransactionState,
) -> Result<(), ClientError> {
    if state == TransactionState::Unknown {
        return Ok(());
    }
    let (_, commit_log_offset) = parse_offset_msg_id(end.offset_msg_id)
        .map_err(|error| ClientError::bad_response(addr, error))?;
    let header = EndTransactionRequestHeader {
        topic: Some(end.topic.to_owned()),
        producer_group: end.group.to_owned(),
        tran_state_table_offset: end.queue_offset,
        commit_log_offset,
        commit_or_rollback: state.wire(),
        from_transaction_check: Some(end.from_check),
        msg_id: end.msg_id.to_owned(),
        transaction_id: Some(end.msg_id.to_owned()),
        broker_name: None,
    };
    broker.end_transaction(addr, &header).await
}

/// Answers CHECK_TRANSACTION_STATE: runs the checker on a task of its own, then ends the
/// transaction at the member that asked. Installed on the producer's connections.
pub(crate) struct CheckHandler {
    pub(crate) group: String,
    pub(crate) checker: TransactionChecker,
    /// Set once the client instance exists (it is built with this handler).
    pub(crate) broker: OnceLock<BrokerClient>,
    pub(crate) tasks: TaskTracker,
    pub(crate) stop: CancellationToken,
}

impl InboundRequestHandler for CheckHandler {
    fn on_request(&self, addr: &str, request: RemotingCommand) -> Option<RemotingCommand> {
        if request.code != request::CHECK_TRANSACTION_STATE {
            return None;
        }
        let Ok(header) = CheckTransactionStateRequestHeader::from_ext_fields(&request.ext_fields)
        else {
            tracing::warn!(addr, "a malformed transaction check was ignored");
            return None;
        };
        let Ok((stored, _)) = StoredMessage::decode(&request.body) else {
            tracing::warn!(
                addr,
                "a transaction check without a readable message was ignored"
            );
            return None;
        };
        if stored.properties.get(property::PRODUCER_GROUP) != Some(&self.group) {
            tracing::debug!(
                addr,
                "a transaction check for another producer group was ignored"
            );
            return None;
        }
        let broker = self.broker.get().cloned()?;
        let broker_name = header.broker_name.clone().unwrap_or_default();
        let message = ReceivedMessage::from_stored(&stored.topic.clone(), &broker_name, stored);
        let checker = self.checker.clone();
        let group = self.group.clone();
        let addr = addr.to_owned();
        let stop = self.stop.clone();
        self.tasks.spawn(async move {
            let state = checker(&message);
            let offset_msg_id = header.offset_msg_id.clone().unwrap_or_else(|| {
                raftmq_protocol::message::offset_msg_id(
                    message.store_host,
                    header.commit_log_offset,
                )
            });
            let end = EndOf {
                group: &group,
                topic: header.topic.as_deref().unwrap_or(&message.topic),
                offset_msg_id: &offset_msg_id,
                queue_offset: header.tran_state_table_offset,
                msg_id: &message.msg_id,
                from_check: true,
            };
            tokio::select! {
                _ = stop.cancelled() => {}
                result = end_transaction(&broker, &addr, end, state) => {
                    if let Err(error) = result {
                        tracing::debug!(addr, %error, "answering a transaction check failed; the broker asks again");
                    }
                }
            }
        });
        None
    }
}
