//! Which queue a message goes to: round robin over the writable queues (skipping groups
//! without a leader, members that just failed, and, on a retry, the group that just failed,
//! while there is any other choice), or by sharding key, or the queue the caller named.
//! [`choose_queue`] applies this to a route; the rest is pure.

use raftmq_protocol::names::java_string_hash;

use super::fault::FaultTracker;
use super::outgoing::Target;
use crate::error::ClientError;
use crate::message::MessageQueue;
use crate::route::TopicRoute;

/// The queue for the next attempt of a send to `target` over `route`; `avoid_group` is the
/// group whose attempt just failed (avoided while another group can take the send).
pub(super) fn choose_queue(
    route: &TopicRoute,
    target: &Target,
    faults: &FaultTracker,
    avoid_group: Option<&str>,
) -> Result<MessageQueue, ClientError> {
    let no_route = |reason: String| ClientError::NoRoute {
        topic: route.topic.clone(),
        reason,
    };
    let queue = match target {
        Target::RoundRobin => round_robin(
            &route.write_queues,
            route.next_round_robin(),
            &RouteHealth { route, faults },
            avoid_group,
        )
        .ok_or_else(|| {
            if route.write_queues.is_empty() {
                no_route("no writable queue".to_owned())
            } else {
                ClientError::NoLeader {
                    topic: route.topic.clone(),
                    broker_name: None,
                }
            }
        })?,
        Target::Key(key) => by_key(&route.write_queues, key)
            .ok_or_else(|| no_route("no writable queue".to_owned()))?,
        Target::Queue(queue) => queue.clone(),
    };
    Ok(queue)
}

/// A queue's health as the route (leader listed) and the fault tracker (leader isolated) see it.
struct RouteHealth<'a> {
    route: &'a TopicRoute,
    faults: &'a FaultTracker,
}

impl QueueHealth for RouteHealth<'_> {
    fn has_leader(&self, queue: &MessageQueue) -> bool {
        self.route.leader_addr(&queue.broker_name).is_some()
    }

    fn isolated(&self, queue: &MessageQueue) -> bool {
        self.route
            .leader_addr(&queue.broker_name)
            .is_some_and(|addr| self.faults.is_isolated(addr))
    }
}

/// What the selection may know about a queue's broker group.
pub(crate) trait QueueHealth {
    /// The group has a leader to send to.
    fn has_leader(&self, queue: &MessageQueue) -> bool;
    /// The group's leader failed recently.
    fn isolated(&self, queue: &MessageQueue) -> bool;
}

/// The next queue in round-robin order from `start`, preferring, in this order: a group with a
/// leader that is neither isolated nor `avoid_group`; one that is not isolated; any with a
/// leader. `None` when no group has a leader.
pub(crate) fn round_robin(
    queues: &[MessageQueue],
    start: usize,
    health: &impl QueueHealth,
    avoid_group: Option<&str>,
) -> Option<MessageQueue> {
    if queues.is_empty() {
        return None;
    }
    let in_order =
        || (0..queues.len()).map(|step| &queues[(start.wrapping_add(step)) % queues.len()]);
    let tiers: [&dyn Fn(&MessageQueue) -> bool; 3] = [
        &|queue| {
            health.has_leader(queue)
                && !health.isolated(queue)
                && Some(queue.broker_name.as_str()) != avoid_group
        },
        &|queue| health.has_leader(queue) && !health.isolated(queue),
        &|queue| health.has_leader(queue),
    ];
    tiers
        .iter()
        .find_map(|accept| in_order().find(|queue| accept(queue)))
        .cloned()
}

/// The queue for `key`: Java's `String.hashCode()` modulo the queue count, as RocketMQ's
/// `SelectMessageQueueByHash`, so a key stays on one queue while the count stays the same
/// (whether or not that queue's group has a leader right now).
pub(crate) fn by_key(queues: &[MessageQueue], key: &str) -> Option<MessageQueue> {
    let count = i64::try_from(queues.len())
        .ok()
        .filter(|count| *count > 0)?;
    let index = (i64::from(java_string_hash(key)) % count).abs();
    queues.get(usize::try_from(index).ok()?).cloned()
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use super::*;

    struct Health {
        leaderless: BTreeSet<&'static str>,
        isolated: BTreeSet<&'static str>,
    }

    impl QueueHealth for Health {
        fn has_leader(&self, queue: &MessageQueue) -> bool {
            !self.leaderless.contains(queue.broker_name.as_str())
        }
        fn isolated(&self, queue: &MessageQueue) -> bool {
            self.isolated.contains(queue.broker_name.as_str())
        }
    }

    fn healthy() -> Health {
        Health {
            leaderless: BTreeSet::new(),
            isolated: BTreeSet::new(),
        }
    }

    fn queues() -> Vec<MessageQueue> {
        ["a", "b"]
            .iter()
            .flat_map(|broker| {
                (0..4).map(|queue_id| MessageQueue {
                    topic: "T".into(),
                    broker_name: (*broker).into(),
                    queue_id,
                })
            })
            .collect()
    }

    fn name(queue: &MessageQueue) -> (String, i32) {
        (queue.broker_name.clone(), queue.queue_id)
    }

    #[test]
    fn round_robin_visits_every_queue_evenly() {
        let queues = queues();
        let mut counts = BTreeMap::new();
        for start in 0..80 {
            let queue = round_robin(&queues, start, &healthy(), None).unwrap();
            *counts.entry(name(&queue)).or_insert(0) += 1;
        }
        assert_eq!(counts.len(), 8);
        assert!(counts.values().all(|count| *count == 10));
        assert!(round_robin(&[], 0, &healthy(), None).is_none());
        // The counter may wrap.
        assert!(round_robin(&queues, usize::MAX, &healthy(), None).is_some());
    }

    #[test]
    fn retries_avoid_the_failed_group_while_another_exists() {
        let queues = queues();
        for start in 0..8 {
            let queue = round_robin(&queues, start, &healthy(), Some("a")).unwrap();
            assert_eq!(queue.broker_name, "b");
        }
        // The only group may be retried.
        let only_a: Vec<_> = queues
            .iter()
            .filter(|q| q.broker_name == "a")
            .cloned()
            .collect();
        assert_eq!(
            round_robin(&only_a, 0, &healthy(), Some("a"))
                .unwrap()
                .broker_name,
            "a"
        );
    }

    #[test]
    fn leaderless_groups_are_skipped_and_isolated_ones_are_last_resort() {
        let queues = queues();
        let health = Health {
            leaderless: BTreeSet::from(["a"]),
            isolated: BTreeSet::new(),
        };
        for start in 0..8 {
            assert_eq!(
                round_robin(&queues, start, &health, None)
                    .unwrap()
                    .broker_name,
                "b"
            );
        }
        let health = Health {
            leaderless: BTreeSet::new(),
            isolated: BTreeSet::from(["b"]),
        };
        for start in 0..8 {
            // Isolation outweighs the retry's avoidance.
            assert_eq!(
                round_robin(&queues, start, &health, Some("a"))
                    .unwrap()
                    .broker_name,
                "a"
            );
        }
        let health = Health {
            leaderless: BTreeSet::new(),
            isolated: BTreeSet::from(["a", "b"]),
        };
        assert!(round_robin(&queues, 0, &health, None).is_some());
        let health = Health {
            leaderless: BTreeSet::from(["a", "b"]),
            isolated: BTreeSet::new(),
        };
        assert!(round_robin(&queues, 0, &health, None).is_none());
    }

    #[test]
    fn sharding_keys_are_stable_and_spread() {
        let queues = queues();
        let first = by_key(&queues, "order-42").unwrap();
        for _ in 0..10 {
            assert_eq!(by_key(&queues, "order-42").unwrap(), first);
        }
        // Java: "order-42".hashCode() % 8, made non-negative.
        let expected = (i64::from(java_string_hash("order-42")) % 8).unsigned_abs() as usize;
        assert_eq!(first, queues[expected]);
        let used: BTreeSet<_> = (0..200)
            .map(|i| name(&by_key(&queues, &format!("key-{i}")).unwrap()))
            .collect();
        assert_eq!(used.len(), 8);
        // Negative hashes still land in range.
        let negative = (0..1000)
            .map(|i| format!("a-long-enough-key-to-overflow-{i}"))
            .find(|key| java_string_hash(key) < 0)
            .unwrap();
        assert!(by_key(&queues, &negative).is_some());
        assert!(by_key(&[], "x").is_none());
    }
}
