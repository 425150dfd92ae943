//! Locks on message queues for ordered consumption (LOCK_BATCH_MQ / UNLOCK_BATCH_MQ): one
//! client of a group holds a queue at a time, so per-queue order survives a rebalance.
//!
//! Held by the leader in memory with an expiry, like RocketMQ's broker: a lock lapses after
//! `LOCK_EXPIRY` without renewal (ordered consumers renew every 20 s), and after a leader change
//! clients re-lock within one renewal period.

use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use raftmq_protocol::body::MessageQueue;

/// RocketMQ's `rocketmq.broker.rebalance.lockMaxLiveTime`: 60 s.
pub const LOCK_EXPIRY: Duration = Duration::from_secs(60);
/// Bounds the lock table.
pub const MAX_LOCKS: usize = 65536;

struct Holder {
    client_id: String,
    renewed: Instant,
}

/// `(group, queue) -> holder`
#[derive(Default)]
pub struct QueueLocks {
    locks: Mutex<HashMap<(String, MessageQueue), Holder>>,
}

impl QueueLocks {
    /// Locks (or renews) what it can of `queues` for `client_id`; returns the queues it holds.
    pub fn lock(
        &self,
        group: &str,
        client_id: &str,
        queues: &BTreeSet<MessageQueue>,
        now: Instant,
    ) -> BTreeSet<MessageQueue> {
        let mut locks = self.locks.lock().unwrap_or_else(|p| p.into_inner());
        locks.retain(|_, holder| now.saturating_duration_since(holder.renewed) < LOCK_EXPIRY);
        let mut held = BTreeSet::new();
        for queue in queues {
            let key = (group.to_string(), queue.clone());
            let room = locks.len() < MAX_LOCKS;
            match locks.get_mut(&key) {
                Some(holder) if holder.client_id == client_id => {
                    holder.renewed = now;
                    held.insert(queue.clone());
                }
                Some(_) => {}
                None if room => {
                    locks.insert(
                        key,
                        Holder {
                            client_id: client_id.to_string(),
                            renewed: now,
                        },
                    );
                    held.insert(queue.clone());
                }
                None => {}
            }
        }
        held
    }

    /// Releases the queues `client_id` holds among `queues`.
    pub fn unlock(&self, group: &str, client_id: &str, queues: &BTreeSet<MessageQueue>) {
        let mut locks = self.locks.lock().unwrap_or_else(|p| p.into_inner());
        for queue in queues {
            let key = (group.to_string(), queue.clone());
            if locks
                .get(&key)
                .is_some_and(|holder| holder.client_id == client_id)
            {
                locks.remove(&key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn queue(id: i32) -> MessageQueue {
        MessageQueue {
            topic: "T".into(),
            broker_name: "b".into(),
            queue_id: id,
        }
    }

    #[test]
    fn one_client_holds_a_queue_until_it_unlocks_or_expires() {
        let locks = QueueLocks::default();
        let now = Instant::now();
        let wanted = BTreeSet::from([queue(0), queue(1)]);
        assert_eq!(locks.lock("g", "a", &wanted, now), wanted);
        assert!(locks.lock("g", "b", &wanted, now).is_empty());
        // Another group is independent.
        assert_eq!(locks.lock("h", "b", &wanted, now), wanted);
        locks.unlock("g", "a", &BTreeSet::from([queue(0)]));
        assert_eq!(
            locks.lock("g", "b", &wanted, now),
            BTreeSet::from([queue(0)])
        );
        // A lock not renewed within the expiry lapses.
        let later = now + LOCK_EXPIRY;
        assert_eq!(locks.lock("g", "b", &wanted, later), wanted);
    }
}
