//! The JSON documents of the admin API (`admin.listen`) and the monitor (`monitor.listen`), one
//! type each, shared by the servers that write them and the command line that reads them. Kinds
//! and outcomes are enums, so a typo is a compile error on both sides, not a silent mismatch.
//! This module uses nothing else of the crate.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// A server's lifecycle state, as its supervisor sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ServerState {
    Starting,
    Running,
    /// Exited; waiting out the back-off before the next start.
    Backoff,
    /// Too many restarts: left stopped until `retry-failed`.
    Failed,
    Draining,
    Stopped,
}

/// Whether the proxy sends a server new requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ServerHealth {
    /// Its process is not running.
    Down,
    /// Passively ejected after consecutive failures, for a while.
    Ejected,
    Healthy,
    /// Running, but failing (or not yet passing) its active check.
    Unhealthy,
}

/// Where a bridged stdio server answers the fleet's health checker (the bridge serves it; the
/// checker asks it); answering never starts a child or a session.
pub const BRIDGE_HEALTH_PATH: &str = "/.mcp-fleet/bridge-health";

/// One server of `GET /servers`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServerInfo {
    pub id: String,
    pub index: usize,
    pub category: String,
    pub port: u16,
    pub pid: Option<u32>,
    pub state: ServerState,
    pub uptime_s: Option<u64>,
    pub restarts: u32,
    /// What the kernel charges the server (see [`MemoryMeasure`]).
    pub memory_bytes: Option<u64>,
    pub last_error: Option<String>,
    pub health: ServerHealth,
    pub draining: bool,
    /// A stdio server's bridge: its children and sessions (absent for HTTP servers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stdio: Option<StdioInfo>,
}

/// What a bridged (stdio) server holds and has done since it started.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StdioInfo {
    pub children: u64,
    pub sessions: u64,
    pub spawns: u64,
    pub spawn_failures: u64,
    /// Children ended because their session (or the shared child) sat idle.
    pub reaps: u64,
    pub exits: StdioExits,
    pub non_json_lines: u64,
    pub oversized_lines: u64,
    /// Processes found alive after their child was ended and its cgroup killed (expected 0).
    pub outlived: u64,
    /// Sessions closed because their client stopped reading.
    pub slow_closed: u64,
    /// Requests answered 503 for want of a session or child slot.
    pub refused: u64,
}

impl std::ops::AddAssign<&StdioInfo> for StdioInfo {
    /// Totals over servers (a category's, for `status` and `/metrics`).
    fn add_assign(&mut self, i: &StdioInfo) {
        self.children += i.children;
        self.sessions += i.sessions;
        self.spawns += i.spawns;
        self.spawn_failures += i.spawn_failures;
        self.reaps += i.reaps;
        self.exits.stopped += i.exits.stopped;
        self.exits.exited += i.exits.exited;
        self.exits.crashed += i.exits.crashed;
        self.exits.oom += i.exits.oom;
        self.non_json_lines += i.non_json_lines;
        self.oversized_lines += i.oversized_lines;
        self.outlived += i.outlived;
        self.slow_closed += i.slow_closed;
        self.refused += i.refused;
    }
}

impl StdioInfo {
    /// The bridges of `servers` summed per category (`status`, `/metrics`, the dashboard).
    pub fn by_category(servers: &[ServerInfo]) -> std::collections::BTreeMap<&str, StdioInfo> {
        let mut by = std::collections::BTreeMap::<&str, StdioInfo>::new();
        for s in servers {
            if let Some(i) = &s.stdio {
                *by.entry(s.category.as_str()).or_default() += i;
            }
        }
        by
    }
}

/// Children's exits by cause.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StdioExits {
    pub stopped: u64,
    pub exited: u64,
    pub crashed: u64,
    pub oom: u64,
}

/// What a history entry records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum EntryKind {
    Startup,
    Deploy,
    RetryFailed,
    Restart,
    Reload,
}

/// How it ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    /// Every server asked for is running.
    Ok,
    /// Some failed (see `failed`).
    Partial,
    /// Nothing was started (the memory budget).
    Refused,
    /// A reload whose config was applied.
    Applied,
    /// A reload whose config was refused; nothing changed.
    Invalid,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failure {
    pub id: String,
    pub error: String,
}

/// One deployment, restart, retry or reload, for `GET /deployments`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    pub seq: u64,
    pub kind: EntryKind,
    /// Seconds since the Unix epoch.
    pub started_at: u64,
    pub duration_ms: u64,
    pub requested: usize,
    #[serde(default)]
    pub deployed: Vec<String>,
    #[serde(default)]
    pub failed: Vec<Failure>,
    #[serde(default)]
    pub already: Vec<String>,
    pub outcome: Outcome,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

/// `POST /deploy`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeployRequest {
    pub batch_size: usize,
    #[serde(default)]
    pub start_index: usize,
}

/// `key: old -> new`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Change {
    pub key: String,
    pub old: String,
    pub new: String,
}

impl std::fmt::Display for Change {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {} -> {}", self.key, self.old, self.new)
    }
}

/// What an applied reload did (`POST /reload`, 200).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReloadReport {
    /// The history entry it was recorded as.
    pub seq: u64,
    /// Files the config names that were read again and changed (e.g. rotated session keys).
    #[serde(default)]
    pub reread: Vec<String>,
    /// Changed keys the running instance applied.
    pub changes: Vec<Change>,
    /// Changed keys it keeps at their running value until `mcp-fleet serve` restarts.
    pub needs_restart: Vec<Change>,
    pub added: Vec<String>,
    pub removed: Vec<String>,
    pub replaced: Vec<String>,
    /// Servers draining now (removed or replaced).
    pub draining: usize,
    /// Building the new snapshot, off the request path.
    pub build_us: u64,
    /// Publishing it: the only moment the proxy is touched.
    pub swap_us: u64,
}

/// Every error answer of the admin API; a refused reload (400) lists the config's errors.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiError {
    pub error: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<String>,
}

/// One row of `GET /status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CategoryStatus {
    pub category: String,
    /// Servers the config describes (spawned and static).
    pub planned: usize,
    /// Spawned servers under supervision, plus static backends.
    pub deployed: usize,
    /// Taking new requests now.
    pub serving: usize,
    pub failed: usize,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    pub categories: Vec<CategoryStatus>,
}

/// The overall verdict of `/health`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum HealthStatus {
    /// Every category serves with all its planned servers. HTTP 200.
    Ok,
    /// Every category serves, some with fewer servers than planned. HTTP 200: the proxy can
    /// answer every category, so a load balancer should keep sending to it.
    Partial,
    /// Some category has no server taking requests. HTTP 503.
    Degraded,
    /// The proxy is stopping. HTTP 503.
    Draining,
}

impl HealthStatus {
    pub fn http_status(self) -> u16 {
        match self {
            Self::Ok | Self::Partial => 200,
            Self::Degraded | Self::Draining => 503,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CategoryHealth {
    pub name: String,
    /// Servers taking new requests: ready, passing checks, not ejected, not draining.
    pub serving: usize,
    /// Servers the config describes.
    pub planned: usize,
    /// Serving fewer than planned.
    pub below_plan: bool,
}

/// `/health` on the proxy port and on the monitor port: one document, one definition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Health {
    pub status: HealthStatus,
    pub serving: usize,
    pub planned: usize,
    pub categories: Vec<CategoryHealth>,
    /// Seconds since start (the monitor's answer only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uptime_s: Option<u64>,
    /// Facts about the instance (e.g. `memory_enforcement`).
    #[serde(flatten)]
    pub labels: BTreeMap<String, String>,
}

/// `/readyz` on the monitor port: 200 when `ready`, else 503.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Readiness {
    pub ready: bool,
    /// SIGTERM arrived: in-flight requests and streams are finishing.
    pub stopping: bool,
    /// Start-up steps not done yet (the fleet's first deployment, a category's first discovery).
    pub waiting_for: Vec<String>,
}

/// Which figure the memory numbers are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum MemoryMeasure {
    /// Proportional set size: each page shared with N processes counts 1/N, so a fleet of one
    /// binary sums to what it really takes (its RSS sum counts the shared pages N times).
    Pss,
}

impl MemoryMeasure {
    pub fn label(self) -> &'static str {
        match self {
            Self::Pss => "PSS",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CategoryMemory {
    pub category: String,
    pub servers: usize,
    pub bytes: u64,
    pub limit_bytes: u64,
    pub over_limit: usize,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerMemory {
    pub id: String,
    pub pid: u32,
    pub bytes: u64,
    pub limit_bytes: u64,
}

/// A memory-policy action or an OOM kill.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum MemoryActionTaken {
    Restart,
    Alert,
    OomKill,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemoryEvent {
    /// Seconds since the Unix epoch.
    pub at: u64,
    pub id: String,
    pub action: MemoryActionTaken,
    pub bytes: Option<u64>,
    pub limit: u64,
}

/// `GET /memory`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemoryReport {
    pub enforcement: String,
    /// The figure every number below is (and the watcher enforces on).
    pub measure: MemoryMeasure,
    pub machine_total_bytes: u64,
    pub machine_available_bytes: u64,
    pub categories: Vec<CategoryMemory>,
    pub top: Vec<ServerMemory>,
    pub events: Vec<MemoryEvent>,
    pub oom_kills: BTreeMap<String, u32>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CategoryReport {
    pub category: String,
    pub requests: u64,
    pub error_rate: f64,
    pub p50: Option<f64>,
    pub p95: Option<f64>,
    pub p99: Option<f64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reloads {
    pub applied: u64,
    pub invalid: u64,
}

/// `/report` on the monitor port: the seed's daily report, since the instance started.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    pub uptime_s: u64,
    pub requests: u64,
    pub error_rate: f64,
    pub p50: Option<f64>,
    pub p95: Option<f64>,
    pub p99: Option<f64>,
    pub categories: Vec<CategoryReport>,
    pub restarts: u64,
    pub oom_kills: u64,
    pub alerts_fired: u64,
    pub alerts_firing: usize,
    pub reloads: Reloads,
    pub deployments: usize,
}
