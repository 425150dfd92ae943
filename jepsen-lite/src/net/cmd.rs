//! Running `ip` and `nft` with errors that say what was run and what it printed.

use std::io::Write;
use std::process::{Command, Stdio};

use super::NetError;

/// Stderr kept in an error message.
const STDERR_CHARS: usize = 2000;

/// The Debian package and a hint for each tool we need.
fn package_of(program: &str) -> &'static str {
    match program {
        "nft" => "nftables",
        _ => "iproute2",
    }
}

/// The command line, for messages.
pub fn describe(program: &str, args: &[&str]) -> String {
    std::iter::once(program)
        .chain(args.iter().copied())
        .collect::<Vec<_>>()
        .join(" ")
}

/// Runs `program args...`, feeding `stdin` if given; returns stdout on success.
pub fn run(program: &str, args: &[&str], stdin: Option<&str>) -> Result<String, NetError> {
    let command = describe(program, args);
    let mut child = Command::new(program)
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|source| {
            if source.kind() == std::io::ErrorKind::NotFound {
                NetError::ToolMissing {
                    program: program.into(),
                    package: package_of(program),
                    hint: "jepsen-lite/scripts/install-net-tools.sh installs it",
                }
            } else {
                NetError::Spawn {
                    command: command.clone(),
                    source,
                }
            }
        })?;
    if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
        // Our inputs are small rule sets; the pipe buffer takes them whole. Dropping the pipe
        // closes it, which tells `nft -f -` that the script ended.
        pipe.write_all(input.as_bytes())
            .map_err(|source| NetError::Spawn {
                command: command.clone(),
                source,
            })?;
    }
    let out = child.wait_with_output().map_err(|source| NetError::Spawn {
        command: command.clone(),
        source,
    })?;
    if !out.status.success() {
        let stderr: String = String::from_utf8_lossy(&out.stderr)
            .trim()
            .chars()
            .take(STDERR_CHARS)
            .collect();
        return Err(NetError::Command {
            command,
            status: out.status.to_string(),
            stderr,
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Whether `program` can be started at all (`program --version` or `-V` ran).
pub fn available(program: &str, version_flag: &str) -> Result<(), NetError> {
    run(program, &[version_flag], None).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_name_the_command_and_its_stderr() {
        let err = run("sh", &["-c", "echo nope >&2; exit 3"], None).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("sh -c"), "{text}");
        assert!(text.contains("nope"), "{text}");
        assert!(text.contains('3'), "{text}");
        assert!(matches!(
            run("jepsen-lite-no-such-tool", &[], None),
            Err(NetError::ToolMissing { .. })
        ));
        assert_eq!(run("cat", &[], Some("fed")).unwrap(), "fed");
    }
}
