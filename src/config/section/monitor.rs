//! `[monitor]`, `[admin]`, `[session]` and `[dns]`: the two control listeners, the alert
//! thresholds, the admin token file, the session key files and the resolver for discovery.

use super::super::defaults as d;
use super::super::fields::bounded;
use super::super::fields::{duration, resolve, share, socket_addr, Errors};
use super::super::model::{AlertThresholds, DnsConfig, MonitorConfig, SessionConfig};
use super::super::raw::{RawAdmin, RawDns, RawMonitor, RawSession};
use super::super::ConfigError;
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

pub(in crate::config) fn session(s: &RawSession, state_dir: &Path, base: &Path) -> SessionConfig {
    SessionConfig {
        key_file: s
            .key_file
            .as_deref()
            .map_or_else(|| state_dir.join(d::SESSION_KEY_FILE), |p| resolve(base, p)),
        generated: s.key_file.is_none(),
        previous_key_files: s
            .previous_key_files
            .iter()
            .flatten()
            .map(|p| resolve(base, p))
            .collect(),
    }
}

pub(in crate::config) fn dns(raw: &RawDns, errors: &mut Errors) -> DnsConfig {
    let mut servers = Vec::new();
    for text in raw.servers.iter().flatten() {
        match text.parse::<SocketAddr>() {
            Ok(a) if a.port() != 0 => servers.push(a),
            _ => errors.push(ConfigError::new(
                "dns.servers",
                format!("{text:?}"),
                "each server is IP:PORT, e.g. \"10.96.0.10:53\"",
            )),
        }
    }
    DnsConfig {
        servers,
        interval: duration(
            "dns.interval",
            raw.interval.as_deref(),
            d::DNS_INTERVAL,
            errors,
        ),
        timeout: duration(
            "dns.timeout",
            raw.timeout.as_deref(),
            d::DNS_TIMEOUT,
            errors,
        ),
        nxdomain_limit: bounded(
            "dns.nxdomain_limit",
            raw.nxdomain_limit,
            d::DNS_NXDOMAIN_LIMIT,
            1..=100,
            errors,
        ) as u32,
    }
}
