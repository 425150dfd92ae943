//! Duplicate: one value stored at two positions (two offsets of one queue, or two queues),
//! judged from reads and send acknowledgements together.
//!
//! RocketMQ producers retry a send that timed out; without a broker-side dedup window that
//! retry may store the message twice. [`super::CheckOptions::allow_duplicates`] reports
//! duplicates without failing the run.
//!
//! Needs: `ok` sends (queue, offset, value) and the messages of `ok` polls and drains.

use std::collections::{BTreeSet, HashMap};

use serde::Serialize;

use super::{CheckResult, Class, position_claims, reads, sends};
use crate::history::{History, QueueRef};

pub const NAME: &str = "duplicate";

#[derive(Serialize)]
struct Example<'a> {
    value: &'a str,
    positions: Vec<String>,
}

pub fn check(history: &History) -> CheckResult {
    let mut result = CheckResult::new(NAME, Class::Safety);
    let sends = sends(history);
    let reads = reads(history);
    let mut positions: HashMap<&str, BTreeSet<(QueueRef, u64)>> = HashMap::new();
    for (queue, offset, claim) in position_claims(&sends, &reads) {
        positions
            .entry(claim.value)
            .or_default()
            .insert((queue, offset));
    }
    result.count("values", positions.len() as u64);
    // Sorted for stable examples.
    let mut dups: Vec<(&str, BTreeSet<(QueueRef, u64)>)> =
        positions.into_iter().filter(|(_, p)| p.len() > 1).collect();
    dups.sort_by(|a, b| a.0.cmp(b.0));
    for (value, at) in dups {
        result.violation(
            "duplicated",
            Example {
                value,
                positions: at.iter().map(|(q, o)| format!("{q}@{o}")).collect(),
            },
        );
    }
    result
}

/// A history whose only anomaly is one value stored at two offsets.
#[cfg(test)]
pub(crate) fn anomaly_history() -> History {
    use crate::history::OpType::Ok;
    crate::history::build::Builder::new()
        .send("c1", "c1-0", Ok, Some((0, 0)))
        .drain(Some("n1"), 0, &[(0, "c1-0"), (1, "c1-0")])
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
            .send("c1", "c1-1", Ok, Some((1, 0)))
            .poll("c2", &[(0, 0, "c1-0"), (1, 0, "c1-1")])
            // The same position read twice (poll, then drain) is not a duplicate.
            .drain(Some("n1"), 0, &[(0, "c1-0")])
            .build();
        let r = check(&h);
        assert_eq!(r.verdict, Verdict::Pass);
        assert_eq!(r.get("values"), 2);
    }

    #[test]
    fn one_value_at_two_offsets_fails() {
        let r = check(&anomaly_history());
        assert_eq!(r.verdict, Verdict::Fail);
        assert_eq!(r.get("duplicated"), 1);
        assert_eq!(
            r.examples[0]["positions"],
            serde_json::json!(["t/0@0", "t/0@1"])
        );
    }
}
