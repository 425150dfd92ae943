//! `mq`: RaftMQ's operator command line, in the spirit of RocketMQ's `mqadmin`: produce and
//! consume, topics, consumer groups and their offsets, single messages, and the state and
//! membership of each broker group's Raft cluster.
//!
//! Where to start reading:
//! - this file: the command tree (clap) and the one place errors become a line on stderr and
//!   a non-zero exit code;
//! - [`context`]: how `mq` finds things from `-n` alone (NameServer cluster info, then
//!   GET_BROKER_RUNTIME_INFO on each member for its Raft view and admin address);
//! - one module per command family under `cmd/`;
//! - [`output`]: tables for people, `--json` for scripts (field names are documented in the
//!   README's "`mq --json`" section and kept stable).

// First, so that its `outln!` macro is in scope in the modules below.
#[macro_use]
mod output;
mod bench;
mod cmd;
mod context;

use std::process::ExitCode;

use anyhow::Context as _;
use clap::{CommandFactory, Parser, Subcommand};

use crate::context::Ctx;

/// RaftMQ's command line: produce, consume, topics, groups, offsets and cluster membership.
#[derive(Parser, Debug)]
#[command(name = "mq", version, propagate_version = true)]
struct Cli {
    /// NameServer addresses, `host:port[;host:port]` (as RocketMQ's `-n`).
    #[arg(short = 'n', long = "namesrv", env = "NAMESRV_ADDR", global = true)]
    namesrv: Option<String>,
    /// Print one JSON document for scripts instead of tables.
    #[arg(long, global = true)]
    json: bool,
    /// Sign every request with this ACL account (brokers enforcing ACL).
    #[arg(
        long,
        env = "RAFTMQ_ACCESS_KEY",
        global = true,
        requires = "secret_key"
    )]
    access_key: Option<String>,
    /// The account's secret key (prefer the environment variable: flags show in `ps`).
    #[arg(
        long,
        env = "RAFTMQ_SECRET_KEY",
        hide_env_values = true,
        global = true,
        requires = "access_key"
    )]
    secret_key: Option<String>,
    /// Bearer token for the members' admin HTTP (started with --admin-token).
    #[arg(long, env = raftmq_protocol::admin::ADMIN_TOKEN_ENV, hide_env_values = true, global = true)]
    admin_token: Option<raftmq_protocol::admin::AdminToken>,
    /// Connect to the NameServers and brokers over TLS (implied by --tls-ca).
    #[arg(long, env = "RAFTMQ_TLS", global = true)]
    tls: bool,
    /// The CA certificate(s) (PEM) the servers' certificates must chain to.
    #[arg(long, env = "RAFTMQ_TLS_CA", global = true)]
    tls_ca: Option<std::path::PathBuf>,
    /// A client certificate (PEM) for servers that ask for one, with --tls-key.
    #[arg(long, env = "RAFTMQ_TLS_CERT", global = true, requires = "tls_key")]
    tls_cert: Option<std::path::PathBuf>,
    /// The private key (PEM) of --tls-cert.
    #[arg(long, env = "RAFTMQ_TLS_KEY", global = true, requires = "tls_cert")]
    tls_key: Option<std::path::PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Send messages: from arguments, stdin lines, a file, or generated (`--count`, `--size`).
    Produce(cmd::produce::ProduceArgs),
    /// Read messages of a topic from every queue, and commit where it stopped.
    Consume(cmd::consume::ConsumeArgs),
    /// Create, list, describe and delete topics.
    #[command(subcommand)]
    Topic(cmd::topic::TopicCommand),
    /// Consumer groups: list them, or show per-queue offsets and lag.
    #[command(subcommand)]
    Group(cmd::group::GroupCommand),
    /// Consumer offsets.
    #[command(subcommand)]
    Offset(cmd::offset::OffsetCommand),
    /// Single messages.
    #[command(subcommand)]
    Message(cmd::message::MessageCommand),
    /// ACL: accounts, permissions, whitelists, the on switch (admin HTTP on each leader).
    #[command(subcommand)]
    Acl(cmd::acl::AclCommand),
    /// Broker groups: Raft state, membership changes, leadership.
    #[command(subcommand)]
    Cluster(cmd::cluster::ClusterCommand),
    /// Load generators: produce, consume, end-to-end latency, leader failover.
    #[command(subcommand)]
    Bench(bench::BenchCommand),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions { shell: clap_complete::Shell },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Command::Completions { shell } = &cli.command {
        let mut command = Cli::command();
        clap_complete::generate(*shell, &mut command, "mq", &mut std::io::stdout());
        return ExitCode::SUCCESS;
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => return fail(&anyhow::anyhow!("cannot start the async runtime: {err}")),
    };
    let result = runtime.block_on(run(cli));
    // Connections and background tasks of the client end with the runtime.
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    match result {
        Ok(code) => code,
        Err(err) => fail(&err),
    }
}

/// One line on stderr, and a failing exit code.
fn fail(err: &anyhow::Error) -> ExitCode {
    let line = format!("{err:#}").replace('\n', " ");
    eprintln!("mq: error: {line}");
    ExitCode::FAILURE
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let credentials = match (cli.access_key, cli.secret_key) {
        (Some(access_key), Some(secret_key)) => Some(
            raftmq_protocol::acl::SessionCredentials::new(access_key, secret_key),
        ),
        _ => None,
    };
    let tls = raftmq_client::tls::ClientTlsConfig {
        enabled: cli.tls,
        ca: cli.tls_ca,
        cert: cli.tls_cert,
        key: cli.tls_key,
    }
    .connector()
    .context("TLS")?;
    let ctx = Ctx::new(
        cli.namesrv.as_deref(),
        cli.json,
        credentials,
        cli.admin_token,
        tls,
    )?;
    match cli.command {
        Command::Produce(args) => cmd::produce::run(&ctx, args).await,
        Command::Consume(args) => cmd::consume::run(&ctx, args).await,
        Command::Topic(command) => cmd::topic::run(&ctx, command).await,
        Command::Group(command) => cmd::group::run(&ctx, command).await,
        Command::Offset(command) => cmd::offset::run(&ctx, command).await,
        Command::Message(command) => cmd::message::run(&ctx, command).await,
        Command::Cluster(command) => cmd::cluster::run(&ctx, command).await,
        Command::Acl(command) => cmd::acl::run(&ctx, command).await,
        Command::Bench(command) => bench::run(&ctx, command).await,
        Command::Completions { .. } => Ok(ExitCode::SUCCESS),
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::{Cli, Command};
    use crate::cmd::acl::AclCommand;

    /// `mq acl set-account AK` names the account to create; mq's own `--access-key` (which signs
    /// the requests) stays the caller's. A shared clap id once made mq sign with the account
    /// being created, so no leader answered (`scripts/cluster.sh up --acl` failed).
    #[test]
    fn the_account_of_set_account_is_not_the_signing_account() {
        let cli = Cli::try_parse_from([
            "mq",
            "--access-key",
            "operator",
            "--secret-key",
            "operator-secret",
            "acl",
            "set-account",
            "app",
            "--account-secret-key",
            "app-secret",
        ])
        .unwrap();
        assert_eq!(cli.access_key.as_deref(), Some("operator"));
        assert_eq!(cli.secret_key.as_deref(), Some("operator-secret"));
        let Command::Acl(AclCommand::SetAccount {
            access_key,
            secret_key,
            ..
        }) = cli.command
        else {
            panic!("not acl set-account");
        };
        assert_eq!(
            (access_key.as_str(), secret_key.as_str()),
            ("app", "app-secret")
        );
    }
}
