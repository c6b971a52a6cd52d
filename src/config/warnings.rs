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
