//! GET_BROKER_RUNTIME_INFO: RocketMQ's key/value table of a broker's runtime figures, plus this
//! member's Raft view. It is how `mq cluster status` learns, from nothing but the NameServer's
//! member addresses, each member's role, term, log indexes, membership and admin address.
//!
//! RocketMQ keys: `brokerVersionDesc`, `brokerVersion`, `msgPutTotalTodayNow`,
//! `msgGetTotalTodayNow`, `commitLogMinOffset`, `commitLogMaxOffset`, `brokerActive`.
//! RaftMQ keys (all values are strings, as the KV table requires):
//!
//! | key | value |
//! |---|---|
//! | `brokerName` | the group |
//! | `raftNodeId` | this member's node id |
//! | `raftState` | `Leader`, `Follower`, `Candidate` or `Learner` |
//! | `raftTerm` | current term |
//! | `raftLeader` | the leader's node id, empty when none is known |
//! | `raftWritable` | `true` when this member takes writes now: it leads and a quorum acknowledged it recently |
//! | `raftLastLogIndex` / `raftAppliedIndex` | log indexes, `0` when empty |
//! | `raftCommitIndex` | on the leader only: the highest index a majority of voters holds |
//! | `raftVoters` / `raftLearners` | comma-separated node ids |
//! | `raftNodes` | `id=raftaddr` pairs, comma-separated |
//! | `raftFollowers` | on the leader only: `id=matched_index` pairs (`id=-` when unknown) |
//! | `adminAddr`, `raftAddr`, `remotingAddr` | this member's addresses |

use std::collections::BTreeMap;

use openraft::ServerState;
use raftmq_protocol::body::KvTable;
use raftmq_protocol::{RemotingCommand, code::response};

use crate::command::physical_offset;
use crate::context::BrokerContext;
use crate::error::RequestError;

pub(super) fn handle(
    ctx: &BrokerContext,
    request: &RemotingCommand,
) -> Result<RemotingCommand, RequestError> {
    let table = runtime_table(ctx);
    let body = KvTable { table }
        .encode()
        .map_err(|err| RequestError::Internal(format!("runtime info: {err}")))?;
    let mut answer = request.new_response(response::SUCCESS, None);
    answer.body = body.into();
    Ok(answer)
}

fn runtime_table(ctx: &BrokerContext) -> BTreeMap<String, String> {
    let metrics = ctx.leadership.metrics();
    let membership = metrics.membership_config.membership();
    let join = |ids: Vec<u64>| ids.iter().map(u64::to_string).collect::<Vec<_>>().join(",");
    let voters: Vec<u64> = membership.voter_ids().collect();
    let learners: Vec<u64> = membership.learner_ids().collect();
    let nodes: BTreeMap<u64, String> = membership
        .nodes()
        .map(|(id, node)| (*id, node.addr.clone()))
        .collect();
    let raft_addr = nodes
        .get(&ctx.config.node_id)
        .cloned()
        .unwrap_or_else(|| ctx.config.raft_listen.to_string());
    let last_log_index = metrics.last_log_index.unwrap_or(0);
    let applied_index = metrics.last_applied.map_or(0, |id| id.index);
    let first_log_index = metrics.purged.map_or(1, |id| id.index + 1);
    // A learner is a follower openraft does not count; say which, as the operator needs it.
    let state = match metrics.state {
        ServerState::Follower if !voters.contains(&ctx.config.node_id) => "Learner".to_string(),
        other => format!("{other:?}"),
    };

    let mut table = BTreeMap::new();
    let mut put = |key: &str, value: String| {
        table.insert(key.to_string(), value);
    };
    put(
        "brokerVersionDesc",
        format!("RaftMQ {}", env!("CARGO_PKG_VERSION")),
    );
    put("brokerVersion", env!("CARGO_PKG_VERSION").to_string());
    put("brokerActive", "true".to_string());
    put(
        "msgPutTotalTodayNow",
        ctx.metrics.messages_stored.get().to_string(),
    );
    put(
        "msgGetTotalTodayNow",
        ctx.metrics.messages_pulled.get().to_string(),
    );
    put(
        "commitLogMinOffset",
        physical_offset(first_log_index, 0).to_string(),
    );
    put(
        "commitLogMaxOffset",
        physical_offset(last_log_index + 1, 0).to_string(),
    );
    put("brokerName", ctx.config.broker_name.clone());
    put("raftNodeId", ctx.config.node_id.to_string());
    put("raftState", state);
    put("raftTerm", metrics.current_term.to_string());
    put("raftWritable", ctx.leadership.may_write().to_string());
    put(
        "raftLeader",
        metrics
            .current_leader
            .map_or_else(String::new, |id| id.to_string()),
    );
    put("raftLastLogIndex", last_log_index.to_string());
    put("raftAppliedIndex", applied_index.to_string());
    put("raftVoters", join(voters.clone()));
    put("raftLearners", join(learners));
    put(
        "raftNodes",
        nodes
            .iter()
            .map(|(id, addr)| format!("{id}={addr}"))
            .collect::<Vec<_>>()
            .join(","),
    );
    if let Some(replication) = metrics.replication.as_ref() {
        let matched: BTreeMap<u64, Option<u64>> = replication
            .iter()
            .map(|(id, log_id)| (*id, log_id.map(|log_id| log_id.index)))
            .collect();
        put(
            "raftFollowers",
            matched
                .iter()
                .filter(|(id, _)| **id != ctx.config.node_id)
                .map(|(id, index)| match index {
                    Some(index) => format!("{id}={index}"),
                    None => format!("{id}=-"),
                })
                .collect::<Vec<_>>()
                .join(","),
        );
        put(
            "raftCommitIndex",
            majority_index(&voters, &matched, ctx.config.node_id, last_log_index).to_string(),
        );
    }
    put("adminAddr", ctx.config.admin_listen.to_string());
    put("raftAddr", raft_addr);
    put("remotingAddr", ctx.config.advertise.to_string());
    table
}

/// The highest log index held by a majority of `voters` (the leader counts its own log).
pub(crate) fn majority_index(
    voters: &[u64],
    matched: &BTreeMap<u64, Option<u64>>,
    leader: u64,
    leader_last_index: u64,
) -> u64 {
    let mut indexes: Vec<u64> = voters
        .iter()
        .map(|id| {
            if *id == leader {
                leader_last_index
            } else {
                matched.get(id).copied().flatten().unwrap_or(0)
            }
        })
        .collect();
    if indexes.is_empty() {
        return 0;
    }
    indexes.sort_unstable_by(|a, b| b.cmp(a));
    indexes[indexes.len() / 2]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_commit_index_is_what_a_majority_holds() {
        let matched = BTreeMap::from([(1, Some(10)), (2, Some(7)), (3, None)]);
        assert_eq!(majority_index(&[1, 2, 3], &matched, 1, 10), 7);
        let matched = BTreeMap::from([(1, Some(10)), (2, Some(9)), (3, Some(4)), (4, Some(2))]);
        // Four voters: a majority is three.
        assert_eq!(majority_index(&[1, 2, 3, 4], &matched, 1, 10), 4);
        assert_eq!(majority_index(&[], &matched, 1, 10), 0);
    }
}
