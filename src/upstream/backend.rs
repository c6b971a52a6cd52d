//! One upstream server as the proxy sees it. The address and id are fixed; the live counters sit in
//! a shared `BackendState` that every snapshot containing this server points at, so swapping a
//! snapshot never resets them.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;

/// Counters bumped by the proxy on the hot path. Relaxed atomics: they are statistics and
/// selection hints, never used to order other memory.
#[derive(Debug, Default)]
pub struct BackendState {
    in_flight: AtomicU32,
    requests: AtomicU64,
    connect_failures: AtomicU64,
}

impl BackendState {
    /// Called when a request is sent to this backend; the returned guard ends it.
    pub fn start_request(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        self.requests.fetch_add(1, Ordering::Relaxed);
        InFlight(Arc::clone(self))
    }

    pub fn record_connect_failure(&self) {
        self.connect_failures.fetch_add(1, Ordering::Relaxed);
    }

    pub fn in_flight(&self) -> u32 {
        self.in_flight.load(Ordering::Relaxed)
    }

    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    pub fn connect_failures(&self) -> u64 {
        self.connect_failures.load(Ordering::Relaxed)
    }
}

/// A request in progress on one backend; dropping it (request done, failed or abandoned) lowers
/// the in-flight count, so no path can leak a count.
#[derive(Debug)]
pub struct InFlight(Arc<BackendState>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Where a backend came from: spawned by the fleet, or listed in the config as a static address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Origin {
    Spawned,
    Static,
}

#[derive(Debug, Clone)]
pub struct Backend {
    pub id: Arc<str>,
    pub addr: SocketAddr,
    pub origin: Origin,
    /// Whether the proxy may send requests to it (spawned and accepting, or static).
    pub ready: bool,
    pub state: Arc<BackendState>,
}
