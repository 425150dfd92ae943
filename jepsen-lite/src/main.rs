//! `jepsen-lite`: run fault scenarios against a RaftMQ cluster of processes and check the
//! history (`run`); check a recorded history (`check`); print schedules; exercise and clean up
//! the network-fault layer; serve the lazy filesystem for power-loss tests (`lazyfs`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};

use jepsen_lite::checker::{self, CheckOptions};
use jepsen_lite::cluster::NetChoice;
use jepsen_lite::history::read_history;
use jepsen_lite::lazyfs::{self, DEFAULT_MAX_UNSYNCED_BYTES, LazyFsOptions, MountedLazyFs};
use jepsen_lite::net::{netns, probe, selftest};
use jepsen_lite::run::{DEFAULT_THINK_TIME, EXIT_INTERRUPTED, RunOptions, RunProfile};
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
    /// Run a profile: per scenario, start a NameServer and a broker group as processes, run
    /// the workloads under the seeded fault schedule, heal, drain, check. Exit status: 0 pass,
    /// 1 safety violation, 3 not proven (harness trouble, no drain), 130 interrupted.
    Run {
        #[arg(long, value_enum, default_value = "short")]
        profile: RunProfile,
        /// The run's seed (replays the same fault schedules); random when absent.
        #[arg(long)]
        seed: Option<u64>,
        /// Output directory [default: jepsen-out/<profile>-<seed>].
        #[arg(long)]
        out: Option<PathBuf>,
        /// Members of the broker group.
        #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u8).range(1..=9))]
        nodes: u8,
        /// TEST ONLY: start brokers that acknowledge before commit (the run must then fail).
        #[arg(long)]
        unsafe_ack_before_commit: bool,
        /// TEST ONLY: start brokers whose Raft log never fsyncs (a power loss must then lose
        /// acknowledged sends).
        #[arg(long)]
        unsafe_skip_fsync: bool,
        /// Network layout: namespaces + nftables (root), TCP proxies, or whichever works.
        #[arg(long, value_enum, default_value = "auto")]
        net: NetChoice,
        /// Where mqbroker and mqnamesrv are [default: the directory of this binary].
        #[arg(long)]
        bin_dir: Option<PathBuf>,
        /// Keep every member's data directory, also after a passing scenario.
        #[arg(long)]
        keep_data: bool,
        /// Pause between one client's operations, milliseconds.
        #[arg(long, default_value_t = DEFAULT_THINK_TIME.as_millis() as u64)]
        think_ms: u64,
        /// Run only the scenario with this name (e.g. `mixed-tls`, `long-3`).
        #[arg(long)]
        scenario: Option<String>,
    },
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
        /// Report duplicates of sends retried after an unknown outcome without failing (for
        /// brokers without a producer dedup window); other duplicates still fail.
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
    /// As root: mount the lazy filesystem over BACKING at MOUNT and serve it in the
    /// foreground until SIGTERM or SIGINT, then unmount. Data not yet fsynced stays in memory;
    /// `echo clear-cache > MOUNT/.lazyfs-control` drops it as a power loss would (README,
    /// "Lazy filesystem").
    Lazyfs {
        /// The directory that holds the durable state.
        #[arg(long)]
        backing: PathBuf,
        /// Where to mount (an existing directory outside BACKING).
        #[arg(long)]
        mount: PathBuf,
        /// Cap on unsynced data held in memory, MiB; a write past it fails with ENOSPC.
        #[arg(long, default_value_t = DEFAULT_MAX_UNSYNCED_BYTES >> 20)]
        max_unsynced_mib: u64,
    },
    /// Helper for the lazy-filesystem tests and figures: create FILE, sync its directory,
    /// append numbered records with an fdatasync after each, print the throughput.
    #[command(hide = true)]
    LazyfsAppend {
        #[arg(long)]
        file: PathBuf,
        #[arg(long)]
        records: u64,
        #[arg(long, default_value_t = 4096)]
        record_bytes: usize,
        /// Print `synced N` after each record's fdatasync.
        #[arg(long)]
        progress: bool,
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
        Command::Run {
            profile,
            seed,
            out,
            nodes,
            unsafe_ack_before_commit,
            unsafe_skip_fsync,
            net,
            bin_dir,
            keep_data,
            think_ms,
            scenario,
        } => {
            let seed = seed.unwrap_or_else(random_seed);
            let bin_dir = match bin_dir.or_else(own_dir) {
                Some(dir) => dir,
                None => {
                    eprintln!("jepsen-lite run: cannot find my own directory; pass --bin-dir");
                    return exit(EXIT_USAGE);
                }
            };
            let options = RunOptions {
                profile,
                seed,
                out: out.unwrap_or_else(|| {
                    PathBuf::from("jepsen-out").join(format!("{}-{seed}", profile.name()))
                }),
                nodes: usize::from(nodes),
                unsafe_ack_before_commit,
                unsafe_skip_fsync,
                net,
                bin_dir,
                keep_data,
                think_time: Duration::from_millis(think_ms),
                only: scenario,
            };
            run(options)
        }
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
        Command::Lazyfs {
            backing,
            mount,
            max_unsynced_mib,
        } => serve_lazyfs(&backing, &mount, max_unsynced_mib),
        Command::LazyfsAppend {
            file,
            records,
            record_bytes,
            progress,
        } => lazyfs_append(&file, records, record_bytes, progress),
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

fn random_seed() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64 % 1_000_000_000)
        .unwrap_or(1)
}

fn own_dir() -> Option<PathBuf> {
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(PathBuf::from))
}

fn run(options: RunOptions) -> ExitCode {
    init_tracing();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("jepsen-lite run: cannot start the runtime: {e}");
            return exit(EXIT_USAGE);
        }
    };
    eprintln!(
        "jepsen-lite run: seed {} -> {}",
        options.seed,
        options.out.display()
    );
    let report = runtime.block_on(async {
        let cancel = tokio_util::sync::CancellationToken::new();
        let on_signal = cancel.clone();
        let signals = tokio::spawn(async move {
            use tokio::signal::unix::{SignalKind, signal};
            let Ok(mut terminate) = signal(SignalKind::terminate()) else {
                let _ = tokio::signal::ctrl_c().await;
                on_signal.cancel();
                return;
            };
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = terminate.recv() => {}
            }
            eprintln!("jepsen-lite run: interrupted; healing and stopping everything");
            on_signal.cancel();
        });
        let report = jepsen_lite::run::run(&options, &cancel).await;
        signals.abort();
        report
    });
    print!("{}", report.table());
    println!("summary: {}", options.out.join("summary.txt").display());
    if report.exit_code == EXIT_INTERRUPTED {
        return exit(EXIT_INTERRUPTED);
    }
    exit(report.exit_code)
}

fn init_tracing() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("error,jepsen_lite=info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}

/// `jepsen-lite lazyfs`: mount, wait for SIGTERM/SIGINT (or an unmount by someone else),
/// unmount.
fn serve_lazyfs(
    backing: &std::path::Path,
    mount: &std::path::Path,
    max_unsynced_mib: u64,
) -> ExitCode {
    init_tracing();
    let options = LazyFsOptions {
        max_unsynced_bytes: max_unsynced_mib.saturating_mul(1 << 20),
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("jepsen-lite lazyfs: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mounted = match MountedLazyFs::mount(backing, mount, &options) {
        Ok(mounted) => mounted,
        Err(e) => {
            eprintln!("jepsen-lite lazyfs: {e}");
            return ExitCode::FAILURE;
        }
    };
    println!(
        "lazyfs: {} mounted over {}; power loss: echo clear-cache > {}/{}",
        mounted.mountpoint().display(),
        backing.display(),
        mounted.mountpoint().display(),
        lazyfs::CONTROL_FILE
    );
    let ended = mounted.ended();
    let unmounted_elsewhere = runtime.block_on(async {
        use tokio::signal::unix::{SignalKind, signal};
        let Ok(mut terminate) = signal(SignalKind::terminate()) else {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => return false,
                _ = ended.cancelled() => return true,
            }
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => false,
            _ = terminate.recv() => false,
            _ = ended.cancelled() => true,
        }
    });
    if unmounted_elsewhere {
        eprintln!("jepsen-lite lazyfs: the mount ended (unmounted by someone else)");
    }
    match mounted.unmount() {
        Ok(()) => {
            println!("lazyfs: unmounted {}", mount.display());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("jepsen-lite lazyfs: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `jepsen-lite lazyfs-append`: see [`lazyfs::append`].
fn lazyfs_append(
    file: &std::path::Path,
    records: u64,
    record_bytes: usize,
    progress: bool,
) -> ExitCode {
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    let appended = lazyfs::append::run(file, records, record_bytes, |index| {
        if progress {
            writeln!(stdout, "synced {index}")?;
            stdout.flush()?;
        }
        Ok(())
    });
    match appended {
        Ok(report) => {
            println!("{}", report.summary());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("jepsen-lite lazyfs-append {}: {e}", file.display());
            ExitCode::FAILURE
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
