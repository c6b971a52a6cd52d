//! The config model. `load` turns a TOML file into a [`ValidConfig`] or into every error it has;
//! only a `ValidConfig` reaches the running system. This module knows nobody else in the crate.
//!
//! Unknown keys are collected with `serde_ignored` rather than refused with
//! `deny_unknown_fields`, so that a file with three misspelt keys gets three errors in one run.

mod error;
mod raw;
mod units;

pub use error::{ConfigError, LoadError};
pub use units::{parse_duration, parse_port_range, parse_size};

use raw::{RawCategory, RawConfig};
use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Variables a command may contain; anything else in braces is a typo worth refusing.
pub const COMMAND_VARIABLES: &[&str] = &["{port}", "{category}", "{id}", "{host}"];

/// The first word of a command that means "this very binary".
pub const SELF_COMMAND: &str = "mcp-fleet";

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

    fn parse(name: &str) -> Option<Self> {
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
    /// In the order of their port ranges (static-only categories last), as the seed lists them.
    pub categories: Vec<CategoryConfig>,
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
    pub allowed_origins: Vec<String>,
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
    /// How often the memory watcher samples every server.
    pub memory_interval: Duration,
    /// Deployments that would push the machine's memory use past this are refused.
    pub memory_budget: MemoryBudget,
    /// Also have the kernel enforce `max_memory_mb` (a memory cgroup per server) where it can.
    pub kernel_memory_limit: bool,
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

/// The seed design's memory policy: database 150 MB, ai-ml 200, filesystem 100, others 128.
fn default_max_memory_mb(category: &str) -> u64 {
    match category {
        "database" => 150,
        "ai-ml" => 200,
        "filesystem" => 100,
        _ => 128,
    }
}

fn default_command() -> Vec<String> {
    [
        SELF_COMMAND,
        "backend",
        "--port",
        "{port}",
        "--category",
        "{category}",
    ]
    .map(String::from)
    .to_vec()
}

/// Reads, parses and validates a config file.
pub fn load(path: &Path) -> Result<ValidConfig, LoadError> {
    let text = std::fs::read_to_string(path).map_err(|source| LoadError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let base = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."));
    parse(&text, path, &base)
}

/// Parses and validates config text; `base` is the folder relative paths are resolved against.
pub fn parse(text: &str, source: &Path, base: &Path) -> Result<ValidConfig, LoadError> {
    let deserializer = toml::Deserializer::new(text);
    let mut unknown = Vec::new();
    let raw: RawConfig = serde_ignored::deserialize(deserializer, |path| {
        unknown.push(path.to_string());
    })
    .map_err(|e| LoadError::Syntax {
        path: source.to_path_buf(),
        message: e.to_string(),
    })?;
    let mut errors: Vec<ConfigError> = unknown
        .into_iter()
        .map(|key| ConfigError::new(key, "(set)", "unknown key"))
        .collect();
    let config = validate(raw, source, base, &mut errors);
    if errors.is_empty() {
        Ok(config)
    } else {
        Err(LoadError::Invalid {
            path: source.to_path_buf(),
            errors,
        })
    }
}

fn duration(
    key: &str,
    value: Option<&str>,
    default: Duration,
    errors: &mut Vec<ConfigError>,
) -> Duration {
    match value {
        None => default,
        Some(text) => match parse_duration(text) {
            Ok(d) if d.is_zero() => {
                errors.push(ConfigError::new(
                    key,
                    format!("{text:?}"),
                    "must be above zero",
                ));
                default
            }
            Ok(d) => d,
            Err(why) => {
                errors.push(ConfigError::new(key, format!("{text:?}"), why));
                default
            }
        },
    }
}

fn socket_addr(
    key: &str,
    value: Option<&str>,
    default: &str,
    errors: &mut Vec<ConfigError>,
) -> SocketAddr {
    let text = value.unwrap_or(default);
    match text.parse::<SocketAddr>() {
        Ok(addr) if addr.port() == 0 => {
            errors.push(ConfigError::new(
                key,
                format!("{text:?}"),
                "port 0 is not allowed: clients need a fixed port",
            ));
            addr
        }
        Ok(addr) => addr,
        Err(_) => {
            errors.push(ConfigError::new(
                key,
                format!("{text:?}"),
                "must be IP:PORT, e.g. \"127.0.0.1:8080\" or \"[::1]:8080\"",
            ));
            SocketAddr::from(([127, 0, 0, 1], 0))
        }
    }
}

fn bounded(
    key: &str,
    value: Option<i64>,
    default: i64,
    range: RangeInclusive<i64>,
    errors: &mut Vec<ConfigError>,
) -> i64 {
    let v = value.unwrap_or(default);
    if range.contains(&v) {
        v
    } else {
        errors.push(ConfigError::new(
            key,
            v,
            format!("must be between {} and {}", range.start(), range.end()),
        ));
        default
    }
}

fn command(key: &str, words: Vec<String>, errors: &mut Vec<ConfigError>) -> Vec<String> {
    if words.is_empty() || words[0].trim().is_empty() {
        errors.push(ConfigError::new(
            key,
            format!("{words:?}"),
            "needs at least a program name",
        ));
        return words;
    }
    for word in &words {
        let mut rest = word.as_str();
        while let Some(open) = rest.find('{') {
            let tail = &rest[open..];
            let Some(close) = tail.find('}') else { break };
            let variable = &tail[..=close];
            if !COMMAND_VARIABLES.contains(&variable) {
                errors.push(ConfigError::new(
                    key,
                    format!("{word:?}"),
                    format!(
                        "unknown variable {variable}; known: {}",
                        COMMAND_VARIABLES.join(", ")
                    ),
                ));
            }
            rest = &tail[close + 1..];
        }
    }
    words
}

fn mcp_path(
    key: &str,
    value: Option<&str>,
    default: &str,
    errors: &mut Vec<ConfigError>,
) -> String {
    let path = value.unwrap_or(default);
    let ok = path.starts_with('/')
        && path
            .bytes()
            .all(|b| b.is_ascii_graphic() && b != b'?' && b != b'#');
    if !ok {
        errors.push(ConfigError::new(
            key,
            format!("{path:?}"),
            "must be an absolute URL path like \"/mcp\" (no query, no spaces)",
        ));
    }
    path.to_string()
}

/// An environment table: names must be non-empty without `=` or NUL; values may use the command
/// variables.
fn env_table(
    key: &str,
    table: Option<BTreeMap<String, String>>,
    errors: &mut Vec<ConfigError>,
) -> BTreeMap<String, String> {
    let table = table.unwrap_or_default();
    for (name, value) in &table {
        if name.is_empty() || name.contains('=') || name.contains('\0') || value.contains('\0') {
            errors.push(ConfigError::new(
                format!("{key}.{name}"),
                format!("{value:?}"),
                "an environment name must be non-empty, without '=' or NUL",
            ));
        }
    }
    table
}

fn resolve(base: &Path, path: &str) -> PathBuf {
    let p = Path::new(path);
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        base.join(p)
    }
}

fn valid_category_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

fn validate(
    raw: RawConfig,
    source: &Path,
    base: &Path,
    errors: &mut Vec<ConfigError>,
) -> ValidConfig {
    let p = &raw.proxy;
    let strategy = match p.strategy.as_deref() {
        None => StrategyKind::RoundRobin,
        Some(name) => strategy_kind("proxy.strategy", name, errors),
    };
    let proxy = ProxyConfig {
        listen: socket_addr("proxy.listen", p.listen.as_deref(), "0.0.0.0:8080", errors),
        threads: bounded("proxy.threads", p.threads, 2, 1..=256, errors) as usize,
        strategy,
        max_retries: bounded("proxy.max_retries", p.max_retries, 3, 0..=10, errors) as usize,
        connect_timeout: duration(
            "proxy.connect_timeout",
            p.connect_timeout.as_deref(),
            Duration::from_secs(1),
            errors,
        ),
        idle_timeout: duration(
            "proxy.idle_timeout",
            p.idle_timeout.as_deref(),
            Duration::from_secs(300),
            errors,
        ),
        shutdown_grace: duration(
            "proxy.shutdown_grace",
            p.shutdown_grace.as_deref(),
            Duration::from_secs(10),
            errors,
        ),
        upstream_keepalive: bounded(
            "proxy.upstream_keepalive",
            p.upstream_keepalive,
            4096,
            0..=65536,
            errors,
        ) as usize,
        first_byte_timeout: duration(
            "proxy.first_byte_timeout",
            p.first_byte_timeout.as_deref(),
            Duration::from_secs(5),
            errors,
        ),
        body_timeout: duration(
            "proxy.body_timeout",
            p.body_timeout.as_deref(),
            Duration::from_secs(30),
            errors,
        ),
        retry_budget: RetryBudget {
            percent: bounded(
                "proxy.retry_budget_percent",
                p.retry_budget_percent,
                20,
                0..=100,
                errors,
            ) as u32,
            min: bounded(
                "proxy.retry_budget_min",
                p.retry_budget_min,
                10,
                0..=100_000,
                errors,
            ) as u32,
        },
        ejection: EjectionConfig {
            after_5xx: bounded(
                "proxy.eject_after_5xx",
                p.eject_after_5xx,
                5,
                0..=1000,
                errors,
            ) as u32,
            base_time: duration(
                "proxy.eject_time",
                p.eject_time.as_deref(),
                Duration::from_secs(10),
                errors,
            ),
            max_time: duration(
                "proxy.eject_max_time",
                p.eject_max_time.as_deref(),
                Duration::from_secs(300),
                errors,
            ),
            max_percent: bounded(
                "proxy.max_ejected_percent",
                p.max_ejected_percent,
                50,
                0..=100,
                errors,
            ) as u32,
        },
        allowed_origins: p.allowed_origins.clone().unwrap_or_else(|| {
            ["http://localhost:*", "http://127.0.0.1:*", "http://[::1]:*"]
                .map(String::from)
                .to_vec()
        }),
        max_body: match p.max_body.as_deref() {
            None => 4 << 20,
            Some(text) => parse_size(text).unwrap_or_else(|why| {
                errors.push(ConfigError::new("proxy.max_body", format!("{text:?}"), why));
                4 << 20
            }),
        },
        max_uri: bounded("proxy.max_uri", p.max_uri, 8192, 64..=65536, errors) as usize,
        // Pingora itself stops at 256 headers and 1 MiB, with a 400; these come first, with 431.
        max_headers: bounded("proxy.max_headers", p.max_headers, 100, 1..=255, errors) as usize,
        max_header_bytes: match p.max_header_bytes.as_deref() {
            None => 64 << 10,
            Some(text) => match parse_size(text) {
                Ok(n) if (1024..(1 << 20)).contains(&n) => n,
                Ok(_) => {
                    errors.push(ConfigError::new(
                        "proxy.max_header_bytes",
                        format!("{text:?}"),
                        "must be between 1KiB and 1MiB",
                    ));
                    64 << 10
                }
                Err(why) => {
                    errors.push(ConfigError::new(
                        "proxy.max_header_bytes",
                        format!("{text:?}"),
                        why,
                    ));
                    64 << 10
                }
            },
        },
        header_timeout: duration(
            "proxy.header_timeout",
            p.header_timeout.as_deref(),
            Duration::from_secs(10),
            errors,
        ),
        client_idle_timeout: duration(
            "proxy.client_idle_timeout",
            p.client_idle_timeout.as_deref(),
            Duration::from_secs(60),
            errors,
        ),
        max_connections: bounded(
            "proxy.max_connections",
            p.max_connections,
            10_000,
            1..=1_000_000,
            errors,
        ) as usize,
        max_sse_streams: bounded(
            "proxy.max_sse_streams",
            p.max_sse_streams,
            5_000,
            0..=1_000_000,
            errors,
        ) as usize,
        send_timeout: duration(
            "proxy.send_timeout",
            p.send_timeout.as_deref(),
            Duration::from_secs(60),
            errors,
        ),
        max_response_body: match p.max_response_body.as_deref() {
            None => 64 << 20,
            Some(text) => parse_size(text).unwrap_or_else(|why| {
                errors.push(ConfigError::new(
                    "proxy.max_response_body",
                    format!("{text:?}"),
                    why,
                ));
                64 << 20
            }),
        },
        fast_path: p.fast_path.unwrap_or(true),
    };
    for origin in &proxy.allowed_origins {
        let ok = origin == "null"
            || origin.split_once("://").is_some_and(|(scheme, rest)| {
                !scheme.is_empty() && !rest.is_empty() && !rest.contains('/')
            });
        if !ok {
            errors.push(ConfigError::new(
                "proxy.allowed_origins",
                format!("{origin:?}"),
                "an origin is scheme://host[:port] (\":*\" for any port) or \"null\"",
            ));
        }
    }
    if proxy.first_byte_timeout > proxy.idle_timeout {
        errors.push(ConfigError::new(
            "proxy.first_byte_timeout",
            format!("{:?}", proxy.first_byte_timeout),
            "must not exceed proxy.idle_timeout",
        ));
    }
    let health = health(&raw.health, errors);
    let monitor_listen = socket_addr(
        "monitor.listen",
        raw.monitor.listen.as_deref(),
        "127.0.0.1:9090",
        errors,
    );
    let admin_listen = socket_addr(
        "admin.listen",
        raw.admin.listen.as_deref(),
        "127.0.0.1:3000",
        errors,
    );
    let admin_token_file = raw.admin.token_file.as_deref().map(|p| resolve(base, p));
    let share = |key: &str, v: Option<f64>, default: f64, errors: &mut Vec<ConfigError>| match v {
        None => default,
        Some(x) if x > 0.0 && x <= 1.0 => x,
        Some(x) => {
            errors.push(ConfigError::new(
                key,
                x,
                "must be a share above 0 and at most 1 (0.05 = 5%)",
            ));
            default
        }
    };
    let a = &raw.monitor.alerts;
    let monitor = MonitorConfig {
        per_server_metrics: raw.monitor.per_server_metrics.unwrap_or(true),
        alerts: AlertThresholds {
            response_time: duration(
                "monitor.alerts.response_time",
                a.response_time.as_deref(),
                Duration::from_secs(5),
                errors,
            ),
            error_rate: share("monitor.alerts.error_rate", a.error_rate, 0.05, errors),
            memory_usage: share("monitor.alerts.memory_usage", a.memory_usage, 0.8, errors),
            cpu_usage: share("monitor.alerts.cpu_usage", a.cpu_usage, 0.9, errors),
            disk_usage: share("monitor.alerts.disk_usage", a.disk_usage, 0.85, errors),
            window: duration(
                "monitor.alerts.window",
                a.window.as_deref(),
                Duration::from_secs(60),
                errors,
            ),
            interval: duration(
                "monitor.alerts.interval",
                a.interval.as_deref(),
                Duration::from_secs(5),
                errors,
            ),
        },
    };
    let listens = [
        ("proxy.listen", proxy.listen),
        ("monitor.listen", monitor_listen),
        ("admin.listen", admin_listen),
    ];
    for (i, (key_a, a)) in listens.iter().enumerate() {
        for (key_b, b) in &listens[i + 1..] {
            let clash = a.port() == b.port()
                && (a.ip() == b.ip() || a.ip().is_unspecified() || b.ip().is_unspecified());
            if clash {
                errors.push(ConfigError::new(
                    *key_b,
                    format!("\"{b}\""),
                    format!("same listen address as {key_a} (\"{a}\")"),
                ));
            }
        }
    }

    let f = &raw.fleet;
    let host = match f.host.as_deref() {
        None => IpAddr::from([127, 0, 0, 1]),
        Some(text) => text.parse().unwrap_or_else(|_| {
            errors.push(ConfigError::new(
                "fleet.host",
                format!("{text:?}"),
                "must be an IP address, e.g. \"127.0.0.1\"",
            ));
            IpAddr::from([127, 0, 0, 1])
        }),
    };
    let fleet_command = command(
        "fleet.command",
        f.command.clone().unwrap_or_else(default_command),
        errors,
    );
    let fleet_mcp_path = mcp_path("fleet.mcp_path", f.mcp_path.as_deref(), "/mcp", errors);
    let fleet = FleetConfig {
        enabled: f.enabled.unwrap_or(true),
        batch_size: bounded("fleet.batch_size", f.batch_size, 100, 1..=10_000, errors) as usize,
        command: fleet_command.clone(),
        host,
        state_dir: resolve(base, f.state_dir.as_deref().unwrap_or("state")),
        log_dir: resolve(base, f.log_dir.as_deref().unwrap_or("logs")),
        ready_timeout: duration(
            "fleet.ready_timeout",
            f.ready_timeout.as_deref(),
            Duration::from_secs(30),
            errors,
        ),
        stop_grace: duration(
            "fleet.stop_grace",
            f.stop_grace.as_deref(),
            Duration::from_secs(5),
            errors,
        ),
        reserve_ports: f.reserve_ports.unwrap_or(false),
        deploy_on_start: match f.deploy_on_start.as_deref() {
            None | Some("all") => DeployOnStart::All,
            Some("none") => DeployOnStart::None,
            Some(other) => {
                errors.push(ConfigError::new(
                    "fleet.deploy_on_start",
                    format!("{other:?}"),
                    "must be \"all\" or \"none\"",
                ));
                DeployOnStart::All
            }
        },
        drain_timeout: duration(
            "fleet.drain_timeout",
            f.drain_timeout.as_deref(),
            Duration::from_secs(30),
            errors,
        ),
        max_restarts: bounded("fleet.max_restarts", f.max_restarts, 5, 1..=1000, errors) as u32,
        restart_window: duration(
            "fleet.restart_window",
            f.restart_window.as_deref(),
            Duration::from_secs(300),
            errors,
        ),
        env: env_table("fleet.env", f.env.clone(), errors),
        log_max_size: match f.log_max_size.as_deref() {
            None => 10 << 20,
            Some(text) => match parse_size(text) {
                Ok(n) if n >= 4096 => n,
                Ok(_) => {
                    errors.push(ConfigError::new(
                        "fleet.log_max_size",
                        format!("{text:?}"),
                        "must be at least 4KiB",
                    ));
                    10 << 20
                }
                Err(why) => {
                    errors.push(ConfigError::new(
                        "fleet.log_max_size",
                        format!("{text:?}"),
                        why,
                    ));
                    10 << 20
                }
            },
        },
        log_keep: bounded("fleet.log_keep", f.log_keep, 3, 0..=100, errors) as u32,
        kernel_memory_limit: f.kernel_memory_limit.unwrap_or(true),
        memory_interval: duration(
            "fleet.memory_interval",
            f.memory_interval.as_deref(),
            Duration::from_secs(5),
            errors,
        ),
        memory_budget: match f.memory_budget.as_deref() {
            None => MemoryBudget::Percent(80),
            Some(text) => match text.strip_suffix('%').map(|p| p.trim().parse::<u32>()) {
                Some(Ok(p)) if (1..=100).contains(&p) => MemoryBudget::Percent(p),
                Some(_) => {
                    errors.push(ConfigError::new(
                        "fleet.memory_budget",
                        format!("{text:?}"),
                        "a share must be 1% to 100%",
                    ));
                    MemoryBudget::Percent(80)
                }
                None => match parse_size(text) {
                    Ok(n) => MemoryBudget::Bytes(n),
                    Err(why) => {
                        errors.push(ConfigError::new(
                            "fleet.memory_budget",
                            format!("{text:?}"),
                            format!("{why} (or a share like \"80%\")"),
                        ));
                        MemoryBudget::Percent(80)
                    }
                },
            },
        },
    };

    let mut categories: Vec<CategoryConfig> = raw
        .categories
        .into_iter()
        .map(|(name, c)| {
            category(
                name,
                c,
                &fleet_command,
                &fleet_mcp_path,
                strategy,
                base,
                errors,
            )
        })
        .collect();
    if categories.is_empty() {
        errors.push(ConfigError::new(
            "categories",
            "(none)",
            "at least one category is needed",
        ));
    }
    categories.sort_by_key(|c| c.ports.as_ref().map_or(u32::MAX, |r| u32::from(*r.start())));
    check_overlaps(&categories, &listens, errors);

    ValidConfig {
        source: source.to_path_buf(),
        proxy,
        monitor_listen,
        monitor,
        admin_listen,
        admin_token_file,
        fleet,
        health,
        categories,
    }
}

fn strategy_kind(key: &str, name: &str, errors: &mut Vec<ConfigError>) -> StrategyKind {
    StrategyKind::parse(name).unwrap_or_else(|| {
        errors.push(ConfigError::new(
            key,
            format!("{name:?}"),
            format!(
                "unknown strategy; known: {}",
                StrategyKind::names().join(", ")
            ),
        ));
        StrategyKind::RoundRobin
    })
}

fn health(h: &raw::RawHealth, errors: &mut Vec<ConfigError>) -> HealthConfig {
    let kind = match h.kind.as_deref().unwrap_or("mcp") {
        "tcp" => HealthKind::Tcp,
        "mcp" => HealthKind::Mcp,
        "http" => HealthKind::Http {
            path: mcp_path("health.path", h.path.as_deref(), "/health", errors),
            expect_status: bounded(
                "health.expect_status",
                h.expect_status,
                200,
                100..=599,
                errors,
            ) as u16,
        },
        other => {
            errors.push(ConfigError::new(
                "health.kind",
                format!("{other:?}"),
                "known kinds: tcp, http, mcp",
            ));
            HealthKind::Tcp
        }
    };
    let config = HealthConfig {
        enabled: h.enabled.unwrap_or(true),
        kind,
        interval: duration(
            "health.interval",
            h.interval.as_deref(),
            Duration::from_secs(30),
            errors,
        ),
        timeout: duration(
            "health.timeout",
            h.timeout.as_deref(),
            Duration::from_secs(2),
            errors,
        ),
        unhealthy_threshold: bounded(
            "health.unhealthy_threshold",
            h.unhealthy_threshold,
            2,
            1..=100,
            errors,
        ) as u32,
        healthy_threshold: bounded(
            "health.healthy_threshold",
            h.healthy_threshold,
            2,
            1..=100,
            errors,
        ) as u32,
        concurrency: bounded("health.concurrency", h.concurrency, 64, 1..=4096, errors) as usize,
    };
    if config.timeout > config.interval {
        errors.push(ConfigError::new(
            "health.timeout",
            format!("{:?}", config.timeout),
            "must not exceed health.interval",
        ));
    }
    config
}

fn category(
    name: String,
    c: RawCategory,
    fleet_command: &[String],
    fleet_mcp_path: &str,
    default_strategy: StrategyKind,
    base: &Path,
    errors: &mut Vec<ConfigError>,
) -> CategoryConfig {
    let key = |k: &str| format!("categories.{name}.{k}");
    if !valid_category_name(&name) {
        errors.push(ConfigError::new(
            format!("categories.{name}"),
            format!("{name:?}"),
            "a category name is 1-64 characters of a-z, 0-9, '-' and '_' (it appears in URLs)",
        ));
    }
    let ports = c
        .ports
        .as_deref()
        .and_then(|text| match parse_port_range(text) {
            Ok(r) if *r.start() >= 1 && *r.end() <= 65535 => {
                Some(u16::try_from(*r.start()).unwrap_or(1)..=u16::try_from(*r.end()).unwrap_or(1))
            }
            Ok(_) => {
                errors.push(ConfigError::new(
                    key("ports"),
                    format!("{text:?}"),
                    "ports must lie within 1-65535",
                ));
                None
            }
            Err(why) => {
                errors.push(ConfigError::new(key("ports"), format!("{text:?}"), why));
                None
            }
        });
    let range_len = ports
        .as_ref()
        .map_or(0, |r| i64::from(*r.end()) - i64::from(*r.start()) + 1);
    let errors_before = errors.len();
    let servers = match c.servers {
        None => range_len,
        Some(n) if n < 0 => {
            errors.push(ConfigError::new(key("servers"), n, "cannot be negative"));
            0
        }
        Some(n) if n > range_len => {
            let why = match &c.ports {
                Some(p) => format!("larger than its port range {p:?} ({range_len} ports)"),
                None => "servers need a port range: set ports".to_string(),
            };
            errors.push(ConfigError::new(key("servers"), n, why));
            0
        }
        Some(n) => n,
    };
    let mut static_backends = Vec::new();
    for text in c.backends.unwrap_or_default() {
        match text.parse::<SocketAddr>() {
            Ok(addr) if addr.port() != 0 => static_backends.push(addr),
            _ => errors.push(ConfigError::new(
                key("backends"),
                format!("{text:?}"),
                "each backend must be IP:PORT with a port in 1-65535",
            )),
        }
    }
    if servers == 0 && static_backends.is_empty() && errors.len() == errors_before {
        errors.push(ConfigError::new(
            format!("categories.{name}"),
            "(no servers, no backends)",
            "a category needs spawned servers (ports, servers) or static backends",
        ));
    }
    let max_memory_mb = match c.max_memory_mb {
        None => default_max_memory_mb(&name),
        Some(mb) if (1..=1_048_576).contains(&mb) => mb as u64,
        Some(mb) => {
            errors.push(ConfigError::new(
                key("max_memory_mb"),
                mb,
                "must be between 1 and 1048576",
            ));
            default_max_memory_mb(&name)
        }
    };
    let cmd = match c.command {
        Some(words) => command(&key("command"), words, errors),
        None => fleet_command.to_vec(),
    };
    let strategy = match c.strategy.as_deref() {
        Some(name) => strategy_kind(&key("strategy"), name, errors),
        None => default_strategy,
    };
    let weight = bounded(&key("weight"), c.weight, 1, 1..=1000, errors) as u32;
    let mut server_weights = BTreeMap::new();
    for (server, w) in c.server_weights.unwrap_or_default() {
        let known_spawned = server
            .strip_prefix(&format!("{name}-"))
            .and_then(|i| i.parse::<i64>().ok())
            .is_some_and(|i| (0..servers).contains(&i));
        let known_static = server
            .parse::<SocketAddr>()
            .is_ok_and(|a| static_backends.contains(&a));
        if !known_spawned && !known_static {
            errors.push(ConfigError::new(
                key(&format!("server_weights.{server}")),
                w,
                format!("no server {server:?} in this category (use an id like {name}-0 or a static address)"),
            ));
        } else if !(1..=1000).contains(&w) {
            errors.push(ConfigError::new(
                key(&format!("server_weights.{server}")),
                w,
                "must be between 1 and 1000",
            ));
        } else {
            server_weights.insert(server, w as u32);
        }
    }
    let hash_header = c.hash_header.as_deref().map(str::to_ascii_lowercase);
    if let Some(h) = &hash_header {
        if http::HeaderName::from_bytes(h.as_bytes()).is_err() {
            errors.push(ConfigError::new(
                key("hash_header"),
                format!("{h:?}"),
                "not a valid HTTP header name",
            ));
        }
    }
    if strategy == StrategyKind::ConsistentHash && hash_header.is_none() {
        errors.push(ConfigError::new(
            key("hash_header"),
            "(missing)",
            "consistent-hash needs the header to hash on, e.g. hash_header = \"x-tenant\"",
        ));
    }
    let memory_action = match c.memory_action.as_deref() {
        None | Some("restart") => MemoryAction::Restart,
        Some("alert") => MemoryAction::Alert,
        Some(other) => {
            errors.push(ConfigError::new(
                key("memory_action"),
                format!("{other:?}"),
                "must be \"restart\" or \"alert\"",
            ));
            MemoryAction::Restart
        }
    };
    CategoryConfig {
        env: env_table(&key("env"), c.env, errors),
        cwd: c.cwd.as_deref().map(|p| resolve(base, p)),
        memory_action,
        strategy,
        weight,
        server_weights,
        hash_header,
        mcp_path: mcp_path(
            &key("mcp_path"),
            c.mcp_path.as_deref(),
            fleet_mcp_path,
            errors,
        ),
        name,
        ports,
        servers: u16::try_from(servers).unwrap_or(0),
        max_memory_mb,
        command: cmd,
        static_backends,
    }
}

fn check_overlaps(
    categories: &[CategoryConfig],
    listens: &[(&str, SocketAddr)],
    errors: &mut Vec<ConfigError>,
) {
    for (i, a) in categories.iter().enumerate() {
        let Some(ra) = &a.ports else { continue };
        for b in &categories[i + 1..] {
            let Some(rb) = &b.ports else { continue };
            if ra.start() <= rb.end() && rb.start() <= ra.end() {
                errors.push(ConfigError::new(
                    format!("categories.{}.ports", b.name),
                    format!("\"{}-{}\"", rb.start(), rb.end()),
                    format!(
                        "overlaps categories.{}.ports (\"{}-{}\")",
                        a.name,
                        ra.start(),
                        ra.end()
                    ),
                ));
            }
        }
        for (key, addr) in listens {
            if a.spawned_ports().any(|p| p == addr.port()) {
                errors.push(ConfigError::new(
                    *key,
                    format!("\"{addr}\""),
                    format!("port is used by a server of category {}", a.name),
                ));
            }
        }
    }
    let mut seen = BTreeSet::new();
    for c in categories {
        for b in &c.static_backends {
            if !seen.insert(*b) {
                errors.push(ConfigError::new(
                    format!("categories.{}.backends", c.name),
                    format!("\"{b}\""),
                    "listed twice: a backend belongs to one category",
                ));
            }
        }
    }
}

/// Warnings that do not stop a start: category port ranges inside the kernel's ephemeral port
/// range (`low..=high`, from `/proc/sys/net/ipv4/ip_local_port_range`). Any outgoing connection on
/// the machine, the proxy's own included, can take such a port before its server binds.
pub fn ephemeral_warnings(config: &ValidConfig, ephemeral: RangeInclusive<u16>) -> Vec<String> {
    let inside: Vec<String> = config
        .categories
        .iter()
        .filter_map(|c| c.ports.as_ref())
        .filter(|r| r.start() <= ephemeral.end() && ephemeral.start() <= r.end())
        .map(|r| format!("{}-{}", r.start(), r.end()))
        .collect();
    if inside.is_empty() {
        return Vec::new();
    }
    let lo = config
        .categories
        .iter()
        .filter_map(|c| c.ports.as_ref().map(|r| *r.start()))
        .min()
        .unwrap_or(0);
    let hi = config
        .categories
        .iter()
        .filter_map(|c| c.ports.as_ref().map(|r| *r.end()))
        .max()
        .unwrap_or(0);
    vec![format!(
        "port ranges {} lie inside the kernel's ephemeral range {}-{}: outgoing connections \
         (the proxy's own included) can take a server's port before it binds. Reserve them with: \
         sysctl -w net.ipv4.ip_local_reserved_ports={lo}-{hi}",
        inside.join(", "),
        ephemeral.start(),
        ephemeral.end()
    )]
}

#[cfg(test)]
mod tests;
