//! Transactions: what the transaction workload (`workload::tx`) decided against what consumers
//! can read.
//!
//! A transaction's decisions are its local transaction's (`local` of an `ok` `transaction`:
//! the half message was stored and the local transaction ran) and every answer a producer gave
//! to the broker's check (`tx_check` events, recorded before the answer is sent). A transaction
//! is *commit-decided* if any decision is commit, *rollback-decided* if any is rollback. The
//! rules, over every message an `ok` poll or drain returned:
//!
//! - `conflicting_decisions`: both commit and rollback were decided (a workload bug; nothing
//!   below can then be judged for that value).
//! - `rolled_back_read`: a rollback-decided transaction's value was read.
//! - `undecided_read`: a value was read whose transaction nobody decided to commit (never
//!   answered, only `unknown`, or no half message stored).
//! - `visible_twice`: a value was read at two positions (a commit applied twice).
//! - `lost_commit`: a commit the broker acknowledged (`ended` on an `ok` transaction with
//!   `local` commit: that END_TRANSACTION ended it) is read nowhere in the final drain.
//! - `unresolved`: after the run settled, a member's state still holds pending transactions
//!   (`tx_pending`): some transaction was neither committed, rolled back, nor discarded after
//!   its last check. Every transaction left unknown must be resolved: committed once if a check
//!   answered commit and that answer reached the broker, otherwise rolled back or discarded.
//!
//! A history without `transaction` operations skips this checker; one without a drain or a
//! `tx_pending` record cannot prove the last two rules and is `unknown`.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use super::{CheckResult, Class, Verdict, reads};
use crate::history::{Call, History, OpType, QueueRef, TxDecision};

pub const NAME: &str = "transactions";

/// One transaction, as the history tells it.
#[derive(Debug, Default)]
struct Tx {
    /// `Some` once the half message is known stored and the local transaction ran.
    local: Option<TxDecision>,
    /// The END_TRANSACTION with `local` was acknowledged.
    ended: bool,
    /// The answers producers gave to the broker's checks.
    answers: Vec<TxDecision>,
    /// Where reads found the value.
    positions: BTreeSet<(QueueRef, u64)>,
    /// Who read it (for examples).
    first_read: Option<u64>,
}

impl Tx {
    fn decided(&self, decision: TxDecision) -> bool {
        self.local == Some(decision) || self.answers.contains(&decision)
    }
}

#[derive(Serialize)]
struct Example<'a> {
    value: &'a str,
    local: Option<TxDecision>,
    ended: bool,
    answers: &'a [TxDecision],
    positions: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    first_read_index: Option<u64>,
}

fn example<'a>(value: &'a str, tx: &'a Tx) -> Example<'a> {
    Example {
        value,
        local: tx.local,
        ended: tx.ended,
        answers: &tx.answers,
        positions: tx
            .positions
            .iter()
            .map(|(q, o)| format!("{q}@{o}"))
            .collect(),
        first_read_index: tx.first_read,
    }
}

pub fn check(history: &History) -> CheckResult {
    let mut result = CheckResult::new(NAME, Class::Safety);
    let mut txs: BTreeMap<&str, Tx> = BTreeMap::new();
    for (_, invoke, done) in history.pairs() {
        let Call::Transaction(op) = &invoke.call else {
            continue;
        };
        let tx = txs.entry(op.value.as_str()).or_default();
        if let Some(done) = done
            && done.kind == OpType::Ok
            && let Call::Transaction(end) = &done.call
        {
            tx.local = Some(op.local);
            tx.ended = end.ended;
        }
    }
    if txs.is_empty() {
        result.verdict = Verdict::Skipped;
        result.note = Some("no transactions in this history".into());
        return result;
    }
    let mut pending: Option<&BTreeMap<String, Option<u64>>> = None;
    let mut has_drain = false;
    for op in &history.ops {
        match &op.call {
            Call::TxCheck(check) => {
                result.count("check_answers", 1);
                if let Some(tx) = txs.get_mut(check.value.as_str()) {
                    tx.answers.push(check.answer);
                }
            }
            Call::TxPending(p) => pending = Some(&p.members),
            Call::Drain(_) if op.kind == OpType::Ok => has_drain = true,
            _ => {}
        }
    }
    for read in reads(history) {
        if let Some(tx) = txs.get_mut(read.value) {
            tx.positions.insert((read.queue.clone(), read.offset));
            tx.first_read.get_or_insert(read.index);
        }
    }

    result.count("transactions", txs.len() as u64);
    for (value, tx) in &txs {
        let commit = tx.decided(TxDecision::Commit);
        let rollback = tx.decided(TxDecision::Rollback);
        match tx.local {
            Some(TxDecision::Commit) if tx.ended => result.count("committed_acked", 1),
            Some(TxDecision::Rollback) if tx.ended => result.count("rolled_back_acked", 1),
            Some(TxDecision::Unknown) => {
                result.count("left_unknown", 1);
                if commit {
                    result.count("left_unknown_then_commit_answered", 1);
                } else if rollback {
                    result.count("left_unknown_then_rollback_answered", 1);
                } else {
                    result.count("left_unknown_never_answered", 1);
                }
            }
            Some(_) => result.count("end_not_acked", 1),
            None => result.count("half_not_known_stored", 1),
        }
        if !tx.positions.is_empty() {
            result.count("visible", 1);
        }
        if commit && rollback {
            result.violation("conflicting_decisions", example(value, tx));
            continue;
        }
        if tx.positions.len() > 1 {
            result.violation("visible_twice", example(value, tx));
        }
        if !tx.positions.is_empty() && !commit {
            let key = if rollback {
                "rolled_back_read"
            } else {
                "undecided_read"
            };
            result.violation(key, example(value, tx));
        }
        if has_drain && tx.local == Some(TxDecision::Commit) && tx.ended && tx.positions.is_empty()
        {
            result.violation("lost_commit", example(value, tx));
        }
    }

    #[derive(Serialize)]
    struct Unresolved<'a> {
        member: &'a str,
        pending: u64,
    }
    match pending {
        None => result
            .unknown("no tx_pending record: cannot tell whether every transaction was resolved"),
        Some(members) => {
            for (member, count) in members {
                match count {
                    Some(0) => {}
                    Some(n) => result.violation(
                        "unresolved",
                        Unresolved {
                            member,
                            pending: *n,
                        },
                    ),
                    None => result.count("members_not_reporting", 1),
                }
            }
            if !members.values().any(Option::is_some) {
                result.unknown("no member reported its pending transactions");
            }
        }
    }
    if !has_drain {
        result.unknown("no final drain: acknowledged commits cannot be found");
    }
    result
}

/// Hand-made transaction histories (checker tests).
#[cfg(test)]
pub(crate) mod build {
    use std::collections::BTreeMap;

    use crate::history::build::Builder;
    use crate::history::{Call, OpType, TransactionOp, TxCheckOp, TxDecision, TxPendingOp};

    /// A transaction of `value` whose local transaction decided `local`, completed with
    /// `outcome`; `ended`: the broker acknowledged its end.
    pub fn transaction(
        b: &mut Builder,
        value: &str,
        local: TxDecision,
        outcome: OpType,
        ended: bool,
    ) {
        let op = TransactionOp {
            topic: "t".into(),
            value: value.into(),
            local,
            ended: false,
        };
        b.push("t1", OpType::Invoke, Call::Transaction(op.clone()));
        b.push(
            "t1",
            outcome,
            Call::Transaction(TransactionOp { ended, ..op }),
        );
    }

    /// A producer answered a check of `value` with `answer`.
    pub fn answer(b: &mut Builder, value: &str, answer: TxDecision) {
        b.push(
            "t2",
            OpType::Info,
            Call::TxCheck(TxCheckOp {
                value: value.into(),
                answer,
                by: "t2".into(),
            }),
        );
    }

    /// The members' pending transactions after the run settled.
    pub fn pending(b: &mut Builder, members: &[(&str, Option<u64>)]) {
        b.push(
            "harness",
            OpType::Info,
            Call::TxPending(TxPendingOp {
                members: members
                    .iter()
                    .map(|(m, n)| (m.to_string(), *n))
                    .collect::<BTreeMap<_, _>>(),
            }),
        );
    }
}

/// A history whose only anomaly is a rolled-back transaction's value read by the drain.
#[cfg(test)]
pub(crate) fn anomaly_history() -> History {
    use build::*;
    let mut b = crate::history::build::Builder::new();
    transaction(&mut b, "t1-0", TxDecision::Commit, OpType::Ok, true);
    transaction(&mut b, "t1-1", TxDecision::Rollback, OpType::Ok, true);
    pending(&mut b, &[("n1", Some(0)), ("n2", Some(0))]);
    b.drain(Some("n1"), 0, &[(0, "t1-0"), (1, "t1-1")]).build()
}

#[cfg(test)]
mod tests {
    use super::build::*;
    use super::*;
    use crate::history::OpType::{Fail, Info, Ok};
    use crate::history::build::Builder;
    use TxDecision::{Commit, Rollback, Unknown};

    /// Every kind of transaction the workload makes, each resolved as decided: an acknowledged
    /// commit and rollback; a commit whose END was lost, committed by a check; transactions
    /// left unknown by a producer that crashed, answered commit, rollback, or never (then
    /// discarded after the last check); a half message that was never stored.
    fn clean() -> Builder {
        let mut b = Builder::new();
        transaction(&mut b, "t1-0", Commit, Ok, true);
        transaction(&mut b, "t1-1", Rollback, Ok, true);
        transaction(&mut b, "t1-2", Commit, Ok, false);
        answer(&mut b, "t1-2", Commit);
        transaction(&mut b, "t1-3", Unknown, Ok, false);
        answer(&mut b, "t1-3", Unknown);
        answer(&mut b, "t1-3", Commit);
        answer(&mut b, "t1-3", Commit);
        transaction(&mut b, "t1-4", Unknown, Ok, false);
        answer(&mut b, "t1-4", Rollback);
        transaction(&mut b, "t1-5", Unknown, Ok, false);
        answer(&mut b, "t1-5", Unknown);
        answer(&mut b, "t1-5", Unknown);
        transaction(&mut b, "t1-6", Commit, Fail, false);
        // A half message of unknown fate whose checks answered commit, but whose answers
        // never reached the broker: discarded, never read. Allowed.
        transaction(&mut b, "t1-7", Commit, Info, false);
        answer(&mut b, "t1-7", Commit);
        pending(&mut b, &[("n1", Some(0)), ("n2", Some(0)), ("n3", None)]);
        b.drain(Some("n1"), 0, &[(0, "t1-0"), (1, "t1-2"), (2, "t1-3")])
            .drain(None, 0, &[(0, "t1-0"), (1, "t1-2"), (2, "t1-3")]);
        b
    }

    #[test]
    fn transactions_resolved_as_decided_pass() {
        let r = check(&clean().build());
        assert_eq!(r.verdict, Verdict::Pass, "{r:?}");
        assert_eq!(r.get("transactions"), 8);
        assert_eq!(r.get("committed_acked"), 1);
        assert_eq!(r.get("rolled_back_acked"), 1);
        assert_eq!(r.get("end_not_acked"), 1);
        assert_eq!(r.get("left_unknown"), 3);
        assert_eq!(r.get("left_unknown_then_commit_answered"), 1);
        assert_eq!(r.get("left_unknown_then_rollback_answered"), 1);
        assert_eq!(r.get("left_unknown_never_answered"), 1);
        assert_eq!(r.get("visible"), 3);
        assert_eq!(r.get("members_not_reporting"), 1);
    }

    #[test]
    fn a_history_without_transactions_skips() {
        let h = Builder::new().send("c1", "c1-0", Ok, Some((0, 0))).build();
        assert_eq!(check(&h).verdict, Verdict::Skipped);
    }

    #[test]
    fn a_rolled_back_value_read_fails() {
        let r = check(&anomaly_history());
        assert_eq!(r.verdict, Verdict::Fail);
        assert_eq!(r.get("rolled_back_read"), 1);
        assert_eq!(r.examples[0]["value"], "t1-1");
    }

    /// Each broken promise trips its own count.
    #[test]
    fn every_violation_is_caught() {
        // A never-answered transaction delivered anyway.
        let mut b = clean();
        b.drain(Some("n2"), 0, &[(0, "t1-5")]);
        assert_eq!(check(&b.build()).get("undecided_read"), 1);
        // A half message that was never stored delivered anyway.
        let mut b = clean();
        b.drain(Some("n2"), 0, &[(0, "t1-6")]);
        assert_eq!(check(&b.build()).get("undecided_read"), 1);
        // A commit applied twice.
        let mut b = clean();
        b.drain(Some("n2"), 1, &[(0, "t1-3")]);
        let r = check(&b.build());
        assert_eq!(r.get("visible_twice"), 1);
        assert_eq!(r.verdict, Verdict::Fail);
        // An acknowledged commit read nowhere.
        let mut b = Builder::new();
        transaction(&mut b, "t1-0", Commit, Ok, true);
        pending(&mut b, &[("n1", Some(0))]);
        b.drain(Some("n1"), 0, &[]);
        assert_eq!(check(&b.build()).get("lost_commit"), 1);
        // A transaction still pending after the run settled.
        let mut b = Builder::new();
        transaction(&mut b, "t1-0", Unknown, Ok, false);
        pending(&mut b, &[("n1", Some(1)), ("n2", Some(0))]);
        b.drain(Some("n1"), 0, &[]);
        let r = check(&b.build());
        assert_eq!(r.get("unresolved"), 1);
        assert_eq!(r.examples[0]["member"], "n1");
        // Commit and rollback both decided.
        let mut b = clean();
        answer(&mut b, "t1-0", Rollback);
        assert_eq!(check(&b.build()).get("conflicting_decisions"), 1);
    }

    /// Without a pending record or a drain the checker cannot prove resolution: unknown.
    #[test]
    fn missing_evidence_is_unknown_not_pass() {
        let mut b = Builder::new();
        transaction(&mut b, "t1-0", Commit, Ok, true);
        b.drain(Some("n1"), 0, &[(0, "t1-0")]);
        assert_eq!(check(&b.build()).verdict, Verdict::Unknown);
        let mut b = Builder::new();
        transaction(&mut b, "t1-0", Commit, Ok, true);
        pending(&mut b, &[("n1", Some(0))]);
        assert_eq!(check(&b.build()).verdict, Verdict::Unknown);
    }
}
