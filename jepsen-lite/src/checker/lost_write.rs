//! Lost write: an acknowledged send whose offset is at or below the highest offset any poll or
//! drain observed in its queue, yet no poll or drain ever returned its value. Readers got past
//! that offset, so the message should have been delivered to someone.
//!
//! A send that no reader returned at an offset below its queue's floor (the highest minimum
//! offset any answer reported, `retention::floors`) was removed by retention: counted as
//! `expired`, not lost.
//!
//! Needs: `ok` sends (queue, offset, value), the messages of `ok` polls and drains, and the
//! minimum offsets they reported.

use std::collections::HashMap;

use serde::Serialize;

use super::retention::{floor_of, floors};
use super::{CheckResult, Class, SendOutcome, read_values, reads, sends};
use crate::history::{History, QueueRef};

pub const NAME: &str = "lost_write";

#[derive(Serialize)]
struct Example<'a> {
    value: &'a str,
    process: &'a str,
    send_index: u64,
    queue: String,
    offset: u64,
    highest_read_offset: u64,
}

pub fn check(history: &History) -> CheckResult {
    let mut result = CheckResult::new(NAME, Class::Safety);
    let reads = reads(history);
    let seen = read_values(&reads);
    let floors = floors(history);
    let mut highest: HashMap<&QueueRef, u64> = HashMap::new();
    for r in &reads {
        let h = highest.entry(&r.queue).or_insert(r.offset);
        *h = (*h).max(r.offset);
    }
    for s in sends(history) {
        if s.outcome != SendOutcome::Ok {
            continue;
        }
        result.count("acknowledged", 1);
        let (Some(queue), Some(offset)) = (&s.queue, s.offset) else {
            continue;
        };
        let Some(&top) = highest.get(queue) else {
            continue;
        };
        if offset > top {
            continue;
        }
        result.count("below_highest_read", 1);
        if seen.contains(s.value) {
            continue;
        }
        if offset < floor_of(&floors, queue) {
            result.count("expired", 1);
        } else {
            result.violation(
                "lost",
                Example {
                    value: s.value,
                    process: s.process,
                    send_index: s.index,
                    queue: queue.to_string(),
                    offset,
                    highest_read_offset: top,
                },
            );
        }
    }
    result
}

/// A history whose only anomaly is a lost write (for this file's tests and the cross-check in
/// `checker::tests`): c1-1 was acknowledged at offset 1; readers saw offsets 0 and 2, never c1-1.
/// Two different consumers read, so no single consumer skipped an offset.
#[cfg(test)]
pub(crate) fn anomaly_history() -> History {
    use crate::history::OpType::Ok;
    crate::history::build::Builder::new()
        .send("c1", "c1-0", Ok, Some((0, 0)))
        .send("c1", "c1-1", Ok, Some((0, 1)))
        .send("c1", "c1-2", Ok, Some((0, 2)))
        .poll("c2", &[(0, 0, "c1-0")])
        .poll("c3", &[(0, 2, "c1-2")])
        .build()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checker::Verdict;
    use crate::history::OpType::*;
    use crate::history::build::Builder;

    #[test]
    fn clean_history_passes() {
        let h = Builder::new()
            .send("c1", "c1-0", Ok, Some((0, 0)))
            .send("c1", "c1-1", Ok, Some((0, 1)))
            .poll("c2", &[(0, 0, "c1-0"), (0, 1, "c1-1")])
            .build();
        let r = check(&h);
        assert_eq!(r.verdict, Verdict::Pass, "{r:?}");
        assert_eq!(r.get("below_highest_read"), 2);
    }

    #[test]
    fn acknowledged_send_skipped_by_every_reader_is_lost() {
        let r = check(&anomaly_history());
        assert_eq!(r.verdict, Verdict::Fail);
        assert_eq!(r.get("lost"), 1);
        assert_eq!(r.examples[0]["value"], "c1-1");
        assert_eq!(r.examples[0]["highest_read_offset"], 2);
    }

    /// c1-1 at offset 1 was never read; a reader reported the queue's minimum at `min`.
    fn unread_with_minimum(min: u64) -> History {
        Builder::new()
            .send("c1", "c1-0", Ok, Some((0, 0)))
            .send("c1", "c1-1", Ok, Some((0, 1)))
            .send("c1", "c1-2", Ok, Some((0, 2)))
            .send("c1", "c1-3", Ok, Some((0, 3)))
            .poll_with_mins("c2", &[(0, 3, "c1-3")], &[(0, min)])
            .drain_with_min(None, 0, Some(min), &[(3, "c1-3")])
            .build()
    }

    #[test]
    fn an_unread_send_below_the_minimum_is_expired_not_lost() {
        let r = check(&unread_with_minimum(3));
        assert_eq!(r.verdict, Verdict::Pass, "{r:?}");
        // c1-0, c1-1 and c1-2 are all below the minimum 3.
        assert_eq!(r.get("expired"), 3);
        assert_eq!(r.get("lost"), 0);
    }

    #[test]
    fn an_unread_send_at_or_above_the_minimum_is_still_lost() {
        // The minimum 1 covers c1-0 only; c1-1 and c1-2 were skipped by every reader.
        let r = check(&unread_with_minimum(1));
        assert_eq!(r.verdict, Verdict::Fail);
        assert_eq!(r.get("expired"), 1);
        assert_eq!(r.get("lost"), 2);
        assert_eq!(r.examples[0]["value"], "c1-1");
    }

    #[test]
    fn unread_sends_above_the_highest_read_and_unknown_sends_are_not_lost() {
        let h = Builder::new()
            .send("c1", "c1-0", Ok, Some((0, 0)))
            // Above anything read: not yet provably lost (that is the unseen checker's job).
            .send("c1", "c1-1", Ok, Some((0, 5)))
            // Unknown outcome: may or may not exist.
            .send("c1", "c1-2", Info, None)
            .poll("c2", &[(0, 0, "c1-0")])
            .build();
        assert_eq!(check(&h).verdict, Verdict::Pass);
    }
}
