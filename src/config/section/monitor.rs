//! `[monitor]` and `[admin]`: the two control listeners, the alert thresholds, the admin token
//! file.

use super::super::defaults as d;
use super::super::fields::{duration, resolve, share, socket_addr, Errors};
use super::super::model::{AlertThresholds, MonitorConfig};
use super::super::raw::{RawAdmin, RawMonitor};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

pub(in crate::config) fn monitor(
    m: &RawMonitor,
    errors: &mut Errors,
) -> (SocketAddr, MonitorConfig) {
    let listen = socket_addr(
        "monitor.listen",
        m.listen.as_deref(),
        d::MONITOR_LISTEN,
        errors,
    );
    let a = &m.alerts;
    let config = MonitorConfig {
        per_server_metrics: m.per_server_metrics.unwrap_or(d::PER_SERVER_METRICS),
        alerts: AlertThresholds {
            response_time: duration(
                "monitor.alerts.response_time",
                a.response_time.as_deref(),
                d::ALERT_RESPONSE_TIME,
                errors,
            ),
            error_rate: share(
                "monitor.alerts.error_rate",
                a.error_rate,
                d::ALERT_ERROR_RATE,
                errors,
            ),
            memory_usage: share(
                "monitor.alerts.memory_usage",
                a.memory_usage,
                d::ALERT_MEMORY_USAGE,
                errors,
            ),
            cpu_usage: share(
                "monitor.alerts.cpu_usage",
                a.cpu_usage,
                d::ALERT_CPU_USAGE,
                errors,
            ),
            disk_usage: share(
                "monitor.alerts.disk_usage",
                a.disk_usage,
                d::ALERT_DISK_USAGE,
                errors,
            ),
            window: duration(
                "monitor.alerts.window",
                a.window.as_deref(),
                d::ALERT_WINDOW,
                errors,
            ),
            interval: duration(
                "monitor.alerts.interval",
                a.interval.as_deref(),
                d::ALERT_INTERVAL,
                errors,
            ),
        },
    };
    (listen, config)
}

pub(in crate::config) fn admin(
    a: &RawAdmin,
    base: &Path,
    errors: &mut Errors,
) -> (SocketAddr, Option<PathBuf>) {
    (
        socket_addr("admin.listen", a.listen.as_deref(), d::ADMIN_LISTEN, errors),
        a.token_file.as_deref().map(|p| resolve(base, p)),
    )
}
