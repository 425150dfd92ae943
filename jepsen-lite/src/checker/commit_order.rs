//! Committed offsets that go down, per consumer group and queue, across the whole history.
//!
//! Two checks, both in real-time order (an operation "follows" another if it was invoked after
//! the other completed, which the history's index order shows):
//! - a `commit` acknowledged with an offset below one that was acknowledged before it began
//!   (the workload commits forward only, so the client or broker turned it around);
//! - a `fetch_offset` returning less than an offset acknowledged before it began (or nothing):
//!   the broker lost or rolled back a committed offset, e.g. across a failover.
//!
//! Concurrent commits are not compared with each other. `info` commits may or may not have
//! applied, so they never raise the floor (a later fetch seeing them is fine).
//!
//! Needs: `commit` invokes and `ok` completions (group, topic, queue, offset) and `fetch_offset`
//! invokes and `ok` completions.

use std::collections::HashMap;

use serde::Serialize;

use super::{CheckResult, Class};
use crate::history::{Call, History, OpType, QueueRef};

pub const NAME: &str = "commit_order";

#[derive(Serialize)]
struct Example<'a> {
    group: &'a str,
    queue: String,
    /// The highest offset acknowledged before this operation began.
    floor: u64,
    /// What this commit set, or this fetch returned (`null`: none).
    offset: Option<u64>,
    op: &'static str,
    index: u64,
}

pub fn check(history: &History) -> CheckResult {
    let mut result = CheckResult::new(NAME, Class::Safety);
    // (group, queue) -> highest acknowledged commit so far
    let mut floor: HashMap<(&str, QueueRef), u64> = HashMap::new();
    // process -> floor when its outstanding commit/fetch began
    let mut at_invoke: HashMap<&str, Option<u64>> = HashMap::new();
    for op in &history.ops {
        let (group, queue) = match &op.call {
            Call::Commit(c) => (c.group.as_str(), (c.topic.as_str(), c.queue)),
            Call::FetchOffset(f) => (f.group.as_str(), (f.topic.as_str(), f.queue)),
            _ => continue,
        };
        let key = (
            group,
            QueueRef {
                topic: queue.0.into(),
                queue: queue.1,
            },
        );
        match op.kind {
            OpType::Invoke => {
                at_invoke.insert(op.process.as_str(), floor.get(&key).copied());
            }
            OpType::Ok => {
                let before = at_invoke.remove(op.process.as_str()).flatten();
                match &op.call {
                    Call::Commit(c) => {
                        result.count("commits", 1);
                        if let Some(f) = before
                            && c.offset < f
                        {
                            result.violation(
                                "commit_regressions",
                                Example {
                                    group,
                                    queue: key.1.to_string(),
                                    floor: f,
                                    offset: Some(c.offset),
                                    op: "commit",
                                    index: op.index,
                                },
                            );
                        }
                        let top = floor.entry(key).or_insert(c.offset);
                        *top = (*top).max(c.offset);
                    }
                    Call::FetchOffset(fetch) => {
                        result.count("fetches", 1);
                        if let Some(f) = before
                            && fetch.offset.is_none_or(|got| got < f)
                        {
                            result.violation(
                                "fetch_regressions",
                                Example {
                                    group,
                                    queue: key.1.to_string(),
                                    floor: f,
                                    offset: fetch.offset,
                                    op: "fetch_offset",
                                    index: op.index,
                                },
                            );
                        }
                    }
                    _ => {}
                }
            }
            OpType::Fail | OpType::Info => {
                at_invoke.remove(op.process.as_str());
            }
        }
    }
    result
}

/// A history whose only anomaly is a committed offset read back lower than acknowledged.
#[cfg(test)]
pub(crate) fn anomaly_history() -> History {
    use crate::history::OpType::Ok;
    crate::history::build::Builder::new()
        .commit("c1", 0, 10, Ok)
        .fetch_offset("c2", 0, Some(7))
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
            .commit("c1", 0, 5, Ok)
            .commit("c1", 0, 9, Ok)
            // An unknown-outcome commit of 12 may have applied: reading 12 or 9 are both fine.
            .commit("c1", 0, 12, Info)
            .fetch_offset("c2", 0, Some(12))
            .fetch_offset("c2", 0, Some(9))
            // Other queues and groups are independent.
            .commit("c1", 1, 2, Ok)
            .build();
        let r = check(&h);
        assert_eq!(r.verdict, Verdict::Pass, "{r:?}");
        assert_eq!(r.get("commits"), 3);
        assert_eq!(r.get("fetches"), 2);
    }

    #[test]
    fn a_fetch_below_an_acknowledged_commit_fails() {
        let r = check(&anomaly_history());
        assert_eq!(r.verdict, Verdict::Fail);
        assert_eq!(r.get("fetch_regressions"), 1);
        assert_eq!(r.examples[0]["floor"], 10);
        assert_eq!(r.examples[0]["offset"], 7);
    }

    #[test]
    fn a_commit_acknowledged_lower_than_an_earlier_one_fails() {
        let h = Builder::new()
            .commit("c1", 0, 10, Ok)
            .commit("c2", 0, 4, Ok)
            .build();
        let r = check(&h);
        assert_eq!(r.get("commit_regressions"), 1);
    }

    #[test]
    fn concurrent_commits_are_not_compared() {
        // c2's commit of 4 was invoked before c1's commit of 10 completed.
        let mut b = Builder::new();
        let commit = |offset| {
            Call::Commit(crate::history::CommitOp {
                group: "g".into(),
                topic: "t".into(),
                queue: 0,
                offset,
                consumer: None,
            })
        };
        b.push("c1", Invoke, commit(10))
            .push("c2", Invoke, commit(4))
            .push("c1", Ok, commit(10))
            .push("c2", Ok, commit(4));
        assert_eq!(check(&b.build()).verdict, Verdict::Pass);
    }
}
