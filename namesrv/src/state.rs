//! What the NameServer's request handlers, expiry scanner and admin endpoints share.

use std::sync::{Mutex, MutexGuard};

use crate::kv_config::KvConfig;
use crate::metrics::Metrics;
use crate::route_table::RouteTable;

/// The route table, the KV config and the metrics. The locks are never held across an
/// `.await`: every operation on them is synchronous.
#[derive(Debug, Default)]
pub struct NameServerState {
    routes: Mutex<RouteTable>,
    kv: Mutex<KvConfig>,
    pub metrics: Metrics,
}

impl NameServerState {
    pub fn new() -> Self {
        NameServerState::default()
    }

    pub fn routes(&self) -> MutexGuard<'_, RouteTable> {
        // A panic while holding the lock cannot leave the table half-updated in a way that
        // matters more than stopping the NameServer would: keep serving.
        self.routes
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    pub fn kv(&self) -> MutexGuard<'_, KvConfig> {
        self.kv.lock().unwrap_or_else(|poison| poison.into_inner())
    }
}
