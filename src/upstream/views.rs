//! Read-only documents built from one snapshot: `/stats` (every server's live state) and
//! `/health` (one definition of "serving", used by the proxy's port and the monitor's alike).

use super::{clock, Backend, Origin, Snapshot};
use crate::api::{CategoryHealth, Health, HealthStatus};
use serde::Serialize;
use std::collections::BTreeMap;

impl Snapshot {
    pub fn stats(&self) -> FleetStats {
        let now = clock::now_ms();
        let categories = self
            .sets
            .iter()
            .map(|set| {
                let servers: Vec<ServerStats> =
                    set.all.iter().map(|b| server_stats(b, now)).collect();
                CategoryStats {
                    name: set.name.to_string(),
                    strategy: set.strategy_kind.name(),
                    ready: Self::serving(set, now),
                    total: set.all.len(),
                    requests: servers.iter().map(|s| s.requests).sum(),
                    servers,
                }
            })
            .collect::<Vec<_>>();
        FleetStats {
            ready: categories.iter().map(|c| c.ready).sum(),
            total: categories.iter().map(|c| c.total).sum(),
            categories,
        }
    }

    /// `/health`: `ok` when every category serves with all its planned servers, `partial` when
    /// every category serves but some with fewer, `degraded` when one serves none, `draining`
    /// when the proxy is stopping. Serving means what the strategies pick from: ready, passing
    /// checks, not draining, not ejected.
    pub fn health(&self, stopping: bool, labels: &[(&'static str, &'static str)]) -> Health {
        let now = clock::now_ms();
        let categories: Vec<CategoryHealth> = self
            .sets
            .iter()
            // A category still configured counts even with no members (its servers are not
            // deployed, or the fleet is off): it serves nothing, which is what /health must say.
            .filter(|s| s.configured)
            .map(|s| {
                let serving = Self::serving(s, now);
                CategoryHealth {
                    name: s.name.to_string(),
                    serving,
                    planned: s.planned,
                    below_plan: serving < s.planned,
                }
            })
            .collect();
        let status = if stopping {
            HealthStatus::Draining
        } else if categories.iter().any(|c| c.serving == 0) {
            HealthStatus::Degraded
        } else if categories.iter().any(|c| c.below_plan) {
            HealthStatus::Partial
        } else {
            HealthStatus::Ok
        };
        Health {
            status,
            serving: categories.iter().map(|c| c.serving).sum(),
            planned: categories.iter().map(|c| c.planned).sum(),
            categories,
            uptime_s: None,
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<BTreeMap<_, _>>(),
        }
    }
}

fn server_stats(b: &Backend, now: u64) -> ServerStats {
    ServerStats {
        id: b.id.to_string(),
        addr: b.addr.to_string(),
        origin: b.origin,
        weight: b.weight,
        ready: b.ready,
        healthy: b.healthy,
        draining: b.draining,
        ejected_ms: b.state.ejected_until().saturating_sub(now),
        in_flight: b.state.in_flight(),
        requests: b.state.requests(),
        failures: b.state.failures(),
        connect_failures: b.state.connect_failures(),
        ejections: b.state.ejections_total(),
        latency_ms: b.state.latency_us().map(|us| (us / 10.0).round() / 100.0),
    }
}

#[derive(Debug, Serialize)]
pub struct FleetStats {
    pub ready: usize,
    pub total: usize,
    pub categories: Vec<CategoryStats>,
}

#[derive(Debug, Serialize)]
pub struct CategoryStats {
    pub name: String,
    pub strategy: &'static str,
    /// Servers taking new requests: ready, healthy and not ejected.
    pub ready: usize,
    pub total: usize,
    pub requests: u64,
    pub servers: Vec<ServerStats>,
}

#[derive(Debug, Serialize)]
pub struct ServerStats {
    pub id: String,
    pub addr: String,
    pub origin: Origin,
    pub weight: u32,
    pub ready: bool,
    pub healthy: bool,
    pub draining: bool,
    /// Milliseconds of passive ejection left (0: not ejected).
    pub ejected_ms: u64,
    pub in_flight: u32,
    pub requests: u64,
    pub failures: u64,
    pub connect_failures: u64,
    pub ejections: u64,
    /// Peak-EWMA time to first byte.
    pub latency_ms: Option<f64>,
}
