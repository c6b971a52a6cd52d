//! `serve` (the product) and `backend` (the built-in MCP server).

use super::{report_load_error, LogFormat};
use anyhow::Context;
use mcp_fleet::config;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::process::ExitCode;

pub fn init_logging(format: LogFormat, default_level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Human => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}

pub fn serve(format: LogFormat, path: &Path) -> ExitCode {
    init_logging(format, "info");
    let config = match config::load(path) {
        Ok(c) => c,
        Err(e) => return report_load_error(&e),
    };
    for w in super::check::warnings(&config) {
        tracing::warn!("{w}");
    }
    match mcp_fleet::serve::run(config).with_context(|| format!("cannot serve {}", path.display()))
    {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

pub fn backend(
    format: LogFormat,
    port: u16,
    category: String,
    host: IpAddr,
    debug_tools: bool,
    delay_ms: u64,
) -> ExitCode {
    // Started by a fleet: die with it (`fleet::child::spawn`).
    if let Some(parent) = std::env::var(mcp_fleet::plugins::fleet::PARENT_PID_ENV)
        .ok()
        .and_then(|p| p.parse().ok())
    {
        if !matches!(mcp_fleet::sys::die_with_parent(parent), Ok(true)) {
            eprintln!("error: the fleet that started this server is gone");
            return ExitCode::FAILURE;
        }
    }
    init_logging(format, "warn");
    // One thread: a fleet runs a thousand of these, so each must stay small.
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let options = mcp_fleet::backend::BackendOptions {
        listen: SocketAddr::new(host, port),
        category,
        debug_tools,
        delay: std::time::Duration::from_millis(delay_ms),
    };
    match runtime.block_on(mcp_fleet::backend::run(options)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
