//! POP consumption (the `workload::pop` workload): what consumers were handed out and acked,
//! against what was sent. The rules:
//!
//! - `redelivered_after_ack`: a pop invoked after an ack of a value was confirmed (its `ok`
//!   completion) handed that value out again. An ack is final: the delivery state lives in the
//!   Raft state machine, so no leader change may bring an acked message back.
//! - `unexpected_value`: a pop handed out a value no send of the topic carried.
//! - `unresolved`: after the final drain (which ends once the group had nothing to hand out
//!   for longer than an invisible time), an acknowledged send of the topic was neither acked
//!   (an `ok` ack, or one with an unknown outcome) nor found in the group's dead-letter topic:
//!   a message the group lost track of.
//!
//! A history without pops skips this checker; one whose drain did not finish (or could not read
//! the DLQ) cannot prove the last rule and is `unknown`.

use std::collections::{BTreeMap, BTreeSet, HashSet};

use serde::Serialize;

use super::{CheckResult, Class, Verdict};
use crate::history::{Call, History, OpType, PopDlqOp};

pub const NAME: &str = "pop";

/// One value of the POP topic, as the history tells it.
#[derive(Debug, Default)]
struct Value {
    /// When the first confirmed ack of it completed (monotonic ns) and its history index.
    acked: Option<(u64, u64)>,
    /// An ack whose outcome is unknown was sent.
    maybe_acked: bool,
    /// Every pop that handed it out: invoke time (monotonic ns), invoke index, attempt.
    popped: Vec<(u64, u64, u32)>,
}

#[derive(Serialize)]
struct Redelivered<'a> {
    value: &'a str,
    ack_index: u64,
    pop_index: u64,
    attempt: u32,
}

#[derive(Serialize)]
struct Unresolved<'a> {
    value: &'a str,
    deliveries: usize,
    last_attempt: u32,
}

pub fn check(history: &History) -> CheckResult {
    let mut result = CheckResult::new(NAME, Class::Safety);
    let mut values: BTreeMap<&str, Value> = BTreeMap::new();
    let mut topics: BTreeSet<&str> = BTreeSet::new();
    for (_, invoke, done) in history.pairs() {
        let Some(done) = done else { continue };
        match (&done.call, done.kind) {
            (Call::Pop(pop), OpType::Ok) => {
                topics.insert(pop.topic.as_str());
                result.count("pops", 1);
                for message in &pop.messages {
                    result.count("handed_out", 1);
                    if message.attempt > 1 {
                        result.count("handed_out_again", 1);
                    }
                    values
                        .entry(message.value.as_str())
                        .or_default()
                        .popped
                        .push((invoke.mono_ns, invoke.index, message.attempt));
                }
            }
            (Call::PopAck(ack), OpType::Ok) => {
                result.count("acks_confirmed", 1);
                let value = values.entry(ack.value.as_str()).or_default();
                if value.acked.is_none_or(|(at, _)| done.mono_ns < at) {
                    value.acked = Some((done.mono_ns, done.index));
                }
            }
            (Call::PopAck(ack), OpType::Info) => {
                result.count("acks_unknown", 1);
                values.entry(ack.value.as_str()).or_default().maybe_acked = true;
            }
            (Call::PopAck(_), OpType::Fail) => result.count("acks_refused", 1),
            _ => {}
        }
    }
    if topics.is_empty() {
        result.verdict = Verdict::Skipped;
        result.note = Some("no pops in this history".into());
        return result;
    }

    // What was sent to the POP topic: every value (for unexpected ones) and the acknowledged.
    let mut sent: HashSet<&str> = HashSet::new();
    let mut acknowledged: Vec<&str> = Vec::new();
    for (_, invoke, done) in history.pairs() {
        let Call::Send(send) = &invoke.call else {
            continue;
        };
        if !topics.contains(send.topic.as_str()) {
            continue;
        }
        sent.insert(send.value.as_str());
        if done.is_some_and(|done| done.kind == OpType::Ok) {
            acknowledged.push(send.value.as_str());
        }
    }
    result.count("sends_acknowledged", acknowledged.len() as u64);

    for (value, state) in &values {
        if !state.popped.is_empty() && !sent.contains(value) {
            result.violation("unexpected_value", value);
        }
        let Some((acked_at, ack_index)) = state.acked else {
            continue;
        };
        for &(invoked_at, pop_index, attempt) in &state.popped {
            if invoked_at > acked_at {
                result.violation(
                    "redelivered_after_ack",
                    Redelivered {
                        value,
                        ack_index,
                        pop_index,
                        attempt,
                    },
                );
            }
        }
    }

    let dlq: Option<&PopDlqOp> = history.ops.iter().rev().find_map(|op| match &op.call {
        Call::PopDlq(dlq) => Some(dlq),
        _ => None,
    });
    let Some(dlq) = dlq else {
        result.unknown("no pop_dlq record: the final POP drain did not run");
        return result;
    };
    if let Some(error) = &dlq.read_error {
        result.unknown(format!("the dead-letter topic could not be read: {error}"));
        return result;
    }
    if !dlq.drained {
        result.unknown("the final POP drain reached its time limit with messages still coming");
        return result;
    }
    let dead: HashSet<&str> = dlq.values.iter().map(String::as_str).collect();
    result.count("dead_lettered", dead.len() as u64);
    for value in acknowledged {
        let state = values.get(value);
        let acked = state.is_some_and(|s| s.acked.is_some() || s.maybe_acked);
        if acked {
            result.count("resolved_acked", 1);
        } else if dead.contains(value) {
            result.count("resolved_dead_lettered", 1);
        } else {
            let popped = state.map_or(&[][..], |s| s.popped.as_slice());
            result.violation(
                "unresolved",
                Unresolved {
                    value,
                    deliveries: popped.len(),
                    last_attempt: popped.iter().map(|p| p.2).max().unwrap_or(0),
                },
            );
        }
    }
    result
}

/// A history whose only anomaly is a message handed out again after its ack was confirmed.
#[cfg(test)]
pub(crate) fn anomaly_history() -> History {
    tests::history_of(vec![
        tests::send("pp-0", true),
        tests::pop("pc1", &[("pp-0", 1)]),
        tests::ack("pc1", "pp-0", OpType::Ok),
        tests::pop("pc2", &[("pp-0", 2)]),
        tests::dlq(&[], true),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::build::Builder;
    use crate::history::{PopAckOp, PopOp, PoppedMsg, SendOp};

    const TOPIC: &str = "jl-pop";

    pub(super) type Step = (&'static str, OpType, Call);

    pub(super) fn send(value: &str, ok: bool) -> Vec<Step> {
        let op = SendOp {
            topic: TOPIC.into(),
            key: None,
            queue: None,
            value: value.into(),
            offset: None,
            retried_after_unknown: false,
        };
        let done = if ok {
            let acked = SendOp {
                queue: Some(0),
                offset: Some(0),
                ..op.clone()
            };
            ("pp", OpType::Ok, Call::Send(acked))
        } else {
            ("pp", OpType::Info, Call::Send(op.clone()))
        };
        vec![("pp", OpType::Invoke, Call::Send(op)), done]
    }

    pub(super) fn pop(process: &'static str, handed: &[(&str, u32)]) -> Vec<Step> {
        let op = PopOp {
            topic: TOPIC.into(),
            group: "g".into(),
            messages: Vec::new(),
        };
        let messages = handed
            .iter()
            .map(|(value, attempt)| PoppedMsg {
                value: (*value).into(),
                queue: 0,
                offset: 0,
                attempt: *attempt,
            })
            .collect();
        vec![
            (process, OpType::Invoke, Call::Pop(op.clone())),
            (process, OpType::Ok, Call::Pop(PopOp { messages, ..op })),
        ]
    }

    pub(super) fn ack(process: &'static str, value: &str, kind: OpType) -> Vec<Step> {
        let op = PopAckOp {
            topic: TOPIC.into(),
            group: "g".into(),
            value: value.into(),
            queue: 0,
            offset: 0,
        };
        vec![
            (process, OpType::Invoke, Call::PopAck(op.clone())),
            (process, kind, Call::PopAck(op)),
        ]
    }

    pub(super) fn dlq(values: &[&str], drained: bool) -> Vec<Step> {
        let op = PopDlqOp {
            group: "g".into(),
            values: values.iter().map(|v| (*v).into()).collect(),
            read_error: None,
            drained,
        };
        vec![("pd", OpType::Info, Call::PopDlq(op))]
    }

    pub(super) fn history_of(parts: Vec<Vec<Step>>) -> History {
        let mut builder = Builder::new();
        for (process, kind, call) in parts.into_iter().flatten() {
            builder.push(process, kind, call);
        }
        builder.build()
    }

    fn run(parts: Vec<Vec<Step>>) -> CheckResult {
        check(&history_of(parts))
    }

    #[test]
    fn acked_expired_and_dead_lettered_messages_pass() {
        let result = run(vec![
            send("pp-0", true),
            send("pp-1", true),
            send("pp-2", true),
            send("pp-3", false),
            pop("pc1", &[("pp-0", 1), ("pp-1", 1)]),
            ack("pc1", "pp-0", OpType::Ok),
            // pp-1 left to expire, handed out again, acked with an unknown outcome.
            pop("pc2", &[("pp-1", 2), ("pp-2", 1)]),
            ack("pc2", "pp-1", OpType::Info),
            // A stale ack of pp-2 is refused; pp-2 ends in the DLQ.
            ack("pc1", "pp-2", OpType::Fail),
            dlq(&["pp-2"], true),
        ]);
        assert_eq!(result.verdict, Verdict::Pass, "{:?}", result.counts);
        assert_eq!(result.get("resolved_acked"), 2);
        assert_eq!(result.get("resolved_dead_lettered"), 1);
        assert_eq!(result.get("handed_out_again"), 1);
    }

    #[test]
    fn a_message_handed_out_after_a_confirmed_ack_fails() {
        let result = run(vec![
            send("pp-0", true),
            pop("pc1", &[("pp-0", 1)]),
            ack("pc1", "pp-0", OpType::Ok),
            pop("pc2", &[("pp-0", 2)]),
            ack("pc2", "pp-0", OpType::Ok),
            dlq(&[], true),
        ]);
        assert_eq!(result.verdict, Verdict::Fail);
        assert_eq!(result.get("redelivered_after_ack"), 1);
    }

    #[test]
    fn a_message_neither_acked_nor_dead_lettered_fails_and_an_unsent_one_too() {
        let result = run(vec![
            send("pp-0", true),
            send("pp-1", true),
            pop("pc1", &[("pp-0", 1), ("ghost", 1)]),
            ack("pc1", "pp-0", OpType::Ok),
            dlq(&[], true),
        ]);
        assert_eq!(result.verdict, Verdict::Fail);
        assert_eq!(result.get("unresolved"), 1);
        assert_eq!(result.get("unexpected_value"), 1);
    }

    #[test]
    fn an_unfinished_drain_is_unknown_and_no_pops_skip() {
        let result = run(vec![send("pp-0", true), pop("pc1", &[]), dlq(&[], false)]);
        assert_eq!(result.verdict, Verdict::Unknown);
        let result = run(vec![send("pp-0", true)]);
        assert_eq!(result.verdict, Verdict::Skipped);
    }
}
