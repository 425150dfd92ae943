//! Admin HTTP (axum), bound to loopback by default: the dashboard under `/ui` (supplied by the
//! binary, `raftmq-server`), health, Raft status, topics, groups,
//! Prometheus metrics, the membership operations an operator needs (add a learner, change the
//! voters, hand leadership to a member, campaign here), and the consumer offset reset
//! (`mq offset reset`), which goes through Raft on the leader like every other write, and the
//! ACL configuration (`GET /acl` without secrets, `POST /acl` with one change, replicated). With
//! an admin token configured, every request that is not a read, and everything under `/acl`,
//! needs `Authorization: Bearer <token>` (`raftmq_admin_server::guard`). The JSON
//! bodies are `raftmq_protocol::admin`'s types, shared with the admin client (`mq`,
//! jepsen-lite, tests).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use openraft::{BasicNode, ChangeMembers};
use raftmq_protocol::acl::{AclChange, AclView};
use raftmq_protocol::admin::{
    AclAnswer, AddLearner, ChangeMembership, ELECTION_STARTED, ElectAnswer, ErrorBody,
    FollowerStatus, GroupQueueStatus, GroupStatus, HEALTHY, MembershipAnswer, RaftStatus,
    RemoveLearner, ResetAnswer, ResetOffsets, ResetQueue, TopicStatus, TransferLeader,
    TransferLeaderAnswer,
};

use crate::command::{Applied, Command, OffsetCommit, QueueOffset};
use crate::context::BrokerContext;
use crate::processor::get_broker_runtime_info::majority_index;
use raftmq_raft::{LogReader, NodeError, NodeId, Raft};

/// What the admin handlers reach.
#[derive(Clone)]
pub struct AdminState {
    pub ctx: Arc<BrokerContext>,
    pub raft: Raft,
    pub log: LogReader,
}

/// The admin endpoints, and `ui` (the dashboard under `/ui`, which the binary supplies: this
/// library does not depend on the client crate the dashboard is built on).
pub fn router(state: AdminState, ui: Router) -> Router {
    let router = Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/raft", get(raft_status))
        .route("/topics", get(topics))
        .route("/groups", get(groups))
        .route("/metrics", get(metrics))
        .route("/raft/add-learner", post(add_learner))
        .route("/raft/change-membership", post(change_membership))
        .route("/raft/remove-learner", post(remove_learner))
        .route("/raft/elect", post(elect))
        .route("/raft/transfer-leader", post(transfer_leader))
        .route("/offsets/reset", post(reset_offsets))
        .route("/acl", get(acl_view).post(acl_change))
        .with_state(state.clone())
        .merge(ui);
    raftmq_admin_server::guard(router, state.ctx.config.admin_token.clone())
}

/// `GET /acl`: the group's ACL configuration as applied on this member, without secret keys.
async fn acl_view(State(state): State<AdminState>) -> Json<AclView> {
    let enforced = state.ctx.acl_enforced();
    Json(state.ctx.state.with_acl(|acl| acl.view(enforced)))
}

/// `POST /acl` on the leader: one [`AclChange`], checked, then replicated; every member of the
/// group enforces it once applied.
async fn acl_change(State(state): State<AdminState>, Json(change): Json<AclChange>) -> Response {
    let ctx = &state.ctx;
    if let Err(err) = change.validate() {
        return failure(StatusCode::BAD_REQUEST, err);
    }
    if let Err(err) = ctx.require_leader() {
        return failure(StatusCode::CONFLICT, err);
    }
    // Never log the change itself: an account carries its secret key.
    let what = match &change {
        AclChange::SetEnabled(enabled) => format!("enabled={enabled}"),
        AclChange::UpsertAccount(account) => format!("upsert account {}", account.access_key),
        AclChange::DeleteAccount(access_key) => format!("delete account {access_key}"),
        AclChange::SetGlobalWhitelist(list) => format!("global whitelist of {}", list.len()),
    };
    match ctx.proposer.propose(Command::Acl(change)).await {
        Ok(Applied::Done) => {
            // Applied here, so the applied index is at or past the change's own entry.
            let log_index = ctx.state.applied().map_or(0, |id| id.index);
            tracing::info!(change = %what, log_index, "ACL changed");
            Json(AclAnswer { log_index }).into_response()
        }
        Ok(Applied::Refused(refusal)) => failure(StatusCode::CONFLICT, refusal),
        Ok(other) => failure(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("unexpected apply answer {other:?}"),
        ),
        Err(err) => failure(StatusCode::SERVICE_UNAVAILABLE, err),
    }
}

async fn healthz() -> &'static str {
    HEALTHY
}

/// Ready once the member knows a leader of its group (it can route writes and serve reads).
async fn readyz(State(state): State<AdminState>) -> Response {
    let view = state.ctx.leadership.view();
    match view.leader {
        Some(leader) => {
            (StatusCode::OK, format!("ready: leader is node {leader}\n")).into_response()
        }
        None => (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: no leader known\n",
        )
            .into_response(),
    }
}

async fn raft_status(State(state): State<AdminState>) -> Json<RaftStatus> {
    let mut status = member_status(&state.ctx, &state.log);
    status.disk_used_bytes = disk_used_bytes(&state.ctx).await;
    Json(status)
}

/// This member's Raft view, as `GET /raft` answers it (without the disk usage, which reads the
/// data directory): what the dashboard and the metrics show too.
pub fn member_status(ctx: &BrokerContext, log: &LogReader) -> RaftStatus {
    let metrics = ctx.leadership.metrics();
    let membership = metrics.membership_config.membership();
    let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
    let learners: BTreeSet<NodeId> = membership.learner_ids().collect();
    let nodes = membership
        .nodes()
        .map(|(id, node)| (*id, node.addr.clone()))
        .collect();
    let last = metrics.last_log_index.unwrap_or(0);
    let followers: BTreeMap<NodeId, FollowerStatus> = metrics
        .replication
        .as_ref()
        .map(|replication| {
            replication
                .iter()
                .filter(|(id, _)| **id != metrics.id)
                .map(|(id, matched)| {
                    let matched_index = matched.map(|log_id| log_id.index);
                    let last_contact_ms = metrics
                        .heartbeat
                        .as_ref()
                        .and_then(|heartbeats| heartbeats.get(id).copied().flatten())
                        .map(|acked| {
                            u64::try_from(openraft::Instant::elapsed(&*acked).as_millis())
                                .unwrap_or(u64::MAX)
                        });
                    (
                        *id,
                        FollowerStatus {
                            matched_index,
                            lag_entries: last.saturating_sub(matched_index.unwrap_or(0)),
                            last_contact_ms,
                        },
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    let commit_index = metrics.replication.as_ref().map(|_| {
        let voter_ids: Vec<NodeId> = voters.iter().copied().collect();
        let matched = followers
            .iter()
            .map(|(id, follower)| (*id, follower.matched_index))
            .collect();
        majority_index(&voter_ids, &matched, metrics.id, last)
    });
    let is_leader = metrics.state == openraft::ServerState::Leader;
    let log = log.metrics();
    RaftStatus {
        broker_name: ctx.config.broker_name.clone(),
        node_id: metrics.id,
        state: format!("{:?}", metrics.state),
        term: metrics.current_term,
        leader: metrics.current_leader,
        last_log_index: metrics.last_log_index,
        applied_index: metrics.last_applied.map(|id| id.index),
        voters,
        learners,
        nodes,
        followers,
        remoting_addr: ctx.config.advertise.to_string(),
        log_fsyncs: log.fsyncs,
        log_entries_flushed: log.entries_flushed,
        writable: ctx.leadership.may_write(),
        commit_index,
        quorum_ack_age_ms: raftmq_raft::since_quorum_ack(&metrics)
            .filter(|_| is_leader)
            .map(|age| u64::try_from(age.as_millis()).unwrap_or(u64::MAX)),
        disk_used_bytes: None,
        disk_full: log.disk_full(),
        pending_transactions: ctx.state.pending_transactions().ok(),
        pending_timers: ctx.state.pending_timers().ok(),
    }
}

/// Bytes under the member's data directory, read off the async threads; `None` if it cannot be
/// read.
pub async fn disk_used_bytes(ctx: &BrokerContext) -> Option<u64> {
    let dir = ctx.config.data_dir.clone();
    tokio::task::spawn_blocking(move || crate::metrics::dir_bytes(&dir).ok())
        .await
        .ok()
        .flatten()
}

/// `GET /topics`: each topic with its queues' offsets.
async fn topics(State(state): State<AdminState>) -> Json<Vec<TopicStatus>> {
    let ctx = &state.ctx;
    let statuses = ctx
        .state
        .topics()
        .into_iter()
        .map(|topic| {
            let offsets: Vec<_> = (0..topic.queue_nums())
                .map(|queue| (queue, ctx.state.queue(&topic.name, queue)))
                .collect();
            TopicStatus {
                name: topic.name,
                read_queue_nums: topic.read_queue_nums,
                write_queue_nums: topic.write_queue_nums,
                perm: topic.perm,
                queues: offsets
                    .iter()
                    .map(|(queue, q)| (*queue, (q.min_offset, q.next_offset)))
                    .collect(),
                queue_bytes: offsets.iter().map(|(queue, q)| (*queue, q.bytes)).collect(),
            }
        })
        .collect();
    Json(statuses)
}

/// `GET /groups`: each consumer group with its committed offsets, lag and live clients.
async fn groups(State(state): State<AdminState>) -> Json<Vec<GroupStatus>> {
    let ctx = &state.ctx;
    let mut names: BTreeSet<String> = ctx.state.groups().into_iter().map(|g| g.name).collect();
    names.extend(ctx.state.groups_with_offsets());
    names.extend(ctx.clients.consumer_groups().into_iter().map(|g| g.group));
    let now = std::time::Instant::now();
    let statuses = names
        .into_iter()
        .map(|group| {
            let queues: Vec<GroupQueueStatus> = ctx
                .state
                .group_offsets(&group)
                .into_iter()
                .map(|((topic, queue), committed)| {
                    let max_offset = ctx.state.queue(&topic, queue).next_offset;
                    let client = ctx
                        .clients
                        .queue_puller(&group, (&topic, queue), now)
                        .and_then(|puller| puller.client_id);
                    GroupQueueStatus {
                        lag: max_offset.saturating_sub(committed),
                        topic,
                        queue,
                        committed,
                        max_offset,
                        client,
                    }
                })
                .collect();
            GroupStatus {
                clients: ctx.clients.consumer_ids(&group),
                total_lag: queues.iter().map(|q| q.lag).sum(),
                group,
                queues,
            }
        })
        .collect();
    Json(statuses)
}

async fn metrics(State(state): State<AdminState>) -> Response {
    let ctx = &state.ctx;
    let raft = member_status(ctx, &state.log);
    let text = ctx.metrics.render(&crate::metrics::Scrape {
        raft: &raft,
        log: state.log.metrics(),
        state: &ctx.state,
        clients: &ctx.clients,
        disk_used_bytes: disk_used_bytes(ctx).await,
    });
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        text,
    )
        .into_response()
}

fn failure(status: StatusCode, message: impl std::fmt::Display) -> Response {
    let body = ErrorBody {
        error: message.to_string(),
    };
    (status, Json(body)).into_response()
}

/// `POST /raft/add-learner {"node_id": 4, "addr": "127.0.0.1:20914"}` on the leader: adds a
/// non-voting member and waits until it has caught up.
async fn add_learner(State(state): State<AdminState>, Json(body): Json<AddLearner>) -> Response {
    if body.node_id == 0 {
        return failure(StatusCode::BAD_REQUEST, "node ids start at 1");
    }
    if body.addr.parse::<std::net::SocketAddr>().is_err() {
        return failure(
            StatusCode::BAD_REQUEST,
            format!("{:?} is not host:port", body.addr),
        );
    }
    match state
        .raft
        .add_learner(body.node_id, BasicNode::new(body.addr), true)
        .await
    {
        Ok(response) => Json(MembershipAnswer {
            log_index: response.log_id.index,
        })
        .into_response(),
        Err(err) => failure(StatusCode::CONFLICT, err),
    }
}

/// `POST /raft/change-membership {"voters": [1,2,4], "retain": false}` on the leader.
async fn change_membership(
    State(state): State<AdminState>,
    Json(body): Json<ChangeMembership>,
) -> Response {
    if body.voters.is_empty() {
        return failure(StatusCode::BAD_REQUEST, "voters must not be empty");
    }
    match state
        .raft
        .change_membership(ChangeMembers::ReplaceAllVoters(body.voters), body.retain)
        .await
    {
        Ok(response) => {
            state.ctx.register_now.notify_one();
            Json(MembershipAnswer {
                log_index: response.log_id.index,
            })
            .into_response()
        }
        Err(err) => failure(StatusCode::CONFLICT, err),
    }
}

/// `POST /raft/remove-learner {"node_id": 4}` on the leader: drops a non-voting member.
async fn remove_learner(
    State(state): State<AdminState>,
    Json(body): Json<RemoveLearner>,
) -> Response {
    let metrics = state.ctx.leadership.metrics();
    let membership = metrics.membership_config.membership();
    if membership.voter_ids().any(|id| id == body.node_id) {
        return failure(
            StatusCode::BAD_REQUEST,
            format!(
                "node {} is a voter: change the voters instead",
                body.node_id
            ),
        );
    }
    match state
        .raft
        .change_membership(
            ChangeMembers::RemoveNodes(BTreeSet::from([body.node_id])),
            false,
        )
        .await
    {
        Ok(response) => {
            state.ctx.register_now.notify_one();
            Json(MembershipAnswer {
                log_index: response.log_id.index,
            })
            .into_response()
        }
        Err(err) => failure(StatusCode::CONFLICT, err),
    }
}

/// `POST /raft/transfer-leader {"node_id": 2}` on the leader: hands leadership to that voter
/// with openraft's transfer and answers once it leads (`{"leader": 2}`), within a few seconds.
async fn transfer_leader(
    State(state): State<AdminState>,
    Json(body): Json<TransferLeader>,
) -> Response {
    match raftmq_raft::node::transfer_leader(&state.raft, body.node_id).await {
        Ok(()) => Json(TransferLeaderAnswer {
            leader: body.node_id,
        })
        .into_response(),
        Err(err @ (NodeError::NotVoter { .. } | NodeError::NotReplicating { .. })) => {
            failure(StatusCode::BAD_REQUEST, err)
        }
        Err(err @ NodeError::NotLeader { .. }) => failure(StatusCode::CONFLICT, err),
        Err(err @ NodeError::TransferTimedOut { .. }) => failure(StatusCode::GATEWAY_TIMEOUT, err),
        Err(err) => failure(StatusCode::INTERNAL_SERVER_ERROR, err),
    }
}

/// `POST /raft/elect`: this member starts an election now. A campaign, not a hand-over: under
/// load the leader's lease makes the voters refuse it; `/raft/transfer-leader` on the leader
/// moves leadership properly.
async fn elect(State(state): State<AdminState>) -> Response {
    match state.raft.trigger().elect(false).await {
        Ok(()) => Json(ElectAnswer {
            elect: ELECTION_STARTED.to_owned(),
        })
        .into_response(),
        Err(err) => failure(StatusCode::INTERNAL_SERVER_ERROR, err),
    }
}

/// `POST /offsets/reset` on the leader: moves a consumer group's committed offsets on one topic
/// (every queue, or one) to an offset or to the first message stored at or after a time.
/// Exactly one of `offset` and `timestamp_ms` is given. An offset is clamped into the queue's
/// `[min, max]`. Replicated as `CommitOffsets { reset: true }`, the one command allowed to move
/// an offset backwards.
///
/// A live consumer of the group would commit its own position over the reset a few seconds
/// later, so the reset is refused while the group has consumers connected to this leader,
/// unless `force` is set.
async fn reset_offsets(
    State(state): State<AdminState>,
    Json(body): Json<ResetOffsets>,
) -> Response {
    let ctx = &state.ctx;
    if body.group.is_empty() {
        return failure(StatusCode::BAD_REQUEST, "group must not be empty");
    }
    let view = ctx.leadership.view();
    if !view.is_leader {
        let leader = view
            .leader
            .map_or_else(|| "unknown".to_string(), |id| format!("node {id}"));
        return failure(
            StatusCode::CONFLICT,
            format!(
                "member {} is not the leader of {} (leader: {leader}); reset on the leader",
                ctx.config.node_id, ctx.config.broker_name
            ),
        );
    }
    let Some(topic) = ctx.state.topic(&body.topic) else {
        return failure(
            StatusCode::NOT_FOUND,
            format!("topic {} does not exist", body.topic),
        );
    };
    let queues: Vec<u32> = match body.queue {
        Some(queue) if queue < topic.queue_nums() => vec![queue],
        Some(queue) => {
            return failure(
                StatusCode::BAD_REQUEST,
                format!("topic {} has no queue {queue}", body.topic),
            );
        }
        None => (0..topic.queue_nums()).collect(),
    };
    let live = ctx.clients.consumer_ids(&body.group);
    if !live.is_empty() && !body.force {
        return failure(
            StatusCode::CONFLICT,
            format!(
                "group {} has {} live consumer(s) ({}); they would commit over the reset: stop them, or force",
                body.group,
                live.len(),
                live.join(", ")
            ),
        );
    }
    let mut answer = ResetAnswer {
        group: body.group.clone(),
        topic: body.topic.clone(),
        queues: Vec::with_capacity(queues.len()),
    };
    for queue in queues {
        let offsets = ctx.state.queue(&body.topic, queue);
        let target = match (body.offset, body.timestamp_ms) {
            (Some(offset), None) => offset.clamp(offsets.min_offset, offsets.next_offset),
            (None, Some(timestamp_ms)) => {
                match ctx
                    .state
                    .offset_for_timestamp(&body.topic, queue, timestamp_ms)
                {
                    Ok(offset) => offset,
                    Err(err) => return failure(StatusCode::INTERNAL_SERVER_ERROR, err),
                }
            }
            _ => {
                return failure(
                    StatusCode::BAD_REQUEST,
                    "give exactly one of offset and timestamp_ms",
                );
            }
        };
        answer.queues.push(ResetQueue {
            queue,
            previous: ctx.state.consumer_offset(&body.group, &body.topic, queue),
            offset: target,
        });
    }
    let command = Command::CommitOffsets(OffsetCommit {
        group: body.group,
        offsets: answer
            .queues
            .iter()
            .map(|queue| QueueOffset {
                topic: body.topic.clone(),
                queue_id: queue.queue,
                offset: queue.offset,
            })
            .collect(),
        reset: true,
    });
    match ctx.proposer.propose(command).await {
        Ok(Applied::Done) => Json(answer).into_response(),
        Ok(Applied::Refused(refusal)) => failure(StatusCode::CONFLICT, refusal),
        Ok(other) => failure(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("unexpected apply answer {other:?}"),
        ),
        Err(err) => failure(StatusCode::SERVICE_UNAVAILABLE, err),
    }
}
