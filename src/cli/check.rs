//! `check` (validate a file) and `keys` (the reload table).

use super::report_load_error;
use mcp_fleet::config;
use std::path::Path;
use std::process::ExitCode;

fn ephemeral_range() -> Option<std::ops::RangeInclusive<u16>> {
    let text = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").ok()?;
    let mut parts = text.split_whitespace().map(|p| p.parse::<u16>().ok());
    let (lo, hi) = (parts.next()??, parts.next()??);
    Some(lo..=hi)
}

pub fn warn_ephemeral(config: &config::ValidConfig) -> Vec<String> {
    ephemeral_range()
        .map(|r| config::ephemeral_warnings(config, r))
        .unwrap_or_default()
}

pub fn check(path: &Path) -> ExitCode {
    match config::load(path) {
        Ok(config) => {
            for w in warn_ephemeral(&config) {
                eprintln!("warning: {w}");
            }
            let servers: usize = config.categories.iter().map(|c| c.servers as usize).sum();
            let statics: usize = config
                .categories
                .iter()
                .map(|c| c.static_backends.len())
                .sum();
            println!(
                "{}: ok ({} categories, {servers} spawned servers, {statics} static backends)",
                path.display(),
                config.categories.len()
            );
            ExitCode::SUCCESS
        }
        Err(e) => report_load_error(&e),
    }
}

/// The README's reload section is this output, pasted between its markers (a test compares).
pub fn keys() -> ExitCode {
    print!("{}", config::keys::markdown());
    ExitCode::SUCCESS
}
