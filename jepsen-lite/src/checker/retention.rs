//! Retention: the queue minimums a history observed, and whether a run that exists to exercise
//! retention did.
//!
//! Retention deletes whole log segments and moves every queue's minimum offset up through Raft
//! (offsets never shift; a reader below the minimum is moved up to it). A queue's *floor* is the
//! highest minimum any `ok` poll or drain reported for it ([`floors`]). A message missing at an
//! offset below its queue's floor is *expired*: `lost_write`, `unseen` and `poll_order` count
//! it under `expired` (`member_expired`, `skipped_expired`) instead of as a violation. At or
//! above the floor everything keeps its meaning. Without retention every floor is 0 and nothing
//! changes.
//!
//! The verdict: `skipped` unless the run's settings ask for retention (`"expect_retention":
//! true`, which the `retention` scenario sets). Then the run must show that it did what it
//! exists for, or it proves nothing (verdict unknown, exit status 3):
//! - `queues_min_advanced`: some queue's floor is above 0;
//! - `replaced_caught_up` (of `replaced_members`; `replacements` counts the windows): a member
//!   was replaced (a `membership` fault window whose start and stop, or the final heal-all,
//!   completed `ok`: removed and stopped, then a fresh member with a new Raft id and an empty
//!   data directory added in its place) and caught up: after it came back, its drains read
//!   every drained queue to the highest offset any drain of that queue reached (or its minimum
//!   is above that offset: all of it expired there).
//!
//! Needs: `ok` polls and drains (minimum offsets, messages), `nemesis` completions, the run's
//! settings.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use super::{CheckResult, Class, Verdict};
use crate::history::{Call, History, NemesisPhase, OpType, QueueRef};
use crate::nemesis::Fault;

pub const NAME: &str = "retention";
/// The run setting (in the `run` start event) that asks for this checker's judgement.
pub const EXPECT_SETTING: &str = "expect_retention";

/// Per queue, the highest minimum offset any `ok` poll or drain reported (queues with no report
/// are absent: their floor is 0).
pub fn floors(history: &History) -> HashMap<QueueRef, u64> {
    let mut out: HashMap<QueueRef, u64> = HashMap::new();
    let mut raise = |queue: QueueRef, min: u64| {
        let floor = out.entry(queue).or_insert(min);
        *floor = (*floor).max(min);
    };
    for op in history.ops.iter().filter(|op| op.kind == OpType::Ok) {
        match &op.call {
            Call::Poll(poll) => {
                for m in &poll.min_offsets {
                    raise(m.queue_ref(), m.min_offset);
                }
            }
            Call::Drain(drain) => {
                if let Some(min) = drain.min_offset {
                    raise(drain.queue_ref(), min);
                }
            }
            _ => {}
        }
    }
    out
}

/// The floor of `queue` (0 when no answer reported a minimum).
pub fn floor_of(floors: &HashMap<QueueRef, u64>, queue: &QueueRef) -> u64 {
    floors.get(queue).copied().unwrap_or(0)
}

/// Members replaced by a membership fault, with the history index from which the fresh member
/// runs: windows whose start completed `ok` and whose stop (or the final heal-all) did too.
fn replaced_members(history: &History) -> Vec<(String, u64)> {
    let mut removed: BTreeMap<u64, Vec<String>> = BTreeMap::new();
    let mut replaced = Vec::new();
    for op in history.ops.iter().filter(|op| op.kind != OpType::Invoke) {
        let Call::Nemesis(n) = &op.call else {
            continue;
        };
        match (&n.fault, n.phase, op.kind) {
            (Fault::Membership { .. }, NemesisPhase::Start, OpType::Ok) => {
                removed.insert(n.window, n.targets.clone());
            }
            (Fault::Membership { .. }, NemesisPhase::Stop, kind) => {
                if let Some(targets) = removed.remove(&n.window)
                    && kind == OpType::Ok
                {
                    replaced.extend(targets.into_iter().map(|m| (m, op.index)));
                }
            }
            (Fault::HealAll, NemesisPhase::Stop, kind) => {
                let undone = std::mem::take(&mut removed);
                if kind == OpType::Ok {
                    replaced.extend(
                        undone
                            .into_values()
                            .flatten()
                            .map(|member| (member, op.index)),
                    );
                }
            }
            _ => {}
        }
    }
    replaced
}

/// How far drains got in one queue.
#[derive(Default)]
struct Reach {
    highest: Option<u64>,
    min: Option<u64>,
}

impl Reach {
    fn add(&mut self, highest: Option<u64>, min: Option<u64>) {
        self.highest = self.highest.max(highest);
        self.min = self.min.max(min);
    }
}

/// Whether `member`'s drains after history index `since` read every queue any drain read then
/// as far as the furthest drain of it did.
fn caught_up(history: &History, member: &str, since: u64) -> bool {
    let mut everyone: HashMap<QueueRef, Reach> = HashMap::new();
    let mut mine: HashMap<QueueRef, Reach> = HashMap::new();
    for op in history.ops.iter().filter(|op| op.index > since) {
        let (OpType::Ok, Call::Drain(d)) = (op.kind, &op.call) else {
            continue;
        };
        let highest = d.msgs.iter().map(|m| m.offset).max();
        everyone
            .entry(d.queue_ref())
            .or_default()
            .add(highest, d.min_offset);
        if d.member.as_deref() == Some(member) {
            mine.entry(d.queue_ref())
                .or_default()
                .add(highest, d.min_offset);
        }
    }
    !mine.is_empty()
        && everyone.iter().all(|(queue, all)| {
            mine.get(queue).is_some_and(|m| match all.highest {
                None => true,
                Some(top) => m.highest >= Some(top) || m.min > Some(top),
            })
        })
}

pub fn check(history: &History) -> CheckResult {
    let mut result = CheckResult::new(NAME, Class::Safety);
    let floors = floors(history);
    let advanced = floors.values().filter(|floor| **floor > 0).count() as u64;
    result.count("queues_min_advanced", advanced);
    result.count(
        "highest_min_offset",
        floors.values().copied().max().unwrap_or(0),
    );
    let replaced = replaced_members(history);
    let members: BTreeSet<&str> = replaced.iter().map(|(m, _)| m.as_str()).collect();
    result.count("replacements", replaced.len() as u64);
    result.count("replaced_members", members.len() as u64);
    let caught_up: BTreeSet<&str> = replaced
        .iter()
        .filter(|(member, since)| caught_up(history, member, *since))
        .map(|(member, _)| member.as_str())
        .collect();
    result.count("replaced_caught_up", caught_up.len() as u64);
    let expected = history
        .run_start()
        .and_then(|run| run.settings.get(EXPECT_SETTING))
        .and_then(serde_json::Value::as_bool)
        .unwrap_or(false);
    if !expected {
        result.verdict = Verdict::Skipped;
        result.note = Some(format!("the run does not set {EXPECT_SETTING}"));
        return result;
    }
    let mut missing = Vec::new();
    if advanced == 0 {
        missing.push("no queue's minimum offset advanced".to_string());
    }
    if members.is_empty() {
        missing.push("no member was replaced".to_string());
    } else if caught_up.is_empty() {
        missing.push(format!(
            "no replaced member ({members:?}) drained every queue to its end"
        ));
    }
    if !missing.is_empty() {
        result.unknown(format!(
            "the run did not exercise retention: {}",
            missing.join("; ")
        ));
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::OpType::*;
    use crate::history::build::Builder;
    use crate::history::{HARNESS_PROCESS, RunOp};
    use crate::nemesis::MembershipChange;

    fn remove_follower() -> Fault {
        Fault::Membership {
            change: MembershipChange::RemoveFollower,
        }
    }

    /// A run asking for retention: n1 replaced (window 1), then drains of queue 0.
    fn expecting(n1_drain: &[(u64, &str)], client_min: Option<u64>) -> History {
        let mut b = Builder::new();
        b.push(
            HARNESS_PROCESS,
            Info,
            Call::Run(RunOp {
                phase: NemesisPhase::Start,
                seed: Some(1),
                settings: serde_json::json!({ EXPECT_SETTING: true }),
            }),
        )
        .send("p", "p-0", Ok, Some((0, 0)))
        .send("p", "p-1", Ok, Some((0, 1)))
        .send("p", "p-2", Ok, Some((0, 2)))
        .nemesis(1, NemesisPhase::Start, remove_follower(), Ok)
        .nemesis(1, NemesisPhase::Stop, remove_follower(), Ok)
        .drain_with_min(None, 0, client_min, &[(1, "p-1"), (2, "p-2")])
        .drain_with_min(Some("n1"), 0, client_min, n1_drain);
        b.build()
    }

    #[test]
    fn floors_are_the_highest_minimum_polls_and_drains_reported() {
        let h = Builder::new()
            .poll_with_mins("c1", &[], &[(0, 3)])
            .poll_with_mins("c1", &[(0, 7, "x")], &[(0, 5)])
            .drain_with_min(Some("n2"), 0, Some(4), &[])
            .drain_with_min(Some("n2"), 1, Some(2), &[])
            .build();
        let f = floors(&h);
        let q = |queue| QueueRef {
            topic: "t".into(),
            queue,
        };
        assert_eq!(floor_of(&f, &q(0)), 5);
        assert_eq!(floor_of(&f, &q(1)), 2);
        assert_eq!(floor_of(&f, &q(2)), 0);
    }

    #[test]
    fn a_run_that_does_not_ask_is_skipped_with_counts() {
        let h = Builder::new()
            .drain_with_min(None, 0, Some(3), &[(3, "x")])
            .build();
        let r = check(&h);
        assert_eq!(r.verdict, Verdict::Skipped);
        assert_eq!(r.get("queues_min_advanced"), 1);
    }

    #[test]
    fn advanced_minimums_and_a_caught_up_replacement_pass() {
        let r = check(&expecting(&[(1, "p-1"), (2, "p-2")], Some(1)));
        assert_eq!(r.verdict, Verdict::Pass, "{r:?}");
        assert_eq!(r.get("queues_min_advanced"), 1);
        assert_eq!(r.get("replacements"), 1);
        assert_eq!(r.get("replaced_caught_up"), 1);
    }

    #[test]
    fn a_replacement_that_lags_or_minimums_that_never_moved_prove_nothing() {
        // n1 stopped short of offset 2.
        let r = check(&expecting(&[(1, "p-1")], Some(1)));
        assert_eq!(r.verdict, Verdict::Unknown, "{r:?}");
        assert_eq!(r.get("replaced_caught_up"), 0);
        assert!(r.note.as_deref().unwrap().contains("drained every queue"));
        // Caught up, but retention never moved a minimum.
        let r = check(&expecting(&[(0, "p-0"), (1, "p-1"), (2, "p-2")], Some(0)));
        assert_eq!(r.verdict, Verdict::Unknown, "{r:?}");
        assert!(r.note.as_deref().unwrap().contains("minimum"));
    }

    #[test]
    fn a_removal_whose_re_add_failed_is_no_replacement() {
        let h = Builder::new()
            .nemesis(1, NemesisPhase::Start, remove_follower(), Ok)
            .nemesis(1, NemesisPhase::Stop, remove_follower(), Info)
            .nemesis(2, NemesisPhase::Start, remove_follower(), Ok)
            // Undone by the final heal-all.
            .nemesis(3, NemesisPhase::Stop, Fault::HealAll, Ok)
            .build();
        assert_eq!(replaced_members(&h), vec![("n1".to_string(), 7)]);
    }
}
