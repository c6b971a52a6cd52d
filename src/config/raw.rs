//! The external format: exactly what a user writes in TOML. Every field is optional here so that
//! defaults and errors are decided in one place, the validator, which can then report every problem
//! at once with its key.

use serde::Deserialize;
use std::collections::BTreeMap;

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct RawConfig {
    pub proxy: RawProxy,
    pub monitor: RawMonitor,
    pub admin: RawAdmin,
    pub fleet: RawFleet,
    pub health: RawHealth,
    pub session: RawSession,
    pub dns: RawDns,
    pub auth: RawAuth,
    pub categories: BTreeMap<String, RawCategory>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct RawAuth {
    pub mode: Option<String>,
    pub issuer: Option<String>,
    pub audience: Option<String>,
    pub ca_file: Option<String>,
    pub api_keys_file: Option<String>,
    pub allow_anonymous: Option<bool>,
    pub leeway: Option<String>,
    pub jwks_refresh: Option<String>,
    pub jwks_cooldown: Option<String>,
    pub token_cache: Option<i64>,
    pub audit: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct RawRateLimit {
    pub per_principal: Option<String>,
    pub per_ip_anonymous: Option<String>,
    pub burst: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct RawTls {
    pub cert: Option<String>,
    pub key: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct RawCategoryAuth {
    pub scopes: Option<Vec<String>>,
    pub tools: Option<Vec<String>>,
    pub prompts: Option<Vec<String>>,
    pub resources: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct RawDns {
    pub servers: Option<Vec<String>>,
    pub interval: Option<String>,
    pub timeout: Option<String>,
    pub nxdomain_limit: Option<i64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct RawDiscover {
    pub dns: Option<String>,
    pub srv: Option<String>,
    pub port: Option<i64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct RawSession {
    pub key_file: Option<String>,
    pub previous_key_files: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct RawProxy {
    pub listen: Option<String>,
    pub threads: Option<i64>,
    pub strategy: Option<String>,
    pub max_retries: Option<i64>,
    pub connect_timeout: Option<String>,
    pub idle_timeout: Option<String>,
    pub shutdown_grace: Option<String>,
    pub upstream_keepalive: Option<i64>,
    pub first_byte_timeout: Option<String>,
    pub body_timeout: Option<String>,
    pub retry_budget_percent: Option<i64>,
    pub retry_budget_min: Option<i64>,
    pub eject_after_5xx: Option<i64>,
    pub eject_time: Option<String>,
    pub eject_max_time: Option<String>,
    pub max_ejected_percent: Option<i64>,
    pub allowed_origins: Option<Vec<String>>,
    pub max_body: Option<String>,
    pub max_uri: Option<i64>,
    pub max_headers: Option<i64>,
    pub max_header_bytes: Option<String>,
    pub header_timeout: Option<String>,
    pub client_idle_timeout: Option<String>,
    pub max_connections: Option<i64>,
    pub max_sse_streams: Option<i64>,
    pub max_response_body: Option<String>,
    pub send_timeout: Option<String>,
    pub fast_path: Option<bool>,
    pub rate_limit: RawRateLimit,
    pub tls: RawTls,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct RawHealth {
    pub enabled: Option<bool>,
    pub kind: Option<String>,
    pub interval: Option<String>,
    pub timeout: Option<String>,
    pub path: Option<String>,
    pub expect_status: Option<i64>,
    pub unhealthy_threshold: Option<i64>,
    pub healthy_threshold: Option<i64>,
    pub concurrency: Option<i64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct RawMonitor {
    pub listen: Option<String>,
    pub per_server_metrics: Option<bool>,
    pub alerts: RawAlerts,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct RawAlerts {
    pub response_time: Option<String>,
    pub error_rate: Option<f64>,
    pub memory_usage: Option<f64>,
    pub cpu_usage: Option<f64>,
    pub disk_usage: Option<f64>,
    pub window: Option<String>,
    pub interval: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct RawAdmin {
    pub listen: Option<String>,
    pub token_file: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct RawFleet {
    pub enabled: Option<bool>,
    pub batch_size: Option<i64>,
    pub command: Option<Vec<String>>,
    pub host: Option<String>,
    pub state_dir: Option<String>,
    pub log_dir: Option<String>,
    pub ready_timeout: Option<String>,
    pub stop_grace: Option<String>,
    pub mcp_path: Option<String>,
    pub reserve_ports: Option<bool>,
    pub deploy_on_start: Option<String>,
    pub drain_timeout: Option<String>,
    pub max_restarts: Option<i64>,
    pub restart_window: Option<String>,
    pub env: Option<BTreeMap<String, String>>,
    pub log_max_size: Option<String>,
    pub log_keep: Option<i64>,
    pub server_logs: Option<String>,
    pub memory_interval: Option<String>,
    pub memory_budget: Option<String>,
    pub kernel_memory_limit: Option<bool>,
    pub max_children: Option<i64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct RawCategory {
    pub ports: Option<String>,
    pub servers: Option<i64>,
    pub max_memory_mb: Option<i64>,
    pub command: Option<Vec<String>>,
    pub backends: Option<Vec<String>>,
    pub mcp_path: Option<String>,
    pub strategy: Option<String>,
    pub weight: Option<i64>,
    pub server_weights: Option<BTreeMap<String, i64>>,
    pub hash_header: Option<String>,
    pub env: Option<BTreeMap<String, String>>,
    pub cwd: Option<String>,
    pub memory_action: Option<String>,
    pub discover: Option<RawDiscover>,
    pub transport: Option<String>,
    pub isolation: Option<String>,
    pub max_sessions: Option<i64>,
    pub idle_timeout: Option<String>,
    pub start: Option<String>,
    pub auth: RawCategoryAuth,
    pub upstream_headers: Option<BTreeMap<String, String>>,
}
