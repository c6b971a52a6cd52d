//! One upstream server as the proxy sees it. The address, id and weight are fixed per snapshot;
//! the live state sits in a shared `BackendState` that every snapshot containing this server points
//! at, so swapping a snapshot never resets counters, ejections or latency.

use crate::config::EjectionConfig;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Time constant of the peak-EWMA latency average.
const EWMA_DECAY_MS: f64 = 10_000.0;

/// Counters bumped by the proxy on the hot path. Relaxed atomics: they are statistics and
/// selection hints, never used to order other memory.
#[derive(Debug, Default)]
pub struct BackendState {
    in_flight: AtomicU32,
    requests: AtomicU64,
    connect_failures: AtomicU64,
    failures: AtomicU64,
    /// Passive ejection: not picked while `now_ms() < ejected_until`.
    ejected_until: AtomicU64,
    /// Ejections in a row; the next one lasts `base * 2^ejections`.
    ejections: AtomicU32,
    ejections_total: AtomicU64,
    consecutive_5xx: AtomicU32,
    /// Peak-EWMA of time to first byte, in microseconds (f64 bits), and when it was updated.
    ewma_us: AtomicU64,
    ewma_at: AtomicU64,
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

    pub fn failures(&self) -> u64 {
        self.failures.load(Ordering::Relaxed)
    }

    pub fn ejections_total(&self) -> u64 {
        self.ejections_total.load(Ordering::Relaxed)
    }

    /// Whether passive ejection lets the proxy pick this server at `now_ms`.
    #[inline]
    pub fn usable(&self, now_ms: u64) -> bool {
        self.ejected_until.load(Ordering::Relaxed) <= now_ms
    }

    /// Ejects for `base * 2^(ejections in a row)`, capped at `max`. The caller has checked the
    /// category's ejection cap. Returns how long.
    pub fn eject(&self, now_ms: u64, config: &EjectionConfig) -> Duration {
        let n = self.ejections.fetch_add(1, Ordering::Relaxed).min(20);
        let span = config
            .base_time
            .saturating_mul(1u32 << n)
            .min(config.max_time);
        self.ejected_until
            .store(now_ms + span.as_millis() as u64, Ordering::Relaxed);
        self.ejections_total.fetch_add(1, Ordering::Relaxed);
        self.consecutive_5xx.store(0, Ordering::Relaxed);
        span
    }

    /// A connection-level failure (refused, reset, timed out). Counted; ejection is decided by
    /// the set, which knows the cap.
    pub fn record_failure(&self) {
        self.failures.fetch_add(1, Ordering::Relaxed);
    }

    /// Records the status of a response; true when a run of 5xx has reached `after` and the
    /// server should be ejected.
    pub fn record_status(&self, status: u16, now_ms: u64, config: &EjectionConfig) -> bool {
        if status >= 500 {
            self.failures.fetch_add(1, Ordering::Relaxed);
            let run = self.consecutive_5xx.fetch_add(1, Ordering::Relaxed) + 1;
            return config.after_5xx > 0 && run >= config.after_5xx;
        }
        if self.consecutive_5xx.load(Ordering::Relaxed) != 0 {
            self.consecutive_5xx.store(0, Ordering::Relaxed);
        }
        // Forgive past ejections once the server has stayed in for the longest ejection.
        if self.ejections.load(Ordering::Relaxed) != 0 {
            let until = self.ejected_until.load(Ordering::Relaxed);
            if now_ms >= until + config.max_time.as_millis() as u64 {
                self.ejections.store(0, Ordering::Relaxed);
            }
        }
        false
    }

    /// Adds a time-to-first-byte sample to the peak-EWMA: a slower sample is taken at once
    /// (peak), a faster one is blended in with a weight that decays with the time since the
    /// last sample, as Finagle and linkerd do.
    pub fn observe_latency(&self, sample: Duration, now_ms: u64) {
        let sample_us = sample.as_secs_f64() * 1e6;
        let prev = f64::from_bits(self.ewma_us.load(Ordering::Relaxed));
        let prev_at = self.ewma_at.swap(now_ms, Ordering::Relaxed);
        let next = if prev == 0.0 || sample_us > prev {
            sample_us
        } else {
            let elapsed = now_ms.saturating_sub(prev_at) as f64;
            let w = (-elapsed / EWMA_DECAY_MS).exp();
            prev * w + sample_us * (1.0 - w)
        };
        self.ewma_us.store(next.to_bits(), Ordering::Relaxed);
    }

    /// The peak-EWMA latency in microseconds; `None` before the first sample.
    pub fn latency_us(&self) -> Option<f64> {
        let v = f64::from_bits(self.ewma_us.load(Ordering::Relaxed));
        (v > 0.0).then_some(v)
    }

    pub fn ejected_until(&self) -> u64 {
        self.ejected_until.load(Ordering::Relaxed)
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

/// Where a backend came from: spawned by the fleet, listed in the config as a static address,
/// or found by the category's DNS discovery.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Origin {
    Spawned,
    Static,
    Discovered,
}

#[derive(Debug, Clone)]
pub struct Backend {
    pub id: Arc<str>,
    pub addr: SocketAddr,
    /// `Host` the proxy sends it (its own address), built once rather than per request.
    pub host: http::HeaderValue,
    pub origin: Origin,
    pub weight: u32,
    /// The fleet says it is running and accepting connections (static backends: always).
    pub ready: bool,
    /// The active health checker's verdict.
    pub healthy: bool,
    /// Being removed (reload, restart): no new requests; its sessions may finish until the drain
    /// ends.
    pub draining: bool,
    pub state: Arc<BackendState>,
}

/// The `Host` value for a server at `addr`.
pub fn host_header(addr: SocketAddr) -> http::HeaderValue {
    http::HeaderValue::from_str(&addr.to_string())
        .unwrap_or_else(|_| http::HeaderValue::from_static("localhost"))
}

impl Backend {
    /// Whether the snapshot offers it to strategies for new requests.
    pub fn eligible(&self) -> bool {
        self.ready && self.healthy && !self.draining
    }

    /// Whether requests of sessions it owns may still reach it.
    pub fn serves_sessions(&self) -> bool {
        self.ready && self.healthy
    }
}
