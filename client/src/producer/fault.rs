//! Fault isolation (RocketMQ's latency fault tolerance, reduced to reachability): a member
//! that could not be reached is avoided by queue selection for [`FAULT_ISOLATION`], so the
//! next sends go to other groups while it is down or being replaced.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// How long a member that could not be reached is avoided by queue selection.
pub const FAULT_ISOLATION: Duration = Duration::from_secs(3);

/// Members remembered as failing; beyond this, new failures are not remembered.
pub const MAX_ISOLATED_MEMBERS: usize = 1024;

/// Members whose leader address failed lately, avoided by queue selection for a while.
#[derive(Default)]
pub(super) struct FaultTracker {
    until: Mutex<HashMap<String, Instant>>,
}

impl FaultTracker {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Instant>> {
        self.until
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    pub(super) fn isolate(&self, addr: &str) {
        let now = Instant::now();
        let mut until = self.lock();
        until.retain(|_, end| *end > now);
        if until.len() < MAX_ISOLATED_MEMBERS || until.contains_key(addr) {
            until.insert(addr.to_owned(), now + FAULT_ISOLATION);
        }
    }

    pub(super) fn recovered(&self, addr: &str) {
        self.lock().remove(addr);
    }

    pub(super) fn is_isolated(&self, addr: &str) -> bool {
        self.lock()
            .get(addr)
            .is_some_and(|end| *end > Instant::now())
    }
}
