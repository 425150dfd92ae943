//! The runtime the real client needs: a `RuntimeOwner` (its own tokio runtime), global
//! telemetry (its logging), and a `ClientRuntime` that producers and consumers are built on.
//! Shutdown runs in the order the client documents: client runtime, owner tasks, owner
//! runtime, telemetry.
//!
//! The request header encoding is chosen here, explicitly, rather than by the client's
//! `ROCKETMQ_SERIALIZE_TYPE` environment variable: it is a process-wide setting that can be
//! fixed only once, so each test binary fixes its own.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use rocketmq_client_rust::{ClientRuntime, ClientRuntimeConfig};
use rocketmq_observability::{LoggingConfig, TelemetryBootstrapConfig, TelemetryRuntimeGuard};
use rocketmq_protocol::protocol::SerializeType;
use rocketmq_protocol::protocol::remoting_command_defaults::{
    RemotingCommandDefaults, RemotingCommandFactory, initialize_remoting_command_defaults,
};
use rocketmq_runtime::{RuntimeConfig, RuntimeOwner};

/// The client's log filter unless `RUST_LOG` says otherwise: its default (`info`) writes
/// several lines per request to stderr, which test output does not capture.
pub const DEFAULT_CLIENT_LOG_FILTER: &str = "error";

/// Async worker threads of the client's runtime: the machine has two cores.
pub const CLIENT_WORKER_THREADS: usize = 2;

/// Longest the client runtime may take to stop its producers and consumers.
pub const CLIENT_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(15);

/// How the client encodes request headers (RocketMQ's `rocketmq.serialize.type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeaderEncoding {
    /// JSON, the client's default.
    Json,
    /// RocketMQ's binary header layout.
    RocketMq,
}

impl HeaderEncoding {
    fn serialize_type(self) -> SerializeType {
        match self {
            HeaderEncoding::Json => SerializeType::JSON,
            HeaderEncoding::RocketMq => SerializeType::ROCKETMQ,
        }
    }
}

/// Everything the real client runs on.
pub struct ClientHarness {
    owner: RuntimeOwner,
    client_runtime: Arc<ClientRuntime>,
    telemetry: TelemetryRuntimeGuard,
}

impl ClientHarness {
    /// Builds the runtime, installs quiet logging and creates the client runtime speaking
    /// `encoding`. Call it outside any tokio runtime (it builds its own), once per process
    /// (the encoding is process-wide).
    pub fn start(scope: &str, encoding: HeaderEncoding) -> anyhow::Result<ClientHarness> {
        let defaults = RemotingCommandDefaults::new(
            rocketmq_model::version::CURRENT_VERSION as i32,
            encoding.serialize_type(),
        );
        // Commands built outside the client runtime's factory use the process default.
        initialize_remoting_command_defaults(defaults)
            .map_err(|err| anyhow!("fixing the {encoding:?} header encoding: {err}"))?;
        let mut runtime_config =
            RuntimeConfig::for_parallelism(format!("interop-{scope}"), CLIENT_WORKER_THREADS);
        runtime_config.shutdown_timeout = CLIENT_SHUTDOWN_TIMEOUT;
        let owner = RuntimeOwner::plan(runtime_config)
            .map_err(|err| anyhow!("client runtime configuration: {err}"))?
            .build()
            .map_err(|err| anyhow!("building the client runtime: {err}"))?;
        let filter = std::env::var("RUST_LOG")
            .ok()
            .filter(|filter| !filter.trim().is_empty())
            .unwrap_or_else(|| DEFAULT_CLIENT_LOG_FILTER.to_owned());
        let mut logging = LoggingConfig {
            filter,
            ..LoggingConfig::default()
        };
        logging.console.ansi = false;
        let telemetry = rocketmq_observability::install_global(&TelemetryBootstrapConfig {
            logging,
            ..TelemetryBootstrapConfig::default()
        })
        .map_err(|err| anyhow!("installing the client's telemetry: {err}"))?;
        let context = owner.root_context().component("client");
        let handle = telemetry.handle();
        let client_runtime = owner
            .block_on(async move {
                ClientRuntime::try_new_with_remoting_command_factory(
                    context,
                    ClientRuntimeConfig {
                        shutdown_timeout: CLIENT_SHUTDOWN_TIMEOUT,
                        ..ClientRuntimeConfig::default()
                    },
                    handle,
                    RemotingCommandFactory::new(defaults),
                )
            })
            .map_err(|err| anyhow!("creating the client runtime: {err}"))?;
        Ok(ClientHarness {
            owner,
            client_runtime,
            telemetry,
        })
    }

    /// The client runtime producers and consumers are built on.
    pub fn client_runtime(&self) -> Arc<ClientRuntime> {
        Arc::clone(&self.client_runtime)
    }

    /// Runs `future` on the client's runtime.
    pub fn block_on<F: Future>(&self, future: F) -> F::Output {
        self.owner.block_on(future)
    }

    /// Stops the client runtime, the owner's tasks and runtime, then telemetry; fails if any
    /// of them reports work it could not stop.
    pub fn shutdown(self) -> anyhow::Result<()> {
        let ClientHarness {
            owner,
            client_runtime,
            telemetry,
        } = self;
        let client_report = owner.block_on(client_runtime.shutdown());
        drop(client_runtime);
        let tasks_report = owner.block_on(owner.shutdown_tasks());
        let background_report = owner.shutdown_background();
        let telemetry_report = telemetry.shutdown();
        let mut unhealthy = Vec::new();
        if !client_report.is_healthy() {
            unhealthy.push(format!("client runtime: {}", client_report.to_json()));
        }
        if !tasks_report.is_healthy() {
            unhealthy.push(format!("runtime tasks: {}", tasks_report.to_json()));
        }
        if !background_report.is_healthy() {
            unhealthy.push(format!("runtime: {}", background_report.to_json()));
        }
        if !telemetry_report.is_healthy() {
            unhealthy.push(format!("telemetry: {}", telemetry_report.to_json()));
        }
        if !unhealthy.is_empty() {
            bail!("unclean client shutdown: {}", unhealthy.join("; "));
        }
        Ok(())
    }
}

/// Runs `future` for at most `timeout`, naming `what` timed out.
pub async fn bounded<T>(
    what: &str,
    timeout: Duration,
    future: impl Future<Output = T>,
) -> anyhow::Result<T> {
    tokio::time::timeout(timeout, future)
        .await
        .with_context(|| format!("{what} took longer than {timeout:?}"))
}
