//! Cross-crate integration tests live under `tests/tests/`; this library holds the shared
//! harness for starting processes and waiting on conditions.
