//! Warnings about a valid config that do not stop a start.

use super::model::ValidConfig;
use std::ops::RangeInclusive;

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

/// A stdio session's first answer waits for its child to start (hundreds of milliseconds for a
/// Node server, seconds on a busy machine); under this first-byte timeout that start can be cut.
const STDIO_FIRST_BYTE: std::time::Duration = std::time::Duration::from_secs(10);

/// Warnings about stdio categories: a first-byte timeout short for a child's start, and a
/// command whose program `runnable` cannot find (checked before any server starts, so a typo
/// is not first seen as a server that never gets healthy).
pub fn stdio_warnings(config: &ValidConfig, runnable: impl Fn(&str) -> bool) -> Vec<String> {
    let stdio: Vec<_> = config
        .categories
        .iter()
        .filter(|c| c.stdio.is_some())
        .collect();
    let mut out = Vec::new();
    if !stdio.is_empty() && config.proxy.first_byte_timeout < STDIO_FIRST_BYTE {
        out.push(format!(
            "proxy.first_byte_timeout = {:?} is short for stdio categories ({}): a session's \
             first answer waits for its child to start; 30s is safer",
            config.proxy.first_byte_timeout,
            stdio
                .iter()
                .map(|c| c.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    for c in stdio {
        if let Some(program) = c.command.first().filter(|p| !runnable(p)) {
            out.push(format!(
                "categories.{}.command: {program:?} is not an executable file here (nor found in PATH)",
                c.name
            ));
        }
    }
    out
}
