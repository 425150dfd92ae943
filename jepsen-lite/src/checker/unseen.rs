//! Unseen after the final drain: an acknowledged send whose value no drain returned.
//!
//! The final drain reads every queue from offset 0 against every member (and through the
//! client). A value acknowledged but absent from all drains is a violation. Per member: a member
//! whose drain went past the acknowledged offset yet lacks the value has a hole (violation); a
//! member whose drain stopped below the offset is only lagging (counted, not a violation).
//! Queues with acknowledged sends but no drain make the verdict unknown.
//!
//! Retention: a value missing below its queue's floor (the highest minimum offset any answer
//! reported, `retention::floors`) was removed by retention, not lost: counted as `expired`
//! (absent from every drain) or `member_expired` (absent from one member's drain).
//!
//! Needs: `ok` sends (queue, offset, value), `ok` drains (member, queue, messages) and the
//! minimum offsets polls and drains reported.

use std::collections::{BTreeSet, HashMap, HashSet};

use serde::Serialize;

use super::retention::{floor_of, floors};
use super::{CheckResult, Class, ReadSource, SendOutcome, reads, sends};
use crate::history::{History, QueueRef};

pub const NAME: &str = "unseen";

#[derive(Serialize)]
struct Example<'a> {
    value: &'a str,
    process: &'a str,
    send_index: u64,
    queue: String,
    offset: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    member: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    member_highest_offset: Option<u64>,
}

/// What one member's (or the client's, `None`) drains of one queue returned.
#[derive(Default)]
struct Drained<'a> {
    values: HashSet<&'a str>,
    highest: Option<u64>,
}

pub fn check(history: &History) -> CheckResult {
    let mut result = CheckResult::new(NAME, Class::Safety);
    let mut drained_any: HashSet<&str> = HashSet::new();
    let mut drained_queues: HashSet<QueueRef> = HashSet::new();
    let mut per_member: HashMap<(Option<&str>, QueueRef), Drained<'_>> = HashMap::new();
    let all_reads = reads(history);
    for r in &all_reads {
        if let ReadSource::Drain { member } = r.source {
            drained_any.insert(r.value);
            let d = per_member.entry((member, r.queue.clone())).or_default();
            d.values.insert(r.value);
            d.highest = Some(d.highest.map_or(r.offset, |h| h.max(r.offset)));
        }
    }
    // An ok drain that returned nothing still proves the queue was drained (it is empty there).
    for op in &history.ops {
        if let (crate::history::OpType::Ok, crate::history::Call::Drain(d)) = (&op.kind, &op.call) {
            drained_queues.insert(d.queue_ref());
            per_member
                .entry((d.member.as_deref(), d.queue_ref()))
                .or_default();
        }
    }
    let floors = floors(history);
    let mut undrained: BTreeSet<String> = BTreeSet::new();
    let all_sends = sends(history);
    for s in &all_sends {
        let (Some(queue), true) = (&s.queue, s.outcome == SendOutcome::Ok) else {
            if s.outcome == SendOutcome::Info {
                let key = if drained_any.contains(s.value) {
                    "unknown_sends_present"
                } else {
                    "unknown_sends_absent"
                };
                result.count(key, 1);
            }
            continue;
        };
        result.count("acknowledged", 1);
        if !drained_queues.contains(queue) {
            undrained.insert(queue.to_string());
            continue;
        }
        let offset = s.offset.unwrap_or(0);
        let expired = offset < floor_of(&floors, queue);
        if !drained_any.contains(s.value) && expired {
            result.count("expired", 1);
            continue;
        }
        if !drained_any.contains(s.value) {
            result.violation(
                "unseen",
                Example {
                    value: s.value,
                    process: s.process,
                    send_index: s.index,
                    queue: queue.to_string(),
                    offset,
                    member: None,
                    member_highest_offset: None,
                },
            );
            continue;
        }
        for ((member, q), d) in &per_member {
            if q != queue || d.values.contains(s.value) {
                continue;
            }
            match d.highest {
                Some(top) if top > offset && expired => result.count("member_expired", 1),
                Some(top) if top > offset => result.violation(
                    "member_holes",
                    Example {
                        value: s.value,
                        process: s.process,
                        send_index: s.index,
                        queue: queue.to_string(),
                        offset,
                        member: *member,
                        member_highest_offset: Some(top),
                    },
                ),
                _ => result.count("member_lagging", 1),
            }
        }
    }
    if !undrained.is_empty() {
        result.count("undrained_queues", undrained.len() as u64);
        let list: Vec<String> = undrained.into_iter().take(super::MAX_EXAMPLES).collect();
        result.unknown(format!(
            "acknowledged sends in queues with no final drain: {}",
            list.join(", ")
        ));
    }
    result
}

/// A history whose only anomaly is an acknowledged value absent from every drain (offset 1 is
/// above anything read, so it is not a lost write).
#[cfg(test)]
pub(crate) fn anomaly_history() -> History {
    use crate::history::OpType::Ok;
    crate::history::build::Builder::new()
        .send("c1", "c1-0", Ok, Some((0, 0)))
        .send("c1", "c1-1", Ok, Some((0, 1)))
        .drain(Some("n1"), 0, &[(0, "c1-0")])
        .drain(None, 0, &[(0, "c1-0")])
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
            .send("c1", "c1-1", Info, None)
            .drain(Some("n1"), 0, &[(0, "c1-0")])
            .drain(Some("n2"), 0, &[(0, "c1-0"), (1, "c1-1")])
            .build();
        let r = check(&h);
        assert_eq!(r.verdict, Verdict::Pass, "{r:?}");
        assert_eq!(r.get("unknown_sends_present"), 1);
    }

    #[test]
    fn acknowledged_value_missing_from_every_drain_is_unseen() {
        let r = check(&anomaly_history());
        assert_eq!(r.verdict, Verdict::Fail);
        assert_eq!(r.get("unseen"), 1);
        assert_eq!(r.examples[0]["value"], "c1-1");
    }

    #[test]
    fn a_member_lacking_a_value_below_its_highest_offset_has_a_hole() {
        let h = Builder::new()
            .send("c1", "c1-0", Ok, Some((0, 0)))
            .send("c1", "c1-1", Ok, Some((0, 1)))
            .drain(Some("n1"), 0, &[(0, "c1-0"), (1, "c1-1")])
            // n2 skipped offset 0 but has 1: a hole. n3 stopped at 0: lagging only.
            .drain(Some("n2"), 0, &[(1, "c1-1")])
            .drain(Some("n3"), 0, &[(0, "c1-0")])
            .build();
        let r = check(&h);
        assert_eq!(r.get("unseen"), 0);
        assert_eq!(r.get("member_holes"), 1);
        assert_eq!(r.examples[0]["member"], "n2");
        assert_eq!(r.get("member_lagging"), 1);
    }

    /// c1-0 and c1-1 acknowledged at offsets 0 and 1; n1 drained both, n2 only what is at or
    /// above its minimum `min`, the client from `min` too.
    fn drained_above_minimum(min: u64) -> History {
        let all = [(0, "c1-0"), (1, "c1-1"), (2, "c1-2")];
        let kept: Vec<(u64, &str)> = all.iter().copied().filter(|(o, _)| *o >= min).collect();
        Builder::new()
            .send("c1", "c1-0", Ok, Some((0, 0)))
            .send("c1", "c1-1", Ok, Some((0, 1)))
            .send("c1", "c1-2", Ok, Some((0, 2)))
            .drain_with_min(Some("n2"), 0, Some(min), &kept)
            .drain_with_min(None, 0, Some(min), &kept)
            .build()
    }

    #[test]
    fn a_value_below_the_minimum_in_no_drain_is_expired_not_unseen() {
        let r = check(&drained_above_minimum(2));
        assert_eq!(r.verdict, Verdict::Pass, "{r:?}");
        assert_eq!(r.get("expired"), 2);
        assert_eq!(r.get("unseen"), 0);
    }

    #[test]
    fn a_value_at_or_above_the_minimum_in_no_drain_is_still_unseen() {
        // Minimum 1, but the drains hold only offset 2 (as if offset 1 were lost).
        let h = Builder::new()
            .send("c1", "c1-0", Ok, Some((0, 0)))
            .send("c1", "c1-1", Ok, Some((0, 1)))
            .send("c1", "c1-2", Ok, Some((0, 2)))
            .drain_with_min(Some("n2"), 0, Some(1), &[(2, "c1-2")])
            .build();
        let r = check(&h);
        assert_eq!(r.verdict, Verdict::Fail);
        assert_eq!(r.get("expired"), 1);
        assert_eq!(r.get("unseen"), 1);
        assert_eq!(r.examples[0]["value"], "c1-1");
    }

    #[test]
    fn a_member_missing_a_value_below_the_minimum_has_no_hole() {
        // n1 drained before retention moved the minimum to 2; n2 after.
        let h = Builder::new()
            .send("c1", "c1-0", Ok, Some((0, 0)))
            .send("c1", "c1-1", Ok, Some((0, 1)))
            .send("c1", "c1-2", Ok, Some((0, 2)))
            .drain_with_min(
                Some("n1"),
                0,
                Some(0),
                &[(0, "c1-0"), (1, "c1-1"), (2, "c1-2")],
            )
            .drain_with_min(Some("n2"), 0, Some(2), &[(2, "c1-2")])
            .build();
        let r = check(&h);
        assert_eq!(r.verdict, Verdict::Pass, "{r:?}");
        assert_eq!(r.get("member_expired"), 2);
        assert_eq!(r.get("member_holes"), 0);
    }

    #[test]
    fn no_drain_means_unknown_not_pass() {
        let h = Builder::new()
            .send("c1", "c1-0", Ok, Some((0, 0)))
            .poll("c2", &[(0, 0, "c1-0")])
            .build();
        let r = check(&h);
        assert_eq!(r.verdict, Verdict::Unknown);
        assert_eq!(r.get("undrained_queues"), 1);
    }
}
