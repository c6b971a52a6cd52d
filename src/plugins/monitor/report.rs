//! `/report`: the seed's daily report, from the series kept since the instance started.

use super::{lock, series, Monitor};
use crate::api::{CategoryReport, Reloads, Report};
use crate::metrics::{self, metrics};
use std::collections::BTreeMap;

impl Monitor {
    /// The seed's daily report, since this instance started.
    pub(super) fn report(&self) -> Report {
        let snap = self.registry.load();
        let first = series::Sample {
            at: self.started,
            unix: 0,
            categories: BTreeMap::new(),
            cpu: (0, 0),
        };
        let now = series::take();
        let categories = snap
            .sets
            .iter()
            .map(|s| {
                let w = series::window(&first, &now, Some(&s.name), &self.bounds);
                CategoryReport {
                    category: s.name.to_string(),
                    requests: w.requests,
                    error_rate: w.error_rate,
                    p50: w.p50,
                    p95: w.p95,
                    p99: w.p99,
                }
            })
            .collect();
        let all = series::window(&first, &now, None, &self.bounds);
        let m = metrics();
        let sum = |c: &prometheus::IntCounterVec| -> u64 {
            use prometheus::core::Collector;
            c.collect()
                .iter()
                .flat_map(|f| {
                    f.get_metric()
                        .iter()
                        .map(|m| m.get_counter().get_value() as u64)
                })
                .sum()
        };
        let (restarts, oom_kills) = self
            .fleet
            .as_ref()
            .map(|f| {
                (
                    f.servers()
                        .iter()
                        .map(|s| u64::from(s.restarts))
                        .sum::<u64>(),
                    f.oom_kills().values().map(|&n| u64::from(n)).sum::<u64>(),
                )
            })
            .unwrap_or((0, 0));
        Report {
            uptime_s: self.started.elapsed().as_secs(),
            requests: all.requests,
            error_rate: all.error_rate,
            p50: all.p50,
            p95: all.p95,
            p99: all.p99,
            categories,
            restarts,
            oom_kills,
            alerts_fired: sum(&m.alerts_fired),
            alerts_firing: lock(&self.firing).len(),
            reloads: Reloads {
                applied: metrics::reloads("applied"),
                invalid: metrics::reloads("invalid"),
            },
            deployments: self
                .history
                .entries()
                .iter()
                .filter(|d| d.kind != crate::api::EntryKind::Reload)
                .count(),
        }
    }
}
