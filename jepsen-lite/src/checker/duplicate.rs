//! Duplicate: one value stored at two positions (two offsets of one queue, or two queues),
//! judged from reads and send acknowledgements together.
//!
//! The workloads' producers retry a send whose outcome was unknown (a timeout, a lost
//! connection), as RocketMQ's do; every attempt carries the same `UNIQ_KEY`, and the broker's
//! dedup window (the idempotent producer) must store the value once. So the checker tells two
//! kinds of duplicate apart: `retry_duplicates`, values whose send was retried after an unknown
//! outcome (the idempotent producer failed), and `duplicated`, values sent once that are stored
//! twice anyway (the broker invented a copy). `retried_sends` counts the sends retried after an
//! unknown outcome, so a run shows the dedup path was exercised. Both kinds fail the run;
//! [`super::CheckOptions::allow_duplicates`] (for brokers run without a dedup window) reports
//! retry duplicates without failing, never the other kind.
//!
//! Needs: `ok` sends (queue, offset, value, `retried_after_unknown`) and the messages of `ok`
//! polls and drains.

use std::collections::{BTreeSet, HashMap, HashSet};

use serde::Serialize;

use super::{CheckResult, Class, position_claims, reads, sends};
use crate::history::{History, QueueRef};

pub const NAME: &str = "duplicate";
/// The count of duplicated values whose send was never retried after an unknown outcome.
pub const UNRETRIED_KEY: &str = "duplicated";
/// The count of duplicated values whose send was retried after an unknown outcome.
pub const RETRY_KEY: &str = "retry_duplicates";

#[derive(Serialize)]
struct Example<'a> {
    value: &'a str,
    positions: Vec<String>,
    retried_after_unknown: bool,
}

pub fn check(history: &History) -> CheckResult {
    let mut result = CheckResult::new(NAME, Class::Safety);
    let sends = sends(history);
    let retried: HashSet<&str> = sends
        .iter()
        .filter(|s| s.retried_after_unknown)
        .map(|s| s.value)
        .collect();
    result.count("retried_sends", retried.len() as u64);
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
        let retried_after_unknown = retried.contains(value);
        result.violation(
            if retried_after_unknown {
                RETRY_KEY
            } else {
                UNRETRIED_KEY
            },
            Example {
                value,
                positions: at.iter().map(|(q, o)| format!("{q}@{o}")).collect(),
                retried_after_unknown,
            },
        );
    }
    result
}

/// Records a send retried after an unknown outcome, as the workloads' producers do it,
/// acknowledged at `at`.
#[cfg(test)]
pub(crate) fn retried_send(b: &mut crate::history::build::Builder, value: &str, at: (u32, u64)) {
    use crate::history::{Call, OpType, SendOp};
    let invoke = SendOp {
        topic: "t".into(),
        key: None,
        queue: None,
        value: value.into(),
        offset: None,
        retried_after_unknown: false,
    };
    let done = SendOp {
        queue: Some(at.0),
        offset: Some(at.1),
        retried_after_unknown: true,
        ..invoke.clone()
    };
    b.push("c1", OpType::Invoke, Call::Send(invoke));
    b.push("c1", OpType::Ok, Call::Send(done));
}

/// A history whose only anomaly is a retried send stored twice (the idempotent producer
/// failed).
#[cfg(test)]
pub(crate) fn retry_anomaly_history() -> History {
    let mut b = crate::history::build::Builder::new();
    retried_send(&mut b, "c1-0", (0, 0));
    b.drain(Some("n1"), 0, &[(0, "c1-0"), (1, "c1-0")]).build()
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
    use crate::checker::{CheckOptions, Verdict, all};
    use crate::history::OpType::*;
    use crate::history::build::Builder;
    use crate::summary::{EXIT_PASS, EXIT_SAFETY_VIOLATION};

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

    /// The idempotent producer at work: the retry was answered with the first attempt's
    /// position and the value is stored once. The retry is counted, nothing fails.
    #[test]
    fn a_retry_stored_once_passes_and_is_counted() {
        let mut b = Builder::new();
        retried_send(&mut b, "c1-0", (0, 0));
        let h = b.drain(Some("n1"), 0, &[(0, "c1-0")]).build();
        let r = check(&h);
        assert_eq!(r.verdict, Verdict::Pass);
        assert_eq!(r.get("retried_sends"), 1);
        assert_eq!(r.get(RETRY_KEY), 0);
    }

    /// A retry stored twice is a failed idempotent producer; it is told apart from a copy the
    /// broker made of a value sent once, and `allow_duplicates` forgives only the former.
    #[test]
    fn retry_duplicates_are_told_apart_from_invented_copies() {
        let retry_dup = retry_anomaly_history();
        let r = check(&retry_dup);
        assert_eq!(r.verdict, Verdict::Fail);
        assert_eq!((r.get(RETRY_KEY), r.get(UNRETRIED_KEY)), (1, 0));
        assert_eq!(r.examples[0]["retried_after_unknown"], true);
        let allow = CheckOptions {
            allow_duplicates: true,
            ..CheckOptions::default()
        };
        assert_eq!(all(&retry_dup, &allow).exit_code, EXIT_PASS);
        assert_eq!(
            all(&retry_dup, &CheckOptions::default()).exit_code,
            EXIT_SAFETY_VIOLATION
        );

        let invented = anomaly_history();
        let r = check(&invented);
        assert_eq!((r.get(RETRY_KEY), r.get(UNRETRIED_KEY)), (0, 1));
        assert_eq!(all(&invented, &allow).exit_code, EXIT_SAFETY_VIOLATION);
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
