//! Availability during each fault window and recovery time after the final heal.
//!
//! A fault window runs from the completion of a nemesis `start` (installed or indeterminate) to
//! the completion of the `stop` with the same window number (or the end of the history). A send
//! belongs to the window its invoke falls in; availability is the fraction of those sends that
//! were acknowledged. Polls are counted the same way. Sends outside every window give the
//! baseline. Recovery is measured from the completion of the last nemesis `stop` (the final
//! heal) to the first `ok` send and the first `ok` poll completed after it.
//!
//! This is a liveness report: it fails only when nothing was acknowledged after the final heal.
//!
//! Needs: `nemesis` invokes/completions (window, phase, fault, targets), `send` and `poll`
//! invokes and completions with `mono_ns`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{CheckResult, Class, Verdict};
use crate::history::{Call, History, NemesisPhase, OpType};

pub const NAME: &str = "availability";

const NS_PER_MS: u64 = 1_000_000;

/// Counts of one kind of operation by outcome.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Outcomes {
    pub invoked: u64,
    pub ok: u64,
    pub fail: u64,
    /// Unknown outcome, including never completed.
    pub info: u64,
}

impl Outcomes {
    fn add(&mut self, done: Option<OpType>) {
        self.invoked += 1;
        match done {
            Some(OpType::Ok) => self.ok += 1,
            Some(OpType::Fail) => self.fail += 1,
            _ => self.info += 1,
        }
    }

    /// Acknowledged / invoked; `None` when nothing was invoked.
    pub fn fraction_ok(&self) -> Option<f64> {
        (self.invoked > 0).then(|| self.ok as f64 / self.invoked as f64)
    }
}

/// One fault window.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Window {
    pub window: u64,
    pub fault: String,
    pub targets: Vec<String>,
    /// `installed`, `skipped` or `indeterminate` (from the start's completion type).
    pub outcome: String,
    /// Milliseconds since the run started; absent for a skipped fault.
    pub start_ms: Option<u64>,
    /// Absent when the fault was never stopped.
    pub end_ms: Option<u64>,
    pub sends: Outcomes,
    pub polls: Outcomes,
    pub availability: Option<f64>,
}

/// Time from the final heal to the first successes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Recovery {
    pub heal_ms: u64,
    /// `None`: no send was acknowledged after the heal.
    pub first_ok_send_after_ms: Option<u64>,
    pub first_ok_poll_after_ms: Option<u64>,
}

/// Everything the availability analysis found.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Report {
    pub windows: Vec<Window>,
    /// Sends and polls invoked outside every fault window.
    pub baseline_sends: Outcomes,
    pub baseline_polls: Outcomes,
    pub baseline_availability: Option<f64>,
    pub recovery: Option<Recovery>,
}

fn outcome_name(kind: Option<OpType>) -> &'static str {
    match kind {
        Some(OpType::Ok) => "installed",
        Some(OpType::Fail) => "skipped",
        _ => "indeterminate",
    }
}

/// Builds the report.
pub fn analyze(history: &History) -> Report {
    let mut report = Report::default();
    let end_ns = history.ops.last().map_or(0, |op| op.mono_ns);
    // window -> (position in report.windows, start ns, end ns)
    let mut spans: BTreeMap<u64, (usize, Option<u64>, Option<u64>)> = BTreeMap::new();
    let mut final_heal_ns: Option<(u64, u64)> = None; // (mono_ns, index)
    for (_, invoke, done) in history.pairs() {
        let Call::Nemesis(n) = &invoke.call else {
            continue;
        };
        let kind = done.map(|d| d.kind);
        let at_ns = done.map(|d| d.mono_ns);
        match n.phase {
            NemesisPhase::Start => {
                let installed = kind != Some(OpType::Fail);
                let targets = match done.map(|d| &d.call) {
                    Some(Call::Nemesis(c)) if !c.targets.is_empty() => c.targets.clone(),
                    _ => n.targets.clone(),
                };
                report.windows.push(Window {
                    window: n.window,
                    fault: n.fault.to_string(),
                    targets,
                    outcome: outcome_name(kind).into(),
                    start_ms: None,
                    end_ms: None,
                    sends: Outcomes::default(),
                    polls: Outcomes::default(),
                    availability: None,
                });
                let start = if installed {
                    Some(at_ns.unwrap_or(invoke.mono_ns))
                } else {
                    None
                };
                spans.insert(n.window, (report.windows.len() - 1, start, None));
            }
            NemesisPhase::Stop => {
                if let Some(d) = done.filter(|d| d.kind != OpType::Fail) {
                    if final_heal_ns.is_none_or(|(_, idx)| d.index > idx) {
                        final_heal_ns = Some((d.mono_ns, d.index));
                    }
                    if let Some(span) = spans.get_mut(&n.window) {
                        span.2 = Some(d.mono_ns);
                    }
                }
            }
        }
    }
    for (pos, start, end) in spans.values() {
        let w = &mut report.windows[*pos];
        w.start_ms = start.map(|s| s / NS_PER_MS);
        w.end_ms = end.map(|e| e / NS_PER_MS);
    }
    let in_window = |t: u64| -> Option<usize> {
        spans.values().find_map(|(pos, start, end)| {
            let start = (*start)?;
            (t >= start && t < end.unwrap_or(end_ns.saturating_add(1))).then_some(*pos)
        })
    };
    for (_, invoke, done) in history.pairs() {
        let is_send = matches!(invoke.call, Call::Send(_));
        let is_poll = matches!(invoke.call, Call::Poll(_));
        if !is_send && !is_poll {
            continue;
        }
        let kind = done.map(|d| d.kind);
        let bucket = match in_window(invoke.mono_ns) {
            Some(pos) => {
                let w = &mut report.windows[pos];
                if is_send { &mut w.sends } else { &mut w.polls }
            }
            None => {
                if is_send {
                    &mut report.baseline_sends
                } else {
                    &mut report.baseline_polls
                }
            }
        };
        bucket.add(kind);
    }
    for w in &mut report.windows {
        w.availability = w.sends.fraction_ok();
    }
    report.baseline_availability = report.baseline_sends.fraction_ok();
    if let Some((heal_ns, heal_index)) = final_heal_ns {
        let first_after = |want_send: bool| {
            history
                .ops
                .iter()
                .filter(|op| op.index > heal_index && op.kind == OpType::Ok)
                .find(|op| match op.call {
                    Call::Send(_) => want_send,
                    Call::Poll(_) => !want_send,
                    _ => false,
                })
                .map(|op| op.mono_ns.saturating_sub(heal_ns) / NS_PER_MS)
        };
        report.recovery = Some(Recovery {
            heal_ms: heal_ns / NS_PER_MS,
            first_ok_send_after_ms: first_after(true),
            first_ok_poll_after_ms: first_after(false),
        });
    }
    report
}

/// The checker view of the report.
pub fn check(report: &Report) -> CheckResult {
    let mut result = CheckResult::new(NAME, Class::Liveness);
    if report.windows.is_empty() && report.recovery.is_none() {
        result.verdict = Verdict::Skipped;
        result.note = Some("no nemesis events in the history".into());
        return result;
    }
    result.count("windows", report.windows.len() as u64);
    for w in &report.windows {
        match w.outcome.as_str() {
            "skipped" => result.count("skipped_faults", 1),
            "indeterminate" => result.count("indeterminate_faults", 1),
            _ => {}
        }
        result.count("sends_in_windows", w.sends.invoked);
        result.count("sends_ok_in_windows", w.sends.ok);
    }
    if let Some(rec) = &report.recovery
        && rec.first_ok_send_after_ms.is_none()
    {
        result.violation("not_recovered", rec);
    }
    result
}

/// A history whose only anomaly is a cluster that never acknowledges a send after the heal.
#[cfg(test)]
pub(crate) fn anomaly_history() -> History {
    use crate::history::OpType::*;
    use crate::nemesis::{Fault, KillTarget};
    let all = Fault::Kill {
        target: KillTarget::All,
    };
    crate::history::build::Builder::new()
        .send("c1", "c1-0", Ok, Some((0, 0)))
        .nemesis(1, NemesisPhase::Start, all.clone(), Ok)
        .send("c1", "c1-1", Info, None)
        .nemesis(1, NemesisPhase::Stop, all, Ok)
        .send("c1", "c1-2", Info, None)
        .build()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::OpType::*;
    use crate::history::build::Builder;
    use crate::nemesis::{Fault, PartitionShape};

    fn iso() -> Fault {
        Fault::Partition {
            shape: PartitionShape::IsolateLeader,
        }
    }

    #[test]
    fn windows_count_sends_by_invoke_time_and_recovery_is_measured_from_the_last_heal() {
        let h = Builder::new()
            .at_ms(0)
            .send("c1", "c1-0", Ok, Some((0, 0))) // baseline, 0-1 ms
            .at_ms(100)
            .nemesis(1, NemesisPhase::Start, iso(), Ok) // window from 101 ms
            .at_ms(200)
            .send("c1", "c1-1", Ok, Some((0, 1)))
            .send("c1", "c1-2", Info, None)
            .send("c1", "c1-3", Fail, None)
            .poll("c2", &[])
            .at_ms(300)
            .nemesis(1, NemesisPhase::Stop, iso(), Ok) // healed at 301 ms
            .at_ms(350)
            .send("c1", "c1-4", Fail, None)
            .at_ms(1300)
            .poll("c2", &[(0, 0, "c1-0")]) // ok at 1301 ms
            .at_ms(2300)
            .send("c1", "c1-5", Ok, Some((0, 2))) // ok at 2301 ms
            // A skipped fault opens no window.
            .nemesis(2, NemesisPhase::Start, iso(), Fail)
            .build();
        let report = analyze(&h);
        assert_eq!(report.windows.len(), 2);
        let w = &report.windows[0];
        assert_eq!((w.start_ms, w.end_ms), (Some(101), Some(301)));
        assert_eq!(w.outcome, "installed");
        assert_eq!(
            w.sends,
            Outcomes {
                invoked: 3,
                ok: 1,
                fail: 1,
                info: 1
            }
        );
        assert_eq!(w.polls.invoked, 1);
        assert!((w.availability.unwrap() - 1.0 / 3.0).abs() < 1e-9);
        assert_eq!(report.windows[1].outcome, "skipped");
        assert_eq!(report.windows[1].start_ms, None);
        assert_eq!(report.baseline_sends.invoked, 3);
        assert_eq!(report.baseline_sends.ok, 2);
        let rec = report.recovery.clone().unwrap();
        assert_eq!(rec.heal_ms, 301);
        assert_eq!(rec.first_ok_poll_after_ms, Some(1000));
        assert_eq!(rec.first_ok_send_after_ms, Some(2000));
        assert_eq!(check(&report).verdict, Verdict::Pass);
    }

    #[test]
    fn never_recovering_fails_as_liveness() {
        let r = check(&analyze(&anomaly_history()));
        assert_eq!(r.verdict, Verdict::Fail);
        assert_eq!(r.class, Class::Liveness);
        assert_eq!(r.get("not_recovered"), 1);
    }

    #[test]
    fn no_nemesis_means_skipped() {
        let h = Builder::new().send("c1", "c1-0", Ok, Some((0, 0))).build();
        assert_eq!(check(&analyze(&h)).verdict, Verdict::Skipped);
    }
}
