//! `jepsen-lite`: check a recorded history; exercise the network-fault layer.
//!
//! `run --profile short|long --seed N` arrives with the workloads and the cluster harness.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

use jepsen_lite::checker::{self, CheckOptions};
use jepsen_lite::history::read_history;
use jepsen_lite::summary::EXIT_USAGE;

#[derive(Parser, Debug)]
#[command(
    name = "jepsen-lite",
    version,
    about = "Fault injection and history checkers for RaftMQ"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Format {
    Table,
    Json,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run every checker over a history (JSON lines) and print the summary. Exit status: 0 pass,
    /// 1 safety violation, 2 unreadable input, 3 nothing violated but not proven (e.g. no drain).
    Check {
        /// The history file written by a run.
        history: PathBuf,
        /// A directory of member logs to scan for panics and invariant errors.
        #[arg(long)]
        logs: Option<PathBuf>,
        /// Also write the summary as JSON to this file.
        #[arg(long)]
        json: Option<PathBuf>,
        /// What to print on stdout.
        #[arg(long, value_enum, default_value = "table")]
        format: Format,
        /// Report duplicates without failing (for brokers without a producer dedup window).
        #[arg(long)]
        allow_duplicates: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Check {
            history,
            logs,
            json,
            format,
            allow_duplicates,
        } => check(history, logs, json, format, allow_duplicates),
    }
}

fn exit(code: i32) -> ExitCode {
    ExitCode::from(u8::try_from(code).unwrap_or(u8::MAX))
}

fn check(
    history: PathBuf,
    logs: Option<PathBuf>,
    json: Option<PathBuf>,
    format: Format,
    allow_duplicates: bool,
) -> ExitCode {
    let parsed = match read_history(&history) {
        Ok(h) => h,
        Err(e) => {
            eprintln!("jepsen-lite check: {e}");
            return exit(EXIT_USAGE);
        }
    };
    let options = CheckOptions {
        logs_dir: logs,
        allow_duplicates,
    };
    let summary = checker::all(&parsed, &options);
    let text = summary.to_json_pretty();
    if let Some(path) = json
        && let Err(e) = std::fs::write(&path, format!("{text}\n"))
    {
        eprintln!("jepsen-lite check: cannot write {}: {e}", path.display());
        return exit(EXIT_USAGE);
    }
    match format {
        Format::Table => print!("{}", summary.table()),
        Format::Json => println!("{text}"),
    }
    exit(summary.exit_code)
}
