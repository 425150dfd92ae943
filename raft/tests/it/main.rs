//! Integration tests of the raft crate, built as one test binary with a module per scenario.

mod storage_suite;
