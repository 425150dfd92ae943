//! Registration with every NameServer: each member registers every 30 s (the leader in the
//! master slot, brokerId 0, with its Raft term; followers at their node ids), and at once when
//! it gains or loses leadership or its topics change. On shutdown it unregisters.
//!
//! The term lets a NameServer fence a deposed leader: a registration claiming leadership with a
//! lower term never displaces a higher one (ARCHITECTURE.md decision 8).

use std::sync::Arc;
use std::time::Duration;

use futures::future::join_all;
use raftmq_protocol::code::{request, response};
use raftmq_protocol::header::namesrv::{
    RegisterBrokerRequestHeader, UnregisterBrokerRequestHeader,
};
use raftmq_protocol::route::RegisterBrokerBody;
use raftmq_protocol::{ExtHeader, RemotingCommand};
use raftmq_raft::{MetricsReceiver, ServerMetrics};
use raftmq_remoting::rpc_client::RpcClient;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::context::BrokerContext;
use crate::leadership::{LeadershipView, server_view_of};
use crate::processor::get_all_topic_config::topic_config_wrapper;

/// How long one registration may take.
pub const REGISTER_TIMEOUT: Duration = Duration::from_secs(3);
/// RocketMQ's broker expiry, sent along so a NameServer knows when to drop us.
pub const BROKER_EXPIRY_MS: i64 = 120_000;

/// Registers until `shutdown`, then unregisters.
pub async fn run(ctx: Arc<BrokerContext>, rpc: RpcClient, shutdown: CancellationToken) {
    if ctx.config.namesrv.is_empty() {
        info!("no NameServer configured (-n / NAMESRV_ADDR): not registering");
        return;
    }
    let mut metrics = ctx.leadership.subscribe();
    let mut registered: Option<LeadershipView> = None;
    let mut was_member = false;
    loop {
        let (view, is_member) = {
            let server = metrics.borrow_and_update();
            (
                server_view_of(ctx.config.node_id, &server),
                is_group_member(&ctx, &server),
            )
        };
        // Only a member of its group's membership registers: a member removed from the group
        // leaves the route for good (and says so once), and a member started with --join
        // appears once it has been added.
        if is_member {
            register_everywhere(&ctx, &rpc, view).await;
        } else if was_member {
            info!("no longer a member of the group: unregistering from the NameServers");
            unregister_everywhere(&ctx, &rpc).await;
        }
        was_member = is_member;
        if registered.is_some_and(|old| old.is_leader != view.is_leader) || registered.is_none() {
            info!(
                term = view.term,
                leader = view.is_leader,
                "registered with the NameServers"
            );
        }
        registered = Some(view);
        let interval = tokio::time::sleep(ctx.config.register_interval);
        tokio::pin!(interval);
        // Wait for the next reason to register.
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => {
                    unregister_everywhere(&ctx, &rpc).await;
                    return;
                }
                _ = &mut interval => break,
                _ = ctx.register_now.notified() => break,
                changed = metrics.changed() => {
                    if changed.is_err() {
                        // Raft stopped: the broker is going down.
                        shutdown.cancelled().await;
                        unregister_everywhere(&ctx, &rpc).await;
                        return;
                    }
                    let (now, is_member) = {
                        let server = metrics.borrow_watched();
                        (
                            server_view_of(ctx.config.node_id, &server),
                            is_group_member(&ctx, &server),
                        )
                    };
                    let leadership_moved = registered.is_some_and(|old| {
                        old.is_leader != now.is_leader || (now.is_leader && old.term != now.term)
                    });
                    if leadership_moved || is_member != was_member {
                        break;
                    }
                }
            }
        }
    }
}

fn is_group_member(ctx: &BrokerContext, server: &ServerMetrics) -> bool {
    let membership = server.membership_config.membership();
    membership.get_node(&ctx.config.node_id).is_some()
}

async fn register_everywhere(ctx: &BrokerContext, rpc: &RpcClient, view: LeadershipView) {
    let request = match register_request(ctx, view) {
        Ok(request) => request,
        Err(err) => {
            warn!(error = %err, "cannot build the registration");
            return;
        }
    };
    let calls = ctx.config.namesrv.iter().map(|addr| {
        let request = request.clone();
        async move {
            match rpc.invoke(addr, request, REGISTER_TIMEOUT).await {
                Ok(answer) if answer.code == response::SUCCESS => {
                    debug!(namesrv = %addr, "registered");
                }
                Ok(answer) => warn!(namesrv = %addr, code = answer.code, remark = ?answer.remark, "registration refused"),
                Err(err) => warn!(namesrv = %addr, error = %err, "registration failed"),
            }
        }
    });
    join_all(calls).await;
}

fn register_request(
    ctx: &BrokerContext,
    view: LeadershipView,
) -> Result<RemotingCommand, raftmq_protocol::WireError> {
    let header = RegisterBrokerRequestHeader {
        broker_name: ctx.config.broker_name.clone(),
        broker_addr: ctx.config.advertise.to_string(),
        cluster_name: ctx.config.cluster_name.clone(),
        ha_server_addr: ctx.config.raft_listen.to_string(),
        broker_id: if view.is_leader {
            0
        } else {
            ctx.config.node_id as i64
        },
        heartbeat_timeout_millis: Some(BROKER_EXPIRY_MS),
        enable_acting_master: None,
        compressed: Some(false),
        body_crc32: None,
        raft_node_id: Some(ctx.config.node_id),
        raft_term: Some(view.term),
        raft_leader: Some(view.is_leader),
    };
    let body = RegisterBrokerBody {
        topic_config_serialize_wrapper: topic_config_wrapper(ctx),
        filter_server_list: Vec::new(),
    };
    let mut request = RemotingCommand::new_request(request::REGISTER_BROKER);
    request.ext_fields = header.to_ext_fields();
    request.body = body.encode()?.into();
    Ok(request)
}

async fn unregister_everywhere(ctx: &BrokerContext, rpc: &RpcClient) {
    let header = UnregisterBrokerRequestHeader {
        broker_name: ctx.config.broker_name.clone(),
        broker_addr: ctx.config.advertise.to_string(),
        cluster_name: ctx.config.cluster_name.clone(),
        broker_id: ctx.config.node_id as i64,
    };
    let mut request = RemotingCommand::new_request(request::UNREGISTER_BROKER);
    request.ext_fields = header.to_ext_fields();
    let calls = ctx.config.namesrv.iter().map(|addr| {
        let request = request.clone();
        async move {
            if let Err(err) = rpc.invoke(addr, request, REGISTER_TIMEOUT).await {
                debug!(namesrv = %addr, error = %err, "unregistration failed");
            }
        }
    });
    join_all(calls).await;
}
