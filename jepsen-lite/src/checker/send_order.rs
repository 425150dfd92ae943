//! Nonmonotonic sends: one producer's acknowledged sends to one queue must get increasing
//! offsets in the order the producer sent them (per-queue order is each producer's send order).
//!
//! Only `ok` sends are compared (their offsets are known); a producer is a history process.
//! Sends are ordered by their invoke.
//!
//! Needs: `ok` sends (process, queue, offset) in invoke order.

use std::collections::HashMap;

use serde::Serialize;

use super::{CheckResult, Class, SendOutcome, sends};
use crate::history::{History, QueueRef};

pub const NAME: &str = "send_order";

#[derive(Serialize)]
struct Example<'a> {
    producer: &'a str,
    queue: String,
    earlier_value: &'a str,
    earlier_offset: u64,
    value: &'a str,
    offset: u64,
    send_index: u64,
}

pub fn check(history: &History) -> CheckResult {
    let mut result = CheckResult::new(NAME, Class::Safety);
    let mut last: HashMap<(&str, QueueRef), (&str, u64)> = HashMap::new();
    for s in sends(history) {
        let (SendOutcome::Ok, Some(queue), Some(offset)) = (s.outcome, s.queue, s.offset) else {
            continue;
        };
        result.count("acknowledged", 1);
        let key = (s.process, queue);
        if let Some(&(earlier_value, earlier_offset)) = last.get(&key)
            && offset <= earlier_offset
        {
            result.violation(
                "nonmonotonic",
                Example {
                    producer: s.process,
                    queue: key.1.to_string(),
                    earlier_value,
                    earlier_offset,
                    value: s.value,
                    offset,
                    send_index: s.index,
                },
            );
        }
        last.insert(key, (s.value, offset));
    }
    result
}

/// A history whose only anomaly is a producer's later send stored before its earlier one.
#[cfg(test)]
pub(crate) fn anomaly_history() -> History {
    use crate::history::OpType::Ok;
    crate::history::build::Builder::new()
        .send("p", "p-0", Ok, Some((0, 1)))
        .send("p", "p-1", Ok, Some((0, 0)))
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
        // Two producers interleave in one queue; each one's own offsets increase.
        let h = Builder::new()
            .send("p", "p-0", Ok, Some((0, 0)))
            .send("q", "q-0", Ok, Some((0, 1)))
            .send("p", "p-1", Ok, Some((0, 2)))
            .send("p", "p-2", Info, None)
            .send("p", "p-3", Ok, Some((1, 0)))
            .send("p", "p-4", Ok, Some((0, 3)))
            .build();
        let r = check(&h);
        assert_eq!(r.verdict, Verdict::Pass);
        assert_eq!(r.get("acknowledged"), 5);
    }

    #[test]
    fn later_send_at_a_lower_offset_fails() {
        let r = check(&anomaly_history());
        assert_eq!(r.verdict, Verdict::Fail);
        assert_eq!(r.get("nonmonotonic"), 1);
        assert_eq!(r.examples[0]["earlier_value"], "p-0");
    }
}
