//! Every Prometheus metric, defined once, all named `mcp_fleet_*`, with bounded labels: category
//! (from the config), status class, MCP method (a fixed list, "other" beyond it), and server id
//! only on the per-server series that `monitor.per_server_metrics` can turn off.
//!
//! The proxy records requests, retries and sessions as they happen (one label lookup and an
//! atomic add each); everything that is state (servers, health, memory, restarts) is read from
//! its owner when `/metrics` is scraped, by the monitor.

use prometheus::{
    Gauge, GaugeVec, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec,
    Opts, Registry,
};
use std::sync::OnceLock;

/// MCP methods counted by name (from the `Mcp-Method` header); others are "other".
pub const METHODS: &[&str] = &[
    "initialize",
    "ping",
    "tools/list",
    "tools/call",
    "resources/list",
    "resources/read",
    "resources/templates/list",
    "prompts/list",
    "prompts/get",
    "completion/complete",
    "logging/setLevel",
    "server/discover",
];

/// The bounded method label for an `Mcp-Method` header value.
pub fn method_label(header: Option<&[u8]>) -> &'static str {
    match header {
        None => "none",
        Some(h) if h.starts_with(b"notifications/") => "notification",
        Some(h) => METHODS
            .iter()
            .find(|m| m.as_bytes() == h)
            .copied()
            .unwrap_or("other"),
    }
}

/// Status classes, in the order of `CategoryRequests`' table.
const CLASSES: [&str; 6] = ["1xx", "2xx", "3xx", "4xx", "5xx", "none"];

fn class_index(status: u16) -> usize {
    match status {
        100..=599 => usize::from(status / 100 - 1),
        _ => CLASSES.len() - 1,
    }
}

pub fn status_class(status: u16) -> &'static str {
    CLASSES[class_index(status)]
}

/// Latency buckets (seconds): fine below 100 ms where MCP calls live, up to the 5 s first-byte
/// timeout and the long tool calls beyond.
pub const BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 120.0,
];

pub struct Metrics {
    pub registry: Registry,
    pub requests: IntCounterVec,
    pub duration: HistogramVec,
    pub retries: IntCounterVec,
    pub sessions_created: IntCounterVec,
    pub sessions_not_found: IntCounterVec,
    pub sessions_ended: IntCounterVec,
    pub sessions_active: IntGaugeVec,
    pub reloads: IntCounterVec,
    pub discovery: IntCounterVec,
    pub discovered: IntGaugeVec,
    pub in_flight: IntGauge,
    pub connections: IntGauge,
    pub sse_streams: IntGauge,
    pub refused: IntCounterVec,
    /// Requests taken by the fast path, and those handed to Pingora's path
    /// (`mcp_fleet_request_paths_total{path}`), resolved once.
    pub fast_path: IntCounter,
    pub pingora_path: IntCounter,
    pub upstream_idle: IntGauge,
    pub servers: IntGaugeVec,
    pub server_up: IntGaugeVec,
    pub server_requests: IntCounterVec,
    pub ejections: IntCounterVec,
    pub memory: IntGaugeVec,
    pub server_memory: IntGaugeVec,
    pub cpu: GaugeVec,
    pub server_cpu: GaugeVec,
    pub restarts: IntCounterVec,
    pub oom_kills: IntCounterVec,
    pub failed: IntGaugeVec,
    pub deployment: IntGaugeVec,
    pub stdio_children: IntGaugeVec,
    pub stdio_sessions: IntGaugeVec,
    pub stdio_spawns: IntCounterVec,
    pub stdio_reaps: IntCounterVec,
    pub stdio_exits: IntCounterVec,
    pub stdio_lines_refused: IntCounterVec,
    pub stdio_outlived: IntCounterVec,
    pub auth_refused: IntCounterVec,
    pub auth_keys: IntGaugeVec,
    pub auth_key_fetch_failures: IntCounterVec,
    pub rate_limited: IntCounterVec,
    pub policy_refused: IntCounterVec,
    pub list_filtered: IntCounterVec,
    pub alerts_firing: IntGaugeVec,
    pub alerts_fired: IntCounterVec,
    pub uptime: Gauge,
    pub build_info: IntGaugeVec,
}

fn counter(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help), labels)
        .unwrap_or_else(|e| unreachable!("static metric {name} is valid: {e}"));
    let _ = r.register(Box::new(c.clone()));
    c
}

fn gauge(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    let g = IntGaugeVec::new(Opts::new(name, help), labels)
        .unwrap_or_else(|e| unreachable!("static metric {name} is valid: {e}"));
    let _ = r.register(Box::new(g.clone()));
    g
}

fn plain_gauge(r: &Registry, name: &str, help: &str) -> IntGauge {
    let g = IntGauge::new(name, help)
        .unwrap_or_else(|e| unreachable!("static gauge {name} is valid: {e}"));
    let _ = r.register(Box::new(g.clone()));
    g
}

fn fgauge(r: &Registry, name: &str, help: &str, labels: &[&str]) -> GaugeVec {
    let g = GaugeVec::new(Opts::new(name, help), labels)
        .unwrap_or_else(|e| unreachable!("static metric {name} is valid: {e}"));
    let _ = r.register(Box::new(g.clone()));
    g
}

pub fn metrics() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(|| {
        let r = Registry::new();
        let duration = HistogramVec::new(
            HistogramOpts::new(
                "mcp_fleet_request_duration_seconds",
                "Time from a request's arrival to the end of its answer, by category.",
            )
            .buckets(BUCKETS.to_vec()),
            &["category"],
        )
        .unwrap_or_else(|e| unreachable!("static histogram is valid: {e}"));
        let _ = r.register(Box::new(duration.clone()));
        let uptime = Gauge::new("mcp_fleet_uptime_seconds", "Seconds since serve started.")
            .unwrap_or_else(|e| unreachable!("static gauge is valid: {e}"));
        let _ = r.register(Box::new(uptime.clone()));
        let paths = counter(&r, "mcp_fleet_request_paths_total", "Requests by the path through the proxy: fast (POSTs, event-stream GETs and DELETEs exchanged in the connection's task) or pingora (everything else).", &["path"]);
        let m = Metrics {
            fast_path: paths.with_label_values(&["fast"]),
            pingora_path: paths.with_label_values(&["pingora"]),
            upstream_idle: plain_gauge(&r, "mcp_fleet_upstream_idle_connections", "Idle upstream connections kept by the fast path for reuse."),
            requests: counter(&r, "mcp_fleet_requests_total", "Requests answered, by category, status class and MCP method (Mcp-Method header).", &["category", "class", "method"]),
            duration,
            retries: counter(&r, "mcp_fleet_retries_total", "Requests sent again to another server, by category and reason.", &["category", "reason"]),
            sessions_created: counter(&r, "mcp_fleet_sessions_created_total", "MCP sessions minted by servers and sealed by the proxy.", &["category"]),
            sessions_not_found: counter(&r, "mcp_fleet_sessions_not_found_total", "Requests with a session id that no longer routes (404).", &["category"]),
            sessions_ended: counter(&r, "mcp_fleet_sessions_ended_total", "Sessions ended by the client (DELETE answered 2xx).", &["category"]),
            sessions_active: gauge(&r, "mcp_fleet_sessions_active", "Sessions created and not yet ended by a DELETE (sessions a server drops on its own are not seen).", &["category"]),
            reloads: counter(&r, "mcp_fleet_reloads_total", "Configuration reloads, by result (applied, invalid).", &["result"]),
            discovery: counter(&r, "mcp_fleet_discovery_resolutions_total", "DNS resolutions of discovering categories, by result (ok, nxdomain, error; on error the last good set is kept).", &["category", "result"]),
            discovered: gauge(&r, "mcp_fleet_discovered_servers", "Servers a category's last good DNS answer named.", &["category"]),
            in_flight: plain_gauge(&r, "mcp_fleet_in_flight_requests", "Requests being served by the proxy now."),
            connections: plain_gauge(&r, "mcp_fleet_client_connections", "Client connections open on the proxy listener."),
            sse_streams: plain_gauge(&r, "mcp_fleet_sse_streams", "Standalone event streams (MCP GET) open through the proxy."),
            refused: counter(&r, "mcp_fleet_refused_total", "Client connections or requests refused by a listener limit (max_connections, header_timeout, max_sse_streams) or cut for a faulty answer (max_response_body).", &["reason"]),
            servers: gauge(&r, "mcp_fleet_servers", "Servers per category by state (total, ready, healthy, serving, ejected, draining).", &["category", "state"]),
            server_up: gauge(&r, "mcp_fleet_server_up", "1 when the server takes new requests (ready, healthy, not ejected, not draining).", &["category", "server"]),
            server_requests: counter(&r, "mcp_fleet_server_requests_total", "Requests the balancer sent to each server.", &["category", "server"]),
            ejections: counter(&r, "mcp_fleet_ejections_total", "Passive ejections of servers, by category.", &["category"]),
            memory: gauge(&r, "mcp_fleet_memory_bytes", "Memory of the running servers of a category: the sum of their PSS (a shared page counts once across them).", &["category"]),
            server_memory: gauge(&r, "mcp_fleet_server_memory_bytes", "PSS of each running server (its share of the pages it maps).", &["category", "server"]),
            cpu: fgauge(&r, "mcp_fleet_cpu_seconds", "CPU time used by the running servers of a category (current processes).", &["category"]),
            server_cpu: fgauge(&r, "mcp_fleet_server_cpu_seconds", "CPU time used by each running server process.", &["category", "server"]),
            restarts: counter(&r, "mcp_fleet_restarts_total", "Server restarts after an exit, by category.", &["category"]),
            oom_kills: counter(&r, "mcp_fleet_oom_kills_total", "Servers killed by the kernel's OOM killer at their memory limit.", &["category"]),
            failed: gauge(&r, "mcp_fleet_failed_servers", "Servers left stopped after too many restarts.", &["category"]),
            deployment: gauge(&r, "mcp_fleet_deployment_servers", "Deployment progress: planned, deployed and running servers.", &["state"]),
            stdio_children: gauge(&r, "mcp_fleet_stdio_children", "Children of stdio servers alive now (one per session, or one shared per server), by category.", &["category"]),
            stdio_sessions: gauge(&r, "mcp_fleet_stdio_sessions", "Sessions the stdio bridges hold, by category.", &["category"]),
            stdio_spawns: counter(&r, "mcp_fleet_stdio_spawns_total", "Children of stdio servers started, by category.", &["category"]),
            stdio_reaps: counter(&r, "mcp_fleet_stdio_reaps_total", "Children (or sessions) of stdio servers ended for sitting idle past idle_timeout.", &["category"]),
            stdio_exits: counter(&r, "mcp_fleet_stdio_exits_total", "Children of stdio servers that ended, by cause: stopped (by the bridge), exited (status 0), crashed, oom.", &["category", "cause"]),
            stdio_lines_refused: counter(&r, "mcp_fleet_stdio_lines_refused_total", "Stdout lines of stdio children not forwarded, by reason: not_json (logged), oversized (over 16 MiB; its request failed).", &["category", "reason"]),
            stdio_outlived: counter(&r, "mcp_fleet_stdio_outlived_processes_total", "Processes found alive after their stdio child was ended and its cgroup killed (expected 0).", &["category"]),
            auth_refused: counter(&r, "mcp_fleet_auth_refused_total", "Requests refused for their credentials, by reason (missing, not_bearer, unknown_key, malformed, algorithm, unknown_kid, signature, expired, not_yet_valid, issuer, audience, no_keys, scope, category).", &["reason"]),
            auth_keys: gauge(&r, "mcp_fleet_auth_signing_keys", "Signing keys of the OAuth issuer in force.", &["state"]),
            auth_key_fetch_failures: counter(&r, "mcp_fleet_auth_key_fetch_failures_total", "Fetches of the issuer's metadata or key set that failed.", &["source"]),
            rate_limited: counter(&r, "mcp_fleet_rate_limited_total", "Requests refused with 429, by bucket kind (principal, anonymous).", &["kind"]),
            policy_refused: counter(&r, "mcp_fleet_policy_refused_total", "Requests refused by a category's allow-lists or for routing fields that disagree with the body, by category and reason (tool, prompt, resource, mismatch, unreadable).", &["category", "reason"]),
            list_filtered: counter(&r, "mcp_fleet_list_items_hidden_total", "Entries of tools/list, prompts/list and resources/list answers left out because the caller may not use them, by category.", &["category"]),
            alerts_firing: gauge(&r, "mcp_fleet_alert_firing", "1 while the alert fires.", &["alert"]),
            alerts_fired: counter(&r, "mcp_fleet_alerts_fired_total", "Times each alert started firing.", &["alert"]),
            uptime,
            build_info: gauge(&r, "mcp_fleet_build_info", "Always 1; the version in a label.", &["version"]),
            registry: r,
        };
        m.build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1);
        m
    })
}

/// Counts a reload; `result` is "applied" or "invalid".
pub fn reload(result: &'static str) {
    metrics().reloads.with_label_values(&[result]).inc();
}

/// Method labels besides `METHODS`.
const OTHER_METHODS: [&str; 3] = ["none", "notification", "other"];
const METHOD_LABELS: usize = METHODS.len() + OTHER_METHODS.len();

fn method_index(label: &str) -> usize {
    METHODS
        .iter()
        .chain(OTHER_METHODS.iter())
        .position(|m| *m == label)
        .unwrap_or(METHOD_LABELS - 1)
}

/// The request counters and latency histogram of one category, found in the registry once
/// per label set instead of hashed and looked up on every request (two lookups cost about as
/// much as the rest of the proxy's bookkeeping for a small request).
pub struct CategoryRequests {
    duration: OnceLock<prometheus::Histogram>,
    counts: [OnceLock<IntCounter>; CLASSES.len() * METHOD_LABELS],
}

impl Default for CategoryRequests {
    fn default() -> Self {
        Self {
            duration: OnceLock::new(),
            counts: std::array::from_fn(|_| OnceLock::new()),
        }
    }
}

impl std::fmt::Debug for CategoryRequests {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CategoryRequests(..)")
    }
}

impl CategoryRequests {
    /// One answered request of `category` (always the same category for one table).
    pub fn record(&self, category: &str, status: u16, method: &'static str, seconds: f64) {
        let class = class_index(status);
        let slot = class * METHOD_LABELS + method_index(method);
        self.counts[slot]
            .get_or_init(|| {
                metrics()
                    .requests
                    .with_label_values(&[category, CLASSES[class], method])
            })
            .inc();
        self.duration
            .get_or_init(|| metrics().duration.with_label_values(&[category]))
            .observe(seconds);
    }
}

/// One answered request.
pub fn request(category: &str, status: u16, method: &'static str, seconds: f64) {
    let m = metrics();
    m.requests
        .with_label_values(&[category, status_class(status), method])
        .inc();
    m.duration.with_label_values(&[category]).observe(seconds);
}

/// A connection or request refused by a limit; `reason` names the limit's key.
pub fn refused(reason: &'static str) {
    metrics().refused.with_label_values(&[reason]).inc();
}

pub fn retry(category: &str, reason: &'static str) {
    metrics()
        .retries
        .with_label_values(&[category, reason])
        .inc();
}

pub fn session_created(category: &str) {
    metrics()
        .sessions_created
        .with_label_values(&[category])
        .inc();
}

pub fn session_ended(category: &str) {
    metrics()
        .sessions_ended
        .with_label_values(&[category])
        .inc();
}

pub fn session_not_found(category: &str) {
    metrics()
        .sessions_not_found
        .with_label_values(&[category])
        .inc();
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

/// Raises a monotonic counter to `total` (state kept elsewhere, mirrored at scrape time); a total
/// below the counter (its owner restarted counting) adds the new total instead.
pub fn mirror(counter: &prometheus::IntCounter, total: u64) {
    let now = counter.get();
    if total >= now {
        counter.inc_by(total - now);
    } else {
        counter.inc_by(total);
    }
}

/// A request refused for its credentials or scopes; `reason` is a fixed label.
pub fn auth_refused(reason: &'static str) {
    metrics().auth_refused.with_label_values(&[reason]).inc();
}

pub fn auth_keys(n: usize) {
    metrics()
        .auth_keys
        .with_label_values(&["loaded"])
        .set(n as i64);
}

pub fn auth_key_fetch_failed() {
    metrics()
        .auth_key_fetch_failures
        .with_label_values(&["issuer"])
        .inc();
}

pub fn rate_limited(kind: &'static str) {
    metrics().rate_limited.with_label_values(&[kind]).inc();
}

pub fn policy_refused(category: &str, reason: &'static str) {
    metrics()
        .policy_refused
        .with_label_values(&[category, reason])
        .inc();
}

pub fn list_filtered(category: &str, hidden: usize) {
    metrics()
        .list_filtered
        .with_label_values(&[category])
        .inc_by(hidden as u64);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_bounded() {
        assert_eq!(method_label(Some(b"tools/call")), "tools/call");
        assert_eq!(
            method_label(Some(b"notifications/initialized")),
            "notification"
        );
        assert_eq!(method_label(Some(b"made/up")), "other");
        assert_eq!(method_label(None), "none");
        assert_eq!(status_class(503), "5xx");
        assert_eq!(status_class(0), "none");
    }
}
