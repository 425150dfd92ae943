//! Fakes of a NameServer and broker members, in-process on 127.0.0.1:0, and waiting helpers.

pub mod fake_broker;
pub mod fake_namesrv;

use std::time::Duration;

pub use fake_broker::{FakeBroker, SendScript};
pub use fake_namesrv::{FakeNamesrv, Group, route};

/// Longest any single condition in these tests is waited for.
pub const WAIT: Duration = Duration::from_secs(10);

/// Polls `condition` every few milliseconds until it holds; fails the test after `WAIT`.
pub async fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !condition() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {WAIT:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Bounds a future by `WAIT`.
pub async fn within<T>(what: &str, future: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(WAIT, future)
        .await
        .unwrap_or_else(|_| panic!("timed out after {WAIT:?}: {what}"))
}
