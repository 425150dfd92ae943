//! The run summary: pass/fail per checker with counts, availability per fault window, recovery
//! times, the seed and the run's settings; as JSON and as a short table for people.
//!
//! Exit codes: [`EXIT_PASS`] when every safety checker passed; [`EXIT_SAFETY_VIOLATION`] when
//! any failed; [`EXIT_INCOMPLETE`] when none failed but one could not decide (e.g. no final
//! drain) or the harness recorded a failure of its own (the run proves nothing either way).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use crate::checker::availability::Report;
use crate::checker::{CheckResult, Class, Verdict};
use crate::history::{Call, HarnessErrorOp, History, OpType};

pub const EXIT_PASS: i32 = 0;
pub const EXIT_SAFETY_VIOLATION: i32 = 1;
/// Bad arguments or an unreadable history (clap also uses 2 for usage errors).
pub const EXIT_USAGE: i32 = 2;
pub const EXIT_INCOMPLETE: i32 = 3;

/// Harness errors quoted in the summary (the count has them all).
const HARNESS_ERRORS_SHOWN: usize = 8;

/// The run's overall verdict.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunVerdict {
    Pass,
    /// A safety checker found a violation of the reliability contract.
    Fail,
    /// No violation found, but the run could not prove the contract (see the checkers' notes
    /// and `harness_errors`).
    Incomplete,
}

/// Operation counts, for scale.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct HistoryStats {
    pub ops: u64,
    pub processes: u64,
    /// Invokes per function.
    pub invokes: BTreeMap<String, u64>,
    /// Completions per function and type, e.g. `send.ok`.
    pub completions: BTreeMap<String, u64>,
    pub duration_ms: u64,
}

/// Everything a run (or `jepsen-lite check`) reports.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    pub verdict: RunVerdict,
    pub exit_code: i32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
    #[serde(default, skip_serializing_if = "serde_json::Value::is_null")]
    pub settings: serde_json::Value,
    pub history: HistoryStats,
    pub harness_error_count: u64,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub harness_errors: Vec<HarnessErrorOp>,
    /// The history ended in a partial line (the writer died): the run did not finish cleanly.
    #[serde(default)]
    pub truncated_history: bool,
    pub checkers: Vec<CheckResult>,
    pub availability: Report,
}

fn completion_name(kind: OpType) -> &'static str {
    match kind {
        OpType::Invoke => "invoke",
        OpType::Ok => "ok",
        OpType::Fail => "fail",
        OpType::Info => "info",
    }
}

impl Summary {
    pub fn new(history: &History, checkers: Vec<CheckResult>, availability: Report) -> Summary {
        let mut stats = HistoryStats {
            ops: history.len() as u64,
            ..HistoryStats::default()
        };
        let mut processes = std::collections::HashSet::new();
        let mut harness_errors = Vec::new();
        let mut harness_error_count = 0u64;
        for op in &history.ops {
            processes.insert(op.process.as_str());
            let f = op.call.name();
            if op.kind == OpType::Invoke {
                *stats.invokes.entry(f.into()).or_insert(0) += 1;
            } else {
                *stats
                    .completions
                    .entry(format!("{f}.{}", completion_name(op.kind)))
                    .or_insert(0) += 1;
            }
            if let Call::HarnessError(e) = &op.call {
                harness_error_count += 1;
                if harness_errors.len() < HARNESS_ERRORS_SHOWN {
                    harness_errors.push(e.clone());
                }
            }
        }
        stats.processes = processes.len() as u64;
        stats.duration_ms = history.ops.last().map_or(0, |op| op.mono_ns / 1_000_000);
        let run = history.run_start();
        let violated = checkers.iter().any(CheckResult::is_safety_failure);
        let undecided = checkers
            .iter()
            .any(|c| c.class == Class::Safety && c.verdict == Verdict::Unknown);
        let (verdict, exit_code) = if violated {
            (RunVerdict::Fail, EXIT_SAFETY_VIOLATION)
        } else if undecided || harness_error_count > 0 || history.truncated_tail {
            (RunVerdict::Incomplete, EXIT_INCOMPLETE)
        } else {
            (RunVerdict::Pass, EXIT_PASS)
        };
        Summary {
            verdict,
            exit_code,
            seed: run.and_then(|r| r.seed),
            settings: run.map(|r| r.settings.clone()).unwrap_or_default(),
            history: stats,
            harness_error_count,
            harness_errors,
            truncated_history: history.truncated_tail,
            checkers,
            availability,
        }
    }

    pub fn to_json_pretty(&self) -> String {
        // Serializing plain data with string keys cannot fail.
        serde_json::to_string_pretty(self).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
    }

    /// A short table for a terminal.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let verdict = match self.verdict {
            RunVerdict::Pass => "PASS",
            RunVerdict::Fail => "FAIL (safety violation)",
            RunVerdict::Incomplete => "INCOMPLETE (nothing violated, but not proven)",
        };
        let seed = self
            .seed
            .map_or_else(|| "none".to_string(), |s| s.to_string());
        let _ = writeln!(
            out,
            "jepsen-lite: {verdict}   seed {seed}   {} ops, {} processes, {:.1} s",
            self.history.ops,
            self.history.processes,
            self.history.duration_ms as f64 / 1000.0
        );
        if !self.settings.is_null() {
            let _ = writeln!(out, "settings: {}", self.settings);
        }
        if self.truncated_history {
            let _ = writeln!(
                out,
                "history ends in a partial line: the run did not finish"
            );
        }
        if self.harness_error_count > 0 {
            let _ = writeln!(out, "harness errors: {}", self.harness_error_count);
            for e in &self.harness_errors {
                let _ = writeln!(out, "  {}: {}", e.source, e.message);
            }
        }
        let _ = writeln!(
            out,
            "{:<22} {:<9} {:<8} counts",
            "checker", "class", "verdict"
        );
        for c in &self.checkers {
            let class = match c.class {
                Class::Safety => "safety",
                Class::Liveness => "liveness",
                Class::Info => "info",
            };
            let verdict = match c.verdict {
                Verdict::Pass => "pass",
                Verdict::Fail => "FAIL",
                Verdict::Unknown => "unknown",
                Verdict::Skipped => "skipped",
            };
            let counts: Vec<String> = c.counts.iter().map(|(k, v)| format!("{k}={v}")).collect();
            let _ = writeln!(
                out,
                "{:<22} {:<9} {:<8} {}",
                c.name,
                class,
                verdict,
                counts.join(" ")
            );
            if let Some(note) = &c.note {
                let _ = writeln!(out, "{:<22} note: {note}", "");
            }
            if c.verdict == Verdict::Fail
                && let Some(first) = c.examples.first()
            {
                let _ = writeln!(out, "{:<22} e.g. {first}", "");
            }
        }
        let a = &self.availability;
        if !a.windows.is_empty() {
            let _ = writeln!(
                out,
                "{:>4}  {:<30} {:<12} {:>8} {:>7} {:>6} {:>5} {:>7}",
                "win", "fault", "targets", "start_s", "dur_s", "sends", "ok", "avail"
            );
            for w in &a.windows {
                let start = w
                    .start_ms
                    .map_or_else(|| w.outcome.clone(), |s| format!("{:.1}", s as f64 / 1e3));
                let dur = match (w.start_ms, w.end_ms) {
                    (Some(s), Some(e)) => format!("{:.1}", e.saturating_sub(s) as f64 / 1e3),
                    (Some(_), None) => "open".into(),
                    _ => "-".into(),
                };
                let avail = w
                    .availability
                    .map_or_else(|| "-".into(), |f| format!("{:.1}%", f * 100.0));
                let _ = writeln!(
                    out,
                    "{:>4}  {:<30} {:<12} {:>8} {:>7} {:>6} {:>5} {:>7}",
                    w.window,
                    w.fault,
                    w.targets.join(","),
                    start,
                    dur,
                    w.sends.invoked,
                    w.sends.ok,
                    avail
                );
            }
        }
        if let Some(base) = a.baseline_availability {
            let _ = writeln!(
                out,
                "outside fault windows: {} sends, {:.1}% acknowledged",
                a.baseline_sends.invoked,
                base * 100.0
            );
        }
        if let Some(r) = &a.recovery {
            let ms = |v: Option<u64>| v.map_or_else(|| "never".into(), |v| format!("+{v} ms"));
            let _ = writeln!(
                out,
                "final heal at {:.1} s: first ok send {}, first ok poll {}",
                r.heal_ms as f64 / 1e3,
                ms(r.first_ok_send_after_ms),
                ms(r.first_ok_poll_after_ms)
            );
        }
        out
    }
}
