//! Cross-crate integration tests: one test binary, one module per scenario. Processes are
//! started from workspace binaries with the harness in `raftmq_tests` (src/lib.rs).

mod admin_exposure;
mod broker_raw;
mod broker_storage;
mod browser;
mod cli;
mod dashboard;
mod data_plane;
mod delay;
mod grpc_interop;
mod health;
mod membership;
mod namesrv;
mod pop;
mod retention;
mod semantics;
mod tls;
