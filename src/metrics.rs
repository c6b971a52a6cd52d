//! Every Prometheus metric, defined once. Labels have bounded values.

use prometheus::{IntCounterVec, Opts, Registry};
use std::sync::OnceLock;

pub struct Metrics {
    pub registry: Registry,
    pub reloads: IntCounterVec,
}

fn metrics() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(|| {
        let registry = Registry::new();
        let reloads = IntCounterVec::new(
            Opts::new(
                "mcp_fleet_reloads_total",
                "Configuration reloads, by result (applied, invalid).",
            ),
            &["result"],
        )
        .unwrap_or_else(|e| unreachable!("static metric definition is valid: {e}"));
        let _ = registry.register(Box::new(reloads.clone()));
        Metrics { registry, reloads }
    })
}

/// Counts a reload; `result` is "applied" or "invalid".
pub fn reload(result: &'static str) {
    metrics().reloads.with_label_values(&[result]).inc();
}

/// The text exposition of every metric.
pub fn render() -> String {
    let families = metrics().registry.gather();
    prometheus::TextEncoder::new()
        .encode_to_string(&families)
        .unwrap_or_default()
}

/// Current count of reloads with `result`.
pub fn reloads(result: &str) -> u64 {
    metrics().reloads.with_label_values(&[result]).get()
}
