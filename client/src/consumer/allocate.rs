//! Which queues a consumer of a group takes: RocketMQ's `AllocateMessageQueueAveragely`. Every
//! member sorts the topic's queues and the group's consumer ids the same way and takes one
//! contiguous slice, the first `queues % consumers` members one queue more; so members that
//! see the same lists take disjoint slices that together cover every queue.

use crate::message::MessageQueue;

/// The queues `me` takes. Empty when `me` is not among `consumer_ids` (the broker has not seen
/// its heartbeat yet) or there are more consumers than queues and `me` is one too many.
pub fn allocate_averagely(
    queues: &[MessageQueue],
    consumer_ids: &[String],
    me: &str,
) -> Vec<MessageQueue> {
    let mut queues = queues.to_vec();
    queues.sort();
    queues.dedup();
    let mut consumer_ids = consumer_ids.to_vec();
    consumer_ids.sort();
    consumer_ids.dedup();
    let Some(index) = consumer_ids.iter().position(|id| id == me) else {
        return Vec::new();
    };
    let queue_count = queues.len();
    let consumer_count = consumer_ids.len();
    if queue_count == 0 {
        return Vec::new();
    }
    let remainder = queue_count % consumer_count;
    let takes_extra = remainder > 0 && index < remainder;
    let average = if queue_count <= consumer_count {
        1
    } else if takes_extra {
        queue_count / consumer_count + 1
    } else {
        queue_count / consumer_count
    };
    let start = if takes_extra {
        index * average
    } else {
        index * average + remainder
    };
    let take = average.min(queue_count.saturating_sub(start));
    (0..take)
        .map(|step| queues[(start + step) % queue_count].clone())
        .collect()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    fn queues(brokers: &[&str], per_broker: i32) -> Vec<MessageQueue> {
        brokers
            .iter()
            .flat_map(|broker| {
                (0..per_broker).map(|queue_id| MessageQueue {
                    topic: "T".into(),
                    broker_name: (*broker).into(),
                    queue_id,
                })
            })
            .collect()
    }

    fn ids(count: usize) -> Vec<String> {
        (0..count).map(|i| format!("10.0.0.{i}@pid")).collect()
    }

    /// Every member's share, checked to be disjoint and covering.
    fn check_partition(queues: &[MessageQueue], consumers: &[String]) -> Vec<Vec<MessageQueue>> {
        let shares: Vec<_> = consumers
            .iter()
            .map(|me| allocate_averagely(queues, consumers, me))
            .collect();
        let mut seen = BTreeSet::new();
        for share in &shares {
            for queue in share {
                assert!(seen.insert(queue.clone()), "{queue:?} given twice");
            }
        }
        let all: BTreeSet<_> = queues.iter().cloned().collect();
        assert_eq!(seen, all, "not every queue is taken");
        let sizes: Vec<_> = shares.iter().map(Vec::len).collect();
        let (min, max) = (sizes.iter().min().unwrap(), sizes.iter().max().unwrap());
        assert!(max - min <= 1, "uneven shares {sizes:?}");
        shares
    }

    #[test]
    fn disjoint_covering_and_even_for_many_shapes() {
        for brokers in [&["a"][..], &["a", "b"], &["b", "a", "c"]] {
            for per_broker in 1..=9 {
                let queues = queues(brokers, per_broker);
                for consumers in 1..=12 {
                    check_partition(&queues, &ids(consumers));
                }
            }
        }
    }

    #[test]
    fn matches_rocketmq_slices() {
        // 8 queues over 3 consumers: 3, 3, 2 contiguous queues in sorted order.
        let queues = queues(&["a", "b"], 4);
        let shares = check_partition(&queues, &ids(3));
        let ids_of = |share: &Vec<MessageQueue>| {
            share
                .iter()
                .map(|q| format!("{}{}", q.broker_name, q.queue_id))
                .collect::<Vec<_>>()
        };
        assert_eq!(ids_of(&shares[0]), vec!["a0", "a1", "a2"]);
        assert_eq!(ids_of(&shares[1]), vec!["a3", "b0", "b1"]);
        assert_eq!(ids_of(&shares[2]), vec!["b2", "b3"]);
    }

    #[test]
    fn deterministic_whatever_the_input_order() {
        let mut shuffled = queues(&["a", "b"], 4);
        shuffled.reverse();
        let mut consumers = ids(3);
        consumers.reverse();
        for me in &consumers {
            assert_eq!(
                allocate_averagely(&shuffled, &consumers, me),
                allocate_averagely(&queues(&["a", "b"], 4), &ids(3), me)
            );
        }
    }

    #[test]
    fn extra_consumers_and_strangers_get_nothing() {
        let queues = queues(&["a"], 2);
        let consumers = ids(4);
        let shares = check_partition(&queues, &consumers);
        assert_eq!(shares.iter().filter(|share| share.is_empty()).count(), 2);
        assert!(allocate_averagely(&queues, &consumers, "stranger").is_empty());
        assert!(allocate_averagely(&[], &consumers, &consumers[0]).is_empty());
        assert!(allocate_averagely(&queues, &[], "x").is_empty());
    }
}
