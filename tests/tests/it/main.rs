//! Cross-crate integration tests: one test binary, one module per scenario. Processes are
//! started from workspace binaries with the harness in `raftmq_tests` (src/lib.rs).

mod broker_raw;
mod broker_storage;
mod cli;
mod data_plane;
mod delay;
mod membership;
mod namesrv;
