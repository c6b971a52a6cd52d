//! The proxy: one policy core (`policy`) and two engines that call it, the fast path (the
//! Streamable HTTP requests, exchanged in the connection's task) and Pingora's path
//! (`pingora_path`, everything else), behind the connection gate; plus the session codec, the
//! connections' timers and the local `/health` and `/stats` answers.
//!
//! The proxy knows upstream sets and nothing of processes: servers appear and vanish in the
//! registry snapshot it loads once per request.

pub mod fast_path;
pub mod gate;
pub mod pingora_path;
pub mod policy;
pub mod reply;
pub mod session;
pub mod timer;
pub mod tls;
mod wire;

pub use pingora_path::FleetProxy;

use std::sync::atomic::{AtomicBool, Ordering};

/// Requests in progress across all worker threads, and whether the instance is shutting down.
/// Shared with the process lifecycle so SIGTERM can wait for the count to reach zero.
/// The in-flight count is the `mcp_fleet_in_flight_requests` gauge itself: one atomic serves
/// the drain and the metric.
#[derive(Debug, Default)]
pub struct Traffic {
    draining: AtomicBool,
}

impl Traffic {
    pub fn in_flight(&self) -> usize {
        crate::metrics::metrics().in_flight.get().max(0) as usize
    }

    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::Release);
    }

    pub fn draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }
}

/// Held by a request's context for its whole life.
#[derive(Debug)]
pub struct RequestGuard;

impl Drop for RequestGuard {
    fn drop(&mut self) {
        crate::metrics::metrics().in_flight.dec();
    }
}
