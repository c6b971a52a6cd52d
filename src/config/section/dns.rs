//! `[dns]`: the resolver categories with `discover` use.

use super::super::defaults as d;
use super::super::fields::{bounded, duration, Errors};
use super::super::model::DnsConfig;
use super::super::raw::RawDns;
use super::super::ConfigError;
use std::net::SocketAddr;

pub(in crate::config) fn dns(raw: &RawDns, errors: &mut Errors) -> DnsConfig {
    let mut servers = Vec::new();
    for text in raw.servers.iter().flatten() {
        match text.parse::<SocketAddr>() {
            Ok(a) if a.port() != 0 => servers.push(a),
            _ => errors.push(ConfigError::new(
                "dns.servers",
                format!("{text:?}"),
                "each server is IP:PORT, e.g. \"10.96.0.10:53\"",
            )),
        }
    }
    DnsConfig {
        servers,
        interval: duration(
            "dns.interval",
            raw.interval.as_deref(),
            d::DNS_INTERVAL,
            errors,
        ),
        timeout: duration(
            "dns.timeout",
            raw.timeout.as_deref(),
            d::DNS_TIMEOUT,
            errors,
        ),
        nxdomain_limit: bounded(
            "dns.nxdomain_limit",
            raw.nxdomain_limit,
            d::DNS_NXDOMAIN_LIMIT,
            1..=100,
            errors,
        ) as u32,
    }
}
