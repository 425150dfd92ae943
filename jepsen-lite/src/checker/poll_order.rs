//! Nonmonotonic or skipping polls, per consumer and queue, within one assignment epoch.
//!
//! Within an epoch (from one `assign`/`reassign` of a consumer to the next), the offsets a
//! consumer is handed in one queue must go up (nonmonotonic: an offset at or below the previous
//! one) and must not jump over an offset that exists (skip: an offset between the previous and
//! the current one that some read or send acknowledgement shows holds a message). An `ok` or
//! `info` assignment starts a new epoch (an `info` one may have taken effect); a `fail` one does
//! not. A consumer's first read of a queue in an epoch is not compared with anything.
//!
//! Retention moves a consumer below a queue's minimum up to it: an offset jumped over below the
//! queue's floor (the highest minimum offset any answer reported, `retention::floors`) is
//! counted as `skipped_expired`, not as a skip.
//!
//! Needs: `ok` polls (consumer, messages in delivery order), `assign`/`reassign` completions
//! (consumer), every known position (`ok` send acks and reads) to tell skips, and the minimum
//! offsets polls and drains reported.

use std::collections::{BTreeSet, HashMap};

use serde::Serialize;

use super::retention::{floor_of, floors};
use super::{CheckResult, Class, position_claims, reads, sends};
use crate::history::{Call, History, OpType, QueueRef};

pub const NAME: &str = "poll_order";

/// Skipped offsets listed per example.
const SKIPPED_SHOWN: usize = 5;

#[derive(Serialize)]
struct Example<'a> {
    consumer: &'a str,
    queue: String,
    previous_offset: u64,
    offset: u64,
    poll_index: u64,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    skipped: Vec<u64>,
}

pub fn check(history: &History) -> CheckResult {
    let mut result = CheckResult::new(NAME, Class::Safety);
    let sends = sends(history);
    let reads = reads(history);
    let mut known: HashMap<QueueRef, BTreeSet<u64>> = HashMap::new();
    for (queue, offset, _) in position_claims(&sends, &reads) {
        known.entry(queue).or_default().insert(offset);
    }
    let floors = floors(history);
    // consumer -> queue -> last offset delivered in the current epoch
    let mut last: HashMap<&str, HashMap<QueueRef, u64>> = HashMap::new();
    for op in &history.ops {
        match (&op.kind, &op.call) {
            (OpType::Ok | OpType::Info, Call::Assign(a) | Call::Reassign(a)) => {
                result.count("epochs", 1);
                last.remove(a.consumer.as_str());
            }
            (OpType::Ok, Call::Poll(poll)) => {
                result.count("polls", 1);
                let positions = last.entry(poll.consumer.as_str()).or_default();
                for msg in &poll.msgs {
                    let queue = QueueRef {
                        topic: msg.topic.clone(),
                        queue: msg.queue,
                    };
                    let offset = msg.offset;
                    if let Some(&prev) = positions.get(&queue) {
                        if offset <= prev {
                            result.violation(
                                "nonmonotonic",
                                Example {
                                    consumer: &poll.consumer,
                                    queue: queue.to_string(),
                                    previous_offset: prev,
                                    offset,
                                    poll_index: op.index,
                                    skipped: vec![],
                                },
                            );
                        } else if let Some(existing) = known.get(&queue) {
                            let floor = floor_of(&floors, &queue).clamp(prev + 1, offset);
                            let expired = existing.range(prev + 1..floor).count();
                            if expired > 0 {
                                result.count("skipped_expired", expired as u64);
                            }
                            let skipped: Vec<u64> =
                                existing.range(floor..offset).copied().collect();
                            if !skipped.is_empty() {
                                result.count("skipped_offsets", skipped.len() as u64);
                                result.violation(
                                    "skips",
                                    Example {
                                        consumer: &poll.consumer,
                                        queue: queue.to_string(),
                                        previous_offset: prev,
                                        offset,
                                        poll_index: op.index,
                                        skipped: skipped.into_iter().take(SKIPPED_SHOWN).collect(),
                                    },
                                );
                            }
                        }
                    }
                    positions.insert(queue, offset);
                }
            }
            _ => {}
        }
    }
    result
}

/// A history whose only anomaly is a consumer skipping an offset that exists.
#[cfg(test)]
pub(crate) fn anomaly_history() -> History {
    use crate::history::OpType::Ok;
    crate::history::build::Builder::new()
        .send("p", "p-0", Ok, Some((0, 0)))
        .send("p", "p-1", Ok, Some((0, 1)))
        .send("p", "p-2", Ok, Some((0, 2)))
        .assign("c1", &[0], Ok)
        .poll("c1", &[(0, 0, "p-0")])
        .poll("c1", &[(0, 2, "p-2")])
        // Someone else read offset 1, so it is not lost: c1 only skipped it.
        .poll("c2", &[(0, 1, "p-1")])
        .build()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checker::Verdict;
    use crate::history::OpType::*;
    use crate::history::build::Builder;

    fn three_sends() -> Builder {
        let mut b = Builder::new();
        b.send("p", "p-0", Ok, Some((0, 0)))
            .send("p", "p-1", Ok, Some((0, 1)))
            .send("p", "p-2", Ok, Some((0, 2)));
        b
    }

    #[test]
    fn clean_history_passes_even_across_a_rewind_at_a_new_epoch() {
        let h = three_sends()
            .assign("c1", &[0], Ok)
            .poll("c1", &[(0, 0, "p-0"), (0, 1, "p-1")])
            .poll("c1", &[(0, 2, "p-2")])
            // Reassigned: may restart from the committed offset.
            .assign("c1", &[0], Ok)
            .poll("c1", &[(0, 1, "p-1")])
            .build();
        let r = check(&h);
        assert_eq!(r.verdict, Verdict::Pass, "{r:?}");
        assert_eq!(r.get("epochs"), 2);
    }

    #[test]
    fn skipping_an_existing_offset_fails() {
        let r = check(&anomaly_history());
        assert_eq!(r.verdict, Verdict::Fail);
        assert_eq!(r.get("skips"), 1);
        assert_eq!(r.get("nonmonotonic"), 0);
        assert_eq!(r.examples[0]["skipped"], serde_json::json!([1]));
    }

    #[test]
    fn going_back_within_an_epoch_fails_but_a_failed_assign_is_no_new_epoch() {
        let h = three_sends()
            .assign("c1", &[0], Ok)
            .poll("c1", &[(0, 0, "p-0"), (0, 1, "p-1")])
            .assign("c1", &[0], Fail)
            .poll("c1", &[(0, 1, "p-1")])
            .build();
        let r = check(&h);
        assert_eq!(r.verdict, Verdict::Fail);
        assert_eq!(r.get("nonmonotonic"), 1);
        assert_eq!(r.get("skips"), 0);
    }

    #[test]
    fn going_back_inside_one_poll_fails() {
        let h = three_sends()
            .poll("c1", &[(0, 1, "p-1"), (0, 0, "p-0")])
            .build();
        assert_eq!(check(&h).get("nonmonotonic"), 1);
    }

    /// c1 read offset 0, then (moved up by retention) offset 3; offsets 1 and 2 exist.
    fn jump_with_minimum(min: u64) -> History {
        three_sends()
            .send("p", "p-3", Ok, Some((0, 3)))
            .assign("c1", &[0], Ok)
            .poll_with_mins("c1", &[(0, 0, "p-0")], &[(0, 0)])
            .poll_with_mins("c1", &[(0, 3, "p-3")], &[(0, min)])
            .build()
    }

    #[test]
    fn jumping_over_offsets_below_the_minimum_is_no_skip() {
        let r = check(&jump_with_minimum(3));
        assert_eq!(r.verdict, Verdict::Pass, "{r:?}");
        assert_eq!(r.get("skipped_expired"), 2);
    }

    #[test]
    fn jumping_over_offsets_at_or_above_the_minimum_is_still_a_skip() {
        let r = check(&jump_with_minimum(2));
        assert_eq!(r.verdict, Verdict::Fail);
        assert_eq!(r.get("skipped_expired"), 1);
        assert_eq!(r.get("skips"), 1);
        assert_eq!(r.examples[0]["skipped"], serde_json::json!([2]));
    }

    #[test]
    fn a_gap_nobody_knows_of_is_not_a_skip() {
        let h = Builder::new()
            .send("p", "p-0", Ok, Some((0, 0)))
            .send("p", "p-5", Ok, Some((0, 5)))
            .poll("c1", &[(0, 0, "p-0"), (0, 5, "p-5")])
            .build();
        assert_eq!(check(&h).verdict, Verdict::Pass);
    }
}
