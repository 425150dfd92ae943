//! `jepsen-lite`: check a recorded history; exercise the network-fault layer.
//!
//! `run --profile short|long --seed N` arrives with the workloads and the cluster harness.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};

use jepsen_lite::checker::{self, CheckOptions};
use jepsen_lite::history::read_history;
use jepsen_lite::net::{netns, probe, selftest};
use jepsen_lite::schedule::{Profile, Schedule, scenario_seed};
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
    /// As root: create three namespaces on a bridge, run an echo server in one, cut, one-way
    /// cut and degrade links with nftables, heal, tear down; print each step.
    NetnsSelftest,
    /// As root: delete namespaces left behind by jepsen-lite runs whose process is gone.
    NetnsCleanup,
    /// Print the fault schedules of a profile for a seed (the same seed always gives the same
    /// schedules; a run records its seed in the history).
    Schedule {
        #[arg(long, value_enum, default_value = "short")]
        profile: Profile,
        #[arg(long)]
        seed: u64,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Helper run inside a namespace: echo lines on a TCP address until killed.
    #[command(hide = true)]
    NetEcho {
        #[arg(long)]
        listen: SocketAddr,
    },
    /// Helper run inside a namespace: exit 0 if the echo server at `addr` answers in time.
    #[command(hide = true)]
    NetProbe {
        #[arg(long)]
        addr: SocketAddr,
        #[arg(long, default_value_t = 1000)]
        timeout_ms: u64,
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
        Command::NetnsSelftest => netns_selftest(),
        Command::NetnsCleanup => match netns::cleanup_stale() {
            Ok(deleted) => {
                for name in &deleted {
                    println!("deleted {name}");
                }
                println!("{} stale namespaces deleted", deleted.len());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("jepsen-lite netns-cleanup: {e}");
                ExitCode::FAILURE
            }
        },
        Command::Schedule {
            profile,
            seed,
            json,
        } => {
            for (i, scenario) in profile.scenarios().iter().enumerate() {
                let schedule = Schedule::generate(scenario_seed(seed, i), &scenario.config);
                if json {
                    let line = serde_json::json!({"scenario": scenario.name, "schedule": schedule});
                    println!("{line}");
                } else {
                    println!("scenario {} ({})", i + 1, scenario.name);
                    print!("{}", schedule.table());
                }
            }
            ExitCode::SUCCESS
        }
        Command::NetEcho { listen } => match probe::serve_echo(listen) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("jepsen-lite net-echo {listen}: {e}");
                ExitCode::FAILURE
            }
        },
        Command::NetProbe { addr, timeout_ms } => {
            match probe::probe(addr, Duration::from_millis(timeout_ms)) {
                Ok(rtt) => {
                    println!("reached {addr} in {} us", rtt.as_micros());
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    println!("{e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

fn netns_selftest() -> ExitCode {
    let helper = match std::env::current_exe() {
        Ok(path) => path,
        Err(e) => {
            eprintln!("jepsen-lite netns-selftest: cannot find my own binary: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut say = |line: &str| println!("netns-selftest: {line}");
    match selftest::run(&helper, &mut say) {
        Ok(prefix) => {
            println!("netns-selftest: PASS ({prefix})");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("netns-selftest: FAIL: {e}");
            ExitCode::FAILURE
        }
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
