//! Transactional messages, as RocketMQ's: a producer sends a half message, runs its local
//! transaction, then commits or rolls it back; a half message left pending is checked with a
//! live producer of its group until it is resolved or given up.
//!
//! 1. [`divert_half`]: a send with `TRAN_MSG` is stored, through Raft like any send, in queue 0 of
//!    [`TRANS_HALF_TOPIC`] with its real topic and queue in `REAL_TOPIC` and `REAL_QID`. Consumers
//!    never read that topic. Applying it records a pending transaction in the state machine
//!    (`state_machine::indexes`): the half message's physical offset, when it was last touched
//!    and how often it was checked.
//! 2. [`end`] (END_TRANSACTION): the leader reads the half message back and proposes a
//!    `Command::Release` claiming the pending transaction: on commit the message is stored in its
//!    real topic, on rollback nothing is. Apply stores it only if the transaction is still
//!    pending and consumes it, so a transaction ends once, whoever proposes its end how often.
//! 3. [`run`]: on the leader only, a task finds pending transactions older than
//!    `transaction-timeout` (then every `transaction-check-interval`), proposes
//!    `Command::TransactionChecked` (the check count, replicated) and sends CHECK_TRANSACTION_STATE
//!    to a producer of the half message's group, which answers with END_TRANSACTION. After
//!    `transaction-check-max` checks the half message goes to [`TRANS_CHECK_MAX_TIME_TOPIC`]
//!    (kept for an operator, never delivered) and a warning is logged.
//!
//! Everything that decides is in the state machine, so a new leader resumes checking where the
//! old one stopped, and an answer reaching it ends the transaction exactly once.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use raftmq_protocol::RemotingCommand;
use raftmq_protocol::code::request;
use raftmq_protocol::header::ExtHeader;
use raftmq_protocol::header::transaction::CheckTransactionStateRequestHeader;
use raftmq_protocol::message::{StoredMessage, offset_msg_id, property, sys_flag};
use raftmq_protocol::names::{TRANS_CHECK_MAX_TIME_TOPIC, TRANS_HALF_TOPIC, now_ms};
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::command::{Applied, Claim, Command, ReleaseBuilder, SendOutcome};
use crate::context::BrokerContext;
use crate::error::RequestError;
use crate::leader_task::{LeaderTask, Round, run_while_leading};
use crate::processor::send_message::{pending_message, resolve_topic};
use crate::schedule::{Destination, real_destination};
use crate::state_machine::state::PendingHalf;
use crate::topic::TopicConfig;

/// How often the leader looks for transactions to check.
pub const CHECK_POLL_INTERVAL: Duration = Duration::from_millis(500);
/// Transactions looked at per round (each may cost a replicated check).
pub const CHECKS_PER_ROUND: usize = 256;
/// The two sys-flag bits that say a message's transaction type.
pub const TRANSACTION_TYPE_MASK: i32 = 0x3 << 2;

/// How a producer ended its local transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Commit,
    Rollback,
}

/// What became of an END_TRANSACTION.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// This request ended the transaction.
    Done,
    /// It had ended before (or was given up): nothing changed.
    NotPending,
}

/// `sys_flag` with its transaction type replaced.
pub fn with_transaction_type(flag: i32, transaction_type: i32) -> i32 {
    (flag & !TRANSACTION_TYPE_MASK) | transaction_type
}

/// Diverts a half message to the half topic: `REAL_TOPIC`, `REAL_QID`, the producer group and
/// the transaction id (its `UNIQ_KEY`) go into its properties. Returns the destination, the
/// topic to create with the send (the half topic, the first time), and the sys flag to store
/// (the prepared bit cleared, as RocketMQ stores half messages). A real topic that does not exist
/// yet is created now, as a delayed message's is.
pub async fn divert_half(
    ctx: &BrokerContext,
    real: Destination,
    create_real_topic: Option<TopicConfig>,
    producer_group: &str,
    properties: &mut BTreeMap<String, String>,
) -> Result<(Destination, Option<TopicConfig>), RequestError> {
    if let Some(config) = create_real_topic {
        ctx.proposer
            .propose(Command::CreateTopicIfMissing(config))
            .await?;
        ctx.register_now.notify_one();
    }
    properties
        .entry(property::PRODUCER_GROUP.into())
        .or_insert_with(|| producer_group.to_string());
    if let Some(uniq) = properties.get(property::UNIQ_KEY).cloned() {
        properties.insert(property::TRANSACTION_ID.into(), uniq);
    }
    properties.insert(property::REAL_TOPIC.into(), real.topic);
    properties.insert(property::REAL_QID.into(), real.queue_id.to_string());
    let create_half_topic = ctx
        .state
        .topic(TRANS_HALF_TOPIC)
        .is_none()
        .then(|| TopicConfig::new(TRANS_HALF_TOPIC, 1));
    Ok((
        Destination {
            topic: TRANS_HALF_TOPIC.to_string(),
            queue_id: 0,
        },
        create_half_topic,
    ))
}

/// A half message as its real topic stores it once committed: real topic and queue restored,
/// `REAL_TOPIC`, `REAL_QID` and `TRAN_MSG` dropped, the commit type in its sys flag, and its
/// half message's physical offset as the prepared transaction offset (as RocketMQ's
/// `EndTransactionProcessor` builds it).
pub fn committed(mut half: StoredMessage) -> Result<(Destination, StoredMessage), String> {
    let destination = real_destination(&half)?;
    half.properties.remove(property::REAL_TOPIC);
    half.properties.remove(property::REAL_QID);
    half.properties.remove(property::TRAN_MSG);
    half.sys_flag = with_transaction_type(half.sys_flag, sys_flag::TRANSACTION_COMMIT_TYPE);
    half.prepared_transaction_offset = half.physical_offset;
    half.topic = destination.topic.clone();
    half.queue_id = destination.queue_id as i32;
    half.queue_offset = 0;
    half.physical_offset = 0;
    half.store_timestamp = 0;
    Ok((destination, half))
}

/// Reads the pending half message at `half`: `None` when it is not pending any more.
async fn pending_half_message(
    ctx: &BrokerContext,
    half: u64,
) -> Result<Option<StoredMessage>, RequestError> {
    if ctx.state.pending_half(half)?.is_none() {
        return Ok(None);
    }
    let Some(found) = ctx.reader.read_physical(&ctx.state, half).await? else {
        return Ok(None);
    };
    let (message, _) = StoredMessage::decode(&found.bytes)
        .map_err(|err| RequestError::Internal(format!("a half message does not decode: {err}")))?;
    Ok(Some(message))
}

/// Ends the transaction whose half message is at `half` as its producer decided. The producer
/// group must be the half message's.
pub async fn end(
    ctx: &BrokerContext,
    half: u64,
    producer_group: &str,
    decision: Decision,
) -> Result<Ended, RequestError> {
    let Some(message) = pending_half_message(ctx, half).await? else {
        return Ok(Ended::NotPending);
    };
    let group = message
        .properties
        .get(property::PRODUCER_GROUP)
        .map_or("", String::as_str);
    if group != producer_group {
        return Err(RequestError::InvalidParameter(format!(
            "the producer group is wrong: the half message belongs to {group:?}, not {producer_group:?}"
        )));
    }
    let mut release = ReleaseBuilder::default();
    let claim = Claim::Transaction { half };
    match decision {
        Decision::Rollback => release.drop_claim(claim, TRANS_HALF_TOPIC.to_string()),
        Decision::Commit => {
            let (destination, message) = committed(message).map_err(RequestError::Internal)?;
            deliver(ctx, &mut release, claim, destination, &message)?;
        }
    }
    propose_release(ctx, release).await
}

/// Adds `message` for `destination` to a release, creating the topic with it where allowed.
fn deliver(
    ctx: &BrokerContext,
    release: &mut ReleaseBuilder,
    claim: Claim,
    destination: Destination,
    message: &StoredMessage,
) -> Result<(), RequestError> {
    let (_, create_topic) = resolve_topic(ctx, &destination.topic)?;
    let pending =
        pending_message(message).map_err(|err| RequestError::Internal(err.to_string()))?;
    release.deliver(
        claim,
        (destination.topic, destination.queue_id),
        create_topic,
        &pending.bytes,
        pending.tags_code,
    );
    Ok(())
}

/// Proposes a release of one claim and says whether it took effect.
async fn propose_release(
    ctx: &BrokerContext,
    release: ReleaseBuilder,
) -> Result<Ended, RequestError> {
    let (command, blob) = release.build(now_ms());
    let applied = ctx.proposer.propose_with_messages(command, blob).await?;
    match applied {
        Applied::Sent(outcomes) => match outcomes.first() {
            Some(SendOutcome::Refused(crate::command::Refusal::NotPending(_))) => {
                Ok(Ended::NotPending)
            }
            Some(SendOutcome::Refused(refusal)) => {
                // The claim was consumed but the message could not be stored (its topic went
                // away): like RocketMQ's broker, it is dropped, with a warning.
                warn!(%refusal, "a committed transaction's message could not be stored; dropped");
                Ok(Ended::Done)
            }
            Some(_) => Ok(Ended::Done),
            None => Err(RequestError::Internal("a release got no outcome".into())),
        },
        other => Err(RequestError::Internal(format!(
            "a release was answered {other:?}"
        ))),
    }
}

/// Runs until `shutdown`: while this member leads, checks pending transactions with their
/// producers.
pub async fn run(ctx: Arc<BrokerContext>, shutdown: CancellationToken) {
    run_while_leading(ctx, shutdown, TransactionChecks).await
}

/// The leader's checks of pending transactions.
struct TransactionChecks;

impl LeaderTask for TransactionChecks {
    const NAME: &'static str = "transaction checks";
    const INTERVAL: Duration = CHECK_POLL_INTERVAL;

    async fn round(&mut self, ctx: &BrokerContext) -> Round {
        if let Err(err) = check_round(ctx).await {
            warn!(error = %err, "a round of transaction checks failed; trying again shortly");
        }
        Round::Done
    }
}

/// Whether a pending transaction is due for a check at `now_ms`: its first check comes
/// `timeout` after its half message was stored, later ones `check_interval` after the last.
///
/// A last touch further in the future than a whole `timeout` was made by a leader whose clock
/// ran ahead of this one: it is due now, or the transaction would wait out the skew as well
/// (jepsen-lite's clock-skew scenario left transactions pending for the 2 minutes a skewed
/// leader had put their last check ahead).
fn due_for_check(
    half: &PendingHalf,
    now_ms: i64,
    timeout: Duration,
    check_interval: Duration,
) -> bool {
    let wait = if half.checks == 0 {
        timeout
    } else {
        check_interval
    };
    let touched_by_a_clock_ahead =
        half.last_touch_ms > now_ms.saturating_add(timeout.as_millis() as i64);
    touched_by_a_clock_ahead || half.last_touch_ms.saturating_add(wait.as_millis() as i64) <= now_ms
}

/// One round: every pending transaction due for a check is checked (or given up).
async fn check_round(ctx: &BrokerContext) -> Result<(), RequestError> {
    let config = ctx.config.transactions;
    let now = now_ms();
    let shortest_wait = config.timeout.min(config.check_interval).as_millis() as i64;
    let mut candidates = ctx
        .state
        .halves_touched_before(now.saturating_sub(shortest_wait), CHECKS_PER_ROUND)?;
    // And those a leader with a clock ahead of this one touched "in the future".
    candidates.extend(ctx.state.halves_touched_after(
        now.saturating_add(config.timeout.as_millis() as i64),
        CHECKS_PER_ROUND,
    )?);
    for half in candidates {
        if !ctx.leadership.may_write() {
            return Ok(());
        }
        if !due_for_check(&half, now, config.timeout, config.check_interval) {
            continue;
        }
        let Some(message) = pending_half_message(ctx, half.physical).await? else {
            continue;
        };
        if half.checks >= config.check_max {
            give_up(ctx, half, message).await?;
            continue;
        }
        let applied = ctx
            .proposer
            .propose(Command::TransactionChecked {
                half: half.physical,
                checked_at_ms: now,
            })
            .await?;
        if applied == Applied::Done {
            ask_producer(ctx, half, message);
        }
    }
    Ok(())
}

/// After `check_max` checks: the half message goes to [`TRANS_CHECK_MAX_TIME_TOPIC`].
async fn give_up(
    ctx: &BrokerContext,
    half: PendingHalf,
    message: StoredMessage,
) -> Result<(), RequestError> {
    warn!(
        half = half.physical,
        checks = half.checks,
        uniq_key = message
            .properties
            .get(property::UNIQ_KEY)
            .map_or("-", String::as_str),
        producer_group = message
            .properties
            .get(property::PRODUCER_GROUP)
            .map_or("-", String::as_str),
        "a transaction was checked too often without an answer; discarded to {TRANS_CHECK_MAX_TIME_TOPIC}"
    );
    let mut kept = message;
    kept.topic = TRANS_CHECK_MAX_TIME_TOPIC.to_string();
    kept.queue_id = 0;
    let claim = Claim::Transaction {
        half: half.physical,
    };
    let mut release = ReleaseBuilder::default();
    let create_topic = ctx
        .state
        .topic(TRANS_CHECK_MAX_TIME_TOPIC)
        .is_none()
        .then(|| TopicConfig::new(TRANS_CHECK_MAX_TIME_TOPIC, 1));
    let pending = pending_message(&kept).map_err(|err| RequestError::Internal(err.to_string()))?;
    release.deliver(
        claim,
        (TRANS_CHECK_MAX_TIME_TOPIC.to_string(), 0),
        create_topic,
        &pending.bytes,
        pending.tags_code,
    );
    propose_release(ctx, release).await.map(drop)
}

/// Sends CHECK_TRANSACTION_STATE (oneway) to one live producer of the half message's group:
/// the header names the half message, the body is the message as its real topic would hold it.
fn ask_producer(ctx: &BrokerContext, half: PendingHalf, message: StoredMessage) {
    let group = message
        .properties
        .get(property::PRODUCER_GROUP)
        .cloned()
        .unwrap_or_default();
    if group == crate::grpc::send::GRPC_PRODUCER_GROUP {
        ask_grpc_producer(ctx, half, message);
        return;
    }
    let handles = ctx.clients.producer_handles(&group);
    // Spread checks over the group's producers.
    let Some(handle) = handles.get(half.physical as usize % handles.len().max(1)) else {
        debug!(
            group,
            half = half.physical,
            "no live producer to check a transaction with"
        );
        return;
    };
    let uniq = message.properties.get(property::UNIQ_KEY).cloned();
    let header = CheckTransactionStateRequestHeader {
        topic: Some(message.topic.clone()),
        tran_state_table_offset: message.queue_offset,
        commit_log_offset: half.physical as i64,
        msg_id: uniq.clone(),
        transaction_id: uniq,
        offset_msg_id: Some(offset_msg_id(ctx.config.advertise, half.physical as i64)),
        broker_name: Some(ctx.config.broker_name.clone()),
    };
    let mut body_message = message;
    if let Ok(destination) = real_destination(&body_message) {
        body_message.topic = destination.topic;
        body_message.queue_id = destination.queue_id as i32;
    }
    let mut body = BytesMut::new();
    if let Err(err) = body_message.encode(&mut body) {
        warn!(error = %err, "a half message cannot be encoded for a check");
        return;
    }
    let mut check = RemotingCommand::new_request(request::CHECK_TRANSACTION_STATE).into_oneway();
    check.ext_fields = header.to_ext_fields();
    check.body = body.freeze();
    if let Err(err) = handle.try_send(&check) {
        debug!(error = %err, group, "could not send a transaction check");
    }
}

/// Runs until `shutdown`: on a member that does not lead, relays the leader's checks of 5.x
/// producers' transactions to the producers whose Telemetry streams are open here. A 5.x
/// client keeps one channel per group and it may sit on any member, so a check only the leader
/// pushed would miss most producers. The leader's replicated check count tells when a check
/// happened: each increase seen here is relayed once. An answer reaching any member is
/// forwarded to the leader and ends the transaction once.
pub async fn relay_grpc_checks(ctx: Arc<BrokerContext>, shutdown: CancellationToken) {
    let mut relayed: BTreeMap<u64, u32> = BTreeMap::new();
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(CHECK_POLL_INTERVAL) => {}
        }
        if ctx.leadership.is_leader() || ctx.telemetry.is_empty() {
            relayed.clear();
            continue;
        }
        let halves = match ctx
            .state
            .halves_touched_before(now_ms().saturating_add(1), CHECKS_PER_ROUND)
        {
            Ok(halves) => halves,
            Err(err) => {
                debug!(error = %err, "cannot list pending transactions to relay checks");
                continue;
            }
        };
        let mut still_pending = BTreeMap::new();
        for half in halves {
            still_pending.insert(half.physical, half.checks);
            if half.checks == 0 || relayed.get(&half.physical) == Some(&half.checks) {
                continue;
            }
            let Ok(Some(message)) = pending_half_message(&ctx, half.physical).await else {
                continue;
            };
            let grpc = message
                .properties
                .get(property::PRODUCER_GROUP)
                .is_some_and(|group| group == crate::grpc::send::GRPC_PRODUCER_GROUP);
            if grpc {
                ask_grpc_producer(&ctx, half, message);
            }
        }
        relayed = still_pending;
    }
}

/// A half message a 5.x producer sent: a RecoverOrphanedTransactionCommand on the Telemetry
/// stream of a producer publishing its real topic, open on this member. The transaction id is
/// the one its send answered (the half message's offset message id).
fn ask_grpc_producer(ctx: &BrokerContext, half: PendingHalf, message: StoredMessage) {
    let topic = match real_destination(&message) {
        Ok(destination) => destination.topic,
        Err(err) => {
            warn!(error = %err, half = half.physical, "a half message names no real topic");
            return;
        }
    };
    let command = crate::grpc::pb::RecoverOrphanedTransactionCommand {
        message: Some(crate::grpc::send::message_of(&message, &topic)),
        transaction_id: crate::grpc::send::transaction_id(&ctx.config.broker_name, half.physical),
    };
    if !ctx
        .telemetry
        .recover_orphaned_transaction(&topic, half.physical, command)
    {
        debug!(
            topic,
            half = half.physical,
            "no 5.x producer of the topic on this member to check a transaction with"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checks_wait_the_timeout_first_then_the_interval() {
        let timeout = Duration::from_secs(6);
        let interval = Duration::from_secs(30);
        let fresh = PendingHalf {
            physical: 1,
            last_touch_ms: 1_000,
            checks: 0,
        };
        assert!(!due_for_check(&fresh, 6_999, timeout, interval));
        assert!(due_for_check(&fresh, 7_000, timeout, interval));
        let checked = PendingHalf { checks: 1, ..fresh };
        assert!(!due_for_check(&checked, 7_000, timeout, interval));
        assert!(due_for_check(&checked, 31_000, timeout, interval));
        // Touched 2 minutes "from now" by a leader whose clock ran ahead: due at once; a touch
        // less than a timeout ahead (a clock stepped back a little) is not.
        let ahead = PendingHalf {
            last_touch_ms: 121_000,
            ..checked
        };
        assert!(due_for_check(&ahead, 1_000, timeout, interval));
        let slightly_ahead = PendingHalf {
            last_touch_ms: 3_000,
            ..checked
        };
        assert!(!due_for_check(&slightly_ahead, 1_000, timeout, interval));
    }

    #[test]
    fn a_committed_message_goes_to_its_real_queue_without_transaction_marks() {
        let host = "127.0.0.1:1".parse().unwrap();
        let half = StoredMessage {
            queue_id: 0,
            flag: 3,
            queue_offset: 5,
            physical_offset: 77,
            sys_flag: 0,
            born_timestamp: 1,
            born_host: host,
            store_timestamp: 2,
            store_host: host,
            reconsume_times: 0,
            prepared_transaction_offset: 0,
            body: bytes::Bytes::from_static(b"order"),
            topic: TRANS_HALF_TOPIC.into(),
            properties: BTreeMap::from([
                (property::REAL_TOPIC.into(), "Orders".into()),
                (property::REAL_QID.into(), "3".into()),
                (property::TRAN_MSG.into(), "true".into()),
                (property::PRODUCER_GROUP.into(), "pg".into()),
                (property::UNIQ_KEY.into(), "U1".into()),
            ]),
        };
        let (destination, message) = committed(half).unwrap();
        assert_eq!(
            destination,
            Destination {
                topic: "Orders".into(),
                queue_id: 3
            }
        );
        assert_eq!(message.topic, "Orders");
        assert_eq!(message.queue_id, 3);
        assert_eq!(message.prepared_transaction_offset, 77);
        assert_eq!(
            message.sys_flag & TRANSACTION_TYPE_MASK,
            sys_flag::TRANSACTION_COMMIT_TYPE
        );
        for gone in [property::REAL_TOPIC, property::REAL_QID, property::TRAN_MSG] {
            assert!(!message.properties.contains_key(gone), "{gone}");
        }
        assert_eq!(message.properties[property::UNIQ_KEY], "U1");
        assert_eq!(message.properties[property::PRODUCER_GROUP], "pg");
        assert_eq!(&message.body[..], b"order");
    }
}
