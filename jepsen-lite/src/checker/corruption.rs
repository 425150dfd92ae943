//! Corruption: every bit flipped in a sealed segment was found by its member.
//!
//! A bit flip (`nemesis::Fault::BitFlip`) kills a member, flips one bit of one of its files and
//! starts it again; the start's completion says what the member did ([`Detection`]). A flip in
//! a sealed segment must be found: the member refuses to start, or its scrub finds it right
//! after the start and the member stops, in both cases with an error that names the damaged
//! file. A member that runs on with a damaged segment would serve or replicate it later (the
//! CRC would stop that, but only when someone reads it): a violation. A flip in the state
//! machine's file may be found (redb refuses the file) or not (redb repaired it from its other
//! copy, or the bit was in a free page): both are counted, neither is a violation here; that
//! no damaged data reaches a client is for the data checkers (`unexpected` compares every read
//! body with what was sent).
//!
//! Needs: the `ok` completions of bit flip starts.

use serde::Serialize;

use super::{CheckResult, Class, Verdict};
use crate::history::{Call, Detection, History, NemesisPhase, OpType};
use crate::nemesis::{CorruptFile, Fault};

pub const NAME: &str = "corruption";

#[derive(Serialize)]
struct Example<'a> {
    window: u64,
    file: &'a str,
    position: u64,
    detection: Detection,
    reason: Option<&'a str>,
}

pub fn check(history: &History) -> CheckResult {
    let mut result = CheckResult::new(NAME, Class::Safety);
    for op in history.ops.iter().filter(|op| op.kind == OpType::Ok) {
        let Call::Nemesis(n) = &op.call else {
            continue;
        };
        let (Fault::BitFlip { file }, NemesisPhase::Start, Some(outcome)) =
            (&n.fault, n.phase, &n.corruption)
        else {
            continue;
        };
        let kind = match file {
            CorruptFile::Segment => "segment",
            CorruptFile::StateMachine => "state_machine",
        };
        let detection = match outcome.detection {
            Detection::RefusedToStart => "refused_to_start",
            Detection::StoppedAfterStart => "stopped_after_start",
            Detection::Running => "running",
        };
        result.count(&format!("{kind}_flips"), 1);
        result.count(&format!("{kind}_{detection}"), 1);
        if *file != CorruptFile::Segment {
            continue;
        }
        let example = || Example {
            window: n.window,
            file: &outcome.file,
            position: outcome.position,
            detection: outcome.detection,
            reason: outcome.reason.as_deref(),
        };
        let file_name = outcome.file.rsplit('/').next().unwrap_or(&outcome.file);
        match outcome.detection {
            Detection::Running => result.violation("segment_flip_not_detected", example()),
            _ if !outcome
                .reason
                .as_deref()
                .is_some_and(|reason| reason.contains(file_name)) =>
            {
                result.violation("detected_without_naming_the_file", example())
            }
            _ => {}
        }
    }
    if result.get("segment_flips") + result.get("state_machine_flips") == 0 {
        result.verdict = Verdict::Skipped;
        result.note = Some("no bit flip in this run".into());
    }
    result
}

/// A history whose only anomaly is a sealed segment's flipped bit that its member did not find.
#[cfg(test)]
pub(crate) fn anomaly_history() -> History {
    crate::history::build::Builder::new()
        .bit_flip(1, CorruptFile::Segment, Detection::Running, None)
        .build()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::build::Builder;

    #[test]
    fn found_flips_pass_and_a_state_machine_flip_may_go_unnoticed() {
        let reason = "ERROR raft log scrub found corrupt data: corrupt record in /d/raft/log/00000000000000000417.log at byte 1200";
        let h = Builder::new()
            .bit_flip(
                1,
                CorruptFile::Segment,
                Detection::StoppedAfterStart,
                Some(reason),
            )
            .bit_flip(
                2,
                CorruptFile::Segment,
                Detection::RefusedToStart,
                Some(reason),
            )
            .bit_flip(3, CorruptFile::StateMachine, Detection::Running, None)
            .build();
        let result = check(&h);
        assert_eq!(result.verdict, Verdict::Pass, "{result:?}");
        assert_eq!(result.get("segment_flips"), 2);
        assert_eq!(result.get("state_machine_running"), 1);
    }

    #[test]
    fn an_unnoticed_segment_flip_or_a_vague_error_fails() {
        let result = check(&anomaly_history());
        assert_eq!(result.verdict, Verdict::Fail);
        assert_eq!(result.get("segment_flip_not_detected"), 1);
        let vague = Builder::new()
            .bit_flip(
                1,
                CorruptFile::Segment,
                Detection::StoppedAfterStart,
                Some("ERROR something went wrong"),
            )
            .build();
        let result = check(&vague);
        assert_eq!(result.verdict, Verdict::Fail);
        assert_eq!(result.get("detected_without_naming_the_file"), 1);
    }

    #[test]
    fn a_run_without_bit_flips_is_skipped() {
        let h = Builder::new().build();
        assert_eq!(check(&h).verdict, Verdict::Skipped);
    }
}
