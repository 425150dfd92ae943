//! Panics and assertion failures in member logs: any line with `panicked at`, a failed
//! assertion (`assertion failed`, or `assertion ... failed` as `assert_eq!` prints it), or a
//! tracing ERROR line that mentions an invariant (`... ERROR target: invariant ...` in the fmt
//! format, with or without ANSI colours, or `"level":"ERROR"` in the JSON format).
//!
//! Needs: a directory of member log files (searched recursively, a few levels deep), not the
//! history.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::{CheckResult, Class};

pub const NAME: &str = "member_logs";

/// How deep below the log directory files are searched.
pub const MAX_LOG_DEPTH: usize = 4;
/// At most this many files are scanned (a guard against pointing at the wrong directory).
pub const MAX_LOG_FILES: usize = 10_000;
/// Longer lines are scanned only up to this many bytes.
pub const MAX_LOG_LINE_BYTES: usize = 64 * 1024;
/// Characters of a matching line kept in an example.
const EXAMPLE_CHARS: usize = 300;

#[derive(Serialize)]
struct Example {
    file: String,
    line: u64,
    kind: &'static str,
    text: String,
}

/// What a log line shows, if anything.
pub fn classify(line: &str) -> Option<&'static str> {
    let plain = strip_ansi(line);
    if plain.contains("panicked at") {
        return Some("panics");
    }
    if plain.contains("assertion failed") || assertion_with_operands_failed(&plain) {
        return Some("assertion_failures");
    }
    if is_error_level(&plain) && plain.to_ascii_lowercase().contains("invariant") {
        return Some("invariant_errors");
    }
    None
}

/// `assert_eq!` prints "assertion `left == right` failed".
fn assertion_with_operands_failed(line: &str) -> bool {
    line.find("assertion `")
        .is_some_and(|at| line[at..].contains("` failed"))
}

/// A tracing ERROR line: the level as its own word (fmt format) or a JSON level field.
fn is_error_level(line: &str) -> bool {
    line.split_whitespace().any(|w| w == "ERROR")
        || line.contains("\"level\":\"ERROR\"")
        || line.contains("\"level\": \"ERROR\"")
}

/// Removes ANSI escape sequences (`ESC [ ... letter`), which tracing adds around levels.
fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            if chars.peek() == Some(&'[') {
                chars.next();
                for c in chars.by_ref() {
                    if c.is_ascii_alphabetic() {
                        break;
                    }
                }
            }
            continue;
        }
        out.push(c);
    }
    out
}

/// The result when no log directory was given.
pub fn skipped() -> CheckResult {
    let mut r = CheckResult::new(NAME, Class::Safety);
    r.verdict = super::Verdict::Skipped;
    r.note = Some("no log directory given (--logs)".into());
    r
}

pub fn check(dir: &Path) -> CheckResult {
    let mut result = CheckResult::new(NAME, Class::Safety);
    let mut files = Vec::new();
    if let Err(e) = collect_files(dir, 0, &mut files) {
        result.unknown(format!("cannot list {}: {e}", dir.display()));
        return result;
    }
    if files.is_empty() {
        result.unknown(format!("no log files under {}", dir.display()));
        return result;
    }
    files.sort();
    for file in files {
        result.count("files", 1);
        if let Err(e) = scan_file(&file, &mut result) {
            result.count("unreadable_files", 1);
            result.unknown(format!("cannot read {}: {e}", file.display()));
        }
    }
    result
}

fn collect_files(dir: &Path, depth: usize, out: &mut Vec<PathBuf>) -> io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        if out.len() >= MAX_LOG_FILES {
            return Ok(());
        }
        let entry = entry?;
        let kind = entry.file_type()?;
        if kind.is_file() {
            out.push(entry.path());
        } else if kind.is_dir() && depth < MAX_LOG_DEPTH {
            collect_files(&entry.path(), depth + 1, out)?;
        }
    }
    Ok(())
}

fn scan_file(path: &Path, result: &mut CheckResult) -> io::Result<()> {
    let mut reader = BufReader::new(File::open(path)?);
    let mut buf = Vec::new();
    let mut line_no = 0u64;
    loop {
        buf.clear();
        let n = (&mut reader)
            .take(MAX_LOG_LINE_BYTES as u64)
            .read_until(b'\n', &mut buf)?;
        if n == 0 {
            return Ok(());
        }
        line_no += 1;
        if buf.last() != Some(&b'\n') && n == MAX_LOG_LINE_BYTES {
            // Cut at the cap: skip the rest of this line.
            skip_to_newline(&mut reader)?;
        }
        let text = String::from_utf8_lossy(&buf);
        if let Some(kind) = classify(&text) {
            result.violation(
                kind,
                Example {
                    file: path.display().to_string(),
                    line: line_no,
                    kind,
                    text: strip_ansi(text.trim_end())
                        .chars()
                        .take(EXAMPLE_CHARS)
                        .collect(),
                },
            );
        }
        result.count("lines", 1);
    }
}

fn skip_to_newline(reader: &mut impl BufRead) -> io::Result<()> {
    loop {
        let chunk = reader.fill_buf()?;
        if chunk.is_empty() {
            return Ok(());
        }
        if let Some(at) = chunk.iter().position(|&b| b == b'\n') {
            reader.consume(at + 1);
            return Ok(());
        }
        let len = chunk.len();
        reader.consume(len);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checker::Verdict;

    #[test]
    fn recognises_each_kind_and_nothing_else() {
        assert_eq!(
            classify("thread 'tokio-runtime-worker' panicked at broker/src/sm.rs:10:5:"),
            Some("panics")
        );
        assert_eq!(
            classify("assertion failed: index > last_applied"),
            Some("assertion_failures")
        );
        assert_eq!(
            classify("assertion `left == right` failed: offsets"),
            Some("assertion_failures")
        );
        assert_eq!(
            classify(
                "2025-01-01T00:00:00.000001Z ERROR raftmq_broker::sm: invariant violated: offset gap"
            ),
            Some("invariant_errors")
        );
        assert_eq!(
            classify(
                "2025-01-01T00:00:00Z \u{1b}[31mERROR\u{1b}[0m \u{1b}[2mraftmq\u{1b}[0m: Invariant broken"
            ),
            Some("invariant_errors")
        );
        assert_eq!(
            classify(
                r#"{"timestamp":"x","level":"ERROR","fields":{"message":"invariant: two values"}}"#
            ),
            Some("invariant_errors")
        );
        // Ordinary errors and warnings about invariants are not findings.
        assert_eq!(
            classify("2025-01-01T00:00:00Z ERROR raftmq: connection reset by peer"),
            None
        );
        assert_eq!(
            classify("2025-01-01T00:00:00Z  WARN raftmq: checking invariant"),
            None
        );
        assert_eq!(classify("INFO ERRORS=0 invariant ok"), None);
    }

    #[test]
    fn clean_logs_pass_and_a_panic_fails_with_file_and_line() {
        let dir = tempfile::tempdir().unwrap();
        let n1 = dir.path().join("n1");
        std::fs::create_dir(&n1).unwrap();
        std::fs::write(n1.join("broker.log"), "INFO started\nINFO elected leader\n").unwrap();
        let r = check(dir.path());
        assert_eq!(r.verdict, Verdict::Pass);
        assert_eq!(r.get("lines"), 2);

        // A line longer than the cap, then a panic: still found, on the right line.
        let long = "x".repeat(MAX_LOG_LINE_BYTES * 2);
        std::fs::write(
            dir.path().join("n2.log"),
            format!("{long}\nthread 'main' panicked at src/main.rs:1:1\n"),
        )
        .unwrap();
        let r = check(dir.path());
        assert_eq!(r.verdict, Verdict::Fail);
        assert_eq!(r.get("panics"), 1);
        assert_eq!(r.examples[0]["line"], 2);
        assert!(r.examples[0]["file"].as_str().unwrap().ends_with("n2.log"));
    }

    #[test]
    fn a_missing_or_empty_directory_is_unknown() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(check(dir.path()).verdict, Verdict::Unknown);
        assert_eq!(check(&dir.path().join("nope")).verdict, Verdict::Unknown);
    }
}
