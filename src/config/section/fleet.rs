//! `[fleet]`: how servers are spawned, supervised, drained, logged and held to memory.

use super::super::defaults as d;
use super::super::fields::{
    bounded, choice, command, duration, env_table, mcp_path, resolve, size, Errors,
};
use super::super::model::{DeployOnStart, FleetConfig, MemoryBudget, ServerLogs};
use super::super::raw::RawFleet;
use super::super::{parse_size, ConfigError};
use std::net::IpAddr;
use std::path::Path;

/// The fleet section, and the MCP path categories inherit.
pub(in crate::config) fn fleet(
    f: &RawFleet,
    base: &Path,
    errors: &mut Errors,
) -> (FleetConfig, String) {
    let host = match f.host.as_deref() {
        None => IpAddr::from(d::FLEET_HOST),
        Some(text) => text.parse().unwrap_or_else(|_| {
            errors.push(ConfigError::new(
                "fleet.host",
                format!("{text:?}"),
                "must be an IP address, e.g. \"127.0.0.1\"",
            ));
            IpAddr::from(d::FLEET_HOST)
        }),
    };
    let dur = |key: &str, v: &Option<String>, default, errors: &mut Errors| {
        duration(key, v.as_deref(), default, errors)
    };
    let fleet = FleetConfig {
        enabled: f.enabled.unwrap_or(d::FLEET_ENABLED),
        batch_size: bounded(
            "fleet.batch_size",
            f.batch_size,
            d::BATCH_SIZE,
            1..=10_000,
            errors,
        ) as usize,
        command: command(
            "fleet.command",
            f.command.clone().unwrap_or_else(d::command),
            errors,
        ),
        host,
        state_dir: resolve(base, f.state_dir.as_deref().unwrap_or(d::STATE_DIR)),
        log_dir: resolve(base, f.log_dir.as_deref().unwrap_or(d::LOG_DIR)),
        ready_timeout: dur(
            "fleet.ready_timeout",
            &f.ready_timeout,
            d::READY_TIMEOUT,
            errors,
        ),
        stop_grace: dur("fleet.stop_grace", &f.stop_grace, d::STOP_GRACE, errors),
        reserve_ports: f.reserve_ports.unwrap_or(d::RESERVE_PORTS),
        deploy_on_start: choice(
            "fleet.deploy_on_start",
            f.deploy_on_start.as_deref(),
            DeployOnStart::All,
            &[("all", DeployOnStart::All), ("none", DeployOnStart::None)],
            errors,
        ),
        drain_timeout: dur(
            "fleet.drain_timeout",
            &f.drain_timeout,
            d::DRAIN_TIMEOUT,
            errors,
        ),
        max_restarts: bounded(
            "fleet.max_restarts",
            f.max_restarts,
            d::MAX_RESTARTS,
            1..=1000,
            errors,
        ) as u32,
        restart_window: dur(
            "fleet.restart_window",
            &f.restart_window,
            d::RESTART_WINDOW,
            errors,
        ),
        env: env_table("fleet.env", f.env.clone(), errors),
        log_max_size: size(
            "fleet.log_max_size",
            f.log_max_size.as_deref(),
            d::LOG_MAX_SIZE,
            4096..=u64::MAX,
            errors,
        ),
        log_keep: bounded("fleet.log_keep", f.log_keep, d::LOG_KEEP, 0..=100, errors) as u32,
        server_logs: choice(
            "fleet.server_logs",
            f.server_logs.as_deref(),
            ServerLogs::Files,
            &[("files", ServerLogs::Files), ("stdout", ServerLogs::Stdout)],
            errors,
        ),
        kernel_memory_limit: f.kernel_memory_limit.unwrap_or(d::KERNEL_MEMORY_LIMIT),
        memory_interval: dur(
            "fleet.memory_interval",
            &f.memory_interval,
            d::MEMORY_INTERVAL,
            errors,
        ),
        memory_budget: memory_budget(f.memory_budget.as_deref(), errors),
        max_children: bounded(
            "fleet.max_children",
            f.max_children,
            d::MAX_CHILDREN,
            1..=100_000,
            errors,
        ) as usize,
    };
    let mcp = mcp_path("fleet.mcp_path", f.mcp_path.as_deref(), d::MCP_PATH, errors);
    (fleet, mcp)
}

fn memory_budget(value: Option<&str>, errors: &mut Errors) -> MemoryBudget {
    let default = MemoryBudget::Percent(d::MEMORY_BUDGET_PERCENT);
    let Some(text) = value else { return default };
    match text.strip_suffix('%').map(|p| p.trim().parse::<u32>()) {
        Some(Ok(p)) if (1..=100).contains(&p) => MemoryBudget::Percent(p),
        Some(_) => {
            errors.push(ConfigError::new(
                "fleet.memory_budget",
                format!("{text:?}"),
                "a share must be 1% to 100%",
            ));
            default
        }
        None => match parse_size(text) {
            Ok(n) => MemoryBudget::Bytes(n),
            Err(why) => {
                errors.push(ConfigError::new(
                    "fleet.memory_budget",
                    format!("{text:?}"),
                    format!("{why} (or a share like \"80%\")"),
                ));
                default
            }
        },
    }
}
