//! Aborted read: a value read whose send definitely failed (`fail`, not `info`). A `fail` means
//! the client was told the message was not stored, so nobody may ever read it.
//!
//! Needs: `send` completions (type and value) and the messages of `ok` polls and drains.

use std::collections::BTreeSet;

use serde::Serialize;

use super::{CheckResult, Class, SendOutcome, reads, sends, sends_by_value};
use crate::history::History;

pub const NAME: &str = "aborted_read";

#[derive(Serialize)]
struct Example<'a> {
    value: &'a str,
    process: &'a str,
    send_index: u64,
    read_index: u64,
    queue: String,
    offset: u64,
}

pub fn check(history: &History) -> CheckResult {
    let mut result = CheckResult::new(NAME, Class::Safety);
    let sends = sends(history);
    result.count(
        "failed_sends",
        sends
            .iter()
            .filter(|s| s.outcome == SendOutcome::Fail)
            .count() as u64,
    );
    let by_value = sends_by_value(&sends);
    let mut reported: BTreeSet<&str> = BTreeSet::new();
    for r in reads(history) {
        let Some(records) = by_value.get(r.value) else {
            continue; // unexpected, not aborted
        };
        // Definitely failed only if every send of this value failed.
        if records.iter().all(|s| s.outcome == SendOutcome::Fail) && reported.insert(r.value) {
            result.violation(
                "aborted_reads",
                Example {
                    value: r.value,
                    process: records[0].process,
                    send_index: records[0].index,
                    read_index: r.index,
                    queue: r.queue.to_string(),
                    offset: r.offset,
                },
            );
        }
    }
    result
}

/// A history whose only anomaly is a read of a definitely failed send.
#[cfg(test)]
pub(crate) fn anomaly_history() -> History {
    use crate::history::OpType::Fail;
    crate::history::build::Builder::new()
        .send("c1", "c1-0", Fail, None)
        .poll("c2", &[(0, 0, "c1-0")])
        .build()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checker::Verdict;
    use crate::history::OpType::*;
    use crate::history::build::Builder;

    #[test]
    fn reading_an_unknown_outcome_send_is_fine() {
        let h = Builder::new()
            .send("c1", "c1-0", Info, None)
            .send("c1", "c1-1", Fail, None)
            .poll("c2", &[(0, 0, "c1-0")])
            .build();
        let r = check(&h);
        assert_eq!(r.verdict, Verdict::Pass);
        assert_eq!(r.get("failed_sends"), 1);
    }

    #[test]
    fn reading_a_failed_send_fails() {
        let r = check(&anomaly_history());
        assert_eq!(r.verdict, Verdict::Fail);
        assert_eq!(r.get("aborted_reads"), 1);
        assert_eq!(r.examples[0]["value"], "c1-0");
    }
}
