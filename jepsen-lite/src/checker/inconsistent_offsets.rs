//! Inconsistent offsets: one `(queue, offset)` observed holding two different values, whether
//! by two reads (two polls, two members' drains) or by a send acknowledgement claiming an offset
//! where a read found another value.
//!
//! Needs: `ok` sends (queue, offset, value) and the messages of `ok` polls and drains.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use super::{CheckResult, Claim, Class, position_claims, reads, sends};
use crate::history::{History, QueueRef};

pub const NAME: &str = "inconsistent_offsets";

/// Claims kept per example (the first of each distinct value, then more up to this).
const CLAIMS_PER_EXAMPLE: usize = 6;

#[derive(Serialize)]
struct Example<'a> {
    queue: String,
    offset: u64,
    values: Vec<&'a str>,
    claims: Vec<Claim<'a>>,
}

pub fn check(history: &History) -> CheckResult {
    let mut result = CheckResult::new(NAME, Class::Safety);
    let sends = sends(history);
    let reads = reads(history);
    let mut positions: BTreeMap<(QueueRef, u64), Vec<Claim<'_>>> = BTreeMap::new();
    for (queue, offset, claim) in position_claims(&sends, &reads) {
        positions.entry((queue, offset)).or_default().push(claim);
    }
    result.count("positions", positions.len() as u64);
    for ((queue, offset), claims) in positions {
        let values: BTreeSet<&str> = claims.iter().map(|c| c.value).collect();
        if values.len() < 2 {
            continue;
        }
        // Show one claim for each value first, so the example names every party.
        let mut shown: Vec<Claim<'_>> = Vec::new();
        for v in &values {
            if let Some(c) = claims.iter().find(|c| c.value == *v) {
                shown.push(c.clone());
            }
        }
        shown.truncate(CLAIMS_PER_EXAMPLE);
        result.violation(
            "inconsistent",
            Example {
                queue: queue.to_string(),
                offset,
                values: values.into_iter().collect(),
                claims: shown,
            },
        );
    }
    result
}

/// A history whose only anomaly is two members holding different values at one offset.
#[cfg(test)]
pub(crate) fn anomaly_history() -> History {
    use crate::history::OpType::Info;
    crate::history::build::Builder::new()
        .send("c1", "c1-0", Info, None)
        .send("c3", "c3-0", Info, None)
        .drain(Some("n1"), 0, &[(0, "c1-0")])
        .drain(Some("n2"), 0, &[(0, "c3-0")])
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
            .poll("c2", &[(0, 0, "c1-0")])
            .drain(Some("n1"), 0, &[(0, "c1-0")])
            .drain(Some("n2"), 0, &[(0, "c1-0")])
            .build();
        let r = check(&h);
        assert_eq!(r.verdict, Verdict::Pass);
        assert_eq!(r.get("positions"), 1);
    }

    #[test]
    fn two_members_disagreeing_about_one_offset_fail() {
        let r = check(&anomaly_history());
        assert_eq!(r.verdict, Verdict::Fail);
        assert_eq!(r.get("inconsistent"), 1);
        assert_eq!(r.examples[0]["values"], serde_json::json!(["c1-0", "c3-0"]));
    }

    #[test]
    fn an_ack_claiming_an_offset_where_another_value_was_read_fails() {
        // c1-0 acknowledged at offset 0, but a poll found c3-0 there (and c1-0 nowhere).
        let h = Builder::new()
            .send("c1", "c1-0", Ok, Some((0, 0)))
            .send("c3", "c3-0", Info, None)
            .poll("c2", &[(0, 0, "c3-0")])
            .build();
        let r = check(&h);
        assert_eq!(r.verdict, Verdict::Fail);
        let claims = r.examples[0]["claims"].as_array().unwrap();
        assert!(claims.iter().any(|c| c["by"] == "send"));
        assert!(claims.iter().any(|c| c["by"] == "poll"));
    }
}
