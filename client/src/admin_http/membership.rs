//! Membership changes of one broker group (one Raft group), written once for `mq cluster
//! add-member|remove-member` and jepsen-lite's membership nemesis. Each step is an admin HTTP
//! call on the group's leader; how the leader is found is the caller's ([`FindLeader`]: `mq`
//! asks the NameServer and each member's runtime info, jepsen-lite asks `GET /raft` on every
//! member it started).
//!
//! Adding a member ([`Membership::add_member`]):
//!
//! 1. find the leader (waiting up to [`MembershipWaits::leader`]); refuse node id 0, a node
//!    that already votes, and a node id the group knows at another Raft address;
//! 2. `POST /raft/add-learner` on the leader, which answers once the learner has caught up;
//! 3. wait until the leader lists it (learner or voter);
//! 4. unless only a learner is wanted: `POST /raft/change-membership` with the leader's
//!    voters plus the new one, then wait until the leader lists it as a voter.
//!
//! Removing a member ([`Membership::remove_member`]):
//!
//! 1. find the leader; refuse a node that is not a member, and the group's last voter;
//! 2. a voter: `POST /raft/change-membership` with the voters minus it; a learner:
//!    `POST /raft/remove-learner`. A leader may remove itself: openraft keeps it leading until
//!    the membership without it is committed, then it steps down and the remaining voters
//!    elect a leader (one election timeout);
//! 3. wait until a leader other than the node no longer lists it.
//!
//! Every wait is bounded; when the leader accepted a change but the wait for its effect ran
//! out, the error says so ([`MembershipError::change_accepted`]).

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::time::Duration;

use raftmq_protocol::admin::{AddLearner, ChangeMembership, RaftStatus, RemoveLearner};
use tokio::time::Instant;

use super::{AdminHttpClient, AdminHttpError};

/// Default deadline of `POST /raft/add-learner` (it answers once the learner caught up).
pub const ADD_LEARNER_TIMEOUT: Duration = Duration::from_secs(120);
/// Default deadline of one `change-membership` or `remove-learner` call.
pub const CHANGE_MEMBERSHIP_TIMEOUT: Duration = Duration::from_secs(30);
/// Default bound on a change showing in the leader's view.
pub const SETTLE_TIMEOUT: Duration = Duration::from_secs(20);
/// Default pause between looks while waiting.
pub const POLL_INTERVAL: Duration = Duration::from_millis(200);

/// The group's leader as a [`FindLeader`] reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaderView {
    pub node_id: u64,
    pub term: u64,
    /// The leader's admin HTTP address, where the changes are sent.
    pub admin_addr: String,
    pub voters: BTreeSet<u64>,
    pub learners: BTreeSet<u64>,
    /// Raft addresses by node id.
    pub nodes: BTreeMap<u64, String>,
}

impl LeaderView {
    /// The view of a leader from its `GET /raft` answer and its admin address.
    pub fn from_status(status: &RaftStatus, admin_addr: impl Into<String>) -> LeaderView {
        LeaderView {
            node_id: status.node_id,
            term: status.term,
            admin_addr: admin_addr.into(),
            voters: status.voters.clone(),
            learners: status.learners.clone(),
            nodes: status.nodes.clone(),
        }
    }

    fn lists(&self, node_id: u64) -> bool {
        self.voters.contains(&node_id) || self.learners.contains(&node_id)
    }
}

/// How a caller finds its group's leader.
pub trait FindLeader: Sync {
    /// The leader now, from one look (no waiting), or why none is known; the reason is what
    /// an error shows.
    fn find_leader(&self) -> impl Future<Output = Result<LeaderView, String>> + Send;
}

/// The bounds of a membership change's calls and waits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MembershipWaits {
    /// How long to wait for a leader before the first step (zero: one look).
    pub leader: Duration,
    /// Deadline of `POST /raft/add-learner`.
    pub add_learner: Duration,
    /// Deadline of `POST /raft/change-membership` and `/raft/remove-learner`.
    pub change: Duration,
    /// How long a change may take to show in the leader's view.
    pub settle: Duration,
    /// Pause between looks while waiting.
    pub poll: Duration,
}

impl Default for MembershipWaits {
    /// `mq`'s: one look for the leader, the defaults above.
    fn default() -> Self {
        MembershipWaits {
            leader: Duration::ZERO,
            add_learner: ADD_LEARNER_TIMEOUT,
            change: CHANGE_MEMBERSHIP_TIMEOUT,
            settle: SETTLE_TIMEOUT,
            poll: POLL_INTERVAL,
        }
    }
}

/// Why a membership change failed.
#[derive(Debug, thiserror::Error)]
pub enum MembershipError {
    /// No leader to send the change to.
    #[error("{reason}")]
    NoLeader { reason: String },
    #[error("node ids start at 1")]
    BadNodeId,
    #[error("node {node_id} is already a voter of {group}")]
    AlreadyVoter { group: String, node_id: u64 },
    #[error("node {node_id} is already a member of {group} at {existing}, not {raft_addr}")]
    AddressTaken {
        group: String,
        node_id: u64,
        existing: String,
        raft_addr: String,
    },
    #[error("node {node_id} is not a member of {group} (voters {voters:?}, learners {learners:?})")]
    NotMember {
        group: String,
        node_id: u64,
        voters: BTreeSet<u64>,
        learners: BTreeSet<u64>,
    },
    #[error("node {node_id} is the last voter of {group}; a group cannot lose it")]
    LastVoter { group: String, node_id: u64 },
    #[error("adding node {node_id} as a learner: {error}")]
    AddLearner { node_id: u64, error: AdminHttpError },
    #[error("promoting node {node_id} to voter: {error}")]
    Promote { node_id: u64, error: AdminHttpError },
    #[error("removing node {node_id}: {error}")]
    RemoveVoter { node_id: u64, error: AdminHttpError },
    #[error("removing learner {node_id}: {error}")]
    RemoveLearner { node_id: u64, error: AdminHttpError },
    /// The leader accepted the change, but its effect did not show within the bound.
    #[error("{what}: not seen within {timeout:?}")]
    NotSeen {
        what: &'static str,
        timeout: Duration,
    },
}

impl MembershipError {
    /// The leader accepted the last change asked for; only the wait for it to show ran out
    /// (a removed member is out of the group and must not be left running).
    pub fn change_accepted(&self) -> bool {
        matches!(self, MembershipError::NotSeen { .. })
    }
}

/// Membership changes of the group `group`, through the leader `leaders` finds.
#[derive(Debug)]
pub struct Membership<'a, F> {
    pub group: &'a str,
    pub leaders: &'a F,
    /// Each call goes to the leader's address, with the deadline of its step.
    pub admin: &'a AdminHttpClient,
    pub waits: MembershipWaits,
}

impl<F: FindLeader> Membership<'_, F> {
    /// The leader, waiting up to [`MembershipWaits::leader`] for one.
    pub async fn leader(&self) -> Result<LeaderView, MembershipError> {
        let deadline = Instant::now() + self.waits.leader;
        loop {
            match self.leaders.find_leader().await {
                Ok(leader) => return Ok(leader),
                Err(reason) if Instant::now() >= deadline => {
                    let reason = if self.waits.leader.is_zero() {
                        reason
                    } else {
                        format!("{reason} (waited {:?})", self.waits.leader)
                    };
                    return Err(MembershipError::NoLeader { reason });
                }
                Err(_) => tokio::time::sleep(self.waits.poll).await,
            }
        }
    }

    /// Adds node `node_id` at Raft address `raft_addr` as a learner, then (unless
    /// `learner_only`) makes it a voter. Returns the leader's view once it shows the change.
    pub async fn add_member(
        &self,
        node_id: u64,
        raft_addr: &str,
        learner_only: bool,
    ) -> Result<LeaderView, MembershipError> {
        if node_id == 0 {
            return Err(MembershipError::BadNodeId);
        }
        let leader = self.leader().await?;
        if leader.voters.contains(&node_id) {
            return Err(MembershipError::AlreadyVoter {
                group: self.group.to_owned(),
                node_id,
            });
        }
        if let Some(existing) = leader.nodes.get(&node_id)
            && existing != raft_addr
        {
            return Err(MembershipError::AddressTaken {
                group: self.group.to_owned(),
                node_id,
                existing: existing.clone(),
                raft_addr: raft_addr.to_owned(),
            });
        }
        self.admin
            .with_timeout(self.waits.add_learner)
            .add_learner(
                &leader.admin_addr,
                &AddLearner {
                    node_id,
                    addr: raft_addr.to_owned(),
                },
            )
            .await
            .map_err(|error| MembershipError::AddLearner { node_id, error })?;
        let leader = self
            .settle("the new learner", |leader| leader.lists(node_id))
            .await?;
        if learner_only {
            return Ok(leader);
        }
        let mut voters = leader.voters.clone();
        voters.insert(node_id);
        self.admin
            .with_timeout(self.waits.change)
            .change_membership(
                &leader.admin_addr,
                &ChangeMembership {
                    voters,
                    retain: false,
                },
            )
            .await
            .map_err(|error| MembershipError::Promote { node_id, error })?;
        self.settle("the promotion", |leader| leader.voters.contains(&node_id))
            .await
    }

    /// Removes node `node_id` (a voter or a learner). Returns the view of a leader other than
    /// the node once it no longer lists it.
    pub async fn remove_member(&self, node_id: u64) -> Result<LeaderView, MembershipError> {
        let leader = self.leader().await?;
        let is_voter = leader.voters.contains(&node_id);
        if !leader.lists(node_id) {
            return Err(MembershipError::NotMember {
                group: self.group.to_owned(),
                node_id,
                voters: leader.voters,
                learners: leader.learners,
            });
        }
        if is_voter && leader.voters.len() == 1 {
            return Err(MembershipError::LastVoter {
                group: self.group.to_owned(),
                node_id,
            });
        }
        // Moving leadership away first (`/raft/elect` elsewhere) is not done: under load the
        // voters' leader lease refuses the candidate, and a refused candidate's higher term
        // forces an election anyway.
        let admin = self.admin.with_timeout(self.waits.change);
        if is_voter {
            let mut voters = leader.voters.clone();
            voters.remove(&node_id);
            admin
                .change_membership(
                    &leader.admin_addr,
                    &ChangeMembership {
                        voters,
                        retain: false,
                    },
                )
                .await
                .map_err(|error| MembershipError::RemoveVoter { node_id, error })?;
        } else {
            admin
                .remove_learner(&leader.admin_addr, &RemoveLearner { node_id })
                .await
                .map_err(|error| MembershipError::RemoveLearner { node_id, error })?;
        }
        self.settle("the removal", |leader| {
            leader.node_id != node_id && !leader.lists(node_id)
        })
        .await
    }

    /// Looks at the leader until `done` holds for it, bounded by [`MembershipWaits::settle`];
    /// a look that finds no leader is retried.
    async fn settle(
        &self,
        what: &'static str,
        done: impl Fn(&LeaderView) -> bool,
    ) -> Result<LeaderView, MembershipError> {
        let deadline = Instant::now() + self.waits.settle;
        loop {
            if let Ok(leader) = self.leaders.find_leader().await
                && done(&leader)
            {
                return Ok(leader);
            }
            if Instant::now() >= deadline {
                return Err(MembershipError::NotSeen {
                    what,
                    timeout: self.waits.settle,
                });
            }
            tokio::time::sleep(self.waits.poll).await;
        }
    }
}

#[cfg(test)]
mod tests {
    //! Against a fake group: an axum server plays the leader's admin endpoints and changes
    //! the membership a fake [`FindLeader`] reports, and records every call it gets.

    use std::sync::{Arc, Mutex};

    use axum::extract::State;
    use axum::http::StatusCode;
    use axum::routing::post;
    use axum::{Json, Router};
    use raftmq_protocol::admin::{ErrorBody, MembershipAnswer};

    use super::*;
    use crate::admin_http::tests::serve;

    #[derive(Debug, Default)]
    struct Group {
        leader: u64,
        voters: BTreeSet<u64>,
        learners: BTreeSet<u64>,
        nodes: BTreeMap<u64, String>,
        /// `path body` of every call, in order.
        calls: Vec<String>,
        /// Answer every change with this refusal.
        refuse: Option<(StatusCode, &'static str)>,
        /// Accept changes without applying them (the effect never shows).
        ignore: bool,
        /// How many more looks find no leader.
        leaderless_looks: u32,
    }

    #[derive(Clone)]
    struct Fake {
        group: Arc<Mutex<Group>>,
        admin_addr: String,
    }

    impl FindLeader for Fake {
        async fn find_leader(&self) -> Result<LeaderView, String> {
            let mut group = self.group.lock().unwrap();
            if group.leaderless_looks > 0 {
                group.leaderless_looks -= 1;
                return Err("broker group g has no reachable leader".into());
            }
            Ok(LeaderView {
                node_id: group.leader,
                term: 1,
                admin_addr: self.admin_addr.clone(),
                voters: group.voters.clone(),
                learners: group.learners.clone(),
                nodes: group.nodes.clone(),
            })
        }
    }

    type Answer = Result<Json<MembershipAnswer>, (StatusCode, Json<ErrorBody>)>;

    /// Records the call; refuses it, or applies `change` unless told to ignore changes.
    fn handle(group: &Mutex<Group>, call: String, change: impl FnOnce(&mut Group)) -> Answer {
        let mut group = group.lock().unwrap();
        group.calls.push(call);
        if let Some((status, error)) = group.refuse {
            return Err((
                status,
                Json(ErrorBody {
                    error: error.into(),
                }),
            ));
        }
        if !group.ignore {
            change(&mut group);
        }
        Ok(Json(MembershipAnswer {
            log_index: group.calls.len() as u64,
        }))
    }

    async fn fake(group: Group) -> (Fake, tokio::sync::oneshot::Sender<()>) {
        let group = Arc::new(Mutex::new(group));
        let router = Router::new()
            .route(
                "/raft/add-learner",
                post(
                    |State(group): State<Arc<Mutex<Group>>>, Json(body): Json<AddLearner>| async move {
                        handle(&group, format!("add-learner {} {}", body.node_id, body.addr), |g| {
                            g.learners.insert(body.node_id);
                            g.nodes.insert(body.node_id, body.addr);
                        })
                    },
                ),
            )
            .route(
                "/raft/change-membership",
                post(
                    |State(group): State<Arc<Mutex<Group>>>,
                     Json(body): Json<ChangeMembership>| async move {
                        handle(&group, format!("change-membership {:?}", body.voters), |g| {
                            let before = std::mem::replace(&mut g.voters, body.voters.clone());
                            for id in &body.voters {
                                g.learners.remove(id);
                            }
                            for gone in before.difference(&body.voters) {
                                g.nodes.remove(gone);
                            }
                            if !g.voters.contains(&g.leader) {
                                g.leader = *g.voters.iter().next().unwrap();
                            }
                        })
                    },
                ),
            )
            .route(
                "/raft/remove-learner",
                post(
                    |State(group): State<Arc<Mutex<Group>>>, Json(body): Json<RemoveLearner>| async move {
                        handle(&group, format!("remove-learner {}", body.node_id), |g| {
                            g.learners.remove(&body.node_id);
                            g.nodes.remove(&body.node_id);
                        })
                    },
                ),
            )
            .with_state(group.clone());
        let (addr, stop) = serve(router).await;
        (
            Fake {
                group,
                admin_addr: addr.to_string(),
            },
            stop,
        )
    }

    fn three_voters() -> Group {
        Group {
            leader: 1,
            voters: BTreeSet::from([1, 2, 3]),
            nodes: (1..=3)
                .map(|id| (id, format!("10.0.0.{id}:10912")))
                .collect(),
            ..Group::default()
        }
    }

    /// Short bounds so that a wait that runs out does so quickly.
    const WAITS: MembershipWaits = MembershipWaits {
        leader: Duration::ZERO,
        add_learner: Duration::from_secs(5),
        change: Duration::from_secs(5),
        settle: Duration::from_millis(300),
        poll: Duration::from_millis(20),
    };

    fn calls(fake: &Fake) -> Vec<String> {
        fake.group.lock().unwrap().calls.clone()
    }

    #[tokio::test]
    async fn add_member_adds_a_learner_then_promotes_it() {
        let (fake, _stop) = fake(three_voters()).await;
        let admin = AdminHttpClient::new().unwrap();
        let membership = Membership {
            group: "g",
            leaders: &fake,
            admin: &admin,
            waits: WAITS,
        };
        let leader = membership
            .add_member(4, "10.0.0.4:10912", false)
            .await
            .unwrap();
        assert_eq!(leader.voters, BTreeSet::from([1, 2, 3, 4]));
        assert!(leader.learners.is_empty());
        assert_eq!(
            calls(&fake),
            [
                "add-learner 4 10.0.0.4:10912",
                "change-membership {1, 2, 3, 4}"
            ]
        );
        // Again: it votes already, and nothing is sent.
        let err = membership
            .add_member(4, "10.0.0.4:10912", false)
            .await
            .unwrap_err();
        assert_eq!(err.to_string(), "node 4 is already a voter of g");
        assert_eq!(calls(&fake).len(), 2);
    }

    #[tokio::test]
    async fn add_member_learner_only_stops_after_the_learner() {
        let (fake, _stop) = fake(three_voters()).await;
        let admin = AdminHttpClient::new().unwrap();
        let membership = Membership {
            group: "g",
            leaders: &fake,
            admin: &admin,
            waits: WAITS,
        };
        let leader = membership
            .add_member(5, "10.0.0.5:10912", true)
            .await
            .unwrap();
        assert_eq!(leader.learners, BTreeSet::from([5]));
        assert_eq!(calls(&fake), ["add-learner 5 10.0.0.5:10912"]);
        // A learner known at another address is refused before any call.
        let err = membership
            .add_member(5, "10.0.0.99:10912", true)
            .await
            .unwrap_err();
        assert!(matches!(err, MembershipError::AddressTaken { .. }), "{err}");
        assert_eq!(calls(&fake).len(), 1);
        assert!(matches!(
            membership.add_member(0, "10.0.0.6:10912", false).await,
            Err(MembershipError::BadNodeId)
        ));
    }

    #[tokio::test]
    async fn remove_member_changes_the_voters_or_drops_a_learner() {
        let mut group = three_voters();
        group.learners.insert(4);
        group.nodes.insert(4, "10.0.0.4:10912".into());
        let (fake, _stop) = fake(group).await;
        let admin = AdminHttpClient::new().unwrap();
        let membership = Membership {
            group: "g",
            leaders: &fake,
            admin: &admin,
            waits: WAITS,
        };
        // The leader removes itself; the fake's next leader reports the change.
        let leader = membership.remove_member(1).await.unwrap();
        assert_eq!(leader.node_id, 2);
        assert_eq!(leader.voters, BTreeSet::from([2, 3]));
        let leader = membership.remove_member(4).await.unwrap();
        assert!(leader.learners.is_empty());
        assert_eq!(
            calls(&fake),
            ["change-membership {2, 3}", "remove-learner 4"]
        );
        let err = membership.remove_member(9).await.unwrap_err();
        assert_eq!(
            err.to_string(),
            "node 9 is not a member of g (voters {2, 3}, learners {})"
        );
    }

    #[tokio::test]
    async fn the_last_voter_is_never_removed() {
        let (fake, _stop) = fake(Group {
            leader: 1,
            voters: BTreeSet::from([1]),
            ..Group::default()
        })
        .await;
        let admin = AdminHttpClient::new().unwrap();
        let membership = Membership {
            group: "g",
            leaders: &fake,
            admin: &admin,
            waits: WAITS,
        };
        let err = membership.remove_member(1).await.unwrap_err();
        assert!(matches!(err, MembershipError::LastVoter { .. }), "{err}");
        assert!(calls(&fake).is_empty());
    }

    #[tokio::test]
    async fn a_refusal_names_the_step_and_keeps_the_http_error() {
        let mut group = three_voters();
        group.refuse = Some((StatusCode::CONFLICT, "has to forward request to: 2"));
        let (fake, _stop) = fake(group).await;
        let admin = AdminHttpClient::new().unwrap();
        let membership = Membership {
            group: "g",
            leaders: &fake,
            admin: &admin,
            waits: WAITS,
        };
        let err = membership
            .add_member(4, "10.0.0.4:10912", false)
            .await
            .unwrap_err();
        match &err {
            MembershipError::AddLearner {
                node_id: 4,
                error: AdminHttpError::Status { status: 409, .. },
            } => {}
            other => panic!("expected a refused add-learner, got {other:?}"),
        }
        assert!(
            err.to_string()
                .starts_with("adding node 4 as a learner: POST /raft/add-learner on ")
                && err
                    .to_string()
                    .ends_with(": HTTP 409: has to forward request to: 2"),
            "{err}"
        );
        assert!(!err.change_accepted());
        let err = membership.remove_member(3).await.unwrap_err();
        assert!(
            matches!(err, MembershipError::RemoveVoter { node_id: 3, .. }),
            "{err}"
        );
    }

    #[tokio::test]
    async fn an_accepted_change_that_never_shows_is_not_seen() {
        let mut group = three_voters();
        group.ignore = true;
        let (fake, _stop) = fake(group).await;
        let admin = AdminHttpClient::new().unwrap();
        let membership = Membership {
            group: "g",
            leaders: &fake,
            admin: &admin,
            waits: WAITS,
        };
        let err = membership.remove_member(3).await.unwrap_err();
        assert_eq!(err.to_string(), "the removal: not seen within 300ms");
        assert!(err.change_accepted());
        let err = membership
            .add_member(4, "10.0.0.4:10912", false)
            .await
            .unwrap_err();
        assert_eq!(err.to_string(), "the new learner: not seen within 300ms");
        // No promotion is tried for a learner that never showed.
        assert_eq!(
            calls(&fake),
            ["change-membership {1, 2}", "add-learner 4 10.0.0.4:10912"]
        );
    }

    #[tokio::test]
    async fn no_leader_fails_at_once_or_after_the_leader_wait() {
        let mut group = three_voters();
        group.leaderless_looks = u32::MAX;
        let (fake, _stop) = fake(group).await;
        let admin = AdminHttpClient::new().unwrap();
        let mut membership = Membership {
            group: "g",
            leaders: &fake,
            admin: &admin,
            waits: WAITS,
        };
        let err = membership.remove_member(3).await.unwrap_err();
        assert_eq!(err.to_string(), "broker group g has no reachable leader");
        membership.waits.leader = Duration::from_millis(100);
        let started = Instant::now();
        let err = membership.remove_member(3).await.unwrap_err();
        assert!(started.elapsed() >= Duration::from_millis(100));
        assert_eq!(
            err.to_string(),
            "broker group g has no reachable leader (waited 100ms)"
        );
        assert!(calls(&fake).is_empty());
        // A leader found within the wait (the third look) is used.
        fake.group.lock().unwrap().leaderless_looks = 2;
        membership.waits.leader = Duration::from_secs(5);
        let leader = membership.remove_member(3).await.unwrap();
        assert_eq!(leader.voters, BTreeSet::from([1, 2]));
        assert_eq!(calls(&fake), ["change-membership {1, 2}"]);
    }
}
