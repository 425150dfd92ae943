//! Checkers: pure functions over a parsed [`History`], one file each, plus [`all`].
//!
//! Every checker returns a [`CheckResult`]: a verdict, counts, and a few examples. Safety
//! checkers decide the exit code; liveness and informational ones are reported only.
//!
//! The outcome rule holds throughout: an `info` send (timed out, connection lost after sending)
//! has an unknown outcome. Its value may appear in reads or not; neither is an anomaly. Only a
//! `fail` send is known not to have happened, and only an `ok` send is known to have happened.
//! A send that was invoked but never completed counts as `info`.
//!
//! What "observed" means: a read is a message returned by an `ok` poll or an `ok` drain. The
//! send acknowledgements (`ok` sends with queue and offset) are claims about positions too; the
//! position checkers (inconsistent offsets, duplicates, known offsets for skips) use both.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::history::{Call, History, OpType, QueueRef};
use crate::summary::Summary;

pub mod aborted_read;
pub mod availability;
pub mod commit_order;
pub mod corruption;
pub mod duplicate;
pub mod inconsistent_offsets;
pub mod lost_write;
pub mod member_logs;
pub mod poll_order;
pub mod pop;
pub mod retention;
pub mod send_order;
pub mod transactions;
pub mod unexpected;
pub mod unseen;

/// At most this many examples per checker (the counts carry the totals).
pub const MAX_EXAMPLES: usize = 8;

/// Whether a checker's failure fails the run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Class {
    /// A violation of the reliability contract: the process exits non-zero.
    Safety,
    /// Progress (availability, recovery): reported, does not change the exit code.
    Liveness,
    /// Reported only (e.g. duplicates when the run allows them).
    Info,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Pass,
    Fail,
    /// The history does not contain what the checker needs to decide (e.g. no final drain).
    Unknown,
    /// Not run (e.g. no log directory given).
    Skipped,
}

/// One checker's outcome.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CheckResult {
    pub name: String,
    pub class: Class,
    pub verdict: Verdict,
    pub counts: BTreeMap<String, u64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub examples: Vec<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

impl CheckResult {
    /// A passing result; [`Self::violation`] turns it into a failure.
    pub fn new(name: &str, class: Class) -> Self {
        CheckResult {
            name: name.into(),
            class,
            verdict: Verdict::Pass,
            counts: BTreeMap::new(),
            examples: Vec::new(),
            note: None,
        }
    }

    pub fn count(&mut self, key: &str, n: u64) {
        *self.counts.entry(key.into()).or_insert(0) += n;
    }

    /// Records one violation under `key`, keeping the example if there is room.
    pub fn violation(&mut self, key: &str, example: impl Serialize) {
        self.count(key, 1);
        self.verdict = Verdict::Fail;
        if self.examples.len() < MAX_EXAMPLES {
            let value = serde_json::to_value(example)
                .unwrap_or_else(|e| serde_json::Value::String(format!("unprintable: {e}")));
            self.examples.push(value);
        }
    }

    /// Marks the result undecided (unless it already failed), with the reason.
    pub fn unknown(&mut self, note: impl Into<String>) {
        if self.verdict != Verdict::Fail {
            self.verdict = Verdict::Unknown;
        }
        self.note = Some(note.into());
    }

    /// The count under `key` (0 if absent).
    pub fn get(&self, key: &str) -> u64 {
        self.counts.get(key).copied().unwrap_or(0)
    }

    pub fn is_safety_failure(&self) -> bool {
        self.class == Class::Safety && self.verdict == Verdict::Fail
    }
}

/// The outcome of a send, with "never completed" folded into `Info` (unknown).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SendOutcome {
    Ok,
    Fail,
    Info,
}

/// One send, as the checkers need it.
#[derive(Clone, Debug)]
pub struct SendRecord<'a> {
    /// The invoke's index in the history.
    pub index: u64,
    pub process: &'a str,
    pub value: &'a str,
    pub outcome: SendOutcome,
    /// Known for `ok` sends (from the acknowledgement); otherwise what the invoke named.
    pub queue: Option<QueueRef>,
    /// Known for `ok` sends.
    pub offset: Option<u64>,
    /// The producer retried it after an attempt with an unknown outcome (from the completion).
    pub retried_after_unknown: bool,
}

/// Every send in invoke order.
pub fn sends(history: &History) -> Vec<SendRecord<'_>> {
    history
        .pairs()
        .filter_map(|(_, invoke, done)| {
            let Call::Send(sent) = &invoke.call else {
                return None;
            };
            let (outcome, result) = match done {
                Some(done) => match (&done.kind, &done.call) {
                    (OpType::Ok, Call::Send(ack)) => (SendOutcome::Ok, ack),
                    (OpType::Fail, Call::Send(s)) => (SendOutcome::Fail, s),
                    (_, Call::Send(s)) => (SendOutcome::Info, s),
                    _ => (SendOutcome::Info, sent),
                },
                None => (SendOutcome::Info, sent),
            };
            Some(SendRecord {
                index: invoke.index,
                process: &invoke.process,
                value: &sent.value,
                outcome,
                queue: result.queue_ref().or_else(|| sent.queue_ref()),
                offset: if outcome == SendOutcome::Ok {
                    result.offset
                } else {
                    None
                },
                retried_after_unknown: result.retried_after_unknown,
            })
        })
        .collect()
}

/// Who returned a read.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "by")]
pub enum ReadSource<'a> {
    Poll { consumer: &'a str },
    Drain { member: Option<&'a str> },
}

/// One message returned by an `ok` poll or `ok` drain.
#[derive(Clone, Debug)]
pub struct Read<'a> {
    /// The completion's index in the history.
    pub index: u64,
    pub source: ReadSource<'a>,
    pub queue: QueueRef,
    pub offset: u64,
    pub value: &'a str,
}

/// Every read in history order (within an operation, in the order returned).
pub fn reads(history: &History) -> Vec<Read<'_>> {
    let mut out = Vec::new();
    for op in history.ops.iter().filter(|op| op.kind == OpType::Ok) {
        match &op.call {
            Call::Poll(poll) => {
                for msg in &poll.msgs {
                    out.push(Read {
                        index: op.index,
                        source: ReadSource::Poll {
                            consumer: &poll.consumer,
                        },
                        queue: QueueRef {
                            topic: msg.topic.clone(),
                            queue: msg.queue,
                        },
                        offset: msg.offset,
                        value: &msg.value,
                    });
                }
            }
            Call::Drain(drain) => {
                let queue = drain.queue_ref();
                for msg in &drain.msgs {
                    out.push(Read {
                        index: op.index,
                        source: ReadSource::Drain {
                            member: drain.member.as_deref(),
                        },
                        queue: queue.clone(),
                        offset: msg.offset,
                        value: &msg.value,
                    });
                }
            }
            _ => {}
        }
    }
    out
}

/// The set of values any read returned.
pub fn read_values<'a>(reads: &[Read<'a>]) -> HashSet<&'a str> {
    reads.iter().map(|r| r.value).collect()
}

/// A position claim: who said `value` is at `(queue, offset)`.
#[derive(Clone, Debug, Serialize)]
pub struct Claim<'a> {
    pub value: &'a str,
    pub index: u64,
    /// `send`, `poll` or `drain`.
    pub by: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub who: Option<&'a str>,
}

/// Every (queue, offset) claim from reads and from `ok` send acknowledgements.
pub fn position_claims<'a>(
    sends: &[SendRecord<'a>],
    reads: &[Read<'a>],
) -> Vec<(QueueRef, u64, Claim<'a>)> {
    let mut out = Vec::new();
    for s in sends.iter().filter(|s| s.outcome == SendOutcome::Ok) {
        if let (Some(q), Some(o)) = (&s.queue, s.offset) {
            out.push((
                q.clone(),
                o,
                Claim {
                    value: s.value,
                    index: s.index,
                    by: "send",
                    who: Some(s.process),
                },
            ));
        }
    }
    for r in reads {
        let (by, who) = match r.source {
            ReadSource::Poll { consumer } => ("poll", Some(consumer)),
            ReadSource::Drain { member } => ("drain", member),
        };
        out.push((
            r.queue.clone(),
            r.offset,
            Claim {
                value: r.value,
                index: r.index,
                by,
                who,
            },
        ));
    }
    out
}

/// Sends grouped by value (values should be unique; a value sent twice has two records).
pub fn sends_by_value<'a, 'b>(
    sends: &'b [SendRecord<'a>],
) -> HashMap<&'a str, Vec<&'b SendRecord<'a>>> {
    let mut out: HashMap<&'a str, Vec<&'b SendRecord<'a>>> = HashMap::new();
    for s in sends {
        out.entry(s.value).or_default().push(s);
    }
    out
}

/// What `check` and the harness pass to [`all`].
#[derive(Clone, Debug, Default)]
pub struct CheckOptions {
    /// Member log files to scan for panics and invariant errors; `None` skips that checker.
    pub logs_dir: Option<PathBuf>,
    /// Report duplicates caused by a producer's retry after an unknown outcome without failing
    /// the run (without a broker dedup window such a retry may legitimately store a value
    /// twice). A duplicate of a value that was never retried fails the run regardless.
    pub allow_duplicates: bool,
}

/// Runs every checker and builds the summary.
pub fn all(history: &History, options: &CheckOptions) -> Summary {
    let mut results = vec![
        lost_write::check(history),
        unseen::check(history),
        inconsistent_offsets::check(history),
        duplicate::check(history),
        unexpected::check(history),
        aborted_read::check(history),
        poll_order::check(history),
        send_order::check(history),
        commit_order::check(history),
        retention::check(history),
        transactions::check(history),
        corruption::check(history),
        pop::check(history),
    ];
    if options.allow_duplicates
        && let Some(dup) = results.iter_mut().find(|r| r.name == duplicate::NAME)
        && dup.get(duplicate::UNRETRIED_KEY) == 0
    {
        dup.class = Class::Info;
        dup.note = Some(
            "duplicates after retries of unknown outcomes allowed for this run (--allow-duplicates)"
                .into(),
        );
    }
    results.push(match &options.logs_dir {
        Some(dir) => member_logs::check(dir),
        None => member_logs::skipped(),
    });
    let report = availability::analyze(history);
    results.push(availability::check(&report));
    Summary::new(history, results, report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::NemesisPhase;
    use crate::history::OpType::*;
    use crate::history::build::Builder;
    use crate::nemesis::{Fault, PartitionShape};
    use crate::summary::{EXIT_INCOMPLETE, EXIT_PASS, EXIT_SAFETY_VIOLATION, RunVerdict};

    /// A small but complete clean run: sends (one unknown, one failed and never read), polls
    /// across a reassignment, commits and a fetch, a fault window, a final drain on two members.
    fn clean_run() -> History {
        let iso = Fault::Partition {
            shape: PartitionShape::IsolateLeader,
        };
        Builder::new()
            .send("p1", "p1-0", Ok, Some((0, 0)))
            .send("p1", "p1-1", Ok, Some((0, 1)))
            .assign("c1", &[0], Ok)
            .poll("c1", &[(0, 0, "p1-0")])
            .commit("c1", 0, 1, Ok)
            .nemesis(1, NemesisPhase::Start, iso.clone(), Ok)
            .send("p1", "p1-2", Info, None)
            .send("p1", "p1-3", Fail, None)
            .nemesis(1, NemesisPhase::Stop, iso, Ok)
            .send("p1", "p1-4", Ok, Some((0, 3)))
            .assign("c1", &[0], Ok)
            .poll("c1", &[(0, 1, "p1-1"), (0, 2, "p1-2"), (0, 3, "p1-4")])
            .commit("c1", 0, 4, Ok)
            .fetch_offset("c2", 0, Some(4))
            .drain(
                Some("n1"),
                0,
                &[(0, "p1-0"), (1, "p1-1"), (2, "p1-2"), (3, "p1-4")],
            )
            .drain(
                Some("n2"),
                0,
                &[(0, "p1-0"), (1, "p1-1"), (2, "p1-2"), (3, "p1-4")],
            )
            .build()
    }

    #[test]
    fn a_clean_run_passes_every_checker() {
        let summary = all(&clean_run(), &CheckOptions::default());
        for c in &summary.checkers {
            // No log directory given; no retention asked for; no transactions, bit flips or
            // pops in this run.
            let expected = if c.name == member_logs::NAME
                || c.name == retention::NAME
                || c.name == transactions::NAME
                || c.name == corruption::NAME
                || c.name == pop::NAME
            {
                Verdict::Skipped
            } else {
                Verdict::Pass
            };
            assert_eq!(c.verdict, expected, "{c:?}");
        }
        assert_eq!(summary.verdict, RunVerdict::Pass);
        assert_eq!(summary.exit_code, EXIT_PASS);
        let rec = summary.availability.recovery.as_ref().unwrap();
        assert!(rec.first_ok_send_after_ms.is_some());
    }

    /// Each checker's hand-made anomaly trips that checker and no other safety checker: the
    /// histories contain exactly one anomaly each, and the checkers do not overlap.
    #[test]
    fn each_anomaly_trips_exactly_its_checker() {
        let cases = [
            (lost_write::NAME, lost_write::anomaly_history()),
            (unseen::NAME, unseen::anomaly_history()),
            (
                inconsistent_offsets::NAME,
                inconsistent_offsets::anomaly_history(),
            ),
            (duplicate::NAME, duplicate::anomaly_history()),
            (unexpected::NAME, unexpected::anomaly_history()),
            (aborted_read::NAME, aborted_read::anomaly_history()),
            (poll_order::NAME, poll_order::anomaly_history()),
            (send_order::NAME, send_order::anomaly_history()),
            (commit_order::NAME, commit_order::anomaly_history()),
            (transactions::NAME, transactions::anomaly_history()),
            (corruption::NAME, corruption::anomaly_history()),
            (pop::NAME, pop::anomaly_history()),
            (availability::NAME, availability::anomaly_history()),
        ];
        for (name, history) in cases {
            let summary = all(&history, &CheckOptions::default());
            let failed: Vec<&str> = summary
                .checkers
                .iter()
                .filter(|c| c.verdict == Verdict::Fail)
                .map(|c| c.name.as_str())
                .collect();
            assert_eq!(failed, vec![name], "anomaly of {name}");
            let expected_exit = if name == availability::NAME {
                // Liveness only; the drainless history leaves unseen undecided.
                EXIT_INCOMPLETE
            } else {
                EXIT_SAFETY_VIOLATION
            };
            assert_eq!(summary.exit_code, expected_exit, "anomaly of {name}");
        }
    }

    #[test]
    fn allowed_retry_duplicates_are_reported_without_failing_the_run() {
        let options = CheckOptions {
            allow_duplicates: true,
            ..CheckOptions::default()
        };
        let summary = all(&duplicate::retry_anomaly_history(), &options);
        let dup = summary
            .checkers
            .iter()
            .find(|c| c.name == duplicate::NAME)
            .unwrap();
        assert_eq!(dup.verdict, Verdict::Fail);
        assert_eq!(dup.class, Class::Info);
        assert_eq!(summary.exit_code, EXIT_PASS);
    }

    /// The README's example history (the workload's reference) parses, uses every function,
    /// and is clean apart from its example harness error.
    #[test]
    fn readme_example_history_is_valid_and_clean() {
        let readme = include_str!("../../README.md");
        let block = readme
            .split("```jsonl\n")
            .nth(1)
            .and_then(|rest| rest.split("```").next())
            .expect("README has a jsonl block");
        let history = crate::history::parse_history(block.as_bytes()).unwrap();
        let mut kinds: Vec<&str> = history.ops.iter().map(|op| op.call.name()).collect();
        kinds.sort();
        kinds.dedup();
        assert_eq!(
            kinds,
            [
                "assign",
                "commit",
                "drain",
                "fetch_offset",
                "harness_error",
                "nemesis",
                "poll",
                "reassign",
                "run",
                "send"
            ]
        );
        let summary = all(&history, &CheckOptions::default());
        for c in &summary.checkers {
            assert_ne!(c.verdict, Verdict::Fail, "{c:?}");
        }
        assert_eq!(summary.seed, Some(42));
        assert_eq!(summary.harness_error_count, 1);
        assert_eq!(summary.exit_code, EXIT_INCOMPLETE);
        let rec = summary.availability.recovery.unwrap();
        assert_eq!(rec.first_ok_send_after_ms, Some(99));
    }

    #[test]
    fn sends_and_reads_follow_the_outcome_rule() {
        let h = Builder::new()
            .send("p", "p-ok", Ok, Some((0, 0)))
            .send("p", "p-fail", Fail, None)
            .send("p", "p-info", Info, None)
            .push(
                "p",
                Invoke,
                Call::Send(crate::history::SendOp {
                    topic: "t".into(),
                    key: None,
                    queue: None,
                    value: "p-never".into(),
                    offset: None,
                    retried_after_unknown: false,
                }),
            )
            .build();
        let s = sends(&h);
        let outcomes: Vec<_> = s.iter().map(|s| (s.value, s.outcome, s.offset)).collect();
        assert_eq!(
            outcomes,
            vec![
                ("p-ok", SendOutcome::Ok, Some(0)),
                ("p-fail", SendOutcome::Fail, None),
                ("p-info", SendOutcome::Info, None),
                ("p-never", SendOutcome::Info, None),
            ]
        );
    }
}
