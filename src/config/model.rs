//! The typed model a valid config becomes: plain data, no I/O. Only `validate` builds it.

use super::origin::AllowedOrigin;
use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::ops::RangeInclusive;
use std::path::PathBuf;
use std::time::Duration;

/// Strategies the proxy implements; the validator refuses others by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StrategyKind {
    RoundRobin,
    /// Smooth weighted round-robin (nginx's algorithm).
    Weighted,
    LeastConnections,
    /// Power of two random choices on in-flight requests, weight-aware.
    P2c,
    /// P2C on peak-EWMA latency x load.
    PeakEwma,
    /// Hash ring on a request header; minimal remapping when servers come and go.
    ConsistentHash,
}

impl StrategyKind {
    const ALL: [(Self, &'static str); 6] = [
        (Self::RoundRobin, "round-robin"),
        (Self::Weighted, "weighted"),
        (Self::LeastConnections, "least-connections"),
        (Self::P2c, "p2c"),
        (Self::PeakEwma, "peak-ewma"),
        (Self::ConsistentHash, "consistent-hash"),
    ];

    pub fn names() -> Vec<&'static str> {
        Self::ALL.iter().map(|(_, n)| *n).collect()
    }

    pub(super) fn parse(name: &str) -> Option<Self> {
        Self::ALL.iter().find(|(_, n)| *n == name).map(|(k, _)| *k)
    }

    pub fn name(self) -> &'static str {
        Self::ALL
            .iter()
            .find(|(k, _)| *k == self)
            .map_or("round-robin", |(_, n)| n)
    }
}

/// What an active health check does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HealthKind {
    /// A TCP connect.
    Tcp,
    /// `GET path`, expecting `expect_status`.
    Http { path: String, expect_status: u16 },
    /// A real MCP round trip: `initialize`, then `DELETE` of the session it made, so a check never
    /// leaves a session behind on the server.
    Mcp,
}

#[derive(Debug, Clone, PartialEq)]
pub struct HealthConfig {
    pub enabled: bool,
    pub kind: HealthKind,
    pub interval: Duration,
    pub timeout: Duration,
    pub unhealthy_threshold: u32,
    pub healthy_threshold: u32,
    /// Checks in flight at once across the fleet.
    pub concurrency: usize,
}

/// `[monitor]`: what `/metrics` shows and when `/alerts` fire (the seed's thresholds).
#[derive(Debug, Clone, PartialEq)]
pub struct MonitorConfig {
    /// Per-server series (1000 of each at the default fleet) in `/metrics`.
    pub per_server_metrics: bool,
    pub alerts: AlertThresholds,
}

#[derive(Debug, Clone, PartialEq)]
pub struct AlertThresholds {
    /// p95 response time over the window.
    pub response_time: Duration,
    /// Share of 5xx answers over the window.
    pub error_rate: f64,
    /// Machine memory in use as a share of `fleet.memory_budget`.
    pub memory_usage: f64,
    /// Machine CPU busy share over the window.
    pub cpu_usage: f64,
    /// Used share of the file systems holding the state and log dirs.
    pub disk_usage: f64,
    pub window: Duration,
    /// How often rules are evaluated (and the dashboard's series sampled).
    pub interval: Duration,
}

/// Passive outlier ejection.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EjectionConfig {
    /// Consecutive 5xx answers that eject a server.
    pub after_5xx: u32,
    /// First ejection; doubles with each repeated ejection up to `max_time`.
    pub base_time: Duration,
    pub max_time: Duration,
    /// Never eject more than this share of a category by passive checks alone.
    pub max_percent: u32,
}

/// Retries may add at most `percent` of the requests of the last 10 s, plus `min` per 10 s.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryBudget {
    pub percent: u32,
    pub min: u32,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ValidConfig {
    /// The file this came from; relative paths inside it were resolved against its folder.
    pub source: PathBuf,
    pub proxy: ProxyConfig,
    pub monitor_listen: SocketAddr,
    pub monitor: MonitorConfig,
    pub admin_listen: SocketAddr,
    /// Where the admin token is read from; `None`: generated at first start in the state dir
    /// (or taken from `MCP_FLEET_ADMIN_TOKEN`).
    pub admin_token_file: Option<PathBuf>,
    pub fleet: FleetConfig,
    pub health: HealthConfig,
    pub session: SessionConfig,
    pub dns: DnsConfig,
    pub auth: super::access::AuthConfig,
    /// In the order of their port ranges (static-only categories last), as the seed lists them.
    pub categories: Vec<CategoryConfig>,
}

/// `[dns]`: the resolver categories with `discover` use.
#[derive(Debug, Clone, PartialEq)]
pub struct DnsConfig {
    /// Name servers to ask (`IP:PORT`); empty: the system's (`/etc/resolv.conf`).
    pub servers: Vec<SocketAddr>,
    /// Longest wait between two resolutions of a name (a shorter TTL is honoured).
    pub interval: Duration,
    /// One resolution's deadline.
    pub timeout: Duration,
    /// NXDOMAIN answers in a row that empty a category (fewer keep its last good set).
    pub nxdomain_limit: u32,
}

/// `categories.NAME.discover`: where a category's servers come from besides `ports` and
/// `backends`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Discover {
    /// A and AAAA records of `name` (a headless Service), each address on `port`.
    Dns { name: String, port: u16 },
    /// SRV records of `name`: each target's addresses on the record's port.
    Srv { name: String },
}

/// `[session]`: the keys session ids are sealed with. Replicas that share these files route each
/// other's sessions; rotating means: the new key in `key_file`, the old one in
/// `previous_key_files` (still accepted), reload every replica, later drop the old one.
#[derive(Debug, Clone, PartialEq)]
pub struct SessionConfig {
    /// The key new session ids are sealed with (32 bytes: raw, 64 hex digits or base64).
    pub key_file: PathBuf,
    /// `key_file` was not written: the instance generates it in the state dir at first start.
    pub generated: bool,
    /// Keys still accepted for sessions sealed before a rotation.
    pub previous_key_files: Vec<PathBuf>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ProxyConfig {
    pub listen: SocketAddr,
    pub threads: usize,
    pub strategy: StrategyKind,
    pub max_retries: usize,
    pub connect_timeout: Duration,
    /// Longest silence between two reads or writes on an upstream connection; long enough that
    /// an open SSE stream or a slow tool call is not cut.
    pub idle_timeout: Duration,
    /// How long SIGTERM waits for in-flight requests before the process exits.
    pub shutdown_grace: Duration,
    /// Idle upstream connections kept in the whole process, by each engine's pool (the fast
    /// path's, and Pingora's, whose per-thread size `serve` derives from it).
    pub upstream_keepalive: usize,
    /// From sending a request to the first byte of the answer.
    pub first_byte_timeout: Duration,
    /// Whole request body read from the client.
    pub body_timeout: Duration,
    pub retry_budget: RetryBudget,
    pub ejection: EjectionConfig,
    /// Browser origins allowed to call the proxy (the MCP spec's DNS-rebinding defence); a
    /// request with another `Origin` gets 403. Entries are `scheme://host:port`, `:*` for any
    /// port, or `null`.
    pub allowed_origins: Vec<AllowedOrigin>,
    /// Largest request body accepted (413 beyond).
    pub max_body: u64,
    /// Longest request URI accepted (414 beyond).
    pub max_uri: usize,
    /// Most request headers, and most header bytes (names and values), accepted (431 beyond).
    pub max_headers: usize,
    pub max_header_bytes: u64,
    /// From accepting a connection to a complete first request head (slowloris defence).
    pub header_timeout: Duration,
    /// How long a kept-alive client connection may wait for, and deliver, its next request head.
    pub client_idle_timeout: Duration,
    /// Open client connections on the listener; beyond it a connection gets 503 and is closed.
    pub max_connections: usize,
    /// Open standalone event streams (MCP `GET`); beyond it a `GET` gets 503.
    pub max_sse_streams: usize,
    /// Longest a write to a client may wait for the client to take bytes (nginx's
    /// `send_timeout`): a client that stops reading an event stream is cut after it, so its
    /// buffers are freed.
    pub send_timeout: Duration,
    /// Largest answer that is not an event stream (a server sending more is cut off and
    /// counted as failed).
    pub max_response_body: u64,
    /// Small MCP POSTs go through the fast path (the other engine); `false`: every request
    /// goes through Pingora's path. Both apply the same policy.
    pub fast_path: bool,
    pub rate_limit: super::access::RateLimitConfig,
    /// `None`: plain HTTP.
    pub tls: Option<super::access::TlsConfig>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct FleetConfig {
    pub enabled: bool,
    pub batch_size: usize,
    pub command: Vec<String>,
    /// Address the spawned servers listen on and the proxy connects to.
    pub host: IpAddr,
    pub state_dir: PathBuf,
    pub log_dir: PathBuf,
    pub ready_timeout: Duration,
    /// Between SIGTERM and SIGKILL when a server is stopped.
    pub stop_grace: Duration,
    /// Add the category port ranges to `net.ipv4.ip_local_reserved_ports` at start.
    pub reserve_ports: bool,
    /// Which servers `serve` deploys when the state dir has no deployment record yet.
    pub deploy_on_start: DeployOnStart,
    /// How long a server being removed keeps its sessions before it is stopped.
    pub drain_timeout: Duration,
    /// More than this many restarts within `restart_window` marks a server failed.
    pub max_restarts: u32,
    pub restart_window: Duration,
    /// Environment every server gets on top of the bounded base (PATH, HOME, LANG, ...).
    pub env: BTreeMap<String, String>,
    /// A server's log file is rotated when it reaches this size.
    pub log_max_size: u64,
    /// Rotated log files kept (`{id}.log.1` ... `{id}.log.N`).
    pub log_keep: u32,
    /// Where the servers' stdout and stderr go.
    pub server_logs: ServerLogs,
    /// How often the memory watcher samples every server.
    pub memory_interval: Duration,
    /// Deployments that would push the machine's memory use past this are refused.
    pub memory_budget: MemoryBudget,
    /// Also have the kernel enforce `max_memory_mb` (a memory cgroup per server) where it can.
    pub kernel_memory_limit: bool,
    /// Children of stdio servers alive at once across the fleet; a session that would need
    /// another gets 503.
    pub max_children: usize,
}

/// `fleet.server_logs`: files under `log_dir` (rotated), or this process's stdout, each line
/// prefixed with the server's id (in a container, where the kubelet collects stdout).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerLogs {
    Files,
    Stdout,
}

/// `fleet.memory_budget`: a share of the machine's memory or a size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemoryBudget {
    Percent(u32),
    Bytes(u64),
}

/// What happens to a server over its `max_memory_mb`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemoryAction {
    /// Drain, stop and start it again (the default).
    Restart,
    /// Log and count it, nothing more.
    Alert,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeployOnStart {
    /// Every configured server (the default: `serve` brings up the whole fleet).
    All,
    /// None: servers are deployed in batches through the admin API (`mcp-fleet deploy`).
    None,
}

#[derive(Debug, Clone, PartialEq)]
pub struct CategoryConfig {
    pub name: String,
    pub ports: Option<RangeInclusive<u16>>,
    /// Spawned servers, on the first `servers` ports of `ports`.
    pub servers: u16,
    pub max_memory_mb: u64,
    pub command: Vec<String>,
    pub static_backends: Vec<SocketAddr>,
    pub mcp_path: String,
    pub strategy: StrategyKind,
    /// Weight of every server of the category unless `server_weights` names it.
    pub weight: u32,
    /// Per-server weights, keyed by server id (`database-3`) or static address.
    pub server_weights: BTreeMap<String, u32>,
    /// Lower-case header name consistent hashing keys on.
    pub hash_header: Option<String>,
    /// Environment for this category's servers (on top of `fleet.env`).
    pub env: BTreeMap<String, String>,
    /// Working directory of its servers (default: the config file's folder).
    pub cwd: Option<PathBuf>,
    pub memory_action: MemoryAction,
    pub discover: Option<Discover>,
    /// `transport = "stdio"`: the servers speak JSON-RPC lines on stdin/stdout and mcp-fleet
    /// bridges each to Streamable HTTP on its address. `None`: they listen on `{port}` themselves.
    pub stdio: Option<StdioConfig>,
    pub auth: super::access::CategoryAuth,
    pub upstream_headers: Vec<super::access::UpstreamHeader>,
}

/// How a stdio category's servers are bridged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StdioConfig {
    pub isolation: Isolation,
    /// Sessions one server holds; `initialize` beyond it gets 503 and `Retry-After`.
    pub max_sessions: usize,
    /// A session with nothing in flight and no open stream for this long is ended (its child
    /// stopped under `session` isolation).
    pub idle_timeout: Duration,
    pub start: StartMode,
}

/// Which child a session talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Isolation {
    /// Its own child, started by its `initialize` and ended by its `DELETE`.
    Session,
    /// One long-lived child per server, shared by every session (ids rewritten per client).
    Shared,
}

/// When a bridged server starts a child.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartMode {
    /// Only when a request needs one.
    OnDemand,
    /// At once (the shared child, or one warm spare for the next session).
    Eager,
}

impl CategoryConfig {
    /// Ports of the servers the fleet spawns for this category, in order.
    pub fn spawned_ports(&self) -> impl Iterator<Item = u16> + '_ {
        self.ports
            .iter()
            .flat_map(|r| r.clone())
            .take(self.servers as usize)
    }
}
