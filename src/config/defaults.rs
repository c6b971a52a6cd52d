//! Every default of the config, named once: the validator uses these, the README's tables and the
//! tests refer to them, and a change of a default is one line here.

use std::time::Duration;

const fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

// [proxy]
/// Loopback: a listener others can reach needs `[auth]` (or `auth.allow_anonymous = true`).
pub const PROXY_LISTEN: &str = "127.0.0.1:8080";
pub const THREADS: i64 = 2;
pub const MAX_RETRIES: i64 = 3;
pub const CONNECT_TIMEOUT: Duration = secs(1);
/// Long enough that an open SSE stream or a slow tool call is not cut.
pub const IDLE_TIMEOUT: Duration = secs(300);
pub const SHUTDOWN_GRACE: Duration = secs(10);
/// Process-wide idle upstream connections per engine: 4 per server of a 1000-server fleet.
pub const UPSTREAM_KEEPALIVE: i64 = 4096;
pub const FIRST_BYTE_TIMEOUT: Duration = secs(5);
pub const BODY_TIMEOUT: Duration = secs(30);
pub const RETRY_BUDGET_PERCENT: i64 = 20;
pub const RETRY_BUDGET_MIN: i64 = 10;
pub const EJECT_AFTER_5XX: i64 = 5;
pub const EJECT_TIME: Duration = secs(10);
pub const EJECT_MAX_TIME: Duration = secs(300);
pub const MAX_EJECTED_PERCENT: i64 = 50;
/// Loopback pages only: the MCP spec's DNS-rebinding defence for local servers.
pub const ALLOWED_ORIGINS: &[&str] =
    &["http://localhost:*", "http://127.0.0.1:*", "http://[::1]:*"];
pub const MAX_BODY: u64 = 4 << 20;
pub const MAX_URI: i64 = 8192;
/// Pingora itself stops at 256 headers and 1 MiB, with a 400; ours come first, with 431.
pub const MAX_HEADERS: i64 = 100;
pub const MAX_HEADER_BYTES: u64 = 64 << 10;
pub const HEADER_TIMEOUT: Duration = secs(10);
pub const CLIENT_IDLE_TIMEOUT: Duration = secs(60);
pub const MAX_CONNECTIONS: i64 = 10_000;
pub const MAX_SSE_STREAMS: i64 = 5_000;
pub const SEND_TIMEOUT: Duration = secs(60);
pub const MAX_RESPONSE_BODY: u64 = 64 << 20;
pub const FAST_PATH: bool = true;

// [monitor], [admin]
pub const MONITOR_LISTEN: &str = "127.0.0.1:9090";
pub const ADMIN_LISTEN: &str = "127.0.0.1:3000";
pub const PER_SERVER_METRICS: bool = true;
pub const ALERT_RESPONSE_TIME: Duration = secs(5);
pub const ALERT_ERROR_RATE: f64 = 0.05;
pub const ALERT_MEMORY_USAGE: f64 = 0.8;
pub const ALERT_CPU_USAGE: f64 = 0.9;
pub const ALERT_DISK_USAGE: f64 = 0.85;
pub const ALERT_WINDOW: Duration = secs(60);
pub const ALERT_INTERVAL: Duration = secs(5);

// [health]
pub const HEALTH_ENABLED: bool = true;
pub const HEALTH_KIND: &str = "mcp";
pub const HEALTH_PATH: &str = "/health";
pub const HEALTH_EXPECT_STATUS: i64 = 200;
pub const HEALTH_INTERVAL: Duration = secs(30);
pub const HEALTH_TIMEOUT: Duration = secs(2);
pub const UNHEALTHY_THRESHOLD: i64 = 2;
pub const HEALTHY_THRESHOLD: i64 = 2;
pub const HEALTH_CONCURRENCY: i64 = 64;

// [fleet]
pub const FLEET_ENABLED: bool = true;
pub const BATCH_SIZE: i64 = 100;
pub const FLEET_HOST: [u8; 4] = [127, 0, 0, 1];
pub const STATE_DIR: &str = "state";
pub const LOG_DIR: &str = "logs";
pub const READY_TIMEOUT: Duration = secs(30);
pub const STOP_GRACE: Duration = secs(5);
pub const RESERVE_PORTS: bool = false;
pub const DRAIN_TIMEOUT: Duration = secs(30);
pub const MAX_RESTARTS: i64 = 5;
pub const RESTART_WINDOW: Duration = secs(300);
pub const LOG_MAX_SIZE: u64 = 10 << 20;
pub const LOG_KEEP: i64 = 3;
pub const MEMORY_INTERVAL: Duration = secs(5);
pub const MEMORY_BUDGET_PERCENT: u32 = 80;
pub const KERNEL_MEMORY_LIMIT: bool = true;
/// Children of stdio servers at once across the fleet (each a process like an HTTP server).
pub const MAX_CHILDREN: i64 = 1000;
pub const MCP_PATH: &str = "/mcp";

// [session]
/// In the state dir, generated at first start when `session.key_file` is not set.
pub const SESSION_KEY_FILE: &str = "session.key";

// [dns]
/// At most this long between two resolutions: a server that joins is seen within it.
pub const DNS_INTERVAL: Duration = secs(5);
pub const DNS_TIMEOUT: Duration = secs(2);
/// NXDOMAIN in a row before a category is emptied: one could be a resolver's hiccup.
pub const DNS_NXDOMAIN_LIMIT: i64 = 3;

// [categories.*]
pub const WEIGHT: i64 = 1;

// [categories.*] with transport = "stdio"
/// Sessions one bridged server holds (each its own child under `isolation = "session"`).
pub const MAX_SESSIONS: i64 = 50;
/// A session (and its child) with nothing in flight and no open stream is ended after this.
pub const STDIO_IDLE_TIMEOUT: Duration = secs(600);

/// The seed design's memory policy: database 150 MB, ai-ml 200, filesystem 100, others 128.
pub fn max_memory_mb(category: &str) -> u64 {
    match category {
        "database" => 150,
        "ai-ml" => 200,
        "filesystem" => 100,
        _ => 128,
    }
}

/// The built-in MCP server, one per port.
pub fn command() -> Vec<String> {
    [
        super::SELF_COMMAND,
        "backend",
        "--port",
        "{port}",
        "--category",
        "{category}",
    ]
    .map(String::from)
    .to_vec()
}

// [auth], [proxy.rate_limit]
/// Clock skew allowed on a token's `exp` and `nbf`.
pub const AUTH_LEEWAY: Duration = secs(30);
pub const AUTH_MAX_LEEWAY: Duration = secs(300);
pub const JWKS_REFRESH: Duration = secs(300);
/// An unknown `kid` fetches the key set again at most this often (a flood of forged `kid`s
/// must not become a flood of fetches).
pub const JWKS_COOLDOWN: Duration = secs(10);
pub const TOKEN_CACHE: i64 = 10_000;
/// A bucket holds one second's run at its rate.
pub const RATE_BURST: Duration = secs(1);
