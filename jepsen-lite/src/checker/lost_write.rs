//! Lost write: an acknowledged send whose offset is at or below the highest offset any poll or
//! drain observed in its queue, yet no poll or drain ever returned its value. Readers got past
//! that offset, so the message should have been delivered to someone.
//!
//! Needs: `ok` sends (queue, offset, value) and the messages of `ok` polls and drains.

use std::collections::HashMap;

use serde::Serialize;

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
        if !seen.contains(s.value) {
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
