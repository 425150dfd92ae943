//! Unexpected: a value read that no send ever carried (invented or corrupted data).
//!
//! Needs: every `send` and `transaction` invoke's value, and the messages of `ok` polls and
//! drains.

use std::collections::{BTreeSet, HashSet};

use serde::Serialize;

use super::{CheckResult, Class, reads, sends};
use crate::history::{Call, History};

pub const NAME: &str = "unexpected";

#[derive(Serialize)]
struct Example<'a> {
    value: &'a str,
    queue: String,
    offset: u64,
    read_index: u64,
}

pub fn check(history: &History) -> CheckResult {
    let mut result = CheckResult::new(NAME, Class::Safety);
    let mut sent: HashSet<&str> = sends(history).iter().map(|s| s.value).collect();
    // A transaction's value is sent as its half message (committed or not: whether reading it
    // is allowed is the `transactions` checker's business).
    sent.extend(
        history
            .pairs()
            .filter_map(|(_, invoke, _)| match &invoke.call {
                Call::Transaction(tx) => Some(tx.value.as_str()),
                _ => None,
            }),
    );
    let mut reported: BTreeSet<&str> = BTreeSet::new();
    for r in reads(history) {
        result.count("reads", 1);
        if !sent.contains(r.value) && reported.insert(r.value) {
            result.violation(
                "unexpected",
                Example {
                    value: r.value,
                    queue: r.queue.to_string(),
                    offset: r.offset,
                    read_index: r.index,
                },
            );
        }
    }
    result
}

/// A history whose only anomaly is a value nobody sent, read by a poll and a drain.
#[cfg(test)]
pub(crate) fn anomaly_history() -> History {
    use crate::history::OpType::Ok;
    crate::history::build::Builder::new()
        .send("c1", "c1-0", Ok, Some((0, 0)))
        .poll("c2", &[(0, 0, "c1-0"), (0, 1, "ghost")])
        .drain(Some("n1"), 0, &[(0, "c1-0"), (1, "ghost")])
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
        // Even a failed or unknown send's value is "expected" here (aborted reads are separate).
        let h = Builder::new()
            .send("c1", "c1-0", Ok, Some((0, 0)))
            .send("c1", "c1-1", Info, None)
            .poll("c2", &[(0, 0, "c1-0"), (0, 1, "c1-1")])
            .build();
        assert_eq!(check(&h).verdict, Verdict::Pass);
    }

    #[test]
    fn a_value_nobody_sent_fails_once_per_value() {
        let r = check(&anomaly_history());
        assert_eq!(r.verdict, Verdict::Fail);
        assert_eq!(r.get("unexpected"), 1);
        assert_eq!(r.examples[0]["value"], "ghost");
    }
}
