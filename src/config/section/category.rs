//! `[categories.NAME]`: one category's servers (spawned on a port range, or static addresses),
//! how they are picked and weighted, and their command, environment and memory policy.

use super::super::defaults as d;
use super::super::fields::{
    bounded, choice, command, env_table, mcp_path, resolve, strategy_kind, valid_category_name,
    Errors,
};
use super::super::model::{CategoryConfig, Discover, MemoryAction, StrategyKind};
use super::super::raw::{RawCategory, RawDiscover};
use super::super::{parse_port_range, ConfigError};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;

pub(in crate::config) fn category(
    name: String,
    c: RawCategory,
    fleet_command: &[String],
    fleet_mcp_path: &str,
    default_strategy: StrategyKind,
    base: &Path,
    errors: &mut Errors,
) -> CategoryConfig {
    let key = |k: &str| format!("categories.{name}.{k}");
    let stdio = super::stdio::stdio(&name, &c, c.command.is_some(), errors);
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
    let discover = c
        .discover
        .as_ref()
        .and_then(|d| discover(&key("discover"), d, errors));
    if servers == 0
        && static_backends.is_empty()
        && discover.is_none()
        && errors.len() == errors_before
    {
        errors.push(ConfigError::new(
            format!("categories.{name}"),
            "(no servers, no backends)",
            "a category needs spawned servers (ports, servers), static backends or discover",
        ));
    }
    let max_memory_mb = match c.max_memory_mb {
        None => d::max_memory_mb(&name),
        Some(mb) if (1..=1_048_576).contains(&mb) => mb as u64,
        Some(mb) => {
            errors.push(ConfigError::new(
                key("max_memory_mb"),
                mb,
                "must be between 1 and 1048576",
            ));
            d::max_memory_mb(&name)
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
    let weight = bounded(&key("weight"), c.weight, d::WEIGHT, 1..=1000, errors) as u32;
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
    let memory_action = choice(
        &key("memory_action"),
        c.memory_action.as_deref(),
        MemoryAction::Restart,
        &[
            ("restart", MemoryAction::Restart),
            ("alert", MemoryAction::Alert),
        ],
        errors,
    );
    CategoryConfig {
        stdio,
        auth: super::auth::category_auth(&name, &c.auth, errors),
        upstream_headers: super::auth::upstream_headers(
            &name,
            c.upstream_headers.as_ref(),
            base,
            errors,
        ),
        discover,
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

/// A DNS name as a resolver takes it: 1-253 characters, labels of 1-63 letters, digits, `-` and
/// `_` (SRV names start with `_service._proto`).
fn dns_name(name: &str) -> bool {
    let name = name.strip_suffix('.').unwrap_or(name);
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

fn discover(key: &str, d: &RawDiscover, errors: &mut Errors) -> Option<Discover> {
    let name_ok = |field: &str, name: &str, errors: &mut Errors| {
        let ok = dns_name(name);
        if !ok {
            errors.push(ConfigError::new(
                format!("{key}.{field}"),
                format!("{name:?}"),
                "not a DNS name (labels of letters, digits, '-' and '_', dot-separated)",
            ));
        }
        ok
    };
    match (&d.dns, &d.srv, d.port) {
        (Some(name), None, Some(port)) => {
            let port = match u16::try_from(port) {
                Ok(p) if p > 0 => p,
                _ => {
                    errors.push(ConfigError::new(
                        format!("{key}.port"),
                        port,
                        "must be 1-65535",
                    ));
                    return None;
                }
            };
            name_ok("dns", name, errors).then(|| Discover::Dns {
                name: name.clone(),
                port,
            })
        }
        (Some(_), None, None) => {
            errors.push(ConfigError::new(
                format!("{key}.port"),
                "(missing)",
                "A/AAAA records carry no port: set discover.port",
            ));
            None
        }
        (None, Some(name), None) => {
            name_ok("srv", name, errors).then(|| Discover::Srv { name: name.clone() })
        }
        (None, Some(_), Some(port)) => {
            errors.push(ConfigError::new(
                format!("{key}.port"),
                port,
                "SRV records carry their port: leave discover.port out",
            ));
            None
        }
        _ => {
            errors.push(ConfigError::new(
                key,
                "(dns and srv)",
                "set exactly one of discover.dns (with port) or discover.srv",
            ));
            None
        }
    }
}
