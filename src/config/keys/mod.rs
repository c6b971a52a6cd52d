//! Every key of the config file, classified once: applied by a reload, or needing a restart of
//! `mcp-fleet serve`. The reload's diff, its "restart to apply" report, the admin API's view of the
//! running config (`GET /config`) and the README's reload table are all derived from this table,
//! and a test proves it names every key the file format has.

use super::model::{CategoryConfig, HealthKind, ValidConfig};

/// What a reload does with a changed key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reload {
    /// The running instance takes the new value.
    Applied,
    /// The running instance keeps the old value until it is restarted.
    Restart,
}

/// A key of the top-level sections (`proxy.*`, `monitor.*`, `admin.*`, `health.*`, `fleet.*`).
pub struct Key {
    pub name: &'static str,
    pub reload: Reload,
    /// How the new value takes effect, or why it needs a restart.
    pub how: &'static str,
    /// The value in force, as the report shows it.
    pub read: fn(&ValidConfig) -> String,
    /// For `Restart` keys: put the running value back into the new config, so the rest of the
    /// reloaded config stays consistent with what runs.
    keep: Option<fn(&ValidConfig, &mut ValidConfig)>,
}

/// A key of every category (`categories.NAME.*`).
pub struct CategoryKey {
    pub name: &'static str,
    pub how: &'static str,
    pub read: fn(&CategoryConfig) -> String,
}

/// What a reload changes: `key: old -> new`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub key: String,
    pub old: String,
    pub new: String,
}

fn show<T: std::fmt::Debug>(v: &T) -> String {
    format!("{v:?}")
}

macro_rules! applied {
    ($name:literal, $how:expr, |$c:ident| $read:expr) => {
        Key {
            name: $name,
            reload: Reload::Applied,
            how: $how,
            read: |$c| show(&$read),
            keep: None,
        }
    };
}

macro_rules! restart {
    ($name:literal, $how:expr, $($field:ident).+) => {
        Key {
            name: $name,
            reload: Reload::Restart,
            how: $how,
            read: |c| show(&c.$($field).+),
            keep: Some(|old, new| new.$($field).+ = old.$($field).+.clone()),
        }
    };
}

const NOW: &str = "at once: the next request or connection uses it";
const FLEET_NOW: &str = "at once: the fleet's next action uses it";
const REPLACE: &str = "servers whose command changes drain, stop and start again";
const NEXT_START: &str =
    "servers started from now on (running servers keep theirs until they restart)";
const MONITOR_NOW: &str = "at the monitor's next evaluation";
const TLS_HOW: &str = "the listener's protocol and the files' paths are set at start; the files themselves are read again on every reload (a renewed certificate serves new handshakes, open connections stay)";
const AUTH_NOW: &str = "at once: tokens verified before are checked again";

fn health_path(c: &ValidConfig) -> String {
    match &c.health.kind {
        HealthKind::Http { path, .. } => path.clone(),
        _ => "(not http)".into(),
    }
}

fn health_status(c: &ValidConfig) -> String {
    match &c.health.kind {
        HealthKind::Http { expect_status, .. } => expect_status.to_string(),
        _ => "(not http)".into(),
    }
}

fn health_kind(c: &ValidConfig) -> String {
    match &c.health.kind {
        HealthKind::Tcp => "tcp",
        HealthKind::Http { .. } => "http",
        HealthKind::Mcp => "mcp",
    }
    .into()
}

pub static KEYS: &[Key] = &[
    restart!(
        "proxy.listen",
        "the listening socket is opened at start",
        proxy.listen
    ),
    restart!(
        "proxy.threads",
        "Pingora's worker threads start at start",
        proxy.threads
    ),
    applied!("proxy.strategy", NOW, |c| c.proxy.strategy),
    applied!("proxy.max_retries", NOW, |c| c.proxy.max_retries),
    applied!("proxy.connect_timeout", NOW, |c| c.proxy.connect_timeout),
    applied!("proxy.idle_timeout", NOW, |c| c.proxy.idle_timeout),
    restart!(
        "proxy.shutdown_grace",
        "Pingora's grace period is set when it starts",
        proxy.shutdown_grace
    ),
    restart!(
        "proxy.upstream_keepalive",
        "both connection pools are sized at start",
        proxy.upstream_keepalive
    ),
    applied!("proxy.first_byte_timeout", NOW, |c| c
        .proxy
        .first_byte_timeout),
    applied!("proxy.body_timeout", NOW, |c| c.proxy.body_timeout),
    applied!("proxy.retry_budget_percent", NOW, |c| c
        .proxy
        .retry_budget
        .percent),
    applied!("proxy.retry_budget_min", NOW, |c| c.proxy.retry_budget.min),
    applied!("proxy.eject_after_5xx", NOW, |c| c.proxy.ejection.after_5xx),
    applied!("proxy.eject_time", NOW, |c| c.proxy.ejection.base_time),
    applied!("proxy.eject_max_time", NOW, |c| c.proxy.ejection.max_time),
    applied!("proxy.max_ejected_percent", NOW, |c| c
        .proxy
        .ejection
        .max_percent),
    applied!("proxy.allowed_origins", NOW, |c| c
        .proxy
        .allowed_origins
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()),
    applied!("proxy.max_body", NOW, |c| c.proxy.max_body),
    applied!("proxy.max_uri", NOW, |c| c.proxy.max_uri),
    applied!("proxy.max_headers", NOW, |c| c.proxy.max_headers),
    applied!("proxy.max_header_bytes", NOW, |c| c.proxy.max_header_bytes),
    applied!("proxy.header_timeout", NOW, |c| c.proxy.header_timeout),
    applied!("proxy.client_idle_timeout", NOW, |c| c
        .proxy
        .client_idle_timeout),
    applied!("proxy.max_connections", NOW, |c| c.proxy.max_connections),
    applied!("proxy.max_sse_streams", NOW, |c| c.proxy.max_sse_streams),
    applied!("proxy.send_timeout", NOW, |c| c.proxy.send_timeout),
    applied!("proxy.max_response_body", NOW, |c| c
        .proxy
        .max_response_body),
    applied!("proxy.fast_path", NOW, |c| c.proxy.fast_path),
    applied!("proxy.rate_limit.per_principal", NOW, |c| c
        .proxy
        .rate_limit
        .per_principal
        .as_ref()
        .map(|r| r.text.clone())),
    applied!("proxy.rate_limit.per_ip_anonymous", NOW, |c| c
        .proxy
        .rate_limit
        .per_ip_anonymous
        .as_ref()
        .map(|r| r.text.clone())),
    applied!("proxy.rate_limit.burst", NOW, |c| c
        .proxy
        .rate_limit
        .per_principal
        .as_ref()
        .or(c.proxy.rate_limit.per_ip_anonymous.as_ref())
        .map(|r| r.burst)),
    Key {
        name: "proxy.tls.cert",
        reload: Reload::Restart,
        how: TLS_HOW,
        read: |c| show(&c.proxy.tls.as_ref().map(|t| &t.cert)),
        keep: Some(|old, new| new.proxy.tls = old.proxy.tls.clone()),
    },
    Key {
        name: "proxy.tls.key",
        reload: Reload::Restart,
        how: TLS_HOW,
        read: |c| show(&c.proxy.tls.as_ref().map(|t| &t.key)),
        keep: Some(|old, new| new.proxy.tls = old.proxy.tls.clone()),
    },
    applied!("auth.mode", AUTH_NOW, |c| c.auth.mode),
    applied!(
        "auth.issuer",
        "at once: the new issuer's keys are fetched, tokens verified before are checked again",
        |c| c.auth.issuer
    ),
    applied!("auth.audience", AUTH_NOW, |c| c.auth.audience),
    applied!(
        "auth.ca_file",
        "at once: the issuer's keys are fetched again with it",
        |c| c.auth.ca_file
    ),
    applied!(
        "auth.api_keys_file",
        "read again on every reload (a bad file refuses the reload)",
        |c| (
            c.auth.api_keys_file.clone(),
            c.auth
                .api_keys
                .iter()
                .map(|k| k.name.clone())
                .collect::<Vec<_>>()
        )
    ),
    applied!(
        "auth.allow_anonymous",
        "checked against proxy.listen at every load",
        |c| c.auth.allow_anonymous
    ),
    applied!("auth.leeway", AUTH_NOW, |c| c.auth.leeway),
    applied!(
        "auth.jwks_refresh",
        "from the next fetch of the key set",
        |c| c.auth.jwks_refresh
    ),
    applied!("auth.jwks_cooldown", AUTH_NOW, |c| c.auth.jwks_cooldown),
    applied!("auth.token_cache", AUTH_NOW, |c| c.auth.token_cache),
    applied!("auth.audit", AUTH_NOW, |c| c.auth.audit),
    restart!(
        "monitor.listen",
        "the listening socket is opened at start",
        monitor_listen
    ),
    applied!("monitor.per_server_metrics", "at the next scrape", |c| c
        .monitor
        .per_server_metrics),
    applied!("monitor.alerts.response_time", MONITOR_NOW, |c| c
        .monitor
        .alerts
        .response_time),
    applied!("monitor.alerts.error_rate", MONITOR_NOW, |c| c
        .monitor
        .alerts
        .error_rate),
    applied!("monitor.alerts.memory_usage", MONITOR_NOW, |c| c
        .monitor
        .alerts
        .memory_usage),
    applied!("monitor.alerts.cpu_usage", MONITOR_NOW, |c| c
        .monitor
        .alerts
        .cpu_usage),
    applied!("monitor.alerts.disk_usage", MONITOR_NOW, |c| c
        .monitor
        .alerts
        .disk_usage),
    applied!("monitor.alerts.window", MONITOR_NOW, |c| c
        .monitor
        .alerts
        .window),
    applied!(
        "monitor.alerts.interval",
        "from the monitor's next round",
        |c| c.monitor.alerts.interval
    ),
    restart!(
        "admin.listen",
        "the listening socket is opened at start",
        admin_listen
    ),
    restart!(
        "admin.token_file",
        "the token is read at start (the CLI reads the new file at once: restart to match)",
        admin_token_file
    ),
    applied!("health.enabled", "at the checker's next round", |c| c
        .health
        .enabled),
    applied!("health.kind", "at the checker's next round", |c| {
        health_kind(c)
    }),
    applied!("health.interval", "at the checker's next round", |c| c
        .health
        .interval),
    applied!("health.timeout", "at the checker's next round", |c| c
        .health
        .timeout),
    applied!("health.path", "at the checker's next round", |c| {
        health_path(c)
    }),
    applied!("health.expect_status", "at the checker's next round", |c| {
        health_status(c)
    }),
    applied!(
        "health.unhealthy_threshold",
        "at the checker's next round",
        |c| c.health.unhealthy_threshold
    ),
    applied!(
        "health.healthy_threshold",
        "at the checker's next round",
        |c| c.health.healthy_threshold
    ),
    applied!("health.concurrency", "at the checker's next round", |c| c
        .health
        .concurrency),
    applied!(
        "session.key_file",
        "new sessions are sealed with it at once; the files are re-read on every reload",
        |c| c.session.key_file
    ),
    applied!(
        "session.previous_key_files",
        "sessions sealed with these keys are still routed, at once",
        |c| c.session.previous_key_files
    ),
    applied!("dns.servers", "the next resolution asks them", |c| c
        .dns
        .servers),
    applied!("dns.interval", "from each name's next resolution", |c| c
        .dns
        .interval),
    applied!("dns.timeout", "from the next resolution", |c| c.dns.timeout),
    applied!("dns.nxdomain_limit", "from the next resolution", |c| c
        .dns
        .nxdomain_limit),
    restart!(
        "fleet.enabled",
        "the fleet plugin is started or not at start",
        fleet.enabled
    ),
    applied!("fleet.batch_size", FLEET_NOW, |c| c.fleet.batch_size),
    applied!("fleet.command", REPLACE, |c| c.fleet.command),
    restart!(
        "fleet.host",
        "every spawned server's address derives from it",
        fleet.host
    ),
    restart!(
        "fleet.state_dir",
        "the session key, pid file and deployment record live there",
        fleet.state_dir
    ),
    restart!(
        "fleet.log_dir",
        "running servers write to their open log files",
        fleet.log_dir
    ),
    applied!("fleet.ready_timeout", FLEET_NOW, |c| c.fleet.ready_timeout),
    applied!("fleet.stop_grace", FLEET_NOW, |c| c.fleet.stop_grace),
    applied!(
        "fleet.mcp_path",
        "categories without their own mcp_path take it at once",
        |c| c
            .categories
            .iter()
            .map(|k| k.mcp_path.as_str())
            .collect::<Vec<_>>()
    ),
    restart!(
        "fleet.reserve_ports",
        "the ports are reserved at start",
        fleet.reserve_ports
    ),
    applied!(
        "fleet.deploy_on_start",
        "servers added by this reload",
        |c| c.fleet.deploy_on_start
    ),
    applied!("fleet.drain_timeout", "drains begun from now on", |c| c
        .fleet
        .drain_timeout),
    applied!("fleet.max_restarts", FLEET_NOW, |c| c.fleet.max_restarts),
    applied!("fleet.restart_window", FLEET_NOW, |c| c
        .fleet
        .restart_window),
    applied!("fleet.env", REPLACE, |c| c.fleet.env),
    applied!("fleet.log_max_size", NEXT_START, |c| c.fleet.log_max_size),
    applied!("fleet.log_keep", NEXT_START, |c| c.fleet.log_keep),
    applied!("fleet.server_logs", NEXT_START, |c| c.fleet.server_logs),
    applied!(
        "fleet.memory_interval",
        "from the watcher's next sample",
        |c| c.fleet.memory_interval
    ),
    applied!(
        "fleet.memory_budget",
        "deployments and the memory alert from now on",
        |c| c.fleet.memory_budget
    ),
    applied!(
        "fleet.max_children",
        "children started from now on (running ones are not stopped)",
        |c| c.fleet.max_children
    ),
    restart!(
        "fleet.kernel_memory_limit",
        "the cgroup layer is chosen at start",
        fleet.kernel_memory_limit
    ),
];

macro_rules! category_key {
    ($name:literal, $how:expr, |$c:ident| $read:expr) => {
        CategoryKey {
            name: $name,
            how: $how,
            read: |$c| show(&$read),
        }
    };
}

pub static CATEGORY_KEYS: &[CategoryKey] = &[
    category_key!("auth.scopes", NOW, |c| c.auth.scopes),
    category_key!("auth.tools", NOW, |c| c.auth.tools),
    category_key!("auth.prompts", NOW, |c| c.auth.prompts),
    category_key!("auth.resources", NOW, |c| c.auth.resources),
    category_key!(
        "upstream_headers",
        "at once (values read again from their env or file on every reload)",
        |c| c.upstream_headers
    ),
    category_key!(
        "ports",
        "servers on new ports start, those on dropped ports drain",
        |c| c.ports
    ),
    category_key!("servers", "new servers start, removed ones drain", |c| c
        .servers),
    category_key!(
        "max_memory_mb",
        "the memory watcher at once; the kernel limit as each server next starts",
        |c| c.max_memory_mb
    ),
    category_key!("command", REPLACE, |c| c.command),
    category_key!("backends", "new backends join, removed ones drain", |c| c
        .static_backends),
    category_key!("mcp_path", NOW, |c| c.mcp_path),
    category_key!("strategy", NOW, |c| c.strategy),
    category_key!("weight", NOW, |c| c.weight),
    category_key!("server_weights", NOW, |c| c.server_weights),
    category_key!("hash_header", NOW, |c| c.hash_header),
    category_key!("env", REPLACE, |c| c.env),
    category_key!("cwd", REPLACE, |c| c.cwd),
    category_key!("memory_action", "the memory watcher at once", |c| c
        .memory_action),
    category_key!(
        "discover",
        "resolved at once; servers the new answer lacks drain, new ones join when healthy",
        |c| c.discover
    ),
    category_key!("transport", REPLACE, |c| if c.stdio.is_some() {
        "stdio"
    } else {
        "http"
    }),
    category_key!("isolation", REPLACE, |c| c.stdio.map(|s| s.isolation)),
    category_key!(
        "max_sessions",
        "at once: running bridges take the new limit (open sessions are kept)",
        |c| c.stdio.map(|s| s.max_sessions)
    ),
    category_key!(
        "idle_timeout",
        "at once: running bridges reap by the new timeout",
        |c| c.stdio.map(|s| s.idle_timeout)
    ),
    category_key!("start", REPLACE, |c| c.stdio.map(|s| s.start)),
];

/// Every key whose value differs, in table order, then categories in config order (a category
/// added or removed is one change).
pub fn diff(old: &ValidConfig, new: &ValidConfig) -> Vec<Change> {
    let mut out = Vec::new();
    for k in KEYS {
        let (o, n) = ((k.read)(old), (k.read)(new));
        if o != n {
            out.push(Change {
                key: k.name.into(),
                old: o,
                new: n,
            });
        }
    }
    for c in &new.categories {
        match old.categories.iter().find(|o| o.name == c.name) {
            None => out.push(Change {
                key: format!("categories.{}", c.name),
                old: "(absent)".into(),
                new: "added".into(),
            }),
            Some(o) => {
                for k in CATEGORY_KEYS {
                    let (ov, nv) = ((k.read)(o), (k.read)(c));
                    if ov != nv {
                        out.push(Change {
                            key: format!("categories.{}.{}", c.name, k.name),
                            old: ov,
                            new: nv,
                        });
                    }
                }
            }
        }
    }
    for o in &old.categories {
        if !new.categories.iter().any(|c| c.name == o.name) {
            out.push(Change {
                key: format!("categories.{}", o.name),
                old: "present".into(),
                new: "removed".into(),
            });
        }
    }
    out
}

/// Splits a reload into what it applies and what needs a restart; the restart-only values of
/// `new` are set back to those of `old`, which keeps running.
pub fn classify(old: &ValidConfig, new: &mut ValidConfig) -> (Vec<Change>, Vec<Change>) {
    let all = diff(old, new);
    let mut applied = Vec::new();
    let mut restart = Vec::new();
    for change in all {
        match KEYS.iter().find(|k| k.name == change.key) {
            Some(Key {
                reload: Reload::Restart,
                keep,
                ..
            }) => {
                if let Some(keep) = keep {
                    keep(old, new);
                }
                restart.push(change);
            }
            _ => applied.push(change),
        }
    }
    (applied, restart)
}

/// Every key's name as the table writes it (`categories.*.NAME` for a category's), in order.
pub fn names() -> Vec<String> {
    KEYS.iter()
        .map(|k| k.name.to_string())
        .chain(
            CATEGORY_KEYS
                .iter()
                .map(|k| format!("categories.*.{}", k.name)),
        )
        .collect()
}

/// Every key with the value in force, for `GET /config`.
pub fn values(config: &ValidConfig) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = KEYS
        .iter()
        .map(|k| (k.name.to_string(), (k.read)(config)))
        .collect();
    for c in &config.categories {
        for k in CATEGORY_KEYS {
            out.push((format!("categories.{}.{}", c.name, k.name), (k.read)(c)));
        }
    }
    out
}

/// The README's reload table: every key, whether a reload applies it, and how.
pub fn markdown() -> String {
    let mut out = String::from("| key | on reload | how |\n| --- | --- | --- |\n");
    for k in KEYS {
        let verdict = match k.reload {
            Reload::Applied => "applied",
            Reload::Restart => "**restart**",
        };
        out.push_str(&format!("| `{}` | {verdict} | {} |\n", k.name, k.how));
    }
    out.push_str("| `categories.NAME` (added or removed) | applied | added servers start; a removed category's servers drain, then stop |\n");
    for k in CATEGORY_KEYS {
        out.push_str(&format!(
            "| `categories.NAME.{}` | applied | {} |\n",
            k.name, k.how
        ));
    }
    out
}

#[cfg(test)]
mod tests;
